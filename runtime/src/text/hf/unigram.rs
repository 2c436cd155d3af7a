//! The Unigram model (SentencePiece's, as in T5, ALBERT, XLM-RoBERTa): each vocabulary piece
//! has a log-probability, and a piece of text becomes the sequence of vocabulary pieces with
//! the highest total (Viterbi over every way to cut it).

use std::collections::HashMap;

use super::json::{as_id, Node};
use super::models::Unknown;
use crate::Result;

/// How far below the least likely piece an unknown character scores (the reference's
/// `K_UNK_PENALTY`).
const UNKNOWN_PENALTY: f64 = 10.0;

/// A Unigram model: pieces, their scores, and a trie to find the pieces a text starts with.
#[derive(Clone, Debug)]
pub struct Unigram {
    /// Each id's piece and score.
    pieces: Vec<(String, f64)>,
    /// Piece → id (for a piece listed twice, the later id, as the reference's map keeps).
    ids: HashMap<String, u32>,
    trie: Trie,
    unk: Option<u32>,
    byte_fallback: bool,
    min_score: f64,
}

/// What the Viterbi pass knows of the best cut of the text up to a position.
#[derive(Clone, Copy)]
struct BestPath {
    score: f64,
    /// Where the last piece of that cut starts (`None`: the position is not reached yet).
    start: Option<usize>,
    id: u32,
}

impl Unigram {
    /// Reads the Unigram model at `node` (`vocab` a list of `[piece, score]`).
    pub fn parse(node: &Node<'_>) -> Result<Self> {
        let vocab = node.member("vocab")?;
        let entries = vocab.elements()?;
        let mut pieces = Vec::with_capacity(entries.len());
        for entry in &entries {
            let pair = entry.value.as_array().filter(|pair| pair.len() == 2);
            let parsed = pair.and_then(|pair| Some((pair[0].as_str()?, pair[1].as_f64()?)));
            let (piece, score) = parsed.ok_or_else(|| {
                entry.error("a Unigram vocabulary entry should be [piece, score]")
            })?;
            pieces.push((piece.to_string(), score));
        }
        let unk = match node.get("unk_id") {
            None | Some(serde_json::Value::Null) => None,
            Some(id) => {
                let id = as_id(id)
                    .filter(|&id| (id as usize) < pieces.len())
                    .ok_or_else(|| {
                        node.error(format!(
                            "`unk_id` should be the id of a vocabulary entry (0 to {}), found {id}",
                            pieces.len().saturating_sub(1)
                        ))
                    })?;
                Some(id)
            }
        };
        Ok(Self::new(
            pieces,
            unk,
            node.bool_or("byte_fallback", false)?,
        ))
    }

    fn new(pieces: Vec<(String, f64)>, unk: Option<u32>, byte_fallback: bool) -> Self {
        let mut ids = HashMap::with_capacity(pieces.len());
        let mut trie = Trie::default();
        let mut min_score = f64::INFINITY;
        for (id, (piece, score)) in pieces.iter().enumerate() {
            ids.insert(piece.clone(), id as u32);
            trie.insert(piece.as_bytes(), id as u32);
            min_score = min_score.min(*score);
        }
        Unigram {
            pieces,
            ids,
            trie,
            unk,
            byte_fallback,
            min_score,
        }
    }

    /// Each piece → id (for the tokenizer's token tables).
    pub fn vocab(&self) -> &HashMap<String, u32> {
        &self.ids
    }

    /// Every id's piece, in id order.
    pub fn pieces(&self) -> impl Iterator<Item = &str> {
        self.pieces.iter().map(|(piece, _)| piece.as_str())
    }

