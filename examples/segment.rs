//! Semantic segmentation of handwritten digits: a small U-Net labels every pixel of a 64×64
//! canvas as background or as the digit (0–9) it belongs to.
//!
//! ```text
//! cargo run --release --example segment                  # train, evaluate, draw
//! cargo run --release --example segment -- --steps 600   # a shorter run
//! ```
//!
//! Options: `--steps N` (default 3,000), `--lr RATE` (Adam's peak rate, default 3e-3), `--out DIR`
//! (default `target/kiln-segment`), `--quiet`.
//!
//! Each image places 1–3 real MNIST digits (`examples/data/mnist10k`) at random positions and
//! sizes (20–36 pixels) on a 64×64 canvas, with noise; a pixel's label is the class of the digit
//! whose stroke covers it (grey level ≥ 0.5), or background. Training images use the 8,000
//! training digits and are drawn afresh for every batch; the held-out images use the 2,000 test
//! digits only. The model is a U-Net: two 3×3 convolutions per level, max-pooling down 64 → 32
//! → 16, transposed convolutions up, skip connections by `concat`, and a 1×1 convolution to 11
//! class scores per pixel, trained with per-pixel cross-entropy and Adam.
//!
//! It prints the model summary, the loss as it trains, then the intersection-over-union of
//! every class and their mean on 300 held-out images, saves the weights and writes
//! `segment.png`: rows of input, true mask and predicted mask.
//!
//! The model is declared on images of any size divisible by 4 (`[B, 1, 4 * H, 4 * W]`): it
//! trains on 64×64 canvases, and the same weights then segment 64×192 canvases holding three
//! times as many digits, whose mean IoU it prints too (and draws in `segment-wide.png`).

use kiln::data;
use kiln::ndarray::{s, Array2, Array3, Array4, ArrayView3, Axis};
use kiln::optim::{CosineAnnealing, LinearWarmup, LrSchedule};
use kiln::rand::rngs::StdRng;
use kiln::rand::{Rng, RngExt, SeedableRng};
use kiln::{Adam, Model, Optimizer};
use std::error::Error;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[allow(clippy::duplicate_mod)] // the examples test loads every example, each with it
#[path = "common/cli.rs"]
mod cli;

/// The side in pixels of the canvases the model trains on.
pub const SIDE: usize = 64;
/// The height and width of the wider canvases the trained model also segments.
pub const WIDE: (usize, usize) = (64, 192);
/// Background and the ten digits.
pub const CLASSES: usize = 11;

kiln::model! {
    /// A U-Net for single-channel images whose sides divide by 4 (it pools twice): per-pixel
    /// scores for 11 classes.
    pub struct UNet {
        input image: [B, 1, 4 * H, 4 * W];
        target mask: [B, 4 * H, 4 * W] classes 11;
        let e1a = relu(conv2d(image, 16, kernel = 3, padding = 1));
        let e1 = relu(conv2d(e1a, 16, kernel = 3, padding = 1));
        let e2a = relu(conv2d(max_pool2d(e1, 2), 32, kernel = 3, padding = 1));
        let e2 = relu(conv2d(e2a, 32, kernel = 3, padding = 1));
        let mida = relu(conv2d(max_pool2d(e2, 2), 64, kernel = 3, padding = 1));
        let mid = relu(conv2d(mida, 64, kernel = 3, padding = 1));
        let u2 = conv_transpose2d(mid, 32, kernel = 2, stride = 2);
        let d2a = relu(conv2d(concat(u2, e2, axis = 1), 32, kernel = 3, padding = 1));
        let d2 = relu(conv2d(d2a, 32, kernel = 3, padding = 1));
        let u1 = conv_transpose2d(d2, 16, kernel = 2, stride = 2);
        let d1a = relu(conv2d(concat(u1, e1, axis = 1), 16, kernel = 3, padding = 1));
        let d1 = relu(conv2d(d1a, 16, kernel = 3, padding = 1));
        let scores = conv2d(d1, 11, kernel = 1);
        output scores;
        loss cross_entropy(scores, mask);
    }
}

