//! The ONNX graph a model exports, built at expansion time.
//!
//! `emit::onnx` walks the graph and asks each op for its ONNX nodes: pointwise terms are
//! expanded term by term here ([`OnnxBuilder::term`]), kernels write theirs through
//! [`Kernel::onnx`](crate::ops::Kernel::onnx) with an [`OnnxCx`]. The result is plain data
//! ([`OnnxBuilder`]) that `emit::onnx` renders as a static `kiln::onnx::OnnxGraph`. An op with
//! no ONNX form returns an error message, which the generated `onnx_graph` returns at run
//! time (the model still compiles).

use crate::expr::{Arena, Func, Term, TermId};
use crate::ir::ValueInfo;
use std::collections::{HashMap, HashSet};

/// An attribute of an ONNX node.
#[derive(Clone, Debug)]
pub enum Attr {
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A list of integers.
    Ints(Vec<i64>),
    /// A string.
    Str(String),
    /// A list of strings.
    Strs(Vec<String>),
}

/// One ONNX node.
#[derive(Clone, Debug)]
pub struct Node {
    /// The ONNX operator.
    pub op: &'static str,
    /// A unique name.
    pub name: String,
    /// Values read (`""`: an omitted optional input).
    pub inputs: Vec<String>,
    /// Values written.
    pub outputs: Vec<String>,
    /// Attributes by name.
    pub attrs: Vec<(&'static str, Attr)>,
}

/// Where an initializer's values come from.
#[derive(Clone, Debug)]
pub enum Data {
    /// Model parameters or buffers by `state_dict` name, concatenated, each with its first
    /// axis cut into blocks reordered as given (empty: as is).
    Params(Vec<String>, Vec<usize>),
    /// Literal floats.
    Floats(Vec<f64>),
    /// Literal integers.
    Ints(Vec<i64>),
}

/// A constant tensor.
#[derive(Clone, Debug)]
pub struct Init {
    /// Its value name.
    pub name: String,
    /// Its shape.
    pub dims: Vec<usize>,
    /// Its values.
    pub data: Data,
}

/// The ONNX graph being built.
#[derive(Default)]
pub struct OnnxBuilder {
    /// Nodes in order.
    pub nodes: Vec<Node>,
    /// Initializers in order.
    pub inits: Vec<Init>,
    /// Value names in use.
    used: HashSet<String>,
    /// Scalar float constants already made, by bits.
    consts: HashMap<u64, String>,
    /// Initializers of parameters already made, by their source description.
    params: HashMap<String, String>,
    /// Values computed for terms (terms are hash-consed graph-wide, so a term is one value).
    terms: HashMap<TermId, String>,
}

impl OnnxBuilder {
    /// A fresh value name: `base`, or `base_1`, `base_2`, ... when taken.
    pub fn fresh(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut k = 0;
        while self.used.contains(&name) {
            k += 1;
            name = format!("{base}_{k}");
        }
        self.used.insert(name.clone());
        name
    }

