//! Deadline-ordered timers of one reactor.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Duration;

use quanta::Instant;

use crate::reactor::Reactor;

/// Identifies a timer for cancellation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerId(u64);

/// A periodic timer's callback: true to run again.
pub(crate) type PeriodicFn = Box<dyn FnMut(&Reactor) -> bool>;

pub(crate) enum TimerFn {
    Once(Box<dyn FnOnce(&Reactor)>),
    /// Re-armed every `period` while the callback returns true.
    Periodic(Duration, PeriodicFn),
}

/// A min-heap of deadlines; cancelled timers are dropped from the map and
/// their heap entries skipped lazily.
///
/// A periodic timer whose callback is running is in neither: the reactor
/// holds the callback while it runs. `running` remembers it, so that the
/// callback (or anything it calls) can still cancel it.
#[derive(Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    callbacks: HashMap<u64, TimerFn>,
    next_id: u64,
    running: Option<Running>,
}

/// The periodic timer whose callback runs now. Callbacks run one at a time
/// on the reactor, so there is at most one.
struct Running {
    id: u64,
    cancelled: bool,
}

impl Timers {
    pub(crate) fn add(&mut self, at: Instant, f: TimerFn) -> TimerId {
        let id = self.next_id;
        self.next_id += 1;
        self.heap.push(Reverse((at, id)));
        self.callbacks.insert(id, f);
        TimerId(id)
    }

    /// After the periodic timer `id` (taken by `pop_due`) ran: re-arms it
    /// at `at` if its callback asked to run again and nothing cancelled it
    /// meanwhile. Returns whether it was re-armed.
    pub(crate) fn finish_periodic(
        &mut self,
        id: TimerId,
        again: bool,
        at: Instant,
        period: Duration,
        f: PeriodicFn,
    ) -> bool {
        let cancelled = match self.running.take() {
            Some(r) if r.id == id.0 => r.cancelled,
            // Not the timer `pop_due` handed out: a caller bug, but the
            // timer is then re-armed as asked rather than lost.
            other => {
                debug_assert!(other.is_none(), "finish_periodic for the wrong timer");
                false
            }
        };
        if !again || cancelled {
            return false;
        }
        self.heap.push(Reverse((at, id.0)));
        self.callbacks.insert(id.0, TimerFn::Periodic(period, f));
        true
    }

    /// Cancels a timer: true if it was armed, or is the periodic timer
    /// running now (which then is not re-armed); false if it already ran, was
    /// cancelled, or is a one-shot timer running now.
    /// Timers not yet run or cancelled (a periodic one counts once).
    pub(crate) fn len(&self) -> usize {
        self.callbacks.len()
    }

    pub(crate) fn cancel(&mut self, id: TimerId) -> bool {
        if self.callbacks.remove(&id.0).is_some() {
            return true;
        }
        match &mut self.running {
            Some(r) if r.id == id.0 && !r.cancelled => {
                r.cancelled = true;
                true
            }
            _ => false,
        }
    }

    /// The earliest live deadline.
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, id))) = self.heap.peek() {
            if self.callbacks.contains_key(id) {
                return Some(*at);
            }
            self.heap.pop();
        }
        None
    }

    /// Takes one timer due at `now`, if any. A periodic one counts as
    /// running (cancellable) until `finish_periodic`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(TimerId, TimerFn)> {
        loop {
            let Reverse((at, id)) = *self.heap.peek()?;
            if at > now {
                return None;
            }
            self.heap.pop();
            if let Some(f) = self.callbacks.remove(&id) {
                if matches!(f, TimerFn::Periodic(..)) {
                    self.running = Some(Running {
                        id,
                        cancelled: false,
                    });
                }
                return Some((TimerId(id), f));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn periodic() -> TimerFn {
        TimerFn::Periodic(Duration::from_millis(1), Box::new(|_| true))
    }

    fn take_periodic(t: &mut Timers, now: Instant) -> (TimerId, PeriodicFn) {
        match t.pop_due(now) {
            Some((id, TimerFn::Periodic(_, f))) => (id, f),
            _ => panic!("no periodic timer due"),
        }
    }

    #[test]
    fn a_running_periodic_timer_can_be_cancelled_and_is_not_rearmed() {
        let mut t = Timers::default();
        let now = Instant::now();
        let id = t.add(now, periodic());
        let (got, f) = take_periodic(&mut t, now);
        assert_eq!(got, id);
        // What its callback does when it cancels itself.
        assert!(t.cancel(id), "cancelling the running timer must succeed");
        assert!(!t.cancel(id), "a second cancel finds nothing to cancel");
        let later = now + Duration::from_millis(1);
        assert!(!t.finish_periodic(id, true, later, Duration::from_millis(1), f));
        assert!(
            t.next_deadline().is_none(),
            "the cancelled timer was re-armed"
        );
        assert!(t.pop_due(later + Duration::from_secs(1)).is_none());
    }

    #[test]
    fn a_running_periodic_timer_is_rearmed_unless_it_returns_false() {
        let mut t = Timers::default();
        let now = Instant::now();
        let id = t.add(now, periodic());
        let later = now + Duration::from_millis(1);
        let (_, f) = take_periodic(&mut t, now);
        assert!(t.finish_periodic(id, true, later, Duration::from_millis(1), f));
        assert_eq!(t.next_deadline(), Some(later));
        let (_, f) = take_periodic(&mut t, later);
        assert!(!t.finish_periodic(id, false, later, Duration::from_millis(1), f));
        assert!(t.next_deadline().is_none());
        // Re-armed and then cancelled from outside, as before.
        let id = t.add(now, periodic());
        let (_, f) = take_periodic(&mut t, now);
        assert!(t.finish_periodic(id, true, later, Duration::from_millis(1), f));
        assert!(t.cancel(id));
        assert!(t.pop_due(later).is_none());
    }

    #[test]
    fn cancelling_another_timer_from_a_running_one_leaves_the_runner_alone() {
        let mut t = Timers::default();
        let now = Instant::now();
        let runner = t.add(now, periodic());
        let other = t.add(
            now + Duration::from_secs(60),
            TimerFn::Once(Box::new(|_| ())),
        );
        let (_, f) = take_periodic(&mut t, now);
        assert!(t.cancel(other));
        assert!(!t.cancel(other));
        let later = now + Duration::from_millis(1);
        assert!(t.finish_periodic(runner, true, later, Duration::from_millis(1), f));
        assert_eq!(t.next_deadline(), Some(later));
    }

    #[test]
    fn a_one_shot_timer_that_ran_cannot_be_cancelled() {
        let mut t = Timers::default();
        let now = Instant::now();
        let id = t.add(now, TimerFn::Once(Box::new(|_| ())));
        assert!(matches!(t.pop_due(now), Some((_, TimerFn::Once(_)))));
        assert!(!t.cancel(id));
    }
}
