//! Crash safety of training checkpoints, proven with real kills: a child process (this test
//! binary, re-executed in a "child" mode) trains with `Trainer::checkpoints` and resumes from
//! its directory whenever a checkpoint exists; the parent kills it with SIGKILL after seeded
//! random delays, over and over, and after every kill checks what is on disk:
//!
//! - the newest checkpoint always loads (pointer, state, model, optimizer and best weights);
//! - it is never older than one seen before (nothing lost) and never a temporary file;
//! - it is bit for bit the state an uninterrupted run has at that epoch (weights, optimizer
//!   buffers and counters, best weights, history figures);
//!
//! and when a child is left to finish, its final checkpoint is bit for bit the uninterrupted
//! run's. Each completed run starts a new round in a fresh directory until enough kills have
//! landed.
//!
//! `KILN_CRASH_KILLS` (default 100) and `KILN_CRASH_SEED` (default 17) set the number of kills
//! and the seed of the delays; the test prints its figures (`--nocapture` shows them):
//!
//! ```text
//! KILN_CRASH_KILLS=1000 cargo test --release --test train_crash -- --nocapture
//! ```

#![cfg(unix)]

use kiln::data::{self, TensorDataset};
use kiln::optim::CosineAnnealing;
use kiln::rand::rngs::StdRng;
use kiln::rand::{RngExt, SeedableRng};
use kiln::train::{Checkpoint, Trainer, Weights};
use kiln::Adam;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

kiln::model! {
    pub struct Net {
        input x: [B, 4];
        target y: [B] classes 3;
        let h = tanh(linear(x, 8));
        let logits = linear(h, 3);
        output logits;
        loss cross_entropy(logits, y);
    }
}

/// Epochs of a complete run (each 4 steps and a checkpoint).
const EPOCHS: usize = 12;
/// The environment variable that puts the test binary in child mode: the checkpoint directory.
const CHILD_DIR: &str = "KILN_CRASH_CHILD_DIR";
/// The test that runs the child (the parent re-executes the binary with this filter).
const TEST_NAME: &str = "checkpoints_survive_sigkill_at_random_moments";

fn iris() -> (TensorDataset<f32>, TensorDataset<f32>) {
    let iris = data::iris::<f32>().expect("bundled");
    data::stratified_split(&iris, 0.2, 3)
}

fn trainer<'a>(epochs: usize, val: &'a TensorDataset<f32>) -> Trainer<'a, f32> {
    Trainer::new(epochs, 32)
        .shuffle_seed(5)
        .validation(val)
        .schedule(CosineAnnealing::new(EPOCHS, 1e-4))
        // Patience beyond the run: the early-stopping state and best weights are checkpointed.
        .early_stopping(EPOCHS, 0.0)
        .progress(false)
}

fn net() -> Net<f32> {
    Net::new(&mut StdRng::seed_from_u64(0))
}

/// Trains `epochs` epochs checkpointing into `dir`, resuming from it when it holds a
/// checkpoint: what the child does, and (epoch by epoch) the reference.
fn train_into(dir: &Path, epochs: usize) {
    let (train, val) = iris();
    let mut model = net();
    let mut opt = Adam::new(2e-2);
    let mut run = trainer(epochs, &val).checkpoints(dir);
    if Checkpoint::<f32>::exists(dir) {
        run = run.resume_from(dir);
    }
    run.fit(&mut model, &mut opt, &train).expect("training");
}

/// What a checkpoint holds, without the timings (which differ between runs).
#[derive(Debug, PartialEq)]
struct Snapshot {
    epochs_done: usize,
    steps_done: usize,
    base_lr: u64,
    weights: Weights<f32>,
    best: Option<Weights<f32>>,
    optimizer_kind: String,
    optimizer_scalars: Vec<(String, u64)>,
    optimizer_buffers: Vec<(String, Vec<Vec<u32>>)>,
    history: Vec<[Option<u64>; 5]>,
}

/// Reads the newest checkpoint in `dir`, checking that it is a complete, final one.
fn snapshot(dir: &Path) -> Snapshot {
    let latest = Checkpoint::<f32>::latest(dir).expect("the pointer reads");
    let name = latest.file_name().expect("a name").to_string_lossy();
    assert!(
        name.starts_with("epoch-") && !name.contains("tmp"),
        "the pointer names {name}"
    );
    for entry in std::fs::read_dir(&latest).expect("the checkpoint directory") {
        let file = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        assert!(
            [
                "model.safetensors",
                "optimizer.safetensors",
                "best.safetensors",
                "state.json"
            ]
            .contains(&file.as_str()),
            "{}: unexpected file {file} in the newest checkpoint",
            latest.display()
        );
    }
    let (ckpt, weights) = Checkpoint::read(dir, &net()).expect("the newest checkpoint loads");
    let bits = |v: Option<f64>| v.map(f64::to_bits);
    Snapshot {
        epochs_done: ckpt.epochs_done,
        steps_done: ckpt.steps_done,
        base_lr: ckpt.base_lr.to_bits(),
        weights,
        best: ckpt.best_weights,
        optimizer_kind: ckpt.optimizer.kind.clone(),
        optimizer_scalars: ckpt
            .optimizer
            .scalars
            .iter()
            .map(|(k, v)| (k.clone(), v.to_bits()))
            .collect(),
        optimizer_buffers: ckpt
            .optimizer
            .buffers
            .iter()
            .map(|(k, list)| {
                let list = list
                    .iter()
                    .map(|b| b.iter().map(|v| v.to_bits()).collect())
                    .collect();
                (k.clone(), list)
            })
            .collect(),
        history: ckpt
            .history
            .epochs
            .iter()
            .map(|r| {
                [
                    bits(Some(r.train_loss)),
                    bits(r.train_accuracy),
                    bits(r.val_loss),
                    bits(r.val_accuracy),
                    bits(Some(r.lr)),
                ]
            })
            .collect(),
    }
}

