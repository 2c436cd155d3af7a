//! 2-D resizing of NCHW activations, PyTorch's `nn.Upsample` / `F.interpolate` with
//! `align_corners=False`: nearest-neighbour and bilinear, and their VJPs.
//!
//! `x` is `[batch, channels, in_h, in_w]` and `y` is `[batch, channels, out_h, out_w]`; the
//! output size is any size (an integer scale factor `s` gives `out = s · in`, for which
//! PyTorch's `1 / s` and `in / out` are the same ratio).

use crate::Float;

/// The sizes of a resize: batch, channels, input and output extents.
///
/// ```
/// use kiln_runtime::kernels::upsample::{upsample_nearest2d_forward, Upsample2dGeometry};
/// let g = Upsample2dGeometry { batch: 1, channels: 1, in_h: 1, in_w: 2, out_h: 2, out_w: 4 };
/// let mut y = [0.0f32; 8];
/// upsample_nearest2d_forward(&[1.0, 2.0], &g, &mut y);
/// assert_eq!(y, [1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 2.0, 2.0]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Upsample2dGeometry {
    /// Samples in the batch.
    pub batch: usize,
    /// Channels (resized independently).
    pub channels: usize,
    /// Input height (≥ 1).
    pub in_h: usize,
    /// Input width (≥ 1).
    pub in_w: usize,
    /// Output height (≥ 1).
    pub out_h: usize,
    /// Output width (≥ 1).
    pub out_w: usize,
}

impl Upsample2dGeometry {
    /// The elements of `x`: `batch · channels · in_h · in_w`.
    pub fn input_len(&self) -> usize {
        self.batch * self.channels * self.in_h * self.in_w
    }

    /// The elements of `y`: `batch · channels · out_h · out_w`.
    pub fn output_len(&self) -> usize {
        self.batch * self.channels * self.out_h * self.out_w
    }

    #[track_caller]
    fn check(&self, what: &str, x_len: usize, y_len: usize) {
        assert!(
            self.in_h > 0 && self.in_w > 0 && self.out_h > 0 && self.out_w > 0,
            "{what}: input ({}, {}) and output ({}, {}) sizes must be at least 1",
            self.in_h,
            self.in_w,
            self.out_h,
            self.out_w
        );
        for (name, got, want) in [
            ("x", x_len, self.input_len()),
            ("y", y_len, self.output_len()),
        ] {
            assert_eq!(
                got, want,
                "{what}: {name} has {got} elements, expected {want}"
            );
        }
    }
}

/// PyTorch's `nearest_idx`: the source of output index `o` is `⌊o · (in / out)⌋` with the ratio
/// and the product in f32 (whatever the tensor's type, as PyTorch computes them), capped at
/// the last input.
#[inline]
fn nearest_source(o: usize, input: usize, output: usize) -> usize {
    if output == input {
        o
    } else if output == 2 * input {
        o >> 1
    } else {
        let scale = input as f32 / output as f32;
        ((o as f32 * scale).floor() as usize).min(input - 1)
    }
}

/// `y = upsample_nearest(x)`: every output takes the input at its nearest source index
/// `⌊dst · in / out⌋` along each axis, `y` overwritten.
///
/// # Panics
/// If a slice's length disagrees with `g`, or a size is 0 (caller bugs).
pub fn upsample_nearest2d_forward<F: Float>(x: &[F], g: &Upsample2dGeometry, y: &mut [F]) {
    g.check("upsample_nearest2d_forward", x.len(), y.len());
    for (x_p, y_p) in x
        .chunks_exact(g.in_h * g.in_w)
        .zip(y.chunks_exact_mut(g.out_h * g.out_w))
    {
        for (i, y_row) in y_p.chunks_exact_mut(g.out_w).enumerate() {
            let x_row = &x_p[nearest_source(i, g.in_h, g.out_h) * g.in_w..][..g.in_w];
            for (j, slot) in y_row.iter_mut().enumerate() {
                *slot = x_row[nearest_source(j, g.in_w, g.out_w)];
            }
        }
    }
}

