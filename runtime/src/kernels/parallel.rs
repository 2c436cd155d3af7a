//! Two-way fork-join on one persistent helper thread: [`join`] runs one closure on the helper
//! while the calling thread runs another, and returns when both are done. Large GEMMs
//! (`gemm.rs`), convolutions and pooling split their work in two with it, and generated
//! element-wise loops over a large batch run on its two halves with [`split_batch`].
//! Every batch is split at the same sample (the first half has `⌈batch / 2⌉`), so each
//! thread keeps working on the half of the activations already in its core's cache.
//!
//! - No allocation on a warm call: the helper is spawned once (the only allocations, on first
//!   use), and work is handed over through a preallocated slot guarded by a `Mutex` and two
//!   `Condvar`s (futex-based on Linux: no allocation), never a channel or a boxed closure.
//! - Scoped: `join` waits for the helper before returning, also while unwinding from a panic
//!   in the caller's own closure, so both closures may borrow the caller's data.
//! - Deterministic: callers split their work into the same two parts whatever the thread
//!   count, and [`join`] runs both parts on the calling thread when the helper is not
//!   available, so results never depend on how many threads ran them.
//! - One job at a time: if the helper is busy (another thread's job, or a `join` nested
//!   inside a helper job), the caller runs both closures itself instead of waiting.
//! - A panic on the helper is caught there and re-raised on the caller.
//!
//! `KILN_THREADS` (read once) sets the thread count; `1` runs everything on the calling
//! thread. The default is `std::thread::available_parallelism()`; both are capped at 2 (one
//! helper).

#![deny(unsafe_op_in_unsafe_fn)]

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// The most threads a kernel uses (the caller and one helper).
const MAX_THREADS: usize = 2;

