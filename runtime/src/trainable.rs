//! [`Trainable`]: the training interface of every model with a loss, whatever its inputs
//! (float features, token ids, sequence lengths) and targets (values, one label per sample or
//! one per position). [`Trainer::fit_batches`](crate::train::Trainer::fit_batches) drives it
//! with batches from a [`BatchSource`](crate::data::BatchSource).
//!
//! A batch is a slice of [`BatchArray`]s, one per declared `input` and `target`, in
//! declaration order (the order `loss_and_grad` takes them); [`Trainable::ARGS`] describes
//! each, so that a driver can check its data against the model before training.

use crate::{Error, Float, GradSink, Model, Result};
use ndarray::{ArrayD, ArrayView, ArrayViewD, Dimension};
use std::fmt;

/// One array of a batch: float values, or integer ids (token ids, sequence lengths, class
/// labels). The first axis is the batch.
#[derive(Clone, Debug, PartialEq)]
pub enum BatchArray<F> {
    /// Float features or float targets.
    Float(ArrayD<F>),
    /// Token ids, sequence lengths or class labels.
    Ids(ArrayD<usize>),
}

impl<F> BatchArray<F> {
    /// The array's shape.
    pub fn shape(&self) -> &[usize] {
        match self {
            BatchArray::Float(a) => a.shape(),
            BatchArray::Ids(a) => a.shape(),
        }
    }

    /// The number of samples: the length of the first axis (0 for a scalar).
    pub fn samples(&self) -> usize {
        self.shape().first().copied().unwrap_or(0)
    }
}

/// What a model's argument (or a data source's array) holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgKind {
    /// Float values (`input x: [B, 784];`, `target y: [B, 1];`).
    Float,
    /// Token ids below `vocab` (`input tokens: [B, T] tokens 5000;`).
    Tokens {
        /// The vocabulary size.
        vocab: usize,
    },
    /// Sequence lengths (`input len: [B] lengths T;`).
    Lengths,
    /// Class labels below `classes` (`target y: [B, T] classes 96;`).
    Labels {
        /// The class count.
        classes: usize,
        /// The label the loss leaves out (its `ignore_index`), which the labels may hold
        /// besides their classes and which accuracy does not count.
        ignored: Option<usize>,
    },
}

impl ArgKind {
    /// Whether the argument holds integers ([`BatchArray::Ids`]).
    pub fn is_ids(self) -> bool {
        !matches!(self, ArgKind::Float)
    }
}

impl fmt::Display for ArgKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgKind::Float => write!(f, "float values"),
            ArgKind::Tokens { vocab } => write!(f, "token ids below {vocab}"),
            ArgKind::Lengths => write!(f, "sequence lengths"),
            ArgKind::Labels {
                classes,
                ignored: None,
            } => write!(f, "labels of {classes} classes"),
            ArgKind::Labels {
                classes,
                ignored: Some(ignored),
            } => write!(f, "labels of {classes} classes (ignoring {ignored})"),
        }
    }
}

/// One declared `input` or `target` of a model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArgSpec {
    /// The declared name.
    pub name: &'static str,
    /// Whether it is a `target` (read by the loss only).
    pub target: bool,
    /// What it holds.
    pub kind: ArgKind,
    /// Its rank, batch axis included (`2` for `[B, T]`).
    pub rank: usize,
}

