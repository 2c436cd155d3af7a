//! Inverted dropout (PyTorch's `nn.Dropout` in training mode) and its VJP.
//!
//! Each element is kept with probability `1 − p` and scaled by `1 / (1 − p)`, so that the
//! expected output equals the input and inference needs no rescaling (it is the identity).
//! The mask (`0` or `1 / (1 − p)` per element) is what the backward pass needs.

use super::parallel::{for_each_chunk, SharedMut};
use super::store;
use crate::Float;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{Rng, SeedableRng};

/// `y = x ⊙ mask` with a fresh mask: each element independently kept with probability
/// `1 − p` (mask `1 / (1 − p)`) or dropped (mask `0`). `mask` and `y` are overwritten.
///
/// Draws: for `0 < p < 1`, one `u64` from `rng`, the seed of the whole mask, so a seeded
/// generator gives the same mask every run, on one thread or two. The mask's blocks of 4,096
/// elements each come from their own xoshiro256++, seeded with that seed plus the block's
/// index, two 32-bit draws per 64-bit output (the low half first; an odd count ends on a
/// fresh output's low half), an element kept when its draw is below `(1 − p)·2³²`. `p = 0` is
/// the identity (mask all ones) and `p = 1` zeroes everything (mask all zeros, `y = x · 0`,
/// no division by zero); neither draws from `rng`, as PyTorch's `dropout` skips its Bernoulli
/// draw in those cases. The mask values are PyTorch's, but its random stream is not
/// reproduced: for the same `p`, the kept elements differ from PyTorch's.
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

/// Elements of a dropout mask drawn from one generator of their own (see [`draw_mask`]).
pub(crate) const MASK_BLOCK: usize = 4096;

/// Fills `mask` as [`dropout_forward`] does for drop probability `p` (in `[0, 1]`): for
/// `0 < p < 1`, one `u64` from `rng` seeds the mask, whose blocks of [`MASK_BLOCK`] elements
/// are drawn by [`draw_seeded_mask`] (block `b` with unit `b`), the two threads taking blocks
/// as they come free. Each block depends on the seed alone, so the mask is the same bits
/// whichever thread draws which block. One `random_bool` per element from `rng` (a ChaCha
/// generator, reached through a `dyn` call from a model's step) cost 4.2–4.7 ns an element
/// on an AVX-512 Xeon core, a fifth of a small GPT's step with dropout after each block.
pub(crate) fn draw_mask<F: Float, R: Rng + ?Sized>(p: f64, rng: &mut R, mask: &mut [F]) {
    if p == 0.0 || p == 1.0 {
        return draw_seeded_mask(p, 0, 0, mask);
    }
    let seed = rng.next_u64();
    let len = mask.len();
    let blocks = len.div_ceil(MASK_BLOCK);
    let shared = SharedMut::new(mask);
    for_each_chunk(blocks, |block, _thread| {
        let start = block * MASK_BLOCK;
        let end = (start + MASK_BLOCK).min(len);
        // SAFETY: `for_each_chunk` hands each block to one thread once, and the blocks'
        // ranges are disjoint.
        draw_seeded_mask(p, seed, block, unsafe { shared.range(start..end) });
    });
}

/// Draws the dropout mask of unit `unit` of a mask seeded with `seed` (a block of a plain
/// dropout's mask, a (sequence, head) pair's attention weights): each element kept
/// (`1 / (1 − p)`) with probability `1 − p`, or dropped (`0`). The unit's own generator,
/// xoshiro256++ seeded from `seed + unit`, gives two 32-bit draws per 64-bit output (an odd
/// count ends on a fresh output's low half), each compared with `(1 − p)·2³²`. A mask is not
/// a secret: a cryptographic generator was twice as slow. `p = 0` gives all ones and `p = 1`
/// all zeros, without drawing.
pub(crate) fn draw_seeded_mask<F: Float>(p: f64, seed: u64, unit: usize, mask: &mut [F]) {
    if p == 0.0 {
        mask.fill(F::ONE);
        return;
    }
    if p == 1.0 {
        mask.fill(F::ZERO);
        return;
    }
    let keep = 1.0 - p;
    let scale = F::from_f64(1.0 / keep);
    // `keep < 1`, so the threshold is below 2³²: a draw at or above it drops.
    let threshold = (keep * 4_294_967_296.0) as u64;
    let pick = |draw: u64| if draw < threshold { scale } else { F::ZERO };
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed.wrapping_add(unit as u64));
    let mut pairs = mask.chunks_exact_mut(2);
    for pair in &mut pairs {
        let x = rng.next_u64();
        pair[0] = pick(x & 0xffff_ffff);
        pair[1] = pick(x >> 32);
    }
    for m in pairs.into_remainder() {
        *m = pick(rng.next_u64() & 0xffff_ffff);
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
    use rand::RngExt;

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

    /// The documented draws: one `u64` of the caller's generator seeds the mask, and block `b`
    /// of `MASK_BLOCK` elements is `draw_seeded_mask` of unit `b` (here three blocks, the last
    /// ragged and of odd length).
    #[test]
    fn mask_blocks_are_seeded_from_one_draw() {
        let len = 2 * MASK_BLOCK + 1001;
        let x = values(len, 7.0);
        let (mask, _) = run(&x, 0.25, 42);
        let seed = StdRng::seed_from_u64(42).random::<u64>();
        let mut want = vec![0.0f64; len];
        for (b, block) in want.chunks_mut(MASK_BLOCK).enumerate() {
            draw_seeded_mask(0.25, seed, b, block);
        }
        assert_eq!(mask, want);
        // The blocks differ from one another.
        assert_ne!(mask[..MASK_BLOCK], mask[MASK_BLOCK..2 * MASK_BLOCK]);
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
