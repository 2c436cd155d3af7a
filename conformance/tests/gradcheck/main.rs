//! The generated backward passes against central finite differences, in f64: every op
//! (`ops`), and sequence models (`seq`). Each test draws parameters and inputs from a fixed
//! seed, computes the analytic gradients with the generated backward pass, and compares every
//! parameter's gradient with `kiln::check::gradient_check`. One test binary, so that the
//! runtime is compiled for all of them once.

use kiln::ndarray::{Array, Dimension, IntoDimension};
use kiln::rand::rngs::StdRng;
use kiln::rand::RngExt;
use kiln::Model;

mod ops;
mod seq;

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
