//! [`DataLoader`]: cuts a [`Dataset`] into batches, in order or in a seeded random order that
//! changes every epoch.

use super::{Dataset, TargetKind, TargetMut};
use crate::Float;
use ndarray::{Array1, ArrayD, IxDyn};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::marker::PhantomData;

/// One batch of samples: features stacked on a new first axis, and their targets.
///
/// Exactly one of `labels` and `values` is `Some`, matching the data set's
/// [`TargetKind`].
#[derive(Clone, Debug, PartialEq)]
pub struct Batch<F> {
    /// The features, shape `[n, sample_shape..]`, row-major.
    pub x: ArrayD<F>,
    /// The class labels, shape `[n]` (data sets with [`TargetKind::Labels`]).
    pub labels: Option<Array1<usize>>,
    /// The value targets, shape `[n, target_shape..]` (data sets with
    /// [`TargetKind::Values`]).
    pub values: Option<ArrayD<F>>,
    /// Which samples of the data set the batch holds, in batch order.
    pub indices: Vec<usize>,
}

/// An empty, unallocated array (a placeholder while a buffer is recycled).
fn empty<F>() -> ArrayD<F> {
    Array1::from_vec(Vec::new()).into_dyn()
}

impl<F> Batch<F> {
    /// An empty batch that owns no memory yet: give it to [`Epoch::next_into`], which grows
    /// its buffers on the first batch and reuses them afterwards.
    pub fn new() -> Self {
        Batch {
            x: empty(),
            labels: None,
            values: None,
            indices: Vec::new(),
        }
    }

    /// The number of samples in the batch (the length of `indices`).
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    /// Whether the batch holds no samples.
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }
}

impl<F> Default for Batch<F> {
    /// Same as [`Batch::new`] (written out because a derived `Default` would allocate a
    /// one-element array for `x`).
    fn default() -> Self {
        Batch::new()
    }
}

/// Serves a [`Dataset`] in batches, epoch after epoch.
///
/// Without [`shuffle`](DataLoader::shuffle) every epoch visits the samples in order; with it,
/// each epoch is a different random permutation, fixed by the seed and the epoch number, so a
/// run can be reproduced (or resumed at any epoch). The last batch of an epoch is smaller when
/// the batch size does not divide the number of samples, unless
/// [`drop_last`](DataLoader::drop_last) is set.
///
/// ```
/// use kiln_runtime::data::{Batch, DataLoader, TensorDataset};
/// use ndarray::{Array1, Array2};
///
/// # fn main() -> kiln_runtime::Result<()> {
/// let x = Array2::from_shape_fn((10, 3), |(i, j)| (10 * i + j) as f32);
/// let data = TensorDataset::with_labels(x, Array1::from_shape_fn(10, |i| i % 2), 2)?;
///
/// // Owned batches: 4 + 4 + 2 samples.
/// let loader = DataLoader::new(&data, 4);
/// let sizes: Vec<usize> = loader.epoch(0).map(|b| b.len()).collect();
/// assert_eq!(sizes, [4, 4, 2]);
///
/// // Shuffled, full batches only, and one reused buffer: no allocation per batch.
/// let loader = DataLoader::new(&data, 4).shuffle(42).drop_last(true);
/// assert_eq!(loader.num_batches(), 2);
/// let mut batch = Batch::new();
/// for epoch in 0..3 {
///     let mut batches = loader.epoch(epoch);
///     while batches.next_into(&mut batch) {
///         assert_eq!(batch.x.shape(), [4, 3]);
///         // Row r of the batch is sample batch.indices[r] of the data set.
///         assert_eq!(batch.x[[0, 0]], (10 * batch.indices[0]) as f32);
///     }
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct DataLoader<'d, F: Float, D: Dataset<F> + ?Sized> {
    dataset: &'d D,
    batch_size: usize,
    seed: Option<u64>,
    drop_last: bool,
    /// `(rank, ranks)`: which piece of every batch this loader serves (`(0, 1)`: all of it).
    shard: (usize, usize),
    sample_size: usize,
    target_size: usize,
    /// `[batch_size, sample_shape..]`; each batch clones it and sets the first axis (a clone
    /// of an `IxDyn` of up to four axes is a copy, not an allocation).
    x_dim: IxDyn,
    /// `[batch_size, target_shape..]` for value targets.
    values_dim: Option<IxDyn>,
    _float: PhantomData<fn() -> F>,
}

