//! [`ArrayBatches`]: whole arrays in memory served as batches, Keras' `fit(x=[a, b], y=c)`
//! for [`Trainer::fit_batches`](crate::train::Trainer::fit_batches).

use super::{set_floats, set_ids, BatchSource, ServedArg, ServedKind};
use crate::trainable::BatchArray;
use crate::{Error, Float, Result};
use ndarray::{Array, ArrayD, Dimension};

/// Arrays held in memory whose first axis is the samples, one per model argument (declared
/// `input`s and `target`s, in declaration order), served as batches of rows: what a Keras
/// user passes to `fit` as NumPy arrays. Any number of arrays of any rank: float features,
/// token ids, lengths, one label per sample or per position (a segmentation mask).
///
/// ```
/// use kiln_runtime::data::{ArrayBatches, BatchSource};
/// use ndarray::{Array2, Array3, Array4};
///
/// # fn main() -> kiln_runtime::Result<()> {
/// // 10 one-channel 8×8 images and a class for every pixel.
/// let images = Array4::<f32>::zeros((10, 1, 8, 8));
/// let masks = Array3::<usize>::zeros((10, 8, 8));
/// let data = ArrayBatches::new()
///     .floats("images", images)?
///     .labels("masks", masks, 3)?;
/// assert_eq!(data.len(), 10);
/// let mut batch = Vec::new();
/// data.fill(&[4, 2], &mut batch)?;
/// assert_eq!((batch[0].shape(), batch[1].shape()), (&[2, 1, 8, 8][..], &[2, 8, 8][..]));
/// // Every array must have the same number of samples.
/// assert!(ArrayBatches::new().floats("x", Array2::<f32>::zeros((3, 2)))?.labels("y", ndarray::Array1::zeros(4), 2).is_err());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct ArrayBatches<F> {
    arrays: Vec<Served<F>>,
}

/// One array with its description.
#[derive(Clone, Debug)]
struct Served<F> {
    arg: ServedArg,
    array: BatchArray<F>,
}

impl<F: Float> ArrayBatches<F> {
    /// No arrays yet.
    pub fn new() -> Self {
        ArrayBatches { arrays: Vec::new() }
    }

    /// Adds float values (features or float targets).
    ///
    /// # Errors
    /// [`Error::Data`] if `array` has no axes or another number of samples than the arrays
    /// before it.
    pub fn floats<D: Dimension>(self, name: &str, array: Array<F, D>) -> Result<Self> {
        let array = standard(array.into_dyn());
        self.push(name, ServedKind::Float, BatchArray::Float(array))
    }

    /// Adds token ids, below `vocab` when given (checked: an id at or above it is an error
    /// naming the position).
    ///
    /// # Errors
    /// As [`ArrayBatches::floats`], and for an id at or above `vocab`.
    pub fn tokens<D: Dimension>(
        self,
        name: &str,
        ids: Array<usize, D>,
        vocab: Option<usize>,
    ) -> Result<Self> {
        let ids = standard(ids.into_dyn());
        if let Some(vocab) = vocab {
            check_below(name, &ids, vocab, "token id", "the vocabulary size")?;
        }
        self.push(name, ServedKind::Tokens { vocab }, BatchArray::Ids(ids))
    }

    /// Adds sequence lengths.
    ///
    /// # Errors
    /// As [`ArrayBatches::floats`].
    pub fn lengths<D: Dimension>(self, name: &str, lengths: Array<usize, D>) -> Result<Self> {
        let lengths = standard(lengths.into_dyn());
        self.push(name, ServedKind::Lengths, BatchArray::Ids(lengths))
    }

    /// Adds class labels (one per sample, or one per position) of `classes` classes. Labels
    /// at or above `classes` are kept: a loss's `ignore_index` may lie there, and the model
    /// reports any other as an error naming its position.
    ///
    /// # Errors
    /// As [`ArrayBatches::floats`].
    pub fn labels<D: Dimension>(
        self,
        name: &str,
        labels: Array<usize, D>,
        classes: usize,
    ) -> Result<Self> {
        let labels = standard(labels.into_dyn());
        let kind = ServedKind::Labels {
            classes: Some(classes),
        };
        self.push(name, kind, BatchArray::Ids(labels))
    }

    fn push(mut self, name: &str, kind: ServedKind, array: BatchArray<F>) -> Result<Self> {
        let shape = array.shape();
        let problem = if shape.is_empty() {
            Some("it has no axes: the first axis must be the samples".to_string())
        } else {
            self.arrays
                .first()
                .filter(|first| first.array.samples() != shape[0])
                .map(|first| {
                    format!(
                        "{} samples (shape {shape:?}), but `{}` has {}: every array holds the \
                         same samples along its first axis",
                        shape[0],
                        first.arg.name,
                        first.array.samples()
                    )
                })
        };
        if let Some(problem) = problem {
            return Err(Error::Data {
                what: "ArrayBatches",
                problem: format!("array `{name}`: {problem}"),
            });
        }
        let arg = ServedArg::new(name, kind, shape.len());
        self.arrays.push(Served { arg, array });
        Ok(self)
    }
}

