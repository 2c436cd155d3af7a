//! [`EarlyStopping`]: stop when the monitored loss (or metric) has not improved for a while, as
//! Keras' `EarlyStopping(monitor="val_loss", mode="min", patience, min_delta,
//! restore_best_weights=True)`.

use super::files::Fields;
use crate::json::Value;
use crate::Result;

/// Which way a monitored figure improves, as Keras' `mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Lower is better (losses, errors): the default.
    #[default]
    Min,
    /// Higher is better (accuracies, F1).
    Max,
}

impl Mode {
    /// `"min"` or `"max"`, as Keras spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Min => "min",
            Mode::Max => "max",
        }
    }

    /// Whether `value` beats `best` by more than `min_delta` (never for NaN).
    pub fn improves(self, value: f64, best: f64, min_delta: f64) -> bool {
        match self {
            Mode::Min => value < best - min_delta,
            Mode::Max => value > best + min_delta,
        }
    }
}

/// What [`EarlyStopping::update`] concluded about an epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The monitored value is the best so far (by more than `min_delta`): keep these weights.
    Improved,
    /// No improvement, but patience is not exhausted yet.
    Wait,
    /// No improvement for `patience` epochs: stop training.
    Stop,
}

/// The early-stopping rule and its state.
///
/// An epoch *improves* when its monitored value is better than the best so far by more than
/// `min_delta` (below it in [`Mode::Min`], the default; above it in [`Mode::Max`]); the first
/// epoch with a value that is not NaN always does, and a NaN never does. After `patience`
/// epochs in a row without improvement, [`update`](EarlyStopping::update) says
/// [`Verdict::Stop`] (never on the first epoch, as in Keras). With `patience = 0` training
/// stops at the first epoch that does not improve.
///
/// The trainer monitors the validation loss (the training loss when there is no validation
/// data), or the figure named by [`monitor`](EarlyStopping::monitor) (`"val_f1"` with
/// [`Mode::Max`], see [`Trainer::early_stopping_on`](super::Trainer::early_stopping_on)) and,
/// with [`restore_best_weights`](EarlyStopping::restore_best_weights) (the default), puts the
/// best epoch's weights back into the model when training ends, whether it stopped early or
/// ran all its epochs.
///
/// ```
/// use kiln_runtime::train::{EarlyStopping, Mode, Verdict};
/// let mut stop = EarlyStopping::new(2, 0.01);
/// assert_eq!(stop.update(0, 1.0), Verdict::Improved);
/// assert_eq!(stop.update(1, 0.995), Verdict::Wait); // better, but by less than min_delta
/// assert_eq!(stop.update(2, 0.5), Verdict::Improved);
/// assert_eq!(stop.update(3, 0.6), Verdict::Wait);
/// assert_eq!(stop.update(4, 0.7), Verdict::Stop);
/// assert_eq!(stop.best(), Some((2, 0.5)));
/// assert_eq!(stop.stopped_at(), Some(4));
///
/// // A figure that should grow, such as a validation F1 score.
/// let mut stop = EarlyStopping::new(1, 0.0).monitor("val_f1", Mode::Max);
/// assert_eq!(stop.update(0, 0.5), Verdict::Improved);
/// assert_eq!(stop.update(1, 0.7), Verdict::Improved);
/// assert_eq!(stop.update(2, 0.6), Verdict::Stop);
/// assert_eq!(stop.best(), Some((1, 0.7)));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct EarlyStopping {
    patience: usize,
    min_delta: f64,
    restore_best_weights: bool,
    /// The figure monitored; `None` for the default (validation loss, else training loss).
    monitor: Option<String>,
    mode: Mode,
    best: Option<(usize, f64)>,
    wait: usize,
    stopped_at: Option<usize>,
}

impl EarlyStopping {
    /// Stop after `patience` epochs without an improvement larger than `min_delta` (its
    /// absolute value is used, as Keras does).
    pub fn new(patience: usize, min_delta: f64) -> Self {
        Self {
            patience,
            min_delta: min_delta.abs(),
            restore_best_weights: true,
            monitor: None,
            mode: Mode::Min,
            best: None,
            wait: 0,
            stopped_at: None,
        }
    }

