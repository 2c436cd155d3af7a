//! The `model!` macro's compile errors, tested: each `tests/ui/*.rs` holds one small model with
//! one mistake a user can make, and its `.stderr` is the reviewed compiler output
//! (`cargo test -p kiln-ui`). The package has no code of its own.
