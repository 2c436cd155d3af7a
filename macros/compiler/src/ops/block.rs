//! Calls of a declared block: `Layer(x, repeat = 4)` or `Decoder(y, memory, repeat = 2)`.
//!
//! A block is compiled as a model of its own (its inputs declared with the shapes of the
//! call's arguments, its gradients with respect to them computed too), emitted once beside
//! the model that calls it. The call is one kernel: forward runs the block's pass once per
//! repetition, each over its own buffers (kept for backward), feeding each block's output to
//! the next; backward runs the blocks' backward passes in reverse, handing each input
//! gradient to the block before. The generated code does not grow with the repetition
//! count: the blocks' parameters are a `Vec` of the block's model type.

use super::{BackwardCx, ForwardCx, Kernel, LayerSpec, NestedSpec, OpError, Reads};
use crate::ast::{BlockDef, DimAst, IntAst, ModelDef, Stmt};
use crate::ir::{Dim, Graph, NodeKind, ValueInfo, ValueKind};
use proc_macro2::{Ident, Span, TokenStream};
use quote::{format_ident, quote};
use std::cell::RefCell;
use syn::Visibility;

/// One call of a block.
pub struct BlockCall {
    /// The block as declared.
    pub def: BlockDef,
    /// The calling model's name, for docs.
    pub model: Ident,
    /// The visibility of the calling model.
    pub vis: Visibility,
    /// The block's generated model type (`GptLayer`).
    pub type_name: Ident,
    /// The binding the call's parameters are named after (`h` -> `h.0.ln_1.weight`).
    pub binding: String,
    /// `repeat = n`: a chain of `n` blocks, parameters named with an index; without it, one
    /// block named without.
    pub repeat: Option<usize>,
    /// The block compiled for the call's argument types (filled by the shape rule).
    pub compiled: RefCell<Option<Compiled>>,
}

/// What the outer model's code needs of a compiled block.
pub struct Compiled {
    items: TokenStream,
    symbols: Vec<String>,
    /// The least value of each of the block's symbols (see [`Graph::symbol_minimums`]): the
    /// block's own layers may shrink an axis further than the caller's do.
    minimums: Vec<usize>,
    /// The dims of the block's inputs, in its own symbols.
    input_dims: Vec<Vec<Dim>>,
    output_field: Ident,
    output_adjoint: Option<Ident>,
    input_adjoints: Vec<Option<Ident>>,
    train_forward: bool,
    /// The block draws random numbers (dropout): its buffers hold a generator.
    needs_rng: bool,
    param_names: Vec<String>,
    /// Each buffer's `state_dict` name within one block (running statistics).
    buffer_names: Vec<String>,
    scalars: usize,
    /// The block has a decoding pass (`run_forward_cached`) and cache type.
    decodable: bool,
    /// The most positions its decoding pass can address, and what sets the limit (see
    /// [`crate::emit::position_limit`]).
    positions: Option<(usize, String)>,
    /// The block's ONNX graph, its inputs' value names (in declaration order; `None` for one
    /// the output does not read) and its output's, or why it has none.
    onnx: Result<(crate::onnx::OnnxBuilder, Vec<Option<String>>, String), String>,
}

impl BlockCall {
    fn count(&self) -> usize {
        self.repeat.unwrap_or(1)
    }

