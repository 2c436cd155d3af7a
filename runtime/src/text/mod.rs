//! Text: tokenizers (kiln's own, and Hugging Face `tokenizer.json` files through
//! [`HfTokenizer`]), vocabularies, padding, labelled-text data sets (sentiment and other
//! text classification) and token streams (language models). Behind the cargo feature `text`
//! (`kiln = { version = "0.1", features = ["text"] }`).
//!
//! A sentiment classifier's data, from a CSV file to batches:
//!
//! ```
//! use kiln_runtime::text::{LabelledText, TextCsvOptions, Tokenizer, Vocab};
//!
//! # fn main() -> kiln_runtime::Result<()> {
//! let path = std::env::temp_dir().join(format!("kiln-doc-text-{}.csv", std::process::id()));
//! std::fs::write(
//!     &path,
//!     "label,text\npos,\"Great, really great!\"\nneg,awful\npos,lovely\nneg,\"bad, bad\"\n",
//! )
//! .expect("temp dir is writable");
//! let data = LabelledText::read_csv(&path, &TextCsvOptions::default())?;
//! assert_eq!(data.classes(), ["pos", "neg"]);
//! let split = data.split(0.5, 0.25, 42);
//! let vocab = Vocab::builder(Tokenizer::Words).lowercase(true).build(split.train.texts());
//! let train = split.train.encode(&vocab);
//! for batch in train.loader(2).shuffle(7).epoch(0) {
//!     assert_eq!(batch.tokens.nrows(), batch.labels.len());
//!     // model.loss_and_grad(&batch.tokens, &batch.lengths, &batch.labels, ...)
//! }
//! # std::fs::remove_file(&path).ok();
//! # Ok(())
//! # }
//! ```
//!
//! Ids are `usize`, ready for a model's `tokens` input; `<pad>` is always id 0 and `<unk>`
//! id 1.

mod batch;
mod csv_scan;
mod encoder;
mod hf;
mod labelled;
mod sources;
mod stream;
mod tokenize;
mod tsv;
mod vocab;

pub use batch::{pad_batch, pad_batch_fixed};
pub use encoder::TextEncoder;
pub use hf::{Encoding, HfTokenizer, PairEncoding};
pub use labelled::{
    ClassOrder, Column, EncodedText, LabelKind, LabelledText, Skipped, SkippedRow, Splits,
    TextBatch, TextCsvOptions, TextEpoch, TextLoader,
};
pub use sources::{LmWindows, TextBatches};
pub use stream::{TokenStream, WindowSampler, Windows};
pub use tokenize::{Tokenizer, Tokens};
pub use tsv::{read_tsv, Tsv};
pub use vocab::{Vocab, VocabBuilder, PAD_TOKEN, UNK_TOKEN};
