//! `lstm(x, hidden, layers = n, bidirectional = true, dropout = p, lengths = len,
//! final_state = true)`, `gru(...)` and `rnn(..., nonlinearity = relu)` over batch-first
//! sequences `[B, T, F]`: PyTorch's `nn.LSTM` / `nn.GRU` / `nn.RNN` (gate order, parameter
//! names `weight_ih_l0`, `bias_hh_l1_reverse`, ...), run by the runtime's kernels forward and
//! back through time. With `lengths`, each sequence is processed only up to its length (as
//! `pack_padded_sequence`); with `final_state = true` the op returns the last layer's final
//! hidden state `[B, dirs·hidden]` instead of the outputs `[B, T, dirs·hidden]` (with
//! `final_cells = true`, an LSTM's final cells after it; with `all_layers = true` every
//! layer's, `[layers·dirs, B, hidden]` as PyTorch's `h_n`); `dropout` drops inner layers'
//! outputs in training, as PyTorch's `dropout` argument; `h0` and `c0` are the states to
//! start from, PyTorch's `h_0` and `c_0`.

use super::{
    require_float, BackwardCx, Built, CallArgs, ForwardCx, Kernel, LayerSpec, OpError, OpSpec,
    ParamSpec, Reads, ScratchLen, ScratchSpec,
};
use crate::ast;
use crate::ir::{Dim, Shape, ValueInfo, ValueKind};
use proc_macro2::TokenStream;
use quote::quote;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Cell {
    Lstm,
    Gru,
    /// PyTorch's `nn.RNN`, `tanh` or (`relu` set) `relu`.
    Rnn {
        relu: bool,
    },
}

/// The registry entry of one recurrent layer.
pub struct RecurrentSpec {
    cell: Cell,
}
/// `lstm`.
pub static LSTM: RecurrentSpec = RecurrentSpec { cell: Cell::Lstm };
/// `gru`.
pub static GRU: RecurrentSpec = RecurrentSpec { cell: Cell::Gru };
/// `rnn` (its `nonlinearity` is read by [`RecurrentSpec::build`]).
pub static RNN: RecurrentSpec = RecurrentSpec {
    cell: Cell::Rnn { relu: false },
};

fn cell_name(cell: Cell) -> &'static str {
    match cell {
        Cell::Lstm => "lstm",
        Cell::Gru => "gru",
        Cell::Rnn { .. } => "rnn",
    }
}

