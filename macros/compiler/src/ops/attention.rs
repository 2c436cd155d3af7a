//! `multi_head_attention(x, heads = 4, causal = true)` (self-attention) and
//! `multi_head_attention(x, memory, heads = 4, lengths = memory_len)` (cross-attention): PyTorch's
//! `nn.MultiheadAttention` (batch-first, `in_proj_weight [3D, D]`, `in_proj_bias [3D]`,
//! `out_proj.weight [D, D]`, `out_proj.bias [D]`), one fused kernel forward and backward.

use super::{
    require_float, BackwardCx, Built, CallArgs, ForwardCx, Kernel, LayerSpec, OpError, OpSpec,
    ParamSpec, Reads, ScratchLen, ScratchSpec,
};
use crate::ir::{Dim, Shape, ValueInfo, ValueKind};
use proc_macro2::TokenStream;
use quote::quote;

/// The registry entry.
pub struct AttentionSpec;
/// `multi_head_attention`.
pub static MULTI_HEAD_ATTENTION: AttentionSpec = AttentionSpec;

impl OpSpec for AttentionSpec {
    fn name(&self) -> &'static str {
        "multi_head_attention"
    }
    fn usage(&self) -> &'static str {
        "multi_head_attention(x, heads = 4, causal = true)`, `multi_head_attention(x, heads = 4, causal = true, rotary = true, rotary_base = 500000, dropout = 0.1)` or `multi_head_attention(x, memory, heads = 4, lengths = memory_len)"
    }
    fn build(&self, args: &mut CallArgs) -> syn::Result<Built> {
        args.positional(1, 2)?;
        args.tensor(0);
        let cross = args.has(1);
        if cross {
            args.tensor(1);
        }
        let heads = args.opt_int("heads")?;
        let causal = args.opt_bool("causal", false)?;
        let bias = args.opt_bool("bias", true)?;
        let lengths = args.tensor_option("lengths").is_some();
        let rotary_span = args.written_option("rotary").map(|e| e.span());
        let rotary = args.opt_bool("rotary", false)?;
        let base_span = args.written_option("rotary_base").map(|e| e.span());
        let base = args.opt_int("rotary_base")?;
        let dropout_span = args.written_option("dropout").map(|e| e.span());
        let dropout = args.opt_float("dropout")?.unwrap_or(0.0);
        // Unknown options first: `head = 4` is a misspelt `heads`, not a missing one.
        args.finish()?;
        if let (Some(span), false) = (dropout_span, (0.0..=1.0).contains(&dropout)) {
            return Err(syn::Error::new(
                span,
                format!("the attention dropout probability must be in [0, 1], not {dropout}: `dropout = 0.1` drops a tenth of the attention weights in training, as `nn.MultiheadAttention(dropout = 0.1)`"),
            ));
        }
        if let (Some(span), Some(base)) = (base_span, base) {
            if !rotary {
                return Err(syn::Error::new(
                    span,
                    "`rotary_base` is the base of rotary position embeddings' angles: give `rotary = true` too",
                ));
            }
            if !(2..=u32::MAX as usize).contains(&base) {
                return Err(syn::Error::new(
                    span,
                    format!("`rotary_base` must be a whole number from 2 to {}, not {base} (LLaMA's is 10000, LLaMA 3's 500000: a model's `rope_theta`)", u32::MAX),
                ));
            }
        }
        let rotary = rotary.then(|| base.map_or(ROTARY_BASE, |b| b as u32));
        if let (Some(span), true, true) = (rotary_span, rotary.is_some(), cross) {
            return Err(syn::Error::new(
                span,
                "rotary position embeddings turn a sequence's queries and keys by their positions in that one sequence: they are for self-attention, not for attention to a memory (give the positions to the encoder and the decoder each, with `rotary = true` on their self-attention)",
            ));
        }
        let Some(heads) = heads else {
            return Err(syn::Error::new(
                args.span(),
                "`multi_head_attention` needs its number of heads: write `multi_head_attention(x, heads = 4)`",
            ));
        };
        Ok(Built::Kernel(Box::new(Attention {
            heads,
            causal,
            bias,
            cross,
            lengths,
            rotary,
            dropout,
        })))
    }
}

