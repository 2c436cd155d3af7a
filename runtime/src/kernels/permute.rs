//! Axis permutation (`torch.permute`; `transpose` is the permutation that swaps two axes) of a
//! row-major contiguous tensor of rank up to [`MAX_RANK`], and its VJP (the inverse
//! permutation).
//!
//! The permutation is first simplified: axes of size 1 are dropped and output axes that are
//! also adjacent, in order, in the input are merged (moving the middle axis of
//! `[B, T, H, D]` to `[B, H, T, D]` is then a 4-D permutation of runs of `D`). What remains is
//! either a copy of contiguous runs (the last output axis is the input's innermost) or, when
//! the innermost axis moves, a sequence of 2-D transposes done in small tiles so that both
//! the reads and the writes stay within a few cache lines.

use super::store;
use crate::Float;

/// The highest rank [`permute_forward`] accepts.
pub const MAX_RANK: usize = 6;

/// The side of the square tiles the transposes are done in: 8 rows of 8 `f64` are 8 cache
/// lines read and 8 written.
const TILE: usize = 8;

/// A simplified permutation: output axis `i` has extent `dims[i]`, input stride `src[i]`
/// and output stride `dst[i]` (the output is row-major over `dims[..rank]`).
struct Plan {
    rank: usize,
    dims: [usize; MAX_RANK],
    src: [usize; MAX_RANK],
    dst: [usize; MAX_RANK],
}

impl Plan {
    /// Checks the arguments and simplifies the permutation. Returns the element count too.
    #[track_caller]
    fn new(what: &str, dims: &[usize], perm: &[usize]) -> (Self, usize) {
        let rank = dims.len();
        assert!(
            rank <= MAX_RANK,
            "{what}: rank {rank} exceeds the supported {MAX_RANK}"
        );
        assert_eq!(
            perm.len(),
            rank,
            "{what}: a permutation of {} axes for a rank-{rank} tensor",
            perm.len()
        );
        let mut seen = [false; MAX_RANK];
        for &p in perm {
            assert!(
                p < rank && !seen[p],
                "{what}: {perm:?} is not a permutation of 0..{rank}"
            );
            seen[p] = true;
        }
        let mut in_strides = [0; MAX_RANK];
        let mut total = 1usize;
        for axis in (0..rank).rev() {
            in_strides[axis] = total;
            total *= dims[axis];
        }
        let mut plan = Plan {
            rank: 0,
            dims: [1; MAX_RANK],
            src: [0; MAX_RANK],
            dst: [0; MAX_RANK],
        };
        for &p in perm {
            let (d, s) = (dims[p], in_strides[p]);
            if d == 1 {
                continue;
            }
            let r = plan.rank;
            // Output axis r-1 followed by this one is one axis of the input when its stride
            // spans exactly this one's extent.
            if r > 0 && plan.src[r - 1] == s * d {
                plan.dims[r - 1] *= d;
                plan.src[r - 1] = s;
            } else {
                plan.dims[r] = d;
                plan.src[r] = s;
                plan.rank += 1;
            }
        }
        let mut stride = 1;
        for axis in (0..plan.rank).rev() {
            plan.dst[axis] = stride;
            stride *= plan.dims[axis];
        }
        (plan, total)
    }
}

/// Calls `f(src_offset, dst_offset)` for every combination of indices of the axes `axes`
/// (extent, source stride, destination stride), the last varying fastest.
#[inline]
fn for_each_offset(axes: &[(usize, usize, usize)], mut f: impl FnMut(usize, usize)) {
    let mut index = [0usize; MAX_RANK];
    let (mut src, mut dst) = (0, 0);
    loop {
        f(src, dst);
        // Advance the odometer: bump the last axis, carrying into the ones before it.
        let mut axis = axes.len();
        loop {
            if axis == 0 {
                return;
            }
            axis -= 1;
            let (extent, s, d) = axes[axis];
            index[axis] += 1;
            src += s;
            dst += d;
            if index[axis] < extent {
                break;
            }
            index[axis] = 0;
            src -= s * extent;
            dst -= d * extent;
        }
    }
}

