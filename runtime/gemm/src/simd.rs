//! One vector register as a type, for the matrix-vector kernels (`gemv.rs`) and the
//! microkernel's update of `C` (`kernel.rs`).
//!
//! The microkernel's `k` loop gets its vectors from LLVM's auto-vectoriser; the code here
//! does not, because there the vectoriser's choice proved fragile: the same source compiled
//! to full-width FMAs for one element type and to 128-bit FMAs across rows (a shuffle per
//! FMA) for another, or after an unrelated change, 2 to 5 times slower; and the update of a
//! full `C` tile came out as 256 scalar multiplies and stores. These loops are short and few,
//! so they are written against this small trait with explicit vector registers instead:
//! `core::arch` intrinsics on x86, plain arrays (which the baseline compiler may vectorise or
//! not) elsewhere.

#![deny(unsafe_op_in_unsafe_fn)]

use super::kernel::{Elem, MulAdd};
use super::pack::pack_transposed_scalar;
use std::marker::PhantomData;

/// A vector register of `LANES` elements of `T`.
///
/// Every method is `unsafe` because the x86 implementations may only run on a CPU with their
/// instruction set, and are only fast when inlined into a function compiled for it (the
/// kernels in `kernel.rs` are).
pub(super) trait Vector: Copy {
    /// The element type.
    type T: Elem;
    /// Elements per register.
    const LANES: usize;
    /// All lanes zero.
    unsafe fn zero() -> Self;
    /// All lanes `x`.
    unsafe fn splat(x: Self::T) -> Self;
    /// `LANES` elements from `p` (no alignment needed).
    ///
    /// # Safety
    /// `p .. p + LANES` readable, and the CPU supports the instruction set.
    unsafe fn load(p: *const Self::T) -> Self;
    /// `a · b + c`, lane by lane.
    unsafe fn mul_add(a: Self, b: Self, c: Self) -> Self;
    /// `a + b`, lane by lane.
    unsafe fn add(a: Self, b: Self) -> Self;
    /// `a · b`, lane by lane.
    unsafe fn mul(a: Self, b: Self) -> Self;
    /// The sum of the lanes.
    unsafe fn sum(self) -> Self::T;
    /// The lanes, in order, to `p .. p + LANES` (no alignment needed).
    ///
    /// # Safety
    /// `p .. p + LANES` writable, and the CPU supports the instruction set.
    unsafe fn store(self, p: *mut Self::T);

    /// Packs `lanes ≤ w` lanes of `kc` steps, lane `i` being contiguous along the steps
    /// (element `(i, p)` at `src.at(i) + p`), into `dst[p·w + i]`: a transpose. Lanes
    /// `lanes .. w` of `dst` are left as they are or set to zero.
    ///
    /// # Safety
    /// Every element of the block readable (and `src`'s offsets, if any, for `lanes` lanes),
    /// `dst .. dst + w·kc` writable and not overlapping it, and the CPU supports the
    /// instruction set.
    #[inline(always)]
    unsafe fn pack_transposed(
        w: usize,
        lanes: usize,
        kc: usize,
        src: LaneStarts<Self::T>,
        dst: *mut Self::T,
    ) {
        // SAFETY: forwarded from the caller.
        unsafe { pack_transposed_scalar(w, lanes, kc, src, dst) }
    }
}

/// Where the lanes of a transposing pack start: lane `i` at `base + i·stride`, or at
/// `base + offsets[i]` when `offsets` is not null (the columns of an implicit convolution's
/// column matrix, see `pack::pack_cols`).
#[derive(Clone, Copy, Debug)]
pub(super) struct LaneStarts<T> {
    pub base: *const T,
    pub stride: isize,
    pub offsets: *const usize,
}

impl<T> LaneStarts<T> {
    /// The first element of lane `i`.
    ///
    /// # Safety
    /// With `offsets`, `offsets + i` readable.
    #[inline(always)]
    pub(super) unsafe fn at(&self, i: usize) -> *const T {
        if self.offsets.is_null() {
            self.base.wrapping_offset(i as isize * self.stride)
        } else {
            // SAFETY: the caller's.
            self.base.wrapping_add(unsafe { *self.offsets.add(i) })
        }
    }
}

