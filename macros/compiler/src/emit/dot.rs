//! The Graphviz DOT text returned by `Model::graph_dot`: one box per computed value (a fused
//! chain of pointwise ops is one box, listing the ops it runs in one loop), the inputs and targets as
//! ellipses, edges from what each value reads, and for each layer its parameter count.
//! Written once at expansion time into a string constant.

use super::Ctx;
use crate::ir::NodeKind;
use std::collections::BTreeSet;
use std::fmt::Write;

/// The DOT source of the model's forward graph.
pub(super) fn graph_dot(cx: &Ctx) -> String {
    let g = cx.g;
    // What is drawn: every value the step computes and every node they read. A pointwise op
    // fused into its consumer is not a value of its own, so it appears inside that box.
    let mut drawn: BTreeSet<usize> = cx.plan.values.iter().copied().collect();
    drawn.extend(g.inputs.iter().map(|i| i.node));
    drawn.extend(g.loss);
    let mut pending: Vec<usize> = drawn.iter().copied().collect();
    while let Some(id) = pending.pop() {
        for &i in &g.nodes[id].inputs {
            if drawn.insert(i) {
                pending.push(i);
            }
        }
    }
    let outputs: BTreeSet<usize> = g.outputs.iter().map(|(n, _)| *n).collect();

    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = writeln!(out, "digraph {} {{", quoted(&g.name.to_string()));
    out.push_str(
        "  rankdir=TB;\n  node [shape=box, style=\"rounded,filled\", fillcolor=\"#e8eef9\", \
         fontname=\"Helvetica\", fontsize=11];\n  edge [color=\"#555555\"];\n",
    );
    for &id in &drawn {
        let node = &g.nodes[id];
        let shape = g.shape_string(id);
        let (label, style) = match &node.kind {
            NodeKind::Input(i) => {
                let decl = &g.inputs[*i];
                let role = if decl.is_target { "target" } else { "input" };
                (
                    format!("{}\n{role} {shape}", node.name),
                    "shape=ellipse, fillcolor=\"#ffffff\"".to_string(),
                )
            }
            NodeKind::Pointwise { op, .. } => {
                let ops: Vec<&str> = cx.fused.absorbed[id]
                    .iter()
                    .filter_map(|&i| match g.nodes[i].kind {
                        NodeKind::Pointwise { op, .. } => Some(op),
                        _ => None,
                    })
                    .chain([*op])
                    .collect();
                let what = if ops.len() > 1 {
                    format!("fused: {}", ops.join(" → "))
                } else {
                    op.to_string()
                };
                (
                    format!("{}\n{what}\n{shape}", node.name),
                    "fillcolor=\"#eef7e8\"".to_string(),
                )
            }
            NodeKind::Kernel(k) => {
                let attrs = k.describe();
                let op = if attrs.is_empty() {
                    k.name().to_string()
                } else {
                    format!("{}({attrs})", k.name())
                };
                let params = layer_params(cx, id);
                let params = if params > 0 {
                    format!("\n{} params", group_thousands(params))
                } else {
                    String::new()
                };
                (
                    format!("{}\n{op}\n{shape}{params}", node.name),
                    String::new(),
                )
            }
        };
        let mut style = style;
        if Some(id) == g.loss {
            style = join(&style, "fillcolor=\"#fbe9e7\", peripheries=2");
        } else if outputs.contains(&id) {
            style = join(&style, "peripheries=2");
        }
        let _ = writeln!(
            out,
            "  n{id} [label={}{}];",
            quoted(&label),
            if style.is_empty() {
                String::new()
            } else {
                format!(", {style}")
            }
        );
    }
    for &id in &drawn {
        let mut seen = BTreeSet::new();
        for &i in &g.nodes[id].inputs {
            if seen.insert(i) {
                let _ = writeln!(out, "  n{i} -> n{id};");
            }
        }
    }
    out.push_str("}\n");
    out
}

/// The trainable scalars of the layer a node owns (a block call: all its repetitions).
fn layer_params(cx: &Ctx, id: usize) -> usize {
    cx.g.nodes[id].layer.map_or(0, |l| {
        let spec = &cx.layers[l];
        spec.params
            .iter()
            .map(|p| p.dims.iter().product::<usize>())
            .sum::<usize>()
            + spec.nested.as_ref().map_or(0, |n| n.scalars)
    })
}

fn join(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_string()
    } else {
        format!("{a}, {b}")
    }
}

/// A DOT string literal: quotes and backslashes escaped, newlines as `\n` line breaks.
fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `1234567` → `1,234,567`.
fn group_thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_escapes_what_dot_reads_specially() {
        assert_eq!(quoted("a \"b\"\\c\nd"), "\"a \\\"b\\\"\\\\c\\nd\"");
        assert_eq!(group_thousands(1234567), "1,234,567");
        assert_eq!(group_thousands(12), "12");
    }
}