/// How the canvases are drawn and the model trained.
#[derive(Clone, Debug)]
pub struct Config {
    /// Training steps (one freshly drawn batch each).
    pub steps: usize,
    /// Images per batch.
    pub batch: usize,
    /// Adam's peak learning rate (linear warm-up, then cosine decay to a hundredth).
    pub lr: f64,
    /// Held-out images the IoU is measured on.
    pub test_images: usize,
    /// Seed of the weights and of the training canvases.
    pub seed: u64,
    /// Where the weights and the picture go.
    pub out: PathBuf,
    /// Print the summary and progress.
    pub verbose: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            steps: 3000,
            batch: 16,
            lr: 3e-3,
            test_images: 300,
            seed: 0,
            out: PathBuf::from("target/kiln-segment"),
            verbose: true,
        }
    }
}

/// What a run produced.
pub struct Outcome {
    /// Intersection over union per class (background first, then digits 0–9) on the
    /// held-out images; `None` for a class that appears in neither the truth nor the
    /// prediction.
    pub iou: Vec<Option<f64>>,
    /// The mean over the classes that appear.
    pub mean_iou: f64,
    /// Pixel accuracy on the held-out images.
    pub pixel_accuracy: f64,
    /// The IoU of digit strokes (any class) against background.
    pub foreground_iou: f64,
    /// Seconds spent training.
    pub train_seconds: f64,
    /// The mean IoU on held-out canvases of [`WIDE`] size, which training never saw.
    pub wide_mean_iou: f64,
    /// The trained weights.
    pub weights: PathBuf,
    /// The picture of inputs, true and predicted masks.
    pub picture: PathBuf,
    /// The same for the wide canvases.
    pub wide_picture: PathBuf,
}

/// Digits to draw from: 28×28 grey levels in [0, 1] and their classes.
pub struct DigitBank {
    images: Array3<f32>,
    labels: Vec<usize>,
}

impl DigitBank {
    /// The training and test digits of MNIST's gzip-compressed IDX files in `dir`.
    pub fn load(dir: &Path) -> Result<(Self, Self), Box<dyn Error>> {
        Ok((Self::read(dir, "train")?, Self::read(dir, "t10k")?))
    }

    fn read(dir: &Path, split: &str) -> Result<Self, Box<dyn Error>> {
        let images = data::read_idx_images(dir.join(format!("{split}-images-idx3-ubyte.gz")))?;
        let labels = data::read_idx_labels(dir.join(format!("{split}-labels-idx1-ubyte.gz")))?;
        if images.dim().1 != 28 || images.dim().2 != 28 || images.dim().0 != labels.len() {
            return Err(format!("{split}: expected as many 28×28 images as labels").into());
        }
        if labels.iter().any(|&c| c >= 10) {
            return Err(format!("{split}: a label is not a digit").into());
        }
        Ok(Self {
            images: images.mapv(|v| f32::from(v) / 255.0),
            labels: labels.iter().map(|&c| usize::from(c)).collect(),
        })
    }

    fn len(&self) -> usize {
        self.labels.len()
    }
}

