//! Iris with a plain, hand-written training loop: no helper, every step in view.
//!
//! Run with `cargo run --release --example iris`.

use kiln::data::{self, DataLoader, Standardizer};
use kiln::ndarray::Ix2;
use kiln::rand::rngs::StdRng;
use kiln::rand::SeedableRng;
use kiln::{Adam, Model, Optimizer};
use std::error::Error;

#[allow(clippy::duplicate_mod)] // the examples test loads every example, each with it
#[path = "common/cli.rs"]
mod cli;

kiln::model! {
    /// A small MLP over the four measurements of an iris flower.
    pub struct IrisNet {
        input x: [B, 4];
        target species: [B] classes 3;
        let hidden = relu(linear(x, 16));
        let logits = linear(hidden, 3);
        output logits;
        loss cross_entropy(logits, species);
    }
}

const USAGE: &str = "\
usage: cargo run --release --example iris

Trains a small MLP on the iris flowers with a hand-written loop and prints its test accuracy.

  -h, --help            this text
";

fn main() -> std::process::ExitCode {
    cli::main(USAGE, run)
}

fn run() -> Result<(), Box<dyn Error>> {
    let accuracy = train(true)?;
    println!("\ntest accuracy {accuracy:.3}");
    Ok(())
}

/// Trains on 80% of the flowers and returns the accuracy on the other 20%.
pub fn train(verbose: bool) -> Result<f64, Box<dyn Error>> {
    let flowers = data::iris::<f32>()?;
    let (mut train, mut test) = data::stratified_split(&flowers, 0.2, 7);
    // Standardize with the training set's statistics only.
    let scaler = Standardizer::fit(&train);
    scaler.transform(&mut train)?;
    scaler.transform(&mut test)?;

    let mut model = IrisNet::<f32>::new(&mut StdRng::seed_from_u64(0));
    if verbose {
        println!("{}\n", model.summary());
    }
    let mut optimizer = Adam::new(0.01);
    let mut workspace = model.workspace();
    let mut grads = model.zero_grads();
    let loader = DataLoader::new(&train, 16).shuffle(1);
    for epoch in 0..60 {
        let (mut loss_sum, mut seen) = (0.0, 0);
        for batch in loader.epoch(epoch) {
            let x = batch.x.view().into_dimensionality::<Ix2>()?;
            let species = batch.labels.as_ref().ok_or("iris has class labels")?;
            let loss = model.loss_and_grad(x, species.view(), &mut workspace, &mut grads)?;
            optimizer.step(&mut model, &grads);
            loss_sum += f64::from(loss) * batch.len() as f64;
            seen += batch.len();
        }
        if verbose && epoch % 10 == 9 {
            println!("epoch {:>3}  loss {:.4}", epoch + 1, loss_sum / seen as f64);
        }
    }

    let x = test.features().view().into_dimensionality::<Ix2>()?;
    let logits = model.forward(x)?;
    let labels = test.labels().ok_or("iris has class labels")?;
    Ok(kiln::train::accuracy(
        logits.view().into_dyn(),
        labels.view(),
    )?)
}
