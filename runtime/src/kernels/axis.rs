//! Reductions along one axis (sum, mean, max), the mean over the valid steps of padded
//! sequences, and the causal mask of attention scores, with their VJPs.
//!
//! A reduction views its input as `[outer, n, inner]`: the reduced axis has size `n`, `outer`
//! is the product of the dims before it and `inner` of those after it, and the output is
//! `[outer, inner]` (the reduced axis dropped; keeping it as size 1 is the same memory). The
//! loops run over `inner` innermost so that both the reads and the writes are contiguous, and
//! each output sums its `n` terms in axis order.

use super::store;
use crate::Float;

#[track_caller]
fn check_len(what: &str, name: &str, got: usize, dims: &[usize]) {
    let want: usize = dims.iter().product();
    assert_eq!(
        got, want,
        "{what}: {name} has {got} elements, expected {dims:?}"
    );
}

/// `y[o, i] = Σ_j x[o, j, i]`: `x` is `[outer, n, inner]`, `y` is `[outer, inner]` and is
/// overwritten (0 when `n` is 0).
///
/// # Panics
/// If a slice's length disagrees with the sizes (a caller bug).
///
/// ```
/// use kiln_runtime::kernels::axis::sum_axis_forward;
/// // The column sums of a 2×3 matrix: outer 1, n 2, inner 3.
/// let mut y = [0.0f64; 3];
/// sum_axis_forward(&[1.0, 2.0, 3.0, 10.0, 20.0, 30.0], 1, 2, 3, &mut y);
/// assert_eq!(y, [11.0, 22.0, 33.0]);
/// ```
pub fn sum_axis_forward<F: Float>(x: &[F], outer: usize, n: usize, inner: usize, y: &mut [F]) {
    const WHAT: &str = "sum_axis_forward";
    check_len(WHAT, "x", x.len(), &[outer, n, inner]);
    check_len(WHAT, "y", y.len(), &[outer, inner]);
    sum_rows(x, n, inner, y);
}

/// The sums of [`sum_axis_forward`], lengths already checked.
fn sum_rows<F: Float>(x: &[F], n: usize, inner: usize, y: &mut [F]) {
    y.fill(F::ZERO);
    if inner == 0 || n == 0 {
        return;
    }
    for (xs, ys) in x.chunks_exact(n * inner).zip(y.chunks_exact_mut(inner)) {
        for row in xs.chunks_exact(inner) {
            for (acc, &v) in ys.iter_mut().zip(row) {
                *acc += v;
            }
        }
    }
}

/// `dx[o, j, i] = scale · dy[o, i]` for every `j` (written, or added when `accumulate`).
fn broadcast_rows<F: Float>(
    dy: &[F],
    n: usize,
    inner: usize,
    scale: Option<F>,
    dx: &mut [F],
    accumulate: bool,
) {
    if inner == 0 || n == 0 {
        return;
    }
    for (dxs, dys) in dx.chunks_exact_mut(n * inner).zip(dy.chunks_exact(inner)) {
        for row in dxs.chunks_exact_mut(inner) {
            for (slot, &g) in row.iter_mut().zip(dys) {
                let g = match scale {
                    Some(s) => g * s,
                    None => g,
                };
                store(slot, g, accumulate);
            }
        }
    }
}

/// The VJP of [`sum_axis_forward`]: `dx[o, j, i] = dy[o, i]` (`dx` is `[outer, n, inner]`,
/// `dy` is `[outer, inner]`), written or added when `accumulate`.
///
/// # Panics
/// If a slice's length disagrees with the sizes (a caller bug).
pub fn sum_axis_backward<F: Float>(
    dy: &[F],
    outer: usize,
    n: usize,
    inner: usize,
    dx: &mut [F],
    accumulate: bool,
) {
    const WHAT: &str = "sum_axis_backward";
    check_len(WHAT, "dy", dy.len(), &[outer, inner]);
    check_len(WHAT, "dx", dx.len(), &[outer, n, inner]);
    broadcast_rows(dy, n, inner, None, dx, accumulate);
}

/// `y[o, i] = (Σ_j x[o, j, i]) / n`: the sum of [`sum_axis_forward`] divided by `n`, as
/// `torch.mean(dim)` computes it; NaN (`0 / 0`) when `n` is 0, as in PyTorch.
///
/// # Panics
/// If a slice's length disagrees with the sizes (a caller bug).
pub fn mean_axis_forward<F: Float>(x: &[F], outer: usize, n: usize, inner: usize, y: &mut [F]) {
    const WHAT: &str = "mean_axis_forward";
    check_len(WHAT, "x", x.len(), &[outer, n, inner]);
    check_len(WHAT, "y", y.len(), &[outer, inner]);
    sum_rows(x, n, inner, y);
    let count = F::from_usize(n);
    for v in y.iter_mut() {
        *v /= count;
    }
}

