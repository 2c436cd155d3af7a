//! 2-D max and average pooling over NCHW activations (PyTorch's `MaxPool2d` / `AvgPool2d`
//! with padding and `ceil_mode`, without dilation), adaptive average and max pooling
//! (`AdaptiveAvgPool2d`, `AdaptiveMaxPool2d`), and their VJPs.
//!
//! `x` is `[batch, channels, in_h, in_w]` and `y` is `[batch, channels, out_h, out_w]` with
//! `out = ⌊(in + 2·pad − kernel) / stride⌋ + 1` (rounded up instead with `ceil_mode`, minus a
//! last window that would start in the right padding): without `ceil_mode`, trailing rows and
//! columns that do not fill a window are ignored, as in PyTorch. Windows may overlap
//! (`stride < kernel`). Padding is virtual: max pooling never selects it (PyTorch pads with
//! −∞) and average pooling counts it in the divisor only with `count_include_pad`.
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
///     pad_h: 0, pad_w: 0, ceil_mode: false, count_include_pad: true,
/// };
/// assert_eq!((g.out_h(), g.out_w()), (3, 3));
/// let g = Pool2dGeometry { ceil_mode: true, ..g };
/// assert_eq!((g.out_h(), g.out_w()), (4, 4));
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
    /// Rows of virtual padding above and below (at most `kernel_h / 2`, PyTorch's rule).
    pub pad_h: usize,
    /// Columns of virtual padding left and right (at most `kernel_w / 2`).
    pub pad_w: usize,
    /// Round the output extent up instead of down (PyTorch's `ceil_mode`): a last, partial
    /// window is kept unless it would start in the right or bottom padding.
    pub ceil_mode: bool,
    /// Average pooling only: whether padded cells count in a window's divisor (PyTorch's
    /// `count_include_pad`, default `true`). Cells beyond the padding, which only `ceil_mode`
    /// windows reach, never count.
    pub count_include_pad: bool,
}

/// PyTorch's `pooling_output_shape` without dilation.
fn out_extent(input: usize, kernel: usize, stride: usize, pad: usize, ceil_mode: bool) -> usize {
    let padded = input + 2 * pad;
    if kernel == 0 || stride == 0 || padded < kernel {
        return 0;
    }
    let span = padded - kernel;
    let mut out = if ceil_mode {
        span.div_ceil(stride) + 1
    } else {
        span / stride + 1
    };
    // A window starting in the right padding would only see padding: PyTorch drops it.
    if ceil_mode && (out - 1) * stride >= input + pad {
        out -= 1;
    }
    out
}

/// One output's window along one axis: the input range it covers (clipped to the input) and
/// its length clipped to the input plus padding (`count_include_pad`'s divisor factor).
#[inline(always)]
fn window_span(
    o: usize,
    stride: usize,
    pad: usize,
    kernel: usize,
    input: usize,
) -> (Range<usize>, usize) {
    // Shifted by `pad` so that everything stays unsigned: the window is
    // [o·stride − pad, o·stride − pad + kernel) in input coordinates.
    let start = o * stride;
    let end = (start + kernel).min(input + 2 * pad);
    let padded_len = end - start;
    (start.max(pad) - pad..end.min(input + pad) - pad, padded_len)
}

impl Pool2dGeometry {
    /// The output height `⌊(in_h + 2·pad_h − kernel_h) / stride_h⌋ + 1` (⌈ ⌉ with
    /// `ceil_mode`, see the module), or 0 when the window is taller than the padded input.
    pub fn out_h(&self) -> usize {
        out_extent(
            self.in_h,
            self.kernel_h,
            self.stride_h,
            self.pad_h,
            self.ceil_mode,
        )
    }

    /// The output width, as [`Pool2dGeometry::out_h`].
    pub fn out_w(&self) -> usize {
        out_extent(
            self.in_w,
            self.kernel_w,
            self.stride_w,
            self.pad_w,
            self.ceil_mode,
        )
    }

