//! Normalizers: what a `tokenizer.json` does to text before splitting it (Unicode normal
//! forms, lowercasing, stripping accents, BERT's cleaning).

use unicode_normalization::UnicodeNormalization;

use super::json::Node;
use super::precompiled::CharsMap;
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
    /// Replaces every match of a pattern.
    Replace {
        pattern: ReplacePattern,
        content: String,
    },
    /// SentencePiece's compiled normalization rules.
    Precompiled(CharsMap),
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
                pattern: ReplacePattern::parse(node)?,
                content: node.str("content")?.to_string(),
            },
            "Precompiled" => Normalizer::Precompiled(CharsMap::parse(node)?),
            "Prepend" => Normalizer::Prepend(node.str("prepend")?.to_string()),
            "Strip" => Normalizer::Strip {
                left: node.bool_or("strip_left", true)?,
                right: node.bool_or("strip_right", true)?,
            },
            other => {
                return Err(node.error(format!(
                    "normalizer `{other}` is not supported (supported: Sequence, NFD, NFC, \
                     NFKD, NFKC, Lowercase, StripAccents, BertNormalizer, Replace, Prepend, \
                     Strip, Precompiled)"
                )))
            }
        })
    }

    /// `text` normalized, and whether the result still starts where the text did: `false`
    /// when the normalizer deleted the text's first characters (stripped spaces, a removed
    /// control character or mark). The reference tracks this through its offsets, and
    /// Metaspace's `prepend_scheme: first` only prepends its `▁` to a piece that starts at the
    /// text's first byte.
    pub fn apply_keeping_start(&self, text: &str) -> (String, bool) {
        let first = text.chars().next();
        let starts_with_mark = first.is_some_and(is_mark);
        match self {
            Normalizer::Sequence(all) => {
                all.iter()
                    .fold((text.to_string(), true), |(text, kept), n| {
                        let (text, kept_here) = n.apply_keeping_start(&text);
                        (text, kept && kept_here)
                    })
            }
            Normalizer::Nfd => (text.nfd().collect(), true),
            Normalizer::Nfc => (text.nfc().collect(), true),
            Normalizer::Nfkd => (text.nfkd().collect(), true),
            Normalizer::Nfkc => (text.nfkc().collect(), true),
            Normalizer::Lowercase => (lowercase(text), true),
            Normalizer::StripAccents => (
                text.chars().filter(|&c| !is_mark(c)).collect(),
                !starts_with_mark,
            ),
            Normalizer::Bert {
                clean_text,
                handle_chinese_chars,
                strip_accents,
                lowercase: lower,
            } => {
                // What cleaning drops: NUL, the replacement character, control characters.
                let dropped = |c: char| c == '\0' || c == '\u{FFFD}' || is_bert_control(c);
                let mut out = String::with_capacity(text.len());
                for c in text.chars() {
                    if *clean_text {
                        if dropped(c) {
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
                let cleaned = *clean_text && first.is_some_and(dropped);
                let mut kept = !cleaned;
                if *strip_accents {
                    kept &= !out.nfd().next().is_some_and(is_nonspacing_mark);
                    out = out.nfd().filter(|&c| !is_nonspacing_mark(c)).collect();
                }
                if *lower {
                    out = lowercase(&out);
                }
                (out, kept)
            }
            Normalizer::Replace { pattern, content } => {
                let out = pattern.replace(text, content);
                (out, !(content.is_empty() && pattern.matches_at_start(text)))
            }
            Normalizer::Precompiled(map) => map.normalize(text),
            Normalizer::Prepend(prefix) => {
                if text.is_empty() {
                    (String::new(), true)
                } else {
                    (format!("{prefix}{text}"), true)
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
                (
                    t.to_string(),
                    !*left || !first.is_some_and(char::is_whitespace),
                )
            }
        }
    }
}

/// What a `Replace` normalizer matches: a literal string, or one of the regular expressions
/// the SentencePiece converters write (recognised by their text, as the pre-tokenizers'
/// patterns are).
#[derive(Clone, Debug, PartialEq)]
pub enum ReplacePattern {
    /// Every occurrence of the string.
    Literal(String),
    /// ` {2,}`: each run of two or more spaces.
    SpaceRuns,
    /// `\A +| +\z`: the spaces at the start and those at the end.
    OuterSpaces,
    /// `\A▁`: a `▁` at the very start.
    LeadingMetaspace,
}

impl ReplacePattern {
    /// The `pattern` member of the `Replace` at `node`.
    pub fn parse(node: &Node<'_>) -> Result<Self> {
        let pattern = node.member("pattern")?;
        if let Some(literal) = pattern.opt_str("String")? {
            return Ok(ReplacePattern::Literal(literal.to_string()));
        }
        let regex = pattern.str("Regex")?;
        Ok(match regex {
            " {2,}" => ReplacePattern::SpaceRuns,
            r"\A +| +\z" => ReplacePattern::OuterSpaces,
            "\\A\u{2581}" => ReplacePattern::LeadingMetaspace,
            other => {
                return Err(pattern.error(format!(
                    "the regular expression `{other}` is not supported in a Replace (supported: \
                     a literal `String`, and the regular expressions ` {{2,}}`, `\\A +| +\\z`, \
                     `\\A\u{2581}`)"
                )))
            }
        })
    }

    /// Whether a match starts at the text's first byte.
    fn matches_at_start(&self, text: &str) -> bool {
        match self {
            ReplacePattern::Literal(literal) => !literal.is_empty() && text.starts_with(literal),
            ReplacePattern::SpaceRuns => text.starts_with("  "),
            ReplacePattern::OuterSpaces => text.starts_with(' '),
            ReplacePattern::LeadingMetaspace => text.starts_with('\u{2581}'),
        }
    }

    /// `text` with every match replaced by `content`.
    pub fn replace(&self, text: &str, content: &str) -> String {
        match self {
            ReplacePattern::Literal(literal) if literal.is_empty() => text.to_string(),
            ReplacePattern::Literal(literal) => text.replace(literal.as_str(), content),
            ReplacePattern::SpaceRuns => {
                let mut out = String::with_capacity(text.len());
                let mut rest = text;
                while let Some(start) = rest.find("  ") {
                    out.push_str(&rest[..start]);
                    out.push_str(content);
                    rest = rest[start..].trim_start_matches(' ');
                }
                out.push_str(rest);
                out
            }
            ReplacePattern::OuterSpaces => {
                let inner = text.trim_matches(' ');
                if inner.is_empty() {
                    // All spaces: the start's match takes them all.
                    return if text.is_empty() {
                        String::new()
                    } else {
                        content.to_string()
                    };
                }
                let mut out = String::with_capacity(text.len());
                if text.starts_with(' ') {
                    out.push_str(content);
                }
                out.push_str(inner);
                if text.ends_with(' ') {
                    out.push_str(content);
                }
                out
            }
            ReplacePattern::LeadingMetaspace => match text.strip_prefix('\u{2581}') {
                Some(rest) => format!("{content}{rest}"),
                None => text.to_string(),
            },
        }
    }
}

/// Lowercases character by character (`Σ` is always `σ`, never the final `ς`).
fn lowercase(text: &str) -> String {
    text.chars().flat_map(char::to_lowercase).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether a normalizer reports the text's start as deleted (Metaspace's `first` scheme
    /// depends on it).
    #[test]
    fn deleting_the_first_characters_is_reported() {
        let strip = Normalizer::Strip {
            left: true,
            right: true,
        };
        assert_eq!(strip.apply_keeping_start("  a "), ("a".into(), false));
        assert_eq!(strip.apply_keeping_start("a "), ("a".into(), true));
        let right = Normalizer::Strip {
            left: false,
            right: true,
        };
        assert_eq!(right.apply_keeping_start(" a "), (" a".into(), true));
        let accents = Normalizer::StripAccents;
        assert_eq!(accents.apply_keeping_start("\u{301}a"), ("a".into(), false));
        let outer = |content: &str| Normalizer::Replace {
            pattern: ReplacePattern::OuterSpaces,
            content: content.into(),
        };
        assert_eq!(
            outer("").apply_keeping_start("  a  b "),
            ("a  b".into(), false)
        );
        assert_eq!(
            outer("_").apply_keeping_start("  a  b "),
            ("_a  b_".into(), true)
        );
        assert_eq!(outer("").apply_keeping_start("   "), ("".into(), false));
        let runs = Normalizer::Replace {
            pattern: ReplacePattern::SpaceRuns,
            content: "_".into(),
        };
        assert_eq!(
            runs.apply_keeping_start("  a b   c "),
            ("_a b_c ".into(), true)
        );
        let leading = Normalizer::Replace {
            pattern: ReplacePattern::LeadingMetaspace,
            content: "\u{2581}\u{2581}".into(),
        };
        assert_eq!(
            leading.apply_keeping_start("\u{2581}a\u{2581}"),
            ("\u{2581}\u{2581}a\u{2581}".into(), true)
        );
        let sequence = Normalizer::Sequence(vec![Normalizer::Lowercase, outer("")]);
        assert_eq!(sequence.apply_keeping_start(" A"), ("a".into(), false));
    }
}
