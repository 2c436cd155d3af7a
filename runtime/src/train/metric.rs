//! Keras-style metrics beyond the loss: [`Metric`] names a figure, [`MetricCounts`] keeps the
//! counts and sums a pass over batches needs for it (sums that data-parallel ranks add up),
//! and [`MetricValues`] holds the resulting figures by name.

use super::early_stopping::Mode;
use super::metrics::{argmax, is_nan};
use crate::{Error, Float, Result};
use ndarray::{ArrayView1, ArrayViewD, Axis};
use std::fmt;
use std::fmt::Write as _;

/// A figure measured over an epoch (on the training batches and on the validation data) or
/// over a data set ([`evaluate_metrics`](super::evaluate_metrics)), as Keras'
/// `model.compile(metrics=[...])` names them.
///
/// Classification metrics read the model's first output as class scores (logits or
/// probabilities: only their order matters) for a class-label target: `[B, C]` scores for
/// `[B]` labels, or one label per position with the class axis added last (`[B, T, C]` for
/// `[B, T]` labels) or second (`[B, C, H, W]` for `[B, H, W]`). Positions holding the loss's
/// `ignore_index` are not counted. A NaN score counts as the largest, as in `torch.argmax`, so
/// that a diverged row is never scored as a lucky guess; on ties the lower class index ranks
/// first, so [`Metric::TopKAccuracy`]`(1)` is [`Metric::Accuracy`].
///
/// The macro averages ([`Metric::MacroF1`], [`Metric::MacroPrecision`],
/// [`Metric::MacroRecall`]) are scikit-learn's and Keras' `average="macro"`: per class from
/// true positives, false positives and false negatives summed over the whole epoch (not an
/// average of per-batch figures), then the plain mean over all the model's classes. A class
/// whose figure divides by zero (no predictions for precision, no samples for recall, neither
/// for F1) contributes 0, as scikit-learn's `zero_division=0` with `labels=range(C)`: a class
/// that never occurs and is never predicted lowers the macro average (scikit-learn's default
/// `labels=None` would leave it out).
///
/// Regression metrics compare the model's first output with a float target of as many
/// elements, element by element, averaged over all elements.
///
/// ```
/// use kiln_runtime::train::{Metric, MetricCounts};
/// use ndarray::array;
///
/// // Three classes; the second sample is predicted as class 0 though it is class 1.
/// let scores = array![[2.0f32, 0.0, 0.0], [1.0, 0.5, 0.0], [0.0, 0.0, 3.0]];
/// let labels = array![0usize, 1, 2];
/// let metrics = [Metric::Accuracy, Metric::TopKAccuracy(2), Metric::MacroF1];
/// let mut counts = MetricCounts::new(&metrics, 3, None)?;
/// counts.add_labels(scores.view().into_dyn(), labels.view().into_dyn())?;
/// let values = counts.values();
/// assert_eq!(values.get("accuracy"), Some(2.0 / 3.0));
/// assert_eq!(values.get("top_2_accuracy"), Some(1.0));
/// // Per class F1: 2/3 (one right, one wrongly predicted as 0), 0, 1.
/// assert!((values.get("f1").unwrap() - (2.0 / 3.0 + 0.0 + 1.0) / 3.0).abs() < 1e-12);
/// assert_eq!(Metric::TopKAccuracy(5).name(), "top_5_accuracy");
/// # Ok::<(), kiln_runtime::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Metric {
    /// The fraction of labelled positions whose largest score is at their label (`accuracy`).
    /// The trainer reports it as [`EpochRecord::train_accuracy`](super::EpochRecord) and
    /// `val_accuracy` whenever the model has class labels; asking for it makes a model whose
    /// output does not fit its labels an error instead of training without an accuracy.
    Accuracy,
    /// The fraction of labelled positions whose label is among the `k` largest scores
    /// (`top_5_accuracy` for `k = 5`; Keras' `SparseTopKCategoricalAccuracy`). A `k` at or
    /// above the class count is always right; `k = 0` is an error.
    TopKAccuracy(usize),
    /// The mean over classes of each class's F1 score, `2·tp / (2·tp + fp + fn)` (`f1`).
    MacroF1,
    /// The mean over classes of each class's precision, `tp / (tp + fp)` (`precision`).
    MacroPrecision,
    /// The mean over classes of each class's recall, `tp / (tp + fn)` (`recall`).
    MacroRecall,
    /// The mean absolute difference between output and target elements (`mae`).
    MeanAbsoluteError,
    /// The mean squared difference between output and target elements (`mse`).
    MeanSquaredError,
    /// The square root of [`Metric::MeanSquaredError`] over the whole pass (`rmse`; not a mean
    /// of per-batch roots).
    RootMeanSquaredError,
}

