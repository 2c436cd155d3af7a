//! [`DataParallel`]: the per-model state of data-parallel training (two flat buffers sized once)
//! and its collective operations: broadcast the parameters, sum the gradients (after the
//! backward pass, or bucket by bucket during it), average the non-trainable buffers.

use super::{Communicator, PendingSums};
use crate::{BatchArray, Error, Float, GradSink, Model, Result, Supervised, TargetView, Trainable};
use ndarray::{ArrayViewD, ArrayViewMutD};
use std::marker::PhantomData;
use std::time::{Duration, Instant};

/// Data-parallel training of one model over a [`Communicator`]: see the [module
/// documentation](super) for the arithmetic and a complete loop.
///
/// It owns a send and a receive buffer, each as long as the model's gradients plus one
/// element (the local batch size travels with the gradients, so one all-reduce per step
/// carries everything, or one per bucket when [`DataParallel::train_batch`] overlaps them
/// with the backward pass). They are allocated by [`DataParallel::new`]; no step allocates.
pub struct DataParallel<'c, F: Float, M: Model<F>> {
    comm: &'c dyn Communicator,
    send: Vec<F>,
    recv: Vec<F>,
    /// Trainable scalars (the gradient's length).
    params: usize,
    /// Non-trainable scalars (batch-norm running statistics).
    buffers: usize,
    steps: usize,
    comm_time: Duration,
    /// Each parameter's offset in the flat buffer and its length, by its index in
    /// `visit_grads_indexed` order (`None`: an absent optional parameter).
    slots: Vec<Option<(usize, usize)>>,
    /// The buckets' first elements in the flat buffer, then its end (`params + 1`: the
    /// sample count travels in the last bucket).
    bounds: Vec<usize>,
    /// Per bucket, the elements not yet written in the current step.
    remaining: Vec<usize>,
    /// This rank's gradients of the steps taken without a sum
    /// ([`DataParallel::train_batch_no_sync`]), each times its sample count, and (last
    /// element) those counts' total: added into the next summed step. Allocated at the first
    /// such step.
    carry: Vec<F>,
    /// Whether `carry` holds anything since the last summed step.
    carrying: bool,
    _model: PhantomData<fn() -> M>,
}

/// The default size of a gradient bucket of [`DataParallel::train_batch`]: 4 MiB. A bucket's
/// all-reduce starts when the backward pass has finished all its gradients; smaller buckets
/// start sooner (the first one after the last layer) but pay MPI's per-message cost more
/// often. At 4 MiB that cost (tens of µs through shared memory or a fast network) is under
/// 1% of the transfer time (4 ms at 1 GB/s), while a model of 25 MB (W3) still gets 6
/// buckets to spread over its backward pass; PyTorch's 25 MB default would put all of W3 in
/// one bucket and overlap nothing.
pub const DEFAULT_BUCKET_BYTES: usize = 4 << 20;

/// At most this many buckets (the MPI communicator keeps this many requests in flight):
/// larger models get proportionally larger buckets.
const MAX_BUCKETS: usize = 64;

impl<F: Float, M: Model<F>> std::fmt::Debug for DataParallel<'_, F, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataParallel")
            .field("rank", &self.comm.rank())
            .field("size", &self.comm.size())
            .field("params", &self.params)
            .field("buffers", &self.buffers)
            .field("steps", &self.steps)
            .finish()
    }
}

/// Calls `f` with each array's elements as one slice in memory order (the arrays kiln
/// allocates are contiguous; another layout is copied through `scratch`, which never happens
/// for generated models).
fn with_slice<F: Float>(view: ArrayViewD<'_, F>, f: &mut dyn FnMut(&[F])) {
    match view.as_slice_memory_order() {
        Some(slice) => f(slice),
        None => {
            let copy: Vec<F> = view.iter().copied().collect();
            f(&copy)
        }
    }
}

/// Calls `f(range, values)` for each gradient in `grads`, `range` being its place in the flat
/// buffer of `params` values (clamped to it, so that gradients longer than the model's make
/// no out-of-bounds write), and returns how many values the gradients hold.
fn for_each_flat_grad<F: Float, M: Model<F>>(
    grads: &M::Grads,
    params: usize,
    f: &mut dyn FnMut(std::ops::Range<usize>, &[F]),
) -> usize {
    let mut offset = 0;
    M::visit_grads(grads, &mut |_, g| {
        with_slice(g, &mut |s| {
            let end = (offset + s.len()).min(params);
            f(offset.min(end)..end, s);
            offset += s.len();
        })
    });
    offset
}

