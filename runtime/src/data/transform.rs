//! Preprocessing: train/test splits, standardization, scaling, one-hot encoding.

use super::loader::{permutation, shuffle_in_place};
use super::{Dataset, TensorDataset};
use crate::{Error, Float, Result};
use ndarray::{Array1, Array2, ArrayViewMutD};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// The number of test samples out of `n` for `test_fraction` (clamped to `[0, 1]`, NaN as 0).
fn test_count(n: usize, test_fraction: f64) -> usize {
    let fraction = if test_fraction.is_nan() {
        0.0
    } else {
        test_fraction.clamp(0.0, 1.0)
    };
    // Exact for every n below 2^53; `min` guards the rounding of the product anyway.
    ((n as f64 * fraction).round() as usize).min(n)
}

/// Splits `dataset` at random into a training set and a test set holding
/// `round(len × test_fraction)` samples, both in shuffled order. The split depends only on
/// `seed` (and the `rand` version).
///
/// `test_fraction` is clamped to `[0, 1]` (NaN counts as 0), so the call cannot fail.
///
/// ```
/// use kiln_runtime::data::{self, Dataset};
/// # fn main() -> kiln_runtime::Result<()> {
/// let (train, test) = data::train_test_split(&data::iris::<f32>()?, 0.2, 0);
/// assert_eq!((train.len(), test.len()), (120, 30));
/// # Ok(())
/// # }
/// ```
pub fn train_test_split<F: Float>(
    dataset: &TensorDataset<F>,
    test_fraction: f64,
    seed: u64,
) -> (TensorDataset<F>, TensorDataset<F>) {
    let n = dataset.len();
    let order = permutation(n, &mut StdRng::seed_from_u64(seed));
    let (test, train) = order.split_at(test_count(n, test_fraction));
    (dataset.gather(train), dataset.gather(test))
}

/// Like [`train_test_split`], but keeps each class's share the same in both parts: every
/// class contributes `round(count × test_fraction)` of its samples to the test set (so the
/// test set's size may differ from `round(len × test_fraction)` by up to half the number of
/// classes). Both parts are shuffled, so the classes are interleaved.
///
/// A data set with value targets has no classes to stratify by; it is split as by
/// [`train_test_split`].
///
/// ```
/// use kiln_runtime::data::{self, Dataset};
/// # fn main() -> kiln_runtime::Result<()> {
/// let (train, test) = data::stratified_split(&data::iris::<f64>()?, 0.2, 0);
/// assert_eq!(train.class_counts(), Some(vec![40, 40, 40]));
/// assert_eq!(test.class_counts(), Some(vec![10, 10, 10]));
/// # Ok(())
/// # }
/// ```
pub fn stratified_split<F: Float>(
    dataset: &TensorDataset<F>,
    test_fraction: f64,
    seed: u64,
) -> (TensorDataset<F>, TensorDataset<F>) {
    let (Some(labels), Some(classes)) = (dataset.labels(), dataset.classes()) else {
        return train_test_split(dataset, test_fraction, seed);
    };
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (index, &label) in labels.iter().enumerate() {
        by_class[label].push(index);
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for mut members in by_class {
        shuffle_in_place(&mut members, &mut rng);
        let (class_test, class_train) = members.split_at(test_count(members.len(), test_fraction));
        test.extend_from_slice(class_test);
        train.extend_from_slice(class_train);
    }
    shuffle_in_place(&mut train, &mut rng);
    shuffle_in_place(&mut test, &mut rng);
    (dataset.gather(&train), dataset.gather(&test))
}

/// Per-feature standardization, `(x - mean) / std`, with the mean and (population) standard
/// deviation of each feature position measured on a training set, then applied unchanged to
/// every other set (so that the test set is scaled as the model saw the training set).
///
/// A feature that is constant on the training set gets a standard deviation of 1, so it is
/// only centred, never divided by zero.
///
/// ```
/// use kiln_runtime::data::{Standardizer, TensorDataset};
/// use ndarray::{array, Array1};
/// # fn main() -> kiln_runtime::Result<()> {
/// let mut data = TensorDataset::with_labels(array![[1.0, 5.0], [3.0, 5.0]], Array1::zeros(2), 1)?;
/// let standardizer = Standardizer::fit(&data);
/// assert_eq!(standardizer.mean(), &array![2.0, 5.0]);
/// assert_eq!(standardizer.std(), &array![1.0, 1.0]); // the second feature is constant
/// standardizer.transform(&mut data)?;
/// assert_eq!(data.features(), &array![[-1.0, 0.0], [1.0, 0.0]].into_dyn());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Standardizer<F> {
    mean: Array1<F>,
    std: Array1<F>,
}

