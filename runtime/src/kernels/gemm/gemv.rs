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
#[allow(clippy::needless_range_loop)] // indexing vectorises to full-width FMAs; zips did not
fn fma_lanes<T: Elem, F: MulAdd<T>, const W: usize>(acc: &mut [T; W], a: &[T; W], b: &[T; W]) {
    for i in 0..W {
        acc[i] = F::mul_add(a[i], b[i], acc[i]);
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

/// The matrix-vector product for unit-stride rows and `x` (`cs == 1`, `incx == 1`): one
/// dot product per output, with `W`-lane partial sums (several vectors, to cover the FMA
/// latency) then `L`-lane ones (one vector) for the tail of `k`.
///
/// One row at a time, not several sharing each load of `x`: the matrix is read once either
/// way and its stream (from L2 for a layer's weights) is the bound, and with several rows LLVM
/// vectorised across the rows (a shuffle per FMA) instead of along them.
///
/// # Safety
/// As for [`Gemv::run`], and `cs == 1`, `incx == 1`.
#[inline(always)]
pub(super) unsafe fn dot_rows<T: Elem, F: MulAdd<T>, const W: usize, const L: usize>(
    v: &Gemv<T>,
) {
    debug_assert!(v.cs == 1 && v.incx == 1);
    let k = v.k;
    for j in 0..v.len {
        let row = v.mat.wrapping_offset(j as isize * v.rs);
        // SAFETY (all reads below): `j < len` and every index read is `< k`, so inside row
        // `j` of `M` and inside `x`; `[T; N]` has the alignment of `T`.
        let mut wide = [T::ZERO; W];
        let mut p = 0;
        while p + W <= k {
            unsafe {
                fma_lanes::<T, F, W>(
                    &mut wide,
                    &*row.add(p).cast(),
                    &*v.x.add(p).cast::<[T; W]>(),
                )
            };
            p += W;
        }
        let mut narrow = [T::ZERO; L];
        while p + L <= k {
            unsafe {
                fma_lanes::<T, F, L>(
                    &mut narrow,
                    &*row.add(p).cast(),
                    &*v.x.add(p).cast::<[T; L]>(),
                )
            };
            p += L;
        }
        let mut tail = T::ZERO;
        while p < k {
            tail = F::mul_add(unsafe { *row.add(p) }, unsafe { *v.x.add(p) }, tail);
            p += 1;
        }
        let s = sum_lanes(wide) + sum_lanes(narrow) + tail;
        // SAFETY: `j < len`.
        unsafe { v.store(j, s) };
    }
}

/// The matrix-vector product for unit-stride columns (`rs == 1`): blocks of `W` outputs
/// (several vectors, to cover the FMA latency), then of `L` (one vector), then single ones,
/// are accumulated in registers while the matrix is streamed row by row (`p`).
///
/// # Safety
/// As for [`Gemv::run`], and `rs == 1`.
#[inline(always)]
pub(super) unsafe fn axpy_cols<T: Elem, F: MulAdd<T>, const W: usize, const L: usize>(
    v: &Gemv<T>,
) {
    debug_assert!(v.rs == 1);
    let mut j0 = 0;
    while j0 + W <= v.len {
        // SAFETY: outputs `j0 .. j0 + W` are `< len`.
        unsafe { axpy_block::<T, F, W>(v, j0) };
        j0 += W;
    }
    while j0 + L <= v.len {
        // SAFETY: as above.
        unsafe { axpy_block::<T, F, L>(v, j0) };
        j0 += L;
    }
    while j0 < v.len {
        // SAFETY: as above.
        unsafe { axpy_block::<T, F, 1>(v, j0) };
        j0 += 1;
    }
}

/// Outputs `j0 .. j0 + N` of [`axpy_cols`].
///
/// # Safety
/// As for [`axpy_cols`], and `j0 + N ≤ len`.
#[inline(always)]
unsafe fn axpy_block<T: Elem, F: MulAdd<T>, const N: usize>(v: &Gemv<T>, j0: usize) {
    let mut acc = [T::ZERO; N];
    for p in 0..v.k {
        // SAFETY: `p < k` and `j0 + N ≤ len`, so the reads are inside `x` and `M`.
        unsafe {
            let xp = *v.x.offset(p as isize * v.incx);
            let col = &*v.mat.offset(p as isize * v.cs).add(j0).cast::<[T; N]>();
            fma_row::<T, F, N>(&mut acc, xp, col);
        }
    }
    for (jj, &s) in acc.iter().enumerate() {
        // SAFETY: `j0 + jj < len`.
        unsafe { v.store(j0 + jj, s) };
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
