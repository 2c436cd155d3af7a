//! The regular expressions that cut text into pieces before BPE (GPT-2's byte-level
//! pre-tokenizer, and the `Split` pre-tokenizers whose patterns are recognised), implemented by
//! hand
//! (a regex engine with the look-ahead they use would cost users more build time than the
//! rest of `kiln::text`): GPT-2's, the one of Llama 3 and `cl100k` with its variants that
//! take digits one at a time (Qwen 2) and marks as letters (Qwen 3.5), and `o200k`'s (GPT-4o,
//! Llama 4, Phi-4) with its variant without contractions and with single digits (Mistral's
//! Tekken), which cut words at case changes; and the three DeepSeek V3 splits in turn (number
//! groups, CJK runs, then words and punctuation) and BLOOM's (runs between whitespace and
//! sentence punctuation of several scripts), which, unlike the others, need not match every
//! character (the text between matches is kept as pieces of its own). A file with any other
//! pattern is an error.

use super::unicode::{
    is_letter, is_lower_like, is_mark, is_number, is_punctuation, is_symbol, is_upper_like,
};

/// GPT-2's pattern.
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
/// Llama 3's and `cl100k`'s: case-insensitive contractions, a letter run with one leading
/// non-letter, numbers in groups of up to three, punctuation with its line breaks, line
/// breaks with the whitespace before them.
const CL100K: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen 2's: `cl100k` with one digit at a time.
const CL100K_DIGITS: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen 3.5's: `cl100k` with one digit at a time, and marks counted with letters (in a word,
/// not in a punctuation run).
const CL100K_MARKS: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// `o200k`'s: a word is an optional non-letter, "upper" letters, then "lower" ones (or only
/// "upper" ones), with a case-insensitive contraction after it; numbers in groups of up to
/// three; punctuation with its line breaks and slashes; whitespace as in `cl100k`.
const O200K: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
);
/// Mistral's Tekken: `o200k` without the contractions, one digit at a time.
const TEKKEN: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+",
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*",
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
);

/// DeepSeek V3's first split: numbers in groups of up to three.
const NUMBER_GROUPS: &str = r"\p{N}{1,3}";
/// DeepSeek V3's second: runs of CJK ideographs (U+4E00–U+9FA5), hiragana and katakana.
const CJK_RUNS: &str = "[\u{4e00}-\u{9fa5}\u{3040}-\u{309f}\u{30a0}-\u{30ff}]+";
/// DeepSeek V3's third: ASCII punctuation before ASCII letters, a letter-and-mark run with one
/// leading character that is no letter, punctuation or symbol, punctuation and symbol runs
/// with their line breaks, whitespace as in `cl100k`.
const DEEPSEEK_WORDS: &str = concat!(
    r##"[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+"##,
    r"| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
);

/// BLOOM's: an optional space, then a run of characters other than whitespace, the
/// punctuation `.,!?…。，、।۔،` and (the class is written as if it were a group) `(`, `|` and `)`.
/// Text between its matches (whitespace, and that punctuation) makes pieces of its own.
const BLOOM: &str = " ?[^(\\s|[.,!?…。，、।۔،])]+";

/// A recognised pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pattern {
    /// [`GPT2`].
    Gpt2,
    /// [`CL100K`] (`max_digits` 3), [`CL100K_DIGITS`] (1) or [`CL100K_MARKS`] (1, `marks`).
    Cl100k { max_digits: usize, marks: bool },
    /// [`O200K`] (`contractions`, `max_digits` 3) or [`TEKKEN`] (neither, 1).
    O200k {
        contractions: bool,
        max_digits: usize,
    },
    /// [`NUMBER_GROUPS`].
    NumberGroups,
    /// [`CJK_RUNS`].
    CjkRuns,
    /// [`DEEPSEEK_WORDS`].
    DeepSeekWords,
    /// [`BLOOM`].
    Bloom,
}

impl Pattern {
    /// The pattern whose source is exactly `regex`.
    pub fn recognise(regex: &str) -> Option<Self> {
        match regex {
            GPT2 => Some(Pattern::Gpt2),
            CL100K => Some(Pattern::Cl100k {
                max_digits: 3,
                marks: false,
            }),
            CL100K_DIGITS => Some(Pattern::Cl100k {
                max_digits: 1,
                marks: false,
            }),
            CL100K_MARKS => Some(Pattern::Cl100k {
                max_digits: 1,
                marks: true,
            }),
            O200K => Some(Pattern::O200k {
                contractions: true,
                max_digits: 3,
            }),
            TEKKEN => Some(Pattern::O200k {
                contractions: false,
                max_digits: 1,
            }),
            NUMBER_GROUPS => Some(Pattern::NumberGroups),
            CJK_RUNS => Some(Pattern::CjkRuns),
            DEEPSEEK_WORDS => Some(Pattern::DeepSeekWords),
            BLOOM => Some(Pattern::Bloom),
            _ => None,
        }
    }

