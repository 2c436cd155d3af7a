//! Pre-tokenizers: how a `tokenizer.json` cuts normalized text into the pieces its model
//! tokenizes one at a time (words, punctuation, GPT-2's byte-level chunks).

use super::byte_level::to_byte_chars;
use super::json::Node;
use super::patterns::Pattern;
use super::unicode::{is_bert_punctuation, is_word};
use crate::Result;

/// The file's `pre_tokenizer`.
#[derive(Clone, Debug, PartialEq)]
pub enum PreTokenizer {
    /// Each in turn, on every piece of the one before.
    Sequence(Vec<PreTokenizer>),
    /// GPT-2's: optionally a space before the text, its pattern (see `patterns`), then every
    /// byte as its printable character.
    ByteLevel {
        add_prefix_space: bool,
        use_regex: bool,
    },
    /// BERT's: whitespace separates, every punctuation character is a piece of its own.
    Bert,
    /// `\w+|[^\w\s]+`: runs of word characters and runs of other non-space characters.
    Whitespace,
    /// Whitespace separates.
    WhitespaceSplit,
    /// Digits apart from the rest: each digit alone, or runs of digits.
    Digits { individual: bool },
    /// The matches of a literal string or a recognised regular expression, kept, dropped or
    /// merged with their neighbours as `behavior` says (`invert`: the text between them is what
    /// matches).
    Split {
        pattern: SplitPattern,
        behavior: Behavior,
        invert: bool,
    },
    /// Each punctuation character (BERT's definition) as a match, treated as `behavior` says.
    Punctuation(Behavior),
    /// SentencePiece's: spaces become `replacement` (`▁`), which is also put before the text
    /// (always, never, or only at the start of the whole input), and each `▁` starts a piece.
    Metaspace {
        replacement: char,
        prepend: Prepend,
        split: bool,
    },
}

/// What a `Split` matches.
#[derive(Clone, Debug, PartialEq)]
pub enum SplitPattern {
    /// Every occurrence of a string, left to right, not overlapping.
    Literal(String),
    /// A recognised regular expression.
    Known(Pattern),
}

/// What becomes of the matches of a split, as the reference's `SplitDelimiterBehavior`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behavior {
    /// Dropped.
    Removed,
    /// Pieces of their own.
    Isolated,
    /// Appended to the piece before them.
    MergedWithPrevious,
    /// Prepended to the piece after them.
    MergedWithNext,
    /// Runs of adjacent matches as one piece (and, inverted, runs of what the pattern
    /// matched, as the reference merges any two neighbours of one kind).
    Contiguous,
}

impl Behavior {
    fn parse(node: &Node<'_>) -> Result<Self> {
        Ok(match node.str("behavior")? {
            "Removed" => Behavior::Removed,
            "Isolated" => Behavior::Isolated,
            "MergedWithPrevious" => Behavior::MergedWithPrevious,
            "MergedWithNext" => Behavior::MergedWithNext,
            "Contiguous" => Behavior::Contiguous,
            other => {
                return Err(node.error(format!(
                    "`behavior` should be Removed, Isolated, MergedWithPrevious, \
                     MergedWithNext or Contiguous, found {other:?}"
                )))
            }
        })
    }

    /// The pieces of `text` cut into `segments` (byte ranges covering it in order, each with
    /// whether it is a match).
    fn apply<'t>(self, text: &'t str, segments: &[(usize, usize, bool)]) -> Vec<&'t str> {
        let mut kept: Vec<(usize, usize)> = Vec::with_capacity(segments.len());
        match self {
            Behavior::Removed => {
                kept.extend(segments.iter().filter(|s| !s.2).map(|s| (s.0, s.1)));
            }
            Behavior::Isolated => kept.extend(segments.iter().map(|s| (s.0, s.1))),
            Behavior::Contiguous => {
                let mut previous_match = false;
                for &(start, end, is_match) in segments {
                    match kept.last_mut() {
                        Some(last) if is_match == previous_match => last.1 = end,
                        _ => kept.push((start, end)),
                    }
                    previous_match = is_match;
                }
            }
            Behavior::MergedWithPrevious => {
                let mut previous_match = false;
                for &(start, end, is_match) in segments {
                    match kept.last_mut() {
                        Some(last) if is_match && !previous_match => last.1 = end,
                        _ => kept.push((start, end)),
                    }
                    previous_match = is_match;
                }
            }
            Behavior::MergedWithNext => {
                let mut previous_match = false;
                for &(start, end, is_match) in segments.iter().rev() {
                    match kept.last_mut() {
                        Some(last) if is_match && !previous_match => last.0 = start,
                        _ => kept.push((start, end)),
                    }
                    previous_match = is_match;
                }
                kept.reverse();
            }
        }
        kept.into_iter()
            .map(|(start, end)| &text[start..end])
            .collect()
    }
}

