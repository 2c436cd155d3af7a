use super::*;
use crate::check::numeric_gradient;
use crate::kernels::test_util::{assert_close, check_both_modes, values};

const CELLS: [RnnCell; 4] = [
    RnnCell::Lstm,
    RnnCell::Gru,
    RnnCell::RnnTanh,
    RnnCell::RnnRelu,
];
const OUTPUTS: [RnnOutput; 2] = [RnnOutput::Sequence, RnnOutput::Final];

#[allow(clippy::too_many_arguments)]
fn dims(
    cell: RnnCell,
    batch: usize,
    seq: usize,
    input: usize,
    hidden: usize,
    layers: usize,
    bidirectional: bool,
    output: RnnOutput,
) -> RnnDims {
    RnnDims {
        cell,
        batch,
        seq,
        input,
        hidden,
        layers,
        bidirectional,
        output,
        dropout: 0.0,
    }
}

/// Parameters in `state_dict` order, small enough that the gates stay away from saturation.
fn params_for(d: &RnnDims, seed: f64) -> Vec<Vec<f64>> {
    d.param_shapes()
        .iter()
        .enumerate()
        .map(|(k, (_, shape))| {
            values(shape.iter().product(), seed + 3.1 * k as f64)
                .iter()
                .map(|v| 0.4 * v)
                .collect()
        })
        .collect()
}

fn refs(params: &[Vec<f64>]) -> Vec<&[f64]> {
    params.iter().map(Vec::as_slice).collect()
}

fn sigmoid(v: f64) -> f64 {
    1.0 / (1.0 + (-v).exp())
}

/// PyTorch's `nn.LSTM` / `nn.GRU` written out step by step, one sequence and direction at a
/// time, with packed-sequence semantics for `lengths`.
fn reference(d: &RnnDims, x: &[f64], lengths: Option<&[usize]>, params: &[Vec<f64>]) -> Vec<f64> {
    reference_from(d, x, lengths, params, None)
}

/// [`reference`] from initial hidden and cell states (`[L·D, B, H]` each).
fn reference_from(
    d: &RnnDims,
    x: &[f64],
    lengths: Option<&[usize]>,
    params: &[Vec<f64>],
    initial: Option<(&[f64], &[f64])>,
) -> Vec<f64> {
    let (b_n, t_n, h_n) = (d.batch, d.seq, d.hidden);
    let dirs = d.directions();
    let gh = d.cell.gates() * h_n;
    let mut input = x.to_vec();
    let mut finals = vec![0.0; b_n * dirs * h_n];
    let mut final_cells = vec![0.0; b_n * dirs * h_n];
    let every_width = if d.output.has_cells() { 2 * h_n } else { h_n };
    let mut every = vec![0.0; d.layers * dirs * b_n * every_width];
    for layer in 0..d.layers {
        let in_w = d.layer_input(layer);
        let mut output = vec![0.0; b_n * t_n * dirs * h_n];
        for dir in 0..dirs {
            let k = 4 * (layer * dirs + dir);
            let (w_ih, w_hh, b_ih, b_hh) =
                (&params[k], &params[k + 1], &params[k + 2], &params[k + 3]);
            for b in 0..b_n {
                let len = lengths.map_or(t_n, |l| l[b]);
                let order: Vec<usize> = if dir == 0 {
                    (0..len).collect()
                } else {
                    (0..len).rev().collect()
                };
                let (mut h, mut c) = (vec![0.0; h_n], vec![0.0; h_n]);
                if let Some((h0, c0)) = initial {
                    let at = ((layer * dirs + dir) * b_n + b) * h_n;
                    h.copy_from_slice(&h0[at..at + h_n]);
                    c.copy_from_slice(&c0[at..at + h_n]);
                }
                for t in order {
                    let xt = &input[(b * t_n + t) * in_w..(b * t_n + t + 1) * in_w];
                    let gi: Vec<f64> = (0..gh)
                        .map(|r| {
                            b_ih[r] + (0..in_w).map(|j| w_ih[r * in_w + j] * xt[j]).sum::<f64>()
                        })
                        .collect();
                    let gh_: Vec<f64> = (0..gh)
                        .map(|r| b_hh[r] + (0..h_n).map(|j| w_hh[r * h_n + j] * h[j]).sum::<f64>())
                        .collect();
                    let n = h_n;
                    match d.cell {
                        RnnCell::Lstm => {
                            for j in 0..n {
                                let i = sigmoid(gi[j] + gh_[j]);
                                let f = sigmoid(gi[n + j] + gh_[n + j]);
                                let g = (gi[2 * n + j] + gh_[2 * n + j]).tanh();
                                let o = sigmoid(gi[3 * n + j] + gh_[3 * n + j]);
                                c[j] = f * c[j] + i * g;
                                h[j] = o * c[j].tanh();
                            }
                        }
                        RnnCell::RnnTanh => {
                            for j in 0..n {
                                h[j] = (gi[j] + gh_[j]).tanh();
                            }
                        }
                        RnnCell::RnnRelu => {
                            for j in 0..n {
                                h[j] = (gi[j] + gh_[j]).max(0.0);
                            }
                        }
                        RnnCell::Gru => {
                            for j in 0..n {
                                let r = sigmoid(gi[j] + gh_[j]);
                                let z = sigmoid(gi[n + j] + gh_[n + j]);
                                let cand = (gi[2 * n + j] + r * gh_[2 * n + j]).tanh();
                                h[j] = (1.0 - z) * cand + z * h[j];
                            }
                        }
                    }
                    let at = (b * t_n + t) * dirs * h_n + dir * h_n;
                    output[at..at + h_n].copy_from_slice(&h);
                }
                let at = b * dirs * h_n + dir * h_n;
                finals[at..at + h_n].copy_from_slice(&h);
                final_cells[at..at + h_n].copy_from_slice(&c);
                let at = ((layer * dirs + dir) * b_n + b) * every_width;
                every[at..at + h_n].copy_from_slice(&h);
                if every_width > h_n {
                    every[at + h_n..at + 2 * h_n].copy_from_slice(&c);
                }
            }
        }
        input = output;
    }
    match d.output {
        RnnOutput::Sequence => input,
        RnnOutput::Final => finals,
        RnnOutput::EveryLayer { .. } => every,
        RnnOutput::FinalWithCells => {
            // Row by row: the hidden states, then the cells.
            let row = dirs * h_n;
            let halves = finals.chunks_exact(row).zip(final_cells.chunks_exact(row));
            halves
                .flat_map(|(h, c)| h.iter().chain(c))
                .copied()
                .collect()
        }
    }
}

