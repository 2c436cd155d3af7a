//! Row reductions (maximum, sum, dot product) in a fixed number of interleaved partial
//! results, for the row loops run by [`run_fast`](super::dispatch::run_fast): a running sum
//! waits on each addition's latency, partial sums vectorise; and their fixed count makes a
//! result the same on every instruction set.

use crate::Float;

/// Independent partial results kept by the row reductions: enough for a 512-bit vector of
/// f32, and a fixed count, so that a sum is the same on every instruction set.
pub(crate) const LANES: usize = 16;

/// The largest element of a non-empty slice (NaN-free inputs), in [`LANES`] running maxima.
#[inline(always)]
pub(crate) fn lane_max<F: Float>(v: &[F]) -> F {
    let max = |a: F, b: F| if b > a { b } else { a };
    let mut lanes = [v[0]; LANES];
    let chunks = v.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (m, &x) in lanes.iter_mut().zip(chunk) {
            *m = max(*m, x);
        }
    }
    tail.iter().fold(fold_lanes(lanes, max), |m, &x| max(m, x))
}

/// `Σ v`, in [`LANES`] interleaved partial sums (a serial sum would wait on each addition's
/// latency), combined in order, then the tail.
#[inline(always)]
pub(crate) fn lane_sum<F: Float>(v: &[F]) -> F {
    lane_sum_by(v, |x| x)
}

/// `Σ a ∘ b`, in [`LANES`] partial sums as [`lane_sum`].
#[inline(always)]
pub(crate) fn lane_dot<F: Float>(a: &[F], b: &[F]) -> F {
    let mut lanes = [F::ZERO; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ta, tb) = (ca.remainder(), cb.remainder());
    for (xa, xb) in ca.zip(cb) {
        for ((acc, &x), &y) in lanes.iter_mut().zip(xa).zip(xb) {
            *acc += x * y;
        }
    }
    let lanes = fold_lanes(lanes, |a, b| a + b);
    ta.iter().zip(tb).fold(lanes, |acc, (&x, &y)| acc + x * y)
}

/// Combines the lanes in order, a fixed order on every instruction set. (Not pairwise:
/// LLVM's vectoriser then keeps the lanes of the loop before in 128-bit pieces rather than
/// one 512-bit register, which made these row loops several times slower.)
#[inline(always)]
fn fold_lanes<F: Copy>(lanes: [F; LANES], op: impl Fn(F, F) -> F) -> F {
    lanes[1..].iter().fold(lanes[0], |acc, &x| op(acc, x))
}

/// `Σ f(v)`, in [`LANES`] partial sums as [`lane_sum`].
#[inline(always)]
pub(crate) fn lane_sum_by<F: Float>(v: &[F], f: impl Fn(F) -> F) -> F {
    let mut lanes = [F::ZERO; LANES];
    let chunks = v.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (acc, &x) in lanes.iter_mut().zip(chunk) {
            *acc += f(x);
        }
    }
    tail.iter()
        .fold(fold_lanes(lanes, |a, b| a + b), |acc, &x| acc + f(x))
}
