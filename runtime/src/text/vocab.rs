//! [`Vocab`]: token ↔ id maps with `<pad>` = 0 and `<unk>` = 1, built from texts, saved as
//! JSON.

use super::tokenize::{is_lowercase, push_lowercase, Tokenizer};
use crate::{Error, Result};
use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;
use unicode_normalization::{is_nfc, UnicodeNormalization};

/// The padding token; always id [`Vocab::PAD`] = 0.
pub const PAD_TOKEN: &str = "<pad>";
/// The unknown-token token; always id [`Vocab::UNK`] = 1.
pub const UNK_TOKEN: &str = "<unk>";

/// Lowercased tokens up to this many bytes are looked up without allocating.
const STACK_TOKEN_BYTES: usize = 128;

/// A vocabulary: the tokenizer, whether text is lowercased and normalized, and the tokens by
/// id.
///
/// Text is put in Unicode normalization form C (NFC) before it is cut into tokens, when
/// building and when encoding (unless built with [`VocabBuilder::nfc`]`(false)`): so `café`
/// with a precomposed `é` and `cafe` + combining acute accent are one token, and for
/// [`Tokenizer::Chars`], `e` + combining accent is the one character `é`, as a reader sees
/// it. Decoding gives the NFC form of the text.
///
/// Ids `0..specials` are the special tokens: `<pad>` (0), `<unk>` (1), then the extra ones
/// given at build time (`<bos>`, `<eos>`, ...). The other tokens follow, most frequent first,
/// ties in lexicographic (byte) order, so the same texts always give the same ids whatever
/// their order.
///
/// ```
/// use kiln_runtime::text::{Tokenizer, Vocab};
/// let texts = ["the cat sat", "The dog sat!", "a cat"];
/// let vocab = Vocab::builder(Tokenizer::Words).lowercase(true).min_freq(2).build(texts);
/// // <pad>, <unk>, then "cat", "sat", "the" (each seen twice, in lexicographic order).
/// assert_eq!(vocab.len(), 5);
/// assert_eq!(vocab.encode("The cat barked"), [4, 2, Vocab::UNK]);
/// assert_eq!(vocab.decode(&[4, 2, 3, 0, 0]), "the cat sat");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vocab {
    tokenizer: Tokenizer,
    lowercase: bool,
    nfc: bool,
    specials: usize,
    tokens: Vec<String>,
    ids: HashMap<String, usize>,
    /// The longest token in bytes: a longer (lowercased) token cannot be in the vocabulary.
    max_token_bytes: usize,
}

/// Builds a [`Vocab`] from texts; made by [`Vocab::builder`].
#[derive(Clone, Debug)]
pub struct VocabBuilder {
    tokenizer: Tokenizer,
    lowercase: bool,
    nfc: bool,
    min_freq: usize,
    max_size: Option<usize>,
    specials: Vec<String>,
}

impl VocabBuilder {
    /// Lowercase every token (character by character, `char::to_lowercase`) when building and
    /// when encoding. Default: `false`.
    pub fn lowercase(mut self, lowercase: bool) -> Self {
        self.lowercase = lowercase;
        self
    }

    /// Put text in Unicode normalization form C (NFC) before cutting it into tokens, when
    /// building and when encoding, so that canonically equivalent texts (a precomposed `é`,
    /// or `e` + combining acute accent) give the same tokens. Default: `true`. Turn it off
    /// only to keep text exactly as written (a character model of non-NFC text that must
    /// reproduce it byte for byte).
    pub fn nfc(mut self, nfc: bool) -> Self {
        self.nfc = nfc;
        self
    }

    /// Keep only tokens seen at least `min_freq` times. Default: 1 (every token).
    pub fn min_freq(mut self, min_freq: usize) -> Self {
        self.min_freq = min_freq;
        self
    }

