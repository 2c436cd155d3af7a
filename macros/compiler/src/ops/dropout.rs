//! `dropout(x, p)`: in training, zeroes each element with probability `p` and scales the rest
//! by `1/(1-p)` (inverted dropout, as PyTorch); in inference, the identity. The mask is drawn
//! from the workspace's seeded generator and kept for the backward pass.

use super::{
    float_like, require_float, BackwardCx, Built, CallArgs, ForwardCx, Kernel, OpError, OpSpec,
    Reads, ScratchLen, ScratchSpec,
};
use crate::ir::ValueInfo;
use proc_macro2::TokenStream;
use quote::quote;

/// The registry entry.
pub struct DropoutSpec;
/// `dropout`.
pub static DROPOUT: DropoutSpec = DropoutSpec;

impl OpSpec for DropoutSpec {
    fn name(&self) -> &'static str {
        "dropout"
    }
    fn usage(&self) -> &'static str {
        "dropout(x, 0.5)"
    }
    fn build(&self, args: &mut CallArgs) -> syn::Result<Built> {
        args.positional(1, 2)?;
        args.tensor(0);
        let positional = if args.has(1) {
            Some(args.float(1, "the drop probability")?)
        } else {
            None
        };
        let option = args.opt_float("p")?;
        args.finish()?;
        let p = match (positional, option) {
            (Some(_), Some(_)) => {
                return Err(syn::Error::new(
                    args.span(),
                    "give `p` once: `dropout(x, 0.5)`",
                ))
            }
            (Some(p), None) | (None, Some(p)) => p,
            (None, None) => 0.5,
        };
        // 1 drops everything (PyTorch multiplies by 0), as the kernel does.
        if !(0.0..=1.0).contains(&p) {
            return Err(syn::Error::new(
                args.span(),
                format!("the drop probability must be in [0, 1], not {p}: `dropout(x, 0.5)` drops half of the values in training"),
            ));
        }
        Ok(Built::Kernel(Box::new(Dropout { p })))
    }
}

/// Inverted dropout with probability `p`.
pub struct Dropout {
    p: f64,
}

impl Kernel for Dropout {
    fn decoding(&self, _inputs: &[&ValueInfo]) -> super::Decoding {
        // Decoding runs in inference mode, where dropout is the identity.
        super::Decoding::PositionWise
    }
    fn onnx(&self, cx: &mut crate::onnx::OnnxCx) -> Result<(), String> {
        // Inference: dropout is the identity.
        let x = cx.inputs[0].clone();
        cx.finish("Identity", vec![x], vec![]);
        Ok(())
    }
    fn name(&self) -> &'static str {
        "dropout"
    }
    fn describe(&self) -> String {
        format!("p={}", self.p)
    }
    fn mode_dependent(&self) -> bool {
        true
    }
    fn needs_rng(&self) -> bool {
        true
    }
    fn infer(&self, inputs: &[&ValueInfo], _symbols: &[String]) -> Result<ValueInfo, OpError> {
        require_float("dropout", 0, inputs[0])?;
        Ok(float_like(inputs[0]))
    }
    fn scratch(&self, inputs: &[&ValueInfo], _output: &ValueInfo) -> Vec<ScratchSpec> {
        vec![ScratchSpec {
            suffix: "mask",
            len: ScratchLen::Shape(inputs[0].shape.clone()),
        }]
    }
    fn backward_reads(&self) -> Reads {
        Reads {
            inputs: vec![false],
            output: false,
        }
    }
    fn forward(&self, cx: &ForwardCx) -> TokenStream {
        let (x, y) = (&cx.inputs[0].data, &cx.output.data);
        if cx.training {
            let (p, rng, mask) = (self.p, &cx.rng, &cx.scratch[0]);
            quote! { ::kiln::kernels::dropout::dropout_forward(#x, F::from_f64(#p), #rng, #mask, #y); }
        } else {
            quote! { ::kiln::kernels::shape_ops::copy_into(#x, #y); }
        }
    }
    fn backward(&self, cx: &BackwardCx) -> TokenStream {
        let Some(dx) = &cx.d_inputs[0] else {
            return TokenStream::new();
        };
        let (mask, dy, d, acc) = (&cx.scratch[0], &cx.d_output, &dx.data, dx.accumulate);
        quote! { ::kiln::kernels::dropout::dropout_backward(#mask, #dy, #d, #acc); }
    }
}
