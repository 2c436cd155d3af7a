//! `max_pool2d(x, k)` and `avg_pool2d(x, k)` (or `kernel = (kh, kw), stride = s`, `padding =
//! p`, `ceil_mode = true`, and for the average `count_include_pad = false`): pooling over NCHW
//! windows with PyTorch's output size and padding rules. The stride defaults to the kernel, as
//! in PyTorch. `adaptive_avg_pool2d(x, (oh, ow))` (or `n` for `(n, n)`) averages PyTorch's
//! adaptive windows and `adaptive_max_pool2d` takes their maxima; with size 1 they are global
//! average and max pooling. Heights, widths and lengths may be symbolic (see
//! [`pool_extent`]); an adaptive pooling takes any and returns its fixed size.

use super::conv::spatial_input;
use super::{BackwardCx, Built, CallArgs, ForwardCx, Kernel, OpError, OpSpec, Reads};
use crate::ast;
use crate::ir::{Dim, Shape, ValueInfo, ValueKind};
use proc_macro2::TokenStream;
use quote::quote;

/// The registry entry of the poolings.
pub struct PoolSpec {
    max: bool,
    /// `max_pool1d` / `avg_pool1d` on `[B, C, L]`, run as 2-d poolings of height 1.
    one_d: bool,
}
/// `max_pool2d`.
pub static MAX_POOL2D: PoolSpec = PoolSpec {
    max: true,
    one_d: false,
};
/// `avg_pool2d`.
pub static AVG_POOL2D: PoolSpec = PoolSpec {
    max: false,
    one_d: false,
};
/// `max_pool1d`.
pub static MAX_POOL1D: PoolSpec = PoolSpec {
    max: true,
    one_d: true,
};
/// `avg_pool1d`.
pub static AVG_POOL1D: PoolSpec = PoolSpec {
    max: false,
    one_d: true,
};

fn pool_name(max: bool, one_d: bool) -> &'static str {
    match (max, one_d) {
        (true, false) => "max_pool2d",
        (false, false) => "avg_pool2d",
        (true, true) => "max_pool1d",
        (false, true) => "avg_pool1d",
    }
}

impl PoolSpec {
    /// Option `key = n` (`key = (h, w)` in 2-d): in 1-d a single integer, as `(1, n)`.
    fn extent(
        &self,
        args: &mut CallArgs,
        key: &'static str,
        min: u64,
    ) -> syn::Result<Option<(usize, usize)>> {
        if self.one_d {
            if let Some(ast::Expr::Tuple(_, span)) = args.option_expr(key) {
                return Err(syn::Error::new(
                    *span,
                    format!(
                        "`{}` takes one integer for `{key}`, as in `{key} = 2`, not a pair",
                        self.name()
                    ),
                ));
            }
        }
        let v = args.opt_pair(key, min)?;
        Ok(if self.one_d {
            // No padding along the height, a window and stride of 1.
            v.map(|(n, _)| (usize::from(min > 0), n))
        } else {
            v
        })
    }
}

