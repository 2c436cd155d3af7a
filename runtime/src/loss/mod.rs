//! Loss functions: the value and the gradient with respect to the prediction.
//!
//! Every loss is a mean, as PyTorch's default `reduction='mean'` ([`kl_div`] also takes
//! PyTorch's `batchmean` and `sum`). A backward function takes
//! the incoming scalar adjoint `d_loss` (1 when the loss is the quantity being minimised)
//! and writes `d_loss · ∂loss/∂prediction`, or adds it when `accumulate` is set.
//!
//! Slice lengths that disagree with the sizes are caller bugs and panic; labels must already
//! have been validated with [`crate::shape::check_labels`].

mod bce;
mod kl_div;
mod nll;
mod regression;
mod soft;

pub use bce::{bce, bce_backward, bce_target_backward, check_probabilities};
pub use kl_div::{kl_div, kl_div_backward, kl_div_target_backward, KlDivOptions, KlReduction};
pub use nll::{nll, nll_backward};
pub use regression::{huber, huber_backward, l1, l1_backward, smooth_l1, smooth_l1_backward};
pub use soft::{
    cross_entropy_soft, cross_entropy_soft_backward, cross_entropy_soft_spatial,
    cross_entropy_soft_spatial_backward, cross_entropy_soft_spatial_target_backward,
    cross_entropy_soft_target_backward,
};

use crate::kernels::dispatch::{run_fast, ElementLoop};
use crate::kernels::lanes::{lane_max, lane_sum_by, LANES};
use crate::kernels::parallel::{self, SharedMut};
use crate::kernels::softmax::row_max;
use crate::kernels::store;
use crate::Float;

/// Mean squared error over all elements: `mean((pred − target)²)`. NaN when empty.
///
/// # Panics
/// If the slices differ in length (a caller bug).
///
/// ```
/// use kiln_runtime::loss::mse;
/// assert_eq!(mse(&[1.0f64, 2.0], &[0.0, 4.0]), 2.5);
/// ```
pub fn mse<F: Float>(pred: &[F], target: &[F]) -> F {
    assert_eq!(
        pred.len(),
        target.len(),
        "mse: prediction and target lengths differ"
    );
    let total: F = pred
        .iter()
        .zip(target)
        .map(|(&p, &t)| {
            let d = p - t;
            d * d
        })
        .sum();
    total / F::from_usize(pred.len())
}

/// Gradient of [`mse`]: `d_pred = (pred − target) · (2 / n) · d_loss`.
///
/// The factor `2 / n` is formed in f64 and rounded once, and the product is taken in that
/// order, as PyTorch's `mse_loss_backward` does.
///
/// # Panics
/// If the slices differ in length (a caller bug).
///
/// ```
/// use kiln_runtime::loss::mse_backward;
/// let mut d = [0.0f64; 2];
/// mse_backward(&[1.0, 2.0], &[0.0, 4.0], 1.0, &mut d, false);
/// assert_eq!(d, [1.0, -2.0]);
/// ```
pub fn mse_backward<F: Float>(
    pred: &[F],
    target: &[F],
    d_loss: F,
    d_pred: &mut [F],
    accumulate: bool,
) {
    assert_eq!(
        pred.len(),
        target.len(),
        "mse_backward: prediction and target lengths differ"
    );
    assert_eq!(
        pred.len(),
        d_pred.len(),
        "mse_backward: gradient buffer has the wrong length"
    );
    let norm = F::from_f64(2.0 / pred.len() as f64);
    for ((slot, &p), &t) in d_pred.iter_mut().zip(pred).zip(target) {
        store(slot, (p - t) * norm * d_loss, accumulate);
    }
}

#[track_caller]
fn check_cross_entropy(
    what: &str,
    len: usize,
    rows: usize,
    classes: usize,
    labels: &[usize],
    ignore: Option<usize>,
) {
    assert_eq!(
        len,
        rows * classes,
        "{what}: expected {rows}×{classes} logits, got {len}"
    );
    assert_eq!(
        labels.len(),
        rows,
        "{what}: expected {rows} labels, got {}",
        labels.len()
    );
    // Validated at the call boundary; an out-of-range label here would silently read the
    // next row's logits, so it is checked again (cheaply) rather than trusted. The ignored
    // label need not be a class (PyTorch's default is −100).
    if let Some(bad) = labels
        .iter()
        .position(|&l| l >= classes && Some(l) != ignore)
    {
        panic!(
            "{what}: label {} at position {bad} is not below {classes}",
            labels[bad]
        );
    }
}

/// The maximum and the ln Σ exp of a non-empty row, shifted by its maximum so that it cannot
/// overflow; both reductions in partial sums (see `kernels/lanes.rs`), so that inside
/// [`run_fast`] they vectorise. A NaN anywhere in the row makes the sum NaN.
#[inline(always)]
fn log_sum_exp<F: Float>(row: &[F]) -> (F, F) {
    if row.len() < LANES {
        // Shorter than one set of partial sums (10 classes): a plain loop has less to do.
        let max = row_max(row);
        let total = row.iter().fold(F::ZERO, |sum, &v| sum + (v - max).exp());
        return (max, total.ln());
    }
    let max = lane_max(row);
    let total = lane_sum_by(row, |v| (v - max).exp());
    (max, total.ln())
}

/// Cross-entropy of integer class labels: the mean over rows of `−log_softmax(logits)[label]`,
/// with `logits` a `rows × classes` matrix. NaN when `rows` is 0, as in PyTorch. This is
/// [`cross_entropy_ignore`] with nothing ignored.
///
/// # Panics
/// If the lengths disagree with `rows` and `classes`, or a label is not below `classes`
/// (labels must have been checked with [`crate::shape::check_labels`]).
///
/// ```
/// use kiln_runtime::loss::cross_entropy;
/// // Two equal logits: each class has probability 1/2.
/// let loss = cross_entropy(&[3.0f64, 3.0], 1, 2, &[1]);
/// assert!((loss - 2f64.ln()).abs() < 1e-15);
/// ```
pub fn cross_entropy<F: Float>(logits: &[F], rows: usize, classes: usize, labels: &[usize]) -> F {
    cross_entropy_impl("cross_entropy", logits, rows, classes, labels, None)
}

/// Cross-entropy with ignored positions, PyTorch's `F.cross_entropy(logits.reshape(-1, C),
/// labels.reshape(-1), ignore_index=ignore)` with the default mean reduction: the mean of
/// `−log_softmax(logits)[label]` over the rows whose label is not `ignore` (a sequence's
/// padding steps), with `logits` a `rows × classes` matrix. The ignored label need not be a
/// class.
///
/// When every row is ignored (or `rows` is 0) the mean is over nothing: NaN (`0 / 0`), as in
/// PyTorch.
///
/// # Panics
/// If the lengths disagree with `rows` and `classes`, or a label other than `ignore` is not
/// below `classes`.
///
/// ```
/// use kiln_runtime::loss::cross_entropy_ignore;
/// // The second row is padding: only the first counts.
/// let loss = cross_entropy_ignore(&[3.0f64, 3.0, 9.0, 0.0], 2, 2, &[1, 99], Some(99));
/// assert!((loss - 2f64.ln()).abs() < 1e-15);
/// assert!(cross_entropy_ignore(&[0.0f64, 0.0], 1, 2, &[99], Some(99)).is_nan());
/// ```
pub fn cross_entropy_ignore<F: Float>(
    logits: &[F],
    rows: usize,
    classes: usize,
    labels: &[usize],
    ignore: Option<usize>,
) -> F {
    cross_entropy_impl(
        "cross_entropy_ignore",
        logits,
        rows,
        classes,
        labels,
        ignore,
    )
}

fn cross_entropy_impl<F: Float>(
    what: &str,
    logits: &[F],
    rows: usize,
    classes: usize,
    labels: &[usize],
    ignore: Option<usize>,
) -> F {
    check_cross_entropy(what, logits.len(), rows, classes, labels, ignore);
    let mut sum = LossSum {
        logits,
        classes,
        labels,
        ignore,
        total: F::ZERO,
        counted: 0,
    };
    run_fast(&mut sum);
    sum.total / F::from_usize(sum.counted)
}

/// The sum of `−log_softmax` at the label over the counted rows, and their count, in row
/// order (see [`cross_entropy_impl`]).
struct LossSum<'a, F> {
    logits: &'a [F],
    classes: usize,
    labels: &'a [usize],
    ignore: Option<usize>,
    total: F,
    counted: usize,
}

impl<F: Float> ElementLoop for &mut LossSum<'_, F> {
    #[inline(always)]
    fn run(self) {
        for (row, &label) in self
            .logits
            .chunks_exact(self.classes.max(1))
            .zip(self.labels)
        {
            if Some(label) == self.ignore {
                continue;
            }
            let (max, lse) = log_sum_exp(row);
            // −log_softmax at the label, written as log_softmax is (x − max − lse) so that
            // the rounding matches PyTorch's log_softmax + nll_loss.
            self.total -= row[label] - max - lse;
            self.counted += 1;
        }
    }
}

