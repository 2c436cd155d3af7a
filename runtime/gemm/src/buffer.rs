//! Thread-local packing buffers that grow once and are then reused.
//!
//! kiln promises that a warm training step allocates nothing, and a GEMM needs scratch space
//! for its packed panels. Each thread keeps two buffers (for `A` and for `B`), grown to the
//! largest size asked for so far and never shrunk: after the first call of a given size (or
//! any larger one), every later call reuses them without touching the allocator. Their size
//! is bounded by the blocking parameters (`MC × KC` and `KC × NC` elements) and by the most
//! of `A` the driver keeps packed across blocks of `B` (`KEPT_A_MAX`, 4 MiB of f32), not by
//! the problem size, so the footprint stays a few MiB per thread at most (a product two
//! threads share keeps all of `A` or all of `B` packed, within the same `KEPT_A_MAX`).
//!
//! A call moves the buffers out of the thread-local for its duration ([`Scratch`]) and puts
//! them back when done, rather than running the GEMM inside a `LocalKey::with` closure: the
//! hot loops then stay in the `#[target_feature]` function that called us (a closure would be
//! a separate function compiled for the baseline CPU), and a re-entrant call, which cannot
//! happen today, would simply find no buffers and allocate its own.

#![deny(unsafe_op_in_unsafe_fn)]

use std::cell::Cell;

/// One cache line: the buffers' element type, so that every panel starts 64-byte aligned
/// (aligned vector loads, no panel straddling more cache lines than it must).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

const LINE: usize = std::mem::size_of::<Line>();

/// The two packing buffers of one thread.
#[derive(Default)]
struct Buffers {
    a: Vec<Line>,
    b: Vec<Line>,
}

thread_local! {
    // `const` initialisation: no lazy-init allocation, and no allocation until first use.
    static BUFFERS: Cell<Buffers> = const { Cell::new(Buffers { a: Vec::new(), b: Vec::new() }) };
}

/// This thread's packing buffers, borrowed for one GEMM call and returned on drop (also when
/// unwinding).
pub(super) struct Scratch {
    bufs: Buffers,
}

impl Scratch {
    /// Takes this thread's buffers (moving two `Vec`s: no allocation). During thread
    /// teardown, after the thread-local is gone, starts with empty ones instead.
    #[inline]
    pub(super) fn take() -> Scratch {
        Scratch {
            bufs: BUFFERS.try_with(Cell::take).unwrap_or_default(),
        }
    }

    /// Two buffers of at least `a_elems` and `b_elems` elements of `T`, 64-byte aligned and
    /// not overlapping, valid until `self` is dropped or this is called again. They grow
    /// (allocate) only when larger than ever before on this thread.
    #[inline]
    pub(super) fn get<T>(&mut self, a_elems: usize, b_elems: usize) -> (*mut T, *mut T) {
        (
            reserve::<T>(&mut self.bufs.a, a_elems),
            reserve::<T>(&mut self.bufs.b, b_elems),
        )
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let bufs = std::mem::take(&mut self.bufs);
        // Puts them back. If the thread-local is already destroyed they are freed here.
        let _ = BUFFERS.try_with(|cell| cell.set(bufs));
    }
}

/// Grows `buf` (once) to hold at least `elems` elements of `T` and returns its start.
fn reserve<T>(buf: &mut Vec<Line>, elems: usize) -> *mut T {
    debug_assert!(std::mem::align_of::<T>() <= LINE);
    let lines = (elems * std::mem::size_of::<T>()).div_ceil(LINE);
    if buf.len() < lines {
        // Exactly what is needed (no doubling): the sizes asked for are bounded by the
        // blocking parameters, so the first call of a shape usually settles the size.
        buf.reserve_exact(lines - buf.len());
        buf.resize(lines, Line([0; 64]));
    }
    buf.as_mut_ptr().cast()
}
