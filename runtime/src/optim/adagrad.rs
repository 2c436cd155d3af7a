//! Adagrad.

use super::{
    add_scaled, check_pair, param_rule_builders, state_slot, Optimizer, ParamFilter, ParamRules,
};
use crate::kernels::dispatch::ElementLoop;
use crate::kernels::parallel::{run_fast_split, SplitLoop};
use crate::train::OptimizerState;
use crate::{Float, Model, Result};

/// Adagrad, as `torch.optim.Adagrad`: each parameter's rate shrinks with the sum of its
/// squared gradients.
///
/// With `t` the step number from 1, per element, in this order: weight decay
/// `g ← g + wd · p`; `sum ← sum + g²`; `p ← p − clr · g / (√sum + eps)` with
/// `clr = lr / (1 + (t − 1) · lr_decay)`. The sums start at `initial_accumulator_value`.
///
/// ```
/// use kiln_runtime::{Adagrad, Optimizer};
/// let opt = Adagrad::<f32>::new(1e-2).lr_decay(0.0).weight_decay(0.0).initial_accumulator_value(0.1).eps(1e-10);
/// assert_eq!(opt.learning_rate(), 1e-2);
/// ```
#[derive(Clone, Debug)]
pub struct Adagrad<F> {
    lr: f64,
    lr_decay: f64,
    weight_decay: f64,
    initial_accumulator_value: f64,
    eps: f64,
    /// Steps taken so far (`t`).
    steps: u64,
    sums: Vec<Vec<F>>,
    rules: ParamRules,
}

impl<F: Float> Adagrad<F> {
    /// Adagrad with learning rate `lr` (≥ 0) and PyTorch's defaults: no rate decay, no weight
    /// decay, sums starting at 0, eps 1e-10.
    pub fn new(lr: f64) -> Self {
        Self {
            lr,
            lr_decay: 0.0,
            weight_decay: 0.0,
            initial_accumulator_value: 0.0,
            eps: 1e-10,
            steps: 0,
            sums: Vec::new(),
            rules: ParamRules::default(),
        }
    }

    param_rule_builders!(rules);

    /// The decay of the rate over the steps, `lr / (1 + (t − 1) · lr_decay)` (≥ 0, default 0).
    pub fn lr_decay(mut self, lr_decay: f64) -> Self {
        self.lr_decay = lr_decay;
        self
    }

    /// L2 weight decay added to the gradient (≥ 0, default 0).
    pub fn weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = weight_decay;
        self
    }

    /// The value the sums of squared gradients start from (≥ 0, default 0).
    pub fn initial_accumulator_value(mut self, value: f64) -> Self {
        self.initial_accumulator_value = value;
        self
    }

    /// The term added to the root (≥ 0, default 1e-10).
    pub fn eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }

    /// The number of steps taken (`t` of the last step).
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Forgets the sums and the step count, as a freshly built optimizer.
    pub fn reset(&mut self) {
        self.steps = 0;
        self.sums.clear();
    }

    /// A copy of the optimizer's state for a checkpoint: `lr`, `lr_decay`, `weight_decay`,
    /// `initial_accumulator_value`, `eps`, `step` and the `sum` buffers (PyTorch's names).
    pub fn export_state(&self) -> OptimizerState<F> {
        OptimizerState::new("Adagrad")
            .with_scalar("lr", self.lr)
            .with_scalar("lr_decay", self.lr_decay)
            .with_scalar("weight_decay", self.weight_decay)
            .with_scalar("initial_accumulator_value", self.initial_accumulator_value)
            .with_scalar("eps", self.eps)
            // Exact: a step count below 2^53 is an integer-valued f64.
            .with_scalar("step", self.steps as f64)
            .with_buffers("sum", self.sums.clone())
    }

    /// Replaces the whole state, hyperparameters and step count included (as PyTorch's
    /// `load_state_dict`), with one made by [`Adagrad::export_state`].
    ///
    /// # Errors
    /// [`Error::Mismatch`](crate::Error::Mismatch) if `state` is not an `Adagrad` state, lacks
    /// a field or has a `step` that is not a step count; the optimizer is then unchanged.
    pub fn import_state(&mut self, state: &OptimizerState<F>) -> Result<()> {
        state.expect_kind("Adagrad")?;
        let step = state.scalar("step")?;
        if !(step >= 0.0 && step.fract() == 0.0 && step < 2f64.powi(53)) {
            return Err(state.mismatch(format!(
                "the Adagrad state's `step` is {step}, not a step count"
            )));
        }
        *self = Self {
            lr: state.scalar("lr")?,
            lr_decay: state.scalar("lr_decay")?,
            weight_decay: state.scalar("weight_decay")?,
            initial_accumulator_value: state.scalar("initial_accumulator_value")?,
            eps: state.scalar("eps")?,
            steps: step as u64,
            sums: crate::memory::copies(state.buffer_list("sum")?),
            // The per-parameter rules (frozen, scaled) are this optimizer's set-up, not saved state.
            rules: std::mem::take(&mut self.rules),
        };
        Ok(())
    }
}

