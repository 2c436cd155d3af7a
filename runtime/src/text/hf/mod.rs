//! Hugging Face `tokenizer.json` files: encode text to the ids a pretrained model expects, and
//! decode ids back, as the `tokenizers` library does. The pipeline parts are one module each;
//! [`HfTokenizer`] reads a file and runs them.

mod added;
mod byte_level;
mod decode;
mod json;
mod lengths;
mod models;
mod normalize;
mod patterns;
mod post_process;
mod pre_tokenize;
mod precompiled;
mod unicode;
mod unigram;

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::path::Path;

use added::{AddedToken, Matcher, Part};
use decode::Decoder;
use json::Node;
use lengths::{Padding, Truncation};
use models::{Model, Unknown};
use normalize::Normalizer;
use post_process::{concatenate, Encoded, PostProcessor};
use pre_tokenize::PreTokenizer;

use crate::{Error, Result};

/// A tokenizer read from a Hugging Face `tokenizer.json`: encodes text to the ids a pretrained
/// model expects and decodes ids back, as the `tokenizers` library does.
///
/// [`HfTokenizer::from_file`] reads the file a model's Hub page ships (`tokenizer.json`) and
/// runs its pipeline: added tokens, normalizer, pre-tokenizer, model, post-processor, and the
/// decoder for the way back. Supported are the pipelines of the GPT-2, RoBERTa, BERT, Llama 2 /
/// Mistral (SentencePiece BPE), Llama 3, Qwen 2 and 3.5, GPT-4o / Llama 4 (`o200k`), Mistral
/// NeMo (Tekken), DeepSeek V3 and BLOOM families, the SentencePiece unigram models of T5,
/// ALBERT and XLM-RoBERTa, and word-level vocabularies:
///
/// | part | supported `type`s |
/// |---|---|
/// | `model` | `BPE` (with merges as `"a b"` or `["a", "b"]`, byte fallback, unknown token), `WordPiece`, `WordLevel`, `Unigram` (unknown token, byte fallback) |
/// | `normalizer` | `Sequence`, `NFD`, `NFC`, `NFKD`, `NFKC`, `Lowercase`, `StripAccents`, `BertNormalizer`, `Replace` (a literal pattern, or the regular expressions ` {2,}`, `\A +\| +\z` and `\A▁` of the SentencePiece converters), `Prepend`, `Strip`, `Precompiled` (SentencePiece's compiled character map) |
/// | `pre_tokenizer` | `Sequence`, `ByteLevel`, `BertPreTokenizer`, `Whitespace`, `WhitespaceSplit`, `Digits`, `Metaspace`, `Punctuation`, `Split` (a literal pattern, or the regular expression of GPT-2, Llama 3 (`cl100k`), Qwen 2, Qwen 3.5, GPT-4o / Llama 4 (`o200k`), Mistral's Tekken, DeepSeek V3's three or BLOOM's; every `behavior`, `invert`) |
/// | `post_processor` | `TemplateProcessing`, `BertProcessing`, `RobertaProcessing`, `ByteLevel` |
/// | `decoder` | `Sequence`, `ByteLevel`, `WordPiece`, `Replace` (literal pattern), `ByteFallback`, `Fuse`, `Strip`, `Metaspace` (none: tokens joined by spaces) |
///
/// Anything else (another model type, other regular expressions) is an [`Error::File`] naming
/// the file and the place in it, never a silently different encoding.
///
/// The file's `truncation` and `padding` (what `enable_truncation` and `enable_padding` save)
/// apply to [`HfTokenizer::encoding`], [`HfTokenizer::encoding_pair`] and
/// [`HfTokenizer::encode_batch`], as to the library's `encode` and `encode_batch`.
/// [`HfTokenizer::encode`] and [`HfTokenizer::encode_pair`], and the data sets' encoders,
/// give the ids of the whole text, as the library does with both disabled: kiln's loaders pad
/// and cut batches themselves ([`crate::text::pad_batch`], a loader's `max_len`).
///
/// ```
/// use kiln_runtime::text::{HfTokenizer, TokenStream};
///
/// # fn main() -> kiln_runtime::Result<()> {
/// let json = r#"{
///   "added_tokens": [{"id": 0, "content": "[UNK]", "special": true}],
///   "normalizer": {"type": "Lowercase"},
///   "pre_tokenizer": {"type": "Whitespace"},
///   "model": {"type": "WordLevel", "unk_token": "[UNK]",
///             "vocab": {"[UNK]": 0, "it": 1, "is": 2, "a": 3, "truth": 4}}
/// }"#;
/// let tokenizer = HfTokenizer::from_json(json)?;
/// assert_eq!(tokenizer.encode("It is a TRUTH universally", true), [1, 2, 3, 4, 0]);
/// assert_eq!(tokenizer.decode(&[1, 2, 3, 4], false), "it is a truth");
/// // A language model's token stream:
/// let stream = TokenStream::new(tokenizer.encode("it is a truth", false));
/// assert_eq!(stream.len(), 4);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct HfTokenizer {
    added: Vec<AddedToken>,
    raw_matcher: Matcher,
    normalized_matcher: Matcher,
    normalizer: Option<Normalizer>,
    pre_tokenizer: Option<PreTokenizer>,
    model: Model,
    post_processor: Option<PostProcessor>,
    decoder: Option<Decoder>,
    truncation: Option<Truncation>,
    padding: Option<Padding>,
    /// id → token, the added tokens over the model's.
    tokens: HashMap<u32, String>,
    /// token → id, the added tokens over the model's.
    ids: HashMap<String, u32>,
    special_ids: HashSet<u32>,
}

