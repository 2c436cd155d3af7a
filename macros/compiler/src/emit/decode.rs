//! Incremental decoding: `forward_cached` and the model's decoding cache.
//!
//! A model whose values computed from its sequence inputs are all sequences `[B, T, ...]`
//! (the same two symbolic dims first, fixed dims after; `T` is the time axis of the first
//! output, else of the first input) and whose ops on them each compute a position from that
//! position alone, or know how to continue a sequence (causal self-attention keeps its keys
//! and values in a `kiln::kernels::kv_cache::KvCache`, a one-direction recurrence the states
//! of every layer in a `kiln::kernels::recurrent::RnnState`, a position embedding starts at
//! the cached length, a block chain keeps one cache per repetition), can run its forward pass
//! on new positions only: `forward_cached(tokens, &mut cache)` computes the outputs of the
//! new positions as `forward` on the whole sequence would, at one position's cost per layer.
//! Sampling a language model token by token is the use. Inputs that are not sequences along
//! `T` are *static* (an encoder's source and its lengths, an encoder's final states): the
//! values computed from them alone run whole, with their ops' ordinary forward, at the first
//! position, and the cache keeps the ones the rest reads (restored into their buffers at the
//! later calls); the ops that mix them with the sequence say whether they can (a recurrence
//! starting from them at the first position, attention to them as a memory). The cache also
//! keeps a copy of the static inputs themselves, and a later call that gives others (which
//! would decode against two sources at once) is an `Err` before anything runs.
//!
//! Takes the model's graph and plan; returns, when the model qualifies ([`decodable`]), the
//! cache struct (`NameCache`), the decoding pass `run_forward_cached` and the public
//! `decoder_cache` / `forward_cached`. For another sequence model (one of its ops needs the
//! whole sequence: a bidirectional recurrence, a reduction over time, attention without a
//! causal mask) it returns stand-ins of those two methods whose call is a compile error
//! saying which value is at fault; for a model without sequences, nothing.

use super::api::{bind_inputs, stage_inputs, view_param};
use super::passes::{emit_values, DecodeNodes};
use super::Ctx;
use crate::ir::{Dim, Graph, InputDecl, NodeKind, Shape, ValueKind};
use crate::ops::{DecodeCache, Decoding};
use crate::plan::Plan;
use proc_macro2::TokenStream;
use quote::quote;

/// Whether a shape is `[B, T, fixed...]` for the symbols `b` and `t`.
fn is_sequence(shape: &[Dim], b: usize, t: usize) -> bool {
    shape.len() >= 2
        && shape[0] == Dim::Symbol(b)
        && shape[1] == Dim::Symbol(t)
        && shape[2..].iter().all(|d| matches!(d, Dim::Fixed(_)))
}

/// Why a model has no decoding pass.
enum NotDecodable {
    /// Its first input is not a sequence `[B, T, ...]`: decoding does not apply.
    NotSequence,
    /// A sequence model with something decoding cannot continue; the reason, for the
    /// compile error of a call of `forward_cached` or `decoder_cache`.
    Because(String),
}

/// Whether a dim is the time symbol `t` or computed from it.
fn mentions(dim: &Dim, t: usize) -> bool {
    matches!(dim, Dim::Symbol(s) | Dim::Affine { symbol: s, .. } if *s == t)
}

/// How a model decodes: its batch and time symbols, and which nodes run on the new positions
/// only (`dynamic`: they depend on a sequence input) rather than whole at every call (the
/// *static* ones, computed from inputs that are not sequences: an encoder's states or
/// output, their lengths).
struct Decodes {
    b: usize,
    t: usize,
    dynamic: Vec<bool>,
}

/// [`Kernel::decoding_with`] for a node, with its static inputs marked.
fn node_decoding(g: &Graph, id: usize, k: &dyn crate::ops::Kernel, dynamic: &[bool]) -> Decoding {
    let node = &g.nodes[id];
    let inputs: Vec<_> = node.inputs.iter().map(|&i| g.info(i)).collect();
    let is_static: Vec<bool> = node.inputs.iter().map(|&i| !dynamic[i]).collect();
    k.decoding_with(&inputs, &is_static)
}

