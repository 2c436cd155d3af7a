//! Models: how one pre-tokenized piece becomes token ids (BPE merges, WordPiece's greedy
//! longest match, a word-level lookup, and Unigram's best cut in its own module).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use super::json::{as_id, kind as json_kind, Node};
use super::unigram::Unigram;
use crate::Result;

/// The file's `model`.
#[derive(Clone, Debug)]
pub enum Model {
    /// Byte-pair encoding.
    Bpe(Bpe),
    /// BERT's WordPiece.
    WordPiece(WordPiece),
    /// One id per known word.
    WordLevel {
        vocab: HashMap<String, u32>,
        unk: u32,
    },
    /// SentencePiece's unigram language model.
    Unigram(Unigram),
}

/// A BPE model: its vocabulary and merge ranks.
#[derive(Clone, Debug)]
pub struct Bpe {
    vocab: HashMap<String, u32>,
    /// `(left id, right id)` → (rank, merged id).
    merges: HashMap<(u32, u32), (u32, u32)>,
    unk: Option<u32>,
    continuing_subword_prefix: Option<String>,
    end_of_word_suffix: Option<String>,
    fuse_unk: bool,
    byte_fallback: bool,
    ignore_merges: bool,
}

/// A WordPiece model.
#[derive(Clone, Debug)]
pub struct WordPiece {
    vocab: HashMap<String, u32>,
    unk: u32,
    prefix: String,
    max_chars: usize,
}

/// What a model could not give the vocabulary's own token for.
#[derive(Debug, Default)]
pub struct Unknown {
    /// Tokens named by their text rather than by the vocabulary's string for their id
    /// (Unigram's unknown runs), with their place in the ids.
    pub named: Vec<(usize, String)>,
    /// The first text left out for want of an unknown token (a Unigram model without
    /// `unk_id`), which the reference refuses to encode.
    pub dropped: Option<String>,
}

impl Model {
    /// Reads the model at `node`.
    pub fn parse(node: &Node<'_>) -> Result<Self> {
        node.object()?;
        // Files older than the `type` field hold a BPE model.
        let kind = node.opt_str("type")?.unwrap_or("BPE");
        if kind == "Unigram" {
            return Ok(Model::Unigram(Unigram::parse(node)?));
        }
        let vocab = parse_vocab(&node.member("vocab")?)?;
        let unk_id = |name: Option<&str>| -> Result<Option<u32>> {
            name.map(|name| {
                vocab.get(name).copied().ok_or_else(|| {
                    node.error(format!(
                        "the unknown token `{name}` is not in the vocabulary"
                    ))
                })
            })
            .transpose()
        };
        Ok(match kind {
            "BPE" => {
                if node
                    .get("dropout")
                    .and_then(|d| d.as_f64())
                    .is_some_and(|d| d > 0.0)
                {
                    return Err(node.error(
                        "BPE dropout is set: encoding would be random; set `dropout` to null",
                    ));
                }
                let unk = unk_id(node.opt_str("unk_token")?)?;
                let prefix = node
                    .opt_str("continuing_subword_prefix")?
                    .map(str::to_string);
                let merges_node = node.member("merges")?;
                let mut merges = HashMap::new();
                let prefix_len = prefix.as_ref().map_or(0, String::len);
                for (rank, entry) in merges_node.elements()?.iter().enumerate() {
                    let (a, b) = match entry.value {
                        serde_json::Value::String(s) => s.split_once(' ').ok_or_else(|| {
                            entry.error(format!("the merge `{s}` is not two tokens"))
                        })?,
                        serde_json::Value::Array(pair) if pair.len() == 2 => {
                            match (pair[0].as_str(), pair[1].as_str()) {
                                (Some(a), Some(b)) => (a, b),
                                _ => return Err(entry.error("a merge pair should be two strings")),
                            }
                        }
                        other => {
                            return Err(entry.error(format!(
                                "a merge should be \"a b\" or [\"a\", \"b\"], found {}",
                                json_kind(other)
                            )))
                        }
                    };
                    let id = |token: &str| {
                        vocab.get(token).copied().ok_or_else(|| {
                            entry.error(format!(
                                "the merge's token `{token}` is not in the vocabulary"
                            ))
                        })
                    };
                    let pair = (id(a)?, id(b)?);
                    let merged = format!("{a}{}", b.get(prefix_len..).unwrap_or(""));
                    let new_id = id(&merged)?;
                    merges.entry(pair).or_insert((rank as u32, new_id));
                }
                Model::Bpe(Bpe {
                    unk,
                    continuing_subword_prefix: prefix,
                    end_of_word_suffix: node.opt_str("end_of_word_suffix")?.map(str::to_string),
                    fuse_unk: node.bool_or("fuse_unk", false)?,
                    byte_fallback: node.bool_or("byte_fallback", false)?,
                    ignore_merges: node.bool_or("ignore_merges", false)?,
                    merges,
                    vocab,
                })
            }
            "WordPiece" => {
                let unk = unk_id(Some(node.opt_str("unk_token")?.unwrap_or("[UNK]")))?
                    .unwrap_or_default();
                let max_chars = node.count_or("max_input_chars_per_word", 100)?;
                Model::WordPiece(WordPiece {
                    unk,
                    prefix: node
                        .opt_str("continuing_subword_prefix")?
                        .unwrap_or("##")
                        .to_string(),
                    max_chars,
                    vocab,
                })
            }
            "WordLevel" => {
                let unk = unk_id(Some(node.opt_str("unk_token")?.unwrap_or("<unk>")))?
                    .unwrap_or_default();
                Model::WordLevel { vocab, unk }
            }
            other => {
                return Err(node.error(format!(
                    "model `{other}` is not supported (supported: BPE, WordPiece, WordLevel, \
                     Unigram)"
                )))
            }
        })
    }

