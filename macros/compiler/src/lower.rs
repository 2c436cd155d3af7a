//! Stage 2: syntax tree -> graph IR.
//!
//! Resolves names, looks ops up in the registry (suggesting the closest name for a typo),
//! checks each call's arguments and options, assigns each parameterized layer to the binding it
//! is named after, and builds the node list in topological order. Errors are collected, not
//! returned at the first: a bad statement does not hide the next one.

use crate::ast::{self, DimAst, Expr, ModelDef, Stmt};
use crate::expr::{Arena, Term};
use crate::ir::{Dim, Graph, InputDecl, Layer, Node, NodeId, NodeKind, Statement, ValueKind};
use crate::ops::{self, arith, Built, CallArgs};
use crate::Errors;
use proc_macro2::Span;
use std::collections::HashMap;
use syn::Ident;

/// The most repetitions of a block: each has its parameters and its buffers, and a count
/// beyond this is a typo, not a model.
const MAX_REPEAT: usize = 4096;

/// A lowered expression: a graph node or a literal not yet attached to one.
enum Value {
    Node(NodeId),
    Literal(f64, Span),
}

struct Lowerer {
    graph: Graph,
    /// Every name in scope: `Some(node)`, or `None` for a binding whose expression failed (so
    /// its uses do not report a second error).
    scope: HashMap<String, (Option<NodeId>, Span)>,
    used_names: HashMap<String, usize>,
    /// Names written in statements that failed to lower (and the names that typos in them
    /// were closest to): their use is hidden by that error, so they are not reported as
    /// unused too.
    refs_of_failed: Vec<String>,
    /// Names bound by a tuple `let` (`let (q, k, v) = chunk(..)`), whose unused parts are
    /// skipped with `_` rather than removed.
    unpacked: Vec<String>,
    errors: Errors,
    statement: usize,
    /// The parameterized layer of the current statement, with its span.
    statement_layer: Option<Span>,
    binding: String,
}

