//! Thread-local packing buffers that grow once and are then reused.
//!
//! kiln promises that a warm training step allocates nothing, and a GEMM needs scratch space
//! for its packed panels. Each thread keeps two buffers (for `A` and for `B`), grown to the
//! largest size asked for so far and never shrunk: after the first call of a given size (or
//! any larger one), every later call reuses them without touching the allocator. Their size
//! is bounded by the blocking parameters (`MC × KC` and `KC × NC` elements), not by the
//! problem size, so the footprint stays a few MiB per thread at most.

#![deny(unsafe_op_in_unsafe_fn)]

use std::cell::RefCell;

/// One cache line: the buffers' element type, so that every panel starts 64-byte aligned
/// (aligned vector loads, no panel straddling more cache lines than it must).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

const LINE: usize = std::mem::size_of::<Line>();

/// The two packing buffers of one thread.
struct Buffers {
    a: Vec<Line>,
    b: Vec<Line>,
}

thread_local! {
    // `const` initialisation: no lazy-init allocation, and no allocation until first use.
    static BUFFERS: RefCell<Buffers> = const {
        RefCell::new(Buffers { a: Vec::new(), b: Vec::new() })
    };
}

/// Grows `buf` (once) to hold at least `elems` elements of `T` and returns its start.
fn reserve<T>(buf: &mut Vec<Line>, elems: usize) -> *mut T {
    let lines = (elems * std::mem::size_of::<T>()).div_ceil(LINE);
    if buf.len() < lines {
        // Exactly what is needed (no doubling): the sizes asked for are bounded by the
        // blocking parameters, so the first call of a shape usually settles the size.
        buf.reserve_exact(lines - buf.len());
        buf.resize(lines, Line([0; 64]));
    }
    buf.as_mut_ptr().cast()
}

/// Calls `f` with two scratch buffers of at least `a_elems` and `b_elems` elements of `T`,
/// 64-byte aligned and not overlapping each other.
///
/// The buffers are this thread's reusable ones. Should they be unavailable (a re-entrant call
/// from inside `f`, or a call during thread teardown after the thread-local is destroyed),
/// fresh temporary buffers are used instead, so this never fails.
pub(super) fn with_buffers<T, R>(
    a_elems: usize,
    b_elems: usize,
    f: impl FnOnce(*mut T, *mut T) -> R,
) -> R {
    let mut f = Some(f);
    let reused = BUFFERS.try_with(|cell| {
        let mut bufs = cell.try_borrow_mut().ok()?;
        let bufs = &mut *bufs;
        let a = reserve::<T>(&mut bufs.a, a_elems);
        let b = reserve::<T>(&mut bufs.b, b_elems);
        // `f` is taken only here, so the fallback below runs only if this did not.
        Some((f.take()?)(a, b))
    });
    if let Ok(Some(r)) = reused {
        return r;
    }
    // The closure did not run (it is taken only once the buffers are borrowed).
    let f = f.expect("the packing closure runs at most once");
    let (mut a, mut b) = (Vec::new(), Vec::new());
    f(reserve::<T>(&mut a, a_elems), reserve::<T>(&mut b, b_elems))
}
