//! `rms_norm(x)` over the last axis: PyTorch's `nn.RMSNorm(D)` (`F.rms_norm`), the norm of
//! LLaMA-style transformers. Each position's features are divided by their root mean square,
//! `y = x / √(mean(x²) + eps) · weight`: a layer norm without the mean's subtraction and
//! without a bias. The layer has one parameter, `weight` `[D]` (PyTorch's name, starting at
//! 1); `elementwise_affine = false` drops it (the kernels then read a constant 1 from a
//! scratch buffer, and write its unused gradient to another). `eps` defaults to PyTorch's
//! `None`: the float type's machine epsilon (`torch.finfo(dtype).eps`).

use super::{
    float_like, require_float, BackwardCx, Built, CallArgs, ForwardCx, Kernel, LayerSpec, OpError,
    OpSpec, ParamSpec, Reads, ScratchLen, ScratchSpec,
};
use crate::ir::{Dim, Shape, ValueInfo};
use proc_macro2::{Literal, TokenStream};
use quote::quote;

/// The registry entry.
pub struct RmsNormSpec;
/// `rms_norm`.
pub static RMS_NORM: RmsNormSpec = RmsNormSpec;

impl OpSpec for RmsNormSpec {
    fn name(&self) -> &'static str {
        "rms_norm"
    }
    fn usage(&self) -> &'static str {
        "rms_norm(x)`, `rms_norm(x, eps = 1e-6)` or `rms_norm(x, elementwise_affine = false)"
    }
    fn build(&self, args: &mut CallArgs) -> syn::Result<Built> {
        args.positional(1, 1)?;
        args.tensor(0);
        let eps_span = args.written_option("eps").map(|e| e.span());
        let eps = args.opt_float("eps")?;
        let affine = args.opt_bool("elementwise_affine", true)?;
        if let Some(e) = args.written_option("bias") {
            return Err(syn::Error::new(
                e.span(),
                "an RMS norm has no bias (PyTorch's `nn.RMSNorm` has none): leave `bias` out, or use `layer_norm(x)` for a norm with one",
            ));
        }
        args.finish()?;
        if let (Some(eps), Some(span)) = (eps, eps_span) {
            if !(eps > 0.0 && eps.is_finite()) {
                return Err(syn::Error::new(
                    span,
                    format!("`eps` must be positive, not {eps}: it keeps the division by the root mean square away from 0 (leave it out for PyTorch's default, the float type's epsilon)"),
                ));
            }
        }
        Ok(Built::Kernel(Box::new(RmsNorm { eps, affine })))
    }
}

/// An RMS norm layer over the last axis.
pub struct RmsNorm {
    /// `None`: the float type's machine epsilon, as PyTorch's `eps=None`.
    eps: Option<f64>,
    /// Whether the layer has its `weight`.
    affine: bool,
}

impl RmsNorm {
    /// The normalized feature count (the fixed last dim, once the shape rule accepted it).
    fn features(x: &ValueInfo) -> usize {
        match x.shape.0.last() {
            Some(Dim::Fixed(n)) => *n,
            _ => 0,
        }
    }

