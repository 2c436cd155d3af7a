//! Matrix-vector products, without packing: the `m = 1` (batch-1 inference) and `n = 1`
//! cases, and small problems run as one matrix-vector product per row or column of `C`.
//!
//! Packing exists to reuse each element of `A` and `B` many times from cache; a
//! matrix-vector product uses each matrix element once, so packing would only add a copy.
//! Instead the matrix is streamed in place, in whichever of two forms has unit stride:
//! - [`dot_rows`]: matrix rows are contiguous (e.g. `y = x·Wᵀ` with `W` stored `[n, k]`, the
//!   linear layer's forward pass): one dot product per output, four rows at a time so each
//!   load of `x` feeds four FMAs, with vector-wide partial sums reduced once at the end.
//! - [`axpy_cols`]: matrix columns are contiguous (e.g. `y = x·B` with `B` stored `[k, n]`):
//!   a block of outputs is held in registers and each row of the matrix is added into it,
//!   scaled by one element of `x`.

#![deny(unsafe_op_in_unsafe_fn)]

use super::driver::Problem;
use super::kernel::{fma_row, Elem, Kernel, MulAdd};

/// `y[j] = alpha · Σ_p M[j][p] · x[p] + beta · y[j]` for `j < len`, `p < k`, where `M[j][p]`
/// is at `mat + j·rs + p·cs`, `x[p]` at `x + p·incx` and `y[j]` at `y + j·incy`.
pub(super) struct Gemv<T> {
    pub len: usize,
    pub k: usize,
    pub alpha: T,
    pub mat: *const T,
    pub rs: isize,
    pub cs: isize,
    pub x: *const T,
    pub incx: isize,
    /// When zero, `y` is not read.
    pub beta: T,
    pub y: *mut T,
    pub incy: isize,
}

impl<T: Elem> Gemv<T> {
    /// Runs the product with `K`'s vector widths if the layout has a unit-stride form;
    /// returns `false` (having done nothing) if it has none.
    ///
    /// # Safety
    /// The pointers and strides must describe valid memory for the sizes (see [`Gemv`]), and
    /// `y` must not overlap `mat` or `x`.
    #[inline(always)]
    pub(super) unsafe fn run<K: Kernel<T = T>>(&self) -> bool {
        if self.cs == 1 && self.incx == 1 {
            // SAFETY: forwarded from the caller; the layout is the one `dot_rows` needs.
            unsafe { K::dot_rows(self) };
            true
        } else if self.rs == 1 {
            // SAFETY: forwarded from the caller; the layout is the one `axpy_cols` needs.
            unsafe { K::axpy_cols(self) };
            true
        } else {
            false
        }
    }

    /// Writes output `j` given its dot product `s`.
    ///
    /// # Safety
    /// `j < len` and `y` valid as described in [`Gemv`].
    #[inline(always)]
    unsafe fn store(&self, j: usize, s: T) {
        // SAFETY: `j < len`, so the element is inside `y`.
        let y = unsafe { self.y.offset(j as isize * self.incy) };
        // SAFETY: as above; `y` is read only when `beta` is non-zero.
        unsafe {
            *y = if self.beta == T::ZERO {
                self.alpha * s
            } else {
                self.alpha * s + self.beta * *y
            };
        }
    }
}

/// `acc[i] += a[i] · b[i]` lane by lane.
#[inline(always)]
fn fma_lanes<T: Elem, F: MulAdd<T>, const W: usize>(acc: &mut [T; W], a: &[T; W], b: &[T; W]) {
    for ((c, &x), &y) in acc.iter_mut().zip(a).zip(b) {
        *c = F::mul_add(x, y, *c);
    }
}

/// The sum of the lanes, pairwise (halving the width each step) so that it vectorises and
/// rounds like a tree rather than a chain.
#[inline(always)]
fn sum_lanes<T: Elem, const W: usize>(mut v: [T; W]) -> T {
    let mut w = W;
    while w > 1 {
        let half = w / 2;
        for i in 0..half {
            v[i] = v[i] + v[i + half];
        }
        if w % 2 == 1 {
            v[0] = v[0] + v[w - 1];
        }
        w = half;
    }
    v[0]
}

/// The matrix-vector product for unit-stride rows and `x` (`cs == 1`, `incx == 1`), with
/// `W`-lane partial sums.
///
/// # Safety
/// As for [`Gemv::run`], and `cs == 1`, `incx == 1`.
#[inline(always)]
pub(super) unsafe fn dot_rows<T: Elem, F: MulAdd<T>, const W: usize>(v: &Gemv<T>) {
    debug_assert!(v.cs == 1 && v.incx == 1);
    let (k, chunks) = (v.k, v.k / W);
    let row = |j: usize| v.mat.wrapping_offset(j as isize * v.rs);
    // SAFETY (for the reads below): `j + q < len` and `p < k` (or a chunk `c·W..(c+1)·W`
    // with `c < k / W`), so every element read is inside `M` or `x`; `[T; W]` has the
    // alignment of `T`.
    let mut j = 0;
    while j + 4 <= v.len {
        let r = [row(j), row(j + 1), row(j + 2), row(j + 3)];
        let mut acc = [[T::ZERO; W]; 4];
        for c in 0..chunks {
            // SAFETY: see above.
            unsafe {
                let xv = &*v.x.add(c * W).cast::<[T; W]>();
                fma_lanes::<T, F, W>(&mut acc[0], &*r[0].add(c * W).cast(), xv);
                fma_lanes::<T, F, W>(&mut acc[1], &*r[1].add(c * W).cast(), xv);
                fma_lanes::<T, F, W>(&mut acc[2], &*r[2].add(c * W).cast(), xv);
                fma_lanes::<T, F, W>(&mut acc[3], &*r[3].add(c * W).cast(), xv);
            }
        }
        let mut tail = [T::ZERO; 4];
        for p in chunks * W..k {
            // SAFETY: see above.
            let xp = unsafe { *v.x.add(p) };
            for (t, r) in tail.iter_mut().zip(r) {
                // SAFETY: see above.
                *t = F::mul_add(unsafe { *r.add(p) }, xp, *t);
            }
        }
        for (q, (acc, t)) in acc.into_iter().zip(tail).enumerate() {
            // SAFETY: `j + q < len`.
            unsafe { v.store(j + q, sum_lanes(acc) + t) };
        }
        j += 4;
    }
    while j < v.len {
        let r = row(j);
        let mut acc = [T::ZERO; W];
        for c in 0..chunks {
            // SAFETY: see above.
            unsafe {
                fma_lanes::<T, F, W>(
                    &mut acc,
                    &*r.add(c * W).cast(),
                    &*v.x.add(c * W).cast::<[T; W]>(),
                );
            }
        }
        let mut tail = T::ZERO;
        for p in chunks * W..k {
            // SAFETY: see above.
            tail = F::mul_add(unsafe { *r.add(p) }, unsafe { *v.x.add(p) }, tail);
        }
        // SAFETY: `j < len`.
        unsafe { v.store(j, sum_lanes(acc) + tail) };
        j += 1;
    }
}

