//! 2-D convolution (PyTorch's `nn.Conv2d`, with groups and dilation) and transposed
//! convolution (`nn.ConvTranspose2d`), as GEMMs over the unfolded input, and their
//! vector-Jacobian products.
//!
//! Layouts are PyTorch's: `x` is `[batch, in_channels, in_h, in_w]`, the weight is
//! `[out_channels, in_channels / groups, kernel_h, kernel_w]`, the bias `[out_channels]` and
//! `y` is `[batch, out_channels, out_h, out_w]`, all row-major (NCHW). The operation is a
//! cross-correlation with zero padding, as in PyTorch; with `G = groups`, output channel `o`
//! reads the input channels of its group `o / (O/G)`:
//!
//! `y[n, o, i, j] = b[o] + Σ_{c,u,v} W[o, c, u, v] · x[n, (o / (O/G))·(C/G) + c, i·sh + u·dh − ph, j·sw + v·dw − pw]`
//!
//! Per sample and group, the convolution is one GEMM of its weight rows, viewed as
//! `[O/G, C/G·kh·kw]`, by the `[C/G·kh·kw, out_h·out_w]` matrix of input patches (the column
//! matrix). With stride 1 and one group (most convolutions of today's networks) that matrix is
//! never formed: with the input zero-padded into a scratch copy whose rows are laid end to end,
//! each of its rows is the padded input read from a per-tap offset, and the GEMM reads those
//! rows in place (an implicit GEMM, see `implicit_conv`; its weight gradient reads them in
//! place too, as dot products or packed straight from the padded input, see
//! `implicit_weight_grad`). Other strides and grouped
//! convolutions unfold the patches into the matrix first (im2col) in a caller-provided
//! scratch buffer. A 1×1 convolution with stride 1 and no padding needs no unfolding (the
//! sample itself is that matrix) and skips the scratch entirely. A grouped convolution whose groups each read one input channel
//! (depthwise, as in MobileNet) runs a direct kernel instead: the GEMMs would be a single row
//! deep, and the unfolding would cost more than the arithmetic.
//!
//! The transposed convolution is the adjoint of a convolution (its forward pass is a
//! convolution's input gradient, and its input gradient a convolution's forward pass), so
//! both share the per-sample routines below.

use super::gemm;
use super::parallel::{self, SharedMut};
use crate::Float;

/// The sizes of a 2-D convolution: batch, channels, spatial extents, kernel, stride, padding
/// (symmetric, zeros), dilation and groups.
///
/// ```
/// use kiln_runtime::kernels::conv::Conv2dGeometry;
/// let g = Conv2dGeometry {
///     batch: 2, in_channels: 3, in_h: 7, in_w: 5, out_channels: 4,
///     kernel_h: 3, kernel_w: 2, stride_h: 2, stride_w: 1, pad_h: 1, pad_w: 0,
///     dilation_h: 1, dilation_w: 1, groups: 1,
/// };
/// assert_eq!((g.out_h(), g.out_w()), (4, 4));
/// assert_eq!(g.cols_len(), 3 * 3 * 2 * 4 * 4);
/// // Two im2col matrices, then 7 partial weight and bias gradients.
/// assert_eq!(g.scratch_len(), 2 * g.cols_len() + 7 * (4 * 3 * 3 * 2 + 4));
/// // Dilation 2 spreads the 3-row kernel over 5 rows.
/// let d = Conv2dGeometry { dilation_h: 2, ..g };
/// assert_eq!(d.out_h(), 3);
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
    /// Vertical spacing of the kernel taps (≥ 1; 1 is a plain convolution).
    pub dilation_h: usize,
    /// Horizontal spacing of the kernel taps (≥ 1).
    pub dilation_w: usize,
    /// Channel groups (≥ 1, dividing both channel counts): group `k` maps input channels
    /// `k·C/G ..` to output channels `k·O/G ..`.
    pub groups: usize,
}

/// PyTorch's output extent `⌊(in + 2·pad − dilation·(kernel − 1) − 1) / stride⌋ + 1`, or 0
/// when the dilated kernel does not fit the padded input (PyTorch rejects that case; the
/// shape checker should too).
fn out_extent(input: usize, pad: usize, kernel: usize, stride: usize, dilation: usize) -> usize {
    let padded = input + 2 * pad;
    if kernel == 0 || stride == 0 || dilation == 0 {
        return 0;
    }
    let span = dilation * (kernel - 1) + 1;
    if padded < span {
        0
    } else {
        (padded - span) / stride + 1
    }
}

impl Conv2dGeometry {
    /// The output height: `⌊(in_h + 2·pad_h − dilation_h·(kernel_h − 1) − 1) / stride_h⌋ + 1`
    /// (PyTorch's floor formula), or 0 when the dilated kernel is taller than the padded
    /// input.
    pub fn out_h(&self) -> usize {
        out_extent(
            self.in_h,
            self.pad_h,
            self.kernel_h,
            self.stride_h,
            self.dilation_h,
        )
    }

    /// The output width, as [`out_h`](Self::out_h) across.
    pub fn out_w(&self) -> usize {
        out_extent(
            self.in_w,
            self.pad_w,
            self.kernel_w,
            self.stride_w,
            self.dilation_w,
        )
    }

    /// The im2col matrix of ONE sample and group: `in_channels/groups·kernel_h·kernel_w ×
    /// out_h·out_w` elements.
    pub fn cols_len(&self) -> usize {
        self.patch_len() * self.out_h() * self.out_w()
    }

    /// The scratch the kernels need: one im2col matrix per thread (two; none on the 1×1 fast
    /// path, see [`is_pointwise`](Self::is_pointwise), nor on the depthwise path, see
    /// [`is_depthwise`](Self::is_depthwise); with stride 1 and one group, the padded input
    /// and the output over the padded width where they are larger), then the weight and bias
    /// gradients of all but the first chunk of the batch: [`conv2d_backward`] sums each
    /// chunk apart (on whichever thread claims it) and adds the chunks' sums in order at the
    /// end, the same sums on one thread or two, so results do not depend on the thread count.
    /// Up to 8 chunks (7 partial gradients), or 2 when the weight has more than 2¹⁶ values. It
    /// does not depend on `batch` (generated code sizes the buffer with it once).
    pub fn scratch_len(&self) -> usize {
        Plan::conv(self).scratch_len()
    }

    /// The same convolution on `batch` samples.
    fn with_batch(&self, batch: usize) -> Self {
        Self { batch, ..*self }
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

    /// Whether the kernels take the direct path: more than one group and one input channel
    /// per group (a depthwise convolution, possibly with several output channels per input
    /// channel), and not the 1×1 fast path.
    pub fn is_depthwise(&self) -> bool {
        self.groups > 1 && self.in_channels == self.groups && !self.is_pointwise()
    }

    /// The elements of `x`: `batch · in_channels · in_h · in_w`.
    pub fn input_len(&self) -> usize {
        self.batch * self.in_channels * self.in_h * self.in_w
    }

    /// The elements of `y`: `batch · out_channels · out_h · out_w`.
    pub fn output_len(&self) -> usize {
        self.batch * self.out_channels * self.out_h() * self.out_w()
    }

    /// The elements of the weight: `out_channels · in_channels/groups · kernel_h · kernel_w`.
    pub fn weight_len(&self) -> usize {
        self.out_channels * self.patch_len()
    }

    /// The input channels of one group.
    fn group_in(&self) -> usize {
        self.in_channels / self.groups.max(1)
    }

    /// The output channels of one group.
    fn group_out(&self) -> usize {
        self.out_channels / self.groups.max(1)
    }

    /// The reduction length of a group's GEMM, `in_channels/groups · kernel_h · kernel_w`.
    fn patch_len(&self) -> usize {
        self.group_in() * self.kernel_h * self.kernel_w
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
        assert!(
            self.dilation_h > 0 && self.dilation_w > 0,
            "{what}: dilations must be at least 1, got ({}, {})",
            self.dilation_h,
            self.dilation_w
        );
        assert!(
            self.groups > 0
                && self.in_channels.is_multiple_of(self.groups)
                && self.out_channels.is_multiple_of(self.groups),
            "{what}: {} groups must divide both {} input and {} output channels",
            self.groups,
            self.in_channels,
            self.out_channels
        );
    }
}

/// The sizes of a 2-D transposed convolution (PyTorch's `nn.ConvTranspose2d`): the adjoint of
/// the convolution [`adjoint`](Self::adjoint) describes, which maps this layer's output shape
/// back to its input shape. The weight is `[in_channels, out_channels/groups, kernel_h,
/// kernel_w]`, the bias `[out_channels]`.
///
/// ```
/// use kiln_runtime::kernels::conv::ConvTranspose2dGeometry;
/// let g = ConvTranspose2dGeometry {
///     batch: 1, in_channels: 4, in_h: 5, in_w: 3, out_channels: 2,
///     kernel_h: 3, kernel_w: 3, stride_h: 2, stride_w: 2, pad_h: 1, pad_w: 0,
///     output_pad_h: 1, output_pad_w: 0, dilation_h: 1, dilation_w: 1, groups: 1,
/// };
/// // (5 − 1)·2 − 2 + 2 + 1 + 1 = 10, (3 − 1)·2 + 2 + 1 = 7
/// assert_eq!((g.out_h(), g.out_w()), (10, 7));
/// assert_eq!(g.weight_len(), 4 * 2 * 3 * 3);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvTranspose2dGeometry {
    /// Samples in the batch (`N`).
    pub batch: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Input height.
    pub in_h: usize,
    /// Input width.
    pub in_w: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel height.
    pub kernel_h: usize,
    /// Kernel width.
    pub kernel_w: usize,
    /// Vertical stride (≥ 1): the spacing of the input rows in the output.
    pub stride_h: usize,
    /// Horizontal stride (≥ 1).
    pub stride_w: usize,
    /// Rows cropped from the top and bottom of the full output (`dilation·(kernel − 1) −
    /// padding` zero rows are added around the input, as PyTorch).
    pub pad_h: usize,
    /// Columns cropped from the left and right of the full output.
    pub pad_w: usize,
    /// Extra rows at the bottom of the output (smaller than the stride or the dilation).
    pub output_pad_h: usize,
    /// Extra columns at the right of the output.
    pub output_pad_w: usize,
    /// Vertical spacing of the kernel taps (≥ 1).
    pub dilation_h: usize,
    /// Horizontal spacing of the kernel taps (≥ 1).
    pub dilation_w: usize,
    /// Channel groups (≥ 1, dividing both channel counts).
    pub groups: usize,
}

/// `(in − 1)·stride − 2·pad + dilation·(kernel − 1) + output_pad + 1`, or 0 when negative.
fn transposed_extent(
    input: usize,
    stride: usize,
    pad: usize,
    dilation: usize,
    kernel: usize,
    output_pad: usize,
) -> usize {
    if input == 0 || kernel == 0 {
        return 0;
    }
    let full = (input - 1) * stride + dilation * (kernel - 1) + output_pad + 1;
    full.saturating_sub(2 * pad)
}

impl ConvTranspose2dGeometry {
    /// The output height `(in_h − 1)·stride_h − 2·pad_h + dilation_h·(kernel_h − 1) +
    /// output_pad_h + 1` (0 when that is negative).
    pub fn out_h(&self) -> usize {
        transposed_extent(
            self.in_h,
            self.stride_h,
            self.pad_h,
            self.dilation_h,
            self.kernel_h,
            self.output_pad_h,
        )
    }

    /// The output width, as [`out_h`](Self::out_h) across.
    pub fn out_w(&self) -> usize {
        transposed_extent(
            self.in_w,
            self.stride_w,
            self.pad_w,
            self.dilation_w,
            self.kernel_w,
            self.output_pad_w,
        )
    }

