//! `kiln::train::Trainer::fit` end to end: learning the bundled digits, the history's CSV and
//! plot, schedules and clipping inside the trainer (against a hand-written loop built from the
//! public pieces), and early stopping with weight restoration.

use crate::common::params;
use kiln::data::{self, Batch, DataLoader, Dataset, TensorDataset};
use kiln::ndarray;
use kiln::optim::{clip_grad_norm, CosineAnnealing, LinearWarmup, LrSchedule, OneCycleLr, StepLr};
use kiln::rand::rngs::StdRng;
use kiln::rand::SeedableRng;
use kiln::train::{batch_targets, EarlyStopping, History, Mode, Trainer, Verdict, Weights};
use kiln::{Adam, Model, Optimizer, Sgd, Supervised};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Instant;

kiln::model! {
    /// A small perceptron for the 8×8 digits, flattened to 64 features.
    pub struct DigitsMlp {
        input x: [B, 64];
        target y: [B] classes 10;
        let h = relu(linear(x, 64));
        let logits = linear(h, 10);
        output logits;
        loss cross_entropy(logits, y);
    }
}

fn digits_split() -> (TensorDataset<f32>, TensorDataset<f32>) {
    crate::common::digits_split(7)
}

fn model(seed: u64) -> DigitsMlp<f32> {
    DigitsMlp::new(&mut StdRng::seed_from_u64(seed))
}

/// A fresh directory under cargo's per-test-crate scratch space.
fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("train_fit-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

#[test]
fn mlp_learns_digits_with_plot_and_csv() {
    let (train, val) = digits_split();
    let dir = scratch("digits");
    let plot = dir.join("curves.png");
    let csv = dir.join("history.csv");
    let mut model = model(0);
    let mut opt = Adam::new(3e-3);
    let started = Instant::now();
    // Progress on: under the test harness stdout is captured (not a terminal), so this runs
    // the one-line-per-epoch path and the model summary.
    let history = Trainer::new(12, 32)
        .shuffle_seed(1)
        .validation(&val)
        .eval_batch_size(256)
        .schedule(CosineAnnealing::new(12, 1e-4))
        .plot(&plot)
        .fit(&mut model, &mut opt, &train)
        .expect("training runs");
    let seconds = started.elapsed().as_secs_f64();
    println!("{history}");
    println!("12 epochs of digits in {seconds:.2}s");

    assert_eq!(history.len(), 12);
    let last = history.last().expect("epochs ran");
    let val_acc = last.val_accuracy.expect("labels give an accuracy");
    assert!(val_acc >= 0.9, "validation accuracy {val_acc}\n{history}");
    assert!(last.train_accuracy.expect("labels") >= 0.9, "{history}");
    assert!(
        last.train_loss < history.epochs[0].train_loss / 3.0,
        "the training loss falls: {history}"
    );
    assert!(history
        .epochs
        .iter()
        .all(|r| r.samples_per_second > 0.0 && r.seconds > 0.0));
    // The cosine schedule's rates, from the optimizer's base rate.
    for r in &history.epochs {
        assert_eq!(r.lr, CosineAnnealing::new(12, 1e-4).lr(r.epoch, 0, 3e-3));
    }
    // The metrics are recomputable from the public pieces.
    let eval = kiln::train::evaluate(&model, &val, 100).expect("evaluation runs");
    assert_eq!(eval.samples, val.len());
    assert!((eval.accuracy.expect("labels") - val_acc).abs() < 1e-12);
    assert!((eval.loss - last.val_loss.expect("validation")).abs() < 1e-5);

    // CSV: a header and one row per epoch, with the figures of the history.
    history.write_csv(&csv).expect("csv written");
    let text = std::fs::read_to_string(&csv).expect("csv readable");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "epoch,train_loss,train_accuracy,val_loss,val_accuracy,lr,seconds,samples_per_second"
    );
    assert_eq!(lines.len(), 13);
    let row: Vec<&str> = lines[12].split(',').collect();
    assert_eq!(row[0], "11");
    assert_eq!(row[4].parse::<f64>().expect("a number"), val_acc);

    // The plot: a PNG that an independent decoder reads, two panels wide, with both curves.
    let file = std::fs::File::open(&plot).expect("the plot was written");
    let mut reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .expect("a valid PNG header");
    let mut pixels = vec![0; reader.output_buffer_size().expect("a sane size")];
    let info = reader.next_frame(&mut pixels).expect("valid PNG data");
    assert_eq!((info.width, info.height), (1120, 420));
    assert_eq!(info.color_type, png::ColorType::Rgb);
    let has = |rgb: [u8; 3]| pixels.chunks_exact(3).filter(|p| *p == rgb).count();
    assert!(
        has([31, 119, 180]) > 500,
        "training curves are drawn in blue"
    );
    assert!(
        has([255, 127, 14]) > 500,
        "validation curves are drawn in orange"
    );
    let dark = pixels
        .chunks_exact(3)
        .filter(|p| p.iter().all(|&c| c < 80))
        .count();
    assert!(
        dark > 2000,
        "axis labels and titles are drawn ({dark} dark pixels)"
    );
}

