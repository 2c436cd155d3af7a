//! Two-way fork-join on one persistent helper thread: [`join`] runs one closure on the helper
//! while the calling thread runs another, and returns when both are done. Large GEMMs
//! (`gemm.rs`: both threads claim blocks of the product from either end), convolutions and
//! pooling split their work with it, and generated
//! element-wise loops over a large batch run chunk by chunk with [`split_batch`]. A batch is
//! always cut into the same chunks ([`chunk_range`]) and [`for_each_chunk`] hands them out
//! from both ends, so at equal speeds each thread keeps working on the half of the
//! activations already in its core's cache, and a late or slowed helper leaves more chunks
//! to the calling thread instead of holding it up.
//!
//! - No allocation on a warm call: the helper is spawned once (the only allocations, on first
//!   use), and work is handed over through a preallocated slot guarded by a `Mutex` and two
//!   `Condvar`s (futex-based on Linux: no allocation), never a channel or a boxed closure.
//! - Scoped: `join` waits for the helper before returning, also while unwinding from a panic
//!   in the caller's own closure, so both closures may borrow the caller's data.
//! - Deterministic: callers cut their work into the same parts whatever the thread count
//!   and whichever thread runs each part, and reduce partial results in a fixed order, so
//!   results never depend on how many threads ran them, nor on their timing.
//! - Never slower than one thread by more than a check: a share the helper has not started
//!   by the time the caller has finished its own (the helper asleep, or descheduled on a busy
//!   machine) is taken back and run by the caller, instead of waited for.
//! - One job at a time: if the helper is busy (another thread's job, or a `join` nested
//!   inside a helper job), the caller runs both closures itself instead of waiting.
//! - A panic on the helper is caught there and re-raised on the caller.
//!
//! `KILN_THREADS` (read once) sets the thread count; `1` runs everything on the calling
//! thread. The default is `std::thread::available_parallelism()`; both are capped at 2 (one
//! helper).

#![deny(unsafe_op_in_unsafe_fn)]

use crate::kernels::dispatch::{run_fast, ElementLoop};
use kiln_gemm::Claims;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// The most threads a kernel uses (the caller and one helper).
const MAX_THREADS: usize = 2;

/// How many threads kernels may use (1 or 2): `KILN_THREADS` if set to a positive integer, else the
/// available parallelism, capped at `MAX_THREADS` (2). Read once per process (reading the
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
    /// Takes the posted job back if the helper has not started it (it is asleep, descheduled
    /// on a busy machine, or still waking up), and releases the helper. Returns whether it did:
    /// then the caller runs the job itself.
    fn retract(&self) -> bool {
        if !self.helper.pending.load(Ordering::Acquire) {
            return false;
        }
        let mut slot = lock(&self.helper.slot);
        // The helper takes a job under this lock, clearing `pending`: checked again here, the
        // answer is final.
        if !self.helper.pending.load(Ordering::Acquire) {
            return false;
        }
        self.helper.pending.store(false, Ordering::Relaxed);
        slot.job = None;
        drop(slot);
        self.helper.busy.store(false, Ordering::Release);
        true
    }

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

/// An element-wise loop that can be cut in two at any element: each element's result depends
/// on that element alone, so the two halves compute exactly what the whole would.
pub(crate) trait SplitLoop: ElementLoop + Send + Sized {
    /// The number of elements.
    fn len(&self) -> usize;
    /// The elements `..at` and `at..`.
    fn split_at(self, at: usize) -> (Self, Self);
}

/// `slice` cut at `at`, or two empty slices when it is empty (an optional state buffer that
/// an optimizer leaves empty when its feature is off).
pub(crate) fn cut_mut<T>(slice: &mut [T], at: usize) -> (&mut [T], &mut [T]) {
    if slice.is_empty() {
        (slice, &mut [])
    } else {
        slice.split_at_mut(at)
    }
}

/// The fewest elements an optimizer-style loop is split at: about 8 µs of an Adam update, far
/// above the cost of handing part of it to a spinning helper (about a microsecond).
const SPLIT_LOOP_MIN: usize = 1 << 14;

/// The fewest elements of one piece of a split optimizer-style loop.
const SPLIT_LOOP_PIECE: usize = 1 << 13;