/// The kernel's forward with NaN-filled scratch and output, returning both.
fn forward(
    d: &RnnDims,
    x: &[f64],
    lengths: Option<&[usize]>,
    params: &[Vec<f64>],
) -> (Vec<f64>, Vec<f64>) {
    let mut scratch = vec![f64::NAN; d.scratch_len()];
    let mut out = vec![f64::NAN; d.out_len()];
    rnn_forward(d, x, lengths, &refs(params), &mut scratch, &mut out);
    (out, scratch)
}

/// The kernel's backward after a forward that left `scratch`, for the output adjoint `r`:
/// every parameter's gradient and the input's.
fn gradients(
    d: &RnnDims,
    x: &[f64],
    lengths: Option<&[usize]>,
    params: &[Vec<f64>],
    scratch: &mut [f64],
    r: &[f64],
) -> (Vec<Vec<f64>>, Vec<f64>) {
    let mut grads: Vec<Vec<f64>> = params.iter().map(|p| vec![f64::NAN; p.len()]).collect();
    let mut grad_refs: Vec<&mut [f64]> = grads.iter_mut().map(Vec::as_mut_slice).collect();
    let mut dx = vec![f64::NAN; x.len()];
    let dx_target = Some((&mut dx[..], false));
    rnn_backward(
        d,
        x,
        lengths,
        &refs(params),
        scratch,
        r,
        dx_target,
        &mut grad_refs,
    );
    (grads, dx)
}

/// L = Σ r ⊙ y, whose gradient with respect to y is r.
fn weighted(y: &[f64], r: &[f64]) -> f64 {
    y.iter().zip(r).map(|(a, b)| a * b).sum()
}

/// Every combination of cell, depth, directions, lengths and output mode, on B = 3, T = 4
/// (lengths include 1 and T).
fn small_configs() -> Vec<(RnnDims, Option<Vec<usize>>)> {
    let mut all = Vec::new();
    for cell in CELLS {
        for layers in 1..=3 {
            for bidirectional in [false, true] {
                for output in OUTPUTS {
                    for lengths in [None, Some(vec![4, 1, 3])] {
                        let d = dims(cell, 3, 4, 3, 2, layers, bidirectional, output);
                        all.push((d, lengths));
                    }
                }
            }
        }
    }
    all
}

#[test]
fn forward_matches_reference() {
    for (d, lengths) in small_configs() {
        let x = values(d.input_len(), 1.0);
        let params = params_for(&d, 2.0);
        let (out, _) = forward(&d, &x, lengths.as_deref(), &params);
        let want = reference(&d, &x, lengths.as_deref(), &params);
        assert_close(&out, &want, 1e-12, 1e-14, &format!("{d:?} {lengths:?}"));
    }
}

#[test]
fn padded_inputs_have_no_effect() {
    for cell in CELLS {
        let d = dims(cell, 3, 4, 3, 2, 2, true, RnnOutput::Sequence);
        let lengths = [2, 4, 1];
        let params = params_for(&d, 5.0);
        let mut x = values(d.input_len(), 1.0);
        let (out, _) = forward(&d, &x, Some(&lengths), &params);
        for (b, &len) in lengths.iter().enumerate() {
            x[(b * 4 + len) * 3..(b + 1) * 4 * 3].fill(123.0);
        }
        let (again, _) = forward(&d, &x, Some(&lengths), &params);
        assert_eq!(out, again);
        // Outputs at padded steps are zero.
        for (b, &len) in lengths.iter().enumerate() {
            assert!(out[(b * 4 + len) * 4..(b + 1) * 4 * 4]
                .iter()
                .all(|&v| v == 0.0));
        }
    }
}

