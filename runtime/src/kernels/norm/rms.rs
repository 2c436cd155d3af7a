//! RMS norm over the last axis of a `[rows, cols]` matrix (PyTorch's `nn.RMSNorm`, the norm of
//! LLaMA-style transformers), and its VJPs.
//!
//! Per row, `y = x · r · weight` with `r = 1 / √(mean(x²) + eps)`: a layer norm without the
//! mean's subtraction and without a bias. The row statistic is an f64 sum in the layer norm's
//! fixed interleaved partial sums ([`lane_sum`]), so a result is the same bits on every
//! instruction set; rows are cut into [`parallel::chunk_count`] fixed chunks the two threads
//! share, and the weight's gradient sums each column over the rows in order, so one thread or
//! two give the same bits too.

use super::check_len;
use super::layer::{lane_sum, lane_sum3, split};
use crate::kernels::dispatch::{run_fast, ElementLoop};
use crate::kernels::parallel::{self, SharedMut};
use crate::kernels::store;
use crate::Float;

/// RMS norm over the last axis of a `[rows, cols]` matrix, as PyTorch's `RMSNorm(cols, eps)`:
/// per row `y = x · r · weight`, `r = 1 / √(mean(x²) + eps)`, `weight` `[cols]`. The row
/// statistic is computed in f64; `r` is saved in `save_rms` (`[rows]`) for
/// [`rms_norm_backward`].
///
/// # Panics
/// If a slice's length disagrees with the sizes (a caller bug).
///
/// ```
/// use kiln_runtime::kernels::norm::rms_norm_forward;
/// let (mut y, mut r) = ([0.0f64; 2], [0.0]);
/// // mean(x²) = (9 + 16) / 2 = 12.5
/// rms_norm_forward(&[3.0, 4.0], &[1.0, 2.0], 1, 2, 0.0, &mut y, &mut r);
/// let want = 1.0 / 12.5f64.sqrt();
/// assert_eq!(r, [want]);
/// assert_eq!(y, [3.0 * want, 4.0 * want * 2.0]);
/// ```
#[allow(clippy::too_many_arguments)]
pub fn rms_norm_forward<F: Float>(
    x: &[F],
    weight: &[F],
    rows: usize,
    cols: usize,
    eps: F,
    y: &mut [F],
    save_rms: &mut [F],
) {
    const WHAT: &str = "rms_norm_forward";
    check_len(WHAT, "x", x.len(), rows * cols);
    check_len(WHAT, "y", y.len(), rows * cols);
    check_len(WHAT, "weight", weight.len(), cols);
    check_len(WHAT, "save_rms", save_rms.len(), rows);
    if cols == 0 {
        // The mean of nothing is NaN, as PyTorch's; there is nothing to write.
        save_rms.fill(F::from_f64(f64::NAN));
        return;
    }
    let pass = |range: std::ops::Range<usize>, y: &mut [F], r: &mut [F]| {
        run_fast(ForwardRows {
            x: &x[range.start * cols..range.end * cols],
            weight,
            cols,
            eps: eps.to_f64(),
            y,
            r,
        })
    };
    if !split(rows, cols) {
        return pass(0..rows, y, save_rms);
    }
    let chunks = parallel::chunk_count(rows);
    let (y, r) = (SharedMut::new(y), SharedMut::new(save_rms));
    parallel::for_each_chunk(chunks, |chunk, _| {
        let rs = parallel::chunk_range(rows, chunks, chunk);
        // SAFETY: each chunk is claimed once, and chunks cover disjoint rows.
        let (y, r) = unsafe { (y.range(rs.start * cols..rs.end * cols), r.range(rs.clone())) };
        pass(rs, y, r);
    });
}

/// The forward over some rows (see [`rms_norm_forward`]).
struct ForwardRows<'a, F> {
    x: &'a [F],
    weight: &'a [F],
    cols: usize,
    eps: f64,
    y: &'a mut [F],
    r: &'a mut [F],
}

impl<F: Float> ElementLoop for ForwardRows<'_, F> {
    #[inline(always)]
    fn run(self) {
        let n = self.cols as f64;
        let rows = self
            .x
            .chunks_exact(self.cols)
            .zip(self.y.chunks_exact_mut(self.cols));
        for (i, (xr, yr)) in rows.enumerate() {
            let sq = lane_sum(xr, |v| {
                let v = v.to_f64();
                v * v
            });
            let r = 1.0 / (sq / n + self.eps).sqrt();
            self.r[i] = F::from_f64(r);
            // (x · r) · weight, as PyTorch's `input * rsqrt(..)` then `* weight`.
            let r = F::from_f64(r);
            for ((yv, &xv), &w) in yr.iter_mut().zip(xr).zip(self.weight) {
                *yv = xv * r * w;
            }
        }
    }
}

