//! The filter API: nodes that own their I/O instead of routing it.
//!
//! `BlockNode::route` rewrites an I/O and sends it to one child slot, in the
//! same call: the fast path, which passthru and split use. A filter that
//! needs more returns `None` from `route` and gets the I/O in `execute`,
//! already pinned on the filter and range-checked against it. From there it
//! may:
//!
//! - **forward** it to a child slot, now or later from any callback on the
//!   same reactor (a timer, a poller, another I/O's completion):
//!   [`Io::forward`]. Delay, QoS queueing and error injection's `pending`
//!   hold the I/O in their channel meanwhile (a channel may hold `Io`s: it
//!   never leaves its reactor).
//! - **fan out**: wrap it in a [`Parent`] and issue child I/Os carrying
//!   sub-ranges of its buffer ([`Parent::child`]) to one or several child
//!   slots ([`Parent::submit`]). Each child completes into the sink the
//!   filter gave it, where the filter sees the result before the parent
//!   completes ([`Parent::of`] finds the parent again): RAID0 strips, RAID1
//!   and mirror writes to every member, read retry on another member, data
//!   corruption on reads, failure accounting.
//! - **issue I/O of its own** that no front-end submitted, from a reactor
//!   callback, with buffers it owns: [`NodeLink::submit`] (RAID1 rebuild,
//!   mirror background copy). A `NodeLink` comes from [`Graph::link`].
//!
//! Children's geometry is checked with `BlockNode::check_children` (and
//! `same_geometry_as_children` for nodes whose size differs from their
//! children's); `Graph::node_geometry` tells a constructor what its members
//! look like.
//!
//! # Why it is sound under RCU
//!
//! An I/O the filter holds stays pinned on every node it passed, the filter
//! included, until it completes. When the filter leaves the published graph
//! its snapshot entry is *retired*, not dropped: still addressable by
//! `NodeId`, with its child edges, but unreachable from roots, parents and
//! names. So an I/O released by a removed filter still finds the filter's
//! children in the current snapshot. `Graph::update` then closes nodes in
//! this order, under its writer lock:
//!
//! 1. publish the version with the node retired, wait for a grace period:
//!    no reactor can reach the node through a root, a parent or a
//!    `NodeLink` any more, and every pin taken by one that did is visible;
//! 2. wait until the node's pins read zero. Nothing pins a retired node
//!    except I/O already pinned on it (forwarding and fanning out from a
//!    held I/O), so zero stays zero. Retired parents are drained before
//!    their retired children, so no retired node can still forward to a
//!    child that is being closed;
//! 3. wait for another grace period: the code of a node may run until the
//!    end of the callback in which its last pin was dropped (a child's
//!    completion that completed the parent);
//! 4. close it, and have each reactor drop its channel;
//! 5. the retired entry is dropped by the next publication, after which
//!    the node's memory goes with the last snapshot that held it.
//!
//! A live node's children are live (`validate`), so a child is never closed
//! while a live or retired-but-draining entry can route to it.
//!
//! Costs: `route` is unchanged. Forwarding costs one snapshot load and one
//! entry look-up; fan-out allocates the parent's shared cell and each
//! child's segment list.
//!
//! # Example: a filter that holds every write for a millisecond
//!
//! ```no_run
//! use std::cell::RefCell;
//! use std::collections::VecDeque;
//! use std::rc::Rc;
//! use std::time::Duration;
//! use pollux_graph::{BlockNode, Geometry, Io, IoOp};
//! use pollux_poller::Reactor;
//!
//! struct Slow(Geometry);
//!
//! impl BlockNode for Slow {
//!     /// The writes held on this reactor: shared with the timers, which
//!     /// outlive the call that armed them.
//!     type Channel = Rc<RefCell<VecDeque<Io>>>;
//!
//!     fn kind(&self) -> &'static str { "slow" }
//!     fn geometry(&self) -> Geometry { self.0 }
//!     fn num_children(&self) -> usize { 1 }
//!     fn route(&self, io: &mut Io) -> Option<usize> {
//!         // Reads take the fast path; writes come to `execute`.
//!         (io.op != IoOp::Write).then_some(0)
//!     }
//!     fn create_channel(&self, _r: &Reactor) -> Self::Channel { Rc::default() }
//!     fn execute(&self, r: &Reactor, held: &Self::Channel, io: Io) {
//!         held.borrow_mut().push_back(io);
//!         let held = held.clone();
//!         r.add_timer(Duration::from_millis(1), move |r| {
//!             // Pinned all along: reaches the child even if the filter was
//!             // removed from the graph meanwhile.
//!             if let Some(io) = held.borrow_mut().pop_front() {
//!                 io.forward(r, 0);
//!             }
//!         });
//!     }
//! }
//! ```
//!
//! # Example: a filter that writes to both its children
//!
//! ```no_run
//! use std::rc::Rc;
//! use pollux_graph::{BlockNode, Geometry, Io, IoOp, IoResult, IoSink, Parent};
//! use pollux_poller::Reactor;
//!
//! struct Both(Geometry);
//!
//! /// Where the children complete.
//! struct Done;
//!
//! impl IoSink for Done {
//!     fn io_done(&self, r: &Reactor, child: Io, result: IoResult) {
//!         let parent = Parent::of(&child).expect("a child of a Parent");
//!         parent.record(result);
//!         drop(child);
//!         // Completes the parent with the first error once every child is done.
//!         parent.complete_if_last(r);
//!     }
//! }
//!
//! impl BlockNode for Both {
//!     type Channel = Rc<dyn IoSink>;
//!
//!     fn kind(&self) -> &'static str { "both" }
//!     fn geometry(&self) -> Geometry { self.0 }
//!     fn num_children(&self) -> usize { 2 }
//!     fn route(&self, io: &mut Io) -> Option<usize> {
//!         (io.op == IoOp::Read).then_some(0)
//!     }
//!     fn create_channel(&self, _r: &Reactor) -> Self::Channel { Rc::new(Done) }
//!     fn execute(&self, r: &Reactor, sink: &Self::Channel, io: Io) {
//!         let (op, offset, len) = (io.op, io.offset, io.len);
//!         let parent = Parent::new(io);
//!         for slot in 0..2 {
//!             let child = parent.child(op, offset, len, 0, sink.clone(), 0);
//!             parent.submit(r, slot, child);
//!         }
//!         // The children keep the parent; the last one completes it.
//!     }
//! }
//! ```
//!
//! [`Graph::link`]: crate::Graph::link

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Weak};

