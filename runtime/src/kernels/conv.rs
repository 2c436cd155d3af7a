//! 2-D convolution (PyTorch's `nn.Conv2d` with `groups = 1`, `dilation = 1`) by im2col + GEMM,
//! and its vector-Jacobian products.
//!
//! Layouts are PyTorch's: `x` is `[batch, in_channels, in_h, in_w]`, the weight is
//! `[out_channels, in_channels, kernel_h, kernel_w]`, the bias `[out_channels]` and `y` is
//! `[batch, out_channels, out_h, out_w]`, all row-major (NCHW). The operation is a
//! cross-correlation with zero padding, as in PyTorch:
//!
//! `y[n, o, i, j] = b[o] + Σ_{c,u,v} W[o, c, u, v] · x[n, c, i·stride_h + u − pad_h, j·stride_w + v − pad_w]`
//!
//! Per sample, the input patches are unfolded into a `[C·kh·kw, out_h·out_w]` matrix (im2col)
//! in a caller-provided scratch buffer, so that the convolution is one GEMM with the weight
//! viewed as `[O, C·kh·kw]`. A 1×1 convolution with stride 1 and no padding needs no unfolding
//! (the sample itself is that matrix) and skips the scratch entirely.

use super::gemm;
use super::parallel::{self, SharedMut};
use crate::Float;

/// The sizes of a 2-D convolution: batch, channels, spatial extents, kernel, stride and
/// padding (symmetric, zeros).
///
/// ```
/// use kiln_runtime::kernels::conv::Conv2dGeometry;
/// let g = Conv2dGeometry {
///     batch: 2, in_channels: 3, in_h: 7, in_w: 5, out_channels: 4,
///     kernel_h: 3, kernel_w: 2, stride_h: 2, stride_w: 1, pad_h: 1, pad_w: 0,
/// };
/// assert_eq!((g.out_h(), g.out_w()), (4, 4));
/// assert_eq!(g.cols_len(), 3 * 3 * 2 * 4 * 4);
/// // Two im2col matrices, then 7 partial weight and bias gradients.
/// assert_eq!(g.scratch_len(), 2 * g.cols_len() + 7 * (4 * 3 * 3 * 2 + 4));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conv2dGeometry {
    /// Samples in the batch (`N`).
    pub batch: usize,
    /// Input channels (`C`).
    pub in_channels: usize,
    /// Input height.
    pub in_h: usize,
    /// Input width.
    pub in_w: usize,
    /// Output channels (`O`).
    pub out_channels: usize,
    /// Kernel height.
    pub kernel_h: usize,
    /// Kernel width.
    pub kernel_w: usize,
    /// Vertical stride (≥ 1).
    pub stride_h: usize,
    /// Horizontal stride (≥ 1).
    pub stride_w: usize,
    /// Zero rows added above and below the input.
    pub pad_h: usize,
    /// Zero columns added left and right of the input.
    pub pad_w: usize,
}

/// PyTorch's output extent `⌊(in + 2·pad − kernel) / stride⌋ + 1`, or 0 when the kernel does
/// not fit the padded input (PyTorch rejects that case; the shape checker should too).
fn out_extent(input: usize, pad: usize, kernel: usize, stride: usize) -> usize {
    let padded = input + 2 * pad;
    if kernel == 0 || stride == 0 || padded < kernel {
        0
    } else {
        (padded - kernel) / stride + 1
    }
}

impl Conv2dGeometry {
    /// The output height: `⌊(in_h + 2·pad_h − kernel_h) / stride_h⌋ + 1` (PyTorch's floor
    /// formula), or 0 when the kernel is taller than the padded input.
    pub fn out_h(&self) -> usize {
        out_extent(self.in_h, self.pad_h, self.kernel_h, self.stride_h)
    }

    /// The output width: `⌊(in_w + 2·pad_w − kernel_w) / stride_w⌋ + 1`, or 0 when the kernel
    /// is wider than the padded input.
    pub fn out_w(&self) -> usize {
        out_extent(self.in_w, self.pad_w, self.kernel_w, self.stride_w)
    }

    /// The im2col matrix of ONE sample: `in_channels·kernel_h·kernel_w × out_h·out_w`
    /// elements.
    pub fn cols_len(&self) -> usize {
        self.in_channels * self.kernel_h * self.kernel_w * self.out_h() * self.out_w()
    }

    /// The scratch the kernels need: one im2col matrix per thread (two; none on the 1×1 fast
    /// path, see [`is_pointwise`](Self::is_pointwise)), then the weight and bias gradients
    /// of all but the first chunk of the batch: [`conv2d_backward`] sums each chunk apart
    /// (on whichever thread claims it) and adds the chunks' sums in order at the end, the
    /// same sums on one thread or two, so results do not depend on the thread count. Up to
    /// 8 chunks (7 partial gradients), or 2 when the weight has more than 2¹⁶ values. It
    /// does not depend on `batch` (generated code sizes the buffer with it once).
    pub fn scratch_len(&self) -> usize {
        let gradient = self.weight_len() + self.out_channels;
        2 * self.sample_scratch_len() + (self.max_gradient_chunks() - 1) * gradient
    }

    /// The most chunks [`conv2d_backward`] sums a batch's weight gradient in:
    /// [`MAX_CHUNKS`](parallel::MAX_CHUNKS), or 2 when the weight is large (over 2¹⁶
    /// values), to bound the scratch.
    fn max_gradient_chunks(&self) -> usize {
        if self.weight_len() + self.out_channels <= 1 << 16 {
            parallel::MAX_CHUNKS
        } else {
            2
        }
    }

    /// The chunks this batch's weight gradient is summed in: a function of the geometry
    /// only, so the sum is the same whichever threads compute it.
    fn gradient_chunks(&self) -> usize {
        self.batch.min(self.max_gradient_chunks())
    }

    /// One thread's im2col matrix: [`cols_len`](Self::cols_len), or 0 on the 1×1 fast path.
    fn sample_scratch_len(&self) -> usize {
        if self.is_pointwise() {
            0
        } else {
            self.cols_len()
        }
    }

    /// The same convolution on `batch` samples.
    fn with_batch(&self, batch: usize) -> Self {
        Self { batch, ..*self }
    }

