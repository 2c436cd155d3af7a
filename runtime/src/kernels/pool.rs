//! 2-D max and average pooling over NCHW activations (PyTorch's `MaxPool2d` / `AvgPool2d`
//! without padding, dilation or `ceil_mode`), and their VJPs.
//!
//! `x` is `[batch, channels, in_h, in_w]` and `y` is `[batch, channels, out_h, out_w]` with
//! `out = ⌊(in − kernel) / stride⌋ + 1`: trailing rows and columns that do not fill a window
//! are ignored, as in PyTorch. Windows may overlap (`stride < kernel`).
//!
//! Pooling of a large batch runs chunk by chunk on two threads (`kernels/parallel.rs`);
//! every sample is independent, so the result is the same.

use super::parallel::{self, SharedMut};
use crate::Float;
use std::ops::Range;

/// Whether `v` is NaN (the only value unordered with itself).
#[inline(always)]
fn is_nan<F: Float>(v: F) -> bool {
    v.partial_cmp(&v).is_none()
}

/// The sizes of a 2-D pooling: batch, channels, input extent, window and stride.
///
/// ```
/// use kiln_runtime::kernels::pool::Pool2dGeometry;
/// let g = Pool2dGeometry {
///     batch: 1, channels: 3, in_h: 7, in_w: 7,
///     kernel_h: 2, kernel_w: 2, stride_h: 2, stride_w: 2,
/// };
/// assert_eq!((g.out_h(), g.out_w()), (3, 3));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Pool2dGeometry {
    /// Samples in the batch.
    pub batch: usize,
    /// Channels (pooled independently).
    pub channels: usize,
    /// Input height.
    pub in_h: usize,
    /// Input width.
    pub in_w: usize,
    /// Window height (≥ 1).
    pub kernel_h: usize,
    /// Window width (≥ 1).
    pub kernel_w: usize,
    /// Vertical stride (≥ 1; PyTorch's default is the window height).
    pub stride_h: usize,
    /// Horizontal stride (≥ 1; PyTorch's default is the window width).
    pub stride_w: usize,
}

fn out_extent(input: usize, kernel: usize, stride: usize) -> usize {
    if kernel == 0 || stride == 0 || input < kernel {
        0
    } else {
        (input - kernel) / stride + 1
    }
}

impl Pool2dGeometry {
    /// The output height `⌊(in_h − kernel_h) / stride_h⌋ + 1`, or 0 when the window is taller
    /// than the input.
    pub fn out_h(&self) -> usize {
        out_extent(self.in_h, self.kernel_h, self.stride_h)
    }

    /// The output width `⌊(in_w − kernel_w) / stride_w⌋ + 1`, or 0 when the window is wider
    /// than the input.
    pub fn out_w(&self) -> usize {
        out_extent(self.in_w, self.kernel_w, self.stride_w)
    }

    /// The elements of `x`: `batch · channels · in_h · in_w`.
    pub fn input_len(&self) -> usize {
        self.batch * self.channels * self.in_h * self.in_w
    }

    /// The elements of `y`: `batch · channels · out_h · out_w`.
    pub fn output_len(&self) -> usize {
        self.batch * self.channels * self.out_h() * self.out_w()
    }

    #[track_caller]
    fn check(&self, what: &str) {
        assert!(
            self.kernel_h > 0 && self.kernel_w > 0 && self.stride_h > 0 && self.stride_w > 0,
            "{what}: window ({}, {}) and stride ({}, {}) must be at least 1",
            self.kernel_h,
            self.kernel_w,
            self.stride_h,
            self.stride_w
        );
    }
}

#[track_caller]
fn check_len(what: &str, name: &str, got: usize, want: usize) {
    assert_eq!(
        got, want,
        "{what}: {name} has {got} elements, expected {want}"
    );
}

/// Calls `f(x_plane_offset, y_index, window_top_left)` for every output element: the plane
/// offset of its (sample, channel) in `x`, its own index in `y`, and the flat index within the
/// plane of its window's top-left input.
#[inline(always)]
fn for_each_window(g: &Pool2dGeometry, mut f: impl FnMut(usize, usize, usize)) {
    let (out_h, out_w) = (g.out_h(), g.out_w());
    let plane = g.in_h * g.in_w;
    let mut out = 0;
    for nc in 0..g.batch * g.channels {
        for i in 0..out_h {
            for j in 0..out_w {
                f(nc * plane, out, i * g.stride_h * g.in_w + j * g.stride_w);
                out += 1;
            }
        }
    }
}

