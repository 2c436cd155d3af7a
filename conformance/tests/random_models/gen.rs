//! The random model generator: a seeded, random, well-typed graph in a small IR of its own,
//! printed as `kiln::model!` source.
//!
//! The generator tracks every value's shape (with the sizes the test instantiates symbolic
//! dims with), so every model it prints compiles; the same IR drives the reference
//! interpreter (`interp.rs`). A model starts from one input of one of three families (vectors
//! `[B, F]`, sequences `[B, T, F]` of floats or token ids, images `[B, C, H, W]`, whose height
//! and width are now and then multiples of the symbols `H` and `W` so that every size a layer
//! computes from them is a formula, `4 * H - 2`, which the target declares too), applies a
//! few random ops to the latest value or, for fan-out, to an earlier one, and ends in a head
//! and a loss; every value nothing consumes joins the loss as `c * mean(v)`, because the
//! language rejects bindings that reach neither an output nor the loss.

use kiln::rand::rngs::StdRng;
use kiln::rand::{RngExt, SeedableRng};
use std::fmt::Write as _;

/// One dim: its size in this test instance and, if symbolic, its name and formula.
#[derive(Clone, Debug, PartialEq)]
pub struct Dim {
    /// The size the test binds it to.
    pub size: usize,
    /// The symbolic name (`B`), or `None` for a literal dim.
    pub sym: Option<&'static str>,
    /// For a symbolic dim, the multiple of the symbol it is (1 for the symbol itself).
    pub scale: usize,
    /// For a symbolic dim, what is added to the multiple (`H - 2`).
    pub offset: i64,
}

/// The symbolic dim `name`, of `size` in this test instance.
fn symbolic(size: usize, name: &'static str) -> Dim {
    Dim {
        size,
        sym: Some(name),
        scale: 1,
        offset: 0,
    }
}

impl Dim {
    /// The symbol's value in this test instance (a formula's dim gives it back).
    fn symbol_value(&self) -> i64 {
        (self.size as i64 - self.offset) / self.scale.max(1) as i64
    }

    /// The dim `delta` longer (a pad or crop): a formula's offset moves with it.
    fn shifted(&self, delta: i64) -> Dim {
        let size = usize::try_from(self.size as i64 + delta).expect("a positive size");
        match self.sym {
            Some(_) => Dim {
                size,
                offset: self.offset + delta,
                ..self.clone()
            },
            None => lit(size),
        }
    }

    /// The dim times `k` (an upsampling).
    fn times(&self, k: usize) -> Dim {
        match self.sym {
            Some(_) => Dim {
                size: self.size * k,
                scale: self.scale * k,
                offset: self.offset * k as i64,
                ..self.clone()
            },
            None => lit(self.size * k),
        }
    }

    /// The extent of a window of `span` sliding by `stride` over the dim padded by `pads` in
    /// all, which is `size` in this instance: `None` for a symbolic dim whose multiple the
    /// stride does not divide (the compiler refuses it; the generator does not draw it).
    /// With `ceil_pad`, pooling's `ceil_mode` rule with that padding on each side.
    fn window(
        &self,
        size: usize,
        pads: i64,
        span: i64,
        stride: usize,
        ceil_pad: Option<i64>,
    ) -> Option<Dim> {
        if self.sym.is_none() {
            return Some(lit(size));
        }
        if !self.scale.is_multiple_of(stride) {
            return None;
        }
        let (n, s) = (self.offset + pads - span, stride as i64);
        let q = if ceil_pad.is_some() {
            n.div_euclid(s) + i64::from(n.rem_euclid(s) != 0)
        } else {
            n.div_euclid(s)
        };
        let mut offset = q + 1;
        if let Some(p) = ceil_pad {
            if (offset - 1) * s >= self.offset + p {
                offset -= 1;
            }
        }
        let out = Dim {
            size,
            scale: self.scale / stride,
            offset,
            ..self.clone()
        };
        assert_eq!(
            (out.scale as i64) * self.symbol_value() + out.offset,
            size as i64,
            "the formula of a window over {self:?} disagrees with its size"
        );
        Some(out)
    }
}

/// A value's shape.
pub type Shape = Vec<Dim>;

fn lit(size: usize) -> Dim {
    Dim {
        size,
        sym: None,
        scale: 1,
        offset: 0,
    }
}

/// The sizes of a shape.
pub fn sizes(shape: &Shape) -> Vec<usize> {
    shape.iter().map(|d| d.size).collect()
}

/// The size of two parts joined along an axis, as kiln's shape rule gives it: fixed sizes
/// add, a formula plus a fixed size shifts it, two formulas of one symbol add their scales
/// and offsets; `None` for formulas of two symbols.
fn dim_sum(a: &Dim, b: &Dim) -> Option<Dim> {
    match (a.sym, b.sym) {
        (None, None) => Some(lit(a.size + b.size)),
        (Some(_), None) => Some(a.shifted(b.size as i64)),
        (None, Some(_)) => Some(b.shifted(a.size as i64)),
        (Some(x), Some(y)) if x == y => Some(Dim {
            size: a.size + b.size,
            sym: Some(x),
            scale: a.scale + b.scale,
            offset: a.offset + b.offset,
        }),
        _ => None,
    }
}

fn dim_src(d: &Dim) -> String {
    match d.sym {
        Some(s) => {
            let multiple = if d.scale == 1 {
                s.to_string()
            } else {
                format!("{} * {s}", d.scale)
            };
            match d.offset {
                0 => multiple,
                o if o > 0 => format!("{multiple} + {o}"),
                o => format!("{multiple} - {}", o.unsigned_abs()),
            }
        }
        None => d.size.to_string(),
    }
}

fn shape_src(shape: &Shape) -> String {
    let dims: Vec<String> = shape.iter().map(dim_src).collect();
    format!("[{}]", dims.join(", "))
}

/// An element-wise term over values of one shape.
#[derive(Clone, Debug)]
pub enum Expr {
    /// A value (by index).
    Val(usize),
    /// A number literal.
    Num(f64),
    /// `-a`.
    Neg(Box<Expr>),
    /// `a op b` with op one of `+ - * /`.
    Bin(char, Box<Expr>, Box<Expr>),
    /// `f(a)` or, for `leaky_relu`, `f(a, slope)`.
    Call(&'static str, Box<Expr>, Option<f64>),
}

/// How `sum`, `mean` or `max` reduce an axis.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Reduce {
    /// `sum(x, axis = k)`.
    Sum,
    /// `mean(x, axis = k)`.
    Mean,
    /// `max(x, axis = k)`.
    Max,
}

/// One op of the IR; operands are value indices.
#[derive(Clone, Debug)]
pub enum Op {
    /// `linear(x, out, bias = ..)`.
    Linear { x: usize, out: usize, bias: bool },
    /// An element-wise expression.
    Point(Expr),
    /// `softmax(x)` or `log_softmax(x)`.
    Softmax { x: usize, log: bool },
    /// `layer_norm(x)`.
    LayerNorm { x: usize, eps: f64 },
    /// `rms_norm(x)`, with its own `eps` (PyTorch's default, the float type's epsilon, when
    /// `None`) and without its weight when not `affine`.
    RmsNorm {
        x: usize,
        eps: Option<f64>,
        affine: bool,
    },
    /// `batch_norm(x)`, with `affine = false` when not `affine`.
    BatchNorm {
        x: usize,
        eps: f64,
        momentum: f64,
        affine: bool,
    },
    /// `dropout(x, p)`.
    Dropout { x: usize, p: f64 },
    /// `prelu(x)` (one slope) or `prelu(x, num_parameters = C)` (one per channel of axis 1),
    /// starting at `init`.
    PRelu {
        x: usize,
        channels: usize,
        init: f64,
    },
    /// `concat(a, b, axis = k)`.
    Concat { xs: Vec<usize>, axis: usize },
    /// `sum/mean/max(x, axis = k)`.
    Reduce {
        x: usize,
        how: Reduce,
        axis: usize,
        lengths: bool,
    },
    /// `transpose(x, -2, -1)`.
    Transpose { x: usize },
    /// `permute(x, perm)`.
    Permute { x: usize, perm: Vec<usize> },
    /// `matmul(a, b)`.
    Matmul { a: usize, b: usize },
    /// `causal_mask(x)`.
    CausalMask { x: usize },
    /// `embedding(tokens, dim, padding_idx = p)`.
    Embedding {
        x: usize,
        dim: usize,
        padding_idx: Option<usize>,
    },
    /// `linear(x, out, tied = table)`: an output head reusing the embedding `table`'s weight.
    Tied {
        x: usize,
        out: usize,
        table: String,
        bias: bool,
    },
    /// `position_embedding(tokens, dim, max_len = n)`.
    PositionEmbedding {
        x: usize,
        dim: usize,
        max_len: usize,
    },
    /// `multi_head_attention(x, heads = h, causal = c)`, or with a `memory` of another
    /// length, `multi_head_attention(x, memory, ..)` (cross-attention).
    Attention {
        x: usize,
        memory: Option<usize>,
        heads: usize,
        causal: bool,
        bias: bool,
        lengths: bool,
        /// `rotary = true` (self-attention with an even head size).
        rotary: bool,
        /// `dropout = p` on the attention weights in training (0: none).
        dropout: f64,
    },
    /// `lstm(...)`, `gru(...)` or `rnn(...)`.
    Rnn {
        x: usize,
        cell: Cell,
        hidden: usize,
        layers: usize,
        bidirectional: bool,
        final_state: bool,
        /// `final_cells = true` (an LSTM's, with `final_state`).
        final_cells: bool,
        /// `all_layers = true` (with `final_state`): every layer's final states,
        /// `[layers·dirs, B, hidden]` (twice as wide with `final_cells`).
        all_layers: bool,
        lengths: bool,
        /// `dropout` between the layers (0: none).
        dropout: f64,
        /// `h0 = ..`: the initial hidden states, `[B, hidden]` (one layer and direction) or
        /// `[layers·dirs, B, hidden]` (PyTorch's `h_0`, every layer and direction).
        h0: Option<usize>,
        /// `c0 = ..`: the LSTM's initial cells, shaped as `h0`.
        c0: Option<usize>,
        /// `h0` (and `c0`) are `[layers·dirs, B, hidden]`.
        h0_per_layer: bool,
    },
    /// `conv2d(x, out, kernel, stride, padding, dilation, groups, bias)`; kernel and stride
    /// as (height, width).
    Conv {
        x: usize,
        out: usize,
        k: (usize, usize),
        s: (usize, usize),
        p: usize,
        d: usize,
        g: usize,
        bias: bool,
        /// `padding = same` (stride 1; `p` unused): half the dilated span before the input,
        /// the rest after it.
        same: bool,
    },
    /// `conv1d(x, out, kernel, stride, padding, dilation, groups, bias)` on `[B, C, L]`.
    Conv1d {
        x: usize,
        out: usize,
        k: usize,
        s: usize,
        p: usize,
        d: usize,
        g: usize,
        bias: bool,
        /// The padding as a word: `Same` (stride 1: half the dilated span before the input,
        /// the rest after it), `Causal` (all of it before), or `Number` (`p` on each side).
        pad: Pad1,
    },
    /// `conv_transpose2d(x, out, kernel, stride, padding, output_padding, groups, dilation)`.
    ConvT {
        x: usize,
        out: usize,
        k: usize,
        s: usize,
        p: usize,
        q: usize,
        d: usize,
        g: usize,
    },
    /// `max_pool2d` / `avg_pool2d`.
    Pool {
        x: usize,
        max: bool,
        k: usize,
        s: usize,
        p: usize,
        ceil: bool,
        count_include_pad: bool,
    },
    /// `adaptive_avg_pool2d(x, (oh, ow))`.
    Adaptive { x: usize, oh: usize, ow: usize },
    /// `upsample(x, scale = s, mode = ..)` or, with `size`, `upsample(x, size = (h, w), ..)`.
    Upsample {
        x: usize,
        scale: usize,
        size: Option<(usize, usize)>,
        bilinear: bool,
    },
    /// `group_norm(x, groups = g)` or, with `groups` `None`, `instance_norm(x)`; `affine`
    /// as written (group norm's default is with it, instance norm's without).
    GroupNorm {
        x: usize,
        groups: Option<usize>,
        affine: bool,
    },
    /// `narrow(x, axis = a, start = s, length = n)`, or with `select` (`n` 1)
    /// `select(x, axis = a, index = s)`, the axis dropped; `start` may count from the end.
    Window {
        x: usize,
        axis: usize,
        start: i64,
        length: usize,
        select: bool,
        /// The same window written as one part of `chunk` or `split` (`index = i`): the call
        /// with `{x}` for the input's name.
        part: Option<String>,
        /// The same window written with `end = e` (negative: `-k` stops `k` positions before
        /// the end of the axis) instead of `length`, or, for 0, with neither (to the end).
        end: Option<i64>,
    },
    /// `pad(x, pairs, mode = ..)`: `pads` per trailing axis, the last axis first (as
    /// written); `mode` 0 constant (`value`), 1 reflect, 2 replicate, 3 circular.
    Pad {
        x: usize,
        pads: Vec<(isize, isize)>,
        mode: u8,
        value: f64,
    },
    /// `flatten(x)`.
    Flatten { x: usize },
    /// `reshape(x, dims)` to the value's own shape.
    Reshape { x: usize },
    /// A block applied `repeat` times.
    Block {
        x: usize,
        block: usize,
        repeat: usize,
    },
}

