//! Adam (L2 weight decay) and AdamW (decoupled weight decay).

use super::{
    add_scaled, check_pair, lerp, moment_rate_builders, param_rule_builders, state_slot, Optimizer,
    ParamFilter, ParamRules,
};
use crate::kernels::dispatch::ElementLoop;
use crate::kernels::parallel::{cut_mut, run_fast_split, SplitLoop};
use crate::train::{state::flag_value, OptimizerState};
use crate::{Float, Model, Result};

/// The update shared by [`Adam`] and [`AdamW`]; they differ only in how weight decay enters.
#[derive(Clone, Debug)]
struct AdamCore<F> {
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    /// `true` for AdamW: `p ← p · (1 − lr · wd)` before the update instead of `g += wd · p`.
    decoupled: bool,
    /// Steps taken so far (`t` in the bias corrections).
    steps: u64,
    exp_avg: Vec<Vec<F>>,
    exp_avg_sq: Vec<Vec<F>>,
    /// PyTorch's `amsgrad`: the denominator uses the largest second moment seen so far.
    amsgrad: bool,
    /// The largest `exp_avg_sq` seen so far, per element (with `amsgrad` only).
    max_exp_avg_sq: Vec<Vec<F>>,
    /// Which parameters weight decay applies to, by name and shape (`None`: all of them).
    decay_filter: Option<DecayFilter>,
    /// The addresses of the parameters the filter exempts, refilled every step (the capacity
    /// is kept, so a step allocates nothing once the first has run).
    exempt: Vec<usize>,
    rules: ParamRules,
}

/// A parameter filter for weight decay: given a parameter's name (`"h.0.ln_1.weight"`) and
/// shape, whether weight decay applies to it.
pub type DecayFilter = fn(name: &str, shape: &[usize]) -> bool;

impl<F: Float> AdamCore<F> {
    fn new(lr: f64, weight_decay: f64, decoupled: bool) -> Self {
        Self {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
            decoupled,
            steps: 0,
            exp_avg: Vec::new(),
            exp_avg_sq: Vec::new(),
            amsgrad: false,
            max_exp_avg_sq: Vec::new(),
            decay_filter: None,
            exempt: Vec::new(),
            rules: ParamRules::default(),
        }
    }

    fn reset(&mut self) {
        self.steps = 0;
        self.exp_avg.clear();
        self.exp_avg_sq.clear();
        self.max_exp_avg_sq.clear();
    }

    /// PyTorch's names: `lr`, `beta1`, `beta2` (its `betas` pair), `eps`, `weight_decay`,
    /// `amsgrad`, `step`; buffers `exp_avg`, `exp_avg_sq` and, with `amsgrad`,
    /// `max_exp_avg_sq`.
    fn export_state(&self, kind: &str) -> OptimizerState<F> {
        let state = OptimizerState::new(kind);
        let state = if self.amsgrad {
            state
                .with_scalar("amsgrad", flag_value(true))
                .with_buffers("max_exp_avg_sq", self.max_exp_avg_sq.clone())
        } else {
            state
        };
        state
            .with_scalar("lr", self.lr)
            .with_scalar("beta1", self.beta1)
            .with_scalar("beta2", self.beta2)
            .with_scalar("eps", self.eps)
            .with_scalar("weight_decay", self.weight_decay)
            // Exact: a step count below 2^53 is an integer-valued f64.
            .with_scalar("step", self.steps as f64)
            .with_buffers("exp_avg", self.exp_avg.clone())
            .with_buffers("exp_avg_sq", self.exp_avg_sq.clone())
    }

