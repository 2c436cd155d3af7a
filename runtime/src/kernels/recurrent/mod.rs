//! Multi-layer, optionally bidirectional LSTM and GRU over padded batches, with
//! backpropagation through time: PyTorch's `nn.LSTM` / `nn.GRU` with `bias=True`,
//! `batch_first=True` and zero initial states.
//!
//! `x` is `[B, T, F]`. Layer `l` reads `[B, T, in_l]` (`in_0 = F`, then `dirs·H`, the previous
//! layer's outputs with the forward direction in columns `[0, H)` and the reverse in
//! `[H, 2H)`). Each layer and direction has four parameters in `state_dict` order:
//! `weight_ih` `[G·H, in_l]`, `weight_hh` `[G·H, H]`, `bias_ih` `[G·H]`, `bias_hh` `[G·H]`,
//! with `G` = 4 gates for the LSTM (`i, f, g, o`) and 3 for the GRU (`r, z, n`).
//!
//! With `lengths`, sequence `b` is only its first `len[b]` steps, as after PyTorch's
//! `pack_padded_sequence(.., enforce_sorted=False)` and `pad_packed_sequence`: the forward
//! direction runs `t = 0 .. len − 1`, the reverse direction `t = len − 1` down to 0 from a zero
//! state, outputs at `t ≥ len` are 0, and inputs there have no effect and get zero gradient
//! (their values must be finite: the weight gradient is one product over all positions, where
//! the padding is multiplied by zero).
//!
//! Per layer and direction the input projections of all steps are one GEMM; each step is one
//! `[B, H] × [H, G·H]` GEMM followed by the fused gate math of `cell.rs`. The backward gathers
//! the gate adjoints of all steps so that the weight, bias and input gradients are GEMMs (or
//! column sums) over many steps at once after the time loop; the recurrent weight's gradient
//! pairs them with the hidden states each step started from, kept by the forward.
//!
//! For incremental decoding, [`rnn_forward_cached`] continues one-direction sequences from the
//! states an [`RnnState`] kept of their earlier positions.
//!
//! Sequences of a batch are independent, as are the two directions of a layer: the time loop
//! runs per (direction, part of the batch) on the two threads
//! ([`for_each_chunk`](super::parallel::for_each_chunk)), and so do the gradient products
//! after it, on the part's rows while they are still in that core's cache (chunk by chunk of
//! 2¹⁶ adjoints, which each chunk's products and bias sums read in turn). The batch is cut the
//! same way whatever the thread count, each part's sums have a buffer of their own, and the
//! parts are added in order after the loop, so results are the same bits on one thread or
//! two. On W7's shape (batch 64, two parts; AVX-512) this made the backward 3–9% faster on two
//! threads than GEMMs over the whole batch shared block by block, and no different on one
//! (BENCHMARKS.md, "A recurrent layer's gradient products per batch part").

mod backward;
mod cell;
mod forward;
mod state;
#[cfg(test)]
mod tests;

pub use backward::{rnn_backward, rnn_backward_from};
pub use forward::{rnn_forward, rnn_forward_from, rnn_forward_train, RnnInitial};
pub use state::{rnn_forward_cached, rnn_forward_cached_from, RnnState};

use crate::kernels::gemm;
use crate::Float;
use std::ops::Range;

/// The fewest sequences for which the recurrent weight is packed once per pass (see
/// [`RnnDims::prepacks`]): a tile's height on the AVX-512 kernels. Measured on W7 (batch 64,
/// hidden 128, two parts of 32, AVX-512): packed once per pass instead of at every step, the
/// training step went from 21.3 to 19.7–20.7 ms on one thread and from 11.8–12.2 to
/// 11.3–11.4 on two.
const PREPACK_MIN_ROWS: usize = 8;

