//! The [`Float`] trait: the element types a kiln model can be instantiated with (`f32`, `f64`).
//!
//! Generated code is generic over `F: Float`. The trait carries the scalar math the macro's
//! fused loops call (`exp`, `tanh`, `erf`, ...) and a strided GEMM so that kernels can multiply
//! transposed views without copying them.

use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::ops::{Add, AddAssign, Div, DivAssign, Mul, MulAssign, Neg, Sub, SubAssign};

/// A floating-point element type: `f32` or `f64`.
///
/// ```
/// use kiln_runtime::Float;
/// fn softplus<F: Float>(x: F) -> F { (F::ONE + x.exp()).ln() }
/// assert!((softplus(0.0f64) - 2f64.ln()).abs() < 1e-15);
/// ```
pub trait Float:
    Copy
    + Send
    + Sync
    + Debug
    + Display
    + Default
    + PartialOrd
    + PartialEq
    + 'static
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + Sum
    + ndarray::LinalgScalar
    + ndarray::ScalarOperand
{
    /// `0`.
    const ZERO: Self;
    /// `1`.
    const ONE: Self;
    /// `−∞`: the value a masked attention score takes, so that its softmax weight is exactly 0.
    const NEG_INFINITY: Self;
    /// The machine epsilon (`f32::EPSILON`, `f64::EPSILON`): PyTorch's `torch.finfo(dtype).eps`,
    /// the default `eps` of `nn.RMSNorm`.
    const EPSILON: Self;
    /// The type's name as written in Rust (`"f32"`, `"f64"`).
    const NAME: &'static str;
    /// The safetensors element type this float is stored as.
    const DTYPE: crate::io::Dtype;

    /// Converts from `f64`, rounding to nearest for `f32`.
    fn from_f64(v: f64) -> Self;
    /// Converts to `f64` (exact).
    fn to_f64(self) -> f64;
    /// Converts a `usize` count (batch sizes, element counts).
    fn from_usize(v: usize) -> Self;
    /// `e^self`.
    fn exp(self) -> Self;
    /// Natural logarithm.
    fn ln(self) -> Self;
    /// `ln(1 + self)`, accurate near 0.
    fn ln_1p(self) -> Self;
    /// Square root.
    fn sqrt(self) -> Self;
    /// Hyperbolic tangent.
    fn tanh(self) -> Self;
    /// The error function (for exact GELU).
    fn erf(self) -> Self;
    /// Absolute value.
    fn abs(self) -> Self;
    /// Integer power.
    fn powi(self, n: i32) -> Self;
    /// Real power `self^n` (the platform's `pow`, as PyTorch's `std::pow`).
    fn powf(self, n: Self) -> Self;
    /// Larger of two values (NaN-propagating is not guaranteed).
    fn max(self, other: Self) -> Self;
    /// Smaller of two values.
    fn min(self, other: Self) -> Self;
    /// Whether the value is neither infinite nor NaN.
    fn is_finite(self) -> bool;
    /// `self · a + b` with a single rounding (fused multiply-add). The optimizers use it
    /// where PyTorch's CPU kernels do (`add(other, alpha)`, `lerp`, `addcmul`), so that their
    /// updates round as PyTorch's do.
    fn mul_add(self, a: Self, b: Self) -> Self;
    /// The logistic function `1 / (1 + e^-self)`, without overflow for large `|self|`.
    #[inline(always)]
    fn sigmoid(self) -> Self {
        if self >= Self::ZERO {
            Self::ONE / (Self::ONE + (-self).exp())
        } else {
            let e = self.exp();
            e / (Self::ONE + e)
        }
    }
    /// `ln(1 + e^self)`, computed as `max(self, 0) + ln(1 + e^-|self|)` so it never overflows.
    #[inline(always)]
    fn softplus(self) -> Self {
        self.max(Self::ZERO) + (-self.abs()).exp().ln_1p()
    }
    /// Little-endian bytes of `self` appended to `out` (checkpoint writing).
    fn write_le(self, out: &mut Vec<u8>);
    /// Reads one value from little-endian bytes (`bytes.len()` is the type's size).
    fn read_le(bytes: &[u8]) -> Self;

    /// Sums `send` over the ranks of `comm` into `recv` on every rank (the element type's
    /// entry point into [`Communicator`](crate::distributed::Communicator), which has one
    /// method per type).
    ///
    /// # Errors
    /// The communicator's.
    fn all_reduce_sum(
        comm: &dyn crate::distributed::Communicator,
        send: &[Self],
        recv: &mut [Self],
    ) -> crate::Result<()>;
    /// Overwrites `buffer` on every rank of `comm` with rank 0's.
    ///
    /// # Errors
    /// The communicator's.
    fn broadcast(
        comm: &dyn crate::distributed::Communicator,
        buffer: &mut [Self],
    ) -> crate::Result<()>;
    /// The element type's [`Communicator::overlap_f32`](crate::distributed::Communicator::overlap_f32)
    /// or `overlap_f64`.
    ///
    /// # Errors
    /// The communicator's, or `body`'s.
    #[allow(clippy::type_complexity)]
    fn overlap<'b>(
        comm: &dyn crate::distributed::Communicator,
        body: &mut dyn FnMut(
            &mut dyn crate::distributed::PendingSums<'b, Self>,
        ) -> crate::Result<()>,
    ) -> crate::Result<()>;

    /// `C = alpha * A B + beta * C` on raw strided matrices (row and column strides in
    /// elements, any sign). `A` is `m x k`, `B` is `k x n`, `C` is `m x n`. A transpose is a
    /// swap of the two strides, so no operand is ever copied by the caller. When `beta` is
    /// zero `C` is only written; when `k` or `alpha` is zero, `A` and `B` are not read and
    /// `C` becomes `beta * C`. This is kiln's own GEMM ([`crate::kernels::gemm()`]): after a
    /// thread's first call of a given size, later calls allocate nothing.
    ///
    /// # Safety
    /// Element `(i, j)` of each matrix is at `ptr + i * rs + j * cs`. Every element of `A`
    /// and `B` must be readable, every element of `C` writable (and readable unless `beta` is
    /// zero), and `C` must not overlap `A`, `B` or itself (no two of its elements at the same
    /// address).
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm_raw(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    );

    /// `C = A B + bias` (the `n`-element `bias` added to every row) on raw strided matrices
    /// as [`Float::gemm_raw`]: a linear layer's `y = x Wᵀ + b`. The bias is added as each
    /// tile of `C` is written, so `C` is written once and never read.
    ///
    /// # Safety
    /// As for [`Float::gemm_raw`] with `beta` zero, and `bias` readable for `n` elements.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm_bias_raw(
        m: usize,
        k: usize,
        n: usize,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        bias: *const Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    );

    /// `C = A B + beta C` with the rows or columns of `B` placed by offsets: the
    /// implementation of the stride-1 convolutions' implicit GEMM
    /// (`kernels::gemm::gemm_offsets`).
    ///
    /// # Safety
    /// As for `kernels::gemm::gemm_offsets`.
    #[doc(hidden)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm_offsets_raw(
        m: usize,
        k: usize,
        n: usize,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        offsets: *const usize,
        lines: crate::kernels::gemm::OffsetLines,
        beta: Self,
        c: *mut Self,
        rsc: isize,
    );

    /// Packs `B` for [`Float::gemm_packed_b_raw`]: the implementation of
    /// [`crate::kernels::gemm::pack_b`].
    ///
    /// # Safety
    /// `B` (`k × n`, element `(p, j)` at `b + p·rsb + j·csb`) readable, `dst` writable for
    /// [`crate::kernels::gemm::packed_b_len`]`(k, n)` elements and not overlapping `B`.
    #[doc(hidden)]
    unsafe fn pack_b_raw(
        k: usize,
        n: usize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        dst: *mut Self,
    );

    /// `C = alpha A B + beta C` with `B` packed by [`Float::pack_b_raw`] for `k × n` in this
    /// process: the implementation of [`crate::kernels::gemm::gemm_packed_b`].
    ///
    /// # Safety
    /// As for [`Float::gemm_raw`], with `b_packed` as described.
    #[doc(hidden)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm_packed_b_raw(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b_packed: *const Self,
        beta: Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    );
}

