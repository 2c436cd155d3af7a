//! Stage 3: shape inference. Gives every node a [`ValueInfo`] (shape and kind) by its op's
//! rule. Literal dims must agree; symbolic dims unify by name. Every mismatch is reported, at
//! the operand at fault; a node whose input already failed is skipped so one mistake is
//! reported once.

use crate::ir::{Dim, Graph, NodeKind, Shape, ValueInfo, ValueKind};
use crate::ops::OpError;
use crate::Errors;

/// Infers every node's shape and kind, or returns all the errors found.
pub fn infer(graph: &mut Graph) -> syn::Result<()> {
    let mut errors = Errors::default();
    for id in 0..graph.nodes.len() {
        let inputs: Option<Vec<ValueInfo>> = graph.nodes[id]
            .inputs
            .iter()
            .map(|&i| graph.nodes[i].info.clone())
            .collect();
        let Some(inputs) = inputs else {
            continue; // an input failed; its error is already recorded
        };
        let refs: Vec<&ValueInfo> = inputs.iter().collect();
        let node = &graph.nodes[id];
        let result = match &node.kind {
            NodeKind::Input(i) => {
                let decl = &graph.inputs[*i];
                Ok(ValueInfo {
                    shape: Shape(decl.dims.clone()),
                    kind: decl.ints.unwrap_or(ValueKind::Float),
                })
            }
            NodeKind::Pointwise { op, .. } => pointwise(op, &refs, &graph.symbols),
            NodeKind::Kernel(k) => k.infer(&refs, &graph.symbols),
        };
        match result {
            // Generated code multiplies static dims in `usize` (buffer lengths, parameter
            // counts): a shape too large for that is an error here, not an overflow there.
            Ok(info) if element_count(&info.shape).is_none() => errors.push(syn::Error::new(
                node.span,
                format!(
                    "this value of shape {} would hold more elements than a `usize` can count: is a dimension mistyped?",
                    info.shape.display(&graph.symbols)
                ),
            )),
            Ok(info) => graph.nodes[id].info = Some(info),
            Err(OpError {
                spanned: Some(e), ..
            }) => errors.push(e),
            Err(e) => {
                let span = e.input.and_then(|i| node.input_spans.get(i).copied()).unwrap_or(node.span);
                // Messages name an argument's producer as `{arg0}`, `{arg1}`: the binding it
                // comes from, which only this stage knows.
                let mut message = e.message;
                for (slot, &input) in node.inputs.iter().enumerate() {
                    message = message.replace(&format!("{{arg{slot}}}"), &graph.nodes[input].name);
                }
                errors.push(syn::Error::new(span, message));
            }
        }
    }
    check_tied(graph, &mut errors);
    let mut total_params: Option<usize> = Some(0);
    for layer in &graph.layers {
        let node = &graph.nodes[layer.node];
        let (NodeKind::Kernel(k), Some(inputs)) = (
            &node.kind,
            node.inputs
                .iter()
                .map(|&i| graph.nodes[i].info.as_ref())
                .collect::<Option<Vec<_>>>(),
        ) else {
            continue;
        };
        let Some(spec) = k.layer(&inputs) else {
            continue;
        };
        for p in &spec.params {
            let count = p.dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
            total_params = total_params.zip(count).and_then(|(t, c)| t.checked_add(c));
        }
        if total_params.is_none() {
            errors.push(syn::Error::new(
                node.span,
                format!(
                    "`{}` makes the model's parameter count overflow a `usize`: is a dimension mistyped?",
                    layer.name
                ),
            ));
            break;
        }
    }
    if let Some(loss) = graph.loss {
        if let Some(info) = &graph.nodes[loss].info {
            if info.shape.rank() != 0 {
                errors.push(syn::Error::new(
                    graph.nodes[loss].span,
                    format!(
                        "the loss must be a scalar, but this is {}: reduce it with `mean(...)` or `sum(...)`, or use a loss op like `mse(pred, y)`",
                        info.shape.display(&graph.symbols)
                    ),
                ));
            }
        }
    }
    for (node, name) in &graph.outputs {
        if let NodeKind::Input(i) = graph.nodes[*node].kind {
            let input = &graph.inputs[i].name;
            // `let h = x;` binds `h` to the input itself.
            let what = if input == name {
                format!("`{name}` is an input")
            } else {
                format!("`{name}` is the input `{input}` under another name")
            };
            errors.push(syn::Error::new(
                name.span(),
                format!("{what}, not a value the model computes: output a `let` binding computed from it, as in `let h = linear({input}, 10); output h;`"),
            ));
        }
    }
    errors.finish()
}