/// Checks every parameter gradient and the input gradient (both modes) against central
/// differences of the reference.
fn check_backward(d: &RnnDims, lengths: Option<&[usize]>) {
    let what = format!("{d:?} {lengths:?}");
    let x = values(d.input_len(), 1.0);
    let params = params_for(d, 2.0);
    let r = values(d.out_len(), 7.0);
    let (_, mut scratch) = forward(d, &x, lengths, &params);
    let mut grads: Vec<Vec<f64>> = params.iter().map(|p| vec![f64::NAN; p.len()]).collect();
    let backward = |scratch: &mut [f64], grads: &mut [Vec<f64>], dx: Option<(&mut [f64], bool)>| {
        let mut grad_refs: Vec<&mut [f64]> = grads.iter_mut().map(Vec::as_mut_slice).collect();
        rnn_backward(
            d,
            &x,
            lengths,
            &refs(&params),
            scratch,
            &r,
            dx,
            &mut grad_refs,
        );
    };
    backward(&mut scratch, &mut grads, None);
    for (k, (name, _)) in d.param_shapes().iter().enumerate() {
        let mut p = params[k].clone();
        let num = numeric_gradient(
            |p| {
                let mut ps = params.clone();
                ps[k] = p.to_vec();
                weighted(&reference(d, &x, lengths, &ps), &r)
            },
            &mut p,
            1e-6,
        );
        assert_close(&grads[k], &num, 1e-6, 1e-8, &format!("{what} d{name}"));
    }
    let num_x = numeric_gradient(
        |x| weighted(&reference(d, x, lengths, &params), &r),
        &mut x.clone(),
        1e-6,
    );
    let first = grads.clone();
    check_both_modes(&num_x, 1e-6, 1e-8, &format!("{what} dx"), |dx, acc| {
        backward(&mut scratch, &mut grads, Some((dx, acc)));
        // The parameter gradients are overwritten, never accumulated, and the backward
        // leaves the forward's state as it was: every run gives the same bits.
        assert_eq!(grads, first);
        if !acc {
            if let Some(lengths) = lengths {
                for (b, &len) in lengths.iter().enumerate() {
                    let padded = &dx[(b * d.seq + len) * d.input..(b + 1) * d.seq * d.input];
                    assert!(padded.iter().all(|&v| v == 0.0), "{what}: padded dx");
                }
            }
        }
    });
}

#[test]
fn backward_matches_finite_differences() {
    for (d, lengths) in small_configs() {
        check_backward(&d, lengths.as_deref());
    }
}

/// A batch of 16 or more runs the time loop in two parts.
#[test]
fn split_batch_matches_reference() {
    let lengths: Vec<usize> = (0..17).map(|b| 1 + (b * 7) % 3).collect();
    for cell in CELLS {
        for output in OUTPUTS {
            for bidirectional in [false, true] {
                let d = dims(cell, 17, 3, 2, 3, 2, bidirectional, output);
                assert_eq!(d.batch_parts(), 2);
                let x = values(d.input_len(), 1.0);
                let params = params_for(&d, 2.0);
                for lengths in [None, Some(&lengths[..])] {
                    let (out, _) = forward(&d, &x, lengths, &params);
                    let want = reference(&d, &x, lengths, &params);
                    assert_close(&out, &want, 1e-12, 1e-14, &format!("{d:?}"));
                    check_backward(&d, lengths);
                }
            }
        }
    }
}

/// A frozen layer (no parameter gradients) gives its input the same adjoint, to the bit, as
/// one that takes its gradients too: every cell, stacked and bidirectional, padded, over a
/// batch split between the threads and on one long enough for chunked products.
#[test]
fn frozen_layers_pass_the_same_input_gradient() {
    let mut configs = small_configs();
    let lengths: Vec<usize> = (0..17).map(|b| 1 + (b * 7) % 3).collect();
    for cell in CELLS {
        configs.push((
            dims(cell, 17, 3, 2, 3, 2, true, RnnOutput::Sequence),
            Some(lengths.clone()),
        ));
        configs.push((dims(cell, 16, 90, 3, 48, 1, false, RnnOutput::Final), None));
    }
    for (d, lengths) in configs {
        let x = values(d.input_len(), 1.0);
        let params = params_for(&d, 2.0);
        let (_, scratch) = forward(&d, &x, lengths.as_deref(), &params);
        let r = values(d.out_len(), 7.0);
        let (_, trained) = gradients(
            &d,
            &x,
            lengths.as_deref(),
            &params,
            &mut scratch.clone(),
            &r,
        );
        let mut frozen = vec![f64::NAN; x.len()];
        rnn_backward(
            &d,
            &x,
            lengths.as_deref(),
            &refs(&params),
            &mut scratch.clone(),
            &r,
            Some((&mut frozen[..], false)),
            &mut [],
        );
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&trained), bits(&frozen), "{d:?} {lengths:?}");
    }
}

/// `v` scaled to length 1.
fn unit(v: Vec<f64>) -> Vec<f64> {
    let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
    v.iter().map(|a| a / norm).collect()
}

