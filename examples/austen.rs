//! A character-level GPT learns to write like Jane Austen.
//!
//! ```text
//! cargo run --release --example austen                      # train (2,000 steps), then sample
//! cargo run --release --example austen -- --sample-only     # sample from the saved model
//! cargo run --release --example austen -- --sample-only --prompt "Mr. Darcy" --temperature 0.8 --top-k 20
//! ```
//!
//! The text is Austen's six novels (`examples/data/austen.tsv.gz`), one line of a book per row,
//! joined with `\n` in file order; the first 90% of the characters train and the last 10%
//! validate. The model is a small GPT: character and position embeddings (128 wide, 64
//! positions), four pre-norm blocks of 4-head causal self-attention and a 512-wide GELU MLP, a
//! final layer norm and a head without bias. It trains on batches of 12 random 64-character
//! windows with AdamW (learning rate 1e-3 after 100 linear warm-up steps, cosine decay to 1e-4
//! at the last step, betas (0.9, 0.99), weight decay 0.1 on matrices and embedding tables
//! only) and gradient-norm clipping at 1.0.
//!
//! Options: `--iterations N`, `--prompt TEXT`, `--temperature T` (default 1.0), `--top-k K`
//! (default: every character), `--top-p P` (nucleus sampling, default 1), `--chars N` (how
//! many to sample, default 500), `--seed S`, `--out DIR` (default `target/kiln-austen`),
//! `--sample-only`. Sampling is `kiln::sampling::Sampling`'s.
//!
//! It prints the training and validation losses every 100 steps, the final validation loss
//! (mean cross-entropy per character over 200 random validation windows), the training time
//! and a sample, and saves the weights and the vocabulary under the output directory.
//! Sampling reads the prompt once and then each new character once, through the model's
//! decoding cache (`forward_cached`: every attention layer keeps its keys and values); when the
//! 64 positions are full it starts again from the last 48 characters.

use kiln::ndarray::{s, Array2};
use kiln::optim::{clip_grad_norm, CosineAnnealing, LinearWarmup, LrSchedule};
use kiln::rand::rngs::StdRng;
use kiln::rand::SeedableRng;
use kiln::sampling::Sampling;
use kiln::text::{read_tsv, TokenStream, Tokenizer, Vocab};
use kiln::{AdamW, Optimizer};
use std::error::Error;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[allow(clippy::duplicate_mod)] // the examples test loads every example, each with it
#[path = "common/cli.rs"]
mod cli;

/// The number of ids: `<pad>`, `<unk>` and the 81 distinct characters of the novels.
pub const VOCAB: usize = 83;
/// The context length: the model reads at most this many characters.
pub const BLOCK: usize = 64;

kiln::model! {
    /// A character-level GPT: 4 pre-norm transformer blocks over 128-wide embeddings.
    pub struct CharGpt {
        input tokens: [B, T] tokens 83;
        target next: [B, T] classes 83;
        let wte = embedding(tokens, 128);
        let wpe = position_embedding(tokens, 128, max_len = 64);
        let x = wte + wpe;
        let h = Block(x, repeat = 4);
        let ln_f = layer_norm(h);
        let logits = linear(ln_f, 83, bias = false);
        output logits;
        loss cross_entropy(logits, next);

        block Block(x) {
            let ln_1 = layer_norm(x);
            let attn = multi_head_attention(ln_1, heads = 4, causal = true);
            let x1 = x + attn;
            let ln_2 = layer_norm(x1);
            let c_fc = gelu(linear(ln_2, 512));
            let mlp_proj = linear(c_fc, 128);
            let out = x1 + mlp_proj;
            output out;
        }
    }
}

/// The training recipe.
#[derive(Clone, Debug)]
pub struct Config {
    /// Optimizer steps.
    pub iterations: usize,
    /// Windows per batch.
    pub batch: usize,
    /// Linear warm-up steps (from 1% of the peak rate), before the cosine decay.
    pub warmup: usize,
    /// The peak learning rate.
    pub lr: f64,
    /// The learning rate the cosine reaches at the last step.
    pub min_lr: f64,
    /// Decoupled weight decay, applied to matrices and embedding tables only.
    pub weight_decay: f64,
    /// The largest total gradient norm; larger gradients are scaled down to it.
    pub clip: f64,
    /// Print the losses every this many steps.
    pub log_every: usize,
    /// Random validation windows behind each printed validation loss.
    pub log_windows: usize,
    /// Random validation windows behind the final validation loss.
    pub eval_windows: usize,
    /// Seeds the initial weights and the training windows.
    pub seed: u64,
}

