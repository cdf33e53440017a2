//! `split`: one contiguous part of its child (SPDK's split bdev, one node
//! per part). Routing rewrites the offset and goes on: the fast path, no
//! I/O is held.

use pollux_poller::Reactor;

use crate::io::{Io, IoError};
use crate::node::{BlockNode, Geometry};

/// Blocks `[start, start + count)` of the child, as a device of its own.
pub struct SplitNode {
    geometry: Geometry,
    /// First block of the part on the child.
    start_block: u64,
}

impl SplitNode {
    /// Part `[start_block, start_block + block_count)` of a child of
    /// geometry `child` (the graph checks it fits).
    pub fn new(child: Geometry, start_block: u64, block_count: u64) -> Self {
        SplitNode {
            geometry: Geometry {
                block_count,
                ..child
            },
            start_block,
        }
    }

    /// First block of the part on the child.
    pub fn start_block(&self) -> u64 {
        self.start_block
    }
}

impl BlockNode for SplitNode {
    type Channel = ();

    fn kind(&self) -> &'static str {
        "split"
    }

    fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn num_children(&self) -> usize {
        1
    }

    fn same_geometry_as_children(&self) -> bool {
        false
    }

    fn check_children(&self, children: &[Geometry]) -> Result<(), String> {
        let [c] = children else {
            return Err("a split stands on one bdev".into());
        };
        if c.block_size != self.geometry.block_size {
            return Err(format!(
                "block size {} differs from the part's {}",
                c.block_size, self.geometry.block_size
            ));
        }
        match self.start_block.checked_add(self.geometry.block_count) {
            Some(end) if end <= c.block_count => Ok(()),
            _ => Err(format!(
                "blocks {}+{} are beyond the base's {}",
                self.start_block, self.geometry.block_count, c.block_count
            )),
        }
    }

    #[inline]
    fn route(&self, io: &mut Io) -> Option<usize> {
        // The graph checked the range against the part; inside the child
        // it cannot overflow (`check_children`). Flushes carry no range.
        if io.op != crate::IoOp::Flush {
            io.offset += self.start_block * u64::from(self.geometry.block_size);
        }
        Some(0)
    }

    fn create_channel(&self, _r: &Reactor) {}

    fn execute(&self, r: &Reactor, _ch: &(), io: Io) {
        // Unreachable through the graph (route always forwards).
        io.complete_later(r, Err(IoError::Unsupported("execute on a filter")));
    }
}