/// The recurrent cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RnnCell {
    /// PyTorch's `nn.LSTM`: gates `i, f, g, o`.
    Lstm,
    /// PyTorch's `nn.GRU`: gates `r, z, n`.
    Gru,
    /// PyTorch's `nn.RNN` (`nonlinearity='tanh'`): one block, `h' = tanh(W_ih·x + b_ih +
    /// W_hh·h + b_hh)`.
    RnnTanh,
    /// PyTorch's `nn.RNN(nonlinearity='relu')`.
    RnnRelu,
}

impl RnnCell {
    /// The number of gate blocks `G`: 4 for the LSTM, 3 for the GRU, 1 for the plain RNN.
    /// Weights have `G·H` rows.
    pub fn gates(self) -> usize {
        match self {
            RnnCell::Lstm => 4,
            RnnCell::Gru => 3,
            RnnCell::RnnTanh | RnnCell::RnnRelu => 1,
        }
    }

    /// Values kept per hidden unit and step for the backward.
    fn cache_width(self) -> usize {
        match self {
            RnnCell::Lstm => cell::LSTM_CACHE,
            RnnCell::Gru => cell::GRU_CACHE,
            RnnCell::RnnTanh | RnnCell::RnnRelu => cell::RNN_CACHE,
        }
    }

    /// Whether the gate adjoints differ between the input side (`W_ih·x + b_ih`) and the
    /// recurrent side (`W_hh·h + b_hh`): only in the GRU, whose candidate gates the recurrent
    /// side by `r`. Elsewhere both sides enter as one sum, and one set of adjoints (and one
    /// bias gradient, copied to the other) serves both.
    fn two_sided(self) -> bool {
        self == RnnCell::Gru
    }
}

/// What the kernels write into `out`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RnnOutput {
    /// The last layer's outputs at every step, `[B, T, dirs·H]` (PyTorch's `output`, zero at
    /// padded steps).
    Sequence,
    /// The last layer's final hidden states, `[B, dirs·H]`: the forward direction's state after
    /// step `len − 1` in columns `[0, H)`, the reverse direction's after step 0 in `[H, 2H)`
    /// (`torch.cat([h_n[-2], h_n[-1]], 1)`, or `h_n[-1]` when unidirectional).
    Final,
    /// The LSTM's last layer's final hidden states as [`Final`](Self::Final) lays them out,
    /// then its final cell states the same way: `[B, 2·dirs·H]`, PyTorch's `(h_n, c_n)` of
    /// the last layer side by side.
    FinalWithCells,
    /// Every layer's final hidden states, `[L·dirs, B, H]` (PyTorch's `h_n`: layer `l`'s
    /// direction `dir` at index `l·dirs + dir`); with `cells`, each row holds the hidden states
    /// then the LSTM's cell states, `[L·dirs, B, 2·H]` (`h_n` and `c_n` side by side).
    EveryLayer {
        /// Whether each row also holds the cell states.
        cells: bool,
    },
}

impl RnnOutput {
    /// Whether the output is final states rather than every step's outputs.
    pub fn is_final(self) -> bool {
        self != RnnOutput::Sequence
    }

    /// Whether the output holds cell states.
    pub fn has_cells(self) -> bool {
        matches!(
            self,
            RnnOutput::FinalWithCells | RnnOutput::EveryLayer { cells: true }
        )
    }
}

/// The sizes and kind of a recurrent stack.
///
/// ```
/// use kiln_runtime::kernels::recurrent::{RnnCell, RnnDims, RnnOutput};
/// let d = RnnDims {
///     cell: RnnCell::Gru, batch: 2, seq: 5, input: 3, hidden: 4, layers: 2,
///     bidirectional: true, output: RnnOutput::Final, dropout: 0.0,
/// };
/// assert_eq!(d.out_len(), 2 * 8);
/// let shapes = d.param_shapes();
/// assert_eq!(shapes.len(), 16);
/// assert_eq!(shapes[4], ("weight_ih_l0_reverse".to_string(), vec![12, 3]));
/// assert_eq!(shapes[8], ("weight_ih_l1".to_string(), vec![12, 8]));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RnnDims {
    /// LSTM or GRU.
    pub cell: RnnCell,
    /// Sequences in the batch (`B`).
    pub batch: usize,
    /// Steps per sequence (`T`, the padded length).
    pub seq: usize,
    /// Features per step of the input (`F`).
    pub input: usize,
    /// Hidden units per direction (`H`).
    pub hidden: usize,
    /// Stacked layers (`L` ≥ 1).
    pub layers: usize,
    /// Whether each layer also runs backwards in time (two directions).
    pub bidirectional: bool,
    /// What the forward writes into `out`.
    pub output: RnnOutput,
    /// The probability of zeroing each output of every layer but the last before the next
    /// layer reads it, in training ([`rnn_forward_train`]; PyTorch's `dropout`, inverted
    /// dropout as `nn.Dropout`); 0 for none. [`rnn_forward`] (inference) ignores it.
    pub dropout: f64,
}

