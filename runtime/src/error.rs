//! The runtime's error type. Every failure a user can cause at run time (a wrong input shape, a
//! label out of range, a malformed checkpoint) is an [`Error`], never a panic.

use std::path::PathBuf;

/// Everything that can go wrong at run time.
///
/// `Debug` prints the same sentence as `Display`: it is what a `fn main() -> kiln::Result<()>`
/// prints on an error, and what `unwrap` and `expect` show, so they read as the message and not
/// as the fields. Match on the variants to read the fields.
pub enum Error {
    /// An input or target had the wrong shape.
    Shape {
        /// `"input"` or `"target"`.
        kind: &'static str,
        /// The name declared in the model.
        name: &'static str,
        /// The declared shape, with symbolic dims and their bound values (`[B=32, 784]`).
        expected: String,
        /// The shape that was passed.
        actual: Vec<usize>,
        /// Why the shapes disagree (which dim, and where a symbolic dim was bound).
        detail: String,
    },
    /// A class label was not below the class count.
    Label {
        /// The target's name.
        name: &'static str,
        /// The index of the bad label in the labels, one per axis (`[sample]`, or
        /// `[sample, row, column]` for a per-pixel mask).
        position: Vec<usize>,
        /// The label value.
        label: usize,
        /// The declared class count.
        classes: usize,
        /// The label the loss leaves out (`ignore_index`), when it is not one of the classes
        /// and so is allowed besides them.
        ignored: Option<usize>,
    },
    /// A token id was not below the vocabulary size.
    Token {
        /// The input's name.
        name: &'static str,
        /// The index of the bad id in the input (`[batch, time]`).
        position: Vec<usize>,
        /// The id.
        id: usize,
        /// The declared vocabulary size.
        vocab: usize,
    },
    /// A sequence length was 0 or longer than the sequences.
    Length {
        /// The input's name.
        name: &'static str,
        /// The position of the bad length in the batch.
        index: usize,
        /// The length.
        length: usize,
        /// The longest allowed length.
        max: usize,
    },
    /// A batch's sequences are longer than a position table.
    SequenceTooLong {
        /// The layer's binding.
        layer: &'static str,
        /// The batch's sequence length.
        len: usize,
        /// The table's length.
        max: usize,
    },
    /// A `narrow` or `select` along a symbolic axis asked for positions this batch's axis
    /// does not have.
    OutOfRange {
        /// The layer's binding.
        layer: &'static str,
        /// What was asked, and how long the axis is in this batch.
        problem: String,
    },
    /// `bce` (PyTorch's `binary_cross_entropy`) was given a prediction outside [0, 1], or NaN:
    /// PyTorch raises the same error. Most often logits where probabilities belong.
    Probability {
        /// The loss's binding in the model.
        layer: &'static str,
        /// The first element outside [0, 1], flat (row-major).
        position: usize,
        /// Its value.
        value: f64,
    },
    /// Incremental decoding (a generated model's `forward_cached`) was given more positions
    /// than its cache has room for, or a batch of another size than the cache's; or a cache
    /// was asked for more positions than the model can address (`decoder_cache`).
    DecodeCache {
        /// What does not fit, and what to do about it.
        problem: String,
    },
    /// A gradient buffer passed to `backward` had the wrong shape.
    GradShape {
        /// The output's name.
        name: &'static str,
        /// Expected element count.
        expected: usize,
        /// Actual element count.
        actual: usize,
    },
    /// A parameter array was replaced by one the kernels cannot read in place.
    Parameter {
        /// The parameter's `state_dict` name.
        name: &'static str,
        /// What is wrong with it (not contiguous, missing, wrong length).
        problem: String,
    },
    /// Batch norm in training needs more than one value per channel to compute a variance.
    BatchTooSmall {
        /// The batch-norm layer.
        layer: &'static str,
        /// Values per channel in the batch.
        values: usize,
    },
    /// A token stream is shorter than one window of a language model's block size + 1.
    StreamTooShort {
        /// The stream's length.
        tokens: usize,
        /// The window length asked for: the block size + 1.
        needed: usize,
    },
    /// `backward` was called before `forward_train` filled the workspace.
    NoForward,
    /// A checkpoint or data file could not be read or is malformed.
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong and where (byte offset, line, tensor name).
        message: String,
    },
    /// Parameters in a checkpoint do not match the model.
    Mismatch {
        /// The file.
        path: PathBuf,
        /// Missing, unexpected and mis-shaped tensors, by name.
        message: String,
    },
    /// A NaN or infinity computed by a model whose finite check is on (a workspace's
    /// `check_finite(true)`, `Trainer::detect_anomaly(true)`): where, and when.
    NonFinite(Box<crate::finite::NonFinite>),
    /// Training stopped on a non-finite loss or non-finite weights (the trainer's
    /// `TerminateOnNaN`), before any step or checkpoint used them.
    NonFiniteTraining {
        /// What was not finite, and where
        /// (`non-finite loss (NaN) in batch 3, before its optimizer step`).
        what: String,
        /// The epoch, counting from 1.
        epoch: usize,
        /// The optimizer step (of the batch, or the last one taken), counting from 1 over the
        /// run.
        step: usize,
        /// What was kept, and how to find the source.
        kept: String,
    },
    /// Data-parallel training could not proceed: MPI could not start, a collective failed, or
    /// the ranks disagree (different models or data).
    Distributed {
        /// The rank that saw the problem.
        rank: usize,
        /// What went wrong.
        message: String,
    },
    /// The model cannot be exported to ONNX (an op the exporter does not express, or a model
    /// not compiled by `model!`).
    Onnx {
        /// The model's name.
        model: String,
        /// What cannot be exported, and why.
        message: String,
    },
    /// A tokenizer cannot encode a text as its file says, where the `tokenizers` library
    /// also refuses: its `truncation` cannot cut the text to length (the strategy cuts one
    /// sequence of a pair only, and it is too short, or there is no second sequence), or a
    /// Unigram model has no token for part of it and no unknown token.
    Encoding {
        /// What could not be encoded, and why.
        message: String,
    },
    /// A data set does not fit the model or the training run (`Trainer::fit`): no samples,
    /// samples of another rank or shape, targets of another kind; or the run's settings
    /// contradict each other.
    Data {
        /// Which data (`"training data"`, `"validation data"`), or `"Trainer"` for its
        /// settings.
        what: &'static str,
        /// What does not fit, and what to do about it.
        problem: String,
    },
    /// A parameter cannot be initialised as asked (see [`crate::init`]): a fan-based scale for
    /// a tensor without fans, or an empty truncation interval.
    Init {
        /// What cannot be done, and why.
        problem: String,
    },
    /// An operating-system I/O error on a file.
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

