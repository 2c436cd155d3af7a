//! Token embeddings: `embedding(tokens, dim, padding_idx = p)` (PyTorch's `nn.Embedding`,
//! `weight [vocab, dim]`, init N(0, 1), the padding row zero and never trained) and
//! `position_embedding(tokens, dim, max_len = n)` (a learned table `weight [max_len, dim]` whose
//! row `t` is added at position `t`, as GPT's `wpe`).

use super::{
    BackwardCx, Built, CallArgs, ForwardCx, Kernel, LayerSpec, OpError, OpSpec, ParamSpec, Reads,
};
use crate::ir::{Dim, Shape, ValueInfo, ValueKind};
use proc_macro2::TokenStream;
use quote::quote;

/// The registry entry of `embedding`.
pub struct EmbeddingSpec;
/// `embedding`.
pub static EMBEDDING: EmbeddingSpec = EmbeddingSpec;

impl OpSpec for EmbeddingSpec {
    fn name(&self) -> &'static str {
        "embedding"
    }
    fn usage(&self) -> &'static str {
        "embedding(tokens, dim)` or `embedding(tokens, dim, padding_idx = 0)"
    }
    fn build(&self, args: &mut CallArgs) -> syn::Result<Built> {
        args.positional(2, 2)?;
        args.tensor(0);
        let dim = args.int(1, "the embedding size")?;
        let padding_idx = args.opt_index("padding_idx")?;
        let vocab = args.opt_int("vocab")?;
        args.finish()?;
        Ok(Built::Kernel(Box::new(Embedding {
            dim,
            padding_idx,
            vocab,
        })))
    }
}

/// A token embedding table.
pub struct Embedding {
    dim: usize,
    padding_idx: Option<usize>,
    /// The vocabulary size the user wrote, checked against the tokens' declared one.
    vocab: Option<usize>,
}

/// The vocabulary of a token input, or the error for any other input.
fn token_vocab(op: &str, x: &ValueInfo, symbols: &[String]) -> Result<usize, OpError> {
    let shown = x.shape.display(symbols);
    match x.kind {
        ValueKind::Tokens { vocab } => Ok(vocab),
        ValueKind::Float => Err(OpError::input(
            0,
            format!("`{op}` looks up integer token ids, but this is a float tensor {shown}: declare the input as `input tokens: {shown} tokens N;` with the vocabulary size N"),
        )),
        kind => Err(OpError::input(
            0,
            format!("`{op}` looks up token ids, but this holds {}: declare an input `tokens: {shown} tokens N;` and pass it here", kind.describe()),
        )),
    }
}

