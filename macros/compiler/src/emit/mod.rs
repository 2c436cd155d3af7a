//! Stage 7: IR -> Rust.
//!
//! Writes, for `struct Name`: the model struct (one field per layer), `NameGrads`,
//! `NameWorkspace` (every buffer a step needs, grown once and reused), the methods
//! (`new`, `zeros`, `forward`, `loss_and_grad` or `forward_train` + `backward`, ...),
//! `impl kiln::Model`, and for sequence models that allow it `NameCache` and
//! `forward_cached` (incremental decoding, `decode.rs`). The code is meant to be read
//! (`cargo expand`): buffers are named after the bindings they hold, and each step is
//! commented with what it computes.

mod api;
mod decode;
mod dot;
mod finite;
mod model_impl;
mod onnx;
mod passes;
mod structs;
mod stub;
mod supervised;
mod trainable;

use crate::autodiff::Schedule;
use crate::fuse::Fused;
use crate::ir::{Dim, Graph, NodeId, NodeKind, Shape};
use crate::ops::{LayerSpec, ScratchLen};
use crate::plan::Plan;
use proc_macro2::{Ident, Span, TokenStream};
use quote::{format_ident, quote};

/// Everything the emitters need, with naming helpers.
pub(crate) struct Ctx<'a> {
    pub g: &'a Graph,
    pub fused: &'a Fused,
    pub schedule: &'a Schedule,
    pub plan: &'a Plan,
    /// Each layer's spec (same order as `Graph::layers`).
    pub layers: Vec<LayerSpec>,
    pub name: &'a Ident,
    pub grads_name: Ident,
    pub workspace_name: Ident,
    pub buffers_name: Ident,
    /// The decoding cache's type (`NameCache`), for models with `forward_cached`.
    pub cache_name: Ident,
}

