//! GPT-2's byte-level alphabet.
//!
//! Byte-level BPE works on bytes, but its vocabulary is stored as text: each byte is shown as
//! one printable character (`' '` as `Ġ`, `'\n'` as `Ċ`).

use std::sync::OnceLock;

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
}