    /// Whether the best epoch's weights are restored at the end of training (default `true`).
    pub fn restore_best_weights(mut self, restore: bool) -> Self {
        self.restore_best_weights = restore;
        self
    }

    /// Monitors the figure named `name` (as [`EpochRecord::metric`](super::EpochRecord::metric)
    /// looks it up: `"val_loss"`, `"loss"`, `"val_accuracy"`, `"val_f1"`, ...), which improves
    /// in direction `mode`, instead of the default, the validation loss (the training loss
    /// without validation data) in [`Mode::Min`]. The trainer refuses a name the run does not
    /// compute before training starts.
    pub fn monitor(mut self, name: impl Into<String>, mode: Mode) -> Self {
        self.monitor = Some(name.into());
        self.mode = mode;
        self
    }

    /// The name of the monitored figure, when it is not the default (see
    /// [`EarlyStopping::monitor`]).
    pub fn monitored(&self) -> Option<&str> {
        self.monitor.as_deref()
    }

    /// The direction in which the monitored figure improves.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The number of epochs without improvement that stops training.
    pub fn patience(&self) -> usize {
        self.patience
    }

    /// The smallest change of the monitored figure (in its [`Mode`]'s direction) that counts
    /// as an improvement.
    pub fn min_delta(&self) -> f64 {
        self.min_delta
    }

    /// Whether the best weights are to be restored at the end.
    pub fn restores_best_weights(&self) -> bool {
        self.restore_best_weights
    }

    /// The best epoch so far and its monitored value.
    pub fn best(&self) -> Option<(usize, f64)> {
        self.best
    }

    /// Epochs since the last improvement.
    pub fn wait(&self) -> usize {
        self.wait
    }

    /// The epoch at which [`Verdict::Stop`] was given, if it was.
    pub fn stopped_at(&self) -> Option<usize> {
        self.stopped_at
    }

    /// Records the monitored value of `epoch` and says whether it improved, and whether to
    /// stop.
    pub fn update(&mut self, epoch: usize, loss: f64) -> Verdict {
        let improved = match self.best {
            // NaN compares false: a diverged epoch never improves.
            None => !loss.is_nan(),
            Some((_, best)) => self.mode.improves(loss, best, self.min_delta),
        };
        if improved {
            self.best = Some((epoch, loss));
            self.wait = 0;
            return Verdict::Improved;
        }
        self.wait += 1;
        if self.wait >= self.patience && self.stopped_at.is_none() && epoch > 0 {
            self.stopped_at = Some(epoch);
            return Verdict::Stop;
        }
        match self.stopped_at {
            Some(_) => Verdict::Stop,
            None => Verdict::Wait,
        }
    }

    pub(crate) fn to_json(&self) -> Value {
        Value::object([
            ("patience", self.patience.into()),
            ("min_delta", self.min_delta.into()),
            ("restore_best_weights", self.restore_best_weights.into()),
            ("monitor", self.monitor.as_deref().into()),
            ("mode", self.mode.as_str().into()),
            ("best_epoch", self.best.map(|(e, _)| e).into()),
            ("best_loss", self.best.map(|(_, l)| l).into()),
            ("wait", self.wait.into()),
            ("stopped_at", self.stopped_at.into()),
        ])
    }

