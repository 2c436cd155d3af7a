//! Training: a Keras-style [`Trainer`] (`fit` with progress bars, validation, learning-rate
//! schedules, gradient clipping, [metrics](Metric), early stopping, checkpoints with exact
//! resume, and plots), built from small public pieces that a hand-written loop can use one by
//! one.
//!
//! [`Trainer::fit`] trains a [`Supervised`] model (one float input, one target per sample) on
//! a [`Dataset`]; [`Trainer::fit_batches`] trains any [`Trainable`] model (token ids, lengths,
//! several inputs, a label per position) on a [`BatchSource`], with the same loop. The loop is
//! written once against a private `Feed` (`feed.rs`), which the two data paths implement.
//!
//! ```no_run
//! use kiln_runtime::data::{self, TensorDataset};
//! use kiln_runtime::optim::CosineAnnealing;
//! use kiln_runtime::train::Trainer;
//! use kiln_runtime::{Adam, Supervised};
//!
//! # fn demo<M: Supervised<f32>>(model: &mut M) -> kiln_runtime::Result<()> {
//! let digits = data::digits::<f32>()?;
//! let (train, val) = data::stratified_split(&digits, 0.2, 0);
//! let mut opt = Adam::new(1e-3);
//! let history = Trainer::new(20, 32)
//!     .shuffle_seed(42)
//!     .validation(&val)
//!     .schedule(CosineAnnealing::new(20, 1e-5))
//!     .clip_grad_norm(5.0)
//!     .early_stopping(3, 1e-4)
//!     .checkpoints("runs/digits")
//!     .fit(model, &mut opt, &train)?;
//! println!("{history}");
//! history.write_csv("runs/digits/history.csv")?;
//! # Ok(())
//! # }
//! ```
//!
//! With the cargo feature `plot`, `.plot("runs/digits/curves.png")` also draws the loss and
//! accuracy curves after every epoch.
//!
//! The same run, as a plain loop over the pieces ([`crate::data::DataLoader`],
//! [`LrSchedule`], [`clip_grad_norm`], [`count_correct`], [`evaluate`], [`EarlyStopping`],
//! [`Weights`], [`History`], [`Checkpoint`]):
//!
//! ```no_run
//! use kiln_runtime::data::{Batch, DataLoader, Dataset};
//! use kiln_runtime::optim::{clip_grad_norm, CosineAnnealing, LrSchedule};
//! use kiln_runtime::train::{self, batch_targets, count_correct, EarlyStopping, Verdict, Weights};
//! use kiln_runtime::{Adam, Optimizer, Supervised};
//!
//! # fn demo<M: Supervised<f32>, D: Dataset<f32>>(model: &mut M, train_set: &D, val: &D) -> kiln_runtime::Result<()> {
//! let mut opt = Adam::new(1e-3);
//! let schedule = CosineAnnealing::new(20, 1e-5);
//! let mut stop = EarlyStopping::new(3, 1e-4);
//! let mut best = Weights::default();
//! let loader = DataLoader::new(train_set, 32).shuffle(42);
//! let (mut ws, mut grads, mut batch) = (M::Workspace::default(), model.zero_grads(), Batch::new());
//! let mut step = 0;
//! for epoch in 0..20 {
//!     let mut batches = loader.epoch_batches(epoch);
//!     while batches.next_into(&mut batch) {
//!         opt.set_learning_rate(schedule.lr(epoch, step, 1e-3));
//!         let loss = model.train_batch(batch.x.view(), batch_targets(&batch), &mut ws, &mut grads)?;
//!         if let Some(labels) = &batch.labels {
//!             let _correct = count_correct(M::last_output(&ws)?, labels.view())?;
//!         }
//!         clip_grad_norm::<f32, M>(&mut grads, 5.0);
//!         opt.step(model, &grads);
//!         step += 1;
//!     }
//!     let metrics = train::evaluate(model, val, 256)?;
//!     match stop.update(epoch, metrics.loss) {
//!         Verdict::Improved => best.capture_from(model),
//!         Verdict::Wait => {}
//!         Verdict::Stop => break,
//!     }
//! }
//! best.restore(model)?;
//! # Ok(())
//! # }
//! ```

mod checkpoint;
mod early_stopping;
mod feed;
mod files;
mod history;
mod metric;
mod metrics;
#[cfg(feature = "plot")]
pub mod plot;
mod predict;
mod progress;
pub(crate) mod state;

pub use checkpoint::{Checkpoint, Weights};
pub use early_stopping::{EarlyStopping, Mode, Verdict};
pub use history::{EpochRecord, History};
pub use metric::{Metric, MetricCounts, MetricValues};
pub use metrics::{
    accuracy, batch_targets, count_correct, count_correct_positions, evaluate, evaluate_batches,
    evaluate_batches_metrics, evaluate_batches_with, evaluate_metrics, evaluate_with, Metrics,
    MetricsAccumulator,
};
pub use predict::{classes, confusion_matrix, confusion_matrix_ignoring, predict, predict_batches};
pub use state::{OptimizerState, StatefulOptimizer};

use crate::data::{Augment, Batch, BatchSource, DataLoader, Dataset, TargetKind};
use crate::distributed::{rank_seed, Communicator};
use crate::optim::{clip_grad_norm, LrSchedule, ReduceLrOnPlateau};
use crate::Trainable;
use crate::{Error, Float, Model, Result, Supervised};
use feed::{BatchFeed, DatasetFeed, Feed};
use progress::{Reporter, Running};
use std::fmt;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Instant;

/// Trains a [`Supervised`] model on a [`Dataset`], Keras' `model.fit` style.
///
/// Build it with [`Trainer::new`] and the builder methods, then call [`Trainer::fit`]. Every
/// epoch:
///
/// 1. the training data is served in batches (shuffled with a seed that, with the epoch
///    number, fixes the order: runs repeat, and resume, exactly);
/// 2. before each optimizer step the [schedule](Trainer::schedule) sets the learning rate;
///    after the backward pass gradients are [clipped](Trainer::clip_grad_norm) if asked;
/// 3. the mean training loss (and accuracy, for class labels, and the
///    [metrics](Trainer::metrics)) over the epoch's samples is shown on a progress bar with
///    the speed in samples per second;
/// 4. the [validation](Trainer::validation) data is evaluated in inference mode (loss,
///    accuracy and metrics);
/// 5. the epoch's [`EpochRecord`] is added to the [`History`], [early
///    stopping](Trainer::early_stopping) is consulted, a [checkpoint](Trainer::checkpoints)
///    and the plot (`Trainer::plot`, feature `plot`) are written.
///
/// On a terminal each epoch is a progress bar that ends as the epoch's summary line (feature
/// `progress`); when stdout is not a terminal (a log file, CI), or without that
/// feature, one summary line per epoch is printed instead;
/// [`progress(false)`](Trainer::progress) prints nothing. With progress on, the model's
/// [summary](crate::Model::summary) is printed first.
///
/// The trainer holds only configuration: one trainer can fit several models.
pub struct Trainer<'a, F: Float> {
    epochs: usize,
    batch_size: usize,
    eval_batch_size: Option<usize>,
    shuffle_seed: Option<u64>,
    drop_last: bool,
    augment: Option<Augment>,
    validation: Option<&'a dyn Dataset<F>>,
    validation_batches: Option<&'a dyn BatchSource<F>>,
    steps_per_epoch: Option<usize>,
    schedule: Option<Box<dyn LrSchedule + 'a>>,
    plateau: Option<ReduceLrOnPlateau>,
    clip_grad_norm: Option<f64>,
    accumulate: usize,
    /// [`Trainer::ema`]'s decay.
    ema: Option<f64>,
    early_stopping: Option<EarlyStopping>,
    checkpoints: Option<PathBuf>,
    save_best: Option<SaveBest>,
    resume_from: Option<PathBuf>,
    detect_anomaly: bool,
    progress: bool,
    distributed: Option<&'a dyn Communicator>,
    metrics: Vec<Metric>,
    on_epoch_end: Option<EpochCallback<'a>>,
    #[cfg(feature = "plot")]
    plot: Option<PathBuf>,
}

/// What [`Trainer::on_epoch_end`] calls. `Fn`, not `FnMut`: `fit` borrows the trainer shared,
/// and a cell around the callback would make `Trainer<'a>` invariant in `'a`, so that a
/// trainer built for longer-lived data could no longer take a shorter-lived communicator.
type EpochCallback<'a> = Box<dyn Fn(&EpochRecord) -> ControlFlow<()> + 'a>;