/// The VJP of [`mean_axis_forward`]: `dx[o, j, i] = dy[o, i] / n`, written or added when
/// `accumulate`.
///
/// # Panics
/// If a slice's length disagrees with the sizes (a caller bug).
pub fn mean_axis_backward<F: Float>(
    dy: &[F],
    outer: usize,
    n: usize,
    inner: usize,
    dx: &mut [F],
    accumulate: bool,
) {
    const WHAT: &str = "mean_axis_backward";
    check_len(WHAT, "dy", dy.len(), &[outer, inner]);
    check_len(WHAT, "dx", dx.len(), &[outer, n, inner]);
    // The reciprocal rounded once, as PyTorch's mean backward scales by 1/n.
    let scale = F::from_f64(1.0 / n as f64);
    broadcast_rows(dy, n, inner, Some(scale), dx, accumulate);
}

/// Whether `v` is NaN (the only value unordered with itself).
#[inline(always)]
fn is_nan<F: Float>(v: F) -> bool {
    #[allow(clippy::eq_op)]
    let nan = v != v;
    nan
}

/// The largest `n` whose indices `0..n` an `F` holds exactly: 2²⁴ for `f32`, 2⁵³ for `f64`.
fn exact_index_limit<F: Float>() -> usize {
    // 2²⁴ + 1 is the first integer an f32 rounds.
    if F::from_f64(16_777_217.0).to_f64() == 16_777_217.0 {
        1 << 53
    } else {
        1 << 24
    }
}

/// `y[o, i] = max_j x[o, j, i]` (`torch.max(x, dim)`'s values), with the arg-max `j` of every
/// output stored in `argmax` (`[outer, inner]`, the index as a float, exact for the sizes
/// allowed) for [`max_axis_backward`]. Both are overwritten.
///
/// Ties go to the FIRST maximum; a NaN wins over every number and the first NaN is kept, so
/// NaN propagates with its position, as in PyTorch's CPU kernel.
///
/// # Panics
/// If a slice's length disagrees with the sizes, `n` is 0 (a maximum over nothing, which
/// PyTorch rejects too), or `n` exceeds 2²⁴ for `f32` (the arg-max would not be exact).
///
/// ```
/// use kiln_runtime::kernels::axis::max_axis_forward;
/// // Row maxima of a 2×3 matrix: outer 2, n 3, inner 1; the tie in row 1 picks index 0.
/// let (mut y, mut arg) = ([0.0f32; 2], [0.0f32; 2]);
/// max_axis_forward(&[1.0, 5.0, 2.0, 4.0, 4.0, -1.0], 2, 3, 1, &mut y, &mut arg);
/// assert_eq!((y, arg), ([5.0, 4.0], [1.0, 0.0]));
/// ```
pub fn max_axis_forward<F: Float>(
    x: &[F],
    outer: usize,
    n: usize,
    inner: usize,
    y: &mut [F],
    argmax: &mut [F],
) {
    const WHAT: &str = "max_axis_forward";
    check_len(WHAT, "x", x.len(), &[outer, n, inner]);
    check_len(WHAT, "y", y.len(), &[outer, inner]);
    check_len(WHAT, "argmax", argmax.len(), &[outer, inner]);
    assert!(n > 0, "{WHAT}: the reduced axis is empty");
    assert!(
        n <= exact_index_limit::<F>(),
        "{WHAT}: an axis of {n} is too long for exact {} indices",
        F::NAME
    );
    if inner == 0 {
        return;
    }
    let rows = x
        .chunks_exact(n * inner)
        .zip(y.chunks_exact_mut(inner))
        .zip(argmax.chunks_exact_mut(inner));
    for ((xs, ys), args) in rows {
        let mut steps = xs.chunks_exact(inner);
        if let Some(first) = steps.next() {
            ys.copy_from_slice(first);
        }
        args.fill(F::ZERO);
        for (j, row) in steps.enumerate() {
            let j = F::from_usize(j + 1);
            for ((best, arg), &v) in ys.iter_mut().zip(args.iter_mut()).zip(row) {
                // PyTorch's test, `!(v <= best)`: a larger v or a NaN v; and PyTorch stops at
                // the first NaN, so nothing replaces a NaN best.
                let take = (v > *best || is_nan(v)) && !is_nan(*best);
                if take {
                    *best = v;
                    *arg = j;
                }
            }
        }
    }
}

