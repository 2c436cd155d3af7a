//! NAdam and RAdam: Adam with Nesterov momentum, and Adam with its variance rectified.
//!
//! Both keep Adam's two moments and take its hyperparameters; they differ in the step each
//! element takes, which each writes as a rule run by one shared loop ([`MomentLoop`]).

use super::{
    add_scaled, check_pair, lerp, moment_rate_builders, param_rule_builders, state_slot, Optimizer,
    ParamFilter, ParamRules,
};
use crate::kernels::dispatch::ElementLoop;
use crate::kernels::parallel::{run_fast_split, SplitLoop};
use crate::train::{state::flag_value, OptimizerState};
use crate::{Float, Model, Result};

/// What NAdam and RAdam share: the moments, Adam's hyperparameters, the step count and how
/// weight decay enters.
#[derive(Clone, Debug)]
struct Moments<F> {
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    /// PyTorch's `decoupled_weight_decay`: `p ← p · (1 − lr · wd)` instead of `g += wd · p`.
    decoupled: bool,
    steps: u64,
    exp_avg: Vec<Vec<F>>,
    exp_avg_sq: Vec<Vec<F>>,
    rules: ParamRules,
}

impl<F: Float> Moments<F> {
    fn new(lr: f64, eps: f64) -> Self {
        Self {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps,
            weight_decay: 0.0,
            decoupled: false,
            steps: 0,
            exp_avg: Vec::new(),
            exp_avg_sq: Vec::new(),
            rules: ParamRules::default(),
        }
    }

    fn export_state(&self, kind: &str) -> OptimizerState<F> {
        OptimizerState::new(kind)
            .with_scalar("lr", self.lr)
            .with_scalar("beta1", self.beta1)
            .with_scalar("beta2", self.beta2)
            .with_scalar("eps", self.eps)
            .with_scalar("weight_decay", self.weight_decay)
            .with_scalar("decoupled_weight_decay", flag_value(self.decoupled))
            // Exact: a step count below 2^53 is an integer-valued f64.
            .with_scalar("step", self.steps as f64)
            .with_buffers("exp_avg", self.exp_avg.clone())
            .with_buffers("exp_avg_sq", self.exp_avg_sq.clone())
    }

    fn import_state(state: &OptimizerState<F>, kind: &str) -> Result<Self> {
        state.expect_kind(kind)?;
        let step = state.scalar("step")?;
        if !(step >= 0.0 && step.fract() == 0.0 && step < 2f64.powi(53)) {
            return Err(state.mismatch(format!(
                "the {kind} state's `step` is {step}, not a step count"
            )));
        }
        Ok(Self {
            lr: state.scalar("lr")?,
            beta1: state.scalar("beta1")?,
            beta2: state.scalar("beta2")?,
            eps: state.scalar("eps")?,
            weight_decay: state.scalar("weight_decay")?,
            decoupled: state.flag("decoupled_weight_decay")?,
            steps: step as u64,
            exp_avg: crate::memory::copies(state.buffer_list("exp_avg")?),
            exp_avg_sq: crate::memory::copies(state.buffer_list("exp_avg_sq")?),
            rules: ParamRules::default(),
        })
    }