impl OpSpec for RecurrentSpec {
    fn name(&self) -> &'static str {
        cell_name(self.cell)
    }
    fn usage(&self) -> &'static str {
        match self.cell {
            Cell::Lstm => "lstm(x, hidden, layers = 1, bidirectional = false, dropout = 0.0, lengths = len, final_state = false)",
            Cell::Gru => "gru(x, hidden, layers = 1, bidirectional = false, dropout = 0.0, lengths = len, final_state = false)",
            Cell::Rnn { .. } => "rnn(x, hidden, layers = 1, bidirectional = false, nonlinearity = tanh, dropout = 0.0, lengths = len, final_state = false)",
        }
    }
    fn build(&self, args: &mut CallArgs) -> syn::Result<Built> {
        args.positional(2, 2)?;
        args.tensor(0);
        let hidden = args.int(1, "the hidden size")?;
        let layers = args.opt_int("layers")?.unwrap_or(1);
        if layers > 256 {
            return Err(syn::Error::new(
                args.span(),
                format!("`layers = {layers}` stacked recurrent layers is more than kiln allows (256): is the count mistyped?"),
            ));
        }
        let bidirectional = args.opt_bool("bidirectional", false)?;
        let dropout = dropout_option(args)?;
        let final_state = args.opt_bool("final_state", false)?;
        let cells_span = args.written_option("final_cells").map(|e| e.span());
        let final_cells = args.opt_bool("final_cells", false)?;
        let all_layers_span = args.written_option("all_layers").map(|e| e.span());
        let all_layers = args.opt_bool("all_layers", false)?;
        let lengths = args.tensor_option("lengths").is_some();
        let h0_span = args.written_option("h0").map(|e| e.span());
        let c0_span = args.written_option("c0").map(|e| e.span());
        let h0 = args.tensor_option("h0").is_some();
        let c0 = args.tensor_option("c0").is_some();
        let cell = match self.cell {
            Cell::Rnn { .. } => Cell::Rnn {
                relu: relu_option(args)?,
            },
            gated => {
                if let Some(e) = args.written_option("nonlinearity") {
                    let name = cell_name(gated);
                    return Err(syn::Error::new(
                        e.span(),
                        format!("`{name}`'s gates have their own nonlinearities (sigmoid and tanh), as in PyTorch: `nonlinearity` is an option of `rnn`, the ungated cell (`rnn(x, hidden, nonlinearity = relu)`)"),
                    ));
                }
                gated
            }
        };
        args.finish()?;
        if let (Some(span), false) = (c0_span, cell == Cell::Lstm) {
            return Err(syn::Error::new(
                span,
                format!("`c0` is the LSTM's initial cell state, and `{}` has no cells: give its initial hidden state as `h0 = ..` (PyTorch's `h_0`)", cell_name(cell)),
            ));
        }
        if let (Some(span), true) = (cells_span, final_cells) {
            let problem = if cell != Cell::Lstm {
                Some(format!("`final_cells` gives the LSTM's final cell states, and `{}` has no cells: its final state is `final_state = true` alone", cell_name(cell)))
            } else if !final_state {
                Some("`final_cells = true` puts the final cell states beside the final hidden states: give `final_state = true` too (the op then returns [B, 2·dirs·hidden], PyTorch's `(h_n, c_n)` of the last layer, to cut with `chunk`)".to_string())
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(syn::Error::new(span, problem));
            }
        }
        if let (Some(span), true, false) = (all_layers_span, all_layers, final_state) {
            return Err(syn::Error::new(
                span,
                "`all_layers = true` returns every layer's final states instead of the last layer's: give `final_state = true` too (the op then returns [layers·directions, B, hidden], PyTorch's `h_n`)",
            ));
        }
        if let (Some(span), None) = (c0_span, h0_span) {
            return Err(syn::Error::new(
                span,
                "give the initial hidden state with the cell state, as PyTorch's `(h_0, c_0)`: `h0 = .., c0 = ..` (without `c0` the cells start at zero)",
            ));
        }
        // After `finish`, so that a misspelt `layers` is reported as such.
        let dropout = match dropout {
            Some((p, span)) if p > 0.0 && layers < 2 => {
                return Err(syn::Error::new(
                    span,
                    format!("`dropout = {p}` drops the outputs of every layer but the last, and this stack has one layer: stack more (`layers = 2, dropout = {p}`, as PyTorch's `num_layers`), or apply `dropout(..)` to the output"),
                ));
            }
            Some((p, _)) => p,
            None => 0.0,
        };
        Ok(Built::Kernel(Box::new(Recurrent {
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
        })))
    }
}

/// `dropout = p`, PyTorch's dropout between stacked layers (in `[0, 1]`), and where it is
/// written.
fn dropout_option(args: &mut CallArgs) -> syn::Result<Option<(f64, proc_macro2::Span)>> {
    let span = args.written_option("dropout").map(|e| e.span());
    let (Some(p), Some(span)) = (args.opt_float("dropout")?, span) else {
        return Ok(None);
    };
    if !(0.0..=1.0).contains(&p) {
        return Err(syn::Error::new(
            span,
            format!("the dropout between layers is a probability in [0, 1], not {p}: `dropout = 0.2` zeroes a fifth of each inner layer's outputs in training"),
        ));
    }
    Ok(Some((p, span)))
}

/// `rnn`'s `nonlinearity = tanh` (the default) or `relu`: whether it is `relu`.
fn relu_option(args: &mut CallArgs) -> syn::Result<bool> {
    match args.option_expr("nonlinearity") {
        None => Ok(false),
        Some(ast::Expr::Var(n)) if n == "tanh" => Ok(false),
        Some(ast::Expr::Var(n)) if n == "relu" => Ok(true),
        Some(other) => Err(syn::Error::new(
            other.span(),
            "`nonlinearity` is `tanh` or `relu`, as PyTorch's `nn.RNN` takes it: `nonlinearity = relu` (for gated cells use `lstm` or `gru`)",
        )),
    }
}

