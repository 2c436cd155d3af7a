//! `conv2d(x, out_channels, kernel = k, stride = s, padding = p, bias = true)` on NCHW input:
//! PyTorch's layout (`weight [out, in, kh, kw]`), default init and floor output size.
//! Kernel, stride and padding take an integer or a `(height, width)` pair.

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
        "conv2d(x, out_channels, kernel = 3, stride = 1, padding = 0)"
    }
    fn build(&self, args: &mut CallArgs) -> syn::Result<Built> {
        args.positional(2, 2)?;
        args.tensor(0);
        let out = args.int(1, "the number of output channels")?;
        let kernel = args.opt_pair("kernel", 1)?;
        let stride = args.opt_pair("stride", 1)?.unwrap_or((1, 1));
        let padding = args.opt_pair("padding", 0)?.unwrap_or((0, 0));
        let bias = args.opt_bool("bias", true)?;
        args.finish()?;
        let Some(kernel) = kernel else {
            return Err(syn::Error::new(
                args.span(),
                "`conv2d` needs its kernel size: add `kernel = 3` (or `kernel = (3, 2)` for height 3, width 2)",
            ));
        };
        Ok(Built::Kernel(Box::new(Conv2d {
            out,
            kernel,
            stride,
            padding,
            bias,
        })))
    }
}