/// One input as a pretrained model takes it: token ids, their segment ids, and which are
/// real tokens (1) rather than padding (0); all three of one length. What the library's
/// `Encoding` holds as `ids`, `type_ids` and `attention_mask`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoding {
    /// The token ids, special tokens and padding included.
    pub ids: Vec<usize>,
    /// The segment of each id: 0 for the first sequence, 1 for the second (BERT's
    /// `token_type_ids`), the padding's `pad_type_id` for padding.
    pub type_ids: Vec<usize>,
    /// 1 for each token, 0 for each padding id.
    pub attention_mask: Vec<usize>,
}

/// A pair of sequences encoded together (question and context, premise and hypothesis).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairEncoding {
    /// The token ids, special tokens included.
    pub ids: Vec<usize>,
    /// The segment of each id: 0 for the first sequence, 1 for the second (as the
    /// post-processor assigns them; BERT's `token_type_ids`).
    pub type_ids: Vec<usize>,
}

impl HfTokenizer {
    /// Reads a `tokenizer.json`.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be read; [`Error::File`] naming the line and column of
    /// malformed JSON, or the place (`model.merges[12]`) of a missing or mistyped field, an
    /// unsupported component, or a token the vocabulary lacks.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&bytes, path)
    }

    /// Reads a `tokenizer.json` from a string; errors name the file `<string>`.
    ///
    /// # Errors
    /// As [`HfTokenizer::from_file`].
    pub fn from_json(json: &str) -> Result<Self> {
        Self::parse(json.as_bytes(), Path::new("<string>"))
    }

    fn parse(bytes: &[u8], path: &Path) -> Result<Self> {
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
            let message = e.to_string();
            let message = match message.rfind(" at line ") {
                Some(at) if e.line() > 0 => &message[..at],
                _ => message.as_str(),
            };
            Error::file(
                path,
                format!("line {} column {}: {message}", e.line(), e.column()),
            )
        })?;
        let root = Node::root(&value, path);
        root.object()?;
        let added = match root.opt_member("added_tokens") {
            Some(list) => list
                .elements()?
                .iter()
                .map(AddedToken::parse)
                .collect::<Result<Vec<_>>>()?,
            None => Vec::new(),
        };
        let model = Model::parse(&root.member("model")?)?;
        let normalizer = root.opt_parse("normalizer", Normalizer::parse)?;
        let pre_tokenizer = root.opt_parse("pre_tokenizer", PreTokenizer::parse)?;
        let post_processor = root.opt_parse("post_processor", PostProcessor::parse)?;
        let decoder = root.opt_parse("decoder", Decoder::parse)?;
        let truncation = root.opt_parse("truncation", Truncation::parse)?;
        let padding = root.opt_parse("padding", Padding::parse)?;

        let mut tokens: HashMap<u32, String> = model.tokens().into_iter().collect();
        let mut ids = model.vocab().clone();
        for token in &added {
            tokens.insert(token.id, token.content.clone());
            ids.insert(token.content.clone(), token.id);
        }
        Ok(HfTokenizer {
            raw_matcher: Matcher::new(&added, false),
            normalized_matcher: Matcher::new(&added, true),
            special_ids: added.iter().filter(|t| t.special).map(|t| t.id).collect(),
            added,
            normalizer,
            pre_tokenizer,
            model,
            post_processor,
            decoder,
            truncation,
            padding,
            tokens,
            ids,
        })
    }

    /// The ids of `text`, with the post-processor's special tokens (`[CLS] … [SEP]`) if
    /// `add_special_tokens`, as `tokenizer.encode(text, add_special_tokens=…).ids` gives them
    /// with the file's truncation and padding disabled (see [`HfTokenizer::encoding`] for
    /// them). Text a Unigram model without an unknown token has no piece for is left out,
    /// where the library refuses the whole text ([`HfTokenizer::encoding`] refuses too).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Vec<usize> {
        let a = self.encode_sequence(text, 0, &mut Unknown::default());
        let out = self.post_process(a, None, add_special_tokens);
        out.ids.into_iter().map(|id| id as usize).collect()
    }

    /// `text` as the library's `tokenizer.encode(text, add_special_tokens=…)` encodes it,
    /// with the file's `truncation` and `padding` (a `BatchLongest` padding pads a single
    /// text only up to its `pad_to_multiple_of`).
    ///
    /// ```
    /// use kiln_runtime::text::HfTokenizer;
    ///
    /// # fn main() -> kiln_runtime::Result<()> {
    /// let tokenizer = HfTokenizer::from_json(r#"{
    ///   "truncation": {"direction": "Right", "max_length": 3, "strategy": "LongestFirst", "stride": 0},
    ///   "padding": {"strategy": {"Fixed": 5}, "direction": "Right", "pad_to_multiple_of": null,
    ///               "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"},
    ///   "pre_tokenizer": {"type": "Whitespace"},
    ///   "model": {"type": "WordLevel", "unk_token": "[UNK]",
    ///             "vocab": {"[PAD]": 0, "[UNK]": 1, "it": 2, "is": 3, "a": 4, "truth": 5}}
    /// }"#)?;
    /// let encoding = tokenizer.encoding("it is a truth", true)?;
    /// assert_eq!(encoding.ids, [2, 3, 4, 0, 0]);
    /// assert_eq!(encoding.attention_mask, [1, 1, 1, 0, 0]);
    /// // `encode` keeps the whole text:
    /// assert_eq!(tokenizer.encode("it is a truth", true), [2, 3, 4, 5]);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::Encoding`] where the library refuses: an `OnlySecond` truncation of a single
    /// text longer than `max_length`, a `stride` not below the length it cuts to, or text a
    /// Unigram model without an unknown token has no piece for (which [`HfTokenizer::encode`]
    /// leaves out).
    pub fn encoding(&self, text: &str, add_special_tokens: bool) -> Result<Encoding> {
        let a = self.encode_or_refuse(text, 0)?;
        let encoding = self.limit_and_process(a, None, add_special_tokens)?;
        Ok(self.pad_alone(encoding))
    }

    /// `a` and `b` as one input, as the library's `tokenizer.encode(a, b, …)` encodes them,
    /// with the file's `truncation` and `padding` (see [`HfTokenizer::encoding`]).
    ///
    /// # Errors
    /// [`Error::Encoding`] where the library refuses: an `OnlyFirst` or `OnlySecond`
    /// truncation whose sequence is too short to give up what the pair is over
    /// `max_length`, a `stride` not below the length it cuts to, or text a Unigram model
    /// without an unknown token has no piece for.
    pub fn encoding_pair(&self, a: &str, b: &str, add_special_tokens: bool) -> Result<Encoding> {
        let a = self.encode_or_refuse(a, 0)?;
        let b = self.encode_or_refuse(b, 1)?;
        let encoding = self.limit_and_process(a, Some(b), add_special_tokens)?;
        Ok(self.pad_alone(encoding))
    }

    /// Every text of `texts`, as the library's `tokenizer.encode_batch(texts, …)` encodes
    /// them: each cut by the file's `truncation`, then all padded as its `padding` says (a
    /// `BatchLongest` padding to the longest of the batch), so that they stack into one
    /// `[batch, length]` input.
    ///
    /// # Errors
    /// As [`HfTokenizer::encoding`], for the first text that fails.
    pub fn encode_batch(&self, texts: &[&str], add_special_tokens: bool) -> Result<Vec<Encoding>> {
        let mut encodings = texts
            .iter()
            .map(|text| {
                let a = self.encode_or_refuse(text, 0)?;
                self.limit_and_process(a, None, add_special_tokens)
            })
            .collect::<Result<Vec<_>>>()?;
        if let Some(padding) = &self.padding {
            let longest = encodings.iter().map(|e| e.ids.len()).max().unwrap_or(0);
            let length = padding.length(longest);
            for encoding in &mut encodings {
                padding.pad(encoding, length);
            }
        }
        Ok(encodings)
    }

    /// Two texts encoded as one input (`tokenizer.encode(a, b)`), with their segment ids.
    pub fn encode_pair(&self, a: &str, b: &str, add_special_tokens: bool) -> PairEncoding {
        let a = self.encode_sequence(a, 0, &mut Unknown::default());
        let b = self.encode_sequence(b, 1, &mut Unknown::default());
        let out = self.post_process(a, Some(b), add_special_tokens);
        PairEncoding {
            ids: out.ids.into_iter().map(|id| id as usize).collect(),
            type_ids: out.type_ids.into_iter().map(|id| id as usize).collect(),
        }
    }

    /// The tokens of `text` as strings, without special tokens (for inspection: byte-level
    /// tokens show a space as `Ġ`).
    pub fn tokenize(&self, text: &str) -> Vec<String> {
        let mut unknown = Unknown::default();
        let encoded = self.encode_sequence(text, 0, &mut unknown);
        let mut tokens: Vec<String> = encoded
            .ids
            .iter()
            .map(|id| self.tokens.get(id).cloned().unwrap_or_default())
            .collect();
        for (at, text) in unknown.named {
            tokens[at] = text;
        }
        tokens
    }

    /// The pieces the model tokenizes one by one: `text` normalized and pre-tokenized,
    /// without looking for added tokens (as `pre_tokenizer.pre_tokenize_str(
    /// normalizer.normalize_str(text))` in the reference; byte-level pieces show a space as
    /// `Ġ`).
    pub fn pre_tokenize(&self, text: &str) -> Vec<String> {
        let normalized = self.normalize(text);
        let mut pieces = Vec::new();
        // Empty text has no piece, not even the byte-level prefix space.
        if normalized.is_empty() {
            return pieces;
        }
        match &self.pre_tokenizer {
            Some(pre) => pre.split(&normalized, true, &mut pieces),
            None => pieces.push(normalized.into_owned()),
        }
        pieces
    }

    /// The text of `ids`, leaving out the special tokens if `skip_special_tokens`; ids that
    /// are no token are left out too (as the reference does).
    pub fn decode(&self, ids: &[usize], skip_special_tokens: bool) -> String {
        let tokens: Vec<&str> = ids
            .iter()
            .filter_map(|&id| u32::try_from(id).ok())
            .filter(|id| !(skip_special_tokens && self.special_ids.contains(id)))
            .filter_map(|id| self.tokens.get(&id).map(String::as_str))
            .collect();
        match &self.decoder {
            Some(decoder) => decoder.decode(&tokens),
            None => tokens.join(" "),
        }
    }

    /// The number of ids: one more than the largest id of the vocabulary and the added
    /// tokens (the size of a model's embedding table for this tokenizer).
    pub fn vocab_size(&self) -> usize {
        self.tokens.keys().max().map_or(0, |&id| id as usize + 1)
    }

    /// The id of `token` (an added token or one of the model's).
    pub fn token_to_id(&self, token: &str) -> Option<usize> {
        self.ids.get(token).map(|&id| id as usize)
    }

    /// The token of `id`.
    pub fn id_to_token(&self, id: usize) -> Option<&str> {
        u32::try_from(id)
            .ok()
            .and_then(|id| self.tokens.get(&id))
            .map(String::as_str)
    }

    /// The added tokens that are special (`[CLS]`, `<|endoftext|>`, ...), as (token, id).
    pub fn special_tokens(&self) -> Vec<(&str, usize)> {
        self.added
            .iter()
            .filter(|t| t.special)
            .map(|t| (t.content.as_str(), t.id as usize))
            .collect()
    }

    /// `text` through the normalizer (borrowed as it is without one).
    fn normalize<'t>(&self, text: &'t str) -> Cow<'t, str> {
        self.normalize_keeping_start(text).0
    }

    /// `text` normalized, and whether it still starts where it did (see
    /// [`Normalizer::apply_keeping_start`]).
    fn normalize_keeping_start<'t>(&self, text: &'t str) -> (Cow<'t, str>, bool) {
        match &self.normalizer {
            Some(normalizer) => {
                let (text, kept) = normalizer.apply_keeping_start(text);
                (Cow::Owned(text), kept)
            }
            None => (Cow::Borrowed(text), true),
        }
    }

    /// One sequence through added tokens, normalizer, pre-tokenizer and model: the ids of
    /// `text` (no special tokens), with the tokens the model names by their text in
    /// `unknown` (see [`Model::tokenize`]).
    fn encode_sequence(&self, text: &str, type_id: u32, unknown: &mut Unknown) -> Encoded {
        let mut ids = Vec::new();
        let mut pieces = Vec::new();
        // Whether nothing of the input came before (Metaspace's `prepend_scheme: first`).
        let mut at_start = true;
        for part in self.raw_matcher.split(text) {
            let raw = match part {
                Part::Token(id) => {
                    ids.push(id);
                    at_start = false;
                    continue;
                }
                Part::Text(raw) => raw,
            };
            let (normalized, kept_start) = self.normalize_keeping_start(raw);
            at_start &= kept_start;
            for part in self.normalized_matcher.split(&normalized) {
                let text = match part {
                    Part::Token(id) => {
                        ids.push(id);
                        at_start = false;
                        continue;
                    }
                    Part::Text("") => continue,
                    Part::Text(text) => text,
                };
                pieces.clear();
                match &self.pre_tokenizer {
                    Some(pre) => pre.split(text, at_start, &mut pieces),
                    None => pieces.push(text.to_string()),
                }
                at_start = false;
                for piece in &pieces {
                    self.model.tokenize(piece, &mut ids, unknown);
                }
            }
        }
        let type_ids = vec![type_id; ids.len()];
        Encoded { ids, type_ids }
    }

    /// [`HfTokenizer::encode_sequence`], or the reference's refusal: text a Unigram model
    /// without an unknown token has no piece for.
    fn encode_or_refuse(&self, text: &str, type_id: u32) -> Result<Encoded> {
        let mut unknown = Unknown::default();
        let encoded = self.encode_sequence(text, type_id, &mut unknown);
        match unknown.dropped {
            Some(piece) => Err(Error::Encoding {
                message: format!(
                    "the model has no token for {piece:?} and no unknown token (`unk_id`)"
                ),
            }),
            None => Ok(encoded),
        }
    }

    /// One encoding padded as the file says (a `BatchLongest` padding: to its own length,
    /// rounded up to `pad_to_multiple_of`).
    fn pad_alone(&self, mut encoding: Encoding) -> Encoding {
        if let Some(padding) = &self.padding {
            let length = padding.length(encoding.ids.len());
            padding.pad(&mut encoding, length);
        }
        encoding
    }

    /// `a` (and `b`) cut by the file's truncation, leaving room for the special tokens if
    /// `add_special_tokens`, then post-processed (not padded).
    fn limit_and_process(
        &self,
        mut a: Encoded,
        mut b: Option<Encoded>,
        add_special_tokens: bool,
    ) -> Result<Encoding> {
        if let Some(truncation) = &self.truncation {
            let added = match (&self.post_processor, add_special_tokens) {
                (Some(processor), true) => processor.added_tokens(b.is_some()),
                _ => 0,
            };
            truncation
                .apply(&mut a, b.as_mut(), added)
                .map_err(|message| Error::Encoding {
                    message: format!("truncation: {message}"),
                })?;
        }
        let encoded = self.post_process(a, b, add_special_tokens);
        let widen = |values: Vec<u32>| values.into_iter().map(|v| v as usize).collect();
        Ok(Encoding {
            attention_mask: vec![1; encoded.ids.len()],
            ids: widen(encoded.ids),
            type_ids: widen(encoded.type_ids),
        })
    }

    fn post_process(&self, a: Encoded, b: Option<Encoded>, add_special_tokens: bool) -> Encoded {
        match &self.post_processor {
            Some(processor) => processor.process(a, b, add_special_tokens),
            None => concatenate(a, b),
        }
    }
}
