//! A warm training step allocates nothing: the workspace holds every buffer, the optimizer's
//! state exists after its first step, and kernels write into what they are given.
//!
//! A counting global allocator counts the allocations made by this thread between two points.

use kiln::ndarray::{Array1, Array2};
use kiln::rand::rngs::StdRng;
use kiln::rand::{Rng, SeedableRng};
use kiln::{Adam, Optimizer};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static COUNT: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: defers to the system allocator; only adds a thread-local counter.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        COUNT.with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        COUNT.with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn allocations_during(f: impl FnOnce()) -> usize {
    let before = COUNT.with(Cell::get);
    f();
    COUNT.with(Cell::get) - before
}

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