/// `y = permute(x)` (written, or added when `accumulate`) for a checked, simplified plan.
fn permute_into<F: Float>(x: &[F], plan: &Plan, y: &mut [F], accumulate: bool) {
    let rank = plan.rank;
    if rank == 0 {
        // All axes of size 1: one element.
        store(&mut y[0], x[0], accumulate);
        return;
    }
    let mut outer = [(0, 0, 0); MAX_RANK];
    let last = rank - 1;
    if plan.src[last] == 1 {
        // The innermost output axis is the input's: copy runs.
        let run = plan.dims[last];
        let axes = plan.dims.iter().zip(&plan.src).zip(&plan.dst);
        for (slot, ((&extent, &s), &d)) in outer[..last].iter_mut().zip(axes) {
            *slot = (extent, s, d);
        }
        for_each_offset(&outer[..last], |s, d| {
            let (from, to) = (&x[s..s + run], &mut y[d..d + run]);
            if accumulate {
                for (slot, &v) in to.iter_mut().zip(from) {
                    *slot += v;
                }
            } else {
                to.copy_from_slice(from);
            }
        });
        return;
    }
    // The input's innermost axis (source stride 1) is output axis `q`, somewhere before the
    // last: every combination of the other axes is a 2-D transpose between axes q and last.
    let q = (0..last)
        .find(|&axis| plan.src[axis] == 1)
        .unwrap_or_else(|| unreachable!("a simplified permutation keeps a stride-1 axis"));
    let mut n_outer = 0;
    for axis in (0..last).filter(|&axis| axis != q) {
        outer[n_outer] = (plan.dims[axis], plan.src[axis], plan.dst[axis]);
        n_outer += 1;
    }
    // Along q: source stride 1, destination stride dq; along last: source stride sl,
    // destination stride 1.
    let (nq, dq) = (plan.dims[q], plan.dst[q]);
    let (nl, sl) = (plan.dims[last], plan.src[last]);
    for_each_offset(&outer[..n_outer], |s, d| {
        for q0 in (0..nq).step_by(TILE) {
            let q1 = (q0 + TILE).min(nq);
            for l0 in (0..nl).step_by(TILE) {
                let l1 = (l0 + TILE).min(nl);
                for iq in q0..q1 {
                    let dst_row = d + iq * dq;
                    for il in l0..l1 {
                        store(&mut y[dst_row + il], x[s + iq + il * sl], accumulate);
                    }
                }
            }
        }
    });
}

/// `y = x.permute(perm)`: `x` is a row-major tensor of shape `dims` (rank ≤ [`MAX_RANK`]) and
/// output axis `i` is input axis `perm[i]`, so `y` has shape `[dims[perm[0]], dims[perm[1]],
/// ..]`; `y` is overwritten. Swapping the last two axes of `[B, M, N]` is
/// `perm = [0, 2, 1]`.
///
/// # Panics
/// If the rank exceeds [`MAX_RANK`], `perm` is not a permutation of `0..dims.len()`, or a
/// slice's length disagrees with `dims` (caller bugs).
///
/// ```
/// use kiln_runtime::kernels::permute::permute_forward;
/// // The transpose of a 2×3 matrix.
/// let mut y = [0.0f64; 6];
/// permute_forward(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3], &[1, 0], &mut y);
/// assert_eq!(y, [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
/// ```
pub fn permute_forward<F: Float>(x: &[F], dims: &[usize], perm: &[usize], y: &mut [F]) {
    const WHAT: &str = "permute_forward";
    let (plan, total) = Plan::new(WHAT, dims, perm);
    check_lens(WHAT, x.len(), y.len(), total, dims);
    if total > 0 {
        permute_into(x, &plan, y, false);
    }
}

/// The VJP of [`permute_forward`] (same `dims`, the INPUT's shape, and `perm`): `dx` is `dy`
/// permuted back by the inverse permutation, written or added when `accumulate`.
///
/// # Panics
/// As [`permute_forward`].
pub fn permute_backward<F: Float>(
    dy: &[F],
    dims: &[usize],
    perm: &[usize],
    dx: &mut [F],
    accumulate: bool,
) {
    const WHAT: &str = "permute_backward";
    // Checked against the forward's shapes first, so that the inverse below is well formed.
    let (_, total) = Plan::new(WHAT, dims, perm);
    check_lens(WHAT, dy.len(), dx.len(), total, dims);
    let rank = dims.len();
    let (mut out_dims, mut inverse) = ([0; MAX_RANK], [0; MAX_RANK]);
    for (i, &p) in perm.iter().enumerate() {
        out_dims[i] = dims[p];
        inverse[p] = i;
    }
    let (plan, _) = Plan::new(WHAT, &out_dims[..rank], &inverse[..rank]);
    if total > 0 {
        permute_into(dy, &plan, dx, accumulate);
    }
}

