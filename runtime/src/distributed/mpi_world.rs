//! [`World`]: the MPI communicator of all the processes `mpirun` started (feature `mpi`).

use super::{check_lengths, Communicator, PendingSums};
use crate::{Error, Result};
use mpi::collective::{CommunicatorCollectives, Root};
use mpi::environment::Universe;
use mpi::request::{LocalScope, Request};
use mpi::topology::{Communicator as _, SimpleCommunicator};
use mpi::traits::Equivalence;
use std::time::{Duration, Instant};

/// The exit status of every rank when a collective times out (`MPI_Abort`'s error code).
pub const TIMEOUT_EXIT_CODE: i32 = 75;

/// The exit status of every rank when one panics with a [`World`] alive.
pub const PANIC_EXIT_CODE: i32 = 101;

/// How long a collective may wait by default: long enough for a slow rank to load its data
/// before the first one, short enough that a job whose peer has vanished does not hold its
/// nodes for hours.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// All the processes of an MPI job (`MPI_COMM_WORLD`), as a [`Communicator`].
///
/// Create it once, at the start of `main`, and keep it alive until training is done: dropping
/// it finalises MPI (which cannot be initialised again in the same process).
///
/// **A rank that dies.** `mpirun` notices a rank that exits or is killed and terminates the
/// others, reporting which rank died. As a second line of defence (a rank that hangs, a host
/// that drops off the network), every collective here waits at most a timeout (300 s by
/// default; [`World::timeout`], or the `KILN_MPI_TIMEOUT` environment variable in seconds):
/// past it the rank prints which operation did not complete and calls `MPI_Abort`, which ends
/// every rank with exit status [`TIMEOUT_EXIT_CODE`]. The operation cannot return an error
/// instead: MPI keeps using the buffers of a pending operation, so the process must not go on.
pub struct World {
    // Field order matters: the communicator is released before the universe finalises MPI.
    comm: SimpleCommunicator,
    _universe: Universe,
    rank: usize,
    size: usize,
    timeout: Duration,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("rank", &self.rank)
            .field("size", &self.size)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl World {
    /// Initialises MPI and returns the world communicator. Run under `mpirun -np N`; started
    /// directly, the program is a world of one rank (Open MPI's singleton mode).
    ///
    /// The collective timeout is read from `KILN_MPI_TIMEOUT` (seconds), else 300 s.
    ///
    /// # Errors
    /// [`Error::Distributed`] if MPI was already initialised in this process, or
    /// `KILN_MPI_TIMEOUT` is not a number of seconds.
    pub fn init() -> Result<World> {
        let timeout = match std::env::var("KILN_MPI_TIMEOUT") {
            Ok(text) => match text.trim().parse::<f64>() {
                Ok(seconds) if seconds > 0.0 && seconds.is_finite() => {
                    Duration::from_secs_f64(seconds)
                }
                _ => {
                    return Err(Error::Distributed {
                        rank: 0,
                        message: format!(
                            "KILN_MPI_TIMEOUT=`{text}` is not a positive number of seconds"
                        ),
                    })
                }
            },
            Err(_) => DEFAULT_TIMEOUT,
        };
        let universe = mpi::initialize().ok_or_else(|| Error::Distributed {
            rank: 0,
            message: "MPI is already initialised in this process: create one World and keep \
                      it for the whole program"
                .to_string(),
        })?;
        let comm = universe.world();
        let rank = usize::try_from(comm.rank()).unwrap_or(0);
        let size = usize::try_from(comm.size()).unwrap_or(1);
        Ok(World {
            comm,
            _universe: universe,
            rank,
            size,
            timeout,
        })
    }

    /// Ends every rank of the job at once (`MPI_Abort`) with exit status `code`: what a rank
    /// that cannot go on (an error from [`Trainer::fit`](crate::train::Trainer::fit)) calls so
    /// that the others need not wait for the collective timeout.
    pub fn abort(&self, code: i32) -> ! {
        self.comm.abort(code)
    }

    /// Sets how long a collective may wait for the other ranks before the job is aborted.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The host this rank runs on (`MPI_Get_processor_name`).
    pub fn processor_name(&self) -> String {
        mpi::environment::processor_name().unwrap_or_default()
    }

    /// Waits until every rank has called it.
    ///
    /// # Errors
    /// None in practice; a timeout aborts the job (see [`World`]).
    pub fn barrier(&self) -> Result<()> {
        let request = self.comm.immediate_barrier();
        self.wait(request, "barrier");
        Ok(())
    }

    /// Waits for `request`, polling so that a timeout can end the job.
    fn wait<'a, D: ?Sized, S: mpi::request::Scope<'a>>(
        &self,
        request: Request<'a, D, S>,
        what: &str,
    ) {
        let started = Instant::now();
        let mut request = request;
        loop {
            match request.test() {
                Ok(_) => return,
                Err(pending) => request = pending,
            }
            if started.elapsed() > self.timeout {
                report(&format!(
                    "kiln::distributed: rank {} of {}: {what} did not complete within {:.0} s; \
                     another rank has probably died, hung or lost its connection. Aborting \
                     every rank (raise KILN_MPI_TIMEOUT=SECONDS if a rank is only slow).\n",
                    self.rank,
                    self.size,
                    self.timeout.as_secs_f64()
                ));
                self.comm.abort(TIMEOUT_EXIT_CODE);
            }
            // MPI progresses in `test`; yielding keeps an oversubscribed core usable by the
            // rank being waited for.
            std::thread::yield_now();
        }
    }

    fn all_reduce<T: Equivalence>(&self, send: &[T], recv: &mut [T]) -> Result<()> {
        check_lengths(self.rank, send.len(), recv.len())?;
        mpi::request::scope(|scope: &LocalScope<'_>| {
            let request = self.comm.immediate_all_reduce_into(
                scope,
                send,
                recv,
                mpi::collective::SystemOperation::sum(),
            );
            self.wait(request, "a gradient/metric all-reduce (MPI_Iallreduce)");
        });
        Ok(())
    }

