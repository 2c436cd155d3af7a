//! The problem description, the choice of algorithm, and the blocked (BLIS-style) loops.

#![deny(unsafe_op_in_unsafe_fn)]

use super::arch::l1d_bytes;
use super::buffer::Scratch;
use super::gemv::{by_gemv, deep_for_dot_tiles, very_deep_for_dot_tiles};
use super::kernel::{fetches_c, Blocking, Elem, Kernel, Operand, Tile};
use super::pack::pack_cols;
use super::shared::{share_plan, shared, Claims};
use super::simd::Vector;

/// A read-only strided matrix: element `(i, j)` is at `ptr + i·rs + j·cs`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<T> {
    /// Element `(0, 0)`.
    pub ptr: *const T,
    /// Elements from one row to the next.
    pub rs: isize,
    /// Elements from one column to the next.
    pub cs: isize,
}

impl<T> MatRef<T> {
    /// The address of element `(i, j)` (computed with wrapping arithmetic: only dereferenced
    /// where the element is inside the matrix).
    #[inline(always)]
    pub(super) fn at(&self, i: usize, j: usize) -> *const T {
        self.ptr
            .wrapping_offset(i as isize * self.rs + j as isize * self.cs)
    }
}

/// `C = alpha · A · B + beta · C` with `A` `m × k`, `B` `k × n`, `C` `m × n`, all strided.
#[derive(Clone, Copy, Debug)]
pub struct Problem<T> {
    /// Rows of `A` and `C`.
    pub m: usize,
    /// Columns of `A`, rows of `B`.
    pub k: usize,
    /// Columns of `B` and `C`.
    pub n: usize,
    /// The product's factor.
    pub alpha: T,
    /// `A`, `m × k`.
    pub a: MatRef<T>,
    /// `B`, `k × n` (unused when it is placed otherwise, see the fields below).
    pub b: MatRef<T>,
    /// `C`'s factor. When zero, `C` is not read.
    pub beta: T,
    /// Element `(0, 0)` of `C`, `m × n`.
    pub c: *mut T,
    /// Elements from one row of `C` to the next.
    pub rsc: isize,
    /// Elements from one column of `C` to the next.
    pub csc: isize,
    /// A bias added to every row of the result (`n` contiguous elements), or null: the
    /// packed paths add it as they write each tile of `C`, so `C` is written once.
    pub bias: *const T,
    /// `B` already packed by [`Dispatch::pack_b_on`](crate::Dispatch::pack_b_on) with the
    /// same kernels, or null. When set, `b` is not read, the product takes the packed path,
    /// and `bias` must be null.
    pub b_packed: *const T,
    /// Row offsets, or null: when set, row `p` of `B` is the `n` contiguous elements from
    /// `b.ptr + b_rows[p]` (`b.rs` and `b.cs` are not used), each readable for
    /// [`ROWS_SLACK`](crate::ROWS_SLACK) more, and the product takes `by_rows`; `bias` and
    /// `b_packed` must be null.
    pub b_rows: *const usize,
    /// Column offsets, or null: when set, column `j` of `B` is the `k` contiguous elements
    /// from `b.ptr + b_cols[j]` (`b.rs` and `b.cs` are not used), packed by
    /// `pack::pack_cols`; the product takes the packed path on this thread; `bias`,
    /// `b_packed` and `b_rows` must be null.
    pub b_cols: *const usize,
}

/// Which algorithm to run. Everything but the tests uses [`Path::Auto`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// Choose by shape and layout.
    Auto,
    /// The packed, blocked algorithm with the given blocking (tests use tiny blocks to cross
    /// every block boundary on small matrices).
    Packed(Blocking),
    /// One matrix-vector product per row or column of `C`; falls back to the packed path
    /// when neither has a unit-stride form.
    Gemv,
    /// The packed path, reading `B` in place where its layout allows (see
    /// `reads_b_in_place`), else packing it.
    BInPlace,
    /// This thread's share of a product two threads compute together: it claims blocks of
    /// `C` from `claims` (from the front, or from the back) until none is left, and runs
    /// each as [`Path::Auto`] would have run it within the whole (see
    /// [`Dispatch::shared_blocks_on`](crate::Dispatch::shared_blocks_on), which says whether
    /// a problem can be shared and into how many blocks). Each element is the same sum, in
    /// the same order, as on one thread.
    Shared {
        /// The blocks not yet claimed; created by [`Claims::new`] with the count
        /// `shared_blocks_on` gave, and valid for the whole call.
        claims: *const Claims,
        /// Whether this thread claims from the front (the other from the back).
        from_front: bool,
    },
    /// Computes nothing: grows this thread's packing buffers to what [`Path::Auto`] would
    /// need for the problem. A call split between two threads runs each part with part of
    /// the buffers; reserving for the whole first means a later unsplit call of the same or
    /// a smaller shape (an epoch's smaller last batch) finds them large enough.
    Reserve,
}

