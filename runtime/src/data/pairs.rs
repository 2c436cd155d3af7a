//! [`SequencePairs`]: (source, target) token sequences for sequence-to-sequence models
//! (translation, summarisation, any mapping between two texts), served by [`PairBatches`] as
//! teacher-forcing batches for [`Trainer::fit_batches`](crate::train::Trainer::fit_batches).

use super::batches::write_padded_rows;
use super::{set_ids, BatchSource, ServedArg, ServedKind};
use crate::trainable::BatchArray;
use crate::{Error, Float, Result};

/// Pairs of token-id sequences, a source and its target, as a sequence-to-sequence model
/// learns them. [`SequencePairs::batches`] serves them for
/// [`Trainer::fit_batches`](crate::train::Trainer::fit_batches).
///
/// ```
/// use kiln_runtime::data::{BatchSource, SequencePairs};
/// use kiln_runtime::BatchArray;
/// // Ids 0 (padding), 1 (start) and 2 (end) are the target vocabulary's special tokens.
/// let pairs = SequencePairs::new(vec![vec![5, 6, 7], vec![8]], vec![vec![3, 4], vec![5, 6, 7]])?;
/// let mut batch: Vec<BatchArray<f32>> = Vec::new();
/// BatchSource::<f32>::fill(&pairs.batches(1, 2), &[0, 1], &mut batch)?;
/// let ids = |i: usize| match &batch[i] {
///     BatchArray::Ids(a) => a.iter().copied().collect::<Vec<_>>(),
///     BatchArray::Float(_) => unreachable!(),
/// };
/// assert_eq!(ids(0), [5, 6, 7, 8, 0, 0]); // sources, padded
/// assert_eq!(ids(1), [3, 1]); // their lengths
/// assert_eq!(ids(2), [1, 3, 4, 0, 1, 5, 6, 7]); // decoder inputs: start, then the target
/// assert_eq!(ids(3), [3, 4, 2, 0, 5, 6, 7, 2]); // next tokens: the target, then end
/// # Ok::<(), kiln_runtime::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SequencePairs {
    sources: Vec<Vec<usize>>,
    targets: Vec<Vec<usize>>,
}

impl SequencePairs {
    /// Pairs `sources[i]` with `targets[i]`.
    ///
    /// # Errors
    /// [`Error::Data`] when the two lists differ in length.
    pub fn new(sources: Vec<Vec<usize>>, targets: Vec<Vec<usize>>) -> Result<Self> {
        if sources.len() != targets.len() {
            return Err(Error::Data {
                what: "SequencePairs",
                problem: format!(
                    "{} sources but {} targets: each source needs its target",
                    sources.len(),
                    targets.len()
                ),
            });
        }
        Ok(SequencePairs { sources, targets })
    }

    /// The number of pairs.
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// Source `i`.
    ///
    /// # Panics
    /// If `i` is not below [`SequencePairs::len`].
    pub fn source(&self, i: usize) -> &[usize] {
        &self.sources[i]
    }

    /// Target `i`.
    ///
    /// # Panics
    /// If `i` is not below [`SequencePairs::len`].
    pub fn target(&self, i: usize) -> &[usize] {
        &self.targets[i]
    }

    /// Adds a pair.
    pub fn push(&mut self, source: Vec<usize>, target: Vec<usize>) {
        self.sources.push(source);
        self.targets.push(target);
    }

    /// These pairs as teacher-forcing batches: the sources `[B, S]` padded with id 0 to the
    /// batch's longest, their lengths `[B]`, the decoder's inputs `[B, T]` (`start`, then the
    /// target) and the next tokens it learns to predict `[B, T]` (the target, then `end`),
    /// both padded with id 0, for a model declared as
    ///
    /// ```text
    /// input src: [B, S] tokens 44;
    /// input src_len: [B] lengths S;
    /// input tgt: [B, T] tokens 14;
    /// target next: [B, T] classes 14;
    /// ...
    /// loss cross_entropy(logits, next, ignore_index = 0);
    /// ```
    ///
    /// `ignore_index = 0` leaves the padding out of the loss and the accuracy, as PyTorch's
    /// `ignore_index=pad_id`; targets of one length need none. Id 0 is `<pad>` in a
    /// `text::Vocab` (feature `text`).
    pub fn batches(&self, start: usize, end: usize) -> PairBatches<'_> {
        PairBatches {
            pairs: self,
            start,
            end,
            max_source: None,
            max_target: None,
            lengths: true,
        }
    }
}

/// [`SequencePairs`] served as teacher-forcing batches: see [`SequencePairs::batches`].
#[derive(Clone, Copy, Debug)]
pub struct PairBatches<'a> {
    pairs: &'a SequencePairs,
    start: usize,
    end: usize,
    max_source: Option<usize>,
    max_target: Option<usize>,
    lengths: bool,
}

