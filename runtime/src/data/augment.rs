//! Random changes to training images, drawn anew for every sample in every epoch:
//! torchvision's `RandomCrop(size, padding)`, `RandomHorizontalFlip`, `RandomVerticalFlip`
//! and Keras' `GaussianNoise`, as one pipeline that [`Trainer::augment`](crate::train::Trainer::augment)
//! applies to each training batch (never to validation or test data).
//!
//! Images are the trailing two axes of each sample (`[C, H, W]` or `[H, W]`). What a sample
//! gets depends only on the pipeline's seed, the epoch and the sample's index in its data set:
//! not on the batch it lands in, the shuffling, or the rank that trains it, so a run repeats
//! exactly, and a data-parallel run augments as one process does. Everything is done in place;
//! nothing is allocated.

use super::loader::mix64;
use crate::init::StandardNormal;
use crate::{Error, Float, Result};
use ndarray::ArrayViewMutD;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// One step of an [`Augment`] pipeline.
#[derive(Clone, Debug, PartialEq)]
enum Step {
    /// Zero-pad by `padding` on every side, then crop back to the image's size at a random
    /// place: a random shift of up to `padding` pixels each way, zeros coming in.
    RandomCrop { padding: usize },
    /// Mirror left to right with probability `p`.
    HorizontalFlip { p: f64 },
    /// Mirror top to bottom with probability `p`.
    VerticalFlip { p: f64 },
    /// Add normal noise of standard deviation `std` to every value.
    GaussianNoise { std: f64 },
}

/// A pipeline of random changes to training images, applied in the order they are added.
///
/// ```
/// use kiln_runtime::data::Augment;
/// use kiln_runtime::ndarray::Array4;
/// let augment = Augment::new().random_crop(2).horizontal_flip(0.5).seed(7);
/// // Two 1-channel 8 × 8 images, samples 0 and 1 of their data set, in epoch 3.
/// let mut images = Array4::<f32>::ones((2, 1, 8, 8)).into_dyn();
/// augment.apply(images.view_mut(), &[0, 1], 3).unwrap();
/// // Shifted by up to 2 pixels: at most 2 of 8 rows and columns are zeros coming in.
/// assert!(images.iter().filter(|&&v| v == 1.0).count() >= 2 * 6 * 6);
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Augment {
    steps: Vec<Step>,
    seed: u64,
}

impl Augment {
    /// An empty pipeline (it changes nothing), seed 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// torchvision's `RandomCrop(size, padding = padding)` with the image's own size: the
    /// image zero-padded by `padding` on each side, then cropped back at a random place, so
    /// it moves by up to `padding` pixels each way (Keras: `RandomTranslation` with
    /// `fill_mode = "constant"`).
    pub fn random_crop(mut self, padding: usize) -> Self {
        self.steps.push(Step::RandomCrop { padding });
        self
    }

    /// torchvision's `RandomHorizontalFlip(p)`: mirrored left to right with probability `p`
    /// (Keras' `RandomFlip("horizontal")` is `p = 0.5`).
    pub fn horizontal_flip(mut self, p: f64) -> Self {
        self.steps.push(Step::HorizontalFlip { p });
        self
    }

    /// torchvision's `RandomVerticalFlip(p)`: mirrored top to bottom with probability `p`.
    pub fn vertical_flip(mut self, p: f64) -> Self {
        self.steps.push(Step::VerticalFlip { p });
        self
    }

    /// Keras' `GaussianNoise(std)`: normal noise of standard deviation `std` added to every
    /// value.
    pub fn gaussian_noise(mut self, std: f64) -> Self {
        self.steps.push(Step::GaussianNoise { std });
        self
    }

