//! The [`Model`] trait that every `model!` implements: parameters and gradients by name, the
//! parameter count, a Keras-style summary and a text description of the graph.
//!
//! Optimizers, checkpoints and gradient checks are written against this trait only, so they
//! work for every generated model.

use crate::Float;
use ndarray::{ArrayViewD, ArrayViewMutD};
use std::fmt;

/// A model compiled by `model!`.
///
/// Parameters are visited in a fixed order (declaration order, `weight` before `bias`) under
/// PyTorch `state_dict` names such as `"h1.weight"`.
pub trait Model<F: Float> {
    /// The gradient struct generated beside the model (same fields as the model).
    type Grads;

    /// Visits every trainable parameter with its name.
    fn visit_params(&self, f: &mut dyn FnMut(&'static str, ArrayViewD<'_, F>));
    /// Visits every trainable parameter mutably with its name.
    fn visit_params_mut(&mut self, f: &mut dyn FnMut(&'static str, ArrayViewMutD<'_, F>));
    /// Visits every non-trainable buffer (e.g. batch-norm running statistics) with its name.
    /// Buffers are saved and loaded with the parameters, as in a PyTorch `state_dict`.
    fn visit_buffers(&self, _f: &mut dyn FnMut(&'static str, ArrayViewD<'_, F>)) {}
    /// Visits every non-trainable buffer mutably.
    fn visit_buffers_mut(&mut self, _f: &mut dyn FnMut(&'static str, ArrayViewMutD<'_, F>)) {}
    /// Names under which PyTorch saves a tied parameter a second time, each with the name of
    /// the parameter it is (`("head.weight", "wte.weight")` for an output head reusing the
    /// embedding table). Loading accepts such a copy when it equals that parameter, and
    /// loads the parameter from it when the file has the copy only.
    fn tied_names(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }
    /// Visits every gradient in `grads` with the name of its parameter.
    fn visit_grads(grads: &Self::Grads, f: &mut dyn FnMut(&'static str, ArrayViewD<'_, F>));
    /// Visits every gradient mutably (e.g. for clipping).
    fn visit_grads_mut(
        grads: &mut Self::Grads,
        f: &mut dyn FnMut(&'static str, ArrayViewMutD<'_, F>),
    );
    /// Visits each parameter together with its gradient as flat slices, with the parameter's
    /// index in visiting order. This is the optimizers' hot path: it allocates nothing.
    // The callback type is spelled out (no alias) so that implementations can write it the
    // same way and get the same lifetime elision; clippy finds it complex, which it is not.
    #[allow(clippy::type_complexity)]
    fn visit_params_with_grads(
        &mut self,
        grads: &Self::Grads,
        f: &mut dyn FnMut(usize, &mut [F], &[F]),
    );
    /// Visits every gradient as a flat slice with its parameter's index, the index
    /// [`Model::visit_params_with_grads`] gives it (and [`GradSink::ready`] receives).
    ///
    /// The default numbers the gradients in [`Model::visit_grads`] order, which is that index
    /// for models without absent optional parameters; generated models override it.
    fn visit_grads_indexed(grads: &Self::Grads, f: &mut dyn FnMut(usize, &[F])) {
        let mut index = 0;
        Self::visit_grads(grads, &mut |_, g| {
            report_view(index, g, f);
            index += 1;
        });
    }
    /// A gradient struct of zeros shaped like the parameters.
    fn zero_grads(&self) -> Self::Grads;
    /// The number of trainable scalars.
    fn num_params(&self) -> usize;
    /// A Keras-style table of the layers: name, op, output shape, parameter count.
    fn summary(&self) -> Summary;
    /// A text description of the compiled graph: one line per node, forward then backward.
    fn graph(&self) -> &'static str;
    /// The forward graph in Graphviz DOT: one box per computed value (a fused chain of
    /// pointwise ops is one box), with its op, output shape and parameter count; inputs and
    /// targets as ellipses; outputs and the loss outlined twice. Render it with
    /// `dot -Tsvg graph.dot -o graph.svg`. Models written by hand rather than by `model!` have
    /// no compiled graph: for them it is an empty digraph.
    fn graph_dot(&self) -> &'static str {
        "digraph model {}\n"
    }
    /// The model's inference graph as ONNX describes it, for [`crate::onnx::export`]. `model!`
    /// writes it when it compiles the model.
    ///
    /// # Errors
    /// [`crate::Error::Onnx`] if the model has an op the exporter cannot express (the message
    /// names the op and the value), or was not compiled by `model!` (the default).
    fn onnx_graph(&self) -> crate::Result<&'static crate::onnx::OnnxGraph> {
        Err(crate::Error::Onnx {
            model: std::any::type_name::<Self>().to_string(),
            message: "this model was not compiled by model!, so it has no ONNX graph".into(),
        })
    }
}