impl RnnDims {
    /// The number of directions: 2 when bidirectional, else 1.
    pub fn directions(&self) -> usize {
        if self.bidirectional {
            2
        } else {
            1
        }
    }

    /// The features per step that layer `layer` reads: `input` for the first, `dirs·H` after.
    pub fn layer_input(&self, layer: usize) -> usize {
        if layer == 0 {
            self.input
        } else {
            self.directions() * self.hidden
        }
    }

    /// The elements of `x`: `B·T·F`.
    pub fn input_len(&self) -> usize {
        self.batch * self.seq * self.input
    }

    /// The elements of `out`: `B·T·dirs·H` for [`RnnOutput::Sequence`], `B·dirs·H` for
    /// [`RnnOutput::Final`], twice that for [`RnnOutput::FinalWithCells`], `L·dirs·B·H` (or
    /// twice) for [`RnnOutput::EveryLayer`].
    pub fn out_len(&self) -> usize {
        let row = self.directions() * self.hidden;
        match self.output {
            RnnOutput::Sequence => self.batch * self.seq * row,
            RnnOutput::Final => self.batch * row,
            RnnOutput::FinalWithCells => self.batch * 2 * row,
            RnnOutput::EveryLayer { cells } => {
                self.layers * row * self.batch * if cells { 2 } else { 1 }
            }
        }
    }

    /// The number of parameter tensors: 4 per layer and direction.
    pub fn num_tensors(&self) -> usize {
        4 * self.layers * self.directions()
    }

    /// The `state_dict` name and shape of parameter `k` (`k / 4` is `layer · dirs + direction`,
    /// `k % 4` selects `weight_ih`, `weight_hh`, `bias_ih`, `bias_hh`).
    ///
    /// # Panics
    /// If `k >= num_tensors()`.
    pub fn param_shape(&self, k: usize) -> (String, Vec<usize>) {
        assert!(
            k < self.num_tensors(),
            "RnnDims::param_shape: no parameter {k}"
        );
        let (group, kind) = (k / 4, k % 4);
        let (layer, direction) = (group / self.directions(), group % self.directions());
        let rows = self.cell.gates() * self.hidden;
        let (name, shape) = match kind {
            0 => ("weight_ih", vec![rows, self.layer_input(layer)]),
            1 => ("weight_hh", vec![rows, self.hidden]),
            2 => ("bias_ih", vec![rows]),
            _ => ("bias_hh", vec![rows]),
        };
        let suffix = if direction == 1 { "_reverse" } else { "" };
        (format!("{name}_l{layer}{suffix}"), shape)
    }

    /// Every parameter's `state_dict` name and shape, in `state_dict` order: for each layer,
    /// for each direction (forward, then `_reverse`), `weight_ih`, `weight_hh`, `bias_ih`,
    /// `bias_hh`. This is the order of `params` and `param_grads` in the kernels.
    pub fn param_shapes(&self) -> Vec<(String, Vec<usize>)> {
        (0..self.num_tensors())
            .map(|k| self.param_shape(k))
            .collect()
    }