/// Gradient of [`cross_entropy`]: `(softmax(logits) − onehot(label)) · d_loss / rows`,
/// computed row by row from the logits with no scratch buffer.
///
/// # Panics
/// As [`cross_entropy`], or if `d_logits` is not `rows × classes`.
pub fn cross_entropy_backward<F: Float>(
    logits: &[F],
    rows: usize,
    classes: usize,
    labels: &[usize],
    d_loss: F,
    d_logits: &mut [F],
    accumulate: bool,
) {
    cross_entropy_backward_impl(
        "cross_entropy_backward",
        logits,
        rows,
        classes,
        labels,
        None,
        d_loss,
        d_logits,
        accumulate,
    );
}

/// Gradient of [`cross_entropy_ignore`]: `(softmax(logits) − onehot(label)) · d_loss / counted`
/// on every counted row, where `counted` is the number of rows whose label is not `ignore`;
/// the ignored rows get 0 (left unchanged when `accumulate`).
///
/// When every row is ignored the gradient is 0 everywhere (no row is written), not NaN: as in
/// PyTorch, whose `nll_loss` backward only writes the counted rows.
///
/// # Panics
/// As [`cross_entropy_ignore`], or if `d_logits` is not `rows × classes`.
#[allow(clippy::too_many_arguments)]
pub fn cross_entropy_ignore_backward<F: Float>(
    logits: &[F],
    rows: usize,
    classes: usize,
    labels: &[usize],
    ignore: Option<usize>,
    d_loss: F,
    d_logits: &mut [F],
    accumulate: bool,
) {
    cross_entropy_backward_impl(
        "cross_entropy_ignore_backward",
        logits,
        rows,
        classes,
        labels,
        ignore,
        d_loss,
        d_logits,
        accumulate,
    );
}

#[allow(clippy::too_many_arguments)]
fn cross_entropy_backward_impl<F: Float>(
    what: &str,
    logits: &[F],
    rows: usize,
    classes: usize,
    labels: &[usize],
    ignore: Option<usize>,
    d_loss: F,
    d_logits: &mut [F],
    accumulate: bool,
) {
    check_cross_entropy(what, logits.len(), rows, classes, labels, ignore);
    assert_eq!(
        d_logits.len(),
        logits.len(),
        "{what}: gradient has the wrong length"
    );
    let counted = match ignore {
        None => rows,
        Some(ignore) => labels.iter().filter(|&&l| l != ignore).count(),
    };
    let scale = d_loss / F::from_usize(counted);
    let classes = classes.max(1);
    let pass = |range: std::ops::Range<usize>, d_logits: &mut [F]| {
        run_fast(GradRows {
            logits: &logits[range.start * classes..range.end * classes],
            labels: &labels[range],
            classes,
            ignore,
            scale,
            d_logits,
            accumulate,
        })
    };
    for_row_chunks(rows, classes, d_logits, pass);
}

/// Runs `pass(rows, out)` over `rows` independent rows of `row_len` elements of `out`: in
/// one call when the work is small, else in fixed chunks shared by the two threads, each row
/// computed the same way whichever thread runs it.
fn for_row_chunks<F: Float>(
    rows: usize,
    row_len: usize,
    out: &mut [F],
    pass: impl Fn(std::ops::Range<usize>, &mut [F]) + Sync,
) {
    if rows < 2 || rows * row_len < 1 << 14 || parallel::threads() < 2 {
        return pass(0..rows, out);
    }
    let chunks = parallel::chunk_count(rows);
    let out = SharedMut::new(out);
    parallel::for_each_chunk(chunks, |chunk, _| {
        let r = parallel::chunk_range(rows, chunks, chunk);
        // SAFETY: each chunk is claimed once, and chunks cover disjoint rows.
        let d = unsafe { out.range(r.start * row_len..r.end * row_len) };
        pass(r, d);
    });
}

/// The cross-entropy gradient of some rows (see [`cross_entropy_backward_impl`]).
struct GradRows<'a, F> {
    logits: &'a [F],
    labels: &'a [usize],
    classes: usize,
    ignore: Option<usize>,
    scale: F,
    d_logits: &'a mut [F],
    accumulate: bool,
}

impl<F: Float> ElementLoop for GradRows<'_, F> {
    #[inline(always)]
    fn run(self) {
        let (scale, accumulate) = (self.scale, self.accumulate);
        let rows = self
            .logits
            .chunks_exact(self.classes)
            .zip(self.d_logits.chunks_exact_mut(self.classes));
        for ((row, drow), &label) in rows.zip(self.labels) {
            if Some(label) == self.ignore {
                if !accumulate {
                    drow.fill(F::ZERO);
                }
                continue;
            }
            let (max, lse) = log_sum_exp(row);
            for (j, (slot, &x)) in drow.iter_mut().zip(row).enumerate() {
                let p = (x - max - lse).exp();
                let g = if j == label {
                    p * scale - scale
                } else {
                    p * scale
                };
                store(slot, g, accumulate);
            }
        }
    }
}

/// Per-pixel cross-entropy, PyTorch's `F.cross_entropy(logits, labels, ignore_index=ignore)`
/// on `[batch, classes, pixels..]` logits (the class axis is 1) and `[batch, pixels..]`
/// labels, with the default mean reduction: the mean of `−log_softmax` over the classes at
/// the label, over the pixels whose label is not `ignore`. NaN when nothing is counted.
///
/// # Panics
/// If the lengths disagree with the sizes, or a label other than `ignore` is not below
/// `classes`.
///
/// ```
/// use kiln_runtime::loss::cross_entropy_spatial;
/// // One sample, 2 classes, 2 pixels: logits [[3, 0], [3, 0]] (class-major).
/// let loss = cross_entropy_spatial(&[3.0f64, 0.0, 3.0, 0.0], 1, 2, 2, &[1, 0], Some(0));
/// assert!((loss - 2f64.ln()).abs() < 1e-15);
/// ```
pub fn cross_entropy_spatial<F: Float>(
    logits: &[F],
    batch: usize,
    classes: usize,
    pixels: usize,
    labels: &[usize],
    ignore: Option<usize>,
) -> F {
    const WHAT: &str = "cross_entropy_spatial";
    check_cross_entropy(WHAT, logits.len(), batch * pixels, classes, labels, ignore);
    let mut sum = SpatialLossSum {
        logits,
        classes,
        pixels,
        labels,
        ignore,
        total: F::ZERO,
        counted: 0,
    };
    run_fast(&mut sum);
    sum.total / F::from_usize(sum.counted)
}

/// Pixels per block of the spatial cross-entropy's loops: the block's per-pixel maxima and
/// log-sum-exps live on the stack while the class rows are swept along the pixels.
const PIXEL_BLOCK: usize = 64;

/// The maximum and the shifted ln Σ exp over the `classes` logits of each of the pixels
/// `p0 .. p0 + max.len()` of one sample (`[classes, pixels]`), into `max` and `lse`.
///
/// Each pixel's classes are visited in class order, as a loop over one pixel's classes would
/// (so the results are those bits), but the loops run along the pixels, which are contiguous
/// in memory, so they vectorise; a loop per pixel strides across the class planes instead.
#[inline(always)]
fn block_log_sum_exp<F: Float>(
    sample: &[F],
    pixels: usize,
    classes: usize,
    p0: usize,
    max: &mut [F],
    lse: &mut [F],
) {
    let n = max.len();
    let plane = |c: usize| &sample[c * pixels + p0..c * pixels + p0 + n];
    max.copy_from_slice(plane(0));
    for c in 1..classes {
        for (m, &x) in max.iter_mut().zip(plane(c)) {
            *m = m.max(x);
        }
    }
    let lse = &mut lse[..n];
    lse.fill(F::ZERO);
    for c in 0..classes {
        for ((s, &m), &x) in lse.iter_mut().zip(&*max).zip(plane(c)) {
            *s += (x - m).exp();
        }
    }
    for s in lse.iter_mut() {
        *s = s.ln();
    }
}

/// The sum of `−log_softmax` at the label over the counted pixels, and their count, in
/// sample then pixel order (see [`cross_entropy_spatial`]).
struct SpatialLossSum<'a, F> {
    logits: &'a [F],
    classes: usize,
    pixels: usize,
    labels: &'a [usize],
    ignore: Option<usize>,
    total: F,
    counted: usize,
}

impl<F: Float> ElementLoop for &mut SpatialLossSum<'_, F> {
    #[inline(always)]
    fn run(self) {
        let (classes, pixels) = (self.classes, self.pixels);
        let mut max = [F::ZERO; PIXEL_BLOCK];
        let mut lse = [F::ZERO; PIXEL_BLOCK];
        for (sample, labels) in self
            .logits
            .chunks_exact((classes * pixels).max(1))
            .zip(self.labels.chunks_exact(pixels.max(1)))
        {
            for p0 in (0..pixels).step_by(PIXEL_BLOCK) {
                let n = PIXEL_BLOCK.min(pixels - p0);
                block_log_sum_exp(sample, pixels, classes, p0, &mut max[..n], &mut lse[..n]);
                for (j, &label) in labels[p0..p0 + n].iter().enumerate() {
                    if Some(label) == self.ignore {
                        continue;
                    }
                    // As in `LossSum`: (x − max − lse), log_softmax's own rounding.
                    self.total -= sample[label * pixels + p0 + j] - max[j] - lse[j];
                    self.counted += 1;
                }
            }
        }
    }
}