/// Lowers a parsed model to a graph.
pub fn lower(def: ModelDef) -> Result<Graph, syn::Error> {
    let mut l = Lowerer {
        graph: Graph {
            attrs: def.attrs,
            vis: def.vis,
            name: def.name,
            symbols: Vec::new(),
            nodes: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            loss: None,
            layers: Vec::new(),
            statements: Vec::new(),
            exprs: Arena::default(),
            blocks: def.blocks,
            block_calls: Vec::new(),
        },
        scope: HashMap::new(),
        used_names: HashMap::new(),
        refs_of_failed: Vec::new(),
        unpacked: Vec::new(),
        errors: Errors::default(),
        statement: 0,
        statement_layer: None,
        binding: String::new(),
    };
    if def.stmts.is_empty() {
        return Err(syn::Error::new(
            def.body_span,
            "empty model: declare at least an input, a layer and an output, as in `input x: [B, 4]; let y = linear(x, 2); output y;`",
        ));
    }
    let grad_inputs = def.grad_inputs;
    let mut loss_span: Option<Span> = None;
    // An `output` naming a binding that failed adds nothing to `outputs`, but the user did
    // write one: "no output" would then be a misleading second error.
    let mut wrote_output = false;
    for stmt in def.stmts {
        l.statement_layer = None;
        match stmt {
            Stmt::Input { name, dims, ints } => {
                let ints = ints.map(|k| match k {
                    ast::IntAst::Tokens(vocab, _) => ValueKind::Tokens { vocab },
                    ast::IntAst::Lengths(DimAst::Fixed(n, _)) => {
                        ValueKind::Lengths { max: Dim::Fixed(n) }
                    }
                    ast::IntAst::Lengths(DimAst::Symbol(s)) => ValueKind::Lengths {
                        max: Dim::Symbol(l.symbol(&s)),
                    },
                    // Only a block's argument is declared so (its lengths run along an axis
                    // its caller computed).
                    ast::IntAst::Lengths(DimAst::Multiple(k, s, offset)) => ValueKind::Lengths {
                        max: Dim::affine(l.symbol(&s), k, offset),
                    },
                });
                l.declare_input(name, dims, false, ints)
            }
            Stmt::Target {
                name,
                dims,
                classes,
            } => l.declare_input(
                name,
                dims,
                true,
                classes.map(|c| ValueKind::Labels { classes: c.0 }),
            ),
            Stmt::Let { name, expr } => {
                if let Expr::Call(call) = &expr {
                    // The parser marks each part of a tuple `let` with how many it unpacks.
                    if call.options.iter().any(|(key, _)| key == "unpacked") {
                        l.unpacked.push(name.to_string());
                    }
                }
                l.lower_let(name, expr)
            }
            Stmt::Output { names } => {
                wrote_output = true;
                for name in names {
                    if l.graph.outputs.iter().any(|(_, n)| *n == name) {
                        l.errors.push(syn::Error::new(
                            name.span(),
                            format!("`{name}` is already an output"),
                        ));
                        continue;
                    }
                    if let Some(node) = l.resolve(&name) {
                        l.graph.outputs.push((node, name));
                    }
                }
            }
            Stmt::Loss { keyword, expr } => {
                if let Some(first) = loss_span {
                    let mut e = syn::Error::new(keyword, "a model has one `loss`; add the terms into one expression, e.g. `loss mse(a, y) + 0.1 * mse(b, z);`");
                    e.combine(syn::Error::new(first, "the first `loss` is here"));
                    l.errors.push(e);
                    continue;
                }
                loss_span = Some(keyword);
                l.binding = "loss".to_string();
                if let Some(node) = l.lower_value(&expr) {
                    l.graph.loss = Some(node);
                    l.name_root(node, "loss");
                    l.graph.statements.push(Statement {
                        name: "loss".into(),
                        node,
                    });
                } else {
                    names_in(&expr, &mut l.refs_of_failed);
                }
                l.statement += 1;
            }
        }
    }
    if l.graph.inputs.iter().all(|i| i.is_target) {
        l.errors.push(syn::Error::new(
            l.graph.name.span(),
            format!(
                "model `{}` has no input: declare one, as in `input x: [B, 4];`",
                l.graph.name
            ),
        ));
    }
    if l.graph.outputs.is_empty() && !wrote_output {
        l.errors.push(syn::Error::new(
            l.graph.name.span(),
            format!("model `{}` has no output: add `output NAME;` naming the value its `forward` returns", l.graph.name),
        ));
    }
    for decl in &mut l.graph.inputs {
        decl.needs_grad = grad_inputs.contains(&decl.name.to_string());
    }
    l.check_unused();
    l.errors.finish()?;
    Ok(l.graph)
}

impl Lowerer {
    fn symbol(&mut self, name: &Ident) -> usize {
        let s = name.to_string();
        match self.graph.symbols.iter().position(|x| *x == s) {
            Some(i) => i,
            None => {
                self.graph.symbols.push(s);
                self.graph.symbols.len() - 1
            }
        }
    }

    fn bind(&mut self, name: &Ident, node: Option<NodeId>) -> bool {
        let key = name.to_string();
        if let Some((_, first)) = self.scope.get(&key) {
            let mut e = syn::Error::new(
                name.span(),
                format!("`{key}` is already defined: give this value another name (each name is bound once; parameters are named after their binding)"),
            );
            e.combine(syn::Error::new(
                *first,
                format!("`{key}` is first defined here"),
            ));
            self.errors.push(e);
            return false;
        }
        if ["loss", "self", "ws", "grads", "rng", "F"].contains(&key.as_str()) {
            self.errors.push(syn::Error::new(
                name.span(),
                format!("`{key}` is reserved in generated code: choose another name"),
            ));
            return false;
        }
        self.scope.insert(key, (node, name.span()));
        true
    }