/// `text` as segments covering it: each match of `matches` (ordered, not overlapping byte
/// ranges) and the text between them, with whether each is a match (flipped by `invert`).
fn segments(
    text: &str,
    matches: impl Iterator<Item = (usize, usize)>,
    invert: bool,
) -> Vec<(usize, usize, bool)> {
    let mut out = Vec::new();
    let mut at = 0;
    for (start, end) in matches {
        if start > at {
            out.push((at, start, invert));
        }
        if end > start {
            out.push((start, end, !invert));
        }
        at = end;
    }
    if at < text.len() {
        out.push((at, text.len(), invert));
    }
    out
}

/// When the Metaspace pre-tokenizer puts its `▁` before a text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prepend {
    /// Before every piece of text (also after an added token).
    Always,
    /// Only before the text at the start of the input.
    First,
    /// Never.
    Never,
}

/// A Metaspace's `prepend_scheme` (`always`, `first`, `never`), or the older
/// `add_prefix_space` flag (true: `always`).
pub fn prepend_scheme<'a>(node: &Node<'a>) -> Result<&'a str> {
    match node.opt_str("prepend_scheme")? {
        Some(scheme @ ("always" | "first" | "never")) => Ok(scheme),
        Some(other) => Err(node.error(format!(
            "`prepend_scheme` should be always, first or never, found {other:?}"
        ))),
        None => Ok(if node.bool_or("add_prefix_space", true)? {
            "always"
        } else {
            "never"
        }),
    }
}

impl PreTokenizer {
    /// Reads the pre-tokenizer at `node`.
    pub fn parse(node: &Node<'_>) -> Result<Self> {
        node.object()?;
        Ok(match node.kind()? {
            "Sequence" => PreTokenizer::Sequence(
                node.member("pretokenizers")?
                    .elements()?
                    .iter()
                    .map(PreTokenizer::parse)
                    .collect::<Result<_>>()?,
            ),
            "ByteLevel" => PreTokenizer::ByteLevel {
                add_prefix_space: node.bool_or("add_prefix_space", true)?,
                use_regex: node.bool_or("use_regex", true)?,
            },
            "BertPreTokenizer" => PreTokenizer::Bert,
            "Whitespace" => PreTokenizer::Whitespace,
            "WhitespaceSplit" => PreTokenizer::WhitespaceSplit,
            "Digits" => PreTokenizer::Digits {
                individual: node.bool_or("individual_digits", false)?,
            },
            "Split" => {
                let pattern_node = node.member("pattern")?;
                let pattern = match (
                    pattern_node.opt_str("String")?,
                    pattern_node.opt_str("Regex")?,
                ) {
                    (Some(literal), _) if !literal.is_empty() => {
                        SplitPattern::Literal(literal.to_string())
                    }
                    (_, Some(regex)) => match Pattern::recognise(regex) {
                        Some(known) => SplitPattern::Known(known),
                        None => {
                            return Err(pattern_node.error(format!(
                                "the Split pattern {regex:?} is not one of the recognised ones \
                                 (GPT-2, Llama 3 / cl100k, Qwen 2, Qwen 3.5, GPT-4o / Llama 4 / o200k, Mistral's \
                                 Tekken, DeepSeek V3's three)"
                            )))
                        }
                    },
                    _ => {
                        return Err(pattern_node.error(
                            "a Split pattern should be a non-empty `String` or a `Regex`",
                        ))
                    }
                };
                PreTokenizer::Split {
                    pattern,
                    behavior: Behavior::parse(node)?,
                    invert: node.bool_or("invert", false)?,
                }
            }
            "Punctuation" => PreTokenizer::Punctuation(match node.get("behavior") {
                None => Behavior::Isolated,
                Some(_) => Behavior::parse(node)?,
            }),
            "Metaspace" => PreTokenizer::Metaspace {
                replacement: node.single_char("replacement")?,
                prepend: match prepend_scheme(node)? {
                    "always" => Prepend::Always,
                    "first" => Prepend::First,
                    _ => Prepend::Never,
                },
                split: node.bool_or("split", true)?,
            },
            other => {
                return Err(node.error(format!(
                    "pre-tokenizer `{other}` is not supported (supported: Sequence, \
                     ByteLevel, BertPreTokenizer, Whitespace, WhitespaceSplit, Digits, Metaspace, Punctuation, Split)"
                )))
            }
        })
    }

