//! Data: the [`Dataset`] trait, an in-memory [`TensorDataset`], a [`DataLoader`] that cuts a
//! data set into (optionally shuffled) batches, preprocessing helpers, random image
//! augmentation ([`Augment`]), CSV and IDX (MNIST) readers, and two small bundled data sets
//! ([`digits`], [`iris`]).
//!
//! A training loop is a plain loop over batches:
//!
//! ```
//! use kiln_runtime::data::{self, DataLoader, Dataset, Standardizer};
//!
//! # fn main() -> kiln_runtime::Result<()> {
//! let iris = data::iris::<f32>()?;
//! let (mut train, mut test) = data::stratified_split(&iris, 0.2, 42);
//! let standardizer = Standardizer::fit(&train);
//! standardizer.transform(&mut train)?;
//! standardizer.transform(&mut test)?;
//!
//! let loader = DataLoader::new(&train, 16).shuffle(7);
//! for epoch in 0..2 {
//!     for batch in loader.epoch(epoch) {
//!         assert_eq!(batch.x.shape()[1..], [4]);
//!         let labels = batch.labels.as_ref().expect("iris has class labels");
//!         assert_eq!(labels.len(), batch.len());
//!         // model.loss_and_grad(&batch.x, labels, ...)
//!     }
//! }
//! assert_eq!(train.len() + test.len(), 150);
//! # Ok(())
//! # }
//! ```
//!
//! Readers report malformed input as [`Error::File`](crate::Error::File) naming the file and the
//! position (CSV: line and column; IDX: byte offset), and read gzip-compressed files
//! transparently.

use crate::Float;

mod arrays;
mod augment;
pub(crate) mod batches;
mod bundled;
pub mod csv;
mod dataset;
pub mod idx;
pub(crate) mod loader;
mod pairs;
pub(crate) mod source;
mod transform;

pub use arrays::ArrayBatches;
pub use augment::Augment;
pub(crate) use batches::IndexBatches;
pub use batches::{set_floats, set_ids, BatchSource, ServedArg, ServedKind};
pub use bundled::{digits, iris};
pub use csv::{read_csv, read_csv_str, CsvOptions};
pub use dataset::TensorDataset;
pub use idx::{mnist, read_idx, read_idx_images, read_idx_labels};
pub use loader::{Batch, DataLoader, Epoch};
pub use pairs::{PairBatches, SequencePairs};
pub use transform::{one_hot, scale, stratified_split, train_test_split, Standardizer};

/// What a data set's targets are: class labels or real-valued tensors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetKind {
    /// One integer class label per sample, each below `classes`.
    Labels {
        /// The number of classes.
        classes: usize,
    },
    /// One real-valued tensor of `shape` per sample (regression targets).
    Values {
        /// The shape of one sample's target (`[]` for a scalar).
        shape: Vec<usize>,
    },
}

impl TargetKind {
    /// The number of elements one sample's target occupies: 1 for a label, the product of the
    /// shape for values.
    pub fn sample_size(&self) -> usize {
        match self {
            TargetKind::Labels { .. } => 1,
            TargetKind::Values { shape } => shape.iter().product(),
        }
    }
}

/// Where [`Dataset::copy_sample`] writes one sample's target.
#[derive(Debug)]
pub enum TargetMut<'a, F> {
    /// The slot for a class label (data sets with [`TargetKind::Labels`]).
    Label(&'a mut usize),
    /// The buffer for a value target (data sets with [`TargetKind::Values`]), with exactly
    /// [`TargetKind::sample_size`] elements, row-major.
    Values(&'a mut [F]),
}

/// A finite, indexable collection of samples, each a feature tensor of a fixed shape and a
/// target.
///
/// The trait is object-safe and small on purpose: a [`DataLoader`] needs only to know the
/// shapes and to have one sample copied into a slot of its batch buffers, so a data set can
/// keep its samples in memory ([`TensorDataset`]), generate them, or decode them lazily.
///
/// ```
/// use kiln_runtime::data::{DataLoader, Dataset, TargetKind, TargetMut};
///
/// /// y = 2x on the points 0, 1, ..., 9.
/// struct Line;
///
/// impl Dataset<f64> for Line {
///     fn len(&self) -> usize { 10 }
///     fn sample_shape(&self) -> &[usize] { &[1] }
///     fn targets(&self) -> TargetKind { TargetKind::Values { shape: vec![1] } }
///     fn copy_sample(&self, index: usize, features: &mut [f64], target: TargetMut<'_, f64>) {
///         features[0] = index as f64;
///         if let TargetMut::Values(y) = target {
///             y[0] = 2.0 * index as f64;
///         }
///     }
/// }
///
/// let batch = DataLoader::new(&Line, 4).epoch(0).nth(1).expect("three batches");
/// assert_eq!(batch.x.as_slice(), Some(&[4.0, 5.0, 6.0, 7.0][..]));
/// assert_eq!(batch.values.expect("value targets").as_slice(), Some(&[8.0, 10.0, 12.0, 14.0][..]));
/// ```
pub trait Dataset<F: Float> {
    /// The number of samples.
    fn len(&self) -> usize;

    /// Whether the data set has no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The shape of one sample's features, without the sample axis (`[4]` for a row of four
    /// numbers, `[1, 8, 8]` for a one-channel 8×8 image).
    fn sample_shape(&self) -> &[usize];

    /// The number of feature elements in one sample (the product of [`Dataset::sample_shape`]).
    fn sample_size(&self) -> usize {
        self.sample_shape().iter().product()
    }

    /// What the targets are.
    fn targets(&self) -> TargetKind;

    /// Writes sample `index` into caller-provided buffers: its features, row-major, into
    /// `features` (exactly [`Dataset::sample_size`] elements) and its target into `target`
    /// (the variant matching [`Dataset::targets`]).
    ///
    /// Implementations should not allocate: a [`DataLoader`] calls this once per sample and
    /// promises an allocation-free [`Epoch::next_into`].
    ///
    /// # Panics
    /// May panic if `index >= len()`, if `features` has the wrong length, or if `target` is
    /// the wrong variant or length: those are bugs in the caller, like an out-of-bounds slice
    /// index. [`DataLoader`] never does any of them.
    fn copy_sample(&self, index: usize, features: &mut [F], target: TargetMut<'_, F>);
}
