//! Post-processors: the special tokens a `tokenizer.json` puts around one sequence or a pair
//! (`[CLS] A [SEP] B [SEP]`, `<s> A </s></s> B </s>`), and the segment (type) ids.

use std::collections::HashMap;

use super::json::Node;
use crate::Result;

/// The file's `post_processor`.
#[derive(Clone, Debug, PartialEq)]
pub enum PostProcessor {
    /// Templates for one sequence and for a pair.
    Template {
        single: Vec<Piece>,
        pair: Vec<Piece>,
        specials: HashMap<String, Vec<u32>>,
    },
    /// `[CLS] A [SEP]`, `[CLS] A [SEP] B [SEP]` with type ids 0 then 1.
    Bert { cls: u32, sep: u32 },
    /// `<s> A </s>`, `<s> A </s></s> B </s>`, all type ids 0.
    Roberta { cls: u32, sep: u32 },
    /// GPT-2's: it changes offsets only, never ids (also what a `Sequence` whose members
    /// add no tokens amounts to).
    ByteLevel,
}

/// One element of a template.
#[derive(Clone, Debug, PartialEq)]
pub enum Piece {
    /// A special token (by its name in the template's `special_tokens`).
    Special { name: String, type_id: u32 },
    /// The first (`A`) or second (`B`) sequence.
    Sequence { second: bool, type_id: u32 },
}

/// One or two encoded sequences: ids and type ids.
pub struct Encoded {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
}

