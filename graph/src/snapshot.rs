//! An immutable version of the block graph, as the reactors see it.

use std::collections::HashMap;
use std::marker::PhantomData;
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
    /// Which ops the node's latency histogram records (bit
    /// `IoOp::as_index`). Kept here rather than in the node so that the
    /// reactor reads it from the entry it already touches for the range
    /// check, and so that flipping it is a publication like any other
    /// graph change: no flag is shared, and none is written per I/O.
    pub(crate) histogram: crate::latency::OpMask,
    /// A filter that is part of its child, as a QoS limit is part of its
    /// bdev: a root added on the child goes to the filter instead, so an
    /// export made later cannot bypass it.
    pub(crate) bound: bool,
    /// The node left the graph in this version's publication (or it is
    /// closed and waits for the next publication to drop the entry). Its
    /// entry stays addressable by `NodeId`, children and all, but nothing
    /// live points at it: no root, no live parent, no name. I/O that
    /// already pinned it (held by it, or fanned out from it) still routes
    /// through it to its children; new I/O cannot reach it (`NodeLink`
    /// refuses retired nodes). See `Graph::update` for the drain rule.
    pub(crate) retired: bool,
}

#[derive(Clone)]
pub(crate) struct RootEntry {
    pub(crate) name: String,
    pub(crate) node: NodeId,
}

/// One published version of the graph: nodes, parent→child edges and named
/// roots. Never modified after publication.
///
/// Nobody outside the graph can own one: it is neither `Clone` nor
/// `Default`, and the graph hands out only borrows of it. The snapshot holds
/// the nodes' `Arc`s, so an owned copy would keep nodes alive that the graph
/// has drained and closed, and could route I/O to them after the I/O's
/// `Path` pinned memory that the drain no longer accounts for. Reactors
/// read it through a [`SnapshotGuard`], which also carries the only way in
/// (`submit`); the control plane queries it inside [`Graph::read`].
///
/// A clone of the published snapshot does not compile:
///
/// ```compile_fail,E0277
/// # use pollux_graph::{Graph, Snapshot};
/// # use pollux_poller::Reactor;
/// fn keep(g: &Graph, r: &Reactor) -> Snapshot {
///     Clone::clone(&*g.snapshot(r))
/// }
/// ```
///
/// nor does one taken under the writer lock, or a made-up one:
///
/// ```compile_fail,E0277
/// # use pollux_graph::{Graph, Snapshot};
/// fn keep(g: &Graph) -> Snapshot {
///     g.read(|s| Clone::clone(s))
/// }
/// ```
///
/// ```compile_fail,E0599
/// let _ = pollux_graph::Snapshot::default();
/// ```
///
/// while borrowing it for the length of the callback does:
///
/// ```
/// # use pollux_graph::{Geometry, Graph, RootId};
/// # use pollux_poller::Reactor;
/// fn geometry(g: &Graph, r: &Reactor, root: RootId) -> Option<Geometry> {
///     g.snapshot(r).root_geometry(root)
/// }
/// fn geometry_ctl(g: &Graph, root: RootId) -> Option<Geometry> {
///     g.read(|s| s.root_geometry(root))
/// }
/// ```
///
/// [`Graph::read`]: crate::Graph::read
pub struct Snapshot {
    pub(crate) generation: u64,
    pub(crate) nodes: Vec<Option<NodeEntry>>,
    pub(crate) roots: Vec<Option<RootEntry>>,
    pub(crate) names: HashMap<String, NodeId>,
}

