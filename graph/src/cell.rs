//! Type erasure: a `BlockNode` with its per-reactor channels and counters.

use pollux_poller::{PerReactor, Reactor};

use crate::io::Io;
use crate::node::{BlockNode, Geometry};
use crate::pin::NodeCore;

/// The object-safe face of a node that the snapshot stores.
pub(crate) trait DynNode: Send + Sync {
    fn core(&self) -> &NodeCore;
    fn kind(&self) -> &'static str;
    fn geometry(&self) -> Geometry;
    fn route(&self, io: &mut Io) -> Option<usize>;
    fn execute(&self, r: &Reactor, io: Io);
    fn close(&self);
    fn resize(&self, block_count: u64) -> bool;
    fn backend_size(&self) -> Option<std::io::Result<u64>>;
    fn child_resized(&self, slot: usize, child: Geometry, current: Geometry) -> Option<Geometry>;
}

pub(crate) struct NodeCell<N: BlockNode> {
    core: NodeCore,
    node: N,
    channels: PerReactor<N::Channel>,
}

impl<N: BlockNode> NodeCell<N> {
    pub(crate) fn new(name: String, node: N, handle: &pollux_poller::Handle) -> Self {
        NodeCell {
            core: NodeCore::new(name, handle.num_reactors()),
            node,
            channels: PerReactor::new(handle),
        }
    }
}

impl<N: BlockNode> DynNode for NodeCell<N> {
    fn core(&self) -> &NodeCore {
        &self.core
    }
    fn kind(&self) -> &'static str {
        self.node.kind()
    }
    fn geometry(&self) -> Geometry {
        self.node.geometry()
    }
    #[inline]
    fn route(&self, io: &mut Io) -> Option<usize> {
        self.node.route(io)
    }
    #[inline]
    fn execute(&self, r: &Reactor, io: Io) {
        let ch = self.channels.get_or_init(r, || self.node.create_channel(r));
        self.node.execute(r, ch, io);
    }
    fn close(&self) {
        self.node.close();
    }
    fn resize(&self, block_count: u64) -> bool {
        self.node.resize(block_count)
    }
    fn backend_size(&self) -> Option<std::io::Result<u64>> {
        self.node.backend_size()
    }
    fn child_resized(&self, slot: usize, child: Geometry, current: Geometry) -> Option<Geometry> {
        self.node.child_resized(slot, child, current)
    }
}
