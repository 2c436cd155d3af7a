//! The passes: `run_forward` (the values that reach an output), `run_loss` (the rest, up to
//! the loss) and `run_backward` (the VJP steps of the schedule, each run only when a trainable
//! layer lies behind its value: see [`Need`]). Each works on the buffers struct `ws` and the
//! inputs as slices.

use super::Ctx;
use crate::autodiff::{pointwise_vjp, vjp_reads, D_OUT};
use crate::ir::{NodeId, NodeKind};
use crate::ops::{BackwardCx, DecodeCx, ForwardCx, GradTarget, Operand};
use proc_macro2::{Ident, Span, TokenStream};
use quote::{format_ident, quote};
use std::collections::BTreeSet;

pub(super) fn emit(cx: &Ctx) -> TokenStream {
    let name = cx.name;
    let float_inputs = input_params(cx, false);
    let all_inputs = input_params(cx, true);
    let mut fns = TokenStream::new();
    // A pass whose ops behave differently in training (dropout, batch norm) is emitted twice:
    // `run_forward` for inference and `run_forward_train`, which may update running
    // statistics and so takes `&mut self`.
    for training in [false, true] {
        if training && !cx.has_mode_ops(&cx.plan.forward_nodes) {
            continue;
        }
        let fn_name = if training {
            quote!(run_forward_train)
        } else {
            quote!(run_forward)
        };
        let doc = if training {
            " Computes every value that reaches an output, in training mode."
        } else {
            " Computes every value that reaches an output."
        };
        fns.extend(pass_fn(
            cx,
            &cx.plan.forward_nodes,
            training,
            fn_name,
            doc,
            &float_inputs,
            None,
        ));
    }
    if let Some(loss) = cx.g.loss {
        for training in [false, true] {
            if training && !cx.has_mode_ops(&cx.plan.loss_nodes) {
                continue;
            }
            let fn_name = if training {
                quote!(run_loss_train)
            } else {
                quote!(run_loss)
            };
            let doc =
                " Computes the values after the outputs, up to the loss, and returns the loss.";
            fns.extend(pass_fn(
                cx,
                &cx.plan.loss_nodes,
                training,
                fn_name,
                doc,
                &all_inputs,
                Some(loss),
            ));
        }
    }
    fns.extend(emit_backward(cx, &all_inputs));
    quote! {
        impl<F: ::kiln::Float> #name<F> {
            #fns
        }
    }
}