/// Writes `source` into `view` in the order [`with_slice`] read it.
fn write_slice<F: Float>(mut view: ArrayViewMutD<'_, F>, source: &[F], scale: F) {
    match view.as_slice_memory_order_mut() {
        Some(slice) => {
            for (d, &s) in slice.iter_mut().zip(source) {
                *d = s * scale;
            }
        }
        None => {
            for (d, &s) in view.iter_mut().zip(source) {
                *d = s * scale;
            }
        }
    }
}

impl<'c, F: Float, M: Model<F>> DataParallel<'c, F, M> {
    /// Prepares data-parallel training of `model` over `comm`: sizes the buffers, checks that
    /// every rank has a model of the same size, and overwrites `model`'s parameters and
    /// buffers with rank 0's, so that all ranks start from the same weights.
    ///
    /// # Errors
    /// [`Error::Distributed`] if the ranks' models differ in size, or the communicator's
    /// errors.
    pub fn new(comm: &'c dyn Communicator, model: &mut M) -> Result<Self> {
        let mut params = 0;
        model.visit_params(&mut |_, p| params += p.len());
        let mut buffers = 0;
        model.visit_buffers(&mut |_, b| buffers += b.len());
        let len = (params + 1).max(params + buffers);
        let mut dp = DataParallel {
            comm,
            send: crate::memory::zeroed_vec(len),
            recv: crate::memory::zeroed_vec(len),
            params,
            buffers,
            steps: 0,
            comm_time: Duration::ZERO,
            slots: Vec::new(),
            bounds: Vec::new(),
            remaining: Vec::new(),
            carry: Vec::new(),
            carrying: false,
            _model: PhantomData,
        };
        let mut offset = 0;
        M::visit_grads_indexed(&model.zero_grads(), &mut |index, g| {
            if dp.slots.len() <= index {
                dp.slots.resize(index + 1, None);
            }
            dp.slots[index] = Some((offset, g.len()));
            offset += g.len();
        });
        dp.set_bucket_bytes(DEFAULT_BUCKET_BYTES);
        let sizes = dp.sum_f64([params as f64, buffers as f64])?;
        let n = comm.size() as f64;
        if sizes != [params as f64 * n, buffers as f64 * n] {
            return Err(Error::Distributed {
                rank: comm.rank(),
                message: format!(
                    "this rank's model has {params} parameters and {buffers} buffer values, \
                     but the ranks' totals are {} and {} over {} ranks: every rank must build \
                     the same model",
                    sizes[0],
                    sizes[1],
                    comm.size()
                ),
            });
        }
        dp.broadcast_params(model)?;
        Ok(dp)
    }