/// The batch and time symbols of a model that can decode incrementally, and its dynamic
/// nodes: its first input is `[B, T, ...]` with two symbolic dims; every input that is not
/// such a sequence is static and does not mention `T`; every value computed from a sequence
/// is `[B, T, fixed...]` (pointwise ops then work position by position) and every kernel
/// among them supports decoding with the static inputs it reads ([`Decoding`]). Values
/// computed from static inputs alone are computed whole at every call, by any op.
fn decoding_symbols(g: &Graph, plan: &Plan) -> Result<Decodes, NotDecodable> {
    let inputs = g.inputs.iter().filter(|d| !d.is_target);
    // The decoded sequence is the one the first output runs along (an encoder–decoder's
    // target, whatever the order of the inputs), else the first input's.
    let along_output = g
        .outputs
        .first()
        .and_then(|(o, _)| match g.info(*o).shape.0[..] {
            [Dim::Symbol(b), Dim::Symbol(t), ..] if b != t => Some((b, t)),
            _ => None,
        });
    let (b, t) = match along_output {
        Some((b, t)) if inputs.clone().any(|d| is_sequence(&d.dims, b, t)) => (b, t),
        _ => match inputs.clone().next().map(|d| &d.dims[..]) {
            Some(&[Dim::Symbol(b), Dim::Symbol(t), ..]) if b != t => (b, t),
            _ => return Err(NotDecodable::NotSequence),
        },
    };
    let symbols = &g.symbols;
    let mut dynamic = vec![false; g.nodes.len()];
    for d in inputs {
        let lengths_of_t = matches!(&d.ints, Some(ValueKind::Lengths { max }) if mentions(max, t));
        if is_sequence(&d.dims, b, t) && !matches!(d.ints, Some(ValueKind::Lengths { .. })) {
            dynamic[d.node] = true;
        } else if lengths_of_t {
            return Err(NotDecodable::Because(format!(
                "input `{}` holds lengths of {}, and decoding continues sequences position by \
                 position, without lengths",
                d.name, symbols[t]
            )));
        } else if d.dims.iter().any(|dim| mentions(dim, t)) {
            return Err(NotDecodable::Because(format!(
                "input `{}` depends on {} but is not a sequence [{}, {}, ...] like the first input",
                d.name, symbols[t], symbols[b], symbols[t]
            )));
        }
    }
    for &id in &plan.forward_nodes {
        let node = &g.nodes[id];
        let op = match &node.kind {
            NodeKind::Input(_) => continue,
            NodeKind::Pointwise { op, .. } => *op,
            NodeKind::Kernel(k) => k.name(),
        };
        dynamic[id] = node.inputs.iter().any(|&i| dynamic[i]);
        let shape = &g.info(id).shape;
        if !dynamic[id] {
            if shape.0.iter().any(|dim| mentions(dim, t)) {
                return Err(NotDecodable::Because(format!(
                    "`{}` ({op}) is {}, computed from inputs that are not sequences",
                    node.name,
                    shape.display(symbols)
                )));
            }
            continue;
        }
        if !is_sequence(&shape.0, b, t) {
            return Err(NotDecodable::Because(format!(
                "`{}` ({op}) is {}, not a sequence [{}, {}, ...]",
                node.name,
                shape.display(symbols),
                symbols[b],
                symbols[t]
            )));
        }
        if let NodeKind::Kernel(k) = &node.kind {
            if matches!(
                node_decoding(g, id, k.as_ref(), &dynamic),
                Decoding::Unsupported
            ) {
                return Err(NotDecodable::Because(format!(
                    "`{}` ({op}) needs the whole sequence at once",
                    node.name
                )));
            }
        }
    }
    Ok(Decodes { b, t, dynamic })
}

