//! Compile-fail tests of the `model!` macro: every mistake a user can make in a model has a
//! message that names the problem and the fix, at the token at fault. Each `tests/ui/*.rs`
//! holds one small model with one mistake; its `.stderr` is the reviewed compiler output.
//!
//! After an intended change to a message: `TRYBUILD=overwrite cargo test -p kiln-ui`, then
//! read every changed `.stderr` as a user would.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
