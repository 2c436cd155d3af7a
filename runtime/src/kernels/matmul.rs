//! Batched matrix products (`torch.matmul` / `torch.bmm` on equal leading dims), such as
//! attention's `Q·Kᵀ` and `P·V`, and their VJPs.
//!
//! Every operand is a contiguous stack of `batch` row-major matrices. A transposed operand is
//! read through [`gemm()`]'s transpose flags, never copied. A stack of many small products is
//! split over the two threads by whole products ([`parallel::for_each_chunk`]); each product
//! is computed by the same single call either way, so the result does not depend on the
//! thread count.

use super::gemm;
use super::parallel::{self, SharedMut};
use crate::Float;

/// The fewest multiply-adds a stack must hold to be split over two threads: as for the
/// convolutions, below about 2¹⁸ the hand-over costs more than it saves.
const MIN_SPLIT_WORK: usize = 1 << 18;

/// One operand of a product: a stack of `batch` matrices of `len` elements each.
#[derive(Clone, Copy)]
struct Stack<'a, F> {
    data: &'a [F],
    len: usize,
}

impl<'a, F> Stack<'a, F> {
    #[track_caller]
    fn new(what: &str, name: &str, data: &'a [F], batch: usize, rows: usize, cols: usize) -> Self {
        let len = rows * cols;
        assert_eq!(
            data.len(),
            batch * len,
            "{what}: {name} has {} elements, expected {batch}×{rows}×{cols}",
            data.len()
        );
        Self { data, len }
    }

    fn get(&self, i: usize) -> &'a [F] {
        &self.data[i * self.len..(i + 1) * self.len]
    }
}

/// `c[i] = op(a[i]) · op(b[i])` for every `i < batch` (written, or added when `accumulate`),
/// where `op(X)` is `X` or, with its flag, `Xᵀ`: the shared engine of the forward and both
/// VJPs. `a` holds `m × k` matrices (`k × m` when `a_trans`), `b` `k × n` ones (`n × k`).
#[allow(clippy::too_many_arguments)]
#[track_caller]
fn products<F: Float>(
    what: &str,
    batch: usize,
    (m, k, n): (usize, usize, usize),
    a: &[F],
    a_trans: bool,
    b: &[F],
    b_trans: bool,
    c: &mut [F],
    accumulate: bool,
) {
    let a = Stack::new(what, "A", a, batch, m, k);
    let b = Stack::new(what, "B", b, batch, k, n);
    let c_len = m * n;
    assert_eq!(
        c.len(),
        batch * c_len,
        "{what}: C has {} elements, expected {batch}×{m}×{n}",
        c.len()
    );
    let beta = if accumulate { F::ONE } else { F::ZERO };
    let one = |i: usize, c_i: &mut [F]| {
        gemm(
            m,
            k,
            n,
            F::ONE,
            a.get(i),
            a_trans,
            b.get(i),
            b_trans,
            beta,
            c_i,
        );
    };
    let work = batch.saturating_mul(m.saturating_mul(k).saturating_mul(n));
    if batch < 2 || work < MIN_SPLIT_WORK || parallel::threads() < 2 {
        for (i, c_i) in c.chunks_exact_mut(c_len.max(1)).enumerate() {
            one(i, c_i);
        }
        return;
    }
    let chunks = parallel::chunk_count(batch);
    let c = SharedMut::new(c);
    parallel::for_each_chunk(chunks, |chunk, _| {
        for i in parallel::chunk_range(batch, chunks, chunk) {
            // SAFETY: each chunk is claimed once, and its products write disjoint ranges.
            one(i, unsafe { c.range(i * c_len..(i + 1) * c_len) });
        }
    });
}

/// `c[i] = op(a[i]) · op(b[i])` for every `i < batch`: `torch.matmul` of two `[batch, m, k]`
/// and `[batch, k, n]` tensors (flatten any leading dims into `batch`). `c` is
/// `[batch, m, n]`, overwritten, or added to when `accumulate`.
///
/// `a` is stored `[batch, m, k]`, or `[batch, k, m]` when `a_trans` (then each `a[i]` is used
/// transposed); likewise `b` is `[batch, k, n]`, or `[batch, n, k]` when `b_trans`. Attention
/// scores `Q·Kᵀ` are `batched_matmul(.., q, false, k, true, ..)`.
///
/// The VJP is two more products of the same kind, [`batched_matmul_backward`]:
/// `d op(A) = dC · op(B)ᵀ` and `d op(B) = op(A)ᵀ · dC`.
///
/// # Panics
/// If a slice's length disagrees with the sizes (a caller bug).
///
/// ```
/// use kiln_runtime::kernels::matmul::batched_matmul;
/// // Two 1×2 · 2×1 products: [1 2]·[3 4]ᵀ and [5 6]·[7 8]ᵀ, B stored as rows.
/// let mut c = [0.0f64; 2];
/// batched_matmul(2, 1, 2, 1, &[1.0, 2.0, 5.0, 6.0], false, &[3.0, 4.0, 7.0, 8.0], true, &mut c, false);
/// assert_eq!(c, [11.0, 83.0]);
/// ```
#[allow(clippy::too_many_arguments)]
pub fn batched_matmul<F: Float>(
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
    a: &[F],
    a_trans: bool,
    b: &[F],
    b_trans: bool,
    c: &mut [F],
    accumulate: bool,
) {
    products(
        "batched_matmul",
        batch,
        (m, k, n),
        a,
        a_trans,
        b,
        b_trans,
        c,
        accumulate,
    );
}

