//! The runtime's error type. Every failure a user can cause at run time (a wrong input shape, a
//! label out of range, a malformed checkpoint) is an [`Error`], never a panic.

use std::path::PathBuf;

/// Everything that can go wrong at run time.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An input or target had the wrong shape.
    #[error("{kind} `{name}`: expected shape {expected}, got {actual:?}{detail}")]
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
    #[error("target `{name}`: label {label} at position {index} is out of range for {classes} classes (labels must be 0..{classes})")]
    Label {
        /// The target's name.
        name: &'static str,
        /// Position of the bad label in the batch.
        index: usize,
        /// The label value.
        label: usize,
        /// The declared class count.
        classes: usize,
    },
    /// A token id was not below the vocabulary size.
    #[error("input `{name}`: token id {id} at position {position:?} is out of range for a vocabulary of {vocab} (ids must be 0..{vocab})")]
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
    #[error("input `{name}`: length {length} at position {index} is out of range (lengths must be 1..={max}, the sequences' length)")]
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
    #[error("layer `{layer}`: sequences of {len} positions, but its table has max_len = {max}")]
    SequenceTooLong {
        /// The layer's binding.
        layer: &'static str,
        /// The batch's sequence length.
        len: usize,
        /// The table's length.
        max: usize,
    },
    /// A gradient buffer passed to `backward` had the wrong shape.
    #[error("gradient for output `{name}`: expected {expected} elements, got {actual}")]
    GradShape {
        /// The output's name.
        name: &'static str,
        /// Expected element count.
        expected: usize,
        /// Actual element count.
        actual: usize,
    },
    /// A parameter array was replaced by one the kernels cannot read in place.
    #[error("parameter `{name}`: {problem}")]
    Parameter {
        /// The parameter's `state_dict` name.
        name: &'static str,
        /// What is wrong with it (not contiguous, missing, wrong length).
        problem: String,
    },
    /// Batch norm in training needs more than one value per channel to compute a variance.
    #[error("layer `{layer}`: batch norm in training needs more than one value per channel, got {values} (use a batch of at least 2, e.g. `drop_last` for a final batch of 1)")]
    BatchTooSmall {
        /// The batch-norm layer.
        layer: &'static str,
        /// Values per channel in the batch.
        values: usize,
    },
    /// A token stream is shorter than one window of a language model's block size + 1.
    #[error(
        "a token stream of {tokens} tokens is too short for windows of {needed} (block size + 1)"
    )]
    StreamTooShort {
        /// The stream's length.
        tokens: usize,
        /// The window length asked for: the block size + 1.
        needed: usize,
    },
    /// `backward` was called before `forward_train` filled the workspace.
    #[error("backward called before forward_train on this workspace")]
    NoForward,
    /// A checkpoint or data file could not be read or is malformed.
    #[error("{path}: {message}", path = .path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong and where (byte offset, line, tensor name).
        message: String,
    },
    /// Parameters in a checkpoint do not match the model.
    #[error("{path}: checkpoint does not match the model: {message}", path = .path.display())]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// Missing, unexpected and mis-shaped tensors, by name.
        message: String,
    },
    /// A NaN or infinity computed by a model whose finite check is on (a workspace's
    /// `check_finite(true)`, `Trainer::detect_anomaly(true)`): where, and when.
    #[error("{0}")]
    NonFinite(Box<crate::finite::NonFinite>),
    /// Training stopped on a non-finite loss or non-finite weights (the trainer's
    /// `TerminateOnNaN`), before any step or checkpoint used them.
    #[error(
        "{what} at epoch {epoch}, step {step}: training stopped before the optimizer step; {kept}"
    )]
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
    #[error("distributed training, rank {rank}: {message}")]
    Distributed {
        /// The rank that saw the problem.
        rank: usize,
        /// What went wrong.
        message: String,
    },
    /// The model cannot be exported to ONNX (an op the exporter does not express, or a model
    /// not compiled by `model!`).
    #[error("ONNX export of `{model}`: {message}")]
    Onnx {
        /// The model's name.
        model: String,
        /// What cannot be exported, and why.
        message: String,
    },
    /// An operating-system I/O error on a file.
    #[error("{path}: {source}", path = .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
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
