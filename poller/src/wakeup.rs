//! Sleeping without losing a wakeup.
//!
//! An idle reactor in `adaptive` mode blocks in `epoll_wait`; any thread that
//! hands it work (a message, a broadcast, a grace-period request) must wake it.
//! This is a Dekker-style handshake between two flags:
//!
//! * the sleeper publishes `sleeping = true`, issues a full fence, and only then
//!   looks at its work sources one last time;
//! * a producer makes its work visible, issues a full fence, and only then looks
//!   at `sleeping`.
//!
//! With both fences, at least one side sees the other: either the sleeper sees
//! the work and does not sleep, or the producer sees `sleeping` and kicks the
//! eventfd (which stays readable until consumed, so a kick that lands before
//! `epoll_wait` is not lost). QEMU's 2015 hang (commit eabc9779) came from a
//! flag that answered "is the loop dispatching?" instead of "is the loop about
//! to block?": the producer skipped the kick while the consumer was on its way
//! to sleep. Here the flag means exactly "I may block", and is set before the
//! last check. `tests::loom_*` model-check this code, including a deliberately
//! broken variant to show the model catches a lost wakeup.

use crate::sync::{fence, AtomicBool, Ordering};

/// The kick primitive: an eventfd on Linux, a modelled event under loom.
pub(crate) trait Kick {
    /// Makes the next (or current) `wait` return. Idempotent until consumed.
    fn kick(&self);
}

/// The sleep/wakeup handshake state of one reactor.
pub(crate) struct Wakeup<K: Kick> {
    /// True while the owner may be blocked or about to block. Written only by
    /// the owner; read by producers. It lives on its own cache line (see
    /// `ReactorShared`) so producers reading it never contend with counters.
    sleeping: AtomicBool,
    kick: K,
}

impl<K: Kick> Wakeup<K> {
    pub(crate) fn new(kick: K) -> Self {
        Wakeup {
            sleeping: AtomicBool::new(false),
            kick,
        }
    }

    pub(crate) fn kicker(&self) -> &K {
        &self.kick
    }

