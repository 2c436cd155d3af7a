//! Optimizers against independently written scalar references of the `torch.optim` update
//! rules, and against trajectories worked out by hand.

use crate::common;

use common::Tiny;
use kiln_runtime::{Adam, AdamW, Float, Optimizer, RmsProp, Sgd};

/// A gradient that depends on the parameter (so that trajectories are not straight lines)
/// and on its position (so that no two elements move alike).
fn grad_of(p: f64, index: usize) -> f64 {
    0.5 * p * p - 0.3 * index as f64 + 0.2
}

/// Runs `steps` optimizer steps on `Tiny::sample()`, recomputing the gradient from the
/// current parameters each time, and returns the flat parameters after each step.
fn run<F: Float, O: Optimizer<F>>(mut opt: O, steps: usize) -> Vec<Vec<f64>> {
    let mut model = Tiny::<F>::sample();
    let mut history = Vec::new();
    for _ in 0..steps {
        let grads: Vec<f64> = model
            .flat_params()
            .iter()
            .enumerate()
            .map(|(i, &p)| grad_of(p, i))
            .collect();
        opt.step(&mut model, &Tiny::<F>::grads_from(&grads));
        history.push(model.flat_params());
    }
    history
}

/// The update rules as `torch.optim`'s documentation states them, one scalar at a time.
#[derive(Clone, Copy, Debug)]
enum Reference {
    Sgd {
        lr: f64,
        momentum: f64,
        dampening: f64,
        nesterov: bool,
        weight_decay: f64,
    },
    Adam {
        lr: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
        decoupled: bool,
    },
    RmsProp {
        lr: f64,
        alpha: f64,
        eps: f64,
        momentum: f64,
        centered: bool,
        weight_decay: f64,
    },
}

fn reference(rule: Reference, steps: usize) -> Vec<Vec<f64>> {
    let start = Tiny::<f64>::sample().flat_params();
    let n = start.len();
    let mut history = vec![vec![0.0; n]; steps];
    for (i, &p0) in start.iter().enumerate() {
        let mut p = p0;
        // State: momentum buffer / first moment, second moment, gradient average.
        let (mut a, mut b, mut c) = (0.0f64, 0.0f64, 0.0f64);
        for (t, row) in history.iter_mut().enumerate() {
            let step = (t + 1) as f64;
            let mut g = grad_of(p, i);
            match rule {
                Reference::Sgd {
                    lr,
                    momentum,
                    dampening,
                    nesterov,
                    weight_decay,
                } => {
                    g += weight_decay * p;
                    if momentum != 0.0 {
                        a = if t == 0 {
                            g
                        } else {
                            momentum * a + (1.0 - dampening) * g
                        };
                        g = if nesterov { g + momentum * a } else { a };
                    }
                    p -= lr * g;
                }
                Reference::Adam {
                    lr,
                    beta1,
                    beta2,
                    eps,
                    weight_decay,
                    decoupled,
                } => {
                    if decoupled {
                        p *= 1.0 - lr * weight_decay;
                    } else {
                        g += weight_decay * p;
                    }
                    a = beta1 * a + (1.0 - beta1) * g;
                    b = beta2 * b + (1.0 - beta2) * g * g;
                    let m_hat = a / (1.0 - beta1.powf(step));
                    let denom = b.sqrt() / (1.0 - beta2.powf(step)).sqrt() + eps;
                    p -= lr * m_hat / denom;
                }
                Reference::RmsProp {
                    lr,
                    alpha,
                    eps,
                    momentum,
                    centered,
                    weight_decay,
                } => {
                    g += weight_decay * p;
                    b = alpha * b + (1.0 - alpha) * g * g;
                    let var = if centered {
                        c = alpha * c + (1.0 - alpha) * g;
                        b - c * c
                    } else {
                        b
                    };
                    let avg = var.sqrt() + eps;
                    if momentum > 0.0 {
                        a = momentum * a + g / avg;
                        p -= lr * a;
                    } else {
                        p -= lr * g / avg;
                    }
                }
            }
            row[i] = p;
        }
    }
    history
}

