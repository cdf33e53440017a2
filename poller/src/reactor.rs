//! The reactor: one pinned thread running a run-to-completion poll loop.

use std::any::{Any, TypeId};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

// A TSC clock: the loop reads the time once per iteration (timers, busy
// and idle accounting), and clock_gettime was the top cost of a spinning
// reactor with little work (about 20 ns against a few for rdtsc).
use quanta::Instant;

use crate::epoll::{Epoll, EventBuf, Events};
use crate::runtime::{Handle, IdlePolicy, Message, Shared};
use crate::timer::{TimerFn, TimerId, Timers};

/// What a poller found on one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PollStatus {
    /// It did work; the reactor should keep spinning.
    Busy,
    /// Nothing to do.
    Idle,
}

/// A unit of work polled on every loop iteration of its reactor.
pub trait Poller {
    /// Does whatever work is ready, without blocking.
    fn poll(&mut self, r: &Reactor) -> PollStatus;
}

impl<F: FnMut(&Reactor) -> PollStatus> Poller for F {
    fn poll(&mut self, r: &Reactor) -> PollStatus {
        self(r)
    }
}

/// Identifies a registered poller for removal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PollerId(u64);

/// Messages taken from the inbox per iteration, so a flood of messages cannot
/// starve the pollers (queue pairs) of the same reactor.
const MESSAGE_BATCH: usize = 64;

/// Upper bound on one sleep, so a reactor re-reads its stop flag and idle
/// policy at least this often even if every wakeup source stays silent.
const MAX_SLEEP: Duration = Duration::from_secs(1);

/// The reactor-side context handed to pollers, messages and timers.
///
/// It exists only on its reactor's thread (it is neither `Send` nor `Sync`),
/// and all its methods take `&self`, so anything borrowed from it (such as a
/// published graph snapshot) cannot outlive the callback it was given to:
/// between callbacks the reactor passes a quiescent point.
pub struct Reactor {
    shared: Arc<Shared>,
    index: usize,
    timers: RefCell<Timers>,
    pollers_added: RefCell<Vec<(PollerId, Box<dyn Poller>)>>,
    pollers_removed: RefCell<Vec<PollerId>>,
    /// Pollers the loop runs (its own list is not reachable from
    /// callbacks), for `num_pollers`.
    pollers_running: Cell<usize>,
    next_poller: Cell<u64>,
    /// Messages for reactors whose inbox was full, retried every iteration
    /// (in order per target) instead of being dropped or blocking.
    overflow: RefCell<VecDeque<(usize, Message)>>,
    locals: RefCell<Vec<(TypeId, Rc<dyn Any>)>>,
    /// The idle sleep's wakeup sources: the doorbell and registered fds.
    epoll: Epoll,
    /// Reused by every sleep. The events themselves are not looked at (the
    /// loop polls everything after a wakeup), so a few suffice.
    sleep_events: RefCell<EventBuf>,
    _not_send: PhantomData<*const ()>,
}

/// epoll token of the reactor's own eventfd.
const DOORBELL_TOKEN: u64 = u64::MAX;

/// Events taken per sleep; any one ends it, so one would do, but a few
/// let a burst of wakeups be consumed by one epoll_wait.
const SLEEP_EVENTS: usize = 8;

impl Reactor {
    pub(crate) fn new(shared: Arc<Shared>, index: usize) -> io::Result<Self> {
        let epoll = Epoll::new()?;
        let r = Reactor {
            shared,
            index,
            timers: RefCell::default(),
            pollers_added: RefCell::default(),
            pollers_removed: RefCell::default(),
            pollers_running: Cell::new(0),
            next_poller: Cell::new(0),
            overflow: RefCell::default(),
            locals: RefCell::default(),
            epoll,
            sleep_events: RefCell::new(EventBuf::new(SLEEP_EVENTS)),
            _not_send: PhantomData,
        };
        let doorbell = r.me().wakeup.kicker().as_raw_fd();
        r.epoll.add(doorbell, Events::READABLE, DOORBELL_TOKEN)?;
        Ok(r)
    }

    fn me(&self) -> &crate::runtime::ReactorShared {
        &self.shared.reactors[self.index]
    }

    /// Index of this reactor in the runtime (0..num_reactors).
    #[inline]
    pub fn index(&self) -> usize {
        self.index
    }

    /// The CPU this reactor is pinned to.
    pub fn core(&self) -> usize {
        self.me().info.core
    }

    /// Identifies the runtime this belongs to.
    pub fn runtime_id(&self) -> u64 {
        self.shared.id
    }

    /// A handle to the runtime, for cross-thread use.
    pub fn handle(&self) -> Handle {
        Handle::from_shared(self.shared.clone())
    }

    /// Number of reactors in the runtime.
    pub fn num_reactors(&self) -> usize {
        self.shared.reactors.len()
    }

    /// Adds a poller; it runs from the next iteration on.
    pub fn register_poller(&self, p: impl Poller + 'static) -> PollerId {
        let id = PollerId(self.next_poller.get());
        self.next_poller.set(id.0 + 1);
        self.pollers_added.borrow_mut().push((id, Box::new(p)));
        id
    }

