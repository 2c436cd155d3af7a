//! The main job: a small CNN learns to read handwritten digits.
//!
//! ```text
//! cargo run --release --example digits                 # the bundled 8x8 digits
//! cargo run --release --example digits -- --mnist DIR  # LeNet-5 on MNIST's IDX files in DIR
//! ```
//!
//! Options: `--epochs N`, `--out DIR` (default `target/kiln-digits`, or `target/kiln-digits-mnist`
//! with `--mnist`), `--quiet`, `--resume`
//! (continue from the checkpoint in `DIR/checkpoints` when there is one).
//! It prints the model summary, a progress bar per epoch, the test accuracy on held-out
//! samples, and where it wrote the checkpoints, the trained weights (safetensors, and ONNX as
//! `<model>.onnx` for other runtimes) and the training curves.
//!
//! Built with `--features mpi` it trains data-parallel on the ranks of an MPI job (see
//! `DISTRIBUTED.md`); the batch size stays the global batch, so the result matches one process:
//!
//! ```text
//! cargo build --release --example digits --features mpi
//! mpirun -np 2 target/release/examples/digits
//! ```

use kiln::data::{self, Dataset, TensorDataset};
use kiln::distributed::Communicator;
use kiln::optim::CosineAnnealing;
use kiln::rand::rngs::StdRng;
use kiln::rand::SeedableRng;
use kiln::train::{self, Checkpoint, Trainer};
use kiln::{Adam, Supervised};
use std::error::Error;
use std::path::{Path, PathBuf};

#[allow(clippy::duplicate_mod)] // the examples test loads every example, each with it
#[path = "common/cli.rs"]
mod cli;

#[path = "models/digits.rs"]
mod models;
pub use models::{DigitsCnn, LeNet5};

/// What a run produced.
pub struct Outcome {
    /// Accuracy on the held-out test samples.
    pub test_accuracy: f64,
    /// The trained weights (safetensors, PyTorch names).
    pub weights: PathBuf,
    /// The per-epoch checkpoints.
    pub checkpoints: PathBuf,
    /// The loss and accuracy curves (PNG).
    pub plot: PathBuf,
    /// The compiled graph (Graphviz DOT; `dot -Tsvg graph.dot -o graph.svg` draws it).
    pub graph: PathBuf,
    /// The trained model as ONNX (opset 17), for other runtimes.
    pub onnx: PathBuf,
}

struct Args {
    mnist: Option<PathBuf>,
    epochs: Option<usize>,
    /// `--out`; by default `target/kiln-digits`, or `target/kiln-digits-mnist` with `--mnist`,
    /// so that the two models' checkpoints never meet.
    out: Option<PathBuf>,
    quiet: bool,
    resume: bool,
}

/// How to train, beyond the epochs: output, resumption, and the ranks to train across.
#[derive(Clone, Copy)]
pub struct RunOptions<'a> {
    /// Print the summary and progress.
    pub progress: bool,
    /// Continue from the checkpoint in `out/checkpoints` if there is one.
    pub resume: bool,
    /// Train data-parallel across these ranks (only rank 0 prints and writes files).
    pub comm: Option<&'a dyn Communicator>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        mnist: None,
        epochs: None,
        out: None,
        quiet: false,
        resume: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--mnist" => args.mnist = Some(it.next().ok_or("--mnist needs a directory")?.into()),
            "--out" => args.out = Some(it.next().ok_or("--out needs a directory")?.into()),
            "--epochs" => {
                let n = it.next().ok_or("--epochs needs a number")?;
                args.epochs = Some(
                    n.parse()
                        .map_err(|_| format!("--epochs: `{n}` is not a number"))?,
                );
            }
            "--quiet" => args.quiet = true,
            "--resume" => args.resume = true,
            other => {
                return Err(format!(
                    "unknown argument `{other}` (try --mnist DIR, --epochs N, --out DIR, \
                     --quiet, --resume)"
                ))
            }
        }
    }
    Ok(args)
}

const USAGE: &str = "\
usage: cargo run --release --example digits -- [OPTIONS]

Trains a small CNN on handwritten digits (the bundled 8x8 digits, or LeNet-5 on MNIST's IDX
files with --mnist), prints the test accuracy, and saves checkpoints, weights (safetensors and
ONNX) and training curves.

  --mnist DIR           train LeNet-5 on the MNIST IDX files in DIR
  --epochs N            training epochs (default: 25, or 10 with --mnist)
  --out DIR             where everything is written (default: target/kiln-digits, or
                        target/kiln-digits-mnist with --mnist)
  --resume              continue from the checkpoint in DIR/checkpoints when there is one
  --quiet               no progress bars
  -h, --help            this text
";

fn main() -> std::process::ExitCode {
    cli::main(USAGE, run)
}

