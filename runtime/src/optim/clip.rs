//! Gradient clipping, as `torch.nn.utils.clip_grad_norm_` and `clip_grad_value_`: applied to a
//! model's gradient struct between the backward pass and the optimizer step. Neither function
//! allocates.
//!
//! ```
//! use kiln_runtime::optim::clip_grad_norm;
//! # use kiln_runtime::Model;
//! # fn step<M: Model<f32>>(model: &mut M, grads: &mut M::Grads) {
//! // loss_and_grad(.., &mut grads)?;
//! let norm = clip_grad_norm::<f32, M>(grads, 1.0);
//! if !norm.is_finite() {
//!     // skip this step, lower the rate, ...
//! }
//! // opt.step(model, grads);
//! # }
//! ```

use crate::{Float, Model};

/// PyTorch's guard against dividing by a zero norm in `clip_grad_norm_`.
const NORM_EPS: f64 = 1e-6;

/// The total L2 norm of all gradients, as if they were concatenated into one vector:
/// `√(Σ g²)` over every element of every gradient.
///
/// The sum is accumulated in `f64` whatever `F` is, so the norm of an `f32` model does not
/// lose precision to millions of small squares.
pub fn grad_norm<F: Float, M: Model<F>>(grads: &M::Grads) -> f64 {
    let mut sum_sq = 0.0f64;
    M::visit_grads(grads, &mut |_, g| {
        for &v in g.iter() {
            let v = v.to_f64();
            sum_sq += v * v;
        }
    });
    sum_sq.sqrt()
}

/// Rescales all gradients together so that their total L2 norm is at most `max_norm`, as
/// `torch.nn.utils.clip_grad_norm_(parameters, max_norm)` (norm type 2), and returns the total
/// norm before clipping.
///
/// With `n` the total norm over all gradients ([`grad_norm`]), every gradient is multiplied
/// by `max_norm / (n + 1e-6)` when that factor is below 1, and left unchanged otherwise; the
/// direction of the update is kept, only its length is bounded.
///
/// The factor is formed in `f64` and rounded to `F` once. As in PyTorch (with its default
/// `error_if_nonfinite=False`), a non-finite norm is not an error: an infinite norm zeroes
/// the finite gradients and a NaN norm makes every gradient NaN. Check the returned norm to
/// skip such a step.
///
/// ```
/// use kiln_runtime::optim::{clip_grad_norm, grad_norm};
/// # use kiln_runtime::Model;
/// # fn demo<M: Model<f64>>(grads: &mut M::Grads) {
/// let before = clip_grad_norm::<f64, M>(grads, 5.0);
/// assert!(grad_norm::<f64, M>(grads) <= 5.0 || !before.is_finite());
/// # }
/// ```
pub fn clip_grad_norm<F: Float, M: Model<F>>(grads: &mut M::Grads, max_norm: f64) -> f64 {
    let total = grad_norm::<F, M>(grads);
    let coef = max_norm / (total + NORM_EPS);
    // PyTorch multiplies by `clamp(coef, max=1)` unconditionally; multiplying by 1 changes
    // nothing, so only the other case is done. A NaN factor is included: PyTorch propagates it
    // into the gradients too.
    if coef < 1.0 || coef.is_nan() {
        let coef = F::from_f64(coef);
        M::visit_grads_mut(grads, &mut |_, mut g| {
            for v in g.iter_mut() {
                *v *= coef;
            }
        });
    }
    total
}

