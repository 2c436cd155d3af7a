//! RMSprop, plain, with momentum, and centered.

use super::{
    add_scaled, check_pair, lerp, param_rule_builders, state_slot, Optimizer, ParamFilter,
    ParamRules,
};
use crate::kernels::dispatch::ElementLoop;
use crate::kernels::parallel::{cut_mut, run_fast_split, SplitLoop};
use crate::train::{state::flag_value, OptimizerState};
use crate::{Float, Model, Result};

/// RMSprop, as `torch.optim.RMSprop`.
///
/// Per element, in this order: weight decay `g ← g + wd · p`; `v ← α v + (1 − α) g²`;
/// `avg = √v + eps`, or when centered `ḡ ← ḡ + (1 − α)(g − ḡ)` and `avg = √(v − ḡ²) + eps`
/// (eps outside the root, no bias correction); then with momentum
/// `buf ← momentum · buf + g / avg`, `p ← p − lr · buf`, else `p ← p − lr · g / avg`.
///
/// ```
/// use kiln_runtime::{Optimizer, RmsProp};
/// let opt = RmsProp::<f32>::new(1e-2).alpha(0.99).eps(1e-8).momentum(0.0).centered(false).weight_decay(0.0);
/// assert_eq!(opt.learning_rate(), 1e-2);
/// ```
#[derive(Clone, Debug)]
pub struct RmsProp<F> {
    lr: f64,
    alpha: f64,
    eps: f64,
    momentum: f64,
    centered: bool,
    weight_decay: f64,
    square_avg: Vec<Vec<F>>,
    /// Running mean of the gradient (centered only).
    grad_avg: Vec<Vec<F>>,
    /// Momentum buffers (momentum > 0 only).
    momentum_buffers: Vec<Vec<F>>,
    rules: ParamRules,
}

impl<F: Float> RmsProp<F> {
    /// RMSprop with learning rate `lr` (≥ 0) and PyTorch's defaults: alpha 0.99, eps 1e-8,
    /// no momentum, not centered, no weight decay.
    pub fn new(lr: f64) -> Self {
        Self {
            lr,
            alpha: 0.99,
            eps: 1e-8,
            momentum: 0.0,
            centered: false,
            weight_decay: 0.0,
            square_avg: Vec::new(),
            grad_avg: Vec::new(),
            momentum_buffers: Vec::new(),
            rules: ParamRules::default(),
        }
    }

    param_rule_builders!(rules);

    /// The smoothing constant of the squared-gradient average (in `[0, 1]`, default 0.99).
    pub fn alpha(mut self, alpha: f64) -> Self {
        self.alpha = alpha;
        self
    }

