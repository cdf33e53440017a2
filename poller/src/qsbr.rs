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
//! `tests::loom_*` model the publish / grace period / reclaim sequence.

use crate::sync::{fence, AtomicU64, Ordering};

/// Counter value of a reactor that left its loop: it holds no references and
/// never will again, so writers do not wait for it.
const OFFLINE: u64 = u64::MAX;

/// One reactor's quiescent-state counter. Written only by its reactor.
pub(crate) struct QsCounter {
    count: AtomicU64,
}

impl QsCounter {
    pub(crate) fn new() -> Self {
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
    pub(crate) fn quiescent(&self) {
        let c = self.count.load(Ordering::Relaxed);
        self.count
            .store(c.wrapping_add(1) % OFFLINE, Ordering::Release);
        fence(Ordering::SeqCst);
    }

    /// Reactor side: the reactor leaves its loop for good.
    pub(crate) fn go_offline(&self) {
        self.count.store(OFFLINE, Ordering::Release);
    }

    pub(crate) fn read(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }
}

/// Writer side: a grace period in progress over a set of counters.
///
/// Begin it *after* the new value is published; `pending` yields nothing
/// once each online reactor has passed a quiescent point since then (or gone
/// offline).
pub(crate) struct GracePeriod {
    start: Vec<u64>,
}

impl GracePeriod {
    pub(crate) fn begin<'a>(counters: impl Iterator<Item = &'a QsCounter>) -> Self {
        // Orders the writer's publish (a store) before its reads of the
        // counters: pairs with the fence in `QsCounter::quiescent`.
        fence(Ordering::SeqCst);
        GracePeriod {
            start: counters.map(QsCounter::read).collect(),
        }
    }

    /// Reactors that still have to pass a quiescent point (by index).
    pub(crate) fn pending<'a>(
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

#[cfg(all(test, loom))]
mod tests {
    //! Run with: RUSTFLAGS="--cfg loom" cargo test -p pollux-poller --release --lib loom
    use super::*;
    use loom::sync::atomic::{AtomicPtr, AtomicUsize};
    use loom::sync::Arc;
    use loom::thread;

    /// A published value: `alive` is 1 until reclaimed, so a reader that
    /// dereferences reclaimed memory is detected.
    struct Obj {
        alive: AtomicUsize,
    }

    /// One reader (a reactor) does `iters` loop iterations, each reading the
    /// published object then passing a quiescent point; one writer publishes
    /// a new object, waits for a grace period and "frees" the old one. The
    /// reader must never see a freed object.
    fn model(iters: usize) {
        loom::model(move || {
            let a = Box::into_raw(Box::new(Obj {
                alive: AtomicUsize::new(1),
            }));
            let b = Box::into_raw(Box::new(Obj {
                alive: AtomicUsize::new(1),
            }));
            let published = Arc::new(AtomicPtr::new(a));
            let qs = Arc::new(QsCounter::new());

            let (p2, q2) = (published.clone(), qs.clone());
            let reader = thread::spawn(move || {
                for _ in 0..iters {
                    let p = p2.load(Ordering::Acquire);
                    // SAFETY: the object is reclaimed (alive = 0) but never
                    // deallocated inside the model, so the load is in bounds;
                    // the assertion is what checks the protocol.
                    let alive = unsafe { (*p).alive.load(Ordering::Relaxed) };
                    assert_eq!(alive, 1, "reader saw a reclaimed object");
                    q2.quiescent();
                }
                q2.go_offline();
            });

            // Writer: publish, grace period, reclaim.
            let old = published.swap(b, Ordering::AcqRel);
            let mut gp = GracePeriod::begin(std::iter::once(&*qs));
            while gp.pending(std::iter::once(&*qs)).count() > 0 {
                thread::yield_now();
            }
            // SAFETY: `old` came from Box::into_raw above and is only marked
            // dead here, not deallocated, so the reader's accesses stay valid.
            unsafe { (*old).alive.store(0, Ordering::Relaxed) };

            reader.join().unwrap();
            // SAFETY: both pointers came from Box::into_raw and every thread
            // that used them has been joined.
            unsafe {
                drop(Box::from_raw(a));
                drop(Box::from_raw(b));
            }
        });
    }