#[track_caller]
fn assert_trajectory(got: &[Vec<f64>], want: &[Vec<f64>], rtol: f64, atol: f64, what: &str) {
    for (step, (g, w)) in got.iter().zip(want).enumerate() {
        for (i, (&g, &w)) in g.iter().zip(w).enumerate() {
            assert!(
                (g - w).abs() <= atol + rtol * w.abs(),
                "{what}: step {} element {i}: got {g:.17e}, want {w:.17e}",
                step + 1
            );
        }
    }
    assert_eq!(got.len(), want.len());
}

/// Runs the optimizer in f64 (tight) and f32 (loose) against the f64 reference.
fn check<O64: Optimizer<f64>, O32: Optimizer<f32>>(
    opt64: O64,
    opt32: O32,
    rule: Reference,
    what: &str,
) {
    let want = reference(rule, 3);
    // Differences are a few roundings in the order of operations.
    assert_trajectory(&run::<f64, _>(opt64, 3), &want, 1e-13, 1e-15, what);
    assert_trajectory(
        &run::<f32, _>(opt32, 3),
        &want,
        2e-5,
        2e-6,
        &format!("{what} (f32)"),
    );
    // The parameters really moved: a no-op optimizer would fail the reference anyway, but
    // make the failure obvious.
    assert_ne!(want[2], Tiny::<f64>::sample().flat_params());
}

#[test]
fn sgd_variants_match_reference() {
    let base = |momentum, dampening, nesterov, weight_decay| Reference::Sgd {
        lr: 0.1,
        momentum,
        dampening,
        nesterov,
        weight_decay,
    };
    check(
        Sgd::new(0.1),
        Sgd::new(0.1),
        base(0.0, 0.0, false, 0.0),
        "sgd",
    );
    check(
        Sgd::new(0.1).momentum(0.9),
        Sgd::new(0.1).momentum(0.9),
        base(0.9, 0.0, false, 0.0),
        "momentum",
    );
    check(
        Sgd::new(0.1).momentum(0.9).dampening(0.3),
        Sgd::new(0.1).momentum(0.9).dampening(0.3),
        base(0.9, 0.3, false, 0.0),
        "dampening",
    );
    check(
        Sgd::new(0.1).momentum(0.9).nesterov(true),
        Sgd::new(0.1).momentum(0.9).nesterov(true),
        base(0.9, 0.0, true, 0.0),
        "nesterov",
    );
    check(
        Sgd::new(0.1).weight_decay(0.05),
        Sgd::new(0.1).weight_decay(0.05),
        base(0.0, 0.0, false, 0.05),
        "weight decay",
    );
    check(
        Sgd::new(0.1)
            .momentum(0.8)
            .nesterov(true)
            .weight_decay(0.05),
        Sgd::new(0.1)
            .momentum(0.8)
            .nesterov(true)
            .weight_decay(0.05),
        base(0.8, 0.0, true, 0.05),
        "nesterov + weight decay",
    );
}

#[test]
fn adam_and_adamw_match_reference() {
    let rule = |weight_decay, decoupled| Reference::Adam {
        lr: 0.01,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay,
        decoupled,
    };
    check(Adam::new(0.01), Adam::new(0.01), rule(0.0, false), "adam");
    check(
        Adam::new(0.01).weight_decay(0.1),
        Adam::new(0.01).weight_decay(0.1),
        rule(0.1, false),
        "adam L2",
    );
    check(
        AdamW::new(0.01),
        AdamW::new(0.01),
        rule(0.01, true),
        "adamw default decay",
    );
    check(
        AdamW::new(0.01).weight_decay(0.2),
        AdamW::new(0.01).weight_decay(0.2),
        rule(0.2, true),
        "adamw",
    );
    let custom = Reference::Adam {
        lr: 0.05,
        beta1: 0.8,
        beta2: 0.99,
        eps: 1e-6,
        weight_decay: 0.0,
        decoupled: false,
    };
    check(
        Adam::new(0.05).betas(0.8, 0.99).eps(1e-6),
        Adam::new(0.05).betas(0.8, 0.99).eps(1e-6),
        custom,
        "adam custom betas",
    );
}

