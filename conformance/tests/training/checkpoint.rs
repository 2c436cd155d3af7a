//! Checkpoints and resume: training 2 epochs, stopping, and resuming for 2 more gives bit for
//! bit the parameters, optimizer state and history of 4 straight epochs, for every optimizer;
//! the checkpoint directory's layout; errors that name the file; a custom optimizer.

use kiln::data::{self, TensorDataset};
use kiln::optim::{CosineAnnealing, LinearWarmup};
use kiln::rand::rngs::StdRng;
use kiln::rand::SeedableRng;
use kiln::train::{Checkpoint, History, OptimizerState, StatefulOptimizer, Trainer};
use kiln::{Adam, AdamW, Model, Optimizer, RmsProp, Sgd};
use std::path::PathBuf;

kiln::model! {
    pub struct Net {
        input x: [B, 64];
        target y: [B] classes 10;
        let h = tanh(linear(x, 32));
        let logits = linear(h, 10);
        output logits;
        loss cross_entropy(logits, y);
    }
}

fn split() -> (TensorDataset<f32>, TensorDataset<f32>) {
    let mut digits = data::digits::<f32>().expect("bundled");
    digits.reshape_samples(&[64]).expect("64 pixels");
    // A quarter of the data keeps the test fast; the split is stratified and seeded.
    let (small, _) = data::stratified_split(&digits, 0.75, 1);
    data::stratified_split(&small, 0.25, 2)
}

fn net(seed: u64) -> Net<f32> {
    Net::new(&mut StdRng::seed_from_u64(seed))
}