    /// The term added to the root (≥ 0, default 1e-8).
    pub fn eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }

    /// The momentum factor (≥ 0, default 0 = off). The buffer starts at zero.
    pub fn momentum(mut self, momentum: f64) -> Self {
        self.momentum = momentum;
        self
    }

    /// Normalise by the estimated variance of the gradient instead of its second moment
    /// (default off).
    pub fn centered(mut self, centered: bool) -> Self {
        self.centered = centered;
        self
    }

    /// L2 weight decay added to the gradient (≥ 0, default 0).
    pub fn weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = weight_decay;
        self
    }

    /// Forgets all running averages and buffers, as a freshly built optimizer.
    pub fn reset(&mut self) {
        self.square_avg.clear();
        self.grad_avg.clear();
        self.momentum_buffers.clear();
    }

    /// A copy of the optimizer's state for a checkpoint: `lr`, `alpha`, `eps`, `momentum`,
    /// `centered`, `weight_decay` and the `square_avg`, `grad_avg` and `momentum_buffer`
    /// buffers (PyTorch's names).
    pub fn export_state(&self) -> OptimizerState<F> {
        OptimizerState::new("RmsProp")
            .with_scalar("lr", self.lr)
            .with_scalar("alpha", self.alpha)
            .with_scalar("eps", self.eps)
            .with_scalar("momentum", self.momentum)
            .with_scalar("centered", flag_value(self.centered))
            .with_scalar("weight_decay", self.weight_decay)
            .with_buffers("square_avg", self.square_avg.clone())
            .with_buffers("grad_avg", self.grad_avg.clone())
            .with_buffers("momentum_buffer", self.momentum_buffers.clone())
    }

    /// Replaces the whole state, hyperparameters included (as PyTorch's `load_state_dict`),
    /// with one made by [`RmsProp::export_state`].
    ///
    /// # Errors
    /// [`Error::Mismatch`](crate::Error::Mismatch) if `state` is not an `RmsProp` state or
    /// lacks a field; the optimizer is then unchanged.
    pub fn import_state(&mut self, state: &OptimizerState<F>) -> Result<()> {
        state.expect_kind("RmsProp")?;
        *self = Self {
            lr: state.scalar("lr")?,
            alpha: state.scalar("alpha")?,
            eps: state.scalar("eps")?,
            momentum: state.scalar("momentum")?,
            centered: state.flag("centered")?,
            weight_decay: state.scalar("weight_decay")?,
            square_avg: crate::memory::copies(state.buffer_list("square_avg")?),
            grad_avg: crate::memory::copies(state.buffer_list("grad_avg")?),
            momentum_buffers: crate::memory::copies(state.buffer_list("momentum_buffer")?),
            // The per-parameter rules (frozen, scaled) are this optimizer's set-up, not saved state.
            rules: std::mem::take(&mut self.rules),
        };
        Ok(())
    }
}

/// One parameter's RMSprop update, in torch's order of operations.
struct RmsLoop<'a, F> {
    param: &'a mut [F],
    grad: &'a [F],
    square_avg: &'a mut [F],
    grad_avg: &'a mut [F],
    buffer: &'a mut [F],
    weight_decay: Option<F>,
    alpha: F,
    one_minus_alpha: F,
    eps: F,
    momentum: F,
    neg_lr: F,
    centered: bool,
    use_momentum: bool,
}

impl<F: Float> SplitLoop for RmsLoop<'_, F> {
    fn len(&self) -> usize {
        self.param.len()
    }

    fn split_at(self, at: usize) -> (Self, Self) {
        let (param, param_b) = self.param.split_at_mut(at);
        let (grad, grad_b) = self.grad.split_at(at);
        let (square_avg, square_avg_b) = self.square_avg.split_at_mut(at);
        // Without `centered` or momentum these buffers are empty.
        let (grad_avg, grad_avg_b) = cut_mut(self.grad_avg, at);
        let (buffer, buffer_b) = cut_mut(self.buffer, at);
        let second = RmsLoop {
            param: param_b,
            grad: grad_b,
            square_avg: square_avg_b,
            grad_avg: grad_avg_b,
            buffer: buffer_b,
            ..self
        };
        (
            RmsLoop {
                param,
                grad,
                square_avg,
                grad_avg,
                buffer,
                ..self
            },
            second,
        )
    }
}

impl<F: Float> ElementLoop for RmsLoop<'_, F> {
    #[inline(always)]
    fn run(self) {
        let RmsLoop {
            param,
            grad,
            square_avg,
            grad_avg,
            buffer,
            weight_decay,
            alpha,
            one_minus_alpha,
            eps,
            momentum,
            neg_lr,
            centered,
            use_momentum,
        } = self;
        for i in 0..param.len() {
            let p = param[i];
            let g = match weight_decay {
                Some(wd) => add_scaled(grad[i], wd, p),
                None => grad[i],
            };
            // square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
            let v = square_avg[i] * alpha + one_minus_alpha * g * g;
            square_avg[i] = v;
            let root = if centered {
                // grad_avg.lerp_(grad, 1 - alpha); square_avg.addcmul(ga, ga, value=-1).sqrt_()
                let ga = lerp(grad_avg[i], g, one_minus_alpha);
                grad_avg[i] = ga;
                (v - ga * ga).sqrt()
            } else {
                v.sqrt()
            };
            let avg = root + eps;
            param[i] = if use_momentum {
                // buf.mul_(momentum).addcdiv_(grad, avg); param.add_(buf, alpha=-lr)
                let b = buffer[i] * momentum + g / avg;
                buffer[i] = b;
                add_scaled(p, neg_lr, b)
            } else {
                // param.addcdiv_(grad, avg, value=-lr)
                p + neg_lr * g / avg
            };
        }
    }
}

