//! `softmax(x)` and `log_softmax(x)` over the last axis, or over any axis with `axis = k`
//! (PyTorch's `dim`, negative from the back): `softmax(x, axis = 1)` on `[B, C, H, W]`
//! logits is the per-pixel class distribution. Both VJPs read only the output.

use super::{
    float_like, product_of, require_float, resolve_axis, BackwardCx, Built, CallArgs, ForwardCx,
    Kernel, OpError, OpSpec, Reads,
};
use crate::ir::ValueInfo;
use proc_macro2::TokenStream;
use quote::quote;
use std::cell::Cell;

/// The registry entry for both ops.
pub struct SoftmaxSpec {
    log: bool,
}
/// `softmax(x)`.
pub static SOFTMAX: SoftmaxSpec = SoftmaxSpec { log: false };
/// `log_softmax(x)`.
pub static LOG_SOFTMAX: SoftmaxSpec = SoftmaxSpec { log: true };

impl OpSpec for SoftmaxSpec {
    fn name(&self) -> &'static str {
        if self.log {
            "log_softmax"
        } else {
            "softmax"
        }
    }
    fn usage(&self) -> &'static str {
        if self.log {
            "log_softmax(x)` or `log_softmax(x, axis = 1)"
        } else {
            "softmax(x)` or `softmax(x, axis = 1)"
        }
    }
    fn build(&self, args: &mut CallArgs) -> syn::Result<Built> {
        args.positional(1, 1)?;
        args.tensor(0);
        let axis = args.opt_axis("axis")?;
        args.finish()?;
        Ok(Built::Kernel(Box::new(Softmax {
            log: self.log,
            axis,
            resolved: Cell::new(None),
        })))
    }
}

/// A (log-)softmax over one axis of its input, the last by default.
pub struct Softmax {
    log: bool,
    /// The axis as written (`axis = 1`, `axis = -2`), if given.
    axis: Option<i64>,
    /// The axis counted from the front once the input's rank is known, unless it is the last
    /// (which runs the row kernel, as a softmax without `axis` does).
    resolved: Cell<Option<usize>>,
}

impl Softmax {
    /// `(outer, n, inner)`: the input as `[outer, n, inner]` around the softmax axis `a`.
    fn sizes(dims: &[TokenStream], a: usize) -> (TokenStream, TokenStream, TokenStream) {
        (
            product_of(&dims[..a]),
            dims[a].clone(),
            product_of(&dims[a + 1..]),
        )
    }
}

impl Kernel for Softmax {
    fn decoding(&self, inputs: &[&ValueInfo]) -> super::Decoding {
        // Per position when the axis is neither the batch nor the time axis.
        let rank = inputs[0].shape.rank() as i64;
        let axis = match self.axis {
            Some(a) if a < 0 => rank + a,
            Some(a) => a,
            None => rank - 1,
        };
        super::Decoding::position_wise_if(rank >= 3 && axis >= 2)
    }
    fn onnx(&self, cx: &mut crate::onnx::OnnxCx) -> Result<(), String> {
        // Opset 13 and later: the softmax runs along `axis` alone.
        let op = if self.log { "LogSoftmax" } else { "Softmax" };
        let x = cx.inputs[0].clone();
        let axis = self.resolved.get().map_or(-1, |a| a as i64);
        cx.finish(op, vec![x], vec![("axis", crate::onnx::Attr::Int(axis))]);
        Ok(())
    }
    fn describe(&self) -> String {
        self.axis.map(|a| format!("axis={a}")).unwrap_or_default()
    }
    fn name(&self) -> &'static str {
        if self.log {
            "log_softmax"
        } else {
            "softmax"
        }
    }
    fn infer(&self, inputs: &[&ValueInfo], symbols: &[String]) -> Result<ValueInfo, OpError> {
        require_float(self.name(), 0, inputs[0])?;
        if inputs[0].shape.rank() == 0 {
            return Err(OpError::input(
                0,
                format!(
                    "`{}` needs at least one axis, but this is a scalar",
                    self.name()
                ),
            ));
        }
        if let Some(axis) = self.axis {
            let x = &inputs[0].shape;
            let shown = x.display(symbols).to_string();
            let a = resolve_axis(self.name(), axis, x.rank(), &shown)?;
            self.resolved.set((a + 1 < x.rank()).then_some(a));
        }
        Ok(float_like(inputs[0]))
    }
    fn backward_reads(&self) -> Reads {
        Reads {
            inputs: vec![false],
            output: true,
        }
    }
    fn forward(&self, cx: &ForwardCx) -> TokenStream {
        let (x, y) = (&cx.inputs[0].data, &cx.output.data);
        if let Some(a) = self.resolved.get() {
            let (outer, n, inner) = Self::sizes(&cx.output.dims, a);
            let f = if self.log {
                quote!(log_softmax_axis_forward)
            } else {
                quote!(softmax_axis_forward)
            };
            return quote! {
                ::kiln::kernels::softmax::#f(#x, #outer, #n, #inner, #y);
            };
        }
        let (len, cols) = (&cx.output.len, cx.output.dims.last());
        let f = if self.log {
            quote!(log_softmax_forward)
        } else {
            quote!(softmax_forward)
        };
        quote! {
            ::kiln::kernels::softmax::#f(#x, #len / #cols, #cols, #y);
        }
    }
    fn backward(&self, cx: &BackwardCx) -> TokenStream {
        let Some(dx) = &cx.d_inputs[0] else {
            return TokenStream::new();
        };
        let (y, dy, dxd, acc) = (&cx.output.data, &cx.d_output, &dx.data, dx.accumulate);
        if let Some(a) = self.resolved.get() {
            let (outer, n, inner) = Self::sizes(&cx.output.dims, a);
            let f = if self.log {
                quote!(log_softmax_axis_backward)
            } else {
                quote!(softmax_axis_backward)
            };
            return quote! {
                ::kiln::kernels::softmax::#f(#y, #dy, #outer, #n, #inner, #dxd, #acc);
            };
        }
        let (len, cols) = (&cx.output.len, cx.output.dims.last());
        let f = if self.log {
            quote!(log_softmax_backward)
        } else {
            quote!(softmax_backward)
        };
        quote! {
            ::kiln::kernels::softmax::#f(#y, #dy, #len / #cols, #cols, #dxd, #acc);
        }
    }
}