/// The VJPs of [`rms_norm_forward`], from its `save_rms`. With `g = dy · weight`, per row of
/// `cols` elements:
///
/// - `dweight = Σ_rows dy · x · r`, OVERWRITTEN (`[cols]`);
/// - `dx = r · g − x · r³ · Σ(g · x) / cols`, written or added to the buffer of
///   `dx = Some((buffer, accumulate))`.
///
/// # Panics
/// If a slice's length disagrees with the sizes (a caller bug).
#[allow(clippy::too_many_arguments)]
pub fn rms_norm_backward<F: Float>(
    x: &[F],
    dy: &[F],
    weight: &[F],
    save_rms: &[F],
    rows: usize,
    cols: usize,
    dweight: &mut [F],
    dx: Option<(&mut [F], bool)>,
) {
    const WHAT: &str = "rms_norm_backward";
    check_len(WHAT, "x", x.len(), rows * cols);
    check_len(WHAT, "dy", dy.len(), rows * cols);
    check_len(WHAT, "weight", weight.len(), cols);
    check_len(WHAT, "save_rms", save_rms.len(), rows);
    check_len(WHAT, "dweight", dweight.len(), cols);
    if let Some((dx, _)) = dx.as_ref() {
        check_len(WHAT, "dx", dx.len(), rows * cols);
    }
    // Each column over the rows in order: row by row, the whole row of `dweight` at once.
    dweight.fill(F::ZERO);
    if cols > 0 {
        let rows_of = x.chunks_exact(cols).zip(dy.chunks_exact(cols));
        for ((xr, dyr), &r) in rows_of.zip(save_rms) {
            for ((dw, &xv), &d) in dweight.iter_mut().zip(xr).zip(dyr) {
                *dw += d * (xv * r);
            }
        }
    }
    let Some((dx, accumulate)) = dx else {
        return;
    };
    if cols == 0 {
        return;
    }
    let pass = |range: std::ops::Range<usize>, dx: &mut [F]| {
        let elems = range.start * cols..range.end * cols;
        run_fast(InputGradRows {
            x: &x[elems.clone()],
            dy: &dy[elems],
            weight,
            r: &save_rms[range],
            cols,
            dx,
            accumulate,
        })
    };
    if !split(rows, cols) {
        return pass(0..rows, dx);
    }
    let chunks = parallel::chunk_count(rows);
    let dx = SharedMut::new(dx);
    parallel::for_each_chunk(chunks, |chunk, _| {
        let rs = parallel::chunk_range(rows, chunks, chunk);
        // SAFETY: each chunk is claimed once, and chunks cover disjoint rows.
        let dx = unsafe { dx.range(rs.start * cols..rs.end * cols) };
        pass(rs, dx);
    });
}

/// The input gradient over some rows (see [`rms_norm_backward`]).
struct InputGradRows<'a, F> {
    x: &'a [F],
    dy: &'a [F],
    weight: &'a [F],
    r: &'a [F],
    cols: usize,
    dx: &'a mut [F],
    accumulate: bool,
}