/// Parts long enough that the gradient products after the time loop run chunk by chunk of
/// rows: each parameter's gradient and the input's against the directional derivative of
/// the forward along a fixed direction (every element's finite difference would take
/// minutes at this size).
#[test]
fn chunked_gradient_products_match_directional_derivatives() {
    let (batch, seq) = (16, 90);
    let lengths: Vec<usize> = (0..batch).map(|b| seq - (b * 13) % 40).collect();
    // Not the relu RNN: over this many units some pre-activations sit within a step of the
    // kink at 0, where central differences are no derivative. The chunked products are the
    // same code for it as for the tanh RNN (one block of gate adjoints), which runs here; its
    // own step is checked element by element on the small configurations above.
    for cell in CELLS.into_iter().filter(|&c| c != RnnCell::RnnRelu) {
        // A plain RNN's one gate block needs a wider state for chunks to form.
        let hidden = if cell.gates() == 1 { 160 } else { 48 };
        for bidirectional in [false, true] {
            let d = dims(
                cell,
                batch,
                seq,
                3,
                hidden,
                2,
                bidirectional,
                RnnOutput::Sequence,
            );
            let part_rows = batch / d.batch_parts() * seq;
            assert!(part_rows * cell.gates() * hidden > backward::CHUNK_ELEMENTS);
            let x = values(d.input_len(), 1.0);
            let mut params = params_for(&d, 2.0);
            if cell.gates() == 1 {
                // Ungated, 160 wide: weights a tenth as large keep the recurrence contracting
                // over 90 steps (as trained RNNs do); larger ones make it chaotic, where no
                // finite difference is a derivative.
                params.iter_mut().flatten().for_each(|p| *p *= 0.1);
            }
            let params = params;
            let r = values(d.out_len(), 7.0);
            let (_, mut scratch) = forward(&d, &x, Some(&lengths), &params);
            let (grads, dx) = gradients(&d, &x, Some(&lengths), &params, &mut scratch, &r);
            // The kernel's own forward, which the tests above hold to the reference: at this
            // size the reference would take most of the test's time.
            let loss = |x: &[f64], params: &[Vec<f64>]| {
                weighted(&forward(&d, x, Some(&lengths), params).0, &r)
            };
            // Central differences at h and h/2 along a unit direction, combined so that their
            // h² errors cancel (Richardson): they agree with the gradient to 1e-7 here, a
            // dropped or doubled chunk would be off by far more.
            let along = |v: &[f64], grad: &[f64], shifted: &dyn Fn(f64) -> f64, what: &str| {
                let central = |h: f64| (shifted(h) - shifted(-h)) / (2.0 * h);
                let want = (4.0 * central(5e-4) - central(1e-3)) / 3.0;
                let got: f64 = grad.iter().zip(v).map(|(g, v)| g * v).sum();
                assert!(
                    (got - want).abs() <= 1e-6 * (1.0 + want.abs()),
                    "{d:?} {what}: {got} against {want}"
                );
            };
            for (k, (name, _)) in d.param_shapes().iter().enumerate() {
                let v = unit(values(params[k].len(), 11.0 + k as f64));
                let shifted = |e: f64| {
                    let mut ps = params.clone();
                    for (p, v) in ps[k].iter_mut().zip(&v) {
                        *p += e * v;
                    }
                    loss(&x, &ps)
                };
                along(&v, &grads[k], &shifted, name);
            }
            let u = unit(values(x.len(), 5.0));
            let shifted = |e: f64| {
                let xs: Vec<f64> = x.iter().zip(&u).map(|(x, u)| x + e * u).collect();
                loss(&xs, &params)
            };
            along(&u, &dx, &shifted, "x");
        }
    }
}

#[test]
fn forward_f32_matches_f64() {
    // 3 sequences, and 9: from 8 on the recurrent weights are packed once per pass.
    for (cell, batch) in CELLS.into_iter().flat_map(|c| [(c, 3), (c, 9)]) {
        let d = dims(cell, batch, 5, 4, 6, 2, true, RnnOutput::Sequence);
        let lengths: Vec<usize> = (0..batch).map(|b| [5, 2, 4][b % 3]).collect();
        let x = values(d.input_len(), 1.0);
        let params = params_for(&d, 2.0);
        let f = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<f32>>();
        let params32: Vec<Vec<f32>> = params.iter().map(|p| f(p)).collect();
        let refs32: Vec<&[f32]> = params32.iter().map(Vec::as_slice).collect();
        let mut scratch = vec![f32::NAN; d.scratch_len()];
        let mut out = vec![f32::NAN; d.out_len()];
        rnn_forward(&d, &f(&x), Some(&lengths), &refs32, &mut scratch, &mut out);
        let out: Vec<f64> = out.iter().map(|&v| v as f64).collect();
        let want = reference(&d, &x, Some(&lengths), &params);
        assert_close(&out, &want, 1e-5, 1e-6, "f32 forward");

        // The f32 backward against the f64 kernel's.
        let r = values(d.out_len(), 7.0);
        let (_, mut scratch64) = forward(&d, &x, Some(&lengths), &params);
        let mut g64: Vec<Vec<f64>> = params.iter().map(|p| vec![0.0; p.len()]).collect();
        let mut dx64 = vec![0.0; x.len()];
        let mut refs64: Vec<&mut [f64]> = g64.iter_mut().map(Vec::as_mut_slice).collect();
        let p64 = refs(&params);
        let (x32, r32) = (f(&x), f(&r));
        rnn_backward(
            &d,
            &x,
            Some(&lengths),
            &p64,
            &mut scratch64,
            &r,
            Some((&mut dx64, false)),
            &mut refs64,
        );
        let mut g32: Vec<Vec<f32>> = params.iter().map(|p| vec![0.0; p.len()]).collect();
        let mut dx32 = vec![0.0f32; x.len()];
        let mut mut32: Vec<&mut [f32]> = g32.iter_mut().map(Vec::as_mut_slice).collect();
        rnn_backward(
            &d,
            &x32,
            Some(&lengths),
            &refs32,
            &mut scratch,
            &r32,
            Some((&mut dx32, false)),
            &mut mut32,
        );
        let widen = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<f64>>();
        for (k, (a, b)) in g32.iter().zip(&g64).enumerate() {
            assert_close(&widen(a), b, 1e-4, 1e-5, &format!("f32 grad {k}"));
        }
        assert_close(&widen(&dx32), &dx64, 1e-4, 1e-5, "f32 dx");
    }
}

