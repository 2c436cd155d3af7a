//! Inverted dropout (PyTorch's `nn.Dropout` in training mode) and its VJP.
//!
//! Each element is kept with probability `1 − p` and scaled by `1 / (1 − p)`, so that the
//! expected output equals the input and inference needs no rescaling (it is the identity).
//! The mask (`0` or `1 / (1 − p)` per element) is what the backward pass needs.

use super::store;
use crate::Float;
use rand::{Rng, RngExt};

/// `y = x ⊙ mask` with a fresh mask: each element independently kept with probability
/// `1 − p` (mask `1 / (1 − p)`) or dropped (mask `0`). `mask` and `y` are overwritten.
///
/// Draws: for `0 < p < 1`, one `rng.random_bool(1 − p)` (in f64) per element in order, so a seeded
/// generator gives the same mask every run. `p = 0` is the identity (mask all ones) and
/// `p = 1` zeroes everything (mask all zeros, `y = x · 0`, no division by zero); neither
/// draws from `rng`, as PyTorch's `dropout` skips its Bernoulli draw in those cases. The
/// mask values are PyTorch's, but its random stream is not reproduced: for the same `p`, the
/// kept elements differ from PyTorch's.
///
/// # Panics
/// If `p` is not in `[0, 1]` (NaN included), or a slice's length differs from `x`'s.
///
/// ```
/// use kiln_runtime::kernels::dropout::dropout_forward;
/// use rand::{rngs::StdRng, SeedableRng};
/// let mut rng = StdRng::seed_from_u64(0);
/// let (mut mask, mut y) = ([0.0f32; 4], [0.0f32; 4]);
/// dropout_forward(&[1.0, 2.0, 3.0, 4.0], 0.5, &mut rng, &mut mask, &mut y);
/// assert!(mask.iter().all(|&m| m == 0.0 || m == 2.0));
/// ```
pub fn dropout_forward<F: Float, R: Rng + ?Sized>(
    x: &[F],
    p: F,
    rng: &mut R,
    mask: &mut [F],
    y: &mut [F],
) {
    // Decided in f64: `1 − p` and its reciprocal are computed there and rounded once.
    let p = p.to_f64();
    assert!(
        (0.0..=1.0).contains(&p),
        "dropout_forward: p must be in [0, 1], got {p}"
    );
    assert_eq!(
        mask.len(),
        x.len(),
        "dropout_forward: mask has the wrong length"
    );
    assert_eq!(y.len(), x.len(), "dropout_forward: y has the wrong length");
    draw_mask(p, rng, mask);
    for ((yv, &xv), &m) in y.iter_mut().zip(x).zip(mask.iter()) {
        *yv = xv * m;
    }
}

/// Fills `mask` as [`dropout_forward`] does for drop probability `p` (in `[0, 1]`), with the
/// same draws.
pub(crate) fn draw_mask<F: Float, R: Rng + ?Sized>(p: f64, rng: &mut R, mask: &mut [F]) {
    if p == 0.0 {
        mask.fill(F::ONE);
    } else if p == 1.0 {
        mask.fill(F::ZERO);
    } else {
        let keep = 1.0 - p;
        let scale = F::from_f64(1.0 / keep);
        for m in mask.iter_mut() {
            *m = if rng.random_bool(keep) {
                scale
            } else {
                F::ZERO
            };
        }
    }
}