/// The VJP of [`upsample_nearest2d_forward`]: each input gets the sum of `dy` over the outputs
/// that copied it, written into `dx` or added when `accumulate`.
///
/// # Panics
/// If a slice's length disagrees with `g`, or a size is 0 (caller bugs).
pub fn upsample_nearest2d_backward<F: Float>(
    dy: &[F],
    g: &Upsample2dGeometry,
    dx: &mut [F],
    accumulate: bool,
) {
    g.check("upsample_nearest2d_backward", dx.len(), dy.len());
    if !accumulate {
        dx.fill(F::ZERO);
    }
    for (dx_p, dy_p) in dx
        .chunks_exact_mut(g.in_h * g.in_w)
        .zip(dy.chunks_exact(g.out_h * g.out_w))
    {
        for (i, dy_row) in dy_p.chunks_exact(g.out_w).enumerate() {
            let dx_row = &mut dx_p[nearest_source(i, g.in_h, g.out_h) * g.in_w..][..g.in_w];
            for (j, &d) in dy_row.iter().enumerate() {
                dx_row[nearest_source(j, g.in_w, g.out_w)] += d;
            }
        }
    }
}

/// PyTorch's linear source (`align_corners=False`) of output index `o`: the two inputs and
/// their weights, given `scale = in / out`. The source coordinate is `(o + ½) · scale − ½`,
/// clamped at 0; its floor and
/// the next input (the same one at the last input) are mixed by the fractional part. Equal
/// sizes copy.
#[inline(always)]
fn linear_source<F: Float>(
    o: usize,
    input: usize,
    output: usize,
    scale: F,
) -> (usize, usize, F, F) {
    if input == output {
        return (o, o, F::ONE, F::ZERO);
    }
    let half = F::from_f64(0.5);
    let real = (scale * (F::from_usize(o) + half) - half).max(F::ZERO);
    // `real` is not negative, so truncation is the floor.
    let i0 = (real.to_f64() as usize).min(input - 1);
    let lambda1 = (real - F::from_usize(i0)).max(F::ZERO).min(F::ONE);
    let i1 = if i0 < input - 1 { i0 + 1 } else { i0 };
    (i0, i1, F::ONE - lambda1, lambda1)
}

/// The source-to-output ratios `in / out` along both axes, in `F` as PyTorch computes them.
fn ratios<F: Float>(g: &Upsample2dGeometry) -> (F, F) {
    (
        F::from_usize(g.in_h) / F::from_usize(g.out_h),
        F::from_usize(g.in_w) / F::from_usize(g.out_w),
    )
}

/// `y = upsample_bilinear(x)` (`align_corners=False`): every output mixes the four inputs
/// around its source point, `y` overwritten.
///
/// # Panics
/// If a slice's length disagrees with `g`, or a size is 0 (caller bugs).
///
/// ```
/// use kiln_runtime::kernels::upsample::{upsample_bilinear2d_forward, Upsample2dGeometry};
/// let g = Upsample2dGeometry { batch: 1, channels: 1, in_h: 1, in_w: 2, out_h: 1, out_w: 4 };
/// let mut y = [0.0f64; 4];
/// upsample_bilinear2d_forward(&[0.0, 4.0], &g, &mut y);
/// assert_eq!(y, [0.0, 1.0, 3.0, 4.0]);
/// ```
pub fn upsample_bilinear2d_forward<F: Float>(x: &[F], g: &Upsample2dGeometry, y: &mut [F]) {
    g.check("upsample_bilinear2d_forward", x.len(), y.len());
    let (scale_h, scale_w) = ratios::<F>(g);
    for (x_p, y_p) in x
        .chunks_exact(g.in_h * g.in_w)
        .zip(y.chunks_exact_mut(g.out_h * g.out_w))
    {
        for (i, y_row) in y_p.chunks_exact_mut(g.out_w).enumerate() {
            let (h0, h1, a0, a1) = linear_source(i, g.in_h, g.out_h, scale_h);
            let (r0, r1) = (&x_p[h0 * g.in_w..][..g.in_w], &x_p[h1 * g.in_w..][..g.in_w]);
            for (j, slot) in y_row.iter_mut().enumerate() {
                let (w0, w1, b0, b1) = linear_source(j, g.in_w, g.out_w, scale_w);
                *slot = a0 * (b0 * r0[w0] + b1 * r0[w1]) + a1 * (b0 * r1[w0] + b1 * r1[w1]);
            }
        }
    }
}