impl Ctx<'_> {
    pub fn ident(&self, s: &str) -> Ident {
        Ident::new(s, Span::call_site())
    }

    pub fn node_ident(&self, id: NodeId) -> Ident {
        self.ident(&self.g.nodes[id].name)
    }

    /// The workspace field holding a value: its own (`h1`), or the shared buffer of a
    /// transient value (`shared_0`).
    pub fn value_field(&self, id: NodeId) -> Ident {
        match self.plan.slots[id] {
            Some(slot) => format_ident!("shared_{}", slot),
            None => self.node_ident(id),
        }
    }

    /// The local name of a value's adjoint in generated code (`d_h1`).
    pub fn adjoint_ident(&self, id: NodeId) -> Ident {
        format_ident!("d_{}", self.g.nodes[id].name)
    }

    /// The workspace field holding a value's adjoint: a buffer shared with the adjoints whose
    /// lifetimes do not overlap its own (`d_shared_0`).
    pub fn adjoint_field(&self, id: NodeId) -> Ident {
        match self.plan.adjoint_slots[id] {
            Some(slot) => format_ident!("d_shared_{}", slot),
            None => self.adjoint_ident(id),
        }
    }

    pub fn dim_tokens(&self, d: Dim) -> TokenStream {
        match d {
            Dim::Fixed(n) => {
                let lit = proc_macro2::Literal::usize_unsuffixed(n);
                quote!(#lit)
            }
            Dim::Symbol(s) => {
                let id = self.ident(&self.g.symbols[s]);
                quote!(#id)
            }
            // `(8 * H - 2)`: the call boundary has checked that `H` keeps it at least 1.
            Dim::Affine {
                symbol,
                scale,
                offset,
            } => {
                let id = self.ident(&self.g.symbols[symbol]);
                let multiple = if scale == 1 {
                    quote!(#id)
                } else {
                    let scale = proc_macro2::Literal::usize_unsuffixed(scale);
                    quote!(#scale * #id)
                };
                let magnitude =
                    proc_macro2::Literal::usize_unsuffixed(offset.unsigned_abs() as usize);
                match offset.cmp(&0) {
                    std::cmp::Ordering::Equal => quote!((#multiple)),
                    std::cmp::Ordering::Greater => quote!((#multiple + #magnitude)),
                    std::cmp::Ordering::Less => quote!((#multiple - #magnitude)),
                }
            }
        }
    }

    /// The element count of a shape as an expression (`B * 128`).
    /// The element count of a shape as an expression of its dims (`B * 16 * 8 * 8`), which
    /// reads like the shape it comes from; dims of 1 are left out.
    pub fn len_tokens(&self, shape: &Shape) -> TokenStream {
        let parts: Vec<TokenStream> = shape
            .0
            .iter()
            .filter(|d| **d != Dim::Fixed(1))
            .map(|d| self.dim_tokens(*d))
            .collect();
        join_mul(&parts)
    }

    pub fn node_len(&self, id: NodeId) -> TokenStream {
        self.len_tokens(&self.g.info(id).shape)
    }

    /// `let [B, T] = ws.dims;` (nothing for a model without symbolic dims).
    pub fn bind_dims(&self, source: TokenStream) -> TokenStream {
        if self.g.symbols.is_empty() {
            return TokenStream::new();
        }
        let syms = self.g.symbols.iter().map(|s| self.ident(s));
        quote! { let [#(#syms),*] = #source; }
    }

    /// The ndarray dimension type of a shape (`Ix2`).
    pub fn ix(&self, shape: &Shape) -> TokenStream {
        let ix = format_ident!("Ix{}", shape.rank());
        quote!(::kiln::ndarray::#ix)
    }

    /// The ndarray dimension value of a shape (`Dim([B, 10])`).
    pub fn dim_value(&self, shape: &Shape) -> TokenStream {
        let dims = shape.0.iter().map(|d| self.dim_tokens(*d));
        quote!(::kiln::ndarray::Dim([#(#dims),*]))
    }

    pub fn is_input(&self, id: NodeId) -> bool {
        matches!(self.g.nodes[id].kind, NodeKind::Input(_))
    }

    /// Whether any of `nodes` behaves differently in training.
    pub fn has_mode_ops(&self, nodes: &[NodeId]) -> bool {
        nodes.iter().any(|&id| match &self.g.nodes[id].kind {
            NodeKind::Kernel(k) => k.mode_dependent(),
            _ => false,
        })
    }

    /// Whether the model draws random numbers (dropout): its workspace then holds a seeded
    /// generator.
    pub fn needs_rng(&self) -> bool {
        self.plan
            .values
            .iter()
            .any(|&id| match &self.g.nodes[id].kind {
                NodeKind::Kernel(k) => k.needs_rng(),
                _ => false,
            })
    }

    /// The workspace field holding a node's [`Kernel::state`](crate::ops::Kernel::state).
    pub fn state_field(&self, id: NodeId) -> Ident {
        format_ident!("{}_state", self.g.nodes[id].name)
    }

    /// The symbolic dims by name, as the locals the passes bind them to.
    pub fn symbol_locals(&self) -> Vec<(String, TokenStream)> {
        self.g
            .symbols
            .iter()
            .map(|s| {
                let id = self.ident(s);
                (s.clone(), quote!(#id))
            })
            .collect()
    }

    /// The scratch buffers of a node: field name and length.
    /// A node's scratch buffers: `(field, length, range)`, where `range` is what the passes
    /// slice (`..len`, or `..` when the runtime computes the length and takes the whole
    /// buffer).
    pub fn scratch_of(&self, id: NodeId) -> Vec<(Ident, TokenStream, TokenStream)> {
        let node = &self.g.nodes[id];
        let NodeKind::Kernel(k) = &node.kind else {
            return Vec::new();
        };
        let inputs: Vec<_> = node.inputs.iter().map(|&i| self.g.info(i)).collect();
        k.scratch(&inputs, self.g.info(id))
            .into_iter()
            .map(|s| {
                let field = format_ident!("{}_{}", node.name, s.suffix);
                match s.len {
                    ScratchLen::Shape(shape) => {
                        let len = self.len_tokens(&shape);
                        (field, len.clone(), quote!(..#len))
                    }
                    ScratchLen::Runtime(len) => (field, len, quote!(..)),
                    ScratchLen::OfDims(len) => {
                        let len = len(&|d| self.dim_tokens(d));
                        (field, len, quote!(..))
                    }
                }
            })
            .collect()
    }

    /// Whether layer `l` has parameters (a block's, in any of its layers).
    pub fn layer_has_params(&self, l: usize) -> bool {
        let spec = &self.layers[l];
        match &spec.nested {
            Some(n) => !n.param_names.is_empty(),
            None => !spec.params.is_empty(),
        }
    }

    /// The `state_dict` names of layer `l`'s parameters (a block's, block by block).
    pub fn layer_param_names(&self, l: usize) -> Vec<String> {
        let (layer, spec) = (&self.g.layers[l], &self.layers[l]);
        match &spec.nested {
            Some(n) => n.param_names.clone(),
            None => spec
                .params
                .iter()
                .map(|p| format!("{}.{}", layer.name, p.suffix))
                .collect(),
        }
    }

    /// The `state_dict` names and accessors of every parameter, in order:
    /// (name, layer field, param field, optional, element count).
    pub fn params(&self) -> Vec<(String, Ident, TokenStream, bool, usize)> {
        let mut out = Vec::new();
        for (layer, spec) in self.g.layers.iter().zip(&self.layers) {
            for p in &spec.params {
                out.push((
                    format!("{}.{}", layer.name, p.suffix),
                    layer.name.clone(),
                    p.place(),
                    p.optional,
                    p.dims.iter().product(),
                ));
            }
        }
        out
    }
}

fn join_mul(parts: &[TokenStream]) -> TokenStream {
    let mut iter = parts.iter();
    let mut out = iter.next().cloned().unwrap_or_else(|| quote!(1));
    for p in iter {
        out = quote!(#out * #p);
    }
    out
}

/// Each layer's spec, in [`Graph::layers`] order.
fn layer_specs(g: &Graph) -> Vec<LayerSpec> {
    g.layers
        .iter()
        .map(|l| {
            let node = &g.nodes[l.node];
            let inputs: Vec<_> = node.inputs.iter().map(|&i| g.info(i)).collect();
            match &node.kind {
                NodeKind::Kernel(k) => k.layer(&inputs),
                _ => None,
            }
            .unwrap_or_else(|| LayerSpec {
                ty: quote!(()),
                init: quote!(()),
                zeros: quote!(()),
                params: Vec::new(),
                buffers: Vec::new(),
                nested: None,
            })
        })
        .collect()
}

/// The model's ONNX graph as data (what `Model::onnx_graph` describes), for a block call to
/// inline into its caller's; `Err` names an op with no ONNX form.
pub fn onnx_parts(g: &Graph, fused: &Fused) -> Result<crate::onnx::Parts, String> {
    onnx::build(g, &layer_specs(g), fused)
}

pub use decode::{decodable, position_limit};

/// Emits the whole model.
pub fn emit(g: &Graph, fused: &Fused, schedule: &Schedule, plan: &Plan) -> TokenStream {
    let layers = layer_specs(g);
    let items: TokenStream = g
        .nodes
        .iter()
        .filter_map(|n| match &n.kind {
            NodeKind::Kernel(k) => Some(k.items()),
            _ => None,
        })
        .collect();
    let cx = Ctx {
        g,
        fused,
        schedule,
        plan,
        layers,
        name: &g.name,
        grads_name: format_ident!("{}Grads", g.name),
        workspace_name: format_ident!("{}Workspace", g.name),
        buffers_name: format_ident!("{}Buffers", g.name),
        cache_name: format_ident!("{}Cache", g.name),
    };
    let structs = structs::emit(&cx);
    let passes = passes::emit(&cx);
    let api = api::emit(&cx);
    let model_impl = model_impl::emit(&cx);
    let supervised = supervised::emit(&cx);
    let trainable = trainable::emit(&cx);
    let decode = decode::emit(&cx);
    unsuffix(quote! {
        #items
        #structs
        #api
        #passes
        #decode
        #model_impl
        #supervised
        #trainable
    })
}

/// Rewrites `784usize` as `784`: `quote` suffixes every integer, generated code reads better
/// without, and every integer here is a `usize` by context.
fn unsuffix(tokens: TokenStream) -> TokenStream {
    tokens
        .into_iter()
        .map(|t| match t {
            proc_macro2::TokenTree::Literal(lit) => {
                let text = lit.to_string();
                match text
                    .strip_suffix("usize")
                    .and_then(|n| n.parse::<usize>().ok())
                {
                    Some(n) => {
                        let mut plain = proc_macro2::Literal::usize_unsuffixed(n);
                        plain.set_span(lit.span());
                        proc_macro2::TokenTree::Literal(plain)
                    }
                    None => proc_macro2::TokenTree::Literal(lit),
                }
            }
            proc_macro2::TokenTree::Group(g) => {
                let mut new = proc_macro2::Group::new(g.delimiter(), unsuffix(g.stream()));
                new.set_span(g.span());
                proc_macro2::TokenTree::Group(new)
            }
            other => other,
        })
        .collect()
}

/// A stand-in for a model that failed to compile: the types and method signatures the real
/// model would have, with `unimplemented!` bodies, so that the user's other code still
/// type-checks around the reported errors (and their editor keeps working).
pub fn stub(input: &TokenStream) -> TokenStream {
    stub::emit(input)
}
