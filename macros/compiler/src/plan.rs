//! Stage 6: buffer planning. Decides which values get a workspace buffer, which adjoints do,
//! and which forward values the backward pass reads (the values a training step must keep).

use crate::autodiff::{pointwise_vjp, vjp_reads, Schedule};
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
    /// one buffer. An element-wise value computed in place of its dying input takes that
    /// input's buffer, whether kept or not.
    pub slots: Vec<Option<usize>>,
    /// The number of shared buffers.
    pub slot_count: usize,
    /// Per node: the shared buffer holding its adjoint. An adjoint lives from its first write
    /// to the VJP step of its node, which reads it; adjoints whose lifetimes do not overlap
    /// share one buffer.
    pub adjoint_slots: Vec<Option<usize>>,
    /// The number of shared adjoint buffers.
    pub adjoint_slot_count: usize,
}

/// Plans the buffers.
pub fn plan(graph: &Graph, fused: &Fused, schedule: &Schedule) -> Plan {
    let n = graph.nodes.len();
    let mut saved = vec![false; n];
    for step in &schedule.steps {
        let node = &graph.nodes[step.node];
        match &node.kind {
            NodeKind::Pointwise { term, .. } => {
                // Only what the derivative terms read: nothing for `a + b`, the output for relu.
                let (arena, roots) = pointwise_vjp(graph, step.node, *term, &step.d_inputs);
                for i in vjp_reads(&arena, &roots) {
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
    let adjoints: Vec<usize> = (0..n)
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
    let (adjoint_slots, adjoint_slot_count) = share_adjoints(graph, schedule, &adjoints);
    Plan {
        values,
        adjoints,
        saved,
        forward_nodes,
        loss_nodes,
        inputs_saved,
        slots,
        slot_count,
        adjoint_slots,
        adjoint_slot_count,
    }
}

/// Assigns the adjoints to shared buffers by a greedy interval colouring over the backward
/// steps. A seed (the loss's or an output's adjoint) is written before the first step; any
/// other adjoint from the first step that writes it; each lives up to and including the step
/// that runs its node's VJP (which reads it while writing its inputs' adjoints, so those
/// never share its buffer).
fn share_adjoints(
    graph: &Graph,
    schedule: &Schedule,
    adjoints: &[usize],
) -> (Vec<Option<usize>>, usize) {
    let n = graph.nodes.len();
    let mut first_write = vec![usize::MAX; n];
    let mut last_read = vec![0usize; n];
    for &seed in &schedule.seeds {
        first_write[seed] = 0;
    }
    for (p, step) in schedule.steps.iter().enumerate() {
        last_read[step.node] = last_read[step.node].max(p);
        for (d, &i) in step.d_inputs.iter().zip(&graph.nodes[step.node].inputs) {
            if d.is_some() {
                first_write[i] = first_write[i].min(p);
            }
        }
    }
    // An input's adjoint is the backward pass's result: it lives to the end.
    for &id in adjoints {
        if matches!(graph.nodes[id].kind, NodeKind::Input(_)) {
            last_read[id] = usize::MAX - 1;
        }
    }
    let mut order: Vec<usize> = adjoints.to_vec();
    order.sort_by_key(|&id| first_write[id]);
    let mut slots = vec![None; n];
    let mut busy_until: Vec<Option<usize>> = Vec::new();
    for id in order {
        let start = if first_write[id] == usize::MAX {
            0
        } else {
            first_write[id]
        };
        let end = last_read[id].max(start);
        let free = busy_until
            .iter()
            .position(|until| until.is_some_and(|until| until < start));
        let slot = match free {
            Some(s) => s,
            None => {
                busy_until.push(None);
                busy_until.len() - 1
            }
        };
        busy_until[slot] = Some(end);
        slots[id] = Some(slot);
    }
    (slots, busy_until.len())
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
        // An element-wise value whose input dies here, with as many elements, is computed in
        // place, in that input's buffer (`relu(linear(x))` needs one buffer, not two); it
        // holds the buffer until its own last use, or for good if the step keeps it.
        // Outputs and the loss keep buffers named after them (the workspace's accessors).
        let named = graph.outputs.iter().any(|(o, _)| *o == id) || graph.loss == Some(id);
        let in_place = if named {
            None
        } else {
            in_place_input(graph, id, &last_use, p, &slots, &kept)
        };
        if let Some(slot) = in_place {
            busy_until[slot] = if kept[id] {
                usize::MAX
            } else {
                last_use[id].max(p)
            };
            slots[id] = Some(slot);
            continue;
        }
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

/// The shared buffer a pointwise node at position `p` can be computed in: that of an input
/// in a shared buffer, not kept, whose last use is this node, with the same number of
/// elements (the same shape). A kept value can hold a shared buffer too (it was computed in
/// place of a dying input), so being in one does not mean the value may be overwritten.
fn in_place_input(
    graph: &Graph,
    id: usize,
    last_use: &[usize],
    p: usize,
    slots: &[Option<usize>],
    kept: &[bool],
) -> Option<usize> {
    let node = &graph.nodes[id];
    if !matches!(node.kind, NodeKind::Pointwise { .. }) {
        return None;
    }
    node.inputs.iter().find_map(|&i| {
        let same_shape = graph.info(i).shape == graph.info(id).shape;
        let dies_here = last_use[i] == p;
        slots[i].filter(|_| same_shape && dies_here && !kept[i])
    })
}
