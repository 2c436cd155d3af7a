//! Frozen parameters in the backward pass (the workspace's `freeze`, which `Trainer` sets from
//! the optimizer's `freeze`): the steps that feed only frozen layers are skipped, frozen
//! layers get zero gradients, and the trainable layers' gradients are the same bits as
//! without freezing. The random models check the same on every op
//! (`random_models/harness.rs`, `check_frozen`); these cover a tied head and repeated blocks
//! (the data-parallel tests' `TinyGpt`), the data-parallel sink, the finiteness check and
//! unfreezing, and a transfer to a new task through `Trainer`.

use super::common::TinyGpt;
use kiln::ndarray::{Array2, ArrayD};
use kiln::rand::rngs::StdRng;
use kiln::rand::{RngExt, SeedableRng};
use kiln::{GradSink, Model, Optimizer};
use std::collections::BTreeMap;

fn batch(seed: u64) -> (Array2<usize>, Array2<usize>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let tokens = Array2::from_shape_simple_fn((3, 6), || rng.random_range(0..11));
    let next = Array2::from_shape_simple_fn((3, 6), || rng.random_range(0..11));
    (tokens, next)
}

/// Every gradient by name, and the loss, after one step with `frozen` frozen.
fn step(
    model: &mut TinyGpt<f64>,
    frozen: impl Fn(&str) -> bool,
    check_finite: bool,
) -> (f64, BTreeMap<&'static str, ArrayD<f64>>) {
    let (tokens, next) = batch(3);
    let mut ws = model.workspace();
    ws.freeze(frozen);
    ws.check_finite(check_finite);
    let mut grads = model.zero_grads();
    // Garbage where the step must write zeros.
    TinyGpt::visit_grads_mut(&mut grads, &mut |_, mut g| g.fill(7.0));
    let loss = model
        .loss_and_grad(tokens.view(), next.view(), &mut ws, &mut grads)
        .expect("a training step");
    let mut by_name = BTreeMap::new();
    TinyGpt::visit_grads(&grads, &mut |name, g| {
        by_name.insert(name, g.to_owned());
    });
    (loss, by_name)
}

fn model() -> TinyGpt<f64> {
    TinyGpt::new(&mut StdRng::seed_from_u64(8))
}

/// The gradients of `frozen` parameters are zero, the others those of the unfrozen step,
/// bit for bit.
fn assert_frozen(frozen: impl Fn(&str) -> bool + Copy, check_finite: bool) {
    let (loss, want) = step(&mut model(), |_| false, false);
    let (frozen_loss, got) = step(&mut model(), frozen, check_finite);
    assert_eq!(loss.to_bits(), frozen_loss.to_bits());
    for (name, g) in &got {
        if frozen(name) {
            assert!(g.iter().all(|&e| e == 0.0), "`{name}` is frozen: {g}");
        } else {
            assert!(
                g.iter()
                    .zip(&want[name])
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "`{name}`: {g} against {}",
                want[name]
            );
        }
    }
}

#[test]
fn a_frozen_table_tied_to_a_trainable_head_gets_zero_gradients() {
    // The head's step runs (the layer norm before it is trainable) and would add to the
    // table's gradient.
    assert_frozen(|name| name.starts_with("wte."), false);
}

#[test]
fn a_frozen_trunk_leaves_the_final_norm_its_gradients() {
    assert_frozen(|name| !name.starts_with("ln_f."), true);
}

#[test]
fn frozen_blocks_between_trainable_layers_pass_gradients_back() {
    assert_frozen(|name| name.starts_with("h."), true);
}

#[test]
fn parts_of_blocks_freeze_inside_each_block() {
    // Every block's attention, and the second block's first MLP layer: the blocks' own
    // backward passes skip and zero them.
    assert_frozen(
        |name| name.contains(".attn.") || name.starts_with("h.1.up."),
        true,
    );
}

#[test]
fn everything_frozen_gives_zero_gradients_and_the_same_loss() {
    assert_frozen(|_| true, false);
}

#[test]
fn unfreezing_restores_every_gradient() {
    let (tokens, next) = batch(3);
    let mut m = model();
    let mut ws = m.workspace();
    let mut grads = m.zero_grads();
    ws.freeze(|name| name.starts_with("h."));
    m.loss_and_grad(tokens.view(), next.view(), &mut ws, &mut grads)
        .expect("a frozen step");
    ws.freeze(|_| false);
    m.loss_and_grad(tokens.view(), next.view(), &mut ws, &mut grads)
        .expect("an unfrozen step");
    let (_, want) = step(&mut model(), |_| false, false);
    TinyGpt::visit_grads(&grads, &mut |name, g| {
        assert_eq!(g, want[name].view(), "`{name}`");
    });
}

/// Records what the backward pass hands to the data-parallel sink.
#[derive(Default)]
struct Recorder(Vec<(usize, Vec<f64>)>);

