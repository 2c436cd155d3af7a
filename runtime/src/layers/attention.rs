//! The parameters of a multi-head attention layer.

use crate::Float;
use ndarray::{Array1, Array2};
use rand::{Rng, RngExt};

/// The parameters of PyTorch's `nn.MultiheadAttention(embed_dim = D, num_heads, bias)` with
/// equal query, key and value sizes, in its layout: `in_proj_weight` (`[3D, D]`) stacks the
/// query, key and value projections' weights, `in_proj_bias` (`[3D]`) their biases,
/// `out_proj_weight` (`[D, D]`) and `out_proj_bias` (`[D]`) are the output projection's
/// (`out_proj.weight` and `out_proj.bias` in a `state_dict`). The number of heads is not a
/// parameter: it only splits the columns (see `kernels::attention`).
///
/// ```
/// use kiln_runtime::layers::MultiheadAttention;
/// use rand::SeedableRng;
/// let mut rng = rand::rngs::StdRng::seed_from_u64(0);
/// let layer = MultiheadAttention::<f32>::new(128, true, &mut rng);
/// assert_eq!(layer.in_proj_weight.dim(), (384, 128));
/// assert_eq!(layer.num_params(), 4 * 128 * 128 + 4 * 128);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct MultiheadAttention<F> {
    /// `[3D, D]`: the rows `[0, D)` project the query, `[D, 2D)` the keys, `[2D, 3D)` the
    /// values.
    pub in_proj_weight: Array2<F>,
    /// `[3D]`, if the layer has biases.
    pub in_proj_bias: Option<Array1<F>>,
    /// `[D, D]`.
    pub out_proj_weight: Array2<F>,
    /// `[D]`, if the layer has biases.
    pub out_proj_bias: Option<Array1<F>>,
}

impl<F: Float> MultiheadAttention<F> {
    /// A layer initialised as PyTorch's `MultiheadAttention._reset_parameters`:
    /// `in_proj_weight` by `xavier_uniform_`, `U(±√(6 / (D + 3D)))`; `out_proj.weight` as an
    /// `nn.Linear(D, D)`, `U(±1/√D)`; both biases zero. Values are drawn in f64 and rounded to
    /// `F`, so an f32 and an f64 layer from the same seed agree: `in_proj_weight` row by row,
    /// then `out_proj_weight`. Bounds are 0 when `embed` is 0.
    pub fn new<R: Rng + ?Sized>(embed: usize, bias: bool, rng: &mut R) -> Self {
        let (in_bound, out_bound) = if embed > 0 {
            (
                (6.0 / (4 * embed) as f64).sqrt(),
                1.0 / (embed as f64).sqrt(),
            )
        } else {
            (0.0, 0.0)
        };
        // u ∈ [0, 1) mapped onto [−bound, bound); unlike `random_range`, fine when bound = 0.
        let mut draw = |bound: f64| F::from_f64((2.0 * rng.random::<f64>() - 1.0) * bound);
        let in_proj_weight = crate::memory::from_fn((3 * embed, embed), || draw(in_bound));
        let out_proj_weight = crate::memory::from_fn((embed, embed), || draw(out_bound));
        Self {
            in_proj_weight,
            out_proj_weight,
            ..Self::zeros(embed, bias)
        }
    }

    /// A layer of zeros (weights and, if requested, biases).
    pub fn zeros(embed: usize, bias: bool) -> Self {
        Self {
            in_proj_weight: crate::memory::zeros((3 * embed, embed)),
            in_proj_bias: bias.then(|| crate::memory::zeros(3 * embed)),
            out_proj_weight: crate::memory::zeros((embed, embed)),
            out_proj_bias: bias.then(|| crate::memory::zeros(embed)),
        }
    }

    /// The embedding size `D` (the output projection's width).
    pub fn embed_dim(&self) -> usize {
        self.out_proj_weight.ncols()
    }