    fn declare_input(
        &mut self,
        name: Ident,
        dims: Vec<DimAst>,
        is_target: bool,
        ints: Option<ValueKind>,
    ) {
        let dims: Vec<Dim> = dims
            .iter()
            .map(|d| match d {
                DimAst::Fixed(n, _) => Dim::Fixed(*n),
                DimAst::Symbol(s) => Dim::Symbol(self.symbol(s)),
                DimAst::Multiple(k, s, offset) => Dim::affine(self.symbol(s), *k, *offset),
            })
            .collect();
        let index = self.graph.inputs.len();
        let node = self.push_node(NodeKind::Input(index), vec![], vec![], name.span(), None);
        self.graph.nodes[node].name = name.to_string();
        self.used_names.insert(name.to_string(), 1);
        if !self.bind(&name, Some(node)) {
            return;
        }
        self.graph.statements.push(Statement {
            name: name.to_string(),
            node,
        });
        // Generated code uses the name as a local variable: give it the macro's call-site
        // hygiene, like every other local the macro writes, so that a model written inside
        // another macro's expansion still resolves.
        let name = Ident::new(&name.to_string(), Span::call_site());
        self.graph.inputs.push(InputDecl {
            name,
            dims,
            is_target,
            ints,
            needs_grad: false,
            node,
        });
        self.statement += 1;
    }

    fn lower_let(&mut self, name: Ident, expr: Expr) {
        self.binding = name.to_string();
        let node = self.lower_value(&expr);
        if let Some(node) = node {
            self.name_root(node, &name.to_string());
            if let Some(layer) = self.statement_layer_node() {
                self.graph.layers[layer].name = name.clone();
            }
            self.graph.statements.push(Statement {
                name: name.to_string(),
                node,
            });
        }
        let bound = self.bind(&name, node);
        if node.is_none() || !bound {
            names_in(&expr, &mut self.refs_of_failed);
        }
        self.statement += 1;
    }

    /// The layer created in the current statement, if any.
    fn statement_layer_node(&self) -> Option<usize> {
        self.graph
            .layers
            .iter()
            .position(|l| self.graph.nodes[l.node].statement == self.statement)
    }

    /// Gives a statement's value node the binding's name (intermediates keep `binding_op`).
    fn name_root(&mut self, node: NodeId, name: &str) {
        let n = &mut self.graph.nodes[node];
        if n.statement == self.statement && !matches!(n.kind, NodeKind::Input(_)) {
            n.name = name.to_string();
        }
    }

    fn resolve(&mut self, name: &Ident) -> Option<NodeId> {
        match self.scope.get(&name.to_string()) {
            Some((node, _)) => *node,
            None => {
                let key = name.to_string();
                let known: Vec<&str> = self.scope.keys().map(String::as_str).collect();
                const RULE: &str = "a name must be an input, a target or a `let` above this line";
                let message = match ops::closest(&key, known.iter().copied()) {
                    Some(c) => {
                        let message = format!("unknown name `{key}`: did you mean `{c}`? ({RULE})");
                        // The typo was meant as a use of `c`: do not call `c` unused.
                        self.refs_of_failed.push(c.to_string());
                        message
                    }
                    None if ops::lookup(&key).is_some() => {
                        format!("unknown name `{key}`: `{key}` is an op, call it as `{key}(...)`")
                    }
                    None => {
                        let mut k = known.clone();
                        k.sort_unstable();
                        format!("unknown name `{key}`: {RULE} (in scope: {})", k.join(", "))
                    }
                };
                self.errors.push(syn::Error::new(name.span(), message));
                None
            }
        }
    }

    fn push_node(
        &mut self,
        kind: NodeKind,
        inputs: Vec<NodeId>,
        input_spans: Vec<Span>,
        span: Span,
        op: Option<&str>,
    ) -> NodeId {
        let base = match op {
            Some(op) => format!("{}_{}", self.binding, op),
            None => self.binding.clone(),
        };
        let count = self.used_names.entry(base.clone()).or_insert(0);
        *count += 1;
        let name = if *count == 1 {
            base
        } else {
            format!("{base}{count}")
        };
        self.graph.nodes.push(Node {
            kind,
            inputs,
            input_spans,
            span,
            name,
            statement: self.statement,
            layer: None,
            tied: None,
            info: None,
        });
        self.graph.nodes.len() - 1
    }