    /// At most `max_size` ids in all, special tokens included, as Keras's
    /// `TextVectorization(max_tokens=...)` and torchtext's `build_vocab_from_iterator(...,
    /// max_tokens=...)` count them: `max_size(3)` keeps `<pad>`, `<unk>` and the most
    /// frequent token. `max_size(2)` leaves only `<pad>` and `<unk>` (as Keras does; torchtext
    /// refuses it). Default: no limit.
    ///
    /// # Panics
    /// If `max_size` is below 2, or, in [`VocabBuilder::build`], below the number of special
    /// tokens with the extra ones: they always have ids, so no vocabulary has fewer (as
    /// Keras refuses `max_tokens` below 2).
    pub fn max_size(mut self, max_size: usize) -> Self {
        assert!(
            max_size >= 2,
            "max_size {max_size} leaves no room for <pad> and <unk>, which every vocabulary \
             has: it must be at least 2"
        );
        self.max_size = Some(max_size);
        self
    }

    /// Extra special tokens after `<pad>` and `<unk>`, with ids 2, 3, ... in the order given
    /// (`&["<bos>", "<eos>"]`). They are never produced by encoding text and are skipped by
    /// decoding.
    ///
    /// # Panics
    /// If a name is empty, repeated, or `<pad>`/`<unk>` (a bug in the calling code).
    pub fn specials(mut self, specials: &[&str]) -> Self {
        for (i, &name) in specials.iter().enumerate() {
            assert!(!name.is_empty(), "special tokens must not be empty");
            assert!(
                name != PAD_TOKEN && name != UNK_TOKEN,
                "`{name}` is always a special token (ids 0 and 1); list only the extra ones"
            );
            assert!(
                !specials[..i].contains(&name),
                "special token `{name}` is listed twice"
            );
        }
        self.specials = specials.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Counts the tokens of `texts` and builds the vocabulary.
    ///
    /// # Panics
    /// If [`VocabBuilder::max_size`] is below the number of special tokens.
    pub fn build<I>(self, texts: I) -> Vocab
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let mut specials = vec![PAD_TOKEN.to_string(), UNK_TOKEN.to_string()];
        specials.extend(self.specials);
        if let Some(max_size) = self.max_size {
            assert!(
                max_size >= specials.len(),
                "max_size {max_size} leaves no room for the {} special tokens ({}): it must be \
                 at least {}",
                specials.len(),
                specials.join(", "),
                specials.len()
            );
        }
        let mut counts: HashMap<String, usize> = HashMap::new();
        let mut lower = String::new();
        for text in texts {
            let text = normalized(text.as_ref(), self.nfc);
            for token in self.tokenizer.tokenize(&text) {
                let token = if self.lowercase && !is_lowercase(token) {
                    lower.clear();
                    push_lowercase_nfc(token, self.nfc, &mut lower);
                    lower.as_str()
                } else {
                    token
                };
                match counts.get_mut(token) {
                    Some(count) => *count += 1,
                    None => {
                        counts.insert(token.to_string(), 1);
                    }
                }
            }
        }
        let mut counted: Vec<(String, usize)> = counts
            .into_iter()
            .filter(|(token, count)| *count >= self.min_freq && !specials.contains(token))
            .collect();
        counted.sort_unstable_by(|(ta, ca), (tb, cb)| cb.cmp(ca).then_with(|| ta.cmp(tb)));
        if let Some(max_size) = self.max_size {
            counted.truncate(max_size - specials.len());
        }
        let special_count = specials.len();
        let tokens = specials
            .into_iter()
            .chain(counted.into_iter().map(|(token, _)| token))
            .collect();
        Vocab::from_parts(
            self.tokenizer,
            self.lowercase,
            self.nfc,
            special_count,
            tokens,
        )
    }
}

/// `text` in NFC if `nfc` (borrowed if it already is, as most text is).
fn normalized(text: &str, nfc: bool) -> Cow<'_, str> {
    if !nfc || text.is_ascii() || is_nfc(text) {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(text.nfc().collect())
    }
}