/// The most positions a decoding pass can address, if an op limits them (a position table),
/// and what sets the limit, as words following "is": the smallest limit, with its value's
/// name (`` `wpe` is a position table of `max_len = 16` ``).
pub fn position_limit(g: &Graph, plan: &Plan) -> Option<(usize, String)> {
    // Static values (a position table over an encoder's input) are computed whole: only the
    // decoded positions count.
    let dynamic = decoding_symbols(g, plan).ok()?.dynamic;
    let mut limit: Option<(usize, String)> = None;
    for &id in plan.forward_nodes.iter().filter(|&&id| dynamic[id]) {
        let node = &g.nodes[id];
        let NodeKind::Kernel(k) = &node.kind else {
            continue;
        };
        if let Decoding::Incremental {
            positions: Some((n, why)),
            ..
        } = node_decoding(g, id, k.as_ref(), &dynamic)
        {
            if limit.as_ref().is_none_or(|(m, _)| n < *m) {
                limit = Some((n, format!("`{}` is {why}", node.name)));
            }
        }
    }
    limit
}

/// The static values a decoding cache keeps (see [`DecodeNodes::kept`]): those the dynamic
/// nodes or the outputs read. `None` when one of them is not a float value (the cache keeps
/// floats): every static node is then computed again at each call.
fn kept_static(g: &Graph, plan: &Plan, dynamic: &[bool]) -> Option<Vec<bool>> {
    let mut kept = vec![false; g.nodes.len()];
    let computed = |i: usize| !dynamic[i] && !matches!(g.nodes[i].kind, NodeKind::Input(_));
    for &id in plan.forward_nodes.iter().filter(|&&id| dynamic[id]) {
        for &i in g.nodes[id].inputs.iter().filter(|&&i| computed(i)) {
            kept[i] = true;
        }
    }
    for &(o, _) in &g.outputs {
        kept[o] |= computed(o);
    }
    let floats = (0..kept.len())
        .filter(|&i| kept[i])
        .all(|i| g.info(i).kind == ValueKind::Float);
    floats.then_some(kept)
}

/// The cache field of a kept static value.
pub(super) fn static_field(cx: &Ctx, id: usize) -> proc_macro2::Ident {
    quote::format_ident!("static_{}", cx.node_ident(id))
}

/// Whether the model gets `forward_cached` (see the module docs).
pub fn decodable(g: &Graph, plan: &Plan) -> bool {
    decoding_symbols(g, plan).is_ok()
}

/// For a sequence model without a decoding pass: `forward_cached` and `decoder_cache` exist,
/// but bounded by a trait no type implements, whose message says why they are not available
/// (rather than rustc's bare "no method named `forward_cached`").
fn unavailable(cx: &Ctx, reason: &str) -> TokenStream {
    let (name, vis) = (cx.name, &cx.g.vis);
    let marker = quote::format_ident!("{}Decodes", name);
    let message = format!("`{name}` has no incremental decoding: {reason}");
    let label = format!("`forward_cached` and `decoder_cache` are not available for `{name}`");
    let note = "a model decodes incrementally when every value computed from its sequence \
                inputs is a sequence [B, T, ...] and every op on them works position by \
                position (embeddings, `linear`, `layer_norm`, element-wise ops, attention to \
                a memory) or continues a sequence (`multi_head_attention(.., causal = true)`, \
                `position_embedding`, `lstm`, `gru` and `rnn` in one direction without \
                `lengths`, from zero or given states); its other inputs (an encoder's \
                states or output) are read whole at every call";
    let doc = format!(" Implemented by no type: `{name}` has no incremental decoding ({reason}).");
    let inputs = cx.g.inputs.iter().filter(|d| !d.is_target).count();
    let generics: Vec<_> = (0..inputs)
        .map(|i| quote::format_ident!("X{}", i))
        .collect();
    quote! {
        #[doc = #doc]
        #[diagnostic::on_unimplemented(message = #message, label = #label, note = #note)]
        #vis trait #marker {}

        impl<F: ::kiln::Float> #name<F> {
            /// Not available for this model (see the trait in its bound): calling it is a
            /// compile error that says why.
            #[doc(hidden)]
            #vis fn decoder_cache(&self, _: usize, _: usize) -> !
            where
                Self: #marker,
            {
                unreachable!()
            }

            /// Not available for this model (see the trait in its bound): calling it is a
            /// compile error that says why.
            #[doc(hidden)]
            #vis fn forward_cached<#(#generics,)* C>(&self, #(_: #generics,)* _: C) -> !
            where
                Self: #marker,
            {
                unreachable!()
            }
        }
    }
}

