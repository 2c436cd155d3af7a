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
        use crate::onnx::Attr::Int;
        // Key j > query i: -inf. The sizes are read from the scores, so symbolic T works.
        let x = cx.inputs[0].clone();
        let r = cx.rank(0) as i64;
        let shape = cx.op("Shape", vec![x.clone()], "shape", vec![]);
        let (ti, si) = (cx.b.int_scalar(r - 2), cx.b.int_scalar(r - 1));
        let t = cx.op("Gather", vec![shape.clone(), ti], "queries", vec![("axis", Int(0))]);
        let s = cx.op("Gather", vec![shape, si], "keys", vec![("axis", Int(0))]);
        let (zero, step) = (cx.b.int_scalar(0), cx.b.int_scalar(1));
        let i = cx.op("Range", vec![zero.clone(), t, step.clone()], "query", vec![]);
        let j = cx.op("Range", vec![zero, s, step], "key", vec![]);
        let axis = cx.b.ints("axes", vec![1]);
        let i = cx.op("Unsqueeze", vec![i, axis], "query", vec![]);
        let future = cx.op("Greater", vec![j, i], "future", vec![]);
        let inf = cx.b.scalar(f64::NEG_INFINITY);
        cx.finish("Where", vec![future, inf, x], vec![]);
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
