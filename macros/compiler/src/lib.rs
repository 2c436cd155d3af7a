//! The compiler behind kiln's `model!` macro, as a plain library.
//!
//! [`expand`] takes the macro's input tokens and returns the generated Rust, or every error it
//! found. It runs these stages, one module each, data flowing one way:
//!
//! | stage | takes | returns |
//! |---|---|---|
//! | [`parse`] | tokens | [`ast::ModelDef`] (every node keeps its span) |
//! | [`lower`] | syntax tree | [`ir::Graph`]: nodes in topological order, ops from [`ops`] |
//! | [`shape`] | graph | every node's shape and kind, or spanned errors (all of them) |
//! | [`fuse`] | graph | pointwise chains merged into single [`expr`] terms |
//! | [`autodiff`] | graph | the backward schedule: VJP steps, accumulation, zeroed layers |
//! | [`plan`] | graph + schedule | buffers: values, adjoints, what backward reads |
//! | [`emit`] | all of it | the model struct, grads, workspace, methods, `impl Model` |
//!
//! The proc-macro crate only calls [`expand_or_errors`], so every stage is testable with
//! `cargo test`. The compiler never panics on any input: every failure is a `syn::Error`.

// Source lines for the non-finite check's messages (`Span::line`, inside the macro only).
extern crate proc_macro;

pub mod ast;
pub mod autodiff;
pub mod emit;
pub mod expr;
pub mod fuse;
pub mod ir;
pub mod lower;
pub mod onnx;
pub mod ops;
pub mod parse;
pub mod plan;
pub mod shape;

use proc_macro2::TokenStream;

/// Compiles the body of a `model! { ... }` invocation to Rust.
///
/// ```
/// let code = kiln_compiler::expand(quote::quote! {
///     pub struct Tiny {
///         input x: [B, 3];
///         let y = linear(x, 2);
///         output y;
///     }
/// }).expect("compiles");
/// assert!(code.to_string().contains("pub struct Tiny"));
/// ```
pub fn expand(input: TokenStream) -> syn::Result<TokenStream> {
    let def: ast::ModelDef = syn::parse2(input)?;
    let mut graph = lower::lower(def)?;
    shape::infer(&mut graph)?;
    lower::check_outputs_need_no_target(&graph)?;
    let fused = fuse::fuse(&mut graph);
    let schedule = autodiff::differentiate(&graph, &fused)?;
    let plan = plan::plan(&graph, &fused, &schedule);
    Ok(emit::emit(&graph, &fused, &schedule, &plan))
}

/// [`expand`], with errors turned into `compile_error!` invocations next to a stub of the
/// model (so that the rest of the user's crate and their editor keep working).
pub fn expand_or_errors(input: TokenStream) -> TokenStream {
    let stub = emit::stub(&input);
    match expand(input) {
        Ok(code) => code,
        Err(errors) => {
            let mut out = errors.to_compile_error();
            out.extend(stub);
            out
        }
    }
}

/// Errors collected across a stage, so that one run reports all of them.
#[derive(Default)]
pub struct Errors(Option<syn::Error>);

impl Errors {
    /// Records an error.
    pub fn push(&mut self, e: syn::Error) {
        match &mut self.0 {
            Some(all) => {
                // One mistake reached from several nodes (every part of one `chunk`) is said
                // once.
                let span = format!("{:?}", e.span());
                let said = (&*all)
                    .into_iter()
                    .any(|a| format!("{:?}", a.span()) == span && a.to_string() == e.to_string());
                if !said {
                    all.combine(e);
                }
            }
            None => self.0 = Some(e),
        }
    }

    /// `Ok` if nothing was recorded, else all the errors.
    pub fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }

    /// Whether anything was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }
}