impl PairBatches<'_> {
    /// Keeps each source's first `n` ids (at least 1) and each target's first `m` (the
    /// decoder then sees `m + 1` positions: the start and the kept target, or the kept target
    /// and the end).
    pub fn max_len(mut self, n: usize, m: usize) -> Self {
        self.max_source = Some(n.max(1));
        self.max_target = Some(m);
        self
    }

    /// Whether the source lengths are served (`true`, the default); `false` for a model
    /// without a `lengths` input.
    pub fn lengths(mut self, lengths: bool) -> Self {
        self.lengths = lengths;
        self
    }

    fn source(&self, i: usize) -> &[usize] {
        let s = self.pairs.source(i);
        &s[..self.max_source.map_or(s.len(), |m| m.min(s.len()))]
    }

    fn target(&self, i: usize) -> &[usize] {
        let t = self.pairs.target(i);
        &t[..self.max_target.map_or(t.len(), |m| m.min(t.len()))]
    }
}

impl<F: Float> BatchSource<F> for PairBatches<'_> {
    fn len(&self) -> usize {
        self.pairs.len()
    }

    fn served(&self) -> Vec<ServedArg> {
        let tokens = ServedKind::Tokens { vocab: None };
        let mut served = vec![ServedArg::new("source", tokens, 2)];
        if self.lengths {
            served.push(ServedArg::new("source lengths", ServedKind::Lengths, 1));
        }
        served.push(ServedArg::new("decoder input", tokens, 2));
        served.push(ServedArg::new(
            "next tokens",
            ServedKind::Labels { classes: None },
            2,
        ));
        served
    }

    fn fill(&self, indices: &[usize], batch: &mut Vec<BatchArray<F>>) -> Result<()> {
        let rows = indices.len();
        // An empty source reads one padding step, as `pad_batch` does.
        let s_len = indices
            .iter()
            .map(|&i| self.source(i).len())
            .max()
            .unwrap_or(0)
            .max(1);
        let t_len = indices
            .iter()
            .map(|&i| self.target(i).len() + 1)
            .max()
            .unwrap_or(1);
        set_ids(batch, 0, &[rows, s_len], |src| {
            write_padded_rows(src, indices, 0, |i| self.source(i));
        });
        let mut next = 1;
        if self.lengths {
            set_ids(batch, next, &[rows], |lengths| {
                for (slot, &i) in lengths.iter_mut().zip(indices) {
                    *slot = self.source(i).len().max(1);
                }
            });
            next += 1;
        }
        set_ids(batch, next, &[rows, t_len], |input| {
            for (mut row, &i) in input.outer_iter_mut().zip(indices) {
                let seq = self.target(i);
                for (t, slot) in row.iter_mut().enumerate() {
                    *slot = match t {
                        0 => self.start,
                        t => seq.get(t - 1).copied().unwrap_or(0),
                    };
                }
            }
        });
        set_ids(batch, next + 1, &[rows, t_len], |labels| {
            for (mut row, &i) in labels.outer_iter_mut().zip(indices) {
                let seq = self.target(i);
                for (t, slot) in row.iter_mut().enumerate() {
                    *slot = match t.cmp(&seq.len()) {
                        std::cmp::Ordering::Less => seq[t],
                        std::cmp::Ordering::Equal => self.end,
                        std::cmp::Ordering::Greater => 0,
                    };
                }
            }
        });
        batch.truncate(next + 2);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(batch: &[BatchArray<f64>], i: usize) -> (Vec<usize>, Vec<usize>) {
        match &batch[i] {
            BatchArray::Ids(a) => (a.shape().to_vec(), a.iter().copied().collect()),
            BatchArray::Float(_) => panic!("ids expected"),
        }
    }

    #[test]
    fn batches_pad_shift_and_truncate() {
        let pairs = SequencePairs::new(
            vec![vec![9, 8, 7, 6], vec![], vec![5]],
            vec![vec![3], vec![4, 5, 6], vec![]],
        )
        .unwrap();
        let mut batch = Vec::new();
        pairs.batches(1, 2).fill(&[2, 0, 1], &mut batch).unwrap();
        assert_eq!(
            ids(&batch, 0),
            (vec![3, 4], vec![5, 0, 0, 0, 9, 8, 7, 6, 0, 0, 0, 0])
        );
        assert_eq!(ids(&batch, 1), (vec![3], vec![1, 4, 1]));
        assert_eq!(
            ids(&batch, 2),
            (vec![3, 4], vec![1, 0, 0, 0, 1, 3, 0, 0, 1, 4, 5, 6])
        );
        assert_eq!(
            ids(&batch, 3),
            (vec![3, 4], vec![2, 0, 0, 0, 3, 2, 0, 0, 4, 5, 6, 2])
        );

        // Cut to 2 source and 1 target ids, without lengths: three arrays, the buffers
        // reused.
        let cut = pairs.batches(1, 2).max_len(2, 1).lengths(false);
        assert_eq!(BatchSource::<f64>::served(&cut).len(), 3);
        cut.fill(&[0, 1], &mut batch).unwrap();
        assert_eq!(batch.len(), 3);
        assert_eq!(ids(&batch, 0), (vec![2, 2], vec![9, 8, 0, 0]));
        assert_eq!(ids(&batch, 1), (vec![2, 2], vec![1, 3, 1, 4]));
        assert_eq!(ids(&batch, 2), (vec![2, 2], vec![3, 2, 4, 2]));
    }

    #[test]
    fn unequal_lists_are_an_error() {
        let err = SequencePairs::new(vec![vec![1]], Vec::new()).unwrap_err();
        assert!(err.to_string().contains("1 sources but 0 targets"), "{err}");
    }
}
