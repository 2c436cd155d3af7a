//! PyTorch's `nn.PReLU`: `y = x` where `x > 0`, `y = a·x` elsewhere, with a learned slope `a`
//! shared by every element or one per channel (axis 1).
//!
//! The layout is `[outer, channels, inner]`: for a slope per channel of `[B, C, ..]`, `outer`
//! is `B`, `channels` is `C` and `inner` the product of the axes after it; for one slope,
//! `channels` is 1 and `outer · inner` covers the whole input.

use super::store;
use crate::Float;

/// Panics unless `x` (and the other slices of its length) is `outer × channels × inner` and
/// there is one slope per channel: a caller bug.
#[track_caller]
fn check<F>(what: &str, x: &[F], (outer, channels, inner): (usize, usize, usize), slope: &[F]) {
    assert_eq!(
        x.len(),
        outer * channels * inner,
        "{what}: expected {outer}×{channels}×{inner} elements"
    );
    assert_eq!(slope.len(), channels, "{what}: one slope per channel");
}

/// `y = x` where `x > 0`, else `slope[c]·x`, for `x` laid out `[outer, channels, inner]`.
///
/// # Panics
/// If the lengths disagree with the sizes (a caller bug).
///
/// ```
/// use kiln_runtime::kernels::prelu::prelu_forward;
/// let mut y = [0.0f64; 4];
/// prelu_forward(&[1.0, -2.0, -1.0, 3.0], 1, 2, 2, &[0.25, 0.5], &mut y);
/// assert_eq!(y, [1.0, -0.5, -0.5, 3.0]);
/// ```
pub fn prelu_forward<F: Float>(
    x: &[F],
    outer: usize,
    channels: usize,
    inner: usize,
    slope: &[F],
    y: &mut [F],
) {
    check("prelu_forward", x, (outer, channels, inner), slope);
    assert_eq!(y.len(), x.len(), "prelu_forward: output length");
    let rows = x
        .chunks_exact(inner.max(1))
        .zip(y.chunks_exact_mut(inner.max(1)));
    for (row, (x, y)) in rows.enumerate() {
        let a = slope[row % channels.max(1)];
        for (y, &x) in y.iter_mut().zip(x) {
            *y = if x > F::ZERO { x } else { a * x };
        }
    }
}

/// The gradients of [`prelu_forward`]: `dx = dy` where `x > 0`, else `slope[c]·dy` (when
/// `dx` is given); `d_slope[c] = Σ dy·x` over channel `c`'s elements with `x ≤ 0`, as
/// PyTorch's backward (the elements at 0 add nothing either way). Each is written, or added to
/// with its `accumulate` flag.
///
/// # Panics
/// If the lengths disagree with the sizes (a caller bug).
///
/// ```
/// use kiln_runtime::kernels::prelu::prelu_backward;
/// let (mut dx, mut da) = ([0.0f64; 4], [0.0f64; 2]);
/// let (x, dy) = ([1.0, -2.0, -1.0, 3.0], [1.0, 1.0, 2.0, 2.0]);
/// prelu_backward(&x, &dy, 1, 2, 2, &[0.25, 0.5], Some((&mut dx, false)), &mut da, false);
/// assert_eq!((dx, da), ([1.0, 0.25, 1.0, 2.0], [-2.0, -2.0]));
/// ```
#[allow(clippy::too_many_arguments)]
pub fn prelu_backward<F: Float>(
    x: &[F],
    dy: &[F],
    outer: usize,
    channels: usize,
    inner: usize,
    slope: &[F],
    dx: Option<(&mut [F], bool)>,
    d_slope: &mut [F],
    accumulate_slope: bool,
) {
    check("prelu_backward", x, (outer, channels, inner), slope);
    assert_eq!(dy.len(), x.len(), "prelu_backward: dy length");
    assert_eq!(
        d_slope.len(),
        channels,
        "prelu_backward: one slope gradient per channel"
    );
    if !accumulate_slope {
        d_slope.fill(F::ZERO);
    }
    let mut dx = dx.inspect(|(dx, _)| {
        assert_eq!(dx.len(), x.len(), "prelu_backward: dx length");
    });
    // One pass over each row of `x` and `dy` for both gradients.
    let width = inner.max(1);
    let rows = x.chunks_exact(width).zip(dy.chunks_exact(width));
    for (row, (x, dy)) in rows.enumerate() {
        let c = row % channels.max(1);
        let sum: F = x
            .iter()
            .zip(dy)
            .filter(|(&x, _)| x <= F::ZERO)
            .map(|(&x, &g)| g * x)
            .sum();
        d_slope[c] += sum;
        if let Some((dx, accumulate)) = dx.as_mut() {
            let (a, dx) = (slope[c], &mut dx[row * width..(row + 1) * width]);
            for ((dx, &x), &g) in dx.iter_mut().zip(x).zip(dy) {
                store(dx, if x > F::ZERO { g } else { a * g }, *accumulate);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::numeric_gradient;
    use crate::kernels::test_util::values;

    fn loss(x: &[f64], slope: &[f64], sizes: (usize, usize, usize), r: &[f64]) -> f64 {
        let mut y = vec![0.0; x.len()];
        prelu_forward(x, sizes.0, sizes.1, sizes.2, slope, &mut y);
        y.iter().zip(r).map(|(y, r)| y * r).sum()
    }

    #[test]
    fn gradients_match_central_differences_per_channel_and_shared() {
        for sizes in [(2, 3, 4), (3, 1, 5)] {
            let n = sizes.0 * sizes.1 * sizes.2;
            let (mut x, r) = (values(n, 1.0), values(n, 5.0));
            let mut slope: Vec<f64> = (0..sizes.1).map(|c| 0.1 + 0.2 * c as f64).collect();
            let num_x = numeric_gradient(|x| loss(x, &slope, sizes, &r), &mut x, 1e-6);
            let num_a = numeric_gradient(|a| loss(&x, a, sizes, &r), &mut slope, 1e-6);
            let (mut dx, mut da) = (vec![f64::NAN; n], vec![f64::NAN; sizes.1]);
            prelu_backward(
                &x,
                &r,
                sizes.0,
                sizes.1,
                sizes.2,
                &slope,
                Some((&mut dx, false)),
                &mut da,
                false,
            );
            for (got, want) in dx.iter().zip(&num_x).chain(da.iter().zip(&num_a)) {
                assert!((got - want).abs() < 1e-8, "{sizes:?}: {got} vs {want}");
            }
            // Both sides of 0 are exercised.
            assert!(x.iter().any(|&v| v > 0.0) && x.iter().any(|&v| v < 0.0));
        }
    }
}
