//! What the training loop needs from its data and model, in two forms: a [`Supervised`] model
//! on a [`Dataset`] ([`DatasetFeed`], `Trainer::fit`) and a [`Trainable`] model on a
//! [`BatchSource`] ([`BatchFeed`], `Trainer::fit_batches`). The loop itself (schedules,
//! clipping, early stopping, checkpoints, progress) is written once against [`Feed`].

use super::metric::MetricCounts;
use super::metrics::{
    add_supervised, add_trainable, batch_accuracy, batch_targets, count_correct,
    evaluate_batches_counting, evaluate_counting, label_target,
};
use super::{check_compatible, Metrics, MetricsAccumulator};
use crate::data::{
    Augment, Batch, BatchSource, DataLoader, Dataset, Epoch, IndexBatches, ServedKind,
};
use crate::distributed::{Communicator, DataParallel};
use crate::trainable::{ArgKind, BatchArray, Trainable};
use crate::{Error, Float, Model, Result, Supervised};

/// One training batch's outcome.
pub(super) struct Trained<F> {
    /// The batch's mean loss (`None`: this rank's piece of the batch was empty).
    pub loss: Option<F>,
    /// The samples in the batch (this rank's piece).
    pub samples: usize,
    /// Correct predictions and labelled positions counted, for class labels.
    pub correct_of: Option<(usize, usize)>,
}

/// A model and its data, as the training loop drives them.
pub(super) trait Feed<F: Float, M: Model<F>> {
    /// The model's workspace.
    type Workspace: Default;
    /// The class count and ignored label of the model's class-label target, if it has one.
    fn labels(&self) -> Option<(usize, Option<usize>)>;
    /// Checks the data against the model, and `counts`' metrics against the model's output
    /// for one training sample, before anything is trained or loaded. Leaves `counts` empty.
    fn check(&mut self, model: &M, counts: &mut MetricCounts) -> Result<()>;
    /// Called once the starting weights are in place (data parallelism broadcasts them).
    fn begin(&mut self, model: &mut M) -> Result<()>;
    /// The number of batches per epoch.
    fn num_batches(&self) -> usize;
    /// Starts serving epoch `epoch`'s batches.
    fn start_epoch(&mut self, epoch: usize);
    /// Fetches the next batch; `false` at the end of the epoch.
    fn next_batch(&mut self) -> Result<bool>;
    /// Trains on the fetched batch: overwrites `grads`, adds the batch to `counts`. Without
    /// `sync` (a batch of an accumulated group before its last), a data-parallel feed keeps
    /// this rank's gradients for the group's last batch, which sums them all over the ranks
    /// ([`DataParallel::train_batch_no_sync`]).
    fn train(
        &mut self,
        model: &mut M,
        ws: &mut Self::Workspace,
        grads: &mut M::Grads,
        counts: &mut MetricCounts,
        sync: bool,
    ) -> Result<Trained<F>>;
    /// Whether the feed sums an accumulated group's gradients itself (data parallelism):
    /// the group's last `train` then leaves the mean over all its samples in `grads`.
    fn sums_accumulated(&self) -> bool;
    /// The epoch's metrics, once the epoch's batches are done (summed across ranks, `counts`
    /// too).
    fn end_epoch(
        &mut self,
        model: &mut M,
        acc: MetricsAccumulator,
        counts: &mut MetricCounts,
    ) -> Result<MetricsAccumulator>;
    /// The validation metrics, if there is validation data; `counts` is reset and counts the
    /// validation data.
    fn evaluate(&mut self, model: &M, counts: &mut MetricCounts) -> Result<Option<Metrics>>;
    /// Reseeds the workspace's dropout generator.
    fn reseed(ws: &mut Self::Workspace, seed: u64);
    /// Turns the per-op finiteness check on or off.
    fn check_finite(ws: &mut Self::Workspace, on: bool);
    /// Marks the parameters that need no gradient.
    fn freeze(ws: &mut Self::Workspace, frozen: &dyn Fn(&str) -> bool);
}

