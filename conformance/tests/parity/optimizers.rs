//! Optimizer options against PyTorch's trajectories (`tests/fixtures/optimizers/expected.json`,
//! written by `tests/fixtures/gen_optimizers.py`): Adam and AdamW with `amsgrad`, NAdam and
//! RAdam with either weight decay, Adagrad with and without its options, eight steps of a
//! small linear model in f64, and interrupted runs resumed from the exported state.

use super::common::{expected_json, num, numbers};
use kiln::ndarray::Array2;
use kiln::optim::Ema;
use kiln::train::StatefulOptimizer;
use kiln::{Adagrad, Adam, AdamW, Model, NAdam, Optimizer, RAdam};
use serde_json::Value;

fn expected() -> Value {
    expected_json("optimizers")
}

/// The model's gradients.
type Grads = <Affine<f64> as Model<f64>>::Grads;
/// One optimizer step on the model, whichever optimizer takes it.
type Step = dyn FnMut(&mut Affine<f64>, &Grads);

kiln::model! {
    struct Affine {
        input x: [B, 3];
        target y: [B, 2];
        let pred = linear(x, 2);
        output pred;
        loss mse(pred, y);
    }
}

/// The optimizer a case's config describes.
fn optimizer(name: &str, c: &Value) -> Box<Step> {
    fn boxed<O: Optimizer<f64> + 'static>(mut opt: O) -> Box<Step> {
        Box::new(move |model, grads| opt.step(model, grads))
    }
    match name {
        "adam_amsgrad" => boxed(
            Adam::new(num(c, "lr"))
                .weight_decay(num(c, "weight_decay"))
                .amsgrad(true),
        ),
        "adamw_amsgrad" => boxed(
            AdamW::new(num(c, "lr"))
                .betas(num(c, "beta1"), num(c, "beta2"))
                .weight_decay(num(c, "weight_decay"))
                .amsgrad(true),
        ),
        "nadam" | "nadam_decoupled" => boxed(
            NAdam::new(num(c, "lr"))
                .betas(
                    c["beta1"].as_f64().unwrap_or(0.9),
                    c["beta2"].as_f64().unwrap_or(0.999),
                )
                .momentum_decay(num(c, "momentum_decay"))
                .weight_decay(num(c, "weight_decay"))
                .decoupled_weight_decay(c["decoupled_weight_decay"] == true),
        ),
        "radam" | "radam_decoupled" => boxed(
            RAdam::new(num(c, "lr"))
                .betas(
                    c["beta1"].as_f64().unwrap_or(0.9),
                    c["beta2"].as_f64().unwrap_or(0.999),
                )
                .weight_decay(num(c, "weight_decay"))
                .decoupled_weight_decay(c["decoupled_weight_decay"] == true),
        ),
        "adagrad" | "adagrad_options" => boxed(adagrad(c)),
        // PyTorch's optimizer was given the other parameter only.
        "adam_frozen_weight" => boxed(
            Adam::new(num(c, "lr"))
                .weight_decay(num(c, "weight_decay"))
                .freeze(|name, _| name == "pred.weight"),
        ),
        "sgd_frozen_bias" => boxed(
            kiln::Sgd::new(num(c, "lr"))
                .momentum(num(c, "momentum"))
                .weight_decay(num(c, "weight_decay"))
                .freeze(|name, _| name == "pred.bias"),
        ),
        // PyTorch had the parameter in a group of its own `lr`.
        "adam_groups" => boxed(
            Adam::new(num(c, "lr"))
                .weight_decay(num(c, "weight_decay"))
                .lr_scale(weight, num(c, "scale")),
        ),
        "adamw_groups" => boxed(
            AdamW::new(num(c, "lr"))
                .weight_decay(num(c, "weight_decay"))
                .lr_scale(bias, num(c, "scale")),
        ),
        "sgd_groups" => boxed(
            kiln::Sgd::new(num(c, "lr"))
                .momentum(num(c, "momentum"))
                .weight_decay(num(c, "weight_decay"))
                .lr_scale(weight, num(c, "scale")),
        ),
        "nadam_groups" => boxed(
            NAdam::new(num(c, "lr"))
                .weight_decay(num(c, "weight_decay"))
                .decoupled_weight_decay(true)
                .lr_scale(bias, num(c, "scale")),
        ),
        "radam_groups" => boxed(RAdam::new(num(c, "lr")).lr_scale(weight, num(c, "scale"))),
        "adagrad_groups" => boxed(
            Adagrad::new(num(c, "lr"))
                .lr_decay(num(c, "lr_decay"))
                .lr_scale(weight, num(c, "scale")),
        ),
        "rmsprop_groups" => boxed(
            kiln::RmsProp::new(num(c, "lr"))
                .momentum(num(c, "momentum"))
                .centered(true)
                .lr_scale(bias, num(c, "scale")),
        ),
        other => panic!("unknown case {other}"),
    }
}

