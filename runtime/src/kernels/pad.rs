//! Padding of the trailing axes (PyTorch's `F.pad`): a constant, the reflection of the values
//! next to the border (`reflect`, without repeating the border value), the border value
//! itself (`replicate`) or the values from the other end (`circular`), and the VJP, which adds each padded position's gradient into the
//! input value it copies.
//!
//! A tensor is `[outer.., d_1, .., d_k]` row-major; the last `k` axes are padded by
//! `pads[i] = (before, after)`. A negative pad crops that many values from its side first,
//! as in PyTorch: the axis is cropped, then padded, each mode filling from the cropped axis
//! (so a circular pad wraps around what is left). The walk goes axis by axis, so that the
//! innermost axis is copied as one run and its edges element by element; nothing is
//! allocated.

use crate::Float;

/// How the positions outside the input are filled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PadMode {
    /// A constant value.
    Constant,
    /// The values mirrored at the border, the border itself not repeated
    /// (`[a, b, c]` padded by 2 on each side: `[c, b, a, b, c, b, a]`). Each pad is less than
    /// its axis.
    Reflect,
    /// The border value repeated.
    Replicate,
    /// The axis wrapped around, as if periodic (`[a, b, c]` padded by 2 on each side:
    /// `[b, c, a, b, c, a, b]`). Each pad is at most its axis.
    Circular,
}

/// The input index that output index `o` of an axis of `d` values padded by `before` reads,
/// or `None` for a constant.
#[inline]
fn source(mode: PadMode, o: usize, before: usize, d: usize) -> Option<usize> {
    let i = o as isize - before as isize;
    let d = d as isize;
    let i = match mode {
        PadMode::Constant if i < 0 || i >= d => return None,
        PadMode::Constant => i,
        PadMode::Reflect => {
            if i < 0 {
                -i
            } else if i >= d {
                2 * (d - 1) - i
            } else {
                i
            }
        }
        PadMode::Replicate => i.clamp(0, d - 1),
        PadMode::Circular => i.rem_euclid(d),
    };
    Some(i as usize)
}

/// One padded axis of `d` values: `crop` values dropped before the kept `kept` ones (and
/// `d - crop - kept` after them), then `pad` added before and after.
#[derive(Clone, Copy)]
struct AxisPad {
    d: usize,
    crop: usize,
    kept: usize,
    pad: (usize, usize),
}

impl AxisPad {
    /// The axis of `d` values padded by `(before, after)`, negative values cropping.
    #[track_caller]
    fn new(d: usize, (before, after): (isize, isize), mode: PadMode) -> Self {
        let (crop_b, crop_a) = (before.min(0).unsigned_abs(), after.min(0).unsigned_abs());
        assert!(
            crop_b + crop_a < d || (crop_b + crop_a == d && mode == PadMode::Constant),
            "pad: cropping ({before}, {after}) of an axis of {d}"
        );
        let kept = d - crop_b - crop_a;
        let (b, a) = (before.max(0) as usize, after.max(0) as usize);
        match mode {
            PadMode::Reflect => {
                assert!(
                    b < kept && a < kept,
                    "reflect padding of {kept} by ({b}, {a})"
                )
            }
            PadMode::Replicate => assert!(kept > 0, "replicate padding of an empty axis"),
            PadMode::Circular => {
                assert!(
                    b <= kept && a <= kept,
                    "circular padding of {kept} by ({b}, {a})"
                )
            }
            PadMode::Constant => {}
        }
        AxisPad {
            d,
            crop: crop_b,
            kept,
            pad: (b, a),
        }
    }

    fn out_len(&self) -> usize {
        self.kept + self.pad.0 + self.pad.1
    }

    /// The input index (in the whole axis) output index `o` reads, or `None` for a constant.
    #[inline]
    fn source(&self, mode: PadMode, o: usize) -> Option<usize> {
        source(mode, o, self.pad.0, self.kept).map(|i| self.crop + i)
    }
}

