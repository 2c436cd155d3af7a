//! Per-parameter rules an optimizer applies by name: parameters it freezes (fine-tuning part
//! of a model, a pretrained backbone kept fixed under a new head) and parameters it steps at a
//! multiple of its learning rate (PyTorch's parameter groups with their own `lr`: a backbone
//! fine-tuned ten times slower than its head).

use crate::{Float, Model};
use std::fmt;
use std::sync::Arc;

/// The builders `freeze` and `lr_scale`, written once for every optimizer: `$($rules).+` is
/// the path to the optimizer's [`ParamRules`] (`rules`, `core.rules`).
macro_rules! param_rule_builders {
    ($($rules:ident).+) => {
        /// Freezes the parameters `filter` chooses by name and shape: they are left as they
        /// are and get no state, as PyTorch leaves a parameter whose `requires_grad` is off
        /// (see the [module docs](crate::optim)).
        pub fn freeze(
            mut self,
            filter: impl Fn(&str, &[usize]) -> bool + Send + Sync + 'static,
        ) -> Self {
            self.$($rules).+.freeze($crate::optim::ParamFilter::new(filter));
            self
        }

        /// Steps the parameters `filter` chooses at `scale` times the learning rate (a
        /// schedule moves every rate together), as PyTorch's parameter groups with their own
        /// `lr` do; the first of several matching multipliers applies (see the
        /// [module docs](crate::optim)).
        pub fn lr_scale(
            mut self,
            filter: impl Fn(&str, &[usize]) -> bool + Send + Sync + 'static,
            scale: f64,
        ) -> Self {
            self.$($rules).+.scale($crate::optim::ParamFilter::new(filter), scale);
            self
        }
    };
}
pub(crate) use param_rule_builders;

/// Chooses parameters by name (`"features.0.weight"`) and shape: `true` chooses the
/// parameter. Any closure, capturing what it needs (the number of blocks to freeze, a list of
/// names); shared, so that optimizers stay `Clone`.
///
/// ```
/// use kiln_runtime::optim::ParamFilter;
/// let frozen_blocks = 2;
/// let early = ParamFilter::new(move |name, _| {
///     (0..frozen_blocks).any(|i| name.starts_with(&format!("blocks.{i}.")))
/// });
/// assert!(early.chooses("blocks.1.attn.in_proj_weight", &[384, 128]));
/// assert!(!early.chooses("blocks.2.attn.in_proj_weight", &[384, 128]));
/// ```
#[derive(Clone)]
pub struct ParamFilter(Arc<Chooser>);

/// What a [`ParamFilter`] calls.
type Chooser = dyn Fn(&str, &[usize]) -> bool + Send + Sync;

impl ParamFilter {
    /// A filter choosing the parameters for which `chooses(name, shape)` is `true`.
    pub fn new(chooses: impl Fn(&str, &[usize]) -> bool + Send + Sync + 'static) -> Self {
        Self(Arc::new(chooses))
    }

    /// Whether the filter chooses the parameter `name` of this `shape`.
    pub fn chooses(&self, name: &str, shape: &[usize]) -> bool {
        (self.0)(name, shape)
    }
}

impl fmt::Debug for ParamFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ParamFilter(..)")
    }
}

/// What an optimizer does with one parameter beyond its plain update.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Rule {
    /// Left as it is, with no state.
    Frozen,
    /// Stepped at this multiple of the learning rate.
    Scaled(f64),
}

/// An optimizer's rules, and the parameters they matched at the current step, by address
/// (the optimizers' hot path visits parameters by index and slice only; the names and shapes
/// come from [`Model::visit_params`]).
#[derive(Clone, Debug, Default)]
pub(crate) struct ParamRules {
    freeze: Option<ParamFilter>,
    /// Learning-rate multipliers, the first matching one applying.
    scales: Vec<(ParamFilter, f64)>,
    /// The parameters with a rule at this step, refilled every step (the capacity is kept, so
    /// a step allocates nothing once the first has run).
    found: Vec<(usize, Rule)>,
}

impl ParamRules {
    /// Freezes what `filter` chooses, from the next step on.
    pub(crate) fn freeze(&mut self, filter: ParamFilter) {
        self.freeze = Some(filter);
    }

    /// Steps what `filter` chooses (and no earlier multiplier chose) at `scale` times the
    /// learning rate.
    pub(crate) fn scale(&mut self, filter: ParamFilter, scale: f64) {
        self.scales.push((filter, scale));
    }

    /// The freezing filter, if any.
    pub(crate) fn frozen(&self) -> Option<ParamFilter> {
        self.freeze.clone()
    }

    /// Finds which of `model`'s parameters have a rule, for the step about to run.
    pub(crate) fn refresh<F: Float, M: Model<F>>(&mut self, model: &M) {
        self.found.clear();
        if self.freeze.is_none() && self.scales.is_empty() {
            return;
        }
        let (freeze, scales, found) = (&self.freeze, &self.scales, &mut self.found);
        model.visit_params(&mut |name, param| {
            let shape = param.shape();
            let rule = if freeze.as_ref().is_some_and(|f| f.chooses(name, shape)) {
                Some(Rule::Frozen)
            } else {
                scales
                    .iter()
                    .find(|(chosen, _)| chosen.chooses(name, shape))
                    .map(|&(_, scale)| Rule::Scaled(scale))
            };
            if let Some(rule) = rule {
                found.push((param.as_ptr() as usize, rule));
            }
        });
    }

    /// The learning rate `param` is stepped at this step, `lr` or its multiple; `None` for a
    /// frozen parameter.
    pub(crate) fn lr_of<F>(&self, param: &[F], lr: f64) -> Option<f64> {
        let address = param.as_ptr() as usize;
        match self.found.iter().find(|&&(at, _)| at == address) {
            None => Some(lr),
            Some((_, Rule::Scaled(scale))) => Some(lr * scale),
            Some((_, Rule::Frozen)) => None,
        }
    }
}

/// Sets the gradients of the parameters `freeze` chooses to zero, so that a gradient norm
/// (for clipping) leaves them out, as PyTorch's `clip_grad_norm_` leaves out a parameter whose
/// `requires_grad` is off (its `grad` is `None`). The trainer does this before clipping; a
/// plain loop that clips calls it first:
///
/// ```text
/// let mut opt = Adam::new(1e-3).freeze(|name, _| name.starts_with("features."));
/// model.loss_and_grad(x, y, &mut ws, &mut grads)?;
/// if let Some(frozen) = opt.frozen() {
///     zero_frozen_grads::<f32, Net<f32>>(&mut grads, &frozen);
/// }
/// clip_grad_norm::<f32, Net<f32>>(&mut grads, 1.0);
/// opt.step(&mut model, &grads);
/// ```
pub fn zero_frozen_grads<F: Float, M: Model<F>>(grads: &mut M::Grads, freeze: &ParamFilter) {
    M::visit_grads_mut(grads, &mut |name, mut grad| {
        if freeze.chooses(name, grad.shape()) {
            grad.fill(F::ZERO);
        }
    });
}