/// What an unfinished save leaves in `dir`: temporary files, and epoch directories the
/// pointer does not name (written before the pointer moved, or not yet removed after).
fn leftovers(dir: &Path) -> Vec<String> {
    let current = Checkpoint::<f32>::latest(dir).ok();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            name.ends_with(".tmp")
                || (name.starts_with("epoch-") && current.as_deref() != Some(&entry.path()))
        })
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("train_crash-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn checkpoints_survive_sigkill_at_random_moments() {
    if let Some(dir) = std::env::var_os(CHILD_DIR) {
        train_into(Path::new(&dir), EPOCHS);
        // Done: leave before the test harness prints anything else.
        std::process::exit(0);
    }
    let started = Instant::now();
    let kills_wanted = env_or("KILN_CRASH_KILLS", 100);
    let mut rng = StdRng::seed_from_u64(env_or("KILN_CRASH_SEED", 17));

    // The reference: the state after each epoch, one epoch per `fit` (resumes are exact, as
    // `training/checkpoint.rs` shows and the straight run below confirms).
    let reference_dir = scratch("reference");
    let reference: Vec<Snapshot> = (1..=EPOCHS)
        .map(|epochs| {
            train_into(&reference_dir, epochs);
            snapshot(&reference_dir)
        })
        .collect();
    let straight_dir = scratch("straight");
    train_into(&straight_dir, EPOCHS);
    assert_eq!(snapshot(&straight_dir), reference[EPOCHS - 1]);
    // How long a child takes to run uninterrupted sets the range of the kill delays.
    let exe = std::env::current_exe().expect("the test binary");
    let child = |dir: &Path| {
        Command::new(&exe)
            .args([TEST_NAME, "--exact", "--test-threads=1"])
            .env(CHILD_DIR, dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the child starts")
    };
    let timed_dir = scratch("timed");
    let t = Instant::now();
    let status = child(&timed_dir).wait().expect("the child runs");
    let full_run = t.elapsed();
    assert!(status.success(), "an uninterrupted child fails: {status}");
    assert_eq!(snapshot(&timed_dir), reference[EPOCHS - 1]);

    // Kill at uniformly random moments of a run: most children make some progress (the
    // delay often exceeds the start-up), many die in the middle of a save.
    let max_delay = full_run.mul_f64(0.3);
    let (mut kills, mut resumes, mut rounds, mut checks) = (0u64, 0u64, 0u64, 0u64);
    let mut mid_save = 0u64;
    let mut kills_in_round = 0;
    let mut round_dir = scratch("round-0");
    let mut newest = 0;
    while kills < kills_wanted || kills_in_round > 0 {
        let before = leftovers(&round_dir);
        let mut process = child(&round_dir);
        if Checkpoint::<f32>::exists(&round_dir) {
            resumes += 1;
        }
        std::thread::sleep(max_delay.mul_f64(rng.random::<f64>()));
        process.kill().expect("SIGKILL");
        let status = process.wait().expect("the child is reaped");
        let finished = match status.signal() {
            Some(9) => {
                kills += 1;
                kills_in_round += 1;
                false
            }
            None if status.success() => true,
            _ => panic!("the child failed on its own: {status}"),
        };
        // (A kill that interrupts the same save as the previous one is not counted.)
        let after = leftovers(&round_dir);
        if !finished && !after.is_empty() && after != before {
            mid_save += 1;
        }
        if Checkpoint::<f32>::exists(&round_dir) {
            let on_disk = snapshot(&round_dir);
            assert!(
                on_disk.epochs_done >= newest,
                "round {rounds}: the newest checkpoint went back from epoch {newest} to {}",
                on_disk.epochs_done
            );
            newest = on_disk.epochs_done;
            assert!(newest >= 1);
            assert!(
                on_disk == reference[newest - 1],
                "round {rounds}, kill {kills}: the checkpoint of epoch {newest} differs from \
                 the uninterrupted run's"
            );
            checks += 1;
        }
        if finished {
            assert_eq!(newest, EPOCHS, "a finished run checkpointed its last epoch");
            rounds += 1;
            kills_in_round = 0;
            newest = 0;
            round_dir = scratch(&format!("round-{rounds}"));
        }
    }
    println!(
        "train_crash: {kills} SIGKILLs ({mid_save} in the middle of a save), {resumes} resumes from disk, {checks} checkpoints \
         checked bit for bit against the uninterrupted run, {rounds} runs completed and \
         bit-identical to it (a child run takes {:.0} ms; kills within {:.0} ms); {:.1} s",
        full_run.as_secs_f64() * 1e3,
        max_delay.as_secs_f64() * 1e3,
        started.elapsed().as_secs_f64()
    );
    assert!(kills >= kills_wanted);
    assert!(rounds >= 1);
}