/// The index (within the plane) of the element PyTorch's CPU kernel selects in the window at
/// `top_left`: scanning in row-major order it takes an element when it is greater than the
/// best so far or when it is NaN, starting from −∞ at the first element. So among numbers the
/// FIRST maximum wins, any NaN beats every number, and the LAST NaN wins among NaNs; a window
/// of −∞ selects its first element.
#[inline]
fn window_argmax<F: Float>(plane: &[F], g: &Pool2dGeometry, top_left: usize) -> usize {
    let mut best_index = top_left;
    let mut best = plane[top_left];
    for u in 0..g.kernel_h {
        let row = top_left + u * g.in_w;
        for (v, &val) in plane[row..row + g.kernel_w].iter().enumerate() {
            // The first element compares against itself, which changes nothing.
            if val > best || is_nan(val) {
                best = val;
                best_index = row + v;
            }
        }
    }
    best_index
}

/// `y = max_pool2d(x)`: the maximum of every `kernel_h × kernel_w` window, `y` overwritten.
/// NaN propagates (a window holding a NaN gives NaN), as in PyTorch.
///
/// # Panics
/// If a slice's length disagrees with `g`, or a window or stride size is 0 (caller bugs).
///
/// ```
/// use kiln_runtime::kernels::pool::{max_pool2d_forward, Pool2dGeometry};
/// let g = Pool2dGeometry {
///     batch: 1, channels: 1, in_h: 2, in_w: 4,
///     kernel_h: 2, kernel_w: 2, stride_h: 2, stride_w: 2,
/// };
/// let mut y = [0.0f32; 2];
/// max_pool2d_forward(&[1.0, 5.0, 2.0, 0.0, 3.0, 4.0, -1.0, 6.0], &g, &mut y);
/// assert_eq!(y, [5.0, 6.0]);
/// ```
pub fn max_pool2d_forward<F: Float>(x: &[F], g: &Pool2dGeometry, y: &mut [F]) {
    const WHAT: &str = "max_pool2d_forward";
    g.check(WHAT);
    check_len(WHAT, "x", x.len(), g.input_len());
    check_len(WHAT, "y", y.len(), g.output_len());
    forward_by_chunks(x, g, y, max_pool2d_forward_serial);
}

/// Whether a pooling is large enough for two threads: at least 2¹⁶ input elements (below
/// that, handing half to the helper costs about what it saves).
fn worth_splitting(g: &Pool2dGeometry) -> bool {
    const MIN_INPUT: usize = 1 << 16;
    g.batch >= 2 && g.input_len() >= MIN_INPUT && parallel::threads() >= 2
}

/// Runs a forward pooling (`serial`, on one thread) over the whole batch, or chunk by chunk
/// on two threads when the batch is large.
fn forward_by_chunks<F: Float>(
    x: &[F],
    g: &Pool2dGeometry,
    y: &mut [F],
    serial: fn(&[F], &Pool2dGeometry, &mut [F]),
) {
    if !worth_splitting(g) {
        return serial(x, g, y);
    }
    let y = SharedMut::new(y);
    by_chunks(g, |g_c, inputs, outputs| {
        // SAFETY: each chunk is claimed once and covers its own samples.
        let y_c = unsafe { y.range(outputs) };
        serial(&x[inputs], g_c, y_c);
    });
}

/// Runs `f(chunk geometry, chunk's input range, chunk's output range)` for every chunk of
/// the batch ([`parallel::chunk_range`]), on two threads ([`parallel::for_each_chunk`]).
fn by_chunks(g: &Pool2dGeometry, f: impl Fn(&Pool2dGeometry, Range<usize>, Range<usize>) + Sync) {
    let chunks = parallel::chunk_count(g.batch);
    let (in_sample, out_sample) = (g.input_len() / g.batch, g.output_len() / g.batch);
    parallel::for_each_chunk(chunks, |chunk, _| {
        let samples = parallel::chunk_range(g.batch, chunks, chunk);
        let g_c = Pool2dGeometry {
            batch: samples.len(),
            ..*g
        };
        f(
            &g_c,
            samples.start * in_sample..samples.end * in_sample,
            samples.start * out_sample..samples.end * out_sample,
        );
    });
}