/// The VJP of [`dropout_forward`]: `dx = dy ⊙ mask`, written or added when `accumulate`.
///
/// # Panics
/// If the slices' lengths differ (a caller bug).
pub fn dropout_backward<F: Float>(mask: &[F], dy: &[F], dx: &mut [F], accumulate: bool) {
    assert_eq!(
        dy.len(),
        mask.len(),
        "dropout_backward: dy has the wrong length"
    );
    assert_eq!(
        dx.len(),
        mask.len(),
        "dropout_backward: dx has the wrong length"
    );
    for ((slot, &g), &m) in dx.iter_mut().zip(dy).zip(mask) {
        store(slot, g * m, accumulate);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::numeric_gradient;
    use crate::kernels::test_util::{check_both_modes, values};
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn run(x: &[f64], p: f64, seed: u64) -> (Vec<f64>, Vec<f64>) {
        let mut rng = StdRng::seed_from_u64(seed);
        let (mut mask, mut y) = (vec![f64::NAN; x.len()], vec![f64::NAN; x.len()]);
        dropout_forward(x, p, &mut rng, &mut mask, &mut y);
        (mask, y)
    }

    #[test]
    fn mask_statistics() {
        let n = 100_000;
        let x = values(n, 1.0);
        for &p in &[0.1, 0.3, 0.5, 0.9] {
            let (mask, y) = run(&x, p, 11);
            let scale = 1.0 / (1.0 - p);
            assert!(mask.iter().all(|&m| m == 0.0 || m == scale), "p = {p}");
            let kept = mask.iter().filter(|&&m| m != 0.0).count() as f64 / n as f64;
            // Binomial: standard deviation √(p(1 − p)/n) ≤ 0.0016; allow 5 of them.
            let sd = (p * (1.0 - p) / n as f64).sqrt();
            assert!((kept - (1.0 - p)).abs() < 5.0 * sd, "p = {p}: kept {kept}");
            // The mask averages to 1, so dropout preserves the expectation.
            let mean = mask.iter().sum::<f64>() / n as f64;
            assert!(
                (mean - 1.0).abs() < 5.0 * sd * scale,
                "p = {p}: mask mean {mean}"
            );
            for ((&yv, &xv), &m) in y.iter().zip(&x).zip(&mask) {
                assert_eq!(yv, xv * m);
            }
        }
    }

    #[test]
    fn no_long_runs_in_the_mask() {
        // Independent draws: with p = 0.5 a run of 40 equal decisions has probability ~1e-12
        // per position, so any such run means the draws are not independent.
        let (mask, _) = run(&values(10_000, 2.0), 0.5, 3);
        let mut run_len = 1;
        for w in mask.windows(2) {
            run_len = if w[0] == w[1] { run_len + 1 } else { 1 };
            assert!(run_len < 40);
        }
    }

    #[test]
    fn seeded_masks_are_reproducible() {
        let x = values(1000, 3.0);
        let (mask_a, y_a) = run(&x, 0.4, 99);
        let (mask_b, y_b) = run(&x, 0.4, 99);
        assert_eq!((&mask_a, &y_a), (&mask_b, &y_b));
        let (mask_c, _) = run(&x, 0.4, 100);
        assert_ne!(mask_a, mask_c);
        // Two calls on one generator continue its stream: different masks.
        let mut rng = StdRng::seed_from_u64(99);
        let (mut m1, mut m2, mut y) = (vec![0.0; 1000], vec![0.0; 1000], vec![0.0; 1000]);
        dropout_forward(&x, 0.4, &mut rng, &mut m1, &mut y);
        dropout_forward(&x, 0.4, &mut rng, &mut m2, &mut y);
        assert_eq!(m1, mask_a);
        assert_ne!(m1, m2);
    }

    #[test]
    fn p_zero_is_the_identity_and_p_one_zeroes_without_drawing() {
        let x = values(50, 4.0);
        let (mask, y) = run(&x, 0.0, 5);
        assert_eq!((mask, y), (vec![1.0; 50], x.clone()));
        let (mask, y) = run(&x, 1.0, 5);
        assert_eq!((mask, y), (vec![0.0; 50], vec![0.0; 50]));
        // Neither consumed randomness: the generator is where a fresh one starts.
        for p in [0.0, 1.0] {
            let mut rng = StdRng::seed_from_u64(5);
            let (mut mask, mut y) = (vec![0.0f32; 50], vec![0.0f32; 50]);
            let xf: Vec<f32> = x.iter().map(|&v| v as f32).collect();
            dropout_forward(&xf, p as f32, &mut rng, &mut mask, &mut y);
            assert_eq!(
                rng.random::<u64>(),
                StdRng::seed_from_u64(5).random::<u64>()
            );
        }
    }

    #[test]
    #[should_panic(expected = "p must be in [0, 1]")]
    fn invalid_probability_panics() {
        run(&[1.0], 1.5, 0);
    }

    #[test]
    fn backward_matches_finite_differences() {
        let mut x = values(40, 5.0);
        let (mask, _) = run(&x, 0.3, 8);
        let r = values(40, 6.0);
        // With the mask fixed, y = x ⊙ mask is linear in x.
        let num = numeric_gradient(
            |x| {
                x.iter()
                    .zip(&mask)
                    .zip(&r)
                    .map(|((a, m), r)| a * m * r)
                    .sum()
            },
            &mut x,
            1e-6,
        );
        // Linear, so the only error is the quotient's rounding noise (~u·|L|/ε ≈ 1e-9).
        check_both_modes(&num, 1e-6, 1e-8, "dropout dx", |dx, acc| {
            dropout_backward(&mask, &r, dx, acc)
        });
    }
}
