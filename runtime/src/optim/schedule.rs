//! Learning-rate schedules: [`StepLr`], [`MultiStepLr`], [`ExponentialLr`],
//! [`CosineAnnealing`], [`OneCycleLr`] (which also cycles the momentum), [`LinearWarmup`],
//! [`Constant`] and [`from_fn`], each PyTorch's closed form (`torch.optim.lr_scheduler`), and
//! [`ReduceLrOnPlateau`], which follows the monitored loss.
//!
//! A schedule is a pure function of time: [`LrSchedule::lr`] maps *(epoch, step, base rate)*
//! to the rate of that optimizer step. There is no `scheduler.step()` to call at the right
//! moment and no state to save in a checkpoint; resuming at epoch 7 gives epoch 7's rate.
//! Both clocks count from 0: `epoch` is the epoch the step belongs to, `step` the number of
//! optimizer steps taken before it in the whole run. Each schedule counts in one of the two
//! ([`Interval`]): per epoch by default, as PyTorch schedulers are usually stepped, or per
//! step ([`StepLr::per_step`] and the like) for a warmup or a cosine measured in iterations.
//!
//! `kiln::train::Trainer` sets the rate before every optimizer step. In a plain loop:
//!
//! ```
//! use kiln_runtime::optim::{CosineAnnealing, LinearWarmup, LrSchedule};
//! use kiln_runtime::{Optimizer, Sgd};
//!
//! let mut opt = Sgd::<f32>::new(0.1);
//! let base_lr = opt.learning_rate();
//! // Five warmup epochs from 0.01 to 0.1, then a cosine from 0.1 to 0 over 20 epochs.
//! let schedule = LinearWarmup::epochs(5, CosineAnnealing::new(20, 0.0)).start_factor(0.1);
//! let mut step = 0;
//! for epoch in 0..25 {
//!     for _batch in 0..10 {
//!         opt.set_learning_rate(schedule.lr(epoch, step, base_lr));
//!         // opt.step(&mut model, &grads);
//!         step += 1;
//!     }
//! }
//! assert!((schedule.lr(0, 0, base_lr) - 0.01).abs() < 1e-12);
//! assert_eq!(schedule.lr(5, 50, base_lr), 0.1);
//! ```

use std::f64::consts::PI;
use std::fmt;

/// A learning rate as a function of training time.
///
/// Implementations must be pure (same arguments, same rate): the trainer evaluates the
/// schedule before every step and after a resume, and relies on getting the same answer.
pub trait LrSchedule {
    /// The learning rate of the optimizer step `step` (counted from 0 over the whole run),
    /// which belongs to epoch `epoch` (counted from 0), for an optimizer whose initial rate is
    /// `base_lr`.
    fn lr(&self, epoch: usize, step: usize, base_lr: f64) -> f64;

    /// The momentum of that step, for a schedule that cycles it (PyTorch's `OneCycleLR` with
    /// `cycle_momentum=True`): SGD's and RMSprop's `momentum`, Adam's and AdamW's `beta1`
    /// (see [`Optimizer::set_momentum_term`](super::Optimizer::set_momentum_term)). `None`, the
    /// default, leaves the optimizer's momentum alone.
    fn momentum(&self, epoch: usize, step: usize) -> Option<f64> {
        let _ = (epoch, step);
        None
    }

    /// The number of optimizer steps the schedule is laid out for, when it has one
    /// ([`OneCycleLr`]'s `total_steps`); `None` (the default) for a schedule defined at every
    /// step. The [`Trainer`](crate::train::Trainer) refuses, before it trains, a run of more steps
    /// (PyTorch's `OneCycleLR` raises an error at the first step past it, mid-training).
    fn max_steps(&self) -> Option<usize> {
        None
    }
}

impl<S: LrSchedule + ?Sized> LrSchedule for Box<S> {
    fn lr(&self, epoch: usize, step: usize, base_lr: f64) -> f64 {
        (**self).lr(epoch, step, base_lr)
    }
    fn momentum(&self, epoch: usize, step: usize) -> Option<f64> {
        (**self).momentum(epoch, step)
    }
    fn max_steps(&self) -> Option<usize> {
        (**self).max_steps()
    }
}

impl<S: LrSchedule + ?Sized> LrSchedule for &S {
    fn lr(&self, epoch: usize, step: usize, base_lr: f64) -> f64 {
        (**self).lr(epoch, step, base_lr)
    }
    fn momentum(&self, epoch: usize, step: usize) -> Option<f64> {
        (**self).momentum(epoch, step)
    }
    fn max_steps(&self) -> Option<usize> {
        (**self).max_steps()
    }
}

/// Which clock a schedule counts in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Interval {
    /// Epochs: the rate changes between epochs only (PyTorch's usual `scheduler.step()` once
    /// per epoch).
    #[default]
    Epoch,
    /// Optimizer steps: the rate may change before every batch (`scheduler.step()` once per
    /// batch).
    Step,
}