/// [`max_pool2d_forward`] on this thread.
fn max_pool2d_forward_serial<F: Float>(x: &[F], g: &Pool2dGeometry, y: &mut [F]) {
    let plane = g.in_h * g.in_w;
    if plane == 0 || y.is_empty() {
        return;
    }
    if g.kernel_h == 2 && g.kernel_w == 2 && g.stride_h == 2 && g.stride_w == 2 {
        max_pool_2x2_forward(x, g, y);
        return;
    }
    for_each_window(g, |base, out, top_left| {
        let x_p = &x[base..base + plane];
        y[out] = window_max(x_p, g, top_left);
    });
}

/// PyTorch's selection step: `v` replaces `best` when it is greater or NaN. Written as a
/// select so that it compiles without branches.
#[inline(always)]
fn pick<F: Float>(best: F, v: F) -> F {
    #[allow(clippy::eq_op)]
    let take = (v > best) | (v != v);
    if take {
        v
    } else {
        best
    }
}

/// The value [`window_argmax`] selects (the same element, so the same bits).
#[inline]
fn window_max<F: Float>(plane: &[F], g: &Pool2dGeometry, top_left: usize) -> F {
    let mut best = plane[top_left];
    for u in 0..g.kernel_h {
        let row = top_left + u * g.in_w;
        for &val in &plane[row..row + g.kernel_w] {
            best = pick(best, val);
        }
    }
    best
}

/// The 2×2, stride-2 forward: each output row reads a pair of input rows.
fn max_pool_2x2_forward<F: Float>(x: &[F], g: &Pool2dGeometry, y: &mut [F]) {
    let (out_h, out_w) = (g.out_h(), g.out_w());
    let (in_w, plane) = (g.in_w, g.in_h * g.in_w);
    for (x_p, y_p) in x.chunks_exact(plane).zip(y.chunks_exact_mut(out_h * out_w)) {
        for (i, y_row) in y_p.chunks_exact_mut(out_w).enumerate() {
            let r0 = &x_p[2 * i * in_w..2 * i * in_w + 2 * out_w];
            let r1 = &x_p[(2 * i + 1) * in_w..(2 * i + 1) * in_w + 2 * out_w];
            for ((dst, a), b) in y_row
                .iter_mut()
                .zip(r0.chunks_exact(2))
                .zip(r1.chunks_exact(2))
            {
                let best = pick(a[0], a[1]);
                let best = pick(best, b[0]);
                *dst = pick(best, b[1]);
            }
        }
    }
}

/// The VJP of [`max_pool2d_forward`]: each `dy` element flows to the input its window selected
/// (written into `dx`, or added when `accumulate`; inputs no window selected get 0, or are left
/// as they are). Overlapping windows that select the same input add up.
///
/// No index buffer is kept: the selection is recomputed from `x` with PyTorch's rule (the
/// first maximum in row-major window order; NaN beats numbers, the last NaN wins), so the
/// gradient goes where PyTorch's does, ties included. `y` must be the forward output for this
/// `x`: it is used to stop each window's scan at the selected element, and is checked against
/// `x` (a disagreement panics, as a caller bug).
///
/// # Panics
/// If a slice's length disagrees with `g`, a window or stride size is 0, or `y` is not the
/// forward output of `x` (caller bugs).
pub fn max_pool2d_backward<F: Float>(
    x: &[F],
    y: &[F],
    dy: &[F],
    g: &Pool2dGeometry,
    dx: &mut [F],
    accumulate: bool,
) {
    const WHAT: &str = "max_pool2d_backward";
    g.check(WHAT);
    check_len(WHAT, "x", x.len(), g.input_len());
    check_len(WHAT, "y", y.len(), g.output_len());
    check_len(WHAT, "dy", dy.len(), g.output_len());
    check_len(WHAT, "dx", dx.len(), g.input_len());
    if worth_splitting(g) {
        let dx = SharedMut::new(dx);
        by_chunks(g, |g_c, inputs, outputs| {
            // SAFETY: each chunk is claimed once and covers its own samples.
            let dx_c = unsafe { dx.range(inputs.clone()) };
            let (x_c, y_c, dy_c) = (&x[inputs], &y[outputs.clone()], &dy[outputs]);
            max_pool2d_backward_serial(x_c, y_c, dy_c, g_c, dx_c, accumulate);
        });
    } else {
        max_pool2d_backward_serial(x, y, dy, g, dx, accumulate);
    }
}

