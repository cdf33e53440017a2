//! LBA range locks: SPDK's `bdev_lock_lba_range`, for an operation that
//! must see no other write to its blocks between its steps (NVMe fused
//! compare-and-write: the compare's read, then the write).
//!
//! No lock and no shared write on the I/O path. Every reactor keeps, for
//! itself, the locks installed on each node (`Local`, reactor-local), and
//! the node's per-reactor counters carry how many there are
//! (`NodeCounters::range_locked`), beside the in-flight pin that walk
//! writes anyway: while it reads zero nothing else is looked at.
//!
//! The protocol, all by message:
//! 1. The requester asks the arbiter (reactor [`ARBITER`]). The arbiter
//!    keeps the granted locks and a queue: a lock that conflicts with a
//!    granted one (same node and overlapping range, or a node above or
//!    below it, whose offsets it cannot compare) waits for its release.
//! 2. To grant one, the arbiter sends "install" to every reactor. A
//!    reactor that installs it holds every new I/O reaching the node
//!    (acquiring), until the I/O already past it on that reactor finished
//!    (its pins on the node are all held ones), then acks and from then on
//!    holds only writes overlapping the range, except the lock's own.
//! 3. Once every reactor acked, the requester is told: its operation runs
//!    with `Io::under_range_lock`.
//! 4. Unlock goes to the arbiter, which sends "remove" to every reactor
//!    (each then resumes the I/O it held) and grants what waited.
//!
//! Messages from one reactor to another arrive in order, so a remove
//! always reaches a reactor before the install of a lock granted after it.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use pollux_poller::Reactor;

use crate::cell::DynNode;
use crate::io::{Io, IoError, IoOp};
use crate::pin::NodeCore;
use crate::snapshot::{NodeId, RootId, Snapshot};
use crate::Graph;

/// The reactor that orders the locks. One for the whole graph: locks on
/// nodes above one another conflict whatever their ranges, which only a
/// view of every lock can see; locks are rare next to I/O (one per
/// compare-and-write), so one reactor handles them.
const ARBITER: usize = 0;

/// A granted lock, owned by the requester until it unlocks it
/// ([`RangeLock::unlock`]) or hands it to the I/O that ends it
/// ([`Io::finishing_range_lock`]). Dropped otherwise (its owner went away),
/// it unlocks itself.
#[must_use = "a range lock holds writes until it is unlocked"]
pub struct RangeLock {
    token: Token,
    /// For the unlock; `None` once it was sent.
    handle: Option<pollux_poller::Handle>,
}

impl std::fmt::Debug for RangeLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RangeLock").field("token", &self.token).finish()
    }
}

/// Bit of `Io::range_lock`: the I/O ends its lock when it completes.
pub(crate) const FINISHING: Token = 1 << 31;

/// A lock's identity, carried by the I/O that runs under it. 32 bits, so
/// that it sits in the padding beside `Io::op` and `Io` stays at 128
/// bytes: the reactor index in the low `REACTOR_BITS`, a per-reactor count
/// above it, `FINISHING` on top. The count wraps after 2^19 locks from one
/// reactor; two locks share a token only if one of them is still alive
/// after half a million later locks on the same reactor, which queue
/// depths (a lock lives for one fused command) rule out.
pub(crate) type Token = u32;

/// Low bits of a token that name the reactor that asked (4096 reactors).
const REACTOR_BITS: u32 = 12;

impl RangeLock {
    pub(crate) fn token(&self) -> Token {
        self.token
    }

    /// The lock's token, for the I/O that will end it.
    pub(crate) fn into_token(mut self) -> Token {
        self.handle = None;
        self.token
    }

    /// Ends the lock: the writes it held go on.
    pub fn unlock(mut self, r: &Reactor) {
        self.handle = None;
        release(r, self.token);
    }
}

