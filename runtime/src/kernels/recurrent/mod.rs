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
//! the gate adjoints of all steps so that the weight, bias and input gradients are single
//! GEMMs (or column sums) after the time loop; the recurrent weight's gradient pairs them with
//! the hidden states each step started from, kept by the forward.
//!
//! Sequences of a batch are independent, as are the two directions of a layer: the time loop
//! runs per (direction, part of the batch) on the two threads ([`parallel::for_each_chunk`]).
//! The batch is cut the same way whatever the thread count, and every gradient summed over
//! the batch is a GEMM or column sum over all of it after the loop, so results are the same
//! bits on one thread or two.

mod cell;
#[cfg(test)]
mod tests;

use super::gemm;
use super::linear::linear_backward_bias;
use super::parallel::{self, SharedMut};
use crate::Float;
use std::ops::Range;

/// The recurrent cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RnnCell {
    /// PyTorch's `nn.LSTM`: gates `i, f, g, o`.
    Lstm,
    /// PyTorch's `nn.GRU`: gates `r, z, n`.
    Gru,
}

impl RnnCell {
    /// The number of gate blocks `G`: 4 for the LSTM, 3 for the GRU. Weights have `G·H` rows.
    pub fn gates(self) -> usize {
        match self {
            RnnCell::Lstm => 4,
            RnnCell::Gru => 3,
        }
    }

    /// Values kept per hidden unit and step for the backward.
    fn cache_width(self) -> usize {
        match self {
            RnnCell::Lstm => cell::LSTM_CACHE,
            RnnCell::Gru => cell::GRU_CACHE,
        }
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
}

/// The sizes and kind of a recurrent stack.
///
/// ```
/// use kiln_runtime::kernels::recurrent::{RnnCell, RnnDims, RnnOutput};
/// let d = RnnDims {
///     cell: RnnCell::Gru, batch: 2, seq: 5, input: 3, hidden: 4, layers: 2,
///     bidirectional: true, output: RnnOutput::Final,
/// };
/// assert_eq!(d.out_len(), 2 * 8);
/// let shapes = d.param_shapes();
/// assert_eq!(shapes.len(), 16);
/// assert_eq!(shapes[4], ("weight_ih_l0_reverse".to_string(), vec![12, 3]));
/// assert_eq!(shapes[8], ("weight_ih_l1".to_string(), vec![12, 8]));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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
    /// [`RnnOutput::Final`].
    pub fn out_len(&self) -> usize {
        let row = self.directions() * self.hidden;
        match self.output {
            RnnOutput::Sequence => self.batch * self.seq * row,
            RnnOutput::Final => self.batch * row,
        }
    }

    /// The number of parameter tensors: 4 per layer and direction.
    pub fn num_params(&self) -> usize {
        4 * self.layers * self.directions()
    }

