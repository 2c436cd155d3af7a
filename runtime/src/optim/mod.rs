//! Optimizers: [`Sgd`], [`Adam`], [`AdamW`], [`NAdam`], [`RAdam`], [`RmsProp`] and
//! [`Adagrad`], numerically matching
//! `torch.optim` (single-tensor path, `foreach=False`).
//!
//! Each optimizer is generic over the model's float type because its state (momentum, moment
//! estimates) must be kept and updated in that type to reproduce PyTorch's rounding. Scalar
//! hyperparameter expressions (bias corrections, `1 − β`, `lr · weight_decay`) are formed in
//! f64, as Python does, and rounded to `F` once; the elementwise updates then run in `F` in
//! PyTorch's order of operations.
//!
//! State is allocated on the first [`Optimizer::step`] only: a later step allocates nothing.
//!
//! Every optimizer can freeze parameters chosen by name (`.freeze(|name, _shape|
//! name.starts_with("features."))`): it leaves them, and keeps no state for them, as PyTorch
//! does with parameters whose `requires_grad` is off or that were left out of the optimizer
//! (Keras: `layer.trainable = False`). `Trainer` also skips their gradients in the backward
//! pass (a generated workspace's `freeze`, which a plain loop can call itself). And it can step
//! parameters chosen by name at a multiple of its learning rate (`.lr_scale(|name, _|
//! name.starts_with("features."), 0.1)`), as PyTorch's parameter groups with their own `lr`
//! (and timm's `lr_scale`) do; schedules then move every rate together.
//!
//! ```
//! use kiln_runtime::{Adam, Optimizer};
//! // A pretrained backbone: its embeddings fixed, its other layers at a tenth of the rate.
//! let opt = Adam::<f32>::new(1e-3)
//!     .freeze(|name, _shape| name.starts_with("embed."))
//!     .lr_scale(|name, _shape| name.starts_with("encoder."), 0.1);
//! assert!(opt.frozen().is_some());
//! ```
//! Hyperparameters are stored as given and not validated; each builder documents the range
//! PyTorch accepts (values outside it give the same nonsense PyTorch would refuse to run).
//!
//! ```
//! use kiln_runtime::{Optimizer, Sgd};
//! let mut opt = Sgd::<f32>::new(0.1).momentum(0.9).nesterov(true);
//! opt.set_learning_rate(0.05);
//! assert_eq!(opt.learning_rate(), 0.05);
//! ```

mod adagrad;
mod adam;
pub mod clip;
mod ema;
mod nadam;
mod param_rules;
mod rmsprop;
pub mod schedule;
mod sgd;

pub use adagrad::Adagrad;
pub use adam::{Adam, AdamW, DecayFilter};
pub use clip::{clip_grad_norm, clip_grad_value, grad_norm};
pub use ema::Ema;
pub use nadam::{NAdam, RAdam};
pub(crate) use param_rules::{param_rule_builders, ParamRules};
pub use param_rules::{zero_frozen_grads, ParamFilter};
pub use rmsprop::RmsProp;
pub use schedule::{
    from_fn, Anneal, Constant, CosineAnnealing, CosineWarmRestarts, ExponentialLr, FnSchedule,
    Interval, LinearWarmup, LrSchedule, MultiStepLr, OneCycleLr, ReduceLrOnPlateau, StepLr,
};
pub use sgd::Sgd;

use crate::{Float, Model};

/// The `betas` and `eps` builders of the optimizers with Adam's two moments (Adam, AdamW,
/// NAdam, RAdam), written once: `$($state).+` is the path to the fields `beta1`, `beta2` and
/// `eps` (`core`, `moments`).
macro_rules! moment_rate_builders {
    ($($state:ident).+) => {
        /// The moment decay rates β₁, β₂ (each in `[0, 1)`, defaults 0.9 and 0.999).
        pub fn betas(mut self, beta1: f64, beta2: f64) -> Self {
            self.$($state).+.beta1 = beta1;
            self.$($state).+.beta2 = beta2;
            self
        }

        /// The term added to the denominator (≥ 0, default 1e-8).
        pub fn eps(mut self, eps: f64) -> Self {
            self.$($state).+.eps = eps;
            self
        }
    };
}
pub(crate) use moment_rate_builders;