/// Runs a problem with kernel set `K`. Compiled once per instruction set, inside a
/// `#[target_feature]` function, so everything here is inlined into it.
///
/// # Safety
/// `p` must describe valid memory: every element of `A` (`m × k`) and `B` (`k × n`)
/// readable, every element of `C` (`m × n`) writable (and readable unless `beta` is zero),
/// and `C` not overlapping `A` or `B`.
///
/// Each algorithm is called from one place only: everything here is inlined, and a second
/// call site would compile the whole loop nest again (for each instruction set and element
/// type, a sizeable share of the GEMM's build time). The pieces several paths share are
/// compiled once per kernel set and called: the packed loop nest ([`Kernel::column_block`],
/// run by the packed and the shared products) and the packing of `A` and `B`
/// ([`Kernel::pack`]). Inlined into each path, they made the entry points two and a half
/// times larger: kiln-gemm's clean build alone took 10.8 s (20.0 CPU-s) instead of 8.0
/// (14.6 CPU-s) on two cores.
#[inline(always)]
pub(super) unsafe fn run<K: Kernel>(p: &Problem<K::T>, path: Path) {
    /// The blocked algorithm a product takes (after the matrix-vector path, when tried).
    enum Blocked {
        Packed(Blocking),
        BInPlace,
        ByRows,
        Reserve,
    }
    if p.m == 0 || p.n == 0 {
        return;
    }
    if let Path::Shared { claims, from_front } = path {
        let Some(plan) = share_plan::<K>(p, blocking::<K>()) else {
            panic!("Path::Shared on a product that cannot be shared (see `shared_blocks_on`)");
        };
        // SAFETY: forwarded from the caller (`claims` valid for the call, as `Path::Shared`
        // requires).
        return unsafe { shared::<K>(p, plan, &*claims, from_front) };
    }
    // `B` placed otherwise than by strides (packed in advance, or its rows or columns through
    // offsets): one path each, whatever the shape.
    let placed = [p.b_packed.cast::<()>(), p.b_rows.cast(), p.b_cols.cast()];
    let placed = placed.iter().filter(|ptr| !ptr.is_null()).count();
    debug_assert!(
        placed <= 1 && (placed == 0 || p.bias.is_null()),
        "one way to place B, and no bias with it"
    );
    // No product to add (BLAS semantics: A and B are not read when alpha is zero).
    let no_product = p.k == 0 || p.alpha == K::T::ZERO;
    let auto = blocking::<K>();
    if path == Path::Auto && !no_product && takes_dot_cols::<K>(p) {
        // SAFETY: forwarded from the caller (`a.cs == 1` and `b_cols` set, checked).
        return unsafe { K::dot_cols(p) };
    }
    let (gemv, blocked) = match path {
        Path::Reserve => {
            // Products with a placed `B` run where they are called: nothing to grow ahead.
            if placed > 0 || no_product {
                return;
            }
            (false, Blocked::Reserve)
        }
        // A prepacked `B` was packed with these kernels; a `B` by columns is packed from its
        // offsets.
        _ if placed > 0 && p.b_rows.is_null() => (false, Blocked::Packed(auto)),
        _ if placed > 0 => (false, Blocked::ByRows),
        Path::Auto => (gemv_first::<K>(p), Blocked::BInPlace),
        Path::Packed(blocking) => (false, Blocked::Packed(blocking)),
        Path::BInPlace => (false, Blocked::BInPlace),
        Path::Gemv => (true, Blocked::Packed(auto)),
        Path::Shared { .. } => unreachable!("handled above"),
    };
    if no_product {
        // SAFETY: forwarded from the caller.
        return unsafe { scale_c(p) };
    }
    let without_bias;
    let p = if gemv && !p.bias.is_null() {
        // The matrix-vector path does not write C by tiles: C = beta · C + bias first, then
        // the product is added onto it.
        // SAFETY: forwarded from the caller (the bias holds `n` elements).
        unsafe { scale_c(p) };
        without_bias = Problem {
            beta: K::T::ONE,
            bias: std::ptr::null(),
            ..*p
        };
        &without_bias
    } else {
        p
    };
    // SAFETY: forwarded from the caller.
    if gemv && unsafe { by_gemv::<K>(p) } {
        return;
    }
    let blocked = match blocked {
        Blocked::BInPlace if !reads_b_in_place::<K>(p, auto) => Blocked::Packed(auto),
        other => other,
    };
    // SAFETY (all arms): forwarded from the caller.
    match blocked {
        Blocked::Packed(blocking) => unsafe { packed::<K>(p, blocking) },
        // (`reads_b_in_place` is false for a lean kernel set; the guard keeps the set from
        // compiling `b_in_place`.)
        Blocked::BInPlace if !K::LEAN => unsafe { b_in_place::<K>(p, auto) },
        Blocked::BInPlace => unreachable!("a lean kernel set does not read B in place"),
        Blocked::ByRows => unsafe { by_rows::<K>(p, auto) },
        Blocked::Reserve => reserve::<K>(p, auto),
    }
}

/// The cache blocking [`Path::Auto`] runs with: the kernel set's own ([`Kernel::BLOCKING`]),
/// with a deeper `kc` where this CPU's L1 holds the deeper `kc × NR` panel of `B` in two
/// thirds of itself (the rest for the `A` and `C` streams). A deeper rank-`kc` update reads
/// and writes each tile of `C` fewer times: measured with the AVX2 kernels (6 × 16 f32 tile,
/// 64 bytes of `B` per step) on a 48 KiB L1, `kc` 512 instead of 256 took 1024³ from
/// 112–113 to 115–118 GFLOP/s on one core (84% -> 86–88% of the FMA peak) and from 209–220
/// to 226–228 on two, and W3's and W6's products by 2–5%; on a 32 KiB L1 (Zen 2, Skylake)
/// the 32 KiB panel would fill it, and `kc` stays 256. The AVX-512 kernels' panel (128 bytes
/// a step) is already at two thirds of a 48 KiB L1 with `kc` 256.
pub(super) fn blocking<K: Kernel>() -> Blocking {
    let base = K::BLOCKING;
    let step_bytes = K::NR * std::mem::size_of::<K::T>();
    let budget = l1d_bytes() * 2 / 3;
    let kc = [512, 384]
        .into_iter()
        .find(|&kc| kc > base.kc && kc * step_bytes <= budget)
        .unwrap_or(base.kc);
    Blocking { kc, ..base }
}

/// Grows this thread's packing buffers to the most the packed paths ([`packed`],
/// [`b_in_place`]) ask for on any problem no larger than `p` in each of `m`, `k` and `n` with
/// the same kernel. (Not just `p`'s own sizes: a block is at most the blocking's size, but a
/// dimension a little over it is cut into smaller blocks than a dimension equal to it.)
fn reserve<K: Kernel>(p: &Problem<K::T>, blocking: Blocking) {
    let cap = capped_block;
    let kc = cap(p.k, blocking.kc, 1);
    let mc = cap(p.m, blocking.mc, K::MR);
    let nc = cap(p.n, blocking.nc, K::NR);
    // A problem no larger than `p` keeps at most all of `p`'s `A`, and at most
    // `KEPT_A_MAX` elements (see [`keeps_a`]).
    let whole_a = p.m.next_multiple_of(K::MR).saturating_mul(p.k);
    let kept_a = if p.n > nc { whole_a.min(KEPT_A_MAX) } else { 0 };
    let _ = Scratch::take().get::<K::T>((mc * kc).max(kept_a), kc * nc.max(K::NR));
}

/// The largest block [`block_size`] gives for a dimension of at most `len`: `len` rounded up
/// to whole units, but no more than `max` (rounded down to whole units, at least one). Buffers
/// sized with it serve every problem no larger than the one they were sized for.
pub(super) fn capped_block(len: usize, max: usize, unit: usize) -> usize {
    len.div_ceil(unit)
        .saturating_mul(unit)
        .min((max / unit).max(1) * unit)
}

/// The most elements of packed `A` kept for the next blocks of `B`'s columns (4 MiB of f32;
/// see [`keeps_a`]).
pub(super) const KEPT_A_MAX: usize = 1 << 20;