impl Op {
    /// The values this op reads.
    pub fn operands(&self) -> Vec<usize> {
        fn expr_vals(e: &Expr, out: &mut Vec<usize>) {
            match e {
                Expr::Val(v) => out.push(*v),
                Expr::Num(_) => {}
                Expr::Neg(a) | Expr::Call(_, a, _) => expr_vals(a, out),
                Expr::Bin(_, a, b) => {
                    expr_vals(a, out);
                    expr_vals(b, out);
                }
            }
        }
        match self {
            Op::Point(e) => {
                let mut out = Vec::new();
                expr_vals(e, &mut out);
                out
            }
            Op::Concat { xs, .. } => xs.clone(),
            Op::Matmul { a, b } => vec![*a, *b],
            Op::Attention {
                x, memory: Some(m), ..
            } => vec![*x, *m],
            Op::Rnn { x, h0, c0, .. } => [Some(*x), *h0, *c0].into_iter().flatten().collect(),
            Op::Linear { x, .. }
            | Op::Softmax { x, .. }
            | Op::LayerNorm { x, .. }
            | Op::RmsNorm { x, .. }
            | Op::BatchNorm { x, .. }
            | Op::Dropout { x, .. }
            | Op::PRelu { x, .. }
            | Op::Reduce { x, .. }
            | Op::Transpose { x }
            | Op::Permute { x, .. }
            | Op::CausalMask { x }
            | Op::Embedding { x, .. }
            | Op::Tied { x, .. }
            | Op::PositionEmbedding { x, .. }
            | Op::Attention { x, .. }
            | Op::Conv { x, .. }
            | Op::Conv1d { x, .. }
            | Op::ConvT { x, .. }
            | Op::Pool { x, .. }
            | Op::Adaptive { x, .. }
            | Op::Upsample { x, .. }
            | Op::Pad { x, .. }
            | Op::Window { x, .. }
            | Op::GroupNorm { x, .. }
            | Op::Flatten { x }
            | Op::Reshape { x }
            | Op::Block { x, .. } => vec![*x],
        }
    }

    /// Options of the op worth counting on their own (`layer_norm(eps)`).
    pub fn tags(&self) -> Vec<String> {
        let mut out = Vec::new();
        match self {
            Op::LayerNorm { eps, .. } if *eps != DEFAULT_EPS => out.push("layer_norm(eps)".into()),
            Op::RmsNorm { eps, affine, .. } => {
                if eps.is_some() {
                    out.push("rms_norm(eps)".into());
                }
                if !affine {
                    out.push("rms_norm(elementwise_affine = false)".into());
                }
            }
            Op::Embedding {
                padding_idx: Some(_),
                ..
            } => out.push("embedding(padding_idx)".into()),
            Op::Upsample { size: Some(_), .. } => out.push("upsample(size)".into()),
            Op::Pad { value, pads, .. } => {
                if *value != 0.0 {
                    out.push("pad(value)".into());
                }
                if pads.iter().any(|&(b, a)| b < 0 || a < 0) {
                    out.push("pad(crop)".into());
                }
            }
            Op::GroupNorm {
                groups: Some(_),
                affine: false,
                ..
            } => out.push("group_norm(affine = false)".into()),
            Op::GroupNorm {
                groups: None,
                affine: true,
                ..
            } => out.push("instance_norm(affine = true)".into()),
            Op::Reduce { lengths: true, .. } => out.push("mean(axis = 1, lengths)".into()),
            Op::Rnn {
                lengths,
                dropout,
                h0,
                c0,
                final_cells,
                all_layers,
                h0_per_layer,
                ..
            } => {
                if *lengths {
                    out.push("lstm/gru(lengths)".into());
                }
                if h0.is_some() {
                    out.push("lstm/gru(h0)".into());
                }
                if *h0_per_layer {
                    out.push("lstm/gru(h0 per layer)".into());
                }
                if *all_layers {
                    out.push("lstm/gru(all_layers)".into());
                }
                if c0.is_some() {
                    out.push("lstm(c0)".into());
                }
                if *final_cells {
                    out.push("lstm(final_cells)".into());
                }
                if *dropout > 0.0 {
                    out.push("lstm/gru(dropout)".into());
                }
            }
            Op::Attention {
                memory,
                bias,
                lengths,
                rotary,
                dropout,
                ..
            } => {
                if *rotary {
                    out.push("multi_head_attention(rotary)".into());
                }
                if *dropout > 0.0 {
                    out.push("multi_head_attention(dropout)".into());
                }
                if *lengths {
                    out.push("multi_head_attention(lengths)".into());
                }
                if memory.is_some() {
                    out.push("multi_head_attention(memory)".into());
                }
                if !bias {
                    out.push("multi_head_attention(bias = false)".into());
                }
            }
            Op::Conv { k, s, same, .. } => {
                if k.0 != k.1 || s.0 != s.1 {
                    out.push("conv2d(rectangular kernel or stride)".into());
                }
                if *same {
                    out.push("conv2d(padding = same)".into());
                }
            }
            Op::BatchNorm {
                eps,
                momentum,
                affine,
                ..
            } => {
                if *eps != DEFAULT_EPS {
                    out.push("batch_norm(eps)".into());
                }
                if !affine {
                    out.push("batch_norm(affine = false)".into());
                }
                if *momentum != DEFAULT_MOMENTUM {
                    out.push("batch_norm(momentum)".into());
                }
            }
            _ => {}
        }
        out
    }

    /// Whether the op draws from the workspace's generator in training: dropout, and
    /// dropout between recurrent layers.
    pub fn draws(&self) -> bool {
        match self {
            Op::Dropout { .. } => true,
            Op::Rnn { dropout, .. } | Op::Attention { dropout, .. } => *dropout > 0.0,
            _ => false,
        }
    }

    /// The op's name for coverage counts.
    pub fn kind(&self) -> String {
        match self {
            Op::Linear { .. } => "linear".into(),
            Op::Point(_) => "pointwise".into(),
            Op::Softmax { log, .. } => if *log { "log_softmax" } else { "softmax" }.into(),
            Op::LayerNorm { .. } => "layer_norm".into(),
            Op::RmsNorm { .. } => "rms_norm".into(),
            Op::BatchNorm { .. } => "batch_norm".into(),
            Op::Dropout { .. } => "dropout".into(),
            Op::PRelu { channels: 1, .. } => "prelu".into(),
            Op::PRelu { .. } => "prelu(per channel)".into(),
            Op::Concat { .. } => "concat".into(),
            Op::Reduce { how, .. } => format!("{how:?}(axis)").to_lowercase(),
            Op::Transpose { .. } => "transpose".into(),
            Op::Permute { .. } => "permute".into(),
            Op::Matmul { .. } => "matmul".into(),
            Op::CausalMask { .. } => "causal_mask".into(),
            Op::Embedding { .. } => "embedding".into(),
            Op::Tied { .. } => "linear(tied)".into(),
            Op::PositionEmbedding { .. } => "position_embedding".into(),
            Op::Attention { .. } => "multi_head_attention".into(),
            Op::Rnn { cell, .. } => cell.name().into(),
            Op::Conv { .. } => "conv2d".into(),
            Op::Conv1d { pad, .. } => match pad {
                Pad1::Number => "conv1d",
                Pad1::Same => "conv1d(padding = same)",
                Pad1::Causal => "conv1d(padding = causal)",
            }
            .into(),
            Op::ConvT { .. } => "conv_transpose2d".into(),
            Op::Pool { max, .. } => if *max { "max_pool2d" } else { "avg_pool2d" }.into(),
            Op::Adaptive { .. } => "adaptive_avg_pool2d".into(),
            Op::Upsample { bilinear, .. } => {
                if *bilinear {
                    "upsample(bilinear)"
                } else {
                    "upsample(nearest)"
                }
            }
            .into(),
            Op::GroupNorm { groups, .. } => if groups.is_some() {
                "group_norm"
            } else {
                "instance_norm"
            }
            .into(),
            Op::Pad { mode, .. } => {
                ["pad", "pad(reflect)", "pad(replicate)", "pad(circular)"][*mode as usize].into()
            }
            Op::Window {
                part: Some(call), ..
            } => call[..call.find('(').unwrap_or(call.len())].to_string(),
            Op::Window { end: Some(_), .. } => "narrow(end)".into(),
            Op::Window { select, .. } => if *select { "select" } else { "narrow" }.into(),
            Op::Flatten { .. } => "flatten".into(),
            Op::Reshape { .. } => "reshape".into(),
            Op::Block { .. } => "block".into(),
        }
    }
}

/// A binding: its name, shape and op (`None` for the body's input).
#[derive(Clone, Debug)]
pub struct Value {
    /// The binding's name (its layer's parameter prefix).
    pub name: String,
    /// Its shape.
    pub shape: Shape,
    /// The op computing it; `None` for the input.
    pub op: Option<Op>,
}

/// A graph body: value 0 is the input; every other value is computed from earlier ones.
#[derive(Clone, Debug, Default)]
pub struct Body {
    /// The values in order.
    pub values: Vec<Value>,
}

/// A `block Name(x) { ... }` definition.
#[derive(Clone, Debug)]
pub struct BlockDef {
    /// Its name.
    pub name: String,
    /// Its body; the last value is its output.
    pub body: Body,
}

/// A recurrent layer's cell.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Cell {
    /// `lstm`.
    Lstm,
    /// `gru`.
    Gru,
    /// `rnn`, `tanh` or (`relu`) `nonlinearity = relu`.
    Rnn {
        /// `nonlinearity = relu`.
        relu: bool,
    },
}

impl Cell {
    /// The op's name.
    pub fn name(self) -> &'static str {
        match self {
            Cell::Lstm => "lstm",
            Cell::Gru => "gru",
            Cell::Rnn { .. } => "rnn",
        }
    }

    /// Gate blocks per hidden unit.
    pub fn gates(self) -> usize {
        match self {
            Cell::Lstm => 4,
            Cell::Gru => 3,
            Cell::Rnn { .. } => 1,
        }
    }
}

/// The model's loss on its prediction.
#[derive(Clone, Debug, PartialEq)]
pub enum LossKind {
    /// `mse(pred, y)`.
    Mse,
    /// `l1(pred, y)`.
    L1,
    /// `smooth_l1(pred, y, beta = b)`.
    SmoothL1(f64),
    /// `huber(pred, y, delta = d)`.
    Huber(f64),
    /// `bce_with_logits(pred, y)`, or with `probs` `bce(sigmoid(tanh(pred)), y)` on
    /// probabilities.
    Bce {
        /// Written as `bce` of the prediction's sigmoid.
        probs: bool,
    },
    /// `cross_entropy(pred, y)` against class probabilities (floats in [0, 1), not normalised,
    /// as PyTorch accepts them), with `label_smoothing` when not 0.
    SoftCrossEntropy {
        /// `label_smoothing = ε`.
        smoothing: f64,
    },
    /// `kl_div(log_softmax(pred), y, ..)` against soft targets in [0, 1) (log-probabilities
    /// with `log_target`).
    KlDiv {
        /// `reduction = batchmean` rather than the default mean.
        batchmean: bool,
        /// `log_target = true`.
        log_target: bool,
    },
    /// `cross_entropy(pred, y)`, classes on `axis` of the prediction.
    CrossEntropy {
        /// The class axis of the prediction (last, or 1 for images).
        axis: usize,
        /// `ignore_index = p`.
        ignore_index: Option<usize>,
        /// Written as `nll(log_softmax(pred, ..), y)`, the same loss in two steps.
        nll: bool,
    },
}

