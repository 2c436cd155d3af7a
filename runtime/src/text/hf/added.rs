//! Added tokens (`<|endoftext|>`, `[CLS]`, ...): found in the text before anything else, so a
//! special token written in the text is that token, not the pieces of its characters.

use std::collections::HashMap;

use super::json::Node;
use crate::Result;

/// One entry of the file's `added_tokens`.
#[derive(Clone, Debug, PartialEq)]
pub struct AddedToken {
    pub id: u32,
    pub content: String,
    /// Matched only as a whole word.
    pub single_word: bool,
    /// Takes the whitespace on its left.
    pub lstrip: bool,
    /// Takes the whitespace on its right.
    pub rstrip: bool,
    /// Matched in the normalized text (else in the raw text).
    pub normalized: bool,
    /// Left out by decoding with `skip_special_tokens`.
    pub special: bool,
}

impl AddedToken {
    /// Reads one entry of `added_tokens`.
    pub fn parse(node: &Node<'_>) -> Result<Self> {
        node.object()?;
        let special = node.bool_or("special", false)?;
        let content = node.str("content")?.to_string();
        if content.is_empty() {
            return Err(node.error("an added token cannot be empty"));
        }
        Ok(AddedToken {
            id: node.id("id")?,
            content,
            single_word: node.bool_or("single_word", false)?,
            lstrip: node.bool_or("lstrip", false)?,
            rstrip: node.bool_or("rstrip", false)?,
            normalized: node.bool_or("normalized", !special)?,
            special,
        })
    }
}

/// A part of a text after the added tokens are found.
#[derive(Debug, PartialEq)]
pub enum Part<'t> {
    /// Text between added tokens.
    Text(&'t str),
    /// An added token's id.
    Token(u32),
}

/// The added tokens matched in one form of the text (raw or normalized), by first character,
/// longest first.
#[derive(Clone, Debug, Default)]
pub struct Matcher {
    by_first: HashMap<char, Vec<AddedToken>>,
}

impl Matcher {
    /// A matcher for those of `tokens` whose `normalized` flag is `normalized`.
    pub fn new(tokens: &[AddedToken], normalized: bool) -> Self {
        let mut by_first: HashMap<char, Vec<AddedToken>> = HashMap::new();
        for token in tokens.iter().filter(|t| t.normalized == normalized) {
            if let Some(first) = token.content.chars().next() {
                by_first.entry(first).or_default().push(token.clone());
            }
        }
        for list in by_first.values_mut() {
            list.sort_by_key(|t| std::cmp::Reverse(t.content.len()));
        }
        Matcher { by_first }
    }

    /// `text` cut at the leftmost-longest matches of the added tokens.
    pub fn split<'t>(&self, text: &'t str) -> Vec<Part<'t>> {
        if self.by_first.is_empty() {
            return vec![Part::Text(text)];
        }
        let mut parts = Vec::new();
        let mut done = 0; // end of the last match (with the whitespace it took)
        let mut at = 0;
        while at < text.len() {
            let rest = &text[at..];
            let c = rest.chars().next().unwrap_or(' ');
            let found = self.by_first.get(&c).and_then(|candidates| {
                candidates.iter().find(|t| {
                    rest.starts_with(t.content.as_str())
                        && (!t.single_word || is_whole_word(text, at, at + t.content.len()))
                })
            });
            let Some(token) = found else {
                at += c.len_utf8();
                continue;
            };
            let mut start = at;
            let mut end = at + token.content.len();
            if token.lstrip {
                let before = &text[done..start];
                start = done + before.trim_end().len();
            }
            if token.rstrip {
                let after = &text[end..];
                end += after.len() - after.trim_start().len();
            }
            if start > done {
                parts.push(Part::Text(&text[done..start]));
            }
            parts.push(Part::Token(token.id));
            done = end;
            at = end;
        }
        if done < text.len() {
            parts.push(Part::Text(&text[done..]));
        }
        parts
    }
}

/// Whether `text[start..end]` has no word character right before or after it.
fn is_whole_word(text: &str, start: usize, end: usize) -> bool {
    let word = |c: char| c.is_alphanumeric() || c == '_';
    !text[..start].chars().next_back().is_some_and(word)
        && !text[end..].chars().next().is_some_and(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(id: u32, content: &str) -> AddedToken {
        AddedToken {
            id,
            content: content.to_string(),
            single_word: false,
            lstrip: false,
            rstrip: false,
            normalized: false,
            special: true,
        }
    }

    #[test]
    fn longest_match_wins_and_whitespace_is_taken_when_asked() {
        let mut mask = token(2, "<mask>");
        mask.lstrip = true;
        let matcher = Matcher::new(&[token(0, "<s>"), token(1, "<s>x"), mask], false);
        assert_eq!(
            matcher.split("a<s>xb <s> c  <mask> d"),
            [
                Part::Text("a"),
                Part::Token(1),
                Part::Text("b "),
                Part::Token(0),
                Part::Text(" c"),
                Part::Token(2),
                Part::Text(" d"),
            ]
        );
    }

    #[test]
    fn single_words_only_match_whole_words() {
        let mut word = token(5, "cat");
        word.single_word = true;
        let matcher = Matcher::new(&[word], false);
        assert_eq!(
            matcher.split("cats cat"),
            [Part::Text("cats "), Part::Token(5)]
        );
    }
}
