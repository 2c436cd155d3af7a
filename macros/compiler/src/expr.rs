//! Elementwise expression trees: how kiln fuses chains of pointwise ops into one loop and
//! differentiates them symbolically.
//!
//! Every pointwise op (`relu`, `tanh`, `*`, `0.5 * x`, ...) lowers to a term in one hash-consed
//! [`Arena`] shared by the whole graph, over variables that name graph nodes. Hash-consing makes
//! common subexpressions one term (CSE for free); the constructors simplify as they build
//! (`x * 1 = x`, constant folding), so derivatives come out short. [`Arena::diff`] derives
//! `d term / d var` by the chain rule; the backward pass of a fused loop is that derivative
//! times the incoming adjoint, so an expression like `x * sigmoid(x)` needs no hand-written rule.
//! [`Arena::emit`] writes a term as straight-line Rust with one `let` per shared subterm.

use proc_macro2::{Ident, Span, TokenStream};
use quote::{format_ident, quote};
use std::collections::HashMap;

/// Index of a term in the [`Arena`].
pub type TermId = usize;

/// A scalar function with a known derivative.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Func {
    Exp,
    Ln,
    Sqrt,
    Tanh,
    Sigmoid,
    Softplus,
    Erf,
    /// `x^p` for a constant real `p` (its `f64` bits), the platform's `pow` as PyTorch's.
    Pow(u64),
}

impl Func {
    fn name(self) -> &'static str {
        match self {
            Func::Exp => "exp",
            Func::Ln => "ln",
            Func::Sqrt => "sqrt",
            Func::Tanh => "tanh",
            Func::Sigmoid => "sigmoid",
            Func::Softplus => "softplus",
            Func::Erf => "erf",
            Func::Pow(_) => "powf",
        }
    }

    /// The exponent of [`Func::Pow`].
    pub fn exponent(self) -> Option<f64> {
        match self {
            Func::Pow(bits) => Some(f64::from_bits(bits)),
            _ => None,
        }
    }
}

/// One node of an expression. Constants are stored as `f64` bits so terms can be hashed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Term {
    /// The value of a graph node at the current element.
    Var(usize),
    /// A literal constant (f64 bits).
    Const(u64),
    Add(TermId, TermId),
    Sub(TermId, TermId),
    Mul(TermId, TermId),
    Div(TermId, TermId),
    Neg(TermId),
    Call(Func, TermId),
    /// `if cond > 0 { then } else { otherwise }`: relu, leaky relu and their derivatives
    /// (relu itself, `Select(x, x, 0)`, keeps a NaN `x`).
    Select(TermId, TermId, TermId),
}

/// A hash-consed store of terms.
#[derive(Default, Debug, Clone)]
pub struct Arena {
    terms: Vec<Term>,
    index: HashMap<Term, TermId>,
}

impl Arena {
    /// The term with this id.
    pub fn term(&self, id: TermId) -> Term {
        self.terms[id]
    }

    fn intern(&mut self, t: Term) -> TermId {
        if let Some(&id) = self.index.get(&t) {
            return id;
        }
        self.terms.push(t);
        let id = self.terms.len() - 1;
        self.index.insert(t, id);
        id
    }

    pub fn constant(&self, id: TermId) -> Option<f64> {
        match self.terms[id] {
            Term::Const(bits) => Some(f64::from_bits(bits)),
            _ => None,
        }
    }

    /// A variable standing for graph node `node`.
    pub fn var(&mut self, node: usize) -> TermId {
        self.intern(Term::Var(node))
    }

    /// A constant.
    pub fn constant_of(&mut self, v: f64) -> TermId {
        // Normalise -0.0 so that `0 * x` and `-0 * x` intern to the same term.
        let v = if v == 0.0 { 0.0 } else { v };
        self.intern(Term::Const(v.to_bits()))
    }

