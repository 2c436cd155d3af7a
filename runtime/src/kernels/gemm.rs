//! General matrix multiplication on row-major slices, with transposes expressed as strides.
//!
//! kiln's own GEMM, BLIS-style, so that a warm training step allocates nothing (the packing
//! buffers are thread-local and grow once) and so that the kernels use the CPU's widest
//! vectors (AVX-512 where available). This module is its safe front door: slices, transposes
//! as strides, the two-thread split and its bit-identity. The engine underneath (the
//! blocked loops, the microkernels per instruction set, packing, the matrix-vector paths) is
//! the `kiln-gemm` crate, compiled apart from the rest of the runtime because it takes the
//! longest to build; its crate docs list its modules.
//!
//! - `parallel.rs` (beside this module): the one persistent helper thread that computes half
//!   of a large product (`m·k·n ≥ 2²²`) while the caller computes the other half;
//!   `KILN_THREADS=1` turns it off.
//!
//! A `B` used by many products (a recurrent layer's weight, at every time step) can be packed
//! once with [`pack_b`] and multiplied with [`gemm_packed_b`], skipping the per-call copy.
//!
//! The instruction set is detected once per process; the environment variable
//! `KILN_GEMM_ISA=avx512|avx2|portable` selects a lesser one (benchmarks, debugging).

use super::parallel;
use crate::Float;
pub(crate) use kiln_gemm::Isa;
use kiln_gemm::{Claims, Dispatch, MatRef, Path, Problem};

/// `C = alpha · op(A) · op(B) + beta · C` on row-major slices.
///
/// `op(A)` is `m × k`: `A` is stored `m × k` row-major, or `k × m` row-major when `a_trans`
/// (then `op(A) = Aᵀ`). Likewise `op(B)` is `k × n`, stored `k × n` or (`b_trans`) `n × k`.
/// `C` is `m × n`. A transpose is a swap of the row and column strides handed to
/// [`Float::gemm_raw`], so no operand is ever copied by the caller. When `beta` is zero `C`
/// is only written (its previous contents, even NaN, do not leak into the result). Any of
/// `m`, `k`, `n` may be zero; with `k == 0` (or `alpha == 0`) the product is empty and `C`
/// becomes `beta · C`.
///
/// Once a thread has run a GEMM of a given size (or larger), later calls allocate nothing.
/// Large products run on two threads (this one and a persistent helper, see `kernels/parallel.rs`)
/// unless `KILN_THREADS=1`; the result is bit-identical either way.
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
    check_lens("gemm", (m, k, n), a.len(), b.len(), c.len());
    if m == 0 || n == 0 {
        return;
    }
    let ((rsa, csa), (rsb, csb)) = (strides(m, k, a_trans), strides(k, n, b_trans));
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
            rsa,
            csa,
            b.as_ptr(),
            rsb,
            csb,
            beta,
            c.as_mut_ptr(),
            stride(n),
            1,
        );
    }
}

/// `C = op(A) · op(B) + bias`, the `n`-element `bias` added to every row of `C`: a linear
/// layer's `y = x · Wᵀ + b`, with `A`, `B` and `C` as for [`gemm()`]. The bias is added as
/// each tile of `C` is written (PyTorch's `addmm` copies it into `C` first, then adds the
/// product onto it), so `C` is written once and not read; the result is the same bits as
/// that copy followed by `gemm` with `beta = 1`.
///
/// # Panics
/// If a slice's length is not the product of its dimensions (a caller bug).
///
/// ```
/// use kiln_runtime::kernels::gemm::gemm_bias;
/// // [1 2] · [[1 0] [0 1]] + [10 20]
/// let mut c = [0.0f32; 2];
/// gemm_bias(1, 2, 2, &[1.0, 2.0], false, &[1.0, 0.0, 0.0, 1.0], false, &[10.0, 20.0], &mut c);
/// assert_eq!(c, [11.0, 22.0]);
/// ```
#[allow(clippy::too_many_arguments)]
pub fn gemm_bias<F: Float>(
    m: usize,
    k: usize,
    n: usize,
    a: &[F],
    a_trans: bool,
    b: &[F],
    b_trans: bool,
    bias: &[F],
    c: &mut [F],
) {
    check_lens("gemm_bias", (m, k, n), a.len(), b.len(), c.len());
    assert_eq!(
        bias.len(),
        n,
        "gemm_bias: the bias has {} elements, expected {n}",
        bias.len()
    );
    if m == 0 || n == 0 {
        return;
    }
    let ((rsa, csa), (rsb, csb)) = (strides(m, k, a_trans), strides(k, n, b_trans));
    // SAFETY: as in `gemm`: every index the strides reach lies inside its slice, `c` is a
    // unique borrow, and `bias` holds `n` elements.
    unsafe {
        F::gemm_bias_raw(
            m,
            k,
            n,
            a.as_ptr(),
            rsa,
            csa,
            b.as_ptr(),
            rsb,
            csb,
            bias.as_ptr(),
            c.as_mut_ptr(),
            stride(n),
            1,
        );
    }
}

/// `op(B)` packed once into the layout the GEMM's microkernels read, for many products with
/// the same `B`: a recurrent layer multiplies its hidden state by the same weight at every
/// time step, and packing it once per sequence rather than once per step saves a copy of the
/// whole weight per step. Made by [`pack_b`], used by [`gemm_packed_b`]; it borrows the buffer
/// it was packed into.
#[derive(Clone, Copy, Debug)]
pub struct PackedB<'a, F> {
    k: usize,
    n: usize,
    panels: &'a [F],
}

impl<F> PackedB<'_, F> {
    /// `(k, n)`: the shape of `op(B)`.
    pub fn shape(&self) -> (usize, usize) {
        (self.k, self.n)
    }
}

/// The widest panel of any kernel set (AVX-512 f32: 32 columns).
const MAX_NR: usize = 32;

/// Elements of the buffer [`pack_b`] needs for a `k × n` `op(B)`, on any CPU: each column
/// block padded to a whole panel of the widest kernels.
pub fn packed_b_len(k: usize, n: usize) -> usize {
    k * n.next_multiple_of(MAX_NR)
}

/// Packs `op(B)` (`k × n`, stored as for [`gemm()`]: `k × n` row-major, or `n × k` when
/// `b_trans`) into `buf` for [`gemm_packed_b`].
///
/// # Panics
/// If `b` does not hold `k·n` elements or `buf` fewer than [`packed_b_len`]`(k, n)`.
///
/// ```
/// use kiln_runtime::kernels::gemm::{gemm, gemm_packed_b, pack_b, packed_b_len};
/// let (m, k, n) = (3, 4, 5);
/// let a: Vec<f32> = (0..m * k).map(|i| i as f32).collect();
/// let w: Vec<f32> = (0..n * k).map(|i| (i % 7) as f32 - 3.0).collect(); // n × k, used as Wᵀ
/// let mut buf = vec![0.0; packed_b_len(k, n)];
/// let wt = pack_b(k, n, &w, true, &mut buf);
/// let (mut c, mut want) = (vec![0.0; m * n], vec![0.0; m * n]);
/// gemm_packed_b(m, 1.0, &a, false, &wt, 0.0, &mut c);
/// gemm(m, k, n, 1.0, &a, false, &w, true, 0.0, &mut want);
/// assert_eq!(c, want);
/// ```
pub fn pack_b<'a, F: Float>(
    k: usize,
    n: usize,
    b: &[F],
    b_trans: bool,
    buf: &'a mut [F],
) -> PackedB<'a, F> {
    assert_eq!(
        b.len(),
        k * n,
        "pack_b: B has {} elements, expected {k}×{n}",
        b.len()
    );
    let need = packed_b_len(k, n);
    assert!(
        buf.len() >= need,
        "pack_b: the buffer has {} elements, needs {need} (packed_b_len)",
        buf.len()
    );
    let (rsb, csb) = strides(k, n, b_trans);
    // SAFETY: every index the strides reach lies inside `b` (as in `gemm`); `buf` is a unique
    // borrow of at least `packed_b_len(k, n)` elements, more than any kernel set writes.
    unsafe { F::pack_b_raw(k, n, b.as_ptr(), rsb, csb, buf.as_mut_ptr()) };
    PackedB { k, n, panels: buf }
}

