//! Binary cross-entropy on probabilities, PyTorch's `binary_cross_entropy` (`nn.BCELoss`) with
//! `reduction='mean'`: for a prediction `p` in `[0, 1]` (a sigmoid's output) and a target `t`,
//! `−w·(t·log p + (1 − t)·log(1 − p))`, each log clamped at −100 as PyTorch clamps it, so a
//! confident wrong prediction costs 100 rather than infinity.
//!
//! The forward and both gradients follow PyTorch's CPU kernels: the prediction's gradient
//! `(p − t) / max(p·(1 − p), ε)` with PyTorch's `ε` (`1e-12` as a `float`), then the weight,
//! then the mean's division; the target's `−logit(p)·w / n`. `weight` holds one factor for
//! every element or one per column of the last axis (cycled), as `bce_with_logits`'s.
//! [`bce_with_logits`](super::bce_with_logits) is the stabler choice when the model ends in a
//! sigmoid; this is for models written with `nn.BCELoss`.

use super::BceOptions;
use crate::kernels::store;
use crate::{Error, Float, Result};

/// PyTorch's `EPSILON` of `binary_cross_entropy_backward`: `1e-12` as an f32.
const EPSILON: f32 = 1e-12;

#[track_caller]
fn check<F>(what: &str, probs: &[F], target: &[F], weight: Option<&[f64]>, out: Option<&[F]>) {
    assert_eq!(
        probs.len(),
        target.len(),
        "{what}: prediction and target lengths differ"
    );
    let options = BceOptions {
        pos_weight: None,
        weight,
    };
    options.check(what, probs.len());
    if let Some(out) = out {
        assert_eq!(
            out.len(),
            probs.len(),
            "{what}: gradient buffer has the wrong length"
        );
    }
}

/// [`Error::Probability`] for the first of `probs` outside [0, 1] (or NaN), as PyTorch's
/// `binary_cross_entropy` raises: the generated code checks a prediction before [`bce`].
/// `layer` names the loss in the message.
///
/// ```
/// use kiln_runtime::loss::check_probabilities;
/// assert!(check_probabilities(&[0.0f32, 0.5, 1.0], "loss").is_ok());
/// let err = check_probabilities(&[0.5f32, 2.5], "loss").unwrap_err();
/// assert!(err.to_string().contains("2.5 at element 1"));
/// ```
pub fn check_probabilities<F: Float>(probs: &[F], layer: &'static str) -> Result<()> {
    // Written so that NaN fails, as PyTorch's `input >= 0 && input <= 1`.
    let outside = probs.iter().position(|&p| !(p >= F::ZERO && p <= F::ONE));
    match outside {
        None => Ok(()),
        Some(position) => Err(Error::Probability {
            layer,
            position,
            value: probs[position].to_f64(),
        }),
    }
}

/// Mean binary cross-entropy of probabilities `probs` against `target` (see the module docs).
/// A probability outside `[0, 1]` gives NaN; the generated code returns
/// [`check_probabilities`]'s error first, as PyTorch raises one.
///
/// # Panics
/// If the lengths differ, or the weights do not divide the elements into rows (caller bugs).
///
/// ```
/// use kiln_runtime::loss::bce;
/// let loss = bce(&[0.9f64, 0.2], &[1.0, 0.0], None);
/// assert!((loss - (-(0.9f64.ln()) - 0.8f64.ln()) / 2.0).abs() < 1e-15);
/// // Certainty in the wrong class costs 100, PyTorch's clamp, not infinity.
/// assert_eq!(bce(&[0.0f64], &[1.0], None), 100.0);
/// ```
pub fn bce<F: Float>(probs: &[F], target: &[F], weight: Option<&[f64]>) -> F {
    check("bce", probs, target, weight, None);
    let floor = F::from_f64(-100.0);
    let total: F = probs
        .iter()
        .zip(target)
        .enumerate()
        .map(|(i, (&p, &t))| {
            let log_p = p.ln().max(floor);
            let log_q = (-p).ln_1p().max(floor);
            // PyTorch's order: (t − 1)·log(1 − p) − t·log p, then the weight.
            ((t - F::ONE) * log_q - t * log_p) * BceOptions::at::<F>(weight, i)
        })
        .sum();
    total / F::from_usize(probs.len())
}