    fn import_state(&mut self, state: &OptimizerState<F>, kind: &str) -> Result<()> {
        state.expect_kind(kind)?;
        let step = state.scalar("step")?;
        if !(step >= 0.0 && step.fract() == 0.0 && step < 2f64.powi(53)) {
            return Err(state.mismatch(format!(
                "the {kind} state's `step` is {step}, not a step count"
            )));
        }
        // A state saved before `amsgrad` existed has no such flag: it is off.
        let amsgrad = state.scalars.get("amsgrad").is_some_and(|&v| v != 0.0);
        let max_exp_avg_sq = if amsgrad {
            crate::memory::copies(state.buffer_list("max_exp_avg_sq")?)
        } else {
            Vec::new()
        };
        *self = Self {
            lr: state.scalar("lr")?,
            beta1: state.scalar("beta1")?,
            beta2: state.scalar("beta2")?,
            eps: state.scalar("eps")?,
            weight_decay: state.scalar("weight_decay")?,
            decoupled: self.decoupled,
            steps: step as u64,
            exp_avg: crate::memory::copies(state.buffer_list("exp_avg")?),
            exp_avg_sq: crate::memory::copies(state.buffer_list("exp_avg_sq")?),
            amsgrad,
            max_exp_avg_sq,
            decay_filter: self.decay_filter,
            exempt: std::mem::take(&mut self.exempt),
            // The per-parameter rules (frozen, scaled) are this optimizer's set-up, not saved state.
            rules: std::mem::take(&mut self.rules),
        };
        Ok(())
    }

    fn step<M: Model<F>>(&mut self, model: &mut M, grads: &M::Grads, name: &'static str) {
        self.steps += 1;
        // Scalars in f64, as torch's single-tensor Adam computes them in Python: `step` is a
        // float there, so `beta ** step` is C's pow, which `powf` is.
        let t = self.steps as f64;
        let bias_correction1 = 1.0 - self.beta1.powf(t);
        let bias_correction2 = 1.0 - self.beta2.powf(t);
        let bias_correction2_sqrt = bias_correction2.sqrt();
        let (lr, weight_decay) = (self.lr, self.weight_decay);

        let bc2_sqrt = F::from_f64(bias_correction2_sqrt);
        let eps = F::from_f64(self.eps);
        let beta1_weight = F::from_f64(1.0 - self.beta1);
        let beta2 = F::from_f64(self.beta2);
        let one_minus_beta2 = F::from_f64(1.0 - self.beta2);
        let (l2, decoupled) = match (weight_decay != 0.0, self.decoupled) {
            (false, _) => (None, false),
            (true, false) => (Some(F::from_f64(weight_decay)), false),
            (true, true) => (None, true),
        };
        // Parameters are matched by address: the optimizers' hot path visits flat slices by
        // index only, and the names and shapes come from the other visitor.
        self.exempt.clear();
        if let (Some(keep), true) = (self.decay_filter, self.weight_decay != 0.0) {
            let exempt = &mut self.exempt;
            model.visit_params(&mut |param_name, param| {
                if !keep(param_name, param.shape()) {
                    exempt.push(param.as_ptr() as usize);
                }
            });
        }
        self.rules.refresh(model);
        let (exp_avgs, exp_avg_sqs) = (&mut self.exp_avg, &mut self.exp_avg_sq);
        let (amsgrad, max_exp_avg_sqs) = (self.amsgrad, &mut self.max_exp_avg_sq);
        let (exempt, rules) = (&self.exempt, &self.rules);
        model.visit_params_with_grads(grads, &mut |index, param, grad| {
            check_pair(name, index, param, grad);
            // The parameter's group's `lr`; none for a frozen parameter.
            let Some(lr) = rules.lr_of(param, lr) else {
                return;
            };
            let neg_step_size = F::from_f64(-(lr / bias_correction1));
            let shrink = decoupled.then(|| F::from_f64(1.0 - lr * weight_decay));
            let (m, _) = state_slot(exp_avgs, index, param.len(), name);
            let (v, _) = state_slot(exp_avg_sqs, index, param.len(), name);
            // Without `amsgrad` an empty slice, never indexed.
            let v_max: &mut [F] = if amsgrad {
                state_slot(max_exp_avg_sqs, index, param.len(), name).0
            } else {
                &mut []
            };
            let decays = !exempt.contains(&(param.as_ptr() as usize));
            run_fast_split(AdamLoop {
                param,
                grad,
                m,
                v,
                v_max,
                shrink: shrink.filter(|_| decays),
                l2: l2.filter(|_| decays),
                beta1_weight,
                beta2,
                one_minus_beta2,
                bc2_sqrt,
                eps,
                neg_step_size,
            });
        });
    }
}