impl Metric {
    /// The name Keras prints for it (`accuracy`, `top_5_accuracy`, `f1`, `precision`,
    /// `recall`, `mae`, `mse`, `rmse`); validation figures add the prefix `val_`.
    pub fn name(&self) -> String {
        match self {
            Metric::Accuracy => "accuracy".to_string(),
            Metric::TopKAccuracy(k) => format!("top_{k}_accuracy"),
            Metric::MacroF1 => "f1".to_string(),
            Metric::MacroPrecision => "precision".to_string(),
            Metric::MacroRecall => "recall".to_string(),
            Metric::MeanAbsoluteError => "mae".to_string(),
            Metric::MeanSquaredError => "mse".to_string(),
            Metric::RootMeanSquaredError => "rmse".to_string(),
        }
    }

    /// Whether it reads class scores and class labels (the others read float targets).
    pub fn is_classification(&self) -> bool {
        !matches!(
            self,
            Metric::MeanAbsoluteError | Metric::MeanSquaredError | Metric::RootMeanSquaredError
        )
    }

    /// Which way is better: [`Mode::Max`] for accuracies and the macro averages, [`Mode::Min`]
    /// for the errors (what Keras' `mode="auto"` infers).
    pub fn mode(&self) -> Mode {
        if self.is_classification() {
            Mode::Max
        } else {
            Mode::Min
        }
    }

    /// Whether it needs the per-class counts.
    fn per_class(&self) -> bool {
        matches!(
            self,
            Metric::MacroF1 | Metric::MacroPrecision | Metric::MacroRecall
        )
    }

    /// The `k` of a top-k figure (1 for accuracy).
    fn top_k(&self) -> Option<usize> {
        match self {
            Metric::Accuracy => Some(1),
            Metric::TopKAccuracy(k) => Some(*k),
            _ => None,
        }
    }
}

/// The metric's name, as [`Metric::name`].
impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// Figures by name, in the order they were measured: a pass's metrics, or an epoch's
/// ([`EpochRecord::train_metrics`](super::EpochRecord::train_metrics)).
///
/// ```
/// use kiln_runtime::train::MetricValues;
/// let mut values = MetricValues::new();
/// values.push("f1", 0.75);
/// values.push("mae", 0.5);
/// assert_eq!(values.get("f1"), Some(0.75));
/// assert_eq!(values.get("rmse"), None);
/// assert_eq!(values.to_string(), "f1 0.7500  mae 0.5000");
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricValues {
    entries: Vec<(String, f64)>,
}

impl MetricValues {
    /// No figures.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a figure, or replaces the one of the same name.
    pub fn push(&mut self, name: impl Into<String>, value: f64) {
        let name = name.into();
        match self.entries.iter_mut().find(|(n, _)| *n == name) {
            Some(entry) => entry.1 = value,
            None => self.entries.push((name, value)),
        }
    }

    /// The figure named `name`.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.entries
            .iter()
            .find(|(n, _)| n == name)
            .map(|&(_, v)| v)
    }

    /// The names and figures, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, f64)> + '_ {
        self.entries.iter().map(|(n, v)| (n.as_str(), *v))
    }

    /// The names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.entries.iter().map(|(n, _)| n.as_str())
    }

    /// How many figures there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// `name value` pairs, four decimals, two spaces apart (as the progress line prints them).
impl fmt::Display for MetricValues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, value)) in self.iter().enumerate() {
            if i > 0 {
                f.write_str("  ")?;
            }
            write!(f, "{name} {value:.4}")?;
        }
        Ok(())
    }
}