/// An optimizer: updates a model's parameters in place from their gradients.
pub trait Optimizer<F: Float> {
    /// Applies one update to every parameter of `model` using `grads` (the gradient struct
    /// filled by the model's backward pass). The first call allocates the optimizer's state;
    /// later calls allocate nothing.
    ///
    /// # Panics
    /// If the optimizer has state from a different model (parameter sizes differ); call the
    /// optimizer's `reset` before reusing it on another model.
    fn step<M: Model<F>>(&mut self, model: &mut M, grads: &M::Grads);
    /// The current learning rate.
    fn learning_rate(&self) -> f64;
    /// Changes the learning rate for the following steps (learning-rate schedules). The
    /// optimizer's state is kept.
    fn set_learning_rate(&mut self, lr: f64);
    /// The momentum term a schedule may cycle ([`LrSchedule::momentum`]): SGD's and
    /// RMSprop's `momentum`, Adam's and AdamW's `beta1`; `None` (the default) for an
    /// optimizer without one.
    fn momentum_term(&self) -> Option<f64> {
        None
    }
    /// Changes the momentum term for the following steps, as PyTorch's `OneCycleLR` sets
    /// `momentum` or `betas[0]`; the optimizer's state is kept. Does nothing for an optimizer
    /// whose [`momentum_term`](Self::momentum_term) is `None`.
    fn set_momentum_term(&mut self, momentum: f64) {
        let _ = momentum;
    }
    /// The filter of the parameters this optimizer freezes (each optimizer's `freeze`
    /// builder), so that a training loop can keep their gradients out of clipping as
    /// PyTorch does; `None` (the default) freezes nothing.
    fn frozen(&self) -> Option<ParamFilter> {
        None
    }
}

/// The state buffer of parameter `index`, allocated (zero-filled) on first use. Returns the
/// buffer and whether it was just created, which SGD needs for PyTorch's first-step rule.
///
/// The state is per parameter, indexed in the model's visiting order, so each buffer has its
/// parameter's element count; a different count means the optimizer is being reused on a
/// different model, which would otherwise silently corrupt both.
pub(crate) fn state_slot<'a, F: Float>(
    state: &'a mut Vec<Vec<F>>,
    index: usize,
    len: usize,
    optimizer: &str,
) -> (&'a mut [F], bool) {
    if index >= state.len() {
        state.resize_with(index + 1, Vec::new);
    }
    let buffer = &mut state[index];
    let fresh = buffer.len() != len;
    if fresh {
        assert!(
            buffer.is_empty(),
            "{optimizer}: parameter {index} has {len} elements but the optimizer state has {}; \
             an optimizer's state belongs to one model (call reset() to reuse it)",
            buffer.len()
        );
        *buffer = crate::memory::zeroed_vec(len);
    }
    (buffer, fresh)
}

/// PyTorch's `x.add(y, alpha=alpha)`: `x + alpha · y`, rounded once. PyTorch's CPU kernel
/// computes it as a fused multiply-add (`vec::fmadd`), and so does this, so that every SGD
/// step and weight-decay term rounds exactly as PyTorch's does.
#[inline(always)]
pub(crate) fn add_scaled<F: Float>(x: F, alpha: F, y: F) -> F {
    alpha.mul_add(y, x)
}

/// PyTorch's `lerp(start, end, weight)`: `start + weight · (end − start)` for small weights
/// and `end − (end − start) · (1 − weight)` otherwise (exact at `weight = 1`), each with one
/// fused multiply-add as PyTorch's vectorized kernel (`vec::fmadd`) computes them.
#[inline(always)]
pub(crate) fn lerp<F: Float>(start: F, end: F, weight: F) -> F {
    if weight.abs() < F::from_f64(0.5) {
        weight.mul_add(end - start, start)
    } else {
        (weight - F::ONE).mul_add(end - start, end)
    }
}

#[track_caller]
#[inline]
pub(crate) fn check_pair<F>(optimizer: &str, index: usize, param: &[F], grad: &[F]) {
    assert_eq!(
        param.len(),
        grad.len(),
        "{optimizer}: parameter {index} has {} elements but its gradient has {}",
        param.len(),
        grad.len()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lerp_matches_torch_branches() {
        assert_eq!(lerp(1.0f64, 3.0, 0.25), 1.5);
        assert_eq!(lerp(1.0f64, 3.0, 0.75), 2.5);
        // The large-weight branch is exact at 1.
        assert_eq!(lerp(0.1f64, 0.7, 1.0), 0.7);
    }

    #[test]
    fn state_is_allocated_once_and_checked() {
        let mut state: Vec<Vec<f64>> = Vec::new();
        let (buf, fresh) = state_slot(&mut state, 1, 3, "test");
        assert!(fresh);
        buf[0] = 5.0;
        let (buf, fresh) = state_slot(&mut state, 1, 3, "test");
        assert!(!fresh);
        assert_eq!(buf, [5.0, 0.0, 0.0]);
        assert_eq!(state.len(), 2);
    }

    #[test]
    #[should_panic(expected = "parameter 0 has 4 elements but the optimizer state has 3")]
    fn state_from_another_model_panics() {
        let mut state: Vec<Vec<f32>> = Vec::new();
        state_slot(&mut state, 0, 3, "test");
        state_slot(&mut state, 0, 4, "test");
    }
}
