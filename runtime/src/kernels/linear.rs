//! The fully connected layer `y = x · Wᵀ + b` and its three vector-Jacobian products.
//!
//! Shapes follow PyTorch's `nn.Linear`: `x` is `[batch, in]`, the weight is `[out, in]`, the
//! bias `[out]` and `y` is `[batch, out]`, all row-major.

use super::dispatch::{run_fast, ElementLoop};
use super::gemm::{gemm, gemm_bias};
use super::lanes::lane_sum;
use super::parallel::{self, SharedMut};
use crate::Float;

/// `y = x · Wᵀ + b`: `x` is `[batch, in_features]`, `weight` is `[out_features, in_features]`,
/// `bias` (if any) is `[out_features]`, `y` is `[batch, out_features]` and is overwritten.
///
/// # Panics
/// If a slice's length disagrees with the sizes (a caller bug).
///
/// ```
/// use kiln_runtime::kernels::linear_forward;
/// let x = [1.0f64, 2.0]; // one sample, two features
/// let w = [1.0, 0.0, 3.0, -1.0]; // two outputs
/// let mut y = [0.0; 2];
/// linear_forward(&x, &w, Some(&[0.5, 0.25][..]), 1, 2, 2, &mut y);
/// assert_eq!(y, [1.5, 1.25]);
/// ```
pub fn linear_forward<F: Float>(
    x: &[F],
    weight: &[F],
    bias: Option<&[F]>,
    batch: usize,
    in_features: usize,
    out_features: usize,
    y: &mut [F],
) {
    assert_eq!(
        y.len(),
        batch * out_features,
        "linear_forward: y has the wrong length"
    );
    // The weight is stored [out, in]; read as its transpose it is the [in, out] right operand.
    match bias {
        Some(bias) => {
            assert_eq!(
                bias.len(),
                out_features,
                "linear_forward: bias has the wrong length"
            );
            // The GEMM adds the bias as it writes each tile of y: one pass over y.
            gemm_bias(
                batch,
                in_features,
                out_features,
                x,
                false,
                weight,
                true,
                bias,
                y,
            );
        }
        None => gemm(
            batch,
            in_features,
            out_features,
            F::ONE,
            x,
            false,
            weight,
            true,
            F::ZERO,
            y,
        ),
    }
}

/// The weight gradient `dW = dyᵀ · x` (`[out_features, in_features]`), written into `dw` or
/// added to it when `accumulate`.
///
/// # Panics
/// If a slice's length disagrees with the sizes (a caller bug).
pub fn linear_backward_weight<F: Float>(
    x: &[F],
    dy: &[F],
    batch: usize,
    in_features: usize,
    out_features: usize,
    dw: &mut [F],
    accumulate: bool,
) {
    let beta = if accumulate { F::ONE } else { F::ZERO };
    // dy is stored [batch, out]; transposed it is the [out, batch] left operand.
    gemm(
        out_features,
        batch,
        in_features,
        F::ONE,
        dy,
        true,
        x,
        false,
        beta,
        dw,
    );
}

/// The bias gradient: the column sums of `dy` (`[batch, out_features]`), written into `db`
/// (`[out_features]`) or added to it when `accumulate`.
///
/// # Panics
/// If a slice's length disagrees with the sizes (a caller bug).
pub fn linear_backward_bias<F: Float>(
    dy: &[F],
    batch: usize,
    out_features: usize,
    db: &mut [F],
    accumulate: bool,
) {
    assert_eq!(
        dy.len(),
        batch * out_features,
        "linear_backward_bias: dy has the wrong length"
    );
    assert_eq!(
        db.len(),
        out_features,
        "linear_backward_bias: db has the wrong length"
    );
    if out_features == 1 {
        // One output (a regression head): a sum along dy, in partial sums. Row by row it
        // would be one chain of dependent additions, each waiting on the last (W1's
        // 1,000-row batch spent a third of its step there).
        let sum = lane_sum(dy);
        db[0] = if accumulate { db[0] + sum } else { sum };
        return;
    }
    if !accumulate {
        db.fill(F::ZERO);
    }
    if out_features == 0 {
        return;
    }
    // Groups of columns, each summed over all the rows in registers (the sums of a row-by-row
    // sweep went through memory at every row, compiled for the baseline CPU: 1.4% of W6's
    // step). Each output's sum is still in batch order, onto its starting value.
    let columns = |first: usize, db: &mut [F]| {
        run_fast(BiasColumns {
            dy,
            cols: out_features,
            first,
            db,
        })
    };
    if batch * out_features < BIAS_SPLIT_MIN {
        return columns(0, db);
    }
    let db = SharedMut::new(db);
    parallel::for_each_column_piece(out_features, BIAS_GROUP, BIAS_PIECE_MIN, |range| {
        // SAFETY: each piece is run once, and pieces cover disjoint columns.
        columns(range.start, unsafe { db.range(range) });
    });
}

