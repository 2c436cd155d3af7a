//! Optimizer state for checkpoints: [`OptimizerState`] (hyperparameters, counters and
//! per-parameter buffers, by PyTorch's names) and the [`StatefulOptimizer`] trait the trainer
//! saves and restores it through.

use crate::{Adagrad, Adam, AdamW, Error, Float, Optimizer, Result, RmsProp, Sgd};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Everything an optimizer needs to continue exactly where it stopped: its kind, its
/// hyperparameters and counters, and its per-parameter buffers, named as in PyTorch's
/// `optimizer.state_dict()` (`lr`, `momentum`, `step`; `momentum_buffer`, `exp_avg`,
/// `exp_avg_sq`, `square_avg`, `grad_avg`).
///
/// Buffers are indexed by parameter in the model's visiting order; a buffer list shorter than
/// the parameter list (empty before the first step) means the remaining buffers are not
/// allocated yet, exactly as in the optimizer.
///
/// ```
/// use kiln_runtime::{Adam, Optimizer};
/// # fn main() -> kiln_runtime::Result<()> {
/// let opt = Adam::<f32>::new(1e-3).weight_decay(1e-4);
/// let state = opt.export_state();
/// assert_eq!(state.kind, "Adam");
/// assert_eq!(state.scalars["weight_decay"], 1e-4);
///
/// let mut restored = Adam::<f32>::new(0.5);
/// restored.import_state(&state)?; // hyperparameters come back too, as in PyTorch
/// assert_eq!(restored.learning_rate(), 1e-3);
/// assert!(kiln_runtime::Sgd::<f32>::new(0.1).import_state(&state).is_err());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct OptimizerState<F> {
    /// The optimizer's type name: `"Sgd"`, `"Adam"`, `"AdamW"`, `"RmsProp"`, `"Adagrad"`.
    pub kind: String,
    /// Hyperparameters and counters by name (flags as 0 or 1, the step count as a float: exact
    /// up to 2⁵³ steps).
    pub scalars: BTreeMap<String, f64>,
    /// Per-parameter buffers by name, each a list with one flat buffer per parameter.
    pub buffers: BTreeMap<String, Vec<Vec<F>>>,
    /// The file the state was read from, if any, for error messages.
    pub source: Option<PathBuf>,
}

impl<F: Float> OptimizerState<F> {
    /// An empty state of the given kind.
    pub fn new(kind: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            scalars: BTreeMap::new(),
            buffers: BTreeMap::new(),
            source: None,
        }
    }

    /// Adds a scalar (builder style, for `export_state` implementations).
    pub fn with_scalar(mut self, name: &str, value: f64) -> Self {
        self.scalars.insert(name.to_string(), value);
        self
    }

    /// Adds a buffer list (builder style, for `export_state` implementations).
    pub fn with_buffers(mut self, name: &str, buffers: Vec<Vec<F>>) -> Self {
        self.buffers.insert(name.to_string(), buffers);
        self
    }

    /// An [`Error::Mismatch`] about this state, naming its file (or "optimizer state" when it
    /// was not read from one).
    pub fn mismatch(&self, message: impl Into<String>) -> Error {
        Error::Mismatch {
            path: self
                .source
                .clone()
                .unwrap_or_else(|| PathBuf::from("optimizer state")),
            message: message.into(),
        }
    }

    /// Checks that the state is `kind`'s.
    ///
    /// # Errors
    /// [`Error::Mismatch`] naming both kinds.
    pub fn expect_kind(&self, kind: &str) -> Result<()> {
        if self.kind == kind {
            Ok(())
        } else {
            Err(self.mismatch(format!(
                "the optimizer does not match: the checkpoint holds {}'s state, and this run \
                 trains with {kind} (resume with the optimizer the checkpoint was written with)",
                self.kind
            )))
        }
    }

    /// The scalar `name`.
    ///
    /// # Errors
    /// [`Error::Mismatch`] if the state has no such scalar.
    pub fn scalar(&self, name: &str) -> Result<f64> {
        self.scalars
            .get(name)
            .copied()
            .ok_or_else(|| self.mismatch(format!("the {} state has no `{name}`", self.kind)))
    }

    /// The scalar `name` as a flag (non-zero is `true`).
    ///
    /// # Errors
    /// As [`OptimizerState::scalar`].
    pub fn flag(&self, name: &str) -> Result<bool> {
        Ok(self.scalar(name)? != 0.0)
    }

    /// The buffer list `name`.
    ///
    /// # Errors
    /// [`Error::Mismatch`] if the state has no such buffer list.
    pub fn buffer_list(&self, name: &str) -> Result<&[Vec<F>]> {
        self.buffers.get(name).map(Vec::as_slice).ok_or_else(|| {
            self.mismatch(format!("the {} state has no `{name}` buffers", self.kind))
        })
    }
}