impl Config {
    /// The full recipe: 2,000 steps of 12 windows.
    pub fn recipe() -> Self {
        Config {
            iterations: 2000,
            batch: 12,
            warmup: 100,
            lr: 1e-3,
            min_lr: 1e-4,
            weight_decay: 0.1,
            clip: 1.0,
            log_every: 100,
            log_windows: 48,
            eval_windows: 200,
            seed: 1337,
        }
    }
}

/// What a training run produced.
pub struct Outcome {
    /// The trained model.
    pub model: CharGpt<f32>,
    /// The characters' ids.
    pub vocab: Vocab,
    /// Mean cross-entropy per character (nats) over `eval_windows` random validation windows.
    pub validation_loss: f64,
    /// Seconds spent in training steps (sampling batches, forward, backward, clipping, update).
    pub train_seconds: f64,
    /// Seconds for the whole loop, the periodic validation included.
    pub loop_seconds: f64,
}

/// The bundled text: Austen's novels, their lines joined with `\n` in file order.
pub fn load_text() -> Result<String, Box<dyn Error>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/austen.tsv.gz");
    Ok(read_tsv(path)?.joined("line", "\n")?)
}

/// The character vocabulary of `text`; it must have exactly [`VOCAB`] ids.
pub fn build_vocab(text: &str) -> Result<Vocab, Box<dyn Error>> {
    let vocab = Vocab::builder(Tokenizer::Chars).build([text]);
    check_vocab(&vocab)?;
    Ok(vocab)
}

fn check_vocab(vocab: &Vocab) -> Result<(), Box<dyn Error>> {
    if vocab.len() != VOCAB {
        return Err(format!(
            "the vocabulary has {} ids but the model is built for {VOCAB}",
            vocab.len()
        )
        .into());
    }
    Ok(())
}

/// Trains on the first 90% of `text` with `config`, printing progress if `verbose`.
pub fn train(text: &str, config: &Config, verbose: bool) -> Result<Outcome, Box<dyn Error>> {
    let vocab = build_vocab(text)?;
    let stream = TokenStream::encode(&vocab, text);
    let (train_stream, validation) = stream.split(0.9);
    if verbose {
        println!(
            "{} characters: {} training, {} validation; {} distinct",
            stream.len(),
            train_stream.len(),
            validation.len(),
            vocab.len() - vocab.specials().len()
        );
    }

    let mut model = CharGpt::<f32>::new(&mut StdRng::seed_from_u64(config.seed));
    if verbose {
        println!("{}\n", kiln::Model::summary(&model));
        println!(
            "train: the mean loss of the last {} batches; validation: {} random windows\n",
            config.log_every, config.log_windows
        );
    }
    let mut optimizer = AdamW::new(config.lr)
        .betas(0.9, 0.99)
        .weight_decay(config.weight_decay)
        .decay_filter(|_, shape| shape.len() >= 2);
    let warmup = config.warmup.min(config.iterations);
    let schedule = LinearWarmup::steps(
        warmup,
        CosineAnnealing::new(config.iterations - warmup, config.min_lr).per_step(),
    )
    .start_factor(0.01);

    let mut sampler = train_stream.sampler(config.batch, BLOCK, config.seed)?;
    let (mut inputs, mut targets) = (
        Array2::zeros((config.batch, BLOCK)),
        Array2::zeros((config.batch, BLOCK)),
    );
    let (mut ws, mut grads) = (model.workspace(), model.zero_grads());
    let (mut loss_sum, mut losses) = (0.0f64, 0usize);
    let mut train_seconds = 0.0;
    let start = Instant::now();
    for step in 0..config.iterations {
        let step_start = Instant::now();
        sampler.next_into(&mut inputs, &mut targets);
        optimizer.set_learning_rate(schedule.lr(0, step, config.lr));
        let loss = model.loss_and_grad(inputs.view(), targets.view(), &mut ws, &mut grads)?;
        clip_grad_norm::<f32, CharGpt<f32>>(&mut grads, config.clip);
        optimizer.step(&mut model, &grads);
        train_seconds += step_start.elapsed().as_secs_f64();
        loss_sum += f64::from(loss);
        losses += 1;
        if !loss.is_finite() {
            return Err(format!("the loss diverged at step {}: {loss}", step + 1).into());
        }
        if verbose && ((step + 1) % config.log_every == 0 || step + 1 == config.iterations) {
            let validation_loss =
                evaluate(&model, &validation, config.log_windows, config.seed + 1)?;
            println!(
                "step {:>5}  lr {:.2e}  train {:.4}  validation {:.4}  ({:.1} s)",
                step + 1,
                optimizer.learning_rate(),
                loss_sum / losses as f64,
                validation_loss,
                start.elapsed().as_secs_f64()
            );
            (loss_sum, losses) = (0.0, 0);
        }
    }
    let loop_seconds = start.elapsed().as_secs_f64();
    let validation_loss = evaluate(&model, &validation, config.eval_windows, config.seed + 2)?;
    Ok(Outcome {
        model,
        vocab,
        validation_loss,
        train_seconds,
        loop_seconds,
    })
}