/// One parameter's Adam update, in torch's order of operations.
struct AdamLoop<'a, F> {
    param: &'a mut [F],
    grad: &'a [F],
    m: &'a mut [F],
    v: &'a mut [F],
    /// `amsgrad`'s largest second moments; empty without it.
    v_max: &'a mut [F],
    shrink: Option<F>,
    l2: Option<F>,
    beta1_weight: F,
    beta2: F,
    one_minus_beta2: F,
    bc2_sqrt: F,
    eps: F,
    neg_step_size: F,
}

impl<F: Float> SplitLoop for AdamLoop<'_, F> {
    fn len(&self) -> usize {
        self.param.len()
    }

    fn split_at(self, at: usize) -> (Self, Self) {
        let (param, param_b) = self.param.split_at_mut(at);
        let (grad, grad_b) = self.grad.split_at(at);
        let (m, m_b) = self.m.split_at_mut(at);
        let (v, v_b) = self.v.split_at_mut(at);
        let (v_max, v_max_b) = cut_mut(self.v_max, at);
        let second = AdamLoop {
            param: param_b,
            grad: grad_b,
            m: m_b,
            v: v_b,
            v_max: v_max_b,
            ..self
        };
        (
            AdamLoop {
                param,
                grad,
                m,
                v,
                v_max,
                ..self
            },
            second,
        )
    }
}

impl<F: Float> ElementLoop for AdamLoop<'_, F> {
    #[inline(always)]
    fn run(self) {
        // One copy of the loop per weight-decay case (the same for every element), so that
        // each parameter is loaded once and stored once. With the cases tested inside the
        // loop, LLVM stored the decoupled decay's `p · shrink` under a mask and loaded it
        // back for the update, and a load that reads a masked store waits for the store to
        // retire. Alone (not inside a training step, where its operands come from memory and
        // it waits on them instead), Adam over W3's 6.3 M parameters on one AVX-512 core:
        // 4.5–4.8 ms before, 4.2–4.3 ms after.
        if !self.v_max.is_empty() {
            return match (self.shrink, self.l2) {
                (None, None) => self.update_amsgrad(|p| p, |g, _| g),
                (Some(shrink), None) => self.update_amsgrad(|p| p * shrink, |g, _| g),
                (None, Some(wd)) => self.update_amsgrad(|p| p, |g, p| add_scaled(g, wd, p)),
                (Some(shrink), Some(wd)) => {
                    self.update_amsgrad(|p| p * shrink, |g, p| add_scaled(g, wd, p))
                }
            };
        }
        match (self.shrink, self.l2) {
            (None, None) => self.update(|p| p, |g, _| g),
            (Some(shrink), None) => self.update(|p| p * shrink, |g, _| g),
            (None, Some(wd)) => self.update(|p| p, |g, p| add_scaled(g, wd, p)),
            (Some(shrink), Some(wd)) => self.update(|p| p * shrink, |g, p| add_scaled(g, wd, p)),
        }
    }
}