    /// The communicator.
    pub fn communicator(&self) -> &'c dyn Communicator {
        self.comm
    }

    /// Overwrites `model`'s parameters and buffers on every rank with rank 0's (done by
    /// [`DataParallel::new`]; call it again after loading weights on rank 0 only).
    ///
    /// # Errors
    /// The communicator's.
    pub fn broadcast_params(&mut self, model: &mut M) -> Result<()> {
        let total = self.params + self.buffers;
        let send = &mut self.send;
        let mut offset = 0;
        let mut pack = |_: &'static str, v: ArrayViewD<'_, F>| {
            with_slice(v, &mut |s| {
                send[offset..offset + s.len()].copy_from_slice(s);
                offset += s.len();
            })
        };
        model.visit_params(&mut pack);
        model.visit_buffers(&mut pack);
        F::broadcast(self.comm, &mut self.send[..total])?;
        let send = &self.send;
        let mut offset = 0;
        let mut unpack = |_: &'static str, v: ArrayViewMutD<'_, F>| {
            let n = v.len();
            write_slice(v, &send[offset..offset + n], F::ONE);
            offset += n;
        };
        model.visit_params_mut(&mut unpack);
        model.visit_buffers_mut(&mut unpack);
        Ok(())
    }

    /// Replaces every rank's `grads` (the mean gradient over its `local_batch` samples) with
    /// the mean gradient over all ranks' samples, and returns that global sample count.
    ///
    /// Every rank must call it once per step, also a rank whose shard of the batch is empty:
    /// it passes 0 (its `grads` are then not read). One all-reduce of the gradients plus one
    /// element; nothing is allocated.
    ///
    /// # Errors
    /// [`Error::Distributed`] if `grads` does not have the model's size; the communicator's
    /// errors.
    pub fn all_reduce_grads(&mut self, grads: &mut M::Grads, local_batch: usize) -> Result<usize> {
        if self.comm.size() == 1 {
            // The sum over one rank is the rank's own gradient: nothing to move or rescale,
            // unless steps without a sum left gradients to add in.
            self.steps += 1;
            return Ok(self.fold_carry_alone(grads, local_batch));
        }
        let params = self.params;
        let weight = F::from_usize(local_batch);
        let send = &mut self.send;
        let carry = self.carrying.then_some(&self.carry[..]);
        let offset = for_each_flat_grad::<F, M>(grads, params, &mut |range, s| {
            let out = &mut send[range.clone()];
            if local_batch == 0 {
                // Not `0 · g`: an empty shard's stale gradient may hold a NaN.
                out.fill(F::ZERO);
            } else {
                for (d, &v) in out.iter_mut().zip(s) {
                    *d = v * weight;
                }
            }
            if let Some(carry) = carry {
                for (d, &c) in out.iter_mut().zip(&carry[range]) {
                    *d += c;
                }
            }
        });
        if offset != params {
            return Err(Error::Distributed {
                rank: self.comm.rank(),
                message: format!(
                    "the gradients hold {offset} values but the model has {params} parameters"
                ),
            });
        }
        self.send[params] = weight + self.carried();
        self.carrying = false;
        let started = Instant::now();
        F::all_reduce_sum(self.comm, &self.send[..=params], &mut self.recv[..=params])?;
        self.comm_time += started.elapsed();
        self.steps += 1;
        Ok(self.unpack(grads))
    }

    /// PyTorch DDP's `no_sync`: this rank's training step on its `local_batch` samples
    /// without the sum over the ranks. `grads` gets this rank's own mean gradient, and a copy
    /// (times `local_batch`) is kept and added into the sum of the next summed step
    /// ([`DataParallel::train_batch`], [`DataParallel::train_step`],
    /// [`DataParallel::overlap_backward`] or [`DataParallel::all_reduce_grads`]), whose
    /// `grads` are then the mean over every rank's samples of all those steps, as one batch
    /// of them all would give. Gradient accumulation over `n` batches thus communicates once,
    /// not `n` times. A rank whose shard is empty passes 0 (nothing runs or is kept), but
    /// every rank must take the same steps. Returns this rank's loss (`None` for an empty
    /// shard). Allocates the kept copy at its first call only.
    ///
    /// # Errors
    /// The model's errors.
    pub fn train_batch_no_sync(
        &mut self,
        model: &mut M,
        x: ArrayViewD<'_, F>,
        y: TargetView<'_, F>,
        ws: &mut M::Workspace,
        grads: &mut M::Grads,
        local_batch: usize,
    ) -> Result<Option<F>>
    where
        M: Supervised<F>,
    {
        if local_batch == 0 {
            return Ok(None);
        }
        let loss = model.train_batch(x, y, ws, grads)?;
        self.carry_grads(grads, local_batch);
        Ok(Some(loss))
    }

    /// [`DataParallel::train_batch_no_sync`] for a [`Trainable`] model (as
    /// [`DataParallel::train_step`] is to [`DataParallel::train_batch`]).
    ///
    /// # Errors
    /// The model's errors.
    pub fn train_step_no_sync(
        &mut self,
        model: &mut M,
        batch: &[BatchArray<F>],
        ws: &mut <M as Trainable<F>>::Workspace,
        grads: &mut M::Grads,
        local_batch: usize,
    ) -> Result<Option<F>>
    where
        M: Trainable<F>,
    {
        if local_batch == 0 {
            return Ok(None);
        }
        let loss = model.train_step(batch, ws, grads)?;
        self.carry_grads(grads, local_batch);
        Ok(Some(loss))
    }

    /// Adds `grads · local_batch` and `local_batch` to the kept sums.
    fn carry_grads(&mut self, grads: &M::Grads, local_batch: usize) {
        let params = self.params;
        if self.carry.len() != params + 1 {
            self.carry = crate::memory::zeroed_vec(params + 1);
        }
        if !self.carrying {
            self.carry.fill(F::ZERO);
            self.carrying = true;
        }
        let weight = F::from_usize(local_batch);
        let carry = &mut self.carry;
        for_each_flat_grad::<F, M>(grads, params, &mut |range, s| {
            for (c, &v) in carry[range].iter_mut().zip(s) {
                *c += v * weight;
            }
        });
        carry[params] += weight;
    }

    /// The samples of the kept steps (0 when nothing is kept).
    fn carried(&self) -> F {
        if self.carrying {
            self.carry[self.params]
        } else {
            F::ZERO
        }
    }

    /// On a group of one rank: `grads` (the mean over `local_batch` samples, not read when 0)
    /// combined with the kept steps into the mean over all their samples, which is returned.
    fn fold_carry_alone(&mut self, grads: &mut M::Grads, local_batch: usize) -> usize {
        if !self.carrying {
            return local_batch;
        }
        self.carrying = false;
        let (weight, carried) = (F::from_usize(local_batch), self.carry[self.params]);
        let total = weight + carried;
        let scale = F::ONE / total;
        let carry = &self.carry;
        let mut offset = 0;
        M::visit_grads_mut(grads, &mut |_, mut g| {
            for (v, &c) in g.iter_mut().zip(&carry[offset..]) {
                // Not `0 · g` for an empty shard: its stale gradient may hold a NaN.
                let own = if local_batch == 0 {
                    F::ZERO
                } else {
                    *v * weight
                };
                *v = (own + c) * scale;
            }
            offset += g.len();
        });
        total.to_f64().round() as usize
    }

    /// Sets the size of the gradient buckets of [`DataParallel::train_batch`] (default
    /// [`DEFAULT_BUCKET_BYTES`]); every rank must use the same. The results do not depend on
    /// it, only when each bucket's all-reduce starts.
    pub fn bucket_bytes(mut self, bytes: usize) -> Self {
        self.set_bucket_bytes(bytes);
        self
    }

    fn set_bucket_bytes(&mut self, bytes: usize) {
        let total = self.params + 1;
        let len = (bytes / std::mem::size_of::<F>())
            .max(total.div_ceil(MAX_BUCKETS))
            .max(1);
        self.bounds = (0..total).step_by(len).chain([total]).collect();
        self.remaining = vec![0; self.bounds.len() - 1];
    }

    /// The number of gradient buckets.
    pub fn buckets(&self) -> usize {
        self.bounds.len() - 1
    }

    /// One training step's gradients, summed over the ranks while the backward pass runs:
    /// [`Supervised::train_batch_notify`] on this rank's `local_batch` samples `x`, `y` (not
    /// run when `local_batch` is 0, but the rank still joins the sum), each bucket of
    /// gradients all-reduced as soon as the backward pass has finished it, then `grads`
    /// replaced with the mean over all ranks' samples, as [`DataParallel::all_reduce_grads`]
    /// (with bit-identical results). Returns this rank's loss (`None` for an empty shard) and
    /// the global sample count. Nothing is allocated.
    ///
    /// [`DataParallel::comm_time`] grows by the time the sums take after the backward pass
    /// (the communication the backward pass did not hide, and the unpacking).
    ///
    /// # Errors
    /// The model's errors (after the sums this rank started have completed; the other ranks
    /// then wait for this one in their next collective, up to the timeout), the
    /// communicator's, or [`Error::Distributed`] if the model did not report every gradient.
    pub fn train_batch(
        &mut self,
        model: &mut M,
        x: ArrayViewD<'_, F>,
        y: TargetView<'_, F>,
        ws: &mut M::Workspace,
        grads: &mut M::Grads,
        local_batch: usize,
    ) -> Result<(Option<F>, usize)>
    where
        M: Supervised<F>,
    {
        self.overlap_backward(grads, local_batch, |grads, sink| {
            model.train_batch_notify(x, y, ws, grads, sink)
        })
    }

    /// [`DataParallel::train_batch`] for a [`Trainable`] model: this rank's `local_batch`
    /// samples as one array per declared input and target (what
    /// [`Trainer::fit_batches`](crate::train::Trainer::fit_batches) serves each rank).
    ///
    /// # Errors
    /// As [`DataParallel::train_batch`].
    pub fn train_step(
        &mut self,
        model: &mut M,
        batch: &[BatchArray<F>],
        ws: &mut <M as Trainable<F>>::Workspace,
        grads: &mut M::Grads,
        local_batch: usize,
    ) -> Result<(Option<F>, usize)>
    where
        M: Trainable<F>,
    {
        self.overlap_backward(grads, local_batch, |grads, sink| {
            model.train_step_notify(batch, ws, grads, sink)
        })
    }

    /// The general form of [`DataParallel::train_batch`], for any model and loop:
    /// `backward(grads, sink)` must compute this rank's mean gradients over its
    /// `local_batch` samples into `grads` and report each to `sink` once (a generated
    /// model's `loss_and_grad_notify(.., grads, Some(sink))` does); each bucket's sum starts
    /// as soon as its gradients are reported. `backward` is not called when `local_batch` is
    /// 0. Returns what `backward` returned, and the global sample count; `grads` then holds
    /// the mean over all ranks' samples.
    ///
    /// # Errors
    /// As [`DataParallel::train_batch`].
    pub fn overlap_backward<R>(
        &mut self,
        grads: &mut M::Grads,
        local_batch: usize,
        backward: impl FnOnce(&mut M::Grads, &mut dyn GradSink<F>) -> Result<R>,
    ) -> Result<(Option<R>, usize)> {
        if self.comm.size() == 1 {
            self.steps += 1;
            let out = match local_batch {
                0 => None,
                // The sum over one rank is the rank's own gradient: nothing to report to.
                _ => Some(backward(grads, &mut Discard)?),
            };
            return Ok((out, self.fold_carry_alone(grads, local_batch)));
        }
        let params = self.params;
        let rank = self.comm.rank();
        let weight = F::from_usize(local_batch);
        for (r, w) in self.remaining.iter_mut().zip(self.bounds.windows(2)) {
            *r = w[1] - w[0];
        }
        let carry = self.carrying.then_some(&self.carry[..]);
        self.carrying = false;
        let mut send = Some(&mut self.send[..=params]);
        let mut recv = Some(&mut self.recv[..=params]);
        let (slots, bounds, remaining) = (&self.slots, &self.bounds, &mut self.remaining[..]);
        let mut backward = Some(backward);
        let mut out = None;
        let mut backward_done = Instant::now();
        let grads_ref = &mut *grads;
        F::overlap(self.comm, &mut |pending| {
            let (Some(send), Some(recv)) = (send.take(), recv.take()) else {
                return Ok(());
            };
            let mut sink = Buckets::new(pending, send, recv, bounds, remaining, weight, carry);
            // The sample count: this step's, and the kept steps' (their `carry` element).
            sink.write(params, &[F::ONE]);
            match backward.take() {
                Some(backward) if local_batch > 0 => {
                    let mut reporter = Reporter {
                        slots,
                        sink: &mut sink,
                        error: None,
                    };
                    out = Some(backward(&mut *grads_ref, &mut reporter)?);
                    if let Some(message) = reporter.error {
                        return Err(Error::Distributed { rank, message });
                    }
                }
                _ => {
                    // Not `0 · g`: an empty shard's stale gradient may hold a NaN.
                    for &(start, len) in slots.iter().flatten() {
                        sink.zero(start, len);
                    }
                }
            }
            let result = sink.finish().map_err(|e| match e {
                Error::Distributed { message, .. } => Error::Distributed { rank, message },
                e => e,
            });
            backward_done = Instant::now();
            result
        })?;
        self.steps += 1;
        let global = self.unpack(grads);
        self.comm_time += backward_done.elapsed();
        Ok((out, global))
    }

    /// Writes the summed gradients (`recv`) into `grads`, divided by the global sample count
    /// (the buffer's last element), and returns that count.
    fn unpack(&mut self, grads: &mut M::Grads) -> usize {
        let params = self.params;
        let global = self.recv[params].to_f64().round() as usize;
        let scale = if global == 0 {
            F::ZERO
        } else {
            F::ONE / F::from_usize(global)
        };
        let recv = &self.recv;
        let mut offset = 0;
        M::visit_grads_mut(grads, &mut |_, g| {
            let n = g.len();
            write_slice(g, &recv[offset..offset + n], scale);
            offset += n;
        });
        global
    }

    /// Sets every rank's non-trainable buffers (batch-norm running statistics) to their mean
    /// over the ranks. Each rank's running statistics follow its own shards; [`Trainer`]
    /// averages them at the end of every epoch, before validation and the checkpoint.
    ///
    /// [`Trainer`]: crate::train::Trainer
    ///
    /// # Errors
    /// The communicator's.
    pub fn average_buffers(&mut self, model: &mut M) -> Result<()> {
        let total = self.buffers;
        if total == 0 {
            return Ok(());
        }
        let send = &mut self.send;
        let mut offset = 0;
        model.visit_buffers(&mut |_, v| {
            with_slice(v, &mut |s| {
                send[offset..offset + s.len()].copy_from_slice(s);
                offset += s.len();
            })
        });
        F::all_reduce_sum(self.comm, &self.send[..total], &mut self.recv[..total])?;
        let scale = F::ONE / F::from_usize(self.comm.size());
        let recv = &self.recv;
        let mut offset = 0;
        model.visit_buffers_mut(&mut |_, v| {
            let n = v.len();
            write_slice(v, &recv[offset..offset + n], scale);
            offset += n;
        });
        Ok(())
    }

    /// Sums a few `f64`s (metrics: loss sums, counts) over the ranks.
    ///
    /// # Errors
    /// The communicator's.
    pub fn sum_f64<const N: usize>(&self, values: [f64; N]) -> Result<[f64; N]> {
        let mut out = [0.0; N];
        self.comm.all_reduce_sum_f64(&values, &mut out)?;
        Ok(out)
    }

    /// The number of gradient all-reduces so far.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// The wall-clock time spent in gradient all-reduces so far (waiting for the slowest rank
    /// included: a rank that finishes its backward pass first waits here). For the steps of
    /// [`DataParallel::train_batch`], only the part after the backward pass (the exposed
    /// communication, unpacking included) counts.
    pub fn comm_time(&self) -> Duration {
        self.comm_time
    }

    /// The bytes one rank contributes to each gradient all-reduce.
    pub fn bytes_per_step(&self) -> usize {
        (self.params + 1) * std::mem::size_of::<F>()
    }
}