/// LLaMA's base of rotary position embeddings' angles (the runtime's `ROTARY_BASE`).
const ROTARY_BASE: u32 = 10_000;

/// The cosines and sines of the rotary angles for the positions along axis 1 of `heads`
/// (`[B, T, heads, dh]`), as `[T, 1, dh]` (broadcast over the batch and the heads): each
/// position `t` times `θ_i = base^(−2i / dh)`, the `dh / 2` angles twice over (the halves
/// `rotate_half` pairs). The angles are f32 in the file, as PyTorch's LLaMA computes them;
/// kiln's runtime computes them in f64 and rounds the cosines and sines, so the two differ by
/// about `t · 6e-8` radians at position `t`.
fn rotary_tables(
    cx: &mut crate::onnx::OnnxCx,
    heads: &str,
    dh: i64,
    base: u32,
) -> (String, String) {
    use crate::onnx::Attr::Int;
    let half = (dh / 2) as usize;
    let t = cx.positions(heads, 1, "position");
    // TensorProto.FLOAT.
    let t = cx.op("Cast", vec![t], "position", vec![("to", Int(1))]);
    let column = cx.b.ints("axes", vec![1]);
    let t = cx.op("Unsqueeze", vec![t, column], "position", vec![]);
    let inverse: Vec<f64> = (0..half)
        .map(|i| f64::from(base).powf(-2.0 * i as f64 / dh as f64))
        .collect();
    let inverse = cx.b.floats("inv_freq", vec![1, half], inverse);
    let angles = cx.op("Mul", vec![t, inverse], "angles", vec![]);
    let angles = cx.op(
        "Concat",
        vec![angles.clone(), angles],
        "angles",
        vec![("axis", Int(-1))],
    );
    let heads_axis = cx.b.ints("axes", vec![1]);
    let mut table = |op: &'static str, what: &str| {
        let v = cx.op(op, vec![angles.clone()], what, vec![]);
        cx.op("Unsqueeze", vec![v, heads_axis.clone()], what, vec![])
    };
    (table("Cos", "cos"), table("Sin", "sin"))
}

/// `x·cos + rotate_half(x)·sin` for heads `x` (`[B, T, heads, dh]`), where `rotate_half(x)`
/// is `(−x₂, x₁)` for the halves `x₁`, `x₂` of each head: the pair of columns `(i, i + dh/2)`
/// turned by its angle, as kiln's runtime turns it.
fn rotate_heads(cx: &mut crate::onnx::OnnxCx, x: &str, cos: &str, sin: &str, dh: i64) -> String {
    let last = cx.b.ints("axes", vec![3]);
    let half = |cx: &mut crate::onnx::OnnxCx, from: i64, to: i64| {
        let (start, end) = (cx.b.ints("start", vec![from]), cx.b.ints("end", vec![to]));
        cx.op(
            "Slice",
            vec![x.to_string(), start, end, last.clone()],
            "half",
            vec![],
        )
    };
    let (first, second) = (half(cx, 0, dh / 2), half(cx, dh / 2, dh));
    let second = cx.op("Neg", vec![second], "half", vec![]);
    let turned = cx.op(
        "Concat",
        vec![second, first],
        "rotate_half",
        vec![("axis", crate::onnx::Attr::Int(3))],
    );
    let straight = cx.op(
        "Mul",
        vec![x.to_string(), cos.to_string()],
        "rotary",
        vec![],
    );
    let turned = cx.op("Mul", vec![turned, sin.to_string()], "rotary", vec![]);
    cx.op("Add", vec![straight, turned], "rotary", vec![])
}