/// Appends the lower case of `token` to `out`, put back in NFC if `nfc`: lowercasing can
/// undo it (`W` + combining ring above has no precomposed form, `w` + ring above has, `ẘ`).
fn push_lowercase_nfc(token: &str, nfc: bool, out: &mut String) {
    let start = out.len();
    push_lowercase(token, out);
    if nfc && !is_nfc(&out[start..]) {
        let composed: String = out[start..].nfc().collect();
        out.truncate(start);
        out.push_str(&composed);
    }
}

impl Vocab {
    /// The id of `<pad>`, which padding fills sequences with.
    pub const PAD: usize = 0;
    /// The id of `<unk>`, which encoding gives tokens not in the vocabulary.
    pub const UNK: usize = 1;

    /// A builder with `tokenizer`, no lowercasing, NFC normalization, `min_freq` 1, no size
    /// limit and no extra special tokens.
    pub fn builder(tokenizer: Tokenizer) -> VocabBuilder {
        VocabBuilder {
            tokenizer,
            lowercase: false,
            nfc: true,
            min_freq: 1,
            max_size: None,
            specials: Vec::new(),
        }
    }

    /// The vocabulary of `tokens` (ids in order); the first `specials` are special. The
    /// caller guarantees `<pad>`, `<unk>` first and no duplicates.
    fn from_parts(
        tokenizer: Tokenizer,
        lowercase: bool,
        nfc: bool,
        specials: usize,
        tokens: Vec<String>,
    ) -> Vocab {
        let ids = tokens
            .iter()
            .enumerate()
            .map(|(id, token)| (token.clone(), id))
            .collect();
        let max_token_bytes = tokens.iter().map(String::len).max().unwrap_or(0);
        Vocab {
            tokenizer,
            lowercase,
            nfc,
            specials,
            tokens,
            ids,
            max_token_bytes,
        }
    }

    /// The number of ids (special tokens included): a model's embedding size.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Always `false`: a vocabulary holds at least `<pad>` and `<unk>`.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The tokenizer texts are cut with.
    pub fn tokenizer(&self) -> Tokenizer {
        self.tokenizer
    }

    /// Whether tokens are lowercased before lookup.
    pub fn lowercases(&self) -> bool {
        self.lowercase
    }

    /// Whether text is put in Unicode normalization form C before it is cut into tokens (see
    /// [`VocabBuilder::nfc`]). Vocabularies saved before kiln normalized text load with
    /// `false`, and encode as they did.
    pub fn nfc(&self) -> bool {
        self.nfc
    }

    /// The special tokens, by id (`<pad>`, `<unk>`, then the extra ones).
    pub fn specials(&self) -> &[String] {
        &self.tokens[..self.specials]
    }

    /// The tokens, by id.
    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    /// The id of `token` exactly as given (no tokenizing, lowercasing or normalization),
    /// special tokens included: `vocab.id("<bos>")`.
    pub fn id(&self, token: &str) -> Option<usize> {
        self.ids.get(token).copied()
    }

    /// The token with id `id`.
    pub fn token(&self, id: usize) -> Option<&str> {
        self.tokens.get(id).map(String::as_str)
    }

    /// The ids of `text`'s tokens; tokens not in the vocabulary are [`Vocab::UNK`].
    pub fn encode(&self, text: &str) -> Vec<usize> {
        let mut ids = Vec::new();
        self.encode_into(text, &mut ids);
        ids
    }

    /// Appends the ids of `text`'s tokens to `ids`. Allocates nothing once `ids` has the
    /// capacity: lowercased tokens are built on the stack (unless the vocabulary has tokens
    /// longer than 128 bytes), and a text already in NFC, as most text is, is read as it is
    /// (another is normalized into a new string first).
    pub fn encode_into(&self, text: &str, ids: &mut Vec<usize>) {
        let text = normalized(text, self.nfc);
        for token in self.tokenizer.tokenize(&text) {
            ids.push(self.lookup(token));
        }
    }

