//! The regression losses other than [`mse`](super::mse): the mean over all elements of a
//! function of each difference `d = pred − target`, as PyTorch's `l1_loss`, `smooth_l1_loss`
//! and `huber_loss` with `reduction='mean'`.
//!
//! Each loss is even in `d` and its gradient odd, so the gradient with respect to the target
//! is the gradient with respect to the prediction with the two swapped (the generated code
//! calls the same kernel). The forward and backward follow PyTorch's CPU kernels branch for
//! branch (where a difference equals the threshold, which side it falls on), with the mean's
//! `1 / n` formed in f64 and rounded once, as PyTorch forms its `norm`.

use crate::kernels::store;
use crate::Float;

/// Panics unless the prediction, the target and (when given) the gradient buffer have one
/// length: a caller bug.
#[track_caller]
fn check_lengths<F>(what: &str, pred: &[F], target: &[F], d_pred: Option<&[F]>) {
    assert_eq!(
        pred.len(),
        target.len(),
        "{what}: prediction and target lengths differ"
    );
    if let Some(d) = d_pred {
        assert_eq!(
            pred.len(),
            d.len(),
            "{what}: gradient buffer has the wrong length"
        );
    }
}

/// The mean of `f(pred[i] − target[i])`; NaN when empty, as PyTorch's mean of nothing.
fn mean_of<F: Float>(pred: &[F], target: &[F], f: impl Fn(F) -> F) -> F {
    let total: F = pred.iter().zip(target).map(|(&p, &t)| f(p - t)).sum();
    total / F::from_usize(pred.len())
}

/// Writes (or adds, with `accumulate`) `g(pred[i] − target[i], norm · d_loss)` into `d_pred`,
/// `norm` being `1 / n` rounded once.
fn gradient<F: Float>(
    pred: &[F],
    target: &[F],
    d_loss: F,
    d_pred: &mut [F],
    accumulate: bool,
    g: impl Fn(F, F) -> F,
) {
    let scale = F::from_f64(1.0 / pred.len() as f64) * d_loss;
    for ((slot, &p), &t) in d_pred.iter_mut().zip(pred).zip(target) {
        store(slot, g(p - t, scale), accumulate);
    }
}

/// Mean absolute error: `mean(|pred − target|)`, PyTorch's `l1_loss`.
///
/// # Panics
/// If the slices differ in length (a caller bug).
///
/// ```
/// use kiln_runtime::loss::l1;
/// assert_eq!(l1(&[1.0f64, 2.0], &[0.0, 4.0]), 1.5);
/// ```
pub fn l1<F: Float>(pred: &[F], target: &[F]) -> F {
    check_lengths("l1", pred, target, None);
    mean_of(pred, target, F::abs)
}

/// Gradient of [`l1`]: `sign(pred − target) / n · d_loss`, 0 where the two are equal (the
/// subgradient PyTorch takes there).
///
/// # Panics
/// If the slices differ in length (a caller bug).
///
/// ```
/// use kiln_runtime::loss::l1_backward;
/// let mut d = [0.0f64; 3];
/// l1_backward(&[1.0, 2.0, 3.0], &[0.0, 4.0, 3.0], 1.0, &mut d, false);
/// assert_eq!(d, [0.5 / 1.5, -0.5 / 1.5, 0.0]);
/// ```
pub fn l1_backward<F: Float>(
    pred: &[F],
    target: &[F],
    d_loss: F,
    d_pred: &mut [F],
    accumulate: bool,
) {
    check_lengths("l1_backward", pred, target, Some(d_pred));
    gradient(pred, target, d_loss, d_pred, accumulate, |d, scale| {
        if d > F::ZERO {
            scale
        } else if d < F::ZERO {
            -scale
        } else {
            F::ZERO
        }
    });
}