    /// Runs `body`, whose sums start as `MPI_Iallreduce`s, then waits for every one.
    fn overlap<'b, T: Equivalence>(
        &self,
        body: &mut dyn FnMut(&mut dyn PendingSums<'b, T>) -> Result<()>,
    ) -> Result<()> {
        mpi::request::scope(|scope: &LocalScope<'_>| {
            let mut pending = MpiPending {
                world: self,
                scope,
                requests: std::array::from_fn(|_| None),
                started: 0,
            };
            let result = body(&mut pending);
            // Wait in start order; also after an error: MPI still owns the buffers.
            for k in 0..MAX_PENDING {
                let slot = (pending.started + k) % MAX_PENDING;
                if let Some(request) = pending.requests[slot].take() {
                    self.wait(request, "a gradient bucket all-reduce (MPI_Iallreduce)");
                }
            }
            result
        })
    }

    fn broadcast<T: Equivalence>(&self, buffer: &mut [T]) -> Result<()> {
        let root = self.comm.process_at_rank(0);
        mpi::request::scope(|scope: &LocalScope<'_>| {
            let request = root.immediate_broadcast_into(scope, buffer);
            self.wait(request, "a broadcast from rank 0 (MPI_Ibcast)");
        });
        Ok(())
    }
}

/// How many non-blocking sums may be in flight at once; starting one more first waits for
/// the oldest (`DataParallel` makes at most this many buckets, so it never does).
const MAX_PENDING: usize = 64;

/// The sums started inside one [`World::overlap`] call: `MPI_Iallreduce` requests in a ring
/// of fixed size (no allocation per step).
struct MpiPending<'w, 'x, 's, T: Equivalence> {
    world: &'w World,
    scope: &'x LocalScope<'s>,
    requests: [Option<Request<'s, [T], &'x LocalScope<'s>>>; MAX_PENDING],
    started: usize,
}

impl<'b: 's, 's, T: Equivalence> PendingSums<'b, T> for MpiPending<'_, '_, 's, T> {
    fn start(&mut self, send: &'b [T], recv: &'b mut [T]) -> Result<()> {
        check_lengths(self.world.rank, send.len(), recv.len())?;
        let slot = self.started % MAX_PENDING;
        if let Some(oldest) = self.requests[slot].take() {
            self.world
                .wait(oldest, "a gradient bucket all-reduce (MPI_Iallreduce)");
        }
        self.requests[slot] = Some(self.world.comm.immediate_all_reduce_into(
            self.scope,
            send,
            recv,
            mpi::collective::SystemOperation::sum(),
        ));
        self.started += 1;
        // Open MPI moves a non-blocking collective on only inside MPI calls: testing the
        // pending ones here lets them progress at every bucket the backward pass completes.
        for request in &mut self.requests {
            if let Some(r) = request.take() {
                *request = r.test().err();
            }
        }
        Ok(())
    }
}

/// Writes `line` to standard error in one piece, before the caller aborts the job. `eprintln!`
/// writes each piece of its format separately (standard error is unbuffered), and `mpirun`
/// forwards each write as it comes: its own notice of the abort could land between the pieces.
fn report(line: &str) {
    use std::io::Write;
    // Nothing to do if standard error is gone: the job is being aborted either way.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

impl Drop for World {
    /// A rank unwinding from a panic aborts the job: finalising MPI would wait for ranks that
    /// are themselves waiting for this one in a collective.
    fn drop(&mut self) {
        if std::thread::panicking() && self.size > 1 {
            report(&format!(
                "kiln::distributed: rank {} of {} panicked; aborting every rank\n",
                self.rank, self.size
            ));
            self.comm.abort(PANIC_EXIT_CODE);
        }
    }
}

impl Communicator for World {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn all_reduce_sum_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        self.all_reduce(send, recv)
    }
    fn all_reduce_sum_f64(&self, send: &[f64], recv: &mut [f64]) -> Result<()> {
        self.all_reduce(send, recv)
    }
    fn broadcast_f32(&self, buffer: &mut [f32]) -> Result<()> {
        self.broadcast(buffer)
    }
    fn broadcast_f64(&self, buffer: &mut [f64]) -> Result<()> {
        self.broadcast(buffer)
    }
    fn overlap_f32<'b>(
        &self,
        body: &mut dyn FnMut(&mut dyn PendingSums<'b, f32>) -> Result<()>,
    ) -> Result<()> {
        self.overlap(body)
    }
    fn overlap_f64<'b>(
        &self,
        body: &mut dyn FnMut(&mut dyn PendingSums<'b, f64>) -> Result<()>,
    ) -> Result<()> {
        self.overlap(body)
    }
}