/// A reactor's read of the published snapshot: what `Graph::snapshot`
/// returns, valid until the callback that took it returns.
///
/// It borrows the `&Reactor` of that callback, and the reactor passes a
/// quiescent point only between callbacks, so the snapshot it points at
/// cannot be freed while it exists. It is not `Send` (nor is the reactor),
/// it cannot be stored anywhere that outlives the callback, and it owns no
/// node: an I/O submitted through it pins its nodes before the reactor's
/// next quiescent point, which is what `Graph`'s drain waits for. It is
/// only made for a reactor of the graph's own runtime, whose quiescent
/// points the graph's grace periods wait for.
///
/// Kept for a later timer or poller, it does not compile:
///
/// ```compile_fail,E0521
/// # use std::sync::Arc;
/// # use std::time::Duration;
/// # use pollux_graph::{Graph, Io, RootId};
/// # use pollux_poller::Reactor;
/// fn later(g: &Arc<Graph>, r: &Reactor, root: RootId, io: Io) {
///     let s = g.snapshot(r);
///     r.add_timer(Duration::from_millis(1), move |r| s.submit(r, root, io));
/// }
/// ```
///
/// nor sent to another thread:
///
/// ```compile_fail,E0277
/// # use pollux_graph::Graph;
/// # use pollux_poller::Reactor;
/// fn send(g: &Graph, r: &Reactor) {
///     let s = g.snapshot(r);
///     std::thread::scope(|t| {
///         t.spawn(move || s.generation());
///     });
/// }
/// ```
///
/// and I/O cannot be submitted through the control plane's read, where
/// nothing ties the reactor to the graph's runtime:
///
/// ```compile_fail,E0599
/// # use pollux_graph::{Graph, Io, RootId};
/// # use pollux_poller::Reactor;
/// fn submit(g: &Graph, r: &Reactor, root: RootId, io: Io) {
///     g.read(|s| s.submit(r, root, io));
/// }
/// ```
///
/// The intended use, fetching it again in each callback, compiles:
///
/// ```
/// # use std::sync::Arc;
/// # use std::time::Duration;
/// # use pollux_graph::{Graph, Io, RootId};
/// # use pollux_poller::Reactor;
/// fn later(g: &Arc<Graph>, r: &Reactor, root: RootId, io: Io) {
///     let g = g.clone();
///     r.add_timer(Duration::from_millis(1), move |r| g.snapshot(r).submit(r, root, io));
/// }
/// ```
#[derive(Clone, Copy)]
pub struct SnapshotGuard<'r> {
    snap: &'r Snapshot,
    /// Not `Send`/`Sync`: it stands for the reactor's read-side critical
    /// section, which exists only on the reactor's thread.
    _reactor: PhantomData<&'r Reactor>,
}

impl<'r> SnapshotGuard<'r> {
    /// Wraps the published snapshot for reactor `r`.
    ///
    /// # Safety
    /// `snap` must stay allocated for as long as `r` is borrowed: it is the
    /// graph's published snapshot, or one unpublished after `r`'s last
    /// quiescent point, and `r` belongs to the runtime whose grace periods
    /// the graph waits for before freeing it.
    #[inline]
    pub(crate) unsafe fn new(snap: &'r Snapshot, _r: &'r Reactor) -> Self {
        SnapshotGuard {
            snap,
            _reactor: PhantomData,
        }
    }

    /// Routes `io` from `root` down to a leaf and starts it there. Any
    /// failure completes the I/O with an error; it never panics.
    #[inline]
    pub fn submit(&self, r: &Reactor, root: RootId, io: Io) {
        let Some(id) = self.snap.root_node(root) else {
            io.complete_later(r, Err(IoError::NoDevice));
            return;
        };
        walk(self.snap, r, id, io);
    }
}

/// Routes `io` from node `id` down: pins each node it reaches, checks the
/// range against it, and follows `route` until a node executes it (a leaf,
/// or a filter that takes the I/O over). `SnapshotGuard::submit` starts it
/// at a root's node; `Io::forward` and `Io::submit_child` at a child of the
/// filter holding the I/O.
///
/// `s` must be the snapshot published for this reactor's current callback
/// (or one still protected by it): the nodes pinned here are pinned before
/// the reactor's next quiescent point, which is what the drain relies on.
#[inline(always)]
pub(crate) fn walk(s: &Snapshot, r: &Reactor, id: NodeId, mut io: Io) {
    // The routing works on a borrow and the `Io` moves once at the end,
    // into the node or the error path (11 instructions per I/O fewer than
    // moving it through the loop).
    match route(s, r, id, &mut io) {
        Ok(Stop::Execute(cell)) => cell.execute(r, io),
        Ok(Stop::RangeLocked(entry)) => go_on_at(s, r, entry, io),
        Err(e) => io.complete_later(r, Err(e)),
    }
}