    /// The byte ranges of the pattern's matches in `text`, in order, as a regular
    /// expression's successive leftmost matches.
    pub fn matches(&self, text: &str) -> Vec<(usize, usize)> {
        let matcher = |rest: &str| -> Option<usize> {
            match *self {
                Pattern::Gpt2 => Some(gpt2_match(rest)),
                Pattern::Cl100k { max_digits, marks } => {
                    Some(cl100k_match(rest, max_digits, marks))
                }
                Pattern::O200k {
                    contractions,
                    max_digits,
                } => Some(o200k_match(rest, contractions, max_digits)),
                Pattern::NumberGroups => Some(number_group_len(rest, 3)).filter(|&n| n > 0),
                Pattern::CjkRuns => Some(run_len(rest, is_deepseek_cjk)).filter(|&n| n > 0),
                Pattern::DeepSeekWords => deepseek_word_match(rest),
                Pattern::Bloom => bloom_match(rest),
            }
        };
        let mut found = Vec::new();
        let mut at = 0;
        while let Some(c) = text[at..].chars().next() {
            match matcher(&text[at..]) {
                Some(len) => {
                    found.push((at, at + len));
                    at += len;
                }
                None => at += c.len_utf8(),
            }
        }
        found
    }

    /// `text` cut into the pattern's matches and the text between them.
    pub fn split<'t>(&self, text: &'t str) -> Vec<&'t str> {
        let mut pieces = Vec::new();
        let mut at = 0;
        for (start, end) in self.matches(text) {
            if start > at {
                pieces.push(&text[at..start]);
            }
            pieces.push(&text[start..end]);
            at = end;
        }
        if at < text.len() {
            pieces.push(&text[at..]);
        }
        pieces
    }
}

/// The byte length of the [`BLOOM`] match at the start of `rest`, if one starts there: the
/// optional space is taken only where a run follows it.
fn bloom_match(rest: &str) -> Option<usize> {
    let in_run = |c: char| {
        !c.is_whitespace()
            && !matches!(
                c,
                '(' | '|'
                    | ')'
                    | '.'
                    | ','
                    | '!'
                    | '?'
                    | '…'
                    | '。'
                    | '，'
                    | '、'
                    | '।'
                    | '۔'
                    | '،'
            )
    };
    let space = usize::from(rest.starts_with(' '));
    let run = run_len(&rest[space..], in_run);
    (run > 0).then_some(space + run)
}

/// Whether `c` is in DeepSeek's CJK class: U+4E00–U+9FA5, hiragana U+3040–U+309F, katakana
/// U+30A0–U+30FF.
fn is_deepseek_cjk(c: char) -> bool {
    matches!(c, '\u{4e00}'..='\u{9fa5}' | '\u{3040}'..='\u{309f}' | '\u{30a0}'..='\u{30ff}')
}

/// The byte length of the numbers at the start of `rest`, at most `max` of them.
fn number_group_len(rest: &str, max: usize) -> usize {
    rest.chars()
        .take(max)
        .take_while(|&c| is_number(c))
        .map(char::len_utf8)
        .sum()
}

/// The byte length of the [`DEEPSEEK_WORDS`] match at the start of `rest`, if one starts
/// there (digits and control characters on their own match nothing).
fn deepseek_word_match(rest: &str) -> Option<usize> {
    let first = rest.chars().next()?;
    let after = &rest[first.len_utf8()..];
    // [ASCII punctuation][A-Za-z]+
    if first.is_ascii_punctuation() {
        let letters = run_len(after, |c| c.is_ascii_alphabetic());
        if letters > 0 {
            return Some(1 + letters);
        }
    }
    // [^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+ (a mark leading a run of marks is the same match
    // either way the optional character is read)
    let word_char = |c: char| is_letter(c) || is_mark(c);
    let lead = !matches!(first, '\r' | '\n')
        && !is_letter(first)
        && !is_punctuation(first)
        && !is_symbol(first);
    let run = run_len(after, word_char);
    if lead && run > 0 {
        return Some(first.len_utf8() + run);
    }
    if word_char(first) {
        return Some(run_len(rest, word_char));
    }
    // ' ?[\p{P}\p{S}]+[\r\n]*'
    let punctuation = |c: char| is_punctuation(c) || is_symbol(c);
    let after_space = rest.strip_prefix(' ').unwrap_or(rest);
    let space = rest.len() - after_space.len();
    let marks = run_len(after_space, punctuation);
    if marks > 0 {
        let breaks = run_len(&after_space[marks..], |c| matches!(c, '\r' | '\n'));
        return Some(space + marks + breaks);
    }
    first
        .is_whitespace()
        .then(|| newline_or_whitespace_match(rest))
}

