//! The syntax tree of the model language, as written by the user. Every node keeps the span of
//! the tokens it came from so that later stages can point errors at them.

use proc_macro2::Span;
use syn::{Attribute, Ident, Visibility};

/// A whole `model! { ... }` invocation.
pub struct ModelDef {
    /// Doc comments and attributes, carried over to the generated struct.
    pub attrs: Vec<Attribute>,
    /// Visibility of the generated items.
    pub vis: Visibility,
    /// The model's name.
    pub name: Ident,
    /// The statements in source order.
    pub stmts: Vec<Stmt>,
    /// The blocks declared in the model (`block Name(x) { ... }`).
    pub blocks: Vec<BlockDef>,
    /// Inputs whose gradient the model computes (a block's inputs, compiled as a model of
    /// its own); empty for a model the user writes.
    pub grad_inputs: Vec<String>,
    /// Span of the braces' contents, for errors about the model as a whole.
    pub body_span: Span,
}

/// `block Name(x, memory) { let ...; output y; }`: a sub-graph declared once and applied by
/// calling it like an op, `Name(h, repeat = 4)`, once or as a chain of identical blocks.
#[derive(Clone)]
pub struct BlockDef {
    /// The block's name, which calls use.
    pub name: Ident,
    /// Its inputs: the first is chained from block to block, the others are passed to every
    /// block unchanged.
    pub params: Vec<Ident>,
    /// Its `let` statements.
    pub stmts: Vec<Stmt>,
    /// The value it returns.
    pub output: Ident,
}

/// One statement of the model body.
#[derive(Clone)]
pub enum Stmt {
    /// `input x: [B, 784];`, `input tokens: [B, T] tokens 5000;` or
    /// `input len: [B] lengths T;`
    Input {
        name: Ident,
        dims: Vec<DimAst>,
        ints: Option<IntAst>,
    },
    /// `target y: [B, 1];` or `target y: [B] classes 10;`
    Target {
        name: Ident,
        dims: Vec<DimAst>,
        classes: Option<(usize, Span)>,
    },
    /// `let name = expr;`
    Let { name: Ident, expr: Expr },
    /// `output a, b;`
    Output { names: Vec<Ident> },
    /// `loss expr;`
    Loss { keyword: Span, expr: Expr },
}

/// What an integer input holds, as declared after its shape.
#[derive(Clone)]
pub enum IntAst {
    /// `tokens 5000`: token ids below the vocabulary size.
    Tokens(usize, Span),
    /// `lengths T`: sequence lengths between 1 and the dim.
    Lengths(DimAst),
}

/// A dimension as written in a shape.
#[derive(Clone)]
pub enum DimAst {
    /// A literal size, checked at compile time.
    Fixed(usize, Span),
    /// A symbolic dimension, bound at run time and unified by name.
    Symbol(Ident),
    /// A multiple of a symbolic dimension plus a constant (`16 * H`, `W - 2`, `2 * H + 1`):
    /// the symbol is what the size gives back, so that layers may halve the axis as often as
    /// the multiple allows, and a target may be as long as a valid convolution's output.
    Multiple(usize, Ident, i64),
}

/// A binary elementwise operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
}

impl BinOp {
    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
        }
    }
}

/// An expression.
#[derive(Clone)]
pub enum Expr {
    /// A float literal (`0.5`).
    Float(f64, Span),
    /// An integer literal (`128`).
    Int(u64, Span),
    /// `true` / `false`.
    Bool(bool, Span),
    /// A tuple of literals, e.g. a rectangular kernel `(3, 2)`.
    Tuple(Vec<Expr>, Span),
    /// A name bound earlier (`x`, `h1`).
    Var(Ident),
    /// An op call `name(args, key = value)`.
    Call(Call),
    /// `lhs op rhs`.
    Binary {
        op: BinOp,
        op_span: Span,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    /// `-expr`.
    Neg { span: Span, expr: Box<Expr> },
}

/// An op call.
#[derive(Clone)]
pub struct Call {
    /// The op's name.
    pub func: Ident,
    /// Positional arguments.
    pub args: Vec<Expr>,
    /// `key = value` options.
    pub options: Vec<(Ident, Expr)>,
    /// The whole call.
    pub span: Span,
}

impl Expr {
    /// The span covering the expression (best effort: joined where the compiler allows).
    pub fn span(&self) -> Span {
        match self {
            Expr::Float(_, s) | Expr::Int(_, s) | Expr::Bool(_, s) | Expr::Tuple(_, s) => *s,
            Expr::Var(id) => id.span(),
            Expr::Call(c) => c.span,
            Expr::Binary { lhs, rhs, .. } => join(lhs.span(), rhs.span()),
            Expr::Neg { span, expr } => join(*span, expr.span()),
        }
    }
}

/// Joins two spans where the compiler supports it (nightly / inside a proc macro), else the
/// first one.
pub fn join(a: Span, b: Span) -> Span {
    a.join(b).unwrap_or(a)
}
