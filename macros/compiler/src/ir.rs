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
    /// The dim as a message shows it: its number, or its symbol's name (`B`).
    pub fn display(self, symbols: &[String]) -> String {
        match self {
            Dim::Fixed(n) => n.to_string(),
            Dim::Symbol(s) => symbols.get(s).map_or("?", String::as_str).to_string(),
        }
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
            match d {
                Dim::Fixed(n) => write!(f, "{n}")?,
                Dim::Symbol(s) => f.write_str(self.symbols.get(*s).map_or("?", String::as_str))?,
            }
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