    /// The model's vocabulary, token → id.
    pub fn vocab(&self) -> &HashMap<String, u32> {
        match self {
            Model::Bpe(bpe) => &bpe.vocab,
            Model::WordPiece(wp) => &wp.vocab,
            Model::WordLevel { vocab, .. } => vocab,
            Model::Unigram(unigram) => unigram.vocab(),
        }
    }

    /// Every (id, token) of the vocabulary (a Unigram piece listed twice has both ids).
    pub fn tokens(&self) -> Vec<(u32, String)> {
        match self {
            Model::Unigram(unigram) => (0..).zip(unigram.pieces().map(str::to_string)).collect(),
            _ => self
                .vocab()
                .iter()
                .map(|(token, &id)| (id, token.clone()))
                .collect(),
        }
    }

    /// Appends the ids of `piece` to `ids`. Tokens that are not the vocabulary's string for
    /// their id, and text with no id at all, go to `unknown` (see [`Unknown`]).
    pub fn tokenize(&self, piece: &str, ids: &mut Vec<u32>, unknown: &mut Unknown) {
        match self {
            Model::Bpe(bpe) => bpe.tokenize(piece, ids),
            Model::WordPiece(wp) => wp.tokenize(piece, ids),
            Model::WordLevel { vocab, unk } => ids.push(vocab.get(piece).copied().unwrap_or(*unk)),
            Model::Unigram(unigram) => unigram.tokenize(piece, ids, unknown),
        }
    }
}

/// `{"token": id, ...}`.
fn parse_vocab(node: &Node<'_>) -> Result<HashMap<String, u32>> {
    let members = node.object()?;
    let mut vocab = HashMap::with_capacity(members.len());
    for (token, id) in members {
        let id = as_id(id).ok_or_else(|| {
            node.error(format!(
                "the id of `{token}` should be a token id, found {id}"
            ))
        })?;
        vocab.insert(token.clone(), id);
    }
    Ok(vocab)
}

impl Bpe {
    fn tokenize(&self, piece: &str, ids: &mut Vec<u32>) {
        if self.ignore_merges {
            if let Some(&id) = self.vocab.get(piece) {
                ids.push(id);
                return;
            }
        }
        // The piece as symbols: one per character, or its bytes' `<0xXX>` tokens, or unknown.
        let mut symbols: Vec<u32> = Vec::with_capacity(piece.len());
        let mut last_unknown = false;
        let count = piece.chars().count();
        let mut token = String::new();
        for (i, c) in piece.chars().enumerate() {
            token.clear();
            if i > 0 {
                if let Some(prefix) = &self.continuing_subword_prefix {
                    token.push_str(prefix);
                }
            }
            token.push(c);
            if i + 1 == count {
                if let Some(suffix) = &self.end_of_word_suffix {
                    token.push_str(suffix);
                }
            }
            if let Some(&id) = self.vocab.get(&token) {
                symbols.push(id);
                last_unknown = false;
                continue;
            }
            if self.byte_fallback {
                let mut buf = [0u8; 4];
                let bytes: Option<Vec<u32>> = c
                    .encode_utf8(&mut buf)
                    .bytes()
                    .map(|b| self.vocab.get(&format!("<0x{b:02X}>")).copied())
                    .collect();
                if let Some(bytes) = bytes {
                    symbols.extend(bytes);
                    last_unknown = false;
                    continue;
                }
            }
            if let Some(unk) = self.unk {
                if !(self.fuse_unk && last_unknown) {
                    symbols.push(unk);
                }
                last_unknown = true;
            }
        }
        self.merge(&mut symbols);
        ids.extend(symbols);
    }
}