impl<F: Float> Optimizer<F> for RmsProp<F> {
    fn step<M: Model<F>>(&mut self, model: &mut M, grads: &M::Grads) {
        let lr = self.lr;
        let alpha = F::from_f64(self.alpha);
        let one_minus_alpha = F::from_f64(1.0 - self.alpha);
        let eps = F::from_f64(self.eps);
        let use_momentum = self.momentum > 0.0;
        let momentum = F::from_f64(self.momentum);
        let weight_decay = (self.weight_decay != 0.0).then(|| F::from_f64(self.weight_decay));
        let centered = self.centered;
        self.rules.refresh(model);
        let (square_avgs, grad_avgs, buffers, rules) = (
            &mut self.square_avg,
            &mut self.grad_avg,
            &mut self.momentum_buffers,
            &self.rules,
        );
        model.visit_params_with_grads(grads, &mut |index, param, grad| {
            check_pair("RmsProp", index, param, grad);
            let Some(lr) = rules.lr_of(param, lr) else {
                return;
            };
            let neg_lr = F::from_f64(-lr);
            let len = param.len();
            let (square_avg, _) = state_slot(square_avgs, index, len, "RmsProp");
            // A buffer this configuration does not use is an empty slice and is never indexed.
            let grad_avg: &mut [F] = if centered {
                state_slot(grad_avgs, index, len, "RmsProp").0
            } else {
                &mut []
            };
            let buffer: &mut [F] = if use_momentum {
                state_slot(buffers, index, len, "RmsProp").0
            } else {
                &mut []
            };
            run_fast_split(RmsLoop {
                param,
                grad,
                square_avg,
                grad_avg,
                buffer,
                weight_decay,
                alpha,
                one_minus_alpha,
                eps,
                momentum,
                neg_lr,
                centered,
                use_momentum,
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
    use super::RmsLoop;
    use crate::kernels::dispatch::run_fast;
    use crate::kernels::parallel::SplitLoop;

    /// One step over `len` elements with or without the optional buffers (then empty).
    fn step(len: usize, centered: bool, halves: bool) -> Vec<Vec<f32>> {
        let mut p: Vec<f32> = (0..len).map(|i| (i % 17) as f32 * 0.01).collect();
        let g: Vec<f32> = (0..len).map(|i| (i % 13) as f32 * 0.02 - 0.1).collect();
        let mut square_avg = vec![0.01f32; len];
        let extra = if centered { len } else { 0 };
        let (mut grad_avg, mut buffer) = (vec![0.001f32; extra], vec![0.002f32; extra]);
        let update = RmsLoop {
            param: &mut p,
            grad: &g,
            square_avg: &mut square_avg,
            grad_avg: &mut grad_avg,
            buffer: &mut buffer,
            weight_decay: None,
            alpha: 0.99,
            one_minus_alpha: 0.01,
            eps: 1e-8,
            momentum: 0.9,
            neg_lr: -0.01,
            centered,
            use_momentum: centered,
        };
        if halves {
            let (a, b) = update.split_at(len / 3);
            run_fast(a);
            run_fast(b);
        } else {
            run_fast(update);
        }
        vec![p, square_avg, grad_avg, buffer]
    }

    #[test]
    fn split_updates_equal_the_whole_with_and_without_optional_buffers() {
        for centered in [false, true] {
            assert_eq!(step(20_000, centered, false), step(20_000, centered, true));
        }
    }
}
