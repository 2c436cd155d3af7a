//! Kiln's conformance tests (no library code: the tests are in `tests/`):
//!
//! - `tests/random_models.rs`: random valid models, generated from seeds, against a plain f64
//!   interpreter, central differences and their f32 instance
//!   (`cargo test -p kiln-conformance --test random_models`);
//! - `tests/onnx_export.rs`: models of every op family exported to ONNX and run by tract
//!   (`cargo test -p kiln-conformance --test onnx_export`);
//! - `tests/parity/`: every PyTorch fixture case of the repository's `tests/fixtures/`, one
//!   module per family of ops (`--test parity`);
//! - `tests/gradcheck/`: f64 central-difference gradient checks of every op (`--test gradcheck`);
//! - `tests/training/`: the trainer, checkpoints, non-finite detection and data-parallel
//!   training (`--test training`).
//!
//! They live in a package of their own so that their code builds at opt-level 0 (see the
//! workspace's `Cargo.toml`) and tract stays out of the root package's dev-dependencies.
