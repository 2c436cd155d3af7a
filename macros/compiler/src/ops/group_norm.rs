//! `group_norm(x, groups = g, eps = 1e-5)`: PyTorch's `nn.GroupNorm(g, C, eps, affine=True)`
//! on `[B, C, ...]` (`[B, C]`, `[B, C, L]`, `[B, C, H, W]`, ...). It takes the input and
//! returns a value of its shape, each sample's channels normalised in `g` groups of `C / g`
//! consecutive channels (statistics over the group's channels and spatial positions), then
//! scaled and shifted per channel by the layer's `weight` and `bias` (`[C]`). The channel
//! count is fixed; the batch and spatial dims may be symbolic. Training and inference compute
//! the same (there are no running statistics).

use super::{
    divisors_near, float_like, require_float, BackwardCx, Built, CallArgs, ForwardCx, Kernel,
    LayerSpec, OpError, OpSpec, ParamSpec, Reads, ScratchLen, ScratchSpec,
};
use crate::ir::{Dim, Shape, ValueInfo};
use proc_macro2::TokenStream;
use quote::quote;

/// The registry entry.
pub struct GroupNormSpec;
/// `group_norm`.
pub static GROUP_NORM: GroupNormSpec = GroupNormSpec;

const OP: &str = "group_norm";

impl OpSpec for GroupNormSpec {
    fn name(&self) -> &'static str {
        OP
    }
    fn usage(&self) -> &'static str {
        "group_norm(x, groups = 4)` or `group_norm(x, groups = 4, eps = 1e-5)"
    }
    fn build(&self, args: &mut CallArgs) -> syn::Result<Built> {
        args.positional(1, 1)?;
        args.tensor(0);
        let groups = args.opt_int("groups")?;
        let eps = args.opt_float("eps")?.unwrap_or(1e-5);
        // Unknown options first: `group = 4` is a misspelt `groups`, not a missing one.
        args.finish()?;
        let Some(groups) = groups else {
            return Err(syn::Error::new(
                args.span(),
                "`group_norm` needs its number of groups: write `group_norm(x, groups = 4)` (PyTorch's `nn.GroupNorm(num_groups, num_channels)`)",
            ));
        };
        if eps <= 0.0 {
            return Err(syn::Error::new(
                args.span(),
                format!("`eps` must be positive, not {eps}"),
            ));
        }
        Ok(Built::Kernel(Box::new(GroupNorm { groups, eps })))
    }
}

/// A group norm layer.
pub struct GroupNorm {
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    /// The channel count (dim 1), once the shape rule has accepted it.
    fn channels(x: &ValueInfo) -> usize {
        match x.shape.0.get(1) {
            Some(Dim::Fixed(c)) => *c,
            _ => 0,
        }
    }

