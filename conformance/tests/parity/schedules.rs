//! Learning-rate schedules against the rates PyTorch's schedulers give step by step
//! (`tests/fixtures/lr_schedules/expected.json`, written by `tests/fixtures/gen_schedules.py`),
//! and a short Adam run under `OneCycleLr`, whose `beta1` changes at every step.

use super::common::{expected_json, num, numbers};
use kiln::ndarray::Array2;
use kiln::optim::{Anneal, CosineWarmRestarts, ExponentialLr, LrSchedule, MultiStepLr, OneCycleLr};
use kiln::{Adam, Model, Optimizer};
use serde_json::Value;

fn expected() -> Value {
    expected_json("lr_schedules")
}

/// The schedule a case's config describes, with the optimizer's base rate.
fn schedule(name: &str, config: &Value) -> (Box<dyn LrSchedule>, f64) {
    let base = config["base_lr"].as_f64().unwrap_or(f64::NAN);
    let s: Box<dyn LrSchedule> = match name {
        "multistep" => {
            let milestones = numbers(&config["milestones"])
                .into_iter()
                .map(|m| m as usize);
            Box::new(MultiStepLr::new(milestones, num(config, "gamma")).per_step())
        }
        "exponential" => Box::new(ExponentialLr::new(num(config, "gamma")).per_step()),
        "onecycle_adam" => Box::new(OneCycleLr::new(
            num(config, "max_lr"),
            num(config, "total_steps") as usize,
        )),
        "onecycle_three_phase_linear_sgd" => Box::new(
            OneCycleLr::epochs(
                num(config, "max_lr"),
                num(config, "epochs") as usize,
                num(config, "steps_per_epoch") as usize,
            )
            .pct_start(num(config, "pct_start"))
            .anneal(Anneal::Linear)
            .three_phase(true)
            .div_factor(num(config, "div_factor"))
            .final_div_factor(num(config, "final_div_factor"))
            .momentum_range(num(config, "base_momentum"), num(config, "max_momentum")),
        ),
        "onecycle_fixed_momentum" => Box::new(
            OneCycleLr::new(num(config, "max_lr"), num(config, "total_steps") as usize)
                .pct_start(num(config, "pct_start"))
                .cycle_momentum(false),
        ),
        "warm_restarts" | "warm_restarts_equal_cycles" => Box::new(
            CosineWarmRestarts::new(
                num(config, "t_0") as usize,
                num(config, "t_mult") as usize,
                num(config, "eta_min"),
            )
            .per_step(),
        ),
        other => panic!("no schedule for case {other}"),
    };
    (s, base)
}

fn assert_close(got: f64, want: f64, rtol: f64, what: &str) {
    assert!(
        (got - want).abs() <= rtol * want.abs(),
        "{what}: {got} against PyTorch's {want}"
    );
}

#[test]
fn schedules_give_pytorchs_rates_and_momenta() {
    let expected = expected();
    let cases = expected["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 7);
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let (s, base) = schedule(name, &case["config"]);
        let (lrs, momenta) = (numbers(&case["lr"]), &case["momentum"]);
        // PyTorch steps ExponentialLR by multiplying the previous rate, which rounds at
        // every step; the closed form kiln evaluates is within a few units in the last place.
        // The others are the same bits.
        let rtol = if name == "exponential" { 1e-14 } else { 0.0 };
        for (step, &want) in lrs.iter().enumerate() {
            let what = format!("{name}, step {step}");
            assert_close(s.lr(0, step, base), want, rtol, &format!("{what}, rate"));
            match s.momentum(0, step) {
                Some(m) => {
                    let want = momenta[step].as_f64().expect("momentum");
                    assert_close(m, want, 0.0, &format!("{what}, momentum"));
                }
                // Not cycled: PyTorch's stays at the optimizer's 0.9 or 0.9 of Adam's betas.
                None => assert_eq!(momenta[step].as_f64(), Some(0.9), "{what}"),
            }
        }
    }
}

kiln::model! {
    struct Affine {
        input x: [B, 3];
        target y: [B, 2];
        let pred = linear(x, 2);
        output pred;
        loss mse(pred, y);
    }
}

#[test]
fn adam_under_one_cycle_follows_pytorch() {
    let t = &expected()["training"];
    let mut model = Affine::<f64>::zeros();
    let (w, b) = (numbers(&t["weight"]), numbers(&t["bias"]));
    model.visit_params_mut(&mut |name, mut p| {
        let src = if name.ends_with("weight") { &w } else { &b };
        p.as_slice_mut().expect("contiguous").copy_from_slice(src);
    });
    let x = Array2::from_shape_vec((5, 3), numbers(&t["x"])).expect("x");
    let y = Array2::from_shape_vec((5, 2), numbers(&t["y"])).expect("y");
    let schedule = OneCycleLr::new(num(t, "max_lr"), num(t, "total_steps") as usize)
        .pct_start(num(t, "pct_start"));
    let mut opt = Adam::new(1e-3);
    let (mut ws, mut grads) = (model.workspace(), model.zero_grads());
    for step in 0..6 {
        opt.set_learning_rate(schedule.lr(0, step, 1e-3));
        opt.set_momentum_term(schedule.momentum(0, step).expect("cycled"));
        model
            .loss_and_grad(x.view(), y.view(), &mut ws, &mut grads)
            .expect("step");
        opt.step(&mut model, &grads);
    }
    assert_eq!(opt.momentum_term(), schedule.momentum(0, 5));
    let (w_after, b_after) = (numbers(&t["weight_after"]), numbers(&t["bias_after"]));
    model.visit_params(&mut |name, p| {
        let want = if name.ends_with("weight") {
            &w_after
        } else {
            &b_after
        };
        for (g, w) in p.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{name}: {g} against PyTorch's {w}");
        }
    });
}
