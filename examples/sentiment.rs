//! Sentiment of tweets: a bidirectional LSTM over word ids reads a tweet and says whether it
//! is negative, neutral or positive.
//!
//! ```text
//! cargo run --release --example sentiment                          # train, test, save
//! cargo run --release --example sentiment -- "I love it" "this is awful"
//! cargo run --release --example sentiment -- --no-train "meh"      # reuse the saved model
//! cargo run --release --example sentiment -- --csv reviews.csv --label-column stars --text-column review
//! ```
//!
//! Options: `--epochs N`, `--out DIR` (default `target/kiln-sentiment`), `--no-train`,
//! `--csv PATH` with `--label-column C` and `--text-column C` (a header name or a column
//! number counting from 0), `--quiet`; every other argument is a sentence to classify.
//!
//! It splits the labelled texts 80/10/10 (seeded), builds a word vocabulary from the training
//! part, prints the model summary, the loss, validation accuracy and macro-F1 of every epoch,
//! then the test accuracy, macro-F1 and confusion matrix. The weights (`sentiment.safetensors`), the
//! vocabulary (`vocab.json`) and the class names (`classes.txt`) go to the output directory;
//! the sentences on the command line are classified by the model loaded back from there.

use kiln::ndarray::{Array1, Array2, Axis};
use kiln::optim::CosineAnnealing;
use kiln::rand::rngs::StdRng;
use kiln::rand::SeedableRng;
use kiln::text::{
    pad_batch, ClassOrder, Column, LabelKind, LabelledText, TextCsvOptions, Tokenizer, Vocab,
};
use kiln::train::{self, Metric, Trainer};
use kiln::Adam;
use std::error::Error;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[allow(clippy::duplicate_mod)] // the examples test loads every example, each with it
#[path = "common/cli.rs"]
mod cli;

/// The embedding table's rows: the vocabulary is cut to this many ids (`<pad>` and `<unk>`
/// included).
pub const VOCAB_SIZE: usize = 12000;
/// The number of classes the model scores; a CSV may have fewer.
pub const CLASSES: usize = 3;
/// Texts are cut to their first this many tokens.
pub const MAX_LEN: usize = 64;

kiln::model! {
    /// Word embeddings, a bidirectional LSTM over each text's real length, and a linear
    /// layer scoring the classes from its outputs pooled over time: their mean over the
    /// text's real positions and their maximum.
    pub struct SentimentNet {
        input tokens: [B, T] tokens 12000;
        input len: [B] lengths T;
        target label: [B] classes 3;
        let emb = embedding(tokens, 96, padding_idx = 0);
        let emb_drop = dropout(emb, 0.3);
        let seq = lstm(emb_drop, 96, bidirectional = true, lengths = len);
        let pooled = concat(mean(seq, axis = 1, lengths = len), max(seq, axis = 1), axis = 1);
        let pooled_drop = dropout(pooled, 0.3);
        let logits = linear(pooled_drop, 3);
        output logits;
        loss cross_entropy(logits, label, label_smoothing = 0.1);
    }
}

/// The bundled tweets: `sentiment,confidence,text`.
pub const TWEETS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/data/tweets_sentiment.csv.gz"
);

/// What to train on and how long.
#[derive(Clone, Debug)]
pub struct Config {
    /// The CSV file of labelled texts (gzip or not).
    pub csv: PathBuf,
    /// The label column.
    pub label_column: Column,
    /// The text column.
    pub text_column: Column,
    /// Training epochs.
    pub epochs: usize,
    /// Train on at most this many of the training texts, picked at random (all by default).
    pub train_limit: Option<usize>,
    /// Where the weights, vocabulary and class names are written.
    pub out: PathBuf,
    /// Print the summary and per-epoch progress.
    pub verbose: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            csv: PathBuf::from(TWEETS),
            label_column: Column::Name("sentiment".into()),
            text_column: Column::Name("text".into()),
            epochs: 6,
            train_limit: None,
            out: PathBuf::from("target/kiln-sentiment"),
            verbose: true,
        }
    }
}

/// What a training run produced.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Accuracy on the held-out test texts.
    pub test_accuracy: f64,
    /// The mean of the per-class F1 scores on the test texts.
    pub macro_f1: f64,
    /// `confusion[true][predicted]` counts on the test texts.
    pub confusion: Vec<Vec<usize>>,
    /// The class names, by id.
    pub classes: Vec<String>,
    /// The training time in seconds (evaluation of the validation texts included).
    pub train_seconds: f64,
    /// The saved weights.
    pub weights: PathBuf,
    /// The saved vocabulary.
    pub vocab: PathBuf,
}

