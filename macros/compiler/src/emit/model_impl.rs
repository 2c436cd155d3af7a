//! `impl kiln::Model`: parameters and gradients by name, counts, the summary and the graph
//! description.

use super::Ctx;
use crate::ir::NodeKind;
use proc_macro2::TokenStream;
use quote::quote;

pub(super) fn emit(cx: &Ctx) -> TokenStream {
    let g = cx.g;
    let (name, grads) = (cx.name, &cx.grads_name);
    let params = cx.params();

    let visit = |receiver: TokenStream, mutable: bool| -> TokenStream {
        let mut out = TokenStream::new();
        for (pname, layer, field, optional, _) in &params {
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
        out
    };
    let buffers: Vec<(String, &syn::Ident, syn::Ident)> = g
        .layers
        .iter()
        .zip(&cx.layers)
        .flat_map(|(l, spec)| {
            spec.buffers.iter().map(move |b| {
                (
                    format!("{}.{}", l.name, b.suffix),
                    &l.name,
                    cx.ident(b.suffix),
                )
            })
        })
        .collect();
    let visit_buffers = buffers.iter().map(|(n, layer, field)| {
        quote! { f(#n, self.#layer.#field.view().into_dyn()); }
    });
    let visit_buffers_mut = buffers.iter().map(|(n, layer, field)| {
        quote! { f(#n, self.#layer.#field.view_mut().into_dyn()); }
    });
    let buffer_methods = if buffers.is_empty() {
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
    let pairs = params.iter().enumerate().map(|(index, (_, layer, field, optional, _))| {
        if *optional {
            quote! {
                if let (Some(p), Some(g)) = (self.#layer.#field.as_mut(), grads.#layer.#field.as_ref()) {
                    ::kiln::shape::visit_pair(#index, p, g, f);
                }
            }
        } else {
            quote! { ::kiln::shape::visit_pair(#index, &mut self.#layer.#field, &grads.#layer.#field, f); }
        }
    });
    let total: usize = params.iter().map(|p| p.4).sum();
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
            .flat_map(|(_, s)| s.params.iter().map(|p| p.dims.iter().product::<usize>()))
            .sum();
        let n = &st.name;
        quote! {
            ::kiln::SummaryRow { name: #n, op: #ops, output_shape: #shape, params: #count }
        }
    });
    let model_name = name.to_string();
    let graph_text = describe_graph(cx);

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
                }
            }

            fn graph(&self) -> &'static str {
                #graph_text
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
