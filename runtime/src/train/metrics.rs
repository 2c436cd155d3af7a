//! Metrics: classification accuracy from a model's output rows, and the loss and accuracy of a
//! model over a whole data set ([`evaluate`]), or any [`Metric`]s ([`evaluate_metrics`]).

use super::metric::{Metric, MetricCounts, MetricValues};
use crate::data::{Batch, BatchSource, DataLoader, Dataset, IndexBatches};
use crate::trainable::{ArgKind, BatchArray, Trainable};
use crate::{Error, Float, Result, Supervised, TargetView};
use ndarray::{ArrayView1, ArrayViewD, IxDyn};

/// NaN test (`Float` names `is_finite` only).
#[allow(clippy::eq_op)]
pub(super) fn is_nan<F: Float>(v: F) -> bool {
    v != v
}

/// The index of the largest element; the first one on ties. A NaN counts as the largest, as
/// in `torch.argmax`, so that a diverged row is not silently scored as some class.
pub(super) fn argmax<'a, F: Float>(values: impl Iterator<Item = &'a F>) -> Option<usize> {
    let mut best: Option<(usize, F)> = None;
    for (i, &v) in values.enumerate() {
        let better = match best {
            None => true,
            Some((_, b)) => !is_nan(b) && (is_nan(v) || v > b),
        };
        if better {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i)
}

/// How many rows of `output` have their largest score at the row's label.
///
/// `output` is `[n, classes]` (more axes after the first are flattened: a row is everything
/// for one sample), one row per label. Scores may be logits or probabilities: only their order
/// matters.
///
/// # Errors
/// [`Error::Shape`] if `output` has no axes or not one row per label.
///
/// ```
/// use kiln_runtime::train::count_correct;
/// use ndarray::array;
/// let logits = array![[2.0f32, 0.5, -1.0], [0.1, 0.2, 3.0]];
/// assert_eq!(count_correct(logits.view().into_dyn(), array![0, 1].view())?, 1);
/// # Ok::<(), kiln_runtime::Error>(())
/// ```
pub fn count_correct<F: Float>(
    output: ArrayViewD<'_, F>,
    labels: ArrayView1<'_, usize>,
) -> Result<usize> {
    let rows = output.shape().first().copied();
    if rows != Some(labels.len()) {
        return Err(Error::Shape {
            kind: "output",
            name: "scores",
            expected: format!("[{}, classes]", labels.len()),
            actual: output.shape().to_vec(),
            detail: format!(
                ": accuracy needs one row of class scores per label ({} labels)",
                labels.len()
            ),
        });
    }
    // `outer_iter` walks any layout without copying.
    Ok(output
        .outer_iter()
        .zip(labels.iter())
        .filter(|(row, &label)| argmax(row.iter()) == Some(label))
        .count())
}

/// How many labelled positions of `output` have their largest score at their label, and how
/// many positions were counted: the accuracy of a model labelling every position (a tagger,
/// a language model, a segmentation) as `correct / counted`.
///
/// `labels` has one label per position; `output` has the same shape with a class axis added,
/// either last (`[B, T, C]` for `[B, T]` labels, PyTorch's `Linear` output) or second
/// (`[B, C, H, W]` for `[B, H, W]`, a convolution's output). Positions labelled `ignored`
/// (the loss's `ignore_index`) are not counted.
///
/// # Errors
/// [`Error::Shape`] if `output` is not `labels`' shape with one class axis added.
///
/// ```
/// use kiln_runtime::train::count_correct_positions;
/// use ndarray::array;
/// // Two sequences of two positions, three classes; the last position is padding (label 9).
/// let logits = array![[[2.0f32, 0.0, 0.0], [0.0, 1.0, 0.0]], [[0.0, 0.0, 5.0], [1.0, 0.0, 0.0]]];
/// let labels = array![[0, 2], [2, 9]];
/// let (correct, counted) =
///     count_correct_positions(logits.view().into_dyn(), labels.view().into_dyn(), Some(9))?;
/// assert_eq!((correct, counted), (2, 3));
/// # Ok::<(), kiln_runtime::Error>(())
/// ```
pub fn count_correct_positions<F: Float>(
    output: ArrayViewD<'_, F>,
    labels: ArrayViewD<'_, usize>,
    ignored: Option<usize>,
) -> Result<(usize, usize)> {
    let Some(axis) = class_axis(output.shape(), labels.shape()) else {
        return Err(Error::Shape {
            kind: "output",
            name: "scores",
            expected: format!(
                "{:?} with a class axis added (last or second)",
                labels.shape()
            ),
            actual: output.shape().to_vec(),
            detail: ": accuracy needs one set of class scores per label".to_string(),
        });
    };
    let scores = classes_last(output, axis);
    let last = ndarray::Axis(scores.ndim() - 1);
    let (mut correct, mut counted) = (0, 0);
    for (lane, &label) in scores.lanes(last).into_iter().zip(labels.iter()) {
        if Some(label) == ignored {
            continue;
        }
        counted += 1;
        if argmax(lane.iter()) == Some(label) {
            correct += 1;
        }
    }
    Ok((correct, counted))
}

/// Where the classes are in scores of shape `out` for labels of shape `lab`: the labels'
/// shape with a class axis added last (`[B, C]` for `[B]`, `[B, T, C]` for `[B, T]`) or
/// second (`[B, C, H, W]` for `[B, H, W]`, PyTorch's layout for images); `None` otherwise.
pub(crate) fn class_axis(out: &[usize], lab: &[usize]) -> Option<usize> {
    if out.len() != lab.len() + 1 {
        None
    } else if out[..lab.len()] == *lab {
        Some(lab.len())
    } else if lab.len() >= 2 && out[0] == lab[0] && out[2..] == lab[1..] {
        Some(1)
    } else {
        None
    }
}

/// `scores` with its class axis `axis` moved last, so that the lanes along it follow the
/// labels' order. The axes go through a stack buffer (`IxDyn` keeps up to four inline), so
/// the usual ranks allocate nothing.
pub(crate) fn classes_last<F>(scores: ArrayViewD<'_, F>, axis: usize) -> ArrayViewD<'_, F> {
    let ndim = scores.ndim();
    if axis + 1 == ndim {
        return scores;
    }
    let mut axes = [0usize; 8];
    if ndim <= axes.len() {
        for (slot, a) in (0..ndim).filter(|&a| a != axis).enumerate() {
            axes[slot] = a;
        }
        axes[ndim - 1] = axis;
        scores.permuted_axes(IxDyn(&axes[..ndim]))
    } else {
        let mut axes: Vec<usize> = (0..ndim).filter(|&a| a != axis).collect();
        axes.push(axis);
        scores.permuted_axes(IxDyn(&axes))
    }
}

/// The fraction of rows of `output` whose largest score is at the row's label (top-1
/// accuracy), as Keras' `accuracy` for integer labels: `count_correct / n`. NaN for an empty
/// batch.
///
/// # Errors
/// As [`count_correct`].
///
/// ```
/// use kiln_runtime::train::accuracy;
/// use ndarray::array;
/// let logits = array![[2.0f64, 0.5], [0.1, 0.2], [0.3, -0.3], [1.0, 2.0]];
/// assert_eq!(accuracy(logits.view().into_dyn(), array![0, 1, 1, 1].view())?, 0.75);
/// # Ok::<(), kiln_runtime::Error>(())
/// ```
pub fn accuracy<F: Float>(output: ArrayViewD<'_, F>, labels: ArrayView1<'_, usize>) -> Result<f64> {
    let n = labels.len();
    let correct = count_correct(output, labels)?;
    Ok(correct as f64 / n as f64)
}

/// The targets of a batch as the view [`Supervised`] models take: its labels, or else its
/// values.
///
/// A [`DataLoader`] fills exactly one of the two; for a hand-made batch with neither, this is
/// an empty label view, which the model rejects with a shape error naming its target.
pub fn batch_targets<F: Float>(batch: &Batch<F>) -> TargetView<'_, F> {
    match (&batch.labels, &batch.values) {
        (Some(labels), _) => TargetView::Labels(labels.view()),
        (None, Some(values)) => TargetView::Values(values.view()),
        (None, None) => TargetView::Labels(ArrayView1::from(&[][..])),
    }
}

/// Loss and accuracy averaged over samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Metrics {
    /// The mean loss per sample (each batch's mean loss weighted by its size).
    pub loss: f64,
    /// The top-1 accuracy, for class labels.
    pub accuracy: Option<f64>,
    /// The number of samples seen.
    pub samples: usize,
}