/// The shapes of a padding: the padded axes' input and output extents and strides.
struct Geometry {
    axes: [AxisPad; MAX_PADDED],
    k: usize,
    mode: PadMode,
    /// The number of leading (unpadded) elements blocks.
    outer: usize,
    /// Input and output elements in one block of the padded axes.
    in_block: usize,
    out_block: usize,
}

/// The most axes one padding pads (PyTorch's `F.pad` pads at most three in its non-constant
/// modes; the constant mode takes more, which no model here needs).
const MAX_PADDED: usize = 8;

impl Geometry {
    #[track_caller]
    fn new(dims: &[usize], pads: &[(isize, isize)], mode: PadMode) -> Self {
        let k = pads.len();
        assert!(
            k >= 1 && k <= dims.len() && k <= MAX_PADDED,
            "pad: {k} padded axes of {dims:?}"
        );
        let (lead, padded) = dims.split_at(dims.len() - k);
        let mut axes = [AxisPad {
            d: 0,
            crop: 0,
            kept: 0,
            pad: (0, 0),
        }; MAX_PADDED];
        for (slot, (&d, &p)) in axes.iter_mut().zip(padded.iter().zip(pads)) {
            *slot = AxisPad::new(d, p, mode);
        }
        let axes_used = &axes[..k];
        Geometry {
            in_block: padded.iter().product(),
            out_block: axes_used.iter().map(AxisPad::out_len).product(),
            axes,
            k,
            mode,
            outer: lead.iter().product(),
        }
    }

    /// The input and output element counts.
    fn lens(&self) -> (usize, usize) {
        (self.outer * self.in_block, self.outer * self.out_block)
    }

    /// Calls `visit(output offset, input offset or None)` for every output element of one
    /// block, axis `axis` onwards, the input offset so far `src` (`None`: constant).
    fn walk(
        &self,
        axis: usize,
        out: usize,
        src: Option<usize>,
        visit: &mut impl FnMut(usize, Option<usize>, usize),
    ) {
        let ax = self.axes[axis];
        let out_len = ax.out_len();
        if axis + 1 == self.k {
            // Innermost: the whole row at once (the visitor copies runs).
            visit(out * out_len, src.map(|s| s * ax.d), out_len);
            return;
        }
        for o in 0..out_len {
            let inner = src.and_then(|s| ax.source(self.mode, o).map(|i| s * ax.d + i));
            self.walk(axis + 1, out * out_len + o, inner, visit);
        }
    }
}

/// `y` = `x` (`dims`, row-major) with its last `pads.len()` axes padded by `pads[i] =
/// (before, after)`, filled by `mode` (`value` for [`PadMode::Constant`]); a negative pad
/// crops (see the [module docs](self)).
///
/// # Panics
/// If the lengths disagree with `dims` and `pads`, the crops leave nothing of an axis (in a
/// mode other than constant), or a reflect pad is not less than the cropped axis.
#[track_caller]
pub fn pad_forward<F: Float>(
    x: &[F],
    dims: &[usize],
    pads: &[(isize, isize)],
    mode: PadMode,
    value: F,
    y: &mut [F],
) {
    let g = Geometry::new(dims, pads, mode);
    let (in_len, out_len) = g.lens();
    assert_eq!((x.len(), y.len()), (in_len, out_len), "pad: buffer lengths");
    let inner = g.axes[g.k - 1];
    let (d, before, kept) = (inner.d, inner.pad.0, inner.kept);
    for block in 0..g.outer {
        let (x, y) = (
            &x[block * g.in_block..(block + 1) * g.in_block],
            &mut y[block * g.out_block..(block + 1) * g.out_block],
        );
        g.walk(0, 0, Some(0), &mut |start, row, len| {
            let out = &mut y[start..start + len];
            let Some(row) = row else {
                out.fill(value);
                return;
            };
            let row = &x[row..row + d];
            out[before..before + kept].copy_from_slice(&row[inner.crop..inner.crop + kept]);
            for o in (0..before).chain(before + kept..len) {
                out[o] = inner.source(mode, o).map_or(value, |i| row[i]);
            }
        });
    }
}

