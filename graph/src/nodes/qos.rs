//! `qos`: a filter that rate-limits the I/O going through it.
//!
//! It draws from one or more [`Budget`]s (the bdev's own, and a throttle
//! group's), each through this reactor's [`LocalBuckets`]: an I/O goes down
//! at once when every budget admits it, and otherwise waits in this
//! reactor's queue, in arrival order, until a later timeslice refills the
//! budgets. Nothing sleeps: a reactor timer re-runs the queue at the next
//! timeslice while it is not empty.

use std::sync::Arc;

use pollux_poller::Reactor;

use crate::io::Io;
use crate::node::{BlockNode, Geometry};
use crate::throttle::Budget;

/// The node kind, as `pollux_graph_get` shows it.
pub const KIND: &str = "qos";

/// Rate-limits I/O to its one child.
pub struct QosNode {
    geometry: Geometry,
    budgets: Vec<Arc<Budget>>,
}

impl QosNode {
    /// A filter with `child`'s geometry that admits I/O only when every
    /// one of `budgets` does.
    pub fn new(child: Geometry, budgets: Vec<Arc<Budget>>) -> Self {
        QosNode {
            geometry: child,
            budgets,
        }
    }

    /// The budgets it draws from.
    pub fn budgets(&self) -> &[Arc<Budget>] {
        &self.budgets
    }
}

impl BlockNode for QosNode {
    type Channel = ();

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
    fn route(&self, _io: &mut Io) -> Option<usize> {
        Some(0)
    }

    fn create_channel(&self, _r: &Reactor) {}

    fn execute(&self, r: &Reactor, _ch: &(), io: Io) {
        io.complete_later(
            r,
            Err(crate::io::IoError::Unsupported("execute on a filter")),
        );
    }
}
