//! [`History`]: what happened in each epoch of a training run.

use super::early_stopping::Mode;
use super::files::Fields;
use super::metric::MetricValues;
use crate::json::Value;
use crate::{Error, Result};
use std::fmt;
use std::path::Path;

/// The figures of one epoch.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochRecord {
    /// The epoch's index, from 0 (progress output shows it from 1, as Keras does).
    pub epoch: usize,
    /// The mean training loss per sample, measured on each batch before its update (in
    /// training mode: with dropout, as Keras and PyTorch loops report it).
    pub train_loss: f64,
    /// The training accuracy, for class labels (same measurement as `train_loss`).
    pub train_accuracy: Option<f64>,
    /// The mean loss per sample on the validation data after the epoch, in inference mode.
    pub val_loss: Option<f64>,
    /// The validation accuracy, for class labels.
    pub val_accuracy: Option<f64>,
    /// The training figures of the trainer's [metrics](super::Trainer::metrics) but
    /// accuracy (which is `train_accuracy`), named as [`Metric::name`](super::Metric::name)
    /// gives them (`f1`, `top_5_accuracy`, `mae`), measured as `train_loss` is.
    pub train_metrics: MetricValues,
    /// The validation figures of the trainer's metrics but accuracy, named with the prefix
    /// `val_` (`val_f1`).
    pub val_metrics: MetricValues,
    /// The learning rate of the epoch's first optimizer step.
    pub lr: f64,
    /// Wall-clock seconds for the epoch: training and validation (checkpoints and plots
    /// excluded).
    pub seconds: f64,
    /// Training samples per second (the training pass only).
    pub samples_per_second: f64,
}

/// Per-epoch records of a training run, as Keras' `History`: losses, accuracies, learning
/// rate and speed. Written to CSV with [`History::to_csv`], plotted with `History::plot`
/// (feature `plot`), printed as a table with `Display`.
///
/// ```
/// use kiln_runtime::train::{EpochRecord, History, MetricValues};
/// let mut history = History::default();
/// for (epoch, val_loss) in [0.9, 0.5, 0.7].into_iter().enumerate() {
///     history.push(EpochRecord {
///         epoch,
///         train_loss: 1.0 / (epoch + 1) as f64,
///         train_accuracy: None,
///         val_loss: Some(val_loss),
///         val_accuracy: None,
///         train_metrics: MetricValues::new(),
///         val_metrics: MetricValues::new(),
///         lr: 0.1,
///         seconds: 1.5,
///         samples_per_second: 1000.0,
///     });
/// }
/// assert_eq!(history.best_epoch(), Some(1));
/// assert!(history.to_csv().starts_with("epoch,train_loss,train_accuracy,val_loss,"));
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    /// One record per completed epoch, in order.
    pub epochs: Vec<EpochRecord>,
    /// The epoch after which early stopping ended the run, if it did.
    pub stopped_early: Option<usize>,
}

/// The CSV columns, in order.
const COLUMNS: [&str; 8] = [
    "epoch",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "lr",
    "seconds",
    "samples_per_second",
];

impl EpochRecord {
    /// The figure named `name`, as Keras' logs name them: `loss`, `accuracy`, `val_loss`,
    /// `val_accuracy`, `lr`, or a metric's (`f1`, `val_f1`, `top_5_accuracy`, `val_mae`, ...);
    /// `None` when the epoch does not have it.
    ///
    /// ```
    /// # use kiln_runtime::train::{EpochRecord, MetricValues};
    /// let mut val_metrics = MetricValues::new();
    /// val_metrics.push("val_f1", 0.8);
    /// let record = EpochRecord {
    ///     epoch: 0,
    ///     train_loss: 0.5,
    ///     train_accuracy: Some(0.9),
    ///     val_loss: Some(0.6),
    ///     val_accuracy: Some(0.85),
    ///     train_metrics: MetricValues::new(),
    ///     val_metrics,
    ///     lr: 1e-3,
    ///     seconds: 1.0,
    ///     samples_per_second: 100.0,
    /// };
    /// assert_eq!(record.metric("val_f1"), Some(0.8));
    /// assert_eq!(record.metric("accuracy"), Some(0.9));
    /// assert_eq!(record.metric("f1"), None);
    /// ```
    pub fn metric(&self, name: &str) -> Option<f64> {
        match name {
            "loss" => Some(self.train_loss),
            "accuracy" => self.train_accuracy,
            "val_loss" => self.val_loss,
            "val_accuracy" => self.val_accuracy,
            "lr" => Some(self.lr),
            _ => self
                .train_metrics
                .get(name)
                .or_else(|| self.val_metrics.get(name)),
        }
    }
}

