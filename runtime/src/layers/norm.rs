//! The parameters and running statistics of the normalisation layers: batch, layer and
//! group norm.

use crate::Float;
use ndarray::{Array1, ArrayD, IxDyn};

/// The state of a batch norm over `num_features` channels, as PyTorch's `BatchNorm1d` /
/// `BatchNorm2d` (affine, tracking running statistics): the trainable `weight` and `bias`, and
/// the non-trainable `running_mean` and `running_var` buffers (saved with the parameters, as
/// in a `state_dict`), all `[num_features]`.
///
/// PyTorch's integer `num_batches_tracked` buffer is not kept: with a fixed momentum it does
/// not affect any value.
///
/// ```
/// use kiln_runtime::layers::BatchNorm;
/// let bn = BatchNorm::<f32>::new(3);
/// assert_eq!(bn.weight.to_vec(), [1.0; 3]);
/// assert_eq!(bn.running_var.to_vec(), [1.0; 3]);
/// assert_eq!(bn.num_params(), 6);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct BatchNorm<F> {
    /// The per-channel scale (γ), `[num_features]`.
    pub weight: Array1<F>,
    /// The per-channel shift (β), `[num_features]`.
    pub bias: Array1<F>,
    /// The running mean used in evaluation mode, `[num_features]`.
    pub running_mean: Array1<F>,
    /// The running (unbiased) variance used in evaluation mode, `[num_features]`.
    pub running_var: Array1<F>,
}

impl<F: Float> BatchNorm<F> {
    /// PyTorch's initial state: weight 1, bias 0, running mean 0, running variance 1.
    pub fn new(num_features: usize) -> Self {
        Self {
            weight: Array1::ones(num_features),
            bias: Array1::zeros(num_features),
            running_mean: Array1::zeros(num_features),
            running_var: Array1::ones(num_features),
        }
    }

    /// Zero parameters (weight and bias 0), with the running statistics at their reset state
    /// (mean 0, variance 1, as PyTorch's `reset_running_stats`). The variance stays 1 rather
    /// than 0 so that evaluation mode never divides by `√eps` alone: "zeros" is about the
    /// trainable parameters, and the buffers are not parameters.
    pub fn zeros(num_features: usize) -> Self {
        Self {
            weight: Array1::zeros(num_features),
            bias: Array1::zeros(num_features),
            running_mean: Array1::zeros(num_features),
            running_var: Array1::ones(num_features),
        }
    }

    /// The number of channels.
    pub fn num_features(&self) -> usize {
        self.weight.len()
    }

    /// The number of trainable scalars, `2 · num_features` (the buffers are not counted).
    pub fn num_params(&self) -> usize {
        self.weight.len() + self.bias.len()
    }
}

/// The running statistics of a batch norm without its affine map (`batch_norm(x, affine =
/// false)`, PyTorch's `BatchNorm1d/2d(C, affine=False)`): the `running_mean` and
/// `running_var` buffers, `[num_features]`, and no trainable parameters.
///
/// ```
/// use kiln_runtime::layers::RunningStats;
/// let stats = RunningStats::<f32>::new(3);
/// assert_eq!(stats.running_var.to_vec(), [1.0; 3]);
/// assert_eq!((stats.num_features(), stats.num_params()), (3, 0));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct RunningStats<F> {
    /// The running mean used in evaluation mode, `[num_features]`.
    pub running_mean: Array1<F>,
    /// The running (unbiased) variance used in evaluation mode, `[num_features]`.
    pub running_var: Array1<F>,
}

impl<F: Float> RunningStats<F> {
    /// PyTorch's initial state: running mean 0, running variance 1.
    pub fn new(num_features: usize) -> Self {
        Self {
            running_mean: Array1::zeros(num_features),
            running_var: Array1::ones(num_features),
        }
    }

    /// The same as [`RunningStats::new`]: there are no parameters to zero, and the buffers
    /// keep their reset state (see [`BatchNorm::zeros`]).
    pub fn zeros(num_features: usize) -> Self {
        Self::new(num_features)
    }

    /// The number of channels.
    pub fn num_features(&self) -> usize {
        self.running_mean.len()
    }

    /// The number of trainable scalars: none.
    pub fn num_params(&self) -> usize {
        0
    }
}