    /// Updates every parameter: the weight decay, the moments (`m ← lerp(m, g, 1 − β₁)`,
    /// `v ← β₂ v + (1 − β₂) g²`), then `rule(p, g, m, v)`, the optimizer's own step, with
    /// `rule_for(lr)` the rule at the parameter's learning rate (its group's).
    fn step<M: Model<F>, R>(
        &mut self,
        model: &mut M,
        grads: &M::Grads,
        name: &str,
        rule_for: impl Fn(f64) -> R,
    ) where
        R: Fn(F, F, F, F) -> F + Copy + Send + Sync,
    {
        let wd = self.weight_decay != 0.0;
        let shrink = wd && self.decoupled;
        let weight_decay = self.weight_decay;
        let beta1_weight = F::from_f64(1.0 - self.beta1);
        let (beta2, one_minus_beta2) = (F::from_f64(self.beta2), F::from_f64(1.0 - self.beta2));
        self.rules.refresh(model);
        let (exp_avgs, exp_avg_sqs) = (&mut self.exp_avg, &mut self.exp_avg_sq);
        let (rules, lr) = (&self.rules, self.lr);
        model.visit_params_with_grads(grads, &mut |index, param, grad| {
            check_pair(name, index, param, grad);
            let Some(lr) = rules.lr_of(param, lr) else {
                return;
            };
            let decay = F::from_f64(if shrink {
                1.0 - lr * weight_decay
            } else {
                weight_decay
            });
            let rule = rule_for(lr);
            let (m, _) = state_slot(exp_avgs, index, param.len(), name);
            let (v, _) = state_slot(exp_avg_sqs, index, param.len(), name);
            run_fast_split(MomentLoop {
                param,
                grad,
                m,
                v,
                shrink: (wd && shrink).then_some(decay),
                l2: (wd && !shrink).then_some(decay),
                beta1_weight,
                beta2,
                one_minus_beta2,
                rule,
            });
        });
    }
}

/// One parameter's update (see [`Moments::step`]).
struct MomentLoop<'a, F, R> {
    param: &'a mut [F],
    grad: &'a [F],
    m: &'a mut [F],
    v: &'a mut [F],
    shrink: Option<F>,
    l2: Option<F>,
    beta1_weight: F,
    beta2: F,
    one_minus_beta2: F,
    rule: R,
}

impl<F: Float, R: Fn(F, F, F, F) -> F + Copy + Send + Sync> SplitLoop for MomentLoop<'_, F, R> {
    fn len(&self) -> usize {
        self.param.len()
    }

    fn split_at(self, at: usize) -> (Self, Self) {
        let (param, param_b) = self.param.split_at_mut(at);
        let (grad, grad_b) = self.grad.split_at(at);
        let (m, m_b) = self.m.split_at_mut(at);
        let (v, v_b) = self.v.split_at_mut(at);
        let second = MomentLoop {
            param: param_b,
            grad: grad_b,
            m: m_b,
            v: v_b,
            ..self
        };
        (
            MomentLoop {
                param,
                grad,
                m,
                v,
                ..self
            },
            second,
        )
    }
}

impl<F: Float, R: Fn(F, F, F, F) -> F + Copy> ElementLoop for MomentLoop<'_, F, R> {
    #[inline(always)]
    fn run(self) {
        let MomentLoop {
            param,
            grad,
            m,
            v,
            shrink,
            l2,
            beta1_weight,
            beta2,
            one_minus_beta2,
            rule,
        } = self;
        for (((p, &g), m), v) in param
            .iter_mut()
            .zip(grad)
            .zip(m.iter_mut())
            .zip(v.iter_mut())
        {
            // param.mul_(1 - lr * weight_decay), or grad = grad.add(param, alpha=weight_decay)
            let shrunk = shrink.map_or(*p, |s| *p * s);
            let g = l2.map_or(g, |wd| add_scaled(g, wd, shrunk));
            // exp_avg.lerp_(grad, 1 - beta1); exp_avg_sq.mul_(beta2).addcmul_(grad, grad, ..)
            *m = lerp(*m, g, beta1_weight);
            *v = *v * beta2 + one_minus_beta2 * g * g;
            *p = rule(shrunk, g, *m, *v);
        }
    }
}

