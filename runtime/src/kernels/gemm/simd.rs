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
        add: $add:ident, mul: $mul:ident, store: $store:ident $(,)?
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
                let mut lanes = [0.0; $lanes];
                // SAFETY: `lanes` holds exactly one register (unaligned store).
                unsafe { self.store(lanes.as_mut_ptr()) };
                // Pairwise, as a tree: the same rounding on every instruction set.
                let mut w = $lanes;
                while w > 1 {
                    w /= 2;
                    for i in 0..w {
                        lanes[i] += lanes[i + w];
                    }
                }
                lanes[0]
            }
            #[inline]
            #[target_feature(enable = $feature)]
            unsafe fn store(self, p: *mut $t) {
                // SAFETY: the caller guarantees `LANES` writable elements (unaligned store).
                unsafe { arch::$store(p, self.0) }
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
}

#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
x86_vector! {
    /// 8 × f64 in a zmm register.
    F64x8(arch::__m512d): f64, 8, "avx512f",
    zero: _mm512_setzero_pd, splat: _mm512_set1_pd, load: _mm512_loadu_pd,
    fma: _mm512_fmadd_pd, add: _mm512_add_pd, mul: _mm512_mul_pd, store: _mm512_storeu_pd,
}

#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
x86_vector! {
    /// 8 × f32 in a ymm register.
    F32x8(arch::__m256): f32, 8, "avx2,fma",
    zero: _mm256_setzero_ps, splat: _mm256_set1_ps, load: _mm256_loadu_ps,
    fma: _mm256_fmadd_ps, add: _mm256_add_ps, mul: _mm256_mul_ps, store: _mm256_storeu_ps,
}

#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
x86_vector! {
    /// 4 × f64 in a ymm register.
    F64x4(arch::__m256d): f64, 4, "avx2,fma",
    zero: _mm256_setzero_pd, splat: _mm256_set1_pd, load: _mm256_loadu_pd,
    fma: _mm256_fmadd_pd, add: _mm256_add_pd, mul: _mm256_mul_pd, store: _mm256_storeu_pd,
}
