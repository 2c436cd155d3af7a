//! Data-parallel training over MPI (`--features mpi`): two ranks under `mpirun -np 2` on
//! loopback train the model that one process trains on the combined batches, with the
//! `Trainer` and with a hand-written loop (summing after the backward pass, and during it
//! bit-identically); a run checkpointed on two ranks resumes on one;
//! a rank that dies or hangs ends the job with a clear error instead of a hang.
//!
//! ```text
//! cargo test --features mpi --test distributed
//! ```
//!
//! The MPI program is this test binary itself: each test starts `mpirun -np 2` on it, running
//! only the ignored `child` test with `KILN_DIST_CHILD` naming the scenario. That costs no
//! extra build. Open MPI refuses root unless told; the tests tell it (CI runs as root).

use kiln::data::{Batch, DataLoader, TensorDataset};
use kiln::distributed::{Communicator, DataParallel, World};
use kiln::ndarray::{Array1, Array2};
use kiln::rand::rngs::StdRng;
use kiln::rand::{RngExt, SeedableRng};
use kiln::train::{batch_targets, History, Metric, Trainer};
use kiln::{Adam, Model, Optimizer, Sgd, Supervised};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

kiln::model! {
    /// A small perceptron: 12 features, 3 classes.
    pub struct Mlp {
        input x: [B, 12];
        target y: [B] classes 3;
        let h = tanh(linear(x, 24));
        let logits = linear(h, 3);
        output logits;
        loss cross_entropy(logits, y);
    }
}

/// 101 samples, so that the global batch of 20 leaves a last batch of 1: over two ranks,
/// rank 0's piece of it is empty.
fn dataset() -> TensorDataset<f32> {
    let mut rng = StdRng::seed_from_u64(3);
    let x = Array2::from_shape_simple_fn((101, 12), || rng.random_range(-1.0f32..1.0));
    let y = Array1::from_shape_fn(101, |i| {
        usize::from(x[[i, 0]] + x[[i, 1]] > 0.0) + usize::from(x[[i, 2]] > 0.5)
    });
    TensorDataset::with_labels(x, y, 3).expect("dataset")
}

const GLOBAL_BATCH: usize = 20;

fn model(seed: u64) -> Mlp<f32> {
    Mlp::new(&mut StdRng::seed_from_u64(seed))
}

fn params<M: Model<f32>>(model: &M) -> Vec<f32> {
    let mut all = Vec::new();
    model.visit_params(&mut |_, view| all.extend(view.iter().copied()));
    all
}

fn trainer<'a>(epochs: usize) -> Trainer<'a, f32> {
    Trainer::new(epochs, GLOBAL_BATCH)
        .shuffle_seed(5)
        .progress(false)
        .metrics([Metric::MacroF1, Metric::TopKAccuracy(2)])
}

/// A hand-written loop: SGD with momentum, `epochs` epochs; with `dp`, data-parallel (the
/// sharded loader and the one added call).
fn hand_loop(
    model: &mut Mlp<f32>,
    data: &TensorDataset<f32>,
    epochs: usize,
    comm: Option<&dyn Communicator>,
) {
    let mut dp = comm.map(|c| DataParallel::new(c, model).expect("data parallel"));
    let mut loader = DataLoader::new(data, GLOBAL_BATCH).shuffle(9);
    if let Some(c) = comm {
        loader = loader.shard(c.rank(), c.size());
    }
    let mut opt = Sgd::new(0.1).momentum(0.9);
    let (mut ws, mut grads, mut batch) = (model.workspace(), model.zero_grads(), Batch::new());
    for epoch in 0..epochs {
        let mut batches = loader.epoch_batches(epoch);
        while batches.next_into(&mut batch) {
            if !batch.is_empty() {
                model
                    .train_batch(batch.x.view(), batch_targets(&batch), &mut ws, &mut grads)
                    .expect("step");
            }
            if let Some(dp) = &mut dp {
                dp.all_reduce_grads(&mut grads, batch.len())
                    .expect("all-reduce");
            }
            opt.step(model, &grads);
        }
    }
}

