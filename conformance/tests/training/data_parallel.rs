//! Data-parallel training without MPI: `Trainer::distributed` and `DataParallel` over an
//! in-process communicator whose ranks are threads. This runs in the default test suite (no
//! Open MPI needed); `tests/distributed.rs` (`--features mpi`) does the same across processes
//! under `mpirun`.

use crate::common::{params, TinyGpt};
use kiln::data::TensorDataset;
use kiln::distributed::{Communicator, DataParallel, SingleProcess};
use kiln::ndarray::{Array1, Array2};
use kiln::rand::rngs::StdRng;
use kiln::rand::{RngExt, SeedableRng};
use kiln::train::{Checkpoint, History, Metric, Trainer};
use kiln::{Adam, Model, Result};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};

/// The shared state of a group of thread ranks: one slot per rank, and a barrier.
struct Group {
    slots: Mutex<Vec<Vec<f64>>>,
    barrier: Barrier,
    /// The f32 sums rank 0 has taken (gradient sums: a model's buckets, batch-norm buffers).
    f32_sums: AtomicUsize,
}

/// One rank of a [`Group`]. Sums are taken in f64 in rank order, so every rank gets the same
/// result.
struct ThreadRank {
    rank: usize,
    size: usize,
    group: Arc<Group>,
}

/// Runs `rank(comm)` on each of `size` thread ranks of one group, and returns their results
/// in rank order.
fn on_thread_ranks<T: Send>(size: usize, rank: impl Fn(&ThreadRank) -> T + Sync) -> Vec<T> {
    let ranks = group(size);
    std::thread::scope(|s| {
        let handles: Vec<_> = ranks
            .iter()
            .map(|comm| {
                let rank = &rank;
                s.spawn(move || rank(comm))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("rank"))
            .collect()
    })
}

fn group(size: usize) -> Vec<ThreadRank> {
    let group = Arc::new(Group {
        slots: Mutex::new(vec![Vec::new(); size]),
        barrier: Barrier::new(size),
        f32_sums: AtomicUsize::new(0),
    });
    (0..size)
        .map(|rank| ThreadRank {
            rank,
            size,
            group: Arc::clone(&group),
        })
        .collect()
}

impl ThreadRank {
    fn exchange(&self, mine: Vec<f64>, combine: impl FnOnce(&[Vec<f64>]) -> Vec<f64>) -> Vec<f64> {
        self.group.slots.lock().expect("slots")[self.rank] = mine;
        self.group.barrier.wait();
        let out = combine(&self.group.slots.lock().expect("slots"));
        // Nobody writes the next operation's slot before everyone has read this one.
        self.group.barrier.wait();
        out
    }

    fn sum(&self, send: Vec<f64>) -> Vec<f64> {
        self.exchange(send, |slots| {
            let mut total = vec![0.0; slots[0].len()];
            for slot in slots {
                for (t, v) in total.iter_mut().zip(slot) {
                    *t += v;
                }
            }
            total
        })
    }
}

impl Communicator for ThreadRank {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn all_reduce_sum_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        if self.rank == 0 {
            self.group.f32_sums.fetch_add(1, Ordering::Relaxed);
        }
        let total = self.sum(send.iter().map(|&v| f64::from(v)).collect());
        for (r, t) in recv.iter_mut().zip(total) {
            *r = t as f32;
        }
        Ok(())
    }
    fn all_reduce_sum_f64(&self, send: &[f64], recv: &mut [f64]) -> Result<()> {
        recv.copy_from_slice(&self.sum(send.to_vec()));
        Ok(())
    }
    fn broadcast_f32(&self, buffer: &mut [f32]) -> Result<()> {
        let mine = buffer.iter().map(|&v| f64::from(v)).collect();
        let root = self.exchange(mine, |slots| slots[0].clone());
        for (b, r) in buffer.iter_mut().zip(root) {
            *b = r as f32;
        }
        Ok(())
    }
    fn broadcast_f64(&self, buffer: &mut [f64]) -> Result<()> {
        buffer.copy_from_slice(&self.exchange(buffer.to_vec(), |slots| slots[0].clone()));
        Ok(())
    }
}

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

