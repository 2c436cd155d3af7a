//! The forward pass: input projections, then the time loop of each direction.

use super::{
    cell, layer_params, Direction, FinalRows, Layout, Regions, RnnCell, RnnDims, RnnOutput,
};
use crate::kernels::dropout::draw_mask;
use crate::kernels::gemm::{gemm, gemm_packed_b};
use crate::kernels::parallel::{self, SharedMut};
use crate::Float;
use rand::rngs::StdRng;
use rand::Rng;
use std::ops::Range;

/// The forward pass: writes `out` ([`RnnDims::out_len`] elements, see [`RnnOutput`]).
///
/// `x` is `[B, T, F]`; `lengths`, if given, holds each sequence's length (`1 ..= T`, checked);
/// `params` are the parameter slices in `state_dict` order (see
/// [`RnnDims::param_shapes`]: 4 per layer and direction). `scratch` (at least
/// [`RnnDims::scratch_len`] elements, contents on entry irrelevant) receives what the backward
/// needs: pass it unchanged to [`rnn_backward`](super::rnn_backward) with the same inputs.
///
/// # Panics
/// If a slice's length disagrees with `d`, a length is outside `1 ..= T`, or `d.layers` is 0
/// (caller bugs).
///
/// ```
/// use kiln_runtime::kernels::recurrent::{rnn_forward, RnnCell, RnnDims, RnnOutput};
/// let d = RnnDims {
///     cell: RnnCell::Gru, batch: 1, seq: 2, input: 1, hidden: 1, layers: 1,
///     bidirectional: false, output: RnnOutput::Final, dropout: 0.0,
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
    let no_dropout: Option<&mut StdRng> = None;
    let what = "rnn_forward";
    forward(
        what, d, x, lengths, params, no_dropout, scratch, out, None, None,
    );
}

/// The forward pass of training: [`rnn_forward`], with dropout between the layers when
/// `d.dropout` is above 0 (each output of every layer but the last zeroed with that
/// probability, the rest scaled by `1 / (1 − p)`, before the next layer reads it, as
/// PyTorch's `nn.LSTM(dropout=p)` in training mode). Each layer's mask is drawn as
/// [`dropout_forward`](crate::kernels::dropout::dropout_forward) draws one over that layer's
/// outputs (one `u64` of `rng` per layer, in order), and kept in `scratch` for
/// [`rnn_backward`](super::rnn_backward).
///
/// # Panics
/// As [`rnn_forward`].
///
/// ```
/// use kiln_runtime::kernels::recurrent::{rnn_forward_train, RnnCell, RnnDims, RnnOutput};
/// use rand::{rngs::StdRng, SeedableRng};
/// let d = RnnDims {
///     cell: RnnCell::Lstm, batch: 2, seq: 3, input: 4, hidden: 5, layers: 2,
///     bidirectional: false, output: RnnOutput::Sequence, dropout: 0.5,
/// };
/// let params: Vec<Vec<f32>> = d.param_shapes().iter()
///     .map(|(_, shape)| vec![0.1; shape.iter().product()]).collect();
/// let params: Vec<&[f32]> = params.iter().map(Vec::as_slice).collect();
/// let mut scratch = vec![0.0; d.scratch_len()];
/// let mut out = vec![0.0; d.out_len()];
/// let mut rng = StdRng::seed_from_u64(0);
/// rnn_forward_train(&d, &[1.0; 24], None, &params, &mut rng, &mut scratch, &mut out);
/// ```
#[allow(clippy::too_many_arguments)]
pub fn rnn_forward_train<F: Float, R: Rng + ?Sized>(
    d: &RnnDims,
    x: &[F],
    lengths: Option<&[usize]>,
    params: &[&[F]],
    rng: &mut R,
    scratch: &mut [F],
    out: &mut [F],
) {
    let what = "rnn_forward_train";
    forward(
        what,
        d,
        x,
        lengths,
        params,
        Some(rng),
        scratch,
        out,
        None,
        None,
    );
}