/// The VJP of [`pad_forward`]: each input value's gradient is the sum of the gradients of the
/// output positions that copy it. Writes `dx`, or adds into it with `accumulate`.
///
/// # Panics
/// As [`pad_forward`].
#[track_caller]
pub fn pad_backward<F: Float>(
    dy: &[F],
    dims: &[usize],
    pads: &[(isize, isize)],
    mode: PadMode,
    dx: &mut [F],
    accumulate: bool,
) {
    let g = Geometry::new(dims, pads, mode);
    let (in_len, out_len) = g.lens();
    assert_eq!(
        (dx.len(), dy.len()),
        (in_len, out_len),
        "pad: buffer lengths"
    );
    if !accumulate {
        dx.fill(F::ZERO);
    }
    let inner = g.axes[g.k - 1];
    let (d, before, kept) = (inner.d, inner.pad.0, inner.kept);
    for block in 0..g.outer {
        let (dx, dy) = (
            &mut dx[block * g.in_block..(block + 1) * g.in_block],
            &dy[block * g.out_block..(block + 1) * g.out_block],
        );
        g.walk(0, 0, Some(0), &mut |start, row, len| {
            let Some(row) = row else {
                return;
            };
            let (dy, dx) = (&dy[start..start + len], &mut dx[row..row + d]);
            let kept_dx = &mut dx[inner.crop..inner.crop + kept];
            for (t, &grad) in kept_dx.iter_mut().zip(&dy[before..before + kept]) {
                *t += grad;
            }
            for o in (0..before).chain(before + kept..len) {
                if let Some(i) = inner.source(mode, o) {
                    dx[i] += dy[o];
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_padded_each_way() {
        let x = [1.0f64, 2.0, 3.0];
        let mut y = [0.0; 7];
        pad_forward(&x, &[1, 3], &[(2, 2)], PadMode::Reflect, 0.0, &mut y);
        assert_eq!(y, [3.0, 2.0, 1.0, 2.0, 3.0, 2.0, 1.0]);
        pad_forward(&x, &[1, 3], &[(2, 2)], PadMode::Replicate, 0.0, &mut y);
        assert_eq!(y, [1.0, 1.0, 1.0, 2.0, 3.0, 3.0, 3.0]);
        let mut y = [0.0; 6];
        pad_forward(&x, &[1, 3], &[(2, 1)], PadMode::Constant, 0.5, &mut y);
        assert_eq!(y, [0.5, 0.5, 1.0, 2.0, 3.0, 0.5]);
        let mut y = [0.0; 9];
        pad_forward(&x, &[1, 3], &[(3, 3)], PadMode::Circular, 0.0, &mut y);
        assert_eq!(y, [1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
        let mut y = [0.0; 6];
        pad_forward(&x, &[1, 3], &[(2, 1)], PadMode::Circular, 0.0, &mut y);
        assert_eq!(y, [2.0, 3.0, 1.0, 2.0, 3.0, 1.0]);
    }

    #[test]
    fn two_axes_and_the_adjoint() {
        // [2, 2, 3] padded by (1, 0) on the rows and (0, 2) on the columns: [2, 3, 5].
        let x: Vec<f64> = (0..12).map(f64::from).collect();
        let (dims, pads) = ([2, 2, 3], [(1, 0), (0, 2)]);
        for mode in [
            PadMode::Constant,
            PadMode::Reflect,
            PadMode::Replicate,
            PadMode::Circular,
        ] {
            let mut y = vec![0.0; 30];
            pad_forward(&x, &dims, &pads, mode, -1.0, &mut y);
            // Each output element against the source map, one axis at a time.
            for b in 0..2 {
                for r in 0..3 {
                    for c in 0..5 {
                        let expected = match (source(mode, r, 1, 2), source(mode, c, 0, 3)) {
                            (Some(i), Some(j)) => x[b * 6 + i * 3 + j],
                            _ => -1.0,
                        };
                        assert_eq!(y[b * 15 + r * 5 + c], expected, "{mode:?}");
                    }
                }
            }
            // <pad(x), dy> = <x, pad*(dy)> for any dy.
            let dy: Vec<f64> = (0..30).map(|i| ((i * 7) % 11) as f64 - 5.0).collect();
            let mut dx = vec![0.0; 12];
            pad_backward(&dy, &dims, &pads, mode, &mut dx, false);
            let mut y0 = vec![0.0; 30];
            pad_forward(&x, &dims, &pads, mode, 0.0, &mut y0);
            let lhs: f64 = y0.iter().zip(&dy).map(|(a, b)| a * b).sum();
            let rhs: f64 = x.iter().zip(&dx).map(|(a, b)| a * b).sum();
            assert_eq!(lhs, rhs, "{mode:?}");
            // Accumulating adds onto what is there.
            let mut twice = dx.clone();
            pad_backward(&dy, &dims, &pads, mode, &mut twice, true);
            assert!(twice.iter().zip(&dx).all(|(t, d)| *t == 2.0 * d));
        }
    }

    /// Negative pads crop, then each mode pads from what is left, as PyTorch 2.15 computes
    /// `F.pad(torch.arange(5.), (-1, 2), mode=...)` and, for two axes, `F.pad(torch.arange(
    /// 12.).reshape(3, 4), (-1, -1, 1, -2))`.
    #[test]
    fn negative_pads_crop_first() {
        let x = [0.0f64, 1.0, 2.0, 3.0, 4.0];
        for (mode, expected) in [
            (PadMode::Constant, [1.0, 2.0, 3.0, 4.0, 0.0, 0.0]),
            (PadMode::Reflect, [1.0, 2.0, 3.0, 4.0, 3.0, 2.0]),
            (PadMode::Replicate, [1.0, 2.0, 3.0, 4.0, 4.0, 4.0]),
            (PadMode::Circular, [1.0, 2.0, 3.0, 4.0, 1.0, 2.0]),
        ] {
            let mut y = [f64::NAN; 6];
            pad_forward(&x, &[1, 5], &[(-1, 2)], mode, 0.0, &mut y);
            assert_eq!(y, expected, "{mode:?}");
        }
        let x: Vec<f64> = (0..12).map(f64::from).collect();
        let (dims, pads) = ([1, 3, 4], [(1, -2), (-1, -1)]);
        let mut y = [f64::NAN; 4];
        pad_forward(&x, &dims, &pads, PadMode::Constant, 0.0, &mut y);
        assert_eq!(y, [0.0, 0.0, 1.0, 2.0]);
        // The adjoint: cropped values get no gradient.
        for mode in [PadMode::Constant, PadMode::Replicate, PadMode::Circular] {
            let pads = [(2, -1), (-1, 1)];
            let out = 4 * 4;
            let dy: Vec<f64> = (0..out).map(|i| ((i * 5) % 7) as f64 - 3.0).collect();
            let mut dx = vec![0.0; 12];
            pad_backward(&dy, &dims, &pads, mode, &mut dx, false);
            let mut y0 = vec![0.0; out];
            pad_forward(&x, &dims, &pads, mode, 0.0, &mut y0);
            let lhs: f64 = y0.iter().zip(&dy).map(|(a, b)| a * b).sum();
            let rhs: f64 = x.iter().zip(&dx).map(|(a, b)| a * b).sum();
            assert_eq!(lhs, rhs, "{mode:?}");
            assert_eq!(dx[0], 0.0, "{mode:?}: the cropped first column");
            assert!(
                dx[8..].iter().all(|&g| g == 0.0),
                "{mode:?}: the cropped last row"
            );
        }
    }

    #[test]
    #[should_panic(expected = "circular padding of 3 by (4, 0)")]
    fn circular_pads_wrap_at_most_once() {
        let mut y = [0.0f32; 7];
        pad_forward(&[1.0; 3], &[3], &[(4, 0)], PadMode::Circular, 0.0, &mut y);
    }

    #[test]
    #[should_panic(expected = "reflect padding of 3 by (3, 0)")]
    fn reflect_pads_stay_inside_the_axis() {
        let mut y = [0.0f32; 6];
        pad_forward(&[1.0; 3], &[3], &[(3, 0)], PadMode::Reflect, 0.0, &mut y);
    }
}