impl History {
    /// Appends an epoch's record.
    pub fn push(&mut self, record: EpochRecord) {
        self.epochs.push(record);
    }

    /// The number of completed epochs.
    pub fn len(&self) -> usize {
        self.epochs.len()
    }

    /// Whether no epoch has completed.
    pub fn is_empty(&self) -> bool {
        self.epochs.is_empty()
    }

    /// The last epoch's record.
    pub fn last(&self) -> Option<&EpochRecord> {
        self.epochs.last()
    }

    /// Whether any epoch has a validation loss.
    pub fn has_validation(&self) -> bool {
        self.epochs.iter().any(|r| r.val_loss.is_some())
    }

    /// The index of the epoch with the lowest validation loss, or the lowest training loss when
    /// there was no validation; the earliest on ties; NaN losses never count. This is the epoch
    /// whose weights early stopping restores.
    pub fn best_epoch(&self) -> Option<usize> {
        let monitored = |r: &EpochRecord| {
            if self.has_validation() {
                r.val_loss
            } else {
                Some(r.train_loss)
            }
        };
        let mut best: Option<(usize, f64)> = None;
        for r in &self.epochs {
            if let Some(loss) = monitored(r).filter(|l| !l.is_nan()) {
                if best.is_none_or(|(_, b)| loss < b) {
                    best = Some((r.epoch, loss));
                }
            }
        }
        best.map(|(epoch, _)| epoch)
    }

    /// The index of the epoch with the best figure named `name` (as [`EpochRecord::metric`]
    /// looks it up), the lowest in [`Mode::Min`] and the highest in [`Mode::Max`]; the earliest
    /// on ties; NaN and missing figures never count. With early stopping on the same figure
    /// and a `min_delta` of 0, this is the epoch whose weights it restores.
    pub fn best_epoch_by(&self, name: &str, mode: Mode) -> Option<usize> {
        let mut best: Option<(usize, f64)> = None;
        for r in &self.epochs {
            if let Some(value) = r.metric(name).filter(|v| !v.is_nan()) {
                if best.is_none_or(|(_, b)| mode.improves(value, b, 0.0)) {
                    best = Some((r.epoch, value));
                }
            }
        }
        best.map(|(epoch, _)| epoch)
    }

    /// The metric names of the records, training ones then validation ones, each once, in
    /// the order they first appear.
    fn metric_columns(&self) -> (Vec<&str>, Vec<&str>) {
        let mut train: Vec<&str> = Vec::new();
        let mut val: Vec<&str> = Vec::new();
        for r in &self.epochs {
            for name in r.train_metrics.names() {
                if !train.contains(&name) {
                    train.push(name);
                }
            }
            for name in r.val_metrics.names() {
                if !val.contains(&name) {
                    val.push(name);
                }
            }
        }
        (train, val)
    }

    /// The training losses, one per epoch (for plotting or assertions).
    pub fn train_losses(&self) -> Vec<f64> {
        self.epochs.iter().map(|r| r.train_loss).collect()
    }

    /// The validation losses, one per epoch that had validation.
    pub fn val_losses(&self) -> Vec<f64> {
        self.epochs.iter().filter_map(|r| r.val_loss).collect()
    }

    /// The history as CSV, one row per epoch, with the header
    /// `epoch,train_loss,train_accuracy,val_loss,val_accuracy,lr,seconds,samples_per_second`
    /// (Keras' `CSVLogger` layout: epochs from 0), followed by one column per
    /// [metric](super::Trainer::metrics), the training ones and then the validation ones
    /// (`...,samples_per_second,f1,top_3_accuracy,val_f1,val_top_3_accuracy`). A missing
    /// figure is an empty field; numbers are written in full precision (Rust's shortest
    /// round-trip form), NaN as `NaN`.
    pub fn to_csv(&self) -> String {
        let (train_names, val_names) = self.metric_columns();
        let mut header: Vec<&str> = COLUMNS.to_vec();
        header.extend(&train_names);
        header.extend(&val_names);
        let mut out = header.join(",");
        out.push('\n');
        let opt = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
        for r in &self.epochs {
            let mut fields = vec![
                r.epoch.to_string(),
                r.train_loss.to_string(),
                opt(r.train_accuracy),
                opt(r.val_loss),
                opt(r.val_accuracy),
                r.lr.to_string(),
                r.seconds.to_string(),
                r.samples_per_second.to_string(),
            ];
            fields.extend(train_names.iter().map(|n| opt(r.train_metrics.get(n))));
            fields.extend(val_names.iter().map(|n| opt(r.val_metrics.get(n))));
            out.push_str(&fields.join(","));
            out.push('\n');
        }
        out
    }