use pollux_poller::Reactor;

use crate::buf::{IoBuf, RawSegment};
use crate::cell::DynNode;
use crate::io::{Io, IoError, IoOp, IoResult, IoSink};
use crate::node::Geometry;
use crate::pin::NodeCore;
use crate::rcu::Rcu;
use crate::snapshot::{walk, NodeEntry, NodeId, Snapshot};
use crate::Graph;

/// Where a node sits: its graph's publication and its slot in it. Set by
/// the graph when it adds the node, read by I/O the node holds.
pub(crate) struct Home {
    rcu: *const Rcu<Snapshot>,
    runtime_id: u64,
    id: AtomicU32,
}

// SAFETY: `rcu` is written only at construction and only read after; it
// is dereferenced only on a reactor of `runtime_id`, under the rules of
// `held_child` (the graph keeps the `Rcu` alive while any I/O is pinned on
// one of its nodes). `id` is an atomic.
unsafe impl Send for Home {}
// SAFETY: as for `Send`.
unsafe impl Sync for Home {}

impl Default for Home {
    fn default() -> Self {
        Home {
            rcu: std::ptr::null(),
            runtime_id: u64::MAX,
            id: AtomicU32::new(u32::MAX),
        }
    }
}

impl Home {
    pub(crate) fn new(rcu: *const Rcu<Snapshot>, runtime_id: u64) -> Self {
        Home {
            rcu,
            runtime_id,
            id: AtomicU32::new(u32::MAX),
        }
    }

    /// Control thread, under the writer lock, before the version holding
    /// the node is published (whose Release orders it before any reader).
    pub(crate) fn set_id(&self, id: NodeId) {
        self.id.store(id.0, Ordering::Relaxed);
    }
}

