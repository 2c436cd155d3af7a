//! The parameters of multi-layer, optionally bidirectional LSTMs, GRUs and plain RNNs.

use crate::kernels::recurrent::{RnnCell, RnnDims, RnnOutput};
use crate::Float;
use ndarray::{Array1, Array2};
use rand::{Rng, RngExt};

/// The four parameter vectors of [`Lstm`], [`Gru`] or [`Rnn`], built in one place for all.
struct RnnParams<F> {
    weight_ih: Vec<Array2<F>>,
    weight_hh: Vec<Array2<F>>,
    bias_ih: Vec<Array1<F>>,
    bias_hh: Vec<Array1<F>>,
}

impl<F: Float> RnnParams<F> {
    /// Every parameter from `draw`, in `state_dict` order (for each layer, each direction:
    /// `weight_ih`, `weight_hh`, `bias_ih`, `bias_hh`), each row by row.
    fn build(d: &RnnDims, mut draw: impl FnMut() -> F) -> Self {
        let groups = d.layers * d.directions();
        let rows = d.cell.gates() * d.hidden;
        let mut p = Self {
            weight_ih: Vec::with_capacity(groups),
            weight_hh: Vec::with_capacity(groups),
            bias_ih: Vec::with_capacity(groups),
            bias_hh: Vec::with_capacity(groups),
        };
        for group in 0..groups {
            let input = d.layer_input(group / d.directions());
            p.weight_ih
                .push(crate::memory::from_fn((rows, input), &mut draw));
            p.weight_hh
                .push(crate::memory::from_fn((rows, d.hidden), &mut draw));
            p.bias_ih.push(crate::memory::from_fn(rows, &mut draw));
            p.bias_hh.push(crate::memory::from_fn(rows, &mut draw));
        }
        p
    }

    /// PyTorch's `reset_parameters`: every value from `U(−1/√H, 1/√H)` (a bound of 0 when
    /// `H` is 0), drawn in f64 and rounded to `F`, so an f32 and an f64 layer from the same
    /// seed agree.
    fn random<R: Rng + ?Sized>(d: &RnnDims, rng: &mut R) -> Self {
        let bound = if d.hidden > 0 {
            1.0 / (d.hidden as f64).sqrt()
        } else {
            0.0
        };
        // u ∈ [0, 1) mapped onto [−bound, bound); unlike `random_range`, fine when bound = 0.
        Self::build(d, || F::from_f64((2.0 * rng.random::<f64>() - 1.0) * bound))
    }
}

/// The sizes a layer is built from, as [`RnnDims`] with an empty batch.
fn dims(cell: RnnCell, input: usize, hidden: usize, layers: usize, bidirectional: bool) -> RnnDims {
    RnnDims {
        cell,
        batch: 0,
        seq: 0,
        input,
        hidden,
        layers,
        bidirectional,
        output: RnnOutput::Sequence,
        dropout: 0.0,
    }
}