/// Whether [`packed`] packs all of `A` once and keeps it for every block of `nc` columns of
/// `B`, instead of packing each block of `A` again for each of them: where `B` has more than
/// one such block, `A` is packed (not read in place), and all of it packed fits
/// [`KEPT_A_MAX`]. The kept panels are read back from L2 or L3, as the source would be, but
/// not transposed and written again: W3's products (`256` or `2048` rows, `nc` = 512 of
/// 1024 or 2048 columns) packed their `A` two to four times.
#[inline(always)]
fn keeps_a<K: Kernel>(p: &Problem<K::T>, nc_max: usize, a_in_place: bool) -> bool {
    !a_in_place && p.n > nc_max && p.m.next_multiple_of(K::MR) * p.k <= KEPT_A_MAX
}

/// Whether to try the unpacked matrix-vector path before the packed one.
///
/// - `m = 1` or `n = 1`: a matrix-vector product; packing would copy each matrix element to
///   use it once (on batch-1 shapes matrixmultiply, which packs, is 10 to 17 times slower).
/// - `C` narrower than half a tile with `op(B)` rows contiguous along `k` (a linear layer
///   with few outputs, `x·Wᵀ`): one dot product per output beats padding every tile to `NR`
///   columns and packing `A` (W2's 64 → 10 layer: 1.7× faster). Not with the kernel sets
///   that read `A` in place, for `C` of at least `MR` rows: padding only `B` costs less
///   than the dot products' reductions (W2's 64 → 10 layer with AVX-512: 29 → 38 GFLOP/s).
///
/// - Fewer rows than a tile with both operands contiguous along `k` (`A·Bᵀ`: a linear layer
///   on a batch of 2 to 7, or a convolution's weight gradient `dy·colsᵀ` with 6 output
///   channels): the packed path would pad every tile to `MR` rows and copy both operands;
///   dot products read them in place (W4's 6 × 784 × 25 weight gradient: 50 → 92 GFLOP/s;
///   a batch of 4 through a 784 → 128 layer: 52 → 99). When `k` is deep enough for
///   [`dot_tiles`](super::gemv::dot_tiles), also as many rows as a tile: the AVX2 kernels'
///   6-row tile took that 6 × 784 × 25 product at 33 GFLOP/s packed, 70 as tiles of dot
///   products.
///
/// - A tiny product (at most [`TINY_PRODUCT`] multiply-adds) whose `C` is exactly one
///   vector wide but narrower than a tile, with `op(B)` rows contiguous (`A·B`, e.g. 8 × 8 ×
///   8 on the AVX2 kernels, 16 columns on the AVX-512 ones): packing and the tile's padded,
///   element-by-element edge store cost more than the product; one row of `C` at a time
///   ([`axpy_cols`](super::gemv::axpy_cols)) keeps it in one register.
///
/// Other small problems are packed: measured (benches/gemm.rs, "small 32³"), one
/// matrix-vector product per row of `C` was 2 to 3 times slower than packing already at
/// 32 × 32 × 32, and no faster below.
#[inline(always)]
pub(super) fn gemv_first<K: Kernel>(p: &Problem<K::T>) -> bool {
    let lanes = <K::V as Vector>::LANES;
    let tiny = p.b.cs == 1
        && p.n == lanes
        && p.n < K::NR
        && p.m <= TINY_ROWS
        && p.m.saturating_mul(p.n).saturating_mul(p.k) <= TINY_PRODUCT;
    let dots = p.b.rs == 1 && p.a.cs == 1;
    let rows = p.m < K::MR || (p.m == K::MR && !K::LEAN && deep_for_dot_tiles::<K>(p.k));
    // With `A` read in place ([`Kernel::READS_A_IN_PLACE`]), the packed path copies only the
    // narrow `B`, and a narrow `C` of whole tiles of rows no longer pays for dot products.
    let narrow = 2 * p.n < K::NR && !(K::READS_A_IN_PLACE && p.m >= K::MR);
    // Narrower than a tile over a very deep `k` (a 1 × 1 convolution's weight gradient
    // `dy·xᵀ` over a 64 × 64 image, 11 × 4,096 × 16): the packed path would pad every tile
    // and copy both operands, dot products read them in place.
    let narrow_deep = p.n < K::NR && !K::LEAN && very_deep_for_dot_tiles::<K>(p.k);
    tiny || p.m == 1 || p.n == 1 || (dots && (narrow || rows || narrow_deep))
}

/// The most multiply-adds of a product [`gemv_first`] sends to matrix-vector products for
/// being tiny, and its most rows. Measured (benches/gemm.rs with temporary shapes, one
/// thread, two alternations, GFLOP/s packed → by rows; `m × k × n`): with the AVX2 kernels
/// 8 × 8 × 8 7.8 → 13.0–13.6 (`Aᵀ·B` the same), 8 × 64 × 8 19 → 24; with the AVX-512 ones
/// 4 × 16 × 16 10.5–10.9 → 34, 8 × 16 × 16 20 → 40, 12 × 16 × 16 20 → 41–42. With 64 rows
/// (64 × 8 × 8, AVX2) the packed tiles share their packed `B` enough: 18 → 16 by rows.
const TINY_PRODUCT: usize = 4096;
/// See [`TINY_PRODUCT`].
const TINY_ROWS: usize = 16;

/// Whether a product with `B`'s columns through offsets runs as tiles of dot products
/// ([`dot_cols`](super::gemv::dot_cols)) rather than packing `B` from its offsets, with the
/// kernel sets that have those tiles, where the rows of `A` are contiguous along `k`: on a
/// very deep `k` ([`very_deep_for_dot_tiles`]), or on a deep one
/// ([`deep_for_dot_tiles`]) with at most 32 rows, over which the packed path would share
/// each packed element of `B` too little to pay for the copy. Measured on convolution weight
/// gradients (`dy·colsᵀ`, one thread, AVX-512 / AVX2, GFLOP/s packed → dot products): W8's
/// 16-channel 64 × 64 layer (`k` = 4,222) 62 → 108 / 45 → 65, its 32 × 32 layers (1,086, 16 or
/// 32 rows) 5–30% faster, LeNet's first layer (668, 6 rows) 19 → 40 / 20 → 29; its 16 × 16
/// layers (286, 64 rows) a third slower, and they stay packed.
#[inline(always)]
fn takes_dot_cols<K: Kernel>(p: &Problem<K::T>) -> bool {
    let depth = very_deep_for_dot_tiles::<K>(p.k) || (p.m <= 32 && deep_for_dot_tiles::<K>(p.k));
    !K::LEAN && !p.b_cols.is_null() && p.a.cs == 1 && depth
}