impl PostProcessor {
    /// Reads the post-processor at `node`.
    pub fn parse(node: &Node<'_>) -> Result<Self> {
        node.object()?;
        let token = |key: &str| -> Result<u32> {
            let pair = node.member(key)?;
            let items = pair.elements()?;
            match items.as_slice() {
                [_, id] => id.as_token_id(),
                _ => Err(pair.error("should be [token, id]")),
            }
        };
        Ok(match node.kind()? {
            "TemplateProcessing" => {
                let template = |key: &str| -> Result<Vec<Piece>> {
                    node.member(key)?
                        .elements()?
                        .iter()
                        .map(parse_piece)
                        .collect()
                };
                let mut specials = HashMap::new();
                if let Some(map) = node.opt_member("special_tokens") {
                    for name in map.object()?.keys() {
                        let ids = map
                            .member(name)?
                            .member("ids")?
                            .elements()?
                            .iter()
                            .map(Node::as_token_id)
                            .collect::<Result<Vec<u32>>>()?;
                        specials.insert(name.clone(), ids);
                    }
                }
                let single = template("single")?;
                let pair = template("pair")?;
                for piece in single.iter().chain(&pair) {
                    if let Piece::Special { name, .. } = piece {
                        if !specials.contains_key(name) {
                            return Err(node.error(format!(
                                "the template uses `{name}`, which `special_tokens` does not define"
                            )));
                        }
                    }
                }
                PostProcessor::Template {
                    single,
                    pair,
                    specials,
                }
            }
            "BertProcessing" => PostProcessor::Bert {
                cls: token("cls")?,
                sep: token("sep")?,
            },
            "RobertaProcessing" => PostProcessor::Roberta {
                cls: token("cls")?,
                sep: token("sep")?,
            },
            "ByteLevel" => PostProcessor::ByteLevel,
            "Sequence" => {
                // Only one of them may add tokens; the byte-level ones change offsets only.
                let mut effective = Vec::new();
                for processor in node.member("processors")?.elements()? {
                    match PostProcessor::parse(&processor)? {
                        PostProcessor::ByteLevel => {}
                        other => effective.push((processor.at.clone(), other)),
                    }
                }
                match effective.len() {
                    0 => PostProcessor::ByteLevel,
                    1 => effective.remove(0).1,
                    _ => {
                        return Err(node.error(format!(
                            "a sequence of post-processors that each add tokens ({}) is not \
                             supported",
                            effective
                                .iter()
                                .map(|(at, _)| at.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )))
                    }
                }
            }
            other => {
                return Err(node.error(format!(
                    "post-processor `{other}` is not supported (supported: \
                     TemplateProcessing, BertProcessing, RobertaProcessing, ByteLevel, and a Sequence of \
                     them that adds tokens in one member)"
                )))
            }
        })
    }

    /// How many special tokens [`PostProcessor::process`] puts around one sequence, or
    /// around a pair (what a truncation leaves room for).
    pub fn added_tokens(&self, pair: bool) -> usize {
        match self {
            PostProcessor::Template {
                single,
                pair: pair_template,
                specials,
            } => {
                let template = if pair { pair_template } else { single };
                template
                    .iter()
                    .map(|piece| match piece {
                        Piece::Special { name, .. } => specials.get(name).map_or(0, Vec::len),
                        Piece::Sequence { .. } => 0,
                    })
                    .sum()
            }
            PostProcessor::Bert { .. } => 2 + usize::from(pair),
            PostProcessor::Roberta { .. } => 2 + 2 * usize::from(pair),
            PostProcessor::ByteLevel => 0,
        }
    }

    /// The final ids and type ids of `a` (type 0) and `b` (type 1), with the special tokens
    /// if `add_special_tokens`.
    pub fn process(&self, a: Encoded, b: Option<Encoded>, add_special_tokens: bool) -> Encoded {
        match self {
            PostProcessor::Template {
                single,
                pair,
                specials,
            } => {
                let template = if b.is_some() { pair } else { single };
                let mut out = Encoded {
                    ids: Vec::new(),
                    type_ids: Vec::new(),
                };
                for piece in template {
                    match piece {
                        Piece::Special { name, type_id } => {
                            if add_special_tokens {
                                let ids = specials.get(name).map_or(&[][..], Vec::as_slice);
                                out.ids.extend_from_slice(ids);
                                out.type_ids
                                    .extend(std::iter::repeat_n(*type_id, ids.len()));
                            }
                        }
                        Piece::Sequence { second, type_id } => {
                            let seq = if *second { b.as_ref() } else { Some(&a) };
                            if let Some(seq) = seq {
                                out.ids.extend_from_slice(&seq.ids);
                                out.type_ids
                                    .extend(std::iter::repeat_n(*type_id, seq.ids.len()));
                            }
                        }
                    }
                }
                out
            }
            PostProcessor::Bert { cls, sep } if add_special_tokens => {
                around(*cls, *sep, &a, b.as_ref(), &[], 1)
            }
            PostProcessor::Roberta { cls, sep } if add_special_tokens => {
                around(*cls, *sep, &a, b.as_ref(), &[*sep], 0)
            }
            // RoBERTa's segments are all 0, with or without its special tokens.
            PostProcessor::Roberta { .. } => {
                let mut out = concatenate(a, b);
                out.type_ids.fill(0);
                out
            }
            PostProcessor::Bert { .. } | PostProcessor::ByteLevel => concatenate(a, b),
        }
    }
}

/// `a` then `b`, each with its own type ids (no special tokens).
pub fn concatenate(mut a: Encoded, b: Option<Encoded>) -> Encoded {
    if let Some(b) = b {
        a.ids.extend(b.ids);
        a.type_ids.extend(b.type_ids);
    }
    a
}

/// `cls A sep`, then for a pair `between B sep` with type id `b_type` (BERT: no `between`,
/// type 1; RoBERTa: a second `sep`, type 0).
fn around(
    cls: u32,
    sep: u32,
    a: &Encoded,
    b: Option<&Encoded>,
    between: &[u32],
    b_type: u32,
) -> Encoded {
    let mut out = Encoded {
        ids: vec![cls],
        type_ids: vec![0],
    };
    push(&mut out, &a.ids, 0);
    push(&mut out, &[sep], 0);
    if let Some(b) = b {
        push(&mut out, between, 0);
        push(&mut out, &b.ids, b_type);
        push(&mut out, &[sep], b_type);
    }
    out
}

fn push(out: &mut Encoded, ids: &[u32], type_id: u32) {
    out.ids.extend_from_slice(ids);
    out.type_ids.extend(std::iter::repeat_n(type_id, ids.len()));
}

/// `{"SpecialToken": {"id": "[CLS]", "type_id": 0}}` or `{"Sequence": {"id": "A", ...}}`.
fn parse_piece(node: &Node<'_>) -> Result<Piece> {
    if let Some(special) = node.opt_member("SpecialToken") {
        return Ok(Piece::Special {
            name: special.str("id")?.to_string(),
            type_id: special.id("type_id")?,
        });
    }
    if let Some(sequence) = node.opt_member("Sequence") {
        let second = match sequence.str("id")? {
            "A" => false,
            "B" => true,
            other => return Err(sequence.error(format!("the sequence `{other}` is not A or B"))),
        };
        return Ok(Piece::Sequence {
            second,
            type_id: sequence.id("type_id")?,
        });
    }
    Err(node.error("a template piece should be `SpecialToken` or `Sequence`"))
}