impl Interval {
    /// The count on this clock: `epoch` or `step`.
    pub fn pick(self, epoch: usize, step: usize) -> usize {
        match self {
            Interval::Epoch => epoch,
            Interval::Step => step,
        }
    }
}

/// The base rate unchanged (no schedule); a natural [`LinearWarmup::then`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Constant;

impl LrSchedule for Constant {
    fn lr(&self, _epoch: usize, _step: usize, base_lr: f64) -> f64 {
        base_lr
    }
}

/// Multiplies the rate by `gamma` every `step_size` epochs (or steps), as
/// `torch.optim.lr_scheduler.StepLR`: `lr(t) = base_lr · gamma^⌊t / step_size⌋`.
///
/// ```
/// use kiln_runtime::optim::{LrSchedule, StepLr};
/// let s = StepLr::new(2, 0.5);
/// let rates: Vec<f64> = (0..5).map(|epoch| s.lr(epoch, 0, 0.1)).collect();
/// assert_eq!(rates, [0.1, 0.1, 0.05, 0.05, 0.025]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepLr {
    /// Period of the decay, in [`StepLr::interval`] units (must be ≥ 1; 0 is treated as 1).
    pub step_size: usize,
    /// Multiplicative factor applied at each period.
    pub gamma: f64,
    /// Whether `step_size` counts epochs (the default) or optimizer steps.
    pub interval: Interval,
}

impl StepLr {
    /// Decay by `gamma` every `step_size` epochs.
    pub fn new(step_size: usize, gamma: f64) -> Self {
        Self {
            step_size,
            gamma,
            interval: Interval::Epoch,
        }
    }

    /// Count `step_size` in optimizer steps instead of epochs.
    pub fn per_step(mut self) -> Self {
        self.interval = Interval::Step;
        self
    }
}

impl LrSchedule for StepLr {
    fn lr(&self, epoch: usize, step: usize, base_lr: f64) -> f64 {
        let t = self.interval.pick(epoch, step);
        // Python's `gamma ** (t // step_size)` is C's pow on floats, which `powf` is (`powi`
        // may round differently).
        base_lr * self.gamma.powf((t / self.step_size.max(1)) as f64)
    }
}

/// Multiplies the rate by `gamma` at each milestone, as
/// `torch.optim.lr_scheduler.MultiStepLR`: `lr(t) = base_lr · gamma^k` with `k` the number of
/// milestones at or before `t` (a milestone listed twice counts twice, as in PyTorch).
///
/// ```
/// use kiln_runtime::optim::{LrSchedule, MultiStepLr};
/// let s = MultiStepLr::new([2, 4], 0.5);
/// let rates: Vec<f64> = (0..6).map(|epoch| s.lr(epoch, 0, 1.0)).collect();
/// assert_eq!(rates, [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct MultiStepLr {
    /// The epochs (or steps) at which the rate drops, sorted.
    pub milestones: Vec<usize>,
    /// Multiplicative factor applied at each milestone.
    pub gamma: f64,
    /// Whether the milestones count epochs (the default) or optimizer steps.
    pub interval: Interval,
}

impl MultiStepLr {
    /// Decay by `gamma` at each of `milestones` (epochs; any order).
    pub fn new(milestones: impl IntoIterator<Item = usize>, gamma: f64) -> Self {
        let mut milestones: Vec<usize> = milestones.into_iter().collect();
        milestones.sort_unstable();
        Self {
            milestones,
            gamma,
            interval: Interval::Epoch,
        }
    }

    /// Count the milestones in optimizer steps instead of epochs.
    pub fn per_step(mut self) -> Self {
        self.interval = Interval::Step;
        self
    }
}

impl LrSchedule for MultiStepLr {
    fn lr(&self, epoch: usize, step: usize, base_lr: f64) -> f64 {
        let t = self.interval.pick(epoch, step);
        let passed = self.milestones.partition_point(|&m| m <= t);
        // PyTorch's closed form, `base_lr * gamma ** bisect_right(milestones, t)`.
        base_lr * self.gamma.powf(passed as f64)
    }
}

/// Multiplies the rate by `gamma` every epoch (or step), as
/// `torch.optim.lr_scheduler.ExponentialLR`: `lr(t) = base_lr · gamma^t`.
///
/// ```
/// use kiln_runtime::optim::{ExponentialLr, LrSchedule};
/// let s = ExponentialLr::new(0.5);
/// assert_eq!(s.lr(3, 0, 1.0), 0.125);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ExponentialLr {
    /// Multiplicative factor per epoch (or step).
    pub gamma: f64,
    /// Whether the decay counts epochs (the default) or optimizer steps.
    pub interval: Interval,
}

impl ExponentialLr {
    /// Decay by `gamma` every epoch.
    pub fn new(gamma: f64) -> Self {
        Self {
            gamma,
            interval: Interval::Epoch,
        }
    }