/// `a` in standard layout, so that a sample is one contiguous run of elements.
fn standard<T: Clone>(a: ArrayD<T>) -> ArrayD<T> {
    if a.is_standard_layout() {
        a
    } else {
        a.as_standard_layout().into_owned()
    }
}

/// The error for the first id of `ids` at or above `bound`.
fn check_below(
    name: &str,
    ids: &ArrayD<usize>,
    bound: usize,
    what: &str,
    bound_name: &str,
) -> Result<()> {
    match ids.indexed_iter().find(|(_, &id)| id >= bound) {
        None => Ok(()),
        Some((position, &id)) => Err(Error::Data {
            what: "ArrayBatches",
            problem: format!(
                "array `{name}`: {what} {id} at position {:?} is not below {bound_name}, \
                 {bound}",
                position.slice()
            ),
        }),
    }
}

/// Rows `indices` of `source` (standard layout) written into `out`, `row` elements each.
fn gather<T: Copy>(source: &[T], row: usize, indices: &[usize], out: &mut [T]) {
    for (slot, &i) in out.chunks_exact_mut(row.max(1)).zip(indices) {
        slot.copy_from_slice(&source[i * row..(i + 1) * row]);
    }
}

impl<F: Float> BatchSource<F> for ArrayBatches<F> {
    fn len(&self) -> usize {
        self.arrays.first().map_or(0, |a| a.array.samples())
    }

    fn served(&self) -> Vec<ServedArg> {
        self.arrays.iter().map(|a| a.arg.clone()).collect()
    }

    fn fill(&self, indices: &[usize], batch: &mut Vec<BatchArray<F>>) -> Result<()> {
        if let Some(&bad) = indices.iter().find(|&&i| i >= self.len()) {
            return Err(Error::Data {
                what: "ArrayBatches",
                problem: format!("sample {bad} asked for, but there are {}", self.len()),
            });
        }
        batch.truncate(self.arrays.len());
        for (slot, served) in self.arrays.iter().enumerate() {
            let mut shape = served.array.shape().to_vec();
            let row: usize = shape[1..].iter().product();
            shape[0] = indices.len();
            match &served.array {
                BatchArray::Ids(source) => {
                    let source = source.as_slice().unwrap_or(&[]);
                    set_ids(batch, slot, &shape, |out| {
                        if let Some(out) = out.as_slice_mut() {
                            gather(source, row, indices, out);
                        }
                    });
                }
                BatchArray::Float(source) => {
                    let source = source.as_slice().unwrap_or(&[]);
                    set_floats(batch, slot, &shape, |out| {
                        if let Some(out) = out.as_slice_mut() {
                            gather(source, row, indices, out);
                        }
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, Array2};

    #[test]
    fn rows_are_gathered_in_the_order_asked() {
        let x = Array2::from_shape_fn((4, 3), |(i, j)| (i * 10 + j) as f64);
        let data = ArrayBatches::new()
            .floats("x", x)
            .and_then(|d| d.tokens("ids", array![[1, 2], [3, 4], [5, 6], [7, 8]], Some(9)))
            .and_then(|d| d.lengths("len", array![1, 2, 2, 1]))
            .expect("four samples each");
        let mut batch = Vec::new();
        data.fill(&[2, 0], &mut batch).expect("fills");
        assert_eq!(
            batch[0],
            BatchArray::Float(array![[20.0, 21.0, 22.0], [0.0, 1.0, 2.0]].into_dyn())
        );
        assert_eq!(batch[1], BatchArray::Ids(array![[5, 6], [1, 2]].into_dyn()));
        assert_eq!(batch[2], BatchArray::Ids(array![2, 1].into_dyn()));
        // A second, smaller batch reuses the buffers.
        data.fill(&[3], &mut batch).expect("fills");
        assert_eq!(batch[1], BatchArray::Ids(array![[7, 8]].into_dyn()));
        let served: Vec<_> = data.served().into_iter().map(|s| s.rank).collect();
        assert_eq!(served, [2, 2, 1]);
        let err = data.fill(&[4], &mut batch).unwrap_err().to_string();
        assert!(
            err.contains("sample 4") && err.contains("there are 4"),
            "{err}"
        );
    }

    #[test]
    fn ids_past_the_vocabulary_and_uneven_arrays_are_refused() {
        let err = ArrayBatches::<f32>::new()
            .tokens("ids", array![[1, 2], [3, 12]], Some(10))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`ids`") && err.contains("token id 12 at position [1, 1]"),
            "{err}"
        );
        let err = ArrayBatches::<f32>::new()
            .floats("x", ndarray::arr0(1.0f32))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no axes"), "{err}");
    }
}
