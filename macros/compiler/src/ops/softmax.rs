//! `softmax(x)` and `log_softmax(x)` over the last axis. Both VJPs read only the output.

use super::{
    float_like, require_float, BackwardCx, Built, CallArgs, ForwardCx, Kernel, OpError, OpSpec,
    Reads,
};
use crate::ir::ValueInfo;
use proc_macro2::TokenStream;
use quote::quote;

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
            "log_softmax(x)"
        } else {
            "softmax(x)"
        }
    }
    fn build(&self, args: &mut CallArgs) -> syn::Result<Built> {
        args.positional(1, 1)?;
        args.tensor(0);
        args.finish()?;
        Ok(Built::Kernel(Box::new(Softmax { log: self.log })))
    }
}

/// A (log-)softmax over the last axis of its input.
pub struct Softmax {
    log: bool,
}

impl Kernel for Softmax {
    fn decoding(&self, inputs: &[&ValueInfo]) -> super::Decoding {
        // Over the last axis: per position when that axis is not the time axis.
        super::Decoding::position_wise_if(inputs[0].shape.rank() >= 3)
    }
    fn onnx(&self, cx: &mut crate::onnx::OnnxCx) -> Result<(), String> {
        let op = if self.log { "LogSoftmax" } else { "Softmax" };
        let x = cx.inputs[0].clone();
        cx.finish(op, vec![x], vec![("axis", crate::onnx::Attr::Int(-1))]);
        Ok(())
    }
    fn name(&self) -> &'static str {
        if self.log {
            "log_softmax"
        } else {
            "softmax"
        }
    }
    fn infer(&self, inputs: &[&ValueInfo], _symbols: &[String]) -> Result<ValueInfo, OpError> {
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