    #[test]
    fn loom_grace_period_one_iteration() {
        model(1);
    }

    #[test]
    fn loom_grace_period_two_iterations() {
        model(2);
    }

    /// The graph's node lifetime rule: an I/O pins the node it found (the
    /// owning reactor bumps the node's in-flight count before its next
    /// quiescent point) and may use it for many iterations. The writer
    /// unpublishes the node, waits for a grace period, then for the count to
    /// read zero, and only then closes it. The reader must never use a
    /// closed node.
    fn inflight_model(wait_for_inflight: bool) {
        struct Node {
            alive: AtomicUsize,
            inflight: loom::sync::atomic::AtomicU64,
        }
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(3);
        b.check(move || {
            let mk = || {
                Box::into_raw(Box::new(Node {
                    alive: AtomicUsize::new(1),
                    inflight: loom::sync::atomic::AtomicU64::new(0),
                }))
            };
            let (a, b) = (mk(), mk());
            let published = Arc::new(AtomicPtr::new(a));
            let qs = Arc::new(QsCounter::new());
            let (p2, q2) = (published.clone(), qs.clone());
            let reader = thread::spawn(move || {
                // Iteration 1: find the node and pin it (owner-only counter).
                let p = p2.load(Ordering::Acquire);
                // SAFETY: nodes are marked dead, never freed, inside the model.
                let node = unsafe { &*p };
                let n = node.inflight.load(Ordering::Relaxed);
                node.inflight.store(n + 1, Ordering::Relaxed);
                q2.quiescent();
                // Iteration 2: the I/O completes; the node must still be open.
                assert_eq!(node.alive.load(Ordering::Relaxed), 1, "used a closed node");
                let n = node.inflight.load(Ordering::Relaxed);
                node.inflight.store(n - 1, Ordering::Release);
                q2.quiescent();
                q2.go_offline();
            });
            let old = published.swap(b, Ordering::AcqRel);
            let mut gp = GracePeriod::begin(std::iter::once(&*qs));
            while gp.pending(std::iter::once(&*qs)).count() > 0 {
                thread::yield_now();
            }
            // SAFETY: as above.
            let old_node = unsafe { &*old };
            while wait_for_inflight && old_node.inflight.load(Ordering::Acquire) != 0 {
                thread::yield_now();
            }
            old_node.alive.store(0, Ordering::Relaxed);
            reader.join().unwrap();
            // SAFETY: both came from Box::into_raw; all users are joined.
            unsafe {
                drop(Box::from_raw(a));
                drop(Box::from_raw(b));
            }
        });
    }

    #[test]
    fn loom_inflight_pin_outlives_grace_period() {
        inflight_model(true);
    }

    /// The grace period alone does not protect an I/O that outlives its
    /// iteration: skipping the in-flight wait must be caught.
    #[test]
    #[should_panic(expected = "used a closed node")]
    fn loom_finds_close_without_inflight_wait() {
        inflight_model(false);
    }

    /// Without the grace period the model must catch the use-after-reclaim.
    #[test]
    #[should_panic(expected = "reader saw a reclaimed object")]
    fn loom_finds_reclaim_without_grace_period() {
        loom::model(|| {
            let a = Box::into_raw(Box::new(Obj {
                alive: AtomicUsize::new(1),
            }));
            let b = Box::into_raw(Box::new(Obj {
                alive: AtomicUsize::new(1),
            }));
            let published = Arc::new(AtomicPtr::new(a));
            let p2 = published.clone();
            let reader = thread::spawn(move || {
                let p = p2.load(Ordering::Acquire);
                // SAFETY: as above, objects are never deallocated in the model.
                let alive = unsafe { (*p).alive.load(Ordering::Relaxed) };
                assert_eq!(alive, 1, "reader saw a reclaimed object");
            });
            let old = published.swap(b, Ordering::AcqRel);
            // SAFETY: as above.
            unsafe { (*old).alive.store(0, Ordering::Relaxed) };
            reader.join().unwrap();
            // SAFETY: as above.
            unsafe {
                drop(Box::from_raw(a));
                drop(Box::from_raw(b));
            }
        });
    }
}
