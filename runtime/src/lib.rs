//! The runtime of kiln: everything a compiled model calls at run time.
//!
//! Generated code passes plain slices (row-major, contiguous) and sizes to the kernels here;
//! kernels write into buffers they are given and never allocate. The user-facing types are
//! `ndarray` arrays.

pub mod check;
pub mod data;
pub mod distributed;
pub mod error;
mod fast_math;
pub mod finite;
pub mod float;
pub mod image;
pub mod init;
pub mod io;
mod json;
pub mod kernels;
pub mod layers;
pub mod loss;
mod memory;
pub mod model;
pub mod onnx;
pub mod optim;
pub mod sampling;
pub mod shape;
mod special;
#[cfg(feature = "text")]
pub mod text;
pub mod train;
pub mod trainable;

pub use error::{Error, Result};
pub use float::Float;
pub use model::{report_grad, GradSink, Model, Summary, SummaryRow, Supervised, TargetView};
pub use optim::{Adagrad, Adam, AdamW, NAdam, Optimizer, RAdam, RmsProp, Sgd};
pub use trainable::{ArgKind, ArgSpec, BatchArray, Trainable};

pub use ndarray;
pub use rand;
