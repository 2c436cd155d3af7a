//! The parameters of a 2-D convolution.

use crate::Float;
use ndarray::{Array1, Array4};
use rand::Rng;

/// The parameters of a 2-D convolution, laid out as PyTorch's `nn.Conv2d` (`groups = 1`):
/// `weight` is `[out_channels, in_channels, kernel_h, kernel_w]`, `bias` is `[out_channels]`.
/// The sizes of the activations (stride, padding, input extent) live in
/// [`Conv2dGeometry`](crate::kernels::conv::Conv2dGeometry), not here.
///
/// ```
/// use kiln_runtime::layers::Conv2d;
/// use rand::SeedableRng;
/// let mut rng = rand::rngs::StdRng::seed_from_u64(0);
/// let conv = Conv2d::<f32>::new(3, 16, (3, 3), true, &mut rng);
/// assert_eq!(conv.weight.dim(), (16, 3, 3, 3));
/// assert_eq!(conv.num_params(), 16 * 3 * 9 + 16);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Conv2d<F> {
    /// `[out_channels, in_channels, kernel_h, kernel_w]`.
    pub weight: Array4<F>,
    /// `[out_channels]`, if the layer has a bias.
    pub bias: Option<Array1<F>>,
}

impl<F: Float> Conv2d<F> {
    /// A layer initialised as PyTorch's `nn.Conv2d.reset_parameters`: the weight by
    /// `kaiming_uniform_(a = √5)` and the bias uniformly, which both come to
    /// `U(−1/√fan_in, 1/√fan_in)` with `fan_in = in_channels · kernel_h · kernel_w` (a bound of
    /// 0 when `fan_in` is 0). Values are drawn in f64 and rounded to `F`, so an f32 and an f64
    /// layer from the same seed agree; the weight is drawn first, in row-major order, then the
    /// bias.
    pub fn new<R: Rng + ?Sized>(
        in_channels: usize,
        out_channels: usize,
        (kernel_h, kernel_w): (usize, usize),
        bias: bool,
        rng: &mut R,
    ) -> Self {
        let fan_in = in_channels * kernel_h * kernel_w;
        let bound = if fan_in > 0 {
            1.0 / (fan_in as f64).sqrt()
        } else {
            0.0
        };
        // u ∈ [0, 1) mapped onto [−bound, bound); fine when bound = 0.
        let mut draw = || F::from_f64((2.0 * rng.random::<f64>() - 1.0) * bound);
        let weight = Array4::from_shape_simple_fn(
            (out_channels, in_channels, kernel_h, kernel_w),
            &mut draw,
        );
        let bias = bias.then(|| Array1::from_shape_simple_fn(out_channels, &mut draw));
        Self { weight, bias }
    }

    /// A layer of zeros (weight and, if requested, bias).
    pub fn zeros(
        in_channels: usize,
        out_channels: usize,
        (kernel_h, kernel_w): (usize, usize),
        bias: bool,
    ) -> Self {
        Self {
            weight: Array4::zeros((out_channels, in_channels, kernel_h, kernel_w)),
            bias: bias.then(|| Array1::zeros(out_channels)),
        }
    }

    /// The input channels (the weight's second dimension).
    pub fn in_channels(&self) -> usize {
        self.weight.dim().1
    }

    /// The output channels (the weight's first dimension).
    pub fn out_channels(&self) -> usize {
        self.weight.dim().0
    }

    /// The kernel size `(kernel_h, kernel_w)`.
    pub fn kernel_size(&self) -> (usize, usize) {
        let (_, _, kh, kw) = self.weight.dim();
        (kh, kw)
    }

    /// The number of trainable scalars: `out · in · kh · kw`, plus `out` with a bias.
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
        // fan_in = 4 · 2 · 2 = 16: bound 1/4.
        let conv = Conv2d::<f64>::new(4, 300, (2, 2), true, &mut rng);
        let bound = 0.25;
        let weights: Vec<f64> = conv.weight.iter().copied().collect();
        let biases: Vec<f64> = conv.bias.iter().flatten().copied().collect();
        assert!(weights
            .iter()
            .chain(&biases)
            .all(|v| (-bound..bound).contains(v)));
        // U(−b, b): mean 0, variance b²/3 (4800 weight draws).
        let mean = weights.iter().sum::<f64>() / weights.len() as f64;
        let var = weights.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / weights.len() as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - bound * bound / 3.0).abs() < 0.002, "variance {var}");
        // The bias uses the same bound (not 1/√in_channels = 1/2): some of 300 draws exceed
        // 0.2 in magnitude, none exceed 0.25.
        assert!(biases.iter().any(|b| b.abs() > 0.2));
        assert_eq!(
            (conv.in_channels(), conv.out_channels(), conv.kernel_size()),
            (4, 300, (2, 2))
        );
        assert_eq!(conv.num_params(), 4800 + 300);
    }

    #[test]
    fn f32_and_f64_agree_from_one_seed() {
        let a = Conv2d::<f64>::new(2, 3, (3, 2), true, &mut StdRng::seed_from_u64(1));
        let b = Conv2d::<f32>::new(2, 3, (3, 2), true, &mut StdRng::seed_from_u64(1));
        assert_eq!(b.weight, a.weight.mapv(|v| v as f32));
        assert_eq!(b.bias, a.bias.map(|b| b.mapv(|v| v as f32)));
    }

    #[test]
    fn zeros_and_no_bias() {
        let conv = Conv2d::<f32>::zeros(2, 5, (1, 3), false);
        assert_eq!(conv.weight, Array4::<f32>::zeros((5, 2, 1, 3)));
        assert!(conv.bias.is_none());
        assert_eq!(conv.num_params(), 30);
        let empty = Conv2d::<f64>::new(0, 2, (3, 3), true, &mut StdRng::seed_from_u64(2));
        assert_eq!(empty.bias, Some(Array1::zeros(2)));
    }
}