kiln::model! {
    /// A linear regression on four features, for the schedule and clipping comparison.
    pub struct Regressor {
        input x: [B, 4];
        target t: [B, 2];
        let h = tanh(linear(x, 8));
        let pred = linear(h, 2);
        output pred;
        loss mse(pred, t);
    }
}

fn regression_data(n: usize, seed: u64) -> TensorDataset<f64> {
    use kiln::rand::RngExt;
    let mut rng = StdRng::seed_from_u64(seed);
    let x = kiln::ndarray::Array2::from_shape_simple_fn((n, 4), || rng.random_range(-1.0..1.0));
    let t = kiln::ndarray::Array2::from_shape_fn((n, 2), |(i, j)| {
        let row = x.row(i);
        if j == 0 {
            3.0 * row[0] - row[1] + 0.5
        } else {
            row[2] * row[3] * 4.0
        }
    });
    TensorDataset::with_values(x, t).expect("same sample count")
}

/// The trainer's loop, written out by hand from the public pieces: same batches, same
/// schedule, same clipping, same order of operations.
fn hand_loop(
    model: &mut Regressor<f64>,
    opt: &mut Sgd<f64>,
    data: &TensorDataset<f64>,
    schedule: &dyn LrSchedule,
    epochs: usize,
) -> Vec<f64> {
    let base_lr = opt.learning_rate();
    let loader = DataLoader::new(data, 16).shuffle(5);
    let mut ws = <Regressor<f64> as Supervised<f64>>::Workspace::default();
    let mut grads = model.zero_grads();
    let mut batch = Batch::new();
    let (mut step, mut norms) = (0, Vec::new());
    for epoch in 0..epochs {
        let mut batches = loader.epoch_batches(epoch);
        while batches.next_into(&mut batch) {
            opt.set_learning_rate(schedule.lr(epoch, step, base_lr));
            if let Some(momentum) = schedule.momentum(epoch, step) {
                opt.set_momentum_term(momentum);
            }
            model
                .train_batch(batch.x.view(), batch_targets(&batch), &mut ws, &mut grads)
                .expect("a training step");
            norms.push(clip_grad_norm::<f64, Regressor<f64>>(&mut grads, 0.5));
            opt.step(model, &grads);
            step += 1;
        }
    }
    norms
}

#[test]
fn trainer_applies_schedule_and_clipping_exactly_as_a_hand_loop() {
    let data = regression_data(100, 3);
    let schedule = || LinearWarmup::steps(10, StepLr::new(2, 0.5)).start_factor(0.1);
    let mut by_hand = Regressor::<f64>::new(&mut StdRng::seed_from_u64(11));
    let mut by_trainer = by_hand.clone();
    let mut opt_hand = Sgd::new(0.2).momentum(0.9);
    let mut opt_trainer = opt_hand.clone();

    let norms = hand_loop(&mut by_hand, &mut opt_hand, &data, &schedule(), 5);
    let history = Trainer::new(5, 16)
        .shuffle_seed(5)
        .schedule(schedule())
        .clip_grad_norm(0.5)
        .progress(false)
        .fit(&mut by_trainer, &mut opt_trainer, &data)
        .expect("training runs");

    // Bit for bit the same parameters: the trainer is that loop.
    let (a, b) = (params(&by_hand), params(&by_trainer));
    assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
    // Clipping was active (some norms above 0.5), so the comparison covers it.
    assert!(norms.iter().any(|&n| n > 0.5), "{norms:?}");
    // 100 samples in batches of 16: 7 steps per epoch. The recorded rate of each epoch is
    // its first step's: warmup for epochs 0 and 1 (steps 0 and 7), then StepLr's.
    let expected: Vec<f64> = (0..5).map(|e| schedule().lr(e, 7 * e, 0.2)).collect();
    let recorded: Vec<f64> = history.epochs.iter().map(|r| r.lr).collect();
    assert_eq!(recorded, expected);
    assert!(
        (recorded[0] - 0.02).abs() < 1e-15,
        "warmup starts at 0.1 × base"
    );
    // The optimizer is left at the last step's rate (epoch 4, step 34).
    assert_eq!(opt_trainer.learning_rate(), schedule().lr(4, 34, 0.2));
    assert!(history.epochs[4].train_loss < history.epochs[0].train_loss);
    assert!(history
        .epochs
        .iter()
        .all(|r| r.train_accuracy.is_none() && r.val_loss.is_none()));
}