    /// Removes a poller (it is dropped on this thread after the iteration).
    pub fn unregister_poller(&self, id: PollerId) {
        self.pollers_removed.borrow_mut().push(id);
    }

    /// Pollers registered and not removed (SPDK's active pollers).
    pub fn num_pollers(&self) -> usize {
        let pending = self.pollers_added.borrow().len();
        (self.pollers_running.get() + pending).saturating_sub(self.pollers_removed.borrow().len())
    }

    /// Timers waiting to run (SPDK's timed pollers).
    pub fn num_timers(&self) -> usize {
        self.timers.borrow().len()
    }

    /// Runs `f` on this reactor once `delay` has passed.
    pub fn add_timer(&self, delay: Duration, f: impl FnOnce(&Reactor) + 'static) -> TimerId {
        self.timers
            .borrow_mut()
            .add(Instant::now() + delay, TimerFn::Once(Box::new(f)))
    }

    /// Runs `f` every `period` for as long as it returns true.
    pub fn add_periodic(
        &self,
        period: Duration,
        f: impl FnMut(&Reactor) -> bool + 'static,
    ) -> TimerId {
        self.timers.borrow_mut().add(
            Instant::now() + period,
            TimerFn::Periodic(period, Box::new(f)),
        )
    }

    /// Cancels a timer; false if it already ran or was cancelled. A periodic
    /// timer may cancel itself from its own callback: it does not run again,
    /// whatever the callback returns.
    pub fn cancel_timer(&self, id: TimerId) -> bool {
        self.timers.borrow_mut().cancel(id)
    }

    /// Makes `fd` a wakeup source for this reactor's adaptive sleep: readiness
    /// for `events` (`Events::READABLE`, ...) ends the sleep. The fd's poller
    /// still does the I/O; epoll is only consulted when the reactor is idle.
    pub fn register_wake_fd(&self, fd: RawFd, events: Events) -> io::Result<()> {
        self.epoll.add(fd, events, fd as u64)
    }

    /// Stops `fd` from waking this reactor. Call before closing it.
    pub fn unregister_wake_fd(&self, fd: RawFd) -> io::Result<()> {
        self.epoll.delete(fd)
    }