    /// Multiply-adds of the forward pass, the measure of whether splitting it pays.
    fn work(&self) -> usize {
        self.output_len().saturating_mul(self.patch_len())
    }

    /// Whether this is a 1×1 convolution with stride 1 and no padding: a per-pixel matrix
    /// product, for which the kernels use the input directly instead of an im2col copy.
    pub fn is_pointwise(&self) -> bool {
        self.kernel_h == 1
            && self.kernel_w == 1
            && self.stride_h == 1
            && self.stride_w == 1
            && self.pad_h == 0
            && self.pad_w == 0
    }

    /// The elements of `x`: `batch · in_channels · in_h · in_w`.
    pub fn input_len(&self) -> usize {
        self.batch * self.in_channels * self.in_h * self.in_w
    }

    /// The elements of `y`: `batch · out_channels · out_h · out_w`.
    pub fn output_len(&self) -> usize {
        self.batch * self.out_channels * self.out_h() * self.out_w()
    }

    /// The elements of the weight: `out_channels · in_channels · kernel_h · kernel_w`.
    pub fn weight_len(&self) -> usize {
        self.out_channels * self.in_channels * self.kernel_h * self.kernel_w
    }

    /// The reduction length of the GEMM, `in_channels · kernel_h · kernel_w`.
    fn patch_len(&self) -> usize {
        self.in_channels * self.kernel_h * self.kernel_w
    }

    #[track_caller]
    fn check(&self, what: &str) {
        assert!(
            self.stride_h > 0 && self.stride_w > 0,
            "{what}: strides must be at least 1, got ({}, {})",
            self.stride_h,
            self.stride_w
        );
        assert!(
            self.kernel_h > 0 && self.kernel_w > 0,
            "{what}: kernel sizes must be at least 1, got ({}, {})",
            self.kernel_h,
            self.kernel_w
        );
    }
}

/// `⌈a / b⌉` for `b > 0`.
#[inline]
fn ceil_div(a: usize, b: usize) -> usize {
    a.div_ceil(b)
}

/// The output positions `o ∈ [lo, hi)` whose input coordinate `o·stride + offset − pad` lies in
/// `[0, input)`; every other output position reads padding.
#[inline]
fn valid_range(
    offset: usize,
    pad: usize,
    stride: usize,
    input: usize,
    out: usize,
) -> (usize, usize) {
    // o·stride + offset ≥ pad
    let lo = if offset >= pad {
        0
    } else {
        ceil_div(pad - offset, stride)
    };
    // o·stride + offset − pad < input  ⇔  o·stride < input + pad − offset
    let hi = if input + pad <= offset {
        0
    } else {
        ceil_div(input + pad - offset, stride).min(out)
    };
    (lo.min(hi), hi)
}

/// `dst = src` for short slices (an im2col row segment) without a call to `memcpy`: whole
/// blocks of 8, then 4, 2 and 1.
#[inline(always)]
fn copy_short<F: Copy>(dst: &mut [F], src: &[F]) {
    let n = dst.len();
    let src = &src[..n];
    let mut i = 0;
    while i + 8 <= n {
        let block: [F; 8] = src[i..i + 8].try_into().expect("8 elements");
        dst[i..i + 8].copy_from_slice(&block);
        i += 8;
    }
    if n - i >= 4 {
        let block: [F; 4] = src[i..i + 4].try_into().expect("4 elements");
        dst[i..i + 4].copy_from_slice(&block);
        i += 4;
    }
    if n - i >= 2 {
        let block: [F; 2] = src[i..i + 2].try_into().expect("2 elements");
        dst[i..i + 2].copy_from_slice(&block);
        i += 2;
    }
    if n - i >= 1 {
        dst[i] = src[i];
    }
}

/// `dst += src` element by element for short slices: blocks of 8, then one at a time.
#[inline(always)]
fn add_short<F: Float>(dst: &mut [F], src: &[F]) {
    let n = dst.len();
    let src = &src[..n];
    let mut d_blocks = dst.chunks_exact_mut(8);
    let mut s_blocks = src.chunks_exact(8);
    for (d, s) in (&mut d_blocks).zip(&mut s_blocks) {
        let d: &mut [F; 8] = d.try_into().expect("8 elements");
        let s: &[F; 8] = s.try_into().expect("8 elements");
        for l in 0..8 {
            d[l] += s[l];
        }
    }
    for (d, &s) in d_blocks
        .into_remainder()
        .iter_mut()
        .zip(s_blocks.remainder())
    {
        *d += s;
    }
}

/// Copies `dst.len() / width` rows of `width` elements: row `i` of `src` starts at
/// `i · src_stride`, row `i` of `dst` at `i · width`. The bounds are checked once up front, so
/// the per-row copies (blocks of 8, then 4, 2, 1: no `memcpy` call for these short rows) run
/// unchecked.
#[inline(always)]
fn copy_rows<F: Copy>(src: &[F], src_stride: usize, dst: &mut [F], width: usize) {
    if width == 0 {
        return;
    }
    let rows = dst.len() / width;
    assert_eq!(rows * width, dst.len(), "copy_rows: ragged destination");
    if rows == 0 {
        return;
    }
    assert!(
        width <= src_stride && (rows - 1) * src_stride + width <= src.len(),
        "copy_rows: source too short"
    );
    let (s0, d0) = (src.as_ptr(), dst.as_mut_ptr());
    for i in 0..rows {
        // SAFETY: row i reads src[i·stride .. i·stride + width] and writes
        // dst[i·width .. (i + 1)·width], both in bounds by the checks above; the slices are
        // distinct borrows, so they do not overlap.
        unsafe {
            let (mut s, mut d) = (s0.add(i * src_stride), d0.add(i * width));
            let mut left = width;
            if left >= 16 {
                // Long rows (LLVM may turn this loop into a `memcpy` call, fine at this size).
                while left >= 8 {
                    d.cast::<[F; 8]>()
                        .write_unaligned(s.cast::<[F; 8]>().read_unaligned());
                    s = s.add(8);
                    d = d.add(8);
                    left -= 8;
                }
            } else if left >= 8 {
                // Straight-line, so that a short row is never a library call.
                d.cast::<[F; 8]>()
                    .write_unaligned(s.cast::<[F; 8]>().read_unaligned());
                s = s.add(8);
                d = d.add(8);
                left -= 8;
            }
            if left >= 4 {
                d.cast::<[F; 4]>()
                    .write_unaligned(s.cast::<[F; 4]>().read_unaligned());
                s = s.add(4);
                d = d.add(4);
                left -= 4;
            }
            if left >= 2 {
                d.cast::<[F; 2]>()
                    .write_unaligned(s.cast::<[F; 2]>().read_unaligned());
                s = s.add(2);
                d = d.add(2);
                left -= 2;
            }
            if left == 1 {
                d.write(s.read());
            }
        }
    }
}

