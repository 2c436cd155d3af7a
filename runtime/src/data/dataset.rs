//! [`TensorDataset`]: samples held in memory as one `ndarray` array of features (first axis =
//! samples) and one array of targets.

use super::{Dataset, TargetKind, TargetMut};
use crate::{Error, Float, Result};
use ndarray::{Array, Array1, ArrayD, ArrayViewMutD, Axis, Dimension, IxDyn};

/// The targets of a [`TensorDataset`].
#[derive(Clone, Debug, PartialEq)]
enum Targets<F> {
    Labels {
        labels: Array1<usize>,
        classes: usize,
    },
    Values(ArrayD<F>),
}

/// An in-memory data set: a features array whose first axis is the samples, with either one
/// class label or one value tensor per sample.
///
/// Constructors check that features and targets have the same number of samples and that every
/// label is below the class count, so a loader never meets an invalid sample.
///
/// ```
/// use kiln_runtime::data::{Dataset, TargetKind, TensorDataset};
/// use ndarray::{array, Array2};
///
/// # fn main() -> kiln_runtime::Result<()> {
/// // Four samples of 4 features each (a 2×2 image, flattened), two classes.
/// let x: Array2<f32> = Array2::from_shape_fn((4, 4), |(i, j)| (i * 4 + j) as f32);
/// let mut data = TensorDataset::with_labels(x, array![0, 1, 1, 0], 2)?
///     .with_class_names(vec!["dark".into(), "light".into()])?;
/// data.reshape_samples(&[1, 2, 2])?;
/// assert_eq!(data.sample_shape(), [1, 2, 2]);
/// assert_eq!(data.targets(), TargetKind::Labels { classes: 2 });
///
/// let odd = data.subset(&[1, 3])?;
/// assert_eq!(odd.labels(), Some(&array![1, 0]));
/// assert_eq!(odd.features()[[1, 0, 0, 0]], 12.0);
/// assert!(TensorDataset::with_labels(Array2::<f32>::zeros((2, 4)), array![0, 2], 2).is_err());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct TensorDataset<F> {
    /// Always at least one axis, and in standard (row-major) layout so that a sample is a
    /// contiguous slice that [`Dataset::copy_sample`] copies with one `memcpy`.
    features: ArrayD<F>,
    targets: Targets<F>,
    class_names: Option<Vec<String>>,
}

fn shape_error(
    kind: &'static str,
    name: &'static str,
    expected: String,
    actual: &[usize],
    detail: String,
) -> Error {
    Error::Shape {
        kind,
        name,
        expected,
        actual: actual.to_vec(),
        detail,
    }
}

/// `a` in standard layout (copied only when it is not already).
fn standard<F: Clone, D: Dimension>(a: Array<F, D>) -> ArrayD<F> {
    let a = a.into_dyn();
    if a.is_standard_layout() {
        a
    } else {
        a.as_standard_layout().into_owned()
    }
}

/// Checks that `a` has a sample axis of length `n` (`n = None`: any length).
fn check_samples<F>(
    a: &ArrayD<F>,
    kind: &'static str,
    name: &'static str,
    n: Option<usize>,
) -> Result<()> {
    match (a.shape().first(), n) {
        (None, _) => Err(shape_error(
            kind,
            name,
            "[N, ...]".into(),
            a.shape(),
            ": a 0-dimensional array has no sample axis".into(),
        )),
        (Some(&len), Some(n)) if len != n => Err(shape_error(
            kind,
            name,
            format!("[{n}, ...]"),
            a.shape(),
            format!(": the features have {n} samples, the {name} {len}"),
        )),
        _ => Ok(()),
    }
}

/// Writes row `index` of `a` (first axis) into `out`.
fn copy_row<F: Copy>(a: &ArrayD<F>, index: usize, out: &mut [F]) {
    let size = out.len();
    match a.as_slice() {
        Some(all) => out.copy_from_slice(&all[index * size..(index + 1) * size]),
        // Unreachable for a `TensorDataset` (its arrays are kept in standard layout), but
        // cheap to keep correct for any layout.
        None => {
            for (o, &v) in out.iter_mut().zip(a.index_axis(Axis(0), index).iter()) {
                *o = v;
            }
        }
    }
}

