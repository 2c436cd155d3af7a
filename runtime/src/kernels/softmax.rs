//! Softmax and log-softmax and their VJPs: over the last axis of a `rows × cols` matrix
//! (`softmax_forward`, ...), and over the middle axis of an `[outer, n, inner]` tensor
//! (`softmax_axis_forward`, ...), where each softmax runs along `n` elements `inner` apart
//! (PyTorch's `softmax(x, dim)` for any `dim`: the classes of `[B, C, H, W]` logits are
//! `outer = B`, `n = C`, `inner = H·W`).

use super::store;
use crate::Float;

/// The largest element of a non-empty row.
#[inline]
pub(crate) fn row_max<F: Float>(row: &[F]) -> F {
    row.iter().copied().fold(row[0], F::max)
}

#[track_caller]
fn check_lens<F>(what: &str, rows: usize, cols: usize, slices: &[&[F]]) {
    for s in slices {
        assert_eq!(
            s.len(),
            rows * cols,
            "{what}: expected {rows}×{cols} elements, got {}",
            s.len()
        );
    }
}

/// `y = softmax(x)` along each row: `exp(x − max) / Σ exp(x − max)`. Subtracting the row
/// maximum keeps every exponent ≤ 0, so large logits cannot overflow.
///
/// # Panics
/// If `x` or `y` does not hold `rows × cols` elements (a caller bug).
///
/// ```
/// use kiln_runtime::kernels::softmax_forward;
/// let mut y = [0.0; 2];
/// softmax_forward(&[1000.0f64, 1000.0], 1, 2, &mut y);
/// assert_eq!(y, [0.5, 0.5]);
/// ```
pub fn softmax_forward<F: Float>(x: &[F], rows: usize, cols: usize, y: &mut [F]) {
    check_lens("softmax_forward", rows, cols, &[x, y]);
    if cols == 0 {
        return;
    }
    for (xr, yr) in x.chunks_exact(cols).zip(y.chunks_exact_mut(cols)) {
        let max = row_max(xr);
        let mut total = F::ZERO;
        // y holds the unnormalised exponentials first, so no scratch row is needed.
        for (yv, &xv) in yr.iter_mut().zip(xr) {
            *yv = (xv - max).exp();
            total += *yv;
        }
        for yv in yr.iter_mut() {
            *yv /= total;
        }
    }
}

/// The VJP of [`softmax_forward`] from its output `y`: `dx = y ⊙ (dy − Σ dy ⊙ y)` per row.
///
/// # Panics
/// If a slice does not hold `rows × cols` elements (a caller bug).
pub fn softmax_backward<F: Float>(
    y: &[F],
    dy: &[F],
    rows: usize,
    cols: usize,
    dx: &mut [F],
    accumulate: bool,
) {
    check_lens("softmax_backward", rows, cols, &[y, dy, dx]);
    if cols == 0 {
        return;
    }
    for ((yr, dyr), dxr) in y
        .chunks_exact(cols)
        .zip(dy.chunks_exact(cols))
        .zip(dx.chunks_exact_mut(cols))
    {
        let dot: F = yr.iter().zip(dyr).map(|(&a, &b)| a * b).sum();
        for ((slot, &yv), &g) in dxr.iter_mut().zip(yr).zip(dyr) {
            store(slot, yv * (g - dot), accumulate);
        }
    }
}

/// `y = log_softmax(x)` along each row: `x − max − ln Σ exp(x − max)`, stable for any
/// finite logits.
///
/// # Panics
/// If `x` or `y` does not hold `rows × cols` elements (a caller bug).
///
/// ```
/// use kiln_runtime::kernels::log_softmax_forward;
/// let mut y = [0.0; 2];
/// log_softmax_forward(&[-1000.0f64, -1000.0], 1, 2, &mut y);
/// assert_eq!(y, [-(2f64.ln()); 2]);
/// ```
pub fn log_softmax_forward<F: Float>(x: &[F], rows: usize, cols: usize, y: &mut [F]) {
    check_lens("log_softmax_forward", rows, cols, &[x, y]);
    if cols == 0 {
        return;
    }
    for (xr, yr) in x.chunks_exact(cols).zip(y.chunks_exact_mut(cols)) {
        let max = row_max(xr);
        let total: F = xr.iter().map(|&v| (v - max).exp()).sum();
        let log_total = total.ln();
        for (yv, &xv) in yr.iter_mut().zip(xr) {
            *yv = xv - max - log_total;
        }
    }
}

