//! The block-device node trait.

use pollux_poller::Reactor;

use crate::io::{Io, IoError, IoOp};

/// Size and alignment of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Logical block size in bytes (512 or 4096).
    pub block_size: u32,
    /// Number of logical blocks.
    pub block_count: u64,
    /// Buffer address alignment the node requires (1 = none). I/O with less
    /// aligned buffers is bounced or refused by the node, never corrupted.
    pub required_align: u32,
    /// Alignment (bytes) at which I/O is most efficient.
    pub optimal_align: u32,
}

impl Geometry {
    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.block_count * self.block_size as u64
    }

    /// Checks an I/O's range against this geometry: block aligned, inside the
    /// device, and with a buffer of the right length.
    pub fn check(&self, io: &Io) -> Result<(), IoError> {
        if io.op == IoOp::Flush {
            return Ok(());
        }
        let bs = self.block_size as u64;
        if io.offset % bs != 0 || io.len % bs != 0 || io.len == 0 {
            return Err(IoError::Misaligned {
                offset: io.offset,
                len: io.len,
                block_size: self.block_size,
            });
        }
        let size = self.size();
        match io.offset.checked_add(io.len) {
            Some(end) if end <= size => {}
            _ => {
                return Err(IoError::OutOfRange {
                    offset: io.offset,
                    len: io.len,
                    size,
                })
            }
        }
        if io.op.has_data() && io.buf.len() as u64 != io.len {
            return Err(IoError::BufferMismatch {
                buf: io.buf.len() as u64,
                len: io.len,
            });
        }
        Ok(())
    }
}

/// A block device in the graph: a leaf that executes I/O (null, ram, file)
/// or a filter that forwards it to its children (passthru, split, error,
/// delay, RAID).
///
/// Nodes are shared by every reactor. Whatever a reactor needs for itself
/// (a ring, buffers, counters, the I/O a filter holds) goes in its
/// `Channel`, created the first time that reactor submits to the node
/// (SPDK's io_channel model), and only ever touched, and dropped, by that
/// reactor: it need not be `Send`.
///
/// A filter either rewrites and routes each I/O synchronously (`route`,
/// the fast path: passthru, split), or takes it over in `execute` and owns
/// it: forwards it now or later, splits it into child I/Os, or issues I/O
/// of its own. See [`crate::filter`] for that API and its rules.
pub trait BlockNode: Send + Sync + 'static {
    /// Per-reactor state.
    type Channel: 'static;

    /// The node kind, as written in configs (`null`, `ram`, `file`, ...).
    fn kind(&self) -> &'static str;

    /// Size and alignment.
    fn geometry(&self) -> Geometry;

    /// How many children the node takes: 0 for leaves, 1 for filters.
    fn num_children(&self) -> usize {
        0
    }

    /// Whether the node must present exactly its children's size (block
    /// size and count), checked whenever it gets a child: true for filters
    /// that pass I/O through unchanged. Nodes whose geometry derives from
    /// their children (split, RAID, concat) return false and check them in
    /// `check_children`.
    fn same_geometry_as_children(&self) -> bool {
        true
    }

    /// Checks the children's geometries (in slot order) when the node is
    /// added and when one of its children is replaced; an `Err` refuses
    /// the change with its reason. Checked under the graph's writer lock,
    /// so the geometries are the ones the change publishes.
    fn check_children(&self, _children: &[Geometry]) -> Result<(), String> {
        Ok(())
    }

    /// For filters: which child (index into the node's edges) `io` goes to,
    /// after any rewriting of the request. Leaves, and filters that take
    /// the I/O over, return `None`: the graph then calls `execute`.
    fn route(&self, _io: &mut Io) -> Option<usize> {
        None
    }

    /// Creates this reactor's channel.
    fn create_channel(&self, r: &Reactor) -> Self::Channel;

    /// Runs `io` (already range-checked against `geometry`). Must complete it
    /// exactly once, with `Io::complete` from an asynchronous completion or
    /// `Io::complete_later` when the work was done synchronously. A filter
    /// may instead pass it on with `Io::forward`, now or from a later
    /// callback on this reactor, which then completes it.
    fn execute(&self, r: &Reactor, ch: &Self::Channel, io: Io);

    /// A leaf is about to present `block_count` blocks (`Graph::resize`):
    /// called on the control thread before the new size is published, and
    /// again with the old count if the change is refused afterwards. Nodes
    /// that check ranges themselves start accepting the new range here.
    /// `false`: this kind cannot change size (nothing is published).
    fn resize(&self, _block_count: u64) -> bool {
        false
    }

    /// The size of the backing store now, in bytes, for a rescan
    /// (`Graph::rescan`): what a file whose length changed behind the
    /// node's back holds. `None`: the node has no backend that can change
    /// size (its size changes only through `Graph::resize`).
    fn backend_size(&self) -> Option<std::io::Result<u64>> {
        None
    }

    /// For nodes with children: the geometry this node presents once child
    /// `slot` took geometry `children[slot]` (a resize below it; `children`
    /// are all of its children's geometries now, in slot order), given its
    /// own `current` one; `None` if the node keeps its size. The default fits
    /// the one-child filters that forward I/O unchanged (they must look
    /// exactly like their child: `same_geometry_as_children`); a node whose
    /// geometry derives from its children (split, RAID) keeps its size
    /// unless it computes its own. `Err` refuses the resize with its reason
    /// (a child shrinking under data the node maps there, a mirror copying
    /// it): nothing is published.
    fn child_resized(
        &self,
        slot: usize,
        children: &[Geometry],
        current: Geometry,
    ) -> Result<Option<Geometry>, String> {
        Ok(
            (self.num_children() == 1 && self.same_geometry_as_children()).then_some(Geometry {
                block_count: children[slot].block_count,
                ..current
            }),
        )
    }

    /// Called on the control thread once the node has left the graph (it
    /// is retired: nothing new reaches it), before the graph waits for the
    /// I/O pinned on it to drain. A filter holding I/O that would otherwise
    /// never complete (error injection's `pending`) completes or forwards
    /// it here, on its reactors (`handle`), or the removal waits forever.
    fn retiring(&self, _handle: &pollux_poller::Handle) {}

    /// Called on the control thread once the node has left the graph and
    /// its in-flight I/O has drained on every reactor, and at shutdown:
    /// make data durable and release backend resources.
    fn close(&self) {}
}