    /// The id of one token from the tokenizer, lowercased if the vocabulary is.
    fn lookup(&self, token: &str) -> usize {
        if !self.lowercase || is_lowercase(token) {
            return self.id(token).unwrap_or(Self::UNK);
        }
        let mut buffer = [0u8; STACK_TOKEN_BYTES];
        let mut len = 0;
        for lower in token.chars().flat_map(char::to_lowercase) {
            let width = lower.len_utf8();
            if len + width > STACK_TOKEN_BYTES {
                if self.max_token_bytes <= STACK_TOKEN_BYTES {
                    // Longer than every token in the vocabulary.
                    return Self::UNK;
                }
                let mut owned = String::new();
                push_lowercase_nfc(token, self.nfc, &mut owned);
                return self.id(&owned).unwrap_or(Self::UNK);
            }
            lower.encode_utf8(&mut buffer[len..]);
            len += width;
        }
        match std::str::from_utf8(&buffer[..len]) {
            Ok(lower) if self.nfc && !is_nfc(lower) => {
                let composed: String = lower.nfc().collect();
                self.id(&composed).unwrap_or(Self::UNK)
            }
            Ok(lower) => self.id(lower).unwrap_or(Self::UNK),
            Err(_) => Self::UNK,
        }
    }

    /// The text of `ids`: word tokens joined with single spaces, character and grapheme
    /// tokens concatenated; special tokens (`<pad>`, `<unk>`, `<bos>`, ...) are skipped.
    ///
    /// # Panics
    /// If an id is not below [`Vocab::len`] (ids come from this vocabulary or from a model
    /// whose output size is its length).
    pub fn decode(&self, ids: &[usize]) -> String {
        let mut text = String::new();
        self.decode_into(ids, &mut text);
        text
    }

    /// Appends the text of `ids` to `text` (see [`Vocab::decode`]); a separator is put
    /// between these tokens only, not before the first.
    ///
    /// # Panics
    /// As [`Vocab::decode`].
    pub fn decode_into(&self, ids: &[usize], text: &mut String) {
        let separator = self.tokenizer.separator();
        let mut first = true;
        for &id in ids {
            assert!(
                id < self.tokens.len(),
                "token id {id} is out of range for a vocabulary of {}",
                self.tokens.len()
            );
            if id < self.specials {
                continue;
            }
            if !first {
                text.push_str(separator);
            }
            first = false;
            text.push_str(&self.tokens[id]);
        }
    }

    /// The vocabulary as JSON: `{"version": 1, "tokenizer": "words", "lowercase": true,
    /// "nfc": true, "specials": 2, "tokens": {"<pad>": 0, "<unk>": 1, "the": 2, ...}}`, one
    /// token a line.
    pub fn to_json(&self) -> String {
        let file = VocabFile {
            version: FORMAT_VERSION,
            tokenizer: self.tokenizer,
            lowercase: self.lowercase,
            nfc: self.nfc,
            specials: self.specials,
            tokens: TokenMap(
                self.tokens
                    .iter()
                    .enumerate()
                    .map(|(id, t)| (t.clone(), id))
                    .collect(),
            ),
        };
        // Serializing strings, numbers and a map with string keys cannot fail.
        serde_json::to_string_pretty(&file).unwrap_or_default()
    }

    /// Reads a vocabulary from [`Vocab::to_json`]'s format; errors name the file `<string>`.
    ///
    /// # Errors
    /// As [`Vocab::load`].
    pub fn from_json(json: &str) -> Result<Vocab> {
        Self::parse(json.as_bytes(), Path::new("<string>"))
    }