/// The files of a saved classifier in `dir`: weights, vocabulary, class names.
fn files(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (
        dir.join("sentiment.safetensors"),
        dir.join("vocab.json"),
        dir.join("classes.txt"),
    )
}

/// Reads the labelled texts of `config.csv`.
pub fn read(config: &Config) -> Result<LabelledText, Box<dyn Error>> {
    let options = TextCsvOptions {
        label: config.label_column.clone(),
        text: config.text_column.clone(),
        labels: LabelKind::Names(ClassOrder::Sorted),
        ..TextCsvOptions::default()
    };
    let data = LabelledText::read_csv(&config.csv, &options)?;
    if data.classes().len() > CLASSES {
        return Err(too_many_classes(config, &data).into());
    }
    Ok(data)
}

/// Why a file with more classes than the model scores cannot train it: the classes with
/// their counts (a label seen once is most likely a typo in the file, a class per row the
/// wrong column), and what to change for a model with more classes.
fn too_many_classes(config: &Config, data: &LabelledText) -> String {
    let classes = data.classes();
    let mut counts = vec![0usize; classes.len()];
    for &label in data.labels() {
        counts[label] += 1;
    }
    const SHOWN: usize = 8;
    let mut listed: Vec<String> = classes
        .iter()
        .zip(&counts)
        .take(SHOWN)
        .map(|(name, count)| format!("{name:?} ×{count}"))
        .collect();
    if classes.len() > SHOWN {
        listed.push(format!("and {} more", classes.len() - SHOWN));
    }
    let rare = counts.iter().filter(|&&c| c <= 2).count();
    let hint = if rare * 2 > classes.len() {
        " Most classes label one or two rows: is the label column (--label-column) right?"
    } else if rare > 0 {
        " A class of one or two rows is often a mistyped label in the file."
    } else {
        ""
    };
    format!(
        "{}: {} classes in the label column ({}), but the model scores {CLASSES}.{hint} For \
         more classes, change CLASSES and the model's `classes` and `linear` sizes in \
         examples/sentiment.rs.",
        config.csv.display(),
        classes.len(),
        listed.join(", ")
    )
}

/// Trains on 80% of the texts, validates on 10% each epoch, tests on the last 10%, and saves
/// the weights, vocabulary and class names under `config.out`.
pub fn train(config: &Config) -> Result<Outcome, Box<dyn Error>> {
    let data = read(config)?;
    let split = data.split(0.8, 0.1, 42);
    let train_part = match config.train_limit {
        // A seeded random subset: the file holds its sources one after the other.
        Some(n) if n < split.train.len() => {
            split
                .train
                .split(n as f64 / split.train.len() as f64, 0.0, 3)
                .train
        }
        _ => split.train,
    };
    let vocab = Vocab::builder(Tokenizer::Words)
        .lowercase(true)
        .min_freq(2)
        .max_size(VOCAB_SIZE)
        .build(train_part.texts());
    let train_set = train_part.encode(&vocab);
    let validation = split.validation.encode(&vocab);
    let test = split.test.encode(&vocab);

    let mut model = SentimentNet::<f32>::new(&mut StdRng::seed_from_u64(0));
    if config.verbose {
        println!(
            "{} training, {} validation, {} test texts; classes {}; vocabulary {} words",
            train_set.len(),
            validation.len(),
            test.len(),
            data.classes().join(", "),
            vocab.len()
        );
    }

    // Keras' `fit`: shuffled batches padded to their longest tweet (cut at MAX_LEN), cosine
    // decay, clipping, and the validation loss, accuracy and macro-F1 after every epoch.
    let base_lr = 2e-3;
    let mut optimizer = Adam::new(base_lr);
    let start = Instant::now();
    Trainer::new(config.epochs, 64)
        .shuffle_seed(1)
        .schedule(CosineAnnealing::new(config.epochs, base_lr / 20.0))
        .clip_grad_norm(5.0)
        .validation_batches(&validation.batches().max_len(MAX_LEN))
        .eval_batch_size(256)
        .metrics([Metric::MacroF1])
        .progress(config.verbose)
        .fit_batches(
            &mut model,
            &mut optimizer,
            &train_set.batches().max_len(MAX_LEN),
        )?;
    let train_seconds = start.elapsed().as_secs_f64();

    let scores = evaluate(&model, &test)?;
    std::fs::create_dir_all(&config.out)?;
    let (weights, vocab_path, classes_path) = files(&config.out);
    kiln::io::save(&model, &weights)?;
    vocab.save(&vocab_path)?;
    std::fs::write(&classes_path, data.classes().join("\n") + "\n")?;
    let classes = data.classes().to_vec();
    Ok(Outcome {
        test_accuracy: scores.accuracy,
        macro_f1: scores.macro_f1(classes.len()),
        confusion: scores.confusion,
        classes,
        train_seconds,
        weights,
        vocab: vocab_path,
    })
}

