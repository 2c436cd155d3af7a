//! `conv2d(x, out_channels, kernel = k, stride = s, padding = p, dilation = d, groups = g,
//! bias = true)` and `conv_transpose2d(x, out_channels, kernel = k, stride = s, padding = p,
//! output_padding = q, groups = g, dilation = d, bias = true)` on NCHW input: PyTorch's
//! layouts (`weight [out, in/g, kh, kw]`, transposed `[in, out/g, kh, kw]`), default init and
//! output sizes. Kernel, stride, padding, dilation and output padding take an integer or a
//! `(height, width)` pair; a convolution's padding may also be `same` or `valid`, as in
//! PyTorch.
//!
//! `conv1d(x, out_channels, kernel = k, stride = s, padding = p, dilation = d, groups = g,
//! bias = true)` takes `[batch, channels, length]` and returns `[batch, out_channels,
//! length']` (`nn.Conv1d`: weight `[out, in/g, k]`, one integer per option, `padding` also
//! `same` or `valid`). It runs on the 2-d kernels as a convolution of height 1.
//!
//! Channels must be fixed; heights, widths and lengths may be symbolic. A symbolic extent's
//! output is a formula of its symbol (`2 * H - 2`), computed by [`sliding_extent`], which
//! refuses a stride that does not divide the symbol's multiple; the kernels take every extent
//! at run time, and the scratch of a symbolic extent is sized per call.

use super::{
    require_float, BackwardCx, Built, CallArgs, ForwardCx, Kernel, LayerSpec, OpError, OpSpec,
    ParamSpec, Reads, ScratchLen, ScratchSpec,
};
use crate::ir::{Dim, Shape, ValueInfo, ValueKind};
use proc_macro2::TokenStream;
use quote::quote;

/// The registry entry.
pub struct Conv2dSpec;
/// `conv2d`.
pub static CONV2D: Conv2dSpec = Conv2dSpec;

impl OpSpec for Conv2dSpec {
    fn name(&self) -> &'static str {
        "conv2d"
    }
    fn usage(&self) -> &'static str {
        "conv2d(x, out_channels, kernel = 3, stride = 1, padding = 0, dilation = 1, groups = 1)"
    }
    fn build(&self, args: &mut CallArgs) -> syn::Result<Built> {
        args.positional(2, 2)?;
        args.tensor(0);
        let out = args.int(1, "the number of output channels")?;
        let kernel = args.opt_pair("kernel", 1)?;
        let stride = args.opt_pair("stride", 1)?.unwrap_or((1, 1));
        let (same, padding) =
            match padding_word(args, "an integer, a pair `(height, width)`", false)? {
                Some(PaddingWord::Same(span)) => (Some(span), (0, 0)),
                Some(_) => (None, (0, 0)),
                None => (None, args.opt_pair("padding", 0)?.unwrap_or((0, 0))),
            };
        let dilation = args.opt_pair("dilation", 1)?.unwrap_or((1, 1));
        let groups = args.opt_int("groups")?.unwrap_or(1);
        let bias = args.opt_bool("bias", true)?;
        args.finish()?;
        let Some(kernel) = kernel else {
            return Err(syn::Error::new(
                args.span(),
                "`conv2d` needs its kernel size: add `kernel = 3` (or `kernel = (3, 2)` for height 3, width 2)",
            ));
        };
        let (padding, extra) = match same {
            Some(span) => same_padding(kernel, stride, dilation, span)?,
            None => (padding, (0, 0)),
        };
        Ok(Built::Kernel(Box::new(Conv2d {
            out,
            kernel,
            stride,
            padding,
            lead: (0, 0),
            extra,
            dilation,
            groups,
            bias,
        })))
    }
}

/// A padding given as a word.
enum PaddingWord {
    /// `same` (PyTorch's and Keras'): as much as keeps the size, at the word's span.
    Same(proc_macro2::Span),
    /// `valid`: none.
    Valid,
    /// `causal` (Keras' `Conv1D`): the whole span before the input, none after, so that an
    /// output position sees only its own and earlier positions.
    Causal,
}

/// `padding = same`, `valid` or (for `conv1d`, with `causal_too`) `causal`; `None` when the
/// padding is not a word (numbers, read by the caller). `numbers` says what else `padding`
/// takes, for the error about another word.
fn padding_word(
    args: &mut CallArgs,
    numbers: &str,
    causal_too: bool,
) -> syn::Result<Option<PaddingWord>> {
    let words = if causal_too {
        "`same`, `valid` or `causal`"
    } else {
        "`same` or `valid`"
    };
    match args.option_expr("padding") {
        Some(crate::ast::Expr::Var(word)) if word == "same" => {
            Ok(Some(PaddingWord::Same(word.span())))
        }
        Some(crate::ast::Expr::Var(word)) if word == "valid" => Ok(Some(PaddingWord::Valid)),
        Some(crate::ast::Expr::Var(word)) if word == "causal" && causal_too => {
            Ok(Some(PaddingWord::Causal))
        }
        Some(crate::ast::Expr::Var(word)) if word == "causal" => Err(syn::Error::new(
            word.span(),
            "`padding = causal` is for `conv1d` (Keras' `Conv1D`), along a sequence: pad a 2-d convolution with numbers, `same` or `valid`, or pad one side with `pad(x, (0, 0, k - 1, 0))` first",
        )),
        Some(crate::ast::Expr::Var(word)) => {
            let known: &[&str] = if causal_too {
                &["same", "valid", "causal"]
            } else {
                &["same", "valid"]
            };
            let hint = super::closest(&word.to_string(), known.iter().copied())
                .map(|k| format!(": did you mean `{k}`?"))
                .unwrap_or_default();
            Err(syn::Error::new(
                word.span(),
                format!("`padding` is {numbers}, {words}, not `{word}`{hint}"),
            ))
        }
        _ => Ok(None),
    }
}

/// The padding of `padding = same`: as much on each side as keeps the height and width (stride
/// 1 only, as in PyTorch), as the padding on both sides and the extra row and column after
/// the input. A dilated kernel of even span `d·(k − 1)` is padded alike on both sides; an
/// odd span puts its odd row or column after the input, where PyTorch puts it.
fn same_padding(
    kernel: (usize, usize),
    stride: (usize, usize),
    dilation: (usize, usize),
    span: proc_macro2::Span,
) -> syn::Result<((usize, usize), (usize, usize))> {
    // Saturating: a huge dilation must give a huge padding (rejected by the shape stage),
    // not an overflow panic in the macro.
    let total = (
        dilation.0.saturating_mul(kernel.0 - 1),
        dilation.1.saturating_mul(kernel.1 - 1),
    );
    if stride != (1, 1) {
        let half = if total.0 == total.1 {
            format!("{}", total.0 / 2)
        } else {
            format!("({}, {})", total.0 / 2, total.1 / 2)
        };
        return Err(same_needs_stride_one(span, &format!("{stride:?}"), &half));
    }
    Ok(((total.0 / 2, total.1 / 2), (total.0 % 2, total.1 % 2)))
}