#[test]
fn rmsprop_variants_match_reference() {
    let rule = |momentum, centered, weight_decay| Reference::RmsProp {
        lr: 0.01,
        alpha: 0.99,
        eps: 1e-8,
        momentum,
        centered,
        weight_decay,
    };
    check(
        RmsProp::new(0.01),
        RmsProp::new(0.01),
        rule(0.0, false, 0.0),
        "rmsprop",
    );
    check(
        RmsProp::new(0.01).momentum(0.9),
        RmsProp::new(0.01).momentum(0.9),
        rule(0.9, false, 0.0),
        "momentum",
    );
    check(
        RmsProp::new(0.01).centered(true),
        RmsProp::new(0.01).centered(true),
        rule(0.0, true, 0.0),
        "centered",
    );
    check(
        RmsProp::new(0.01)
            .centered(true)
            .momentum(0.5)
            .weight_decay(0.1),
        RmsProp::new(0.01)
            .centered(true)
            .momentum(0.5)
            .weight_decay(0.1),
        rule(0.5, true, 0.1),
        "centered + momentum + weight decay",
    );
    let custom = Reference::RmsProp {
        lr: 0.02,
        alpha: 0.9,
        eps: 1e-6,
        momentum: 0.0,
        centered: false,
        weight_decay: 0.0,
    };
    check(
        RmsProp::new(0.02).alpha(0.9).eps(1e-6),
        RmsProp::new(0.02).alpha(0.9).eps(1e-6),
        custom,
        "rmsprop custom alpha",
    );
}

/// Three steps from 0 with a constant gradient of 1 on every element, for trajectories that
/// are easy to work out on paper.
fn constant_gradient<O: Optimizer<f64>>(mut opt: O) -> Vec<f64> {
    let mut model = Tiny::<f64>::zeros();
    let grads = Tiny::<f64>::grads_from(&[1.0; 8]);
    (0..3)
        .map(|_| {
            opt.step(&mut model, &grads);
            let all = model.flat_params();
            assert!(
                all.iter().all(|&v| v == all[0]),
                "all elements move alike: {all:?}"
            );
            all[0]
        })
        .collect()
}

#[track_caller]
fn assert_steps(got: Vec<f64>, want: [f64; 3]) {
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g - w).abs() <= 1e-15 * (1.0 + w.abs()),
            "got {got:?}, want {want:?}"
        );
    }
}

#[test]
fn hand_computed_trajectories() {
    // Plain: p = −0.1 t.
    assert_steps(constant_gradient(Sgd::new(0.1)), [-0.1, -0.2, -0.3]);
    // Momentum: buf = 1, 1.9, 2.71 (the first step takes the gradient itself).
    assert_steps(
        constant_gradient(Sgd::new(0.1).momentum(0.9)),
        [-0.1, -0.29, -0.561],
    );
    // Dampening does not touch the first buffer: buf = 1, 0.9 + 0.5 = 1.4, 1.26 + 0.5 = 1.76.
    assert_steps(
        constant_gradient(Sgd::new(0.1).momentum(0.9).dampening(0.5)),
        [-0.1, -0.24, -0.416],
    );
    // Nesterov: step = 1 + 0.9 buf with buf = 1, 1.9, 2.71: 1.9, 2.71, 3.439.
    assert_steps(
        constant_gradient(Sgd::new(0.1).momentum(0.9).nesterov(true)),
        [-0.19, -0.461, -0.8049],
    );
    // Adam with a constant gradient: both bias-corrected moments are exact (m̂ = 1, v̂ = 1), so
    // every step is lr / (1 + eps).
    let s = 0.01 / (1.0 + 1e-8);
    assert_steps(constant_gradient(Adam::new(0.01)), [-s, -2.0 * s, -3.0 * s]);
    // RMSprop: v_t = 1 − 0.99ᵗ, step = lr / (√v_t + eps).
    let r = |t: i32| 0.01 / ((1.0 - 0.99f64.powi(t)).sqrt() + 1e-8);
    assert_steps(
        constant_gradient(RmsProp::new(0.01)),
        [-r(1), -r(1) - r(2), -r(1) - r(2) - r(3)],
    );
}