/// The error for validation data whose first sample the model refuses.
fn unfit_validation(error: Error) -> Error {
    Error::Data {
        what: "validation data",
        problem: format!("its samples do not fit the model: {error}"),
    }
}

/// The epoch's metrics summed over the ranks, after averaging the model's buffers (batch-norm
/// statistics) across them; `acc` itself without data parallelism. `counts` is summed in the
/// same all-reduce.
fn across_ranks<F: Float, M: Model<F>>(
    data_parallel: Option<&mut DataParallel<'_, F, M>>,
    comm: Option<&dyn Communicator>,
    model: &mut M,
    acc: MetricsAccumulator,
    counts: &mut MetricCounts,
) -> Result<MetricsAccumulator> {
    let (Some(dp), Some(comm)) = (data_parallel, comm) else {
        return Ok(acc);
    };
    dp.average_buffers(model)?;
    // One all-reduce for the loss, the accuracy and every metric's counts: the counters of
    // all ranks have the same length (it depends on the metrics and the class count only).
    let mut send = Vec::with_capacity(4 + counts.sums_len());
    send.extend(acc.to_sums());
    counts.write_sums(&mut send);
    let mut total = vec![0.0; send.len()];
    comm.all_reduce_sum_f64(&send, &mut total)?;
    counts.read_sums(&total[4..]);
    Ok(MetricsAccumulator::from_sums([
        total[0], total[1], total[2], total[3],
    ]))
}

/// A [`Supervised`] model on a [`Dataset`], optionally data-parallel.
pub(super) struct DatasetFeed<'l, 'c, F: Float, M: Supervised<F>, D: Dataset<F> + ?Sized> {
    pub loader: &'l DataLoader<'l, F, D>,
    pub epoch: Option<Epoch<'l, F, D>>,
    /// The epoch being served, for [`Augment`]'s draws.
    pub epoch_index: usize,
    /// What changes each training batch's images.
    pub augment: Option<&'l Augment>,
    pub batch: Batch<F>,
    pub validation: Option<&'l dyn Dataset<F>>,
    pub eval_batch_size: usize,
    pub eval_ws: Option<M::Workspace>,
    pub eval_buffer: Batch<F>,
    pub comm: Option<&'c dyn Communicator>,
    pub data_parallel: Option<DataParallel<'c, F, M>>,
    pub train_data: &'l D,
    pub steps_per_epoch: Option<usize>,
    /// Batches served in the current epoch.
    pub served: usize,
}