impl<'d, F: Float, D: Dataset<F> + ?Sized> DataLoader<'d, F, D> {
    /// A loader serving `dataset` in batches of `batch_size` samples, in order, keeping a
    /// smaller last batch.
    ///
    /// A `batch_size` of 0 is taken as 1 (a batch must hold a sample to make progress); read
    /// the size in use back with [`DataLoader::batch_size`].
    pub fn new(dataset: &'d D, batch_size: usize) -> Self {
        let batch_size = batch_size.max(1);
        // Read once here rather than per batch: `Dataset::targets` may allocate.
        let targets = dataset.targets();
        let x_dim = IxDyn(&[&[batch_size][..], dataset.sample_shape()].concat());
        let values_dim = match &targets {
            TargetKind::Labels { .. } => None,
            TargetKind::Values { shape } => Some(IxDyn(&[&[batch_size][..], shape].concat())),
        };
        DataLoader {
            dataset,
            batch_size,
            seed: None,
            drop_last: false,
            shard: (0, 1),
            target_size: targets.sample_size(),
            sample_size: dataset.sample_size(),
            x_dim,
            values_dim,
            _float: PhantomData,
        }
    }

    /// Visits the samples in a random order, a different one every epoch, determined by
    /// `seed` and the epoch number (and the `rand` version: `StdRng`'s stream is not promised
    /// across `rand` releases).
    pub fn shuffle(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Whether to leave out the last batch of an epoch when it would be smaller than the
    /// batch size (default `false`: keep it). With `true` every batch has exactly
    /// [`DataLoader::batch_size`] samples, and a shuffled loader leaves out different samples
    /// each epoch.
    pub fn drop_last(mut self, drop_last: bool) -> Self {
        self.drop_last = drop_last;
        self
    }

    /// Serves only rank `rank`'s piece of every batch, for data-parallel training over
    /// `ranks` processes (see [`crate::distributed`]).
    ///
    /// All ranks compute the same epoch order (same seed) and the same batches of
    /// [`DataLoader::batch_size`] samples, the *global* batch; rank `r` serves the contiguous
    /// piece `[n·r/ranks, n·(r+1)/ranks)` of each batch of `n` samples. The pieces differ in
    /// size by at most one sample, every rank serves the same number of batches (so no rank
    /// waits for a step that another never takes), and a piece may be empty when a batch has
    /// fewer samples than there are ranks: [`Epoch::next_into`] then yields an empty batch.
    /// Together the ranks see exactly the batches of the unsharded loader, so training
    /// across any number of ranks follows the same sequence of global batches, and a run can
    /// resume on a different number of ranks. A `ranks` of 0 is taken as 1; `rank` is capped
    /// at `ranks - 1`.
    pub fn shard(mut self, rank: usize, ranks: usize) -> Self {
        let ranks = ranks.max(1);
        self.shard = (rank.min(ranks - 1), ranks);
        self
    }

    /// `(rank, ranks)` as set by [`DataLoader::shard`]; `(0, 1)` when unsharded.
    pub fn shard_of(&self) -> (usize, usize) {
        self.shard
    }

    /// The batch size in use (at least 1).
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// The data set being served.
    pub fn dataset(&self) -> &'d D {
        self.dataset
    }

    /// The number of batches in one epoch.
    pub fn num_batches(&self) -> usize {
        let n = self.dataset.len();
        if self.drop_last {
            n / self.batch_size
        } else {
            n.div_ceil(self.batch_size)
        }
    }

    /// The order in which epoch `epoch` visits the samples (before `drop_last` cuts the
    /// tail): `0..len` without shuffling, a permutation of it with.
    pub fn epoch_order(&self, epoch: usize) -> Vec<usize> {
        match self.seed {
            Some(seed) => permutation(self.dataset.len(), &mut epoch_rng(seed, epoch)),
            None => (0..self.dataset.len()).collect(),
        }
    }

    /// The batches of epoch `epoch`, as an iterator of owned [`Batch`]es; its
    /// [`Epoch::next_into`] fills a batch you keep instead, without allocating.
    ///
    /// Epochs are independent: any epoch can be started at any time, in any order, and gives
    /// the same batches every time.
    pub fn epoch(&self, epoch: usize) -> Epoch<'_, F, D> {
        let n = self.dataset.len();
        let end = if self.drop_last {
            n - n % self.batch_size
        } else {
            n
        };
        Epoch {
            loader: self,
            // No permutation to store when serving in order.
            order: self.seed.map(|_| self.epoch_order(epoch)),
            next: 0,
            end,
        }
    }

    /// The same as [`DataLoader::epoch`], named for the allocation-free loop
    /// `while batches.next_into(&mut batch) { .. }`.
    pub fn epoch_batches(&self, epoch: usize) -> Epoch<'_, F, D> {
        self.epoch(epoch)
    }
}

