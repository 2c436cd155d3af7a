//! Kullback–Leibler divergence, PyTorch's `kl_div` (`nn.KLDivLoss`): the prediction is
//! log-probabilities `x` (a `log_softmax`'s output), the target probabilities `t`, and each
//! element contributes `t·(log t − x)`, with `0·log 0 = 0` as PyTorch's `xlogy` takes it;
//! with `log_target` the target is given as log-probabilities `s` and the element is
//! `exp(s)·(s − x)`.
//!
//! The sum is reduced as PyTorch's `reduction`: `mean` divides by the number of elements
//! (PyTorch's default, which is not the divergence of the rows' distributions), `batchmean`
//! by the batch, the first axis (the divergence per sample, what PyTorch recommends), `sum`
//! not at all.
//!
//! Both arguments are differentiable, with PyTorch's gradients: `−t` (or `−exp(s)`) for the
//! prediction; for the target `log t + 1 − x`, which PyTorch's autograd makes NaN where
//! `t = 0` (its `xlogy` derivative divides `t` by `t`), and `exp(s)·(s + 1 − x)` with
//! `log_target`. Each is scaled by the reduction's `1 / divisor`, formed in f64 and rounded
//! once, and by the incoming adjoint.

use crate::kernels::store;
use crate::Float;

/// How [`kl_div`] reduces the elements' sum, PyTorch's `reduction` of `kl_div`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KlReduction {
    /// The mean over every element (PyTorch's default `reduction='mean'`).
    Mean,
    /// The sum divided by the batch, the size of the first axis (`reduction='batchmean'`).
    BatchMean {
        /// The size of the first axis.
        batch: usize,
    },
    /// The sum (`reduction='sum'`).
    Sum,
}

impl KlReduction {
    /// What the sum is divided by, for `len` elements.
    fn divisor(self, len: usize) -> usize {
        match self {
            KlReduction::Mean => len,
            KlReduction::BatchMean { batch } => batch,
            KlReduction::Sum => 1,
        }
    }
}

/// [`kl_div`]'s options: the reduction and whether the target holds log-probabilities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KlDivOptions {
    /// How the sum is reduced.
    pub reduction: KlReduction,
    /// The target holds log-probabilities (PyTorch's `log_target=True`).
    pub log_target: bool,
}

#[track_caller]
fn check<F>(what: &str, input: &[F], target: &[F], out: Option<&[F]>) {
    assert_eq!(
        input.len(),
        target.len(),
        "{what}: prediction and target lengths differ"
    );
    if let Some(out) = out {
        assert_eq!(
            out.len(),
            input.len(),
            "{what}: gradient buffer has the wrong length"
        );
    }
}

/// One element's term, in PyTorch's order of operations: `xlogy(t, t) − t·x`, or
/// `exp(s)·(s − x)` with a log-target.
#[inline]
fn term<F: Float>(x: F, t: F, log_target: bool) -> F {
    if log_target {
        t.exp() * (t - x)
    } else {
        // xlogy(t, t): 0 where t is 0 (NaN stays NaN), t·log t elsewhere.
        let t_log_t = if t == F::ZERO { F::ZERO } else { t * t.ln() };
        t_log_t - t * x
    }
}

/// The KL divergence of `target` from the prediction `input` (log-probabilities), reduced as
/// `options` say (see the module docs). A sum over nothing is 0, its mean NaN, as PyTorch's.
///
/// # Panics
/// If the lengths differ (a caller bug).
///
/// ```
/// use kiln_runtime::loss::{kl_div, KlDivOptions, KlReduction};
/// // One sample, two classes: the target (0.25, 0.75) against predicted (0.5, 0.5).
/// let x = [0.5f64.ln(), 0.5f64.ln()];
/// let options = KlDivOptions { reduction: KlReduction::BatchMean { batch: 1 }, log_target: false };
/// let want = 0.25 * (0.25f64 / 0.5).ln() + 0.75 * (0.75f64 / 0.5).ln();
/// assert!((kl_div(&x, &[0.25, 0.75], &options) - want).abs() < 1e-15);
/// // A zero target probability contributes nothing, whatever the prediction there.
/// assert_eq!(kl_div(&[-1e30f64], &[0.0], &options), 0.0);
/// ```
pub fn kl_div<F: Float>(input: &[F], target: &[F], options: &KlDivOptions) -> F {
    check("kl_div", input, target, None);
    let total: F = input
        .iter()
        .zip(target)
        .map(|(&x, &t)| term(x, t, options.log_target))
        .sum();
    total / F::from_usize(options.reduction.divisor(input.len()))
}

/// The reduction's `1 / divisor`, rounded once, times the incoming adjoint.
fn scale<F: Float>(options: &KlDivOptions, len: usize, d_loss: F) -> F {
    F::from_f64(1.0 / options.reduction.divisor(len) as f64) * d_loss
}

/// Gradient of [`kl_div`] with respect to the prediction, `−t` (or `−exp(s)`) scaled by the
/// reduction: written (or added, with `accumulate`) into `d_input`.
///
/// # Panics
/// As [`kl_div`], or if `d_input` has another length.
pub fn kl_div_backward<F: Float>(
    input: &[F],
    target: &[F],
    options: &KlDivOptions,
    d_loss: F,
    d_input: &mut [F],
    accumulate: bool,
) {
    check("kl_div_backward", input, target, Some(d_input));
    let g = scale(options, input.len(), d_loss);
    for (slot, &t) in d_input.iter_mut().zip(target) {
        let weight = if options.log_target { t.exp() } else { t };
        store(slot, -(weight * g), accumulate);
    }
}