/// Columns of a bias gradient summed at once: four 512-bit vectors of f32, kept in registers
/// over all the rows (four independent chains of additions).
const BIAS_GROUP: usize = 64;

/// The fewest columns of a piece a bias gradient is split into.
const BIAS_PIECE_MIN: usize = 128;

/// The fewest elements of `dy` whose bias gradient is shared by the two threads.
const BIAS_SPLIT_MIN: usize = 1 << 15;

/// The bias gradient of the columns `first .. first + db.len()`:
/// `db[j] += Σ_rows dy[r][first + j]`, rows in order (see [`linear_backward_bias`]).
struct BiasColumns<'a, F> {
    /// `[rows, cols]`.
    dy: &'a [F],
    cols: usize,
    first: usize,
    db: &'a mut [F],
}

impl<F: Float> ElementLoop for BiasColumns<'_, F> {
    #[inline(always)]
    fn run(self) {
        let cols = self.cols;
        let (groups, tail) = self.db.as_chunks_mut::<BIAS_GROUP>();
        for (g, db) in groups.iter_mut().enumerate() {
            let first = self.first + g * BIAS_GROUP;
            let mut acc = *db;
            for row in self.dy.chunks_exact(cols) {
                if let Some(values) = row[first..].first_chunk::<BIAS_GROUP>() {
                    for (a, &v) in acc.iter_mut().zip(values) {
                        *a += v;
                    }
                }
            }
            *db = acc;
        }
        if !tail.is_empty() {
            let first = self.first + groups.len() * BIAS_GROUP;
            for row in self.dy.chunks_exact(cols) {
                for (a, &v) in tail.iter_mut().zip(&row[first..]) {
                    *a += v;
                }
            }
        }
    }
}