/// The mean cross-entropy per character (nats) of `model` over `windows` random windows of
/// `stream` (drawn with `seed`), every position of every window counted once.
pub fn evaluate(
    model: &CharGpt<f32>,
    stream: &TokenStream,
    windows: usize,
    seed: u64,
) -> Result<f64, Box<dyn Error>> {
    const BATCH: usize = 20;
    let mut ws = model.workspace();
    let (mut total, mut done) = (0.0f64, 0usize);
    while done < windows {
        let rows = BATCH.min(windows - done);
        // One sampler per batch size: the windows stay a function of the seed alone.
        let mut sampler = stream.sampler(rows, BLOCK, seed + done as u64)?;
        let (inputs, targets) = sampler.next_batch();
        let loss = model.loss(inputs.view(), targets.view(), &mut ws)?;
        total += f64::from(loss) * rows as f64;
        done += rows;
    }
    Ok(total / windows.max(1) as f64)
}

/// How many characters a full decoding cache starts again from: each sampled character sees
/// between `KEEP` and [`BLOCK`] characters before it (every one, up to `BLOCK`, at the start).
pub const KEEP: usize = 48;

/// `count` characters continuing `prompt`, each drawn from the model's distribution over the
/// next character given the characters before it: the model reads the prompt (its last
/// [`BLOCK`] characters) once, then each new character once, through its decoding cache
/// (`forward_cached`); when the cache is full it reads the last [`KEEP`] characters again.
pub fn sample(
    model: &CharGpt<f32>,
    vocab: &Vocab,
    prompt: &str,
    count: usize,
    sampling: &Sampling,
    seed: u64,
) -> Result<String, Box<dyn Error>> {
    sampling.check()?;
    let specials = vocab.specials().len();
    let mut ids = vocab.encode(prompt);
    if let Some(c) = prompt
        .chars()
        .zip(&ids)
        .find(|&(_, &id)| id == Vocab::UNK)
        .map(|(c, _)| c)
    {
        return Err(format!("the prompt's character {c:?} is not in Austen's novels").into());
    }
    if ids.is_empty() {
        ids.push(vocab.id("\n").ok_or("the vocabulary has no line break")?);
    }
    let prompt_len = ids.len();
    let mut rng = StdRng::seed_from_u64(seed);
    // The model reads the prompt once, then each new character once: the decoding cache keeps
    // every layer's keys and values. When it is full (64 positions, the position table's
    // length), it starts again from the last `KEEP` characters.
    let mut cache = model.decoder_cache(1, BLOCK)?;
    for step in 0..count {
        let fresh = if step == 0 || cache.len() == BLOCK {
            cache.clear();
            let keep = if step == 0 { BLOCK } else { KEEP };
            &ids[ids.len().saturating_sub(keep)..]
        } else {
            &ids[ids.len() - 1..]
        };
        let tokens = Array2::from_shape_vec((1, fresh.len()), fresh.to_vec())?;
        let logits = model.forward_cached(tokens.view(), &mut cache)?;
        // Special tokens never follow a character: only characters are candidates.
        let mut last = logits.slice(s![0, fresh.len() - 1, ..]).to_vec();
        last[..specials].fill(f32::NEG_INFINITY);
        let next = sampling.draw(&last, &mut rng)?;
        ids.push(next);
    }
    Ok(vocab.decode(&ids[prompt_len..]))
}

struct Args {
    iterations: Option<usize>,
    prompt: String,
    sampling: Sampling,
    seed: u64,
    chars: usize,
    out: PathBuf,
    sample_only: bool,
}

