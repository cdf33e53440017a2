//! `split`: one contiguous part of its child (SPDK's split bdev, one node
//! per part). Routing rewrites the offset and goes on: the fast path, no
//! I/O is held.

use pollux_poller::Reactor;

use crate::io::{Io, IoError};
use crate::node::{BlockNode, Geometry};

/// One MiB, the unit of `split_size_mb`.
const MIB: u64 = 1 << 20;

/// The most parts one split makes: each is a graph node, and every graph
/// change copies the node table, so a split into millions of one-block
/// parts (which SPDK would try) is refused rather than allocated.
pub const MAX_PARTS: u64 = 1024;

/// Why a base cannot be split as asked (SPDK's vbdev_split answers each
/// with EINVAL).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    /// No parts asked for.
    #[error("split_count can't be 0")]
    ZeroCount,
    /// More parts than a split makes.
    #[error("split_count {0} is above the {MAX_PARTS} parts a split makes")]
    TooMany(u64),
    /// The part size is not whole blocks.
    #[error("split size {size_mb} MB is not possible with block size {block_size}")]
    PartSize {
        /// `split_size_mb`.
        size_mb: u64,
        /// The base's block size.
        block_size: u32,
    },
    /// Not even one part fits.
    #[error("cannot split a base of {base_blocks} blocks into parts of {part_blocks} blocks")]
    TooSmall {
        /// The base's blocks.
        base_blocks: u64,
        /// Blocks a part would take.
        part_blocks: u64,
    },
}

/// Where the parts of a split lie on its base: part `i` is blocks
/// `[i * part_blocks, (i + 1) * part_blocks)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitPlan {
    /// Parts that fit (`split_count`, or fewer if a fixed size allows
    /// fewer: SPDK clamps the count).
    pub count: u64,
    /// Blocks per part.
    pub part_blocks: u64,
    /// Without `split_size_mb`: the parts are an equal share of the base.
    pub equal_share: bool,
}

impl SplitPlan {
    /// SPDK's vbdev_split layout: `split_count` parts of `split_size_mb`
    /// MiB each, or without it (0) an equal share of the base.
    pub fn new(base: Geometry, split_count: u64, split_size_mb: u64) -> Result<Self, SplitError> {
        if split_count == 0 {
            return Err(SplitError::ZeroCount);
        }
        if split_count > MAX_PARTS {
            return Err(SplitError::TooMany(split_count));
        }
        let bs = u64::from(base.block_size);
        let part_blocks = if split_size_mb != 0 {
            split_size_mb
                .checked_mul(MIB)
                .filter(|b| b % bs == 0)
                .ok_or(SplitError::PartSize {
                    size_mb: split_size_mb,
                    block_size: base.block_size,
                })?
                / bs
        } else {
            base.block_count / split_count
        };
        if part_blocks == 0 || part_blocks > base.block_count {
            return Err(SplitError::TooSmall {
                base_blocks: base.block_count,
                part_blocks,
            });
        }
        Ok(SplitPlan {
            count: split_count.min(base.block_count / part_blocks),
            part_blocks,
            equal_share: split_size_mb == 0,
        })
    }

    /// Part `i`'s node.
    pub fn part(&self, base: Geometry, i: u64) -> SplitNode {
        SplitNode {
            equal_share: self.equal_share,
            ..SplitNode::new(base, i * self.part_blocks, self.part_blocks)
        }
    }
}

/// Blocks `[start, start + count)` of the child, as a device of its own.
pub struct SplitNode {
    geometry: Geometry,
    /// First block of the part on the child.
    start_block: u64,
    /// Made as an equal share of the base (no `split_size_mb`).
    equal_share: bool,
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
            equal_share: false,
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

    /// Keeps its size whatever the base does, as SPDK's split does: the
    /// parts lie side by side, so a part cannot grow without moving the
    /// next one's data. A base shrinking under the part is refused, and so
    /// is any new size of the base under an equal-share part that is not
    /// whole MiB: save_config replays such a split as `split_count` alone,
    /// which on the new size would lay the parts out anew (a whole-MiB
    /// part is replayed with its size, `split_size_mb`, instead).
    fn child_resized(
        &self,
        _slot: usize,
        children: &[Geometry],
        _current: Geometry,
    ) -> Result<Option<Geometry>, String> {
        self.check_children(children)?;
        if self.equal_share && self.geometry.size() % MIB != 0 {
            return Err(format!(
                "its parts are an equal share of the base ({} bytes each, not whole MiB): \
                 on a base of another size they would be laid out anew",
                self.geometry.size()
            ));
        }
        Ok(None)
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
