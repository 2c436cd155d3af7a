//! Batch normalisation (PyTorch's `BatchNorm1d` / `BatchNorm2d`, affine, with running
//! statistics), layer normalisation over the last axis (`LayerNorm`), group normalisation
//! (`GroupNorm`, in `group.rs`) and RMS normalisation (`RMSNorm`, in `rms.rs`), with their
//! VJPs.
//!
//! Batch norm sees its input as `[n, c, spatial]`: `[N, C]` is `spatial = 1`, a sequence
//! batch `[N, C, L]` (BatchNorm1d on 3-D input) is `spatial = L`, `[N, C, H, W]` is
//! `spatial = H·W`. Statistics are per channel over the `m = n · spatial` elements of that
//! channel. Layer norm sees its input as `[rows, cols]` and normalises each row (for a
//! `normalized_shape` of several trailing dims, `cols` is their product).
//!
//! The statistics are accumulated in f64 whatever `F` is (PyTorch's CPU batch norm also
//! accumulates f32 in double), and the output is formed as PyTorch's CPU kernels form it,
//! `y = x · α + β` with `α = invstd · weight`, `β = bias − mean · α`.

use super::store;
use crate::Float;

mod group;
mod layer;
mod rms;
pub use group::{group_norm_backward, group_norm_forward};
pub use layer::{layer_norm_backward, layer_norm_forward};
pub use rms::{rms_norm_backward, rms_norm_forward};

#[track_caller]
fn check_len(what: &str, name: &str, got: usize, want: usize) {
    assert_eq!(
        got, want,
        "{what}: {name} has {got} elements, expected {want}"
    );
}

/// The `spatial`-long runs of channel `ch` in an `[n, c, spatial]` tensor, one per sample.
#[inline]
fn channel_runs<F>(
    x: &[F],
    c: usize,
    spatial: usize,
    ch: usize,
) -> impl Iterator<Item = &[F]> + '_ {
    x.chunks_exact(c * spatial)
        .map(move |sample| &sample[ch * spatial..(ch + 1) * spatial])
}

/// Mean and biased variance of the elements of channel `ch`, in f64 (two passes).
fn channel_moments<F: Float>(x: &[F], c: usize, spatial: usize, ch: usize) -> (f64, f64) {
    let m = (x.len() / (c * spatial)) * spatial;
    let sum: f64 = channel_runs(x, c, spatial, ch)
        .flatten()
        .map(|v| v.to_f64())
        .sum();
    let mean = sum / m as f64;
    let sq: f64 = channel_runs(x, c, spatial, ch)
        .flatten()
        .map(|v| {
            let d = v.to_f64() - mean;
            d * d
        })
        .sum();
    (mean, sq / m as f64)
}

/// Writes `y = x · alpha + beta` over channel `ch`.
#[inline]
fn affine_channel<F: Float>(
    x: &[F],
    y: &mut [F],
    c: usize,
    spatial: usize,
    ch: usize,
    alpha: F,
    beta: F,
) {
    for (xs, ys) in x
        .chunks_exact(c * spatial)
        .zip(y.chunks_exact_mut(c * spatial))
    {
        let range = ch * spatial..(ch + 1) * spatial;
        for (yv, &xv) in ys[range.clone()].iter_mut().zip(&xs[range]) {
            *yv = xv * alpha + beta;
        }
    }
}