/// The parameters of a layer norm over the last `normalized_len` elements (the product of
/// PyTorch's `normalized_shape`), as `nn.LayerNorm` with `elementwise_affine = True`: `weight`
/// and `bias` are `[normalized_len]` (flattened if `normalized_shape` has several dims); the
/// bias is `None` for `nn.LayerNorm(.., bias=False)`.
///
/// ```
/// use kiln_runtime::layers::LayerNorm;
/// let ln = LayerNorm::<f64>::new(4, true);
/// assert_eq!(ln.weight.to_vec(), vec![1.0; 4]);
/// assert_eq!(ln.bias.map(|b| b.to_vec()), Some(vec![0.0; 4]));
/// assert_eq!(LayerNorm::<f32>::new(4, false).num_params(), 4);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct LayerNorm<F> {
    /// The elementwise scale (γ).
    pub weight: Array1<F>,
    /// The elementwise shift (β), if the layer has one.
    pub bias: Option<Array1<F>>,
}

impl<F: Float> LayerNorm<F> {
    /// PyTorch's initial state: weight 1, bias 0 (with `bias`).
    pub fn new(normalized_len: usize, bias: bool) -> Self {
        Self {
            weight: Array1::ones(normalized_len),
            bias: bias.then(|| Array1::zeros(normalized_len)),
        }
    }

    /// Zero weight and bias (with `bias`).
    pub fn zeros(normalized_len: usize, bias: bool) -> Self {
        Self {
            weight: Array1::zeros(normalized_len),
            bias: bias.then(|| Array1::zeros(normalized_len)),
        }
    }

    /// The number of normalised elements per row.
    pub fn normalized_len(&self) -> usize {
        self.weight.len()
    }

    /// The number of trainable scalars: `2 · normalized_len`, or `normalized_len` without a
    /// bias.
    pub fn num_params(&self) -> usize {
        self.weight.len() + self.bias.as_ref().map_or(0, |b| b.len())
    }
}

/// The parameters of an RMS norm over the last `normalized_len` elements, as PyTorch's
/// `nn.RMSNorm(normalized_shape)` with `elementwise_affine = True`: the elementwise `weight`
/// (γ), `[normalized_len]`, starting at 1. (An RMS norm has no bias.)
///
/// ```
/// use kiln_runtime::layers::RmsNorm;
/// let norm = RmsNorm::<f32>::new(4);
/// assert_eq!(norm.weight.to_vec(), vec![1.0; 4]);
/// assert_eq!(norm.num_params(), 4);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct RmsNorm<F> {
    /// The elementwise scale (γ).
    pub weight: Array1<F>,
}

impl<F: Float> RmsNorm<F> {
    /// PyTorch's initial state: weight 1.
    pub fn new(normalized_len: usize) -> Self {
        Self {
            weight: Array1::ones(normalized_len),
        }
    }

    /// Zero weight.
    pub fn zeros(normalized_len: usize) -> Self {
        Self {
            weight: Array1::zeros(normalized_len),
        }
    }

    /// The number of normalised elements per row.
    pub fn normalized_len(&self) -> usize {
        self.weight.len()
    }

    /// The number of trainable scalars: `normalized_len`.
    pub fn num_params(&self) -> usize {
        self.weight.len()
    }
}

/// The parameters of a group norm over `num_channels` channels, as PyTorch's
/// `nn.GroupNorm(num_groups, num_channels)` with `affine = True`: the per-channel `weight` and
/// `bias`, `[num_channels]`. The number of groups is part of the model (the compiler fixes
/// it), not of the layer's state, as it is not part of a `state_dict`.
///
/// ```
/// use kiln_runtime::layers::GroupNorm;
/// let gn = GroupNorm::<f32>::new(6);
/// assert_eq!((gn.weight.to_vec(), gn.bias.to_vec()), (vec![1.0; 6], vec![0.0; 6]));
/// assert_eq!(gn.num_params(), 12);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct GroupNorm<F> {
    /// The per-channel scale (γ), `[num_channels]`.
    pub weight: Array1<F>,
    /// The per-channel shift (β), `[num_channels]`.
    pub bias: Array1<F>,
}

impl<F: Float> GroupNorm<F> {
    /// PyTorch's initial state: weight 1, bias 0.
    pub fn new(num_channels: usize) -> Self {
        Self {
            weight: Array1::ones(num_channels),
            bias: Array1::zeros(num_channels),
        }
    }

    /// Zero weight and bias.
    pub fn zeros(num_channels: usize) -> Self {
        Self {
            weight: Array1::zeros(num_channels),
            bias: Array1::zeros(num_channels),
        }
    }