pub(super) fn emit(cx: &Ctx) -> TokenStream {
    let Decodes { b, t, dynamic } = match decoding_symbols(cx.g, cx.plan) {
        Ok(decodes) => decodes,
        Err(NotDecodable::NotSequence) => return TokenStream::new(),
        Err(NotDecodable::Because(reason)) => return unavailable(cx, &reason),
    };
    let g = cx.g;
    let (name, cache, bufs, vis) = (cx.name, &cx.cache_name, &cx.buffers_name, &g.vis);

    let mut fields = TokenStream::new();
    let mut inits = TokenStream::new();
    let mut kept: Vec<&str> = Vec::new();
    for &id in cx.plan.forward_nodes.iter().filter(|&&id| dynamic[id]) {
        let node = &g.nodes[id];
        let NodeKind::Kernel(k) = &node.kind else {
            continue;
        };
        if let Decoding::Incremental {
            cache: Some(DecodeCache { ty, init, keeps }),
            ..
        } = node_decoding(g, id, k.as_ref(), &dynamic)
        {
            if !kept.contains(&keeps) {
                kept.push(keeps);
            }
            let field = cx.node_ident(id);
            let doc = format!(" What `{}` keeps of the earlier positions.", node.name);
            fields.extend(quote! { #[doc = #doc] #field: #ty, });
            inits.extend(quote! { #field: #init, });
        }
    }

    // A cache for more positions than an op can address would fail only at the first position
    // past the limit, in the middle of a generation: it is an error when it is made.
    let (check_capacity, capacity_doc) = match position_limit(g, cx.plan) {
        Some((max, why)) => (
            quote!(::kiln::shape::check_capacity(capacity, #max, #why)?;),
            format!(
                "\n\n Returns `Err` if `capacity` is more than {max}, the most positions the model \
                 can address ({why})."
            ),
        ),
        None => (TokenStream::new(), String::new()),
    };
    let new_doc = format!(
        " An empty cache for batches of `batch` sequences of up to `capacity` positions.{capacity_doc}"
    );
    let decoder_cache_doc = format!(
        " An empty decoding cache for [`Self::forward_cached`], for batches of `batch` \
         sequences of up to `capacity` positions.{capacity_doc}"
    );

    let kept_values = kept_static(g, cx.plan, &dynamic);
    let kept_ids = kept_values
        .iter()
        .flatten()
        .enumerate()
        .filter(|(_, &k)| k)
        .map(|(id, _)| id);
    for id in kept_ids {
        let field = static_field(cx, id);
        let doc = format!(
            " `{}`, computed at the first position from the inputs that are not sequences.",
            g.nodes[id].name
        );
        fields.extend(quote! { #[doc = #doc] #field: ::std::vec::Vec<F>, });
        inits.extend(quote! { #field: ::std::vec::Vec::new(), });
    }
    let decode_nodes = DecodeNodes {
        dynamic,
        kept: kept_values,
    };
    let code = emit_values(cx, &cx.plan.forward_nodes, false, Some(&decode_nodes));
    let (params, body) = (code.params, code.body);
    let bind = cx.bind_dims(quote!(ws.dims));
    let float_inputs = super::passes::input_params(cx, false);

    let model_inputs: Vec<_> = g.inputs.iter().filter(|d| !d.is_target).collect();
    let input_views: Vec<TokenStream> = model_inputs.iter().map(|d| view_param(cx, d)).collect();
    let input_names: Vec<_> = model_inputs.iter().map(|d| &d.name).collect();
    let bind_inputs = bind_inputs(
        cx,
        model_inputs.iter().copied(),
        &g.output_symbol_minimums(),
    );
    let stage = stage_inputs(
        cx,
        g.inputs.iter().enumerate().filter(|(_, d)| !d.is_target),
    );
    let bind_dims = cx.bind_dims(quote!(dims));
    let outputs: Vec<(TokenStream, TokenStream)> = g
        .outputs
        .iter()
        .map(|(o, _)| {
            let shape: &Shape = &g.info(*o).shape;
            let (ix, buf, dim) = (cx.ix(shape), cx.node_ident(*o), cx.dim_value(shape));
            (
                quote!(::kiln::ndarray::Array<F, #ix>),
                quote!(::kiln::shape::view(&buffers.#buf, #dim)?.to_owned()),
            )
        })
        .collect();
    let (types, values): (Vec<_>, Vec<_>) = outputs.into_iter().unzip();
    let (out_type, out_value) = if types.len() == 1 {
        (types[0].clone(), values[0].clone())
    } else {
        (quote!((#(#types),*)), quote!((#(#values),*)))
    };
    let kept = match kept.len() {
        0 => " (only how many: each of its ops works position by position)".to_string(),
        _ => format!(" ({})", kept.join(", ")),
    };
    let cache_doc = format!(
        " The decoding cache of [`{name}::forward_cached`]: for each sequence of a batch, what the \
         model keeps of the positions it has seen{kept}, up to a capacity fixed when it is made \
         ([`{name}::decoder_cache`])."
    );
    // The inputs that are not sequences: the cache keeps them to check each later call's
    // (see `kiln::shape::keep_static_input`).
    let static_decls: Vec<&InputDecl> = g
        .inputs
        .iter()
        .filter(|d| !d.is_target && !decode_nodes.dynamic[d.node])
        .collect();
    let static_inputs: Vec<String> = static_decls
        .iter()
        .map(|d| format!("`{}`", d.name))
        .collect();
    let static_doc = match static_inputs.len() {
        0 => String::new(),
        count => {
            let (them, they, are) = if count == 1 {
                ("it", "it", "is")
            } else {
                ("them", "they", "are")
            };
            let reuse = if decode_nodes.kept.is_some() {
                format!(
                    "what is computed from {them} alone, as an encoder, is computed at the \
                     first position and kept in the cache for the later calls"
                )
            } else {
                format!("what is computed from {them} alone is computed again at each call")
            };
            format!(
                " {} {are} not a sequence along the decoded positions: give {them} whole, the \
                 same at every call for a cache's sequences ({reuse}; the cache keeps a copy \
                 to check that {they} {are} the same).",
                static_inputs.join(", "),
            )
        }
    };
    let fit = "if the new positions do not fit in the cache (nor in a position table)";
    let fit = match static_inputs.len() {
        0 => format!("or {fit}"),
        1 => format!(
            "{fit}, or if {} is not the one the cache's sequences started from",
            static_inputs[0]
        ),
        _ => format!(
            "{fit}, or if one of {} is not the one the cache's sequences started from",
            static_inputs.join(", ")
        ),
    };
    let forward_doc = format!(
        " Incremental decoding: the outputs for new positions of sequences whose earlier \
         positions `cache` holds, as [`{name}::forward`] gives them for those positions of the \
         whole sequences, computing only the new positions. The sequence inputs hold only the \
         new positions (their time axis is as long as there are new positions), which then join \
         the cache.{static_doc} To sample a sequence, give the prompt, then each sampled token \
         in turn.\n\n Returns `Err` if an input's shape is wrong, if the batch is not the \
         cache's, {fit}; the cache is then unchanged."
    );
    // Float inputs and integer ones (tokens, lengths) are kept apart, as they are staged.
    let (int_decls, float_decls): (Vec<&InputDecl>, Vec<&InputDecl>) =
        static_decls.iter().partition(|d| d.ints.is_some());
    let (float_count, int_count) = (float_decls.len(), int_decls.len());
    let keep = |decls: &[&InputDecl], field: TokenStream| -> Vec<TokenStream> {
        decls
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let (n, ns) = (&d.name, d.name.to_string());
                quote! {
                    ::kiln::shape::keep_static_input(#ns, &mut cache.#field[#i], #n, cache.len == 0)?;
                }
            })
            .collect()
    };
    let mut keep_inputs = keep(&float_decls, quote!(kept_float_inputs));
    keep_inputs.extend(keep(&int_decls, quote!(kept_int_inputs)));
    // Fields only for the kinds a model has (a language model has none).
    if float_count > 0 {
        fields.extend(quote! {
            /// The float inputs that are not sequences, as the first position had them.
            kept_float_inputs: [::std::vec::Vec<F>; #float_count],
        });
        inits.extend(quote! {
            kept_float_inputs: ::core::array::from_fn(|_| ::std::vec::Vec::new()),
        });
    }
    if int_count > 0 {
        fields.extend(quote! {
            /// The integer inputs (tokens, lengths) that are not sequences, as the first
            /// position had them.
            kept_int_inputs: [::std::vec::Vec<usize>; #int_count],
        });
        inits.extend(quote! {
            kept_int_inputs: ::core::array::from_fn(|_| ::std::vec::Vec::new()),
        });
    }
    let (bs, ts) = (b, t);
    quote! {
        #[doc = #cache_doc]
        #vis struct #cache<F: ::kiln::Float> {
            batch: usize,
            capacity: usize,
            len: usize,
            buffers: #bufs<F>,
            #fields
        }

        impl<F: ::kiln::Float> #cache<F> {
            #[doc = #new_doc]
            #vis fn new(batch: usize, capacity: usize) -> ::kiln::Result<Self> {
                #check_capacity
                Ok(Self {
                    batch,
                    capacity,
                    len: 0,
                    buffers: #bufs::new(),
                    #inits
                })
            }

            /// How many positions of each sequence the cache holds.
            #vis fn len(&self) -> usize {
                self.len
            }

            /// Whether the cache holds no position yet.
            #vis fn is_empty(&self) -> bool {
                self.len == 0
            }

            /// The most positions it holds.
            #vis fn capacity(&self) -> usize {
                self.capacity
            }

            /// The number of sequences it is made for.
            #vis fn batch(&self) -> usize {
                self.batch
            }

            /// Forgets every position, to start new sequences (its buffers are kept).
            #vis fn clear(&mut self) {
                self.len = 0;
            }
        }

        impl<F: ::kiln::Float> #name<F> {
            #[doc = #decoder_cache_doc]
            #vis fn decoder_cache(&self, batch: usize, capacity: usize) -> ::kiln::Result<#cache<F>> {
                #cache::new(batch, capacity)
            }

            #[doc = #forward_doc]
            #[allow(non_snake_case, clippy::too_many_arguments)]
            #vis fn forward_cached(&self, #(#input_views,)* cache: &mut #cache<F>) -> ::kiln::Result<#out_type> {
                #bind_inputs
                ::kiln::shape::check_decode(cache.batch, cache.len, cache.capacity, dims[#bs], dims[#ts])?;
                let mut staging = ::kiln::shape::Staging::<F>::new();
                #stage
                #(#keep_inputs)*
                let mut buffers = ::core::mem::replace(&mut cache.buffers, #bufs::new());
                buffers.prepare(dims, false, false);
                let offset = cache.len;
                let ran = self.run_forward_cached(&mut buffers, cache, offset, #(#input_names),*);
                let outputs = ran.and_then(|()| {
                    #bind_dims
                    Ok(#out_value)
                });
                cache.buffers = buffers;
                if outputs.is_ok() {
                    cache.len = offset + dims[#ts];
                }
                outputs
            }

            /// The decoding pass: every value that reaches an output, for the new positions,
            /// which follow `offset` cached ones.
            #[allow(non_snake_case, unused_variables, unused_doc_comments, clippy::too_many_arguments)]
            fn run_forward_cached(&self, ws: &mut #bufs<F>, cache: &mut #cache<F>, offset: usize, #(#float_inputs),*) -> ::kiln::Result<()> {
                #bind
                #params
                #body
                Ok(())
            }
        }
    }
}