/// How many threads kernels may use (1 or 2): `KILN_THREADS` if set to a positive integer, else the
/// available parallelism, capped at [`MAX_THREADS`]. Read once per process (reading the
/// environment allocates).
pub fn threads() -> usize {
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
struct Job {
    run: unsafe fn(*mut ()),
    data: *mut (),
}

// SAFETY: a job is only handed over by `join`, which keeps `data` (a `Send` closure) alive
// and untouched until the helper reports it done.
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
                .name("kiln-helper".into())
                .spawn(move || helper.serve())
                .ok()
                .map(|_| helper)
        })
    }

    /// The helper thread's loop: wait for a job, run it, report.
    fn serve(&self) {
        loop {
            // A training step posts jobs back to back: spin a little before sleeping, as a
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

/// Posts `job` to the helper, if one is available and free; the returned guard waits for it.
fn post(job: Job) -> Option<Wait> {
    if threads() < 2 {
        return None;
    }
    let helper = Helper::get()?;
    if helper
        .busy
        .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        return None;
    }
    {
        let mut slot = lock(&helper.slot);
        slot.job = Some(job);
        slot.panicked = false;
        helper.pending.store(true, Ordering::Release);
    }
    helper.posted.notify_one();
    Some(Wait { helper })
}

/// Runs the closure in `*data` (an `Option<A>`), once.
///
/// # Safety
/// `data` must point to a live `Option<A>` that nothing else accesses during the call.
unsafe fn call_once<A: FnOnce()>(data: *mut ()) {
    // SAFETY: from the caller.
    let slot = unsafe { &mut *data.cast::<Option<A>>() };
    if let Some(f) = slot.take() {
        f();
    }
}

/// Runs `theirs` on the helper thread while running `mine` on this one, and returns once
/// both are done. When no helper is available (one thread configured, spawn failure, or the
/// helper busy with another job) both run here, `mine` first: callers must not depend on
/// which thread runs what, only on both having run.
///
/// # Panics
/// If either closure panics (after both have finished or been abandoned).
///
/// ```
/// use kiln_runtime::kernels::parallel::join;
/// let mut data = [1, 2, 3, 4];
/// let (left, right) = data.split_at_mut(2);
/// join(|| right.iter_mut().for_each(|v| *v *= 10), || left.iter_mut().for_each(|v| *v += 1));
/// assert_eq!(data, [2, 3, 30, 40]);
/// ```
pub fn join<A: FnOnce() + Send, B: FnOnce()>(theirs: A, mine: B) {
    let mut slot = Some(theirs);
    let job = Job {
        run: call_once::<A>,
        data: (&raw mut slot).cast(),
    };
    match post(job) {
        Some(wait) => {
            mine();
            let panicked = wait.finish();
            std::mem::forget(wait);
            if panicked {
                panic!("a kernel's helper-thread share panicked");
            }
        }
        None => {
            mine();
            if let Some(theirs) = slot.take() {
                theirs();
            }
        }
    }
}

/// The number of samples in the first half of a split batch: `⌈batch / 2⌉`.
pub fn first_half(batch: usize) -> usize {
    batch.div_ceil(2)
}

/// The fewest elements an element-wise loop must cover to be split: below 2¹⁶ the hand-over
/// to the helper costs about what it saves.
const MIN_SPLIT_ELEMENTS: usize = 1 << 16;

/// Runs the element-wise loop `body` over slices that each hold one value per element of a
/// batch of `batch` samples (all slices of equal length, a multiple of `batch`): on the two
/// halves of the batch on two threads when the slices are long enough, else once over the
/// whole. `body` must treat elements independently (it sees either the whole slices or a
/// half of each, the same half of every slice).
///
/// # Panics
/// If the slices differ in length.
///
/// ```
/// use kiln_runtime::kernels::parallel::split_batch;
/// let x = vec![-1.0f32, 2.0, -3.0, 4.0];
/// let mut y = vec![0.0f32; 4];
/// split_batch(2, [&x[..]], [&mut y[..]], |[x], [y]| {
///     for (y, x) in y.iter_mut().zip(x) {
///         *y = x.max(0.0);
///     }
/// });
/// assert_eq!(y, [0.0, 2.0, 0.0, 4.0]);
/// ```
pub fn split_batch<T: Sync + Send, const I: usize, const O: usize>(
    batch: usize,
    inputs: [&[T]; I],
    outputs: [&mut [T]; O],
    body: impl Fn([&[T]; I], [&mut [T]; O]) + Sync,
) {
    let len = match (inputs.first(), outputs.first()) {
        (Some(s), _) => s.len(),
        (None, Some(s)) => s.len(),
        (None, None) => return body(inputs, outputs),
    };
    assert!(
        inputs.iter().all(|s| s.len() == len) && outputs.iter().all(|s| s.len() == len),
        "split_batch: the slices differ in length"
    );
    if batch < 2 || len < MIN_SPLIT_ELEMENTS || threads() < 2 || !len.is_multiple_of(batch) {
        return body(inputs, outputs);
    }
    let mid = len / batch * first_half(batch);
    let firsts_in = inputs.map(|s| &s[..mid]);
    let seconds_in = inputs.map(|s| &s[mid..]);
    let mut firsts_out = outputs;
    let mut seconds_out: [&mut [T]; O] = std::array::from_fn(|_| <&mut [T]>::default());
    for (first, second) in firsts_out.iter_mut().zip(seconds_out.iter_mut()) {
        let (a, b) = std::mem::take(first).split_at_mut(mid);
        *first = a;
        *second = b;
    }
    let body = &body;
    join(
        move || body(seconds_in, seconds_out),
        move || body(firsts_in, firsts_out),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A panic on the helper reaches the caller (no deadlock), the caller's own panic waits
    /// for the helper, and the helper keeps serving.
    #[test]
    fn panics_propagate_and_the_helper_survives() {
        let count = AtomicUsize::new(0);
        let bump = || {
            count.fetch_add(1, Ordering::SeqCst);
        };
        join(bump, bump);
        assert_eq!(count.load(Ordering::SeqCst), 2);
        let theirs_panics = catch_unwind(AssertUnwindSafe(|| join(|| panic!("boom"), bump)));
        assert!(theirs_panics.is_err());
        assert_eq!(count.load(Ordering::SeqCst), 3);
        let mine_panics = catch_unwind(AssertUnwindSafe(|| join(bump, || panic!("mine"))));
        assert!(mine_panics.is_err());
        join(bump, bump);
        // `bump` on the helper ran unless the helper was busy; either way the joins after
        // the panics ran both closures.
        assert!(count.load(Ordering::SeqCst) >= 5);
    }

    /// A long batch is split at the first half's last sample, a short one is not split.
    #[test]
    fn split_batch_covers_every_element_once() {
        for (batch, per_sample) in [(64usize, 4096usize), (7, 10_000), (3, 5), (1, 100_000)] {
            let len = batch * per_sample;
            let x: Vec<u64> = (0..len as u64).collect();
            let mut y = vec![0u64; len];
            let mut z = vec![1u64; len];
            split_batch(batch, [&x[..]], [&mut y[..], &mut z[..]], |[x], [y, z]| {
                assert!(x.len() == len || x.len() % per_sample == 0);
                for i in 0..x.len() {
                    y[i] = x[i] * 2;
                    z[i] += x[i];
                }
            });
            assert!(y.iter().enumerate().all(|(i, &v)| v == 2 * i as u64));
            assert!(z.iter().enumerate().all(|(i, &v)| v == 1 + i as u64));
        }
    }

    /// Both closures see their own disjoint halves, whichever thread runs them.
    #[test]
    fn join_runs_both_halves() {
        let mut data = vec![0u32; 1000];
        for _ in 0..100 {
            let (left, right) = data.split_at_mut(500);
            join(
                || right.iter_mut().for_each(|v| *v += 2),
                || left.iter_mut().for_each(|v| *v += 1),
            );
        }
        assert!(data[..500].iter().all(|&v| v == 100));
        assert!(data[500..].iter().all(|&v| v == 200));
    }
}
