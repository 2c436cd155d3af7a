//! Backpropagation through time: per direction and batch part, the backward time loop, then
//! that part's share of the weight, bias and input gradients as GEMMs and column sums over
//! its steps, chunk by chunk of rows; the later parts' shares are added to the first's.

use super::forward::initial_rows;
use super::{
    cell, layer_params, Direction, FinalRows, Layout, Regions, RnnCell, RnnDims, RnnInitial,
    RnnOutput,
};
use crate::kernels::gemm;
use crate::kernels::linear::linear_backward_bias;
use crate::kernels::parallel::{self, SharedMut};
use crate::Float;
use std::ops::Range;

/// Backpropagation through time: given `d_out` (the adjoint of `out`, as laid out by
/// [`rnn_forward`](super::rnn_forward)), OVERWRITES every parameter gradient (`param_grads`,
/// in the order and shapes of `params`) and, if `d_x` is given as `(buffer, accumulate)`,
/// writes (or, with `accumulate`, adds) the adjoint of `x` (`[B, T, F]`, zero at padded
/// steps). A frozen layer passes no parameter gradients (an empty `param_grads`): the weight
/// and bias products are skipped and only the input's adjoint is computed.
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
    d_x: Option<(&mut [F], bool)>,
    param_grads: &mut [&mut [F]],
) {
    let none = InitialGrads {
        initial: None,
        d_h: None,
        d_c: None,
    };
    let what = "rnn_backward";
    backward(
        what,
        d,
        x,
        lengths,
        params,
        scratch,
        d_out,
        d_x,
        none,
        param_grads,
    );
}

/// [`rnn_backward`] after [`rnn_forward_from`](super::rnn_forward_from), with the same
/// `initial` states: also writes (or, with the flag, adds) the adjoints of the initial hidden
/// and cell states into `d_h` and `d_c` if given (`[L·D, B, H]` each, as `initial`'s).
///
/// # Panics
/// As [`rnn_backward`], and if `initial`, `d_h` or `d_c` is not `[L·D, B, H]` (or `d_c` is
/// given to a cell without cell states).
#[allow(clippy::too_many_arguments)]
pub fn rnn_backward_from<F: Float>(
    d: &RnnDims,
    x: &[F],
    lengths: Option<&[usize]>,
    params: &[&[F]],
    initial: RnnInitial<'_, F>,
    scratch: &mut [F],
    d_out: &[F],
    d_x: Option<(&mut [F], bool)>,
    d_h: Option<(&mut [F], bool)>,
    d_c: Option<(&mut [F], bool)>,
    param_grads: &mut [&mut [F]],
) {
    let what = "rnn_backward_from";
    d.check_initial(what, &initial);
    for (grad, name) in [(&d_h, "h_0"), (&d_c, "c_0")] {
        if let Some((g, _)) = grad {
            assert_eq!(
                g.len(),
                d.initial_len(),
                "{what}: d_{name} has the wrong length"
            );
        }
    }
    assert!(
        d_c.is_none() || d.cell == RnnCell::Lstm,
        "{what}: only the LSTM has cell states"
    );
    let initial = InitialGrads {
        initial: Some(initial),
        d_h,
        d_c,
    };
    backward(
        what,
        d,
        x,
        lengths,
        params,
        scratch,
        d_out,
        d_x,
        initial,
        param_grads,
    );
}