    /// The scratch [`rnn_forward`] and [`rnn_backward`] need, in elements, with
    /// `R = B·T`, `G·H` gate rows, `D` directions, `L` layers and `W` values kept per hidden
    /// unit and step (6 for the LSTM: `i, f, g, o, c, tanh c`; 4 for the GRU: `r, z, n` and
    /// `W_hn·h + b_hn`):
    ///
    /// - kept from the forward for the backward: per layer and direction the hidden state
    ///   each step started from and the cache, `L·D·R·(H + W·H)`, and the outputs of every
    ///   layer but the last, `(L − 1)·R·D·H`;
    /// - per direction, the input projections (forward) or gate adjoints (backward, twice as
    ///   many for the GRU, whose input and recurrent sides differ) of all steps,
    ///   `R·G·H` (LSTM) or `2·R·G·H` (GRU), and one step's recurrent product and states,
    ///   `B·(G·H + 2·H)`;
    /// - the adjoints of the inner layers' outputs, `min(L − 1, 2)·R·D·H`;
    /// - with 8 sequences or more, each direction's recurrent weight packed for the GEMM,
    ///   `D·max(H·⌈G·H⌉₃₂, G·H·⌈H⌉₃₂)` (`⌈x⌉₃₂`: `x` rounded up to a multiple of 32);
    /// - with 16 sequences or more (two batch parts), the second part's sums of the weight and
    ///   bias gradients per direction, `D·G·H·(I + H + 2)` with `I` the widest layer input;
    /// - with `dropout` above 0, the dropout masks of the inner layers' outputs,
    ///   `(L − 1)·R·D·H`.
    pub fn scratch_len(&self) -> usize {
        Layout::new(self).total()
    }

    /// Whether the time loops multiply by a recurrent weight packed once per layer and pass
    /// (`gemm::pack_b`) rather than packed again at every step: when each batch part has at
    /// least [`PREPACK_MIN_ROWS`] sequences. Fewer rows take the GEMM's unpacked paths, which
    /// read the weight in place.
    fn prepacks(&self) -> bool {
        self.batch >= PREPACK_MIN_ROWS
    }

    /// The batch parts the time loop runs on, the same whatever the thread count: two when
    /// the batch is large enough for each part's per-step GEMM to stay efficient.
    fn batch_parts(&self) -> usize {
        if self.batch >= 16 {
            2
        } else {
            1
        }
    }

    #[track_caller]
    fn check(&self, what: &str, x: &[impl Sized], lengths: Option<&[usize]>, params: usize) {
        assert!(self.layers >= 1, "{what}: an RNN has at least one layer");
        assert!(
            !self.output.has_cells() || self.cell == RnnCell::Lstm,
            "{what}: only the LSTM has cell states"
        );
        assert!(
            (0.0..=1.0).contains(&self.dropout),
            "{what}: dropout must be in [0, 1], got {}",
            self.dropout
        );
        assert_eq!(x.len(), self.input_len(), "{what}: x has the wrong length");
        assert_eq!(
            params,
            self.num_tensors(),
            "{what}: expected {} parameter tensors",
            self.num_tensors()
        );
        if let Some(lengths) = lengths {
            assert_eq!(
                lengths.len(),
                self.batch,
                "{what}: lengths has the wrong length"
            );
            assert!(
                lengths.iter().all(|&l| (1..=self.seq).contains(&l)),
                "{what}: a length is outside 1..=seq"
            );
        }
    }

    #[track_caller]
    fn check_params<F>(&self, what: &str, params: &[impl AsRef<[F]>]) {
        for (k, p) in params.iter().enumerate() {
            // The name is only built on failure: a warm step must not allocate.
            let want = self.param_len(k);
            if p.as_ref().len() != want {
                let name = self.param_shape(k).0;
                panic!(
                    "{what}: {name} has {} elements, expected {want}",
                    p.as_ref().len()
                );
            }
        }
    }

    /// The elements of each of the initial states: `L·D·B·H`.
    pub fn initial_len(&self) -> usize {
        self.layers * self.directions() * self.batch * self.hidden
    }

