//! The learned slope of PyTorch's `nn.PReLU`.

use crate::Float;
use ndarray::Array1;

/// `weight` `[num_parameters]`: one slope for every element (`num_parameters = 1`) or one per
/// channel (axis 1), each starting at `init` (PyTorch's default 0.25), as `nn.PReLU`.
///
/// ```
/// use kiln_runtime::layers::PRelu;
/// let p = PRelu::<f32>::new(16, 0.25);
/// assert_eq!(p.weight.len(), 16);
/// assert!(p.weight.iter().all(|&a| a == 0.25));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct PRelu<F> {
    /// `[num_parameters]`: the slopes.
    pub weight: Array1<F>,
}

impl<F: Float> PRelu<F> {
    /// `num_parameters` slopes of `init` (rounded once from f64).
    pub fn new(num_parameters: usize, init: f64) -> Self {
        Self {
            weight: crate::memory::from_fn(num_parameters, || F::from_f64(init)),
        }
    }

    /// Slopes of zero.
    pub fn zeros(num_parameters: usize) -> Self {
        Self {
            weight: crate::memory::zeros(num_parameters),
        }
    }
}
