//! Predictions over a whole data set (Keras' `model.predict`), the predicted classes of an
//! output, and the confusion matrix of predicted against true classes (scikit-learn's
//! `confusion_matrix`).

use super::metrics::argmax;
use crate::data::{Batch, BatchSource, DataLoader, Dataset, IndexBatches};
use crate::trainable::Trainable;
use crate::{Error, Float, Result, Supervised};
use ndarray::{Array2, ArrayD, ArrayViewD, Axis, IxDyn};

/// Keras' `model.predict`: the model's first output for every sample of `data`, in the data
/// set's order, stacked along the first axis (`[n, ..]`), computed in batches of `batch_size`
/// (at least 1) in inference mode (dropout off, batch norm on its running statistics).
///
/// # Errors
/// The model's errors for a batch (a sample shape or target kind it does not take).
///
/// ```
/// # fn demo<M: kiln_runtime::Supervised<f32>>(model: &M) -> kiln_runtime::Result<()> {
/// use kiln_runtime::{data, train};
/// let mut test = data::digits::<f32>()?;
/// test.reshape_samples(&[64])?;
/// let logits = train::predict(model, &test, 256)?; // [1797, 10]
/// let classes = train::classes(logits.view())?;     // the largest logit of each row
/// let labels = test.labels().expect("digits have labels").to_vec();
/// let confusion = train::confusion_matrix(&labels, &classes, 10)?;
/// println!("{confusion}");
/// # Ok(())
/// # }
/// ```
pub fn predict<F, M, D>(model: &M, data: &D, batch_size: usize) -> Result<ArrayD<F>>
where
    F: Float,
    M: Supervised<F>,
    D: Dataset<F> + ?Sized,
{
    let loader = DataLoader::new(data, batch_size.max(1));
    let mut batches = loader.epoch_batches(0);
    let (mut ws, mut batch) = (M::Workspace::default(), Batch::new());
    let mut stack = Stack::new(data.len());
    while batches.next_into(&mut batch) {
        model.eval_batch(batch.x.view(), super::batch_targets(&batch), &mut ws)?;
        stack.push(M::last_output(&ws)?)?;
    }
    stack.finish()
}

/// [`predict`] for a [`Trainable`] model on a [`BatchSource`] (token ids, several inputs):
/// the first output of every sample, in order, stacked along the first axis.
///
/// # Errors
/// The source's and the model's errors for a batch; [`Error::Shape`] when batches give
/// outputs of different shapes per sample (an output `[B, T, C]` whose `T` is each batch's
/// longest text): such outputs cannot be stacked, so run the batches yourself.
pub fn predict_batches<F, M, S>(model: &M, data: &S, batch_size: usize) -> Result<ArrayD<F>>
where
    F: Float,
    M: Trainable<F>,
    S: BatchSource<F> + ?Sized,
{
    let mut ws = <M as Trainable<F>>::Workspace::default();
    let mut batch = Vec::new();
    let mut order = IndexBatches::new(data.len(), batch_size.max(1), false, None, 0, None);
    let mut stack = Stack::new(data.len());
    while let Some(indices) = order.next_indices() {
        data.fill(indices, &mut batch)?;
        model.eval_step(&batch, &mut ws)?;
        stack.push(M::last_output(&ws)?)?;
    }
    stack.finish()
}

/// Batches' outputs copied into one array of `n` samples, allocated at the first batch.
struct Stack<F> {
    n: usize,
    done: usize,
    out: Option<ArrayD<F>>,
}

impl<F: Float> Stack<F> {
    fn new(n: usize) -> Self {
        Stack {
            n,
            done: 0,
            out: None,
        }
    }

    fn push(&mut self, output: ArrayViewD<'_, F>) -> Result<()> {
        let shape = output.shape();
        let Some((&rows, per_sample)) = shape.split_first() else {
            return Err(Error::Shape {
                kind: "output",
                name: "predictions",
                expected: "[batch, ..]".to_string(),
                actual: Vec::new(),
                detail: ": predict stacks outputs with a batch axis".to_string(),
            });
        };
        let out = self.out.get_or_insert_with(|| {
            let mut dims = vec![self.n];
            dims.extend_from_slice(per_sample);
            ArrayD::zeros(IxDyn(&dims))
        });
        if &out.shape()[1..] != per_sample || self.done + rows > self.n {
            let mut expected = vec![rows];
            expected.extend_from_slice(&out.shape()[1..]);
            return Err(Error::Shape {
                kind: "output",
                name: "predictions",
                expected: format!("{expected:?}"),
                actual: shape.to_vec(),
                detail: ": the first batch's outputs had another shape per sample (outputs that follow each batch's padded length cannot be stacked: run the batches yourself)".to_string(),
            });
        }
        out.slice_axis_mut(Axis(0), (self.done..self.done + rows).into())
            .assign(&output);
        self.done += rows;
        Ok(())
    }

    fn finish(self) -> Result<ArrayD<F>> {
        Ok(self.out.unwrap_or_else(|| ArrayD::zeros(IxDyn(&[0]))))
    }
}