/// The flat send buffer cut into buckets while a step's gradients arrive: each bucket's
/// all-reduce starts once all its elements are written and every later bucket has started
/// (buckets start last first, the order in which a backward pass finishes them, and the
/// same order on every rank, as MPI requires).
struct Buckets<'b, 'p, F: Float> {
    pending: &'p mut dyn PendingSums<'b, F>,
    send: [Option<&'b mut [F]>; MAX_BUCKETS],
    recv: [Option<&'b mut [F]>; MAX_BUCKETS],
    bounds: &'p [usize],
    remaining: &'p mut [usize],
    /// The next bucket to start, counting down (`0`: all started).
    next: usize,
    weight: F,
    /// What steps without a sum kept, added to every element written (see
    /// [`DataParallel::train_batch_no_sync`]).
    carry: Option<&'p [F]>,
    error: Option<Error>,
}

impl<'b, 'p, F: Float> Buckets<'b, 'p, F> {
    fn new(
        pending: &'p mut dyn PendingSums<'b, F>,
        mut send: &'b mut [F],
        mut recv: &'b mut [F],
        bounds: &'p [usize],
        remaining: &'p mut [usize],
        weight: F,
        carry: Option<&'p [F]>,
    ) -> Self {
        let mut sends: [Option<&'b mut [F]>; MAX_BUCKETS] = std::array::from_fn(|_| None);
        let mut recvs: [Option<&'b mut [F]>; MAX_BUCKETS] = std::array::from_fn(|_| None);
        for (k, w) in bounds.windows(2).enumerate() {
            let (s, s_rest) = std::mem::take(&mut send).split_at_mut(w[1] - w[0]);
            let (r, r_rest) = std::mem::take(&mut recv).split_at_mut(w[1] - w[0]);
            (sends[k], recvs[k], send, recv) = (Some(s), Some(r), s_rest, r_rest);
        }
        Buckets {
            pending,
            send: sends,
            recv: recvs,
            bounds,
            next: remaining.len(),
            remaining,
            weight,
            carry,
            error: None,
        }
    }

    /// Writes `values · weight` (plus what is carried there) at flat offset `start`.
    fn write(&mut self, start: usize, values: &[F]) {
        let (weight, carry) = (self.weight, self.carry);
        self.fill(start, values.len(), &mut |out, from| {
            for (d, &v) in out.iter_mut().zip(&values[from..]) {
                *d = v * weight;
            }
            if let Some(carry) = carry {
                let at = start + from;
                for (d, &c) in out.iter_mut().zip(&carry[at..]) {
                    *d += c;
                }
            }
        });
    }

    /// Writes zeros (or what is carried there) at `start..start + len`.
    fn zero(&mut self, start: usize, len: usize) {
        let carry = self.carry;
        self.fill(start, len, &mut |out, from| match carry {
            Some(carry) => {
                let at = start + from;
                out.copy_from_slice(&carry[at..at + out.len()]);
            }
            None => out.fill(F::ZERO),
        });
    }

    /// Calls `put(part, from)` for each bucket's part of `start..start + len` (`from`: the
    /// part's offset in that range), then starts the buckets that became complete.
    fn fill(&mut self, start: usize, len: usize, put: &mut dyn FnMut(&mut [F], usize)) {
        let end = start + len;
        let first = self
            .bounds
            .partition_point(|&b| b <= start)
            .saturating_sub(1);
        for k in first..self.remaining.len() {
            let (lo, hi) = (self.bounds[k].max(start), self.bounds[k + 1].min(end));
            if lo >= hi {
                break;
            }
            match self.send[k].as_deref_mut() {
                Some(out) => {
                    let base = self.bounds[k];
                    put(&mut out[lo - base..hi - base], lo - start);
                    self.remaining[k] = self.remaining[k].saturating_sub(hi - lo);
                }
                None => self.fail(format!("gradient elements {lo}..{hi} were reported twice")),
            }
        }
        self.start_complete();
    }

    /// Starts every complete bucket from `next` down, stopping at the first incomplete one.
    fn start_complete(&mut self) {
        while self.next > 0 && self.remaining[self.next - 1] == 0 {
            self.next -= 1;
            let k = self.next;
            if let (Some(send), Some(recv)) = (self.send[k].take(), self.recv[k].take()) {
                if let Err(e) = self.pending.start(send, recv) {
                    self.error.get_or_insert(e);
                }
            }
        }
    }

    fn fail(&mut self, message: String) {
        self.error
            .get_or_insert(Error::Distributed { rank: 0, message });
    }

    /// Checks that every bucket started.
    fn finish(self) -> Result<()> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if self.next > 0 {
            let missing: usize = self.remaining.iter().sum();
            return Err(Error::Distributed {
                rank: 0,
                message: format!(
                    "the backward pass reported all but {missing} gradient values: a model's \
                     train_batch_notify must report every gradient once"
                ),
            });
        }
        Ok(())
    }
}

/// The sink of a one-rank job: nothing to sum.
struct Discard;

impl<F> GradSink<F> for Discard {
    fn ready(&mut self, _: usize, _: &[F]) {}
}

/// The [`GradSink`] the model reports to: finds each gradient's place in the flat buffer.
struct Reporter<'a, 'b, 'p, F: Float> {
    slots: &'a [Option<(usize, usize)>],
    sink: &'a mut Buckets<'b, 'p, F>,
    error: Option<String>,
}

impl<F: Float> GradSink<F> for Reporter<'_, '_, '_, F> {
    fn ready(&mut self, index: usize, grad: &[F]) {
        match self.slots.get(index).copied().flatten() {
            Some((start, len)) if len == grad.len() => self.sink.write(start, grad),
            _ => {
                self.error.get_or_insert_with(|| {
                    format!(
                        "the backward pass reported a gradient of {} values as parameter \
                         {index}, which the model does not have",
                        grad.len()
                    )
                });
            }
        }
    }
}