/// Accuracy and confusion counts of a model on encoded texts.
pub struct Scores {
    /// The fraction of texts whose top-scoring class is their label.
    pub accuracy: f64,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<usize>>,
}

impl Scores {
    /// The mean over the first `classes` classes of each class's F1 score (0 for a class
    /// never seen nor predicted).
    pub fn macro_f1(&self, classes: usize) -> f64 {
        let m = &self.confusion;
        let f1 = |c: usize| {
            let tp = m[c][c] as f64;
            let predicted: usize = m.iter().map(|row| row[c]).sum();
            let actual: usize = m[c].iter().sum();
            let denominator = predicted as f64 + actual as f64;
            if denominator == 0.0 {
                0.0
            } else {
                2.0 * tp / denominator
            }
        };
        (0..classes).map(f1).sum::<f64>() / classes.max(1) as f64
    }
}

/// Scores `model` on `data` in batches of 256, in inference mode (no dropout).
pub fn evaluate(
    model: &SentimentNet<f32>,
    data: &kiln::text::EncodedText,
) -> Result<Scores, Box<dyn Error>> {
    let logits = train::predict_batches(model, &data.batches().max_len(MAX_LEN), 256)?;
    let predicted = train::classes(logits.view())?;
    let confusion = train::confusion_matrix(data.labels(), &predicted, CLASSES)?;
    let correct: usize = (0..CLASSES).map(|c| confusion[[c, c]]).sum();
    Ok(Scores {
        accuracy: correct as f64 / data.len().max(1) as f64,
        confusion: confusion.outer_iter().map(|row| row.to_vec()).collect(),
    })
}

/// A classifier loaded back from the files [`train`] saved.
pub struct Classifier {
    model: SentimentNet<f32>,
    vocab: Vocab,
    classes: Vec<String>,
}

impl Classifier {
    /// Loads the weights, vocabulary and class names saved in `dir`.
    pub fn load(dir: &Path) -> Result<Classifier, Box<dyn Error>> {
        let (weights, vocab_path, classes_path) = files(dir);
        let mut model = SentimentNet::<f32>::zeros();
        kiln::io::load(&mut model, &weights)?;
        let vocab = Vocab::load(&vocab_path)?;
        if vocab.len() > VOCAB_SIZE {
            return Err(format!(
                "{}: {} tokens, more than the model's {VOCAB_SIZE}",
                vocab_path.display(),
                vocab.len()
            )
            .into());
        }
        let classes: Vec<String> = std::fs::read_to_string(&classes_path)
            .map_err(|e| format!("{}: {e}", classes_path.display()))?
            .lines()
            .map(str::to_string)
            .collect();
        if classes.is_empty() || classes.len() > CLASSES {
            return Err(format!(
                "{}: expected 1 to {CLASSES} class names, found {}",
                classes_path.display(),
                classes.len()
            )
            .into());
        }
        Ok(Classifier {
            model,
            vocab,
            classes,
        })
    }

    /// The class names, by id.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// Each sentence's class probabilities (one per class name).
    pub fn probabilities(&self, sentences: &[&str]) -> Result<Vec<Vec<f32>>, Box<dyn Error>> {
        if sentences.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Vec<usize>> = sentences.iter().map(|s| self.vocab.encode(s)).collect();
        let (tokens, lengths): (Array2<usize>, Array1<usize>) = pad_batch(&ids, Some(MAX_LEN));
        let logits = self.model.forward(tokens.view(), lengths.view())?;
        let n = self.classes.len();
        Ok(logits
            .axis_iter(Axis(0))
            .map(|row| {
                let row = &row.as_slice().unwrap_or(&[])[..n.min(row.len())];
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let exps: Vec<f32> = row.iter().map(|&v| (v - max).exp()).collect();
                let sum: f32 = exps.iter().sum();
                exps.iter().map(|e| e / sum).collect()
            })
            .collect())
    }
}

