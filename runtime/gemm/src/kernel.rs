//! Element types, the multiply-add flavours, and the register-tile microkernels.
//!
//! A microkernel computes one `MR × NR` tile of `C` from a packed `MR × kc` sliver of `A`
//! and a packed `kc × NR` sliver of `B` (both `kc`-major: step `p` of the A sliver is `MR`
//! consecutive elements, one per row). Variants read `B`'s rows in place or through offsets,
//! and `A`'s rows in place (`Kernel::tile_in_place`), where packing would cost more than it
//! saves.
//!
//! The accumulators are a fixed-size array `[[T; NR]; MR]` that LLVM keeps in vector
//! registers: each row update `acc[i][..] += a[i] · b[..]` is `NR` independent multiply-adds
//! on consecutive lanes, which the vectoriser turns into `NR / lanes` vector FMAs with `a[i]`
//! broadcast from memory.
//!
//! Two details keep that code generation robust rather than lucky:
//! - The row loop is unrolled by the `kernels!` macro (it receives the row indices as
//!   literals), so the only loop left around the FMAs is the `k` loop. When the row loop was a
//!   `for` loop, LLVM sometimes vectorised the `k` loop instead, with gathers, and the kernel
//!   ran 70 times slower.
//! - Each kernel is its own never-inlined `#[target_feature]` function (see `kernels!`), so
//!   the same source becomes AVX-512, AVX2+FMA or baseline code, and LLVM vectorises it
//!   alone rather than as part of the driver's loop nest.
//!
//! The update of `C` at the end of a tile is written with explicit vectors (`simd.rs`): left
//! to the vectoriser, it came out as 256 scalar multiplies and stores.

#![deny(unsafe_op_in_unsafe_fn)]

use super::buffer::Scratch;
use super::driver::{column_block, ASource, BSource, Problem};
use super::gemv::{axpy_cols, dot_cols, dot_rows, dot_tiles, wastes_fewer_rows, Gemv};
use super::pack::pack;
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
use super::simd::{F32x16, F32x8, F64x4};
use super::simd::{Lanes, Vector};
use std::ops::{Add, Mul};

/// An element type the GEMM computes in: `f32` or `f64`.
pub trait Elem:
    Copy + PartialEq + Add<Output = Self> + Mul<Output = Self> + Send + Sync + 'static
{
    /// `0`.
    const ZERO: Self;
    /// `1`.
    const ONE: Self;
    /// `self · b + c` with one rounding. Only fast where the code is compiled with FMA (or on
    /// an architecture where FMA is baseline); elsewhere it is a libm call.
    fn fused_mul_add(self, b: Self, c: Self) -> Self;
}

impl Elem for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    #[inline(always)]
    fn fused_mul_add(self, b: Self, c: Self) -> Self {
        self.mul_add(b, c)
    }
}

impl Elem for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    #[inline(always)]
    fn fused_mul_add(self, b: Self, c: Self) -> Self {
        self.mul_add(b, c)
    }
}

/// How a kernel computes `a · b + c`.
pub(super) trait MulAdd<T> {
    /// `a · b + c`.
    fn mul_add(a: T, b: T, c: T) -> T;
}

/// A fused multiply-add (one `vfmadd`), for code compiled with FMA.
#[cfg_attr(
    not(any(target_arch = "x86", target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code) // only the baseline kernels exist there, and they use `Unfused`
)]
pub(super) struct Fused;

/// A multiply then an add, for baseline code without FMA, where `mul_add` would be a call.
#[cfg_attr(target_arch = "aarch64", allow(dead_code))] // aarch64's baseline has FMA
pub(super) struct Unfused;

impl<T: Elem> MulAdd<T> for Fused {
    #[inline(always)]
    fn mul_add(a: T, b: T, c: T) -> T {
        a.fused_mul_add(b, c)
    }
}

impl<T: Elem> MulAdd<T> for Unfused {
    #[inline(always)]
    fn mul_add(a: T, b: T, c: T) -> T {
        a * b + c
    }
}

/// The cache-blocking parameters of the packed GEMM (in elements).
///
/// `kc` is the depth of one rank-`kc` update: a `kc × NR` sliver of packed `B` should stay in
/// L1 while the microkernel sweeps the `A` block. `mc × kc` of packed `A` should stay in L2.
/// `kc × nc` of packed `B` is the block shared by all `A` blocks (L3-sized).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blocking {
    /// Rows of `A` (and `C`) per packed block; rounded to a multiple of `MR` when used.
    pub mc: usize,
    /// Depth (`k`) of a packed block.
    pub kc: usize,
    /// Columns of `B` (and `C`) per packed block; rounded to a multiple of `NR` when used.
    pub nc: usize,
}

/// The operand [`Kernel::pack`] packs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Operand {
    /// Rows of `A`, into panels of `MR` lanes.
    A,
    /// Columns of `B`, into panels of `NR` lanes.
    B,
}

/// Where a microkernel writes its tile: `C[i][j]` is at `ptr + i·rs + j·cs` for
/// `i < rows ≤ MR`, `j < cols ≤ NR`, and becomes `alpha · acc[i][j] + beta · C[i][j]`, plus
/// `bias[j]` when `bias` is not null.
pub(super) struct Tile<T> {
    pub ptr: *mut T,
    pub rs: isize,
    pub cs: isize,
    pub rows: usize,
    pub cols: usize,
    pub alpha: T,
    /// When zero, `C` is not read (so NaN or stale values in it cannot leak into the result).
    pub beta: T,
    /// The tile's columns' entries of a bias added to every row (`cols` elements), or null.
    pub bias: *const T,
    /// Whether the kernel asks the cache for this tile of `C` before its `k` loop (see
    /// [`prefetch_tile`]); the driver sets it from [`fetches_c`].
    pub fetch: bool,
}

