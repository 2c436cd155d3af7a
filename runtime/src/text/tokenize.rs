//! Tokenizers: text to a sequence of string slices of it, without allocating.

use serde::{Deserialize, Serialize};
use std::str::CharIndices;
use unicode_segmentation::{Graphemes, UWordBounds, UnicodeSegmentation};

/// How a text is cut into tokens.
///
/// * [`Tokenizer::Chars`]: every Unicode scalar value (`char`) is a token, whitespace and
///   newlines included (a character language model must reproduce them).
/// * [`Tokenizer::Graphemes`]: every extended grapheme cluster (what a reader sees as one
///   character: `e` + combining accent, a flag, an emoji with skin tone or ZWJ sequence).
/// * [`Tokenizer::Words`]: Unicode word segmentation (UAX #29, `split_word_bounds`), keeping
///   every segment that is not pure whitespace. So words keep inner apostrophes and periods
///   (`don't`, `U.S`, `3.14`), while punctuation is kept as tokens of one character each
///   (`!!!` is three `!` tokens: sentiment needs them), an emoji is a token (a ZWJ sequence
///   stays one), and a URL falls into its parts (`https`, `:`, `/`, `/`, `t.co`, `/`, `x1`).
///
/// ```
/// use kiln_runtime::text::Tokenizer;
/// let words: Vec<&str> = Tokenizer::Words.tokenize("Don't go!! 😀").collect();
/// assert_eq!(words, ["Don't", "go", "!", "!", "😀"]);
/// let chars: Vec<&str> = Tokenizer::Chars.tokenize("a b").collect();
/// assert_eq!(chars, ["a", " ", "b"]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tokenizer {
    /// One token per Unicode scalar value.
    Chars,
    /// One token per extended grapheme cluster.
    Graphemes,
    /// Unicode words and single punctuation marks; whitespace dropped.
    Words,
}

impl Tokenizer {
    /// The tokens of `text`, in order, as slices of it (no allocation).
    pub fn tokenize<'a>(&self, text: &'a str) -> Tokens<'a> {
        Tokens {
            inner: match self {
                Tokenizer::Chars => Inner::Chars(text, text.char_indices()),
                Tokenizer::Graphemes => Inner::Graphemes(text.graphemes(true)),
                Tokenizer::Words => Inner::Words(text.split_word_bounds()),
            },
        }
    }

    /// The string put between two decoded tokens: a space for words, nothing otherwise.
    pub fn separator(&self) -> &'static str {
        match self {
            Tokenizer::Words => " ",
            Tokenizer::Chars | Tokenizer::Graphemes => "",
        }
    }
}

/// The iterator [`Tokenizer::tokenize`] returns.
#[derive(Clone, Debug)]
pub struct Tokens<'a> {
    inner: Inner<'a>,
}

#[derive(Clone, Debug)]
enum Inner<'a> {
    Chars(&'a str, CharIndices<'a>),
    Graphemes(Graphemes<'a>),
    Words(UWordBounds<'a>),
}

impl<'a> Iterator for Tokens<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        match &mut self.inner {
            Inner::Chars(text, chars) => chars.next().map(|(at, c)| &text[at..at + c.len_utf8()]),
            Inner::Graphemes(graphemes) => graphemes.next(),
            Inner::Words(words) => words.find(|w| !w.chars().all(char::is_whitespace)),
        }
    }
}

/// Appends the lower case of `token` to `out`, character by character (`char::to_lowercase`,
/// so a final `Σ` becomes `σ`, not `ς`: building and encoding use this same rule).
pub(crate) fn push_lowercase(token: &str, out: &mut String) {
    for c in token.chars() {
        out.extend(c.to_lowercase());
    }
}

/// Whether `token` is already its own lower case (then it needs no copy).
pub(crate) fn is_lowercase(token: &str) -> bool {
    token.chars().all(|c| {
        let mut lower = c.to_lowercase();
        lower.next() == Some(c) && lower.next().is_none()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<&str> {
        Tokenizer::Words.tokenize(text).collect()
    }

    #[test]
    fn words_keep_apostrophes_and_punctuation() {
        assert_eq!(
            words("I can't believe it's not butter!!!"),
            ["I", "can't", "believe", "it's", "not", "butter", "!", "!", "!"]
        );
        assert_eq!(words("  \n\t "), Vec::<&str>::new());
        assert_eq!(words("why?"), ["why", "?"]);
    }

    #[test]
    fn words_split_urls_hashtags_and_emoji() {
        assert_eq!(
            words("see https://t.co/x1 #sxsw @bob 😀😀"),
            [
                "see", "https", ":", "/", "/", "t.co", "/", "x1", "#", "sxsw", "@", "bob", "😀",
                "😀"
            ]
        );
        // A ZWJ family and a skin-toned thumb are single tokens.
        assert_eq!(words("👨‍👩‍👧 👍🏽"), ["👨‍👩‍👧", "👍🏽"]);
    }

    #[test]
    fn chars_and_graphemes_differ_on_combining_marks() {
        let text = "e\u{301}!";
        assert_eq!(
            Tokenizer::Chars.tokenize(text).collect::<Vec<_>>(),
            ["e", "\u{301}", "!"]
        );
        assert_eq!(
            Tokenizer::Graphemes.tokenize(text).collect::<Vec<_>>(),
            ["e\u{301}", "!"]
        );
    }

    #[test]
    fn lowercase_is_per_character() {
        let mut out = String::new();
        push_lowercase("ÉTÉ ΣΑΣ", &mut out);
        assert_eq!(out, "été σασ");
        assert!(is_lowercase("été"));
        assert!(!is_lowercase("Été"));
    }

    #[test]
    fn lowercasing_gives_lowercase_for_every_char() {
        // What `Vocab::load` relies on: a lowercasing vocabulary's built tokens pass its
        // check.
        let mut out = String::new();
        for c in (0..=u32::from(char::MAX)).filter_map(char::from_u32) {
            out.clear();
            push_lowercase(c.encode_utf8(&mut [0; 4]), &mut out);
            assert!(is_lowercase(&out), "{c:?} lowercases to {out:?}");
        }
    }
}
