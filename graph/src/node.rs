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

    /// Called on the control thread once the node has left the graph and
    /// its in-flight I/O has drained on every reactor, and at shutdown:
    /// make data durable and release backend resources.
    fn close(&self) {}
}
