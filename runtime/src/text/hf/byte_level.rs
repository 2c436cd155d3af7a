//! GPT-2's byte-level alphabet and its pre-tokenizing pattern.
//!
//! Byte-level BPE works on bytes, but its vocabulary is stored as text: each byte is shown as
//! one printable character (`' '` as `Ġ`, `'\n'` as `Ċ`). The pattern splits text into words,
//! numbers, punctuation runs and whitespace, each with the space before it.

use std::sync::OnceLock;

use super::unicode::{is_letter, is_number};

/// The printable character standing for each byte, as GPT-2 defines it: the printable
/// Latin-1 bytes stand for themselves, the others (controls, space, …) for `U+0100` onwards,
/// in byte order.
pub fn byte_chars() -> &'static [char; 256] {
    static TABLE: OnceLock<[char; 256]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let printable =
            |b: u32| (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
        let mut table = ['\0'; 256];
        let mut next = 256u32;
        for (b, slot) in table.iter_mut().enumerate() {
            let b = b as u32;
            let code = if printable(b) {
                b
            } else {
                next += 1;
                next - 1
            };
            *slot = char::from_u32(code).unwrap_or('\u{FFFD}');
        }
        table
    })
}

/// The byte a character of [`byte_chars`] stands for.
pub fn char_byte(c: char) -> Option<u8> {
    let code = c as u32;
    let table = byte_chars();
    if code < 256 && table[code as usize] == c {
        return Some(code as u8);
    }
    if (256..256 + 68).contains(&code) {
        // The 68 bytes that are not printable, in order.
        return table.iter().position(|&t| t == c).map(|b| b as u8);
    }
    None
}

/// `text` as byte-level characters.
pub fn to_byte_chars(text: &str) -> String {
    let table = byte_chars();
    text.bytes().map(|b| table[b as usize]).collect()
}

/// Splits `text` as GPT-2's pattern does:
/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`.
/// Every character belongs to exactly one piece.
pub fn split_gpt2(text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    while start < text.len() {
        let len = gpt2_match(&text[start..]);
        pieces.push(&text[start..start + len]);
        start += len;
    }
    pieces
}

/// The byte length of the pattern's match at the start of `rest` (never 0 for a non-empty
/// `rest`: the alternatives together cover every character).
fn gpt2_match(rest: &str) -> usize {
    for suffix in ["s", "t", "re", "ve", "m", "ll", "d"] {
        if rest.starts_with('\'') && rest[1..].starts_with(suffix) {
            return 1 + suffix.len();
        }
    }
    let other = |c: char| !c.is_whitespace() && !is_letter(c) && !is_number(c);
    let after_space = rest.strip_prefix(' ').unwrap_or(rest);
    let space = rest.len() - after_space.len();
    for class in [is_letter as fn(char) -> bool, is_number, other] {
        let run = run_len(after_space, class);
        if run > 0 {
            return space + run;
        }
    }
    // `\s+(?!\S)`: a whitespace run, less its last character if a non-space follows it; else
    // `\s+`.
    let run = run_len(rest, char::is_whitespace);
    if run < rest.len() {
        let last = rest[..run].chars().next_back().map_or(0, char::len_utf8);
        if run > last {
            return run - last;
        }
    }
    run.max(rest.chars().next().map_or(0, char::len_utf8))
}

/// The byte length of the longest prefix of `text` whose characters are all in `class`.
fn run_len(text: &str, class: impl Fn(char) -> bool) -> usize {
    text.char_indices()
        .find(|&(_, c)| !class(c))
        .map_or(text.len(), |(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_round_trips() {
        for b in 0..=255u8 {
            assert_eq!(char_byte(byte_chars()[b as usize]), Some(b));
        }
        assert_eq!(byte_chars()[b' ' as usize], 'Ġ');
        assert_eq!(byte_chars()[b'\n' as usize], 'Ċ');
        assert_eq!(to_byte_chars("a b"), "aĠb");
    }

    #[test]
    fn gpt2_pattern() {
        assert_eq!(
            split_gpt2("I'm  here, 123 times!\n\n end  "),
            ["I", "'m", " ", " here", ",", " 123", " times", "!", "\n\n", " end", "  "]
        );
        assert_eq!(split_gpt2(" "), [" "]);
        assert_eq!(split_gpt2("a  b"), ["a", " ", " b"]);
    }
}