/// The VJP of [`log_softmax_forward`] from its output `y`: `dx = dy − exp(y) · Σ dy` per row.
///
/// # Panics
/// If a slice does not hold `rows × cols` elements (a caller bug).
pub fn log_softmax_backward<F: Float>(
    y: &[F],
    dy: &[F],
    rows: usize,
    cols: usize,
    dx: &mut [F],
    accumulate: bool,
) {
    check_lens("log_softmax_backward", rows, cols, &[y, dy, dx]);
    if cols == 0 {
        return;
    }
    for ((yr, dyr), dxr) in y
        .chunks_exact(cols)
        .zip(dy.chunks_exact(cols))
        .zip(dx.chunks_exact_mut(cols))
    {
        let total: F = dyr.iter().copied().sum();
        for ((slot, &yv), &g) in dxr.iter_mut().zip(yr).zip(dyr) {
            store(slot, g - yv.exp() * total, accumulate);
        }
    }
}

/// The inner positions an `*_axis_*` kernel handles at once: their running maxima and sums
/// are stack arrays of this length (nothing is allocated), and each step along the axis reads
/// `TILE` contiguous elements, a loop the compiler vectorises.
const TILE: usize = 64;

#[track_caller]
fn check_axis_lens<F>(what: &str, outer: usize, n: usize, inner: usize, slices: &[&[F]]) {
    for s in slices {
        assert_eq!(
            s.len(),
            outer * n * inner,
            "{what}: expected {outer}×{n}×{inner} elements, got {}",
            s.len()
        );
    }
}

/// The tiles of an `[outer, n, inner]` tensor: `(base, width)` where `base` is the index of
/// the tile's first element at position 0 of the axis, and position `k` of the axis starts
/// `k · inner` further on. Each softmax of a tile's `width` columns runs along the axis.
fn tiles(outer: usize, n: usize, inner: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..outer).flat_map(move |o| {
        (0..inner)
            .step_by(TILE)
            .map(move |start| (o * n * inner + start, TILE.min(inner - start)))
    })
}

/// The maximum of each of the `max.len()` columns starting at `base` over the `n` rows of
/// the axis (`inner` apart), in row order.
#[inline(always)]
fn column_max<F: Float>(x: &[F], base: usize, n: usize, inner: usize, max: &mut [F]) {
    let w = max.len();
    max.copy_from_slice(&x[base..base + w]);
    for k in 1..n {
        let at = base + k * inner;
        for (m, &v) in max.iter_mut().zip(&x[at..at + w]) {
            *m = F::max(*m, v);
        }
    }
}

/// `y = softmax(x)` along the middle axis of an `[outer, n, inner]` tensor: for every
/// `(o, i)`, the `n` elements `x[o, k, i]` are one softmax, computed as
/// [`softmax_forward`] computes a row (the maximum subtracted, the exponentials summed in
/// order along the axis), so `inner = 1` gives the same bits as the row kernel.
///
/// # Panics
/// If `x` or `y` does not hold `outer × n × inner` elements (a caller bug).
///
/// ```
/// use kiln_runtime::kernels::softmax::softmax_axis_forward;
/// // [1, 2, 2]: softmax over the 2 rows, column by column.
/// let mut y = [0.0; 4];
/// softmax_axis_forward(&[0.0f64, 5.0, 0.0, 5.0], 1, 2, 2, &mut y);
/// assert_eq!(y, [0.5, 0.5, 0.5, 0.5]);
/// ```
pub fn softmax_axis_forward<F: Float>(x: &[F], outer: usize, n: usize, inner: usize, y: &mut [F]) {
    check_axis_lens("softmax_axis_forward", outer, n, inner, &[x, y]);
    if inner == 1 {
        return softmax_forward(x, outer, n, y);
    }
    if n == 0 {
        return;
    }
    for (base, w) in tiles(outer, n, inner) {
        let mut max = [F::ZERO; TILE];
        let max = &mut max[..w];
        column_max(x, base, n, inner, max);
        let mut total = [F::ZERO; TILE];
        let total = &mut total[..w];
        // y holds the unnormalised exponentials first, so no scratch is needed.
        for k in 0..n {
            let at = base + k * inner;
            let cols = y[at..at + w].iter_mut().zip(&x[at..at + w]);
            for (((yv, &xv), &m), t) in cols.zip(&*max).zip(total.iter_mut()) {
                *yv = (xv - m).exp();
                *t += *yv;
            }
        }
        for k in 0..n {
            let at = base + k * inner;
            for (yv, &t) in y[at..at + w].iter_mut().zip(&*total) {
                *yv /= t;
            }
        }
    }
}