/// Smooth L1: the mean of `0.5 · d² / beta` where `|d| < beta` and `|d| − 0.5 · beta`
/// elsewhere, PyTorch's `smooth_l1_loss(beta = ..)`. `beta` must be positive (PyTorch's
/// `beta = 0` is [`l1`], which the generated code calls instead).
///
/// # Panics
/// If the slices differ in length (a caller bug).
///
/// ```
/// use kiln_runtime::loss::smooth_l1;
/// // |d| = 0.5 is inside beta = 1 (0.125), |d| = 2 outside (1.5).
/// assert_eq!(smooth_l1(&[0.5f64, 2.0], &[0.0, 0.0], 1.0), (0.125 + 1.5) / 2.0);
/// ```
pub fn smooth_l1<F: Float>(pred: &[F], target: &[F], beta: F) -> F {
    check_lengths("smooth_l1", pred, target, None);
    let half = F::from_f64(0.5);
    mean_of(pred, target, |d| {
        let z = d.abs();
        if z < beta {
            half * z * z / beta
        } else {
            z - half * beta
        }
    })
}

/// Gradient of [`smooth_l1`]: `d / beta` inside `(−beta, beta)`, `±1` outside, times
/// `d_loss / n`.
///
/// # Panics
/// If the slices differ in length (a caller bug).
///
/// ```
/// use kiln_runtime::loss::smooth_l1_backward;
/// let mut d = [0.0f64; 2];
/// smooth_l1_backward(&[0.5, -2.0], &[0.0, 0.0], 1.0, 1.0, &mut d, false);
/// assert_eq!(d, [0.25, -0.5]);
/// ```
pub fn smooth_l1_backward<F: Float>(
    pred: &[F],
    target: &[F],
    beta: F,
    d_loss: F,
    d_pred: &mut [F],
    accumulate: bool,
) {
    check_lengths("smooth_l1_backward", pred, target, Some(d_pred));
    // Unlike the forward (`|d| < beta`), PyTorch's backward puts `d = ±beta` outside.
    gradient(pred, target, d_loss, d_pred, accumulate, |d, scale| {
        if d <= -beta {
            -scale
        } else if d >= beta {
            scale
        } else {
            scale * d / beta
        }
    });
}

/// Huber loss: the mean of `0.5 · d²` where `|d| < delta` and `delta · (|d| − 0.5 · delta)`
/// elsewhere, PyTorch's `huber_loss(delta = ..)` (which is `delta` times [`smooth_l1`] with
/// `beta = delta`). `delta` must be positive.
///
/// # Panics
/// If the slices differ in length (a caller bug).
///
/// ```
/// use kiln_runtime::loss::huber;
/// assert_eq!(huber(&[0.5f64, 2.0], &[0.0, 0.0], 1.0), (0.125 + 1.5) / 2.0);
/// ```
pub fn huber<F: Float>(pred: &[F], target: &[F], delta: F) -> F {
    check_lengths("huber", pred, target, None);
    let half = F::from_f64(0.5);
    mean_of(pred, target, |d| {
        let z = d.abs();
        if z < delta {
            half * z * z
        } else {
            delta * (z - half * delta)
        }
    })
}

