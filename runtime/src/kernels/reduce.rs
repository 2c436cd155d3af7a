//! Full reductions to a scalar (`sum`, `mean`) and their shared VJP.

use super::store;
use crate::Float;

/// The sum of all elements (`0` for an empty slice).
///
/// ```
/// assert_eq!(kiln_runtime::kernels::sum(&[1.0f32, 2.0, 3.5]), 6.5);
/// ```
pub fn sum<F: Float>(x: &[F]) -> F {
    x.iter().copied().sum()
}

/// The mean of all elements. An empty slice gives NaN (`0 / 0`), as `torch.mean` does.
///
/// ```
/// assert_eq!(kiln_runtime::kernels::mean(&[1.0f64, 2.0, 6.0]), 3.0);
/// assert!(kiln_runtime::kernels::mean::<f64>(&[]).is_nan());
/// ```
pub fn mean<F: Float>(x: &[F]) -> F {
    sum(x) / F::from_usize(x.len())
}

/// The VJP of a full reduction: every element of `dx` gets `value` (written, or added when
/// `accumulate`). For `sum` pass the scalar adjoint `d`; for `mean` pass `d / n`.
///
/// ```
/// let mut dx = [1.0f64, 2.0];
/// kiln_runtime::kernels::fill_backward(&mut dx, 0.5, true);
/// assert_eq!(dx, [1.5, 2.5]);
/// ```
pub fn fill_backward<F: Float>(dx: &mut [F], value: F, accumulate: bool) {
    if accumulate {
        for slot in dx.iter_mut() {
            store(slot, value, true);
        }
    } else {
        dx.fill(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::numeric_gradient;
    use crate::kernels::test_util::{check_both_modes, values};

    #[test]
    fn sum_and_mean_match_naive() {
        let x = values(7, 1.0);
        let mut naive = 0.0;
        for v in &x {
            naive += v;
        }
        assert_eq!(sum(&x), naive);
        assert_eq!(mean(&x), naive / 7.0);
        assert_eq!(sum::<f32>(&[]), 0.0);
        assert_eq!(sum(&[0.25f32, 0.5, 1.0]), 1.75);
    }

    #[test]
    fn backward_matches_finite_differences() {
        let mut x = values(6, 2.0);
        let d = 1.75;
        let num = numeric_gradient(|x| d * sum(x), &mut x, 1e-6);
        check_both_modes(&num, 1e-8, 1e-10, "d sum", |dx, acc| {
            fill_backward(dx, d, acc)
        });
        let num = numeric_gradient(|x| d * mean(x), &mut x, 1e-6);
        check_both_modes(&num, 1e-8, 1e-10, "d mean", |dx, acc| {
            fill_backward(dx, d / 6.0, acc)
        });
    }
}
