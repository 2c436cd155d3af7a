//! `Model::graph_dot`: the compiled graph as Graphviz DOT, and the summary's totals. The
//! structure is checked here (a box per computed value, a fused pointwise chain as one box, an
//! edge per read, parameter counts); where Graphviz is installed, `dot` must also accept the
//! text.

use kiln::Model;

kiln::model! {
    /// A residual block with a fused pointwise chain (`gelu(h) * 0.5 + x`).
    pub struct Residual {
        input x: [B, 8];
        target y: [B] classes 3;
        let h = linear(x, 8);
        let r = gelu(h) * 0.5 + x;
        let logits = linear(r, 3);
        output logits;
        loss cross_entropy(logits, y);
    }
}

fn lines_starting(dot: &str, prefix: &str) -> Vec<String> {
    dot.lines()
        .map(str::trim)
        .filter(|l| l.starts_with(prefix))
        .map(String::from)
        .collect()
}

#[test]
fn residual_model_draws_one_box_per_value_and_an_edge_per_read() {
    let model = Residual::<f32>::new(
        &mut <kiln::rand::rngs::StdRng as kiln::rand::SeedableRng>::seed_from_u64(0),
    );
    let dot = model.graph_dot();
    assert!(dot.starts_with("digraph \"Residual\" {"), "{dot}");
    assert!(dot.trim_end().ends_with('}'));
    let nodes: Vec<String> = dot
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('n') && l.contains("[label="))
        .map(String::from)
        .collect();
    // x, y, h, the fused chain r, logits, loss.
    assert_eq!(nodes.len(), 6, "{dot}");
    let chain: Vec<&String> = nodes.iter().filter(|l| l.contains("gelu")).collect();
    assert_eq!(chain.len(), 1, "the pointwise chain is one box: {dot}");
    assert!(
        chain[0].contains("r\\nfused: gelu → * → +\\n[B, 8]"),
        "{}",
        chain[0]
    );
    assert!(dot.contains("linear(out=8)\\n[B, 8]\\n72 params"), "{dot}");
    assert!(dot.contains("linear(out=3)\\n[B, 3]\\n27 params"), "{dot}");
    assert!(dot.contains("x\\ninput [B, 8]") && dot.contains("y\\ntarget [B]"));
    // x → h, x → r (the residual), h → r, r → logits, logits → loss, y → loss.
    assert_eq!(
        lines_starting(dot, "n")
            .iter()
            .filter(|l| l.contains(" -> "))
            .count(),
        6,
        "{dot}"
    );
}

#[test]
fn graphviz_accepts_the_text() {
    let model = Residual::<f64>::new(
        &mut <kiln::rand::rngs::StdRng as kiln::rand::SeedableRng>::seed_from_u64(0),
    );
    let dir = std::env::temp_dir().join(format!("kiln-graph-dot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("graph.dot");
    std::fs::write(&path, model.graph_dot()).unwrap();
    // Graphviz is optional: without `dot` on the PATH only the structure test above runs.
    match std::process::Command::new("dot")
        .arg("-Tsvg")
        .arg(&path)
        .output()
    {
        Ok(out) => {
            assert!(
                out.status.success(),
                "dot rejected the graph: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(String::from_utf8_lossy(&out.stdout).contains("<svg"));
        }
        Err(e) => eprintln!("Graphviz not installed ({e}): only the structure was checked"),
    }
    std::fs::remove_dir_all(&dir).ok();
}

kiln::model! {
    /// Batch norm inside a repeated block: buffers at the top level and in each block.
    pub struct Normed {
        input x: [B, 6];
        target y: [B] classes 2;
        let z = linear(x, 5);
        let h = relu(batch_norm(z));
        let deep = Stage(h, repeat = 2);
        let logits = linear(deep, 2);
        output logits;
        loss cross_entropy(logits, y);

        block Stage(v) {
            let z = linear(v, 5);
            let out = relu(batch_norm(z));
            output out;
        }
    }
}

/// The summary's totals, as Keras prints them: running statistics count as non-trainable.
#[test]
fn summary_counts_running_statistics_as_non_trainable() {
    let model = Normed::<f32>::new(
        &mut <kiln::rand::rngs::StdRng as kiln::rand::SeedableRng>::seed_from_u64(0),
    );
    let summary = model.summary();
    // Running mean and variance of 5 features: once at the top, once in each of two blocks.
    assert_eq!(summary.buffers, 3 * 2 * 5);
    assert_eq!(summary.trainable_params(), model.num_params());
    let text = summary.to_string();
    let total = model.num_params() + 30;
    let want = format!(
        "Total params: {total}\nTrainable params: {}\nNon-trainable params: 30",
        model.num_params()
    );
    assert!(text.ends_with(&want), "{text}");
}

/// Frozen parameters (an optimizer's `freeze`, which `Trainer` reports in its summary) count
/// as non-trainable, as Keras counts a layer whose `trainable` is off.
#[test]
fn summary_counts_frozen_parameters_as_non_trainable() {
    let model = Normed::<f32>::new(
        &mut <kiln::rand::rngs::StdRng as kiln::rand::SeedableRng>::seed_from_u64(0),
    );
    let frozen = kiln::optim::ParamFilter::new(|name, _| name.starts_with("z."));
    let summary = model.summary().with_frozen(&model, &frozen);
    // `z`: a 6 -> 5 linear layer.
    assert_eq!(summary.frozen, 6 * 5 + 5);
    assert_eq!(summary.trainable_params(), model.num_params() - 35);
    assert_eq!(summary.non_trainable_params(), 30 + 35);
    assert_eq!(summary.total_params(), model.num_params() + 30);
    assert!(summary.to_string().ends_with(&format!(
        "Trainable params: {}\nNon-trainable params: 65",
        model.num_params() - 35
    )));
}