/// `dst[i·dst_stride + j] += src[i·width + j]` for the `src.len() / width` rows of `src`, with
/// the bounds checked once up front (the adjoint of [`copy_rows`]).
#[inline(always)]
fn add_rows<F: Float>(src: &[F], width: usize, dst: &mut [F], dst_stride: usize) {
    if width == 0 {
        return;
    }
    let rows = src.len() / width;
    assert_eq!(rows * width, src.len(), "add_rows: ragged source");
    if rows == 0 {
        return;
    }
    assert!(
        width <= dst_stride && (rows - 1) * dst_stride + width <= dst.len(),
        "add_rows: destination too short"
    );
    let (s0, d0) = (src.as_ptr(), dst.as_mut_ptr());
    for i in 0..rows {
        // SAFETY: row i reads src[i·width .. (i + 1)·width] and updates
        // dst[i·stride .. i·stride + width], both in bounds by the checks above; the slices
        // are distinct borrows, so they do not overlap.
        unsafe {
            let (mut s, mut d) = (s0.add(i * width), d0.add(i * dst_stride));
            let mut left = width;
            while left >= 8 {
                let a = s.cast::<[F; 8]>().read_unaligned();
                let mut b = d.cast::<[F; 8]>().read_unaligned();
                for l in 0..8 {
                    b[l] += a[l];
                }
                d.cast::<[F; 8]>().write_unaligned(b);
                s = s.add(8);
                d = d.add(8);
                left -= 8;
            }
            while left > 0 {
                *d += s.read();
                s = s.add(1);
                d = d.add(1);
                left -= 1;
            }
        }
    }
}

/// `dst.fill(value)` for short slices without a call to `memset`.
#[inline(always)]
fn fill_short<F: Copy>(dst: &mut [F], value: F) {
    let n = dst.len();
    let mut i = 0;
    while i + 8 <= n {
        dst[i..i + 8].copy_from_slice(&[value; 8]);
        i += 8;
    }
    if n - i >= 4 {
        dst[i..i + 4].copy_from_slice(&[value; 4]);
        i += 4;
    }
    if n - i >= 2 {
        dst[i..i + 2].copy_from_slice(&[value; 2]);
        i += 2;
    }
    if n - i >= 1 {
        dst[i] = value;
    }
}

/// The sum of `values` in 8 interleaved partial sums (lane `l` takes the elements at `l`
/// mod 8), combined pairwise, then the tail in order.
#[inline]
fn sum_lanes<F: Float>(values: &[F]) -> F {
    let mut acc = [F::ZERO; 8];
    let mut blocks = values.chunks_exact(8);
    for block in &mut blocks {
        for (a, &v) in acc.iter_mut().zip(block) {
            *a += v;
        }
    }
    let mut total =
        ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for &v in blocks.remainder() {
        total += v;
    }
    total
}

/// Unfolds one sample `x` (`[C, H, W]`) into `cols` (`[C·kh·kw, out_h·out_w]`): row
/// `(c·kh + u)·kw + v`, column `i·out_w + j` holds `x[c, i·sh + u − ph, j·sw + v − pw]`, or 0
/// in the padding.
fn im2col<F: Float>(x: &[F], g: &Conv2dGeometry, cols: &mut [F]) {
    let (out_h, out_w) = (g.out_h(), g.out_w());
    let plane = g.in_h * g.in_w;
    let positions = out_h * out_w;
    if positions == 0 || plane == 0 {
        cols.fill(F::ZERO);
        return;
    }
    if g.stride_h == 1 && g.stride_w == 1 {
        im2col_stride1(x, g, cols);
        return;
    }
    let mut rows = cols.chunks_exact_mut(positions);
    for x_c in x.chunks_exact(plane) {
        for u in 0..g.kernel_h {
            let (i_lo, i_hi) = valid_range(u, g.pad_h, g.stride_h, g.in_h, out_h);
            for v in 0..g.kernel_w {
                let (j_lo, j_hi) = valid_range(v, g.pad_w, g.stride_w, g.in_w, out_w);
                let row = rows.next().expect("im2col: cols is sized by the geometry");
                for (i, dst) in row.chunks_exact_mut(out_w).enumerate() {
                    if i < i_lo || i >= i_hi {
                        fill_short(dst, F::ZERO);
                        continue;
                    }
                    let ih = i * g.stride_h + u - g.pad_h;
                    let src = &x_c[ih * g.in_w..(ih + 1) * g.in_w];
                    fill_short(&mut dst[..j_lo], F::ZERO);
                    fill_short(&mut dst[j_hi..], F::ZERO);
                    if j_lo == j_hi {
                        continue;
                    }
                    let iw_lo = j_lo * g.stride_w + v - g.pad_w;
                    if g.stride_w == 1 {
                        copy_short(&mut dst[j_lo..j_hi], &src[iw_lo..iw_lo + (j_hi - j_lo)]);
                    } else {
                        for (d, s) in dst[j_lo..j_hi]
                            .iter_mut()
                            .zip(src[iw_lo..].iter().step_by(g.stride_w))
                        {
                            *d = *s;
                        }
                    }
                }
            }
        }
    }
}