/// [`rnn_forward`] (with `rng`: [`rnn_forward_train`]) from the states `initial` instead of
/// zero states, as PyTorch's `nn.LSTM(x, (h_0, c_0))` and `nn.GRU(x, h_0)`. With `lengths`,
/// each direction of each sequence starts from its own row (the reverse direction at the
/// sequence's last real step). Pass the same `initial` to
/// [`rnn_backward_from`](super::rnn_backward_from).
///
/// # Panics
/// As [`rnn_forward`], and if `initial`'s slices are not `[L·D, B, H]` (or `c` is given to a
/// cell without cell states).
#[allow(clippy::too_many_arguments)]
pub fn rnn_forward_from<F: Float, R: Rng + ?Sized>(
    d: &RnnDims,
    x: &[F],
    lengths: Option<&[usize]>,
    params: &[&[F]],
    initial: RnnInitial<'_, F>,
    rng: Option<&mut R>,
    scratch: &mut [F],
    out: &mut [F],
) {
    let what = "rnn_forward_from";
    forward(
        what,
        d,
        x,
        lengths,
        params,
        rng,
        scratch,
        out,
        Some(initial),
        None,
    );
}

/// The states a stack starts from (PyTorch's `h_0` and `c_0`), each `[L·D, B, H]`: layer
/// `l`'s direction `dir` at index `l·D + dir`, its rows the sequences of the batch. Without
/// `c`, an LSTM's cells start at zero.
#[derive(Clone, Copy, Debug)]
pub struct RnnInitial<'a, F> {
    /// The hidden states.
    pub h: &'a [F],
    /// The LSTM's cell states (`None`: zero).
    pub c: Option<&'a [F]>,
}

impl<'a, F> RnnInitial<'a, F> {
    /// Layer `layer`'s direction `direction`'s rows for the sequences `part`: `(h, c)`, `c`
    /// empty when absent.
    pub(super) fn rows(
        &self,
        d: &RnnDims,
        layer: usize,
        direction: usize,
        part: &Range<usize>,
    ) -> (&'a [F], &'a [F]) {
        let range = initial_rows(d, layer, direction, part);
        (
            &self.h[range.clone()],
            self.c.map_or(&[][..], |c| &c[range]),
        )
    }
}

/// The range of layer `layer`'s direction `direction`'s rows for the sequences `part` in an
/// `[L·D, B, H]` state.
pub(super) fn initial_rows(
    d: &RnnDims,
    layer: usize,
    direction: usize,
    part: &Range<usize>,
) -> Range<usize> {
    let start = ((layer * d.directions() + direction) * d.batch + part.start) * d.hidden;
    start..start + part.len() * d.hidden
}