/// Gradient of [`bce`] with respect to the probabilities: written (or added, with
/// `accumulate`) into `d_probs`.
///
/// # Panics
/// As [`bce`], or if `d_probs` has another length.
pub fn bce_backward<F: Float>(
    probs: &[F],
    target: &[F],
    weight: Option<&[f64]>,
    d_loss: F,
    d_probs: &mut [F],
    accumulate: bool,
) {
    check("bce_backward", probs, target, weight, Some(d_probs));
    let (eps, n) = (F::from_f64(f64::from(EPSILON)), F::from_usize(probs.len()));
    for (i, ((slot, &p), &t)) in d_probs.iter_mut().zip(probs).zip(target).enumerate() {
        let g = d_loss * (p - t) / ((F::ONE - p) * p).max(eps);
        store(slot, g * BceOptions::at::<F>(weight, i) / n, accumulate);
    }
}

/// Gradient of [`bce`] with respect to the target, `−logit(p)·w / n` (PyTorch's
/// `binary_cross_entropy_target_backward`): written (or added) into `d_target`.
///
/// # Panics
/// As [`bce`], or if `d_target` has another length.
pub fn bce_target_backward<F: Float>(
    probs: &[F],
    target: &[F],
    weight: Option<&[f64]>,
    d_loss: F,
    d_target: &mut [F],
    accumulate: bool,
) {
    check("bce_target_backward", probs, target, weight, Some(d_target));
    let n = F::from_usize(probs.len());
    for (i, (slot, &p)) in d_target.iter_mut().zip(probs).enumerate() {
        let logit = (p / (F::ONE - p)).ln();
        store(
            slot,
            -logit * d_loss * BceOptions::at::<F>(weight, i) / n,
            accumulate,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::numeric_gradient;

    /// Values PyTorch 2.15 gives (float64) for
    /// `binary_cross_entropy(p, t, weight=w)` with p = [0.2, 0.7, 0.999, 1e-30, 0.5],
    /// t = [0, 1, 0.3, 0.6, 0.5], w = [1, 2, 0.5, 1, 3], and its two gradients.
    #[test]
    fn matches_pytorch_at_the_clamps_and_the_epsilon() {
        let p = [0.2, 0.7, 0.999, 1e-30, 0.5];
        let t = [0.0, 1.0, 0.3, 0.6, 0.5];
        let w = [1.0, 2.0, 0.5, 1.0, 3.0];
        let loss: f64 = bce(&p, &t, Some(&w));
        assert!((loss - 9.376066215491623).abs() < 1e-14, "{loss}");
        let mut dp = [0.0; 5];
        bce_backward(&p, &t, Some(&w), 1.0, &mut dp, false);
        let want = [
            0.24999999999999994,
            -0.5714285714285714,
            69.96996996996991,
            -120000000479.49634,
            0.0,
        ];
        for (g, w) in dp.iter().zip(want) {
            assert!((g - w).abs() <= 1e-13 * w.abs().max(1.0), "{g} against {w}");
        }
        let mut dt = [0.0; 5];
        bce_target_backward(&p, &t, Some(&w), 1.0, &mut dt, false);
        let want = [
            0.2772588722239781,
            -0.3389191441548814,
            -0.6906754778648553,
            13.815510557964274,
            0.0,
        ];
        for (g, w) in dt.iter().zip(want) {
            assert!((g - w).abs() <= 1e-13 * w.abs().max(1.0), "{g} against {w}");
        }
    }

    #[test]
    fn gradients_are_the_losss_central_differences() {
        let t = [0.0, 1.0, 0.3, 0.6, 0.25, 0.9];
        let w = [1.5, 0.5];
        let mut p = [0.2, 0.7, 0.6, 0.4, 0.55, 0.35];
        let num = numeric_gradient(|p| bce(p, &t, Some(&w)), &mut p, 1e-6);
        let mut dp = [1.0; 6];
        bce_backward(&p, &t, Some(&w), 2.0, &mut dp, true);
        for (g, n) in dp.iter().zip(&num) {
            assert!((g - 1.0 - 2.0 * n).abs() < 1e-8, "{g} against {n}");
        }
        let num = numeric_gradient(|t| bce(&p, t, Some(&w)), &mut t.clone(), 1e-6);
        let mut dt = [0.0; 6];
        bce_target_backward(&p, &t, Some(&w), 1.0, &mut dt, false);
        for (g, n) in dt.iter().zip(&num) {
            assert!((g - n).abs() < 1e-8, "{g} against {n}");
        }
    }
}
