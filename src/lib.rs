//! # kiln
//!
//! Neural networks compiled at build time. Write a model in the [`model!`] macro's small
//! layer-graph language; the macro checks every shape at compile time (a mismatch is a compile
//! error at the offending token), then writes plain Rust for the forward pass and a
//! symbolically derived backward pass. This crate re-exports the macro and the runtime.
//!
//! See the README for the language, the generated API and the op table.

// The README's examples are compiled and run as doctests, so they stay true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

pub use kiln_macros::model;
pub use kiln_runtime::*;