/// The builders NAdam and RAdam share.
macro_rules! moment_builders {
    ($name:ident) => {
        impl<F: Float> $name<F> {
            moment_rate_builders!(moments);

            /// Weight decay (≥ 0, default 0): L2, `g ← g + wd · p`, unless
            /// [`decoupled_weight_decay`](Self::decoupled_weight_decay).
            pub fn weight_decay(mut self, weight_decay: f64) -> Self {
                self.moments.weight_decay = weight_decay;
                self
            }

            /// PyTorch's `decoupled_weight_decay` (default off): `p ← p · (1 − lr · wd)` before
            /// the step, as AdamW's, instead of adding `wd · p` to the gradient.
            pub fn decoupled_weight_decay(mut self, decoupled: bool) -> Self {
                self.moments.decoupled = decoupled;
                self
            }

            param_rule_builders!(moments.rules);

            /// The number of steps taken (`t` of the last step).
            pub fn steps(&self) -> u64 {
                self.moments.steps
            }

            /// A copy of the optimizer's state for a checkpoint: `lr`, `beta1`, `beta2`,
            /// `eps`, `weight_decay`, `decoupled_weight_decay`, `step` and the `exp_avg` and
            /// `exp_avg_sq` buffers (PyTorch's names), and the optimizer's own scalars.
            pub fn export_state(&self) -> OptimizerState<F> {
                self.export_own(self.moments.export_state(stringify!($name)))
            }

            /// Replaces the whole state, hyperparameters and step count included (as PyTorch's
            /// `load_state_dict`), with one made by `export_state`.
            ///
            /// # Errors
            /// [`Error::Mismatch`](crate::Error::Mismatch) if `state` is another optimizer's,
            /// lacks a field or has a `step` that is not a step count; the optimizer is then
            /// unchanged.
            pub fn import_state(&mut self, state: &OptimizerState<F>) -> Result<()> {
                let mut moments = Moments::import_state(state, stringify!($name))?;
                self.import_own(state)?;
                // The per-parameter rules (frozen, scaled) are this optimizer's set-up, not saved state.
                moments.rules = std::mem::take(&mut self.moments.rules);
                self.moments = moments;
                Ok(())
            }
        }

        impl<F: Float> Optimizer<F> for $name<F> {
            fn step<M: Model<F>>(&mut self, model: &mut M, grads: &M::Grads) {
                self.update(model, grads);
            }

            fn learning_rate(&self) -> f64 {
                self.moments.lr
            }

            fn set_learning_rate(&mut self, lr: f64) {
                self.moments.lr = lr;
            }

            fn momentum_term(&self) -> Option<f64> {
                Some(self.moments.beta1)
            }

            fn set_momentum_term(&mut self, momentum: f64) {
                self.moments.beta1 = momentum;
            }

            fn frozen(&self) -> Option<ParamFilter> {
                self.moments.rules.frozen()
            }
        }

        impl<F: Float> crate::train::StatefulOptimizer<F> for $name<F> {
            fn export_state(&self) -> Option<OptimizerState<F>> {
                Some($name::export_state(self))
            }
            fn import_state(&mut self, state: &OptimizerState<F>) -> Result<()> {
                $name::import_state(self, state)
            }
        }
    };
}

/// NAdam, as `torch.optim.NAdam`: Adam with Nesterov momentum, its momentum warmed up by
/// `momentum_decay`.
///
/// With `t` the step number from 1, `μ_t = β₁ (1 − ½ · 0.96^(t · ψ))` (ψ the momentum decay)
/// and `Π_t = μ_1 ⋯ μ_t`, per element after Adam's moments:
/// `d = √(v / (1 − β₂ᵗ)) + eps`, then `p ← p − lr (1 − μ_t) / (1 − Π_t) · g / d` and
/// `p ← p − lr μ_{t+1} / (1 − Π_t μ_{t+1}) · m / d`, two roundings as PyTorch's two
/// `addcdiv_`.
///
/// ```
/// use kiln_runtime::{NAdam, Optimizer};
/// let opt = NAdam::<f32>::new(2e-3).betas(0.9, 0.999).momentum_decay(4e-3).weight_decay(0.0);
/// assert_eq!(opt.learning_rate(), 2e-3);
/// ```
#[derive(Clone, Debug)]
pub struct NAdam<F> {
    moments: Moments<F>,
    momentum_decay: f64,
    /// `Π_t`, the product of the momentum coefficients so far (PyTorch's `mu_product`), a
    /// value of `F` (kept in an f64 for the state's scalars).
    mu_product: f64,
}

impl<F: Float> NAdam<F> {
    /// NAdam with learning rate `lr` (PyTorch's default 2e-3) and PyTorch's other defaults:
    /// betas (0.9, 0.999), eps 1e-8, momentum decay 4e-3, no weight decay.
    pub fn new(lr: f64) -> Self {
        Self {
            moments: Moments::new(lr, 1e-8),
            momentum_decay: 4e-3,
            mu_product: 1.0,
        }
    }