/// `C = beta · C`, plus `bias` on every row when it is not null, not reading `C` when `beta`
/// is zero.
///
/// # Safety
/// As for [`run`], and `p.bias` null or valid for `n` elements.
#[inline(always)]
unsafe fn scale_c<T: Elem>(p: &Problem<T>) {
    if p.beta == T::ZERO && !p.bias.is_null() && p.n == 1 && p.rsc == 1 {
        // A layer with one output over a batch (W1): `C` is one contiguous column, filled
        // with the bias in one vectorised pass (a copy per row of one element cost a loop
        // set-up per row).
        // SAFETY: `C` holds `m` contiguous elements (`rsc == 1`, one column) that nothing
        // else reads or writes during this call, and the bias one.
        unsafe { std::slice::from_raw_parts_mut(p.c, p.m).fill(*p.bias) };
        return;
    }
    if p.beta == T::ZERO && !p.bias.is_null() && p.csc == 1 {
        // A linear layer's rows on the matrix-vector path: each row becomes a copy.
        for i in 0..p.m {
            let row = p.c.wrapping_offset(i as isize * p.rsc);
            // SAFETY: row `i` of `C` holds `n` contiguous elements (`csc == 1`), the bias `n`,
            // and they do not overlap (the bias is read-only, `C` written).
            unsafe {
                if p.n < 16 {
                    // Short rows (a layer with a few outputs) element by element: a `memcpy`
                    // call per row cost more than the copy (W1's 1,000 rows of one output
                    // spent a quarter of the step in those calls).
                    for j in 0..p.n {
                        *row.add(j) = *p.bias.add(j);
                    }
                } else {
                    std::ptr::copy_nonoverlapping(p.bias, row, p.n);
                }
            }
        }
        return;
    }
    for i in 0..p.m {
        for j in 0..p.n {
            // SAFETY: `(i, j)` is inside `C`, and `j` inside a non-null bias.
            unsafe {
                let c = p.c.offset(i as isize * p.rsc + j as isize * p.csc);
                let scaled = if p.beta == T::ZERO {
                    T::ZERO
                } else {
                    p.beta * *c
                };
                *c = if p.bias.is_null() {
                    scaled
                } else {
                    scaled + *p.bias.add(j)
                };
            }
        }
    }
}

/// The block size for a dimension of `len`: the fewest blocks of at most `max` (rounded down
/// to a multiple of `unit`), made about equal and rounded up to a multiple of `unit`. Equal
/// blocks avoid a thin last block (e.g. `k = 260` with `KC = 256` runs as 2 × 130, not
/// 256 + 4, whose rank-4 update would be all overhead).
///
/// Inlined, with a first test for the one-block case: its callers' `unit` is a tile side (a
/// constant power of two), so a dimension that fits one block costs a shift and no division.
/// Out of line, its divisions were a fifth of the time of an `8³` product (about 15 ns of
/// 75).
#[inline(always)]
pub(super) fn block_size(len: usize, max: usize, unit: usize) -> usize {
    let max = (max / unit).max(1) * unit;
    if len <= max {
        return len.div_ceil(unit) * unit;
    }
    let blocks = len.div_ceil(max);
    len.div_ceil(blocks).div_ceil(unit) * unit
}

/// The packed, cache-blocked algorithm (the BLIS loop nest):
///
/// ```text
/// for jc in 0..n step nc          loop 5: B block columns        (packed B: kc × nc, "L3")
///   for pc in 0..k step kc        loop 4: rank-kc updates        (pack B[pc.., jc..])
///     for ic in 0..m step mc      loop 3: A block rows           (pack A[ic.., pc..]: mc × kc, L2)
///       for jr in 0..nc step NR   loop 2: micro-panel of B       (kc × NR stays in L1)
///         for ir in 0..mc step MR loop 1: micro-panel of A       (streamed from L2)
///           microkernel: C[ic+ir.., jc+jr..] (MR × NR) += A panel · B panel
/// ```
///
/// Where `B` has several blocks of `nc` columns, all of `A` is packed by the first and kept
/// for the others when it fits ([`keeps_a`]).
///
/// With the kernel sets that read `A` in place ([`Kernel::READS_A_IN_PLACE`]), a row-major
/// `A` is not packed when `B` has at most [`A_IN_PLACE_MAX_PANELS`] panels: a packed sliver
/// would serve that few tiles. Measured (benches/gemm.rs, one thread, Intel Xeon,
/// 2026-12-05): W2's forward products `64 × 128 × 64` 115 → 134 GFLOP/s (AVX-512) and 86–87
/// → 88–93 (AVX2, by binary), `64 × 784 × 128` 124 → 132 (AVX-512), its `64 × 10 × 64`
/// input gradient 96 → 107 and 63 → 69, W6's `768 × 128 × 128` products 153-155 → 163-167
/// (AVX-512). With it, a
/// narrow `C` (`2n < NR`) of at least `MR` rows takes this path rather than dot products
/// (see [`gemv_first`]): W2's `64 × 64 × 10` 29 → 38 (AVX-512).
///
/// Threading: a large problem this loop nest would run is shared by two threads instead
/// ([`shared`], through [`Path::Shared`]): each claims blocks of `C` (ranges of `jc` columns,
/// or of `ic` rows) from its end of a common counter and computes them with these loops'
/// blocking, packing the operand all blocks share (all of `A` along `n`, all of `B` along
/// `m`) once, in its own thread-local buffers. Other large problems are cut in two halves
/// at a panel boundary (`run_split` in `gemm.rs`), each running [`run`] unchanged on its own
/// thread. Either way no synchronisation is needed inside, and results are bit-identical to
/// one thread.
///
/// # Safety
/// As for [`run`].
#[inline(always)]
unsafe fn packed<K: Kernel>(p: &Problem<K::T>, blocking: Blocking) {
    let (mr, nr) = (K::MR, K::NR);
    let kc_max = block_size(p.k, blocking.kc, 1);
    let mc_max = block_size(p.m, blocking.mc, mr);
    let nc_max = block_size(p.n, blocking.nc, nr);
    let prepacked = !p.b_packed.is_null();
    let a_in_place = packed_reads_a_in_place::<K>(p);
    // All of `A` packed by the first block of columns and read by the others; its block at
    // (`ic`, `pc`) starts at `pc · m_pad + ic · kc` (blocks of one `pc` side by side).
    let keep_a = keeps_a::<K>(p, nc_max, a_in_place);
    let m_pad = p.m.next_multiple_of(mr);
    let mut scratch = Scratch::take();
    let a_len = if keep_a { m_pad * p.k } else { mc_max * kc_max };
    let b_len = if prepacked { 0 } else { kc_max * nc_max };
    let (a_pack, b_pack) = scratch.get::<K::T>(a_len, b_len);
    // Where the next block of a prepacked `B` starts: blocks in the order of the loops below.
    let mut b_offset = 0;
    let mut jc = 0;
    while jc < p.n {
        let nc = nc_max.min(p.n - jc);
        let a = ASource {
            buffer: a_pack,
            kept: keep_a,
            pack_kept: jc == 0,
            in_place: a_in_place,
        };
        let b = if prepacked {
            BSource::Prepacked(&mut b_offset)
        } else {
            BSource::Pack(b_pack)
        };
        // SAFETY: the buffers hold what `column_block` asks (`mc_max · kc_max`, or all of `A`
        // packed when kept; `kc_max · nc_max`); the rest from the caller.
        unsafe { K::column_block(p, jc, nc, (kc_max, mc_max), a, b) };
        jc += nc;
    }
}