/// [`im2col`] for stride 1: input row `i + u − pad_h` feeds output row `i` of kernel row
/// `(c, u, v)`, so each output row is one short copy between zero-filled edges. When the output
/// is as wide as the input (`2·pad_w = kernel_w − 1`), a kernel row is the input shifted by a
/// constant: one long copy, then the few columns that wrapped into the neighbouring input row
/// are zeroed.
fn im2col_stride1<F: Float>(x: &[F], g: &Conv2dGeometry, cols: &mut [F]) {
    let (out_h, out_w) = (g.out_h(), g.out_w());
    let (in_w, plane) = (g.in_w, g.in_h * g.in_w);
    let positions = out_h * out_w;
    let mut rows = cols.chunks_exact_mut(positions);
    for x_c in x.chunks_exact(plane) {
        for u in 0..g.kernel_h {
            let (i_lo, i_hi) = valid_range(u, g.pad_h, 1, g.in_h, out_h);
            for v in 0..g.kernel_w {
                let (j_lo, j_hi) = valid_range(v, g.pad_w, 1, g.in_w, out_w);
                let row = rows.next().expect("im2col: cols is sized by the geometry");
                row[..i_lo * out_w].fill(F::ZERO);
                row[i_hi * out_w..].fill(F::ZERO);
                if i_lo == i_hi {
                    continue;
                }
                if j_lo == j_hi {
                    row[i_lo * out_w..i_hi * out_w].fill(F::ZERO);
                    continue;
                }
                // Input row of output row i_lo, and input column of output column j_lo.
                let ih_lo = i_lo + u - g.pad_h;
                let iw_lo = j_lo + v - g.pad_w;
                if out_w == in_w {
                    // Output (i, j) reads flat input (i + u − ph)·W + j + v − pw: a constant
                    // shift. Copy the span of valid positions from (i_lo, j_lo) to
                    // (i_hi − 1, j_hi − 1), then zero the columns outside [j_lo, j_hi).
                    let d_lo = i_lo * out_w + j_lo;
                    let d_hi = (i_hi - 1) * out_w + j_hi;
                    let s_lo = ih_lo * in_w + iw_lo;
                    row[d_lo..d_hi].copy_from_slice(&x_c[s_lo..s_lo + (d_hi - d_lo)]);
                    for dst in row[i_lo * out_w..i_hi * out_w].chunks_exact_mut(out_w) {
                        for d in &mut dst[..j_lo] {
                            *d = F::ZERO;
                        }
                        for d in &mut dst[j_hi..] {
                            *d = F::ZERO;
                        }
                    }
                    continue;
                }
                let n = j_hi - j_lo;
                if j_lo == 0 && n == out_w {
                    // No horizontal padding in this kernel column: plain row copies.
                    copy_rows(
                        &x_c[ih_lo * in_w + iw_lo..],
                        in_w,
                        &mut row[i_lo * out_w..i_hi * out_w],
                        out_w,
                    );
                    continue;
                }
                let src_rows = x_c[ih_lo * in_w..].chunks(in_w);
                for (dst, src) in row[i_lo * out_w..i_hi * out_w]
                    .chunks_exact_mut(out_w)
                    .zip(src_rows)
                {
                    fill_short(&mut dst[..j_lo], F::ZERO);
                    copy_short(&mut dst[j_lo..j_lo + n], &src[iw_lo..iw_lo + n]);
                    fill_short(&mut dst[j_lo + n..], F::ZERO);
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: adds every entry of `cols` back onto the input position it was
/// read from (padding entries are dropped). `dx` (`[C, H, W]`) must be initialised.
fn col2im_add<F: Float>(cols: &[F], g: &Conv2dGeometry, dx: &mut [F]) {
    let (out_h, out_w) = (g.out_h(), g.out_w());
    let plane = g.in_h * g.in_w;
    let positions = out_h * out_w;
    if positions == 0 || plane == 0 {
        return;
    }
    let mut rows = cols.chunks_exact(positions);
    for dx_c in dx.chunks_exact_mut(plane) {
        for u in 0..g.kernel_h {
            let (i_lo, i_hi) = valid_range(u, g.pad_h, g.stride_h, g.in_h, out_h);
            for v in 0..g.kernel_w {
                let (j_lo, j_hi) = valid_range(v, g.pad_w, g.stride_w, g.in_w, out_w);
                let row = rows.next().expect("col2im: cols is sized by the geometry");
                if j_lo == j_hi || i_lo == i_hi {
                    continue;
                }
                if g.stride_h == 1 && g.stride_w == 1 && j_lo == 0 && j_hi == out_w {
                    // No horizontal padding: whole rows of the block add onto input rows.
                    let start = (i_lo + u - g.pad_h) * g.in_w + v - g.pad_w;
                    add_rows(
                        &row[i_lo * out_w..i_hi * out_w],
                        out_w,
                        &mut dx_c[start..],
                        g.in_w,
                    );
                    continue;
                }
                for i in i_lo..i_hi {
                    let src = &row[i * out_w + j_lo..i * out_w + j_hi];
                    let ih = i * g.stride_h + u - g.pad_h;
                    let iw_lo = j_lo * g.stride_w + v - g.pad_w;
                    let dst = &mut dx_c[ih * g.in_w..(ih + 1) * g.in_w];
                    if g.stride_w == 1 {
                        add_short(&mut dst[iw_lo..iw_lo + src.len()], src);
                    } else {
                        for (d, &s) in dst[iw_lo..].iter_mut().step_by(g.stride_w).zip(src) {
                            *d += s;
                        }
                    }
                }
            }
        }
    }
}

#[track_caller]
fn check_len(what: &str, name: &str, got: usize, want: usize) {
    assert_eq!(
        got, want,
        "{what}: {name} has {got} elements, expected {want}"
    );
}

#[track_caller]
fn check_cols(what: &str, cols: usize, g: &Conv2dGeometry) {
    assert!(
        cols >= g.scratch_len(),
        "{what}: cols has {cols} elements, needs at least {} (Conv2dGeometry::scratch_len)",
        g.scratch_len()
    );
}

/// `y = conv2d(x, weight) + bias`. `y` (`[N, O, out_h, out_w]`) is overwritten.
///
/// Per sample the input is unfolded into `cols` (im2col) and multiplied by the weight viewed
/// as `[O, C·kh·kw]`: one GEMM per sample. Large batches run chunk by chunk on two threads
/// (see `kernels/parallel.rs`). `cols` must hold at least
/// [`g.scratch_len()`](Conv2dGeometry::scratch_len) elements (a longer one is fine, only its
/// prefix is used); its contents on entry are irrelevant and on exit unspecified.
///
/// # Panics
/// If a slice's length disagrees with `g`, or a stride or kernel size is 0 (caller bugs).
///
/// ```
/// use kiln_runtime::kernels::conv::{conv2d_forward, Conv2dGeometry};
/// // One 2×2 input, one 2×2 kernel of ones: the sum of the input, plus the bias.
/// let g = Conv2dGeometry {
///     batch: 1, in_channels: 1, in_h: 2, in_w: 2, out_channels: 1,
///     kernel_h: 2, kernel_w: 2, stride_h: 1, stride_w: 1, pad_h: 0, pad_w: 0,
/// };
/// let mut y = [0.0f64; 1];
/// let mut cols = vec![0.0; g.scratch_len()];
/// conv2d_forward(&[1.0, 2.0, 3.0, 4.0], &[1.0; 4], Some(&[0.5][..]), &g, &mut y, &mut cols);
/// assert_eq!(y, [10.5]);
/// ```
pub fn conv2d_forward<F: Float>(
    x: &[F],
    weight: &[F],
    bias: Option<&[F]>,
    g: &Conv2dGeometry,
    y: &mut [F],
    cols: &mut [F],
) {
    const WHAT: &str = "conv2d_forward";
    g.check(WHAT);
    check_len(WHAT, "x", x.len(), g.input_len());
    check_len(WHAT, "weight", weight.len(), g.weight_len());
    check_len(WHAT, "y", y.len(), g.output_len());
    check_cols(WHAT, cols.len(), g);
    if let Some(bias) = bias {
        check_len(WHAT, "bias", bias.len(), g.out_channels);
    }
    if g.output_len() == 0 {
        return;
    }
    let sample = g.sample_scratch_len();
    let (cols_a, rest) = cols.split_at_mut(sample);
    let cols_b = &mut rest[..sample];
    if !worth_splitting(g) {
        return forward_samples(x, weight, bias, g, y, cols_a);
    }
    let chunks = parallel::chunk_count(g.batch);
    let (in_sample, out_sample) = (g.input_len() / g.batch, g.output_len() / g.batch);
    let y = SharedMut::new(y);
    let cols = [SharedMut::new(cols_a), SharedMut::new(cols_b)];
    parallel::for_each_chunk(chunks, |chunk, thread| {
        let samples = parallel::chunk_range(g.batch, chunks, chunk);
        let x_c = &x[samples.start * in_sample..samples.end * in_sample];
        // SAFETY: each chunk is claimed once and covers its own samples of `y`; each thread
        // uses its own `cols`, one chunk at a time.
        let (y_c, cols) = unsafe {
            (
                y.range(samples.start * out_sample..samples.end * out_sample),
                cols[thread].range(0..sample),
            )
        };
        forward_samples(x_c, weight, bias, &g.with_batch(samples.len()), y_c, cols);
    });
}

/// Whether a convolution is large enough for two threads: below about 2¹⁸ multiply-adds
/// (tens of microseconds) handing half to the helper costs more than it saves.
fn worth_splitting(g: &Conv2dGeometry) -> bool {
    const MIN_WORK: usize = 1 << 18;
    g.batch >= 2 && g.work() >= MIN_WORK && parallel::threads() >= 2
}

/// [`conv2d_forward`] on one thread, sample by sample, with one sample's `cols`.
fn forward_samples<F: Float>(
    x: &[F],
    weight: &[F],
    bias: Option<&[F]>,
    g: &Conv2dGeometry,
    y: &mut [F],
    cols: &mut [F],
) {
    let (o, ckk, p) = (g.out_channels, g.patch_len(), g.out_h() * g.out_w());
    let in_sample = g.in_channels * g.in_h * g.in_w;
    let cols = &mut cols[..g.sample_scratch_len()];
    for (s, y_s) in y.chunks_exact_mut(o * p).enumerate() {
        let x_s = &x[s * in_sample..(s + 1) * in_sample];
        let beta = match bias {
            Some(bias) => {
                // Start each output plane at its bias and let the GEMM add onto it.
                for (plane, &b) in y_s.chunks_exact_mut(p).zip(bias) {
                    plane.fill(b);
                }
                F::ONE
            }
            None => F::ZERO,
        };
        let patches: &[F] = if g.is_pointwise() {
            x_s
        } else {
            im2col(x_s, g, cols);
            cols
        };
        gemm(o, ckk, p, F::ONE, weight, false, patches, false, beta, y_s);
    }
}

/// The VJPs of [`conv2d_forward`] given the output adjoint `dy` (`[N, O, out_h, out_w]`):
///
/// - `dweight` (`[O, C, kh, kw]`) is OVERWRITTEN with `Σ_n dy_n · cols_nᵀ` (a layer is used
///   once, so its gradient is never accumulated);
/// - `dbias` (`[O]`), if given, is OVERWRITTEN with the sums of `dy` over batch and space;
/// - `dx`, if given as `(buffer, accumulate)`, gets `col2im(Wᵀ · dy_n)` per sample, written or
///   (`accumulate`) added.
///
/// `cols` is scratch as for [`conv2d_forward`] (at least
/// [`g.scratch_len()`](Conv2dGeometry::scratch_len) elements); each sample's im2col matrix
/// is reused for its input gradient's columns once its weight gradient is taken. The batch is
/// always summed in the same chunks (on two threads when the work is large enough), each
/// chunk's sum apart, and the chunks' sums added in order, so the result is the same on one
/// thread or two.
///
/// # Panics
/// If a slice's length disagrees with `g`, or a stride or kernel size is 0 (caller bugs).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward<F: Float>(
    x: &[F],
    dy: &[F],
    weight: &[F],
    g: &Conv2dGeometry,
    dweight: &mut [F],
    dbias: Option<&mut [F]>,
    mut dx: Option<(&mut [F], bool)>,
    cols: &mut [F],
) {
    const WHAT: &str = "conv2d_backward";
    g.check(WHAT);
    check_len(WHAT, "x", x.len(), g.input_len());
    check_len(WHAT, "dy", dy.len(), g.output_len());
    check_len(WHAT, "weight", weight.len(), g.weight_len());
    check_len(WHAT, "dweight", dweight.len(), g.weight_len());
    check_cols(WHAT, cols.len(), g);
    if let Some(db) = dbias.as_deref() {
        check_len(WHAT, "dbias", db.len(), g.out_channels);
    }
    if let Some((dx, accumulate)) = dx.as_mut() {
        check_len(WHAT, "dx", dx.len(), g.input_len());
        if !*accumulate {
            // col2im adds (overlapping windows share inputs), and positions no window reads
            // (floored edges) get no contribution: start from zero.
            dx.fill(F::ZERO);
        }
    }
    let dx = dx.map(|(dx, _)| dx);
    let chunks = g.gradient_chunks();
    let sample = g.sample_scratch_len();
    if chunks < 2 || g.output_len() == 0 {
        return backward_samples(x, dy, weight, g, dweight, dbias, dx, &mut cols[..sample]);
    }
    let (cols_a, rest) = cols.split_at_mut(sample);
    let (cols_b, rest) = rest.split_at_mut(sample);
    let (w, o) = (g.weight_len(), g.out_channels);
    let partials = &mut rest[..(chunks - 1) * (w + o)];
    let (in_sample, out_sample) = (g.input_len() / g.batch, g.output_len() / g.batch);
    let with_bias = dbias.is_some();
    let (dweight, dbias) = (SharedMut::new(dweight), dbias.map(SharedMut::new));
    let (partials, dx) = (SharedMut::new(partials), dx.map(SharedMut::new));
    let cols = [SharedMut::new(cols_a), SharedMut::new(cols_b)];
    let run_chunk = |chunk: usize, thread: usize| {
        let samples = parallel::chunk_range(g.batch, chunks, chunk);
        let inputs = samples.start * in_sample..samples.end * in_sample;
        let outputs = samples.start * out_sample..samples.end * out_sample;
        // SAFETY: each chunk is claimed once: chunk 0 alone writes `dweight` and `dbias`,
        // chunk c > 0 its own partial gradient and every chunk its own samples of `dx`; each
        // thread uses its own `cols`, one chunk at a time.
        let (dw, db, dx_c, cols) = unsafe {
            let (dw, db) = if chunk == 0 {
                (dweight.range(0..w), dbias.as_ref().map(|d| d.range(0..o)))
            } else {
                let (dw, db) = partials
                    .range((chunk - 1) * (w + o)..chunk * (w + o))
                    .split_at_mut(w);
                (dw, with_bias.then_some(db))
            };
            let dx_c = dx.as_ref().map(|d| d.range(inputs.clone()));
            (dw, db, dx_c, cols[thread].range(0..sample))
        };
        let g_c = g.with_batch(samples.len());
        backward_samples(&x[inputs], &dy[outputs], weight, &g_c, dw, db, dx_c, cols);
    };
    if worth_splitting(g) {
        parallel::for_each_chunk(chunks, run_chunk);
    } else {
        (0..chunks).for_each(|chunk| run_chunk(chunk, 0));
    }
    // The chunks' sums, added in chunk order whichever thread computed them.
    // SAFETY: every chunk is done; these are the only live references.
    let (dweight, mut dbias, partials) = unsafe {
        (
            dweight.range(0..w),
            dbias.map(|d| d.range(0..o)),
            partials.range(0..(chunks - 1) * (w + o)),
        )
    };
    for partial in partials.chunks_exact(w + o) {
        for (total, &part) in dweight.iter_mut().zip(&partial[..w]) {
            *total += part;
        }
        if let Some(db) = dbias.as_deref_mut() {
            for (total, &part) in db.iter_mut().zip(&partial[w..]) {
                *total += part;
            }
        }
    }
}

/// [`conv2d_backward`] on one thread, sample by sample: `dweight` and `dbias` are overwritten
/// with this batch's sums, `dx` (already cleared or holding what to accumulate onto) gets
/// each sample's input gradient added.
#[allow(clippy::too_many_arguments)]
fn backward_samples<F: Float>(
    x: &[F],
    dy: &[F],
    weight: &[F],
    g: &Conv2dGeometry,
    dweight: &mut [F],
    mut dbias: Option<&mut [F]>,
    mut dx: Option<&mut [F]>,
    cols: &mut [F],
) {
    // The sum over the batch starts from the first sample's product (beta = 0), so an empty
    // batch must clear the gradient itself.
    dweight.fill(F::ZERO);
    if let Some(db) = dbias.as_deref_mut() {
        db.fill(F::ZERO);
    }
    let (o, ckk, p) = (g.out_channels, g.patch_len(), g.out_h() * g.out_w());
    let in_sample = g.in_channels * g.in_h * g.in_w;
    if o * p == 0 {
        return;
    }
    let cols = &mut cols[..g.sample_scratch_len()];
    for (s, dy_s) in dy.chunks_exact(o * p).enumerate() {
        let x_s = &x[s * in_sample..(s + 1) * in_sample];
        let beta = if s == 0 { F::ZERO } else { F::ONE };
        // dW[O, CKK] (+)= dy_s[O, P] · cols[CKK, P]ᵀ
        if g.is_pointwise() {
            gemm(o, p, ckk, F::ONE, dy_s, false, x_s, true, beta, dweight);
        } else {
            im2col(x_s, g, cols);
            gemm(o, p, ckk, F::ONE, dy_s, false, cols, true, beta, dweight);
        }
        if let Some(db) = dbias.as_deref_mut() {
            for (acc, plane) in db.iter_mut().zip(dy_s.chunks_exact(p)) {
                *acc += sum_lanes(plane);
            }
        }
        if let Some(dx) = dx.as_deref_mut() {
            let dx_s = &mut dx[s * in_sample..(s + 1) * in_sample];
            // dcols[CKK, P] = W[O, CKK]ᵀ · dy_s[O, P]
            if g.is_pointwise() {
                // The columns are the sample itself: add straight into it (dx was zeroed
                // above when overwriting).
                gemm(ckk, o, p, F::ONE, weight, true, dy_s, false, F::ONE, dx_s);
            } else {
                gemm(ckk, o, p, F::ONE, weight, true, dy_s, false, F::ZERO, cols);
                col2im_add(cols, g, dx_s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::numeric_gradient;
    use crate::kernels::test_util::{assert_close, check_both_modes, values};

    #[allow(clippy::too_many_arguments)]
    fn geom(
        batch: usize,
        in_channels: usize,
        (in_h, in_w): (usize, usize),
        out_channels: usize,
        (kernel_h, kernel_w): (usize, usize),
        (stride_h, stride_w): (usize, usize),
        (pad_h, pad_w): (usize, usize),
    ) -> Conv2dGeometry {
        Conv2dGeometry {
            batch,
            in_channels,
            in_h,
            in_w,
            out_channels,
            kernel_h,
            kernel_w,
            stride_h,
            stride_w,
            pad_h,
            pad_w,
        }
    }

    /// The definition, with signed indices and an explicit padding test.
    fn naive_forward(x: &[f64], w: &[f64], b: Option<&[f64]>, g: &Conv2dGeometry) -> Vec<f64> {
        let (oh, ow) = (g.out_h(), g.out_w());
        let mut y = vec![0.0; g.output_len()];
        for n in 0..g.batch {
            for o in 0..g.out_channels {
                for i in 0..oh {
                    for j in 0..ow {
                        let mut acc = b.map_or(0.0, |b| b[o]);
                        for c in 0..g.in_channels {
                            for u in 0..g.kernel_h {
                                for v in 0..g.kernel_w {
                                    let ih = (i * g.stride_h + u) as isize - g.pad_h as isize;
                                    let iw = (j * g.stride_w + v) as isize - g.pad_w as isize;
                                    if ih < 0
                                        || iw < 0
                                        || ih >= g.in_h as isize
                                        || iw >= g.in_w as isize
                                    {
                                        continue;
                                    }
                                    let (ih, iw) = (ih as usize, iw as usize);
                                    acc += w[((o * g.in_channels + c) * g.kernel_h + u)
                                        * g.kernel_w
                                        + v]
                                        * x[((n * g.in_channels + c) * g.in_h + ih) * g.in_w + iw];
                                }
                            }
                        }
                        y[((n * g.out_channels + o) * oh + i) * ow + j] = acc;
                    }
                }
            }
        }
        y
    }

    fn weighted(y: &[f64], r: &[f64]) -> f64 {
        y.iter().zip(r).map(|(a, b)| a * b).sum()
    }

    /// Geometries covering rectangular kernels, unequal strides, padding on one axis only,
    /// floored output edges, the 1×1 fast path, a 1×1 kernel that is NOT the fast path,
    /// and a kernel larger than the unpadded input.
    fn cases() -> Vec<Conv2dGeometry> {
        vec![
            geom(2, 2, (6, 5), 3, (3, 2), (2, 1), (1, 0)),
            geom(2, 3, (5, 7), 2, (3, 3), (1, 1), (1, 1)),
            geom(1, 2, (7, 6), 3, (2, 3), (3, 2), (0, 2)),
            geom(3, 4, (3, 5), 5, (1, 1), (1, 1), (0, 0)),
            geom(2, 2, (5, 4), 3, (1, 1), (2, 2), (1, 0)),
            geom(1, 1, (2, 3), 2, (4, 4), (1, 2), (2, 1)),
            // Stride 1 with "same" width (LeNet's first layer) and without padding.
            geom(2, 2, (6, 8), 3, (5, 5), (1, 1), (2, 2)),
            geom(2, 3, (7, 9), 2, (3, 2), (1, 1), (0, 0)),
        ]
    }

    #[test]
    fn geometry_sizes() {
        let g = geom(2, 2, (6, 5), 3, (3, 2), (2, 1), (1, 0));
        // (6 + 2 − 3) / 2 + 1 = 3, (5 − 2) / 1 + 1 = 4
        assert_eq!((g.out_h(), g.out_w()), (3, 4));
        assert_eq!(g.cols_len(), 2 * 3 * 2 * 3 * 4);
        assert_eq!(g.scratch_len(), 2 * g.cols_len() + 7 * (g.weight_len() + 3));
        assert_eq!(g.input_len(), 2 * 2 * 6 * 5);
        assert_eq!(g.output_len(), 2 * 3 * 3 * 4);
        assert_eq!(g.weight_len(), 3 * 2 * 3 * 2);
        // Floors: (7 − 2) / 3 + 1 = 2, (6 + 4 − 3) / 2 + 1 = 4.
        let g = geom(1, 2, (7, 6), 3, (2, 3), (3, 2), (0, 2));
        assert_eq!((g.out_h(), g.out_w()), (2, 4));
        let g = geom(1, 4, (3, 5), 5, (1, 1), (1, 1), (0, 0));
        assert!(g.is_pointwise());
        // No im2col matrices on the 1x1 path, only the second half's gradients.
        assert_eq!(g.scratch_len(), 7 * (g.weight_len() + 5));
        assert_eq!(g.cols_len(), 4 * 15);
        // A kernel that does not fit gives an empty output, not an underflow.
        let g = geom(1, 1, (2, 2), 1, (5, 1), (1, 1), (1, 0));
        assert_eq!((g.out_h(), g.output_len(), g.cols_len()), (0, 0, 0));
    }

    #[test]
    fn forward_matches_naive() {
        for (k, g) in cases().iter().enumerate() {
            let seed = k as f64;
            let x = values(g.input_len(), 1.0 + seed);
            let w = values(g.weight_len(), 2.0 + seed);
            let b = values(g.out_channels, 3.0 + seed);
            let mut y = vec![f64::NAN; g.output_len()];
            // Garbage in the scratch must not leak into the result.
            let mut cols = vec![f64::NAN; g.scratch_len()];
            conv2d_forward(&x, &w, Some(&b), g, &mut y, &mut cols);
            let want = naive_forward(&x, &w, Some(&b), g);
            assert_close(&y, &want, 1e-13, 1e-13, &format!("y {g:?}"));
            conv2d_forward(&x, &w, None, g, &mut y, &mut cols);
            let want = naive_forward(&x, &w, None, g);
            assert_close(&y, &want, 1e-13, 1e-13, &format!("y no bias {g:?}"));
        }
    }

    #[test]
    fn forward_accepts_a_longer_scratch_and_f32() {
        let g = geom(2, 2, (6, 5), 3, (3, 2), (2, 1), (1, 0));
        let (x, w, b) = (
            values(g.input_len(), 1.0),
            values(g.weight_len(), 2.0),
            values(3, 3.0),
        );
        let f = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<f32>>();
        let mut y = vec![0.0f32; g.output_len()];
        let mut cols = vec![0.0f32; g.scratch_len() + 17];
        conv2d_forward(&f(&x), &f(&w), Some(&f(&b)), &g, &mut y, &mut cols);
        let y: Vec<f64> = y.iter().map(|&v| v as f64).collect();
        assert_close(&y, &naive_forward(&x, &w, Some(&b), &g), 1e-5, 1e-5, "f32");
    }

    #[test]
    fn backward_matches_finite_differences() {
        for (k, g) in cases().iter().enumerate() {
            let seed = 10.0 * k as f64;
            let mut x = values(g.input_len(), 1.0 + seed);
            let mut w = values(g.weight_len(), 2.0 + seed);
            let mut b = values(g.out_channels, 3.0 + seed);
            let r = values(g.output_len(), 4.0 + seed);
            let (x0, w0, b0) = (x.clone(), w.clone(), b.clone());
            let mut cols = vec![f64::NAN; g.scratch_len()];

            let num_w = numeric_gradient(
                |w| weighted(&naive_forward(&x0, w, Some(&b0), g), &r),
                &mut w,
                1e-6,
            );
            let num_b = numeric_gradient(
                |b| weighted(&naive_forward(&x0, &w0, Some(b), g), &r),
                &mut b,
                1e-6,
            );
            let num_x = numeric_gradient(
                |x| weighted(&naive_forward(x, &w0, Some(&b0), g), &r),
                &mut x,
                1e-6,
            );

            // The loss sums ~200 products of size ~10, so the difference quotient carries
            // rounding noise of about u·|L|/ε (the map is linear: there is no truncation
            // error). Measured, that noise peaks at 6e-7 here, against gradients up to ~100:
            // atol sits just above the floor and far below any real mistake.
            let (rtol, atol) = (1e-6, 2e-6);
            // dweight and dbias are overwritten whatever they held.
            let mut dw = vec![f64::NAN; g.weight_len()];
            let mut db = vec![f64::NAN; g.out_channels];
            conv2d_backward(&x0, &r, &w0, g, &mut dw, Some(&mut db), None, &mut cols);
            assert_close(&dw, &num_w, rtol, atol, &format!("dW {g:?}"));
            assert_close(&db, &num_b, rtol, atol, &format!("db {g:?}"));

            check_both_modes(&num_x, rtol, atol, &format!("dx {g:?}"), |dx, acc| {
                let mut dw = vec![f64::NAN; g.weight_len()];
                conv2d_backward(&x0, &r, &w0, g, &mut dw, None, Some((dx, acc)), &mut cols);
                assert_close(&dw, &num_w, rtol, atol, &format!("dW with dx {g:?}"));
            });
        }
    }

    /// A batch large enough to be split across the helper thread: the same results as one
    /// pass over the whole batch (the forward bit for bit, the summed gradients to rounding),
    /// and the same bits on every run.
    #[test]
    fn split_batches_match_one_pass() {
        let g = geom(9, 3, (16, 16), 8, (3, 3), (1, 1), (1, 1));
        assert!(
            g.work() >= 1 << 18,
            "the case must be large enough to split"
        );
        let (x, w, b) = (
            values(g.input_len(), 1.0),
            values(g.weight_len(), 2.0),
            values(g.out_channels, 3.0),
        );
        let dy = values(g.output_len(), 4.0);
        let mut cols = vec![f64::NAN; g.scratch_len()];
        let mut y = vec![f64::NAN; g.output_len()];
        conv2d_forward(&x, &w, Some(&b), &g, &mut y, &mut cols);
        let mut y_one = vec![f64::NAN; g.output_len()];
        forward_samples(&x, &w, Some(&b), &g, &mut y_one, &mut cols[..g.cols_len()]);
        assert_eq!(y, y_one);

        let run = |cols: &mut [f64]| {
            let (mut dw, mut db, mut dx) = (
                vec![f64::NAN; g.weight_len()],
                vec![f64::NAN; 8],
                vec![f64::NAN; g.input_len()],
            );
            conv2d_backward(
                &x,
                &dy,
                &w,
                &g,
                &mut dw,
                Some(&mut db),
                Some((&mut dx, false)),
                cols,
            );
            (dw, db, dx)
        };
        let first = run(&mut cols);
        assert_eq!(first, run(&mut cols));
        let (mut dw, mut db, mut dx) = (
            vec![f64::NAN; g.weight_len()],
            vec![f64::NAN; 8],
            vec![0.0; g.input_len()],
        );
        backward_samples(
            &x,
            &dy,
            &w,
            &g,
            &mut dw,
            Some(&mut db),
            Some(&mut dx),
            &mut cols,
        );
        assert_close(&first.0, &dw, 1e-12, 1e-12, "dW");
        assert_close(&first.1, &db, 1e-12, 1e-12, "db");
        assert_eq!(first.2, dx);
    }

    #[test]
    fn zero_batch_clears_gradients() {
        let g = geom(0, 2, (4, 4), 3, (3, 3), (1, 1), (1, 1));
        let mut dw = vec![f64::NAN; g.weight_len()];
        let mut db = vec![f64::NAN; 3];
        let mut cols = vec![0.0; g.scratch_len()];
        conv2d_backward(
            &[],
            &[],
            &values(g.weight_len(), 1.0),
            &g,
            &mut dw,
            Some(&mut db),
            Some((&mut [], false)),
            &mut cols,
        );
        assert!(dw.iter().chain(&db).all(|&v| v == 0.0));
        let mut y: [f64; 0] = [];
        conv2d_forward(
            &[],
            &values(g.weight_len(), 1.0),
            None,
            &g,
            &mut y,
            &mut cols,
        );
    }

    #[test]
    #[should_panic(expected = "conv2d_forward: cols has 3 elements, needs at least")]
    fn short_scratch_panics() {
        let g = geom(1, 1, (3, 3), 1, (2, 2), (1, 1), (0, 0));
        let mut y = vec![0.0f64; g.output_len()];
        conv2d_forward(&[0.0; 9], &[0.0; 4], None, &g, &mut y, &mut [0.0; 3]);
    }
}