    #[track_caller]
    fn check_initial<F>(&self, what: &str, initial: &RnnInitial<'_, F>) {
        let want = self.initial_len();
        assert_eq!(initial.h.len(), want, "{what}: h_0 has the wrong length");
        if let Some(c) = initial.c {
            assert!(
                self.cell == RnnCell::Lstm,
                "{what}: only the LSTM has cell states"
            );
            assert_eq!(c.len(), want, "{what}: c_0 has the wrong length");
        }
    }

    /// The elements of parameter `k` (see [`param_shape`](Self::param_shape)).
    fn param_len(&self, k: usize) -> usize {
        let rows = self.cell.gates() * self.hidden;
        match k % 4 {
            0 => rows * self.layer_input(k / 4 / self.directions()),
            1 => rows * self.hidden,
            _ => rows,
        }
    }
}

/// Where everything lives in the scratch: the state kept for the backward (per layer and
/// direction `[hidden states the steps started from | cache]`), the inner layers' outputs,
/// per direction a work area `[all steps' projections or adjoints | one step's product | h | c]`,
/// and the inner layers' output adjoints.
struct Layout {
    batch: usize,
    seq: usize,
    hidden: usize,
    gate_rows: usize,
    cache_width: usize,
    directions: usize,
    layers: usize,
    /// `B·T`.
    rows: usize,
    /// All steps' input projections (forward) or gate adjoints (backward) of one direction.
    big: usize,
    /// One direction's work area.
    work: usize,
    /// One layer and direction's kept state.
    kept: usize,
    /// One layer's outputs or output adjoints, `B·T·D·H`.
    layer_out: usize,
    /// One direction's recurrent weight packed for the GEMM (zero when not prepacked).
    packed: usize,
    /// The batch parts (see [`RnnDims::batch_parts`]).
    parts: usize,
    /// One direction and later part's own sums of the weight and bias gradients (the first
    /// part writes the gradients themselves).
    partial: usize,
    /// The dropout masks of one inner layer's outputs (zero without dropout).
    mask: usize,
}

impl Layout {
    fn new(d: &RnnDims) -> Self {
        let (h, gate_rows) = (d.hidden, d.cell.gates() * d.hidden);
        let rows = d.batch * d.seq;
        let cache_width = d.cell.cache_width() * h;
        let sides = if d.cell.two_sided() { 2 } else { 1 };
        let big = sides * rows * gate_rows;
        let widest_input = (0..d.layers).map(|l| d.layer_input(l)).max().unwrap_or(0);
        Self {
            batch: d.batch,
            seq: d.seq,
            hidden: h,
            gate_rows,
            cache_width,
            directions: d.directions(),
            layers: d.layers,
            rows,
            big,
            work: big + d.batch * (gate_rows + 2 * h),
            kept: rows * (h + cache_width),
            layer_out: rows * d.directions() * h,
            packed: if d.prepacks() {
                gemm::packed_b_len(h, gate_rows).max(gemm::packed_b_len(gate_rows, h))
            } else {
                0
            },
            parts: d.batch_parts(),
            partial: gate_rows * (widest_input + h + 2),
            mask: if d.dropout > 0.0 {
                rows * d.directions() * h
            } else {
                0
            },
        }
    }

    fn masks_total(&self) -> usize {
        self.layers.saturating_sub(1) * self.mask
    }

    fn kept_total(&self) -> usize {
        self.layers * self.directions * self.kept
    }

    fn outputs_total(&self) -> usize {
        self.layers.saturating_sub(1) * self.layer_out
    }

    fn work_total(&self) -> usize {
        self.directions * self.work
    }

    fn adjoints_total(&self) -> usize {
        self.layers.saturating_sub(1).min(2) * self.layer_out
    }

    fn packed_total(&self) -> usize {
        self.directions * self.packed
    }

    fn partials_total(&self) -> usize {
        self.directions * (self.parts - 1) * self.partial
    }

    fn total(&self) -> usize {
        self.kept_total()
            + self.outputs_total()
            + self.work_total()
            + self.adjoints_total()
            + self.packed_total()
            + self.partials_total()
            + self.masks_total()
    }

