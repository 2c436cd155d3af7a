//! `group_norm(x, groups = g, eps = 1e-5)`: PyTorch's `nn.GroupNorm(g, C, eps, affine=True)`
//! on `[B, C, ...]` (`[B, C]`, `[B, C, L]`, `[B, C, H, W]`, ...). It takes the input and
//! returns a value of its shape, each sample's channels normalised in `g` groups of `C / g`
//! consecutive channels (statistics over the group's channels and spatial positions), then
//! scaled and shifted per channel by the layer's `weight` and `bias` (`[C]`). The channel
//! count is fixed; the batch and spatial dims may be symbolic. Training and inference compute
//! the same (there are no running statistics).
//!
//! `instance_norm(x)` is the same with one group per channel and, as PyTorch's
//! `nn.InstanceNorm1d/2d` default, no affine map (`affine = true` adds it);
//! `group_norm(x, groups = g, affine = false)` drops it too. Without the affine map the
//! kernels read a constant 1 and 0 from workspace scratch, and write the gradients nobody
//! reads to scratch, as layer norm does.

use super::{
    divisors_near, float_like, require_float, BackwardCx, Built, CallArgs, ForwardCx, Kernel,
    LayerSpec, OpError, OpSpec, ParamSpec, Reads, ScratchLen, ScratchSpec,
};
use crate::ir::{Dim, Shape, ValueInfo};
use proc_macro2::TokenStream;
use quote::quote;

/// The registry entry of `group_norm` and `instance_norm`.
pub struct GroupNormSpec {
    instance: bool,
}
/// `group_norm`.
pub static GROUP_NORM: GroupNormSpec = GroupNormSpec { instance: false };
/// `instance_norm`.
pub static INSTANCE_NORM: GroupNormSpec = GroupNormSpec { instance: true };

const OP: &str = "group_norm";

impl OpSpec for GroupNormSpec {
    fn name(&self) -> &'static str {
        if self.instance {
            "instance_norm"
        } else {
            OP
        }
    }
    fn usage(&self) -> &'static str {
        if self.instance {
            "instance_norm(x)`, `instance_norm(x, eps = 1e-5)` or `instance_norm(x, affine = true)"
        } else {
            "group_norm(x, groups = 4)`, `group_norm(x, groups = 4, eps = 1e-5)` or `group_norm(x, groups = 4, affine = false)"
        }
    }
    fn build(&self, args: &mut CallArgs) -> syn::Result<Built> {
        args.positional(1, 1)?;
        args.tensor(0);
        let groups = if self.instance {
            None
        } else {
            args.opt_int("groups")?
        };
        let eps = args.opt_float("eps")?.unwrap_or(1e-5);
        // PyTorch's defaults: GroupNorm has the affine map, InstanceNorm does not.
        let affine = args.opt_bool("affine", !self.instance)?;
        // Unknown options first: `group = 4` is a misspelt `groups`, not a missing one.
        args.finish()?;
        let groups = match (self.instance, groups) {
            (true, _) => Groups::PerChannel,
            (false, Some(g)) => Groups::Count(g),
            (false, None) => {
                return Err(syn::Error::new(
                    args.span(),
                    "`group_norm` needs its number of groups: write `group_norm(x, groups = 4)` (PyTorch's `nn.GroupNorm(num_groups, num_channels)`)",
                ))
            }
        };
        if eps <= 0.0 {
            return Err(syn::Error::new(
                args.span(),
                format!("`eps` must be positive, not {eps}"),
            ));
        }
        Ok(Built::Kernel(Box::new(GroupNorm {
            groups,
            eps,
            affine,
        })))
    }
}

/// How a group norm cuts the channels.
#[derive(Clone, Copy)]
enum Groups {
    /// `groups = g`.
    Count(usize),
    /// One group per channel (instance norm).
    PerChannel,
}

/// A group norm layer.
pub struct GroupNorm {
    groups: Groups,
    eps: f64,
    /// Whether the layer has `weight` and `bias`.
    affine: bool,
}

impl GroupNorm {
    /// The channel count (dim 1), once the shape rule has accepted it.
    fn channels(x: &ValueInfo) -> usize {
        match x.shape.0.get(1) {
            Some(Dim::Fixed(c)) => *c,
            _ => 0,
        }
    }

    /// The number of groups for an input of `c` channels.
    fn group_count(&self, c: usize) -> usize {
        match self.groups {
            Groups::Count(g) => g,
            Groups::PerChannel => c,
        }
    }