impl OpSpec for PoolSpec {
    fn name(&self) -> &'static str {
        pool_name(self.max, self.one_d)
    }
    fn usage(&self) -> &'static str {
        match (self.max, self.one_d) {
            (true, false) => "max_pool2d(x, 2)` or `max_pool2d(x, kernel = 3, stride = 2, padding = 1, ceil_mode = true)",
            (false, false) => "avg_pool2d(x, 2)` or `avg_pool2d(x, kernel = 3, stride = 2, padding = 1, ceil_mode = true, count_include_pad = false)",
            (true, true) => "max_pool1d(x, 2)` or `max_pool1d(x, kernel = 3, stride = 2, padding = 1, ceil_mode = true)",
            (false, true) => "avg_pool1d(x, 2)` or `avg_pool1d(x, kernel = 3, stride = 2, padding = 1, ceil_mode = true, count_include_pad = false)",
        }
    }
    fn build(&self, args: &mut CallArgs) -> syn::Result<Built> {
        args.positional(1, 2)?;
        args.tensor(0);
        let positional = if !args.has(1) {
            None
        } else if self.one_d {
            Some((1, args.int(1, "the kernel size")?))
        } else {
            Some(args.pair(1, "the kernel size")?)
        };
        let option = self.extent(args, "kernel", 1)?;
        let stride = self.extent(args, "stride", 1)?;
        let padding_span = args.option_expr("padding").map(|e| e.span());
        let padding = self.extent(args, "padding", 0)?.unwrap_or((0, 0));
        let ceil_mode = args.opt_bool("ceil_mode", false)?;
        let count_include_pad = if self.max {
            if let Some(e) = args.option_expr("count_include_pad") {
                return Err(syn::Error::new(
                    e.span(),
                    format!("`count_include_pad` is an option of `{}`: max pooling never selects padding, so there is nothing to count", pool_name(false, self.one_d)),
                ));
            }
            true
        } else {
            args.opt_bool("count_include_pad", true)?
        };
        args.finish()?;
        let kernel = match (positional, option) {
            (Some(_), Some(_)) => {
                return Err(syn::Error::new(
                    args.span(),
                    format!("give the kernel size once: `{}(x, 2)`", self.name()),
                ))
            }
            (Some(k), None) | (None, Some(k)) => k,
            (None, None) => {
                return Err(syn::Error::new(
                    args.span(),
                    format!(
                        "`{}` needs its kernel size, as in `{}(x, 2)`",
                        self.name(),
                        self.name()
                    ),
                ))
            }
        };
        let ((kh, kw), (ph, pw)) = (kernel, padding);
        if self.one_d && pw > kw / 2 {
            return Err(syn::Error::new(
                padding_span.unwrap_or_else(|| args.span()),
                format!(
                    "`padding = {pw}` is more than half the kernel {kw}: PyTorch allows at most {} (a window must not lie wholly in the padding); use a smaller padding or a larger kernel",
                    kw / 2
                ),
            ));
        }
        if ph > kh / 2 || pw > kw / 2 {
            return Err(syn::Error::new(
                padding_span.unwrap_or_else(|| args.span()),
                format!(
                    "`padding = {}` is more than half the kernel {:?}: PyTorch allows at most ({}, {}) (a window must not lie wholly in the padding); use a smaller padding or a larger kernel",
                    if ph == pw { ph.to_string() } else { format!("({ph}, {pw})") },
                    kernel,
                    kh / 2,
                    kw / 2
                ),
            ));
        }
        Ok(Built::Kernel(Box::new(Pool {
            max: self.max,
            one_d: self.one_d,
            kernel,
            stride: stride.unwrap_or(kernel),
            padding,
            ceil_mode,
            count_include_pad,
        })))
    }
}

/// A pooling op.
pub struct Pool {
    max: bool,
    /// A 1-d pooling: the input `[B, C, L]` is read as `[B, C, 1, L]`.
    one_d: bool,
    kernel: (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
    ceil_mode: bool,
    count_include_pad: bool,
}

/// PyTorch's `pooling_output_shape` (no dilation), for `padded ≥ kernel`.
fn out_extent(input: usize, kernel: usize, stride: usize, pad: usize, ceil_mode: bool) -> usize {
    let span = input.saturating_add(2 * pad) - kernel;
    let mut out = if ceil_mode {
        span.div_ceil(stride) + 1
    } else {
        span / stride + 1
    };
    if ceil_mode && (out - 1) * stride >= input.saturating_add(pad) {
        out -= 1;
    }
    out
}

/// [`out_extent`] of a fixed or symbolic input extent. For a symbolic one the stride must
/// divide its multiple of the symbol (see [`sliding_extent`](super::conv::sliding_extent));
/// `ceil_mode`'s rule that no window starts in the padding then compares two formulas with
/// the same multiple of the symbol, which their constants decide.
fn pool_extent(
    op: &str,
    what: &str,
    input: Dim,
    (kernel, stride, pad): (usize, usize, usize),
    ceil_mode: bool,
    symbols: &[String],
) -> Result<Dim, OpError> {
    if let Dim::Fixed(n) = input {
        return Ok(Dim::Fixed(out_extent(n, kernel, stride, pad, ceil_mode)));
    }
    let window = super::conv::Window {
        span: kernel,
        stride,
        pads: pad.saturating_mul(2),
        ceil: ceil_mode,
    };
    let out = super::conv::sliding_extent(op, what, input, window, symbols)?;
    if let (true, Some((_, _, in_offset)), Some((_, _, out_offset))) =
        (ceil_mode, input.linear(), out.linear())
    {
        // (out − 1)·stride ≥ input + pad, the symbol's terms being equal on both sides.
        if (out_offset - 1).saturating_mul(stride as i64) >= in_offset.saturating_add(pad as i64) {
            return Ok(out.plus(-1));
        }
    }
    Ok(out)
}

impl Pool {
    fn geometry_tokens(&self, x_dims: &[TokenStream]) -> TokenStream {
        let geometry = super::geometry_ident();
        let one = quote!(1);
        let (batch, c, h, w) = if self.one_d {
            (&x_dims[0], &x_dims[1], &one, &x_dims[2])
        } else {
            (&x_dims[0], &x_dims[1], &x_dims[2], &x_dims[3])
        };
        let ((kh, kw), (sh, sw), (ph, pw)) = (self.kernel, self.stride, self.padding);
        let (ceil_mode, count_include_pad) = (self.ceil_mode, self.count_include_pad);
        quote! {
            let #geometry = ::kiln::kernels::pool::Pool2dGeometry {
                batch: #batch,
                channels: #c,
                in_h: #h,
                in_w: #w,
                kernel_h: #kh,
                kernel_w: #kw,
                stride_h: #sh,
                stride_w: #sw,
                pad_h: #ph,
                pad_w: #pw,
                ceil_mode: #ceil_mode,
                count_include_pad: #count_include_pad,
            };
        }
    }
}