    /// `a + b`, simplified.
    pub fn add(&mut self, a: TermId, b: TermId) -> TermId {
        match (self.constant(a), self.constant(b)) {
            (Some(x), Some(y)) => self.constant_of(x + y),
            (Some(0.0), None) => b,
            (None, Some(0.0)) => a,
            _ => match self.terms[b] {
                Term::Neg(nb) => self.sub(a, nb),
                // a + a = 2a (exact in floating point).
                _ if a == b => {
                    let two = self.constant_of(2.0);
                    self.mul(two, a)
                }
                // Addition commutes exactly, so one canonical operand order lets equal sums
                // share a term.
                _ => self.intern(Term::Add(a.min(b), a.max(b))),
            },
        }
    }

    /// `a - b`, simplified.
    pub fn sub(&mut self, a: TermId, b: TermId) -> TermId {
        match (self.constant(a), self.constant(b)) {
            (Some(x), Some(y)) => self.constant_of(x - y),
            (None, Some(0.0)) => a,
            (Some(0.0), None) => self.neg(b),
            _ if a == b => self.constant_of(0.0),
            _ => self.intern(Term::Sub(a, b)),
        }
    }

    /// `a * b`, simplified (constants move to the left).
    pub fn mul(&mut self, a: TermId, b: TermId) -> TermId {
        match (self.constant(a), self.constant(b)) {
            (Some(x), Some(y)) => self.constant_of(x * y),
            (Some(x), None) | (None, Some(x)) if x == 0.0 => self.constant_of(0.0),
            (Some(1.0), None) => b,
            (None, Some(1.0)) => a,
            (Some(-1.0), None) => self.neg(b),
            (None, Some(-1.0)) => self.neg(a),
            (None, Some(_)) => self.mul(b, a),
            _ => {
                // c1 * (c2 * x) = (c1 c2) * x
                if let (Some(x), Term::Mul(inner_c, inner)) = (self.constant(a), self.terms[b]) {
                    if let Some(y) = self.constant(inner_c) {
                        let c = self.constant_of(x * y);
                        return self.mul(c, inner);
                    }
                }
                // g * (c ? 1 : 0) = c ? g : 0: a derivative mask becomes a branch.
                if let Term::Select(c, t, e) = self.terms[b] {
                    if self.constant(t).is_some() || self.constant(e).is_some() {
                        let (t, e) = (self.mul(a, t), self.mul(a, e));
                        return self.select(c, t, e);
                    }
                }
                if let Term::Select(c, t, e) = self.terms[a] {
                    if self.constant(t).is_some() || self.constant(e).is_some() {
                        let (t, e) = (self.mul(t, b), self.mul(e, b));
                        return self.select(c, t, e);
                    }
                }
                match (self.terms[a], self.terms[b]) {
                    (Term::Neg(na), Term::Neg(nb)) => self.mul(na, nb),
                    (Term::Neg(na), _) => {
                        let p = self.mul(na, b);
                        self.neg(p)
                    }
                    (_, Term::Neg(nb)) => {
                        let p = self.mul(a, nb);
                        self.neg(p)
                    }
                    // Constants stay on the left; other operands take a canonical order, as
                    // multiplication commutes exactly.
                    _ if self.constant(a).is_some() => self.intern(Term::Mul(a, b)),
                    _ => self.intern(Term::Mul(a.min(b), a.max(b))),
                }
            }
        }
    }

    /// `a / b`, simplified.
    pub fn div(&mut self, a: TermId, b: TermId) -> TermId {
        match (self.constant(a), self.constant(b)) {
            (Some(x), Some(y)) if y != 0.0 => self.constant_of(x / y),
            (Some(0.0), None) => self.constant_of(0.0),
            (None, Some(1.0)) => a,
            // Dividing by a literal is multiplying by its reciprocal only when that is exact,
            // so results match PyTorch bit for bit where it divides.
            _ => self.intern(Term::Div(a, b)),
        }
    }

    /// `-a`, simplified.
    pub fn neg(&mut self, a: TermId) -> TermId {
        match self.terms[a] {
            Term::Const(bits) => self.constant_of(-f64::from_bits(bits)),
            Term::Neg(inner) => inner,
            _ => self.intern(Term::Neg(a)),
        }
    }

    /// `f(a)`.
    pub fn call(&mut self, f: Func, a: TermId) -> TermId {
        self.intern(Term::Call(f, a))
    }