/// The baseline "register": an array the compiler may or may not vectorise, with the kernel
/// set's multiply-add flavour `F`.
pub(super) struct Lanes<T, F, const N: usize>([T; N], PhantomData<F>);

impl<T: Copy, F, const N: usize> Clone for Lanes<T, F, N> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T: Copy, F, const N: usize> Copy for Lanes<T, F, N> {}

impl<T: Elem, F: MulAdd<T>, const N: usize> Vector for Lanes<T, F, N> {
    type T = T;
    const LANES: usize = N;
    #[inline(always)]
    unsafe fn zero() -> Self {
        Lanes([T::ZERO; N], PhantomData)
    }
    #[inline(always)]
    unsafe fn splat(x: T) -> Self {
        Lanes([x; N], PhantomData)
    }
    #[inline(always)]
    unsafe fn load(p: *const T) -> Self {
        // SAFETY: the caller guarantees `N` readable elements; `read_unaligned` needs no
        // alignment.
        Lanes(unsafe { p.cast::<[T; N]>().read_unaligned() }, PhantomData)
    }
    #[inline(always)]
    unsafe fn mul_add(a: Self, b: Self, c: Self) -> Self {
        Lanes(
            std::array::from_fn(|i| F::mul_add(a.0[i], b.0[i], c.0[i])),
            PhantomData,
        )
    }
    #[inline(always)]
    unsafe fn add(a: Self, b: Self) -> Self {
        Lanes(std::array::from_fn(|i| a.0[i] + b.0[i]), PhantomData)
    }
    #[inline(always)]
    unsafe fn mul(a: Self, b: Self) -> Self {
        Lanes(std::array::from_fn(|i| a.0[i] * b.0[i]), PhantomData)
    }
    #[inline(always)]
    unsafe fn sum(self) -> T {
        self.0.into_iter().fold(T::ZERO, |s, x| s + x)
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut T) {
        // SAFETY: the caller guarantees `N` writable elements; no alignment needed.
        unsafe { p.cast::<[T; N]>().write_unaligned(self.0) }
    }
}