    /// Decay every optimizer step instead of every epoch.
    pub fn per_step(mut self) -> Self {
        self.interval = Interval::Step;
        self
    }
}

impl LrSchedule for ExponentialLr {
    fn lr(&self, epoch: usize, step: usize, base_lr: f64) -> f64 {
        let t = self.interval.pick(epoch, step);
        base_lr * self.gamma.powf(t as f64)
    }
}

/// How [`OneCycleLr`] moves between two values (PyTorch's `anneal_strategy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Anneal {
    /// Half a cosine (`"cos"`, the default).
    #[default]
    Cos,
    /// A straight line (`"linear"`).
    Linear,
}

impl Anneal {
    /// From `start` at `pct = 0` to `end` at `pct = 1`, in PyTorch's order of operations.
    fn at(self, start: f64, end: f64, pct: f64) -> f64 {
        match self {
            Anneal::Cos => end + (start - end) / 2.0 * ((PI * pct).cos() + 1.0),
            Anneal::Linear => (end - start) * pct + start,
        }
    }
}

/// The 1cycle policy of `torch.optim.lr_scheduler.OneCycleLR`, counted in optimizer steps:
/// the rate rises from `max_lr / div_factor` to `max_lr` over the first `pct_start` of
/// `total_steps`, then falls to `max_lr / div_factor / final_div_factor`; the momentum moves
/// the other way, from `max_momentum` down to `base_momentum` and back (PyTorch's
/// `cycle_momentum=True`, the default: Adam's `beta1`, SGD's `momentum`). With
/// [`three_phase`](Self::three_phase) the rate comes back to the starting rate symmetrically
/// before the final fall.
///
/// As in PyTorch, the optimizer's own rate is not used: `max_lr` sets the scale. The
/// [`Trainer`](crate::train::Trainer) refuses to start a run longer than `total_steps` (see
/// [`LrSchedule::max_steps`]; PyTorch raises an error when it gets there); asked directly,
/// past `total_steps` the rate stays at the final one.
///
/// ```
/// use kiln_runtime::optim::{LrSchedule, OneCycleLr};
/// let s = OneCycleLr::new(0.1, 100); // PyTorch: OneCycleLR(opt, max_lr=0.1, total_steps=100)
/// assert!((s.lr(0, 0, 1e-3) - 0.1 / 25.0).abs() < 1e-15); // the start: max_lr / div_factor
/// assert_eq!(s.lr(0, 29, 1e-3), 0.1); // the peak, after 30% of the steps
/// assert!(s.lr(0, 99, 1e-3) < 1e-6); // the end: 1e4 times below the start
/// assert_eq!(s.momentum(0, 0), Some(0.95)); // Adam's beta1 (SGD's momentum) cycles too
/// assert_eq!(s.momentum(0, 29), Some(0.85));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OneCycleLr {
    /// The highest rate, reached at the end of the first phase.
    pub max_lr: f64,
    /// The length of the cycle in optimizer steps (PyTorch's `total_steps`, or `epochs ·
    /// steps_per_epoch`).
    pub total_steps: usize,
    /// The fraction of the cycle spent raising the rate (default 0.3).
    pub pct_start: f64,
    /// Cosine (the default) or linear annealing.
    pub anneal: Anneal,
    /// Whether the momentum cycles inversely to the rate (default `true`).
    pub cycle_momentum: bool,
    /// The momentum at the peak rate (default 0.85).
    pub base_momentum: f64,
    /// The momentum at the start and the end (default 0.95).
    pub max_momentum: f64,
    /// The starting rate is `max_lr / div_factor` (default 25).
    pub div_factor: f64,
    /// The final rate is the starting rate divided by this (default 1e4).
    pub final_div_factor: f64,
    /// Whether the rate returns to the starting rate before the final fall (default `false`).
    pub three_phase: bool,
}

impl OneCycleLr {
    /// A cycle of `total_steps` optimizer steps peaking at `max_lr`, with PyTorch's defaults.
    pub fn new(max_lr: f64, total_steps: usize) -> Self {
        Self {
            max_lr,
            total_steps,
            pct_start: 0.3,
            anneal: Anneal::Cos,
            cycle_momentum: true,
            base_momentum: 0.85,
            max_momentum: 0.95,
            div_factor: 25.0,
            final_div_factor: 1e4,
            three_phase: false,
        }
    }

    /// A cycle over `epochs` epochs of `steps_per_epoch` batches (PyTorch's `epochs` and
    /// `steps_per_epoch` arguments).
    pub fn epochs(max_lr: f64, epochs: usize, steps_per_epoch: usize) -> Self {
        Self::new(max_lr, epochs * steps_per_epoch)
    }

    /// The fraction of the cycle spent raising the rate.
    pub fn pct_start(mut self, pct_start: f64) -> Self {
        self.pct_start = pct_start;
        self
    }

    /// Cosine or linear annealing.
    pub fn anneal(mut self, anneal: Anneal) -> Self {
        self.anneal = anneal;
        self
    }

