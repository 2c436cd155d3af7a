//! Table look-ups: token embeddings (PyTorch's `nn.Embedding`, with `padding_idx`) and learned
//! position embeddings, and their VJPs.
//!
//! A table is `[rows, dim]` row-major. The forward copies one row per id; the weight gradient
//! is a scatter-add of the output gradient's rows, so ids that repeat sum their gradients.
//! Ids carry no gradient of their own.

use super::parallel;
use super::shape_ops::add_into;
use crate::Float;

/// The number of rows of a `[rows, dim]` table held in `table_len` elements.
#[track_caller]
fn table_rows(what: &str, name: &str, table_len: usize, dim: usize) -> usize {
    if dim == 0 {
        // An empty row fits any number of times: no id can read outside the table.
        return usize::MAX;
    }
    assert_eq!(
        table_len % dim,
        0,
        "{what}: {name} has {table_len} elements, not a multiple of dim {dim}"
    );
    table_len / dim
}

#[track_caller]
fn check_id(what: &str, position: usize, id: usize, rows: usize) {
    // Validated at the call boundary; checked again because an id past the end would read
    // (or, backwards, write) outside the table's rows only by luck of the slice bounds.
    assert!(
        id < rows,
        "{what}: id {id} at position {position} is not below {rows}"
    );
}

/// `out[i] = weight[ids[i]]`: `weight` is `[num_embeddings, dim]`, `out` is `[ids.len(), dim]`
/// and is overwritten.
///
/// # Panics
/// If a slice's length disagrees with the sizes, or an id is not below `num_embeddings`
/// (ids must have been validated by the caller).
///
/// ```
/// use kiln_runtime::kernels::embedding::embedding_forward;
/// let table = [0.0f32, 0.5, 1.0, 1.5, 2.0, 2.5]; // three rows of two
/// let mut out = [0.0; 6];
/// embedding_forward(&[2, 0, 2], &table, 2, &mut out);
/// assert_eq!(out, [2.0, 2.5, 0.0, 0.5, 2.0, 2.5]);
/// ```
pub fn embedding_forward<F: Float>(ids: &[usize], weight: &[F], dim: usize, out: &mut [F]) {
    const WHAT: &str = "embedding_forward";
    let rows = table_rows(WHAT, "weight", weight.len(), dim);
    assert_eq!(
        out.len(),
        ids.len() * dim,
        "{WHAT}: out has {} elements, expected {}×{dim}",
        out.len(),
        ids.len()
    );
    if dim == 0 {
        return;
    }
    for (i, (&id, row)) in ids.iter().zip(out.chunks_exact_mut(dim)).enumerate() {
        check_id(WHAT, i, id, rows);
        row.copy_from_slice(&weight[id * dim..(id + 1) * dim]);
    }
}

/// The weight gradient of [`embedding_forward`]: row `i` of `d_out` (`[ids.len(), dim]`) is
/// added to row `ids[i]` of `d_weight` (`[num_embeddings, dim]`), in the order of `ids`.
/// Unless `accumulate`, `d_weight` is zeroed first, so rows no id selects get 0.
///
/// With `padding_idx = Some(p)`, positions whose id is `p` contribute nothing, so row `p` gets
/// no gradient (0, or unchanged when accumulating), as PyTorch's `padding_idx`.
///
/// # Panics
/// As [`embedding_forward`], with `d_out` and `d_weight` in place of `out` and `weight`.
pub fn embedding_backward<F: Float>(
    ids: &[usize],
    d_out: &[F],
    dim: usize,
    padding_idx: Option<usize>,
    d_weight: &mut [F],
    accumulate: bool,
) {
    const WHAT: &str = "embedding_backward";
    let rows = table_rows(WHAT, "d_weight", d_weight.len(), dim);
    assert_eq!(
        d_out.len(),
        ids.len() * dim,
        "{WHAT}: d_out has {} elements, expected {}×{dim}",
        d_out.len(),
        ids.len()
    );
    if !accumulate {
        parallel::fill_split(d_weight, F::ZERO);
    }
    if dim == 0 {
        return;
    }
    for (i, (&id, g)) in ids.iter().zip(d_out.chunks_exact(dim)).enumerate() {
        check_id(WHAT, i, id, rows);
        if Some(id) == padding_idx {
            continue;
        }
        add_into(g, &mut d_weight[id * dim..(id + 1) * dim], true);
    }
}

