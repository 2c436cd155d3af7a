//! Group norm (PyTorch's `nn.GroupNorm(groups, C, eps, affine=True)`) and its VJPs.
//!
//! Takes an `[n, c, spatial]` tensor (`[N, C]` is `spatial = 1`, `[N, C, L]` is `spatial = L`,
//! `[N, C, H, W]` is `spatial = H·W`), `c` channels in `groups` groups of `c / groups`
//! consecutive channels, and the per-channel `weight` and `bias` (`[c]`); returns `y` of the
//! input's shape and the statistics of every `(sample, group)`, `save_mean` and `save_invstd`
//! (`[n, groups]`), which the backward pass reads.
//!
//! Each `(sample, group)` is one contiguous run of `m = c / groups · spatial` elements,
//! normalised by its mean and BIASED variance with `invstd = 1 / √(var + eps)`, as PyTorch
//! does. The statistics are f64 sums whatever `F` is, and the output is formed as PyTorch's
//! CPU kernel forms it, `y = x · α + β` per channel with `α = invstd · weight`,
//! `β = bias − mean · α`. Nothing is allocated.
//!
//! Large inputs are shared with the helper thread ([`parallel::for_each_chunk`]): the forward
//! pass by runs (each `(sample, group)` is computed alone), the backward pass by groups (each
//! channel's parameter gradients summed over the samples in order, each run's `dx` alone), so
//! every result is the same bits on one thread or two.

use super::check_len;
use crate::kernels::parallel::{self, SharedMut};
use crate::kernels::store;
use crate::Float;
use std::ops::Range;

/// The fewest elements worth handing part of to the helper thread (as layer norm's).
const MIN_SPLIT_ELEMENTS: usize = 1 << 14;

/// Whether `units` independent pieces of work over `elements` in all are worth splitting
/// between the threads.
fn split(units: usize, elements: usize) -> bool {
    units >= 2 && elements >= MIN_SPLIT_ELEMENTS && parallel::threads() >= 2
}

/// Checks that `groups` divides `c` (the compiler checks it first; a direct caller may not).
#[track_caller]
fn check_groups(what: &str, c: usize, groups: usize) {
    assert!(
        groups > 0 && c.is_multiple_of(groups),
        "{what}: {groups} groups do not divide {c} channels"
    );
}

/// The layout: `groups` groups of `per_group` channels of `spatial` positions, a run of
/// `m = per_group · spatial` elements per `(sample, group)`.
#[derive(Clone, Copy)]
struct Layout {
    spatial: usize,
    groups: usize,
    per_group: usize,
    m: usize,
}