/// The counts and sums behind a list of [`Metric`]s over a pass of batches: labelled
/// positions, how many had their label in the top k, per-class true positives, predictions
/// and support, absolute and squared errors. Batches are added with
/// [`MetricCounts::add_labels`] or [`MetricCounts::add_values`]; [`MetricCounts::values`]
/// gives the figures so far. Counts are sums, so the counts of several passes (ranks of a
/// data-parallel run) add up to those of one pass over all their batches.
///
/// Adding a batch allocates nothing: the per-class counts are sized once, when the counter is
/// made, and [`MetricCounts::reset`] keeps them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricCounts {
    /// The metrics, without repeats, in the order given.
    metrics: Vec<Metric>,
    /// The distinct `k` of the top-k figures (accuracy is k = 1).
    ks: Vec<usize>,
    /// The length of the per-class counts (0 when no metric needs them).
    classes: usize,
    /// The label that is not counted (the loss's `ignore_index`).
    ignored: Option<usize>,
    /// Labelled positions counted.
    counted: u64,
    /// Per entry of `ks`: positions whose label was among the k largest scores.
    in_top_k: Vec<u64>,
    /// Per class: positions of the class predicted as it.
    true_positives: Vec<u64>,
    /// Per class: positions predicted as the class.
    predicted: Vec<u64>,
    /// Per class: positions labelled with the class.
    support: Vec<u64>,
    /// Sum of absolute errors, for regression.
    abs_sum: f64,
    /// Sum of squared errors, for regression.
    sq_sum: f64,
    /// Output elements compared, for regression.
    elements: u64,
}

impl MetricCounts {
    /// Counters for `metrics` (repeats are measured once) of a model with `classes` classes
    /// (the length of the macro averages' per-class counts; 0 for a model without class
    /// labels, which makes adding labels for a macro average an error), not counting
    /// positions labelled `ignored` (the loss's `ignore_index`).
    ///
    /// # Errors
    /// [`Error::Data`] for [`Metric::TopKAccuracy`]`(0)`.
    pub fn new(metrics: &[Metric], classes: usize, ignored: Option<usize>) -> Result<Self> {
        let mut unique: Vec<Metric> = Vec::with_capacity(metrics.len());
        for &m in metrics {
            if !unique.contains(&m) {
                unique.push(m);
            }
        }
        if unique.contains(&Metric::TopKAccuracy(0)) {
            return Err(Error::Data {
                what: "metrics",
                problem: "TopKAccuracy(0) counts nothing: give k of at least 1".to_string(),
            });
        }
        let per_class = unique.iter().any(Metric::per_class);
        let mut ks: Vec<usize> = Vec::new();
        for k in unique.iter().filter_map(Metric::top_k) {
            if !ks.contains(&k) {
                ks.push(k);
            }
        }
        let classes = if per_class { classes } else { 0 };
        Ok(Self {
            in_top_k: vec![0; ks.len()],
            true_positives: vec![0; classes],
            predicted: vec![0; classes],
            support: vec![0; classes],
            metrics: unique,
            ks,
            classes,
            ignored,
            counted: 0,
            abs_sum: 0.0,
            sq_sum: 0.0,
            elements: 0,
        })
    }

    /// The metrics measured, in order, each once.
    pub fn metrics(&self) -> &[Metric] {
        &self.metrics
    }

    /// Whether no metric is measured (adding a batch then does nothing).
    pub fn is_empty(&self) -> bool {
        self.metrics.is_empty()
    }

    /// Clears the counts (for the next epoch), keeping the metrics and the buffers.
    pub fn reset(&mut self) {
        self.counted = 0;
        for counts in [
            &mut self.in_top_k,
            &mut self.true_positives,
            &mut self.predicted,
            &mut self.support,
        ] {
            counts.fill(0);
        }
        self.abs_sum = 0.0;
        self.sq_sum = 0.0;
        self.elements = 0;
    }