fn run() -> Result<(), Box<dyn Error>> {
    let args = parse_args()?;
    // With `--features mpi`, the ranks of the MPI job (one rank when started without mpirun).
    #[cfg(feature = "mpi")]
    let world = kiln::distributed::World::init()?;
    #[cfg(feature = "mpi")]
    let comm: Option<&dyn Communicator> = Some(&world);
    #[cfg(not(feature = "mpi"))]
    let comm: Option<&dyn Communicator> = None;
    let options = RunOptions {
        progress: !args.quiet,
        resume: args.resume,
        comm,
    };
    let outcome = match &args.mnist {
        None => {
            let out = args.out.unwrap_or_else(|| "target/kiln-digits".into());
            train_digits_with(args.epochs.unwrap_or(25), &out, options)?
        }
        Some(dir) => {
            let out = args
                .out
                .unwrap_or_else(|| "target/kiln-digits-mnist".into());
            train_mnist_with(dir, args.epochs.unwrap_or(10), &out, options)?
        }
    };
    if comm.is_some_and(|c| !c.is_root()) {
        return Ok(());
    }
    println!("\ntest accuracy: {:.4}", outcome.test_accuracy);
    println!("weights:       {}", outcome.weights.display());
    println!("checkpoints:   {}", outcome.checkpoints.display());
    println!("curves:        {}", outcome.plot.display());
    println!("graph:         {}", outcome.graph.display());
    println!("onnx:          {}", outcome.onnx.display());
    Ok(())
}

/// Trains the small CNN on the bundled digits: 20% of the samples are held out for the test,
/// and a tenth of the rest validates each epoch.
pub fn train_digits(epochs: usize, out: &Path, progress: bool) -> Result<Outcome, Box<dyn Error>> {
    let options = RunOptions {
        progress,
        resume: false,
        comm: None,
    };
    train_digits_with(epochs, out, options)
}

/// [`train_digits`] with every option.
pub fn train_digits_with(
    epochs: usize,
    out: &Path,
    options: RunOptions<'_>,
) -> Result<Outcome, Box<dyn Error>> {
    let digits = data::digits::<f32>()?;
    let (rest, test) = data::stratified_split(&digits, 0.2, 0);
    let (train_set, validation) = data::stratified_split(&rest, 0.1, 1);
    let mut model = DigitsCnn::<f32>::new(&mut StdRng::seed_from_u64(0));
    fit(
        &mut model,
        &train_set,
        &validation,
        &test,
        epochs,
        32,
        3e-3,
        out,
        options,
        "digits_cnn",
    )
}

/// Trains LeNet-5 on MNIST's IDX files in `dir` (gzip or not), testing on its test set.
pub fn train_mnist(
    dir: &Path,
    epochs: usize,
    out: &Path,
    progress: bool,
) -> Result<Outcome, Box<dyn Error>> {
    let options = RunOptions {
        progress,
        resume: false,
        comm: None,
    };
    train_mnist_with(dir, epochs, out, options)
}

/// [`train_mnist`] with every option.
pub fn train_mnist_with(
    dir: &Path,
    epochs: usize,
    out: &Path,
    options: RunOptions<'_>,
) -> Result<Outcome, Box<dyn Error>> {
    let (full_train, test) = data::mnist::<f32>(dir)?;
    let (train_set, validation) = data::train_test_split(&full_train, 1.0 / 12.0, 1);
    let mut model = LeNet5::<f32>::new(&mut StdRng::seed_from_u64(0));
    fit(
        &mut model,
        &train_set,
        &validation,
        &test,
        epochs,
        64,
        3e-3,
        out,
        options,
        "lenet5",
    )
}

#[allow(clippy::too_many_arguments)]
fn fit<M: Supervised<f32>>(
    model: &mut M,
    train_set: &TensorDataset<f32>,
    validation: &TensorDataset<f32>,
    test: &TensorDataset<f32>,
    epochs: usize,
    batch_size: usize,
    learning_rate: f64,
    out: &Path,
    options: RunOptions<'_>,
    name: &str,
) -> Result<Outcome, Box<dyn Error>> {
    let root = options.comm.is_none_or(|c| c.is_root());
    let progress = options.progress && root;
    std::fs::create_dir_all(out)?;
    let checkpoints = out.join("checkpoints");
    let plot = out.join("curves.png");
    let mut optimizer = Adam::new(learning_rate);
    if progress {
        println!(
            "{} training, {} validation, {} test samples",
            train_set.len(),
            validation.len(),
            test.len()
        );
    }
    let mut trainer = Trainer::new(epochs, batch_size)
        .shuffle_seed(42)
        .validation(validation)
        .schedule(CosineAnnealing::new(epochs, learning_rate / 100.0))
        .early_stopping(6, 1e-4)
        .checkpoints(&checkpoints)
        .plot(&plot)
        .progress(progress);
    if options.resume && Checkpoint::<f32>::exists(&checkpoints) {
        trainer = trainer.resume_from(&checkpoints);
    }
    if let Some(comm) = options.comm {
        trainer = trainer.distributed(comm);
    }
    trainer.fit(model, &mut optimizer, train_set)?;
    let test_accuracy = train::evaluate(model, test, 256)?
        .accuracy
        .ok_or("digits have labels")?;
    let weights = out.join(format!("{name}.safetensors"));
    let graph = out.join("graph.dot");
    let onnx = out.join(format!("{name}.onnx"));
    if root {
        kiln::io::save(model, &weights)?;
        std::fs::write(&graph, model.graph_dot())?;
        kiln::onnx::export(model, &onnx)?;
    }
    Ok(Outcome {
        test_accuracy,
        weights,
        checkpoints,
        plot,
        graph,
        onnx,
    })
}