impl Kernel for Pool {
    fn onnx(&self, cx: &mut crate::onnx::OnnxCx) -> Result<(), String> {
        use crate::onnx::Attr::{Int, Ints};
        let (k, s, p) = (self.kernel, self.stride, self.padding);
        let mut attrs = if self.one_d {
            vec![
                ("kernel_shape", Ints(vec![k.1 as i64])),
                ("strides", Ints(vec![s.1 as i64])),
                ("pads", Ints(vec![p.1 as i64, p.1 as i64])),
            ]
        } else {
            vec![
                ("kernel_shape", Ints(vec![k.0 as i64, k.1 as i64])),
                ("strides", Ints(vec![s.0 as i64, s.1 as i64])),
                (
                    "pads",
                    Ints(vec![p.0 as i64, p.1 as i64, p.0 as i64, p.1 as i64]),
                ),
            ]
        };
        attrs.push(("ceil_mode", Int(i64::from(self.ceil_mode))));
        let op = if self.max {
            "MaxPool"
        } else {
            attrs.push(("count_include_pad", Int(i64::from(self.count_include_pad))));
            "AveragePool"
        };
        let x = cx.inputs[0].clone();
        cx.finish(op, vec![x], attrs);
        Ok(())
    }
    fn name(&self) -> &'static str {
        pool_name(self.max, self.one_d)
    }
    fn describe(&self) -> String {
        let mut text = if self.one_d {
            format!("kernel={}, stride={}", self.kernel.1, self.stride.1)
        } else {
            format!("kernel={:?}, stride={:?}", self.kernel, self.stride)
        };
        if self.padding != (0, 0) {
            if self.one_d {
                text += &format!(", padding={}", self.padding.1);
            } else {
                text += &format!(", padding={:?}", self.padding);
            }
        }
        if self.ceil_mode {
            text += ", ceil_mode";
        }
        if !self.count_include_pad {
            text += ", count_include_pad=false";
        }
        text
    }
    fn infer(&self, inputs: &[&ValueInfo], symbols: &[String]) -> Result<ValueInfo, OpError> {
        let (c, h, w) = if self.one_d {
            let (c, l) = super::conv::sequence_input(self.name(), inputs[0], symbols)?;
            (c, Dim::Fixed(1), l)
        } else {
            spatial_input(self.name(), inputs[0], symbols)?
        };
        let ((kh, kw), (sh, sw), (ph, pw)) = (self.kernel, self.stride, self.padding);
        // Saturating: a padding near `usize::MAX / 2` must give an error, not an overflow. A
        // symbolic extent is checked at run time (the call boundary keeps the output at least
        // 1, which is the window fitting).
        let (padded_h, padded_w) = (
            h.fixed_or_zero().saturating_add(2 * ph),
            w.fixed_or_zero().saturating_add(2 * pw),
        );
        if (h.is_fixed() && kh > padded_h) || (w.is_fixed() && kw > padded_w) {
            let (h, w) = (h.display(symbols), w.display(symbols));
            let padded = if (ph, pw) == (0, 0) {
                String::new()
            } else {
                format!(" (padded to {padded_h}x{padded_w})")
            };
            let message = if self.one_d {
                let padded = if pw == 0 {
                    String::new()
                } else {
                    format!(" (padded to {padded_w})")
                };
                format!(
                    "the pooling window {kw} does not fit in the input {} of length {w}{padded}: use a smaller kernel, or pool earlier",
                    inputs[0].shape.display(symbols)
                )
            } else {
                format!(
                    "the pooling window ({kh}, {kw}) does not fit in the {h}x{w} input {}{padded}: use a smaller kernel, or pool earlier",
                    inputs[0].shape.display(symbols)
                )
            };
            return Err(OpError::input(0, message));
        }
        let name = self.name();
        let extent =
            |what, n, k, s, p| pool_extent(name, what, n, (k, s, p), self.ceil_mode, symbols);
        let ow = extent(if self.one_d { "length" } else { "width" }, w, kw, sw, pw)?;
        if self.one_d {
            return Ok(ValueInfo {
                shape: Shape(vec![inputs[0].shape.0[0], Dim::Fixed(c), ow]),
                kind: ValueKind::Float,
            });
        }
        let oh = extent("height", h, kh, sh, ph)?;
        Ok(ValueInfo {
            shape: Shape(vec![inputs[0].shape.0[0], Dim::Fixed(c), oh, ow]),
            kind: ValueKind::Float,
        })
    }
    fn backward_reads(&self) -> Reads {
        Reads {
            inputs: vec![self.max],
            output: self.max,
        }
    }
    fn forward(&self, cx: &ForwardCx) -> TokenStream {
        let (setup, geometry) = (
            self.geometry_tokens(&cx.inputs[0].dims),
            super::geometry_ident(),
        );
        let (x, y) = (&cx.inputs[0].data, &cx.output.data);
        let f = if self.max {
            quote!(max_pool2d_forward)
        } else {
            quote!(avg_pool2d_forward)
        };
        quote! {
            #setup
            ::kiln::kernels::pool::#f(#x, &#geometry, #y);
        }
    }
    fn backward(&self, cx: &BackwardCx) -> TokenStream {
        let Some(dx) = &cx.d_inputs[0] else {
            return TokenStream::new();
        };
        let (setup, geometry) = (
            self.geometry_tokens(&cx.inputs[0].dims),
            super::geometry_ident(),
        );
        let (dy, d, acc) = (&cx.d_output, &dx.data, dx.accumulate);
        if self.max {
            let (x, y) = (&cx.inputs[0].data, &cx.output.data);
            quote! {
                #setup
                ::kiln::kernels::pool::max_pool2d_backward(#x, #y, #dy, &#geometry, #d, #acc);
            }
        } else {
            quote! {
                #setup
                ::kiln::kernels::pool::avg_pool2d_backward(#dy, &#geometry, #d, #acc);
            }
        }
    }
}

/// The registry entry of an adaptive pooling.
pub struct AdaptiveSpec {
    max: bool,
}
/// `adaptive_avg_pool2d`.
pub static ADAPTIVE_AVG_POOL2D: AdaptiveSpec = AdaptiveSpec { max: false };
/// `adaptive_max_pool2d`.
pub static ADAPTIVE_MAX_POOL2D: AdaptiveSpec = AdaptiveSpec { max: true };

fn adaptive_name(max: bool) -> &'static str {
    if max {
        "adaptive_max_pool2d"
    } else {
        "adaptive_avg_pool2d"
    }
}

