//! [`EarlyStopping`]: stop when the monitored loss has not improved for a while, as Keras'
//! `EarlyStopping(monitor="val_loss", patience, min_delta, restore_best_weights=True)`.

use super::files::Fields;
use crate::json::Value;
use crate::Result;

/// What [`EarlyStopping::update`] concluded about an epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The loss is the best so far (by more than `min_delta`): keep these weights.
    Improved,
    /// No improvement, but patience is not exhausted yet.
    Wait,
    /// No improvement for `patience` epochs: stop training.
    Stop,
}

/// The early-stopping rule and its state.
///
/// An epoch *improves* when its loss is below the best so far by more than `min_delta`; the
/// first epoch with a finite loss always does, and a NaN loss never does. After `patience`
/// epochs in a row without improvement, [`update`](EarlyStopping::update) says
/// [`Verdict::Stop`] (never on the first epoch, as in Keras). With `patience = 0` training
/// stops at the first epoch that does not improve.
///
/// The trainer monitors the validation loss (the training loss when there is no validation
/// data) and, with [`restore_best_weights`](EarlyStopping::restore_best_weights) (the
/// default), puts the best epoch's weights back into the model when training ends, whether it
/// stopped early or ran all its epochs.
///
/// ```
/// use kiln_runtime::train::{EarlyStopping, Verdict};
/// let mut stop = EarlyStopping::new(2, 0.01);
/// assert_eq!(stop.update(0, 1.0), Verdict::Improved);
/// assert_eq!(stop.update(1, 0.995), Verdict::Wait); // better, but by less than min_delta
/// assert_eq!(stop.update(2, 0.5), Verdict::Improved);
/// assert_eq!(stop.update(3, 0.6), Verdict::Wait);
/// assert_eq!(stop.update(4, 0.7), Verdict::Stop);
/// assert_eq!(stop.best(), Some((2, 0.5)));
/// assert_eq!(stop.stopped_at(), Some(4));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct EarlyStopping {
    patience: usize,
    min_delta: f64,
    restore_best_weights: bool,
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

    /// The number of epochs without improvement that stops training.
    pub fn patience(&self) -> usize {
        self.patience
    }

    /// The smallest decrease of the loss that counts as an improvement.
    pub fn min_delta(&self) -> f64 {
        self.min_delta
    }

    /// Whether the best weights are to be restored at the end.
    pub fn restores_best_weights(&self) -> bool {
        self.restore_best_weights
    }

    /// The best epoch so far and its loss.
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

    /// Records the monitored loss of `epoch` and says whether it improved, and whether to stop.
    pub fn update(&mut self, epoch: usize, loss: f64) -> Verdict {
        let improved = match self.best {
            // NaN compares false: a diverged epoch never improves.
            None => !loss.is_nan(),
            Some((_, best)) => loss < best - self.min_delta,
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
        Ok(Self {
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
    }
}