/// A model with a loss, trained on batches of any inputs and targets: what
/// [`Trainer::fit_batches`](crate::train::Trainer::fit_batches) trains. The macro implements
/// it for every model that declares a `loss`.
///
/// A model declared with
///
/// ```text
/// input tokens: [B, T] tokens 50;
/// target tags: [B, T] classes 4;
/// ```
///
/// has two [`Trainable::ARGS`], and a training step takes the two arrays in that order:
///
/// ```
/// use kiln_runtime::{ArgKind, BatchArray, Trainable};
/// use ndarray::Array2;
///
/// fn one_step<M: Trainable<f32>>(model: &mut M, grads: &mut M::Grads) -> kiln_runtime::Result<f32> {
///     assert_eq!(M::ARGS[0].kind, ArgKind::Tokens { vocab: 50 });
///     let batch = [
///         BatchArray::Ids(Array2::from_elem((2, 5), 7usize).into_dyn()),
///         BatchArray::Ids(Array2::from_elem((2, 5), 1usize).into_dyn()),
///     ];
///     let mut ws = <M as Trainable<f32>>::Workspace::default();
///     model.train_step(&batch, &mut ws, grads)
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be trained by `Trainer::fit_batches`: it declares no `loss`",
    label = "`fit_batches` needs a model with a `loss`",
    note = "declare the targets and the loss in the model (`target y: [B] classes 10;` and `loss cross_entropy(logits, y);`), or train it with a plain loop over `forward_train` and `backward`"
)]
pub trait Trainable<F: Float>: Model<F> {
    /// The model's workspace type.
    type Workspace: Default;
    /// The declared inputs and targets, in declaration order: the arrays a batch holds.
    const ARGS: &'static [ArgSpec];

    /// One training step's gradients on a batch (training mode): overwrites `grads`, returns
    /// the loss.
    ///
    /// # Errors
    /// [`Error::Shape`] naming the argument if `batch` does not hold one array per
    /// [`Trainable::ARGS`] of the declared kind and rank; the model's errors (shapes, ids).
    fn train_step(
        &mut self,
        batch: &[BatchArray<F>],
        ws: &mut Self::Workspace,
        grads: &mut Self::Grads,
    ) -> Result<F>;

    /// [`Trainable::train_step`], handing every parameter's gradient to `sink` as soon as the
    /// backward pass has written it for the last time, so that data-parallel training can sum
    /// the last layers' gradients across ranks while the backward pass goes on (see
    /// [`Supervised::train_batch_notify`](crate::Supervised::train_batch_notify)). Every
    /// gradient is reported exactly once per successful call.
    ///
    /// The default runs [`Trainable::train_step`] and then reports every gradient.
    ///
    /// # Errors
    /// As [`Trainable::train_step`].
    fn train_step_notify(
        &mut self,
        batch: &[BatchArray<F>],
        ws: &mut Self::Workspace,
        grads: &mut Self::Grads,
        sink: &mut dyn GradSink<F>,
    ) -> Result<F> {
        let loss = self.train_step(batch, ws, grads)?;
        Self::visit_grads_indexed(grads, &mut |i, g| sink.ready(i, g));
        Ok(loss)
    }

    /// The loss on a batch in inference mode (no gradients, no state updated).
    ///
    /// # Errors
    /// As [`Trainable::train_step`].
    fn eval_step(&self, batch: &[BatchArray<F>], ws: &mut Self::Workspace) -> Result<F>;

    /// Reseeds the generator that dropout draws from in `ws` (nothing for models without
    /// dropout).
    fn reseed(_ws: &mut Self::Workspace, _seed: u64) {}

    /// Turns the check for NaN and infinity after every op on or off in `ws` (see
    /// [`crate::finite`]).
    fn check_finite(_ws: &mut Self::Workspace, _on: bool) {}

    /// Marks the parameters that need no gradient for the backward passes run with `ws`:
    /// `frozen(name)` is asked of every parameter's `state_dict` name. Generated models skip
    /// the work that only frozen layers need and give them zero gradients (the workspace's
    /// `freeze`); models written by hand may compute every gradient.
    fn freeze(_ws: &mut Self::Workspace, _frozen: &dyn Fn(&str) -> bool) {}

    /// The model's first output for the last batch run with `ws`.
    fn last_output(ws: &Self::Workspace) -> Result<ArrayViewD<'_, F>>;
}