    /// `(n, c, spatial)` tokens: the input as `[n, c, spatial]`.
    fn sizes(dims: &[TokenStream]) -> (TokenStream, TokenStream, TokenStream) {
        let (n, c) = (&dims[0], &dims[1]);
        let spatial = dims[2..].iter().fold(quote!(1), |acc, d| quote!(#acc * #d));
        (quote!(#n), quote!(#c), spatial)
    }
}

impl Kernel for GroupNorm {
    fn name(&self) -> &'static str {
        OP
    }
    fn describe(&self) -> String {
        format!("groups={}, eps={}", self.groups, self.eps)
    }
    fn has_params(&self) -> bool {
        true
    }
    fn infer(&self, inputs: &[&ValueInfo], symbols: &[String]) -> Result<ValueInfo, OpError> {
        let x = inputs[0];
        require_float(OP, 0, x)?;
        let shown = x.shape.display(symbols);
        if x.shape.rank() < 2 {
            return Err(OpError::input(
                0,
                format!("`group_norm` normalizes groups of channels of [batch, channels, ...], but this is {shown} (rank {}): reshape it to [batch, channels, ...] first", x.shape.rank()),
            ));
        }
        let c = match x.shape.0[1] {
            Dim::Fixed(c) => c,
            Dim::Symbol(s) => {
                return Err(OpError::input(
                    0,
                    format!("`group_norm` needs a fixed channel count (its weight and bias hold one value per channel), but dim 1 of {shown} is the symbolic `{}`: declare it as a number", symbols[s]),
                ))
            }
        };
        if !c.is_multiple_of(self.groups) {
            return Err(OpError::call(format!(
                "{} groups do not divide the {c} channels of {shown} (each group normalizes channels / groups of them together): use a group count that divides {c} ({}), or change the channel count",
                self.groups,
                divisors_near(c, self.groups)
            )));
        }
        Ok(float_like(x))
    }
    fn layer(&self, inputs: &[&ValueInfo]) -> Option<LayerSpec> {
        let c = Self::channels(inputs[0]);
        let param = |suffix| ParamSpec {
            access: None,
            suffix,
            optional: false,
            dims: vec![c],
        };
        Some(LayerSpec {
            ty: quote!(::kiln::layers::GroupNorm<F>),
            init: quote!(::kiln::layers::GroupNorm::new(#c)),
            zeros: quote!(::kiln::layers::GroupNorm::zeros(#c)),
            params: vec![param("weight"), param("bias")],
            buffers: Vec::new(),
            nested: None,
        })
    }
    fn scratch(&self, inputs: &[&ValueInfo], _output: &ValueInfo) -> Vec<ScratchSpec> {
        // One mean and one invstd per (sample, group).
        let stats = Shape(vec![inputs[0].shape.0[0], Dim::Fixed(self.groups)]);
        vec![
            ScratchSpec {
                suffix: "mean",
                len: ScratchLen::Shape(stats.clone()),
            },
            ScratchSpec {
                suffix: "invstd",
                len: ScratchLen::Shape(stats),
            },
        ]
    }
    fn backward_reads(&self) -> Reads {
        Reads {
            inputs: vec![true],
            output: false,
        }
    }
    fn forward(&self, cx: &ForwardCx) -> TokenStream {
        let (x, y) = (&cx.inputs[0].data, &cx.output.data);
        let (w, b) = (&cx.params[0], &cx.params[1]);
        let (mean, invstd) = (&cx.scratch[0], &cx.scratch[1]);
        let (n, c, spatial) = Self::sizes(&cx.inputs[0].dims);
        let (groups, eps) = (self.groups, self.eps);
        quote! {
            ::kiln::kernels::norm::group_norm_forward(
                #x, #w, #b, #n, #c, #spatial, #groups, F::from_f64(#eps), #y, #mean, #invstd,
            );
        }
    }
    fn backward(&self, cx: &BackwardCx) -> TokenStream {
        let (x, dy) = (&cx.inputs[0].data, &cx.d_output);
        let w = &cx.params[0];
        let (dw, db) = (&cx.param_grads[0], &cx.param_grads[1]);
        let (mean, invstd) = (&cx.scratch[0], &cx.scratch[1]);
        let (n, c, spatial) = Self::sizes(&cx.inputs[0].dims);
        let groups = self.groups;
        let dx = match &cx.d_inputs[0] {
            Some(t) => {
                let (d, acc) = (&t.data, t.accumulate);
                quote!(Some((#d, #acc)))
            }
            None => quote!(None),
        };
        quote! {
            ::kiln::kernels::norm::group_norm_backward(
                #x, #dy, #w, #mean, #invstd, #n, #c, #spatial, #groups, #dw, #db, #dx,
            );
        }
    }
    /// ONNX's `GroupNormalization` (opset 18) scales per group rather than per channel (a
    /// known flaw of the spec), so the export is the decomposition PyTorch's exporter wrote:
    /// `[B, C, ...]` as `[B, g, -1]`, `InstanceNormalization` with unit scale and zero bias
    /// (the same eps), back to the input's shape, then `· weight + bias` per channel.
    fn onnx(&self, cx: &mut crate::onnx::OnnxCx) -> Result<(), String> {
        use crate::onnx::Attr::Float;
        let x = cx.inputs[0].clone();
        let rank = cx.rank(0);
        let c = Self::channels(&cx.input_infos[0]);
        let g = self.groups;
        // `0` copies the batch dim (which may be symbolic); `-1` takes the rest.
        let grouped_shape = cx.b.ints("shape", vec![0, g as i64, -1]);
        let grouped = cx.op("Reshape", vec![x.clone(), grouped_shape], "grouped", vec![]);
        let ones = cx.b.floats("ones", vec![g], vec![1.0; g]);
        let zeros = cx.b.floats("zeros", vec![g], vec![0.0; g]);
        let normed = cx.op(
            "InstanceNormalization",
            vec![grouped, ones, zeros],
            "normed",
            vec![("epsilon", Float(self.eps))],
        );
        let shape = cx.op("Shape", vec![x], "shape", vec![]);
        let normed = cx.op("Reshape", vec![normed, shape], "normed", vec![]);
        // weight and bias as [C, 1, ..., 1], broadcasting over the spatial dims.
        let mut dims = vec![c];
        dims.extend(std::iter::repeat_n(1, rank - 2));
        let (wname, bname) = (cx.params[0].0.clone(), cx.params[1].0.clone());
        let w = cx.b.param(vec![wname], Vec::new(), dims.clone());
        let b = cx.b.param(vec![bname], Vec::new(), dims);
        let scaled = cx.op("Mul", vec![normed, w], "scaled", vec![]);
        cx.finish("Add", vec![scaled, b], vec![]);
        Ok(())
    }
}
