//! The examples, run as tests. One test binary holds them all, so that each example compiles
//! once for the tests rather than once per test file:
//!
//! - `results`: each example's training function reaches its stated result;
//! - `determinism`: the same seed gives bit-identical weights on one thread and on two;
//! - `serving`: the `serve` example's HTTP API, batching and drawing page.

#[allow(dead_code)]
#[path = "../../examples/austen.rs"]
mod austen;
#[allow(dead_code)]
#[path = "../../examples/digits.rs"]
mod digits;
#[allow(dead_code)]
#[path = "../../examples/iris.rs"]
mod iris;
#[allow(dead_code)]
#[path = "../../examples/linear_regression.rs"]
mod linear_regression;
#[allow(dead_code)]
#[path = "../../examples/segment.rs"]
mod segment;
#[allow(dead_code)]
#[path = "../../examples/sentiment.rs"]
mod sentiment;
#[allow(dead_code)]
#[path = "../../examples/translate.rs"]
mod translate;
// The serve example includes `examples/models/digits.rs` as the digits example does: the
// tests train with one and serve with the other, through a weights file, so the two copies
// of the model types never meet.
#[allow(dead_code, clippy::duplicate_mod)]
#[path = "../../examples/serve.rs"]
mod serve;

mod determinism;
mod results;
mod serving;