/// The shallowest rank-`kc` update whose tiles of `C` are always fetched ahead (see
/// [`prefetch_tile`]). A shallower `k` loop is too short to hide the fetch, and for a `C`
/// that is in cache the prefetches only cost instructions: without them, measured on both
/// instruction sets (benches/gemm.rs, one thread, Intel Xeon, 2026-12-04), W2's
/// `64 × 10 × 64` input gradient went from 86 to 95 GFLOP/s (AVX-512) and 60 to 65 (AVX2),
/// and W4's `150 × 16 × 100` from 68 to 74 (AVX2). The benchmark calls a product again and
/// again, so its `C` stays in cache; in a training step it often does not (a weight
/// gradient's buffer was last touched a step earlier), and there the prefetch pays from
/// `k` = 32: skipping it below 64 (W6's attention scores, `k` = 32, gained 7% in the
/// benchmark) took W6's step 1-2% slower.
const FETCH_C_MIN_DEPTH: usize = 32;

/// The smallest `C` (in bytes) whose tiles are fetched ahead whatever the depth: a `C` this
/// large is unlikely to be in cache. Without it, W3's `256 × 10 × 2048` input gradient (a
/// 2 MiB `C` written by a rank-10 update) took W3's step 1.5% slower with AVX2.
const FETCH_C_MIN_BYTES: usize = 512 * 1024;

/// Whether the tiles of a `rows × cols` `C` of `T` in a rank-`depth` update are fetched
/// ahead (see [`FETCH_C_MIN_DEPTH`] and [`FETCH_C_MIN_BYTES`]).
pub(super) fn fetches_c<T>(depth: usize, rows: usize, cols: usize) -> bool {
    depth >= FETCH_C_MIN_DEPTH
        || rows
            .saturating_mul(cols)
            .saturating_mul(std::mem::size_of::<T>())
            >= FETCH_C_MIN_BYTES
}

/// One instruction set's kernels for one element type.
pub(super) trait Kernel {
    /// The element type.
    type T: Elem;
    /// The vector register type of this instruction set (for the code that is not
    /// auto-vectorised: the update of `C`, packing transposes, the matrix-vector paths).
    type V: Vector<T = Self::T>;
    /// Rows of the register tile.
    const MR: usize;
    /// Columns of the register tile.
    const NR: usize;
    /// The default cache blocking for this tile on this instruction set.
    const BLOCKING: Blocking;
    /// Whether a single rank-`kc` update (`k ≤ kc`) of a `C` whose rows are a multiple of
    /// 4 KiB apart walks its tiles along `C`'s rows instead of down its columns (measured
    /// faster with the AVX-512 f32 kernels only, see `driver::macro_kernel`).
    const ROWS_FIRST_WHEN_C_ALIASES: bool;
    /// Whether the kernel set reads a row-major `A` in place ([`Kernel::tile_in_place`]);
    /// only the f32 kernels of AVX-512 and AVX2 do, so that the other sets do not compile
    /// one more copy of their microkernel (kiln-runtime's build time).
    const READS_A_IN_PLACE: bool;
    /// Whether the kernel set goes without two of the driver's shape-specific paths: tiles
    /// of dot products ([`Kernel::dot_tiles`]) and `B` read in place (`driver::b_in_place`).
    /// The products they take are then packed. Only the baseline set on x86 is lean: it
    /// runs only on CPUs without AVX2 and FMA (most made before 2013–2015), and compiling
    /// those paths once more for it took about 5% of the runtime's clean build. It keeps
    /// the matrix-vector products ([`Kernel::dot_rows`], [`Kernel::axpy_cols`]), which batch-1
    /// products need most (packing was 4 to 18 times slower there).
    const LEAN: bool;

    /// Computes one tile: `acc = Σ_p a[p·MR + i] · b[p·ldb + j]` over `p < kc`, then writes
    /// `alpha · acc + beta · C` into `c`. `ldb` is `NR` for a packed panel of `B`, or the row
    /// stride of a row-major `B` read in place.
    ///
    /// # Safety
    /// `a` must be valid for reading `kc · MR` elements and `b` for `NR` elements at each of
    /// `b + p·ldb`, `p < kc`; `c` must describe `rows × cols` writable elements (and readable,
    /// unless `beta` is zero) that do not overlap `a` or `b`.
    unsafe fn tile(kc: usize, a: *const Self::T, b: *const Self::T, ldb: usize, c: &Tile<Self::T>);

    /// [`Kernel::tile`] with `A` read in place: a whole tile of `MR` rows of a row-major `A`,
    /// step `p` of row `i` at `a + i·lda + p` (`B`'s rows `ldb` apart, as for
    /// [`Kernel::tile`]: a packed panel's `NR`, or the row stride of `B` in place). The same
    /// multiply-adds in the same order as [`Kernel::tile`] on the packed sliver of those rows,
    /// so the same bits.
    ///
    /// # Safety
    /// As for [`Kernel::tile`], with `a + i·lda + p` readable for every `i < MR`, `p < kc`,
    /// and only for a kernel set that [`Kernel::READS_A_IN_PLACE`] (the others panic).
    unsafe fn tile_in_place(
        kc: usize,
        a: *const Self::T,
        lda: usize,
        b: *const Self::T,
        ldb: usize,
        c: &Tile<Self::T>,
    );

