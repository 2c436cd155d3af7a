//! The file's `truncation` and `padding`: how long an encoding may be, and what it is filled
//! up to. Takes the sequences as the model encoded them (before the post-processor adds its
//! special tokens) and returns them cut as the `tokenizers` library cuts them; then fills the
//! post-processed encoding with the padding token.

use super::json::Node;
use super::post_process::Encoded;
use super::Encoding;
use crate::Result;

/// The file's `truncation`: encodings at most `max_length` ids long, special tokens included.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Truncation {
    /// Cut from the start (`"Left"`) rather than from the end.
    from_start: bool,
    max_length: usize,
    strategy: Strategy,
    /// Overlap of the cut-off windows the library also returns; it changes no kept id, but
    /// the library refuses to cut where it is not below the kept length.
    stride: usize,
}

/// Which sequence of a pair gives up ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Strategy {
    /// The longer one, down to half of the room each.
    LongestFirst,
    OnlyFirst,
    OnlySecond,
}

impl Truncation {
    /// Reads the truncation at `node`.
    pub fn parse(node: &Node<'_>) -> Result<Self> {
        node.object()?;
        let strategy = match node.str("strategy")? {
            "LongestFirst" => Strategy::LongestFirst,
            "OnlyFirst" => Strategy::OnlyFirst,
            "OnlySecond" => Strategy::OnlySecond,
            other => {
                return Err(node.error(format!(
                    "unknown truncation strategy {other:?} (LongestFirst, OnlyFirst, OnlySecond)"
                )))
            }
        };
        Ok(Truncation {
            from_start: parse_direction(node)?,
            max_length: node.count_or("max_length", 512)?,
            strategy,
            stride: node.count_or("stride", 0)?,
        })
    }

    /// Cuts `a` (and `b`) so that together, with the `added` special tokens the
    /// post-processor will put around them, they are at most `max_length` ids long.
    ///
    /// As the library: a `max_length` below `added` cuts nothing (its subtraction wraps
    /// around); a `max_length` of exactly `added` empties both sequences.
    ///
    /// # Errors
    /// The library's refusals, as messages: `OnlySecond` without a second sequence, a
    /// sequence too short to give up what `OnlyFirst` or `OnlySecond` asks of it, or a
    /// `stride` not below the length a sequence is cut to.
    pub fn apply(
        &self,
        a: &mut Encoded,
        b: Option<&mut Encoded>,
        added: usize,
    ) -> std::result::Result<(), String> {
        let Some(max_length) = self.max_length.checked_sub(added) else {
            return Ok(());
        };
        if max_length == 0 {
            self.cut(a, 0)?;
            return b.map_or(Ok(()), |b| self.cut(b, 0));
        }
        let total = a.ids.len() + b.as_ref().map_or(0, |b| b.ids.len());
        if total <= max_length {
            return Ok(());
        }
        let excess = total - max_length;
        match (self.strategy, b) {
            (Strategy::LongestFirst, Some(b)) => {
                let (a_len, b_len) = (a.ids.len(), b.ids.len());
                // The shorter keeps its length if the longer can make room alone; else each
                // keeps half of `max_length` (the longer the odd one).
                let short = a_len.min(b_len);
                let (mut short_kept, mut long_kept) =
                    (short, short.max(max_length.saturating_sub(short)));
                if short_kept + long_kept > max_length {
                    short_kept = max_length / 2;
                    long_kept = short_kept + max_length % 2;
                }
                let (a_kept, b_kept) = if a_len > b_len {
                    (long_kept, short_kept)
                } else {
                    (short_kept, long_kept)
                };
                self.cut(a, a_kept)?;
                self.cut(b, b_kept)
            }
            (Strategy::LongestFirst | Strategy::OnlyFirst, None) => self.cut(a, max_length),
            (Strategy::OnlySecond, None) => Err("second sequence not provided".to_string()),
            (strategy, Some(b)) => {
                let target = if strategy == Strategy::OnlyFirst {
                    a
                } else {
                    b
                };
                if target.ids.len() <= excess {
                    return Err(
                        "sequence to truncate too short to respect the provided max_length"
                            .to_string(),
                    );
                }
                let kept = target.ids.len() - excess;
                self.cut(target, kept)
            }
        }
    }

