//! Padding token sequences into `[B, T]` batches with their lengths.

use super::Vocab;
use ndarray::{Array1, Array2};

/// Pads (or truncates) `seqs` into a `[B, T]` array of ids and their `[B]` lengths, ready for a
/// model's `tokens` and `lengths` inputs.
///
/// `T` is the longest sequence's length, or `max_len` if that is shorter; longer sequences
/// keep their first `T` ids. Positions past a sequence's end are [`Vocab::PAD`] (0).
/// Lengths are clamped to at least 1, and `T` too: an empty text becomes one `<pad>` step of
/// length 1, since a recurrent layer needs at least one step per sequence (its output is
/// then that of reading `<pad>`).
///
/// ```
/// use kiln_runtime::text::pad_batch;
/// let (tokens, lengths) = pad_batch(&[&[5, 6, 7][..], &[8], &[]], None);
/// assert_eq!(tokens, ndarray::array![[5, 6, 7], [8, 0, 0], [0, 0, 0]]);
/// assert_eq!(lengths.to_vec(), [3, 1, 1]);
/// let (tokens, lengths) = pad_batch(&[vec![5, 6, 7]], Some(2));
/// assert_eq!((tokens.row(0).to_vec(), lengths[0]), (vec![5, 6], 2));
/// ```
///
/// # Panics
/// If `max_len` is `Some(0)`.
pub fn pad_batch<S: AsRef<[usize]>>(
    seqs: &[S],
    max_len: Option<usize>,
) -> (Array2<usize>, Array1<usize>) {
    assert!(max_len != Some(0), "max_len must be at least 1");
    let longest = seqs.iter().map(|s| s.as_ref().len()).max().unwrap_or(0);
    let len = max_len.map_or(longest, |m| longest.min(m)).max(1);
    pad_batch_fixed(seqs, len)
}

/// Pads or truncates every sequence to exactly `len` ids (Keras's `pad_sequences` with
/// `maxlen`, padding and truncating at the end); lengths as [`pad_batch`]'s.
///
/// ```
/// use kiln_runtime::text::pad_batch_fixed;
/// let (tokens, lengths) = pad_batch_fixed(&[&[4, 5, 6][..], &[7]], 2);
/// assert_eq!(tokens, ndarray::array![[4, 5], [7, 0]]);
/// assert_eq!(lengths.to_vec(), [2, 1]);
/// ```
///
/// # Panics
/// If `len` is 0.
pub fn pad_batch_fixed<S: AsRef<[usize]>>(
    seqs: &[S],
    len: usize,
) -> (Array2<usize>, Array1<usize>) {
    let mut tokens = Array2::zeros((seqs.len(), len));
    let mut lengths = Array1::zeros(seqs.len());
    pad_into(
        seqs.iter().map(AsRef::as_ref),
        len,
        &mut tokens,
        &mut lengths,
    );
    (tokens, lengths)
}

/// Writes `seqs` padded to `len` into `tokens` (`[B, len]`) and `lengths` (`[B]`), both
/// already of the right shape.
pub(crate) fn pad_into<'a>(
    seqs: impl ExactSizeIterator<Item = &'a [usize]>,
    len: usize,
    tokens: &mut Array2<usize>,
    lengths: &mut Array1<usize>,
) {
    assert!(len > 0, "padded length must be at least 1");
    assert_eq!(tokens.dim(), (seqs.len(), len));
    assert_eq!(lengths.len(), seqs.len());
    for ((seq, mut row), length) in seqs.zip(tokens.rows_mut()).zip(lengths.iter_mut()) {
        let kept = seq.len().min(len);
        for (slot, &id) in row.iter_mut().zip(&seq[..kept]) {
            *slot = id;
        }
        for slot in row.iter_mut().skip(kept) {
            *slot = Vocab::PAD;
        }
        *length = kept.max(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn pads_to_longest_and_truncates_to_max_len() {
        let seqs: Vec<Vec<usize>> = vec![vec![2, 3], vec![4, 5, 6, 7], vec![]];
        let (tokens, lengths) = pad_batch(&seqs, None);
        assert_eq!(tokens, array![[2, 3, 0, 0], [4, 5, 6, 7], [0, 0, 0, 0]]);
        assert_eq!(lengths.to_vec(), [2, 4, 1]);
        let (tokens, lengths) = pad_batch(&seqs, Some(3));
        assert_eq!(tokens, array![[2, 3, 0], [4, 5, 6], [0, 0, 0]]);
        assert_eq!(lengths.to_vec(), [2, 3, 1]);
        // max_len longer than every sequence does not pad further.
        assert_eq!(pad_batch(&seqs, Some(10)).0.dim(), (3, 4));
    }

    #[test]
    fn all_empty_and_no_sequences() {
        let (tokens, lengths) = pad_batch(&[&[][..], &[]], None);
        assert_eq!(tokens, array![[0], [0]]);
        assert_eq!(lengths.to_vec(), [1, 1]);
        let (tokens, lengths) = pad_batch::<&[usize]>(&[], None);
        assert_eq!((tokens.dim(), lengths.len()), ((0, 1), 0));
    }

    #[test]
    fn fixed_length_pads_and_truncates() {
        let (tokens, lengths) = pad_batch_fixed(&[&[9, 8, 7, 6][..], &[5]], 3);
        assert_eq!(tokens, array![[9, 8, 7], [5, 0, 0]]);
        assert_eq!(lengths.to_vec(), [3, 1]);
    }

    #[test]
    #[should_panic(expected = "max_len must be at least 1")]
    fn zero_max_len_is_a_bug() {
        pad_batch(&[&[1usize][..]], Some(0));
    }
}
