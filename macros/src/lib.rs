//! The `model!` procedural macro of kiln.
//!
//! This crate is only the `#[proc_macro]` entry point. Everything it does lives in the plain
//! library `kiln-compiler`, so that it can be tested, snapshotted and fuzzed without a compiler
//! in the loop. Use it through the `kiln` crate: `kiln::model! { ... }`.

use proc_macro::TokenStream;

/// Compiles a model written in kiln's layer-graph language into plain Rust.
///
/// See the `kiln` crate documentation for the language and what is generated.
#[proc_macro]
pub fn model(input: TokenStream) -> TokenStream {
    kiln_compiler::expand_or_errors(input.into()).into()
}
