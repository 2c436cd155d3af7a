//! `causal_mask(scores)`: attention scores `[.., T, S]` with every key after its query (`j > i`)
//! set to −∞, so that a following `softmax` gives them probability 0 (a decoder's mask).

use super::{
    float_like, product_of, require_float, BackwardCx, Built, CallArgs, ForwardCx, Kernel, OpError,
    OpSpec, Reads,
};
use crate::ir::ValueInfo;
use proc_macro2::TokenStream;
use quote::quote;

/// The registry entry.
pub struct CausalMaskSpec;
/// `causal_mask`.
pub static CAUSAL_MASK: CausalMaskSpec = CausalMaskSpec;

impl OpSpec for CausalMaskSpec {
    fn name(&self) -> &'static str {
        "causal_mask"
    }
    fn usage(&self) -> &'static str {
        "causal_mask(scores)"
    }
    fn build(&self, args: &mut CallArgs) -> syn::Result<Built> {
        args.positional(1, 1)?;
        args.tensor(0);
        args.finish()?;
        Ok(Built::Kernel(Box::new(CausalMask)))
    }
}

/// The causal mask.
pub struct CausalMask;

fn sizes(dims: &[TokenStream]) -> [TokenStream; 3] {
    let r = dims.len();
    [
        product_of(&dims[..r - 2]),
        dims[r - 2].clone(),
        dims[r - 1].clone(),
    ]
}

impl Kernel for CausalMask {
    fn onnx(&self, cx: &mut crate::onnx::OnnxCx) -> Result<(), String> {
        // Key j > query i: -inf. The sizes are read from the scores, so symbolic T works.
        let x = cx.inputs[0].clone();
        let masked = cx.causal(&x, cx.rank(0));
        cx.finish("Identity", vec![masked], vec![]);
        Ok(())
    }
    fn name(&self) -> &'static str {
        "causal_mask"
    }
    fn infer(&self, inputs: &[&ValueInfo], symbols: &[String]) -> Result<ValueInfo, OpError> {
        require_float("causal_mask", 0, inputs[0])?;
        let x = &inputs[0].shape;
        if x.rank() < 2 {
            return Err(OpError::input(
                0,
                format!(
                    "`causal_mask` masks scores [.., queries, keys], but this is {} (rank {})",
                    x.display(symbols),
                    x.rank()
                ),
            ));
        }
        Ok(float_like(inputs[0]))
    }
    fn backward_reads(&self) -> Reads {
        Reads {
            inputs: vec![false],
            output: false,
        }
    }
    fn forward(&self, cx: &ForwardCx) -> TokenStream {
        let [outer, t, s] = sizes(&cx.inputs[0].dims);
        let (x, y) = (&cx.inputs[0].data, &cx.output.data);
        quote! { ::kiln::kernels::axis::causal_mask_forward(#x, #outer, #t, #s, #y); }
    }
    fn backward(&self, cx: &BackwardCx) -> TokenStream {
        let Some(dx) = &cx.d_inputs[0] else {
            return TokenStream::new();
        };
        let [outer, t, s] = sizes(&cx.inputs[0].dims);
        let (dy, d, acc) = (&cx.d_output, &dx.data, dx.accumulate);
        quote! { ::kiln::kernels::axis::causal_mask_backward(#dy, #outer, #t, #s, #d, #acc); }
    }
}