/// The initial states of a backward pass and where their adjoints go.
struct InitialGrads<'a, F> {
    initial: Option<RnnInitial<'a, F>>,
    d_h: Option<(&'a mut [F], bool)>,
    d_c: Option<(&'a mut [F], bool)>,
}

#[allow(clippy::too_many_arguments)]
fn backward<F: Float>(
    what: &str,
    d: &RnnDims,
    x: &[F],
    lengths: Option<&[usize]>,
    params: &[&[F]],
    scratch: &mut [F],
    d_out: &[F],
    mut d_x: Option<(&mut [F], bool)>,
    initial: InitialGrads<'_, F>,
    param_grads: &mut [&mut [F]],
) {
    d.check(what, x, lengths, params.len());
    d.check_params(what, params);
    // No gradients at all: a frozen layer, which needs only its input's adjoint.
    let trains = !param_grads.is_empty();
    assert!(
        !trains || param_grads.len() == params.len(),
        "{what}: expected {} parameter gradients (or none, for a frozen layer)",
        params.len()
    );
    d.check_params(what, param_grads);
    let lay = Layout::new(d);
    assert!(
        scratch.len() >= lay.total(),
        "{what}: scratch has {} elements, needs {} (RnnDims::scratch_len)",
        scratch.len(),
        lay.total()
    );
    assert_eq!(
        d_out.len(),
        d.out_len(),
        "{what}: d_out has the wrong length"
    );
    if let Some((dx, _)) = d_x.as_ref() {
        assert_eq!(dx.len(), d.input_len(), "{what}: d_x has the wrong length");
    }
    let Regions {
        kept,
        outputs,
        work,
        adjoints,
        packed,
        partials,
        masks,
    } = lay.split(scratch);
    let masks = &*masks;
    let (kept, outputs) = (&*kept, &*outputs);
    let (dirs, g, h, t_len) = (lay.directions, lay.gate_rows, lay.hidden, lay.seq);
    // One set of gate adjoints for both sides of the gates (all but the GRU).
    let one_sided = !d.cell.two_sided();
    let parts = d.batch_parts();
    let InitialGrads {
        initial,
        d_h: mut d_h0,
        d_c: mut d_c0,
    } = initial;
    let d_h0 = d_h0.as_mut().map(|(g, acc)| (SharedMut::new(g), *acc));
    let d_c0 = d_c0.as_mut().map(|(g, acc)| (SharedMut::new(g), *acc));
    for layer in (0..d.layers).rev() {
        let last = layer + 1 == d.layers;
        // Layer l's output adjoint is in buffer l % 2; its input's goes into the other one.
        let (even, odd) = adjoints.split_at_mut(lay.layer_out.min(adjoints.len()));
        let (mine, below) = if layer % 2 == 0 {
            (even, odd)
        } else {
            (odd, even)
        };
        if !last && !masks.is_empty() {
            // The next layer read this layer's outputs through the dropout mask.
            let mask = &masks[layer * lay.mask..(layer + 1) * lay.mask];
            for (a, &m) in mine[..lay.layer_out].iter_mut().zip(mask) {
                *a *= m;
            }
        }
        let dy: Option<&[F]> = match (last, d.output) {
            (false, _) => Some(&*mine),
            (true, RnnOutput::Sequence) => Some(d_out),
            (true, _) => None,
        };
        let input: &[F] = if layer == 0 {
            x
        } else {
            &outputs[(layer - 1) * lay.layer_out..layer * lay.layer_out]
        };
        let in_l = d.layer_input(layer);
        // The adjoint of this layer's input, and whether to add to it.
        let target = if layer == 0 {
            d_x.as_mut()
                .map(|(dx, accumulate)| (SharedMut::new(dx), *accumulate))
        } else {
            Some((SharedMut::new(&mut below[..lay.layer_out]), false))
        };
        let recurrent = lay.pack_recurrent(d, params, layer, false, &mut *packed);
        let work_s = SharedMut::new(&mut *work);
        let partials_s = SharedMut::new(&mut *partials);
        // This layer's gradients, for the first batch part's items to write.
        let first_grad = 4 * layer * dirs;
        let own_grads = if trains {
            &mut param_grads[first_grad..first_grad + 4 * dirs]
        } else {
            &mut []
        };
        let mut layer_grads = own_grads.iter_mut().map(|grad| SharedMut::new(grad));
        let grads: [SharedMut<'_, F>; 8] = std::array::from_fn(|_| {
            layer_grads
                .next()
                .unwrap_or_else(|| SharedMut::new(&mut []))
        });
        let grad_lens = [g * in_l, g * h, g, g];
        parallel::for_each_chunk(dirs * parts, |item, _| {
            let (direction, part_index) = (item / parts, item % parts);
            let [w_ih, w_hh, b_ih, b_hh] = layer_params(d, params, layer, direction);
            let dir = Direction {
                dims: d,
                lengths,
                reverse: direction == 1,
                w_hh,
                recurrent: recurrent[direction],
                b_ih,
                b_hh,
            };
            let part = parallel::chunk_range(d.batch, parts, part_index);
            let (states, cache) = lay.kept_rows(&part);
            let kept_l = &kept[lay.kept_range(layer, direction)];
            let [dgi, dgh, step, dh, dc] = lay.work_rows(direction, &part);
            // SAFETY: each item is claimed once, and each range is this item's own rows of
            // its direction's work area.
            let (dgi, mut dgh, step, dh, dc) = unsafe {
                (
                    work_s.range(dgi),
                    (!one_sided).then(|| work_s.range(dgh)),
                    work_s.range(step),
                    work_s.range(dh),
                    work_s.range(dc),
                )
            };
            let bufs = BackwardBufs {
                states: &kept_l[states.clone()],
                cache: &kept_l[cache],
                dgi: &mut *dgi,
                dgh: dgh.as_deref_mut(),
                step,
                dh,
                dc,
            };
            let col = direction * h;
            let starts = initial.map(|i| i.rows(d, layer, direction, &part));
            let finals = FinalRows::of(d, layer, direction).map(|rows| (d_out, rows));
            backward_part(
                &dir,
                part.clone(),
                bufs,
                starts,
                dy.map(|dy| (dy, col)),
                finals,
            );
            // After the time loop the state adjoints are those of the states it started from.
            let rows = initial_rows(d, layer, direction, &part);
            let [.., dh, dc] = lay.work_rows(direction, &part);
            for (target, from) in [(&d_h0, dh), (&d_c0, dc)] {
                if let Some((target, accumulate)) = target {
                    // SAFETY: this item's rows of the state adjoints, of the initial states'
                    // adjoint (one (layer, direction, part) per item) and of its work area.
                    let (to, from) = unsafe { (target.range(rows.clone()), &*work_s.range(from)) };
                    if *accumulate {
                        for (t, &f) in to.iter_mut().zip(from) {
                            *t += f;
                        }
                    } else {
                        to.copy_from_slice(from);
                    }
                }
            }
            // The part's share of the gradients, while its gate adjoints are still in this
            // core's cache rather than only in the shared one.
            let dgi: &[F] = dgi;
            let dgh: &[F] = dgh.as_deref().unwrap_or(dgi);
            let rows = part.len() * t_len;
            let x_rows = part.start * t_len * in_l..part.end * t_len * in_l;
            // SAFETY: the first part's item of each direction is the only one to take that
            // direction's gradients, and every later part's item takes its own sums.
            let mut param_targets = trains.then(|| unsafe {
                if part_index == 0 {
                    let own = &grads[4 * direction..4 * direction + 4];
                    [0, 1, 2, 3].map(|j| own[j].range(0..grad_lens[j]))
                } else {
                    lay.partial_rows(direction, part_index, in_l)
                        .map(|r| partials_s.range(r))
                }
            });
            let input_rows = &input[x_rows.clone()];
            let states = &kept_l[states];
            // SAFETY: each part's rows of the input adjoint are its own (one direction).
            let mut dx_rows = match (dirs, &target) {
                (1, Some((target, accumulate))) => {
                    Some((unsafe { target.range(x_rows) }, *accumulate))
                }
                _ => None,
            };
            if let (0, Some(targets)) = (rows, param_targets.as_mut()) {
                for grad in targets {
                    grad.fill(F::ZERO);
                }
            }
            // Chunk by chunk of rows, so that each chunk of gate adjoints is read from memory
            // once for the three products and the bias sums that take it.
            let chunk = (CHUNK_ELEMENTS / g.max(1)).max(1);
            for start in (0..rows).step_by(chunk) {
                let r = start..(start + chunk).min(rows);
                let (dgi, dgh) = (&dgi[r.start * g..r.end * g], &dgh[r.start * g..r.end * g]);
                if let Some([d_w_ih, d_w_hh, d_b_ih, d_b_hh]) = param_targets.as_mut() {
                    let more = if start == 0 { F::ZERO } else { F::ONE };
                    let x_c = &input_rows[r.start * in_l..r.end * in_l];
                    gemm(
                        g,
                        r.len(),
                        in_l,
                        F::ONE,
                        dgi,
                        true,
                        x_c,
                        false,
                        more,
                        d_w_ih,
                    );
                    let h_c = &states[r.start * h..r.end * h];
                    gemm(g, r.len(), h, F::ONE, dgh, true, h_c, false, more, d_w_hh);
                    linear_backward_bias(dgi, r.len(), g, d_b_ih, start > 0);
                    if !one_sided {
                        linear_backward_bias(dgh, r.len(), g, d_b_hh, start > 0);
                    }
                }
                if let Some((dx, accumulate)) = dx_rows.as_mut() {
                    let beta = if *accumulate { F::ONE } else { F::ZERO };
                    let dx = &mut dx[r.start * in_l..r.end * in_l];
                    gemm(r.len(), g, in_l, F::ONE, dgi, false, w_ih, false, beta, dx);
                }
            }
        });
        // The later parts' sums, added in order.
        for direction in (0..dirs).filter(|_| trains) {
            let k = first_grad + 4 * direction;
            for part_index in 1..parts {
                let sums = lay.partial_rows(direction, part_index, in_l);
                for (j, sum) in sums.into_iter().enumerate() {
                    if !(one_sided && j == 3) {
                        for (acc, &v) in param_grads[k + j].iter_mut().zip(&partials[sum]) {
                            *acc += v;
                        }
                    }
                }
            }
            if one_sided {
                // Both biases enter the gates the same way.
                let (db_ih, db_hh) = param_grads[k + 2..k + 4].split_at_mut(1);
                db_hh[0].copy_from_slice(db_ih[0]);
            }
        }
        if let (2, Some((target, accumulate))) = (dirs, &target) {
            // Both directions add into the same rows: one item per part.
            let work = &*work;
            parallel::for_each_chunk(parts, |part_index, _| {
                let part = parallel::chunk_range(d.batch, parts, part_index);
                let x_rows = part.start * t_len * in_l..part.end * t_len * in_l;
                // SAFETY: each part's rows of the input adjoint are its own.
                let dx_rows = unsafe { target.range(x_rows) };
                for direction in 0..dirs {
                    let [w_ih, ..] = layer_params(d, params, layer, direction);
                    let dgi = &work[lay.work_rows(direction, &part)[0].clone()];
                    let beta = if *accumulate || direction > 0 {
                        F::ONE
                    } else {
                        F::ZERO
                    };
                    let rows = part.len() * t_len;
                    gemm(
                        rows,
                        g,
                        in_l,
                        F::ONE,
                        dgi,
                        false,
                        w_ih,
                        false,
                        beta,
                        dx_rows,
                    );
                }
            });
        }
    }
}

