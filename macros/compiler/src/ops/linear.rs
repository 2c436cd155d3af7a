//! `linear(x, out_features, bias = true)`: `y = x W^T + b` on `[batch, in]`, PyTorch layout
//! (`weight [out, in]`, `bias [out]`) and PyTorch's default init.

use super::{
    require_float, BackwardCx, Built, CallArgs, ForwardCx, Kernel, LayerSpec, OpError, OpSpec,
    ParamSpec, Reads,
};
use crate::ir::{Dim, Shape, ValueInfo, ValueKind};
use proc_macro2::TokenStream;
use quote::quote;

/// The registry entry.
pub struct LinearSpec;
/// `linear`.
pub static LINEAR: LinearSpec = LinearSpec;

impl OpSpec for LinearSpec {
    fn name(&self) -> &'static str {
        "linear"
    }
    fn usage(&self) -> &'static str {
        "linear(x, out_features)` or `linear(x, out_features, bias = false)"
    }
    fn build(&self, args: &mut CallArgs) -> syn::Result<Built> {
        args.positional(2, 2)?;
        args.tensor(0);
        let out = args.int(1, "the number of output features")?;
        let bias = args.opt_bool("bias", true)?;
        args.finish()?;
        Ok(Built::Kernel(Box::new(Linear { out, bias })))
    }
}

/// A fully connected layer.
pub struct Linear {
    out: usize,
    bias: bool,
}

impl Linear {
    fn in_features(inputs: &[&ValueInfo]) -> usize {
        match inputs[0].shape.last() {
            Some(Dim::Fixed(n)) => n,
            // `infer` rejects every other case before a layer is asked for.
            _ => 0,
        }
    }
}

impl Kernel for Linear {
    fn name(&self) -> &'static str {
        "linear"
    }
    fn describe(&self) -> String {
        format!(
            "out={}{}",
            self.out,
            if self.bias { "" } else { ", bias=false" }
        )
    }
    fn has_params(&self) -> bool {
        true
    }
    fn infer(&self, inputs: &[&ValueInfo], symbols: &[String]) -> Result<ValueInfo, OpError> {
        require_float("linear", 0, inputs[0])?;
        let shape = &inputs[0].shape;
        let shown = shape.display(symbols);
        if shape.rank() != 2 {
            // The fix depends on the rank: `flatten` joins fixed dims after the batch dim.
            let batch = |rest: Dim| Shape(vec![shape.0[0], rest]).display(symbols).to_string();
            let features = shape.0.iter().skip(1).try_fold(1usize, |n, d| match d {
                Dim::Fixed(k) => n.checked_mul(*k),
                Dim::Symbol(_) => None,
            });
            let hint = match (shape.rank(), features) {
                (0, _) => "a scalar has no rows to map".to_string(),
                (1, _) => format!("for one feature per row, declare it as {}", batch(Dim::Fixed(1))),
                (_, Some(n)) => format!(
                    "flatten it first, as in `linear(flatten(x), ...)`, which makes it {}",
                    batch(Dim::Fixed(n))
                ),
                (_, None) => "`flatten` cannot join its symbolic dims after the batch dim: declare them as numbers, then use `linear(flatten(x), ...)`".to_string(),
            };
            return Err(OpError::input(
                0,
                format!(
                    "`linear` expects a rank-2 input [batch, features], but this is {shown} (rank {}): {hint}",
                    shape.rank()
                ),
            ));
        }
        match shape.0[1] {
            Dim::Fixed(_) => {}
            Dim::Symbol(s) => {
                return Err(OpError::input(
                    0,
                    format!(
                        "`linear` needs a fixed number of input features, but this is {shown} whose last dim `{}` is symbolic: declare it as a number",
                        symbols[s]
                    ),
                ))
            }
        }
        Ok(ValueInfo {
            shape: Shape(vec![shape.0[0], Dim::Fixed(self.out)]),
            kind: ValueKind::Float,
        })
    }
    fn layer(&self, inputs: &[&ValueInfo]) -> Option<LayerSpec> {
        let (inf, out, bias) = (Self::in_features(inputs), self.out, self.bias);
        let mut params = vec![ParamSpec {
            suffix: "weight",
            optional: false,
            dims: vec![out, inf],
        }];
        if bias {
            params.push(ParamSpec {
                suffix: "bias",
                optional: true,
                dims: vec![out],
            });
        }
        Some(LayerSpec {
            ty: quote!(::kiln::layers::Linear<F>),
            init: quote!(::kiln::layers::Linear::new(#inf, #out, #bias, rng)),
            zeros: quote!(::kiln::layers::Linear::zeros(#inf, #out, #bias)),
            params,
            buffers: Vec::new(),
        })
    }
    fn backward_reads(&self) -> Reads {
        Reads {
            inputs: vec![true],
            output: false,
        }
    }
    fn forward(&self, cx: &ForwardCx) -> TokenStream {
        let x = &cx.inputs[0];
        let (xd, rows, inf) = (&x.data, &x.dims[0], &x.dims[1]);
        let (y, out) = (&cx.output.data, &cx.output.dims[1]);
        let w = &cx.params[0];
        let b = match cx.params.get(1) {
            Some(b) => quote!(Some(#b)),
            None => quote!(None),
        };
        quote! {
            ::kiln::kernels::linear::linear_forward(#xd, #w, #b, #rows, #inf, #out, #y);
        }
    }
    fn backward(&self, cx: &BackwardCx) -> TokenStream {
        let x = &cx.inputs[0];
        let (xd, rows, inf) = (&x.data, &x.dims[0], &x.dims[1]);
        let out = &cx.output.dims[1];
        let dy = &cx.d_output;
        let (w, dw) = (&cx.params[0], &cx.param_grads[0]);
        let mut code = quote! {
            ::kiln::kernels::linear::linear_backward_weight(#xd, #dy, #rows, #inf, #out, #dw, false);
        };
        if let Some(db) = cx.param_grads.get(1) {
            code.extend(quote! {
                ::kiln::kernels::linear::linear_backward_bias(#dy, #rows, #out, #db, false);
            });
        }
        if let Some(dx) = &cx.d_inputs[0] {
            let (dxd, acc) = (&dx.data, dx.accumulate);
            code.extend(quote! {
                ::kiln::kernels::linear::linear_backward_input(#dy, #w, #rows, #inf, #out, #dxd, #acc);
            });
        }
        code
    }
}
