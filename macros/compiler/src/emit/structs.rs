//! The data types: the model, its gradients, its workspace and the workspace's buffers.

use super::Ctx;
use crate::ir::NodeKind;
use proc_macro2::TokenStream;
use quote::{format_ident, quote};

pub(super) fn emit(cx: &Ctx) -> TokenStream {
    let g = cx.g;
    let (name, grads, ws, bufs) = (
        cx.name,
        &cx.grads_name,
        &cx.workspace_name,
        &cx.buffers_name,
    );
    let vis = &g.vis;
    let attrs = &g.attrs;

    let mut fields = Vec::new();
    for (layer, spec) in g.layers.iter().zip(&cx.layers) {
        let shapes: Vec<String> = spec
            .params
            .iter()
            .map(|p| {
                let dims: Vec<String> = p.dims.iter().map(usize::to_string).collect();
                format!("`{}` [{}]", p.suffix, dims.join(", "))
            })
            .collect();
        let doc = format!(
            " `{}` -> {}: {}.",
            g.op_name(layer.node),
            g.shape_string(layer.node),
            shapes.join(", ")
        );
        let (field, ty) = (&layer.name, &spec.ty);
        fields.push(quote! { #[doc = #doc] pub #field: #ty, });
    }
    let model_doc = format!(
        " Gradients of [`{name}`]'s parameters: one field per layer, same shapes. Filled (overwritten) by each training step."
    );
    let mut grad_fields: Vec<TokenStream> = g
        .layers
        .iter()
        .zip(&cx.layers)
        .map(|(layer, spec)| {
            let field = &layer.name;
            let ty = spec.nested.as_ref().map_or(&spec.ty, |n| &n.grad_ty);
            let doc = format!(" Gradients of `{field}`'s parameters.");
            quote! { #[doc = #doc] pub #field: #ty, }
        })
        .collect();
    if g.layers.is_empty() {
        // Without a layer, nothing else would use `F` (a parameter-free block or model).
        let marker = quote! {
            #[doc(hidden)]
            _dtype: ::core::marker::PhantomData<F>,
        };
        fields.push(marker.clone());
        grad_fields.push(marker);
    }
    let ws_doc = format!(
        " Buffers for [`{name}`]'s training steps: grown to the largest batch seen, then reused, so a warm step allocates nothing. One workspace serves one step at a time."
    );

    let mut buffer_fields = Vec::new();
    let mut grow = Vec::new();
    let mut grow_loss = Vec::new();
    let mut grow_adjoints = Vec::new();
    for slot in 0..cx.plan.slot_count {
        let holders: Vec<usize> = cx
            .plan
            .values
            .iter()
            .copied()
            .filter(|&id| cx.plan.slots[id] == Some(slot))
            .collect();
        let described: Vec<String> = holders
            .iter()
            .enumerate()
            .map(|(k, &id)| {
                let in_place = k > 0 && g.nodes[id].inputs.contains(&holders[k - 1]);
                let notes: Vec<&str> = [
                    (in_place, "computed in place"),
                    (cx.plan.saved[id], "read by the backward pass"),
                ]
                .into_iter()
                .filter_map(|(applies, note)| applies.then_some(note))
                .collect();
                if notes.is_empty() {
                    format!("`{}`", g.nodes[id].name)
                } else {
                    format!("`{}` ({})", g.nodes[id].name, notes.join(", "))
                }
            })
            .collect();
        let doc = format!(
            " Holds, in turn, {}: each value is dead when the next is written.",
            described.join(", then ")
        );
        let field = format_ident!("shared_{}", slot);
        buffer_fields.push(quote! { #[doc = #doc] #field: ::std::vec::Vec<F>, });
    }
    for &id in &cx.plan.values {
        let field = cx.value_field(id);
        if cx.plan.slots[id].is_none() {
            let doc = describe_node(cx, id);
            buffer_fields.push(quote! { #[doc = #doc] #field: ::std::vec::Vec<F>, });
        }
        let len = cx.node_len(id);
        let line = quote! { ::kiln::shape::grow(&mut self.#field, #len); };
        let list = if cx.plan.forward_nodes.contains(&id) {
            &mut grow
        } else {
            &mut grow_loss
        };
        push_once(list, line);
    }
    for &id in &cx.plan.values {
        for (field, len, _) in cx.scratch_of(id) {
            let doc = format!(" Scratch of `{}` ({}).", g.nodes[id].name, g.op_name(id));
            buffer_fields.push(quote! { #[doc = #doc] #field: ::std::vec::Vec<F>, });
            let line = quote! { ::kiln::shape::grow(&mut self.#field, #len); };
            if cx.plan.forward_nodes.contains(&id) {
                grow.push(line);
            } else {
                grow_loss.push(line);
            }
        }
    }
    let mut state_inits = Vec::new();
    for &id in &cx.plan.values {
        if let NodeKind::Kernel(k) = &g.nodes[id].kind {
            if let Some((ty, init)) = k.state() {
                let field = cx.state_field(id);
                let doc = format!(" The buffers of `{}`'s blocks.", g.nodes[id].name);
                buffer_fields.push(quote! { #[doc = #doc] #field: #ty, });
                state_inits.push(quote!(#field: #init,));
            }
        }
    }
    for slot in 0..cx.plan.adjoint_slot_count {
        let holders: Vec<String> = cx
            .plan
            .adjoints
            .iter()
            .filter(|&&id| cx.plan.adjoint_slots[id] == Some(slot))
            .map(|&id| format!("`d_{}`", g.nodes[id].name))
            .collect();
        let doc = format!(
            " Adjoints, in turn: {}, each read before the next is written.",
            holders.join(", ")
        );
        let field = format_ident!("d_shared_{}", slot);
        buffer_fields.push(quote! { #[doc = #doc] #field: ::std::vec::Vec<F>, });
    }
    for &id in &cx.plan.adjoints {
        let field = cx.adjoint_field(id);
        if cx.plan.adjoint_slots[id].is_none() {
            let doc = format!(" Adjoint of `{}`.", g.nodes[id].name);
            buffer_fields.push(quote! { #[doc = #doc] #field: ::std::vec::Vec<F>, });
        }
        let len = cx.node_len(id);
        push_once(
            &mut grow_adjoints,
            quote! { ::kiln::shape::grow(&mut self.#field, #len); },
        );
    }
    let all_fields: Vec<_> = (0..cx.plan.slot_count)
        .map(|slot| format_ident!("shared_{}", slot))
        .chain(
            cx.plan
                .values
                .iter()
                .filter(|&&id| cx.plan.slots[id].is_none())
                .map(|&id| cx.node_ident(id)),
        )
        .chain(
            cx.plan
                .values
                .iter()
                .flat_map(|&id| cx.scratch_of(id).into_iter().map(|(f, ..)| f)),
        )
        .chain((0..cx.plan.adjoint_slot_count).map(|slot| format_ident!("d_shared_{}", slot)))
        .chain(
            cx.plan
                .adjoints
                .iter()
                .filter(|&&id| cx.plan.adjoint_slots[id].is_none())
                .map(|&id| cx.adjoint_ident(id)),
        )
        .collect();
    let (rng_field, rng_init, reseed) = if cx.needs_rng() {
        (
            quote! {
                /// The generator dropout draws from; seeded, so runs repeat.
                rng: ::kiln::rand::rngs::StdRng,
            },
            quote! { rng: <::kiln::rand::rngs::StdRng as ::kiln::rand::SeedableRng>::seed_from_u64(0), },
            quote! {
                /// Reseeds the generator that dropout draws from (a new workspace starts
                /// from seed 0).
                pub fn seed(&mut self, seed: u64) {
                    self.buffers.rng = <::kiln::rand::rngs::StdRng as ::kiln::rand::SeedableRng>::seed_from_u64(seed);
                }
            },
        )
    } else {
        (quote!(), quote!(), quote!())
    };
    let nsym = g.symbols.len();
    let nlayers = g.layers.len();
    let layer_trainable: Vec<TokenStream> = (0..nlayers)
        .map(|l| {
            let names = cx.layer_param_names(l);
            match names.as_slice() {
                [] => quote!(false),
                [one] => quote!(!frozen(#one)),
                _ => quote!(![#(#names),*].into_iter().all(frozen)),
            }
        })
        .collect();
    let allow_unused_filter = if (0..nlayers).all(|l| !cx.layer_has_params(l)) {
        quote!(#[allow(unused_variables)])
    } else {
        quote!()
    };
    // Blocks' own buffers learn which of their parameters are frozen, under their names in
    // this model (`h.0.attn.in_proj_weight`).
    let freeze_states: Vec<TokenStream> = cx
        .plan
        .values
        .iter()
        .filter_map(|&id| match &g.nodes[id].kind {
            NodeKind::Kernel(k) => k.freeze_state(&{
                let f = cx.state_field(id);
                quote!(self.#f)
            }),
            _ => None,
        })
        .collect();
    let bind = cx.bind_dims(quote!(dims));
    let allow_unused_dims = if nsym == 0 {
        quote!(#[allow(unused_variables)])
    } else {
        quote!()
    };

    quote! {
        #(#attrs)*
        #[derive(Clone, Debug)]
        #vis struct #name<F: ::kiln::Float = f32> {
            #(#fields)*
        }

        #[doc = #model_doc]
        #[derive(Clone, Debug)]
        #vis struct #grads<F: ::kiln::Float = f32> {
            #(#grad_fields)*
        }

        #[doc = #ws_doc]
        #vis struct #ws<F: ::kiln::Float = f32> {
            staging: ::kiln::shape::Staging<F>,
            buffers: #bufs<F>,
            ready: bool,
        }

        /// Every value and adjoint buffer of one training step, named after the bindings.
        #[allow(non_snake_case)]
        struct #bufs<F: ::kiln::Float> {
            /// The symbolic dims of the current step.
            dims: [usize; #nsym],
            /// Whether the passes check every value and adjoint for NaN and infinity.
            check_finite: bool,
            /// Per layer, whether the backward pass computes its gradients: `false` for a
            /// layer whose parameters are all frozen (see the workspace's `freeze`).
            trainable: [bool; #nlayers],
            #rng_field
            #(#buffer_fields)*
        }

        impl<F: ::kiln::Float> #bufs<F> {
            fn new() -> Self {
                Self { dims: [0; #nsym], check_finite: false, trainable: [true; #nlayers], #rng_init #(#state_inits)* #(#all_fields: ::std::vec::Vec::new(),)* }
            }

            /// Which layers the backward pass computes gradients for (see the workspace's
            /// `freeze`).
            #allow_unused_filter
            fn freeze(&mut self, frozen: &dyn Fn(&str) -> bool) {
                self.trainable = [#(#layer_trainable),*];
                #(#freeze_states)*
            }

            /// Sizes the buffers for `dims`: the forward values, with `loss` the values up
            /// to the loss, with `adjoints` the backward pass's. Allocates only to grow.
            #[allow(non_snake_case)]
            #allow_unused_dims
            fn prepare(&mut self, dims: [usize; #nsym], loss: bool, adjoints: bool) {
                self.dims = dims;
                #bind
                #(#grow)*
                if loss {
                    #(#grow_loss)*
                }
                if adjoints {
                    #(#grow_adjoints)*
                }
            }
        }

        impl<F: ::kiln::Float> ::core::default::Default for #ws<F> {
            fn default() -> Self {
                Self::new()
            }
        }

        impl<F: ::kiln::Float> #ws<F> {
            /// An empty workspace; buffers are allocated by the first step.
            pub fn new() -> Self {
                Self { staging: ::kiln::shape::Staging::new(), buffers: #bufs::new(), ready: false }
            }

            /// Whether every value of the forward pass and every gradient of the backward pass
            /// is checked for NaN and infinity as it is computed (default `false`). The first
            /// one found is returned as `kiln::Error::NonFinite`, naming its binding, op, line
            /// and pass. Off, the check costs one branch per op.
            pub fn check_finite(&mut self, on: bool) {
                self.buffers.check_finite = on;
            }

            /// Marks the parameters that need no gradient (PyTorch's `requires_grad_(False)`)
            /// for the backward passes run with this workspace: `frozen(name)` is asked of
            /// every parameter's `state_dict` name. A layer whose parameters are all frozen
            /// gets zero gradients, and the backward pass skips every step that feeds no
            /// trainable layer: a frozen first half of a model costs its forward pass only.
            /// A frozen layer after a trainable one still passes the gradient back through
            /// itself: a `linear`, convolution, attention or recurrent layer skips its own
            /// gradients then, other ops (the norms, `prelu`) compute them before they are
            /// zeroed. A layer with one trainable parameter computes all of its gradients.
            /// The trainable layers' gradients are the same bits as without freezing.
            /// `freeze(|_| false)` makes every layer trainable again.
            pub fn freeze(&mut self, frozen: impl Fn(&str) -> bool) {
                self.buffers.freeze(&frozen);
            }

            #reseed
        }
    }
}

/// A doc line for a value buffer: what it holds and its shape.
pub(super) fn describe_node(cx: &Ctx, id: usize) -> String {
    let g = cx.g;
    let node = &g.nodes[id];
    let what = match &node.kind {
        NodeKind::Pointwise { term, .. } => g.exprs.render(*term, &|n| g.nodes[n].name.clone()),
        NodeKind::Kernel(k) => {
            let args: Vec<&str> = node
                .inputs
                .iter()
                .map(|&i| g.nodes[i].name.as_str())
                .collect();
            let attrs = k.describe();
            let sep = if attrs.is_empty() || args.is_empty() {
                ""
            } else {
                ", "
            };
            format!("{}({}{sep}{attrs})", k.name(), args.join(", "))
        }
        NodeKind::Input(_) => node.name.clone(),
    };
    let saved = if cx.plan.saved[id] {
        " Read by the backward pass."
    } else {
        ""
    };
    format!(
        " `{} = {}`, {}.{saved}",
        node.name,
        what,
        g.shape_string(id)
    )
}

/// Appends `line` unless an identical one is there: holders of a shared buffer with the same
/// size need it grown once.
fn push_once(lines: &mut Vec<TokenStream>, line: TokenStream) {
    let text = line.to_string();
    if !lines.iter().any(|l| l.to_string() == text) {
        lines.push(line);
    }
}