impl GradSink<f64> for Recorder {
    fn ready(&mut self, index: usize, grad: &[f64]) {
        self.0.push((index, grad.to_vec()));
    }
}

#[test]
fn the_sink_receives_every_gradient_once_frozen_ones_as_zeros() {
    let (tokens, next) = batch(3);
    let mut m = model();
    let mut ws = m.workspace();
    ws.freeze(|name| !name.starts_with("ln_f."));
    let mut grads = m.zero_grads();
    let mut sink = Recorder::default();
    m.loss_and_grad_notify(
        tokens.view(),
        next.view(),
        &mut ws,
        &mut grads,
        Some(&mut sink),
    )
    .expect("a training step");
    let mut names = Vec::new();
    m.visit_params(&mut |name, _| names.push(name));
    let mut indices: Vec<usize> = sink.0.iter().map(|(i, _)| *i).collect();
    indices.sort_unstable();
    assert_eq!(indices, (0..names.len()).collect::<Vec<_>>());
    for (index, grad) in &sink.0 {
        let trainable = names[*index].starts_with("ln_f.");
        assert_eq!(
            grad.iter().any(|&e| e != 0.0),
            trainable,
            "`{}`",
            names[*index]
        );
    }
}

kiln::model! {
    /// A perceptron over the 8 × 8 digits: a two-layer trunk and a head.
    pub struct DigitsMlp {
        input x: [B, 64];
        target y: [B] classes 10;
        let h1 = relu(linear(x, 48));
        let h2 = relu(linear(h1, 32));
        let logits = linear(h2, 10);
        output logits;
        loss cross_entropy(logits, y);
    }
}

/// `data` with each label replaced by `relabel(label)`.
fn relabel(
    data: &kiln::data::TensorDataset<f32>,
    relabel: impl Fn(usize) -> usize,
) -> kiln::data::TensorDataset<f32> {
    let labels = data.labels().expect("labelled").mapv(relabel);
    kiln::data::TensorDataset::with_labels(data.features().clone(), labels, 10)
        .expect("labels below 10")
}

/// Transfer learning as a user runs it: a trunk trained to tell the ten digits apart is
/// frozen (in the optimizer, which `Trainer` passes on to the backward pass) and a fresh head
/// learns another task on its features, whether a digit is odd. The trunk's weights stay as
/// they were, bit for bit, and its features carry over: the head alone reaches 90% on
/// held-out digits, well above the same head on an untrained trunk.
#[test]
fn a_frozen_trunk_carries_its_features_to_a_new_task() {
    use kiln::train::{evaluate, Trainer};
    let (train, test) = super::common::digits_split(4);

    let mut model = DigitsMlp::<f32>::new(&mut StdRng::seed_from_u64(1));
    Trainer::new(15, 32)
        .shuffle_seed(2)
        .progress(false)
        .fit(&mut model, &mut kiln::Adam::new(3e-3), &train)
        .expect("pretraining runs");
    let trunk = |m: &DigitsMlp<f32>| {
        let mut bits = Vec::new();
        m.visit_params(&mut |name, p| {
            if !name.starts_with("logits.") {
                bits.extend(p.iter().map(|v| v.to_bits()));
            }
        });
        bits
    };
    let pretrained = trunk(&model);
    let head = DigitsMlp::<f32>::new(&mut StdRng::seed_from_u64(9));
    model.logits = head.logits.clone();

    let odd = |digit: usize| digit % 2;
    let fine_tune = |model: &mut DigitsMlp<f32>| {
        let mut opt = kiln::Adam::new(3e-3).freeze(|name, _| !name.starts_with("logits."));
        let summary = model
            .summary()
            .with_frozen(model, &opt.frozen().expect("a filter"));
        assert_eq!(summary.trainable_params(), 32 * 10 + 10);
        Trainer::new(20, 32)
            .shuffle_seed(3)
            .progress(false)
            .fit(model, &mut opt, &relabel(&train, odd))
            .expect("fine-tuning runs");
        evaluate(model, &relabel(&test, odd), 64)
            .expect("evaluation runs")
            .accuracy
            .expect("labels give an accuracy")
    };
    let accuracy = fine_tune(&mut model);
    assert_eq!(trunk(&model), pretrained, "the frozen trunk moved");
    // The same head on an untrained trunk, for comparison.
    let mut untrained = DigitsMlp::<f32>::new(&mut StdRng::seed_from_u64(5));
    untrained.logits = head.logits.clone();
    let baseline = fine_tune(&mut untrained);
    // 0.94 against 0.81 when written.
    assert!(accuracy >= 0.9, "held-out odd/even accuracy {accuracy}");
    assert!(
        accuracy >= baseline + 0.08,
        "pretrained trunk {accuracy}, untrained trunk {baseline}"
    );
}
