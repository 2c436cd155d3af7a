//! The parameters of the convolutions: [`Conv1d`] (PyTorch's `nn.Conv1d`), [`Conv2d`] and
//! [`ConvTranspose2d`], each holding a weight in PyTorch's layout and an optional bias.
//!
//! A 1-D convolution runs on the 2-D kernels of [`kernels::conv`](crate::kernels::conv), as a
//! convolution of height 1 with a kernel of height 1: its weight `[out, in/g, k]` has the
//! memory layout of `[out, in/g, 1, k]`. [`Conv1d`] is a layer of its own nevertheless, with a
//! 3-D weight, so that its shape, its `state_dict` entry and what `visit_params` shows are
//! PyTorch's `[out, in/g, k]` (a file `nn.Conv1d` wrote loads as it is, and a 4-D weight
//! would be refused there).

use crate::Float;
use ndarray::{Array1, Array3, Array4, Dimension, IntoDimension};
use rand::{Rng, RngExt};

/// The parameters of a 1-D convolution, laid out as PyTorch's `nn.Conv1d`: `weight` is
/// `[out_channels, in_channels / groups, kernel]`, `bias` is `[out_channels]`. The kernels
/// run it as a [`Conv2d`] of height 1 (the weight has the memory layout of `[out,
/// in/groups, 1, kernel]`); the sizes of the activations live in the
/// [`Conv2dGeometry`](crate::kernels::conv::Conv2dGeometry) built for that view.
///
/// ```
/// use kiln_runtime::layers::Conv1d;
/// use rand::SeedableRng;
/// let mut rng = rand::rngs::StdRng::seed_from_u64(0);
/// let conv = Conv1d::<f32>::new(8, 16, 5, 1, true, &mut rng);
/// assert_eq!(conv.weight.dim(), (16, 8, 5));
/// assert_eq!(conv.num_params(), 16 * 8 * 5 + 16);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Conv1d<F> {
    /// `[out_channels, in_channels / groups, kernel]`.
    pub weight: Array3<F>,
    /// `[out_channels]`, if the layer has a bias.
    pub bias: Option<Array1<F>>,
}

impl<F: Float> Conv1d<F> {
    /// A layer of `groups` channel groups (`groups` divides both channel counts) initialised
    /// as PyTorch's `nn.Conv1d.reset_parameters`: the weight by `kaiming_uniform_(a = √5)` and
    /// the bias uniformly, both `U(−1/√fan_in, 1/√fan_in)` with `fan_in = in_channels / groups
    /// · kernel` (a bound of 0 when `fan_in` is 0). Drawn in f64 and rounded to `F`, the weight
    /// first in row-major order, then the bias: the same values as a [`Conv2d`] of kernel
    /// `(1, kernel)` from the same generator.
    pub fn new<R: Rng + ?Sized>(
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        groups: usize,
        bias: bool,
        rng: &mut R,
    ) -> Self {
        let shape = (out_channels, in_channels / groups.max(1), kernel);
        let (weight, bias) = uniform_init(shape, out_channels, bias, rng);
        Self { weight, bias }
    }

    /// A layer of zeros (weight and, if requested, bias) with `groups` channel groups.
    pub fn zeros(
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        groups: usize,
        bias: bool,
    ) -> Self {
        let shape = (out_channels, in_channels / groups.max(1), kernel);
        Self {
            weight: crate::memory::zeros(shape),
            bias: bias.then(|| crate::memory::zeros(out_channels)),
        }
    }

    /// The input channels of one group (the weight's second dimension).
    pub fn in_channels(&self) -> usize {
        self.weight.dim().1
    }

    /// The output channels (the weight's first dimension).
    pub fn out_channels(&self) -> usize {
        self.weight.dim().0
    }

    /// The kernel size (the weight's last dimension).
    pub fn kernel_size(&self) -> usize {
        self.weight.dim().2
    }

    /// The number of trainable scalars: `out · in/groups · kernel`, plus `out` with a bias.
    pub fn num_params(&self) -> usize {
        self.weight.len() + self.bias.as_ref().map_or(0, |b| b.len())
    }
}