/// Running sums of a pass over batches, turned into [`Metrics`] at the end.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MetricsAccumulator {
    loss_sum: f64,
    correct: usize,
    labelled: usize,
    samples: usize,
}

impl MetricsAccumulator {
    /// Adds a batch of `n` samples whose mean loss is `loss`, and, for class labels, how many
    /// of them were predicted correctly.
    pub fn add(&mut self, loss: f64, n: usize, correct: Option<usize>) {
        // A batch loss is a mean over the batch; weighting by size makes the epoch's figure a
        // mean over samples even with a smaller last batch.
        self.loss_sum += loss * n as f64;
        self.samples += n;
        if let Some(correct) = correct {
            self.correct += correct;
            self.labelled += n;
        }
    }

    /// Adds a batch of `n` samples whose mean loss is `loss`, with `correct` of `counted`
    /// labelled positions predicted correctly (models labelling every position: accuracy is
    /// over positions, not samples).
    pub fn add_positions(&mut self, loss: f64, n: usize, correct_of: Option<(usize, usize)>) {
        self.loss_sum += loss * n as f64;
        self.samples += n;
        if let Some((correct, counted)) = correct_of {
            self.correct += correct;
            self.labelled += counted;
        }
    }

    /// The running sums as four numbers, to be summed across ranks (see [`Self::from_sums`]).
    pub(crate) fn to_sums(self) -> [f64; 4] {
        [
            self.loss_sum,
            self.correct as f64,
            self.labelled as f64,
            self.samples as f64,
        ]
    }