/// A 2-d convolution layer.
pub struct Conv2d {
    out: usize,
    kernel: (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
    bias: bool,
}

/// The fixed `[C, H, W]` of an NCHW input, or an error saying what is wrong.
pub(crate) fn spatial_input(
    op: &str,
    info: &ValueInfo,
    symbols: &[String],
) -> Result<(usize, usize, usize), OpError> {
    require_float(op, 0, info)?;
    let shape = &info.shape;
    let shown = shape.display(symbols);
    if shape.rank() != 4 {
        // A flat [batch, n] with n a square is most likely a flattened one-channel image.
        let hint = match shape.0.as_slice() {
            [batch, Dim::Fixed(n)] => {
                let side = (*n as f64).sqrt().round() as usize;
                let batch = Shape(vec![*batch]).display(symbols).to_string();
                let batch = batch.trim_matches(['[', ']']);
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
    let fixed = |i: usize| {
        match shape.0[i] {
        Dim::Fixed(n) => Ok(n),
        Dim::Symbol(s) => Err(OpError::input(
            0,
            format!(
                "`{op}` needs fixed channels, height and width, but dim {i} of {shown} is the symbolic `{}`: declare it as a number",
                symbols[s]
            ),
        )),
    }
    };
    Ok((fixed(1)?, fixed(2)?, fixed(3)?))
}

impl Conv2d {
    fn geometry(&self, inputs: &[&ValueInfo]) -> (usize, usize, usize, usize, usize) {
        let shape = &inputs[0].shape.0;
        let get = |i: usize| match shape.get(i) {
            Some(Dim::Fixed(n)) => *n,
            _ => 0,
        };
        let (c, h, w) = (get(1), get(2), get(3));
        // Saturating: a huge padding must give a huge shape (rejected by the shape stage),
        // not an overflow panic in the macro.
        let padded = |n: usize, p: usize| n.saturating_add(p.saturating_mul(2));
        let oh = padded(h, self.padding.0).saturating_sub(self.kernel.0) / self.stride.0 + 1;
        let ow = padded(w, self.padding.1).saturating_sub(self.kernel.1) / self.stride.1 + 1;
        (c, h, w, oh, ow)
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
            }
        }
    }
}

impl Kernel for Conv2d {
    fn name(&self) -> &'static str {
        "conv2d"
    }
    fn describe(&self) -> String {
        format!(
            "out={}, kernel={:?}, stride={:?}, padding={:?}{}",
            self.out,
            self.kernel,
            self.stride,
            self.padding,
            if self.bias { "" } else { ", bias=false" }
        )
    }
    fn has_params(&self) -> bool {
        true
    }
    fn infer(&self, inputs: &[&ValueInfo], symbols: &[String]) -> Result<ValueInfo, OpError> {
        let (_, h, w) = spatial_input("conv2d", inputs[0], symbols)?;
        let ((kh, kw), (ph, pw)) = (self.kernel, self.padding);
        let (padded_h, padded_w) = (
            h.saturating_add(ph.saturating_mul(2)),
            w.saturating_add(pw.saturating_mul(2)),
        );
        if kh > padded_h || kw > padded_w {
            return Err(OpError::input(
                0,
                format!(
                    "the kernel ({kh}, {kw}) is larger than the padded input: {h}x{w} plus padding ({ph}, {pw}) is {}x{}; use a smaller kernel or more padding",
                    padded_h,
                    padded_w
                ),
            ));
        }
        let (c, _, _, oh, ow) = self.geometry(inputs);
        // The scratch (`scratch`) holds two im2col matrices of c * kh * kw * oh * ow values
        // and up to 7 weight gradients.
        let cols = [c, kh, kw, oh, ow]
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d));
        let weight = [self.out, c, kh, kw]
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d));
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
                Dim::Fixed(oh),
                Dim::Fixed(ow),
            ]),
            kind: ValueKind::Float,
        })
    }
    fn layer(&self, inputs: &[&ValueInfo]) -> Option<LayerSpec> {
        let (c, ..) = self.geometry(inputs);
        let (o, (kh, kw), bias) = (self.out, self.kernel, self.bias);
        let mut params = vec![ParamSpec {
            access: None,
            suffix: "weight",
            optional: false,
            dims: vec![o, c, kh, kw],
        }];
        if bias {
            params.push(ParamSpec {
                access: None,
                suffix: "bias",
                optional: true,
                dims: vec![o],
            });
        }
        Some(LayerSpec {
            ty: quote!(::kiln::layers::Conv2d<F>),
            init: quote!(::kiln::layers::Conv2d::new(#c, #o, (#kh, #kw), #bias, rng)),
            zeros: quote!(::kiln::layers::Conv2d::zeros(#c, #o, (#kh, #kw), #bias)),
            params,
            buffers: Vec::new(),
            nested: None,
        })
    }
    fn scratch(&self, inputs: &[&ValueInfo], _output: &ValueInfo) -> Vec<ScratchSpec> {
        // The runtime owns the formula (im2col matrices per thread, partial gradients); it
        // does not depend on the batch.
        let (c, h, w, ..) = self.geometry(inputs);
        let dims: Vec<TokenStream> = [1, c, h, w]
            .iter()
            .map(|&d| {
                let d = proc_macro2::Literal::usize_unsuffixed(d);
                quote!(#d)
            })
            .collect();
        let geometry = self.geometry_expr(&dims);
        vec![ScratchSpec {
            suffix: "cols",
            len: ScratchLen::Runtime(quote!(#geometry.scratch_len())),
        }]
    }
    fn backward_reads(&self) -> Reads {
        Reads {
            inputs: vec![true],
            output: false,
        }
    }
    fn forward(&self, cx: &ForwardCx) -> TokenStream {
        let (setup, geometry) = (
            self.geometry_tokens(&cx.inputs[0].dims),
            super::geometry_ident(),
        );
        let (x, y, w, cols) = (
            &cx.inputs[0].data,
            &cx.output.data,
            &cx.params[0],
            &cx.scratch[0],
        );
        let b = match cx.params.get(1) {
            Some(b) => quote!(Some(#b)),
            None => quote!(None),
        };
        quote! {
            #setup
            ::kiln::kernels::conv::conv2d_forward(#x, #w, #b, &#geometry, #y, #cols);
        }
    }
    fn backward(&self, cx: &BackwardCx) -> TokenStream {
        let (setup, geometry) = (
            self.geometry_tokens(&cx.inputs[0].dims),
            super::geometry_ident(),
        );
        let (x, dy, w, cols) = (
            &cx.inputs[0].data,
            &cx.d_output,
            &cx.params[0],
            &cx.scratch[0],
        );
        let dw = &cx.param_grads[0];
        let db = match cx.param_grads.get(1) {
            Some(db) => quote!(Some(#db)),
            None => quote!(None),
        };
        let dx = match &cx.d_inputs[0] {
            Some(t) => {
                let (d, acc) = (&t.data, t.accumulate);
                quote!(Some((#d, #acc)))
            }
            None => quote!(None),
        };
        quote! {
            #setup
            ::kiln::kernels::conv::conv2d_backward(#x, #dy, #w, &#geometry, #dw, #db, #dx, #cols);
        }
    }
}