/// `C = alpha · op(A) · B + beta · C` with `B` packed by [`pack_b`]: [`gemm()`] without
/// packing `B`. Always on the calling thread (its callers run one product per thread).
/// The result is the same bits as [`gemm()`]'s when `gemm` packs `B` too (it does for all
/// but small, thin or single-row products, which it computes unpacked).
///
/// # Panics
/// If `a` or `c` do not hold `m·k` and `m·n` elements, with `(k, n)` the packed shape.
pub fn gemm_packed_b<F: Float>(
    m: usize,
    alpha: F,
    a: &[F],
    a_trans: bool,
    b: &PackedB<'_, F>,
    beta: F,
    c: &mut [F],
) {
    let (k, n) = (b.k, b.n);
    assert_eq!(
        a.len(),
        m * k,
        "gemm_packed_b: A has {} elements, expected {m}×{k}",
        a.len()
    );
    assert_eq!(
        c.len(),
        m * n,
        "gemm_packed_b: C has {} elements, expected {m}×{n}",
        c.len()
    );
    if m == 0 || n == 0 {
        return;
    }
    let (rsa, csa) = strides(m, k, a_trans);
    // SAFETY: `A` and `C` are inside their slices as in `gemm`, `c` is a unique borrow, and
    // `b.panels` holds `B` packed for this process's kernels by `pack_b`.
    unsafe {
        F::gemm_packed_b_raw(
            m,
            k,
            n,
            alpha,
            a.as_ptr(),
            rsa,
            csa,
            b.panels.as_ptr(),
            beta,
            c.as_mut_ptr(),
            stride(n),
            1,
        )
    }
}

/// [`pack_b`] on raw strides: the implementation of [`Float::pack_b_raw`].
///
/// # Safety
/// `B` (`k × n`, element `(p, j)` at `b + p·rsb + j·csb`) readable, `dst` writable for
/// [`packed_b_len`] elements and not overlapping `B`.
pub(crate) unsafe fn pack_b_strided<T: Dispatch>(
    k: usize,
    n: usize,
    b: *const T,
    rsb: isize,
    csb: isize,
    dst: *mut T,
) {
    let isa = Isa::selected();
    debug_assert!(T::packed_b_len(isa, k, n) <= packed_b_len(k, n));
    let b = MatRef {
        ptr: b,
        rs: rsb,
        cs: csb,
    };
    // SAFETY: the selected instruction set is supported; the memory is the caller's.
    unsafe { T::pack_b_on(isa, k, n, b, dst) }
}

/// Panics unless `A`, `B` and `C` hold `m·k`, `k·n` and `m·n` elements (a caller bug).
#[track_caller]
fn check_lens(what: &str, (m, k, n): (usize, usize, usize), a: usize, b: usize, c: usize) {
    assert_eq!(a, m * k, "{what}: A has {a} elements, expected {m}×{k}");
    assert_eq!(b, k * n, "{what}: B has {b} elements, expected {k}×{n}");
    assert_eq!(c, m * n, "{what}: C has {c} elements, expected {m}×{n}");
}

/// The (row, column) strides of `op(X)`, an `rows × cols` matrix stored row-major as itself
/// or (`trans`) as its `cols × rows` transpose: the transpose reads the same memory with the
/// strides swapped.
fn strides(rows: usize, cols: usize, trans: bool) -> (isize, isize) {
    if trans {
        (1, stride(rows))
    } else {
        (stride(cols), 1)
    }
}

/// A dimension as a stride. Slices never hold more than `isize::MAX` bytes, so a length that
/// fits a slice fits an `isize`.
#[inline(always)]
fn stride(elements: usize) -> isize {
    elements as isize
}

/// `C = alpha · A · B + beta · C` on raw strided matrices: the implementation of
/// [`Float::gemm_raw`] for `f32` and `f64`, with the best kernels this CPU supports; also
/// [`Float::gemm_bias_raw`] (a non-null `bias`) and [`Float::gemm_packed_b_raw`] (a non-null
/// `b_packed`, which then stands for `b`).
///
/// # Safety
/// As for [`Float::gemm_raw`]: `A` (`m × k`, element `(i, p)` at `a + i·rsa + p·csa`) and `B`
/// (`k × n`) readable, `C` (`m × n`) writable (and readable unless `beta` is zero), `C` not
/// overlapping `A` or `B` nor itself (no two `(i, j)` at the same address); `bias` null or
/// readable for `n` elements; `b_packed` null (or, with `bias` null, made by
/// [`pack_b_strided`] for `k × n` in this process).
#[allow(clippy::too_many_arguments)]
#[inline]
pub(crate) unsafe fn gemm_strided<T: Dispatch>(
    m: usize,
    k: usize,
    n: usize,
    alpha: T,
    a: *const T,
    rsa: isize,
    csa: isize,
    b: *const T,
    rsb: isize,
    csb: isize,
    beta: T,
    c: *mut T,
    rsc: isize,
    csc: isize,
    bias: *const T,
    b_packed: *const T,
) {
    let p = Problem {
        m,
        k,
        n,
        alpha,
        a: MatRef {
            ptr: a,
            rs: rsa,
            cs: csa,
        },
        b: MatRef {
            ptr: b,
            rs: rsb,
            cs: csb,
        },
        beta,
        c,
        rsc,
        csc,
        bias,
        b_packed,
        b_rows: std::ptr::null(),
        b_cols: std::ptr::null(),
    };
    let isa = Isa::selected();
    // SAFETY (both): `Isa::selected` is supported by this CPU (a prepacked `B` was packed
    // with it: it is chosen once per process); the memory contract is the caller's. A product
    // with a prepacked `B` runs on this thread (its callers run one product per thread).
    if !b_packed.is_null() || !unsafe { run_split(isa, &p) } {
        unsafe { T::run_on(isa, &p, Path::Auto) }
    }
}

/// Columns a row of `B` must stay readable past `n` for [`gemm_offsets`] by rows: every
/// kernel reads whole panels of `NR` columns (at most 32) and stores only the `n` real ones.
pub(crate) use kiln_gemm::ROWS_SLACK;

/// Which lines of `B` an offset table places (see [`gemm_offsets`]).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffsetLines {
    /// Row `p` of `B` is the `n` contiguous elements from `b + offsets[p]`.
    Rows,
    /// Column `j` of `B` is the `k` contiguous elements from `b + offsets[j]`.
    Cols,
}

