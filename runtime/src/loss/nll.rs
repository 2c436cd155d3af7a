//! PyTorch's `nll_loss`: the negative log-likelihood of each label read off log-probabilities
//! (a `log_softmax`'s output), averaged with the class weights over the counted positions.
//! With `log_softmax` before it, it is [`cross_entropy`](super::cross_entropy) written in two
//! steps, as PyTorch's own MNIST example writes it.
//!
//! The layout is `[batch, classes, pixels]`: `pixels` is 1 for `[rows, classes]` (sequence
//! positions are rows) and `H·W` for per-pixel `[B, C, H, W]` inputs with `[B, H, W]`
//! labels, as `nll_loss2d`. The options are [`CrossEntropyOptions`]'s `ignore` and `weight`
//! (NLL has no label smoothing).

use super::{check_cross_entropy, CrossEntropyOptions};
use crate::kernels::store;
use crate::Float;

/// Checks the sizes and options, as the cross-entropy kernels do.
#[track_caller]
fn check<F>(
    what: &str,
    log_probs: &[F],
    (batch, classes, pixels): (usize, usize, usize),
    labels: &[usize],
    options: &CrossEntropyOptions<'_>,
) {
    check_cross_entropy(
        what,
        log_probs.len(),
        batch * pixels,
        classes,
        labels,
        options.ignore,
    );
    options.check(what, classes);
    assert!(
        options.label_smoothing == 0.0,
        "{what}: NLL takes no label smoothing"
    );
}

/// The counted positions in `[batch, pixels]` order, each as (label, the index of its
/// log-probability, its weight).
fn counted<'a>(
    (batch, classes, pixels): (usize, usize, usize),
    labels: &'a [usize],
    options: &'a CrossEntropyOptions<'_>,
) -> impl Iterator<Item = (usize, f64)> + 'a {
    (0..batch * pixels).filter_map(move |position| {
        let label = labels[position];
        if Some(label) == options.ignore {
            return None;
        }
        let (sample, pixel) = (position / pixels, position % pixels);
        let weight = options.weight.map_or(1.0, |w| w[label]);
        Some(((sample * classes + label) * pixels + pixel, weight))
    })
}

/// `−Σ w[y]·log_probs[y] / Σ w[y]` over the counted positions (labels other than
/// `options.ignore`) of `[batch, classes, pixels]` log-probabilities: PyTorch's
/// `nll_loss(reduction='mean')`. NaN when no position is counted (or the counted weights sum
/// to 0), as in PyTorch.
///
/// # Panics
/// If the lengths disagree with the sizes, a label other than `options.ignore` is not below
/// `classes`, there is not one weight per class, or `options` asks for label smoothing.
///
/// ```
/// use kiln_runtime::loss::{nll, CrossEntropyOptions};
/// let lp = [-0.5f64, -1.0, -2.0, -0.25];
/// let plain = CrossEntropyOptions { ignore: None, weight: None, label_smoothing: 0.0 };
/// assert_eq!(nll(&lp, 2, 2, 1, &[1, 0], &plain), (1.0 + 2.0) / 2.0);
/// let weighted = CrossEntropyOptions { weight: Some(&[3.0, 1.0]), ..plain };
/// assert_eq!(nll(&lp, 2, 2, 1, &[1, 0], &weighted), (1.0 + 3.0 * 2.0) / 4.0);
/// ```
pub fn nll<F: Float>(
    log_probs: &[F],
    batch: usize,
    classes: usize,
    pixels: usize,
    labels: &[usize],
    options: &CrossEntropyOptions<'_>,
) -> F {
    let sizes = (batch, classes, pixels);
    check("nll", log_probs, sizes, labels, options);
    let (mut total, mut weights) = (F::ZERO, F::ZERO);
    for (at, weight) in counted(sizes, labels, options) {
        let w = F::from_f64(weight);
        total -= w * log_probs[at];
        weights += w;
    }
    total / weights
}

