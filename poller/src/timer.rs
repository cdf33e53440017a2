//! Deadline-ordered timers of one reactor.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Duration;

use quanta::Instant;

use crate::reactor::Reactor;

/// Identifies a timer for cancellation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerId(u64);

pub(crate) enum TimerFn {
    Once(Box<dyn FnOnce(&Reactor)>),
    /// Re-armed every `period` while the callback returns true.
    Periodic(Duration, Box<dyn FnMut(&Reactor) -> bool>),
}

/// A min-heap of deadlines; cancelled timers are dropped from the map and
/// their heap entries skipped lazily.
#[derive(Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    callbacks: HashMap<u64, TimerFn>,
    next_id: u64,
}

impl Timers {
    pub(crate) fn add(&mut self, at: Instant, f: TimerFn) -> TimerId {
        let id = self.next_id;
        self.next_id += 1;
        self.heap.push(Reverse((at, id)));
        self.callbacks.insert(id, f);
        TimerId(id)
    }

    pub(crate) fn rearm(&mut self, id: TimerId, at: Instant, f: TimerFn) {
        self.heap.push(Reverse((at, id.0)));
        self.callbacks.insert(id.0, f);
    }

    pub(crate) fn cancel(&mut self, id: TimerId) -> bool {
        self.callbacks.remove(&id.0).is_some()
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

    /// Takes one timer due at `now`, if any.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(TimerId, TimerFn)> {
        loop {
            let Reverse((at, id)) = *self.heap.peek()?;
            if at > now {
                return None;
            }
            self.heap.pop();
            if let Some(f) = self.callbacks.remove(&id) {
                return Some((TimerId(id), f));
            }
        }
    }
}