/// The current snapshot and the entry of the node `io` is held at (the
/// last one it was pinned on), or why there is none.
#[inline]
pub(crate) fn held_entry<'r>(r: &'r Reactor, io: &Io) -> Result<(&'r Snapshot, &'r NodeEntry), IoError> {
    let core = io.path.last().ok_or(IoError::NoDevice)?;
    // SAFETY: `io` pinned this node on this reactor and has not unpinned
    // it (that happens only when it completes, which consumes it, and the
    // borrow of `io` lasts this call), so the node is alive (see
    // `Path::finish`).
    let core: &NodeCore = unsafe { core.as_ref() };
    let home = &core.home;
    if home.rcu.is_null() || home.runtime_id != r.runtime_id() {
        return Err(IoError::NoDevice);
    }
    // SAFETY: `home.rcu` is the publication of the graph holding the node;
    // the graph frees it only when dropped with no I/O in flight on any of
    // its nodes (`Graph`'s drop leaks it otherwise), and `io` is in flight
    // on this one. `r` is a reactor of that graph's runtime (checked), and
    // the borrow lives no longer than `r`'s, i.e. the current callback: a
    // read-side critical section, which the graph's grace periods wait for.
    let snap = unsafe { (*home.rcu).read_unchecked() };
    let id = NodeId(home.id.load(Ordering::Relaxed));
    let entry = snap.entry(id).ok_or(IoError::NoDevice)?;
    // The node's entry, live or retired, stays in every version until the
    // node drained (see the module documentation); anything else here is a
    // graph bug, answered with an error rather than a wrong child.
    if !std::ptr::eq(entry.cell.core(), core) {
        debug_assert!(false, "held I/O lost its node's entry");
        return Err(IoError::NoDevice);
    }
    Ok((snap, entry))
}

/// The current snapshot and the node in child slot `slot` of the node `io`
/// is held at, or why there is none.
#[inline]
fn held_child<'r>(
    r: &'r Reactor,
    io: &Io,
    slot: usize,
) -> Result<(&'r Snapshot, NodeId), IoError> {
    let (snap, entry) = held_entry(r, io)?;
    let child = *entry.children.get(slot).ok_or(IoError::NoDevice)?;
    Ok((snap, child))
}

impl Io {
    /// Filters: passes this I/O, held by the filter it reached last, on to
    /// the filter's child `slot`, which routes and executes it as
    /// `SnapshotGuard::submit` would have. Call it from `execute` or from
    /// any later callback on this reactor (timer, poller, completion): the
    /// I/O stays pinned meanwhile, so even if the filter was removed from
    /// the graph it reaches the filter's children as they are now.
    ///
    /// An I/O no filter holds, or a missing slot, completes with
    /// `NoDevice`.
    pub fn forward(self, r: &Reactor, slot: usize) {
        match held_child(r, &self, slot) {
            Ok((snap, child)) => walk(snap, r, child, self),
            Err(e) => self.complete_later(r, Err(e)),
        }
    }

    /// Filters: the I/O in flight on this reactor at the filter holding
    /// this one, this one included (what SPDK's error bdev counts per
    /// channel for its `queue_depth`).
    pub fn inflight_at_holder(&self, r: &Reactor) -> u64 {
        self.path.last_inflight(r)
    }

    /// Filters: submits `child`, a new I/O that no node has seen (made with
    /// `Io::new` or `Parent::child`), to child `slot` of the filter this I/O
    /// is held at. `self` must stay held (not completed) until `child`
    /// completes: its pin on the filter is what keeps the filter's children
    /// reachable. `Parent::submit` is this for fan-out.
    pub fn submit_child(&self, r: &Reactor, slot: usize, child: Io) {
        if child.path.last().is_some() {
            // Already in flight somewhere: routing it again would pin its
            // nodes twice.
            child.complete_later(r, Err(IoError::Busy));
            return;
        }
        match held_child(r, self, slot) {
            Ok((snap, c)) => walk(snap, r, c, child),
            Err(e) => child.complete_later(r, Err(e)),
        }
    }
}

/// A parent I/O shared by the child I/Os a filter split it into. Each child
/// made by [`Parent::child`] keeps the parent alive (its buffer is a view of
/// the parent's), so the parent's memory outlives every child, and
/// [`Parent::of`] finds the parent from the child at completion. The parent
/// completes once the filter says so and no child is left
/// ([`Parent::complete_if_last`]).
///
/// A cheap handle (`Clone` is an `Rc` clone); it stays on its reactor.
#[derive(Clone)]
pub struct Parent(Rc<ParentCell>);