struct Args {
    config: Config,
    no_train: bool,
    sentences: Vec<String>,
}

fn column(text: String) -> Column {
    match text.parse::<usize>() {
        Ok(index) => Column::Index(index),
        Err(_) => Column::Name(text),
    }
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        config: Config::default(),
        no_train: false,
        sentences: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |what: &str| it.next().ok_or(format!("{arg} needs {what}"));
        match arg.as_str() {
            "--csv" => args.config.csv = value("a file")?.into(),
            "--label-column" => args.config.label_column = column(value("a column")?),
            "--text-column" => args.config.text_column = column(value("a column")?),
            "--out" => args.config.out = value("a directory")?.into(),
            "--epochs" => {
                let n = value("a number")?;
                args.config.epochs = n
                    .parse()
                    .map_err(|_| format!("--epochs: `{n}` is not a number"))?;
            }
            "--no-train" => args.no_train = true,
            "--quiet" => args.config.verbose = false,
            other if other.starts_with("--") => {
                return Err(format!(
                    "unknown option `{other}` (try --csv PATH, --label-column C, \
                     --text-column C, --epochs N, --out DIR, --no-train, --quiet)"
                ))
            }
            _ => args.sentences.push(arg),
        }
    }
    Ok(args)
}

const USAGE: &str = "\
usage: cargo run --release --example sentiment -- [OPTIONS] [SENTENCE ...]

Trains a bidirectional LSTM on labelled texts (the bundled tweets, or --csv), prints its test
accuracy, macro-F1 and confusion matrix, saves it, and classifies the SENTENCEs.

  --csv PATH            a CSV of (label, text) rows instead of the bundled tweets
  --label-column C      the label column: a header name or a number from 0 (default: sentiment)
  --text-column C       the text column: a header name or a number from 0 (default: text)
  --epochs N            training epochs (default: 6)
  --out DIR             where the model is saved and loaded (default: target/kiln-sentiment)
  --no-train            classify with the model saved in DIR (an error if there is none)
  --quiet               no per-epoch output
  -h, --help            this text
";

fn main() -> std::process::ExitCode {
    cli::main(USAGE, run)
}

fn run() -> Result<(), Box<dyn Error>> {
    let args = parse_args()?;
    let (weights, vocab, classes) = files(&args.config.out);
    if args.no_train {
        cli::require_saved("--no-train", &[&weights, &vocab, &classes])?;
        println!("using the model saved in {}", args.config.out.display());
    } else {
        let outcome = train(&args.config)?;
        println!(
            "\ntraining time:  {:.1} s\ntest accuracy:  {:.4}\nmacro-F1:       {:.4}",
            outcome.train_seconds, outcome.test_accuracy, outcome.macro_f1
        );
        print_confusion(&outcome.classes, &outcome.confusion);
        println!("weights:        {}", outcome.weights.display());
        println!("vocabulary:     {}", outcome.vocab.display());
    }

    if !args.sentences.is_empty() {
        let classifier = Classifier::load(&args.config.out)?;
        let sentences: Vec<&str> = args.sentences.iter().map(String::as_str).collect();
        let probabilities = classifier.probabilities(&sentences)?;
        println!();
        for (sentence, p) in sentences.iter().zip(&probabilities) {
            let best = p
                .iter()
                .enumerate()
                .fold(0, |best, (i, &v)| if v > p[best] { i } else { best });
            let detail: Vec<String> = classifier
                .classes()
                .iter()
                .zip(p)
                .map(|(name, v)| format!("{name} {v:.2}"))
                .collect();
            println!(
                "{:<9} ({})  {sentence}",
                classifier.classes()[best],
                detail.join(", ")
            );
        }
    }
    Ok(())
}

/// Prints `confusion[true][predicted]` with the class names.
fn print_confusion(classes: &[String], confusion: &[Vec<usize>]) {
    let width = classes.iter().map(String::len).max().unwrap_or(0).max(8);
    println!("confusion matrix (rows: true class, columns: predicted):");
    print!("{:width$}", "");
    for name in classes {
        print!("  {name:>width$}");
    }
    println!();
    for (name, row) in classes.iter().zip(confusion) {
        print!("{name:width$}");
        for count in &row[..classes.len()] {
            print!("  {count:>width$}");
        }
        println!();
    }
}
