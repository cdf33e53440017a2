//! `passthru`: a filter that forwards every I/O to its one child. It proves
//! live insertion and removal, and is the template for real filters.

use pollux_poller::Reactor;

use crate::io::Io;
use crate::node::{BlockNode, Geometry};

/// Forwards to child slot 0.
pub struct PassthruNode {
    geometry: Geometry,
}

impl PassthruNode {
    /// A filter presenting `child`'s geometry (the graph checks they match).
    pub fn new(child: Geometry) -> Self {
        PassthruNode { geometry: child }
    }
}

impl BlockNode for PassthruNode {
    type Channel = ();

    fn kind(&self) -> &'static str {
        "passthru"
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
        // Unreachable through the graph (route always forwards); complete
        // rather than lose the request if called directly.
        io.complete_later(
            r,
            Err(crate::io::IoError::Unsupported("execute on a filter")),
        );
    }
}
