//! The graph IR that every stage after parsing works on.
//!
//! `lower` builds it from the syntax tree; `shape` fills in every node's [`ValueInfo`];
//! `expr::fuse` merges pointwise chains; `autodiff` and `plan` read it; `emit` writes Rust
//! from it. Nodes are stored in topological order (an input always has a smaller id).

use crate::expr::{Arena, TermId};
use crate::ops::Kernel;
use proc_macro2::Span;
use std::fmt;
use syn::{Attribute, Ident, Visibility};

/// Index of a node in [`Graph::nodes`].
pub type NodeId = usize;

/// One dimension of a shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dim {
    /// Known at compile time.
    Fixed(usize),
    /// A symbolic dim: index into [`Graph::symbols`].
    Symbol(usize),
    /// `scale · symbol + offset`: a size that layers compute from a symbolic one (a pooling
    /// halves `16 * H` into `8 * H`, a valid 3×3 convolution takes that to `8 * H - 2`).
    /// Built only by [`Dim::affine`], so that one size has one form (never scale 1 with offset
    /// 0, which is [`Dim::Symbol`]) and equal sizes compare equal. The generated code computes
    /// it from the bound symbol, which the call boundary checks is large enough to keep every
    /// such size at least 1.
    Affine {
        /// The symbol, an index into [`Graph::symbols`].
        symbol: usize,
        /// The multiple of the symbol, at least 1.
        scale: usize,
        /// What is added to the multiple.
        offset: i64,
    },
}

/// Why a size cannot be written as `scale · symbol + offset`: a division by `divisor` whose
/// remainder depends on the symbol. Declaring the symbolic size as a multiple of
/// `multiple` removes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Remainder {
    /// The divisor (a stride or a pooling window).
    pub divisor: usize,
    /// The factor by which the symbol's scale falls short of a multiple of the divisor.
    pub multiple: usize,
}

/// A shape: a list of dims; the empty list is a scalar.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Shape(pub Vec<Dim>);

impl Shape {
    /// Rank (number of dims).
    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// The last dim, if any.
    pub fn last(&self) -> Option<Dim> {
        self.0.last().copied()
    }

    /// Renders with symbol names: `[B, 128]`.
    pub fn display<'a>(&'a self, symbols: &'a [String]) -> ShapeDisplay<'a> {
        ShapeDisplay {
            shape: self,
            symbols,
        }
    }
}

impl Dim {
    /// The dim as a message shows it: its number, its symbol's name (`B`), or the formula of
    /// its symbol (`8 * H - 2`).
    pub fn display(self, symbols: &[String]) -> String {
        match self {
            Dim::Fixed(n) => n.to_string(),
            Dim::Symbol(s) => symbols.get(s).map_or("?", String::as_str).to_string(),
            Dim::Affine {
                symbol,
                scale,
                offset,
            } => {
                let name = symbols.get(symbol).map_or("?", String::as_str);
                let multiple = if scale == 1 {
                    name.to_string()
                } else {
                    format!("{scale} * {name}")
                };
                match offset.cmp(&0) {
                    std::cmp::Ordering::Equal => multiple,
                    std::cmp::Ordering::Greater => format!("{multiple} + {offset}"),
                    std::cmp::Ordering::Less => format!("{multiple} - {}", offset.unsigned_abs()),
                }
            }
        }
    }

    /// `scale · symbol + offset` in its one form: [`Dim::Symbol`] for `1 · symbol + 0`.
    pub fn affine(symbol: usize, scale: usize, offset: i64) -> Dim {
        if scale == 1 && offset == 0 {
            Dim::Symbol(symbol)
        } else {
            Dim::Affine {
                symbol,
                scale,
                offset,
            }
        }
    }

    /// `(symbol, scale, offset)` of a dim that is not fixed.
    pub fn linear(self) -> Option<(usize, usize, i64)> {
        self.size_or_formula().err()
    }

    /// A fixed dim's size, or a symbolic one's `(symbol, scale, offset)`.
    fn size_or_formula(self) -> Result<usize, (usize, usize, i64)> {
        match self {
            Dim::Fixed(n) => Ok(n),
            Dim::Symbol(s) => Err((s, 1, 0)),
            Dim::Affine {
                symbol,
                scale,
                offset,
            } => Err((symbol, scale, offset)),
        }
    }

    /// The size of a fixed dim, 0 for a symbolic one.
    pub fn fixed_or_zero(self) -> usize {
        match self {
            Dim::Fixed(n) => n,
            _ => 0,
        }
    }

    /// Whether the dim is known at compile time.
    pub fn is_fixed(self) -> bool {
        matches!(self, Dim::Fixed(_))
    }