/// Draws one canvas into `image` (grey levels) and `mask` (classes), both `[height, width]`
/// with sides of at least 36: 1–3 digits per 64×64 of area.
pub fn draw_canvas(
    bank: &DigitBank,
    rng: &mut impl Rng,
    image: &mut Array2<f32>,
    mask: &mut Array2<usize>,
) {
    image.fill(0.0);
    mask.fill(0);
    let (height, width) = image.dim();
    let room = (height * width).div_ceil(SIDE * SIDE).max(1);
    let digits = rng.random_range(room..=3 * room);
    let mut boxes: Vec<(usize, usize, usize)> = Vec::with_capacity(digits);
    for _ in 0..digits {
        // Rejection sampling keeps digits from covering one another much: a box may overlap
        // earlier ones by at most a fifth of its area.
        let Some((top, left, size)) = (0..50).find_map(|_| {
            let size = rng.random_range(20..=36);
            let top = rng.random_range(0..=height - size);
            let left = rng.random_range(0..=width - size);
            let overlap: usize = boxes
                .iter()
                .map(|&(t, l, s)| {
                    let h = (top + size).min(t + s).saturating_sub(top.max(t));
                    let w = (left + size).min(l + s).saturating_sub(left.max(l));
                    h * w
                })
                .sum();
            (overlap * 5 <= size * size).then_some((top, left, size))
        }) else {
            break;
        };
        boxes.push((top, left, size));
        let which = rng.random_range(0..bank.len());
        let digit = bank.images.index_axis(Axis(0), which);
        let class = bank.labels[which] + 1;
        for y in 0..size {
            for x in 0..size {
                let v = bilinear(
                    digit,
                    (y as f32 + 0.5) * 28.0 / size as f32 - 0.5,
                    (x as f32 + 0.5) * 28.0 / size as f32 - 0.5,
                );
                let (py, px) = (top + y, left + x);
                if v > image[[py, px]] {
                    image[[py, px]] = v;
                    if v >= 0.5 {
                        mask[[py, px]] = class;
                    }
                }
            }
        }
    }
    for v in image.iter_mut() {
        *v = (*v + rng.random_range(-0.2..0.2f32)).clamp(0.0, 1.0);
    }
}

/// The 28×28 `digit` sampled at (`y`, `x`) by bilinear interpolation, zero outside.
fn bilinear(digit: kiln::ndarray::ArrayView2<f32>, y: f32, x: f32) -> f32 {
    let at = |r: i64, c: i64| -> f32 {
        if (0..28).contains(&r) && (0..28).contains(&c) {
            digit[[r as usize, c as usize]]
        } else {
            0.0
        }
    };
    let (y0, x0) = (y.floor(), x.floor());
    let (fy, fx) = (y - y0, x - x0);
    let (r, c) = (y0 as i64, x0 as i64);
    (1.0 - fy) * ((1.0 - fx) * at(r, c) + fx * at(r, c + 1))
        + fy * ((1.0 - fx) * at(r + 1, c) + fx * at(r + 1, c + 1))
}

/// Fills a batch of canvases (of the batch's height and width).
fn draw_batch(
    bank: &DigitBank,
    rng: &mut impl Rng,
    images: &mut Array4<f32>,
    masks: &mut Array3<usize>,
) {
    let (_, height, width) = masks.dim();
    let mut image = Array2::zeros((height, width));
    let mut mask = Array2::zeros((height, width));
    for i in 0..images.shape()[0] {
        draw_canvas(bank, rng, &mut image, &mut mask);
        images.slice_mut(s![i, 0, .., ..]).assign(&image);
        masks.slice_mut(s![i, .., ..]).assign(&mask);
    }
}

/// Per-class intersection and union counts, accumulated over images.
#[derive(Clone, Debug)]
pub struct IouCounts {
    intersection: [u64; CLASSES],
    union: [u64; CLASSES],
    correct: u64,
    pixels: u64,
    /// Pixels that are a digit (any class) in the truth and in the prediction.
    foreground_both: u64,
    /// Pixels that are a digit in the truth or in the prediction.
    foreground_either: u64,
}

impl Default for IouCounts {
    fn default() -> Self {
        Self {
            intersection: [0; CLASSES],
            union: [0; CLASSES],
            correct: 0,
            pixels: 0,
            foreground_both: 0,
            foreground_either: 0,
        }
    }
}

