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

#[allow(dead_code)]
#[path = "../examples/iris.rs"]
mod iris;

#[test]
fn iris_reaches_90_percent_on_held_out_flowers() {
    let accuracy = iris::train(false).expect("training runs");
    assert!(accuracy >= 0.9, "test accuracy {accuracy}");
}

#[allow(dead_code)]
#[path = "../examples/digits.rs"]
mod digits;

#[test]
fn digits_cnn_reaches_97_percent_on_held_out_digits() {
    let out = std::env::temp_dir().join(format!("kiln-digits-test-{}", std::process::id()));
    let outcome = digits::train_digits(25, &out, false).expect("training runs");
    assert!(
        outcome.test_accuracy >= 0.97,
        "test accuracy {}",
        outcome.test_accuracy
    );
    assert!(outcome.weights.exists() && outcome.plot.exists());
    assert!(outcome.checkpoints.is_dir());
    std::fs::remove_dir_all(&out).ok();
}