    /// The dim plus `n` (which may be negative). A fixed dim saturates at 0 rather than
    /// wrapping: the shape stage rejects sizes below 1 with a message of its own.
    pub fn plus(self, n: i64) -> Dim {
        match self.size_or_formula() {
            Ok(d) => Dim::Fixed(usize::try_from((d as i64).saturating_add(n)).unwrap_or(0)),
            Err((symbol, scale, offset)) => Dim::affine(symbol, scale, offset.saturating_add(n)),
        }
    }

    /// The sum of two dims when it is again a fixed size or a formula of one symbol: two fixed
    /// sizes, a formula and a fixed size (`T + 1`), or two formulas of the same symbol (`T + T`
    /// is `2 * T`). `None` for formulas of two symbols (`T + S`), and for fixed sizes whose sum
    /// a `usize` cannot count.
    pub fn sum(self, other: Dim) -> Option<Dim> {
        match (self.size_or_formula(), other.size_or_formula()) {
            (Ok(a), Ok(b)) => a.checked_add(b).map(Dim::Fixed),
            (Ok(n), Err(_)) => Some(other.plus(i64::try_from(n).ok()?)),
            (Err(_), Ok(n)) => Some(self.plus(i64::try_from(n).ok()?)),
            (Err((s, a, b)), Err((t, c, d))) if s == t => {
                Some(Dim::affine(s, a.checked_add(c)?, b.checked_add(d)?))
            }
            _ => None,
        }
    }

    /// The dim times `k` (at least 1).
    pub fn times(self, k: usize) -> Dim {
        match self.size_or_formula() {
            Ok(d) => Dim::Fixed(d.saturating_mul(k)),
            Err((symbol, scale, offset)) => Dim::affine(
                symbol,
                scale.saturating_mul(k),
                offset.saturating_mul(k as i64),
            ),
        }
    }

    /// `⌊(dim + add) / divisor⌋`, or `⌈..⌉` with `ceil`: for a symbolic dim only when its scale
    /// is a multiple of the divisor, so that the quotient is again `scale' · symbol + offset'`
    /// whatever the symbol's value. A fixed dim below `-add` gives 0 (see [`Dim::plus`]).
    pub fn div(self, add: i64, divisor: usize, ceil: bool) -> Result<Dim, Remainder> {
        let divisor = divisor.max(1);
        let quotient = |n: i64| {
            let d = divisor as i64;
            if ceil {
                n.div_euclid(d) + i64::from(n.rem_euclid(d) != 0)
            } else {
                n.div_euclid(d)
            }
        };
        match self.size_or_formula() {
            Ok(d) => {
                let n = (d as i64).saturating_add(add);
                Ok(Dim::Fixed(usize::try_from(quotient(n)).unwrap_or(0)))
            }
            Err((symbol, scale, offset)) if scale.is_multiple_of(divisor) => Ok(Dim::affine(
                symbol,
                scale / divisor,
                quotient(offset.saturating_add(add)),
            )),
            Err((_, scale, _)) => Err(Remainder {
                divisor,
                multiple: divisor / gcd(scale, divisor),
            }),
        }
    }

    /// The smallest value of the dim's symbol for which the dim is at least 1 (1 for a fixed
    /// dim or a plain symbol).
    pub fn symbol_minimum(self) -> usize {
        match self.linear() {
            Some((_, scale, offset)) if offset < 0 => {
                let need = 1 - offset; // scale · s ≥ 1 − offset
                let scale = scale as i64;
                usize::try_from((need + scale - 1) / scale)
                    .unwrap_or(usize::MAX)
                    .max(1)
            }
            _ => 1,
        }
    }
}

/// The greatest common divisor.
pub fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// [`Shape`] with its symbol names, for messages.
pub struct ShapeDisplay<'a> {
    shape: &'a Shape,
    symbols: &'a [String],
}

impl fmt::Display for ShapeDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.shape.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(&d.display(self.symbols))?;
        }
        f.write_str("]")
    }
}

/// What a value holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueKind {
    /// Floating-point numbers of the model's float type.
    Float,
    /// Integer class labels below `classes`.
    Labels {
        /// The declared class count.
        classes: usize,
    },
    /// Integer token ids below `vocab`.
    Tokens {
        /// The declared vocabulary size.
        vocab: usize,
    },
    /// Sequence lengths, each between 1 and `max`.
    Lengths {
        /// The dim the lengths measure (`T`).
        max: Dim,
    },
}

impl ValueKind {
    /// Whether the value holds integers (labels, token ids, lengths) rather than floats.
    pub fn is_int(self) -> bool {
        !matches!(self, ValueKind::Float)
    }

