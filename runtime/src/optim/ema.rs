//! An exponential moving average of a model's weights, as PyTorch's
//! `torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay))`.

use super::lerp;
use crate::{Error, Float, Model, Result};
use ndarray::{ArrayViewD, ArrayViewMutD};

/// A copy of a model whose parameters follow the model's as an exponential moving average:
/// after every optimizer step, [`Ema::update`] moves each averaged parameter `a` towards the
/// model's `p`, `a ← a + (1 − decay)(p − a)` (PyTorch's `lerp_`, with its rounding). The first
/// update copies the model, as PyTorch's `AveragedModel` does. The buffers (batch-norm running
/// statistics) are copied from the model at every update, PyTorch's default
/// `use_buffers=False`, or averaged like the parameters with
/// [`average_buffers`](Ema::average_buffers).
///
/// The averaged model is a model like any other: evaluate it, save it, export it. In a
/// training loop:
///
/// ```text
/// let mut ema = Ema::new(&model, 0.999);
/// for batch in batches {
///     model.loss_and_grad(x, y, &mut ws, &mut grads)?;
///     opt.step(&mut model, &grads);
///     ema.update(&model)?;
/// }
/// let accuracy = evaluate(ema.model(), &test)?;
/// ```
///
/// [`Trainer::ema`](crate::train::Trainer::ema) keeps the same average inside `fit`.
#[derive(Clone, Debug)]
pub struct Ema<F, M> {
    model: M,
    decay: f64,
    updates: u64,
    average_buffers: bool,
    /// The model's values, flattened in visiting order (kept: an update allocates nothing
    /// after the first).
    flat: Vec<F>,
}

impl<F: Float, M: Model<F> + Clone> Ema<F, M> {
    /// An average of `model`'s weights with `decay` (in `[0, 1]`; 0.999 and 0.9999 are usual):
    /// a copy of the model, replaced by the model itself at the first [`Ema::update`].
    pub fn new(model: &M, decay: f64) -> Self {
        Self {
            model: model.clone(),
            decay,
            updates: 0,
            average_buffers: false,
            flat: Vec::new(),
        }
    }
}

impl<F: Float, M: Model<F>> Ema<F, M> {
    /// Average the buffers too, PyTorch's `use_buffers=True` (default: copy them from the
    /// model at every update).
    pub fn average_buffers(mut self, on: bool) -> Self {
        self.average_buffers = on;
        self
    }

    /// The averaged model.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The averaged model, mutably (to load or change its weights).
    pub fn model_mut(&mut self) -> &mut M {
        &mut self.model
    }

    /// The averaged model, the average given up.
    pub fn into_inner(self) -> M {
        self.model
    }

    /// The decay.
    pub fn decay(&self) -> f64 {
        self.decay
    }

    /// How many updates the average has taken (PyTorch's `n_averaged`).
    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// Moves the average towards `model`'s weights (see [`Ema`]); call it after each
    /// optimizer step.
    ///
    /// # Errors
    /// [`Error::Parameter`] if `model`'s parameters or buffers differ in size from the
    /// average's (a parameter array replaced by one of another size); the average is then
    /// unchanged.
    pub fn update(&mut self, model: &M) -> Result<()> {
        check_sizes(model, &self.model, false)?;
        check_sizes(model, &self.model, true)?;
        let first = self.updates == 0;
        let weight = F::from_f64(1.0 - self.decay);
        flatten(model, false, &mut self.flat);
        apply(&mut self.model, false, &self.flat, |a, p| {
            if first {
                p
            } else {
                // torch._foreach_lerp_(ema_params, current_params, 1 - decay)
                lerp(a, p, weight)
            }
        });
        let average = self.average_buffers && !first;
        flatten(model, true, &mut self.flat);
        apply(&mut self.model, true, &self.flat, |a, b| {
            if average {
                lerp(a, b, weight)
            } else {
                b
            }
        });
        self.updates += 1;
        Ok(())
    }
}

/// Visits `model`'s parameters, or its buffers.
fn visit<F: Float, M: Model<F>>(
    model: &M,
    buffers: bool,
    f: &mut dyn FnMut(&'static str, ArrayViewD<'_, F>),
) {
    if buffers {
        model.visit_buffers(f);
    } else {
        model.visit_params(f);
    }
}

/// [`Error::Parameter`] for the first array of `average` whose size is not `model`'s, or a
/// missing one.
fn check_sizes<F: Float, M: Model<F>>(model: &M, average: &M, buffers: bool) -> Result<()> {
    let mut sizes = Vec::new();
    visit(model, buffers, &mut |name, v| sizes.push((name, v.len())));
    let (mut at, mut problem) = (0, None);
    visit(average, buffers, &mut |name, v| {
        let want = sizes.get(at).map_or(0, |&(_, n)| n);
        if problem.is_none() && v.len() != want {
            problem = Some(Error::Parameter {
                name,
                problem: format!(
                    "the averaged model's has {} values and the model's {want}: an average \
                     follows one model's weights",
                    v.len()
                ),
            });
        }
        at += 1;
    });
    if problem.is_none() && at != sizes.len() {
        let name = sizes.get(at).map_or("?", |&(name, _)| name);
        problem = Some(Error::Parameter {
            name,
            problem: "the averaged model has fewer arrays than the model: an average follows \
                      one model's weights"
                .to_string(),
        });
    }
    problem.map_or(Ok(()), Err)
}

/// `model`'s parameters (or buffers) in visiting order, into `flat`.
fn flatten<F: Float, M: Model<F>>(model: &M, buffers: bool, flat: &mut Vec<F>) {
    flat.clear();
    visit(model, buffers, &mut |_, v| flat.extend(v.iter().copied()));
}

/// `a ← f(a, value)` over the average's parameters (or buffers), in visiting order.
fn apply<F: Float, M: Model<F>>(average: &mut M, buffers: bool, flat: &[F], f: impl Fn(F, F) -> F) {
    let mut values = flat.iter();
    let mut visit = |_: &'static str, mut a: ArrayViewMutD<'_, F>| {
        for (a, &v) in a.iter_mut().zip(&mut values) {
            *a = f(*a, v);
        }
    };
    if buffers {
        average.visit_buffers_mut(&mut visit);
    } else {
        average.visit_params_mut(&mut visit);
    }
}
