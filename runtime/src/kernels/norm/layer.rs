//! Layer norm over the last axis of a `[rows, cols]` matrix, and its VJPs.
//!
//! The row statistics are f64 sums kept in [`LANES`] interleaved partial sums, so that the
//! loops vectorise (a single running f64 sum waits on every addition's latency, which made
//! layer norm a twentieth of a small transformer's step); the loops run through
//! [`run_fast`] for the CPU's vector units. Rows are independent, so they are cut into
//! [`parallel::chunk_count`] fixed chunks that the two threads share; the parameter
//! gradients (sums over rows) are split by columns instead, each column summed over the rows
//! in order. Every result is therefore the same bits on one thread or two.

use super::check_len;
use crate::kernels::dispatch::{run_fast, ElementLoop};
use crate::kernels::parallel::{self, SharedMut};
use crate::kernels::store;
use crate::Float;

/// Independent partial sums per row statistic: a fixed count (one 512-bit vector of f64), so
/// that a sum is the same on every instruction set.
const LANES: usize = 8;

/// The fewest elements worth handing part of to the helper thread.
const MIN_SPLIT_ELEMENTS: usize = 1 << 14;

/// Whether a `[rows, cols]` pass is worth splitting between the threads.
pub(super) fn split(rows: usize, cols: usize) -> bool {
    rows >= 2 && rows * cols >= MIN_SPLIT_ELEMENTS && parallel::threads() >= 2
}

/// `Σ f(v)` over a row, in [`LANES`] partial sums combined in order, then the tail.
#[inline(always)]
pub(super) fn lane_sum<F: Float>(row: &[F], f: impl Fn(F) -> f64) -> f64 {
    let mut lanes = [0.0f64; LANES];
    let (chunks, tail) = row.as_chunks::<LANES>();
    for chunk in chunks {
        for lane in 0..LANES {
            lanes[lane] += f(chunk[lane]);
        }
    }
    tail.iter().fold(fold(lanes), |sum, &v| sum + f(v))
}

/// `Σ f(a, b, c)` over three rows of the same length, as [`lane_sum`]. (One sum per loop:
/// with two accumulators in one loop LLVM's vectoriser keeps 128-bit pieces.)
#[inline(always)]
pub(super) fn lane_sum3<F: Float>(a: &[F], b: &[F], c: &[F], f: impl Fn(F, F, F) -> f64) -> f64 {
    let mut lanes = [0.0f64; LANES];
    let ((ca, ta), (cb, tb), (cc, tc)) = (
        a.as_chunks::<LANES>(),
        b.as_chunks::<LANES>(),
        c.as_chunks::<LANES>(),
    );
    for ((a, b), c) in ca.iter().zip(cb).zip(cc) {
        for lane in 0..LANES {
            lanes[lane] += f(a[lane], b[lane], c[lane]);
        }
    }
    let tail = ta.iter().zip(tb).zip(tc);
    tail.fold(fold(lanes), |sum, ((&a, &b), &c)| sum + f(a, b, c))
}

/// The lanes combined in order, a fixed order on every instruction set. (Not pairwise: LLVM's
/// vectoriser then keeps the lanes of the loop before in 128-bit pieces rather than one
/// 512-bit register.)
#[inline(always)]
fn fold(lanes: [f64; LANES]) -> f64 {
    lanes[1..].iter().fold(lanes[0], |acc, &x| acc + x)
}