/// The VJP of [`softmax_axis_forward`] from its output `y`: `dx = y ⊙ (dy − Σ dy ⊙ y)`, the
/// sum along the axis.
///
/// # Panics
/// If a slice does not hold `outer × n × inner` elements (a caller bug).
#[allow(clippy::too_many_arguments)]
pub fn softmax_axis_backward<F: Float>(
    y: &[F],
    dy: &[F],
    outer: usize,
    n: usize,
    inner: usize,
    dx: &mut [F],
    accumulate: bool,
) {
    check_axis_lens("softmax_axis_backward", outer, n, inner, &[y, dy, dx]);
    if inner == 1 {
        return softmax_backward(y, dy, outer, n, dx, accumulate);
    }
    for (base, w) in tiles(outer, n, inner) {
        let mut dot = [F::ZERO; TILE];
        let dot = &mut dot[..w];
        for k in 0..n {
            let at = base + k * inner;
            for ((d, &a), &b) in dot.iter_mut().zip(&y[at..at + w]).zip(&dy[at..at + w]) {
                *d += a * b;
            }
        }
        for k in 0..n {
            let at = base + k * inner;
            let (yr, dyr) = (&y[at..at + w], &dy[at..at + w]);
            for (((slot, &yv), &g), &d) in dx[at..at + w].iter_mut().zip(yr).zip(dyr).zip(&*dot) {
                store(slot, yv * (g - d), accumulate);
            }
        }
    }
}

/// `y = log_softmax(x)` along the middle axis of an `[outer, n, inner]` tensor, as
/// [`log_softmax_forward`] computes a row (`inner = 1` gives the same bits).
///
/// # Panics
/// If `x` or `y` does not hold `outer × n × inner` elements (a caller bug).
pub fn log_softmax_axis_forward<F: Float>(
    x: &[F],
    outer: usize,
    n: usize,
    inner: usize,
    y: &mut [F],
) {
    check_axis_lens("log_softmax_axis_forward", outer, n, inner, &[x, y]);
    if inner == 1 {
        return log_softmax_forward(x, outer, n, y);
    }
    if n == 0 {
        return;
    }
    for (base, w) in tiles(outer, n, inner) {
        let mut max = [F::ZERO; TILE];
        let max = &mut max[..w];
        column_max(x, base, n, inner, max);
        let mut total = [F::ZERO; TILE];
        let total = &mut total[..w];
        for k in 0..n {
            let at = base + k * inner;
            for ((t, &v), &m) in total.iter_mut().zip(&x[at..at + w]).zip(&*max) {
                *t += (v - m).exp();
            }
        }
        // The shift `max + ln Σ`, in the order the row kernel subtracts: x − max − ln Σ.
        for t in total.iter_mut() {
            *t = t.ln();
        }
        for k in 0..n {
            let at = base + k * inner;
            let shifts = max.iter().zip(&*total);
            for ((yv, &xv), (&m, &l)) in y[at..at + w].iter_mut().zip(&x[at..at + w]).zip(shifts) {
                *yv = xv - m - l;
            }
        }
    }
}