/// Gradient of [`cross_entropy_spatial`]: `(softmax(logits) − onehot(label)) · d_loss / counted`
/// over the class axis of every counted pixel; ignored pixels get 0 (left unchanged when
/// `accumulate`), and when nothing is counted the gradient is 0, as in PyTorch.
///
/// # Panics
/// As [`cross_entropy_spatial`], or if `d_logits` is not as long as `logits`.
#[allow(clippy::too_many_arguments)]
pub fn cross_entropy_spatial_backward<F: Float>(
    logits: &[F],
    batch: usize,
    classes: usize,
    pixels: usize,
    labels: &[usize],
    ignore: Option<usize>,
    d_loss: F,
    d_logits: &mut [F],
    accumulate: bool,
) {
    const WHAT: &str = "cross_entropy_spatial_backward";
    check_cross_entropy(WHAT, logits.len(), batch * pixels, classes, labels, ignore);
    assert_eq!(
        d_logits.len(),
        logits.len(),
        "{WHAT}: gradient has the wrong length"
    );
    let counted = labels.iter().filter(|&&l| Some(l) != ignore).count();
    let scale = d_loss / F::from_usize(counted);
    let (sample_len, pixels_len) = ((classes * pixels).max(1), pixels.max(1));
    let pass = |samples: std::ops::Range<usize>, d_logits: &mut [F]| {
        run_fast(SpatialGrad {
            logits: &logits[samples.start * sample_len..samples.end * sample_len],
            labels: &labels[samples.start * pixels_len..samples.end * pixels_len],
            classes,
            pixels,
            ignore,
            scale,
            d_logits,
            accumulate,
        })
    };
    // Samples are the rows: independent, shared by the two threads when large enough.
    for_row_chunks(batch, sample_len, d_logits, pass);
}

/// The spatial cross-entropy gradient of some whole samples (see
/// [`cross_entropy_spatial_backward`]), a block of pixels at a time.
struct SpatialGrad<'a, F> {
    logits: &'a [F],
    labels: &'a [usize],
    classes: usize,
    pixels: usize,
    ignore: Option<usize>,
    scale: F,
    d_logits: &'a mut [F],
    accumulate: bool,
}

impl<F: Float> ElementLoop for SpatialGrad<'_, F> {
    #[inline(always)]
    fn run(self) {
        let (classes, pixels) = (self.classes, self.pixels);
        let (scale, accumulate) = (self.scale, self.accumulate);
        let sample_len = (classes * pixels).max(1);
        let mut max = [F::ZERO; PIXEL_BLOCK];
        let mut lse = [F::ZERO; PIXEL_BLOCK];
        for ((sample, d_sample), labels) in self
            .logits
            .chunks_exact(sample_len)
            .zip(self.d_logits.chunks_exact_mut(sample_len))
            .zip(self.labels.chunks_exact(pixels.max(1)))
        {
            for p0 in (0..pixels).step_by(PIXEL_BLOCK) {
                let n = PIXEL_BLOCK.min(pixels - p0);
                let labels = &labels[p0..p0 + n];
                let (max, lse) = (&mut max[..n], &mut lse[..n]);
                block_log_sum_exp(sample, pixels, classes, p0, max, lse);
                let plane = |c: usize| c * pixels + p0..c * pixels + p0 + n;
                if labels.iter().any(|&l| Some(l) == self.ignore) {
                    // A block with ignored pixels (sequence padding, void labels): pixel by
                    // pixel, leaving the ignored ones alone.
                    for c in 0..classes {
                        let (x, d) = (&sample[plane(c)], &mut d_sample[plane(c)]);
                        for (j, &label) in labels.iter().enumerate() {
                            if Some(label) == self.ignore {
                                if !accumulate {
                                    d[j] = F::ZERO;
                                }
                                continue;
                            }
                            let prob = (x[j] - max[j] - lse[j]).exp();
                            let g = if c == label {
                                prob * scale - scale
                            } else {
                                prob * scale
                            };
                            store(&mut d[j], g, accumulate);
                        }
                    }
                    continue;
                }
                for c in 0..classes {
                    let (x, d) = (&sample[plane(c)], &mut d_sample[plane(c)]);
                    let rows = x.iter().zip(d.iter_mut()).zip(labels);
                    for (((&x, d), &label), (&m, &l)) in rows.zip(max.iter().zip(&*lse)) {
                        let prob = (x - m - l).exp();
                        // `prob · scale − 0` is `prob · scale` exactly: the same bits as the
                        // branch above, without a branch in the vector loop.
                        let one_hot = if c == label { scale } else { F::ZERO };
                        store(d, prob * scale - one_hot, accumulate);
                    }
                }
            }
        }
    }
}

/// PyTorch's `weight` and `label_smoothing` options of cross-entropy, with its
/// `ignore_index`, for [`cross_entropy_with_options`] and
/// [`cross_entropy_spatial_with_options`].
///
/// With `w` the class weights (1 when absent), `ε` the smoothing, `C` the classes and the sums
/// over the counted rows `i` (those not labelled `ignore`), the loss is PyTorch's
/// `F.cross_entropy(..., weight, ignore_index, label_smoothing, reduction='mean')`:
///
/// `[(1 − ε) Σ_i w_{y_i}·(−log p_{i,y_i}) + (ε / C) Σ_i Σ_c w_c·(−log p_{i,c})] / Σ_i w_{y_i}`
///
/// ```
/// use kiln_runtime::loss::{cross_entropy_with_options, CrossEntropyOptions};
/// // Two equal logits: −log p is ln 2 for each class. One row of label 1 (weight 3), ε = 0.2:
/// // (1 − ε)·3 ln 2 / 3 + (ε / 2)·(1 + 3) ln 2 / 3.
/// let options = CrossEntropyOptions {
///     weight: Some(&[1.0, 3.0]),
///     label_smoothing: 0.2,
///     ..CrossEntropyOptions::default()
/// };
/// let loss = cross_entropy_with_options(&[3.0f64, 3.0], 1, 2, &[1], &options);
/// let ln2 = 2f64.ln();
/// assert!((loss - (0.8 * ln2 + 0.1 * 4.0 * ln2 / 3.0)).abs() < 1e-15);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CrossEntropyOptions<'a> {
    /// The label whose rows are left out of the loss and its mean (`ignore_index`); it need
    /// not be a class.
    pub ignore: Option<usize>,
    /// One weight per class, none negative (`weight`): a row counts `w[label]` times in the
    /// mean, which divides by the sum of the counted rows' weights. `None` weighs every class 1.
    pub weight: Option<&'a [f64]>,
    /// The share `ε` of the target spread evenly over the classes (`label_smoothing`), in
    /// `[0, 1]`; 0 is the plain one-hot target.
    pub label_smoothing: f64,
}

impl CrossEntropyOptions<'_> {
    /// The weight of class `c`, in `F`.
    #[inline(always)]
    fn weight_of<F: Float>(&self, c: usize) -> F {
        self.weight.map_or(F::ONE, |w| F::from_f64(w[c]))
    }

    #[track_caller]
    fn check(&self, what: &str, classes: usize) {
        if let Some(w) = self.weight {
            assert_eq!(
                w.len(),
                classes,
                "{what}: {} class weights for {classes} classes",
                w.len()
            );
        }
        assert!(
            (0.0..=1.0).contains(&self.label_smoothing),
            "{what}: label smoothing {} is not in [0, 1]",
            self.label_smoothing
        );
    }
}

/// Cross-entropy with PyTorch's class weights and label smoothing (see
/// [`CrossEntropyOptions`]) over a `rows × classes` matrix of logits, one label per row. NaN
/// when no row is counted (or the counted rows' weights sum to 0), as in PyTorch. Without
/// weights and smoothing, [`cross_entropy_ignore`] computes the same faster.
///
/// # Panics
/// If the lengths disagree with `rows` and `classes`, a label other than `options.ignore` is
/// not below `classes`, there is not one weight per class, or the smoothing is not in
/// `[0, 1]`.
pub fn cross_entropy_with_options<F: Float>(
    logits: &[F],
    rows: usize,
    classes: usize,
    labels: &[usize],
    options: &CrossEntropyOptions<'_>,
) -> F {
    // A row of classes is a sample of one pixel.
    options_loss(
        "cross_entropy_with_options",
        logits,
        rows,
        classes,
        1,
        labels,
        options,
    )
}

/// Gradient of [`cross_entropy_with_options`]: on every counted row `i` with label `y`,
/// `d_loss / W · (p_j·((1 − ε) w_y + (ε / C) Σ_c w_c) − (1 − ε) w_y [j = y] − (ε / C) w_j)`
/// for class `j`, with `W` the counted rows' weight sum; ignored rows get 0 (left unchanged
/// when `accumulate`), and all of them when nothing is counted.
///
/// # Panics
/// As [`cross_entropy_with_options`], or if `d_logits` is not `rows × classes`.
#[allow(clippy::too_many_arguments)]
pub fn cross_entropy_with_options_backward<F: Float>(
    logits: &[F],
    rows: usize,
    classes: usize,
    labels: &[usize],
    options: &CrossEntropyOptions<'_>,
    d_loss: F,
    d_logits: &mut [F],
    accumulate: bool,
) {
    options_backward(
        "cross_entropy_with_options_backward",
        logits,
        rows,
        classes,
        1,
        labels,
        options,
        d_loss,
        d_logits,
        accumulate,
    );
}