    /// Counts a batch of class scores `output` against class `labels`: `output` is `labels`'
    /// shape with a class axis added, last (`[B, C]` for `[B]`, `[B, T, C]` for `[B, T]`) or
    /// second (`[B, C, H, W]` for `[B, H, W]`).
    ///
    /// # Errors
    /// [`Error::Data`] naming the metrics if some metric needs float targets, if `output` is
    /// not `labels`' shape with a class axis added (of the counter's class count, for the
    /// macro averages), or if a label (other than the ignored one) is not a class.
    pub fn add_labels<F: Float>(
        &mut self,
        output: ArrayViewD<'_, F>,
        labels: ArrayViewD<'_, usize>,
    ) -> Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        if let Some(m) = self.metrics.iter().find(|m| !m.is_classification()) {
            return Err(misfit(
                &format!("`{m}`"),
                "float targets with as many elements as the model's first output",
                &format!("class labels of shape {:?}", labels.shape()),
                output.shape(),
            ));
        }
        let (out, lab) = (output.shape(), labels.shape());
        let Some(class_axis) = super::metrics::class_axis(out, lab) else {
            return Err(misfit(
                &names_of(&self.metrics, |_| true),
                "the model's first output to be the labels' shape with a class axis added \
                 (last or second)",
                &format!("class labels of shape {lab:?}"),
                out,
            ));
        };
        let width = out[class_axis];
        let per_class = self.metrics.iter().any(Metric::per_class);
        if per_class && width != self.classes {
            let needs = match self.classes {
                0 => "a class count (the counter was made for 0 classes)".to_string(),
                n => format!("scores for the model's {n} classes"),
            };
            return Err(misfit(
                &names_of(&self.metrics, Metric::per_class),
                &needs,
                &format!("class labels of shape {lab:?}"),
                out,
            ));
        }
        let scores = super::metrics::classes_last(output, class_axis);
        let last = Axis(scores.ndim() - 1);
        for (lane, &label) in scores.lanes(last).into_iter().zip(labels.iter()) {
            if Some(label) == self.ignored {
                continue;
            }
            if label >= width {
                return Err(Error::Data {
                    what: "metrics",
                    problem: format!(
                        "label {label} is not one of the {width} classes the model's first \
                         output scores"
                    ),
                });
            }
            self.counted += 1;
            if !self.ks.is_empty() {
                let above = ranked_above(lane, label);
                for (k, hits) in self.ks.iter().zip(self.in_top_k.iter_mut()) {
                    if above < *k {
                        *hits += 1;
                    }
                }
            }
            if per_class {
                // A lane is never empty here: it holds `width > label` scores.
                if let Some(p) = argmax(lane.iter()) {
                    self.predicted[p] += 1;
                    if p == label {
                        self.true_positives[label] += 1;
                    }
                }
                self.support[label] += 1;
            }
        }
        Ok(())
    }

    /// Counts a batch of `output` values against float `targets` of as many elements (in
    /// their logical orders: `[B, 1]` against `[B]` compares sample by sample).
    ///
    /// # Errors
    /// [`Error::Data`] naming the metrics if some metric needs class labels, or if the
    /// element counts differ.
    pub fn add_values<F: Float>(
        &mut self,
        output: ArrayViewD<'_, F>,
        targets: ArrayViewD<'_, F>,
    ) -> Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        let target = || format!("float values of shape {:?}", targets.shape());
        if self.metrics.iter().any(Metric::is_classification) {
            return Err(misfit(
                &names_of(&self.metrics, Metric::is_classification),
                "class scores in the model's first output and a class-label target",
                &target(),
                output.shape(),
            ));
        }
        if output.len() != targets.len() {
            return Err(misfit(
                &names_of(&self.metrics, |_| true),
                "a first output with as many elements as the target",
                &target(),
                output.shape(),
            ));
        }
        for (&o, &t) in output.iter().zip(targets.iter()) {
            let d = o.to_f64() - t.to_f64();
            self.abs_sum += d.abs();
            self.sq_sum += d * d;
        }
        self.elements += output.len() as u64;
        Ok(())
    }

    /// The figures so far, named as [`Metric::name`], in the order of the metrics. A figure
    /// over nothing (no labelled position, no element) is NaN.
    pub fn values(&self) -> MetricValues {
        self.values_named("", false)
    }

    /// [`Self::values`] with `prefix` before every name, leaving out accuracy if asked (the
    /// trainer reports it in its own fields).
    pub(crate) fn values_named(&self, prefix: &str, skip_accuracy: bool) -> MetricValues {
        let mut values = MetricValues::new();
        for m in &self.metrics {
            if skip_accuracy && *m == Metric::Accuracy {
                continue;
            }
            values.push(format!("{prefix}{m}"), self.value(*m));
        }
        values
    }

    /// Writes `  name value` for each metric but accuracy (the running figures of a progress
    /// bar).
    pub(crate) fn write_running(&self, out: &mut String) {
        for m in self.metrics.iter().filter(|m| **m != Metric::Accuracy) {
            // Writing to a String cannot fail.
            let _ = write!(out, "  {m} {:.4}", self.value(*m));
        }
    }

    /// One metric's figure.
    fn value(&self, metric: Metric) -> f64 {
        let ratio = |num: u64, den: u64| {
            if den == 0 {
                0.0
            } else {
                num as f64 / den as f64
            }
        };
        let macro_mean = |per: &dyn Fn(usize) -> f64| {
            if self.counted == 0 {
                return f64::NAN;
            }
            (0..self.classes).map(per).sum::<f64>() / self.classes as f64
        };
        match metric {
            Metric::Accuracy | Metric::TopKAccuracy(_) => {
                let k = metric.top_k().unwrap_or(1);
                match self.ks.iter().position(|&have| have == k) {
                    Some(i) if self.counted > 0 => self.in_top_k[i] as f64 / self.counted as f64,
                    _ => f64::NAN,
                }
            }
            Metric::MacroPrecision => {
                macro_mean(&|c| ratio(self.true_positives[c], self.predicted[c]))
            }
            Metric::MacroRecall => macro_mean(&|c| ratio(self.true_positives[c], self.support[c])),
            Metric::MacroF1 => macro_mean(&|c| {
                ratio(
                    2 * self.true_positives[c],
                    self.predicted[c] + self.support[c],
                )
            }),
            Metric::MeanAbsoluteError => self.abs_sum / self.elements as f64,
            Metric::MeanSquaredError => self.sq_sum / self.elements as f64,
            Metric::RootMeanSquaredError => (self.sq_sum / self.elements as f64).sqrt(),
        }
    }

    /// How many numbers [`Self::write_sums`] writes: the same for every counter of the same
    /// metrics and class count, so that ranks agree on it before any batch.
    pub(crate) fn sums_len(&self) -> usize {
        if self.is_empty() {
            return 0;
        }
        1 + self.ks.len() + 3 * self.classes + 3
    }

    /// Appends the counts and sums to `out`, to be summed across ranks (see
    /// [`Self::read_sums`]).
    pub(crate) fn write_sums(&self, out: &mut Vec<f64>) {
        if self.is_empty() {
            return;
        }
        out.push(self.counted as f64);
        let counts = self
            .in_top_k
            .iter()
            .chain(&self.true_positives)
            .chain(&self.predicted)
            .chain(&self.support);
        out.extend(counts.map(|&c| c as f64));
        out.extend([self.abs_sum, self.sq_sum, self.elements as f64]);
    }

    /// Sets the counts and sums from [`Self::write_sums`]' layout (counts below 2^53 are
    /// exact); `sums` must hold [`Self::sums_len`] numbers.
    pub(crate) fn read_sums(&mut self, sums: &[f64]) {
        if self.is_empty() || sums.len() != self.sums_len() {
            return;
        }
        let count = |v: f64| v.round() as u64;
        self.counted = count(sums[0]);
        let mut at = 1;
        for counts in [
            &mut self.in_top_k,
            &mut self.true_positives,
            &mut self.predicted,
            &mut self.support,
        ] {
            for c in counts.iter_mut() {
                *c = count(sums[at]);
                at += 1;
            }
        }
        self.abs_sum = sums[at];
        self.sq_sum = sums[at + 1];
        self.elements = count(sums[at + 2]);
    }
}