#[test]
fn scratch_len_formula() {
    let d = dims(RnnCell::Lstm, 2, 3, 5, 4, 3, true, RnnOutput::Final);
    let (r, gh, w) = (6, 16, 6 * 4);
    let kept = 3 * 2 * r * (4 + w);
    let outputs = 2 * r * 2 * 4;
    let work = 2 * (r * gh + 2 * (gh + 2 * 4));
    let adjoints = 2 * r * 2 * 4;
    assert_eq!(d.scratch_len(), kept + outputs + work + adjoints);
    let gru = RnnDims {
        cell: RnnCell::Gru,
        layers: 1,
        bidirectional: false,
        ..d
    };
    let (gh, w) = (12, 4 * 4);
    assert_eq!(
        gru.scratch_len(),
        r * (4 + w) + 2 * r * gh + 2 * (gh + 2 * 4)
    );
    // From 8 sequences on, the recurrent weights packed for the GEMM: 5 × 32 (`Wᵀ`, G·H = 20
    // columns padded to 32) against 20 × 32 (`W`, H = 5 columns padded).
    let d = dims(RnnCell::Lstm, 8, 3, 5, 5, 1, true, RnnOutput::Final);
    let (r, gh, w) = (24, 20, 6 * 5);
    let plain = 2 * r * (5 + w) + 2 * (r * gh + 8 * (gh + 2 * 5));
    assert_eq!(d.scratch_len(), plain + 2 * (20 * 32));
    // From 16 sequences on, the second batch part's weight and bias gradient sums per
    // direction: G·H·(I + H + 2), I = 8 the widest layer input.
    let d = dims(RnnCell::Gru, 16, 2, 5, 4, 2, true, RnnOutput::Final);
    let (r, gh, w) = (32, 12, 4 * 4);
    let kept = 2 * 2 * r * (4 + w);
    let outputs = r * 2 * 4;
    let work = 2 * (2 * r * gh + 16 * (gh + 2 * 4));
    let adjoints = r * 2 * 4;
    let packed = 2 * (12 * 32);
    let partials = 2 * gh * (8 + 4 + 2);
    assert_eq!(
        d.scratch_len(),
        kept + outputs + work + adjoints + packed + partials
    );
}

/// Forward + backward at benchmark W7's shape (B = 64, T = 48, F = 128, H = 128, one layer,
/// unidirectional, final state), f32, without the input's gradient (W7's input is the data).
#[test]
#[ignore]
fn timing_w7() {
    use std::time::Instant;
    for cell in CELLS {
        let d = dims(cell, 64, 48, 128, 128, 1, false, RnnOutput::Final);
        let x: Vec<f32> = values(d.input_len(), 1.0)
            .iter()
            .map(|&v| v as f32)
            .collect();
        let params: Vec<Vec<f32>> = params_for(&d, 2.0)
            .iter()
            .map(|p| p.iter().map(|&v| v as f32 * 0.2).collect())
            .collect();
        let refs: Vec<&[f32]> = params.iter().map(Vec::as_slice).collect();
        let mut grads: Vec<Vec<f32>> = params.iter().map(|p| vec![0.0; p.len()]).collect();
        let mut scratch = vec![0.0f32; d.scratch_len()];
        let mut out = vec![0.0f32; d.out_len()];
        let d_out: Vec<f32> = values(d.out_len(), 3.0).iter().map(|&v| v as f32).collect();
        let (mut fwd, mut bwd) = (Vec::new(), Vec::new());
        for _ in 0..50 {
            let start = Instant::now();
            rnn_forward(&d, &x, None, &refs, &mut scratch, &mut out);
            let mid = Instant::now();
            let mut g: Vec<&mut [f32]> = grads.iter_mut().map(Vec::as_mut_slice).collect();
            rnn_backward(&d, &x, None, &refs, &mut scratch, &d_out, None, &mut g);
            fwd.push((mid - start).as_secs_f64() * 1e3);
            bwd.push(mid.elapsed().as_secs_f64() * 1e3);
        }
        // The median, and the best run (the machine may be shared).
        let stats = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            (v[v.len() / 2], v[0])
        };
        let ((f, f_min), (b, b_min)) = (stats(&mut fwd), stats(&mut bwd));
        println!(
            "W7 {cell:?} ({} threads): forward {f:.3} ms (best {f_min:.3}), backward {b:.3} ms \
             (best {b_min:.3}), total {:.3} ms (best {:.3})",
            crate::kernels::parallel::threads(),
            f + b,
            f_min + b_min
        );
    }
}

#[test]
fn empty_sizes() {
    // Each of B, T, F, H zero in turn: no panic, and the reference's results.
    for cell in CELLS {
        for output in OUTPUTS {
            for (batch, seq, input, hidden) in
                [(0, 3, 2, 2), (2, 0, 2, 2), (2, 3, 0, 2), (2, 3, 2, 0)]
            {
                let d = dims(cell, batch, seq, input, hidden, 2, true, output);
                let params = params_for(&d, 1.0);
                let x = values(d.input_len(), 1.0);
                let (out, mut scratch) = forward(&d, &x, None, &params);
                let want = reference(&d, &x, None, &params);
                assert_close(&out, &want, 1e-12, 1e-14, &format!("{d:?}"));
                let mut grads: Vec<Vec<f64>> =
                    params.iter().map(|p| vec![f64::NAN; p.len()]).collect();
                let mut grad_refs: Vec<&mut [f64]> =
                    grads.iter_mut().map(Vec::as_mut_slice).collect();
                let mut dx = vec![f64::NAN; x.len()];
                let d_out = values(d.out_len(), 2.0);
                let p = refs(&params);
                rnn_backward(
                    &d,
                    &x,
                    None,
                    &p,
                    &mut scratch,
                    &d_out,
                    Some((&mut dx, false)),
                    &mut grad_refs,
                );
                // Without sequences, steps or hidden units there is nothing to learn from
                // (without input features, the biases still learn).
                let all_zero = grads.iter().flatten().all(|&v| v == 0.0);
                assert_eq!(all_zero, input > 0, "{d:?}");
                assert!(grads.iter().flatten().all(|v| v.is_finite()), "{d:?}");
            }
        }
    }
}

/// `x[:, t0..t1, :]` of a `[B, T, F]` batch.
fn positions(x: &[f64], d: &RnnDims, t0: usize, t1: usize) -> Vec<f64> {
    let f = d.input;
    (0..d.batch)
        .flat_map(|b| &x[(b * d.seq + t0) * f..(b * d.seq + t1) * f])
        .copied()
        .collect()
}

