//! The examples, run as tests: each example's training function must reach its stated result.

#[allow(dead_code)]
#[path = "../examples/linear_regression.rs"]
mod linear_regression;

#[test]
fn linear_regression_recovers_the_generating_parameters() {
    use linear_regression::{train, TRUE_BIAS, TRUE_WEIGHT};
    let (weight, bias) = train(false).expect("training runs");
    assert!((weight - TRUE_WEIGHT).abs() < 0.05, "weight {weight}");
    assert!((bias - TRUE_BIAS).abs() < 0.05, "bias {bias}");
}
