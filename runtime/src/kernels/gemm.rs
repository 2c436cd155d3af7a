//! General matrix multiplication on row-major slices, with transposes expressed as strides.

use crate::Float;

/// `C = alpha · op(A) · op(B) + beta · C` on row-major slices.
///
/// `op(A)` is `m × k`: `A` is stored `m × k` row-major, or `k × m` row-major when `a_trans`
/// (then `op(A) = Aᵀ`). Likewise `op(B)` is `k × n`, stored `k × n` or (`b_trans`) `n × k`.
/// `C` is `m × n`. A transpose is a swap of the row and column strides handed to
/// [`Float::gemm_raw`], so no operand is ever copied. When `beta` is zero `C` is only written
/// (its previous contents, even NaN, do not leak into the result). Any of `m`, `k`, `n` may be
/// zero; with `k == 0` the product is empty and `C` becomes `beta · C`.
///
/// # Panics
/// If a slice's length is not the product of its dimensions (a caller bug).
///
/// ```
/// use kiln_runtime::kernels::gemm;
/// // [1 2 3] · [1 2 3]ᵀ: A is 1×3, B is stored 1×3 and used transposed (3×1).
/// let a = [1.0f64, 2.0, 3.0];
/// let mut c = [10.0];
/// gemm(1, 3, 1, 1.0, &a, false, &a, true, 0.5, &mut c);
/// assert_eq!(c, [14.0 + 5.0]);
/// ```
#[allow(clippy::too_many_arguments)]
pub fn gemm<F: Float>(
    m: usize,
    k: usize,
    n: usize,
    alpha: F,
    a: &[F],
    a_trans: bool,
    b: &[F],
    b_trans: bool,
    beta: F,
    c: &mut [F],
) {
    assert_eq!(
        a.len(),
        m * k,
        "gemm: A has {} elements, expected {m}×{k}",
        a.len()
    );
    assert_eq!(
        b.len(),
        k * n,
        "gemm: B has {} elements, expected {k}×{n}",
        b.len()
    );
    assert_eq!(
        c.len(),
        m * n,
        "gemm: C has {} elements, expected {m}×{n}",
        c.len()
    );
    if m == 0 || n == 0 {
        return;
    }
    // Strides (row, column) of op(X) in elements. A row-major `r × c` matrix has strides
    // (c, 1); its transpose reads the same memory with the strides swapped.
    let (rsa, csa) = if a_trans { (1, m) } else { (k, 1) };
    let (rsb, csb) = if b_trans { (1, k) } else { (n, 1) };
    // SAFETY: the asserts above guarantee that every index the strides can reach lies inside
    // its slice: op(A)[i][p] is at i·rsa + p·csa ≤ (m−1)·rsa + (k−1)·csa < m·k, and likewise
    // for B and C. `c` is a unique borrow, so it cannot overlap `a` or `b`.
    unsafe {
        F::gemm_raw(
            m,
            k,
            n,
            alpha,
            a.as_ptr(),
            stride(rsa),
            stride(csa),
            b.as_ptr(),
            stride(rsb),
            stride(csb),
            beta,
            c.as_mut_ptr(),
            stride(n),
            1,
        );
    }
}