/// Where [`column_block`] finds the blocks of `A`.
#[derive(Clone, Copy)]
pub(super) struct ASource<T> {
    /// The buffer of one `mc × kc` block, or of all of `A` when `kept`.
    pub buffer: *mut T,
    /// All of `A` is packed in `buffer`, its block at (`ic`, `pc`) at `pc · m_pad + ic · kc`
    /// (`m_pad`: `m` rounded up to whole tiles; `ic` a multiple of `MR`).
    pub kept: bool,
    /// With `kept`: this block of columns packs them (the first), rather than reads them.
    pub pack_kept: bool,
    /// Without `kept`: whole tiles of rows read in place (see [`reads_a_in_place`]).
    pub in_place: bool,
}

/// Where [`column_block`] finds the blocks of `B`.
pub(super) enum BSource<'a, T> {
    /// Packed into this buffer (`kc_max · nc_max` elements) block by block, from `B`'s
    /// strides or its column offsets (`b_cols`).
    Pack(*mut T),
    /// Packed ahead (`b_packed`, in [`pack_whole_b`]'s layout); the next block starts at this
    /// offset, which moves on past each block read.
    Prepacked(&'a mut usize),
}

/// Loops 4 to 1 of [`packed`] over the columns `jc .. jc + nc` of `C` (at most the blocking's
/// `nc`), called through [`Kernel::column_block`]: for each rank-`kc` update, its block of
/// `B`, then each `mc × kc` block of `A` through the microkernel. Only the first update
/// applies `beta` and the bias; later ones accumulate.
///
/// # Safety
/// As for [`run`]; `kc_max` and `mc_max` the blocking's depth and row blocks for `p`, and the
/// buffers of `a` and `b` as large as their docs say.
#[inline(always)]
pub(super) unsafe fn column_block<K: Kernel>(
    p: &Problem<K::T>,
    jc: usize,
    nc: usize,
    (kc_max, mc_max): (usize, usize),
    a_source: ASource<K::T>,
    mut b_source: BSource<'_, K::T>,
) {
    let nr = K::NR;
    let m_pad = p.m.next_multiple_of(K::MR);
    let mut pc = 0;
    while pc < p.k {
        let kc = kc_max.min(p.k - pc);
        let b_block = match &mut b_source {
            BSource::Prepacked(offset) => {
                let block = p.b_packed.wrapping_add(**offset);
                **offset += kc * nc.next_multiple_of(nr);
                block
            }
            BSource::Pack(buffer) => {
                // SAFETY: the block `k ∈ pc..pc+kc`, `n ∈ jc..jc+nc` is inside B, and the
                // buffer holds `kc_max · nc_max ≥ ceil(nc / NR) · NR · kc` elements.
                unsafe {
                    if p.b_cols.is_null() {
                        K::pack(Operand::B, nc, kc, p.b.at(pc, jc), p.b.cs, p.b.rs, *buffer)
                    } else {
                        let (base, cols) = (p.b.ptr.wrapping_add(pc), p.b_cols.wrapping_add(jc));
                        pack_cols::<K::V>(nr, nc, kc, base, cols, *buffer)
                    }
                };
                buffer.cast_const()
            }
        };
        let (beta, bias) = update_scalars(p, pc);
        let mut ic = 0;
        while ic < p.m {
            let mc = mc_max.min(p.m - ic);
            let a = if a_source.kept {
                // Blocks before this one hold `pc · m_pad + ic · kc` elements; this one
                // `ceil(mc / MR) · MR · kc`, within `m_pad · k`.
                let block = a_source.buffer.wrapping_add(pc * m_pad + ic * kc);
                if a_source.pack_kept {
                    // SAFETY: as below, with the block's own part of the buffer.
                    unsafe { ABlock::take::<K>(p, ic, pc, mc, kc, false, block) }
                } else {
                    ABlock::packed(block, kc)
                }
            } else {
                // SAFETY: the block `m ∈ ic..ic+mc`, `k ∈ pc..pc+kc` is inside A; the
                // buffer holds `mc_max · kc_max` elements.
                unsafe { ABlock::take::<K>(p, ic, pc, mc, kc, a_source.in_place, a_source.buffer) }
            };
            // SAFETY: the packed panels hold `mc × kc` and `kc × nc` (padded; a prepacked `B`
            // was packed block by block with this blocking, see `pack_whole_b`), and the
            // `mc × nc` block of C at (ic, jc) is inside C.
            unsafe { macro_kernel::<K>(p, beta, bias, ic, jc, mc, nc, kc, a, b_block) };
            ic += mc;
        }
        pc += kc;
    }
}

/// Elements [`pack_whole_b`] writes for a `k × n` `B`: every column padded to a whole panel.
pub(super) fn packed_b_len<K: Kernel>(k: usize, n: usize) -> usize {
    k * n.next_multiple_of(K::NR)
}

