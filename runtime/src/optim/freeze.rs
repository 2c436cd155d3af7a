//! Frozen parameters: the ones an optimizer leaves as they are, for fine-tuning part of a
//! model (a pretrained backbone kept fixed under a new head).

use crate::{Float, Model};

/// Chooses the parameters an optimizer freezes, from a parameter's name (`"features.0.weight"`)
/// and shape: `true` freezes it. A plain function (or a closure that captures nothing), as
/// [`DecayFilter`](super::DecayFilter) is, so that optimizers stay `Clone` and `Debug`.
pub type FreezeFilter = fn(name: &str, shape: &[usize]) -> bool;

/// An optimizer's frozen parameters: its filter, and the parameters it matched at the current
/// step, by address (the optimizers' hot path visits parameters by index and slice only; the
/// names and shapes come from [`Model::visit_params`]).
#[derive(Clone, Debug, Default)]
pub(crate) struct Frozen {
    filter: Option<FreezeFilter>,
    /// The addresses of the matched parameters, refilled every step (the capacity is kept,
    /// so a step allocates nothing once the first has run).
    addresses: Vec<usize>,
}

impl Frozen {
    /// Freezes what `filter` chooses, from the next step on.
    pub(crate) fn set(&mut self, filter: FreezeFilter) {
        self.filter = Some(filter);
    }

    /// The filter, if any.
    pub(crate) fn filter(&self) -> Option<FreezeFilter> {
        self.filter
    }

    /// Finds `model`'s frozen parameters for the step about to run.
    pub(crate) fn refresh<F: Float, M: Model<F>>(&mut self, model: &M) {
        self.addresses.clear();
        if let Some(freeze) = self.filter {
            let addresses = &mut self.addresses;
            model.visit_params(&mut |name, param| {
                if freeze(name, param.shape()) {
                    addresses.push(param.as_ptr() as usize);
                }
            });
        }
    }

    /// Whether `param` is one of the frozen parameters found by [`Frozen::refresh`].
    pub(crate) fn holds<F>(&self, param: &[F]) -> bool {
        !self.addresses.is_empty() && self.addresses.contains(&(param.as_ptr() as usize))
    }
}

/// Sets the gradients of the parameters `freeze` chooses to zero, so that a gradient norm
/// (for clipping) leaves them out, as PyTorch's `clip_grad_norm_` leaves out a parameter whose
/// `requires_grad` is off (its `grad` is `None`). The trainer does this before clipping; a
/// plain loop that clips calls it first:
///
/// ```text
/// let freeze: FreezeFilter = |name, _| name.starts_with("features.");
/// let mut opt = Adam::new(1e-3).freeze(freeze);
/// model.loss_and_grad(x, y, &mut ws, &mut grads)?;
/// zero_frozen_grads::<f32, Net<f32>>(&mut grads, freeze);
/// clip_grad_norm::<f32, Net<f32>>(&mut grads, 1.0);
/// opt.step(&mut model, &grads);
/// ```
pub fn zero_frozen_grads<F: Float, M: Model<F>>(grads: &mut M::Grads, freeze: FreezeFilter) {
    M::visit_grads_mut(grads, &mut |name, mut grad| {
        if freeze(name, grad.shape()) {
            grad.fill(F::ZERO);
        }
    });
}
