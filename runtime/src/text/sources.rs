//! Text as [`BatchSource`]s for [`Trainer::fit_batches`](crate::train::Trainer::fit_batches):
//! labelled texts padded per batch ([`TextBatches`]) and a language model's windows
//! ([`LmWindows`]).

use super::{EncodedText, TokenStream, Vocab};
use crate::data::batches::write_padded_rows;
use crate::data::{set_ids, BatchSource, ServedArg, ServedKind};
use crate::trainable::BatchArray;
use crate::{Float, Result};

impl EncodedText {
    /// These texts as batches for
    /// [`Trainer::fit_batches`](crate::train::Trainer::fit_batches): token ids `[B, T]`
    /// padded with `<pad>` to the batch's longest text, their lengths `[B]` and their labels
    /// `[B]`, in that order, for a model declared as
    ///
    /// ```text
    /// input tokens: [B, T] tokens 12000;
    /// input len: [B] lengths T;
    /// target label: [B] classes 3;
    /// ```
    ///
    /// [`TextBatches::lengths`] leaves the lengths out (a model without a `lengths` input),
    /// [`TextBatches::max_len`] truncates and [`TextBatches::pad_to`] gives every batch one
    /// length (a model with a fixed `T`).
    pub fn batches(&self) -> TextBatches<'_> {
        TextBatches {
            data: self,
            max_len: None,
            fixed_len: None,
            lengths: true,
        }
    }
}

/// Labelled texts served as `(tokens, lengths, labels)` batches: see
/// [`EncodedText::batches`].
#[derive(Clone, Copy, Debug)]
pub struct TextBatches<'a> {
    data: &'a EncodedText,
    max_len: Option<usize>,
    fixed_len: Option<usize>,
    lengths: bool,
}

impl TextBatches<'_> {
    /// Keeps each text's first `max_len` ids (batches are still padded to their longest text
    /// within that). A `max_len` of 0 counts as 1.
    pub fn max_len(mut self, max_len: usize) -> Self {
        self.max_len = Some(max_len.max(1));
        self
    }

    /// Pads or truncates every text to exactly `len` ids (Keras' `pad_sequences(maxlen=len)`),
    /// for a model whose sequence length is fixed. A `len` of 0 counts as 1.
    pub fn pad_to(mut self, len: usize) -> Self {
        self.fixed_len = Some(len.max(1));
        self
    }

    /// Whether batches hold the lengths array (default `true`).
    pub fn lengths(mut self, lengths: bool) -> Self {
        self.lengths = lengths;
        self
    }
}

impl<F: Float> BatchSource<F> for TextBatches<'_> {
    fn len(&self) -> usize {
        self.data.len()
    }

    fn served(&self) -> Vec<ServedArg> {
        let mut served = vec![ServedArg::new(
            "tokens",
            ServedKind::Tokens { vocab: None },
            2,
        )];
        if self.lengths {
            served.push(ServedArg::new("lengths", ServedKind::Lengths, 1));
        }
        served.push(ServedArg::new(
            "labels",
            ServedKind::Labels {
                classes: Some(self.data.classes()),
            },
            1,
        ));
        served
    }

    fn fill(&self, indices: &[usize], batch: &mut Vec<BatchArray<F>>) -> Result<()> {
        let data = self.data;
        let len = self.fixed_len.unwrap_or_else(|| {
            let longest = indices
                .iter()
                .map(|&i| data.sequence(i).len())
                .max()
                .unwrap_or(0);
            self.max_len.map_or(longest, |m| longest.min(m)).max(1)
        });
        let rows = indices.len();
        set_ids(batch, 0, &[rows, len], |tokens| {
            write_padded_rows(tokens, indices, Vocab::PAD, |i| data.sequence(i));
        });
        let mut next = 1;
        if self.lengths {
            set_ids(batch, next, &[rows], |lengths| {
                for (slot, &i) in lengths.iter_mut().zip(indices) {
                    // As `pad_batch`: an empty text reads one `<pad>` step.
                    *slot = data.sequence(i).len().clamp(1, len);
                }
            });
            next += 1;
        }
        set_ids(batch, next, &[rows], |labels| {
            for (slot, &i) in labels.iter_mut().zip(indices) {
                *slot = data.labels()[i];
            }
        });
        batch.truncate(next + 1);
        Ok(())
    }
}