/// Batch norm in training mode: `y = (x − mean) · invstd · weight + bias` with the batch's
/// per-channel mean and BIASED variance (`invstd = 1 / √(var + eps)`); `x`, `y` are
/// `[n, c, spatial]`, the rest `[c]`.
///
/// Writes `save_mean` and `save_invstd` (what [`batch_norm_backward`] needs) and updates the
/// running statistics as PyTorch does, with the UNBIASED variance:
/// `running_mean ← (1 − momentum) · running_mean + momentum · mean`,
/// `running_var ← (1 − momentum) · running_var + momentum · var · m / (m − 1)`, `m = n · spatial`.
///
/// # Panics
/// If a slice's length disagrees with the sizes, or if `m = n · spatial ≤ 1` while `c > 0`:
/// the unbiased variance of one value is undefined, and PyTorch refuses such a batch too
/// ("Expected more than 1 value per channel when training"). Callers must reject it first.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_forward_train<F: Float>(
    x: &[F],
    weight: &[F],
    bias: &[F],
    n: usize,
    c: usize,
    spatial: usize,
    eps: F,
    y: &mut [F],
    save_mean: &mut [F],
    save_invstd: &mut [F],
    running_mean: &mut [F],
    running_var: &mut [F],
    momentum: F,
) {
    const WHAT: &str = "batch_norm_forward_train";
    let len = n * c * spatial;
    check_len(WHAT, "x", x.len(), len);
    check_len(WHAT, "y", y.len(), len);
    for (name, s) in [("weight", weight), ("bias", bias)] {
        check_len(WHAT, name, s.len(), c);
    }
    for (name, s) in [
        ("save_mean", &*save_mean),
        ("save_invstd", &*save_invstd),
        ("running_mean", &*running_mean),
        ("running_var", &*running_var),
    ] {
        check_len(WHAT, name, s.len(), c);
    }
    if c == 0 {
        return;
    }
    let m = n * spatial;
    assert!(
        m > 1,
        "{WHAT}: expected more than 1 value per channel when training, got {n} × {spatial}"
    );
    let (eps64, mom) = (eps.to_f64(), momentum.to_f64());
    let unbias = m as f64 / (m - 1) as f64;
    for ch in 0..c {
        let (mean, var) = channel_moments(x, c, spatial, ch);
        let invstd = 1.0 / (var + eps64).sqrt();
        save_mean[ch] = F::from_f64(mean);
        save_invstd[ch] = F::from_f64(invstd);
        running_mean[ch] = F::from_f64(mom * mean + (1.0 - mom) * running_mean[ch].to_f64());
        running_var[ch] = F::from_f64(mom * var * unbias + (1.0 - mom) * running_var[ch].to_f64());
        let alpha = F::from_f64(invstd) * weight[ch];
        let beta = bias[ch] - F::from_f64(mean) * alpha;
        affine_channel(x, y, c, spatial, ch, alpha, beta);
    }
}

/// Batch norm in evaluation mode: `y = (x − running_mean) / √(running_var + eps) · weight +
/// bias`, per channel; `x`, `y` are `[n, c, spatial]`, the rest `[c]`. Nothing is updated.
///
/// # Panics
/// If a slice's length disagrees with the sizes (a caller bug).
///
/// ```
/// use kiln_runtime::kernels::norm::batch_norm_forward_eval;
/// // Two samples, one channel, running mean 1 and variance 4 (eps 0).
/// let mut y = [0.0f64; 2];
/// batch_norm_forward_eval(&[3.0, -1.0], &[2.0], &[0.5], &[1.0], &[4.0], 2, 1, 1, 0.0, &mut y);
/// assert_eq!(y, [2.5, -1.5]);
/// ```
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_forward_eval<F: Float>(
    x: &[F],
    weight: &[F],
    bias: &[F],
    running_mean: &[F],
    running_var: &[F],
    n: usize,
    c: usize,
    spatial: usize,
    eps: F,
    y: &mut [F],
) {
    const WHAT: &str = "batch_norm_forward_eval";
    let len = n * c * spatial;
    check_len(WHAT, "x", x.len(), len);
    check_len(WHAT, "y", y.len(), len);
    for (name, s) in [
        ("weight", weight),
        ("bias", bias),
        ("running_mean", running_mean),
        ("running_var", running_var),
    ] {
        check_len(WHAT, name, s.len(), c);
    }
    if len == 0 {
        return;
    }
    for ch in 0..c {
        let invstd = 1.0 / (running_var[ch].to_f64() + eps.to_f64()).sqrt();
        let alpha = F::from_f64(invstd) * weight[ch];
        let beta = bias[ch] - running_mean[ch] * alpha;
        affine_channel(x, y, c, spatial, ch, alpha, beta);
    }
}

