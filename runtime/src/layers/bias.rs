//! The bias of a layer whose weight is another layer's (an output head tied to an embedding
//! table).

use crate::Float;
use ndarray::Array1;
use rand::{Rng, RngExt};

/// A bias vector `[out_features]` on its own, initialised as `nn.Linear`'s bias: U(±1/√in).
///
/// ```
/// use kiln_runtime::layers::Bias;
/// use rand::SeedableRng;
/// let b = Bias::<f32>::new(128, 96, &mut rand::rngs::StdRng::seed_from_u64(0));
/// assert_eq!(b.bias.len(), 96);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Bias<F> {
    /// `[out_features]`.
    pub bias: Array1<F>,
}

impl<F: Float> Bias<F> {
    /// A bias drawn from U(−1/√in, 1/√in), as PyTorch initialises a linear layer's bias.
    pub fn new<R: Rng + ?Sized>(in_features: usize, out_features: usize, rng: &mut R) -> Self {
        let bound = if in_features > 0 {
            1.0 / (in_features as f64).sqrt()
        } else {
            0.0
        };
        Self {
            bias: crate::memory::from_fn(out_features, || {
                F::from_f64((2.0 * rng.random::<f64>() - 1.0) * bound)
            }),
        }
    }

    /// A bias of zeros.
    pub fn zeros(out_features: usize) -> Self {
        Self {
            bias: crate::memory::zeros(out_features),
        }
    }
}
