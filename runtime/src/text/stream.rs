//! [`TokenStream`]: one long sequence of ids for a language model, served as random windows
//! (training) or consecutive ones (evaluation).

use super::TextEncoder;
use crate::data::loader::epoch_rng;
use crate::{Error, Result};
use ndarray::Array2;
use rand::rngs::StdRng;
use rand::RngExt;

/// A text encoded as one sequence of ids, as a character or word language model reads it.
///
/// ```
/// use kiln_runtime::text::{TokenStream, Tokenizer, Vocab};
/// # fn main() -> kiln_runtime::Result<()> {
/// let text = "to be or not to be, that is the question";
/// let vocab = Vocab::builder(Tokenizer::Chars).build([text]);
/// let stream = TokenStream::encode(&vocab, text);
/// let (train, validation) = stream.split(0.9);
/// let mut sampler = train.sampler(4, 8, 1337)?;
/// let (x, y) = sampler.next_batch();
/// assert_eq!((x.dim(), y.dim()), ((4, 8), (4, 8)));
/// assert_eq!(x.row(0).slice(ndarray::s![1..]), y.row(0).slice(ndarray::s![..7]));
/// let windows = validation.windows(4, 2).count();
/// assert_eq!(windows, 1); // 5 tokens: two windows of 2 (+1), in one batch
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenStream {
    tokens: Vec<usize>,
}

impl TokenStream {
    /// The stream of `tokens`.
    pub fn new(tokens: Vec<usize>) -> Self {
        TokenStream { tokens }
    }

    /// `text` encoded with `encoder` (a [`Vocab`](super::Vocab), or a pretrained model's
    /// [`HfTokenizer`](super::HfTokenizer)).
    pub fn encode(encoder: &(impl TextEncoder + ?Sized), text: &str) -> Self {
        let mut tokens = Vec::new();
        encoder.encode_into(text, &mut tokens);
        TokenStream::new(tokens)
    }

    /// The number of tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether the stream has no tokens.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The ids.
    pub fn tokens(&self) -> &[usize] {
        &self.tokens
    }

    /// The first `⌊train_fraction · len⌋` tokens and the rest, in order (nanoGPT's 0.9 /
    /// 0.1 split: validation text is text the model has not read, not a random sample of
    /// windows overlapping the training ones).
    ///
    /// # Panics
    /// If `train_fraction` is not within `0..=1`.
    pub fn split(&self, train_fraction: f64) -> (TokenStream, TokenStream) {
        assert!(
            (0.0..=1.0).contains(&train_fraction),
            "train_fraction must be within 0..=1, got {train_fraction}"
        );
        let cut = ((self.tokens.len() as f64 * train_fraction).floor() as usize).min(self.len());
        (
            TokenStream::new(self.tokens[..cut].to_vec()),
            TokenStream::new(self.tokens[cut..].to_vec()),
        )
    }

    /// A sampler of `batch` random windows of `block + 1` tokens per batch, seeded.
    ///
    /// # Errors
    /// [`Error::StreamTooShort`] if the stream has fewer than `block + 1` tokens.
    ///
    /// # Panics
    /// If `batch` or `block` is 0.
    pub fn sampler(&self, batch: usize, block: usize, seed: u64) -> Result<WindowSampler<'_>> {
        assert!(batch > 0 && block > 0, "batch and block must be at least 1");
        if self.tokens.len() < block + 1 {
            return Err(Error::StreamTooShort {
                tokens: self.tokens.len(),
                needed: block + 1,
            });
        }
        Ok(WindowSampler {
            tokens: &self.tokens,
            batch,
            block,
            rng: epoch_rng(seed, 0),
        })
    }

    /// The number of non-overlapping windows [`TokenStream::windows`] serves: windows start
    /// at `0, block, 2·block, ...` and need `block + 1` tokens.
    pub fn window_count(&self, block: usize) -> usize {
        assert!(block > 0, "block must be at least 1");
        self.tokens.len().saturating_sub(1) / block
    }

    /// Consecutive non-overlapping windows, `batch` at a time (the last batch may be
    /// smaller), for evaluating on the whole text: window `i` has inputs
    /// `tokens[i·block .. (i+1)·block]` and targets one token further on, so every token
    /// after the first is predicted exactly once, except a tail shorter than `block`. A stream
    /// shorter than `block + 1` gives no windows.
    ///
    /// # Panics
    /// If `batch` or `block` is 0.
    pub fn windows(&self, batch: usize, block: usize) -> Windows<'_> {
        assert!(batch > 0 && block > 0, "batch and block must be at least 1");
        Windows {
            tokens: &self.tokens,
            batch,
            block,
            next: 0,
            count: self.window_count(block),
        }
    }
}

/// Random training windows from a [`TokenStream`], like nanoGPT's `get_batch`: each batch
/// draws `batch` start offsets uniformly from `0..=len − block − 1`; inputs are the `block`
/// tokens from there and targets the `block` tokens one further on. The same seed gives the
/// same batches. An endless [`Iterator`] too.
#[derive(Debug)]
pub struct WindowSampler<'a> {
    tokens: &'a [usize],
    batch: usize,
    block: usize,
    rng: StdRng,
}