/// The generator of one epoch's shuffle. The epoch goes through SplitMix64's finalizer before
/// it is XORed into the seed: with a plain `seed ^ epoch`, simple pairs would collide (seed 1
/// epoch 0 and seed 0 epoch 1 would shuffle alike).
pub(crate) fn epoch_rng(seed: u64, epoch: usize) -> StdRng {
    StdRng::seed_from_u64(seed ^ mix64((epoch as u64).wrapping_add(0x9E37_79B9_7F4A_7C15)))
}

/// SplitMix64's finalizer: nearby inputs give unrelated outputs.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniformly random permutation of `0..n` (Fisher–Yates).
pub(crate) fn permutation(n: usize, rng: &mut StdRng) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    shuffle_in_place(&mut order, rng);
    order
}

/// Fisher–Yates, written out rather than `SliceRandom::shuffle` so that the order depends
/// only on `random_range`'s stream.
pub(crate) fn shuffle_in_place(items: &mut [usize], rng: &mut StdRng) {
    for i in (1..items.len()).rev() {
        let j = rng.random_range(0..=i);
        items.swap(i, j);
    }
}

/// The batches of one epoch: an [`Iterator`] of owned [`Batch`]es, or, through
/// [`Epoch::next_into`], a source that refills one batch you keep.
#[derive(Debug)]
pub struct Epoch<'a, F: Float, D: Dataset<F> + ?Sized> {
    loader: &'a DataLoader<'a, F, D>,
    /// The epoch's permutation; `None` means the identity.
    order: Option<Vec<usize>>,
    /// Position in the order of the next batch's first sample.
    next: usize,
    /// Position where the epoch ends (`drop_last` already applied).
    end: usize,
}

/// The buffer of an array, for reuse. Whatever its offset, every element of the reused buffer
/// is overwritten before the array is rebuilt from it.
fn into_buffer<T>(array: ArrayD<T>) -> Vec<T> {
    array.into_raw_vec_and_offset().0
}

impl<F: Float, D: Dataset<F> + ?Sized> Epoch<'_, F, D> {
    /// Writes the next batch into `batch`, reusing its buffers, and returns `true`; returns
    /// `false` (leaving `batch` unchanged) when the epoch is over.
    ///
    /// Once `batch` has held a full-size batch this allocates nothing (for samples and value
    /// targets of up to three axes; more axes cost a small shape allocation per batch), so it
    /// is the call for a training loop that must not allocate per step.
    pub fn next_into(&mut self, batch: &mut Batch<F>) -> bool {
        if self.next >= self.end {
            return false;
        }
        let loader = self.loader;
        let global_start = self.next;
        let global_stop = (global_start + loader.batch_size).min(self.end);
        self.next = global_stop;
        // This rank's piece of the global batch (all of it when unsharded).
        let (rank, ranks) = loader.shard;
        let global_n = global_stop - global_start;
        let start = global_start + global_n * rank / ranks;
        let stop = global_start + global_n * (rank + 1) / ranks;
        let n = stop - start;

        batch.indices.clear();
        match &self.order {
            Some(order) => batch.indices.extend_from_slice(&order[start..stop]),
            None => batch.indices.extend(start..stop),
        }

        let size = loader.sample_size;
        let mut x = into_buffer(std::mem::replace(&mut batch.x, empty()));
        x.resize(n * size, F::ZERO);
        // Rows by index rather than `chunks_mut`, which yields nothing for zero-sized samples
        // (whose targets must still be copied).
        let dataset = loader.dataset;
        match &loader.values_dim {
            None => {
                let mut labels = batch
                    .labels
                    .take()
                    .map(|l| into_buffer(l.into_dyn()))
                    .unwrap_or_default();
                labels.resize(n, 0);
                for (row, (&index, label)) in batch.indices.iter().zip(&mut labels).enumerate() {
                    let features = &mut x[row * size..(row + 1) * size];
                    dataset.copy_sample(index, features, TargetMut::Label(label));
                }
                batch.labels = Some(Array1::from_vec(labels));
                batch.values = None;
            }
            Some(values_dim) => {
                let tsize = loader.target_size;
                let mut values = batch.values.take().map(into_buffer).unwrap_or_default();
                values.resize(n * tsize, F::ZERO);
                for (row, &index) in batch.indices.iter().enumerate() {
                    let features = &mut x[row * size..(row + 1) * size];
                    let value = &mut values[row * tsize..(row + 1) * tsize];
                    dataset.copy_sample(index, features, TargetMut::Values(value));
                }
                batch.values = Some(rebuild(values_dim, n, values));
                batch.labels = None;
            }
        }
        batch.x = rebuild(&loader.x_dim, n, x);
        true
    }
}

