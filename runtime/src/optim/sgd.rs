//! Stochastic gradient descent with momentum, dampening, Nesterov and L2 weight decay.

use super::{
    add_scaled, check_pair, param_rule_builders, state_slot, Optimizer, ParamFilter, ParamRules,
};
use crate::kernels::dispatch::ElementLoop;
use crate::kernels::parallel::{run_fast_split, SplitLoop};
use crate::train::{state::flag_value, OptimizerState};
use crate::{Float, Model, Result};

/// Stochastic gradient descent, as `torch.optim.SGD`.
///
/// Per parameter `p` with gradient `g`, in this order:
/// 1. weight decay: `g ← g + weight_decay · p`;
/// 2. momentum (if non-zero): on the first step `buf ← g`, later
///    `buf ← momentum · buf + (1 − dampening) · g`; then `g ← g + momentum · buf` (Nesterov)
///    or `g ← buf`;
/// 3. `p ← p − lr · g`.
///
/// ```
/// use kiln_runtime::{Optimizer, Sgd};
/// let opt = Sgd::<f64>::new(0.1).momentum(0.9).dampening(0.0).nesterov(true).weight_decay(1e-4);
/// assert_eq!(opt.learning_rate(), 0.1);
/// ```
#[derive(Clone, Debug)]
pub struct Sgd<F> {
    lr: f64,
    momentum: f64,
    dampening: f64,
    nesterov: bool,
    weight_decay: f64,
    /// One momentum buffer per parameter, in visiting order (empty until the first step).
    momentum_buffers: Vec<Vec<F>>,
    rules: ParamRules,
}

impl<F: Float> Sgd<F> {
    /// Plain SGD with learning rate `lr` (≥ 0), no momentum, no weight decay.
    pub fn new(lr: f64) -> Self {
        Self {
            lr,
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
            momentum_buffers: Vec::new(),
            rules: ParamRules::default(),
        }
    }

    param_rule_builders!(rules);

    /// The momentum factor (≥ 0; 0, the default, disables momentum).
    pub fn momentum(mut self, momentum: f64) -> Self {
        self.momentum = momentum;
        self
    }

    /// Dampening of the gradient's contribution to the momentum buffer (default 0; PyTorch
    /// requires 0 with Nesterov). Does not apply to the first step, where `buf = g`.
    pub fn dampening(mut self, dampening: f64) -> Self {
        self.dampening = dampening;
        self
    }

    /// Nesterov momentum (default off; needs a positive momentum to have an effect).
    pub fn nesterov(mut self, nesterov: bool) -> Self {
        self.nesterov = nesterov;
        self
    }

    /// L2 weight decay added to the gradient (≥ 0, default 0).
    pub fn weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = weight_decay;
        self
    }

    /// Forgets the momentum buffers, as a freshly built optimizer.
    pub fn reset(&mut self) {
        self.momentum_buffers.clear();
    }

    /// A copy of the optimizer's state for a checkpoint: `lr`, `momentum`, `dampening`,
    /// `nesterov`, `weight_decay` and the `momentum_buffer`s (PyTorch's names).
    pub fn export_state(&self) -> OptimizerState<F> {
        OptimizerState::new("Sgd")
            .with_scalar("lr", self.lr)
            .with_scalar("momentum", self.momentum)
            .with_scalar("dampening", self.dampening)
            .with_scalar("nesterov", flag_value(self.nesterov))
            .with_scalar("weight_decay", self.weight_decay)
            .with_buffers("momentum_buffer", self.momentum_buffers.clone())
    }

    /// Replaces the whole state, hyperparameters included (as PyTorch's `load_state_dict`),
    /// with one made by [`Sgd::export_state`].
    ///
    /// # Errors
    /// [`Error::Mismatch`](crate::Error::Mismatch) if `state` is not an `Sgd` state or lacks a
    /// field; the optimizer is then unchanged.
    pub fn import_state(&mut self, state: &OptimizerState<F>) -> Result<()> {
        state.expect_kind("Sgd")?;
        *self = Self {
            lr: state.scalar("lr")?,
            momentum: state.scalar("momentum")?,
            dampening: state.scalar("dampening")?,
            nesterov: state.flag("nesterov")?,
            weight_decay: state.scalar("weight_decay")?,
            momentum_buffers: crate::memory::copies(state.buffer_list("momentum_buffer")?),
            // The per-parameter rules (frozen, scaled) are this optimizer's set-up, not saved state.
            rules: std::mem::take(&mut self.rules),
        };
        Ok(())
    }
}

/// Plain SGD over one parameter.
struct SgdLoop<'a, F> {
    param: &'a mut [F],
    grad: &'a [F],
    weight_decay: Option<F>,
    neg_lr: F,
}

impl<F: Float> SplitLoop for SgdLoop<'_, F> {
    fn len(&self) -> usize {
        self.param.len()
    }

    fn split_at(self, at: usize) -> (Self, Self) {
        let (param, param_b) = self.param.split_at_mut(at);
        let (grad, grad_b) = self.grad.split_at(at);
        let second = SgdLoop {
            param: param_b,
            grad: grad_b,
            ..self
        };
        (
            SgdLoop {
                param,
                grad,
                ..self
            },
            second,
        )
    }
}