    /// Whether the momentum cycles (`false` leaves the optimizer's own).
    pub fn cycle_momentum(mut self, cycle: bool) -> Self {
        self.cycle_momentum = cycle;
        self
    }

    /// The momentum's range: `base` at the peak rate, `max` at the ends.
    pub fn momentum_range(mut self, base: f64, max: f64) -> Self {
        (self.base_momentum, self.max_momentum) = (base, max);
        self
    }

    /// The starting rate is `max_lr / div_factor`.
    pub fn div_factor(mut self, div_factor: f64) -> Self {
        self.div_factor = div_factor;
        self
    }

    /// The final rate is the starting rate divided by `final_div_factor`.
    pub fn final_div_factor(mut self, final_div_factor: f64) -> Self {
        self.final_div_factor = final_div_factor;
        self
    }

    /// Three phases: up, back down to the starting rate, then the final fall.
    pub fn three_phase(mut self, three_phase: bool) -> Self {
        self.three_phase = three_phase;
        self
    }

    /// The phase of step `step` and how far into it, as PyTorch's `get_lr` finds them:
    /// `(phase index, pct)` with phases `(end step, start rate, end rate, start momentum,
    /// end momentum)`.
    fn locate(&self, step: usize) -> (f64, f64, f64, f64, f64) {
        let initial = self.max_lr / self.div_factor;
        let min_lr = initial / self.final_div_factor;
        let (base_m, max_m) = (self.base_momentum, self.max_momentum);
        let total = self.total_steps as f64;
        let first = self.pct_start * total - 1.0;
        let last = total - 1.0;
        let phases: &[(f64, f64, f64, f64, f64)] = if self.three_phase {
            &[
                (first, initial, self.max_lr, max_m, base_m),
                (
                    2.0 * self.pct_start * total - 2.0,
                    self.max_lr,
                    initial,
                    base_m,
                    max_m,
                ),
                (last, initial, min_lr, max_m, max_m),
            ]
        } else {
            &[
                (first, initial, self.max_lr, max_m, base_m),
                (last, self.max_lr, min_lr, base_m, max_m),
            ]
        };
        let step = step.min(self.total_steps) as f64;
        let mut start = 0.0;
        for (i, &(end, lr0, lr1, m0, m1)) in phases.iter().enumerate() {
            if step <= end || i + 1 == phases.len() {
                // A phase of no length (a cycle of a step or two) is over at once, where
                // PyTorch would divide by zero.
                let pct = if end > start {
                    (step - start) / (end - start)
                } else {
                    1.0
                };
                return (pct, lr0, lr1, m0, m1);
            }
            start = end;
        }
        (1.0, min_lr, min_lr, max_m, max_m)
    }
}

impl LrSchedule for OneCycleLr {
    fn lr(&self, _epoch: usize, step: usize, _base_lr: f64) -> f64 {
        let (pct, start, end, ..) = self.locate(step);
        self.anneal.at(start, end, pct)
    }

    fn max_steps(&self) -> Option<usize> {
        Some(self.total_steps)
    }

    fn momentum(&self, _epoch: usize, step: usize) -> Option<f64> {
        if !self.cycle_momentum {
            return None;
        }
        let (pct, _, _, start, end) = self.locate(step);
        Some(self.anneal.at(start, end, pct))
    }
}

/// Anneals the rate from `base_lr` to `eta_min` along half a cosine over `t_max` epochs (or
/// steps), as `torch.optim.lr_scheduler.CosineAnnealingLR`'s closed form:
/// `lr(t) = eta_min + (base_lr − eta_min) · (1 + cos(π · t / t_max)) / 2`.
///
/// Past `t_max` the formula keeps going (it climbs back to `base_lr` at `2 · t_max`), exactly
/// as PyTorch's does; pick `t_max` equal to the length of training to end at `eta_min`.
///
/// ```
/// use kiln_runtime::optim::{CosineAnnealing, LrSchedule};
/// let s = CosineAnnealing::new(4, 0.0);
/// assert_eq!(s.lr(0, 0, 1.0), 1.0);
/// assert!((s.lr(2, 0, 1.0) - 0.5).abs() < 1e-15);
/// assert_eq!(s.lr(4, 0, 1.0), 0.0);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CosineAnnealing {
    /// Half-period of the cosine, in [`CosineAnnealing::interval`] units (must be ≥ 1; 0 is
    /// treated as 1).
    pub t_max: usize,
    /// The rate reached at `t_max`.
    pub eta_min: f64,
    /// Whether `t_max` counts epochs (the default) or optimizer steps.
    pub interval: Interval,
}

impl CosineAnnealing {
    /// Anneal to `eta_min` over `t_max` epochs.
    pub fn new(t_max: usize, eta_min: f64) -> Self {
        Self {
            t_max,
            eta_min,
            interval: Interval::Epoch,
        }
    }