    /// [`Kernel::tile`] with the rows of `B` through offsets: step `p` reads the `NR`
    /// elements at `b + rows[p]`.
    ///
    /// # Safety
    /// As for [`Kernel::tile`], with `rows` readable for `kc` offsets and `NR` elements
    /// readable at each `b + rows[p]`.
    unsafe fn tile_rows(
        kc: usize,
        a: *const Self::T,
        b: *const Self::T,
        rows: *const usize,
        c: &Tile<Self::T>,
    );

    /// The matrix-vector product with unit-stride matrix rows ([`dot_rows`]).
    ///
    /// # Safety
    /// As for [`dot_rows`].
    unsafe fn dot_rows(v: &Gemv<Self::T>);

    /// The matrix-vector product with unit-stride matrix columns ([`axpy_cols`]).
    ///
    /// # Safety
    /// As for [`axpy_cols`].
    unsafe fn axpy_cols(v: &Gemv<Self::T>);

    /// The whole product as tiles of dot products ([`dot_tiles`]), this kernel set's tile
    /// shape.
    ///
    /// # Safety
    /// As for [`dot_tiles`].
    unsafe fn dot_tiles(p: &Problem<Self::T>);

    /// `B`'s columns through offsets as tiles of dot products blocked along `k`
    /// ([`dot_cols`]), this kernel set's tile shape, with its accumulators in this thread's
    /// packing buffer.
    ///
    /// # Safety
    /// As for [`dot_cols`] (without `acc`).
    unsafe fn dot_cols(p: &Problem<Self::T>);

    /// [`pack`] into the panels of `operand` (`MR` lanes for `A`, `NR` for `B`), out of line:
    /// one copy of the packing loops per kernel set (each width a constant in it), called by
    /// every path that packs.
    ///
    /// # Safety
    /// As for [`pack`], with `w` the operand's panel width.
    unsafe fn pack(
        operand: Operand,
        len: usize,
        kc: usize,
        src: *const Self::T,
        s_lane: isize,
        s_step: isize,
        dst: *mut Self::T,
    );

    /// [`column_block`] with this kernel set, out of line: one copy of the packed loop nest
    /// for both paths that run it (the packed product and the shared one), rather than one
    /// inlined into each (the entry points' code, and a clean build's time, grew by that).
    ///
    /// # Safety
    /// As for [`column_block`].
    unsafe fn column_block(
        p: &Problem<Self::T>,
        jc: usize,
        nc: usize,
        blocks: (usize, usize),
        a: ASource<Self::T>,
        b: BSource<'_, Self::T>,
    );
}

/// The first step of a tile's accumulation: `a · b + 0` per element (as [`fma_row`] onto a
/// zeroed row).
#[inline(always)]
pub(super) fn first_row<T: Elem, F: MulAdd<T>, const N: usize>(a: T, b: &[T; N]) -> [T; N] {
    std::array::from_fn(|j| F::mul_add(a, b[j], T::ZERO))
}

/// `acc[j] += a · b[j]` for every lane: `N / lanes` vector FMAs once vectorised.
#[inline(always)]
pub(super) fn fma_row<T: Elem, F: MulAdd<T>, const N: usize>(acc: &mut [T; N], a: T, b: &[T; N]) {
    for (c, &bj) in acc.iter_mut().zip(b) {
        *c = F::mul_add(a, bj, *c);
    }
}

/// Asks the cache to fetch the tile of `C` that [`store_tile`] will update, before the `k`
/// loop: `C` is the one operand the kernel touches only at the end, and when it is not in
/// cache (a large `C` does not fit L2) the stores would otherwise stall the next tile. The
/// `k` loop (hundreds of cycles) hides the latency. Measured on W3's `dW` (2048 × 2048 f32
/// `C`): the packed path lost ~6% waiting on these stores without it. Only when `c.fetch`
/// (see [`fetches_c`]).
#[inline(always)]
pub(super) fn prefetch_tile<T, const NR: usize>(c: &Tile<T>) {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    if c.fetch {
        #[cfg(target_arch = "x86")]
        use std::arch::x86::{_mm_prefetch, _MM_HINT_T0};
        #[cfg(target_arch = "x86_64")]
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // One prefetch per cache line of each row (and the row's last element, in case the
        // row straddles one more line than its length suggests).
        let per_line = (64 / std::mem::size_of::<T>()).max(1);
        for i in 0..c.rows {
            let row = c.ptr.wrapping_offset(i as isize * c.rs);
            let mut j = 0;
            while j < c.cols {
                // SAFETY: a prefetch is a hint: it never faults and has no effect on memory,
                // whatever the address.
                unsafe {
                    _mm_prefetch::<_MM_HINT_T0>(row.wrapping_offset(j as isize * c.cs).cast())
                };
                j += per_line;
            }
            let last = row.wrapping_offset((c.cols - 1) as isize * c.cs);
            // SAFETY: as above.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(last.cast()) };
        }
    }
    // (No prefetch hint elsewhere: the flag is read and ignored.)
    #[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
    let _ = c.fetch;
}