/// The fixture model's weight, as a parameter filter.
fn weight(name: &str, _: &[usize]) -> bool {
    name == "pred.weight"
}

/// The fixture model's bias, as a parameter filter.
fn bias(name: &str, _: &[usize]) -> bool {
    name == "pred.bias"
}

fn adagrad(c: &Value) -> Adagrad<f64> {
    Adagrad::new(num(c, "lr"))
        .lr_decay(num(c, "lr_decay"))
        .weight_decay(num(c, "weight_decay"))
        .initial_accumulator_value(num(c, "initial_accumulator_value"))
        .eps(num(c, "eps"))
}

/// The fixture's model and data.
fn setup(e: &Value) -> (Affine<f64>, Array2<f64>, Array2<f64>) {
    let mut model = Affine::<f64>::zeros();
    let (w, b) = (numbers(&e["weight"]), numbers(&e["bias"]));
    model.visit_params_mut(&mut |name, mut p| {
        let src = if name.ends_with("weight") { &w } else { &b };
        p.as_slice_mut().expect("contiguous").copy_from_slice(src);
    });
    let x = Array2::from_shape_vec((5, 3), numbers(&e["x"])).expect("x");
    let y = Array2::from_shape_vec((5, 2), numbers(&e["y"])).expect("y");
    (model, x, y)
}

/// The model's parameters against step `step` of a case.
fn check(model: &Affine<f64>, case: &Value, step: usize, what: &str) {
    let (w, b) = (numbers(&case["weight"][step]), numbers(&case["bias"][step]));
    model.visit_params(&mut |name, p| {
        let want = if name.ends_with("weight") { &w } else { &b };
        for (g, w) in p.iter().zip(want) {
            assert!(
                (g - w).abs() <= 1e-13 * w.abs().max(1.0),
                "{what}, step {}: {name} {g} against PyTorch's {w}",
                step + 1
            );
        }
    });
}

#[test]
fn every_option_follows_pytorch_step_by_step() {
    let e = expected();
    let cases = e["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 17);
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let (mut model, x, y) = setup(&e);
        let mut step = optimizer(name, &case["config"]);
        let (mut ws, mut grads) = (model.workspace(), model.zero_grads());
        for s in 0..num(&e, "steps") as usize {
            model
                .loss_and_grad(x.view(), y.view(), &mut ws, &mut grads)
                .expect("step");
            step(&mut model, &grads);
            check(&model, case, s, name);
        }
    }
}

/// Stopped after three steps and resumed from the exported state (the `max_exp_avg_sq` and
/// `sum` buffers and the step count), the run ends where the uninterrupted one does.
#[test]
fn interrupted_runs_resume_from_the_state() {
    let e = expected();
    let case = |name: &str| {
        e["cases"]
            .as_array()
            .expect("cases")
            .iter()
            .find(|c| c["name"] == name)
            .expect("case")
            .clone()
    };
    let run = |model: &mut Affine<f64>,
               opt: &mut dyn FnMut(&mut Affine<f64>, &Grads),
               steps: usize,
               x: &Array2<f64>,
               y: &Array2<f64>| {
        let (mut ws, mut grads) = (model.workspace(), model.zero_grads());
        for _ in 0..steps {
            model
                .loss_and_grad(x.view(), y.view(), &mut ws, &mut grads)
                .expect("step");
            opt(model, &grads);
        }
    };
    // AdamW with amsgrad.
    let c = case("adamw_amsgrad");
    let config = &c["config"];
    let make = || {
        AdamW::<f64>::new(num(config, "lr"))
            .betas(num(config, "beta1"), num(config, "beta2"))
            .weight_decay(num(config, "weight_decay"))
            .amsgrad(true)
    };
    let (mut model, x, y) = setup(&e);
    let mut first = make();
    run(&mut model, &mut |m, g| first.step(m, g), 3, &x, &y);
    let state = StatefulOptimizer::export_state(&first).expect("a state");
    assert!(state.buffers.contains_key("max_exp_avg_sq"));
    let mut second = AdamW::<f64>::new(1.0);
    StatefulOptimizer::import_state(&mut second, &state).expect("import");
    run(&mut model, &mut |m, g| second.step(m, g), 5, &x, &y);
    check(&model, &c, 7, "adamw_amsgrad resumed");
    // NAdam, whose momentum product is part of its state.
    let c = case("nadam");
    let config = &c["config"];
    let make = || {
        NAdam::<f64>::new(num(config, "lr"))
            .momentum_decay(num(config, "momentum_decay"))
            .weight_decay(num(config, "weight_decay"))
    };
    let (mut model, x, y) = setup(&e);
    let mut first = make();
    run(&mut model, &mut |m, g| first.step(m, g), 3, &x, &y);
    let state = StatefulOptimizer::export_state(&first).expect("a state");
    let mut second = NAdam::<f64>::new(1.0);
    StatefulOptimizer::import_state(&mut second, &state).expect("import");
    run(&mut model, &mut |m, g| second.step(m, g), 5, &x, &y);
    check(&model, &c, 7, "nadam resumed");
    // Adagrad with its options.
    let c = case("adagrad_options");
    let (mut model, x, y) = setup(&e);
    let mut first = adagrad(&c["config"]);
    run(&mut model, &mut |m, g| first.step(m, g), 3, &x, &y);
    let state = StatefulOptimizer::export_state(&first).expect("a state");
    let mut second = Adagrad::<f64>::new(1.0);
    StatefulOptimizer::import_state(&mut second, &state).expect("import");
    assert_eq!(second.steps(), 3);
    run(&mut model, &mut |m, g| second.step(m, g), 5, &x, &y);
    check(&model, &c, 7, "adagrad_options resumed");
}

