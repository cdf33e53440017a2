//! The RAID node's data path: one instance per membership (adding or
//! removing a member publishes a new instance in place of the old, see
//! `array`), sharing its array's failure marks with the instances before
//! and after it.
//!
//! raid0 and concat I/O that stays on one member takes the graph's
//! synchronous route (offset rewritten, no fan-out); the rest is split
//! into child I/O per strip or member with the filter API's `Parent`.
//! raid1 reads go to one readable member, round robin, and retry on the
//! next one if it fails; raid1 writes go to every member and succeed if one
//! member took them. A member whose I/O fails is marked failed and gets no
//! more I/O: the array runs degraded.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pollux_poller::Reactor;

use super::layout::{Layout, Level};
use super::rebuild::{Fence, Outcome, Ticket, WriteRoute};
use crate::filter::Parent;
use crate::io::{Io, IoError, IoOp, IoResult, IoSink};
use crate::node::{BlockNode, Geometry};

/// How often a reactor retries the writes a rebuild window holds: the
/// window is one read and one write of at most a few MiB, so ~50 µs
/// checks find it moved soon after it did without spinning.
const WAITING_RETRY: Duration = Duration::from_micros(50);

/// A rebuild under way on this instance: the slot being copied onto and
/// its fence.
#[derive(Clone)]
pub(crate) struct RebuildSlot {
    pub(crate) slot: usize,
    pub(crate) fence: Arc<Fence>,
}

/// A member in an array slot. It stays the same object across
/// memberships for as long as it stays in its slot, so a failure that I/O
/// of an older membership reports marks it in the newer one too; a new
/// member in the slot (after a removal or a failure) is a new `Member`.
pub(crate) struct Member {
    pub(crate) name: String,
    failed: AtomicBool,
}

impl Member {
    pub(crate) fn new(name: String) -> Member {
        Member {
            name,
            failed: AtomicBool::new(false),
        }
    }

    /// True once its I/O failed. Read per I/O: a read-mostly line, written
    /// once.
    #[inline]
    pub(crate) fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// Marks it failed (the first failure logs).
    pub(crate) fn fail(&self, array: &str, e: &IoError) {
        if !self.failed.swap(true, Ordering::Relaxed) {
            tracing::warn!(array, member = %self.name, error = %e, "RAID member failed; the array runs degraded");
        }
    }
}

/// One membership of an array: what its I/O needs, shared with the
/// channels' completion sinks.
pub(crate) struct Shape {
    pub(crate) name: String,
    pub(crate) layout: Layout,
    /// Each array slot's member, `None` if the slot is empty.
    pub(crate) members: Box<[Option<Arc<Member>>]>,
    /// Each array slot's graph edge (child slot), `None` if empty.
    pub(crate) edge: Box<[Option<usize>]>,
    /// The array slot of each graph edge, in edge order.
    pub(crate) slot_of_edge: Box<[usize]>,
    pub(crate) rebuild: Option<RebuildSlot>,
}

impl Shape {
    #[inline]
    fn member(&self, s: usize) -> Option<&Member> {
        self.members.get(s)?.as_deref()
    }

    /// True if array slot `s` may serve reads: present, not failed, and
    /// not a rebuild target still being copied.
    fn readable(&self, s: usize) -> bool {
        self.member(s).is_some_and(|m| !m.is_failed())
            && match &self.rebuild {
                Some(rb) if rb.slot == s => rb.fence.target_readable(),
                _ => true,
            }
    }

    /// True if array slot `s` takes writes (of a range the fence allows).
    fn writable(&self, s: usize) -> bool {
        self.member(s).is_some_and(|m| !m.is_failed())
    }

    /// The next readable slot after `after` (cyclically), before `start`.
    fn next_readable(&self, after: usize, start: usize) -> Option<usize> {
        let n = self.members.len();
        (1..n)
            .map(|k| (after + k) % n)
            .take_while(|&s| s != start)
            .find(|&s| self.readable(s))
    }

    fn fail(&self, s: usize, e: &IoError) {
        if let Some(m) = self.member(s) {
            m.fail(&self.name, e);
        }
    }
}

/// The RAID node of one membership.
pub struct RaidNode {
    shape: Arc<Shape>,
    geometry: Geometry,
    /// The control plane's handle (`Array::find`).
    pub(crate) array: Arc<super::array::Array>,
}

