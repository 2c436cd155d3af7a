//! Cross-entropy against class probabilities, PyTorch's `F.cross_entropy(logits, target)` with
//! a float `target` of the logits' shape (mixup and cutmix targets, a teacher's soft labels):
//! for each row of `classes` logits `x` and target probabilities `t`, with PyTorch's
//! `label_smoothing` ε applied to the target first (`t' = t (1 − ε) + ε / C`) and class weights
//! `w`, `−Σ_c w_c t'_c log_softmax(x)_c`; the loss is the mean over the rows (not divided by the
//! weights, as PyTorch's mean for probability targets). PyTorch refuses `ignore_index` with
//! probability targets, and so does the compiler.
//!
//! Both arguments are differentiable: the logits' gradient is `softmax(x) Σ_c w_c t'_c − w t'`,
//! the target's `−(1 − ε) w log_softmax(x)`, each over the rows' count.
//!
//! Image logits `[N, C, H, W]` (classes on axis 1) take the `_spatial` kernels, with the
//! target in the same layout (a segmentation teacher's per-pixel probabilities, or mixed label
//! maps): each pixel is a row, and the mean is over every sample's every pixel, as PyTorch's.

use super::{block_log_sum_exp, for_row_chunks, log_sum_exp, CrossEntropyOptions, PIXEL_BLOCK};
use crate::kernels::store;
use crate::Float;

#[track_caller]
fn check<F>(
    what: &str,
    logits: &[F],
    rows: usize,
    classes: usize,
    target: &[F],
    options: &CrossEntropyOptions<'_>,
    out: Option<&[F]>,
) {
    assert_eq!(
        logits.len(),
        rows * classes,
        "{what}: logits have {} elements, expected {rows}×{classes}",
        logits.len()
    );
    assert_eq!(
        target.len(),
        logits.len(),
        "{what}: the target's length differs from the logits'"
    );
    assert!(
        options.ignore.is_none(),
        "{what}: ignore_index does not apply to probability targets"
    );
    options.check(what, classes);
    if let Some(out) = out {
        assert_eq!(out.len(), logits.len(), "{what}: gradient buffer length");
    }
}

/// The smoothed target of class `c`, `t (1 − ε) + ε / C`, and `1 − ε`.
#[inline(always)]
fn smoothing<F: Float>(options: &CrossEntropyOptions<'_>, classes: usize) -> (F, F) {
    let eps = options.label_smoothing;
    (
        F::from_f64(1.0 - eps),
        F::from_f64(eps / classes.max(1) as f64),
    )
}

/// Cross-entropy of `rows × classes` logits against target probabilities of the same shape,
/// with `options`' class weights and label smoothing (see the module docs). NaN when `rows`
/// is 0, as PyTorch's mean of nothing.
///
/// # Panics
/// If the lengths disagree with `rows` and `classes`, the options have an `ignore` label, or
/// their weights do not count the classes (caller bugs).
///
/// ```
/// use kiln_runtime::loss::{cross_entropy_soft, CrossEntropyOptions};
/// let plain = CrossEntropyOptions { ignore: None, weight: None, label_smoothing: 0.0 };
/// // Equal logits against a half-and-half target: ln 2.
/// let loss = cross_entropy_soft(&[1.0f64, 1.0], 1, 2, &[0.5, 0.5], &plain);
/// assert!((loss - 2f64.ln()).abs() < 1e-15);
/// ```
pub fn cross_entropy_soft<F: Float>(
    logits: &[F],
    rows: usize,
    classes: usize,
    target: &[F],
    options: &CrossEntropyOptions<'_>,
) -> F {
    check(
        "cross_entropy_soft",
        logits,
        rows,
        classes,
        target,
        options,
        None,
    );
    let (keep, spread) = smoothing::<F>(options, classes);
    let mut total = F::ZERO;
    if classes > 0 {
        for (x, t) in logits
            .chunks_exact(classes)
            .zip(target.chunks_exact(classes))
        {
            let (max, lse) = log_sum_exp(x);
            for (c, (&xc, &tc)) in x.iter().zip(t).enumerate() {
                let log_p = xc - max - lse;
                total -= options.weight_of::<F>(c) * (tc * keep + spread) * log_p;
            }
        }
    }
    total / F::from_usize(rows)
}

