//! `prelu(x)` and `prelu(x, num_parameters = C, init = 0.25)`: PyTorch's `nn.PReLU`, `x` where
//! `x > 0` and `a·x` elsewhere with a learned slope `a`: one for every element, or one per
//! channel of axis 1 (PyTorch's channel axis, whatever the rank: `[B, C, H, W]` images and
//! `[B, F]` rows; for `[B, T, F]` sequences that is the time axis, as in PyTorch, so a slope
//! per feature there is `prelu` of the features moved to axis 1). The parameter is `weight`
//! `[num_parameters]`, as in PyTorch's `state_dict`.

use super::{
    require_float, BackwardCx, Built, CallArgs, Decoding, ForwardCx, Kernel, LayerSpec, OpError,
    OpSpec, ParamSpec, Reads,
};
use crate::ir::{Dim, ValueInfo, ValueKind};
use proc_macro2::{Literal, TokenStream};
use quote::quote;

/// The registry entry.
pub struct PReluSpec;
/// `prelu`.
pub static PRELU: PReluSpec = PReluSpec;

impl OpSpec for PReluSpec {
    fn name(&self) -> &'static str {
        "prelu"
    }
    fn usage(&self) -> &'static str {
        "prelu(x)` or `prelu(x, num_parameters = 16, init = 0.25)"
    }
    fn build(&self, args: &mut CallArgs) -> syn::Result<Built> {
        args.positional(1, 1)?;
        args.tensor(0);
        let channels = args.opt_int("num_parameters")?.unwrap_or(1);
        let init = args.opt_float("init")?.unwrap_or(0.25);
        args.finish()?;
        if !init.is_finite() {
            return Err(syn::Error::new(
                args.span(),
                format!("`init` is the slopes' starting value, a finite number, not {init}"),
            ));
        }
        Ok(Built::Kernel(Box::new(PRelu { channels, init })))
    }
}

/// A PReLU with `channels` slopes (1: one for every element) starting at `init`.
pub struct PRelu {
    channels: usize,
    init: f64,
}

impl PRelu {
    /// `(outer, channels, inner)` of the input as the kernels take it.
    fn sizes(&self, dims: &[TokenStream]) -> (TokenStream, TokenStream, TokenStream) {
        if self.channels == 1 {
            (super::product_of(dims), quote!(1usize), quote!(1usize))
        } else {
            let channels = self.channels;
            (
                dims[0].clone(),
                quote!(#channels),
                super::product_of(&dims[2..]),
            )
        }
    }
}

impl Kernel for PRelu {
    fn name(&self) -> &'static str {
        "prelu"
    }
    fn describe(&self) -> String {
        let mut s = String::new();
        if self.channels > 1 {
            s.push_str(&format!("num_parameters={}", self.channels));
        }
        if self.init != 0.25 {
            let sep = if s.is_empty() { "" } else { ", " };
            s.push_str(&format!("{sep}init={:?}", self.init));
        }
        s
    }
    fn has_params(&self) -> bool {
        true
    }
    fn decoding(&self, inputs: &[&ValueInfo]) -> Decoding {
        // One slope, or one per feature of `[B, F]`: element by element. Per channel of a
        // sequence, axis 1 is the time axis, whose slopes are per position.
        Decoding::position_wise_if(self.channels == 1 || inputs[0].shape.rank() == 2)
    }
    fn infer(&self, inputs: &[&ValueInfo], symbols: &[String]) -> Result<ValueInfo, OpError> {
        require_float("prelu", 0, inputs[0])?;
        let x = &inputs[0].shape;
        let shown = x.display(symbols);
        if self.channels != 1 {
            // A slope per feature of a sequence `[B, T, F]`: PyTorch's channel axis is 1 there
            // too, and its users transpose.
            let per_feature = x.rank() == 3 && x.0[2] == Dim::Fixed(self.channels);
            let fix = |what: String| {
                let (n, hint) = (
                    self.channels,
                    if per_feature {
                        format!("; for a slope per feature of a sequence, as PyTorch, move the features to axis 1 and back: `transpose(prelu(transpose(x, 1, 2), num_parameters = {}), 1, 2)`", self.channels)
                    } else {
                        String::new()
                    },
                );
                OpError::call(format!(
                    "`prelu` with `num_parameters = {n}` learns a slope per channel of axis 1, but {shown} {what}: give `num_parameters` the size of axis 1, or leave it out for one slope{hint}"
                ))
            };
            match x.0.get(1) {
                None => return Err(fix("has no axis 1".into())),
                Some(Dim::Fixed(c)) if *c != self.channels => {
                    return Err(fix(format!("has {c} there")))
                }
                Some(Dim::Fixed(_)) => {}
                Some(symbolic) => {
                    return Err(fix(format!(
                        "has the symbolic `{}` there",
                        symbolic.display(symbols)
                    )))
                }
            }
        }
        Ok(ValueInfo {
            shape: x.clone(),
            kind: ValueKind::Float,
        })
    }
    fn layer(&self, _inputs: &[&ValueInfo]) -> Option<LayerSpec> {
        let (channels, init) = (self.channels, Literal::f64_suffixed(self.init));
        Some(LayerSpec {
            ty: quote!(::kiln::layers::PRelu<F>),
            init: quote!(::kiln::layers::PRelu::new(#channels, #init)),
            zeros: quote!(::kiln::layers::PRelu::zeros(#channels)),
            params: vec![ParamSpec {
                access: None,
                suffix: "weight",
                optional: false,
                dims: vec![channels],
            }],
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
        let (x, y, a) = (&cx.inputs[0], &cx.output.data, &cx.params[0]);
        let (outer, channels, inner) = self.sizes(&x.dims);
        let xd = &x.data;
        quote! {
            ::kiln::kernels::prelu::prelu_forward(#xd, #outer, #channels, #inner, #a, #y);
        }
    }
    fn backward(&self, cx: &BackwardCx) -> TokenStream {
        let x = &cx.inputs[0];
        let (outer, channels, inner) = self.sizes(&x.dims);
        let (xd, dy, a, da) = (&x.data, &cx.d_output, &cx.params[0], &cx.param_grads[0]);
        let acc_a = cx.param_grads_accumulate[0];
        let dx = cx.input_grad(0);
        quote! {
            ::kiln::kernels::prelu::prelu_backward(#xd, #dy, #outer, #channels, #inner, #a, #dx, #da, #acc_a);
        }
    }
    /// ONNX's `PRelu`, its slope shaped `[C, 1, ..]` to broadcast over the axes after the
    /// channel axis (or `[1]` for one slope).
    fn onnx(&self, cx: &mut crate::onnx::OnnxCx) -> Result<(), String> {
        let rank = cx.rank(0);
        let (name, _) = cx.params[0].clone();
        let dims = if self.channels == 1 {
            vec![1]
        } else {
            std::iter::once(self.channels)
                .chain(std::iter::repeat_n(1, rank.saturating_sub(2)))
                .collect()
        };
        let slope = cx.b.param(vec![name], Vec::new(), dims);
        let x = cx.inputs[0].clone();
        cx.finish("PRelu", vec![x, slope], vec![]);
        Ok(())
    }
}