impl<F, M, D> Feed<F, M> for DatasetFeed<'_, '_, F, M, D>
where
    F: Float,
    M: Supervised<F>,
    D: Dataset<F> + ?Sized,
{
    type Workspace = M::Workspace;

    fn labels(&self) -> Option<(usize, Option<usize>)> {
        M::CLASSES.map(|classes| (classes, None))
    }

    fn check(&mut self, model: &M, counts: &mut MetricCounts) -> Result<()> {
        check_compatible::<F, M>(self.train_data, "training data")?;
        if let Some(augment) = self.augment {
            augment.check(self.train_data.sample_shape())?;
        }
        if !counts.is_empty() {
            // The metrics see the model's output only in the first batch: one sample now, so
            // that a metric that does not fit is an error before anything is trained.
            let mut probe = Batch::new();
            let loader = DataLoader::new(self.train_data, 1);
            if loader.epoch_batches(0).next_into(&mut probe) {
                let mut ws = M::Workspace::default();
                model.eval_batch(probe.x.view(), batch_targets(&probe), &mut ws)?;
                add_supervised(counts, M::last_output(&ws)?, &probe)?;
                counts.reset();
            }
        }
        if let Some(val) = self.validation {
            check_compatible::<F, M>(val, "validation data")?;
            // Its samples go through the model only at the end of the first epoch: one
            // batch now, so that a wrong shape is an error before anything is trained.
            let mut probe = Batch::new();
            let loader = DataLoader::new(val, 1);
            let mut batches = loader.epoch_batches(0);
            if batches.next_into(&mut probe) {
                let mut ws = M::Workspace::default();
                model
                    .eval_batch(probe.x.view(), batch_targets(&probe), &mut ws)
                    .map_err(unfit_validation)?;
            }
        }
        Ok(())
    }

    fn begin(&mut self, model: &mut M) -> Result<()> {
        self.data_parallel = self.comm.map(|c| DataParallel::new(c, model)).transpose()?;
        Ok(())
    }

    fn num_batches(&self) -> usize {
        let all = self.loader.num_batches();
        self.steps_per_epoch.map_or(all, |steps| all.min(steps))
    }

    fn start_epoch(&mut self, epoch: usize) {
        self.epoch = Some(self.loader.epoch_batches(epoch));
        self.epoch_index = epoch;
        self.served = 0;
    }

    fn next_batch(&mut self) -> Result<bool> {
        if self.served >= self.num_batches() {
            return Ok(false);
        }
        self.served += 1;
        let served = self
            .epoch
            .as_mut()
            .is_some_and(|e| e.next_into(&mut self.batch));
        if let (true, Some(augment)) = (served, self.augment) {
            let batch = &mut self.batch;
            augment.apply(batch.x.view_mut(), &batch.indices, self.epoch_index)?;
        }
        Ok(served)
    }

    fn train(
        &mut self,
        model: &mut M,
        ws: &mut M::Workspace,
        grads: &mut M::Grads,
        counts: &mut MetricCounts,
        sync: bool,
    ) -> Result<Trained<F>> {
        let batch = &self.batch;
        // A rank's piece of a short last batch may be empty: it runs no pass but still joins
        // the gradient sum, which data parallelism computes while the backward pass runs
        // (bucket by bucket, last layers first).
        let loss = match &mut self.data_parallel {
            Some(dp) if sync => {
                let targets = batch_targets(batch);
                dp.train_batch(model, batch.x.view(), targets, ws, grads, batch.len())?
                    .0
            }
            Some(dp) => {
                let targets = batch_targets(batch);
                dp.train_batch_no_sync(model, batch.x.view(), targets, ws, grads, batch.len())?
            }
            None if batch.is_empty() => None,
            None => Some(model.train_batch(batch.x.view(), batch_targets(batch), ws, grads)?),
        };
        let correct_of = match (&batch.labels, loss) {
            (Some(labels), Some(_)) => Some((
                count_correct(M::last_output(ws)?, labels.view())?,
                batch.len(),
            )),
            _ => None,
        };
        if loss.is_some() {
            add_supervised(counts, M::last_output(ws)?, batch)?;
        }
        Ok(Trained {
            loss,
            samples: batch.len(),
            correct_of,
        })
    }

    fn sums_accumulated(&self) -> bool {
        self.data_parallel.is_some()
    }

    fn end_epoch(
        &mut self,
        model: &mut M,
        acc: MetricsAccumulator,
        counts: &mut MetricCounts,
    ) -> Result<MetricsAccumulator> {
        across_ranks(self.data_parallel.as_mut(), self.comm, model, acc, counts)
    }

    fn evaluate(&mut self, model: &M, counts: &mut MetricCounts) -> Result<Option<Metrics>> {
        let Some(val) = self.validation else {
            return Ok(None);
        };
        counts.reset();
        let ws = self.eval_ws.get_or_insert_with(M::Workspace::default);
        let buffer = &mut self.eval_buffer;
        evaluate_counting(model, val, self.eval_batch_size, ws, buffer, counts).map(Some)
    }

    fn reseed(ws: &mut M::Workspace, seed: u64) {
        M::reseed(ws, seed);
    }

    fn check_finite(ws: &mut M::Workspace, on: bool) {
        M::check_finite(ws, on);
    }

    fn freeze(ws: &mut M::Workspace, frozen: &dyn Fn(&str) -> bool) {
        M::freeze(ws, frozen);
    }
}