/// Per-pixel cross-entropy with PyTorch's class weights and label smoothing (see
/// [`CrossEntropyOptions`]) on `[batch, classes, pixels..]` logits (the class axis is 1) and
/// `[batch, pixels..]` labels, as [`cross_entropy_spatial`] is without them. NaN when no pixel
/// is counted (or the counted pixels' weights sum to 0).
///
/// # Panics
/// As [`cross_entropy_with_options`].
pub fn cross_entropy_spatial_with_options<F: Float>(
    logits: &[F],
    batch: usize,
    classes: usize,
    pixels: usize,
    labels: &[usize],
    options: &CrossEntropyOptions<'_>,
) -> F {
    options_loss(
        "cross_entropy_spatial_with_options",
        logits,
        batch,
        classes,
        pixels,
        labels,
        options,
    )
}

/// Gradient of [`cross_entropy_spatial_with_options`], over the class axis of every counted
/// pixel as [`cross_entropy_with_options_backward`] is over a row.
///
/// # Panics
/// As [`cross_entropy_spatial_with_options`], or if `d_logits` is not as long as `logits`.
#[allow(clippy::too_many_arguments)]
pub fn cross_entropy_spatial_with_options_backward<F: Float>(
    logits: &[F],
    batch: usize,
    classes: usize,
    pixels: usize,
    labels: &[usize],
    options: &CrossEntropyOptions<'_>,
    d_loss: F,
    d_logits: &mut [F],
    accumulate: bool,
) {
    options_backward(
        "cross_entropy_spatial_with_options_backward",
        logits,
        batch,
        classes,
        pixels,
        labels,
        options,
        d_loss,
        d_logits,
        accumulate,
    );
}

/// The sum of the counted labels' weights (their count when unweighted).
fn weight_sum<F: Float>(labels: &[usize], options: &CrossEntropyOptions<'_>) -> F {
    labels
        .iter()
        .filter(|&&l| Some(l) != options.ignore)
        .fold(F::ZERO, |sum, &l| sum + options.weight_of::<F>(l))
}

fn options_loss<F: Float>(
    what: &str,
    logits: &[F],
    batch: usize,
    classes: usize,
    pixels: usize,
    labels: &[usize],
    options: &CrossEntropyOptions<'_>,
) -> F {
    check_cross_entropy(
        what,
        logits.len(),
        batch * pixels,
        classes,
        labels,
        options.ignore,
    );
    options.check(what, classes);
    let mut sum = OptionsLossSum {
        logits,
        classes,
        pixels,
        labels,
        options,
        nll: F::ZERO,
        smooth: F::ZERO,
        weights: F::ZERO,
    };
    run_fast(&mut sum);
    // PyTorch's order: the weighted mean of the label terms, the smoothing term's sum over
    // the same weight sum, then (1 − ε)·nll + smooth·(ε / C).
    let nll = sum.nll / sum.weights;
    let eps = options.label_smoothing;
    if eps == 0.0 {
        return nll;
    }
    let smooth = sum.smooth / sum.weights;
    F::from_f64(1.0 - eps) * nll + smooth * F::from_f64(eps / classes as f64)
}

/// The weighted sums of `−log_softmax` at the label and over every class (weighted by class),
/// and the weight sum, over the counted pixels of `[samples, classes, pixels]` logits, in
/// sample then pixel order (see [`cross_entropy_spatial_with_options`]).
struct OptionsLossSum<'a, F> {
    logits: &'a [F],
    classes: usize,
    pixels: usize,
    labels: &'a [usize],
    options: &'a CrossEntropyOptions<'a>,
    nll: F,
    smooth: F,
    weights: F,
}

impl<F: Float> ElementLoop for &mut OptionsLossSum<'_, F> {
    #[inline(always)]
    fn run(self) {
        let (classes, pixels, options) = (self.classes, self.pixels, self.options);
        let smoothing = options.label_smoothing != 0.0;
        let mut max = [F::ZERO; PIXEL_BLOCK];
        let mut lse = [F::ZERO; PIXEL_BLOCK];
        for (sample, labels) in self
            .logits
            .chunks_exact((classes * pixels).max(1))
            .zip(self.labels.chunks_exact(pixels.max(1)))
        {
            for p0 in (0..pixels).step_by(PIXEL_BLOCK) {
                let n = PIXEL_BLOCK.min(pixels - p0);
                block_log_sum_exp(sample, pixels, classes, p0, &mut max[..n], &mut lse[..n]);
                for (j, &label) in labels[p0..p0 + n].iter().enumerate() {
                    if Some(label) == options.ignore {
                        continue;
                    }
                    let at = |c: usize| sample[c * pixels + p0 + j];
                    // −log_softmax, with log_softmax's own rounding (x − max − lse).
                    let nll = |c: usize| -(at(c) - max[j] - lse[j]);
                    let w = options.weight_of::<F>(label);
                    self.nll += w * nll(label);
                    self.weights += w;
                    if smoothing {
                        let mut row = F::ZERO;
                        for c in 0..classes {
                            row += options.weight_of::<F>(c) * nll(c);
                        }
                        self.smooth += row;
                    }
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn options_backward<F: Float>(
    what: &str,
    logits: &[F],
    batch: usize,
    classes: usize,
    pixels: usize,
    labels: &[usize],
    options: &CrossEntropyOptions<'_>,
    d_loss: F,
    d_logits: &mut [F],
    accumulate: bool,
) {
    check_cross_entropy(
        what,
        logits.len(),
        batch * pixels,
        classes,
        labels,
        options.ignore,
    );
    options.check(what, classes);
    assert_eq!(
        d_logits.len(),
        logits.len(),
        "{what}: gradient has the wrong length"
    );
    let scale = d_loss / weight_sum::<F>(labels, options);
    let eps = options.label_smoothing;
    let spread = eps / classes.max(1) as f64;
    // Σ_c w_c: the smoothing term's share of every probability.
    let all_weights: f64 = options
        .weight
        .map_or(classes as f64, |w| w.iter().sum::<f64>());
    let (sample_len, pixels_len) = ((classes * pixels).max(1), pixels.max(1));
    let pass = |samples: std::ops::Range<usize>, d_logits: &mut [F]| {
        run_fast(OptionsGrad {
            logits: &logits[samples.start * sample_len..samples.end * sample_len],
            labels: &labels[samples.start * pixels_len..samples.end * pixels_len],
            classes,
            pixels,
            options,
            keep: F::from_f64(1.0 - eps),
            spread: F::from_f64(spread),
            spread_all: F::from_f64(spread * all_weights),
            scale,
            d_logits,
            accumulate,
        })
    };
    for_row_chunks(batch, sample_len, d_logits, pass);
}

/// The gradient of [`options_loss`] for some whole samples, a block of pixels at a time.
struct OptionsGrad<'a, F> {
    logits: &'a [F],
    labels: &'a [usize],
    classes: usize,
    pixels: usize,
    options: &'a CrossEntropyOptions<'a>,
    /// `1 − ε`.
    keep: F,
    /// `ε / C`.
    spread: F,
    /// `ε / C · Σ_c w_c`.
    spread_all: F,
    /// `d_loss / Σ_i w_{y_i}`.
    scale: F,
    d_logits: &'a mut [F],
    accumulate: bool,
}

impl<F: Float> ElementLoop for OptionsGrad<'_, F> {
    #[inline(always)]
    fn run(self) {
        let (classes, pixels, options) = (self.classes, self.pixels, self.options);
        let (scale, accumulate) = (self.scale, self.accumulate);
        let sample_len = (classes * pixels).max(1);
        let mut max = [F::ZERO; PIXEL_BLOCK];
        let mut lse = [F::ZERO; PIXEL_BLOCK];
        for ((sample, d_sample), labels) in self
            .logits
            .chunks_exact(sample_len)
            .zip(self.d_logits.chunks_exact_mut(sample_len))
            .zip(self.labels.chunks_exact(pixels.max(1)))
        {
            for p0 in (0..pixels).step_by(PIXEL_BLOCK) {
                let n = PIXEL_BLOCK.min(pixels - p0);
                let labels = &labels[p0..p0 + n];
                let (max, lse) = (&mut max[..n], &mut lse[..n]);
                block_log_sum_exp(sample, pixels, classes, p0, max, lse);
                for c in 0..classes {
                    let plane = c * pixels + p0..c * pixels + p0 + n;
                    let (x, d) = (&sample[plane.clone()], &mut d_sample[plane]);
                    // The smoothing's part of the target at class c, the same for every pixel.
                    let spread_c = self.spread * options.weight_of::<F>(c);
                    for (j, &label) in labels.iter().enumerate() {
                        if Some(label) == options.ignore {
                            if !accumulate {
                                d[j] = F::ZERO;
                            }
                            continue;
                        }
                        let kept = self.keep * options.weight_of::<F>(label);
                        let prob = (x[j] - max[j] - lse[j]).exp();
                        let target = if c == label {
                            kept + spread_c
                        } else {
                            spread_c
                        };
                        let g = (prob * (kept + self.spread_all) - target) * scale;
                        store(&mut d[j], g, accumulate);
                    }
                }
            }
        }
    }
}

/// Binary cross-entropy on logits against targets in `[0, 1]`, averaged over all elements:
/// `mean(max(x, 0) − x·t + ln(1 + e^−|x|))`, PyTorch's `binary_cross_entropy_with_logits`.
/// The form never exponentiates a positive number, so it is finite for any finite logit.
///
/// # Panics
/// If the slices differ in length (a caller bug).
///
/// ```
/// use kiln_runtime::loss::bce_with_logits;
/// // A logit of 0 is probability 1/2 whatever the target: the loss is ln 2.
/// assert!((bce_with_logits(&[0.0f64], &[1.0]) - 2f64.ln()).abs() < 1e-15);
/// // A confident right answer costs almost nothing, even far out.
/// assert!(bce_with_logits(&[800.0f64], &[1.0]) < 1e-300);
/// ```
pub fn bce_with_logits<F: Float>(logits: &[F], target: &[F]) -> F {
    assert_eq!(
        logits.len(),
        target.len(),
        "bce_with_logits: logits and target lengths differ"
    );
    let total: F = logits
        .iter()
        .zip(target)
        .map(|(&x, &t)| x.max(F::ZERO) - x * t + (-x.abs()).exp().ln_1p())
        .sum();
    total / F::from_usize(logits.len())
}

/// Gradient of [`bce_with_logits`]: `(σ(x) − t) · d_loss / n`, with a sigmoid that does not
/// overflow for large negative logits.
///
/// # Panics
/// If the slices differ in length (a caller bug).
pub fn bce_with_logits_backward<F: Float>(
    logits: &[F],
    target: &[F],
    d_loss: F,
    d_logits: &mut [F],
    accumulate: bool,
) {
    assert_eq!(
        logits.len(),
        target.len(),
        "bce_with_logits_backward: logits and target lengths differ"
    );
    assert_eq!(
        logits.len(),
        d_logits.len(),
        "bce_with_logits_backward: gradient has the wrong length"
    );
    let n = F::from_usize(logits.len());
    for ((slot, &x), &t) in d_logits.iter_mut().zip(logits).zip(target) {
        // PyTorch's order: (σ(x) − t) · grad, then / n.
        store(slot, (x.sigmoid() - t) * d_loss / n, accumulate);
    }
}

/// PyTorch's `pos_weight` and `weight` of [`bce_with_logits_with_options`], each one value per
/// column of the last axis (one per class of a multi-label target), or a single value for
/// every element.
///
/// ```
/// use kiln_runtime::loss::{bce_with_logits, bce_with_logits_with_options, BceOptions};
/// let (x, t) = ([0.5f64, -1.0], [1.0, 0.0]);
/// // Positives of the first column count 3 times; neither option set is the plain loss.
/// let weighted = BceOptions { pos_weight: Some(&[3.0, 1.0]), weight: None };
/// let plain = BceOptions::default();
/// assert!((bce_with_logits_with_options(&x, &t, &plain) - bce_with_logits(&x, &t)).abs() < 1e-15);
/// let log_sigmoid = |v: f64| -(-v).exp().ln_1p();
/// let expected = (-3.0 * log_sigmoid(0.5) - log_sigmoid(1.0)) / 2.0;
/// assert!((bce_with_logits_with_options(&x, &t, &weighted) - expected).abs() < 1e-15);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BceOptions<'a> {
    /// The weight of the positive term (`pos_weight`): the loss of an element is
    /// `(1 − t)·x − (1 + (p − 1)·t)·log σ(x)`. `None` is 1.
    pub pos_weight: Option<&'a [f64]>,
    /// A factor on every element's loss (`weight`); the mean still divides by the element
    /// count, as in PyTorch. `None` is 1.
    pub weight: Option<&'a [f64]>,
}

impl BceOptions<'_> {
    /// The option's value for element `i` (one value per column, cycled, or one for all).
    #[inline(always)]
    fn at<F: Float>(values: Option<&[f64]>, i: usize) -> F {
        values.map_or(F::ONE, |v| F::from_f64(v[i % v.len()]))
    }

    #[track_caller]
    fn check(&self, what: &str, n: usize) {
        for (name, values) in [("pos_weight", self.pos_weight), ("weight", self.weight)] {
            if let Some(v) = values {
                assert!(
                    !v.is_empty() && n.is_multiple_of(v.len()),
                    "{what}: {} {name} values do not divide {n} elements into rows",
                    v.len()
                );
            }
        }
    }
}