    /// `if cond > 0 { then } else { otherwise }`.
    pub fn select(&mut self, cond: TermId, then: TermId, otherwise: TermId) -> TermId {
        if then == otherwise {
            return then;
        }
        self.intern(Term::Select(cond, then, otherwise))
    }

    /// Replaces every `Var(node)` in `root` by `by[node]` where present (fusing producers into
    /// a consumer).
    pub fn substitute(&mut self, root: TermId, by: &HashMap<usize, TermId>) -> TermId {
        let mut memo = HashMap::new();
        self.substitute_memo(root, by, &HashMap::new(), &mut memo)
    }

    /// Replaces the condition of every `Select(cond, ..)` in `root` by `by` (an equivalent
    /// test on another value: `x > 0` and `relu(x) > 0` select alike).
    pub fn replace_condition(&mut self, root: TermId, cond: TermId, by: TermId) -> TermId {
        let mut memo = HashMap::new();
        let conditions = HashMap::from([(cond, by)]);
        self.substitute_memo(root, &HashMap::new(), &conditions, &mut memo)
    }

    fn substitute_memo(
        &mut self,
        id: TermId,
        by: &HashMap<usize, TermId>,
        conditions: &HashMap<TermId, TermId>,
        memo: &mut HashMap<TermId, TermId>,
    ) -> TermId {
        if let Some(&done) = memo.get(&id) {
            return done;
        }
        let out = match self.terms[id] {
            Term::Var(n) => by.get(&n).copied().unwrap_or(id),
            Term::Const(_) => id,
            Term::Add(a, b) => {
                let (a, b) = (
                    self.substitute_memo(a, by, conditions, memo),
                    self.substitute_memo(b, by, conditions, memo),
                );
                self.add(a, b)
            }
            Term::Sub(a, b) => {
                let (a, b) = (
                    self.substitute_memo(a, by, conditions, memo),
                    self.substitute_memo(b, by, conditions, memo),
                );
                self.sub(a, b)
            }
            Term::Mul(a, b) => {
                let (a, b) = (
                    self.substitute_memo(a, by, conditions, memo),
                    self.substitute_memo(b, by, conditions, memo),
                );
                self.mul(a, b)
            }
            Term::Div(a, b) => {
                let (a, b) = (
                    self.substitute_memo(a, by, conditions, memo),
                    self.substitute_memo(b, by, conditions, memo),
                );
                self.div(a, b)
            }
            Term::Neg(a) => {
                let a = self.substitute_memo(a, by, conditions, memo);
                self.neg(a)
            }
            Term::Call(f, a) => {
                let a = self.substitute_memo(a, by, conditions, memo);
                self.call(f, a)
            }
            Term::Select(c, t, e) => {
                let c = match conditions.get(&c) {
                    Some(&replaced) => replaced,
                    None => self.substitute_memo(c, by, conditions, memo),
                };
                let t = self.substitute_memo(t, by, conditions, memo);
                let e = self.substitute_memo(e, by, conditions, memo);
                self.select(c, t, e)
            }
        };
        memo.insert(id, out);
        out
    }

    /// The graph nodes `root` reads, in first-use order.
    pub fn vars(&self, root: TermId) -> Vec<usize> {
        let mut seen = vec![false; self.terms.len()];
        let mut out = Vec::new();
        self.collect_vars(root, &mut seen, &mut out);
        out
    }

    fn collect_vars(&self, id: TermId, seen: &mut [bool], out: &mut Vec<usize>) {
        if seen[id] {
            return;
        }
        seen[id] = true;
        match self.terms[id] {
            Term::Var(n) => {
                if !out.contains(&n) {
                    out.push(n)
                }
            }
            Term::Const(_) => {}
            Term::Add(a, b) | Term::Sub(a, b) | Term::Mul(a, b) | Term::Div(a, b) => {
                self.collect_vars(a, seen, out);
                self.collect_vars(b, seen, out);
            }
            Term::Neg(a) | Term::Call(_, a) => self.collect_vars(a, seen, out),
            Term::Select(c, t, e) => {
                self.collect_vars(c, seen, out);
                self.collect_vars(t, seen, out);
                self.collect_vars(e, seen, out);
            }
        }
    }