/// Gradient of [`nll`]: `−w[y] / W · d_loss` at each counted position's label, `W` the
/// counted weights' sum, and 0 everywhere else (left unchanged when `accumulate`), every
/// element when nothing is counted.
///
/// # Panics
/// As [`nll`], or if `d_log_probs` is not as long as `log_probs`.
///
/// ```
/// use kiln_runtime::loss::{nll_backward, CrossEntropyOptions};
/// let plain = CrossEntropyOptions { ignore: Some(0), weight: None, label_smoothing: 0.0 };
/// let mut d = [9.0f64; 4];
/// nll_backward(&[-0.5, -1.0, -2.0, -0.25], 2, 2, 1, &[1, 0], &plain, 1.0, &mut d, false);
/// assert_eq!(d, [0.0, -1.0, 0.0, 0.0]);
/// ```
#[allow(clippy::too_many_arguments)]
pub fn nll_backward<F: Float>(
    log_probs: &[F],
    batch: usize,
    classes: usize,
    pixels: usize,
    labels: &[usize],
    options: &CrossEntropyOptions<'_>,
    d_loss: F,
    d_log_probs: &mut [F],
    accumulate: bool,
) {
    let sizes = (batch, classes, pixels);
    check("nll_backward", log_probs, sizes, labels, options);
    assert_eq!(
        d_log_probs.len(),
        log_probs.len(),
        "nll_backward: the gradient buffer has the wrong length"
    );
    if !accumulate {
        d_log_probs.fill(F::ZERO);
    }
    let weights: F = counted(sizes, labels, options)
        .map(|(_, w)| F::from_f64(w))
        .sum();
    for (at, weight) in counted(sizes, labels, options) {
        let g = -(F::from_f64(weight) / weights) * d_loss;
        store(&mut d_log_probs[at], g, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::numeric_gradient;
    use crate::kernels::test_util::values;

    /// The definition, element by element, for `[batch, classes, pixels]`.
    fn naive(
        lp: &[f64],
        sizes: (usize, usize, usize),
        labels: &[usize],
        ignore: Option<usize>,
        w: Option<&[f64]>,
    ) -> f64 {
        let (batch, classes, pixels) = sizes;
        let (mut total, mut weights) = (0.0, 0.0);
        for b in 0..batch {
            for p in 0..pixels {
                let y = labels[b * pixels + p];
                if Some(y) == ignore {
                    continue;
                }
                let wy = w.map_or(1.0, |w| w[y]);
                total -= wy * lp[(b * classes + y) * pixels + p];
                weights += wy;
            }
        }
        total / weights
    }

    #[test]
    fn value_and_gradient_match_the_definition_with_weights_ignore_and_pixels() {
        let weight = [0.5, 2.0, 1.0];
        for (sizes, ignore, w) in [
            ((4, 3, 1), None, None),
            ((4, 3, 1), Some(1), Some(&weight[..])),
            ((2, 3, 5), Some(7), Some(&weight[..])),
        ] {
            let (batch, classes, pixels) = sizes;
            let mut lp = values(batch * classes * pixels, 2.0);
            let labels: Vec<usize> = (0..batch * pixels)
                .map(|i| {
                    if i % 4 == 3 {
                        ignore.unwrap_or(0)
                    } else {
                        (i * 7) % classes
                    }
                })
                .collect();
            let options = CrossEntropyOptions {
                ignore,
                weight: w,
                label_smoothing: 0.0,
            };
            let loss = nll(&lp, batch, classes, pixels, &labels, &options);
            let want = naive(&lp, sizes, &labels, ignore, w);
            assert!((loss - want).abs() < 1e-14, "{sizes:?}: {loss} vs {want}");
            let d = 0.7;
            let num =
                numeric_gradient(|lp| d * naive(lp, sizes, &labels, ignore, w), &mut lp, 1e-6);
            let mut got = vec![f64::NAN; lp.len()];
            nll_backward(
                &lp, batch, classes, pixels, &labels, &options, d, &mut got, false,
            );
            for (g, n) in got.iter().zip(&num) {
                assert!((g - n).abs() < 1e-8, "{sizes:?}: {g} vs {n}");
            }
            // Accumulating adds the same gradient to what is there.
            let mut acc = vec![1.0; lp.len()];
            nll_backward(
                &lp, batch, classes, pixels, &labels, &options, d, &mut acc, true,
            );
            for (a, g) in acc.iter().zip(&got) {
                assert!((a - 1.0 - g).abs() < 1e-15);
            }
        }
    }

    #[test]
    fn nothing_counted_is_nan_with_zero_gradient() {
        let options = CrossEntropyOptions {
            ignore: Some(0),
            weight: None,
            label_smoothing: 0.0,
        };
        let lp = [-1.0f64, -2.0];
        assert!(nll(&lp, 1, 2, 1, &[0], &options).is_nan());
        let mut d = [5.0; 2];
        nll_backward(&lp, 1, 2, 1, &[0], &options, 1.0, &mut d, false);
        assert_eq!(d, [0.0, 0.0]);
    }
}
