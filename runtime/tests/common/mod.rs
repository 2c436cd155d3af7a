//! A tiny hand-written `Model` for the integration tests: one linear layer `fc` (weight
//! `[2, 3]`, bias `[2]`) and one non-trainable buffer `norm.running_mean` (`[2]`).

#![allow(dead_code)]

use kiln_runtime::kernels::{linear_backward_bias, linear_backward_weight, linear_forward};
use kiln_runtime::loss::{mse, mse_backward};
use kiln_runtime::{Float, Model, Summary, SummaryRow};
use ndarray::{Array1, Array2, ArrayViewD, ArrayViewMutD};

pub const IN: usize = 3;
pub const OUT: usize = 2;

#[derive(Clone, Debug, PartialEq)]
pub struct Tiny<F> {
    pub weight: Array2<F>,
    pub bias: Array1<F>,
    pub running_mean: Array1<F>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TinyGrads<F> {
    pub weight: Array2<F>,
    pub bias: Array1<F>,
}

impl<F: Float> Tiny<F> {
    /// Parameters from f64 values (rounded to `F`): 6 weights, 2 biases, 2 buffer values.
    pub fn from_values(weight: &[f64], bias: &[f64], running_mean: &[f64]) -> Self {
        let conv = |v: &[f64]| v.iter().map(|&x| F::from_f64(x)).collect::<Vec<F>>();
        Self {
            weight: Array2::from_shape_vec((OUT, IN), conv(weight)).expect("6 weights"),
            bias: Array1::from(conv(bias)),
            running_mean: Array1::from(conv(running_mean)),
        }
    }

    /// Distinct, non-round values.
    pub fn sample() -> Self {
        Self::from_values(
            &[0.31, -0.72, 0.055, 1.13, -0.48, 0.9],
            &[0.125, -0.37],
            &[0.6, -0.2],
        )
    }

    pub fn zeros() -> Self {
        Self::from_values(&[0.0; 6], &[0.0; 2], &[0.0; 2])
    }

    /// Every parameter element, weight then bias, as f64.
    pub fn flat_params(&self) -> Vec<f64> {
        self.weight
            .iter()
            .chain(self.bias.iter())
            .map(|v| v.to_f64())
            .collect()
    }

    /// Gradients from f64 values in the `flat_params` order.
    pub fn grads_from(values: &[f64]) -> TinyGrads<F> {
        let conv = |v: &[f64]| v.iter().map(|&x| F::from_f64(x)).collect::<Vec<F>>();
        TinyGrads {
            weight: Array2::from_shape_vec((OUT, IN), conv(&values[..6])).expect("6 weights"),
            bias: Array1::from(conv(&values[6..8])),
        }
    }

    /// MSE of the layer on a fixed batch: the loss used by the gradient-check tests.
    pub fn loss(&self, x: &[F], y: &[F], batch: usize) -> F {
        let mut pred = vec![F::ZERO; batch * OUT];
        let (w, b) = (
            self.weight.as_slice().expect("standard"),
            self.bias.as_slice().expect("standard"),
        );
        linear_forward(x, w, Some(b), batch, IN, OUT, &mut pred);
        mse(&pred, y)
    }

    /// The analytic gradient of [`Tiny::loss`].
    pub fn loss_grads(&self, x: &[F], y: &[F], batch: usize) -> TinyGrads<F> {
        let mut pred = vec![F::ZERO; batch * OUT];
        let (w, b) = (
            self.weight.as_slice().expect("standard"),
            self.bias.as_slice().expect("standard"),
        );
        linear_forward(x, w, Some(b), batch, IN, OUT, &mut pred);
        let mut d_pred = vec![F::ZERO; batch * OUT];
        mse_backward(&pred, y, F::ONE, &mut d_pred, false);
        let mut grads = self.zero_grads();
        linear_backward_weight(
            x,
            &d_pred,
            batch,
            IN,
            OUT,
            grads.weight.as_slice_mut().expect("standard"),
            false,
        );
        linear_backward_bias(
            &d_pred,
            batch,
            OUT,
            grads.bias.as_slice_mut().expect("standard"),
            false,
        );
        grads
    }
}

impl<F: Float> Model<F> for Tiny<F> {
    type Grads = TinyGrads<F>;

    fn visit_params(&self, f: &mut dyn FnMut(&'static str, ArrayViewD<'_, F>)) {
        f("fc.weight", self.weight.view().into_dyn());
        f("fc.bias", self.bias.view().into_dyn());
    }

    fn visit_params_mut(&mut self, f: &mut dyn FnMut(&'static str, ArrayViewMutD<'_, F>)) {
        f("fc.weight", self.weight.view_mut().into_dyn());
        f("fc.bias", self.bias.view_mut().into_dyn());
    }

    fn visit_buffers(&self, f: &mut dyn FnMut(&'static str, ArrayViewD<'_, F>)) {
        f("norm.running_mean", self.running_mean.view().into_dyn());
    }

    fn visit_buffers_mut(&mut self, f: &mut dyn FnMut(&'static str, ArrayViewMutD<'_, F>)) {
        f("norm.running_mean", self.running_mean.view_mut().into_dyn());
    }

    fn visit_grads(grads: &TinyGrads<F>, f: &mut dyn FnMut(&'static str, ArrayViewD<'_, F>)) {
        f("fc.weight", grads.weight.view().into_dyn());
        f("fc.bias", grads.bias.view().into_dyn());
    }

    fn visit_grads_mut(
        grads: &mut TinyGrads<F>,
        f: &mut dyn FnMut(&'static str, ArrayViewMutD<'_, F>),
    ) {
        f("fc.weight", grads.weight.view_mut().into_dyn());
        f("fc.bias", grads.bias.view_mut().into_dyn());
    }

    fn visit_params_with_grads(
        &mut self,
        grads: &TinyGrads<F>,
        f: &mut dyn FnMut(usize, &mut [F], &[F]),
    ) {
        f(
            0,
            self.weight.as_slice_mut().expect("standard"),
            grads.weight.as_slice().expect("standard"),
        );
        f(
            1,
            self.bias.as_slice_mut().expect("standard"),
            grads.bias.as_slice().expect("standard"),
        );
    }

    fn zero_grads(&self) -> TinyGrads<F> {
        TinyGrads {
            weight: Array2::zeros((OUT, IN)),
            bias: Array1::zeros(OUT),
        }
    }

    fn num_params(&self) -> usize {
        OUT * IN + OUT
    }

    fn summary(&self) -> Summary {
        Summary {
            model: "Tiny",
            dtype: F::NAME,
            rows: vec![SummaryRow {
                name: "fc",
                op: "linear",
                output_shape: "[B, 2]",
                params: 8,
            }],
            ..Default::default()
        }
    }

    fn graph(&self) -> &'static str {
        "fc = linear(x, 2)\n"
    }
}