/// A dimension as a stride. Slices never hold more than `isize::MAX` bytes, so a length that
/// fits a slice fits an `isize`.
#[inline(always)]
fn stride(elements: usize) -> isize {
    elements as isize
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook triple loop, in f64, on explicitly transposed indices.
    #[allow(clippy::too_many_arguments)]
    fn naive(
        m: usize,
        k: usize,
        n: usize,
        alpha: f64,
        a: &[f64],
        a_trans: bool,
        b: &[f64],
        b_trans: bool,
        beta: f64,
        c: &[f64],
    ) -> Vec<f64> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0.0;
                for p in 0..k {
                    let av = if a_trans { a[p * m + i] } else { a[i * k + p] };
                    let bv = if b_trans { b[j * k + p] } else { b[p * n + j] };
                    acc += av * bv;
                }
                out[i * n + j] = alpha * acc + beta * c[i * n + j];
            }
        }
        out
    }

    /// Deterministic, non-trivial test values (no two equal, mixed signs).
    fn values(len: usize, seed: f64) -> Vec<f64> {
        (0..len)
            .map(|i| ((i as f64 + seed) * 0.7371).sin() * 2.0)
            .collect()
    }

    fn check<F: Float>(m: usize, k: usize, n: usize, tol: f64) {
        for a_trans in [false, true] {
            for b_trans in [false, true] {
                let (a, b, c0) = (values(m * k, 1.0), values(k * n, 2.0), values(m * n, 3.0));
                let (alpha, beta) = (0.75, -1.25);
                let want = naive(m, k, n, alpha, &a, a_trans, &b, b_trans, beta, &c0);
                let conv = |v: &[f64]| v.iter().map(|&x| F::from_f64(x)).collect::<Vec<F>>();
                let mut c = conv(&c0);
                gemm(
                    m,
                    k,
                    n,
                    F::from_f64(alpha),
                    &conv(&a),
                    a_trans,
                    &conv(&b),
                    b_trans,
                    F::from_f64(beta),
                    &mut c,
                );
                for (idx, (got, want)) in c.iter().zip(&want).enumerate() {
                    let err = (got.to_f64() - want).abs();
                    assert!(
                        err <= tol * (1.0 + want.abs()),
                        "{} m={m} k={k} n={n} a_trans={a_trans} b_trans={b_trans} [{idx}]: \
                         got {got}, want {want}",
                        F::NAME
                    );
                }
            }
        }
    }

    #[test]
    fn all_transposes_match_triple_loop_f64() {
        for &(m, k, n) in &[
            (1, 1, 1),
            (2, 3, 4),
            (5, 1, 3),
            (7, 9, 2),
            (3, 17, 11),
            (16, 8, 33),
        ] {
            check::<f64>(m, k, n, 1e-13);
        }
    }

    #[test]
    fn all_transposes_match_triple_loop_f32() {
        for &(m, k, n) in &[
            (1, 1, 1),
            (2, 3, 4),
            (5, 1, 3),
            (7, 9, 2),
            (3, 17, 11),
            (16, 8, 33),
        ] {
            check::<f32>(m, k, n, 1e-5);
        }
    }

    #[test]
    fn known_product() {
        // [[1,2,3],[4,5,6]] · [[7,8],[9,10],[11,12]] = [[58,64],[139,154]]
        let a = [1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0];
        let b = [7.0f64, 8.0, 9.0, 10.0, 11.0, 12.0];
        let mut c = [f64::NAN; 4];
        gemm(2, 3, 2, 1.0, &a, false, &b, false, 0.0, &mut c);
        assert_eq!(c, [58.0, 64.0, 139.0, 154.0]);
        // Aᵀ is 3×2 stored as A (2×3): Aᵀ·A = [[17,22,27],[22,29,36],[27,36,45]].
        let mut c = [0.0f64; 9];
        gemm(3, 2, 3, 1.0, &a, true, &a, false, 0.0, &mut c);
        assert_eq!(c, [17.0, 22.0, 27.0, 22.0, 29.0, 36.0, 27.0, 36.0, 45.0]);
    }

    #[test]
    fn empty_dimensions() {
        // k = 0: the product is empty, so C = beta · C.
        let mut c = [1.0f64, 2.0, 3.0, 4.0];
        gemm(2, 0, 2, 1.0, &[], false, &[], true, 0.5, &mut c);
        assert_eq!(c, [0.5, 1.0, 1.5, 2.0]);
        let mut c = [f64::NAN; 4];
        gemm(2, 0, 2, 1.0, &[], false, &[], false, 0.0, &mut c);
        assert_eq!(c, [0.0; 4]);
        // m = 0 or n = 0: nothing to write.
        let mut empty: [f64; 0] = [];
        gemm(0, 3, 2, 1.0, &[], false, &[1.0; 6], false, 0.0, &mut empty);
        gemm(2, 3, 0, 1.0, &[1.0; 6], false, &[], false, 0.0, &mut empty);
    }

    #[test]
    #[should_panic(expected = "gemm: B has 5 elements, expected 3×2")]
    fn wrong_length_panics() {
        let mut c = [0.0f64; 4];
        gemm(
            2, 3, 2, 1.0, &[0.0; 6], false, &[0.0; 5], false, 0.0, &mut c,
        );
    }
}
