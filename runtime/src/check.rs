//! Gradient checking by central finite differences, for tests.
//!
//! [`gradient_check`] compares a model's analytic gradients (from its generated backward pass)
//! with `(L(p + ε) − L(p − ε)) / 2ε` for every parameter element; [`numeric_gradient`] does the
//! same for a plain function of a slice, to check kernels directly. Both run in f64, where a
//! step of about 1e-6 balances truncation error (∝ ε²) against rounding error (∝ 1/ε).

use crate::Model;
use std::collections::HashMap;
use std::fmt;

/// Central difference of `f` along `x[i]`. The step actually taken, `(x + ε) − (x − ε)`, is
/// used as the denominator: it differs from `2ε` by rounding when `|x| ≫ ε`. `x[i]` is
/// restored bit for bit.
fn central_difference(mut eval: impl FnMut(f64) -> f64, x: f64, eps: f64) -> f64 {
    let (up, down) = (x + eps, x - eps);
    let (f_up, f_down) = (eval(up), eval(down));
    (f_up - f_down) / (up - down)
}

/// The gradient of `f` at `x` by central differences with step `eps`, one element at a
/// time. Every element of `x` is restored exactly afterwards.
///
/// ```
/// use kiln_runtime::check::numeric_gradient;
/// let mut x = [1.0, -2.0];
/// let g = numeric_gradient(|x| x[0] * x[0] + 3.0 * x[1], &mut x, 1e-6);
/// assert!((g[0] - 2.0).abs() < 1e-8 && (g[1] - 3.0).abs() < 1e-8);
/// assert_eq!(x, [1.0, -2.0]);
/// ```
pub fn numeric_gradient(mut f: impl FnMut(&[f64]) -> f64, x: &mut [f64], eps: f64) -> Vec<f64> {
    (0..x.len())
        .map(|i| {
            let original = x[i];
            let slope = central_difference(
                |value| {
                    x[i] = value;
                    f(x)
                },
                original,
                eps,
            );
            x[i] = original;
            slope
        })
        .collect()
}

/// The comparison for one parameter.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamCheck {
    /// The parameter's `state_dict` name.
    pub name: &'static str,
    /// Its shape.
    pub shape: Vec<usize>,
    /// The analytic gradient, row-major.
    pub analytic: Vec<f64>,
    /// The finite-difference gradient, row-major.
    pub numeric: Vec<f64>,
    /// The largest `|analytic − numeric|`.
    pub max_abs_error: f64,
    /// The largest `|analytic − numeric| / max(|analytic|, |numeric|)` (0 where both are 0).
    pub max_rel_error: f64,
}

/// The result of [`gradient_check`]: one [`ParamCheck`] per parameter, in visiting order.
/// `Display` prints a summary table.
#[derive(Clone, Debug, PartialEq)]
pub struct GradCheckReport {
    /// The finite-difference step used.
    pub eps: f64,
    /// Per-parameter comparisons.
    pub params: Vec<ParamCheck>,
}

/// One element that failed a tolerance.
struct Failure<'a> {
    param: &'a ParamCheck,
    index: usize,
}

/// The larger of two errors, NaN if either is: `f64::max` would hide a NaN gradient.
fn nan_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

fn rel_error(analytic: f64, numeric: f64) -> f64 {
    let scale = analytic.abs().max(numeric.abs());
    if scale == 0.0 {
        0.0
    } else {
        (analytic - numeric).abs() / scale
    }
}

/// A flat row-major index as a multi-index (`[1, 3]`).
fn multi_index(mut flat: usize, shape: &[usize]) -> String {
    let mut parts = vec![0; shape.len()];
    for (part, &dim) in parts.iter_mut().zip(shape).rev() {
        if dim > 0 {
            *part = flat % dim;
            flat /= dim;
        }
    }
    format!("{parts:?}")
}

impl GradCheckReport {
    /// The largest absolute error over all parameters.
    pub fn max_abs_error(&self) -> f64 {
        self.params
            .iter()
            .map(|p| p.max_abs_error)
            .fold(0.0, nan_max)
    }

    /// The largest relative error over all parameters.
    pub fn max_rel_error(&self) -> f64 {
        self.params
            .iter()
            .map(|p| p.max_rel_error)
            .fold(0.0, nan_max)
    }