    /// Adds a node writing `outputs`; returns nothing (names are chosen by the caller).
    pub fn node(
        &mut self,
        op: &'static str,
        inputs: Vec<String>,
        outputs: Vec<String>,
        attrs: Vec<(&'static str, Attr)>,
    ) {
        let name = format!("{}_{}", outputs.first().map_or("node", String::as_str), op);
        self.nodes.push(Node {
            op,
            name,
            inputs,
            outputs,
            attrs,
        });
    }

    /// Adds a node with one fresh output named after `base`, returning it.
    pub fn op(
        &mut self,
        op: &'static str,
        inputs: Vec<String>,
        base: &str,
        attrs: Vec<(&'static str, Attr)>,
    ) -> String {
        let out = self.fresh(base);
        self.node(op, inputs, vec![out.clone()], attrs);
        out
    }

    /// A float scalar constant.
    pub fn scalar(&mut self, v: f64) -> String {
        if let Some(n) = self.consts.get(&v.to_bits()) {
            return n.clone();
        }
        let name = self.fresh("const");
        self.inits.push(Init {
            name: name.clone(),
            dims: Vec::new(),
            data: Data::Floats(vec![v]),
        });
        self.consts.insert(v.to_bits(), name.clone());
        name
    }

    /// A 1-D int64 constant (shapes, axes).
    pub fn ints(&mut self, base: &str, vs: Vec<i64>) -> String {
        let name = self.fresh(base);
        self.inits.push(Init {
            name: name.clone(),
            dims: vec![vs.len()],
            data: Data::Ints(vs),
        });
        name
    }

    /// A float constant tensor.
    pub fn floats(&mut self, base: &str, dims: Vec<usize>, vs: Vec<f64>) -> String {
        let name = self.fresh(base);
        self.inits.push(Init {
            name: name.clone(),
            dims,
            data: Data::Floats(vs),
        });
        name
    }

    /// An initializer of model parameters (one per distinct source and layout: a tied
    /// weight used twice is one initializer).
    pub fn param(&mut self, sources: Vec<String>, blocks: Vec<usize>, dims: Vec<usize>) -> String {
        let key = format!("{sources:?}{blocks:?}{dims:?}");
        if let Some(n) = self.params.get(&key) {
            return n.clone();
        }
        let base = if sources.len() == 1 && blocks.is_empty() {
            sources[0].clone()
        } else {
            format!("{}.onnx", sources[0])
        };
        let name = self.fresh(&base);
        self.inits.push(Init {
            name: name.clone(),
            dims,
            data: Data::Params(sources, blocks),
        });
        self.params.insert(key, name.clone());
        name
    }

    /// Expands a pointwise term into ONNX nodes; `var` names the value of a graph node.
    /// Returns the value holding the term's result.
    pub fn term(
        &mut self,
        arena: &Arena,
        id: TermId,
        base: &str,
        var: &dyn Fn(usize) -> String,
    ) -> String {
        if let Some(v) = self.terms.get(&id) {
            return v.clone();
        }
        let out = match arena.term(id) {
            Term::Var(n) => return var(n),
            Term::Const(bits) => return self.scalar(f64::from_bits(bits)),
            Term::Add(a, b) => self.binary("Add", arena, a, b, base, var),
            Term::Sub(a, b) => self.binary("Sub", arena, a, b, base, var),
            Term::Mul(a, b) => self.binary("Mul", arena, a, b, base, var),
            Term::Div(a, b) => self.binary("Div", arena, a, b, base, var),
            Term::Neg(a) => {
                let a = self.term(arena, a, base, var);
                self.op("Neg", vec![a], base, vec![])
            }
            Term::Call(f, a) => {
                let a = self.term(arena, a, base, var);
                let op = match f {
                    Func::Exp => "Exp",
                    Func::Ln => "Log",
                    Func::Sqrt => "Sqrt",
                    Func::Tanh => "Tanh",
                    Func::Sigmoid => "Sigmoid",
                    Func::Softplus => "Softplus",
                    Func::Erf => "Erf",
                    Func::Pow(_) => "Pow",
                };
                let mut inputs = vec![a];
                // Pow's exponent is its second input.
                if let Some(p) = f.exponent() {
                    inputs.push(self.scalar(p));
                }
                self.op(op, inputs, base, vec![])
            }
            // `relu`: x > 0 ? x : 0, one ONNX node.
            Term::Select(c, t, e) if c == t && arena.constant(e) == Some(0.0) => {
                let c = self.term(arena, c, base, var);
                self.op("Relu", vec![c], base, vec![])
            }
            Term::Select(c, t, e) => {
                let c = self.term(arena, c, base, var);
                let zero = self.scalar(0.0);
                let cond = self.op("Greater", vec![c, zero], base, vec![]);
                let t = self.term(arena, t, base, var);
                let e = self.term(arena, e, base, var);
                self.op("Where", vec![cond, t, e], base, vec![])
            }
        };
        self.terms.insert(id, out.clone());
        out
    }

    fn binary(
        &mut self,
        op: &'static str,
        arena: &Arena,
        a: TermId,
        b: TermId,
        base: &str,
        var: &dyn Fn(usize) -> String,
    ) -> String {
        let a = self.term(arena, a, base, var);
        let b = self.term(arena, b, base, var);
        self.op(op, vec![a, b], base, vec![])
    }
}

/// What a kernel's [`Kernel::onnx`](crate::ops::Kernel::onnx) gets.
pub struct OnnxCx<'a> {
    /// The graph being built.
    pub b: &'a mut OnnxBuilder,
    /// The input values' names.
    pub inputs: Vec<String>,
    /// The input values' types.
    pub input_infos: Vec<ValueInfo>,
    /// The name the op's result must be written under.
    pub output: String,
    /// The result's type.
    pub output_info: ValueInfo,
    /// The layer's parameters (after a tied op's lent one): `state_dict` name and dims.
    pub params: Vec<(String, Vec<usize>)>,
    /// The layer's buffers: `state_dict` name and dims.
    pub buffers: Vec<(String, Vec<usize>)>,
    /// The symbolic dims' names.
    pub symbols: &'a [String],
}

impl OnnxCx<'_> {
    /// Parameter `i` as an initializer, as it is stored.
    pub fn param(&mut self, i: usize) -> String {
        let (name, dims) = self.params[i].clone();
        self.b.param(vec![name], Vec::new(), dims)
    }

    /// Buffer `i` as an initializer.
    pub fn buffer(&mut self, i: usize) -> String {
        let (name, dims) = self.buffers[i].clone();
        self.b.param(vec![name], Vec::new(), dims)
    }