/// `::kiln::kernels::attention::AttentionDims { .. }` from the sizes' expressions `[batch,
/// q_len, kv_len, embed]` (the kernel calls' and the scratch's alike).
fn dims_literal(
    [batch, q_len, kv_len, embed]: [&TokenStream; 4],
    heads: usize,
    rotary: Option<u32>,
    dropout: bool,
) -> TokenStream {
    let rotary = rotary_tokens(rotary);
    quote! {
        ::kiln::kernels::attention::AttentionDims { batch: #batch, q_len: #q_len, kv_len: #kv_len, embed: #embed, heads: #heads, rotary: #rotary, dropout: #dropout }
    }
}

/// `AttentionDims::rotary` in generated code.
fn rotary_tokens(rotary: Option<u32>) -> TokenStream {
    match rotary {
        Some(base) => quote!(::core::option::Option::Some(#base)),
        None => quote!(::core::option::Option::None),
    }
}

/// A multi-head attention layer.
pub struct Attention {
    heads: usize,
    causal: bool,
    bias: bool,
    /// Queries and keys/values come from two inputs.
    cross: bool,
    /// A `lengths` input masks the keys past each sequence's length.
    lengths: bool,
    /// Rotary position embeddings on the queries and keys, with this base (self-attention
    /// only).
    rotary: Option<u32>,
    /// The probability of dropping each attention weight in training (0: none).
    dropout: f64,
}

impl Attention {
    fn width(inputs: &[&ValueInfo]) -> usize {
        match inputs[0].shape.last() {
            Some(Dim::Fixed(d)) => d,
            _ => 0,
        }
    }

    /// `::kiln::kernels::attention::AttentionDims { .. }` for the operands; `training`: a
    /// training pass, where a layer with dropout draws its mask (an inference pass uses the
    /// same scratch without the mask's part).
    fn dims(&self, inputs: &[super::Operand], training: bool) -> TokenStream {
        let q = &inputs[0];
        let (batch, q_len, embed) = (&q.dims[0], &q.dims[1], &q.dims[2]);
        let kv_len = if self.cross {
            &inputs[1].dims[1]
        } else {
            q_len
        };
        let dropout = training && self.drops();
        dims_literal(
            [batch, q_len, kv_len, embed],
            self.heads,
            self.rotary,
            dropout,
        )
    }

    /// Whether the layer drops attention weights in training.
    fn drops(&self) -> bool {
        self.dropout > 0.0
    }

    fn memory_and_lengths(&self, inputs: &[super::Operand]) -> (TokenStream, TokenStream) {
        let memory = if self.cross {
            let m = &inputs[1].data;
            quote!(Some(#m))
        } else {
            quote!(None)
        };
        let lengths = if self.lengths {
            let l = &inputs[inputs.len() - 1].data;
            quote!(Some(#l))
        } else {
            quote!(None)
        };
        (memory, lengths)
    }
}

impl Kernel for Attention {
    fn decoding(&self, inputs: &[&ValueInfo]) -> super::Decoding {
        // Causal self-attention: the new queries attend to cached keys and values. Without
        // the mask every position would see later ones; cross-attention and key lengths are
        // not cached.
        if !(self.causal && !self.cross && !self.lengths) {
            return super::Decoding::Unsupported;
        }
        let (embed, heads) = (Self::width(inputs), self.heads);
        let init = if let Some(base) = self.rotary {
            quote!(::kiln::kernels::kv_cache::KvCache::new(batch, capacity, #embed, #heads).rotary(#base))
        } else {
            quote!(::kiln::kernels::kv_cache::KvCache::new(batch, capacity, #embed, #heads))
        };
        super::Decoding::Incremental {
            cache: Some(super::DecodeCache {
                ty: quote!(::kiln::kernels::kv_cache::KvCache<F>),
                init,
                keeps: "the keys and values of each causal self-attention layer",
            }),
            positions: None,
        }
    }
    fn decoding_with(&self, inputs: &[&ValueInfo], is_static: &[bool]) -> super::Decoding {
        // Cross-attention to a memory that is the same at every call (an encoder's output):
        // each new query attends to the whole memory, position by position.
        if self.cross {
            let memory_static = is_static[1..].iter().all(|&s| s);
            return if !is_static[0] && memory_static && !self.causal {
                super::Decoding::PositionWise
            } else {
                super::Decoding::Unsupported
            };
        }
        if is_static.iter().any(|&s| s) {
            return super::Decoding::Unsupported;
        }
        self.decoding(inputs)
    }
    fn onnx(&self, cx: &mut crate::onnx::OnnxCx) -> Result<(), String> {
        use crate::onnx::Attr::{Int, Ints};
        // PyTorch's nn.MultiheadAttention decomposed: projections (MatMul + Add), heads by
        // Reshape + Transpose, scaled scores, masks as -inf, Softmax, MatMul, output projection.
        let d = match cx.input_infos[0].shape.last() {
            Some(Dim::Fixed(d)) => d as i64,
            _ => return Err("the model width is not fixed".into()),
        };
        let (h, x) = (self.heads as i64, cx.inputs[0].clone());
        let dh = d / h;
        let memory = if self.cross {
            cx.inputs[1].clone()
        } else {
            x.clone()
        };
        let lengths = self
            .lengths
            .then(|| cx.inputs[if self.cross { 2 } else { 1 }].clone());
        let mut next = 0;
        let mut param = |cx: &mut crate::onnx::OnnxCx| {
            next += 1;
            cx.param(next - 1)
        };
        let w_in = param(cx);
        let b_in = if self.bias { Some(param(cx)) } else { None };
        let w_out = param(cx);
        let b_out = if self.bias { Some(param(cx)) } else { None };
        let t = cx.op(
            "Transpose",
            vec![w_in],
            "in_proj_t",
            vec![("perm", Ints(vec![1, 0]))],
        );
        let project = |cx: &mut crate::onnx::OnnxCx, v: String| {
            let p = cx.op("MatMul", vec![v, t.clone()], "proj", vec![]);
            match &b_in {
                Some(b) => cx.op("Add", vec![p, b.clone()], "proj", vec![]),
                None => p,
            }
        };
        let px = project(cx, x.clone());
        let pm = if self.cross {
            project(cx, memory)
        } else {
            px.clone()
        };
        let axis2 = cx.b.ints("axes", vec![2]);
        let part = |cx: &mut crate::onnx::OnnxCx, v: &str, k: i64, what: &str| {
            let (start, end) = (
                cx.b.ints("start", vec![k * d]),
                cx.b.ints("end", vec![(k + 1) * d]),
            );
            let s = cx.op(
                "Slice",
                vec![v.to_string(), start, end, axis2.clone()],
                what,
                vec![],
            );
            let heads = cx.b.ints("shape", vec![0, 0, h, dh]);
            cx.op("Reshape", vec![s, heads], what, vec![])
        };
        let q = part(cx, &px, 0, "q");
        let k = part(cx, &pm, 1, "k");
        let v = part(cx, &pm, 2, "v");
        // Rotary position embeddings (self-attention only): opset 17 has no rotary op, so the
        // queries and keys (`[B, T, heads, dh]` here) are turned as Hugging Face's LLaMA
        // writes it, `x·cos + rotate_half(x)·sin`.
        let (q, k) = match self.rotary {
            Some(base) => {
                let (cos, sin) = rotary_tables(cx, &q, dh, base);
                (
                    rotate_heads(cx, &q, &cos, &sin, dh),
                    rotate_heads(cx, &k, &cos, &sin, dh),
                )
            }
            None => (q, k),
        };
        let q = cx.op(
            "Transpose",
            vec![q],
            "q",
            vec![("perm", Ints(vec![0, 2, 1, 3]))],
        );
        let k = cx.op(
            "Transpose",
            vec![k],
            "k",
            vec![("perm", Ints(vec![0, 2, 3, 1]))],
        );
        let v = cx.op(
            "Transpose",
            vec![v],
            "v",
            vec![("perm", Ints(vec![0, 2, 1, 3]))],
        );
        let scale = cx.b.scalar(1.0 / (dh as f64).sqrt());
        let q = cx.op("Mul", vec![q, scale], "q", vec![]);
        let mut scores = cx.op("MatMul", vec![q, k], "scores", vec![]);
        if self.causal {
            scores = cx.causal(&scores, 4);
        }
        if let Some(len) = lengths {
            // Keys at or past each sequence's length: -inf.
            let j = cx.positions(&scores, 3, "key");
            let axis1 = cx.b.ints("axes", vec![1]);
            let len = cx.op("Unsqueeze", vec![len, axis1], "lengths", vec![]);
            let real = cx.op("Less", vec![j, len], "real", vec![]);
            let axes = cx.b.ints("axes", vec![1, 2]);
            let real = cx.op("Unsqueeze", vec![real, axes], "real", vec![]);
            let inf = cx.b.scalar(f64::NEG_INFINITY);
            scores = cx.op("Where", vec![real, scores, inf], "masked", vec![]);
        }
        let attn = cx.op("Softmax", vec![scores], "weights", vec![("axis", Int(-1))]);
        let ctx = cx.op("MatMul", vec![attn, v], "context", vec![]);
        let ctx = cx.op(
            "Transpose",
            vec![ctx],
            "context",
            vec![("perm", Ints(vec![0, 2, 1, 3]))],
        );
        let merged = cx.b.ints("shape", vec![0, 0, d]);
        let ctx = cx.op("Reshape", vec![ctx, merged], "context", vec![]);
        let wt = cx.op(
            "Transpose",
            vec![w_out],
            "out_proj_t",
            vec![("perm", Ints(vec![1, 0]))],
        );
        match b_out {
            Some(b) => {
                let y = cx.op("MatMul", vec![ctx, wt], "out", vec![]);
                cx.finish("Add", vec![y, b], vec![]);
            }
            None => cx.finish("MatMul", vec![ctx, wt], vec![]),
        }
        Ok(())
    }
    fn name(&self) -> &'static str {
        "multi_head_attention"
    }
    fn describe(&self) -> String {
        let mut s = format!("heads={}", self.heads);
        if self.causal {
            s.push_str(", causal");
        }
        if !self.bias {
            s.push_str(", bias=false");
        }
        match self.rotary {
            Some(ROTARY_BASE) => s.push_str(", rotary"),
            Some(base) => s.push_str(&format!(", rotary_base={base}")),
            None => {}
        }
        if self.drops() {
            s.push_str(&format!(", dropout={}", self.dropout));
        }
        s
    }
    fn mode_dependent(&self) -> bool {
        self.drops()
    }
    fn needs_rng(&self) -> bool {
        self.drops()
    }
    fn has_params(&self) -> bool {
        true
    }
    fn differentiable(&self, input: usize) -> bool {
        input < 1 + usize::from(self.cross)
    }
    fn infer(&self, inputs: &[&ValueInfo], symbols: &[String]) -> Result<ValueInfo, OpError> {
        const OP: &str = "multi_head_attention";
        require_float(OP, 0, inputs[0])?;
        let q = &inputs[0].shape;
        let show = |s: &Shape| s.display(symbols).to_string();
        if q.rank() != 3 {
            return Err(OpError::input(
                0,
                format!("`{OP}` attends over sequences [batch, time, features], but this is {} (rank {}): {}", show(q), q.rank(),
                    if q.rank() == 2 { "give it a time axis (token ids [B, T] through `embedding` give [B, T, D])" } else { "reshape it to [batch, time, features]" }),
            ));
        }
        let Dim::Fixed(width) = q.0[2] else {
            return Err(OpError::input(
                0,
                format!("`{OP}` needs a fixed number of features, but this is {} whose last dim is symbolic: declare it as a number", show(q)),
            ));
        };
        if width % self.heads != 0 {
            return Err(OpError::call(format!(
                "{} heads do not divide the width {width} of {} (each head takes width / heads features): use a head count that divides {width} ({}), or change the width",
                self.heads,
                show(q),
                super::divisors_near(width, self.heads)
            )));
        }
        if self.rotary.is_some() && !(width / self.heads).is_multiple_of(2) {
            return Err(OpError::call(format!(
                "rotary position embeddings turn pairs of a head's features, but {} heads of the width {width} have {} features each, an odd number: use a head count that leaves an even head size",
                self.heads,
                width / self.heads
            )));
        }
        let kv_len = if self.cross {
            require_float(OP, 1, inputs[1])?;
            let m = &inputs[1].shape;
            if m.rank() != 3 || m.0[0] != q.0[0] || m.0[2] != q.0[2] {
                return Err(OpError::input(
                    1,
                    format!("the queries are {} so the memory they attend to must be [{}, S, {width}] (same batch and width, any length), but it is {}", show(q), q.0[0].display(symbols), show(m)),
                ));
            }
            m.0[1]
        } else {
            q.0[1]
        };
        if self.lengths {
            let slot = inputs.len() - 1;
            let l = inputs[slot];
            let batch = Shape(vec![q.0[0]]);
            match l.kind {
                ValueKind::Lengths { max } if l.shape == batch && max == kv_len => {}
                ValueKind::Lengths { max } if l.shape == batch => {
                    return Err(OpError::input(
                        slot,
                        format!("these lengths measure {} positions, but the keys have {}: declare them as `lengths {}`",
                            max.display(symbols),
                            kv_len.display(symbols),
                            kv_len.display(symbols)),
                    ))
                }
                _ => {
                    return Err(OpError::input(
                        slot,
                        format!("`lengths` takes one length per sequence of the keys: an input declared `len: {} lengths {};`, but this is {} holding {}",
                            show(&batch),
                            kv_len.display(symbols),
                            show(&l.shape),
                            l.kind.describe()),
                    ))
                }
            }
        }
        Ok(ValueInfo {
            shape: q.clone(),
            kind: ValueKind::Float,
        })
    }
    fn layer(&self, inputs: &[&ValueInfo]) -> Option<LayerSpec> {
        let (d, bias) = (Self::width(inputs), self.bias);
        let mut params = vec![ParamSpec {
            access: None,
            suffix: "in_proj_weight",
            optional: false,
            dims: vec![d.saturating_mul(3), d],
        }];
        if bias {
            params.push(ParamSpec {
                access: None,
                suffix: "in_proj_bias",
                optional: true,
                dims: vec![d.saturating_mul(3)],
            });
        }
        params.push(ParamSpec {
            access: None,
            suffix: "out_proj.weight",
            optional: false,
            dims: vec![d, d],
        });
        if bias {
            params.push(ParamSpec {
                access: None,
                suffix: "out_proj.bias",
                optional: true,
                dims: vec![d],
            });
        }
        Some(LayerSpec {
            ty: quote!(::kiln::layers::MultiheadAttention<F>),
            init: quote!(::kiln::layers::MultiheadAttention::new(#d, #bias, rng)),
            zeros: quote!(::kiln::layers::MultiheadAttention::zeros(#d, #bias)),
            params,
            buffers: Vec::new(),
            nested: None,
        })
    }
    fn scratch(&self, inputs: &[&ValueInfo], _output: &ValueInfo) -> Vec<ScratchSpec> {
        let q = inputs[0].shape.0.clone();
        let kv_len = if self.cross {
            inputs[1].shape.0.get(1).copied()
        } else {
            q.get(1).copied()
        };
        let (heads, rotary, dropout) = (self.heads, self.rotary, self.drops());
        vec![ScratchSpec {
            suffix: "saved",
            len: ScratchLen::OfDims(Box::new(move |dim| {
                let (batch, q_len, embed) = (dim(q[0]), dim(q[1]), dim(q[2]));
                let kv_len = kv_len.map_or_else(|| q_len.clone(), &dim);
                let dims = dims_literal([&batch, &q_len, &kv_len, &embed], heads, rotary, dropout);
                quote!(#dims.scratch_len())
            })),
        }]
    }
    fn backward_reads(&self) -> Reads {
        Reads {
            inputs: vec![true; 1 + usize::from(self.cross) + usize::from(self.lengths)],
            output: false,
        }
    }
    fn forward(&self, cx: &ForwardCx) -> TokenStream {
        let dims = self.dims(&cx.inputs, cx.training);
        let (memory, lengths) = self.memory_and_lengths(&cx.inputs);
        let (q, y, causal) = (&cx.inputs[0].data, &cx.output.data, self.causal);
        let params = params(&cx.params, self.bias);
        // Cross-attention decodes as the whole forward does (its memory is the same at every
        // call); causal self-attention reads its earlier keys and values from the cache.
        if let (Some(decode), false) = (&cx.decode, self.cross) {
            let (cache, offset, q_len) = (&decode.cache, &decode.offset, &cx.inputs[0].dims[1]);
            return quote! {
                ::kiln::kernels::kv_cache::multi_head_attention_cached(&mut #cache, #offset, #q_len, #q, &#params, #y);
            };
        }
        let scratch = &cx.scratch[0];
        let dropout = if cx.training && self.drops() {
            let (p, rng) = (self.dropout, &cx.rng);
            quote!(Some(::kiln::kernels::attention::AttentionDropout { p: #p, rng: #rng }))
        } else {
            quote!(None)
        };
        quote! {
            ::kiln::kernels::attention::multi_head_attention_forward(
                &#dims, #q, #memory, #causal, #lengths, &#params, #dropout, #scratch, #y,
            );
        }
    }
    fn backward(&self, cx: &BackwardCx) -> TokenStream {
        // The backward follows a training forward.
        let dims = self.dims(&cx.inputs, true);
        let (memory, lengths) = self.memory_and_lengths(&cx.inputs);
        let (q, dy, causal) = (&cx.inputs[0].data, &cx.d_output, self.causal);
        let params = params(&cx.params, self.bias);
        let scratch = &cx.scratch[0];
        let target = |slot: usize| cx.input_grad(slot);
        let (d_query, d_memory) = (target(0), if self.cross { target(1) } else { quote!(None) });
        let g = &cx.param_grads;
        let grads = if self.bias {
            let (w, b, ow, ob) = (&g[0], &g[1], &g[2], &g[3]);
            quote! {
                ::kiln::kernels::attention::AttentionGrads {
                    in_proj_weight: #w, in_proj_bias: Some(#b), out_proj_weight: #ow, out_proj_bias: Some(#ob),
                }
            }
        } else {
            let (w, ow) = (&g[0], &g[1]);
            quote! {
                ::kiln::kernels::attention::AttentionGrads {
                    in_proj_weight: #w, in_proj_bias: None, out_proj_weight: #ow, out_proj_bias: None,
                }
            }
        };
        // A frozen layer's step runs only for its inputs' gradients: the kernel skips its
        // weight and bias products when given no gradients (all four parameters are the
        // layer's, so one flag covers them).
        let trains = &cx.param_trainable[0];
        quote! {
            let attention_grads = if #trains { Some(#grads) } else { None };
            ::kiln::kernels::attention::multi_head_attention_backward(
                &#dims, #q, #memory, #causal, #lengths, &#params, #scratch, #dy, #d_query, #d_memory, attention_grads,
            );
        }
    }
}

/// `AttentionParams { .. }` from the layer's parameter locals.
fn params(p: &[TokenStream], bias: bool) -> TokenStream {
    if bias {
        let (w, b, ow, ob) = (&p[0], &p[1], &p[2], &p[3]);
        quote! {
            ::kiln::kernels::attention::AttentionParams {
                in_proj_weight: #w, in_proj_bias: Some(#b), out_proj_weight: #ow, out_proj_bias: Some(#ob),
            }
        }
    } else {
        let (w, ow) = (&p[0], &p[1]);
        quote! {
            ::kiln::kernels::attention::AttentionParams {
                in_proj_weight: #w, in_proj_bias: None, out_proj_weight: #ow, out_proj_bias: None,
            }
        }
    }
}
