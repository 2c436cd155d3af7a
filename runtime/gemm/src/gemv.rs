//! Matrix-vector products, without packing: the `m = 1` (batch-1 inference) and `n = 1`
//! cases, and `C` too narrow for a tile, run as one matrix-vector product per row or column
//! of `C`.
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
//!
//! A product with few rows (or few columns) whose operands are both contiguous along a deep
//! `k` (`A·Bᵀ`) is not a matrix-vector product but several: [`dot_tiles`] takes it in 2-D
//! tiles of dot products, each load of `A` or `B` shared by several outputs.
//!
//! These kernels are written with explicit vector registers ([`Vector`]), see `simd.rs`.

#![deny(unsafe_op_in_unsafe_fn)]

use super::driver::Problem;
use super::kernel::{Elem, Kernel};
use super::simd::Vector;

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
        let dot = self.cs == 1 && self.incx == 1;
        let axpy = self.rs == 1;
        // Both forms apply only when `M` is a single row or column (`len == 1` or `k == 1`):
        // then the dot product runs along the longer of the two.
        if dot && !(axpy && self.len > self.k) {
            // SAFETY: forwarded from the caller; the layout is the one `dot_rows` needs.
            unsafe { K::dot_rows(self) };
            true
        } else if axpy {
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

/// The matrix-vector product for unit-stride rows and `x` (`cs == 1`, `incx == 1`): one
/// dot product per output, four rows at a time so that each load of `x` feeds four rows, then
/// the last two or three rows two at a time. (One at a time, a row's two FMA chains wait on
/// each other's latency: the two last rows of W4's 6 × 784 × 25 weight gradient, taken that
/// way, held it at 54 GFLOP/s with AVX-512, against 62 taken together.)
///
/// # Safety
/// As for [`Gemv::run`], `cs == 1`, `incx == 1`, and the CPU supports `V`'s instruction set.
#[inline(always)]
pub(super) unsafe fn dot_rows<V: Vector>(v: &Gemv<V::T>) {
    debug_assert!(v.cs == 1 && v.incx == 1);
    let mut j = 0;
    while j + 4 <= v.len {
        // SAFETY: rows `j .. j + 4` exist; forwarded from the caller otherwise.
        let sums = unsafe { dot_block::<V, 4>(v, j) };
        for (q, s) in sums.into_iter().enumerate() {
            // SAFETY: `j + q < len`.
            unsafe { v.store(j + q, s) };
        }
        j += 4;
    }
    if j + 2 <= v.len {
        // SAFETY: rows `j .. j + 2` exist; forwarded from the caller otherwise.
        let sums = unsafe { dot_block::<V, 2>(v, j) };
        for (q, s) in sums.into_iter().enumerate() {
            // SAFETY: `j + q < len`.
            unsafe { v.store(j + q, s) };
        }
        j += 2;
    }
    if j < v.len {
        // SAFETY: row `j` exists; forwarded from the caller otherwise.
        let [s] = unsafe { dot_block::<V, 1>(v, j) };
        // SAFETY: `j < len`.
        unsafe { v.store(j, s) };
    }
}

/// The dot products of rows `j .. j + R` of `M` with `x`: two vector accumulators per row
/// (two independent FMA chains), then one vector step, then a scalar tail of `k`.
///
/// # Safety
/// As for [`dot_rows`], and `j + R ≤ len`.
#[inline(always)]
unsafe fn dot_block<V: Vector, const R: usize>(v: &Gemv<V::T>, j: usize) -> [V::T; R] {
    let (k, l) = (v.k, V::LANES);
    let rows: [*const V::T; R] =
        std::array::from_fn(|q| v.mat.wrapping_offset((j + q) as isize * v.rs));
    // SAFETY (all the loads below): rows `j .. j + R < len` of `M` and `x` have `k` elements
    // and every load covers indices `< k`; the caller guarantees the instruction set.
    let mut acc = [[unsafe { V::zero() }; 2]; R];
    let mut p = 0;
    while p + 2 * l <= k {
        unsafe {
            let (x0, x1) = (V::load(v.x.add(p)), V::load(v.x.add(p + l)));
            for (a, row) in acc.iter_mut().zip(rows) {
                a[0] = V::mul_add(V::load(row.add(p)), x0, a[0]);
                a[1] = V::mul_add(V::load(row.add(p + l)), x1, a[1]);
            }
        }
        p += 2 * l;
    }
    if p + l <= k {
        unsafe {
            let x0 = V::load(v.x.add(p));
            for (a, row) in acc.iter_mut().zip(rows) {
                a[0] = V::mul_add(V::load(row.add(p)), x0, a[0]);
            }
        }
        p += l;
    }
    std::array::from_fn(|q| {
        // (When `k < LANES` no vector step ran: skip the reduction of zeros.)
        let mut s = if p == 0 {
            V::T::ZERO
        } else {
            unsafe { V::add(acc[q][0], acc[q][1]).sum() }
        };
        for i in p..k {
            s = s + unsafe { *rows[q].add(i) * *v.x.add(i) };
        }
        s
    })
}

/// The widest register of any [`Vector`] (16 × f32), for stack buffers.
const MAX_LANES: usize = 16;

/// The matrix-vector product for unit-stride columns (`rs == 1`): blocks of 8 registers of
/// outputs (8 independent FMA chains), then of one register, are accumulated in registers
/// while the matrix is streamed row by row (`p`). The last outputs (fewer than a register)
/// are, with contiguous outputs, one register ending at the last output, overlapping the
/// previous one; else (or with fewer outputs than a register) they are taken one by one.
///
/// The overlapping register is computed before any output is written, from the outputs'
/// original values, and stored last: its outputs that the blocks also computed get the same
/// bits (the same operations in the same order), and `beta · y` reads each `y` once. Taken
/// one by one instead, the last 8 outputs of W1's 1000 × 1 × 1 product cost a tenth of the
/// call (AVX-512: 25–26 GFLOP/s against 29–31 at 992 rows).
///
/// # Safety
/// As for [`Gemv::run`], `rs == 1`, and the CPU supports `V`'s instruction set.
#[inline(always)]
pub(super) unsafe fn axpy_cols<V: Vector>(v: &Gemv<V::T>) {
    debug_assert!(v.rs == 1 && V::LANES <= MAX_LANES);
    let l = V::LANES;
    let whole = v.len - v.len % l;
    let last = (whole < v.len && v.len >= l && v.incy == 1).then(|| {
        let j0 = v.len - l;
        // SAFETY: outputs `j0 .. len` exist; the rest from the caller.
        let [acc] = unsafe { axpy_sums::<V, 1>(v, j0) };
        // SAFETY: as above; `y` is contiguous here and read before anything is written.
        (j0, unsafe { scaled_output(v, j0, acc) })
    });
    let mut j0 = 0;
    while j0 + 8 * l <= v.len {
        // SAFETY: outputs `j0 .. j0 + 8·LANES` are `< len`; the rest from the caller.
        unsafe { axpy_block::<V, 8>(v, j0) };
        j0 += 8 * l;
    }
    while j0 + l <= v.len {
        // SAFETY: as above.
        unsafe { axpy_block::<V, 1>(v, j0) };
        j0 += l;
    }
    if let Some((at, out)) = last {
        // SAFETY: outputs `at .. at + LANES = len` are contiguous in `y`.
        unsafe { out.store(v.y.add(at)) };
        return;
    }
    let rest = v.len - j0;
    if rest > 0 {
        let mut acc = [V::T::ZERO; MAX_LANES];
        for p in 0..v.k {
            // SAFETY: `p < k` and `j0 + rest = len`, so the reads are inside `x` and `M`.
            unsafe {
                let xp = *v.x.offset(p as isize * v.incx);
                let col = v.mat.offset(p as isize * v.cs).add(j0);
                for (jj, a) in acc.iter_mut().enumerate().take(rest) {
                    *a = *a + xp * *col.add(jj);
                }
            }
        }
        for (jj, &s) in acc.iter().enumerate().take(rest) {
            // SAFETY: `j0 + jj < len`.
            unsafe { v.store(j0 + jj, s) };
        }
    }
}

/// The sums `Σ_p x[p] · M[p][j]` of outputs `j0 .. j0 + U·LANES` of [`axpy_cols`], one
/// register per `LANES` outputs.
///
/// # Safety
/// As for [`axpy_cols`], and `j0 + U·LANES ≤ len`.
#[inline(always)]
unsafe fn axpy_sums<V: Vector, const U: usize>(v: &Gemv<V::T>, j0: usize) -> [V; U] {
    let l = V::LANES;
    // SAFETY (the vector operations): the caller guarantees the instruction set.
    let mut acc = [unsafe { V::zero() }; U];
    for p in 0..v.k {
        // SAFETY: `p < k` and `j0 + U·LANES ≤ len`, so the reads are inside `x` and `M`.
        unsafe {
            let xp = V::splat(*v.x.offset(p as isize * v.incx));
            let col = v.mat.offset(p as isize * v.cs).add(j0);
            for (u, a) in acc.iter_mut().enumerate() {
                *a = V::mul_add(xp, V::load(col.add(u * l)), *a);
            }
        }
    }
    acc
}

/// `alpha · acc + beta · y` for the `LANES` contiguous outputs from `j0` (`y` read only when
/// `beta` is non-zero).
///
/// # Safety
/// Outputs `j0 .. j0 + LANES` exist and are contiguous in `y` (`incy == 1`); the CPU supports
/// `V`'s instruction set.
#[inline(always)]
unsafe fn scaled_output<V: Vector>(v: &Gemv<V::T>, j0: usize, acc: V) -> V {
    // SAFETY: as the caller guarantees.
    unsafe {
        let ab = V::mul(V::splat(v.alpha), acc);
        if v.beta == V::T::ZERO {
            ab
        } else {
            V::mul_add(V::splat(v.beta), V::load(v.y.add(j0)), ab)
        }
    }
}

/// Outputs `j0 .. j0 + U·LANES` of [`axpy_cols`], computed and written.
///
/// # Safety
/// As for [`axpy_cols`], and `j0 + U·LANES ≤ len`.
#[inline(always)]
unsafe fn axpy_block<V: Vector, const U: usize>(v: &Gemv<V::T>, j0: usize) {
    let l = V::LANES;
    // SAFETY: forwarded from the caller.
    let acc = unsafe { axpy_sums::<V, U>(v, j0) };
    if v.incy == 1 {
        // Contiguous outputs: updated as vectors.
        for (u, a) in acc.into_iter().enumerate() {
            // SAFETY: outputs `j0 .. j0 + U·LANES ≤ len` are contiguous in `y`; the caller
            // guarantees the instruction set.
            unsafe { scaled_output(v, j0 + u * l, a).store(v.y.add(j0 + u * l)) };
        }
        return;
    }
    let mut lanes = [V::T::ZERO; MAX_LANES];
    for (u, a) in acc.into_iter().enumerate() {
        // SAFETY: `lanes` holds `MAX_LANES ≥ LANES` elements.
        unsafe { a.store(lanes.as_mut_ptr()) };
        for (i, &s) in lanes.iter().enumerate().take(l) {
            // SAFETY: `j0 + u·LANES + i < j0 + U·LANES ≤ len`.
            unsafe { v.store(j0 + u * l + i, s) };
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

/// Runs the whole problem without packing. With both operands contiguous along a deep `k`
/// and `C` more than one row or column: as [`dot_tiles`] (not in a lean kernel set,
/// [`Kernel::LEAN`]). Otherwise as matrix-vector
/// products, one per row of `C` or one per column, whichever has a unit-stride form. When
/// both have: one per row when `C` is a single row or
/// at least as tall as wide (rows are contiguous in row-major `C`, and longer products
/// amortise better), else one per column, so that the few rows of `A` stay in L1 while `B`
/// is streamed once (a 6 × 784 × 25 convolution weight gradient: 1.6× faster than by rows,
/// which re-read all of `B` for each row of `A`). Returns `false`, having done nothing, if
/// neither has.
///
/// # Safety
/// `p` must describe valid memory (see [`Problem`]).
#[inline(always)]
pub(super) unsafe fn by_gemv<K: Kernel>(p: &Problem<K::T>) -> bool {
    let tiles = !K::LEAN && p.a.cs == 1 && p.b.rs == 1;
    if tiles && p.m > 1 && p.n > 1 && deep_for_dot_tiles::<K>(p.k) {
        // SAFETY: forwarded from the caller, with the layout `dot_tiles` needs.
        unsafe { K::dot_tiles(p) };
        return true;
    }
    let unit = |v: &Gemv<K::T>| (v.cs == 1 && v.incx == 1) || v.rs == 1;
    let (rows, cols) = (unit(&row_of_c(p, 0)), unit(&col_of_c(p, 0)));
    let by_columns = cols && (p.n == 1 || (p.m > 1 && p.m < p.n));
    if rows && !by_columns {
        for i in 0..p.m {
            // SAFETY: row `i < m` of `C` with its operands lies inside the problem's memory.
            unsafe { row_of_c(p, i).run::<K>() };
        }
        true
    } else if cols {
        for j in 0..p.n {
            // SAFETY: column `j < n` of `C` with its operands lies inside the problem's memory.
            unsafe { col_of_c(p, j).run::<K>() };
        }
        true
    } else {
        false
    }
}

/// `C = alpha · A·B + beta · C` where the rows of `A` and the columns of `B` are contiguous
/// along `k` (`a.cs == 1`, `b.rs == 1`: an `A·Bᵀ` with both stored row-major, as a linear
/// layer's `x·Wᵀ` or a convolution's weight gradient `dy·colsᵀ`), in tiles of `R` rows of
/// `A` by `S` columns of `C`, read in place.
///
/// Each step of a tile loads `R + S` vectors for `R·S` multiply-adds, where [`dot_rows`] loads
/// five for four (each row of the matrix feeds one output): on few-row, deep products that
/// were bound by loads, such as W4's `6 × 784 × 25` weight gradient, the tile is bound by the
/// multiply-adds instead. One accumulator per output (`R·S` independent chains) and one
/// reduction per output at the end, so this pays off only on deep products (`k` of many
/// vectors, see [`deep_for_dot_tiles`]).
///
/// A tile at the edge of `C` repeats its last row or column of operands and stores only the
/// outputs inside `C`: every output is the same sum, in the same order, wherever its tile
/// starts, so the result does not depend on how a caller splits `C` between threads.
///
/// The smaller of the two operands is the one streamed by the inner loop (for `6 × 784 × 25`,
/// the 18 KiB of `A` stays in L1 while each block of `S` rows of `B` is read once).
///
/// # Safety
/// `p` must describe valid memory (see [`Problem`]), with `a.cs == 1` and `b.rs == 1`, and the
/// CPU must support `V`'s instruction set.
#[inline(always)]
pub(super) unsafe fn dot_tiles<V: Vector, const R: usize, const S: usize>(p: &Problem<V::T>) {
    debug_assert!(p.a.cs == 1 && p.b.rs == 1 && p.m > 0 && p.n > 0);
    let a_row = |i: usize| p.a.ptr.wrapping_offset(i as isize * p.a.rs);
    let b_col = |j: usize| p.b.ptr.wrapping_offset(j as isize * p.b.cs);
    // The two loop orders repeat the tile's code rather than calling a closure: a closure
    // does not inherit this function's target features, LLVM did not inline one this large,
    // and the vector operations inside it became calls (35 times slower, measured).
    // SAFETY (both loops): every tile's operands are rows `< m` of `A` and columns `< n` of
    // `B` (the edge tiles repeat the last one), and it stores only outputs inside `C`.
    if p.m <= p.n {
        for j in (0..p.n).step_by(S) {
            let b = std::array::from_fn(|s| b_col((j + s).min(p.n - 1)));
            for i in (0..p.m).step_by(R) {
                let a = std::array::from_fn(|r| a_row((i + r).min(p.m - 1)));
                unsafe { store_dots(p, i, j, &dot_tile::<V, R, S>(a, b, p.k)) };
            }
        }
    } else {
        for i in (0..p.m).step_by(R) {
            let a = std::array::from_fn(|r| a_row((i + r).min(p.m - 1)));
            for j in (0..p.n).step_by(S) {
                let b = std::array::from_fn(|s| b_col((j + s).min(p.n - 1)));
                unsafe { store_dots(p, i, j, &dot_tile::<V, R, S>(a, b, p.k)) };
            }
        }
    }
}

/// Whether tiles of `r2` rows leave fewer rows of their last tile unused than tiles of `r1`
/// on `m` rows (a kernel set has two tile shapes for [`dot_tiles`], e.g. 4 × 3 and 3 × 4, so
/// that both a batch of 4 and a convolution's 6 output channels fill their tiles).
pub(super) fn wastes_fewer_rows(m: usize, r2: usize, r1: usize) -> bool {
    let unused = |r: usize| m.div_ceil(r) * r - m;
    unused(r2) < unused(r1)
}

/// Whether `k` is deep enough for [`dot_tiles`]: at least 16 vector steps. Below that the
/// reduction of every output at the end of its tile weighs too much, and the one-dimensional
/// [`dot_rows`] (two chains per output, no tile to fill) stays.
pub(super) fn deep_for_dot_tiles<K: Kernel>(k: usize) -> bool {
    k >= 16 * K::V::LANES
}

/// Whether `k` is deep enough for tiles of dot products to beat the packed path even where
/// that path fills its tiles: at least 64 vector steps, so that the reduction of each output
/// weighs little against its multiply-adds.
pub(super) fn very_deep_for_dot_tiles<K: Kernel>(k: usize) -> bool {
    k >= 64 * K::V::LANES
}

/// The `R × S` dot products of rows `a` of `A` with columns `b` of `B` (each `k` contiguous
/// elements): whole vectors into one accumulator per output, then the tail of `k` as one
/// more vector step over zero-padded copies, then its lanes summed.
///
/// # Safety
/// Every pointer must be valid for `k` elements, and the CPU must support `V`'s instruction
/// set.
#[inline(always)]
unsafe fn dot_tile<V: Vector, const R: usize, const S: usize>(
    a: [*const V::T; R],
    b: [*const V::T; S],
    k: usize,
) -> [[V::T; S]; R] {
    let l = V::LANES;
    // SAFETY (all the vector operations): every load covers indices `< k` of its row or
    // column; the caller guarantees the instruction set.
    let mut acc = [[unsafe { V::zero() }; S]; R];
    let p = k / l * l;
    // SAFETY: steps `< p ≤ k`; forwarded from the caller.
    unsafe { dot_steps(&mut acc, a, b, 0, p) };
    // The last `k − p < LANES` steps as one more vector step over copies padded with zeros
    // (as scalars, each output's chain of dependent additions cost more than the vector
    // steps of a shallow product), then each accumulator's lanes summed: the same sum, in
    // the same order, as [`dot_cols`] gives.
    // SAFETY (both): the rows and columns are readable for `k`.
    let a_tail: [[V::T; MAX_LANES]; R] =
        std::array::from_fn(|r| unsafe { padded_tail::<V>(a[r], p, k) });
    let b_tail: [[V::T; MAX_LANES]; S] =
        std::array::from_fn(|s| unsafe { padded_tail::<V>(b[s], p, k) });
    let mut sums = [[V::T::ZERO; S]; R];
    // Plain loops over constant bounds (unrolled), not closures: a closure that captured
    // `acc` by reference and was not inlined kept the accumulators in memory, stored back at
    // every step of the loop above (half the speed).
    for ((out, accs), a_tail) in sums.iter_mut().zip(&acc).zip(&a_tail) {
        for ((o, &v), b_tail) in out.iter_mut().zip(accs).zip(&b_tail) {
            // SAFETY: the padded copies hold `MAX_LANES ≥ LANES` elements; the caller
            // guarantees the instruction set.
            *o = unsafe { with_tail::<V>(v, a_tail, b_tail, k - p).sum() };
        }
    }
    sums
}

/// `acc[r][s] += a[r][q .. q + LANES] · b[s][q .. q + LANES]`, lane by lane, for `q` from
/// `from` to `to` (a multiple of `LANES` apart) in steps of `LANES`: the inner loop of the
/// tiles of dot products, `R + S` loads for `R·S` multiply-adds a step.
///
/// # Safety
/// Every row of `a` and `b` readable over `from .. to`, and the CPU supports `V`'s
/// instruction set.
#[inline(always)]
unsafe fn dot_steps<V: Vector, const R: usize, const S: usize>(
    acc: &mut [[V; S]; R],
    a: [*const V::T; R],
    b: [*const V::T; S],
    from: usize,
    to: usize,
) {
    let mut q = from;
    while q < to {
        // SAFETY: step `q .. q + LANES ≤ to` of every row; forwarded from the caller.
        unsafe {
            let bv: [V; S] = std::array::from_fn(|s| V::load(b[s].add(q)));
            for (accs, row) in acc.iter_mut().zip(a) {
                let av = V::load(row.add(q));
                for (c, &bs) in accs.iter_mut().zip(&bv) {
                    *c = V::mul_add(av, bs, *c);
                }
            }
        }
        q += V::LANES;
    }
}

/// Steps `from .. k` (fewer than `LANES`) of a row or column, then zeros.
///
/// # Safety
/// `src .. src + k` readable.
#[inline(always)]
unsafe fn padded_tail<V: Vector>(src: *const V::T, from: usize, k: usize) -> [V::T; MAX_LANES] {
    let mut v = [V::T::ZERO; MAX_LANES];
    for (x, q) in v.iter_mut().zip(from..k) {
        // SAFETY: `q < k`.
        *x = unsafe { *src.add(q) };
    }
    v
}

/// `acc` plus the padded tails' products, when there is a tail (`len > 0`).
///
/// # Safety
/// The CPU supports `V`'s instruction set.
#[inline(always)]
unsafe fn with_tail<V: Vector>(
    acc: V,
    a_tail: &[V::T; MAX_LANES],
    b_tail: &[V::T; MAX_LANES],
    len: usize,
) -> V {
    if len == 0 {
        return acc;
    }
    // SAFETY: both copies hold `MAX_LANES ≥ LANES` elements; forwarded from the caller.
    unsafe { V::mul_add(V::load(a_tail.as_ptr()), V::load(b_tail.as_ptr()), acc) }
}

/// Steps of `k` one block of [`dot_cols`] covers: `R` rows of `A` over this many steps (16 KiB
/// of f32 for 8 rows) stay in L1 while every column of `B` passes by.
pub(super) const DOT_COLS_BLOCK: usize = 512;

/// `C = alpha · A·B + beta · C` where the rows of `A` are contiguous along `k` and column `j`
/// of `B` is the `k` contiguous elements from `b.ptr + b_cols[j]`: a convolution's weight
/// gradient `dy · colsᵀ`, whose column matrix is never formed (each of its rows, a column of
/// `B`, is the padded input read from its tap's offset). In tiles of `R` rows of `A` by `S`
/// columns of `B`, as [`dot_tiles`], but blocked along `k`: for each block of `R` rows, the
/// steps are taken [`DOT_COLS_BLOCK`] at a time, every column of `B` passing by the rows while
/// they sit in L1, each tile's vector accumulators kept in `acc` between blocks, and reduced
/// once at the end. Nothing is packed: the packed path transposed all of `B` into panels for
/// each product, as many element copies as the product has columns times `k`, which cost as
/// much as the multiply-adds on the few rows of a convolution's output channels.
///
/// Consecutive columns of `B` in one tile are a convolution's neighbouring taps, the same
/// input one element apart: their loads share cache lines.
///
/// A tile at the edge of `C` repeats its last row or column of operands and stores only the
/// outputs inside `C`; every output is the same sum, in the same order, on every call.
///
/// # Safety
/// `p` must describe valid memory (see [`Problem`]), with `a.cs == 1` and `b_cols` set;
/// `acc` must be valid for writing `n.div_ceil(S) · R · S · LANES` elements and overlap
/// nothing else; the CPU must support `V`'s instruction set.
#[inline(always)]
pub(super) unsafe fn dot_cols<V: Vector, const R: usize, const S: usize>(
    p: &Problem<V::T>,
    acc: *mut V::T,
) {
    debug_assert!(p.a.cs == 1 && !p.b_cols.is_null() && p.m > 0 && p.n > 0);
    let l = V::LANES;
    // The whole vectors of `k`; the last `k − kv < LANES` steps are one more vector step
    // over zero-padded copies after the blocks. (Folding that final pass into the last
    // block's tiles kept the tails live beside the accumulators: 40–70% slower.)
    let kv = p.k / l * l;
    let block = DOT_COLS_BLOCK.max(l) / l * l;
    let a_row = |i: usize| p.a.ptr.wrapping_offset(i.min(p.m - 1) as isize * p.a.rs);
    // SAFETY: `j.min(n − 1) < n` offsets are readable.
    let b_col = |j: usize| {
        p.b.ptr
            .wrapping_add(unsafe { *p.b_cols.add(j.min(p.n - 1)) })
    };
    let tile_acc = |j: usize| acc.wrapping_add((j / S) * R * S * l);
    for i in (0..p.m).step_by(R) {
        let a: [*const V::T; R] = std::array::from_fn(|r| a_row(i + r));
        let mut start = 0;
        while start < kv {
            let end = (start + block).min(kv);
            for j in (0..p.n).step_by(S) {
                let b: [*const V::T; S] = std::array::from_fn(|s| b_col(j + s));
                let saved = tile_acc(j);
                // SAFETY (the loads and stores): the tile's accumulators lie in `acc`
                // (`j / S < n.div_ceil(S)` tiles of `R·S` vectors); every operand load
                // covers steps `< kv ≤ k` of a row of `A` or a column of `B`; the caller
                // guarantees the instruction set.
                let mut sums: [[V; S]; R] = if start == 0 {
                    [[unsafe { V::zero() }; S]; R]
                } else {
                    std::array::from_fn(|r| {
                        std::array::from_fn(|s| unsafe { V::load(saved.add((r * S + s) * l)) })
                    })
                };
                // SAFETY: steps `start .. end ≤ kv ≤ k`, whole vectors; as above.
                unsafe { dot_steps(&mut sums, a, b, start, end) };
                for (r, accs) in sums.iter().enumerate() {
                    for (s, v) in accs.iter().enumerate() {
                        // SAFETY: as above.
                        unsafe { v.store(saved.add((r * S + s) * l)) };
                    }
                }
            }
            start = end;
        }
        // The last `k − kv < LANES` steps, and the sums, as in `dot_tile`.
        let a_tail: [[V::T; MAX_LANES]; R] = std::array::from_fn(|r| {
            // SAFETY: rows of `A`, readable for `k`.
            unsafe { padded_tail::<V>(a[r], kv, p.k) }
        });
        for j in (0..p.n).step_by(S) {
            let b: [*const V::T; S] = std::array::from_fn(|s| b_col(j + s));
            let b_tail: [[V::T; MAX_LANES]; S] = std::array::from_fn(|s| {
                // SAFETY: columns of `B`, readable for `k`.
                unsafe { padded_tail::<V>(b[s], kv, p.k) }
            });
            let saved = tile_acc(j);
            let mut out = [[V::T::ZERO; S]; R];
            for (r, row) in out.iter_mut().enumerate() {
                for (s, o) in row.iter_mut().enumerate() {
                    // SAFETY: the tile's accumulators, stored by the blocks above (read only
                    // when a block ran); the caller guarantees the instruction set.
                    unsafe {
                        let acc = if kv > 0 {
                            V::load(saved.add((r * S + s) * l))
                        } else {
                            V::zero()
                        };
                        *o = with_tail::<V>(acc, &a_tail[r], &b_tail[s], p.k - kv).sum();
                    }
                }
            }
            // SAFETY: `i < m`, `j < n`; forwarded from the caller.
            unsafe { store_dots(p, i, j, &out) };
        }
    }
}

/// Writes the outputs of the tile at `(i, j)` that lie inside `C`.
///
/// # Safety
/// `p` must describe valid memory (see [`Problem`]), with `i < m` and `j < n`.
#[inline(always)]
unsafe fn store_dots<T: Elem, const R: usize, const S: usize>(
    p: &Problem<T>,
    i: usize,
    j: usize,
    sums: &[[T; S]; R],
) {
    for (r, row) in sums.iter().enumerate().take(p.m - i) {
        for (s, &sum) in row.iter().enumerate().take(p.n - j) {
            // SAFETY: `(i + r, j + s)` is inside `C`, read only when `beta` is non-zero.
            unsafe {
                let c =
                    p.c.offset((i + r) as isize * p.rsc + (j + s) as isize * p.csc);
                *c = if p.beta == T::ZERO {
                    p.alpha * sum
                } else {
                    p.alpha * sum + p.beta * *c
                };
            }
        }
    }
}