impl<F: Float> fmt::Debug for Trainer<'_, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Trainer");
        d.field("epochs", &self.epochs)
            .field("batch_size", &self.batch_size)
            .field("eval_batch_size", &self.eval_batch_size)
            .field("shuffle_seed", &self.shuffle_seed)
            .field("drop_last", &self.drop_last)
            .field("augment", &self.augment)
            .field("validation", &self.validation.map(|v| v.len()))
            .field(
                "validation_batches",
                &self.validation_batches.map(|v| v.len()),
            )
            .field("steps_per_epoch", &self.steps_per_epoch)
            .field("schedule", &self.schedule.is_some())
            .field("plateau", &self.plateau)
            .field("clip_grad_norm", &self.clip_grad_norm)
            .field("accumulate_grad_batches", &self.accumulate)
            .field("ema", &self.ema)
            .field("early_stopping", &self.early_stopping)
            .field("checkpoints", &self.checkpoints)
            .field("save_best", &self.save_best)
            .field("resume_from", &self.resume_from)
            .field("detect_anomaly", &self.detect_anomaly)
            .field("progress", &self.progress)
            .field(
                "distributed",
                &self.distributed.map(|c| (c.rank(), c.size())),
            )
            .field("metrics", &self.metrics)
            .field("on_epoch_end", &self.on_epoch_end.is_some());
        #[cfg(feature = "plot")]
        d.field("plot", &self.plot);
        d.finish()
    }
}

impl<'a, F: Float> Trainer<'a, F> {
    /// A trainer for `epochs` epochs of mini-batches of `batch_size` samples, shuffled with
    /// seed 0, with progress output on. A batch size of 0 is an error when training starts.
    pub fn new(epochs: usize, batch_size: usize) -> Self {
        Self {
            epochs,
            batch_size,
            eval_batch_size: None,
            shuffle_seed: Some(0),
            drop_last: false,
            augment: None,
            validation: None,
            validation_batches: None,
            steps_per_epoch: None,
            schedule: None,
            plateau: None,
            clip_grad_norm: None,
            ema: None,
            accumulate: 1,
            early_stopping: None,
            checkpoints: None,
            save_best: None,
            resume_from: None,
            detect_anomaly: false,
            progress: true,
            distributed: None,
            metrics: Vec::new(),
            on_epoch_end: None,
            #[cfg(feature = "plot")]
            plot: None,
        }
    }

    /// Measures `metrics` on the training batches (from each training step's output, as the
    /// loss) and on the validation data after every epoch, as Keras'
    /// `model.compile(metrics=[...])`: the [`EpochRecord`]s hold them
    /// ([`EpochRecord::train_metrics`], [`EpochRecord::val_metrics`], looked up by name with
    /// [`EpochRecord::metric`]), the progress lines, [`History`]'s table and its CSV columns
    /// show them, and [`Trainer::early_stopping_on`] can monitor them. Replaces the metrics
    /// given before; repeats count once.
    ///
    /// Accuracy is reported for class labels whether it is asked for or not (as
    /// `train_accuracy` and `val_accuracy`, not among the metrics); asking for
    /// [`Metric::Accuracy`] makes a model whose output does not fit its labels an error.
    ///
    /// Training checks the metrics against the model's first output for one training sample
    /// before the first epoch: a metric that does not fit (F1 on a regression model, MAE on a
    /// classifier) is an [`Error::Data`] naming it, the output's shape and the target.
    ///
    /// ```
    /// use kiln_runtime::data::TensorDataset;
    /// use kiln_runtime::ndarray::{array, Array2};
    /// use kiln_runtime::train::{Metric, Trainer};
    /// use kiln_runtime::Sgd;
    /// # use kiln_runtime::ndarray::{ArrayD, ArrayViewD, ArrayViewMutD, IxDyn};
    /// # use kiln_runtime::{Model, Summary, Supervised, TargetView};
    /// # /// A fixed classifier without parameters: class 0 for a positive first feature.
    /// # struct Sign;
    /// # impl Model<f32> for Sign {
    /// #     type Grads = ();
    /// #     fn visit_params(&self, _: &mut dyn FnMut(&'static str, ArrayViewD<'_, f32>)) {}
    /// #     fn visit_params_mut(&mut self, _: &mut dyn FnMut(&'static str, ArrayViewMutD<'_, f32>)) {}
    /// #     fn visit_grads(_: &(), _: &mut dyn FnMut(&'static str, ArrayViewD<'_, f32>)) {}
    /// #     fn visit_grads_mut(_: &mut (), _: &mut dyn FnMut(&'static str, ArrayViewMutD<'_, f32>)) {}
    /// #     fn visit_params_with_grads(&mut self, _: &(), _: &mut dyn FnMut(usize, &mut [f32], &[f32])) {}
    /// #     fn zero_grads(&self) {}
    /// #     fn num_params(&self) -> usize { 0 }
    /// #     fn summary(&self) -> Summary { Summary { model: "Sign", dtype: "f32", ..Default::default() } }
    /// #     fn graph(&self) -> &'static str { "" }
    /// # }
    /// # impl Supervised<f32> for Sign {
    /// #     type Workspace = ArrayD<f32>;
    /// #     const INPUT_RANK: usize = 2;
    /// #     const CLASSES: Option<usize> = Some(2);
    /// #     fn train_batch(&mut self, x: ArrayViewD<'_, f32>, y: TargetView<'_, f32>, ws: &mut ArrayD<f32>, _: &mut ()) -> kiln_runtime::Result<f32> {
    /// #         self.eval_batch(x, y, ws)
    /// #     }
    /// #     fn eval_batch(&self, x: ArrayViewD<'_, f32>, _: TargetView<'_, f32>, ws: &mut ArrayD<f32>) -> kiln_runtime::Result<f32> {
    /// #         let n = x.shape()[0];
    /// #         *ws = ArrayD::from_shape_fn(IxDyn(&[n, 2]), |i| f32::from(u8::from((i[1] == 0) == (x[[i[0], 0]] > 0.0))));
    /// #         Ok(0.5)
    /// #     }
    /// #     fn last_output(ws: &ArrayD<f32>) -> kiln_runtime::Result<ArrayViewD<'_, f32>> {
    /// #         Ok(ws.view())
    /// #     }
    /// # }
    ///
    /// // `Sign` (a model that scores class 0 for a positive first feature, class 1 otherwise)
    /// // against labels that say class 0 for a positive feature, except for the last sample.
    /// let x: Array2<f32> = array![[1.0], [2.0], [-1.0], [-2.0], [3.0]];
    /// let data = TensorDataset::with_labels(x, array![0, 0, 1, 1, 1], 2)?;
    /// let history = Trainer::new(1, 2)
    ///     .progress(false)
    ///     .validation(&data)
    ///     .metrics([Metric::MacroF1, Metric::MacroRecall])
    ///     .fit(&mut Sign, &mut Sgd::new(0.1), &data)?;
    /// let last = history.last().unwrap();
    /// // Class 0: tp 2, predicted 3, support 2 (F1 0.8, recall 1); class 1: tp 2, predicted 2,
    /// // support 3 (F1 0.8, recall 2/3).
    /// assert!((last.metric("val_f1").unwrap() - 0.8).abs() < 1e-12);
    /// assert!((last.metric("recall").unwrap() - 5.0 / 6.0).abs() < 1e-12);
    /// assert!(history.to_csv().starts_with(
    ///     "epoch,train_loss,train_accuracy,val_loss,val_accuracy,lr,seconds,samples_per_second,\
    ///      f1,recall,val_f1,val_recall\n"
    /// ));
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn metrics(mut self, metrics: impl IntoIterator<Item = Metric>) -> Self {
        self.metrics = Vec::new();
        for m in metrics {
            if !self.metrics.contains(&m) {
                self.metrics.push(m);
            }
        }
        self
    }

    /// Shuffles the training data every epoch with `seed` (the default is seed 0: shuffled
    /// and reproducible).
    pub fn shuffle_seed(mut self, seed: u64) -> Self {
        self.shuffle_seed = Some(seed);
        self
    }

    /// Whether to shuffle the training data (default `true`); `false` serves it in order.
    pub fn shuffle(mut self, shuffle: bool) -> Self {
        self.shuffle_seed = match (shuffle, self.shuffle_seed) {
            (false, _) => None,
            (true, Some(seed)) => Some(seed),
            (true, None) => Some(0),
        };
        self
    }

