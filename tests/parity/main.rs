//! PyTorch parity: every fixture case of `tests/fixtures/` (see its README), one module per
//! family of ops, all in one test binary so that the runtime is compiled for them once.
//!
//! Run with `--nocapture` to see the largest errors per category.

mod common;
mod conv;
mod dense;
mod seq;
mod vision;