/// Runs `update` with [`run_fast`], in up to [`MAX_CHUNKS`] pieces shared by two threads
/// ([`for_each_chunk`]: a slow or descheduled helper leaves more pieces to this thread) when
/// it is long enough and a helper is free. Pieces are cut at multiples of 64 elements, so two
/// never share a cache line. Results are the same bits on one thread or two.
pub(crate) fn run_fast_split<L: SplitLoop>(update: L) {
    let len = update.len();
    if len < SPLIT_LOOP_MIN || threads() < 2 {
        return run_fast(update);
    }
    let count = (len / SPLIT_LOOP_PIECE).clamp(2, MAX_CHUNKS);
    let mut pieces: [Option<L>; MAX_CHUNKS] = Default::default();
    // Piece `i` starts where chunk `i` of `len` elements does, rounded up to 64 elements.
    let start = |i: usize| chunk_range(len, count, i).start.next_multiple_of(64);
    let mut rest = update;
    for (i, piece) in pieces.iter_mut().enumerate().take(count - 1) {
        let (this, after) = rest.split_at(start(i + 1) - start(i));
        *piece = Some(this);
        rest = after;
    }
    pieces[count - 1] = Some(rest);
    let pieces = SharedMut::new(&mut pieces[..count]);
    for_each_chunk(count, |chunk, _thread| {
        // SAFETY: `for_each_chunk` hands each chunk to one thread once.
        if let Some(piece) = unsafe { pieces.range(chunk..chunk + 1) }[0].take() {
            run_fast(piece);
        }
    });
}

/// Runs `work` on the columns `0..cols` cut into up to four pieces of whole `group`s of
/// columns, each at least `min_width` wide, claimed by the two threads as they come free
/// ([`for_each_chunk`]: a busy helper leaves them all to this thread); one piece of all the
/// columns when they are too few to cut. For column-wise reductions (parameter gradients summed
/// over the rows), whose pieces write disjoint columns and compute the same bits however the
/// columns are cut.
pub(crate) fn for_each_column_piece(
    cols: usize,
    group: usize,
    min_width: usize,
    work: impl Fn(std::ops::Range<usize>) + Sync,
) {
    let width = cols.div_ceil(4).next_multiple_of(group).max(min_width);
    let pieces = cols.div_ceil(width);
    if pieces < 2 || threads() < 2 {
        return work(0..cols);
    }
    for_each_chunk(pieces, |piece, _| {
        work(piece * width..((piece + 1) * width).min(cols));
    });
}

/// Sets every element of `slice` to `value`, shared by two threads when the slice is long
/// ([`run_fast_split`]). A gradient table that is cleared at every step (an embedding's: W7's
/// 20,000 × 128 f32, 10 MiB) is written at the speed of memory, and a second core writes
/// more of it in the same time.
pub(crate) fn fill_split<T: Copy + Send>(slice: &mut [T], value: T) {
    run_fast_split(Fill { slice, value });
}

/// [`fill_split`]'s loop.
struct Fill<'a, T> {
    slice: &'a mut [T],
    value: T,
}

impl<T: Copy> ElementLoop for Fill<'_, T> {
    #[inline(always)]
    fn run(self) {
        self.slice.fill(self.value);
    }
}

impl<T: Copy + Send> SplitLoop for Fill<'_, T> {
    fn len(&self) -> usize {
        self.slice.len()
    }

    fn split_at(self, at: usize) -> (Self, Self) {
        let (head, tail) = self.slice.split_at_mut(at);
        let value = self.value;
        (Fill { slice: head, value }, Fill { slice: tail, value })
    }
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
            if wait.retract() {
                std::mem::forget(wait);
                // The helper never started its share: waiting for it would only add its
                // wake-up time to this thread's.
                if let Some(theirs) = slot.take() {
                    theirs();
                }
                return;
            }
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

/// The most chunks a batch is cut into (see [`chunk_range`]).
pub const MAX_CHUNKS: usize = 8;

/// How many chunks a batch of `batch` samples is cut into: one per sample up to
/// [`MAX_CHUNKS`].
pub fn chunk_count(batch: usize) -> usize {
    batch.min(MAX_CHUNKS)
}

/// The samples of chunk `chunk` of a batch of `batch` cut into `chunks` nearly equal,
/// consecutive chunks (the first `batch % chunks` one sample longer). The same batch is
/// always cut the same way, whatever the thread count.
pub fn chunk_range(batch: usize, chunks: usize, chunk: usize) -> std::ops::Range<usize> {
    kiln_gemm::block_range(batch, chunks, chunk)
}