impl<F: Float> Standardizer<F> {
    /// Measures the mean and standard deviation of every feature position (every element of
    /// a sample, flattened row-major) over `dataset`. An empty data set gives mean 0 and
    /// standard deviation 1 everywhere.
    pub fn fit(dataset: &TensorDataset<F>) -> Self {
        let size = dataset.sample_size();
        let n = dataset.len();
        // Two passes in f64: the one-pass formula loses the variance of features whose mean
        // is large next to their spread.
        let mut mean = vec![0f64; size];
        let mut var = vec![0f64; size];
        if n > 0 {
            let rows = || dataset.features().outer_iter();
            for row in rows() {
                for (m, &v) in mean.iter_mut().zip(row.iter()) {
                    *m += v.to_f64();
                }
            }
            mean.iter_mut().for_each(|m| *m /= n as f64);
            for row in rows() {
                for ((s, &m), &v) in var.iter_mut().zip(&mean).zip(row.iter()) {
                    *s += (v.to_f64() - m).powi(2);
                }
            }
        }
        let std = var.iter().zip(&mean).map(|(&s, &m)| {
            let std = (s / n.max(1) as f64).sqrt();
            // Rounding leaves a constant feature a spread of a few ulps of its mean in f64;
            // dividing by that would blow noise up to unit scale.
            if std <= m.abs() * 1e-12 || std == 0.0 {
                F::ONE
            } else {
                F::from_f64(std)
            }
        });
        Standardizer {
            std: std.collect(),
            mean: mean.into_iter().map(F::from_f64).collect(),
        }
    }

    /// The mean of every feature position (length = the sample size).
    pub fn mean(&self) -> &Array1<F> {
        &self.mean
    }

    /// The standard deviation of every feature position, 1 where the feature was constant.
    pub fn std(&self) -> &Array1<F> {
        &self.std
    }

    /// Standardizes the features of `dataset` in place.
    ///
    /// # Errors
    /// [`Error::Shape`] if its samples do not have as many elements as the fitted ones (the
    /// data set is then unchanged).
    pub fn transform(&self, dataset: &mut TensorDataset<F>) -> Result<()> {
        self.transform_array(dataset.features_mut())
    }

    /// Standardizes an array of samples in place: shape `[n, sample_shape..]`, for example a
    /// [`Batch`](super::Batch)'s `x` at inference time:
    /// `standardizer.transform_array(batch.x.view_mut())`.
    ///
    /// # Errors
    /// [`Error::Shape`] if `x` has no sample axis or its samples do not have as many elements
    /// as the fitted ones (`x` is then unchanged).
    pub fn transform_array(&self, mut x: ArrayViewMutD<'_, F>) -> Result<()> {
        let size: Option<usize> = x.shape().get(1..).map(|s| s.iter().product());
        if size != Some(self.mean.len()) {
            return Err(Error::Shape {
                kind: "input",
                name: "standardizer",
                expected: format!("[N, ..] with {} elements per sample", self.mean.len()),
                actual: x.shape().to_vec(),
                detail: ": the standardizer was fitted on samples of another size".into(),
            });
        }
        for mut row in x.outer_iter_mut() {
            for ((v, &m), &s) in row.iter_mut().zip(&self.mean).zip(&self.std) {
                *v = (*v - m) / s;
            }
        }
        Ok(())
    }
}

/// Multiplies every feature of `dataset` by `factor` (for example `1.0 / 255.0` for byte
/// pixels).
pub fn scale<F: Float>(dataset: &mut TensorDataset<F>, factor: F) {
    dataset.features_mut().mapv_inplace(|v| v * factor);
}

/// One-hot encodes class labels: row `i` of the `[labels, classes]` result is 1 in column
/// `labels[i]` and 0 elsewhere. Accepts anything that iterates over `&usize` (a slice, a
/// `Vec`, an `Array1`).
///
/// ```
/// use kiln_runtime::data::one_hot;
/// use ndarray::array;
/// # fn main() -> kiln_runtime::Result<()> {
/// assert_eq!(one_hot::<f32>(&[2, 0], 3)?, array![[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]);
/// assert!(one_hot::<f32>(&[3], 3).is_err());
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// [`Error::Label`] for the first label that is not below `classes`.
pub fn one_hot<'a, F: Float>(
    labels: impl IntoIterator<Item = &'a usize>,
    classes: usize,
) -> Result<Array2<F>> {
    let mut data = Vec::new();
    let mut rows = 0;
    for (index, &label) in labels.into_iter().enumerate() {
        if label >= classes {
            return Err(Error::Label {
                name: "one_hot",
                position: vec![index],
                label,
                classes,
                ignored: None,
            });
        }
        let start = data.len();
        data.resize(start + classes, F::ZERO);
        data[start + label] = F::ONE;
        rows += 1;
    }
    Ok(Array2::from_shape_vec((rows, classes), data)
        .expect("one row of `classes` elements was pushed per label"))
}