/// Packs all of `B` (`k × n`) into `dst` as [`packed`] would pack it block by block for a
/// product of any number of rows, in the order it visits the blocks, so that products that
/// share `B` (a recurrent weight, at every time step) pack it once.
///
/// # Safety
/// Every element of `B` readable, `dst` writable for [`packed_b_len`] elements and not
/// overlapping `B`, and the CPU supports the kernels' instruction set.
#[inline(always)]
pub(super) unsafe fn pack_whole_b<K: Kernel>(k: usize, n: usize, b: MatRef<K::T>, dst: *mut K::T) {
    let nr = K::NR;
    let blocking = blocking::<K>();
    let kc_max = block_size(k, blocking.kc, 1);
    let nc_max = block_size(n, blocking.nc, nr);
    let mut offset = 0;
    let mut jc = 0;
    while jc < n {
        let nc = nc_max.min(n - jc);
        let mut pc = 0;
        while pc < k {
            let kc = kc_max.min(k - pc);
            // SAFETY: the block is inside B; the blocks' padded sizes add up to
            // `k · ceil(n / NR) · NR` (every block but the last in `n` is whole panels).
            unsafe {
                K::pack(
                    Operand::B,
                    nc,
                    kc,
                    b.at(pc, jc),
                    b.cs,
                    b.rs,
                    dst.add(offset),
                )
            };
            offset += kc * nc.next_multiple_of(nr);
            pc += kc;
        }
        jc += nc;
    }
}

/// The most elements of `B` read in place (128 KiB of f32): a small `B` stays in L1 or L2
/// however its rows are spread, so its panels need no copy.
const B_IN_PLACE_MAX: usize = 1 << 15;

/// The fewest rows of `B` (steps of `k`) read in place. Measured (benches/gemm.rs, one
/// thread): in place wins from `k = 25` (W4's `6 × 25 × 784`: 68 → 92 GFLOP/s; `16 × 150 ×
/// 100`: 120 → 148) but loses on shallower products (`64 × 10 × 64`: 114 → 100; `150 × 16
/// × 100`: 124 → 115), where packing costs little.
const B_IN_PLACE_MIN_K: usize = 24;

/// Whether [`b_in_place`] reads `B` in place: the kernel set is not lean
/// ([`Kernel::LEAN`]), `B`'s rows are contiguous (`cs == 1`), it is one
/// rank-`kc` block deep but not shallow ([`B_IN_PLACE_MIN_K`]) and small
/// ([`B_IN_PLACE_MAX`]), and it has at least one whole panel of `NR` columns. A
/// convolution's `W · cols` per sample is such a product: packing `cols` would copy each of
/// its elements once more only to read it from the same cache.
#[inline(always)]
pub(super) fn reads_b_in_place<K: Kernel>(p: &Problem<K::T>, blocking: Blocking) -> bool {
    !K::LEAN
        && p.b.cs == 1
        && p.b.rs > 0
        && (B_IN_PLACE_MIN_K..=blocking.kc).contains(&p.k)
        && p.n >= K::NR
        && p.k * p.n <= B_IN_PLACE_MAX
        && (p.m < CONFLICTS_MATTER_FROM_M || rows_spread_over_l1::<K::T>(p.b.rs as usize, p.k))
}

/// The fewest rows of `A` from which B's panels must stay in L1: each panel is read once per
/// `MR` rows, and below this the misses of a self-evicting panel (served from L2) cost less
/// than packing `B` would (measured: W2's `64 × 64 × 128` products, B's rows 512 bytes apart,
/// lost 13–22% when packed).
const CONFLICTS_MATTER_FROM_M: usize = 256;

/// Whether `k` rows `rs` elements apart spread over enough of L1's sets to stay in it
/// together. With a row stride of a multiple of 64 bytes the rows fall in only
/// `64 / gcd(64, stride in lines)` of the 64 sets of a 4 KiB way (48 KiB, 12-way L1s, and
/// 32 KiB, 8-way), and a panel of `k` rows of `NR` columns (two lines per row with AVX-512 f32)
/// would evict itself: measured (benches/gemm.rs, "W6 dx c_proj", `768 × 128 × 128`, B's rows
/// 512 bytes apart), in place ran at 163 GFLOP/s against 180 for matrixmultiply, which packs.
/// Allowing three rows per set keeps the panel well inside the ways.
fn rows_spread_over_l1<T>(rs: usize, k: usize) -> bool {
    let bytes = rs * std::mem::size_of::<T>();
    if !bytes.is_multiple_of(64) {
        return true;
    }
    let (mut a, mut b) = (64, bytes / 64);
    while b != 0 {
        (a, b) = (b, a % b);
    }
    k <= 3 * (64 / a)
}

/// The packed algorithm with `B` read in place (where [`reads_b_in_place`]; [`run`] sends
/// the other products to [`packed`]): the microkernel reads each whole panel of `NR` columns
/// of `B` straight from its rows (`ldb` = the row stride), and only the last, partial panel
/// is packed (zero-padded to `NR` columns).
///
/// With the f32 kernels of AVX-512 and AVX2 ([`Kernel::READS_A_IN_PLACE`]), a row-major `A`
/// (rows contiguous along `k`) is read in place too, `MR` rows at a time
/// ([`Kernel::tile_in_place`]); only its last rows short of a whole tile are packed. These
/// products are one rank-`k` update of a small `B`, so each sliver of `A` serves few panels
/// and its packing was a large share of the product: measured (benches/gemm.rs, one thread,
/// Intel Xeon, 2026-12-05), W6's attention values `64 × 64 × 32` 115 → 149 GFLOP/s with
/// AVX-512 and 81 → 92 with AVX2, `32³` 103 → 127 and 70 → 76, W4's `16 × 150 × 100` 100 →
/// 110 (AVX-512), W2's `64 × 64 × 128` input gradient 146 → 155 (AVX-512) and 94 → 96
/// (AVX2); W4's `6 × 25 × 784` (49 panels with AVX2) unchanged. Other `A`s are packed block
/// by block as in [`packed`].
///
/// # Safety
/// As for [`run`], and [`reads_b_in_place`] holds for `p`.
#[inline(always)]
unsafe fn b_in_place<K: Kernel>(p: &Problem<K::T>, blocking: Blocking) {
    let (mr, nr) = (K::MR, K::NR);
    let (k, whole) = (p.k, p.n / nr * nr);
    let fetch = fetches_c::<K::T>(k, p.m, p.n);
    let mc_max = block_size(p.m, blocking.mc, mr);
    let mut scratch = Scratch::take();
    let (a_pack, b_pack) = scratch.get::<K::T>(mc_max * k, k * nr);
    if whole < p.n {
        // SAFETY: columns `whole .. n` and every `k` are inside B; the buffer holds `k · NR`.
        unsafe {
            K::pack(
                Operand::B,
                p.n - whole,
                k,
                p.b.at(0, whole),
                p.b.cs,
                p.b.rs,
                b_pack,
            )
        };
    }
    let ldb = p.b.rs as usize;
    let a_in_place = reads_a_in_place::<K>(p);
    let mut ic = 0;
    while ic < p.m {
        let mc = mc_max.min(p.m - ic);
        // With `A` read in place, only its last rows short of a whole tile are packed (as the
        // one panel at the start of the buffer).
        // SAFETY: the block `m ∈ ic..ic+mc`, all `k`, is inside A; the buffer holds
        // `mc_max · k ≥ ceil(mc / MR) · MR · k` elements.
        let a = unsafe { ABlock::take::<K>(p, ic, 0, mc, k, a_in_place, a_pack) };
        let mut jr = 0;
        while jr < p.n {
            let (b_panel, b_stride) = if jr < whole {
                (p.b.at(0, jr), ldb)
            } else {
                (b_pack.cast_const(), nr)
            };
            let mut ir = 0;
            while ir < mc {
                let tile = Tile {
                    ptr: p
                        .c
                        .wrapping_offset((ic + ir) as isize * p.rsc + jr as isize * p.csc),
                    rs: p.rsc,
                    cs: p.csc,
                    rows: mr.min(mc - ir),
                    cols: nr.min(p.n - jr),
                    alpha: p.alpha,
                    beta: p.beta,
                    bias: bias_at(p.bias, jr),
                    fetch,
                };
                // SAFETY: `ir < mc`; a whole panel of B has `NR` columns at each of its `k`
                // rows (`jr + NR ≤ whole ≤ n`), the last one is packed; the tile's elements
                // are inside C.
                unsafe { a.tile::<K>(ir, b_panel, b_stride, &tile) };
                ir += mr;
            }
            jr += nr;
        }
        ic += mc;
    }
}

