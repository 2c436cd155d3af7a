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

use super::{log_sum_exp, CrossEntropyOptions};
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