/// One row of a [`Summary`].
#[derive(Clone, Debug, PartialEq)]
pub struct SummaryRow {
    /// The binding the value is named after in the model source (`h1`).
    pub name: &'static str,
    /// The operation, as written (`linear`, `relu`, `conv2d`).
    pub op: &'static str,
    /// The output shape, symbolic dims by name (`[B, 128]`).
    pub output_shape: &'static str,
    /// Trainable scalars owned by this row.
    pub params: usize,
}

/// A Keras-style model summary. `Display` prints it as a table, then Keras' three totals.
///
/// A model written by hand fills in what it has and leaves the counts to `Default`:
///
/// ```
/// use kiln_runtime::{Summary, SummaryRow};
/// let summary = Summary {
///     model: "Tiny",
///     dtype: "f32",
///     rows: vec![SummaryRow { name: "fc", op: "linear", output_shape: "[B, 2]", params: 10 }],
///     ..Default::default()
/// };
/// assert_eq!(summary.total_params(), 10);
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    /// The model's name.
    pub model: &'static str,
    /// The element type (`f32`, `f64`).
    pub dtype: &'static str,
    /// The rows, in graph order.
    pub rows: Vec<SummaryRow>,
    /// Scalars saved with the model but not trained: its buffers (batch norm's running
    /// statistics), which Keras counts as non-trainable parameters.
    pub buffers: usize,
    /// Parameter scalars frozen for training (an optimizer's `freeze`, set by `Trainer`),
    /// which Keras counts as non-trainable once a layer's `trainable` is off.
    pub frozen: usize,
}

impl Summary {
    /// The number of scalars training changes: the rows' parameters but the frozen ones.
    pub fn trainable_params(&self) -> usize {
        self.rows.iter().map(|r| r.params).sum::<usize>() - self.frozen.min(self.params())
    }

    /// The scalars training leaves alone: buffers and frozen parameters.
    pub fn non_trainable_params(&self) -> usize {
        self.buffers + self.frozen.min(self.params())
    }

    /// Every scalar the model saves, as Keras counts its "Total params": the parameters and
    /// the buffers.
    pub fn total_params(&self) -> usize {
        self.params() + self.buffers
    }

    fn params(&self) -> usize {
        self.rows.iter().map(|r| r.params).sum()
    }

    /// The summary with the parameters of `model` that `frozen` chooses counted as frozen
    /// (non-trainable), as `Trainer` prints it for an optimizer that freezes them:
    /// `model.summary().with_frozen(&model, &frozen)`.
    pub fn with_frozen<F: Float, M: Model<F>>(
        mut self,
        model: &M,
        frozen: &crate::optim::ParamFilter,
    ) -> Self {
        self.frozen = 0;
        model.visit_params(&mut |name, p| {
            if frozen.chooses(name, p.shape()) {
                self.frozen += p.len();
            }
        });
        self
    }
}