impl Bpe {
    /// Merges the adjacent pair of the lowest rank (the leftmost of equals) until no pair has
    /// a merge. A heap of candidate pairs over a linked list of symbols keeps this
    /// `O(n log n)`, so a long piece without spaces (a URL, a base64 blob) is no slower per
    /// character than a word.
    fn merge(&self, symbols: &mut Vec<u32>) {
        const NONE: usize = usize::MAX;
        let n = symbols.len();
        if n < 2 {
            return;
        }
        let mut next: Vec<usize> = (1..=n).map(|i| if i == n { NONE } else { i }).collect();
        let mut prev: Vec<usize> = (0..n).map(|i| if i == 0 { NONE } else { i - 1 }).collect();
        let mut alive = vec![true; n];
        // (rank, position of the left symbol, merged id), smallest first.
        let mut heap = BinaryHeap::new();
        let candidate = |symbols: &[u32], left: usize, right: usize| {
            self.merges
                .get(&(symbols[left], symbols[right]))
                .map(|&(rank, id)| Reverse((rank, left, id)))
        };
        for i in 0..n - 1 {
            heap.extend(candidate(symbols, i, i + 1));
        }
        while let Some(Reverse((rank, left, id))) = heap.pop() {
            let right = next[left];
            // Skip pairs that an earlier merge changed.
            if !alive[left]
                || right == NONE
                || self.merges.get(&(symbols[left], symbols[right])) != Some(&(rank, id))
            {
                continue;
            }
            symbols[left] = id;
            alive[right] = false;
            next[left] = next[right];
            if next[left] != NONE {
                prev[next[left]] = left;
                heap.extend(candidate(symbols, left, next[left]));
            }
            if prev[left] != NONE {
                heap.extend(candidate(symbols, prev[left], left));
            }
        }
        let mut i = 0;
        symbols.retain(|_| {
            i += 1;
            alive[i - 1]
        });
    }
}

impl WordPiece {
    fn tokenize(&self, piece: &str, ids: &mut Vec<u32>) {
        if piece.chars().count() > self.max_chars {
            ids.push(self.unk);
            return;
        }
        let first = ids.len();
        let mut start = 0;
        let mut candidate = String::new();
        while start < piece.len() {
            let mut end = piece.len();
            let mut found = None;
            while start < end {
                candidate.clear();
                if start > 0 {
                    candidate.push_str(&self.prefix);
                }
                candidate.push_str(&piece[start..end]);
                if let Some(&id) = self.vocab.get(&candidate) {
                    found = Some(id);
                    break;
                }
                end -= piece[..end].chars().next_back().map_or(1, char::len_utf8);
            }
            match found {
                Some(id) => {
                    ids.push(id);
                    start = end;
                }
                None => {
                    // Any part unknown: the whole word is the unknown token.
                    ids.truncate(first);
                    ids.push(self.unk);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BPE over the letters `a`–`d` with merges of every pair of tokens up to length 4,
    /// ranked by a fixed shuffle.
    fn bpe() -> Bpe {
        let mut vocab: HashMap<String, u32> = HashMap::new();
        let mut tokens: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        for t in &tokens {
            let id = vocab.len() as u32;
            vocab.insert(t.clone(), id);
        }
        let mut merges = HashMap::new();
        let mut rank = 0u32;
        let mut state = 12345u64;
        for _ in 0..3 {
            let current = tokens.clone();
            for a in &current {
                for b in &current {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    if a.len() + b.len() > 4 || state >> 62 != 0 {
                        continue;
                    }
                    let merged = format!("{a}{b}");
                    let next_id = vocab.len() as u32;
                    let id = *vocab.entry(merged.clone()).or_insert(next_id);
                    if id == next_id {
                        tokens.push(merged);
                    }
                    merges.entry((vocab[a], vocab[b])).or_insert((rank, id));
                    rank += 1;
                }
            }
        }
        Bpe {
            vocab,
            merges,
            unk: None,
            continuing_subword_prefix: None,
            end_of_word_suffix: None,
            fuse_unk: false,
            byte_fallback: false,
            ignore_merges: false,
        }
    }

    /// The definition: merge the lowest-ranked, leftmost pair, one at a time.
    fn merge_slowly(bpe: &Bpe, symbols: &mut Vec<u32>) {
        loop {
            let best = symbols
                .windows(2)
                .enumerate()
                .filter_map(|(i, w)| bpe.merges.get(&(w[0], w[1])).map(|&(r, id)| (r, i, id)))
                .min_by_key(|&(r, i, _)| (r, i));
            let Some((_, i, id)) = best else { break };
            symbols[i] = id;
            symbols.remove(i + 1);
        }
    }

    #[test]
    fn heap_merge_equals_the_definition() {
        let bpe = bpe();
        assert!(bpe.merges.len() > 20, "{} merges", bpe.merges.len());
        let mut state = 99u64;
        for len in 0..200 {
            let text: String = (0..len)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                    ['a', 'b', 'c', 'd'][(state >> 62) as usize]
                })
                .collect();
            let mut fast = Vec::new();
            bpe.tokenize(&text, &mut fast);
            let mut slow: Vec<u32> = text.chars().map(|c| bpe.vocab[&c.to_string()]).collect();
            merge_slowly(&bpe, &mut slow);
            assert_eq!(fast, slow, "{text}");
        }
    }
}
