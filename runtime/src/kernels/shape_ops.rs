//! Data movement without arithmetic: concatenation along an axis, a slice along an axis
//! (`narrow` and `select`), and the copy / add helpers that reshape and flatten compile to.
//!
//! A reshape of a row-major contiguous tensor keeps its elements in order, so its forward is a
//! copy ([`copy_into`]) and its VJP is a copy of the adjoint, or an add when accumulating
//! ([`add_into`]).
//!
//! Concatenation along axis `a` of tensors that agree on every other axis views input `i` as
//! `[outer, inner_i]`, where `outer` is the product of the dims before `a` and `inner_i` is the
//! product of input `i`'s dims from `a` on; the output is `[outer, Σ inner_i]`.

use super::store;
use crate::Float;

/// Concatenates `inputs` along an axis: input `i`, viewed as `[outer, inner[i]]`, fills the
/// columns `Σ_{j<i} inner[j] .. Σ_{j≤i} inner[j]` of `y` (`[outer, Σ inner]`), which is
/// overwritten.
///
/// # Panics
/// If `inputs` and `inner` differ in length, or a slice's length disagrees with the sizes.
///
/// ```
/// use kiln_runtime::kernels::shape_ops::concat_forward;
/// // Two [2, 1] columns and a [2, 2] block, side by side: a [2, 4] matrix.
/// let mut y = [0.0f64; 8];
/// concat_forward(&[&[1.0, 2.0], &[3.0, 4.0], &[5.0, 6.0, 7.0, 8.0]], 2, &[1, 1, 2], &mut y);
/// assert_eq!(y, [1.0, 3.0, 5.0, 6.0, 2.0, 4.0, 7.0, 8.0]);
/// ```
pub fn concat_forward<F: Float>(inputs: &[&[F]], outer: usize, inner: &[usize], y: &mut [F]) {
    assert_eq!(
        inputs.len(),
        inner.len(),
        "concat_forward: {} inputs but {} inner sizes",
        inputs.len(),
        inner.len()
    );
    let total: usize = inner.iter().sum();
    assert_eq!(
        y.len(),
        outer * total,
        "concat_forward: y has {} elements, expected {outer}×{total}",
        y.len()
    );
    for (i, (x, &w)) in inputs.iter().zip(inner).enumerate() {
        assert_eq!(
            x.len(),
            outer * w,
            "concat_forward: input {i} has {} elements, expected {outer}×{w}",
            x.len()
        );
    }
    if total == 0 {
        return;
    }
    for (o, row) in y.chunks_exact_mut(total).enumerate() {
        let mut offset = 0;
        for (x, &w) in inputs.iter().zip(inner) {
            row[offset..offset + w].copy_from_slice(&x[o * w..(o + 1) * w]);
            offset += w;
        }
    }
}

/// The VJP of [`concat_forward`] for input `index`: its block of columns of `dy`
/// (`[outer, Σ inner]`), written into `dx` (`[outer, inner[index]]`) or added when
/// `accumulate`.
///
/// # Panics
/// If `index` is out of range, or a slice's length disagrees with the sizes.
pub fn concat_backward<F: Float>(
    dy: &[F],
    outer: usize,
    inner: &[usize],
    index: usize,
    dx: &mut [F],
    accumulate: bool,
) {
    assert!(
        index < inner.len(),
        "concat_backward: input {index} of {}",
        inner.len()
    );
    let total: usize = inner.iter().sum();
    let (offset, w) = (inner[..index].iter().sum::<usize>(), inner[index]);
    assert_eq!(
        dy.len(),
        outer * total,
        "concat_backward: dy has {} elements, expected {outer}×{total}",
        dy.len()
    );
    assert_eq!(
        dx.len(),
        outer * w,
        "concat_backward: dx has {} elements, expected {outer}×{w}",
        dx.len()
    );
    if w == 0 {
        return;
    }
    for (row, dx_row) in dy.chunks_exact(total).zip(dx.chunks_exact_mut(w)) {
        add_into(&row[offset..offset + w], dx_row, accumulate);
    }
}