    /// Count `t_max` in optimizer steps instead of epochs.
    pub fn per_step(mut self) -> Self {
        self.interval = Interval::Step;
        self
    }
}

impl LrSchedule for CosineAnnealing {
    fn lr(&self, epoch: usize, step: usize, base_lr: f64) -> f64 {
        let t = self.interval.pick(epoch, step) as f64;
        let t_max = self.t_max.max(1) as f64;
        // Same operations in the same order as PyTorch's `_get_closed_form_lr`, so that the
        // rates agree to the last bit.
        self.eta_min + (base_lr - self.eta_min) * (1.0 + (PI * t / t_max).cos()) / 2.0
    }
}

/// Cosine annealing with warm restarts, as `torch.optim.lr_scheduler.CosineAnnealingWarmRestarts`
/// (SGDR): the rate falls from `base_lr` to `eta_min` along half a cosine over a cycle of `t_0`
/// epochs (or steps), then restarts at `base_lr` for a cycle `t_mult` times longer, and so on:
/// `lr(t) = eta_min + (base_lr − eta_min) · (1 + cos(π · t_cur / t_i)) / 2`, with `t_i` the
/// current cycle's length and `t_cur` the position in it (both whole numbers, as PyTorch counts
/// them step by step, so the rates agree to the last bit).
///
/// ```
/// use kiln_runtime::optim::{CosineWarmRestarts, LrSchedule};
/// // Cycles of 2, 4, 8 ... epochs (PyTorch: T_0=2, T_mult=2).
/// let s = CosineWarmRestarts::new(2, 2, 0.0);
/// assert_eq!(s.lr(0, 0, 1.0), 1.0);
/// assert!((s.lr(1, 0, 1.0) - 0.5).abs() < 1e-15);
/// assert_eq!(s.lr(2, 0, 1.0), 1.0); // the restart
/// assert!((s.lr(4, 0, 1.0) - 0.5).abs() < 1e-15); // half-way through the cycle of 4
/// assert_eq!(s.lr(6, 0, 1.0), 1.0);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CosineWarmRestarts {
    /// The first cycle's length, in [`CosineWarmRestarts::interval`] units (at least 1; 0 is
    /// treated as 1).
    pub t_0: usize,
    /// How many times longer each cycle is than the one before (at least 1; 0 is treated as 1).
    pub t_mult: usize,
    /// The rate at the end of each cycle.
    pub eta_min: f64,
    /// Whether the cycles count epochs (the default, PyTorch's `scheduler.step()` once per
    /// epoch) or optimizer steps.
    pub interval: Interval,
}

impl CosineWarmRestarts {
    /// Cycles of `t_0`, `t_0 · t_mult`, `t_0 · t_mult²` ... epochs, each annealing to
    /// `eta_min`.
    pub fn new(t_0: usize, t_mult: usize, eta_min: f64) -> Self {
        Self {
            t_0,
            t_mult,
            eta_min,
            interval: Interval::Epoch,
        }
    }

    /// Count the cycles in optimizer steps instead of epochs.
    pub fn per_step(mut self) -> Self {
        self.interval = Interval::Step;
        self
    }

    /// `(t_cur, t_i)` at time `t`: the cycles before it subtracted one by one, as PyTorch's
    /// `step()` does (`T_cur -= T_i; T_i *= T_mult`), in whole numbers.
    fn locate(&self, t: usize) -> (usize, usize) {
        let (mut t_cur, mut t_i) = (t, self.t_0.max(1));
        let t_mult = self.t_mult.max(1);
        if t_mult == 1 {
            return (t_cur % t_i, t_i);
        }
        while t_cur >= t_i {
            t_cur -= t_i;
            // A cycle longer than any count of steps ends the search: `t_cur` is inside it.
            t_i = t_i.saturating_mul(t_mult);
        }
        (t_cur, t_i)
    }
}

impl LrSchedule for CosineWarmRestarts {
    fn lr(&self, epoch: usize, step: usize, base_lr: f64) -> f64 {
        let (t_cur, t_i) = self.locate(self.interval.pick(epoch, step));
        // PyTorch's `get_lr`, in its order of operations.
        self.eta_min
            + (base_lr - self.eta_min) * (1.0 + (PI * t_cur as f64 / t_i as f64).cos()) / 2.0
    }
}