/// Layer norm over the last axis of a `[rows, cols]` matrix, as PyTorch's `LayerNorm(cols)`:
/// per row, `y = (x − mean) · invstd · weight + bias` with the BIASED variance and
/// `invstd = 1 / √(var + eps)`; `weight` and `bias` are `[cols]`. The row statistics are
/// computed in f64 and saved in `save_mean` and `save_invstd` (`[rows]`) for
/// [`layer_norm_backward`].
///
/// # Panics
/// If a slice's length disagrees with the sizes (a caller bug).
///
/// ```
/// use kiln_runtime::kernels::norm::layer_norm_forward;
/// let (mut y, mut mean, mut invstd) = ([0.0f64; 2], [0.0], [0.0]);
/// layer_norm_forward(&[1.0, 3.0], &[1.0, 1.0], &[0.0, 0.0], 1, 2, 0.0, &mut y, &mut mean, &mut invstd);
/// assert_eq!((y, mean, invstd), ([-1.0, 1.0], [2.0], [1.0]));
/// ```
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_forward<F: Float>(
    x: &[F],
    weight: &[F],
    bias: &[F],
    rows: usize,
    cols: usize,
    eps: F,
    y: &mut [F],
    save_mean: &mut [F],
    save_invstd: &mut [F],
) {
    const WHAT: &str = "layer_norm_forward";
    check_len(WHAT, "x", x.len(), rows * cols);
    check_len(WHAT, "y", y.len(), rows * cols);
    check_len(WHAT, "weight", weight.len(), cols);
    check_len(WHAT, "bias", bias.len(), cols);
    check_len(WHAT, "save_mean", save_mean.len(), rows);
    check_len(WHAT, "save_invstd", save_invstd.len(), rows);
    if cols == 0 {
        // PyTorch gives NaN statistics for an empty row (0 / 0); there is nothing to write.
        save_mean.fill(F::from_f64(f64::NAN));
        save_invstd.fill(F::from_f64(f64::NAN));
        return;
    }
    let pass = |range: std::ops::Range<usize>, y: &mut [F], mean: &mut [F], invstd: &mut [F]| {
        run_fast(ForwardRows {
            x: &x[range.start * cols..range.end * cols],
            weight,
            bias,
            cols,
            eps: eps.to_f64(),
            y,
            mean,
            invstd,
        })
    };
    if !split(rows, cols) {
        return pass(0..rows, y, save_mean, save_invstd);
    }
    let chunks = parallel::chunk_count(rows);
    let (y, mean, invstd) = (
        SharedMut::new(y),
        SharedMut::new(save_mean),
        SharedMut::new(save_invstd),
    );
    parallel::for_each_chunk(chunks, |chunk, _| {
        let r = parallel::chunk_range(rows, chunks, chunk);
        // SAFETY: each chunk is claimed once, and chunks cover disjoint rows.
        let parts = unsafe {
            (
                y.range(r.start * cols..r.end * cols),
                mean.range(r.clone()),
                invstd.range(r.clone()),
            )
        };
        pass(r, parts.0, parts.1, parts.2);
    });
}

/// The forward over some rows (see [`layer_norm_forward`]).
struct ForwardRows<'a, F> {
    x: &'a [F],
    weight: &'a [F],
    bias: &'a [F],
    cols: usize,
    eps: f64,
    y: &'a mut [F],
    mean: &'a mut [F],
    invstd: &'a mut [F],
}

impl<F: Float> ElementLoop for ForwardRows<'_, F> {
    #[inline(always)]
    fn run(self) {
        let n = self.cols as f64;
        let rows = self
            .x
            .chunks_exact(self.cols)
            .zip(self.y.chunks_exact_mut(self.cols));
        for (r, (xr, yr)) in rows.enumerate() {
            let mean = lane_sum(xr, |v| v.to_f64()) / n;
            let sq = lane_sum(xr, |v| {
                let d = v.to_f64() - mean;
                d * d
            });
            let invstd = 1.0 / (sq / n + self.eps).sqrt();
            self.mean[r] = F::from_f64(mean);
            self.invstd[r] = F::from_f64(invstd);
            // (x · invstd − mean · invstd) · weight + bias, as PyTorch's CPU kernel.
            let (scale, shift) = (F::from_f64(invstd), F::from_f64(-mean * invstd));
            for (((yv, &xv), &w), &b) in yr.iter_mut().zip(xr).zip(self.weight).zip(self.bias) {
                *yv = (xv * scale + shift) * w + b;
            }
        }
    }
}