    /// The `state_dict` name and shape of parameter `k` (`k / 4` is `layer · dirs + direction`,
    /// `k % 4` selects `weight_ih`, `weight_hh`, `bias_ih`, `bias_hh`).
    ///
    /// # Panics
    /// If `k >= num_params()`.
    pub fn param_shape(&self, k: usize) -> (String, Vec<usize>) {
        assert!(
            k < self.num_params(),
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
        (0..self.num_params())
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
    /// - the adjoints of the inner layers' outputs, `min(L − 1, 2)·R·D·H`.
    pub fn scratch_len(&self) -> usize {
        Layout::new(self).total()
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
        assert_eq!(x.len(), self.input_len(), "{what}: x has the wrong length");
        assert_eq!(
            params,
            self.num_params(),
            "{what}: expected {} parameter tensors",
            self.num_params()
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
            let (name, shape) = self.param_shape(k);
            assert_eq!(
                p.as_ref().len(),
                shape.iter().product::<usize>(),
                "{what}: {name} has the wrong length"
            );
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
}

impl Layout {
    fn new(d: &RnnDims) -> Self {
        let (h, gate_rows) = (d.hidden, d.cell.gates() * d.hidden);
        let rows = d.batch * d.seq;
        let cache_width = d.cell.cache_width() * h;
        let sides = match d.cell {
            RnnCell::Lstm => 1,
            RnnCell::Gru => 2,
        };
        let big = sides * rows * gate_rows;
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
        }
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

    fn total(&self) -> usize {
        self.kept_total() + self.outputs_total() + self.work_total() + self.adjoints_total()
    }

    /// The scratch cut into its four regions.
    fn split<'a, F>(&self, scratch: &'a mut [F]) -> Regions<'a, F> {
        let (kept, rest) = scratch.split_at_mut(self.kept_total());
        let (outputs, rest) = rest.split_at_mut(self.outputs_total());
        let (work, rest) = rest.split_at_mut(self.work_total());
        let adjoints = &mut rest[..self.adjoints_total()];
        Regions {
            kept,
            outputs,
            work,
            adjoints,
        }
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
}

/// What the time loop of one layer and direction reads.
struct Direction<'a, F> {
    dims: &'a RnnDims,
    lengths: Option<&'a [usize]>,
    reverse: bool,
    w_hh: &'a [F],
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

    /// The time index of the step before step `s` (> 0).
    fn previous_time(&self, t: usize) -> usize {
        if self.reverse {
            t + 1
        } else {
            t - 1
        }
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

/// The forward pass: writes `out` ([`RnnDims::out_len`] elements, see [`RnnOutput`]).
///
/// `x` is `[B, T, F]`; `lengths`, if given, holds each sequence's length (`1 ..= T`, checked);
/// `params` are the parameter slices in `state_dict` order (see
/// [`RnnDims::param_shapes`]: 4 per layer and direction). `scratch` (at least
/// [`RnnDims::scratch_len`] elements, contents on entry irrelevant) receives what the backward
/// needs: pass it unchanged to [`rnn_backward`] with the same inputs.
///
/// # Panics
/// If a slice's length disagrees with `d`, a length is outside `1 ..= T`, or `d.layers` is 0
/// (caller bugs).
///
/// ```
/// use kiln_runtime::kernels::recurrent::{rnn_forward, RnnCell, RnnDims, RnnOutput};
/// let d = RnnDims {
///     cell: RnnCell::Gru, batch: 1, seq: 2, input: 1, hidden: 1, layers: 1,
///     bidirectional: false, output: RnnOutput::Final,
/// };
/// // All weights and biases zero: r = z = 1/2, n = 0, so h stays 0.
/// let zeros = [0.0f64; 3];
/// let params: Vec<&[f64]> = vec![&zeros, &zeros, &zeros, &zeros];
/// let mut scratch = vec![0.0; d.scratch_len()];
/// let mut out = [f64::NAN];
/// rnn_forward(&d, &[1.0, 2.0], None, &params, &mut scratch, &mut out);
/// assert_eq!(out, [0.0]);
/// ```
pub fn rnn_forward<F: Float>(
    d: &RnnDims,
    x: &[F],
    lengths: Option<&[usize]>,
    params: &[&[F]],
    scratch: &mut [F],
    out: &mut [F],
) {
    const WHAT: &str = "rnn_forward";
    d.check(WHAT, x, lengths, params.len());
    d.check_params(WHAT, params);
    let lay = Layout::new(d);
    assert!(
        scratch.len() >= lay.total(),
        "{WHAT}: scratch has {} elements, needs {} (RnnDims::scratch_len)",
        scratch.len(),
        lay.total()
    );
    assert_eq!(out.len(), d.out_len(), "{WHAT}: out has the wrong length");
    let Regions {
        kept,
        outputs,
        work,
        ..
    } = lay.split(scratch);
    let (dirs, g, h) = (lay.directions, lay.gate_rows, lay.hidden);
    let parts = d.batch_parts();
    for layer in 0..d.layers {
        let last = layer + 1 == d.layers;
        let (done, current) = outputs.split_at_mut(layer * lay.layer_out);
        let input: &[F] = if layer == 0 {
            x
        } else {
            &done[(layer - 1) * lay.layer_out..]
        };
        let in_l = d.layer_input(layer);
        // Every step's input projection W_ih·x at once (the biases are added in the gate math).
        for direction in 0..dirs {
            let [w_ih, ..] = layer_params(d, params, layer, direction);
            let xp = &mut work[lay.work_rows(direction, &(0..d.batch))[0].clone()];
            gemm(
                lay.rows,
                in_l,
                g,
                F::ONE,
                input,
                false,
                w_ih,
                true,
                F::ZERO,
                xp,
            );
        }
        let dest: Option<&mut [F]> = match (last, d.output) {
            (false, _) => Some(&mut current[..lay.layer_out]),
            (true, RnnOutput::Sequence) => Some(&mut *out),
            (true, RnnOutput::Final) => None,
        };
        let dest = dest.map(SharedMut::new);
        let kept_l = SharedMut::new(&mut kept[lay.kept_range(layer, 0).start..]);
        let work_s = SharedMut::new(&mut *work);
        parallel::for_each_chunk(dirs * parts, |item, _| {
            let (direction, part) = (item / parts, item % parts);
            let [_, w_hh, b_ih, b_hh] = layer_params(d, params, layer, direction);
            let dir = Direction {
                dims: d,
                lengths,
                reverse: direction == 1,
                w_hh,
                b_ih,
                b_hh,
            };
            let part = parallel::chunk_range(d.batch, parts, part);
            let (states, cache) = lay.kept_rows(&part);
            let kept_at = direction * lay.kept;
            let [xp, _, step, hs, cs] = lay.work_rows(direction, &part);
            // SAFETY: each item is claimed once, and the items' (direction, sequences) pairs
            // are disjoint: each range below is this item's own rows of its direction's
            // buffers; `dest` is written only at this direction's columns of these rows.
            let bufs = unsafe {
                ForwardBufs {
                    xp: &*work_s.range(xp),
                    step: work_s.range(step),
                    h: work_s.range(hs),
                    c: work_s.range(cs),
                    states: kept_l.range(kept_at + states.start..kept_at + states.end),
                    cache: kept_l.range(kept_at + cache.start..kept_at + cache.end),
                }
            };
            forward_part(&dir, part, bufs, dest.as_ref().map(|s| (s, direction * h)));
        });
        if last && d.output == RnnOutput::Final {
            // Each sequence's state stopped changing after its last step.
            for direction in 0..dirs {
                let hs = &work[lay.work_rows(direction, &(0..d.batch))[3].clone()];
                for (row, state) in out.chunks_exact_mut(dirs * h).zip(hs.chunks_exact(h)) {
                    row[direction * h..(direction + 1) * h].copy_from_slice(state);
                }
            }
        }
    }
}

/// One time loop's own buffers (its sequences' rows), forward.
struct ForwardBufs<'a, F> {
    /// `[part, T, G·H]`: the input projections.
    xp: &'a [F],
    /// `[part, G·H]`: one step's recurrent product.
    step: &'a mut [F],
    /// `[part, H]`: the hidden states.
    h: &'a mut [F],
    /// `[part, H]`: the cell states (LSTM).
    c: &'a mut [F],
    /// `[part, T, H]`: the hidden state each step started from.
    states: &'a mut [F],
    /// `[part, T, W·H]`: what the backward needs.
    cache: &'a mut [F],
}

/// The time loop of one direction over the sequences `part`: writes their kept state, their
/// outputs into `dest` (`[B, T, D·H]`, at the given column; zero at padded steps) if given,
/// and leaves their final states in `bufs.h`.
fn forward_part<F: Float>(
    dir: &Direction<'_, F>,
    part: Range<usize>,
    bufs: ForwardBufs<'_, F>,
    dest: Option<(&SharedMut<'_, F>, usize)>,
) {
    let d = dir.dims;
    let (t_len, h, g) = (d.seq, d.hidden, d.cell.gates() * d.hidden);
    let w = d.cell.cache_width() * h;
    let dest_width = d.directions() * h;
    let ForwardBufs {
        xp,
        step,
        h: hs,
        c: cs,
        states,
        cache,
    } = bufs;
    let dest_row = |b: usize, t: usize| {
        dest.map(|(dest, col)| {
            let at = (b * t_len + t) * dest_width + col;
            // SAFETY: the caller gives this loop the rows of the sequences `part` and the
            // columns `col .. col + H` of `dest` to itself, and each (b, t) is taken once.
            unsafe { dest.range(at..at + h) }
        })
    };
    hs.fill(F::ZERO);
    cs.fill(F::ZERO);
    let mut steps = 0;
    for (i, b) in part.clone().enumerate() {
        let len = dir.len(b);
        steps = steps.max(len);
        // Padded steps output zeros, and start from a zero state: it meets a zero adjoint in
        // the recurrent weight's gradient, and the scratch may hold anything (even NaN).
        states[(i * t_len + len) * h..(i + 1) * t_len * h].fill(F::ZERO);
        for t in len..t_len {
            if let Some(row) = dest_row(b, t) {
                row.fill(F::ZERO);
            }
        }
    }
    for s in 0..steps {
        if s == 0 {
            step.fill(F::ZERO);
        } else {
            gemm(
                part.len(),
                h,
                g,
                F::ONE,
                hs,
                false,
                dir.w_hh,
                true,
                F::ZERO,
                step,
            );
        }
        for (i, b) in part.clone().enumerate() {
            let len = dir.len(b);
            if s >= len {
                continue;
            }
            let t = dir.time(s, len);
            let row = i * t_len + t;
            let h_row = &mut hs[i * h..(i + 1) * h];
            states[row * h..(row + 1) * h].copy_from_slice(h_row);
            let (xp_row, hp_row) = (&xp[row * g..(row + 1) * g], &step[i * g..(i + 1) * g]);
            let cache_row = &mut cache[row * w..(row + 1) * w];
            match d.cell {
                RnnCell::Lstm => cell::run(cell::LstmForward {
                    xp: xp_row,
                    hp: hp_row,
                    b_ih: dir.b_ih,
                    b_hh: dir.b_hh,
                    c: &mut cs[i * h..(i + 1) * h],
                    h: h_row,
                    cache: cache_row,
                }),
                RnnCell::Gru => cell::run(cell::GruForward {
                    xp: xp_row,
                    hp: hp_row,
                    b_ih: dir.b_ih,
                    b_hh: dir.b_hh,
                    h: h_row,
                    cache: cache_row,
                }),
            }
            if let Some(out) = dest_row(b, t) {
                out.copy_from_slice(h_row);
            }
        }
    }
}

/// Backpropagation through time: given `d_out` (the adjoint of `out`, as laid out by
/// [`rnn_forward`]), OVERWRITES every parameter gradient (`param_grads`, in the order and
/// shapes of `params`) and, if `d_x` is given as `(buffer, accumulate)`, writes (or, with
/// `accumulate`, adds) the adjoint of `x` (`[B, T, F]`, zero at padded steps).
///
/// `x`, `lengths` and `params` must be those of the forward, and `scratch` as the forward left
/// it. The backward does not change the state the forward kept, so it may be run again on it.
///
/// # Panics
/// If a slice's length disagrees with `d`, or a length is outside `1 ..= T` (caller bugs).
#[allow(clippy::too_many_arguments)]
pub fn rnn_backward<F: Float>(
    d: &RnnDims,
    x: &[F],
    lengths: Option<&[usize]>,
    params: &[&[F]],
    scratch: &mut [F],
    d_out: &[F],
    mut d_x: Option<(&mut [F], bool)>,
    param_grads: &mut [&mut [F]],
) {
    const WHAT: &str = "rnn_backward";
    d.check(WHAT, x, lengths, params.len());
    d.check_params(WHAT, params);
    assert_eq!(
        param_grads.len(),
        params.len(),
        "{WHAT}: expected {} parameter gradients",
        params.len()
    );
    d.check_params(WHAT, param_grads);
    let lay = Layout::new(d);
    assert!(
        scratch.len() >= lay.total(),
        "{WHAT}: scratch has {} elements, needs {} (RnnDims::scratch_len)",
        scratch.len(),
        lay.total()
    );
    assert_eq!(
        d_out.len(),
        d.out_len(),
        "{WHAT}: d_out has the wrong length"
    );
    if let Some((dx, _)) = d_x.as_ref() {
        assert_eq!(dx.len(), d.input_len(), "{WHAT}: d_x has the wrong length");
    }
    let Regions {
        kept,
        outputs,
        work,
        adjoints,
    } = lay.split(scratch);
    let (kept, outputs) = (&*kept, &*outputs);
    let (dirs, g, h, rows) = (lay.directions, lay.gate_rows, lay.hidden, lay.rows);
    let parts = d.batch_parts();
    let all = 0..d.batch;
    for layer in (0..d.layers).rev() {
        let last = layer + 1 == d.layers;
        // Layer l's output adjoint is in buffer l % 2; its input's goes into the other one.
        let (even, odd) = adjoints.split_at_mut(lay.layer_out.min(adjoints.len()));
        let (mine, below) = if layer % 2 == 0 {
            (even, odd)
        } else {
            (odd, even)
        };
        let dy: Option<&[F]> = match (last, d.output) {
            (false, _) => Some(&*mine),
            (true, RnnOutput::Sequence) => Some(d_out),
            (true, RnnOutput::Final) => None,
        };
        let final_dh = (last && d.output == RnnOutput::Final).then_some(d_out);
        let input: &[F] = if layer == 0 {
            x
        } else {
            &outputs[(layer - 1) * lay.layer_out..layer * lay.layer_out]
        };
        let in_l = d.layer_input(layer);
        let work_s = SharedMut::new(&mut *work);
        parallel::for_each_chunk(dirs * parts, |item, _| {
            let (direction, part) = (item / parts, item % parts);
            let [_, w_hh, b_ih, b_hh] = layer_params(d, params, layer, direction);
            let dir = Direction {
                dims: d,
                lengths,
                reverse: direction == 1,
                w_hh,
                b_ih,
                b_hh,
            };
            let part = parallel::chunk_range(d.batch, parts, part);
            let (states, cache) = lay.kept_rows(&part);
            let kept_l = &kept[lay.kept_range(layer, direction)];
            let [dgi, dgh, step, dh, dc] = lay.work_rows(direction, &part);
            let gru = d.cell == RnnCell::Gru;
            // SAFETY: each item is claimed once, and each range is this item's own rows of
            // its direction's work area.
            let bufs = unsafe {
                BackwardBufs {
                    states: &kept_l[states],
                    cache: &kept_l[cache],
                    dgi: work_s.range(dgi),
                    dgh: gru.then(|| work_s.range(dgh)),
                    step: work_s.range(step),
                    dh: work_s.range(dh),
                    dc: work_s.range(dc),
                }
            };
            let col = direction * h;
            backward_part(
                &dir,
                part,
                bufs,
                dy.map(|dy| (dy, col)),
                final_dh.map(|f| (f, col)),
            );
        });
        for direction in 0..dirs {
            let k = 4 * (layer * dirs + direction);
            let [dgi, dgh, ..] = lay.work_rows(direction, &all);
            let dgi = &work[dgi];
            let dgh = if d.cell == RnnCell::Gru {
                &work[dgh]
            } else {
                dgi
            };
            let states = &kept[lay.kept_range(layer, direction)][..rows * h];
            gemm(
                g,
                rows,
                in_l,
                F::ONE,
                dgi,
                true,
                input,
                false,
                F::ZERO,
                param_grads[k],
            );
            gemm(
                g,
                rows,
                h,
                F::ONE,
                dgh,
                true,
                states,
                false,
                F::ZERO,
                param_grads[k + 1],
            );
            linear_backward_bias(dgi, rows, g, param_grads[k + 2], false);
            if d.cell == RnnCell::Lstm {
                // Both biases enter the LSTM's gates the same way.
                let (db_ih, db_hh) = param_grads[k + 2..k + 4].split_at_mut(1);
                db_hh[0].copy_from_slice(db_ih[0]);
            } else {
                linear_backward_bias(dgh, rows, g, param_grads[k + 3], false);
            }
        }
        let target = if layer == 0 {
            d_x.as_mut()
                .map(|(dx, accumulate)| (&mut **dx, *accumulate))
        } else {
            Some((&mut below[..lay.layer_out], false))
        };
        if let Some((target, accumulate)) = target {
            for direction in 0..dirs {
                let [w_ih, ..] = layer_params(d, params, layer, direction);
                let dgi = &work[lay.work_rows(direction, &all)[0].clone()];
                let beta = if accumulate || direction > 0 {
                    F::ONE
                } else {
                    F::ZERO
                };
                gemm(rows, g, in_l, F::ONE, dgi, false, w_ih, false, beta, target);
            }
        }
    }
}

/// One time loop's own buffers (its sequences' rows), backward.
struct BackwardBufs<'a, F> {
    /// `[part, T, H]`: the hidden state each step started from.
    states: &'a [F],
    /// `[part, T, W·H]`: what the forward kept.
    cache: &'a [F],
    /// `[part, T, G·H]`: the adjoints of the input-side gate pre-activations.
    dgi: &'a mut [F],
    /// `[part, T, G·H]`: those of the recurrent side (GRU; the LSTM's are `dgi`).
    dgh: Option<&'a mut [F]>,
    /// `[part, G·H]`: one step's recurrent-side adjoints.
    step: &'a mut [F],
    /// `[part, H]`: the adjoint of the hidden state.
    dh: &'a mut [F],
    /// `[part, H]`: the adjoint of the cell state (LSTM).
    dc: &'a mut [F],
}

/// The backward time loop of one direction over the sequences `part`: writes their gate
/// adjoints (zero at padded steps). `dy` is the adjoint of the outputs (`[B, T, D·H]` at the
/// given column), `final_dh` that of the final states (`[B, D·H]`).
fn backward_part<F: Float>(
    dir: &Direction<'_, F>,
    part: Range<usize>,
    bufs: BackwardBufs<'_, F>,
    dy: Option<(&[F], usize)>,
    final_dh: Option<(&[F], usize)>,
) {
    let d = dir.dims;
    let (t_len, h, g) = (d.seq, d.hidden, d.cell.gates() * d.hidden);
    let w = d.cell.cache_width() * h;
    let width = d.directions() * h;
    let BackwardBufs {
        states,
        cache,
        dgi,
        mut dgh,
        step,
        dh,
        dc,
    } = bufs;
    dc.fill(F::ZERO);
    match final_dh {
        Some((f, col)) => {
            for (b, row) in part.clone().zip(dh.chunks_exact_mut(h.max(1))) {
                row.copy_from_slice(&f[b * width + col..b * width + col + h]);
            }
        }
        None => dh.fill(F::ZERO),
    }
    let mut steps = 0;
    for (i, b) in part.clone().enumerate() {
        let len = dir.len(b);
        steps = steps.max(len);
        let padded = (i * t_len + len) * g..(i + 1) * t_len * g;
        dgi[padded.clone()].fill(F::ZERO);
        if let Some(dgh) = dgh.as_deref_mut() {
            dgh[padded].fill(F::ZERO);
        }
    }
    for s in (0..steps).rev() {
        for (i, b) in part.clone().enumerate() {
            let len = dir.len(b);
            let step_row = &mut step[i * g..(i + 1) * g];
            if s >= len {
                // Not started yet (in reverse): this sequence's adjoints must stay as they are.
                step_row.fill(F::ZERO);
                continue;
            }
            let t = dir.time(s, len);
            let row = i * t_len + t;
            let dh_row = &mut dh[i * h..(i + 1) * h];
            if let Some((dy, col)) = dy {
                let at = (b * t_len + t) * width + col;
                for (acc, &v) in dh_row.iter_mut().zip(&dy[at..at + h]) {
                    *acc += v;
                }
            }
            let cache_row = &cache[row * w..(row + 1) * w];
            let dgi_row = &mut dgi[row * g..(row + 1) * g];
            match (d.cell, dgh.as_deref_mut()) {
                (RnnCell::Gru, Some(dgh)) => {
                    cell::run(cell::GruBackward {
                        cache: cache_row,
                        h_prev: &states[row * h..(row + 1) * h],
                        dh: dh_row,
                        dgi: dgi_row,
                        dgh: step_row,
                    });
                    dgh[row * g..(row + 1) * g].copy_from_slice(step_row);
                }
                _ => {
                    let c_prev = (s > 0).then(|| {
                        let at = (i * t_len + dir.previous_time(t)) * w + 4 * h;
                        &cache[at..at + h]
                    });
                    cell::run(cell::LstmBackward {
                        cache: cache_row,
                        c_prev,
                        dh: dh_row,
                        dc: &mut dc[i * h..(i + 1) * h],
                        dg: step_row,
                    });
                    dgi_row.copy_from_slice(step_row);
                }
            }
        }
        if s > 0 {
            gemm(
                part.len(),
                g,
                h,
                F::ONE,
                step,
                false,
                dir.w_hh,
                false,
                F::ONE,
                dh,
            );
        }
    }
}
