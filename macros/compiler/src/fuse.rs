//! Stage 4: pointwise fusion. A pointwise node whose only consumer is another pointwise node
//! (and which is not itself an output or the loss) is substituted into its consumer's term, so
//! a chain like `gelu(z) + 0.5 * softplus(z) - leaky_relu(z) * square(tanh(z))` becomes one
//! loop forward and one loop backward, with no buffer for the intermediates. The backward loop
//! recomputes what it needs from the chain's inputs.

use crate::ir::{Graph, NodeKind};
use std::collections::HashMap;

/// Which nodes the generated code computes.
pub struct Fused {
    /// `true` for nodes that were folded into a consumer and have no buffer.
    pub inlined: Vec<bool>,
    /// Nodes that reach an output or the loss.
    pub live: Vec<bool>,
    /// For each node, the pointwise nodes folded into it (transitively), in graph order.
    pub absorbed: Vec<Vec<usize>>,
}

impl Fused {
    /// Whether node `id` is computed into a buffer of its own.
    pub fn materialized(&self, id: usize) -> bool {
        self.live[id] && !self.inlined[id]
    }
}

/// Fuses pointwise chains in place (rewriting terms and input lists).
pub fn fuse(graph: &mut Graph) -> Fused {
    let n = graph.nodes.len();
    let mut live = vec![false; n];
    for (o, _) in &graph.outputs {
        live[*o] = true;
    }
    if let Some(l) = graph.loss {
        live[l] = true;
    }
    for id in (0..n).rev() {
        if live[id] {
            for &i in &graph.nodes[id].inputs {
                live[i] = true;
            }
        }
    }
    let mut consumers = vec![0usize; n];
    for node in &graph.nodes {
        for &i in &node.inputs {
            consumers[i] += 1;
        }
    }
    for (o, _) in &graph.outputs {
        consumers[*o] += 1;
    }
    if let Some(l) = graph.loss {
        consumers[l] += 1;
    }
    let is_pointwise =
        |g: &Graph, id: usize| matches!(g.nodes[id].kind, NodeKind::Pointwise { .. });
    let mut inlined = vec![false; n];
    let mut absorbed: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (id, &is_live) in live.iter().enumerate() {
        if !is_live || !is_pointwise(graph, id) {
            continue;
        }
        let by: HashMap<usize, usize> = graph.nodes[id]
            .inputs
            .iter()
            .filter(|&&i| is_pointwise(graph, i) && consumers[i] == 1)
            .filter_map(|&i| match graph.nodes[i].kind {
                NodeKind::Pointwise { term, .. } => Some((i, term)),
                _ => None,
            })
            .collect();
        if by.is_empty() {
            continue;
        }
        let mut folded = Vec::new();
        for &i in by.keys() {
            inlined[i] = true;
            folded.push(i);
            folded.append(&mut absorbed[i]);
        }
        folded.sort_unstable();
        absorbed[id] = folded;
        let NodeKind::Pointwise { op, term } = graph.nodes[id].kind else {
            continue;
        };
        let new_term = graph.exprs.substitute(term, &by);
        let inputs = graph.exprs.vars(new_term);
        let node = &mut graph.nodes[id];
        node.kind = NodeKind::Pointwise { op, term: new_term };
        node.inputs = inputs;
    }
    Fused {
        inlined,
        live,
        absorbed,
    }
}
