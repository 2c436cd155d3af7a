//! A global allocator that counts allocations per thread, for the tests that prove a warm
//! step allocates nothing. Per thread, so the test harness's other threads do not interfere;
//! allocations on kiln's helper thread (named `kiln-helper`, which runs half of the large
//! kernels) are counted too, as the work of whichever test is measuring.
//!
//! Each test binary that uses it declares it as its allocator:
//! `#[global_allocator] static GLOBAL: counting::Counting = counting::Counting;`

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// The counting allocator.
pub struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
    /// Whether this thread is kiln's helper: unknown until its first allocation.
    static ROLE: Cell<Role> = const { Cell::new(Role::Unknown) };
}

/// Allocations made on kiln's helper thread.
static HELPER_ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

#[derive(Clone, Copy, PartialEq)]
enum Role {
    Unknown,
    Helper,
    Other,
}

/// Counts one allocation on this thread.
fn count() {
    ALLOCATIONS.with(|n| n.set(n.get() + 1));
    let role = ROLE.with(|role| {
        if role.get() == Role::Unknown {
            // Marked first: should looking up the thread allocate, the nested call sees
            // `Other` instead of recursing.
            role.set(Role::Other);
            if std::thread::current().name() == Some("kiln-helper") {
                role.set(Role::Helper);
            }
        }
        role.get()
    });
    if role == Role::Helper {
        HELPER_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: forwards to the system allocator; the counter is a thread-local `Cell` with a
// const initializer, which does not allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// The number of allocations (and reallocations) this thread and kiln's helper thread make
/// while running `f`.
pub fn allocations_in(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get) + HELPER_ALLOCATIONS.load(Ordering::SeqCst);
    f();
    ALLOCATIONS.with(Cell::get) + HELPER_ALLOCATIONS.load(Ordering::SeqCst) - before
}

/// Held for a whole test, so that no other test of the binary runs (and uses the helper
/// thread, whose allocations every measurement counts) at the same time.
pub fn exclusive() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `step` until `clean` calls in a row allocate nothing, at most 200 calls, and returns
/// whether they did. A product split over two threads hands the helper thread its share only
/// if the helper wakes in time (else the caller takes it back), so on a busy machine the
/// helper's first share of a product, which grows its own packing buffers, can come several
/// steps late: that is its warm-up, which a fixed number of warm-up steps cannot bound.
#[allow(dead_code)] // Not every test binary that includes this module warms up.
pub fn warm_up(mut step: impl FnMut(), clean: usize) -> bool {
    let mut in_a_row = 0;
    for _ in 0..200 {
        if in_a_row == clean {
            return true;
        }
        in_a_row = if allocations_in(&mut step) == 0 {
            in_a_row + 1
        } else {
            0
        };
    }
    in_a_row == clean
}