/// Gradient of [`cross_entropy_soft`] with respect to the logits, written (or added, with
/// `accumulate`) into `d_logits`.
///
/// # Panics
/// As [`cross_entropy_soft`], or if `d_logits` has another length.
#[allow(clippy::too_many_arguments)]
pub fn cross_entropy_soft_backward<F: Float>(
    logits: &[F],
    rows: usize,
    classes: usize,
    target: &[F],
    options: &CrossEntropyOptions<'_>,
    d_loss: F,
    d_logits: &mut [F],
    accumulate: bool,
) {
    let what = "cross_entropy_soft_backward";
    check(what, logits, rows, classes, target, options, Some(d_logits));
    if classes == 0 {
        return;
    }
    let (keep, spread) = smoothing::<F>(options, classes);
    let scale = d_loss / F::from_usize(rows);
    let rows_of = logits
        .chunks_exact(classes)
        .zip(target.chunks_exact(classes))
        .zip(d_logits.chunks_exact_mut(classes));
    for ((x, t), d) in rows_of {
        let (max, lse) = log_sum_exp(x);
        let mass = t.iter().enumerate().fold(F::ZERO, |sum, (c, &tc)| {
            sum + options.weight_of::<F>(c) * (tc * keep + spread)
        });
        for (c, ((slot, &xc), &tc)) in d.iter_mut().zip(x).zip(t).enumerate() {
            let p = (xc - max - lse).exp();
            let wt = options.weight_of::<F>(c) * (tc * keep + spread);
            store(slot, (p * mass - wt) * scale, accumulate);
        }
    }
}

/// Gradient of [`cross_entropy_soft`] with respect to the target probabilities, written (or
/// added, with `accumulate`) into `d_target`.
///
/// # Panics
/// As [`cross_entropy_soft`], or if `d_target` has another length.
#[allow(clippy::too_many_arguments)]
pub fn cross_entropy_soft_target_backward<F: Float>(
    logits: &[F],
    rows: usize,
    classes: usize,
    target: &[F],
    options: &CrossEntropyOptions<'_>,
    d_loss: F,
    d_target: &mut [F],
    accumulate: bool,
) {
    let what = "cross_entropy_soft_target_backward";
    check(what, logits, rows, classes, target, options, Some(d_target));
    if classes == 0 {
        return;
    }
    let (keep, _) = smoothing::<F>(options, classes);
    let scale = d_loss / F::from_usize(rows);
    for (x, d) in logits
        .chunks_exact(classes)
        .zip(d_target.chunks_exact_mut(classes))
    {
        let (max, lse) = log_sum_exp(x);
        for (c, (slot, &xc)) in d.iter_mut().zip(x).enumerate() {
            let log_p = xc - max - lse;
            store(
                slot,
                -(options.weight_of::<F>(c) * keep * log_p) * scale,
                accumulate,
            );
        }
    }
}

/// A block of up to [`PIXEL_BLOCK`] pixels of one sample `[classes, pixels]`.
#[derive(Clone, Copy)]
struct PixelBlock {
    first: usize,
    len: usize,
    pixels: usize,
}

impl PixelBlock {
    /// The block's elements of class `c`'s plane.
    fn plane(self, c: usize) -> std::ops::Range<usize> {
        let start = c * self.pixels + self.first;
        start..start + self.len
    }
}