impl RaidNode {
    pub(crate) fn new(shape: Arc<Shape>, array: Arc<super::array::Array>) -> RaidNode {
        let bs = shape.layout.block_size();
        let geometry = Geometry {
            block_size: bs,
            block_count: shape.layout.size() / u64::from(bs),
            required_align: 1,
            optimal_align: bs,
        };
        RaidNode {
            shape,
            geometry,
            array,
        }
    }
}

/// A reactor's part of the node.
pub struct RaidChannel {
    state: Rc<ChannelState>,
    _sink: Rc<ChildSink>,
}

struct ChannelState {
    shape: Arc<Shape>,
    /// Where the children complete: the one sink of this channel (weak, as
    /// the sink holds the state).
    sink: RefCell<std::rc::Weak<ChildSink>>,
    /// raid1: where the next read goes.
    next_read: Cell<usize>,
    /// Writes a rebuild window holds, retried by a timer.
    waiting: RefCell<VecDeque<Io>>,
    retry_armed: Cell<bool>,
}

/// Child tags: the array slot the child went to.
fn tag_of(slot: usize) -> u64 {
    slot as u64
}

// `Parent::user` bits for raid1 writes: members that took the write, and
// the fence ticket (present, parity).
const USER_OK_MASK: u64 = 0xffff_ffff;
const USER_TICKET: u64 = 1 << 32;
const USER_PARITY: u64 = 1 << 33;

struct ChildSink {
    state: Rc<ChannelState>,
}

impl IoSink for ChildSink {
    fn io_done(&self, r: &Reactor, child: Io, result: IoResult) {
        let Some(parent) = Parent::of(&child) else {
            // Every child of this node is made by `Parent::child`.
            debug_assert!(false, "a RAID child without a parent");
            return;
        };
        let slot = child.tag as usize;
        drop(child);
        let shape = &*self.state.shape;
        match shape.layout.level() {
            Level::Raid0 | Level::Concat => parent.record(result),
            Level::Raid1 if parent.op() == IoOp::Read => {
                if let Err(e) = result {
                    shape.fail(slot, &e);
                    // Retry on the next readable member; the parent's user
                    // value is the slot the read started at.
                    let start = parent.user() as usize;
                    match shape.next_readable(slot, start) {
                        Some(s) => {
                            let (offset, len) = (parent.offset(), parent.len());
                            submit_piece(r, &parent, shape, &self.state, s, 0, offset, len);
                            return;
                        }
                        None => parent.record(Err(e)),
                    }
                }
            }
            Level::Raid1 => match result {
                Ok(()) => parent.set_user(parent.user() + 1),
                Err(e) => shape.fail(slot, &e),
            },
        }
        finish(r, parent, shape);
    }
}

/// Completes `parent` if this was its last child, with raid1's rule for
/// writes: they succeed if any member took them.
fn finish(r: &Reactor, parent: Parent, shape: &Shape) {
    if !parent.is_last() {
        return;
    }
    if shape.layout.level() == Level::Raid1 && parent.op() != IoOp::Read {
        let u = parent.user();
        if u & USER_TICKET != 0 {
            if let Some(rb) = &shape.rebuild {
                let parity = usize::from(u & USER_PARITY != 0);
                rb.fence.exit(r.index(), Ticket::from_parity(parity));
            }
        }
        if u & USER_OK_MASK == 0 {
            parent.record(Err(IoError::Backend(libc::EIO)));
        }
    }
    parent.complete_if_last(r);
}

/// Submits the parent's range `[at, at+len)` as a child at `offset` on
/// array slot `slot`.
#[allow(clippy::too_many_arguments)]
fn submit_piece(
    r: &Reactor,
    parent: &Parent,
    shape: &Shape,
    state: &ChannelState,
    slot: usize,
    at: u64,
    offset: u64,
    len: u64,
) {
    // Callers pick present slots; the sink lives as long as the channel.
    let (Some(edge), Some(sink)) = (shape.edge[slot], state.sink.borrow().upgrade()) else {
        parent.record(Err(IoError::NoDevice));
        return;
    };
    let child = parent.child(parent.op(), offset, len, at, sink, tag_of(slot));
    parent.submit(r, edge, child);
}

