//! [`History`]: what happened in each epoch of a training run.

use super::files::Fields;
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
/// use kiln_runtime::train::{EpochRecord, History};
/// let mut history = History::default();
/// for (epoch, val_loss) in [0.9, 0.5, 0.7].into_iter().enumerate() {
///     history.push(EpochRecord {
///         epoch,
///         train_loss: 1.0 / (epoch + 1) as f64,
///         train_accuracy: None,
///         val_loss: Some(val_loss),
///         val_accuracy: None,
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
    /// (Keras' `CSVLogger` layout: epochs from 0). A missing figure is an empty field; numbers
    /// are written in full precision (Rust's shortest round-trip form), NaN as `NaN`.
    pub fn to_csv(&self) -> String {
        let mut out = COLUMNS.join(",");
        out.push('\n');
        let opt = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
        for r in &self.epochs {
            let fields = [
                r.epoch.to_string(),
                r.train_loss.to_string(),
                opt(r.train_accuracy),
                opt(r.val_loss),
                opt(r.val_accuracy),
                r.lr.to_string(),
                r.seconds.to_string(),
                r.samples_per_second.to_string(),
            ];
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

/// A table, one row per epoch, epochs from 1 as in the progress output.
impl fmt::Display for History {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let acc = self.epochs.iter().any(|r| r.train_accuracy.is_some());
        let val = self.has_validation();
        write!(f, "{:>5}  {:>10}", "epoch", "loss")?;
        if acc {
            write!(f, "  {:>8}", "accuracy")?;
        }
        if val {
            write!(f, "  {:>10}", "val_loss")?;
            if acc {
                write!(f, "  {:>12}", "val_accuracy")?;
            }
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
            if val {
                write!(f, "  {}", cell(r.val_loss, 10, 4))?;
                if acc {
                    write!(f, "  {}", cell(r.val_accuracy, 12, 4))?;
                }
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