/// The input gradient `dx = dy · W` (`[batch, in_features]`), written into `dx` or added to it
/// when `accumulate`.
///
/// # Panics
/// If a slice's length disagrees with the sizes (a caller bug).
pub fn linear_backward_input<F: Float>(
    dy: &[F],
    weight: &[F],
    batch: usize,
    in_features: usize,
    out_features: usize,
    dx: &mut [F],
    accumulate: bool,
) {
    let beta = if accumulate { F::ONE } else { F::ZERO };
    gemm(
        batch,
        out_features,
        in_features,
        F::ONE,
        dy,
        false,
        weight,
        false,
        beta,
        dx,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::numeric_gradient;
    use crate::kernels::test_util::{assert_close, check_both_modes, values};

    const B: usize = 3;
    const IN: usize = 4;
    const OUT: usize = 5;

    fn naive_forward(x: &[f64], w: &[f64], b: Option<&[f64]>) -> Vec<f64> {
        let mut y = vec![0.0; B * OUT];
        for i in 0..B {
            for o in 0..OUT {
                let mut acc = b.map_or(0.0, |b| b[o]);
                for j in 0..IN {
                    acc += x[i * IN + j] * w[o * IN + j];
                }
                y[i * OUT + o] = acc;
            }
        }
        y
    }

    /// L = Σ r ⊙ y, whose gradient with respect to y is r.
    fn weighted(y: &[f64], r: &[f64]) -> f64 {
        y.iter().zip(r).map(|(a, b)| a * b).sum()
    }

    #[test]
    fn forward_matches_naive_with_and_without_bias() {
        let (x, w, b) = (values(B * IN, 1.0), values(OUT * IN, 2.0), values(OUT, 3.0));
        let mut y = vec![f64::NAN; B * OUT];
        linear_forward(&x, &w, Some(&b), B, IN, OUT, &mut y);
        assert_close(&y, &naive_forward(&x, &w, Some(&b)), 1e-14, 1e-14, "y");
        linear_forward(&x, &w, None, B, IN, OUT, &mut y);
        assert_close(
            &y,
            &naive_forward(&x, &w, None),
            1e-14,
            1e-14,
            "y (no bias)",
        );
    }

    #[test]
    fn forward_f32_matches_f64() {
        let (x, w, b) = (values(B * IN, 1.0), values(OUT * IN, 2.0), values(OUT, 3.0));
        let f = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<f32>>();
        let mut y = vec![0.0f32; B * OUT];
        linear_forward(&f(&x), &f(&w), Some(&f(&b)), B, IN, OUT, &mut y);
        let y: Vec<f64> = y.iter().map(|&a| a as f64).collect();
        assert_close(&y, &naive_forward(&x, &w, Some(&b)), 1e-5, 1e-5, "y f32");
    }

    #[test]
    fn backward_matches_finite_differences() {
        let (mut x, mut w, mut b) = (values(B * IN, 1.0), values(OUT * IN, 2.0), values(OUT, 3.0));
        let r = values(B * OUT, 4.0);
        let (x0, w0, b0) = (x.clone(), w.clone(), b.clone());

        let num_w = numeric_gradient(
            |w| weighted(&naive_forward(&x0, w, Some(&b0)), &r),
            &mut w,
            1e-6,
        );
        check_both_modes(&num_w, 1e-7, 1e-9, "dW", |dw, acc| {
            linear_backward_weight(&x0, &r, B, IN, OUT, dw, acc)
        });

        let num_b = numeric_gradient(
            |b| weighted(&naive_forward(&x0, &w0, Some(b)), &r),
            &mut b,
            1e-6,
        );
        check_both_modes(&num_b, 1e-7, 1e-9, "db", |db, acc| {
            linear_backward_bias(&r, B, OUT, db, acc)
        });

        let num_x = numeric_gradient(
            |x| weighted(&naive_forward(x, &w0, Some(&b0)), &r),
            &mut x,
            1e-6,
        );
        check_both_modes(&num_x, 1e-7, 1e-9, "dx", |dx, acc| {
            linear_backward_input(&r, &w0, B, IN, OUT, dx, acc)
        });
        // numeric_gradient restores its argument exactly.
        assert_eq!((x, w, b), (x0, w0, b0));
    }

    #[test]
    fn bias_gradient_is_column_sums() {
        let dy = [1.0f64, 2.0, 3.0, 10.0, 20.0, 30.0];
        let mut db = [f64::NAN; 3];
        linear_backward_bias(&dy, 2, 3, &mut db, false);
        assert_eq!(db, [11.0, 22.0, 33.0]);
        linear_backward_bias(&dy, 2, 3, &mut db, true);
        assert_eq!(db, [22.0, 44.0, 66.0]);
    }

    /// Every column summed over the rows in batch order onto its starting value, bit for bit,
    /// whatever the width (whole groups of columns, a narrower last group, pieces shared by
    /// the threads) and with or without accumulation.
    #[test]
    fn bias_gradient_sums_each_column_in_batch_order() {
        for (batch, out) in [
            (7, 2),
            (5, 63),
            (9, 64),
            (11, 65),
            (768, 128),
            (768, 384),
            (300, 1000),
        ] {
            let dy: Vec<f32> = (0..batch * out)
                .map(|i| ((i * 7919 % 1013) as f32 - 506.0) * 1.37e-3)
                .collect();
            let start: Vec<f32> = (0..out).map(|j| j as f32 * 0.1 - 3.0).collect();
            for accumulate in [false, true] {
                let mut want = if accumulate {
                    start.clone()
                } else {
                    vec![0.0; out]
                };
                for row in dy.chunks_exact(out) {
                    for (w, &g) in want.iter_mut().zip(row) {
                        *w += g;
                    }
                }
                let mut got = start.clone();
                linear_backward_bias(&dy, batch, out, &mut got, accumulate);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&got),
                    bits(&want),
                    "{batch} × {out}, accumulate {accumulate}"
                );
            }
        }
    }

    #[test]
    fn one_output_layers_sum_the_batch() {
        // The regression-head path of the bias gradient and of the forward's bias rows: a
        // batch longer than the partial sums, with a tail, through both modes.
        let (batch, inputs) = (1003, 3);
        let (x, w, b) = (values(batch * inputs, 1.0), values(inputs, 2.0), [0.25]);
        let mut y = vec![f64::NAN; batch];
        linear_forward(&x, &w, Some(&b), batch, inputs, 1, &mut y);
        for (row, &got) in x.chunks_exact(inputs).zip(&y) {
            let want = b[0] + row.iter().zip(&w).map(|(a, c)| a * c).sum::<f64>();
            assert!((got - want).abs() < 1e-13, "{got} vs {want}");
        }
        let dy = values(batch, 4.0);
        let want: f64 = dy.iter().sum();
        let mut db = [f64::NAN];
        linear_backward_bias(&dy, batch, 1, &mut db, false);
        assert!((db[0] - want).abs() < 1e-12, "{} vs {want}", db[0]);
        linear_backward_bias(&dy, batch, 1, &mut db, true);
        assert!(
            (db[0] - 2.0 * want).abs() < 1e-12,
            "{} vs {}",
            db[0],
            2.0 * want
        );
    }

    #[test]
    fn zero_sized_layers() {
        // No outputs: nothing to write, and no division by zero in the row chunking.
        let mut y: [f64; 0] = [];
        linear_forward(&[1.0, 2.0], &[], Some(&[]), 1, 2, 0, &mut y);
        let mut db: [f64; 0] = [];
        linear_backward_bias(&[], 3, 0, &mut db, false);
        // No inputs: y is the bias.
        let mut y = [0.0f64; 2];
        linear_forward(&[], &[], Some(&[1.5, -2.0]), 1, 0, 2, &mut y);
        assert_eq!(y, [1.5, -2.0]);
    }
}