/// A linear warmup, then another schedule: PyTorch's
/// `SequentialLR([LinearLR(start_factor, 1.0, total_iters=warmup), then], milestones=[warmup])`.
///
/// For `t < warmup` (in the warmup's [`Interval`]):
/// `lr(t) = base_lr · (start_factor + (1 − start_factor) · t / warmup)`, rising from
/// `start_factor · base_lr` towards `base_lr`. From `t = warmup` on, the rate is `then`'s,
/// with `then`'s clock restarted at 0 at the end of the warmup, as `SequentialLR` restarts the
/// next scheduler: `then.lr(..)` receives `t − warmup` on the warmup's clock and the other
/// clock unchanged. So a warmup of 500 steps followed by a 20-epoch cosine starts the cosine
/// at epoch 0, overlapping the warmup, while a 5-epoch warmup followed by a 20-epoch cosine
/// trains 25 epochs in all.
///
/// ```
/// use kiln_runtime::optim::{Constant, LinearWarmup, LrSchedule, StepLr};
/// // PyTorch's default start factor is 1/3.
/// let s = LinearWarmup::steps(3, Constant);
/// let rates: Vec<f64> = (0..4).map(|step| s.lr(0, step, 0.9)).collect();
/// assert!((rates[0] - 0.3).abs() < 1e-15 && (rates[1] - 0.5).abs() < 1e-15);
/// assert_eq!(rates[3], 0.9);
///
/// let s = LinearWarmup::epochs(2, StepLr::new(1, 0.1)).start_factor(0.5);
/// assert_eq!(s.lr(0, 0, 1.0), 0.5);
/// assert_eq!(s.lr(2, 0, 1.0), 1.0); // StepLr's epoch 0
/// assert!((s.lr(3, 0, 1.0) - 0.1).abs() < 1e-15); // StepLr's epoch 1
/// ```
pub struct LinearWarmup {
    /// The warmup's length, in [`LinearWarmup::interval`] units (0 means no warmup).
    pub warmup: usize,
    /// The fraction of the base rate the warmup starts from (PyTorch's `start_factor`: in
    /// `(0, 1]`, default 1/3).
    pub start_factor: f64,
    /// Whether `warmup` counts epochs or optimizer steps.
    pub interval: Interval,
    /// The schedule that follows the warmup.
    pub then: Box<dyn LrSchedule>,
}

impl LinearWarmup {
    /// A warmup of `warmup` optimizer steps, then `then`.
    pub fn steps(warmup: usize, then: impl LrSchedule + 'static) -> Self {
        Self {
            warmup,
            start_factor: 1.0 / 3.0,
            interval: Interval::Step,
            then: Box::new(then),
        }
    }

    /// A warmup of `warmup` epochs, then `then`.
    pub fn epochs(warmup: usize, then: impl LrSchedule + 'static) -> Self {
        Self {
            interval: Interval::Epoch,
            ..Self::steps(warmup, then)
        }
    }

    /// The fraction of the base rate the warmup starts from (default 1/3, as PyTorch's
    /// `LinearLR`; PyTorch requires it in `(0, 1]`).
    pub fn start_factor(mut self, start_factor: f64) -> Self {
        self.start_factor = start_factor;
        self
    }
}

impl fmt::Debug for LinearWarmup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinearWarmup")
            .field("warmup", &self.warmup)
            .field("start_factor", &self.start_factor)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

impl LrSchedule for LinearWarmup {
    fn lr(&self, epoch: usize, step: usize, base_lr: f64) -> f64 {
        let t = self.interval.pick(epoch, step);
        if t < self.warmup {
            // LinearLR's closed form with end_factor = 1, in PyTorch's order of operations.
            let (t, total) = (t as f64, self.warmup as f64);
            base_lr * (self.start_factor + (1.0 - self.start_factor) * t / total)
        } else {
            match self.interval {
                Interval::Epoch => self.then.lr(epoch - self.warmup, step, base_lr),
                Interval::Step => self.then.lr(epoch, step - self.warmup, base_lr),
            }
        }
    }

    fn max_steps(&self) -> Option<usize> {
        // The schedule after the warmup counts its steps from the warmup's end only when
        // the warmup is in steps.
        let then = self.then.max_steps()?;
        Some(match self.interval {
            Interval::Epoch => then,
            Interval::Step => then + self.warmup,
        })
    }
}

/// A schedule from a closure `|epoch, step, base_lr| -> lr`.
///
/// ```
/// use kiln_runtime::optim::{from_fn, LrSchedule};
/// // Keras' ReduceLROnPlateau cannot be a pure schedule, but an exponential decay can.
/// let s = from_fn(|epoch, _step, base_lr| base_lr * 0.9f64.powf(epoch as f64));
/// assert!((s.lr(2, 0, 1.0) - 0.81).abs() < 1e-15);
/// ```
pub fn from_fn<S: Fn(usize, usize, f64) -> f64>(f: S) -> FnSchedule<S> {
    FnSchedule(f)
}

/// A schedule made by [`from_fn`].
#[derive(Clone, Copy)]
pub struct FnSchedule<S>(S);

impl<S> fmt::Debug for FnSchedule<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnSchedule(..)")
    }
}

