//! [`BatchSource`]: data served as whole batches of several arrays (token ids, lengths,
//! labels per position...), the data side of
//! [`Trainer::fit_batches`](crate::train::Trainer::fit_batches).
//!
//! Where a [`Dataset`](super::Dataset) copies one fixed-shape sample at a time, a batch source
//! builds a whole batch from the indices of its samples, so that a batch can be shaped by its
//! samples (texts padded to the batch's longest) and hold any number of arrays.

use super::loader::{epoch_rng, permutation};
use crate::trainable::BatchArray;
use crate::{Float, Result};
use ndarray::{ArrayD, IxDyn};
use std::fmt;

/// What one array of a [`BatchSource`]'s batches holds, as far as the source knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServedKind {
    /// Float values.
    Float,
    /// Token ids (below `vocab` when the source knows the vocabulary).
    Tokens {
        /// The vocabulary size, when known.
        vocab: Option<usize>,
    },
    /// Sequence lengths.
    Lengths,
    /// Class labels (below `classes` when the source knows the class count).
    Labels {
        /// The class count, when known.
        classes: Option<usize>,
    },
}

impl fmt::Display for ServedKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServedKind::Float => write!(f, "float values"),
            ServedKind::Tokens { vocab: None } => write!(f, "token ids"),
            ServedKind::Tokens { vocab: Some(v) } => write!(f, "token ids below {v}"),
            ServedKind::Lengths => write!(f, "sequence lengths"),
            ServedKind::Labels { classes: None } => write!(f, "class labels"),
            ServedKind::Labels { classes: Some(c) } => write!(f, "labels of {c} classes"),
        }
    }
}

/// One array of a [`BatchSource`]'s batches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServedArg {
    /// A name for messages (`"tokens"`, `"labels"`).
    pub name: String,
    /// What it holds.
    pub kind: ServedKind,
    /// Its rank, batch axis included.
    pub rank: usize,
}

impl ServedArg {
    /// An array called `name` of `kind` and `rank` (batch axis included).
    pub fn new(name: impl Into<String>, kind: ServedKind, rank: usize) -> Self {
        ServedArg {
            name: name.into(),
            kind,
            rank,
        }
    }
}

/// Indexed samples served as batches of arrays, one array per model argument (declared
/// `input`s and `target`s, in declaration order).
///
/// The trainer decides which samples go into a batch (shuffled by a seed, as
/// [`DataLoader`](super::DataLoader) does) and the source builds the batch from their
/// indices. kiln implements it for labelled texts
/// (`text::TextBatches`) and language-model windows (`text::LmWindows`), both of feature
/// `text`; a source of your own (pairs of sentences for translation, say) is a few lines:
///
/// ```
/// use kiln_runtime::data::{BatchSource, ServedArg, ServedKind};
/// use kiln_runtime::{BatchArray, Result};
/// use ndarray::Array2;
///
/// /// Sequences of 4 ids whose targets are the same ids reversed.
/// struct Reversal(Vec<[usize; 4]>);
///
/// impl BatchSource<f32> for Reversal {
///     fn len(&self) -> usize {
///         self.0.len()
///     }
///     fn served(&self) -> Vec<ServedArg> {
///         vec![
///             ServedArg::new("ids", ServedKind::Tokens { vocab: Some(10) }, 2),
///             ServedArg::new("reversed", ServedKind::Labels { classes: Some(10) }, 2),
///         ]
///     }
///     fn fill(&self, indices: &[usize], batch: &mut Vec<BatchArray<f32>>) -> Result<()> {
///         let ids = Array2::from_shape_fn((indices.len(), 4), |(b, t)| self.0[indices[b]][t]);
///         let reversed = Array2::from_shape_fn((indices.len(), 4), |(b, t)| self.0[indices[b]][3 - t]);
///         *batch = vec![BatchArray::Ids(ids.into_dyn()), BatchArray::Ids(reversed.into_dyn())];
///         Ok(())
///     }
/// }
///
/// let data = Reversal(vec![[1, 2, 3, 4], [5, 6, 7, 8]]);
/// let mut batch = Vec::new();
/// data.fill(&[1], &mut batch)?;
/// assert_eq!(batch[1].shape(), [1, 4]);
/// # Ok::<(), kiln_runtime::Error>(())
/// ```
pub trait BatchSource<F: Float> {
    /// The number of samples.
    fn len(&self) -> usize;

    /// Whether there are no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The arrays a batch holds, in order.
    fn served(&self) -> Vec<ServedArg>;

    /// Writes the batch of the samples at `indices` (in that order, each below
    /// [`BatchSource::len`]) into `batch`, one array per [`BatchSource::served`] entry, each
    /// with `indices.len()` as its first axis. Reusing `batch`'s buffers (see
    /// [`set_ids`]) keeps a warm epoch free of allocation.
    ///
    /// # Errors
    /// When the samples cannot be read or built (a source decoding files lazily).
    fn fill(&self, indices: &[usize], batch: &mut Vec<BatchArray<F>>) -> Result<()>;
}

/// Sets slot `index` of `batch` to an id array of `shape` that `write` fills, reusing the
/// slot's buffer when it holds ids (`write` sees unspecified contents and must set every
/// element). Missing slots before `index` are added (empty).
pub fn set_ids<F>(
    batch: &mut Vec<BatchArray<F>>,
    index: usize,
    shape: &[usize],
    write: impl FnOnce(&mut ArrayD<usize>),
) {
    set_slot(
        batch,
        index,
        shape,
        write,
        BatchArray::Ids,
        |slot| match slot {
            BatchArray::Ids(a) => Some(a),
            BatchArray::Float(_) => None,
        },
    );
}

