//! Deferred completions: I/O that a synchronous backend finished inside
//! `execute` is completed on the reactor's next loop iteration instead.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::{Rc, Weak};

use pollux_poller::{PollStatus, Reactor};

use crate::io::{Io, IoResult};

/// Completions of synchronous backends, run on the next loop iteration so
/// that a sink which resubmits from `io_done` does not recurse.
struct Deferred {
    queue: RefCell<VecDeque<(Io, IoResult)>>,
}

pub(crate) fn defer_completion(r: &Reactor, io: Io, result: IoResult) {
    let d = deferred(r);
    d.queue.borrow_mut().push_back((io, result));
}

thread_local! {
    /// The queue of the reactor that last deferred on this thread, keyed by
    /// its runtime and index: `Reactor::local` scans a list and downcasts
    /// on every call, which showed as a few percent of a null read. Weak,
    /// so a dropped reactor's queue is not kept (nor found) through it.
    static LAST: RefCell<Option<(u64, usize, Weak<Deferred>)>> = const { RefCell::new(None) };
}

#[inline]
fn deferred(r: &Reactor) -> Rc<Deferred> {
    let key = (r.runtime_id(), r.index());
    let hit = LAST.with_borrow(|last| match last {
        Some((rt, i, w)) if (*rt, *i) == key => w.upgrade(),
        _ => None,
    });
    if let Some(d) = hit {
        return d;
    }
    let d = r.local(|r| {
        r.register_poller(drain_deferred);
        Deferred {
            // About one loaded queue pair's depth of synchronous completions
            // per iteration, so the queue rarely grows on the data path; it
            // still grows when needed.
            queue: RefCell::new(VecDeque::with_capacity(256)),
        }
    });
    LAST.set(Some((key.0, key.1, Rc::downgrade(&d))));
    d
}

fn drain_deferred(r: &Reactor) -> PollStatus {
    // Registered by `deferred`, so the queue exists; the cache spares the
    // scan on every pass of the reactor.
    let d = deferred(r);
    // Only what was queued before this call: completions queued by the sinks
    // we call now wait for the next iteration, bounding the work per poll.
    let n = d.queue.borrow().len();
    for _ in 0..n {
        let Some((io, result)) = d.queue.borrow_mut().pop_front() else {
            break;
        };
        io.complete(r, result);
    }
    if n > 0 {
        PollStatus::Busy
    } else {
        PollStatus::Idle
    }
}