impl IouCounts {
    /// Adds one batch: `truth` `[B, H, W]` classes and `predicted` of the same shape.
    pub fn add(&mut self, truth: ArrayView3<usize>, predicted: ArrayView3<usize>) {
        for (&t, &p) in truth.iter().zip(predicted.iter()) {
            self.pixels += 1;
            self.foreground_both += u64::from(t > 0 && p > 0);
            self.foreground_either += u64::from(t > 0 || p > 0);
            if t == p {
                self.correct += 1;
                self.intersection[t] += 1;
                self.union[t] += 1;
            } else {
                self.union[t] += 1;
                self.union[p] += 1;
            }
        }
    }

    /// IoU per class (`None` where the class is in neither truth nor prediction).
    pub fn iou(&self) -> Vec<Option<f64>> {
        (0..CLASSES)
            .map(|c| {
                (self.union[c] > 0).then(|| self.intersection[c] as f64 / self.union[c] as f64)
            })
            .collect()
    }

    /// The mean IoU over the classes that appear.
    pub fn mean_iou(&self) -> f64 {
        let present: Vec<f64> = self.iou().into_iter().flatten().collect();
        present.iter().sum::<f64>() / present.len().max(1) as f64
    }

    /// The IoU of "some digit" against background: how well strokes are found, whatever
    /// their class.
    pub fn foreground_iou(&self) -> f64 {
        self.foreground_both as f64 / self.foreground_either.max(1) as f64
    }

    /// The fraction of pixels labelled right.
    pub fn pixel_accuracy(&self) -> f64 {
        self.correct as f64 / self.pixels.max(1) as f64
    }
}

/// The class of highest score per pixel: `[B, C, H, W]` → `[B, H, W]`.
pub fn argmax_classes(scores: kiln::ndarray::ArrayView4<f32>) -> Array3<usize> {
    let (b, c, h, w) = scores.dim();
    Array3::from_shape_fn((b, h, w), |(i, y, x)| {
        (0..c)
            .max_by(|&p, &q| scores[[i, p, y, x]].total_cmp(&scores[[i, q, y, x]]))
            .unwrap_or(0)
    })
}

/// Trains the U-Net with `config`, then measures IoU on held-out canvases and writes the
/// weights and the picture.
pub fn train(config: &Config) -> Result<Outcome, Box<dyn Error>> {
    let mnist = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/mnist10k");
    let (train_bank, test_bank) = DigitBank::load(&mnist)?;
    let mut model = UNet::<f32>::new(&mut StdRng::seed_from_u64(config.seed));
    if config.verbose {
        println!("{}\n", model.summary());
        println!(
            "{} training digits, {} test digits; {} steps of {} fresh canvases\n",
            train_bank.len(),
            test_bank.len(),
            config.steps,
            config.batch
        );
    }
    let mut optimizer = Adam::new(config.lr);
    let warmup = (config.steps / 20).max(1).min(config.steps);
    let schedule = LinearWarmup::steps(
        warmup,
        CosineAnnealing::new(config.steps - warmup, config.lr / 100.0).per_step(),
    );
    let mut rng = StdRng::seed_from_u64(config.seed + 1);
    let mut images = Array4::zeros((config.batch, 1, SIDE, SIDE));
    let mut masks = Array3::zeros((config.batch, SIDE, SIDE));
    let (mut ws, mut grads) = (model.workspace(), model.zero_grads());
    let (mut loss_sum, mut losses) = (0.0f64, 0usize);
    let mut train_seconds = 0.0;
    let log_every = (config.steps / 10).max(1);
    for step in 0..config.steps {
        draw_batch(&train_bank, &mut rng, &mut images, &mut masks);
        let start = Instant::now();
        optimizer.set_learning_rate(schedule.lr(0, step, config.lr));
        let loss = model.loss_and_grad(images.view(), masks.view(), &mut ws, &mut grads)?;
        optimizer.step(&mut model, &grads);
        train_seconds += start.elapsed().as_secs_f64();
        if !loss.is_finite() {
            return Err(format!("the loss diverged at step {}: {loss}", step + 1).into());
        }
        loss_sum += f64::from(loss);
        losses += 1;
        if config.verbose && ((step + 1) % log_every == 0 || step + 1 == config.steps) {
            println!(
                "step {:>5}  lr {:.2e}  loss {:.4}  ({:.1} s)",
                step + 1,
                optimizer.learning_rate(),
                loss_sum / losses as f64,
                train_seconds
            );
            (loss_sum, losses) = (0.0, 0);
        }
    }

    // Held-out canvases from the test digits, with a seed of their own: the training size,
    // then wider ones.
    let mut test_rng = StdRng::seed_from_u64(config.seed + 1_000_003);
    let (counts, shown) = evaluate(
        &model,
        &test_bank,
        &mut test_rng,
        (SIDE, SIDE),
        config.test_images,
    )?;
    let wide_images = config.test_images / 5;
    let (wide_counts, wide_shown) = evaluate(&model, &test_bank, &mut test_rng, WIDE, wide_images)?;

    std::fs::create_dir_all(&config.out)?;
    let weights = config.out.join("unet.safetensors");
    kiln::io::save(&model, &weights)?;
    let picture = config.out.join("segment.png");
    let wide_picture = config.out.join("segment-wide.png");
    for (path, shown, rows) in [(&picture, shown, 8), (&wide_picture, wide_shown, 4)] {
        if let Some((images, truth, predicted)) = shown {
            write_picture(path, images.view(), truth.view(), predicted.view(), rows)?;
        }
    }
    Ok(Outcome {
        iou: counts.iou(),
        mean_iou: counts.mean_iou(),
        pixel_accuracy: counts.pixel_accuracy(),
        foreground_iou: counts.foreground_iou(),
        train_seconds,
        wide_mean_iou: wide_counts.mean_iou(),
        weights,
        picture,
        wide_picture,
    })
}