/// The parameters of a 2-D convolution, laid out as PyTorch's `nn.Conv2d`: `weight` is
/// `[out_channels, in_channels / groups, kernel_h, kernel_w]`, `bias` is `[out_channels]`.
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
        kernel: (usize, usize),
        bias: bool,
        rng: &mut R,
    ) -> Self {
        Self::grouped(in_channels, out_channels, kernel, 1, bias, rng)
    }

    /// A layer of `groups` channel groups (`groups` divides both channel counts; the weight
    /// is `[out_channels, in_channels / groups, kh, kw]`), initialised as [`new`](Self::new)
    /// with `fan_in = in_channels / groups · kernel_h · kernel_w`, as PyTorch.
    pub fn grouped<R: Rng + ?Sized>(
        in_channels: usize,
        out_channels: usize,
        (kernel_h, kernel_w): (usize, usize),
        groups: usize,
        bias: bool,
        rng: &mut R,
    ) -> Self {
        let shape = (
            out_channels,
            in_channels / groups.max(1),
            kernel_h,
            kernel_w,
        );
        let (weight, bias) = uniform_init(shape, out_channels, bias, rng);
        Self { weight, bias }
    }

    /// A layer of zeros (weight and, if requested, bias).
    pub fn zeros(
        in_channels: usize,
        out_channels: usize,
        kernel: (usize, usize),
        bias: bool,
    ) -> Self {
        Self::zeros_grouped(in_channels, out_channels, kernel, 1, bias)
    }

    /// A layer of zeros with `groups` channel groups.
    pub fn zeros_grouped(
        in_channels: usize,
        out_channels: usize,
        (kernel_h, kernel_w): (usize, usize),
        groups: usize,
        bias: bool,
    ) -> Self {
        let shape = (
            out_channels,
            in_channels / groups.max(1),
            kernel_h,
            kernel_w,
        );
        Self {
            weight: crate::memory::zeros(shape),
            bias: bias.then(|| crate::memory::zeros(out_channels)),
        }
    }

    /// The input channels of one group (the weight's second dimension).
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

/// PyTorch's `reset_parameters` for convolutions: the weight (of `shape`, drawn first, in
/// row-major order) by `kaiming_uniform_(a = √5)` and the bias uniformly, both
/// `U(−1/√fan_in, 1/√fan_in)` with `fan_in` the weight's second dimension times the kernel
/// area (a bound of 0 when `fan_in` is 0). Drawn in f64 and rounded to `F`, so an f32 and an
/// f64 layer from the same seed agree.
fn uniform_init<F: Float, D: Dimension, R: Rng + ?Sized>(
    shape: impl IntoDimension<Dim = D>,
    bias_len: usize,
    bias: bool,
    rng: &mut R,
) -> (ndarray::Array<F, D>, Option<Array1<F>>) {
    let shape = shape.into_dimension();
    let fan_in: usize = shape.slice()[1..].iter().product();
    let bound = if fan_in > 0 {
        1.0 / (fan_in as f64).sqrt()
    } else {
        0.0
    };
    // u ∈ [0, 1) mapped onto [−bound, bound); fine when bound = 0.
    let mut draw = || F::from_f64((2.0 * rng.random::<f64>() - 1.0) * bound);
    let weight = crate::memory::from_fn(shape, &mut draw);
    let bias = bias.then(|| crate::memory::from_fn(bias_len, &mut draw));
    (weight, bias)
}

/// The parameters of a 2-D transposed convolution, laid out as PyTorch's
/// `nn.ConvTranspose2d`: `weight` is `[in_channels, out_channels / groups, kernel_h,
/// kernel_w]`, `bias` is `[out_channels]`. The sizes of the activations live in
/// [`ConvTranspose2dGeometry`](crate::kernels::conv::ConvTranspose2dGeometry).
///
/// ```
/// use kiln_runtime::layers::ConvTranspose2d;
/// use rand::SeedableRng;
/// let mut rng = rand::rngs::StdRng::seed_from_u64(0);
/// let up = ConvTranspose2d::<f32>::new(16, 8, (2, 2), 2, true, &mut rng);
/// assert_eq!(up.weight.dim(), (16, 4, 2, 2));
/// assert_eq!(up.num_params(), 16 * 4 * 4 + 8);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct ConvTranspose2d<F> {
    /// `[in_channels, out_channels / groups, kernel_h, kernel_w]`.
    pub weight: Array4<F>,
    /// `[out_channels]`, if the layer has a bias.
    pub bias: Option<Array1<F>>,
}