/// The error for a batch without an array for argument `index` of `args`, or with one of the
/// wrong kind.
fn arg_error(args: &[ArgSpec], index: usize, found: Option<&str>, actual: &[usize]) -> Error {
    let spec = &args[index];
    let listed = args.iter().map(|a| a.name).collect::<Vec<_>>().join(", ");
    Error::Shape {
        kind: if spec.target { "target" } else { "input" },
        name: spec.name,
        expected: format!("{} of rank {}", spec.kind, spec.rank),
        actual: actual.to_vec(),
        detail: match found {
            None => format!(
                ": the batch has no array for it (a batch holds one array per declared input \
                 and target, in order: {listed})"
            ),
            Some(found) => format!(
                ": the batch holds {found} there (arrays go in declaration order: {listed})"
            ),
        },
    }
}

/// Argument `index` of `batch` as a float view of rank `D` (what a generated
/// [`Trainable::train_step`] calls).
///
/// # Errors
/// [`Error::Shape`] naming the argument if it is missing, holds ids, or has another rank.
pub fn float_arg<'a, F: Float, D: Dimension>(
    batch: &'a [BatchArray<F>],
    args: &[ArgSpec],
    index: usize,
) -> Result<ArrayView<'a, F, D>> {
    match batch.get(index) {
        Some(BatchArray::Float(a)) => fixed(args, index, a.view()),
        Some(BatchArray::Ids(a)) => Err(arg_error(args, index, Some("integer ids"), a.shape())),
        None => Err(arg_error(args, index, None, &[])),
    }
}

/// Argument `index` of `batch` as an id view of rank `D`.
///
/// # Errors
/// [`Error::Shape`] naming the argument if it is missing, holds floats, or has another rank.
pub fn ids_arg<'a, F, D: Dimension>(
    batch: &'a [BatchArray<F>],
    args: &[ArgSpec],
    index: usize,
) -> Result<ArrayView<'a, usize, D>> {
    match batch.get(index) {
        Some(BatchArray::Ids(a)) => fixed(args, index, a.view()),
        Some(BatchArray::Float(a)) => Err(arg_error(args, index, Some("float values"), a.shape())),
        None => Err(arg_error(args, index, None, &[])),
    }
}

/// `view` as rank `D`, or the error naming argument `index`.
fn fixed<'a, T, D: Dimension>(
    args: &[ArgSpec],
    index: usize,
    view: ArrayViewD<'a, T>,
) -> Result<ArrayView<'a, T, D>> {
    let actual = view.shape().to_vec();
    view.into_dimensionality::<D>().map_err(|_| {
        arg_error(
            args,
            index,
            Some(&format!("an array of rank {}", actual.len())),
            &actual,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array1, Ix1, Ix2};

    const ARGS: &[ArgSpec] = &[
        ArgSpec {
            name: "tokens",
            target: false,
            kind: ArgKind::Tokens { vocab: 10 },
            rank: 2,
        },
        ArgSpec {
            name: "y",
            target: true,
            kind: ArgKind::Labels {
                classes: 3,
                ignored: Some(9),
            },
            rank: 1,
        },
    ];

    #[test]
    fn views_check_kind_rank_and_presence() {
        let batch: Vec<BatchArray<f32>> = vec![
            BatchArray::Ids(ndarray::Array2::zeros((2, 4)).into_dyn()),
            BatchArray::Float(Array1::zeros(2).into_dyn()),
        ];
        assert_eq!(batch[0].samples(), 2);
        let tokens = ids_arg::<f32, Ix2>(&batch, ARGS, 0).unwrap();
        assert_eq!(tokens.dim(), (2, 4));
        let err = ids_arg::<f32, Ix1>(&batch, ARGS, 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`tokens`") && err.contains("rank 2"), "{err}");
        let err = ids_arg::<f32, Ix1>(&batch, ARGS, 1)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`y`") && err.contains("float values there"),
            "{err}"
        );
        let err = float_arg::<f32, Ix1>(&batch[..1], ARGS, 1)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no array for it") && err.contains("tokens, y"),
            "{err}"
        );
        assert_eq!(ARGS[1].kind.to_string(), "labels of 3 classes (ignoring 9)");
    }
}