/// The VJPs of [`layer_norm_forward`], from its `save_mean` / `save_invstd`. With
/// `x̂ = (x − mean) · invstd` and `g = dy · weight`, per row of `cols` elements:
///
/// - `dweight = Σ_rows dy · x̂` and `dbias = Σ_rows dy`, OVERWRITTEN (`[cols]`);
/// - `dx = invstd / cols · (cols · g − Σ g − x̂ · Σ g · x̂)`, written or added to the buffer of
///   `dx = Some((buffer, accumulate))`.
///
/// # Panics
/// If a slice's length disagrees with the sizes (a caller bug).
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_backward<F: Float>(
    x: &[F],
    dy: &[F],
    weight: &[F],
    save_mean: &[F],
    save_invstd: &[F],
    rows: usize,
    cols: usize,
    dweight: &mut [F],
    dbias: &mut [F],
    dx: Option<(&mut [F], bool)>,
) {
    const WHAT: &str = "layer_norm_backward";
    check_len(WHAT, "x", x.len(), rows * cols);
    check_len(WHAT, "dy", dy.len(), rows * cols);
    check_len(WHAT, "weight", weight.len(), cols);
    check_len(WHAT, "save_mean", save_mean.len(), rows);
    check_len(WHAT, "save_invstd", save_invstd.len(), rows);
    check_len(WHAT, "dweight", dweight.len(), cols);
    check_len(WHAT, "dbias", dbias.len(), cols);
    if let Some((dx, _)) = dx.as_ref() {
        check_len(WHAT, "dx", dx.len(), rows * cols);
    }
    let parallel = split(rows, cols);
    param_grads(
        x,
        dy,
        save_mean,
        save_invstd,
        cols,
        dweight,
        dbias,
        parallel,
    );
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
            mean: &save_mean[range.clone()],
            invstd: &save_invstd[range],
            cols,
            dx,
            accumulate,
        })
    };
    if !parallel {
        return pass(0..rows, dx);
    }
    let chunks = parallel::chunk_count(rows);
    let dx = SharedMut::new(dx);
    parallel::for_each_chunk(chunks, |chunk, _| {
        let r = parallel::chunk_range(rows, chunks, chunk);
        // SAFETY: each chunk is claimed once, and chunks cover disjoint rows.
        let dx = unsafe { dx.range(r.start * cols..r.end * cols) };
        pass(r, dx);
    });
}

/// `dweight = Σ_rows dy · x̂` and `dbias = Σ_rows dy`, each column summed over the rows in
/// order; split by columns between the threads when `parallel`.
#[allow(clippy::too_many_arguments)]
fn param_grads<F: Float>(
    x: &[F],
    dy: &[F],
    mean: &[F],
    invstd: &[F],
    cols: usize,
    dweight: &mut [F],
    dbias: &mut [F],
    parallel: bool,
) {
    let pass = |start: usize, dweight: &mut [F], dbias: &mut [F]| {
        run_fast(ParamGradColumns {
            rows: Rows {
                x,
                dy,
                mean,
                invstd,
                cols,
            },
            start,
            dweight,
            dbias,
        })
    };
    if !parallel {
        return pass(0, dweight, dbias);
    }
    let (dweight, dbias) = (SharedMut::new(dweight), SharedMut::new(dbias));
    parallel::for_each_column_piece(cols, GROUP, GROUP, |columns| {
        // SAFETY: each piece is run once, and pieces cover disjoint columns.
        let (dw, db) = unsafe { (dweight.range(columns.clone()), dbias.range(columns.clone())) };
        pass(columns.start, dw, db);
    });
}

/// The parameter gradients of the columns `start .. start + dweight.len()` (see
/// [`param_grads`]).
struct ParamGradColumns<'a, F> {
    rows: Rows<'a, F>,
    start: usize,
    dweight: &'a mut [F],
    dbias: &'a mut [F],
}

/// What the parameter gradients are summed from.
#[derive(Clone, Copy)]
struct Rows<'a, F> {
    x: &'a [F],
    dy: &'a [F],
    mean: &'a [F],
    invstd: &'a [F],
    cols: usize,
}

impl<F: Float> ElementLoop for ParamGradColumns<'_, F> {
    #[inline(always)]
    fn run(self) {
        let width = self.dweight.len();
        let (dw_groups, dw_tail) = self.dweight.as_chunks_mut::<GROUP>();
        let (db_groups, db_tail) = self.dbias.as_chunks_mut::<GROUP>();
        let (rows, start) = (self.rows, self.start);
        let columns = |group: usize| start + group * GROUP;
        for (g, (dw, db)) in dw_groups.iter_mut().zip(db_groups.iter_mut()).enumerate() {
            (*dw, *db) = rows.sum_columns::<GROUP>(columns(g));
        }
        if !dw_tail.is_empty() {
            // The last group is narrower: summed as a full one over the columns that exist.
            let first = columns(width / GROUP);
            let n = dw_tail.len();
            let (dw, db) = rows.sum_columns_partial(first, n);
            dw_tail.copy_from_slice(&dw[..n]);
            db_tail.copy_from_slice(&db[..n]);
        }
    }
}