/// Group norm: per sample and group of `c / groups` channels, `y = (x − mean) · invstd ·
/// weight + bias` over the group's channels and spatial positions; `x`, `y` are
/// `[n, c, spatial]`, `weight` and `bias` `[c]`. Writes each group's mean and `invstd` to
/// `save_mean` and `save_invstd` (`[n, groups]`) for [`group_norm_backward`].
///
/// # Panics
/// If a slice's length disagrees with the sizes, or `groups` does not divide `c` (caller
/// bugs).
///
/// ```
/// use kiln_runtime::kernels::norm::group_norm_forward;
/// // One sample, two channels in one group, one position each: [1, 3] has mean 2, var 1.
/// let (mut y, mut mean, mut invstd) = ([0.0f64; 2], [0.0], [0.0]);
/// group_norm_forward(&[1.0, 3.0], &[1.0, 2.0], &[0.0, 0.5], 1, 2, 1, 1, 0.0, &mut y, &mut mean, &mut invstd);
/// assert_eq!((y, mean, invstd), ([-1.0, 2.5], [2.0], [1.0]));
/// ```
#[allow(clippy::too_many_arguments)]
pub fn group_norm_forward<F: Float>(
    x: &[F],
    weight: &[F],
    bias: &[F],
    n: usize,
    c: usize,
    spatial: usize,
    groups: usize,
    eps: F,
    y: &mut [F],
    save_mean: &mut [F],
    save_invstd: &mut [F],
) {
    const WHAT: &str = "group_norm_forward";
    check_groups(WHAT, c, groups);
    let len = n * c * spatial;
    check_len(WHAT, "x", x.len(), len);
    check_len(WHAT, "y", y.len(), len);
    check_len(WHAT, "weight", weight.len(), c);
    check_len(WHAT, "bias", bias.len(), c);
    check_len(WHAT, "save_mean", save_mean.len(), n * groups);
    check_len(WHAT, "save_invstd", save_invstd.len(), n * groups);
    let per_group = c / groups;
    let layout = Layout {
        spatial,
        groups,
        per_group,
        m: per_group * spatial,
    };
    let m = layout.m;
    if m == 0 {
        // PyTorch gives NaN statistics for an empty group (0 / 0); there is nothing to write.
        save_mean.fill(F::from_f64(f64::NAN));
        save_invstd.fill(F::from_f64(f64::NAN));
        return;
    }
    let eps = eps.to_f64();
    let runs = n * groups;
    if !split(runs, len) {
        return forward_runs(x, weight, bias, layout, 0, eps, y, save_mean, save_invstd);
    }
    let chunks = parallel::chunk_count(runs);
    let (y, mean, invstd) = (
        SharedMut::new(y),
        SharedMut::new(save_mean),
        SharedMut::new(save_invstd),
    );
    parallel::for_each_chunk(chunks, |chunk, _| {
        let r = parallel::chunk_range(runs, chunks, chunk);
        let elems = r.start * m..r.end * m;
        // SAFETY: each chunk is claimed once, and chunks cover disjoint runs.
        let (y, mean, invstd) = unsafe {
            (
                y.range(elems.clone()),
                mean.range(r.clone()),
                invstd.range(r.clone()),
            )
        };
        forward_runs(
            &x[elems], weight, bias, layout, r.start, eps, y, mean, invstd,
        );
    });
}

/// The forward over consecutive runs, the first being run `first` (`sample · groups +
/// group`): `x` and `y` hold those runs, `mean` and `invstd` their statistics.
#[allow(clippy::too_many_arguments)]
fn forward_runs<F: Float>(
    x: &[F],
    weight: &[F],
    bias: &[F],
    layout: Layout,
    first: usize,
    eps: f64,
    y: &mut [F],
    mean: &mut [F],
    invstd: &mut [F],
) {
    let Layout {
        spatial,
        groups,
        per_group,
        m,
    } = layout;
    let runs = x.chunks_exact(m).zip(y.chunks_exact_mut(m));
    for (k, (xs, ys)) in runs.enumerate() {
        let mu = xs.iter().map(|v| v.to_f64()).sum::<f64>() / m as f64;
        let sq: f64 = xs
            .iter()
            .map(|v| {
                let d = v.to_f64() - mu;
                d * d
            })
            .sum();
        let is = 1.0 / (sq / m as f64 + eps).sqrt();
        mean[k] = F::from_f64(mu);
        invstd[k] = F::from_f64(is);
        let channel = ((first + k) % groups) * per_group;
        let channels = xs.chunks_exact(spatial).zip(ys.chunks_exact_mut(spatial));
        for (ch, (xc, yc)) in (channel..).zip(channels) {
            let alpha = F::from_f64(is) * weight[ch];
            let beta = bias[ch] - F::from_f64(mu) * alpha;
            for (yv, &xv) in yc.iter_mut().zip(xc) {
                *yv = xv * alpha + beta;
            }
        }
    }
}