/// Canvases drawn with their labels, and the model's classes for them.
type Shown = (Array4<f32>, Array3<usize>, Array3<usize>);

/// The IoU counts of the model's classes on `count` held-out canvases of `(height, width)`,
/// and the first batch for a picture.
fn evaluate(
    model: &UNet<f32>,
    bank: &DigitBank,
    rng: &mut StdRng,
    (height, width): (usize, usize),
    count: usize,
) -> Result<(IouCounts, Option<Shown>), Box<dyn Error>> {
    let batch = 25;
    let mut counts = IouCounts::default();
    let mut images = Array4::zeros((batch, 1, height, width));
    let mut masks = Array3::zeros((batch, height, width));
    let mut shown = None;
    for _ in 0..count.div_ceil(batch) {
        draw_batch(bank, rng, &mut images, &mut masks);
        let scores = model.forward(images.view())?;
        let predicted = argmax_classes(scores.view());
        counts.add(masks.view(), predicted.view());
        if shown.is_none() {
            shown = Some((images.clone(), masks.clone(), predicted));
        }
    }
    Ok((counts, shown))
}

/// One colour per class: black background, ten distinct hues for the digits.
const PALETTE: [[u8; 3]; CLASSES] = [
    [0, 0, 0],
    [230, 25, 75],
    [60, 180, 75],
    [255, 225, 25],
    [0, 130, 200],
    [245, 130, 48],
    [145, 30, 180],
    [70, 240, 240],
    [240, 50, 230],
    [210, 245, 60],
    [250, 190, 212],
];

