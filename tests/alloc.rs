//! A warm training step allocates nothing: the workspace holds every buffer, the optimizer's
//! state exists after its first step, and kernels write into what they are given.
//!
//! A counting global allocator counts the allocations made by this thread between two points.

use kiln::ndarray::{Array1, Array2, Array4};
use kiln::rand::rngs::StdRng;
use kiln::rand::{RngExt, SeedableRng};
use kiln::{Adam, Optimizer};

#[path = "../runtime/tests/counting/mod.rs"]
mod counting;
use counting::{allocations_in as allocations_during, warm_up};

#[global_allocator]
static ALLOCATOR: counting::Counting = counting::Counting;

kiln::model! {
    struct Mlp {
        input x: [B, 784];
        target y: [B] classes 10;
        let h1 = relu(linear(x, 128));
        let h2 = relu(linear(h1, 64));
        let logits = linear(h2, 10);
        output logits;
        loss cross_entropy(logits, y);
    }
}

fn batch(rng: &mut StdRng, n: usize) -> (Array2<f32>, Array1<usize>) {
    let x = Array2::from_shape_simple_fn((n, 784), || rng.random_range(0.0..1.0));
    let y = Array1::from_shape_simple_fn(n, || rng.random_range(0..10));
    (x, y)
}

#[test]
fn a_warm_training_step_allocates_nothing() {
    let _exclusive = counting::exclusive();
    let mut rng = StdRng::seed_from_u64(0);
    let mut model = Mlp::<f32>::new(&mut rng);
    let mut ws = model.workspace();
    let mut grads = model.zero_grads();
    let mut opt = Adam::new(1e-3);
    let (x, y) = batch(&mut rng, 64);
    let (x_small, y_small) = batch(&mut rng, 17);
    let mut step = |model: &mut Mlp<f32>, x: &Array2<f32>, y: &Array1<usize>| {
        let loss = model
            .loss_and_grad(x.view(), y.view(), &mut ws, &mut grads)
            .unwrap();
        opt.step(model, &grads);
        loss
    };
    let first = allocations_during(|| {
        step(&mut model, &x, &y);
    });
    assert!(
        first > 0,
        "the first step sizes the workspace and the optimizer state"
    );
    assert!(
        warm_up(
            || {
                step(&mut model, &x, &y);
            },
            5
        ),
        "kept allocating"
    );
    let warm = allocations_during(|| {
        for _ in 0..3 {
            step(&mut model, &x, &y);
        }
    });
    assert_eq!(warm, 0, "a warm step must not allocate");
    let partial = allocations_during(|| {
        step(&mut model, &x_small, &y_small);
        step(&mut model, &x, &y);
    });
    assert_eq!(
        partial, 0,
        "a smaller (final) batch reuses the larger buffers"
    );
}

kiln::model! {
    /// A fully convolutional model on images of any size divisible by 2.
    struct AnySize {
        input x: [B, 1, 2 * H, 2 * W];
        target y: [B, 2 * H, 2 * W] classes 3;
        let c = relu(conv2d(x, 8, kernel = 3, padding = 1));
        let p = max_pool2d(c, 2);
        let m = conv2d(p, 8, kernel = 3, padding = same);
        let u = conv_transpose2d(m, 8, kernel = 2, stride = 2);
        let scores = conv2d(concat(u, c, axis = 1), 3, kernel = 1);
        output scores;
        loss cross_entropy(scores, y);
    }
}

#[test]
fn steps_alternating_between_image_sizes_seen_before_allocate_nothing() {
    let _exclusive = counting::exclusive();
    let mut rng = StdRng::seed_from_u64(2);
    let mut model = AnySize::<f32>::new(&mut rng);
    let (mut ws, mut grads, mut opt) = (model.workspace(), model.zero_grads(), Adam::new(1e-3));
    let mut images = |h: usize, w: usize| {
        let x = Array4::from_shape_simple_fn((8, 1, h, w), || rng.random_range(0.0f32..1.0));
        let y = kiln::ndarray::Array3::from_shape_simple_fn((8, h, w), || rng.random_range(0..3));
        (x, y)
    };
    let (large, tall, small) = (images(48, 48), images(64, 16), images(16, 24));
    let mut step = |model: &mut AnySize<f32>,
                    (x, y): &(Array4<f32>, kiln::ndarray::Array3<usize>)| {
        model
            .loss_and_grad(x.view(), y.view(), &mut ws, &mut grads)
            .unwrap();
        opt.step(model, &grads);
    };
    // The workspace grows to the largest size; the GEMM's packing buffers may still grow
    // once for a smaller size, whose products it blocks differently.
    for images in [&large, &tall, &small] {
        assert!(warm_up(|| step(&mut model, images), 5), "kept allocating");
    }
    let alternating = allocations_during(|| {
        for images in [&small, &large, &tall, &large, &small] {
            step(&mut model, images);
        }
    });
    assert_eq!(alternating, 0, "sizes seen before reuse their buffers");
}