/// The VJPs of [`batched_matmul`] (same sizes, operands and flags) from `dc`
/// (`[batch, m, n]`): `da` gets `dC · op(B)ᵀ` in `a`'s own layout (`[batch, m, k]`, or
/// `[batch, k, m]` when `a_trans`), and `db` gets `op(A)ᵀ · dC` in `b`'s layout. Each is
/// written, or added when its `accumulate` flag is set; pass `None` for a gradient that is not
/// needed. Every one is a single [`batched_matmul`]-like product:
///
/// | stored layout  | gradient written                      |
/// |----------------|---------------------------------------|
/// | `a`            | `dA = dC · op(B)ᵀ`   (`m × n · n × k`)  |
/// | `a` transposed | `dA = op(B) · dCᵀ`   (`k × n · n × m`)  |
/// | `b`            | `dB = op(A)ᵀ · dC`   (`k × m · m × n`)  |
/// | `b` transposed | `dB = dCᵀ · op(A)`   (`n × m · m × k`)  |
///
/// # Panics
/// If a slice's length disagrees with the sizes (a caller bug).
#[allow(clippy::too_many_arguments)]
pub fn batched_matmul_backward<F: Float>(
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
    a: &[F],
    a_trans: bool,
    b: &[F],
    b_trans: bool,
    dc: &[F],
    da: Option<&mut [F]>,
    accumulate_a: bool,
    db: Option<&mut [F]>,
    accumulate_b: bool,
) {
    const WHAT: &str = "batched_matmul_backward";
    // Checked here too, so that a misshapen operand is reported even when its own gradient
    // is not requested.
    Stack::new(WHAT, "A", a, batch, m, k);
    Stack::new(WHAT, "B", b, batch, k, n);
    Stack::new(WHAT, "dC", dc, batch, m, n);
    if let Some(da) = da {
        if a_trans {
            products(
                WHAT,
                batch,
                (k, n, m),
                b,
                b_trans,
                dc,
                true,
                da,
                accumulate_a,
            );
        } else {
            products(
                WHAT,
                batch,
                (m, n, k),
                dc,
                false,
                b,
                !b_trans,
                da,
                accumulate_a,
            );
        }
    }
    if let Some(db) = db {
        if b_trans {
            products(
                WHAT,
                batch,
                (n, m, k),
                dc,
                true,
                a,
                a_trans,
                db,
                accumulate_b,
            );
        } else {
            products(
                WHAT,
                batch,
                (k, m, n),
                a,
                !a_trans,
                dc,
                false,
                db,
                accumulate_b,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::numeric_gradient;
    use crate::kernels::test_util::{assert_close, check_both_modes, values};

    /// Element (r, c) of `op(X)` for a stored `rows × cols` (or transposed) matrix.
    fn at(x: &[f64], trans: bool, rows: usize, cols: usize, r: usize, c: usize) -> f64 {
        if trans {
            x[c * rows + r]
        } else {
            x[r * cols + c]
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn naive(
        batch: usize,
        m: usize,
        k: usize,
        n: usize,
        a: &[f64],
        at_: bool,
        b: &[f64],
        bt: bool,
    ) -> Vec<f64> {
        let mut c = vec![0.0; batch * m * n];
        for i in 0..batch {
            let (ai, bi) = (
                &a[i * m * k..(i + 1) * m * k],
                &b[i * k * n..(i + 1) * k * n],
            );
            for r in 0..m {
                for col in 0..n {
                    let mut acc = 0.0;
                    for p in 0..k {
                        acc += at(ai, at_, m, k, r, p) * at(bi, bt, k, n, p, col);
                    }
                    c[(i * m + r) * n + col] = acc;
                }
            }
        }
        c
    }

    fn weighted(y: &[f64], r: &[f64]) -> f64 {
        y.iter().zip(r).map(|(a, b)| a * b).sum()
    }

    const FLAGS: [(bool, bool); 4] = [(false, false), (false, true), (true, false), (true, true)];

    #[test]
    fn forward_matches_naive_for_every_layout() {
        let (batch, m, k, n) = (3, 4, 5, 2);
        let (a, b) = (values(batch * m * k, 1.0), values(batch * k * n, 2.0));
        for (at_, bt) in FLAGS {
            let want = naive(batch, m, k, n, &a, at_, &b, bt);
            let mut c = vec![f64::NAN; batch * m * n];
            batched_matmul(batch, m, k, n, &a, at_, &b, bt, &mut c, false);
            assert_close(&c, &want, 1e-14, 1e-14, &format!("c {at_} {bt}"));
            let base = values(batch * m * n, 3.0);
            let mut c = base.clone();
            batched_matmul(batch, m, k, n, &a, at_, &b, bt, &mut c, true);
            let shifted: Vec<f64> = want.iter().zip(&base).map(|(w, b)| w + b).collect();
            assert_close(&c, &shifted, 1e-14, 1e-14, &format!("c+ {at_} {bt}"));
        }
    }

    #[test]
    fn backward_matches_finite_differences_for_every_layout() {
        let (batch, m, k, n) = (2, 3, 4, 5);
        let r = values(batch * m * n, 4.0);
        for (at_, bt) in FLAGS {
            let (mut a, mut b) = (values(batch * m * k, 1.0), values(batch * k * n, 2.0));
            let (a0, b0) = (a.clone(), b.clone());
            let what = format!("{at_} {bt}");
            // Linear in each operand, so the only error is the difference quotient's rounding
            // noise (about u·|L|/ε ≈ 1e-9).
            let num_a = numeric_gradient(
                |a| weighted(&naive(batch, m, k, n, a, at_, &b0, bt), &r),
                &mut a,
                1e-6,
            );
            check_both_modes(&num_a, 1e-6, 1e-8, &format!("dA {what}"), |da, acc| {
                batched_matmul_backward(
                    batch,
                    m,
                    k,
                    n,
                    &a0,
                    at_,
                    &b0,
                    bt,
                    &r,
                    Some(da),
                    acc,
                    None,
                    false,
                )
            });
            let num_b = numeric_gradient(
                |b| weighted(&naive(batch, m, k, n, &a0, at_, b, bt), &r),
                &mut b,
                1e-6,
            );
            check_both_modes(&num_b, 1e-6, 1e-8, &format!("dB {what}"), |db, acc| {
                batched_matmul_backward(
                    batch,
                    m,
                    k,
                    n,
                    &a0,
                    at_,
                    &b0,
                    bt,
                    &r,
                    None,
                    false,
                    Some(db),
                    acc,
                )
            });
        }
    }

    /// A stack large enough to be split over two threads gives the very bits of a product
    /// by product loop, and f32 stays close to the f64 reference.
    #[test]
    fn split_stacks_match_single_products_bit_for_bit() {
        let (batch, m, k, n) = (12, 24, 40, 32);
        assert!(batch * m * k * n >= MIN_SPLIT_WORK);
        let (a, b) = (values(batch * m * k, 1.0), values(batch * k * n, 2.0));
        let mut c = vec![0.0; batch * m * n];
        batched_matmul(batch, m, k, n, &a, false, &b, true, &mut c, false);
        for i in 0..batch {
            let mut ci = vec![0.0; m * n];
            gemm(
                m,
                k,
                n,
                1.0,
                &a[i * m * k..(i + 1) * m * k],
                false,
                &b[i * k * n..(i + 1) * k * n],
                true,
                0.0,
                &mut ci,
            );
            assert_eq!(ci, c[i * m * n..(i + 1) * m * n], "product {i}");
        }
        let f = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
        let mut c32 = vec![0.0f32; batch * m * n];
        batched_matmul(batch, m, k, n, &f(&a), false, &f(&b), true, &mut c32, false);
        let c32: Vec<f64> = c32.iter().map(|&x| x as f64).collect();
        assert_close(&c32, &c, 1e-4, 1e-4, "c f32");
    }

    #[test]
    fn empty_stacks_and_matrices() {
        let mut c: [f64; 0] = [];
        batched_matmul(0, 2, 3, 4, &[], false, &[], false, &mut c, false);
        // k = 0: the product is empty, so C is zeroed (or kept when accumulating).
        let mut c = [5.0f64; 4];
        batched_matmul(1, 2, 0, 2, &[], false, &[], false, &mut c, true);
        assert_eq!(c, [5.0; 4]);
        batched_matmul(1, 2, 0, 2, &[], false, &[], false, &mut c, false);
        assert_eq!(c, [0.0; 4]);
    }
}
