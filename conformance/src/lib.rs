//! Kiln's conformance tests (no library code: the tests are in `tests/`):
//!
//! - `tests/random_models.rs`: random valid models, generated from seeds, against a plain f64
//!   interpreter, central differences and their f32 instance
//!   (`cargo test -p kiln-conformance --test random_models`);
//! - `tests/onnx_export.rs`: models of every op family exported to ONNX and run by tract
//!   (`cargo test -p kiln-conformance --test onnx_export`).
//!
//! They live in a package of their own so that their code builds at opt-level 0 (see the
//! workspace's `Cargo.toml`) and tract stays out of the root package's dev-dependencies.