    /// Producer side: call after the work is visible (pushed to the inbox).
    pub(crate) fn notify(&self) {
        // Orders the producer's publication of work before its read of
        // `sleeping` (store->load ordering needs a full fence).
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed) {
            self.kick.kick();
        }
    }

    /// Owner side, step 1: announce the intent to sleep, then re-check for
    /// work with `has_work`. Returns true if the caller may block; false if
    /// work arrived (the flag is already cleared then).
    pub(crate) fn prepare_sleep(&self, has_work: impl FnOnce() -> bool) -> bool {
        self.sleeping.store(true, Ordering::Relaxed);
        // Orders the store of `sleeping` before the loads in `has_work`.
        fence(Ordering::SeqCst);
        if has_work() {
            self.sleeping.store(false, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Owner side, step 2: after waking (or deciding not to block).
    pub(crate) fn finish_sleep(&self) {
        self.sleeping.store(false, Ordering::Relaxed);
    }
}

#[cfg(not(loom))]
pub(crate) use eventfd::EventFd;

#[cfg(not(loom))]
mod eventfd {
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

    /// A non-blocking eventfd used as the reactor's doorbell.
    pub(crate) struct EventFd(OwnedFd);

    impl EventFd {
        pub(crate) fn new() -> io::Result<Self> {
            // SAFETY: eventfd has no memory-safety preconditions; the result is
            // checked before it is wrapped.
            let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `fd` is a freshly created descriptor that nothing else owns.
            Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
        }

        /// Consumes pending kicks so the next `epoll_wait` can block again.
        pub(crate) fn drain(&self) {
            let mut v = 0u64;
            // SAFETY: reads 8 bytes into a local u64 from a descriptor we own;
            // EAGAIN (nothing pending) is fine and ignored.
            unsafe {
                libc::read(self.0.as_raw_fd(), (&mut v as *mut u64).cast(), 8);
            }
        }
    }

    impl AsRawFd for EventFd {
        fn as_raw_fd(&self) -> RawFd {
            self.0.as_raw_fd()
        }
    }

    impl super::Kick for EventFd {
        fn kick(&self) {
            let v = 1u64;
            // SAFETY: writes 8 bytes from a local u64 to a descriptor we own.
            // The only failure is EAGAIN when the counter is saturated, in
            // which case the fd is already readable: the kick is not lost.
            unsafe {
                libc::write(self.0.as_raw_fd(), (&v as *const u64).cast(), 8);
            }
        }
    }
}

#[cfg(all(test, loom))]
mod tests {
    //! Run with: RUSTFLAGS="--cfg loom" cargo test -p pollux-poller --release --lib loom
    use super::*;
    use loom::sync::atomic::AtomicUsize;
    use loom::sync::{Arc, Condvar, Mutex};
    use loom::thread;

    /// A modelled eventfd: a sticky flag plus a condvar.
    struct ModelEvent {
        set: Mutex<bool>,
        cv: Condvar,
    }

    impl ModelEvent {
        fn new() -> Self {
            ModelEvent {
                set: Mutex::new(false),
                cv: Condvar::new(),
            }
        }
        fn wait(&self) {
            let mut g = self.set.lock().unwrap();
            while !*g {
                g = self.cv.wait(g).unwrap();
            }
            *g = false;
        }
    }

    impl Kick for ModelEvent {
        fn kick(&self) {
            *self.set.lock().unwrap() = true;
            self.cv.notify_one();
        }
    }

    /// The reactor side of the model: consume `total` messages, sleeping when
    /// the inbox looks empty. Loom reports a deadlock if a wakeup is lost.
    fn consumer(w: &Wakeup<ModelEvent>, inbox: &AtomicUsize, total: usize) {
        let mut got = 0;
        while got < total {
            let n = inbox.swap(0, Ordering::Relaxed);
            if n > 0 {
                got += n;
                continue;
            }
            if w.prepare_sleep(|| inbox.load(Ordering::Relaxed) > 0) {
                w.kicker().wait();
            }
            w.finish_sleep();
        }
    }

    /// A reactor's wakeup and its inbox, as one model run starts them.
    fn model_reactor() -> (Arc<Wakeup<ModelEvent>>, Arc<AtomicUsize>) {
        (
            Arc::new(Wakeup::new(ModelEvent::new())),
            Arc::new(AtomicUsize::new(0)),
        )
    }

    /// The sending side of the model: a thread that pushes one message into
    /// the inbox, then notifies the reactor.
    fn producer(w: &Arc<Wakeup<ModelEvent>>, inbox: &Arc<AtomicUsize>) -> thread::JoinHandle<()> {
        let (w, inbox) = (w.clone(), inbox.clone());
        thread::spawn(move || {
            inbox.fetch_add(1, Ordering::Relaxed);
            w.notify();
        })
    }

    #[test]
    fn loom_no_lost_wakeup_one_producer() {
        loom::model(|| {
            let (w, inbox) = model_reactor();
            let p = producer(&w, &inbox);
            consumer(&w, &inbox, 1);
            p.join().unwrap();
        });
    }

    /// Two producers blow up the state space; a preemption bound of 2 still
    /// covers every interleaving of one producer's push/fence/check against
    /// the sleeper's announce/fence/check (the bug needs one preemption).
    #[test]
    fn loom_no_lost_wakeup_two_producers() {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(2);
        b.check(|| {
            let (w, inbox) = model_reactor();
            let hs: Vec<_> = (0..2).map(|_| producer(&w, &inbox)).collect();
            consumer(&w, &inbox, 2);
            for h in hs {
                h.join().unwrap();
            }
        });
    }

    /// The shape of QEMU's bug: the sleeper re-checks for work *before*
    /// announcing that it may block. The model must find the lost wakeup.
    #[test]
    // What loom reports when every thread is blocked: the sleeper waits for
    // a kick that was sent before it announced itself.
    #[should_panic(expected = "deadlock; threads = ")]
    fn loom_finds_lost_wakeup_in_broken_protocol() {
        loom::model(|| {
            let (w, inbox) = model_reactor();
            let p = producer(&w, &inbox);
            let mut got = 0;
            while got < 1 {
                let n = inbox.swap(0, Ordering::Relaxed);
                if n > 0 {
                    got += n;
                    continue;
                }
                // Broken: check, then announce.
                let empty = inbox.load(Ordering::Relaxed) == 0;
                w.sleeping.store(true, Ordering::Relaxed);
                if empty {
                    w.kicker().wait();
                }
                w.finish_sleep();
            }
            p.join().unwrap();
        });
    }
}