impl<F: Float> TensorDataset<F> {
    /// A classification data set: `features` with the samples on the first axis, one label per
    /// sample, each below `classes`.
    ///
    /// # Errors
    /// [`Error::Shape`] if `features` has no axes or `labels` has a different number of
    /// samples; [`Error::Label`] for the first label that is not below `classes`.
    pub fn with_labels<D: Dimension>(
        features: Array<F, D>,
        labels: Array1<usize>,
        classes: usize,
    ) -> Result<Self> {
        let features = standard(features);
        check_samples(&features, "dataset", "features", None)?;
        let n = features.shape()[0];
        if labels.len() != n {
            return Err(shape_error(
                "target",
                "labels",
                format!("[{n}]"),
                labels.shape(),
                format!(
                    ": the features (shape {:?}) have {n} samples, the labels {}",
                    features.shape(),
                    labels.len()
                ),
            ));
        }
        if let Some((index, &label)) = labels.iter().enumerate().find(|&(_, &l)| l >= classes) {
            return Err(Error::Label {
                name: "labels",
                position: vec![index],
                label,
                classes,
                ignored: None,
            });
        }
        Ok(TensorDataset {
            features,
            targets: Targets::Labels { labels, classes },
            class_names: None,
        })
    }

    /// A regression data set: `features` and `values` both with the samples on the first axis
    /// (`values` of shape `[n]` gives scalar targets, `[n, k]` vectors of `k`, and so on).
    ///
    /// # Errors
    /// [`Error::Shape`] if either array has no axes or their sample counts differ.
    pub fn with_values<D: Dimension, E: Dimension>(
        features: Array<F, D>,
        values: Array<F, E>,
    ) -> Result<Self> {
        let features = standard(features);
        check_samples(&features, "dataset", "features", None)?;
        let values = standard(values);
        check_samples(&values, "target", "values", Some(features.shape()[0]))?;
        Ok(TensorDataset {
            features,
            targets: Targets::Values(values),
            class_names: None,
        })
    }

    /// Names the classes of a classification data set (`names[c]` is class `c`'s name).
    ///
    /// # Errors
    /// [`Error::Shape`] if there is not exactly one name per class, or if the data set has
    /// value targets.
    pub fn with_class_names(mut self, names: Vec<String>) -> Result<Self> {
        match self.targets {
            Targets::Labels { classes, .. } if classes == names.len() => {
                self.class_names = Some(names);
                Ok(self)
            }
            Targets::Labels { classes, .. } => Err(shape_error(
                "target",
                "class names",
                format!("[{classes}]"),
                &[names.len()],
                format!(": one name per class; the data set has {classes} classes"),
            )),
            Targets::Values(_) => Err(shape_error(
                "target",
                "class names",
                "[0]".into(),
                &[names.len()],
                ": the data set has value targets, not class labels".into(),
            )),
        }
    }

    /// The features, shape `[len, sample_shape..]`, row-major.
    pub fn features(&self) -> &ArrayD<F> {
        &self.features
    }

