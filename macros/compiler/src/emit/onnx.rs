//! The ONNX description returned by `Model::onnx_graph`: the inference graph from the inputs
//! to the declared outputs, as a static `kiln::onnx::OnnxGraph` (or, when an op has no ONNX
//! form, the error naming it). Written once at expansion time, like `dot.rs`'s DOT text.
//!
//! Only what the outputs need is exported (the loss and the targets are left out). Pointwise
//! values are the fused terms the forward pass computes, expanded one ONNX node per term
//! (`Add`, `Mul`, `Erf`, ...); kernels write their own nodes (`Kernel::onnx`).

use super::Ctx;
use crate::fuse::Fused;
use crate::ir::Graph;
use crate::ir::{Dim, NodeKind};
use crate::onnx::{Attr, Data, OnnxBuilder, OnnxCx, Parts as Built};
use crate::ops::LayerSpec;
use proc_macro2::TokenStream;
use quote::quote;
use std::collections::BTreeSet;

/// The body of the generated `onnx_graph`: `Ok(&GRAPH)` or `Err(..)`.
pub(super) fn onnx_graph(cx: &Ctx) -> TokenStream {
    let model = cx.g.name.to_string();
    match build(cx.g, &cx.layers, cx.fused) {
        Ok(b) => {
            let graph = render(cx, &b);
            quote! {
                // Constants are written in full (`gelu`'s 1/sqrt(2) among them).
                #[allow(clippy::approx_constant, clippy::excessive_precision)]
                static GRAPH: ::kiln::onnx::OnnxGraph = #graph;
                Ok(&GRAPH)
            }
        }
        Err(message) => quote! {
            Err(::kiln::Error::Onnx { model: #model.to_string(), message: #message.to_string() })
        },
    }
}

/// Builds the graph's nodes and initializers.
pub(crate) fn build(g: &Graph, layers: &[LayerSpec], _fused: &Fused) -> Result<Built, String> {
    // What the outputs need, through the inputs the (fused) graph reads.
    let mut needed: BTreeSet<usize> = g.outputs.iter().map(|(n, _)| *n).collect();
    let mut pending: Vec<usize> = needed.iter().copied().collect();
    while let Some(id) = pending.pop() {
        for &i in &g.nodes[id].inputs {
            if needed.insert(i) {
                pending.push(i);
            }
        }
    }
    let mut b = OnnxBuilder::default();
    let mut names: Vec<String> = vec![String::new(); g.nodes.len()];
    let mut inputs = Vec::new();
    for decl in &g.inputs {
        if needed.contains(&decl.node) {
            if decl.is_target {
                return Err(format!(
                    "the outputs read the target `{}`, which an exported graph does not have",
                    decl.name
                ));
            }
            let name = b.fresh(&decl.name.to_string());
            names[decl.node] = name.clone();
            inputs.push((decl.node, name));
        }
    }
    // Output names are taken first so that no intermediate uses them.
    let output_names: Vec<String> = g
        .outputs
        .iter()
        .map(|(_, n)| {
            let n = n.to_string();
            if inputs.iter().any(|(_, i)| *i == n) {
                // An output that is an input: it keeps a name of its own.
                b.fresh(&format!("{n}_out"))
            } else {
                b.fresh(&n)
            }
        })
        .collect();
    for &id in &needed {
        let node = &g.nodes[id];
        match &node.kind {
            NodeKind::Input(_) => {}
            NodeKind::Pointwise { term, .. } => {
                let value = {
                    let names = &names;
                    b.term(&g.exprs, *term, &node.name, &|n| names[n].clone())
                };
                names[id] = value;
            }
            NodeKind::Kernel(k) => {
                let output = b.fresh(&node.name);
                let mut params: Vec<(String, Vec<usize>)> = Vec::new();
                if let Some(t) = node.tied {
                    let lender = &g.layers[t];
                    if let Some(p) = layers[t].params.first() {
                        params.push((format!("{}.{}", lender.name, p.suffix), p.dims.clone()));
                    }
                }
                let mut buffers = Vec::new();
                if let Some(l) = node.layer {
                    let layer = &g.layers[l];
                    for p in &layers[l].params {
                        params.push((format!("{}.{}", layer.name, p.suffix), p.dims.clone()));
                    }
                    for p in &layers[l].buffers {
                        buffers.push((format!("{}.{}", layer.name, p.suffix), p.dims.clone()));
                    }
                }
                let mut kcx = OnnxCx {
                    b: &mut b,
                    inputs: node.inputs.iter().map(|&i| names[i].clone()).collect(),
                    input_infos: node.inputs.iter().map(|&i| g.info(i).clone()).collect(),
                    output: output.clone(),
                    output_info: g.info(id).clone(),
                    params,
                    buffers,
                    symbols: &g.symbols,
                };
                k.onnx(&mut kcx)
                    .map_err(|e| format!("value `{}`: {e}", node.name))?;
                names[id] = output;
            }
        }
    }
    // Each declared output is its own value, under the declared name.
    for ((id, _), out) in g.outputs.iter().zip(&output_names) {
        b.node(
            "Identity",
            vec![names[*id].clone()],
            vec![out.clone()],
            vec![],
        );
    }
    Ok(Built {
        b,
        inputs,
        outputs: output_names,
    })
}

fn render(cx: &Ctx, built: &Built) -> TokenStream {
    let g = cx.g;
    let b = &built.b;
    let value = |id: usize, name: &str| -> TokenStream {
        let info = g.info(id);
        let elem = if info.kind.is_int() {
            quote!(::kiln::onnx::OnnxElem::Int64)
        } else {
            quote!(::kiln::onnx::OnnxElem::Float)
        };
        let dims = info.shape.0.iter().map(|d| match d {
            Dim::Fixed(n) => quote!(::kiln::onnx::OnnxDim::Fixed(#n)),
            symbolic => {
                let s = symbolic.display(&g.symbols);
                quote!(::kiln::onnx::OnnxDim::Param(#s))
            }
        });
        quote! {
            ::kiln::onnx::OnnxValue { name: #name, elem: #elem, dims: &[#(#dims),*] }
        }
    };
    let inputs = built.inputs.iter().map(|(id, n)| value(*id, n));
    let outputs = g
        .outputs
        .iter()
        .zip(&built.outputs)
        .map(|((id, _), name)| value(*id, name));
    let nodes = b.nodes.iter().map(|n| {
        let (op, name) = (n.op, &n.name);
        let (ins, outs) = (&n.inputs, &n.outputs);
        let attrs = n.attrs.iter().map(|(k, a)| {
            let a = match a {
                Attr::Int(v) => quote!(::kiln::onnx::OnnxAttr::Int(#v)),
                Attr::Float(v) => {
                    let v = *v as f32;
                    quote!(::kiln::onnx::OnnxAttr::Float(#v))
                }
                Attr::Ints(v) => quote!(::kiln::onnx::OnnxAttr::Ints(&[#(#v),*])),
                Attr::Str(v) => quote!(::kiln::onnx::OnnxAttr::String(#v)),
                Attr::Strs(v) => quote!(::kiln::onnx::OnnxAttr::Strings(&[#(#v),*])),
            };
            quote!((#k, #a))
        });
        quote! {
            ::kiln::onnx::OnnxNode {
                op_type: #op, name: #name, inputs: &[#(#ins),*], outputs: &[#(#outs),*],
                attrs: &[#(#attrs),*],
            }
        }
    });
    let inits = b.inits.iter().map(|i| {
        let (name, dims) = (&i.name, &i.dims);
        let data = match &i.data {
            Data::Params(sources, blocks) => quote! {
                ::kiln::onnx::OnnxData::Params { sources: &[#(#sources),*], blocks: &[#(#blocks),*] }
            },
            Data::Floats(v) => {
                let v = v.iter().map(|&v| float_literal(v));
                quote!(::kiln::onnx::OnnxData::Floats(&[#(#v),*]))
            }
            Data::Ints(v) => quote!(::kiln::onnx::OnnxData::Ints(&[#(#v),*])),
        };
        quote!(::kiln::onnx::OnnxInit { name: #name, dims: &[#(#dims),*], data: #data })
    });
    let name = g.name.to_string();
    quote! {
        ::kiln::onnx::OnnxGraph {
            name: #name,
            inputs: &[#(#inputs),*],
            outputs: &[#(#outputs),*],
            nodes: &[#(#nodes),*],
            initializers: &[#(#inits),*],
        }
    }
}

/// An `f64` in generated code; infinities (the causal mask's) have no literal.
fn float_literal(v: f64) -> TokenStream {
    if v.is_finite() {
        quote!(#v)
    } else if v > 0.0 {
        quote!(f64::INFINITY)
    } else if v < 0.0 {
        quote!(f64::NEG_INFINITY)
    } else {
        quote!(f64::NAN)
    }
}