/// `log σ(x)` without overflow: `min(x, 0) − ln(1 + e^{−|x|})`.
#[inline(always)]
fn log_sigmoid<F: Float>(x: F) -> F {
    x.min(F::ZERO) - (-x.abs()).exp().ln_1p()
}

/// Binary cross-entropy on logits with PyTorch's `pos_weight` and `weight`
/// (`nn.BCEWithLogitsLoss(weight=w, pos_weight=p)`, mean over every element), in PyTorch's
/// form `w·((1 − t)·x − (1 + (p − 1)·t)·log σ(x))`. The options run along the last axis: the
/// value of element `i` is `values[i % values.len()]`.
///
/// # Panics
/// If the slices differ in length or an option's length does not divide it (caller bugs).
pub fn bce_with_logits_with_options<F: Float>(
    logits: &[F],
    target: &[F],
    options: &BceOptions<'_>,
) -> F {
    assert_eq!(
        logits.len(),
        target.len(),
        "bce_with_logits_with_options: logits and target lengths differ"
    );
    options.check("bce_with_logits_with_options", logits.len());
    let mut total = F::ZERO;
    for (i, (&x, &t)) in logits.iter().zip(target).enumerate() {
        let p: F = BceOptions::at(options.pos_weight, i);
        let log_weight = (p - F::ONE) * t + F::ONE;
        let loss = (F::ONE - t) * x - log_weight * log_sigmoid(x);
        total += loss * BceOptions::at::<F>(options.weight, i);
    }
    total / F::from_usize(logits.len())
}