/// Writes an accumulated tile into `C` (see [`Tile`]), a tile of whole contiguous rows as
/// explicit vectors `V` (see `simd.rs` for why), a tile cut short or strided element by
/// element. (Tiles of at most one vector's columns are stored by [`store_narrow`].)
///
/// # Safety
/// `c` must describe `rows × cols` (`≤ MR × NR`) writable elements, readable unless `beta` is
/// zero, and the CPU must support `V`'s instruction set.
#[inline(always)]
pub(super) unsafe fn store_tile<V: Vector, const MR: usize, const NR: usize>(
    acc: &[[V::T; NR]; MR],
    c: &Tile<V::T>,
) {
    let alpha = c.alpha;
    let whole_rows = c.cols == NR && c.cs == 1;
    if whole_rows && c.rows == MR {
        // SAFETY (both): forwarded from the caller, with the tile full and its rows contiguous.
        if c.bias.is_null() {
            unsafe { store_rows::<V, MR, NR, false>(acc, MR, c) }
        } else {
            unsafe { store_rows::<V, MR, NR, true>(acc, MR, c) }
        }
        return;
    }
    // Edge tiles and non-unit column strides, from a copy: indexed by run-time bounds, it has
    // to live in memory, and the accumulators themselves then need not (the full tiles above
    // store them from registers).
    let acc = *acc;
    if whole_rows {
        // The last rows of `C` (fewer than `MR`), whole: as vectors.
        // SAFETY (both): forwarded from the caller, with the tile's rows whole and contiguous.
        if c.bias.is_null() {
            unsafe { store_rows::<V, MR, NR, false>(&acc, c.rows, c) }
        } else {
            unsafe { store_rows::<V, MR, NR, true>(&acc, c.rows, c) }
        }
    } else {
        // Columns cut short, or not contiguous: element by element, inside the bounds.
        for (i, row) in acc.iter().enumerate().take(c.rows) {
            for (j, &s) in row.iter().enumerate().take(c.cols) {
                // SAFETY: `i < rows` and `j < cols`.
                unsafe { store_element(c, i, j, alpha * s) };
            }
        }
    }
}

/// [`store_tile`] for a tile of at most one vector's columns (`c.cols ≤ LANES`), accumulated
/// in one vector per row: stored from the vectors, with the same arithmetic as `store_tile`
/// (the product by `alpha` lane by lane, then `beta · C` and the bias added element by element
/// where the row is cut short or its columns are not contiguous), without first widening the
/// tile to `NR` columns in memory.
///
/// # Safety
/// As for [`store_tile`], with `c.cols ≤ LANES` and `c.rows ≤ MR`.
#[inline(always)]
pub(super) unsafe fn store_narrow<V: Vector, const MR: usize>(acc: &[V; MR], c: &Tile<V::T>) {
    debug_assert!(c.cols <= V::LANES && c.rows <= MR && V::LANES <= 16);
    let (alpha, beta) = (c.alpha, c.beta);
    let whole = c.cols == V::LANES && c.cs == 1;
    // SAFETY (the vector operations): the caller guarantees the instruction set.
    let alpha_v = unsafe { V::splat(alpha) };
    for (i, &a) in acc.iter().enumerate().take(c.rows) {
        let dst = c.ptr.wrapping_offset(i as isize * c.rs);
        // SAFETY: as above.
        let ab = unsafe { V::mul(alpha_v, a) };
        if whole {
            // SAFETY: row `i` holds `LANES` contiguous elements of `C` (and the bias as many),
            // read only when `beta` is non-zero; the operations as in `store_rows`.
            unsafe {
                let out = if beta == V::T::ZERO {
                    ab
                } else {
                    V::mul_add(V::splat(beta), V::load(dst), ab)
                };
                let out = if c.bias.is_null() {
                    out
                } else {
                    V::add(out, V::load(c.bias))
                };
                out.store(dst);
            }
            continue;
        }
        let mut lanes = [V::T::ZERO; 16];
        // SAFETY: `lanes` holds 16 ≥ `LANES` elements (the widest vector is 16 f32).
        unsafe { ab.store(lanes.as_mut_ptr()) };
        for (j, &s) in lanes.iter().enumerate().take(c.cols) {
            // SAFETY: `i < rows` and `j < cols`.
            unsafe { store_element(c, i, j, s) };
        }
    }
}

/// Writes element `(i, j)` of a tile of `C` given `alpha · s` (the accumulated sum times
/// `alpha`): `+ beta · C` (read only when `beta` is non-zero) and `+ bias[j]`, element by
/// element as the edge tiles take them.
///
/// # Safety
/// `i < c.rows` and `j < c.cols`, with `c` as [`store_tile`] requires.
#[inline(always)]
unsafe fn store_element<T: Elem>(c: &Tile<T>, i: usize, j: usize, scaled: T) {
    // SAFETY: `(i, j)` is inside the tile, so inside `C` and its bias entries.
    unsafe {
        let d = c.ptr.offset(i as isize * c.rs + j as isize * c.cs);
        let out = if c.beta == T::ZERO {
            scaled
        } else {
            scaled + c.beta * *d
        };
        *d = if c.bias.is_null() {
            out
        } else {
            out + *c.bias.add(j)
        };
    }
}

/// [`store_tile`] for the first `rows` (`≤ MR`) rows of a tile whose rows are whole (`NR`
/// columns) and contiguous, as explicit vectors; `BIAS` (known when compiled, so the loop has
/// no test for it) adds `c.bias`. With `rows = MR`, a constant, the loop is unrolled and reads
/// the accumulators from registers.
///
/// # Safety
/// As for [`store_tile`], with `rows ≤ c.rows`, `c.cols == NR`, `c.cs == 1`, and `c.bias`
/// valid for `NR` elements when `BIAS`.
#[inline(always)]
unsafe fn store_rows<V: Vector, const MR: usize, const NR: usize, const BIAS: bool>(
    acc: &[[V::T; NR]; MR],
    rows: usize,
    c: &Tile<V::T>,
) {
    debug_assert!(NR.is_multiple_of(V::LANES));
    let beta = c.beta;
    // SAFETY: the caller guarantees the instruction set.
    let (alpha_v, beta_v) = unsafe { (V::splat(c.alpha), V::splat(beta)) };
    for (i, row) in acc.iter().enumerate().take(rows) {
        let dst = c.ptr.wrapping_offset(i as isize * c.rs);
        for u in (0..NR).step_by(V::LANES) {
            // SAFETY: the tile is full and its rows contiguous, so `dst + u .. dst + u +
            // LANES` is inside row `i` of `C` (`u + LANES ≤ NR`), as is the chunk of `row`
            // and, with `BIAS`, of the bias; `C` is read only when `beta` is non-zero.
            unsafe {
                let ab = V::mul(alpha_v, V::load(row.as_ptr().add(u)));
                let out = if beta == V::T::ZERO {
                    ab
                } else {
                    V::mul_add(beta_v, V::load(dst.add(u)), ab)
                };
                let out = if BIAS {
                    V::add(out, V::load(c.bias.add(u)))
                } else {
                    out
                };
                out.store(dst.add(u));
            }
        }
    }
}

