//! `null`: reads return zeroes, writes are dropped. For benchmarks and tests.
//! A read into an owned buffer already known to be zero (the perf tool's,
//! a reused NVMe/TCP read buffer) costs no memset: see `AlignedBuf`.

use pollux_poller::Reactor;

use crate::io::{Io, IoOp};
use crate::node::{BlockNode, Geometry};

/// A device of a given size that stores nothing.
pub struct NullNode {
    geometry: Geometry,
    read_zeroes: bool,
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
            read_zeroes: true,
        }
    }

    /// `false`: reads leave the buffer as it was (SPDK's null bdev, qemu's
    /// null-co with read-zeroes=off), so a read touches no memory; what
    /// the reader gets is its own buffer's earlier contents.
    pub fn with_read_zeroes(mut self, read_zeroes: bool) -> Self {
        self.read_zeroes = read_zeroes;
        self
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
        if io.op == IoOp::Read && self.read_zeroes {
            io.buf.fill_zero();
        }
        io.complete_later(r, Ok(()));
    }
}