    /// `d root / d Var(node)` by the chain rule, simplified.
    pub fn diff(&mut self, root: TermId, node: usize) -> TermId {
        let mut memo = HashMap::new();
        self.diff_memo(root, node, &mut memo)
    }

    fn diff_memo(&mut self, id: TermId, x: usize, memo: &mut HashMap<TermId, TermId>) -> TermId {
        if let Some(&d) = memo.get(&id) {
            return d;
        }
        let d = match self.terms[id] {
            Term::Var(n) => self.constant_of(if n == x { 1.0 } else { 0.0 }),
            Term::Const(_) => self.constant_of(0.0),
            Term::Add(a, b) => {
                let (da, db) = (self.diff_memo(a, x, memo), self.diff_memo(b, x, memo));
                self.add(da, db)
            }
            Term::Sub(a, b) => {
                let (da, db) = (self.diff_memo(a, x, memo), self.diff_memo(b, x, memo));
                self.sub(da, db)
            }
            Term::Mul(a, b) => {
                let (da, db) = (self.diff_memo(a, x, memo), self.diff_memo(b, x, memo));
                let l = self.mul(da, b);
                let r = self.mul(a, db);
                self.add(l, r)
            }
            Term::Div(a, b) => {
                // (a/b)' = a'/b - a b' / b^2 = (a' - (a/b) b') / b
                let (da, db) = (self.diff_memo(a, x, memo), self.diff_memo(b, x, memo));
                let q = self.div(a, b);
                let qdb = self.mul(q, db);
                let num = self.sub(da, qdb);
                self.div(num, b)
            }
            Term::Neg(a) => {
                let da = self.diff_memo(a, x, memo);
                self.neg(da)
            }
            Term::Call(f, a) => {
                let da = self.diff_memo(a, x, memo);
                if self.constant(da) == Some(0.0) {
                    da
                } else {
                    let outer = self.derivative_of(f, a, id);
                    self.mul(outer, da)
                }
            }
            Term::Select(c, t, e) => {
                let (dt, de) = (self.diff_memo(t, x, memo), self.diff_memo(e, x, memo));
                self.select(c, dt, de)
            }
        };
        memo.insert(id, d);
        d
    }

    /// `f'(a)`, given `fa = f(a)` so that derivatives reuse the forward value where they can.
    fn derivative_of(&mut self, f: Func, a: TermId, fa: TermId) -> TermId {
        let one = self.constant_of(1.0);
        match f {
            Func::Exp => fa,
            Func::Ln => self.div(one, a),
            Func::Sqrt => {
                let two_sqrt = self.add(fa, fa);
                self.div(one, two_sqrt)
            }
            Func::Tanh => {
                let sq = self.mul(fa, fa);
                self.sub(one, sq)
            }
            Func::Sigmoid => {
                let rest = self.sub(one, fa);
                self.mul(fa, rest)
            }
            Func::Softplus => self.call(Func::Sigmoid, a),
            Func::Erf => {
                // erf'(a) = 2/sqrt(pi) * exp(-a^2)
                let sq = self.mul(a, a);
                let neg = self.neg(sq);
                let e = self.call(Func::Exp, neg);
                let c = self.constant_of(std::f64::consts::FRAC_2_SQRT_PI);
                self.mul(c, e)
            }
            // p · x^(p − 1), as PyTorch's `pow_backward` (0 at x = 0 for p > 1).
            Func::Pow(bits) => {
                let p = f64::from_bits(bits);
                let c = self.constant_of(p);
                if p - 1.0 == 0.0 {
                    return c;
                }
                let lower = self.call(Func::Pow((p - 1.0).to_bits()), a);
                self.mul(c, lower)
            }
        }
    }

