//! Two-thread GEMM: one persistent helper thread, started once, that computes part of a large
//! product while the calling thread computes the rest.
//!
//! - No allocation on a warm call: the helper is spawned once (the only allocations, on first
//!   use), and work is handed over through a preallocated slot guarded by a `Mutex` and two
//!   `Condvar`s (futex-based on Linux: no allocation), never a channel. The helper has its
//!   own thread-local packing buffers (`buffer.rs`), which grow on the helper thread.
//! - Deterministic: the caller splits `C` into two disjoint blocks at panel boundaries and
//!   each block runs the unchanged single-threaded algorithm, so every element is computed
//!   by one thread with the same `kc` blocking and summation order as a one-thread call:
//!   results are bit-identical whatever the thread count.
//! - One job at a time: if the helper is busy (another thread's GEMM), the caller runs its
//!   whole problem alone instead of waiting.
//! - A panic on the helper is caught there and re-raised on the caller; the caller always
//!   waits for the helper to finish before returning or unwinding (the helper writes into
//!   the caller's `C`).
//!
//! `KILN_THREADS` (read once) sets the thread count; `1` forces single-threaded GEMMs. The
//! default is `std::thread::available_parallelism()`; both are capped at 2 (one helper).

#![deny(unsafe_op_in_unsafe_fn)]

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// The most threads a GEMM uses (the caller and one helper).
const MAX_THREADS: usize = 2;

/// How many threads GEMMs may use: `KILN_THREADS` if set to a positive integer, else the
/// available parallelism, capped at [`MAX_THREADS`]. Read once per process (reading the
/// environment allocates).
pub(super) fn threads() -> usize {
    static THREADS: OnceLock<usize> = OnceLock::new();
    *THREADS.get_or_init(|| {
        let requested = std::env::var("KILN_THREADS")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|&n| n > 0);
        requested
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .min(MAX_THREADS)
    })
}

/// A unit of work for the helper: `run(data)`.
#[derive(Clone, Copy)]
pub(super) struct Job {
    pub run: unsafe fn(*const ()),
    pub data: *const (),
}

// SAFETY: a job is only handed over by `Helper::run_pair`, which keeps `data` alive and
// unaliased by writes until the helper reports it done; what `run` does with it is the
// contract of `run_pair`'s caller.
unsafe impl Send for Job {}

/// The helper's slot.
#[derive(Default)]
struct Slot {
    job: Option<Job>,
    /// Whether that job panicked.
    panicked: bool,
}

/// The persistent helper thread and its slot.
struct Helper {
    slot: Mutex<Slot>,
    /// Signalled when a job is posted.
    posted: Condvar,
    /// Signalled when a job is done.
    finished: Condvar,
    /// Claimed by the caller that owns the helper for the current job.
    busy: AtomicBool,
    /// A job is in the slot (set under the lock).
    pending: AtomicBool,
    /// The posted job has finished, successfully or not (set under the lock).
    done: AtomicBool,
}

fn lock(m: &Mutex<Slot>) -> MutexGuard<'_, Slot> {
    // The slot holds plain data, always consistent: poisoning (impossible anyway, nothing
    // panics while holding the lock) is ignored.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Helper {
    /// The helper, spawned on first use; `None` if the thread could not be spawned.
    fn get() -> Option<&'static Helper> {
        static HELPER: OnceLock<Option<&'static Helper>> = OnceLock::new();
        *HELPER.get_or_init(|| {
            let helper: &'static Helper = Box::leak(Box::new(Helper {
                slot: Mutex::new(Slot::default()),
                posted: Condvar::new(),
                finished: Condvar::new(),
                busy: AtomicBool::new(false),
                pending: AtomicBool::new(false),
                done: AtomicBool::new(false),
            }));
            std::thread::Builder::new()
                .name("kiln-gemm".into())
                .spawn(move || helper.serve())
                .ok()
                .map(|_| helper)
        })
    }

    /// The helper thread's loop: wait for a job, run it, report.
    fn serve(&self) {
        loop {
            // A training step posts GEMMs back to back: spin a little before sleeping, as a
            // futex wake-up costs tens of microseconds.
            spin_until(&self.pending);
            let mut slot = lock(&self.slot);
            while !self.pending.load(Ordering::Acquire) {
                slot = self
                    .posted
                    .wait(slot)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            self.pending.store(false, Ordering::Relaxed);
            let job = slot.job.take();
            drop(slot);
            let Some(job) = job else { continue };
            // SAFETY: the poster guarantees the job may run until reported done.
            let result = catch_unwind(AssertUnwindSafe(|| unsafe { (job.run)(job.data) }));
            let mut slot = lock(&self.slot);
            slot.panicked = result.is_err();
            self.done.store(true, Ordering::Release);
            drop(slot);
            self.finished.notify_all();
        }
    }
}