/// [`hand_loop`] on `comm` with the gradients summed during the backward pass
/// (`DataParallel::train_batch`), in buckets of `bucket_bytes`.
fn hand_loop_overlapped(
    model: &mut Mlp<f32>,
    data: &TensorDataset<f32>,
    epochs: usize,
    comm: &dyn Communicator,
    bucket_bytes: usize,
) {
    let mut dp = DataParallel::new(comm, model)
        .expect("data parallel")
        .bucket_bytes(bucket_bytes);
    let loader = DataLoader::new(data, GLOBAL_BATCH)
        .shuffle(9)
        .shard(comm.rank(), comm.size());
    let mut opt = Sgd::new(0.1).momentum(0.9);
    let (mut ws, mut grads, mut batch) = (model.workspace(), model.zero_grads(), Batch::new());
    for epoch in 0..epochs {
        let mut batches = loader.epoch_batches(epoch);
        while batches.next_into(&mut batch) {
            let x = batch.x.view();
            dp.train_batch(
                model,
                x,
                batch_targets(&batch),
                &mut ws,
                &mut grads,
                batch.len(),
            )
            .expect("overlapped step");
            opt.step(model, &grads);
        }
    }
}

fn write_floats(path: &Path, values: &[f32]) {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes).expect("write");
}