#[test]
fn adamw_decays_before_the_update() {
    // With a zero gradient Adam's update is 0 (m = 0), so only the decay acts: p·(1 − lr·wd)ᵗ.
    let mut model = Tiny::<f64>::sample();
    let start = model.flat_params();
    let mut opt = AdamW::new(0.1).weight_decay(0.5);
    let zero = Tiny::<f64>::grads_from(&[0.0; 8]);
    for _ in 0..3 {
        opt.step(&mut model, &zero);
    }
    assert_eq!(opt.steps(), 3);
    for (got, p0) in model.flat_params().iter().zip(start) {
        assert!(
            (got - p0 * 0.95f64.powi(3)).abs() < 1e-15,
            "{got} vs {}",
            p0 * 0.95f64.powi(3)
        );
    }
}

#[test]
fn decay_filter_exempts_parameters_by_name_and_shape() {
    // Zero gradients: only the decay moves anything, and only the filtered-in parameters.
    let zero = Tiny::<f64>::grads_from(&[0.0; 8]);
    let start = Tiny::<f64>::sample().flat_params();
    let decayed = |p0: f64| p0 * 0.95f64.powi(2);

    let mut model = Tiny::<f64>::sample();
    let mut opt = AdamW::new(0.1)
        .weight_decay(0.5)
        .decay_filter(|_, shape| shape.len() >= 2);
    for _ in 0..2 {
        opt.step(&mut model, &zero);
    }
    let got = model.flat_params();
    for (i, (&got, &p0)) in got.iter().zip(&start).enumerate() {
        let want = if i < 6 { decayed(p0) } else { p0 };
        assert!((got - want).abs() < 1e-15, "element {i}: {got} vs {want}");
    }

    let mut model = Tiny::<f64>::sample();
    let mut opt = Adam::new(0.1)
        .weight_decay(0.5)
        .decay_filter(|name, _| name.ends_with(".weight"));
    opt.step(&mut model, &zero);
    let got = model.flat_params();
    // L2 decay through Adam moves every weight by about lr (the gradient is wd · p alone).
    assert!(got[..6]
        .iter()
        .zip(&start)
        .all(|(g, p)| (g - p).abs() > 0.05));
    assert_eq!(got[6..], start[6..]);
}

#[test]
fn learning_rate_can_change_between_steps() {
    let mut opt = Sgd::new(0.1);
    assert_eq!(Optimizer::<f64>::learning_rate(&opt), 0.1);
    let mut model = Tiny::<f64>::zeros();
    let grads = Tiny::<f64>::grads_from(&[1.0; 8]);
    opt.step(&mut model, &grads);
    opt.set_learning_rate(0.5);
    assert_eq!(Optimizer::<f64>::learning_rate(&opt), 0.5);
    opt.step(&mut model, &grads);
    assert!(model.flat_params().iter().all(|&p| (p + 0.6).abs() < 1e-16));
}

#[test]
fn reset_restarts_the_state() {
    let mut opt = Sgd::new(0.1).momentum(0.9);
    let mut model = Tiny::<f64>::zeros();
    let grads = Tiny::<f64>::grads_from(&[1.0; 8]);
    opt.step(&mut model, &grads);
    opt.reset();
    // After a reset the buffer is taken from the gradient again: another −0.1, not −0.19.
    opt.step(&mut model, &grads);
    assert!(model.flat_params().iter().all(|&p| (p + 0.2).abs() < 1e-16));
    let mut adam = Adam::new(0.01);
    adam.step(&mut model, &grads);
    adam.reset();
    assert_eq!(adam.steps(), 0);
}