/// Runs `f(block, max, lse)` over the pixel blocks of one sample `x` (`[classes, pixels]`),
/// with each block's per-pixel maxima and shifted log-sum-exps over the classes.
fn pixel_blocks<F: Float>(
    x: &[F],
    classes: usize,
    pixels: usize,
    mut f: impl FnMut(PixelBlock, &[F], &[F]),
) {
    let (mut max, mut lse) = ([F::ZERO; PIXEL_BLOCK], [F::ZERO; PIXEL_BLOCK]);
    for first in (0..pixels).step_by(PIXEL_BLOCK) {
        let len = PIXEL_BLOCK.min(pixels - first);
        let (max, lse) = (&mut max[..len], &mut lse[..len]);
        block_log_sum_exp(x, pixels, classes, first, max, lse);
        f(PixelBlock { first, len, pixels }, max, lse);
    }
}

/// Checks the slices of a `_spatial` kernel: logits and target `[batch, classes, pixels]`.
#[track_caller]
#[allow(clippy::too_many_arguments)]
fn check_spatial<F>(
    what: &str,
    logits: &[F],
    (batch, classes, pixels): (usize, usize, usize),
    target: &[F],
    options: &CrossEntropyOptions<'_>,
    out: Option<&[F]>,
) {
    assert_eq!(
        logits.len(),
        batch * classes * pixels,
        "{what}: logits have {} elements, expected {batch}×{classes}×{pixels}",
        logits.len()
    );
    check(what, logits, batch * pixels, classes, target, options, out);
}

/// Cross-entropy of image logits `[batch, classes, pixels]` (PyTorch's `[N, C, H, W]` with
/// the pixels flattened: classes on axis 1) against target probabilities of the same layout:
/// [`cross_entropy_soft`] with every pixel a row, so the mean is over `batch · pixels`. NaN
/// when there are no pixels, as PyTorch's mean of nothing.
///
/// # Panics
/// As [`cross_entropy_soft`].
///
/// ```
/// use kiln_runtime::loss::{cross_entropy_soft, cross_entropy_soft_spatial, CrossEntropyOptions};
/// let plain = CrossEntropyOptions { ignore: None, weight: None, label_smoothing: 0.0 };
/// // One sample, 2 classes, 3 pixels: class planes [x0 x1 x2] and [y0 y1 y2].
/// let image = [1.0f64, 0.0, -2.0, 0.5, 0.5, 3.0];
/// let target = [0.25, 1.0, 0.0, 0.75, 0.0, 1.0];
/// // The same pixels as rows of [class 0, class 1].
/// let rows = [1.0, 0.5, 0.0, 0.5, -2.0, 3.0];
/// let row_target = [0.25, 0.75, 1.0, 0.0, 0.0, 1.0];
/// let by_pixel = cross_entropy_soft_spatial(&image, 1, 2, 3, &target, &plain);
/// let by_row = cross_entropy_soft(&rows, 3, 2, &row_target, &plain);
/// assert!((by_pixel - by_row).abs() < 1e-15);
/// ```
pub fn cross_entropy_soft_spatial<F: Float>(
    logits: &[F],
    batch: usize,
    classes: usize,
    pixels: usize,
    target: &[F],
    options: &CrossEntropyOptions<'_>,
) -> F {
    let sizes = (batch, classes, pixels);
    check_spatial(
        "cross_entropy_soft_spatial",
        logits,
        sizes,
        target,
        options,
        None,
    );
    let (keep, spread) = smoothing::<F>(options, classes);
    let mut total = F::ZERO;
    let sample_len = classes * pixels;
    if sample_len > 0 {
        for (x, t) in logits
            .chunks_exact(sample_len)
            .zip(target.chunks_exact(sample_len))
        {
            pixel_blocks(x, classes, pixels, |block, max, lse| {
                for c in 0..classes {
                    let w = options.weight_of::<F>(c);
                    let planes = x[block.plane(c)].iter().zip(&t[block.plane(c)]);
                    for ((&xc, &tc), (&m, &s)) in planes.zip(max.iter().zip(lse)) {
                        total -= w * (tc * keep + spread) * (xc - m - s);
                    }
                }
            });
        }
    }
    total / F::from_usize(batch * pixels)
}

