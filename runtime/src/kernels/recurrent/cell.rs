//! The element-wise gate math of one LSTM, GRU or plain RNN step for one sequence (one row of
//! the batch), forward and backward, fused into one pass over the hidden units.
//!
//! The matrix products around it (the input projection of all steps, the recurrent product of
//! each step) are computed by the caller; these loops only combine their rows. Gate blocks
//! are in PyTorch's order (LSTM `i, f, g, o`; GRU `r, z, n`; the RNN has one), each `H` wide. Each loop is an
//! [`ElementLoop`], run by [`run`] compiled for the CPU's vector units; in f32 the logistic
//! function and `tanh` are computed by the vectorizable [`exp_f32`] instead of a library call
//! per element (which cost more than all the step's matrix products together).

use crate::fast_math::{exp_f32, tanh_f32};
use crate::kernels::dispatch::{run_fast, ElementLoop};
use crate::Float;

/// What one LSTM step keeps per hidden unit for backpropagation: the activated gates
/// `i, f, g, o`, the cell state `c` and `tanh(c)`.
pub(super) const LSTM_CACHE: usize = 6;

/// What one GRU step keeps per hidden unit: the activated gates `r, z, n` and the recurrent
/// part of the candidate's pre-activation, `W_hn·h + b_hn`.
pub(super) const GRU_CACHE: usize = 4;

/// What one plain RNN step keeps per hidden unit: the new hidden state, from which both
/// nonlinearities' derivatives follow (`1 − h²` for `tanh`, `h > 0` for `relu`).
pub(super) const RNN_CACHE: usize = 1;

/// Runs one step's loop for one row, compiled for the best vector unit available.
#[inline]
pub(super) fn run(step: impl ElementLoop) {
    run_fast(step);
}

/// The logistic function in f32 within 2 ulp (see [`exp_f32`]).
#[inline(always)]
pub(super) fn sigmoid_f32(x: f32) -> f32 {
    1.0 / (1.0 + exp_f32(-x))
}

/// The logistic function: [`sigmoid_f32`] for f32 (the conversions fold away), the exact
/// [`Float::sigmoid`] otherwise.
#[inline(always)]
fn sigmoid<F: Float>(x: F) -> F {
    if std::mem::size_of::<F>() == 4 {
        F::from_f64(f64::from(sigmoid_f32(x.to_f64() as f32)))
    } else {
        x.sigmoid()
    }
}

/// `tanh`: [`tanh_f32`] for f32, [`Float::tanh`] otherwise.
#[inline(always)]
fn tanh<F: Float>(x: F) -> F {
    if std::mem::size_of::<F>() == 4 {
        F::from_f64(f64::from(tanh_f32(x.to_f64() as f32)))
    } else {
        x.tanh()
    }
}

/// `s` cut into `K` consecutive blocks of `n`.
#[inline(always)]
fn blocks<const K: usize, T>(s: &[T], n: usize) -> [&[T]; K] {
    std::array::from_fn(|k| &s[k * n..(k + 1) * n])
}

/// `s` cut into `K` consecutive mutable blocks of `n`.
#[inline(always)]
fn blocks_mut<const K: usize, T>(mut s: &mut [T], n: usize) -> [&mut [T]; K] {
    std::array::from_fn(|_| {
        let (head, tail) = std::mem::take(&mut s).split_at_mut(n);
        s = tail;
        head
    })
}

/// One LSTM step: `xp` is the input projection `W_ih·x` (`4H`), `hp` the recurrent product
/// `W_hh·h_prev` (`4H`), both without biases; `c` holds `c_prev` and receives the new cell
/// state, `h` receives the new hidden state, `cache` (`6H`) what [`LstmBackward`] needs.
pub(super) struct LstmForward<'a, F> {
    pub xp: &'a [F],
    pub hp: &'a [F],
    pub b_ih: &'a [F],
    pub b_hh: &'a [F],
    pub c: &'a mut [F],
    pub h: &'a mut [F],
    pub cache: &'a mut [F],
}

impl<F: Float> ElementLoop for LstmForward<'_, F> {
    #[inline(always)]
    fn run(self) {
        let n = self.h.len();
        let [ki, kf, kg, ko, kc, kt] = blocks_mut(self.cache, n);
        lstm_forward(
            blocks(self.xp, n),
            blocks(self.hp, n),
            blocks(self.b_ih, n),
            blocks(self.b_hh, n),
            &mut self.c[..n],
            self.h,
            [ki, kf, kg, ko],
            kc,
            kt,
        );
    }
}

