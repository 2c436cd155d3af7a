//! 2-D resizing of NCHW activations, PyTorch's `nn.Upsample` / `F.interpolate`:
//! nearest-neighbour, and bilinear with `align_corners` false (the default) or true, and their
//! VJPs.
//!
//! `x` is `[batch, channels, in_h, in_w]` and `y` is `[batch, channels, out_h, out_w]`; the
//! output size is any size (an integer scale factor `s` gives `out = s · in`, for which
//! PyTorch's `1 / s` and `in / out` are the same ratio; with `align_corners` PyTorch uses
//! `(in − 1) / (out − 1)` whatever the scale factor).

use crate::Float;

/// The sizes of a resize: batch, channels, input and output extents.
///
/// ```
/// use kiln_runtime::kernels::upsample::{upsample_nearest2d_forward, Upsample2dGeometry};
/// let g = Upsample2dGeometry {
///     batch: 1, channels: 1, in_h: 1, in_w: 2, out_h: 2, out_w: 4, align_corners: false,
/// };
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
    /// Bilinear only: PyTorch's `align_corners=True`, where the corner pixels of the input and
    /// the output are aligned (output `o` samples input point `o · (in − 1) / (out − 1)`)
    /// instead of their edges (`(o + ½) · in / out − ½`). Nearest ignores it, as PyTorch
    /// accepts it only for the interpolating modes.
    pub align_corners: bool,
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

/// PyTorch's linear source of output index `o`: the two inputs and their weights, given the
/// ratio `scale` of [`ratios`]. The source coordinate is `(o + ½) · scale − ½` clamped at 0,
/// or with `align_corners` `o · scale`; its floor and the next input (the same one at the
/// last input) are mixed by the fractional part. Equal sizes copy.
#[inline(always)]
fn linear_source<F: Float>(
    o: usize,
    input: usize,
    output: usize,
    scale: F,
    align_corners: bool,
) -> (usize, usize, F, F) {
    if input == output {
        return (o, o, F::ONE, F::ZERO);
    }
    let real = if align_corners {
        scale * F::from_usize(o)
    } else {
        let half = F::from_f64(0.5);
        (scale * (F::from_usize(o) + half) - half).max(F::ZERO)
    };
    // `real` is not negative, so truncation is the floor.
    let i0 = (real.to_f64() as usize).min(input - 1);
    let lambda1 = (real - F::from_usize(i0)).max(F::ZERO).min(F::ONE);
    let i1 = if i0 < input - 1 { i0 + 1 } else { i0 };
    (i0, i1, F::ONE - lambda1, lambda1)
}

/// The source-to-output ratios along both axes, in `F` as PyTorch computes them: `in / out`,
/// or with `align_corners` `(in − 1) / (out − 1)` (0 for an output of one pixel, which then
/// samples the first input).
fn ratios<F: Float>(g: &Upsample2dGeometry) -> (F, F) {
    let ratio = |input: usize, output: usize| {
        if !g.align_corners {
            F::from_usize(input) / F::from_usize(output)
        } else if output > 1 {
            F::from_usize(input - 1) / F::from_usize(output - 1)
        } else {
            F::ZERO
        }
    };
    (ratio(g.in_h, g.out_h), ratio(g.in_w, g.out_w))
}