    /// The number of trainable scalars: `4·D²`, plus `4·D` with biases.
    pub fn num_params(&self) -> usize {
        self.in_proj_weight.len()
            + self.out_proj_weight.len()
            + self.in_proj_bias.as_ref().map_or(0, |b| b.len())
            + self.out_proj_bias.as_ref().map_or(0, |b| b.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    /// Mean and (biased) variance.
    fn moments<'a>(values: impl Iterator<Item = &'a f64>) -> (f64, f64) {
        let all: Vec<f64> = values.copied().collect();
        let mean = all.iter().sum::<f64>() / all.len() as f64;
        let var = all.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / all.len() as f64;
        (mean, var)
    }

    #[test]
    fn init_is_within_torch_bounds_and_spread() {
        let layer = MultiheadAttention::<f64>::new(64, true, &mut StdRng::seed_from_u64(3));
        assert_eq!(layer.in_proj_weight.dim(), (192, 64));
        assert_eq!(layer.out_proj_weight.dim(), (64, 64));
        // U(−b, b) has mean 0 and variance b²/3.
        for (weights, bound) in [
            (&layer.in_proj_weight, (6.0f64 / 256.0).sqrt()),
            (&layer.out_proj_weight, 0.125),
        ] {
            assert!(weights.iter().all(|v| (-bound..bound).contains(v)));
            let (mean, var) = moments(weights.iter());
            assert!(mean.abs() < 0.05 * bound, "mean {mean}");
            assert!(
                (var - bound * bound / 3.0).abs() < 0.05 * bound * bound,
                "variance {var}"
            );
        }
        assert_eq!(layer.in_proj_bias, Some(Array1::zeros(192)));
        assert_eq!(layer.out_proj_bias, Some(Array1::zeros(64)));
        assert_eq!(
            (layer.embed_dim(), layer.num_params()),
            (64, 4 * 64 * 64 + 4 * 64)
        );
    }

    #[test]
    fn draw_order_and_rounding() {
        let a = MultiheadAttention::<f64>::new(3, false, &mut StdRng::seed_from_u64(1));
        let b = MultiheadAttention::<f32>::new(3, false, &mut StdRng::seed_from_u64(1));
        assert_eq!(b.in_proj_weight, a.in_proj_weight.mapv(|v| v as f32));
        assert_eq!(b.out_proj_weight, a.out_proj_weight.mapv(|v| v as f32));
        // in_proj_weight row by row, then out_proj_weight, from one stream of draws.
        let mut rng = StdRng::seed_from_u64(1);
        let u: Vec<f64> = (0..36).map(|_| 2.0 * rng.random::<f64>() - 1.0).collect();
        let (in_bound, out_bound) = (0.5f64.sqrt(), 1.0 / 3f64.sqrt());
        assert_eq!(a.in_proj_weight[[1, 0]], u[3] * in_bound);
        assert_eq!(a.out_proj_weight[[0, 2]], u[27 + 2] * out_bound);
        assert!(a.in_proj_bias.is_none() && a.out_proj_bias.is_none());
    }

    #[test]
    fn zeros_and_no_bias() {
        let layer = MultiheadAttention::<f32>::zeros(4, false);
        assert_eq!(layer.in_proj_weight, Array2::<f32>::zeros((12, 4)));
        assert_eq!(layer.out_proj_weight, Array2::<f32>::zeros((4, 4)));
        assert!(layer.in_proj_bias.is_none() && layer.out_proj_bias.is_none());
        assert_eq!((layer.embed_dim(), layer.num_params()), (4, 64));
        let with_bias = MultiheadAttention::<f64>::zeros(4, true);
        assert_eq!(with_bias.num_params(), 64 + 16);
        // No embedding: bound 0, nothing drawn.
        let empty = MultiheadAttention::<f64>::new(0, true, &mut StdRng::seed_from_u64(2));
        assert_eq!(empty.num_params(), 0);
    }
}