fn group_thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers = ["Layer", "Op", "Output shape", "Params"];
        let params: Vec<String> = self
            .rows
            .iter()
            .map(|r| group_thousands(r.params))
            .collect();
        let mut widths = headers.map(str::len);
        for (row, p) in self.rows.iter().zip(&params) {
            widths[0] = widths[0].max(row.name.len());
            widths[1] = widths[1].max(row.op.len());
            widths[2] = widths[2].max(row.output_shape.len());
            widths[3] = widths[3].max(p.len());
        }
        let total_width = widths.iter().sum::<usize>() + 3 * 3;
        writeln!(f, "Model: {} ({})", self.model, self.dtype)?;
        writeln!(f, "{}", "=".repeat(total_width))?;
        writeln!(
            f,
            "{:<w0$}   {:<w1$}   {:<w2$}   {:>w3$}",
            headers[0],
            headers[1],
            headers[2],
            headers[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3]
        )?;
        writeln!(f, "{}", "-".repeat(total_width))?;
        for (row, p) in self.rows.iter().zip(&params) {
            writeln!(
                f,
                "{:<w0$}   {:<w1$}   {:<w2$}   {:>w3$}",
                row.name,
                row.op,
                row.output_shape,
                p,
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
                w3 = widths[3]
            )?;
        }
        writeln!(f, "{}", "=".repeat(total_width))?;
        writeln!(f, "Total params: {}", group_thousands(self.total_params()))?;
        writeln!(
            f,
            "Trainable params: {}",
            group_thousands(self.trainable_params())
        )?;
        write!(
            f,
            "Non-trainable params: {}",
            group_thousands(self.non_trainable_params())
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_table_aligns_and_totals() {
        let s = Summary {
            model: "Mlp",
            dtype: "f32",
            rows: vec![
                SummaryRow {
                    name: "x",
                    op: "input",
                    output_shape: "[B, 784]",
                    params: 0,
                },
                SummaryRow {
                    name: "h1",
                    op: "linear",
                    output_shape: "[B, 128]",
                    params: 100_480,
                },
            ],
            buffers: 256,
            frozen: 480,
        };
        let text = s.to_string();
        assert!(
            text.ends_with(
                "Total params: 100,736\nTrainable params: 100,000\nNon-trainable params: 736"
            ),
            "{text}"
        );
        assert!(
            text.contains("h1      linear   [B, 128]       100,480"),
            "{text}"
        );
        assert_eq!(group_thousands(1_234_567), "1,234,567");
        assert_eq!(group_thousands(12), "12");
    }
}

/// A batch of targets, as [`Supervised`] models take them.
#[derive(Clone, Debug)]
pub enum TargetView<'a, F> {
    /// Integer class labels, one per sample.
    Labels(ndarray::ArrayView1<'a, usize>),
    /// Float targets shaped like the model's target.
    Values(ndarray::ArrayViewD<'a, F>),
}

/// A model with one float input, one target and a loss: what [`Trainer::fit`] trains. The
/// macro implements it for every model with one input of float features (not token ids), one
/// target (float values, or one class label per sample: `[B] classes C`) and a `loss`; the
/// methods take dynamic-rank views (checked against the declared shapes) so that one training
/// loop serves every such model. Models with token inputs, several inputs or a label per
/// position are [`Trainable`](crate::Trainable), which
/// [`Trainer::fit_batches`](crate::train::Trainer::fit_batches) trains.
///
/// [`Trainer::fit`]: crate::train::Trainer::fit
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be trained by `Trainer::fit`: it is not a model with one float input and one per-sample target",
    label = "`fit` needs a model with one float input, one target and a loss",
    note = "`fit` drives models whose input is float features (not token ids), whose target is float values or one class label per sample (`[B] classes C`), and which declare a `loss`",
    note = "train other models (token inputs, several inputs, a label per position) with `Trainer::fit_batches` on a `BatchSource` (`encoded_texts.batches()`, `token_stream.lm_windows(block)`, or your own)"
)]
pub trait Supervised<F: Float>: Model<F> {
    /// The model's workspace type.
    type Workspace: Default;
    /// The input's declared rank (`2` for `[B, 784]`).
    const INPUT_RANK: usize;
    /// The class count, when the target is class labels.
    const CLASSES: Option<usize>;

