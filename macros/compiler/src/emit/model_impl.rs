//! `impl kiln::Model`: parameters and gradients by name, counts, the summary and the graph
//! description (as text, and as DOT from `dot.rs`).

use super::Ctx;
use crate::ir::NodeKind;
use proc_macro2::TokenStream;
use quote::quote;

pub(super) fn emit(cx: &Ctx) -> TokenStream {
    let g = cx.g;
    let (name, grads) = (cx.name, &cx.grads_name);
    let params = cx.params();

    // Layers in order; a block's layer visits its models' parameters under prefixed names.
    let visit = |receiver: TokenStream, mutable: bool| -> TokenStream {
        let mut out = TokenStream::new();
        for (l, (layer, spec)) in g.layers.iter().zip(&cx.layers).enumerate() {
            if let Some(n) = &spec.nested {
                out.extend(visit_nested(
                    cx,
                    l,
                    &n.param_names,
                    &receiver,
                    mutable,
                    false,
                ));
                continue;
            }
            for (pname, layer, field, optional, _) in params.iter().filter(|p| p.1 == layer.name) {
                let (view, as_ref) = if mutable {
                    (quote!(view_mut), quote!(as_mut))
                } else {
                    (quote!(view), quote!(as_ref))
                };
                out.extend(if *optional {
                    quote! { if let Some(p) = #receiver.#layer.#field.#as_ref() { f(#pname, p.#view().into_dyn()); } }
                } else {
                    quote! { f(#pname, #receiver.#layer.#field.#view().into_dyn()); }
                });
            }
        }
        out
    };
    let buffers: Vec<(String, &syn::Ident, TokenStream)> = g
        .layers
        .iter()
        .zip(&cx.layers)
        .flat_map(|(l, spec)| {
            spec.buffers
                .iter()
                .map(move |b| (format!("{}.{}", l.name, b.suffix), &l.name, b.place()))
        })
        .collect();
    let mut visit_buffers: Vec<TokenStream> = buffers
        .iter()
        .map(|(n, layer, field)| quote! { f(#n, self.#layer.#field.view().into_dyn()); })
        .collect();
    let mut visit_buffers_mut: Vec<TokenStream> = buffers
        .iter()
        .map(|(n, layer, field)| quote! { f(#n, self.#layer.#field.view_mut().into_dyn()); })
        .collect();
    for (l, spec) in cx.layers.iter().enumerate() {
        if let Some(n) = spec.nested.as_ref().filter(|n| !n.buffer_names.is_empty()) {
            visit_buffers.push(visit_nested(
                cx,
                l,
                &n.buffer_names,
                &quote!(self),
                false,
                true,
            ));
            visit_buffers_mut.push(visit_nested(
                cx,
                l,
                &n.buffer_names,
                &quote!(self),
                true,
                true,
            ));
        }
    }
    let buffer_methods = if visit_buffers.is_empty() {
        quote!()
    } else {
        quote! {
            fn visit_buffers(&self, f: &mut dyn FnMut(&'static str, ::kiln::ndarray::ArrayViewD<'_, F>)) {
                #(#visit_buffers)*
            }

            fn visit_buffers_mut(&mut self, f: &mut dyn FnMut(&'static str, ::kiln::ndarray::ArrayViewMutD<'_, F>)) {
                #(#visit_buffers_mut)*
            }
        }
    };
    let visit_params = visit(quote!(self), false);
    let visit_params_mut = visit(quote!(self), true);
    let visit_grads = visit(quote!(grads), false);
    let visit_grads_mut = visit(quote!(grads), true);
    let mut pairs = Vec::new();
    let mut indexed = Vec::new();
    let mut index = 0usize;
    for (layer, spec) in g.layers.iter().zip(&cx.layers) {
        let f = &layer.name;
        if let Some(n) = &spec.nested {
            let per_block = n.param_names.len() / n.count.max(1);
            pairs.push(quote! {
                for (i, (block, g)) in self.#f.iter_mut().zip(grads.#f.iter()).enumerate() {
                    let base = #index + i * #per_block;
                    ::kiln::Model::<F>::visit_params_with_grads(block, g, &mut |k, p, g| f(base + k, p, g));
                }
            });
            let model = &n.model;
            indexed.push(quote! {
                for (i, g) in grads.#f.iter().enumerate() {
                    let base = #index + i * #per_block;
                    <#model as ::kiln::Model<F>>::visit_grads_indexed(g, &mut |k, g| f(base + k, g));
                }
            });
            index += n.param_names.len();
            continue;
        }
        for (_, _, field, optional, _) in params.iter().filter(|p| p.1 == layer.name) {
            pairs.push(if *optional {
                quote! {
                    if let (Some(p), Some(g)) = (self.#f.#field.as_mut(), grads.#f.#field.as_ref()) {
                        ::kiln::shape::visit_pair(#index, p, g, f);
                    }
                }
            } else {
                quote! { ::kiln::shape::visit_pair(#index, &mut self.#f.#field, &grads.#f.#field, f); }
            });
            indexed.push(if *optional {
                quote! {
                    if let Some(g) = grads.#f.#field.as_ref() {
                        ::kiln::shape::visit_indexed(#index, g, f);
                    }
                }
            } else {
                quote! { ::kiln::shape::visit_indexed(#index, &grads.#f.#field, f); }
            });
            index += 1;
        }
    }
    let total: usize = params.iter().map(|p| p.4).sum::<usize>()
        + cx.layers
            .iter()
            .filter_map(|s| s.nested.as_ref())
            .map(|n| n.scalars)
            .sum::<usize>();
    // A tied op's lent parameter under the name PyTorch also saves it as (`head.weight`).
    let tied: Vec<TokenStream> = g
        .nodes
        .iter()
        .filter_map(|n| {
            let lender = n.tied?;
            let suffix = cx.layers[lender].params.first()?.suffix;
            let (alias, owner) = (
                format!("{}.{suffix}", n.name),
                format!("{}.{suffix}", g.layers[lender].name),
            );
            Some(quote!((#alias, #owner)))
        })
        .collect();
    let tied_names = if tied.is_empty() {
        quote!()
    } else {
        quote! {
            fn tied_names(&self) -> &'static [(&'static str, &'static str)] {
                &[#(#tied),*]
            }
        }
    };

    let rows = g.statements.iter().enumerate().map(|(index, st)| {
        let ops: Vec<&str> = g
            .nodes
            .iter()
            .enumerate()
            .filter(|(id, n)| n.statement == index && cx.fused.live[*id])
            .map(|(id, _)| g.op_name(id))
            .map(|op| match op {
                "+" => "add",
                "-" => "sub",
                "*" => "mul",
                "/" => "div",
                other => other,
            })
            .collect();
        let ops = if ops.is_empty() {
            g.op_name(st.node).to_string()
        } else {
            ops.join(" -> ")
        };
        let shape = g.shape_string(st.node);
        let count: usize = g
            .layers
            .iter()
            .zip(&cx.layers)
            .filter(|(l, _)| g.nodes[l.node].statement == index)
            .map(|(_, s)| {
                s.params
                    .iter()
                    .map(|p| p.dims.iter().product::<usize>())
                    .sum::<usize>()
                    + s.nested.as_ref().map_or(0, |n| n.scalars)
            })
            .sum();
        let n = &st.name;
        quote! {
            ::kiln::SummaryRow { name: #n, op: #ops, output_shape: #shape, params: #count }
        }
    });
    let model_name = name.to_string();
    let graph_text = describe_graph(cx);
    let graph_dot = super::dot::graph_dot(cx);
    let onnx_graph = super::onnx::onnx_graph(cx);

    quote! {
        impl<F: ::kiln::Float> ::kiln::Model<F> for #name<F> {
            type Grads = #grads<F>;

            fn visit_params(&self, f: &mut dyn FnMut(&'static str, ::kiln::ndarray::ArrayViewD<'_, F>)) {
                #visit_params
            }

            fn visit_params_mut(&mut self, f: &mut dyn FnMut(&'static str, ::kiln::ndarray::ArrayViewMutD<'_, F>)) {
                #visit_params_mut
            }

            #buffer_methods

            #tied_names

            fn visit_grads(grads: &Self::Grads, f: &mut dyn FnMut(&'static str, ::kiln::ndarray::ArrayViewD<'_, F>)) {
                #visit_grads
            }

            fn visit_grads_mut(grads: &mut Self::Grads, f: &mut dyn FnMut(&'static str, ::kiln::ndarray::ArrayViewMutD<'_, F>)) {
                #visit_grads_mut
            }

            fn visit_params_with_grads(&mut self, grads: &Self::Grads, f: &mut dyn FnMut(usize, &mut [F], &[F])) {
                #(#pairs)*
            }

            fn visit_grads_indexed(grads: &Self::Grads, f: &mut dyn FnMut(usize, &[F])) {
                #(#indexed)*
            }

            fn zero_grads(&self) -> Self::Grads {
                #name::zero_grads(self)
            }

            fn num_params(&self) -> usize {
                #total
            }

            fn summary(&self) -> ::kiln::Summary {
                ::kiln::Summary {
                    model: #model_name,
                    dtype: F::NAME,
                    rows: ::std::vec![#(#rows),*],
                    buffers: {
                        let mut buffers = 0;
                        ::kiln::Model::<F>::visit_buffers(self, &mut |_, b| buffers += b.len());
                        buffers
                    },
                    frozen: 0,
                }
            }

            fn graph(&self) -> &'static str {
                #graph_text
            }

            fn graph_dot(&self) -> &'static str {
                #graph_dot
            }

            fn onnx_graph(&self) -> ::kiln::Result<&'static ::kiln::onnx::OnnxGraph> {
                #onnx_graph
            }
        }
    }
}

/// Visits the parameters (or buffers) of layer `l`'s models under their prefixed names
/// (`h.0.ln_1.weight`), or, with `receiver` = `grads`, their gradients.
fn visit_nested(
    cx: &Ctx,
    l: usize,
    names: &[String],
    receiver: &TokenStream,
    mutable: bool,
    buffers: bool,
) -> TokenStream {
    let f = &cx.g.layers[l].name;
    let grads = receiver.to_string() == "grads";
    let method = match (buffers, mutable, grads) {
        (true, false, _) => quote!(visit_buffers),
        (true, true, _) => quote!(visit_buffers_mut),
        (false, false, false) => quote!(visit_params),
        (false, true, false) => quote!(visit_params_mut),
        (false, false, true) => quote!(visit_grads),
        (false, true, true) => quote!(visit_grads_mut),
    };
    let iter = if mutable {
        quote!(iter_mut)
    } else {
        quote!(iter)
    };
    let call = if grads {
        let model = cx.layers[l]
            .nested
            .as_ref()
            .map_or_else(TokenStream::new, |n| n.model.clone());
        quote!(<#model as ::kiln::Model<F>>::#method(block, &mut |_, v| { f(NAMES[k], v); k += 1; }))
    } else {
        quote!(::kiln::Model::<F>::#method(block, &mut |_, v| { f(NAMES[k], v); k += 1; }))
    };
    quote! {
        {
            static NAMES: &[&str] = &[#(#names),*];
            let mut k = 0usize;
            for block in #receiver.#f.#iter() {
                #call;
            }
        }
    }
}

/// The text returned by `Model::graph`: forward nodes, then the backward steps.
fn describe_graph(cx: &Ctx) -> String {
    let g = cx.g;
    let mut out = String::from("forward:\n");
    for &id in &cx.plan.values {
        out.push_str(&format!(
            "  {}\n",
            super::structs::describe_node(cx, id).trim()
        ));
    }
    out.push_str("backward:\n");
    if let Some(l) = g.loss {
        out.push_str(&format!("  d_{} = 1\n", g.nodes[l].name));
    }
    for step in &cx.schedule.steps {
        let node = &g.nodes[step.node];
        let op = match &node.kind {
            NodeKind::Kernel(k) => k.name().to_string(),
            _ => "pointwise".to_string(),
        };
        let mut targets: Vec<String> = step
            .d_inputs
            .iter()
            .zip(&node.inputs)
            .filter_map(|(d, &i)| {
                d.map(|acc| format!("d_{} {}", g.nodes[i].name, if acc { "+=" } else { "=" }))
            })
            .collect();
        if let Some(l) = node.layer {
            targets.push(format!("grads.{}", g.layers[l].name));
        }
        out.push_str(&format!(
            "  {}: vjp of {} `{}` from d_{}\n",
            targets.join(", "),
            op,
            node.name,
            node.name
        ));
    }
    for &l in &cx.schedule.unreached_layers {
        out.push_str(&format!(
            "  grads.{} = 0 (does not reach the loss)\n",
            g.layers[l].name
        ));
    }
    let saved: Vec<&str> = (0..g.nodes.len())
        .filter(|&i| cx.plan.saved[i])
        .map(|i| g.nodes[i].name.as_str())
        .collect();
    out.push_str(&format!("saved for backward: {}\n", saved.join(", ")));
    out
}