/// The VJP of [`max_axis_forward`] from its `argmax`: `dx[o, j, i] = dy[o, i]` where `j` is the
/// stored arg-max and 0 elsewhere (`dx` is `[outer, n, inner]`); written, or added when
/// `accumulate` (which touches only the arg-max positions).
///
/// # Panics
/// If a slice's length disagrees with the sizes, or a stored index is not below `n` (an
/// `argmax` that did not come from [`max_axis_forward`] with these sizes).
pub fn max_axis_backward<F: Float>(
    dy: &[F],
    argmax: &[F],
    outer: usize,
    n: usize,
    inner: usize,
    dx: &mut [F],
    accumulate: bool,
) {
    const WHAT: &str = "max_axis_backward";
    check_len(WHAT, "dy", dy.len(), &[outer, inner]);
    check_len(WHAT, "argmax", argmax.len(), &[outer, inner]);
    check_len(WHAT, "dx", dx.len(), &[outer, n, inner]);
    if !accumulate {
        dx.fill(F::ZERO);
    }
    if inner == 0 || n == 0 {
        return;
    }
    let rows = dx
        .chunks_exact_mut(n * inner)
        .zip(dy.chunks_exact(inner))
        .zip(argmax.chunks_exact(inner));
    for ((dxs, dys), args) in rows {
        for (i, (&g, &arg)) in dys.iter().zip(args).enumerate() {
            let j = arg.to_f64();
            assert!(
                j >= 0.0 && j < n as f64,
                "{WHAT}: stored index {j} is not below {n}"
            );
            dxs[j as usize * inner + i] += g;
        }
    }
}

#[track_caller]
fn check_lengths(what: &str, batch: usize, seq: usize, lengths: &[usize]) {
    assert_eq!(
        lengths.len(),
        batch,
        "{what}: {} lengths for a batch of {batch}",
        lengths.len()
    );
    if let Some(bad) = lengths.iter().position(|&l| l == 0 || l > seq) {
        panic!(
            "{what}: length {} of sample {bad} is not in 1..={seq}",
            lengths[bad]
        );
    }
}

/// The mean over the valid steps of padded sequences: `y[b, i] = (Σ_{t < lengths[b]}
/// x[b, t, i]) / lengths[b]`, with `x` `[batch, seq, inner]` and `y` `[batch, inner]`
/// (overwritten). The padding steps `t ≥ lengths[b]` are not read into the result.
///
/// # Panics
/// If a slice's length disagrees with the sizes, or a length is not in `1..=seq`.
///
/// ```
/// use kiln_runtime::kernels::axis::masked_mean_forward;
/// // Two sequences of up to 3 steps of one feature; the second has 2 valid steps.
/// let mut y = [0.0f64; 2];
/// masked_mean_forward(&[1.0, 2.0, 3.0, 4.0, 6.0, 100.0], 2, 3, 1, &[3, 2], &mut y);
/// assert_eq!(y, [2.0, 5.0]);
/// ```
pub fn masked_mean_forward<F: Float>(
    x: &[F],
    batch: usize,
    seq: usize,
    inner: usize,
    lengths: &[usize],
    y: &mut [F],
) {
    const WHAT: &str = "masked_mean_forward";
    check_len(WHAT, "x", x.len(), &[batch, seq, inner]);
    check_len(WHAT, "y", y.len(), &[batch, inner]);
    check_lengths(WHAT, batch, seq, lengths);
    if inner == 0 {
        return;
    }
    for ((xs, ys), &len) in x
        .chunks_exact(seq * inner)
        .zip(y.chunks_exact_mut(inner))
        .zip(lengths)
    {
        sum_rows(&xs[..len * inner], len, inner, ys);
        let count = F::from_usize(len);
        for v in ys.iter_mut() {
            *v /= count;
        }
    }
}