/// The error of `padding = same` at a stride other than 1 (written `stride`); `half` is the
/// padding to suggest instead.
fn same_needs_stride_one(span: proc_macro2::Span, stride: &str, half: &str) -> syn::Error {
    syn::Error::new(
        span,
        format!(
            "`padding = same` needs stride 1 (PyTorch refuses it for strided convolutions too), but the stride is {stride}: give the padding as a number, as in `padding = {half}`"
        ),
    )
}

/// A 2-d convolution layer.
#[derive(Clone, Copy)]
pub struct Conv2d {
    out: usize,
    kernel: (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
    /// Zero rows and columns before the input beyond `padding` (a 1-d `padding = causal`:
    /// the whole span). See `extra`.
    lead: (usize, usize),
    /// Zero rows and columns after the input beyond `padding` (0 or 1: the odd one of an
    /// even `padding = same` kernel). With these or `lead`, the input is zero-padded into
    /// scratch first, as PyTorch does, and the convolution runs on that copy.
    extra: (usize, usize),
    dilation: (usize, usize),
    groups: usize,
    bias: bool,
}

/// The error when `groups` does not divide a channel count, or `None`.
/// The inputs of an ONNX `Conv` or `ConvTranspose` node: the image, the weight, the bias if
/// the layer has one.
fn conv_onnx_inputs(cx: &mut crate::onnx::OnnxCx, bias: bool) -> Vec<String> {
    let mut ins = vec![cx.inputs[0].clone(), cx.param(0)];
    if bias {
        ins.push(cx.param(1));
    }
    ins
}

/// The attributes ONNX's `Conv` and `ConvTranspose` share; `end` is the padding after the
/// last row and column (`padding` itself, but for a transposed convolution's output
/// padding).
fn conv_onnx_attrs(
    kernel: (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
    end: (usize, usize),
    dilation: (usize, usize),
    groups: usize,
) -> Vec<(&'static str, crate::onnx::Attr)> {
    use crate::onnx::Attr::{Int, Ints};
    let pair = |(h, w): (usize, usize)| Ints(vec![h as i64, w as i64]);
    let pads = [padding.0, padding.1, end.0, end.1].map(|p| p as i64);
    vec![
        ("kernel_shape", pair(kernel)),
        ("strides", pair(stride)),
        ("pads", Ints(pads.to_vec())),
        ("dilations", pair(dilation)),
        ("group", Int(groups as i64)),
    ]
}

fn groups_error(groups: usize, c: usize, out: usize) -> Option<OpError> {
    if !c.is_multiple_of(groups) {
        return Some(OpError::input(
            0,
            format!(
                "`groups = {groups}` must divide the input channels, but this input has {c} channels ({c} is not a multiple of {groups}; the output has {out}): use a number of groups that divides both {c} and {out}"
            ),
        ));
    }
    if !out.is_multiple_of(groups) {
        return Some(OpError::call(format!(
            "`groups = {groups}` must divide the output channels, but {out} is not a multiple of {groups} (the input has {c} channels): use a number of groups that divides both {c} and {out}"
        )));
    }
    None
}

/// `dilation·(kernel − 1) + 1`, saturating: the extent a dilated kernel covers.
fn dilated_extent(kernel: usize, dilation: usize) -> usize {
    dilation
        .saturating_mul(kernel.saturating_sub(1))
        .saturating_add(1)
}

/// `(n1, n2)` written as PyTorch prints a pair option.
fn pair_text((h, w): (usize, usize)) -> String {
    if h == w {
        h.to_string()
    } else {
        format!("({h}, {w})")
    }
}

/// The channel count of a convolution's input (0 when it is not fixed, which the shape
/// rules refuse).
fn in_channels(inputs: &[&ValueInfo]) -> usize {
    inputs[0].shape.0.get(1).map_or(0, |d| d.fixed_or_zero())
}

/// Whether `a · b · ... ` fits in a `usize`.
fn product_fits(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

/// The fixed `[C, H, W]` of an NCHW input, or an error saying what is wrong.
pub(crate) fn spatial_input(
    op: &str,
    info: &ValueInfo,
    symbols: &[String],
) -> Result<(usize, Dim, Dim), OpError> {
    require_float(op, 0, info)?;
    let shape = &info.shape;
    let shown = shape.display(symbols);
    if shape.rank() != 4 {
        // A flat [batch, n] with n a square is most likely a flattened one-channel image.
        let hint = match shape.0.as_slice() {
            [batch, Dim::Fixed(n)] => {
                let side = (*n as f64).sqrt().round() as usize;
                let batch = batch.display(symbols);
                if side.checked_mul(side) == Some(*n) {
                    format!(": reshape it first, as in `reshape(x, ({batch}, 1, {side}, {side}))`")
                } else {
                    format!(": reshape it first, as in `reshape(x, ({batch}, channels, height, width))`")
                }
            }
            _ => String::new(),
        };
        return Err(OpError::input(
            0,
            format!(
                "`{op}` expects an image batch [batch, channels, height, width], but this is {shown} (rank {}){hint}",
                shape.rank()
            ),
        ));
    }
    match shape.0[1] {
        Dim::Fixed(c) => Ok((c, shape.0[2], shape.0[3])),
        symbolic => Err(OpError::input(
            0,
            format!(
                "`{op}` needs a fixed channel count (its weights are per channel), but dim 1 of {shown} is the symbolic `{}`: declare it as a number",
                symbolic.display(symbols)
            ),
        )),
    }
}

/// A window sliding along one axis of a convolution or pooling: what its output extent
/// depends on.
#[derive(Clone, Copy)]
pub(crate) struct Window {
    /// The positions one window covers (`dilation·(kernel − 1) + 1`).
    pub span: usize,
    /// The step between windows.
    pub stride: usize,
    /// The padding on both sides together.
    pub pads: usize,
    /// Whether a last partial step still makes a window (pooling's `ceil_mode`).
    pub ceil: bool,
}

/// The extent of `window` sliding over `input`: `⌊(input + pads − span) / stride⌋ + 1`, or
/// with `ceil` the quotient rounded up. A symbolic input gives `scale · symbol + offset` when
/// the stride divides the scale; otherwise the extent depends on the symbol's remainder, and
/// the error says how to declare the axis (`what` names it: "height"). A fixed input too small
/// for the window gives a meaningless extent: callers check it first, with messages of their
/// own.
pub(crate) fn sliding_extent(
    op: &str,
    what: &str,
    input: Dim,
    window: Window,
    symbols: &[String],
) -> Result<Dim, OpError> {
    let Window {
        span,
        stride,
        pads,
        ceil,
    } = window;
    let reach =
        i64::try_from(pads).unwrap_or(i64::MAX / 2) - i64::try_from(span).unwrap_or(i64::MAX / 2);
    match input.div(reach, stride, ceil) {
        Ok(quotient) => Ok(quotient.plus(1)),
        Err(remainder) => {
            let shown = input.display(symbols);
            let symbol = input
                .linear()
                .and_then(|(s, ..)| symbols.get(s))
                .map_or("?", String::as_str);
            let padded = if pads == 0 {
                shown.clone()
            } else {
                format!("{shown} + {pads}")
            };
            Err(OpError::input(
                0,
                format!(
                    "`{op}` with stride {stride} over the {what} `{shown}`: the output {what} ⌊({padded} - {span})/{stride}⌋ + 1 grows unevenly with `{symbol}` and has no formula of it; multiply the factor of `{symbol}` in the input's declaration by {} (a model that halves an axis four times declares it `16 * {symbol}`)",
                    remainder.multiple
                ),
            ))
        }
    }
}

impl Conv2d {
    /// `(c, h, w)` of the input (`c` 0 when it is not fixed, which `infer` refuses).
    fn input_dims(inputs: &[&ValueInfo]) -> (usize, Dim, Dim) {
        let shape = &inputs[0].shape.0;
        let get = |i: usize| shape.get(i).copied().unwrap_or(Dim::Fixed(0));
        (in_channels(inputs), get(2), get(3))
    }

    /// The output height and width for an input of height `h` and width `w`, fixed or
    /// computed from a symbol.
    fn out_dims(&self, h: Dim, w: Dim, symbols: &[String]) -> Result<(Dim, Dim), OpError> {
        let (h2, w2) = self.input_extents(h, w);
        let extent = |what, n: Dim, p: usize, k: usize, d: usize, s: usize| {
            let pads = p.saturating_mul(2);
            let window = Window {
                span: dilated_extent(k, d),
                stride: s,
                pads,
                ceil: false,
            };
            sliding_extent("conv2d", what, n, window, symbols)
        };
        Ok((
            extent(
                "height",
                h2,
                self.padding.0,
                self.kernel.0,
                self.dilation.0,
                self.stride.0,
            )?,
            extent(
                "width",
                w2,
                self.padding.1,
                self.kernel.1,
                self.dilation.1,
                self.stride.1,
            )?,
        ))
    }

    /// The height and width the convolution itself reads: the input's with the extra rows
    /// and columns of an uneven `padding = same` or a causal one.
    fn input_extents(&self, h: Dim, w: Dim) -> (Dim, Dim) {
        let (gh, gw) = self.grown();
        (h.plus(gh as i64), w.plus(gw as i64))
    }

    /// The rows and columns the padded copy adds (`lead` and `extra` together).
    fn grown(&self) -> (usize, usize) {
        (
            self.lead.0.saturating_add(self.extra.0),
            self.lead.1.saturating_add(self.extra.1),
        )
    }

    /// Whether the convolution runs on a zero-padded copy of its input.
    fn copies(&self) -> bool {
        self.grown() != (0, 0)
    }

    /// `let geometry = Conv2dGeometry { .. };` for an input of dims `x_dims`.
    fn geometry_tokens(&self, x_dims: &[TokenStream]) -> TokenStream {
        let (geometry, value) = (super::geometry_ident(), self.geometry_expr(x_dims));
        quote! { let #geometry = #value; }
    }

    /// The `Conv2dGeometry` for an input of dims `x_dims`.
    fn geometry_expr(&self, x_dims: &[TokenStream]) -> TokenStream {
        let (batch, c, h, w) = (&x_dims[0], &x_dims[1], &x_dims[2], &x_dims[3]);
        let (o, (kh, kw), (sh, sw), (ph, pw)) = (self.out, self.kernel, self.stride, self.padding);
        let ((dh, dw), g) = (self.dilation, self.groups);
        quote! {
            ::kiln::kernels::conv::Conv2dGeometry {
                batch: #batch,
                in_channels: #c,
                in_h: #h,
                in_w: #w,
                out_channels: #o,
                kernel_h: #kh,
                kernel_w: #kw,
                stride_h: #sh,
                stride_w: #sw,
                pad_h: #ph,
                pad_w: #pw,
                dilation_h: #dh,
                dilation_w: #dw,
                groups: #g,
            }
        }
    }
}

impl Kernel for Conv2d {
    fn onnx(&self, cx: &mut crate::onnx::OnnxCx) -> Result<(), String> {
        let ins = conv_onnx_inputs(cx, self.bias);
        let begin = (self.padding.0 + self.lead.0, self.padding.1 + self.lead.1);
        let end = (self.padding.0 + self.extra.0, self.padding.1 + self.extra.1);
        let attrs = conv_onnx_attrs(
            self.kernel,
            self.stride,
            begin,
            end,
            self.dilation,
            self.groups,
        );
        cx.finish("Conv", ins, attrs);
        Ok(())
    }
    fn name(&self) -> &'static str {
        "conv2d"
    }
    fn describe(&self) -> String {
        format!(
            "out={}, kernel={:?}, stride={:?}, padding={:?}{}{}{}{}",
            self.out,
            self.kernel,
            self.stride,
            self.padding,
            if self.extra == (0, 0) {
                String::new()
            } else {
                format!(", extra_end={:?}", self.extra)
            },
            if self.dilation == (1, 1) {
                String::new()
            } else {
                format!(", dilation={:?}", self.dilation)
            },
            if self.groups == 1 {
                String::new()
            } else {
                format!(", groups={}", self.groups)
            },
            if self.bias { "" } else { ", bias=false" }
        )
    }
    fn has_params(&self) -> bool {
        true
    }
    fn infer(&self, inputs: &[&ValueInfo], symbols: &[String]) -> Result<ValueInfo, OpError> {
        let (c, h, w) = spatial_input("conv2d", inputs[0], symbols)?;
        if let Some(e) = groups_error(self.groups, c, self.out) {
            return Err(e);
        }
        let ((kh, kw), (ph, pw)) = (self.kernel, self.padding);
        let (span_h, span_w) = (
            dilated_extent(kh, self.dilation.0),
            dilated_extent(kw, self.dilation.1),
        );
        let (h2, w2) = self.input_extents(h, w);
        let (padded_h, padded_w) = (
            h2.plus(ph.saturating_mul(2) as i64),
            w2.plus(pw.saturating_mul(2) as i64),
        );
        // A symbolic axis is checked at run time: the call boundary keeps the output at
        // least 1, which is the kernel fitting.
        let too_small = |padded: Dim, span: usize| matches!(padded, Dim::Fixed(n) if span > n);
        if too_small(padded_h, span_h) || too_small(padded_w, span_w) {
            let (h, w) = (h.display(symbols), w.display(symbols));
            let (padded_h, padded_w) = (padded_h.display(symbols), padded_w.display(symbols));
            let dilated = if self.dilation == (1, 1) {
                String::new()
            } else {
                format!(
                    " with dilation {} spans {span_h}x{span_w} and",
                    pair_text(self.dilation)
                )
            };
            return Err(OpError::input(
                0,
                format!(
                    "the kernel ({kh}, {kw}){dilated} is larger than the padded input: {h}x{w} plus padding ({ph}, {pw}) is {}x{}; use a smaller kernel{} or more padding",
                    padded_h,
                    padded_w,
                    if self.dilation == (1, 1) { "" } else { ", less dilation" },
                ),
            ));
        }
        let (out_h, out_w) = self.out_dims(h, w, symbols)?;
        // The scratch (`scratch`) holds two im2col matrices of c/g * kh * kw * oh * ow values
        // and up to 7 weight gradients (one position stands for a symbolic extent).
        let (oh, ow) = (out_h.fixed_or_zero().max(1), out_w.fixed_or_zero().max(1));
        let cols = product_fits(&[c / self.groups, kh, kw, oh, ow]);
        let weight = product_fits(&[self.out, c / self.groups, kh, kw]);
        let total = cols
            .and_then(|cols| cols.checked_mul(2))
            .zip(weight.and_then(|w| w.checked_add(self.out)?.checked_mul(7)))
            .and_then(|(cols, gradients)| cols.checked_add(gradients));
        if total.is_none() {
            return Err(OpError::call(format!(
                "this convolution's im2col buffer ({c} x {kh} x {kw} x {oh} x {ow} values) would not fit in memory: is a size mistyped?"
            )));
        }
        Ok(ValueInfo {
            shape: Shape(vec![
                inputs[0].shape.0[0],
                Dim::Fixed(self.out),
                out_h,
                out_w,
            ]),
            kind: ValueKind::Float,
        })
    }
    fn layer(&self, inputs: &[&ValueInfo]) -> Option<LayerSpec> {
        let (c, ..) = Self::input_dims(inputs);
        let (o, (kh, kw), bias, g) = (self.out, self.kernel, self.bias, self.groups);
        Some(conv_layer(
            vec![o, c / g, kh, kw],
            bias.then_some(o),
            quote!(::kiln::layers::Conv2d<F>),
            quote!(::kiln::layers::Conv2d::grouped(#c, #o, (#kh, #kw), #g, #bias, rng)),
            quote!(::kiln::layers::Conv2d::zeros_grouped(#c, #o, (#kh, #kw), #g, #bias)),
        ))
    }
    fn scratch(&self, inputs: &[&ValueInfo], _output: &ValueInfo) -> Vec<ScratchSpec> {
        let (c, h, w) = Self::input_dims(inputs);
        let mut scratch = self.cols_scratch(c, h, w);
        scratch.extend(self.extra_scratch(inputs[0].shape.0[0], c, h, w));
        scratch
    }
    fn backward_reads(&self) -> Reads {
        Reads {
            inputs: vec![true],
            output: false,
        }
    }
    fn forward(&self, cx: &ForwardCx) -> TokenStream {
        self.forward_plane(cx, &cx.inputs[0].dims)
    }
    fn backward(&self, cx: &BackwardCx) -> TokenStream {
        self.backward_plane(cx, &cx.inputs[0].dims)
    }
}

impl Conv2d {
    /// The buffers of an uneven `padding = same` (none otherwise): the zero-padded input the
    /// convolution reads (kept for the backward pass) and its gradient. `batch`, `c`, `h`
    /// and `w` are the input's plane dims, `w` possibly symbolic (a 1-d convolution's
    /// length, see [`Conv1d`]). The passes take the buffers whole and slice them to the
    /// batch at hand.
    fn extra_scratch(&self, batch: Dim, c: usize, h: Dim, w: Dim) -> Vec<ScratchSpec> {
        if !self.copies() {
            return Vec::new();
        }
        let (h, w) = self.input_extents(h, w);
        let len = move |dim: &dyn Fn(Dim) -> TokenStream| {
            let (b, h, w) = (dim(batch), dim(h), dim(w));
            let c = proc_macro2::Literal::usize_unsuffixed(c);
            quote!(#b * #c * #h * #w)
        };
        ["padded", "d_padded"]
            .into_iter()
            .map(|suffix| ScratchSpec {
                suffix,
                len: ScratchLen::OfDims(Box::new(len)),
            })
            .collect()
    }

    /// The im2col scratch of one sample of `c` channels, `h` by `w` (before the padded copy's
    /// extra rows and columns): sized at compile time when both are fixed, else at run time
    /// for the size at hand.
    fn cols_scratch(&self, c: usize, h: Dim, w: Dim) -> Vec<ScratchSpec> {
        let (h, w) = self.input_extents(h, w);
        let plane = *self;
        sample_scratch(c, h, w, move |dims| plane.geometry_expr(dims))
    }

    /// The forward pass on an input of plane dims `[batch, channels, height, width]`: with an
    /// uneven `padding = same`, the input zero-padded after its last row and column first.
    fn forward_plane(&self, cx: &ForwardCx, dims: &[TokenStream]) -> TokenStream {
        let x = &cx.inputs[0].data;
        if !self.copies() {
            let setup = self.geometry_tokens(dims);
            return conv_forward_call(cx, x, setup, quote!(conv2d_forward));
        }
        let (padded_dims, len, pads) = self.extra_tokens(dims);
        let setup = self.geometry_tokens(&padded_dims);
        let scratch = &cx.scratch[1];
        let x_padded = quote!(x_padded);
        let call = conv_forward_call(cx, &quote!(#x_padded), setup, quote!(conv2d_forward));
        quote! {
            let #x_padded = #scratch;
            let #x_padded = &mut #x_padded[..#len];
            ::kiln::kernels::pad::pad_forward(#x, &[#(#dims),*], #pads, ::kiln::kernels::pad::PadMode::Constant, F::ZERO, #x_padded);
            let #x_padded = &*#x_padded;
            #call
        }
    }

    /// The backward pass on an input of plane dims `dims`: with an uneven `padding = same`,
    /// the convolution's input gradient lands in scratch and the padding's backward crops it
    /// into the input's gradient.
    fn backward_plane(&self, cx: &BackwardCx, dims: &[TokenStream]) -> TokenStream {
        let x = &cx.inputs[0].data;
        if !self.copies() {
            let setup = self.geometry_tokens(dims);
            let dx = input_grad(cx);
            return conv_backward_call(cx, x, &dx, setup, quote!(conv2d_backward));
        }
        let (padded_dims, len, pads) = self.extra_tokens(dims);
        let setup = self.geometry_tokens(&padded_dims);
        let (padded, d_padded) = (&cx.scratch[1], &cx.scratch[2]);
        let (x_padded, dx_padded) = (quote!(x_padded), quote!(dx_padded));
        let Some(dx) = &cx.d_inputs[0] else {
            let call =
                conv_backward_call(cx, &x_padded, &quote!(None), setup, quote!(conv2d_backward));
            return quote! {
                let #x_padded = &#padded[..#len];
                #call
            };
        };
        let (dxd, acc) = (&dx.data, dx.accumulate);
        let call = conv_backward_call(
            cx,
            &x_padded,
            &quote!(Some((&mut *#dx_padded, false))),
            setup,
            quote!(conv2d_backward),
        );
        quote! {
            let #x_padded = &#padded[..#len];
            let #dx_padded = #d_padded;
            let #dx_padded = &mut #dx_padded[..#len];
            #call
            ::kiln::kernels::pad::pad_backward(#dx_padded, &[#(#dims),*], #pads, ::kiln::kernels::pad::PadMode::Constant, #dxd, #acc);
        }
    }

    /// For an uneven `padding = same` on an input of plane dims `dims`: the padded input's
    /// dims, its length and the pads of `pad_forward`.
    fn extra_tokens(&self, dims: &[TokenStream]) -> (Vec<TokenStream>, TokenStream, TokenStream) {
        let (b, c) = (&dims[0], &dims[1]);
        let (gh, gw) = self.grown();
        let (h, w) = (
            super::dim_plus(&dims[2], gh as i64),
            super::dim_plus(&dims[3], gw as i64),
        );
        let padded = vec![b.clone(), c.clone(), h, w];
        let len = super::product_of(&padded);
        // Unsuffixed: the kernel takes signed pads (negative ones crop).
        let [lh, lw, eh, ew] = [self.lead.0, self.lead.1, self.extra.0, self.extra.1]
            .map(proc_macro2::Literal::usize_unsuffixed);
        let pads = quote!(&[(#lh, #eh), (#lw, #ew)]);
        (padded, len, pads)
    }
}

/// The registry entry of the 1-d convolution.
pub struct Conv1dSpec;
/// `conv1d`.
pub static CONV1D: Conv1dSpec = Conv1dSpec;

/// Option `key = n` of `conv1d`: one integer of at least `min` (a pair is a 2-d option).
fn single_option(args: &mut CallArgs, key: &'static str, min: u64) -> syn::Result<Option<usize>> {
    if let Some(crate::ast::Expr::Tuple(_, span)) = args.option_expr(key) {
        return Err(syn::Error::new(
            *span,
            format!("`conv1d` takes one integer for `{key}`, as in `{key} = 3`, not a pair (a pair `(height, width)` is for `conv2d`)"),
        ));
    }
    Ok(args.opt_pair(key, min)?.map(|(n, _)| n))
}

impl OpSpec for Conv1dSpec {
    fn name(&self) -> &'static str {
        "conv1d"
    }
    fn usage(&self) -> &'static str {
        "conv1d(x, out_channels, kernel = 3, stride = 1, padding = 0, dilation = 1, groups = 1)"
    }
    fn build(&self, args: &mut CallArgs) -> syn::Result<Built> {
        args.positional(2, 2)?;
        args.tensor(0);
        let out = args.int(1, "the number of output channels")?;
        let kernel = single_option(args, "kernel", 1)?;
        let stride = single_option(args, "stride", 1)?.unwrap_or(1);
        let word = padding_word(args, "an integer", true)?;
        let padding = match word {
            Some(_) => 0,
            None => single_option(args, "padding", 0)?.unwrap_or(0),
        };
        let dilation = single_option(args, "dilation", 1)?.unwrap_or(1);
        let groups = args.opt_int("groups")?.unwrap_or(1);
        let bias = args.opt_bool("bias", true)?;
        args.finish()?;
        let Some(kernel) = kernel else {
            return Err(syn::Error::new(
                args.span(),
                "`conv1d` needs its kernel size: add `kernel = 3`",
            ));
        };
        // Saturating: a huge dilation must give a huge padding (rejected by the shape stage),
        // not an overflow panic in the macro.
        let total = dilation.saturating_mul(kernel - 1);
        let (padding, lead, extra) = match word {
            Some(PaddingWord::Same(span)) => {
                if stride != 1 {
                    return Err(same_needs_stride_one(
                        span,
                        &stride.to_string(),
                        &(total / 2).to_string(),
                    ));
                }
                (total / 2, 0, total % 2)
            }
            Some(PaddingWord::Causal) => (0, total, 0),
            Some(PaddingWord::Valid) | None => (padding, 0, 0),
        };
        Ok(Built::Kernel(Box::new(Conv1d {
            plane: Conv2d {
                out,
                kernel: (1, kernel),
                stride: (1, stride),
                padding: (0, padding),
                lead: (0, lead),
                extra: (0, extra),
                dilation: (1, dilation),
                groups,
                bias,
            },
        })))
    }
}

/// A 1-d convolution layer (`nn.Conv1d` on `[batch, channels, length]`). It runs as the 2-d
/// convolution `plane` of height 1 (kernel height 1, stride 1, no padding along the height):
/// the input `[B, C, L]` is read as `[B, C, 1, L]` and the weight `[out, C/g, k]` as `[out,
/// C/g, 1, k]`, which are the same memory, so the 2-d kernels serve unchanged. The layer
/// (`kiln::layers::Conv1d`) keeps PyTorch's 3-d weight.
pub struct Conv1d {
    plane: Conv2d,
}

impl Conv1d {
    fn kernel(&self) -> usize {
        self.plane.kernel.1
    }
    fn stride(&self) -> usize {
        self.plane.stride.1
    }
    fn padding(&self) -> usize {
        self.plane.padding.1
    }
    fn dilation(&self) -> usize {
        self.plane.dilation.1
    }
    /// The zero positions the padded copy adds beyond `padding`: after the input for an
    /// uneven `padding = same`, before it for `padding = causal`.
    fn extra(&self) -> usize {
        self.plane.grown().1
    }

    /// The dims of the height-1 image a `[batch, channels, length]` input is read as.
    fn plane_dims(dims: &[TokenStream]) -> Vec<TokenStream> {
        vec![dims[0].clone(), dims[1].clone(), quote!(1), dims[2].clone()]
    }
}

/// The fixed channel count `C` and the length `L` of a `[batch, channels, length]` input, or
/// an error saying what is wrong.
pub(super) fn sequence_input(
    op: &str,
    info: &ValueInfo,
    symbols: &[String],
) -> Result<(usize, Dim), OpError> {
    require_float(op, 0, info)?;
    let shape = &info.shape;
    let shown = shape.display(symbols);
    if shape.rank() != 3 {
        let hint = match shape.0.as_slice() {
            [_, _, _, _] => format!(
                ": for an image batch [batch, channels, height, width] use `{}`",
                op.replace("1d", "2d")
            ),
            [batch, Dim::Fixed(n)] => format!(
                ": reshape it first, as in `reshape(x, ({}, 1, {n}))` for one channel",
                batch.display(symbols)
            ),
            _ => String::new(),
        };
        return Err(OpError::input(
            0,
            format!(
                "`{op}` expects a sequence batch [batch, channels, length], but this is {shown} (rank {}){hint}",
                shape.rank()
            ),
        ));
    }
    match shape.0[1] {
        Dim::Fixed(c) => Ok((c, shape.0[2])),
        symbolic => Err(OpError::input(
            0,
            format!(
                "`{op}` needs a fixed channel count, but dim 1 of {shown} is the symbolic `{}`: declare it as a number",
                symbolic.display(symbols)
            ),
        )),
    }
}

impl Kernel for Conv1d {
    fn onnx(&self, cx: &mut crate::onnx::OnnxCx) -> Result<(), String> {
        use crate::onnx::Attr::{Int, Ints};
        let ins = conv_onnx_inputs(cx, self.plane.bias);
        let one = |n: usize| Ints(vec![n as i64]);
        let p = self.padding() as i64;
        let attrs = vec![
            ("kernel_shape", one(self.kernel())),
            ("strides", one(self.stride())),
            (
                "pads",
                Ints(vec![
                    p + self.plane.lead.1 as i64,
                    p + self.plane.extra.1 as i64,
                ]),
            ),
            ("dilations", one(self.dilation())),
            ("group", Int(self.plane.groups as i64)),
        ];
        cx.finish("Conv", ins, attrs);
        Ok(())
    }
    fn name(&self) -> &'static str {
        "conv1d"
    }
    fn describe(&self) -> String {
        let mut text = format!(
            "out={}, kernel={}, stride={}, padding={}",
            self.plane.out,
            self.kernel(),
            self.stride(),
            self.padding()
        );
        if self.plane.lead.1 != 0 {
            text += ", causal";
        }
        if self.plane.extra.1 != 0 {
            text += &format!(", extra_end={}", self.plane.extra.1);
        }
        if self.dilation() != 1 {
            text += &format!(", dilation={}", self.dilation());
        }
        if self.plane.groups != 1 {
            text += &format!(", groups={}", self.plane.groups);
        }
        if !self.plane.bias {
            text += ", bias=false";
        }
        text
    }
    fn has_params(&self) -> bool {
        true
    }
    fn infer(&self, inputs: &[&ValueInfo], symbols: &[String]) -> Result<ValueInfo, OpError> {
        let (c, length) = sequence_input("conv1d", inputs[0], symbols)?;
        let (out, groups) = (self.plane.out, self.plane.groups);
        if let Some(e) = groups_error(groups, c, out) {
            return Err(e);
        }
        let (k, s, p, d) = (
            self.kernel(),
            self.stride(),
            self.padding(),
            self.dilation(),
        );
        let span = dilated_extent(k, d);
        if let Dim::Fixed(l) = length {
            {
                let padded = l
                    .saturating_add(p.saturating_mul(2))
                    .saturating_add(self.extra());
                if span > padded {
                    let dilated = if d == 1 {
                        String::new()
                    } else {
                        format!(" with dilation {d} spans {span} and")
                    };
                    return Err(OpError::input(
                        0,
                        format!(
                            "the kernel {k}{dilated} is larger than the padded input: length {l} plus padding {p} on each side is {padded}; use a smaller kernel{} or more padding",
                            if d == 1 { "" } else { ", less dilation" },
                        ),
                    ));
                }
            }
        }
        // A symbolic length is checked at run time, where the call boundary keeps the output
        // at least 1 long (the kernel fitting).
        let padded = length.plus(self.extra() as i64);
        let window = Window {
            span,
            stride: s,
            pads: p.saturating_mul(2),
            ceil: false,
        };
        let out_length = sliding_extent("conv1d", "length", padded, window, symbols)?;
        // The scratch, as conv2d's: two im2col matrices and up to 7 weight gradients (one
        // position stands for a symbolic length).
        let positions = out_length.fixed_or_zero().max(1);
        let cols = product_fits(&[c / groups, k, positions]);
        let weight = product_fits(&[out, c / groups, k]);
        let total = cols
            .and_then(|cols| cols.checked_mul(2))
            .zip(weight.and_then(|w| w.checked_add(out)?.checked_mul(7)))
            .and_then(|(cols, gradients)| cols.checked_add(gradients));
        if total.is_none() {
            return Err(OpError::call(format!(
                "this convolution's im2col buffer ({c} x {k} x {positions} values) would not fit in memory: is a size mistyped?"
            )));
        }
        Ok(ValueInfo {
            shape: Shape(vec![inputs[0].shape.0[0], Dim::Fixed(out), out_length]),
            kind: ValueKind::Float,
        })
    }
    fn layer(&self, inputs: &[&ValueInfo]) -> Option<LayerSpec> {
        let c = in_channels(inputs);
        let (o, k, bias, g) = (
            self.plane.out,
            self.kernel(),
            self.plane.bias,
            self.plane.groups,
        );
        Some(conv_layer(
            vec![o, c / g, k],
            bias.then_some(o),
            quote!(::kiln::layers::Conv1d<F>),
            quote!(::kiln::layers::Conv1d::new(#c, #o, #k, #g, #bias, rng)),
            quote!(::kiln::layers::Conv1d::zeros(#c, #o, #k, #g, #bias)),
        ))
    }
    fn scratch(&self, inputs: &[&ValueInfo], _output: &ValueInfo) -> Vec<ScratchSpec> {
        let c = in_channels(inputs);
        let length = inputs[0].shape.0.get(2).copied().unwrap_or(Dim::Fixed(0));
        let mut scratch = self.plane.cols_scratch(c, Dim::Fixed(1), length);
        scratch.extend(
            self.plane
                .extra_scratch(inputs[0].shape.0[0], c, Dim::Fixed(1), length),
        );
        scratch
    }
    fn backward_reads(&self) -> Reads {
        Reads {
            inputs: vec![true],
            output: false,
        }
    }
    fn forward(&self, cx: &ForwardCx) -> TokenStream {
        self.plane
            .forward_plane(cx, &Self::plane_dims(&cx.inputs[0].dims))
    }
    fn backward(&self, cx: &BackwardCx) -> TokenStream {
        self.plane
            .backward_plane(cx, &Self::plane_dims(&cx.inputs[0].dims))
    }
}

/// The registry entry of the transposed convolution.
pub struct ConvTranspose2dSpec;
/// `conv_transpose2d`.
pub static CONV_TRANSPOSE2D: ConvTranspose2dSpec = ConvTranspose2dSpec;

impl OpSpec for ConvTranspose2dSpec {
    fn name(&self) -> &'static str {
        "conv_transpose2d"
    }
    fn usage(&self) -> &'static str {
        "conv_transpose2d(x, out_channels, kernel = 2, stride = 2, padding = 0, output_padding = 0, groups = 1, dilation = 1)"
    }
    fn build(&self, args: &mut CallArgs) -> syn::Result<Built> {
        args.positional(2, 2)?;
        args.tensor(0);
        let out = args.int(1, "the number of output channels")?;
        let kernel = args.opt_pair("kernel", 1)?;
        let stride = args.opt_pair("stride", 1)?.unwrap_or((1, 1));
        let padding = args.opt_pair("padding", 0)?.unwrap_or((0, 0));
        let output_padding_span = args.option_expr("output_padding").map(|e| e.span());
        let output_padding = args.opt_pair("output_padding", 0)?.unwrap_or((0, 0));
        let groups = args.opt_int("groups")?.unwrap_or(1);
        let dilation = args.opt_pair("dilation", 1)?.unwrap_or((1, 1));
        let bias = args.opt_bool("bias", true)?;
        args.finish()?;
        let Some(kernel) = kernel else {
            return Err(syn::Error::new(
                args.span(),
                "`conv_transpose2d` needs its kernel size: add `kernel = 2` (or `kernel = (3, 2)` for height 3, width 2)",
            ));
        };
        // PyTorch's rule: the extra rows must be fewer than the stride or the dilation, or
        // they would be positions no input reaches.
        for (axis, q, s, d) in [
            ("height", output_padding.0, stride.0, dilation.0),
            ("width", output_padding.1, stride.1, dilation.1),
        ] {
            if q >= s && q >= d {
                return Err(syn::Error::new(
                    output_padding_span.unwrap_or_else(|| args.span()),
                    format!(
                        "`output_padding` must be smaller than the stride or the dilation, but along the {axis} it is {q} with stride {s} and dilation {d}: use an output padding below {}",
                        s.max(d)
                    ),
                ));
            }
        }
        Ok(Built::Kernel(Box::new(ConvTranspose2d {
            out,
            kernel,
            stride,
            padding,
            output_padding,
            dilation,
            groups,
            bias,
        })))
    }
}

/// A 2-d transposed convolution layer.
#[derive(Clone, Copy)]
pub struct ConvTranspose2d {
    out: usize,
    kernel: (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
    output_padding: (usize, usize),
    dilation: (usize, usize),
    groups: usize,
    bias: bool,
}

impl ConvTranspose2d {
    /// The output extent along axis `axis` (0 height, 1 width) of an input extent `n`:
    /// `(n − 1)·stride + dilation·(kernel − 1) + output_padding + 1 − 2·padding`, for a
    /// symbolic `n` a formula of its symbol (a fixed one saturates at 0).
    fn out_extent(&self, n: Dim, axis: usize) -> Dim {
        let p = if axis == 0 {
            self.padding.0
        } else {
            self.padding.1
        };
        self.full_extent_of(n, axis).plus(-2 * p as i64)
    }

    /// [`Self::out_extent`] before the padding is cropped.
    fn full_extent_of(&self, n: Dim, axis: usize) -> Dim {
        let pick = |(h, w): (usize, usize)| if axis == 0 { h } else { w } as i64;
        let (s, q) = (pick(self.stride), pick(self.output_padding));
        let span = dilated_extent(pick(self.kernel) as usize, pick(self.dilation) as usize) as i64;
        n.times(s as usize).plus(span + q - s)
    }

    /// The `ConvTranspose2dGeometry` for an input of dims `x_dims`.
    fn geometry_expr(&self, x_dims: &[TokenStream]) -> TokenStream {
        let (batch, c, h, w) = (&x_dims[0], &x_dims[1], &x_dims[2], &x_dims[3]);
        let (o, (kh, kw), (sh, sw), (ph, pw)) = (self.out, self.kernel, self.stride, self.padding);
        let ((qh, qw), (dh, dw), g) = (self.output_padding, self.dilation, self.groups);
        quote! {
            ::kiln::kernels::conv::ConvTranspose2dGeometry {
                batch: #batch,
                in_channels: #c,
                in_h: #h,
                in_w: #w,
                out_channels: #o,
                kernel_h: #kh,
                kernel_w: #kw,
                stride_h: #sh,
                stride_w: #sw,
                pad_h: #ph,
                pad_w: #pw,
                output_pad_h: #qh,
                output_pad_w: #qw,
                dilation_h: #dh,
                dilation_w: #dw,
                groups: #g,
            }
        }
    }

    fn geometry_tokens(&self, x_dims: &[TokenStream]) -> TokenStream {
        let (geometry, value) = (super::geometry_ident(), self.geometry_expr(x_dims));
        quote! { let #geometry = #value; }
    }
}

impl Kernel for ConvTranspose2d {
    fn onnx(&self, cx: &mut crate::onnx::OnnxCx) -> Result<(), String> {
        let ins = conv_onnx_inputs(cx, self.bias);
        // ONNX (and onnxruntime) takes an output padding only below the stride, where
        // PyTorch also allows one below the dilation. Cropping `q` fewer at the end gives the
        // same output whenever the padding is at least `q`, so the output padding goes into
        // the end pads then, and is written as such only where it must.
        let (p, q, s) = (self.padding, self.output_padding, self.stride);
        let mut end = [p.0, p.1];
        let mut output_padding = [0, 0];
        for (axis, (p, q, s)) in [(p.0, q.0, s.0), (p.1, q.1, s.1)].into_iter().enumerate() {
            if p >= q {
                end[axis] -= q;
            } else if q < s {
                output_padding[axis] = q;
            } else {
                return Err(crate::onnx::unsupported(
                    self.name(),
                    &format!(
                        "ONNX requires an `output_padding` below the stride, and {q} with stride {s} and padding {p} has no equivalent there"
                    ),
                ));
            }
        }
        let mut attrs = conv_onnx_attrs(
            self.kernel,
            self.stride,
            self.padding,
            (end[0], end[1]),
            self.dilation,
            self.groups,
        );
        if output_padding != [0, 0] {
            let values = output_padding.map(|q| q as i64).to_vec();
            attrs.push(("output_padding", crate::onnx::Attr::Ints(values)));
        }
        cx.finish("ConvTranspose", ins, attrs);
        Ok(())
    }
    fn name(&self) -> &'static str {
        "conv_transpose2d"
    }
    fn describe(&self) -> String {
        let mut text = format!(
            "out={}, kernel={:?}, stride={:?}, padding={:?}",
            self.out, self.kernel, self.stride, self.padding
        );
        if self.output_padding != (0, 0) {
            text += &format!(", output_padding={:?}", self.output_padding);
        }
        if self.dilation != (1, 1) {
            text += &format!(", dilation={:?}", self.dilation);
        }
        if self.groups != 1 {
            text += &format!(", groups={}", self.groups);
        }
        if !self.bias {
            text += ", bias=false";
        }
        text
    }
    fn has_params(&self) -> bool {
        true
    }
    fn infer(&self, inputs: &[&ValueInfo], symbols: &[String]) -> Result<ValueInfo, OpError> {
        let (c, in_h, in_w) = spatial_input("conv_transpose2d", inputs[0], symbols)?;
        if let Some(e) = groups_error(self.groups, c, self.out) {
            return Err(e);
        }
        let (out_h, out_w) = (self.out_extent(in_h, 0), self.out_extent(in_w, 1));
        // A symbolic extent is checked at run time (the call boundary keeps the output at
        // least 1); the messages below count one position for it.
        let (h, w) = (in_h.fixed_or_zero().max(1), in_w.fixed_or_zero().max(1));
        let (oh, ow) = (out_h.fixed_or_zero(), out_w.fixed_or_zero());
        if (in_h.is_fixed() && oh == 0) || (in_w.is_fixed() && ow == 0) {
            let (h, w) = (in_h.display(symbols), in_w.display(symbols));
            let (full_h, full_w) = (
                self.full_extent_of(in_h, 0).display(symbols),
                self.full_extent_of(in_w, 1).display(symbols),
            );
            return Err(OpError::call(format!(
                "the padding ({}, {}) crops the whole output: on a {h}x{w} input this layer's output before cropping is {full_h}x{full_w}, and twice the padding leaves nothing; use less padding",
                self.padding.0, self.padding.1
            )));
        }
        let (g, (kh, kw)) = (self.groups, self.kernel);
        // The scratch holds two column matrices (out/g · kh · kw × h · w) and up to 7
        // weight and bias gradients.
        let cols = product_fits(&[self.out / g, kh, kw, h, w]);
        let weight = product_fits(&[c, self.out / g, kh, kw]);
        let output = product_fits(&[self.out, oh.max(1), ow.max(1)]);
        let total = cols
            .and_then(|cols| cols.checked_mul(2))
            .zip(weight.and_then(|w| w.checked_add(self.out)?.checked_mul(7)))
            .and_then(|(cols, gradients)| cols.checked_add(gradients))
            .zip(output);
        if total.is_none() {
            return Err(OpError::call(format!(
                "this transposed convolution's buffers ({} x {kh} x {kw} x {h} x {w} columns, a {}x{oh}x{ow} output) would not fit in memory: is a size mistyped?",
                self.out / g,
                self.out
            )));
        }
        Ok(ValueInfo {
            shape: Shape(vec![
                inputs[0].shape.0[0],
                Dim::Fixed(self.out),
                out_h,
                out_w,
            ]),
            kind: ValueKind::Float,
        })
    }
    fn layer(&self, inputs: &[&ValueInfo]) -> Option<LayerSpec> {
        let c = in_channels(inputs);
        let (o, (kh, kw), bias, g) = (self.out, self.kernel, self.bias, self.groups);
        Some(conv_layer(
            vec![c, o / g, kh, kw],
            bias.then_some(o),
            quote!(::kiln::layers::ConvTranspose2d<F>),
            quote!(::kiln::layers::ConvTranspose2d::new(#c, #o, (#kh, #kw), #g, #bias, rng)),
            quote!(::kiln::layers::ConvTranspose2d::zeros(#c, #o, (#kh, #kw), #g, #bias)),
        ))
    }
    fn scratch(&self, inputs: &[&ValueInfo], _output: &ValueInfo) -> Vec<ScratchSpec> {
        let c = in_channels(inputs);
        let shape = &inputs[0].shape.0;
        let layer = *self;
        sample_scratch(c, shape[2], shape[3], move |dims| layer.geometry_expr(dims))
    }
    fn backward_reads(&self) -> Reads {
        Reads {
            inputs: vec![true],
            output: false,
        }
    }
    fn forward(&self, cx: &ForwardCx) -> TokenStream {
        let setup = self.geometry_tokens(&cx.inputs[0].dims);
        let x = &cx.inputs[0].data;
        conv_forward_call(cx, x, setup, quote!(conv_transpose2d_forward))
    }
    fn backward(&self, cx: &BackwardCx) -> TokenStream {
        let setup = self.geometry_tokens(&cx.inputs[0].dims);
        let (x, dx) = (&cx.inputs[0].data, input_grad(cx));
        conv_backward_call(cx, x, &dx, setup, quote!(conv_transpose2d_backward))
    }
}

/// The layer of either convolution: its weight (`dims` in PyTorch's layout), a bias of
/// `bias` values if it has one (the output channels), the runtime type and its initialisers.
fn conv_layer(
    dims: Vec<usize>,
    bias: Option<usize>,
    ty: TokenStream,
    init: TokenStream,
    zeros: TokenStream,
) -> LayerSpec {
    let mut params = vec![ParamSpec {
        access: None,
        suffix: "weight",
        optional: false,
        dims,
    }];
    if let Some(len) = bias {
        params.push(ParamSpec {
            access: None,
            suffix: "bias",
            optional: true,
            dims: vec![len],
        });
    }
    LayerSpec {
        ty,
        init,
        zeros,
        params,
        buffers: Vec::new(),
        nested: None,
    }
}

/// The scratch of either convolution: the runtime owns the formula (im2col matrices per
/// thread, partial gradients), given the geometry of one sample (it does not depend on the
/// batch).
fn conv_scratch(geometry: TokenStream) -> Vec<ScratchSpec> {
    vec![ScratchSpec {
        suffix: "cols",
        len: ScratchLen::Runtime(quote!(#geometry.scratch_len())),
    }]
}

/// The scratch of either convolution on one sample of `c` channels, `h` by `w`, whose geometry
/// `geometry` writes from the sample's dims: sized at compile time when both extents are
/// fixed, otherwise at run time for the extents at hand.
fn sample_scratch(
    c: usize,
    h: Dim,
    w: Dim,
    geometry: impl Fn(&[TokenStream]) -> TokenStream + 'static,
) -> Vec<ScratchSpec> {
    if let (Dim::Fixed(h), Dim::Fixed(w)) = (h, w) {
        return conv_scratch(geometry(&literal_dims([1, c, h, w])));
    }
    vec![ScratchSpec {
        suffix: "cols",
        len: ScratchLen::OfDims(Box::new(move |dim| {
            let [one, c] = literal_dims([1, c]).try_into().expect("two dims");
            let geometry = geometry(&[one, c, dim(h), dim(w)]);
            quote!(#geometry.scratch_len())
        })),
    }]
}

/// Integer literals for the dims of a geometry expression.
fn literal_dims<const N: usize>(dims: [usize; N]) -> Vec<TokenStream> {
    dims.iter()
        .map(|&d| {
            let d = proc_macro2::Literal::usize_unsuffixed(d);
            quote!(#d)
        })
        .collect()
}

/// `kernel(x, weight, bias, &geometry, y, cols)` of `kiln::kernels::conv`, after `setup`
/// (which binds the geometry).
fn conv_forward_call(
    cx: &ForwardCx,
    x: &TokenStream,
    setup: TokenStream,
    kernel: TokenStream,
) -> TokenStream {
    let geometry = super::geometry_ident();
    let (y, w, cols) = (&cx.output.data, &cx.params[0], &cx.scratch[0]);
    let b = match cx.params.get(1) {
        Some(b) => quote!(Some(#b)),
        None => quote!(None),
    };
    quote! {
        #setup
        ::kiln::kernels::conv::#kernel(#x, #w, #b, &#geometry, #y, #cols);
    }
}

/// Where a convolution's input gradient goes: `Some((dx, accumulate))`, or `None` when the
/// input needs none.
fn input_grad(cx: &BackwardCx) -> TokenStream {
    cx.input_grad(0)
}

/// `kernel(x, dy, weight, &geometry, dweight, dbias, dx, cols)` of `kiln::kernels::conv`,
/// after `setup`.
fn conv_backward_call(
    cx: &BackwardCx,
    x: &TokenStream,
    dx: &TokenStream,
    setup: TokenStream,
    kernel: TokenStream,
) -> TokenStream {
    let geometry = super::geometry_ident();
    let (dy, w, cols) = (&cx.d_output, &cx.params[0], &cx.scratch[0]);
    // A frozen layer's step runs only for the input gradient: its own are not computed.
    let (dw, trains_w) = (&cx.param_grads[0], &cx.param_trainable[0]);
    let dw = quote!(#trains_w.then_some(#dw));
    let db = match (cx.param_grads.get(1), cx.param_trainable.get(1)) {
        (Some(db), Some(trains_b)) => quote!(#trains_b.then_some(#db)),
        _ => quote!(None),
    };
    quote! {
        #setup
        ::kiln::kernels::conv::#kernel(#x, #dy, #w, &#geometry, #dw, #db, #dx, #cols);
    }
}