/// How long a waiting side spins before blocking on the condition variable.
const SPIN: Duration = Duration::from_micros(100);

/// Spins until `flag` is set or [`SPIN`] has passed.
fn spin_until(flag: &AtomicBool) {
    let start = Instant::now();
    while !flag.load(Ordering::Acquire) {
        for _ in 0..64 {
            std::hint::spin_loop();
        }
        if start.elapsed() > SPIN {
            return;
        }
    }
}

/// Waits for the posted job to finish when dropped (also while unwinding from a panic in the
/// caller's own share), then releases the helper.
struct Wait {
    helper: &'static Helper,
}

impl Wait {
    /// Waits for the job, releases the helper, and returns whether the job panicked.
    fn finish(&self) -> bool {
        spin_until(&self.helper.done);
        let mut slot = lock(&self.helper.slot);
        while !self.helper.done.load(Ordering::Acquire) {
            slot = self
                .helper
                .finished
                .wait(slot)
                .unwrap_or_else(PoisonError::into_inner);
        }
        let panicked = slot.panicked;
        self.helper.done.store(false, Ordering::Relaxed);
        slot.panicked = false;
        drop(slot);
        self.helper.busy.store(false, Ordering::Release);
        panicked
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        // Only reached when unwinding out of the caller's share.
        self.finish();
    }
}

/// Runs `theirs` on the helper thread while running `mine` on this one, and returns once
/// both are done. Returns `false` without running anything when no helper is available
/// (single-threaded configuration, spawn failure, or busy with another caller's job): the
/// caller then runs the whole problem itself.
///
/// # Panics
/// If `theirs` panicked on the helper (after both have finished).
///
/// # Safety
/// `theirs.run(theirs.data)` must be safe to call on another thread while `mine` runs here
/// (disjoint writes, `data` valid until this returns).
pub(super) unsafe fn run_pair(theirs: Job, mine: impl FnOnce()) -> bool {
    if threads() < 2 {
        return false;
    }
    let Some(helper) = Helper::get() else {
        return false;
    };
    if helper
        .busy
        .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        return false;
    }
    {
        let mut slot = lock(&helper.slot);
        slot.job = Some(theirs);
        slot.panicked = false;
        helper.pending.store(true, Ordering::Release);
    }
    helper.posted.notify_one();
    let wait = Wait { helper };
    mine();
    let panicked = wait.finish();
    std::mem::forget(wait);
    if panicked {
        panic!("gemm: the helper thread panicked");
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Runs `job` on the helper (retrying while another test's GEMM holds it).
    fn on_helper(job: Job, mine: impl Fn()) -> std::thread::Result<bool> {
        for _ in 0..10_000 {
            // SAFETY: the jobs below touch only statics.
            match catch_unwind(AssertUnwindSafe(|| unsafe { run_pair(job, &mine) })) {
                Ok(false) => std::thread::yield_now(),
                other => return other,
            }
        }
        Ok(false)
    }

    static COUNT: AtomicUsize = AtomicUsize::new(0);

    unsafe fn count(_: *const ()) {
        COUNT.fetch_add(1, Ordering::SeqCst);
    }

    unsafe fn explode(_: *const ()) {
        panic!("boom");
    }

    /// A panic on the helper reaches the caller (no deadlock), and the helper keeps serving.
    #[test]
    fn helper_panics_propagate_and_the_helper_survives() {
        if threads() < 2 {
            return;
        }
        let job = |run| Job {
            run,
            data: std::ptr::null(),
        };
        let before = COUNT.load(Ordering::SeqCst);
        assert!(matches!(on_helper(job(count), || ()), Ok(true)));
        assert!(on_helper(job(explode), || ()).is_err());
        // The caller's own share panicking: still waits for the helper, then unwinds.
        assert!(on_helper(job(count), || panic!("mine")).is_err());
        assert!(matches!(on_helper(job(count), || ()), Ok(true)));
        assert_eq!(COUNT.load(Ordering::SeqCst), before + 3);
    }
}
