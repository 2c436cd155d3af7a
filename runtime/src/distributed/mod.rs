//! Data-parallel training across processes: every rank holds the whole model, trains on its
//! own shard of each global batch, and the ranks sum their gradients before every optimizer
//! step, so that N ranks compute the model that one process computes on the combined batch.
//!
//! With the `mpi` cargo feature, `World` runs this over MPI (`mpirun -np N ...`, across
//! hosts with a hostfile; see `DISTRIBUTED.md`). The pieces below it are plain Rust and work
//! with any [`Communicator`]:
//!
//! - [`DataParallel`] owns the flat buffers the gradients travel in (sized once from the
//!   model), broadcasts rank 0's parameters, and sums the gradients: after the backward pass
//!   in one all-reduce ([`DataParallel::all_reduce_grads`]), or during it in buckets of a few
//!   MiB that start as soon as the backward pass has finished them
//!   ([`DataParallel::train_batch`]; the generated backward pass reports each layer's
//!   gradients to a [`GradSink`](crate::GradSink)); steps of gradient accumulation before
//!   the last skip the sum and keep their gradients for it
//!   ([`DataParallel::train_batch_no_sync`], PyTorch DDP's `no_sync`);
//! - [`DataLoader::shard`](crate::data::DataLoader::shard) cuts every global batch of the
//!   shared, seeded epoch order into one contiguous piece per rank;
//! - [`Trainer::distributed`](crate::train::Trainer::distributed) does both inside `fit`, and
//!   lets only rank 0 print, checkpoint and plot.
//!
//! A hand-written loop needs the sharded loader and one call per step:
//!
//! ```no_run
//! # #[cfg(feature = "mpi")]
//! # fn demo<M: kiln_runtime::Supervised<f32>, D: kiln_runtime::data::Dataset<f32>>(
//! #     model: &mut M, train_set: &D) -> kiln_runtime::Result<()> {
//! use kiln_runtime::data::{Batch, DataLoader};
//! use kiln_runtime::distributed::{Communicator, DataParallel, World};
//! use kiln_runtime::train::batch_targets;
//! use kiln_runtime::{Adam, Optimizer};
//!
//! let world = World::init()?;
//! let mut dp = DataParallel::new(&world, model)?; // rank 0's weights everywhere
//! // 64 samples per step in all, split across the ranks.
//! let loader = DataLoader::new(train_set, 64).shuffle(42).shard(world.rank(), world.size());
//! let (mut ws, mut grads, mut batch) = (M::Workspace::default(), model.zero_grads(), Batch::new());
//! let mut opt = Adam::new(1e-3);
//! for epoch in 0..10 {
//!     let mut batches = loader.epoch_batches(epoch);
//!     while batches.next_into(&mut batch) {
//!         if !batch.is_empty() {
//!             model.train_batch(batch.x.view(), batch_targets(&batch), &mut ws, &mut grads)?;
//!         }
//!         dp.all_reduce_grads(&mut grads, batch.len())?; // the added line
//!         opt.step(model, &grads);
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! **Why the result equals one process on the combined batch.** A model's loss is the mean
//! over its batch, so rank r's gradient is `g_r = (1/b_r) Σ_{i ∈ r} ∇ℓ_i`. The gradient of the
//! combined batch of `B = Σ b_r` samples is `(1/B) Σ_i ∇ℓ_i = Σ_r (b_r/B) g_r`: each rank
//! packs `b_r · g_r` and its `b_r`, one all-reduce sums both, and each rank divides by `B`.
//! Uneven shards (the last batch of an epoch, or a rank with no sample in it) are exact.
//! The only differences are the order of floating-point additions: f32 rounding.
//! Batch normalisation is the exception: each rank normalises by its own shard's statistics
//! (no synchronised batch norm), and the running statistics are averaged across ranks.

mod data_parallel;
#[cfg(feature = "mpi")]
mod mpi_world;

pub use data_parallel::{DataParallel, DEFAULT_BUCKET_BYTES};
#[cfg(feature = "mpi")]
pub use mpi_world::{World, TIMEOUT_EXIT_CODE};

use crate::{Error, Result};