/// The VJPs of [`batch_norm_forward_train`] (training mode: gradients flow through the batch
/// statistics), from the forward's `save_mean` / `save_invstd`. With `x̂ = (x − mean)·invstd`
/// and sums over the `m = n · spatial` elements of a channel:
///
/// - `dweight = Σ dy · x̂` and `dbias = Σ dy`, OVERWRITTEN (`[c]`);
/// - `dx = weight · invstd / m · (m · dy − Σ dy − x̂ · Σ dy · x̂)`, written or added to the
///   buffer of `dx = Some((buffer, accumulate))`.
///
/// # Panics
/// If a slice's length disagrees with the sizes (a caller bug).
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_backward<F: Float>(
    x: &[F],
    dy: &[F],
    weight: &[F],
    save_mean: &[F],
    save_invstd: &[F],
    n: usize,
    c: usize,
    spatial: usize,
    dweight: &mut [F],
    dbias: &mut [F],
    mut dx: Option<(&mut [F], bool)>,
) {
    const WHAT: &str = "batch_norm_backward";
    let len = n * c * spatial;
    check_len(WHAT, "x", x.len(), len);
    check_len(WHAT, "dy", dy.len(), len);
    for (name, s) in [
        ("weight", weight),
        ("save_mean", save_mean),
        ("save_invstd", save_invstd),
    ] {
        check_len(WHAT, name, s.len(), c);
    }
    check_len(WHAT, "dweight", dweight.len(), c);
    check_len(WHAT, "dbias", dbias.len(), c);
    if let Some((dx, _)) = dx.as_ref() {
        check_len(WHAT, "dx", dx.len(), len);
    }
    if len == 0 {
        dweight.fill(F::ZERO);
        dbias.fill(F::ZERO);
        return;
    }
    let m = (n * spatial) as f64;
    for ch in 0..c {
        let (mean, invstd) = (save_mean[ch].to_f64(), save_invstd[ch].to_f64());
        // Σ dy and Σ dy · (x − mean), in f64.
        let (mut sum_dy, mut dot) = (0.0f64, 0.0f64);
        for (xs, ds) in channel_runs(x, c, spatial, ch).zip(channel_runs(dy, c, spatial, ch)) {
            for (&xv, &g) in xs.iter().zip(ds) {
                let g = g.to_f64();
                sum_dy += g;
                dot += g * (xv.to_f64() - mean);
            }
        }
        dbias[ch] = F::from_f64(sum_dy);
        dweight[ch] = F::from_f64(dot * invstd);
        if let Some((dx, accumulate)) = dx.as_mut() {
            // dx = (dy − Σdy/m − (x − mean) · invstd² · Σ dy·(x − mean) / m) · invstd · weight
            let mean_dy = F::from_f64(sum_dy / m);
            let proj = F::from_f64(dot * invstd * invstd / m);
            let scale = F::from_f64(invstd) * weight[ch];
            let mean_f = save_mean[ch];
            let accumulate = *accumulate;
            let block = c * spatial;
            for ((xs, ds), dxs) in x
                .chunks_exact(block)
                .zip(dy.chunks_exact(block))
                .zip(dx.chunks_exact_mut(block))
            {
                let range = ch * spatial..(ch + 1) * spatial;
                for ((slot, &xv), &g) in dxs[range.clone()]
                    .iter_mut()
                    .zip(&xs[range.clone()])
                    .zip(&ds[range])
                {
                    store(
                        slot,
                        (g - mean_dy - (xv - mean_f) * proj) * scale,
                        accumulate,
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::numeric_gradient;
    use crate::kernels::test_util::{assert_close, check_both_modes, values};

    fn weighted(y: &[f64], r: &[f64]) -> f64 {
        y.iter().zip(r).map(|(a, b)| a * b).sum()
    }

    /// Training-mode batch norm written from the definition: index (i, ch, s) explicitly.
    fn naive_bn(x: &[f64], w: &[f64], b: &[f64], n: usize, c: usize, s: usize) -> Vec<f64> {
        let eps = 1e-5;
        let at = |i: usize, ch: usize, k: usize| (i * c + ch) * s + k;
        let mut y = vec![0.0; x.len()];
        for ch in 0..c {
            let m = (n * s) as f64;
            let mut mean = 0.0;
            for i in 0..n {
                for k in 0..s {
                    mean += x[at(i, ch, k)];
                }
            }
            mean /= m;
            let mut var = 0.0;
            for i in 0..n {
                for k in 0..s {
                    var += (x[at(i, ch, k)] - mean).powi(2);
                }
            }
            var /= m;
            for i in 0..n {
                for k in 0..s {
                    y[at(i, ch, k)] = (x[at(i, ch, k)] - mean) / (var + eps).sqrt() * w[ch] + b[ch];
                }
            }
        }
        y
    }

    fn naive_ln(x: &[f64], w: &[f64], b: &[f64], cols: usize) -> Vec<f64> {
        let eps = 1e-5;
        x.chunks(cols)
            .flat_map(|row| {
                let mean = row.iter().sum::<f64>() / cols as f64;
                let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / cols as f64;
                row.iter()
                    .zip(w)
                    .zip(b)
                    .map(move |((v, w), b)| (v - mean) / (var + eps).sqrt() * w + b)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Runs the training forward on fresh buffers; returns (y, mean, invstd, rmean, rvar).
    #[allow(clippy::type_complexity)]
    fn bn_train(
        x: &[f64],
        w: &[f64],
        b: &[f64],
        (n, c, s): (usize, usize, usize),
        running: (&[f64], &[f64]),
        momentum: f64,
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
        let mut y = vec![f64::NAN; x.len()];
        let (mut mean, mut invstd) = (vec![f64::NAN; c], vec![f64::NAN; c]);
        let (mut rm, mut rv) = (running.0.to_vec(), running.1.to_vec());
        batch_norm_forward_train(
            x,
            w,
            b,
            n,
            c,
            s,
            1e-5,
            &mut y,
            &mut mean,
            &mut invstd,
            &mut rm,
            &mut rv,
            momentum,
        );
        (y, mean, invstd, rm, rv)
    }

    const SHAPES: [(usize, usize, usize); 3] = [(6, 4, 1), (3, 3, 5), (2, 2, 7)];

    #[test]
    fn batch_norm_train_forward_matches_naive() {
        for (k, &(n, c, s)) in SHAPES.iter().enumerate() {
            let seed = k as f64;
            let x = values(n * c * s, 1.0 + seed);
            let (w, b) = (values(c, 2.0 + seed), values(c, 3.0 + seed));
            let (y, mean, invstd, _, _) =
                bn_train(&x, &w, &b, (n, c, s), (&vec![0.0; c], &vec![1.0; c]), 0.1);
            assert_close(&y, &naive_bn(&x, &w, &b, n, c, s), 1e-13, 1e-13, "y");
            // Normalised with unit weight and zero bias: zero mean and unit (biased) variance.
            let (one, zero) = (vec![1.0; c], vec![0.0; c]);
            let (y, ..) = bn_train(&x, &one, &zero, (n, c, s), (&zero, &one), 0.1);
            for ch in 0..c {
                let vals: Vec<f64> = (0..n)
                    .flat_map(|i| (0..s).map(move |k| (i * c + ch) * s + k))
                    .map(|i| y[i])
                    .collect();
                let mu = vals.iter().sum::<f64>() / vals.len() as f64;
                let var = vals.iter().map(|v| (v - mu).powi(2)).sum::<f64>() / vals.len() as f64;
                assert!(mu.abs() < 1e-14, "mean {mu}");
                // var / (var + eps) is slightly below 1.
                let (raw_mu, raw_var) = (mean[ch], 1.0 / invstd[ch].powi(2) - 1e-5);
                assert!(
                    (var - raw_var / (raw_var + 1e-5)).abs() < 1e-12,
                    "var {var}"
                );
                assert!(raw_mu.is_finite());
            }
        }
    }

    #[test]
    fn batch_norm_running_statistics_by_hand() {
        // [N = 2, C = 2, spatial = 2]; channel 0 holds 1, 2, 3, 4 and channel 1 holds
        // 10, 10, 10, 14 (sample 0: [1, 2], [10, 10]; sample 1: [3, 4], [10, 14]).
        let x = [1.0, 2.0, 10.0, 10.0, 3.0, 4.0, 10.0, 14.0];
        let (w, b) = ([1.0, 1.0], [0.0, 0.0]);
        let (rm0, rv0) = ([0.5, -1.0], [2.0, 1.0]);
        let (_, mean, invstd, rm, rv) = bn_train(&x, &w, &b, (2, 2, 2), (&rm0, &rv0), 0.1);
        // Channel 0: mean 2.5, biased var 1.25, unbiased 5/3.
        // Channel 1: mean 11, biased var (1 + 1 + 1 + 9) / 4 = 3, unbiased 4.
        assert_close(&mean, &[2.5, 11.0], 1e-15, 0.0, "save_mean");
        let want_invstd = [1.0 / (1.25f64 + 1e-5).sqrt(), 1.0 / (3.0f64 + 1e-5).sqrt()];
        assert_close(&invstd, &want_invstd, 1e-15, 0.0, "save_invstd");
        let want_rm = [0.9 * 0.5 + 0.1 * 2.5, 0.1 * 11.0 - 0.9];
        let want_rv = [0.9 * 2.0 + 0.1 * (5.0 / 3.0), 0.9 * 1.0 + 0.1 * 4.0];
        assert_close(&rm, &want_rm, 1e-15, 0.0, "running_mean");
        assert_close(&rv, &want_rv, 1e-15, 0.0, "running_var");
        // Momentum 1 replaces the running statistics; momentum 0 keeps them.
        let (.., rm, rv) = bn_train(&x, &w, &b, (2, 2, 2), (&rm0, &rv0), 1.0);
        assert_close(&rm, &[2.5, 11.0], 1e-15, 0.0, "momentum 1 mean");
        assert_close(&rv, &[5.0 / 3.0, 4.0], 1e-15, 0.0, "momentum 1 var");
        let (.., rm, rv) = bn_train(&x, &w, &b, (2, 2, 2), (&rm0, &rv0), 0.0);
        assert_eq!((rm, rv), (rm0.to_vec(), rv0.to_vec()));
    }

    /// PyTorch's numbers (torch 2.15, float64): `BatchNorm1d(4)` in training mode on a
    /// [6, 4] batch (fixture `batchnorm1d`: `output.z1` → `output.n1`, `buffer.bn.*`; running
    /// statistics start at 0 and 1, momentum 0.1, eps 1e-5).
    #[test]
    fn batch_norm_matches_pytorch() {
        let x = [
            0.8831996807593163,
            0.22668942244177576,
            0.21732430631471847,
            -0.5770875562958859,
            0.005320953734323675,
            -0.5801610360438682,
            0.24527487191631953,
            -0.0910312256083119,
            0.07900079316215126,
            1.0099158728725632,
            -0.5099212364820225,
            -0.1682038802948827,
            -0.6738253659513345,
            -0.3953404616047001,
            -0.7125913307698403,
            0.011562214097930318,
            0.04818577418490265,
            -0.01639349785177109,
            -0.08726246855246336,
            -0.17672894857488758,
            0.508664830368114,
            -0.38056778538122255,
            0.7691315035667378,
            -0.02959883495368089,
        ];
        let w = [
            0.9811994282327859,
            1.371128174202274,
            0.8810386530181491,
            0.6050288753813756,
        ];
        let b = [
            -0.016523855599059983,
            -0.0388455084491001,
            -0.09804692418324978,
            -0.059657362371699954,
        ];
        let want_y = [
            1.4999279870476268,
            0.6022263283839684,
            0.31145998371629097,
            -1.3265535430990025,
            -0.2955745435506124,
            -1.47231046179249,
            0.36115331624795494,
            0.19299941776514068,
            -0.14487908405923544,
            2.616022155565614,
            -0.981510437901897,
            -0.048264667327296736,
            -1.6846148495783995,
            -0.9971083010659211,
            -1.34183775768577,
            0.5137362444007016,
            -0.20790424100953878,
            -0.022777296400446588,
            -0.23006508250115035,
            -0.07491650154602873,
            0.7339015975557994,
            -0.959125475385325,
            1.2925184330250727,
            0.3850548755762856,
        ];
        let want_rm = [
            0.014175777770957894,
            -0.0022642914261203806,
            -0.001300739233442505,
            -0.01718480386049531,
        ];
        let want_rv = [
            0.9276168382200394,
            0.9341244689899318,
            0.9294671708735416,
            0.9044932336773839,
        ];
        let (y, _, _, rm, rv) = bn_train(&x, &w, &b, (6, 4, 1), (&[0.0; 4], &[1.0; 4]), 0.1);
        assert_close(&y, &want_y, 1e-13, 1e-14, "y");
        assert_close(&rm, &want_rm, 1e-13, 1e-15, "running_mean");
        assert_close(&rv, &want_rv, 1e-13, 1e-15, "running_var");
    }

    #[test]
    #[should_panic(expected = "expected more than 1 value per channel when training")]
    fn batch_norm_rejects_a_single_value_per_channel() {
        bn_train(
            &[1.0, 2.0],
            &[1.0; 2],
            &[0.0; 2],
            (1, 2, 1),
            (&[0.0; 2], &[1.0; 2]),
            0.1,
        );
    }

    #[test]
    fn batch_norm_eval_matches_naive() {
        let (n, c, s) = (3, 2, 4);
        let x = values(n * c * s, 1.0);
        let (w, b) = (values(c, 2.0), values(c, 3.0));
        let (rm, rv) = ([0.3, -0.2], [1.5, 0.25]);
        let mut y = vec![f64::NAN; x.len()];
        batch_norm_forward_eval(&x, &w, &b, &rm, &rv, n, c, s, 1e-5, &mut y);
        let mut want = vec![0.0; x.len()];
        for i in 0..n {
            for ch in 0..c {
                for k in 0..s {
                    let at = (i * c + ch) * s + k;
                    want[at] = (x[at] - rm[ch]) / (rv[ch] + 1e-5f64).sqrt() * w[ch] + b[ch];
                }
            }
        }
        assert_close(&y, &want, 1e-14, 1e-15, "eval y");
    }

    #[test]
    fn batch_norm_backward_matches_finite_differences() {
        for (k, &(n, c, s)) in SHAPES.iter().enumerate() {
            let seed = 10.0 * k as f64;
            let mut x = values(n * c * s, 1.0 + seed);
            let (mut w, mut b) = (values(c, 2.0 + seed), values(c, 3.0 + seed));
            let r = values(n * c * s, 4.0 + seed);
            let (x0, w0, b0) = (x.clone(), w.clone(), b.clone());
            let f = |x: &[f64], w: &[f64], b: &[f64]| weighted(&naive_bn(x, w, b, n, c, s), &r);
            let num_x = numeric_gradient(|x| f(x, &w0, &b0), &mut x, 1e-6);
            let num_w = numeric_gradient(|w| f(&x0, w, &b0), &mut w, 1e-6);
            let num_b = numeric_gradient(|b| f(&x0, &w0, b), &mut b, 1e-6);
            let (_, mean, invstd, _, _) = bn_train(
                &x0,
                &w0,
                &b0,
                (n, c, s),
                (&vec![0.0; c], &vec![1.0; c]),
                0.1,
            );
            let (mut dw, mut db) = (vec![f64::NAN; c], vec![f64::NAN; c]);
            batch_norm_backward(
                &x0, &r, &w0, &mean, &invstd, n, c, s, &mut dw, &mut db, None,
            );
            assert_close(&dw, &num_w, 1e-6, 1e-8, "bn dweight");
            assert_close(&db, &num_b, 1e-6, 1e-8, "bn dbias");
            check_both_modes(&num_x, 1e-6, 1e-8, "bn dx", |dx, acc| {
                let (mut dw, mut db) = (vec![f64::NAN; c], vec![f64::NAN; c]);
                batch_norm_backward(
                    &x0,
                    &r,
                    &w0,
                    &mean,
                    &invstd,
                    n,
                    c,
                    s,
                    &mut dw,
                    &mut db,
                    Some((dx, acc)),
                );
                assert_close(&dw, &num_w, 1e-6, 1e-8, "bn dweight with dx");
            });
        }
    }

    fn ln_forward(x: &[f64], w: &[f64], b: &[f64], rows: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let cols = w.len();
        let mut y = vec![f64::NAN; rows * cols];
        let (mut mean, mut invstd) = (vec![f64::NAN; rows], vec![f64::NAN; rows]);
        layer_norm_forward(x, w, b, rows, cols, 1e-5, &mut y, &mut mean, &mut invstd);
        (y, mean, invstd)
    }

    #[test]
    fn layer_norm_forward_matches_naive() {
        for &(rows, cols) in &[(3, 5), (4, 1), (2, 9)] {
            let x = values(rows * cols, 1.0);
            let (w, b) = (values(cols, 2.0), values(cols, 3.0));
            let (y, mean, invstd) = ln_forward(&x, &w, &b, rows);
            assert_close(&y, &naive_ln(&x, &w, &b, cols), 1e-13, 1e-14, "ln y");
            for (r, row) in x.chunks(cols).enumerate() {
                let mu = row.iter().sum::<f64>() / cols as f64;
                let var = row.iter().map(|v| (v - mu).powi(2)).sum::<f64>() / cols as f64;
                assert_close(&[mean[r]], &[mu], 1e-14, 1e-15, "ln mean");
                assert_close(
                    &[invstd[r]],
                    &[1.0 / (var + 1e-5).sqrt()],
                    1e-14,
                    0.0,
                    "invstd",
                );
            }
        }
    }

    /// PyTorch's numbers (torch 2.15, float64): `LayerNorm(5)`, eps 1e-5, on a [3, 5] input
    /// (fixture `layernorm`: `output.z1` → `output.n1`).
    #[test]
    fn layer_norm_matches_pytorch() {
        let x = [
            1.1232830196219412,
            -0.24323710999816028,
            -0.41514991423966585,
            -0.6654117422460069,
            0.5468274271881108,
            0.17750655595900355,
            -0.1981378208405397,
            0.26958536325873167,
            0.16254480940591332,
            0.0524734563282695,
            0.6460770516417647,
            -1.1926460661434728,
            -0.5725476233182032,
            0.2513695703247883,
            -0.006062817662270459,
        ];
        let w = [
            0.6304652109772193,
            1.0491800566696154,
            1.4970114577421407,
            1.2474443844545156,
            1.0871630212942587,
        ];
        let b = [
            -0.14837370880392065,
            0.02465013377229285,
            0.1666059013602069,
            -0.019846147587146017,
            0.22139967774451308,
        ];
        let want = [
            0.8509072645279888,
            -0.4683836014628889,
            -0.9238738345769336,
            -1.3979859215899222,
            1.0021363928764073,
            0.18334206351429816,
            -1.8711894664427764,
            1.8103894912401872,
            0.5205685263338001,
            -0.05086153646456708,
            0.6543404274722625,
            -1.6318449020943746,
            -0.7570623550095907,
            0.8046842393381837,
            0.5058781301031782,
        ];
        let (y, ..) = ln_forward(&x, &w, &b, 3);
        assert_close(&y, &want, 1e-13, 1e-14, "ln y");
    }

    #[test]
    fn layer_norm_backward_matches_finite_differences() {
        for &(rows, cols) in &[(3, 5), (2, 9)] {
            let mut x = values(rows * cols, 5.0);
            let (mut w, mut b) = (values(cols, 6.0), values(cols, 7.0));
            let r = values(rows * cols, 8.0);
            let (x0, w0, b0) = (x.clone(), w.clone(), b.clone());
            let f = |x: &[f64], w: &[f64], b: &[f64]| weighted(&naive_ln(x, w, b, cols), &r);
            let num_x = numeric_gradient(|x| f(x, &w0, &b0), &mut x, 1e-6);
            let num_w = numeric_gradient(|w| f(&x0, w, &b0), &mut w, 1e-6);
            let num_b = numeric_gradient(|b| f(&x0, &w0, b), &mut b, 1e-6);
            let (_, mean, invstd) = ln_forward(&x0, &w0, &b0, rows);
            let (mut dw, mut db) = (vec![f64::NAN; cols], vec![f64::NAN; cols]);
            layer_norm_backward(
                &x0, &r, &w0, &mean, &invstd, rows, cols, &mut dw, &mut db, None,
            );
            assert_close(&dw, &num_w, 1e-6, 1e-8, "ln dweight");
            assert_close(&db, &num_b, 1e-6, 1e-8, "ln dbias");
            check_both_modes(&num_x, 1e-6, 1e-8, "ln dx", |dx, acc| {
                let (mut dw, mut db) = (vec![f64::NAN; cols], vec![f64::NAN; cols]);
                layer_norm_backward(
                    &x0,
                    &r,
                    &w0,
                    &mean,
                    &invstd,
                    rows,
                    cols,
                    &mut dw,
                    &mut db,
                    Some((dx, acc)),
                );
                assert_close(&db, &num_b, 1e-6, 1e-8, "ln dbias with dx");
            });
        }
    }

    /// Sizes large enough to be split between the threads (rows by chunks, the parameter
    /// gradients by columns), with rows that are not whole vectors: the same values as the
    /// definition, and dweight / dbias as column sums over the rows.
    #[test]
    fn layer_norm_large_matches_naive() {
        for &(rows, cols) in &[(40, 700), (9, 2051), (64, 129)] {
            let x = values(rows * cols, 9.0);
            let (w, b) = (values(cols, 10.0), values(cols, 11.0));
            let (y, mean, invstd) = ln_forward(&x, &w, &b, rows);
            assert_close(&y, &naive_ln(&x, &w, &b, cols), 1e-12, 1e-13, "ln y");
            let dy = values(rows * cols, 12.0);
            let (mut dw, mut db) = (vec![f64::NAN; cols], vec![f64::NAN; cols]);
            let mut dx = vec![f64::NAN; rows * cols];
            layer_norm_backward(
                &x,
                &dy,
                &w,
                &mean,
                &invstd,
                rows,
                cols,
                &mut dw,
                &mut db,
                Some((&mut dx, false)),
            );
            let (mut want_dw, mut want_db) = (vec![0.0; cols], vec![0.0; cols]);
            let mut want_dx = vec![0.0; rows * cols];
            for r in 0..rows {
                let row = r * cols..(r + 1) * cols;
                let xhat: Vec<f64> = x[row.clone()]
                    .iter()
                    .map(|v| (v - mean[r]) * invstd[r])
                    .collect();
                let g: Vec<f64> = dy[row.clone()].iter().zip(&w).map(|(d, w)| d * w).collect();
                let sum_g: f64 = g.iter().sum();
                let dot: f64 = g.iter().zip(&xhat).map(|(g, h)| g * h).sum();
                for c in 0..cols {
                    want_dw[c] += dy[r * cols + c] * xhat[c];
                    want_db[c] += dy[r * cols + c];
                    want_dx[r * cols + c] =
                        invstd[r] / cols as f64 * (cols as f64 * g[c] - sum_g - xhat[c] * dot);
                }
            }
            assert_close(&dw, &want_dw, 1e-12, 1e-12, "ln dweight");
            assert_close(&db, &want_db, 1e-12, 1e-12, "ln dbias");
            assert_close(&dx, &want_dx, 1e-10, 1e-12, "ln dx");
        }
    }

    #[test]
    fn f32_matches_f64() {
        let (n, c, s) = (3, 3, 5);
        let x = values(n * c * s, 1.0);
        let (w, b) = (values(c, 2.0), values(c, 3.0));
        let f = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<f32>>();
        let mut y = vec![0.0f32; x.len()];
        let (mut mean, mut invstd) = (vec![0.0f32; c], vec![0.0f32; c]);
        let (mut rm, mut rv) = (vec![0.0f32; c], vec![1.0f32; c]);
        batch_norm_forward_train(
            &f(&x),
            &f(&w),
            &f(&b),
            n,
            c,
            s,
            1e-5,
            &mut y,
            &mut mean,
            &mut invstd,
            &mut rm,
            &mut rv,
            0.1,
        );
        let y64: Vec<f64> = y.iter().map(|&v| v as f64).collect();
        assert_close(&y64, &naive_bn(&x, &w, &b, n, c, s), 1e-5, 1e-5, "bn f32");
        let mut y = vec![0.0f32; 15];
        let (mut mean, mut invstd) = (vec![0.0f32; 3], vec![0.0f32; 3]);
        let x = values(15, 4.0);
        let (w, b) = (values(5, 5.0), values(5, 6.0));
        layer_norm_forward(
            &f(&x),
            &f(&w),
            &f(&b),
            3,
            5,
            1e-5,
            &mut y,
            &mut mean,
            &mut invstd,
        );
        let y64: Vec<f64> = y.iter().map(|&v| v as f64).collect();
        assert_close(&y64, &naive_ln(&x, &w, &b, 5), 1e-5, 1e-5, "ln f32");
    }
}