    /// The accumulator whose [`Self::to_sums`] are `sums` (counts below 2^53 are exact).
    pub(crate) fn from_sums(sums: [f64; 4]) -> Self {
        MetricsAccumulator {
            loss_sum: sums[0],
            correct: sums[1].round() as usize,
            labelled: sums[2].round() as usize,
            samples: sums[3].round() as usize,
        }
    }

    /// The number of samples added so far.
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// The averages so far (NaN loss when nothing was added).
    pub fn metrics(&self) -> Metrics {
        Metrics {
            loss: self.loss_sum / self.samples as f64,
            accuracy: (self.labelled > 0).then(|| self.correct as f64 / self.labelled as f64),
            samples: self.samples,
        }
    }
}

/// The loss and (for class labels) the accuracy of `model` over all of `data`, in batches of
/// `batch_size`, in inference mode ([`Supervised::eval_batch`]: dropout off, batch norm on its
/// running statistics, nothing updated).
///
/// # Errors
/// The model's errors for a batch (a sample shape or target kind it does not take, a label out
/// of range).
///
/// ```
/// # fn demo<M: kiln_runtime::Supervised<f32>>(model: &M) -> kiln_runtime::Result<()> {
/// use kiln_runtime::{data, train};
/// let test = data::digits::<f32>()?;
/// let metrics = train::evaluate(model, &test, 256)?;
/// println!("test loss {:.4}, accuracy {:.3}", metrics.loss, metrics.accuracy.unwrap_or(f64::NAN));
/// # Ok(())
/// # }
/// ```
pub fn evaluate<F, M, D>(model: &M, data: &D, batch_size: usize) -> Result<Metrics>
where
    F: Float,
    M: Supervised<F>,
    D: Dataset<F> + ?Sized,
{
    evaluate_with(
        model,
        data,
        batch_size,
        &mut M::Workspace::default(),
        &mut Batch::new(),
    )
}