struct ParentCell {
    /// Taken only when no child is left.
    io: RefCell<Option<Io>>,
    /// What the children reported: the first error wins.
    result: RefCell<IoResult>,
    /// Free for the filter: a member index, a retry count, a state.
    user: Cell<u64>,
    /// Cached from the parent, so reading them needs no borrow.
    op: IoOp,
    offset: u64,
    len: u64,
    tag: u64,
}

impl Parent {
    /// Takes `io` (held by the calling filter) as the parent of children.
    pub fn new(io: Io) -> Parent {
        Parent(Rc::new(ParentCell {
            op: io.op,
            offset: io.offset,
            len: io.len,
            tag: io.tag,
            io: RefCell::new(Some(io)),
            result: RefCell::new(Ok(())),
            user: Cell::new(0),
        }))
    }

    /// The parent's op.
    pub fn op(&self) -> IoOp {
        self.0.op
    }

    /// The parent's offset, in bytes.
    pub fn offset(&self) -> u64 {
        self.0.offset
    }

    /// The parent's length, in bytes.
    pub fn len(&self) -> u64 {
        self.0.len
    }

    /// True for a dataless parent of length 0 (a flush).
    pub fn is_empty(&self) -> bool {
        self.0.len == 0
    }

    /// The submitter's tag of the parent.
    pub fn tag(&self) -> u64 {
        self.0.tag
    }

    /// A value the filter keeps with the parent (0 at first).
    pub fn user(&self) -> u64 {
        self.0.user.get()
    }

    /// Sets the filter's value.
    pub fn set_user(&self, v: u64) {
        self.0.user.set(v)
    }

    /// A child I/O of `op` at `offset` (in the child's address space) for
    /// `len` bytes, whose data is the parent's buffer bytes
    /// `[buf_offset, buf_offset + len)` (none for dataless ops). It
    /// completes into `sink` with `tag`; submit it with `Parent::submit`.
    ///
    /// A data child whose range falls outside the parent's buffer gets a
    /// shorter buffer, which the child node refuses (`BufferMismatch`).
    pub fn child(
        &self,
        op: IoOp,
        offset: u64,
        len: u64,
        buf_offset: u64,
        sink: Rc<dyn IoSink>,
        tag: u64,
    ) -> Io {
        let mut segments = Vec::new();
        if op.has_data() {
            let mut io = self.0.io.borrow_mut();
            if let Some(io) = io.as_mut() {
                view(&mut io.buf, buf_offset, len, &mut segments);
            }
        }
        let keep: Rc<dyn Any> = self.0.clone();
        // SAFETY: the segments are inside the parent's buffer (`view`),
        // which is owned by the parent `Io` in `self.0`. `keep` keeps that
        // cell, hence the buffer, alive as long as the child's buffer; the
        // parent is taken out of the cell (and its buffer handed back) only
        // when no child is left (`complete_if_last`, `try_into_io`), and
        // nothing else touches the parent's buffer meanwhile: `Parent`
        // gives no access to it. Segments of one view do not overlap.
        // Children may share parent bytes (a mirrored write); their nodes
        // only reach them through raw pointers, as with any raw buffer.
        let buf = unsafe { IoBuf::raw(segments, keep) };
        Io::new(op, offset, len, buf, sink, tag)
    }

    /// Submits `child` (from `Parent::child`) to child `slot` of the filter
    /// holding the parent: `Io::submit_child` on the parent.
    pub fn submit(&self, r: &Reactor, slot: usize, child: Io) {
        let io = self.0.io.borrow();
        match io.as_ref() {
            Some(parent) => parent.submit_child(r, slot, child),
            None => child.complete_later(r, Err(IoError::NoDevice)),
        }
    }

    /// The parent of a child made by `Parent::child`.
    pub fn of(child: &Io) -> Option<Parent> {
        match &child.buf {
            IoBuf::Raw { keep, .. } => keep.clone().downcast::<ParentCell>().ok().map(Parent),
            _ => None,
        }
    }

    /// Records a child's result: the first error is what the parent
    /// completes with.
    pub fn record(&self, result: IoResult) {
        let mut r = self.0.result.borrow_mut();
        if r.is_ok() {
            *r = result;
        }
    }

    /// The result recorded so far.
    pub fn result(&self) -> IoResult {
        self.0.result.borrow().clone()
    }

    /// Forgets the errors recorded so far (a retry that succeeded).
    pub fn clear_result(&self) {
        *self.0.result.borrow_mut() = Ok(());
    }

