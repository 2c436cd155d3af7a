//! Translating dates: a small encoder–decoder transformer reads a date written by a person
//! ("the fourth of july, nineteen seventy-six", "Sun, 04 Jul 1976", "7/4/1976") and writes it
//! as an ISO date ("1976-07-04").
//!
//! ```text
//! cargo run --release --example translate                                 # train, test, save
//! cargo run --release --example translate -- "the fourth of july 1976" "25.12.2001"
//! cargo run --release --example translate -- --no-train "mar 3 '99"      # reuse the saved model
//! ```
//!
//! Options: `--steps N`, `--out DIR` (default `target/kiln-translate`), `--no-train`,
//! `--quiet`; every other argument is a date to translate.
//!
//! The data are generated with a seeded generator: dates from 1900-01-01 to 2099-12-31, each
//! written in one of twelve styles ([`STYLES`]), the weekday (when written) the true one. A
//! seeded tenth of the 73,049 days is held out: no training source names one of them, so the
//! test measures translations of dates never seen. Sources are read character by character
//! over a fixed lowercased alphabet ([`SOURCE_ALPHABET`]); targets over `0-9` and `-`, after a
//! `<bos>` id.
//!
//! The model ([`DateTranslator`]) embeds the source characters with learned positions, runs
//! two pre-norm encoder blocks (self-attention with the padding masked through `lengths`, a
//! GELU MLP), then two decoder blocks over the target characters (causal self-attention,
//! cross-attention to the encoded source with its padding masked, a GELU MLP) and a linear
//! head over the target characters. It trains with teacher forcing — the decoder reads
//! `<bos>` and the first nine characters of the answer and predicts all ten at once — on
//! batches of random training dates in random styles, with AdamW, linear warm-up, cosine decay
//! and gradient-norm clipping. Translation is greedy: ten forward passes over a whole batch of
//! sources, the decoder input growing by the most likely character each time.
//!
//! It prints the model summary, the loss every 100 steps, the held-out exact-match and
//! per-character accuracies (overall and by style), a few translations, and saves the weights
//! (`translate.safetensors`) and both vocabularies (`source_vocab.json`, `target_vocab.json`)
//! in the output directory; the dates on the command line are translated by the model loaded
//! back from there.

use kiln::ndarray::{Array1, Array2, Array3, ArrayView1, Axis};
use kiln::optim::{clip_grad_norm, CosineAnnealing, LinearWarmup, LrSchedule};
use kiln::rand::rngs::StdRng;
use kiln::rand::{RngExt, SeedableRng};
use kiln::text::{pad_batch, Tokenizer, Vocab};
use kiln::{AdamW, Model, Optimizer};
use std::error::Error;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[allow(clippy::duplicate_mod)] // the examples test loads every example, each with it
#[path = "common/cli.rs"]
mod cli;

/// The characters a source may hold (read lowercased); any other character reads as `<unk>`.
pub const SOURCE_ALPHABET: &str = "abcdefghijklmnopqrstuvwxyz0123456789 ,.-/'";
/// The source vocabulary's size: `<pad>`, `<unk>` and the 42 characters of
/// [`SOURCE_ALPHABET`].
pub const SOURCE_VOCAB: usize = 44;
/// The characters of an ISO date.
pub const TARGET_ALPHABET: &str = "0123456789-";
/// The target vocabulary's size: `<pad>`, `<unk>`, `<bos>` and the 11 characters of
/// [`TARGET_ALPHABET`].
pub const TARGET_VOCAB: usize = 14;
/// The longest source the model reads, in characters.
pub const MAX_SOURCE: usize = 72;
/// The length of an ISO date, `YYYY-MM-DD`: the decoder's number of positions.
pub const TARGET_LEN: usize = 10;