/// [`max_pool2d_backward`] on this thread.
fn max_pool2d_backward_serial<F: Float>(
    x: &[F],
    y: &[F],
    dy: &[F],
    g: &Pool2dGeometry,
    dx: &mut [F],
    accumulate: bool,
) {
    if g.kernel_h == 2 && g.kernel_w == 2 && g.stride_h == 2 && g.stride_w == 2 {
        max_pool_2x2_backward(x, y, dy, g, dx, accumulate);
        return;
    }
    if !accumulate {
        dx.fill(F::ZERO);
    }
    let plane = g.in_h * g.in_w;
    for_each_window(g, |base, out, top_left| {
        let x_p = &x[base..base + plane];
        let target = y[out];
        let index = if !is_nan(target) {
            // Not NaN, so the window holds no NaN and its selection is the first element equal
            // to the maximum, which the forward copied into y bit for bit.
            first_equal(x_p, g, top_left, target)
                .expect("max_pool2d_backward: y is not max_pool2d_forward(x)")
        } else {
            window_argmax(x_p, g, top_left)
        };
        dx[base + index] += dy[out];
    });
}

#[cold]
#[inline(never)]
fn foreign_y() -> ! {
    panic!("max_pool2d_backward: y is not max_pool2d_forward(x)")
}

/// The 2×2, stride-2 backward. The windows do not overlap, so when overwriting every input
/// is written exactly once (inputs past the last full window, 0); the selected one gets
/// `0 + dy` as the general path's fill-then-add would give it.
fn max_pool_2x2_backward<F: Float>(
    x: &[F],
    y: &[F],
    dy: &[F],
    g: &Pool2dGeometry,
    dx: &mut [F],
    accumulate: bool,
) {
    let (out_h, out_w) = (g.out_h(), g.out_w());
    let (in_w, plane) = (g.in_w, g.in_h * g.in_w);
    if plane == 0 {
        return;
    }
    let out_plane = out_h * out_w;
    if out_plane == 0 {
        if !accumulate {
            dx.fill(F::ZERO);
        }
        return;
    }
    let used_w = 2 * out_w;
    for (((x_p, dx_p), y_p), dy_p) in x
        .chunks_exact(plane)
        .zip(dx.chunks_exact_mut(plane))
        .zip(y.chunks_exact(out_plane))
        .zip(dy.chunks_exact(out_plane))
    {
        for i in 0..out_h {
            let y_row = &y_p[i * out_w..(i + 1) * out_w];
            let dy_row = &dy_p[i * out_w..(i + 1) * out_w];
            let r0 = &x_p[2 * i * in_w..2 * i * in_w + used_w];
            let r1 = &x_p[(2 * i + 1) * in_w..(2 * i + 1) * in_w + used_w];
            let rows = &mut dx_p[2 * i * in_w..(2 * i + 2) * in_w];
            if !accumulate {
                rows.fill(F::ZERO);
            }
            for j in 0..out_w {
                let t = y_row[j];
                let (a, b, c, d) = (r0[2 * j], r0[2 * j + 1], r1[2 * j], r1[2 * j + 1]);
                #[allow(clippy::eq_op)]
                let k = if t == t {
                    // Not NaN: the first element equal to the maximum (4: none, a foreign y).
                    let bits = (a == t) as u32
                        | ((b == t) as u32) << 1
                        | ((c == t) as u32) << 2
                        | ((d == t) as u32) << 3
                        | 1 << 4;
                    bits.trailing_zeros() as usize
                } else {
                    // NaN: PyTorch's scan (the last NaN).
                    let mut k = 0;
                    let mut best = a;
                    for (m, v) in [b, c, d].into_iter().enumerate() {
                        if v > best || v != v {
                            best = v;
                            k = m + 1;
                        }
                    }
                    k
                };
                if k == 4 {
                    foreign_y();
                }
                // Rows fill with 0 above, so `+=` gives the `0 + dy` of fill-then-add.
                rows[(k >> 1) * in_w + 2 * j + (k & 1)] += dy_row[j];
            }
        }
        if !accumulate {
            dx_p[2 * out_h * in_w..].fill(F::ZERO);
        }
    }
}