    /// True if no child and no other handle is left: this is the last one.
    pub fn is_last(&self) -> bool {
        Rc::strong_count(&self.0) == 1
    }

    /// Completes the parent with the recorded result if this is the last
    /// handle (every child completed and was dropped); otherwise only drops
    /// this handle. Returns whether it completed.
    pub fn complete_if_last(self, r: &Reactor) -> bool {
        match self.try_into_io() {
            Ok((io, result)) => {
                io.complete(r, result);
                true
            }
            Err(_) => false,
        }
    }

    /// The parent I/O and the recorded result, if this is the last handle:
    /// for filters that change the data before completing it (corruption
    /// injection) or forward it again.
    pub fn try_into_io(self) -> Result<(Io, IoResult), Parent> {
        match Rc::try_unwrap(self.0) {
            Ok(cell) => match cell.io.into_inner() {
                Some(io) => Ok((io, cell.result.into_inner())),
                // Unreachable: the cell is built with its I/O and gives it
                // up only here, consuming the cell.
                None => unreachable!("a parent without its I/O"),
            },
            Err(rc) => Err(Parent(rc)),
        }
    }
}

/// Appends to `out` the segments of `buf`'s bytes `[offset, offset + len)`.
fn view(buf: &mut IoBuf, offset: u64, len: u64, out: &mut Vec<RawSegment>) {
    let (mut skip, mut want) = (offset as usize, len as usize);
    for seg in buf.segments() {
        if want == 0 {
            break;
        }
        if skip >= seg.len {
            skip -= seg.len;
            continue;
        }
        let n = (seg.len - skip).min(want);
        // SAFETY: `skip < seg.len`, so the pointer stays inside the segment.
        let ptr = unsafe { seg.ptr.add(skip) };
        out.push(RawSegment { ptr, len: n });
        want -= n;
        skip = 0;
    }
}

/// A node's own way into the graph, for I/O no front-end submitted (RAID
/// rebuild, mirror copy): submits to the node's children as long as the
/// node is in the published graph. From `Graph::link`; it keeps the graph
/// alive, so keep it in a job that ends (the node's channel, which is
/// dropped when the node is closed, or a job the control plane stops), not
/// in the node itself.
#[derive(Clone)]
pub struct NodeLink {
    graph: Arc<Graph>,
    id: NodeId,
    /// The node, for identity only: a slot reused by another node is not
    /// this node. Weak, so that a link kept in the node's own channel makes
    /// no cycle, yet it keeps the allocation, so no other node can get the
    /// same address.
    cell: Weak<dyn DynNode>,
}

impl NodeLink {
    pub(crate) fn new(graph: Arc<Graph>, id: NodeId, cell: &Arc<dyn DynNode>) -> Self {
        NodeLink {
            graph,
            id,
            cell: Arc::downgrade(cell),
        }
    }

    /// True if `e` is the linked node, in the graph.
    fn is(&self, e: &crate::snapshot::NodeEntry) -> bool {
        !e.retired && std::ptr::addr_eq(Arc::as_ptr(&e.cell), self.cell.as_ptr())
    }

    /// The graph.
    pub fn graph(&self) -> &Arc<Graph> {
        &self.graph
    }

    /// Submits `io` (a new I/O) to child `slot` of the node. Completes it
    /// with `NoDevice` once the node left the graph.
    pub fn submit(&self, r: &Reactor, slot: usize, io: Io) {
        let snap = self.graph.snapshot(r);
        // Only a live node takes new I/O: a retired one is draining, and a
        // pin taken now could come after the drain read zero.
        let child = snap
            .entry(self.id)
            .filter(|e| self.is(e))
            .and_then(|e| e.children.get(slot).copied());
        match child {
            Some(c) if io.path.last().is_none() => walk(&snap, r, c, io),
            _ => io.complete_later(r, Err(IoError::NoDevice)),
        }
    }

    /// True while the node is in the published graph.
    pub fn is_live(&self) -> bool {
        self.graph
            .read(|s| s.entry(self.id).is_some_and(|e| self.is(e)))
    }

    /// Geometry of the node's child `slot` now.
    pub fn child_geometry(&self, slot: usize) -> Option<Geometry> {
        self.graph.read(|s| {
            let e = s.entry(self.id).filter(|e| self.is(e))?;
            Some(s.entry(*e.children.get(slot)?)?.geometry)
        })
    }
}
