//! `qos`: a filter that rate-limits the reads and writes going through it.
//!
//! It draws from one or more [`Budget`]s (the bdev's own, and a throttle
//! group's), each through this reactor's [`LocalBuckets`]: an I/O goes down
//! at once when every budget admits it, and otherwise waits in this
//! reactor's queue, in arrival order, until a later timeslice refills the
//! budgets. Nothing sleeps: a reactor timer re-runs the queue at the next
//! timeslice while it is not empty. Other ops (flush, write zeroes,
//! discard) are not limited, as in SPDK, and take the route fast path.
//!
//! The queue needs no bound of its own: what it holds is I/O the front-ends
//! submitted, which their queue depths already bound.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pollux_poller::Reactor;

use crate::io::{Io, IoOp};
use crate::node::{BlockNode, Geometry};
use crate::throttle::{Budget, Cost, LocalBuckets, TIMESLICE_NS};

/// The node kind, as `pollux_graph_get` shows it.
pub const KIND: &str = "qos";

/// Rate-limits reads and writes to its one child.
pub struct QosNode {
    geometry: Geometry,
    budgets: Arc<[Arc<Budget>]>,
    /// Timeslices are counted from here, the same on every reactor.
    epoch: Instant,
}

impl QosNode {
    /// A filter with `child`'s geometry that admits I/O only when every
    /// one of `budgets` does.
    pub fn new(child: Geometry, budgets: Vec<Arc<Budget>>) -> Self {
        QosNode {
            geometry: child,
            budgets: budgets.into(),
            epoch: Instant::now(),
        }
    }

    /// The budgets it draws from.
    pub fn budgets(&self) -> &[Arc<Budget>] {
        &self.budgets
    }
}

/// One reactor's side of a QoS filter. Shared (`Rc`) with the timer that
/// releases its queue, which outlives the call that armed it.
pub struct QosChannel {
    budgets: Arc<[Arc<Budget>]>,
    epoch: Instant,
    state: RefCell<ChannelState>,
}

struct ChannelState {
    /// This reactor's tokens, one per budget.
    locals: Vec<LocalBuckets>,
    /// I/O waiting for tokens, oldest first.
    queue: VecDeque<Io>,
    /// A release timer is pending.
    armed: bool,
}

impl QosChannel {
    fn slice(&self) -> u64 {
        (self.epoch.elapsed().as_nanos() / TIMESLICE_NS as u128) as u64
    }

    /// Admits an I/O of `op` and `len` now if every budget has tokens for
    /// it. The clock is read only if a local bucket runs dry, not per I/O.
    fn admit(&self, st: &mut ChannelState, op: IoOp, len: u64) -> bool {
        let cost = Cost::rw(op == IoOp::Write, len);
        let mut slice = None;
        let mut now = || *slice.get_or_insert_with(|| self.slice());
        // All budgets must agree. Tokens taken from one whose neighbour
        // then refuses are spent anyway (at most one I/O's worth, repaid by
        // a later admission), which keeps this a single pass.
        st.locals
            .iter_mut()
            .zip(self.budgets.iter())
            .all(|(l, b)| l.admit(b, &cost, &mut now))
    }

    /// Time until the next timeslice starts.
    fn until_next_slice(&self) -> Duration {
        let ns = self.epoch.elapsed().as_nanos() as u64;
        Duration::from_nanos(TIMESLICE_NS - ns % TIMESLICE_NS)
    }

    fn arm(self: &Rc<Self>, r: &Reactor) {
        let ch = self.clone();
        r.add_timer(self.until_next_slice(), move |r| ch.release(r));
    }

    /// Sends down, in order, what the budgets admit now; re-arms while
    /// anything is left.
    fn release(self: &Rc<Self>, r: &Reactor) {
        let mut go = Vec::new();
        let left = {
            let mut st = self.state.borrow_mut();
            while let Some(io) = st.queue.front() {
                let (op, len) = (io.op, io.len);
                if !self.admit(&mut st, op, len) {
                    break;
                }
                go.extend(st.queue.pop_front());
            }
            st.armed = !st.queue.is_empty();
            st.armed
        };
        if left {
            self.arm(r);
        }
        // Outside the borrow: a child that completes synchronously lets
        // the front-end submit again, which comes back to `execute`.
        for io in go {
            io.forward(r, 0);
        }
    }
}

impl BlockNode for QosNode {
    type Channel = Rc<QosChannel>;

    fn kind(&self) -> &'static str {
        KIND
    }

    fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn num_children(&self) -> usize {
        1
    }

    #[inline]
    fn route(&self, io: &mut Io) -> Option<usize> {
        // Reads and writes are limited: `execute` decides. The rest goes
        // straight down.
        (!io.op.has_data()).then_some(0)
    }

    fn create_channel(&self, _r: &Reactor) -> Rc<QosChannel> {
        Rc::new(QosChannel {
            budgets: self.budgets.clone(),
            epoch: self.epoch,
            state: RefCell::new(ChannelState {
                locals: self.budgets.iter().map(|_| LocalBuckets::default()).collect(),
                queue: VecDeque::new(),
                armed: false,
            }),
        })
    }

    fn execute(&self, r: &Reactor, ch: &Rc<QosChannel>, io: Io) {
        let admitted = {
            let mut st = ch.state.borrow_mut();
            // Behind a queue, wait in line: admitting a later I/O first
            // would starve large ones under a byte limit.
            if st.queue.is_empty() && ch.admit(&mut st, io.op, io.len) {
                Some(io)
            } else {
                st.queue.push_back(io);
                if !st.armed {
                    st.armed = true;
                    drop(st);
                    ch.arm(r);
                }
                None
            }
        };
        if let Some(io) = admitted {
            io.forward(r, 0);
        }
    }
}