    /// Saves the vocabulary as JSON (see [`Vocab::to_json`]) at `path`, atomically (through
    /// `<path>.tmp` and a rename, like the weights).
    ///
    /// ```
    /// use kiln_runtime::text::{Tokenizer, Vocab};
    /// # fn main() -> kiln_runtime::Result<()> {
    /// let vocab = Vocab::builder(Tokenizer::Chars).specials(&["<bos>"]).build(["hello"]);
    /// let path = std::env::temp_dir().join(format!("kiln-doc-vocab-{}.json", std::process::id()));
    /// vocab.save(&path)?;
    /// assert_eq!(Vocab::load(&path)?, vocab);
    /// # std::fs::remove_file(&path).ok();
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be written.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let mut json = self.to_json();
        json.push('\n');
        crate::io::write_atomically(path.as_ref(), json.as_bytes())
    }

    /// Loads a vocabulary saved by [`Vocab::save`].
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be read; [`Error::File`] naming the line and column
    /// if it is not such a vocabulary: malformed JSON, a missing field or one of the wrong
    /// type, an unknown tokenizer or version, a token listed twice, two tokens with one id,
    /// ids that are not exactly `0..n`, `<pad>` and `<unk>` not at ids 0 and 1, a special
    /// count outside `2..=n`, or a token (other than a special one) that no text could be
    /// encoded to: one not in lower case in a vocabulary that lowercases, or not in NFC in
    /// one that normalizes. (The checks on the token map report the position of the map's
    /// end, and name the token at fault.) A file without the `nfc` field (saved before kiln
    /// normalized text) loads as a vocabulary that does not normalize.
    pub fn load(path: impl AsRef<Path>) -> Result<Vocab> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&bytes, path)
    }

    fn parse(bytes: &[u8], path: &Path) -> Result<Vocab> {
        let file: VocabFile = serde_json::from_slice(bytes).map_err(|e| {
            let message = e.to_string();
            // serde_json appends " at line L column C"; it is put first here instead.
            let message = match message.rfind(" at line ") {
                Some(at) if e.line() > 0 => &message[..at],
                _ => &message,
            };
            Error::file(
                path,
                format!("line {}, column {}: {message}", e.line(), e.column()),
            )
        })?;
        if file.version != FORMAT_VERSION {
            return Err(Error::file(
                path,
                format!(
                    "field `version`: vocabulary format version {} is not supported (this kiln reads {FORMAT_VERSION})",
                    file.version
                ),
            ));
        }
        let tokens = file.tokens.0;
        if file.specials < 2 || file.specials > tokens.len() {
            return Err(Error::file(
                path,
                format!(
                    "`specials` is {}, but it counts <pad> and <unk> and must be 2..={}",
                    file.specials,
                    tokens.len()
                ),
            ));
        }
        let mut by_id = vec![String::new(); tokens.len()];
        for (token, id) in tokens {
            by_id[id] = token;
        }
        // Encoding lowercases and normalizes every token before looking it up: a token that
        // is not lowercase or not NFC would never be found, and its id never produced.
        // (Special tokens are looked up as they are.)
        for (id, token) in by_id.iter().enumerate().skip(file.specials) {
            let unreachable = if file.lowercase && !is_lowercase(token) {
                "not in lower case, but the vocabulary lowercases text (`\"lowercase\": true`)"
            } else if file.nfc && !is_nfc(token) {
                "not in Unicode normalization form C, but the vocabulary normalizes text \
                 (`\"nfc\": true`)"
            } else {
                continue;
            };
            return Err(Error::file(
                path,
                format!(
                    "token `{token}` (id {id}) is {unreachable}, so no text can be encoded to it"
                ),
            ));
        }
        Ok(Vocab::from_parts(
            file.tokenizer,
            file.lowercase,
            file.nfc,
            file.specials,
            by_id,
        ))
    }
}

/// The version written in vocabulary files.
const FORMAT_VERSION: u32 = 1;