/// [`LstmForward`]'s loop. Every output block is its own `&mut` argument so that the
/// compiler knows they do not overlap (references inside a struct carry no such promise)
/// and vectorizes the loop without run-time overlap checks.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn lstm_forward<F: Float>(
    [xi, xf, xg, xo]: [&[F]; 4],
    [hi, hf, hg, ho]: [&[F]; 4],
    [bi, bf, bg, bo]: [&[F]; 4],
    [ci, cf, cg, co]: [&[F]; 4],
    c: &mut [F],
    h: &mut [F],
    [ki, kf, kg, ko]: [&mut [F]; 4],
    kc: &mut [F],
    kt: &mut [F],
) {
    let n = h.len();
    let (c, kc, kt) = (&mut c[..n], &mut kc[..n], &mut kt[..n]);
    let (ki, kf, kg, ko) = (&mut ki[..n], &mut kf[..n], &mut kg[..n], &mut ko[..n]);
    // Two passes: the gates, then `tanh` of the new cell state. In one pass each unit's
    // second `tanh` waited on its gates (two exponentials and divisions in a row, about 250
    // cycles of latency per vector) and the out-of-order window held too few units to hide
    // it; apart, each pass's units are independent. The same operations on each element, so
    // the same bits. One AVX-512 core, W7's 3,072 rows of 128 units: 1.61 → 1.38 ms.
    for j in 0..n {
        let i = sigmoid(xi[j] + bi[j] + hi[j] + ci[j]);
        let f = sigmoid(xf[j] + bf[j] + hf[j] + cf[j]);
        let g = tanh(xg[j] + bg[j] + hg[j] + cg[j]);
        let o = sigmoid(xo[j] + bo[j] + ho[j] + co[j]);
        let cell = f * c[j] + i * g;
        c[j] = cell;
        (ki[j], kf[j], kg[j], ko[j], kc[j]) = (i, f, g, o, cell);
    }
    for j in 0..n {
        let tc = tanh(c[j]);
        h[j] = ko[j] * tc;
        kt[j] = tc;
    }
}

/// The backward of one LSTM step. `dh` holds the full adjoint of this step's hidden state and
/// is cleared (the recurrent product `dg·W_hh` is added to it by the caller); `dc` holds the
/// adjoint of this step's cell state coming from the next step and receives that of
/// `c_prev`; `c_prev` is `None` at the first step (a zero state). `dg` (`4H`) receives the
/// adjoints of the four gate pre-activations.
pub(super) struct LstmBackward<'a, F> {
    pub cache: &'a [F],
    pub c_prev: Option<&'a [F]>,
    pub dh: &'a mut [F],
    pub dc: &'a mut [F],
    pub dg: &'a mut [F],
}

impl<F: Float> ElementLoop for LstmBackward<'_, F> {
    #[inline(always)]
    fn run(self) {
        let n = self.dh.len();
        let [ki, kf, kg, ko, _, kt] = blocks(self.cache, n);
        let [di, df, dg, d_o] = blocks_mut(self.dg, n);
        lstm_backward(
            [ki, kf, kg, ko, kt],
            self.c_prev,
            self.dh,
            &mut self.dc[..n],
            [di, df, dg, d_o],
        );
    }
}

/// [`LstmBackward`]'s loop, with its outputs as separate `&mut` arguments (see
/// [`lstm_forward`]).
#[inline(always)]
fn lstm_backward<F: Float>(
    [ki, kf, kg, ko, kt]: [&[F]; 5],
    c_prev: Option<&[F]>,
    dh: &mut [F],
    dc: &mut [F],
    [di, df, dg, d_o]: [&mut [F]; 4],
) {
    let n = dh.len();
    let dc = &mut dc[..n];
    let (di, df, dg, d_o) = (&mut di[..n], &mut df[..n], &mut dg[..n], &mut d_o[..n]);
    let c_prev = c_prev.map(|c| &c[..n]);
    for j in 0..n {
        let (i, f, g, o, tc) = (ki[j], kf[j], kg[j], ko[j], kt[j]);
        let cp = c_prev.map_or(F::ZERO, |c| c[j]);
        let dhj = dh[j];
        let dcj = dc[j] + dhj * o * (F::ONE - tc * tc);
        di[j] = dcj * g * i * (F::ONE - i);
        df[j] = dcj * cp * f * (F::ONE - f);
        dg[j] = dcj * i * (F::ONE - g * g);
        d_o[j] = dhj * tc * o * (F::ONE - o);
        dc[j] = dcj * f;
        dh[j] = F::ZERO;
    }
}