impl BlockNode for RaidNode {
    type Channel = RaidChannel;

    fn kind(&self) -> &'static str {
        "raid"
    }

    fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn num_children(&self) -> usize {
        self.shape.slot_of_edge.len()
    }

    fn same_geometry_as_children(&self) -> bool {
        false
    }


    fn check_children(&self, children: &[Geometry]) -> Result<(), String> {
        for (edge, g) in children.iter().enumerate() {
            let Some(&slot) = self.shape.slot_of_edge.get(edge) else {
                return Err(format!("{} children for {} members", children.len(), self.shape.slot_of_edge.len()));
            };
            if g.block_size != self.geometry.block_size {
                return Err(format!(
                    "member in slot {slot} has {}-byte blocks, the array {}",
                    g.block_size, self.geometry.block_size
                ));
            }
            if g.size() < self.shape.layout.member_size(slot) {
                return Err(format!(
                    "member in slot {slot} has {} bytes, the array uses {}",
                    g.size(),
                    self.shape.layout.member_size(slot)
                ));
            }
        }
        Ok(())
    }

    /// Grows with its members as SPDK's raid0 and raid1 do, and concat
    /// by its last member, with no data moving (`Layout::grown_size`). A
    /// member shrinking under what the array uses of it is refused, and so
    /// is a growth while a rebuild copies (its window covers the old size).
    fn child_resized(
        &self,
        _edge: usize,
        children: &[Geometry],
        current: Geometry,
    ) -> Result<Option<Geometry>, String> {
        let layout = self.shape.layout.with_size(current.size());
        let mut sizes = vec![None; self.shape.members.len()];
        for (edge, g) in children.iter().enumerate() {
            let Some(&slot) = self.shape.slot_of_edge.get(edge) else {
                return Ok(None);
            };
            let used = layout.member_size(slot);
            if g.size() < used {
                return Err(format!(
                    "the array uses {used} bytes of its member in slot {slot}"
                ));
            }
            sizes[slot] = Some(g.size());
        }
        let size = layout.grown_size(&sizes);
        if layout.level() == Level::Concat {
            // A member before the last holds data up to where the next
            // one's starts; an array assembled again over it (a restart, a
            // replayed save_config) would start the next member later.
            let last = self.shape.members.len() - 1;
            if let Some((slot, _)) = sizes[..last]
                .iter()
                .enumerate()
                .find(|(i, s)| s.is_some_and(|s| s / layout.strip_unit() * layout.strip_unit() > layout.member_size(*i)))
            {
                return Err(format!(
                    "growing the member in slot {slot}, before the last, would move the data of the members after it the next time the concat is assembled"
                ));
            }
        }
        if size == current.size() {
            return Ok(None);
        }
        if let Some(rb) = self
            .shape
            .rebuild
            .as_ref()
            .filter(|rb| rb.fence.outcome() == Outcome::Running)
        {
            return Err(format!(
                "a rebuild onto slot {} runs; resize once it is done",
                rb.slot
            ));
        }
        Ok(Some(Geometry {
            block_count: size / u64::from(current.block_size),
            ..current
        }))
    }

    #[inline]
    fn route(&self, io: &mut Io) -> Option<usize> {
        // raid0 and concat data I/O inside one strip or member: rewrite
        // and route, as passthru would; everything else is split.
        if !io.op.has_data() {
            return None;
        }
        let e = self.shape.layout.single_extent(io.offset, io.len)?;
        let edge = self.shape.edge[e.member]?;
        io.offset = e.offset;
        Some(edge)
    }

    fn create_channel(&self, _r: &Reactor) -> RaidChannel {
        let state = Rc::new(ChannelState {
            shape: self.shape.clone(),
            sink: RefCell::new(std::rc::Weak::new()),
            next_read: Cell::new(0),
            waiting: RefCell::new(VecDeque::new()),
            retry_armed: Cell::new(false),
        });
        let sink = Rc::new(ChildSink {
            state: state.clone(),
        });
        *state.sink.borrow_mut() = Rc::downgrade(&sink);
        // The channel keeps the sink alive; the state only points at it.
        RaidChannel { state, _sink: sink }
    }

    fn execute(&self, r: &Reactor, ch: &RaidChannel, io: Io) {
        start(r, &ch.state, io);
    }
}