/// 103 samples: the last batch of 20 has 3, fewer than some of the groups' ranks.
fn dataset() -> TensorDataset<f32> {
    let mut rng = StdRng::seed_from_u64(3);
    let x = Array2::from_shape_simple_fn((103, 12), || rng.random_range(-1.0f32..1.0));
    let y = Array1::from_shape_fn(103, |i| {
        usize::from(x[[i, 0]] + x[[i, 1]] > 0.0) + usize::from(x[[i, 2]] > 0.5)
    });
    TensorDataset::with_labels(x, y, 3).expect("dataset")
}

fn model(seed: u64) -> Mlp<f32> {
    Mlp::new(&mut kiln::rand::rngs::StdRng::seed_from_u64(seed))
}

fn max_difference(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / x.abs().max(y.abs()).max(1.0))
        .fold(0.0, f32::max)
}

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("data_parallel-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

fn trainer<'a>(epochs: usize) -> Trainer<'a, f32> {
    Trainer::new(epochs, 20).shuffle_seed(5).progress(false)
}

/// Trains on `ranks` threads, rank r from seed `1 + r`, and returns each rank's weights and
/// epoch losses. With `checkpoints`, each rank is given `dir/rank-r`.
fn train_on_threads(
    ranks: usize,
    epochs: usize,
    checkpoints: Option<&PathBuf>,
    resume: Option<&PathBuf>,
) -> Vec<(Vec<f32>, Vec<f64>)> {
    let data = dataset();
    on_thread_ranks(ranks, |comm| {
        let mut m = model(1 + comm.rank() as u64);
        let mut t = trainer(epochs).distributed(comm);
        if let Some(dir) = checkpoints {
            t = t.checkpoints(dir.join(format!("rank-{}", comm.rank())));
        }
        if let Some(dir) = resume {
            t = t.resume_from(dir);
        }
        let history = t.fit(&mut m, &mut Adam::new(1e-2), &data).expect("fit");
        let losses = history.epochs.iter().map(|e| e.train_loss).collect();
        (params(&m), losses)
    })
}

#[test]
fn three_thread_ranks_train_the_model_of_one_process() {
    let data = dataset();
    let mut single = model(1);
    let history = trainer(3)
        .fit(&mut single, &mut Adam::new(1e-2), &data)
        .expect("fit");
    let single_losses: Vec<f64> = history.epochs.iter().map(|e| e.train_loss).collect();
    let ranks = train_on_threads(3, 3, None, None);
    for (weights, losses) in &ranks {
        assert_eq!(weights, &ranks[0].0, "every rank holds the same weights");
        let diff = max_difference(weights, &params(&single));
        assert!(diff < 1e-4, "3 ranks vs 1 process: {diff}");
        for (a, b) in losses.iter().zip(&single_losses) {
            assert!((a - b).abs() < 1e-5, "{losses:?} vs {single_losses:?}");
        }
    }
    assert_ne!(params(&single), params(&model(1)));
}

/// `Trainer::ema` under data parallelism: each rank averages the same weights, so every rank
/// ends with the average one process keeps (to the sums' rounding).
#[test]
fn thread_ranks_keep_the_moving_average_of_one_process() {
    let data = dataset();
    let mut single = model(1);
    trainer(3)
        .ema(0.9)
        .fit(&mut single, &mut Adam::new(1e-2), &data)
        .expect("fit");
    let mut plain = model(1);
    trainer(3)
        .fit(&mut plain, &mut Adam::new(1e-2), &data)
        .expect("fit");
    let ranks = on_thread_ranks(2, |comm| {
        let mut m = model(1 + comm.rank() as u64);
        trainer(3)
            .ema(0.9)
            .distributed(comm)
            .fit(&mut m, &mut Adam::new(1e-2), &data)
            .expect("fit");
        params(&m)
    });
    for weights in &ranks {
        assert_eq!(weights, &ranks[0], "every rank holds the same average");
        let diff = max_difference(weights, &params(&single));
        assert!(diff < 1e-4, "2 ranks vs 1 process: {diff}");
    }
    assert!(max_difference(&params(&single), &params(&plain)) > 1e-3);
}

/// The metrics of the training batches are counted on each rank's piece of every batch and
/// summed across the ranks at the end of the epoch: every rank reports the figures of one
/// process that trains on the whole batches.
#[test]
fn metrics_summed_over_thread_ranks_are_those_of_one_process() {
    let data = dataset();
    let metrics = [
        Metric::MacroF1,
        Metric::MacroPrecision,
        Metric::TopKAccuracy(2),
    ];
    let with_metrics = || trainer(3).validation(&data).metrics(metrics);
    let single = with_metrics()
        .fit(&mut model(1), &mut Adam::new(1e-2), &data)
        .expect("fit");
    let ranks: Vec<History> = on_thread_ranks(3, |comm| {
        let mut m = model(1 + comm.rank() as u64);
        with_metrics()
            .distributed(comm)
            .fit(&mut m, &mut Adam::new(1e-2), &dataset())
            .expect("fit")
    });
    for history in &ranks {
        for (r, one) in history.epochs.iter().zip(&single.epochs) {
            assert_eq!(r.train_metrics, ranks[0].epochs[r.epoch].train_metrics);
            assert_eq!(
                r.train_metrics.names().collect::<Vec<_>>(),
                ["f1", "precision", "top_2_accuracy"]
            );
            for (name, value) in r.train_metrics.iter().chain(r.val_metrics.iter()) {
                let want = one.metric(name).expect("the same metrics");
                assert!(
                    (value - want).abs() < 1e-12,
                    "epoch {}: {name} {value} on 3 ranks, {want} in one process",
                    r.epoch
                );
            }
            assert_eq!(r.train_accuracy, one.train_accuracy);
        }
    }
}

#[test]
fn a_run_checkpointed_on_three_ranks_resumes_on_two() {
    let dir = scratch("resume");
    train_on_threads(3, 2, Some(&dir), None);
    assert!(Checkpoint::<f32>::exists(dir.join("rank-0")));
    assert!(!dir.join("rank-1").exists() && !dir.join("rank-2").exists());
    let resumed = train_on_threads(2, 4, None, Some(&dir.join("rank-0")));
    let mut single = model(1);
    trainer(4)
        .fit(&mut single, &mut Adam::new(1e-2), &dataset())
        .expect("fit");
    let diff = max_difference(&resumed[0].0, &params(&single));
    assert!(diff < 1e-4, "3 then 2 ranks vs 1 process: {diff}");
    assert_eq!(resumed[0].0, resumed[1].0);
}

/// One batch's gradients of a fresh model, flattened.
fn gradients(m: &mut Mlp<f32>, samples: usize) -> (<Mlp<f32> as Model<f32>>::Grads, Vec<f32>) {
    let data = dataset();
    let mut ws = m.workspace();
    let mut grads = m.zero_grads();
    let x = data
        .features()
        .slice(kiln::ndarray::s![..samples, ..])
        .to_owned()
        .into_dimensionality::<kiln::ndarray::Ix2>()
        .expect("2-d");
    let y = data
        .labels()
        .expect("labels")
        .slice(kiln::ndarray::s![..samples])
        .to_owned();
    m.loss_and_grad(x.view(), y.view(), &mut ws, &mut grads)
        .expect("step");
    let mut flat = Vec::new();
    Mlp::visit_grads(&grads, &mut |_, g| flat.extend(g.iter().copied()));
    (grads, flat)
}

#[test]
fn a_single_process_group_leaves_gradients_unchanged() {
    let mut m = model(4);
    let (mut grads, before) = gradients(&mut m, 7);
    let mut dp = DataParallel::new(&SingleProcess, &mut m).expect("data parallel");
    assert_eq!(dp.all_reduce_grads(&mut grads, 7).expect("sum"), 7);
    let mut after = Vec::new();
    Mlp::visit_grads(&grads, &mut |_, g| after.extend(g.iter().copied()));
    assert_eq!(before, after);
    assert_eq!(dp.bytes_per_step(), (m.num_params() + 1) * 4);
}

#[test]
fn a_rank_with_an_empty_shard_contributes_nothing() {
    let results: Vec<(usize, Vec<f32>, Vec<f32>)> = on_thread_ranks(2, |comm| {
        let mut m = model(4);
        let (mut grads, own) = gradients(&mut m, 7);
        let mut dp = DataParallel::new(comm, &mut m).expect("data parallel");
        let local = if comm.rank() == 0 {
            // A stale gradient that must not leak into the sum.
            Mlp::visit_grads_mut(&mut grads, &mut |_, mut g| g.fill(f32::NAN));
            0
        } else {
            7
        };
        let global = dp.all_reduce_grads(&mut grads, local).expect("sum");
        let mut flat = Vec::new();
        Mlp::visit_grads(&grads, &mut |_, g| flat.extend(g.iter().copied()));
        (global, flat, own)
    });
    for (global, summed, _) in &results {
        assert_eq!(*global, 7);
        // Rank 1's mean gradient, scaled by 7 and back: equal up to rounding.
        assert!(max_difference(summed, &results[1].2) < 1e-6);
    }
}

/// The rows `rows` of the data set: features and labels.
fn rows_of(rows: std::ops::Range<usize>) -> (kiln::ndarray::Array2<f32>, Array1<usize>) {
    let data = dataset();
    let x = data
        .features()
        .slice(kiln::ndarray::s![rows.clone(), ..])
        .to_owned()
        .into_dimensionality::<kiln::ndarray::Ix2>()
        .expect("2-d");
    let y = data
        .labels()
        .expect("labels")
        .slice(kiln::ndarray::s![rows])
        .to_owned();
    (x, y)
}

/// The mean gradient of `m` over the rows `rows` of the data set, flat.
fn rows_gradient(m: &mut Mlp<f32>, rows: std::ops::Range<usize>) -> Vec<f32> {
    let (x, y) = rows_of(rows);
    let mut grads = m.zero_grads();
    m.loss_and_grad(x.view(), y.view(), &mut m.workspace(), &mut grads)
        .expect("step");
    let mut flat = Vec::new();
    Mlp::visit_grads(&grads, &mut |_, g| flat.extend(g.iter().copied()));
    flat
}

/// Steps without a sum (PyTorch's `no_sync`) are kept and added into the next summed step:
/// its gradients are the mean over every sample of all those steps on every rank, on a
/// group of two thread ranks (rank 0 empty in the summed step) and on a single process.
#[test]
fn steps_without_a_sum_join_the_next_sum() {
    // Rank 0: rows 0..5 unsummed, none summed; rank 1: rows 5..12 unsummed, 12..16 summed.
    let pieces = [(0..5, 5..5), (5..12, 12..16)];
    let expected = rows_gradient(&mut model(4), 0..16);
    let results: Vec<(usize, Vec<f32>)> = on_thread_ranks(2, |comm| {
        let (unsummed, summed) = pieces[comm.rank()].clone();
        let mut m = model(4);
        let mut dp = DataParallel::new(comm, &mut m).expect("data parallel");
        let mut ws = m.workspace();
        let mut grads = m.zero_grads();
        let (x, y) = rows_of(unsummed.clone());
        let loss = dp
            .train_batch_no_sync(
                &mut m,
                x.view().into_dyn(),
                kiln::TargetView::Labels(y.view()),
                &mut ws,
                &mut grads,
                unsummed.len(),
            )
            .expect("step without a sum");
        assert!(loss.is_some());
        let (x, y) = rows_of(summed.clone());
        let (_, global) = dp
            .train_batch(
                &mut m,
                x.view().into_dyn(),
                kiln::TargetView::Labels(y.view()),
                &mut ws,
                &mut grads,
                summed.len(),
            )
            .expect("summed step");
        let mut flat = Vec::new();
        Mlp::visit_grads(&grads, &mut |_, g| flat.extend(g.iter().copied()));
        (global, flat)
    });
    for (global, summed) in &results {
        assert_eq!(*global, 16);
        let diff = max_difference(summed, &expected);
        assert!(diff < 1e-5, "two ranks: {diff}");
    }
    // One process: three unsummed steps, then the summed one (all_reduce_grads).
    let mut m = model(4);
    let mut dp = DataParallel::new(&SingleProcess, &mut m).expect("data parallel");
    let (mut ws, mut grads) = (m.workspace(), m.zero_grads());
    for rows in [0..4, 4..9, 9..13] {
        let (x, y) = rows_of(rows.clone());
        let targets = kiln::TargetView::Labels(y.view());
        dp.train_batch_no_sync(
            &mut m,
            x.view().into_dyn(),
            targets,
            &mut ws,
            &mut grads,
            rows.len(),
        )
        .expect("step without a sum");
    }
    let (x, y) = rows_of(13..16);
    m.loss_and_grad(x.view(), y.view(), &mut ws, &mut grads)
        .expect("step");
    assert_eq!(dp.all_reduce_grads(&mut grads, 3).expect("sum"), 16);
    let mut flat = Vec::new();
    Mlp::visit_grads(&grads, &mut |_, g| flat.extend(g.iter().copied()));
    let diff = max_difference(&flat, &expected);
    assert!(diff < 1e-5, "one process: {diff}");
}

/// `accumulate_grad_batches` on thread ranks: each group of batches is summed over the ranks
/// once, in its last batch, and the weights are those of one process accumulating alike (103
/// samples in batches of 20, groups of 4: the second group is 20 + 3 samples).
#[test]
fn accumulated_batches_are_summed_once_per_group() {
    let data = dataset();
    let epochs = 3;
    let accumulating = || trainer(epochs).accumulate_grad_batches(4);
    let mut single = model(1);
    accumulating()
        .fit(&mut single, &mut Adam::new(1e-2), &data)
        .expect("fit");
    let ranks = on_thread_ranks(3, |comm| {
        let mut m = model(1 + comm.rank() as u64);
        accumulating()
            .distributed(comm)
            .fit(&mut m, &mut Adam::new(1e-2), &data)
            .expect("fit");
        // Every sum has been taken once this rank's training returns.
        (params(&m), comm.group.f32_sums.load(Ordering::Relaxed))
    });
    for (w, _) in &ranks {
        let diff = max_difference(w, &params(&single));
        assert!(diff < 1e-4, "3 ranks vs 1 process: {diff}");
    }
    // Six batches an epoch in two groups: two gradient sums an epoch (one bucket), not six.
    assert_eq!(ranks[0].1, epochs * 2);
}

kiln::model! {
    /// With batch normalisation: running statistics as buffers.
    pub struct BnMlp {
        input x: [B, 12];
        target y: [B] classes 3;
        let z = linear(x, 16);
        let h = relu(batch_norm(z));
        let logits = linear(h, 3);
        output logits;
        loss cross_entropy(logits, y);
    }
}

fn buffers<M: Model<f32>>(model: &M) -> Vec<f32> {
    let mut all = Vec::new();
    model.visit_buffers(&mut |_, view| all.extend(view.iter().copied()));
    all
}

#[test]
fn batch_norm_running_statistics_are_averaged_over_the_ranks() {
    let data = dataset();
    let results: Vec<(Vec<f32>, Vec<f32>)> = on_thread_ranks(2, |comm| {
        let mut m = BnMlp::<f32>::new(&mut StdRng::seed_from_u64(1));
        let mut dp = DataParallel::new(comm, &mut m).expect("data parallel");
        // Rank r's statistics all r + 1: the average is 1.5 everywhere.
        let value = comm.rank() as f32 + 1.0;
        m.visit_buffers_mut(&mut |_, mut b| b.fill(value));
        dp.average_buffers(&mut m).expect("average");
        let averaged = buffers(&m);
        // Through the Trainer (pieces of 10: batch norm needs 2 samples a piece).
        let mut m = BnMlp::<f32>::new(&mut StdRng::seed_from_u64(1));
        trainer(2)
            .drop_last(true)
            .distributed(comm)
            .fit(&mut m, &mut Adam::new(1e-2), &data)
            .expect("fit");
        (averaged, buffers(&m))
    });
    for (averaged, trained) in &results {
        assert!(!averaged.is_empty() && averaged.iter().all(|&v| v == 1.5));
        assert_eq!(
            trained, &results[0].1,
            "the ranks' running statistics agree"
        );
    }
    let fresh = buffers(&BnMlp::<f32>::new(&mut StdRng::seed_from_u64(1)));
    assert_ne!(
        results[0].1, fresh,
        "training updated the running statistics"
    );
}

/// Rank r's piece of the first 11 samples: 6, 5 and 0 (an empty shard) on 3 ranks.
fn piece(rank: usize) -> std::ops::Range<usize> {
    [0..6, 6..11, 11..11][rank].clone()
}

fn flat(grads: &<Mlp<f32> as Model<f32>>::Grads) -> Vec<f32> {
    let mut all = Vec::new();
    Mlp::visit_grads(grads, &mut |_, g| all.extend(g.iter().copied()));
    all
}

/// A rank's gradients summed after and during the backward pass, its loss during and after,
/// and its bucket count.
type RankStep = (Vec<f32>, Vec<f32>, Option<f32>, f32, usize);

/// `DataParallel::train_batch` (buckets summed as the backward pass reports them) against
/// the backward pass followed by `all_reduce_grads`: the same bits, on every bucket size
/// (64 bytes cuts every weight matrix across buckets; the default holds the model in one),
/// with an empty shard whose stale gradients are NaN.
#[test]
fn summing_buckets_during_backward_equals_summing_after_it() {
    let data = dataset();
    let x = data.features().to_owned();
    let y = data.labels().expect("labels").to_owned();
    for bucket_bytes in [64, 1000, kiln::distributed::DEFAULT_BUCKET_BYTES] {
        let results: Vec<RankStep> = on_thread_ranks(3, |comm| {
            let mut m = model(4);
            let mut dp = DataParallel::new(comm, &mut m)
                .expect("data parallel")
                .bucket_bytes(bucket_bytes);
            let buckets = dp.buckets();
            let r = piece(comm.rank());
            let xs = x.slice(kiln::ndarray::s![r.clone(), ..]).into_dyn();
            let ys = y.slice(kiln::ndarray::s![r.clone()]);
            let target = || kiln::TargetView::Labels(ys);
            let mut ws = m.workspace();
            // After the backward pass.
            let mut grads = m.zero_grads();
            Mlp::visit_grads_mut(&mut grads, &mut |_, mut g| g.fill(f32::NAN));
            let mut loss_after = f32::NAN;
            if !r.is_empty() {
                loss_after =
                    kiln::Supervised::train_batch(&mut m, xs.view(), target(), &mut ws, &mut grads)
                        .expect("step");
            }
            let global = dp.all_reduce_grads(&mut grads, r.len()).expect("sum");
            let after = flat(&grads);
            // During it.
            let mut grads = m.zero_grads();
            Mlp::visit_grads_mut(&mut grads, &mut |_, mut g| g.fill(f32::NAN));
            let (loss, overlapped_global) = dp
                .train_batch(&mut m, xs.view(), target(), &mut ws, &mut grads, r.len())
                .expect("overlapped step");
            assert_eq!(overlapped_global, global);
            assert_eq!(dp.steps(), 2);
            (after, flat(&grads), loss, loss_after, buckets)
        });
        for (rank, (after, during, loss, loss_after, buckets)) in results.iter().enumerate() {
            assert_eq!(
                after, during,
                "rank {rank}, buckets of {bucket_bytes} bytes"
            );
            assert!(during.iter().all(|v| v.is_finite()));
            assert_eq!(after, &results[0].0, "every rank holds the same sum");
            match rank {
                2 => assert_eq!(*loss, None, "an empty shard runs no pass"),
                _ => assert_eq!(*loss, Some(*loss_after)),
            }
            let expected = match bucket_bytes {
                64 => (12 * 24 + 24 + 24 * 3 + 3 + 1usize).div_ceil(16),
                1000 => 2,
                _ => 1,
            };
            assert_eq!(*buckets, expected);
        }
        // The sum equals one process's gradient on the 11 samples, up to rounding.
        let mut m = model(4);
        let (_, single) = gradients(&mut m, 11);
        assert!(max_difference(&results[0].1, &single) < 1e-5);
    }
}

/// Records every report: (index, values).
#[derive(Default)]
struct Recorder(Vec<(usize, Vec<f32>)>);

impl kiln::GradSink<f32> for Recorder {
    fn ready(&mut self, index: usize, grad: &[f32]) {
        self.0.push((index, grad.to_vec()));
    }
}

fn tokens(rank: usize) -> (kiln::ndarray::Array2<usize>, kiln::ndarray::Array2<usize>) {
    let mut rng = StdRng::seed_from_u64(7 + rank as u64);
    let mut draw =
        || kiln::ndarray::Array2::from_shape_simple_fn((3, 6), || rng.random_range(0..11usize));
    (draw(), draw())
}

/// The generated backward pass reports every gradient exactly once, with its final value,
/// the last layer first and the tied embedding (written again by the head) last; and
/// summing buckets as the reports arrive equals summing after the backward pass.
#[test]
fn the_backward_pass_reports_each_final_gradient_once() {
    let mut m = TinyGpt::<f32>::new(&mut StdRng::seed_from_u64(2));
    let (x, y) = tokens(0);
    let (mut ws, mut grads, mut rec) = (m.workspace(), m.zero_grads(), Recorder::default());
    m.loss_and_grad_notify(x.view(), y.view(), &mut ws, &mut grads, Some(&mut rec))
        .expect("step");
    let mut expected = Vec::new();
    TinyGpt::visit_grads_indexed(&grads, &mut |i, g| expected.push((i, g.to_vec())));
    let mut reported = rec.0.clone();
    reported.sort_by_key(|r| r.0);
    assert_eq!(
        reported, expected,
        "every gradient once, with its final value"
    );
    assert!(expected.len() > 10);
    let order: Vec<usize> = rec.0.iter().map(|r| r.0).collect();
    assert_eq!(order.last(), Some(&0), "wte.weight last: {order:?}");
    assert!(
        order[0] > order[order.len() / 2],
        "last layer first: {order:?}"
    );

    let results: Vec<(Vec<f32>, Vec<f32>)> = on_thread_ranks(2, |comm| {
        let mut m = TinyGpt::<f32>::new(&mut StdRng::seed_from_u64(2));
        let mut dp = DataParallel::new(comm, &mut m)
            .expect("data parallel")
            .bucket_bytes(40);
        let (x, y) = tokens(comm.rank());
        let (mut ws, mut grads) = (m.workspace(), m.zero_grads());
        m.loss_and_grad(x.view(), y.view(), &mut ws, &mut grads)
            .expect("step");
        dp.all_reduce_grads(&mut grads, 3).expect("sum");
        let mut after = Vec::new();
        TinyGpt::visit_grads(&grads, &mut |_, g| after.extend(g.iter().copied()));
        let mut grads = m.zero_grads();
        dp.overlap_backward(&mut grads, 3, |g, sink| {
            m.loss_and_grad_notify(x.view(), y.view(), &mut ws, g, Some(sink))
        })
        .expect("overlapped step");
        let mut during = Vec::new();
        TinyGpt::visit_grads(&grads, &mut |_, g| during.extend(g.iter().copied()));
        (after, during)
    });
    for (after, during) in &results {
        assert_eq!(after, during);
        assert_eq!(after, &results[0].0);
    }
}

kiln::model! {
    /// A token tagger: every position gets one of 4 tags.
    pub struct Tagger {
        input tokens: [B, T] tokens 30;
        target tags: [B, T] classes 4;
        let e = embedding(tokens, 12);
        let h = tanh(linear(e, 16));
        let logits = linear(h, 4);
        output logits;
        loss cross_entropy(logits, tags);
    }
}

/// 43 sequences of 6 tokens, each tagged with its id modulo 4, or 3 where the token before it
/// is even (something to learn beyond the token itself): a batch source for `fit_batches`.
struct TaggedSequences;

impl kiln::data::BatchSource<f32> for TaggedSequences {
    fn len(&self) -> usize {
        43
    }
    fn served(&self) -> Vec<kiln::data::ServedArg> {
        use kiln::data::{ServedArg, ServedKind};
        vec![
            ServedArg::new("tokens", ServedKind::Tokens { vocab: Some(30) }, 2),
            ServedArg::new("tags", ServedKind::Labels { classes: None }, 2),
        ]
    }
    fn fill(&self, indices: &[usize], batch: &mut Vec<kiln::BatchArray<f32>>) -> Result<()> {
        let token = |i: usize, t: usize| (i * 11 + t * 5) % 30;
        let tokens = Array2::from_shape_fn((indices.len(), 6), |(b, t)| token(indices[b], t));
        let tags = Array2::from_shape_fn((indices.len(), 6), |(b, t)| {
            if t > 0 && token(indices[b], t - 1) % 2 == 0 {
                3
            } else {
                token(indices[b], t) % 4
            }
        });
        *batch = vec![
            kiln::BatchArray::Ids(tokens.into_dyn()),
            kiln::BatchArray::Ids(tags.into_dyn()),
        ];
        Ok(())
    }
}

/// `fit_batches` across thread ranks follows the run of one process, as `fit` does: each rank
/// trains on its piece of every batch (the last batch of 3 leaves a rank of four empty). Each
/// rank's mean loss is weighted by its samples, which is the one process's mean here (every
/// sequence has 6 counted positions); with an `ignore_index` the ranks' counted positions
/// differ and the result is DDP's, not one process's (see `Trainer::distributed`).
#[test]
fn fit_batches_on_four_thread_ranks_trains_the_model_of_one_process() {
    let tagger = |seed: u64| Tagger::<f32>::new(&mut StdRng::seed_from_u64(seed));
    let trainer = |epochs| Trainer::new(epochs, 8).shuffle_seed(2).progress(false);
    let mut single = tagger(1);
    let history = trainer(3)
        .fit_batches(&mut single, &mut Adam::new(1e-2), &TaggedSequences)
        .expect("fit_batches");
    let ranks: Vec<(Vec<f32>, Vec<f64>, Option<f64>)> = on_thread_ranks(4, |comm| {
        let mut m = tagger(1 + comm.rank() as u64);
        let history = trainer(3)
            .distributed(comm)
            .fit_batches(&mut m, &mut Adam::new(1e-2), &TaggedSequences)
            .expect("fit_batches on a rank");
        let losses = history.epochs.iter().map(|e| e.train_loss).collect();
        let accuracy = history.last().and_then(|e| e.train_accuracy);
        (params(&m), losses, accuracy)
    });
    let single_losses: Vec<f64> = history.epochs.iter().map(|e| e.train_loss).collect();
    let expected = history
        .last()
        .and_then(|e| e.train_accuracy)
        .expect("labels give an accuracy");
    for (weights, losses, accuracy) in &ranks {
        assert_eq!(weights, &ranks[0].0, "every rank holds the same weights");
        let diff = max_difference(weights, &params(&single));
        assert!(diff < 1e-4, "4 ranks vs 1 process: {diff}");
        for (a, b) in losses.iter().zip(&single_losses) {
            assert!((a - b).abs() < 1e-5, "{losses:?} vs {single_losses:?}");
        }
        // Accuracy over labelled positions, summed across the ranks.
        assert_eq!(*accuracy, Some(expected));
    }
    assert_ne!(params(&single), params(&tagger(1)));
}

/// An epoch callback that breaks on one rank only (rank 1, after the second epoch) ends
/// training on every rank there: no rank waits for the others in the next epoch's sums.
#[test]
fn one_ranks_callback_ends_training_on_every_rank() {
    let epochs: Vec<usize> = on_thread_ranks(3, |comm| {
        let rank = comm.rank();
        let mut m = model(1);
        let history = trainer(6)
            .distributed(comm)
            .on_epoch_end(|record| {
                if rank == 1 && record.epoch == 1 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .fit(&mut m, &mut Adam::new(1e-2), &dataset())
            .expect("fit");
        history.len()
    });
    assert_eq!(epochs, [2, 2, 2]);
}