/// A frozen layer (`Sgd::freeze`) under the trainer: its weights do not move, and its
/// gradients stay out of clipping's norm, as PyTorch's `clip_grad_norm_` leaves out
/// parameters without `requires_grad`; the trainer is the hand loop that zeroes them first.
#[test]
fn trainer_keeps_frozen_gradients_out_of_clipping() {
    let data = regression_data(100, 4);
    // A capturing filter: the frozen layer's name prefix chosen at run time.
    let prefix = String::from("h.");
    let freeze = kiln::optim::ParamFilter::new(move |name, _| name.starts_with(&prefix));
    let start = Regressor::<f64>::new(&mut StdRng::seed_from_u64(21));
    let make = || {
        let freeze = freeze.clone();
        Sgd::new(0.2)
            .momentum(0.9)
            .freeze(move |name, shape| freeze.chooses(name, shape))
    };

    let mut by_hand = start.clone();
    let mut opt = make();
    let loader = DataLoader::new(&data, 16).shuffle(5);
    let mut ws = <Regressor<f64> as Supervised<f64>>::Workspace::default();
    let mut grads = by_hand.zero_grads();
    let mut batch = Batch::new();
    let mut norms = Vec::new();
    for epoch in 0..3 {
        let mut batches = loader.epoch_batches(epoch);
        while batches.next_into(&mut batch) {
            by_hand
                .train_batch(batch.x.view(), batch_targets(&batch), &mut ws, &mut grads)
                .expect("a training step");
            kiln::optim::zero_frozen_grads::<f64, Regressor<f64>>(&mut grads, &freeze);
            norms.push(clip_grad_norm::<f64, Regressor<f64>>(&mut grads, 0.3));
            opt.step(&mut by_hand, &grads);
        }
    }
    let mut by_trainer = start.clone();
    Trainer::new(3, 16)
        .shuffle_seed(5)
        .clip_grad_norm(0.3)
        .progress(false)
        .fit(&mut by_trainer, &mut make(), &data)
        .expect("training runs");

    let (a, b) = (params(&by_hand), params(&by_trainer));
    assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
    assert!(
        norms.iter().any(|&n| n > 0.3),
        "clipping was active: {norms:?}"
    );
    let layer = |model: &Regressor<f64>| {
        let mut values = Vec::new();
        model.visit_params(&mut |name, p| {
            if name.starts_with("h.") {
                values.extend(p.iter().copied());
            }
        });
        values
    };
    assert_eq!(layer(&by_trainer), layer(&start), "the frozen layer moved");
    assert_ne!(params(&by_trainer), params(&start));
}