/// The packed algorithm's loops with `B` read in place through row offsets
/// ([`Problem::b_rows`]): `A` is packed block by block as in [`packed`]; for each rank-`kc`
/// update the microkernel reads each panel of `NR` columns of `B` from the `kc` rows the
/// offsets point at (a last, partial panel reads into the rows' slack and stores only the
/// real columns). The `B` panel is reused, from L1, by every row tile of the `A` block.
///
/// # Safety
/// As for [`run`], with `b_rows` as described on [`Problem`].
#[inline(always)]
unsafe fn by_rows<K: Kernel>(p: &Problem<K::T>, blocking: Blocking) {
    const { assert!(K::NR <= crate::ROWS_SLACK) };
    let (mr, nr) = (K::MR, K::NR);
    let kc_max = block_size(p.k, blocking.kc, 1);
    let mc_max = block_size(p.m, blocking.mc, mr);
    let mut scratch = Scratch::take();
    let (a_pack, _) = scratch.get::<K::T>(mc_max * kc_max, 0);
    let mut pc = 0;
    while pc < p.k {
        let kc = kc_max.min(p.k - pc);
        // Only the first rank-kc update applies beta; later ones accumulate.
        let beta = if pc == 0 { p.beta } else { K::T::ONE };
        let fetch = fetches_c::<K::T>(kc, p.m, p.n);
        let rows = p.b_rows.wrapping_add(pc);
        let mut ic = 0;
        while ic < p.m {
            let mc = mc_max.min(p.m - ic);
            // SAFETY: the block `m ∈ ic..ic+mc`, `k ∈ pc..pc+kc` is inside A; the buffer
            // holds `mc_max · kc_max` elements.
            unsafe { K::pack(Operand::A, mc, kc, p.a.at(ic, pc), p.a.rs, p.a.cs, a_pack) };
            let mut jr = 0;
            while jr < p.n {
                let b_panel = p.b.ptr.wrapping_add(jr);
                let mut ir = 0;
                while ir < mc {
                    let tile = Tile {
                        ptr: p
                            .c
                            .wrapping_offset((ic + ir) as isize * p.rsc + jr as isize),
                        rs: p.rsc,
                        cs: 1,
                        rows: mr.min(mc - ir),
                        cols: nr.min(p.n - jr),
                        alpha: p.alpha,
                        beta,
                        bias: std::ptr::null(),
                        fetch,
                    };
                    // SAFETY: panel `ir / MR` of packed A holds `kc` steps; rows `pc..pc+kc`
                    // of B are readable for `jr + NR ≤ n + ROWS_SLACK` columns (the caller's
                    // contract, `NR ≤ ROWS_SLACK`); the tile's elements are inside C.
                    unsafe { K::tile_rows(kc, a_pack.wrapping_add(ir * kc), b_panel, rows, &tile) };
                    ir += mr;
                }
                jr += nr;
            }
            ic += mc;
        }
        pc += kc;
    }
}

/// The most panels of `B` for which [`packed`] reads a row-major `A` in place.
const A_IN_PLACE_MAX_PANELS: usize = 4;

/// Whether [`packed`] reads `A`'s whole tiles of rows in place: where they are contiguous
/// ([`reads_a_in_place`]) and `B` has at most [`A_IN_PLACE_MAX_PANELS`] panels, so that a
/// packed sliver of `A` would serve few tiles (see `b_in_place`).
pub(super) fn packed_reads_a_in_place<K: Kernel>(p: &Problem<K::T>) -> bool {
    reads_a_in_place::<K>(p) && p.n <= A_IN_PLACE_MAX_PANELS * K::NR
}

/// `beta` and the bias for the rank-`kc` update starting at depth `pc`: the problem's for
/// the first, which writes `C`; `1` and none for the later ones, which accumulate onto it.
#[inline(always)]
pub(super) fn update_scalars<T: Elem>(p: &Problem<T>, pc: usize) -> (T, *const T) {
    if pc == 0 {
        (p.beta, p.bias)
    } else {
        (T::ONE, std::ptr::null())
    }
}

/// Whether the kernel set reads `A` in place ([`Kernel::READS_A_IN_PLACE`]) and `A`'s rows
/// are contiguous along `k`.
fn reads_a_in_place<K: Kernel>(p: &Problem<K::T>) -> bool {
    K::READS_A_IN_PLACE && p.a.cs == 1 && p.a.rs > 0
}

/// One `mc × kc` block of `A` as the microkernels read it: its first `in_place_rows` rows (a
/// multiple of `MR`) in place, `lda` apart from `in_place`, the rest packed at `packed`.
#[derive(Clone, Copy)]
pub(super) struct ABlock<T> {
    packed: *const T,
    in_place: *const T,
    lda: usize,
    in_place_rows: usize,
    kc: usize,
}