/// [`evaluate`] with a workspace and a batch buffer kept by the caller, so that evaluating
/// every epoch allocates nothing once they have grown.
///
/// # Errors
/// As [`evaluate`].
pub fn evaluate_with<F, M, D>(
    model: &M,
    data: &D,
    batch_size: usize,
    ws: &mut M::Workspace,
    batch: &mut Batch<F>,
) -> Result<Metrics>
where
    F: Float,
    M: Supervised<F>,
    D: Dataset<F> + ?Sized,
{
    let mut none = MetricCounts::default();
    evaluate_counting(model, data, batch_size, ws, batch, &mut none)
}

/// [`evaluate_with`], also adding every batch to `counts`.
pub(crate) fn evaluate_counting<F, M, D>(
    model: &M,
    data: &D,
    batch_size: usize,
    ws: &mut M::Workspace,
    batch: &mut Batch<F>,
    counts: &mut MetricCounts,
) -> Result<Metrics>
where
    F: Float,
    M: Supervised<F>,
    D: Dataset<F> + ?Sized,
{
    let loader = DataLoader::new(data, batch_size);
    let mut batches = loader.epoch_batches(0);
    let mut acc = MetricsAccumulator::default();
    while batches.next_into(batch) {
        let loss = model.eval_batch(batch.x.view(), batch_targets(batch), ws)?;
        let correct = match &batch.labels {
            Some(labels) => Some(count_correct(M::last_output(ws)?, labels.view())?),
            None => None,
        };
        acc.add(loss.to_f64(), batch.len(), correct);
        add_supervised(counts, M::last_output(ws)?, batch)?;
    }
    Ok(acc.metrics())
}

/// Adds a batch that a [`Supervised`] model has run to `counts`: its first output against the
/// batch's labels or values.
pub(crate) fn add_supervised<F: Float>(
    counts: &mut MetricCounts,
    output: ArrayViewD<'_, F>,
    batch: &Batch<F>,
) -> Result<()> {
    if counts.is_empty() {
        return Ok(());
    }
    match (&batch.labels, &batch.values) {
        (Some(labels), _) => counts.add_labels(output, labels.view().into_dyn()),
        (None, Some(values)) => counts.add_values(output, values.view()),
        (None, None) => Ok(()),
    }
}

/// The loss (named `loss`) and `metrics` of `model` over all of `data`, in batches of
/// `batch_size` (at least 1), in inference mode, as Keras'
/// `model.evaluate(..., return_dict=True)`: the figures of [`evaluate`] for any [`Metric`].
/// The metrics are named as [`Metric::name`] gives them, without a `val_` prefix.
///
/// # Errors
/// As [`evaluate`]; [`Error::Data`] naming the metric when it does not fit the model (see
/// [`MetricCounts::add_labels`] and [`MetricCounts::add_values`]).
///
/// ```
/// # fn demo<M: kiln_runtime::Supervised<f32>>(model: &M) -> kiln_runtime::Result<()> {
/// use kiln_runtime::train::{evaluate_metrics, Metric};
/// use kiln_runtime::data;
/// let mut test = data::digits::<f32>()?;
/// test.reshape_samples(&[64])?;
/// let values = evaluate_metrics(model, &test, 256, &[Metric::MacroF1, Metric::Accuracy])?;
/// println!("loss {:.4}, f1 {:.3}", values.get("loss").unwrap_or(f64::NAN), values.get("f1").unwrap_or(f64::NAN));
/// # Ok(())
/// # }
/// ```
pub fn evaluate_metrics<F, M, D>(
    model: &M,
    data: &D,
    batch_size: usize,
    metrics: &[Metric],
) -> Result<MetricValues>
where
    F: Float,
    M: Supervised<F>,
    D: Dataset<F> + ?Sized,
{
    let mut counts = MetricCounts::new(metrics, M::CLASSES.unwrap_or(0), None)?;
    let summary = evaluate_counting(
        model,
        data,
        batch_size.max(1),
        &mut M::Workspace::default(),
        &mut Batch::new(),
        &mut counts,
    )?;
    Ok(with_loss(summary.loss, &counts))
}

