//! Stage 5: reverse-mode differentiation, done on the graph at compile time.
//!
//! Walks the materialized nodes in reverse topological order from the seeds (the loss, or
//! every output when the model has no loss) and schedules one VJP step per node that has an
//! adjoint. A node's adjoint is written by its first contributor and accumulated into by the
//! rest (fan-out); nothing is scheduled for values no parameter depends on (there is never a
//! gradient for input data). Layers that the seeds do not reach get zero gradients.

use crate::expr::{Arena, Term, TermId};
use crate::fuse::Fused;
use crate::ir::{Graph, NodeId, NodeKind};
use crate::Errors;

/// The variable standing for the incoming adjoint (`d_out`) in pointwise VJP terms.
pub const D_OUT: usize = usize::MAX;

/// The VJP of a pointwise node: per input that needs an adjoint (`d_inputs[k]` set), the
/// term `d_out · ∂term/∂input_k`, built in a copy of the graph's arena (the graph stays
/// read-only; these terms live only for planning and emission).
///
/// A relu-like term, `if c > 0 { c } else { k · c }` with `k ≥ 0` (`relu`, `leaky_relu`,
/// fused `relu(a + b)`), has derivatives that test `c > 0`. Its output `y` is positive exactly
/// when `c` is, so they test `y > 0` instead: the backward pass then reads the activation,
/// which the next layer's backward keeps anyway, and the pre-activation buffer is freed for
/// reuse.
pub fn pointwise_vjp(
    graph: &Graph,
    id: NodeId,
    term: TermId,
    d_inputs: &[Option<bool>],
) -> (Arena, Vec<(usize, TermId)>) {
    let mut arena = graph.exprs.clone();
    let d_out = arena.var(D_OUT);
    let relu_condition = match arena.term(term) {
        Term::Select(c, t, e) if t == c => {
            let nonnegative_slope = match arena.term(e) {
                Term::Const(_) => arena.constant(e) == Some(0.0),
                Term::Mul(k, x) => x == c && arena.constant(k).is_some_and(|k| k >= 0.0),
                _ => false,
            };
            nonnegative_slope.then_some(c)
        }
        _ => None,
    };
    let output = arena.var(id);
    let mut roots = Vec::new();
    for (k, (d, &input)) in d_inputs.iter().zip(&graph.nodes[id].inputs).enumerate() {
        if d.is_some() {
            let partial = arena.diff(term, input);
            let mut vjp = arena.mul(d_out, partial);
            if let Some(c) = relu_condition {
                vjp = arena.replace_condition(vjp, c, output);
            }
            roots.push((k, vjp));
        }
    }
    (arena, roots)
}

/// The nodes a pointwise VJP reads (`D_OUT` excluded), in first-use order.
pub fn vjp_reads(arena: &Arena, roots: &[(usize, TermId)]) -> Vec<usize> {
    let mut read = Vec::new();
    for &(_, root) in roots {
        for n in arena.vars(root) {
            if n != D_OUT && !read.contains(&n) {
                read.push(n);
            }
        }
    }
    read
}

/// One VJP step.
pub struct Step {
    /// The node whose VJP runs.
    pub node: NodeId,
    /// Per input: `None` (no adjoint needed), `Some(false)` (write it), `Some(true)` (add).
    pub d_inputs: Vec<Option<bool>>,
    /// Per layer whose parameters the step reads ([`Graph::param_layers`]: the lender of a
    /// tied parameter, then its own): whether an earlier step already wrote that layer's
    /// gradients, so this one adds to them.
    pub param_accumulate: Vec<bool>,
}

/// The backward pass.
pub struct Schedule {
    /// Whether each node depends on a parameter.
    pub needs_grad: Vec<bool>,
    /// Whether each node gets an adjoint buffer.
    pub has_adjoint: Vec<bool>,
    /// The seeds: the loss node, or the outputs that need gradients.
    pub seeds: Vec<NodeId>,
    /// VJP steps in execution order.
    pub steps: Vec<Step>,
    /// Layers whose gradients no seed reaches: zeroed by the backward pass.
    pub unreached_layers: Vec<usize>,
}

/// Builds the backward schedule.
pub fn differentiate(graph: &Graph, fused: &Fused) -> syn::Result<Schedule> {
    let n = graph.nodes.len();
    let mut errors = Errors::default();
    let mut needs_grad = vec![false; n];
    for id in 0..n {
        let node = &graph.nodes[id];
        needs_grad[id] = match &node.kind {
            NodeKind::Input(i) => graph.inputs[*i].needs_grad,
            NodeKind::Pointwise { .. } => node.inputs.iter().any(|&i| needs_grad[i]),
            NodeKind::Kernel(k) => {
                let mut any = k.has_params() || node.tied.is_some();
                for (slot, &i) in node.inputs.iter().enumerate() {
                    if !needs_grad[i] {
                        continue;
                    }
                    if k.differentiable(slot) {
                        any = true;
                    } else if fused.live[id] {
                        errors.push(syn::Error::new(
                            node.input_spans.get(slot).copied().unwrap_or(node.span),
                            format!(
                                "gradients do not flow into this argument of `{}` (a target), but it depends on the model's parameters: pass an input or a target here",
                                k.name()
                            ),
                        ));
                    }
                }
                any
            }
        };
    }
    errors.finish()?;

    let seeds: Vec<NodeId> = match graph.loss {
        Some(l) => vec![l],
        None => graph
            .outputs
            .iter()
            .map(|(o, _)| *o)
            .filter(|&o| needs_grad[o])
            .collect(),
    };
    let mut has_adjoint = vec![false; n];
    let mut written = vec![false; n];
    for &s in &seeds {
        has_adjoint[s] = true;
        written[s] = true;
    }
    let mut steps = Vec::new();
    let mut layer_written = vec![false; graph.layers.len()];
    for id in (0..n).rev() {
        if !has_adjoint[id] || !fused.materialized(id) {
            continue;
        }
        let node = &graph.nodes[id];
        let d_inputs: Vec<Option<bool>> = node
            .inputs
            .iter()
            .enumerate()
            .map(|(slot, &i)| {
                let flows = match &node.kind {
                    NodeKind::Kernel(k) => k.differentiable(slot),
                    _ => true,
                };
                if !(flows && needs_grad[i]) {
                    return None;
                }
                has_adjoint[i] = true;
                let accumulate = written[i];
                written[i] = true;
                Some(accumulate)
            })
            .collect();
        let param_layers: Vec<usize> = graph.param_layers(id).collect();
        if !param_layers.is_empty() || d_inputs.iter().any(Option::is_some) {
            let param_accumulate = param_layers
                .iter()
                .map(|&l| std::mem::replace(&mut layer_written[l], true))
                .collect();
            steps.push(Step {
                node: id,
                d_inputs,
                param_accumulate,
            });
        }
    }
    let unreached_layers = (0..graph.layers.len())
        .filter(|&l| !layer_written[l])
        .collect();
    Ok(Schedule {
        needs_grad,
        has_adjoint,
        seeds,
        steps,
        unreached_layers,
    })
}
