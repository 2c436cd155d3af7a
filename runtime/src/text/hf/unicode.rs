//! The character classes the Hugging Face pipelines are defined by (regex classes such as
//! `\p{L}`, `\w`, and the BERT helpers), from the Unicode general categories.

use unicode_general_category::{get_general_category, GeneralCategory as G};

/// `\p{L}`: any letter (Lu, Ll, Lt, Lm, Lo).
pub fn is_letter(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphabetic();
    }
    matches!(
        get_general_category(c),
        G::UppercaseLetter
            | G::LowercaseLetter
            | G::TitlecaseLetter
            | G::ModifierLetter
            | G::OtherLetter
    )
}

/// `[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]`: the "upper" letters of the `o200k` pattern (capitals,
/// title case, modifier and other letters, marks).
pub fn is_upper_like(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_uppercase();
    }
    matches!(
        get_general_category(c),
        G::UppercaseLetter
            | G::TitlecaseLetter
            | G::ModifierLetter
            | G::OtherLetter
            | G::NonspacingMark
            | G::SpacingMark
            | G::EnclosingMark
    )
}

/// `[\p{Ll}\p{Lm}\p{Lo}\p{M}]`: the "lower" letters of the `o200k` pattern.
pub fn is_lower_like(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_lowercase();
    }
    matches!(
        get_general_category(c),
        G::LowercaseLetter
            | G::ModifierLetter
            | G::OtherLetter
            | G::NonspacingMark
            | G::SpacingMark
            | G::EnclosingMark
    )
}

/// `\p{N}`: any number (Nd, Nl, No).
pub fn is_number(c: char) -> bool {
    c.is_numeric()
}

/// `\p{M}`: any mark (Mn, Mc, Me).
pub fn is_mark(c: char) -> bool {
    !c.is_ascii()
        && matches!(
            get_general_category(c),
            G::NonspacingMark | G::SpacingMark | G::EnclosingMark
        )
}

/// `\p{Mn}`: a nonspacing mark (what stripping accents removes after NFD).
pub fn is_nonspacing_mark(c: char) -> bool {
    !c.is_ascii() && get_general_category(c) == G::NonspacingMark
}

/// `\p{P}`: any punctuation.
pub fn is_punctuation(c: char) -> bool {
    matches!(
        get_general_category(c),
        G::ConnectorPunctuation
            | G::DashPunctuation
            | G::OpenPunctuation
            | G::ClosePunctuation
            | G::InitialPunctuation
            | G::FinalPunctuation
            | G::OtherPunctuation
    )
}

/// `\p{S}`: any symbol (Sm, Sc, Sk, So).
pub fn is_symbol(c: char) -> bool {
    matches!(
        get_general_category(c),
        G::MathSymbol | G::CurrencySymbol | G::ModifierSymbol | G::OtherSymbol
    )
}

/// `\w` of Unicode regular expressions: alphabetic, a mark, a decimal digit, a connector
/// punctuation (`_`) or a joiner.
pub fn is_word(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphanumeric() || c == '_';
    }
    c.is_alphabetic()
        || matches!(c, '\u{200C}' | '\u{200D}')
        || matches!(
            get_general_category(c),
            G::NonspacingMark
                | G::SpacingMark
                | G::EnclosingMark
                | G::DecimalNumber
                | G::ConnectorPunctuation
        )
}

/// Control and other invisible characters BERT's text cleaning drops (Cc, Cf, Cn, Co, Cs),
/// except tab, newline and carriage return, which it counts as whitespace.
pub fn is_bert_control(c: char) -> bool {
    if matches!(c, '\t' | '\n' | '\r') {
        return false;
    }
    matches!(
        get_general_category(c),
        G::Control | G::Format | G::Unassigned | G::PrivateUse | G::Surrogate
    )
}

/// Whitespace for BERT's text cleaning: Unicode whitespace, tab, newline, carriage return.
pub fn is_bert_whitespace(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || c.is_whitespace()
}

/// BERT's punctuation: every ASCII punctuation character (including `$`, `+`, `^`, which are
/// symbols in Unicode) and every Unicode punctuation.
pub fn is_bert_punctuation(c: char) -> bool {
    c.is_ascii_punctuation() || is_punctuation(c)
}

/// The CJK ideographs BERT surrounds with spaces (so that each is its own word).
pub fn is_cjk(c: char) -> bool {
    matches!(
        c as u32,
        0x4E00..=0x9FFF
            | 0x3400..=0x4DBF
            | 0x20000..=0x2A6DF
            | 0x2A700..=0x2B73F
            | 0x2B740..=0x2B81F
            | 0x2B920..=0x2CEAF
            | 0xF900..=0xFAFF
            | 0x2F800..=0x2FA1F
    )
}