/// The matrix-vector product for unit-stride columns (`rs == 1`): blocks of `W` outputs are
/// accumulated in registers while the matrix is streamed row by row (`p`).
///
/// # Safety
/// As for [`Gemv::run`], and `rs == 1`.
#[inline(always)]
pub(super) unsafe fn axpy_cols<T: Elem, F: MulAdd<T>, const W: usize>(v: &Gemv<T>) {
    debug_assert!(v.rs == 1);
    // SAFETY (for the reads below): `p < k` and `j0 + jj < len`, so every element read is
    // inside `M` or `x`.
    let mut j0 = 0;
    while j0 + W <= v.len {
        let mut acc = [T::ZERO; W];
        for p in 0..v.k {
            // SAFETY: see above.
            unsafe {
                let xp = *v.x.offset(p as isize * v.incx);
                let col = &*v.mat.offset(p as isize * v.cs).add(j0).cast::<[T; W]>();
                fma_row::<T, F, W>(&mut acc, xp, col);
            }
        }
        for (jj, &s) in acc.iter().enumerate() {
            // SAFETY: `j0 + jj < len`.
            unsafe { v.store(j0 + jj, s) };
        }
        j0 += W;
    }
    let rest = v.len - j0;
    if rest > 0 {
        let mut acc = [T::ZERO; W];
        for p in 0..v.k {
            // SAFETY: see above.
            unsafe {
                let xp = *v.x.offset(p as isize * v.incx);
                let col = v.mat.offset(p as isize * v.cs).add(j0);
                for (jj, a) in acc.iter_mut().enumerate().take(rest) {
                    *a = F::mul_add(xp, *col.add(jj), *a);
                }
            }
        }
        for (jj, &s) in acc.iter().enumerate().take(rest) {
            // SAFETY: `j0 + jj < len`.
            unsafe { v.store(j0 + jj, s) };
        }
    }
}

/// The matrix-vector product that computes row `i` of `C` (`len = n`): `M = op(B)ᵀ`,
/// `x` = row `i` of `op(A)`.
#[inline(always)]
fn row_of_c<T: Elem>(p: &Problem<T>, i: usize) -> Gemv<T> {
    let i = i as isize;
    Gemv {
        len: p.n,
        k: p.k,
        alpha: p.alpha,
        mat: p.b.ptr,
        rs: p.b.cs,
        cs: p.b.rs,
        x: p.a.ptr.wrapping_offset(i * p.a.rs),
        incx: p.a.cs,
        beta: p.beta,
        y: p.c.wrapping_offset(i * p.rsc),
        incy: p.csc,
    }
}

/// The matrix-vector product that computes column `j` of `C` (`len = m`): `M = op(A)`,
/// `x` = column `j` of `op(B)`.
#[inline(always)]
fn col_of_c<T: Elem>(p: &Problem<T>, j: usize) -> Gemv<T> {
    let j = j as isize;
    Gemv {
        len: p.m,
        k: p.k,
        alpha: p.alpha,
        mat: p.a.ptr,
        rs: p.a.rs,
        cs: p.a.cs,
        x: p.b.ptr.wrapping_offset(j * p.b.cs),
        incx: p.b.rs,
        beta: p.beta,
        y: p.c.wrapping_offset(j * p.csc),
        incy: p.rsc,
    }
}

/// Runs the whole problem as matrix-vector products, one per row of `C` or one per column,
/// whichever has a unit-stride form (rows first: they are contiguous in row-major `C`).
/// Returns `false`, having done nothing, if neither has.
///
/// # Safety
/// `p` must describe valid memory (see [`Problem`]).
#[inline(always)]
pub(super) unsafe fn by_gemv<K: Kernel>(p: &Problem<K::T>) -> bool {
    let unit = |v: &Gemv<K::T>| (v.cs == 1 && v.incx == 1) || v.rs == 1;
    if unit(&row_of_c(p, 0)) {
        for i in 0..p.m {
            // SAFETY: row `i < m` of `C` with its operands lies inside the problem's memory.
            unsafe { row_of_c(p, i).run::<K>() };
        }
        true
    } else if unit(&col_of_c(p, 0)) {
        for j in 0..p.n {
            // SAFETY: column `j < n` of `C` with its operands lies inside the problem's memory.
            unsafe { col_of_c(p, j).run::<K>() };
        }
        true
    } else {
        false
    }
}