    /// Writes [`History::to_csv`] to `path`.
    ///
    /// # Errors
    /// [`Error::Io`] naming the file if it cannot be written.
    pub fn write_csv(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        std::fs::write(path, self.to_csv()).map_err(|e| Error::io(path, e))
    }

    /// The history as JSON, for checkpoints (NaN becomes `null`).
    pub(crate) fn to_json(&self) -> Value {
        let records: Vec<Value> = self
            .epochs
            .iter()
            .map(|r| {
                Value::object([
                    ("epoch", r.epoch.into()),
                    ("train_loss", r.train_loss.into()),
                    ("train_accuracy", r.train_accuracy.into()),
                    ("val_loss", r.val_loss.into()),
                    ("val_accuracy", r.val_accuracy.into()),
                    ("train_metrics", metrics_json(&r.train_metrics)),
                    ("val_metrics", metrics_json(&r.val_metrics)),
                    ("lr", r.lr.into()),
                    ("seconds", r.seconds.into()),
                    ("samples_per_second", r.samples_per_second.into()),
                ])
            })
            .collect();
        Value::object([
            ("epochs", records.into()),
            ("stopped_early", self.stopped_early.into()),
        ])
    }

    /// Reads [`History::to_json`]'s output; errors name `file` and the field.
    pub(crate) fn from_json(fields: &Fields<'_>) -> Result<Self> {
        let mut epochs = Vec::new();
        for (at, value) in fields.array("epochs")? {
            let r = Fields::element(fields.file, at, value)?;
            let epoch = r.usize("epoch")?;
            if epoch != epochs.len() {
                return Err(r.error(
                    "epoch",
                    format!("is {epoch}, expected {} (epochs in order)", epochs.len()),
                ));
            }
            epochs.push(EpochRecord {
                epoch,
                train_loss: r.f64("train_loss")?,
                train_accuracy: r.opt_f64("train_accuracy")?,
                val_loss: r.opt_f64("val_loss")?,
                val_accuracy: r.opt_f64("val_accuracy")?,
                train_metrics: metrics_from_json(&r, "train_metrics")?,
                val_metrics: metrics_from_json(&r, "val_metrics")?,
                lr: r.f64("lr")?,
                seconds: r.f64("seconds")?,
                samples_per_second: r.f64("samples_per_second")?,
            });
        }
        let stopped_early = match fields.get("stopped_early")? {
            Value::Null => None,
            v => Some(
                v.as_u64()
                    .and_then(|v| usize::try_from(v).ok())
                    .ok_or_else(|| fields.error("stopped_early", "expected an epoch or null"))?,
            ),
        };
        Ok(History {
            epochs,
            stopped_early,
        })
    }

    /// Draws the loss curves (training and validation) and, for class labels, the accuracy
    /// curves side by side, and writes them to `path` as a PNG (atomically). See
    /// [`plot`](super::plot).
    ///
    /// # Errors
    /// [`Error::Io`](crate::Error::Io) if the file cannot be written;
    /// [`Error::File`](crate::Error::File) naming it if drawing fails.
    #[cfg(feature = "plot")]
    pub fn plot(&self, path: impl AsRef<Path>) -> Result<()> {
        super::plot::write_png(self, path.as_ref())
    }
}

/// The JSON object of an epoch's metrics, for checkpoints (NaN becomes `null`).
fn metrics_json(values: &MetricValues) -> Value {
    Value::object(values.iter().map(|(name, v)| (name, Value::from(v))))
}

/// Reads [`metrics_json`]'s object under `key`; a missing key (a checkpoint written before
/// metrics existed) is no metrics.
fn metrics_from_json(record: &Fields<'_>, key: &str) -> Result<MetricValues> {
    let mut values = MetricValues::new();
    if matches!(record.map.get(key), None | Some(Value::Null)) {
        return Ok(values);
    }
    let object = record.object(key)?;
    for name in object.map.keys() {
        values.push(name.as_str(), object.f64(name)?);
    }
    Ok(values)
}

