//! Per-reactor statistics, written only by the owning reactor.
//!
//! Each reactor updates its counters with `sync::single_writer_add` (a
//! relaxed load and store, no read-modify-write: there is one writer) on a
//! cache line nobody else writes, so other threads can read them at any time
//! without stopping the reactor.

use crate::sync::{single_writer_add, AtomicU64, Ordering};

/// Live counters of one reactor.
#[derive(Default)]
pub(crate) struct ReactorStats {
    polls: AtomicU64,
    busy_ns: AtomicU64,
    idle_ns: AtomicU64,
    messages: AtomicU64,
}

impl ReactorStats {
    #[inline]
    pub(crate) fn record_iteration(&self, busy: bool, ns: u64) {
        single_writer_add(&self.polls, 1);
        single_writer_add(if busy { &self.busy_ns } else { &self.idle_ns }, ns);
    }

    #[inline]
    pub(crate) fn record_idle(&self, ns: u64) {
        single_writer_add(&self.idle_ns, ns);
    }

    #[inline]
    pub(crate) fn record_messages(&self, n: u64) {
        single_writer_add(&self.messages, n);
    }

    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            polls: self.polls.load(Ordering::Relaxed),
            busy_ns: self.busy_ns.load(Ordering::Relaxed),
            idle_ns: self.idle_ns.load(Ordering::Relaxed),
            messages: self.messages.load(Ordering::Relaxed),
        }
    }
}

/// A point-in-time copy of a reactor's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Loop iterations.
    pub polls: u64,
    /// Time spent in iterations that found work.
    pub busy_ns: u64,
    /// Time spent in iterations that found none, including sleep.
    pub idle_ns: u64,
    /// Messages taken from the inbox.
    pub messages: u64,
}