impl Drop for RangeLock {
    fn drop(&mut self) {
        let Some(h) = self.handle.take() else { return };
        let token = self.token;
        // Off a reactor's callbacks (its owner was dropped, maybe on a
        // control thread): a full inbox is waited out on a thread of its
        // own rather than here.
        if h.send(ARBITER, move |a| arbiter_release(a, token)).is_err() {
            std::thread::spawn(move || h.send_blocking(ARBITER, move |a| arbiter_release(a, token)));
        }
    }
}

/// Sends the release of `token` to the arbiter.
#[cold]
#[inline(never)]
pub(crate) fn release(r: &Reactor, token: Token) {
    r.send(ARBITER, move |a| arbiter_release(a, token));
}

/// What the requester is told when its lock is granted (or cannot be).
pub type LockDone = Box<dyn FnOnce(&Reactor, Result<RangeLock, IoError>)>;

/// One lock request, as it travels between reactors.
#[derive(Clone, Copy, Debug)]
struct Want {
    token: Token,
    origin: usize,
    node: NodeId,
    /// The node's address, to recognise it (a `NodeId` slot may be
    /// reused by another node once this one is gone).
    core: usize,
    offset: u64,
    len: u64,
}

impl Want {
    fn overlaps(&self, offset: u64, len: u64) -> bool {
        self.offset < offset.saturating_add(len) && offset < self.offset.saturating_add(self.len)
    }
}

/// A lock installed on this reactor.
struct Installed {
    want: Want,
    /// The node, kept for its counters while the lock is installed (it
    /// may leave the graph meanwhile; its memory stays until then).
    cell: Arc<dyn DynNode>,
    /// Still waiting for the I/O already past the node on this reactor.
    acquiring: bool,
}

/// An I/O held at a node (pinned on it) by a lock.
struct Held {
    core: usize,
    io: Io,
}

/// Arbiter state of one granted lock.
struct Granted {
    want: Want,
    graph: Arc<Graph>,
    /// Reactors that have not acked the install yet.
    acks_missing: usize,
}

#[derive(Default)]
struct Inner {
    next_token: Token,
    /// Requester: callbacks of locks asked for, by token.
    asked: Vec<(Token, LockDone)>,
    /// Every reactor: the locks installed here.
    installed: Vec<Installed>,
    held: Vec<Held>,
    recheck_armed: bool,
    /// Arbiter only.
    granted: Vec<Granted>,
    queue: VecDeque<(Want, Arc<Graph>)>,
}

/// The reactor-local state. Borrowed only for bookkeeping, never across a
/// call into nodes or callbacks (which may come back here).
#[derive(Default)]
struct Local(RefCell<Inner>);

fn local(r: &Reactor) -> std::rc::Rc<Local> {
    r.local(|_| Local::default())
}

#[inline]
fn is_write(op: IoOp) -> bool {
    matches!(op, IoOp::Write | IoOp::WriteZeroes | IoOp::Discard)
}

impl Inner {
    fn must_hold(&self, core: usize, io: &Io) -> bool {
        self.installed.iter().any(|l| {
            l.want.core == core
                && (l.acquiring
                    || (is_write(io.op)
                        && io.range_lock & !FINISHING != l.want.token
                        && l.want.overlaps(io.offset, io.len)))
        })
    }

    fn held_on(&self, core: usize) -> u64 {
        self.held.iter().filter(|h| h.core == core).count() as u64
    }
}

/// Walk: `io` reached `core` (pinned on it) on a reactor where a lock is
/// installed on the node. `Some`: it may go on; `None`: it is held.
#[cold]
#[inline(never)]
pub(crate) fn admit(r: &Reactor, core: &NodeCore, io: Io) -> Option<Io> {
    let l = local(r);
    let Ok(mut inner) = l.0.try_borrow_mut() else {
        // Only the bookkeeping here borrows it, and it calls nothing.
        debug_assert!(false, "range lock table borrowed during a walk");
        return Some(io);
    };
    let key = core as *const NodeCore as usize;
    if inner.must_hold(key, &io) {
        inner.held.push(Held { core: key, io });
        None
    } else {
        Some(io)
    }
}