    /// Whether to skip the last, smaller batch of each epoch (default `false`).
    pub fn drop_last(mut self, drop_last: bool) -> Self {
        self.drop_last = drop_last;
        self
    }

    /// Changes every training image at random before it is trained on, drawn anew each
    /// epoch: torchvision's `transforms` on the training set, Keras' preprocessing layers
    /// (see [`Augment`]). Validation data is never changed. A sample gets the same changes
    /// whatever batch, shuffle or rank it lands in, so runs repeat exactly. Samples that are
    /// not images (fewer than two axes) or settings that do not fit them (a crop padding of
    /// the whole image) are an error when `fit` starts; [`Trainer::fit_batches`], whose
    /// batches may hold anything, refuses it.
    ///
    /// ```no_run
    /// use kiln_runtime::data::{self, Augment};
    /// use kiln_runtime::train::Trainer;
    /// # fn demo<M: kiln_runtime::Supervised<f32>>(model: &mut M) -> kiln_runtime::Result<()> {
    /// let mut digits = data::digits::<f32>()?;
    /// digits.reshape_samples(&[1, 8, 8])?;
    /// let history = Trainer::new(20, 32)
    ///     .augment(Augment::new().random_crop(1).seed(3))
    ///     .fit(model, &mut kiln_runtime::Adam::new(1e-3), &digits)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn augment(mut self, augment: Augment) -> Self {
        self.augment = (!augment.is_empty()).then_some(augment);
        self
    }

    /// Evaluates the loss (and accuracy, and the [metrics](Trainer::metrics)) on `data` after
    /// every epoch, in inference mode. Early stopping then monitors the validation loss.
    pub fn validation(mut self, data: &'a dyn Dataset<F>) -> Self {
        self.validation = Some(data);
        self
    }

    /// Evaluates the loss (and accuracy, and the [metrics](Trainer::metrics)) on `data` after
    /// every epoch, in inference mode, for [`Trainer::fit_batches`] (what
    /// [`Trainer::validation`] is for [`Trainer::fit`]). Early stopping then monitors the
    /// validation loss.
    pub fn validation_batches(mut self, data: &'a dyn BatchSource<F>) -> Self {
        self.validation_batches = Some(data);
        self
    }

    /// Ends each epoch after at most `steps` batches (Keras' `steps_per_epoch`): for data
    /// with far more samples than an epoch should visit, such as a language model's windows
    /// at every offset of a text. Shuffled, each epoch draws its batches afresh. A `steps` of
    /// 0 counts as 1.
    pub fn steps_per_epoch(mut self, steps: usize) -> Self {
        self.steps_per_epoch = Some(steps.max(1));
        self
    }

    /// The batch size for validation (default: the training batch size). Inference needs no
    /// gradients, so a larger batch is often faster.
    pub fn eval_batch_size(mut self, batch_size: usize) -> Self {
        self.eval_batch_size = Some(batch_size.max(1));
        self
    }

    /// Sets the learning rate before every optimizer step from `schedule`, scaling the
    /// optimizer's rate at the start of training (the *base* rate, kept in checkpoints).
    pub fn schedule(mut self, schedule: impl LrSchedule + 'a) -> Self {
        self.schedule = Some(Box::new(schedule));
        self
    }

    /// Lowers the learning rate when the validation loss (the training loss if there is no
    /// validation data) stops improving, as Keras' `ReduceLROnPlateau` callback and PyTorch's
    /// scheduler do: before each epoch the rate is [`ReduceLrOnPlateau::lr_after`] the
    /// losses of the epochs before it, from the base rate. It replaces a
    /// [schedule](Trainer::schedule); giving both is an error when training starts.
    pub fn reduce_lr_on_plateau(mut self, plateau: ReduceLrOnPlateau) -> Self {
        self.plateau = Some(plateau);
        self
    }

    /// Rescales the gradients before every step so that their total L2 norm is at most
    /// `max_norm` ([`clip_grad_norm`]).
    pub fn clip_grad_norm(mut self, max_norm: f64) -> Self {
        self.clip_grad_norm = Some(max_norm);
        self
    }

    /// Keeps an exponential moving average of the weights, as Keras's optimizers do with
    /// `use_ema=True, ema_momentum=decay` and PyTorch's `AveragedModel` with
    /// `get_ema_multi_avg_fn(decay)`: after every optimizer step each averaged parameter
    /// moves towards the model's, `a ← a + (1 − decay)(p − a)` (the first step copies the
    /// model, and buffers such as batch-norm statistics are copied at every step, as PyTorch's
    /// `AveragedModel` does by default). `decay` is in [0, 1]; 0.999 and 0.9999 are usual.
    ///
    /// Validation (and so early stopping, [`Trainer::save_best`] and the best weights
    /// early stopping restores) measures the averaged weights, which are what the average
    /// is for; the training loss and metrics are the model's own, batch by batch. When `fit`
    /// returns, the model holds the averaged weights (Keras's `finalize_variable_values`), or
    /// the best epoch's averaged weights when early stopping restores them. Checkpoints keep
    /// the average, so a resumed run continues it bit for bit; resumed from a checkpoint
    /// written without one, the average starts at the first step after resuming.
    ///
    /// ```no_run
    /// # fn demo<M: kiln_runtime::Supervised<f32>>(
    /// #     model: &mut M,
    /// #     train: &kiln_runtime::data::TensorDataset<f32>,
    /// #     val: &kiln_runtime::data::TensorDataset<f32>,
    /// # ) -> kiln_runtime::Result<()> {
    /// use kiln_runtime::{train::Trainer, Adam};
    /// let history = Trainer::new(20, 64)
    ///     .validation(val)
    ///     .ema(0.999)
    ///     .fit(model, &mut Adam::new(1e-3), train)?;
    /// // `model` now holds the moving average, which the validation figures measured.
    /// # Ok(())
    /// # }
    /// ```
    pub fn ema(mut self, decay: f64) -> Self {
        self.ema = Some(decay);
        self
    }

    /// Takes an optimizer step every `n` batches (at least 1, the default) with the mean of
    /// their gradients, as PyTorch Lightning's `accumulate_grad_batches` and Keras'
    /// `gradient_accumulation_steps`: batches of 8 accumulated 4 at a time train as batches of
    /// 32 would (in a model without batch statistics), in the memory of 8. The last group of
    /// an epoch may have fewer batches, and steps with their mean. The mean weighs each batch
    /// by its samples, so that a short last batch counts for what it holds and the step is
    /// exactly that of one batch of the group's samples (Lightning and Keras weigh every
    /// batch alike, which differs only there). Clipping applies to the mean, schedules count
    /// optimizer steps, and the loss, accuracy and metrics are still those of every batch.
    ///
    /// Under [data parallelism](Trainer::distributed) each rank keeps its gradients through a
    /// group and the ranks sum them once, in its last batch (PyTorch DDP's `no_sync`; see
    /// [`DataParallel::train_batch_no_sync`](crate::distributed::DataParallel::train_batch_no_sync)):
    /// one gradient all-reduce per optimizer step, not per batch.
    pub fn accumulate_grad_batches(mut self, n: usize) -> Self {
        self.accumulate = n.max(1);
        self
    }

    /// Saves the weights to `path` (safetensors, as [`crate::io::save`]: atomically, so a
    /// crash leaves the previous best) after every epoch whose validation loss (the training
    /// loss without validation data) is the lowest so far: Keras'
    /// `ModelCheckpoint(path, save_best_only=True)`. Load them with [`crate::io::load`].
    pub fn save_best(self, path: impl Into<PathBuf>) -> Self {
        self.save_best_on(path, "", Mode::Min)
    }

    /// [`Trainer::save_best`] on the figure named `monitor` in direction `mode`, named as
    /// [`Trainer::early_stopping_on`] takes them (`val_f1` with [`Mode::Max`]). A name the
    /// run does not compute is an [`Error::Data`] before training starts.
    pub fn save_best_on(mut self, path: impl Into<PathBuf>, monitor: &str, mode: Mode) -> Self {
        self.save_best = Some(SaveBest {
            path: path.into(),
            monitor: (!monitor.is_empty()).then(|| monitor.to_string()),
            mode,
        });
        self
    }

    /// Calls `callback` with each epoch's [`EpochRecord`] once the epoch is done (after
    /// validation, early stopping's verdict, the checkpoint and the plot), as a Keras
    /// callback's `on_epoch_end`: to send the figures elsewhere, or to end training by
    /// returning [`ControlFlow::Break`] (Keras' `model.stop_training = True`). Training then
    /// ends as after its last epoch (early stopping still restores the best weights). Under
    /// [`Trainer::distributed`] every rank calls its callback with the same record, and
    /// training ends on every rank when any of them breaks. The callback is a `Fn`: state it
    /// keeps goes in a `Cell` or `RefCell`.
    ///
    /// ```
    /// use std::cell::RefCell;
    /// use std::ops::ControlFlow;
    /// use kiln_runtime::train::Trainer;
    /// // Stop once the training loss is below 0.1, and keep every epoch's loss.
    /// let losses = RefCell::new(Vec::new());
    /// let trainer = Trainer::<f32>::new(100, 32).on_epoch_end(|record| {
    ///     losses.borrow_mut().push(record.train_loss);
    ///     if record.train_loss < 0.1 {
    ///         ControlFlow::Break(())
    ///     } else {
    ///         ControlFlow::Continue(())
    ///     }
    /// });
    /// # drop(trainer);
    /// ```
    pub fn on_epoch_end(mut self, callback: impl Fn(&EpochRecord) -> ControlFlow<()> + 'a) -> Self {
        self.on_epoch_end = Some(Box::new(callback));
        self
    }

    /// Stops when the validation loss (the training loss if there is no validation data) has
    /// not improved by more than `min_delta` for `patience` epochs, and restores the best
    /// epoch's weights at the end of training (see [`EarlyStopping`]).
    pub fn early_stopping(mut self, patience: usize, min_delta: f64) -> Self {
        let restore = self
            .early_stopping
            .as_ref()
            .is_none_or(EarlyStopping::restores_best_weights);
        self.early_stopping =
            Some(EarlyStopping::new(patience, min_delta).restore_best_weights(restore));
        self
    }

    /// Early stopping on the figure named `monitor` (Keras' `EarlyStopping(monitor="val_f1",
    /// mode="max")`): stops when it has not improved by more than `min_delta` in direction
    /// `mode` for `patience` epochs, and restores the best epoch's weights at the end of
    /// training (see [`EarlyStopping::monitor`]). `monitor` is a name as
    /// [`EpochRecord::metric`] looks it up: `loss`, `val_loss`, `accuracy`, `val_accuracy`
    /// (for class labels), or a [metric](Trainer::metrics)'s name, with `val_` for its
    /// validation figure. A name the run does not compute is an [`Error::Data`] listing those
    /// it does, before training starts.
    pub fn early_stopping_on(
        self,
        monitor: impl Into<String>,
        mode: Mode,
        patience: usize,
        min_delta: f64,
    ) -> Self {
        let mut trainer = self.early_stopping(patience, min_delta);
        trainer.early_stopping = trainer
            .early_stopping
            .take()
            .map(|rule| rule.monitor(monitor, mode));
        trainer
    }

    /// Whether early stopping restores the best weights at the end (default `true`, as Keras'
    /// `restore_best_weights=True`). Without early stopping this has no effect.
    pub fn restore_best_weights(mut self, restore: bool) -> Self {
        if let Some(stop) = self.early_stopping.take() {
            self.early_stopping = Some(stop.restore_best_weights(restore));
        }
        self
    }

    /// Writes a [`Checkpoint`] into `dir` after every epoch (model, optimizer state, counters,
    /// history, early-stopping state and best weights), atomically.
    pub fn checkpoints(mut self, dir: impl Into<PathBuf>) -> Self {
        self.checkpoints = Some(dir.into());
        self
    }

    /// Continues the run checkpointed in `dir`: loads the model's weights, the optimizer's
    /// state, the history and the counters, and trains the remaining epochs up to the
    /// trainer's `epochs`. With the same configuration and seeds, the result is bit for bit
    /// that of an uninterrupted run (for models without dropout: the dropout generator lives in
    /// the model's workspace, which restarts from its seed). Use [`Checkpoint::exists`] to
    /// resume only when there is something to resume.
    ///
    /// `fit` fails if `dir` holds no checkpoint. A run that early stopping had ended is not
    /// continued: `fit` restores its best weights and returns its history.
    pub fn resume_from(mut self, dir: impl Into<PathBuf>) -> Self {
        self.resume_from = Some(dir.into());
        self
    }

    /// Checks every value of the forward pass and every gradient of the backward pass for
    /// NaN and infinity as it is computed (default `false`), as PyTorch's
    /// `torch.autograd.detect_anomaly`: training stops at the first one with
    /// [`Error::NonFinite`], which names the model's binding, op, source line and pass, and
    /// the epoch, step and batch. It slows training down (every value is read once more).
    ///
    /// Without it, training still stops on a non-finite loss (Keras' `TerminateOnNaN`) with
    /// [`Error::NonFiniteTraining`], keeping the last good checkpoint.
    pub fn detect_anomaly(mut self, on: bool) -> Self {
        self.detect_anomaly = on;
        self
    }

    /// Whether to print the model summary and per-epoch progress (default `true`).
    pub fn progress(mut self, progress: bool) -> Self {
        self.progress = progress;
        self
    }

    /// Trains data-parallel across the ranks of `comm` (a [`World`] under `mpirun`; see
    /// [`crate::distributed`]): the one line that turns a `fit` into a distributed one.
    ///
    /// The batch size stays the *global* batch: every step, each rank trains on its piece of
    /// the same batch of [`Trainer::new`]'s `batch_size` samples
    /// ([`DataLoader::shard`]) and the gradients are summed across ranks before the step, so
    /// the model follows the run of one process (up to f32 rounding, and except for batch
    /// normalisation, which normalises each piece by its own statistics), whatever the number
    /// of ranks. With [`Trainer::fit_batches`] a loss averaged over positions follows one
    /// process too where every rank counts as many positions per sample; where they count
    /// different numbers (an `ignore_index`, texts padded to each piece's longest), each
    /// rank's mean is weighted by its samples, as PyTorch's `DistributedDataParallel` averages
    /// the ranks' means, which differs slightly from one process's mean over all positions.
    /// Rank 0's weights are broadcast at the start; batch-norm running statistics
    /// are averaged and the metrics summed across ranks at the end of every epoch; only
    /// rank 0 prints progress and writes checkpoints and plots. When resuming, every rank
    /// reads the checkpoint (a shared file system or a copy per host), and the number of
    /// ranks may differ from the checkpointed run's. Validation runs whole on every rank.
    /// Dropout draws differ between ranks (rank 0 draws what a single process draws).
    ///
    /// [`World`]: crate::distributed
    pub fn distributed(mut self, comm: &'a dyn Communicator) -> Self {
        self.distributed = Some(comm);
        self
    }

    /// Writes the loss and accuracy curves to `path` as a PNG after every epoch (so that a
    /// long run can be watched); see [`plot`].
    #[cfg(feature = "plot")]
    pub fn plot(mut self, path: impl Into<PathBuf>) -> Self {
        self.plot = Some(path.into());
        self
    }

    /// Trains `model` with `optimizer` on `train` and returns the history of the run
    /// (including the resumed epochs, when resuming).
    ///
    /// # Errors
    /// - [`Error::Shape`] before training if the data's samples do not have the model's input
    ///   rank or its targets are not of the model's kind (class labels vs values, or more
    ///   classes than the model has), or if the training data is empty;
    /// - [`Error::Data`] before training for a [metric](Trainer::metrics) that does not fit
    ///   the model (naming it, the target and the model's output shape) and for an
    ///   early-stopping monitor the run does not compute (listing those it does);
    /// - the model's errors for a batch;
    /// - [`Error::Io`], [`Error::File`] or [`Error::Mismatch`] naming the file when a
    ///   checkpoint or the plot cannot be written or the checkpoint to resume from cannot be
    ///   read;
    /// - [`Error::NonFiniteTraining`] when a batch's loss is NaN or infinite (before its
    ///   optimizer step), or the weights are at the end of an epoch (before its checkpoint):
    ///   the last checkpoint written stays the latest;
    /// - [`Error::NonFinite`] from the model, with [`Trainer::detect_anomaly`] on.
    ///
    /// On error the model keeps the weights of the last completed step. In a
    /// [distributed](Trainer::distributed) run the error is also printed with the rank, as the
    /// other ranks cannot learn of it: they stop at the collective timeout, or when `mpirun`
    /// sees this rank exit.
    pub fn fit<M, O, D>(&self, model: &mut M, optimizer: &mut O, train: &D) -> Result<History>
    where
        M: Supervised<F>,
        O: StatefulOptimizer<F>,
        D: Dataset<F> + ?Sized,
    {
        let result = self.fit_on_this_rank(model, optimizer, train);
        if let (Err(error), Some(comm)) = (&result, self.distributed) {
            if comm.size() > 1 {
                eprintln!(
                    "kiln::distributed: rank {} of {} stops training: {error}",
                    comm.rank(),
                    comm.size()
                );
            }
        }
        result
    }

    /// [`Trainer::fit`] without the error report.
    fn fit_on_this_rank<M, O, D>(
        &self,
        model: &mut M,
        optimizer: &mut O,
        train: &D,
    ) -> Result<History>
    where
        M: Supervised<F>,
        O: StatefulOptimizer<F>,
        D: Dataset<F> + ?Sized,
    {
        if self.validation_batches.is_some() {
            return Err(Error::Data {
                what: "Trainer",
                problem: "validation_batches gives a BatchSource, which fit_batches takes; \
                          `fit` validates on a Dataset: give it with .validation(..)"
                    .to_string(),
            });
        }
        let mut loader = DataLoader::new(train, self.batch_size.max(1)).drop_last(self.drop_last);
        if let Some(comm) = self.distributed {
            loader = loader.shard(comm.rank(), comm.size());
        }
        if let Some(seed) = self.shuffle_seed {
            loader = loader.shuffle(seed);
        }
        let mut feed = DatasetFeed {
            loader: &loader,
            epoch: None,
            epoch_index: 0,
            augment: self.augment.as_ref(),
            batch: Batch::new(),
            validation: self.validation,
            eval_batch_size: self.eval_batch_size.unwrap_or(self.batch_size),
            eval_ws: None,
            eval_buffer: Batch::new(),
            comm: self.distributed,
            data_parallel: None,
            train_data: train,
            steps_per_epoch: self.steps_per_epoch,
            served: 0,
        };
        self.run(model, optimizer, &mut feed)
    }

    /// Trains a model of any inputs and targets (token ids, sequence lengths, a label per
    /// position) on batches from a [`BatchSource`], with everything [`Trainer::fit`] does:
    /// shuffling, schedules, clipping, validation (from
    /// [`Trainer::validation_batches`]), early stopping, checkpoints and resuming, progress,
    /// plots and [data parallelism](Trainer::distributed) (each rank trains on its piece of
    /// every batch). Every model that declares a `loss` is [`Trainable`].
    ///
    /// Accuracy is reported for models with one class-label target whose first output has
    /// one class axis more than the labels (`[B, C]` for `[B]` labels, `[B, T, C]` for
    /// `[B, T]`): the fraction of labelled positions predicted right, leaving out the loss's
    /// `ignore_index`. The loss of an epoch is the mean of its batches' losses weighted by
    /// their sample counts.
    ///
    /// ```no_run
    /// use kiln_runtime::text::{LabelledText, TextCsvOptions, Tokenizer, Vocab};
    /// use kiln_runtime::train::Trainer;
    /// use kiln_runtime::{Adam, Trainable};
    ///
    /// # fn demo<M: Trainable<f32>>(model: &mut M) -> kiln_runtime::Result<()> {
    /// let data = LabelledText::read_csv("reviews.csv", &TextCsvOptions::default())?;
    /// let split = data.split(0.8, 0.1, 42);
    /// let vocab = Vocab::builder(Tokenizer::Words).lowercase(true).build(split.train.texts());
    /// let (train, val) = (split.train.encode(&vocab), split.validation.encode(&vocab));
    /// // A model with `input tokens: [B, T] tokens N; input len: [B] lengths T;
    /// // target label: [B] classes C;`
    /// let history = Trainer::new(5, 64)
    ///     .validation_batches(&val.batches())
    ///     .fit_batches(model, &mut Adam::new(1e-3), &train.batches())?;
    /// println!("{history}");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// - [`Error::Data`] before training if the data's arrays do not match the model's
    ///   declared inputs and targets (their number, order, kinds and ranks), if the training
    ///   data is empty, or with [`Trainer::validation`] (give
    ///   [`Trainer::validation_batches`]);
    /// - otherwise as [`Trainer::fit`].
    pub fn fit_batches<M, O, S>(
        &self,
        model: &mut M,
        optimizer: &mut O,
        train: &S,
    ) -> Result<History>
    where
        M: Trainable<F>,
        O: StatefulOptimizer<F>,
        S: BatchSource<F> + ?Sized,
    {
        if self.validation.is_some() {
            return Err(Error::Data {
                what: "Trainer",
                problem: "validation gives a Dataset, which `fit` takes; fit_batches validates \
                          on a BatchSource: give it with .validation_batches(..)"
                    .to_string(),
            });
        }
        if self.augment.is_some() {
            return Err(Error::Data {
                what: "Trainer",
                problem: "augment changes the images of a Dataset, which `fit` takes; the \
                          batches of fit_batches may hold anything: change them in the \
                          BatchSource (Augment::apply)"
                    .to_string(),
            });
        }
        let mut feed = BatchFeed::<F, M, S> {
            train_data: train,
            comm: self.distributed,
            data_parallel: None,
            local: 0,
            validation: self.validation_batches,
            batch_size: self.batch_size.max(1),
            eval_batch_size: self.eval_batch_size.unwrap_or(self.batch_size).max(1),
            drop_last: self.drop_last,
            shuffle_seed: self.shuffle_seed,
            steps_per_epoch: self.steps_per_epoch,
            order: None,
            batch: Vec::new(),
            eval_ws: None,
        };
        self.run(model, optimizer, &mut feed)
    }

    /// The training loop, for either kind of data.
    fn run<M, O, Fd>(&self, model: &mut M, optimizer: &mut O, feed: &mut Fd) -> Result<History>
    where
        M: Model<F>,
        O: StatefulOptimizer<F>,
        Fd: Feed<F, M>,
    {
        if self.batch_size == 0 {
            return Err(Error::Data {
                what: "Trainer",
                problem: "a batch size of 0: give `Trainer::new(epochs, batch_size)` a batch \
                          size of at least 1"
                    .to_string(),
            });
        }
        if let Some(decay) = self.ema.filter(|d| !(0.0..=1.0).contains(d)) {
            return Err(Error::Data {
                what: "Trainer",
                problem: format!(
                    "an average's decay of {decay}: give Trainer::ema a decay in [0, 1] \
                     (0.999 and 0.9999 are usual)"
                ),
            });
        }
        if self.schedule.is_some() && self.plateau.is_some() {
            return Err(Error::Data {
                what: "Trainer",
                problem: "both a schedule and reduce_lr_on_plateau set the learning rate: give \
                          one of them"
                    .to_string(),
            });
        }
        let cycles_momentum = self
            .schedule
            .as_ref()
            .is_some_and(|s| s.momentum(0, 0).is_some());
        if cycles_momentum && optimizer.momentum_term().is_none() {
            return Err(Error::Data {
                what: "Trainer",
                problem: "the schedule sets the momentum (OneCycleLr cycles it, as PyTorch's \
                          OneCycleLR does by default), and this optimizer has none: use \
                          `.cycle_momentum(false)`"
                    .to_string(),
            });
        }
        let (mut counts, mut val_counts) = self.metric_counts(feed)?;
        let mut pending = Accumulated::<F>::new(self.accumulate);
        feed.check(model, &mut counts)?;
        self.check_schedule_length(feed.num_batches())?;
        if let Some(dir) = self.checkpoints.as_ref().filter(|dir| dir.is_file()) {
            return Err(Error::File {
                path: dir.clone(),
                message: "is a file: checkpoints go into a directory".to_string(),
            });
        }
        if let Some(dir) = &self.checkpoints {
            if optimizer.export_state().is_none() {
                return Err(Error::File {
                    path: dir.clone(),
                    message: "the optimizer cannot export its state (its StatefulOptimizer \
                              implementation has no export_state), so it cannot be \
                              checkpointed"
                        .to_string(),
                });
            }
        }
        let rank = self.distributed.map_or(0, |c| c.rank());
        let root = rank == 0;
        let reporter = Reporter::new(self.progress && root, self.epochs);
        let mut state = self.start(model, optimizer, &reporter)?;
        // After `start`: a resumed model too begins from rank 0's weights.
        feed.begin(model)?;

        let mut ws = Fd::Workspace::default();
        Fd::check_finite(&mut ws, self.detect_anomaly);
        if let Some(freeze) = optimizer.frozen() {
            // The backward pass skips the layers the optimizer leaves alone.
            let mut frozen = Vec::new();
            model.visit_params(&mut |name, p| {
                if freeze.chooses(name, p.shape()) {
                    frozen.push(name);
                }
            });
            Fd::freeze(&mut ws, &|name| frozen.contains(&name));
        }
        let mut grads = model.zero_grads();
        // The model's own weights while the average stands in for them (with `ema`).
        let mut own = Weights::default();

        let stopped = state
            .early_stopping
            .as_ref()
            .is_some_and(|s| s.stopped_at().is_some());
        if !stopped {
            for epoch in state.epochs_done..self.epochs {
                let started = Instant::now();
                // Dropout draws from the workspace's generator: seeding it from the epoch makes
                // a run, and a resumed run, repeat exactly.
                let dropout_seed = self.shuffle_seed.unwrap_or(0)
                    ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                Fd::reseed(&mut ws, rank_seed(dropout_seed, rank));
                if let Some(plateau) = &self.plateau {
                    // From the history, which a checkpoint keeps: a resumed run continues at
                    // the rate the interrupted one had.
                    let losses = state
                        .history
                        .epochs
                        .iter()
                        .map(|r| r.val_loss.unwrap_or(r.train_loss));
                    optimizer.set_learning_rate(plateau.lr_after(losses, state.base_lr));
                }
                let mut bar = reporter.start_epoch(epoch, feed.num_batches());
                let mut acc = MetricsAccumulator::default();
                counts.reset();
                let mut first_lr = None;
                feed.start_epoch(epoch);
                let mut done = 0;
                pending.clear();
                while feed.next_batch()? {
                    if let Some(schedule) = &self.schedule {
                        optimizer.set_learning_rate(schedule.lr(
                            epoch,
                            state.steps_done,
                            state.base_lr,
                        ));
                        if let Some(momentum) = schedule.momentum(epoch, state.steps_done) {
                            optimizer.set_momentum_term(momentum);
                        }
                    }
                    first_lr.get_or_insert_with(|| optimizer.learning_rate());
                    let when = When {
                        epoch: epoch + 1,
                        step: state.steps_done + 1,
                        batch: done + 1,
                    };
                    // Within a group of accumulated batches, data parallelism keeps each
                    // rank's gradients and sums them once, in the group's last batch.
                    let sync = pending.closes_group(done + 1 == feed.num_batches());
                    let trained = feed
                        .train(model, &mut ws, &mut grads, &mut counts, sync)
                        .map_err(|e| when.locate(e))?;
                    if let Some(loss) = trained.loss {
                        if !loss.is_finite() {
                            return Err(self.non_finite(
                                format!(
                                    "non-finite loss ({}) in batch {}, before its optimizer step",
                                    kind(loss.to_f64()),
                                    when.batch
                                ),
                                &when,
                            ));
                        }
                        acc.add_positions(loss.to_f64(), trained.samples, trained.correct_of);
                    }
                    done += 1;
                    let step = pending.add::<M>(
                        &mut grads,
                        trained.samples,
                        done == feed.num_batches(),
                        feed.sums_accumulated(),
                    );
                    if step {
                        if let Some(max_norm) = self.clip_grad_norm {
                            // Frozen parameters' gradients stay out of the norm, as PyTorch's
                            // `clip_grad_norm_` leaves out parameters without `requires_grad`.
                            if let Some(freeze) = optimizer.frozen() {
                                crate::optim::zero_frozen_grads::<F, M>(&mut grads, &freeze);
                            }
                            clip_grad_norm::<F, M>(&mut grads, max_norm);
                        }
                        optimizer.step(model, &grads);
                        state.steps_done += 1;
                        if let (Some(decay), Some(average)) = (self.ema, state.ema.as_mut()) {
                            update_average(average, &*model, decay)?;
                        }
                    }
                    let so_far = acc.metrics();
                    bar.batch(Running {
                        batches_done: done,
                        loss: so_far.loss,
                        accuracy: so_far.accuracy,
                        metrics: &counts,
                        samples_per_second: so_far.samples as f64
                            / started.elapsed().as_secs_f64().max(1e-9),
                    });
                }
                acc = feed.end_epoch(model, acc, &mut counts)?;
                let train_seconds = started.elapsed().as_secs_f64();
                let train_metrics = acc.metrics();
                let val_metrics = match state.ema.as_ref().filter(|a| !a.is_empty()) {
                    Some(average) => {
                        // The average is evaluated in the model's place, and the model's own
                        // weights put back whatever the evaluation returns.
                        own.capture_from(&*model);
                        average.restore(model)?;
                        let metrics = feed.evaluate(&*model, &mut val_counts);
                        own.restore(model)?;
                        metrics?
                    }
                    None => feed.evaluate(&*model, &mut val_counts)?,
                };
                let record = EpochRecord {
                    epoch,
                    train_loss: train_metrics.loss,
                    train_accuracy: train_metrics.accuracy,
                    val_loss: val_metrics.map(|m| m.loss),
                    val_accuracy: val_metrics.and_then(|m| m.accuracy),
                    train_metrics: counts.values_named("", true),
                    val_metrics: match val_metrics {
                        Some(_) => val_counts.values_named("val_", true),
                        None => MetricValues::new(),
                    },
                    lr: first_lr.unwrap_or_else(|| optimizer.learning_rate()),
                    seconds: started.elapsed().as_secs_f64(),
                    samples_per_second: train_metrics.samples as f64 / train_seconds.max(1e-9),
                };
                let monitored = monitored_value(state.early_stopping.as_ref(), &record);
                let best_name = self.save_best.as_ref().map(|best| {
                    best.monitor.clone().unwrap_or_else(|| {
                        let name = if record.val_loss.is_some() {
                            "val_loss"
                        } else {
                            "loss"
                        };
                        name.to_string()
                    })
                });
                bar.finish(&record);
                state.history.push(record);
                state.epochs_done = epoch + 1;
                if let (Some(best), Some(name), true) = (&self.save_best, best_name, root) {
                    // The best epoch from the whole history, so that a resumed run does not
                    // overwrite a better file from before; weights that are not finite are
                    // never written.
                    let is_best = state.history.best_epoch_by(&name, best.mode) == Some(epoch);
                    match state.ema.as_ref().filter(|a| !a.is_empty()) {
                        Some(average) if is_best && average.first_non_finite().is_none() => {
                            average.save(&best.path)?;
                        }
                        Some(_) => {}
                        None if is_best && first_non_finite(&*model).is_none() => {
                            crate::io::save(&*model, &best.path)?;
                        }
                        None => {}
                    }
                }

                let mut stop = false;
                if let Some(early) = &mut state.early_stopping {
                    match early.update(epoch, monitored) {
                        Verdict::Improved => {
                            if let Some(best) = &mut state.best_weights {
                                match state.ema.as_ref().filter(|a| !a.is_empty()) {
                                    Some(average) => best.clone_from(average),
                                    None => best.capture_from(&*model),
                                }
                            }
                        }
                        Verdict::Wait => {}
                        Verdict::Stop => {
                            state.history.stopped_early = Some(epoch);
                            stop = true;
                        }
                    }
                }
                if let Some(dir) = self.checkpoints.as_ref().filter(|_| root) {
                    // Never checkpoint weights that are not finite: the last good checkpoint
                    // must stay the latest.
                    if let Some((name, value)) = first_non_finite(&*model) {
                        let when = When {
                            epoch: epoch + 1,
                            step: state.steps_done,
                            batch: done,
                        };
                        return Err(self.non_finite(
                            format!(
                                "non-finite weights ({} in `{name}`) after the last batch",
                                kind(value)
                            ),
                            &when,
                        ));
                    }
                    if let Some(exported) = optimizer.export_state() {
                        state.optimizer = exported;
                    }
                    state.save(dir, &*model)?;
                }
                #[cfg(feature = "plot")]
                if let Some(path) = self.plot.as_ref().filter(|_| root) {
                    state.history.plot(path)?;
                }
                if self.callback_stops(&state.history)? {
                    break;
                }
                if stop {
                    let (best_epoch, best_value) = state
                        .early_stopping
                        .as_ref()
                        .and_then(EarlyStopping::best)
                        .unwrap_or((epoch, monitored));
                    let name = state
                        .early_stopping
                        .as_ref()
                        .and_then(EarlyStopping::monitored)
                        .unwrap_or("loss");
                    let waited = epoch - best_epoch;
                    reporter.println(format!(
                        "Early stopping: no improvement for {waited} epoch{}; the best epoch was \
                         {} ({name} {best_value:.4})",
                        if waited == 1 { "" } else { "s" },
                        best_epoch + 1
                    ));
                    break;
                }
            }
        }

        // Keras's `finalize_variable_values`: the model ends with the average it was judged by.
        if let Some(average) = state.ema.as_ref().filter(|a| !a.is_empty()) {
            average.restore(model)?;
        }
        if let (Some(early), Some(best)) = (&state.early_stopping, &state.best_weights) {
            if early.restores_best_weights() && !best.is_empty() {
                best.restore(model)?;
                if let Some((epoch, _)) = early.best() {
                    reporter.println(format!(
                        "Restored the weights of the best epoch, {}",
                        epoch + 1
                    ));
                }
            }
        }
        Ok(state.history)
    }

    /// Whether [`Trainer::on_epoch_end`]'s callback ends training after the last epoch of
    /// `history` (on every rank when any rank's does).
    fn callback_stops(&self, history: &History) -> Result<bool> {
        let (Some(callback), Some(record)) = (&self.on_epoch_end, history.last()) else {
            return Ok(false);
        };
        let stop = callback(record).is_break();
        match self.distributed {
            Some(comm) if comm.size() > 1 => {
                let mut any = [0.0];
                comm.all_reduce_sum_f64(&[f64::from(u8::from(stop))], &mut any)?;
                Ok(any[0] > 0.0)
            }
            _ => Ok(stop),
        }
    }

    /// Refuses a schedule laid out for fewer optimizer steps than the run takes
    /// ([`LrSchedule::max_steps`]), before anything is trained: `batches` per epoch, grouped
    /// `accumulate` at a time (the last group of an epoch may be short).
    fn check_schedule_length(&self, batches: usize) -> Result<()> {
        let Some(max) = self.schedule.as_ref().and_then(|s| s.max_steps()) else {
            return Ok(());
        };
        let per_epoch = batches.div_ceil(self.accumulate);
        let planned = self.epochs.saturating_mul(per_epoch);
        if planned <= max {
            return Ok(());
        }
        Err(Error::Data {
            what: "Trainer",
            problem: format!(
                "the schedule is laid out for {max} optimizer steps (OneCycleLr's \
                 `total_steps`), but this run takes {planned} ({} epochs of {per_epoch}): give \
                 the schedule {planned} steps, or train fewer (PyTorch's OneCycleLR raises an \
                 error at step {})",
                self.epochs,
                max + 1
            ),
        })
    }

    /// The counters of the run's metrics, for the training batches and for validation, after
    /// checking the early-stopping monitor's name against what the run computes.
    fn metric_counts<M, Fd>(&self, feed: &Fd) -> Result<(MetricCounts, MetricCounts)>
    where
        M: Model<F>,
        Fd: Feed<F, M>,
    {
        let labels = feed.labels();
        let mut metrics = self.metrics.clone();
        let validation = self.validation.is_some() || self.validation_batches.is_some();
        let monitors = [
            self.early_stopping
                .as_ref()
                .and_then(EarlyStopping::monitored),
            self.save_best.as_ref().and_then(|b| b.monitor.as_deref()),
        ];
        for name in monitors.into_iter().flatten() {
            let mut available = vec!["loss".to_string()];
            if labels.is_some() {
                available.push("accuracy".to_string());
            }
            available.extend(
                metrics
                    .iter()
                    .filter(|m| **m != Metric::Accuracy)
                    .map(Metric::name),
            );
            if validation {
                let val: Vec<String> = available.iter().map(|n| format!("val_{n}")).collect();
                available.extend(val);
            }
            if !available.iter().any(|n| n == name) {
                let hint = if !validation && name.starts_with("val_") {
                    " (validation figures need validation data)"
                } else {
                    " (a metric's figures need it in Trainer::metrics)"
                };
                return Err(Error::Data {
                    what: "Trainer",
                    problem: format!(
                        "{} monitors `{name}`, which this run does not compute{hint}; \
                         it computes {}",
                        if Some(name) == monitors[0] {
                            "early stopping"
                        } else {
                            "save_best"
                        },
                        available.join(", ")
                    ),
                });
            }
            // Monitoring an accuracy: a model whose output does not fit its labels is an
            // error now rather than an accuracy that is never there.
            if name == "accuracy" || name == "val_accuracy" {
                metrics.push(Metric::Accuracy);
            }
        }
        let (classes, ignored) = labels.unwrap_or((0, None));
        let counts = MetricCounts::new(&metrics, classes, ignored)?;
        Ok((counts.clone(), counts))
    }

    /// The error that stops training on a non-finite loss or weights: what, when, and what
    /// was kept.
    fn non_finite(&self, what: String, when: &When) -> Error {
        let mut kept = match &self.checkpoints {
            Some(dir) => match Checkpoint::<F>::latest(dir) {
                Ok(latest) => format!("the last good checkpoint, {}, is kept", latest.display()),
                Err(_) => format!("no checkpoint was written to {} yet", dir.display()),
            },
            None => "the model keeps the weights before this step".to_string(),
        };
        if !self.detect_anomaly {
            kept.push_str(
                " (Trainer::detect_anomaly(true) finds the first op that computes a NaN or \
                 infinity)",
            );
        }
        Error::NonFiniteTraining {
            what,
            epoch: when.epoch,
            step: when.step,
            kept,
        }
    }

    /// The state at the start of `fit`: fresh, or read from the checkpoint to resume from
    /// (which also loads the model and the optimizer).
    fn start<M, O>(
        &self,
        model: &mut M,
        optimizer: &mut O,
        reporter: &Reporter,
    ) -> Result<Checkpoint<F>>
    where
        M: Model<F>,
        O: StatefulOptimizer<F>,
    {
        let fresh_early = self.early_stopping.clone();
        let Some(dir) = &self.resume_from else {
            reporter.println(summary_for(model, &*optimizer).to_string());
            let mut state = Checkpoint::new(
                optimizer
                    .export_state()
                    .unwrap_or_else(|| OptimizerState::new("custom")),
                optimizer.learning_rate(),
            );
            state.best_weights = fresh_early
                .as_ref()
                .filter(|e| e.restores_best_weights())
                .map(|_| Weights::default());
            state.early_stopping = fresh_early;
            state.ema = self.ema.map(|_| Weights::default());
            return Ok(state);
        };
        if !Checkpoint::<F>::exists(dir) {
            return Err(Error::File {
                path: dir.join("checkpoint.json"),
                message: "no checkpoint to resume from (train with .checkpoints(dir) first, or \
                          check Checkpoint::exists before .resume_from)"
                    .to_string(),
            });
        }
        // Read everything before changing anything: a checkpoint that does not fit the model
        // or the optimizer leaves both as they were (`import_state` changes nothing when it
        // fails, and the weights cannot fail to go into the model they were checked against).
        let (mut probe, weights) = Checkpoint::read(dir, &*model)?;
        // The trainer never writes non-finite weights; a checkpoint holding some was changed
        // since, and training from it would only stop at its first loss.
        if let Some((name, value)) = weights.first_non_finite() {
            return Err(Error::File {
                path: dir.to_path_buf(),
                message: format!(
                    "the checkpoint's `{name}` holds {}: it cannot be resumed from",
                    kind(value.to_f64())
                ),
            });
        }
        optimizer.import_state(&probe.optimizer)?;
        weights.restore(model)?;
        // The early-stopping rule comes from this trainer; its progress (and the best weights)
        // from the checkpoint when the checkpointed run used the same rule, else it starts
        // afresh.
        let saved_best = probe.best_weights.take();
        (probe.early_stopping, probe.best_weights) =
            match (fresh_early, probe.early_stopping.take()) {
                (Some(rule), Some(saved))
                    if rule.patience() == saved.patience()
                        && rule.min_delta() == saved.min_delta()
                        && rule.monitored() == saved.monitored()
                        && rule.mode() == saved.mode() =>
                {
                    let restore = rule.restores_best_weights();
                    let best = restore.then(|| saved_best.unwrap_or_default());
                    (Some(saved.restore_best_weights(restore)), best)
                }
                (Some(rule), _) => {
                    let best = rule.restores_best_weights().then(Weights::default);
                    (Some(rule), best)
                }
                (None, _) => (None, None),
            };
        // The average continues when the checkpointed run kept one; else it starts afresh.
        probe.ema = match (self.ema, probe.ema.take()) {
            (Some(_), Some(saved)) => Some(saved),
            (Some(_), None) => Some(Weights::default()),
            (None, _) => None,
        };
        reporter.println(summary_for(model, &*optimizer).to_string());
        reporter.println(format!(
            "Resuming from {} after epoch {} ({} optimizer steps)",
            dir.display(),
            probe.epochs_done,
            probe.steps_done
        ));
        Ok(probe)
    }
}

