//! A warm training step allocates nothing: the workspace holds every buffer, the optimizer's
//! state exists after its first step, and kernels write into what they are given.
//!
//! A counting global allocator counts the allocations made by this thread between two points.

use kiln::ndarray::{Array1, Array2, Array4};
use kiln::rand::rngs::StdRng;
use kiln::rand::{Rng, SeedableRng};
use kiln::{Adam, Optimizer};

#[path = "../runtime/tests/counting/mod.rs"]
mod counting;
use counting::allocations_in as allocations_during;

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
    step(&mut model, &x, &y);
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