/// Starts an array I/O on this reactor.
fn start(r: &Reactor, state: &Rc<ChannelState>, io: Io) {
    let shape = &*state.shape;
    let layout = &shape.layout;
    match layout.level() {
        Level::Raid0 | Level::Concat => {
            let op = io.op;
            let (offset, len) = (io.offset, io.len);
            let parent = Parent::new(io);
            let mut pieces = Vec::new();
            match op {
                IoOp::Read | IoOp::Write => layout.for_each_extent(offset, len, |e| pieces.push(e)),
                IoOp::WriteZeroes | IoOp::Discard => {
                    layout.for_each_member_range(offset, len, |e| pieces.push(e))
                }
                IoOp::Flush => {
                    for s in 0..layout.members() {
                        pieces.push(super::layout::Extent {
                            member: s,
                            offset: 0,
                            len: 0,
                            at: 0,
                        });
                    }
                }
            }
            for e in pieces {
                submit_piece(r, &parent, shape, state, e.member, e.at, e.offset, e.len);
            }
            // If every piece failed to submit, the children completed
            // later anyway (`complete_later`): the parent finishes there.
            finish(r, parent, shape);
        }
        Level::Raid1 if io.op == IoOp::Read => {
            let n = shape.members.len();
            let first = state.next_read.get() % n;
            state.next_read.set(first + 1);
            let pick = if shape.readable(first) {
                Some(first)
            } else {
                shape.next_readable(first, first)
            };
            let Some(s) = pick else {
                io.complete_later(r, Err(IoError::Backend(libc::EIO)));
                return;
            };
            let len = io.len;
            let offset = io.offset;
            let parent = Parent::new(io);
            parent.set_user(s as u64);
            submit_piece(r, &parent, shape, state, s, 0, offset, len);
            finish(r, parent, shape);
        }
        Level::Raid1 => raid1_write(r, state, io),
    }
}

fn raid1_write(r: &Reactor, state: &Rc<ChannelState>, io: Io) {
    let shape = &*state.shape;
    let (offset, len) = (io.offset, io.len);
    let mut user = 0;
    let mut skip_target = None;
    if let Some(rb) = &shape.rebuild {
        match rb.fence.outcome() {
            Outcome::Done => {}
            Outcome::Running if io.op != IoOp::Flush => {
                match rb.fence.enter(r.index(), offset, len) {
                    (WriteRoute::Wait, _) => {
                        hold(r, state, io);
                        return;
                    }
                    (route, ticket) => {
                        if let Some(t) = ticket {
                            user |= USER_TICKET;
                            if t.parity() == 1 {
                                user |= USER_PARITY;
                            }
                        }
                        if route == WriteRoute::SkipTarget {
                            skip_target = Some(rb.slot);
                        }
                    }
                }
            }
            // A flush goes to the target too: it makes durable whatever
            // it holds. A failed or stopped rebuild's target takes nothing.
            Outcome::Running => {}
            Outcome::Failed | Outcome::Stopped => skip_target = Some(rb.slot),
        }
    }
    let parent = Parent::new(io);
    parent.set_user(user);
    let mut sent = 0;
    for s in 0..shape.members.len() {
        if Some(s) == skip_target || !shape.writable(s) {
            continue;
        }
        submit_piece(r, &parent, shape, state, s, 0, offset, len);
        sent += 1;
    }
    if sent == 0 {
        parent.record(Err(IoError::Backend(libc::EIO)));
    }
    finish(r, parent, shape);
}

/// Holds a write the rebuild window covers, and arms the retry.
fn hold(r: &Reactor, state: &Rc<ChannelState>, io: Io) {
    state.waiting.borrow_mut().push_back(io);
    if state.retry_armed.replace(true) {
        return;
    }
    let state = state.clone();
    r.add_timer(WAITING_RETRY, move |r| retry(r, &state));
}

fn retry(r: &Reactor, state: &Rc<ChannelState>) {
    state.retry_armed.set(false);
    let held: Vec<Io> = state.waiting.borrow_mut().drain(..).collect();
    for io in held {
        // Each goes through the fence again: it waits again if the window
        // has not moved past it.
        raid1_write(r, state, io);
    }
}