/// `OneCycleLr` sets the momentum as well as the rate before every step, as PyTorch's
/// `OneCycleLR` does; an optimizer without a momentum term is refused unless the schedule
/// leaves the momentum alone.
#[test]
fn one_cycle_sets_rate_and_momentum_as_a_hand_loop() {
    let data = regression_data(100, 3);
    let schedule = || OneCycleLr::epochs(0.3, 5, 7);
    let mut by_hand = Regressor::<f64>::new(&mut StdRng::seed_from_u64(12));
    let mut by_trainer = by_hand.clone();
    let mut opt_hand = Sgd::new(0.2).momentum(0.5);
    let mut opt_trainer = opt_hand.clone();
    hand_loop(&mut by_hand, &mut opt_hand, &data, &schedule(), 5);
    Trainer::new(5, 16)
        .shuffle_seed(5)
        .schedule(schedule())
        .clip_grad_norm(0.5)
        .progress(false)
        .fit(&mut by_trainer, &mut opt_trainer, &data)
        .expect("training runs");
    let (a, b) = (params(&by_hand), params(&by_trainer));
    assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
    // The last of the 35 steps ran at the end of the cycle, momentum back at its maximum.
    assert_eq!(opt_trainer.learning_rate(), schedule().lr(4, 34, 0.2));
    assert_eq!(opt_trainer.momentum_term(), Some(0.95));
    assert!(opt_trainer.learning_rate() < 1e-5);

    /// An optimizer of the user's own, without a momentum term.
    struct Plain(Sgd<f64>);
    impl Optimizer<f64> for Plain {
        fn step<M: kiln::Model<f64>>(&mut self, model: &mut M, grads: &M::Grads) {
            self.0.step(model, grads);
        }
        fn learning_rate(&self) -> f64 {
            self.0.learning_rate()
        }
        fn set_learning_rate(&mut self, lr: f64) {
            self.0.set_learning_rate(lr);
        }
    }
    impl kiln::train::StatefulOptimizer<f64> for Plain {}
    let trainer = |s: OneCycleLr| Trainer::new(1, 16).schedule(s).progress(false);
    let err = trainer(schedule())
        .fit(&mut by_hand, &mut Plain(Sgd::new(0.1)), &data)
        .expect_err("no momentum to cycle");
    assert!(
        err.to_string().contains("`.cycle_momentum(false)`"),
        "{err}"
    );
    trainer(schedule().cycle_momentum(false))
        .fit(&mut by_hand, &mut Plain(Sgd::new(0.1)), &data)
        .expect("the rate alone");
}

/// A `OneCycleLr` laid out for fewer optimizer steps than the run takes is refused before
/// anything trains (PyTorch's `OneCycleLR` raises at the first step past its end); with
/// gradient accumulation the steps are the groups of batches.
#[test]
fn one_cycle_shorter_than_the_run_is_refused_up_front() {
    let data = regression_data(100, 3); // 7 batches of 16 per epoch
    let mut model = Regressor::<f64>::new(&mut StdRng::seed_from_u64(13));
    let before = params(&model);
    let trainer = |steps, accumulate| {
        Trainer::new(5, 16)
            .schedule(OneCycleLr::new(0.3, steps))
            .accumulate_grad_batches(accumulate)
            .progress(false)
    };
    let err = trainer(34, 1)
        .fit(&mut model, &mut Sgd::new(0.2).momentum(0.5), &data)
        .expect_err("35 steps in a 34-step cycle");
    assert!(
        err.to_string().contains(
            "laid out for 34 optimizer steps (OneCycleLr's `total_steps`), but this run takes \
             35 (5 epochs of 7)"
        ),
        "{err}"
    );
    assert_eq!(params(&model), before, "nothing trained");
    // Accumulating 2 batches a step: 4 steps an epoch (the last group is one batch), 20 in all.
    trainer(19, 2)
        .fit(&mut model, &mut Sgd::new(0.2).momentum(0.5), &data)
        .expect_err("20 steps in a 19-step cycle");
    trainer(20, 2)
        .fit(&mut model, &mut Sgd::new(0.2).momentum(0.5), &data)
        .expect("20 steps in a 20-step cycle");
}

/// Digits whose validation labels are shifted by one class: the better the model learns the
/// real labels, the worse its validation loss gets, so early stopping must trigger.
fn misleading_validation() -> (TensorDataset<f32>, TensorDataset<f32>) {
    let (train, val) = digits_split();
    let shifted = val.labels().expect("labels").mapv(|l| (l + 1) % 10);
    let val = TensorDataset::with_labels(val.features().clone(), shifted, 10).expect("labels");
    (train, val)
}

