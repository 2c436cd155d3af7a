//! PyTorch parity: every fixture case of `tests/fixtures/` (see its README), one module per
//! family of ops, all in one test binary so that the runtime is compiled for them once.
//!
//! Each module's `parity_case!` declares a case's test from the parts below, which every
//! family shares; what differs (inputs, targets, buffers, eval-mode values) stays there.
//!
//! Run with `--nocapture` to see the largest errors per category.

/// Opens the fixture of `$case` for the float type `F` in scope as `$fixture`, starts
/// `$report` (which fails unless the test compares every reference result), and binds `$fresh`: a closure making a `$Model` with the fixture's parameters.
macro_rules! open_case {
    ($case:ident, $Model:ident => $fixture:ident, $report:ident, $fresh:ident) => {
        let $fixture = Fixture::open::<F>(stringify!($case));
        let mut $report = $fixture.report();
        let $fresh = || {
            let mut model = $Model::<F>::zeros();
            $fixture.load_params(&mut model);
            model
        };
    };
}

/// One training-mode step of `$model` on `$args` (inputs, then target): checks the loss, each
/// workspace value `$out` against the fixture's forward step `$step`, and every parameter
/// gradient. Binds the step's workspace as `$ws`.
macro_rules! check_training_step {
    (
        $fixture:ident, $report:ident, $model:ident: $Model:ident, ($($arg:expr),+), $ws:ident,
        { $($out:ident => $step:ident),+ }
    ) => {
        let mut $ws = $model.workspace();
        let mut grads = $model.zero_grads();
        let loss = $model
            .loss_and_grad($($arg,)+ &mut $ws, &mut grads)
            .expect("loss_and_grad");
        $fixture.check_loss(&mut $report, loss);
        $(
            let value = $ws.$out().expect(concat!("ws.", stringify!($out), "()"));
            $fixture.check_output(&mut $report, "output (train)", stringify!($step), value.into_dyn());
        )+
        $fixture.check_grads::<F, $Model<F>>(&mut $report, &grads);
    };
}

/// Replays the fixture's optimizer trajectories from `$fresh` models, each step's gradients
/// from `loss_and_grad` on `$args` (inputs, then target) with the workspace `$ws`.
macro_rules! check_trajectories {
    ($fixture:ident, $report:ident, $fresh:ident, ($($arg:expr),+), $ws:ident) => {
        $fixture.check_trajectories(&mut $report, $fresh, |model, grads| {
            model
                .loss_and_grad($($arg,)+ &mut $ws, grads)
                .expect("loss_and_grad");
        });
    };
}

/// The case's two tests: `run::<f64>()` and `run::<f32>()`.
macro_rules! in_f64_and_f32 {
    () => {
        #[test]
        fn f64() {
            run::<f64>();
        }

        #[test]
        fn f32() {
            run::<f32>();
        }
    };
}

mod common;
mod conv;
mod dense;
mod loss;
mod optimizers;
mod schedules;
mod seq;
mod vision;