fn bits<M: Model<f32>>(model: &M) -> Vec<u32> {
    let mut all = Vec::new();
    model.visit_params(&mut |_, view| all.extend(view.iter().map(|v| v.to_bits())));
    all
}

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("train_ckpt-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The history without its timings, which differ from run to run.
fn figures(history: &History) -> Vec<[Option<f64>; 6]> {
    history
        .epochs
        .iter()
        .map(|r| {
            [
                Some(r.epoch as f64),
                Some(r.train_loss),
                r.train_accuracy,
                r.val_loss,
                r.val_accuracy,
                Some(r.lr),
            ]
        })
        .collect()
}

/// Runs 4 straight epochs, then 2 + 2 with a stop in between (a fresh model and a fresh
/// optimizer for the second half, as after a crash), and compares everything bit for bit.
fn resume_matches_straight_run<O>(name: &str, make: impl Fn() -> O)
where
    O: StatefulOptimizer<f32> + Optimizer<f32>,
{
    let (train, val) = split();
    let trainer = |epochs: usize| {
        Trainer::new(epochs, 32)
            .shuffle_seed(9)
            .validation(&val)
            .schedule(LinearWarmup::steps(5, CosineAnnealing::new(4, 1e-4)))
            .clip_grad_norm(1.0)
            // Patience larger than the run: the early-stopping state and the best weights are
            // checkpointed and restored, and the best weights are put back at the end.
            .early_stopping(10, 0.0)
            .progress(false)
    };

    let straight_dir = scratch(&format!("{name}-straight"));
    let mut straight = net(0);
    let mut straight_opt = make();
    let straight_history = trainer(4)
        .checkpoints(&straight_dir)
        .fit(&mut straight, &mut straight_opt, &train)
        .expect("straight run");

    let dir = scratch(&format!("{name}-resumed"));
    let mut first = net(0);
    let first_history = trainer(2)
        .checkpoints(&dir)
        .fit(&mut first, &mut make(), &train)
        .expect("first half");
    assert_eq!(first_history.len(), 2);

    // Another initialization and a fresh optimizer: everything must come from the checkpoint.
    let mut resumed = net(123);
    let mut resumed_opt = make();
    let resumed_history = trainer(4)
        .checkpoints(&dir)
        .resume_from(&dir)
        .fit(&mut resumed, &mut resumed_opt, &train)
        .expect("resumed run");

    assert_eq!(bits(&resumed), bits(&straight), "{name}: parameters differ");
    assert_eq!(
        figures(&resumed_history),
        figures(&straight_history),
        "{name}"
    );
    assert_eq!(
        resumed_opt.export_state(),
        straight_opt.export_state(),
        "{name}: optimizer state differs"
    );
    assert_eq!(resumed_opt.learning_rate(), straight_opt.learning_rate());
    // The last checkpoints agree too (their weights are the last epoch's, before the best
    // were restored into the model).
    let mut a = net(1);
    let mut b = net(2);
    let ckpt_a = Checkpoint::load(&straight_dir, &mut a).expect("straight checkpoint");
    let ckpt_b = Checkpoint::load(&dir, &mut b).expect("resumed checkpoint");
    assert_eq!(bits(&a), bits(&b));
    assert_eq!(ckpt_a.steps_done, ckpt_b.steps_done);
    assert_eq!(ckpt_a.optimizer.buffers, ckpt_b.optimizer.buffers);
    assert_eq!(ckpt_a.best_weights, ckpt_b.best_weights);
}

#[test]
fn resume_is_bit_exact_with_adam() {
    resume_matches_straight_run("adam", || Adam::new(2e-3));
}

#[test]
fn resume_is_bit_exact_with_adamw() {
    resume_matches_straight_run("adamw", || AdamW::new(2e-3).weight_decay(0.05));
}

#[test]
fn resume_is_bit_exact_with_sgd_nesterov() {
    resume_matches_straight_run("sgd", || {
        Sgd::new(0.05)
            .momentum(0.9)
            .nesterov(true)
            .weight_decay(1e-4)
    });
}

#[test]
fn resume_is_bit_exact_with_centered_rmsprop() {
    resume_matches_straight_run("rmsprop", || {
        RmsProp::new(1e-3).momentum(0.5).centered(true)
    });
}

#[test]
fn checkpoint_directory_layout_and_files() {
    let (train, val) = split();
    let dir = scratch("layout");
    let mut model = net(0);
    Trainer::new(3, 64)
        .validation(&val)
        .early_stopping(5, 0.0)
        .checkpoints(&dir)
        .progress(false)
        .fit(&mut model, &mut Adam::new(1e-3), &train)
        .expect("training runs");

    // Only the latest epoch's directory is kept, and the pointer names it.
    let mut entries: Vec<String> = std::fs::read_dir(&dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    assert_eq!(entries, ["checkpoint.json", "epoch-0003"]);
    assert_eq!(
        Checkpoint::<f32>::latest(&dir).expect("pointer"),
        dir.join("epoch-0003")
    );
    let mut files: Vec<String> = std::fs::read_dir(dir.join("epoch-0003"))
        .expect("epoch dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "best.safetensors",
            "model.safetensors",
            "optimizer.safetensors",
            "state.json"
        ]
    );

    // The model file is a plain state_dict: kiln::io::load reads it.
    let mut loaded = net(7);
    kiln::io::load(&mut loaded, dir.join("epoch-0003/model.safetensors")).expect("io::load");
    // Optimizer buffers are named after their parameters, shaped like them.
    let opt = kiln::io::TensorFile::open(dir.join("epoch-0003/optimizer.safetensors"))
        .expect("optimizer file");
    assert_eq!(
        opt.shape("h.weight.exp_avg").expect("named buffer"),
        [32, 64]
    );
    assert_eq!(
        opt.shape("logits.bias.exp_avg_sq").expect("named buffer"),
        [10]
    );
    assert_eq!(opt.names().len(), 8);
    let mut ckpt_model = net(8);
    let ckpt = Checkpoint::load(&dir, &mut ckpt_model).expect("checkpoint");
    assert_eq!(bits(&ckpt_model), bits(&loaded));
    assert_eq!(ckpt.epochs_done, 3);
    assert_eq!(ckpt.optimizer.kind, "Adam");
    assert_eq!(ckpt.optimizer.scalars["step"], ckpt.steps_done as f64);
    assert_eq!(ckpt.history.len(), 3);
    assert!(ckpt.best_weights.is_some());
    assert_eq!(ckpt.early_stopping.as_ref().map(|e| e.patience()), Some(5));
}

#[test]
fn an_interrupted_save_leaves_the_previous_checkpoint_in_force() {
    let (train, _) = split();
    let dir = scratch("interrupted");
    let trainer = |epochs| Trainer::new(epochs, 64).checkpoints(&dir).progress(false);
    let mut model = net(0);
    trainer(2)
        .fit(&mut model, &mut Sgd::new(0.1), &train)
        .expect("two epochs");
    // A crash while writing epoch 3: a half-written directory the pointer does not name.
    std::fs::create_dir_all(dir.join("epoch-0003")).expect("dir");
    std::fs::write(dir.join("epoch-0003/state.json"), "{ half").expect("file");

    let mut resumed = net(1);
    let history = trainer(3)
        .resume_from(&dir)
        .fit(&mut resumed, &mut Sgd::new(0.1), &train)
        .expect("resumes from epoch 2");
    assert_eq!(history.len(), 3);
    let mut straight = net(0);
    trainer(3)
        .checkpoints(scratch("interrupted-straight"))
        .fit(&mut straight, &mut Sgd::new(0.1), &train)
        .expect("three epochs");
    assert_eq!(bits(&resumed), bits(&straight));
    // The leftover was replaced by the real epoch 3.
    assert!(Checkpoint::<f32>::load(&dir, &mut net(2)).is_ok());

    // Saving the same epoch again never writes into the directory in force: it goes to an
    // alternate name, and the superseded directory is removed once the pointer has moved.
    let mut m = net(0);
    let ckpt = Checkpoint::load(&dir, &mut m).expect("epoch 3");
    ckpt.save(&dir, &m).expect("saved again");
    assert!(Checkpoint::<f32>::latest(&dir)
        .expect("pointer")
        .ends_with("epoch-0003-b"));
    assert!(!dir.join("epoch-0003").exists());
    ckpt.save(&dir, &m).expect("and again");
    assert!(Checkpoint::<f32>::latest(&dir)
        .expect("pointer")
        .ends_with("epoch-0003"));
    assert!(!dir.join("epoch-0003-b").exists());
    let mut back = net(1);
    assert_eq!(Checkpoint::load(&dir, &mut back).expect("loads"), ckpt);
    assert_eq!(bits(&back), bits(&m));
}

kiln::model! {
    pub struct OtherNet {
        input x: [B, 64];
        target y: [B] classes 10;
        let logits = linear(x, 10);
        output logits;
        loss cross_entropy(logits, y);
    }
}

#[test]
fn errors_name_the_file_and_leave_the_model_alone() {
    let (train, _) = split();
    let dir = scratch("errors");

    // A file where the checkpoint directory should be: refused before training.
    let file = scratch("a-file");
    std::fs::write(&file, b"not a directory").expect("scratch file");
    let mut m = net(0);
    let before = bits(&m);
    let err = Trainer::new(1, 64)
        .progress(false)
        .checkpoints(&file)
        .fit(&mut m, &mut Sgd::new(0.1), &train)
        .expect_err("a file, not a directory");
    assert_eq!(
        err.to_string(),
        format!(
            "{}: is a file: checkpoints go into a directory",
            file.display()
        )
    );
    assert_eq!(bits(&m), before);

    // Nothing to resume from.
    let err = Trainer::new(1, 64)
        .progress(false)
        .resume_from(&dir)
        .fit(&mut net(0), &mut Sgd::new(0.1), &train)
        .expect_err("no checkpoint");
    assert!(
        err.to_string()
            .contains("checkpoint.json: no checkpoint to resume from"),
        "{err}"
    );

    Trainer::new(1, 64)
        .checkpoints(&dir)
        .progress(false)
        .fit(&mut net(0), &mut Sgd::new(0.1).momentum(0.9), &train)
        .expect("one epoch");

    // Another model's checkpoint: an error, and the model is untouched.
    let mut other = OtherNet::<f32>::new(&mut StdRng::seed_from_u64(3));
    let before = bits(&other);
    let err = Checkpoint::load(&dir, &mut other).expect_err("another model");
    assert!(matches!(err, kiln::Error::Mismatch { .. }), "{err}");
    assert!(err.to_string().contains("state.json"), "{err}");
    assert_eq!(bits(&other), before);

    // Another optimizer: the checkpoint holds Sgd's state.
    let mut model = net(5);
    let before = bits(&model);
    let err = Trainer::new(2, 64)
        .progress(false)
        .resume_from(&dir)
        .fit(&mut model, &mut Adam::new(1e-3), &train)
        .expect_err("Sgd state into Adam");
    assert!(
        err.to_string()
            .contains("the optimizer does not match: the checkpoint holds Sgd's state, and this run trains with Adam"),
        "{err}"
    );
    assert_eq!(bits(&model), before, "checked before anything is changed");

    // A damaged state file: the error names it, the line and the column.
    let state = Checkpoint::<f32>::latest(&dir)
        .expect("pointer")
        .join("state.json");
    let text = std::fs::read_to_string(&state).expect("state");
    std::fs::write(&state, text.replacen("\"base_lr\"", "\"base_lr\" oops", 1)).expect("write");
    let err = Checkpoint::load(&dir, &mut net(0)).expect_err("bad JSON");
    let message = err.to_string();
    assert!(
        message.starts_with(&state.display().to_string()),
        "{message}"
    );
    assert!(message.contains("not valid JSON at line"), "{message}");

    // A wrong field type: the error names the field.
    std::fs::write(
        &state,
        text.replacen("\"steps_done\": ", "\"steps_done\": -", 1),
    )
    .expect("write");
    let err = Checkpoint::load(&dir, &mut net(0)).expect_err("negative steps");
    assert!(
        err.to_string()
            .ends_with("field `steps_done`: expected a non-negative integer"),
        "{err}"
    );
}

#[test]
fn a_run_that_stopped_early_is_not_continued() {
    let (train, val) = split();
    // Validation labels shifted by one class make the validation loss rise: early stopping
    // triggers after `patience` epochs.
    let shifted = val.labels().expect("labels").mapv(|l| (l + 1) % 10);
    let val = TensorDataset::with_labels(val.features().clone(), shifted, 10).expect("labels");
    let dir = scratch("stopped");
    let trainer = || {
        Trainer::new(40, 32)
            .validation(&val)
            .early_stopping(1, 0.0)
            .checkpoints(&dir)
            .progress(false)
    };
    let mut model = net(0);
    let history = trainer()
        .fit(&mut model, &mut Adam::new(1e-2), &train)
        .expect("runs");
    let stopped = history.stopped_early.expect("stops early");
    let mut again = net(77);
    let resumed = trainer()
        .resume_from(&dir)
        .fit(&mut again, &mut Adam::new(1e-2), &train)
        .expect("resume");
    assert_eq!(resumed.len(), stopped + 1, "no epoch was added");
    assert_eq!(resumed.stopped_early, Some(stopped));
    assert_eq!(bits(&again), bits(&model), "the best weights are restored");
}

/// An optimizer of the user's: plain gradient descent, no state to save.
struct Plain(f64);

impl Optimizer<f32> for Plain {
    fn step<M: Model<f32>>(&mut self, model: &mut M, grads: &M::Grads) {
        let lr = self.0 as f32;
        model.visit_params_with_grads(grads, &mut |_, p, g| {
            for (p, g) in p.iter_mut().zip(g) {
                // One rounding, as Sgd's update (and PyTorch's) has.
                *p = (-lr).mul_add(*g, *p);
            }
        });
    }
    fn learning_rate(&self) -> f64 {
        self.0
    }
    fn set_learning_rate(&mut self, lr: f64) {
        self.0 = lr;
    }
}

impl StatefulOptimizer<f32> for Plain {}

#[test]
fn a_custom_optimizer_trains_but_cannot_be_checkpointed() {
    let (train, _) = split();
    let mut a = net(0);
    let mut b = net(0);
    Trainer::new(2, 32)
        .progress(false)
        .fit(&mut a, &mut Plain(0.1), &train)
        .expect("trains");
    Trainer::new(2, 32)
        .progress(false)
        .fit(&mut b, &mut Sgd::new(0.1), &train)
        .expect("trains");
    assert_eq!(bits(&a), bits(&b), "plain descent is Sgd without momentum");

    let dir = scratch("custom");
    let before = bits(&a);
    let err = Trainer::new(1, 32)
        .progress(false)
        .checkpoints(&dir)
        .fit(&mut a, &mut Plain(0.1), &train)
        .expect_err("no state to save");
    assert!(err.to_string().contains("cannot export its state"), "{err}");
    assert_eq!(bits(&a), before, "refused before training");
    let state = OptimizerState::<f32>::new("Sgd");
    assert!(Plain(0.1).import_state(&state).is_err());
}

#[test]
fn optimizer_state_round_trips_in_memory() {
    let (train, _) = split();
    let mut model = net(0);
    let mut opt = RmsProp::new(1e-3).momentum(0.9);
    Trainer::new(1, 64)
        .progress(false)
        .fit(&mut model, &mut opt, &train)
        .expect("trains");
    let state = opt.export_state();
    assert_eq!(
        state.buffers["square_avg"].len(),
        4,
        "one buffer per parameter"
    );
    assert!(
        state.buffers["grad_avg"].is_empty(),
        "not centered: never allocated"
    );
    let mut copy = RmsProp::<f32>::new(0.5);
    copy.import_state(&state).expect("same kind");
    assert_eq!(copy.export_state(), state);
    let missing = OptimizerState::<f32>::new("RmsProp").with_scalar("lr", 0.1);
    let err = copy.import_state(&missing).expect_err("incomplete");
    assert!(err.to_string().contains("has no `alpha`"), "{err}");
    assert_eq!(
        copy.export_state(),
        state,
        "unchanged after a failed import"
    );
}

/// A checkpoint whose weights were changed to hold a NaN (the trainer never writes one) is
/// refused when resuming, naming the tensor, instead of training until the first loss.
#[test]
fn a_checkpoint_with_non_finite_weights_is_not_resumed() {
    let (train, _) = split();
    let dir = scratch("nan");
    let mut model = net(0);
    Trainer::new(1, 64)
        .checkpoints(&dir)
        .progress(false)
        .fit(&mut model, &mut Sgd::new(0.1), &train)
        .expect("training runs");
    let weights = Checkpoint::<f32>::latest(&dir)
        .expect("pointer")
        .join("model.safetensors");
    let mut damaged = model.clone();
    damaged.visit_params_mut(&mut |name, mut view| {
        if name == "logits.weight" {
            view[[0, 0]] = f32::NAN;
        }
    });
    kiln::io::save(&damaged, &weights).expect("rewrite the weights");

    let mut resumed = net(1);
    let before = bits(&resumed);
    let err = Trainer::new(2, 64)
        .progress(false)
        .resume_from(&dir)
        .fit(&mut resumed, &mut Sgd::new(0.1), &train)
        .expect_err("NaN weights");
    assert!(
        err.to_string()
            .ends_with("the checkpoint's `logits.weight` holds NaN: it cannot be resumed from"),
        "{err}"
    );
    assert_eq!(bits(&resumed), before, "nothing was loaded");
}