#[test]
fn early_stopping_stops_and_restores_the_best_weights() {
    let (train, val) = misleading_validation();
    let trainer = |epochs| {
        Trainer::new(epochs, 64)
            .shuffle_seed(3)
            .validation(&val)
            .progress(false)
    };
    let mut stopped = model(4);
    let history = trainer(30)
        .early_stopping(2, 0.0)
        .fit(&mut stopped, &mut Adam::new(1e-2), &train)
        .expect("training runs");

    // Replay the rule on the recorded losses: the trainer stopped where the rule says.
    let mut rule = EarlyStopping::new(2, 0.0);
    let stop_epoch = history
        .epochs
        .iter()
        .position(|r| rule.update(r.epoch, r.val_loss.expect("validation")) == Verdict::Stop)
        .expect("the rule stops on these losses");
    assert_eq!(history.len(), stop_epoch + 1, "{history}");
    assert_eq!(history.stopped_early, Some(stop_epoch));
    assert!(history.len() < 30, "stopped early: {history}");
    let best = history.best_epoch().expect("a best epoch");
    assert_eq!(
        Some((best, history.epochs[best].val_loss.expect("val"))),
        rule.best()
    );

    // The model holds the best epoch's weights: those of a run of best + 1 epochs.
    let mut reference = model(4);
    trainer(best + 1)
        .fit(&mut reference, &mut Adam::new(1e-2), &train)
        .expect("training runs");
    assert_eq!(params(&stopped), params(&reference));

    // Without restoring, the model keeps the last epoch's weights instead.
    let mut last = model(4);
    trainer(30)
        .early_stopping(2, 0.0)
        .restore_best_weights(false)
        .fit(&mut last, &mut Adam::new(1e-2), &train)
        .expect("training runs");
    let mut reference = model(4);
    trainer(stop_epoch + 1)
        .fit(&mut reference, &mut Adam::new(1e-2), &train)
        .expect("training runs");
    assert_eq!(params(&last), params(&reference));
    assert_ne!(params(&last), params(&stopped));

    // `Weights` restores what it captured.
    let snapshot = Weights::capture(&stopped);
    let mut other = model(9);
    snapshot.restore(&mut other).expect("same model");
    assert_eq!(params(&other), params(&stopped));
}

/// Four samples of 64 features with value targets: the wrong kind of target for `DigitsMlp`.
fn values_for_a_classifier() -> TensorDataset<f32> {
    let x = kiln::ndarray::Array2::<f32>::zeros((4, 64));
    let t = kiln::ndarray::Array2::<f32>::zeros((4, 2));
    TensorDataset::with_values(x, t).expect("same sample count")
}

#[test]
fn data_that_does_not_fit_the_model_is_refused_before_training() {
    let digits = data::digits::<f32>().expect("bundled");
    let mut m = model(0);
    let before = params(&m);
    let err = Trainer::new(1, 32)
        .progress(false)
        .fit(&mut m, &mut Sgd::new(0.1), &digits)
        .expect_err("[1, 8, 8] samples for a [B, 64] input");
    assert_eq!(
        err.to_string(),
        "training data: samples of shape [1, 8, 8] (rank 3), but the model's input takes \
         samples of rank 1 (rank 2 with the batch axis): reshape the samples to the model's \
         input shape, for example with TensorDataset::reshape_samples(&[64])"
    );
    assert_eq!(params(&m), before, "nothing was trained");

    let err = Trainer::new(1, 32)
        .progress(false)
        .fit(&mut m, &mut Sgd::new(0.1), &values_for_a_classifier())
        .expect_err("value targets for a classifier");
    assert_eq!(
        err.to_string(),
        "training data: float targets of shape [2], but the model's target is class labels \
         (`classes 10`): give the data labels (TensorDataset::with_labels)"
    );

    let (train, _) = digits_split();
    let invalid = values_for_a_classifier();
    let err = Trainer::new(1, 32)
        .progress(false)
        .validation(&invalid)
        .fit(&mut m, &mut Sgd::new(0.1), &train)
        .expect_err("the validation data is checked too");
    assert!(
        err.to_string()
            .starts_with("validation data: float targets"),
        "{err}"
    );
    assert_eq!(params(&m), before);

    // Validation samples of another size: found before the first epoch, not after it.
    let small = TensorDataset::with_labels(
        kiln::ndarray::Array2::<f32>::zeros((3, 63)),
        kiln::ndarray::Array1::zeros(3),
        10,
    )
    .expect("a data set");
    let err = Trainer::new(1, 32)
        .progress(false)
        .validation(&small)
        .fit(&mut m, &mut Sgd::new(0.1), &train)
        .expect_err("63 features for a 64-feature input");
    assert!(
        err.to_string().starts_with(
            "validation data: its samples do not fit the model: input `x`: expected shape"
        ),
        "{err}"
    );
    assert_eq!(params(&m), before);

    let empty = small.subset(&[]).expect("no indices");
    let err = Trainer::new(1, 32)
        .progress(false)
        .validation(&empty)
        .fit(&mut m, &mut Sgd::new(0.1), &train)
        .expect_err("no validation samples");
    assert_eq!(
        err.to_string(),
        "validation data: it has no samples: give validation data with samples, or none"
    );

    let err = Trainer::new(1, 0)
        .progress(false)
        .fit(&mut m, &mut Sgd::new(0.1), &train)
        .expect_err("batch size 0");
    assert!(err.to_string().contains("a batch size of 0"), "{err}");
    assert_eq!(params(&m), before);

    let mut r = Regressor::<f64>::new(&mut StdRng::seed_from_u64(0));
    let err = Trainer::new(1, 4)
        .progress(false)
        .fit(&mut r, &mut Sgd::new(0.1), &regression_data(0, 0))
        .expect_err("no samples");
    assert_eq!(
        err.to_string(),
        "training data: it has no samples: give it at least one sample"
    );
}

