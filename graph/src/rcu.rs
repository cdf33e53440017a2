//! The publication protocol of the graph, on its own so that loom can run
//! it: one pointer to the current version, readers that load it with no
//! lock and no write, and serialized writers that publish a new version and
//! get the old one back only after a grace period.
//!
//! `Graph` is this plus a runtime: its grace period is `Handle::synchronize`
//! and its versions are `Snapshot`s. The loom models below run the same
//! code with the poller's real quiescent-state counters in place of
//! reactors.

use std::marker::PhantomData;

use pollux_poller::sync::{AtomicPtr, Mutex, MutexGuard, Ordering};

/// An RCU-published value: the current version of a `T`.
pub(crate) struct Rcu<T> {
    current: AtomicPtr<T>,
    writer: Mutex<()>,
    /// Readers on any thread borrow the `T` and writers drop old versions on
    /// theirs, exactly what an `RwLock<T>` allows: `Rcu<T>` is `Sync` only
    /// if `T` is `Send + Sync`, and `Send` if `T` is (the raw pointer alone
    /// would claim both for any `T`).
    _owns: PhantomData<std::sync::RwLock<Box<T>>>,
    /// Model-only fault: `publish` hands the old version back without waiting
    /// for the grace period, which the models must catch.
    #[cfg(loom)]
    skip_grace_period: bool,
}

/// A writer: holds the writer lock, so the current version cannot be freed
/// or replaced by anyone else while it exists.
pub(crate) struct Writer<'a, T> {
    rcu: &'a Rcu<T>,
    _lock: MutexGuard<'a, ()>,
}

impl<T> Rcu<T> {
    pub(crate) fn new(first: T) -> Self {
        Rcu {
            current: AtomicPtr::new(Box::into_raw(Box::new(first))),
            writer: Mutex::new(()),
            _owns: PhantomData,
            #[cfg(loom)]
            skip_grace_period: false,
        }
    }

    /// The same, with the grace period skipped (model twin only).
    #[cfg(loom)]
    pub(crate) fn skipping_grace_period(first: T) -> Self {
        let mut rcu = Rcu::new(first);
        rcu.skip_grace_period = true;
        rcu
    }

    /// The current version, for a reader: one Acquire load.
    ///
    /// # Safety
    /// The caller must be in a read-side critical section of a reader that
    /// the grace periods passed to `Writer::publish` wait for (a reactor
    /// between two quiescent points), and must not use the borrow after the
    /// section ends: a writer may free the version right after.
    #[inline]
    pub(crate) unsafe fn read_unchecked(&self) -> &T {
        let p = self.current.load(Ordering::Acquire);
        // SAFETY: `p` came from Box::into_raw (`new` or `publish`). It is
        // freed only by `Rcu`'s drop (ruled out by `&self`) or by whoever
        // `publish` hands it back to, and that happens only after a grace
        // period which, by the caller's contract, waits for this reader to
        // leave its critical section.
        unsafe { &*p }
    }

    /// Serializes against other writers, for a change or a consistent read.
    pub(crate) fn lock(&self) -> Writer<'_, T> {
        // A writer that panicked left the published version intact (changes
        // are built aside and published with one store), so the lock's
        // poisoning carries no broken state.
        let lock = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        Writer {
            rcu: self,
            _lock: lock,
        }
    }

    /// The current version, with exclusive access (teardown).
    pub(crate) fn get_mut(&mut self) -> &mut T {
        let p = self.current.load(Ordering::Acquire);
        // SAFETY: `&mut self` rules out every reader (their borrows are of
        // `self`) and writer; `p` came from Box::into_raw and is owned by us.
        unsafe { &mut *p }
    }
}