macro_rules! impl_float {
    ($t:ident, $dtype:ident, $exp:path, $erf:path, $tanh:path, $reduce:ident, $bcast:ident, $overlap:ident) => {
        impl Float for $t {
            fn all_reduce_sum(
                comm: &dyn crate::distributed::Communicator,
                send: &[Self],
                recv: &mut [Self],
            ) -> crate::Result<()> {
                comm.$reduce(send, recv)
            }

            fn broadcast(
                comm: &dyn crate::distributed::Communicator,
                buffer: &mut [Self],
            ) -> crate::Result<()> {
                comm.$bcast(buffer)
            }

            fn overlap<'b>(
                comm: &dyn crate::distributed::Communicator,
                body: &mut dyn FnMut(
                    &mut dyn crate::distributed::PendingSums<'b, Self>,
                ) -> crate::Result<()>,
            ) -> crate::Result<()> {
                comm.$overlap(body)
            }

            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const NEG_INFINITY: Self = $t::NEG_INFINITY;
            const EPSILON: Self = <$t>::EPSILON;
            const NAME: &'static str = stringify!($t);
            const DTYPE: crate::io::Dtype = crate::io::Dtype::$dtype;

            #[inline(always)]
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn from_usize(v: usize) -> Self {
                v as $t
            }
            #[inline(always)]
            fn exp(self) -> Self {
                $exp(self)
            }
            #[inline(always)]
            fn ln(self) -> Self {
                $t::ln(self)
            }
            #[inline(always)]
            fn ln_1p(self) -> Self {
                $t::ln_1p(self)
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                $t::sqrt(self)
            }
            #[inline(always)]
            fn tanh(self) -> Self {
                $tanh(self)
            }
            #[inline(always)]
            fn erf(self) -> Self {
                $erf(self)
            }
            #[inline(always)]
            fn abs(self) -> Self {
                $t::abs(self)
            }
            #[inline(always)]
            fn powi(self, n: i32) -> Self {
                $t::powi(self, n)
            }
            #[inline(always)]
            fn powf(self, n: Self) -> Self {
                $t::powf(self, n)
            }
            #[inline(always)]
            fn max(self, other: Self) -> Self {
                $t::max(self, other)
            }
            #[inline(always)]
            fn min(self, other: Self) -> Self {
                $t::min(self, other)
            }
            #[inline(always)]
            fn is_finite(self) -> bool {
                $t::is_finite(self)
            }
            #[inline(always)]
            fn mul_add(self, a: Self, b: Self) -> Self {
                $t::mul_add(self, a, b)
            }
            fn write_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn read_le(bytes: &[u8]) -> Self {
                let mut raw = [0u8; std::mem::size_of::<$t>()];
                raw.copy_from_slice(&bytes[..std::mem::size_of::<$t>()]);
                $t::from_le_bytes(raw)
            }
            #[inline]
            unsafe fn gemm_raw(
                m: usize,
                k: usize,
                n: usize,
                alpha: Self,
                a: *const Self,
                rsa: isize,
                csa: isize,
                b: *const Self,
                rsb: isize,
                csb: isize,
                beta: Self,
                c: *mut Self,
                rsc: isize,
                csc: isize,
            ) {
                // SAFETY: forwarded contract of this function.
                unsafe {
                    crate::kernels::gemm::gemm_strided::<$t>(
                        m,
                        k,
                        n,
                        alpha,
                        a,
                        rsa,
                        csa,
                        b,
                        rsb,
                        csb,
                        beta,
                        c,
                        rsc,
                        csc,
                        std::ptr::null(),
                        std::ptr::null(),
                    )
                }
            }

            unsafe fn gemm_bias_raw(
                m: usize,
                k: usize,
                n: usize,
                a: *const Self,
                rsa: isize,
                csa: isize,
                b: *const Self,
                rsb: isize,
                csb: isize,
                bias: *const Self,
                c: *mut Self,
                rsc: isize,
                csc: isize,
            ) {
                // SAFETY: forwarded contract of this function.
                unsafe {
                    crate::kernels::gemm::gemm_strided::<$t>(
                        m,
                        k,
                        n,
                        1.0,
                        a,
                        rsa,
                        csa,
                        b,
                        rsb,
                        csb,
                        0.0,
                        c,
                        rsc,
                        csc,
                        bias,
                        std::ptr::null(),
                    )
                }
            }

            unsafe fn gemm_offsets_raw(
                m: usize,
                k: usize,
                n: usize,
                a: *const Self,
                rsa: isize,
                csa: isize,
                b: *const Self,
                offsets: *const usize,
                lines: crate::kernels::gemm::OffsetLines,
                beta: Self,
                c: *mut Self,
                rsc: isize,
            ) {
                // SAFETY: forwarded contract of this function.
                unsafe {
                    crate::kernels::gemm::gemm_offsets::<$t>(
                        m, k, n, a, rsa, csa, b, offsets, lines, beta, c, rsc,
                    )
                }
            }

            unsafe fn pack_b_raw(
                k: usize,
                n: usize,
                b: *const Self,
                rsb: isize,
                csb: isize,
                dst: *mut Self,
            ) {
                // SAFETY: forwarded contract of this function.
                unsafe { crate::kernels::gemm::pack_b_strided::<$t>(k, n, b, rsb, csb, dst) }
            }

            unsafe fn gemm_packed_b_raw(
                m: usize,
                k: usize,
                n: usize,
                alpha: Self,
                a: *const Self,
                rsa: isize,
                csa: isize,
                b_packed: *const Self,
                beta: Self,
                c: *mut Self,
                rsc: isize,
                csc: isize,
            ) {
                // SAFETY: forwarded contract of this function.
                unsafe {
                    crate::kernels::gemm::gemm_strided::<$t>(
                        m,
                        k,
                        n,
                        alpha,
                        a,
                        rsa,
                        csa,
                        b_packed,
                        0,
                        0,
                        beta,
                        c,
                        rsc,
                        csc,
                        std::ptr::null(),
                        b_packed,
                    )
                }
            }
        }
    };
}

// f32's exp, tanh and erf are branch-free (see `fast_math`) so that generated loops using them
// vectorize; f64 keeps the library's.
impl_float!(
    f32,
    F32,
    crate::fast_math::exp_f32,
    crate::fast_math::erf_f32,
    crate::fast_math::tanh_f32,
    all_reduce_sum_f32,
    broadcast_f32,
    overlap_f32
);
impl_float!(
    f64,
    F64,
    f64::exp,
    crate::special::erf_f64,
    f64::tanh,
    all_reduce_sum_f64,
    broadcast_f64,
    overlap_f64
);
