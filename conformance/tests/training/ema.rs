//! `Trainer::ema`: the moving average of the weights kept by the trainer is `kiln::optim::Ema`
//! updated after every step of the same loop written by hand; validation, the best weights
//! and `save_best` measure the average; the model ends with it; checkpoints carry it.

use super::common::params;
use kiln::data::{Batch, DataLoader, TensorDataset};
use kiln::optim::Ema;
use kiln::rand::rngs::StdRng;
use kiln::rand::SeedableRng;
use kiln::train::{batch_targets, evaluate, Checkpoint, History, Trainer};
use kiln::{Adam, Error, Model, Optimizer, Supervised};
use std::path::PathBuf;

kiln::model! {
    /// A regression net with batch statistics, so that the average's buffers are covered.
    pub struct Smoother {
        input x: [B, 4];
        target t: [B, 2];
        let z = linear(x, 12);
        let h = relu(batch_norm(z));
        let pred = linear(h, 2);
        output pred;
        loss mse(pred, t);
    }
}

fn data(n: usize, seed: u64) -> TensorDataset<f64> {
    use kiln::rand::RngExt;
    let mut rng = StdRng::seed_from_u64(seed);
    let x = kiln::ndarray::Array2::from_shape_simple_fn((n, 4), || rng.random_range(-1.0..1.0));
    let t = kiln::ndarray::Array2::from_shape_fn((n, 2), |(i, j)| {
        let row = x.row(i);
        if j == 0 {
            2.0 * row[0] - row[1] * row[2]
        } else {
            (3.0f64 * row[3]).sin()
        }
    });
    TensorDataset::with_values(x, t).expect("same sample count")
}

/// Parameters and buffers, flattened, as bits.
fn weights<M: Model<f64>>(model: &M) -> Vec<u64> {
    let mut all = Vec::new();
    model.visit_params(&mut |_, v| all.extend(v.iter().map(|x| x.to_bits())));
    model.visit_buffers(&mut |_, v| all.extend(v.iter().map(|x| x.to_bits())));
    all
}

const DECAY: f64 = 0.8;
const EPOCHS: usize = 4;

/// The trainer's loop by hand, with an `Ema` updated after every step: the average's weights
/// and validation loss at the end of each epoch, and the model's own final weights.
fn hand_loop(
    model: &mut Smoother<f64>,
    train: &TensorDataset<f64>,
    val: &TensorDataset<f64>,
) -> (Vec<Vec<u64>>, Vec<f64>) {
    let mut opt = Adam::new(2e-2);
    let mut ema = Ema::new(&*model, DECAY);
    let loader = DataLoader::new(train, 16).shuffle(5);
    let mut ws = <Smoother<f64> as Supervised<f64>>::Workspace::default();
    let mut grads = model.zero_grads();
    let mut batch = Batch::new();
    let (mut averages, mut losses) = (Vec::new(), Vec::new());
    for epoch in 0..EPOCHS {
        let mut batches = loader.epoch_batches(epoch);
        while batches.next_into(&mut batch) {
            model
                .train_batch(batch.x.view(), batch_targets(&batch), &mut ws, &mut grads)
                .expect("a training step");
            opt.step(model, &grads);
            ema.update(model).expect("same model");
        }
        averages.push(weights(ema.model()));
        losses.push(evaluate(ema.model(), val, 16).expect("validation").loss);
    }
    (averages, losses)
}