// Written out rather than derived (thiserror): the derive's proc macro was a unit of its own in
// every clean build of a user's crate, for sixteen format strings.
impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Shape {
                kind,
                name,
                expected,
                actual,
                detail,
            } => write!(
                f,
                "{kind} `{name}`: expected shape {expected}, got {actual:?}{detail}"
            ),
            Error::Label {
                name,
                position,
                label,
                classes,
                ignored,
            } => {
                write!(f, "target `{name}`: label {label} at position ")?;
                match position.as_slice() {
                    [index] => write!(f, "{index}")?,
                    _ => write!(f, "{position:?}")?,
                }
                write!(
                    f,
                    " is out of range for {classes} classes (labels must be 0..{classes}"
                )?;
                match ignored {
                    Some(ignored) => write!(f, ", or {ignored}, the ignored label)"),
                    None => write!(f, ")"),
                }
            }
            Error::Token {
                name,
                position,
                id,
                vocab,
            } => write!(
                f,
                "input `{name}`: token id {id} at position {position:?} is out of range for a \
                 vocabulary of {vocab} (ids must be 0..{vocab})"
            ),
            Error::Length {
                name,
                index,
                length,
                max,
            } => write!(
                f,
                "input `{name}`: length {length} at position {index} is out of range (lengths \
                 must be 1..={max}, the sequences' length)"
            ),
            Error::SequenceTooLong { layer, len, max } => write!(
                f,
                "layer `{layer}`: sequences of {len} positions, but its table has max_len = {max}"
            ),
            Error::OutOfRange { layer, problem } => write!(f, "layer `{layer}`: {problem}"),
            Error::Probability {
                layer,
                position,
                value,
            } => write!(
                f,
                "layer `{layer}`: `bce` takes probabilities in [0, 1], but its prediction has \
                 {value} at element {position}: on logits use `bce_with_logits`, or put the \
                 prediction through `sigmoid`"
            ),
            Error::DecodeCache { problem } => write!(f, "decoding cache: {problem}"),
            Error::Encoding { message } => write!(f, "cannot encode: {message}"),
            Error::GradShape {
                name,
                expected,
                actual,
            } => write!(
                f,
                "gradient for output `{name}`: expected {expected} elements, got {actual}"
            ),
            Error::Parameter { name, problem } => write!(f, "parameter `{name}`: {problem}"),
            Error::BatchTooSmall { layer, values } => write!(
                f,
                "layer `{layer}`: batch norm in training needs more than one value per channel, \
                 got {values} (use a batch of at least 2, e.g. `drop_last` for a final batch of 1)"
            ),
            Error::StreamTooShort { tokens, needed } => write!(
                f,
                "a token stream of {tokens} tokens is too short for windows of {needed} (block \
                 size + 1)"
            ),
            Error::NoForward => write!(f, "backward called before forward_train on this workspace"),
            Error::File { path, message } => write!(f, "{}: {message}", path.display()),
            Error::Mismatch { path, message } => write!(
                f,
                "{}: checkpoint does not match the model: {message}",
                path.display()
            ),
            Error::NonFinite(non_finite) => write!(f, "{non_finite}"),
            Error::NonFiniteTraining {
                what,
                epoch,
                step,
                kept,
            } => write!(
                f,
                "{what} at epoch {epoch}, step {step}: training stopped before the optimizer \
                 step; {kept}"
            ),
            Error::Distributed { rank, message } => {
                write!(f, "distributed training, rank {rank}: {message}")
            }
            Error::Onnx { model, message } => write!(f, "ONNX export of `{model}`: {message}"),
            Error::Data { what, problem } => write!(f, "{what}: {problem}"),
            Error::Init { problem } => write!(f, "initialisation: {problem}"),
            Error::Io { path, source } => write!(f, "{}: {source}", path.display()),
        }
    }
}

