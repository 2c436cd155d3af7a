//! What turns text into token ids for the data sets: kiln's own [`Vocab`] or a pretrained
//! model's [`HfTokenizer`].

use super::{HfTokenizer, Vocab};

/// Text to token ids: what [`LabelledText::encode`](super::LabelledText::encode) and
/// [`TokenStream::encode`](super::TokenStream::encode) take.
///
/// ```
/// use kiln_runtime::text::{TextEncoder, Tokenizer, Vocab};
///
/// let vocab = Vocab::builder(Tokenizer::Words).build(["a rose is a rose"]);
/// let mut ids = Vec::new();
/// vocab.encode_into("a rose", &mut ids);
/// assert_eq!(ids.len(), 2);
/// ```
pub trait TextEncoder {
    /// Appends the ids of `text` to `ids`.
    fn encode_into(&self, text: &str, ids: &mut Vec<usize>);
}

impl TextEncoder for Vocab {
    fn encode_into(&self, text: &str, ids: &mut Vec<usize>) {
        Vocab::encode_into(self, text, ids);
    }
}

/// With the tokenizer's special tokens (`[CLS] … [SEP]`, `<s> …`), as calling the tokenizer on
/// a text does in Python. Batches are still padded with id 0 ([`Vocab::PAD`]), whatever the
/// tokenizer's own padding token: models read the batch's `lengths`, not the padding.
impl TextEncoder for HfTokenizer {
    fn encode_into(&self, text: &str, ids: &mut Vec<usize>) {
        ids.extend(self.encode(text, true));
    }
}