fn parse_args() -> Result<Args, String> {
    fn number<T: std::str::FromStr>(flag: &str, value: Option<String>) -> Result<T, String> {
        let value = value.ok_or(format!("{flag} needs a value"))?;
        value
            .parse()
            .map_err(|_| format!("{flag}: `{value}` is not a valid number"))
    }
    let mut args = Args {
        iterations: None,
        prompt: "It is a truth universally acknowledged".to_string(),
        sampling: Sampling::new(),
        seed: 0,
        chars: 500,
        out: PathBuf::from("target/kiln-austen"),
        sample_only: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--iterations" => args.iterations = Some(number(&arg, it.next())?),
            "--prompt" => args.prompt = it.next().ok_or("--prompt needs a text")?,
            "--temperature" => args.sampling.temperature = number(&arg, it.next())?,
            "--top-k" => args.sampling.top_k = Some(number(&arg, it.next())?),
            "--top-p" => args.sampling.top_p = Some(number(&arg, it.next())?),
            "--seed" => args.seed = number(&arg, it.next())?,
            "--chars" => args.chars = number(&arg, it.next())?,
            "--out" => args.out = it.next().ok_or("--out needs a directory")?.into(),
            "--sample-only" => args.sample_only = true,
            other => {
                return Err(format!(
                    "unknown argument `{other}` (try --iterations N, --prompt TEXT, \
                     --temperature T, --top-k K, --top-p P, --chars N, --seed S, --out DIR, \
                     --sample-only)"
                ))
            }
        }
    }
    Ok(args)
}

const USAGE: &str = "\
usage: cargo run --release --example austen -- [OPTIONS]

Trains a character-level GPT on Jane Austen's novels, prints the training and validation loss,
saves it, and samples text from a prompt.

  --iterations N        training steps (default: 2000)
  --prompt TEXT         the text to continue
  --temperature T       sampling temperature (default: 1.0; 0 takes the likeliest)
  --top-k K             sample among the K likeliest characters (default: all)
  --top-p P             sample among the likeliest characters holding probability P (default: 1)
  --chars N             characters to sample (default: 500)
  --seed S              the sampling seed (default: 0)
  --out DIR             where the model is saved and loaded (default: target/kiln-austen)
  --sample-only         sample from the model saved in DIR, without training
  -h, --help            this text
";

fn main() -> std::process::ExitCode {
    cli::main(USAGE, run)
}

fn run() -> Result<(), Box<dyn Error>> {
    let args = parse_args()?;
    let weights = args.out.join("char_gpt.safetensors");
    let vocab_path = args.out.join("vocab.json");
    let (model, vocab) = if args.sample_only {
        cli::require_saved("--sample-only", &[&weights, &vocab_path])?;
        let vocab = Vocab::load(&vocab_path)?;
        check_vocab(&vocab)?;
        let mut model = CharGpt::<f32>::new(&mut StdRng::seed_from_u64(0));
        kiln::io::load(&mut model, &weights)?;
        println!("loaded {}", weights.display());
        (model, vocab)
    } else {
        let mut config = Config::recipe();
        if let Some(iterations) = args.iterations {
            config.iterations = iterations;
        }
        let text = load_text()?;
        let outcome = train(&text, &config, true)?;
        println!(
            "\nfinal validation loss {:.4} (mean over {} random windows of {BLOCK} characters)",
            outcome.validation_loss, config.eval_windows
        );
        println!(
            "training: {:.1} s in steps, {:.1} s with the periodic validation ({:.1} ms/step)",
            outcome.train_seconds,
            outcome.loop_seconds,
            1e3 * outcome.train_seconds / config.iterations.max(1) as f64
        );
        std::fs::create_dir_all(&args.out)?;
        kiln::io::save(&outcome.model, &weights)?;
        outcome.vocab.save(&vocab_path)?;
        println!("saved {} and {}", weights.display(), vocab_path.display());
        (outcome.model, outcome.vocab)
    };
    let start = Instant::now();
    let text = sample(
        &model,
        &vocab,
        &args.prompt,
        args.chars,
        &args.sampling,
        args.seed,
    )?;
    println!(
        "\n--- {} characters after {:?} (temperature {}, top-k {}, top-p {}) in {:.1} s ---\n{}{}\n---",
        args.chars,
        args.prompt,
        args.sampling.temperature,
        args.sampling
            .top_k
            .map_or("all".to_string(), |k| k.to_string()),
        args.sampling.top_p.unwrap_or(1.0),
        start.elapsed().as_secs_f64(),
        args.prompt,
        text
    );
    Ok(())
}