/// The VJP of [`masked_mean_forward`]: `dx[b, t, i] = dy[b, i] / lengths[b]` for
/// `t < lengths[b]` and 0 for the padding steps (which keep their value when `accumulate`).
///
/// # Panics
/// As [`masked_mean_forward`].
pub fn masked_mean_backward<F: Float>(
    dy: &[F],
    batch: usize,
    seq: usize,
    inner: usize,
    lengths: &[usize],
    dx: &mut [F],
    accumulate: bool,
) {
    const WHAT: &str = "masked_mean_backward";
    check_len(WHAT, "dy", dy.len(), &[batch, inner]);
    check_len(WHAT, "dx", dx.len(), &[batch, seq, inner]);
    check_lengths(WHAT, batch, seq, lengths);
    if inner == 0 {
        return;
    }
    for ((dxs, dys), &len) in dx
        .chunks_exact_mut(seq * inner)
        .zip(dy.chunks_exact(inner))
        .zip(lengths)
    {
        let (valid, padding) = dxs.split_at_mut(len * inner);
        let scale = F::from_f64(1.0 / len as f64);
        broadcast_rows(dys, len, inner, Some(scale), valid, accumulate);
        if !accumulate {
            padding.fill(F::ZERO);
        }
    }
}

/// The causal mask of attention scores: `x` and `y` are `[outer, t, s]` (queries by keys) and
/// `y[o, i, j] = x[o, i, j]` where `j ≤ i`, `−∞` where `j > i` (a query sees only the keys up
/// to its own position, so the softmax gives the later ones weight 0). `y` is overwritten.
///
/// # Panics
/// If a slice's length disagrees with the sizes (a caller bug).
///
/// ```
/// use kiln_runtime::kernels::axis::causal_mask_forward;
/// let mut y = [0.0f32; 4];
/// causal_mask_forward(&[1.0, 2.0, 3.0, 4.0], 1, 2, 2, &mut y);
/// assert_eq!(y, [1.0, f32::NEG_INFINITY, 3.0, 4.0]);
/// ```
pub fn causal_mask_forward<F: Float>(x: &[F], outer: usize, t: usize, s: usize, y: &mut [F]) {
    const WHAT: &str = "causal_mask_forward";
    check_len(WHAT, "x", x.len(), &[outer, t, s]);
    check_len(WHAT, "y", y.len(), &[outer, t, s]);
    if s == 0 {
        return;
    }
    for (xs, ys) in x.chunks_exact(t * s).zip(y.chunks_exact_mut(t * s)) {
        for (i, (xr, yr)) in xs.chunks_exact(s).zip(ys.chunks_exact_mut(s)).enumerate() {
            let keep = (i + 1).min(s);
            yr[..keep].copy_from_slice(&xr[..keep]);
            yr[keep..].fill(F::NEG_INFINITY);
        }
    }
}

