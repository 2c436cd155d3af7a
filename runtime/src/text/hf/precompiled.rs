//! The `Precompiled` normalizer: SentencePiece's normalization rules (`nmt_nfkc` and its
//! kin) as the model file ships them, a character map compiled into a double-array trie.
//!
//! The `precompiled_charsmap` member is base64 of: the trie's size in bytes (u32, little
//! endian), the trie (darts-clone's double array of u32 units), then the replacement strings,
//! each ending in a NUL byte. A match of the text's bytes in the trie gives the offset of the
//! replacement in that pool.

use unicode_segmentation::UnicodeSegmentation;

use super::json::Node;
use crate::Result;

/// A compiled SentencePiece character map.
#[derive(Clone, Debug, PartialEq)]
pub struct CharsMap {
    /// The double array.
    units: Vec<u32>,
    /// The replacement strings, NUL-terminated, end to end.
    pool: Vec<u8>,
}

impl CharsMap {
    /// Reads the `precompiled_charsmap` member of the normalizer at `node`.
    pub fn parse(node: &Node<'_>) -> Result<Self> {
        let encoded = node.str("precompiled_charsmap")?;
        let bytes = decode_base64(encoded).ok_or_else(|| {
            node.error("`precompiled_charsmap` is not base64 (as the tokenizers library writes it)")
        })?;
        Self::from_bytes(&bytes).ok_or_else(|| {
            node.error(format!(
                "`precompiled_charsmap` is not a compiled character map: {} bytes, which do not \
                 hold the trie size they start with and the trie",
                bytes.len()
            ))
        })
    }

    /// The map in `bytes`, or `None` if they are too short for the trie they announce.
    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let size = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
        let trie = bytes.get(4..4usize.checked_add(size)?)?;
        if !size.is_multiple_of(4) {
            return None;
        }
        let units = trie
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Some(CharsMap {
            units,
            pool: bytes[4 + size..].to_vec(),
        })
    }

    /// `text` normalized as the tokenizers library does it: grapheme by grapheme, a grapheme
    /// shorter than 6 bytes replaced whole if it starts with a mapped sequence, else each of
    /// its characters replaced or kept. Also whether the first character survived (it is not
    /// mapped to nothing), as [`Normalizer::apply_keeping_start`](super::normalize::Normalizer)
    /// reports.
    pub fn normalize(&self, text: &str) -> (String, bool) {
        let mut out = String::with_capacity(text.len());
        // The output's length once the first grapheme is written.
        let mut first_len = None;
        for grapheme in text.graphemes(true) {
            let whole = (grapheme.len() < 6)
                .then(|| self.transform(grapheme))
                .flatten();
            match whole {
                Some(replacement) => out.push_str(replacement),
                None => {
                    let mut buf = [0u8; 4];
                    for c in grapheme.chars() {
                        let part = &*c.encode_utf8(&mut buf);
                        out.push_str(self.transform(part).unwrap_or(part));
                    }
                }
            }
            first_len.get_or_insert(out.len());
        }
        (out, first_len != Some(0))
    }

    /// The replacement for the shortest mapped sequence `chunk` starts with: the whole chunk
    /// is replaced by it, whatever of the chunk the sequence covers (the reference's rule).
    fn transform(&self, chunk: &str) -> Option<&str> {
        let start = self.shortest_prefix_value(chunk.as_bytes())? as usize;
        let rest = self.pool.get(start..)?;
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).ok()
    }

    /// darts-clone's common-prefix search, stopped at the first match: the value stored for
    /// the shortest prefix of `key` in the trie. A unit outside the array ends the search
    /// (a damaged map normalizes less, it never panics).
    fn shortest_prefix_value(&self, key: &[u8]) -> Option<u32> {
        let unit_at = |pos: usize| self.units.get(pos).copied();
        let offset = |unit: u32| ((unit >> 10) << ((unit & (1 << 9)) >> 6)) as usize;
        let mut pos = offset(unit_at(0)?);
        for &byte in key {
            if byte == 0 {
                return None;
            }
            pos ^= usize::from(byte);
            let unit = unit_at(pos)?;
            // The label: the byte this unit is reached by, and the leaf flag's absence.
            if unit & ((1 << 31) | 0xFF) != u32::from(byte) {
                return None;
            }
            pos ^= offset(unit);
            if (unit >> 8) & 1 == 1 {
                return Some(unit_at(pos)? & ((1 << 31) - 1));
            }
        }
        None
    }
}

/// Standard base64 (with or without `=` padding); `None` for any other character.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let text = text.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for chunk in text.chunks(4) {
        if chunk.len() == 1 {
            return None;
        }
        let mut bits = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            bits |= digit(c)? << (18 - 6 * i);
        }
        out.extend_from_slice(&bits.to_be_bytes()[1..chunk.len()]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_with_and_without_padding() {
        assert_eq!(decode_base64("aGVsbG8="), Some(b"hello".to_vec()));
        assert_eq!(decode_base64("aGVsbG8"), Some(b"hello".to_vec()));
        assert_eq!(decode_base64("aGVsbA=="), Some(b"hell".to_vec()));
        assert_eq!(decode_base64("aGVs"), Some(b"hel".to_vec()));
        assert_eq!(decode_base64(""), Some(Vec::new()));
        assert_eq!(decode_base64("a"), None);
        assert_eq!(decode_base64("aGV!"), None);
    }

    #[test]
    fn short_or_damaged_maps_are_refused_or_harmless() {
        assert_eq!(CharsMap::from_bytes(&[1, 0]), None);
        // Announces 8 bytes of trie, holds 4.
        assert_eq!(CharsMap::from_bytes(&[8, 0, 0, 0, 1, 2, 3, 4]), None);
        // A trie whose units point outside the array maps nothing.
        let map = CharsMap::from_bytes(&[4, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]).expect("a map");
        assert_eq!(map.normalize("abc ½"), ("abc ½".to_string(), true));
        let empty = CharsMap::from_bytes(&[0, 0, 0, 0]).expect("a map");
        assert_eq!(empty.normalize("abc"), ("abc".to_string(), true));
    }
}