    /// `(rows, cols)` tokens: the leading dims multiplied, and the last one.
    fn sizes(dims: &[TokenStream]) -> (TokenStream, TokenStream) {
        let (rest, last) = dims.split_at(dims.len().saturating_sub(1));
        let rows = match rest {
            [] => quote!(1),
            [first, more @ ..] => more.iter().fold(first.clone(), |acc, d| quote!(#acc * #d)),
        };
        (rows, last[0].clone())
    }

    /// `eps` as an `F` in generated code.
    fn eps_tokens(&self) -> TokenStream {
        match self.eps {
            Some(eps) => {
                let eps = Literal::f64_suffixed(eps);
                quote!(F::from_f64(#eps))
            }
            None => quote!(F::EPSILON),
        }
    }

    /// The weight the kernels read: the parameter, or the scratch of ones (with the
    /// statement that fills it).
    fn weight(
        &self,
        params: &[TokenStream],
        scratch: &[TokenStream],
    ) -> (TokenStream, TokenStream) {
        if self.affine {
            (TokenStream::new(), params[0].clone())
        } else {
            let ones = &scratch[1];
            (quote! { (#ones).fill(F::ONE); }, ones.clone())
        }
    }
}

impl Kernel for RmsNorm {
    fn decoding(&self, inputs: &[&ValueInfo]) -> super::Decoding {
        // Each position's features alone.
        super::Decoding::position_wise_if(inputs[0].shape.rank() >= 3)
    }
    fn onnx(&self, cx: &mut crate::onnx::OnnxCx) -> Result<(), String> {
        use crate::onnx::Attr::{Int, Ints};
        // Opset 17 has no RMSNormalization: x / sqrt(mean(x²) + eps) · weight from its parts.
        let x = cx.inputs[0].clone();
        let eps = match self.eps {
            Some(eps) => eps,
            // The exported model is f32.
            None => f64::from(f32::EPSILON),
        };
        let square = cx.op("Mul", vec![x.clone(), x.clone()], "square", vec![]);
        let mean = cx.op(
            "ReduceMean",
            vec![square],
            "mean_square",
            vec![("axes", Ints(vec![-1])), ("keepdims", Int(1))],
        );
        let eps = cx.b.floats("eps", vec![], vec![eps]);
        let shifted = cx.op("Add", vec![mean, eps], "shifted", vec![]);
        let rms = cx.op("Sqrt", vec![shifted], "rms", vec![]);
        if self.affine {
            let normalized = cx.op("Div", vec![x, rms], "normalized", vec![]);
            let weight = cx.param(0);
            cx.finish("Mul", vec![normalized, weight], vec![]);
        } else {
            cx.finish("Div", vec![x, rms], vec![]);
        }
        Ok(())
    }
    fn name(&self) -> &'static str {
        "rms_norm"
    }
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(eps) = self.eps {
            parts.push(format!("eps={eps}"));
        }
        if !self.affine {
            parts.push("elementwise_affine=false".to_string());
        }
        parts.join(", ")
    }
    fn has_params(&self) -> bool {
        self.affine
    }
    fn infer(&self, inputs: &[&ValueInfo], symbols: &[String]) -> Result<ValueInfo, OpError> {
        let x = inputs[0];
        require_float(self.name(), 0, x)?;
        let shown = x.shape.display(symbols);
        let Some(&last) = x.shape.0.last() else {
            return Err(OpError::input(
                0,
                "`rms_norm` needs at least one axis, but this is a scalar",
            ));
        };
        if let symbolic @ (Dim::Symbol(_) | Dim::Affine { .. }) = last {
            return Err(OpError::input(
                0,
                format!("`rms_norm` normalizes the last axis, which must be fixed, but in {shown} it is the symbolic `{}`", symbolic.display(symbols)),
            ));
        }
        Ok(float_like(x))
    }
    fn layer(&self, inputs: &[&ValueInfo]) -> Option<LayerSpec> {
        let c = Self::features(inputs[0]);
        self.affine.then(|| LayerSpec {
            ty: quote!(::kiln::layers::RmsNorm<F>),
            init: quote!(::kiln::layers::RmsNorm::new(#c)),
            zeros: quote!(::kiln::layers::RmsNorm::zeros(#c)),
            params: vec![ParamSpec {
                access: None,
                suffix: "weight",
                optional: false,
                dims: vec![c],
            }],
            buffers: Vec::new(),
            nested: None,
        })
    }
    fn scratch(&self, inputs: &[&ValueInfo], _output: &ValueInfo) -> Vec<ScratchSpec> {
        let dims = &inputs[0].shape.0;
        let rows = Shape(dims[..dims.len().saturating_sub(1)].to_vec());
        let mut scratch = vec![ScratchSpec {
            suffix: "rms",
            len: ScratchLen::Shape(rows),
        }];
        if !self.affine {
            // The constant weight the kernels read, and where its unused gradient goes.
            let features = Shape(vec![Dim::Fixed(Self::features(inputs[0]))]);
            for suffix in ["ones", "unused_dweight"] {
                scratch.push(ScratchSpec {
                    suffix,
                    len: ScratchLen::Shape(features.clone()),
                });
            }
        }
        scratch
    }
    fn backward_reads(&self) -> Reads {
        Reads {
            inputs: vec![true],
            output: false,
        }
    }
    fn forward(&self, cx: &ForwardCx) -> TokenStream {
        let (x, y, rms) = (&cx.inputs[0].data, &cx.output.data, &cx.scratch[0]);
        let (rows, cols) = Self::sizes(&cx.inputs[0].dims);
        let (fill, w) = self.weight(&cx.params, &cx.scratch);
        let eps = self.eps_tokens();
        quote! {
            #fill
            ::kiln::kernels::norm::rms_norm_forward(#x, #w, #rows, #cols, #eps, #y, #rms);
        }
    }
    fn backward(&self, cx: &BackwardCx) -> TokenStream {
        let (x, dy, rms) = (&cx.inputs[0].data, &cx.d_output, &cx.scratch[0]);
        let (rows, cols) = Self::sizes(&cx.inputs[0].dims);
        // The forward filled the constant; the backward reads it as it is.
        let (_, w) = self.weight(&cx.params, &cx.scratch);
        let dw = if self.affine {
            cx.param_grads[0].clone()
        } else {
            cx.scratch[2].clone()
        };
        let dx = cx.input_grad(0);
        quote! {
            ::kiln::kernels::norm::rms_norm_backward(#x, #dy, #w, #rms, #rows, #cols, #dw, #dx);
        }
    }
}
