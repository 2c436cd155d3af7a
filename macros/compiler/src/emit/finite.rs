//! The opt-in non-finite check of the passes: after each value of the forward pass and each
//! adjoint a backward step writes, `if ws.check_finite { ::kiln::finite::check(..)?; }`,
//! naming the statement (binding, source text, line), the op and the pass. Off (the default),
//! it costs one branch per node and nothing per element.

use super::passes::Need;
use super::Ctx;
use crate::ir::{NodeId, NodeKind, ValueKind};
use proc_macro2::{Span, TokenStream};
use quote::quote;

/// The line of `span` in the macro's source file, when the compiler tells it (inside a
/// procedural macro); 0 otherwise (the snapshot tests, which parse strings).
fn line_of(span: Span) -> u32 {
    if proc_macro::is_available() {
        u32::try_from(span.unwrap().line()).unwrap_or(0)
    } else {
        0
    }
}

/// Whether a node holds floats (integer inputs and targets are not checked).
fn holds_floats(cx: &Ctx, id: NodeId) -> bool {
    matches!(cx.g.info(id).kind, ValueKind::Float)
}

/// A node as written: a statement's binding by name, an inner expression of a statement
/// inline (`relu(linear(h1, out=64))`).
fn written(cx: &Ctx, id: NodeId) -> String {
    let g = cx.g;
    let node = &g.nodes[id];
    let is_binding = g
        .statements
        .get(node.statement)
        .is_none_or(|s| s.node == id);
    if is_binding || matches!(node.kind, NodeKind::Input(_)) {
        node.name.clone()
    } else {
        expression(cx, id)
    }
}

/// What a node computes, its inner expressions inline.
fn expression(cx: &Ctx, id: NodeId) -> String {
    let g = cx.g;
    let node = &g.nodes[id];
    match &node.kind {
        NodeKind::Pointwise { term, .. } => g.exprs.render(*term, &|n| written(cx, n)),
        NodeKind::Kernel(k) => {
            let mut args: Vec<String> = node.inputs.iter().map(|&i| written(cx, i)).collect();
            let attrs = k.describe();
            if !attrs.is_empty() {
                args.push(attrs);
            }
            format!("{}({})", k.name(), args.join(", "))
        }
        NodeKind::Input(_) => node.name.clone(),
    }
}

/// The statement a node belongs to: its binding, its right-hand side and its line.
fn statement(cx: &Ctx, id: NodeId) -> (String, String, u32) {
    let g = cx.g;
    let node = &g.nodes[id];
    match g.statements.get(node.statement) {
        Some(s) => (
            s.name.clone(),
            expression(cx, s.node),
            line_of(g.nodes[s.node].span),
        ),
        None => (node.name.clone(), expression(cx, id), line_of(node.span)),
    }
}

/// The check of node `id`'s value, `len` elements in the workspace field `field`, after
/// the forward pass computed it.
pub(super) fn forward(cx: &Ctx, id: NodeId) -> TokenStream {
    if !holds_floats(cx, id) {
        return TokenStream::new();
    }
    let (binding, source, line) = statement(cx, id);
    let line = proc_macro2::Literal::u32_unsuffixed(line);
    let op = cx.g.op_name(id);
    let field = cx.value_field(id);
    let len = cx.node_len(id);
    quote! {
        if ws.check_finite {
            ::kiln::finite::check(&ws.#field[..#len], ::kiln::finite::Site::forward(#binding, #source, #op, #line))?;
        }
    }
}

/// The checks of the adjoints of `inputs` (of node `id`) after its backward step wrote them,
/// each under the condition that the adjoint is needed (unless it is the step's own,
/// `step_need`): one that nothing reads may hold what its buffer held before (a step adds its
/// part to it, and the step that would have written it first was skipped).
pub(super) fn backward(
    cx: &Ctx,
    id: NodeId,
    inputs: &[NodeId],
    needs: &[Need],
    step_need: &Need,
) -> TokenStream {
    let mut out = TokenStream::new();
    for &i in inputs {
        if !holds_floats(cx, i) || matches!(needs[i], Need::Never) {
            continue;
        }
        let (binding, source, line) = statement(cx, id);
        let line = proc_macro2::Literal::u32_unsuffixed(line);
        let op = cx.g.op_name(id);
        let of = written(cx, i);
        let field = cx.adjoint_field(i);
        let len = cx.node_len(i);
        let check = quote! {
            ::kiln::finite::check(&ws.#field[..#len], ::kiln::finite::Site::backward(#binding, #source, #op, #of, #line))?;
        };
        out.extend(match (&needs[i], step_need) {
            (Need::When(c), Need::When(s)) if c.to_string() == s.to_string() => {
                quote! { if ws.check_finite { #check } }
            }
            (Need::When(c), _) => quote! { if ws.check_finite && #c { #check } },
            _ => quote! { if ws.check_finite { #check } },
        });
    }
    out
}