/// Writes `rows` canvases as a PNG grid: input, true mask, predicted mask, each 2× enlarged.
fn write_picture(
    path: &Path,
    images: kiln::ndarray::ArrayView4<f32>,
    truth: ArrayView3<usize>,
    predicted: ArrayView3<usize>,
    rows: usize,
) -> Result<(), Box<dyn Error>> {
    const ZOOM: usize = 2;
    const GAP: usize = 4;
    let rows = rows.min(images.shape()[0]);
    let (cell_h, cell_w) = (images.shape()[2] * ZOOM, images.shape()[3] * ZOOM);
    let width = 3 * cell_w + 4 * GAP;
    let height = rows * cell_h + (rows + 1) * GAP;
    let mut rgb = vec![255u8; width * height * 3];
    for r in 0..rows {
        for (column, colour) in (0..3).map(|c| (c, c)) {
            let (top, left) = (GAP + r * (cell_h + GAP), GAP + column * (cell_w + GAP));
            for y in 0..cell_h {
                for x in 0..cell_w {
                    let (sy, sx) = (y / ZOOM, x / ZOOM);
                    let pixel = match colour {
                        0 => {
                            let g = (images[[r, 0, sy, sx]].clamp(0.0, 1.0) * 255.0) as u8;
                            [g, g, g]
                        }
                        1 => PALETTE[truth[[r, sy, sx]]],
                        _ => PALETTE[predicted[[r, sy, sx]]],
                    };
                    let at = ((top + y) * width + left + x) * 3;
                    rgb[at..at + 3].copy_from_slice(&pixel);
                }
            }
        }
    }
    kiln::image::write_rgb_png(path, width as u32, height as u32, &rgb)?;
    Ok(())
}

fn parse_args() -> Result<Config, String> {
    let mut config = Config::default();
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |what: &str| it.next().ok_or(format!("{arg} needs {what}"));
        match arg.as_str() {
            "--steps" => {
                let n = value("a number")?;
                config.steps = n
                    .parse()
                    .map_err(|_| format!("--steps: `{n}` is not a number"))?;
            }
            "--lr" => {
                let n = value("a number")?;
                config.lr = n
                    .parse()
                    .map_err(|_| format!("--lr: `{n}` is not a number"))?;
            }
            "--out" => config.out = value("a directory")?.into(),
            "--quiet" => config.verbose = false,
            other => {
                return Err(format!(
                    "unknown argument `{other}` (try --steps N, --lr RATE, --out DIR, --quiet)"
                ))
            }
        }
    }
    Ok(config)
}

const USAGE: &str = "\
usage: cargo run --release --example segment -- [OPTIONS]

Trains a U-Net to label every pixel of 64x64 canvases of real MNIST digits, prints the
per-class and mean IoU on held-out images (and the mean on wider 64x192 canvases), and draws
inputs, true and predicted masks as PNGs.

  --steps N             training steps (default: 3000)
  --lr RATE             Adam's peak learning rate (default: 3e-3)
  --out DIR             where the model and the PNG go (default: target/kiln-segment)
  --quiet               no progress output
  -h, --help            this text
";

fn main() -> std::process::ExitCode {
    cli::main(USAGE, run)
}

fn run() -> Result<(), Box<dyn Error>> {
    let config = parse_args()?;
    let outcome = train(&config)?;
    println!(
        "\nintersection over union on {} held-out images:",
        config.test_images
    );
    let names =
        std::iter::once("background".to_string()).chain((0..10).map(|d| format!("digit {d}")));
    for (name, iou) in names.zip(&outcome.iou) {
        match iou {
            Some(iou) => println!("  {name:<11} {iou:.3}"),
            None => println!("  {name:<11} (absent)"),
        }
    }
    println!(
        "mean IoU {:.3}, pixel accuracy {:.3}",
        outcome.mean_iou, outcome.pixel_accuracy
    );
    println!(
        "mean IoU {:.3} on {} held-out {}x{} canvases (the same weights, never trained on that size)",
        outcome.wide_mean_iou,
        config.test_images / 5,
        WIDE.0,
        WIDE.1
    );
    println!("training: {:.1} s", outcome.train_seconds);
    println!("weights:  {}", outcome.weights.display());
    println!("picture:  {}", outcome.picture.display());
    println!("wide:     {}", outcome.wide_picture.display());
    Ok(())
}