/// One parameter's Adagrad update, in torch's order of operations.
struct AdagradLoop<'a, F> {
    param: &'a mut [F],
    grad: &'a [F],
    sum: &'a mut [F],
    weight_decay: Option<F>,
    eps: F,
    neg_clr: F,
}

impl<F: Float> SplitLoop for AdagradLoop<'_, F> {
    fn len(&self) -> usize {
        self.param.len()
    }

    fn split_at(self, at: usize) -> (Self, Self) {
        let (param, param_b) = self.param.split_at_mut(at);
        let (grad, grad_b) = self.grad.split_at(at);
        let (sum, sum_b) = self.sum.split_at_mut(at);
        let second = AdagradLoop {
            param: param_b,
            grad: grad_b,
            sum: sum_b,
            ..self
        };
        (
            AdagradLoop {
                param,
                grad,
                sum,
                ..self
            },
            second,
        )
    }
}

impl<F: Float> ElementLoop for AdagradLoop<'_, F> {
    #[inline(always)]
    fn run(self) {
        let AdagradLoop {
            param,
            grad,
            sum,
            weight_decay,
            eps,
            neg_clr,
        } = self;
        for ((p, &g), s) in param.iter_mut().zip(grad).zip(sum.iter_mut()) {
            let g = match weight_decay {
                // grad = grad.add(param, alpha=weight_decay)
                Some(wd) => add_scaled(g, wd, *p),
                None => g,
            };
            // state_sum.addcmul_(grad, grad, value=1)
            *s += g * g;
            // std = state_sum.sqrt().add_(eps); param.addcdiv_(grad, std, value=-clr)
            let std = s.sqrt() + eps;
            *p += neg_clr * g / std;
        }
    }
}

impl<F: Float> Optimizer<F> for Adagrad<F> {
    fn step<M: Model<F>>(&mut self, model: &mut M, grads: &M::Grads) {
        self.steps += 1;
        // In f64, as torch forms `clr` in Python (per parameter: its group's `lr`).
        let (lr, decay_factor) = (self.lr, 1.0 + (self.steps - 1) as f64 * self.lr_decay);
        let eps = F::from_f64(self.eps);
        let weight_decay = (self.weight_decay != 0.0).then(|| F::from_f64(self.weight_decay));
        let initial = F::from_f64(self.initial_accumulator_value);
        self.rules.refresh(model);
        let (sums, rules) = (&mut self.sums, &self.rules);
        model.visit_params_with_grads(grads, &mut |index, param, grad| {
            check_pair("Adagrad", index, param, grad);
            let Some(lr) = rules.lr_of(param, lr) else {
                return;
            };
            let neg_clr = F::from_f64(-(lr / decay_factor));
            let (sum, fresh) = state_slot(sums, index, param.len(), "Adagrad");
            if fresh {
                sum.fill(initial);
            }
            run_fast_split(AdagradLoop {
                param,
                grad,
                sum,
                weight_decay,
                eps,
                neg_clr,
            });
        });
    }

    fn learning_rate(&self) -> f64 {
        self.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.lr = lr;
    }

    fn frozen(&self) -> Option<ParamFilter> {
        self.rules.frozen()
    }
}