/// The predicted class of every row of `output` (`[n, classes]`, or `[n, .., classes]`,
/// flattened to one class per position): the index of its largest score, the first on ties,
/// and a NaN counting as the largest (as `torch.argmax`), so a diverged row is never silently
/// some class. Keras: `np.argmax(model.predict(x), axis=-1)`.
///
/// # Errors
/// [`Error::Shape`] for an output without a class axis or with an empty one.
///
/// ```
/// use kiln_runtime::train::classes;
/// let logits = ndarray::array![[0.1f32, 2.0, -1.0], [3.0, 3.0, 0.0]];
/// assert_eq!(classes(logits.view().into_dyn())?, [1, 0]);
/// # Ok::<(), kiln_runtime::Error>(())
/// ```
pub fn classes<F: Float>(output: ArrayViewD<'_, F>) -> Result<Vec<usize>> {
    match output.shape() {
        [_, .., c] if *c > 0 => {}
        other => {
            return Err(Error::Shape {
                kind: "output",
                name: "scores",
                expected: "[n, classes]".to_string(),
                actual: other.to_vec(),
                detail: ": classes needs a class axis of at least one class".to_string(),
            })
        }
    }
    // Row by row over the last axis: any layout, nothing copied.
    Ok(output
        .lanes(Axis(output.ndim() - 1))
        .into_iter()
        .map(|row| argmax(row.iter()).unwrap_or(0))
        .collect())
}

/// scikit-learn's `confusion_matrix(labels, predicted, labels=range(classes))`: entry
/// `[t, p]` counts the samples of true class `t` predicted as `p`. Pairs whose true class is
/// `ignore` (a padding label) are left out.
///
/// # Errors
/// [`Error::Data`] if the two lists differ in length, or for a class of `classes` or more.
///
/// ```
/// use kiln_runtime::train::confusion_matrix;
/// let m = confusion_matrix(&[0, 1, 1, 2], &[0, 1, 2, 2], 3)?;
/// assert_eq!(m, ndarray::array![[1, 0, 0], [0, 1, 1], [0, 0, 1]]);
/// # Ok::<(), kiln_runtime::Error>(())
/// ```
pub fn confusion_matrix(
    labels: &[usize],
    predicted: &[usize],
    classes: usize,
) -> Result<Array2<usize>> {
    confusion_matrix_ignoring(labels, predicted, classes, None)
}

/// [`confusion_matrix`] leaving out the pairs whose true class is `ignore` (a loss's
/// `ignore_index`, the padding of a tagger's labels).
///
/// # Errors
/// As [`confusion_matrix`].
pub fn confusion_matrix_ignoring(
    labels: &[usize],
    predicted: &[usize],
    classes: usize,
    ignore: Option<usize>,
) -> Result<Array2<usize>> {
    if labels.len() != predicted.len() {
        return Err(Error::Data {
            what: "confusion_matrix",
            problem: format!(
                "{} labels but {} predictions: give one predicted class per label",
                labels.len(),
                predicted.len()
            ),
        });
    }
    let mut m = Array2::zeros((classes, classes));
    for (i, (&t, &p)) in labels.iter().zip(predicted).enumerate() {
        if Some(t) == ignore {
            continue;
        }
        if t >= classes || p >= classes {
            return Err(Error::Data {
                what: "confusion_matrix",
                problem: format!(
                    "pair {i} (true {t}, predicted {p}) has a class outside 0..{classes}"
                ),
            });
        }
        m[[t, p]] += 1;
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn classes_are_taken_along_the_last_axis_of_any_layout() {
        let scores = array![[[0.0f32, 1.0], [2.0, 0.0]], [[0.5, 0.5], [f32::NAN, 9.0]]];
        assert_eq!(classes(scores.view().into_dyn()).unwrap(), [1, 0, 0, 0]);
        // A transposed view: its rows are not contiguous.
        let t = array![[1.0f64, 5.0], [3.0, 2.0], [0.0, 4.0]];
        assert_eq!(classes(t.t().into_dyn()).unwrap(), [1, 0]);
        assert!(classes(ndarray::Array1::<f32>::zeros(3).view().into_dyn()).is_err());
        assert!(classes(ndarray::Array2::<f32>::zeros((3, 0)).view().into_dyn()).is_err());
    }

    #[test]
    fn confusion_counts_pairs_and_refuses_bad_ones() {
        let m = confusion_matrix_ignoring(&[0, 9, 1, 1], &[1, 0, 1, 1], 2, Some(9)).unwrap();
        assert_eq!(m, array![[0, 1], [0, 2]]);
        let err = confusion_matrix(&[0, 1], &[0], 2).unwrap_err().to_string();
        assert!(err.contains("2 labels but 1 predictions"), "{err}");
        let err = confusion_matrix(&[0, 3], &[0, 1], 2)
            .unwrap_err()
            .to_string();
        assert!(err.contains("pair 1 (true 3, predicted 1)"), "{err}");
    }

    #[test]
    fn stacking_refuses_outputs_of_another_shape() {
        let mut stack = Stack::<f32>::new(4);
        stack
            .push(ndarray::Array3::zeros((2, 5, 3)).view().into_dyn())
            .unwrap();
        let err = stack
            .push(ndarray::Array3::zeros((2, 7, 3)).view().into_dyn())
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot be stacked"), "{err}");
    }
}
