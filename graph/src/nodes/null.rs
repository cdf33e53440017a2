//! `null`: reads return zeroes, writes are dropped. For benchmarks and tests.

use pollux_poller::Reactor;

use crate::io::{Io, IoOp};
use crate::node::{BlockNode, Geometry};

/// A device of a given size that stores nothing.
pub struct NullNode {
    geometry: Geometry,
}

impl NullNode {
    /// `size` bytes (rounded down to whole blocks) of `block_size`.
    pub fn new(size: u64, block_size: u32) -> Self {
        NullNode {
            geometry: Geometry {
                block_size,
                block_count: size / block_size as u64,
                required_align: 1,
                optimal_align: block_size,
            },
        }
    }
}

impl BlockNode for NullNode {
    type Channel = ();

    fn kind(&self) -> &'static str {
        "null"
    }

    fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn create_channel(&self, _r: &Reactor) {}

    /// Stores nothing, so any size is served at once (`bdev_null_resize`):
    /// the graph's range check, published with the size, is the only one.
    fn resize(&self, _block_count: u64) -> bool {
        true
    }

    #[inline]
    fn execute(&self, r: &Reactor, _ch: &(), mut io: Io) {
        if io.op == IoOp::Read {
            io.buf.fill_zero();
        }
        io.complete_later(r, Ok(()));
    }
}