/// Decodes `x` (the whole sequences of `whole`) in the pieces between `cuts`: `step(d, xs,
/// offset, scratch, out)` runs one piece of `d.seq` positions after `offset` earlier ones; the
/// pieces' outputs are put back in their places in the whole sequences' layout.
fn decode_in_pieces(
    whole: &RnnDims,
    x: &[f64],
    cuts: &[usize],
    mut step: impl FnMut(&RnnDims, &[f64], usize, &mut [f64], &mut [f64]),
) -> Vec<f64> {
    let h = whole.hidden;
    let mut got = vec![f64::NAN; whole.out_len()];
    for piece in cuts.windows(2) {
        let (t0, t1) = (piece[0], piece[1]);
        let d = RnnDims {
            seq: t1 - t0,
            ..*whole
        };
        let mut scratch = vec![f64::NAN; d.scratch_len()];
        let mut out = vec![f64::NAN; d.out_len()];
        step(&d, &positions(x, whole, t0, t1), t0, &mut scratch, &mut out);
        for b in 0..whole.batch {
            let at = (b * whole.seq + t0) * h;
            got[at..at + d.seq * h].copy_from_slice(&out[b * d.seq * h..][..d.seq * h]);
        }
    }
    got
}

/// A sequence decoded in pieces through an [`RnnState`] gives the whole sequence's outputs,
/// for every cell, one and two layers, and batches of one and two parts (prepacked weights).
#[test]
fn decoding_in_pieces_gives_the_whole_sequences_outputs() {
    for cell in CELLS {
        for (batch, layers) in [(1, 1), (3, 2), (20, 1), (17, 2)] {
            let whole = dims(cell, batch, 7, 3, 5, layers, false, RnnOutput::Sequence);
            let params = params_for(&whole, 0.7);
            let x = values(whole.input_len(), 1.9);
            let (want, _) = forward(&whole, &x, None, &params);
            let mut state = RnnState::new(cell, batch, 5, layers);
            let p = refs(&params);
            // Two sequences one after the other: the second starts again at offset 0.
            for cuts in [[0, 3, 4, 7], [0, 1, 2, 7]] {
                let got = decode_in_pieces(&whole, &x, &cuts, |d, xs, t0, scratch, out| {
                    rnn_forward_cached(d, xs, &p, scratch, &mut state, t0, out);
                    if t0 == 3 {
                        // As after a failed model pass: the same positions again, from the
                        // same states, with another piece's outputs in between.
                        let mut other = vec![0.0; out.len()];
                        rnn_forward_cached(d, xs, &p, scratch, &mut state, t0, &mut other);
                        assert_eq!(other, out, "{cell:?}: the repeated call differs");
                    }
                });
                let what = format!("{cell:?} B={batch} L={layers}");
                assert_close(&got, &want, 1e-12, 1e-13, &what);
            }
        }
    }
}

/// Sequences started from given states (a decoder after its encoder), decoded in pieces:
/// `rnn_forward_from`'s outputs on the whole sequences, the given states read only at offset
/// 0 (later calls continue from the cache, whatever `initial` then holds).
#[test]
fn decoding_from_given_states_in_pieces_gives_the_whole_sequences_outputs() {
    for cell in CELLS {
        for (batch, layers) in [(1, 1), (3, 2), (17, 2)] {
            let whole = dims(cell, batch, 7, 3, 5, layers, false, RnnOutput::Sequence);
            let params = params_for(&whole, 0.9);
            let x = values(whole.input_len(), 1.3);
            let lstm = cell == RnnCell::Lstm;
            let (h0, c0) = (
                values(whole.initial_len(), 2.5),
                values(whole.initial_len(), 3.5),
            );
            let garbage = vec![f64::NAN; whole.initial_len()];
            // The states given at offset 0, or NaN ones the later calls must not read.
            let states = |given: bool| {
                let (h, c) = if given {
                    (&h0, &c0)
                } else {
                    (&garbage, &garbage)
                };
                RnnInitial {
                    h: &h[..],
                    c: lstm.then_some(&c[..]),
                }
            };
            let mut want = vec![f64::NAN; whole.out_len()];
            let mut scratch = vec![f64::NAN; whole.scratch_len()];
            let rng: Option<&mut rand::rngs::StdRng> = None;
            let p = refs(&params);
            rnn_forward_from(
                &whole,
                &x,
                None,
                &p,
                states(true),
                rng,
                &mut scratch,
                &mut want,
            );
            let mut state = RnnState::new(cell, batch, 5, layers);
            for cuts in [[0, 3, 4, 7], [0, 1, 2, 7]] {
                let got = decode_in_pieces(&whole, &x, &cuts, |d, xs, t0, scratch, out| {
                    let initial = states(t0 == 0);
                    rnn_forward_cached_from(d, xs, &p, initial, scratch, &mut state, t0, out);
                });
                let what = format!("{cell:?} B={batch} L={layers}");
                assert_close(&got, &want, 1e-12, 1e-13, &what);
            }
        }
    }
}

#[test]
#[should_panic(expected = "has not seen 2 positions")]
fn decoding_from_positions_the_state_has_not_seen_is_refused() {
    let d = dims(RnnCell::Gru, 1, 1, 1, 1, 1, false, RnnOutput::Sequence);
    let params = params_for(&d, 0.1);
    let mut state = RnnState::new(RnnCell::Gru, 1, 1, 1);
    let mut scratch = vec![0.0; d.scratch_len()];
    let mut out = [0.0];
    rnn_forward_cached(
        &d,
        &[1.0],
        &refs(&params),
        &mut scratch,
        &mut state,
        0,
        &mut out,
    );
    rnn_forward_cached(
        &d,
        &[1.0],
        &refs(&params),
        &mut scratch,
        &mut state,
        2,
        &mut out,
    );
}