    fn failures(&self, rtol: f64, atol: f64) -> Vec<Failure<'_>> {
        let mut out = Vec::new();
        for param in &self.params {
            for (index, (&a, &n)) in param.analytic.iter().zip(&param.numeric).enumerate() {
                // Asked as "within?" rather than "beyond?" so that a NaN fails.
                let within = (a - n).abs() <= atol + rtol * n.abs();
                if !within {
                    out.push(Failure { param, index });
                }
            }
        }
        out
    }

    /// Whether every element satisfies `|analytic − numeric| ≤ atol + rtol · |numeric|`.
    pub fn is_within(&self, rtol: f64, atol: f64) -> bool {
        self.failures(rtol, atol).is_empty()
    }

    /// Panics, with a table of the failing elements and the per-parameter summary, unless
    /// every element satisfies `|analytic − numeric| ≤ atol + rtol · |numeric|` (NaN fails).
    #[track_caller]
    pub fn assert_within(&self, rtol: f64, atol: f64) {
        let failures = self.failures(rtol, atol);
        if failures.is_empty() {
            return;
        }
        const SHOWN: usize = 20;
        let total: usize = self.params.iter().map(|p| p.analytic.len()).sum();
        let mut text = format!(
            "gradient check failed: {} of {total} elements outside rtol {rtol:e}, atol {atol:e} \
             (eps {:e})\n",
            failures.len(),
            self.eps
        );
        text += &format!(
            "{:<24} {:>12} {:>14} {:>14} {:>10} {:>10}\n",
            "parameter", "index", "analytic", "numeric", "abs err", "rel err"
        );
        for f in failures.iter().take(SHOWN) {
            let (a, n) = (f.param.analytic[f.index], f.param.numeric[f.index]);
            text += &format!(
                "{:<24} {:>12} {:>14.6e} {:>14.6e} {:>10.2e} {:>10.2e}\n",
                f.param.name,
                multi_index(f.index, &f.param.shape),
                a,
                n,
                (a - n).abs(),
                rel_error(a, n)
            );
        }
        if failures.len() > SHOWN {
            text += &format!("... and {} more\n", failures.len() - SHOWN);
        }
        text += &self.to_string();
        panic!("{text}");
    }
}

impl fmt::Display for GradCheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<24} {:>14} {:>10} {:>10}",
            "parameter", "shape", "max abs", "max rel"
        )?;
        for p in &self.params {
            writeln!(
                f,
                "{:<24} {:>14} {:>10.2e} {:>10.2e}",
                p.name,
                format!("{:?}", p.shape),
                p.max_abs_error,
                p.max_rel_error
            )?;
        }
        Ok(())
    }
}

/// Sets element `element` (row-major) of the `target`-th visited parameter to `value` and
/// returns what was there.
fn replace_element<M: Model<f64>>(model: &mut M, target: usize, element: usize, value: f64) -> f64 {
    let mut seen = 0;
    let mut old = f64::NAN;
    model.visit_params_mut(&mut |_, mut view| {
        if seen == target {
            let slot = match view.as_slice_mut() {
                Some(slice) => &mut slice[element],
                // Not standard layout: walk in logical order, which is the gradients' order.
                None => view
                    .iter_mut()
                    .nth(element)
                    .expect("element index within the parameter"),
            };
            old = std::mem::replace(slot, value);
        }
        seen += 1;
    });
    old
}