    /// The scratch cut into its seven regions.
    fn split<'a, F>(&self, scratch: &'a mut [F]) -> Regions<'a, F> {
        let (kept, rest) = scratch.split_at_mut(self.kept_total());
        let (outputs, rest) = rest.split_at_mut(self.outputs_total());
        let (work, rest) = rest.split_at_mut(self.work_total());
        let (adjoints, rest) = rest.split_at_mut(self.adjoints_total());
        let (packed, rest) = rest.split_at_mut(self.packed_total());
        let (partials, rest) = rest.split_at_mut(self.partials_total());
        let masks = &mut rest[..self.masks_total()];
        Regions {
            kept,
            outputs,
            work,
            adjoints,
            packed,
            partials,
            masks,
        }
    }

    /// Ranges, within the partials region, of the `(weight_ih, weight_hh, bias_ih, bias_hh)`
    /// gradient sums of `direction`'s batch part `part` (≥ 1) at a layer whose input has
    /// `input` features.
    fn partial_rows(&self, direction: usize, part: usize, input: usize) -> [Range<usize>; 4] {
        let g = self.gate_rows;
        let base = (direction * (self.parts - 1) + part - 1) * self.partial;
        let w_hh = base + g * input;
        let b_ih = w_hh + g * self.hidden;
        [
            base..w_hh,
            w_hh..b_ih,
            b_ih..b_ih + g,
            b_ih + g..b_ih + 2 * g,
        ]
    }

    /// Packs each direction's recurrent weight of `layer` as the time loops multiply by it
    /// (`Wᵀ` forward, `W` backward) into the packed region, when the batch is large enough
    /// for it to pay (see [`RnnDims::prepacks`]).
    fn pack_recurrent<'a, F: Float>(
        &self,
        d: &RnnDims,
        params: &[&[F]],
        layer: usize,
        transposed: bool,
        packed: &'a mut [F],
    ) -> [Option<gemm::PackedB<'a, F>>; 2] {
        let mut out = [None, None];
        if self.packed == 0 {
            return out;
        }
        let (h, g) = (self.hidden, self.gate_rows);
        let (k, n) = if transposed { (h, g) } else { (g, h) };
        let bufs = packed.chunks_exact_mut(self.packed);
        for (direction, (slot, buf)) in out.iter_mut().zip(bufs).enumerate() {
            let [_, w_hh, ..] = layer_params(d, params, layer, direction);
            *slot = Some(gemm::pack_b(k, n, w_hh, transposed, buf));
        }
        out
    }

    /// Range of the kept state of `layer`'s `direction` (within the kept region).
    fn kept_range(&self, layer: usize, direction: usize) -> Range<usize> {
        let start = (layer * self.directions + direction) * self.kept;
        start..start + self.kept
    }

    /// Ranges of one direction's `(start states, cache)` rows for the sequences `part`,
    /// relative to its kept state.
    fn kept_rows(&self, part: &Range<usize>) -> (Range<usize>, Range<usize>) {
        let (t, h, w) = (self.seq, self.hidden, self.cache_width);
        let states = part.start * t * h..part.end * t * h;
        let cache = self.rows * h + part.start * t * w..self.rows * h + part.end * t * w;
        (states, cache)
    }

    /// Ranges, within the work region, of `direction`'s `(projections or input-side
    /// adjoints, recurrent-side adjoints, step product, h, c)` for the sequences `part`.
    /// The recurrent-side adjoints are the GRU's second half of the big buffer (the LSTM's
    /// are the same as its input side: an empty range).
    fn work_rows(&self, direction: usize, part: &Range<usize>) -> [Range<usize>; 5] {
        let base = direction * self.work;
        let (t, g, h) = (self.seq, self.gate_rows, self.hidden);
        let all = self.rows * g;
        let inputs = base + part.start * t * g..base + part.end * t * g;
        let recurrent = if self.big > all {
            base + all + part.start * t * g..base + all + part.end * t * g
        } else {
            base..base
        };
        let step = base + self.big;
        let h_at = step + self.batch * g;
        let c_at = h_at + self.batch * h;
        [
            inputs,
            recurrent,
            step + part.start * g..step + part.end * g,
            h_at + part.start * h..h_at + part.end * h,
            c_at + part.start * h..c_at + part.end * h,
        ]
    }
}