    /// Reactor-local singleton of type `T`, created by `init` on first use.
    /// It lives (and is dropped) on this reactor's thread, so `T` need not be
    /// `Send`: this is where per-reactor services such as an io_uring live.
    pub fn local<T: 'static>(&self, init: impl FnOnce(&Reactor) -> T) -> Rc<T> {
        let key = TypeId::of::<T>();
        if let Some(v) = self.find_local::<T>(key) {
            return v;
        }
        let v: Rc<T> = Rc::new(init(self));
        self.locals.borrow_mut().push((key, v.clone()));
        v
    }

    fn find_local<T: 'static>(&self, key: TypeId) -> Option<Rc<T>> {
        let locals = self.locals.borrow();
        let (_, v) = locals.iter().find(|(k, _)| *k == key)?;
        v.clone().downcast::<T>().ok()
    }

    /// Sends `f` to reactor `target`. Never blocks and never fails: if the
    /// target's inbox is full the message waits in this reactor's overflow
    /// queue and is retried, in order, on every iteration.
    pub fn send(&self, target: usize, f: impl FnOnce(&Reactor) + Send + 'static) {
        let msg: Message = Box::new(f);
        let mut overflow = self.overflow.borrow_mut();
        if overflow.iter().any(|(t, _)| *t == target) {
            // Keep per-target FIFO order behind earlier overflowed messages.
            overflow.push_back((target, msg));
            return;
        }
        drop(overflow);
        if let Err(msg) = self.shared.try_send(target, msg) {
            self.overflow.borrow_mut().push_back((target, msg));
        }
    }

    /// SPDK's `spdk_for_each_thread`: runs `f` on every reactor (this one
    /// included), then `then` on this reactor once all of them have.
    pub fn for_each_reactor(
        &self,
        f: impl Fn(&Reactor) + Send + Sync + 'static,
        then: impl FnOnce(&Reactor) + Send + 'static,
    ) {
        let origin = self.index;
        let state = Arc::new(ForEach {
            f: Box::new(f),
            remaining: std::sync::atomic::AtomicUsize::new(self.num_reactors()),
            then: std::sync::Mutex::new(Some(Box::new(then))),
        });
        for target in 0..self.num_reactors() {
            let state = state.clone();
            self.send(target, move |r: &Reactor| {
                (state.f)(r);
                if state.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                    // The lock is taken once, by the last reactor: control path.
                    let then = state.then.lock().ok().and_then(|mut t| t.take());
                    if let Some(then) = then {
                        r.send(origin, then);
                    }
                }
            });
        }
    }

    fn retry_overflow(&self) -> bool {
        let mut overflow = self.overflow.borrow_mut();
        if overflow.is_empty() {
            return false;
        }
        let mut blocked: Vec<usize> = Vec::new();
        let mut kept = VecDeque::new();
        while let Some((t, msg)) = overflow.pop_front() {
            if blocked.contains(&t) {
                kept.push_back((t, msg));
                continue;
            }
            if let Err(msg) = self.shared.try_send(t, msg) {
                blocked.push(t);
                kept.push_back((t, msg));
            }
        }
        *overflow = kept;
        true
    }

    fn drain_inbox(&self) -> usize {
        let me = self.me();
        let mut n = 0;
        while n < MESSAGE_BATCH {
            let Some(msg) = me.inbox.pop() else { break };
            msg(self);
            n += 1;
        }
        if n > 0 {
            me.stats.record_messages(n as u64);
        }
        n
    }

    fn run_timers(&self, now: Instant) -> bool {
        let mut ran = false;
        loop {
            let due = self.timers.borrow_mut().pop_due(now);
            let Some((id, f)) = due else { break };
            ran = true;
            match f {
                TimerFn::Once(f) => f(self),
                TimerFn::Periodic(period, mut f) => {
                    // The callback may cancel its own timer (cancel_timer
                    // marks it while it runs): finish_periodic then drops it
                    // even if the callback returns true.
                    let again = f(self);
                    self.timers
                        .borrow_mut()
                        .finish_periodic(id, again, now + period, period, f);
                }
            }
        }
        ran
    }

    /// Blocks until a message, a timer, a kick or a registered fd; returns
    /// the time slept.
    fn sleep(&self) -> Duration {
        let me = self.me();
        let has_work = || {
            !me.inbox.is_empty()
                || self.shared.stop.load(Ordering::Relaxed)
                || !self.overflow.borrow().is_empty()
        };
        let start = Instant::now();
        if me.wakeup.prepare_sleep(has_work) {
            let timeout = match self.timers.borrow_mut().next_deadline() {
                Some(at) => at.saturating_duration_since(start).min(MAX_SLEEP),
                None => MAX_SLEEP,
            };
            // The wait rounds up to whole milliseconds, so a timer due in
            // 0.3 ms does not become a busy spin of zero-timeout waits. An
            // error (none is expected of a valid epoll fd) ends the sleep
            // like a wakeup would: the loop re-checks everything.
            let mut evs = self.sleep_events.borrow_mut();
            if let Err(e) = self.epoll.wait(&mut evs, Some(timeout)) {
                tracing::warn!(error = %e, "reactor: epoll_wait failed");
            }
        }
        me.wakeup.finish_sleep();
        me.wakeup.kicker().drain();
        start.elapsed()
    }

    /// The poll loop. Returns when the runtime stops.
    pub(crate) fn run(self) {
        let me = self.me();
        let adaptive_after = match self.shared.idle {
            IdlePolicy::Poll => None,
            IdlePolicy::Adaptive { idle_after } => Some(idle_after),
        };
        let mut pollers: Vec<(PollerId, Box<dyn Poller>)> = Vec::new();
        let mut prev = Instant::now();
        let mut last_busy = prev;
        while !self.shared.stop.load(Ordering::Relaxed) {
            let mut busy = self.drain_inbox() > 0;
            busy |= self.retry_overflow();

            self.update_pollers(&mut pollers);
            for (_, p) in pollers.iter_mut() {
                busy |= p.poll(&self) == PollStatus::Busy;
            }

            let now = Instant::now();
            busy |= self.run_timers(now);

            // Every callback of this iteration has returned: nothing borrowed
            // from published data survives past this point.
            me.qs.quiescent();

            let ns = now.saturating_duration_since(prev).as_nanos() as u64;
            me.stats.record_iteration(busy, ns);
            prev = now;
            if busy {
                last_busy = now;
            } else if let Some(after) = adaptive_after {
                if now.saturating_duration_since(last_busy) >= after {
                    let slept = self.sleep();
                    me.stats.record_idle(slept.as_nanos() as u64);
                    prev = Instant::now();
                }
            }
        }
        me.qs.go_offline();
        // Pollers and locals are dropped here, on the reactor's own thread.
        drop(pollers);
    }

    fn update_pollers(&self, pollers: &mut Vec<(PollerId, Box<dyn Poller>)>) {
        let mut removed = self.pollers_removed.borrow_mut();
        if !removed.is_empty() {
            pollers.retain(|(id, _)| !removed.contains(id));
            self.pollers_added
                .borrow_mut()
                .retain(|(id, _)| !removed.contains(id));
            removed.clear();
        }
        drop(removed);
        let mut added = self.pollers_added.borrow_mut();
        if !added.is_empty() {
            pollers.append(&mut added);
        }
        self.pollers_running.set(pollers.len());
    }
}

/// A broadcast in progress: `f` for every reactor, then `then` for the sender.
struct ForEach {
    f: Box<dyn Fn(&Reactor) + Send + Sync>,
    remaining: std::sync::atomic::AtomicUsize,
    then: std::sync::Mutex<Option<Message>>,
}