kiln::model! {
    struct LeNet {
        input x: [B, 1, 28, 28];
        target y: [B] classes 10;
        let c1 = relu(conv2d(x, 6, kernel = 5, padding = 2));
        let p1 = max_pool2d(c1, 2);
        let c2 = relu(conv2d(p1, 16, kernel = 5));
        let p2 = max_pool2d(c2, 2);
        let f3 = relu(linear(flatten(p2), 120));
        let f4 = relu(linear(f3, 84));
        let logits = linear(f4, 10);
        output logits;
        loss cross_entropy(logits, y);
    }
}

#[test]
fn a_warm_convolutional_step_allocates_nothing() {
    let _exclusive = counting::exclusive();
    let mut rng = StdRng::seed_from_u64(1);
    let mut model = LeNet::<f32>::new(&mut rng);
    let mut ws = model.workspace();
    let mut grads = model.zero_grads();
    let mut opt = Adam::new(1e-3);
    let image = |rng: &mut StdRng, n: usize| {
        Array4::from_shape_simple_fn((n, 1, 28, 28), || rng.random_range(0.0f32..1.0))
    };
    // The benchmark's batch of 64 (large enough that convolutions, pooling and the relu
    // loops run their halves on the helper thread, whose allocations count too) and a
    // final partial batch of 17.
    let (x, y) = (
        image(&mut rng, 64),
        Array1::from_shape_simple_fn(64, || rng.random_range(0..10)),
    );
    let (x_small, y_small) = (
        image(&mut rng, 17),
        Array1::from_shape_simple_fn(17, || rng.random_range(0..10)),
    );
    let mut step = |model: &mut LeNet<f32>, x: &Array4<f32>, y: &Array1<usize>| {
        model
            .loss_and_grad(x.view(), y.view(), &mut ws, &mut grads)
            .unwrap();
        opt.step(model, &grads);
    };
    // The helper thread sizes its own GEMM buffers the first time it takes a chunk, which on
    // a busy machine may not be in the first step (see `warm_up`).
    assert!(warm_up(|| step(&mut model, &x, &y), 5), "kept allocating");
    let warm = allocations_during(|| {
        for _ in 0..3 {
            step(&mut model, &x, &y);
        }
    });
    assert_eq!(warm, 0, "a warm convolutional step must not allocate");
    let partial = allocations_during(|| {
        step(&mut model, &x_small, &y_small);
        step(&mut model, &x, &y);
    });
    assert_eq!(
        partial, 0,
        "a smaller (final) batch reuses the larger buffers"
    );
}

kiln::model! {
    /// W6's shape at a smaller width: embeddings, a chain of attention blocks, a tied head.
    struct Gpt {
        input tokens: [B, T] tokens 50;
        target next: [B, T] classes 50;
        let wte = embedding(tokens, 32);
        let wpe = position_embedding(tokens, 32, max_len = 32);
        let x = wte + wpe;
        let h = Block(x, repeat = 2);
        let ln_f = layer_norm(h);
        let logits = linear(ln_f, 50, bias = false, tied = wte);
        output logits;
        loss cross_entropy(logits, next, ignore_index = 0);

        block Block(x) {
            let ln_1 = layer_norm(x);
            let attn = multi_head_attention(ln_1, heads = 4, causal = true);
            let x1 = x + attn;
            let ln_2 = layer_norm(x1);
            let up = gelu(linear(ln_2, 64));
            let down = linear(up, 32);
            let out = x1 + down;
            output out;
        }
    }
}

kiln::model! {
    /// W7's shape: an LSTM over padded token sequences, classified from its final state.
    struct Sentiment {
        input tokens: [B, T] tokens 1000;
        input len: [B] lengths T;
        target y: [B] classes 3;
        let emb = embedding(tokens, 32, padding_idx = 0);
        let rnn = lstm(emb, 32, bidirectional = true, lengths = len, final_state = true);
        let logits = linear(rnn, 3);
        output logits;
        loss cross_entropy(logits, y);
    }
}