fn read_floats(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn history_losses(history: &History) -> Vec<f32> {
    history
        .epochs
        .iter()
        .flat_map(|e| {
            [
                e.train_loss,
                e.train_accuracy.unwrap_or(-1.0),
                e.metric("f1").unwrap_or(-1.0),
                e.metric("top_2_accuracy").unwrap_or(-1.0),
            ]
            .map(|v| v as f32)
        })
        .collect()
}

/// The MPI program: what each rank runs, by scenario. Not a test on its own.
#[test]
#[ignore = "run by the other tests under mpirun"]
fn child() {
    let Ok(scenario) = std::env::var("KILN_DIST_CHILD") else {
        return;
    };
    let out = PathBuf::from(std::env::var("KILN_DIST_OUT").expect("KILN_DIST_OUT"));
    let world = World::init().expect("MPI starts");
    let rank = world.rank();
    let data = dataset();
    match scenario.as_str() {
        "parity" => {
            // Each rank starts from different weights: rank 0's must reach all.
            let mut m = model(1 + rank as u64);
            let history = trainer(3)
                .distributed(&world)
                .fit(&mut m, &mut Adam::new(1e-2), &data)
                .expect("fit");
            write_floats(&out.join(format!("trainer-{rank}")), &params(&m));
            write_floats(
                &out.join(format!("history-{rank}")),
                &history_losses(&history),
            );

            let mut m = model(10 + rank as u64);
            hand_loop(&mut m, &data, 2, Some(&world));
            write_floats(&out.join(format!("loop-{rank}")), &params(&m));

            // The same loop summing buckets of 64 bytes (weights cut across buckets) and of
            // the default size while the backward pass runs.
            for (name, bytes) in [("overlap-64", 64), ("overlap-default", 4 << 20)] {
                let mut m = model(10 + rank as u64);
                hand_loop_overlapped(&mut m, &data, 2, &world, bytes);
                write_floats(&out.join(format!("{name}-{rank}")), &params(&m));
            }

            // Gradient accumulation: each group summed once, in its last batch.
            let mut m = model(1 + rank as u64);
            trainer(2)
                .accumulate_grad_batches(3)
                .distributed(&world)
                .fit(&mut m, &mut Adam::new(1e-2), &data)
                .expect("fit with accumulation");
            write_floats(&out.join(format!("accumulated-{rank}")), &params(&m));

            // Two epochs checkpointed, each rank told its own directory: only rank 0 writes.
            let mut m = model(1 + rank as u64);
            trainer(2)
                .distributed(&world)
                .checkpoints(out.join(format!("ckpt-{rank}")))
                .fit(&mut m, &mut Adam::new(1e-2), &data)
                .expect("fit with checkpoints");
        }
        "die" | "stall" | "stall-overlapped" | "panic" => {
            let mut m = model(1);
            let mut dp = DataParallel::new(&world, &mut m).expect("data parallel");
            let loader = DataLoader::new(&data, 4).shard(rank, world.size());
            let (mut ws, mut grads, mut batch) = (m.workspace(), m.zero_grads(), Batch::new());
            let mut opt = Sgd::new(0.01);
            for epoch in 0..1000 {
                let mut batches = loader.epoch_batches(epoch);
                let mut step = 0;
                while batches.next_into(&mut batch) {
                    if rank == 1 && epoch == 1 && step == 3 {
                        match scenario.as_str() {
                            "die" => {
                                // As the OOM killer or a lost node would: no chance to clean up.
                                let pid = std::process::id().to_string();
                                let _ = Command::new("kill").args(["-KILL", &pid]).status();
                            }
                            "panic" => panic!("rank 1 gives up"),
                            _ => std::thread::sleep(std::time::Duration::from_secs(50)),
                        }
                    }
                    if scenario == "stall" {
                        if !batch.is_empty() {
                            m.train_batch(
                                batch.x.view(),
                                batch_targets(&batch),
                                &mut ws,
                                &mut grads,
                            )
                            .expect("step");
                        }
                        dp.all_reduce_grads(&mut grads, batch.len())
                            .expect("all-reduce");
                    } else {
                        let x = batch.x.view();
                        dp.train_batch(
                            &mut m,
                            x,
                            batch_targets(&batch),
                            &mut ws,
                            &mut grads,
                            batch.len(),
                        )
                        .expect("overlapped step");
                    }
                    opt.step(&mut m, &grads);
                    step += 1;
                }
            }
            std::fs::write(out.join(format!("finished-{rank}")), "").expect("write");
        }
        other => panic!("unknown scenario {other}"),
    }
}

/// A fresh scratch directory.
fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("distributed-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// Runs scenario `scenario` of [`child`] on two ranks, bounded by `timeout 60` so that a
/// hang fails the test instead of blocking CI.
fn mpirun(scenario: &str, out: &Path, extra_env: &[(&str, &str)]) -> Output {
    let exe = std::env::current_exe().expect("test binary");
    let mut command = Command::new("timeout");
    command
        .args([
            "60",
            "mpirun",
            "-np",
            "2",
            "--oversubscribe",
            "--bind-to",
            "none",
        ])
        .arg(exe)
        .args([
            "child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("KILN_DIST_CHILD", scenario)
        .env("KILN_DIST_OUT", out)
        // Open MPI refuses to run as root without both.
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        // A container without cross-memory attach: the shared-memory transport copies.
        .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none");
    for (key, value) in extra_env {
        command.env(key, value);
    }
    command.output().expect(
        "mpirun runs (install Open MPI: apt-get install openmpi-bin libopenmpi-dev; see \
         DISTRIBUTED.md)",
    )
}

fn text(output: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The largest difference between `a` and `b`, relative to the larger magnitude (at least 1).
fn max_difference(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / x.abs().max(y.abs()).max(1.0))
        .fold(0.0, f32::max)
}

#[test]
fn two_ranks_train_the_model_of_one_process_on_the_combined_batch() {
    let out = scratch("parity");
    let output = mpirun("parity", &out, &[]);
    assert!(output.status.success(), "{}", text(&output));
    let data = dataset();

    // The Trainer: 3 epochs of Adam, rank 0's initial weights.
    let mut single = model(1);
    let history = trainer(3)
        .fit(&mut single, &mut Adam::new(1e-2), &data)
        .expect("fit");
    let (rank0, rank1) = (
        read_floats(&out.join("trainer-0")),
        read_floats(&out.join("trainer-1")),
    );
    assert_eq!(rank0, rank1, "the ranks' weights are identical");
    assert_ne!(
        params(&single),
        params(&model(1)),
        "training moved the weights"
    );
    let diff = max_difference(&rank0, &params(&single));
    assert!(
        diff < 1e-4,
        "Trainer: 2 ranks vs 1 process differ by {diff}"
    );
    // The epoch metrics are summed over the ranks: the loss, accuracy, macro F1 and top-2
    // accuracy of all samples.
    let losses = read_floats(&out.join("history-0"));
    assert_eq!(losses, read_floats(&out.join("history-1")));
    let diff = max_difference(&losses, &history_losses(&history));
    assert!(
        diff < 1e-4,
        "history: {losses:?} vs {:?}",
        history_losses(&history)
    );

    // Accumulating 3 batches per step, the ranks summing each group once (DDP's `no_sync`).
    let mut accumulated = model(1);
    trainer(2)
        .accumulate_grad_batches(3)
        .fit(&mut accumulated, &mut Adam::new(1e-2), &data)
        .expect("fit with accumulation");
    let rank0 = read_floats(&out.join("accumulated-0"));
    assert_eq!(rank0, read_floats(&out.join("accumulated-1")));
    let diff = max_difference(&rank0, &params(&accumulated));
    assert!(
        diff < 1e-4,
        "accumulation: 2 ranks vs 1 process differ by {diff}"
    );

    // The hand-written loop: SGD with momentum over uneven shards.
    let mut single = model(10);
    hand_loop(&mut single, &data, 2, None);
    let (rank0, rank1) = (
        read_floats(&out.join("loop-0")),
        read_floats(&out.join("loop-1")),
    );
    assert_eq!(rank0, rank1);
    let diff = max_difference(&rank0, &params(&single));
    assert!(diff < 1e-5, "loop: 2 ranks vs 1 process differ by {diff}");
    // Summing during the backward pass changes no bit, whatever the buckets.
    for name in ["overlap-64", "overlap-default"] {
        assert_eq!(read_floats(&out.join(format!("{name}-0"))), rank0, "{name}");
        assert_eq!(read_floats(&out.join(format!("{name}-1"))), rank0, "{name}");
    }

    // Only rank 0 wrote a checkpoint; resuming it on one process for a third epoch gives the
    // 3-epoch model.
    assert!(!out.join("ckpt-1").exists(), "rank 1 wrote a checkpoint");
    let mut resumed = model(99);
    trainer(3)
        .resume_from(out.join("ckpt-0"))
        .fit(&mut resumed, &mut Adam::new(1e-2), &data)
        .expect("resume on one process");
    let diff = max_difference(&params(&resumed), &params(&single_trainer_run()));
    assert!(
        diff < 1e-4,
        "resumed on 1 rank vs 1 process differ by {diff}"
    );
}

fn single_trainer_run() -> Mlp<f32> {
    let mut single = model(1);
    trainer(3)
        .fit(&mut single, &mut Adam::new(1e-2), &dataset())
        .expect("fit");
    single
}

#[test]
fn a_rank_that_dies_ends_the_job_with_an_error() {
    let out = scratch("die");
    let output = mpirun("die", &out, &[]);
    let report = text(&output);
    assert!(!output.status.success(), "{report}");
    assert_ne!(output.status.code(), Some(124), "the job hung: {report}");
    assert!(!out.join("finished-0").exists(), "{report}");
    // Open MPI names the rank that died and the signal.
    assert!(
        report.contains("rank 1") && report.contains("signal 9"),
        "{report}"
    );
}

#[test]
fn a_rank_that_hangs_ends_the_job_at_the_timeout() {
    let out = scratch("stall");
    let output = mpirun("stall", &out, &[("KILN_MPI_TIMEOUT", "2")]);
    let report = text(&output);
    assert!(!output.status.success(), "{report}");
    assert_ne!(output.status.code(), Some(124), "the job hung: {report}");
    assert!(
        report.contains("kiln::distributed: rank 0 of 2: a gradient/metric all-reduce")
            && report.contains("did not complete within 2 s"),
        "{report}"
    );
    assert!(!out.join("finished-0").exists(), "{report}");
}

#[test]
fn a_rank_that_hangs_during_an_overlapped_step_ends_the_job_at_the_timeout() {
    let out = scratch("stall-overlapped");
    let output = mpirun("stall-overlapped", &out, &[("KILN_MPI_TIMEOUT", "2")]);
    let report = text(&output);
    assert!(!output.status.success(), "{report}");
    assert_ne!(output.status.code(), Some(124), "the job hung: {report}");
    assert!(
        report.contains("kiln::distributed: rank 0 of 2: a gradient bucket all-reduce")
            && report.contains("did not complete within 2 s"),
        "{report}"
    );
    assert!(!out.join("finished-0").exists(), "{report}");
}

#[test]
fn a_rank_that_panics_aborts_the_job() {
    let out = scratch("panic");
    let output = mpirun("panic", &out, &[]);
    let report = text(&output);
    assert!(!output.status.success(), "{report}");
    assert_ne!(output.status.code(), Some(124), "the job hung: {report}");
    assert!(
        report.contains("rank 1 gives up")
            && report.contains("kiln::distributed: rank 1 of 2 panicked; aborting every rank"),
        "{report}"
    );
    assert!(!out.join("finished-0").exists(), "{report}");
}