    /// What the value holds, for messages: "integer class labels", "token ids", ...
    pub fn describe(self) -> &'static str {
        match self {
            ValueKind::Float => "float values",
            ValueKind::Labels { .. } => "integer class labels",
            ValueKind::Tokens { .. } => "integer token ids",
            ValueKind::Lengths { .. } => "integer sequence lengths",
        }
    }
}

/// A node's inferred type: shape and kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValueInfo {
    /// The shape.
    pub shape: Shape,
    /// What it holds.
    pub kind: ValueKind,
}

/// What a node computes.
pub enum NodeKind {
    /// A model input or target (index into [`Graph::inputs`]).
    Input(usize),
    /// An elementwise expression over its input nodes (a term in [`Graph::exprs`]); `op` is
    /// the outermost op's name for summaries (`relu`, `+`).
    Pointwise { op: &'static str, term: TermId },
    /// Any other op: a kernel call with a hand-written VJP.
    Kernel(Box<dyn Kernel>),
}

/// One value in the graph.
pub struct Node {
    /// What it computes.
    pub kind: NodeKind,
    /// Nodes it reads (for pointwise nodes: the variables of its term, in order).
    pub inputs: Vec<NodeId>,
    /// Span of each input as written, for errors about one argument.
    pub input_spans: Vec<Span>,
    /// The expression that produced it.
    pub span: Span,
    /// Name used for its buffers in generated code: the binding (`h1`) or binding + op
    /// (`h1_linear`) for intermediates.
    pub name: String,
    /// The statement it belongs to (index into [`Graph::statements`]).
    pub statement: usize,
    /// The parameterized layer it owns, if any (index into [`Graph::layers`]).
    pub layer: Option<usize>,
    /// The layer lending it its first parameter (a tied output head), if any.
    pub tied: Option<usize>,
    /// Filled by the shape stage.
    pub info: Option<ValueInfo>,
}

/// A declared input or target.
pub struct InputDecl {
    /// Its name.
    pub name: Ident,
    /// Declared dims.
    pub dims: Vec<Dim>,
    /// `target` rather than `input`.
    pub is_target: bool,
    /// What an integer input or target holds (`None`: floats).
    pub ints: Option<ValueKind>,
    /// Whether the backward pass computes this input's gradient (a block's inputs).
    pub needs_grad: bool,
    /// The node holding it.
    pub node: NodeId,
}

/// A parameterized layer (one per statement at most).
pub struct Layer {
    /// The binding it is named after (`h1` -> `h1.weight`).
    pub name: Ident,
    /// The node that owns it.
    pub node: NodeId,
}

/// A `let`, `input`, `target` or `loss` statement, for the summary.
pub struct Statement {
    /// The bound name (`loss` for the loss).
    pub name: String,
    /// The node holding the statement's value.
    pub node: NodeId,
}

/// The whole model.
pub struct Graph {
    /// Attributes of the model struct.
    pub attrs: Vec<Attribute>,
    /// Visibility of generated items.
    pub vis: Visibility,
    /// The model's name.
    pub name: Ident,
    /// Symbolic dim names, in order of first appearance.
    pub symbols: Vec<String>,
    /// Nodes in topological order.
    pub nodes: Vec<Node>,
    /// Inputs and targets in declaration order.
    pub inputs: Vec<InputDecl>,
    /// Outputs in declaration order (node and the name written in `output`).
    pub outputs: Vec<(NodeId, Ident)>,
    /// The loss node.
    pub loss: Option<NodeId>,
    /// Parameterized layers in declaration order.
    pub layers: Vec<Layer>,
    /// Statements in order.
    pub statements: Vec<Statement>,
    /// Every pointwise expression.
    pub exprs: Arena,
    /// The blocks the model declares, which calls compile as models of their own.
    pub blocks: Vec<crate::ast::BlockDef>,
    /// How many calls of each block (by name) were lowered so far: a block called from two
    /// places compiles to two types.
    pub block_calls: Vec<(String, usize)>,
}

impl Graph {
    /// The inferred info of a node (after the shape stage).
    pub fn info(&self, id: NodeId) -> &ValueInfo {
        self.nodes[id]
            .info
            .as_ref()
            .unwrap_or_else(|| unreachable!("shape stage ran before use of node {id}"))
    }

    /// The least value of each symbol that keeps every size the model computes from it at
    /// least 1 (1 for a symbol no layer shrinks): the call boundary checks it.
    pub fn symbol_minimums(&self) -> Vec<usize> {
        self.symbol_minimums_where(|_| true)
    }