/// Checks `analytic` (the gradients of `loss` at the model's current parameters) against
/// central differences with step `eps`, perturbing every parameter element by ±`eps` and
/// restoring it exactly afterwards. `loss` is evaluated twice per element.
///
/// `loss` must compute the same loss as the one `analytic` is the gradient of. For a model
/// whose ops differ between training and inference (batch norm, dropout), the gradients of
/// `loss_and_grad` are those of the training-mode loss, and `model.loss(..)` is the
/// inference-mode one: compare them and every parameter seems wrong. Take the training-mode
/// loss without touching the model under test (batch norm updates its running statistics):
/// `|m| m.clone().loss_and_grad(x, y, &mut ws, &mut scratch).expect("fits")`, with dropout seeded the
/// same way for every call (`ws.seed(s)` before each), or checked with dropout at `p = 0`.
///
/// # Panics
/// If `analytic` does not hold a gradient of the same shape for every parameter (a bug in
/// the model's `Model` implementation).
///
/// ```
/// use kiln_runtime::check::gradient_check;
/// # use kiln_runtime::{Model, Summary};
/// # use ndarray::{Array1, ArrayViewD, ArrayViewMutD};
/// # struct Quad { w: Array1<f64> }
/// # impl Model<f64> for Quad {
/// #     type Grads = Array1<f64>;
/// #     fn visit_params(&self, f: &mut dyn FnMut(&'static str, ArrayViewD<'_, f64>)) { f("w", self.w.view().into_dyn()) }
/// #     fn visit_params_mut(&mut self, f: &mut dyn FnMut(&'static str, ArrayViewMutD<'_, f64>)) { f("w", self.w.view_mut().into_dyn()) }
/// #     fn visit_grads(g: &Array1<f64>, f: &mut dyn FnMut(&'static str, ArrayViewD<'_, f64>)) { f("w", g.view().into_dyn()) }
/// #     fn visit_grads_mut(g: &mut Array1<f64>, f: &mut dyn FnMut(&'static str, ArrayViewMutD<'_, f64>)) { f("w", g.view_mut().into_dyn()) }
/// #     fn visit_params_with_grads(&mut self, g: &Array1<f64>, f: &mut dyn FnMut(usize, &mut [f64], &[f64])) {
/// #         f(0, self.w.as_slice_mut().unwrap(), g.as_slice().unwrap())
/// #     }
/// #     fn zero_grads(&self) -> Array1<f64> { Array1::zeros(self.w.len()) }
/// #     fn num_params(&self) -> usize { self.w.len() }
/// #     fn summary(&self) -> Summary { Summary { model: "Quad", dtype: "f64", ..Default::default() } }
/// #     fn graph(&self) -> &'static str { "" }
/// # }
/// // loss = Σ w², so the gradient is 2w.
/// let mut model = Quad { w: Array1::from(vec![0.5, -1.5]) };
/// let grads = &model.w * 2.0;
/// let report = gradient_check(&mut model, &grads, |m| m.w.mapv(|v| v * v).sum(), 1e-6);
/// report.assert_within(1e-7, 1e-9);
/// assert_eq!(model.w.to_vec(), vec![0.5, -1.5]);
/// ```
pub fn gradient_check<M: Model<f64>>(
    model: &mut M,
    analytic: &M::Grads,
    mut loss: impl FnMut(&M) -> f64,
    eps: f64,
) -> GradCheckReport {
    let mut grads: HashMap<&'static str, (Vec<usize>, Vec<f64>)> = HashMap::new();
    M::visit_grads(analytic, &mut |name, view| {
        grads.insert(
            name,
            (view.shape().to_vec(), view.iter().copied().collect()),
        );
    });
    let mut params: Vec<(&'static str, Vec<usize>)> = Vec::new();
    model.visit_params(&mut |name, view| params.push((name, view.shape().to_vec())));

    let mut checks = Vec::with_capacity(params.len());
    for (target, (name, shape)) in params.into_iter().enumerate() {
        let Some((grad_shape, analytic)) = grads.remove(name) else {
            panic!("gradient_check: no gradient for parameter `{name}`");
        };
        assert_eq!(
            grad_shape, shape,
            "gradient_check: gradient of `{name}` has shape {grad_shape:?}, parameter {shape:?}"
        );
        let mut numeric = Vec::with_capacity(analytic.len());
        for element in 0..analytic.len() {
            let original = replace_element(model, target, element, f64::NAN);
            let slope = central_difference(
                |value| {
                    replace_element(model, target, element, value);
                    loss(model)
                },
                original,
                eps,
            );
            replace_element(model, target, element, original);
            numeric.push(slope);
        }
        let mut max_abs_error = 0.0f64;
        let mut max_rel_error = 0.0f64;
        for (&a, &n) in analytic.iter().zip(&numeric) {
            max_abs_error = nan_max(max_abs_error, (a - n).abs());
            max_rel_error = nan_max(max_rel_error, rel_error(a, n));
        }
        checks.push(ParamCheck {
            name,
            shape,
            analytic,
            numeric,
            max_abs_error,
            max_rel_error,
        });
    }
    GradCheckReport {
        eps,
        params: checks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_gradient_of_known_functions() {
        let mut x = [0.3, -1.2, 2.0];
        let g = numeric_gradient(|x| x[0].sin() + x[1] * x[2] + x[2].exp(), &mut x, 1e-6);
        let want = [0.3f64.cos(), 2.0, -1.2 + 2.0f64.exp()];
        for (g, w) in g.iter().zip(&want) {
            assert!((g - w).abs() < 1e-8 * (1.0 + w.abs()), "{g} vs {w}");
        }
        assert_eq!(x, [0.3, -1.2, 2.0]);
    }

    #[test]
    fn multi_index_formats_row_major() {
        assert_eq!(multi_index(7, &[2, 4]), "[1, 3]");
        assert_eq!(multi_index(0, &[]), "[]");
        assert_eq!(multi_index(5, &[2, 3]), "[1, 2]");
    }

    #[test]
    fn relative_error_is_symmetric_and_zero_safe() {
        assert_eq!(rel_error(0.0, 0.0), 0.0);
        assert_eq!(rel_error(1.0, 0.5), 0.5);
        assert_eq!(rel_error(0.5, 1.0), 0.5);
    }
}