/// Columns summed at once: one 512-bit vector of f32, kept in registers over all the rows
/// (so the threads never write the same cache line while summing).
const GROUP: usize = 16;

impl<F: Float> Rows<'_, F> {
    /// `(Σ_rows dy · x̂, Σ_rows dy)` of the `N` columns from `first`, rows in order.
    #[inline(always)]
    fn sum_columns<const N: usize>(&self, first: usize) -> ([F; N], [F; N]) {
        let (mut dw, mut db) = ([F::ZERO; N], [F::ZERO; N]);
        let rows = self
            .x
            .chunks_exact(self.cols)
            .zip(self.dy.chunks_exact(self.cols));
        for (r, (xr, dyr)) in rows.enumerate() {
            let (mean, invstd) = (self.mean[r], self.invstd[r]);
            let (Some(xs), Some(ds)) = (
                xr[first..].first_chunk::<N>(),
                dyr[first..].first_chunk::<N>(),
            ) else {
                continue;
            };
            for j in 0..N {
                dw[j] += ds[j] * ((xs[j] - mean) * invstd);
                db[j] += ds[j];
            }
        }
        (dw, db)
    }

    /// As [`Self::sum_columns`] for the `n < GROUP` columns from `first`.
    fn sum_columns_partial(&self, first: usize, n: usize) -> ([F; GROUP], [F; GROUP]) {
        let (mut dw, mut db) = ([F::ZERO; GROUP], [F::ZERO; GROUP]);
        let rows = self
            .x
            .chunks_exact(self.cols)
            .zip(self.dy.chunks_exact(self.cols));
        for (r, (xr, dyr)) in rows.enumerate() {
            let (mean, invstd) = (self.mean[r], self.invstd[r]);
            let (xs, ds) = (&xr[first..first + n], &dyr[first..first + n]);
            for (((dw, db), &xv), &d) in dw.iter_mut().zip(db.iter_mut()).zip(xs).zip(ds) {
                *dw += d * ((xv - mean) * invstd);
                *db += d;
            }
        }
        (dw, db)
    }
}

/// The input gradient of some rows (see [`layer_norm_backward`]).
struct InputGradRows<'a, F> {
    x: &'a [F],
    dy: &'a [F],
    weight: &'a [F],
    mean: &'a [F],
    invstd: &'a [F],
    cols: usize,
    dx: &'a mut [F],
    accumulate: bool,
}

impl<F: Float> ElementLoop for InputGradRows<'_, F> {
    #[inline(always)]
    fn run(self) {
        let n = self.cols as f64;
        let weight = self.weight;
        let rows = self
            .x
            .chunks_exact(self.cols)
            .zip(self.dy.chunks_exact(self.cols))
            .zip(self.dx.chunks_exact_mut(self.cols));
        for (r, ((xr, dyr), dxr)) in rows.enumerate() {
            let (mean, invstd) = (self.mean[r], self.invstd[r]);
            // Σ g and Σ g · x̂ over the row, in f64.
            let sum_g = lane_sum3(dyr, weight, xr, |d, w, _| (d * w).to_f64());
            let dot = lane_sum3(dyr, weight, xr, |d, w, x| {
                (d * w).to_f64() * ((x - mean) * invstd).to_f64()
            });
            let mean_g = F::from_f64(sum_g / n);
            let mean_dot = F::from_f64(dot / n);
            for (((slot, &xv), &d), &w) in dxr.iter_mut().zip(xr).zip(dyr).zip(weight) {
                let xhat = (xv - mean) * invstd;
                store(
                    slot,
                    (d * w - mean_g - xhat * mean_dot) * invstd,
                    self.accumulate,
                );
            }
        }
    }
}