/// The microkernel's ways of reading `B` (see the `kernels!` macro): packed panels.
const PACKED: u8 = 0;
/// `B` read in place with a run-time row stride.
const IN_PLACE: u8 = 1;
/// `B`'s rows through offsets ([`Kernel::tile_rows`]).
const BY_ROWS: u8 = 2;
/// `B` read in place as with `IN_PLACE`, and `A` too: step `p` of row `i` is at
/// `a + i·lda + p` ([`Kernel::tile_in_place`]).
const BOTH_IN_PLACE: u8 = 3;

/// The body of [`Kernel::tile_in_place`]: the microkernel's `BOTH_IN_PLACE` copy where the
/// kernel set reads `A` in place, and nothing compiled where it does not (the driver never
/// calls it there).
macro_rules! tile_in_place_body {
    (true, $kc:ident, $a:ident, $lda:ident, $b:ident, $ldb:ident, $c:ident) => {
        // SAFETY: forwarded from the caller, as for `tile`.
        unsafe {
            Self::tile_kernel::<BOTH_IN_PLACE>(
                $kc,
                $a,
                $b,
                $ldb,
                std::ptr::without_provenance($lda),
                $c,
            )
        }
    };
    (false, $kc:ident, $a:ident, $lda:ident, $b:ident, $ldb:ident, $c:ident) => {{
        let _ = ($kc, $a, $lda, $b, $ldb, $c);
        unreachable!("this kernel set packs A")
    }};
}

/// The body of [`Kernel::dot_tiles`]: `$body`, or unreachable in a lean set
/// ([`Kernel::LEAN`]; the driver never calls it there), so that the set does not compile it.
/// `on_x86`: the baseline set, lean on x86 only.
macro_rules! unless_lean {
    (false, $arg:ident, $body:block) => {
        $body
    };
    (on_x86, $arg:ident, $body:block) => {{
        #[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
        $body
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        {
            let _ = $arg;
            unreachable!("the baseline kernels on x86 have no tiles of dot products")
        }
    }};
}