impl<S: Fn(usize, usize, f64) -> f64> LrSchedule for FnSchedule<S> {
    fn lr(&self, epoch: usize, step: usize, base_lr: f64) -> f64 {
        (self.0)(epoch, step, base_lr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_warmup_in_steps_lengthens_the_cycle_it_leads_into() {
        assert_eq!(OneCycleLr::new(0.1, 100).max_steps(), Some(100));
        assert_eq!(
            LinearWarmup::steps(5, OneCycleLr::new(0.1, 100)).max_steps(),
            Some(105)
        );
        // Epochs of warmup leave the cycle's step clock alone.
        assert_eq!(
            LinearWarmup::epochs(2, OneCycleLr::new(0.1, 100)).max_steps(),
            Some(100)
        );
        assert_eq!(LinearWarmup::steps(5, Constant).max_steps(), None);
        assert_eq!(CosineAnnealing::new(10, 0.0).max_steps(), None);
    }

    // Expected values: Python float64 evaluating the expressions of PyTorch's
    // `torch/optim/lr_scheduler.py` (`StepLR._get_closed_form_lr`,
    // `CosineAnnealingLR._get_closed_form_lr`, `LinearLR._get_closed_form_lr` inside
    // `SequentialLR`), printed with `repr`. The same operations in the same order give the
    // same bits, so the comparisons are exact.

    #[test]
    fn step_lr_matches_torch() {
        // StepLR(SGD(lr=0.1), step_size=3, gamma=0.1): 0.1 * 0.1 ** (epoch // 3)
        let s = StepLr::new(3, 0.1);
        let expected = [
            0.1,
            0.1,
            0.1,
            0.010000000000000002,
            0.010000000000000002,
            0.010000000000000002,
            0.0010000000000000002,
        ];
        for (epoch, &want) in expected.iter().enumerate() {
            assert_eq!(s.lr(epoch, 999, 0.1), want, "epoch {epoch}");
        }
        let per_step = StepLr::new(2, 0.5).per_step();
        assert_eq!(per_step.lr(100, 3, 1.0), 0.5);
        assert_eq!(per_step.lr(0, 4, 1.0), 0.25);
        // step_size 0 would divide by zero; it is treated as 1.
        assert_eq!(StepLr::new(0, 0.5).lr(2, 0, 1.0), 0.25);
    }

    #[test]
    fn cosine_annealing_matches_torch_closed_form() {
        // CosineAnnealingLR(SGD(lr=0.1), T_max=10, eta_min=0.001):
        // eta_min + (0.1 - eta_min) * (1 + math.cos(math.pi * epoch / 10)) / 2
        let s = CosineAnnealing::new(10, 0.001);
        let expected = [
            0.1,
            0.09757729755661011,
            0.0905463412215599,
            0.07959536998847742,
            0.0657963412215599,
            0.0505,
            0.03520365877844011,
            0.021404630011522586,
            0.010453658778440109,
            0.0034227024433899004,
            0.001,
        ];
        for (epoch, &want) in expected.iter().enumerate() {
            assert_eq!(s.lr(epoch, 0, 0.1), want, "epoch {epoch}");
        }
        // Past t_max it climbs back, as PyTorch's closed form does.
        assert!((s.lr(15, 0, 0.1) - 0.0505).abs() < 1e-15);
        assert!((s.lr(20, 0, 0.1) - 0.1).abs() < 1e-15);
        assert_eq!(s.per_step().lr(0, 10, 0.1), 0.001);
    }

    #[test]
    fn linear_warmup_matches_torch_linear_lr_then_sequential() {
        // SequentialLR(opt, [LinearLR(opt, start_factor=0.25, total_iters=4),
        //                    StepLR(opt, step_size=2, gamma=0.5)], milestones=[4]), lr=0.2
        let s = LinearWarmup::epochs(4, StepLr::new(2, 0.5)).start_factor(0.25);
        let expected = [
            0.05,
            0.08750000000000001,
            0.125,
            0.1625,
            0.2,
            0.2,
            0.1,
            0.1,
            0.05,
        ];
        for (epoch, &want) in expected.iter().enumerate() {
            assert_eq!(s.lr(epoch, 0, 0.2), want, "epoch {epoch}");
        }
        // Per-step warmup: `then` sees the step clock restarted, the epoch clock unchanged.
        let s = LinearWarmup::steps(10, CosineAnnealing::new(2, 0.0));
        assert!((s.lr(0, 0, 0.3) - 0.1).abs() < 1e-16);
        assert_eq!(s.lr(0, 10, 0.3), 0.3);
        assert!((s.lr(1, 15, 0.3) - 0.15).abs() < 1e-16);
        // No warmup at all.
        assert_eq!(LinearWarmup::steps(0, Constant).lr(0, 0, 0.3), 0.3);
    }

    #[test]
    fn boxed_and_borrowed_schedules_delegate() {
        let boxed: Box<dyn LrSchedule> = Box::new(StepLr::new(1, 0.5));
        assert_eq!(boxed.lr(1, 0, 1.0), 0.5);
        let by_ref = &boxed;
        assert_eq!(by_ref.lr(2, 0, 1.0), 0.25);
        assert_eq!(Constant.lr(9, 9, 0.7), 0.7);
        assert_eq!(from_fn(|e, s, b| b + (e + s) as f64).lr(1, 2, 0.5), 3.5);
    }
}

/// PyTorch's `ReduceLROnPlateau` (mode `min`, relative threshold) and Keras' callback of the
/// same name: the rate is multiplied by `factor` once the monitored loss has not improved for
/// more than `patience` epochs, then held for `cooldown` epochs, never below `min_lr`.
///
/// Like the schedules, it is a pure function, here of the losses seen so far
/// ([`ReduceLrOnPlateau::lr_after`]): `kiln::train::Trainer` replays the run's history before
/// every epoch, so a resumed run continues at the rate the interrupted one had.
///
/// ```
/// use kiln_runtime::optim::ReduceLrOnPlateau;
/// let plateau = ReduceLrOnPlateau::new(0.5, 1);
/// // Two epochs without improvement after the best (0.9): the rate is halved.
/// assert_eq!(plateau.lr_after([1.0, 0.9, 0.95, 0.92], 0.1), 0.05);
/// assert_eq!(plateau.lr_after([1.0, 0.9, 0.95], 0.1), 0.1);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReduceLrOnPlateau {
    factor: f64,
    patience: usize,
    threshold: f64,
    cooldown: usize,
    min_lr: f64,
}

impl ReduceLrOnPlateau {
    /// Multiplies the rate by `factor` (PyTorch's default 0.1) after more than `patience`
    /// epochs (default 10) without an improvement; an improvement is a loss below the best
    /// times `1 − 1e-4`, with no cooldown and no lower bound.
    ///
    /// # Panics
    /// If `factor` is not in `[0, 1)`, as PyTorch refuses it.
    pub fn new(factor: f64, patience: usize) -> Self {
        assert!(
            (0.0..1.0).contains(&factor),
            "ReduceLrOnPlateau: the factor must be in [0, 1), got {factor}"
        );
        Self {
            factor,
            patience,
            threshold: 1e-4,
            cooldown: 0,
            min_lr: 0.0,
        }
    }