/// Implements [`Vector`] for an x86 register type with its intrinsics.
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
macro_rules! x86_vector {
    (
        $(#[$doc:meta])*
        $name:ident($reg:ty): $t:ty, $lanes:literal, $feature:literal,
        zero: $zero:ident, splat: $splat:ident, load: $load:ident, fma: $fma:ident,
        add: $add:ident, mul: $mul:ident, store: $store:ident,
        sum: $sum:ident, transpose: $transpose:ident $(,)?
    ) => {
        $(#[$doc])*
        #[derive(Clone, Copy)]
        pub(super) struct $name($reg);

        impl Vector for $name {
            type T = $t;
            const LANES: usize = $lanes;
            #[inline]
            #[target_feature(enable = $feature)]
            unsafe fn zero() -> Self {
                $name(arch::$zero())
            }
            #[inline]
            #[target_feature(enable = $feature)]
            unsafe fn splat(x: $t) -> Self {
                $name(arch::$splat(x))
            }
            #[inline]
            #[target_feature(enable = $feature)]
            unsafe fn load(p: *const $t) -> Self {
                // SAFETY: the caller guarantees `LANES` readable elements (unaligned load).
                $name(unsafe { arch::$load(p) })
            }
            #[inline]
            #[target_feature(enable = $feature)]
            unsafe fn mul_add(a: Self, b: Self, c: Self) -> Self {
                $name(arch::$fma(a.0, b.0, c.0))
            }
            #[inline]
            #[target_feature(enable = $feature)]
            unsafe fn add(a: Self, b: Self) -> Self {
                $name(arch::$add(a.0, b.0))
            }
            #[inline]
            #[target_feature(enable = $feature)]
            unsafe fn mul(a: Self, b: Self) -> Self {
                $name(arch::$mul(a.0, b.0))
            }
            #[inline]
            #[target_feature(enable = $feature)]
            unsafe fn sum(self) -> $t {
                $sum(self.0)
            }
            #[inline]
            #[target_feature(enable = $feature)]
            unsafe fn store(self, p: *mut $t) {
                // SAFETY: the caller guarantees `LANES` writable elements (unaligned store).
                unsafe { arch::$store(p, self.0) }
            }
            #[inline]
            #[target_feature(enable = $feature)]
            unsafe fn pack_transposed(
                w: usize,
                lanes: usize,
                kc: usize,
                src: LaneStarts<$t>,
                dst: *mut $t,
            ) {
                // SAFETY: forwarded from the caller (the CPU has AVX, implied by $feature).
                unsafe { $transpose(w, lanes, kc, src, dst) }
            }
        }
    };
}

#[cfg(target_arch = "x86")]
use std::arch::x86 as arch;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64 as arch;

#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
x86_vector! {
    /// 16 × f32 in a zmm register.
    F32x16(arch::__m512): f32, 16, "avx512f",
    zero: _mm512_setzero_ps, splat: _mm512_set1_ps, load: _mm512_loadu_ps,
    fma: _mm512_fmadd_ps, add: _mm512_add_ps, mul: _mm512_mul_ps, store: _mm512_storeu_ps,
    sum: sum_f32x16,
    transpose: pack_transposed_f32,
}

#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
x86_vector! {
    /// 8 × f32 in a ymm register.
    F32x8(arch::__m256): f32, 8, "avx2,fma",
    zero: _mm256_setzero_ps, splat: _mm256_set1_ps, load: _mm256_loadu_ps,
    fma: _mm256_fmadd_ps, add: _mm256_add_ps, mul: _mm256_mul_ps, store: _mm256_storeu_ps,
    sum: sum_f32x8,
    transpose: pack_transposed_f32,
}

#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
x86_vector! {
    /// 4 × f64 in a ymm register.
    F64x4(arch::__m256d): f64, 4, "avx2,fma",
    zero: _mm256_setzero_pd, splat: _mm256_set1_pd, load: _mm256_loadu_pd,
    fma: _mm256_fmadd_pd, add: _mm256_add_pd, mul: _mm256_mul_pd, store: _mm256_storeu_pd,
    sum: sum_f64x4,
    transpose: pack_transposed_f64,
}

// The sums of a register's lanes, pairwise as a tree (lane `i` plus lane `i + w/2`, halving
// `w`): the same rounding on every instruction set, and as the lanes stored and added one by
// one in that order would give, in a few shuffles and vector additions (a reduction per
// output of a tile of dot products weighs on shallow products).

/// The lanes of an AVX-512 f32 register summed as a tree.
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
#[inline]
#[target_feature(enable = "avx512f")]
fn sum_f32x16(v: arch::__m512) -> f32 {
    use arch::{_mm256_add_ps, _mm256_castpd_ps, _mm512_castps512_ps256};
    use arch::{_mm512_castps_pd, _mm512_extractf64x4_pd};
    let high = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
    sum_f32x8(_mm256_add_ps(_mm512_castps512_ps256(v), high))
}

/// The lanes of an AVX f32 register summed as a tree.
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
#[inline]
#[target_feature(enable = "avx")]
fn sum_f32x8(v: arch::__m256) -> f32 {
    use arch::{_mm256_castps256_ps128, _mm256_extractf128_ps, _mm_add_ps, _mm_add_ss};
    use arch::{_mm_cvtss_f32, _mm_movehdup_ps, _mm_movehl_ps};
    let four = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let two = _mm_add_ps(four, _mm_movehl_ps(four, four));
    _mm_cvtss_f32(_mm_add_ss(two, _mm_movehdup_ps(two)))
}

/// The lanes of an AVX f64 register summed as a tree.
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
#[inline]
#[target_feature(enable = "avx")]
fn sum_f64x4(v: arch::__m256d) -> f64 {
    use arch::{_mm256_castpd256_pd128, _mm256_extractf128_pd, _mm_add_pd, _mm_add_sd};
    use arch::{_mm_cvtsd_f64, _mm_unpackhi_pd};
    let two = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd::<1>(v));
    _mm_cvtsd_f64(_mm_add_sd(two, _mm_unpackhi_pd(two, two)))
}

/// [`Vector::pack_transposed`] for f32 with AVX: 8 × 8 blocks are loaded as 8 rows of 8
/// steps, transposed in registers ([`transpose_8x8`]) and stored as 8 steps of 8 lanes (of 6
/// for the AVX2 kernels' 6-row panels of `A`); the ragged edges element by element. Measured
/// on W3's forward pass (`x·Wᵀ`, which transposes all of `W`): the scalar transpose took a
/// quarter of the GEMM's time.
///
/// # Safety
/// As for [`Vector::pack_transposed`], and the CPU supports AVX.
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
#[inline]
#[target_feature(enable = "avx")]
unsafe fn pack_transposed_f32(
    w: usize,
    lanes: usize,
    kc: usize,
    src: LaneStarts<f32>,
    dst: *mut f32,
) {
    use arch::{
        _mm256_castps256_ps128, _mm256_extractf128_ps, _mm256_loadu_ps, _mm256_setzero_ps,
        _mm256_storeu_ps, _mm_castps_pd, _mm_store_sd, _mm_storeu_ps,
    };
    let kc8 = kc / 8 * 8;
    // 8 steps of lanes `i0 .. i0 + rows` (`rows ≤ 8`), transposed: vector `q` holds step
    // `p0 + q` of those lanes, then zeros.
    // SAFETY (of calls): lanes `i0 .. i0 + rows` and steps `p0 .. p0 + 8` inside the block.
    let block = |i0: usize, rows: usize, p0: usize| {
        transpose_8x8(std::array::from_fn(|r| {
            if r < rows {
                unsafe { _mm256_loadu_ps(src.at(i0 + r).add(p0)) }
            } else {
                _mm256_setzero_ps()
            }
        }))
    };
    if w == 6 {
        // The AVX2 kernels' 6-row tile: each step's 6 lanes are stored as 4 + 2 (lanes past
        // `lanes` are the zero rows, the padding a partial panel needs). Element by element,
        // this pack was most of the driver's time in shallow products (`64 × 10 × 64`).
        for p0 in (0..kc8).step_by(8) {
            let steps = block(0, lanes, p0);
            for (q, step) in steps.into_iter().enumerate() {
                // SAFETY: `(p0 + q)·6 + 6 ≤ kc·w`, inside the panel.
                unsafe {
                    let out = dst.add((p0 + q) * 6);
                    _mm_storeu_ps(out, _mm256_castps256_ps128(step));
                    let high = _mm256_extractf128_ps::<1>(step);
                    _mm_store_sd(out.add(4).cast::<f64>(), _mm_castps_pd(high));
                }
            }
        }
        // SAFETY: steps `kc8 ..` of every lane, a sub-block of the caller's block and panel.
        unsafe { transpose_edges(w, lanes, kc, lanes, kc8, src, dst) };
        return;
    }
    // Blocks of 8 lanes; a last block of fewer lanes (a GEMM with 6 rows, say) is transposed
    // the same way, with zero rows for the missing lanes, whenever the panel has room for 8
    // (those zeros land in lanes the microkernel never stores).
    let lanes8 = if !lanes.is_multiple_of(8) && lanes.next_multiple_of(8) <= w {
        lanes
    } else {
        lanes / 8 * 8
    };
    for i0 in (0..lanes8).step_by(8) {
        let rows = (lanes8 - i0).min(8);
        for p0 in (0..kc8).step_by(8) {
            let steps = block(i0, rows, p0);
            for (q, step) in steps.into_iter().enumerate() {
                // SAFETY: `(p0 + q)·w + i0 + 8 ≤ kc·w`, inside the panel (`i0 + 8 ≤ w`).
                unsafe { _mm256_storeu_ps(dst.add((p0 + q) * w + i0), step) };
            }
        }
    }
    // SAFETY: the edges (steps `kc8 ..` of the full lane blocks, and the lanes `lanes8 ..`)
    // are sub-blocks of the caller's block and panel.
    unsafe {
        transpose_edges(w, lanes, kc, lanes8, kc8, src, dst);
    }
}

/// An 8 × 8 transpose in registers (the classic unpack / shuffle / lane-permute network: 24
/// shuffles for 64 elements): row `r`, element `q` of the input is element `r` of output `q`.
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
#[inline]
#[target_feature(enable = "avx")]
fn transpose_8x8(r: [arch::__m256; 8]) -> [arch::__m256; 8] {
    use arch::{_mm256_permute2f128_ps, _mm256_shuffle_ps, _mm256_unpackhi_ps, _mm256_unpacklo_ps};
    let (t0, t1) = (
        _mm256_unpacklo_ps(r[0], r[1]),
        _mm256_unpackhi_ps(r[0], r[1]),
    );
    let (t2, t3) = (
        _mm256_unpacklo_ps(r[2], r[3]),
        _mm256_unpackhi_ps(r[2], r[3]),
    );
    let (t4, t5) = (
        _mm256_unpacklo_ps(r[4], r[5]),
        _mm256_unpackhi_ps(r[4], r[5]),
    );
    let (t6, t7) = (
        _mm256_unpacklo_ps(r[6], r[7]),
        _mm256_unpackhi_ps(r[6], r[7]),
    );
    let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    [
        _mm256_permute2f128_ps::<0x20>(s0, s4),
        _mm256_permute2f128_ps::<0x20>(s1, s5),
        _mm256_permute2f128_ps::<0x20>(s2, s6),
        _mm256_permute2f128_ps::<0x20>(s3, s7),
        _mm256_permute2f128_ps::<0x31>(s0, s4),
        _mm256_permute2f128_ps::<0x31>(s1, s5),
        _mm256_permute2f128_ps::<0x31>(s2, s6),
        _mm256_permute2f128_ps::<0x31>(s3, s7),
    ]
}

/// [`Vector::pack_transposed`] for f64 with AVX: as [`pack_transposed_f32`], with 4 × 4
/// blocks.
///
/// # Safety
/// As for [`Vector::pack_transposed`], and the CPU supports AVX.
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
#[inline]
#[target_feature(enable = "avx")]
unsafe fn pack_transposed_f64(
    w: usize,
    lanes: usize,
    kc: usize,
    src: LaneStarts<f64>,
    dst: *mut f64,
) {
    use arch::{
        _mm256_loadu_pd, _mm256_permute2f128_pd, _mm256_storeu_pd, _mm256_unpackhi_pd,
        _mm256_unpacklo_pd,
    };
    let (lanes4, kc4) = (lanes / 4 * 4, kc / 4 * 4);
    for i0 in (0..lanes4).step_by(4) {
        for p0 in (0..kc4).step_by(4) {
            // SAFETY: as in `pack_transposed_f32`, with 4 × 4 blocks.
            unsafe {
                let row = |r: usize| _mm256_loadu_pd(src.at(i0 + r).add(p0));
                let (r0, r1, r2, r3) = (row(0), row(1), row(2), row(3));
                let (t0, t1) = (_mm256_unpacklo_pd(r0, r1), _mm256_unpackhi_pd(r0, r1));
                let (t2, t3) = (_mm256_unpacklo_pd(r2, r3), _mm256_unpackhi_pd(r2, r3));
                let out = |q: usize| dst.add((p0 + q) * w + i0);
                _mm256_storeu_pd(out(0), _mm256_permute2f128_pd::<0x20>(t0, t2));
                _mm256_storeu_pd(out(1), _mm256_permute2f128_pd::<0x20>(t1, t3));
                _mm256_storeu_pd(out(2), _mm256_permute2f128_pd::<0x31>(t0, t2));
                _mm256_storeu_pd(out(3), _mm256_permute2f128_pd::<0x31>(t1, t3));
            }
        }
    }
    // SAFETY: as in `pack_transposed_f32`.
    unsafe {
        transpose_edges(w, lanes, kc, lanes4, kc4, src, dst);
    }
}

/// The part of a transposing pack that the register blocks did not cover: steps
/// `done_steps .. kc` of lanes `0 .. done_lanes`, and all steps of lanes `done_lanes .. lanes`.
///
/// # Safety
/// As for [`Vector::pack_transposed`].
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn transpose_edges<T: Elem>(
    w: usize,
    lanes: usize,
    kc: usize,
    done_lanes: usize,
    done_steps: usize,
    src: LaneStarts<T>,
    dst: *mut T,
) {
    for i in 0..lanes {
        let first = if i < done_lanes { done_steps } else { 0 };
        // SAFETY: `i < lanes`, a lane of the block.
        let lane = unsafe { src.at(i) };
        for p in first..kc {
            // SAFETY: `i < lanes`, `p < kc`: inside the block and the panel.
            unsafe { *dst.add(p * w + i) = *lane.add(p) };
        }
    }
}
