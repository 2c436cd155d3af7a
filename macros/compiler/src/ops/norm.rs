//! `batch_norm(x)` on `[B, C]`, `[B, C, L]` or `[B, C, H, W]` (PyTorch's BatchNorm1d on
//! features and on sequences, BatchNorm2d: statistics per channel over the batch and every
//! position; batch statistics and running-statistics updates in training, running statistics
//! in inference; the output has the input's shape) and
//! `layer_norm(x)` over the last axis. Both are layers with `weight` and `bias`; batch norm
//! also has the buffers `running_mean` and `running_var`. A layer norm may go without its bias
//! (`bias = false`, PyTorch's `bias=False`) or without both (`elementwise_affine = false`), a
//! batch norm without both (`affine = false`, its layer then a `RunningStats`): the kernels
//! then read a constant 1 or 0 from a scratch buffer of the workspace, and the gradients they
//! write for it go to scratch too.

use super::{
    float_like, require_float, BackwardCx, Built, CallArgs, ForwardCx, Kernel, LayerSpec, OpError,
    OpSpec, ParamSpec, Reads, ScratchLen, ScratchSpec,
};
use crate::ir::{Dim, Shape, ValueInfo};
use proc_macro2::TokenStream;
use quote::quote;

/// The registry entry of both norms.
pub struct NormSpec {
    batch: bool,
}
/// `batch_norm`.
pub static BATCH_NORM: NormSpec = NormSpec { batch: true };
/// `layer_norm`.
pub static LAYER_NORM: NormSpec = NormSpec { batch: false };

impl OpSpec for NormSpec {
    fn name(&self) -> &'static str {
        if self.batch {
            "batch_norm"
        } else {
            "layer_norm"
        }
    }
    fn usage(&self) -> &'static str {
        if self.batch {
            "batch_norm(x)`, `batch_norm(x, eps = 1e-5, momentum = 0.1)` or `batch_norm(x, affine = false)"
        } else {
            "layer_norm(x)`, `layer_norm(x, eps = 1e-5)`, `layer_norm(x, bias = false)` or `layer_norm(x, dims = 2)"
        }
    }
    fn build(&self, args: &mut CallArgs) -> syn::Result<Built> {
        args.positional(1, 1)?;
        args.tensor(0);
        let eps = args.opt_float("eps")?.unwrap_or(1e-5);
        let momentum = if self.batch {
            args.opt_float("momentum")?.unwrap_or(0.1)
        } else {
            0.0
        };
        let (bias, affine) = if self.batch {
            let affine = args.opt_bool("affine", true)?;
            (affine, affine)
        } else {
            (
                args.opt_bool("bias", true)?,
                args.opt_bool("elementwise_affine", true)?,
            )
        };
        // PyTorch's `normalized_shape` of several dims: the last `dims` axes.
        let axes = if self.batch {
            1
        } else {
            args.opt_int("dims")?.unwrap_or(1)
        };
        args.finish()?;
        if eps <= 0.0 {
            return Err(syn::Error::new(
                args.span(),
                format!("`eps` must be positive, not {eps}"),
            ));
        }
        if !(0.0..=1.0).contains(&momentum) {
            return Err(syn::Error::new(
                args.span(),
                format!("`momentum` must be in [0, 1], not {momentum}"),
            ));
        }
        Ok(Built::Kernel(Box::new(Norm {
            batch: self.batch,
            axes,
            eps,
            momentum,
            // Without the affine map there is no bias either, as in PyTorch.
            bias: bias && affine,
            affine,
        })))
    }
}

/// A normalization layer.
pub struct Norm {
    batch: bool,
    /// How many trailing axes a layer norm normalizes together (1 for batch norm).
    axes: usize,
    eps: f64,
    momentum: f64,
    /// Whether the layer has a `bias`.
    bias: bool,
    /// Whether the layer has a `weight` (and, for batch norm, a `bias`).
    affine: bool,
}

impl Norm {
    /// The normalized feature count: channels (batch norm) or the product of the normalized
    /// trailing dims (layer norm), once the shape rule has accepted them.
    fn features(&self, x: &ValueInfo) -> usize {
        self.normalized_shape(x).iter().product()
    }

    /// The shape of the weight and bias: `[C]` for batch norm, the normalized trailing dims
    /// for layer norm (fixed, once the shape rule has accepted them).
    fn normalized_shape(&self, x: &ValueInfo) -> Vec<usize> {
        let dims: &[Dim] = if self.batch {
            x.shape.0.get(1..2).unwrap_or(&[])
        } else {
            let rank = x.shape.rank();
            &x.shape.0[rank.saturating_sub(self.axes)..]
        };
        dims.iter()
            .map(|d| match d {
                Dim::Fixed(n) => *n,
                _ => 0,
            })
            .collect()
    }