/// The training forward with dropout from a generator seeded with `seed`: outputs and scratch.
fn forward_train(
    d: &RnnDims,
    x: &[f64],
    lengths: Option<&[usize]>,
    params: &[Vec<f64>],
    seed: u64,
) -> (Vec<f64>, Vec<f64>) {
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut scratch = vec![f64::NAN; d.scratch_len()];
    let mut out = vec![f64::NAN; d.out_len()];
    rnn_forward_train(
        d,
        x,
        lengths,
        &refs(params),
        &mut rng,
        &mut scratch,
        &mut out,
    );
    (out, scratch)
}

/// Dropout between layers is the layers run one at a time, each inner layer's outputs
/// multiplied by a mask drawn as `dropout_forward` draws it, from the same generator in turn.
#[test]
fn dropout_between_layers_is_the_layers_run_one_by_one() {
    use crate::kernels::dropout::dropout_forward;
    use rand::SeedableRng;
    for cell in CELLS {
        for (layers, bidirectional, output) in [
            (2, false, RnnOutput::Sequence),
            (2, true, RnnOutput::Sequence),
            (3, true, RnnOutput::Final),
        ] {
            let d = RnnDims {
                dropout: 0.4,
                ..dims(cell, 3, 4, 3, 2, layers, bidirectional, output)
            };
            let lengths = [4, 1, 3];
            let params = params_for(&d, 3.0);
            let x = values(d.input_len(), 0.5);
            let (got, _) = forward_train(&d, &x, Some(&lengths), &params, 17);
            let mut rng = rand::rngs::StdRng::seed_from_u64(17);
            let mut input = x.clone();
            let per_layer = 4 * d.directions();
            for layer in 0..layers {
                let last = layer + 1 == layers;
                let one = RnnDims {
                    input: d.layer_input(layer),
                    layers: 1,
                    output: if last { output } else { RnnOutput::Sequence },
                    dropout: 0.0,
                    ..d
                };
                let ps = params[layer * per_layer..(layer + 1) * per_layer].to_vec();
                let (mut y, _) = forward(&one, &input, Some(&lengths), &ps);
                if !last {
                    let mut mask = vec![0.0; y.len()];
                    let kept = y.clone();
                    dropout_forward(&kept, 0.4, &mut rng, &mut mask, &mut y);
                    assert!(mask.contains(&0.0), "some outputs dropped");
                }
                input = y;
            }
            assert_close(&got, &input, 1e-12, 1e-14, &format!("{cell:?} L={layers}"));
            // Inference has no dropout.
            let (plain, _) = forward(&d, &x, Some(&lengths), &params);
            assert_ne!(plain, got);
            let no_dropout = RnnDims { dropout: 0.0, ..d };
            assert_eq!(forward(&no_dropout, &x, Some(&lengths), &params).0, plain);
        }
    }
}

/// With dropout, the backward's gradients are those of the training forward with the same
/// masks (a fixed seed), by central differences.
#[test]
fn backward_through_dropout_matches_finite_differences() {
    for cell in CELLS {
        let d = RnnDims {
            dropout: 0.5,
            ..dims(cell, 3, 4, 3, 2, 3, true, RnnOutput::Sequence)
        };
        let lengths = [4, 2, 3];
        let x = values(d.input_len(), 1.0);
        let params = params_for(&d, 2.0);
        let r = values(d.out_len(), 7.0);
        let loss = |x: &[f64], ps: &[Vec<f64>]| {
            weighted(&forward_train(&d, x, Some(&lengths), ps, 5).0, &r)
        };
        let (_, mut scratch) = forward_train(&d, &x, Some(&lengths), &params, 5);
        let (grads, dx) = gradients(&d, &x, Some(&lengths), &params, &mut scratch, &r);
        for (k, (name, _)) in d.param_shapes().iter().enumerate() {
            let num = numeric_gradient(
                |p| {
                    let mut ps = params.clone();
                    ps[k] = p.to_vec();
                    loss(&x, &ps)
                },
                &mut params[k].clone(),
                1e-6,
            );
            assert_close(&grads[k], &num, 1e-6, 1e-8, &format!("{cell:?} d{name}"));
        }
        let num_x = numeric_gradient(|x| loss(x, &params), &mut x.clone(), 1e-6);
        assert_close(&dx, &num_x, 1e-6, 1e-8, &format!("{cell:?} dx"));
    }
}