/// [`rnn_forward`], with dropout between the layers drawn from `dropout` if given (training),
/// optionally starting from the states `initial`, and keeping every layer's final states in
/// `keep` (one direction, every sequence the full length: `[L, B, H]` hidden states followed,
/// for the LSTM, by `[L, B, H]` cell states, the layout of [`RnnState`](super::RnnState)).
#[allow(clippy::too_many_arguments)]
pub(super) fn forward<F: Float, R: Rng + ?Sized>(
    what: &str,
    d: &RnnDims,
    x: &[F],
    lengths: Option<&[usize]>,
    params: &[&[F]],
    mut dropout: Option<&mut R>,
    scratch: &mut [F],
    out: &mut [F],
    initial: Option<RnnInitial<'_, F>>,
    mut keep: Option<&mut [F]>,
) {
    d.check(what, x, lengths, params.len());
    d.check_params(what, params);
    let lay = Layout::new(d);
    assert!(
        scratch.len() >= lay.total(),
        "{what}: scratch has {} elements, needs {} (RnnDims::scratch_len)",
        scratch.len(),
        lay.total()
    );
    assert_eq!(out.len(), d.out_len(), "{what}: out has the wrong length");
    let state_len = d.layers * d.batch * d.hidden;
    if let Some(keep) = &keep {
        assert!(
            d.directions() == 1 && lengths.is_none(),
            "{what}: states carry over for one direction over whole sequences"
        );
        let want = state_len * if d.cell == RnnCell::Lstm { 2 } else { 1 };
        assert_eq!(keep.len(), want, "{what}: the state has the wrong length");
    }
    if let Some(initial) = &initial {
        d.check_initial(what, initial);
    }
    let Regions {
        kept,
        outputs,
        work,
        packed,
        masks,
        ..
    } = lay.split(scratch);
    // Without a generator (inference) the masks are ones: a backward after it then sees no
    // dropout, rather than stale masks.
    if dropout.is_none() {
        masks.fill(F::ONE);
    }
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
            (true, _) => None,
        };
        let dest = dest.map(SharedMut::new);
        let recurrent = lay.pack_recurrent(d, params, layer, true, &mut *packed);
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
                recurrent: recurrent[direction],
                b_ih,
                b_hh,
            };
            let part = parallel::chunk_range(d.batch, parts, part);
            let (states, cache) = lay.kept_rows(&part);
            let kept_at = direction * lay.kept;
            let [xp, _, step, hs, cs] = lay.work_rows(direction, &part);
            let start = initial.as_ref().map(|i| i.rows(d, layer, direction, &part));
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
            forward_part(
                &dir,
                part,
                bufs,
                start,
                dest.as_ref().map(|s| (s, direction * h)),
            );
        });
        if let (Some(rng), false) = (dropout.as_deref_mut(), last || masks.is_empty()) {
            let mask = &mut masks[layer * lay.mask..(layer + 1) * lay.mask];
            draw_mask(d.dropout, rng, mask);
            for (y, &m) in current[..lay.layer_out].iter_mut().zip(&*mask) {
                *y *= m;
            }
        }
        if let Some(keep) = keep.as_deref_mut() {
            let [.., hs, cs] = lay.work_rows(0, &(0..d.batch));
            let at = layer * d.batch * h;
            keep[at..at + d.batch * h].copy_from_slice(&work[hs]);
            if d.cell == RnnCell::Lstm {
                let at = state_len + at;
                keep[at..at + d.batch * h].copy_from_slice(&work[cs]);
            }
        }
        // Each sequence's state stopped changing after its last step.
        for direction in 0..dirs {
            let Some(rows) = FinalRows::of(d, layer, direction) else {
                continue;
            };
            let [.., hs, cs] = lay.work_rows(direction, &(0..d.batch));
            for b in 0..d.batch {
                let (h_range, c_range) = rows.ranges(b, h);
                out[h_range].copy_from_slice(&work[hs.start + b * h..hs.start + (b + 1) * h]);
                if let Some(c_range) = c_range {
                    out[c_range].copy_from_slice(&work[cs.start + b * h..cs.start + (b + 1) * h]);
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
/// and leaves their final states in `bufs.h` (and `bufs.c`). It starts from zero states, or
/// from `initial`'s hidden and cell states (`[part, H]` each; the cell states empty for a
/// cell without them).
fn forward_part<F: Float>(
    dir: &Direction<'_, F>,
    part: Range<usize>,
    bufs: ForwardBufs<'_, F>,
    initial: Option<(&[F], &[F])>,
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
    match initial {
        Some((h0, c0)) => {
            hs.copy_from_slice(h0);
            if c0.is_empty() {
                cs.fill(F::ZERO);
            } else {
                cs.copy_from_slice(c0);
            }
        }
        None => {
            hs.fill(F::ZERO);
            cs.fill(F::ZERO);
        }
    }
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
        if s == 0 && initial.is_none() {
            // A zero state's recurrent product is zero.
            step.fill(F::ZERO);
        } else if let Some(w_hh) = &dir.recurrent {
            gemm_packed_b(part.len(), F::ONE, hs, false, w_hh, F::ZERO, step);
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
                RnnCell::RnnTanh | RnnCell::RnnRelu => cell::run(cell::RnnForward {
                    xp: xp_row,
                    hp: hp_row,
                    b_ih: dir.b_ih,
                    b_hh: dir.b_hh,
                    h: h_row,
                    cache: cache_row,
                    relu: d.cell == RnnCell::RnnRelu,
                }),
            }
            if let Some(out) = dest_row(b, t) {
                out.copy_from_slice(h_row);
            }
        }
    }
}