    /// Whether every window is whole and inside the input (no padding, no partial window),
    /// which the specialised paths assume.
    fn unpadded(&self) -> bool {
        self.pad_h == 0
            && self.pad_w == 0
            && self.out_h() > 0
            && (self.out_h() - 1) * self.stride_h + self.kernel_h <= self.in_h
            && self.out_w() > 0
            && (self.out_w() - 1) * self.stride_w + self.kernel_w <= self.in_w
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
        // With more padding a window could lie wholly in the padding and be empty.
        assert!(
            self.pad_h <= self.kernel_h / 2 && self.pad_w <= self.kernel_w / 2,
            "{what}: padding ({}, {}) must be at most half the window ({}, {})",
            self.pad_h,
            self.pad_w,
            self.kernel_h,
            self.kernel_w
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

/// One output's window, clipped to the input.
#[derive(Clone)]
struct Window {
    /// Input rows.
    rows: Range<usize>,
    /// Input columns.
    cols: Range<usize>,
    /// The average's divisor: the window clipped to the padded input (`count_include_pad`) or
    /// to the input.
    divisor: usize,
}

/// Calls `f(x_plane_offset, y_index, window)` for every output element: the plane offset of
/// its (sample, channel) in `x`, its own index in `y`, and its window.
#[inline(always)]
fn for_each_window(g: &Pool2dGeometry, mut f: impl FnMut(usize, usize, &Window)) {
    let (out_h, out_w) = (g.out_h(), g.out_w());
    let plane = g.in_h * g.in_w;
    let mut out = 0;
    for nc in 0..g.batch * g.channels {
        for i in 0..out_h {
            let (rows, padded_h) = window_span(i, g.stride_h, g.pad_h, g.kernel_h, g.in_h);
            for j in 0..out_w {
                let (cols, padded_w) = window_span(j, g.stride_w, g.pad_w, g.kernel_w, g.in_w);
                let divisor = if g.count_include_pad {
                    padded_h * padded_w
                } else {
                    rows.len() * cols.len()
                };
                let window = Window {
                    rows: rows.clone(),
                    cols,
                    divisor,
                };
                f(nc * plane, out, &window);
                out += 1;
            }
        }
    }
}

/// The index (within the plane) of the element PyTorch's CPU kernel selects in window `w`: scanning in row-major order it takes an element when it is greater than the
/// best so far or when it is NaN, starting from −∞ at the first element. So among numbers the
/// FIRST maximum wins, any NaN beats every number, and the LAST NaN wins among NaNs; a window
/// of −∞ selects its first element. Padding is never selected.
#[inline]
fn window_argmax<F: Float>(plane: &[F], g: &Pool2dGeometry, w: &Window) -> usize {
    let top_left = w.rows.start * g.in_w + w.cols.start;
    let mut best_index = top_left;
    let mut best = plane[top_left];
    for u in w.rows.clone() {
        let row = u * g.in_w + w.cols.start;
        for (v, &val) in plane[row..row + w.cols.len()].iter().enumerate() {
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
///     pad_h: 0, pad_w: 0, ceil_mode: false, count_include_pad: true,
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
    if is_2x2(g) {
        max_pool_2x2_forward(x, g, y);
        return;
    }
    for_each_window(g, |base, out, w| {
        let x_p = &x[base..base + plane];
        y[out] = window_max(x_p, g, w);
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

/// Whether the 2×2, stride-2 specialisation applies (whole windows only).
fn is_2x2(g: &Pool2dGeometry) -> bool {
    g.kernel_h == 2 && g.kernel_w == 2 && g.stride_h == 2 && g.stride_w == 2 && g.unpadded()
}

/// The value [`window_argmax`] selects (the same element, so the same bits).
#[inline]
fn window_max<F: Float>(plane: &[F], g: &Pool2dGeometry, w: &Window) -> F {
    let mut best = plane[w.rows.start * g.in_w + w.cols.start];
    for u in w.rows.clone() {
        let row = u * g.in_w + w.cols.start;
        for &val in &plane[row..row + w.cols.len()] {
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
    if is_2x2(g) {
        max_pool_2x2_backward(x, y, dy, g, dx, accumulate);
        return;
    }
    if !accumulate {
        dx.fill(F::ZERO);
    }
    let plane = g.in_h * g.in_w;
    for_each_window(g, |base, out, w| {
        let x_p = &x[base..base + plane];
        let target = y[out];
        let index = if !is_nan(target) {
            // Not NaN, so the window holds no NaN and its selection is the first element equal
            // to the maximum, which the forward copied into y bit for bit.
            first_equal(x_p, g, w, target).unwrap_or_else(|| foreign_y())
        } else {
            window_argmax(x_p, g, w)
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
fn first_equal<F: Float>(plane: &[F], g: &Pool2dGeometry, w: &Window, target: F) -> Option<usize> {
    w.rows.clone().find_map(|u| {
        let row = u * g.in_w + w.cols.start;
        plane[row..row + w.cols.len()]
            .iter()
            .position(|&v| v == target)
            .map(|v| row + v)
    })
}

/// `y = avg_pool2d(x)`: the mean of every `kernel_h × kernel_w` window, `y` overwritten. The
/// divisor is `kernel_h · kernel_w` for whole windows; a window reaching past the padding
/// (`ceil_mode`) divides by its cells within the padded input, and without
/// `count_include_pad` by its cells within the input, as in PyTorch.
///
/// # Panics
/// If a slice's length disagrees with `g`, or a window or stride size is 0 (caller bugs).
///
/// ```
/// use kiln_runtime::kernels::pool::{avg_pool2d_forward, Pool2dGeometry};
/// let g = Pool2dGeometry {
///     batch: 1, channels: 1, in_h: 2, in_w: 2,
///     kernel_h: 2, kernel_w: 2, stride_h: 2, stride_w: 2,
///     pad_h: 0, pad_w: 0, ceil_mode: false, count_include_pad: true,
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
    for_each_window(g, |base, out, w| {
        let x_p = &x[base..base + plane];
        let mut total = F::ZERO;
        for u in w.rows.clone() {
            let row = u * g.in_w + w.cols.start;
            for &v in &x_p[row..row + w.cols.len()] {
                total += v;
            }
        }
        y[out] = total / F::from_usize(w.divisor);
    });
}

/// The VJP of [`avg_pool2d_forward`]: every input of a window gets `dy / divisor` from it (summed over overlapping windows), written into `dx` or added when `accumulate`.
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
    for_each_window(g, |base, out, w| {
        let share = dy[out] / F::from_usize(w.divisor);
        for u in w.rows.clone() {
            let row = base + u * g.in_w + w.cols.start;
            for slot in &mut dx[row..row + w.cols.len()] {
                *slot += share;
            }
        }
    });
}

/// The sizes of an adaptive pooling (PyTorch's `AdaptiveAvgPool2d`, `AdaptiveMaxPool2d`):
/// output row `i` pools input rows `⌊i·in_h / out_h⌋ .. ⌈(i + 1)·in_h / out_h⌉`, and likewise
/// for columns, so windows may differ in size and overlap when the ratio is not an integer.
///
/// ```
/// use kiln_runtime::kernels::pool::{adaptive_avg_pool2d_forward, AdaptivePool2dGeometry};
/// // Global average pooling.
/// let g = AdaptivePool2dGeometry { batch: 1, channels: 1, in_h: 2, in_w: 2, out_h: 1, out_w: 1 };
/// let mut y = [0.0f64];
/// adaptive_avg_pool2d_forward(&[1.0, 2.0, 3.0, 6.0], &g, &mut y);
/// assert_eq!(y, [3.0]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AdaptivePool2dGeometry {
    /// Samples in the batch.
    pub batch: usize,
    /// Channels (pooled independently).
    pub channels: usize,
    /// Input height.
    pub in_h: usize,
    /// Input width.
    pub in_w: usize,
    /// Output height (≥ 1).
    pub out_h: usize,
    /// Output width (≥ 1).
    pub out_w: usize,
}

impl AdaptivePool2dGeometry {
    /// The elements of `x`: `batch · channels · in_h · in_w`.
    pub fn input_len(&self) -> usize {
        self.batch * self.channels * self.in_h * self.in_w
    }

    /// The elements of `y`: `batch · channels · out_h · out_w`.
    pub fn output_len(&self) -> usize {
        self.batch * self.channels * self.out_h * self.out_w
    }

    #[track_caller]
    fn check(&self, what: &str, x_len: usize, y_len: usize) {
        assert!(
            self.out_h > 0 && self.out_w > 0,
            "{what}: the output size ({}, {}) must be at least 1",
            self.out_h,
            self.out_w
        );
        check_len(what, "x", x_len, self.input_len());
        check_len(what, "y", y_len, self.output_len());
    }
}

/// PyTorch's adaptive window along one axis: `⌊o·input / output⌋ .. ⌈(o + 1)·input / output⌉`.
#[inline(always)]
fn adaptive_span(o: usize, input: usize, output: usize) -> Range<usize> {
    (o * input) / output..((o + 1) * input).div_ceil(output)
}

/// `y = adaptive_avg_pool2d(x)`: the mean of every adaptive window (see
/// [`AdaptivePool2dGeometry`]), `y` overwritten. As PyTorch, the window's sum is divided by
/// its height, then by its width.
///
/// # Panics
/// If a slice's length disagrees with `g`, or an output size is 0 (caller bugs).
pub fn adaptive_avg_pool2d_forward<F: Float>(x: &[F], g: &AdaptivePool2dGeometry, y: &mut [F]) {
    g.check("adaptive_avg_pool2d_forward", x.len(), y.len());
    let plane = g.in_h * g.in_w;
    if plane == 0 {
        // The mean over nothing.
        y.fill(F::from_f64(f64::NAN));
        return;
    }
    for (x_p, y_p) in x
        .chunks_exact(plane)
        .zip(y.chunks_exact_mut(g.out_h * g.out_w))
    {
        for i in 0..g.out_h {
            let rows = adaptive_span(i, g.in_h, g.out_h);
            for j in 0..g.out_w {
                let cols = adaptive_span(j, g.in_w, g.out_w);
                let mut total = F::ZERO;
                for u in rows.clone() {
                    for &v in &x_p[u * g.in_w + cols.start..u * g.in_w + cols.end] {
                        total += v;
                    }
                }
                y_p[i * g.out_w + j] =
                    total / F::from_usize(rows.len()) / F::from_usize(cols.len());
            }
        }
    }
}

/// The VJP of [`adaptive_avg_pool2d_forward`]: every input of a window gets
/// `dy / height / width` from it (summed over overlapping windows), written into `dx` or added
/// when `accumulate`.
///
/// # Panics
/// If a slice's length disagrees with `g`, or an output size is 0 (caller bugs).
pub fn adaptive_avg_pool2d_backward<F: Float>(
    dy: &[F],
    g: &AdaptivePool2dGeometry,
    dx: &mut [F],
    accumulate: bool,
) {
    g.check("adaptive_avg_pool2d_backward", dx.len(), dy.len());
    if !accumulate {
        dx.fill(F::ZERO);
    }
    let plane = g.in_h * g.in_w;
    if plane == 0 {
        return;
    }
    for (dx_p, dy_p) in dx
        .chunks_exact_mut(plane)
        .zip(dy.chunks_exact(g.out_h * g.out_w))
    {
        for i in 0..g.out_h {
            let rows = adaptive_span(i, g.in_h, g.out_h);
            for j in 0..g.out_w {
                let cols = adaptive_span(j, g.in_w, g.out_w);
                let share =
                    dy_p[i * g.out_w + j] / F::from_usize(rows.len()) / F::from_usize(cols.len());
                for u in rows.clone() {
                    for slot in &mut dx_p[u * g.in_w + cols.start..u * g.in_w + cols.end] {
                        *slot += share;
                    }
                }
            }
        }
    }
}

/// The index (within the plane) of the element PyTorch's adaptive max pooling selects in the
/// window `rows × cols`: the same rule as [`window_argmax`] (the first maximum among numbers,
/// the last NaN if there is one).
#[inline]
fn adaptive_argmax<F: Float>(
    plane: &[F],
    in_w: usize,
    rows: Range<usize>,
    cols: &Range<usize>,
) -> usize {
    let top_left = rows.start * in_w + cols.start;
    let (mut best_index, mut best) = (top_left, plane[top_left]);
    for u in rows {
        let row = u * in_w + cols.start;
        for (v, &val) in plane[row..row + cols.len()].iter().enumerate() {
            if val > best || is_nan(val) {
                best = val;
                best_index = row + v;
            }
        }
    }
    best_index
}

/// `y = adaptive_max_pool2d(x)`: the maximum of every adaptive window (see
/// [`AdaptivePool2dGeometry`]), `y` overwritten. NaN propagates, as in PyTorch.
///
/// # Panics
/// If a slice's length disagrees with `g`, or a size is 0 (caller bugs).
///
/// ```
/// use kiln_runtime::kernels::pool::{adaptive_max_pool2d_forward, AdaptivePool2dGeometry};
/// // Rows 0..2 and 1..3 of a 3-row input: the windows overlap.
/// let g = AdaptivePool2dGeometry { batch: 1, channels: 1, in_h: 3, in_w: 1, out_h: 2, out_w: 1 };
/// let mut y = [0.0f32; 2];
/// adaptive_max_pool2d_forward(&[4.0, 1.0, 2.0], &g, &mut y);
/// assert_eq!(y, [4.0, 2.0]);
/// ```
pub fn adaptive_max_pool2d_forward<F: Float>(x: &[F], g: &AdaptivePool2dGeometry, y: &mut [F]) {
    g.check("adaptive_max_pool2d_forward", x.len(), y.len());
    let plane = g.in_h * g.in_w;
    assert!(
        plane > 0,
        "adaptive_max_pool2d_forward: the input plane is empty"
    );
    for (x_p, y_p) in x
        .chunks_exact(plane)
        .zip(y.chunks_exact_mut(g.out_h * g.out_w))
    {
        for i in 0..g.out_h {
            let rows = adaptive_span(i, g.in_h, g.out_h);
            for j in 0..g.out_w {
                let cols = adaptive_span(j, g.in_w, g.out_w);
                y_p[i * g.out_w + j] = x_p[adaptive_argmax(x_p, g.in_w, rows.clone(), &cols)];
            }
        }
    }
}

/// The VJP of [`adaptive_max_pool2d_forward`]: each window's `dy` goes to the element it
/// selected (found again in `x`; summed where overlapping windows select the same one),
/// written into `dx` or added when `accumulate`.
///
/// # Panics
/// If a slice's length disagrees with `g`, or a size is 0 (caller bugs).
pub fn adaptive_max_pool2d_backward<F: Float>(
    x: &[F],
    dy: &[F],
    g: &AdaptivePool2dGeometry,
    dx: &mut [F],
    accumulate: bool,
) {
    g.check("adaptive_max_pool2d_backward", x.len(), dy.len());
    check_len(
        "adaptive_max_pool2d_backward",
        "dx",
        dx.len(),
        g.input_len(),
    );
    let plane = g.in_h * g.in_w;
    assert!(
        plane > 0,
        "adaptive_max_pool2d_backward: the input plane is empty"
    );
    if !accumulate {
        dx.fill(F::ZERO);
    }
    for ((x_p, dx_p), dy_p) in x
        .chunks_exact(plane)
        .zip(dx.chunks_exact_mut(plane))
        .zip(dy.chunks_exact(g.out_h * g.out_w))
    {
        for i in 0..g.out_h {
            let rows = adaptive_span(i, g.in_h, g.out_h);
            for j in 0..g.out_w {
                let cols = adaptive_span(j, g.in_w, g.out_w);
                dx_p[adaptive_argmax(x_p, g.in_w, rows.clone(), &cols)] += dy_p[i * g.out_w + j];
            }
        }
    }
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
            pad_h: 0,
            pad_w: 0,
            ceil_mode: false,
            count_include_pad: true,
        }
    }

    fn padded(
        g: Pool2dGeometry,
        (pad_h, pad_w): (usize, usize),
        ceil_mode: bool,
        count_include_pad: bool,
    ) -> Pool2dGeometry {
        Pool2dGeometry {
            pad_h,
            pad_w,
            ceil_mode,
            count_include_pad,
            ..g
        }
    }

    /// Windows read by explicit 4-D indexing over a virtually padded input; `reduce` folds
    /// one window's input values and the number of its padding cells (those within `pad` of
    /// the input; cells further out, reached by `ceil_mode`, are not counted).
    fn naive(x: &[f64], g: &Pool2dGeometry, reduce: impl Fn(&[f64], usize) -> f64) -> Vec<f64> {
        let (oh, ow) = (g.out_h(), g.out_w());
        let (ph, pw) = (g.pad_h as isize, g.pad_w as isize);
        let (ih, iw) = (g.in_h as isize, g.in_w as isize);
        let mut y = Vec::new();
        for n in 0..g.batch {
            for c in 0..g.channels {
                for i in 0..oh {
                    for j in 0..ow {
                        let (mut window, mut padding) = (Vec::new(), 0);
                        for u in 0..g.kernel_h {
                            for v in 0..g.kernel_w {
                                let h = (i * g.stride_h + u) as isize - ph;
                                let w = (j * g.stride_w + v) as isize - pw;
                                if (0..ih).contains(&h) && (0..iw).contains(&w) {
                                    let (h, w) = (h as usize, w as usize);
                                    window
                                        .push(x[((n * g.channels + c) * g.in_h + h) * g.in_w + w]);
                                } else if (-ph..ih + ph).contains(&h) && (-pw..iw + pw).contains(&w)
                                {
                                    padding += 1;
                                }
                            }
                        }
                        y.push(reduce(&window, padding));
                    }
                }
            }
        }
        y
    }

    fn naive_max(x: &[f64], g: &Pool2dGeometry) -> Vec<f64> {
        naive(x, g, |w, _| {
            w.iter().copied().fold(f64::NEG_INFINITY, f64::max)
        })
    }

    fn naive_avg(x: &[f64], g: &Pool2dGeometry) -> Vec<f64> {
        let include = g.count_include_pad;
        naive(x, g, |w, padding| {
            let count = w.len() + if include { padding } else { 0 };
            w.iter().sum::<f64>() / count as f64
        })
    }

    fn weighted(y: &[f64], r: &[f64]) -> f64 {
        y.iter().zip(r).map(|(a, b)| a * b).sum()
    }

    /// Floored edges (7 → 3 with window 2 stride 2), a rectangular window with unequal
    /// strides, overlapping windows, a window spanning the whole input; then padding,
    /// `ceil_mode` (partial last windows, one dropped for starting in the padding) and
    /// `count_include_pad = false`.
    fn cases() -> Vec<Pool2dGeometry> {
        vec![
            geom(2, 3, (7, 7), (2, 2), (2, 2)),
            geom(2, 2, (7, 6), (3, 2), (2, 1)),
            geom(1, 2, (5, 6), (3, 3), (1, 2)),
            geom(3, 1, (4, 3), (4, 3), (1, 1)),
            padded(geom(2, 2, (7, 6), (3, 3), (2, 2)), (1, 1), false, true),
            padded(geom(2, 2, (7, 6), (3, 3), (2, 2)), (1, 1), true, true),
            padded(geom(2, 2, (7, 6), (3, 3), (2, 2)), (1, 1), true, false),
            padded(geom(1, 2, (5, 8), (2, 3), (2, 2)), (1, 0), true, true),
            padded(geom(1, 1, (5, 5), (2, 2), (2, 2)), (0, 0), true, false),
            padded(geom(1, 1, (6, 6), (4, 4), (3, 3)), (2, 1), true, true),
        ]
    }

    #[test]
    fn padded_and_ceil_extents_follow_pytorch() {
        // torch.nn.functional.max_pool2d(torch.zeros(1, 1, 7, 6), 3, 2, 1, ceil_mode=...).
        let g = padded(geom(1, 1, (7, 6), (3, 3), (2, 2)), (1, 1), false, true);
        assert_eq!((g.out_h(), g.out_w()), (4, 3));
        let g = padded(g, (1, 1), true, true);
        assert_eq!((g.out_h(), g.out_w()), (4, 4));
        // 5 with window 2 stride 2: floor 2, ceil 3 (a last window of one row).
        let g = padded(geom(1, 1, (5, 5), (2, 2), (2, 2)), (0, 0), true, true);
        assert_eq!(g.out_h(), 3);
        // 4 + 2 with window 2 stride 2, pad 1: ceil gives 3, and no window starts in the pad.
        let g = padded(geom(1, 1, (4, 4), (2, 2), (2, 2)), (1, 1), true, true);
        assert_eq!(g.out_h(), 3);
        // Window 3, stride 3, padding 1, ceil: the third window starts at 3·2 − 1 = 5, inside
        // 6 rows (kept) but in the right padding of 5 columns (dropped).
        let g = padded(geom(1, 1, (6, 5), (3, 3), (3, 3)), (1, 1), true, true);
        assert_eq!((g.out_h(), g.out_w()), (3, 2));
    }

    #[test]
    fn partial_windows_divide_by_their_padded_extent() {
        // 1×3 input, window 2, stride 2, ceil_mode: the second window holds one input cell
        // and one cell past the input (not padding): its divisor is 1.
        let g = padded(geom(1, 1, (1, 3), (1, 2), (1, 2)), (0, 0), true, true);
        let mut y = [0.0f64; 2];
        avg_pool2d_forward(&[1.0, 2.0, 6.0], &g, &mut y);
        assert_eq!(y, [1.5, 6.0]);
        // With padding 1 the windows are [pad, 1] and [2, 6] (a third would start in the right
        // padding): the first divides by 2 with the padding counted, by 1 without.
        let g = padded(geom(1, 1, (1, 3), (1, 2), (1, 2)), (0, 1), true, true);
        assert_eq!(g.out_w(), 2);
        avg_pool2d_forward(&[1.0, 2.0, 6.0], &g, &mut y);
        assert_eq!(y, [0.5, 4.0]);
        let g = Pool2dGeometry {
            count_include_pad: false,
            ..g
        };
        avg_pool2d_forward(&[1.0, 2.0, 6.0], &g, &mut y);
        assert_eq!(y, [1.0, 4.0]);
    }

    #[test]
    fn max_pooling_never_selects_padding() {
        let g = padded(geom(1, 1, (2, 2), (3, 3), (1, 1)), (1, 1), false, true);
        let x = [-5.0f64, -6.0, -7.0, -8.0];
        let mut y = [0.0; 4];
        max_pool2d_forward(&x, &g, &mut y);
        assert_eq!(y, [-5.0; 4]);
        let mut dx = [0.0; 4];
        max_pool2d_backward(&x, &y, &[1.0, 2.0, 3.0, 4.0], &g, &mut dx, false);
        assert_eq!(dx, [10.0, 0.0, 0.0, 0.0]);
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
            // Average pooling is linear: a wide step has no truncation error and less rounding.
            let num = numeric_gradient(|x| weighted(&naive_avg(x, g), &r), &mut x, 1e-3);
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

    /// `reduce` of every adaptive window's values (in row-major order), the windows by the
    /// definition, with exact rational bounds.
    fn naive_adaptive_windows(
        x: &[f64],
        g: &AdaptivePool2dGeometry,
        reduce: impl Fn(&[f64]) -> f64,
    ) -> Vec<f64> {
        let mut y = Vec::new();
        for p in x.chunks(g.in_h * g.in_w) {
            for i in 0..g.out_h {
                let h0 = (i as f64 * g.in_h as f64 / g.out_h as f64).floor() as usize;
                let h1 = ((i + 1) as f64 * g.in_h as f64 / g.out_h as f64).ceil() as usize;
                for j in 0..g.out_w {
                    let w0 = (j as f64 * g.in_w as f64 / g.out_w as f64).floor() as usize;
                    let w1 = ((j + 1) as f64 * g.in_w as f64 / g.out_w as f64).ceil() as usize;
                    let window: Vec<f64> = (h0..h1)
                        .flat_map(|h| (w0..w1).map(move |w| p[h * g.in_w + w]))
                        .collect();
                    y.push(reduce(&window));
                }
            }
        }
        y
    }

    /// Adaptive average pooling by the definition.
    fn naive_adaptive(x: &[f64], g: &AdaptivePool2dGeometry) -> Vec<f64> {
        naive_adaptive_windows(x, g, |w| w.iter().sum::<f64>() / w.len() as f64)
    }

    /// Adaptive poolings with non-integer ratios (overlapping windows), to one output (global
    /// pooling), and upsampling (3 → 5).
    fn adaptive_geometries() -> Vec<AdaptivePool2dGeometry> {
        vec![
            AdaptivePool2dGeometry {
                batch: 2,
                channels: 3,
                in_h: 7,
                in_w: 5,
                out_h: 3,
                out_w: 2,
            },
            AdaptivePool2dGeometry {
                batch: 2,
                channels: 2,
                in_h: 5,
                in_w: 4,
                out_h: 1,
                out_w: 1,
            },
            AdaptivePool2dGeometry {
                batch: 1,
                channels: 2,
                in_h: 3,
                in_w: 6,
                out_h: 5,
                out_w: 3,
            },
        ]
    }

    #[test]
    fn adaptive_pooling_matches_the_definition() {
        let geoms = adaptive_geometries();
        for (k, g) in geoms.iter().enumerate() {
            let mut x = values(g.input_len(), 7.0 + k as f64);
            let mut y = vec![f64::NAN; g.output_len()];
            adaptive_avg_pool2d_forward(&x, g, &mut y);
            assert_close(&y, &naive_adaptive(&x, g), 1e-15, 1e-15, &format!("{g:?}"));
            let r = values(g.output_len(), 8.0 + k as f64);
            let num = numeric_gradient(|x| weighted(&naive_adaptive(x, g), &r), &mut x, 1e-3);
            check_both_modes(
                &num,
                1e-6,
                1e-9,
                &format!("adaptive dx {g:?}"),
                |dx, acc| adaptive_avg_pool2d_backward(&r, g, dx, acc),
            );
        }
    }

    /// Adaptive max pooling by the definition.
    fn naive_adaptive_max(x: &[f64], g: &AdaptivePool2dGeometry) -> Vec<f64> {
        naive_adaptive_windows(x, g, |w| {
            w.iter().copied().fold(f64::NEG_INFINITY, f64::max)
        })
    }

    #[test]
    fn adaptive_max_pooling_matches_the_definition_and_propagates_nan() {
        // The shared cases, and an exact ratio.
        let mut geoms = adaptive_geometries();
        geoms.push(AdaptivePool2dGeometry {
            batch: 1,
            channels: 1,
            in_h: 4,
            in_w: 6,
            out_h: 2,
            out_w: 3,
        });
        for (k, g) in geoms.iter().enumerate() {
            // Distinct values: the maxima are unique, so the function is smooth around x.
            let mut x = values(g.input_len(), 11.0 + k as f64);
            let mut y = vec![f64::NAN; g.output_len()];
            adaptive_max_pool2d_forward(&x, g, &mut y);
            assert_eq!(y, naive_adaptive_max(&x, g), "{g:?}");
            let r = values(g.output_len(), 12.0 + k as f64);
            let num = numeric_gradient(|x| weighted(&naive_adaptive_max(x, g), &r), &mut x, 1e-6);
            check_both_modes(
                &num,
                1e-6,
                1e-9,
                &format!("adaptive max dx {g:?}"),
                |dx, acc| adaptive_max_pool2d_backward(&x, &r, g, dx, acc),
            );
        }
        // Ties go to the first maximum; a NaN wins its windows (the last NaN among several).
        let g = AdaptivePool2dGeometry {
            batch: 1,
            channels: 1,
            in_h: 1,
            in_w: 4,
            out_h: 1,
            out_w: 2,
        };
        let x = [3.0, 3.0, f64::NAN, 1.0];
        let mut y = [0.0; 2];
        adaptive_max_pool2d_forward(&x, &g, &mut y);
        assert!(y[0] == 3.0 && y[1].is_nan(), "{y:?}");
        let mut dx = [0.0; 4];
        adaptive_max_pool2d_backward(&x, &[1.0, 2.0], &g, &mut dx, false);
        assert_eq!(dx, [1.0, 0.0, 2.0, 0.0]);
    }

    #[test]
    #[should_panic(expected = "y is not max_pool2d_forward(x)")]
    fn backward_rejects_a_foreign_y() {
        let g = geom(1, 1, (2, 2), (2, 2), (2, 2));
        let mut dx = [0.0f64; 4];
        max_pool2d_backward(&[1.0, 2.0, 3.0, 4.0], &[5.0], &[1.0], &g, &mut dx, false);
    }
}