/// A learned position embedding: `out[b, t] = weight[t]` for every sample `b < batch` and
/// position `t < seq`; `weight` is `[max_len, dim]` with `seq ≤ max_len`, `out` is
/// `[batch, seq, dim]` and is overwritten.
///
/// # Panics
/// If a slice's length disagrees with the sizes, or `seq` exceeds the table's rows.
///
/// ```
/// use kiln_runtime::kernels::embedding::position_embedding_forward;
/// let table = [1.0f64, 2.0, 3.0]; // max_len 3, dim 1
/// let mut out = [0.0; 4];
/// position_embedding_forward(2, 2, &table, 1, &mut out);
/// assert_eq!(out, [1.0, 2.0, 1.0, 2.0]);
/// ```
pub fn position_embedding_forward<F: Float>(
    batch: usize,
    seq: usize,
    weight: &[F],
    dim: usize,
    out: &mut [F],
) {
    const WHAT: &str = "position_embedding_forward";
    let rows = table_rows(WHAT, "weight", weight.len(), dim);
    assert!(
        seq <= rows,
        "{WHAT}: a sequence of {seq} positions exceeds the table's {rows}"
    );
    let sample = seq * dim;
    assert_eq!(
        out.len(),
        batch * sample,
        "{WHAT}: out has {} elements, expected {batch}×{seq}×{dim}",
        out.len()
    );
    if sample == 0 {
        return;
    }
    for row in out.chunks_exact_mut(sample) {
        row.copy_from_slice(&weight[..sample]);
    }
}