/// The array of shape `dim` with its first axis set to `n`, over `buffer`.
fn rebuild<T>(dim: &IxDyn, n: usize, buffer: Vec<T>) -> ArrayD<T> {
    let mut dim = dim.clone();
    dim[0] = n;
    ArrayD::from_shape_vec(dim, buffer)
        .expect("the buffer was resized to the batch's element count")
}

impl<F: Float, D: Dataset<F> + ?Sized> Iterator for Epoch<'_, F, D> {
    type Item = Batch<F>;

    fn next(&mut self) -> Option<Batch<F>> {
        let mut batch = Batch::new();
        self.next_into(&mut batch).then_some(batch)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.end - self.next).div_ceil(self.loader.batch_size);
        (left, Some(left))
    }
}

impl<F: Float, D: Dataset<F> + ?Sized> ExactSizeIterator for Epoch<'_, F, D> {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn fisher_yates_draws_every_permutation_about_equally() {
        // Seeded, so deterministic; the bounds are ~6 standard deviations wide.
        let mut counts: HashMap<Vec<usize>, usize> = HashMap::new();
        for epoch in 0..6000 {
            *counts
                .entry(permutation(3, &mut epoch_rng(17, epoch)))
                .or_default() += 1;
        }
        assert_eq!(counts.len(), 6, "{counts:?}");
        assert!(
            counts.values().all(|&c| (820..=1180).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn shards_partition_every_global_batch_in_order() {
        use crate::data::TensorDataset;
        use ndarray::{Array1, Array2};
        let x = Array2::from_shape_fn((10, 2), |(i, j)| (10 * i + j) as f32);
        let data = TensorDataset::with_labels(x, Array1::from_shape_fn(10, |i| i % 3), 3)
            .expect("dataset");
        let whole = DataLoader::new(&data, 4).shuffle(7);
        for ranks in [1, 2, 3, 5] {
            let shards: Vec<Vec<Batch<f32>>> = (0..ranks)
                .map(|r| whole_shard(&data, r, ranks).epoch(3).collect())
                .collect();
            let full: Vec<Batch<f32>> = whole.epoch(3).collect();
            for (b, batch) in full.iter().enumerate() {
                let mut joined = Vec::new();
                for shard in &shards {
                    // Every rank takes the same number of steps.
                    assert_eq!(shard.len(), full.len(), "{ranks} ranks");
                    let piece = &shard[b];
                    assert_eq!(piece.x.shape(), [piece.len(), 2]);
                    for (row, &i) in piece.indices.iter().enumerate() {
                        assert_eq!(piece.x[[row, 1]], (10 * i + 1) as f32);
                        assert_eq!(piece.labels.as_ref().expect("labels")[row], i % 3);
                    }
                    joined.extend_from_slice(&piece.indices);
                }
                assert_eq!(joined, batch.indices, "batch {b} over {ranks} ranks");
            }
        }
        // The last batch holds 2 samples: of 3 ranks, rank 0 gets none, ranks 1 and 2 one each.
        let sizes: Vec<usize> = (0..3)
            .map(|r| {
                whole_shard(&data, r, 3)
                    .epoch(0)
                    .last()
                    .expect("batch")
                    .len()
            })
            .collect();
        assert_eq!(sizes, [0, 1, 1]);
    }

    fn whole_shard(
        data: &crate::data::TensorDataset<f32>,
        rank: usize,
        ranks: usize,
    ) -> DataLoader<'_, f32, crate::data::TensorDataset<f32>> {
        DataLoader::new(data, 4).shuffle(7).shard(rank, ranks)
    }

    #[test]
    fn small_permutations_are_trivial() {
        let mut rng = epoch_rng(0, 0);
        assert_eq!(permutation(0, &mut rng), Vec::<usize>::new());
        assert_eq!(permutation(1, &mut rng), [0]);
    }

    #[test]
    fn epochs_and_seeds_give_different_streams() {
        let first = |seed, epoch| epoch_rng(seed, epoch).random::<u64>();
        assert_ne!(first(0, 0), first(0, 1));
        assert_ne!(first(0, 0), first(1, 0));
        assert_eq!(first(5, 9), first(5, 9));
    }
}