impl OpSpec for AdaptiveSpec {
    fn name(&self) -> &'static str {
        adaptive_name(self.max)
    }
    fn usage(&self) -> &'static str {
        if self.max {
            "adaptive_max_pool2d(x, (oh, ow))` or `adaptive_max_pool2d(x, 1)"
        } else {
            "adaptive_avg_pool2d(x, (oh, ow))` or `adaptive_avg_pool2d(x, 1)"
        }
    }
    fn build(&self, args: &mut CallArgs) -> syn::Result<Built> {
        args.positional(2, 2)?;
        args.tensor(0);
        let size = args.pair(1, "the output size")?;
        args.finish()?;
        Ok(Built::Kernel(Box::new(AdaptivePool {
            size,
            max: self.max,
        })))
    }
}

/// An adaptive average or max pooling to a fixed output size.
pub struct AdaptivePool {
    size: (usize, usize),
    max: bool,
}

impl AdaptivePool {
    fn geometry_tokens(&self, x_dims: &[TokenStream]) -> TokenStream {
        let geometry = super::geometry_ident();
        let (batch, c, h, w) = (&x_dims[0], &x_dims[1], &x_dims[2], &x_dims[3]);
        let (oh, ow) = self.size;
        quote! {
            let #geometry = ::kiln::kernels::pool::AdaptivePool2dGeometry {
                batch: #batch,
                channels: #c,
                in_h: #h,
                in_w: #w,
                out_h: #oh,
                out_w: #ow,
            };
        }
    }
}