/// The byte length of a case-insensitive contraction (`'s`, `'t`, `'re`, `'ve`, `'m`,
/// `'ll`, `'d`, tried in that order) at the start of `rest`, or 0. Case-insensitive as the
/// reference's regular expressions are, by Unicode case folding: besides the ASCII capitals,
/// the long s `ſ` (U+017F) folds to `s` (no other character folds to one of these letters).
fn contraction_len(rest: &str) -> usize {
    let Some(after) = rest.strip_prefix('\'') else {
        return 0;
    };
    if after.starts_with('ſ') {
        return 1 + 'ſ'.len_utf8();
    }
    // ASCII letters by their bytes (a byte of a longer character never lowercases to one).
    let lower = |i: usize| after.as_bytes().get(i).map(u8::to_ascii_lowercase);
    match (lower(0), lower(1)) {
        (Some(b's' | b't' | b'm' | b'd'), _) => 2,
        (Some(b'r' | b'v'), Some(b'e')) | (Some(b'l'), Some(b'l')) => 3,
        _ => 0,
    }
}

/// The byte length of the `o200k` match at the start of `rest` (non-empty), following the
/// regular expression's backtracking: the first alternative that matches, each greedy.
/// Without `contractions` no `'s` follows a word; numbers come in groups of up to
/// `max_digits`.
fn o200k_match(rest: &str, contractions: bool, max_digits: usize) -> usize {
    let first = rest.chars().next().unwrap_or(' ');
    // The two word alternatives, each first with the optional leading character
    // [^\r\n\p{L}\p{N}] (greedy: taken if it is one) and then without it. Without it a word
    // can start at a mark (\p{M} is in both letter classes, and is not \p{L}).
    let lead = !matches!(first, '\r' | '\n') && !is_letter(first) && !is_number(first);
    let starts: &[usize] = if lead { &[first.len_utf8(), 0] } else { &[0] };
    let word = starts
        .iter()
        .find_map(|&start| Some(start + upper_then_lower(&rest[start..])?))
        .or_else(|| {
            starts
                .iter()
                .find_map(|&start| Some(start + only_upper(&rest[start..])?))
        });
    if let Some(end) = word {
        let contraction = if contractions {
            contraction_len(&rest[end..])
        } else {
            0
        };
        return end + contraction;
    }
    // \p{N}{1,max}| ?[^\s\p{L}\p{N}]+[\r\n/]*|...
    let punctuation = |c: char| !c.is_whitespace() && !is_letter(c) && !is_number(c);
    number_punctuation_or_space_match(rest, max_digits, punctuation, |c| {
        matches!(c, '\r' | '\n' | '/')
    })
}

/// The byte length of the `cl100k` match at the start of `rest` (non-empty); with `marks`,
/// marks are word characters (`[\p{L}\p{M}]+`) and not punctuation.
fn cl100k_match(rest: &str, max_digits: usize, marks: bool) -> usize {
    let mut chars = rest.chars();
    let first = chars.next().unwrap_or(' ');
    let second = chars.next();
    let word_char = |c: char| is_letter(c) || (marks && is_mark(c));
    // (?i:'s|'t|'re|'ve|'m|'ll|'d)
    let contraction = contraction_len(rest);
    if contraction > 0 {
        return contraction;
    }
    // [^\r\n\p{L}\p{N}]?\p{L}+ (a mark leading a word of marks is the same match either
    // way the optional character is read)
    let lead = !matches!(first, '\r' | '\n') && !is_letter(first) && !is_number(first);
    if lead && second.is_some_and(word_char) {
        let after = first.len_utf8();
        return after + run_len(&rest[after..], word_char);
    }
    if word_char(first) {
        return run_len(rest, word_char);
    }
    // \p{N}{1,max}| ?[^\s\p{L}\p{N}]+[\r\n]*|... (and not \p{M} with `marks`)
    let punctuation = |c: char| !c.is_whitespace() && !word_char(c) && !is_number(c);
    number_punctuation_or_space_match(rest, max_digits, punctuation, |c| matches!(c, '\r' | '\n'))
}

