//! Decoders: how a `tokenizer.json` turns tokens back into text (GPT-2's bytes, WordPiece's
//! `##` continuations).

use super::byte_level::char_byte;
use super::json::Node;
use crate::Result;

/// The file's `decoder` (none: tokens joined by spaces).
#[derive(Clone, Debug, PartialEq)]
pub enum Decoder {
    /// Every character back to the byte it stands for; the bytes as UTF-8 (invalid sequences
    /// as `U+FFFD`).
    ByteLevel,
    /// Continuations (`##ing`) glued to the token before, other tokens after a space; with
    /// `cleanup`, no space before punctuation and English contractions.
    WordPiece { prefix: String, cleanup: bool },
}

impl Decoder {
    /// Reads the decoder at `node`.
    pub fn parse(node: &Node<'_>) -> Result<Self> {
        node.object()?;
        Ok(match node.kind()? {
            "ByteLevel" => Decoder::ByteLevel,
            "WordPiece" => Decoder::WordPiece {
                prefix: node.opt_str("prefix")?.unwrap_or("##").to_string(),
                cleanup: node.bool_or("cleanup", true)?,
            },
            other => {
                return Err(node.error(format!(
                    "decoder `{other}` is not supported (supported: ByteLevel, WordPiece)"
                )))
            }
        })
    }

    /// The text of `tokens`.
    pub fn decode(&self, tokens: &[&str]) -> String {
        match self {
            Decoder::ByteLevel => {
                let mut bytes = Vec::new();
                for token in tokens {
                    // A token outside the byte alphabet (an added token such as `<|im_end|>`
                    // with other characters) stands for its own UTF-8.
                    let mapped: Option<Vec<u8>> = token.chars().map(char_byte).collect();
                    match mapped {
                        Some(mapped) => bytes.extend(mapped),
                        None => bytes.extend_from_slice(token.as_bytes()),
                    }
                }
                String::from_utf8_lossy(&bytes).into_owned()
            }
            Decoder::WordPiece { prefix, cleanup } => {
                let mut text = String::new();
                for (i, token) in tokens.iter().enumerate() {
                    let mut piece = if i == 0 {
                        token.to_string()
                    } else if let Some(rest) = token.strip_prefix(prefix.as_str()) {
                        rest.to_string()
                    } else {
                        format!(" {token}")
                    };
                    if *cleanup {
                        piece = clean_up(&piece);
                    }
                    text.push_str(&piece);
                }
                text
            }
        }
    }
}

/// No space before `.`, `?`, `!`, `,` and in English contractions, as the reference's
/// WordPiece decoder does for each token.
fn clean_up(text: &str) -> String {
    text.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" do not", " don't")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
}
