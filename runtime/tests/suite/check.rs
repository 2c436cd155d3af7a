//! `check::gradient_check` on a real model: a correct backward pass passes tightly, a wrong
//! one fails with a table naming the parameter and element, and the parameters come back
//! bit for bit.

use crate::common;

use common::{Tiny, IN, OUT};
use kiln_runtime::check::gradient_check;
use std::panic::{catch_unwind, AssertUnwindSafe};

const BATCH: usize = 4;

fn batch() -> (Vec<f64>, Vec<f64>) {
    let x = (0..BATCH * IN).map(|i| ((i as f64) * 0.61).cos()).collect();
    let y = (0..BATCH * OUT).map(|i| ((i as f64) * 1.3).sin()).collect();
    (x, y)
}

#[test]
fn correct_gradients_pass_and_parameters_are_restored() {
    let (x, y) = batch();
    let mut model = Tiny::<f64>::sample();
    let before = model.clone();
    let grads = model.loss_grads(&x, &y, BATCH);
    let report = gradient_check(&mut model, &grads, |m| m.loss(&x, &y, BATCH), 1e-6);
    report.assert_within(1e-7, 1e-10);
    assert!(report.is_within(1e-7, 1e-10));
    assert_eq!(model, before, "parameters restored exactly");

    assert_eq!(report.params.len(), 2);
    assert_eq!(report.params[0].name, "fc.weight");
    assert_eq!(report.params[0].shape, [OUT, IN]);
    assert_eq!(report.params[1].name, "fc.bias");
    assert_eq!(report.params[1].analytic, grads.bias.to_vec());
    assert!(report.max_rel_error() < 1e-7, "{report}");
    // The numeric gradient is a real measurement, not a copy of the analytic one.
    assert!(report.max_abs_error() > 0.0);
    let text = report.to_string();
    assert!(
        text.contains("fc.weight") && text.contains("[2, 3]"),
        "{text}"
    );
}

#[test]
fn a_wrong_gradient_fails_with_a_readable_table() {
    let (x, y) = batch();
    let mut model = Tiny::<f64>::sample();
    let mut grads = model.loss_grads(&x, &y, BATCH);
    let true_value = grads.weight[[1, 2]];
    grads.weight[[1, 2]] *= 1.01;
    let report = gradient_check(&mut model, &grads, |m| m.loss(&x, &y, BATCH), 1e-6);
    assert!(!report.is_within(1e-7, 1e-10));
    // Only that element is off, by about 1 %.
    assert!(
        (report.params[0].max_rel_error - 0.01 / 1.01).abs() < 1e-6,
        "{report}"
    );
    assert!(report.params[1].max_rel_error < 1e-7, "{report}");
    assert!((report.params[0].numeric[5] - true_value).abs() < 1e-8);

    let panic = catch_unwind(AssertUnwindSafe(|| report.assert_within(1e-7, 1e-10))).unwrap_err();
    let message = panic.downcast_ref::<String>().expect("a formatted message");
    assert!(
        message.starts_with("gradient check failed: 1 of 8 elements"),
        "{message}"
    );
    let row = message
        .lines()
        .find(|l| l.starts_with("fc.weight"))
        .expect("a row for the failure");
    assert!(row.contains("[1, 2]"), "{row}");
}

#[test]
fn nan_gradients_fail() {
    let (x, y) = batch();
    let mut model = Tiny::<f64>::sample();
    let mut grads = model.loss_grads(&x, &y, BATCH);
    grads.bias[0] = f64::NAN;
    let report = gradient_check(&mut model, &grads, |m| m.loss(&x, &y, BATCH), 1e-6);
    assert!(!report.is_within(1.0, 1.0));
    assert!(report.params[1].max_abs_error.is_nan());
    assert!(report.max_rel_error().is_nan());
}