/// Gradient of [`cross_entropy_soft_spatial`] with respect to the logits, written (or added,
/// with `accumulate`) into `d_logits`: [`cross_entropy_soft_backward`] with the pixels as
/// rows. Samples are shared by the two threads when there are enough, each computed the same
/// way on either.
///
/// # Panics
/// As [`cross_entropy_soft_spatial`], or if `d_logits` has another length.
#[allow(clippy::too_many_arguments)]
pub fn cross_entropy_soft_spatial_backward<F: Float>(
    logits: &[F],
    batch: usize,
    classes: usize,
    pixels: usize,
    target: &[F],
    options: &CrossEntropyOptions<'_>,
    d_loss: F,
    d_logits: &mut [F],
    accumulate: bool,
) {
    let what = "cross_entropy_soft_spatial_backward";
    let sizes = (batch, classes, pixels);
    check_spatial(what, logits, sizes, target, options, Some(d_logits));
    let sample_len = classes * pixels;
    if sample_len == 0 {
        return;
    }
    let (keep, spread) = smoothing::<F>(options, classes);
    let scale = d_loss / F::from_usize(batch * pixels);
    let pass = |samples: std::ops::Range<usize>, d_logits: &mut [F]| {
        let span = samples.start * sample_len..samples.end * sample_len;
        let (logits, target) = (&logits[span.clone()], &target[span]);
        let mut mass = [F::ZERO; PIXEL_BLOCK];
        let samples = logits
            .chunks_exact(sample_len)
            .zip(target.chunks_exact(sample_len))
            .zip(d_logits.chunks_exact_mut(sample_len));
        for ((x, t), d) in samples {
            pixel_blocks(x, classes, pixels, |block, max, lse| {
                // Σ_c w_c t'_c per pixel, in class order as the row kernel sums it.
                let mass = &mut mass[..block.len];
                mass.fill(F::ZERO);
                for c in 0..classes {
                    let w = options.weight_of::<F>(c);
                    for (sum, &tc) in mass.iter_mut().zip(&t[block.plane(c)]) {
                        *sum += w * (tc * keep + spread);
                    }
                }
                for c in 0..classes {
                    let w = options.weight_of::<F>(c);
                    let inputs = x[block.plane(c)].iter().zip(&t[block.plane(c)]);
                    let stats = max.iter().zip(lse).zip(&*mass);
                    for ((slot, (&xc, &tc)), ((&m, &s), &total)) in
                        d[block.plane(c)].iter_mut().zip(inputs).zip(stats)
                    {
                        let p = (xc - m - s).exp();
                        store(
                            slot,
                            (p * total - w * (tc * keep + spread)) * scale,
                            accumulate,
                        );
                    }
                }
            });
        }
    };
    for_row_chunks(batch, sample_len, d_logits, pass);
}

