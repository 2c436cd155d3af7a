//! The parameters of an embedding table (token or learned position embeddings).

use crate::Float;
use ndarray::Array2;
use rand::Rng;

/// A table of `num_embeddings` vectors of `embedding_dim` values, laid out as PyTorch's
/// `nn.Embedding`: `weight` is `[num_embeddings, embedding_dim]`, row `i` the vector of id `i`.
/// A learned position embedding is the same table indexed by position.
///
/// ```
/// use kiln_runtime::layers::Embedding;
/// use rand::SeedableRng;
/// let mut rng = rand::rngs::StdRng::seed_from_u64(0);
/// let table = Embedding::<f32>::new(100, 16, Some(0), &mut rng);
/// assert_eq!(table.weight.dim(), (100, 16));
/// assert!(table.weight.row(0).iter().all(|&v| v == 0.0));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Embedding<F> {
    /// `[num_embeddings, embedding_dim]`.
    pub weight: Array2<F>,
}

impl<F: Float> Embedding<F> {
    /// A table initialised as PyTorch's `nn.Embedding.reset_parameters`: every value drawn
    /// from `N(0, 1)` (in f64, row by row, then rounded to `F`, so that an f32 and an f64 table
    /// from the same seed agree), then the row `padding_idx`, if any, set to 0.
    ///
    /// # Panics
    /// If `padding_idx` is not below `num_embeddings`.
    pub fn new<R: Rng + ?Sized>(
        num_embeddings: usize,
        embedding_dim: usize,
        padding_idx: Option<usize>,
        rng: &mut R,
    ) -> Self {
        if let Some(p) = padding_idx {
            assert!(
                p < num_embeddings,
                "Embedding::new: padding_idx {p} is not below num_embeddings {num_embeddings}"
            );
        }
        let mut normal = crate::init::StandardNormal::new();
        let mut weight = crate::memory::from_fn((num_embeddings, embedding_dim), || {
            F::from_f64(normal.sample(rng))
        });
        if let Some(p) = padding_idx {
            weight.row_mut(p).fill(F::ZERO);
        }
        Self { weight }
    }

    /// A table of zeros.
    pub fn zeros(num_embeddings: usize, embedding_dim: usize) -> Self {
        Self {
            weight: crate::memory::zeros((num_embeddings, embedding_dim)),
        }
    }

    /// The number of vectors (the weight's first dimension).
    pub fn num_embeddings(&self) -> usize {
        self.weight.nrows()
    }

    /// The length of each vector (the weight's second dimension).
    pub fn embedding_dim(&self) -> usize {
        self.weight.ncols()
    }

    /// The number of trainable scalars, `num_embeddings · embedding_dim` (the padding row
    /// included, as PyTorch counts it).
    pub fn num_params(&self) -> usize {
        self.weight.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn init_is_standard_normal_with_a_zero_padding_row() {
        let mut rng = StdRng::seed_from_u64(11);
        let table = Embedding::<f64>::new(400, 50, Some(7), &mut rng);
        assert_eq!(
            (
                table.num_embeddings(),
                table.embedding_dim(),
                table.num_params()
            ),
            (400, 50, 20_000)
        );
        assert!(table.weight.row(7).iter().all(|&v| v == 0.0));
        let all: Vec<f64> = table
            .weight
            .rows()
            .into_iter()
            .enumerate()
            .filter(|&(i, _)| i != 7)
            .flat_map(|(_, row)| row.to_vec())
            .collect();
        // 19 950 draws: the mean's standard error is 0.007, the variance's 0.01, and about
        // 0.27% of N(0, 1) lies beyond ±3.
        let n = all.len() as f64;
        let mean = all.iter().sum::<f64>() / n;
        let var = all.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        let beyond3 = all.iter().filter(|v| v.abs() > 3.0).count() as f64 / n;
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "variance {var}");
        assert!((0.001..0.0045).contains(&beyond3), "tail {beyond3}");
        assert!(all.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn f32_and_f64_agree_from_one_seed() {
        let a = Embedding::<f64>::new(6, 5, None, &mut StdRng::seed_from_u64(1));
        let b = Embedding::<f32>::new(6, 5, None, &mut StdRng::seed_from_u64(1));
        assert_eq!(b.weight, a.weight.mapv(|v| v as f32));
    }

    #[test]
    fn zeros() {
        let table = Embedding::<f32>::zeros(3, 2);
        assert_eq!(table.weight, Array2::<f32>::zeros((3, 2)));
    }

    #[test]
    #[should_panic(expected = "padding_idx 3 is not below num_embeddings 3")]
    fn padding_idx_must_be_a_row() {
        Embedding::<f64>::new(3, 2, Some(3), &mut StdRng::seed_from_u64(0));
    }
}