    /// Lowers an expression that must be a tensor.
    fn lower_value(&mut self, expr: &Expr) -> Option<NodeId> {
        match self.lower_expr(expr)? {
            Value::Node(n) => Some(n),
            Value::Literal(v, span) => {
                self.errors.push(syn::Error::new(
                    span,
                    format!("this is the constant {v}, not a tensor: a value is computed from an input, as in `0.5 * x`"),
                ));
                None
            }
        }
    }

    fn lower_expr(&mut self, expr: &Expr) -> Option<Value> {
        match expr {
            Expr::Float(v, s) => Some(Value::Literal(*v, *s)),
            Expr::Int(v, s) => Some(Value::Literal(*v as f64, *s)),
            Expr::Bool(_, s) | Expr::Tuple(_, s) => {
                self.errors
                    .push(syn::Error::new(*s, "expected a tensor or a number here"));
                None
            }
            Expr::Var(name) => self.resolve(name).map(Value::Node),
            Expr::Neg { span, expr } => match self.lower_expr(expr)? {
                Value::Literal(v, s) => Some(Value::Literal(-v, ast::join(*span, s))),
                Value::Node(x) => {
                    let vx = self.graph.exprs.var(x);
                    let term = arith::negate(&mut self.graph.exprs, vx);
                    Some(Value::Node(self.push_pointwise(
                        "neg",
                        term,
                        &[(x, expr.span())],
                        *span,
                    )))
                }
            },
            Expr::Binary {
                op,
                op_span,
                lhs,
                rhs,
            } => {
                let (l, r) = (self.lower_expr(lhs), self.lower_expr(rhs));
                let (l, r) = (l?, r?);
                let mut operands = Vec::new();
                let mut term_of = |this: &mut Self, v: &Value, span: Span| match v {
                    Value::Literal(c, _) => this.graph.exprs.constant_of(*c),
                    Value::Node(n) => {
                        operands.push((*n, span));
                        this.graph.exprs.var(*n)
                    }
                };
                let lt = term_of(self, &l, lhs.span());
                let rt = term_of(self, &r, rhs.span());
                let term = arith::binary(&mut self.graph.exprs, *op, lt, rt);
                if operands.is_empty() {
                    let (Value::Literal(a, _), Value::Literal(b, _)) = (&l, &r) else {
                        return None;
                    };
                    let folded = match op {
                        ast::BinOp::Add => a + b,
                        ast::BinOp::Sub => a - b,
                        ast::BinOp::Mul => a * b,
                        ast::BinOp::Div => a / b,
                    };
                    return Some(Value::Literal(folded, expr.span()));
                }
                // The simplifier folds `x - x` and `0 * x` to a constant: a node of no inputs
                // would have no shape, so the result is a literal like `1.0 + 2.0`.
                if let Term::Const(bits) = self.graph.exprs.term(term) {
                    return Some(Value::Literal(f64::from_bits(bits), expr.span()));
                }
                Some(Value::Node(self.push_pointwise(
                    op.symbol(),
                    term,
                    &operands,
                    *op_span,
                )))
            }
            Expr::Call(call) => self.lower_call(call).map(Value::Node),
        }
    }

    fn push_pointwise(
        &mut self,
        op: &'static str,
        term: usize,
        operands: &[(NodeId, Span)],
        span: Span,
    ) -> NodeId {
        let vars = self.graph.exprs.vars(term);
        let spans = vars
            .iter()
            .map(|v| {
                operands
                    .iter()
                    .find(|(n, _)| n == v)
                    .map_or(span, |(_, s)| *s)
            })
            .collect();
        let summary_op = match op {
            "+" | "-" | "*" | "/" => op,
            other => other,
        };
        self.push_node(
            NodeKind::Pointwise {
                op: summary_op,
                term,
            },
            vars,
            spans,
            span,
            Some(op_label(op)),
        )
    }