    /// The seed the random draws start from (default 0).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Whether the pipeline changes nothing.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Checks that samples of shape `sample` are images this pipeline can change, and its
    /// settings: an error naming the step and the shape otherwise.
    ///
    /// # Errors
    /// [`Error::Data`] for samples of fewer than two axes, a crop padding of at least the
    /// image's height or width, a probability outside `[0, 1]`, or a negative or non-finite
    /// noise level.
    pub fn check(&self, sample: &[usize]) -> Result<()> {
        let problem = |problem: String| Error::Data {
            what: "augment",
            problem,
        };
        if self.is_empty() {
            return Ok(());
        }
        let [.., h, w] = sample else {
            return Err(problem(format!(
                "the samples are of shape {sample:?}, not images: augmentation changes the last two axes (height and width) of samples like [C, H, W]; reshape them first (TensorDataset::reshape_samples)"
            )));
        };
        for step in &self.steps {
            match *step {
                Step::RandomCrop { padding } if padding >= *h || padding >= *w => {
                    return Err(problem(format!(
                        "random_crop({padding}) of {h} × {w} images: the padding must be smaller than the height and the width"
                    )))
                }
                Step::HorizontalFlip { p } | Step::VerticalFlip { p } if !(0.0..=1.0).contains(&p) => {
                    return Err(problem(format!("a flip's probability is {p}, not in [0, 1]")))
                }
                Step::GaussianNoise { std } if !(std >= 0.0 && std.is_finite()) => {
                    return Err(problem(format!(
                        "gaussian_noise({std}): the standard deviation must be finite and at least 0"
                    )))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Changes `images` (`[B, sample..]`, the samples of the data set at `indices`) in place,
    /// as epoch `epoch` draws them.
    ///
    /// # Errors
    /// As [`Augment::check`] for the samples' shape; [`Error::Data`] if `indices` does not
    /// hold one index per sample.
    pub fn apply<F: Float>(
        &self,
        mut images: ArrayViewMutD<'_, F>,
        indices: &[usize],
        epoch: usize,
    ) -> Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        let shape = images.shape().to_vec();
        self.check(&shape[1.min(shape.len())..])?;
        if indices.len() != shape[0] {
            return Err(Error::Data {
                what: "augment",
                problem: format!(
                    "{} indices for a batch of {} samples",
                    indices.len(),
                    shape[0]
                ),
            });
        }
        let (h, w) = (shape[shape.len() - 2], shape[shape.len() - 1]);
        let Some(data) = images.as_slice_mut() else {
            return Err(Error::Data {
                what: "augment",
                problem: "the batch is not laid out in order in memory".to_string(),
            });
        };
        let per_sample = data.len() / indices.len().max(1);
        for (sample, &index) in data.chunks_exact_mut(per_sample.max(1)).zip(indices) {
            let mut rng = StdRng::seed_from_u64(sample_seed(self.seed, epoch, index));
            for step in &self.steps {
                apply_step(step, sample, h, w, &mut rng);
            }
        }
        Ok(())
    }
}

/// The seed of one sample's draws: the pipeline's seed, the epoch and the sample's index,
/// mixed so that neighbouring samples and epochs draw unrelated values.
fn sample_seed(seed: u64, epoch: usize, index: usize) -> u64 {
    mix64(
        seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ (index as u64).wrapping_mul(0xD1B5_4A32_D192_ED03),
    )
}

/// One step on one sample (its planes of `h × w`, one per channel), drawing from `rng`.
fn apply_step<F: Float>(step: &Step, sample: &mut [F], h: usize, w: usize, rng: &mut StdRng) {
    let planes = sample.chunks_exact_mut(h * w);
    match *step {
        Step::RandomCrop { padding } => {
            // The crop's corner in the padded image: the image moves by `padding - corner`.
            let p = padding as isize;
            let dy = p - rng.random_range(0..=2 * padding) as isize;
            let dx = p - rng.random_range(0..=2 * padding) as isize;
            planes.for_each(|plane| shift_plane(plane, h, w, dy, dx));
        }
        Step::HorizontalFlip { p } => {
            if rng.random::<f64>() < p {
                planes.for_each(|plane| plane.chunks_exact_mut(w).for_each(<[F]>::reverse));
            }
        }
        Step::VerticalFlip { p } => {
            if rng.random::<f64>() < p {
                for plane in planes {
                    for y in 0..h / 2 {
                        let (top, bottom) = plane.split_at_mut((h - 1 - y) * w);
                        top[y * w..(y + 1) * w].swap_with_slice(&mut bottom[..w]);
                    }
                }
            }
        }
        Step::GaussianNoise { std } => {
            let mut normal = StandardNormal::new();
            for v in sample.iter_mut() {
                *v += F::from_f64(std * normal.sample(rng));
            }
        }
    }
}

/// Moves a plane of `h × w` by `dy` rows down and `dx` columns right in place (`out[y][x] =
/// in[y - dy][x - dx]`), zeros coming in. Rows are visited so that each is read before it is
/// overwritten: from the bottom when moving down, from the top otherwise.
fn shift_plane<F: Float>(plane: &mut [F], h: usize, w: usize, dy: isize, dx: isize) {
    let (hi, wi) = (h as isize, w as isize);
    // The columns that receive a value, and where their source starts.
    let (x0, x1) = (dx.clamp(0, wi) as usize, (wi + dx).clamp(0, wi) as usize);
    let mut move_row = |y: usize| {
        let row = y * w;
        let source = y as isize - dy;
        if !(0..hi).contains(&source) || x0 >= x1 {
            plane[row..row + w].fill(F::ZERO);
            return;
        }
        let from = source as usize * w + (x0 as isize - dx) as usize;
        plane.copy_within(from..from + (x1 - x0), row + x0);
        plane[row..row + x0].fill(F::ZERO);
        plane[row + x1..row + w].fill(F::ZERO);
    };
    if dy > 0 {
        (0..h).rev().for_each(&mut move_row);
    } else {
        (0..h).for_each(&mut move_row);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array, Array4};

    /// The reference: every pixel read from where it comes, or 0.
    fn shifted(x: &[f64], h: usize, w: usize, dy: isize, dx: isize) -> Vec<f64> {
        let mut out = vec![0.0; h * w];
        for y in 0..h as isize {
            for c in 0..w as isize {
                let (sy, sx) = (y - dy, c - dx);
                if (0..h as isize).contains(&sy) && (0..w as isize).contains(&sx) {
                    out[(y * w as isize + c) as usize] = x[(sy * w as isize + sx) as usize];
                }
            }
        }
        out
    }

    #[test]
    fn shifts_move_every_pixel_and_bring_in_zeros() {
        let (h, w) = (5, 4);
        let x: Vec<f64> = (1..=h * w).map(|v| v as f64).collect();
        for dy in -5..=5 {
            for dx in -4..=4 {
                let mut plane = x.clone();
                shift_plane(&mut plane, h, w, dy, dx);
                assert_eq!(plane, shifted(&x, h, w, dy, dx), "shift by ({dy}, {dx})");
            }
        }
    }

    #[test]
    fn flips_mirror_and_undo_themselves() {
        let x = Array::from_shape_fn((1, 2, 3, 4), |(_, c, y, x)| (c * 100 + y * 10 + x) as f64)
            .into_dyn();
        let mut flipped = x.clone();
        let both = Augment::new().horizontal_flip(1.0).vertical_flip(1.0);
        both.apply(flipped.view_mut(), &[0], 0).unwrap();
        assert_eq!(flipped[[0, 1, 0, 0]], 123.0);
        assert_eq!(flipped[[0, 0, 2, 1]], 2.0);
        both.apply(flipped.view_mut(), &[0], 5).unwrap();
        assert_eq!(flipped, x);
        let mut kept = x.clone();
        let never = Augment::new().horizontal_flip(0.0).vertical_flip(0.0);
        never.apply(kept.view_mut(), &[0], 0).unwrap();
        assert_eq!(kept, x);
    }

    #[test]
    fn draws_depend_on_the_sample_and_the_epoch_only() {
        let augment = Augment::new()
            .random_crop(3)
            .horizontal_flip(0.5)
            .gaussian_noise(0.1)
            .seed(11);
        let image = |i: usize| {
            Array::from_shape_fn((1, 1, 8, 8), |(_, _, y, x)| (i * 64 + y * 8 + x) as f64)
        };
        // Samples 4 and 9 together, or each alone: the same result.
        let mut pair = ndarray::concatenate(ndarray::Axis(0), &[image(4).view(), image(9).view()])
            .unwrap()
            .into_dyn();
        augment.apply(pair.view_mut(), &[4, 9], 2).unwrap();
        for (row, i) in [(0, 4), (1, 9)] {
            let mut alone = image(i).into_dyn();
            augment.apply(alone.view_mut(), &[i], 2).unwrap();
            assert_eq!(
                pair.index_axis(ndarray::Axis(0), row),
                alone.index_axis(ndarray::Axis(0), 0)
            );
        }
        // Another epoch draws again.
        let mut later = image(4).into_dyn();
        augment.apply(later.view_mut(), &[4], 3).unwrap();
        assert_ne!(
            later.index_axis(ndarray::Axis(0), 0),
            pair.index_axis(ndarray::Axis(0), 0)
        );
    }

    #[test]
    fn crops_of_every_offset_occur_and_channels_move_together() {
        let augment = Augment::new().random_crop(1);
        let mut seen = std::collections::HashSet::new();
        for epoch in 0..200 {
            let mut x =
                Array4::from_shape_fn((1, 2, 3, 3), |(_, c, y, x)| (1 + c * 9 + y * 3 + x) as f64)
                    .into_dyn();
            augment.apply(x.view_mut(), &[0], epoch).unwrap();
            // Where the centre pixel (5 in channel 0, 14 in channel 1) went.
            let at = |v: f64| x.iter().position(|&p| p == v).unwrap();
            assert_eq!(at(5.0) + 9, at(14.0), "the channels moved apart");
            seen.insert(at(5.0));
        }
        assert_eq!(seen.len(), 9, "every shift of up to one pixel each way");
    }

    #[test]
    fn noise_has_the_asked_spread() {
        let augment = Augment::new().gaussian_noise(0.5);
        let mut x = Array4::<f64>::zeros((4, 1, 16, 16)).into_dyn();
        augment.apply(x.view_mut(), &[0, 1, 2, 3], 0).unwrap();
        let n = x.len() as f64;
        let mean = x.sum() / n;
        let std = (x.mapv(|v| (v - mean) * (v - mean)).sum() / n).sqrt();
        assert!(
            mean.abs() < 0.05 && (std - 0.5).abs() < 0.03,
            "mean {mean}, std {std}"
        );
    }

    #[test]
    fn bad_shapes_and_settings_are_errors() {
        let flat = |a: Augment| {
            let mut x = Array::<f32, _>::zeros((2, 64)).into_dyn();
            a.apply(x.view_mut(), &[0, 1], 0).unwrap_err().to_string()
        };
        assert!(flat(Augment::new().horizontal_flip(0.5)).contains("not images"));
        assert!(Augment::new().random_crop(8).check(&[1, 8, 8]).is_err());
        assert!(Augment::new()
            .horizontal_flip(1.5)
            .check(&[1, 8, 8])
            .is_err());
        assert!(Augment::new()
            .gaussian_noise(f64::NAN)
            .check(&[8, 8])
            .is_err());
        assert!(
            Augment::new().check(&[64]).is_ok(),
            "an empty pipeline takes anything"
        );
        let mut x = Array::<f32, _>::zeros((2, 4, 4)).into_dyn();
        let err = Augment::new().random_crop(1).apply(x.view_mut(), &[0], 0);
        assert!(err
            .unwrap_err()
            .to_string()
            .contains("1 indices for a batch of 2"));
    }
}