/// A (stacked, possibly bidirectional) recurrent layer.
pub struct Recurrent {
    cell: Cell,
    hidden: usize,
    layers: usize,
    bidirectional: bool,
    final_state: bool,
    /// With `final_state`, the LSTM's final cell states beside the hidden ones.
    final_cells: bool,
    /// With `final_state`, every layer's final states `[L·D, B, H]` (PyTorch's `h_n`).
    all_layers: bool,
    lengths: bool,
    /// The dropout between layers in training.
    dropout: f64,
    /// Whether the initial hidden states are given (`h0 = ..`), after `x` and the lengths.
    h0: bool,
    /// Whether the LSTM's initial cell states are given (`c0 = ..`), after `h0`.
    c0: bool,
}

/// `weight_ih_l0_reverse`-style names live for the whole compilation; a model has a handful.
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

impl Recurrent {
    fn dirs(&self) -> usize {
        1 + usize::from(self.bidirectional)
    }
    /// The input index of `h0` (then `c0`): after `x` and the lengths.
    fn h0_index(&self) -> usize {
        1 + usize::from(self.lengths)
    }
    /// The initial states as a `RnnInitial`, from the inputs.
    fn initial(&self, inputs: &[super::Operand]) -> TokenStream {
        let at = self.h0_index();
        let h = &inputs[at].data;
        let c = if self.c0 {
            let c = &inputs[at + 1].data;
            quote!(Some(#c))
        } else {
            quote!(None)
        };
        quote!(::kiln::kernels::recurrent::RnnInitial { h: #h, c: #c })
    }
    fn gates(&self) -> usize {
        match self.cell {
            Cell::Lstm => 4,
            Cell::Gru => 3,
            Cell::Rnn { .. } => 1,
        }
    }
    fn features(inputs: &[&ValueInfo]) -> usize {
        match inputs[0].shape.last() {
            Some(Dim::Fixed(n)) => n,
            _ => 0,
        }
    }

    fn dims(&self, x: &super::Operand) -> TokenStream {
        let (batch, seq, input) = (&x.dims[0], &x.dims[1], &x.dims[2]);
        dims_tokens(self, quote!(#batch), quote!(#seq), quote!(#input))
    }
}

/// The runtime's `RnnCell` of `cell`.
fn cell_tokens(cell: Cell) -> TokenStream {
    match cell {
        Cell::Lstm => quote!(::kiln::kernels::recurrent::RnnCell::Lstm),
        Cell::Gru => quote!(::kiln::kernels::recurrent::RnnCell::Gru),
        Cell::Rnn { relu: false } => quote!(::kiln::kernels::recurrent::RnnCell::RnnTanh),
        Cell::Rnn { relu: true } => quote!(::kiln::kernels::recurrent::RnnCell::RnnRelu),
    }
}

fn dims_tokens(
    r: &Recurrent,
    batch: TokenStream,
    seq: TokenStream,
    input: TokenStream,
) -> TokenStream {
    let (hidden, layers, bidirectional) = (r.hidden, r.layers, r.bidirectional);
    let cell = cell_tokens(r.cell);
    let output = if r.all_layers {
        let cells = r.final_cells;
        quote!(::kiln::kernels::recurrent::RnnOutput::EveryLayer { cells: #cells })
    } else if r.final_cells {
        quote!(::kiln::kernels::recurrent::RnnOutput::FinalWithCells)
    } else if r.final_state {
        quote!(::kiln::kernels::recurrent::RnnOutput::Final)
    } else {
        quote!(::kiln::kernels::recurrent::RnnOutput::Sequence)
    };
    let dropout = r.dropout;
    quote! {
        ::kiln::kernels::recurrent::RnnDims {
            cell: #cell, batch: #batch, seq: #seq, input: #input, hidden: #hidden,
            layers: #layers, bidirectional: #bidirectional, output: #output, dropout: #dropout,
        }
    }
}

impl Kernel for Recurrent {
    fn decoding(&self, _inputs: &[&ValueInfo]) -> super::Decoding {
        // Forward in time over whole sequences, every step's output: the new positions
        // continue from the states the earlier ones reached. The reverse direction would need
        // the positions still to come; `lengths` and `final_state` are not sequences of the
        // new positions.
        if self.bidirectional || self.lengths || self.final_state {
            return super::Decoding::Unsupported;
        }
        let (cell, hidden, layers) = (cell_tokens(self.cell), self.hidden, self.layers);
        super::Decoding::Incremental {
            cache: Some(super::DecodeCache {
                ty: quote!(::kiln::kernels::recurrent::RnnState<F>),
                init: quote!(::kiln::kernels::recurrent::RnnState::new(#cell, batch, #hidden, #layers)),
                keeps: "the states of each recurrent layer",
            }),
            positions: None,
        }
    }
    fn decoding_with(&self, inputs: &[&ValueInfo], is_static: &[bool]) -> super::Decoding {
        // Initial states start the sequences at their first position: they are the same at
        // every call (the cache carries the states on), the sequence itself is new positions.
        let states = self.h0_index()..is_static.len();
        let sequence_static = is_static[..self.h0_index()].iter().any(|&s| s);
        if sequence_static || !is_static[states].iter().all(|&s| s) {
            return super::Decoding::Unsupported;
        }
        self.decoding(inputs)
    }
    fn onnx(&self, cx: &mut crate::onnx::OnnxCx) -> Result<(), String> {
        use crate::onnx::Attr::{Int, Ints, Str, Strs};
        // One ONNX LSTM/GRU/RNN node per layer, time-major. PyTorch's gate blocks are
        // reordered for ONNX (LSTM i,f,g,o -> i,o,f,c; GRU r,z,n -> z,r,h with
        // linear_before_reset, which is PyTorch's GRU), and each direction's input and hidden
        // biases concatenated.
        let (op, blocks, gates) = match self.cell {
            Cell::Lstm => ("LSTM", vec![0, 3, 1, 2], 4),
            Cell::Gru => ("GRU", vec![1, 0, 2], 3),
            Cell::Rnn { .. } => ("RNN", vec![0], 1),
        };
        let (h, dirs) = (self.hidden, self.dirs());
        let lengths = if self.lengths {
            let len = cx.inputs[1].clone();
            // TensorProto INT32: ONNX's sequence_lens.
            Some(cx.op("Cast", vec![len], "sequence_lens", vec![("to", Int(6))]))
        } else {
            None
        };
        // Initial states as ONNX takes them per node, `[dirs, B, H]`: the whole `[L·D, B, H]`
        // (a `[B, H]` one with a leading axis) cut by layer.
        let at = self.h0_index();
        let mut states = Vec::new();
        for (given, k) in [(self.h0, at), (self.c0, at + 1)] {
            if given {
                let v = cx.inputs[k].clone();
                states.push(if cx.input_infos[k].shape.rank() == 2 {
                    let axes = cx.b.ints("axes", vec![0]);
                    cx.op("Unsqueeze", vec![v, axes], "state", vec![])
                } else {
                    v
                });
            }
        }
        let mut x = cx.op(
            "Transpose",
            vec![cx.inputs[0].clone()],
            "time_major",
            vec![("perm", Ints(vec![1, 0, 2]))],
        );
        let (mut last_h, mut last_c) = (String::new(), String::new());
        let (mut every_h, mut every_c) = (Vec::new(), Vec::new());
        for l in 0..self.layers {
            let names = |what: &str| -> Vec<String> {
                (0..dirs)
                    .map(|dir| {
                        let sfx = if dir == 1 { "_reverse" } else { "" };
                        let layer = cx.params[0].0.rsplit_once('.').map_or("", |(p, _)| p);
                        format!("{layer}.{what}_l{l}{sfx}")
                    })
                    .collect()
            };
            let input = cx.params[l * dirs * 4].1[1];
            let w = cx.b.param(
                names("weight_ih"),
                blocks.clone(),
                vec![dirs, gates * h, input],
            );
            let r =
                cx.b.param(names("weight_hh"), blocks.clone(), vec![dirs, gates * h, h]);
            let bias_sources: Vec<String> = names("bias_ih")
                .into_iter()
                .zip(names("bias_hh"))
                .flat_map(|(i, hh)| [i, hh])
                .collect();
            let b =
                cx.b.param(bias_sources, blocks.clone(), vec![dirs, 2 * gates * h]);
            let mut attrs = vec![
                ("hidden_size", Int(h as i64)),
                (
                    "direction",
                    Str(if dirs == 2 {
                        "bidirectional"
                    } else {
                        "forward"
                    }
                    .into()),
                ),
            ];
            match self.cell {
                Cell::Gru => attrs.push(("linear_before_reset", Int(1))),
                // ONNX's RNN defaults to Tanh; one activation per direction.
                Cell::Rnn { relu: true } => {
                    attrs.push(("activations", Strs(vec!["Relu".into(); dirs])));
                }
                _ => {}
            }
            let y = cx.tmp("y");
            let y_h = cx.tmp("y_h");
            let y_c = cx.tmp("y_c");
            let seq = lengths.clone().unwrap_or_default();
            let mut node_inputs = vec![x, w, r, b, seq];
            for all in &states {
                node_inputs.push(if self.layers == 1 {
                    all.clone()
                } else {
                    let from = cx.b.ints("starts", vec![(l * dirs) as i64]);
                    let to = cx.b.ints("ends", vec![((l + 1) * dirs) as i64]);
                    let axes = cx.b.ints("axes", vec![0]);
                    cx.op("Slice", vec![all.clone(), from, to, axes], "state", vec![])
                });
            }
            let mut outputs = vec![y.clone(), y_h.clone()];
            if self.final_cells {
                outputs.push(y_c.clone());
            }
            cx.b.node(op, node_inputs, outputs, attrs);
            // Y [T, dirs, B, H] -> [T, B, dirs * H], the next layer's input.
            let y = cx.op(
                "Transpose",
                vec![y],
                "y",
                vec![("perm", Ints(vec![0, 2, 1, 3]))],
            );
            let shape = cx.b.ints("shape", vec![0, 0, (dirs * h) as i64]);
            x = cx.op("Reshape", vec![y, shape], "y", vec![]);
            every_h.push(y_h.clone());
            every_c.push(y_c.clone());
            last_h = y_h;
            last_c = y_c;
        }
        if self.all_layers {
            // Y_h [dirs, B, H] of each layer, stacked: [L·dirs, B, H] (Y_c beside it).
            let stack = |states: Vec<String>, cx: &mut crate::onnx::OnnxCx| {
                if states.len() == 1 {
                    states[0].clone()
                } else {
                    cx.op("Concat", states, "states", vec![("axis", Int(0))])
                }
            };
            let hs = stack(every_h, cx);
            if self.final_cells {
                let cs = stack(every_c, cx);
                cx.finish("Concat", vec![hs, cs], vec![("axis", Int(2))]);
            } else {
                cx.finish("Identity", vec![hs], vec![]);
            }
            return Ok(());
        }
        if self.final_state {
            // Y_h [dirs, B, H] -> [B, dirs * H]: forward state, then reverse (Y_c likewise,
            // after it).
            let rows = |state: String, cx: &mut crate::onnx::OnnxCx| {
                let t = cx.op(
                    "Transpose",
                    vec![state],
                    "state",
                    vec![("perm", Ints(vec![1, 0, 2]))],
                );
                let shape = cx.b.ints("shape", vec![0, (dirs * h) as i64]);
                (t, shape)
            };
            if self.final_cells {
                let (t, shape) = rows(last_h, cx);
                let hs = cx.op("Reshape", vec![t, shape], "state", vec![]);
                let (t, shape) = rows(last_c, cx);
                let cs = cx.op("Reshape", vec![t, shape], "state", vec![]);
                cx.finish("Concat", vec![hs, cs], vec![("axis", Int(1))]);
            } else {
                let (t, shape) = rows(last_h, cx);
                cx.finish("Reshape", vec![t, shape], vec![]);
            }
        } else {
            cx.finish("Transpose", vec![x], vec![("perm", Ints(vec![1, 0, 2]))]);
        }
        Ok(())
    }
    fn name(&self) -> &'static str {
        cell_name(self.cell)
    }
    fn describe(&self) -> String {
        let mut s = format!("hidden={}", self.hidden);
        if self.cell == (Cell::Rnn { relu: true }) {
            s.push_str(", nonlinearity=relu");
        }
        if self.layers > 1 {
            s.push_str(&format!(", layers={}", self.layers));
        }
        if self.bidirectional {
            s.push_str(", bidirectional");
        }
        if self.dropout > 0.0 {
            s.push_str(&format!(", dropout={}", self.dropout));
        }
        if self.final_state {
            s.push_str(", final_state");
            if self.all_layers {
                s.push_str(", all_layers");
            }
            if self.final_cells {
                s.push_str(", final_cells");
            }
        }
        if self.h0 {
            s.push_str(if self.c0 { ", h0, c0" } else { ", h0" });
        }
        s
    }
    fn mode_dependent(&self) -> bool {
        self.dropout > 0.0
    }
    fn needs_rng(&self) -> bool {
        self.dropout > 0.0
    }
    fn has_params(&self) -> bool {
        true
    }
    fn differentiable(&self, input: usize) -> bool {
        // Not the lengths.
        input == 0 || (self.h0 && input >= self.h0_index())
    }
    fn infer(&self, inputs: &[&ValueInfo], symbols: &[String]) -> Result<ValueInfo, OpError> {
        let op = self.name();
        require_float(op, 0, inputs[0])?;
        let x = &inputs[0].shape;
        let show = |s: &Shape| s.display(symbols).to_string();
        if x.rank() != 3 {
            let hint = if x.rank() == 2 {
                format!("it has no time axis: for one step per row declare it as [{}, 1, {}], or run the recurrence over a sequence [batch, time, features] (token ids go through `embedding` first)",
                    x.0[0].display(symbols),
                    x.0[1].display(symbols))
            } else {
                "reshape it to [batch, time, features]".to_string()
            };
            return Err(OpError::input(
                0,
                format!("`{op}` runs over batch-first sequences [batch, time, features], but this is {} (rank {}): {hint}", show(x), x.rank()),
            ));
        }
        if !x.0[2].is_fixed() {
            return Err(OpError::input(
                0,
                format!("`{op}` needs a fixed number of input features, but this is {} whose last dim is symbolic: declare it as a number", show(x)),
            ));
        }
        if self.lengths {
            let l = inputs[1];
            let batch = Shape(vec![x.0[0]]);
            let dim = |d: Dim| d.display(symbols);
            match l.kind {
                ValueKind::Lengths { max } if l.shape == batch && max == x.0[1] => {}
                // Declared over another dim than the time axis: name both, as the fix is to
                // swap one for the other.
                ValueKind::Lengths { max } if l.shape == batch => {
                    return Err(OpError::input(
                        1,
                        format!("these lengths measure {} positions, but the sequences {} have {}: declare them as `lengths {}`",
                            dim(max), show(x), dim(x.0[1]), dim(x.0[1])),
                    ))
                }
                _ => {
                    return Err(OpError::input(
                        1,
                        format!("`lengths` takes one length per sequence: an input declared `len: {} lengths {};`, but this is {} holding {}",
                            show(&batch), dim(x.0[1]), show(&l.shape), l.kind.describe()),
                    ))
                }
            }
        }
        if self.h0 {
            self.check_initial(inputs, symbols)?;
        }
        // Every parameter is at most [gates·hidden, max(features, dirs·hidden)]: sizes whose
        // products overflow are mistyped, and an error here, not an overflow later.
        let features = Self::features(inputs);
        let fits = self.dirs().checked_mul(self.hidden).and_then(|dh| {
            (self.gates() * self.dirs())
                .checked_mul(self.hidden)?
                .checked_mul(features.max(dh))
        });
        if fits.is_none() {
            return Err(OpError::call(format!(
                "a hidden size of {} is too large to count its parameters in a `usize`: is it mistyped?",
                self.hidden
            )));
        }
        let halves = if self.final_cells { 2 } else { 1 };
        let width = Dim::Fixed(halves * self.dirs() * self.hidden);
        let shape = if self.all_layers {
            let stacks = Dim::Fixed(self.layers * self.dirs());
            vec![stacks, x.0[0], Dim::Fixed(halves * self.hidden)]
        } else if self.final_state {
            vec![x.0[0], width]
        } else {
            vec![x.0[0], x.0[1], width]
        };
        Ok(ValueInfo {
            shape: Shape(shape),
            kind: ValueKind::Float,
        })
    }
    fn layer(&self, inputs: &[&ValueInfo]) -> Option<LayerSpec> {
        let (f, h, g, dirs) = (
            Self::features(inputs),
            self.hidden,
            self.gates(),
            self.dirs(),
        );
        let mut params = Vec::new();
        for l in 0..self.layers {
            let input = if l == 0 { f } else { dirs.saturating_mul(h) };
            for dir in 0..dirs {
                let index = l * dirs + dir;
                let sfx = if dir == 1 { "_reverse" } else { "" };
                for (name, field, dims) in [
                    (
                        "weight_ih",
                        quote!(weight_ih),
                        vec![g.saturating_mul(h), input],
                    ),
                    ("weight_hh", quote!(weight_hh), vec![g.saturating_mul(h), h]),
                    ("bias_ih", quote!(bias_ih), vec![g.saturating_mul(h)]),
                    ("bias_hh", quote!(bias_hh), vec![g.saturating_mul(h)]),
                ] {
                    params.push(ParamSpec {
                        access: Some(quote!(#field[#index])),
                        suffix: leak(format!("{name}_l{l}{sfx}")),
                        optional: false,
                        dims,
                    });
                }
            }
        }
        let (layers, bidirectional) = (self.layers, self.bidirectional);
        let ty = match self.cell {
            Cell::Lstm => quote!(Lstm),
            Cell::Gru => quote!(Gru),
            Cell::Rnn { .. } => quote!(Rnn),
        };
        Some(LayerSpec {
            ty: quote!(::kiln::layers::#ty<F>),
            init: quote!(::kiln::layers::#ty::new(#f, #h, #layers, #bidirectional, rng)),
            zeros: quote!(::kiln::layers::#ty::zeros(#f, #h, #layers, #bidirectional)),
            params,
            buffers: Vec::new(),
            nested: None,
        })
    }
    fn scratch(&self, inputs: &[&ValueInfo], _output: &ValueInfo) -> Vec<ScratchSpec> {
        let x = inputs[0].shape.0.clone();
        let (hidden, layers, bidirectional, cell, dropout) = (
            self.hidden,
            self.layers,
            self.bidirectional,
            self.cell,
            self.dropout,
        );
        let (final_state, final_cells, all_layers) =
            (self.final_state, self.final_cells, self.all_layers);
        vec![ScratchSpec {
            suffix: "saved",
            len: ScratchLen::OfDims(Box::new(move |dim| {
                let r = Recurrent {
                    cell,
                    hidden,
                    layers,
                    bidirectional,
                    final_state,
                    final_cells,
                    all_layers,
                    lengths: false,
                    dropout,
                    h0: false,
                    c0: false,
                };
                let d = dims_tokens(&r, dim(x[0]), dim(x[1]), dim(x[2]));
                quote!(#d.scratch_len())
            })),
        }]
    }
    fn backward_reads(&self) -> Reads {
        Reads {
            inputs: vec![true; self.h0_index() + usize::from(self.h0) + usize::from(self.c0)],
            output: false,
        }
    }
    fn forward(&self, cx: &ForwardCx) -> TokenStream {
        let x = &cx.inputs[0];
        let dims = self.dims(x);
        let (xd, y, scratch) = (&x.data, &cx.output.data, &cx.scratch[0]);
        let lengths = lengths(&cx.inputs, self.lengths);
        let (layer, n) = (&cx.layer, cx.params.len());
        let run = match &cx.decode {
            Some(decode) if self.h0 => {
                let (state, offset) = (&decode.cache, &decode.offset);
                let initial = self.initial(&cx.inputs);
                quote! {
                    ::kiln::kernels::recurrent::rnn_forward_cached_from(&#dims, #xd, &params, #initial, #scratch, &mut #state, #offset, #y);
                }
            }
            Some(decode) => {
                let (state, offset) = (&decode.cache, &decode.offset);
                quote! {
                    ::kiln::kernels::recurrent::rnn_forward_cached(&#dims, #xd, &params, #scratch, &mut #state, #offset, #y);
                }
            }
            None if self.h0 => {
                let initial = self.initial(&cx.inputs);
                let rng = if cx.training && self.dropout > 0.0 {
                    let rng = &cx.rng;
                    quote!(Some(#rng))
                } else {
                    quote!(None::<&mut ::kiln::rand::rngs::StdRng>)
                };
                quote! {
                    ::kiln::kernels::recurrent::rnn_forward_from(&#dims, #xd, #lengths, &params, #initial, #rng, #scratch, #y);
                }
            }
            None if cx.training && self.dropout > 0.0 => {
                let rng = &cx.rng;
                quote! {
                    ::kiln::kernels::recurrent::rnn_forward_train(&#dims, #xd, #lengths, &params, #rng, #scratch, #y);
                }
            }
            None => quote! {
                ::kiln::kernels::recurrent::rnn_forward(&#dims, #xd, #lengths, &params, #scratch, #y);
            },
        };
        quote! {
            let mut params = #layer.slices();
            let params: [&[F]; #n] = ::core::array::from_fn(|_| params.next().unwrap_or(&[]));
            #run
        }
    }
    fn backward(&self, cx: &BackwardCx) -> TokenStream {
        let x = &cx.inputs[0];
        let dims = self.dims(x);
        let (xd, dy, scratch) = (&x.data, &cx.d_output, &cx.scratch[0]);
        let lengths = lengths(&cx.inputs, self.lengths);
        let (layer, layer_grads, n) = (&cx.layer, &cx.layer_grads, cx.params.len());
        let dx = cx.input_grad(0);
        let run = if self.h0 {
            let initial = self.initial(&cx.inputs);
            let target = |i: usize| cx.input_grad(i);
            let d_h0 = target(self.h0_index());
            let d_c0 = if self.c0 {
                target(self.h0_index() + 1)
            } else {
                quote!(None)
            };
            quote! {
                ::kiln::kernels::recurrent::rnn_backward_from(
                    &#dims, #xd, #lengths, &params, #initial, #scratch, #dy, #dx, #d_h0, #d_c0, grads,
                );
            }
        } else {
            quote! {
                ::kiln::kernels::recurrent::rnn_backward(
                    &#dims, #xd, #lengths, &params, #scratch, #dy, #dx, grads,
                );
            }
        };
        // The layer's slices are taken whole: its parameters sit in `Vec`s, whose elements
        // cannot be borrowed mutably one local at a time. A frozen layer passes none of its
        // gradients, and the kernel computes only its input's adjoint.
        let trains = &cx.param_trainable[0];
        quote! {
            let mut params = #layer.slices();
            let params: [&[F]; #n] = ::core::array::from_fn(|_| params.next().unwrap_or(&[]));
            let mut grads = #layer_grads.slices_mut();
            let mut grads: [&mut [F]; #n] = ::core::array::from_fn(|_| grads.next().unwrap_or(&mut []));
            let grads: &mut [&mut [F]] = if #trains { &mut grads } else { &mut [] };
            #run
        }
    }
}

impl Recurrent {
    /// `h0` (and `c0`): float values `[L·D, B, H]` as PyTorch's `h_0`, or `[B, H]` for one
    /// layer and direction, with the sequences' batch.
    fn check_initial(&self, inputs: &[&ValueInfo], symbols: &[String]) -> Result<(), OpError> {
        let (op, at) = (self.name(), self.h0_index());
        let batch = inputs[0].shape.0[0];
        let stacks = self.layers * self.dirs();
        let full = Shape(vec![Dim::Fixed(stacks), batch, Dim::Fixed(self.hidden)]);
        let short = Shape(vec![batch, Dim::Fixed(self.hidden)]);
        let names = if self.c0 {
            &["h0", "c0"][..]
        } else {
            &["h0"][..]
        };
        for (k, name) in names.iter().enumerate() {
            let v = inputs[at + k];
            require_float(op, at + k, v)?;
            if v.shape == full || (stacks == 1 && v.shape == short) {
                continue;
            }
            let also = if stacks == 1 {
                format!(
                    " (or {} for one layer and direction)",
                    short.display(symbols)
                )
            } else {
                String::new()
            };
            let what = if *name == "h0" { "hidden" } else { "cell" };
            return Err(OpError::input(
                at + k,
                format!("`{name}` holds the initial {what} states, as PyTorch's `{}_0`: [layers·directions, batch, hidden] = {}{also}, but this is {}",
                    &name[..1], full.display(symbols), v.shape.display(symbols)),
            ));
        }
        Ok(())
    }
}

fn lengths(inputs: &[super::Operand], has: bool) -> TokenStream {
    if has {
        let l = &inputs[1].data;
        quote!(Some(#l))
    } else {
        quote!(None)
    }
}