/// The VJPs of [`group_norm_forward`], from its `save_mean` / `save_invstd`. With
/// `x̂ = (x − mean) · invstd`, `g = dy · weight[channel]` and sums over the `m` elements of a
/// `(sample, group)`:
///
/// - `dweight = Σ_samples Σ_spatial dy · x̂` and `dbias = Σ_samples Σ_spatial dy`, per
///   channel, OVERWRITTEN (`[c]`);
/// - `dx = invstd · (g − Σ g / m − x̂ · Σ g · x̂ / m)`, written or added to the buffer of
///   `dx = Some((buffer, accumulate))`.
///
/// # Panics
/// If a slice's length disagrees with the sizes, or `groups` does not divide `c` (caller
/// bugs).
#[allow(clippy::too_many_arguments)]
pub fn group_norm_backward<F: Float>(
    x: &[F],
    dy: &[F],
    weight: &[F],
    save_mean: &[F],
    save_invstd: &[F],
    n: usize,
    c: usize,
    spatial: usize,
    groups: usize,
    dweight: &mut [F],
    dbias: &mut [F],
    dx: Option<(&mut [F], bool)>,
) {
    const WHAT: &str = "group_norm_backward";
    check_groups(WHAT, c, groups);
    let len = n * c * spatial;
    check_len(WHAT, "x", x.len(), len);
    check_len(WHAT, "dy", dy.len(), len);
    check_len(WHAT, "weight", weight.len(), c);
    check_len(WHAT, "save_mean", save_mean.len(), n * groups);
    check_len(WHAT, "save_invstd", save_invstd.len(), n * groups);
    check_len(WHAT, "dweight", dweight.len(), c);
    check_len(WHAT, "dbias", dbias.len(), c);
    if let Some((dx, _)) = dx.as_ref() {
        check_len(WHAT, "dx", dx.len(), len);
    }
    let per_group = c / groups;
    let pass = Backward {
        x,
        dy,
        weight,
        mean: save_mean,
        invstd: save_invstd,
        n,
        layout: Layout {
            spatial,
            groups,
            per_group,
            m: per_group * spatial,
        },
    };
    if pass.layout.m == 0 {
        dweight.fill(F::ZERO);
        dbias.fill(F::ZERO);
        return;
    }
    let accumulate = dx.as_ref().is_some_and(|(_, a)| *a);
    let dx = dx.map(|(dx, _)| SharedMut::new(dx));
    let dx = dx.as_ref().map(|dx| (dx, accumulate));
    if !split(groups, len) {
        // SAFETY: one call over every group, and nothing else borrows `dx`.
        return unsafe { pass.groups(0..groups, dweight, dbias, dx) };
    }
    let chunks = parallel::chunk_count(groups);
    let (dweight, dbias) = (SharedMut::new(dweight), SharedMut::new(dbias));
    parallel::for_each_chunk(chunks, |chunk, _| {
        let r = parallel::chunk_range(groups, chunks, chunk);
        let channels = r.start * per_group..r.end * per_group;
        // SAFETY: each chunk is claimed once, and chunks cover disjoint groups, hence
        // disjoint channels (and, in `groups`, disjoint runs of `dx`).
        unsafe {
            let (dw, db) = (dweight.range(channels.clone()), dbias.range(channels));
            pass.groups(r, dw, db, dx);
        }
    });
}

/// What the backward pass reads.
struct Backward<'a, F> {
    x: &'a [F],
    dy: &'a [F],
    weight: &'a [F],
    mean: &'a [F],
    invstd: &'a [F],
    n: usize,
    layout: Layout,
}