impl TokenStream {
    /// The stream's windows as a data set for
    /// [`Trainer::fit_batches`](crate::train::Trainer::fit_batches): sample `i` is the
    /// window starting at `i · stride` (stride 1 unless [`LmWindows::stride`] says
    /// otherwise), served as inputs `[B, block]` and next-token targets `[B, block]`, for a
    /// model declared as
    ///
    /// ```text
    /// input tokens: [B, T] tokens 96;
    /// target next: [B, T] classes 96;
    /// ```
    ///
    /// Shuffled with stride 1, an epoch visits every start offset once in a random order:
    /// nanoGPT's random windows, without repeats. Cap an epoch with
    /// [`Trainer::steps_per_epoch`](crate::train::Trainer::steps_per_epoch). With stride
    /// `block` the windows do not overlap: every token is predicted once, as
    /// [`TokenStream::windows`] serves them for evaluation.
    ///
    /// ```
    /// use kiln_runtime::data::BatchSource;
    /// use kiln_runtime::text::TokenStream;
    /// let stream = TokenStream::new((0..10).collect());
    /// let windows = stream.lm_windows(4);
    /// assert_eq!(BatchSource::<f32>::len(&windows), 6); // starts 0..=5
    /// assert_eq!(BatchSource::<f32>::len(&windows.stride(4)), 2); // starts 0 and 4
    /// let mut batch = Vec::new();
    /// BatchSource::<f32>::fill(&windows, &[5], &mut batch)?;
    /// assert_eq!(batch[1], kiln_runtime::BatchArray::Ids(ndarray::array![[6, 7, 8, 9]].into_dyn()));
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    ///
    /// # Panics
    /// If `block` is 0.
    pub fn lm_windows(&self, block: usize) -> LmWindows<'_> {
        assert!(block > 0, "block must be at least 1");
        LmWindows {
            tokens: self.tokens(),
            block,
            stride: 1,
        }
    }
}

/// A language model's training windows: see [`TokenStream::lm_windows`].
#[derive(Clone, Copy, Debug)]
pub struct LmWindows<'a> {
    tokens: &'a [usize],
    block: usize,
    stride: usize,
}

impl LmWindows<'_> {
    /// Windows start every `stride` tokens (default 1). A stride of 0 counts as 1.
    pub fn stride(mut self, stride: usize) -> Self {
        self.stride = stride.max(1);
        self
    }
}

impl<F: Float> BatchSource<F> for LmWindows<'_> {
    fn len(&self) -> usize {
        match self.tokens.len().checked_sub(self.block + 1) {
            Some(last_start) => last_start / self.stride + 1,
            None => 0,
        }
    }

    fn served(&self) -> Vec<ServedArg> {
        vec![
            ServedArg::new("tokens", ServedKind::Tokens { vocab: None }, 2),
            ServedArg::new("next tokens", ServedKind::Labels { classes: None }, 2),
        ]
    }

    fn fill(&self, indices: &[usize], batch: &mut Vec<BatchArray<F>>) -> Result<()> {
        let (block, stride, tokens) = (self.block, self.stride, self.tokens);
        for (slot, shift) in [(0, 0), (1, 1)] {
            set_ids(batch, slot, &[indices.len(), block], |out| {
                for (mut row, &i) in out.outer_iter_mut().zip(indices) {
                    let start = i * stride + shift;
                    for (dst, &id) in row.iter_mut().zip(&tokens[start..start + block]) {
                        *dst = id;
                    }
                }
            });
        }
        batch.truncate(2);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::{LabelledText, Tokenizer};
    use ndarray::array;

    fn encoded() -> EncodedText {
        let texts = ["a b c", "", "b"].map(String::from).to_vec();
        let data = LabelledText::new(texts, vec![0, 1, 1], vec!["x".into(), "y".into()]);
        let vocab = Vocab::builder(Tokenizer::Words).build(data.texts());
        data.encode(&vocab)
    }

    #[test]
    fn text_batches_pad_to_the_longest_and_clamp_lengths() {
        let data = encoded();
        let mut batch: Vec<BatchArray<f32>> = Vec::new();
        data.batches().fill(&[1, 2], &mut batch).unwrap();
        let b = data.sequence(2)[0];
        assert_eq!(batch.len(), 3);
        assert_eq!(batch[0], BatchArray::Ids(array![[0], [b]].into_dyn()));
        assert_eq!(batch[1], BatchArray::Ids(array![1, 1].into_dyn()));
        assert_eq!(batch[2], BatchArray::Ids(array![1, 1].into_dyn()));
        // Reusing the buffers for a longer batch, truncated by max_len.
        data.batches().max_len(2).fill(&[0, 2], &mut batch).unwrap();
        assert_eq!(batch[0].shape(), [2, 2]);
        assert_eq!(batch[1], BatchArray::Ids(array![2, 1].into_dyn()));
        data.batches()
            .pad_to(4)
            .lengths(false)
            .fill(&[2], &mut batch)
            .unwrap();
        assert_eq!(batch.len(), 2);
        assert_eq!(batch[0], BatchArray::Ids(array![[b, 0, 0, 0]].into_dyn()));
        let served = BatchSource::<f32>::served(&data.batches().lengths(false));
        assert_eq!(
            served.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            ["tokens", "labels"]
        );
    }

    #[test]
    fn lm_windows_count_and_shift() {
        let stream = TokenStream::new((10..20).collect());
        let w = stream.lm_windows(3).stride(2);
        assert_eq!(BatchSource::<f32>::len(&w), 4); // starts 0, 2, 4, 6
        let mut batch: Vec<BatchArray<f32>> = Vec::new();
        w.fill(&[3, 0], &mut batch).unwrap();
        assert_eq!(
            batch[0],
            BatchArray::Ids(array![[16, 17, 18], [10, 11, 12]].into_dyn())
        );
        assert_eq!(
            batch[1],
            BatchArray::Ids(array![[17, 18, 19], [11, 12, 13]].into_dyn())
        );
        assert_eq!(
            BatchSource::<f32>::len(&TokenStream::new(vec![1, 2]).lm_windows(2)),
            0
        );
    }
}
