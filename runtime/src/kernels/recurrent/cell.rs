//! The element-wise gate math of one LSTM or GRU step for one sequence (one row of the batch),
//! forward and backward, fused into one pass over the hidden units.
//!
//! The matrix products around it (the input projection of all steps, the recurrent product of
//! each step) are computed by the caller; these functions only combine their rows. Gate blocks
//! are in PyTorch's order (LSTM `i, f, g, o`; GRU `r, z, n`), each `hidden` wide.

use crate::Float;

/// What one LSTM step keeps per hidden unit for backpropagation: the activated gates
/// `i, f, g, o`, the cell state `c` and `tanh(c)`.
pub(super) const LSTM_CACHE: usize = 6;

/// What one GRU step keeps per hidden unit: the activated gates `r, z, n` and the recurrent
/// part of the candidate's pre-activation, `W_hn·h + b_hn`.
pub(super) const GRU_CACHE: usize = 4;

/// One LSTM step: `xp` is the input projection `W_ih·x` (`4H`), `hp` the recurrent product
/// `W_hh·h_prev` (`4H`), `c` holds `c_prev` and receives the new cell state, `h` receives the
/// new hidden state, `cache` (`6H`) what [`lstm_backward`] needs.
#[inline]
pub(super) fn lstm_forward<F: Float>(
    xp: &[F],
    hp: &[F],
    b_ih: &[F],
    b_hh: &[F],
    c: &mut [F],
    h: &mut [F],
    cache: &mut [F],
) {
    let n = h.len();
    let (xp, hp, b_ih, b_hh) = (&xp[..4 * n], &hp[..4 * n], &b_ih[..4 * n], &b_hh[..4 * n]);
    let (c, cache) = (&mut c[..n], &mut cache[..6 * n]);
    let pre = |k: usize| xp[k] + b_ih[k] + hp[k] + b_hh[k];
    for j in 0..n {
        let i = pre(j).sigmoid();
        let f = pre(n + j).sigmoid();
        let g = pre(2 * n + j).tanh();
        let o = pre(3 * n + j).sigmoid();
        let cell = f * c[j] + i * g;
        let tc = cell.tanh();
        c[j] = cell;
        h[j] = o * tc;
        cache[j] = i;
        cache[n + j] = f;
        cache[2 * n + j] = g;
        cache[3 * n + j] = o;
        cache[4 * n + j] = cell;
        cache[5 * n + j] = tc;
    }
}

/// The backward of one LSTM step. `dh` holds the full adjoint of this step's hidden state and
/// is cleared (the recurrent product `dg·W_hh` is added to it by the caller); `dc` holds the
/// adjoint of this step's cell state coming from the next step and receives that of
/// `c_prev`; `c_prev` is `None` at the first step (a zero state). `dg` (`4H`) receives the
/// adjoints of the four gate pre-activations.
#[inline]
pub(super) fn lstm_backward<F: Float>(
    cache: &[F],
    c_prev: Option<&[F]>,
    dh: &mut [F],
    dc: &mut [F],
    dg: &mut [F],
) {
    let n = dh.len();
    let (cache, dc, dg) = (&cache[..6 * n], &mut dc[..n], &mut dg[..4 * n]);
    for j in 0..n {
        let (i, f, g, o) = (cache[j], cache[n + j], cache[2 * n + j], cache[3 * n + j]);
        let tc = cache[5 * n + j];
        let cp = c_prev.map_or(F::ZERO, |c| c[j]);
        let dhj = dh[j];
        let d_o = dhj * tc;
        let dcj = dc[j] + dhj * o * (F::ONE - tc * tc);
        dg[j] = dcj * g * i * (F::ONE - i);
        dg[n + j] = dcj * cp * f * (F::ONE - f);
        dg[2 * n + j] = dcj * i * (F::ONE - g * g);
        dg[3 * n + j] = d_o * o * (F::ONE - o);
        dc[j] = dcj * f;
        dh[j] = F::ZERO;
    }
}

/// One GRU step: `xp` and `hp` are the input and recurrent products (`3H` each, without
/// biases), `h` holds `h_prev` and receives the new hidden state, `cache` (`4H`) what
/// [`gru_backward`] needs. `n = tanh(W_in·x + b_in + r ∘ (W_hn·h + b_hn))` and
/// `h' = (1 − z) ∘ n + z ∘ h`, as in PyTorch.
#[inline]
pub(super) fn gru_forward<F: Float>(
    xp: &[F],
    hp: &[F],
    b_ih: &[F],
    b_hh: &[F],
    h: &mut [F],
    cache: &mut [F],
) {
    let n = h.len();
    let (xp, hp, b_ih, b_hh) = (&xp[..3 * n], &hp[..3 * n], &b_ih[..3 * n], &b_hh[..3 * n]);
    let cache = &mut cache[..4 * n];
    for j in 0..n {
        let r = (xp[j] + b_ih[j] + hp[j] + b_hh[j]).sigmoid();
        let z = (xp[n + j] + b_ih[n + j] + hp[n + j] + b_hh[n + j]).sigmoid();
        let hn = hp[2 * n + j] + b_hh[2 * n + j];
        let cand = (xp[2 * n + j] + b_ih[2 * n + j] + r * hn).tanh();
        h[j] = (F::ONE - z) * cand + z * h[j];
        cache[j] = r;
        cache[n + j] = z;
        cache[2 * n + j] = cand;
        cache[3 * n + j] = hn;
    }
}

/// The backward of one GRU step. `dh` holds the full adjoint of this step's hidden state and
/// receives the part of `h_prev`'s adjoint that bypasses `W_hh` (`dh ∘ z`; the caller adds
/// `dgh·W_hh`). `dgi` (`3H`) receives the adjoints of the input-side pre-activations
/// `W_i·x + b_i`, `dgh` (`3H`) those of the recurrent side `W_h·h + b_h`: they differ in the
/// candidate block, where the recurrent side is gated by `r`.
#[inline]
pub(super) fn gru_backward<F: Float>(
    cache: &[F],
    h_prev: &[F],
    dh: &mut [F],
    dgi: &mut [F],
    dgh: &mut [F],
) {
    let n = dh.len();
    let (cache, h_prev) = (&cache[..4 * n], &h_prev[..n]);
    let (dgi, dgh) = (&mut dgi[..3 * n], &mut dgh[..3 * n]);
    for j in 0..n {
        let (r, z, cand, hn) = (cache[j], cache[n + j], cache[2 * n + j], cache[3 * n + j]);
        let dhj = dh[j];
        let d_cand = dhj * (F::ONE - z) * (F::ONE - cand * cand);
        let dr = d_cand * hn * r * (F::ONE - r);
        let dz = dhj * (h_prev[j] - cand) * z * (F::ONE - z);
        dgi[j] = dr;
        dgi[n + j] = dz;
        dgi[2 * n + j] = d_cand;
        dgh[j] = dr;
        dgh[n + j] = dz;
        dgh[2 * n + j] = d_cand * r;
        dh[j] = dhj * z;
    }
}