#[track_caller]
fn check_lens(what: &str, from: usize, to: usize, total: usize, dims: &[usize]) {
    assert_eq!(
        from, total,
        "{what}: the source has {from} elements, expected {dims:?}"
    );
    assert_eq!(
        to, total,
        "{what}: the destination has {to} elements, expected {dims:?}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::numeric_gradient;
    use crate::kernels::test_util::{check_both_modes, values};

    /// Output element by output element, through explicit multi-indices.
    fn naive(x: &[f64], dims: &[usize], perm: &[usize]) -> Vec<f64> {
        let rank = dims.len();
        let out_dims: Vec<usize> = perm.iter().map(|&p| dims[p]).collect();
        let total: usize = dims.iter().product();
        let mut y = vec![0.0; total];
        for (flat, slot) in y.iter_mut().enumerate() {
            // Output multi-index.
            let mut rest = flat;
            let mut out_index = vec![0; rank];
            for axis in (0..rank).rev() {
                out_index[axis] = rest % out_dims[axis];
                rest /= out_dims[axis];
            }
            let mut in_index = vec![0; rank];
            for (i, &p) in perm.iter().enumerate() {
                in_index[p] = out_index[i];
            }
            let mut src = 0;
            for axis in 0..rank {
                src = src * dims[axis] + in_index[axis];
            }
            *slot = x[src];
        }
        y
    }

    /// Every permutation of 0..n, in lexicographic order.
    fn permutations(n: usize) -> Vec<Vec<usize>> {
        if n == 0 {
            return vec![vec![]];
        }
        let mut all = Vec::new();
        for first in 0..n {
            for rest in permutations(n - 1) {
                let mut p = vec![first];
                p.extend(rest.iter().map(|&r| if r >= first { r + 1 } else { r }));
                all.push(p);
            }
        }
        all
    }

    #[test]
    fn every_rank_4_permutation_matches_naive_and_round_trips() {
        // Sizes past a tile, not multiples of it, and a size-1 axis among others.
        for dims in [[3usize, 4, 5, 6], [2, 11, 1, 17], [1, 9, 10, 3]] {
            let total = dims.iter().product();
            let x = values(total, 1.0);
            for perm in permutations(4) {
                let mut y = vec![f64::NAN; total];
                permute_forward(&x, &dims, &perm, &mut y);
                assert_eq!(y, naive(&x, &dims, &perm), "{dims:?} {perm:?}");
                let mut back = vec![f64::NAN; total];
                permute_backward(&y, &dims, &perm, &mut back, false);
                assert_eq!(back, x, "round trip {dims:?} {perm:?}");
            }
        }
    }

    #[test]
    fn other_ranks_match_naive() {
        let cases: [(&[usize], &[usize]); 6] = [
            (&[], &[]),
            (&[7], &[0]),
            (&[19, 23], &[1, 0]),
            (&[2, 3, 4, 5, 6, 7], &[5, 0, 3, 1, 4, 2]),
            (&[2, 3, 4, 5, 6, 7], &[0, 1, 2, 3, 5, 4]),
            (&[4, 0, 3], &[2, 0, 1]),
        ];
        for (dims, perm) in cases {
            let total = dims.iter().product();
            let x = values(total, 2.0);
            let mut y = vec![f64::NAN; total];
            permute_forward(&x, dims, perm, &mut y);
            assert_eq!(y, naive(&x, dims, perm), "{dims:?} {perm:?}");
        }
        let x: Vec<f32> = (0..24).map(|v| v as f32).collect();
        let mut y = vec![0.0f32; 24];
        permute_forward(&x, &[2, 3, 4], &[0, 2, 1], &mut y);
        let want = naive(
            &(0..24).map(f64::from).collect::<Vec<_>>(),
            &[2, 3, 4],
            &[0, 2, 1],
        );
        assert!(y.iter().zip(&want).all(|(&a, &b)| f64::from(a) == b));
    }

    #[test]
    fn backward_matches_finite_differences() {
        let dims = [2, 3, 4, 5];
        let r = values(120, 3.0);
        for perm in [[0, 2, 1, 3], [0, 1, 3, 2], [3, 1, 0, 2]] {
            let mut x = values(120, 1.0);
            let num = numeric_gradient(
                |x| {
                    let y = naive(x, &dims, &perm);
                    y.iter().zip(&r).map(|(a, b)| a * b).sum()
                },
                &mut x,
                1e-6,
            );
            check_both_modes(&num, 1e-6, 1e-8, &format!("dx {perm:?}"), |dx, acc| {
                permute_backward(&r, &dims, &perm, dx, acc)
            });
        }
    }

    #[test]
    #[should_panic(expected = "[0, 0, 1] is not a permutation of 0..3")]
    fn repeated_axes_are_rejected() {
        let mut y = [0.0f64; 8];
        permute_forward(&[0.0; 8], &[2, 2, 2], &[0, 0, 1], &mut y);
    }

    #[test]
    #[should_panic(expected = "rank 7 exceeds the supported 6")]
    fn high_ranks_are_rejected() {
        let mut y = [0.0f64; 1];
        permute_forward(&[0.0], &[1; 7], &[0, 1, 2, 3, 4, 5, 6], &mut y);
    }
}
