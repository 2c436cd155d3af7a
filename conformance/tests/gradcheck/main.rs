//! The generated backward passes against central finite differences, in f64: every op
//! (`ops`), and sequence models (`seq`). Each test draws parameters and inputs from a fixed
//! seed, computes the analytic gradients with the generated backward pass, and compares every
//! parameter's gradient with `kiln::check::gradient_check`. One test binary, so that the
//! runtime is compiled for all of them once.

use kiln::ndarray::{Array, Dimension, IntoDimension};
use kiln::rand::rngs::StdRng;
use kiln::rand::RngExt;
use kiln::{BatchArray, Model, Trainable};

mod ops;
mod seq;
mod sizes;

/// The finite-difference step.
const EPS: f64 = 1e-6;
/// The relative tolerance of the comparison.
const RTOL: f64 = 1e-6;
/// The absolute tolerance of the comparison.
const ATOL: f64 = 1e-9;

/// An array of `shape` drawn uniformly from `lo..hi`.
fn random<D: IntoDimension>(rng: &mut StdRng, shape: D, lo: f64, hi: f64) -> Array<f64, D::Dim>
where
    D::Dim: Dimension,
{
    Array::from_shape_simple_fn(shape, || rng.random_range(lo..hi))
}

/// `grads` (the generated backward's) against central differences of `loss` around `model`.
fn check<M: Model<f64> + Clone>(model: &M, grads: &M::Grads, loss: impl FnMut(&M) -> f64) {
    let mut probe = model.clone();
    let report = kiln::check::gradient_check(&mut probe, grads, loss, EPS);
    report.assert_within(RTOL, ATOL);
}

/// A training step's gradients on `batch` (one array per declared input and target) against
/// central differences of training-mode losses on copies of `model`, for models whose
/// training pass differs from inference (batch statistics). Returns the model after the step
/// (running statistics updated); `model` itself is left as it was.
fn check_training_mode<M: Trainable<f64> + Clone>(model: &M, batch: &[BatchArray<f64>]) -> M {
    let mut after = model.clone();
    let mut grads = after.zero_grads();
    after
        .train_step(batch, &mut Default::default(), &mut grads)
        .unwrap();
    check(model, &grads, |m| {
        let mut copy = m.clone();
        let mut scratch = copy.zero_grads();
        copy.train_step(batch, &mut Default::default(), &mut scratch)
            .unwrap()
    });
    after
}

/// A training step's gradients on `batch` against central differences of the inference-mode
/// loss (`eval_step`), for models that compute the same in both modes.
fn check_batch<M: Trainable<f64> + Clone>(model: &M, batch: &[BatchArray<f64>]) {
    let mut grads = model.zero_grads();
    model
        .clone()
        .train_step(batch, &mut Default::default(), &mut grads)
        .unwrap();
    check(model, &grads, |m| {
        m.eval_step(batch, &mut Default::default()).unwrap()
    });
}

/// `a` as a float array of a batch.
fn floats<D: Dimension>(a: &Array<f64, D>) -> BatchArray<f64> {
    BatchArray::Float(a.clone().into_dyn())
}

/// Draws the weights of the layers `is_norm` picks (by layer name) from 0.5..1.5 and their
/// biases from −0.5..0.5: away from the 1 and 0 they start at, so that both take part in
/// every gradient.
fn perturb_affine<M: Model<f64>>(model: &mut M, rng: &mut StdRng, is_norm: impl Fn(&str) -> bool) {
    model.visit_params_mut(&mut |name, mut p| {
        let (layer, param) = name.split_once('.').unwrap_or((name, ""));
        if is_norm(layer) {
            let range = if param == "weight" {
                0.5..1.5
            } else {
                -0.5..0.5
            };
            p.iter_mut()
                .for_each(|v| *v = rng.random_range(range.clone()));
        }
    });
}