/// The VJP of [`upsample_bilinear2d_forward`]: each output's `dy` goes to its four inputs
/// with the forward's weights, written into `dx` or added when `accumulate`.
///
/// # Panics
/// If a slice's length disagrees with `g`, or a size is 0 (caller bugs).
pub fn upsample_bilinear2d_backward<F: Float>(
    dy: &[F],
    g: &Upsample2dGeometry,
    dx: &mut [F],
    accumulate: bool,
) {
    g.check("upsample_bilinear2d_backward", dx.len(), dy.len());
    let (scale_h, scale_w) = ratios::<F>(g);
    if !accumulate {
        dx.fill(F::ZERO);
    }
    for (dx_p, dy_p) in dx
        .chunks_exact_mut(g.in_h * g.in_w)
        .zip(dy.chunks_exact(g.out_h * g.out_w))
    {
        for (i, dy_row) in dy_p.chunks_exact(g.out_w).enumerate() {
            let (h0, h1, a0, a1) = linear_source(i, g.in_h, g.out_h, scale_h);
            for (j, &d) in dy_row.iter().enumerate() {
                let (w0, w1, b0, b1) = linear_source(j, g.in_w, g.out_w, scale_w);
                dx_p[h0 * g.in_w + w0] += a0 * b0 * d;
                dx_p[h0 * g.in_w + w1] += a0 * b1 * d;
                dx_p[h1 * g.in_w + w0] += a1 * b0 * d;
                dx_p[h1 * g.in_w + w1] += a1 * b1 * d;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::numeric_gradient;
    use crate::kernels::test_util::{assert_close, check_both_modes, values};

    fn geom(
        batch: usize,
        channels: usize,
        (in_h, in_w): (usize, usize),
        (out_h, out_w): (usize, usize),
    ) -> Upsample2dGeometry {
        Upsample2dGeometry {
            batch,
            channels,
            in_h,
            in_w,
            out_h,
            out_w,
        }
    }

    /// Doubling, tripling, a non-integer upscale, a downscale and an unchanged axis.
    fn cases() -> Vec<Upsample2dGeometry> {
        vec![
            geom(2, 2, (3, 4), (6, 8)),
            geom(1, 2, (2, 3), (6, 9)),
            geom(2, 1, (3, 5), (5, 7)),
            geom(1, 2, (5, 6), (3, 4)),
            geom(1, 1, (4, 3), (4, 7)),
        ]
    }

    /// Nearest by the definition, with the ratio in f64.
    fn naive_nearest(x: &[f64], g: &Upsample2dGeometry) -> Vec<f64> {
        let src = |o: usize, i: usize, out: usize| ((o * i) / out).min(i - 1);
        let mut y = Vec::new();
        for p in x.chunks(g.in_h * g.in_w) {
            for i in 0..g.out_h {
                for j in 0..g.out_w {
                    y.push(p[src(i, g.in_h, g.out_h) * g.in_w + src(j, g.in_w, g.out_w)]);
                }
            }
        }
        y
    }

    /// Bilinear as interpolation at a point: the source point's coordinates, clamped to
    /// [0, in − 1], mixing its four neighbours.
    fn naive_bilinear(x: &[f64], g: &Upsample2dGeometry) -> Vec<f64> {
        let coord = |o: usize, i: usize, out: usize| {
            ((o as f64 + 0.5) * i as f64 / out as f64 - 0.5).clamp(0.0, (i - 1) as f64)
        };
        let mut y = Vec::new();
        for p in x.chunks(g.in_h * g.in_w) {
            let at = |h: usize, w: usize| p[h.min(g.in_h - 1) * g.in_w + w.min(g.in_w - 1)];
            for i in 0..g.out_h {
                let h = coord(i, g.in_h, g.out_h);
                let (h0, fh) = (h.floor() as usize, h - h.floor());
                for j in 0..g.out_w {
                    let w = coord(j, g.in_w, g.out_w);
                    let (w0, fw) = (w.floor() as usize, w - w.floor());
                    y.push(
                        (1.0 - fh) * ((1.0 - fw) * at(h0, w0) + fw * at(h0, w0 + 1))
                            + fh * ((1.0 - fw) * at(h0 + 1, w0) + fw * at(h0 + 1, w0 + 1)),
                    );
                }
            }
        }
        y
    }

    fn weighted(y: &[f64], r: &[f64]) -> f64 {
        y.iter().zip(r).map(|(a, b)| a * b).sum()
    }

    #[test]
    fn forward_matches_the_definition() {
        for (k, g) in cases().iter().enumerate() {
            let x = values(g.input_len(), 1.0 + k as f64);
            let mut y = vec![f64::NAN; g.output_len()];
            upsample_nearest2d_forward(&x, g, &mut y);
            assert_eq!(y, naive_nearest(&x, g), "nearest {g:?}");
            upsample_bilinear2d_forward(&x, g, &mut y);
            assert_close(
                &y,
                &naive_bilinear(&x, g),
                1e-14,
                1e-14,
                &format!("bilinear {g:?}"),
            );
        }
    }

    #[test]
    fn backward_matches_finite_differences() {
        for (k, g) in cases().iter().enumerate() {
            let mut x = values(g.input_len(), 3.0 + k as f64);
            let r = values(g.output_len(), 4.0 + k as f64);
            // Both are linear in x: a wide step has no truncation error.
            let num = numeric_gradient(|x| weighted(&naive_nearest(x, g), &r), &mut x, 1e-3);
            check_both_modes(&num, 1e-6, 1e-9, &format!("nearest dx {g:?}"), |dx, acc| {
                upsample_nearest2d_backward(&r, g, dx, acc)
            });
            let num = numeric_gradient(|x| weighted(&naive_bilinear(x, g), &r), &mut x, 1e-3);
            check_both_modes(
                &num,
                1e-6,
                1e-9,
                &format!("bilinear dx {g:?}"),
                |dx, acc| upsample_bilinear2d_backward(&r, g, dx, acc),
            );
        }
    }

    #[test]
    fn nearest_indices_follow_pytorch() {
        // torch.nn.functional.interpolate(torch.arange(5.).view(1, 1, 1, 5), size=(1, 7)).
        let g = geom(1, 1, (1, 5), (1, 7));
        let mut y = [0.0f32; 7];
        upsample_nearest2d_forward(&[0.0, 1.0, 2.0, 3.0, 4.0], &g, &mut y);
        assert_eq!(y, [0.0, 0.0, 1.0, 2.0, 2.0, 3.0, 4.0]);
        // f32 bilinear follows f64.
        let g = geom(1, 1, (3, 5), (5, 7));
        let x = values(g.input_len(), 9.0);
        let xf: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let mut yf = vec![0.0f32; g.output_len()];
        upsample_bilinear2d_forward(&xf, &g, &mut yf);
        let y: Vec<f64> = yf.iter().map(|&v| v as f64).collect();
        assert_close(&y, &naive_bilinear(&x, &g), 1e-6, 1e-6, "bilinear f32");
    }
}