/// `y = upsample_bilinear(x)`: every output mixes the four inputs around its source point
/// (see [`Upsample2dGeometry::align_corners`]), `y` overwritten.
///
/// # Panics
/// If a slice's length disagrees with `g`, or a size is 0 (caller bugs).
///
/// ```
/// use kiln_runtime::kernels::upsample::{upsample_bilinear2d_forward, Upsample2dGeometry};
/// let mut g = Upsample2dGeometry {
///     batch: 1, channels: 1, in_h: 1, in_w: 2, out_h: 1, out_w: 4, align_corners: false,
/// };
/// let mut y = [0.0f64; 4];
/// upsample_bilinear2d_forward(&[0.0, 4.0], &g, &mut y);
/// assert_eq!(y, [0.0, 1.0, 3.0, 4.0]);
/// // The corners aligned: the ends are the input's ends, the rest evenly between.
/// g.align_corners = true;
/// upsample_bilinear2d_forward(&[0.0, 3.0], &g, &mut y);
/// assert_eq!(y, [0.0, 1.0, 2.0, 3.0]);
/// ```
pub fn upsample_bilinear2d_forward<F: Float>(x: &[F], g: &Upsample2dGeometry, y: &mut [F]) {
    g.check("upsample_bilinear2d_forward", x.len(), y.len());
    let (scale_h, scale_w) = ratios::<F>(g);
    for (x_p, y_p) in x
        .chunks_exact(g.in_h * g.in_w)
        .zip(y.chunks_exact_mut(g.out_h * g.out_w))
    {
        for (i, y_row) in y_p.chunks_exact_mut(g.out_w).enumerate() {
            let (h0, h1, a0, a1) = linear_source(i, g.in_h, g.out_h, scale_h, g.align_corners);
            let (r0, r1) = (&x_p[h0 * g.in_w..][..g.in_w], &x_p[h1 * g.in_w..][..g.in_w]);
            for (j, slot) in y_row.iter_mut().enumerate() {
                let (w0, w1, b0, b1) = linear_source(j, g.in_w, g.out_w, scale_w, g.align_corners);
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
            let (h0, h1, a0, a1) = linear_source(i, g.in_h, g.out_h, scale_h, g.align_corners);
            for (j, &d) in dy_row.iter().enumerate() {
                let (w0, w1, b0, b1) = linear_source(j, g.in_w, g.out_w, scale_w, g.align_corners);
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
            align_corners: false,
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
            if !g.align_corners {
                ((o as f64 + 0.5) * i as f64 / out as f64 - 0.5).clamp(0.0, (i - 1) as f64)
            } else if out > 1 {
                o as f64 * (i - 1) as f64 / (out - 1) as f64
            } else {
                0.0
            }
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

    /// Every case bilinear with the corners aligned, and outputs of one row or column.
    fn aligned_cases() -> Vec<Upsample2dGeometry> {
        let mut cases = cases();
        cases.push(geom(1, 2, (3, 4), (1, 5)));
        cases.push(geom(1, 1, (1, 4), (3, 1)));
        cases
            .into_iter()
            .map(|g| Upsample2dGeometry {
                align_corners: true,
                ..g
            })
            .collect()
    }

    #[test]
    fn aligned_corners_match_the_definition_and_finite_differences() {
        for (k, g) in aligned_cases().iter().enumerate() {
            let mut x = values(g.input_len(), 5.0 + k as f64);
            let mut y = vec![f64::NAN; g.output_len()];
            upsample_bilinear2d_forward(&x, g, &mut y);
            let label = format!("aligned bilinear {g:?}");
            assert_close(&y, &naive_bilinear(&x, g), 1e-14, 1e-14, &label);
            let r = values(g.output_len(), 6.0 + k as f64);
            let num = numeric_gradient(|x| weighted(&naive_bilinear(x, g), &r), &mut x, 1e-3);
            check_both_modes(&num, 1e-6, 1e-9, &format!("{label} dx"), |dx, acc| {
                upsample_bilinear2d_backward(&r, g, dx, acc)
            });
        }
        // torch.nn.functional.interpolate(torch.arange(3.).view(1, 1, 1, 3), size=(1, 5),
        // mode='bilinear', align_corners=True).
        let g = Upsample2dGeometry {
            align_corners: true,
            ..geom(1, 1, (1, 3), (1, 5))
        };
        let mut y = [0.0f32; 5];
        upsample_bilinear2d_forward(&[0.0, 1.0, 2.0], &g, &mut y);
        assert_eq!(y, [0.0, 0.5, 1.0, 1.5, 2.0]);
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