    /// Appends the ids of `text`'s best cut to `ids`. A run of unknown characters is one
    /// unknown token (or, with byte fallback, its bytes' `<0x..>` tokens); its text goes to
    /// `unknown` with its place in `ids`, as the reference names such tokens by their text.
    pub fn tokenize(&self, text: &str, ids: &mut Vec<u32>, unknown: &mut Unknown) {
        for piece in self.best_cut(text) {
            if let Some(&id) = self.ids.get(piece) {
                ids.push(id);
                continue;
            }
            if self.byte_fallback {
                let bytes: Option<Vec<u32>> = piece
                    .bytes()
                    .map(|b| self.ids.get(&format!("<0x{b:02X}>")).copied())
                    .collect();
                if let Some(bytes) = bytes {
                    ids.extend(bytes);
                    continue;
                }
            }
            // Without an unknown token the reference fails to encode: the text is left out
            // and named, for the callers that can fail to say so (only hand-made files lack
            // `unk_id`).
            match self.unk {
                Some(unk) => {
                    unknown.named.push((ids.len(), piece.to_string()));
                    ids.push(unk);
                }
                None => {
                    unknown.dropped.get_or_insert_with(|| piece.to_string());
                }
            }
        }
    }

    /// The pieces of the highest-scoring cut of `text`, unknown runs fused (SentencePiece's
    /// Viterbi, ties kept by the earlier start).
    fn best_cut<'t>(&self, text: &'t str) -> Vec<&'t str> {
        if text.is_empty() {
            return Vec::new();
        }
        let unk_score = self.min_score - UNKNOWN_PENALTY;
        let unreached = BestPath {
            score: 0.0,
            start: None,
            id: 0,
        };
        let mut best = vec![unreached; text.len() + 1];
        let bytes = text.as_bytes();
        for (start, c) in text.char_indices() {
            let so_far = best[start].score;
            let char_len = c.len_utf8();
            let mut covers_char = false;
            let mut offer = |end: usize, id: u32, score: f64| {
                let candidate = so_far + score;
                let node = &mut best[end];
                if node.start.is_none() || candidate > node.score {
                    *node = BestPath {
                        score: candidate,
                        start: Some(start),
                        id,
                    };
                }
            };
            self.trie.for_each_prefix(&bytes[start..], |len, id| {
                offer(start + len, id, self.pieces[id as usize].1);
                covers_char |= len == char_len;
            });
            if !covers_char {
                offer(start + char_len, self.unk.unwrap_or(u32::MAX), unk_score);
            }
        }
        let is_unknown = |id: u32| self.unk.map_or(id == u32::MAX, |unk| id == unk);
        let mut cut = Vec::new();
        let mut end = text.len();
        // Where the run of unknown pieces being fused ends (they are met back to front).
        let mut unknown_end = None;
        while end > 0 {
            let node = best[end];
            let start = node.start.unwrap_or(0);
            if is_unknown(node.id) {
                unknown_end.get_or_insert(end);
            } else {
                if let Some(run_end) = unknown_end.take() {
                    cut.push(&text[end..run_end]);
                }
                cut.push(&text[start..end]);
            }
            end = start;
        }
        if let Some(run_end) = unknown_end {
            cut.push(&text[..run_end]);
        }
        cut.reverse();
        cut
    }
}

/// A byte trie of the vocabulary's pieces, to list the pieces a text starts with.
#[derive(Clone, Debug, Default)]
struct Trie {
    /// (node, byte) → child node; node 0 is the root.
    edges: HashMap<(u32, u8), u32>,
    /// The id of the piece ending at each node, if one does (for a piece listed twice, the
    /// later id, as the piece → id map keeps).
    ends: Vec<Option<u32>>,
}

impl Trie {
    fn insert(&mut self, piece: &[u8], id: u32) {
        if self.ends.is_empty() {
            self.ends.push(None);
        }
        let mut node = 0u32;
        for &b in piece {
            let next = self.ends.len() as u32;
            node = *self.edges.entry((node, b)).or_insert(next);
            if node == next {
                self.ends.push(None);
            }
        }
        if !piece.is_empty() {
            self.ends[node as usize] = Some(id);
        }
    }