    fn lower_call(&mut self, call: &ast::Call) -> Option<NodeId> {
        let name = call.func.to_string();
        if let Some(block) = self.graph.blocks.iter().find(|b| b.name == name).cloned() {
            return self.lower_block_call(call, block);
        }
        let Some(spec) = ops::lookup(&name) else {
            // A close match is the fix; only without one is the whole list worth reading.
            let message = match (ops::pytorch_op(&name), ops::closest(&name, ops::names())) {
                (Some(ours), _) => {
                    format!("unknown op `{name}`: PyTorch's `{name}` is `{ours}` here")
                }
                (None, Some(c)) => format!("unknown op `{name}`: did you mean `{c}`?"),
                (None, None) => {
                    let mut all: Vec<&str> = ops::names().collect();
                    all.sort_unstable();
                    format!("unknown op `{name}`: the ops are {}", all.join(", "))
                }
            };
            self.errors.push(syn::Error::new(call.func.span(), message));
            // Still check the arguments, so their own errors show too.
            for a in &call.args {
                let _ = self.lower_expr(a);
            }
            return None;
        };
        let mut args = CallArgs::new(call, spec.usage());
        let built = match spec.build(&mut args) {
            Ok(b) => b,
            Err(e) => {
                self.errors.push(e);
                return None;
            }
        };
        let mut inputs = Vec::new();
        let mut spans = Vec::new();
        let mut ok = true;
        for &arg in &args.tensors {
            match self.lower_expr(arg) {
                Some(Value::Node(n)) => {
                    inputs.push(n);
                    spans.push(arg.span());
                }
                Some(Value::Literal(_, s)) => {
                    self.errors.push(syn::Error::new(
                        s,
                        format!(
                            "`{name}` expects a tensor here, not a constant: write `{}`",
                            spec.usage()
                        ),
                    ));
                    ok = false;
                }
                None => ok = false,
            }
        }
        if !ok {
            return None;
        }
        match built {
            Built::Pointwise(make) => {
                let vars: Vec<usize> = inputs.iter().map(|&n| self.graph.exprs.var(n)).collect();
                let term = make(&mut self.graph.exprs, &vars);
                let operands: Vec<(NodeId, Span)> = inputs.into_iter().zip(spans).collect();
                Some(self.push_pointwise(spec.name(), term, &operands, call.span))
            }
            Built::Kernel(kernel) => {
                let tied = match kernel.tied() {
                    Some(name) => Some(self.resolve_tied(name)?),
                    None => None,
                };
                let has_params = kernel.has_params();
                if has_params {
                    if self.binding == "loss" {
                        self.errors.push(syn::Error::new(
                            call.span,
                            format!("the `loss` statement cannot hold a parameterized layer (its parameters are named after a `let` binding): bind it first, as in `let out = {name}(...);`, and use `out` in the loss"),
                        ));
                        return None;
                    }
                    if let Some(first) = self.statement_layer {
                        let mut e = syn::Error::new(
                            call.span,
                            format!(
                                "a statement holds at most one parameterized layer, because its parameters are named after the binding (`{b}.weight`): bind the inner layer first, as in `let {b}_inner = ...; let {b} = {name}({b}_inner, ...);`",
                                b = self.binding
                            ),
                        );
                        e.combine(syn::Error::new(
                            first,
                            "the statement's first layer is here",
                        ));
                        self.errors.push(e);
                        return None;
                    }
                    self.statement_layer = Some(call.span);
                }
                let node = self.push_node(
                    NodeKind::Kernel(kernel),
                    inputs,
                    spans,
                    call.span,
                    Some(spec.name()),
                );
                self.graph.nodes[node].tied = tied;
                if has_params {
                    self.graph.layers.push(Layer {
                        name: call.func.clone(),
                        node,
                    });
                    self.graph.nodes[node].layer = Some(self.graph.layers.len() - 1);
                }
                Some(node)
            }
        }
    }