impl Kernel for AdaptivePool {
    fn onnx(&self, cx: &mut crate::onnx::OnnxCx) -> Result<(), String> {
        use crate::onnx::Attr::Ints;
        let x = cx.inputs[0].clone();
        let (global, tiled) = if self.max {
            ("GlobalMaxPool", "MaxPool")
        } else {
            ("GlobalAveragePool", "AveragePool")
        };
        if self.size == (1, 1) {
            cx.finish(global, vec![x], vec![]);
            return Ok(());
        }
        let dims = &cx.input_infos[0].shape.0;
        let (oh, ow) = self.size;
        match (dims[2], dims[3]) {
            (Dim::Fixed(h), Dim::Fixed(w)) if h % oh == 0 && w % ow == 0 => {
                // Equal windows that tile the input: an ordinary pooling.
                let (kh, kw) = ((h / oh) as i64, (w / ow) as i64);
                cx.finish(
                    tiled,
                    vec![x],
                    vec![("kernel_shape", Ints(vec![kh, kw])), ("strides", Ints(vec![kh, kw]))],
                );
                Ok(())
            }
            _ => Err(crate::onnx::unsupported(
                adaptive_name(self.max),
                &format!(
                    "ONNX has no adaptive pooling, and an input of {} does not divide into {oh}x{ow} equal windows (a global pooling, size 1, always exports)",
                    cx.input_infos[0].shape.display(cx.symbols)
                ),
            )),
        }
    }
    fn name(&self) -> &'static str {
        adaptive_name(self.max)
    }
    fn describe(&self) -> String {
        format!("size={:?}", self.size)
    }
    fn infer(&self, inputs: &[&ValueInfo], symbols: &[String]) -> Result<ValueInfo, OpError> {
        let (c, _, _) = spatial_input(self.name(), inputs[0], symbols)?;
        let (oh, ow) = self.size;
        Ok(ValueInfo {
            shape: Shape(vec![
                inputs[0].shape.0[0],
                Dim::Fixed(c),
                Dim::Fixed(oh),
                Dim::Fixed(ow),
            ]),
            kind: ValueKind::Float,
        })
    }
    fn backward_reads(&self) -> Reads {
        // Max pooling finds each window's maximum again in its input.
        Reads {
            inputs: vec![self.max],
            output: false,
        }
    }
    fn forward(&self, cx: &ForwardCx) -> TokenStream {
        let (setup, geometry) = (
            self.geometry_tokens(&cx.inputs[0].dims),
            super::geometry_ident(),
        );
        let (x, y) = (&cx.inputs[0].data, &cx.output.data);
        let f = if self.max {
            quote!(adaptive_max_pool2d_forward)
        } else {
            quote!(adaptive_avg_pool2d_forward)
        };
        quote! {
            #setup
            ::kiln::kernels::pool::#f(#x, &#geometry, #y);
        }
    }
    fn backward(&self, cx: &BackwardCx) -> TokenStream {
        let Some(dx) = &cx.d_inputs[0] else {
            return TokenStream::new();
        };
        let (setup, geometry) = (
            self.geometry_tokens(&cx.inputs[0].dims),
            super::geometry_ident(),
        );
        let (dy, d, acc) = (&cx.d_output, &dx.data, dx.accumulate);
        if self.max {
            let x = &cx.inputs[0].data;
            quote! {
                #setup
                ::kiln::kernels::pool::adaptive_max_pool2d_backward(#x, #dy, &#geometry, #d, #acc);
            }
        } else {
            quote! {
                #setup
                ::kiln::kernels::pool::adaptive_avg_pool2d_backward(#dy, &#geometry, #d, #acc);
            }
        }
    }
}

/// Used by `CallArgs::pair` for positional pairs.
pub(crate) fn literal_pair(e: &ast::Expr, what: &str) -> syn::Result<(usize, usize)> {
    let one = |e: &ast::Expr| match e {
        ast::Expr::Int(v, s) if *v >= 1 => {
            usize::try_from(*v).map_err(|_| syn::Error::new(*s, format!("{what} is too large")))
        }
        other => Err(syn::Error::new(
            other.span(),
            format!("{what} is a positive integer or a pair `(height, width)`"),
        )),
    };
    match e {
        ast::Expr::Tuple(items, s) => match items.as_slice() {
            [h, w] => Ok((one(h)?, one(w)?)),
            _ => Err(syn::Error::new(
                *s,
                format!("{what} is a pair `(height, width)`"),
            )),
        },
        single => one(single).map(|v| (v, v)),
    }
}