impl Kernel for Embedding {
    fn decoding(&self, _inputs: &[&ValueInfo]) -> super::Decoding {
        super::Decoding::PositionWise
    }
    fn onnx(&self, cx: &mut crate::onnx::OnnxCx) -> Result<(), String> {
        let (w, ids) = (cx.param(0), cx.inputs[0].clone());
        cx.finish(
            "Gather",
            vec![w, ids],
            vec![("axis", crate::onnx::Attr::Int(0))],
        );
        Ok(())
    }
    fn name(&self) -> &'static str {
        "embedding"
    }
    fn describe(&self) -> String {
        match self.padding_idx {
            Some(p) => format!("dim={}, padding_idx={p}", self.dim),
            None => format!("dim={}", self.dim),
        }
    }
    fn has_params(&self) -> bool {
        true
    }
    fn differentiable(&self, _input: usize) -> bool {
        false
    }
    fn infer(&self, inputs: &[&ValueInfo], symbols: &[String]) -> Result<ValueInfo, OpError> {
        let vocab = token_vocab("embedding", inputs[0], symbols)?;
        if let Some(written) = self.vocab.filter(|&v| v != vocab) {
            return Err(OpError::call(format!(
                "this embedding is declared for a vocabulary of {written}, but `{{arg0}}` holds token ids below {vocab}: make the two sizes agree (the table gets one row per token id)"
            )));
        }
        if let Some(p) = self.padding_idx.filter(|&p| p >= vocab) {
            return Err(OpError::call(format!(
                "`padding_idx = {p}` is not a token id of this vocabulary (0 to {}): name the id your padding uses, usually `padding_idx = 0`",
                vocab - 1
            )));
        }
        let mut shape = inputs[0].shape.0.clone();
        shape.push(Dim::Fixed(self.dim));
        Ok(ValueInfo {
            shape: Shape(shape),
            kind: ValueKind::Float,
        })
    }
    fn layer(&self, inputs: &[&ValueInfo]) -> Option<LayerSpec> {
        let ValueKind::Tokens { vocab } = inputs[0].kind else {
            return None;
        };
        let dim = self.dim;
        let padding = match self.padding_idx {
            Some(p) => quote!(Some(#p)),
            None => quote!(None),
        };
        Some(LayerSpec {
            ty: quote!(::kiln::layers::Embedding<F>),
            init: quote!(::kiln::layers::Embedding::new(#vocab, #dim, #padding, rng)),
            zeros: quote!(::kiln::layers::Embedding::zeros(#vocab, #dim)),
            params: vec![ParamSpec {
                access: None,
                suffix: "weight",
                optional: false,
                dims: vec![vocab, dim],
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
        let (ids, y, w, dim) = (&cx.inputs[0].data, &cx.output.data, &cx.params[0], self.dim);
        quote! { ::kiln::kernels::embedding::embedding_forward(#ids, #w, #dim, #y); }
    }
    fn backward(&self, cx: &BackwardCx) -> TokenStream {
        let (ids, dy, dw, dim) = (
            &cx.inputs[0].data,
            &cx.d_output,
            &cx.param_grads[0],
            self.dim,
        );
        let acc = cx.param_grads_accumulate[0];
        let padding = match self.padding_idx {
            Some(p) => quote!(Some(#p)),
            None => quote!(None),
        };
        quote! { ::kiln::kernels::embedding::embedding_backward(#ids, #dy, #dim, #padding, #dw, #acc); }
    }
}

/// The registry entry of `position_embedding`.
pub struct PositionEmbeddingSpec;
/// `position_embedding`.
pub static POSITION_EMBEDDING: PositionEmbeddingSpec = PositionEmbeddingSpec;

impl OpSpec for PositionEmbeddingSpec {
    fn name(&self) -> &'static str {
        "position_embedding"
    }
    fn usage(&self) -> &'static str {
        "position_embedding(tokens, dim, max_len = 64)"
    }
    fn build(&self, args: &mut CallArgs) -> syn::Result<Built> {
        args.positional(2, 2)?;
        args.tensor(0);
        let dim = args.int(1, "the embedding size")?;
        let max_len = args.opt_int("max_len")?;
        // Unknown options first: `maxlen = 64` is a misspelt `max_len`, not a missing one.
        args.finish()?;
        let Some(max_len) = max_len else {
            return Err(syn::Error::new(
                args.span(),
                "`position_embedding` needs the longest sequence it will see, for its table: write `position_embedding(tokens, dim, max_len = 64)`",
            ));
        };
        Ok(Built::Kernel(Box::new(PositionEmbedding { dim, max_len })))
    }
}

/// A learned table of position vectors.
pub struct PositionEmbedding {
    dim: usize,
    max_len: usize,
}

impl Kernel for PositionEmbedding {
    fn decoding(&self, _inputs: &[&ValueInfo]) -> super::Decoding {
        // The new positions take the table's rows from the decoding offset on.
        super::Decoding::Incremental {
            cache: None,
            positions: Some((
                self.max_len,
                format!("a position table of `max_len = {}`", self.max_len),
            )),
        }
    }
    fn onnx(&self, cx: &mut crate::onnx::OnnxCx) -> Result<(), String> {
        use crate::onnx::Attr::Int;
        // Rows 0..T of the table, broadcast over the batch: [B, T] ids -> [B, T, dim].
        let (w, ids) = (cx.param(0), cx.inputs[0].clone());
        let shape = cx.op("Shape", vec![ids], "shape", vec![]);
        let one = cx.b.ints("index", vec![1]);
        let t = cx.op(
            "Gather",
            vec![shape.clone(), one],
            "len",
            vec![("axis", Int(0))],
        );
        let zero = cx.b.ints("start", vec![0]);
        let axes = cx.b.ints("axes", vec![0]);
        let rows = cx.op("Slice", vec![w, zero, t, axes.clone()], "rows", vec![]);
        let rows = cx.op("Unsqueeze", vec![rows, axes], "rows", vec![]);
        let dim = cx.b.ints("dim", vec![self.dim as i64]);
        let out_shape = cx.op(
            "Concat",
            vec![shape, dim],
            "out_shape",
            vec![("axis", Int(0))],
        );
        cx.finish("Expand", vec![rows, out_shape], vec![]);
        Ok(())
    }
    fn name(&self) -> &'static str {
        "position_embedding"
    }
    fn describe(&self) -> String {
        format!("dim={}, max_len={}", self.dim, self.max_len)
    }
    fn has_params(&self) -> bool {
        true
    }
    fn differentiable(&self, _input: usize) -> bool {
        false
    }
    fn infer(&self, inputs: &[&ValueInfo], symbols: &[String]) -> Result<ValueInfo, OpError> {
        token_vocab("position_embedding", inputs[0], symbols)?;
        let shape = &inputs[0].shape;
        if shape.rank() != 2 {
            return Err(OpError::input(
                0,
                format!(
                    "`position_embedding` numbers the positions of [batch, time] token ids, but these are {}",
                    shape.display(symbols)
                ),
            ));
        }
        if let Dim::Fixed(t) = shape.0[1] {
            if t > self.max_len {
                return Err(OpError::call(format!(
                    "these sequences have {t} positions but the table has `max_len = {}`: raise `max_len` to at least {t}",
                    self.max_len
                )));
            }
        }
        Ok(ValueInfo {
            shape: Shape(vec![shape.0[0], shape.0[1], Dim::Fixed(self.dim)]),
            kind: ValueKind::Float,
        })
    }
    fn layer(&self, _inputs: &[&ValueInfo]) -> Option<LayerSpec> {
        let (max_len, dim) = (self.max_len, self.dim);
        Some(LayerSpec {
            ty: quote!(::kiln::layers::Embedding<F>),
            init: quote!(::kiln::layers::Embedding::new(#max_len, #dim, None, rng)),
            zeros: quote!(::kiln::layers::Embedding::zeros(#max_len, #dim)),
            params: vec![ParamSpec {
                access: None,
                suffix: "weight",
                optional: false,
                dims: vec![max_len, dim],
            }],
            buffers: Vec::new(),
            nested: None,
        })
    }
    fn backward_reads(&self) -> Reads {
        Reads {
            inputs: vec![false],
            output: false,
        }
    }
    fn forward(&self, cx: &ForwardCx) -> TokenStream {
        let (batch, seq) = (&cx.inputs[0].dims[0], &cx.inputs[0].dims[1]);
        let (y, w, dim, max_len) = (&cx.output.data, &cx.params[0], self.dim, self.max_len);
        let layer = &cx.layer_name;
        if let Some(decode) = &cx.decode {
            let offset = &decode.offset;
            return quote! {
                if #offset + #seq > #max_len {
                    return Err(::kiln::Error::SequenceTooLong { layer: #layer, len: #offset + #seq, max: #max_len });
                }
                ::kiln::kernels::embedding::position_embedding_forward(#batch, #seq, &#w[#offset * #dim..], #dim, #y);
            };
        }
        quote! {
            if #seq > #max_len {
                return Err(::kiln::Error::SequenceTooLong { layer: #layer, len: #seq, max: #max_len });
            }
            ::kiln::kernels::embedding::position_embedding_forward(#batch, #seq, #w, #dim, #y);
        }
    }
    fn backward(&self, cx: &BackwardCx) -> TokenStream {
        let (batch, seq) = (&cx.inputs[0].dims[0], &cx.inputs[0].dims[1]);
        let (dy, dw, dim) = (&cx.d_output, &cx.param_grads[0], self.dim);
        let acc = cx.param_grads_accumulate[0];
        quote! { ::kiln::kernels::embedding::position_embedding_backward(#batch, #seq, #dy, #dim, #dw, #acc); }
    }
}