impl<T: Elem> ABlock<T> {
    /// The block of rows `ic .. ic + mc` and steps `pc .. pc + kc` of `A`: its whole tiles of
    /// rows read in place when `in_place` (see [`reads_a_in_place`]), and the other rows
    /// packed into `buffer`.
    ///
    /// # Safety
    /// The block must be inside `A`, and `buffer` writable for `ceil(mc / MR) · MR · kc`
    /// elements.
    #[inline(always)]
    pub(super) unsafe fn take<K: Kernel<T = T>>(
        p: &Problem<T>,
        ic: usize,
        pc: usize,
        mc: usize,
        kc: usize,
        in_place: bool,
        buffer: *mut T,
    ) -> Self {
        let mr = K::MR;
        let in_place_rows = if in_place { mc / mr * mr } else { 0 };
        let first = ic + in_place_rows;
        // SAFETY: rows `first .. ic + mc` of the block are inside A, and the buffer holds
        // their panels.
        unsafe {
            K::pack(
                Operand::A,
                mc - in_place_rows,
                kc,
                p.a.at(first, pc),
                p.a.rs,
                p.a.cs,
                buffer,
            )
        };
        Self {
            packed: buffer.cast_const(),
            in_place: p.a.at(ic, pc),
            lda: p.a.rs as usize,
            in_place_rows,
            kc,
        }
    }

    /// A block packed earlier at `packed` (by [`ABlock::take`] without rows in place).
    #[inline(always)]
    pub(super) fn packed(packed: *const T, kc: usize) -> Self {
        Self {
            packed,
            in_place: std::ptr::null(),
            lda: 0,
            in_place_rows: 0,
            kc,
        }
    }

    /// The microkernel on the block's rows `ir .. ir + MR` and `kc` rows of `B` from `b`,
    /// `ldb` apart, into `tile`.
    ///
    /// # Safety
    /// `ir < mc`, a multiple of `MR`; `b` and `tile` as for [`Kernel::tile`].
    #[inline(always)]
    unsafe fn tile<K: Kernel<T = T>>(&self, ir: usize, b: *const T, ldb: usize, tile: &Tile<T>) {
        // SAFETY: rows below `in_place_rows` are whole tiles inside A, `kc` steps each; the
        // others are packed panels of `kc` steps; the rest from the caller.
        unsafe {
            if ir < self.in_place_rows {
                let rows = self.in_place.wrapping_add(ir * self.lda);
                K::tile_in_place(self.kc, rows, self.lda, b, ldb, tile)
            } else {
                let panel = self
                    .packed
                    .wrapping_add((ir - self.in_place_rows) * self.kc);
                K::tile(self.kc, panel, b, ldb, tile)
            }
        }
    }
}

/// The bias entries from column `j` (null stays null).
#[inline(always)]
fn bias_at<T>(bias: *const T, j: usize) -> *const T {
    if bias.is_null() {
        bias
    } else {
        bias.wrapping_add(j)
    }
}

/// Loops 2 and 1: the microkernel over every `MR × NR` tile of the `mc × nc` block of `C`
/// at `(ic, jc)`, adding `bias` (the entries of `C`'s columns from 0, or null).
///
/// # Safety
/// `a` must be the `mc × kc` block of `A` ([`ABlock::take`]), `b_pack` the packed `kc × nc`
/// block (padded to whole panels), and the block of `C` must be valid as for [`run`].
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) unsafe fn macro_kernel<K: Kernel>(
    p: &Problem<K::T>,
    beta: K::T,
    bias: *const K::T,
    ic: usize,
    jc: usize,
    mc: usize,
    nc: usize,
    kc: usize,
    a: ABlock<K::T>,
    b_pack: *const K::T,
) {
    let (mr, nr) = (K::MR, K::NR);
    let fetch = fetches_c::<K::T>(kc, p.m, p.n);
    // Down the columns (the default), the `kc × NR` panel of B stays in L1 while the panels
    // of A stream from L2. Along the rows, the A panel stays in L1, the B panels stream from
    // L2, and consecutive tiles write neighbouring lines of the same rows of C. Measured
    // with the AVX-512 f32 kernels (benches/gemm.rs, one thread, Intel Xeon, 2026-12-04),
    // the rows are faster in one case: a single rank-kc update (C written once) of a C whose
    // rows are a multiple of 4 KiB apart, so that every row of a tile falls in the same L1
    // set. W3's weight gradients (`2048 × 256 × 1024` and `× 2048`) went from 127-132 to
    // 136-142 GFLOP/s, and W3's one-thread step from 76-77 to 73-74 ms. Other products (W2's,
    // W6's, f64 1024³) were up to 6% slower along the rows, and the AVX2 kernels up to 24%.
    let stride = p.rsc.unsigned_abs() * std::mem::size_of::<K::T>();
    let rows_first = K::ROWS_FIRST_WHEN_C_ALIASES && stride.is_multiple_of(4096) && p.k <= kc;
    // One loop over the tiles in either order (`mc` and `nc` are not zero).
    let (mut ir, mut jr) = (0, 0);
    loop {
        let tile = Tile {
            ptr: p
                .c
                .wrapping_offset((ic + ir) as isize * p.rsc + (jc + jr) as isize * p.csc),
            rs: p.rsc,
            cs: p.csc,
            rows: mr.min(mc - ir),
            cols: nr.min(nc - jr),
            alpha: p.alpha,
            beta,
            bias: bias_at(bias, jc + jr),
            fetch,
        };
        // SAFETY: `ir < mc`, panel `jr / NR` of B holds `kc` full steps, and the tile's
        // `rows × cols` elements are inside C.
        unsafe { a.tile::<K>(ir, b_pack.wrapping_add(jr * kc), nr, &tile) };
        if rows_first {
            jr += nr;
            if jr >= nc {
                (ir, jr) = (ir + mr, 0);
                if ir >= mc {
                    break;
                }
            }
        } else {
            ir += mr;
            if ir >= mc {
                (ir, jr) = (0, jr + nr);
                if jr >= nc {
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::block_size;

    #[test]
    fn blocks_are_balanced_and_bounded() {
        assert_eq!(block_size(260, 256, 1), 130);
        assert_eq!(block_size(256, 256, 1), 256);
        assert_eq!(block_size(100, 256, 8), 104);
        assert_eq!(block_size(300, 256, 8), 152);
        assert_eq!(block_size(1, 256, 8), 8);
        // max smaller than the unit: one unit per block.
        assert_eq!(block_size(20, 3, 8), 8);
        for len in 1..600 {
            for (max, unit) in [(256, 1), (64, 8), (96, 12), (5, 4)] {
                let b = block_size(len, max, unit);
                assert!(
                    b.is_multiple_of(unit) && b <= max.max(unit),
                    "{len} {max} {unit}: {b}"
                );
                assert!(len.div_ceil(b) == len.div_ceil((max / unit).max(1) * unit));
            }
        }
    }
}