#[test]
fn a_warm_sequence_step_allocates_nothing() {
    let _exclusive = counting::exclusive();
    let mut rng = StdRng::seed_from_u64(2);
    let ids = |rng: &mut StdRng, b: usize, t: usize, v: usize| {
        Array2::from_shape_simple_fn((b, t), || rng.random_range(0..v))
    };

    let mut gpt = Gpt::<f32>::new(&mut rng);
    let (mut ws, mut grads, mut opt) = (gpt.workspace(), gpt.zero_grads(), kiln::AdamW::new(1e-3));
    let (tokens, next) = (ids(&mut rng, 8, 32, 50), ids(&mut rng, 8, 32, 50));
    let (short, short_next) = (ids(&mut rng, 8, 20, 50), ids(&mut rng, 8, 20, 50));
    let mut step = |model: &mut Gpt<f32>, t: &Array2<usize>, n: &Array2<usize>| {
        model
            .loss_and_grad(t.view(), n.view(), &mut ws, &mut grads)
            .unwrap();
        opt.step(model, &grads);
    };
    step(&mut gpt, &tokens, &next);
    assert!(
        warm_up(|| step(&mut gpt, &tokens, &next), 5),
        "kept allocating"
    );
    let warm = allocations_during(|| {
        for _ in 0..2 {
            step(&mut gpt, &tokens, &next);
        }
        // A shorter sequence length reuses the longer one's buffers.
        step(&mut gpt, &short, &short_next);
    });
    assert_eq!(warm, 0, "a warm GPT step must not allocate");

    let mut model = Sentiment::<f32>::new(&mut rng);
    let (mut ws, mut grads, mut opt) = (model.workspace(), model.zero_grads(), Adam::new(1e-3));
    let tokens = ids(&mut rng, 16, 12, 1000);
    let len = Array1::from_shape_simple_fn(16, || rng.random_range(1..=12usize));
    let y = Array1::from_shape_simple_fn(16, || rng.random_range(0..3usize));
    let mut step = |model: &mut Sentiment<f32>| {
        model
            .loss_and_grad(tokens.view(), len.view(), y.view(), &mut ws, &mut grads)
            .unwrap();
        opt.step(model, &grads);
    };
    step(&mut model);
    assert!(warm_up(|| step(&mut model), 5), "kept allocating");
    let warm = allocations_during(|| {
        for _ in 0..2 {
            step(&mut model);
        }
    });
    assert_eq!(warm, 0, "a warm LSTM step must not allocate");
}

/// Two ranks holding the same data, without communication: a sum is twice the buffer.
struct Mirror;

impl kiln::distributed::Communicator for Mirror {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        2
    }
    fn all_reduce_sum_f32(&self, send: &[f32], recv: &mut [f32]) -> kiln::Result<()> {
        for (r, &s) in recv.iter_mut().zip(send) {
            *r = s + s;
        }
        Ok(())
    }
    fn all_reduce_sum_f64(&self, send: &[f64], recv: &mut [f64]) -> kiln::Result<()> {
        for (r, &s) in recv.iter_mut().zip(send) {
            *r = s + s;
        }
        Ok(())
    }
    fn broadcast_f32(&self, _: &mut [f32]) -> kiln::Result<()> {
        Ok(())
    }
    fn broadcast_f64(&self, _: &mut [f64]) -> kiln::Result<()> {
        Ok(())
    }
}

/// A data-parallel step summing gradient buckets during the backward pass (the generated
/// backward reporting each layer to the sink) allocates nothing once warm.
#[test]
fn a_warm_overlapped_data_parallel_step_allocates_nothing() {
    let _exclusive = counting::exclusive();
    let mut rng = StdRng::seed_from_u64(0);
    let mut model = Mlp::<f32>::new(&mut rng);
    let mut ws = model.workspace();
    let mut grads = model.zero_grads();
    let mut opt = Adam::new(1e-3);
    let (x, y) = batch(&mut rng, 64);
    let mut dp = kiln::distributed::DataParallel::new(&Mirror, &mut model)
        .expect("data parallel")
        .bucket_bytes(64 << 10);
    assert_eq!(
        dp.buckets(),
        7,
        "109,387 gradient values in buckets of 16,384"
    );
    let mut step = |model: &mut Mlp<f32>, grads: &mut MlpGrads<f32>| {
        let (loss, global) = dp
            .overlap_backward(grads, 64, |g, sink| {
                model.loss_and_grad_notify(x.view(), y.view(), &mut ws, g, Some(sink))
            })
            .unwrap();
        opt.step(model, grads);
        (loss, global)
    };
    // The helper thread's first share of a product can come several steps in (`warm_up`).
    assert!(
        warm_up(
            || {
                step(&mut model, &mut grads);
            },
            5
        ),
        "kept allocating"
    );
    let mut result = (None, 0);
    let warm = allocations_during(|| {
        for _ in 0..3 {
            result = step(&mut model, &mut grads);
        }
    });
    assert_eq!(warm, 0, "a warm overlapped step must not allocate");
    assert_eq!(result.1, 128, "two ranks of 64 samples");
    assert!(result.0.is_some_and(f32::is_finite));
}
