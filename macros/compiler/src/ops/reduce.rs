//! `sum(x)` and `mean(x)`: reductions of a whole tensor to a scalar.

use super::{
    require_float, BackwardCx, Built, CallArgs, ForwardCx, Kernel, OpError, OpSpec, Reads,
};
use crate::ir::{Shape, ValueInfo, ValueKind};
use proc_macro2::TokenStream;
use quote::quote;

/// The registry entry for both reductions.
pub struct ReduceSpec {
    mean: bool,
}
/// `sum(x)`.
pub static SUM: ReduceSpec = ReduceSpec { mean: false };
/// `mean(x)`.
pub static MEAN: ReduceSpec = ReduceSpec { mean: true };

impl OpSpec for ReduceSpec {
    fn name(&self) -> &'static str {
        if self.mean {
            "mean"
        } else {
            "sum"
        }
    }
    fn usage(&self) -> &'static str {
        if self.mean {
            "mean(x)"
        } else {
            "sum(x)"
        }
    }
    fn build(&self, args: &mut CallArgs) -> syn::Result<Built> {
        args.positional(1, 1)?;
        args.tensor(0);
        args.finish()?;
        Ok(Built::Kernel(Box::new(Reduce { mean: self.mean })))
    }
}

/// A full reduction to a scalar.
pub struct Reduce {
    mean: bool,
}

impl Kernel for Reduce {
    fn name(&self) -> &'static str {
        if self.mean {
            "mean"
        } else {
            "sum"
        }
    }
    fn infer(&self, inputs: &[&ValueInfo], _symbols: &[String]) -> Result<ValueInfo, OpError> {
        require_float(self.name(), 0, inputs[0])?;
        Ok(ValueInfo {
            shape: Shape(vec![]),
            kind: ValueKind::Float,
        })
    }
    fn backward_reads(&self) -> Reads {
        Reads {
            inputs: vec![false],
            output: false,
        }
    }
    fn forward(&self, cx: &ForwardCx) -> TokenStream {
        let (x, y) = (&cx.inputs[0].data, &cx.output.first);
        let f = if self.mean { quote!(mean) } else { quote!(sum) };
        quote! {
            #y = ::kiln::kernels::reduce::#f(#x);
        }
    }
    fn backward(&self, cx: &BackwardCx) -> TokenStream {
        let Some(dx) = &cx.d_inputs[0] else {
            return TokenStream::new();
        };
        let (dy, dxd, acc, len) = (
            &cx.d_output_first,
            &dx.data,
            dx.accumulate,
            &cx.inputs[0].len,
        );
        let value = if self.mean {
            quote!(#dy / F::from_usize(#len))
        } else {
            quote!(#dy)
        };
        quote! {
            ::kiln::kernels::reduce::fill_backward(#dxd, #value, #acc);
        }
    }
}