/// One step of [`Trainer::ema`]'s average: the first copies the model.
fn update_average<F: Float, M: Model<F>>(
    average: &mut Weights<F>,
    model: &M,
    decay: f64,
) -> Result<()> {
    if average.is_empty() {
        average.capture_from(model);
        Ok(())
    } else {
        average.average_towards(model, F::from_f64(1.0 - decay))
    }
}

/// When in a run something happened, counting from 1.
struct When {
    epoch: usize,
    step: usize,
    batch: usize,
}

impl When {
    /// Adds the epoch, step and batch to a model's non-finite error.
    fn locate(&self, error: Error) -> Error {
        match error {
            Error::NonFinite(mut found) => {
                found.epoch = Some(self.epoch);
                found.step = Some(self.step);
                found.batch = Some(self.batch);
                Error::NonFinite(found)
            }
            other => other,
        }
    }
}

/// Where [`Trainer::save_best`] writes and what it watches (`None`: the validation loss, or
/// the training loss without validation data).
#[derive(Clone, Debug)]
struct SaveBest {
    path: PathBuf,
    monitor: Option<String>,
    mode: Mode,
}

/// The gradients of the batches since the last optimizer step, for
/// [`Trainer::accumulate_grad_batches`]: flat, in the order the model visits them, each
/// batch's mean gradient times its sample count, so that the step gets the mean over all the
/// group's samples, as one batch of them all would give (a short last batch counts for what
/// it holds).
struct Accumulated<F> {
    every: usize,
    sum: Vec<F>,
    batches: usize,
    samples: usize,
}