/// `loss` first, then the counted metrics.
fn with_loss(loss: f64, counts: &MetricCounts) -> MetricValues {
    let mut values = MetricValues::new();
    values.push("loss", loss);
    for (name, value) in counts.values().iter() {
        values.push(name, value);
    }
    values
}

/// The loss and (for a model with one class-label target) the accuracy over labelled
/// positions of `model` on all of `data`, in batches of `batch_size` (at least 1), in
/// inference mode: [`evaluate`] for a [`Trainable`] model on a [`BatchSource`], as
/// [`Trainer::fit_batches`](super::Trainer::fit_batches) validates.
///
/// # Errors
/// The source's errors, and the model's for a batch (an array of the wrong kind or shape, an
/// id out of range).
///
/// ```no_run
/// # fn demo<M: kiln_runtime::Trainable<f32>>(model: &M, test: &kiln_runtime::text::EncodedText) -> kiln_runtime::Result<()> {
/// let metrics = kiln_runtime::train::evaluate_batches(model, &test.batches(), 256)?;
/// println!("test loss {:.4}, accuracy {:.3}", metrics.loss, metrics.accuracy.unwrap_or(f64::NAN));
/// # Ok(())
/// # }
/// ```
pub fn evaluate_batches<F, M, S>(model: &M, data: &S, batch_size: usize) -> Result<Metrics>
where
    F: Float,
    M: Trainable<F>,
    S: BatchSource<F> + ?Sized,
{
    let mut ws = <M as Trainable<F>>::Workspace::default();
    evaluate_batches_with(model, data, batch_size, &mut ws, &mut Vec::new())
}

/// [`evaluate_batches`] with a workspace and a batch buffer kept by the caller, so that
/// evaluating every epoch allocates nothing once they have grown.
///
/// # Errors
/// As [`evaluate_batches`].
pub fn evaluate_batches_with<F, M, S>(
    model: &M,
    data: &S,
    batch_size: usize,
    ws: &mut <M as Trainable<F>>::Workspace,
    batch: &mut Vec<BatchArray<F>>,
) -> Result<Metrics>
where
    F: Float,
    M: Trainable<F>,
    S: BatchSource<F> + ?Sized,
{
    let mut none = MetricCounts::default();
    evaluate_batches_counting(model, data, batch_size, ws, batch, &mut none)
}

/// [`evaluate_batches_with`], also adding every batch to `counts`.
pub(crate) fn evaluate_batches_counting<F, M, S>(
    model: &M,
    data: &S,
    batch_size: usize,
    ws: &mut <M as Trainable<F>>::Workspace,
    batch: &mut Vec<BatchArray<F>>,
    counts: &mut MetricCounts,
) -> Result<Metrics>
where
    F: Float,
    M: Trainable<F>,
    S: BatchSource<F> + ?Sized,
{
    let mut order = IndexBatches::new(data.len(), batch_size.max(1), false, None, 0, None);
    let mut acc = MetricsAccumulator::default();
    while let Some(indices) = order.next_indices() {
        data.fill(indices, batch)?;
        let loss = model.eval_step(batch, ws)?;
        let correct_of = batch_accuracy::<F, M>(batch, ws)?;
        acc.add_positions(loss.to_f64(), indices.len(), correct_of);
        add_trainable::<F, M>(counts, batch, ws)?;
    }
    Ok(acc.metrics())
}