    /// [`Graph::symbol_minimums`] of the nodes the inference pass computes, those that reach
    /// an output: a value only the loss reads (a window `T - 1` long of a target-side term)
    /// does not make `forward` refuse inputs it can run on.
    pub fn output_symbol_minimums(&self) -> Vec<usize> {
        let mut reaches = vec![false; self.nodes.len()];
        for (o, _) in &self.outputs {
            reaches[*o] = true;
        }
        for id in (0..self.nodes.len()).rev() {
            if reaches[id] {
                for &i in &self.nodes[id].inputs {
                    reaches[i] = true;
                }
            }
        }
        self.symbol_minimums_where(|id| reaches[id])
    }

    /// [`Graph::symbol_minimums`] over the nodes `keep` accepts.
    fn symbol_minimums_where(&self, keep: impl Fn(NodeId) -> bool) -> Vec<usize> {
        let mut least = vec![1; self.symbols.len()];
        let mut sizes: Vec<Dim> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(id, _)| keep(*id))
            .filter_map(|(_, n)| n.info.as_ref())
            .flat_map(|info| info.shape.0.iter().copied())
            .collect();
        for (id, node) in self.nodes.iter().enumerate() {
            if !keep(id) {
                continue;
            }
            if let NodeKind::Kernel(k) = &node.kind {
                let inputs: Option<Vec<&ValueInfo>> = node
                    .inputs
                    .iter()
                    .map(|&i| self.nodes[i].info.as_ref())
                    .collect();
                if let Some(inputs) = inputs {
                    sizes.extend(k.required_sizes(&inputs));
                }
            }
        }
        for dim in &sizes {
            if let Some((symbol, ..)) = dim.linear() {
                if let Some(slot) = least.get_mut(symbol) {
                    *slot = (*slot).max(dim.symbol_minimum());
                }
            }
        }
        least
    }

    /// A node's shape rendered with symbol names.
    pub fn shape_string(&self, id: NodeId) -> String {
        self.info(id).shape.display(&self.symbols).to_string()
    }

    /// The layers whose parameters a node reads: the one lending it a tied parameter, then
    /// its own.
    pub fn param_layers(&self, id: NodeId) -> impl Iterator<Item = usize> + '_ {
        let node = &self.nodes[id];
        node.tied.into_iter().chain(node.layer)
    }

    /// The op name of a node, for summaries and the graph description.
    pub fn op_name(&self, id: NodeId) -> &'static str {
        match &self.nodes[id].kind {
            NodeKind::Input(i) if self.inputs[*i].is_target => "target",
            NodeKind::Input(_) => "input",
            NodeKind::Pointwise { op, .. } => op,
            NodeKind::Kernel(k) => k.name(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Dim, Remainder};

    const H: usize = 0;

    fn names() -> Vec<String> {
        vec!["H".to_string()]
    }

    #[test]
    fn sizes_computed_from_a_symbol_have_one_form() {
        let x = Dim::affine(H, 16, 0);
        assert_eq!(x.display(&names()), "16 * H");
        assert_eq!(Dim::affine(H, 1, 0), Dim::Symbol(H));
        // A valid 3x3 convolution, a pooling by 2, an upsampling by 2 and a pad of 2.
        let conv = x.plus(-2);
        assert_eq!(conv.display(&names()), "16 * H - 2");
        let pooled = conv.div(-2, 2, false).map(|d| d.plus(1));
        assert_eq!(pooled, Ok(Dim::affine(H, 8, -1)));
        assert_eq!(pooled.unwrap().times(2).plus(2), x);
        assert_eq!(Dim::Symbol(H).plus(3).display(&names()), "H + 3");
    }

    #[test]
    fn a_division_the_scale_does_not_allow_says_which_multiple_would() {
        let x = Dim::affine(H, 6, -1);
        assert_eq!(
            x.div(0, 4, false),
            Err(Remainder {
                divisor: 4,
                multiple: 2
            })
        );
        // ⌊(6H − 1)/3⌋ = 2H − 1 and ⌈(6H − 1)/3⌉ = 2H, for every H.
        assert_eq!(x.div(0, 3, false), Ok(Dim::affine(H, 2, -1)));
        assert_eq!(x.div(0, 3, true), Ok(Dim::affine(H, 2, 0)));
        assert_eq!(Dim::Fixed(7).div(-3, 2, false), Ok(Dim::Fixed(2)));
        assert_eq!(Dim::Fixed(7).div(-2, 2, true), Ok(Dim::Fixed(3)));
    }

    #[test]
    fn the_least_symbol_keeps_a_size_at_least_one() {
        assert_eq!(Dim::affine(H, 4, -10).symbol_minimum(), 3);
        assert_eq!(Dim::affine(H, 4, -11).symbol_minimum(), 3);
        assert_eq!(Dim::affine(H, 4, -12).symbol_minimum(), 4);
        assert_eq!(Dim::affine(H, 2, 5).symbol_minimum(), 1);
        assert_eq!(Dim::Fixed(3).symbol_minimum(), 1);
    }
}