/// The weight gradient of [`position_embedding_forward`]: row `t < seq` of `d_weight`
/// (`[max_len, dim]`) gets `Σ_b d_out[b, t]` (`d_out` is `[batch, seq, dim]`), summed in
/// batch order; the rows `t ≥ seq` get 0 (unchanged when `accumulate`).
///
/// # Panics
/// As [`position_embedding_forward`], with `d_out` and `d_weight`.
pub fn position_embedding_backward<F: Float>(
    batch: usize,
    seq: usize,
    d_out: &[F],
    dim: usize,
    d_weight: &mut [F],
    accumulate: bool,
) {
    const WHAT: &str = "position_embedding_backward";
    let rows = table_rows(WHAT, "d_weight", d_weight.len(), dim);
    assert!(
        seq <= rows,
        "{WHAT}: a sequence of {seq} positions exceeds the table's {rows}"
    );
    let sample = seq * dim;
    assert_eq!(
        d_out.len(),
        batch * sample,
        "{WHAT}: d_out has {} elements, expected {batch}×{seq}×{dim}",
        d_out.len()
    );
    let (used, unused) = d_weight.split_at_mut(sample);
    if !accumulate {
        unused.fill(F::ZERO);
    }
    if sample == 0 {
        if !accumulate {
            used.fill(F::ZERO);
        }
        return;
    }
    let mut samples = d_out.chunks_exact(sample);
    // The first sample is stored (or added), the others added, so that overwriting needs no
    // separate zeroing pass.
    match samples.next() {
        Some(first) => add_into(first, used, accumulate),
        None if !accumulate => used.fill(F::ZERO),
        None => {}
    }
    for g in samples {
        add_into(g, used, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::numeric_gradient;
    use crate::kernels::test_util::{assert_close, check_both_modes, values};

    fn naive_embedding(ids: &[usize], w: &[f64], dim: usize) -> Vec<f64> {
        let mut out = vec![0.0; ids.len() * dim];
        for (i, &id) in ids.iter().enumerate() {
            for d in 0..dim {
                out[i * dim + d] = w[id * dim + d];
            }
        }
        out
    }

    fn naive_positions(batch: usize, seq: usize, w: &[f64], dim: usize) -> Vec<f64> {
        let mut out = vec![0.0; batch * seq * dim];
        for b in 0..batch {
            for t in 0..seq {
                for d in 0..dim {
                    out[(b * seq + t) * dim + d] = w[t * dim + d];
                }
            }
        }
        out
    }

    fn weighted(y: &[f64], r: &[f64]) -> f64 {
        y.iter().zip(r).map(|(a, b)| a * b).sum()
    }

    const V: usize = 5;
    const D: usize = 3;
    // Id 3 repeats; id 1 is the padding id in the tests that use one; id 4 is never used.
    const IDS: [usize; 7] = [3, 0, 1, 3, 2, 1, 3];

    #[test]
    fn forward_matches_naive() {
        let w = values(V * D, 1.0);
        let mut out = vec![f64::NAN; IDS.len() * D];
        embedding_forward(&IDS, &w, D, &mut out);
        assert_eq!(out, naive_embedding(&IDS, &w, D));
        let wf: Vec<f32> = w.iter().map(|&v| v as f32).collect();
        let mut out32 = vec![0.0f32; IDS.len() * D];
        embedding_forward(&IDS, &wf, D, &mut out32);
        assert!(out32.iter().zip(&out).all(|(&a, &b)| a == b as f32));
    }

    #[test]
    fn backward_matches_finite_differences() {
        let mut w = values(V * D, 1.0);
        let r = values(IDS.len() * D, 2.0);
        let num = numeric_gradient(|w| weighted(&naive_embedding(&IDS, w, D), &r), &mut w, 1e-6);
        check_both_modes(&num, 1e-7, 1e-9, "d weight", |dw, acc| {
            embedding_backward(&IDS, &r, D, None, dw, acc)
        });
        // Repeated ids sum their rows; unused ids get exactly 0.
        let mut dw = vec![f64::NAN; V * D];
        embedding_backward(&IDS, &r, D, None, &mut dw, false);
        for d in 0..D {
            let want = r[d] + r[3 * D + d] + r[6 * D + d];
            assert_close(&[dw[3 * D + d]], &[want], 1e-15, 0.0, "repeated id");
            assert_eq!(dw[4 * D + d], 0.0);
        }
    }

    #[test]
    fn the_padding_row_gets_no_gradient() {
        let mut w = values(V * D, 1.0);
        let r = values(IDS.len() * D, 2.0);
        // What PyTorch computes: the gradient as if positions holding the padding id were
        // constants, i.e. with their rows of r zeroed.
        let mut r_masked = r.clone();
        for (i, &id) in IDS.iter().enumerate() {
            if id == 1 {
                r_masked[i * D..(i + 1) * D].fill(0.0);
            }
        }
        let num = numeric_gradient(
            |w| weighted(&naive_embedding(&IDS, w, D), &r_masked),
            &mut w,
            1e-6,
        );
        assert!(num[D..2 * D].iter().all(|&g| g == 0.0));
        check_both_modes(&num, 1e-7, 1e-9, "d weight (padding)", |dw, acc| {
            embedding_backward(&IDS, &r, D, Some(1), dw, acc)
        });
        // Accumulating leaves the padding row exactly as it was.
        let mut dw = vec![7.0; V * D];
        embedding_backward(&IDS, &r, D, Some(1), &mut dw, true);
        assert_eq!(dw[D..2 * D], [7.0; D]);
    }

    #[test]
    fn position_embedding_matches_naive_and_finite_differences() {
        let (batch, seq, max_len) = (3, 4, 6);
        let mut w = values(max_len * D, 3.0);
        let mut out = vec![f64::NAN; batch * seq * D];
        position_embedding_forward(batch, seq, &w, D, &mut out);
        assert_eq!(out, naive_positions(batch, seq, &w, D));

        let r = values(batch * seq * D, 4.0);
        let num = numeric_gradient(
            |w| weighted(&naive_positions(batch, seq, w, D), &r),
            &mut w,
            1e-6,
        );
        // Rows past the sequence get nothing.
        assert!(num[seq * D..].iter().all(|&g| g == 0.0));
        check_both_modes(&num, 1e-7, 1e-9, "d position weight", |dw, acc| {
            position_embedding_backward(batch, seq, &r, D, dw, acc)
        });
        // An empty batch still overwrites.
        let mut dw = vec![f64::NAN; max_len * D];
        position_embedding_backward(0, seq, &[], D, &mut dw, false);
        assert!(dw.iter().all(|&g| g == 0.0));
    }

    #[test]
    #[should_panic(expected = "embedding_forward: id 5 at position 1 is not below 5")]
    fn out_of_range_ids_are_rejected() {
        let mut out = vec![0.0f64; 2 * D];
        embedding_forward(&[0, 5], &values(V * D, 1.0), D, &mut out);
    }

    #[test]
    #[should_panic(expected = "a sequence of 4 positions exceeds the table's 3")]
    fn sequences_longer_than_the_table_are_rejected() {
        let mut out = vec![0.0f64; 4 * D];
        position_embedding_forward(1, 4, &values(3 * D, 1.0), D, &mut out);
    }
}