/// [`evaluate_metrics`] for a [`Trainable`] model on a [`BatchSource`]: the loss (named
/// `loss`) and `metrics` over all of `data`, in batches of `batch_size` (at least 1), in
/// inference mode. The metrics read the model's first output and its one target (class
/// labels, per sample or per position, or float values).
///
/// # Errors
/// As [`evaluate_batches`]; [`Error::Data`] naming the metric when it does not fit the model,
/// or when the model has more than one target.
pub fn evaluate_batches_metrics<F, M, S>(
    model: &M,
    data: &S,
    batch_size: usize,
    metrics: &[Metric],
) -> Result<MetricValues>
where
    F: Float,
    M: Trainable<F>,
    S: BatchSource<F> + ?Sized,
{
    let (classes, ignored) = label_target(M::ARGS).map_or((0, None), |(_, c, i)| (c, i));
    let mut counts = MetricCounts::new(metrics, classes, ignored)?;
    let mut ws = <M as Trainable<F>>::Workspace::default();
    let summary = evaluate_batches_counting(
        model,
        data,
        batch_size,
        &mut ws,
        &mut Vec::new(),
        &mut counts,
    )?;
    Ok(with_loss(summary.loss, &counts))
}

/// Adds the last batch run with `ws` to `counts`: the model's first output against its one
/// target.
pub(crate) fn add_trainable<F: Float, M: Trainable<F>>(
    counts: &mut MetricCounts,
    batch: &[BatchArray<F>],
    ws: &M::Workspace,
) -> Result<()> {
    if counts.is_empty() {
        return Ok(());
    }
    let mut targets = M::ARGS.iter().enumerate().filter(|(_, a)| a.target);
    let (index, arg) = match (targets.next(), targets.next()) {
        (Some(found), None) => found,
        _ => {
            let declared = M::ARGS.iter().filter(|a| a.target).count();
            let names: Vec<String> = counts.metrics().iter().map(|m| format!("`{m}`")).collect();
            return Err(Error::Data {
                what: "metrics",
                problem: format!(
                    "{} compare the model's first output with its target, but the model                      declares {declared} targets: train it without metrics, or with one target",
                    names.join(", ")
                ),
            });
        }
    };
    let output = M::last_output(ws)?;
    match batch.get(index) {
        Some(BatchArray::Ids(labels)) if matches!(arg.kind, ArgKind::Labels { .. }) => {
            counts.add_labels(output, labels.view())
        }
        Some(BatchArray::Float(values)) => counts.add_values(output, values.view()),
        _ => Err(Error::Data {
            what: "metrics",
            problem: format!(
                "the model's target `{}` holds {}: metrics need class labels or float values",
                arg.name, arg.kind
            ),
        }),
    }
}

/// Where a model's accuracy comes from: its one class-label target (index in the batch), its
/// class count and the label the loss ignores.
pub(crate) fn label_target(args: &[crate::ArgSpec]) -> Option<(usize, usize, Option<usize>)> {
    let mut labels = args.iter().enumerate().filter_map(|(i, a)| match a.kind {
        ArgKind::Labels { classes, ignored } if a.target => Some((i, classes, ignored)),
        _ => None,
    });
    match (labels.next(), labels.next()) {
        (Some(found), None) => Some(found),
        _ => None,
    }
}