/// Runs `work(chunk, thread)` once for every chunk in `0..chunks`, on this thread (`thread`
/// 0) and the helper (`thread` 1): this thread claims chunks from the front, the helper from
/// the back, one at a time, until they meet. At equal speeds each takes the same half in
/// every call, so each core keeps working on the activations already in its cache; when the
/// helper is late, slowed or busy, this thread takes on more, down to all of them. The
/// assignment of chunks to threads varies, so `work` must compute each chunk the same way
/// whichever thread runs it (`thread` only selects per-thread scratch).
///
/// ```
/// use kiln_runtime::kernels::parallel::for_each_chunk;
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// let done: Vec<AtomicUsize> = (0..8).map(|_| AtomicUsize::new(0)).collect();
/// for_each_chunk(8, |chunk, _thread| {
///     done[chunk].fetch_add(1, Ordering::Relaxed);
/// });
/// assert!(done.iter().all(|d| d.load(Ordering::Relaxed) == 1));
/// ```
pub fn for_each_chunk(chunks: usize, work: impl Fn(usize, usize) + Sync) {
    if chunks < 2 || threads() < 2 {
        (0..chunks).for_each(|chunk| work(chunk, 0));
        return;
    }
    let claims = Claims::new(chunks);
    let (work, claims) = (&work, &claims);
    join(
        move || {
            while let Some(chunk) = claims.claim(false) {
                work(chunk, 1);
            }
        },
        move || {
            while let Some(chunk) = claims.claim(true) {
                work(chunk, 0);
            }
        },
    );
}

/// A mutable slice whose disjoint ranges are handed out to the two threads of
/// [`for_each_chunk`] (one chunk's range per claim).
pub(crate) struct SharedMut<'a, T> {
    ptr: *mut T,
    len: usize,
    _borrow: PhantomData<&'a mut [T]>,
}

// SAFETY: a `SharedMut` only hands out `&mut [T]` ranges (each to one thread, by the contract
// of `range`), which is what sending `&mut [T]` to another thread allows for `T: Send`.
unsafe impl<T: Send> Send for SharedMut<'_, T> {}
// SAFETY: as above: shared between the two threads, it still gives each range to one only.
unsafe impl<T: Send> Sync for SharedMut<'_, T> {}

impl<'a, T> SharedMut<'a, T> {
    pub(crate) fn new(slice: &'a mut [T]) -> Self {
        Self {
            ptr: slice.as_mut_ptr(),
            len: slice.len(),
            _borrow: PhantomData,
        }
    }

    /// The elements `range` of the slice.
    ///
    /// # Panics
    /// If `range` is not inside the slice.
    ///
    /// # Safety
    /// No other live reference obtained from this `SharedMut` may overlap `range` (each
    /// chunk's range is taken once, by the thread that claimed the chunk).
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn range(&self, range: std::ops::Range<usize>) -> &'a mut [T] {
        assert!(range.start <= range.end && range.end <= self.len);
        // SAFETY: inside the slice (checked), and unaliased by the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(range.start), range.len()) }
    }
}

/// The fewest elements an element-wise loop must cover to be split: below 2¹⁶ the hand-over
/// to the helper costs about what it saves.
const MIN_SPLIT_ELEMENTS: usize = 1 << 16;

/// Runs the element-wise loop `body` over slices that each hold one value per element of a
/// batch of `batch` samples (all slices of equal length, a multiple of `batch`): chunk by
/// chunk of the batch ([`chunk_range`]) on two threads ([`for_each_chunk`]) when the slices
/// are long enough, else once over the whole. `body` must treat elements independently (it
/// sees either the whole slices or a chunk of each, the same chunk of every slice).
///
/// # Panics
/// If the slices differ in length.
///
/// ```
/// use kiln_runtime::kernels::parallel::split_batch;
/// let x = vec![-1.0f32, 2.0, -3.0, 4.0];
/// let mut y = vec![0.0f32; 4];
/// use kiln_runtime::kernels::parallel::Closure;
/// split_batch(2, [&x[..]], [&mut y[..]], Closure(|[x]: [&[f32]; 1], [y]: [&mut [f32]; 1]| {
///     for (y, x) in y.iter_mut().zip(x) {
///         *y = x.max(0.0);
///     }
/// }));
/// assert_eq!(y, [0.0, 2.0, 0.0, 4.0]);
/// ```
pub fn split_batch<T: Sync + Send, const I: usize, const O: usize>(
    batch: usize,
    inputs: [&[T]; I],
    outputs: [&mut [T]; O],
    body: impl ElementLoopBody<T, I, O>,
) {
    // The loop body is the model's element-wise code, compiled in the user's crate for the
    // baseline CPU; its `#[inline(always)]` `apply`, called inside `run_fast`'s
    // feature-specific copies, is inlined there and vectorized for AVX-512 or AVX2 (a `gelu`
    // loop runs several times faster than as a baseline, scalar call).
    let body = |ins: [&[T]; I], outs: [&mut [T]; O]| {
        run_fast(Apply {
            body: &body,
            ins,
            outs,
        })
    };
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
    let per_sample = len / batch;
    let chunks = chunk_count(batch);
    let outputs = outputs.map(SharedMut::new);
    for_each_chunk(chunks, |chunk, _| {
        let samples = chunk_range(batch, chunks, chunk);
        let range = samples.start * per_sample..samples.end * per_sample;
        let ins = inputs.map(|s| &s[range.clone()]);
        // SAFETY: each chunk is claimed once, and chunks cover disjoint ranges.
        let outs = std::array::from_fn(|k| unsafe { outputs[k].range(range.clone()) });
        body(ins, outs);
    });
}