    /// The convolution this layer is the adjoint of: from this layer's output shape
    /// (`out_channels`, `out_h`, `out_w`) to its input's channels, with the same kernel,
    /// stride, padding, dilation and groups (and the same weight array).
    pub fn adjoint(&self) -> Conv2dGeometry {
        Conv2dGeometry {
            batch: self.batch,
            in_channels: self.out_channels,
            in_h: self.out_h(),
            in_w: self.out_w(),
            out_channels: self.in_channels,
            kernel_h: self.kernel_h,
            kernel_w: self.kernel_w,
            stride_h: self.stride_h,
            stride_w: self.stride_w,
            pad_h: self.pad_h,
            pad_w: self.pad_w,
            dilation_h: self.dilation_h,
            dilation_w: self.dilation_w,
            groups: self.groups,
        }
    }

    /// The elements of `x`: `batch · in_channels · in_h · in_w`.
    pub fn input_len(&self) -> usize {
        self.batch * self.in_channels * self.in_h * self.in_w
    }

    /// The elements of `y`: `batch · out_channels · out_h · out_w`.
    pub fn output_len(&self) -> usize {
        self.batch * self.out_channels * self.out_h() * self.out_w()
    }

    /// The elements of the weight: `in_channels · out_channels/groups · kernel_h · kernel_w`.
    pub fn weight_len(&self) -> usize {
        self.adjoint().weight_len()
    }

    /// The scratch [`conv_transpose2d_forward`] and [`conv_transpose2d_backward`] need: as
    /// [`Conv2dGeometry::scratch_len`], one column matrix per thread (over this layer's input
    /// positions) and the partial gradients of the batch's chunks. It does not depend on
    /// `batch`.
    pub fn scratch_len(&self) -> usize {
        Plan::transposed(self).scratch_len()
    }

    #[track_caller]
    fn check(&self, what: &str) {
        self.adjoint().check(what);
        assert!(
            (self.output_pad_h < self.stride_h || self.output_pad_h < self.dilation_h)
                && (self.output_pad_w < self.stride_w || self.output_pad_w < self.dilation_w),
            "{what}: output padding ({}, {}) must be smaller than the stride or the dilation",
            self.output_pad_h,
            self.output_pad_w
        );
    }
}

/// How the batch-level drivers run a convolution or its adjoint: the convolution, the
/// positions of its output grid (its own `out_h × out_w`, or the transposed layer's input
/// extent, which can be smaller when the output padding reaches past the stride), and which
/// way the layer goes.
#[derive(Clone, Copy, Debug)]
struct Plan {
    /// The convolution (for a transposed layer, its adjoint).
    conv: Conv2dGeometry,
    /// The rows of the convolution's output grid.
    out_h: usize,
    /// The columns of the convolution's output grid.
    out_w: usize,
    /// Whether the layer is the transposed convolution: its input is the grid, its output
    /// the convolution's input.
    transposed: bool,
}

impl Plan {
    fn conv(g: &Conv2dGeometry) -> Self {
        Plan {
            conv: *g,
            out_h: g.out_h(),
            out_w: g.out_w(),
            transposed: false,
        }
    }

    fn transposed(g: &ConvTranspose2dGeometry) -> Self {
        Plan {
            conv: g.adjoint(),
            out_h: g.in_h,
            out_w: g.in_w,
            transposed: true,
        }
    }

    fn with_batch(&self, batch: usize) -> Self {
        Plan {
            conv: self.conv.with_batch(batch),
            ..*self
        }
    }

    /// Positions of the grid.
    fn positions(&self) -> usize {
        self.out_h * self.out_w
    }

    /// One sample of the convolution's input.
    fn conv_in_sample(&self) -> usize {
        self.conv.in_channels * self.conv.in_h * self.conv.in_w
    }

    /// One sample of the convolution's output (the grid).
    fn conv_out_sample(&self) -> usize {
        self.conv.out_channels * self.positions()
    }

    /// One sample of the layer's input.
    fn x_sample(&self) -> usize {
        if self.transposed {
            self.conv_out_sample()
        } else {
            self.conv_in_sample()
        }
    }

    /// One sample of the layer's output.
    fn y_sample(&self) -> usize {
        if self.transposed {
            self.conv_in_sample()
        } else {
            self.conv_out_sample()
        }
    }

    /// The layer's output channels (the bias length).
    fn y_channels(&self) -> usize {
        if self.transposed {
            self.conv.in_channels
        } else {
            self.conv.out_channels
        }
    }

    /// One thread's column matrix: a group's `patch × positions`, or 0 on the 1×1 and
    /// depthwise paths; with the flipped-weight input gradient, room for its columns of `dy`
    /// and the flipped weights too.
    fn sample_scratch_len(&self) -> usize {
        let forward = if self.runs_implicit() {
            implicit_len(&self.conv)
        } else {
            0
        };
        let input_grad = match self.flipped_input_grad() {
            Some(adjoint) => flipped_scratch_len(&self.conv, &adjoint),
            None => 0,
        };
        self.im2col_len().max(forward).max(input_grad)
    }

    /// Whether the convolution's products over the grid run as an implicit GEMM over the
    /// padded input ([`implicit_conv`]) rather than through im2col: stride 1, one group, a
    /// kernel larger than 1×1, and the grid the convolution's own output.
    fn runs_implicit(&self) -> bool {
        let g = &self.conv;
        g.groups == 1
            && (g.stride_h, g.stride_w) == (1, 1)
            && !g.is_pointwise()
            && (self.out_h, self.out_w) == (g.out_h(), g.out_w())
    }

    /// Whether a transposed layer's backward can reuse, for its input gradient, the column
    /// matrix its weight gradient unfolded from `dy`: both are products over the columns of
    /// the same convolution input (`dy`), which im2col writes whole with one group (with
    /// several, `cols` holds only the last group's) and which the implicit, 1×1 and depthwise
    /// paths never form. W8's 2 × 2 stride-2 up-sampling layers unfolded each sample's `dy`
    /// twice.
    fn shares_columns(&self) -> bool {
        let g = &self.conv;
        self.transposed
            && g.groups == 1
            && !self.runs_implicit()
            && !g.is_pointwise()
            && !g.is_depthwise()
    }

    /// The column matrix of one group of one sample (`patch × positions`), 0 on the 1×1 and
    /// depthwise paths: the part of a thread's scratch the forward and weight-gradient
    /// products read as an operand.
    fn im2col_len(&self) -> usize {
        if self.conv.is_pointwise() || self.conv.is_depthwise() {
            0
        } else {
            self.conv.patch_len() * self.positions()
        }
    }

    /// For a plain convolution with stride 1 (one group, no dilation, "same" padding, at
    /// least 16 input channels), the input gradient is itself a convolution: of `dy` (padded by `k − 1 − p`)
    /// with the weights flipped in space and transposed in their channels. Run that way, its
    /// GEMM has `k = out·kh·kw` instead of `k = out` and the scatter of col2im becomes the
    /// gather of im2col. Returns that convolution's geometry (one sample), or `None` when the
    /// convolution does not qualify.
    fn flipped_input_grad(&self) -> Option<Conv2dGeometry> {
        let g = &self.conv;
        // Only where it pays: with "same" padding (without it, most of the padded `dy` the
        // products read is zeros: LeNet's unpadded 5×5 layer ran 60% slower this way), and
        // with enough input channels to fill the GEMM's row tiles.
        let plain = !self.transposed
            && g.groups == 1
            && (g.stride_h, g.stride_w, g.dilation_h, g.dilation_w) == (1, 1, 1, 1)
            && (2 * g.pad_h + 1 == g.kernel_h || 2 * g.pad_h + 2 == g.kernel_h)
            && (2 * g.pad_w + 1 == g.kernel_w || 2 * g.pad_w + 2 == g.kernel_w)
            && g.in_channels >= 16
            && !g.is_pointwise();
        plain.then(|| Conv2dGeometry {
            batch: 1,
            in_channels: g.out_channels,
            in_h: self.out_h,
            in_w: self.out_w,
            out_channels: g.in_channels,
            pad_h: g.kernel_h - 1 - g.pad_h,
            pad_w: g.kernel_w - 1 - g.pad_w,
            ..*g
        })
    }

    /// Whether one sample's input gradient writes every element of that sample's `dx`, so
    /// that a backward which does not accumulate can write it (`beta` 0) instead of clearing
    /// `dx` first and adding onto it: a transposed layer's (a convolution's forward pass),
    /// the flipped-weight one's (also a convolution) and a 1×1 convolution's (one product per
    /// group onto the sample itself). col2im adds overlapping windows, and may leave
    /// positions no window reads.
    fn input_grad_writes_whole(&self) -> bool {
        self.transposed || self.flipped_input_grad().is_some() || self.conv.is_pointwise()
    }

    /// A weight and a bias gradient.
    fn gradient_len(&self) -> usize {
        self.conv.weight_len() + self.y_channels()
    }

    /// The most chunks a batch's weight gradient is summed in:
    /// [`MAX_CHUNKS`](parallel::MAX_CHUNKS), or 2 when the weight is large (over 2¹⁶
    /// values), to bound the scratch.
    fn max_gradient_chunks(&self) -> usize {
        if self.gradient_len() <= 1 << 16 {
            parallel::MAX_CHUNKS
        } else {
            2
        }
    }

    /// The chunks this batch's weight gradient is summed in: a function of the geometry
    /// only, so the sum is the same whichever threads compute it.
    fn gradient_chunks(&self) -> usize {
        self.conv.batch.min(self.max_gradient_chunks())
    }

    fn scratch_len(&self) -> usize {
        2 * self.sample_scratch_len() + (self.max_gradient_chunks() - 1) * self.gradient_len()
    }