/// Finishes the acquiring locks whose node drained on this reactor, acks
/// them, and resumes what no lock holds any more.
fn recheck(r: &Reactor) {
    let l = local(r);
    let mut acked = Vec::new();
    let again = {
        let mut inner = l.0.borrow_mut();
        for k in 0..inner.installed.len() {
            let i = &inner.installed[k];
            if !i.acquiring {
                continue;
            }
            // Drained when every I/O pinned on the node here is one this
            // table holds (held ones stop before the node's work).
            let inflight = i.cell.core().counters[r.index()].inflight();
            if inflight <= inner.held_on(i.want.core) {
                let token = i.want.token;
                inner.installed[k].acquiring = false;
                acked.push(token);
            }
        }
        let again = !inner.recheck_armed && inner.installed.iter().any(|i| i.acquiring);
        inner.recheck_armed |= again;
        again
    };
    if again {
        // Looked at again on the next loop iteration, until drained: the
        // completion path carries no hook for it (a lock waits for at
        // most the I/O it found in flight, one I/O latency).
        r.add_timer(Duration::ZERO, |r| {
            local(r).0.borrow_mut().recheck_armed = false;
            recheck(r);
        });
    }
    for token in acked {
        r.send(ARBITER, move |a| arbiter_ack(a, token));
    }
    resume(r);
}

/// Resumes, in arrival order, every held I/O no lock holds any more.
fn resume(r: &Reactor) {
    let l = local(r);
    let go: Vec<Io> = {
        let mut inner = l.0.borrow_mut();
        let held = std::mem::take(&mut inner.held);
        let mut go = Vec::new();
        for h in held {
            if inner.must_hold(h.core, &h.io) {
                inner.held.push(h);
            } else {
                go.push(h.io);
            }
        }
        go
    };
    for io in go {
        crate::snapshot::resume_held(r, io);
    }
}

impl Graph {
    /// Locks `[offset, offset + len)` (bytes) of the node `root` points at,
    /// against every other write from any reactor (SPDK's
    /// `bdev_lock_lba_range`). `done` runs on this reactor once no write
    /// to the range is in flight anywhere and new ones are held; with the
    /// lock, the locked operation's I/O goes `Io::under_range_lock`, and
    /// [`RangeLock::unlock`] (or the I/O it is handed to) ends it. Always answered from a later
    /// callback, never from inside this call.
    pub fn lock_range(
        self: &Arc<Self>,
        r: &Reactor,
        root: RootId,
        offset: u64,
        len: u64,
        done: LockDone,
    ) {
        let snap = self.snapshot(r);
        let Some((node, core)) = snap
            .root_node(root)
            .and_then(|id| Some((id, snap.entry(id)?.cell.core() as *const NodeCore as usize)))
        else {
            r.add_timer(Duration::ZERO, move |r| done(r, Err(IoError::NoDevice)));
            return;
        };
        let l = local(r);
        let token = {
            let mut inner = l.0.borrow_mut();
            // Never 0 (the count part), which means "no lock" in an `Io`.
            inner.next_token = (inner.next_token % ((FINISHING >> REACTOR_BITS) - 1)) + 1;
            // Unique across reactors: the reactor index in the low bits.
            let token = (inner.next_token << REACTOR_BITS) | r.index() as Token;
            inner.asked.push((token, done));
            token
        };
        let want = Want {
            token,
            origin: r.index(),
            node,
            core,
            offset,
            len,
        };
        let g = self.clone();
        r.send(ARBITER, move |a| arbiter_request(a, g, want));
    }
}

/// Whether `a` is `b` or lies below it in `snap`.
fn below(snap: &Snapshot, a: NodeId, b: NodeId) -> bool {
    let mut stack = vec![(b, 0usize)];
    while let Some((id, depth)) = stack.pop() {
        if id == a {
            return true;
        }
        if depth >= crate::io::MAX_DEPTH {
            continue;
        }
        if let Some(e) = snap.entry(id) {
            stack.extend(e.children.iter().map(|c| (*c, depth + 1)));
        }
    }
    false
}

