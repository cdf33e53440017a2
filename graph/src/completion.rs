//! Deferred completions: I/O that a synchronous backend finished inside
//! `execute` is completed on the reactor's next loop iteration instead.

use std::cell::{Cell, RefCell};
use std::ptr::NonNull;

use pollux_poller::{PollStatus, Reactor};

use crate::io::{Io, IoError, IoResult};

/// Completions of synchronous backends, run on the next loop iteration so
/// that a sink which resubmits from `io_done` does not recurse.
///
/// Successes and failures wait apart, so that the common entry is the `Io`
/// alone (128 bytes, moved without a `memcpy` call) rather than an `Io`
/// beside a 32-byte `IoResult`. Completion order is not promised across
/// I/Os, and each queue keeps its own order.
struct Deferred {
    ok: RefCell<Vec<Io>>,
    failed: RefCell<Vec<(Io, IoError)>>,
    /// The batch being completed, kept between passes for its capacity:
    /// the drain swaps it with `ok`, so that completions queued by the
    /// sinks it calls go to the next pass without a pop per I/O.
    spare: RefCell<Vec<Io>>,
}

/// About one loaded queue pair's depth of synchronous completions per
/// iteration, so the queues rarely grow on the data path; they still grow
/// when needed.
const INITIAL_CAPACITY: usize = 256;

#[inline]
pub(crate) fn defer_completion(r: &Reactor, io: Io, result: IoResult) {
    with_deferred(r, |d| match result {
        Ok(()) => d.ok.borrow_mut().push(io),
        Err(e) => d.failed.borrow_mut().push((io, e)),
    });
}

thread_local! {
    /// The queue of the reactor that last deferred on this thread, keyed by
    /// its runtime and index: `Reactor::local` scans a list and downcasts
    /// on every call, which showed as a few percent of a null read, and a
    /// `Weak` here still cost an upgrade and a drop per I/O. Cleared by the
    /// queue's `Drop`, so it never points at a dropped queue.
    static LAST: Cell<Option<(u64, usize, NonNull<Deferred>)>> = const { Cell::new(None) };
}

#[inline]
fn with_deferred<T>(r: &Reactor, f: impl FnOnce(&Deferred) -> T) -> T {
    let (rt, index) = (r.runtime_id(), r.index());
    if let Some((k_rt, k_index, p)) = LAST.get() {
        if (k_rt, k_index) == (rt, index) {
            // SAFETY: `LAST` holds a pointer only to a live `Deferred` of
            // this thread: it is set below from the reactor-local `Rc`,
            // which the reactor keeps until it drops its locals, on this
            // thread (`Deferred` holds `Io`s, so it is not `Send` and cannot
            // be dropped elsewhere), and `Deferred::drop` clears it. The
            // reactor drops its locals only after its last callback, so the
            // queue outlives this borrow, which ends with `f`.
            return f(unsafe { p.as_ref() });
        }
    }
    let d = r.local(|r| {
        r.register_poller(drain_deferred);
        Deferred {
            ok: RefCell::new(Vec::with_capacity(INITIAL_CAPACITY)),
            failed: RefCell::new(Vec::new()),
            spare: RefCell::new(Vec::with_capacity(INITIAL_CAPACITY)),
        }
    });
    LAST.set(Some((rt, index, NonNull::from(&*d))));
    f(&d)
}

impl Drop for Deferred {
    fn drop(&mut self) {
        let me = NonNull::from(&*self);
        // `try_with`: a reactor's locals may drop while its thread exits.
        let _ = LAST.try_with(|last| {
            if matches!(last.get(), Some((_, _, p)) if p == me) {
                last.set(None);
            }
        });
    }
}

fn drain_deferred(r: &Reactor) -> PollStatus {
    with_deferred(r, |d| {
        // Only what was queued before this call: completions queued by the
        // sinks we call now wait for the next iteration, bounding the work
        // per poll.
        if d.ok.borrow().is_empty() && d.failed.borrow().is_empty() {
            return PollStatus::Idle;
        }
        let mut batch = std::mem::take(&mut *d.spare.borrow_mut());
        std::mem::swap(&mut batch, &mut *d.ok.borrow_mut());
        let failed = std::mem::take(&mut *d.failed.borrow_mut());
        crate::latency::batch(|| {
            for io in batch.drain(..) {
                io.complete(r, Ok(()));
            }
            for (io, e) in failed {
                io.complete(r, Err(e));
            }
        });
        *d.spare.borrow_mut() = batch;
        PollStatus::Busy
    })
}