impl<F: Float> Accumulated<F> {
    fn new(every: usize) -> Self {
        Accumulated {
            every,
            sum: Vec::new(),
            batches: 0,
            samples: 0,
        }
    }

    /// Forgets what was summed (an epoch starts with a fresh group).
    fn clear(&mut self) {
        self.batches = 0;
        self.samples = 0;
    }

    /// Whether the next batch closes its group (it is the group's `every`-th, or `last` of
    /// the epoch): the optimizer steps after it.
    fn closes_group(&self, last: bool) -> bool {
        self.every == 1 || self.batches + 1 == self.every || last
    }

    /// Adds a batch's `grads` (the mean over its `samples`); when the group is complete (or
    /// `last` of the epoch), turns `grads` into the group's mean and returns `true`: time for
    /// the optimizer step. With `summed_elsewhere` (data parallelism, which keeps the group's
    /// gradients itself and sums them in the group's last step), only counts.
    fn add<M: Model<F>>(
        &mut self,
        grads: &mut M::Grads,
        samples: usize,
        last: bool,
        summed_elsewhere: bool,
    ) -> bool {
        if self.every == 1 {
            return true;
        }
        let step = self.closes_group(last);
        let first = self.batches == 0;
        self.batches += 1;
        if summed_elsewhere {
            if step {
                self.clear();
            }
            return step;
        }
        let weight = F::from_usize(samples);
        if !step {
            // Into the sum: the first batch of a group overwrites it, so nothing needs zeroing.
            // An empty batch's gradients are stale: they are not read.
            let (sum, mut i) = (&mut self.sum, 0);
            M::visit_grads(grads, &mut |_, view| {
                for &g in view.iter() {
                    let g = if samples == 0 { F::ZERO } else { g * weight };
                    match sum.get_mut(i) {
                        Some(slot) if !first => *slot += g,
                        Some(slot) => *slot = g,
                        None => sum.push(g),
                    }
                    i += 1;
                }
            });
            self.samples += samples;
            return false;
        }
        if !first {
            let (sum, mut i) = (&self.sum, 0);
            let total = self.samples + samples;
            let scale = F::from_f64(1.0 / total.max(1) as f64);
            M::visit_grads_mut(grads, &mut |_, mut view| {
                for g in view.iter_mut() {
                    let own = if samples == 0 { F::ZERO } else { *g * weight };
                    *g = (sum[i] + own) * scale;
                    i += 1;
                }
            });
        }
        self.clear();
        true
    }
}