    /// `(n, c, spatial)` tokens for batch norm.
    fn batch_sizes(dims: &[TokenStream]) -> (TokenStream, TokenStream, TokenStream) {
        let (n, c) = (&dims[0], &dims[1]);
        let spatial = dims[2..].iter().fold(quote!(1), |acc, d| quote!(#acc * #d));
        (quote!(#n), quote!(#c), spatial)
    }

    /// `(rows, cols)` tokens for layer norm: the leading dims and the normalized ones.
    fn layer_sizes(&self, dims: &[TokenStream]) -> (TokenStream, TokenStream) {
        let (rest, normalized) = dims.split_at(dims.len().saturating_sub(self.axes));
        let product = |ds: &[TokenStream]| -> TokenStream {
            match ds {
                [] => quote!(1),
                [one] => one.clone(),
                [first, more @ ..] => more.iter().fold(first.clone(), |acc, d| quote!(#acc * #d)),
            }
        };
        (product(rest), product(normalized))
    }

    /// The weight and bias the kernels read: the parameters, or constants in scratch (with
    /// the statements that fill them, first).
    fn layer_norm_operands(
        &self,
        params: &[TokenStream],
        scratch: &[TokenStream],
    ) -> (TokenStream, TokenStream, TokenStream) {
        let mut extra = scratch[2..].iter();
        let mut fill = TokenStream::new();
        let mut constant = |value: TokenStream| {
            let buffer = extra.next().cloned().unwrap_or_default();
            // Skip the gradient's scratch that follows the constant's.
            extra.next();
            fill.extend(quote! { (#buffer).fill(#value); });
            buffer
        };
        let w = if self.affine {
            params[0].clone()
        } else {
            constant(quote!(F::ONE))
        };
        let b = if self.bias {
            params[1].clone()
        } else {
            constant(quote!(F::ZERO))
        };
        (fill, w, b)
    }

    /// The gradient buffers the backward writes: the parameters' gradients, or scratch for
    /// the absent ones.
    fn layer_norm_grads(
        &self,
        grads: &[TokenStream],
        scratch: &[TokenStream],
    ) -> (TokenStream, TokenStream) {
        let mut unused = scratch[2..].iter().skip(1).step_by(2).cloned();
        let dw = if self.affine {
            grads[0].clone()
        } else {
            unused.next().unwrap_or_default()
        };
        let db = if self.bias {
            grads[1].clone()
        } else {
            unused.next().unwrap_or_default()
        };
        (dw, db)
    }
}

impl Kernel for Norm {
    fn decoding(&self, inputs: &[&ValueInfo]) -> super::Decoding {
        // A layer norm normalizes each position's features; a batch norm's channels are
        // axis 1, the time axis of a sequence.
        // Over the features of each position only: a layer norm over more axes than the last
        // mixes positions.
        super::Decoding::position_wise_if(
            !self.batch && self.axes == 1 && inputs[0].shape.rank() >= 3,
        )
    }
    fn onnx(&self, cx: &mut crate::onnx::OnnxCx) -> Result<(), String> {
        use crate::onnx::Attr::{Float, Int};
        let x = cx.inputs[0].clone();
        if !self.batch {
            // LayerNormalization's scale is required, its bias optional.
            let mut ins = vec![x];
            if self.affine {
                ins.push(cx.param(0));
            } else {
                let c = self.features(&cx.input_infos[0]);
                let ones = cx.filled("ones", c, 1.0)?;
                let shape: Vec<i64> = self
                    .normalized_shape(&cx.input_infos[0])
                    .iter()
                    .map(|&d| d as i64)
                    .collect();
                ins.push(if shape.len() > 1 {
                    let shape = cx.b.ints("shape", shape);
                    cx.op("Reshape", vec![ones, shape], "ones", vec![])
                } else {
                    ones
                });
            }
            if self.bias {
                ins.push(cx.param(1));
            }
            let axis = -(self.axes as i64);
            cx.finish(
                "LayerNormalization",
                ins,
                vec![("axis", Int(axis)), ("epsilon", Float(self.eps))],
            );
            return Ok(());
        }
        let (w, b) = if self.affine {
            (cx.param(0), cx.param(1))
        } else {
            let c = self.features(&cx.input_infos[0]);
            (cx.filled("ones", c, 1.0)?, cx.filled("zeros", c, 0.0)?)
        };
        {
            // Inference: the running statistics.
            let (mean, var) = (cx.buffer(0), cx.buffer(1));
            cx.finish(
                "BatchNormalization",
                vec![x, w, b, mean, var],
                vec![("epsilon", Float(self.eps))],
            );
        }
        Ok(())
    }
    fn name(&self) -> &'static str {
        if self.batch {
            "batch_norm"
        } else {
            "layer_norm"
        }
    }
    fn describe(&self) -> String {
        if self.batch && !self.affine {
            format!("eps={}, momentum={}, affine=false", self.eps, self.momentum)
        } else if self.batch {
            format!("eps={}, momentum={}", self.eps, self.momentum)
        } else {
            let dims = if self.axes > 1 {
                format!(", dims={}", self.axes)
            } else {
                String::new()
            };
            let affine = if !self.affine {
                ", elementwise_affine=false"
            } else if !self.bias {
                ", bias=false"
            } else {
                ""
            };
            format!("eps={}{dims}{affine}", self.eps)
        }
    }
    fn has_params(&self) -> bool {
        // A batch norm is a layer (named after its binding) even without the affine map: it
        // owns its running statistics.
        self.affine || self.batch
    }
    fn mode_dependent(&self) -> bool {
        self.batch
    }
    fn infer(&self, inputs: &[&ValueInfo], symbols: &[String]) -> Result<ValueInfo, OpError> {
        let x = inputs[0];
        require_float(self.name(), 0, x)?;
        let shown = x.shape.display(symbols);
        if self.batch {
            if !(2..=4).contains(&x.shape.rank()) {
                return Err(OpError::input(
                    0,
                    format!("`batch_norm` expects [batch, features], [batch, channels, length] or [batch, channels, height, width], but this is {shown}: reshape it to one of them first"),
                ));
            }
            if let symbolic @ (Dim::Symbol(_) | Dim::Affine { .. }) = x.shape.0[1] {
                return Err(OpError::input(
                    0,
                    format!("`batch_norm` needs a fixed channel count, but dim 1 of {shown} is the symbolic `{}`", symbolic.display(symbols)),
                ));
            }
        } else {
            let rank = x.shape.rank();
            if rank == 0 {
                return Err(OpError::input(
                    0,
                    "`layer_norm` needs at least one axis, but this is a scalar",
                ));
            }
            if self.axes >= rank {
                return Err(OpError::call(format!(
                    "`dims = {}` normalizes the last {} axes together, but {shown} has {} besides the batch axis: use `dims = {}` at most",
                    self.axes,
                    self.axes,
                    rank - 1,
                    (rank - 1).max(1)
                )));
            }
            for axis in rank - self.axes..rank {
                if let symbolic @ (Dim::Symbol(_) | Dim::Affine { .. }) = x.shape.0[axis] {
                    let which = if self.axes == 1 {
                        "the last axis".to_string()
                    } else {
                        format!("the last {} axes", self.axes)
                    };
                    return Err(OpError::input(
                        0,
                        format!("`layer_norm` normalizes {which}, which must be fixed, but in {shown} axis {axis} is the symbolic `{}`", symbolic.display(symbols)),
                    ));
                }
            }
        }
        Ok(float_like(x))
    }
    fn layer(&self, inputs: &[&ValueInfo]) -> Option<LayerSpec> {
        let c = self.features(inputs[0]);
        let running = || {
            ["running_mean", "running_var"]
                .into_iter()
                .map(|suffix| ParamSpec {
                    access: None,
                    suffix,
                    optional: false,
                    dims: vec![c],
                })
                .collect::<Vec<_>>()
        };
        if !self.affine {
            return self.batch.then(|| LayerSpec {
                ty: quote!(::kiln::layers::RunningStats<F>),
                init: quote!(::kiln::layers::RunningStats::new(#c)),
                zeros: quote!(::kiln::layers::RunningStats::zeros(#c)),
                params: Vec::new(),
                buffers: running(),
                nested: None,
            });
        }
        let shape = self.normalized_shape(inputs[0]);
        let mut params = vec![ParamSpec {
            access: None,
            suffix: "weight",
            optional: false,
            dims: shape.clone(),
        }];
        if self.bias {
            params.push(ParamSpec {
                access: None,
                suffix: "bias",
                // Batch norm's is always there; a layer norm's is an `Option`.
                optional: !self.batch,
                dims: shape.clone(),
            });
        }
        Some(if self.batch {
            LayerSpec {
                ty: quote!(::kiln::layers::BatchNorm<F>),
                init: quote!(::kiln::layers::BatchNorm::new(#c)),
                zeros: quote!(::kiln::layers::BatchNorm::zeros(#c)),
                params,
                buffers: running(),
                nested: None,
            }
        } else if self.axes > 1 {
            let bias = self.bias;
            LayerSpec {
                ty: quote!(::kiln::layers::LayerNormNd<F>),
                init: quote!(::kiln::layers::LayerNormNd::new(&[#(#shape),*], #bias)),
                zeros: quote!(::kiln::layers::LayerNormNd::zeros(&[#(#shape),*], #bias)),
                params,
                buffers: Vec::new(),
                nested: None,
            }
        } else {
            let bias = self.bias;
            LayerSpec {
                ty: quote!(::kiln::layers::LayerNorm<F>),
                init: quote!(::kiln::layers::LayerNorm::new(#c, #bias)),
                zeros: quote!(::kiln::layers::LayerNorm::zeros(#c, #bias)),
                params,
                buffers: Vec::new(),
                nested: None,
            }
        })
    }
    fn scratch(&self, inputs: &[&ValueInfo], _output: &ValueInfo) -> Vec<ScratchSpec> {
        let stats = if self.batch {
            Shape(vec![Dim::Fixed(self.features(inputs[0]))])
        } else {
            let dims = &inputs[0].shape.0;
            Shape(dims[..dims.len().saturating_sub(self.axes)].to_vec())
        };
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
        // The constants the kernels read in place of absent parameters, and where they write
        // the gradients nobody reads.
        let features = Shape(vec![Dim::Fixed(self.features(inputs[0]))]);
        for (present, constant, gradient) in [
            (self.affine, "ones", "unused_dweight"),
            (self.bias, "zeros", "unused_dbias"),
        ] {
            if !present {
                scratch.push(ScratchSpec {
                    suffix: constant,
                    len: ScratchLen::Shape(features.clone()),
                });
                scratch.push(ScratchSpec {
                    suffix: gradient,
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
        let (x, y) = (&cx.inputs[0].data, &cx.output.data);
        let (mean, invstd) = (&cx.scratch[0], &cx.scratch[1]);
        let eps = self.eps;
        if !self.batch {
            let (rows, cols) = self.layer_sizes(&cx.inputs[0].dims);
            let (fill, w, b) = self.layer_norm_operands(&cx.params, &cx.scratch);
            return quote! {
                #fill
                ::kiln::kernels::norm::layer_norm_forward(#x, #w, #b, #rows, #cols, F::from_f64(#eps), #y, #mean, #invstd);
            };
        }
        let (fill, w, b) = self.layer_norm_operands(&cx.params, &cx.scratch);
        let (n, c, spatial) = Self::batch_sizes(&cx.inputs[0].dims);
        let (rm, rv) = (&cx.buffers[0], &cx.buffers[1]);
        if cx.training {
            let momentum = self.momentum;
            let layer = &cx.layer_name;
            quote! {
                #fill
                if #n * #spatial < 2 {
                    return Err(::kiln::Error::BatchTooSmall { layer: #layer, values: #n * #spatial });
                }
                ::kiln::kernels::norm::batch_norm_forward_train(
                    #x, #w, #b, #n, #c, #spatial, F::from_f64(#eps), #y, #mean, #invstd, #rm, #rv, F::from_f64(#momentum),
                );
            }
        } else {
            quote! {
                #fill
                ::kiln::kernels::norm::batch_norm_forward_eval(#x, #w, #b, #rm, #rv, #n, #c, #spatial, F::from_f64(#eps), #y);
            }
        }
    }
    fn backward(&self, cx: &BackwardCx) -> TokenStream {
        let (x, dy) = (&cx.inputs[0].data, &cx.d_output);
        let (mean, invstd) = (&cx.scratch[0], &cx.scratch[1]);
        let dx = cx.input_grad(0);
        if self.batch {
            // The forward filled the constants; the backward reads them as they are.
            let (_, w, _) = self.layer_norm_operands(&cx.params, &cx.scratch);
            let (dw, db) = self.layer_norm_grads(&cx.param_grads, &cx.scratch);
            let (n, c, spatial) = Self::batch_sizes(&cx.inputs[0].dims);
            quote! {
                ::kiln::kernels::norm::batch_norm_backward(#x, #dy, #w, #mean, #invstd, #n, #c, #spatial, #dw, #db, #dx);
            }
        } else {
            let (rows, cols) = self.layer_sizes(&cx.inputs[0].dims);
            // The forward filled the constants; the backward reads them as they are.
            let (_, w, _) = self.layer_norm_operands(&cx.params, &cx.scratch);
            let (dw, db) = self.layer_norm_grads(&cx.param_grads, &cx.scratch);
            quote! {
                ::kiln::kernels::norm::layer_norm_backward(#x, #dy, #w, #mean, #invstd, #rows, #cols, #dw, #db, #dx);
            }
        }
    }
}