impl<F: Float> AdamLoop<'_, F> {
    /// The update of every element, with `shrink` the decoupled weight decay (`p ← p ·
    /// (1 − lr · wd)`, before the update) and `decay` the L2 one (`g ← g + wd · p`, on the
    /// shrunk `p`).
    #[inline(always)]
    fn update(self, shrink: impl Fn(F) -> F, decay: impl Fn(F, F) -> F) {
        let AdamLoop {
            param,
            grad,
            m,
            v,
            v_max: _,
            beta1_weight,
            beta2,
            one_minus_beta2,
            bc2_sqrt,
            eps,
            neg_step_size,
            ..
        } = self;
        for (((p, &g), m), v) in param
            .iter_mut()
            .zip(grad)
            .zip(m.iter_mut())
            .zip(v.iter_mut())
        {
            let shrunk = shrink(*p);
            let g = decay(g, shrunk);
            // exp_avg.lerp_(grad, 1 - beta1)
            *m = lerp(*m, g, beta1_weight);
            // exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            *v = *v * beta2 + one_minus_beta2 * g * g;
            // denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
            let denom = v.sqrt() / bc2_sqrt + eps;
            // param.addcdiv_(exp_avg, denom, value=-step_size)
            *p = shrunk + neg_step_size * *m / denom;
        }
    }

    /// [`Self::update`] with `amsgrad`: the denominator from the largest second moment seen
    /// so far, kept in `v_max`. (A loop of its own, so that the plain one keeps its four
    /// streams.)
    #[inline(always)]
    fn update_amsgrad(self, shrink: impl Fn(F) -> F, decay: impl Fn(F, F) -> F) {
        let AdamLoop {
            param,
            grad,
            m,
            v,
            v_max,
            beta1_weight,
            beta2,
            one_minus_beta2,
            bc2_sqrt,
            eps,
            neg_step_size,
            ..
        } = self;
        let moments = m.iter_mut().zip(v.iter_mut()).zip(v_max.iter_mut());
        for ((p, &g), ((m, v), v_max)) in param.iter_mut().zip(grad).zip(moments) {
            let shrunk = shrink(*p);
            let g = decay(g, shrunk);
            *m = lerp(*m, g, beta1_weight);
            *v = *v * beta2 + one_minus_beta2 * g * g;
            // torch.maximum(max_exp_avg_sqs[i], exp_avg_sq, out=max_exp_avg_sqs[i]): a NaN in
            // either gives NaN (their sum), as `maximum` propagates it.
            *v_max = if *v_max >= *v {
                *v_max
            } else if *v > *v_max {
                *v
            } else {
                *v + *v_max
            };
            // denom = (max_exp_avg_sqs[i].sqrt() / bias_correction2_sqrt).add_(eps)
            let denom = v_max.sqrt() / bc2_sqrt + eps;
            *p = shrunk + neg_step_size * *m / denom;
        }
    }
}

/// Adam, as `torch.optim.Adam`. Weight decay is L2: `g ← g + wd · p`.
///
/// With `t` the step number from 1, per element:
/// `m ← m + (1 − β₁)(g − m)`, `v ← β₂ v + (1 − β₂) g²`,
/// `p ← p − (lr / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + eps)`.
///
/// ```
/// use kiln_runtime::{Adam, Optimizer};
/// let opt = Adam::<f32>::new(1e-3).betas(0.9, 0.999).eps(1e-8).weight_decay(0.0);
/// assert_eq!(opt.learning_rate(), 1e-3);
/// ```
#[derive(Clone, Debug)]
pub struct Adam<F> {
    core: AdamCore<F>,
}

impl<F: Float> Adam<F> {
    /// Adam with learning rate `lr` (≥ 0) and PyTorch's defaults: betas (0.9, 0.999), eps
    /// 1e-8, no weight decay.
    pub fn new(lr: f64) -> Self {
        Self {
            core: AdamCore::new(lr, 0.0, false),
        }
    }

    moment_rate_builders!(core);

    /// L2 weight decay added to the gradient (≥ 0, default 0).
    pub fn weight_decay(mut self, weight_decay: f64) -> Self {
        self.core.weight_decay = weight_decay;
        self
    }

    /// Applies weight decay only to the parameters `filter` accepts (by name and shape), as
    /// PyTorch's parameter groups with `weight_decay=0` for the others. Default: every
    /// parameter. See [`AdamW::decay_filter`].
    pub fn decay_filter(mut self, filter: DecayFilter) -> Self {
        self.core.decay_filter = Some(filter);
        self
    }

    param_rule_builders!(core.rules);

    /// PyTorch's `amsgrad` (default off): the update divides by the largest second moment
    /// estimate seen so far rather than the current one, keeping one more buffer per
    /// parameter (`max_exp_avg_sq`).
    pub fn amsgrad(mut self, amsgrad: bool) -> Self {
        self.core.amsgrad = amsgrad;
        self
    }

    /// The number of steps taken (`t` of the last step).
    pub fn steps(&self) -> u64 {
        self.core.steps
    }

