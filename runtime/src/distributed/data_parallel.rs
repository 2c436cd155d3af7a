//! [`DataParallel`]: the per-model state of data-parallel training (two flat buffers sized once)
//! and its three collective operations: broadcast the parameters, sum the gradients, average
//! the non-trainable buffers.

use super::Communicator;
use crate::{Error, Float, Model, Result};
use ndarray::{ArrayViewD, ArrayViewMutD};
use std::marker::PhantomData;
use std::time::{Duration, Instant};

/// Data-parallel training of one model over a [`Communicator`]: see the [module
/// documentation](super) for the arithmetic and a complete loop.
///
/// It owns a send and a receive buffer, each as long as the model's gradients plus one
/// element (the local batch size travels with the gradients, so one all-reduce per step
/// carries everything). They are allocated by [`DataParallel::new`]; no step allocates.
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
    _model: PhantomData<fn() -> M>,
}

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
            send: vec![F::ZERO; len],
            recv: vec![F::ZERO; len],
            params,
            buffers,
            steps: 0,
            comm_time: Duration::ZERO,
            _model: PhantomData,
        };
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
            // The sum over one rank is the rank's own gradient: nothing to move or rescale.
            self.steps += 1;
            return Ok(local_batch);
        }
        let params = self.params;
        let weight = F::from_usize(local_batch);
        let send = &mut self.send;
        let mut offset = 0;
        M::visit_grads(grads, &mut |_, g| {
            with_slice(g, &mut |s| {
                let end = (offset + s.len()).min(params);
                let out = &mut send[offset.min(end)..end];
                if local_batch == 0 {
                    // Not `0 · g`: an empty shard's stale gradient may hold a NaN.
                    out.fill(F::ZERO);
                } else {
                    for (d, &v) in out.iter_mut().zip(s) {
                        *d = v * weight;
                    }
                }
                offset += s.len();
            })
        });
        if offset != params {
            return Err(Error::Distributed {
                rank: self.comm.rank(),
                message: format!(
                    "the gradients hold {offset} values but the model has {params} parameters"
                ),
            });
        }
        self.send[params] = weight;
        let started = Instant::now();
        F::all_reduce_sum(self.comm, &self.send[..=params], &mut self.recv[..=params])?;
        self.comm_time += started.elapsed();
        self.steps += 1;
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
        Ok(global)
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
    /// included: a rank that finishes its backward pass first waits here).
    pub fn comm_time(&self) -> Duration {
        self.comm_time
    }

    /// The bytes one rank contributes to each gradient all-reduce.
    pub fn bytes_per_step(&self) -> usize {
        (self.params + 1) * std::mem::size_of::<F>()
    }
}