/// A random model.
#[derive(Clone, Debug)]
pub struct Graph {
    /// The seed it was generated from.
    pub seed: u64,
    /// The struct's name.
    pub name: String,
    /// `Some(vocab)` when the input is token ids.
    pub tokens: Option<usize>,
    /// `Some(T)` when the model has a second input `len: [B] lengths T`.
    pub lengths: Option<Dim>,
    /// The main body; value 0 is the input `x`, the last value the prediction `pred`.
    pub body: Body,
    /// Block definitions.
    pub blocks: Vec<BlockDef>,
    /// The target's shape.
    pub target: Shape,
    /// `Some(classes)` when the target is class labels.
    pub classes: Option<usize>,
    /// The main loss.
    pub loss: LossKind,
    /// Whether the model has a loss (and a target); without one it is checked forward only.
    pub has_loss: bool,
    /// Extra loss terms `c * mean(v)` (or `c * sum(v)` when the flag is set) for values
    /// nothing else consumes.
    pub extras: Vec<(f64, usize, bool)>,
    /// Values nothing else consumes returned as further outputs (`output pred, v3;`).
    pub outputs: Vec<usize>,
    /// Whether any op is dropout (the training loss then depends on the workspace's seed).
    pub dropout: bool,
}

impl Graph {
    /// Whether an `rms_norm` takes the float type's own epsilon (PyTorch's `eps = None`): the
    /// f32 and f64 models then compute different functions wherever a row's mean square
    /// nears f32's epsilon, 1.2e-7 (a row of `relu` outputs nearly all zero), and their
    /// gradients are not comparable there (seed 98,790: 1.2% apart; with `eps = 1e-5`, the
    /// same model passes).
    pub fn has_type_eps_rms_norm(&self) -> bool {
        std::iter::once(&self.body)
            .chain(self.blocks.iter().map(|b| &b.body))
            .flat_map(|b| &b.values)
            .any(|v| matches!(v.op, Some(Op::RmsNorm { eps: None, .. })))
    }

    /// The index of the prediction.
    pub fn pred(&self) -> usize {
        self.body.values.len() - 1
    }

    /// Whether `kiln::model!` gives the model incremental decoding (`forward_cached`),
    /// restated from the language's rule (README, "Sequence models") rather than taken from
    /// the compiler, so that the two check each other: the input is a sequence `[B, T, ...]`
    /// with two symbolic dims and no lengths, and every value reaching an output is
    /// `[B, T, fixed...]` and computed position by position (embeddings, `linear`, `softmax`,
    /// `layer_norm` and `pad` over features, element-wise ops, dropout) or by an op that continues
    /// a sequence (causal self-attention without lengths, position embeddings, `lstm`, `gru`
    /// and `rnn` forward in time over whole sequences, blocks of these). The generated file
    /// calls `forward_cached` exactly on these models, so a model the compiler disagrees on
    /// fails to build. (A generated model has one sequence input and no static ones: the
    /// language's rule for inputs that are not sequences does not arise.)
    pub fn decodable(&self) -> bool {
        let x = &self.body.values[0].shape;
        let (b, t) = match (x.first().and_then(|d| d.sym), x.get(1).and_then(|d| d.sym)) {
            (Some(b), Some(t)) if b != t => (b, t),
            _ => return false,
        };
        let mut roots = vec![self.pred()];
        roots.extend(&self.outputs);
        self.lengths.is_none() && body_decodes(&self.body, &roots, b, t, &self.blocks)
    }