    /// The weight and bias the kernels read: the parameters, or the constants 1 and 0 in
    /// scratch (with the statements that fill them, first).
    fn operands(
        &self,
        params: &[TokenStream],
        scratch: &[TokenStream],
    ) -> (TokenStream, TokenStream, TokenStream) {
        if self.affine {
            return (TokenStream::new(), params[0].clone(), params[1].clone());
        }
        let (ones, zeros) = (&scratch[2], &scratch[3]);
        (
            quote! { (#ones).fill(F::ONE); (#zeros).fill(F::ZERO); },
            ones.clone(),
            zeros.clone(),
        )
    }

    /// What the op normalizes, for messages.
    fn what(&self) -> &'static str {
        match self.groups {
            Groups::Count(_) => "groups of channels",
            Groups::PerChannel => "each channel",
        }
    }

    /// The group count as tokens: `g`, or the channel count `c` for one group per channel.
    fn groups_tokens(&self, c: &TokenStream) -> TokenStream {
        match self.groups {
            Groups::Count(g) => quote!(#g),
            Groups::PerChannel => c.clone(),
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
        match self.groups {
            Groups::Count(_) => OP,
            Groups::PerChannel => "instance_norm",
        }
    }
    fn describe(&self) -> String {
        let affine = match (self.groups, self.affine) {
            (Groups::Count(_), false) => ", affine=false",
            (Groups::PerChannel, true) => ", affine=true",
            _ => "",
        };
        match self.groups {
            Groups::Count(g) => format!("groups={g}, eps={}{affine}", self.eps),
            Groups::PerChannel => format!("eps={}{affine}", self.eps),
        }
    }
    fn has_params(&self) -> bool {
        self.affine
    }
    fn infer(&self, inputs: &[&ValueInfo], symbols: &[String]) -> Result<ValueInfo, OpError> {
        let x = inputs[0];
        let op = self.name();
        require_float(op, 0, x)?;
        let shown = x.shape.display(symbols);
        if x.shape.rank() < 2 {
            return Err(OpError::input(
                0,
                format!("`{op}` normalizes {} of [batch, channels, ...], but this is {shown} (rank {}): reshape it to [batch, channels, ...] first", self.what(), x.shape.rank()),
            ));
        }
        let c = match x.shape.0[1] {
            Dim::Fixed(c) => c,
            symbolic => {
                return Err(OpError::input(
                    0,
                    format!("`{op}` needs a fixed channel count (its statistics, weight and bias are per channel or group of channels), but dim 1 of {shown} is the symbolic `{}`: declare it as a number", symbolic.display(symbols)),
                ))
            }
        };
        if let Groups::Count(groups) = self.groups {
            if !c.is_multiple_of(groups) {
                return Err(OpError::call(format!(
                    "{groups} groups do not divide the {c} channels of {shown} (each group normalizes channels / groups of them together): use a group count that divides {c} ({}), or change the channel count",
                    divisors_near(c, groups)
                )));
            }
        }
        Ok(float_like(x))
    }
    fn layer(&self, inputs: &[&ValueInfo]) -> Option<LayerSpec> {
        if !self.affine {
            return None;
        }
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
        let c = Self::channels(inputs[0]);
        let stats = Shape(vec![inputs[0].shape.0[0], Dim::Fixed(self.group_count(c))]);
        let mut scratch = vec![
            ScratchSpec {
                suffix: "mean",
                len: ScratchLen::Shape(stats.clone()),
            },
            ScratchSpec {
                suffix: "invstd",
                len: ScratchLen::Shape(stats),
            },
        ];
        if !self.affine {
            // The constant weight and bias, then where their gradients go.
            for suffix in ["ones", "zeros", "unused_dweight", "unused_dbias"] {
                scratch.push(ScratchSpec {
                    suffix,
                    len: ScratchLen::Shape(Shape(vec![Dim::Fixed(c)])),
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
        let (x, y) = (&cx.inputs[0].data, &cx.output.data);
        let (fill, w, b) = self.operands(&cx.params, &cx.scratch);
        let (mean, invstd) = (&cx.scratch[0], &cx.scratch[1]);
        let (n, c, spatial) = Self::sizes(&cx.inputs[0].dims);
        let groups = self.groups_tokens(&c);
        let eps = self.eps;
        quote! {
            #fill
            ::kiln::kernels::norm::group_norm_forward(
                #x, #w, #b, #n, #c, #spatial, #groups, F::from_f64(#eps), #y, #mean, #invstd,
            );
        }
    }
    fn backward(&self, cx: &BackwardCx) -> TokenStream {
        let (x, dy) = (&cx.inputs[0].data, &cx.d_output);
        // The forward filled the constants; the backward reads them as they are.
        let (_, w, _) = self.operands(&cx.params, &cx.scratch);
        let (dw, db) = if self.affine {
            (cx.param_grads[0].clone(), cx.param_grads[1].clone())
        } else {
            (cx.scratch[4].clone(), cx.scratch[5].clone())
        };
        let (mean, invstd) = (&cx.scratch[0], &cx.scratch[1]);
        let (n, c, spatial) = Self::sizes(&cx.inputs[0].dims);
        let groups = self.groups_tokens(&c);
        let dx = cx.input_grad(0);
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
        let g = self.group_count(c);
        // `0` copies the batch dim (which may be symbolic); `-1` takes the rest.
        let grouped_shape = cx.b.ints("shape", vec![0, g as i64, -1]);
        let grouped = cx.op("Reshape", vec![x.clone(), grouped_shape], "grouped", vec![]);
        let ones = cx.filled("ones", g, 1.0)?;
        let zeros = cx.filled("zeros", g, 0.0)?;
        let normed = cx.op(
            "InstanceNormalization",
            vec![grouped, ones, zeros],
            "normed",
            vec![("epsilon", Float(self.eps))],
        );
        let shape = cx.op("Shape", vec![x], "shape", vec![]);
        if !self.affine {
            cx.finish("Reshape", vec![normed, shape], vec![]);
            return Ok(());
        }
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