/// From initial states: the outputs are the reference's, and the adjoints of the initial
/// hidden and cell states (written and added), the weights' and the input's match central
/// differences, for every cell, with lengths and both directions over two layers.
#[test]
fn initial_states_and_their_adjoints() {
    for cell in CELLS {
        for (layers, bidirectional, output, lengths) in [
            (1, false, RnnOutput::Sequence, None),
            (2, true, RnnOutput::Final, Some(vec![4, 1, 3])),
            (2, true, RnnOutput::Sequence, Some(vec![2, 4, 3])),
        ] {
            let d = dims(cell, 3, 4, 3, 2, layers, bidirectional, output);
            let what = format!("{cell:?} L={layers} D={}", d.directions());
            let lengths = lengths.as_deref();
            let params = params_for(&d, 4.0);
            let x = values(d.input_len(), 1.5);
            let h0 = values(d.initial_len(), 2.5);
            let lstm = cell == RnnCell::Lstm;
            let zeros = vec![0.0; d.initial_len()];
            let c0 = if lstm {
                values(d.initial_len(), 3.5)
            } else {
                zeros.clone()
            };
            let run = |x: &[f64], ps: &[Vec<f64>], h0: &[f64], c0: &[f64]| {
                let initial = RnnInitial {
                    h: h0,
                    c: lstm.then_some(c0),
                };
                let mut scratch = vec![f64::NAN; d.scratch_len()];
                let mut out = vec![f64::NAN; d.out_len()];
                let rng: Option<&mut rand::rngs::StdRng> = None;
                let p = refs(ps);
                rnn_forward_from(&d, x, lengths, &p, initial, rng, &mut scratch, &mut out);
                (out, scratch)
            };
            let (out, mut scratch) = run(&x, &params, &h0, &c0);
            let want = reference_from(&d, &x, lengths, &params, Some((&h0, &c0)));
            assert_close(&out, &want, 1e-12, 1e-14, &format!("{what}: outputs"));
            assert_ne!(out, reference(&d, &x, lengths, &params), "{what}");

            let r = values(d.out_len(), 7.0);
            let loss = |x: &[f64], ps: &[Vec<f64>], h0: &[f64], c0: &[f64]| {
                weighted(&run(x, ps, h0, c0).0, &r)
            };
            let mut grads: Vec<Vec<f64>> = params.iter().map(|p| vec![f64::NAN; p.len()]).collect();
            let mut grad_refs: Vec<&mut [f64]> = grads.iter_mut().map(Vec::as_mut_slice).collect();
            let (mut dx, mut dh0, mut dc0) = (
                vec![f64::NAN; x.len()],
                vec![1.0; h0.len()],
                vec![f64::NAN; c0.len()],
            );
            let initial = RnnInitial {
                h: &h0,
                c: lstm.then_some(&c0[..]),
            };
            rnn_backward_from(
                &d,
                &x,
                lengths,
                &refs(&params),
                initial,
                &mut scratch,
                &r,
                Some((&mut dx, false)),
                Some((&mut dh0, true)),
                lstm.then_some((&mut dc0[..], false)),
                &mut grad_refs,
            );
            for (k, (name, _)) in d.param_shapes().iter().enumerate() {
                let num = numeric_gradient(
                    |p| {
                        let mut ps = params.clone();
                        ps[k] = p.to_vec();
                        loss(&x, &ps, &h0, &c0)
                    },
                    &mut params[k].clone(),
                    1e-6,
                );
                assert_close(&grads[k], &num, 1e-6, 1e-8, &format!("{what}: d{name}"));
            }
            let num_x = numeric_gradient(|x| loss(x, &params, &h0, &c0), &mut x.clone(), 1e-6);
            assert_close(&dx, &num_x, 1e-6, 1e-8, &format!("{what}: dx"));
            let num_h0 = numeric_gradient(|h| loss(&x, &params, h, &c0), &mut h0.clone(), 1e-6);
            // Added to the ones the buffer held.
            let added: Vec<f64> = num_h0.iter().map(|v| v + 1.0).collect();
            assert_close(&dh0, &added, 1e-6, 1e-8, &format!("{what}: dh0"));
            if lstm {
                let num_c0 = numeric_gradient(|c| loss(&x, &params, &h0, c), &mut c0.clone(), 1e-6);
                assert_close(&dc0, &num_c0, 1e-6, 1e-8, &format!("{what}: dc0"));
            }
        }
    }
}

/// The LSTM's final cell states beside its hidden states (`(h_n, c_n)` of the last layer):
/// the reference's values, and gradients through both by central differences.
#[test]
fn final_states_with_cells() {
    for (layers, bidirectional, lengths) in [
        (1, false, None),
        (2, true, Some(vec![4, 1, 3])),
        (3, false, Some(vec![2, 4, 3])),
    ] {
        let d = dims(
            RnnCell::Lstm,
            3,
            4,
            3,
            2,
            layers,
            bidirectional,
            RnnOutput::FinalWithCells,
        );
        let lengths = lengths.as_deref();
        let params = params_for(&d, 6.0);
        let x = values(d.input_len(), 0.5);
        let (out, _) = forward(&d, &x, lengths, &params);
        assert_eq!(out.len(), 3 * 2 * d.directions() * 2);
        let want = reference(&d, &x, lengths, &params);
        assert_close(&out, &want, 1e-12, 1e-14, &format!("L={layers}"));
        // The hidden half is `Final`'s.
        let hidden = RnnDims {
            output: RnnOutput::Final,
            ..d
        };
        let (h, _) = forward(&hidden, &x, lengths, &params);
        let row = d.directions() * 2;
        for (b, h_row) in h.chunks_exact(row).enumerate() {
            assert_eq!(&out[b * 2 * row..b * 2 * row + row], h_row);
        }
        check_backward(&d, lengths);
    }
}

/// Every layer's final states (`h_n`, and `c_n` beside it): the reference's values, and
/// gradients through them by central differences, for every cell (the cells for the LSTM).
#[test]
fn every_layers_final_states() {
    for cell in CELLS {
        for cells in [false, cell == RnnCell::Lstm] {
            for (layers, bidirectional, lengths) in
                [(2, false, None), (2, true, Some(vec![4, 1, 3]))]
            {
                let output = RnnOutput::EveryLayer { cells };
                let d = dims(cell, 3, 4, 3, 2, layers, bidirectional, output);
                let lengths = lengths.as_deref();
                let params = params_for(&d, 8.0);
                let x = values(d.input_len(), 0.25);
                let (out, _) = forward(&d, &x, lengths, &params);
                let halves = if cells { 2 } else { 1 };
                assert_eq!(out.len(), layers * d.directions() * 3 * 2 * halves);
                let want = reference(&d, &x, lengths, &params);
                let what = format!("{cell:?} cells={cells} L={layers}");
                assert_close(&out, &want, 1e-12, 1e-14, &what);
                check_backward(&d, lengths);
            }
        }
    }
}