/// One GRU step: `xp` and `hp` are the input and recurrent products (`3H` each, without
/// biases), `h` holds `h_prev` and receives the new hidden state, `cache` (`4H`) what
/// [`GruBackward`] needs. `n = tanh(W_in·x + b_in + r ∘ (W_hn·h + b_hn))` and
/// `h' = (1 − z) ∘ n + z ∘ h`, as in PyTorch.
pub(super) struct GruForward<'a, F> {
    pub xp: &'a [F],
    pub hp: &'a [F],
    pub b_ih: &'a [F],
    pub b_hh: &'a [F],
    pub h: &'a mut [F],
    pub cache: &'a mut [F],
}

impl<F: Float> ElementLoop for GruForward<'_, F> {
    #[inline(always)]
    fn run(self) {
        let n = self.h.len();
        gru_forward(
            blocks(self.xp, n),
            blocks(self.hp, n),
            blocks(self.b_ih, n),
            blocks(self.b_hh, n),
            self.h,
            blocks_mut(self.cache, n),
        );
    }
}

/// [`GruForward`]'s loop, with its outputs as separate `&mut` arguments (see
/// [`lstm_forward`]).
#[inline(always)]
fn gru_forward<F: Float>(
    [xr, xz, xn]: [&[F]; 3],
    [hr, hz, hn]: [&[F]; 3],
    [br, bz, bn]: [&[F]; 3],
    [cr, cz, cn]: [&[F]; 3],
    h: &mut [F],
    [kr, kz, kn, kh]: [&mut [F]; 4],
) {
    let n = h.len();
    let (kr, kz, kn, kh) = (&mut kr[..n], &mut kz[..n], &mut kn[..n], &mut kh[..n]);
    // Two passes, as in `lstm_forward`: the candidate's `tanh` waits on the reset gate
    // (3,072 rows of 128 units, one AVX-512 core: 0.99 → 0.92 ms).
    for j in 0..n {
        let r = sigmoid(xr[j] + br[j] + hr[j] + cr[j]);
        let z = sigmoid(xz[j] + bz[j] + hz[j] + cz[j]);
        let rec = hn[j] + cn[j];
        (kr[j], kz[j], kh[j]) = (r, z, rec);
    }
    for j in 0..n {
        let (r, z, rec) = (kr[j], kz[j], kh[j]);
        let cand = tanh(xn[j] + bn[j] + r * rec);
        h[j] = (F::ONE - z) * cand + z * h[j];
        kn[j] = cand;
    }
}

/// The backward of one GRU step. `dh` holds the full adjoint of this step's hidden state and
/// receives the part of `h_prev`'s adjoint that bypasses `W_hh` (`dh ∘ z`; the caller adds
/// `dgh·W_hh`). `dgi` (`3H`) receives the adjoints of the input-side pre-activations
/// `W_i·x + b_i`, `dgh` (`3H`) those of the recurrent side `W_h·h + b_h`: they differ in the
/// candidate block, where the recurrent side is gated by `r`.
pub(super) struct GruBackward<'a, F> {
    pub cache: &'a [F],
    pub h_prev: &'a [F],
    pub dh: &'a mut [F],
    pub dgi: &'a mut [F],
    pub dgh: &'a mut [F],
}

impl<F: Float> ElementLoop for GruBackward<'_, F> {
    #[inline(always)]
    fn run(self) {
        let n = self.dh.len();
        gru_backward(
            blocks(self.cache, n),
            &self.h_prev[..n],
            self.dh,
            blocks_mut(self.dgi, n),
            blocks_mut(self.dgh, n),
        );
    }
}

/// [`GruBackward`]'s loop, with its outputs as separate `&mut` arguments (see
/// [`lstm_forward`]).
#[inline(always)]
fn gru_backward<F: Float>(
    [kr, kz, kn, kh]: [&[F]; 4],
    h_prev: &[F],
    dh: &mut [F],
    [ir, iz, i_n]: [&mut [F]; 3],
    [hr, hz, hn]: [&mut [F]; 3],
) {
    let n = dh.len();
    let (ir, iz, i_n) = (&mut ir[..n], &mut iz[..n], &mut i_n[..n]);
    let (hr, hz, hn) = (&mut hr[..n], &mut hz[..n], &mut hn[..n]);
    for j in 0..n {
        let (r, z, cand, rec) = (kr[j], kz[j], kn[j], kh[j]);
        let dhj = dh[j];
        let d_cand = dhj * (F::ONE - z) * (F::ONE - cand * cand);
        let dr = d_cand * rec * r * (F::ONE - r);
        let dz = dhj * (h_prev[j] - cand) * z * (F::ONE - z);
        (ir[j], iz[j], i_n[j]) = (dr, dz, d_cand);
        (hr[j], hz[j], hn[j]) = (dr, dz, d_cand * r);
        dh[j] = dhj * z;
    }
}