    pub(crate) fn from_json(fields: &Fields<'_>) -> Result<Self> {
        let opt_usize = |key: &str| -> Result<Option<usize>> {
            match fields.get(key)? {
                Value::Null => Ok(None),
                _ => fields.usize(key).map(Some),
            }
        };
        let best = match (opt_usize("best_epoch")?, fields.opt_f64("best_loss")?) {
            (Some(epoch), Some(loss)) => Some((epoch, loss)),
            (None, None) => None,
            _ => {
                return Err(fields.error(
                    "best_loss",
                    "`best_epoch` and `best_loss` must both be set or both be null",
                ))
            }
        };
        // Checkpoints written before monitors existed have neither key: the default.
        let monitor = match fields.map.get("monitor") {
            None | Some(Value::Null) => None,
            Some(_) => Some(fields.str("monitor")?.to_string()),
        };
        let mode = match fields.map.get("mode") {
            None | Some(Value::Null) => Mode::Min,
            Some(_) => match fields.str("mode")? {
                "min" => Mode::Min,
                "max" => Mode::Max,
                other => return Err(fields.error("mode", format!("is `{other}`, not min or max"))),
            },
        };
        Ok(Self {
            monitor,
            mode,
            patience: fields.usize("patience")?,
            min_delta: fields.f64("min_delta")?,
            restore_best_weights: fields.bool("restore_best_weights")?,
            best,
            wait: fields.usize("wait")?,
            stopped_at: opt_usize("stopped_at")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn patience_zero_stops_at_the_first_non_improvement() {
        let mut s = EarlyStopping::new(0, 0.0);
        assert_eq!(s.update(0, 1.0), Verdict::Improved);
        assert_eq!(s.update(1, 0.9), Verdict::Improved);
        assert_eq!(s.update(2, 0.9), Verdict::Stop);
    }

    #[test]
    fn nan_never_improves_and_epoch_zero_never_stops() {
        let mut s = EarlyStopping::new(0, 0.0);
        assert_eq!(s.update(0, f64::NAN), Verdict::Wait);
        assert_eq!(s.update(1, 2.0), Verdict::Improved);
        assert_eq!(s.update(2, f64::NAN), Verdict::Stop);
        assert_eq!(s.best(), Some((1, 2.0)));
    }

    #[test]
    fn min_delta_is_absolute_and_json_round_trips() {
        let mut s = EarlyStopping::new(3, -0.5).restore_best_weights(false);
        assert_eq!(s.min_delta(), 0.5);
        s.update(0, 2.0);
        s.update(1, 1.8);
        let value = crate::json::parse(&s.to_json().to_string()).unwrap();
        let back =
            EarlyStopping::from_json(&Fields::root(Path::new("s.json"), &value).unwrap()).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.wait(), 1);
        assert!(!back.restores_best_weights());
        assert_eq!(back.monitored(), None);
        assert_eq!(back.mode(), Mode::Min);

        let mut s = EarlyStopping::new(1, 0.1).monitor("val_f1", Mode::Max);
        s.update(0, 0.5);
        assert_eq!(s.update(1, 0.55), Verdict::Stop, "0.05 is below min_delta");
        let value = crate::json::parse(&s.to_json().to_string()).unwrap();
        let back =
            EarlyStopping::from_json(&Fields::root(Path::new("s.json"), &value).unwrap()).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.monitored(), Some("val_f1"));

        // A checkpoint from before monitors: the default rule.
        let old = crate::json::parse(
            r#"{"patience": 2, "min_delta": 0, "restore_best_weights": true,
                "best_epoch": null, "best_loss": null, "wait": 0, "stopped_at": null}"#,
        )
        .unwrap();
        let back =
            EarlyStopping::from_json(&Fields::root(Path::new("s.json"), &old).unwrap()).unwrap();
        assert_eq!(back, EarlyStopping::new(2, 0.0));
    }

    #[test]
    fn max_mode_improves_upwards_and_skips_nan() {
        let mut s = EarlyStopping::new(2, 0.01).monitor("val_accuracy", Mode::Max);
        assert_eq!(s.update(0, f64::NAN), Verdict::Wait);
        assert_eq!(s.update(1, 0.8), Verdict::Improved);
        assert_eq!(s.update(2, 0.805), Verdict::Wait);
        assert_eq!(s.update(3, f64::NAN), Verdict::Stop);
        assert_eq!(s.best(), Some((1, 0.8)));
        assert!(Mode::Min.improves(0.1, 0.5, 0.0));
        assert!(!Mode::Max.improves(f64::NAN, 0.5, 0.0));
    }
}