    /// The relative improvement that counts (PyTorch's `threshold`, default 1e-4): a loss is
    /// better than the best when it is below `best · (1 − threshold)`.
    pub fn threshold(mut self, threshold: f64) -> Self {
        self.threshold = threshold;
        self
    }

    /// Epochs after a reduction during which bad epochs are not counted (default 0).
    pub fn cooldown(mut self, epochs: usize) -> Self {
        self.cooldown = epochs;
        self
    }

    /// The lowest rate a reduction goes to (default 0).
    pub fn min_lr(mut self, min_lr: f64) -> Self {
        self.min_lr = min_lr;
        self
    }

    /// The rate after the epochs whose monitored losses are `losses`, in order, for a run
    /// that started at `lr`: PyTorch's `scheduler.step(loss)` after each of them. A NaN loss
    /// is never an improvement.
    pub fn lr_after(&self, losses: impl IntoIterator<Item = f64>, lr: f64) -> f64 {
        let (mut lr, mut best, mut bad, mut cooling) = (lr, f64::INFINITY, 0, 0);
        for loss in losses {
            if loss < best * (1.0 - self.threshold) {
                best = loss;
                bad = 0;
            } else {
                bad += 1;
            }
            if cooling > 0 {
                cooling -= 1;
                bad = 0;
            }
            if bad > self.patience {
                let reduced = (lr * self.factor).max(self.min_lr);
                // PyTorch's `eps`: changes smaller than 1e-8 are not made.
                if lr - reduced > 1e-8 {
                    lr = reduced;
                }
                cooling = self.cooldown;
                bad = 0;
            }
        }
        lr
    }
}

#[cfg(test)]
mod plateau_tests {
    use super::*;

    /// The rates PyTorch 2.15's `ReduceLROnPlateau(factor=0.5, patience=2, threshold=0.01,
    /// cooldown=1, min_lr=0.1)` sets after each of these losses (a NaN among them).
    #[test]
    fn matches_pytorch_step_by_step() {
        let plateau = ReduceLrOnPlateau::new(0.5, 2)
            .threshold(0.01)
            .cooldown(1)
            .min_lr(0.1);
        let losses = [
            1.0,
            0.995,
            0.98,
            0.97,
            0.97,
            0.97,
            0.96,
            0.5,
            0.5,
            0.5,
            0.5,
            0.5,
            0.5,
            f64::NAN,
            0.5,
            0.5,
            0.5,
            0.5,
        ];
        let torch = [
            1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25,
            0.25,
        ];
        for (n, &want) in torch.iter().enumerate() {
            let got = plateau.lr_after(losses[..=n].iter().copied(), 1.0);
            assert_eq!(got, want, "after {} losses", n + 1);
        }
        // Reductions stop at min_lr.
        let flat = std::iter::repeat_n(1.0, 40);
        assert_eq!(plateau.lr_after(flat, 1.0), 0.1);
    }
}