fn pass_fn(
    cx: &Ctx,
    nodes: &[NodeId],
    training: bool,
    fn_name: TokenStream,
    doc: &str,
    inputs: &[TokenStream],
    loss: Option<NodeId>,
) -> TokenStream {
    let bufs = &cx.buffers_name;
    let code = emit_values(cx, nodes, training, None);
    let (params, body) = (code.params, code.body);
    let bind = cx.bind_dims(quote!(ws.dims));
    let receiver = if training && code.mutates_self {
        quote!(&mut self)
    } else {
        quote!(&self)
    };
    let (ret, value) = match loss {
        Some(l) => {
            let b = cx.node_ident(l);
            (quote!(F), quote!(ws.#b[0]))
        }
        None => (quote!(()), quote!(())),
    };
    quote! {
        #[doc = #doc]
        #[allow(non_snake_case, unused_variables, unused_doc_comments, clippy::too_many_arguments)]
        fn #fn_name(#receiver, ws: &mut #bufs<F>, #(#inputs),*) -> ::kiln::Result<#ret> {
            #bind
            #params
            #body
            Ok(#value)
        }
    }
}

/// `x: &[F], y: &[usize]` for the inputs (and, with `targets`, the targets).
pub(super) fn input_params(cx: &Ctx, targets: bool) -> Vec<TokenStream> {
    cx.g.inputs
        .iter()
        .filter(|d| targets || !d.is_target)
        .map(|d| {
            let n = &d.name;
            if d.ints.is_some() {
                quote!(#n: &[usize])
            } else {
                quote!(#n: &[F])
            }
        })
        .collect()
}

pub(super) struct Code {
    pub params: TokenStream,
    pub body: TokenStream,
    /// The pass writes model buffers (running statistics) and so needs `&mut self`.
    pub mutates_self: bool,
}

fn operand(cx: &Ctx, id: NodeId, mutable: bool) -> Operand {
    let info = cx.g.info(id);
    let len = cx.node_len(id);
    let dims = info.shape.0.iter().map(|d| cx.dim_tokens(*d)).collect();
    let ident = cx.value_field(id);
    let (data, first) = if cx.is_input(id) {
        (quote!(#ident), quote!(#ident[0]))
    } else if mutable {
        (quote!(&mut ws.#ident[..#len]), quote!(ws.#ident[0]))
    } else {
        (quote!(&ws.#ident[..#len]), quote!(ws.#ident[0]))
    };
    Operand {
        data,
        len,
        dims,
        first,
    }
}

/// `let h1_weight = ::kiln::shape::param("h1.weight", &self.h1.weight, 100352)?;` for each
/// parameter of the given layers, the gradient slices when `grads`, and the buffers (mutable
/// when `buffers_mut`).
fn param_locals(cx: &Ctx, layers: &BTreeSet<usize>, grads: bool, buffers_mut: bool) -> TokenStream {
    let mut out = TokenStream::new();
    for &l in layers {
        let layer = &cx.g.layers[l];
        let field = &layer.name;
        for p in &cx.layers[l].params {
            let name = format!("{}.{}", layer.name, p.suffix);
            let local = format_ident!("{}_{}", layer.name, p.field());
            let pf = p.place();
            let len = product(&p.dims);
            out.extend(if p.optional {
                quote! { let #local = ::kiln::shape::param_opt(#name, self.#field.#pf.as_ref(), #len)?; }
            } else {
                quote! { let #local = ::kiln::shape::param(#name, &self.#field.#pf, #len)?; }
            });
            if grads {
                let glocal = format_ident!("d_{}_{}", layer.name, p.field());
                out.extend(if p.optional {
                    quote! { let #glocal = ::kiln::shape::param_opt_mut(#name, grads.#field.#pf.as_mut(), #len)?; }
                } else {
                    quote! { let #glocal = ::kiln::shape::param_mut(#name, &mut grads.#field.#pf, #len)?; }
                });
            }
        }
        for b in &cx.layers[l].buffers {
            let name = format!("{}.{}", layer.name, b.suffix);
            let local = format_ident!("{}_{}", layer.name, b.field());
            let bf = b.place();
            let len = product(&b.dims);
            out.extend(if buffers_mut {
                quote! { let #local = ::kiln::shape::param_mut(#name, &mut self.#field.#bf, #len)?; }
            } else {
                quote! { let #local = ::kiln::shape::param(#name, &self.#field.#bf, #len)?; }
            });
        }
    }
    out
}

/// `128 * 784`: a parameter's element count as its dims, which reads better than `100352`.
fn product(dims: &[usize]) -> TokenStream {
    let lits = dims
        .iter()
        .map(|&d| proc_macro2::Literal::usize_unsuffixed(d));
    let mut out = TokenStream::new();
    for (i, lit) in lits.enumerate() {
        if i > 0 {
            out.extend(quote!(*));
        }
        out.extend(quote!(#lit));
    }
    if dims.is_empty() {
        out.extend(quote!(1));
    }
    out
}

/// `self.h` (or `grads.h`): a layer as a place, for ops that use it whole (blocks).
fn layer_place(cx: &Ctx, layer: Option<usize>, root: TokenStream) -> TokenStream {
    match layer {
        Some(l) => {
            let f = &cx.g.layers[l].name;
            quote!(#root.#f)
        }
        None => root,
    }
}

fn layer_locals(cx: &Ctx, layer: usize, prefix: &str) -> Vec<TokenStream> {
    locals_of(cx, layer, prefix, &cx.layers[layer].params)
}

fn buffer_locals(cx: &Ctx, layer: usize) -> Vec<TokenStream> {
    locals_of(cx, layer, "", &cx.layers[layer].buffers)
}

fn locals_of(
    cx: &Ctx,
    layer: usize,
    prefix: &str,
    specs: &[crate::ops::ParamSpec],
) -> Vec<TokenStream> {
    let l = &cx.g.layers[layer];
    specs
        .iter()
        .map(|p| {
            let id = format_ident!("{}{}_{}", prefix, l.name, p.field());
            quote!(#id)
        })
        .collect()
}

/// The code computing `nodes` in order. With `decode`, the pass is a decoding pass
/// (`run_forward_cached`): incremental ops get their field of the `cache` and the `offset`.
/// The nodes of a decoding pass (see `emit::decode`).
pub(super) struct DecodeNodes {
    /// Which nodes run on the new positions only (their kernels get the decoding context);
    /// the others, computed from inputs that are not sequences, are computed whole.
    pub dynamic: Vec<bool>,
    /// Which of those static values the cache keeps (the ones the dynamic nodes or the
    /// outputs read): static nodes are then computed at the first position only, and the
    /// kept values copied back into their buffers at the later ones. `None`: every static
    /// node is computed again at each call.
    pub kept: Option<Vec<bool>>,
}

/// `decode`: the nodes of a decoding pass, for one.
pub(super) fn emit_values(
    cx: &Ctx,
    nodes: &[NodeId],
    training: bool,
    decode: Option<&DecodeNodes>,
) -> Code {
    let mut layers = BTreeSet::new();
    let mut body = TokenStream::new();
    let mut mutates_self = false;
    for &id in nodes {
        let node = &cx.g.nodes[id];
        let doc = super::structs::describe_node(cx, id);
        let comment = format!(
            " {}",
            doc.trim().trim_end_matches(" Read by the backward pass.")
        );
        let code = match &node.kind {
            NodeKind::Input(_) => continue,
            NodeKind::Kernel(k) => {
                let mut params = Vec::new();
                if let Some(t) = node.tied {
                    layers.insert(t);
                    params.extend(layer_locals(cx, t, "").into_iter().take(1));
                }
                let buffers = match node.layer {
                    Some(l) => {
                        layers.insert(l);
                        params.extend(layer_locals(cx, l, ""));
                        buffer_locals(cx, l)
                    }
                    None => Vec::new(),
                };
                let nested_buffers = node
                    .layer
                    .and_then(|l| cx.layers[l].nested.as_ref())
                    .is_some_and(|n| !n.buffer_names.is_empty());
                mutates_self |= training && (!buffers.is_empty() || nested_buffers);
                k.forward(&ForwardCx {
                    inputs: node.inputs.iter().map(|&i| operand(cx, i, false)).collect(),
                    output: operand(cx, id, true),
                    params,
                    buffers,
                    scratch: scratch_slices(cx, id),
                    training,
                    layer_name: node
                        .layer
                        .map_or_else(|| node.name.clone(), |l| cx.g.layers[l].name.to_string()),
                    rng: quote!(&mut ws.rng),
                    state: {
                        let f = cx.state_field(id);
                        quote!(ws.#f)
                    },
                    layer: layer_place(cx, node.layer, quote!(self)),
                    symbols: cx.symbol_locals(),
                    decode: decode.is_some_and(|d| d.dynamic[id]).then(|| {
                        let field = cx.node_ident(id);
                        DecodeCx {
                            cache: quote!(cache.#field),
                            offset: quote!(offset),
                        }
                    }),
                })
            }
            NodeKind::Pointwise { term, .. } => pointwise_forward(cx, id, *term),
        };
        let check = super::finite::forward(cx, id);
        let kept = decode
            .filter(|d| !d.dynamic[id])
            .and_then(|d| d.kept.as_ref());
        body.extend(match kept {
            Some(kept) => static_value(cx, id, &comment, code, check, kept[id]),
            None => quote! {
                #[doc = #comment]
                { #code }
                #check
            },
        });
    }
    let params = used_only(param_locals(cx, &layers, false, training), &body);
    Code {
        params,
        body,
        mutates_self,
    }
}

/// A static value in a decoding pass whose cache keeps static values: computed at the first
/// position only, and, when `kept`, saved in the cache then and copied back into its buffer
/// at the later positions.
fn static_value(
    cx: &Ctx,
    id: NodeId,
    comment: &str,
    code: TokenStream,
    check: TokenStream,
    kept: bool,
) -> TokenStream {
    if !kept {
        return quote! {
            #[doc = #comment]
            if offset == 0 {
                { #code }
                #check
            }
        };
    }
    let field = super::decode::static_field(cx, id);
    let name = &cx.g.nodes[id].name;
    let (read, write) = (operand(cx, id, false).data, operand(cx, id, true).data);
    quote! {
        #[doc = #comment]
        if offset == 0 {
            { #code }
            #check
            cache.#field.clear();
            cache.#field.extend_from_slice(#read);
        } else {
            ::kiln::shape::restore_static(#name, &cache.#field, #write)?;
        }
    }
}

/// Keeps the `let` statements of `locals` whose name `body` mentions: a pass fetches only
/// the parameters its kernels read.
fn used_only(locals: TokenStream, body: &TokenStream) -> TokenStream {
    let mut kept = TokenStream::new();
    let mut statement = Vec::new();
    for token in locals {
        let end = matches!(&token, proc_macro2::TokenTree::Punct(p) if p.as_char() == ';');
        statement.push(token);
        if end {
            // `let NAME = ...;`: the name is the second token.
            let name = match statement.get(1) {
                Some(proc_macro2::TokenTree::Ident(id)) => Some(id.clone()),
                _ => None,
            };
            if name.is_none_or(|n| mentions(body, &n)) {
                kept.extend(statement.drain(..));
            } else {
                statement.clear();
            }
        }
    }
    kept.extend(statement);
    kept
}

fn mentions(tokens: &TokenStream, name: &Ident) -> bool {
    tokens.clone().into_iter().any(|t| match t {
        proc_macro2::TokenTree::Ident(id) => id == *name,
        proc_macro2::TokenTree::Group(g) => mentions(&g.stream(), name),
        _ => false,
    })
}

/// `&mut ws.<node>_<suffix>[..len]` (or `[..]`) for each scratch buffer of a node.
fn scratch_slices(cx: &Ctx, id: NodeId) -> Vec<TokenStream> {
    cx.scratch_of(id)
        .into_iter()
        .map(|(ident, _, range)| quote!(&mut ws.#ident[#range]))
        .collect()
}

/// The values a pointwise loop reads, once each (`x * x` reads `x` once), and the statements
/// slicing them to `len` elements: workspace buffers, and model inputs re-sliced.
fn input_slices(cx: &Ctx, inputs: &[NodeId], len: &TokenStream) -> (Vec<Ident>, TokenStream) {
    let mut idents: Vec<Ident> = Vec::new();
    let mut out = TokenStream::new();
    for &i in inputs {
        let local = cx.node_ident(i);
        if idents.contains(&local) {
            continue;
        }
        if cx.is_input(i) {
            out.extend(quote! { let #local = &#local[..#len]; });
        } else {
            let field = cx.value_field(i);
            out.extend(quote! { let #local = &ws.#field[..#len]; });
        }
        idents.push(local);
    }
    (idents, out)
}

/// An element-wise loop over equal-length slices, run on the two halves of the batch (on two
/// threads) when it is large: `::kiln::kernels::parallel::split_batch`. The inputs are
/// re-sliced to the outputs' length inside, so that the compiler sees equal, known lengths,
/// drops every bounds check and vectorises the loop.
fn split_loop(
    cx: &Ctx,
    id: NodeId,
    inputs: &[Ident],
    outputs: &[Ident],
    body: TokenStream,
) -> TokenStream {
    let batch = match cx.g.info(id).shape.0.first() {
        Some(&d) => cx.dim_tokens(d),
        None => quote!(1),
    };
    let first = &outputs[0];
    let (i, n) = (loop_index(), Ident::new("n", Span::mixed_site()));
    let (ni, no) = (inputs.len(), outputs.len());
    // A unit struct with an `#[inline(always)]` method, not a closure: `split_batch` runs it
    // inside copies compiled for AVX-512 or AVX2, and only an inlined body is vectorized for
    // them (a closure of this size stays a separate, baseline-CPU function).
    let body_ty = Ident::new("Elementwise", Span::mixed_site());
    quote! {
        struct #body_ty;
        impl<F: ::kiln::Float> ::kiln::kernels::parallel::ElementLoopBody<F, #ni, #no> for #body_ty {
            #[inline(always)]
            #[allow(non_snake_case)]
            fn apply(&self, [#(#inputs),*]: [&[F]; #ni], [#(#outputs),*]: [&mut [F]; #no]) {
                let #n = #first.len();
                #( let #inputs = &#inputs[..#n]; )*
                for #i in 0..#n {
                    #body
                }
            }
        }
        ::kiln::kernels::parallel::split_batch(#batch, [#(#inputs),*], [#(#outputs),*], #body_ty);
    }
}

/// `let a = a[i];` for each slice the loop body reads: every element is loaded before any
/// branch, so a `relu`-style select compiles to a branch-free vector blend instead of a
/// data-dependent jump.
fn element_loads(slices: &[Ident]) -> TokenStream {
    let i = loop_index();
    slices.iter().map(|s| quote! { let #s = #s[#i]; }).collect()
}

/// The element index of the generated loops. Its mixed-site hygiene keeps it apart from the
/// model's own names (a value may be called `i` or `n`).
fn loop_index() -> Ident {
    Ident::new("i", Span::mixed_site())
}

fn pointwise_forward(cx: &Ctx, id: NodeId, term: usize) -> TokenStream {
    let node = &cx.g.nodes[id];
    let len = cx.node_len(id);
    let (out, field) = (cx.node_ident(id), cx.value_field(id));
    // Computed in place (the plan gave it its dying input's buffer): that input is read from
    // the output slice, element by element, before the element is overwritten.
    let in_place: Vec<NodeId> = node
        .inputs
        .iter()
        .copied()
        .filter(|&i| !cx.is_input(i) && cx.value_field(i) == field)
        .collect();
    let separate: Vec<NodeId> = node
        .inputs
        .iter()
        .copied()
        .filter(|i| !in_place.contains(i))
        .collect();
    let (inputs, slices) = input_slices(cx, &separate, &len);
    let i = loop_index();
    let loads: TokenStream =
        cx.g.exprs
            .vars(term)
            .into_iter()
            .map(|n| {
                let ident = cx.node_ident(n);
                let source = if in_place.contains(&n) { &out } else { &ident };
                quote! { let #ident = #source[#i]; }
            })
            .collect();
    let (lets, exprs) = cx.g.exprs.emit(&[term], &|n| {
        let ident = cx.node_ident(n);
        quote!(#ident)
    });
    let expr = &exprs[0];
    let body = quote! {
        #loads
        #lets
        #out[#i] = #expr;
    };
    let run = split_loop(cx, id, &inputs, std::slice::from_ref(&out), body);
    quote! {
        #slices
        let #out = &mut ws.#field[..#len];
        #run
    }
}

/// When a node's adjoint is needed at run time: when a trainable parameter lies behind the
/// node (its own layer's, or one behind an input). Freezing layers (the workspace's
/// `freeze`) turns the backward steps of values with only frozen layers behind them off.
pub(super) enum Need {
    /// No parameter lies behind the node.
    Never,
    /// A value the backward pass always needs (a block's input).
    Always,
    /// When this run-time condition holds: `need_h1`, or an expression over
    /// `ws.trainable[..]` and the inputs' conditions.
    When(TokenStream),
}

/// Each node's [`Need`], and the `let need_h1 = ..;` statements that name those of the
/// backward steps' nodes, in forward order, for the top of `run_backward`.
fn needs(cx: &Ctx) -> (Vec<Need>, TokenStream) {
    let (g, s) = (cx.g, cx.schedule);
    let stepped: BTreeSet<NodeId> = s.steps.iter().map(|step| step.node).collect();
    let mut needs: Vec<Need> = Vec::with_capacity(g.nodes.len());
    let mut lets = TokenStream::new();
    for (id, node) in g.nodes.iter().enumerate() {
        if !s.needs_grad[id] {
            needs.push(Need::Never);
            continue;
        }
        let mut terms: Vec<TokenStream> = g
            .param_layers(id)
            .filter(|&l| cx.layer_has_params(l))
            .map(|l| quote!(ws.trainable[#l]))
            .collect();
        let own_layers = terms.len();
        let mut always = matches!(node.kind, NodeKind::Input(_));
        for (slot, &input) in node.inputs.iter().enumerate() {
            let flows = match &node.kind {
                NodeKind::Kernel(k) => k.differentiable(slot),
                _ => true,
            };
            if !flows {
                continue;
            }
            match &needs[input] {
                Need::Never => {}
                Need::Always => always = true,
                Need::When(c) => {
                    if !terms.iter().any(|t| t.to_string() == c.to_string()) {
                        terms.push(c.clone());
                    }
                }
            }
        }
        let need = if always {
            Need::Always
        } else if terms.is_empty() {
            Need::Never
        } else if let ([one], true) = (terms.as_slice(), own_layers == 0) {
            // A value computed from one that needs its adjoint (relu(h)): the same condition.
            Need::When(one.clone())
        } else if stepped.contains(&id) {
            let name = format_ident!("need_{}", node.name);
            lets.extend(quote! { let #name = #(#terms)||*; });
            Need::When(quote!(#name))
        } else {
            Need::When(quote!((#(#terms)||*)))
        };
        needs.push(need);
    }
    if !lets.is_empty() {
        lets = quote! {
            #[doc = " Whether each step runs: whether a trainable parameter lies behind its value."]
            #lets
        };
    }
    (needs, lets)
}

/// Zeroes layer `l`'s gradients: through the `d_` locals (`d_h1_weight`) that `code` uses,
/// which borrow them for the whole pass, and through `grads` otherwise.
fn zero_layer_grads(cx: &Ctx, l: usize, code: &TokenStream) -> TokenStream {
    let field = &cx.g.layers[l].name;
    if let Some(n) = &cx.layers[l].nested {
        let model = &n.model;
        return quote! {
            for g in grads.#field.iter_mut() {
                <#model as ::kiln::Model<F>>::visit_grads_mut(g, &mut |_, mut g| g.fill(F::ZERO));
            }
        };
    }
    let mut zero = TokenStream::new();
    for p in &cx.layers[l].params {
        let local = format_ident!("d_{}_{}", field, p.field());
        if mentions(code, &local) {
            // Optional or not, the local is a slice (`shape::param_opt_mut`).
            zero.extend(quote! { #local.fill(F::ZERO); });
            continue;
        }
        let pf = p.place();
        zero.extend(if p.optional {
            quote! { if let Some(g) = grads.#field.#pf.as_mut() { g.fill(F::ZERO); } }
        } else {
            quote! { grads.#field.#pf.fill(F::ZERO); }
        });
    }
    zero
}

fn emit_backward(cx: &Ctx, all_inputs: &[TokenStream]) -> TokenStream {
    let g = cx.g;
    let s = cx.schedule;
    let mut layers = BTreeSet::new();
    let mut body = TokenStream::new();
    let (needs, need_lets) = needs(cx);
    if let Some(loss) = g.loss {
        let d = cx.adjoint_field(loss);
        body.extend(quote! {
            /// d loss / d loss = 1
            { ws.#d[0] = F::ONE; }
        });
    }
    // After the step that writes a layer's gradients for the last time, the layer is
    // reported to the sink (if any): data-parallel training starts summing it across
    // processes while the rest of the backward pass runs.
    let mut last_write = vec![None; g.layers.len()];
    let mut writers = vec![0; g.layers.len()];
    for (k, step) in s.steps.iter().enumerate() {
        for l in g.param_layers(step.node) {
            last_write[l] = Some(k);
            writers[l] += 1;
        }
    }
    for (k, step) in s.steps.iter().enumerate() {
        let id = step.node;
        let node = &g.nodes[id];
        let targets: Vec<Option<GradTarget>> = step
            .d_inputs
            .iter()
            .zip(&node.inputs)
            .map(|(d, &i)| {
                d.map(|accumulate| {
                    let (field, len) = (cx.adjoint_field(i), cx.node_len(i));
                    GradTarget {
                        data: quote!(&mut ws.#field[..#len]),
                        accumulate,
                    }
                })
            })
            .collect();
        let code = match &node.kind {
            NodeKind::Input(_) => continue,
            NodeKind::Kernel(k) => {
                let (mut params, mut param_grads, mut param_grads_accumulate) =
                    (Vec::new(), Vec::new(), Vec::new());
                let mut param_trainable = Vec::new();
                let lent = node.tied.map(|t| (t, 1));
                let own = node.layer.map(|l| (l, cx.layers[l].params.len()));
                for ((l, count), &accumulate) in
                    lent.into_iter().chain(own).zip(&step.param_accumulate)
                {
                    layers.insert(l);
                    params.extend(layer_locals(cx, l, "").into_iter().take(count));
                    param_grads.extend(layer_locals(cx, l, "d_").into_iter().take(count));
                    param_grads_accumulate.extend(std::iter::repeat_n(accumulate, count));
                    param_trainable.extend(std::iter::repeat_n(quote!(ws.trainable[#l]), count));
                }
                let (dout, len) = (cx.adjoint_field(id), cx.node_len(id));
                k.backward(&BackwardCx {
                    inputs: node.inputs.iter().map(|&i| operand(cx, i, false)).collect(),
                    output: operand(cx, id, false),
                    d_output: quote!(&ws.#dout[..#len]),
                    d_output_first: quote!(ws.#dout[0]),
                    d_inputs: targets,
                    params,
                    param_grads,
                    param_grads_accumulate,
                    param_trainable,
                    scratch: scratch_slices(cx, id),
                    state: {
                        let f = cx.state_field(id);
                        quote!(ws.#f)
                    },
                    layer: layer_place(cx, node.layer, quote!(self)),
                    layer_grads: layer_place(cx, node.layer, quote!(grads)),
                    symbols: cx.symbol_locals(),
                })
            }
            NodeKind::Pointwise { term, .. } => pointwise_backward(cx, id, *term, &step.d_inputs),
        };
        let written: Vec<String> = step
            .d_inputs
            .iter()
            .zip(&node.inputs)
            .filter_map(|(d, &i)| {
                d.map(|acc| format!("d_{} {}", g.nodes[i].name, if acc { "(+=)" } else { "(=)" }))
            })
            .chain(
                g.param_layers(id)
                    .map(|l| format!("grads.{}", g.layers[l].name)),
            )
            .collect();
        let comment = format!(
            " d_{} -> {} (backward of {})",
            node.name,
            written.join(", "),
            g.op_name(id)
        );
        let written_inputs: Vec<NodeId> = step
            .d_inputs
            .iter()
            .zip(&node.inputs)
            .filter_map(|(d, &i)| d.map(|_| i))
            .collect();
        let check = super::finite::backward(cx, id, &written_inputs, &needs, &needs[id]);
        // Skipped, the step still owes zeros to the layers whose gradients it writes first
        // and later steps add to (a tied parameter's); the others are zeroed below.
        let zero_first: TokenStream = g
            .param_layers(id)
            .zip(&step.param_accumulate)
            .filter(|&(l, &accumulate)| !accumulate && writers[l] > 1)
            .map(|(l, _)| zero_layer_grads(cx, l, &code))
            .collect();
        body.extend(match &needs[id] {
            Need::Always => quote! {
                #[doc = #comment]
                { #code }
                #check
            },
            Need::When(condition) if zero_first.is_empty() => quote! {
                #[doc = #comment]
                if #condition {
                    #code
                    #check
                }
            },
            Need::When(condition) => quote! {
                #[doc = #comment]
                if #condition {
                    #code
                    #check
                } else {
                    #zero_first
                }
            },
            // No parameter lies behind the value, and every layer it writes has none.
            Need::Never => TokenStream::new(),
        });
        for l in (0..g.layers.len()).filter(|&l| last_write[l] == Some(k)) {
            if cx.layer_has_params(l) {
                // Skipped, or run for the adjoint of a trainable layer before it. The `d_`
                // locals are done with: `grads` is free again.
                let zero = zero_layer_grads(cx, l, &TokenStream::new());
                let comment = format!(" `{}` is frozen: its gradients are zero", g.layers[l].name);
                body.extend(quote! {
                    #[doc = #comment]
                    if !ws.trainable[#l] { #zero }
                });
            }
            body.extend(report_layer(cx, l));
        }
    }
    for &l in &s.unreached_layers {
        let field = &g.layers[l].name;
        let comment = format!(" `{field}` does not reach the loss: its gradient is zero");
        let zero = zero_layer_grads(cx, l, &TokenStream::new());
        body.extend(quote! { #[doc = #comment] { #zero } });
        body.extend(report_layer(cx, l));
    }
    let params = used_only(param_locals(cx, &layers, true, false), &body);
    let bind = cx.bind_dims(quote!(ws.dims));
    let grads_name = &cx.grads_name;
    let bufs = &cx.buffers_name;
    quote! {
        /// The backward pass: one VJP step per node with an adjoint, in reverse order.
        #[allow(non_snake_case, unused_variables, unused_doc_comments, clippy::too_many_arguments)]
        fn run_backward(&self, ws: &mut #bufs<F>, #(#all_inputs,)* grads: &mut #grads_name<F>, mut sink: Option<&mut dyn ::kiln::GradSink<F>>) -> ::kiln::Result<()> {
            #bind
            #params
            #need_lets
            #body
            Ok(())
        }
    }
}

/// `if let Some(sink) = .. { ::kiln::report_grad(sink, 0, &grads.h1.weight); .. }`: hands a
/// layer's final gradients to the sink, with their indices in `visit_params_with_grads`
/// order. Nothing for a layer without parameters; one branch per layer without a sink.
fn report_layer(cx: &Ctx, l: usize) -> TokenStream {
    let (layer, spec) = (&cx.g.layers[l], &cx.layers[l]);
    let field = &layer.name;
    let first = first_param_index(cx, l);
    let calls = match &spec.nested {
        Some(n) if !n.param_names.is_empty() => {
            let per_block = n.param_names.len() / n.count.max(1);
            let model = &n.model;
            quote! {
                for (i, g) in grads.#field.iter().enumerate() {
                    let base = #first + i * #per_block;
                    <#model as ::kiln::Model<F>>::visit_grads_indexed(g, &mut |k, g| sink.ready(base + k, g));
                }
            }
        }
        Some(_) => return TokenStream::new(),
        None if spec.params.is_empty() => return TokenStream::new(),
        None => spec
            .params
            .iter()
            .enumerate()
            .map(|(k, p)| {
                let (pf, index) = (p.place(), first + k);
                if p.optional {
                    quote! {
                        if let Some(g) = grads.#field.#pf.as_ref() {
                            ::kiln::report_grad(sink, #index, g);
                        }
                    }
                } else {
                    quote! { ::kiln::report_grad(sink, #index, &grads.#field.#pf); }
                }
            })
            .collect(),
    };
    let comment = format!(" `{field}`'s gradients are final: report them");
    quote! {
        #[doc = #comment]
        if let Some(sink) = sink.as_deref_mut() {
            #calls
        }
    }
}

/// The index of layer `l`'s first parameter in `visit_params_with_grads` order (absent
/// optional parameters count: the numbering does not depend on the values).
fn first_param_index(cx: &Ctx, l: usize) -> usize {
    cx.layers[..l]
        .iter()
        .map(|spec| match &spec.nested {
            Some(n) => n.param_names.len(),
            None => spec.params.len(),
        })
        .sum()
}

fn pointwise_backward(cx: &Ctx, id: NodeId, term: usize, d_inputs: &[Option<bool>]) -> TokenStream {
    let g = cx.g;
    let node = &g.nodes[id];
    let len = cx.node_len(id);
    let (arena, vjps) = pointwise_vjp(g, id, term, d_inputs);
    // The values the derivative terms read (the output itself for relu), sliced once each.
    let (mut inputs, slices) = input_slices(cx, &vjp_reads(&arena, &vjps), &len);
    let (dout, dout_field) = (cx.adjoint_ident(id), cx.adjoint_field(id));
    let roots: Vec<usize> = vjps.iter().map(|&(_, root)| root).collect();
    let targets: Vec<(Ident, Ident, bool)> = vjps
        .iter()
        .map(|&(k, _)| {
            let (input, accumulate) = (node.inputs[k], d_inputs[k] == Some(true));
            (cx.adjoint_ident(input), cx.adjoint_field(input), accumulate)
        })
        .collect();
    let local = |n: usize| {
        if n == D_OUT {
            dout.clone()
        } else {
            cx.node_ident(n)
        }
    };
    let mut read: Vec<Ident> = Vec::new();
    for &root in &roots {
        for ident in arena.vars(root).into_iter().map(local) {
            if !read.contains(&ident) {
                read.push(ident);
            }
        }
    }
    let loads = element_loads(&read);
    let (lets, exprs) = arena.emit(&roots, &|n| {
        let ident = local(n);
        quote!(#ident)
    });
    let mut target_slices = TokenStream::new();
    let mut stores = TokenStream::new();
    let mut outputs = Vec::new();
    let i = loop_index();
    for ((ident, field, accumulate), expr) in targets.iter().zip(&exprs) {
        target_slices.extend(quote! { let #ident = &mut ws.#field[..#len]; });
        stores.extend(if *accumulate {
            quote! { #ident[#i] += #expr; }
        } else {
            quote! { #ident[#i] = #expr; }
        });
        outputs.push(ident.clone());
    }
    if outputs.is_empty() {
        return TokenStream::new();
    }
    inputs.push(dout.clone());
    let body = quote! {
        #loads
        #lets
        #stores
    };
    let run = split_loop(cx, id, &inputs, &outputs, body);
    quote! {
        #slices
        let #dout = &ws.#dout_field[..#len];
        #target_slices
        #run
    }
}
