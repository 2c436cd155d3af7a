//! Softmax and log-softmax over the last axis of a `rows × cols` matrix, and their VJPs.

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

    #[test]
    fn empty_rows_and_columns() {
        let mut y: [f64; 0] = [];
        softmax_forward(&[], 0, 4, &mut y);
        softmax_forward(&[], 3, 0, &mut y);
        log_softmax_forward(&[], 3, 0, &mut y);
        softmax_backward(&[], &[], 3, 0, &mut y, false);
        log_softmax_backward(&[], &[], 0, 3, &mut y, true);
    }
}
