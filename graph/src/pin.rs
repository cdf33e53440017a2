//! In-flight pins: the nodes an I/O went through, each counted in flight
//! on its reactor until the I/O completes.
//!
//! Pinning is what lets the control plane free a removed node without a
//! global drain: each node counts its in-flight I/O per reactor, in a counter
//! only that reactor writes. The writer unpublishes the node, waits one grace
//! period (no reactor can reach it any more), then waits until every
//! reactor's counter for that node reads zero.

use std::ptr::NonNull;

use crossbeam_utils::CachePadded;
use pollux_poller::sync::{single_writer_add, AtomicU64, Ordering};
use pollux_poller::Reactor;

use crate::io::{IoError, IoOp, MAX_DEPTH};
use crate::latency::{self, LatencyShard};

/// One reactor's counters for one node. Written only by that reactor.
#[derive(Default)]
pub(crate) struct NodeCounters {
    pub(crate) inflight: AtomicU64,
    pub(crate) ops: [AtomicU64; 5],
    pub(crate) bytes: [AtomicU64; 5],
    pub(crate) errors: [AtomicU64; 5],
    /// Latency of successful I/O by op, from submission to completion.
    pub(crate) latency: [LatencyShard; 5],
}

/// The type-independent part of a node: its identity and counters.
pub(crate) struct NodeCore {
    pub(crate) name: String,
    pub(crate) counters: Box<[CachePadded<NodeCounters>]>,
}

impl NodeCore {
    pub(crate) fn new(name: String, reactors: usize) -> Self {
        NodeCore {
            name,
            counters: (0..reactors).map(|_| CachePadded::default()).collect(),
        }
    }

    /// In-flight I/O summed over reactors (control thread).
    pub(crate) fn inflight(&self) -> u64 {
        self.counters
            .iter()
            .map(|c| c.inflight.load(Ordering::Acquire))
            .sum()
    }
}

/// The nodes an I/O went through, each pinned (counted in flight on the
/// submitting reactor) until the I/O completes.
#[derive(Default)]
pub(crate) struct Path {
    nodes: [Option<NonNull<NodeCore>>; MAX_DEPTH],
    len: usize,
}

impl Path {
    /// Pins `core` for this I/O on reactor `r`.
    #[inline]
    pub(crate) fn push(&mut self, r: &Reactor, core: &NodeCore) -> Result<(), IoError> {
        if self.len == MAX_DEPTH {
            // The graph refuses deeper paths; this is a second line of defence.
            return Err(IoError::NoDevice);
        }
        single_writer_add(&core.counters[r.index()].inflight, 1);
        self.nodes[self.len] = Some(NonNull::from(core));
        self.len += 1;
        Ok(())
    }

    /// Accounts the finished I/O on every pinned node and unpins them.
    /// `submitted` is the raw clock reading taken when it entered the graph.
    /// Returns the latency recorded (0 for failed I/O).
    #[inline]
    pub(crate) fn finish(
        &mut self,
        r: &Reactor,
        op: IoOp,
        len: u64,
        ok: bool,
        submitted: u64,
    ) -> u64 {
        let i = op.as_index();
        // One clock read per I/O, however many nodes it went through: every
        // node on the path sees the latency from submission, as the caller
        // of that node would.
        let ns = if ok && self.len > 0 {
            latency::elapsed_ns(submitted)
        } else {
            0
        };
        for slot in &mut self.nodes[..self.len] {
            let Some(p) = slot.take() else { continue };
            // SAFETY: the node's only owners are the published snapshot and,
            // while it drains, the writer (snapshots cannot be cloned or owned
            // outside the graph, see `Snapshot`). The writer frees it only
            // after it left the published graph, a grace period passed and
            // every reactor's `inflight` for it read zero (`Graph::update`);
            // `Graph`'s drop frees it only if `inflight` reads zero and leaks
            // it otherwise. This I/O incremented `inflight` on this reactor
            // (the only one that completes it: `Io` is not `Send`) when it
            // pinned the node and has not decremented it yet, so the node is
            // alive.
            let core = unsafe { p.as_ref() };
            let c = &core.counters[r.index()];
            if ok {
                single_writer_add(&c.ops[i], 1);
                single_writer_add(&c.bytes[i], len);
                c.latency[i].record(ns);
            } else {
                single_writer_add(&c.errors[i], 1);
            }
            // Release: the node's reclaimer reads zero only after everything
            // this I/O did with the node (hence not `single_writer_add`,
            // whose store is Relaxed).
            let n = c.inflight.load(Ordering::Relaxed);
            c.inflight.store(n - 1, Ordering::Release);
        }
        self.len = 0;
        ns
    }
}

impl Drop for Path {
    fn drop(&mut self) {
        // An Io dropped without completing would leave its nodes pinned
        // forever and their removal would hang; make that loud in tests.
        debug_assert!(self.len == 0, "I/O dropped without completion");
    }
}