/// A group of processes that can sum and broadcast buffers: what [`DataParallel`] and
/// [`Trainer::distributed`](crate::train::Trainer::distributed) need. `World` (feature
/// `mpi`) is the MPI one; [`SingleProcess`] is the group of one.
///
/// Every rank must make the same calls in the same order with buffers of the same lengths:
/// these are collective operations.
pub trait Communicator {
    /// This process's rank, `0..size`.
    fn rank(&self) -> usize;
    /// The number of ranks.
    fn size(&self) -> usize;
    /// Sums `send` element-wise over the ranks into `recv` on every rank.
    ///
    /// # Errors
    /// [`Error::Distributed`] if the lengths differ or the operation fails.
    fn all_reduce_sum_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<()>;
    /// Sums `send` element-wise over the ranks into `recv` on every rank.
    ///
    /// # Errors
    /// As [`Communicator::all_reduce_sum_f32`].
    fn all_reduce_sum_f64(&self, send: &[f64], recv: &mut [f64]) -> Result<()>;
    /// Overwrites `buffer` on every rank with rank 0's.
    ///
    /// # Errors
    /// [`Error::Distributed`] if the operation fails.
    fn broadcast_f32(&self, buffer: &mut [f32]) -> Result<()>;
    /// Overwrites `buffer` on every rank with rank 0's.
    ///
    /// # Errors
    /// As [`Communicator::broadcast_f32`].
    fn broadcast_f64(&self, buffer: &mut [f64]) -> Result<()>;
    /// Whether this is rank 0, the rank that prints, checkpoints and plots.
    fn is_root(&self) -> bool {
        self.rank() == 0
    }
    /// Runs `body`, which may start sums of `f32` buffers through the [`PendingSums`] it is
    /// given, and returns once `body` has returned and every sum it started is complete
    /// (also when `body` fails: its error is returned after the wait).
    ///
    /// The default runs each sum at once with [`Communicator::all_reduce_sum_f32`];
    /// `World` starts them as non-blocking MPI all-reduces, so that they travel while
    /// `body` goes on (the backward pass of [`DataParallel::train_batch`]).
    ///
    /// # Errors
    /// `body`'s, or the communicator's.
    fn overlap_f32<'b>(
        &self,
        body: &mut dyn FnMut(&mut dyn PendingSums<'b, f32>) -> Result<()>,
    ) -> Result<()> {
        body(&mut Blocking(self))
    }
    /// [`Communicator::overlap_f32`] for `f64` buffers.
    ///
    /// # Errors
    /// As [`Communicator::overlap_f32`].
    fn overlap_f64<'b>(
        &self,
        body: &mut dyn FnMut(&mut dyn PendingSums<'b, f64>) -> Result<()>,
    ) -> Result<()> {
        body(&mut Blocking(self))
    }
}

/// Sums started inside [`Communicator::overlap_f32`]: each is complete when that call
/// returns, and until then its buffers stay borrowed.
pub trait PendingSums<'b, T> {
    /// Starts summing `send` element-wise over the ranks into `recv` on every rank. Every
    /// rank must start the same sums, of the same lengths, in the same order.
    ///
    /// # Errors
    /// [`Error::Distributed`] if the lengths differ; the communicator's errors.
    fn start(&mut self, send: &'b [T], recv: &'b mut [T]) -> Result<()>;
}

/// The [`PendingSums`] of a communicator without non-blocking sums: each sum runs when it is
/// started.
struct Blocking<'c, C: ?Sized>(&'c C);

impl<'b, C: Communicator + ?Sized> PendingSums<'b, f32> for Blocking<'_, C> {
    fn start(&mut self, send: &'b [f32], recv: &'b mut [f32]) -> Result<()> {
        self.0.all_reduce_sum_f32(send, recv)
    }
}

impl<'b, C: Communicator + ?Sized> PendingSums<'b, f64> for Blocking<'_, C> {
    fn start(&mut self, send: &'b [f64], recv: &'b mut [f64]) -> Result<()> {
        self.0.all_reduce_sum_f64(send, recv)
    }
}

/// The group of one process: sums and broadcasts are copies. Training with it is training
/// without distribution, which makes it a reference for tests and a stand-in for code written
/// against [`Communicator`].
#[derive(Clone, Copy, Debug, Default)]
pub struct SingleProcess;

/// [`Error::Distributed`] for two buffers of different lengths.
pub(crate) fn check_lengths(rank: usize, send: usize, recv: usize) -> Result<()> {
    if send == recv {
        return Ok(());
    }
    Err(Error::Distributed {
        rank,
        message: format!(
            "all-reduce of {send} elements into a buffer of {recv}: the buffers must have the \
             same length"
        ),
    })
}

impl Communicator for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_reduce_sum_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        check_lengths(0, send.len(), recv.len())?;
        recv.copy_from_slice(send);
        Ok(())
    }
    fn all_reduce_sum_f64(&self, send: &[f64], recv: &mut [f64]) -> Result<()> {
        check_lengths(0, send.len(), recv.len())?;
        recv.copy_from_slice(send);
        Ok(())
    }
    fn broadcast_f32(&self, _buffer: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn broadcast_f64(&self, _buffer: &mut [f64]) -> Result<()> {
        Ok(())
    }
}

/// Rank `rank`'s dropout seed: `seed` for rank 0, a different one for every other rank (so
/// that the ranks do not drop the same units of different samples).
pub(crate) fn rank_seed(seed: u64, rank: usize) -> u64 {
    if rank == 0 {
        // Rank 0 draws what a single process draws.
        seed
    } else {
        seed ^ (rank as u64).wrapping_mul(0xD1B5_4A32_D192_ED03)
    }
}