/// Gradient of [`huber`]: `d` inside `(−delta, delta)`, `±delta` outside, times `d_loss / n`.
///
/// # Panics
/// If the slices differ in length (a caller bug).
///
/// ```
/// use kiln_runtime::loss::huber_backward;
/// let mut d = [0.0f64; 2];
/// huber_backward(&[0.5, -2.0], &[0.0, 0.0], 1.5, 1.0, &mut d, false);
/// assert_eq!(d, [0.25, -0.75]);
/// ```
pub fn huber_backward<F: Float>(
    pred: &[F],
    target: &[F],
    delta: F,
    d_loss: F,
    d_pred: &mut [F],
    accumulate: bool,
) {
    check_lengths("huber_backward", pred, target, Some(d_pred));
    gradient(pred, target, d_loss, d_pred, accumulate, |d, scale| {
        if d <= -delta {
            -scale * delta
        } else if d >= delta {
            scale * delta
        } else {
            scale * d
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::numeric_gradient;
    use crate::kernels::test_util::{check_both_modes, values};

    /// The three losses by their textbook definitions, in f64.
    fn naive(kind: &str, p: &[f64], t: &[f64], param: f64) -> f64 {
        let mut s = 0.0;
        for (p, t) in p.iter().zip(t) {
            let z = (p - t).abs();
            s += match kind {
                "l1" => z,
                "smooth_l1" if z < param => 0.5 * z * z / param,
                "smooth_l1" => z - 0.5 * param,
                "huber" if z < param => 0.5 * z * z,
                _ => param * (z - 0.5 * param),
            };
        }
        s / p.len() as f64
    }

    /// Differences spread over both sides of the thresholds used below (0.3 to 1.2), none
    /// within 1e-4 of one, where central differences would straddle the kink.
    fn far_from_kinks(n: usize) -> (Vec<f64>, Vec<f64>) {
        let p = values(n, 2.0);
        let mut t = values(n, 4.0);
        for (t, p) in t.iter_mut().zip(&p) {
            for kink in [0.0, 0.3, 0.5, 1.2] {
                if ((*p - *t).abs() - kink).abs() < 1e-4 {
                    *t += 0.01;
                }
            }
        }
        (p, t)
    }

    #[test]
    fn values_and_gradients_match_the_definitions_and_finite_differences() {
        let (mut p, t) = far_from_kinks(24);
        let d = 0.7;
        for (kind, param) in [
            ("l1", 0.0),
            ("smooth_l1", 0.5),
            ("smooth_l1", 1.2),
            ("huber", 0.3),
            ("huber", 1.2),
        ] {
            let loss = match kind {
                "l1" => l1(&p, &t),
                "smooth_l1" => smooth_l1(&p, &t, param),
                _ => huber(&p, &t, param),
            };
            let want = naive(kind, &p, &t, param);
            assert!(
                (loss - want).abs() < 1e-14,
                "{kind} {param}: {loss} vs {want}"
            );
            let num = numeric_gradient(|p| d * naive(kind, p, &t, param), &mut p, 1e-6);
            check_both_modes(&num, 1e-7, 1e-10, kind, |g, acc| match kind {
                "l1" => l1_backward(&p, &t, d, g, acc),
                "smooth_l1" => smooth_l1_backward(&p, &t, param, d, g, acc),
                _ => huber_backward(&p, &t, param, d, g, acc),
            });
            // Both sides of the threshold are exercised.
            let inside = p
                .iter()
                .zip(&t)
                .filter(|(p, t)| (*p - *t).abs() < param)
                .count();
            assert!(
                kind == "l1" || (0 < inside && inside < p.len()),
                "{kind} {param}: {inside}"
            );
        }
    }

    #[test]
    fn the_target_gradient_is_the_prediction_gradient_with_the_two_swapped() {
        let (p, mut t) = far_from_kinks(10);
        let num = numeric_gradient(|t| naive("huber", &p, t, 0.5), &mut t, 1e-6);
        let mut d_t = vec![0.0; t.len()];
        huber_backward(&t, &p, 0.5, 1.0, &mut d_t, false);
        for (a, b) in d_t.iter().zip(&num) {
            assert!((a - b).abs() < 1e-7, "{a} vs {b}");
        }
    }

    #[test]
    fn at_a_threshold_and_at_zero_the_branches_are_pytorchs() {
        // d = ±beta: the forward takes the outer branch (|d| − beta/2 = 0.5 at beta 1), the
        // backward the outer one too (±1); d = 0: l1's gradient is 0.
        let (p, t) = ([1.0f64, -1.0, 0.0], [0.0f64, 0.0, 0.0]);
        assert_eq!(smooth_l1(&p, &t, 1.0), (0.5 + 0.5 + 0.0) / 3.0);
        let mut d = [0.0; 3];
        smooth_l1_backward(&p, &t, 1.0, 3.0, &mut d, false);
        assert_eq!(d, [1.0, -1.0, 0.0]);
        huber_backward(&p, &t, 1.0, 3.0, &mut d, false);
        assert_eq!(d, [1.0, -1.0, 0.0]);
        l1_backward(&p, &t, 3.0, &mut d, false);
        assert_eq!(d, [1.0, -1.0, 0.0]);
    }

    #[test]
    fn f32_agrees_with_f64() {
        let (p, t) = far_from_kinks(16);
        let (pf, tf): (Vec<f32>, Vec<f32>) = (
            p.iter().map(|&v| v as f32).collect(),
            t.iter().map(|&v| v as f32).collect(),
        );
        assert!((huber(&pf, &tf, 0.5) as f64 - huber(&p, &t, 0.5)).abs() < 1e-6);
        assert!((smooth_l1(&pf, &tf, 0.5) as f64 - smooth_l1(&p, &t, 0.5)).abs() < 1e-6);
        assert!((l1(&pf, &tf) as f64 - l1(&p, &t)).abs() < 1e-6);
        assert!(l1::<f64>(&[], &[]).is_nan());
    }
}
