//! Decoders: how a `tokenizer.json` turns tokens back into text (GPT-2's bytes, WordPiece's
//! `##` continuations, SentencePiece's `▁` and byte tokens).
//!
//! As in the reference, each decoder maps the list of tokens to a new list (a chain), and the
//! text is the final list joined without separators.

use super::byte_level::char_byte;
use super::json::Node;
use crate::Result;

/// The file's `decoder` (none: tokens joined by spaces).
#[derive(Clone, Debug, PartialEq)]
pub enum Decoder {
    /// Each in turn.
    Sequence(Vec<Decoder>),
    /// Every character back to the byte it stands for; the bytes as UTF-8 (invalid sequences
    /// as `U+FFFD`), one string.
    ByteLevel,
    /// Continuations (`##ing`) glued to the token before, other tokens after a space; with
    /// `cleanup`, no space before punctuation and English contractions.
    WordPiece { prefix: String, cleanup: bool },
    /// Replaces a literal string in every token.
    Replace { pattern: String, content: String },
    /// Runs of `<0xXX>` tokens as the UTF-8 text of their bytes (one `U+FFFD` per byte if
    /// they are not valid UTF-8).
    ByteFallback,
    /// All tokens as one.
    Fuse,
    /// Removes up to `start` leading and `stop` trailing `content` characters of every token.
    Strip {
        content: char,
        start: usize,
        stop: usize,
    },
    /// `▁` back to spaces, less the one the pre-tokenizer put before the first word.
    Metaspace { replacement: char, prepended: bool },
}

impl Decoder {
    /// Reads the decoder at `node`.
    pub fn parse(node: &Node<'_>) -> Result<Self> {
        node.object()?;
        Ok(match node.kind()? {
            "Sequence" => Decoder::Sequence(
                node.member("decoders")?
                    .elements()?
                    .iter()
                    .map(Decoder::parse)
                    .collect::<Result<_>>()?,
            ),
            "ByteLevel" => Decoder::ByteLevel,
            "WordPiece" => Decoder::WordPiece {
                prefix: node.opt_str("prefix")?.unwrap_or("##").to_string(),
                cleanup: node.bool_or("cleanup", true)?,
            },
            "Replace" => Decoder::Replace {
                pattern: node.literal_pattern()?,
                content: node.str("content")?.to_string(),
            },
            "ByteFallback" => Decoder::ByteFallback,
            "Fuse" => Decoder::Fuse,
            "Strip" => Decoder::Strip {
                content: node.single_char("content")?,
                start: node.count_or("start", 0)?,
                stop: node.count_or("stop", 0)?,
            },
            "Metaspace" => Decoder::Metaspace {
                replacement: node.single_char("replacement")?,
                prepended: super::pre_tokenize::prepend_scheme(node)? != "never",
            },
            other => {
                return Err(node.error(format!(
                    "decoder `{other}` is not supported (supported: Sequence, ByteLevel, \
                     WordPiece, Replace with a literal pattern, ByteFallback, Fuse, Strip, \
                     Metaspace)"
                )))
            }
        })
    }

    /// The text of `tokens`.
    pub fn decode(&self, tokens: &[&str]) -> String {
        let tokens = tokens.iter().map(|t| t.to_string()).collect();
        self.chain(tokens).concat()
    }

    fn chain(&self, tokens: Vec<String>) -> Vec<String> {
        match self {
            Decoder::Sequence(all) => all.iter().fold(tokens, |tokens, d| d.chain(tokens)),
            Decoder::ByteLevel => {
                let mut bytes = Vec::new();
                for token in &tokens {
                    // A token outside the byte alphabet (an added token such as `<|im_end|>`
                    // with other characters) stands for its own UTF-8.
                    let mapped: Option<Vec<u8>> = token.chars().map(char_byte).collect();
                    match mapped {
                        Some(mapped) => bytes.extend(mapped),
                        None => bytes.extend_from_slice(token.as_bytes()),
                    }
                }
                vec![String::from_utf8_lossy(&bytes).into_owned()]
            }
            Decoder::WordPiece { prefix, cleanup } => tokens
                .into_iter()
                .enumerate()
                .map(|(i, token)| {
                    let piece = if i == 0 {
                        token
                    } else if let Some(rest) = token.strip_prefix(prefix.as_str()) {
                        rest.to_string()
                    } else {
                        format!(" {token}")
                    };
                    if *cleanup {
                        clean_up(&piece)
                    } else {
                        piece
                    }
                })
                .collect(),
            Decoder::Replace { pattern, content } => tokens
                .into_iter()
                .map(|t| {
                    if pattern.is_empty() {
                        t
                    } else {
                        t.replace(pattern.as_str(), content)
                    }
                })
                .collect(),
            Decoder::ByteFallback => {
                let mut out = Vec::with_capacity(tokens.len());
                let mut bytes = Vec::new();
                let flush = |bytes: &mut Vec<u8>, out: &mut Vec<String>| {
                    if bytes.is_empty() {
                        return;
                    }
                    match String::from_utf8(std::mem::take(bytes)) {
                        Ok(text) => out.push(text),
                        Err(e) => {
                            let n = e.as_bytes().len();
                            out.extend(std::iter::repeat_n("\u{FFFD}".to_string(), n));
                        }
                    }
                };
                for token in tokens {
                    match byte_token(&token) {
                        Some(b) => bytes.push(b),
                        None => {
                            flush(&mut bytes, &mut out);
                            out.push(token);
                        }
                    }
                }
                flush(&mut bytes, &mut out);
                out
            }
            Decoder::Fuse => vec![tokens.concat()],
            Decoder::Strip {
                content,
                start,
                stop,
            } => tokens
                .into_iter()
                .map(|token| {
                    let chars: Vec<char> = token.chars().collect();
                    let from = chars
                        .iter()
                        .take(*start)
                        .take_while(|&&c| c == *content)
                        .count();
                    let cut = chars[from..]
                        .iter()
                        .rev()
                        .take(*stop)
                        .take_while(|&&c| c == *content)
                        .count();
                    chars[from..chars.len() - cut].iter().collect()
                })
                .collect(),
            Decoder::Metaspace {
                replacement,
                prepended,
            } => tokens
                .into_iter()
                .enumerate()
                .map(|(i, token)| {
                    token
                        .chars()
                        .filter_map(|c| {
                            if c != *replacement {
                                Some(c)
                            } else if i == 0 && *prepended {
                                None
                            } else {
                                Some(' ')
                            }
                        })
                        .collect()
                })
                .collect(),
        }
    }
}

/// The byte of a `<0xXX>` token.
fn byte_token(token: &str) -> Option<u8> {
    let hex = token.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
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