/// The first element of the window equal to `target`, in row-major order.
#[inline]
fn first_equal<F: Float>(
    plane: &[F],
    g: &Pool2dGeometry,
    top_left: usize,
    target: F,
) -> Option<usize> {
    (0..g.kernel_h).find_map(|u| {
        let row = top_left + u * g.in_w;
        plane[row..row + g.kernel_w]
            .iter()
            .position(|&v| v == target)
            .map(|v| row + v)
    })
}

/// `y = avg_pool2d(x)`: the mean of every `kernel_h × kernel_w` window (divisor
/// `kernel_h · kernel_w`), `y` overwritten.
///
/// # Panics
/// If a slice's length disagrees with `g`, or a window or stride size is 0 (caller bugs).
///
/// ```
/// use kiln_runtime::kernels::pool::{avg_pool2d_forward, Pool2dGeometry};
/// let g = Pool2dGeometry {
///     batch: 1, channels: 1, in_h: 2, in_w: 2,
///     kernel_h: 2, kernel_w: 2, stride_h: 2, stride_w: 2,
/// };
/// let mut y = [0.0f64];
/// avg_pool2d_forward(&[1.0, 2.0, 3.0, 6.0], &g, &mut y);
/// assert_eq!(y, [3.0]);
/// ```
pub fn avg_pool2d_forward<F: Float>(x: &[F], g: &Pool2dGeometry, y: &mut [F]) {
    const WHAT: &str = "avg_pool2d_forward";
    g.check(WHAT);
    check_len(WHAT, "x", x.len(), g.input_len());
    check_len(WHAT, "y", y.len(), g.output_len());
    forward_by_chunks(x, g, y, avg_pool2d_forward_serial);
}

/// [`avg_pool2d_forward`] on this thread.
fn avg_pool2d_forward_serial<F: Float>(x: &[F], g: &Pool2dGeometry, y: &mut [F]) {
    let plane = g.in_h * g.in_w;
    let count = F::from_usize(g.kernel_h * g.kernel_w);
    for_each_window(g, |base, out, top_left| {
        let x_p = &x[base..base + plane];
        let mut total = F::ZERO;
        for u in 0..g.kernel_h {
            let row = top_left + u * g.in_w;
            for &v in &x_p[row..row + g.kernel_w] {
                total += v;
            }
        }
        y[out] = total / count;
    });
}

/// The VJP of [`avg_pool2d_forward`]: every input of a window gets `dy / (kernel_h · kernel_w)`
/// from it (summed over overlapping windows), written into `dx` or added when `accumulate`.
/// Inputs no window covers get 0 (or are left as they are).
///
/// # Panics
/// If a slice's length disagrees with `g`, or a window or stride size is 0 (caller bugs).
pub fn avg_pool2d_backward<F: Float>(dy: &[F], g: &Pool2dGeometry, dx: &mut [F], accumulate: bool) {
    const WHAT: &str = "avg_pool2d_backward";
    g.check(WHAT);
    check_len(WHAT, "dy", dy.len(), g.output_len());
    check_len(WHAT, "dx", dx.len(), g.input_len());
    if worth_splitting(g) {
        let dx = SharedMut::new(dx);
        by_chunks(g, |g_c, inputs, outputs| {
            // SAFETY: each chunk is claimed once and covers its own samples.
            let dx_c = unsafe { dx.range(inputs) };
            avg_pool2d_backward_serial(&dy[outputs], g_c, dx_c, accumulate);
        });
    } else {
        avg_pool2d_backward_serial(dy, g, dx, accumulate);
    }
}

