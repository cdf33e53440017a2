//! `delay`: adds a configured latency to reads and writes (SPDK's delay
//! bdev). Each I/O is held on its reactor for its latency, then forwarded
//! to the child: one reactor timer per channel is armed for the earliest
//! deadline, so nothing sleeps and nothing polls while nothing is held.
//!
//! As in SPDK, one I/O in a hundred (drawn per reactor) gets the p99
//! latency instead of the average, other ops pass through untouched, and a
//! latency change applies to I/O that arrives after it (I/O already held
//! keeps its deadline; a queue is released in order, so a long deadline
//! ahead holds back shorter ones behind it, SPDK's "dam"). SPDK holds the
//! completion rather than the submission; the initiator sees the same
//! latency either way.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pollux_poller::Reactor;
use quanta::Instant;

use crate::io::{Io, IoOp};
use crate::node::{BlockNode, Geometry};

/// Which latency an I/O gets, in the order of SPDK's `latency_type`s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DelayKind {
    /// `avg_read`.
    AvgRead = 0,
    /// `p99_read`.
    P99Read = 1,
    /// `avg_write`.
    AvgWrite = 2,
    /// `p99_write`.
    P99Write = 3,
}

impl DelayKind {
    /// Every kind, by index.
    pub const ALL: [DelayKind; 4] = [
        DelayKind::AvgRead,
        DelayKind::P99Read,
        DelayKind::AvgWrite,
        DelayKind::P99Write,
    ];

    /// SPDK's name (`bdev_delay_update_latency`'s `latency_type`).
    pub fn name(self) -> &'static str {
        match self {
            DelayKind::AvgRead => "avg_read",
            DelayKind::P99Read => "p99_read",
            DelayKind::AvgWrite => "avg_write",
            DelayKind::P99Write => "p99_write",
        }
    }

    /// The kind SPDK calls `name`.
    pub fn from_name(name: &str) -> Option<DelayKind> {
        DelayKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// The latencies, in microseconds, shared by the control plane (which
/// changes them live) and the reactors (which read them per I/O: a load of
/// a line that is only written by `bdev_delay_update_latency`).
#[derive(Debug, Default)]
pub struct DelayLatencies([AtomicU64; 4]);

impl DelayLatencies {
    /// The latencies `[avg_read, p99_read, avg_write, p99_write]` in µs.
    pub fn new(us: [u64; 4]) -> Self {
        DelayLatencies(us.map(AtomicU64::new))
    }

    /// One latency, in µs.
    pub fn get(&self, k: DelayKind) -> u64 {
        self.0[k as usize].load(Ordering::Relaxed)
    }

    /// Changes one latency; I/O arriving from now on gets it.
    pub fn set(&self, k: DelayKind, us: u64) {
        self.0[k as usize].store(us, Ordering::Relaxed)
    }
}

/// One in `P99_ONE_IN` I/O gets the p99 latency: SPDK draws
/// `rand_r() % 100 == 0`, so that the slowest 1% see it.
const P99_ONE_IN: u64 = 100;

/// A filter that delays reads and writes.
pub struct DelayNode {
    geometry: Geometry,
    latencies: Arc<DelayLatencies>,
}

impl DelayNode {
    /// A delay filter presenting `child`'s geometry with `latencies`.
    pub fn new(child: Geometry, latencies: Arc<DelayLatencies>) -> Self {
        DelayNode {
            geometry: child,
            latencies,
        }
    }

    /// The live latencies.
    pub fn latencies(&self) -> &Arc<DelayLatencies> {
        &self.latencies
    }
}

/// One reactor's held I/O, shared with the timer that releases it.
pub struct DelayChannel(Rc<Held>);

struct Held {
    /// FIFO per kind, as SPDK's four lists: deadlines are in order within
    /// one kind while its latency does not change.
    queues: RefCell<[VecDeque<(Instant, Io)>; 4]>,
    /// The earliest deadline a timer is armed for.
    armed: Cell<Option<Instant>>,
    /// xorshift64 state for the p99 draw (per reactor: no shared write).
    rng: Cell<u64>,
}

impl Held {
    fn draw_p99(&self) -> bool {
        let mut x = self.rng.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.set(x);
        x % P99_ONE_IN == 0
    }

    /// Arms a timer for `at` unless one fires at or before it.
    fn arm(self: &Rc<Self>, r: &Reactor, at: Instant) {
        if self.armed.get().is_some_and(|a| a <= at) {
            return;
        }
        self.armed.set(Some(at));
        let me = self.clone();
        let wait = at.saturating_duration_since(Instant::now());
        r.add_timer(wait, move |r| me.fire(r, at));
    }

    /// Forwards every due I/O, then re-arms for the next deadline.
    fn fire(self: &Rc<Self>, r: &Reactor, at: Instant) {
        if self.armed.get() == Some(at) {
            self.armed.set(None);
        }
        let now = Instant::now();
        let mut due = Vec::new();
        let mut next: Option<Instant> = None;
        {
            let mut qs = self.queues.borrow_mut();
            for q in qs.iter_mut() {
                while q.front().is_some_and(|(d, _)| *d <= now) {
                    if let Some((_, io)) = q.pop_front() {
                        due.push(io);
                    }
                }
                if let Some((d, _)) = q.front() {
                    next = Some(next.map_or(*d, |n| n.min(*d)));
                }
            }
        }
        // Outside the borrow: forwarding may complete synchronously into
        // code that submits to this node again.
        for io in due {
            io.forward(r, 0);
        }
        if let Some(n) = next {
            self.arm(r, n);
        }
    }
}

impl BlockNode for DelayNode {
    type Channel = DelayChannel;

    fn kind(&self) -> &'static str {
        "delay"
    }

    fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn num_children(&self) -> usize {
        1
    }

    #[inline]
    fn route(&self, io: &mut Io) -> Option<usize> {
        // Only reads and writes are delayed (SPDK's DELAY_NONE otherwise).
        (!io.op.has_data()).then_some(0)
    }

    fn create_channel(&self, r: &Reactor) -> DelayChannel {
        // Any odd-free non-zero seed; distinct per reactor.
        let seed = 0x9e37_79b9_7f4a_7c15u64 ^ ((r.index() as u64 + 1) << 32) | 1;
        DelayChannel(Rc::new(Held {
            queues: RefCell::default(),
            armed: Cell::new(None),
            rng: Cell::new(seed),
        }))
    }

    fn execute(&self, r: &Reactor, ch: &DelayChannel, io: Io) {
        let held = &ch.0;
        let p99 = held.draw_p99();
        let kind = match (io.op, p99) {
            (IoOp::Read, false) => DelayKind::AvgRead,
            (IoOp::Read, true) => DelayKind::P99Read,
            (_, false) => DelayKind::AvgWrite,
            (_, true) => DelayKind::P99Write,
        };
        let us = self.latencies.get(kind);
        if us == 0 {
            io.forward(r, 0);
            return;
        }
        let at = Instant::now() + Duration::from_micros(us);
        held.queues.borrow_mut()[kind as usize].push_back((at, io));
        held.arm(r, at);
    }
}