    /// A one-line rendering for the graph description (`tanh(v3) * 0.5`).
    pub fn render(&self, id: TermId, names: &dyn Fn(usize) -> String) -> String {
        match self.terms[id] {
            Term::Var(n) => names(n),
            Term::Const(bits) => format_float(f64::from_bits(bits)),
            Term::Add(a, b) => format!("({} + {})", self.render(a, names), self.render(b, names)),
            Term::Sub(a, b) => format!("({} - {})", self.render(a, names), self.render(b, names)),
            Term::Mul(a, b) => format!("{} * {}", self.render(a, names), self.render(b, names)),
            Term::Div(a, b) => format!("{} / {}", self.render(a, names), self.render(b, names)),
            Term::Neg(a) => format!("-{}", self.render(a, names)),
            Term::Call(f, a) => match f.exponent() {
                Some(p) => format!("pow({}, {p:?})", self.render(a, names)),
                None => format!("{}({})", f.name(), self.render(a, names)),
            },
            Term::Select(c, t, e) if t == c && self.constant(e) == Some(0.0) => {
                format!("relu({})", self.render(c, names))
            }
            Term::Select(c, t, e) => format!(
                "(if {} > 0 {{ {} }} else {{ {} }})",
                self.render(c, names),
                self.render(t, names),
                self.render(e, names)
            ),
        }
    }

