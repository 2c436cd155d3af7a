//! `multi_head_attention(.., dropout = p)`: PyTorch's `nn.MultiheadAttention(dropout = p)`,
//! attention weights dropped in training only. The kernel's own tests check the dropped
//! forward against its definition and its backward against finite differences; these check
//! the layer inside models: the training step's gradients (a two-block stack, masks seeded),
//! inference unchanged, masks that differ from step to step, and a compile error for a
//! probability out of range (`tests/ui`).

use kiln::check::gradient_check;
use kiln::ndarray::{Array2, Array3};
use kiln::rand::rngs::StdRng;
use kiln::rand::{RngExt, SeedableRng};

kiln::model! {
    /// A causal two-block stack whose attention drops weights in training, and a
    /// cross-attention head.
    struct Dropped {
        input tokens: [B, T] tokens 11;
        input memory: [B, S, 8];
        target next: [B, T] classes 11;
        let e = embedding(tokens, 8);
        let h = Block(e, repeat = 2);
        let c = multi_head_attention(h, memory, heads = 2, dropout = 0.5);
        let logits = linear(h + c, 11);
        output logits;
        loss cross_entropy(logits, next);

        block Block(x) {
            let n = layer_norm(x);
            let a = multi_head_attention(n, heads = 2, causal = true, dropout = 0.3);
            let out = x + a;
            output out;
        }
    }
}

kiln::model! {
    /// [`Dropped`] without dropout.
    struct Kept {
        input tokens: [B, T] tokens 11;
        input memory: [B, S, 8];
        target next: [B, T] classes 11;
        let e = embedding(tokens, 8);
        let h = Block(e, repeat = 2);
        let c = multi_head_attention(h, memory, heads = 2);
        let logits = linear(h + c, 11);
        output logits;
        loss cross_entropy(logits, next);

        block Block(x) {
            let n = layer_norm(x);
            let a = multi_head_attention(n, heads = 2, causal = true);
            let out = x + a;
            output out;
        }
    }
}

kiln::model! {
    /// Dropout only inside a repeated block.
    struct BlockDropped {
        input tokens: [B, T] tokens 11;
        target next: [B, T] classes 11;
        let e = embedding(tokens, 8);
        let h = Block(e, repeat = 2);
        let logits = linear(h, 11);
        output logits;
        loss cross_entropy(logits, next);

        block Block(x) {
            let a = multi_head_attention(x, heads = 2, causal = true, dropout = 0.3);
            let out = x + a;
            output out;
        }
    }
}

/// Tokens, a memory and next tokens for a batch of 3 sequences of 6 (memory of 4).
fn batch(rng: &mut StdRng) -> (Array2<usize>, Array3<f64>, Array2<usize>) {
    let tokens = Array2::from_shape_fn((3, 6), |_| rng.random_range(0..11));
    let memory = Array3::from_shape_fn((3, 4, 8), |_| rng.random_range(-1.0..1.0));
    let next = Array2::from_shape_fn((3, 6), |_| rng.random_range(0..11));
    (tokens, memory, next)
}

#[test]
fn training_gradients_match_finite_differences_with_seeded_masks() {
    let mut rng = StdRng::seed_from_u64(3);
    let mut model = Dropped::<f64>::new(&mut rng);
    let (tokens, memory, next) = batch(&mut rng);
    let mut ws = model.workspace();
    let mut grads = model.zero_grads();
    ws.seed(11);
    let loss = model
        .loss_and_grad(
            tokens.view(),
            memory.view(),
            next.view(),
            &mut ws,
            &mut grads,
        )
        .expect("a step");
    // The training loss is not the inference one: weights were dropped.
    let inference = model
        .loss(tokens.view(), memory.view(), next.view(), &mut ws)
        .expect("a loss");
    assert!((loss - inference).abs() > 1e-6, "{loss} {inference}");
    let report = gradient_check(
        &mut model,
        &grads,
        |m| {
            let (mut ws, mut scratch) = (m.workspace(), m.zero_grads());
            ws.seed(11);
            m.clone()
                .loss_and_grad(
                    tokens.view(),
                    memory.view(),
                    next.view(),
                    &mut ws,
                    &mut scratch,
                )
                .expect("a step")
        },
        1e-6,
    );
    report.assert_within(1e-6, 1e-8);
}

#[test]
fn inference_is_the_layer_without_dropout() {
    // The same seed gives both models the same weights: dropout draws nothing at init.
    let dropped = Dropped::<f64>::new(&mut StdRng::seed_from_u64(5));
    let kept = Kept::<f64>::new(&mut StdRng::seed_from_u64(5));
    let (tokens, memory, _) = batch(&mut StdRng::seed_from_u64(6));
    let a = dropped
        .forward(tokens.view(), memory.view())
        .expect("forward");
    let b = kept.forward(tokens.view(), memory.view()).expect("forward");
    assert_eq!(a, b);
}

#[test]
fn each_step_draws_a_new_mask_and_a_seed_repeats_it() {
    let mut rng = StdRng::seed_from_u64(7);
    let model = Dropped::<f64>::new(&mut rng);
    let (tokens, memory, next) = batch(&mut rng);
    let mut ws = model.workspace();
    let mut grads = model.zero_grads();
    let mut step = |ws: &mut _| {
        model
            .clone()
            .loss_and_grad(tokens.view(), memory.view(), next.view(), ws, &mut grads)
            .expect("a step")
    };
    ws.seed(1);
    let (first, second) = (step(&mut ws), step(&mut ws));
    assert_ne!(first, second, "two steps dropped the same weights");
    ws.seed(1);
    assert_eq!(step(&mut ws), first);
}

#[test]
fn a_repeated_block_drops_in_training() {
    let mut rng = StdRng::seed_from_u64(9);
    let model = BlockDropped::<f64>::new(&mut rng);
    let (tokens, _, next) = batch(&mut rng);
    let (mut ws, mut grads) = (model.workspace(), model.zero_grads());
    let trained = model
        .clone()
        .loss_and_grad(tokens.view(), next.view(), &mut ws, &mut grads)
        .expect("a step");
    let inference = model
        .loss(tokens.view(), next.view(), &mut ws)
        .expect("a loss");
    assert!((trained - inference).abs() > 1e-6, "{trained} {inference}");
}

#[test]
fn decoding_is_the_inference_forward() {
    let mut rng = StdRng::seed_from_u64(13);
    let model = BlockDropped::<f64>::new(&mut rng);
    let (tokens, _, _) = batch(&mut rng);
    let whole = model.forward(tokens.view()).expect("forward");
    let mut cache = model.decoder_cache(3, 6).expect("a cache");
    let first = model
        .forward_cached(tokens.slice(kiln::ndarray::s![.., ..2]), &mut cache)
        .expect("a piece");
    let rest = model
        .forward_cached(tokens.slice(kiln::ndarray::s![.., 2..]), &mut cache)
        .expect("a piece");
    let pieces = kiln::ndarray::concatenate(kiln::ndarray::Axis(1), &[first.view(), rest.view()])
        .expect("pieces");
    for (a, b) in pieces.iter().zip(whole.iter()) {
        assert!((a - b).abs() <= 1e-12 * b.abs().max(1.0), "{a} {b}");
    }
}