impl<F: Float> Backward<'_, F> {
    /// The gradients of the groups `groups`: `dweight` and `dbias` hold their channels, and
    /// each of their runs of `dx` (if asked for) is taken from the shared buffer.
    ///
    /// # Safety
    /// No other live reference from `dx` may overlap the runs of these groups (concurrent
    /// calls take disjoint groups).
    unsafe fn groups(
        &self,
        groups: Range<usize>,
        dweight: &mut [F],
        dbias: &mut [F],
        dx: Option<(&SharedMut<'_, F>, bool)>,
    ) {
        let Layout {
            spatial,
            groups: count,
            per_group,
            m,
        } = self.layout;
        dweight.fill(F::ZERO);
        dbias.fill(F::ZERO);
        for g in groups.clone() {
            let local = (g - groups.start) * per_group;
            let first = g * per_group;
            for i in 0..self.n {
                let k = i * count + g;
                let run = k * m..(k + 1) * m;
                let (xs, ds) = (&self.x[run.clone()], &self.dy[run.clone()]);
                let (mean, invstd) = (self.mean[k].to_f64(), self.invstd[k].to_f64());
                // Per channel, Σ dy and Σ dy · (x − mean) in f64; over the group, Σ g and
                // Σ g · x̂.
                let (mut sum_g, mut dot_g) = (0.0f64, 0.0f64);
                let channels = xs.chunks_exact(spatial).zip(ds.chunks_exact(spatial));
                for (j, (xc, dc)) in channels.enumerate() {
                    let (mut sum_dy, mut dot) = (0.0f64, 0.0f64);
                    for (&xv, &d) in xc.iter().zip(dc) {
                        let d = d.to_f64();
                        sum_dy += d;
                        dot += d * (xv.to_f64() - mean);
                    }
                    dbias[local + j] += F::from_f64(sum_dy);
                    dweight[local + j] += F::from_f64(dot * invstd);
                    let w = self.weight[first + j].to_f64();
                    sum_g += w * sum_dy;
                    dot_g += w * dot * invstd;
                }
                let Some((dx, accumulate)) = dx else {
                    continue;
                };
                // SAFETY: run `k` belongs to group `g`, which only this call handles (the
                // caller's contract).
                let dxs = unsafe { dx.range(run) };
                let mean_g = F::from_f64(sum_g / m as f64);
                let mean_dot = F::from_f64(dot_g / m as f64);
                let (mean_f, invstd_f) = (self.mean[k], self.invstd[k]);
                let channels = xs
                    .chunks_exact(spatial)
                    .zip(ds.chunks_exact(spatial))
                    .zip(dxs.chunks_exact_mut(spatial));
                for (ch, ((xc, dc), dxc)) in (first..).zip(channels) {
                    let w = self.weight[ch];
                    for ((slot, &xv), &d) in dxc.iter_mut().zip(xc).zip(dc) {
                        let xhat = (xv - mean_f) * invstd_f;
                        store(
                            slot,
                            (d * w - mean_g - xhat * mean_dot) * invstd_f,
                            accumulate,
                        );
                    }
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

    const EPS: f64 = 1e-5;

    fn weighted(y: &[f64], r: &[f64]) -> f64 {
        y.iter().zip(r).map(|(a, b)| a * b).sum()
    }

    /// Group norm written from the definition: index (i, ch, s) explicitly, the group of a
    /// channel `ch / (c / groups)`.
    fn naive_gn(x: &[f64], w: &[f64], b: &[f64], (n, c, s, groups): Dims) -> Vec<f64> {
        let at = |i: usize, ch: usize, k: usize| (i * c + ch) * s + k;
        let per = c / groups;
        let mut y = vec![0.0; x.len()];
        for i in 0..n {
            for g in 0..groups {
                let members =
                    || (g * per..(g + 1) * per).flat_map(move |ch| (0..s).map(move |k| (ch, k)));
                let m = (per * s) as f64;
                let mean = members().map(|(ch, k)| x[at(i, ch, k)]).sum::<f64>() / m;
                let var = members()
                    .map(|(ch, k)| (x[at(i, ch, k)] - mean).powi(2))
                    .sum::<f64>()
                    / m;
                for (ch, k) in members() {
                    y[at(i, ch, k)] = (x[at(i, ch, k)] - mean) / (var + EPS).sqrt() * w[ch] + b[ch];
                }
            }
        }
        y
    }

    /// `(n, c, spatial, groups)`.
    type Dims = (usize, usize, usize, usize);

    /// [N, C], [N, C, L] and [N, C, H·W] shapes with one group, one group per channel, and
    /// groups in between.
    const SHAPES: [Dims; 7] = [
        (3, 4, 1, 2),
        (2, 6, 1, 6),
        (2, 6, 5, 1),
        (2, 6, 5, 3),
        (3, 4, 6, 4),
        (2, 8, 12, 2),
        (1, 2, 3, 1),
    ];

    /// Runs the forward on fresh buffers; returns (y, mean, invstd).
    fn forward(x: &[f64], w: &[f64], b: &[f64], (n, c, s, g): Dims) -> [Vec<f64>; 3] {
        let mut y = vec![f64::NAN; x.len()];
        let (mut mean, mut invstd) = (vec![f64::NAN; n * g], vec![f64::NAN; n * g]);
        group_norm_forward(x, w, b, n, c, s, g, EPS, &mut y, &mut mean, &mut invstd);
        [y, mean, invstd]
    }

    #[test]
    fn forward_matches_naive() {
        for (k, &dims) in SHAPES.iter().enumerate() {
            let (n, c, s, g) = dims;
            let seed = k as f64;
            let x = values(n * c * s, 1.0 + seed);
            let (w, b) = (values(c, 2.0 + seed), values(c, 3.0 + seed));
            let [y, mean, invstd] = forward(&x, &w, &b, dims);
            assert_close(&y, &naive_gn(&x, &w, &b, dims), 1e-13, 1e-13, "y");
            // The saved statistics are each group's mean and 1 / √(var + eps).
            let m = c / g * s;
            for (run, (&mu, &is)) in x.chunks(m).zip(mean.iter().zip(&invstd)) {
                let want_mu = run.iter().sum::<f64>() / m as f64;
                let var = run.iter().map(|v| (v - want_mu).powi(2)).sum::<f64>() / m as f64;
                assert!((mu - want_mu).abs() < 1e-14, "mean {mu} vs {want_mu}");
                assert!((is - 1.0 / (var + EPS).sqrt()).abs() < 1e-12 * is, "invstd");
            }
        }
    }

    #[test]
    fn one_group_is_a_layer_norm_and_one_channel_per_group_an_instance_norm() {
        // groups = 1 normalises each sample over everything; groups = c each channel alone.
        let (n, c, s) = (2, 3, 4);
        let x = values(n * c * s, 5.0);
        let (one, zero) = (vec![1.0; c], vec![0.0; c]);
        let [y, ..] = forward(&x, &one, &zero, (n, c, s, 1));
        for run in y.chunks(c * s) {
            assert!(run.iter().sum::<f64>().abs() < 1e-13);
        }
        let [y, ..] = forward(&x, &one, &zero, (n, c, s, c));
        for run in y.chunks(s) {
            assert!(run.iter().sum::<f64>().abs() < 1e-13);
            let var = run.iter().map(|v| v * v).sum::<f64>() / s as f64;
            assert!((var - 1.0).abs() < 1e-3, "var {var}");
        }
    }

    #[test]
    fn pytorch_values() {
        // torch 2.15, float64: nn.GroupNorm(2, 4, eps=1e-5) with weight [1, 2, 0.5, -1] and
        // bias [0, 0.1, -0.2, 0.3] on x = arange(8).reshape(1, 4, 2) ** 2 / 10.
        let x: Vec<f64> = (0..8).map(|v| (v * v) as f64 / 10.0).collect();
        let (w, b) = ([1.0, 2.0, 0.5, -1.0], [0.0, 0.1, -0.2, 0.3]);
        let [y, mean, _] = forward(&x, &w, &b, (1, 4, 2, 2));
        let want = [
            -0.9999591861722581,
            -0.7142565615516129,
            0.38570262462064503,
            3.2427288708270967,
            -0.8280896336283093,
            -0.46339242700542005,
            -0.0646972066228895,
            -1.1182669146445698,
        ];
        assert_close(&y, &want, 1e-14, 1e-15, "y");
        assert_close(&mean, &[0.35, 3.15], 1e-15, 0.0, "mean");
    }

    #[test]
    fn backward_matches_finite_differences() {
        for (k, &dims) in SHAPES.iter().enumerate() {
            let (n, c, s, g) = dims;
            let seed = 10.0 + k as f64;
            let mut x = values(n * c * s, seed);
            let mut w = values(c, seed + 1.0);
            let mut b = values(c, seed + 2.0);
            let r = values(n * c * s, seed + 3.0);
            let [_, mean, invstd] = forward(&x, &w, &b, dims);
            let (mut dw, mut db) = (vec![f64::NAN; c], vec![f64::NAN; c]);
            let mut dx = vec![f64::NAN; x.len()];
            group_norm_backward(
                &x,
                &r,
                &w,
                &mean,
                &invstd,
                n,
                c,
                s,
                g,
                &mut dw,
                &mut db,
                Some((&mut dx, false)),
            );
            let (w0, b0, x0) = (w.clone(), b.clone(), x.clone());
            let num_w =
                numeric_gradient(|w| weighted(&naive_gn(&x0, w, &b0, dims), &r), &mut w, 1e-6);
            let num_b =
                numeric_gradient(|b| weighted(&naive_gn(&x0, &w0, b, dims), &r), &mut b, 1e-6);
            let num_x =
                numeric_gradient(|x| weighted(&naive_gn(x, &w0, &b0, dims), &r), &mut x, 1e-6);
            let what = format!("{dims:?}");
            assert_close(&dw, &num_w, 1e-6, 1e-8, &format!("dweight {what}"));
            assert_close(&db, &num_b, 1e-6, 1e-8, &format!("dbias {what}"));
            check_both_modes(&num_x, 1e-6, 1e-8, &format!("dx {what}"), |dx, acc| {
                let (mut dw, mut db) = (vec![0.0; c], vec![0.0; c]);
                group_norm_backward(
                    &x,
                    &r,
                    &w0,
                    &mean,
                    &invstd,
                    n,
                    c,
                    s,
                    g,
                    &mut dw,
                    &mut db,
                    Some((dx, acc)),
                );
            });
            let _ = dx;
        }
    }

    #[test]
    fn a_split_pass_gives_the_bits_of_one_pass() {
        // Large enough to be shared with the helper thread when there are two threads.
        let (n, c, s, g) = (3, 8, 700, 4);
        let len = n * c * s;
        assert!(len >= MIN_SPLIT_ELEMENTS);
        let x = values(len, 0.25);
        let (w, b) = (values(c, 1.25), values(c, 2.25));
        let r = values(len, 3.25);
        let [y, mean, invstd] = forward(&x, &w, &b, (n, c, s, g));
        let layout = Layout {
            spatial: s,
            groups: g,
            per_group: c / g,
            m: c / g * s,
        };
        let mut one = [vec![0.0; len], vec![0.0; n * g], vec![0.0; n * g]];
        let [y1, m1, i1] = &mut one;
        forward_runs(&x, &w, &b, layout, 0, EPS, y1, m1, i1);
        assert_eq!([y.clone(), mean.clone(), invstd.clone()], one);
        assert_close(&y, &naive_gn(&x, &w, &b, (n, c, s, g)), 1e-12, 1e-12, "y");
        for accumulate in [false, true] {
            let (mut dw, mut db, mut dx) = (vec![0.0; c], vec![0.0; c], values(len, 4.25));
            group_norm_backward(
                &x,
                &r,
                &w,
                &mean,
                &invstd,
                n,
                c,
                s,
                g,
                &mut dw,
                &mut db,
                Some((&mut dx, accumulate)),
            );
            let (mut dw1, mut db1, mut dx1) = (vec![0.0; c], vec![0.0; c], values(len, 4.25));
            let pass = Backward {
                x: &x,
                dy: &r,
                weight: &w,
                mean: &mean,
                invstd: &invstd,
                n,
                layout,
            };
            let shared = SharedMut::new(&mut dx1);
            // SAFETY: one call over every group, and nothing else borrows `dx1`.
            unsafe { pass.groups(0..g, &mut dw1, &mut db1, Some((&shared, accumulate))) };
            assert_eq!((dw, db, dx), (dw1, db1, dx1));
        }
    }

    #[test]
    fn parameter_gradients_without_dx() {
        let dims = (2, 4, 3, 2);
        let x = values(24, 1.5);
        let (w, b) = (values(4, 2.5), values(4, 3.5));
        let r = values(24, 4.5);
        let [_, mean, invstd] = forward(&x, &w, &b, dims);
        let (mut dw, mut db) = (vec![7.0; 4], vec![7.0; 4]);
        group_norm_backward(
            &x, &r, &w, &mean, &invstd, 2, 4, 3, 2, &mut dw, &mut db, None,
        );
        let mut dw2 = vec![0.0; 4];
        let mut db2 = vec![0.0; 4];
        let mut dx = vec![0.0; 24];
        group_norm_backward(
            &x,
            &r,
            &w,
            &mean,
            &invstd,
            2,
            4,
            3,
            2,
            &mut dw2,
            &mut db2,
            Some((&mut dx, false)),
        );
        assert_eq!((dw, db), (dw2, db2));
    }

    #[test]
    fn f32_matches_f64() {
        let dims = (2, 6, 5, 3);
        let x = values(60, 6.0);
        let (w, b) = (values(6, 7.0), values(6, 8.0));
        let f = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<_>>();
        let (xf, wf, bf) = (f(&x), f(&w), f(&b));
        let mut y = vec![0.0f32; 60];
        let (mut mean, mut invstd) = (vec![0.0f32; 6], vec![0.0f32; 6]);
        group_norm_forward(
            &xf,
            &wf,
            &bf,
            2,
            6,
            5,
            3,
            1e-5,
            &mut y,
            &mut mean,
            &mut invstd,
        );
        let y64: Vec<f64> = y.iter().map(|&v| v as f64).collect();
        assert_close(&y64, &naive_gn(&x, &w, &b, dims), 1e-5, 1e-5, "gn f32");
    }

    #[test]
    fn empty_batch_and_empty_groups() {
        let mut e: [f64; 0] = [];
        let (mut m, mut i) = ([0.0; 0], [0.0; 0]);
        group_norm_forward(
            &[],
            &[1.0; 4],
            &[0.0; 4],
            0,
            4,
            3,
            2,
            EPS,
            &mut e,
            &mut m,
            &mut i,
        );
        let (mut m, mut i) = ([0.0; 2], [0.0; 2]);
        group_norm_forward(
            &[],
            &[1.0; 4],
            &[0.0; 4],
            1,
            4,
            0,
            2,
            EPS,
            &mut e,
            &mut m,
            &mut i,
        );
        assert!(m.iter().chain(&i).all(|v| v.is_nan()));
        let (mut dw, mut db) = ([1.0; 4], [1.0; 4]);
        group_norm_backward(
            &[],
            &[],
            &[1.0; 4],
            &m,
            &i,
            1,
            4,
            0,
            2,
            &mut dw,
            &mut db,
            None,
        );
        assert_eq!((dw, db), ([0.0; 4], [0.0; 4]));
    }

    #[test]
    #[should_panic(expected = "3 groups do not divide 4 channels")]
    fn groups_must_divide_the_channels() {
        let (mut y, mut m, mut i) = ([0.0f64; 4], [0.0; 3], [0.0; 3]);
        group_norm_forward(
            &[0.0; 4], &[1.0; 4], &[0.0; 4], 1, 4, 1, 3, EPS, &mut y, &mut m, &mut i,
        );
    }
}