/// Gradient of [`bce_with_logits_with_options`], in PyTorch's order:
/// `((p·t + 1 − t)·σ(x) − p·t) · d_loss · w / n`.
///
/// # Panics
/// If the slices differ in length or an option's length does not divide it (caller bugs).
pub fn bce_with_logits_with_options_backward<F: Float>(
    logits: &[F],
    target: &[F],
    options: &BceOptions<'_>,
    d_loss: F,
    d_logits: &mut [F],
    accumulate: bool,
) {
    const WHAT: &str = "bce_with_logits_with_options_backward";
    assert_eq!(
        logits.len(),
        target.len(),
        "{WHAT}: logits and target lengths differ"
    );
    assert_eq!(
        logits.len(),
        d_logits.len(),
        "{WHAT}: gradient has the wrong length"
    );
    options.check(WHAT, logits.len());
    let n = F::from_usize(logits.len());
    for (i, ((slot, &x), &t)) in d_logits.iter_mut().zip(logits).zip(target).enumerate() {
        let pt = BceOptions::at::<F>(options.pos_weight, i) * t;
        let w: F = BceOptions::at(options.weight, i);
        store(
            slot,
            ((pt + F::ONE - t) * x.sigmoid() - pt) * d_loss * w / n,
            accumulate,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::numeric_gradient;
    use crate::kernels::test_util::{assert_close, check_both_modes, values};

    /// BCE with `pos_weight` and `weight` by the textbook form, −w·(p·t·ln σ(x) + (1 − t)·ln(1 − σ(x))).
    fn naive_bce_options(x: &[f64], t: &[f64], pos: &[f64], w: &[f64]) -> f64 {
        let sigmoid = |v: f64| 1.0 / (1.0 + (-v).exp());
        let mut s = 0.0;
        for i in 0..x.len() {
            let (p, wi) = (pos[i % pos.len()], w[i % w.len()]);
            let sx = sigmoid(x[i]);
            s -= wi * (p * t[i] * sx.ln() + (1.0 - t[i]) * (1.0 - sx).ln());
        }
        s / x.len() as f64
    }

    #[test]
    fn bce_with_options_matches_the_textbook_form_and_finite_differences() {
        let n = 12;
        let mut x = values(n, 3.0);
        let t: Vec<f64> = values(n, 4.0).iter().map(|v| (v + 1.0) / 2.0).collect();
        let cases: [(&[f64], &[f64]); 4] = [
            (&[1.0], &[1.0]),
            (&[3.0, 0.5, 1.0], &[1.0]),
            (&[1.0], &[0.5, 2.0, 0.0]),
            (&[2.0], &[0.25, 1.5, 1.0, 3.0]),
        ];
        for (pos, w) in cases {
            let options = BceOptions {
                pos_weight: Some(pos),
                weight: Some(w),
            };
            let loss = bce_with_logits_with_options(&x, &t, &options);
            let want = naive_bce_options(&x, &t, pos, w);
            assert!(
                (loss - want).abs() < 1e-14,
                "{pos:?} {w:?}: {loss} vs {want}"
            );
            let num = numeric_gradient(|x| naive_bce_options(x, &t, pos, w) * 0.7, &mut x, 1e-6);
            check_both_modes(&num, 1e-7, 1e-10, &format!("{pos:?} {w:?}"), |d, acc| {
                bce_with_logits_with_options_backward(&x, &t, &options, 0.7, d, acc)
            });
        }
        // Large logits stay finite.
        let big = [800.0, -800.0];
        let options = BceOptions {
            pos_weight: Some(&[2.0]),
            weight: None,
        };
        let loss = bce_with_logits_with_options(&big, &[0.0, 1.0], &options);
        assert!((loss - (800.0 + 2.0 * 800.0) / 2.0).abs() < 1e-9, "{loss}");
    }

    fn naive_mse(p: &[f64], t: &[f64]) -> f64 {
        let mut s = 0.0;
        for i in 0..p.len() {
            s += (p[i] - t[i]).powi(2);
        }
        s / p.len() as f64
    }

    /// −ln(e^{x_label} / Σ e^{x_j}) directly, averaged (fine for small logits).
    fn naive_ce(x: &[f64], classes: usize, labels: &[usize]) -> f64 {
        let mut s = 0.0;
        for (row, &l) in x.chunks(classes).zip(labels) {
            let z: f64 = row.iter().map(|v| v.exp()).sum();
            s -= (row[l].exp() / z).ln();
        }
        s / labels.len() as f64
    }

    /// −[t ln σ(x) + (1 − t) ln(1 − σ(x))] directly, averaged (fine for small logits).
    fn naive_bce(x: &[f64], t: &[f64]) -> f64 {
        let mut s = 0.0;
        for i in 0..x.len() {
            let p = 1.0 / (1.0 + (-x[i]).exp());
            s -= t[i] * p.ln() + (1.0 - t[i]) * (1.0 - p).ln();
        }
        s / x.len() as f64
    }

    #[test]
    fn mse_value_and_gradient() {
        let (mut p, t) = (values(12, 1.0), values(12, 2.0));
        assert!((mse(&p, &t) - naive_mse(&p, &t)).abs() < 1e-15);
        let d = 0.7;
        let num = numeric_gradient(|p| d * naive_mse(p, &t), &mut p, 1e-6);
        check_both_modes(&num, 1e-7, 1e-10, "d mse", |g, acc| {
            mse_backward(&p, &t, d, g, acc)
        });
        // f32 agrees with the f64 reference.
        let pf: Vec<f32> = p.iter().map(|&v| v as f32).collect();
        let tf: Vec<f32> = t.iter().map(|&v| v as f32).collect();
        assert!((mse(&pf, &tf) as f64 - naive_mse(&p, &t)).abs() < 1e-6);
    }

    #[test]
    fn cross_entropy_value_and_gradient() {
        let (rows, classes) = (4, 3);
        let mut x = values(rows * classes, 3.0);
        let labels = [2, 0, 1, 2];
        let loss = cross_entropy(&x, rows, classes, &labels);
        assert!(
            (loss - naive_ce(&x, classes, &labels)).abs() < 1e-14,
            "{loss}"
        );
        let d = 1.3;
        let num = numeric_gradient(|x| d * naive_ce(x, classes, &labels), &mut x, 1e-6);
        check_both_modes(&num, 1e-7, 1e-10, "d ce", |g, acc| {
            cross_entropy_backward(&x, rows, classes, &labels, d, g, acc)
        });
    }

    /// Large enough for the backward to be split between the threads, with rows that are not
    /// whole vectors and some ignored: the definition's values, written and accumulated.
    #[test]
    fn cross_entropy_large_matches_the_definition() {
        let (rows, classes, ignore) = (300, 101, 7);
        let x = values(rows * classes, 4.0);
        let labels: Vec<usize> = (0..rows).map(|r| (r * 13) % (classes + 3)).collect();
        let labels: Vec<usize> = labels.iter().map(|&l| l.min(classes - 1)).collect();
        let counted: Vec<usize> = (0..rows).filter(|&r| labels[r] != ignore).collect();
        let n = counted.len() as f64;
        let (mut want_loss, mut want_grad) = (0.0, vec![0.0; rows * classes]);
        for &r in &counted {
            let row = &x[r * classes..(r + 1) * classes];
            let z: f64 = row.iter().map(|v| v.exp()).sum();
            want_loss -= (row[labels[r]].exp() / z).ln() / n;
            for c in 0..classes {
                let onehot = if c == labels[r] { 1.0 } else { 0.0 };
                want_grad[r * classes + c] = (row[c].exp() / z - onehot) / n;
            }
        }
        let loss = cross_entropy_ignore(&x, rows, classes, &labels, Some(ignore));
        assert_close(&[loss], &[want_loss], 1e-12, 1e-13, "loss");
        check_both_modes(&want_grad, 1e-12, 1e-14, "gradient", |d, accumulate| {
            cross_entropy_ignore_backward(
                &x,
                rows,
                classes,
                &labels,
                Some(ignore),
                1.0,
                d,
                accumulate,
            )
        });
    }

    #[test]
    fn cross_entropy_is_stable_for_huge_logits() {
        // softmax([1000, 0]) = [1, e^-1000]: the loss at label 1 is 1000 (+ ln(1 + e^-1000)).
        let loss = cross_entropy(&[1000.0f64, 0.0, 0.0, 1000.0], 2, 2, &[1, 1]);
        assert_eq!(loss, 500.0);
        let mut g = [0.0; 4];
        cross_entropy_backward(
            &[1000.0f64, 0.0, 0.0, 1000.0],
            2,
            2,
            &[1, 1],
            1.0,
            &mut g,
            false,
        );
        assert_eq!(g, [0.5, -0.5, 0.0, 0.0]);
        let loss32 = cross_entropy(&[1000.0f32, 0.0], 1, 2, &[0]);
        assert_eq!(loss32, 0.0);
    }

    #[test]
    #[should_panic(expected = "label 3 at position 1 is not below 3")]
    fn cross_entropy_rejects_unchecked_labels() {
        cross_entropy(&[0.0f64; 6], 2, 3, &[0, 3]);
    }

    /// The mean of −ln softmax at the label over the rows not labelled `ignore`, directly.
    fn naive_ce_ignore(x: &[f64], classes: usize, labels: &[usize], ignore: usize) -> f64 {
        let (mut s, mut counted) = (0.0, 0);
        for (row, &l) in x.chunks(classes).zip(labels) {
            if l == ignore {
                continue;
            }
            let z: f64 = row.iter().map(|v| v.exp()).sum();
            s -= (row[l].exp() / z).ln();
            counted += 1;
        }
        s / counted as f64
    }

    #[test]
    fn cross_entropy_ignore_value_and_gradient() {
        // A [2, 3] batch of sequences over 4 classes, padded with label 7 (not a class), and
        // once with a real class (2) as the ignored label.
        let (rows, classes) = (6, 4);
        let mut x = values(rows * classes, 5.0);
        for (labels, ignore) in [([1, 3, 7, 0, 7, 7], 7), ([1, 2, 0, 2, 3, 2], 2)] {
            let loss = cross_entropy_ignore(&x, rows, classes, &labels, Some(ignore));
            let want = naive_ce_ignore(&x, classes, &labels, ignore);
            assert!((loss - want).abs() < 1e-14, "{loss} vs {want}");
            let d = 0.8;
            let num = numeric_gradient(
                |x| d * naive_ce_ignore(x, classes, &labels, ignore),
                &mut x,
                1e-6,
            );
            // The ignored rows' logits do not affect the loss at all.
            for (r, &l) in labels.iter().enumerate() {
                if l == ignore {
                    assert!(num[r * classes..(r + 1) * classes]
                        .iter()
                        .all(|&g| g == 0.0));
                }
            }
            check_both_modes(&num, 1e-7, 1e-10, "d ce ignore", |g, acc| {
                cross_entropy_ignore_backward(&x, rows, classes, &labels, Some(ignore), d, g, acc)
            });
        }
    }

    #[test]
    fn cross_entropy_ignore_without_ignored_rows_is_cross_entropy() {
        let (rows, classes) = (5, 3);
        let x = values(rows * classes, 6.0);
        let labels = [2, 0, 1, 1, 0];
        let plain = cross_entropy(&x, rows, classes, &labels);
        // Bit for bit, whether nothing is ignored or the ignored label never occurs.
        assert_eq!(
            cross_entropy_ignore(&x, rows, classes, &labels, None),
            plain
        );
        assert_eq!(
            cross_entropy_ignore(&x, rows, classes, &labels, Some(usize::MAX)),
            plain
        );
        let mut want = vec![0.0; rows * classes];
        cross_entropy_backward(&x, rows, classes, &labels, 0.6, &mut want, false);
        let mut got = vec![f64::NAN; rows * classes];
        cross_entropy_ignore_backward(&x, rows, classes, &labels, Some(9), 0.6, &mut got, false);
        assert_eq!(got, want);
        // f32 follows the f64 value.
        let xf: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let loss32 = cross_entropy_ignore(&xf, rows, classes, &labels, Some(9));
        assert!((loss32 as f64 - plain).abs() < 1e-6);
    }

    #[test]
    fn cross_entropy_with_every_row_ignored_is_nan_with_zero_gradient() {
        let x = values(6, 1.0);
        let labels = [5, 5];
        assert!(cross_entropy_ignore(&x, 2, 3, &labels, Some(5)).is_nan());
        let mut g = [f64::NAN; 6];
        cross_entropy_ignore_backward(&x, 2, 3, &labels, Some(5), 1.0, &mut g, false);
        assert_eq!(g, [0.0; 6]);
        let mut g = [2.0; 6];
        cross_entropy_ignore_backward(&x, 2, 3, &labels, Some(5), 1.0, &mut g, true);
        assert_eq!(g, [2.0; 6]);
    }

    #[test]
    #[should_panic(expected = "label 3 at position 0 is not below 3")]
    fn cross_entropy_ignore_rejects_other_out_of_range_labels() {
        cross_entropy_ignore(&[0.0f64; 6], 2, 3, &[3, 4], Some(4));
    }

    #[test]
    fn spatial_cross_entropy_is_row_cross_entropy_of_the_transposed_logits() {
        // [2, 3, 2, 2] logits: moving the class axis last gives 8 rows of 3.
        let (batch, classes, pixels) = (2, 3, 4);
        let mut x = values(batch * classes * pixels, 11.0);
        let labels = [0, 2, 1, 1, 2, 0, 1, 0];
        let rows_of = |x: &[f64]| {
            let mut rows = Vec::new();
            for b in 0..batch {
                for p in 0..pixels {
                    for c in 0..classes {
                        rows.push(x[(b * classes + c) * pixels + p]);
                    }
                }
            }
            rows
        };
        for ignore in [None, Some(1)] {
            let loss = cross_entropy_spatial(&x, batch, classes, pixels, &labels, ignore);
            let want = match ignore {
                None => naive_ce(&rows_of(&x), classes, &labels),
                Some(i) => naive_ce_ignore(&rows_of(&x), classes, &labels, i),
            };
            assert!((loss - want).abs() < 1e-14, "{loss} vs {want}");
            let d = 0.7;
            let num = numeric_gradient(
                |x| {
                    d * match ignore {
                        None => naive_ce(&rows_of(x), classes, &labels),
                        Some(i) => naive_ce_ignore(&rows_of(x), classes, &labels, i),
                    }
                },
                &mut x,
                1e-6,
            );
            check_both_modes(&num, 1e-7, 1e-10, "d ce spatial", |g, acc| {
                cross_entropy_spatial_backward(
                    &x, batch, classes, pixels, &labels, ignore, d, g, acc,
                )
            });
        }
    }

    /// The spatial cross-entropy as it was first written, one pixel at a time with strided
    /// class reads: the blocked kernels must give its bits.
    #[allow(clippy::too_many_arguments)]
    fn spatial_per_pixel<F: Float>(
        logits: &[F],
        classes: usize,
        pixels: usize,
        labels: &[usize],
        ignore: Option<usize>,
        d_loss: F,
        d_logits: &mut [F],
        accumulate: bool,
    ) -> F {
        let lse_at = |sample: &[F], p: usize| {
            let at = |c: usize| sample[c * pixels + p];
            let mut max = at(0);
            for c in 1..classes {
                max = max.max(at(c));
            }
            let mut total = F::ZERO;
            for c in 0..classes {
                total += (at(c) - max).exp();
            }
            (max, total.ln())
        };
        let counted = labels.iter().filter(|&&l| Some(l) != ignore).count();
        let scale = d_loss / F::from_usize(counted);
        let mut loss = F::ZERO;
        for ((sample, d_sample), labels) in logits
            .chunks_exact(classes * pixels)
            .zip(d_logits.chunks_exact_mut(classes * pixels))
            .zip(labels.chunks_exact(pixels))
        {
            for (p, &label) in labels.iter().enumerate() {
                if Some(label) == ignore {
                    if !accumulate {
                        for c in 0..classes {
                            d_sample[c * pixels + p] = F::ZERO;
                        }
                    }
                    continue;
                }
                let (max, lse) = lse_at(sample, p);
                loss -= sample[label * pixels + p] - max - lse;
                for c in 0..classes {
                    let prob = (sample[c * pixels + p] - max - lse).exp();
                    let g = if c == label {
                        prob * scale - scale
                    } else {
                        prob * scale
                    };
                    store(&mut d_sample[c * pixels + p], g, accumulate);
                }
            }
        }
        loss / F::from_usize(counted)
    }

    fn spatial_blocks_match_per_pixel<F: Float>() {
        // Pixel counts below, at and across the block size; one class; a batch large enough
        // for the two-thread split.
        for (batch, classes, pixels) in [(2, 3, 5), (3, 11, 141), (1, 1, 64), (4, 11, 400)] {
            let x: Vec<F> = values(batch * classes * pixels, 13.0)
                .iter()
                .map(|&v| F::from_f64(v * 3.0))
                .collect();
            for ignore in [None, Some(classes), Some(0)] {
                // Labels cycle through the classes and the ignored label, so that some blocks
                // hold ignored pixels and (with `Some(classes)`, every fifth pixel) some do not.
                let labels: Vec<usize> = (0..batch * pixels)
                    .map(|i| match ignore {
                        Some(l) if i % 5 == 0 && i < pixels => l,
                        _ => (i * 7 + i / 3) % classes,
                    })
                    .collect();
                for accumulate in [false, true] {
                    let start: Vec<F> = values(x.len(), 2.0)
                        .iter()
                        .map(|&v| F::from_f64(v))
                        .collect();
                    let d_loss = F::from_f64(0.8);
                    let mut want = start.clone();
                    let loss_want = spatial_per_pixel(
                        &x, classes, pixels, &labels, ignore, d_loss, &mut want, accumulate,
                    );
                    let loss = cross_entropy_spatial(&x, batch, classes, pixels, &labels, ignore);
                    let mut got = start.clone();
                    cross_entropy_spatial_backward(
                        &x, batch, classes, pixels, &labels, ignore, d_loss, &mut got, accumulate,
                    );
                    let case = format!("{batch}×{classes}×{pixels} {ignore:?} {accumulate}");
                    assert_eq!(
                        loss.to_f64().to_bits(),
                        loss_want.to_f64().to_bits(),
                        "{case}"
                    );
                    let same = got
                        .iter()
                        .zip(&want)
                        .all(|(a, b)| a.to_f64().to_bits() == b.to_f64().to_bits());
                    assert!(same, "{case}: gradient bits differ");
                }
            }
        }
    }

    #[test]
    fn spatial_cross_entropy_blocks_give_the_per_pixel_bits() {
        spatial_blocks_match_per_pixel::<f32>();
        spatial_blocks_match_per_pixel::<f64>();
    }

    /// PyTorch's weighted, smoothed cross-entropy of `rows × classes` logits, from its
    /// definition: `[(1 − ε) Σ w_y·(−ln p_y) + ε/C Σ_c w_c·(−ln p_c)] / Σ w_y` over the rows not
    /// labelled `ignore`.
    fn naive_ce_options(
        x: &[f64],
        classes: usize,
        labels: &[usize],
        options: &CrossEntropyOptions<'_>,
    ) -> f64 {
        let w = |c: usize| options.weight.map_or(1.0, |w| w[c]);
        let eps = options.label_smoothing;
        let (mut total, mut weights) = (0.0, 0.0);
        for (row, &l) in x.chunks(classes).zip(labels) {
            if Some(l) == options.ignore {
                continue;
            }
            let z: f64 = row.iter().map(|v| v.exp()).sum();
            let nll = |c: usize| -(row[c].exp() / z).ln();
            total += (1.0 - eps) * w(l) * nll(l);
            total += eps / classes as f64 * (0..classes).map(|c| w(c) * nll(c)).sum::<f64>();
            weights += w(l);
        }
        total / weights
    }

    /// `[batch, classes, pixels]` logits as `batch · pixels` rows of `classes`.
    fn pixel_rows(x: &[f64], batch: usize, classes: usize, pixels: usize) -> Vec<f64> {
        let mut rows = Vec::with_capacity(x.len());
        for b in 0..batch {
            for p in 0..pixels {
                for c in 0..classes {
                    rows.push(x[(b * classes + c) * pixels + p]);
                }
            }
        }
        rows
    }

    /// Weights, smoothing, both, each with and without ignored rows (the ignored label a class
    /// and not a class).
    fn option_cases() -> Vec<CrossEntropyOptions<'static>> {
        const W: &[f64] = &[1.0, 2.0, 0.5, 0.0];
        let mut cases = Vec::new();
        for ignore in [None, Some(1), Some(255)] {
            for (weight, label_smoothing) in [(Some(W), 0.0), (None, 0.1), (Some(W), 0.3)] {
                cases.push(CrossEntropyOptions {
                    ignore,
                    weight,
                    label_smoothing,
                });
            }
        }
        cases.push(CrossEntropyOptions {
            ignore: Some(2),
            weight: None,
            label_smoothing: 1.0,
        });
        cases
    }

    #[test]
    fn cross_entropy_with_options_value_and_gradient() {
        let (rows, classes) = (7, 4);
        let mut x = values(rows * classes, 7.0);
        for options in option_cases() {
            // Two padding rows: the ignored label, else class 2.
            let pad = options.ignore.unwrap_or(2);
            let labels = [1, 3, pad, 0, 1, 2, pad];
            let case = format!("{options:?}");
            let loss = cross_entropy_with_options(&x, rows, classes, &labels, &options);
            let want = naive_ce_options(&x, classes, &labels, &options);
            assert!((loss - want).abs() < 1e-14, "{case}: {loss} vs {want}");
            let d = 0.9;
            let num = numeric_gradient(
                |x| d * naive_ce_options(x, classes, &labels, &options),
                &mut x,
                1e-6,
            );
            // The smoothing term sums every class's −ln p: the central differences carry
            // rounding of a few 1e-10.
            check_both_modes(&num, 1e-7, 1e-9, &case, |g, acc| {
                cross_entropy_with_options_backward(&x, rows, classes, &labels, &options, d, g, acc)
            });
            // f32 follows the f64 value.
            let xf: Vec<f32> = x.iter().map(|&v| v as f32).collect();
            let loss32 = cross_entropy_with_options(&xf, rows, classes, &labels, &options);
            assert!((loss32 as f64 - want).abs() < 1e-6, "{case}: f32 {loss32}");
        }
    }

    #[test]
    fn spatial_cross_entropy_with_options_value_and_gradient() {
        // [2, 4, 3, 5] logits: 30 pixels of 4 classes, a block and a bit per sample.
        let (batch, classes, pixels) = (2, 4, 15);
        let mut x = values(batch * classes * pixels, 17.0);
        for options in option_cases() {
            let pad = options.ignore.unwrap_or(2);
            let labels: Vec<usize> = (0..batch * pixels)
                .map(|i| {
                    if i % 7 == 3 {
                        pad
                    } else {
                        (i * 5 + i / 4) % classes
                    }
                })
                .collect();
            let case = format!("{options:?}");
            let reference = |x: &[f64]| {
                naive_ce_options(
                    &pixel_rows(x, batch, classes, pixels),
                    classes,
                    &labels,
                    &options,
                )
            };
            let loss =
                cross_entropy_spatial_with_options(&x, batch, classes, pixels, &labels, &options);
            let want = reference(&x);
            assert!((loss - want).abs() < 1e-14, "{case}: {loss} vs {want}");
            let d = 1.1;
            let num = numeric_gradient(|x| d * reference(x), &mut x, 1e-6);
            check_both_modes(&num, 1e-7, 1e-9, &case, |g, acc| {
                cross_entropy_spatial_with_options_backward(
                    &x, batch, classes, pixels, &labels, &options, d, g, acc,
                )
            });
        }
    }

    /// Large enough for the backward to be split between the threads: the definition's
    /// gradient, written and accumulated.
    #[test]
    fn cross_entropy_with_options_large_matches_the_definition() {
        let (rows, classes) = (300, 101);
        let x = values(rows * classes, 4.0);
        let labels: Vec<usize> = (0..rows)
            .map(|r| if r % 11 == 0 { 500 } else { (r * 13) % classes })
            .collect();
        let weight: Vec<f64> = (0..classes).map(|c| 0.25 + (c % 7) as f64 * 0.5).collect();
        let options = CrossEntropyOptions {
            ignore: Some(500),
            weight: Some(&weight),
            label_smoothing: 0.15,
        };
        let (eps, spread) = (0.15, 0.15 / classes as f64);
        let all: f64 = weight.iter().sum();
        let total: f64 = labels
            .iter()
            .filter(|&&l| l != 500)
            .map(|&l| weight[l])
            .sum();
        let mut want_grad = vec![0.0; rows * classes];
        for (r, &l) in labels.iter().enumerate() {
            if l == 500 {
                continue;
            }
            let row = &x[r * classes..(r + 1) * classes];
            let z: f64 = row.iter().map(|v| v.exp()).sum();
            let kept = (1.0 - eps) * weight[l];
            for c in 0..classes {
                let target = spread * weight[c] + if c == l { kept } else { 0.0 };
                want_grad[r * classes + c] =
                    (row[c].exp() / z * (kept + spread * all) - target) / total;
            }
        }
        let loss = cross_entropy_with_options(&x, rows, classes, &labels, &options);
        let want = naive_ce_options(&x, classes, &labels, &options);
        assert_close(&[loss], &[want], 1e-12, 1e-13, "loss");
        check_both_modes(&want_grad, 1e-12, 1e-14, "gradient", |d, accumulate| {
            cross_entropy_with_options_backward(
                &x, rows, classes, &labels, &options, 1.0, d, accumulate,
            )
        });
    }

    #[test]
    fn cross_entropy_without_options_is_cross_entropy() {
        let (rows, classes) = (5, 3);
        let x = values(rows * classes, 6.0);
        let labels = [2, 0, 9, 1, 0];
        let options = CrossEntropyOptions {
            ignore: Some(9),
            ..CrossEntropyOptions::default()
        };
        let plain = cross_entropy_ignore(&x, rows, classes, &labels, Some(9));
        let loss = cross_entropy_with_options(&x, rows, classes, &labels, &options);
        assert!((loss - plain).abs() < 1e-15, "{loss} vs {plain}");
        let mut want = vec![0.0; rows * classes];
        cross_entropy_ignore_backward(&x, rows, classes, &labels, Some(9), 0.6, &mut want, false);
        let mut got = vec![f64::NAN; rows * classes];
        cross_entropy_with_options_backward(
            &x, rows, classes, &labels, &options, 0.6, &mut got, false,
        );
        assert_close(&got, &want, 1e-15, 1e-16, "gradient");
    }

    #[test]
    fn cross_entropy_with_options_and_every_row_ignored_is_nan_with_zero_gradient() {
        let x = values(6, 1.0);
        let options = CrossEntropyOptions {
            ignore: Some(5),
            weight: Some(&[1.0, 2.0, 3.0]),
            label_smoothing: 0.1,
        };
        assert!(cross_entropy_with_options(&x, 2, 3, &[5, 5], &options).is_nan());
        let mut g = [f64::NAN; 6];
        cross_entropy_with_options_backward(&x, 2, 3, &[5, 5], &options, 1.0, &mut g, false);
        assert_eq!(g, [0.0; 6]);
    }

    #[test]
    #[should_panic(expected = "2 class weights for 3 classes")]
    fn cross_entropy_with_options_rejects_a_weight_per_class_missing() {
        let options = CrossEntropyOptions {
            weight: Some(&[1.0, 2.0]),
            ..CrossEntropyOptions::default()
        };
        cross_entropy_with_options(&[0.0f64; 6], 2, 3, &[0, 1], &options);
    }

    #[test]
    fn bce_value_and_gradient() {
        let mut x = values(10, 5.0);
        // Targets in [0, 1], soft ones included.
        let t: Vec<f64> = values(10, 6.0)
            .iter()
            .map(|v| (v * 0.25 + 0.5).clamp(0.0, 1.0))
            .collect();
        assert!((bce_with_logits(&x, &t) - naive_bce(&x, &t)).abs() < 1e-14);
        let d = 0.9;
        let num = numeric_gradient(|x| d * naive_bce(x, &t), &mut x, 1e-6);
        check_both_modes(&num, 1e-7, 1e-10, "d bce", |g, acc| {
            bce_with_logits_backward(&x, &t, d, g, acc)
        });
    }

    #[test]
    fn bce_is_stable_for_huge_logits() {
        // Wrong and confident: loss ≈ |x|; right and confident: loss ≈ 0; σ saturates to 0/1.
        let x = [800.0f64, -800.0, 800.0, -800.0];
        let t = [0.0, 1.0, 1.0, 0.0];
        assert_eq!(bce_with_logits(&x, &t), 400.0);
        let mut g = [0.0; 4];
        bce_with_logits_backward(&x, &t, 1.0, &mut g, false);
        assert_eq!(g, [0.25, -0.25, 0.0, 0.0]);
        assert_eq!(bce_with_logits(&[-200.0f32], &[0.0]), 0.0);
    }

    #[test]
    fn empty_batches_are_nan() {
        assert!(mse::<f64>(&[], &[]).is_nan());
        assert!(bce_with_logits::<f64>(&[], &[]).is_nan());
        assert!(cross_entropy::<f64>(&[], 0, 3, &[]).is_nan());
    }

    #[test]
    fn sigmoid_is_exact_at_the_extremes() {
        // The BCE gradient relies on Float::sigmoid saturating instead of overflowing.
        assert_eq!(0.0f64.sigmoid(), 0.5);
        assert_eq!((-1000.0f64).sigmoid(), 0.0);
        assert_eq!(1000.0f64.sigmoid(), 1.0);
        assert_eq!((-200.0f32).sigmoid(), 0.0);
        let want = 1.0 / (1.0 + (-2.0f64).exp());
        assert_close(&[2.0f64.sigmoid()], &[want], 1e-16, 0.0, "σ(2)");
    }
}
