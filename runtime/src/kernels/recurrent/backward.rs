//! Backpropagation through time: the backward time loop of each direction, then the weight,
//! bias and input gradients as single GEMMs and column sums over all steps.

use super::{cell, layer_params, Direction, Layout, Regions, RnnCell, RnnDims, RnnOutput};
use crate::kernels::gemm;
use crate::kernels::linear::linear_backward_bias;
use crate::kernels::parallel::{self, SharedMut};
use crate::Float;
use std::ops::Range;

/// Backpropagation through time: given `d_out` (the adjoint of `out`, as laid out by
/// [`rnn_forward`](super::rnn_forward)), OVERWRITES every parameter gradient (`param_grads`,
/// in the order and shapes of `params`) and, if `d_x` is given as `(buffer, accumulate)`,
/// writes (or, with `accumulate`, adds) the adjoint of `x` (`[B, T, F]`, zero at padded
/// steps).
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
        packed,
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
        let recurrent = lay.pack_recurrent(d, params, layer, false, &mut *packed);
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
        if s == 0 {
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