/// A table, one row per epoch, epochs from 1 as in the progress output.
impl fmt::Display for History {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let acc = self.epochs.iter().any(|r| r.train_accuracy.is_some());
        let val = self.has_validation();
        let (train_names, val_names) = self.metric_columns();
        let width = |name: &str| name.len().max(8);
        write!(f, "{:>5}  {:>10}", "epoch", "loss")?;
        if acc {
            write!(f, "  {:>8}", "accuracy")?;
        }
        for name in &train_names {
            write!(f, "  {name:>w$}", w = width(name))?;
        }
        if val {
            write!(f, "  {:>10}", "val_loss")?;
            if acc {
                write!(f, "  {:>12}", "val_accuracy")?;
            }
        }
        for name in &val_names {
            write!(f, "  {name:>w$}", w = width(name))?;
        }
        writeln!(f, "  {:>9}  {:>8}", "lr", "seconds")?;
        let cell = |v: Option<f64>, width: usize, digits: usize| match v {
            Some(v) => format!("{v:>width$.digits$}"),
            None => format!("{:>width$}", "-"),
        };
        for r in &self.epochs {
            write!(f, "{:>5}  {:>10.4}", r.epoch + 1, r.train_loss)?;
            if acc {
                write!(f, "  {}", cell(r.train_accuracy, 8, 4))?;
            }
            for name in &train_names {
                write!(f, "  {}", cell(r.train_metrics.get(name), width(name), 4))?;
            }
            if val {
                write!(f, "  {}", cell(r.val_loss, 10, 4))?;
                if acc {
                    write!(f, "  {}", cell(r.val_accuracy, 12, 4))?;
                }
            }
            for name in &val_names {
                write!(f, "  {}", cell(r.val_metrics.get(name), width(name), 4))?;
            }
            writeln!(f, "  {:>9.2e}  {:>8.3}", r.lr, r.seconds)?;
        }
        if let Some(epoch) = self.stopped_early {
            writeln!(f, "stopped early after epoch {}", epoch + 1)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(epoch: usize, train: f64, val: Option<f64>) -> EpochRecord {
        EpochRecord {
            epoch,
            train_loss: train,
            train_accuracy: Some(0.5),
            val_loss: val,
            val_accuracy: val.map(|_| 0.25),
            train_metrics: MetricValues::new(),
            val_metrics: MetricValues::new(),
            lr: 0.001,
            seconds: 0.5,
            samples_per_second: 2000.0,
        }
    }

    #[test]
    fn best_epoch_prefers_validation_and_skips_nan() {
        let mut h = History::default();
        h.push(record(0, 1.0, Some(f64::NAN)));
        h.push(record(1, 0.5, Some(0.8)));
        h.push(record(2, 0.2, Some(0.8)));
        assert_eq!(h.best_epoch(), Some(1));
        let mut h = History::default();
        h.push(record(0, 1.0, None));
        h.push(record(1, 0.3, None));
        assert_eq!(h.best_epoch(), Some(1));
        assert_eq!(History::default().best_epoch(), None);
    }

    #[test]
    fn csv_has_a_header_and_one_row_per_epoch() {
        let mut h = History::default();
        h.push(record(0, 1.25, None));
        h.push(record(1, f64::NAN, Some(0.5)));
        assert_eq!(
            h.to_csv(),
            "epoch,train_loss,train_accuracy,val_loss,val_accuracy,lr,seconds,samples_per_second\n\
             0,1.25,0.5,,,0.001,0.5,2000\n\
             1,NaN,0.5,0.5,0.25,0.001,0.5,2000\n"
        );
    }

    #[test]
    fn json_round_trips_including_nan() {
        let mut h = History::default();
        h.push(record(0, f64::NAN, None));
        h.push(record(1, 0.1 + 0.2, Some(1.0 / 3.0)));
        h.stopped_early = Some(1);
        let value = h.to_json();
        let parsed = crate::json::parse(&value.to_string()).unwrap();
        let path = Path::new("state.json");
        let back = History::from_json(&Fields::root(path, &parsed).unwrap()).unwrap();
        assert!(back.epochs[0].train_loss.is_nan());
        assert_eq!(back.epochs[1], h.epochs[1]);
        assert_eq!(back.stopped_early, Some(1));
        let table = back.to_string();
        assert!(table.contains("val_accuracy"), "{table}");
        assert!(table.contains("stopped early after epoch 2"), "{table}");
    }

    fn with_metrics(mut r: EpochRecord, f1: f64, val_f1: Option<f64>) -> EpochRecord {
        r.train_metrics.push("f1", f1);
        r.train_metrics.push("mae", 0.5);
        if let Some(v) = val_f1 {
            r.val_metrics.push("val_f1", v);
            r.val_metrics.push("val_mae", 0.25);
        }
        r
    }

    #[test]
    fn metrics_get_columns_a_table_and_round_trip() {
        let mut h = History::default();
        h.push(with_metrics(record(0, 1.0, Some(0.9)), 0.5, Some(0.4)));
        h.push(with_metrics(
            record(1, 0.5, Some(0.8)),
            0.75,
            Some(f64::NAN),
        ));
        h.push(with_metrics(record(2, 0.25, Some(0.85)), 0.75, Some(0.6)));
        assert_eq!(
            h.to_csv(),
            "epoch,train_loss,train_accuracy,val_loss,val_accuracy,lr,seconds,samples_per_second,\
             f1,mae,val_f1,val_mae\n\
             0,1,0.5,0.9,0.25,0.001,0.5,2000,0.5,0.5,0.4,0.25\n\
             1,0.5,0.5,0.8,0.25,0.001,0.5,2000,0.75,0.5,NaN,0.25\n\
             2,0.25,0.5,0.85,0.25,0.001,0.5,2000,0.75,0.5,0.6,0.25\n"
        );
        let table = h.to_string();
        let header = table.lines().next().unwrap_or_default();
        let names: Vec<&str> = header.split_whitespace().collect();
        assert_eq!(
            names,
            [
                "epoch",
                "loss",
                "accuracy",
                "f1",
                "mae",
                "val_loss",
                "val_accuracy",
                "val_f1",
                "val_mae",
                "lr",
                "seconds"
            ]
        );
        assert!(table
            .lines()
            .nth(3)
            .is_some_and(|row| row.contains("0.6000")));

        let r = &h.epochs[2];
        assert_eq!(r.metric("val_f1"), Some(0.6));
        assert_eq!(r.metric("f1"), Some(0.75));
        assert_eq!(r.metric("val_loss"), Some(0.85));
        assert_eq!(r.metric("loss"), Some(0.25));
        assert_eq!(r.metric("lr"), Some(0.001));
        assert_eq!(r.metric("val_f2"), None);
        // The NaN epoch never counts; the first of equals wins.
        assert_eq!(h.best_epoch_by("val_f1", Mode::Max), Some(2));
        assert_eq!(h.best_epoch_by("f1", Mode::Max), Some(1));
        assert_eq!(h.best_epoch_by("val_loss", Mode::Min), Some(1));
        assert_eq!(h.best_epoch_by("val_f2", Mode::Max), None);

        let parsed = crate::json::parse(&h.to_json().to_string()).unwrap();
        let back =
            History::from_json(&Fields::root(Path::new("s.json"), &parsed).unwrap()).unwrap();
        assert_eq!(back.epochs[2], h.epochs[2]);
        assert!(back.epochs[1]
            .val_metrics
            .get("val_f1")
            .is_some_and(f64::is_nan));
        assert_eq!(back.to_csv(), h.to_csv());
        // A checkpoint from before metrics: records without them.
        let old = crate::json::parse(
            r#"{"epochs": [{"epoch": 0, "train_loss": 1, "train_accuracy": null,
                "val_loss": null, "val_accuracy": null, "lr": 0.1, "seconds": 1,
                "samples_per_second": 10}], "stopped_early": null}"#,
        )
        .unwrap();
        let back = History::from_json(&Fields::root(Path::new("s.json"), &old).unwrap()).unwrap();
        assert!(back.epochs[0].train_metrics.is_empty() && back.epochs[0].val_metrics.is_empty());
    }

    #[test]
    fn json_errors_name_the_field() {
        let parsed = crate::json::parse(
            r#"{"epochs": [{"epoch": 0, "train_loss": "x"}], "stopped_early": null}"#,
        )
        .unwrap();
        let path = Path::new("dir/state.json");
        let err = History::from_json(&Fields::root(path, &parsed).unwrap()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "dir/state.json: field `epochs[0].train_loss`: expected a number"
        );
    }
}