#[test]
fn history_plots_without_validation_or_accuracy() {
    let data = regression_data(64, 1);
    let mut m = Regressor::<f64>::new(&mut StdRng::seed_from_u64(2));
    let history: History = Trainer::new(3, 16)
        .progress(false)
        .fit(&mut m, &mut Sgd::new(0.05), &data)
        .expect("training runs");
    let path = scratch("loss-only").join("loss.png");
    history.plot(&path).expect("plot written");
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(&path).expect("exists"),
    ));
    let reader = decoder.read_info().expect("valid PNG");
    // One panel: no accuracy to show.
    assert_eq!((reader.info().width, reader.info().height), (560, 420));
}

/// `reduce_lr_on_plateau`: each epoch runs at the rate the rule gives after the losses
/// before it (here the validation losses), a resumed run continues at the same rates, and a
/// schedule given as well is refused.
#[test]
fn reduce_lr_on_plateau_follows_the_validation_loss_and_resumes() {
    use kiln::optim::ReduceLrOnPlateau;
    let (train, val) = digits_split();
    // An improvement must be 20%: after the first epochs almost none is, so the rate drops.
    let plateau = ReduceLrOnPlateau::new(0.5, 0).threshold(0.2);
    let trainer = |epochs: usize| {
        Trainer::new(epochs, 64)
            .progress(false)
            .validation(&val)
            .reduce_lr_on_plateau(plateau)
    };
    let mut straight = model(4);
    let history = trainer(6)
        .fit(&mut straight, &mut Sgd::new(0.05), &train)
        .expect("training runs");
    let losses: Vec<f64> = history
        .epochs
        .iter()
        .map(|r| r.val_loss.expect("validation"))
        .collect();
    let rates: Vec<f64> = history.epochs.iter().map(|r| r.lr).collect();
    for (epoch, &rate) in rates.iter().enumerate() {
        let want = plateau.lr_after(losses[..epoch].iter().copied(), 0.05);
        assert_eq!(rate, want, "epoch {epoch}: {rates:?} for losses {losses:?}");
    }
    assert!(rates[5] < 0.05, "no reduction in {rates:?} ({losses:?})");

    // Interrupted after 3 epochs, resumed to 6: the same rates and weights.
    let dir = scratch("plateau");
    let mut first = model(4);
    trainer(3)
        .checkpoints(&dir)
        .fit(&mut first, &mut Sgd::new(0.05), &train)
        .expect("first part");
    let mut resumed = model(9);
    let resumed_history = trainer(6)
        .checkpoints(&dir)
        .resume_from(&dir)
        .fit(&mut resumed, &mut Sgd::new(0.05), &train)
        .expect("resumed");
    let resumed_rates: Vec<f64> = resumed_history.epochs.iter().map(|r| r.lr).collect();
    assert_eq!(resumed_rates, rates);
    assert_eq!(params(&resumed), params(&straight));

    let err = trainer(1)
        .schedule(StepLr::new(1, 0.5))
        .fit(&mut model(0), &mut Sgd::new(0.05), &train)
        .expect_err("two rules for one rate");
    assert!(err.to_string().contains("give one of them"), "{err}");
}