    /// Calls `found` with the length and id of every piece `text` starts with, shortest
    /// first.
    fn for_each_prefix(&self, text: &[u8], mut found: impl FnMut(usize, u32)) {
        let mut node = 0u32;
        for (i, &b) in text.iter().enumerate() {
            match self.edges.get(&(node, b)) {
                Some(&next) => node = next,
                None => return,
            }
            if let Some(id) = self.ends[node as usize] {
                found(i + 1, id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(pieces: &[(&str, f64)], unk: Option<u32>, byte_fallback: bool) -> Unigram {
        let pieces = pieces.iter().map(|&(p, s)| (p.to_string(), s)).collect();
        Unigram::new(pieces, unk, byte_fallback)
    }

    /// The best score of any cut of `text` into known pieces, by trying every cut.
    fn brute_force(m: &Unigram, text: &str) -> Option<f64> {
        if text.is_empty() {
            return Some(0.0);
        }
        (1..=text.len())
            .filter(|&end| text.is_char_boundary(end))
            .filter_map(|end| {
                let id = *m.ids.get(&text[..end])?;
                Some(m.pieces[id as usize].1 + brute_force(m, &text[end..])?)
            })
            .reduce(f64::max)
    }

    fn score(m: &Unigram, cut: &[&str]) -> f64 {
        cut.iter().map(|p| m.pieces[m.ids[*p] as usize].1).sum()
    }

    #[test]
    fn the_best_cut_is_the_highest_scoring_one() {
        let m = model(
            &[
                ("<unk>", 0.0),
                ("a", -1.0),
                ("b", -1.5),
                ("c", -2.0),
                ("ab", -2.0),
                ("bc", -2.2),
                ("abc", -4.5),
                ("ca", -1.2),
                ("é", -3.0),
            ],
            Some(0),
            false,
        );
        let mut state = 7u64;
        for _ in 0..300 {
            let mut text = String::new();
            for _ in 0..(state % 9) {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                text.push(['a', 'b', 'c', 'é'][(state >> 60) as usize % 4]);
            }
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
            let want = brute_force(&m, &text).expect("every character is a piece");
            let cut = m.best_cut(&text);
            assert_eq!(cut.concat(), text);
            assert!((score(&m, &cut) - want).abs() < 1e-9, "{text:?}: {cut:?}");
        }
    }

    #[test]
    fn unknown_runs_fuse_and_fall_back_to_bytes() {
        let m = model(&[("<unk>", 0.0), ("a", -1.0), ("b", -1.0)], Some(0), false);
        assert_eq!(m.best_cut("axyb€a"), ["a", "xy", "b", "€", "a"]);
        assert_eq!(m.best_cut("axyzb"), ["a", "xyz", "b"]);
        let (mut ids, mut unknown) = (Vec::new(), Unknown::default());
        m.tokenize("xyazz", &mut ids, &mut unknown);
        assert_eq!(ids, [0, 1, 0]);
        assert_eq!(
            unknown.named,
            [(0, "xy".to_string()), (2, "zz".to_string())]
        );
        assert_eq!(unknown.dropped, None);

        // Without an unknown token: left out, and the first such text named.
        let m = model(&[("a", -1.0), ("b", -1.0)], None, false);
        let (mut ids, mut unknown) = (Vec::new(), Unknown::default());
        m.tokenize("xyazzb", &mut ids, &mut unknown);
        assert_eq!(ids, [0, 1]);
        assert_eq!(unknown.dropped.as_deref(), Some("xy"));

        // An unknown character scores 10 below the least likely piece: here `xa` (-1) beats
        // `x` unknown (-11) followed by `a` (+5).
        let m = model(&[("<unk>", 0.0), ("a", 5.0), ("xa", -1.0)], Some(0), false);
        assert_eq!(m.best_cut("xa"), ["xa"]);
        assert_eq!(m.best_cut("ya"), ["y", "a"]);

        let mut pieces = vec![("<unk>", 0.0), ("a", -1.0)];
        let names: Vec<String> = (0..=255u8).map(|b| format!("<0x{b:02X}>")).collect();
        pieces.extend(names.iter().map(|n| (n.as_str(), 0.0)));
        let m = model(&pieces, Some(0), true);
        let (mut ids, mut unknown) = (Vec::new(), Unknown::default());
        m.tokenize("aé", &mut ids, &mut unknown);
        assert_eq!(ids, [1, 2 + 0xC3, 2 + 0xA9]);
        assert!(unknown.named.is_empty() && unknown.dropped.is_none());
    }
}