/// Where `route` stopped.
enum Stop<'s> {
    /// At the node that executes the I/O.
    Execute(&'s dyn DynNode),
    /// At a node (pinned) with a range lock installed on this reactor: the
    /// lock may hold the I/O, which needs it by value (`go_on_at`).
    RangeLocked(&'s NodeEntry),
}

/// `walk`'s loop: pins each node `io` reaches and checks the range against
/// it, down to the node that executes it.
#[inline(always)]
fn route<'s>(
    s: &'s Snapshot,
    r: &Reactor,
    mut id: NodeId,
    io: &mut Io,
) -> Result<Stop<'s>, IoError> {
    // This op's bit in each node's histogram mask: a node times the I/O
    // only if its bit is set, and the clock is read only once a node on
    // the path does (with every histogram off, never).
    let op_bit = crate::latency::OpMask::of(io.op);
    loop {
        let entry = s.entry(id).ok_or(IoError::NoDevice)?;
        let cell = &*entry.cell;
        let timed = entry.histogram.has(op_bit);
        if timed && !io.path.timed() {
            // The first timed node on the path: the time from here is what
            // its caller, and every node below, would measure.
            io.time = crate::latency::now_raw();
        }
        // A range lock on the node here (`push` read it beside the pin):
        // the rest of this node's work is `go_on_at`'s, out of line.
        if io.path.push(r, cell.core(), timed)? {
            return Ok(Stop::RangeLocked(entry));
        }
        entry.geometry.check(io)?;
        match cell.route(io) {
            None => return Ok(Stop::Execute(cell)),
            Some(slot) => id = *entry.children.get(slot).ok_or(IoError::NoDevice)?,
        }
    }
}

/// Goes on with `io`, held by a range lock at the node it was pinned on
/// last, from where `walk` stopped, against the snapshot published now.
pub(crate) fn resume_held(r: &Reactor, io: Io) {
    match crate::filter::held_entry(r, &io) {
        Ok((snap, entry)) => go_on_at(snap, r, entry, io),
        Err(e) => io.complete_later(r, Err(e)),
    }
}

/// The rest of a node's part of `walk` for an I/O pinned on it when a
/// range lock may be installed there: the lock check (the lock may hold
/// the I/O, and resumes it here later), the range check, then routing on.
/// Out of line: only I/O meeting a lock comes here.
#[cold]
#[inline(never)]
fn go_on_at(s: &Snapshot, r: &Reactor, entry: &NodeEntry, mut io: Io) {
    let cell = &*entry.cell;
    if cell.core().counters[r.index()].range_locked() {
        match crate::range_lock::admit(r, cell.core(), io) {
            Some(go) => io = go,
            None => return,
        }
    }
    if let Err(e) = entry.geometry.check(&io) {
        io.complete_later(r, Err(e));
        return;
    }
    match cell.route(&mut io) {
        None => cell.execute(r, io),
        Some(slot) => match entry.children.get(slot) {
            Some(child) => walk(s, r, *child, io),
            None => io.complete_later(r, Err(IoError::NoDevice)),
        },
    }
}

impl std::ops::Deref for SnapshotGuard<'_> {
    type Target = Snapshot;

    #[inline]
    fn deref(&self) -> &Snapshot {
        self.snap
    }
}

impl Snapshot {
    /// The empty graph (generation 0).
    pub(crate) fn empty() -> Snapshot {
        Snapshot {
            generation: 0,
            nodes: Vec::new(),
            roots: Vec::new(),
            names: HashMap::new(),
        }
    }

    /// A copy for the writer to change and publish as the next version.
    /// Not `Clone`: see the type's documentation.
    pub(crate) fn fork(&self) -> Snapshot {
        Snapshot {
            generation: self.generation,
            nodes: self.nodes.clone(),
            roots: self.roots.clone(),
            names: self.names.clone(),
        }
    }

    /// Publication number of this version.
    pub fn generation(&self) -> u64 {
        self.generation
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

    /// The nodes in the graph (not the retired ones).
    pub(crate) fn live_nodes(&self) -> impl Iterator<Item = (NodeId, &NodeEntry)> {
        self.all_nodes().filter(|(_, e)| !e.retired)
    }

    /// Every entry, retired ones included.
    pub(crate) fn all_nodes(&self) -> impl Iterator<Item = (NodeId, &NodeEntry)> {
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
