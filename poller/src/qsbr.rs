//! Quiescent-state-based reclamation (QSBR): the reactors' half of RCU.
//!
//! Every reactor owns one counter on its own cache line and bumps it once per
//! loop iteration, between callbacks, when it holds no reference into any
//! RCU-published structure. A writer that unpublished something waits for a
//! *grace period*: every online reactor has bumped its counter at least once
//! since the writer's fence. Whatever the reactors could see before that is
//! then unreachable and may be reclaimed.
//!
//! Readers pay one store and one fence per loop iteration, never per I/O.
//! The publish / grace period / reclaim sequence built on it is modelled
//! with loom where it lives, in `pollux-graph` (its `rcu` and `pin` tests),
//! which is why this module is public under `cfg(loom)`.

use crate::sync::{fence, AtomicU64, Ordering};

/// Counter value of a reactor that left its loop: it holds no references and
/// never will again, so writers do not wait for it.
const OFFLINE: u64 = u64::MAX;

/// One reactor's quiescent-state counter. Written only by its reactor.
pub struct QsCounter {
    count: AtomicU64,
}

impl Default for QsCounter {
    fn default() -> Self {
        QsCounter::new()
    }
}

impl QsCounter {
    /// A counter of an online reactor that has passed no quiescent point.
    pub fn new() -> Self {
        QsCounter {
            count: AtomicU64::new(0),
        }
    }

    /// Reactor side: "I hold no RCU references right now".
    ///
    /// The Release store keeps every read of published data from the finished
    /// iteration before the bump; the fence keeps the next iteration's reads
    /// after it, so a writer that sees the bump knows the reactor's next look
    /// at a published pointer will see the writer's newer value.
    #[inline]
    pub fn quiescent(&self) {
        let c = self.count.load(Ordering::Relaxed);
        self.count
            .store(c.wrapping_add(1) % OFFLINE, Ordering::Release);
        fence(Ordering::SeqCst);
    }

    /// Reactor side: the reactor leaves its loop for good.
    pub fn go_offline(&self) {
        self.count.store(OFFLINE, Ordering::Release);
    }

    /// Writer side: the counter's current value.
    pub fn read(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }
}

/// Writer side: a grace period in progress over a set of counters.
///
/// Begin it *after* the new value is published; `pending` yields nothing
/// once each online reactor has passed a quiescent point since then (or gone
/// offline). `wait` runs the whole loop.
pub struct GracePeriod {
    start: Vec<u64>,
}

impl GracePeriod {
    /// Starts a grace period: records where each counter stands now.
    pub fn begin<'a>(counters: impl Iterator<Item = &'a QsCounter>) -> Self {
        // Orders the writer's publish (a store) before its reads of the
        // counters: pairs with the fence in `QsCounter::quiescent`.
        fence(Ordering::SeqCst);
        GracePeriod {
            start: counters.map(QsCounter::read).collect(),
        }
    }

    /// Waits for a whole grace period over the counters `counters` yields
    /// (called afresh for each look): begins one, then calls `wait` with
    /// the indexes of the reactors still to pass a quiescent point until
    /// there are none. `wait` is where the caller wakes sleepers and backs
    /// off (`Handle::synchronize`) or yields to the model's scheduler.
    pub fn wait<'a, I>(counters: impl Fn() -> I, mut wait: impl FnMut(&[usize]))
    where
        I: Iterator<Item = &'a QsCounter>,
    {
        let mut gp = GracePeriod::begin(counters());
        loop {
            let pending: Vec<usize> = gp.pending(counters()).collect();
            if pending.is_empty() {
                return;
            }
            wait(&pending);
        }
    }

    /// Reactors that still have to pass a quiescent point (by index).
    pub fn pending<'a>(
        &mut self,
        counters: impl Iterator<Item = &'a QsCounter>,
    ) -> impl Iterator<Item = usize> + '_ {
        let now: Vec<u64> = counters.map(QsCounter::read).collect();
        self.start
            .iter_mut()
            .zip(now)
            .enumerate()
            .filter_map(|(i, (start, now))| {
                if *start == OFFLINE || now != *start {
                    // Done for this reactor: remember it so a later call does
                    // not depend on the counter staying different.
                    *start = OFFLINE;
                    None
                } else {
                    Some(i)
                }
            })
    }
}