/// `C = A · B + beta · C` with `B`'s rows or columns anywhere in one buffer, placed by an
/// offset table. This is the implicit GEMM of a stride-1 convolution (see `kernels::conv`):
/// with the input padded and its rows laid end to end, the column matrix's row for input
/// channel `c` and kernel tap `(u, v)` is the padded input from an offset, so the products
/// read it in place instead of copying it out (im2col):
///
/// - [`OffsetLines::Rows`], the forward `W · cols`: the microkernel reads each row of `B`
///   in place; split between two threads when large (a split along `n` moves `b`, which the
///   offsets are relative to, with the columns);
/// - [`OffsetLines::Cols`], the weight gradient `dy · colsᵀ`: the rows of `cols` are `B`'s
///   columns, packed straight from the buffer by the transposing pack; on this thread (a
///   convolution's weight gradient runs one sample per thread).
///
/// Either gives the bits of a GEMM over the gathered lines, with [`gemm_strided`]'s packed
/// path's blocking and summation order.
///
/// # Safety
/// `A` (`m × k`, element `(i, p)` at `a + i·rsa + p·csa`) readable; `offsets` readable for
/// `k` (`Rows`) or `n` (`Cols`) entries, each row `b + offsets[p] .. + n + ROWS_SLACK`
/// (`Rows`: the slack is read, never used) or column `b + offsets[j] .. + k` (`Cols`)
/// readable; `C` (`m × n`, rows `rsc` apart, columns contiguous) writable (and readable
/// unless `beta` is zero) and not overlapping `A`, `B` or itself.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_offsets<T: Dispatch>(
    m: usize,
    k: usize,
    n: usize,
    a: *const T,
    rsa: isize,
    csa: isize,
    b: *const T,
    offsets: *const usize,
    lines: OffsetLines,
    beta: T,
    c: *mut T,
    rsc: isize,
) {
    let (b_rows, b_cols) = match lines {
        OffsetLines::Rows => (offsets, std::ptr::null()),
        OffsetLines::Cols => (std::ptr::null(), offsets),
    };
    let p = Problem {
        m,
        k,
        n,
        alpha: T::ONE,
        a: MatRef {
            ptr: a,
            rs: rsa,
            cs: csa,
        },
        // The offsets place `B`'s lines; the stride along a line is 1, which a split along
        // `n` uses to move `b` with the columns (by rows; by columns it runs unsplit).
        b: MatRef {
            ptr: b,
            rs: (lines == OffsetLines::Cols).into(),
            cs: (lines == OffsetLines::Rows).into(),
        },
        beta,
        c,
        rsc,
        csc: 1,
        bias: std::ptr::null(),
        b_packed: std::ptr::null(),
        b_rows,
        b_cols,
    };
    let isa = Isa::selected();
    // SAFETY: `Isa::selected` is supported by this CPU; the memory contract is the caller's.
    if lines == OffsetLines::Cols || !unsafe { run_split(isa, &p) } {
        unsafe { T::run_on(isa, &p, Path::Auto) }
    }
}

/// The smallest product (`m·k·n` multiply-adds) run on two threads. Measured on a 2-core
/// AVX-512 machine with back-to-back calls (the helper spinning, see `kernels/parallel.rs`): two
/// threads are 1.9× faster from 2²³ up, 1.4 to 1.6× at 2²¹ to 2²². Inside a training step the
/// helper must also be awake: W2's two 2^22.6 products gained nothing while the helper slept
/// between them (a futex wake-up costs tens of microseconds), but once the optimizer's update
/// also runs on both threads (keeping the helper spinning) and a share the helper has not
/// started is taken back by the caller, splitting them took W2's two-thread step from 0.26 to
/// 0.17 ms (one thread: 0.25 ms; Intel Xeon, AVX-512, 2026-12-03). W3's products are 2²⁹ and more.
const THREADED_MIN_WORK: usize = 1 << 22;

/// Whether a part of a split, with a `rows × cols` `C`, runs the algorithm the whole would
/// have under [`Path::Auto`], whatever its layout and depth (see `driver::gemv_first`): a
/// part narrower than half a tile might take the dot products where the whole packs, and so
/// might a part of `MR` rows or fewer. A split along `n` keeps the whole's rows (`min_rows`
/// 2); a split along `m` needs more rows than a tile in each part (`min_rows` `MR + 1`).
fn same_algorithm(rows: usize, cols: usize, nr: usize, min_rows: usize) -> bool {
    rows >= min_rows && cols > 1 && 2 * cols >= nr
}

/// Runs a large problem on two threads, if available and worth it. Where the whole would
/// run the packed loop nest, both threads share it block by block ([`run_shared`]).
/// Otherwise `C` is cut at a panel boundary into two blocks of about equal work (along `n`
/// when `n ≥ m`, else along `m`); this thread computes the first and the helper thread the
/// second, each with the unchanged single-threaded algorithm. Either way each element is
/// the same sum in the same order (the same `kc` blocking), so the result is bit-identical
/// to a one-thread call. Returns `false`, having done nothing, when the problem is to run on
/// this thread alone.
///
/// # Safety
/// `isa` supported by this CPU and `p` as for [`Dispatch::run_on`].
unsafe fn run_split<T: Dispatch>(isa: Isa, p: &Problem<T>) -> bool {
    let work = p.m.saturating_mul(p.n).saturating_mul(p.k);
    if work < THREADED_MIN_WORK || parallel::threads() < 2 {
        return false;
    }
    let blocks = T::shared_blocks_on(isa, p);
    if blocks >= 2 {
        // SAFETY: as for this function (`blocks` from `shared_blocks_on`).
        unsafe { run_shared(isa, p, blocks) };
        return true;
    }
    let (mr, nr) = T::tile_size(isa);
    let (mine, theirs) = if p.n >= p.m {
        let first = p.n.div_ceil(nr).div_ceil(2) * nr;
        let same = |cols| same_algorithm(p.m, cols, nr, 2);
        if first >= p.n || !same(first) || !same(p.n - first) {
            return false;
        }
        let theirs = Problem {
            n: p.n - first,
            b: MatRef {
                ptr: p.b.ptr.wrapping_offset(first as isize * p.b.cs),
                ..p.b
            },
            c: p.c.wrapping_offset(first as isize * p.csc),
            bias: if p.bias.is_null() {
                p.bias
            } else {
                p.bias.wrapping_add(first)
            },
            ..*p
        };
        (Problem { n: first, ..*p }, theirs)
    } else {
        let first = p.m.div_ceil(mr).div_ceil(2) * mr;
        let same = |rows| same_algorithm(rows, p.n, nr, mr + 1);
        if first >= p.m || !same(first) || !same(p.m - first) {
            return false;
        }
        let theirs = Problem {
            m: p.m - first,
            a: MatRef {
                ptr: p.a.ptr.wrapping_offset(first as isize * p.a.rs),
                ..p.a
            },
            c: p.c.wrapping_offset(first as isize * p.rsc),
            ..*p
        };
        (Problem { m: first, ..*p }, theirs)
    };
    /// A raw problem that may cross to the helper thread.
    struct Shared<T>(Problem<T>);
    // SAFETY: the two parts write disjoint blocks of `C` and only read `A` and `B` (which `C`
    // does not overlap), and `join` returns only after both are done, while `p`'s memory is
    // still valid.
    unsafe impl<T> Send for Shared<T> {}
    let theirs = Shared(theirs);
    // SAFETY: `Reserve` reads no memory; `isa` is supported.
    unsafe { T::run_on(isa, p, Path::Reserve) };
    parallel::join(
        move || {
            let theirs = theirs;
            // SAFETY: each part is a sub-block of `p`, valid as `p` is; `isa` is supported.
            unsafe { T::run_on(isa, &theirs.0, Path::Auto) }
        },
        // SAFETY: as above.
        || unsafe { T::run_on(isa, &mine, Path::Auto) },
    );
    true
}