/// The VJP of [`log_softmax_axis_forward`] from its output `y`: `dx = dy − exp(y) · Σ dy`,
/// the sum along the axis.
///
/// # Panics
/// If a slice does not hold `outer × n × inner` elements (a caller bug).
#[allow(clippy::too_many_arguments)]
pub fn log_softmax_axis_backward<F: Float>(
    y: &[F],
    dy: &[F],
    outer: usize,
    n: usize,
    inner: usize,
    dx: &mut [F],
    accumulate: bool,
) {
    check_axis_lens("log_softmax_axis_backward", outer, n, inner, &[y, dy, dx]);
    if inner == 1 {
        return log_softmax_backward(y, dy, outer, n, dx, accumulate);
    }
    for (base, w) in tiles(outer, n, inner) {
        let mut total = [F::ZERO; TILE];
        let total = &mut total[..w];
        for k in 0..n {
            let at = base + k * inner;
            for (t, &g) in total.iter_mut().zip(&dy[at..at + w]) {
                *t += g;
            }
        }
        for k in 0..n {
            let at = base + k * inner;
            let (yr, dyr) = (&y[at..at + w], &dy[at..at + w]);
            for (((slot, &yv), &g), &t) in dx[at..at + w].iter_mut().zip(yr).zip(dyr).zip(&*total) {
                store(slot, g - yv.exp() * t, accumulate);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::numeric_gradient;
    use crate::kernels::test_util::{assert_close, check_both_modes, values};

    const R: usize = 3;
    const C: usize = 5;

    /// Softmax written the direct way, without the max shift (fine for small inputs).
    fn naive_softmax(x: &[f64]) -> Vec<f64> {
        x.chunks(C)
            .flat_map(|row| {
                let total: f64 = row.iter().map(|v| v.exp()).sum();
                row.iter().map(move |v| v.exp() / total).collect::<Vec<_>>()
            })
            .collect()
    }

    fn naive_log_softmax(x: &[f64]) -> Vec<f64> {
        naive_softmax(x).iter().map(|p| p.ln()).collect()
    }

    fn weighted(y: &[f64], r: &[f64]) -> f64 {
        y.iter().zip(r).map(|(a, b)| a * b).sum()
    }

    #[test]
    fn forward_matches_naive() {
        let x = values(R * C, 1.0);
        let mut y = vec![0.0; R * C];
        softmax_forward(&x, R, C, &mut y);
        assert_close(&y, &naive_softmax(&x), 1e-14, 1e-16, "softmax");
        for row in y.chunks(C) {
            assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-15);
        }
        log_softmax_forward(&x, R, C, &mut y);
        assert_close(&y, &naive_log_softmax(&x), 1e-13, 1e-15, "log_softmax");
    }

    #[test]
    fn forward_is_stable_for_huge_logits() {
        let x = [1000.0f64, 999.0, -1000.0];
        let mut y = [0.0; 3];
        softmax_forward(&x, 1, 3, &mut y);
        let e = (-1.0f64).exp();
        assert_close(
            &y,
            &[1.0 / (1.0 + e), e / (1.0 + e), 0.0],
            1e-15,
            1e-300,
            "softmax",
        );
        log_softmax_forward(&x, 1, 3, &mut y);
        let lse = (1.0 + e).ln();
        assert_close(
            &y,
            &[-lse, -1.0 - lse, -2000.0 - lse],
            1e-15,
            0.0,
            "log_softmax",
        );
    }

    #[test]
    fn f32_matches_f64() {
        let x = values(R * C, 2.0);
        let xf: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let mut yf = vec![0.0f32; R * C];
        softmax_forward(&xf, R, C, &mut yf);
        let y: Vec<f64> = yf.iter().map(|&v| v as f64).collect();
        assert_close(&y, &naive_softmax(&x), 1e-6, 1e-7, "softmax f32");
        log_softmax_forward(&xf, R, C, &mut yf);
        let y: Vec<f64> = yf.iter().map(|&v| v as f64).collect();
        assert_close(&y, &naive_log_softmax(&x), 1e-6, 1e-6, "log_softmax f32");
    }

    #[test]
    fn softmax_backward_matches_finite_differences() {
        let mut x = values(R * C, 3.0);
        let r = values(R * C, 4.0);
        let mut y = vec![0.0; R * C];
        softmax_forward(&x, R, C, &mut y);
        let num = numeric_gradient(|x| weighted(&naive_softmax(x), &r), &mut x, 1e-6);
        check_both_modes(&num, 1e-7, 1e-10, "softmax dx", |dx, acc| {
            softmax_backward(&y, &r, R, C, dx, acc)
        });
    }

    #[test]
    fn log_softmax_backward_matches_finite_differences() {
        let mut x = values(R * C, 5.0);
        let r = values(R * C, 6.0);
        let mut y = vec![0.0; R * C];
        log_softmax_forward(&x, R, C, &mut y);
        let num = numeric_gradient(|x| weighted(&naive_log_softmax(x), &r), &mut x, 1e-6);
        check_both_modes(&num, 1e-7, 1e-10, "log_softmax dx", |dx, acc| {
            log_softmax_backward(&y, &r, R, C, dx, acc)
        });
    }

    /// `x` as `[outer, n, inner]` with the axis moved last: `[outer · inner, n]` rows.
    fn axis_last(x: &[f64], (outer, n, inner): (usize, usize, usize)) -> Vec<f64> {
        let mut rows = Vec::with_capacity(x.len());
        for o in 0..outer {
            for i in 0..inner {
                rows.extend((0..n).map(|k| x[(o * n + k) * inner + i]));
            }
        }
        rows
    }

    /// The inverse of [`axis_last`].
    fn axis_back(rows: &[f64], (outer, n, inner): (usize, usize, usize)) -> Vec<f64> {
        let mut x = vec![0.0; rows.len()];
        for o in 0..outer {
            for i in 0..inner {
                for k in 0..n {
                    x[(o * n + k) * inner + i] = rows[(o * inner + i) * n + k];
                }
            }
        }
        x
    }

    /// A softmax along the middle axis written the direct way, one `(o, i)` at a time.
    fn naive_axis(x: &[f64], dims: (usize, usize, usize), log: bool) -> Vec<f64> {
        let rows: Vec<f64> = axis_last(x, dims)
            .chunks(dims.1)
            .flat_map(|row| {
                let total: f64 = row.iter().map(|v| v.exp()).sum();
                row.iter()
                    .map(|v| {
                        let p = v.exp() / total;
                        if log {
                            p.ln()
                        } else {
                            p
                        }
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        axis_back(&rows, dims)
    }

    /// Middle axes of several shapes, with inner extents below, at and past one tile, and an
    /// axis of one element.
    const AXIS_SHAPES: [(usize, usize, usize); 5] = [
        (2, 3, 4),
        (1, 5, 7),
        (3, 4, TILE),
        (2, 3, TILE + 9),
        (2, 1, 5),
    ];

    #[test]
    fn axis_forward_matches_naive() {
        for (s, &(o, n, i)) in AXIS_SHAPES.iter().enumerate() {
            let x = values(o * n * i, 7.0 + s as f64);
            let mut y = vec![f64::NAN; x.len()];
            softmax_axis_forward(&x, o, n, i, &mut y);
            assert_close(
                &y,
                &naive_axis(&x, (o, n, i), false),
                1e-14,
                1e-16,
                "softmax axis",
            );
            log_softmax_axis_forward(&x, o, n, i, &mut y);
            assert_close(
                &y,
                &naive_axis(&x, (o, n, i), true),
                1e-13,
                1e-15,
                "log_softmax axis",
            );
        }
    }

    #[test]
    fn axis_kernels_give_the_row_kernels_bits() {
        // The same softmaxes laid out along a middle axis and as rows: equal bits.
        let dims = (2, 6, 5);
        let x = values(60, 8.0);
        let rows = axis_last(&x, dims);
        let (mut y, mut yr) = (vec![0.0; 60], vec![0.0; 60]);
        softmax_axis_forward(&x, 2, 6, 5, &mut y);
        softmax_forward(&rows, 10, 6, &mut yr);
        assert_eq!(y, axis_back(&yr, dims));
        log_softmax_axis_forward(&x, 2, 6, 5, &mut y);
        log_softmax_forward(&rows, 10, 6, &mut yr);
        assert_eq!(y, axis_back(&yr, dims));
        let dy = values(60, 9.0);
        let dyr = axis_last(&dy, dims);
        let (mut dx, mut dxr) = (vec![0.0; 60], vec![0.0; 60]);
        softmax_axis_backward(&y, &dy, 2, 6, 5, &mut dx, false);
        softmax_backward(&axis_last(&y, dims), &dyr, 10, 6, &mut dxr, false);
        assert_eq!(dx, axis_back(&dxr, dims));
        log_softmax_axis_backward(&y, &dy, 2, 6, 5, &mut dx, false);
        log_softmax_backward(&axis_last(&y, dims), &dyr, 10, 6, &mut dxr, false);
        assert_eq!(dx, axis_back(&dxr, dims));
        // inner = 1 is the row kernel itself.
        let mut y1 = vec![0.0; 60];
        softmax_axis_forward(&x, 10, 6, 1, &mut y1);
        softmax_forward(&x, 10, 6, &mut yr);
        assert_eq!(y1, yr);
    }

    #[test]
    fn axis_forward_is_stable_for_huge_logits() {
        // [1, 3, 2]: column 0 holds 1000, 999, -1000; column 1 holds -1000, -1000, -1000.
        let x = [1000.0f64, -1000.0, 999.0, -1000.0, -1000.0, -1000.0];
        let mut y = [0.0; 6];
        softmax_axis_forward(&x, 1, 3, 2, &mut y);
        let e = (-1.0f64).exp();
        let third = 1.0 / 3.0;
        let want = [1.0 / (1.0 + e), third, e / (1.0 + e), third, 0.0, third];
        assert_close(&y, &want, 1e-15, 1e-300, "softmax axis");
        log_softmax_axis_forward(&x, 1, 3, 2, &mut y);
        assert!(y.iter().all(|v| v.is_finite()));
        assert_close(&[y[0]], &[-(1.0 + e).ln()], 1e-15, 0.0, "log_softmax axis");
    }

    #[test]
    fn axis_backward_matches_finite_differences() {
        for (s, &(o, n, i)) in AXIS_SHAPES.iter().enumerate() {
            let dims = (o, n, i);
            let len = o * n * i;
            for log in [false, true] {
                let seed = 10.0 + s as f64 + if log { 0.5 } else { 0.0 };
                let mut x = values(len, seed);
                let r = values(len, seed + 20.0);
                let mut y = vec![0.0; len];
                if log {
                    log_softmax_axis_forward(&x, o, n, i, &mut y);
                } else {
                    softmax_axis_forward(&x, o, n, i, &mut y);
                }
                // A step of 1e-5: the loss sums hundreds of terms, whose rounding a smaller
                // step would magnify past the tolerance.
                let num =
                    numeric_gradient(|x| weighted(&naive_axis(x, dims, log), &r), &mut x, 1e-5);
                check_both_modes(
                    &num,
                    1e-6,
                    1e-8,
                    &format!("axis dx {dims:?} log {log}"),
                    |dx, acc| {
                        if log {
                            log_softmax_axis_backward(&y, &r, o, n, i, dx, acc)
                        } else {
                            softmax_axis_backward(&y, &r, o, n, i, dx, acc)
                        }
                    },
                );
            }
        }
    }

    #[test]
    fn axis_f32_matches_f64() {
        let (o, n, i) = (2, 4, TILE + 3);
        let x = values(o * n * i, 11.0);
        let xf: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let mut yf = vec![0.0f32; x.len()];
        softmax_axis_forward(&xf, o, n, i, &mut yf);
        let y: Vec<f64> = yf.iter().map(|&v| v as f64).collect();
        assert_close(&y, &naive_axis(&x, (o, n, i), false), 1e-6, 1e-7, "f32");
        log_softmax_axis_forward(&xf, o, n, i, &mut yf);
        let y: Vec<f64> = yf.iter().map(|&v| v as f64).collect();
        assert_close(&y, &naive_axis(&x, (o, n, i), true), 1e-6, 1e-6, "log f32");
    }

    #[test]
    fn empty_rows_and_columns() {
        let mut e: [f64; 0] = [];
        softmax_axis_forward(&[], 2, 0, 3, &mut e);
        softmax_axis_forward(&[], 0, 2, 3, &mut e);
        log_softmax_axis_forward(&[], 2, 3, 0, &mut e);
        softmax_axis_backward(&[], &[], 2, 0, 3, &mut e, false);
        log_softmax_axis_backward(&[], &[], 2, 3, 0, &mut e, true);
        let mut y: [f64; 0] = [];
        softmax_forward(&[], 0, 4, &mut y);
        softmax_forward(&[], 3, 0, &mut y);
        log_softmax_forward(&[], 3, 0, &mut y);
        softmax_backward(&[], &[], 3, 0, &mut y, false);
        log_softmax_backward(&[], &[], 0, 3, &mut y, true);
    }
}
