//! The parameters of a multi-head attention layer.

use crate::Float;
use ndarray::{Array1, Array2};
use rand::Rng;

/// The parameters of PyTorch's `nn.MultiheadAttention(embed_dim, num_heads, bias)`:
/// `in_proj_weight [3D, D]` (query, key and value projections stacked), `in_proj_bias [3D]`,
/// `out_proj.weight [D, D]` and `out_proj.bias [D]` (the fields `out_proj_weight`,
/// `out_proj_bias`).
///
/// ```
/// use kiln_runtime::layers::MultiheadAttention;
/// use rand::SeedableRng;
/// let attn = MultiheadAttention::<f32>::new(8, true, &mut rand::rngs::StdRng::seed_from_u64(0));
/// assert_eq!(attn.in_proj_weight.dim(), (24, 8));
/// assert_eq!(attn.num_params(), 24 * 8 + 24 + 8 * 8 + 8);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct MultiheadAttention<F> {
    /// `[3·D, D]`: the query, key and value projections, in that order.
    pub in_proj_weight: Array2<F>,
    /// `[3·D]`, if the layer has biases.
    pub in_proj_bias: Option<Array1<F>>,
    /// `[D, D]`: the output projection (`out_proj.weight`).
    pub out_proj_weight: Array2<F>,
    /// `[D]` (`out_proj.bias`), if the layer has biases.
    pub out_proj_bias: Option<Array1<F>>,
}

impl<F: Float> MultiheadAttention<F> {
    /// A layer initialised as PyTorch's `_reset_parameters`: `in_proj_weight` by
    /// `xavier_uniform_` (U(±√(6 / (D + 3D)))), `out_proj.weight` as an `nn.Linear(D, D)`
    /// (U(±1/√D)), both biases zero. Values are drawn in f64, row by row, `in_proj_weight` first.
    pub fn new<R: Rng + ?Sized>(embed: usize, bias: bool, rng: &mut R) -> Self {
        let mut uniform = |bound: f64| F::from_f64((2.0 * rng.random::<f64>() - 1.0) * bound);
        let xavier = if embed > 0 {
            (6.0 / (4 * embed) as f64).sqrt()
        } else {
            0.0
        };
        let in_proj_weight = Array2::from_shape_simple_fn((3 * embed, embed), || uniform(xavier));
        let linear = if embed > 0 {
            1.0 / (embed as f64).sqrt()
        } else {
            0.0
        };
        let out_proj_weight = Array2::from_shape_simple_fn((embed, embed), || uniform(linear));
        Self {
            in_proj_weight,
            in_proj_bias: bias.then(|| Array1::zeros(3 * embed)),
            out_proj_weight,
            out_proj_bias: bias.then(|| Array1::zeros(embed)),
        }
    }

    /// A layer of zeros.
    pub fn zeros(embed: usize, bias: bool) -> Self {
        Self {
            in_proj_weight: Array2::zeros((3 * embed, embed)),
            in_proj_bias: bias.then(|| Array1::zeros(3 * embed)),
            out_proj_weight: Array2::zeros((embed, embed)),
            out_proj_bias: bias.then(|| Array1::zeros(embed)),
        }
    }

    /// The embedding size `D`.
    pub fn embed_dim(&self) -> usize {
        self.in_proj_weight.ncols()
    }

    /// The number of trainable scalars.
    pub fn num_params(&self) -> usize {
        self.in_proj_weight.len()
            + self.out_proj_weight.len()
            + self.in_proj_bias.as_ref().map_or(0, |b| b.len())
            + self.out_proj_bias.as_ref().map_or(0, |b| b.len())
    }
}