fn conflicts(snap: &Snapshot, a: &Want, b: &Want) -> bool {
    if a.core == b.core {
        return a.overlaps(b.offset, b.len);
    }
    below(snap, a.node, b.node) || below(snap, b.node, a.node)
}

fn arbiter_request(a: &Reactor, g: Arc<Graph>, want: Want) {
    local(a).0.borrow_mut().queue.push_back((want, g));
    arbiter_grant(a);
}

/// Grants, in order, each queued lock that conflicts with no granted one
/// (nor with an earlier queued one, so a waiting lock is not starved).
fn arbiter_grant(a: &Reactor) {
    let l = local(a);
    let mut start = Vec::new();
    {
        let mut inner = l.0.borrow_mut();
        let queue = std::mem::take(&mut inner.queue);
        for (w, g) in queue {
            let snap = g.snapshot(a);
            let blocked = inner
                .granted
                .iter()
                .any(|gr| Arc::ptr_eq(&gr.graph, &g) && conflicts(&snap, &gr.want, &w))
                || inner
                    .queue
                    .iter()
                    .any(|(q, qg)| Arc::ptr_eq(qg, &g) && conflicts(&snap, q, &w));
            if blocked {
                inner.queue.push_back((w, g));
            } else {
                inner.granted.push(Granted {
                    want: w,
                    graph: g.clone(),
                    acks_missing: a.num_reactors(),
                });
                start.push((w, g));
            }
        }
    }
    for (w, g) in start {
        for x in 0..a.num_reactors() {
            let g = g.clone();
            a.send(x, move |xr| install(xr, &g, w));
        }
    }
}

fn arbiter_ack(a: &Reactor, token: Token) {
    let l = local(a);
    let origin = {
        let mut inner = l.0.borrow_mut();
        let Some(gr) = inner.granted.iter_mut().find(|gr| gr.want.token == token) else {
            return;
        };
        gr.acks_missing -= 1;
        if gr.acks_missing > 0 {
            return;
        }
        gr.want.origin
    };
    a.send(origin, move |o| granted(o, token));
}

fn arbiter_release(a: &Reactor, token: Token) {
    let l = local(a);
    {
        let mut inner = l.0.borrow_mut();
        let Some(i) = inner.granted.iter().position(|gr| gr.want.token == token) else {
            return;
        };
        inner.granted.swap_remove(i);
    }
    for x in 0..a.num_reactors() {
        a.send(x, move |xr| remove(xr, token));
    }
    arbiter_grant(a);
}

/// Requester: every reactor installed the lock.
fn granted(r: &Reactor, token: Token) {
    let l = local(r);
    let done = {
        let mut inner = l.0.borrow_mut();
        let Some(i) = inner.asked.iter().position(|(t, _)| *t == token) else {
            return;
        };
        inner.asked.swap_remove(i).1
    };
    done(
        r,
        Ok(RangeLock {
            token,
            handle: Some(r.handle()),
        }),
    );
}

/// Every reactor: installs `w` on its node, holding all new I/O there
/// until the I/O already past it on this reactor finished.
fn install(x: &Reactor, g: &Arc<Graph>, w: Want) {
    let snap = g.snapshot(x);
    let found = snap
        .entry(w.node)
        .filter(|e| e.cell.core() as *const NodeCore as usize == w.core)
        .map(|e| e.cell.clone());
    let Some(cell) = found else {
        // The node left the graph: no I/O can reach it to be held.
        x.send(ARBITER, move |a| arbiter_ack(a, w.token));
        return;
    };
    cell.core().counters[x.index()].count_range_lock(true);
    local(x).0.borrow_mut().installed.push(Installed {
        want: w,
        cell,
        acquiring: true,
    });
    recheck(x);
}

/// Every reactor: drops lock `token` and resumes what it held.
fn remove(x: &Reactor, token: Token) {
    let l = local(x);
    {
        let mut inner = l.0.borrow_mut();
        let Some(i) = inner.installed.iter().position(|i| i.want.token == token) else {
            return;
        };
        let gone = inner.installed.remove(i);
        gone.cell.core().counters[x.index()].count_range_lock(false);
    }
    resume(x);
}