impl WindowSampler<'_> {
    /// The next batch: inputs and targets, both `[batch, block]`.
    pub fn next_batch(&mut self) -> (Array2<usize>, Array2<usize>) {
        let mut inputs = Array2::zeros((self.batch, self.block));
        let mut targets = Array2::zeros((self.batch, self.block));
        self.next_into(&mut inputs, &mut targets);
        (inputs, targets)
    }

    /// Writes the next batch into `inputs` and `targets` (no allocation).
    ///
    /// # Panics
    /// If either is not `[batch, block]`.
    pub fn next_into(&mut self, inputs: &mut Array2<usize>, targets: &mut Array2<usize>) {
        assert_eq!(inputs.dim(), (self.batch, self.block), "inputs shape");
        assert_eq!(targets.dim(), (self.batch, self.block), "targets shape");
        let last_start = self.tokens.len() - self.block - 1;
        for (mut x, mut y) in inputs.rows_mut().into_iter().zip(targets.rows_mut()) {
            let start = self.rng.random_range(0..=last_start);
            let window = &self.tokens[start..start + self.block + 1];
            for (slot, &id) in x.iter_mut().zip(&window[..self.block]) {
                *slot = id;
            }
            for (slot, &id) in y.iter_mut().zip(&window[1..]) {
                *slot = id;
            }
        }
    }
}

impl Iterator for WindowSampler<'_> {
    type Item = (Array2<usize>, Array2<usize>);

    fn next(&mut self) -> Option<Self::Item> {
        Some(self.next_batch())
    }
}

/// Consecutive evaluation windows from [`TokenStream::windows`].
#[derive(Clone, Debug)]
pub struct Windows<'a> {
    tokens: &'a [usize],
    batch: usize,
    block: usize,
    next: usize,
    count: usize,
}

impl Iterator for Windows<'_> {
    type Item = (Array2<usize>, Array2<usize>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.count {
            return None;
        }
        let rows = self.batch.min(self.count - self.next);
        let block = self.block;
        let mut inputs = Array2::zeros((rows, block));
        let mut targets = Array2::zeros((rows, block));
        for r in 0..rows {
            let start = (self.next + r) * block;
            for t in 0..block {
                inputs[[r, t]] = self.tokens[start + t];
                targets[[r, t]] = self.tokens[start + t + 1];
            }
        }
        self.next += rows;
        Some((inputs, targets))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.count - self.next).div_ceil(self.batch);
        (left, Some(left))
    }
}

impl ExactSizeIterator for Windows<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_inputs_shifted_by_one() {
        let stream = TokenStream::new((0..50).collect());
        let mut sampler = stream.sampler(8, 5, 3).unwrap();
        for _ in 0..10 {
            let (x, y) = sampler.next_batch();
            for (x, y) in x.rows().into_iter().zip(y.rows()) {
                // The ids are their positions, so a window is consecutive numbers.
                let start = x[0];
                assert!(start + 5 < 50);
                assert_eq!(x.to_vec(), (start..start + 5).collect::<Vec<_>>());
                assert_eq!(y.to_vec(), (start + 1..start + 6).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn same_seed_same_windows_and_every_start_reachable() {
        let stream = TokenStream::new((0..12).collect());
        let a: Vec<_> = stream.sampler(4, 3, 9).unwrap().take(50).collect();
        let b: Vec<_> = stream.sampler(4, 3, 9).unwrap().take(50).collect();
        let c: Vec<_> = stream.sampler(4, 3, 10).unwrap().take(50).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut starts: Vec<usize> = a.iter().flat_map(|(x, _)| x.column(0).to_vec()).collect();
        starts.sort_unstable();
        starts.dedup();
        assert_eq!(starts, (0..=8).collect::<Vec<_>>());
    }

    #[test]
    fn too_short_is_an_error() {
        let stream = TokenStream::new(vec![1, 2, 3]);
        assert!(stream.sampler(1, 2, 0).is_ok());
        let error = stream.sampler(1, 3, 0).unwrap_err();
        assert!(matches!(
            error,
            Error::StreamTooShort {
                tokens: 3,
                needed: 4
            }
        ));
        assert_eq!(stream.windows(2, 3).count(), 0);
    }

    #[test]
    fn validation_windows_cover_the_text_once() {
        let stream = TokenStream::new((0..11).collect());
        let batches: Vec<_> = stream.windows(2, 3).collect();
        // Windows at 0, 3, 6 (9 + 3 + 1 > 11): batches of 2 and 1.
        assert_eq!(batches.len(), 2);
        assert_eq!(stream.windows(2, 3).len(), 2);
        assert_eq!(batches[0].0, ndarray::array![[0, 1, 2], [3, 4, 5]]);
        assert_eq!(batches[0].1, ndarray::array![[1, 2, 3], [4, 5, 6]]);
        assert_eq!(batches[1].0, ndarray::array![[6, 7, 8]]);
        assert_eq!(batches[1].1, ndarray::array![[7, 8, 9]]);
    }

    #[test]
    fn split_is_contiguous() {
        let stream = TokenStream::new((0..10).collect());
        let (train, validation) = stream.split(0.9);
        assert_eq!(train.tokens(), (0..9).collect::<Vec<_>>());
        assert_eq!(validation.tokens(), [9]);
    }
}