/// A [`Kernel`] method whose body is a function of its own, never inlined, compiled with the
/// kernel set's target features (`[$feature]`, or `[]` for none): for the code several paths
/// share, so that it is compiled once per kernel set instead of inlined into each caller, and
/// runs with the set's vector instructions wherever it is called from. The method's caller
/// guarantees the body's safety conditions and runs the kernel set only on a CPU with its
/// features.
macro_rules! out_of_line {
    ([$($feat:literal)?] fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        #[inline(always)]
        unsafe fn $name($($arg: $ty),*) {
            /// # Safety
            /// As for the method, and the CPU supports the enabled features.
            $(#[target_feature(enable = $feat)])?
            #[inline(never)]
            unsafe fn out_of_line($($arg: $ty),*) {
                // SAFETY: forwarded from the caller.
                unsafe { $body }
            }
            // SAFETY: forwarded from the caller, who runs this kernel set only on a CPU with
            // its features.
            unsafe { out_of_line($($arg),*) }
        }
    };
}

/// [`Kernel::LEAN`] from a kernel set's `lean` entry.
macro_rules! lean_flag {
    (false) => {
        false
    };
    (on_x86) => {
        cfg!(any(target_arch = "x86", target_arch = "x86_64"))
    };
}

/// Defines one zero-sized kernel type per entry (`Name in module`: each set in a module of its
/// own, re-exported here, so that the sets compile in codegen units of their own). `rows`
/// lists the tile's row indices as literals (so the row loop is unrolled by the macro, see
/// the module docs), `nr` is the tile width, `vector` the register type of the matrix-vector
/// kernels, `features` the `target_feature`s the kernels are compiled with (none for the
/// baseline kernels), and
/// `rows_first_when_c_aliases` the kernel set's [`Kernel::ROWS_FIRST_WHEN_C_ALIASES`],
/// `a_in_place` its [`Kernel::READS_A_IN_PLACE`], `lean` its [`Kernel::LEAN`], `dot_tiles`
/// the two `(rows, columns)` shapes of its [`dot_tiles`] (the one that wastes fewer rows is
/// taken), and `dot_cols` the shape of its [`dot_cols`] tiles: for f32, as many
/// accumulators as the register file holds beside one vector of `A` and the `S` of `B` (24
/// of 32 zmm, 12 of 16 ymm), with `S` = 3, a 3-wide kernel's neighbouring taps (the f64 sets,
/// used by the gradient checks, are not tuned).
///
/// Each kernel is a separate, never-inlined function with its own `#[target_feature]`: when
/// the microkernel was inlined into the (already AVX-512) driver loop nest, LLVM left its
/// accumulators on the stack and ran 40 times slower; compiled alone it is vectorised as
/// intended. A call per `MR × NR × kc` tile costs nothing measurable.
macro_rules! kernels {
    ($(
        $(#[doc = $doc:literal])*
        $(#[cfg($cfg:meta)])?
        $name:ident in $module:ident {
            elem: $t:ty,
            fma: $fma:ty,
            $(features: $feat:literal,)?
            rows: [$($i:literal)+],
            nr: $nr:literal,
            blocking: ($mc:literal, $kc:literal, $nc:literal),
            vector: $vec:ty,
            rows_first_when_c_aliases: $rows_first:literal,
            a_in_place: $a_in_place:tt,
            lean: $lean:tt,
            dot_tiles: [($dr:literal, $ds:literal), ($dr2:literal, $ds2:literal)],
            dot_cols: ($cr:literal, $cs:literal) $(,)?
        }
    )*) => {$(
        // Each kernel set in a module of its own, which the compiler gives a codegen unit of
        // its own: the sets' microkernels and tiles of dot products are then optimised in
        // parallel (one unit held all of them, a serial tail of a clean build).
        $(#[cfg($cfg)])?
        mod $module {
            use super::*;

            $(#[doc = $doc])*
            pub(crate) struct $name;

            impl $name {
                /// The microkernel proper (see [`Kernel::tile`]).
                ///
                /// # Safety
                /// As for [`Kernel::tile`], and the CPU supports the enabled features.
                ///
                /// Compiled four times: for packed panels (`MODE` = `PACKED`, the stride is
                /// the constant `NR`, which measured ~10% faster on shallow products than a
                /// run-time stride), for `B` read in place (`IN_PLACE`, stride `ldb`), for
                /// `B`'s rows through offsets (`BY_ROWS`, see [`Kernel::tile_rows`]), and for
                /// `A` and `B` both read in place (`BOTH_IN_PLACE`, see
                /// [`Kernel::tile_in_place`]).
                ///
                /// `aux` is the offsets with `BY_ROWS`, `A`'s row stride (as the address of a
                /// pointer without provenance) with `BOTH_IN_PLACE`, and unused otherwise: one
                /// argument for the two, so that all six stay in registers (a seventh is passed
                /// on the stack, a load per tile that cost up to 6% on 16³ products).
                $(#[target_feature(enable = $feat)])?
                #[inline(never)]
                unsafe fn tile_kernel<const MODE: u8>(
                    kc: usize,
                    a: *const $t,
                    b: *const $t,
                    ldb: usize,
                    aux: *const usize,
                    c: &Tile<$t>,
                ) {
                    const MR: usize = [$($i),+].len();
                    let (lda, rows) = (aux.addr(), aux);
                    let ldb = if MODE == PACKED { $nr } else { ldb };
                    prefetch_tile::<$t, $nr>(c);
                    // `A` in place: each row's start, indexed by the step (one index register
                    // for all rows; a pointer stepped from row to row cost an add per row).
                    // (Through `black_box`, LLVM does not see the rows as `a + i·lda` and keeps
                    // a register per row, rather than rebuilding each address with adds.)
                    let a_rows: [*const $t; MR] = std::array::from_fn(|i| a.wrapping_add(i * lda));
                    let a_rows = if MODE == BOTH_IN_PLACE {
                        std::hint::black_box(a_rows)
                    } else {
                        a_rows
                    };
                    let (mut a, mut b, mut rows, mut step) = (a, b, rows, 0);
                    // Element `i` of step `p`'s `A` operands, whose packed sliver starts at `at`.
                    let a_at = |at: *const $t, p: usize, i: usize| {
                        // SAFETY: the caller guarantees `kc` steps of `MR` elements of `A`, packed
                        // or in place.
                        unsafe {
                            if MODE == BOTH_IN_PLACE {
                                *a_rows[i].add(p)
                            } else {
                                *at.add(i)
                            }
                        }
                    };
                    // One step's operands: where its packed `A` elements start, its index, and
                    // the `NR` elements of `B`'s next row.
                    let mut next = || {
                        let row = if MODE == BY_ROWS {
                            // SAFETY: the caller guarantees `kc` offsets.
                            let at = unsafe { *rows };
                            rows = rows.wrapping_add(1);
                            b.wrapping_add(at)
                        } else {
                            b
                        };
                        // SAFETY: the caller guarantees `kc` steps of `NR` elements of `b`; this
                        // is one of them. `[T; N]` has the alignment of `T`.
                        let bv = unsafe { &*row.cast::<[$t; $nr]>() };
                        let (av, p) = (a, step);
                        if MODE == BOTH_IN_PLACE {
                            step += 1;
                        } else {
                            a = a.wrapping_add(MR);
                        }
                        if MODE != BY_ROWS {
                            b = b.wrapping_add(ldb);
                        }
                        (av, p, bv)
                    };
                    // The first step sets the accumulators (a multiply-add onto zero: the same
                    // bits as adding it to zeroed ones) instead of starting from a zeroed array:
                    // LLVM kept that array on the stack and loaded it back, a store-forwarding
                    // stall that took a fifth of a shallow product's time (`k` = 10).
                    // A tile whose columns end in the first half of a packed panel (the last
                    // panel of `B`, cut short) runs half the multiply-adds: W4's `150 × 16 ×
                    // 100` has a last panel of 4 of the AVX-512 kernels' 32 columns (0.96 →
                    // 1.04 times matrixmultiply's speed). Packed panels only: the other ways
                    // of reading `B` serve products of whole panels mostly, and each copy of
                    // this loop costs build time.
                    const HALF: usize = $nr / 2;
                    let half = MODE == PACKED && HALF == <$vec as Vector>::LANES && c.cols <= HALF;
                    let acc = if kc == 0 {
                        [[<$t as Elem>::ZERO; $nr]; MR]
                    } else if half {
                        // One vector per row (`NR` is two vectors in every kernel set), with
                        // explicit vectors: LLVM vectorised the half-width arrays badly.
                        type V = $vec;
                        let (av, p, bv) = next();
                        // SAFETY (the vector operations): the caller runs this kernel set only
                        // on a CPU with its features; each step's `B` row holds `NR` elements,
                        // of which the first `LANES` are loaded.
                        let mut acc: [V; MR] = unsafe {
                            let b0 = V::load(bv.as_ptr());
                            // A multiply-add onto zero, as `first_row` (the same bits, signed
                            // zeros included).
                            [$( V::mul_add(V::splat(a_at(av, p, $i)), b0, V::zero()) ),+]
                        };
                        for _ in 1..kc {
                            let (av, p, bv) = next();
                            // SAFETY: as above.
                            unsafe {
                                let b0 = V::load(bv.as_ptr());
                                $( acc[$i] = V::mul_add(V::splat(a_at(av, p, $i)), b0, acc[$i]); )+
                            }
                        }
                        // SAFETY: forwarded from the caller (`c` describes a valid tile of
                        // at most `LANES` columns).
                        return unsafe { store_narrow::<V, MR>(&acc, c) };
                    } else {
                        let (av, p, bv) = next();
                        let mut acc = [$( first_row::<$t, $fma, $nr>(a_at(av, p, $i), bv) ),+];
                        for _ in 1..kc {
                            let (av, p, bv) = next();
                            $( fma_row::<$t, $fma, $nr>(&mut acc[$i], a_at(av, p, $i), bv); )+
                        }
                        acc
                    };
                    // SAFETY: forwarded from the caller (`c` describes a valid tile).
                    unsafe { store_tile::<$vec, MR, $nr>(&acc, c) }
                }
            }

            impl Kernel for $name {
                type T = $t;
                type V = $vec;
                const MR: usize = [$($i),+].len();
                const NR: usize = $nr;
                const BLOCKING: Blocking = Blocking { mc: $mc, kc: $kc, nc: $nc };
                const ROWS_FIRST_WHEN_C_ALIASES: bool = $rows_first;
                const READS_A_IN_PLACE: bool = $a_in_place;
                const LEAN: bool = lean_flag!($lean);

                #[inline(always)]
                unsafe fn tile(kc: usize, a: *const $t, b: *const $t, ldb: usize, c: &Tile<$t>) {
                    // SAFETY: forwarded from the caller, who runs this kernel set only on a CPU
                    // with its features.
                    unsafe {
                        // (A lean set never reads `B` in place, and does not compile that
                        // variant.)
                        if ldb == $nr || Self::LEAN {
                            Self::tile_kernel::<PACKED>(kc, a, b, ldb, std::ptr::null(), c)
                        } else {
                            Self::tile_kernel::<IN_PLACE>(kc, a, b, ldb, std::ptr::null(), c)
                        }
                    }
                }

                #[inline(always)]
                unsafe fn tile_in_place(
                    kc: usize,
                    a: *const $t,
                    lda: usize,
                    b: *const $t,
                    ldb: usize,
                    c: &Tile<$t>,
                ) {
                    tile_in_place_body!($a_in_place, kc, a, lda, b, ldb, c)
                }

                #[inline(always)]
                unsafe fn tile_rows(
                    kc: usize,
                    a: *const $t,
                    b: *const $t,
                    rows: *const usize,
                    c: &Tile<$t>,
                ) {
                    // SAFETY: forwarded from the caller, as for `tile`.
                    unsafe { Self::tile_kernel::<BY_ROWS>(kc, a, b, 0, rows, c) }
                }

                out_of_line!([$($feat)?] fn dot_rows(v: &Gemv<$t>) { dot_rows::<$vec>(v) });

                out_of_line!([$($feat)?] fn axpy_cols(v: &Gemv<$t>) { axpy_cols::<$vec>(v) });

                #[inline(always)]
                unsafe fn dot_tiles(p: &Problem<$t>) {
                    unless_lean!($lean, p, {
                        /// # Safety
                        /// As for [`dot_tiles`], and the CPU supports the enabled features.
                        $(#[target_feature(enable = $feat)])?
                        #[inline(never)]
                        unsafe fn dots(p: &Problem<$t>) {
                            // SAFETY (both): forwarded from the caller.
                            if wastes_fewer_rows(p.m, $dr2, $dr) {
                                unsafe { dot_tiles::<$vec, $dr2, $ds2>(p) }
                            } else {
                                unsafe { dot_tiles::<$vec, $dr, $ds>(p) }
                            }
                        }
                        // SAFETY: as for `tile`.
                        unsafe { dots(p) }
                    })
                }

                #[inline(always)]
                unsafe fn dot_cols(p: &Problem<$t>) {
                    unless_lean!($lean, p, {
                        /// # Safety
                        /// As for [`dot_cols`], and the CPU supports the enabled features.
                        $(#[target_feature(enable = $feat)])?
                        #[inline(never)]
                        unsafe fn dots(p: &Problem<$t>, acc: *mut $t) {
                            // SAFETY: forwarded from the caller.
                            unsafe { dot_cols::<$vec, $cr, $cs>(p, acc) }
                        }
                        let tiles = p.n.div_ceil($cs) * $cr * $cs;
                        let mut scratch = Scratch::take();
                        let (acc, _) = scratch
                            .get::<$t>(tiles * <$vec as Vector>::LANES, 0);
                        // SAFETY: as for `tile`; `acc` holds every tile's accumulators.
                        unsafe { dots(p, acc) }
                    })
                }

                out_of_line!([$($feat)?] fn pack(
                    operand: Operand,
                    len: usize,
                    kc: usize,
                    src: *const $t,
                    s_lane: isize,
                    s_step: isize,
                    dst: *mut $t,
                ) {
                    match operand {
                        Operand::A => pack::<$vec>($name::MR, len, kc, src, s_lane, s_step, dst),
                        Operand::B => pack::<$vec>($nr, len, kc, src, s_lane, s_step, dst),
                    }
                });

                out_of_line!([$($feat)?] fn column_block(
                    p: &Problem<$t>,
                    jc: usize,
                    nc: usize,
                    blocks: (usize, usize),
                    a: ASource<$t>,
                    b: BSource<'_, $t>,
                ) {
                    column_block::<$name>(p, jc, nc, blocks, a, b)
                });
            }
        }

        $(#[cfg($cfg)])?
        pub(super) use $module::$name;
    )*};
}

// Tile shapes. With row-major C the kernel loads NR/lanes vectors of B and broadcasts MR
// elements of A per step, so a tile needs MR·NR/lanes accumulator registers, NR/lanes for B
// and one for the broadcast, within the register file (32 zmm with AVX-512, 16 ymm with
// AVX2, 16 xmm with SSE2). At least ~8 independent accumulators are needed to cover the FMA
// latency (4 cycles × 2 pipes). Measured on Zen 5 (AVX-512, 48 KiB L1d, 1 MiB L2 per core):
// alone, on L1-resident panels, 8×32, 12×32, 14×32 and 6×64 f32 tiles all run at ~265
// GFLOP/s, the machine's peak; in the whole GEMM (benches/gemm.rs) 12×32 was no faster on
// W3's shapes and slower on W2's. 8×32 divides the common batch sizes (8, 16, 64, 256) so
// edge tiles waste least, and its 32 KiB B sliver (kc = 256) fits L1 with room for the A
// stream; mc × kc = 256 KiB of A sits in L2. Blockings from (64, 256, 1024) to
// (256, 256, 4096) measured the same within noise on the W2 and W3 shapes; kc = 320 was
// slower. nc = 512 keeps the packed B block (kc × nc, per thread) at 512 KiB rather than
// W3's 2 MiB: W3's peak memory 110.9 -> 109.6 MiB, for about 3% of its step time and 6% of
// the 1024³ GEMM's rate (240 -> 226 GFLOP/s). The AVX2 and baseline sizes follow the same
// register arithmetic, untuned (this machine runs the AVX-512 kernels).
//
// f64 has no AVX-512 set: an AVX-512 CPU runs f64 products on the AVX2 kernels (`arch.rs`,
// `avx512: none`). f64 is the gradient checks' type, not a training one, and its sixth
// kernel set was a fifth of this crate's clean build (7.9 -> 6.2 CPU-s).
kernels! {
    /// AVX-512 f32: 8×32 tile (16 zmm accumulators).
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    Avx512F32 in avx512_f32 {
        elem: f32, fma: Fused, features: "avx512f,avx2,fma", rows: [0 1 2 3 4 5 6 7], nr: 32,
        blocking: (256, 256, 512), vector: F32x16,
        rows_first_when_c_aliases: true,
        a_in_place: true,
        lean: false,
        dot_tiles: [(4, 3), (3, 4)],
        dot_cols: (8, 3),
    }
    /// AVX2 + FMA f32: 6×16 tile (12 ymm accumulators).
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    Avx2F32 in avx2_f32 {
        elem: f32, fma: Fused, features: "avx2,fma", rows: [0 1 2 3 4 5], nr: 16,
        blocking: (144, 256, 4096), vector: F32x8,
        rows_first_when_c_aliases: false,
        a_in_place: true,
        lean: false,
        dot_tiles: [(4, 2), (3, 3)],
        dot_cols: (4, 3),
    }
    /// AVX2 + FMA f64: 6×8 tile (12 ymm accumulators).
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    Avx2F64 in avx2_f64 {
        elem: f64, fma: Fused, features: "avx2,fma", rows: [0 1 2 3 4 5], nr: 8,
        blocking: (144, 256, 2048), vector: F64x4,
        rows_first_when_c_aliases: false,
        a_in_place: false,
        lean: false,
        dot_tiles: [(4, 2), (3, 3)],
        dot_cols: (3, 3),
    }
    /// Baseline f32 (SSE2 on x86-64, NEON on aarch64): 4×8 tile (8 xmm accumulators).
    PortableF32 in portable_f32 {
        elem: f32, fma: PortableMulAdd, rows: [0 1 2 3], nr: 8,
        blocking: (128, 256, 2048), vector: Lanes<f32, PortableMulAdd, 4>,
        rows_first_when_c_aliases: false,
        a_in_place: false,
        lean: on_x86,
        dot_tiles: [(4, 2), (3, 3)],
        dot_cols: (3, 3),
    }
    /// Baseline f64: 4×4 tile (8 xmm accumulators).
    PortableF64 in portable_f64 {
        elem: f64, fma: PortableMulAdd, rows: [0 1 2 3], nr: 4,
        blocking: (128, 256, 2048), vector: Lanes<f64, PortableMulAdd, 2>,
        rows_first_when_c_aliases: false,
        a_in_place: false,
        lean: on_x86,
        dot_tiles: [(4, 2), (3, 3)],
        dot_cols: (3, 3),
    }
}

/// The baseline kernels' multiply-add: aarch64 always has FMA instructions (so `mul_add` is
/// one instruction); elsewhere the baseline has none and `mul_add` would be a libm call.
#[cfg(target_arch = "aarch64")]
type PortableMulAdd = Fused;
#[cfg(not(target_arch = "aarch64"))]
type PortableMulAdd = Unfused;