    /// The momentum decay ψ (≥ 0, default 4e-3).
    pub fn momentum_decay(mut self, momentum_decay: f64) -> Self {
        self.momentum_decay = momentum_decay;
        self
    }

    /// Forgets the moments, the momentum product and the step count.
    pub fn reset(&mut self) {
        self.moments.forget();
        self.mu_product = 1.0;
    }

    fn export_own(&self, state: OptimizerState<F>) -> OptimizerState<F> {
        state
            .with_scalar("momentum_decay", self.momentum_decay)
            .with_scalar("mu_product", self.mu_product)
    }

    fn import_own(&mut self, state: &OptimizerState<F>) -> Result<()> {
        let (decay, product) = (state.scalar("momentum_decay")?, state.scalar("mu_product")?);
        self.momentum_decay = decay;
        self.mu_product = product;
        Ok(())
    }
}

moment_builders!(NAdam);

impl<F: Float> NAdam<F> {
    /// One optimizer step (see [`NAdam`]).
    fn update<M: Model<F>>(&mut self, model: &mut M, grads: &M::Grads) {
        self.moments.steps += 1;
        // Scalars in f64, as torch's single-tensor NAdam forms them in Python.
        let (t, beta1) = (self.moments.steps as f64, self.moments.beta1);
        let bias_correction2 = F::from_f64(1.0 - self.moments.beta2.powf(t));
        let mu = beta1 * (1.0 - 0.5 * 0.96f64.powf(t * self.momentum_decay));
        let mu_next = beta1 * (1.0 - 0.5 * 0.96f64.powf((t + 1.0) * self.momentum_decay));
        // PyTorch keeps `mu_product` as a tensor of the default dtype (float32 for a float32
        // model): `mu_product *= mu` rounds `mu` and the product to it at every step.
        self.mu_product = (F::from_f64(self.mu_product) * F::from_f64(mu)).to_f64();
        let mu_product_next = self.mu_product * mu_next;
        let mu_product = self.mu_product;
        let eps = F::from_f64(self.moments.eps);
        self.moments.step(model, grads, "NAdam", |lr| {
            let grad_step = F::from_f64(-lr * (1.0 - mu) / (1.0 - mu_product));
            let moment_step = F::from_f64((-lr * mu_next) / (1.0 - mu_product_next));
            move |p, g, m, v| {
                // denom = exp_avg_sq.div(bias_correction2).sqrt().add_(eps)
                let denom = (v / bias_correction2).sqrt() + eps;
                // param.addcdiv_(grad, denom, ..); param.addcdiv_(exp_avg, denom, ..)
                let p = p + grad_step * g / denom;
                p + moment_step * m / denom
            }
        });
    }
}

/// RAdam, as `torch.optim.RAdam`: Adam whose adaptive step is rectified for the variance of
/// its early second-moment estimates, and plain momentum SGD while that variance is
/// undefined.
///
/// With `t` the step number from 1, `ρ_∞ = 2 / (1 − β₂) − 1` and
/// `ρ_t = ρ_∞ − 2 t β₂ᵗ / (1 − β₂ᵗ)`, per element after Adam's moments, with
/// `m̂ = m / (1 − β₁ᵗ)`: when `ρ_t > 5`,
/// `p ← p − m̂ · lr · √(1 − β₂ᵗ) / (√v + eps) · r_t` with
/// `r_t = √((ρ_t − 4)(ρ_t − 2) ρ_∞ / ((ρ_∞ − 4)(ρ_∞ − 2) ρ_t))`; otherwise `p ← p − m̂ · lr`.
///
/// ```
/// use kiln_runtime::{Optimizer, RAdam};
/// let opt = RAdam::<f32>::new(1e-3).betas(0.9, 0.999).eps(1e-8).weight_decay(0.0);
/// assert_eq!(opt.learning_rate(), 1e-3);
/// ```
#[derive(Clone, Debug)]
pub struct RAdam<F> {
    moments: Moments<F>,
}

impl<F: Float> RAdam<F> {
    /// RAdam with learning rate `lr` (PyTorch's default 1e-3) and PyTorch's other defaults:
    /// betas (0.9, 0.999), eps 1e-8, no weight decay.
    pub fn new(lr: f64) -> Self {
        Self {
            moments: Moments::new(lr, 1e-8),
        }
    }