    /// A fresh intermediate value named after the output.
    pub fn tmp(&mut self, what: &str) -> String {
        let base = format!("{}_{what}", self.output);
        self.b.fresh(&base)
    }

    /// Adds a node writing the op's output.
    pub fn finish(
        &mut self,
        op: &'static str,
        inputs: Vec<String>,
        attrs: Vec<(&'static str, Attr)>,
    ) {
        let out = self.output.clone();
        self.b.node(op, inputs, vec![out], attrs);
    }

    /// Adds a node writing a fresh intermediate, returning its name.
    pub fn op(
        &mut self,
        op: &'static str,
        inputs: Vec<String>,
        what: &str,
        attrs: Vec<(&'static str, Attr)>,
    ) -> String {
        let out = self.tmp(what);
        self.b.node(op, inputs, vec![out.clone()], attrs);
        out
    }

    /// The rank of input `i`.
    pub fn rank(&self, i: usize) -> usize {
        self.input_infos[i].shape.rank()
    }

    /// A `[len]` vector of `value`, as one element expanded by the graph (`Expand`): a
    /// channel count is only as large as the model declares it, and the constant is never
    /// materialised here or in the file.
    pub fn filled(&mut self, what: &str, len: usize, value: f64) -> Result<String, String> {
        let len = i64::try_from(len).map_err(|_| format!("{len} elements is too many for ONNX"))?;
        let one = self.b.floats(what, vec![1], vec![value]);
        let shape = self.b.ints("shape", vec![len]);
        Ok(self.op("Expand", vec![one, shape], what, vec![]))
    }
}

/// The message for an op with no ONNX form.
pub fn unsupported(op: &str, why: &str) -> String {
    format!("`{op}` cannot be exported to ONNX: {why}")
}

impl OnnxBuilder {
    /// A 0-d int64 constant (an index that makes `Gather` drop the axis).
    pub fn int_scalar(&mut self, v: i64) -> String {
        let name = self.fresh("index");
        self.inits.push(Init {
            name: name.clone(),
            dims: Vec::new(),
            data: Data::Ints(vec![v]),
        });
        name
    }
}

/// The `shape` input of an ONNX `Reshape` from `from` to `to`: fixed dims as numbers, a
/// symbolic dim at the same place in both as `0` (copied), one other symbolic dim as `-1`
/// (inferred). More than one inferred dim has no static form.
pub fn reshape_target(
    from: &crate::ir::Shape,
    to: &crate::ir::Shape,
    symbols: &[String],
) -> Result<Vec<i64>, String> {
    use crate::ir::Dim;
    let mut inferred = 0;
    let out: Vec<i64> =
        to.0.iter()
            .enumerate()
            .map(|(i, d)| match d {
                Dim::Fixed(n) => *n as i64,
                _ if from.0.get(i) == Some(d) => 0,
                _ => {
                    inferred += 1;
                    -1
                }
            })
            .collect();
    if inferred > 1 {
        return Err(format!(
            "a reshape from {} to {} moves more than one symbolic dim",
            from.display(symbols),
            to.display(symbols)
        ));
    }
    Ok(out)
}

impl OnnxCx<'_> {
    /// `Range(0, n)` where `n` is axis `axis` of `value` (read at run time, so symbolic dims
    /// work): the positions along that axis, int64.
    pub fn positions(&mut self, value: &str, axis: i64, what: &str) -> String {
        let shape = self.op("Shape", vec![value.to_string()], "shape", vec![]);
        let index = self.b.int_scalar(axis);
        let n = self.op(
            "Gather",
            vec![shape, index],
            what,
            vec![("axis", Attr::Int(0))],
        );
        let (zero, step) = (self.b.int_scalar(0), self.b.int_scalar(1));
        self.op("Range", vec![zero, n, step], what, vec![])
    }

    /// `scores [.., T, S]` with every key after its query set to -inf.
    pub fn causal(&mut self, scores: &str, rank: usize) -> String {
        let r = rank as i64;
        let i = self.positions(scores, r - 2, "query");
        let j = self.positions(scores, r - 1, "key");
        let axis = self.b.ints("axes", vec![1]);
        let i = self.op("Unsqueeze", vec![i, axis], "query", vec![]);
        let future = self.op("Greater", vec![j, i], "future", vec![]);
        let inf = self.b.scalar(f64::NEG_INFINITY);
        self.op(
            "Where",
            vec![future, inf, scores.to_string()],
            "masked",
            vec![],
        )
    }
}

/// A model's whole ONNX graph as data.
pub struct Parts {
    /// Its nodes and initializers.
    pub b: OnnxBuilder,
    /// The exported inputs: graph node id and value name.
    pub inputs: Vec<(usize, String)>,
    /// The declared outputs' value names, in order.
    pub outputs: Vec<String>,
}