/// A flag as a scalar of an [`OptimizerState`].
pub(crate) fn flag_value(value: bool) -> f64 {
    if value {
        1.0
    } else {
        0.0
    }
}

/// An optimizer whose state can be saved in a checkpoint and restored, so that a resumed run
/// continues exactly as an uninterrupted one. Implemented by [`Sgd`], [`Adam`], [`AdamW`],
/// [`RmsProp`] and [`Adagrad`].
///
/// Both methods have defaults, so a custom optimizer can be trained by the trainer with a
/// one-line `impl StatefulOptimizer<f32> for MyOptimizer {}`; only checkpointing then reports
/// that its state cannot be saved.
pub trait StatefulOptimizer<F: Float>: Optimizer<F> {
    /// A copy of the optimizer's state, or `None` if it cannot export one.
    fn export_state(&self) -> Option<OptimizerState<F>> {
        None
    }

    /// Replaces the optimizer's state (hyperparameters included, as PyTorch's
    /// `load_state_dict`) with `state`.
    ///
    /// # Errors
    /// [`Error::Mismatch`] if `state` is another optimizer's or lacks a field; the optimizer
    /// is then unchanged.
    fn import_state(&mut self, state: &OptimizerState<F>) -> Result<()> {
        Err(state.mismatch(format!(
            "this optimizer cannot import state (its StatefulOptimizer implementation has no \
             import_state); the checkpoint holds {}'s",
            state.kind
        )))
    }
}

impl<F: Float> StatefulOptimizer<F> for Sgd<F> {
    fn export_state(&self) -> Option<OptimizerState<F>> {
        Some(Sgd::export_state(self))
    }
    fn import_state(&mut self, state: &OptimizerState<F>) -> Result<()> {
        Sgd::import_state(self, state)
    }
}

impl<F: Float> StatefulOptimizer<F> for Adam<F> {
    fn export_state(&self) -> Option<OptimizerState<F>> {
        Some(Adam::export_state(self))
    }
    fn import_state(&mut self, state: &OptimizerState<F>) -> Result<()> {
        Adam::import_state(self, state)
    }
}

impl<F: Float> StatefulOptimizer<F> for AdamW<F> {
    fn export_state(&self) -> Option<OptimizerState<F>> {
        Some(AdamW::export_state(self))
    }
    fn import_state(&mut self, state: &OptimizerState<F>) -> Result<()> {
        AdamW::import_state(self, state)
    }
}

impl<F: Float> StatefulOptimizer<F> for Adagrad<F> {
    fn export_state(&self) -> Option<OptimizerState<F>> {
        Some(Adagrad::export_state(self))
    }
    fn import_state(&mut self, state: &OptimizerState<F>) -> Result<()> {
        Adagrad::import_state(self, state)
    }
}

impl<F: Float> StatefulOptimizer<F> for RmsProp<F> {
    fn export_state(&self) -> Option<OptimizerState<F>> {
        Some(RmsProp::export_state(self))
    }
    fn import_state(&mut self, state: &OptimizerState<F>) -> Result<()> {
        RmsProp::import_state(self, state)
    }
}
