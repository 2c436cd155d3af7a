//! `max_pool2d(x, k)` and `avg_pool2d(x, k)` (or `kernel = (kh, kw), stride = s`): pooling
//! over NCHW windows without padding, with PyTorch's floor output size. The stride defaults
//! to the kernel, as in PyTorch.

use super::conv::spatial_input;
use super::{BackwardCx, Built, CallArgs, ForwardCx, Kernel, OpError, OpSpec, Reads};
use crate::ast;
use crate::ir::{Dim, Shape, ValueInfo, ValueKind};
use proc_macro2::TokenStream;
use quote::quote;

/// The registry entry of both poolings.
pub struct PoolSpec {
    max: bool,
}
/// `max_pool2d`.
pub static MAX_POOL2D: PoolSpec = PoolSpec { max: true };
/// `avg_pool2d`.
pub static AVG_POOL2D: PoolSpec = PoolSpec { max: false };

impl OpSpec for PoolSpec {
    fn name(&self) -> &'static str {
        if self.max {
            "max_pool2d"
        } else {
            "avg_pool2d"
        }
    }
    fn usage(&self) -> &'static str {
        if self.max {
            "max_pool2d(x, 2)` or `max_pool2d(x, kernel = (2, 2), stride = 2)"
        } else {
            "avg_pool2d(x, 2)` or `avg_pool2d(x, kernel = (2, 2), stride = 2)"
        }
    }
    fn build(&self, args: &mut CallArgs) -> syn::Result<Built> {
        args.positional(1, 2)?;
        args.tensor(0);
        let positional = if args.has(1) {
            Some(args.pair(1, "the kernel size")?)
        } else {
            None
        };
        let option = args.opt_pair("kernel", 1)?;
        let stride = args.opt_pair("stride", 1)?;
        args.finish()?;
        let kernel = match (positional, option) {
            (Some(_), Some(_)) => {
                return Err(syn::Error::new(
                    args.span(),
                    "give the kernel size once: `max_pool2d(x, 2)`",
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
        Ok(Built::Kernel(Box::new(Pool {
            max: self.max,
            kernel,
            stride: stride.unwrap_or(kernel),
        })))
    }
}

/// A pooling op.
pub struct Pool {
    max: bool,
    kernel: (usize, usize),
    stride: (usize, usize),
}

impl Pool {
    fn geometry_tokens(&self, x_dims: &[TokenStream]) -> TokenStream {
        let geometry = super::geometry_ident();
        let (batch, c, h, w) = (&x_dims[0], &x_dims[1], &x_dims[2], &x_dims[3]);
        let ((kh, kw), (sh, sw)) = (self.kernel, self.stride);
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
            };
        }
    }
}

impl Kernel for Pool {
    fn name(&self) -> &'static str {
        if self.max {
            "max_pool2d"
        } else {
            "avg_pool2d"
        }
    }
    fn describe(&self) -> String {
        format!("kernel={:?}, stride={:?}", self.kernel, self.stride)
    }
    fn infer(&self, inputs: &[&ValueInfo], symbols: &[String]) -> Result<ValueInfo, OpError> {
        let (c, h, w) = spatial_input(self.name(), inputs[0], symbols)?;
        let ((kh, kw), (sh, sw)) = (self.kernel, self.stride);
        if kh > h || kw > w {
            return Err(OpError::input(
                0,
                format!(
                    "the pooling window ({kh}, {kw}) does not fit in the {h}x{w} input {}: use a smaller kernel, or pool earlier",
                    inputs[0].shape.display(symbols)
                ),
            ));
        }
        let (oh, ow) = ((h - kh) / sh + 1, (w - kw) / sw + 1);
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