    /// The block as a model declaration: its inputs typed like the call's arguments.
    fn as_model(&self, inputs: &[&ValueInfo], symbols: &[String]) -> ModelDef {
        let span = self.def.name.span();
        let mut stmts = Vec::new();
        let mut grad_inputs = Vec::new();
        // A block declares its inputs as a model does: numbers, symbols and formulas of them.
        let sym = |d: Dim| match d.linear() {
            None => DimAst::Fixed(d.fixed_or_zero(), span),
            Some((s, 1, 0)) => DimAst::Symbol(Ident::new(&symbols[s], span)),
            Some((s, k, offset)) => DimAst::Multiple(k, Ident::new(&symbols[s], span), offset),
        };
        for (param, info) in self.def.params.iter().zip(inputs) {
            let dims = info.shape.0.iter().map(|&d| sym(d)).collect();
            let (ints, is_target) = match info.kind {
                ValueKind::Float => {
                    grad_inputs.push(param.to_string());
                    (None, false)
                }
                ValueKind::Tokens { vocab } => (Some(IntAst::Tokens(vocab, span)), false),
                ValueKind::Lengths { max } => (Some(IntAst::Lengths(sym(max))), false),
                ValueKind::Labels { .. } => (None, true),
            };
            stmts.push(if is_target {
                Stmt::Target {
                    name: param.clone(),
                    dims,
                    classes: match info.kind {
                        ValueKind::Labels { classes } => Some((classes, span)),
                        _ => None,
                    },
                }
            } else {
                Stmt::Input {
                    name: param.clone(),
                    dims,
                    ints,
                }
            });
        }
        stmts.extend(self.def.stmts.iter().cloned());
        stmts.push(Stmt::Output {
            names: vec![self.def.output.clone()],
        });
        let doc = format!(
            " One `{}` block of [`{}`], compiled once and applied by its call `{}`.",
            self.def.name, self.model, self.binding
        );
        ModelDef {
            attrs: vec![syn::parse_quote!(#[doc = #doc])],
            vis: self.vis.clone(),
            name: self.type_name.clone(),
            stmts,
            blocks: Vec::new(),
            grad_inputs,
            body_span: span,
        }
    }

    fn compile(&self, def: ModelDef) -> syn::Result<(Compiled, ValueInfo)> {
        let mut graph = crate::lower::lower(def)?;
        crate::shape::infer(&mut graph)?;
        let fused = crate::fuse::fuse(&mut graph);
        let schedule = crate::autodiff::differentiate(&graph, &fused)?;
        let plan = crate::plan::plan(&graph, &fused, &schedule);
        let items = crate::emit::emit(&graph, &fused, &schedule, &plan);
        let (out, _) = &graph.outputs[0];
        let adjoint_field = |id: usize| -> Option<Ident> {
            if !plan.adjoints.contains(&id) {
                return None;
            }
            Some(match plan.adjoint_slots[id] {
                Some(slot) => format_ident!("d_shared_{}", slot),
                None => format_ident!("d_{}", graph.nodes[id].name),
            })
        };
        let BlockState {
            params: param_names,
            buffers: buffer_names,
            scalars,
        } = block_state(&graph);
        let onnx = crate::emit::onnx_parts(&graph, &fused).map(|parts| {
            let inputs = graph
                .inputs
                .iter()
                .map(|d| {
                    parts
                        .inputs
                        .iter()
                        .find(|(id, _)| *id == d.node)
                        .map(|(_, n)| n.clone())
                })
                .collect();
            let output = parts.outputs.first().cloned().unwrap_or_default();
            (parts.b, inputs, output)
        });
        let compiled = Compiled {
            items,
            symbols: graph.symbols.clone(),
            minimums: graph.symbol_minimums(),
            input_dims: graph.inputs.iter().map(|d| d.dims.clone()).collect(),
            output_field: Ident::new(&graph.nodes[*out].name, Span::call_site()),
            output_adjoint: adjoint_field(*out),
            input_adjoints: graph.inputs.iter().map(|d| adjoint_field(d.node)).collect(),
            train_forward: plan
                .forward_nodes
                .iter()
                .any(|&id| match &graph.nodes[id].kind {
                    NodeKind::Kernel(k) => k.mode_dependent(),
                    _ => false,
                }),
            needs_rng: plan.values.iter().any(|&id| match &graph.nodes[id].kind {
                NodeKind::Kernel(k) => k.needs_rng(),
                _ => false,
            }),
            param_names,
            buffer_names,
            scalars,
            decodable: crate::emit::decodable(&graph, &plan),
            positions: crate::emit::position_limit(&graph, &plan),
            onnx,
        };
        Ok((compiled, graph.info(*out).clone()))
    }

    fn with<R>(&self, f: impl FnOnce(&Compiled) -> R) -> Option<R> {
        self.compiled.borrow().as_ref().map(f)
    }

    fn buffers_ty(&self) -> Ident {
        format_ident!("{}Buffers", self.type_name)
    }

    fn cache_ty(&self) -> Ident {
        format_ident!("{}Cache", self.type_name)
    }

    /// `[B, T]`: the block's symbolic dims, as the calling pass's locals.
    fn dims(&self, symbols: &[(String, TokenStream)]) -> TokenStream {
        let dims = self
            .with(|c| {
                c.symbols
                    .iter()
                    .map(|s| {
                        symbols
                            .iter()
                            .find(|(n, _)| n == s)
                            .map_or_else(|| quote!(0), |(_, t)| t.clone())
                    })
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        quote!([#(#dims),*])
    }
}

/// Locals of the generated loops, with mixed-site hygiene so that they never capture or
/// shadow the model's own names.
fn locals<const N: usize>(names: [&str; N]) -> [Ident; N] {
    names.map(|n| Ident::new(n, Span::mixed_site()))
}

/// What one block saves, by `state_dict` name within the block.
struct BlockState {
    /// Each parameter's name.
    params: Vec<String>,
    /// Each buffer's name (running statistics).
    buffers: Vec<String>,
    /// The trainable scalars.
    scalars: usize,
}

/// The parameters and buffers of a block's layers, nested blocks' included, in order.
fn block_state(graph: &Graph) -> BlockState {
    let mut state = BlockState {
        params: Vec::new(),
        buffers: Vec::new(),
        scalars: 0,
    };
    for layer in &graph.layers {
        let node = &graph.nodes[layer.node];
        let NodeKind::Kernel(k) = &node.kind else {
            continue;
        };
        let inputs: Vec<&ValueInfo> = node.inputs.iter().map(|&i| graph.info(i)).collect();
        let Some(spec) = k.layer(&inputs) else {
            continue;
        };
        for p in &spec.params {
            state.params.push(format!("{}.{}", layer.name, p.suffix));
            state.scalars += p.dims.iter().product::<usize>();
        }
        for b in &spec.buffers {
            state.buffers.push(format!("{}.{}", layer.name, b.suffix));
        }
        if let Some(n) = &spec.nested {
            state.params.extend(n.param_names.iter().cloned());
            state.buffers.extend(n.buffer_names.iter().cloned());
            state.scalars += n.scalars;
        }
    }
    state
}

impl Kernel for BlockCall {
    fn decoding_with(&self, inputs: &[&ValueInfo], is_static: &[bool]) -> super::Decoding {
        // The block's own decoding pass tells its other inputs apart as the model's does (by
        // their shapes): only the chained input must be new positions.
        if is_static.first() == Some(&true) {
            return super::Decoding::Unsupported;
        }
        self.decoding(inputs)
    }
    fn decoding(&self, _inputs: &[&ValueInfo]) -> super::Decoding {
        if self.with(|c| c.decodable) != Some(true) {
            return super::Decoding::Unsupported;
        }
        // One cache per repetition, each for the block's own attention layers.
        let (cache, n) = (self.cache_ty(), self.count());
        let positions = self
            .with(|c| c.positions.clone())
            .flatten()
            .map(|(n, why)| (n, format!("a block whose {why}")));
        super::Decoding::Incremental {
            cache: Some(super::DecodeCache {
                ty: quote!(Vec<#cache<F>>),
                init: quote!((0..#n).map(|_| #cache::new(batch, capacity)).collect::<::kiln::Result<_>>()?),
                keeps: "each repeated block's own cache",
            }),
            positions,
        }
    }
    fn onnx(&self, cx: &mut crate::onnx::OnnxCx) -> Result<(), String> {
        use crate::onnx::{Data, Init, Node};
        use std::collections::HashMap;
        // The block's graph inlined once per repetition (unrolled): repetition `i` reads the
        // `binding.i.*` initializers and the previous repetition's output as its first input.
        let compiled = self.compiled.borrow();
        let Some(c) = compiled.as_ref() else {
            return Err("the block was not compiled".into());
        };
        let (inner, inner_inputs, inner_output) = c
            .onnx
            .as_ref()
            .map_err(|e| format!("in block `{}`: {e}", self.def.name))?;
        let mut current = cx.inputs.clone();
        for i in 0..self.count() {
            let prefix = match self.repeat {
                Some(_) => format!("{}.{i}.", self.binding),
                None => format!("{}.", self.binding),
            };
            let mut names: HashMap<String, String> = HashMap::new();
            names.insert(String::new(), String::new());
            for (k, name) in inner_inputs.iter().enumerate() {
                if let (Some(name), Some(outer)) = (name, current.get(k)) {
                    names.insert(name.clone(), outer.clone());
                }
            }
            for init in &inner.inits {
                let data = match &init.data {
                    Data::Params(sources, blocks) => Data::Params(
                        sources.iter().map(|s| format!("{prefix}{s}")).collect(),
                        blocks.clone(),
                    ),
                    other => other.clone(),
                };
                let name = cx.b.fresh(&format!("{prefix}{}", init.name));
                names.insert(init.name.clone(), name.clone());
                cx.b.inits.push(Init {
                    name,
                    dims: init.dims.clone(),
                    data,
                });
            }
            for node in &inner.nodes {
                let inputs = node
                    .inputs
                    .iter()
                    .map(|v| {
                        names.get(v).cloned().ok_or_else(|| {
                            format!("block value `{v}` is read before it is written")
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let outputs = node
                    .outputs
                    .iter()
                    .map(|v| {
                        let n = cx.b.fresh(&format!("{prefix}{v}"));
                        names.insert(v.clone(), n.clone());
                        n
                    })
                    .collect();
                cx.b.nodes.push(Node {
                    op: node.op,
                    name: format!("{prefix}{}", node.name),
                    inputs,
                    outputs,
                    attrs: node.attrs.clone(),
                });
            }
            current[0] = names
                .get(inner_output)
                .cloned()
                .ok_or_else(|| format!("block `{}` has no output", self.def.name))?;
        }
        let out = current[0].clone();
        cx.finish("Identity", vec![out], vec![]);
        Ok(())
    }
    fn name(&self) -> &'static str {
        "block"
    }
    fn describe(&self) -> String {
        match self.repeat {
            Some(n) => format!("{} x {n}", self.def.name),
            None => self.def.name.to_string(),
        }
    }
    fn has_params(&self) -> bool {
        true
    }
    fn mode_dependent(&self) -> bool {
        self.with(|c| c.train_forward).unwrap_or(false)
    }
    fn needs_rng(&self) -> bool {
        self.with(|c| c.needs_rng).unwrap_or(false)
    }
    /// The block's least symbol values, in the caller's symbols: `s ≥ m` as the size
    /// `s − (m − 1)`, which the caller's boundary keeps at least 1.
    fn required_sizes(&self, inputs: &[&ValueInfo]) -> Vec<Dim> {
        self.with(|c| {
            let mut sizes = Vec::new();
            for (info, inner) in inputs.iter().zip(&c.input_dims) {
                for (outer, inner) in info.shape.0.iter().zip(inner) {
                    if let (Some((caller, ..)), Some((own, ..))) = (outer.linear(), inner.linear())
                    {
                        let least = c.minimums.get(own).copied().unwrap_or(1);
                        if least > 1 {
                            sizes.push(Dim::affine(caller, 1, 1 - least as i64));
                        }
                    }
                }
            }
            sizes
        })
        .unwrap_or_default()
    }
    fn infer(&self, inputs: &[&ValueInfo], symbols: &[String]) -> Result<ValueInfo, OpError> {
        // The first argument is what the blocks hand on, one block's output to the next (and
        // its gradient back): float values. Integer inputs (token ids, lengths) go to every
        // block as later arguments.
        if let Some(first) = inputs.first().filter(|i| i.kind != ValueKind::Float) {
            let fix = match first.kind {
                ValueKind::Tokens { .. } => format!(
                    "turn the ids into vectors before the block (`let x = embedding(ids, dim); let h = {}(x, ..)`), or pass them after a float argument",
                    self.def.name
                ),
                _ => "pass them after a float argument (`block B(x, lengths)`), for every block to read".to_string(),
            };
            return Err(OpError::input(
                0,
                format!(
                    "`{}` takes float values as its first argument (the value each block passes to the next), but this holds {}: {fix}",
                    self.def.name,
                    first.kind.describe()
                ),
            ));
        }
        let def = self.as_model(inputs, symbols);
        let (compiled, out) = self.compile(def).map_err(|e| OpError {
            message: String::new(),
            input: None,
            spanned: Some(e),
        })?;
        // The block numbers its symbolic dims in its own order of appearance; the caller's
        // may differ (`[B, S]` declared before `[B, T]`): map them back by name.
        let mut out = out;
        for d in &mut out.shape.0 {
            if let Some((s, scale, offset)) = d.linear() {
                let name = &compiled.symbols[s];
                let Some(outer) = symbols.iter().position(|n| n == name) else {
                    return Err(OpError::call(format!(
                        "`{}` returns a dim `{name}` its inputs do not have",
                        self.def.name
                    )));
                };
                *d = Dim::affine(outer, scale, offset);
            }
        }
        if self.count() > 1 && (out.shape != inputs[0].shape || out.kind != inputs[0].kind) {
            return Err(OpError::call(format!(
                "`{}` returns {} but takes {} as its first input: a chain of blocks (`repeat = {}`) feeds each block's output to the next, so the two must have the same shape; make the block return its input's shape (e.g. end with a residual `x + ...` or a `linear(..., {})`)",
                self.def.name,
                out.shape.display(symbols),
                inputs[0].shape.display(symbols),
                self.count(),
                match inputs[0].shape.last() {
                    Some(Dim::Fixed(n)) => n.to_string(),
                    _ => "width".to_string(),
                },
            )));
        }
        if compiled.param_names.is_empty() {
            // Fine: a block of pointwise ops has no parameters.
        }
        *self.compiled.borrow_mut() = Some(compiled);
        Ok(out)
    }
    fn layer(&self, _inputs: &[&ValueInfo]) -> Option<LayerSpec> {
        let (ty, n) = (&self.type_name, self.count());
        let grads = format_ident!("{}Grads", self.type_name);
        let (names, buffers, scalars) =
            self.with(|c| (c.param_names.clone(), c.buffer_names.clone(), c.scalars))?;
        let prefix = |names: &[String]| -> Vec<String> {
            (0..n)
                .flat_map(|i| {
                    let index = if self.repeat.is_some() {
                        format!("{i}.")
                    } else {
                        String::new()
                    };
                    names
                        .iter()
                        .map(move |p| format!("{}.{index}{p}", self.binding))
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        let prefixed = prefix(&names);
        Some(LayerSpec {
            ty: quote!(::std::vec::Vec<#ty<F>>),
            init: quote!((0..#n).map(|_| #ty::new(rng)).collect()),
            zeros: quote!((0..#n).map(|_| #ty::zeros()).collect()),
            params: Vec::new(),
            buffers: Vec::new(),
            nested: Some(NestedSpec {
                model: quote!(#ty<F>),
                count: n,
                grad_ty: quote!(::std::vec::Vec<#grads<F>>),
                grad_zeros: quote!(layer.iter().map(|block| block.zero_grads()).collect()),
                param_names: prefixed,
                buffer_names: prefix(&buffers),
                scalars: scalars * n,
            }),
        })
    }
    fn state(&self) -> Option<(TokenStream, TokenStream)> {
        let bufs = self.buffers_ty();
        Some((
            quote!(::std::vec::Vec<#bufs<F>>),
            quote!(::std::vec::Vec::new()),
        ))
    }
    fn freeze_state(&self, state: &TokenStream) -> Option<TokenStream> {
        let (bufs, n, binding) = (self.buffers_ty(), self.count(), &self.binding);
        let [states, i, block, name] = locals(["states", "i", "block", "name"]);
        // One application is named like a layer (`h.ln.weight`), several by index.
        let full_name = if self.repeat.is_some() {
            let pattern = format!("{binding}.{{}}.{{}}");
            quote!(&::std::format!(#pattern, #i, #name))
        } else {
            let pattern = format!("{binding}.{{}}");
            quote!(&::std::format!(#pattern, #name))
        };
        Some(quote! {
            let #states = &mut #state;
            if #states.len() < #n {
                #states.resize_with(#n, #bufs::new);
            }
            for (#i, #block) in #states.iter_mut().enumerate() {
                #block.freeze(&|#name: &str| frozen(#full_name));
            }
        })
    }
    fn items(&self) -> TokenStream {
        self.with(|c| c.items.clone()).unwrap_or_default()
    }
    fn backward_reads(&self) -> Reads {
        Reads {
            inputs: vec![true; self.def.params.len()],
            output: false,
        }
    }
    fn forward(&self, cx: &ForwardCx) -> TokenStream {
        let Some((out_field, train_forward, needs_rng)) =
            self.with(|c| (c.output_field.clone(), c.train_forward, c.needs_rng))
        else {
            return TokenStream::new();
        };
        let (n, bufs, dims) = (self.count(), self.buffers_ty(), self.dims(&cx.symbols));
        let (place, layer, training) = (&cx.state, &cx.layer, cx.training);
        let x = &cx.inputs[0].data;
        let extras: Vec<&TokenStream> = cx.inputs[1..].iter().map(|o| &o.data).collect();
        let (y, len) = (&cx.output.data, &cx.output.len);
        let [states, input, block, state] = locals(["states", "input", "block", "state"]);
        if let Some(decode) = &cx.decode {
            let (caches, offset) = (&decode.cache, &decode.offset);
            let [slot] = locals(["slot"]);
            return quote! {
                let #states = &mut #place;
                if #states.len() < #n {
                    #states.resize_with(#n, #bufs::new);
                }
                let mut #input: &[F] = #x;
                for ((#block, #state), #slot) in #layer.iter().zip(#states.iter_mut()).zip(#caches.iter_mut()) {
                    #state.prepare(#dims, false, false);
                    #block.run_forward_cached(#state, #slot, #offset, #input, #(#extras),*)?;
                    #input = &#state.#out_field[..#len];
                }
                ::kiln::kernels::shape_ops::copy_into(#input, #y);
            };
        }
        let run = if training && train_forward {
            quote!(run_forward_train)
        } else {
            quote!(run_forward)
        };
        // Training mode updates the blocks' running statistics: they are borrowed mutably.
        let mutates = training && self.with(|c| !c.buffer_names.is_empty()) == Some(true);
        let blocks = if mutates {
            quote!(iter_mut)
        } else {
            quote!(iter)
        };
        // Each repetition's dropout draws from a generator seeded, step by step, from the
        // model's own: the masks differ between blocks and follow the workspace's seed.
        let reseed = if training && needs_rng {
            let rng = &cx.rng;
            quote! {
                #state.rng = <::kiln::rand::rngs::StdRng as ::kiln::rand::SeedableRng>::seed_from_u64(
                    ::kiln::rand::RngExt::random::<u64>(#rng),
                );
            }
        } else {
            TokenStream::new()
        };
        quote! {
            let #states = &mut #place;
            if #states.len() < #n {
                #states.resize_with(#n, #bufs::new);
            }
            let mut #input: &[F] = #x;
            for (#block, #state) in #layer.#blocks().zip(#states.iter_mut()) {
                #state.prepare(#dims, false, #training);
                #reseed
                #block.#run(#state, #input, #(#extras),*)?;
                #input = &#state.#out_field[..#len];
            }
            ::kiln::kernels::shape_ops::copy_into(#input, #y);
        }
    }
    fn backward(&self, cx: &BackwardCx) -> TokenStream {
        let Some((out_field, out_adjoint, input_adjoints)) = self.with(|c| {
            (
                c.output_field.clone(),
                c.output_adjoint.clone(),
                c.input_adjoints.clone(),
            )
        }) else {
            return TokenStream::new();
        };
        let n = self.count();
        let [states, state, input, i, before, rest, prev] =
            locals(["states", "state", "input", "i", "before", "rest", "prev"]);
        let (place, layer, layer_grads) = (&cx.state, &cx.layer, &cx.layer_grads);
        let (x, len) = (&cx.inputs[0].data, &cx.inputs[0].len);
        let extras: Vec<&TokenStream> = cx.inputs[1..].iter().map(|o| &o.data).collect();
        let dy = &cx.d_output;
        let seed = match &out_adjoint {
            Some(f) => quote! {
                ::kiln::kernels::shape_ops::copy_into(#dy, &mut #states[#n - 1].#f[..#len]);
            },
            None => TokenStream::new(),
        };
        // Each extra input's gradient is the sum over the blocks: the first block in backward
        // order writes (or adds, if the step accumulates), the others add.
        let mut extra_grads = TokenStream::new();
        for (k, target) in cx.d_inputs.iter().enumerate().skip(1) {
            let Some(t) = target else { continue };
            let (d, acc, elen) = (&t.data, t.accumulate, &cx.inputs[k].len);
            extra_grads.extend(match &input_adjoints[k] {
                Some(f) => quote! {
                    ::kiln::kernels::shape_ops::add_into(&#state.#f[..#elen], #d, #acc || #i + 1 != #n);
                },
                None => quote! {
                    if !(#acc || #i + 1 != #n) { <[F]>::fill(#d, F::ZERO); }
                },
            });
        }
        let first_input = match (&cx.d_inputs[0], &input_adjoints[0]) {
            (Some(t), Some(f)) => {
                let (d, acc) = (&t.data, t.accumulate);
                quote! { ::kiln::kernels::shape_ops::add_into(&#state.#f[..#len], #d, #acc); }
            }
            (Some(t), None) if !t.accumulate => {
                // `#d` is a borrow (`&mut ws.x[..n]`): `#d.fill(..)` would fill and then
                // borrow the unit it returns.
                let d = &t.data;
                quote! { <[F]>::fill(#d, F::ZERO); }
            }
            _ => TokenStream::new(),
        };
        let chain = match (&input_adjoints[0], &out_adjoint) {
            (Some(f), Some(o)) => quote! {
                ::kiln::kernels::shape_ops::copy_into(&#state.#f[..#len], &mut #prev.#o[..#len]);
            },
            _ => TokenStream::new(),
        };
        let dims = self.dims(&cx.symbols);
        quote! {
            let #states = &mut #place;
            // The forward pass may have run without the adjoint buffers (no training-mode op
            // in the model): size them now; this allocates only the first time.
            for #state in #states.iter_mut() {
                #state.prepare(#dims, false, true);
            }
            #seed
            for #i in (0..#n).rev() {
                let (#before, #rest) = #states.split_at_mut(#i);
                let #state = &mut #rest[0];
                let #input: &[F] = match #before.last() {
                    Some(#prev) => &#prev.#out_field[..#len],
                    None => #x,
                };
                #layer[#i].run_backward(#state, #input, #(#extras,)* &mut #layer_grads[#i], None)?;
                #extra_grads
                match #before.last_mut() {
                    Some(#prev) => { #chain }
                    None => { #first_input }
                }
            }
        }
    }
}