    /// Keeps `len` ids of `sequence`, its first or its last.
    fn cut(&self, sequence: &mut Encoded, len: usize) -> std::result::Result<(), String> {
        let had = sequence.ids.len();
        if len >= had {
            return Ok(());
        }
        if len > 0 && self.stride >= len {
            return Err(format!(
                "`stride` ({}) must be less than the length a sequence is cut to ({len}: \
                 `max_length` less the special tokens)",
                self.stride
            ));
        }
        if self.from_start {
            sequence.ids.drain(..had - len);
            sequence.type_ids.drain(..had - len);
        } else {
            sequence.ids.truncate(len);
            sequence.type_ids.truncate(len);
        }
        Ok(())
    }
}

/// The file's `padding`: encodings filled with `pad_id` up to a fixed length or to the
/// longest of a batch, rounded up to a multiple.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Padding {
    /// `Fixed(n)`, or `None` for `BatchLongest`.
    fixed: Option<usize>,
    /// Pads before the ids (`"Left"`) rather than after.
    before: bool,
    multiple: Option<usize>,
    pad_id: u32,
    pad_type_id: u32,
}

impl Padding {
    /// Reads the padding at `node`.
    pub fn parse(node: &Node<'_>) -> Result<Self> {
        node.object()?;
        let strategy = node.member("strategy")?;
        let fixed = match strategy.value {
            serde_json::Value::String(s) if s == "BatchLongest" => None,
            serde_json::Value::Object(_) if strategy.get("Fixed").is_some() => {
                Some(length(&strategy, "Fixed")?)
            }
            _ => return Err(strategy.error("should be \"BatchLongest\" or {\"Fixed\": length}")),
        };
        let multiple = match node.get("pad_to_multiple_of") {
            None => None,
            Some(_) => Some(length(node, "pad_to_multiple_of")?),
        };
        Ok(Padding {
            fixed,
            before: parse_direction(node)?,
            multiple,
            pad_id: node
                .count_or("pad_id", 0)?
                .try_into()
                .map_err(|_| node.error("`pad_id` should be a token id"))?,
            pad_type_id: node
                .count_or("pad_type_id", 0)?
                .try_into()
                .map_err(|_| node.error("`pad_type_id` should be a type id"))?,
        })
    }

    /// The length encodings are padded to when the longest is `longest` ids.
    pub fn length(&self, longest: usize) -> usize {
        let length = self.fixed.unwrap_or(longest);
        match self.multiple {
            Some(multiple) if multiple > 0 => length.next_multiple_of(multiple),
            _ => length,
        }
    }

    /// Fills `encoding` up to `length` ids (nothing if it is at least as long): `pad_id`,
    /// `pad_type_id` and an attention of 0, before or after its ids.
    pub fn pad(&self, encoding: &mut Encoding, length: usize) {
        let missing = length.saturating_sub(encoding.ids.len());
        let fill = |values: &mut Vec<usize>, value: usize| {
            let pads = std::iter::repeat_n(value, missing);
            if self.before {
                values.splice(0..0, pads);
            } else {
                values.extend(pads);
            }
        };
        fill(&mut encoding.ids, self.pad_id as usize);
        fill(&mut encoding.type_ids, self.pad_type_id as usize);
        fill(&mut encoding.attention_mask, 0);
    }
}

/// The longest padding length a file may ask for (16 Mi tokens): a padding is memory each
/// encoding takes, and a corrupt length would otherwise be an allocation of any size.
const MAX_PADDED_LENGTH: usize = 1 << 24;

/// Member `key` of `node` as a padding length (at most [`MAX_PADDED_LENGTH`]).
fn length(node: &Node<'_>, key: &str) -> Result<usize> {
    let length = node.count_or(key, 0)?;
    if length > MAX_PADDED_LENGTH {
        return Err(node.error(format!(
            "`{key}` is {length}, more than the {MAX_PADDED_LENGTH} tokens kiln pads to"
        )));
    }
    Ok(length)
}

/// Whether a `direction` member says `"Left"` (absent: `"Right"`).
fn parse_direction(node: &Node<'_>) -> Result<bool> {
    match node.opt_str("direction")? {
        None | Some("Right") => Ok(false),
        Some("Left") => Ok(true),
        Some(other) => Err(node.error(format!("unknown direction {other:?} (Left, Right)"))),
    }
}