fn pointwise(op: &str, inputs: &[&ValueInfo], symbols: &[String]) -> Result<ValueInfo, OpError> {
    for (i, info) in inputs.iter().enumerate() {
        if info.kind.is_int() {
            return Err(OpError::input(i, crate::ops::int_misuse(op, info.kind)));
        }
    }
    let Some(&first) = inputs.first() else {
        // `lower` turns constant results into literals; this is a safety net.
        return Err(OpError::call(format!(
            "`{op}` has no tensor operand: its value is a constant"
        )));
    };
    for (i, info) in inputs.iter().enumerate().skip(1) {
        if info.shape != first.shape {
            let (a, b) = (first.shape.display(symbols), info.shape.display(symbols));
            let what = if op.len() == 1 {
                format!("`{op}`")
            } else {
                format!("`{op}`'s operands")
            };
            // Widths that differ come from layers: say which width this one should have.
            let (fa, fb) = (&first.shape.0, &info.shape.0);
            let fix = match (fa.last(), fb.last()) {
                (Some(Dim::Fixed(want)), Some(Dim::Fixed(_)))
                    if fa.len() == fb.len() && fa[..fa.len() - 1] == fb[..fb.len() - 1] =>
                {
                    format!("make `{{arg{i}}}` output {want} features, or change the left operand to match")
                }
                _ if fa.len() == 4 && fb.len() == 4 && (0..4).all(|d| d == 1 || fa[d] == fb[d]) => {
                    let want = first.shape.display(symbols).to_string();
                    let channels = want
                        .trim_matches(['[', ']'])
                        .split(", ")
                        .nth(1)
                        .unwrap_or("?")
                        .to_string();
                    format!("the channel counts differ: make `{{arg{i}}}` output {channels} channels (`conv2d(..., {channels}, ...)`), or change the left operand to match")
                }
                _ => "make the two shapes equal".to_string(),
            };
            return Err(OpError::input(
                i,
                format!(
                    "shape mismatch: {what} needs equal shapes, but the left operand is {a} and this one is {b}: {fix} (kiln never broadcasts silently)"
                ),
            ));
        }
    }
    Ok(ValueInfo {
        shape: first.shape.clone(),
        kind: ValueKind::Float,
    })
}

/// The number of elements of the static dims of `shape`, `None` if it overflows.
fn element_count(shape: &Shape) -> Option<usize> {
    shape.0.iter().try_fold(1usize, |n, d| match d {
        Dim::Fixed(k) => n.checked_mul(*k),
        Dim::Symbol(_) | Dim::Affine { .. } => Some(n),
    })
}

/// Checks each tied op against the parameter it borrows: the lender's first parameter must
/// have the shape the op needs (an output head `[vocab, dim]` reusing an embedding table).
fn check_tied(graph: &Graph, errors: &mut Errors) {
    let infos = |id: usize| -> Option<Vec<&ValueInfo>> {
        graph.nodes[id]
            .inputs
            .iter()
            .map(|&i| graph.nodes[i].info.as_ref())
            .collect()
    };
    for (id, node) in graph.nodes.iter().enumerate() {
        let (Some(lender), NodeKind::Kernel(k), Some(inputs)) = (node.tied, &node.kind, infos(id))
        else {
            continue;
        };
        let lender_node = graph.layers[lender].node;
        let (NodeKind::Kernel(lk), Some(lender_inputs)) =
            (&graph.nodes[lender_node].kind, infos(lender_node))
        else {
            continue;
        };
        let Some(spec) = lk.layer(&lender_inputs) else {
            continue;
        };
        let Some(param) = spec.params.first() else {
            continue;
        };
        let want = k.tied_dims(&inputs);
        if param.dims != want {
            let name = &graph.layers[lender].name;
            let list = |d: &[usize]| {
                d.iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            errors.push(syn::Error::new(
                node.span,
                format!(
                    "`{}` reuses `{name}.{}` of shape [{}], but needs a weight of shape [{}] here: the output size must be the vocabulary and the input width the embedding size (`embedding(tokens, {})` and `linear(x, {}, tied = {name})` over [.., {}])",
                    k.name(),
                    param.suffix,
                    list(&param.dims),
                    list(&want),
                    param.dims.get(1).copied().unwrap_or(0),
                    param.dims.first().copied().unwrap_or(0),
                    param.dims.get(1).copied().unwrap_or(0),
                ),
            ));
        }
    }
}