/// A vocabulary file's layout.
#[derive(Serialize, Deserialize)]
struct VocabFile {
    version: u32,
    tokenizer: Tokenizer,
    lowercase: bool,
    /// Absent from files saved before kiln normalized text, which encode as they did.
    #[serde(default)]
    nfc: bool,
    specials: usize,
    tokens: TokenMap,
}

/// `{"token": id, ...}` in file order. Deserializing checks it as it goes, so that serde_json
/// reports the position of a duplicate: tokens unique, ids unique and exactly `0..n`, `<pad>`
/// at 0 and `<unk>` at 1.
struct TokenMap(Vec<(String, usize)>);

impl Serialize for TokenMap {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (token, id) in &self.0 {
            map.serialize_entry(token, id)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for TokenMap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        deserializer.deserialize_map(TokenMapVisitor)
    }
}

struct TokenMapVisitor;

impl<'de> Visitor<'de> for TokenMapVisitor {
    type Value = TokenMap;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map from tokens to ids")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<TokenMap, A::Error> {
        let mut entries: Vec<(String, usize)> = Vec::new();
        let mut seen_tokens: HashSet<String> = HashSet::new();
        let mut seen_ids: HashMap<usize, String> = HashMap::new();
        while let Some((token, id)) = map.next_entry::<String, usize>()? {
            if !seen_tokens.insert(token.clone()) {
                return Err(de::Error::custom(format!(
                    "token `{token}` is listed twice"
                )));
            }
            if let Some(other) = seen_ids.insert(id, token.clone()) {
                return Err(de::Error::custom(format!(
                    "tokens `{other}` and `{token}` both have id {id}"
                )));
            }
            entries.push((token, id));
        }
        let n = entries.len();
        if let Some((token, id)) = entries.iter().find(|(_, id)| *id >= n) {
            return Err(de::Error::custom(format!(
                "token `{token}` has id {id}, but {n} tokens must have the ids 0..{n}"
            )));
        }
        for (id, name) in [(Vocab::PAD, PAD_TOKEN), (Vocab::UNK, UNK_TOKEN)] {
            if seen_ids.get(&id).map(String::as_str) != Some(name) {
                return Err(de::Error::custom(format!(
                    "id {id} must be `{name}` (the vocabulary has no `{name}` at {id})"
                )));
            }
        }
        Ok(TokenMap(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_are_lexicographic_and_counts_descend() {
        let vocab = Vocab::builder(Tokenizer::Words).build(["b a c b", "c b d"]);
        assert_eq!(vocab.tokens()[2..], ["b", "c", "a", "d"]);
        // Same texts in another order: same ids.
        let again = Vocab::builder(Tokenizer::Words).build(["c b d", "b a c b"]);
        assert_eq!(again, vocab);
    }

    #[test]
    fn lowercased_tokens_are_lowercase_and_nfc() {
        // What `Vocab::load` checks a normalizing, lowercasing vocabulary's tokens for: every
        // character, composed or decomposed, lowercases to text that passes.
        let mut out = String::new();
        for c in (0..=u32::from(char::MAX)).filter_map(char::from_u32) {
            let decomposed: String = c.to_string().nfd().collect();
            for token in [c.to_string(), decomposed] {
                let token = normalized(&token, true);
                out.clear();
                push_lowercase_nfc(&token, true, &mut out);
                assert!(is_lowercase(&out) && is_nfc(&out), "{c:?} gives {out:?}");
            }
        }
    }

    #[test]
    fn long_lowercased_tokens_fall_back_or_are_unknown() {
        let long = "A".repeat(200);
        let vocab = Vocab::builder(Tokenizer::Words)
            .lowercase(true)
            .build([long.as_str()]);
        assert_eq!(vocab.encode(&long), [2]);
        let short = Vocab::builder(Tokenizer::Words)
            .lowercase(true)
            .build(["a"]);
        assert_eq!(short.encode(&long), [Vocab::UNK]);
    }
}