/// `y` = positions `start .. start + len` of axis `a` of `x` (`torch.narrow`; `select` is a
/// narrow of one position whose axis is then dropped, the same memory). `x` is viewed as
/// `[outer, d, inner]` with `d` the axis' extent, `outer` the product of the dims before it
/// and `inner` of those after; `y` is `[outer, len, inner]`.
///
/// # Panics
/// If the window leaves the axis or the lengths disagree (the generated code checks a
/// symbolic axis first and returns an error).
///
/// ```
/// // [2, 3] rows, columns 1..3 of each.
/// let x = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
/// let mut y = [0.0; 4];
/// kiln_runtime::kernels::shape_ops::narrow_forward(&x, 2, 3, 1, 1, 2, &mut y);
/// assert_eq!(y, [2.0, 3.0, 5.0, 6.0]);
/// ```
pub fn narrow_forward<F: Float>(
    x: &[F],
    outer: usize,
    d: usize,
    inner: usize,
    start: usize,
    len: usize,
    y: &mut [F],
) {
    check_narrow(x.len(), y.len(), outer, d, inner, start, len);
    let (from, to) = (d * inner, len * inner);
    for (x, y) in x.chunks_exact(from).zip(y.chunks_exact_mut(to)) {
        y.copy_from_slice(&x[start * inner..start * inner + to]);
    }
}

/// The VJP of [`narrow_forward`]: `dy` into the window of `dx`, zeros elsewhere (or added
/// onto `dx` when `accumulate`).
///
/// # Panics
/// As [`narrow_forward`].
#[allow(clippy::too_many_arguments)]
pub fn narrow_backward<F: Float>(
    dy: &[F],
    outer: usize,
    d: usize,
    inner: usize,
    start: usize,
    len: usize,
    dx: &mut [F],
    accumulate: bool,
) {
    check_narrow(dx.len(), dy.len(), outer, d, inner, start, len);
    let (whole, window) = (d * inner, len * inner);
    for (dx, dy) in dx.chunks_exact_mut(whole).zip(dy.chunks_exact(window)) {
        if !accumulate {
            dx[..start * inner].fill(F::ZERO);
            dx[start * inner + window..].fill(F::ZERO);
        }
        add_into(
            dy,
            &mut dx[start * inner..start * inner + window],
            accumulate,
        );
    }
}

/// The panics of [`narrow_forward`] and [`narrow_backward`].
#[track_caller]
fn check_narrow(
    whole: usize,
    window: usize,
    outer: usize,
    d: usize,
    inner: usize,
    start: usize,
    len: usize,
) {
    assert!(
        start.checked_add(len).is_some_and(|end| end <= d),
        "narrow: positions {start}..{} of an axis of {d}",
        start.saturating_add(len)
    );
    assert_eq!(
        (whole, window),
        (outer * d * inner, outer * len * inner),
        "narrow: buffer lengths"
    );
}

/// `y = x` (a reshape's or flatten's forward).
///
/// # Panics
/// If the lengths differ (a caller bug).
pub fn copy_into<F: Float>(x: &[F], y: &mut [F]) {
    assert_eq!(
        x.len(),
        y.len(),
        "copy_into: {} elements into {}",
        x.len(),
        y.len()
    );
    y.copy_from_slice(x);
}