impl<F: Float> ElementLoop for SgdLoop<'_, F> {
    #[inline(always)]
    fn run(self) {
        for (p, &g) in self.param.iter_mut().zip(self.grad) {
            let d = match self.weight_decay {
                Some(wd) => add_scaled(g, wd, *p),
                None => g,
            };
            *p = add_scaled(*p, self.neg_lr, d);
        }
    }
}

/// SGD with a momentum buffer (and Nesterov) over one parameter.
struct SgdMomentumLoop<'a, F> {
    param: &'a mut [F],
    grad: &'a [F],
    buffer: &'a mut [F],
    fresh: bool,
    weight_decay: Option<F>,
    momentum: F,
    keep: F,
    nesterov: bool,
    neg_lr: F,
}

impl<F: Float> SplitLoop for SgdMomentumLoop<'_, F> {
    fn len(&self) -> usize {
        self.param.len()
    }

    fn split_at(self, at: usize) -> (Self, Self) {
        let (param, param_b) = self.param.split_at_mut(at);
        let (grad, grad_b) = self.grad.split_at(at);
        let (buffer, buffer_b) = self.buffer.split_at_mut(at);
        let second = SgdMomentumLoop {
            param: param_b,
            grad: grad_b,
            buffer: buffer_b,
            ..self
        };
        (
            SgdMomentumLoop {
                param,
                grad,
                buffer,
                ..self
            },
            second,
        )
    }
}

impl<F: Float> ElementLoop for SgdMomentumLoop<'_, F> {
    #[inline(always)]
    fn run(self) {
        let SgdMomentumLoop {
            param,
            grad,
            buffer,
            fresh,
            weight_decay,
            momentum,
            keep,
            nesterov,
            neg_lr,
        } = self;
        for ((p, &g), b) in param.iter_mut().zip(grad).zip(buffer.iter_mut()) {
            let d = match weight_decay {
                Some(wd) => add_scaled(g, wd, *p),
                None => g,
            };
            // PyTorch starts the buffer at the (decayed) gradient itself, undampened;
            // later `buf.mul_(momentum).add_(grad, alpha=1 - dampening)`.
            *b = if fresh {
                d
            } else {
                add_scaled(*b * momentum, keep, d)
            };
            let d = if nesterov {
                add_scaled(d, momentum, *b)
            } else {
                *b
            };
            *p = add_scaled(*p, neg_lr, d);
        }
    }
}

impl<F: Float> Optimizer<F> for Sgd<F> {
    fn step<M: Model<F>>(&mut self, model: &mut M, grads: &M::Grads) {
        let lr = self.lr;
        let weight_decay = (self.weight_decay != 0.0).then(|| F::from_f64(self.weight_decay));
        let use_momentum = self.momentum != 0.0;
        let momentum = F::from_f64(self.momentum);
        let keep = F::from_f64(1.0 - self.dampening);
        let nesterov = self.nesterov;
        self.rules.refresh(model);
        let (buffers, rules) = (&mut self.momentum_buffers, &self.rules);
        model.visit_params_with_grads(grads, &mut |index, param, grad| {
            check_pair("Sgd", index, param, grad);
            let Some(lr) = rules.lr_of(param, lr) else {
                return;
            };
            let neg_lr = F::from_f64(-lr);
            if !use_momentum {
                run_fast_split(SgdLoop {
                    param,
                    grad,
                    weight_decay,
                    neg_lr,
                });
                return;
            }
            let (buffer, fresh) = state_slot(buffers, index, param.len(), "Sgd");
            run_fast_split(SgdMomentumLoop {
                param,
                grad,
                buffer,
                fresh,
                weight_decay,
                momentum,
                keep,
                nesterov,
                neg_lr,
            });
        });
    }

    fn learning_rate(&self) -> f64 {
        self.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.lr = lr;
    }

    fn momentum_term(&self) -> Option<f64> {
        Some(self.momentum)
    }

    fn frozen(&self) -> Option<ParamFilter> {
        self.rules.frozen()
    }

    fn set_momentum_term(&mut self, momentum: f64) {
        self.momentum = momentum;
    }
}

#[cfg(test)]
mod tests {
    use super::{SgdLoop, SgdMomentumLoop};
    use crate::kernels::dispatch::run_fast;
    use crate::kernels::parallel::SplitLoop;

    #[test]
    fn split_updates_equal_the_whole() {
        let len = 20_000;
        let g: Vec<f64> = (0..len).map(|i| (i % 13) as f64 * 0.02 - 0.1).collect();
        let run = |halves: bool| {
            let mut p: Vec<f64> = (0..len).map(|i| (i % 17) as f64 * 0.01).collect();
            let mut q = p.clone();
            let mut buffer = vec![0.5; len];
            let plain = SgdLoop {
                param: &mut p,
                grad: &g,
                weight_decay: Some(0.01),
                neg_lr: -0.1,
            };
            let momentum = SgdMomentumLoop {
                param: &mut q,
                grad: &g,
                buffer: &mut buffer,
                fresh: false,
                weight_decay: None,
                momentum: 0.9,
                keep: 1.0,
                nesterov: true,
                neg_lr: -0.1,
            };
            if halves {
                let (a, b) = plain.split_at(len / 2);
                run_fast(b);
                run_fast(a);
                let (a, b) = momentum.split_at(len - 1);
                run_fast(a);
                run_fast(b);
            } else {
                run_fast(plain);
                run_fast(momentum);
            }
            (p, q, buffer)
        };
        assert_eq!(run(false), run(true));
    }
}