kiln::model! {
    /// An encoder–decoder transformer over characters: 64-wide embeddings, two encoder blocks
    /// (4-head self-attention over the source's real length, 256-wide GELU MLP) and two
    /// decoder blocks (4-head causal self-attention, 4-head cross-attention to the encoded
    /// source, 256-wide GELU MLP), all pre-norm, then a layer norm and a linear head.
    pub struct DateTranslator {
        input src: [B, S] tokens 44;
        input src_len: [B] lengths S;
        input tgt: [B, T] tokens 14;
        target next: [B, T] classes 14;
        let src_emb = embedding(src, 64, padding_idx = 0);
        let src_pos = position_embedding(src, 64, max_len = 72);
        let src_in = src_emb + src_pos;
        let enc = Encoder(src_in, src_len, repeat = 2);
        let memory = layer_norm(enc);
        let tgt_emb = embedding(tgt, 64);
        let tgt_pos = position_embedding(tgt, 64, max_len = 10);
        let tgt_in = tgt_emb + tgt_pos;
        let dec = Decoder(tgt_in, memory, src_len, repeat = 2);
        let ln_f = layer_norm(dec);
        let logits = linear(ln_f, 14);
        output logits;
        loss cross_entropy(logits, next);

        block Encoder(x, len) {
            let ln_1 = layer_norm(x);
            let attn = multi_head_attention(ln_1, heads = 4, lengths = len);
            let x1 = x + attn;
            let ln_2 = layer_norm(x1);
            let up = gelu(linear(ln_2, 256));
            let down = linear(up, 64);
            let out = x1 + down;
            output out;
        }

        block Decoder(x, memory, len) {
            let ln_1 = layer_norm(x);
            let self_attn = multi_head_attention(ln_1, heads = 4, causal = true);
            let x1 = x + self_attn;
            let ln_2 = layer_norm(x1);
            let cross = multi_head_attention(ln_2, memory, heads = 4, lengths = len);
            let x2 = x1 + cross;
            let ln_3 = layer_norm(x2);
            let up = gelu(linear(ln_3, 256));
            let down = linear(up, 64);
            let out = x2 + down;
            output out;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Dates and how people write them.
// ---------------------------------------------------------------------------------------------

/// A day of the Gregorian calendar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Date {
    /// The year, 1900 to 2099.
    pub year: u32,
    /// The month, 1 to 12.
    pub month: u32,
    /// The day of the month, from 1.
    pub day: u32,
    /// The day of the week, 0 = Monday to 6 = Sunday.
    pub weekday: u32,
}

impl Date {
    /// The date as `YYYY-MM-DD`.
    pub fn iso(&self) -> String {
        format!("{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// The first year the generator writes.
pub const FIRST_YEAR: u32 = 1900;
/// The last year the generator writes.
pub const LAST_YEAR: u32 = 2099;

fn is_leap(year: u32) -> bool {
    (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Every day from 1900-01-01 (a Monday) to 2099-12-31, in order, with its weekday.
pub fn all_dates() -> Vec<Date> {
    let mut dates = Vec::new();
    for year in FIRST_YEAR..=LAST_YEAR {
        for month in 1..=12 {
            for day in 1..=days_in_month(year, month) {
                let weekday = (dates.len() % 7) as u32;
                dates.push(Date {
                    year,
                    month,
                    day,
                    weekday,
                });
            }
        }
    }
    dates
}

const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];
const WEEKDAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];
const ONES: [&str; 20] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
];
const TENS: [&str; 10] = [
    "", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
];
const ORDINALS: [&str; 20] = [
    "zeroth",
    "first",
    "second",
    "third",
    "fourth",
    "fifth",
    "sixth",
    "seventh",
    "eighth",
    "ninth",
    "tenth",
    "eleventh",
    "twelfth",
    "thirteenth",
    "fourteenth",
    "fifteenth",
    "sixteenth",
    "seventeenth",
    "eighteenth",
    "nineteenth",
];

/// `n` (0 to 99) in words: "seven", "nineteen", "forty", "seventy-six".
fn cardinal(n: u32) -> String {
    match n {
        0..=19 => ONES[n as usize].to_string(),
        _ if n.is_multiple_of(10) => TENS[(n / 10) as usize].to_string(),
        _ => format!("{}-{}", TENS[(n / 10) as usize], ONES[(n % 10) as usize]),
    }
}

/// `n` (1 to 31) as an ordinal in words: "first", "twelfth", "twentieth", "thirty-first".
fn ordinal_words(n: u32) -> String {
    match n {
        0..=19 => ORDINALS[n as usize].to_string(),
        _ if n.is_multiple_of(10) => {
            format!("{}ieth", TENS[(n / 10) as usize].trim_end_matches('y'))
        }
        _ => format!(
            "{}-{}",
            TENS[(n / 10) as usize],
            ORDINALS[(n % 10) as usize]
        ),
    }
}

/// `n` with its English ordinal suffix: "1st", "2nd", "11th", "23rd".
fn ordinal_digits(n: u32) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// A year (1900 to 2099) as people say it: "nineteen hundred", "nineteen oh five",
/// "nineteen seventy-six", "two thousand", "two thousand and seven", "twenty twenty-four".
fn year_words(year: u32) -> String {
    let (century, rest) = (year / 100, year % 100);
    match (century, rest) {
        (19, 0) => "nineteen hundred".to_string(),
        (19, 1..=9) => format!("nineteen oh {}", ONES[rest as usize]),
        (19, _) => format!("nineteen {}", cardinal(rest)),
        (_, 0) => "two thousand".to_string(),
        (_, 1..=9) => format!("two thousand and {}", ONES[rest as usize]),
        _ => format!("twenty {}", cardinal(rest)),
    }
}

fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The twelve ways of writing a date, with 1976-07-04 (a Sunday) written in each. Numeric
/// styles state their order: dots are day-first, slashes month-first (US); the two-digit year
/// reads '50–'99 as 19xx and '00–'49 as 20xx, so that style only writes 1950 to 2049.
pub const STYLES: [(&str, &str); 12] = [
    ("day month year", "4 july 1976"),
    ("Month ordinal, year", "July 4th, 1976"),
    ("in words", "the fourth of july, nineteen seventy-six"),
    ("DD.MM.YYYY", "04.07.1976"),
    ("weekday, day month year", "sunday, 4 july 1976"),
    ("mon day 'yy", "jul 4 '76"),
    ("ordinal of Month year", "4th of July 1976"),
    ("Wkd, DD Mon YYYY", "Sun, 04 Jul 1976"),
    ("month the ordinal, year", "july the fourth, 1976"),
    ("M/D/YYYY (US)", "7/4/1976"),
    ("MONTH DAY, YEAR", "JULY 4, 1976"),
    (
        "weekday the ordinal of month, year",
        "sunday the fourth of july, 1976",
    ),
];

/// Whether style `style` can write `date` (the two-digit year covers 1950 to 2049 only).
pub fn writable(style: usize, date: &Date) -> bool {
    style != 5 || (1950..2050).contains(&date.year)
}

/// `date` written in style `style` (an index of [`STYLES`]); `None` if the style cannot
/// write it ([`writable`]).
pub fn write_date(date: &Date, style: usize) -> Option<String> {
    if !writable(style, date) {
        return None;
    }
    let Date {
        year,
        month,
        day,
        weekday,
    } = *date;
    let month_name = MONTHS[(month - 1) as usize];
    let short_month = &month_name[..3];
    let weekday_name = WEEKDAYS[weekday as usize];
    Some(match style {
        0 => format!("{day} {month_name} {year}"),
        1 => format!(
            "{} {}, {year}",
            capitalized(month_name),
            ordinal_digits(day)
        ),
        2 => format!(
            "the {} of {month_name}, {}",
            ordinal_words(day),
            year_words(year)
        ),
        3 => format!("{day:02}.{month:02}.{year}"),
        4 => format!("{weekday_name}, {day} {month_name} {year}"),
        5 => format!("{short_month} {day} '{:02}", year % 100),
        6 => format!(
            "{} of {} {year}",
            ordinal_digits(day),
            capitalized(month_name)
        ),
        7 => format!(
            "{}, {day:02} {} {year}",
            capitalized(&weekday_name[..3]),
            capitalized(short_month)
        ),
        8 => format!("{month_name} the {}, {year}", ordinal_words(day)),
        9 => format!("{month}/{day}/{year}"),
        10 => format!("{} {day}, {year}", month_name.to_uppercase()),
        11 => format!(
            "{weekday_name} the {} of {month_name}, {year}",
            ordinal_words(day)
        ),
        _ => return None,
    })
}

/// One source–target pair.
#[derive(Clone, Debug)]
pub struct Example {
    /// The date as written.
    pub source: String,
    /// Its ISO form.
    pub target: String,
    /// The index of its style in [`STYLES`].
    pub style: usize,
}

/// `date` in a random style it can be written in.
fn random_example(date: &Date, rng: &mut StdRng) -> Example {
    loop {
        let style = rng.random_range(0..STYLES.len());
        if let Some(source) = write_date(date, style) {
            return Example {
                source,
                target: date.iso(),
                style,
            };
        }
    }
}

/// The days split into training and held-out days: a seeded `held_out` fraction of them is
/// kept out of training.
pub fn split_dates(held_out: f64, seed: u64) -> (Vec<Date>, Vec<Date>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for date in all_dates() {
        if rng.random::<f64>() < held_out {
            test.push(date);
        } else {
            train.push(date);
        }
    }
    (train, test)
}

// ---------------------------------------------------------------------------------------------
// Vocabularies and batches.
// ---------------------------------------------------------------------------------------------

/// The source vocabulary: `<pad>`, `<unk>`, then [`SOURCE_ALPHABET`]'s characters, read
/// lowercased.
pub fn source_vocab() -> Vocab {
    Vocab::builder(Tokenizer::Chars)
        .lowercase(true)
        .build([SOURCE_ALPHABET])
}

/// The target vocabulary: `<pad>`, `<unk>`, `<bos>`, then [`TARGET_ALPHABET`]'s characters.
pub fn target_vocab() -> Vocab {
    Vocab::builder(Tokenizer::Chars)
        .specials(&["<bos>"])
        .build([TARGET_ALPHABET])
}

/// Checks that vocabularies (built or loaded) fit the model.
fn check_vocabs(source: &Vocab, target: &Vocab) -> Result<(), Box<dyn Error>> {
    if source.len() != SOURCE_VOCAB || target.len() != TARGET_VOCAB {
        return Err(format!(
            "the vocabularies have {} and {} ids, but the model is built for {SOURCE_VOCAB} and \
             {TARGET_VOCAB}",
            source.len(),
            target.len()
        )
        .into());
    }
    if target.id("<bos>").is_none() {
        return Err("the target vocabulary has no <bos>".into());
    }
    Ok(())
}

/// Whether the model can read `text`: at most [`MAX_SOURCE`] characters, every one of them
/// (lowercased) in [`SOURCE_ALPHABET`]. An unknown character would be read as `<unk>`, which
/// training never showed the model, and it would answer something for it.
fn readable_source(text: &str) -> Result<(), String> {
    let text = text.trim().to_lowercase();
    if let Some(c) = text.chars().find(|&c| !SOURCE_ALPHABET.contains(c)) {
        return Err(format!(
            "the character {c:?} is not one the model reads (letters, digits, space and , . - / ')"
        ));
    }
    let len = text.chars().count();
    if len > MAX_SOURCE {
        return Err(format!(
            "{len} characters, more than the {MAX_SOURCE} the model reads"
        ));
    }
    Ok(())
}

/// Source ids of `texts`, padded to the longest, with their lengths; an error for a text
/// the model cannot read ([`readable_source`]).
fn encode_sources(
    vocab: &Vocab,
    texts: &[&str],
) -> Result<(Array2<usize>, Array1<usize>), Box<dyn Error>> {
    for text in texts {
        readable_source(text).map_err(|why| format!("{text:?}: {why}"))?;
    }
    let ids: Vec<Vec<usize>> = texts.iter().map(|t| vocab.encode(t.trim())).collect();
    Ok(pad_batch(&ids, None))
}

/// The decoder's inputs and labels for teacher forcing: `<bos>` and the first nine target
/// characters, and the ten target characters.
fn encode_targets(
    vocab: &Vocab,
    targets: &[&str],
) -> Result<(Array2<usize>, Array2<usize>), Box<dyn Error>> {
    let bos = vocab
        .id("<bos>")
        .ok_or("the target vocabulary has no <bos>")?;
    let mut inputs = Array2::zeros((targets.len(), TARGET_LEN));
    let mut labels = Array2::zeros((targets.len(), TARGET_LEN));
    for (row, target) in targets.iter().enumerate() {
        let ids = vocab.encode(target);
        if ids.len() != TARGET_LEN || ids.contains(&Vocab::UNK) {
            return Err(format!("{target:?} is not an ISO date").into());
        }
        inputs[[row, 0]] = bos;
        for (t, &id) in ids.iter().enumerate() {
            labels[[row, t]] = id;
            if t + 1 < TARGET_LEN {
                inputs[[row, t + 1]] = id;
            }
        }
    }
    Ok((inputs, labels))
}

// ---------------------------------------------------------------------------------------------
// Training and translation.
// ---------------------------------------------------------------------------------------------

/// The training recipe.
#[derive(Clone, Debug)]
pub struct Config {
    /// Optimizer steps.
    pub steps: usize,
    /// Pairs per batch.
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
    /// The fraction of days held out of training.
    pub held_out: f64,
    /// Held-out pairs the accuracies are measured on.
    pub test_pairs: usize,
    /// Seeds the split, the initial weights and the batches.
    pub seed: u64,
    /// Where the weights and vocabularies are written.
    pub out: PathBuf,
    /// Print the summary and the loss every 100 steps.
    pub verbose: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            steps: 800,
            batch: 64,
            warmup: 100,
            lr: 2e-3,
            min_lr: 1e-4,
            weight_decay: 0.01,
            clip: 1.0,
            held_out: 0.1,
            test_pairs: 2000,
            seed: 42,
            out: PathBuf::from("target/kiln-translate"),
            verbose: true,
        }
    }
}

/// What a training run produced.
pub struct Report {
    /// The trained model.
    pub translator: Translator,
    /// The fraction of held-out sources translated exactly.
    pub exact_match: f64,
    /// The fraction of held-out target characters right.
    pub char_accuracy: f64,
    /// Exact-match accuracy and number of held-out pairs, by style.
    pub by_style: Vec<(f64, usize)>,
    /// The held-out pairs, in order.
    pub test: Vec<Example>,
    /// The translations of the held-out sources, in order.
    pub predictions: Vec<String>,
    /// The last 100 steps' mean training loss.
    pub final_loss: f64,
    /// Seconds of training.
    pub train_seconds: f64,
    /// The saved weights.
    pub weights: PathBuf,
}

/// Trains on random training dates in random styles, measures the held-out accuracies, and
/// saves the model and vocabularies under `config.out`.
pub fn train(config: &Config) -> Result<Report, Box<dyn Error>> {
    let (source, target) = (source_vocab(), target_vocab());
    check_vocabs(&source, &target)?;
    let (train_dates, test_dates) = split_dates(config.held_out, config.seed);
    if train_dates.is_empty() || test_dates.is_empty() {
        return Err(format!("held_out = {} leaves no dates on one side", config.held_out).into());
    }
    let mut rng = StdRng::seed_from_u64(config.seed + 1);
    let test: Vec<Example> = (0..config.test_pairs)
        .map(|_| {
            let date = test_dates[rng.random_range(0..test_dates.len())];
            random_example(&date, &mut rng)
        })
        .collect();

    let mut model = DateTranslator::<f32>::new(&mut StdRng::seed_from_u64(config.seed));
    if config.verbose {
        println!(
            "{} training days, {} held-out days; {} styles; {} held-out pairs",
            train_dates.len(),
            test_dates.len(),
            STYLES.len(),
            test.len()
        );
        println!("{}\n", model.summary());
    }
    let mut optimizer = AdamW::new(config.lr)
        .betas(0.9, 0.98)
        .weight_decay(config.weight_decay)
        .decay_filter(|_, shape| shape.len() >= 2);
    let warmup = config.warmup.min(config.steps);
    let schedule = LinearWarmup::steps(
        warmup,
        CosineAnnealing::new(config.steps - warmup, config.min_lr).per_step(),
    )
    .start_factor(0.01);

    let (mut ws, mut grads) = (model.workspace(), model.zero_grads());
    let (mut loss_sum, mut losses, mut final_loss) = (0.0f64, 0usize, f64::NAN);
    let start = Instant::now();
    for step in 0..config.steps {
        let batch: Vec<Example> = (0..config.batch)
            .map(|_| {
                let date = train_dates[rng.random_range(0..train_dates.len())];
                random_example(&date, &mut rng)
            })
            .collect();
        let sources: Vec<&str> = batch.iter().map(|e| e.source.as_str()).collect();
        let targets: Vec<&str> = batch.iter().map(|e| e.target.as_str()).collect();
        let (src, src_len) = encode_sources(&source, &sources)?;
        let (tgt, next) = encode_targets(&target, &targets)?;
        optimizer.set_learning_rate(schedule.lr(0, step, config.lr));
        let loss = model.loss_and_grad(
            src.view(),
            src_len.view(),
            tgt.view(),
            next.view(),
            &mut ws,
            &mut grads,
        )?;
        if !loss.is_finite() {
            return Err(format!("the loss diverged at step {}: {loss}", step + 1).into());
        }
        clip_grad_norm::<f32, DateTranslator<f32>>(&mut grads, config.clip);
        optimizer.step(&mut model, &grads);
        loss_sum += f64::from(loss);
        losses += 1;
        if (step + 1) % 100 == 0 || step + 1 == config.steps {
            final_loss = loss_sum / losses as f64;
            if config.verbose {
                println!(
                    "step {:>5}  lr {:.2e}  loss {:.4}  ({:.1} s)",
                    step + 1,
                    optimizer.learning_rate(),
                    final_loss,
                    start.elapsed().as_secs_f64()
                );
            }
            (loss_sum, losses) = (0.0, 0);
        }
    }
    let train_seconds = start.elapsed().as_secs_f64();

    let translator = Translator {
        model,
        source,
        target,
    };
    let sources: Vec<&str> = test.iter().map(|e| e.source.as_str()).collect();
    let predictions = translator.translate(&sources)?;
    let (mut exact, mut chars) = (0usize, 0usize);
    let mut by_style = vec![(0usize, 0usize); STYLES.len()];
    for (example, predicted) in test.iter().zip(&predictions) {
        let right = *predicted == example.target;
        exact += usize::from(right);
        chars += predicted
            .chars()
            .zip(example.target.chars())
            .filter(|(a, b)| a == b)
            .count();
        by_style[example.style].0 += usize::from(right);
        by_style[example.style].1 += 1;
    }
    let n = test.len().max(1) as f64;
    let weights = translator.save(&config.out)?;
    Ok(Report {
        translator,
        exact_match: exact as f64 / n,
        char_accuracy: chars as f64 / (n * TARGET_LEN as f64),
        by_style: by_style
            .into_iter()
            .map(|(right, count)| (right as f64 / count.max(1) as f64, count))
            .collect(),
        test,
        predictions,
        final_loss,
        train_seconds,
        weights,
    })
}

/// A trained model with its vocabularies.
pub struct Translator {
    /// The model.
    pub model: DateTranslator<f32>,
    /// The source characters' ids.
    pub source: Vocab,
    /// The target characters' ids.
    pub target: Vocab,
}

/// The files of a saved translator in `dir`: weights, source and target vocabularies.
fn files(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (
        dir.join("translate.safetensors"),
        dir.join("source_vocab.json"),
        dir.join("target_vocab.json"),
    )
}

impl Translator {
    /// Loads the weights and vocabularies saved in `dir`.
    pub fn load(dir: &Path) -> Result<Translator, Box<dyn Error>> {
        let (weights, source_path, target_path) = files(dir);
        let source = Vocab::load(&source_path)?;
        let target = Vocab::load(&target_path)?;
        check_vocabs(&source, &target)?;
        let mut model = DateTranslator::<f32>::zeros();
        kiln::io::load(&mut model, &weights)?;
        Ok(Translator {
            model,
            source,
            target,
        })
    }

    /// Saves the weights and vocabularies in `dir` (created if needed); returns the weights'
    /// path.
    pub fn save(&self, dir: &Path) -> Result<PathBuf, Box<dyn Error>> {
        std::fs::create_dir_all(dir)?;
        let (weights, source_path, target_path) = files(dir);
        kiln::io::save(&self.model, &weights)?;
        self.source.save(&source_path)?;
        self.target.save(&target_path)?;
        Ok(weights)
    }

    /// The ISO dates of `sources`, decoded greedily in batches of 500: ten decoding steps per
    /// batch, each feeding every row's most likely next character (special ids excluded) back
    /// as the next position. `forward_cached` runs the encoder at the first step and keeps
    /// its output, and the decoder's earlier positions (its self-attention's keys and values):
    /// a later step costs one target position per decoder layer.
    pub fn translate(&self, sources: &[&str]) -> Result<Vec<String>, Box<dyn Error>> {
        let bos = self.bos()?;
        let mut out = Vec::with_capacity(sources.len());
        for chunk in sources.chunks(500) {
            let (src, src_len) = encode_sources(&self.source, chunk)?;
            let mut cache = self.model.decoder_cache(chunk.len(), TARGET_LEN)?;
            let mut next = Array2::<usize>::from_elem((chunk.len(), 1), bos);
            let mut decoded = Array2::<usize>::zeros((chunk.len(), TARGET_LEN));
            for t in 0..TARGET_LEN {
                let logits: Array3<f32> = self.model.forward_cached(
                    src.view(),
                    src_len.view(),
                    next.view(),
                    &mut cache,
                )?;
                for (row, scores) in logits.index_axis(Axis(1), 0).axis_iter(Axis(0)).enumerate() {
                    let best = self.best(scores);
                    decoded[[row, t]] = best;
                    next[[row, 0]] = best;
                }
            }
            out.extend(self.decode_rows(&decoded));
        }
        Ok(out)
    }

    /// [`Translator::translate`] without the decoding cache: ten whole `forward` passes per
    /// batch over the target decoded so far (later positions hold `<pad>`, which the causal
    /// mask keeps from the positions before them). The same translations, at ten target
    /// positions per decoder layer and step.
    pub fn translate_without_cache(&self, sources: &[&str]) -> Result<Vec<String>, Box<dyn Error>> {
        let bos = self.bos()?;
        let mut out = Vec::with_capacity(sources.len());
        for chunk in sources.chunks(500) {
            let (src, src_len) = encode_sources(&self.source, chunk)?;
            let mut tgt = Array2::<usize>::zeros((chunk.len(), TARGET_LEN));
            tgt.column_mut(0).fill(bos);
            let mut decoded = Array2::<usize>::zeros((chunk.len(), TARGET_LEN));
            for t in 0..TARGET_LEN {
                let logits: Array3<f32> =
                    self.model.forward(src.view(), src_len.view(), tgt.view())?;
                for (row, scores) in logits.index_axis(Axis(1), t).axis_iter(Axis(0)).enumerate() {
                    let best = self.best(scores);
                    decoded[[row, t]] = best;
                    if t + 1 < TARGET_LEN {
                        tgt[[row, t + 1]] = best;
                    }
                }
            }
            out.extend(self.decode_rows(&decoded));
        }
        Ok(out)
    }

    /// The target vocabulary's `<bos>`.
    fn bos(&self) -> Result<usize, Box<dyn Error>> {
        Ok(self
            .target
            .id("<bos>")
            .ok_or("the target vocabulary has no <bos>")?)
    }

    /// The most likely character of one position's scores, special ids excluded.
    fn best(&self, scores: ArrayView1<f32>) -> usize {
        let specials = self.target.specials().len();
        scores
            .iter()
            .enumerate()
            .skip(specials)
            .fold((specials, f32::NEG_INFINITY), |best, (id, &v)| {
                if v > best.1 {
                    (id, v)
                } else {
                    best
                }
            })
            .0
    }

    /// Each row of decoded ids as text.
    fn decode_rows(&self, decoded: &Array2<usize>) -> Vec<String> {
        decoded
            .axis_iter(Axis(0))
            .map(|row| self.target.decode(&row.to_vec()))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// The command line.
// ---------------------------------------------------------------------------------------------

struct Args {
    config: Config,
    no_train: bool,
    dates: Vec<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        config: Config::default(),
        no_train: false,
        dates: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--steps" => {
                let n = it.next().ok_or("--steps needs a number")?;
                args.config.steps = match n.parse() {
                    Ok(0) | Err(_) => {
                        return Err(format!("--steps: `{n}` is not a positive number"))
                    }
                    Ok(steps) => steps,
                };
            }
            "--out" => args.config.out = it.next().ok_or("--out needs a directory")?.into(),
            "--no-train" => args.no_train = true,
            "--quiet" => args.config.verbose = false,
            other if other.starts_with("--") => {
                return Err(format!(
                    "unknown option `{other}` (try --steps N, --out DIR, --no-train, --quiet)"
                ))
            }
            _ => args.dates.push(arg),
        }
    }
    Ok(args)
}

const USAGE: &str = "\
usage: cargo run --release --example translate -- [OPTIONS] [DATE ...]

Trains an encoder-decoder transformer to write dates as ISO dates, prints its exact-match
accuracy on held-out dates, saves it, and translates the DATEs.

  --steps N             training steps (default: 800)
  --out DIR             where the model is saved and loaded (default: target/kiln-translate)
  --no-train            translate with the model saved in DIR (an error if there is none)
  --quiet               no progress output
  -h, --help            this text
";

fn main() -> std::process::ExitCode {
    cli::main(USAGE, run)
}

fn run() -> Result<(), Box<dyn Error>> {
    let args = parse_args()?;
    let (weights, source_path, target_path) = files(&args.config.out);
    if args.no_train {
        cli::require_saved("--no-train", &[&weights, &source_path, &target_path])?;
        println!("using the model saved in {}", args.config.out.display());
    } else {
        let report = train(&args.config)?;
        println!(
            "\ntraining time:        {:.1} s ({} steps of {} pairs)",
            report.train_seconds, args.config.steps, args.config.batch
        );
        println!(
            "held-out exact match: {:.4} ({} pairs of dates never seen in training)",
            report.exact_match,
            report.test.len()
        );
        println!("held-out characters:  {:.4}", report.char_accuracy);
        println!("\nexact match by style:");
        for ((name, example), (accuracy, count)) in STYLES.iter().zip(&report.by_style) {
            println!("  {accuracy:.4} ({count:>3})  {name:<36} {example}");
        }
        println!("\nheld-out translations:");
        for (example, predicted) in report.test.iter().zip(&report.predictions).take(8) {
            let mark = if *predicted == example.target {
                "✓".to_string()
            } else {
                format!("✗ {}", example.target)
            };
            println!("  {:<46} → {predicted}  {mark}", example.source);
        }
        println!("\nweights:              {}", report.weights.display());
    }

    if !args.dates.is_empty() {
        let translator = Translator::load(&args.config.out)?;
        // A date the model cannot read is reported on its line; the others are translated.
        let checked: Vec<(&str, Result<(), String>)> = args
            .dates
            .iter()
            .map(|d| (d.as_str(), readable_source(d)))
            .collect();
        let readable: Vec<&str> = checked
            .iter()
            .filter(|(_, check)| check.is_ok())
            .map(|(date, _)| *date)
            .collect();
        let mut translations = translator.translate(&readable)?.into_iter();
        println!();
        for (date, check) in &checked {
            match check {
                Err(why) => println!("  {date:<46} ✗ {why}"),
                Ok(()) => {
                    if let Some(iso) = translations.next() {
                        println!("  {date:<46} → {iso}");
                    }
                }
            }
        }
    }
    Ok(())
}