    /// Multiply-adds of the forward pass, the measure of whether splitting it pays.
    fn work(&self) -> usize {
        (self.conv.batch * self.conv_out_sample()).saturating_mul(self.conv.patch_len())
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

/// Whether the two kernel columns of a 2-wide, stride-2 window (no dilation, no horizontal
/// padding, every output column inside the input) read the even and the odd input columns
/// of each row: then [`im2col`] splits a row into its two kernel rows in one pass
/// ([`deinterleave`]) and [`col2im_add`] merges them back ([`interleave_add`]), instead of
/// a strided element-by-element copy per kernel column (a U-Net's 2 × 2 transposed
/// convolutions, and 2 × 2 stride-2 downsampling).
fn column_pairs(g: &Conv2dGeometry, out_w: usize) -> bool {
    g.kernel_w == 2 && g.stride_w == 2 && g.dilation_w == 1 && g.pad_w == 0 && 2 * out_w <= g.in_w
}

/// `even[j] = src[2j]`, `odd[j] = src[2j + 1]` (`src` holds `2·even.len()` elements).
#[inline(always)]
fn deinterleave<F: Copy>(src: &[F], even: &mut [F], odd: &mut [F]) {
    for ((e, o), pair) in even.iter_mut().zip(odd.iter_mut()).zip(src.chunks_exact(2)) {
        *e = pair[0];
        *o = pair[1];
    }
}

/// `dst[2j] += even[j]`, `dst[2j + 1] += odd[j]`: the adjoint of [`deinterleave`].
#[inline(always)]
fn interleave_add<F: Float>(dst: &mut [F], even: &[F], odd: &[F]) {
    for ((pair, &e), &o) in dst.chunks_exact_mut(2).zip(even).zip(odd) {
        pair[0] += e;
        pair[1] += o;
    }
}

/// Unfolds the channels `x` (`[c, H, W]`, one group of one sample) into `cols` (`[c·kh·kw,
/// out_h·out_w]` over the `grid` of output positions): row `(c·kh + u)·kw + v`, column
/// `i·out_w + j` holds `x[c, i·sh + u·dh − ph, j·sw + v·dw − pw]`, or 0 in the padding.
fn im2col<F: Float>(x: &[F], g: &Conv2dGeometry, grid: (usize, usize), cols: &mut [F]) {
    let (out_h, out_w) = grid;
    let plane = g.in_h * g.in_w;
    let positions = out_h * out_w;
    if positions == 0 || plane == 0 {
        cols.fill(F::ZERO);
        return;
    }
    if g.stride_h == 1 && g.stride_w == 1 {
        im2col_stride1(x, g, grid, cols);
        return;
    }
    let pairs = column_pairs(g, out_w);
    let mut rows = cols.chunks_exact_mut(positions);
    for x_c in x.chunks_exact(plane) {
        for u in 0..g.kernel_h {
            let du = u * g.dilation_h;
            let (i_lo, i_hi) = valid_range(du, g.pad_h, g.stride_h, g.in_h, out_h);
            if pairs {
                let even = rows.next().expect("im2col: cols is sized by the geometry");
                let odd = rows.next().expect("im2col: cols is sized by the geometry");
                let lines = even
                    .chunks_exact_mut(out_w)
                    .zip(odd.chunks_exact_mut(out_w));
                for (i, (even, odd)) in lines.enumerate() {
                    if i < i_lo || i >= i_hi {
                        fill_short(even, F::ZERO);
                        fill_short(odd, F::ZERO);
                        continue;
                    }
                    let ih = i * g.stride_h + du - g.pad_h;
                    deinterleave(&x_c[ih * g.in_w..ih * g.in_w + 2 * out_w], even, odd);
                }
                continue;
            }
            for v in 0..g.kernel_w {
                let dv = v * g.dilation_w;
                let (j_lo, j_hi) = valid_range(dv, g.pad_w, g.stride_w, g.in_w, out_w);
                let row = rows.next().expect("im2col: cols is sized by the geometry");
                for (i, dst) in row.chunks_exact_mut(out_w).enumerate() {
                    if i < i_lo || i >= i_hi {
                        fill_short(dst, F::ZERO);
                        continue;
                    }
                    let ih = i * g.stride_h + du - g.pad_h;
                    let src = &x_c[ih * g.in_w..(ih + 1) * g.in_w];
                    fill_short(&mut dst[..j_lo], F::ZERO);
                    fill_short(&mut dst[j_hi..], F::ZERO);
                    if j_lo == j_hi {
                        continue;
                    }
                    let iw_lo = j_lo * g.stride_w + dv - g.pad_w;
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

/// [`im2col`] for stride 1: input row `i + u·dh − pad_h` feeds output row `i` of kernel row
/// `(c, u, v)`, so each output row is one short copy between zero-filled edges. When the output
/// is as wide as the input, a kernel row is the input shifted by a constant: one long copy,
/// then the few columns that wrapped into the neighbouring input row are zeroed.
fn im2col_stride1<F: Float>(x: &[F], g: &Conv2dGeometry, grid: (usize, usize), cols: &mut [F]) {
    let (out_h, out_w) = grid;
    let (in_w, plane) = (g.in_w, g.in_h * g.in_w);
    let positions = out_h * out_w;
    let mut rows = cols.chunks_exact_mut(positions);
    for x_c in x.chunks_exact(plane) {
        for u in 0..g.kernel_h {
            let du = u * g.dilation_h;
            let (i_lo, i_hi) = valid_range(du, g.pad_h, 1, g.in_h, out_h);
            for v in 0..g.kernel_w {
                let dv = v * g.dilation_w;
                let (j_lo, j_hi) = valid_range(dv, g.pad_w, 1, g.in_w, out_w);
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
                let ih_lo = i_lo + du - g.pad_h;
                let iw_lo = j_lo + dv - g.pad_w;
                if out_w == in_w {
                    // Output (i, j) reads flat input (i + u·dh − ph)·W + j + v·dw − pw: a
                    // constant shift. Copy the span of valid positions from (i_lo, j_lo) to
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
/// read from (padding entries are dropped). `dx` (`[c, H, W]`) must be initialised.
fn col2im_add<F: Float>(cols: &[F], g: &Conv2dGeometry, grid: (usize, usize), dx: &mut [F]) {
    let (out_h, out_w) = grid;
    let plane = g.in_h * g.in_w;
    let positions = out_h * out_w;
    if positions == 0 || plane == 0 {
        return;
    }
    let pairs = column_pairs(g, out_w);
    let mut rows = cols.chunks_exact(positions);
    for dx_c in dx.chunks_exact_mut(plane) {
        for u in 0..g.kernel_h {
            let du = u * g.dilation_h;
            let (i_lo, i_hi) = valid_range(du, g.pad_h, g.stride_h, g.in_h, out_h);
            if pairs {
                let even = rows.next().expect("col2im: cols is sized by the geometry");
                let odd = rows.next().expect("col2im: cols is sized by the geometry");
                for i in i_lo..i_hi {
                    let ih = i * g.stride_h + du - g.pad_h;
                    interleave_add(
                        &mut dx_c[ih * g.in_w..ih * g.in_w + 2 * out_w],
                        &even[i * out_w..(i + 1) * out_w],
                        &odd[i * out_w..(i + 1) * out_w],
                    );
                }
                continue;
            }
            for v in 0..g.kernel_w {
                let dv = v * g.dilation_w;
                let (j_lo, j_hi) = valid_range(dv, g.pad_w, g.stride_w, g.in_w, out_w);
                let row = rows.next().expect("col2im: cols is sized by the geometry");
                if j_lo == j_hi || i_lo == i_hi {
                    continue;
                }
                if g.stride_h == 1 && g.stride_w == 1 && j_lo == 0 && j_hi == out_w {
                    // No horizontal padding: whole rows of the block add onto input rows.
                    let start = (i_lo + du - g.pad_h) * g.in_w + dv - g.pad_w;
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
                    let ih = i * g.stride_h + du - g.pad_h;
                    let iw_lo = j_lo * g.stride_w + dv - g.pad_w;
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

/// Visits every kernel tap `(u, v)` of the convolution `g` over the `grid`, with each output
/// row `i` that reads inside the input: `tap(u·kw + v, i, ih, j_lo, j_hi, iw_lo)` where `ih`
/// is the input row, output columns `j_lo..j_hi` read input columns `iw_lo, iw_lo + sw, ..`.
/// The depthwise kernels below are this loop with different bodies.
#[inline(always)]
fn for_each_tap(
    g: &Conv2dGeometry,
    grid: (usize, usize),
    mut tap: impl FnMut(usize, usize, usize, usize, usize, usize),
) {
    let (out_h, out_w) = grid;
    for u in 0..g.kernel_h {
        let du = u * g.dilation_h;
        let (i_lo, i_hi) = valid_range(du, g.pad_h, g.stride_h, g.in_h, out_h);
        for v in 0..g.kernel_w {
            let dv = v * g.dilation_w;
            let (j_lo, j_hi) = valid_range(dv, g.pad_w, g.stride_w, g.in_w, out_w);
            if j_lo == j_hi {
                continue;
            }
            let iw_lo = j_lo * g.stride_w + dv - g.pad_w;
            for i in i_lo..i_hi {
                tap(
                    u * g.kernel_w + v,
                    i,
                    i * g.stride_h + du - g.pad_h,
                    j_lo,
                    j_hi,
                    iw_lo,
                );
            }
        }
    }
}

/// `dst[j] += w · src[j·stride]`: one kernel tap over one output row.
#[inline(always)]
fn axpy_strided<F: Float>(dst: &mut [F], w: F, src: &[F], stride: usize) {
    if stride == 1 {
        let n = dst.len();
        for (d, &s) in dst.iter_mut().zip(&src[..n]) {
            *d += w * s;
        }
    } else {
        for (d, &s) in dst.iter_mut().zip(src.iter().step_by(stride)) {
            *d += w * s;
        }
    }
}

/// `dst[j·stride] += w · src[j]`: the adjoint of [`axpy_strided`].
#[inline(always)]
fn axpy_scatter<F: Float>(dst: &mut [F], w: F, src: &[F], stride: usize) {
    if stride == 1 {
        for (d, &s) in dst[..src.len()].iter_mut().zip(src) {
            *d += w * s;
        }
    } else {
        for (d, &s) in dst.iter_mut().step_by(stride).zip(src) {
            *d += w * s;
        }
    }
}

/// `Σ_j a[j] · b[j·stride]` in 8 interleaved partial sums when `stride` is 1.
#[inline(always)]
fn dot_strided<F: Float>(a: &[F], b: &[F], stride: usize) -> F {
    if stride == 1 {
        let b = &b[..a.len()];
        let mut acc = [F::ZERO; 8];
        let mut blocks_a = a.chunks_exact(8);
        let mut blocks_b = b.chunks_exact(8);
        for (x, y) in (&mut blocks_a).zip(&mut blocks_b) {
            for l in 0..8 {
                acc[l] += x[l] * y[l];
            }
        }
        let mut total =
            ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
        for (&x, &y) in blocks_a.remainder().iter().zip(blocks_b.remainder()) {
            total += x * y;
        }
        total
    } else {
        let mut total = F::ZERO;
        for (&x, &y) in a.iter().zip(b.iter().step_by(stride)) {
            total += x * y;
        }
        total
    }
}

/// The depthwise forward of one sample: `y[o] (+)= Σ_taps w[o, tap] · x[o / m]` shifted,
/// with `m = O/G` output channels per input channel. With `beta` 0 the planes are cleared
/// first, with 1 the result is added onto them.
fn depthwise_forward<F: Float>(
    x: &[F],
    weight: &[F],
    g: &Conv2dGeometry,
    grid: (usize, usize),
    y: &mut [F],
    beta: F,
) {
    let (plane, positions, taps) = (g.in_h * g.in_w, grid.0 * grid.1, g.kernel_h * g.kernel_w);
    let m = g.group_out();
    for (o, y_o) in y.chunks_exact_mut(positions).enumerate() {
        if beta == F::ZERO {
            y_o.fill(F::ZERO);
        }
        let x_c = &x[(o / m) * plane..(o / m + 1) * plane];
        let w_o = &weight[o * taps..(o + 1) * taps];
        for_each_tap(g, grid, |t, i, ih, j_lo, j_hi, iw_lo| {
            let dst = &mut y_o[i * grid.1 + j_lo..i * grid.1 + j_hi];
            axpy_strided(dst, w_o[t], &x_c[ih * g.in_w + iw_lo..], g.stride_w);
        });
    }
}

/// The depthwise input gradient of one sample: `dx[o / m] += w[o, tap] · dy[o]` shifted back
/// (the adjoint of [`depthwise_forward`]).
fn depthwise_input_grad<F: Float>(
    dy: &[F],
    weight: &[F],
    g: &Conv2dGeometry,
    grid: (usize, usize),
    dx: &mut [F],
) {
    let (plane, positions, taps) = (g.in_h * g.in_w, grid.0 * grid.1, g.kernel_h * g.kernel_w);
    let m = g.group_out();
    for (o, dy_o) in dy.chunks_exact(positions).enumerate() {
        let dx_c = &mut dx[(o / m) * plane..(o / m + 1) * plane];
        let w_o = &weight[o * taps..(o + 1) * taps];
        for_each_tap(g, grid, |t, i, ih, j_lo, j_hi, iw_lo| {
            let src = &dy_o[i * grid.1 + j_lo..i * grid.1 + j_hi];
            axpy_scatter(&mut dx_c[ih * g.in_w + iw_lo..], w_o[t], src, g.stride_w);
        });
    }
}

/// The depthwise weight gradient of one sample: `dw[o, tap] (+)= Σ dy[o] · x[o / m]` shifted;
/// `beta` 0 overwrites, 1 adds.
fn depthwise_weight_grad<F: Float>(
    x: &[F],
    dy: &[F],
    g: &Conv2dGeometry,
    grid: (usize, usize),
    dweight: &mut [F],
    beta: F,
) {
    let (plane, positions, taps) = (g.in_h * g.in_w, grid.0 * grid.1, g.kernel_h * g.kernel_w);
    let m = g.group_out();
    for (o, dy_o) in dy.chunks_exact(positions).enumerate() {
        let x_c = &x[(o / m) * plane..(o / m + 1) * plane];
        let dw_o = &mut dweight[o * taps..(o + 1) * taps];
        if beta == F::ZERO {
            dw_o.fill(F::ZERO);
        }
        for_each_tap(g, grid, |t, i, ih, j_lo, j_hi, iw_lo| {
            let a = &dy_o[i * grid.1 + j_lo..i * grid.1 + j_hi];
            dw_o[t] += dot_strided(a, &x_c[ih * g.in_w + iw_lo..], g.stride_w);
        });
    }
}

/// One sample of the convolution: `y (+)= conv(x)` over the plan's grid, group by group
/// (`beta` 0 overwrites `y`, 1 adds onto it).
fn conv_sample<F: Float>(plan: &Plan, x: &[F], weight: &[F], y: &mut [F], beta: F, cols: &mut [F]) {
    conv_sample_with(plan, x, weight, y, beta, cols, false)
}

/// [`conv_sample`], where `cols_hold_x` says that `cols` already holds `x`'s column matrix
/// (see [`Plan::shares_columns`]).
fn conv_sample_with<F: Float>(
    plan: &Plan,
    x: &[F],
    weight: &[F],
    y: &mut [F],
    beta: F,
    cols: &mut [F],
    cols_hold_x: bool,
) {
    let g = &plan.conv;
    let grid = (plan.out_h, plan.out_w);
    if g.is_depthwise() {
        return depthwise_forward(x, weight, g, grid, y, beta);
    }
    if plan.runs_implicit() {
        return implicit_conv(g, x, weight, y, beta, cols);
    }
    let cols = &mut cols[..plan.im2col_len()];
    let (gin, go, ckk, p) = (
        g.group_in() * g.in_h * g.in_w,
        g.group_out(),
        g.patch_len(),
        plan.positions(),
    );
    for k in 0..g.groups {
        let x_k = &x[k * gin..(k + 1) * gin];
        let w_k = &weight[k * go * ckk..(k + 1) * go * ckk];
        let y_k = &mut y[k * go * p..(k + 1) * go * p];
        let patches: &[F] = if g.is_pointwise() {
            x_k
        } else {
            if !cols_hold_x {
                im2col(x_k, g, grid, cols);
            }
            cols
        };
        // y_k[O/G, P] (+)= W_k[O/G, CKK] · cols[CKK, P]
        gemm(go, ckk, p, F::ONE, w_k, false, patches, false, beta, y_k);
    }
}

/// One sample of the convolution's input gradient, group by group: `dx += col2im(Wᵀ · dy)`
/// (`beta` 1), or `dx = …` (`beta` 0, only where [`Plan::input_grad_writes_whole`]).
fn conv_input_grad_sample<F: Float>(
    plan: &Plan,
    dy: &[F],
    weight: &[F],
    dx: &mut [F],
    beta: F,
    cols: &mut [F],
) {
    debug_assert!(beta == F::ONE || plan.input_grad_writes_whole());
    let g = &plan.conv;
    let grid = (plan.out_h, plan.out_w);
    if g.is_depthwise() {
        return depthwise_input_grad(dy, weight, g, grid, dx);
    }
    if let Some(adjoint) = plan.flipped_input_grad() {
        return flipped_input_grad(&adjoint, dy, weight, dx, beta, cols);
    }
    let cols = &mut cols[..plan.im2col_len()];
    let (gin, go, ckk, p) = (
        g.group_in() * g.in_h * g.in_w,
        g.group_out(),
        g.patch_len(),
        plan.positions(),
    );
    for k in 0..g.groups {
        let dy_k = &dy[k * go * p..(k + 1) * go * p];
        let w_k = &weight[k * go * ckk..(k + 1) * go * ckk];
        let dx_k = &mut dx[k * gin..(k + 1) * gin];
        // dcols[CKK, P] = W_k[O/G, CKK]ᵀ · dy_k[O/G, P]
        if g.is_pointwise() {
            // The columns are the sample itself: straight into it.
            gemm(ckk, go, p, F::ONE, w_k, true, dy_k, false, beta, dx_k);
        } else {
            gemm(ckk, go, p, F::ONE, w_k, true, dy_k, false, F::ZERO, cols);
            col2im_add(cols, g, grid, dx_k);
        }
    }
}

/// Scratch of [`flipped_input_grad`]: the flipped weights (`in × out·kh·kw`), then the
/// implicit GEMM's scratch for the convolution of `dy`. `adjoint` is the convolution of `dy` that gives `dx`.
fn flipped_scratch_len(g: &Conv2dGeometry, adjoint: &Conv2dGeometry) -> usize {
    g.in_channels * adjoint.patch_len() + implicit_len(adjoint)
}

/// One sample's input gradient of a plain stride-1 convolution, as the convolution `adjoint`
/// of `dy` with the flipped weights: `dx[c, i, j] += Σ_{o,u,v} W[o, c, kh−1−u, kw−1−v] ·
/// dy_padded[o, i + u, j + v]` (see [`Plan::flipped_input_grad`]). Adds into `dx` (`beta`
/// 1) or writes it (`beta` 0).
fn flipped_input_grad<F: Float>(
    adjoint: &Conv2dGeometry,
    dy: &[F],
    weight: &[F],
    dx: &mut [F],
    beta: F,
    scratch: &mut [F],
) {
    let (kh, kw) = (adjoint.kernel_h, adjoint.kernel_w);
    let (outs, ins) = (adjoint.in_channels, adjoint.out_channels);
    let patch = adjoint.patch_len();
    let (flipped, rest) = scratch.split_at_mut(ins * patch);
    // flipped[c, (o, u, v)] = W[o, c, kh−1−u, kw−1−v]: a few thousand values, rebuilt per
    // sample rather than kept, so that the scratch stays per thread.
    for c in 0..ins {
        for o in 0..outs {
            let w = &weight[(o * ins + c) * kh * kw..(o * ins + c + 1) * kh * kw];
            let row = &mut flipped[c * patch + o * kh * kw..c * patch + (o + 1) * kh * kw];
            for (dst, src) in row.iter_mut().zip(w.iter().rev()) {
                *dst = *src;
            }
        }
    }
    implicit_conv(adjoint, dy, flipped, dx, beta, rest);
}

/// Scratch of [`implicit_conv`] for one sample of `g`: the padded input (`C·Hp·Wp`, and
/// [`gemm::ROWS_SLACK`] more that the last panels read) and the output over the padded width
/// (`O·out_h·Wp`), where `Hp = H + 2·pad_h` and `Wp = W + 2·pad_w`.
fn implicit_len(g: &Conv2dGeometry) -> usize {
    let (padded, grid) = implicit_parts(g);
    padded + grid
}

/// The padded input's extent `(Hp, Wp)`: `(H + 2·pad_h, W + 2·pad_w)`.
fn padded_extent(g: &Conv2dGeometry) -> (usize, usize) {
    (g.in_h + 2 * g.pad_h, g.in_w + 2 * g.pad_w)
}

/// The lengths of the two parts of [`implicit_len`]: the padded input with its slack, and the
/// grid over the padded width.
fn implicit_parts(g: &Conv2dGeometry) -> (usize, usize) {
    let (hp, wp) = padded_extent(g);
    (
        g.in_channels * hp * wp + gemm::ROWS_SLACK,
        g.out_channels * g.out_h() * wp + GRID_ALIGN,
    )
}

/// Elements the grid of [`implicit_buffers`] may start after its part of the scratch, to
/// start on a cache line (64 bytes, 16 f32).
const GRID_ALIGN: usize = 16;

/// The two parts of [`implicit_len`] in `scratch`: the padded input and the grid, the grid
/// starting on a cache line. Its rows are the `A` rows of the weight gradient's dot products
/// ([`implicit_weight_grad`]) and the `C` rows of the forward product, whole vectors apart
/// for W8's sizes: loads and stores that straddle two lines cost two (the weight gradient
/// of a 16-channel 64 × 64 layer: 15% faster aligned).
fn implicit_buffers<'a, F>(g: &Conv2dGeometry, scratch: &'a mut [F]) -> (&'a mut [F], &'a mut [F]) {
    let (padded, grid) = implicit_parts(g);
    let (padded, rest) = scratch.split_at_mut(padded);
    let skip = rest.as_ptr().align_offset(64).min(GRID_ALIGN);
    (padded, &mut rest[skip..skip + grid - GRID_ALIGN])
}

thread_local! {
    /// The taps' offsets of [`with_tap_offsets`], kept per thread so that a warm call allocates
    /// nothing.
    static ROW_OFFSETS: std::cell::RefCell<Vec<usize>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `y = W · im2col(x) + beta · y` for one sample of a stride-1, one-group convolution `g`
/// (`W` is `[out, in·kh·kw]`), without forming the column matrix.
///
/// With the input zero-padded into `[C, Hp, Wp]` and its rows laid end to end, output
/// `(i, j)` of tap `(c, u, v)` reads padded element `c·Hp·Wp + (i + u·dh)·Wp + (j + v·dw)`:
/// the flat position `q = i·Wp + j` plus an offset that depends on the tap only. So the
/// column matrix's row for a tap is the padded input from that offset on, and the product
/// `W · cols` is a GEMM whose `B` rows are read in place through `in·kh·kw` offsets
/// ([`gemm::gemm_offsets`] by rows), over the `q` of the grid laid out with the padded width. The
/// `Wp − out_w` columns per row that wrap into the next row are computed and dropped when
/// the result is copied out. The copies are the padded input and the output; im2col wrote
/// and the GEMM packed `kh·kw` times the input.
fn implicit_conv<F: Float>(
    g: &Conv2dGeometry,
    x: &[F],
    weight: &[F],
    y: &mut [F],
    beta: F,
    scratch: &mut [F],
) {
    let wp = padded_extent(g).1;
    let (out_h, out_w) = (g.out_h(), g.out_w());
    if out_h == 0 || out_w == 0 {
        return;
    }
    let (outs, patch) = (g.out_channels, g.patch_len());
    let (padded, grid) = implicit_buffers(g, scratch);
    pad_input(g, x, padded);
    let n = (out_h - 1) * wp + out_w;
    with_tap_offsets(g, |offsets| {
        // SAFETY: `W` is `outs × patch` row-major; each offset plus `n + ROWS_SLACK` stays
        // inside `padded` (the largest offset is `(ins − 1)·Hp·Wp + (kh − 1)·dh·Wp + (kw −
        // 1)·dw`, and `n − 1` plus it is the last element of the last plane); the grid holds
        // `outs` rows of `out_h·Wp ≥ n` elements and overlaps neither.
        unsafe {
            F::gemm_offsets_raw(
                outs,
                patch,
                n,
                weight.as_ptr(),
                patch as isize,
                1,
                padded.as_ptr(),
                offsets.as_ptr(),
                gemm::OffsetLines::Rows,
                F::ZERO,
                grid.as_mut_ptr(),
                (out_h * wp) as isize,
            )
        };
    });
    for (y, grid) in y
        .chunks_exact_mut(out_h * out_w)
        .zip(grid.chunks_exact(out_h * wp))
    {
        for (y, row) in y.chunks_exact_mut(out_w).zip(grid.chunks(wp)) {
            if beta == F::ZERO {
                y.copy_from_slice(&row[..out_w]);
            } else {
                for (y, &r) in y.iter_mut().zip(row) {
                    *y = beta * *y + r;
                }
            }
        }
    }
}

/// Copies one sample's input (`[C, H, W]`) into `padded` as `[C, Hp, Wp]` with zeros around
/// (see [`implicit_conv`]), and zeros the rest of `padded` (the slack the last panels read,
/// so that nothing depends on what was there).
fn pad_input<F: Float>(g: &Conv2dGeometry, x: &[F], padded: &mut [F]) {
    let (hp, wp) = padded_extent(g);
    let (top, left) = (g.pad_h * wp, g.pad_w);
    let planes = g.in_channels * hp * wp;
    for (dst, src) in padded[..planes]
        .chunks_exact_mut(hp * wp)
        .zip(x.chunks_exact(g.in_h * g.in_w))
    {
        let (head, body) = dst.split_at_mut(top);
        head.fill(F::ZERO);
        let (body, tail) = body.split_at_mut(g.in_h * wp);
        tail.fill(F::ZERO);
        for (row, src) in body.chunks_exact_mut(wp).zip(src.chunks_exact(g.in_w)) {
            row[..left].fill(F::ZERO);
            row[left..left + g.in_w].copy_from_slice(src);
            row[left + g.in_w..].fill(F::ZERO);
        }
    }
    padded[planes..].fill(F::ZERO);
}

/// Runs `f` with the offsets of the column matrix's rows in the padded input (see
/// [`implicit_conv`]): tap `(c, u, v)`, in the weight's order, at `c·Hp·Wp + u·dh·Wp + v·dw`.
fn with_tap_offsets(g: &Conv2dGeometry, f: impl FnOnce(&[usize])) {
    let (hp, wp) = padded_extent(g);
    ROW_OFFSETS.with(|offsets| {
        let mut offsets = offsets.borrow_mut();
        offsets.clear();
        for c in 0..g.in_channels {
            for u in 0..g.kernel_h {
                for v in 0..g.kernel_w {
                    offsets.push(c * hp * wp + u * g.dilation_h * wp + v * g.dilation_w);
                }
            }
        }
        f(&offsets);
    });
}

/// `dW = dy · im2col(x)ᵀ + beta · dW` for one sample of a stride-1, one-group convolution
/// `g`, without forming the column matrix: the transpose of [`implicit_conv`]'s product.
/// `dy` is laid out over the padded width with the wrapped columns zero (so they add
/// nothing), and the GEMM reads the column matrix's rows, its `B`'s columns, from the padded
/// input through their offsets ([`gemm::gemm_offsets`] by columns): as tiles of dot products
/// with `dy`'s rows where the positions are many (a 64 × 64 image), else packed.
fn implicit_weight_grad<F: Float>(
    g: &Conv2dGeometry,
    x: &[F],
    dy: &[F],
    dweight: &mut [F],
    beta: F,
    scratch: &mut [F],
) {
    let wp = padded_extent(g).1;
    let (out_h, out_w) = (g.out_h(), g.out_w());
    let (outs, patch) = (g.out_channels, g.patch_len());
    let (padded, grid) = implicit_buffers(g, scratch);
    // Positions summed over: none when the grid is empty, and then dW = beta · dW.
    let k = if out_h == 0 || out_w == 0 {
        0
    } else {
        pad_input(g, x, padded);
        for (grid, dy) in grid
            .chunks_exact_mut(out_h * wp)
            .zip(dy.chunks_exact(out_h * out_w))
        {
            for (row, dy) in grid.chunks_exact_mut(wp).zip(dy.chunks_exact(out_w)) {
                row[..out_w].copy_from_slice(dy);
                row[out_w..].fill(F::ZERO);
            }
        }
        (out_h - 1) * wp + out_w
    };
    with_tap_offsets(g, |offsets| {
        // SAFETY: the grid holds `outs` rows of `out_h·Wp ≥ k` elements; column `p` of `B`
        // reads `padded[offsets[p] .. offsets[p] + k]`, inside the planes (as in
        // `implicit_conv`); `dW` is `outs × patch` row-major and overlaps neither.
        unsafe {
            F::gemm_offsets_raw(
                outs,
                k,
                patch,
                grid.as_ptr(),
                (out_h * wp) as isize,
                1,
                padded.as_ptr(),
                offsets.as_ptr(),
                gemm::OffsetLines::Cols,
                beta,
                dweight.as_mut_ptr(),
                patch as isize,
            )
        };
    });
}

/// One sample of the convolution's weight gradient: `dW (+)= dy · im2col(x)ᵀ` group by group
/// (`beta` 0 overwrites, 1 adds).
fn conv_weight_grad_sample<F: Float>(
    plan: &Plan,
    x: &[F],
    dy: &[F],
    dweight: &mut [F],
    beta: F,
    cols: &mut [F],
) {
    let g = &plan.conv;
    let grid = (plan.out_h, plan.out_w);
    if g.is_depthwise() {
        return depthwise_weight_grad(x, dy, g, grid, dweight, beta);
    }
    if plan.runs_implicit() {
        return implicit_weight_grad(g, x, dy, dweight, beta, cols);
    }
    let cols = &mut cols[..plan.im2col_len()];
    let (gin, go, ckk, p) = (
        g.group_in() * g.in_h * g.in_w,
        g.group_out(),
        g.patch_len(),
        plan.positions(),
    );
    for k in 0..g.groups {
        let x_k = &x[k * gin..(k + 1) * gin];
        let dy_k = &dy[k * go * p..(k + 1) * go * p];
        let dw_k = &mut dweight[k * go * ckk..(k + 1) * go * ckk];
        let patches: &[F] = if g.is_pointwise() {
            x_k
        } else {
            im2col(x_k, g, grid, cols);
            cols
        };
        // dW_k[O/G, CKK] (+)= dy_k[O/G, P] · cols[CKK, P]ᵀ
        gemm(go, p, ckk, F::ONE, dy_k, false, patches, true, beta, dw_k);
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
fn check_cols(what: &str, cols: usize, plan: &Plan) {
    assert!(
        cols >= plan.scratch_len(),
        "{what}: cols has {cols} elements, needs at least {} (the geometry's scratch_len)",
        plan.scratch_len()
    );
}

/// `y = conv2d(x, weight) + bias`. `y` (`[N, O, out_h, out_w]`) is overwritten.
///
/// Per sample and group the input is unfolded into `cols` (im2col) and multiplied by the
/// group's weight rows viewed as `[O/G, C/G·kh·kw]`: one GEMM per sample and group (a direct
/// loop for depthwise convolutions, see [`Conv2dGeometry::is_depthwise`]). Large batches run
/// chunk by chunk on two threads (see `kernels/parallel.rs`). `cols` must hold at least
/// [`g.scratch_len()`](Conv2dGeometry::scratch_len) elements (a longer one is fine, only its
/// prefix is used); its contents on entry are irrelevant and on exit unspecified.
///
/// # Panics
/// If a slice's length disagrees with `g`, a stride, kernel size or dilation is 0, or the
/// groups do not divide the channels (caller bugs).
///
/// ```
/// use kiln_runtime::kernels::conv::{conv2d_forward, Conv2dGeometry};
/// // One 2×2 input, one 2×2 kernel of ones: the sum of the input, plus the bias.
/// let g = Conv2dGeometry {
///     batch: 1, in_channels: 1, in_h: 2, in_w: 2, out_channels: 1,
///     kernel_h: 2, kernel_w: 2, stride_h: 1, stride_w: 1, pad_h: 0, pad_w: 0,
///     dilation_h: 1, dilation_w: 1, groups: 1,
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
    check_len(WHAT, "y", y.len(), g.output_len());
    run_forward(WHAT, &Plan::conv(g), x, weight, bias, y, cols);
}

/// `y = conv_transpose2d(x, weight) + bias`, PyTorch's `nn.ConvTranspose2d`: the input
/// gradient of the convolution [`g.adjoint()`](ConvTranspose2dGeometry::adjoint) applied to
/// `x`. `x` is `[N, in_channels, in_h, in_w]`, the weight `[in_channels, out_channels/groups,
/// kernel_h, kernel_w]`, the bias `[out_channels]`; `y` (`[N, out_channels, out_h, out_w]`)
/// is overwritten. Per sample and group: one GEMM `Wᵀ · x` into `cols`, then col2im onto
/// `y`. `cols` is scratch of at least
/// [`g.scratch_len()`](ConvTranspose2dGeometry::scratch_len) elements.
///
/// # Panics
/// If a slice's length disagrees with `g`, a stride, kernel size or dilation is 0, the
/// groups do not divide the channels, or an output padding is not smaller than its stride
/// or its dilation (caller bugs).
///
/// ```
/// use kiln_runtime::kernels::conv::{conv_transpose2d_forward, ConvTranspose2dGeometry};
/// // Stride 2 spreads a 2×1 input over a 4×2 output, each value times the 2×2 kernel.
/// let g = ConvTranspose2dGeometry {
///     batch: 1, in_channels: 1, in_h: 2, in_w: 1, out_channels: 1,
///     kernel_h: 2, kernel_w: 2, stride_h: 2, stride_w: 2, pad_h: 0, pad_w: 0,
///     output_pad_h: 0, output_pad_w: 0, dilation_h: 1, dilation_w: 1, groups: 1,
/// };
/// let mut y = [0.0f64; 8];
/// let mut cols = vec![0.0; g.scratch_len()];
/// conv_transpose2d_forward(&[1.0, 10.0], &[1.0, 2.0, 3.0, 4.0], None, &g, &mut y, &mut cols);
/// assert_eq!(y, [1.0, 2.0, 3.0, 4.0, 10.0, 20.0, 30.0, 40.0]);
/// ```
pub fn conv_transpose2d_forward<F: Float>(
    x: &[F],
    weight: &[F],
    bias: Option<&[F]>,
    g: &ConvTranspose2dGeometry,
    y: &mut [F],
    cols: &mut [F],
) {
    const WHAT: &str = "conv_transpose2d_forward";
    g.check(WHAT);
    check_len(WHAT, "x", x.len(), g.input_len());
    check_len(WHAT, "y", y.len(), g.output_len());
    run_forward(WHAT, &Plan::transposed(g), x, weight, bias, y, cols);
}

/// The forward pass of either layer over the whole batch, split over two threads when large.
fn run_forward<F: Float>(
    what: &str,
    plan: &Plan,
    x: &[F],
    weight: &[F],
    bias: Option<&[F]>,
    y: &mut [F],
    cols: &mut [F],
) {
    check_len(what, "weight", weight.len(), plan.conv.weight_len());
    check_cols(what, cols.len(), plan);
    if let Some(bias) = bias {
        check_len(what, "bias", bias.len(), plan.y_channels());
    }
    let batch = plan.conv.batch;
    if y.is_empty() {
        return;
    }
    let sample = plan.sample_scratch_len();
    let (cols_a, rest) = cols.split_at_mut(sample);
    let cols_b = &mut rest[..sample];
    if !worth_splitting(plan) {
        return forward_samples(plan, x, weight, bias, y, cols_a);
    }
    let chunks = parallel::chunk_count(batch);
    let (in_sample, out_sample) = (plan.x_sample(), plan.y_sample());
    let y = SharedMut::new(y);
    let cols = [SharedMut::new(cols_a), SharedMut::new(cols_b)];
    parallel::for_each_chunk(chunks, |chunk, thread| {
        let samples = parallel::chunk_range(batch, chunks, chunk);
        let x_c = &x[samples.start * in_sample..samples.end * in_sample];
        // SAFETY: each chunk is claimed once and covers its own samples of `y`; each thread
        // uses its own `cols`, one chunk at a time.
        let (y_c, cols) = unsafe {
            (
                y.range(samples.start * out_sample..samples.end * out_sample),
                cols[thread].range(0..sample),
            )
        };
        forward_samples(
            &plan.with_batch(samples.len()),
            x_c,
            weight,
            bias,
            y_c,
            cols,
        );
    });
}

/// Whether a convolution is large enough for two threads: below about 2¹⁸ multiply-adds
/// (tens of microseconds) handing half to the helper costs more than it saves.
fn worth_splitting(plan: &Plan) -> bool {
    const MIN_WORK: usize = 1 << 18;
    plan.conv.batch >= 2 && plan.work() >= MIN_WORK && parallel::threads() >= 2
}

/// The forward pass on one thread, sample by sample, with one sample's `cols`.
fn forward_samples<F: Float>(
    plan: &Plan,
    x: &[F],
    weight: &[F],
    bias: Option<&[F]>,
    y: &mut [F],
    cols: &mut [F],
) {
    let (in_sample, out_sample) = (plan.x_sample(), plan.y_sample());
    if out_sample == 0 {
        return;
    }
    let plane = out_sample / plan.y_channels().max(1);
    let cols = &mut cols[..plan.sample_scratch_len()];
    for (s, y_s) in y.chunks_exact_mut(out_sample).enumerate() {
        let x_s = &x[s * in_sample..(s + 1) * in_sample];
        let beta = match bias {
            Some(bias) => {
                // Start each output plane at its bias and let the products add onto it.
                for (plane, &b) in y_s.chunks_exact_mut(plane).zip(bias) {
                    plane.fill(b);
                }
                F::ONE
            }
            None => F::ZERO,
        };
        if plan.transposed {
            // col2im adds: start from zero without a bias.
            if beta == F::ZERO {
                y_s.fill(F::ZERO);
            }
            conv_input_grad_sample(plan, x_s, weight, y_s, F::ONE, cols);
        } else {
            conv_sample(plan, x_s, weight, y_s, beta, cols);
        }
    }
}

/// The VJPs of [`conv2d_forward`] given the output adjoint `dy` (`[N, O, out_h, out_w]`):
///
/// - `dweight` (`[O, C/G, kh, kw]`), if given, is OVERWRITTEN with `Σ_n dy_n · cols_nᵀ` (a
///   layer is used once, so its gradient is never accumulated); a frozen layer's is not
///   given, and not computed;
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
/// If a slice's length disagrees with `g`, or the geometry is invalid (caller bugs).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward<F: Float>(
    x: &[F],
    dy: &[F],
    weight: &[F],
    g: &Conv2dGeometry,
    dweight: Option<&mut [F]>,
    dbias: Option<&mut [F]>,
    dx: Option<(&mut [F], bool)>,
    cols: &mut [F],
) {
    const WHAT: &str = "conv2d_backward";
    g.check(WHAT);
    check_len(WHAT, "x", x.len(), g.input_len());
    check_len(WHAT, "dy", dy.len(), g.output_len());
    run_backward(
        WHAT,
        &Plan::conv(g),
        x,
        dy,
        weight,
        dweight,
        dbias,
        dx,
        cols,
    );
}

/// The VJPs of [`conv_transpose2d_forward`] given the output adjoint `dy` (`[N, out_channels,
/// out_h, out_w]`), with the same contract as [`conv2d_backward`]: `dweight` (`[in_channels,
/// out_channels/G, kh, kw]`) and `dbias` (`[out_channels]`), if given, are OVERWRITTEN, `dx` (`[N,
/// in_channels, in_h, in_w]`, the convolution of `dy`) is written or (`accumulate`) added.
/// `cols` is scratch of at least [`g.scratch_len()`](ConvTranspose2dGeometry::scratch_len)
/// elements. Results do not depend on the thread count.
///
/// # Panics
/// If a slice's length disagrees with `g`, or the geometry is invalid (caller bugs).
#[allow(clippy::too_many_arguments)]
pub fn conv_transpose2d_backward<F: Float>(
    x: &[F],
    dy: &[F],
    weight: &[F],
    g: &ConvTranspose2dGeometry,
    dweight: Option<&mut [F]>,
    dbias: Option<&mut [F]>,
    dx: Option<(&mut [F], bool)>,
    cols: &mut [F],
) {
    const WHAT: &str = "conv_transpose2d_backward";
    g.check(WHAT);
    check_len(WHAT, "x", x.len(), g.input_len());
    check_len(WHAT, "dy", dy.len(), g.output_len());
    run_backward(
        WHAT,
        &Plan::transposed(g),
        x,
        dy,
        weight,
        dweight,
        dbias,
        dx,
        cols,
    );
}

/// The backward pass of either layer over the whole batch, in fixed chunks.
#[allow(clippy::too_many_arguments)]
fn run_backward<F: Float>(
    what: &str,
    plan: &Plan,
    x: &[F],
    dy: &[F],
    weight: &[F],
    dweight: Option<&mut [F]>,
    dbias: Option<&mut [F]>,
    mut dx: Option<(&mut [F], bool)>,
    cols: &mut [F],
) {
    check_len(what, "weight", weight.len(), plan.conv.weight_len());
    if let Some(dw) = dweight.as_deref() {
        check_len(what, "dweight", dw.len(), plan.conv.weight_len());
    }
    check_cols(what, cols.len(), plan);
    if let Some(db) = dbias.as_deref() {
        check_len(what, "dbias", db.len(), plan.y_channels());
    }
    // Written, not added, when nothing is to be accumulated and each sample's input gradient
    // covers its whole `dx`. Otherwise the per-sample routines add (overlapping windows share
    // inputs), and positions no window reads (floored edges) get no contribution: start from
    // zero.
    let mut overwrite_dx = false;
    if let Some((dx, accumulate)) = dx.as_mut() {
        check_len(what, "dx", dx.len(), x.len());
        overwrite_dx = !*accumulate && plan.input_grad_writes_whole();
        if !*accumulate && !overwrite_dx {
            dx.fill(F::ZERO);
        }
    }
    let dx = dx.map(|(dx, _)| dx);
    let batch = plan.conv.batch;
    let chunks = plan.gradient_chunks();
    let sample = plan.sample_scratch_len();
    if chunks < 2 || dy.is_empty() {
        let cols = &mut cols[..sample];
        return backward_samples(plan, x, dy, weight, dweight, dbias, dx, overwrite_dx, cols);
    }
    let (cols_a, rest) = cols.split_at_mut(sample);
    let (cols_b, rest) = rest.split_at_mut(sample);
    let (w, o) = (plan.conv.weight_len(), plan.y_channels());
    let partials = &mut rest[..(chunks - 1) * (w + o)];
    let (in_sample, out_sample) = (plan.x_sample(), plan.y_sample());
    let (with_weight, with_bias) = (dweight.is_some(), dbias.is_some());
    let (dweight, dbias) = (dweight.map(SharedMut::new), dbias.map(SharedMut::new));
    let (partials, dx) = (SharedMut::new(partials), dx.map(SharedMut::new));
    let cols = [SharedMut::new(cols_a), SharedMut::new(cols_b)];
    let run_chunk = |chunk: usize, thread: usize| {
        let samples = parallel::chunk_range(batch, chunks, chunk);
        let inputs = samples.start * in_sample..samples.end * in_sample;
        let outputs = samples.start * out_sample..samples.end * out_sample;
        // SAFETY: each chunk is claimed once: chunk 0 alone writes `dweight` and `dbias`,
        // chunk c > 0 its own partial gradient and every chunk its own samples of `dx`; each
        // thread uses its own `cols`, one chunk at a time.
        let (dw, db, dx_c, cols) = unsafe {
            let (dw, db) = if chunk == 0 {
                (
                    dweight.as_ref().map(|d| d.range(0..w)),
                    dbias.as_ref().map(|d| d.range(0..o)),
                )
            } else {
                let (dw, db) = partials
                    .range((chunk - 1) * (w + o)..chunk * (w + o))
                    .split_at_mut(w);
                (with_weight.then_some(dw), with_bias.then_some(db))
            };
            let dx_c = dx.as_ref().map(|d| d.range(inputs.clone()));
            (dw, db, dx_c, cols[thread].range(0..sample))
        };
        let p_c = plan.with_batch(samples.len());
        let (x_c, dy_c) = (&x[inputs], &dy[outputs]);
        backward_samples(&p_c, x_c, dy_c, weight, dw, db, dx_c, overwrite_dx, cols);
    };
    if worth_splitting(plan) {
        parallel::for_each_chunk(chunks, run_chunk);
    } else {
        (0..chunks).for_each(|chunk| run_chunk(chunk, 0));
    }
    // The chunks' sums, added in chunk order whichever thread computed them.
    // SAFETY: every chunk is done; these are the only live references.
    let (mut dweight, mut dbias, partials) = unsafe {
        (
            dweight.map(|d| d.range(0..w)),
            dbias.map(|d| d.range(0..o)),
            partials.range(0..(chunks - 1) * (w + o)),
        )
    };
    for partial in partials.chunks_exact(w + o) {
        if let Some(dw) = dweight.as_deref_mut() {
            for (total, &part) in dw.iter_mut().zip(&partial[..w]) {
                *total += part;
            }
        }
        if let Some(db) = dbias.as_deref_mut() {
            for (total, &part) in db.iter_mut().zip(&partial[w..]) {
                *total += part;
            }
        }
    }
}

/// The backward pass on one thread, sample by sample: `dweight` and `dbias`, when given, are overwritten
/// with this batch's sums, `dx` (already cleared or holding what to accumulate onto) gets
/// each sample's input gradient added, or written over it with `overwrite_dx` (only where
/// [`Plan::input_grad_writes_whole`]).
#[allow(clippy::too_many_arguments)]
fn backward_samples<F: Float>(
    plan: &Plan,
    x: &[F],
    dy: &[F],
    weight: &[F],
    mut dweight: Option<&mut [F]>,
    mut dbias: Option<&mut [F]>,
    mut dx: Option<&mut [F]>,
    overwrite_dx: bool,
    cols: &mut [F],
) {
    // The sum over the batch starts from the first sample's product (beta = 0), so an empty
    // batch must clear the gradient itself.
    if let Some(dw) = dweight.as_deref_mut() {
        dw.fill(F::ZERO);
    }
    if let Some(db) = dbias.as_deref_mut() {
        db.fill(F::ZERO);
    }
    let (in_sample, out_sample) = (plan.x_sample(), plan.y_sample());
    if out_sample == 0 || in_sample == 0 {
        return;
    }
    let plane = out_sample / plan.y_channels().max(1);
    let cols = &mut cols[..plan.sample_scratch_len()];
    let dx_beta = if overwrite_dx { F::ZERO } else { F::ONE };
    for (s, dy_s) in dy.chunks_exact(out_sample).enumerate() {
        let x_s = &x[s * in_sample..(s + 1) * in_sample];
        let beta = if s == 0 { F::ZERO } else { F::ONE };
        // The convolution's input and output: for a transposed layer, dy and x.
        let (conv_in, conv_out) = if plan.transposed {
            (dy_s, x_s)
        } else {
            (x_s, dy_s)
        };
        if let Some(dw) = dweight.as_deref_mut() {
            conv_weight_grad_sample(plan, conv_in, conv_out, dw, beta, cols);
        }
        if let Some(db) = dbias.as_deref_mut() {
            for (acc, plane) in db.iter_mut().zip(dy_s.chunks_exact(plane)) {
                *acc += sum_lanes(plane);
            }
        }
        if let Some(dx) = dx.as_deref_mut() {
            let dx_s = &mut dx[s * in_sample..(s + 1) * in_sample];
            if plan.transposed {
                // The weight gradient's columns are `dy`'s unfolded, when it was taken.
                let shared = plan.shares_columns() && dweight.is_some();
                conv_sample_with(plan, dy_s, weight, dx_s, dx_beta, cols, shared);
            } else {
                conv_input_grad_sample(plan, dy_s, weight, dx_s, dx_beta, cols);
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
            dilation_h: 1,
            dilation_w: 1,
            groups: 1,
        }
    }

    /// `g` with dilation `(dh, dw)` and `groups`.
    fn dilated(
        g: Conv2dGeometry,
        (dilation_h, dilation_w): (usize, usize),
        groups: usize,
    ) -> Conv2dGeometry {
        Conv2dGeometry {
            dilation_h,
            dilation_w,
            groups,
            ..g
        }
    }

    /// The definition, with signed indices and an explicit padding test.
    fn naive_forward(x: &[f64], w: &[f64], b: Option<&[f64]>, g: &Conv2dGeometry) -> Vec<f64> {
        let (oh, ow) = (g.out_h(), g.out_w());
        let (gin, go) = (g.in_channels / g.groups, g.out_channels / g.groups);
        let mut y = vec![0.0; g.output_len()];
        for n in 0..g.batch {
            for o in 0..g.out_channels {
                for i in 0..oh {
                    for j in 0..ow {
                        let mut acc = b.map_or(0.0, |b| b[o]);
                        for c in 0..gin {
                            let ci = (o / go) * gin + c;
                            for u in 0..g.kernel_h {
                                for v in 0..g.kernel_w {
                                    let ih = (i * g.stride_h + u * g.dilation_h) as isize
                                        - g.pad_h as isize;
                                    let iw = (j * g.stride_w + v * g.dilation_w) as isize
                                        - g.pad_w as isize;
                                    if ih < 0
                                        || iw < 0
                                        || ih >= g.in_h as isize
                                        || iw >= g.in_w as isize
                                    {
                                        continue;
                                    }
                                    let (ih, iw) = (ih as usize, iw as usize);
                                    acc += w[((o * gin + c) * g.kernel_h + u) * g.kernel_w + v]
                                        * x[((n * g.in_channels + ci) * g.in_h + ih) * g.in_w + iw];
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
            // Stride 1, "same" padding, 16+ input channels: the input gradient as a
            // convolution of dy with the flipped weights (odd and even kernels).
            geom(1, 16, (5, 6), 3, (3, 3), (1, 1), (1, 1)),
            geom(2, 17, (4, 5), 2, (4, 3), (1, 1), (1, 1)),
            // Dilation, groups, depthwise (with a channel multiplier), strided depthwise,
            // grouped 1x1.
            dilated(geom(2, 2, (7, 6), 3, (3, 2), (1, 1), (1, 0)), (2, 3), 1),
            dilated(geom(2, 4, (6, 5), 6, (3, 3), (2, 1), (1, 1)), (1, 2), 2),
            dilated(geom(2, 3, (6, 7), 3, (3, 3), (1, 1), (1, 1)), (1, 1), 3),
            dilated(geom(2, 2, (7, 6), 4, (3, 2), (2, 2), (2, 1)), (2, 1), 2),
            dilated(geom(1, 4, (5, 9), 4, (3, 3), (1, 1), (2, 2)), (2, 2), 4),
            dilated(geom(2, 4, (3, 4), 6, (1, 1), (1, 1), (0, 0)), (1, 1), 2),
            // 2 × 2 windows at stride 2 (a kernel row's two columns split in one pass), with
            // an odd width left over and with vertical padding.
            geom(2, 3, (5, 7), 2, (2, 2), (2, 2), (0, 0)),
            geom(2, 2, (6, 8), 3, (2, 2), (2, 2), (1, 0)),
        ]
    }

    #[test]
    fn flipped_input_gradient_is_taken_where_it_pays() {
        let takes = |g: Conv2dGeometry| Plan::conv(&g).flipped_input_grad().is_some();
        // The two cases of `cases()` meant for it.
        assert!(takes(geom(1, 16, (5, 6), 3, (3, 3), (1, 1), (1, 1))));
        assert!(takes(geom(2, 17, (4, 5), 2, (4, 3), (1, 1), (1, 1))));
        // Too few input channels, no padding, a stride, groups, a dilation.
        assert!(!takes(geom(2, 3, (5, 7), 2, (3, 3), (1, 1), (1, 1))));
        assert!(!takes(geom(2, 16, (7, 9), 2, (3, 3), (1, 1), (0, 0))));
        assert!(!takes(geom(2, 16, (7, 9), 2, (3, 3), (2, 1), (1, 1))));
        assert!(!takes(dilated(
            geom(2, 16, (7, 9), 16, (3, 3), (1, 1), (1, 1)),
            (1, 1),
            2
        )));
        assert!(!takes(dilated(
            geom(2, 16, (7, 9), 16, (3, 3), (1, 1), (1, 1)),
            (2, 2),
            1
        )));
        // The scratch holds the flipped weights and the implicit GEMM's padded dy
        // (32 × 7 × 8, and the slack) and output over the padded width (16 × 5 × 8, and
        // room to start it on a cache line) when they are larger than the columns of x
        // (16 · 9 × 30).
        let g = geom(1, 16, (5, 6), 32, (3, 3), (1, 1), (1, 1));
        let plan = Plan::conv(&g);
        let flipped = 16 * 32 * 9 + 32 * 7 * 8 + gemm::ROWS_SLACK + 16 * 5 * 8 + GRID_ALIGN;
        assert!(flipped > 16 * 9 * 30);
        assert_eq!(plan.sample_scratch_len(), flipped);
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
            conv2d_backward(
                &x0,
                &r,
                &w0,
                g,
                Some(&mut dw),
                Some(&mut db),
                None,
                &mut cols,
            );
            assert_close(&dw, &num_w, rtol, atol, &format!("dW {g:?}"));
            assert_close(&db, &num_b, rtol, atol, &format!("db {g:?}"));

            check_both_modes(&num_x, rtol, atol, &format!("dx {g:?}"), |dx, acc| {
                let mut dw = vec![f64::NAN; g.weight_len()];
                conv2d_backward(
                    &x0,
                    &r,
                    &w0,
                    g,
                    Some(&mut dw),
                    None,
                    Some((dx, acc)),
                    &mut cols,
                );
                assert_close(&dw, &num_w, rtol, atol, &format!("dW with dx {g:?}"));
            });
        }
    }

    /// A batch large enough to be split across the helper thread: the same results as one
    /// pass over the whole batch (the forward bit for bit, the summed gradients to rounding),
    /// and the same bits on every run.
    #[test]
    fn split_batches_match_one_pass() {
        split_case(geom(9, 3, (16, 16), 8, (3, 3), (1, 1), (1, 1)));
        // Depthwise, dilated.
        split_case(dilated(
            geom(9, 8, (24, 24), 8, (3, 3), (1, 1), (2, 2)),
            (2, 2),
            8,
        ));
    }

    fn split_case(g: Conv2dGeometry) {
        let plan = Plan::conv(&g);
        assert!(
            plan.work() >= 1 << 18,
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
        forward_samples(
            &plan,
            &x,
            &w,
            Some(&b),
            &mut y_one,
            &mut cols[..plan.sample_scratch_len()],
        );
        assert_eq!(y, y_one);

        let lens = (g.weight_len(), g.out_channels, g.input_len());
        check_backward_repeats_one_pass(
            &plan,
            (&x, &dy, &w),
            lens,
            &mut cols,
            |dw, db, dx, cols| {
                conv2d_backward(&x, &dy, &w, &g, Some(dw), Some(db), Some((dx, false)), cols)
            },
        );
    }

    /// A whole-batch backward gives the same bits twice with its scratch reused, and equals
    /// one pass of `backward_samples` over the batch. `backward(dw, db, dx, cols)` runs it;
    /// `lens` are the lengths of dW, db and dx.
    fn check_backward_repeats_one_pass(
        plan: &Plan,
        (x, dy, w): (&[f64], &[f64], &[f64]),
        (dw_len, db_len, dx_len): (usize, usize, usize),
        cols: &mut [f64],
        backward: impl Fn(&mut [f64], &mut [f64], &mut [f64], &mut [f64]),
    ) {
        let run = |cols: &mut [f64]| {
            let (mut dw, mut db, mut dx) = (
                vec![f64::NAN; dw_len],
                vec![f64::NAN; db_len],
                vec![f64::NAN; dx_len],
            );
            backward(&mut dw, &mut db, &mut dx, cols);
            (dw, db, dx)
        };
        let first = run(cols);
        assert_eq!(first, run(cols));
        let (mut dw, mut db, mut dx) = (
            vec![f64::NAN; dw_len],
            vec![f64::NAN; db_len],
            vec![0.0; dx_len],
        );
        backward_samples(
            plan,
            x,
            dy,
            w,
            Some(&mut dw),
            Some(&mut db),
            Some(&mut dx),
            false,
            cols,
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
            Some(&mut dw),
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

    #[allow(clippy::too_many_arguments)]
    fn tgeom(
        batch: usize,
        in_channels: usize,
        (in_h, in_w): (usize, usize),
        out_channels: usize,
        (kernel_h, kernel_w): (usize, usize),
        (stride_h, stride_w): (usize, usize),
        (pad_h, pad_w): (usize, usize),
        (output_pad_h, output_pad_w): (usize, usize),
        (dilation_h, dilation_w): (usize, usize),
        groups: usize,
    ) -> ConvTranspose2dGeometry {
        ConvTranspose2dGeometry {
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
            output_pad_h,
            output_pad_w,
            dilation_h,
            dilation_w,
            groups,
        }
    }

    /// The transposed convolution by its definition: every input value scatters the kernel,
    /// scaled, onto the output at `(i·s + u·d − p, j·s + v·d − p)`.
    fn naive_transposed(
        x: &[f64],
        w: &[f64],
        b: Option<&[f64]>,
        g: &ConvTranspose2dGeometry,
    ) -> Vec<f64> {
        let (oh, ow) = (g.out_h(), g.out_w());
        let (gin, go) = (g.in_channels / g.groups, g.out_channels / g.groups);
        let mut y = vec![0.0; g.output_len()];
        for n in 0..g.batch {
            for co in 0..g.out_channels {
                let plane = &mut y[(n * g.out_channels + co) * oh * ow..][..oh * ow];
                plane.fill(b.map_or(0.0, |b| b[co]));
            }
            for ci in 0..g.in_channels {
                let k = ci / gin;
                for c in 0..go {
                    let co = k * go + c;
                    for i in 0..g.in_h {
                        for j in 0..g.in_w {
                            let xv = x[((n * g.in_channels + ci) * g.in_h + i) * g.in_w + j];
                            for u in 0..g.kernel_h {
                                for v in 0..g.kernel_w {
                                    let ih = (i * g.stride_h + u * g.dilation_h) as isize
                                        - g.pad_h as isize;
                                    let iw = (j * g.stride_w + v * g.dilation_w) as isize
                                        - g.pad_w as isize;
                                    if ih < 0 || iw < 0 || ih >= oh as isize || iw >= ow as isize {
                                        continue;
                                    }
                                    let wv = w[((ci * go + c) * g.kernel_h + u) * g.kernel_w + v];
                                    y[((n * g.out_channels + co) * oh + ih as usize) * ow
                                        + iw as usize] += xv * wv;
                                }
                            }
                        }
                    }
                }
            }
        }
        y
    }

    /// Stride 2 with output padding, padding cropping, rectangular kernels, groups 2,
    /// depthwise, dilation 2 with an output padding as large as the stride (allowed since it
    /// is below the dilation), 1x1.
    fn transposed_cases() -> Vec<ConvTranspose2dGeometry> {
        vec![
            tgeom(2, 3, (3, 4), 2, (3, 3), (2, 2), (1, 1), (1, 1), (1, 1), 1),
            tgeom(2, 2, (4, 3), 3, (3, 2), (2, 1), (1, 0), (1, 0), (1, 1), 1),
            tgeom(2, 4, (3, 3), 6, (2, 3), (1, 2), (0, 1), (0, 1), (1, 1), 2),
            tgeom(2, 3, (4, 5), 3, (3, 3), (2, 2), (1, 1), (0, 1), (1, 1), 3),
            tgeom(1, 2, (3, 4), 4, (3, 2), (1, 2), (1, 1), (1, 1), (2, 2), 2),
            tgeom(2, 2, (3, 3), 2, (2, 2), (3, 3), (0, 0), (2, 0), (1, 1), 1),
            tgeom(2, 4, (3, 2), 2, (1, 1), (1, 1), (0, 0), (0, 0), (1, 1), 2),
            // A U-Net's 2 × 2 stride-2 upsampling, with output padding, groups and a crop.
            tgeom(2, 3, (3, 4), 2, (2, 2), (2, 2), (0, 0), (0, 0), (1, 1), 1),
            tgeom(2, 4, (3, 3), 2, (2, 2), (2, 2), (0, 0), (1, 1), (1, 1), 2),
            tgeom(1, 2, (4, 3), 3, (2, 2), (2, 2), (1, 0), (0, 0), (1, 1), 1),
        ]
    }

    #[test]
    fn transposed_geometry_sizes() {
        let g = tgeom(2, 3, (3, 4), 2, (3, 3), (2, 2), (1, 1), (1, 1), (1, 1), 1);
        // (3 − 1)·2 − 2 + 2 + 1 + 1 = 6, (4 − 1)·2 − 2 + 2 + 1 + 1 = 8
        assert_eq!((g.out_h(), g.out_w()), (6, 8));
        let a = g.adjoint();
        assert_eq!(
            (a.in_h, a.in_w, a.in_channels, a.out_channels),
            (6, 8, 2, 3)
        );
        // The adjoint convolution maps the output back onto the input extent.
        assert_eq!((a.out_h(), a.out_w()), (3, 4));
        assert_eq!(g.weight_len(), 3 * 2 * 9);
        // Output padding 1 at stride 1 and dilation 2: the adjoint's own grid would be one
        // row longer than the input, the kernels use the input's extent.
        let g = tgeom(1, 2, (3, 4), 4, (3, 2), (1, 2), (1, 1), (1, 1), (2, 2), 2);
        assert_eq!((g.out_h(), g.adjoint().out_h()), (6, 4));
        // A padding that crops everything gives an empty output, not an underflow.
        let g = tgeom(1, 1, (1, 1), 1, (1, 1), (1, 1), (3, 3), (0, 0), (1, 1), 1);
        assert_eq!((g.out_h(), g.output_len()), (0, 0));
    }

    #[test]
    fn transposed_forward_matches_naive() {
        for (k, g) in transposed_cases().iter().enumerate() {
            let seed = k as f64;
            let x = values(g.input_len(), 1.0 + seed);
            let w = values(g.weight_len(), 2.0 + seed);
            let b = values(g.out_channels, 3.0 + seed);
            let mut y = vec![f64::NAN; g.output_len()];
            let mut cols = vec![f64::NAN; g.scratch_len()];
            conv_transpose2d_forward(&x, &w, Some(&b), g, &mut y, &mut cols);
            let want = naive_transposed(&x, &w, Some(&b), g);
            assert_close(&y, &want, 1e-13, 1e-13, &format!("y {g:?}"));
            conv_transpose2d_forward(&x, &w, None, g, &mut y, &mut cols);
            let want = naive_transposed(&x, &w, None, g);
            assert_close(&y, &want, 1e-13, 1e-13, &format!("y no bias {g:?}"));
        }
    }

    #[test]
    fn transposed_backward_matches_finite_differences() {
        for (k, g) in transposed_cases().iter().enumerate() {
            let seed = 10.0 * k as f64;
            let mut x = values(g.input_len(), 1.0 + seed);
            let mut w = values(g.weight_len(), 2.0 + seed);
            let mut b = values(g.out_channels, 3.0 + seed);
            let r = values(g.output_len(), 4.0 + seed);
            let (x0, w0, b0) = (x.clone(), w.clone(), b.clone());
            let mut cols = vec![f64::NAN; g.scratch_len()];
            let num_w = numeric_gradient(
                |w| weighted(&naive_transposed(&x0, w, Some(&b0), g), &r),
                &mut w,
                1e-6,
            );
            let num_b = numeric_gradient(
                |b| weighted(&naive_transposed(&x0, &w0, Some(b), g), &r),
                &mut b,
                1e-6,
            );
            let num_x = numeric_gradient(
                |x| weighted(&naive_transposed(x, &w0, Some(&b0), g), &r),
                &mut x,
                1e-6,
            );
            // As for the convolution: a linear map, so only rounding noise.
            let (rtol, atol) = (1e-6, 2e-6);
            let mut dw = vec![f64::NAN; g.weight_len()];
            let mut db = vec![f64::NAN; g.out_channels];
            conv_transpose2d_backward(
                &x0,
                &r,
                &w0,
                g,
                Some(&mut dw),
                Some(&mut db),
                None,
                &mut cols,
            );
            assert_close(&dw, &num_w, rtol, atol, &format!("dW {g:?}"));
            assert_close(&db, &num_b, rtol, atol, &format!("db {g:?}"));
            check_both_modes(&num_x, rtol, atol, &format!("dx {g:?}"), |dx, acc| {
                let mut dw = vec![f64::NAN; g.weight_len()];
                conv_transpose2d_backward(
                    &x0,
                    &r,
                    &w0,
                    g,
                    Some(&mut dw),
                    None,
                    Some((dx, acc)),
                    &mut cols,
                );
                assert_close(&dw, &num_w, rtol, atol, &format!("dW with dx {g:?}"));
            });
        }
    }

    /// A transposed convolution large enough to split: the same bits on every run, and the
    /// same values as one pass.
    #[test]
    fn transposed_split_batches_match_one_pass() {
        let g = tgeom(9, 8, (12, 12), 6, (3, 3), (2, 2), (1, 1), (1, 1), (1, 1), 2);
        let plan = Plan::transposed(&g);
        assert!(
            plan.work() >= 1 << 18,
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
        conv_transpose2d_forward(&x, &w, Some(&b), &g, &mut y, &mut cols);
        assert_close(
            &y,
            &naive_transposed(&x, &w, Some(&b), &g),
            1e-12,
            1e-12,
            "y",
        );
        let lens = (g.weight_len(), g.out_channels, g.input_len());
        check_backward_repeats_one_pass(
            &plan,
            (&x, &dy, &w),
            lens,
            &mut cols,
            |dw, db, dx, cols| {
                conv_transpose2d_backward(
                    &x,
                    &dy,
                    &w,
                    &g,
                    Some(dw),
                    Some(db),
                    Some((dx, false)),
                    cols,
                )
            },
        );
    }

    #[test]
    #[should_panic(
        expected = "output padding (2, 0) must be smaller than the stride or the dilation"
    )]
    fn transposed_output_padding_too_large_panics() {
        let g = tgeom(1, 1, (2, 2), 1, (2, 2), (2, 2), (0, 0), (2, 0), (1, 1), 1);
        let mut y = vec![0.0f64; g.output_len()];
        let mut cols = vec![0.0; g.scratch_len()];
        conv_transpose2d_forward(&[0.0; 4], &[0.0; 4], None, &g, &mut y, &mut cols);
    }

    /// The convolutions of W4 (LeNet-5, batch 64) and W8 (the U-Net of `examples/segment.rs`,
    /// batch 16), in f32: each layer's forward, weight gradient (with the bias's) and whole
    /// backward (with the input gradient, but for a first layer) timed alone, with their
    /// rates. `cargo test --release -p kiln-runtime --lib conv::tests::timing_conv -- --ignored
    /// --nocapture`, with `KILN_THREADS=1` or `2` and `KILN_GEMM_ISA`.
    #[test]
    #[ignore]
    fn timing_conv_layers() {
        use std::time::Instant;
        let median = |f: &mut dyn FnMut()| -> f64 {
            f();
            let mut t: Vec<f64> = (0..15)
                .map(|_| {
                    let start = Instant::now();
                    f();
                    start.elapsed().as_secs_f64()
                })
                .collect();
            t.sort_by(f64::total_cmp);
            t[t.len() / 2]
        };
        // (in channels, out channels, side, kernel, padding): W4's two, then W8's.
        let convs = [
            (1, 6, 28, 5, 0),
            (6, 16, 12, 5, 0),
            (1, 16, 64, 3, 1),
            (16, 16, 64, 3, 1),
            (16, 32, 32, 3, 1),
            (32, 32, 32, 3, 1),
            (32, 64, 16, 3, 1),
            (64, 64, 16, 3, 1),
            (64, 32, 32, 3, 1),
            (32, 16, 64, 3, 1),
            (16, 11, 64, 1, 0),
        ];
        let (mut total_f, mut total_b) = (0.0, 0.0);
        for (c, o, side, k, pad) in convs {
            let batch = if side == 28 || side == 12 { 64 } else { 16 };
            let g = geom(batch, c, (side, side), o, (k, k), (1, 1), (pad, pad));
            let x: Vec<f32> = values(g.input_len(), 1.0)
                .iter()
                .map(|&v| v as f32)
                .collect();
            let w: Vec<f32> = values(g.weight_len(), 2.0)
                .iter()
                .map(|&v| v as f32)
                .collect();
            let dy: Vec<f32> = values(g.output_len(), 3.0)
                .iter()
                .map(|&v| v as f32)
                .collect();
            let b = vec![0.1f32; o];
            let mut y = vec![0.0f32; g.output_len()];
            let mut cols = vec![0.0f32; g.scratch_len()];
            let (mut dw, mut db, mut dx) = (
                vec![0.0f32; w.len()],
                vec![0.0f32; o],
                vec![0.0f32; x.len()],
            );
            let flops = 2.0 * (batch * o * c * k * k * g.out_h() * g.out_w()) as f64;
            let tf = median(&mut || conv2d_forward(&x, &w, Some(&b), &g, &mut y, &mut cols));
            let first = c == 1;
            let tb = median(&mut || {
                let dx = (!first).then_some((&mut dx[..], false));
                conv2d_backward(&x, &dy, &w, &g, Some(&mut dw), Some(&mut db), dx, &mut cols)
            });
            let tw = median(&mut || {
                conv2d_backward(
                    &x,
                    &dy,
                    &w,
                    &g,
                    Some(&mut dw),
                    Some(&mut db),
                    None,
                    &mut cols,
                )
            });
            let back_flops = if first { flops } else { 2.0 * flops };
            total_f += tf;
            total_b += tb;
            println!(
                "{c:>3} -> {o:>3} @ {side:>2}x{side:<2} k{k}: forward {:7.3} ms {:6.1} GFLOP/s, \
                 weight gradient {:7.3} ms {:6.1} GFLOP/s, backward {:7.3} ms {:6.1} GFLOP/s",
                tf * 1e3,
                flops / tf * 1e-9,
                tw * 1e3,
                flops / tw * 1e-9,
                tb * 1e3,
                back_flops / tb * 1e-9
            );
        }
        println!(
            "total: forward {:.2} ms, backward {:.2} ms",
            total_f * 1e3,
            total_b * 1e3
        );
    }

    /// Runs `backward(x, w, dy, dweight, dbias, dx)` with `dweight` and without, and checks
    /// that the bias and input gradients keep their bits.
    fn same_without_weight(
        (x_len, w_len, y_len, o): (usize, usize, usize, usize),
        what: &str,
        mut backward: impl FnMut(&[f64], &[f64], &[f64], Option<&mut [f64]>, &mut [f64], &mut [f64]),
    ) {
        let (x, w, dy) = (values(x_len, 1.0), values(w_len, 2.0), values(y_len, 3.0));
        let mut run = |dw: Option<&mut [f64]>| {
            let (mut db, mut dx) = (vec![0.0; o], vec![0.0; x_len]);
            backward(&x, &w, &dy, dw, &mut db, &mut dx);
            (db, dx)
        };
        let mut dw = vec![0.0; w_len];
        let (full, frozen) = (run(Some(&mut dw)), run(None));
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&full.0), bits(&frozen.0), "{what}: dbias");
        assert_eq!(bits(&full.1), bits(&frozen.1), "{what}: dx");
    }

    /// A frozen layer's backward (no `dweight`) gives the same bias and input gradients, to
    /// the bit, as the full one: stride-1, strided and transposed layers (the 2 × 2 stride-2
    /// transposed one reads the weight gradient's columns for its input gradient when both
    /// are taken), over batches large enough to be split between the threads.
    #[test]
    fn frozen_weights_leave_the_other_gradients_unchanged() {
        for g in [
            geom(8, 3, (9, 9), 4, (3, 3), (1, 1), (1, 1)),
            geom(5, 4, (8, 7), 6, (3, 2), (2, 2), (0, 1)),
            geom(16, 16, (16, 16), 16, (3, 3), (1, 1), (1, 1)),
        ] {
            let mut cols = vec![0.0; g.scratch_len()];
            let sizes = (
                g.input_len(),
                g.weight_len(),
                g.output_len(),
                g.out_channels,
            );
            same_without_weight(sizes, &format!("{g:?}"), |x, w, dy, dw, db, dx| {
                conv2d_backward(x, dy, w, &g, dw, Some(db), Some((dx, false)), &mut cols)
            });
        }
        for g in [
            tgeom(8, 4, (5, 5), 3, (2, 2), (2, 2), (0, 0), (0, 0), (1, 1), 1),
            tgeom(6, 4, (4, 3), 6, (3, 3), (2, 1), (1, 0), (1, 0), (1, 1), 2),
        ] {
            let mut cols = vec![0.0; g.scratch_len()];
            let sizes = (
                g.input_len(),
                g.weight_len(),
                g.output_len(),
                g.out_channels,
            );
            same_without_weight(sizes, &format!("{g:?}"), |x, w, dy, dw, db, dx| {
                conv_transpose2d_backward(x, dy, w, &g, dw, Some(db), Some((dx, false)), &mut cols)
            });
        }
    }
}