    /// Forgets the moments and the step count.
    pub fn reset(&mut self) {
        self.moments.forget();
    }

    fn export_own(&self, state: OptimizerState<F>) -> OptimizerState<F> {
        state
    }

    fn import_own(&mut self, _state: &OptimizerState<F>) -> Result<()> {
        Ok(())
    }
}

moment_builders!(RAdam);

impl<F: Float> RAdam<F> {
    /// One optimizer step (see [`RAdam`]).
    fn update<M: Model<F>>(&mut self, model: &mut M, grads: &M::Grads) {
        self.moments.steps += 1;
        // Scalars in f64, as torch's single-tensor RAdam forms them in Python.
        let t = self.moments.steps as f64;
        let (beta1, beta2) = (self.moments.beta1, self.moments.beta2);
        let bias_correction1 = 1.0 - beta1.powf(t);
        let bias_correction2 = 1.0 - beta2.powf(t);
        let rho_inf = 2.0 / (1.0 - beta2) - 1.0;
        let rho_t = rho_inf - 2.0 * t * beta2.powf(t) / bias_correction2;
        let bc1 = F::from_f64(bias_correction1);
        if rho_t > 5.0 {
            let rect = ((rho_t - 4.0) * (rho_t - 2.0) * rho_inf
                / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
                .powf(0.5);
            let (rect, bc2_sqrt) = (F::from_f64(rect), F::from_f64(bias_correction2.powf(0.5)));
            let eps = F::from_f64(self.moments.eps);
            self.moments.step(model, grads, "RAdam", |lr| {
                let lr = F::from_f64(lr);
                move |p, _, m, v| {
                    // (bias_correction2 ** 0.5) / exp_avg_sq.sqrt().add_(eps)
                    let adaptive = bc2_sqrt / (v.sqrt() + eps);
                    // param.add_(exp_avg / bc1 * lr * adaptive * rect, alpha=-1.0)
                    p - m / bc1 * lr * adaptive * rect
                }
            });
        } else {
            self.moments.step(model, grads, "RAdam", |lr| {
                let lr = F::from_f64(lr);
                // param.add_(exp_avg / bc1 * lr, alpha=-1.0)
                move |p, _, m, _| p - m / bc1 * lr
            });
        }
    }
}

impl<F: Float> Moments<F> {
    /// Forgets the step count and the moments, keeping the hyperparameters.
    fn forget(&mut self) {
        self.steps = 0;
        self.exp_avg.clear();
        self.exp_avg_sq.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::MomentLoop;
    use crate::kernels::dispatch::{run_fast, ElementLoop};
    use crate::kernels::parallel::SplitLoop;

    /// One update over `len` elements with RAdam's rectified rule, whole or in two parts.
    fn step(len: usize, halves: bool) -> Vec<Vec<f32>> {
        let values = |seed: f32| -> Vec<f32> {
            (0..len)
                .map(|i| ((i as f32 * 0.618 + seed).fract() - 0.5) * 0.2)
                .collect()
        };
        let (mut p, g, mut m) = (values(0.1), values(0.3), values(0.5));
        let mut v: Vec<f32> = values(0.7).iter().map(|x| x.abs()).collect();
        let update = MomentLoop {
            param: &mut p,
            grad: &g,
            m: &mut m,
            v: &mut v,
            shrink: Some(0.999),
            l2: None,
            beta1_weight: 0.1,
            beta2: 0.999,
            one_minus_beta2: 0.001,
            rule: |p: f32, _: f32, m: f32, v: f32| p - m / 0.5 * 0.01 * (0.03 / (v.sqrt() + 1e-8)),
        };
        if halves {
            let (a, b) = update.split_at(len / 2 + 3);
            run_fast(b);
            a.run();
        } else {
            run_fast(update);
        }
        vec![p, m, v]
    }

    #[test]
    fn split_updates_equal_the_whole_bit_for_bit() {
        assert_eq!(step(50_001, false), step(50_001, true));
    }
}