    /// `Block(x, extra, repeat = n)`: one kernel node holding the block compiled for its
    /// arguments' types.
    fn lower_block_call(&mut self, call: &ast::Call, def: ast::BlockDef) -> Option<NodeId> {
        let name = def.name.to_string();
        let params: Vec<String> = def.params.iter().map(|p| p.to_string()).collect();
        let usage: &'static str = "Block(x, ..., repeat = n)";
        let mut args = CallArgs::new(call, usage);
        let parsed = (|| {
            if call.args.len() != params.len() {
                return Err(syn::Error::new(
                    call.span,
                    format!(
                        "block `{name}` takes {} input{} ({}), got {}: write `{name}({}, repeat = n)`",
                        params.len(),
                        if params.len() == 1 { "" } else { "s" },
                        params.join(", "),
                        call.args.len(),
                        params.join(", ")
                    ),
                ));
            }
            for i in 0..params.len() {
                args.tensor(i);
            }
            let repeat = args.opt_int("repeat")?;
            args.finish()?;
            if let Some(n) = repeat.filter(|&n| n > MAX_REPEAT) {
                return Err(syn::Error::new(
                    call.span,
                    format!("`repeat = {n}` blocks is more than kiln allows ({MAX_REPEAT}): is the count mistyped?"),
                ));
            }
            Ok(repeat)
        })();
        let repeat = match parsed {
            Ok(r) => r,
            Err(e) => {
                self.errors.push(e);
                return None;
            }
        };
        if self.binding == "loss" {
            self.errors.push(syn::Error::new(
                call.span,
                format!("the `loss` statement cannot call block `{name}` (its parameters are named after a `let` binding): bind it first, as in `let h = {name}(...);`"),
            ));
            return None;
        }
        if let Some(first) = self.statement_layer {
            let mut e = syn::Error::new(
                call.span,
                format!("a statement holds at most one parameterized layer, and block `{name}` is one: bind its input first, as in `let {b}_in = ...; let {b} = {name}({b}_in, ...);`", b = self.binding),
            );
            e.combine(syn::Error::new(
                first,
                "the statement's first layer is here",
            ));
            self.errors.push(e);
            return None;
        }
        self.statement_layer = Some(call.span);
        let mut inputs = Vec::new();
        let mut spans = Vec::new();
        for arg in &call.args {
            match self.lower_expr(arg) {
                Some(Value::Node(n)) => {
                    inputs.push(n);
                    spans.push(arg.span());
                }
                Some(Value::Literal(_, s)) => {
                    self.errors.push(syn::Error::new(
                        s,
                        format!("block `{name}` takes tensors, not constants"),
                    ));
                    return None;
                }
                None => return None,
            }
        }
        let calls = match self.graph.block_calls.iter_mut().find(|(b, _)| *b == name) {
            Some((_, n)) => {
                *n += 1;
                *n
            }
            None => {
                self.graph.block_calls.push((name.clone(), 1));
                1
            }
        };
        let suffix = if calls == 1 {
            String::new()
        } else {
            calls.to_string()
        };
        let type_name = Ident::new(
            &format!("{}{}{suffix}", self.graph.name, name),
            self.graph.name.span(),
        );
        let kernel = ops::block::BlockCall {
            def,
            model: self.graph.name.clone(),
            vis: self.graph.vis.clone(),
            type_name,
            binding: self.binding.clone(),
            repeat,
            compiled: std::cell::RefCell::new(None),
        };
        let node = self.push_node(
            NodeKind::Kernel(Box::new(kernel)),
            inputs,
            spans,
            call.span,
            Some("block"),
        );
        self.graph.layers.push(Layer {
            name: call.func.clone(),
            node,
        });
        self.graph.nodes[node].layer = Some(self.graph.layers.len() - 1);
        Some(node)
    }

    /// The layer a `tied = name` option names: the binding must own parameters.
    fn resolve_tied(&mut self, name: &Ident) -> Option<usize> {
        let node = self.resolve(name)?;
        match self.graph.nodes[node].layer {
            Some(layer) => Some(layer),
            None => {
                self.errors.push(syn::Error::new(
                    name.span(),
                    format!("`tied = {name}` names a value without parameters: name the binding of a layer whose weight to reuse, as in `let wte = embedding(tokens, 128);` then `linear(h, V, bias = false, tied = wte)`"),
                ));
                None
            }
        }
    }

