//! The elementwise operators `+ - * /` and unary `-`, written as operators rather than calls.
//! Operands are tensors of equal shape or float literals (no silent broadcasting).

use crate::ast::BinOp;
use crate::expr::{Arena, TermId};

/// The term of `lhs op rhs`.
pub fn binary(a: &mut Arena, op: BinOp, lhs: TermId, rhs: TermId) -> TermId {
    match op {
        BinOp::Add => a.add(lhs, rhs),
        BinOp::Sub => a.sub(lhs, rhs),
        BinOp::Mul => a.mul(lhs, rhs),
        BinOp::Div => a.div(lhs, rhs),
    }
}

/// The term of `-x`.
pub fn negate(a: &mut Arena, x: TermId) -> TermId {
    a.neg(x)
}