    /// Every op of the model (blocks' bodies included), for coverage counts, with tags for
    /// the options worth counting.
    pub fn op_kinds(&self) -> Vec<String> {
        let mut out = Vec::new();
        let bodies = std::iter::once(&self.body).chain(self.blocks.iter().map(|b| &b.body));
        for body in bodies {
            for op in body.values.iter().filter_map(|v| v.op.as_ref()) {
                out.push(op.kind());
                out.extend(op.tags());
            }
            for value in &body.values {
                if let Some(Op::Concat { axis, .. }) = &value.op {
                    if value.shape[*axis].sym.is_some() {
                        out.push("concat(symbolic axis)".into());
                    }
                }
            }
        }
        if self.lengths.is_some() {
            out.push("input lengths".into());
        }
        if !self.outputs.is_empty() {
            out.push("several outputs".into());
        }
        for (_, _, sum) in &self.extras {
            out.push(if *sum { "sum(whole)" } else { "mean(whole)" }.into());
        }
        out.push(match &self.loss {
            _ if !self.has_loss => "no loss (forward only)".into(),
            LossKind::Mse => "mse".into(),
            LossKind::L1 => "l1".into(),
            LossKind::SmoothL1(_) => "smooth_l1".into(),
            LossKind::Huber(_) => "huber".into(),
            LossKind::Bce { probs: false } => "bce_with_logits".into(),
            LossKind::Bce { probs: true } => "bce".into(),
            LossKind::KlDiv { .. } => "kl_div".into(),
            LossKind::SoftCrossEntropy { .. } => "cross_entropy(probabilities)".into(),
            LossKind::CrossEntropy {
                axis,
                ignore_index,
                nll,
            } => format!(
                "{}(rank {}{})",
                if *nll { "nll" } else { "cross_entropy" },
                self.body.values[self.pred()].shape.len(),
                if *axis == 1 && self.target.len() == 3 {
                    ", spatial"
                } else {
                    ""
                }
                .to_string()
                    + if ignore_index.is_some() {
                        ", ignore_index"
                    } else {
                        ""
                    }
            ),
        });
        if self.body.values[0]
            .shape
            .iter()
            .any(|d| d.sym.is_some_and(|s| s != "B" && s != "N"))
        {
            out.push("symbolic non-batch dim".into());
        }
        if self.body.values[0].shape[0].sym.is_none() {
            out.push("literal batch dim".into());
        }
        let x = &self.body.values[0].shape;
        if x.len() == 4 && x[2..].iter().any(|d| d.sym.is_some()) {
            out.push("symbolic height or width".into());
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Printing.

fn num_src(x: f64) -> String {
    format!("{x:?}")
}

/// `k` for a square pair, `(h, w)` otherwise.
fn pair_src((h, w): (usize, usize)) -> String {
    if h == w {
        h.to_string()
    } else {
        format!("({h}, {w})")
    }
}

fn expr_src(e: &Expr, names: &[String]) -> String {
    match e {
        Expr::Val(v) => names[*v].clone(),
        Expr::Num(x) => num_src(*x),
        Expr::Neg(a) => format!("-{}", expr_src(a, names)),
        Expr::Bin(op, a, b) => format!("({} {op} {})", expr_src(a, names), expr_src(b, names)),
        Expr::Call(f, a, None) => format!("{f}({})", expr_src(a, names)),
        Expr::Call(f, a, Some(s)) => format!("{f}({}, {})", expr_src(a, names), num_src(*s)),
    }
}

fn op_src(op: &Op, names: &[String], shape: &Shape, blocks: &[BlockDef]) -> String {
    let n = |i: &usize| names[*i].clone();
    match op {
        Op::Linear { x, out, bias } => {
            if *bias {
                format!("linear({}, {out})", n(x))
            } else {
                format!("linear({}, {out}, bias = false)", n(x))
            }
        }
        Op::Point(e) => {
            let s = expr_src(e, names);
            // A top-level binary term prints without its outer parentheses.
            match e {
                Expr::Bin(..) => s[1..s.len() - 1].to_string(),
                _ => s,
            }
        }
        Op::Softmax { x, log } => {
            format!("{}({})", if *log { "log_softmax" } else { "softmax" }, n(x))
        }
        Op::LayerNorm { x, eps } => {
            if *eps == DEFAULT_EPS {
                format!("layer_norm({})", n(x))
            } else {
                format!("layer_norm({}, eps = {})", n(x), num_src(*eps))
            }
        }
        Op::RmsNorm { x, eps, affine } => {
            let mut s = format!("rms_norm({}", n(x));
            if let Some(eps) = eps {
                write!(s, ", eps = {}", num_src(*eps)).unwrap();
            }
            if !affine {
                s.push_str(", elementwise_affine = false");
            }
            s + ")"
        }
        Op::BatchNorm {
            x,
            eps,
            momentum,
            affine,
        } => {
            let mut t = format!("batch_norm({}", n(x));
            if !affine {
                t.push_str(", affine = false");
            }
            if *eps != DEFAULT_EPS {
                write!(t, ", eps = {}", num_src(*eps)).unwrap();
            }
            if *momentum != DEFAULT_MOMENTUM {
                write!(t, ", momentum = {}", num_src(*momentum)).unwrap();
            }
            t + ")"
        }
        Op::Dropout { x, p } => format!("dropout({}, {})", n(x), num_src(*p)),
        Op::PRelu { x, channels, init } => {
            let mut s = format!("prelu({}", n(x));
            if *channels > 1 {
                write!(s, ", num_parameters = {channels}").unwrap();
            }
            if *init != 0.25 {
                write!(s, ", init = {}", num_src(*init)).unwrap();
            }
            s + ")"
        }
        Op::Concat { xs, axis } => {
            let args: Vec<String> = xs.iter().map(n).collect();
            if *axis == shape.len() - 1 {
                format!("concat({})", args.join(", "))
            } else {
                format!("concat({}, axis = {axis})", args.join(", "))
            }
        }
        Op::Reduce {
            x,
            how,
            axis,
            lengths,
        } => {
            format!(
                "{}({}, axis = {axis}{})",
                format!("{how:?}").to_lowercase(),
                n(x),
                if *lengths { ", lengths = len" } else { "" }
            )
        }
        Op::Transpose { x } => format!("transpose({}, -2, -1)", n(x)),
        Op::Permute { x, perm } => {
            let p: Vec<String> = perm.iter().map(|a| a.to_string()).collect();
            format!("permute({}, ({}))", n(x), p.join(", "))
        }
        Op::Matmul { a, b } => format!("matmul({}, {})", n(a), n(b)),
        Op::CausalMask { x } => format!("causal_mask({})", n(x)),
        Op::Embedding {
            x,
            dim,
            padding_idx: None,
        } => format!("embedding({}, {dim})", n(x)),
        Op::Embedding {
            x,
            dim,
            padding_idx: Some(p),
        } => format!("embedding({}, {dim}, padding_idx = {p})", n(x)),
        Op::Tied {
            x,
            out,
            table,
            bias,
        } => {
            let b = if *bias { "" } else { ", bias = false" };
            format!("linear({}, {out}{b}, tied = {table})", n(x))
        }
        Op::PositionEmbedding { x, dim, max_len } => {
            format!("position_embedding({}, {dim}, max_len = {max_len})", n(x))
        }
        Op::Attention {
            x,
            memory,
            heads,
            causal,
            bias,
            lengths,
            rotary,
            dropout,
        } => format!(
            "multi_head_attention({}{}, heads = {heads}{}{}{}{}{})",
            n(x),
            memory.map_or(String::new(), |m| format!(", {}", n(&m))),
            if *causal { ", causal = true" } else { "" },
            if *bias { "" } else { ", bias = false" },
            if *lengths { ", lengths = len" } else { "" },
            if *rotary { ", rotary = true" } else { "" },
            if *dropout > 0.0 {
                format!(", dropout = {}", num_src(*dropout))
            } else {
                String::new()
            }
        ),
        Op::Rnn {
            x,
            cell,
            hidden,
            layers,
            bidirectional,
            final_state,
            final_cells,
            all_layers,
            lengths,
            dropout,
            h0,
            c0,
            ..
        } => {
            let mut s = format!("{}({}, {hidden}", cell.name(), n(x));
            if *cell == (Cell::Rnn { relu: true }) {
                s.push_str(", nonlinearity = relu");
            }
            if *lengths {
                s.push_str(", lengths = len");
            }
            if *layers > 1 {
                write!(s, ", layers = {layers}").unwrap();
            }
            if *bidirectional {
                s.push_str(", bidirectional = true");
            }
            if *dropout > 0.0 {
                write!(s, ", dropout = {dropout:?}").unwrap();
            }
            if let Some(h0) = h0 {
                write!(s, ", h0 = {}", n(h0)).unwrap();
            }
            if let Some(c0) = c0 {
                write!(s, ", c0 = {}", n(c0)).unwrap();
            }
            if *final_state {
                s.push_str(", final_state = true");
            }
            if *final_cells {
                s.push_str(", final_cells = true");
            }
            if *all_layers {
                s.push_str(", all_layers = true");
            }
            s + ")"
        }
        Op::Conv {
            x,
            out,
            k,
            s,
            p,
            d,
            g,
            bias,
            same,
        } => {
            let mut t = format!("conv2d({}, {out}, kernel = {}", n(x), pair_src(*k));
            if *s != (1, 1) {
                write!(t, ", stride = {}", pair_src(*s)).unwrap();
            }
            if *same {
                t.push_str(", padding = same");
            } else if *p > 0 {
                write!(t, ", padding = {p}").unwrap();
            }
            conv_tail(t, *d, *g, *bias)
        }
        Op::Conv1d {
            x,
            out,
            k,
            s,
            p,
            d,
            g,
            bias,
            pad,
        } => {
            let mut t = format!("conv1d({}, {out}, kernel = {k}", n(x));
            if *s != 1 {
                write!(t, ", stride = {s}").unwrap();
            }
            match pad {
                Pad1::Same => t.push_str(", padding = same"),
                Pad1::Causal => t.push_str(", padding = causal"),
                Pad1::Number if *p > 0 => write!(t, ", padding = {p}").unwrap(),
                Pad1::Number => {}
            }
            conv_tail(t, *d, *g, *bias)
        }
        Op::ConvT {
            x,
            out,
            k,
            s,
            p,
            q,
            d,
            g,
        } => {
            let mut t = format!("conv_transpose2d({}, {out}, kernel = {k}", n(x));
            if *s > 1 {
                write!(t, ", stride = {s}").unwrap();
            }
            if *p > 0 {
                write!(t, ", padding = {p}").unwrap();
            }
            if *q > 0 {
                write!(t, ", output_padding = {q}").unwrap();
            }
            if *g > 1 {
                write!(t, ", groups = {g}").unwrap();
            }
            if *d > 1 {
                write!(t, ", dilation = {d}").unwrap();
            }
            t + ")"
        }
        Op::Pool {
            x,
            max,
            k,
            s,
            p,
            ceil,
            count_include_pad,
        } => {
            let f = if *max { "max_pool2d" } else { "avg_pool2d" };
            if *s == *k && *p == 0 && !*ceil {
                return format!("{f}({}, {k})", n(x));
            }
            let mut t = format!("{f}({}, kernel = {k}, stride = {s}", n(x));
            if *p > 0 {
                write!(t, ", padding = {p}").unwrap();
            }
            if *ceil {
                t.push_str(", ceil_mode = true");
            }
            if !*count_include_pad {
                t.push_str(", count_include_pad = false");
            }
            t + ")"
        }
        Op::Adaptive { x, oh, ow } => {
            if *oh == 1 && *ow == 1 {
                format!("adaptive_avg_pool2d({}, 1)", n(x))
            } else {
                format!("adaptive_avg_pool2d({}, ({oh}, {ow}))", n(x))
            }
        }
        Op::Upsample {
            x,
            size: Some((h, w)),
            bilinear,
            ..
        } => {
            let mode = if *bilinear { ", mode = bilinear" } else { "" };
            format!("upsample({}, size = ({h}, {w}){mode})", n(x))
        }
        Op::Upsample {
            x, scale, bilinear, ..
        } => {
            if *bilinear {
                format!("upsample({}, scale = {scale}, mode = bilinear)", n(x))
            } else {
                format!("upsample({}, scale = {scale})", n(x))
            }
        }
        Op::GroupNorm { x, groups, affine } => match (groups, affine) {
            (Some(g), true) => format!("group_norm({}, groups = {g})", n(x)),
            (Some(g), false) => format!("group_norm({}, groups = {g}, affine = false)", n(x)),
            (None, false) => format!("instance_norm({})", n(x)),
            (None, true) => format!("instance_norm({}, affine = true)", n(x)),
        },
        Op::Pad {
            x,
            pads,
            mode,
            value,
        } => {
            let pairs: Vec<String> = pads.iter().map(|(b, a)| format!("{b}, {a}")).collect();
            let option = match mode {
                1 => ", mode = reflect".to_string(),
                2 => ", mode = replicate".to_string(),
                3 => ", mode = circular".to_string(),
                _ if *value != 0.0 => format!(", value = {}", num_src(*value)),
                _ => String::new(),
            };
            format!("pad({}, ({}){option})", n(x), pairs.join(", "))
        }
        Op::Window {
            x,
            axis,
            start,
            length,
            select,
            part,
            end,
        } => {
            if let Some(call) = part {
                call.replace("{x}", &n(x))
            } else if let Some(end) = end {
                let end = if *end == 0 {
                    String::new()
                } else {
                    format!(", end = {end}")
                };
                format!("narrow({}, axis = {axis}, start = {start}{end})", n(x))
            } else if *select {
                format!("select({}, axis = {axis}, index = {start})", n(x))
            } else {
                format!(
                    "narrow({}, axis = {axis}, start = {start}, length = {length})",
                    n(x)
                )
            }
        }
        Op::Flatten { x } => format!("flatten({})", n(x)),
        Op::Reshape { x } => {
            let dims = shape_src(shape);
            format!("reshape({}, ({}))", n(x), &dims[1..dims.len() - 1])
        }
        Op::Block { x, block, repeat } => {
            if *repeat > 1 {
                format!("{}({}, repeat = {repeat})", blocks[*block].name, n(x))
            } else {
                format!("{}({})", blocks[*block].name, n(x))
            }
        }
    }
}

fn body_lets(body: &Body, blocks: &[BlockDef], indent: &str, out: &mut String) {
    let names: Vec<String> = body.values.iter().map(|v| v.name.clone()).collect();
    for v in &body.values[1..] {
        let op = v.op.as_ref().expect("computed value");
        writeln!(
            out,
            "{indent}let {} = {};",
            v.name,
            op_src(op, &names, &v.shape, blocks)
        )
        .unwrap();
    }
}

/// The model's `kiln::model!` invocation.
pub fn source(g: &Graph) -> String {
    let mut s = String::new();
    writeln!(s, "kiln::model! {{").unwrap();
    writeln!(s, "    struct {} {{", g.name).unwrap();
    let x = &g.body.values[0];
    match g.tokens {
        Some(v) => writeln!(s, "        input x: {} tokens {v};", shape_src(&x.shape)).unwrap(),
        None => writeln!(s, "        input x: {};", shape_src(&x.shape)).unwrap(),
    }
    if let Some(t) = &g.lengths {
        let (b, t) = (dim_src(&x.shape[0]), dim_src(t));
        writeln!(s, "        input len: [{b}] lengths {t};").unwrap();
    }
    match g.classes {
        _ if !g.has_loss => {}
        Some(c) => writeln!(s, "        target y: {} classes {c};", shape_src(&g.target)).unwrap(),
        None => writeln!(s, "        target y: {};", shape_src(&g.target)).unwrap(),
    }
    body_lets(&g.body, &g.blocks, "        ", &mut s);
    let mut outs = vec!["pred".to_string()];
    outs.extend(g.outputs.iter().map(|&v| g.body.values[v].name.clone()));
    writeln!(s, "        output {};", outs.join(", ")).unwrap();
    let mut loss = match &g.loss {
        LossKind::Mse => "mse(pred, y)".to_string(),
        LossKind::L1 => "l1(pred, y)".to_string(),
        LossKind::SmoothL1(beta) => format!("smooth_l1(pred, y, beta = {})", num_src(*beta)),
        LossKind::Huber(delta) => format!("huber(pred, y, delta = {})", num_src(*delta)),
        LossKind::Bce { probs: false } => "bce_with_logits(pred, y)".to_string(),
        // Through `tanh` first, so that the probabilities stay in [0.27, 0.73]: a logit of 20
        // (seed 80,577, a tied head over log-probabilities) put one at 1 − 1e-9, where
        // `log(1 − p)` has 1e-7 of rounding and the finite differences saw only that noise.
        LossKind::Bce { probs: true } => "bce(sigmoid(tanh(pred)), y)".to_string(),
        LossKind::SoftCrossEntropy { smoothing } if *smoothing != 0.0 => {
            format!(
                "cross_entropy(pred, y, label_smoothing = {})",
                num_src(*smoothing)
            )
        }
        LossKind::SoftCrossEntropy { .. } => "cross_entropy(pred, y)".to_string(),
        LossKind::KlDiv {
            batchmean,
            log_target,
        } => {
            let mut call = "kl_div(log_softmax(pred), y".to_string();
            if *batchmean {
                call.push_str(", reduction = batchmean");
            }
            if *log_target {
                call.push_str(", log_target = true");
            }
            call + ")"
        }
        LossKind::CrossEntropy {
            axis,
            ignore_index,
            nll,
        } => {
            let ignore = ignore_index.map_or(String::new(), |p| format!(", ignore_index = {p}"));
            if *nll {
                // `log_softmax` over the class axis: the last, or 1 of per-pixel logits.
                let over = if *axis == 1 && g.target.len() == 3 {
                    ", axis = 1"
                } else {
                    ""
                };
                format!("nll(log_softmax(pred{over}), y{ignore})")
            } else {
                format!("cross_entropy(pred, y{ignore})")
            }
        }
    };
    for (c, v, sum) in &g.extras {
        write!(
            loss,
            " + {} * {}({})",
            num_src(*c),
            if *sum { "sum" } else { "mean" },
            g.body.values[*v].name
        )
        .unwrap();
    }
    if g.has_loss {
        writeln!(s, "        loss {loss};").unwrap();
    }
    for b in &g.blocks {
        writeln!(s).unwrap();
        writeln!(s, "        block {}(x) {{", b.name).unwrap();
        body_lets(&b.body, &[], "            ", &mut s);
        let out = &b.body.values[b.body.values.len() - 1].name;
        writeln!(s, "            output {out};").unwrap();
        writeln!(s, "        }}").unwrap();
    }
    writeln!(s, "    }}").unwrap();
    writeln!(s, "}}").unwrap();
    s
}

/// The generated file for `seeds`: each model, its runner and the case table, all in
/// brace-delimited macro calls (which rustfmt leaves as they are).
pub fn file(seeds: impl IntoIterator<Item = u64>) -> String {
    let mut s = String::from(
        "// @generated by conformance/tests/random_models/gen.rs \
         (`KILN_REGENERATE_RANDOM_MODELS=1 cargo test -p kiln-conformance --test random_models`); \
         do not edit.\n",
    );
    let (mut names, mut decoders) = (Vec::new(), Vec::new());
    for seed in seeds {
        let g = generate(seed);
        s.push('\n');
        s.push_str(&source(&g));
        let x_rank = g.body.values[0].shape.len();
        let input = if g.tokens.is_some() {
            format!("tokens {x_rank}")
        } else {
            format!("float {x_rank}")
        };
        let target = if !g.has_loss {
            "none 0".to_string()
        } else if g.classes.is_some() {
            format!("labels {}", g.target.len())
        } else {
            format!("values {}", g.target.len())
        };
        let seeded = if g.dropout { "seeded" } else { "unseeded" };
        let lens = if g.lengths.is_some() {
            "lengths"
        } else {
            "no_lengths"
        };
        let outs: Vec<&str> = g
            .outputs
            .iter()
            .map(|&v| g.body.values[v].name.as_str())
            .collect();
        writeln!(
            s,
            "runner! {{ {}, {input}, {lens}, {target}, {seeded}, [{}] }}",
            g.name,
            outs.join(", ")
        )
        .unwrap();
        if g.decodable() {
            writeln!(
                s,
                "decoder! {{ {}, {input}, [{}] }}",
                g.name,
                outs.join(", ")
            )
            .unwrap();
            decoders.push((seed, g.name.clone()));
        }
        names.push((seed, g.name.clone()));
    }
    s.push_str("\ncases! {\n");
    for (seed, name) in names {
        writeln!(s, "    {seed} => {name},").unwrap();
    }
    s.push_str("}\n\ndecode_cases! {\n");
    for (seed, name) in decoders {
        writeln!(s, "    {seed} => {name},").unwrap();
    }
    s.push_str("}\n");
    s
}

/// Whether every value of `body` that reaches `roots` decodes incrementally (see
/// [`Graph::decodable`]).
fn body_decodes(body: &Body, roots: &[usize], b: &str, t: &str, blocks: &[BlockDef]) -> bool {
    let mut reaches = vec![false; body.values.len()];
    for &r in roots {
        reaches[r] = true;
    }
    for i in (0..body.values.len()).rev() {
        if let (true, Some(op)) = (reaches[i], &body.values[i].op) {
            for v in op.operands() {
                reaches[v] = true;
            }
        }
    }
    let sequence = |shape: &Shape| {
        shape.len() >= 2
            && shape[0].sym == Some(b)
            && shape[1].sym == Some(t)
            && shape[2..].iter().all(|d| d.sym.is_none())
    };
    let features = |v: usize| body.values[v].shape.len() >= 3;
    body.values.iter().zip(&reaches).all(|(value, &needed)| {
        !needed
            || sequence(&value.shape)
                && match &value.op {
                    None
                    | Some(Op::Point(_))
                    | Some(Op::Dropout { .. })
                    | Some(Op::Embedding { .. })
                    | Some(Op::PositionEmbedding { .. }) => true,
                    Some(Op::Linear { x, .. })
                    | Some(Op::Tied { x, .. })
                    | Some(Op::Softmax { x, .. })
                    | Some(Op::LayerNorm { x, .. })
                    | Some(Op::RmsNorm { x, .. }) => features(*x),
                    // Of the features only, never the sequence axis.
                    Some(Op::Pad { x, pads, .. }) => pads.len() + 2 <= body.values[*x].shape.len(),
                    Some(Op::Window { x, axis, .. }) => *axis >= 2 && features(*x),
                    Some(Op::Attention {
                        memory,
                        causal,
                        lengths,
                        ..
                    }) => *causal && memory.is_none() && !lengths,
                    // Forward in time, every step's output: continues from its states.
                    Some(Op::Rnn {
                        bidirectional,
                        final_state,
                        lengths,
                        h0,
                        ..
                    }) => !bidirectional && !final_state && !lengths && h0.is_none(),
                    Some(Op::Block { block, .. }) => {
                        let inner = &blocks[*block].body;
                        body_decodes(inner, &[inner.values.len() - 1], b, t, blocks)
                    }
                    Some(_) => false,
                }
    })
}

// ---------------------------------------------------------------------------------------------
// Generation.

struct Gen {
    rng: StdRng,
    body: Body,
    /// Per value: read by some op.
    used: Vec<bool>,
    /// Per value: the value it is a shift, scale or other function of alone (itself when it
    /// depends on parameters or on several values). Adding or subtracting two values with
    /// the same key can cancel exactly (`-(v - 2) + v`) and fold to a constant, which a
    /// later normalisation would divide by its rounding noise.
    keys: Vec<usize>,
    /// Per value: holds a causal mask's −∞ scores, which only the softmax right after it
    /// may read (anything else would compute NaN or ∞).
    masked: Vec<bool>,
    blocks: Vec<BlockDef>,
    dropout: bool,
    train_mode: bool,
    prefix: &'static str,
    tokens: bool,
    /// The dim the model's `len` input measures, when it has one.
    lengths: Option<Dim>,
}

/// `layer_norm` and `batch_norm`'s default `eps`, and `batch_norm`'s default `momentum`.
const DEFAULT_EPS: f64 = 1e-5;
const DEFAULT_MOMENTUM: f64 = 0.1;

const COEFS: [f64; 6] = [0.5, 0.25, 1.5, 2.0, 0.1, 0.75];

impl Gen {
    /// A loss of a float prediction against a float target of its shape: `mse` half the time,
    /// else `l1`, `smooth_l1` or `huber` with a threshold the targets' differences straddle.
    fn regression_loss(&mut self) -> LossKind {
        if self.chance(0.5) {
            return LossKind::Mse;
        }
        match self.rng.random_range(0..3) {
            0 => LossKind::L1,
            1 => LossKind::SmoothL1(self.pick(&[0.25, 0.5, 1.0])),
            _ => LossKind::Huber(self.pick(&[0.25, 0.5, 1.0])),
        }
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.rng.random_range(0..items.len())]
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    fn shape(&self, v: usize) -> &Shape {
        &self.body.values[v].shape
    }

    fn push(&mut self, shape: Shape, op: Op) -> usize {
        for v in op.operands() {
            self.used[v] = true;
        }
        match &op {
            op if op.draws() => {
                self.dropout = true;
                self.train_mode = true;
            }
            Op::BatchNorm { .. } => self.train_mode = true,
            _ => {}
        }
        let index = self.body.values.len();
        let key = match &op {
            Op::Point(_)
            | Op::Dropout { .. }
            | Op::Reshape { .. }
            | Op::Flatten { .. }
            | Op::Softmax { .. }
            | Op::LayerNorm { .. }
            | Op::RmsNorm { .. }
            | Op::GroupNorm { .. }
            | Op::BatchNorm { .. } => match op.operands()[..] {
                [a] => self.keys[a],
                _ => index,
            },
            _ => index,
        };
        self.keys.push(key);
        self.masked.push(matches!(op, Op::CausalMask { .. }));
        let name = format!("{}{}", self.prefix, self.body.values.len());
        self.body.values.push(Value {
            name,
            shape,
            op: Some(op),
        });
        self.used.push(false);
        self.body.values.len() - 1
    }

    /// A float value other than `v` with the same shape, if any.
    fn same_shape(&mut self, v: usize) -> Option<usize> {
        let shape = self.shape(v).clone();
        let cands: Vec<usize> = (0..self.body.values.len())
            .filter(|&u| {
                u != v && self.shape(u) == &shape && !(u == 0 && self.tokens) && !self.masked[u]
            })
            .collect();
        if cands.is_empty() {
            None
        } else {
            Some(self.pick(&cands))
        }
    }

    /// A random element-wise term over `v` (and possibly another value of its shape).
    fn unary(&mut self, a: Expr) -> Expr {
        let b = Box::new(a.clone());
        match self.rng.random_range(0..16) {
            0 => Expr::Call("relu", b, None),
            1 => Expr::Call("leaky_relu", b, Some(0.2)),
            2 => Expr::Call("sigmoid", b, None),
            3 => Expr::Call("tanh", b, None),
            4 => Expr::Call("softplus", b, None),
            5 => Expr::Call("gelu", b, None),
            6 => Expr::Call("exp", Box::new(Expr::Call("tanh", b, None)), None),
            7 => Expr::Call(
                "log",
                Box::new(Expr::Bin(
                    '+',
                    Box::new(Expr::Call("softplus", b, None)),
                    Box::new(Expr::Num(0.5)),
                )),
                None,
            ),
            8 => Expr::Call(
                "sqrt",
                Box::new(Expr::Bin(
                    '+',
                    Box::new(Expr::Call("square", b, None)),
                    Box::new(Expr::Num(0.1)),
                )),
                None,
            ),
            9 => Expr::Call("square", b, None),
            10 => Expr::Neg(b),
            11 => Expr::Bin('*', b, Box::new(Expr::Call("sigmoid", Box::new(a), None))),
            12 => {
                let c = self.pick(&COEFS);
                Expr::Bin('*', Box::new(Expr::Num(c)), b)
            }
            13 => {
                let c = self.pick(&COEFS);
                Expr::Bin('-', b, Box::new(Expr::Num(c)))
            }
            14 => {
                let c = self.pick(&COEFS);
                Expr::Bin('/', b, Box::new(Expr::Num(c)))
            }
            _ => match self.rng.random_range(0..6) {
                0 => Expr::Call("abs", b, None),
                1 => Expr::Call("mish", b, None),
                2 => Expr::Call("selu", b, None),
                3 => Expr::Call("softsign", b, None),
                4 => Expr::Call("logsigmoid", b, None),
                _ => Expr::Call(
                    "exp",
                    Box::new(Expr::Bin('*', b, Box::new(Expr::Num(0.5)))),
                    None,
                ),
            },
        }
    }

    fn pointwise(&mut self, v: usize) -> usize {
        let shape = self.shape(v).clone();
        let mut e = self.unary(Expr::Val(v));
        if self.chance(0.3) {
            e = self.unary(e);
        }
        if let Some(u) = self.same_shape(v).filter(|_| self.rng.random_bool(0.6)) {
            let other = if self.chance(0.5) {
                Expr::Val(u)
            } else {
                self.unary(Expr::Val(u))
            };
            // A sum or difference of two functions of one value could cancel exactly.
            let related = self.keys[u] == self.keys[v];
            e = match self.rng.random_range(0..4) {
                0 if !related => Expr::Bin('+', Box::new(e), Box::new(other)),
                1 if !related => Expr::Bin('-', Box::new(e), Box::new(other)),
                0 | 1 => Expr::Bin('*', Box::new(e), Box::new(other)),
                2 => Expr::Bin('*', Box::new(e), Box::new(other)),
                _ => Expr::Bin(
                    '/',
                    Box::new(e),
                    Box::new(Expr::Bin(
                        '+',
                        Box::new(Expr::Call("square", Box::new(other), None)),
                        Box::new(Expr::Num(1.0)),
                    )),
                ),
            };
        }
        self.push(shape, Op::Point(e))
    }

    /// `layer_norm(v)`, now and then with its own `eps`; a pointwise op instead over fewer
    /// than 3 features, where the normalised values are ±1 whatever the input (a later batch
    /// norm would then divide by a variance of rounding noise).
    fn layer_norm(&mut self, v: usize) -> usize {
        if self.shape(v).last().expect("rank >= 1").size < 3 {
            return self.pointwise(v);
        }
        let shape = self.shape(v).clone();
        if self.chance(0.25) {
            // LLaMA's norm: PyTorch's default eps or its own, with or without its weight.
            let eps = self.chance(0.4).then(|| self.pick(&[1e-5, 1e-6]));
            let affine = self.chance(0.7);
            return self.push(shape, Op::RmsNorm { x: v, eps, affine });
        }
        let eps = if self.chance(0.3) {
            self.pick(&[1e-3, 1e-4])
        } else {
            DEFAULT_EPS
        };
        self.push(shape, Op::LayerNorm { x: v, eps })
    }

    /// `group_norm(v, groups = g)` (a divisor of the channels) or `instance_norm(v)`, with or
    /// without the affine map; a pointwise op instead where a group holds fewer than 4 values
    /// (normalised, they would be ±1 or 0 whatever the input).
    fn group_norm(&mut self, v: usize) -> usize {
        let shape = self.shape(v).clone();
        let (c, spatial) = (shape[1].size, shape[2].size * shape[3].size);
        let divisors: Vec<usize> = (1..=c).filter(|g| c.is_multiple_of(*g)).collect();
        let (groups, affine) = if self.chance(0.7) {
            (Some(self.pick(&divisors)), self.chance(0.7))
        } else {
            (None, self.chance(0.3))
        };
        if c / groups.unwrap_or(c) * spatial < 4 {
            return self.pointwise(v);
        }
        self.push(
            shape,
            Op::GroupNorm {
                x: v,
                groups,
                affine,
            },
        )
    }

    /// `pad(v, ..)` of the last `axes` axes (which are fixed) in a random mode; a reflection
    /// only by less than each axis.
    fn pad(&mut self, v: usize, axes: usize) -> usize {
        let mut shape = self.shape(v).clone();
        let rank = shape.len();
        let mode = self.pick(&[0u8, 1, 2, 3]);
        let value = if mode == 0 && self.chance(0.5) {
            self.pick(&COEFS)
        } else {
            0.0
        };
        let mut pads = Vec::new();
        for axis in (rank - axes..rank).rev() {
            let d = shape[axis].size;
            // Now and then a side crops (a negative pad), leaving at least one value.
            let mut crop = |left: usize| {
                if left > 1 && self.chance(0.25) {
                    self.rng.random_range(1..=(left - 1).min(2))
                } else {
                    0
                }
            };
            let crop_before = crop(d);
            let crop_after = crop(d - crop_before);
            let kept = d - crop_before - crop_after;
            let most = match mode {
                1 => (kept - 1).min(2),
                3 => kept.min(2),
                _ => 2,
            };
            let mut side = |crop: usize| -> (usize, isize) {
                if crop > 0 {
                    (0, -(crop as isize))
                } else {
                    let add = self.rng.random_range(0..=most);
                    (add, add as isize)
                }
            };
            let ((add_before, before), (add_after, after)) = (side(crop_before), side(crop_after));
            shape[axis] = shape[axis].shifted((kept + add_before + add_after) as i64 - d as i64);
            pads.push((before, after));
        }
        self.push(
            shape,
            Op::Pad {
                x: v,
                pads,
                mode,
                value,
            },
        )
    }

    /// `conv1d` of `v` `[B, C, L]` (a sequence value read with its second axis as channels):
    /// strided, dilated, grouped (depthwise), with a numeric padding, `same` or `causal`.
    fn conv1d(&mut self, v: usize) -> Option<usize> {
        let shape = self.shape(v).clone();
        let (c, l) = (shape[1].size, shape[2].size);
        let k = self.pick(&[1, 2, 3, 4]);
        let d = if k > 1 { self.pick(&[1, 1, 2, 3]) } else { 1 };
        let pad = self.pick(&[Pad1::Number, Pad1::Same, Pad1::Causal]);
        let s = if pad == Pad1::Same {
            1
        } else {
            self.pick(&[1, 1, 2])
        };
        let p = match pad {
            Pad1::Number => self.rng.random_range(0..=(d * (k - 1)) / 2 + 1),
            _ => 0,
        };
        let g = if c > 1 && self.chance(0.3) { c } else { 1 };
        let out = if g > 1 {
            g * self.pick(&[1, 2])
        } else {
            self.rng.random_range(1..=4)
        };
        let span = d * (k - 1);
        let ol = match pad {
            Pad1::Same => l,
            Pad1::Causal => (l - 1) / s + 1,
            Pad1::Number => (l + 2 * p).checked_sub(span + 1)? / s + 1,
        };
        if out * ol > 64 {
            return None;
        }
        let bias = self.chance(0.8);
        Some(self.push(
            vec![shape[0].clone(), lit(out), lit(ol)],
            Op::Conv1d {
                x: v,
                out,
                k,
                s,
                p,
                d,
                g,
                bias,
                pad,
            },
        ))
    }

    /// `narrow` or `select` of `v` `[B, T, F]` along a fixed time or feature axis, the start
    /// counted from either end, or `narrow` of a symbolic time axis from a start to the end
    /// or to a few positions before it (`T - 2`).
    fn window(&mut self, v: usize) -> Option<usize> {
        let shape = self.shape(v).clone();
        let axis = self.pick(&[1, 2]);
        if axis == 1 && shape[1].sym.is_some() && shape[2].sym.is_none() {
            return self.window_of_symbolic_axis(v, shape);
        }
        if shape[axis].sym.is_some() || shape[3 - axis].sym.is_some() {
            return None;
        }
        let d = shape[axis].size;
        let select = self.chance(0.4);
        let length = if select {
            1
        } else {
            self.rng.random_range(1..=d)
        };
        let begin = self.rng.random_range(0..=d - length);
        let start = if self.chance(0.4) {
            begin as i64 - d as i64
        } else {
            begin as i64
        };
        let mut s = shape;
        if select {
            s.remove(axis);
        } else {
            s[axis] = lit(length);
        }
        let (start, length, part) = if !select && self.chance(0.4) {
            self.part(d, axis)
        } else {
            (start, length, None)
        };
        if !select {
            s[axis] = lit(length);
        }
        // From a start counted from the front, the same window as far as its end.
        let end = (!select && part.is_none() && start >= 0 && self.chance(0.3))
            .then(|| start + length as i64 - d as i64);
        Some(self.push(
            s,
            Op::Window {
                x: v,
                axis,
                start,
                length,
                select,
                part,
                end,
            },
        ))
    }

    /// `narrow` of `v` `[B, T, F]` along its symbolic time axis, from a start of 0 to 2 to the
    /// end or up to 2 positions before it: a window of the formula `T - s - k` positions,
    /// which the test's size for the symbol leaves at least one long.
    fn window_of_symbolic_axis(&mut self, v: usize, shape: Vec<Dim>) -> Option<usize> {
        let d = shape[1].size;
        if d < 2 {
            return None;
        }
        let begin = self.rng.random_range(0..d.min(3));
        let back = self.rng.random_range(0..(d - begin).min(3));
        let mut s = shape;
        s[1] = s[1].shifted(-((begin + back) as i64));
        Some(self.push(
            s,
            Op::Window {
                x: v,
                axis: 1,
                start: begin as i64,
                length: d - begin - back,
                select: false,
                part: None,
                end: Some(-(back as i64)),
            },
        ))
    }

    /// One part of an axis of `d` cut by `chunk` (into parts of `d / n` rounded up), `split`
    /// by a size, or `split` into sections, as PyTorch cuts it: the part's start, its length
    /// and the call, with the axis counted from either end.
    fn part(&mut self, d: usize, axis: usize) -> (i64, usize, Option<String>) {
        let written_axis = if self.chance(0.3) {
            axis as i64 - 3
        } else {
            axis as i64
        };
        let (lengths, call) = match self.rng.random_range(0..3) {
            0 => {
                let n = self.rng.random_range(1..=d);
                let step = d.div_ceil(n);
                (cut(d, step), format!("chunk({{x}}, {n}"))
            }
            1 => {
                let size = self.rng.random_range(1..=d);
                (cut(d, size), format!("split({{x}}, {size}"))
            }
            _ => {
                let mut sections = Vec::new();
                let mut left = d;
                while left > 0 {
                    let size = self.rng.random_range(1..=left);
                    sections.push(size);
                    left -= size;
                }
                let list: Vec<String> = sections.iter().map(usize::to_string).collect();
                // One section is the whole axis: written as a size.
                let call = if sections.len() == 1 {
                    format!("split({{x}}, {}", list[0])
                } else {
                    format!("split({{x}}, ({})", list.join(", "))
                };
                (sections, call)
            }
        };
        let index = self.rng.random_range(0..lengths.len());
        let start: usize = lengths[..index].iter().sum();
        let call = format!("{call}, axis = {written_axis}, index = {index})");
        (start as i64, lengths[index], Some(call))
    }

    /// `batch_norm(v)`, now and then with its own `eps` and `momentum`.
    fn batch_norm(&mut self, v: usize) -> usize {
        let eps = if self.chance(0.3) {
            self.pick(&[1e-3, 1e-4])
        } else {
            DEFAULT_EPS
        };
        let momentum = if self.chance(0.3) {
            self.pick(&[0.05, 0.5, 0.9])
        } else {
            DEFAULT_MOMENTUM
        };
        let affine = self.chance(0.8);
        let shape = self.shape(v).clone();
        self.push(
            shape,
            Op::BatchNorm {
                x: v,
                eps,
                momentum,
                affine,
            },
        )
    }

    fn with_last(shape: &Shape, last: usize) -> Shape {
        let mut s = shape.clone();
        *s.last_mut().expect("rank >= 1") = lit(last);
        s
    }

    fn linear(&mut self, v: usize) -> usize {
        let out = self.rng.random_range(2..=6);
        let bias = self.chance(0.8);
        let shape = Self::with_last(self.shape(v), out);
        self.push(shape, Op::Linear { x: v, out, bias })
    }

    /// One random step from `v`; `None` when the chosen op does not apply.
    fn step(&mut self, v: usize, depth: usize) -> Option<usize> {
        let shape = self.shape(v).clone();
        let rank = shape.len();
        let last_lit = shape[rank - 1].sym.is_none();
        let choice = self.rng.random_range(0..100);
        match rank {
            2 => match choice {
                0..=14 => Some(self.linear(v)),
                15..=31 => Some(self.pointwise(v)),
                32..=34 => Some(self.prelu(v)),
                35..=41 => {
                    let log = self.chance(0.5);
                    Some(self.push(shape, Op::Softmax { x: v, log }))
                }
                42..=48 => Some(self.layer_norm(v)),
                49..=55 => Some(self.batch_norm(v)),
                56..=61 => {
                    let p = self.pick(&[0.25, 0.5]);
                    Some(self.push(shape, Op::Dropout { x: v, p }))
                }
                62..=70 => self.concat(v, 1),
                71..=80 if depth == 0 => self.block(v),
                81..=90 => {
                    // To an image: [B, F] -> [B, c, h, w], through a linear layer when F
                    // is not the image's size.
                    let (c, h, w) = self.pick(&[(1, 2, 2), (1, 2, 3), (2, 2, 2), (1, 3, 3)]);
                    let src = if shape[1].size == c * h * w {
                        v
                    } else {
                        let s = Self::with_last(&shape, c * h * w);
                        self.push(
                            s,
                            Op::Linear {
                                x: v,
                                out: c * h * w,
                                bias: true,
                            },
                        )
                    };
                    let s = vec![shape[0].clone(), lit(c), lit(h), lit(w)];
                    Some(self.push(s, Op::Reshape { x: src }))
                }
                _ => Some(self.linear(v)),
            },
            3 => match choice {
                0..=12 if last_lit => Some(self.linear(v)),
                13..=23 => Some(self.pointwise(v)),
                24..=26 => self.window(v),
                27..=29 if last_lit => Some(self.pad(v, 1)),
                30..=35 => {
                    let log = self.chance(0.5);
                    Some(self.push(shape, Op::Softmax { x: v, log }))
                }
                36..=41 if last_lit => Some(self.layer_norm(v)),
                42..=45 => {
                    let p = self.pick(&[0.25, 0.5]);
                    Some(self.push(shape, Op::Dropout { x: v, p }))
                }
                46..=51 => self.concat(v, 2),
                52..=58 if depth == 0 && last_lit => self.block(v),
                59..=65 if last_lit => {
                    let f = shape[2].size;
                    let heads = self.pick(&[1, 2]);
                    if !f.is_multiple_of(heads) {
                        return None;
                    }
                    let causal = self.chance(0.5);
                    let bias = self.chance(0.8);
                    // Cross-attention to a memory of another length: an earlier value
                    // `[B, S, F]`, or `v` concatenated with one along time.
                    let memory = if self.chance(0.35) {
                        let fits = |s: &Shape| {
                            s.len() == 3 && s[0] == shape[0] && s[2] == shape[2] && s[1] != shape[1]
                        };
                        let cands: Vec<usize> = (0..self.body.values.len())
                            .filter(|&u| !self.masked[u] && fits(self.shape(u)))
                            .collect();
                        if cands.is_empty() {
                            self.concat(v, 1)
                        } else {
                            Some(self.pick(&cands))
                        }
                    } else {
                        None
                    };
                    let keys = &self.shape(memory.unwrap_or(v))[1];
                    let lengths = self.lengths.as_ref() == Some(keys) && self.chance(0.5);
                    let rotary =
                        memory.is_none() && (f / heads).is_multiple_of(2) && self.chance(0.3);
                    let dropout = if self.chance(0.25) {
                        self.pick(&[0.2, 0.5])
                    } else {
                        0.0
                    };
                    Some(self.push(
                        shape,
                        Op::Attention {
                            x: v,
                            memory,
                            heads,
                            causal,
                            bias,
                            lengths,
                            rotary,
                            dropout,
                        },
                    ))
                }
                66..=73 if last_lit => {
                    let cell = match self.rng.random_range(0..5) {
                        0 | 1 => Cell::Lstm,
                        2 | 3 => Cell::Gru,
                        _ => Cell::Rnn {
                            relu: self.chance(0.5),
                        },
                    };
                    let hidden = self.rng.random_range(2..=3);
                    let layers = self.pick(&[1, 1, 2]);
                    let bidirectional = self.chance(0.4);
                    let final_state = self.chance(0.3);
                    let lengths = self.lengths.as_ref() == Some(&shape[1]) && self.chance(0.5);
                    let dropout = if layers > 1 && self.chance(0.5) {
                        self.pick(&[0.25, 0.5])
                    } else {
                        0.0
                    };
                    let dirs = if bidirectional { 2 } else { 1 };
                    // Starting states made from the sequence's mean, as an encoder's summary:
                    // `[B, hidden]` for one layer and direction, or PyTorch's `[layers·dirs,
                    // B, hidden]` for each, a linear map's output reshaped and permuted.
                    let (mut h0, mut c0) = (None, None);
                    let stacked = self.chance(0.5);
                    if (layers * dirs == 1 || stacked) && self.chance(0.35) {
                        let pooled = vec![shape[0].clone(), shape[2].clone()];
                        let mean = Op::Reduce {
                            x: v,
                            how: Reduce::Mean,
                            axis: 1,
                            lengths: false,
                        };
                        let pool = self.push(pooled, mean);
                        let stacks = if stacked { layers * dirs } else { 1 };
                        let flat = vec![shape[0].clone(), lit(stacks * hidden)];
                        let start = |g: &mut Self| {
                            let x = g.push(
                                flat.clone(),
                                Op::Linear {
                                    x: pool,
                                    out: stacks * hidden,
                                    bias: true,
                                },
                            );
                            if !stacked {
                                return x;
                            }
                            let rows = vec![shape[0].clone(), lit(stacks), lit(hidden)];
                            let x = g.push(rows, Op::Reshape { x });
                            let state = vec![lit(stacks), shape[0].clone(), lit(hidden)];
                            g.push(
                                state,
                                Op::Permute {
                                    x,
                                    perm: vec![1, 0, 2],
                                },
                            )
                        };
                        h0 = Some(start(self));
                        if cell == Cell::Lstm && self.chance(0.5) {
                            c0 = Some(start(self));
                        }
                    }
                    let final_cells = final_state && cell == Cell::Lstm && self.chance(0.5);
                    let all_layers = final_state && self.chance(0.35);
                    let halves = if final_cells { 2 } else { 1 };
                    let s = if all_layers {
                        vec![lit(layers * dirs), shape[0].clone(), lit(halves * hidden)]
                    } else if final_state {
                        vec![shape[0].clone(), lit(halves * dirs * hidden)]
                    } else {
                        Self::with_last(&shape, dirs * hidden)
                    };
                    let out = self.push(
                        s,
                        Op::Rnn {
                            x: v,
                            cell,
                            hidden,
                            layers,
                            bidirectional,
                            final_state,
                            final_cells,
                            all_layers,
                            lengths,
                            dropout,
                            h0,
                            c0,
                            h0_per_layer: stacked && h0.is_some(),
                        },
                    );
                    if !all_layers {
                        return Some(out);
                    }
                    // Back to one row per sample, as `h_n.transpose(0, 1).flatten(1)`.
                    let rows = vec![shape[0].clone(), lit(layers * dirs), lit(halves * hidden)];
                    let by_sample = self.push(
                        rows,
                        Op::Permute {
                            x: out,
                            perm: vec![1, 0, 2],
                        },
                    );
                    let flat = vec![shape[0].clone(), lit(layers * dirs * halves * hidden)];
                    Some(self.push(flat, Op::Flatten { x: by_sample }))
                }
                74..=79 => {
                    let how = self.pick(&[Reduce::Sum, Reduce::Mean, Reduce::Max]);
                    let axis = self.pick(&[1, 2]);
                    if shape[3 - axis].sym.is_some() {
                        return None; // keep a literal last dim
                    }
                    // The mean over each sequence's real positions.
                    let lengths = how == Reduce::Mean
                        && axis == 1
                        && self.lengths.as_ref() == Some(&shape[1])
                        && self.chance(0.6);
                    let mut s = shape.clone();
                    s.remove(axis);
                    Some(self.push(
                        s,
                        Op::Reduce {
                            x: v,
                            how,
                            axis,
                            lengths,
                        },
                    ))
                }
                80..=87 if last_lit => {
                    // Attention written out: softmax(causal_mask(q kᵀ · c)) v.
                    let q = self.linear(v);
                    let qs = self.shape(q).clone();
                    let k = self.push(
                        qs.clone(),
                        Op::Linear {
                            x: v,
                            out: qs[2].size,
                            bias: true,
                        },
                    );
                    let kt = self.push(
                        vec![qs[0].clone(), qs[2].clone(), qs[1].clone()],
                        Op::Transpose { x: k },
                    );
                    let ss = vec![qs[0].clone(), qs[1].clone(), qs[1].clone()];
                    let scores = self.push(ss.clone(), Op::Matmul { a: q, b: kt });
                    let masked = if self.chance(0.5) {
                        self.push(ss.clone(), Op::CausalMask { x: scores })
                    } else {
                        scores
                    };
                    let p = self.push(
                        ss,
                        Op::Softmax {
                            x: masked,
                            log: false,
                        },
                    );
                    Some(self.push(shape, Op::Matmul { a: p, b: v }))
                }
                88..=93 => {
                    let s = vec![shape[0].clone(), shape[2].clone(), shape[1].clone()];
                    if self.chance(0.5) {
                        Some(self.push(s, Op::Transpose { x: v }))
                    } else {
                        Some(self.push(
                            s,
                            Op::Permute {
                                x: v,
                                perm: vec![0, 2, 1],
                            },
                        ))
                    }
                }
                94..=97 if last_lit && shape[1].sym.is_none() => self.conv1d(v),
                _ if last_lit => Some(self.linear(v)),
                _ => None,
            },
            4 => self.image_step(v, choice),
            _ => None,
        }
    }

    fn image_step(&mut self, v: usize, choice: u32) -> Option<usize> {
        let shape = self.shape(v).clone();
        let (c, h, w) = (shape[1].size, shape[2].size, shape[3].size);
        let b = shape[0].clone();
        let img = |c: usize, h: usize, w: usize| vec![b.clone(), lit(c), lit(h), lit(w)];
        // A height and width that may be formulas of `H` and `W`.
        let image = |c: usize, h: Dim, w: Dim| vec![b.clone(), lit(c), h, w];
        let symbolic_side = shape[2].sym.is_some() || shape[3].sym.is_some();
        match choice {
            0..=19 => {
                // Now and then a rectangular kernel or stride.
                let kh = self.pick(&[1, 2, 3]);
                let kw = if self.chance(0.25) {
                    self.pick(&[1, 2, 3])
                } else {
                    kh
                };
                let sh = self.pick(&[1, 1, 2]);
                let sw = if self.chance(0.25) {
                    self.pick(&[1, 2])
                } else {
                    sh
                };
                let (k, s) = (kh.max(kw), (sh, sw));
                let p = self.rng.random_range(0..=k / 2 + 1).min(kh.min(kw));
                let d = if kh.min(kw) > 1 {
                    self.pick(&[1, 1, 2])
                } else {
                    1
                };
                let g = if c > 1 && self.chance(0.3) { c } else { 1 };
                let out = if g > 1 {
                    g * self.pick(&[1, 2])
                } else {
                    self.rng.random_range(1..=4)
                };
                // Now and then `padding = same`, even kernels (an extra row or column after
                // the input) included.
                let same = s == (1, 1) && self.chance(0.3);
                let (oh, ow) = if same {
                    (h, w)
                } else {
                    (
                        (h + 2 * p).checked_sub(d * (kh - 1) + 1)? / sh + 1,
                        (w + 2 * p).checked_sub(d * (kw - 1) + 1)? / sw + 1,
                    )
                };
                if oh * ow > 64 {
                    return None;
                }
                let (dh, dw) = if same {
                    (shape[2].clone(), shape[3].clone())
                } else {
                    let span = |k: usize| (d * (k - 1) + 1) as i64;
                    let pads = 2 * p as i64;
                    (
                        shape[2].window(oh, pads, span(kh), sh, None)?,
                        shape[3].window(ow, pads, span(kw), sw, None)?,
                    )
                };
                let bias = self.chance(0.8);
                Some(self.push(
                    image(out, dh, dw),
                    Op::Conv {
                        x: v,
                        out,
                        k: (kh, kw),
                        s,
                        p,
                        d,
                        g,
                        bias,
                        same,
                    },
                ))
            }
            20..=29 => {
                let k = self.pick(&[1, 2, 3]);
                let s = self.pick(&[1, 2]);
                let d = if k > 1 { self.pick(&[1, 1, 2]) } else { 1 };
                let p = self.rng.random_range(0..=(d * (k - 1)) / 2);
                let q = if s.max(d) > 1 && self.chance(0.4) {
                    1
                } else {
                    0
                };
                let g = if c > 1 && self.chance(0.3) { c } else { 1 };
                let out = g * self.rng.random_range(1..=2);
                let oh = ((h - 1) * s + d * (k - 1) + q + 1).checked_sub(2 * p)?;
                let ow = ((w - 1) * s + d * (k - 1) + q + 1).checked_sub(2 * p)?;
                if oh == 0 || ow == 0 || oh * ow > 64 {
                    return None;
                }
                // `(n − 1)·s + d·(k − 1) + q + 1 − 2p`: `s` times a formula plus a constant.
                let grown = |dim: &Dim, size: usize| {
                    let scaled = dim.times(s);
                    scaled.shifted(size as i64 - scaled.size as i64)
                };
                let (dh, dw) = (grown(&shape[2], oh), grown(&shape[3], ow));
                Some(self.push(
                    image(out, dh, dw),
                    Op::ConvT {
                        x: v,
                        out,
                        k,
                        s,
                        p,
                        q,
                        d,
                        g,
                    },
                ))
            }
            30..=41 => {
                let max = self.chance(0.5);
                let k = self.pick(&[2, 2, 3]);
                let s = self.pick(&[1, 2, k]);
                let p = self.rng.random_range(0..=k / 2);
                let ceil = self.chance(0.4);
                let count_include_pad = max || self.chance(0.5);
                let ext = |n: usize| -> Option<usize> {
                    let span = (n + 2 * p).checked_sub(k)?;
                    let mut o = if ceil { span.div_ceil(s) } else { span / s } + 1;
                    if ceil && (o - 1) * s >= n + p {
                        o -= 1;
                    }
                    Some(o)
                };
                let (oh, ow) = (ext(h)?, ext(w)?);
                let pads = 2 * p as i64;
                let ceil_pad = ceil.then_some(p as i64);
                let (dh, dw) = (
                    shape[2].window(oh, pads, k as i64, s, ceil_pad)?,
                    shape[3].window(ow, pads, k as i64, s, ceil_pad)?,
                );
                Some(self.push(
                    image(c, dh, dw),
                    Op::Pool {
                        x: v,
                        max,
                        k,
                        s,
                        p,
                        ceil,
                        count_include_pad,
                    },
                ))
            }
            42..=47 => {
                let oh = self.rng.random_range(1..=h.min(3));
                let ow = self.rng.random_range(1..=w.min(3));
                Some(self.push(img(c, oh, ow), Op::Adaptive { x: v, oh, ow }))
            }
            48..=53 if h * w <= 16 => {
                let scale = 2;
                let bilinear = self.chance(0.5);
                // Now and then an explicit size: up, down or unchanged, not a multiple.
                let size = if self.chance(0.4) {
                    Some((self.rng.random_range(1..=8), self.rng.random_range(1..=8)))
                } else {
                    None
                };
                let (dh, dw) = match size {
                    Some((oh, ow)) => (lit(oh), lit(ow)),
                    None => (shape[2].times(scale), shape[3].times(scale)),
                };
                Some(self.push(
                    image(c, dh, dw),
                    Op::Upsample {
                        x: v,
                        scale,
                        size,
                        bilinear,
                    },
                ))
            }
            54..=55 => Some(self.batch_norm(v)),
            56..=59 => Some(self.group_norm(v)),
            60..=68 => Some(self.pointwise(v)),
            69..=71 => Some(self.prelu(v)),
            72..=75 => {
                let p = self.pick(&[0.25, 0.5]);
                Some(self.push(shape, Op::Dropout { x: v, p }))
            }
            76..=81 => self.concat(v, 1),
            82..=87 if !symbolic_side => {
                let s = vec![shape[0].clone(), lit(c * h * w)];
                Some(self.push(s, Op::Flatten { x: v }))
            }
            88..=91 => {
                let s = image(c, shape[3].clone(), shape[2].clone());
                Some(self.push(
                    s,
                    Op::Permute {
                        x: v,
                        perm: vec![0, 1, 3, 2],
                    },
                ))
            }
            92 if !symbolic_side => {
                let s = img(c * h, w, 1);
                Some(self.push(s, Op::Reshape { x: v }))
            }
            93..=95 => Some(self.pad(v, 2)),
            _ => {
                let log = self.chance(0.5);
                Some(self.push(shape, Op::Softmax { x: v, log }))
            }
        }
    }

    /// `prelu(v)`: one slope, or (now and then, where axis 1 has a fixed size) one per channel
    /// of axis 1, starting at PyTorch's 0.25 or at another value.
    fn prelu(&mut self, v: usize) -> usize {
        let shape = self.shape(v).clone();
        let channels = match shape[1].sym {
            None if self.chance(0.5) => shape[1].size,
            _ => 1,
        };
        let init = self.pick(&[0.25, 0.25, -0.3, 0.6]);
        self.push(
            shape,
            Op::PRelu {
                x: v,
                channels,
                init,
            },
        )
    }

    /// `concat(v, u)` with a value `u` agreeing on every axis but `axis` (made by a new
    /// op from `v` when none exists). Along a symbolic axis `u`'s size there is of the same
    /// symbol or fixed, and the joined size the sum of the two formulas (`2 * T - 1`).
    fn concat(&mut self, v: usize, axis: usize) -> Option<usize> {
        let shape = self.shape(v).clone();
        let fits = |s: &Shape| {
            s.len() == shape.len()
                && s.iter()
                    .zip(&shape)
                    .enumerate()
                    .all(|(i, (a, b))| i == axis || a == b)
                && dim_sum(&shape[axis], &s[axis]).is_some()
        };
        let cands: Vec<usize> = (0..self.body.values.len())
            .filter(|&u| !(self.masked[u] || u == 0 && self.tokens) && fits(self.shape(u)))
            .collect();
        let u = self.pick(&cands);
        let mut xs = vec![v, u];
        if self.chance(0.5) {
            xs.swap(0, 1);
        }
        let mut s = shape.clone();
        s[axis] = dim_sum(&shape[axis], &self.shape(u)[axis])?;
        Some(self.push(s, Op::Concat { xs, axis }))
    }

    /// A block over `v`'s shape (literal last dim), applied 1–3 times.
    fn block(&mut self, v: usize) -> Option<usize> {
        let shape = self.shape(v).clone();
        let f = shape.last()?.size;
        let mut inner = Gen {
            rng: StdRng::seed_from_u64(self.rng.random()),
            body: Body {
                values: vec![Value {
                    name: "x".into(),
                    shape: shape.clone(),
                    op: None,
                }],
            },
            used: vec![false],
            keys: vec![0],
            masked: vec![false],
            blocks: Vec::new(),
            dropout: false,
            train_mode: false,
            prefix: "u",
            tokens: false,
            lengths: None,
        };
        let mut cur = 0;
        for _ in 0..inner.rng.random_range(1..=3) {
            cur = match inner.rng.random_range(0..6) {
                0 => inner.push(
                    shape.clone(),
                    Op::Linear {
                        x: cur,
                        out: f,
                        bias: true,
                    },
                ),
                1 => inner.layer_norm(cur),
                2 => inner.push(shape.clone(), Op::Dropout { x: cur, p: 0.25 }),
                // Batch norm's channels are dim 1, which must be a number.
                3 if shape[1].sym.is_none() => inner.batch_norm(cur),
                3 => inner.layer_norm(cur),
                _ => {
                    let e = inner.unary(Expr::Val(cur));
                    inner.push(shape.clone(), Op::Point(e))
                }
            };
        }
        // `x + f(x)` with `f` pointwise could cancel (`x + -(x - 2)`): then the residual adds
        // `tanh(f(x))` instead.
        let branch = if inner.keys[cur] == 0 {
            Expr::Call("tanh", Box::new(Expr::Val(cur)), None)
        } else {
            Expr::Val(cur)
        };
        let residual = Expr::Bin('+', Box::new(Expr::Val(0)), Box::new(branch));
        inner.push(shape.clone(), Op::Point(residual));
        self.dropout |= inner.dropout;
        self.train_mode |= inner.train_mode;
        let block = self.blocks.len();
        self.blocks.push(BlockDef {
            name: format!("Blk{block}"),
            body: inner.body,
        });
        let repeat = self.rng.random_range(1..=3);
        Some(self.push(
            shape,
            Op::Block {
                x: v,
                block,
                repeat,
            },
        ))
    }
}

/// The random model for `seed`.
pub fn generate(seed: u64) -> Graph {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x6b69_6c6e_7261_6e64);
    let batch = if rng.random_bool(0.85) {
        symbolic(
            rng.random_range(2..=3),
            if rng.random_bool(0.8) { "B" } else { "N" },
        )
    } else {
        lit(rng.random_range(2..=3))
    };
    let family = rng.random_range(0..4);
    let mut tokens = None;
    let input_shape: Shape = match family {
        0 => vec![batch.clone(), lit(rng.random_range(3..=6))],
        1 | 2 => {
            let t = rng.random_range(2..=4);
            let tdim = if rng.random_bool(0.6) {
                symbolic(t, if rng.random_bool(0.7) { "T" } else { "S" })
            } else {
                lit(t)
            };
            if family == 2 {
                tokens = Some(rng.random_range(3..=7));
                vec![batch.clone(), tdim]
            } else {
                vec![batch.clone(), tdim, lit(rng.random_range(2..=4))]
            }
        }
        _ => {
            // Now and then a height or width of any size: a multiple of `H` or `W` (1, 2 or 4
            // of it), of 3 to 8 in this instance.
            let mut side = |name: &'static str| {
                if rng.random_bool(0.35) {
                    let scale = [1usize, 2, 4][rng.random_range(0..3)];
                    let value = rng.random_range(3usize.div_ceil(scale)..=(8 / scale).min(6));
                    Dim {
                        scale,
                        ..symbolic(scale * value, name)
                    }
                } else {
                    lit(rng.random_range(3..=6))
                }
            };
            let (h, w) = (side("H"), side("W"));
            vec![batch.clone(), lit(rng.random_range(1..=3)), h, w]
        }
    };
    // Sequences sometimes come with their real lengths (`input len: [B] lengths T;`).
    let lengths = if (family == 1 || family == 2) && rng.random_bool(0.4) {
        Some(input_shape[1].clone())
    } else {
        None
    };
    let mut g = Gen {
        rng: StdRng::seed_from_u64(rng.random()),
        body: Body {
            values: vec![Value {
                name: "x".into(),
                shape: input_shape.clone(),
                op: None,
            }],
        },
        used: vec![false],
        keys: vec![0],
        masked: vec![false],
        blocks: Vec::new(),
        dropout: false,
        train_mode: false,
        prefix: "v",
        tokens: tokens.is_some(),
        lengths: lengths.clone(),
    };
    let mut cur = 0;
    // An embedding table a head may reuse: (its value, its dim, the vocabulary).
    let mut table = None;
    if let Some(vocab) = tokens {
        let dim = g.pick(&[2, 4]);
        let mut s = input_shape.clone();
        s.push(lit(dim));
        let padding_idx = if g.chance(0.3) {
            Some(g.rng.random_range(0..vocab))
        } else {
            None
        };
        let e = g.push(
            s.clone(),
            Op::Embedding {
                x: 0,
                dim,
                padding_idx,
            },
        );
        // A padding row is never trained, whichever use its gradient comes from: not tied.
        if padding_idx.is_none() {
            table = Some((e, dim, vocab));
        }
        cur = e;
        if g.chance(0.5) {
            let max_len = input_shape[1].size + g.rng.random_range(0..=2);
            let p = g.push(s.clone(), Op::PositionEmbedding { x: 0, dim, max_len });
            let sum = Expr::Bin('+', Box::new(Expr::Val(e)), Box::new(Expr::Val(p)));
            cur = g.push(s, Op::Point(sum));
        }
    }
    let steps = g.rng.random_range(2..=5);
    let mut done = 0;
    let mut tries = 0;
    while done < steps && tries < 50 {
        tries += 1;
        // Mostly the latest value; sometimes an earlier one (fan-out).
        let from = if done > 0 && g.chance(0.2) {
            let n = g.body.values.len();
            let lo = usize::from(g.tokens);
            g.rng.random_range(lo..n)
        } else {
            cur
        };
        let from = if g.masked[from] { cur } else { from };
        if let Some(v) = g.step(from, 0) {
            cur = v;
            done += 1;
        }
    }
    // The head.
    let shape = g.shape(cur).clone();
    let rank = shape.len();
    let last_lit = shape[rank - 1].sym.is_none();
    let mut k = g.rng.random_range(2..=4);
    let (pred, loss, target, classes) = match rank {
        2 | 3 if last_lit => {
            let pred = match table {
                Some((e, dim, vocab)) if shape[rank - 1].size == dim && g.chance(0.6) => {
                    k = vocab;
                    let bias = g.chance(0.7);
                    let table = g.body.values[e].name.clone();
                    g.push(
                        Gen::with_last(&shape, k),
                        Op::Tied {
                            x: cur,
                            out: k,
                            table,
                            bias,
                        },
                    )
                }
                _ => g.push(
                    Gen::with_last(&shape, k),
                    Op::Linear {
                        x: cur,
                        out: k,
                        bias: true,
                    },
                ),
            };
            let ps = g.shape(pred).clone();
            match g.rng.random_range(0..3) {
                0 => (pred, g.regression_loss(), ps, None),
                1 if g.chance(0.25) => {
                    let smoothing = if g.chance(0.5) { 0.1 } else { 0.0 };
                    (pred, LossKind::SoftCrossEntropy { smoothing }, ps, None)
                }
                1 if g.chance(0.3) => {
                    let (batchmean, log_target) = (g.chance(0.5), g.chance(0.4));
                    let kind = LossKind::KlDiv {
                        batchmean,
                        log_target,
                    };
                    (pred, kind, ps, None)
                }
                1 => {
                    let probs = g.chance(0.4);
                    (pred, LossKind::Bce { probs }, ps, None)
                }
                _ => {
                    let ignore_index = if g.chance(0.4) {
                        Some(g.rng.random_range(0..k))
                    } else {
                        None
                    };
                    let axis = rank - 1;
                    let t = ps[..rank - 1].to_vec();
                    (
                        pred,
                        LossKind::CrossEntropy {
                            axis,
                            ignore_index,
                            nll: g.chance(0.3),
                        },
                        t,
                        Some(k),
                    )
                }
            }
        }
        4 => {
            let pred = g.push(
                vec![shape[0].clone(), lit(k), shape[2].clone(), shape[3].clone()],
                Op::Conv {
                    x: cur,
                    out: k,
                    k: (1, 1),
                    s: (1, 1),
                    p: 0,
                    d: 1,
                    g: 1,
                    bias: true,
                    same: false,
                },
            );
            let ps = g.shape(pred).clone();
            if g.chance(0.6) {
                let ignore_index = if g.chance(0.3) { Some(0) } else { None };
                let t = vec![ps[0].clone(), ps[2].clone(), ps[3].clone()];
                (
                    pred,
                    LossKind::CrossEntropy {
                        axis: 1,
                        ignore_index,
                        nll: g.chance(0.3),
                    },
                    t,
                    Some(k),
                )
            } else if g.chance(0.3) {
                let smoothing = if g.chance(0.5) { 0.1 } else { 0.0 };
                (pred, LossKind::SoftCrossEntropy { smoothing }, ps, None)
            } else {
                (pred, g.regression_loss(), ps, None)
            }
        }
        _ => {
            // A symbolic last dim: the value itself is the prediction, through a pointwise
            // op so that `pred` is a binding of its own.
            let e = g.unary(Expr::Val(cur));
            let pred = g.push(shape.clone(), Op::Point(e));
            (pred, g.regression_loss(), shape, None)
        }
    };
    g.body.values[pred].name = "pred".into();
    let mut extras = Vec::new();
    let mut outputs = Vec::new();
    // Now and then a model without a loss: every value nothing reads is an output.
    let has_loss = !g.chance(0.07);
    for v in 1..g.body.values.len() - 1 {
        if !g.used[v] && (!has_loss || g.chance(0.25)) {
            outputs.push(v);
        } else if !g.used[v] {
            let c = g.pick(&[0.1, 0.3, 0.5]);
            let sum = g.chance(0.3);
            extras.push((c, v, sum));
        }
    }
    Graph {
        seed,
        name: format!("R{seed}"),
        tokens,
        lengths,
        body: g.body,
        blocks: g.blocks,
        target,
        classes,
        loss,
        extras,
        outputs,
        has_loss,
        dropout: g.dropout,
    }
}

/// An axis of `d` cut into parts of `step`, the last what remains.
fn cut(d: usize, step: usize) -> Vec<usize> {
    (0..d)
        .step_by(step)
        .map(|start| step.min(d - start))
        .collect()
}

/// How a generated `conv1d` pads (see [`Op::Conv1d`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pad1 {
    Number,
    Same,
    Causal,
}

/// A convolution call `t` finished with the options it sets away from their defaults:
/// dilation, groups and bias, then the closing parenthesis.
fn conv_tail(mut t: String, d: usize, g: usize, bias: bool) -> String {
    if d > 1 {
        write!(t, ", dilation = {d}").unwrap();
    }
    if g > 1 {
        write!(t, ", groups = {g}").unwrap();
    }
    if !bias {
        t.push_str(", bias = false");
    }
    t + ")"
}