fn trainer<'a>(val: &'a TensorDataset<f64>) -> Trainer<'a, f64> {
    Trainer::new(EPOCHS, 16)
        .shuffle_seed(5)
        .validation(val)
        .ema(DECAY)
        .progress(false)
}

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("train_ema-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn the_trainers_average_is_emas_and_validation_measures_it() {
    let (train, val) = (data(100, 1), data(40, 2));
    let start = Smoother::<f64>::new(&mut StdRng::seed_from_u64(7));
    let mut by_hand = start.clone();
    let (averages, losses) = hand_loop(&mut by_hand, &train, &val);

    let mut by_trainer = start.clone();
    let history = trainer(&val)
        .fit(&mut by_trainer, &mut Adam::new(2e-2), &train)
        .expect("training runs");
    // The model ends with the last average, not with its own weights.
    assert_eq!(weights(&by_trainer), averages[EPOCHS - 1]);
    assert_ne!(weights(&by_trainer), weights(&by_hand));
    // Each epoch's validation loss is the average's (the trainer's validation batches are the
    // training batch size, as here).
    let recorded: Vec<f64> = history.epochs.iter().map(|r| r.val_loss.unwrap()).collect();
    assert_eq!(recorded, losses);

    // Early stopping restores, and save_best writes, the best epoch's average.
    let best_epoch = (0..EPOCHS)
        .min_by(|&a, &b| losses[a].total_cmp(&losses[b]))
        .expect("epochs");
    let dir = scratch("best");
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let best_file = dir.join("best.safetensors");
    let mut restored = start.clone();
    let history = trainer(&val)
        .early_stopping(10, 0.0)
        .restore_best_weights(true)
        .save_best(&best_file)
        .fit(&mut restored, &mut Adam::new(2e-2), &train)
        .expect("training runs");
    assert_eq!(history.best_epoch(), Some(best_epoch));
    assert_eq!(weights(&restored), averages[best_epoch]);
    let mut saved = start.clone();
    kiln::io::load(&mut saved, &best_file).expect("save_best wrote a model file");
    assert_eq!(weights(&saved), averages[best_epoch]);
}

/// The history without its timings, which differ from run to run.
fn figures(history: &History) -> Vec<[Option<f64>; 3]> {
    let rows = history.epochs.iter();
    rows.map(|r| [Some(r.epoch as f64), Some(r.train_loss), r.val_loss])
        .collect()
}

#[test]
fn a_resumed_run_continues_the_average_bit_for_bit() {
    let (train, val) = (data(100, 3), data(40, 4));
    let start = Smoother::<f64>::new(&mut StdRng::seed_from_u64(8));
    let straight_dir = scratch("straight");
    let mut straight = start.clone();
    let straight_history = trainer(&val)
        .checkpoints(&straight_dir)
        .fit(&mut straight, &mut Adam::new(2e-2), &train)
        .expect("straight run");

    let dir = scratch("resumed");
    let mut first = start.clone();
    Trainer::new(2, 16)
        .shuffle_seed(5)
        .validation(&val)
        .ema(DECAY)
        .progress(false)
        .checkpoints(&dir)
        .fit(&mut first, &mut Adam::new(2e-2), &train)
        .expect("first half");
    let latest = Checkpoint::<f64>::latest(&dir).expect("a checkpoint");
    assert!(latest.join("ema.safetensors").is_file());
    // The checkpoint holds the model's own weights and, beside them, the average.
    let mut own = start.clone();
    let checkpoint = Checkpoint::load(&dir, &mut own).expect("loads");
    let average = checkpoint.ema.expect("the average");
    let mut averaged = start.clone();
    average.restore(&mut averaged).expect("same model");
    assert_eq!(weights(&first), weights(&averaged));
    assert_ne!(params(&own), params(&averaged));

    let mut resumed = Smoother::<f64>::new(&mut StdRng::seed_from_u64(99));
    let resumed_history = trainer(&val)
        .checkpoints(&dir)
        .resume_from(&dir)
        .fit(&mut resumed, &mut Adam::new(2e-2), &train)
        .expect("resumed run");
    assert_eq!(weights(&resumed), weights(&straight));
    assert_eq!(figures(&resumed_history), figures(&straight_history));
}

#[test]
fn a_decay_outside_zero_to_one_is_refused() {
    let (train, val) = (data(20, 5), data(8, 6));
    for decay in [1.5, -0.1, f64::NAN] {
        let mut model = Smoother::<f64>::new(&mut StdRng::seed_from_u64(9));
        let before = weights(&model);
        let err = Trainer::new(1, 8)
            .validation(&val)
            .ema(decay)
            .progress(false)
            .fit(&mut model, &mut Adam::new(1e-2), &train)
            .expect_err("refused");
        assert!(
            matches!(&err, Error::Data { problem, .. } if problem.contains("Trainer::ema")),
            "{err}"
        );
        assert_eq!(weights(&model), before, "nothing trained");
    }
}
