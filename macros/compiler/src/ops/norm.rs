//! `batch_norm(x)` on `[B, C]`, `[B, C, L]` or `[B, C, H, W]` (PyTorch's BatchNorm1d on
//! features and on sequences, BatchNorm2d: statistics per channel over the batch and every
//! position; batch statistics and running-statistics updates in training, running statistics
//! in inference; the output has the input's shape) and
//! `layer_norm(x)` over the last axis. Both are layers with `weight` and `bias`; batch norm
//! also has the buffers `running_mean` and `running_var`.

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
            "batch_norm(x)` or `batch_norm(x, eps = 1e-5, momentum = 0.1)"
        } else {
            "layer_norm(x)` or `layer_norm(x, eps = 1e-5)"
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
            eps,
            momentum,
        })))
    }
}

/// A normalization layer.
pub struct Norm {
    batch: bool,
    eps: f64,
    momentum: f64,
}

impl Norm {
    /// The normalized feature count: channels (batch norm) or the last dim (layer norm).
    fn features(&self, x: &ValueInfo) -> usize {
        let d = if self.batch {
            x.shape.0.get(1)
        } else {
            x.shape.0.last()
        };
        match d {
            Some(Dim::Fixed(n)) => *n,
            _ => 0,
        }
    }

    /// `(n, c, spatial)` tokens for batch norm.
    fn batch_sizes(dims: &[TokenStream]) -> (TokenStream, TokenStream, TokenStream) {
        let (n, c) = (&dims[0], &dims[1]);
        let spatial = dims[2..].iter().fold(quote!(1), |acc, d| quote!(#acc * #d));
        (quote!(#n), quote!(#c), spatial)
    }

    /// `(rows, cols)` tokens for layer norm.
    fn layer_sizes(dims: &[TokenStream]) -> (TokenStream, TokenStream) {
        let (last, rest) = dims
            .split_last()
            .map_or((quote!(1), &[][..]), |(l, r)| (l.clone(), r));
        let rows = rest.iter().fold(quote!(1), |acc, d| quote!(#acc * #d));
        (rows, last)
    }
}

impl Kernel for Norm {
    fn decoding(&self, inputs: &[&ValueInfo]) -> super::Decoding {
        // A layer norm normalizes each position's features; a batch norm's channels are
        // axis 1, the time axis of a sequence.
        super::Decoding::position_wise_if(!self.batch && inputs[0].shape.rank() >= 3)
    }
    fn onnx(&self, cx: &mut crate::onnx::OnnxCx) -> Result<(), String> {
        use crate::onnx::Attr::{Float, Int};
        let (x, w, b) = (cx.inputs[0].clone(), cx.param(0), cx.param(1));
        if self.batch {
            // Inference: the running statistics.
            let (mean, var) = (cx.buffer(0), cx.buffer(1));
            cx.finish(
                "BatchNormalization",
                vec![x, w, b, mean, var],
                vec![("epsilon", Float(self.eps))],
            );
        } else {
            cx.finish(
                "LayerNormalization",
                vec![x, w, b],
                vec![("axis", Int(-1)), ("epsilon", Float(self.eps))],
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
        if self.batch {
            format!("eps={}, momentum={}", self.eps, self.momentum)
        } else {
            format!("eps={}", self.eps)
        }
    }
    fn has_params(&self) -> bool {
        true
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
            if let Dim::Symbol(s) = x.shape.0[1] {
                return Err(OpError::input(
                    0,
                    format!("`batch_norm` needs a fixed channel count, but dim 1 of {shown} is the symbolic `{}`", symbols[s]),
                ));
            }
        } else {
            match x.shape.last() {
                Some(Dim::Fixed(_)) => {}
                Some(Dim::Symbol(s)) => {
                    return Err(OpError::input(
                        0,
                        format!("`layer_norm` normalizes the last axis, which must be fixed, but in {shown} it is the symbolic `{}`", symbols[s]),
                    ))
                }
                None => return Err(OpError::input(0, "`layer_norm` needs at least one axis, but this is a scalar")),
            }
        }
        Ok(float_like(x))
    }
    fn layer(&self, inputs: &[&ValueInfo]) -> Option<LayerSpec> {
        let c = self.features(inputs[0]);
        let params = vec![
            ParamSpec {
                access: None,
                suffix: "weight",
                optional: false,
                dims: vec![c],
            },
            ParamSpec {
                access: None,
                suffix: "bias",
                optional: false,
                dims: vec![c],
            },
        ];
        Some(if self.batch {
            LayerSpec {
                ty: quote!(::kiln::layers::BatchNorm<F>),
                init: quote!(::kiln::layers::BatchNorm::new(#c)),
                zeros: quote!(::kiln::layers::BatchNorm::zeros(#c)),
                params,
                buffers: vec![
                    ParamSpec {
                        access: None,
                        suffix: "running_mean",
                        optional: false,
                        dims: vec![c],
                    },
                    ParamSpec {
                        access: None,
                        suffix: "running_var",
                        optional: false,
                        dims: vec![c],
                    },
                ],
                nested: None,
            }
        } else {
            LayerSpec {
                ty: quote!(::kiln::layers::LayerNorm<F>),
                init: quote!(::kiln::layers::LayerNorm::new(#c)),
                zeros: quote!(::kiln::layers::LayerNorm::zeros(#c)),
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
            Shape(dims[..dims.len().saturating_sub(1)].to_vec())
        };
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
        let eps = self.eps;
        if !self.batch {
            let (rows, cols) = Self::layer_sizes(&cx.inputs[0].dims);
            return quote! {
                ::kiln::kernels::norm::layer_norm_forward(#x, #w, #b, #rows, #cols, F::from_f64(#eps), #y, #mean, #invstd);
            };
        }
        let (n, c, spatial) = Self::batch_sizes(&cx.inputs[0].dims);
        let (rm, rv) = (&cx.buffers[0], &cx.buffers[1]);
        if cx.training {
            let momentum = self.momentum;
            let layer = &cx.layer_name;
            quote! {
                if #n * #spatial < 2 {
                    return Err(::kiln::Error::BatchTooSmall { layer: #layer, values: #n * #spatial });
                }
                ::kiln::kernels::norm::batch_norm_forward_train(
                    #x, #w, #b, #n, #c, #spatial, F::from_f64(#eps), #y, #mean, #invstd, #rm, #rv, F::from_f64(#momentum),
                );
            }
        } else {
            quote! {
                ::kiln::kernels::norm::batch_norm_forward_eval(#x, #w, #b, #rm, #rv, #n, #c, #spatial, F::from_f64(#eps), #y);
            }
        }
    }
    fn backward(&self, cx: &BackwardCx) -> TokenStream {
        let (x, dy) = (&cx.inputs[0].data, &cx.d_output);
        let w = &cx.params[0];
        let (dw, db) = (&cx.param_grads[0], &cx.param_grads[1]);
        let (mean, invstd) = (&cx.scratch[0], &cx.scratch[1]);
        let dx = match &cx.d_inputs[0] {
            Some(t) => {
                let (d, acc) = (&t.data, t.accumulate);
                quote!(Some((#d, #acc)))
            }
            None => quote!(None),
        };
        if self.batch {
            let (n, c, spatial) = Self::batch_sizes(&cx.inputs[0].dims);
            quote! {
                ::kiln::kernels::norm::batch_norm_backward(#x, #dy, #w, #mean, #invstd, #n, #c, #spatial, #dw, #db, #dx);
            }
        } else {
            let (rows, cols) = Self::layer_sizes(&cx.inputs[0].dims);
            quote! {
                ::kiln::kernels::norm::layer_norm_backward(#x, #dy, #w, #mean, #invstd, #rows, #cols, #dw, #db, #dx);
            }
        }
    }
}