/// Fills `rows`, a `[indices.len(), len]` id array, with the sequence `sequence(i)` of each
/// of `indices`, cut to `len` and padded with `pad` (what a text source's batch of uneven
/// sequences is).
pub(crate) fn write_padded_rows<'s>(
    rows: &mut ArrayD<usize>,
    indices: &[usize],
    pad: usize,
    sequence: impl Fn(usize) -> &'s [usize],
) {
    for (mut row, &i) in rows.outer_iter_mut().zip(indices) {
        let seq = sequence(i);
        for (t, slot) in row.iter_mut().enumerate() {
            *slot = seq.get(t).copied().unwrap_or(pad);
        }
    }
}

/// [`set_ids`] for a float array.
pub fn set_floats<F: Float>(
    batch: &mut Vec<BatchArray<F>>,
    index: usize,
    shape: &[usize],
    write: impl FnOnce(&mut ArrayD<F>),
) {
    set_slot(
        batch,
        index,
        shape,
        write,
        BatchArray::Float,
        |slot| match slot {
            BatchArray::Float(a) => Some(a),
            BatchArray::Ids(_) => None,
        },
    );
}

/// Slot `index` of `batch` as an array of `T` (its old buffer if `unwrap` finds one) of
/// `shape`, filled by `write` and stored back through `wrap`.
fn set_slot<F, T: Clone + Default>(
    batch: &mut Vec<BatchArray<F>>,
    index: usize,
    shape: &[usize],
    write: impl FnOnce(&mut ArrayD<T>),
    wrap: fn(ArrayD<T>) -> BatchArray<F>,
    unwrap: fn(BatchArray<F>) -> Option<ArrayD<T>>,
) {
    while batch.len() <= index {
        batch.push(BatchArray::Ids(ArrayD::zeros(IxDyn(&[0]))));
    }
    let len: usize = shape.iter().product();
    let empty = BatchArray::Ids(ArrayD::zeros(IxDyn(&[0])));
    let mut buffer = match unwrap(std::mem::replace(&mut batch[index], empty)) {
        Some(a) => a.into_raw_vec_and_offset().0,
        None => Vec::new(),
    };
    buffer.resize(len, T::default());
    let mut array = ArrayD::from_shape_vec(IxDyn(shape), buffer)
        .unwrap_or_else(|_| ArrayD::from_elem(IxDyn(shape), T::default()));
    write(&mut array);
    batch[index] = wrap(array);
}

/// The batches of one epoch over `len` samples: index lists of `batch_size`, in order or
/// shuffled by `seed` and the epoch (the scheme of [`DataLoader::shuffle`]).
///
/// [`DataLoader::shuffle`]: super::DataLoader::shuffle
#[derive(Clone, Debug)]
pub(crate) struct IndexBatches {
    order: Vec<usize>,
    batch_size: usize,
    count: usize,
    next: usize,
}

impl IndexBatches {
    /// The batches of `epoch`; the last is smaller unless `drop_last`; at most `limit`
    /// batches.
    pub(crate) fn new(
        len: usize,
        batch_size: usize,
        drop_last: bool,
        seed: Option<u64>,
        epoch: usize,
        limit: Option<usize>,
    ) -> Self {
        let order = match seed {
            Some(seed) => permutation(len, &mut epoch_rng(seed, epoch)),
            None => (0..len).collect(),
        };
        IndexBatches {
            order,
            batch_size,
            count: Self::count(len, batch_size, drop_last, limit),
            next: 0,
        }
    }

    /// How many batches an epoch has.
    pub(crate) fn count(
        len: usize,
        batch_size: usize,
        drop_last: bool,
        limit: Option<usize>,
    ) -> usize {
        let all = if drop_last {
            len / batch_size
        } else {
            len.div_ceil(batch_size)
        };
        limit.map_or(all, |l| all.min(l))
    }

    /// The next batch's indices.
    pub(crate) fn next_indices(&mut self) -> Option<&[usize]> {
        if self.next >= self.count {
            return None;
        }
        let start = self.next * self.batch_size;
        self.next += 1;
        Some(&self.order[start..(start + self.batch_size).min(self.order.len())])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_batches_cover_the_epoch_and_honour_limits() {
        let mut b = IndexBatches::new(10, 4, false, Some(3), 0, None);
        let mut seen = Vec::new();
        while let Some(i) = b.next_indices() {
            seen.extend_from_slice(i);
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        assert_eq!(IndexBatches::count(10, 4, true, None), 2);
        assert_eq!(IndexBatches::count(10, 4, false, Some(2)), 2);
        let mut limited = IndexBatches::new(10, 4, false, None, 0, Some(1));
        assert_eq!(limited.next_indices(), Some(&[0, 1, 2, 3][..]));
        assert_eq!(limited.next_indices(), None);
    }

    #[test]
    fn reused_slots_take_the_new_shape() {
        let mut batch: Vec<BatchArray<f32>> = vec![BatchArray::Float(ArrayD::zeros(IxDyn(&[2])))];
        set_ids(&mut batch, 1, &[2, 3], |a| a.fill(7));
        assert_eq!(batch[1].shape(), [2, 3]);
        set_ids(&mut batch, 0, &[4], |a| a.fill(1));
        assert_eq!(batch[0], BatchArray::Ids(ArrayD::from_elem(IxDyn(&[4]), 1)));
    }
}