impl<F: Float> ConvTranspose2d<F> {
    /// A layer initialised as PyTorch's `nn.ConvTranspose2d.reset_parameters`:
    /// `U(−1/√fan_in, 1/√fan_in)` for the weight and the bias, where PyTorch computes
    /// `fan_in` from the weight's second dimension: `out_channels / groups · kernel_h ·
    /// kernel_w`. The weight is drawn first, in row-major order, then the bias, in f64.
    pub fn new<R: Rng + ?Sized>(
        in_channels: usize,
        out_channels: usize,
        (kernel_h, kernel_w): (usize, usize),
        groups: usize,
        bias: bool,
        rng: &mut R,
    ) -> Self {
        let shape = (
            in_channels,
            out_channels / groups.max(1),
            kernel_h,
            kernel_w,
        );
        let (weight, bias) = uniform_init(shape, out_channels, bias, rng);
        Self { weight, bias }
    }

    /// A layer of zeros (weight and, if requested, bias).
    pub fn zeros(
        in_channels: usize,
        out_channels: usize,
        (kernel_h, kernel_w): (usize, usize),
        groups: usize,
        bias: bool,
    ) -> Self {
        let shape = (
            in_channels,
            out_channels / groups.max(1),
            kernel_h,
            kernel_w,
        );
        Self {
            weight: crate::memory::zeros(shape),
            bias: bias.then(|| crate::memory::zeros(out_channels)),
        }
    }

    /// The number of trainable scalars.
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

    #[test]
    fn conv1d_draws_what_a_conv2d_of_height_one_draws() {
        // Grouped: fan_in = 6 / 3 · 5 = 10; the values and their order are those of the
        // [out, in/g, 1, k] weight of a 2-D layer from the same seed.
        let one = Conv1d::<f64>::new(6, 9, 5, 3, true, &mut StdRng::seed_from_u64(5));
        let two = Conv2d::<f64>::grouped(6, 9, (1, 5), 3, true, &mut StdRng::seed_from_u64(5));
        assert_eq!(one.weight.dim(), (9, 2, 5));
        assert_eq!(
            one.weight.as_slice().expect("standard layout"),
            two.weight.as_slice().expect("standard layout")
        );
        assert_eq!(one.bias, two.bias);
        let bound = 1.0 / 10f64.sqrt();
        assert!(one.weight.iter().all(|v| v.abs() < bound));
        assert!(one.weight.iter().any(|v| v.abs() > 0.9 * bound));
        assert_eq!(
            (one.in_channels(), one.out_channels(), one.kernel_size()),
            (2, 9, 5)
        );
        assert_eq!(one.num_params(), 90 + 9);
        let zero = Conv1d::<f32>::zeros(4, 6, 3, 2, false);
        assert_eq!(zero.weight, Array3::<f32>::zeros((6, 2, 3)));
        assert_eq!((zero.bias.is_none(), zero.num_params()), (true, 36));
    }

    #[test]
    fn grouped_and_transposed_init_use_torch_fan_in() {
        // Grouped: fan_in = 8 / 4 · 3 · 3 = 18.
        let conv = Conv2d::<f64>::grouped(8, 4, (3, 3), 4, true, &mut StdRng::seed_from_u64(3));
        assert_eq!(conv.weight.dim(), (4, 2, 3, 3));
        let bound = 1.0 / 18f64.sqrt();
        assert!(conv.weight.iter().all(|v| v.abs() < bound));
        assert!(conv.weight.iter().any(|v| v.abs() > 0.9 * bound));
        // Transposed: weight [in, out / groups, kh, kw], fan_in = 6 / 2 · 2 · 2 = 12.
        let up = ConvTranspose2d::<f64>::new(40, 6, (2, 2), 2, true, &mut StdRng::seed_from_u64(4));
        assert_eq!(up.weight.dim(), (40, 3, 2, 2));
        let bound = 1.0 / 12f64.sqrt();
        assert!(up.weight.iter().all(|v| v.abs() < bound));
        assert!(up.weight.iter().any(|v| v.abs() > 0.9 * bound));
        assert_eq!(up.bias.as_ref().map(|b| b.len()), Some(6));
        let zero = ConvTranspose2d::<f32>::zeros(4, 6, (3, 1), 3, false);
        assert_eq!((zero.weight.dim(), zero.num_params()), ((4, 2, 3, 1), 24));
    }
}