/// [`avg_pool2d_backward`] on this thread.
fn avg_pool2d_backward_serial<F: Float>(
    dy: &[F],
    g: &Pool2dGeometry,
    dx: &mut [F],
    accumulate: bool,
) {
    if !accumulate {
        dx.fill(F::ZERO);
    }
    let count = F::from_usize(g.kernel_h * g.kernel_w);
    for_each_window(g, |base, out, top_left| {
        let share = dy[out] / count;
        for u in 0..g.kernel_h {
            let row = base + top_left + u * g.in_w;
            for slot in &mut dx[row..row + g.kernel_w] {
                *slot += share;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::numeric_gradient;
    use crate::kernels::test_util::{assert_close, check_both_modes, values};

    fn geom(
        batch: usize,
        channels: usize,
        (in_h, in_w): (usize, usize),
        (kernel_h, kernel_w): (usize, usize),
        (stride_h, stride_w): (usize, usize),
    ) -> Pool2dGeometry {
        Pool2dGeometry {
            batch,
            channels,
            in_h,
            in_w,
            kernel_h,
            kernel_w,
            stride_h,
            stride_w,
        }
    }

    /// Windows read by explicit 4-D indexing; `reduce` folds one window's values.
    fn naive(x: &[f64], g: &Pool2dGeometry, reduce: impl Fn(&[f64]) -> f64) -> Vec<f64> {
        let (oh, ow) = (g.out_h(), g.out_w());
        let mut y = Vec::new();
        for n in 0..g.batch {
            for c in 0..g.channels {
                for i in 0..oh {
                    for j in 0..ow {
                        let mut window = Vec::new();
                        for u in 0..g.kernel_h {
                            for v in 0..g.kernel_w {
                                let (h, w) = (i * g.stride_h + u, j * g.stride_w + v);
                                window.push(x[((n * g.channels + c) * g.in_h + h) * g.in_w + w]);
                            }
                        }
                        y.push(reduce(&window));
                    }
                }
            }
        }
        y
    }

    fn naive_max(x: &[f64], g: &Pool2dGeometry) -> Vec<f64> {
        naive(x, g, |w| {
            w.iter().copied().fold(f64::NEG_INFINITY, f64::max)
        })
    }

    fn naive_avg(x: &[f64], g: &Pool2dGeometry) -> Vec<f64> {
        naive(x, g, |w| w.iter().sum::<f64>() / w.len() as f64)
    }

    fn weighted(y: &[f64], r: &[f64]) -> f64 {
        y.iter().zip(r).map(|(a, b)| a * b).sum()
    }

    /// Floored edges (7 → 3 with window 2 stride 2), a rectangular window with unequal
    /// strides, overlapping windows, and a window spanning the whole input.
    fn cases() -> Vec<Pool2dGeometry> {
        vec![
            geom(2, 3, (7, 7), (2, 2), (2, 2)),
            geom(2, 2, (7, 6), (3, 2), (2, 1)),
            geom(1, 2, (5, 6), (3, 3), (1, 2)),
            geom(3, 1, (4, 3), (4, 3), (1, 1)),
        ]
    }

    #[test]
    fn output_extent_floors() {
        let g = geom(1, 1, (7, 7), (2, 2), (2, 2));
        assert_eq!((g.out_h(), g.out_w()), (3, 3));
        let g = geom(2, 2, (7, 6), (3, 2), (2, 1));
        assert_eq!((g.out_h(), g.out_w()), (3, 5));
        assert_eq!((g.input_len(), g.output_len()), (2 * 2 * 42, 2 * 2 * 15));
        let g = geom(1, 1, (1, 5), (2, 2), (2, 2));
        assert_eq!((g.out_h(), g.output_len()), (0, 0));
    }

    #[test]
    fn forward_matches_naive() {
        for (k, g) in cases().iter().enumerate() {
            let x = values(g.input_len(), 1.0 + k as f64);
            let mut y = vec![f64::NAN; g.output_len()];
            max_pool2d_forward(&x, g, &mut y);
            assert_eq!(y, naive_max(&x, g), "max {g:?}");
            avg_pool2d_forward(&x, g, &mut y);
            assert_close(&y, &naive_avg(&x, g), 1e-15, 1e-15, &format!("avg {g:?}"));
        }
    }

    #[test]
    fn backward_matches_finite_differences() {
        for (k, g) in cases().iter().enumerate() {
            let mut x = values(g.input_len(), 3.0 + k as f64);
            let r = values(g.output_len(), 4.0 + k as f64);
            let mut y = vec![0.0; g.output_len()];
            max_pool2d_forward(&x, g, &mut y);
            let num = numeric_gradient(|x| weighted(&naive_max(x, g), &r), &mut x, 1e-6);
            check_both_modes(&num, 1e-6, 1e-9, &format!("max dx {g:?}"), |dx, acc| {
                max_pool2d_backward(&x, &y, &r, g, dx, acc)
            });
            let num = numeric_gradient(|x| weighted(&naive_avg(x, g), &r), &mut x, 1e-6);
            check_both_modes(&num, 1e-6, 1e-9, &format!("avg dx {g:?}"), |dx, acc| {
                avg_pool2d_backward(&r, g, dx, acc)
            });
        }
    }

    /// Every selection the rule makes, and where the gradient goes.
    fn selected(x: &[f64], kernel: (usize, usize)) -> (f64, Vec<f64>) {
        let g = geom(1, 1, kernel, kernel, kernel);
        let mut y = [0.0];
        max_pool2d_forward(x, &g, &mut y);
        let mut dx = vec![f64::NAN; x.len()];
        max_pool2d_backward(x, &y, &[1.0], &g, &mut dx, false);
        (y[0], dx)
    }

    #[test]
    fn ties_send_the_gradient_to_the_first_maximum() {
        // Row-major order: the 3 at (0, 1) comes before the one at (1, 0).
        let (y, dx) = selected(&[1.0, 3.0, 3.0, 3.0], (2, 2));
        assert_eq!((y, dx), (3.0, vec![0.0, 1.0, 0.0, 0.0]));
        let (y, dx) = selected(&[2.0; 6], (2, 3));
        assert_eq!((y, dx), (2.0, vec![1.0, 0.0, 0.0, 0.0, 0.0, 0.0]));
        // −0.0 == 0.0: the first of the two wins.
        let (y, dx) = selected(&[-1.0, -0.0, 0.0, -2.0], (2, 2));
        assert_eq!(dx, vec![0.0, 1.0, 0.0, 0.0]);
        assert!(y == 0.0 && y.is_sign_negative());
        let inf = f64::INFINITY;
        assert_eq!(selected(&[-inf; 4], (2, 2)).1, vec![1.0, 0.0, 0.0, 0.0]);
        assert_eq!(
            selected(&[1.0, inf, 2.0, inf], (2, 2)).1,
            [0.0, 1.0, 0.0, 0.0]
        );
    }

    #[test]
    fn nan_wins_and_the_last_nan_is_selected() {
        let nan = f64::NAN;
        let (y, dx) = selected(&[5.0, nan, 7.0, 1.0], (2, 2));
        assert!(y.is_nan());
        assert_eq!(dx, vec![0.0, 1.0, 0.0, 0.0]);
        let (y, dx) = selected(&[nan, 9.0, nan, 1.0], (2, 2));
        assert!(y.is_nan());
        assert_eq!(dx, vec![0.0, 0.0, 1.0, 0.0]);
    }

    #[test]
    fn overlapping_windows_add_their_gradients() {
        // 1×3 input, window 1×2, stride 1: the middle 9 is the max of both windows.
        let g = geom(1, 1, (1, 3), (1, 2), (1, 1));
        let x = [1.0f64, 9.0, 2.0];
        let mut y = [0.0; 2];
        max_pool2d_forward(&x, &g, &mut y);
        assert_eq!(y, [9.0, 9.0]);
        let mut dx = [10.0; 3];
        max_pool2d_backward(&x, &y, &[0.5, 0.25], &g, &mut dx, true);
        assert_eq!(dx, [10.0, 10.75, 10.0]);
        avg_pool2d_backward(&[0.5, 0.25], &g, &mut dx, false);
        assert_eq!(dx, [0.25, 0.375, 0.125]);
    }

    #[test]
    fn f32_matches_f64() {
        let g = geom(2, 2, (7, 6), (3, 2), (2, 1));
        let x = values(g.input_len(), 2.0);
        let xf: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let mut yf = vec![0.0f32; g.output_len()];
        max_pool2d_forward(&xf, &g, &mut yf);
        let want: Vec<f32> = naive_max(&x, &g).iter().map(|&v| v as f32).collect();
        assert_eq!(yf, want);
        avg_pool2d_forward(&xf, &g, &mut yf);
        let y: Vec<f64> = yf.iter().map(|&v| v as f64).collect();
        assert_close(&y, &naive_avg(&x, &g), 1e-6, 1e-6, "avg f32");
    }

    #[test]
    #[should_panic(expected = "y is not max_pool2d_forward(x)")]
    fn backward_rejects_a_foreign_y() {
        let g = geom(1, 1, (2, 2), (2, 2), (2, 2));
        let mut dx = [0.0f64; 4];
        max_pool2d_backward(&[1.0, 2.0, 3.0, 4.0], &[5.0], &[1.0], &g, &mut dx, false);
    }
}