    /// Bindings whose value reaches no output and not the loss are mistakes (a layer trained
    /// on nothing), reported at the binding.
    fn check_unused(&mut self) {
        let g = &self.graph;
        let mut live = vec![false; g.nodes.len()];
        for (n, _) in &g.outputs {
            live[*n] = true;
        }
        if let Some(l) = g.loss {
            live[l] = true;
        }
        // A statement that failed to compile would have used what it names, and everything
        // those values are computed from: one mistake is one error, not a cascade.
        for key in &self.refs_of_failed {
            if let Some((Some(n), _)) = self.scope.get(key) {
                live[*n] = true;
            }
        }
        for id in (0..g.nodes.len()).rev() {
            if live[id] {
                for &i in &g.nodes[id].inputs {
                    live[i] = true;
                }
            }
        }
        let mut unused: Vec<(Span, String, bool)> = Vec::new();
        for (key, (node, span)) in &self.scope {
            if let Some(n) = node {
                if !live[*n] && !matches!(g.nodes[*n].kind, NodeKind::Input(_)) {
                    unused.push((*span, key.clone(), self.unpacked.contains(key)));
                }
            }
        }
        unused.sort_by_key(|(_, k, _)| k.clone());
        for (span, key, part) in unused {
            let remove = if part {
                "write `_` in its place in the tuple `let`"
            } else {
                "remove it"
            };
            self.errors.push(syn::Error::new(
                span,
                format!("`{key}` is computed but never used: it reaches no `output` and not the `loss`; use it, add `output {key};`, or {remove}"),
            ));
        }
    }
}

fn op_label(op: &str) -> &str {
    match op {
        "+" => "add",
        "-" => "sub",
        "*" => "mul",
        "/" => "div",
        other => other,
    }
}

/// Every name written in `expr` (variables and call arguments, not op names).
fn names_in(expr: &Expr, out: &mut Vec<String>) {
    match expr {
        Expr::Var(name) => out.push(name.to_string()),
        Expr::Call(call) => {
            for e in call.args.iter().chain(call.options.iter().map(|(_, v)| v)) {
                names_in(e, out);
            }
        }
        Expr::Binary { lhs, rhs, .. } => {
            names_in(lhs, out);
            names_in(rhs, out);
        }
        Expr::Neg { expr, .. } => names_in(expr, out),
        Expr::Tuple(items, _) => items.iter().for_each(|e| names_in(e, out)),
        Expr::Float(..) | Expr::Int(..) | Expr::Bool(..) => {}
    }
}

/// `forward` computes the outputs from the inputs alone (targets are given only with the
/// loss), so an output computed from a target cannot be returned by it: reported at the
/// output, naming the target. Run after the shape stage, so that a target fed to a layer by
/// mistake is reported there alone rather than again here.
pub fn check_outputs_need_no_target(g: &Graph) -> syn::Result<()> {
    let mut errors = Errors::default();
    for (node, name) in &g.outputs {
        let mut seen = vec![false; g.nodes.len()];
        let mut stack = vec![*node];
        let mut target = None;
        while let Some(id) = stack.pop() {
            if std::mem::replace(&mut seen[id], true) {
                continue;
            }
            if let NodeKind::Input(i) = g.nodes[id].kind {
                if g.inputs[i].is_target {
                    target = Some(&g.inputs[i].name);
                    break;
                }
            }
            stack.extend(&g.nodes[id].inputs);
        }
        if let Some(target) = target {
            errors.push(syn::Error::new(
                name.span(),
                format!("output `{name}` is computed from the target `{target}`, but `forward` returns the outputs from the inputs alone (targets are given only with the loss): output the values it is made from and combine them with `{target}` outside the model, or declare `{target}` as an `input` if the model reads it when predicting"),
            ));
        }
    }
    errors.finish()
}