/// Runs `p` on both threads, which claim its `blocks` blocks of `C` from either end
/// ([`Path::Shared`]): the same split as [`run_split`]'s at equal speeds, but a thread
/// slowed by the machine (or starting late, or finding its operands in the other core's
/// cache) leaves blocks to the other instead of holding it up at the join.
///
/// # Safety
/// As for [`run_split`], and `blocks` what [`Dispatch::shared_blocks_on`] returned for `p`.
unsafe fn run_shared<T: Dispatch>(isa: Isa, p: &Problem<T>, blocks: usize) {
    let claims = Claims::new(blocks);
    /// The product and its claims, crossing to the helper thread.
    struct Shared<'a, T>(Problem<T>, &'a Claims);
    // SAFETY: the threads write the disjoint blocks of `C` they claim (each block once) and
    // only read `A` and `B` (which `C` does not overlap); `join` returns only after both are
    // done, while `p`'s memory and `claims` are still valid.
    unsafe impl<T> Send for Shared<'_, T> {}
    let theirs = Shared(*p, &claims);
    // SAFETY: `Reserve` reads no memory; `isa` is supported.
    unsafe { T::run_on(isa, p, Path::Reserve) };
    let mine = Path::Shared {
        claims: &raw const claims,
        from_front: true,
    };
    parallel::join(
        move || {
            let theirs = theirs;
            let path = Path::Shared {
                claims: theirs.1,
                from_front: false,
            };
            // SAFETY: `p` and `isa` as the caller guarantees, `claims` valid until `join`
            // returns.
            unsafe { T::run_on(isa, &theirs.0, path) }
        },
        // SAFETY: as above.
        || unsafe { T::run_on(isa, p, mine) },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_gemm::Blocking;

    /// The textbook triple loop in f64 on explicitly transposed indices. Returns the product
    /// and, per element, the error scale `|alpha|·Σ_p |a_ip·b_pj| + |beta·c_ij|` that a
    /// correct floating-point GEMM stays within `O(k·eps)` of.
    #[allow(clippy::too_many_arguments)]
    fn reference(
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
    ) -> (Vec<f64>, Vec<f64>) {
        let mut out = vec![0.0; m * n];
        let mut scale = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                let (mut acc, mut abs) = (0.0, 0.0);
                for p in 0..k {
                    let av = if a_trans { a[p * m + i] } else { a[i * k + p] };
                    let bv = if b_trans { b[j * k + p] } else { b[p * n + j] };
                    acc += av * bv;
                    abs += (av * bv).abs();
                }
                // With beta = 0, C is not read: its NaNs must not reach the result.
                let old = if beta == 0.0 {
                    0.0
                } else {
                    beta * c[i * n + j]
                };
                out[i * n + j] = alpha * acc + old;
                scale[i * n + j] = alpha.abs() * abs + old.abs();
            }
        }
        (out, scale)
    }

    /// Deterministic, non-trivial test values (no two equal, mixed signs).
    fn values(len: usize, seed: f64) -> Vec<f64> {
        (0..len)
            .map(|i| ((i as f64 + seed) * 0.7371).sin() * 2.0)
            .collect()
    }

    /// One (alpha, beta) pair to test; `beta == 0` runs with C full of NaN.
    #[derive(Clone, Copy)]
    struct Scalars {
        alpha: f64,
        beta: f64,
    }

    const SCALARS: [Scalars; 4] = [
        Scalars {
            alpha: 1.0,
            beta: 0.0,
        },
        Scalars {
            alpha: 1.0,
            beta: 1.0,
        },
        Scalars {
            alpha: 0.5,
            beta: 0.0,
        },
        Scalars {
            alpha: 0.5,
            beta: -1.25,
        },
    ];

    /// Checks every transpose combination and every (alpha, beta) of [`SCALARS`] with
    /// instruction set `isa` and path `path` against [`reference`].
    fn check<F: Float + Dispatch>(isa: Isa, path: Path, m: usize, k: usize, n: usize) {
        let eps = if F::NAME == "f32" {
            f32::EPSILON as f64
        } else {
            f64::EPSILON
        };
        // Round the inputs to F first, so that the reference sees exactly what GEMM sees.
        let round = |v: Vec<f64>| -> (Vec<F>, Vec<f64>) {
            let f: Vec<F> = v.iter().map(|&x| F::from_f64(x)).collect();
            let back = f.iter().map(|x| x.to_f64()).collect();
            (f, back)
        };
        let (a, a64) = round(values(m * k, 1.0));
        let (b, b64) = round(values(k * n, 2.0));
        let (bias, bias64) = round(values(n, 4.0));
        // Miri interprets every instruction: one (alpha, beta) there, with and without bias.
        let scalars = if cfg!(miri) {
            &SCALARS[3..]
        } else {
            &SCALARS[..]
        };
        for (s, with_bias) in scalars.iter().flat_map(|s| [(s, false), (s, true)]) {
            let (c0, c64) = if s.beta == 0.0 {
                (vec![F::from_f64(f64::NAN); m * n], vec![f64::NAN; m * n])
            } else {
                round(values(m * n, 3.0))
            };
            let (alpha, beta) = (F::from_f64(s.alpha), F::from_f64(s.beta));
            for a_trans in [false, true] {
                for b_trans in [false, true] {
                    let (mut want, mut scale) =
                        reference(m, k, n, s.alpha, &a64, a_trans, &b64, b_trans, s.beta, &c64);
                    if with_bias {
                        for (idx, (w, sc)) in want.iter_mut().zip(&mut scale).enumerate() {
                            *w += bias64[idx % n.max(1)];
                            *sc += bias64[idx % n.max(1)].abs();
                        }
                    }
                    let mut c = c0.clone();
                    let mut p = row_major_problem(
                        (m, k, n),
                        alpha,
                        (&a, a_trans),
                        (&b, b_trans),
                        beta,
                        &mut c,
                    );
                    if with_bias {
                        p.bias = bias.as_ptr();
                    }
                    // SAFETY: `isa` comes from `Isa::available`; the strides describe the
                    // vectors above, exactly as in `gemm`.
                    unsafe { F::run_on(isa, &p, path) };
                    for (idx, ((got, want), scale)) in c.iter().zip(&want).zip(&scale).enumerate() {
                        let tol = 2.0 * (k as f64 + 4.0) * eps * scale + f64::MIN_POSITIVE;
                        let err = (got.to_f64() - want).abs();
                        assert!(
                            err <= tol,
                            "{} {isa:?} {path:?} m={m} k={k} n={n} a_trans={a_trans} \
                             b_trans={b_trans} alpha={} beta={} [{}][{}]: got {got}, want \
                             {want} (error {err:e} > {tol:e})",
                            F::NAME,
                            s.alpha,
                            s.beta,
                            idx / n,
                            idx % n,
                        );
                    }
                }
            }
        }
    }

    /// Shapes around every edge: empty-ish, vectors, odd sizes, and sizes that are not
    /// multiples of any tile or vector width.
    const SHAPES: &[(usize, usize, usize)] = &[
        (1, 1, 1),
        (1, 7, 1),
        (1, 1, 9),
        (1, 37, 133),
        (1, 784, 128),
        (1, 64, 10),
        (9, 1, 1),
        (33, 17, 1),
        (200, 3, 1),
        (5, 1, 9),
        (2, 3, 4),
        (7, 13, 5),
        (16, 8, 33),
        (17, 64, 10),
        (64, 64, 64),
        (65, 129, 31),
        (40, 70, 150),
        // A last panel of 4 columns, with `A` read in place or packed.
        (16, 150, 100),
        (150, 16, 100),
        // Deep enough for the tiles of dot products, with edge tiles in both directions and a
        // tail of `k` shorter than a vector (and, with more rows than columns, the rows of
        // `A` outside).
        (6, 784, 25),
        (13, 290, 5),
        (2, 261, 2),
        // Tiny, `C` one vector wide for some instruction set (f64 4 or 8 columns, f32 8 or
        // 16), a row of `C` at a time on the automatic path (`driver::gemv_first`).
        (8, 8, 8),
        (5, 9, 4),
        (12, 16, 16),
        (16, 8, 8),
    ];

    /// Blocks far smaller than the defaults, so that small matrices cross every block
    /// boundary (several `jc`, `pc` and `ic` blocks, with ragged last blocks).
    const TINY: Blocking = Blocking {
        mc: 10,
        kc: 7,
        nc: 40,
    };

    fn all_paths<F: Float + Dispatch>(shapes: &[(usize, usize, usize)]) {
        for isa in Isa::available() {
            for &(m, k, n) in shapes {
                for path in [Path::Auto, Path::Gemv, Path::Packed(TINY), Path::BInPlace] {
                    check::<F>(isa, path, m, k, n);
                }
            }
        }
    }

    /// A single rank-`kc` update of a `C` whose rows are 4 KiB apart: the AVX-512 f32
    /// kernels walk its tiles along the rows (see `driver::macro_kernel`), the others down
    /// the columns. Edge tiles in both directions, several blocks of rows and columns.
    #[test]
    fn c_rows_a_page_apart() {
        let blocking = Blocking {
            mc: 24,
            kc: 64,
            nc: 96,
        };
        for isa in Isa::available() {
            for (m, k, n) in [(19, 9, 1024), (8, 64, 1024)] {
                for path in [Path::Auto, Path::Packed(blocking)] {
                    check::<f32>(isa, path, m, k, n);
                }
            }
            check::<f64>(isa, Path::Packed(blocking), 19, 9, 512);
        }
    }

    /// The `Problem` of `gemm`'s public contract: row-major `A` (`m × k`, or `k × m` when
    /// transposed), `B` likewise, and row-major `C`.
    fn row_major_problem<T: Dispatch>(
        (m, k, n): (usize, usize, usize),
        alpha: T,
        (a, a_trans): (&[T], bool),
        (b, b_trans): (&[T], bool),
        beta: T,
        c: &mut [T],
    ) -> Problem<T> {
        let ((rsa, csa), (rsb, csb)) = (strides(m, k, a_trans), strides(k, n, b_trans));
        Problem {
            m,
            k,
            n,
            alpha,
            a: MatRef {
                ptr: a.as_ptr(),
                rs: rsa,
                cs: csa,
            },
            b: MatRef {
                ptr: b.as_ptr(),
                rs: rsb,
                cs: csb,
            },
            beta,
            c: c.as_mut_ptr(),
            rsc: stride(n),
            csc: 1,
            bias: std::ptr::null(),
            b_packed: std::ptr::null(),
            b_rows: std::ptr::null(),
            b_cols: std::ptr::null(),
        }
    }

    /// `gemm_bias` is the bias copied into every row of `C` then `gemm` with `beta = 1`, bit
    /// for bit: on the packed paths (also split between two threads, along `n` and along
    /// `m`), the matrix-vector paths (a single output column among them) and an empty
    /// product.
    #[test]
    fn gemm_bias_is_a_bias_copy_then_gemm_bit_for_bit() {
        let shapes = [
            (7, 5, 9),
            (64, 300, 70),
            (300, 128, 200),
            (700, 96, 130),
            (1, 40, 33),
            (20, 40, 1),
            // One output over a batch (W1's layer): the bias fills the column of `C`.
            (1000, 1, 1),
            (9, 0, 1),
            (5, 300, 20),
            (6, 0, 4),
            // Tiny products taken a row at a time (see `driver::gemv_first`).
            (8, 8, 8),
            (12, 16, 16),
        ];
        for (m, k, n) in shapes {
            for b_trans in [false, true] {
                let a: Vec<f32> = values(m * k, 1.0).iter().map(|&v| v as f32).collect();
                let b: Vec<f32> = values(k * n, 2.0).iter().map(|&v| v as f32).collect();
                let bias: Vec<f32> = values(n, 3.0).iter().map(|&v| v as f32).collect();
                let mut want: Vec<f32> = bias.iter().copied().cycle().take(m * n).collect();
                gemm(m, k, n, 1.0, &a, false, &b, b_trans, 1.0, &mut want);
                let mut got = vec![f32::NAN; m * n];
                gemm_bias(m, k, n, &a, false, &b, b_trans, &bias, &mut got);
                let same = got
                    .iter()
                    .zip(&want)
                    .all(|(g, w)| g.to_bits() == w.to_bits());
                assert!(same, "{m}×{k}×{n} (b_trans {b_trans})");
            }
        }
    }

    /// A product shared by two threads ([`Path::Shared`], here two plain threads racing for
    /// the blocks, whatever `KILN_THREADS` says) is bit-identical to the same product on one
    /// thread, on every instruction set, with and without a bias, cut along `m` or along
    /// `n`, over one or several blocks of depth and of columns; and a thread that finds
    /// every block claimed writes nothing.
    #[test]
    fn shared_products_are_bit_identical_to_one_thread() {
        fn one<T: Float + Dispatch>(isa: Isa, (m, k, n): (usize, usize, usize), with_bias: bool) {
            let a: Vec<T> = values(m * k, 1.0).iter().map(|&x| T::from_f64(x)).collect();
            let b: Vec<T> = values(k * n, 2.0).iter().map(|&x| T::from_f64(x)).collect();
            let c0: Vec<T> = values(m * n, 3.0).iter().map(|&x| T::from_f64(x)).collect();
            let bias: Vec<T> = values(n, 4.0).iter().map(|&x| T::from_f64(x)).collect();
            for (a_trans, b_trans) in [(false, true), (true, false), (false, false)] {
                let (alpha, beta) = (T::from_f64(0.75), T::from_f64(-1.25));
                let problem = |c: &mut [T]| Problem {
                    bias: if with_bias {
                        bias.as_ptr()
                    } else {
                        std::ptr::null()
                    },
                    ..row_major_problem((m, k, n), alpha, (&a, a_trans), (&b, b_trans), beta, c)
                };
                let mut single = c0.clone();
                // SAFETY: the problem describes the vectors above; `isa` is available.
                unsafe { T::run_on(isa, &problem(&mut single), Path::Auto) };
                let mut shared = c0.clone();
                let p = problem(&mut shared);
                let blocks = T::shared_blocks_on(isa, &p);
                assert!(blocks >= 2, "{m}×{k}×{n} {isa:?}: not shared");
                let claims = Claims::new(blocks);
                /// The problem, crossing to the scoped threads.
                struct Sendable<T>(Problem<T>);
                // SAFETY: the threads write the disjoint blocks they claim.
                unsafe impl<T> Send for Sendable<T> {}
                unsafe impl<T> Sync for Sendable<T> {}
                let sendable = Sendable(p);
                std::thread::scope(|scope| {
                    for from_front in [false, true] {
                        let (sendable, claims) = (&sendable, &claims);
                        scope.spawn(move || {
                            let path = Path::Shared { claims, from_front };
                            // SAFETY: as above; `claims` outlives the scope.
                            unsafe { T::run_on(isa, &sendable.0, path) }
                        });
                    }
                });
                // Every block is claimed: another share computes nothing.
                let path = Path::Shared {
                    claims: &claims,
                    from_front: true,
                };
                let mut untouched = vec![T::from_f64(7.0); m * n];
                let q = problem(&mut untouched);
                // SAFETY: as above.
                unsafe { T::run_on(isa, &q, path) };
                assert!(untouched.iter().all(|&x| x == T::from_f64(7.0)));
                let same = shared
                    .iter()
                    .zip(&single)
                    .all(|(x, y)| x.to_f64().to_bits() == y.to_f64().to_bits());
                assert!(
                    same,
                    "{} {isa:?} {m}×{k}×{n} bias {with_bias} a_trans {a_trans} b_trans {b_trans}",
                    T::NAME
                );
            }
        }
        for isa in Isa::available() {
            for shape in [
                (768, 128, 384),
                (128, 768, 512),
                (620, 270, 530),
                (200, 270, 1100),
                (70, 40, 900),
                (900, 600, 20),
            ] {
                for with_bias in [false, true] {
                    one::<f32>(isa, shape, with_bias);
                    one::<f64>(isa, shape, with_bias);
                }
            }
        }
    }

    #[test]
    fn every_path_and_isa_matches_the_reference_f32() {
        all_paths::<f32>(SHAPES);
    }

    #[test]
    fn every_path_and_isa_matches_the_reference_f64() {
        all_paths::<f64>(SHAPES);
    }

    /// Every path, instruction set, transpose, `alpha`/`beta` and bias on shapes small
    /// enough for Miri, which runs this test to check the unsafe driver, packing and
    /// microkernels for reads and writes outside their buffers (see "Checks" in the README).
    /// With [`TINY`] blocks they still cross block boundaries, leave edge tiles in both
    /// directions, read `A` or `B` in place (`7 × 13 × 5`), keep a transposed `A` across two
    /// blocks of `B`'s columns (`10 × 3 × 45`) and take the dot-product tiles (`2 × 261 × 2`).
    #[test]
    fn small_shapes_on_every_path() {
        const SMALL: &[(usize, usize, usize)] = &[
            (1, 1, 1),
            (2, 3, 4),
            (7, 13, 5),
            (9, 1, 41),
            (10, 3, 45),
            (2, 261, 2),
        ];
        all_paths::<f32>(SMALL);
        all_paths::<f64>(SMALL);
    }

    /// The default blocking with `m > MC` and `k > KC` (several `ic` and `pc` blocks, with
    /// beta applied on the first `pc` block only), and with `n > NC`.
    #[test]
    fn sizes_beyond_the_default_blocks() {
        for isa in Isa::available() {
            check::<f32>(isa, Path::Auto, 300, 520, 70);
            check::<f64>(isa, Path::Auto, 300, 520, 70);
            check::<f32>(isa, Path::Auto, 9, 3, 4100);
            check::<f64>(isa, Path::Auto, 9, 3, 4100);
        }
    }

    /// `gemm` itself (the public entry, through `Float::gemm_raw` and the detected ISA).
    #[test]
    fn public_entry_matches_the_reference() {
        for &(m, k, n) in &[
            (1, 1, 1),
            (1, 784, 128),
            (7, 13, 5),
            (65, 129, 31),
            (64, 784, 128),
        ] {
            for a_trans in [false, true] {
                for b_trans in [false, true] {
                    let (a, b, c0) = (values(m * k, 1.0), values(k * n, 2.0), values(m * n, 3.0));
                    let (want, scale) =
                        reference(m, k, n, 0.75, &a, a_trans, &b, b_trans, -1.25, &c0);
                    let mut c = c0.clone();
                    gemm(m, k, n, 0.75, &a, a_trans, &b, b_trans, -1.25, &mut c);
                    for ((got, want), scale) in c.iter().zip(&want).zip(&scale) {
                        assert!(
                            (got - want).abs() <= 2.0 * (k as f64 + 4.0) * f64::EPSILON * scale
                        );
                    }
                }
            }
        }
    }

    /// General strides through `Float::gemm_raw`: padded leading dimensions, a column-major
    /// C, and negative strides (a matrix read bottom-up).
    #[test]
    fn general_strides() {
        let (m, k, n) = (13, 21, 11);
        let a_full = values(m * 2 * k, 1.0); // A: m × k in every other column of m × 2k
        let b_full = values(k * n, 2.0);
        for isa_path in [Path::Auto, Path::Gemv, Path::Packed(TINY), Path::BInPlace] {
            for isa in Isa::available() {
                // B read bottom-up: B'[p][j] = b_full[(k−1−p)·n + j].
                let b_last = (k - 1) * n;
                let mut c = vec![f64::NAN; m * n]; // column-major C
                let p = Problem {
                    m,
                    k,
                    n,
                    alpha: 1.0,
                    a: MatRef {
                        ptr: a_full.as_ptr(),
                        rs: 2 * k as isize,
                        cs: 2,
                    },
                    b: MatRef {
                        ptr: b_full[b_last..].as_ptr(),
                        rs: -(n as isize),
                        cs: 1,
                    },
                    beta: 0.0,
                    c: c.as_mut_ptr(),
                    rsc: 1,
                    csc: m as isize,
                    bias: std::ptr::null(),
                    b_packed: std::ptr::null(),
                    b_rows: std::ptr::null(),
                    b_cols: std::ptr::null(),
                };
                // SAFETY: every (i, p) of A is at 2ik + 2p < 2mk, every (p, j) of B at
                // b_last − pn + j inside b_full, every (i, j) of C at i + jm < mn.
                unsafe { f64::run_on(isa, &p, isa_path) };
                for i in 0..m {
                    for j in 0..n {
                        let want: f64 = (0..k)
                            .map(|q| a_full[i * 2 * k + 2 * q] * b_full[(k - 1 - q) * n + j])
                            .sum();
                        let got = c[i + j * m];
                        assert!(
                            (got - want).abs() < 1e-12 * (1.0 + want.abs()),
                            "{isa:?} {isa_path:?} [{i}][{j}]: got {got}, want {want}"
                        );
                    }
                }
            }
        }
    }

    /// A threaded call (above the work threshold, split along `n` or along `m`, ragged last
    /// panels) is bit-identical to the same problem run on one thread.
    #[test]
    fn threaded_split_is_bit_identical() {
        fn one<F: Float + Dispatch>(m: usize, k: usize, n: usize) {
            assert!(m * k * n >= THREADED_MIN_WORK);
            let a: Vec<F> = values(m * k, 1.0).iter().map(|&x| F::from_f64(x)).collect();
            let b: Vec<F> = values(k * n, 2.0).iter().map(|&x| F::from_f64(x)).collect();
            let c0: Vec<F> = values(m * n, 3.0).iter().map(|&x| F::from_f64(x)).collect();
            for a_trans in [false, true] {
                for b_trans in [false, true] {
                    let (alpha, beta) = (F::from_f64(0.75), F::from_f64(-1.25));
                    let mut threaded = c0.clone();
                    gemm(
                        m,
                        k,
                        n,
                        alpha,
                        &a,
                        a_trans,
                        &b,
                        b_trans,
                        beta,
                        &mut threaded,
                    );
                    let mut single = c0.clone();
                    let p = row_major_problem(
                        (m, k, n),
                        alpha,
                        (&a, a_trans),
                        (&b, b_trans),
                        beta,
                        &mut single,
                    );
                    // SAFETY: as in `check`.
                    unsafe { F::run_on(Isa::selected(), &p, Path::Auto) };
                    assert!(
                        threaded
                            .iter()
                            .zip(&single)
                            .all(|(x, y)| x.to_f64().to_bits() == y.to_f64().to_bits()),
                        "{} m={m} k={k} n={n} a_trans={a_trans} b_trans={b_trans}",
                        F::NAME
                    );
                }
            }
        }
        for (m, k, n) in [
            (67, 600, 221),
            (203, 590, 75),
            (9, 1040, 1001),
            // Split along `m` into parts of 16 and 2 rows (8-row tiles) or 12 and 6 (6-row
            // tiles), which would take the dot products where the whole packs: not split.
            (18, 15000, 16),
            // Split along `n` into 32 and 16 columns: a part as narrow as the AVX2 tile, which
            // an AVX-512 CPU may run with the AVX2 kernels, deep enough (`k` > 256) for their
            // depth blocking to differ from the AVX-512 kernels'.
            (48, 2000, 48),
            // Split along `m` into 16 and 14 rows of a 16-column `C`: the AVX2 kernels take
            // the whole and the first part, but not a part of fewer than two AVX-512 tiles
            // of rows.
            (30, 9000, 16),
            // Last panels of 4 and 16 columns, split along `m` and along `n`.
            (200, 256, 100),
            (48, 256, 400),
            // Shared along `m` and along `n` over several depth blocks and blocks of
            // columns (`kc` 256, `nc` 512 or more), ragged at every edge.
            (1100, 300, 600),
            (300, 300, 1100),
            // W6's products: shared along `m` in eight blocks, and along `n`.
            (768, 128, 384),
            (128, 768, 512),
        ] {
            one::<f32>(m, k, n);
            one::<f64>(m, k, n);
        }
    }

    /// alpha = 0 does not read A or B (BLAS semantics), so NaNs there do not matter.
    #[test]
    fn zero_alpha_scales_c_only() {
        let a = [f64::NAN; 6];
        let mut c = [1.0, 2.0, 3.0, 4.0];
        gemm(2, 3, 2, 0.0, &a, false, &a, true, 2.0, &mut c);
        assert_eq!(c, [2.0, 4.0, 6.0, 8.0]);
        let mut c = [f32::NAN; 4];
        gemm(
            2,
            3,
            2,
            0.0,
            &[f32::NAN; 6],
            false,
            &[1.0; 6],
            false,
            0.0,
            &mut c,
        );
        assert_eq!(c, [0.0; 4]);
    }

    #[test]
    fn isa_selection_is_stable_and_supported() {
        let isa = Isa::selected();
        assert_eq!(isa, Isa::selected());
        assert!(isa.supported());
        if std::env::var_os("KILN_GEMM_ISA").is_none() {
            assert_eq!(
                Some(&isa),
                Isa::available().first(),
                "not the best available"
            );
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

    /// `C = alpha · A · B + beta · C` with a row-major `m × k` `A` and `m × n` `C`, `B` as
    /// given, no bias, and `B` placed by its strides: each test sets the placement it checks.
    #[allow(clippy::too_many_arguments)]
    fn problem_over<T: Float>(
        m: usize,
        k: usize,
        n: usize,
        alpha: T,
        a: &[T],
        b: MatRef<T>,
        beta: T,
        c: &mut [T],
    ) -> Problem<T> {
        Problem {
            m,
            k,
            n,
            alpha,
            a: MatRef {
                ptr: a.as_ptr(),
                rs: k as isize,
                cs: 1,
            },
            b,
            beta,
            c: c.as_mut_ptr(),
            rsc: n as isize,
            csc: 1,
            bias: std::ptr::null(),
            b_packed: std::ptr::null(),
            b_rows: std::ptr::null(),
            b_cols: std::ptr::null(),
        }
    }

    /// Whether two results are the same bits, element for element.
    fn same_bits<T: Float>(want: &[T], got: &[T]) -> bool {
        want.len() == got.len()
            && want
                .iter()
                .zip(got)
                .all(|(w, g)| w.to_f64().to_bits() == g.to_f64().to_bits())
    }

    /// A prepacked `B` gives the same bits as packing it per call, on every instruction set,
    /// across several `kc` and `nc` blocks, with `B` stored either way and `alpha`, `beta`
    /// applied, and no kernel set packs more than `packed_b_len` promises.
    fn prepacked_b_matches_packing_per_call<T: Dispatch + Float>() {
        // k crosses the deepest kc (512), n the AVX-512 nc (512) and several panels.
        let (m, k, n) = (37, 600, 530);
        let a: Vec<T> = values(m * k, 1.0).into_iter().map(T::from_f64).collect();
        let b: Vec<T> = values(k * n, 2.0).into_iter().map(T::from_f64).collect();
        let c0: Vec<T> = values(m * n, 3.0).into_iter().map(T::from_f64).collect();
        let (alpha, beta) = (T::from_f64(0.5), T::from_f64(-1.25));
        for isa in Isa::available() {
            assert!(T::packed_b_len(isa, k, n) <= packed_b_len(k, n), "{isa:?}");
            for b_trans in [false, true] {
                let (rsb, csb) = strides(k, n, b_trans);
                let b_ref = MatRef {
                    ptr: b.as_ptr(),
                    rs: rsb,
                    cs: csb,
                };
                let mut panels = vec![<T as Float>::ZERO; packed_b_len(k, n)];
                // SAFETY: `b` holds `k × n` with these strides, `panels` enough elements.
                unsafe { T::pack_b_on(isa, k, n, b_ref, panels.as_mut_ptr()) };
                let problem = |c: &mut Vec<T>, b_packed: *const T| Problem {
                    b_packed,
                    ..problem_over(m, k, n, alpha, &a, b_ref, beta, c)
                };
                let (mut want, mut got) = (c0.clone(), c0.clone());
                // SAFETY: every matrix is inside its vector; `isa` is available.
                unsafe {
                    T::run_on(isa, &problem(&mut want, std::ptr::null()), Path::Auto);
                    T::run_on(isa, &problem(&mut got, panels.as_ptr()), Path::Auto);
                }
                assert!(same_bits(&want, &got), "{isa:?}, b_trans {b_trans}");
            }
        }
    }

    /// `A` read in place by the microkernel (a row-major `A`, with the f32 kernels of AVX-512
    /// and AVX2, on the path that reads `B` in place and on the packed path when `B` has few
    /// panels) gives the bits of the same product with `A` packed: on every instruction set,
    /// across blocks of `k` and of rows,
    /// with `A`'s rows further apart than `k`, several blocks of rows with a last tile short
    /// of `MR` rows, a last panel of `B` short of `NR` columns, `beta` and a bias.
    fn a_in_place_matches_packed_a<T: Dispatch + Float>() {
        for (m, k, n) in [
            (300, 40, 70),
            (13, 24, 33),
            (64, 64, 32),
            (7, 100, 16),
            (37, 700, 10),
        ] {
            let lda = k + 3;
            let a: Vec<T> = values(m * lda, 1.0).into_iter().map(T::from_f64).collect();
            // The same `A`, stored transposed: its rows are not contiguous, so it is packed.
            let mut a_t = vec![<T as Float>::ZERO; k * m];
            for i in 0..m {
                for p in 0..k {
                    a_t[p * m + i] = a[i * lda + p];
                }
            }
            let b: Vec<T> = values(k * n, 2.0).into_iter().map(T::from_f64).collect();
            let bias: Vec<T> = values(n, 4.0).into_iter().map(T::from_f64).collect();
            let c0: Vec<T> = values(m * n, 3.0).into_iter().map(T::from_f64).collect();
            let (alpha, beta) = (T::from_f64(0.5), T::from_f64(-1.25));
            let b_ref = MatRef {
                ptr: b.as_ptr(),
                rs: n as isize,
                cs: 1,
            };
            let problem = |c: &mut Vec<T>, in_place: bool| {
                let a = if in_place {
                    MatRef {
                        ptr: a.as_ptr(),
                        rs: lda as isize,
                        cs: 1,
                    }
                } else {
                    MatRef {
                        ptr: a_t.as_ptr(),
                        rs: 1,
                        cs: m as isize,
                    }
                };
                Problem {
                    a,
                    bias: bias.as_ptr(),
                    ..problem_over(m, k, n, alpha, &[], b_ref, beta, c)
                }
            };
            for isa in Isa::available() {
                for path in [Path::Auto, Path::BInPlace, Path::Packed(TINY)] {
                    let (mut want, mut got) = (c0.clone(), c0.clone());
                    // SAFETY: every matrix is inside its vector; `isa` is available.
                    unsafe {
                        T::run_on(isa, &problem(&mut want, false), path);
                        T::run_on(isa, &problem(&mut got, true), path);
                    }
                    assert!(same_bits(&want, &got), "{isa:?}, {path:?}, {m} × {k} × {n}");
                }
            }
        }
    }

    /// Rows of `B` through offsets ([`gemm_offsets`], `Problem::b_rows`) give the bits of the
    /// same product over the rows gathered into a matrix: on every ISA, across `kc` blocks,
    /// with edge tiles in both dimensions, and through the two-thread split.
    fn rows_by_offset_match_gathered_rows<T: Dispatch + Float>() {
        let (m, k, n) = (37, 600, 530);
        // Rows scattered through one buffer, overlapping, in no particular order.
        let offsets: Vec<usize> = (0..k).map(|p| (p * 389) % 1201 + (p % 7) * 3).collect();
        let len = offsets.iter().max().map_or(0, |o| o + n + ROWS_SLACK);
        let buffer: Vec<T> = values(len, 4.0).into_iter().map(T::from_f64).collect();
        let gathered: Vec<T> = offsets
            .iter()
            .flat_map(|&o| buffer[o..o + n].iter().copied())
            .collect();
        let a: Vec<T> = values(m * k, 1.0).into_iter().map(T::from_f64).collect();
        let c0: Vec<T> = values(m * n, 3.0).into_iter().map(T::from_f64).collect();
        for (alpha, beta) in [(1.0, 0.0), (0.5, -1.25)] {
            let (alpha, beta) = (T::from_f64(alpha), T::from_f64(beta));
            for isa in Isa::available() {
                let problem = |c: &mut Vec<T>, by_rows: bool| {
                    let gathered = MatRef {
                        ptr: gathered.as_ptr(),
                        rs: n as isize,
                        cs: 1,
                    };
                    let plain = problem_over(m, k, n, alpha, &a, gathered, beta, c);
                    if !by_rows {
                        return plain;
                    }
                    let b = MatRef {
                        ptr: buffer.as_ptr(),
                        rs: 0,
                        cs: 1,
                    };
                    let b_rows = offsets.as_ptr();
                    Problem { b, b_rows, ..plain }
                };
                let (mut want, mut got) = (c0.clone(), c0.clone());
                // SAFETY: every matrix is inside its vector, each row of `buffer` readable
                // for `n + ROWS_SLACK`; `isa` is available.
                unsafe {
                    T::run_on(isa, &problem(&mut want, false), Path::Auto);
                    T::run_on(isa, &problem(&mut got, true), Path::Auto);
                }
                assert!(same_bits(&want, &got), "{isa:?}");
            }
        }
        // The public entry, which splits a product this large between two threads.
        let (mut want, mut got) = (c0.clone(), c0.clone());
        // SAFETY: as above.
        unsafe {
            gemm_strided(
                m,
                k,
                n,
                <T as Float>::ONE,
                a.as_ptr(),
                k as isize,
                1,
                gathered.as_ptr(),
                n as isize,
                1,
                T::from_f64(2.0),
                want.as_mut_ptr(),
                n as isize,
                1,
                std::ptr::null(),
                std::ptr::null(),
            );
            gemm_offsets(
                m,
                k,
                n,
                a.as_ptr(),
                k as isize,
                1,
                buffer.as_ptr(),
                offsets.as_ptr(),
                OffsetLines::Rows,
                T::from_f64(2.0),
                got.as_mut_ptr(),
                n as isize,
            );
        }
        assert!(same_bits(&want, &got), "gemm_offsets");
    }

    /// Columns of `B` through offsets ([`gemm_offsets`], `Problem::b_cols`) give the bits of
    /// the same product over the columns gathered into a column-major matrix, on every ISA,
    /// across `nc` blocks, with edge tiles in both dimensions: packed from their offsets
    /// (any path but `Auto`, across `kc` blocks, and `Auto` on a `k` too shallow for dot
    /// products), or,
    /// on a deep `k`, as tiles of dot products blocked along `k` (`dot_cols`), which give
    /// the bits of the unblocked tiles of dot products over the gathered columns
    /// (`Path::Gemv`), across several blocks and with a tail of `k` shorter than a vector.
    fn cols_by_offset_match_gathered_cols<T: Dispatch + Float>() {
        // 200: shallower than 64 vectors of every kernel set (packed from the offsets);
        // 1,061: deeper (dot products), and across the packed path's `kc` blocks.
        for (k, dots) in [(200, false), (1061, true)] {
            cols_by_offset_match_gathered_cols_at::<T>(k, dots);
        }
    }

    fn cols_by_offset_match_gathered_cols_at<T: Dispatch + Float>(k: usize, dots: bool) {
        let (m, n) = (37, 530);
        let offsets: Vec<usize> = (0..n).map(|j| (j * 389) % 1201 + (j % 7) * 3).collect();
        let len = offsets.iter().max().map_or(0, |o| o + k);
        let buffer: Vec<T> = values(len, 4.0).into_iter().map(T::from_f64).collect();
        // Column-major: column j is `k` contiguous elements.
        let gathered: Vec<T> = offsets
            .iter()
            .flat_map(|&o| buffer[o..o + k].iter().copied())
            .collect();
        let a: Vec<T> = values(m * k, 1.0).into_iter().map(T::from_f64).collect();
        let c0: Vec<T> = values(m * n, 3.0).into_iter().map(T::from_f64).collect();
        let (alpha, beta) = (T::from_f64(0.5), T::from_f64(-1.25));
        for isa in Isa::available() {
            // The baseline kernels on x86 have no tiles of dot products: both sides pack.
            let lean =
                isa == Isa::Portable && cfg!(any(target_arch = "x86", target_arch = "x86_64"));
            let problem = |c: &mut Vec<T>, by_cols: bool| {
                // Column-major.
                let gathered = MatRef {
                    ptr: gathered.as_ptr(),
                    rs: 1,
                    cs: k as isize,
                };
                let plain = problem_over(m, k, n, alpha, &a, gathered, beta, c);
                if !by_cols {
                    return plain;
                }
                let b = MatRef {
                    ptr: buffer.as_ptr(),
                    rs: 1,
                    cs: 0,
                };
                let b_cols = offsets.as_ptr();
                Problem { b, b_cols, ..plain }
            };
            let (mut want, mut got, mut packed) = (c0.clone(), c0.clone(), c0.clone());
            let want_path = if dots && !lean {
                Path::Gemv
            } else {
                Path::Auto
            };
            // SAFETY: every matrix is inside its vector, each column of `buffer` readable
            // for `k`; `isa` is available.
            unsafe {
                T::run_on(isa, &problem(&mut want, false), want_path);
                T::run_on(isa, &problem(&mut got, true), Path::Auto);
                T::run_on(isa, &problem(&mut packed, true), Path::BInPlace);
            }
            assert!(same_bits(&want, &got), "{isa:?} k = {k}");
            // The packed path from the offsets, on every `k`.
            let mut gathered_packed = c0.clone();
            // SAFETY: as above.
            unsafe { T::run_on(isa, &problem(&mut gathered_packed, false), Path::BInPlace) };
            assert!(
                same_bits(&gathered_packed, &packed),
                "{isa:?} k = {k}, packed"
            );
            // And both are the product.
            for (i, (g, c)) in got.iter().zip(&c0).enumerate() {
                let (row, col) = (i / n, i % n);
                let dot: f64 = (0..k)
                    .map(|q| a[row * k + q].to_f64() * gathered[col * k + q].to_f64())
                    .sum();
                let want = 0.5 * dot - 1.25 * c.to_f64();
                let tol = if std::mem::size_of::<T>() == 4 {
                    1e-4
                } else {
                    1e-12
                };
                assert!(
                    (g.to_f64() - want).abs() <= tol * (1.0 + want.abs()),
                    "{isa:?} k = {k} [{row}][{col}]: {} against {want}",
                    g.to_f64()
                );
            }
        }
    }

    /// A product narrower than a tile over a very deep `k` with both operands contiguous
    /// along it (a 1 × 1 convolution's weight gradient `dy·xᵀ`, 11 × 4,100 × 16) runs as
    /// tiles of dot products and is the product, on every ISA.
    #[test]
    fn narrow_deep_products_are_the_product() {
        let (m, k, n) = (11, 4100, 16);
        let a: Vec<f32> = values(m * k, 1.0).iter().map(|&x| x as f32).collect();
        let bt: Vec<f32> = values(n * k, 2.0).iter().map(|&x| x as f32).collect();
        for isa in Isa::available() {
            let mut c = vec![0.0f32; m * n];
            let b = MatRef {
                ptr: bt.as_ptr(),
                rs: 1,
                cs: k as isize,
            };
            let p = problem_over(m, k, n, 1.0, &a, b, 0.0, &mut c);
            // SAFETY: every matrix is inside its vector; `isa` is available.
            unsafe { f32::run_on(isa, &p, Path::Auto) };
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k)
                        .map(|q| f64::from(a[i * k + q]) * f64::from(bt[j * k + q]))
                        .sum();
                    let got = f64::from(c[i * n + j]);
                    assert!(
                        (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                        "{isa:?} [{i}][{j}]: {got} against {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn cols_by_offset_match_gathered_cols_f32() {
        cols_by_offset_match_gathered_cols::<f32>();
    }

    #[test]
    fn cols_by_offset_match_gathered_cols_f64() {
        cols_by_offset_match_gathered_cols::<f64>();
    }

    #[test]
    fn rows_by_offset_match_gathered_rows_f32() {
        rows_by_offset_match_gathered_rows::<f32>();
    }

    #[test]
    fn rows_by_offset_match_gathered_rows_f64() {
        rows_by_offset_match_gathered_rows::<f64>();
    }

    #[test]
    fn a_in_place_matches_packed_a_f32() {
        a_in_place_matches_packed_a::<f32>();
    }

    #[test]
    fn prepacked_b_matches_packing_per_call_f32() {
        prepacked_b_matches_packing_per_call::<f32>();
    }

    #[test]
    fn prepacked_b_matches_packing_per_call_f64() {
        prepacked_b_matches_packing_per_call::<f64>();
    }
}