/// `dx = dy`, or `dx += dy` when `accumulate` (a reshape's VJP; also the adjoint of any
/// identity-like use).
///
/// # Panics
/// If the lengths differ (a caller bug).
///
/// ```
/// let mut dx = [1.0f32, 1.0];
/// kiln_runtime::kernels::shape_ops::add_into(&[0.5, 2.0], &mut dx, true);
/// assert_eq!(dx, [1.5, 3.0]);
/// ```
pub fn add_into<F: Float>(dy: &[F], dx: &mut [F], accumulate: bool) {
    assert_eq!(
        dy.len(),
        dx.len(),
        "add_into: {} elements into {}",
        dy.len(),
        dx.len()
    );
    if accumulate {
        for (slot, &g) in dx.iter_mut().zip(dy) {
            store(slot, g, true);
        }
    } else {
        dx.copy_from_slice(dy);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::numeric_gradient;
    use crate::kernels::test_util::{check_both_modes, values};

    /// Concatenation of [outer, w_i] blocks through explicit (o, column) indexing.
    fn naive_concat(inputs: &[Vec<f64>], outer: usize, inner: &[usize]) -> Vec<f64> {
        let total: usize = inner.iter().sum();
        let mut y = vec![0.0; outer * total];
        for o in 0..outer {
            let mut col = 0;
            for (x, &w) in inputs.iter().zip(inner) {
                for j in 0..w {
                    y[o * total + col] = x[o * w + j];
                    col += 1;
                }
            }
        }
        y
    }

    #[test]
    fn concat_matches_naive_including_empty_parts() {
        // E.g. channels 2, 0 and 3 of [N = 3, C, 2·2] feature maps: inner = C · 4.
        let outer = 3;
        let inner = [8, 0, 12];
        let inputs: Vec<Vec<f64>> = inner
            .iter()
            .enumerate()
            .map(|(i, &w)| values(outer * w, i as f64))
            .collect();
        let refs: Vec<&[f64]> = inputs.iter().map(|v| v.as_slice()).collect();
        let mut y = vec![f64::NAN; outer * 20];
        concat_forward(&refs, outer, &inner, &mut y);
        assert_eq!(y, naive_concat(&inputs, outer, &inner));
    }

    #[test]
    fn concat_backward_matches_finite_differences() {
        let (outer, inner) = (4, [3, 1, 5]);
        let mut inputs: Vec<Vec<f64>> = inner
            .iter()
            .enumerate()
            .map(|(i, &w)| values(outer * w, 1.0 + i as f64))
            .collect();
        let r = values(outer * 9, 7.0);
        for index in 0..inner.len() {
            let others = inputs.clone();
            let num = numeric_gradient(
                |x| {
                    let mut parts = others.clone();
                    parts[index] = x.to_vec();
                    let y = naive_concat(&parts, outer, &inner);
                    y.iter().zip(&r).map(|(a, b)| a * b).sum()
                },
                &mut inputs[index],
                1e-6,
            );
            // Linear, so the only error is the quotient's rounding noise (~u·|L|/ε ≈ 1e-9).
            check_both_modes(&num, 1e-6, 1e-8, &format!("d input {index}"), |dx, acc| {
                concat_backward(&r, outer, &inner, index, dx, acc)
            });
        }
    }

    #[test]
    fn narrow_takes_each_blocks_window_and_its_adjoint_matches_finite_differences() {
        // [outer 3, d 5, inner 2], positions 1..4.
        let (outer, d, inner, start, len) = (3, 5, 2, 1, 3);
        let mut x = values(outer * d * inner, 0.5);
        let mut y = vec![f64::NAN; outer * len * inner];
        narrow_forward(&x, outer, d, inner, start, len, &mut y);
        for o in 0..outer {
            for p in 0..len {
                for i in 0..inner {
                    let got = y[(o * len + p) * inner + i];
                    assert_eq!(got, x[(o * d + start + p) * inner + i]);
                }
            }
        }
        let r = values(y.len(), 3.0);
        let num = numeric_gradient(
            |x| {
                let mut y = vec![0.0; outer * len * inner];
                narrow_forward(x, outer, d, inner, start, len, &mut y);
                y.iter().zip(&r).map(|(a, b)| a * b).sum()
            },
            &mut x,
            1e-6,
        );
        check_both_modes(&num, 1e-6, 1e-8, "d narrow", |dx, acc| {
            narrow_backward(&r, outer, d, inner, start, len, dx, acc)
        });
    }

    #[test]
    #[should_panic(expected = "narrow: positions 3..6 of an axis of 5")]
    fn narrow_stays_inside_the_axis() {
        let mut y = [0.0f32; 3];
        narrow_forward(&[0.0; 5], 1, 5, 1, 3, 3, &mut y);
    }

    #[test]
    fn copy_and_add() {
        let x = values(6, 1.0);
        let mut y = vec![f64::NAN; 6];
        copy_into(&x, &mut y);
        assert_eq!(y, x);
        let mut x = values(6, 2.0);
        let r = values(6, 3.0);
        let num = numeric_gradient(|x| x.iter().zip(&r).map(|(a, b)| a * b).sum(), &mut x, 1e-6);
        check_both_modes(&num, 1e-6, 1e-8, "reshape dx", |dx, acc| {
            add_into(&r, dx, acc)
        });
    }

    #[test]
    #[should_panic(expected = "concat_forward: input 1 has 3 elements, expected 2×2")]
    fn concat_rejects_a_misshapen_input() {
        let mut y = [0.0f64; 6];
        concat_forward(&[&[1.0, 2.0], &[3.0, 4.0, 5.0]], 2, &[1, 2], &mut y);
    }
}