/// Gradient of [`kl_div`] with respect to the target: `log t + 1 − x` (NaN where `t = 0`, as
/// PyTorch's autograd gives it), or `exp(s)·(s + 1 − x)` with a log-target, scaled by the
/// reduction: written (or added, with `accumulate`) into `d_target`.
///
/// # Panics
/// As [`kl_div`], or if `d_target` has another length.
pub fn kl_div_target_backward<F: Float>(
    input: &[F],
    target: &[F],
    options: &KlDivOptions,
    d_loss: F,
    d_target: &mut [F],
    accumulate: bool,
) {
    check("kl_div_target_backward", input, target, Some(d_target));
    let g = scale(options, input.len(), d_loss);
    for ((slot, &x), &t) in d_target.iter_mut().zip(input).zip(target) {
        let d = if options.log_target {
            // d/ds exp(s)·(s − x) = exp(s)·(s − x) + exp(s).
            let e = t.exp();
            e * (t - x) + e
        } else {
            // PyTorch's xlogy backward: log t from the first argument (0 where t = 0),
            // t / t from the second (NaN there), then −x from the product.
            let from_log = if t == F::ZERO { F::ZERO } else { t.ln() };
            // `t / t` on purpose: 1, or NaN where PyTorch's is (t = 0, ±∞, NaN).
            #[allow(clippy::eq_op)]
            let from_ratio = t / t;
            from_log + from_ratio - x
        };
        store(slot, d * g, accumulate);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::numeric_gradient;

    const OPTIONS: [KlDivOptions; 4] = [
        KlDivOptions {
            reduction: KlReduction::Mean,
            log_target: false,
        },
        KlDivOptions {
            reduction: KlReduction::BatchMean { batch: 2 },
            log_target: false,
        },
        KlDivOptions {
            reduction: KlReduction::Sum,
            log_target: true,
        },
        KlDivOptions {
            reduction: KlReduction::BatchMean { batch: 2 },
            log_target: true,
        },
    ];

    /// Values PyTorch 2.15 gives (float64) for `F.kl_div(x, t, reduction=r, log_target=l)`
    /// with x = [-1.2, -0.4, -2.0, -0.1, -3.0, -0.05], t = [0.3, 0.7, 0.0, 0.9, 0.1, 0.0]
    /// (and with l, s = [-1.2, -0.36, -2.3, -0.1, -2.3, -5.0]), two rows of three.
    #[test]
    fn matches_pytorch() {
        let x = [-1.2, -0.4, -2.0, -0.1, -3.0, -0.05];
        let t = [0.3, 0.7, 0.0, 0.9, 0.1, 0.0];
        let s = [-1.2, -0.36, -2.3, -0.1, -2.3, -5.0];
        let cases = [
            (OPTIONS[0], &t, 0.015675454092276383),
            (OPTIONS[1], &t, 0.047026362276829145),
            (OPTIONS[2], &s, 0.03465775288648976),
            (OPTIONS[3], &s, 0.01732887644324488),
        ];
        for (options, target, want) in cases {
            let got: f64 = kl_div(&x, target, &options);
            assert!(
                (got - want).abs() < 1e-15,
                "{options:?}: {got} against {want}"
            );
        }
    }

    #[test]
    fn zero_target_terms_vanish_and_their_target_gradient_is_nan() {
        let options = OPTIONS[0];
        assert_eq!(kl_div(&[-5.0f64, -0.1], &[0.0, 1.0], &options), 0.05);
        let mut dt = [0.0f64; 2];
        kl_div_target_backward(&[-5.0, -0.1], &[0.0, 1.0], &options, 1.0, &mut dt, false);
        assert!(dt[0].is_nan());
        assert!((dt[1] - 0.55).abs() < 1e-15);
    }

    #[test]
    fn gradients_are_the_losss_central_differences() {
        let mut x = [-1.2, -0.4, -2.0, -0.1, -3.0, -0.05];
        // Positive targets: the target gradient is NaN at 0 (see the test above).
        let t = [0.3, 0.7, 0.2, 0.9, 0.1, 0.4];
        let s = [-1.2, -0.36, -2.3, -0.1, -2.3, -5.0];
        for options in OPTIONS {
            let target = if options.log_target { s } else { t };
            let num = numeric_gradient(|x| kl_div(x, &target, &options), &mut x, 1e-6);
            let mut dx = [1.0; 6];
            kl_div_backward(&x, &target, &options, 2.0, &mut dx, true);
            for (g, n) in dx.iter().zip(&num) {
                assert!(
                    (g - 1.0 - 2.0 * n).abs() < 1e-8,
                    "{options:?}: {g} against {n}"
                );
            }
            let num = numeric_gradient(|t| kl_div(&x, t, &options), &mut target.clone(), 1e-6);
            let mut dt = [0.0; 6];
            kl_div_target_backward(&x, &target, &options, 1.0, &mut dt, false);
            for (g, n) in dt.iter().zip(&num) {
                assert!((g - n).abs() < 1e-7, "{options:?}: {g} against {n}");
            }
        }
    }
}