    /// The features as a mutable view, for in-place preprocessing. (A view, so that the shape
    /// cannot change under the targets; use [`TensorDataset::reshape_samples`] for that.)
    pub fn features_mut(&mut self) -> ArrayViewMutD<'_, F> {
        self.features.view_mut()
    }

    /// The class labels, for a classification data set.
    pub fn labels(&self) -> Option<&Array1<usize>> {
        match &self.targets {
            Targets::Labels { labels, .. } => Some(labels),
            Targets::Values(_) => None,
        }
    }

    /// The value targets (shape `[len, target_shape..]`), for a regression data set.
    pub fn values(&self) -> Option<&ArrayD<F>> {
        match &self.targets {
            Targets::Labels { .. } => None,
            Targets::Values(values) => Some(values),
        }
    }

    /// The number of classes, for a classification data set.
    pub fn classes(&self) -> Option<usize> {
        match self.targets {
            Targets::Labels { classes, .. } => Some(classes),
            Targets::Values(_) => None,
        }
    }

    /// The class names, when they are known (set by [`TensorDataset::with_class_names`];
    /// [`iris`](super::iris) has them).
    pub fn class_names(&self) -> Option<&[String]> {
        self.class_names.as_deref()
    }

    /// How many samples each class has (`counts[c]` for class `c`), for a classification
    /// data set.
    pub fn class_counts(&self) -> Option<Vec<usize>> {
        let (labels, classes) = match &self.targets {
            Targets::Labels { labels, classes } => (labels, *classes),
            Targets::Values(_) => return None,
        };
        let mut counts = vec![0; classes];
        for &label in labels {
            // Labels are below `classes` (checked on construction).
            counts[label] += 1;
        }
        Some(counts)
    }

    /// Gives every sample the shape `shape` (same element count), keeping the data: for
    /// example `[64]` → `[1, 8, 8]` to feed flattened images to a convolution.
    ///
    /// # Errors
    /// [`Error::Shape`] if `shape` has a different number of elements than a sample has; the
    /// data set is then unchanged.
    pub fn reshape_samples(&mut self, shape: &[usize]) -> Result<()> {
        let size = self.sample_size();
        let new_size = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
        let n = self.len();
        let mut dims = Vec::with_capacity(shape.len() + 1);
        dims.push(n);
        dims.extend_from_slice(shape);
        let old_shape = self.sample_shape().to_vec();
        let mismatch = || {
            shape_error(
                "dataset",
                "features",
                format!("a sample shape of {size} elements (now {old_shape:?})"),
                shape,
                format!(
                    ": {} elements per sample cannot hold {size}",
                    new_size.map_or_else(|| "too many".to_string(), |s| s.to_string())
                ),
            )
        };
        if new_size != Some(size) {
            return Err(mismatch());
        }
        let features = std::mem::replace(&mut self.features, ArrayD::zeros(IxDyn(&[0])));
        // `into_shape_clone` fails only when the element counts differ, checked above; it
        // reuses the buffer of a standard-layout array.
        match features.into_shape_clone(IxDyn(&dims)) {
            Ok(reshaped) => {
                self.features = reshaped;
                Ok(())
            }
            Err(_) => Err(mismatch()),
        }
    }

    /// A new data set with the samples at `indices`, in that order (an index may repeat, as
    /// in a bootstrap sample). Class count and names carry over.
    ///
    /// # Errors
    /// [`Error::Shape`] naming the first index that is not below [`Dataset::len`].
    pub fn subset(&self, indices: &[usize]) -> Result<Self> {
        let n = self.len();
        if let Some((position, &index)) = indices.iter().enumerate().find(|&(_, &i)| i >= n) {
            return Err(shape_error(
                "dataset",
                "subset",
                format!("indices below {n} (the number of samples)"),
                &[index],
                format!(": index {index} at position {position} is out of range"),
            ));
        }
        Ok(self.gather(indices))
    }

    /// [`TensorDataset::subset`] for indices known to be in range.
    ///
    /// # Panics
    /// If an index is out of range (`ndarray`'s `select` checks).
    pub(super) fn gather(&self, indices: &[usize]) -> Self {
        let targets = match &self.targets {
            Targets::Labels { labels, classes } => Targets::Labels {
                labels: labels.select(Axis(0), indices),
                classes: *classes,
            },
            Targets::Values(values) => Targets::Values(standard(values.select(Axis(0), indices))),
        };
        TensorDataset {
            features: standard(self.features.select(Axis(0), indices)),
            targets,
            class_names: self.class_names.clone(),
        }
    }
}

impl<F: Float> Dataset<F> for TensorDataset<F> {
    fn len(&self) -> usize {
        // At least one axis (checked on construction).
        self.features.shape()[0]
    }

    fn sample_shape(&self) -> &[usize] {
        &self.features.shape()[1..]
    }

    fn targets(&self) -> TargetKind {
        match &self.targets {
            Targets::Labels { classes, .. } => TargetKind::Labels { classes: *classes },
            Targets::Values(values) => TargetKind::Values {
                shape: values.shape()[1..].to_vec(),
            },
        }
    }

    fn copy_sample(&self, index: usize, features: &mut [F], target: TargetMut<'_, F>) {
        copy_row(&self.features, index, features);
        match (&self.targets, target) {
            (Targets::Labels { labels, .. }, TargetMut::Label(label)) => *label = labels[index],
            (Targets::Values(values), TargetMut::Values(out)) => copy_row(values, index, out),
            (Targets::Labels { .. }, TargetMut::Values(_)) => {
                panic!("copy_sample: a Values target slot for a data set with class labels")
            }
            (Targets::Values(_), TargetMut::Label(_)) => {
                panic!("copy_sample: a Label target slot for a data set with value targets")
            }
        }
    }
}