    /// Forgets the moment estimates and the step count, as a freshly built optimizer.
    pub fn reset(&mut self) {
        self.core.reset();
    }
}

impl<F: Float> Adam<F> {
    /// A copy of the optimizer's state for a checkpoint: `lr`, `beta1`, `beta2`, `eps`,
    /// `weight_decay`, `step` and the `exp_avg` and `exp_avg_sq` buffers (PyTorch's names).
    pub fn export_state(&self) -> OptimizerState<F> {
        self.core.export_state("Adam")
    }

    /// Replaces the whole state, hyperparameters and step count included (as PyTorch's
    /// `load_state_dict`), with one made by [`Adam::export_state`].
    ///
    /// # Errors
    /// [`Error::Mismatch`](crate::Error::Mismatch) if `state` is not an `Adam` state or lacks
    /// a field; the optimizer is then unchanged.
    pub fn import_state(&mut self, state: &OptimizerState<F>) -> Result<()> {
        self.core.import_state(state, "Adam")
    }
}

impl<F: Float> Optimizer<F> for Adam<F> {
    fn step<M: Model<F>>(&mut self, model: &mut M, grads: &M::Grads) {
        self.core.step(model, grads, "Adam");
    }

    fn learning_rate(&self) -> f64 {
        self.core.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.core.lr = lr;
    }

    fn momentum_term(&self) -> Option<f64> {
        Some(self.core.beta1)
    }

    fn set_momentum_term(&mut self, momentum: f64) {
        self.core.beta1 = momentum;
    }

    fn frozen(&self) -> Option<ParamFilter> {
        self.core.rules.frozen()
    }
}

/// AdamW, as `torch.optim.AdamW`: Adam with decoupled weight decay. Each
/// step first shrinks every parameter, biases included, `p ← p · (1 − lr · wd)`, then applies
/// the [`Adam`] update with the plain gradient. [`AdamW::decay_filter`] exempts some
/// parameters (biases, normalization weights) from the shrinking.
///
/// ```
/// use kiln_runtime::{AdamW, Optimizer};
/// let opt = AdamW::<f64>::new(1e-3).weight_decay(0.05);
/// assert_eq!(opt.learning_rate(), 1e-3);
/// ```
#[derive(Clone, Debug)]
pub struct AdamW<F> {
    core: AdamCore<F>,
}

impl<F: Float> AdamW<F> {
    /// AdamW with learning rate `lr` (≥ 0) and PyTorch's defaults: betas (0.9, 0.999), eps
    /// 1e-8, weight decay 0.01.
    pub fn new(lr: f64) -> Self {
        Self {
            core: AdamCore::new(lr, 0.01, true),
        }
    }

    moment_rate_builders!(core);

    /// Decoupled weight decay (≥ 0, default 0.01).
    pub fn weight_decay(mut self, weight_decay: f64) -> Self {
        self.core.weight_decay = weight_decay;
        self
    }

    /// Applies weight decay only to the parameters `filter` accepts, given each parameter's
    /// name and shape: PyTorch's two parameter groups, one with `weight_decay=0`. The usual
    /// choice (nanoGPT's) decays matrices and embedding tables but not biases and
    /// normalization weights: `|_, shape| shape.len() >= 2`. Default: every parameter.
    ///
    /// The filter is part of the optimizer's configuration, not of its state: it is not
    /// exported by [`AdamW::export_state`] and is kept by [`AdamW::import_state`].
    ///
    /// ```
    /// use kiln_runtime::{AdamW, Optimizer};
    /// let opt = AdamW::<f32>::new(1e-3)
    ///     .weight_decay(0.1)
    ///     .decay_filter(|_name, shape| shape.len() >= 2);
    /// assert_eq!(opt.learning_rate(), 1e-3);
    /// ```
    pub fn decay_filter(mut self, filter: DecayFilter) -> Self {
        self.core.decay_filter = Some(filter);
        self
    }

    param_rule_builders!(core.rules);

    /// PyTorch's `amsgrad` (default off): the update divides by the largest second moment
    /// estimate seen so far rather than the current one, keeping one more buffer per
    /// parameter (`max_exp_avg_sq`).
    pub fn amsgrad(mut self, amsgrad: bool) -> Self {
        self.core.amsgrad = amsgrad;
        self
    }