/// Correct and counted labelled positions of the last batch run with `ws`, when the model
/// has one class-label target and its first output holds the class scores of every label
/// (the labels' shape with an axis of the classes added, last or second); `None` otherwise,
/// so that a model whose first output is something else trains without an accuracy.
pub(crate) fn batch_accuracy<F: Float, M: Trainable<F>>(
    batch: &[BatchArray<F>],
    ws: &M::Workspace,
) -> Result<Option<(usize, usize)>> {
    let Some((index, classes, ignored)) = label_target(M::ARGS) else {
        return Ok(None);
    };
    let Some(BatchArray::Ids(labels)) = batch.get(index) else {
        return Ok(None);
    };
    let output = M::last_output(ws)?;
    let fits = class_axis(output.shape(), labels.shape())
        .is_some_and(|axis| output.shape()[axis] == classes);
    if !fits {
        return Ok(None);
    }
    count_correct_positions(output, labels.view(), ignored).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, Array3};

    #[test]
    fn argmax_takes_first_maximum_and_nan() {
        assert_eq!(argmax([1.0f32, 3.0, 3.0, 2.0].iter()), Some(1));
        assert_eq!(argmax([1.0f32, f32::NAN, 5.0].iter()), Some(1));
        assert_eq!(argmax([f32::NAN, 1.0].iter()), Some(0));
        assert_eq!(argmax(std::iter::empty::<&f32>()), None);
    }

    #[test]
    fn accuracy_counts_rows_and_checks_shapes() {
        let out = array![[0.1f64, 0.9], [0.8, 0.2], [0.5, 0.5]];
        assert_eq!(
            count_correct(out.view().into_dyn(), array![1, 0, 1].view()).unwrap(),
            2
        );
        assert!(
            (accuracy(out.view().into_dyn(), array![1, 1, 0].view()).unwrap() - 2.0 / 3.0).abs()
                < 1e-15
        );
        // A transposed (non-contiguous) view reads the same rows.
        let t = array![[0.1f64, 0.8], [0.9, 0.2]];
        assert_eq!(
            count_correct(t.t().into_dyn(), array![1, 0].view()).unwrap(),
            2
        );
        // Trailing axes are flattened into the row: rows [0, 1, 2, 3] and [1, 2, 3, 0].
        let cube = Array3::from_shape_fn((2, 2, 2), |(i, j, k)| ((i + j * 2 + k) % 4) as f32);
        assert_eq!(
            count_correct(cube.view().into_dyn(), array![3, 2].view()).unwrap(),
            2
        );
        assert_eq!(
            count_correct(cube.view().into_dyn(), array![3, 3].view()).unwrap(),
            1
        );
        let err = count_correct(out.view().into_dyn(), array![1, 0].view()).unwrap_err();
        assert!(
            err.to_string()
                .contains("one row of class scores per label"),
            "{err}"
        );
    }

    #[test]
    fn positions_with_the_class_axis_last_or_second() {
        // [B=1, C=2, H=1, W=3]: class 1 wins at the first two pixels.
        let planes = ndarray::array![[[[0.0f32, 0.0, 5.0]], [[1.0, 1.0, 0.0]]]];
        let labels = ndarray::array![[[1usize, 0, 0]]];
        assert_eq!(
            count_correct_positions(planes.view().into_dyn(), labels.view().into_dyn(), None)
                .unwrap(),
            (2, 3)
        );
        // The same scores with the class axis last.
        let last = planes.view().permuted_axes([0, 2, 3, 1]);
        assert_eq!(
            count_correct_positions(last.into_dyn(), labels.view().into_dyn(), Some(0)).unwrap(),
            (1, 1)
        );
        let err = count_correct_positions(
            planes.view().into_dyn(),
            ndarray::array![1usize, 0].view().into_dyn(),
            None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("class axis added"), "{err}");
        let mut acc = MetricsAccumulator::default();
        acc.add_positions(2.0, 2, Some((3, 4)));
        acc.add_positions(1.0, 2, None);
        assert_eq!(acc.metrics().accuracy, Some(0.75));
        assert_eq!(acc.metrics().loss, 1.5);
    }

    #[test]
    fn accumulator_weights_batches_by_size() {
        let mut acc = MetricsAccumulator::default();
        acc.add(1.0, 3, Some(3));
        acc.add(4.0, 1, Some(0));
        let m = acc.metrics();
        assert_eq!(m.loss, 7.0 / 4.0);
        assert_eq!(m.accuracy, Some(0.75));
        assert_eq!(m.samples, 4);
        assert!(MetricsAccumulator::default().metrics().loss.is_nan());
    }
}