    /// Emits the statements computing `roots` for one element: a `let` for every subterm used
    /// more than once (or by more than one root), then one expression per root. Variables are
    /// read through `var`, which returns the local holding `Var(node)`'s element.
    pub fn emit(
        &self,
        roots: &[TermId],
        var: &dyn Fn(usize) -> TokenStream,
    ) -> (TokenStream, Vec<TokenStream>) {
        let mut uses = vec![0usize; self.terms.len()];
        let mut order = Vec::new();
        let mut visited = vec![false; self.terms.len()];
        for &r in roots {
            uses[r] += 1;
            self.count_uses(r, &mut uses, &mut visited, &mut order);
        }
        let mut names: HashMap<TermId, Ident> = HashMap::new();
        let mut lets = TokenStream::new();
        for &id in &order {
            let worth_naming = uses[id] > 1
                && !matches!(self.terms[id], Term::Var(_) | Term::Const(_) | Term::Neg(_));
            if worth_naming {
                // Mixed-site hygiene: a temporary never shadows a model value named `t0`.
                let name = format_ident!("t{}", names.len(), span = Span::mixed_site());
                let value = self.emit_term(id, &names, var);
                lets.extend(quote! { let #name = #value; });
                names.insert(id, name);
            }
        }
        let exprs = roots
            .iter()
            .map(|&r| self.emit_term(r, &names, var))
            .collect();
        (lets, exprs)
    }

    fn count_uses(
        &self,
        id: TermId,
        uses: &mut [usize],
        visited: &mut [bool],
        order: &mut Vec<TermId>,
    ) {
        let children: Vec<TermId> = match self.terms[id] {
            Term::Var(_) | Term::Const(_) => vec![],
            Term::Add(a, b) | Term::Sub(a, b) | Term::Mul(a, b) | Term::Div(a, b) => vec![a, b],
            Term::Neg(a) | Term::Call(_, a) => vec![a],
            Term::Select(c, t, e) => vec![c, t, e],
        };
        if visited[id] {
            return;
        }
        visited[id] = true;
        for c in children {
            uses[c] += 1;
            self.count_uses(c, uses, visited, order);
        }
        order.push(id);
    }

    fn emit_term(
        &self,
        id: TermId,
        names: &HashMap<TermId, Ident>,
        var: &dyn Fn(usize) -> TokenStream,
    ) -> TokenStream {
        if let Some(name) = names.get(&id) {
            return quote!(#name);
        }
        let sub = |c: TermId| self.emit_operand(c, names, var);
        // The left operand of `+` and `-` needs no parentheses, except an `if`: at the start
        // of a block (the branch of another `if`) rustc reads `if .. {} else {} + b` as a
        // statement followed by a stray `+`.
        let left = |c: TermId| match self.terms[c] {
            Term::Select(..) => sub(c),
            _ => self.emit_term(c, names, var),
        };
        match self.terms[id] {
            Term::Var(n) => var(n),
            Term::Const(bits) => emit_const(f64::from_bits(bits)),
            Term::Add(a, b) => {
                let (a, b) = (left(a), sub(b));
                quote!(#a + #b)
            }
            Term::Sub(a, b) => {
                let (a, b) = (left(a), sub(b));
                quote!(#a - #b)
            }
            Term::Mul(a, b) => {
                let (a, b) = (sub(a), sub(b));
                quote!(#a * #b)
            }
            Term::Div(a, b) => {
                let (a, b) = (sub(a), sub(b));
                quote!(#a / #b)
            }
            Term::Neg(a) => {
                let a = sub(a);
                quote!(-#a)
            }
            Term::Call(f, a) => {
                let a = sub(a);
                let method = format_ident!("{}", f.name());
                match f.exponent() {
                    Some(p) => quote!(#a.#method(F::from_f64(#p))),
                    None => quote!(#a.#method()),
                }
            }
            // relu: NaN stays NaN, as in PyTorch (`c > 0` would make it 0 and hide it from
            // the loss and from the checks for non-finite values).
            Term::Select(c, t, e) if t == c && self.constant(e) == Some(0.0) => {
                let c = sub(c);
                quote!(if #c <= F::ZERO { F::ZERO } else { #c })
            }
            Term::Select(c, t, e) => {
                let (c, t, e) = (
                    sub(c),
                    self.emit_term(t, names, var),
                    self.emit_term(e, names, var),
                );
                quote!(if #c > F::ZERO { #t } else { #e })
            }
        }
    }

    /// A term as an operand of `*`, `/`, unary `-` or a method call: parenthesised unless atomic.
    fn emit_operand(
        &self,
        id: TermId,
        names: &HashMap<TermId, Ident>,
        var: &dyn Fn(usize) -> TokenStream,
    ) -> TokenStream {
        let inner = self.emit_term(id, names, var);
        let atomic = names.contains_key(&id)
            || matches!(
                self.terms[id],
                Term::Var(_) | Term::Const(_) | Term::Call(..)
            );
        if atomic {
            inner
        } else {
            quote!((#inner))
        }
    }
}

fn emit_const(v: f64) -> TokenStream {
    if v == 0.0 {
        quote!(F::ZERO)
    } else if v == 1.0 {
        quote!(F::ONE)
    } else if !v.is_finite() {
        // Folding finite literals can overflow (`1e300 * 1e300`, `1.0 / 0.0`); a literal
        // cannot spell the result, the constants can.
        let c = if v.is_nan() {
            quote!(NAN)
        } else if v > 0.0 {
            quote!(INFINITY)
        } else {
            quote!(NEG_INFINITY)
        };
        quote!(F::from_f64(::core::f64::#c))
    } else if let Some(name) = NAMED_CONSTANTS
        .iter()
        .find(|(c, _)| *c == v)
        .map(|(_, n)| n)
    {
        let name = format_ident!("{}", name);
        quote!(F::from_f64(::core::f64::consts::#name))
    } else {
        let lit = proc_macro2::Literal::f64_suffixed(v);
        quote!(F::from_f64(#lit))
    }
}

/// Constants the derivations produce, written by name rather than as 17 digits.
const NAMED_CONSTANTS: &[(f64, &str)] = &[
    (std::f64::consts::FRAC_1_SQRT_2, "FRAC_1_SQRT_2"),
    (std::f64::consts::FRAC_2_SQRT_PI, "FRAC_2_SQRT_PI"),
    (std::f64::consts::SQRT_2, "SQRT_2"),
    (std::f64::consts::PI, "PI"),
    (std::f64::consts::E, "E"),
    (std::f64::consts::LN_2, "LN_2"),
];

fn format_float(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.1}")
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(a: &Arena, id: TermId, x: f64) -> f64 {
        match a.term(id) {
            Term::Var(_) => x,
            Term::Const(b) => f64::from_bits(b),
            Term::Add(p, q) => eval(a, p, x) + eval(a, q, x),
            Term::Sub(p, q) => eval(a, p, x) - eval(a, q, x),
            Term::Mul(p, q) => eval(a, p, x) * eval(a, q, x),
            Term::Div(p, q) => eval(a, p, x) / eval(a, q, x),
            Term::Neg(p) => -eval(a, p, x),
            Term::Call(f, p) => {
                let v = eval(a, p, x);
                match f {
                    Func::Exp => v.exp(),
                    Func::Ln => v.ln(),
                    Func::Sqrt => v.sqrt(),
                    Func::Tanh => v.tanh(),
                    Func::Sigmoid => 1.0 / (1.0 + (-v).exp()),
                    Func::Softplus => (1.0 + v.exp()).ln(),
                    Func::Erf => erf_approx(v),
                    Func::Pow(bits) => v.powf(f64::from_bits(bits)),
                }
            }
            Term::Select(c, t, e) if t == c && a.constant(e) == Some(0.0) => {
                let v = eval(a, c, x);
                if v <= 0.0 {
                    0.0
                } else {
                    v
                }
            }
            Term::Select(c, t, e) => {
                if eval(a, c, x) > 0.0 {
                    eval(a, t, x)
                } else {
                    eval(a, e, x)
                }
            }
        }
    }

    // Abramowitz-Stegun 7.1.26 is too coarse for derivatives; integrate erf' instead.
    fn erf_approx(x: f64) -> f64 {
        let n = 2000;
        let h = x / n as f64;
        let f = |t: f64| std::f64::consts::FRAC_2_SQRT_PI * (-t * t).exp();
        let mut s = f(0.0) + f(x);
        for i in 1..n {
            s += if i % 2 == 1 { 4.0 } else { 2.0 } * f(i as f64 * h);
        }
        s * h / 3.0
    }

    fn check_derivative(build: impl Fn(&mut Arena, TermId) -> TermId) {
        let mut a = Arena::default();
        let x = a.var(0);
        let y = build(&mut a, x);
        let dy = a.diff(y, 0);
        for &p in &[-1.7, -0.3, 0.4, 1.9] {
            let h = 1e-5;
            let numeric = (eval(&a, y, p + h) - eval(&a, y, p - h)) / (2.0 * h);
            let symbolic = eval(&a, dy, p);
            assert!(
                (numeric - symbolic).abs() < 1e-6 * (1.0 + symbolic.abs()),
                "at {p}: numeric {numeric}, symbolic {symbolic}"
            );
        }
    }

    #[test]
    fn derivatives_match_finite_differences() {
        check_derivative(|a, x| {
            let s = a.call(Func::Sigmoid, x);
            a.mul(x, s)
        });
        check_derivative(|a, x| a.call(Func::Tanh, x));
        check_derivative(|a, x| a.call(Func::Softplus, x));
        // A real power of a positive value (the points include negative ones).
        check_derivative(|a, x| {
            let e = a.call(Func::Exp, x);
            a.call(Func::Pow(2.5f64.to_bits()), e)
        });
        check_derivative(|a, x| {
            let e = a.call(Func::Exp, x);
            let l = a.call(Func::Ln, e);
            let sq = a.call(Func::Sqrt, e);
            a.div(l, sq)
        });
        check_derivative(|a, x| {
            let c = a.constant_of(std::f64::consts::FRAC_1_SQRT_2);
            let u = a.mul(c, x);
            let e = a.call(Func::Erf, u);
            let one = a.constant_of(1.0);
            let s = a.add(one, e);
            let half = a.constant_of(0.5);
            let hx = a.mul(half, x);
            a.mul(hx, s)
        });
        check_derivative(|a, x| {
            let slope = a.constant_of(0.1);
            let neg = a.mul(slope, x);
            a.select(x, x, neg)
        });
    }

    #[test]
    fn simplifier_folds_and_shares() {
        let mut a = Arena::default();
        let x = a.var(3);
        let one = a.constant_of(1.0);
        let zero = a.constant_of(0.0);
        assert_eq!(a.mul(one, x), x);
        assert_eq!(a.add(x, zero), x);
        let t1 = a.call(Func::Tanh, x);
        let t2 = a.call(Func::Tanh, x);
        assert_eq!(t1, t2, "hash-consing shares equal terms");
        let two = a.constant_of(2.0);
        let three = a.constant_of(3.0);
        let m = a.mul(three, x);
        let mm = a.mul(two, m);
        assert_eq!(a.term(mm), Term::Mul(a.constant_of(6.0), x));
    }
}