macro_rules! recurrent_layer {
    ($(#[$doc:meta])* $name:ident, $cell:expr, $torch:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq)]
        pub struct $name<F> {
            /// `weight_ih_l{l}[_reverse]`, `[G·H, in_l]`, indexed by `layer · dirs + direction`.
            pub weight_ih: Vec<Array2<F>>,
            /// `weight_hh_l{l}[_reverse]`, `[G·H, H]`.
            pub weight_hh: Vec<Array2<F>>,
            /// `bias_ih_l{l}[_reverse]`, `[G·H]`.
            pub bias_ih: Vec<Array1<F>>,
            /// `bias_hh_l{l}[_reverse]`, `[G·H]`.
            pub bias_hh: Vec<Array1<F>>,
            /// Whether each layer has a reverse direction.
            pub bidirectional: bool,
        }

        impl<F: Float> $name<F> {
            #[doc = concat!("A stack initialised as PyTorch's `", $torch, "`: every weight and")]
            /// bias from `U(−1/√hidden, 1/√hidden)` (a bound of 0 when `hidden` is 0), drawn in
            /// f64 and rounded to `F` (an f32 and an f64 stack from the same seed agree), in
            /// `state_dict` order: for each layer, each direction, `weight_ih`, `weight_hh`,
            /// `bias_ih`, `bias_hh`, each row by row.
            pub fn new<R: Rng + ?Sized>(
                input: usize,
                hidden: usize,
                layers: usize,
                bidirectional: bool,
                rng: &mut R,
            ) -> Self {
                let d = dims($cell, input, hidden, layers, bidirectional);
                Self::from_params(RnnParams::random(&d, rng), bidirectional)
            }

            /// A stack of zeros.
            pub fn zeros(input: usize, hidden: usize, layers: usize, bidirectional: bool) -> Self {
                let d = dims($cell, input, hidden, layers, bidirectional);
                Self::from_params(RnnParams::build(&d, || F::ZERO), bidirectional)
            }

            fn from_params(p: RnnParams<F>, bidirectional: bool) -> Self {
                Self {
                    weight_ih: p.weight_ih,
                    weight_hh: p.weight_hh,
                    bias_ih: p.bias_ih,
                    bias_hh: p.bias_hh,
                    bidirectional,
                }
            }

            /// The number of directions: 2 when bidirectional, else 1.
            pub fn directions(&self) -> usize {
                if self.bidirectional {
                    2
                } else {
                    1
                }
            }

            /// The number of stacked layers.
            pub fn layers(&self) -> usize {
                self.weight_ih.len() / self.directions()
            }

            /// The input features of the first layer.
            pub fn input(&self) -> usize {
                self.weight_ih.first().map_or(0, |w| w.ncols())
            }

            /// The hidden units per direction.
            pub fn hidden(&self) -> usize {
                self.weight_hh.first().map_or(0, |w| w.ncols())
            }

            /// The kernels' sizes for this stack on `batch` sequences of `seq` steps.
            pub fn dims(&self, batch: usize, seq: usize, output: RnnOutput) -> RnnDims {
                RnnDims {
                    batch,
                    seq,
                    output,
                    ..dims($cell, self.input(), self.hidden(), self.layers(), self.bidirectional)
                }
            }

            /// The number of trainable scalars.
            pub fn num_params(&self) -> usize {
                let weights = self.weight_ih.iter().chain(&self.weight_hh);
                let biases = self.bias_ih.iter().chain(&self.bias_hh);
                weights.map(|a| a.len()).sum::<usize>() + biases.map(|a| a.len()).sum::<usize>()
            }

            /// Every parameter as a flat slice, in `state_dict` order (per layer and
            /// direction: `weight_ih`, `weight_hh`, `bias_ih`, `bias_hh`): what the kernels
            /// take as `params`.
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

            /// [`Self::slices`], mutably (gradients, as the kernels' `param_grads`).
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

            /// The number of parameter tensors: 4 per layer and direction.
            pub fn num_tensors(&self) -> usize {
                4 * self.weight_ih.len()
            }

            /// The `state_dict` name of parameter tensor `k` in `state_dict` order (the order
            /// of the kernels' `params`): `weight_ih_l0`, `weight_hh_l0`, `bias_ih_l0`,
            /// `bias_hh_l0`, then `..._l0_reverse` when bidirectional, then layer 1, ...
            ///
            /// # Panics
            /// If `k >= num_tensors()`.
            pub fn param_name(&self, k: usize) -> String {
                assert!(k < self.num_tensors(), "no parameter tensor {k}");
                self.dims(0, 0, RnnOutput::Sequence).param_shape(k).0
            }
        }
    };
}

recurrent_layer!(
    /// The parameters of a multi-layer, optionally bidirectional LSTM, laid out as PyTorch's
    /// `nn.LSTM(input, hidden, layers, bias=True, bidirectional=..)`: gates `i, f, g, o`
    /// (`G = 4`). Entry `layer · dirs + direction` (0 forward, 1 reverse) of each vector
    /// belongs to that layer and direction; `in_l` is `input` for layer 0, `dirs·hidden` after.
    ///
    /// ```
    /// use kiln_runtime::layers::Lstm;
    /// use rand::SeedableRng;
    /// let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    /// let lstm = Lstm::<f32>::new(10, 8, 2, true, &mut rng);
    /// assert_eq!(lstm.weight_ih[2].dim(), (32, 16)); // layer 1, forward
    /// assert_eq!(lstm.param_name(7), "bias_hh_l0_reverse");
    /// assert_eq!(lstm.num_params(), 2 * (32 * 10 + 32 * 8 + 64) + 2 * (32 * 16 + 32 * 8 + 64));
    /// ```
    Lstm,
    RnnCell::Lstm,
    "nn.LSTM"
);

recurrent_layer!(
    /// The parameters of a multi-layer, optionally bidirectional GRU, laid out as PyTorch's
    /// `nn.GRU(input, hidden, layers, bias=True, bidirectional=..)`: gates `r, z, n`
    /// (`G = 3`). Entry `layer · dirs + direction` (0 forward, 1 reverse) of each vector
    /// belongs to that layer and direction; `in_l` is `input` for layer 0, `dirs·hidden` after.
    ///
    /// ```
    /// use kiln_runtime::layers::Gru;
    /// let gru = Gru::<f64>::zeros(3, 4, 1, false);
    /// assert_eq!(gru.weight_hh[0].dim(), (12, 4));
    /// assert_eq!(gru.num_params(), 12 * 3 + 12 * 4 + 24);
    /// ```
    Gru,
    RnnCell::Gru,
    "nn.GRU"
);

recurrent_layer!(
    /// The parameters of a multi-layer, optionally bidirectional plain (Elman) RNN, laid out
    /// as PyTorch's `nn.RNN(input, hidden, layers, bias=True, bidirectional=..)`: one block
    /// (`G = 1`). The nonlinearity (`tanh` or `relu`) is the op's, not the parameters': this
    /// layer holds either. Entry `layer · dirs + direction` (0 forward, 1 reverse) of each
    /// vector belongs to that layer and direction; `in_l` is `input` for layer 0,
    /// `dirs·hidden` after.
    ///
    /// ```
    /// use kiln_runtime::layers::Rnn;
    /// let rnn = Rnn::<f64>::zeros(3, 4, 2, true);
    /// assert_eq!(rnn.weight_ih[2].dim(), (4, 8)); // layer 1, forward
    /// assert_eq!(rnn.param_name(6), "bias_ih_l0_reverse");
    /// assert_eq!(rnn.num_params(), 2 * (4 * 3 + 4 * 4 + 8) + 2 * (4 * 8 + 4 * 4 + 8));
    /// ```
    Rnn,
    RnnCell::RnnTanh,
    "nn.RNN"
);

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn shapes_names_and_counts_follow_state_dict() {
        let lstm = Lstm::<f64>::zeros(5, 3, 2, true);
        let d = lstm.dims(7, 9, RnnOutput::Final);
        assert_eq!(
            (d.batch, d.seq, d.input, d.hidden, d.layers),
            (7, 9, 5, 3, 2)
        );
        assert_eq!(lstm.num_tensors(), 16);
        for (k, (name, shape)) in d.param_shapes().into_iter().enumerate() {
            assert_eq!(lstm.param_name(k), name);
            let (group, kind) = (k / 4, k % 4);
            let got = match kind {
                0 => lstm.weight_ih[group].shape().to_vec(),
                1 => lstm.weight_hh[group].shape().to_vec(),
                2 => lstm.bias_ih[group].shape().to_vec(),
                _ => lstm.bias_hh[group].shape().to_vec(),
            };
            assert_eq!(got, shape, "{name}");
        }
        assert_eq!(lstm.param_name(0), "weight_ih_l0");
        assert_eq!(lstm.param_name(5), "weight_hh_l0_reverse");
        assert_eq!(lstm.param_name(15), "bias_hh_l1_reverse");
        let per_dir = |input: usize| 12 * input + 12 * 3 + 24;
        assert_eq!(lstm.num_params(), 2 * per_dir(5) + 2 * per_dir(6));
        let gru = Gru::<f32>::zeros(4, 2, 1, false);
        assert_eq!(
            (gru.layers(), gru.input(), gru.hidden(), gru.num_params()),
            (1, 4, 2, 6 * 4 + 6 * 2 + 12)
        );
        assert_eq!(gru.param_name(3), "bias_hh_l0");
    }

    #[test]
    fn init_is_uniform_within_torch_bound_in_state_dict_order() {
        let mut rng = StdRng::seed_from_u64(3);
        let gru = Gru::<f64>::new(6, 16, 2, true, &mut rng);
        let bound = 0.25;
        // The draws, replayed in state_dict order, row by row.
        let mut replay = StdRng::seed_from_u64(3);
        let mut next = || (2.0 * replay.random::<f64>() - 1.0) * bound;
        let mut all = Vec::new();
        for group in 0..4 {
            for value in gru.weight_ih[group]
                .iter()
                .chain(gru.weight_hh[group].iter())
                .chain(gru.bias_ih[group].iter())
                .chain(gru.bias_hh[group].iter())
            {
                assert_eq!(*value, next());
                all.push(*value);
            }
        }
        assert_eq!(all.len(), gru.num_params());
        assert!(all.iter().all(|v| (-bound..bound).contains(v)));
        let mean = all.iter().sum::<f64>() / all.len() as f64;
        let var = all.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / all.len() as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - bound * bound / 3.0).abs() < 0.002, "variance {var}");
    }

    #[test]
    fn f32_and_f64_agree_from_one_seed() {
        let a = Lstm::<f64>::new(3, 4, 1, false, &mut StdRng::seed_from_u64(1));
        let b = Lstm::<f32>::new(3, 4, 1, false, &mut StdRng::seed_from_u64(1));
        assert_eq!(b.weight_ih[0], a.weight_ih[0].mapv(|v| v as f32));
        assert_eq!(b.bias_hh[0], a.bias_hh[0].mapv(|v| v as f32));
    }
}