/// The gate adjoints the gradient products take at a time after a time loop (256 KiB of
/// f32): a chunk stays in the core's L2 cache from the first product that reads it to the
/// last.
pub(super) const CHUNK_ELEMENTS: usize = 1 << 16;

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
/// adjoints (zero at padded steps). With `starts` (the initial hidden and cell states of
/// these sequences, the cells empty if zero) it leaves the adjoints of those states in
/// `bufs.dh` and `bufs.dc`. `dy` is the adjoint of the outputs (`[B, T, D·H]` at the
/// given column), `finals` that of this layer's final states where [`FinalRows`] finds them.
fn backward_part<F: Float>(
    dir: &Direction<'_, F>,
    part: Range<usize>,
    bufs: BackwardBufs<'_, F>,
    starts: Option<(&[F], &[F])>,
    dy: Option<(&[F], usize)>,
    finals: Option<(&[F], FinalRows)>,
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
    match finals {
        Some((f, rows)) => {
            let states = dh
                .chunks_exact_mut(h.max(1))
                .zip(dc.chunks_exact_mut(h.max(1)));
            for (b, (dh_row, dc_row)) in part.clone().zip(states) {
                let (h_range, c_range) = rows.ranges(b, h);
                dh_row.copy_from_slice(&f[h_range]);
                if let Some(c_range) = c_range {
                    dc_row.copy_from_slice(&f[c_range]);
                }
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
                (RnnCell::RnnTanh | RnnCell::RnnRelu, _) => {
                    cell::run(cell::RnnBackward {
                        cache: cache_row,
                        dh: dh_row,
                        dg: step_row,
                        relu: d.cell == RnnCell::RnnRelu,
                    });
                    dgi_row.copy_from_slice(step_row);
                }
                _ => {
                    let c_prev = if s > 0 {
                        let at = (i * t_len + dir.previous_time(t)) * w + 4 * h;
                        Some(&cache[at..at + h])
                    } else {
                        // The cells the sequence started from, if not zero.
                        starts
                            .map(|(_, c0)| c0)
                            .filter(|c0| !c0.is_empty())
                            .map(|c0| &c0[i * h..(i + 1) * h])
                    };
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
        if s == 0 && starts.is_none() {
            // The first step started from the zero state: no adjoint to pass further back.
            continue;
        }
        if let Some(w_hh) = &dir.recurrent {
            gemm::gemm_packed_b(part.len(), F::ONE, step, false, w_hh, F::ONE, dh);
        } else {
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