/// Clamps every gradient element into `[-clip_value, clip_value]`, as
/// `torch.nn.utils.clip_grad_value_`. NaN elements stay NaN.
pub fn clip_grad_value<F: Float, M: Model<F>>(grads: &mut M::Grads, clip_value: f64) {
    let hi = F::from_f64(clip_value.abs());
    let lo = -hi;
    M::visit_grads_mut(grads, &mut |_, mut g| {
        for v in g.iter_mut() {
            // Comparisons rather than min/max, so that NaN passes through as in PyTorch.
            if *v > hi {
                *v = hi;
            } else if *v < lo {
                *v = lo;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Summary;
    use ndarray::{ArrayD, ArrayViewD, ArrayViewMutD, IxDyn};

    /// A stand-in model with two parameters, enough to drive the visitors.
    struct Two {
        params: [ArrayD<f32>; 2],
    }

    impl Model<f32> for Two {
        type Grads = [ArrayD<f32>; 2];

        fn visit_params(&self, f: &mut dyn FnMut(&'static str, ArrayViewD<'_, f32>)) {
            f("a", self.params[0].view());
            f("b", self.params[1].view());
        }
        fn visit_params_mut(&mut self, f: &mut dyn FnMut(&'static str, ArrayViewMutD<'_, f32>)) {
            let [a, b] = &mut self.params;
            f("a", a.view_mut());
            f("b", b.view_mut());
        }
        fn visit_grads(grads: &Self::Grads, f: &mut dyn FnMut(&'static str, ArrayViewD<'_, f32>)) {
            f("a", grads[0].view());
            f("b", grads[1].view());
        }
        fn visit_grads_mut(
            grads: &mut Self::Grads,
            f: &mut dyn FnMut(&'static str, ArrayViewMutD<'_, f32>),
        ) {
            let [a, b] = grads;
            f("a", a.view_mut());
            f("b", b.view_mut());
        }
        fn visit_params_with_grads(
            &mut self,
            _grads: &Self::Grads,
            _f: &mut dyn FnMut(usize, &mut [f32], &[f32]),
        ) {
        }
        fn zero_grads(&self) -> Self::Grads {
            [ArrayD::zeros(IxDyn(&[2])), ArrayD::zeros(IxDyn(&[1]))]
        }
        fn num_params(&self) -> usize {
            3
        }
        fn summary(&self) -> Summary {
            Summary {
                model: "Two",
                dtype: "f32",
                rows: Vec::new(),
                ..Default::default()
            }
        }
        fn graph(&self) -> &'static str {
            ""
        }
    }

    fn grads(a: [f32; 2], b: f32) -> [ArrayD<f32>; 2] {
        [
            ArrayD::from_shape_vec(IxDyn(&[2]), a.to_vec()).unwrap(),
            ArrayD::from_shape_vec(IxDyn(&[1]), vec![b]).unwrap(),
        ]
    }

    #[test]
    fn norm_is_over_all_gradients_together() {
        let mut g = grads([3.0, 0.0], 4.0);
        // ‖(3, 0, 4)‖ = 5 > 1: scaled by 1 / (5 + 1e-6), as torch.nn.utils.clip_grad_norm_.
        let norm = clip_grad_norm::<f32, Two>(&mut g, 1.0);
        assert_eq!(norm, 5.0);
        let coef = (1.0 / (5.0 + 1e-6)) as f32;
        assert_eq!(g[0].as_slice().unwrap(), &[3.0 * coef, 0.0]);
        assert_eq!(g[1].as_slice().unwrap(), &[4.0 * coef]);
        assert!((grad_norm::<f32, Two>(&g) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn small_norms_are_left_alone() {
        let mut g = grads([0.3, 0.0], 0.4);
        assert!((clip_grad_norm::<f32, Two>(&mut g, 1.0) - 0.5).abs() < 1e-7);
        assert_eq!(g, grads([0.3, 0.0], 0.4));
        // Exactly at the bound, the factor max_norm / (n + 1e-6) is just below 1: PyTorch
        // scales, and so does this.
        let mut g = grads([3.0, 0.0], 4.0);
        clip_grad_norm::<f32, Two>(&mut g, 5.0);
        assert!(g[1][[0]] < 4.0);
    }

    #[test]
    fn non_finite_norms_propagate_as_in_torch() {
        let mut g = grads([f32::INFINITY, 1.0], 2.0);
        assert_eq!(clip_grad_norm::<f32, Two>(&mut g, 1.0), f64::INFINITY);
        assert_eq!(g[0][[1]], 0.0);
        let mut g = grads([f32::NAN, 1.0], 2.0);
        assert!(clip_grad_norm::<f32, Two>(&mut g, 1.0).is_nan());
        assert!(g[1][[0]].is_nan());
    }

    #[test]
    fn value_clipping_clamps_each_element() {
        let mut g = grads([3.0, -0.5], -4.0);
        clip_grad_value::<f32, Two>(&mut g, 1.0);
        assert_eq!(g, grads([1.0, -0.5], -1.0));
        let mut g = grads([f32::NAN, 2.0], 0.0);
        clip_grad_value::<f32, Two>(&mut g, 1.0);
        assert!(g[0][[0]].is_nan());
        assert_eq!(g[0][[1]], 1.0);
    }
}
