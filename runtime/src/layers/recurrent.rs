//! The parameters of the recurrent layers, `nn.LSTM` and `nn.GRU`.

use crate::Float;
use ndarray::{Array1, Array2};
use rand::Rng;

/// The parameters of a stacked, possibly bidirectional recurrent layer with `gates` gate
/// blocks (4 for an LSTM, 3 for a GRU), in PyTorch's layout: index `layer · dirs + direction`
/// holds `weight_ih_l{layer}[_reverse]` `[gates·H, in]`, `weight_hh_l{layer}[_reverse]`
/// `[gates·H, H]`, `bias_ih_l{layer}[_reverse]` and `bias_hh_l{layer}[_reverse]` `[gates·H]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Recurrent<F, const GATES: usize> {
    /// Input-to-hidden weights per layer and direction.
    pub weight_ih: Vec<Array2<F>>,
    /// Hidden-to-hidden weights per layer and direction.
    pub weight_hh: Vec<Array2<F>>,
    /// Input-to-hidden biases per layer and direction.
    pub bias_ih: Vec<Array1<F>>,
    /// Hidden-to-hidden biases per layer and direction.
    pub bias_hh: Vec<Array1<F>>,
}

/// `nn.LSTM`'s parameters (gates i, f, g, o).
///
/// ```
/// use kiln_runtime::layers::Lstm;
/// use rand::SeedableRng;
/// let lstm = Lstm::<f32>::new(4, 5, 2, true, &mut rand::rngs::StdRng::seed_from_u64(0));
/// assert_eq!(lstm.weight_ih[2].dim(), (20, 10)); // layer 1 reads both directions
/// ```
pub type Lstm<F> = Recurrent<F, 4>;
/// `nn.GRU`'s parameters (gates r, z, n).
pub type Gru<F> = Recurrent<F, 3>;

impl<F: Float, const GATES: usize> Recurrent<F, GATES> {
    fn shapes(
        input: usize,
        hidden: usize,
        layers: usize,
        bidirectional: bool,
    ) -> Vec<(usize, usize)> {
        let dirs = 1 + usize::from(bidirectional);
        (0..layers * dirs)
            .map(|k| {
                let inp = if k / dirs == 0 { input } else { dirs * hidden };
                (GATES * hidden, inp)
            })
            .collect()
    }

    /// A layer initialised as PyTorch does: every parameter U(±1/√hidden), drawn in f64 in
    /// `state_dict` order (per layer and direction: `weight_ih`, `weight_hh`, `bias_ih`,
    /// `bias_hh`), row by row.
    pub fn new<R: Rng + ?Sized>(
        input: usize,
        hidden: usize,
        layers: usize,
        bidirectional: bool,
        rng: &mut R,
    ) -> Self {
        let bound = if hidden > 0 {
            1.0 / (hidden as f64).sqrt()
        } else {
            0.0
        };
        let mut draw = || F::from_f64((2.0 * rng.random::<f64>() - 1.0) * bound);
        let mut out = Self::zeros(input, hidden, layers, bidirectional);
        for k in 0..out.weight_ih.len() {
            out.weight_ih[k].mapv_inplace(|_| draw());
            out.weight_hh[k].mapv_inplace(|_| draw());
            out.bias_ih[k].mapv_inplace(|_| draw());
            out.bias_hh[k].mapv_inplace(|_| draw());
        }
        out
    }

    /// A layer of zeros.
    pub fn zeros(input: usize, hidden: usize, layers: usize, bidirectional: bool) -> Self {
        let shapes = Self::shapes(input, hidden, layers, bidirectional);
        Self {
            weight_ih: shapes.iter().map(|&s| Array2::zeros(s)).collect(),
            weight_hh: shapes
                .iter()
                .map(|&(g, _)| Array2::zeros((g, hidden)))
                .collect(),
            bias_ih: shapes.iter().map(|&(g, _)| Array1::zeros(g)).collect(),
            bias_hh: shapes.iter().map(|&(g, _)| Array1::zeros(g)).collect(),
        }
    }

    /// Every parameter as a flat slice, in `state_dict` order (per layer and direction:
    /// `weight_ih`, `weight_hh`, `bias_ih`, `bias_hh`): what the kernels take.
    pub fn slices(&self) -> impl Iterator<Item = &[F]> {
        self.weight_ih
            .iter()
            .zip(&self.weight_hh)
            .zip(self.bias_ih.iter().zip(&self.bias_hh))
            .flat_map(|((wi, wh), (bi, bh))| {
                [
                    wi.as_slice().unwrap_or(&[]),
                    wh.as_slice().unwrap_or(&[]),
                    bi.as_slice().unwrap_or(&[]),
                    bh.as_slice().unwrap_or(&[]),
                ]
            })
    }

    /// [`Recurrent::slices`], mutably (for gradients).
    pub fn slices_mut(&mut self) -> impl Iterator<Item = &mut [F]> {
        self.weight_ih
            .iter_mut()
            .zip(self.weight_hh.iter_mut())
            .zip(self.bias_ih.iter_mut().zip(self.bias_hh.iter_mut()))
            .flat_map(|((wi, wh), (bi, bh))| {
                [
                    wi.as_slice_mut().unwrap_or(&mut []),
                    wh.as_slice_mut().unwrap_or(&mut []),
                    bi.as_slice_mut().unwrap_or(&mut []),
                    bh.as_slice_mut().unwrap_or(&mut []),
                ]
            })
    }

    /// The number of trainable scalars.
    pub fn num_params(&self) -> usize {
        let sum = |v: usize, n: usize| v + n;
        self.weight_ih.iter().map(|a| a.len()).fold(0, sum)
            + self.weight_hh.iter().map(|a| a.len()).fold(0, sum)
            + self.bias_ih.iter().map(|a| a.len()).fold(0, sum)
            + self.bias_hh.iter().map(|a| a.len()).fold(0, sum)
    }
}