/// `steps_per_epoch`: each epoch ends after that many batches, and `fit` and `fit_batches`
/// train the same float model to the same bits (one data path serves a `Dataset`, the other a
/// `BatchSource`; the trainer's loop is shared).
#[test]
fn steps_per_epoch_caps_epochs_alike_for_fit_and_fit_batches() {
    use kiln::data::{BatchSource, ServedArg, ServedKind};
    use kiln::BatchArray;

    let data = regression_data(64, 4);
    let mut hand = Regressor::<f64>::new(&mut StdRng::seed_from_u64(5));
    let mut opt = Sgd::new(0.05);
    let (mut ws, mut grads, mut batch) = (hand.workspace(), hand.zero_grads(), Batch::new());
    let loader = DataLoader::new(&data, 16);
    for epoch in 0..3 {
        let mut batches = loader.epoch_batches(epoch);
        for _ in 0..2 {
            assert!(batches.next_into(&mut batch));
            hand.train_batch(batch.x.view(), batch_targets(&batch), &mut ws, &mut grads)
                .expect("trains");
            opt.step(&mut hand, &grads);
        }
    }
    let trainer = || {
        Trainer::new(3, 16)
            .shuffle(false)
            .steps_per_epoch(2)
            .progress(false)
    };
    let mut fitted = Regressor::<f64>::new(&mut StdRng::seed_from_u64(5));
    trainer()
        .fit(&mut fitted, &mut Sgd::new(0.05), &data)
        .expect("fit runs");
    assert_eq!(params(&fitted), params(&hand));

    /// The same samples as a batch source.
    struct Rows<'a>(&'a TensorDataset<f64>);
    impl BatchSource<f64> for Rows<'_> {
        fn len(&self) -> usize {
            self.0.len()
        }
        fn served(&self) -> Vec<ServedArg> {
            vec![
                ServedArg::new("x", ServedKind::Float, 2),
                ServedArg::new("t", ServedKind::Float, 2),
            ]
        }
        fn fill(&self, indices: &[usize], batch: &mut Vec<BatchArray<f64>>) -> kiln::Result<()> {
            let subset = self.0.subset(indices)?;
            let values = subset.values().expect("float targets").clone();
            *batch = vec![
                BatchArray::Float(subset.features().clone()),
                BatchArray::Float(values),
            ];
            Ok(())
        }
    }
    let mut batched = Regressor::<f64>::new(&mut StdRng::seed_from_u64(5));
    trainer()
        .fit_batches(&mut batched, &mut Sgd::new(0.05), &Rows(&data))
        .expect("fit_batches runs");
    assert_eq!(params(&batched), params(&hand));
}

/// Accumulating the gradients of four batches of 8 steps as one batch of 32 does: 76 digits
/// are batches of 32, 32 and 12, or groups of four, four and two batches of 8 (the last one
/// of 4, which counts for its 4 samples), and both runs reach the same weights (Adam, two
/// epochs, in f64); without accumulation batches of 8 do not.
#[test]
fn accumulated_gradients_step_as_one_large_batch() {
    let mut digits = data::digits::<f64>().expect("the bundled digits load");
    digits.reshape_samples(&[64]).expect("1×8×8 = 64");
    let x = digits
        .features()
        .slice_axis(ndarray::Axis(0), (0..76).into())
        .to_owned();
    let y = digits
        .labels()
        .expect("labels")
        .slice(ndarray::s![..76])
        .to_owned();
    let data = TensorDataset::with_labels(x, y, 10).expect("a data set");
    let run = |batch: usize, accumulate: usize| {
        let mut m = DigitsMlp::<f64>::new(&mut StdRng::seed_from_u64(4));
        let history = Trainer::new(2, batch)
            .shuffle(false)
            .accumulate_grad_batches(accumulate)
            .progress(false)
            .fit(&mut m, &mut Adam::new(1e-2), &data)
            .expect("training runs");
        (params(&m), history)
    };
    let (large, _) = run(32, 1);
    let (accumulated, history) = run(8, 4);
    let (small, _) = run(8, 1);
    let gap = |a: &[f64], b: &[f64]| {
        a.iter()
            .zip(b)
            .map(|(p, q)| (p - q).abs())
            .fold(0.0, f64::max)
    };
    assert!(
        gap(&large, &accumulated) < 1e-12,
        "{}",
        gap(&large, &accumulated)
    );
    assert!(gap(&large, &small) > 1e-3, "{}", gap(&large, &small));
    // The reported loss is still every batch's, and it fell.
    assert!(history.epochs[1].train_loss < history.epochs[0].train_loss);
}