/// The message, as `Display` writes it (see [`Error`]).
impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl Error {
    /// An [`Error::File`]: `path` is malformed, `message` says what and where.
    pub(crate) fn file(path: &std::path::Path, message: impl Into<String>) -> Self {
        Error::File {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }

    /// An [`Error::Io`] on `path`.
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// `Result` with kiln's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod display_tests {
    use super::*;
    use std::error::Error as _;
    use std::path::Path;

    /// The messages that span several source lines read as one sentence, and an I/O error
    /// keeps its cause as `source()`.
    #[test]
    fn messages_read_as_one_sentence() {
        let label = Error::Label {
            name: "y",
            position: vec![3],
            label: 12,
            classes: 10,
            ignored: None,
        };
        assert_eq!(
            label.to_string(),
            "target `y`: label 12 at position 3 is out of range for 10 classes (labels must be \
             0..10)"
        );
        let mask = Error::Label {
            name: "mask",
            position: vec![1, 0, 2],
            label: 30,
            classes: 21,
            ignored: Some(255),
        };
        assert_eq!(
            mask.to_string(),
            "target `mask`: label 30 at position [1, 0, 2] is out of range for 21 classes \
             (labels must be 0..21, or 255, the ignored label)"
        );
        let small = Error::BatchTooSmall {
            layer: "bn",
            values: 1,
        };
        assert_eq!(
            small.to_string(),
            "layer `bn`: batch norm in training needs more than one value per channel, got 1 (use \
             a batch of at least 2, e.g. `drop_last` for a final batch of 1)"
        );
        let io = Error::io(
            Path::new("w.safetensors"),
            std::io::Error::new(std::io::ErrorKind::NotFound, "gone"),
        );
        assert_eq!(io.to_string(), "w.safetensors: gone");
        assert_eq!(io.source().map(|e| e.to_string()).as_deref(), Some("gone"));
        assert!(label.source().is_none());
    }

    /// `fn main() -> kiln::Result<()>` reports an error with `Debug`: it must print the
    /// message, not the variant's fields.
    #[test]
    fn debug_prints_the_message() {
        let shape = Error::Shape {
            kind: "input",
            name: "x",
            expected: "[B = 32, 784]".into(),
            actual: vec![32, 783],
            detail: " (axis 1)".into(),
        };
        assert_eq!(format!("{shape:?}"), shape.to_string());
        assert_eq!(
            format!("{shape:?}"),
            "input `x`: expected shape [B = 32, 784], got [32, 783] (axis 1)"
        );
        let io = Error::io(
            Path::new("w.safetensors"),
            std::io::Error::new(std::io::ErrorKind::NotFound, "gone"),
        );
        assert_eq!(format!("{io:?}"), "w.safetensors: gone");
    }
}