/// The alternatives `cl100k` and `o200k` end with, at the start of `rest` where no word
/// matched: `\p{N}{1,max_digits}`, then ` ?P+B*` with `P` the `punctuation` class and `B`
/// the characters that may follow it (`[\r\n]` or `[\r\n/]`), then the whitespace ones.
fn number_punctuation_or_space_match(
    rest: &str,
    max_digits: usize,
    punctuation: impl Fn(char) -> bool,
    trailing: impl Fn(char) -> bool,
) -> usize {
    if rest.chars().next().is_some_and(is_number) {
        return number_group_len(rest, max_digits);
    }
    let after_space = rest.strip_prefix(' ').unwrap_or(rest);
    let space = rest.len() - after_space.len();
    let run = run_len(after_space, punctuation);
    if run > 0 {
        return space + run + run_len(&after_space[run..], trailing);
    }
    newline_or_whitespace_match(rest)
}

/// `[Lu Lt Lm Lo M]*[Ll Lm Lo M]+` at the start of `text`, as the regex backtracks: the upper
/// run taken whole, then the lower run after it; if there is none, the upper run gives back
/// down to its last character that is also "lower" (Lm, Lo, M), which then ends the word.
fn upper_then_lower(text: &str) -> Option<usize> {
    let upper = run_len(text, is_upper_like);
    let lower = run_len(&text[upper..], is_lower_like);
    if lower > 0 {
        return Some(upper + lower);
    }
    text[..upper]
        .char_indices()
        .rev()
        .find(|&(_, c)| is_lower_like(c))
        .map(|(i, c)| i + c.len_utf8())
}

/// `[Lu Lt Lm Lo M]+[Ll Lm Lo M]*` at the start of `text`, tried when [`upper_then_lower`]
/// failed there (so no lower letter follows the upper run).
fn only_upper(text: &str) -> Option<usize> {
    let upper = run_len(text, is_upper_like);
    (upper > 0).then_some(upper)
}

/// `\s*[\r\n]+|\s+(?!\S)|\s+` at the start of `rest`: the whitespace run up to its last line
/// break, or else [`whitespace_match`].
fn newline_or_whitespace_match(rest: &str) -> usize {
    let run = run_len(rest, char::is_whitespace);
    if let Some((i, c)) = rest[..run]
        .char_indices()
        .rev()
        .find(|&(_, c)| matches!(c, '\r' | '\n'))
    {
        return i + c.len_utf8();
    }
    whitespace_match(rest)
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
    whitespace_match(rest)
}

/// `\s+(?!\S)|\s+` at the start of `rest`, which starts with whitespace: the whitespace run,
/// less its last character if a non-space follows it (that character then leads the next
/// piece), but never less than one character.
fn whitespace_match(rest: &str) -> usize {
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
    fn gpt2_pattern() {
        assert_eq!(
            Pattern::Gpt2.split("I'm  here, 123 times!\n\n end  "),
            ["I", "'m", " ", " here", ",", " 123", " times", "!", "\n\n", " end", "  "]
        );
        assert_eq!(Pattern::Gpt2.split(" "), [" "]);
        assert_eq!(Pattern::Gpt2.split("a  b"), ["a", " ", " b"]);
    }

    #[test]
    fn cl100k_pattern() {
        let p = Pattern::Cl100k {
            max_digits: 3,
            marks: false,
        };
        assert_eq!(
            p.split("I'M here,\r\n\r\n  12345 'Sx\tword  end!!\n"),
            [
                "I",
                "'M",
                " here",
                ",\r\n\r\n",
                " ",
                " ",
                "123",
                "45",
                " '",
                "Sx",
                "\tword",
                " ",
                " end",
                "!!\n"
            ]
        );
        assert_eq!(
            Pattern::Cl100k {
                max_digits: 1,
                marks: false
            }
            .split("x 12"),
            ["x", " ", "1", "2"]
        );
    }

    const O200K_PATTERN: Pattern = Pattern::O200k {
        contractions: true,
        max_digits: 3,
    };

    #[test]
    fn o200k_pattern_cuts_at_case_changes() {
        assert_eq!(
            O200K_PATTERN.split("CamelCase HTTPServer's a/b//\n 12345"),
            [
                "Camel",
                "Case",
                " HTTPServer's",
                " a",
                "/b",
                "//\n",
                " ",
                "123",
                "45"
            ]
        );
        // A mark after a digit starts a word of its own; CJK (Lo) before capitals ends one.
        assert_eq!(
            O200K_PATTERN.split("1\u{301}! \u{6f22}ABC"),
            ["1", "\u{301}", "!", " \u{6f22}", "ABC"]
        );
    }
}