/// A [`Trainable`] model on a [`BatchSource`].
pub(super) struct BatchFeed<'l, 'c, F: Float, M: Trainable<F>, S: BatchSource<F> + ?Sized> {
    pub train_data: &'l S,
    pub comm: Option<&'c dyn Communicator>,
    pub data_parallel: Option<DataParallel<'c, F, M>>,
    /// This rank's samples in the fetched batch.
    pub local: usize,
    pub validation: Option<&'l dyn BatchSource<F>>,
    pub batch_size: usize,
    pub eval_batch_size: usize,
    pub drop_last: bool,
    pub shuffle_seed: Option<u64>,
    pub steps_per_epoch: Option<usize>,
    pub order: Option<IndexBatches>,
    pub batch: Vec<BatchArray<F>>,
    pub eval_ws: Option<M::Workspace>,
}

/// Checks that `source` serves what `M` takes, naming the first difference.
fn check_source<F: Float, M: Trainable<F>>(
    source: &(impl BatchSource<F> + ?Sized),
    what: &'static str,
) -> Result<()> {
    let problem = |problem: String| Err(Error::Data { what, problem });
    if source.is_empty() {
        return problem("it has no samples".to_string());
    }
    let served = source.served();
    let list = |names: Vec<String>| names.join(", ");
    let takes = list(
        M::ARGS
            .iter()
            .map(|a| format!("{} ({})", a.name, a.kind))
            .collect(),
    );
    let serves = list(
        served
            .iter()
            .map(|s| format!("{} ({})", s.name, s.kind))
            .collect(),
    );
    if served.len() != M::ARGS.len() {
        return problem(format!(
            "its batches hold {} arrays [{serves}], but the model takes {} [{takes}], in \
             declaration order",
            served.len(),
            M::ARGS.len()
        ));
    }
    for (arg, s) in M::ARGS.iter().zip(&served) {
        let fits = match (arg.kind, s.kind) {
            (ArgKind::Float, ServedKind::Float)
            | (ArgKind::Lengths, ServedKind::Lengths)
            | (ArgKind::Tokens { .. }, ServedKind::Tokens { vocab: None })
            | (ArgKind::Labels { .. }, ServedKind::Labels { classes: None }) => true,
            (ArgKind::Tokens { vocab }, ServedKind::Tokens { vocab: Some(have) }) => have <= vocab,
            (
                ArgKind::Labels { classes, .. },
                ServedKind::Labels {
                    classes: Some(have),
                },
            ) => have <= classes,
            _ => false,
        };
        if !fits || arg.rank != s.rank {
            return problem(format!(
                "it serves `{}` as {} of rank {} where the model's {} `{}` takes {} of rank {} \
                 (the model takes [{takes}]; the data serves [{serves}])",
                s.name,
                s.kind,
                s.rank,
                if arg.target { "target" } else { "input" },
                arg.name,
                arg.kind,
                arg.rank
            ));
        }
    }
    Ok(())
}