    /// The number of steps taken (`t` of the last step).
    pub fn steps(&self) -> u64 {
        self.core.steps
    }

    /// Forgets the moment estimates and the step count, as a freshly built optimizer.
    pub fn reset(&mut self) {
        self.core.reset();
    }
}

impl<F: Float> AdamW<F> {
    /// A copy of the optimizer's state for a checkpoint: `lr`, `beta1`, `beta2`, `eps`,
    /// `weight_decay`, `step` and the `exp_avg` and `exp_avg_sq` buffers (PyTorch's names).
    pub fn export_state(&self) -> OptimizerState<F> {
        self.core.export_state("AdamW")
    }

    /// Replaces the whole state, hyperparameters and step count included (as PyTorch's
    /// `load_state_dict`), with one made by [`AdamW::export_state`].
    ///
    /// # Errors
    /// [`Error::Mismatch`](crate::Error::Mismatch) if `state` is not an `AdamW` state or lacks
    /// a field; the optimizer is then unchanged.
    pub fn import_state(&mut self, state: &OptimizerState<F>) -> Result<()> {
        self.core.import_state(state, "AdamW")
    }
}

impl<F: Float> Optimizer<F> for AdamW<F> {
    fn step<M: Model<F>>(&mut self, model: &mut M, grads: &M::Grads) {
        self.core.step(model, grads, "AdamW");
    }

    fn learning_rate(&self) -> f64 {
        self.core.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.core.lr = lr;
    }

    fn momentum_term(&self) -> Option<f64> {
        Some(self.core.beta1)
    }

    fn set_momentum_term(&mut self, momentum: f64) {
        self.core.beta1 = momentum;
    }

    fn frozen(&self) -> Option<ParamFilter> {
        self.core.rules.frozen()
    }
}

#[cfg(test)]
mod tests {
    use super::AdamLoop;
    use crate::kernels::dispatch::{run_fast, ElementLoop};
    use crate::kernels::parallel::{run_fast_split, SplitLoop};

    /// Deterministic, distinct values.
    fn values(len: usize, seed: f32) -> Vec<f32> {
        (0..len)
            .map(|i| ((i as f32 * 0.618 + seed).fract() - 0.5) * 0.2)
            .collect()
    }

    /// One step over `len` elements: (param, m, v, and with `amsgrad` v_max) after it, run
    /// by `run`.
    fn step(
        len: usize,
        decay: bool,
        amsgrad: bool,
        run: impl FnOnce(AdamLoop<'_, f32>),
    ) -> Vec<Vec<f32>> {
        let (mut p, g) = (values(len, 0.1), values(len, 0.3));
        let (mut m, mut v) = (values(len, 0.5), values(len, 0.7));
        v.iter_mut().for_each(|x| *x = x.abs());
        let mut v_max = if amsgrad {
            values(len, 0.9).iter().map(|x| x.abs()).collect()
        } else {
            Vec::new()
        };
        run(AdamLoop {
            param: &mut p,
            grad: &g,
            m: &mut m,
            v: &mut v,
            v_max: &mut v_max,
            shrink: decay.then_some(0.999),
            l2: None,
            beta1_weight: 0.1,
            beta2: 0.999,
            one_minus_beta2: 0.001,
            bc2_sqrt: 0.03,
            eps: 1e-8,
            neg_step_size: -0.01,
        });
        vec![p, m, v, v_max]
    }

    #[test]
    fn split_updates_equal_the_whole_bit_for_bit() {
        for (len, amsgrad) in [(1 << 14, false), (50_001, false), (50_001, true)] {
            let whole = step(len, true, amsgrad, |l| run_fast(l));
            let halves = step(len, true, amsgrad, |l| {
                let (a, b) = l.split_at(len / 2 + 7);
                run_fast(b);
                a.run();
            });
            assert_eq!(whole, halves);
            assert_eq!(whole, step(len, true, amsgrad, |l| run_fast_split(l)));
        }
    }
}