    /// The number of channels.
    pub fn num_channels(&self) -> usize {
        self.weight.len()
    }

    /// The number of trainable scalars, `2 · num_channels`.
    pub fn num_params(&self) -> usize {
        self.weight.len() + self.bias.len()
    }
}

/// The parameters of a layer norm over several trailing axes, as `nn.LayerNorm(shape)` with a
/// `normalized_shape` of two or more dims (`layer_norm(x, dims = k)`): `weight` and `bias`
/// have that shape, as in PyTorch's `state_dict`; the bias is `None` for `bias=False`.
///
/// ```
/// use kiln_runtime::layers::LayerNormNd;
/// let ln = LayerNormNd::<f32>::new(&[4, 5], true);
/// assert_eq!(ln.weight.shape(), [4, 5]);
/// assert_eq!((ln.normalized_len(), ln.num_params()), (20, 40));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct LayerNormNd<F> {
    /// The elementwise scale (γ), of the normalized shape.
    pub weight: ArrayD<F>,
    /// The elementwise shift (β), if the layer has one.
    pub bias: Option<ArrayD<F>>,
}

impl<F: Float> LayerNormNd<F> {
    /// PyTorch's initial state: weight 1, bias 0 (with `bias`).
    pub fn new(normalized_shape: &[usize], bias: bool) -> Self {
        Self {
            weight: ArrayD::ones(IxDyn(normalized_shape)),
            bias: bias.then(|| ArrayD::zeros(IxDyn(normalized_shape))),
        }
    }

    /// Zero weight and bias (with `bias`).
    pub fn zeros(normalized_shape: &[usize], bias: bool) -> Self {
        Self {
            weight: ArrayD::zeros(IxDyn(normalized_shape)),
            bias: bias.then(|| ArrayD::zeros(IxDyn(normalized_shape))),
        }
    }

    /// The number of normalised elements per row (the product of the normalized shape).
    pub fn normalized_len(&self) -> usize {
        self.weight.len()
    }

    /// The number of trainable scalars: `2 · normalized_len`, or `normalized_len` without a
    /// bias.
    pub fn num_params(&self) -> usize {
        self.weight.len() + self.bias.as_ref().map_or(0, |b| b.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_norm_initial_and_zero_states() {
        let bn = BatchNorm::<f64>::new(3);
        assert_eq!(bn.weight.to_vec(), [1.0; 3]);
        assert_eq!(bn.bias.to_vec(), [0.0; 3]);
        assert_eq!(bn.running_mean.to_vec(), [0.0; 3]);
        assert_eq!(bn.running_var.to_vec(), [1.0; 3]);
        assert_eq!((bn.num_features(), bn.num_params()), (3, 6));
        let z = BatchNorm::<f32>::zeros(2);
        assert_eq!(z.weight.to_vec(), [0.0; 2]);
        assert_eq!(z.bias.to_vec(), [0.0; 2]);
        assert_eq!(z.running_mean.to_vec(), [0.0; 2]);
        assert_eq!(z.running_var.to_vec(), [1.0; 2]);
    }

    #[test]
    fn layer_norm_initial_and_zero_states() {
        let ln = LayerNorm::<f32>::new(5, true);
        assert_eq!(ln.weight.to_vec(), [1.0; 5]);
        assert_eq!(ln.bias.as_ref().map(|b| b.to_vec()), Some(vec![0.0; 5]));
        assert_eq!((ln.normalized_len(), ln.num_params()), (5, 10));
        let z = LayerNorm::<f64>::zeros(2, true);
        assert_eq!(
            (z.weight.to_vec(), z.bias.map(|b| b.to_vec())),
            (vec![0.0; 2], Some(vec![0.0; 2]))
        );
        let unbiased = LayerNorm::<f64>::new(3, false);
        assert_eq!((unbiased.bias.is_none(), unbiased.num_params()), (true, 3));
    }

    #[test]
    fn group_norm_initial_and_zero_states() {
        let gn = GroupNorm::<f64>::new(4);
        assert_eq!(gn.weight.to_vec(), [1.0; 4]);
        assert_eq!(gn.bias.to_vec(), [0.0; 4]);
        assert_eq!((gn.num_channels(), gn.num_params()), (4, 8));
        let z = GroupNorm::<f32>::zeros(2);
        assert_eq!(
            (z.weight.to_vec(), z.bias.to_vec()),
            (vec![0.0; 2], vec![0.0; 2])
        );
    }
}
