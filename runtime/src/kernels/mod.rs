//! Forward and backward kernels over row-major contiguous slices.
//!
//! Every kernel writes into a buffer it is given and never allocates, so that a training step
//! allocates nothing once its workspace is warm. Sizes are passed explicitly; a slice whose
//! length disagrees with them is a bug in the caller (generated code or the runtime itself),
//! not a user error, so kernels `assert!` their length invariants instead of returning errors.
//!
//! Backward kernels take `accumulate: bool`: when `true` they add their result into the output
//! (`out += result`), which is how generated code sums the adjoints of a value used twice;
//! when `false` they overwrite it (`out = result`).

pub mod attention;
pub mod axis;
pub mod conv;
pub(crate) mod dispatch;
pub mod dropout;
pub mod embedding;
pub mod gemm;
pub mod kv_cache;
pub(crate) mod lanes;
pub mod linear;
pub mod matmul;
pub mod norm;
pub mod pad;
pub mod parallel;
pub mod permute;
pub mod pool;
pub mod prelu;
pub mod recurrent;
pub mod reduce;
pub mod rotary;
pub mod shape_ops;
pub mod softmax;
pub mod upsample;

pub use gemm::gemm;
pub use linear::{
    linear_backward_bias, linear_backward_input, linear_backward_weight, linear_forward,
};
pub use reduce::{fill_backward, mean, sum};
pub use softmax::{log_softmax_backward, log_softmax_forward, softmax_backward, softmax_forward};

use crate::Float;

/// Stores `value` into `slot`, or adds it when `accumulate` is set.
///
/// The branch is on a loop-invariant flag, which the optimizer hoists out of the callers'
/// loops, so a kernel can be written once for both modes.
#[inline(always)]
pub(crate) fn store<F: Float>(slot: &mut F, value: F, accumulate: bool) {
    if accumulate {
        *slot += value;
    } else {
        *slot = value;
    }
}

#[cfg(test)]
pub(crate) mod test_util;