/// How many classes rank above `label` in `lane`: a larger score, or an equal one at a lower
/// index (so that the top 1 is `argmax`'s pick); a NaN ranks above every number.
fn ranked_above<F: Float>(lane: ArrayView1<'_, F>, label: usize) -> usize {
    let s = lane[label];
    let s_nan = is_nan(s);
    let mut above = 0;
    for (j, &v) in lane.iter().enumerate() {
        let higher = if j == label {
            false
        } else if is_nan(v) {
            !s_nan || j < label
        } else {
            !s_nan && (v > s || (v == s && j < label))
        };
        above += usize::from(higher);
    }
    above
}

/// `` `f1`, `precision` `` for the metrics that `which` selects.
fn names_of(metrics: &[Metric], which: impl Fn(&Metric) -> bool) -> String {
    let names: Vec<String> = metrics
        .iter()
        .filter(|m| which(m))
        .map(|m| format!("`{m}`"))
        .collect();
    names.join(", ")
}

/// The error for metrics that do not fit the model: what they need and what the model has.
fn misfit(names: &str, needs: &str, target: &str, output: &[usize]) -> Error {
    let verb = if names.contains(',') { "need" } else { "needs" };
    Error::Data {
        what: "metrics",
        problem: format!(
            "{names} {verb} {needs}, but the model's target is {target} and its first output \
             has shape {output:?}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, Array1};

    fn counts(metrics: &[Metric], classes: usize, ignored: Option<usize>) -> MetricCounts {
        MetricCounts::new(metrics, classes, ignored).expect("valid metrics")
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-12)
    }

    #[test]
    fn names_follow_keras() {
        let all = [
            Metric::Accuracy,
            Metric::TopKAccuracy(5),
            Metric::MacroF1,
            Metric::MacroPrecision,
            Metric::MacroRecall,
            Metric::MeanAbsoluteError,
            Metric::MeanSquaredError,
            Metric::RootMeanSquaredError,
        ];
        let names: Vec<String> = all.iter().map(Metric::name).collect();
        assert_eq!(
            names,
            [
                "accuracy",
                "top_5_accuracy",
                "f1",
                "precision",
                "recall",
                "mae",
                "mse",
                "rmse"
            ]
        );
        assert_eq!(Metric::MacroF1.mode(), Mode::Max);
        assert_eq!(Metric::RootMeanSquaredError.mode(), Mode::Min);
    }

    /// The example of scikit-learn's `f1_score` documentation:
    /// `y_true = [0, 1, 2, 0, 1, 2]`, `y_pred = [0, 2, 1, 0, 0, 1]`, `average="macro"` gives
    /// 0.26666666666666666.
    ///
    /// By hand: class 0 has tp 2, predicted 3, support 2: precision 2/3, recall 1, F1
    /// 2·2/(3+2) = 0.8. Classes 1 and 2 have tp 0: F1 0. Macro F1 = 0.8/3 = 0.2667; macro
    /// precision = (2/3)/3 = 0.2222; macro recall = 1/3.
    #[test]
    fn macro_averages_match_scikit_learn() {
        let predicted = [0usize, 2, 1, 0, 0, 1];
        let labels = array![0usize, 1, 2, 0, 1, 2];
        // One-hot scores of the predictions.
        let scores =
            ndarray::Array2::from_shape_fn(
                (6, 3),
                |(i, c)| {
                    if predicted[i] == c {
                        1.0f64
                    } else {
                        0.0
                    }
                },
            );
        let mut c = counts(
            &[Metric::MacroF1, Metric::MacroPrecision, Metric::MacroRecall],
            3,
            None,
        );
        c.add_labels(scores.view().into_dyn(), labels.view().into_dyn())
            .unwrap();
        let v = c.values();
        assert!(close(v.get("f1"), 0.266_666_666_666_666_66), "{v}");
        assert!(close(v.get("precision"), 2.0 / 9.0), "{v}");
        assert!(close(v.get("recall"), 1.0 / 3.0), "{v}");
    }

    /// Epoch sums, not batch averages: the same six samples in two batches of 4 and 2 give
    /// the figures of one batch of six, and so do counts summed as two ranks would sum them.
    #[test]
    fn counts_add_up_across_batches_and_ranks() {
        let scores = array![
            [0.9f32, 0.1, 0.0],
            [0.2, 0.3, 0.5],
            [0.1, 0.8, 0.1],
            [0.7, 0.2, 0.1],
            [0.6, 0.3, 0.1],
            [0.0, 0.9, 0.1]
        ];
        let labels = array![0usize, 1, 2, 0, 1, 2];
        let metrics = [Metric::MacroF1, Metric::TopKAccuracy(2), Metric::Accuracy];
        let mut whole = counts(&metrics, 3, None);
        whole
            .add_labels(scores.view().into_dyn(), labels.view().into_dyn())
            .unwrap();
        let mut split = counts(&metrics, 3, None);
        for (from, to) in [(0, 4), (4, 6)] {
            split
                .add_labels(
                    scores.slice(ndarray::s![from..to, ..]).into_dyn(),
                    labels.slice(ndarray::s![from..to]).into_dyn(),
                )
                .unwrap();
        }
        assert_eq!(split.values(), whole.values());
        // Two ranks: each counts its half; the element-wise sum of their sums is the whole.
        let (mut a, mut b) = (counts(&metrics, 3, None), counts(&metrics, 3, None));
        a.add_labels(
            scores.slice(ndarray::s![..3, ..]).into_dyn(),
            labels.slice(ndarray::s![..3]).into_dyn(),
        )
        .unwrap();
        b.add_labels(
            scores.slice(ndarray::s![3.., ..]).into_dyn(),
            labels.slice(ndarray::s![3..]).into_dyn(),
        )
        .unwrap();
        let (mut sa, mut sb) = (Vec::new(), Vec::new());
        a.write_sums(&mut sa);
        b.write_sums(&mut sb);
        assert_eq!(sa.len(), a.sums_len());
        let total: Vec<f64> = sa.iter().zip(&sb).map(|(x, y)| x + y).collect();
        let mut summed = counts(&metrics, 3, None);
        summed.read_sums(&total);
        assert_eq!(summed.values(), whole.values());
        assert_eq!(summed, whole);
        // Predictions 0, 2, 1, 0, 0, 1: accuracy 2/6. Top 2 misses only sample 2 (label 2
        // scores 0.1, tied with class 0, which ranks first on the tie: third).
        let v = whole.values();
        assert!(close(v.get("accuracy"), 1.0 / 3.0), "{v}");
        assert!(close(v.get("top_2_accuracy"), 5.0 / 6.0), "{v}");
        whole.reset();
        assert!(whole.values().get("f1").is_some_and(f64::is_nan));
        assert_eq!(whole.sums_len(), 1 + 2 + 9 + 3);
    }

    #[test]
    fn top_k_ties_nan_and_large_k() {
        // Ties rank the lower class first: for label 2 of [1, 3, 3, 0], class 1 is first and
        // class 2 second.
        let scores = array![[1.0f32, 3.0, 3.0, 0.0], [f32::NAN, 0.0, 5.0, 1.0]];
        let labels = array![2usize, 2];
        let metrics = [
            Metric::Accuracy,
            Metric::TopKAccuracy(2),
            Metric::TopKAccuracy(4),
            Metric::TopKAccuracy(9),
        ];
        let mut c = counts(&metrics, 0, None);
        c.add_labels(scores.view().into_dyn(), labels.view().into_dyn())
            .unwrap();
        let v = c.values();
        // Row 1: label 2 is second (tie with class 1, which comes first). Row 2: the NaN
        // ranks first, so label 2's 5.0 is second.
        assert!(close(v.get("accuracy"), 0.0), "{v}");
        assert!(close(v.get("top_2_accuracy"), 1.0), "{v}");
        assert!(close(v.get("top_4_accuracy"), 1.0), "{v}");
        assert!(close(v.get("top_9_accuracy"), 1.0), "{v}");
        // The NaN is the prediction, as argmax says: label 0 of the NaN row is right.
        let mut c = counts(&[Metric::Accuracy, Metric::MacroRecall], 4, None);
        c.add_labels(
            scores.view().into_dyn(),
            array![1usize, 0].view().into_dyn(),
        )
        .unwrap();
        let v = c.values();
        assert!(close(v.get("accuracy"), 1.0), "{v}");
        // Classes 0 and 1 each recalled; 2 and 3 have no support: (1 + 1 + 0 + 0) / 4.
        assert!(close(v.get("recall"), 0.5), "{v}");
        // A NaN label score: only lower-index NaNs rank above it.
        assert_eq!(ranked_above(array![f32::NAN, 9.0, f32::NAN].view(), 2), 1);
        assert_eq!(ranked_above(array![f32::NAN, 9.0, f32::NAN].view(), 0), 0);
        assert_eq!(ranked_above(array![1.0f32, 9.0, f32::NAN].view(), 1), 1);
    }

    /// Per-position labels with an ignored label, a class never predicted, and the class axis
    /// second.
    #[test]
    fn positions_ignore_a_label_and_absent_classes_count_zero() {
        // [B=1, T=4, C=3] with labels [1, 4]: the last position is padding (label 9).
        let scores = array![[
            [2.0f64, 0.0, 0.0],
            [0.0, 1.0, 0.0],
            [3.0, 0.0, 1.0],
            [0.0, 0.0, 9.0]
        ]];
        let labels = array![[0usize, 1, 2, 9]];
        let metrics = [
            Metric::Accuracy,
            Metric::MacroF1,
            Metric::MacroPrecision,
            Metric::MacroRecall,
        ];
        let mut c = counts(&metrics, 3, Some(9));
        c.add_labels(scores.view().into_dyn(), labels.view().into_dyn())
            .unwrap();
        // Predictions 0, 1, 0 for labels 0, 1, 2 (the padding's prediction 2 is not counted:
        // class 2 is never predicted). Class 0: tp 1, predicted 2, support 1: P 1/2, R 1,
        // F1 2/3. Class 1: P = R = F1 = 1. Class 2: tp 0, predicted 0 (P 0 by convention),
        // support 1 (R 0), F1 0.
        let v = c.values();
        assert!(close(v.get("accuracy"), 2.0 / 3.0), "{v}");
        assert!(close(v.get("precision"), 1.5 / 3.0), "{v}");
        assert!(close(v.get("recall"), 2.0 / 3.0), "{v}");
        assert!(close(v.get("f1"), (2.0 / 3.0 + 1.0) / 3.0), "{v}");

        // The same scores with the class axis second: [B=1, C=3, T=4] against labels [1, 4]
        // read the same lanes.
        let second = scores.view().permuted_axes([0, 2, 1]);
        let mut c2 = counts(&metrics, 3, Some(9));
        c2.add_labels(second.into_dyn(), labels.view().into_dyn())
            .unwrap();
        assert_eq!(c2.values(), v);

        // A fourth class that never occurs and is never predicted counts 0 in the mean.
        let wide = array![[[2.0f64, 0.0, 0.0, -1.0], [0.0, 1.0, 0.0, -1.0]]];
        let mut c4 = counts(&[Metric::MacroF1], 4, None);
        c4.add_labels(
            wide.view().into_dyn(),
            array![[0usize, 1]].view().into_dyn(),
        )
        .unwrap();
        assert!(close(c4.values().get("f1"), 0.5));
    }

    #[test]
    fn regression_errors_over_all_elements() {
        let output = array![[1.0f32, 2.0], [3.0, 5.0]];
        let target = array![[1.0f32, 0.0], [4.0, 5.0]];
        let metrics = [
            Metric::MeanAbsoluteError,
            Metric::MeanSquaredError,
            Metric::RootMeanSquaredError,
        ];
        let mut c = counts(&metrics, 0, None);
        c.add_values(output.view().into_dyn(), target.view().into_dyn())
            .unwrap();
        // Errors 0, 2, -1, 0: MAE 3/4, MSE 5/4.
        let v = c.values();
        assert!(close(v.get("mae"), 0.75), "{v}");
        assert!(close(v.get("mse"), 1.25), "{v}");
        assert!(close(v.get("rmse"), 1.25f64.sqrt()), "{v}");
        // [B, 1] against [B]: same elements, sample by sample.
        let mut c = counts(&metrics, 0, None);
        c.add_values(
            array![[1.0f64], [2.0]].view().into_dyn(),
            Array1::from(vec![0.0f64, 4.0]).view().into_dyn(),
        )
        .unwrap();
        assert!(close(c.values().get("mae"), 1.5));
        assert!(MetricCounts::new(&metrics, 0, None)
            .unwrap()
            .values()
            .get("rmse")
            .is_some_and(f64::is_nan));
    }

    #[test]
    fn metrics_that_do_not_fit_are_errors() {
        let scores = array![[1.0f32, 0.0], [0.0, 1.0]];
        let labels = array![0usize, 1];
        let err = counts(&[Metric::MeanAbsoluteError], 0, None)
            .add_labels(scores.view().into_dyn(), labels.view().into_dyn())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "metrics: `mae` needs float targets with as many elements as the model's first \
             output, but the model's target is class labels of shape [2] and its first output \
             has shape [2, 2]"
        );
        let err = counts(&[Metric::MacroF1, Metric::MacroRecall], 2, None)
            .add_values(scores.view().into_dyn(), scores.view().into_dyn())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "metrics: `f1`, `recall` need class scores in the model's first output and a \
             class-label target, but the model's target is float values of shape [2, 2] and \
             its first output has shape [2, 2]"
        );
        let err = counts(&[Metric::MacroF1], 3, None)
            .add_labels(scores.view().into_dyn(), labels.view().into_dyn())
            .unwrap_err();
        assert!(
            err.to_string().contains("scores for the model's 3 classes"),
            "{err}"
        );
        let err = counts(&[Metric::Accuracy], 0, None)
            .add_labels(
                scores.view().into_dyn(),
                array![0usize, 1, 1].view().into_dyn(),
            )
            .unwrap_err();
        assert!(err.to_string().contains("class axis added"), "{err}");
        let err = counts(&[Metric::Accuracy], 0, None)
            .add_labels(
                scores.view().into_dyn(),
                array![0usize, 5].view().into_dyn(),
            )
            .unwrap_err();
        assert!(err.to_string().contains("label 5"), "{err}");
        let err = counts(&[Metric::MeanSquaredError], 0, None)
            .add_values(
                scores.view().into_dyn(),
                array![1.0f32, 2.0].view().into_dyn(),
            )
            .unwrap_err();
        assert!(err.to_string().contains("as many elements"), "{err}");
        assert!(MetricCounts::new(&[Metric::TopKAccuracy(0)], 3, None).is_err());
        let err = counts(&[Metric::MacroPrecision], 0, None)
            .add_labels(scores.view().into_dyn(), labels.view().into_dyn())
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("metrics: `precision` needs a class count"),
            "{err}"
        );
        // Repeats are measured once.
        let c = counts(&[Metric::MacroF1, Metric::MacroF1], 2, None);
        assert_eq!(c.metrics(), &[Metric::MacroF1]);
    }
}