/// Every optimizer leaves a frozen parameter's bits alone, keeps no state for it, and updates
/// the others as it does when nothing is frozen (each parameter's update is its own).
#[test]
fn frozen_parameters_are_left_alone_by_every_optimizer() {
    fn bits(model: &Affine<f64>, name: &str) -> Vec<u64> {
        let mut out = Vec::new();
        model.visit_params(&mut |n, p| {
            if n == name {
                out.extend(p.iter().map(|v| v.to_bits()));
            }
        });
        out
    }
    fn run<O: Optimizer<f64> + StatefulOptimizer<f64>>(
        what: &str,
        make: impl Fn() -> O,
        freeze: impl Fn(&O) -> O,
    ) {
        let e = expected();
        let (start, x, y) = setup(&e);
        let train = |opt: &mut O, steps: usize| {
            let mut model = start.clone();
            let (mut ws, mut grads) = (model.workspace(), model.zero_grads());
            for _ in 0..steps {
                model
                    .loss_and_grad(x.view(), y.view(), &mut ws, &mut grads)
                    .expect("step");
                opt.step(&mut model, &grads);
            }
            model
        };
        // One step: the bias moves as it does with nothing frozen (later steps differ, the
        // gradients depending on the weight).
        let all = train(&mut make(), 1);
        let some = train(&mut freeze(&make()), 1);
        assert_eq!(bits(&some, "pred.bias"), bits(&all, "pred.bias"), "{what}");
        assert_ne!(
            bits(&all, "pred.weight"),
            bits(&start, "pred.weight"),
            "{what}"
        );
        // Four steps: the weight has not moved.
        let mut partial = freeze(&make());
        let some = train(&mut partial, 4);
        assert_eq!(
            bits(&some, "pred.weight"),
            bits(&start, "pred.weight"),
            "{what}"
        );
        assert_ne!(
            bits(&some, "pred.bias"),
            bits(&start, "pred.bias"),
            "{what}"
        );
        // No state for the frozen weight: its buffers (if the optimizer has any) are empty.
        if let Some(state) = partial.export_state() {
            for (buffer, list) in &state.buffers {
                assert!(
                    list[0].is_empty(),
                    "{what}: {buffer} kept for a frozen weight"
                );
            }
        }
        assert!(
            partial.frozen().is_some() && make().frozen().is_none(),
            "{what}"
        );
    }
    run(
        "Sgd",
        || kiln::Sgd::new(0.1).momentum(0.9).weight_decay(0.01),
        |o| o.clone().freeze(weight),
    );
    run(
        "Adam",
        || Adam::new(0.05).weight_decay(0.01).amsgrad(true),
        |o| o.clone().freeze(weight),
    );
    run(
        "AdamW",
        || AdamW::new(0.05).weight_decay(0.1),
        |o| o.clone().freeze(weight),
    );
    run(
        "NAdam",
        || NAdam::new(0.05).weight_decay(0.01),
        |o| o.clone().freeze(weight),
    );
    run(
        "RAdam",
        || {
            RAdam::new(0.05)
                .decoupled_weight_decay(true)
                .weight_decay(0.1)
        },
        |o| o.clone().freeze(weight),
    );
    run(
        "RmsProp",
        || kiln::RmsProp::new(0.01).momentum(0.5).centered(true),
        |o| o.clone().freeze(weight),
    );
    run(
        "Adagrad",
        || Adagrad::new(0.1).weight_decay(0.01),
        |o| o.clone().freeze(weight),
    );
}