impl<T> Writer<'_, T> {
    /// The current version. Only writers replace it, and we hold the lock.
    pub(crate) fn current(&self) -> &T {
        let p = self.rcu.current.load(Ordering::Acquire);
        // SAFETY: `p` came from Box::into_raw; only a writer (we hold the
        // lock) or `Rcu`'s drop (ruled out by the borrow of the `Rcu`)
        // frees it, and the borrow ends with `self`, before our next
        // `publish` (which takes `&mut self`).
        unsafe { &*p }
    }

    /// Publishes `next` with one store, runs `grace_period` (which must
    /// return only once every reader that could have loaded the old version
    /// has left its critical section), then hands the old version back: no
    /// reader can reach it any more, the caller owns it outright.
    pub(crate) fn publish(&mut self, next: T, grace_period: impl FnOnce()) -> Box<T> {
        let new = Box::into_raw(Box::new(next));
        // Release: a reader that loads `new` sees it fully built. AcqRel
        // rather than Release only because it is a swap; writers are
        // serialized by the lock anyway.
        let old = self.rcu.current.swap(new, Ordering::AcqRel);
        #[cfg(loom)]
        let grace_period = || {
            if !self.rcu.skip_grace_period {
                grace_period();
            }
        };
        grace_period();
        // SAFETY: `old` came from Box::into_raw and is no longer published;
        // no other writer can free it (we hold the lock). Readers borrow a
        // version only inside a critical section, and the grace period just
        // waited for every reader to leave the one in which it could have
        // loaded `old`.
        unsafe { Box::from_raw(old) }
    }
}

impl<T> Drop for Rcu<T> {
    fn drop(&mut self) {
        let p = self.current.load(Ordering::Acquire);
        // SAFETY: `&mut self`: no reader or writer is left (their borrows
        // are of `self`), and `p` came from Box::into_raw.
        drop(unsafe { Box::from_raw(p) });
    }
}

#[cfg(all(test, loom))]
mod tests {
    //! Run with: RUSTFLAGS="--cfg loom" cargo test -p pollux-graph --release --lib loom
    //!
    //! One reader plays a reactor: each loop iteration reads the published
    //! version, then passes a quiescent point (the poller's real
    //! `QsCounter`). The writer publishes a new version through the real
    //! `Writer::publish` with the poller's real `GracePeriod::wait` as the
    //! grace period, and marks the version it gets back reclaimed. The
    //! reader must never see a reclaimed version.
    use super::*;
    use loom::thread;
    use pollux_poller::qsbr::{GracePeriod, QsCounter};
    use pollux_poller::sync::{Arc, AtomicBool};

    /// A version that knows whether it was reclaimed. The model keeps the
    /// memory until every thread is joined, so a reader that got it too
    /// late reads the mark rather than freed memory.
    struct Version {
        reclaimed: AtomicBool,
    }

    fn version() -> Version {
        Version {
            reclaimed: AtomicBool::new(false),
        }
    }

    fn model(iters: usize, rcu: fn(Version) -> Rcu<Version>) {
        loom::model(move || {
            let rcu = Arc::new(rcu(version()));
            let qs = Arc::new(QsCounter::new());

            let (r2, q2) = (rcu.clone(), qs.clone());
            let reader = thread::spawn(move || {
                for _ in 0..iters {
                    // SAFETY: between two quiescent points of `q2`, which
                    // the writer's grace period waits for.
                    let v = unsafe { r2.read_unchecked() };
                    assert!(
                        !v.reclaimed.load(Ordering::Relaxed),
                        "reader saw a reclaimed version"
                    );
                    q2.quiescent();
                }
                q2.go_offline();
            });

            let old = rcu.lock().publish(version(), || {
                GracePeriod::wait(|| std::iter::once(&*qs), |_| thread::yield_now())
            });
            old.reclaimed.store(true, Ordering::Relaxed);

            reader.join().unwrap();
            drop(old);
        });
    }

    #[test]
    fn loom_publish_grace_period_reclaim_one_iteration() {
        model(1, Rcu::new);
    }

    #[test]
    fn loom_publish_grace_period_reclaim_two_iterations() {
        model(2, Rcu::new);
    }

    /// Without the grace period the model must catch the use-after-reclaim.
    #[test]
    #[should_panic(expected = "reader saw a reclaimed version")]
    fn loom_finds_reclaim_without_grace_period() {
        model(1, Rcu::skipping_grace_period);
    }
}
