//! `linear(x, out_features, bias = true)`: `y = x W^T + b` over the last axis of `[.., in]`
//! (every leading dim is a batch dim, as in PyTorch), PyTorch layout
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
        let tied = args.opt_name("tied")?;
        args.finish()?;
        Ok(Built::Kernel(Box::new(Linear { out, bias, tied })))
    }
}

/// A fully connected layer.
pub struct Linear {
    out: usize,
    bias: bool,
    /// The layer whose `weight` this one reuses (an output head tied to an embedding table).
    tied: Option<syn::Ident>,
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

/// A `[.., features]` value as a matrix: its rows (the leading dims multiplied) and features.
fn rows_and_features(x: &super::Operand) -> (TokenStream, TokenStream) {
    let (leading, last) = x.dims.split_at(x.dims.len() - 1);
    (super::product_of(leading), last[0].clone())
}

impl Kernel for Linear {
    fn decoding(&self, inputs: &[&ValueInfo]) -> super::Decoding {
        // Over the last axis: per position when that axis is not the time axis.
        super::Decoding::position_wise_if(inputs[0].shape.rank() >= 3)
    }
    fn onnx(&self, cx: &mut crate::onnx::OnnxCx) -> Result<(), String> {
        use crate::onnx::Attr::Int;
        let w = cx.param(0);
        let x = cx.inputs[0].clone();
        let b = if self.bias { Some(cx.param(1)) } else { None };
        if cx.rank(0) == 2 {
            let mut ins = vec![x, w];
            ins.extend(b);
            cx.finish("Gemm", ins, vec![("transB", Int(1))]);
        } else {
            let wt = cx.op(
                "Transpose",
                vec![w],
                "weight_t",
                vec![("perm", crate::onnx::Attr::Ints(vec![1, 0]))],
            );
            match b {
                Some(b) => {
                    let y = cx.op("MatMul", vec![x, wt], "matmul", vec![]);
                    cx.finish("Add", vec![y, b], vec![]);
                }
                None => cx.finish("MatMul", vec![x, wt], vec![]),
            }
        }
        Ok(())
    }
    fn name(&self) -> &'static str {
        "linear"
    }
    fn describe(&self) -> String {
        format!(
            "out={}{}{}",
            self.out,
            if self.bias { "" } else { ", bias=false" },
            self.tied
                .as_ref()
                .map(|t| format!(", tied={t}"))
                .unwrap_or_default()
        )
    }
    fn has_params(&self) -> bool {
        self.tied.is_none() || self.bias
    }
    fn tied(&self) -> Option<&syn::Ident> {
        self.tied.as_ref()
    }
    fn tied_dims(&self, inputs: &[&ValueInfo]) -> Vec<usize> {
        vec![self.out, Self::in_features(inputs)]
    }
    fn infer(&self, inputs: &[&ValueInfo], symbols: &[String]) -> Result<ValueInfo, OpError> {
        require_float("linear", 0, inputs[0])?;
        let shape = &inputs[0].shape;
        let shown = shape.display(symbols);
        if shape.rank() < 2 {
            let hint = if shape.rank() == 0 {
                "a scalar has no rows to map".to_string()
            } else {
                format!(
                    "for one feature per row, declare it as {}",
                    Shape(vec![shape.0[0], Dim::Fixed(1)]).display(symbols)
                )
            };
            return Err(OpError::input(
                0,
                format!(
                    "`linear` maps the last axis of [batch, .., features], but this is {shown} (rank {}): {hint}",
                    shape.rank()
                ),
            ));
        }
        let features = shape.0[shape.rank() - 1];
        match features {
            Dim::Fixed(_) => {}
            symbolic => {
                return Err(OpError::input(
                    0,
                    format!(
                        "`linear` needs a fixed number of input features, but this is {shown} whose last dim `{}` is symbolic: declare it as a number",
                        symbolic.display(symbols)
                    ),
                ))
            }
        }
        let mut out = shape.0.clone();
        out[shape.rank() - 1] = Dim::Fixed(self.out);
        Ok(ValueInfo {
            shape: Shape(out),
            kind: ValueKind::Float,
        })
    }
    fn layer(&self, inputs: &[&ValueInfo]) -> Option<LayerSpec> {
        let (inf, out, bias) = (Self::in_features(inputs), self.out, self.bias);
        if self.tied.is_some() {
            // Only the bias is this layer's own; the weight is the lender's.
            return bias.then(|| LayerSpec {
                ty: quote!(::kiln::layers::Bias<F>),
                init: quote!(::kiln::layers::Bias::new(#inf, #out, rng)),
                zeros: quote!(::kiln::layers::Bias::zeros(#out)),
                params: vec![ParamSpec {
                    access: None,
                    suffix: "bias",
                    optional: false,
                    dims: vec![out],
                }],
                buffers: Vec::new(),
                nested: None,
            });
        }
        let mut params = vec![ParamSpec {
            access: None,
            suffix: "weight",
            optional: false,
            dims: vec![out, inf],
        }];
        if bias {
            params.push(ParamSpec {
                access: None,
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
            nested: None,
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
        let (xd, (rows, inf)) = (&x.data, rows_and_features(x));
        let (y, out) = (&cx.output.data, rows_and_features(&cx.output).1);
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
        let (xd, (rows, inf)) = (&x.data, rows_and_features(x));
        let out = rows_and_features(&cx.output).1;
        let dy = &cx.d_output;
        let (w, dw, dw_acc) = (
            &cx.params[0],
            &cx.param_grads[0],
            cx.param_grads_accumulate[0],
        );
        // A frozen layer's step runs only to pass the gradient back: its own gradients (the
        // weight's product) are skipped. A tied weight is the lender's, trainable or not on
        // its own.
        let trains_w = &cx.param_trainable[0];
        let weight = quote! {
            ::kiln::kernels::linear::linear_backward_weight(#xd, #dy, #rows, #inf, #out, #dw, #dw_acc);
        };
        let mut code = match (cx.param_grads.get(1), cx.param_trainable.get(1)) {
            (Some(db), Some(trains_b)) => {
                let bias = quote! {
                    ::kiln::kernels::linear::linear_backward_bias(#dy, #rows, #out, #db, false);
                };
                if trains_b.to_string() == trains_w.to_string() {
                    quote! { if #trains_w { #weight #bias } }
                } else {
                    quote! { if #trains_w { #weight } if #trains_b { #bias } }
                }
            }
            _ => quote! { if #trains_w { #weight } },
        };
        if let Some(dx) = &cx.d_inputs[0] {
            let (dxd, acc) = (&dx.data, dx.accumulate);
            code.extend(quote! {
                ::kiln::kernels::linear::linear_backward_input(#dy, #w, #rows, #inf, #out, #dxd, #acc);
            });
        }
        code
    }
}