/// NAdam's momentum product, step by step, against PyTorch's `state["mu_product"]` with float32
/// and with float64 as the default dtype: a float32 model's product rounds at every step.
#[test]
fn nadam_momentum_product_rounds_as_pytorchs() {
    fn products<F: kiln::Float>(decay: f64) -> Vec<f64> {
        let mut rng = <kiln::rand::rngs::StdRng as kiln::rand::SeedableRng>::seed_from_u64(3);
        let mut model = Affine::<F>::new(&mut rng);
        let grads = model.zero_grads();
        let mut opt = NAdam::<F>::new(0.05).momentum_decay(decay);
        (0..8)
            .map(|_| {
                opt.step(&mut model, &grads);
                let state = StatefulOptimizer::export_state(&opt).expect("a state");
                state.scalar("mu_product").expect("mu_product")
            })
            .collect()
    }
    let e = expected();
    let c = &e["nadam_mu_product"];
    let decay = num(&c["config"], "momentum_decay");
    assert_eq!(products::<f32>(decay), numbers(&c["float32"]), "float32");
    assert_eq!(products::<f64>(decay), numbers(&c["float64"]), "float64");
}

/// An exponential moving average of the weights over SGD with momentum, updated after every
/// step, against PyTorch's `AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.8))`.
#[test]
fn ema_follows_pytorchs_averaged_model() {
    let e = expected();
    let c = &e["ema"];
    let config = &c["config"];
    let (mut model, x, y) = setup(&e);
    let mut opt = kiln::Sgd::new(num(config, "lr")).momentum(num(config, "momentum"));
    let mut ema = Ema::new(&model, num(config, "decay"));
    let (mut ws, mut grads) = (model.workspace(), model.zero_grads());
    for s in 0..num(&e, "steps") as usize {
        model
            .loss_and_grad(x.view(), y.view(), &mut ws, &mut grads)
            .expect("step");
        opt.step(&mut model, &grads);
        ema.update(&model).expect("same model");
        check(ema.model(), c, s, "ema");
    }
    assert_eq!(ema.updates(), 8);
}

kiln::model! {
    struct Normed {
        input x: [B, 3];
        target y: [B, 2];
        let fc = linear(x, 4);
        let h = batch_norm(fc);
        let pred = linear(h, 2);
        output pred;
        loss mse(pred, y);
    }
}

/// Buffers (batch-norm running statistics) are copied from the model at every update, as
/// PyTorch's default `use_buffers=False`, or averaged with the parameters with
/// `average_buffers(true)`; a model whose arrays differ in size is refused, the average
/// unchanged.
#[test]
fn ema_copies_or_averages_the_buffers_and_refuses_another_shape() {
    use kiln::rand::SeedableRng;
    let mut rng = kiln::rand::rngs::StdRng::seed_from_u64(5);
    let mut model = Normed::<f64>::new(&mut rng);
    let mut copied = Ema::new(&model, 0.5);
    let mut averaged = Ema::new(&model, 0.5).average_buffers(true);
    let buffers = |m: &Normed<f64>| {
        let mut v = Vec::new();
        m.visit_buffers(&mut |_, b| v.extend(b.iter().copied()));
        v
    };
    let x = Array2::from_shape_fn((6, 3), |(i, j)| (i * 3 + j) as f64 * 0.1 - 0.7);
    let y = Array2::from_shape_fn((6, 2), |(i, j)| (i + j) as f64 * 0.2);
    let (mut ws, mut grads) = (model.workspace(), model.zero_grads());
    let mut opt = kiln::Sgd::new(0.1);
    for _ in 0..2 {
        let before = buffers(&model);
        model
            .loss_and_grad(x.view(), y.view(), &mut ws, &mut grads)
            .expect("step");
        opt.step(&mut model, &grads);
        let (was, now) = (buffers(averaged.model()), buffers(&model));
        assert_ne!(before, now, "training moves the running statistics");
        copied.update(&model).expect("same model");
        averaged.update(&model).expect("same model");
        assert_eq!(buffers(copied.model()), now);
        let want: Vec<f64> = if averaged.updates() == 1 {
            now.clone()
        } else {
            was.iter()
                .zip(&now)
                .map(|(a, b)| a + 0.5 * (b - a))
                .collect()
        };
        assert_eq!(buffers(averaged.model()), want);
    }
    let mut other = model.clone();
    other.fc.weight = kiln::ndarray::Array2::zeros((5, 3));
    let before = buffers(copied.model());
    let err = copied.update(&other).expect_err("another shape");
    assert!(err.to_string().contains("fc.weight"), "{err}");
    assert_eq!(buffers(copied.model()), before);
}