/// One step of PyTorch's `nn.RNN`: `h' = act(W_ih·x + b_ih + W_hh·h + b_hh)` with `act`
/// `tanh`, or `relu` when `relu` is set. `xp` and `hp` are the two products (`H` each,
/// without biases), `h` receives the new state and `cache` (`H`) a copy of it.
pub(super) struct RnnForward<'a, F> {
    pub xp: &'a [F],
    pub hp: &'a [F],
    pub b_ih: &'a [F],
    pub b_hh: &'a [F],
    pub h: &'a mut [F],
    pub cache: &'a mut [F],
    pub relu: bool,
}

impl<F: Float> ElementLoop for RnnForward<'_, F> {
    #[inline(always)]
    fn run(self) {
        let n = self.h.len();
        let (xp, hp, b_ih, b_hh) = (
            &self.xp[..n],
            &self.hp[..n],
            &self.b_ih[..n],
            &self.b_hh[..n],
        );
        let cache = &mut self.cache[..n];
        // One loop per nonlinearity, so that neither tests `relu` per element.
        if self.relu {
            for j in 0..n {
                let a = (xp[j] + b_ih[j] + hp[j] + b_hh[j]).max(F::ZERO);
                (self.h[j], cache[j]) = (a, a);
            }
        } else {
            for j in 0..n {
                let a = tanh(xp[j] + b_ih[j] + hp[j] + b_hh[j]);
                (self.h[j], cache[j]) = (a, a);
            }
        }
    }
}

/// The backward of one plain RNN step: `dh` holds the full adjoint of this step's hidden
/// state and is cleared (the caller adds the recurrent product `dg·W_hh`); `dg` (`H`) receives
/// the adjoint of the pre-activation, `dh · act'`, with PyTorch's `relu` derivative (1 where
/// the output is positive, else 0).
pub(super) struct RnnBackward<'a, F> {
    pub cache: &'a [F],
    pub dh: &'a mut [F],
    pub dg: &'a mut [F],
    pub relu: bool,
}

impl<F: Float> ElementLoop for RnnBackward<'_, F> {
    #[inline(always)]
    fn run(self) {
        let n = self.dh.len();
        let (a, dg) = (&self.cache[..n], &mut self.dg[..n]);
        if self.relu {
            for j in 0..n {
                dg[j] = if a[j] > F::ZERO { self.dh[j] } else { F::ZERO };
                self.dh[j] = F::ZERO;
            }
        } else {
            for j in 0..n {
                dg[j] = self.dh[j] * (F::ONE - a[j] * a[j]);
                self.dh[j] = F::ZERO;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The f32 functions against f64's on a dense grid over the interesting range and a
    /// sparse one beyond, in units of the f32 result's ulp.
    #[test]
    fn fast_f32_functions_are_within_two_ulp() {
        let ulp = |v: f64| (v.abs() as f32).max(f32::MIN_POSITIVE) as f64 * f64::from(f32::EPSILON);
        let mut worst = [0.0f64; 3];
        let grid = (-40_000..=40_000).map(|i| i as f32 * 5e-4);
        let far = (-90..=90).map(|i| i as f32);
        for x in grid.chain(far) {
            let xd = f64::from(x);
            // Beyond f32's range the result is infinite or (gradually) 0, as the library's.
            let exp = xd.clamp(-87.0, 88.0).exp();
            let exp_f32_x = if (-87.0..=88.0).contains(&x) {
                exp_f32(x)
            } else {
                exp_f32(x.clamp(-87.0, 88.0))
            };
            let sig = 1.0 / (1.0 + (-xd).exp());
            for (k, (got, want)) in [
                (exp_f32_x, exp),
                (tanh_f32(x), xd.tanh()),
                (sigmoid_f32(x), sig),
            ]
            .into_iter()
            .enumerate()
            {
                if k == 2 && x < -87.0 {
                    // Clamped: a denormal-sized value either way.
                    assert!(got < 1e-37);
                    continue;
                }
                worst[k] = worst[k].max((f64::from(got) - want).abs() / ulp(want));
            }
        }
        assert!(
            worst.iter().all(|&w| w <= 2.0),
            "worst errors in ulp {worst:?}"
        );
        assert!(exp_f32(f32::NAN).is_nan() && tanh_f32(f32::NAN).is_nan());
        assert_eq!((tanh_f32(100.0), tanh_f32(-100.0)), (1.0, -1.0));
        assert_eq!((sigmoid_f32(100.0), tanh_f32(0.0)), (1.0, 0.0));
    }
}