/// The scratch's regions (see [`Layout`]).
struct Regions<'a, F> {
    kept: &'a mut [F],
    outputs: &'a mut [F],
    work: &'a mut [F],
    adjoints: &'a mut [F],
    packed: &'a mut [F],
    partials: &'a mut [F],
    /// Per inner layer, the dropout mask of its outputs (`0` or `1 / (1 − p)`), when the
    /// stack has dropout.
    masks: &'a mut [F],
}

/// What the time loop of one layer and direction reads.
struct Direction<'a, F> {
    dims: &'a RnnDims,
    lengths: Option<&'a [usize]>,
    reverse: bool,
    w_hh: &'a [F],
    /// `w_hh` packed as this pass multiplies by it, when it is ([`RnnDims::prepacks`]).
    recurrent: Option<gemm::PackedB<'a, F>>,
    b_ih: &'a [F],
    b_hh: &'a [F],
}

impl<F> Direction<'_, F> {
    fn len(&self, b: usize) -> usize {
        self.lengths.map_or(self.dims.seq, |l| l[b])
    }

    /// The time index of step `s` of sequence `b` (which has `len` steps).
    fn time(&self, s: usize, len: usize) -> usize {
        if self.reverse {
            len - 1 - s
        } else {
            s
        }
    }

    /// The time index of the step processed before the one at time `t` (not the first).
    fn previous_time(&self, t: usize) -> usize {
        if self.reverse {
            t + 1
        } else {
            t - 1
        }
    }
}

/// Where the final states of one layer's direction go in `out` (forward) or come from in
/// `d_out` (backward), if that layer's final states are part of the output: sequence `b`'s
/// hidden states at `b·stride`, its cell states (if any) `cells` further on, in `data`.
#[derive(Clone, Copy)]
struct FinalRows {
    /// Where sequence 0's row starts.
    start: usize,
    /// From one sequence's row to the next.
    stride: usize,
    /// The cell states' offset within a row, if the output holds them.
    cells: Option<usize>,
}

impl FinalRows {
    fn of(d: &RnnDims, layer: usize, direction: usize) -> Option<Self> {
        let (h, dirs) = (d.hidden, d.directions());
        let last = layer + 1 == d.layers;
        match d.output {
            RnnOutput::Sequence => None,
            RnnOutput::Final | RnnOutput::FinalWithCells if !last => None,
            RnnOutput::Final => Some(FinalRows {
                start: direction * h,
                stride: dirs * h,
                cells: None,
            }),
            RnnOutput::FinalWithCells => Some(FinalRows {
                start: direction * h,
                stride: 2 * dirs * h,
                cells: Some(dirs * h),
            }),
            RnnOutput::EveryLayer { cells } => {
                let stride = if cells { 2 * h } else { h };
                Some(FinalRows {
                    start: (layer * dirs + direction) * d.batch * stride,
                    stride,
                    cells: cells.then_some(h),
                })
            }
        }
    }

    /// Sequence `b`'s hidden states' range, and its cell states' if any.
    fn ranges(&self, b: usize, h: usize) -> (Range<usize>, Option<Range<usize>>) {
        let at = self.start + b * self.stride;
        (at..at + h, self.cells.map(|c| at + c..at + c + h))
    }
}

/// The parameters of `layer`'s `direction`: `(weight_ih, weight_hh, bias_ih, bias_hh)`.
fn layer_params<'a, F>(
    d: &RnnDims,
    params: &[&'a [F]],
    layer: usize,
    direction: usize,
) -> [&'a [F]; 4] {
    let k = 4 * (layer * d.directions() + direction);
    [params[k], params[k + 1], params[k + 2], params[k + 3]]
}