impl<F: Float> ElementLoop for InputGradRows<'_, F> {
    #[inline(always)]
    fn run(self) {
        let n = self.cols as f64;
        let rows = self
            .x
            .chunks_exact(self.cols)
            .zip(self.dy.chunks_exact(self.cols))
            .zip(self.dx.chunks_exact_mut(self.cols));
        for (i, ((xr, dyr), dxr)) in rows.enumerate() {
            let r = self.r[i].to_f64();
            let gx = lane_sum3(xr, dyr, self.weight, |x, d, w| {
                (d.to_f64() * w.to_f64()) * x.to_f64()
            });
            let (scale, shift) = (F::from_f64(r), F::from_f64(r * r * r * gx / n));
            for (((slot, &xv), &d), &w) in dxr.iter_mut().zip(xr).zip(dyr).zip(self.weight) {
                store(slot, d * w * scale - xv * shift, self.accumulate);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::numeric_gradient;

    fn values(len: usize, seed: f64) -> Vec<f64> {
        (0..len)
            .map(|i| ((i as f64 + 1.0) * seed).sin() * 1.7 + 0.2)
            .collect()
    }

    /// Values PyTorch 2.15 gives (float64) for `F.rms_norm(x, (4,), w, eps=1e-6)` on two rows.
    #[test]
    fn matches_pytorch() {
        let x = [0.5, -1.0, 2.0, 0.25, 3.0, 0.0, -0.5, 1.5];
        let w = [1.0, 0.5, -2.0, 1.5];
        let (mut y, mut r) = ([0.0; 8], [0.0; 2]);
        rms_norm_forward(&x, &w, 2, 4, 1e-6, &mut y, &mut r);
        let want = [
            0.4338607523015305,
            -0.4338607523015305,
            -3.470886018412244,
            0.32539556422614785,
            1.769303166153894,
            0.0,
            0.589767722051298,
            1.3269773746154205,
        ];
        for (g, w) in y.iter().zip(want) {
            assert!((g - w).abs() < 1e-15, "{g} against {w}");
        }
    }

    #[test]
    fn gradients_are_central_differences() {
        let (rows, cols) = (3, 5);
        let w = values(cols, 0.7);
        let dy = values(rows * cols, 1.3);
        let mut x = values(rows * cols, 0.9);
        let eps = 1e-5;
        let loss = |x: &[f64], w: &[f64]| {
            let (mut y, mut r) = (vec![0.0; rows * cols], vec![0.0; rows]);
            rms_norm_forward(x, w, rows, cols, eps, &mut y, &mut r);
            y.iter().zip(&dy).map(|(a, b)| a * b).sum::<f64>()
        };
        let (mut y, mut r) = (vec![0.0; rows * cols], vec![0.0; rows]);
        rms_norm_forward(&x, &w, rows, cols, eps, &mut y, &mut r);
        let (mut dw, mut dx) = (vec![0.0; cols], vec![1.0; rows * cols]);
        rms_norm_backward(&x, &dy, &w, &r, rows, cols, &mut dw, Some((&mut dx, true)));
        let num_x = numeric_gradient(|x| loss(x, &w), &mut x, 1e-6);
        for (g, n) in dx.iter().zip(&num_x) {
            assert!((g - 1.0 - n).abs() < 1e-8, "dx {g} against {n}");
        }
        let num_w = numeric_gradient(|w| loss(&x, w), &mut w.clone(), 1e-6);
        for (g, n) in dw.iter().zip(&num_w) {
            assert!((g - n).abs() < 1e-8, "dweight {g} against {n}");
        }
    }

    /// Large enough to be cut into chunks the threads share: the same bits as each row on
    /// its own (a single row is never split).
    #[test]
    fn chunks_give_the_bits_of_single_rows() {
        let (rows, cols) = (300, 96);
        let x: Vec<f32> = values(rows * cols, 0.37)
            .iter()
            .map(|&v| v as f32)
            .collect();
        let dy: Vec<f32> = values(rows * cols, 0.11)
            .iter()
            .map(|&v| v as f32)
            .collect();
        let w: Vec<f32> = values(cols, 0.5).iter().map(|&v| v as f32).collect();
        let (mut y, mut r) = (vec![0.0f32; rows * cols], vec![0.0f32; rows]);
        rms_norm_forward(&x, &w, rows, cols, 1e-5, &mut y, &mut r);
        let mut dx = vec![0.0f32; rows * cols];
        let mut dw = vec![0.0f32; cols];
        rms_norm_backward(&x, &dy, &w, &r, rows, cols, &mut dw, Some((&mut dx, false)));
        for (i, &ri) in r.iter().enumerate() {
            let row = i * cols..(i + 1) * cols;
            let (mut y1, mut r1) = (vec![0.0f32; cols], [0.0f32]);
            rms_norm_forward(&x[row.clone()], &w, 1, cols, 1e-5, &mut y1, &mut r1);
            assert!(y1 == y[row.clone()] && r1[0] == ri, "row {i}");
            let (mut dx1, mut dw1) = (vec![0.0f32; cols], vec![0.0f32; cols]);
            let (xr, dyr) = (&x[row.clone()], &dy[row.clone()]);
            rms_norm_backward(xr, dyr, &w, &r1, 1, cols, &mut dw1, Some((&mut dx1, false)));
            assert!(dx1 == dx[row], "row {i}");
        }
    }
}