/// `save_best` keeps the weights of the epoch with the lowest validation loss (here an early
/// one: the validation labels are shifted, so learning makes it worse), or of the best figure
/// it is told to watch; a name the run does not compute is refused before training.
#[test]
fn save_best_keeps_the_best_epochs_weights() {
    let (train, val) = misleading_validation();
    let dir = scratch("save-best");
    let (by_loss, by_accuracy) = (dir.join("best.safetensors"), dir.join("acc.safetensors"));
    let trainer = |epochs| {
        Trainer::new(epochs, 64)
            .shuffle_seed(3)
            .validation(&val)
            .progress(false)
    };
    let mut trained = model(4);
    let history = trainer(6)
        .save_best(&by_loss)
        .save_best_on(&by_accuracy, "accuracy", Mode::Max)
        .fit(&mut trained, &mut Adam::new(1e-2), &train)
        .expect("training runs");
    // The second `save_best` replaces the first, as every builder option does.
    assert!(!by_loss.exists());
    let best = history
        .best_epoch_by("accuracy", Mode::Max)
        .expect("a best epoch");
    assert!(best > 0, "training accuracy rises");
    let mut reference = model(4);
    trainer(best + 1)
        .fit(&mut reference, &mut Adam::new(1e-2), &train)
        .expect("training runs");
    let mut loaded = model(99);
    kiln::io::load(&mut loaded, &by_accuracy).expect("the best weights load");
    assert_eq!(params(&loaded), params(&reference));

    let mut trained = model(4);
    let history = trainer(6)
        .save_best(&by_loss)
        .fit(&mut trained, &mut Adam::new(1e-2), &train)
        .expect("training runs");
    let best = history.best_epoch().expect("a best epoch");
    assert!(
        best < 5,
        "the shifted labels make the validation loss worse"
    );
    let mut reference = model(4);
    trainer(best + 1)
        .fit(&mut reference, &mut Adam::new(1e-2), &train)
        .expect("training runs");
    kiln::io::load(&mut loaded, &by_loss).expect("the best weights load");
    assert_eq!(params(&loaded), params(&reference));

    let err = trainer(1)
        .save_best_on(dir.join("f1.safetensors"), "val_f1", Mode::Max)
        .fit(&mut model(4), &mut Adam::new(1e-2), &train)
        .expect_err("no F1 is computed");
    assert!(
        err.to_string().contains("save_best monitors `val_f1`"),
        "{err}"
    );
}

/// `on_epoch_end` sees every epoch's record as the history keeps it, and ends training when
/// it breaks.
#[test]
fn an_epoch_callback_sees_each_record_and_can_end_training() {
    let (train, val) = digits_split();
    let seen = std::cell::RefCell::new(Vec::new());
    let history = Trainer::new(20, 64)
        .validation(&val)
        .progress(false)
        .on_epoch_end(|record| {
            seen.borrow_mut().push(record.clone());
            if record.val_accuracy.is_some_and(|a| a > 0.9) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .fit(&mut model(4), &mut Adam::new(1e-2), &train)
        .expect("training runs");
    assert_eq!(seen.into_inner(), history.epochs);
    assert!(
        history.len() < 20,
        "it stopped after {} epochs",
        history.len()
    );
    let accuracies: Vec<f64> = history
        .epochs
        .iter()
        .filter_map(|r| r.val_accuracy)
        .collect();
    assert!(accuracies[..accuracies.len() - 1].iter().all(|&a| a <= 0.9));
    assert!(accuracies[accuracies.len() - 1] > 0.9);
}