/// The figure early stopping watches in `record`: its monitor's, else the validation loss,
/// else the training loss. A figure the epoch lacks is NaN, which never improves.
fn monitored_value(early: Option<&EarlyStopping>, record: &EpochRecord) -> f64 {
    match early.and_then(EarlyStopping::monitored) {
        Some(name) => record.metric(name).unwrap_or(f64::NAN),
        None => record.val_loss.unwrap_or(record.train_loss),
    }
}

/// `NaN`, `inf` or `-inf`.
fn kind(value: f64) -> &'static str {
    if value.is_nan() {
        "NaN"
    } else if value > 0.0 {
        "inf"
    } else {
        "-inf"
    }
}

/// The first parameter or buffer of `model` holding a NaN or infinity, and that value.
fn first_non_finite<F: Float, M: Model<F>>(model: &M) -> Option<(&'static str, f64)> {
    let mut found = None;
    let mut scan = |name: &'static str, view: ndarray::ArrayViewD<'_, F>| {
        if found.is_none() {
            if let Some(v) = view.iter().find(|v| !v.is_finite()) {
                found = Some((name, v.to_f64()));
            }
        }
    };
    model.visit_params(&mut scan);
    model.visit_buffers(&mut scan);
    found
}

/// Checks before training that `data` fits the model: samples of the input's rank (batch
/// axis aside) and targets of the model's kind, so that a mistake is reported once, clearly,
/// rather than as the first batch's shape error.
fn check_compatible<F: Float, M: Supervised<F>>(
    data: &(impl Dataset<F> + ?Sized),
    what: &'static str,
) -> Result<()> {
    let problem = |problem: String| Err(Error::Data { what, problem });
    if data.is_empty() {
        let fix = if what == "validation data" {
            "give validation data with samples, or none"
        } else {
            "give it at least one sample"
        };
        return problem(format!("it has no samples: {fix}"));
    }
    let sample = data.sample_shape();
    if sample.len() + 1 != M::INPUT_RANK {
        let hint = if M::INPUT_RANK == 2 && sample.len() > 1 {
            format!(
                ", for example with TensorDataset::reshape_samples(&[{}])",
                sample.iter().product::<usize>()
            )
        } else {
            String::new()
        };
        return problem(format!(
            "samples of shape {sample:?} (rank {}), but the model's input takes samples of rank \
             {} (rank {} with the batch axis): reshape the samples to the model's input \
             shape{hint}",
            sample.len(),
            M::INPUT_RANK.saturating_sub(1),
            M::INPUT_RANK
        ));
    }
    match (M::CLASSES, data.targets()) {
        (Some(classes), TargetKind::Labels { classes: have }) if have > classes => {
            problem(format!(
                "labels of {have} classes (up to {}), but the model scores {classes}",
                have - 1
            ))
        }
        (Some(classes), TargetKind::Values { shape }) => problem(format!(
            "float targets of shape {shape:?}, but the model's target is class labels \
             (`classes {classes}`): give the data labels (TensorDataset::with_labels)"
        )),
        (None, TargetKind::Labels { classes }) => problem(format!(
            "class labels ({classes} classes), but the model's target is float values: give \
             the data float targets (TensorDataset::with_values), or declare the model's \
             target with `classes`"
        )),
        _ => Ok(()),
    }
}

/// The model's summary, the parameters `optimizer` freezes counted as non-trainable.
fn summary_for<F: Float, M: Model<F>, O: crate::Optimizer<F> + ?Sized>(
    model: &M,
    optimizer: &O,
) -> crate::Summary {
    match optimizer.frozen() {
        Some(freeze) => model.summary().with_frozen(model, &freeze),
        None => model.summary(),
    }
}
