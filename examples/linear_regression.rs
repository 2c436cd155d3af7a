//! The seed program: fit `y = w·x + b` to noisy synthetic data with MSE and plain SGD.
//!
//! Run with `cargo run --release --example linear_regression`.

use kiln::ndarray::Array2;
use kiln::rand::rngs::StdRng;
use kiln::rand::{RngExt, SeedableRng};
use kiln::{Model, Optimizer, Sgd};
use std::error::Error;

#[allow(clippy::duplicate_mod)] // the examples test loads every example, each with it
#[path = "common/cli.rs"]
mod cli;

kiln::model! {
    /// One linear layer: `pred = x · weightᵀ + bias`.
    pub struct LinearRegression {
        input x: [N, 1];
        target y: [N, 1];
        let pred = linear(x, 1);
        output pred;
        loss mse(pred, y);
    }
}

pub const TRUE_WEIGHT: f32 = 3.0;
pub const TRUE_BIAS: f32 = 2.0;

const USAGE: &str = "\
usage: cargo run --release --example linear_regression

Fits y = w·x + b to 1000 noisy samples of y = 3x + 2 with MSE and plain SGD, printing the loss
every 100 epochs and the learned weight and bias. It takes no options.

  -h, --help            this text
";

fn main() -> std::process::ExitCode {
    cli::main(USAGE, run)
}

fn run() -> Result<(), Box<dyn Error>> {
    let (weight, bias) = train(true)?;
    println!(
        "\nlearned weight {weight:.4}, bias {bias:.4} (the data was generated with weight {TRUE_WEIGHT}, bias {TRUE_BIAS})"
    );
    Ok(())
}

/// Trains on the synthetic data and returns the learned (weight, bias).
pub fn train(verbose: bool) -> Result<(f32, f32), kiln::Error> {
    let mut rng = StdRng::seed_from_u64(42);
    // 1000 samples of y = 3x + 2 with uniform noise in [-0.1, 0.1].
    let x = Array2::from_shape_simple_fn((1000, 1), || rng.random_range(-2.0f32..2.0));
    let y = x.mapv(|v| TRUE_WEIGHT * v + TRUE_BIAS + rng.random_range(-0.1..0.1));

    let mut model = LinearRegression::<f32>::new(&mut rng);
    if verbose {
        println!("{}\n", model.summary());
    }
    let mut optimizer = Sgd::new(0.01);
    let mut workspace = model.workspace();
    let mut grads = model.zero_grads();
    for epoch in 1..=1000 {
        let loss = model.loss_and_grad(x.view(), y.view(), &mut workspace, &mut grads)?;
        optimizer.step(&mut model, &grads);
        if verbose && epoch % 100 == 0 {
            println!("epoch {epoch:>4}  loss {loss:.6}");
        }
    }
    let weight = model.pred.weight[[0, 0]];
    let bias = model.pred.bias.as_ref().map_or(0.0, |b| b[0]);
    Ok((weight, bias))
}