/// Gradient of [`cross_entropy_soft_spatial`] with respect to the target probabilities,
/// written (or added, with `accumulate`) into `d_target`.
///
/// # Panics
/// As [`cross_entropy_soft_spatial`], or if `d_target` has another length.
#[allow(clippy::too_many_arguments)]
pub fn cross_entropy_soft_spatial_target_backward<F: Float>(
    logits: &[F],
    batch: usize,
    classes: usize,
    pixels: usize,
    target: &[F],
    options: &CrossEntropyOptions<'_>,
    d_loss: F,
    d_target: &mut [F],
    accumulate: bool,
) {
    let what = "cross_entropy_soft_spatial_target_backward";
    let sizes = (batch, classes, pixels);
    check_spatial(what, logits, sizes, target, options, Some(d_target));
    let sample_len = classes * pixels;
    if sample_len == 0 {
        return;
    }
    let (keep, _) = smoothing::<F>(options, classes);
    let scale = d_loss / F::from_usize(batch * pixels);
    let pass = |samples: std::ops::Range<usize>, d_target: &mut [F]| {
        let logits = &logits[samples.start * sample_len..samples.end * sample_len];
        let samples = logits
            .chunks_exact(sample_len)
            .zip(d_target.chunks_exact_mut(sample_len));
        for (x, d) in samples {
            pixel_blocks(x, classes, pixels, |block, max, lse| {
                for c in 0..classes {
                    let w = options.weight_of::<F>(c);
                    let stats = max.iter().zip(lse);
                    for ((slot, &xc), (&m, &s)) in d[block.plane(c)]
                        .iter_mut()
                        .zip(&x[block.plane(c)])
                        .zip(stats)
                    {
                        store(slot, -(w * keep * (xc - m - s)) * scale, accumulate);
                    }
                }
            });
        }
    };
    for_row_chunks(batch, sample_len, d_target, pass);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::numeric_gradient;

    const PLAIN: CrossEntropyOptions<'static> = CrossEntropyOptions {
        ignore: None,
        weight: None,
        label_smoothing: 0.0,
    };

    /// Values PyTorch 2.15 gives (float64) for `F.cross_entropy(x, t)` on two rows of three
    /// classes, plain and with `weight=[1, 2, 0.5], label_smoothing=0.2`.
    #[test]
    fn matches_pytorch() {
        let x = [1.0, -0.5, 2.0, 0.3, 0.3, -1.0];
        let t = [0.2, 0.3, 0.5, 1.0, 0.0, 0.0];
        let plain: f64 = cross_entropy_soft(&x, 2, 3, &t, &PLAIN);
        assert!((plain - PLAIN_WANT).abs() < 1e-15, "{plain}");
        let w = [1.0, 2.0, 0.5];
        let options = CrossEntropyOptions {
            ignore: None,
            weight: Some(&w),
            label_smoothing: 0.2,
        };
        let with: f64 = cross_entropy_soft(&x, 2, 3, &t, &options);
        assert!((with - OPTIONS_WANT).abs() < 1e-15, "{with}");
    }

    const PLAIN_WANT: f64 = 1.0712167845791574;

    /// `[batch, classes, pixels]` as rows `[batch · pixels, classes]`.
    fn pixels_as_rows(x: &[f64], batch: usize, classes: usize, pixels: usize) -> Vec<f64> {
        let mut rows = vec![0.0; x.len()];
        for b in 0..batch {
            for c in 0..classes {
                for p in 0..pixels {
                    rows[(b * pixels + p) * classes + c] = x[(b * classes + c) * pixels + p];
                }
            }
        }
        rows
    }

    /// Sizes whose pixels fill one block, part of one, and spill into a second (70 > 64).
    const SPATIAL_SIZES: [(usize, usize, usize); 3] = [(2, 3, 5), (3, 4, 64), (2, 2, 70)];

    #[test]
    fn spatial_is_the_row_loss_over_pixels() {
        let w = [1.0, 2.0, 0.5, 1.5];
        for (batch, classes, pixels) in SPATIAL_SIZES {
            let options = CrossEntropyOptions {
                ignore: None,
                weight: Some(&w[..classes]),
                label_smoothing: 0.1,
            };
            let len = batch * classes * pixels;
            let x: Vec<f64> = (0..len)
                .map(|i| ((i * 37 % 23) as f64 - 11.0) / 4.0)
                .collect();
            let t: Vec<f64> = (0..len).map(|i| (i * 11 % 7) as f64 / 7.0).collect();
            let (xr, tr) = (
                pixels_as_rows(&x, batch, classes, pixels),
                pixels_as_rows(&t, batch, classes, pixels),
            );
            let rows = batch * pixels;
            let want = cross_entropy_soft(&xr, rows, classes, &tr, &options);
            let got = cross_entropy_soft_spatial(&x, batch, classes, pixels, &t, &options);
            assert!((got - want).abs() < 1e-13, "{got} against {want}");
            let (mut dx, mut dxr) = (vec![0.5; len], vec![0.5; len]);
            cross_entropy_soft_spatial_backward(
                &x, batch, classes, pixels, &t, &options, 2.0, &mut dx, true,
            );
            cross_entropy_soft_backward(&xr, rows, classes, &tr, &options, 2.0, &mut dxr, true);
            let (mut dt, mut dtr) = (vec![0.0; len], vec![0.0; len]);
            cross_entropy_soft_spatial_target_backward(
                &x, batch, classes, pixels, &t, &options, 2.0, &mut dt, false,
            );
            cross_entropy_soft_target_backward(
                &xr, rows, classes, &tr, &options, 2.0, &mut dtr, false,
            );
            let pairs = [(dx, dxr), (dt, dtr)];
            for (got, want) in pairs {
                let got = pixels_as_rows(&got, batch, classes, pixels);
                for (g, w) in got.iter().zip(&want) {
                    assert!((g - w).abs() < 1e-15, "{g} against {w}");
                }
            }
        }
    }

    #[test]
    fn spatial_gradients_are_central_differences() {
        let options = CrossEntropyOptions {
            ignore: None,
            weight: Some(&[0.5, 2.0, 1.0]),
            label_smoothing: 0.2,
        };
        let (batch, classes, pixels) = (2, 3, 67);
        let len = batch * classes * pixels;
        let mut x: Vec<f64> = (0..len)
            .map(|i| ((i * 13 % 17) as f64 - 8.0) / 3.0)
            .collect();
        let mut t: Vec<f64> = (0..len).map(|i| (i * 5 % 9) as f64 / 9.0).collect();
        let loss = |x: &[f64], t: &[f64]| {
            cross_entropy_soft_spatial(x, batch, classes, pixels, t, &options)
        };
        let num = numeric_gradient(|x| loss(x, &t), &mut x, 1e-6);
        let mut dx = vec![0.0; len];
        cross_entropy_soft_spatial_backward(
            &x, batch, classes, pixels, &t, &options, 1.0, &mut dx, false,
        );
        for (g, n) in dx.iter().zip(&num) {
            assert!((g - n).abs() < 1e-9, "{g} against {n}");
        }
        let num = numeric_gradient(|t| loss(&x, t), &mut t, 1e-6);
        let mut dt = vec![0.0; len];
        cross_entropy_soft_spatial_target_backward(
            &x, batch, classes, pixels, &t, &options, 1.0, &mut dt, false,
        );
        for (g, n) in dt.iter().zip(&num) {
            assert!((g - n).abs() < 1e-9, "{g} against {n}");
        }
    }
    const OPTIONS_WANT: f64 = 1.525188124702183;

    #[test]
    fn gradients_are_central_differences() {
        let w = [1.0, 2.0, 0.5];
        let options = CrossEntropyOptions {
            ignore: None,
            weight: Some(&w),
            label_smoothing: 0.1,
        };
        let mut x = [1.0, -0.5, 2.0, 0.3, 0.3, -1.0];
        let mut t = [0.2, 0.3, 0.5, 0.7, 0.1, 0.2];
        let num = numeric_gradient(|x| cross_entropy_soft(x, 2, 3, &t, &options), &mut x, 1e-6);
        let mut dx = [1.0; 6];
        cross_entropy_soft_backward(&x, 2, 3, &t, &options, 2.0, &mut dx, true);
        for (g, n) in dx.iter().zip(&num) {
            assert!((g - 1.0 - 2.0 * n).abs() < 1e-8, "{g} against {n}");
        }
        let num = numeric_gradient(|t| cross_entropy_soft(&x, 2, 3, t, &options), &mut t, 1e-6);
        let mut dt = [0.0; 6];
        cross_entropy_soft_target_backward(&x, 2, 3, &t, &options, 1.0, &mut dt, false);
        for (g, n) in dt.iter().zip(&num) {
            assert!((g - n).abs() < 1e-8, "{g} against {n}");
        }
    }
}