impl<F, M, S> Feed<F, M> for BatchFeed<'_, '_, F, M, S>
where
    F: Float,
    M: Trainable<F>,
    S: BatchSource<F> + ?Sized,
{
    type Workspace = <M as Trainable<F>>::Workspace;

    fn labels(&self) -> Option<(usize, Option<usize>)> {
        label_target(M::ARGS).map(|(_, classes, ignored)| (classes, ignored))
    }

    fn check(&mut self, model: &M, counts: &mut MetricCounts) -> Result<()> {
        check_source::<F, M>(self.train_data, "training data")?;
        if !counts.is_empty() {
            // As `DatasetFeed::check`: one sample through the model for the metrics.
            let mut probe = Vec::new();
            self.train_data.fill(&[0], &mut probe)?;
            let mut ws = Self::Workspace::default();
            model.eval_step(&probe, &mut ws)?;
            add_trainable::<F, M>(counts, &probe, &ws)?;
            counts.reset();
        }
        if let Some(val) = self.validation {
            check_source::<F, M>(val, "validation data")?;
            let mut probe = Vec::new();
            val.fill(&[0], &mut probe)?;
            let mut ws = Self::Workspace::default();
            model.eval_step(&probe, &mut ws).map_err(unfit_validation)?;
        }
        Ok(())
    }

    fn begin(&mut self, model: &mut M) -> Result<()> {
        self.data_parallel = self.comm.map(|c| DataParallel::new(c, model)).transpose()?;
        Ok(())
    }

    fn num_batches(&self) -> usize {
        IndexBatches::count(
            self.train_data.len(),
            self.batch_size,
            self.drop_last,
            self.steps_per_epoch,
        )
    }

    fn start_epoch(&mut self, epoch: usize) {
        self.order = Some(IndexBatches::new(
            self.train_data.len(),
            self.batch_size,
            self.drop_last,
            self.shuffle_seed,
            epoch,
            self.steps_per_epoch,
        ));
    }

    fn next_batch(&mut self) -> Result<bool> {
        let Some(indices) = self.order.as_mut().and_then(IndexBatches::next_indices) else {
            return Ok(false);
        };
        // This rank's piece of the global batch, cut as `DataLoader::shard` cuts it: the ranks
        // together train on the batches of one process.
        let (rank, ranks) = self.comm.map_or((0, 1), |c| (c.rank(), c.size().max(1)));
        let n = indices.len();
        let piece = &indices[n * rank / ranks..n * (rank + 1) / ranks];
        self.local = piece.len();
        // An empty piece runs no pass (the rank only joins the gradient sum): nothing to fill.
        if !piece.is_empty() {
            self.train_data.fill(piece, &mut self.batch)?;
        }
        Ok(true)
    }

    fn train(
        &mut self,
        model: &mut M,
        ws: &mut Self::Workspace,
        grads: &mut M::Grads,
        counts: &mut MetricCounts,
        sync: bool,
    ) -> Result<Trained<F>> {
        let loss = match &mut self.data_parallel {
            Some(dp) if sync => dp.train_step(model, &self.batch, ws, grads, self.local)?.0,
            Some(dp) => dp.train_step_no_sync(model, &self.batch, ws, grads, self.local)?,
            None => Some(model.train_step(&self.batch, ws, grads)?),
        };
        let correct_of = match loss {
            Some(_) => {
                add_trainable::<F, M>(counts, &self.batch, ws)?;
                batch_accuracy::<F, M>(&self.batch, ws)?
            }
            None => None,
        };
        Ok(Trained {
            loss,
            samples: self.local,
            correct_of,
        })
    }

    fn sums_accumulated(&self) -> bool {
        self.data_parallel.is_some()
    }

    fn end_epoch(
        &mut self,
        model: &mut M,
        acc: MetricsAccumulator,
        counts: &mut MetricCounts,
    ) -> Result<MetricsAccumulator> {
        across_ranks(self.data_parallel.as_mut(), self.comm, model, acc, counts)
    }

    fn evaluate(&mut self, model: &M, counts: &mut MetricCounts) -> Result<Option<Metrics>> {
        let Some(val) = self.validation else {
            return Ok(None);
        };
        counts.reset();
        let ws = self.eval_ws.get_or_insert_with(Default::default);
        let (size, batch) = (self.eval_batch_size, &mut self.batch);
        evaluate_batches_counting(model, val, size, ws, batch, counts).map(Some)
    }

    fn reseed(ws: &mut Self::Workspace, seed: u64) {
        M::reseed(ws, seed);
    }

    fn check_finite(ws: &mut Self::Workspace, on: bool) {
        M::check_finite(ws, on);
    }

    fn freeze(ws: &mut Self::Workspace, frozen: &dyn Fn(&str) -> bool) {
        M::freeze(ws, frozen);
    }
}