/// The body of an element-wise loop run by [`split_batch`]: generated code implements it on
/// a unit struct with an `#[inline(always)]` `apply`, which is what lets `split_batch` compile
/// it for the CPU's vector units (a closure would stay a separate, baseline function).
pub trait ElementLoopBody<T, const I: usize, const O: usize>: Sync {
    /// Runs the loop over one chunk of the slices.
    fn apply(&self, inputs: [&[T]; I], outputs: [&mut [T]; O]);
}

/// A closure as an [`ElementLoopBody`] (not vectorized beyond the baseline CPU: for tests and
/// small loops).
pub struct Closure<B>(pub B);

impl<T, B, const I: usize, const O: usize> ElementLoopBody<T, I, O> for Closure<B>
where
    B: Fn([&[T]; I], [&mut [T]; O]) + Sync,
{
    #[inline(always)]
    fn apply(&self, inputs: [&[T]; I], outputs: [&mut [T]; O]) {
        (self.0)(inputs, outputs)
    }
}

/// A loop body applied to one chunk, as an [`ElementLoop`] for `run_fast`.
struct Apply<'b, B, X, Y> {
    body: &'b B,
    ins: X,
    outs: Y,
}

impl<T, B, const I: usize, const O: usize> ElementLoop for Apply<'_, B, [&[T]; I], [&mut [T]; O]>
where
    B: ElementLoopBody<T, I, O>,
{
    #[inline(always)]
    fn run(self) {
        self.body.apply(self.ins, self.outs)
    }
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
            split_batch(
                batch,
                [&x[..]],
                [&mut y[..], &mut z[..]],
                Closure(|[x]: [&[u64]; 1], [y, z]: [&mut [u64]; 2]| {
                    assert!(x.len() == len || x.len() % per_sample == 0);
                    for i in 0..x.len() {
                        y[i] = x[i] * 2;
                        z[i] += x[i];
                    }
                }),
            );
            assert!(y.iter().enumerate().all(|(i, &v)| v == 2 * i as u64));
            assert!(z.iter().enumerate().all(|(i, &v)| v == 1 + i as u64));
        }
    }

    /// Both closures see their own disjoint halves, whichever thread runs them.
    /// Whether the helper takes its share or the caller takes it back (here the caller's
    /// share is often empty, so both happen), each share runs exactly once.
    #[test]
    fn a_share_runs_exactly_once_whoever_takes_it() {
        let (theirs, mine) = (AtomicUsize::new(0), AtomicUsize::new(0));
        for i in 0..20_000 {
            join(
                || {
                    theirs.fetch_add(1, Ordering::Relaxed);
                },
                || {
                    if i % 3 == 0 {
                        for _ in 0..200 {
                            std::hint::spin_loop();
                        }
                    }
                    mine.fetch_add(1, Ordering::Relaxed);
                },
            );
        }
        assert_eq!(theirs.load(Ordering::Relaxed), 20_000);
        assert_eq!(mine.load(Ordering::Relaxed), 20_000);
    }

    #[test]
    fn fill_split_sets_every_element() {
        // Short (one piece), just long enough to split, and uneven pieces on two threads.
        for len in [0usize, 100, SPLIT_LOOP_MIN, 5 * SPLIT_LOOP_PIECE + 37] {
            let mut data: Vec<u32> = (0..len as u32).collect();
            fill_split(&mut data, 7);
            assert!(data.iter().all(|&v| v == 7), "len {len}");
        }
    }

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
