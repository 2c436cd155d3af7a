//! Normalizers: what a `tokenizer.json` does to text before splitting it (Unicode normal
//! forms, lowercasing, stripping accents, BERT's cleaning).

use unicode_normalization::UnicodeNormalization;

use super::json::Node;
use super::unicode::{is_bert_control, is_bert_whitespace, is_cjk, is_mark, is_nonspacing_mark};
use crate::Result;

/// One normalizer of the file's `normalizer` (a `Sequence` holds several).
#[derive(Clone, Debug, PartialEq)]
pub enum Normalizer {
    /// Each in turn.
    Sequence(Vec<Normalizer>),
    /// Unicode normal form D.
    Nfd,
    /// Unicode normal form C.
    Nfc,
    /// Unicode normal form KD.
    Nfkd,
    /// Unicode normal form KC.
    Nfkc,
    /// Every character lowercased on its own (no context, as the reference does).
    Lowercase,
    /// Drops combining marks (after an NFD, that removes accents).
    StripAccents,
    /// BERT's: drop control characters and turn whitespace into spaces, surround CJK
    /// ideographs with spaces, strip accents, lowercase.
    Bert {
        clean_text: bool,
        handle_chinese_chars: bool,
        strip_accents: bool,
        lowercase: bool,
    },
    /// Replaces every occurrence of a literal string.
    Replace { pattern: String, content: String },
    /// Prepends a string to non-empty text.
    Prepend(String),
    /// Removes whitespace at the start, the end or both.
    Strip { left: bool, right: bool },
}

impl Normalizer {
    /// Reads the normalizer at `node`.
    pub fn parse(node: &Node<'_>) -> Result<Self> {
        node.object()?;
        Ok(match node.kind()? {
            "Sequence" => Normalizer::Sequence(
                node.member("normalizers")?
                    .elements()?
                    .iter()
                    .map(Normalizer::parse)
                    .collect::<Result<_>>()?,
            ),
            "NFD" => Normalizer::Nfd,
            "NFC" => Normalizer::Nfc,
            "NFKD" => Normalizer::Nfkd,
            "NFKC" => Normalizer::Nfkc,
            "Lowercase" => Normalizer::Lowercase,
            "StripAccents" => Normalizer::StripAccents,
            "BertNormalizer" => {
                let lowercase = node.bool_or("lowercase", true)?;
                Normalizer::Bert {
                    clean_text: node.bool_or("clean_text", true)?,
                    handle_chinese_chars: node.bool_or("handle_chinese_chars", true)?,
                    // Unset means: as `lowercase` (BERT's uncased models strip accents).
                    strip_accents: node.opt_bool("strip_accents")?.unwrap_or(lowercase),
                    lowercase,
                }
            }
            "Replace" => Normalizer::Replace {
                pattern: node.literal_pattern()?,
                content: node.str("content")?.to_string(),
            },
            "Prepend" => Normalizer::Prepend(node.str("prepend")?.to_string()),
            "Strip" => Normalizer::Strip {
                left: node.bool_or("strip_left", true)?,
                right: node.bool_or("strip_right", true)?,
            },
            other => {
                return Err(node.error(format!(
                    "normalizer `{other}` is not supported (supported: Sequence, NFD, NFC, \
                     NFKD, NFKC, Lowercase, StripAccents, BertNormalizer, Replace with a \
                     literal pattern, Prepend, Strip)"
                )))
            }
        })
    }

    /// `text` normalized.
    pub fn apply(&self, text: &str) -> String {
        match self {
            Normalizer::Sequence(all) => {
                all.iter().fold(text.to_string(), |text, n| n.apply(&text))
            }
            Normalizer::Nfd => text.nfd().collect(),
            Normalizer::Nfc => text.nfc().collect(),
            Normalizer::Nfkd => text.nfkd().collect(),
            Normalizer::Nfkc => text.nfkc().collect(),
            Normalizer::Lowercase => lowercase(text),
            Normalizer::StripAccents => text.chars().filter(|&c| !is_mark(c)).collect(),
            Normalizer::Bert {
                clean_text,
                handle_chinese_chars,
                strip_accents,
                lowercase: lower,
            } => {
                let mut out = String::with_capacity(text.len());
                for c in text.chars() {
                    if *clean_text {
                        if c == '\0' || c == '\u{FFFD}' || is_bert_control(c) {
                            continue;
                        }
                        if is_bert_whitespace(c) {
                            out.push(' ');
                            continue;
                        }
                    }
                    if *handle_chinese_chars && is_cjk(c) {
                        out.push(' ');
                        out.push(c);
                        out.push(' ');
                    } else {
                        out.push(c);
                    }
                }
                if *strip_accents {
                    out = out.nfd().filter(|&c| !is_nonspacing_mark(c)).collect();
                }
                if *lower {
                    out = lowercase(&out);
                }
                out
            }
            Normalizer::Replace { pattern, content } => {
                if pattern.is_empty() {
                    text.to_string()
                } else {
                    text.replace(pattern.as_str(), content)
                }
            }
            Normalizer::Prepend(prefix) => {
                if text.is_empty() {
                    String::new()
                } else {
                    format!("{prefix}{text}")
                }
            }
            Normalizer::Strip { left, right } => {
                let mut t = text;
                if *left {
                    t = t.trim_start();
                }
                if *right {
                    t = t.trim_end();
                }
                t.to_string()
            }
        }
    }
}

/// Lowercases character by character (`Σ` is always `σ`, never the final `ς`).
fn lowercase(text: &str) -> String {
    text.chars().flat_map(char::to_lowercase).collect()
}