    /// Appends the non-empty pieces of `text` to `pieces`; `at_start` says whether `text`
    /// begins the whole input (not after an added token).
    pub fn split(&self, text: &str, at_start: bool, pieces: &mut Vec<String>) {
        let mut push = |piece: &str| {
            if !piece.is_empty() {
                pieces.push(piece.to_string());
            }
        };
        match self {
            PreTokenizer::Sequence(all) => {
                let mut current = vec![text.to_string()];
                for pre in all {
                    let mut next = Vec::new();
                    for (i, piece) in current.iter().enumerate() {
                        pre.split(piece, at_start && i == 0, &mut next);
                    }
                    current = next;
                }
                pieces.extend(current);
            }
            PreTokenizer::ByteLevel {
                add_prefix_space,
                use_regex,
            } => {
                let prefixed;
                let text = if *add_prefix_space && !text.starts_with(' ') {
                    prefixed = format!(" {text}");
                    prefixed.as_str()
                } else {
                    text
                };
                if *use_regex {
                    for piece in Pattern::Gpt2.split(text) {
                        push(&to_byte_chars(piece));
                    }
                } else {
                    push(&to_byte_chars(text));
                }
            }
            PreTokenizer::Bert => {
                for word in text.split(char::is_whitespace) {
                    split_isolated(word, is_bert_punctuation, &mut push);
                }
            }
            PreTokenizer::Whitespace => {
                let class = |c: char| {
                    if is_word(c) {
                        1
                    } else if c.is_whitespace() {
                        0
                    } else {
                        2
                    }
                };
                let mut start = 0;
                let mut current = 0;
                for (i, c) in text.char_indices() {
                    let k = class(c);
                    if k != current {
                        if current != 0 {
                            push(&text[start..i]);
                        }
                        start = i;
                        current = k;
                    }
                }
                if current != 0 {
                    push(&text[start..]);
                }
            }
            PreTokenizer::Split {
                pattern,
                behavior,
                invert,
            } => {
                let segments = match pattern {
                    SplitPattern::Literal(literal) => segments(
                        text,
                        text.match_indices(literal.as_str())
                            .map(|(i, m)| (i, i + m.len())),
                        *invert,
                    ),
                    SplitPattern::Known(known) => {
                        segments(text, known.matches(text).into_iter(), *invert)
                    }
                };
                for piece in behavior.apply(text, &segments) {
                    push(piece);
                }
            }
            PreTokenizer::Punctuation(behavior) => {
                let matches = text
                    .char_indices()
                    .filter(|&(_, c)| is_bert_punctuation(c))
                    .map(|(i, c)| (i, i + c.len_utf8()));
                for piece in behavior.apply(text, &segments(text, matches, false)) {
                    push(piece);
                }
            }
            PreTokenizer::Metaspace {
                replacement,
                prepend,
                split,
            } => {
                let mut replaced: String = text
                    .chars()
                    .map(|c| if c == ' ' { *replacement } else { c })
                    .collect();
                let put_before = match prepend {
                    Prepend::Always => true,
                    Prepend::First => at_start,
                    Prepend::Never => false,
                };
                if put_before && !replaced.starts_with(*replacement) {
                    replaced.insert(0, *replacement);
                }
                if *split {
                    // Each `▁` begins a piece (merged with what follows it).
                    let mut start = 0;
                    for (i, c) in replaced.char_indices() {
                        if c == *replacement && i > start {
                            push(&replaced[start..i]);
                            start = i;
                        }
                    }
                    push(&replaced[start..]);
                } else {
                    push(&replaced);
                }
            }
            PreTokenizer::WhitespaceSplit => {
                for word in text.split_whitespace() {
                    push(word);
                }
            }
            PreTokenizer::Digits { individual } => {
                if *individual {
                    split_isolated(text, char::is_numeric, &mut push);
                } else {
                    let mut start = 0;
                    let mut digits = None;
                    for (i, c) in text.char_indices() {
                        let d = c.is_numeric();
                        if digits.is_some_and(|prev| prev != d) {
                            push(&text[start..i]);
                            start = i;
                        }
                        digits = Some(d);
                    }
                    push(&text[start..]);
                }
            }
        }
    }
}

/// Splits `text` so that each character in `class` is a piece of its own, and the runs
/// between them are pieces.
fn split_isolated(text: &str, class: impl Fn(char) -> bool, push: &mut impl FnMut(&str)) {
    let mut start = 0;
    for (i, c) in text.char_indices() {
        if class(c) {
            push(&text[start..i]);
            push(&text[i..i + c.len_utf8()]);
            start = i + c.len_utf8();
        }
    }
    push(&text[start..]);
}