/// The VJP of [`causal_mask_forward`]: `dx = dy` where `j ≤ i` and 0 where `j > i` (the masked
/// scores do not depend on `x`); written, or added when `accumulate` (leaving the masked
/// entries unchanged).
///
/// # Panics
/// If a slice's length disagrees with the sizes (a caller bug).
pub fn causal_mask_backward<F: Float>(
    dy: &[F],
    outer: usize,
    t: usize,
    s: usize,
    dx: &mut [F],
    accumulate: bool,
) {
    const WHAT: &str = "causal_mask_backward";
    check_len(WHAT, "dy", dy.len(), &[outer, t, s]);
    check_len(WHAT, "dx", dx.len(), &[outer, t, s]);
    if s == 0 {
        return;
    }
    for (gs, dxs) in dy.chunks_exact(t * s).zip(dx.chunks_exact_mut(t * s)) {
        for (i, (gr, dr)) in gs.chunks_exact(s).zip(dxs.chunks_exact_mut(s)).enumerate() {
            let keep = (i + 1).min(s);
            for (slot, &g) in dr[..keep].iter_mut().zip(&gr[..keep]) {
                store(slot, g, accumulate);
            }
            if !accumulate {
                dr[keep..].fill(F::ZERO);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::numeric_gradient;
    use crate::kernels::test_util::{assert_close, check_both_modes, values};

    const SHAPES: [(usize, usize, usize); 4] = [(3, 4, 5), (1, 6, 1), (4, 1, 3), (2, 5, 1)];

    /// Element (o, j, i) of an [outer, n, inner] tensor.
    fn idx(n: usize, inner: usize, o: usize, j: usize, i: usize) -> usize {
        (o * n + j) * inner + i
    }

    fn naive_reduce(
        x: &[f64],
        (outer, n, inner): (usize, usize, usize),
        f: impl Fn(&[f64]) -> f64,
    ) -> Vec<f64> {
        let mut y = vec![0.0; outer * inner];
        for o in 0..outer {
            for i in 0..inner {
                let column: Vec<f64> = (0..n).map(|j| x[idx(n, inner, o, j, i)]).collect();
                y[o * inner + i] = f(&column);
            }
        }
        y
    }

    fn naive_sum(c: &[f64]) -> f64 {
        c.iter().sum()
    }

    fn naive_mean(c: &[f64]) -> f64 {
        c.iter().sum::<f64>() / c.len() as f64
    }

    fn naive_max(c: &[f64]) -> f64 {
        c.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    }

    fn weighted(y: &[f64], r: &[f64]) -> f64 {
        y.iter().zip(r).map(|(a, b)| a * b).sum()
    }

    #[test]
    fn sum_and_mean_match_naive_and_finite_differences() {
        for shape @ (outer, n, inner) in SHAPES {
            let mut x = values(outer * n * inner, 1.0);
            let r = values(outer * inner, 2.0);
            let mut y = vec![f64::NAN; outer * inner];
            sum_axis_forward(&x, outer, n, inner, &mut y);
            assert_close(&y, &naive_reduce(&x, shape, naive_sum), 1e-15, 1e-15, "sum");
            mean_axis_forward(&x, outer, n, inner, &mut y);
            assert_close(
                &y,
                &naive_reduce(&x, shape, naive_mean),
                1e-15,
                1e-15,
                "mean",
            );

            let num = numeric_gradient(
                |x| weighted(&naive_reduce(x, shape, naive_sum), &r),
                &mut x,
                1e-6,
            );
            check_both_modes(&num, 1e-7, 1e-9, "d sum", |dx, acc| {
                sum_axis_backward(&r, outer, n, inner, dx, acc)
            });
            let num = numeric_gradient(
                |x| weighted(&naive_reduce(x, shape, naive_mean), &r),
                &mut x,
                1e-6,
            );
            check_both_modes(&num, 1e-7, 1e-9, "d mean", |dx, acc| {
                mean_axis_backward(&r, outer, n, inner, dx, acc)
            });
        }
        // An empty axis: sum 0, mean NaN.
        let mut y = [f64::NAN; 2];
        sum_axis_forward(&[], 1, 0, 2, &mut y);
        assert_eq!(y, [0.0; 2]);
        mean_axis_forward(&[], 1, 0, 2, &mut y);
        assert!(y.iter().all(|v| v.is_nan()));
    }

    #[test]
    fn max_matches_naive_and_finite_differences() {
        for shape @ (outer, n, inner) in SHAPES {
            let mut x = values(outer * n * inner, 3.0);
            let r = values(outer * inner, 4.0);
            let (mut y, mut arg) = (vec![f64::NAN; outer * inner], vec![f64::NAN; outer * inner]);
            max_axis_forward(&x, outer, n, inner, &mut y, &mut arg);
            assert_eq!(y, naive_reduce(&x, shape, naive_max));
            // The stored index points at the maximum.
            for o in 0..outer {
                for i in 0..inner {
                    let j = arg[o * inner + i] as usize;
                    assert_eq!(x[idx(n, inner, o, j, i)], y[o * inner + i]);
                }
            }
            // The test values have no ties, so the maximum is differentiable.
            let num = numeric_gradient(
                |x| weighted(&naive_reduce(x, shape, naive_max), &r),
                &mut x,
                1e-6,
            );
            check_both_modes(&num, 1e-7, 1e-9, "d max", |dx, acc| {
                max_axis_backward(&r, &arg, outer, n, inner, dx, acc)
            });
        }
    }

    #[test]
    fn max_picks_the_first_maximum_and_the_first_nan() {
        let nan = f64::NAN;
        // outer 1, n 4, inner 4: the columns are [1, 3, 3, 0], [2, NaN, 5, NaN],
        // [NaN, 1, 1, 1] and [-inf, -inf, -inf, -inf].
        let inf = f64::INFINITY;
        #[rustfmt::skip]
        let x = [
            1.0, 2.0, nan, -inf,
            3.0, nan, 1.0, -inf,
            3.0, 5.0, 1.0, -inf,
            0.0, nan, 1.0, -inf,
        ];
        let (mut y, mut arg) = ([0.0; 4], [0.0; 4]);
        max_axis_forward(&x, 1, 4, 4, &mut y, &mut arg);
        assert_eq!(arg, [1.0, 1.0, 0.0, 0.0]);
        assert_eq!(y[0], 3.0);
        assert!(y[1].is_nan() && y[2].is_nan());
        assert_eq!(y[3], -inf);
        let mut dx = [0.0; 16];
        max_axis_backward(&[1.0, 2.0, 3.0, 4.0], &arg, 1, 4, 4, &mut dx, false);
        #[rustfmt::skip]
        let want = [
            0.0, 0.0, 3.0, 4.0,
            1.0, 2.0, 0.0, 0.0,
            0.0, 0.0, 0.0, 0.0,
            0.0, 0.0, 0.0, 0.0,
        ];
        assert_eq!(dx, want);
        // f32 indices.
        let (mut y32, mut arg32) = ([0.0f32; 2], [0.0f32; 2]);
        max_axis_forward(
            &[1.0f32, 9.0, 7.0, 2.0, 9.0, -1.0],
            1,
            3,
            2,
            &mut y32,
            &mut arg32,
        );
        assert_eq!((y32, arg32), ([9.0, 9.0], [2.0, 0.0]));
    }

    fn naive_masked_mean(
        x: &[f64],
        batch: usize,
        seq: usize,
        inner: usize,
        lengths: &[usize],
    ) -> Vec<f64> {
        let mut y = vec![0.0; batch * inner];
        for b in 0..batch {
            for i in 0..inner {
                let mut acc = 0.0;
                for t in 0..lengths[b] {
                    acc += x[idx(seq, inner, b, t, i)];
                }
                y[b * inner + i] = acc / lengths[b] as f64;
            }
        }
        y
    }

    #[test]
    fn masked_mean_matches_naive_and_finite_differences() {
        let (batch, seq, inner) = (4, 5, 3);
        let lengths = [5, 1, 3, 4];
        let mut x = values(batch * seq * inner, 5.0);
        let r = values(batch * inner, 6.0);
        let mut y = vec![f64::NAN; batch * inner];
        masked_mean_forward(&x, batch, seq, inner, &lengths, &mut y);
        let want = naive_masked_mean(&x, batch, seq, inner, &lengths);
        assert_close(&y, &want, 1e-15, 1e-15, "masked mean");
        let num = numeric_gradient(
            |x| weighted(&naive_masked_mean(x, batch, seq, inner, &lengths), &r),
            &mut x,
            1e-6,
        );
        // Padding steps get exactly 0.
        assert_eq!(num[idx(seq, inner, 1, 1, 0)], 0.0);
        check_both_modes(&num, 1e-7, 1e-9, "d masked mean", |dx, acc| {
            masked_mean_backward(&r, batch, seq, inner, &lengths, dx, acc)
        });
    }

    #[test]
    #[should_panic(expected = "length 0 of sample 1 is not in 1..=5")]
    fn masked_mean_rejects_empty_sequences() {
        let mut y = [0.0f64; 2];
        masked_mean_forward(&[0.0; 10], 2, 5, 1, &[2, 0], &mut y);
    }

    fn naive_causal(x: &[f64], outer: usize, t: usize, s: usize) -> Vec<f64> {
        let mut y = x.to_vec();
        for o in 0..outer {
            for i in 0..t {
                for j in 0..s {
                    if j > i {
                        y[(o * t + i) * s + j] = f64::NEG_INFINITY;
                    }
                }
            }
        }
        y
    }

    #[test]
    fn causal_mask_matches_naive_and_finite_differences() {
        // Square, more keys than queries, and more queries than keys.
        for (outer, t, s) in [(3, 4, 4), (2, 3, 5), (2, 5, 3)] {
            let mut x = values(outer * t * s, 7.0);
            let mut y = vec![f64::NAN; outer * t * s];
            causal_mask_forward(&x, outer, t, s, &mut y);
            assert_eq!(y, naive_causal(&x, outer, t, s));
            let r = values(outer * t * s, 8.0);
            // Σ r ⊙ y over the kept entries only (the masked ones are −∞, constant).
            let num = numeric_gradient(
                |x| {
                    let y = naive_causal(x, outer, t, s);
                    y.iter()
                        .zip(&r)
                        .filter(|(v, _)| v.is_finite())
                        .map(|(a, b)| a * b)
                        .sum()
                },
                &mut x,
                1e-6,
            );
            check_both_modes(&num, 1e-7, 1e-9, "d causal", |dx, acc| {
                causal_mask_backward(&r, outer, t, s, dx, acc)
            });
        }
        let mut y32 = [0.0f32; 4];
        causal_mask_forward(&[1.0f32, 2.0, 3.0, 4.0], 1, 2, 2, &mut y32);
        assert_eq!(y32, [1.0, f32::NEG_INFINITY, 3.0, 4.0]);
    }
}