    /// One training step's gradients on a batch (training mode): overwrites `grads`, returns
    /// the loss.
    fn train_batch(
        &mut self,
        x: ArrayViewD<'_, F>,
        y: TargetView<'_, F>,
        ws: &mut Self::Workspace,
        grads: &mut Self::Grads,
    ) -> crate::Result<F>;

    /// The loss on a batch in inference mode (no gradients, no state updated).
    fn eval_batch(
        &self,
        x: ArrayViewD<'_, F>,
        y: TargetView<'_, F>,
        ws: &mut Self::Workspace,
    ) -> crate::Result<F>;

    /// Reseeds the generator that dropout draws from in `ws` (nothing for models without
    /// dropout).
    fn reseed(_ws: &mut Self::Workspace, _seed: u64) {}

    /// Turns the check for NaN and infinity after every op of the passes on or off in `ws`
    /// (see [`crate::finite`]); models written by hand may ignore it.
    fn check_finite(_ws: &mut Self::Workspace, _on: bool) {}

    /// Marks the parameters that need no gradient for the backward passes run with `ws`:
    /// `frozen(name)` is asked of every parameter's `state_dict` name. Generated models skip
    /// the work that only frozen layers need and give them zero gradients (the workspace's
    /// `freeze`); models written by hand may compute every gradient.
    fn freeze(_ws: &mut Self::Workspace, _frozen: &dyn Fn(&str) -> bool) {}

    /// The model's first output for the last batch run with `ws` (for metrics such as
    /// accuracy).
    fn last_output(ws: &Self::Workspace) -> crate::Result<ArrayViewD<'_, F>>;

    /// [`Supervised::train_batch`], handing every parameter's gradient to `sink` as soon as
    /// the backward pass has written it for the last time (generated models: after each
    /// layer, last layer first), so that the gradients can travel while the backward pass
    /// goes on. Every gradient is reported exactly once per successful call.
    ///
    /// The default runs [`Supervised::train_batch`] and then reports every gradient.
    fn train_batch_notify(
        &mut self,
        x: ArrayViewD<'_, F>,
        y: TargetView<'_, F>,
        ws: &mut Self::Workspace,
        grads: &mut Self::Grads,
        sink: &mut dyn GradSink<F>,
    ) -> crate::Result<F> {
        let loss = self.train_batch(x, y, ws, grads)?;
        Self::visit_grads_indexed(grads, &mut |i, g| sink.ready(i, g));
        Ok(loss)
    }
}

/// Receives parameter gradients during the backward pass, as soon as each is final: the hook
/// that lets data-parallel training start summing the last layers' gradients across
/// processes while the backward pass computes the first layers' (see
/// [`Supervised::train_batch_notify`]).
pub trait GradSink<F> {
    /// The gradient of parameter `index` (the index of [`Model::visit_params_with_grads`])
    /// is final: `grad` holds it, in memory order, and will not change until the step ends.
    fn ready(&mut self, index: usize, grad: &[F]);
}

/// Reports an array to `f` as a flat slice (copied when not contiguous, which no gradient
/// kiln allocates is).
fn report_view<F: Float>(index: usize, g: ArrayViewD<'_, F>, f: &mut dyn FnMut(usize, &[F])) {
    match g.as_slice_memory_order() {
        Some(slice) => f(index, slice),
        None => {
            let copy: Vec<F> = g.iter().copied().collect();
            f(index, &copy)
        }
    }
}

/// Hands gradient `grad` of parameter `index` to `sink` (what the generated backward pass
/// calls after a layer's last gradient write).
pub fn report_grad<F: Float, D: ndarray::Dimension>(
    sink: &mut dyn GradSink<F>,
    index: usize,
    grad: &ndarray::Array<F, D>,
) {
    report_view(index, grad.view().into_dyn(), &mut |i, g| sink.ready(i, g));
}
