//! An immutable version of the block graph, as the reactors see it.

use std::collections::HashMap;
use std::sync::Arc;

use pollux_poller::Reactor;

use crate::cell::DynNode;
use crate::io::{Io, IoError};

/// Stable identifier of a node slot in a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NodeId(pub(crate) u32);

/// Stable identifier of a root: what a front-end holds to submit I/O.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RootId(pub(crate) u32);

#[derive(Clone)]
pub(crate) struct NodeEntry {
    pub(crate) cell: Arc<dyn DynNode>,
    /// The node's geometry, copied at publication so the per-I/O range
    /// check costs no virtual call (a resize publishes a new snapshot).
    pub(crate) geometry: crate::Geometry,
    /// Edges to children, in the node's child-slot order.
    pub(crate) children: Vec<NodeId>,
}

#[derive(Clone)]
pub(crate) struct RootEntry {
    pub(crate) name: String,
    pub(crate) node: NodeId,
}

/// One published version of the graph: nodes, parent→child edges and named
/// roots. Never modified after publication.
#[derive(Clone, Default)]
pub struct Snapshot {
    pub(crate) generation: u64,
    pub(crate) nodes: Vec<Option<NodeEntry>>,
    pub(crate) roots: Vec<Option<RootEntry>>,
    pub(crate) names: HashMap<String, NodeId>,
}

impl Snapshot {
    /// Publication number of this version.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Routes `io` from `root` down to a leaf and starts it there. Any
    /// failure completes the I/O with an error; it never panics.
    #[inline]
    pub fn submit(&self, r: &Reactor, root: RootId, mut io: Io) {
        io.submitted = crate::latency::now_raw();
        let Some(mut id) = self.root_node(root) else {
            io.complete_later(r, Err(IoError::NoDevice));
            return;
        };
        loop {
            let Some(entry) = self.entry(id) else {
                io.complete_later(r, Err(IoError::NoDevice));
                return;
            };
            let cell = &*entry.cell;
            if let Err(e) = io.path.push(r, cell.core()) {
                io.complete_later(r, Err(e));
                return;
            }
            if let Err(e) = entry.geometry.check(&io) {
                io.complete_later(r, Err(e));
                return;
            }
            match cell.route(&mut io) {
                None => {
                    cell.execute(r, io);
                    return;
                }
                Some(slot) => match entry.children.get(slot) {
                    Some(child) => id = *child,
                    None => {
                        io.complete_later(r, Err(IoError::NoDevice));
                        return;
                    }
                },
            }
        }
    }

    #[inline]
    pub(crate) fn entry(&self, id: NodeId) -> Option<&NodeEntry> {
        self.nodes.get(id.0 as usize)?.as_ref()
    }

    #[inline]
    pub(crate) fn root_node(&self, root: RootId) -> Option<NodeId> {
        Some(self.roots.get(root.0 as usize)?.as_ref()?.node)
    }

    /// The node a name refers to.
    pub fn node_id(&self, name: &str) -> Option<NodeId> {
        self.names.get(name).copied()
    }

    /// The root with this name.
    pub fn root_id(&self, name: &str) -> Option<RootId> {
        self.roots.iter().enumerate().find_map(|(i, r)| match r {
            Some(r) if r.name == name => Some(RootId(i as u32)),
            _ => None,
        })
    }

    /// Geometry of the node a root points at.
    pub fn root_geometry(&self, root: RootId) -> Option<crate::Geometry> {
        Some(self.entry(self.root_node(root)?)?.geometry)
    }

    /// Geometry of the leaf an I/O through `root` ends at, following each
    /// filter's first child (what routing does for passthru filters).
    pub fn leaf_geometry(&self, root: RootId) -> Option<crate::Geometry> {
        let mut id = self.root_node(root)?;
        for _ in 0..crate::io::MAX_DEPTH {
            let e = self.entry(id)?;
            match e.children.first() {
                Some(c) => id = *c,
                None => return Some(e.geometry),
            }
        }
        None
    }

    pub(crate) fn live_nodes(&self) -> impl Iterator<Item = (NodeId, &NodeEntry)> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| Some((NodeId(i as u32), n.as_ref()?)))
    }

    pub(crate) fn live_roots(&self) -> impl Iterator<Item = (RootId, &RootEntry)> {
        self.roots
            .iter()
            .enumerate()
            .filter_map(|(i, n)| Some((RootId(i as u32), n.as_ref()?)))
    }
}
