//! Optimizer steps and the non-GEMM kernels allocate nothing once warm: counted by a global
//! allocator, per thread so that the test harness's own threads do not interfere.

mod common;

mod counting;
use common::Tiny;
use counting::allocations_in;
use kiln_runtime::kernels::{
    fill_backward, linear_backward_bias, log_softmax_backward, log_softmax_forward,
    softmax_backward, softmax_forward, sum,
};
use kiln_runtime::loss::{
    bce_with_logits, bce_with_logits_backward, cross_entropy, cross_entropy_backward, mse,
    mse_backward,
};
use kiln_runtime::{Adam, AdamW, Optimizer, RmsProp, Sgd};

#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

fn warm_steps_allocate_nothing<O: Optimizer<f64>>(mut opt: O, stateful: bool, what: &str) {
    let mut model = Tiny::<f64>::sample();
    let grads = Tiny::<f64>::grads_from(&[0.5, -0.25, 1.0, 2.0, -1.5, 0.75, 0.1, -0.2]);
    let first = allocations_in(|| opt.step(&mut model, &grads));
    let later = allocations_in(|| {
        for _ in 0..3 {
            opt.step(&mut model, &grads);
        }
    });
    assert_eq!(
        later, 0,
        "{what}: warm steps allocated ({first} on the first step)"
    );
    // The counter works: an optimizer with state allocates it on the first step only.
    assert_eq!(
        first > 0,
        stateful,
        "{what}: {first} allocations on the first step"
    );
}

#[test]
fn optimizers_and_kernels_do_not_allocate_when_warm() {
    let _exclusive = counting::exclusive();
    warm_steps_allocate_nothing(Sgd::new(0.1), false, "sgd");
    warm_steps_allocate_nothing(
        Sgd::new(0.1).momentum(0.9).nesterov(true).weight_decay(0.1),
        true,
        "sgd nesterov",
    );
    warm_steps_allocate_nothing(Adam::new(1e-3).weight_decay(0.1), true, "adam");
    warm_steps_allocate_nothing(AdamW::new(1e-3), true, "adamw");
    warm_steps_allocate_nothing(
        RmsProp::new(1e-2).centered(true).momentum(0.9),
        true,
        "rmsprop",
    );

    // The non-GEMM kernels (the GEMM-based ones have their own test, `gemm_alloc.rs`).
    let (rows, cols) = (3, 4);
    let x: Vec<f64> = (0..rows * cols).map(|i| (i as f64 * 0.37).sin()).collect();
    let t: Vec<f64> = (0..rows * cols).map(|i| (i % 2) as f64).collect();
    let labels = [1, 0, 3];
    let (mut y, mut dx, mut db) = (
        vec![0.0; rows * cols],
        vec![0.0; rows * cols],
        vec![0.0; cols],
    );
    let count = allocations_in(|| {
        softmax_forward(&x, rows, cols, &mut y);
        softmax_backward(&y, &x, rows, cols, &mut dx, true);
        log_softmax_forward(&x, rows, cols, &mut y);
        log_softmax_backward(&y, &x, rows, cols, &mut dx, false);
        linear_backward_bias(&x, rows, cols, &mut db, false);
        fill_backward(&mut dx, sum(&x), true);
        let _ = mse(&x, &t) + bce_with_logits(&x, &t) + cross_entropy(&x, rows, cols, &labels);
        mse_backward(&x, &t, 1.0, &mut dx, false);
        bce_with_logits_backward(&x, &t, 1.0, &mut dx, true);
        cross_entropy_backward(&x, rows, cols, &labels, 1.0, &mut dx, true);
    });
    assert_eq!(count, 0, "kernels allocated");
}
