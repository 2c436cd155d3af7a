//! Stage 6: buffer planning. Decides which values get a workspace buffer, which adjoints do,
//! and which forward values the backward pass reads (the values a training step must keep).

use crate::autodiff::Schedule;
use crate::fuse::Fused;
use crate::ir::{Graph, NodeKind};

/// The buffers of a training step.
pub struct Plan {
    /// Nodes computed into a buffer, in order (inputs are read from the caller, not copied).
    pub values: Vec<usize>,
    /// Nodes with an adjoint buffer.
    pub adjoints: Vec<usize>,
    /// Per node: the backward pass reads its forward value.
    pub saved: Vec<bool>,
    /// Nodes the inference `forward` computes (those that reach an output).
    pub forward_nodes: Vec<usize>,
    /// Nodes computed after the outputs, for the loss only.
    pub loss_nodes: Vec<usize>,
    /// Inputs (by index into `Graph::inputs`) the backward pass reads.
    pub inputs_saved: Vec<usize>,
    /// Per node: the shared buffer holding it, for values that are neither read by the
    /// backward pass nor an output nor the loss. Such values only live from their computation
    /// to their last use in the forward pass, so values whose lifetimes do not overlap share
    /// one buffer.
    pub slots: Vec<Option<usize>>,
    /// The number of shared buffers.
    pub slot_count: usize,
}

/// Plans the buffers.
pub fn plan(graph: &Graph, fused: &Fused, schedule: &Schedule) -> Plan {
    let n = graph.nodes.len();
    let mut saved = vec![false; n];
    for step in &schedule.steps {
        let node = &graph.nodes[step.node];
        match &node.kind {
            NodeKind::Pointwise { .. } => {
                for &i in &node.inputs {
                    saved[i] = true;
                }
            }
            NodeKind::Kernel(k) => {
                let reads = k.backward_reads();
                for (slot, &i) in node.inputs.iter().enumerate() {
                    if reads.inputs.get(slot).copied().unwrap_or(false) {
                        saved[i] = true;
                    }
                }
                if reads.output {
                    saved[step.node] = true;
                }
            }
            NodeKind::Input(_) => {}
        }
    }
    let values: Vec<usize> = (0..n)
        .filter(|&i| fused.materialized(i) && !matches!(graph.nodes[i].kind, NodeKind::Input(_)))
        .collect();
    let adjoints = (0..n)
        .filter(|&i| schedule.has_adjoint[i] && fused.materialized(i))
        .collect();

    let mut reaches_output = vec![false; n];
    for (o, _) in &graph.outputs {
        reaches_output[*o] = true;
    }
    for id in (0..n).rev() {
        if reaches_output[id] {
            for &i in &graph.nodes[id].inputs {
                reaches_output[i] = true;
            }
        }
    }
    let forward_nodes: Vec<usize> = values
        .iter()
        .copied()
        .filter(|&i| reaches_output[i])
        .collect();
    let loss_nodes: Vec<usize> = values
        .iter()
        .copied()
        .filter(|&i| !reaches_output[i])
        .collect();
    let inputs_saved = graph
        .inputs
        .iter()
        .enumerate()
        .filter(|(_, d)| saved[d.node])
        .map(|(i, _)| i)
        .collect();
    let (slots, slot_count) = share_transients(graph, &saved, &forward_nodes, &loss_nodes);
    Plan {
        values,
        adjoints,
        saved,
        forward_nodes,
        loss_nodes,
        inputs_saved,
        slots,
        slot_count,
    }
}

/// Assigns the transient values to shared buffers by a greedy interval colouring over the
/// order the passes run in (the output pass, then the loss pass).
fn share_transients(
    graph: &Graph,
    saved: &[bool],
    forward_nodes: &[usize],
    loss_nodes: &[usize],
) -> (Vec<Option<usize>>, usize) {
    let n = graph.nodes.len();
    let order: Vec<usize> = forward_nodes.iter().chain(loss_nodes).copied().collect();
    let mut position = vec![usize::MAX; n];
    for (p, &id) in order.iter().enumerate() {
        position[id] = p;
    }
    let mut last_use = vec![0usize; n];
    for &id in &order {
        for &i in &graph.nodes[id].inputs {
            if position[i] != usize::MAX {
                last_use[i] = last_use[i].max(position[id]);
            }
        }
    }
    let mut kept = saved.to_vec();
    for (o, _) in &graph.outputs {
        kept[*o] = true;
    }
    if let Some(l) = graph.loss {
        kept[l] = true;
    }
    let mut slots = vec![None; n];
    // The position after which each shared buffer is free again.
    let mut busy_until: Vec<usize> = Vec::new();
    for (p, &id) in order.iter().enumerate() {
        if kept[id] {
            continue;
        }
        let slot = match busy_until.iter().position(|&until| until < p) {
            Some(s) => s,
            None => {
                busy_until.push(0);
                busy_until.len() - 1
            }
        };
        busy_until[slot] = last_use[id].max(p);
        slots[id] = Some(slot);
    }
    (slots, busy_until.len())
}
