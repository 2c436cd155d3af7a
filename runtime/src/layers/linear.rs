//! The parameters of a fully connected layer.

use crate::Float;
use ndarray::{Array1, Array2};
use rand::{Rng, RngExt};

/// The parameters of `y = x · Wᵀ + b`, laid out as PyTorch's `nn.Linear`: `weight` is
/// `[out_features, in_features]`, `bias` is `[out_features]`.
///
/// ```
/// use kiln_runtime::layers::Linear;
/// use rand::SeedableRng;
/// let mut rng = rand::rngs::StdRng::seed_from_u64(0);
/// let layer = Linear::<f32>::new(784, 128, true, &mut rng);
/// assert_eq!(layer.weight.dim(), (128, 784));
/// assert_eq!(layer.num_params(), 784 * 128 + 128);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Linear<F> {
    /// `[out_features, in_features]`.
    pub weight: Array2<F>,
    /// `[out_features]`, if the layer has a bias.
    pub bias: Option<Array1<F>>,
}

impl<F: Float> Linear<F> {
    /// A layer initialised as PyTorch's `nn.Linear.reset_parameters`: the weight by
    /// `kaiming_uniform_(a = √5)` and the bias uniformly, which both come to
    /// `U(−1/√in, 1/√in)` (a bound of 0 when `in_features` is 0, as in PyTorch). Values are
    /// drawn in f64 and rounded to `F`, so an f32 and an f64 layer from the same seed agree.
    /// The weight is drawn first, row by row, then the bias.
    pub fn new<R: Rng + ?Sized>(
        in_features: usize,
        out_features: usize,
        bias: bool,
        rng: &mut R,
    ) -> Self {
        let bound = if in_features > 0 {
            1.0 / (in_features as f64).sqrt()
        } else {
            0.0
        };
        // u ∈ [0, 1) mapped onto [−bound, bound); unlike `random_range`, fine when bound = 0.
        let mut draw = || F::from_f64((2.0 * rng.random::<f64>() - 1.0) * bound);
        let weight = crate::memory::from_fn((out_features, in_features), &mut draw);
        let bias = bias.then(|| crate::memory::from_fn(out_features, &mut draw));
        Self { weight, bias }
    }

    /// A layer of zeros (weight and, if requested, bias).
    pub fn zeros(in_features: usize, out_features: usize, bias: bool) -> Self {
        Self {
            weight: crate::memory::zeros((out_features, in_features)),
            bias: bias.then(|| crate::memory::zeros(out_features)),
        }
    }

    /// The input size (the weight's second dimension).
    pub fn in_features(&self) -> usize {
        self.weight.ncols()
    }

    /// The output size (the weight's first dimension).
    pub fn out_features(&self) -> usize {
        self.weight.nrows()
    }

    /// The number of trainable scalars: `out · in` plus `out` with a bias.
    pub fn num_params(&self) -> usize {
        self.weight.len() + self.bias.as_ref().map_or(0, |b| b.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn init_is_within_torch_bounds_and_spread() {
        let mut rng = StdRng::seed_from_u64(7);
        let layer = Linear::<f64>::new(16, 300, true, &mut rng);
        let bound = 0.25;
        let all: Vec<f64> = layer
            .weight
            .iter()
            .chain(layer.bias.iter().flatten())
            .copied()
            .collect();
        assert!(all.iter().all(|v| (-bound..bound).contains(v)));
        // U(−b, b) has mean 0 and variance b²/3: 4800 draws land well within these limits.
        let mean = all.iter().sum::<f64>() / all.len() as f64;
        let var = all.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / all.len() as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - bound * bound / 3.0).abs() < 0.002, "variance {var}");
        assert_eq!(
            (
                layer.in_features(),
                layer.out_features(),
                layer.num_params()
            ),
            (16, 300, 4800 + 300)
        );
    }

    #[test]
    fn f32_and_f64_agree_from_one_seed() {
        let a = Linear::<f64>::new(5, 3, true, &mut StdRng::seed_from_u64(1));
        let b = Linear::<f32>::new(5, 3, true, &mut StdRng::seed_from_u64(1));
        let rounded = a.weight.mapv(|v| v as f32);
        assert_eq!(b.weight, rounded);
        assert_eq!(b.bias, a.bias.map(|b| b.mapv(|v| v as f32)));
    }

    #[test]
    fn zeros_and_no_bias() {
        let layer = Linear::<f32>::zeros(4, 2, false);
        assert_eq!(layer.weight, Array2::<f32>::zeros((2, 4)));
        assert!(layer.bias.is_none());
        assert_eq!(layer.num_params(), 8);
        // No inputs: bound 0, every value 0.
        let empty = Linear::<f64>::new(0, 3, true, &mut StdRng::seed_from_u64(2));
        assert_eq!(empty.bias, Some(Array1::zeros(3)));
    }
}
