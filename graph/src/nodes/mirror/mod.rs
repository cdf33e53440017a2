//! `mirror`: the filter a mirror job puts above its source (QEMU's
//! blockdev-mirror). Child slot 0 is the source, slot 1 the target.
//!
//! - Reads and flushes go to the source, which stays authoritative until
//!   the pivot.
//! - Writes (and write zeroes, discard) go to the source through the
//!   filter's own I/O; when one completes, the regions it touched are
//!   marked in the dirty bitmap (`bitmap`), so the copier copies them
//!   (again). Marking at completion, and clearing a bit before reading its
//!   region, is what makes the copy converge on the source's contents.
//! - The copier (`copier`) runs on one reactor and copies dirty regions,
//!   source to target, a few at a time. Everything starts dirty.
//! - The pivot (`Mirror::freeze`, then `Graph::redirect_node`, then
//!   `Mirror::release_to_target`): new writes are held in the filter, the
//!   writes already sent to the source finish, the copier empties the
//!   bitmap and the target is flushed; the graph then points every parent
//!   and root of the filter at the target in one publication, and the held
//!   writes go to the target. No write is lost or failed, and none is
//!   acknowledged before it is on the device that ends up exported.
//!
//! The node is a filter on the graph's filter API (`crate::filter`): a
//! write is the `Parent` of its write to the source, held writes are
//! forwarded to the target with `Io::forward`, and the copier's and the
//! pivot's flush go through the mirror's `NodeLink`. So a mirror removed
//! from the graph (pivot or cancel) while it holds or copies is retired
//! and drained like any filter, and what it still holds reaches its
//! children.
//!
//! The held writes live in a reactor-local table keyed by the mirror's id
//! rather than in the node's channel: the control thread's thaw and pivot
//! reach every reactor's held writes (`on_each_reactor`), and a channel is
//! reachable only from the node's own I/O.

mod bitmap;
mod copier;

pub use bitmap::DirtyBitmap;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use pollux_poller::Reactor;

use crate::gate::WriteGate;
use crate::filter::{NodeLink, Parent};
use crate::io::{Io, IoError, IoOp, IoResult, IoSink};
use crate::node::{BlockNode, Geometry};
use crate::Graph;

/// Child slot of the source.
const SOURCE: usize = 0;
/// Child slot of the target.
const TARGET: usize = 1;

/// Ids of the mirrors of this process, for the reactor-local tables.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// How long the pivot waits for writes already sent to the source, and
/// for the copier to empty the bitmap, before it gives up (the mirror is
/// unfrozen and stays): a guest's I/O timeout is 30 s, and held writes
/// must not come near it.
const PIVOT_WAIT: Duration = Duration::from_secs(10);

/// Dirty bytes a mirror past its first pass may still have and be ready
/// for the pivot: under steady writes the bitmap is rarely empty (QEMU's
/// background mirror has the same trouble), and the freeze copies what is
/// left while it holds new writes. 64 MiB takes well under a second on any
/// device worth mirroring to, far inside `PIVOT_WAIT`.
const READY_DIRTY_BYTES: u64 = 64 << 20;

/// Why a mirror step failed.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// The copier stopped on an I/O error.
    #[error("copy failed: {0}")]
    Copy(String),
    /// The mirror did not get in sync within the pivot's wait.
    #[error("not in sync after {0:?} ({1} dirty regions, {2} writes in flight)")]
    NotInSync(Duration, u64, u64),
    /// Flushing the target failed.
    #[error("flushing the target failed: {0}")]
    Flush(IoError),
}

/// What the mirror node, its copier and its job share.
pub struct Mirror {
    id: u64,
    graph: Arc<Graph>,
    geometry: Geometry,
    bitmap: DirtyBitmap,
    /// Counts writes sent to the source; frozen, holds new ones (pivot).
    gate: WriteGate,
    /// The filter left the graph for the target: anything it still sees
    /// goes to the target.
    pivoted: AtomicBool,
    /// Bytes the copier copied.
    copied: AtomicU64,
    /// Copies in flight (raised before a region is taken, so "no copy and
    /// no dirty bit" means in sync).
    copies: AtomicU64,
    /// The copier went once over the whole bitmap (its cursor wrapped, or
    /// it found nothing dirty): what is dirty now was written during the
    /// copy.
    first_pass_done: AtomicBool,
    /// Latched by `ready`: a job once ready stays ready (QEMU's READY).
    ready: AtomicBool,
    /// The copier should stop.
    stop: AtomicBool,
    /// The copier stopped (after `stop`, or on an error).
    stopped: AtomicBool,
    /// The copier's error, if it failed.
    error: Mutex<Option<String>>,
    /// Reactor the copier runs on.
    copier_reactor: usize,
    /// The filter's own way to its children (copier, target flush), set
    /// by `start_copier` once the filter is in the graph.
    link: OnceLock<NodeLink>,
}

impl Mirror {
    /// A mirror of `geometry` in `graph`, `granularity` bytes per dirty
    /// bit, everything dirty. Its node (`node`) is inserted above the
    /// source with the target as child slot 1 (`Graph::insert_filter_with`).
    pub fn new(
        graph: &Arc<Graph>,
        geometry: Geometry,
        granularity: u64,
        copier_reactor: usize,
    ) -> Arc<Mirror> {
        let reactors = graph.handle().num_reactors();
        let bitmap = DirtyBitmap::new(geometry.size(), granularity, reactors);
        bitmap.mark_all();
        Arc::new(Mirror {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            graph: graph.clone(),
            geometry,
            bitmap,
            gate: WriteGate::new(reactors),
            pivoted: AtomicBool::new(false),
            copied: AtomicU64::new(0),
            copies: AtomicU64::new(0),
            first_pass_done: AtomicBool::new(false),
            ready: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            error: Mutex::new(None),
            copier_reactor,
            link: OnceLock::new(),
        })
    }

    /// The filter node to insert above the source.
    pub fn node(self: &Arc<Self>) -> MirrorNode {
        MirrorNode(self.clone())
    }

    /// Starts the copier on its reactor, issuing its I/O through `link`
    /// (`Graph::link` of the inserted filter).
    pub fn start_copier(self: &Arc<Self>, link: NodeLink) {
        let _ = self.link.set(link);
        let m = self.clone();
        self.graph
            .handle()
            .send_blocking(self.copier_reactor, move |r| copier::start(r, m));
    }

    /// Bytes copied so far, and what is known to be left (dirty regions).
    pub fn progress(&self) -> (u64, u64) {
        let dirty = self.bitmap.count() * self.bitmap.granularity();
        let copied = self.copied.load(Ordering::Relaxed);
        (copied, dirty.min(self.geometry.size()))
    }

    /// No dirty region and no copy in flight: the target holds what the
    /// source holds, but for writes still on their way to the source.
    pub fn in_sync(&self) -> bool {
        self.copies.load(Ordering::Acquire) == 0 && self.bitmap.count() == 0
    }

    /// Ready for the pivot: the first pass is done and what is dirty is
    /// little enough (`READY_DIRTY_BYTES`) for the freeze to copy while it
    /// holds writes. Once true it stays true, as QEMU's READY does; the
    /// freeze still refuses if the copy does not converge in time.
    pub fn ready(&self) -> bool {
        if self.ready.load(Ordering::Acquire) {
            return true;
        }
        let ready = self.in_sync()
            || (self.first_pass_done.load(Ordering::Acquire)
                && self.bitmap.count() * self.bitmap.granularity() <= READY_DIRTY_BYTES);
        if ready {
            self.ready.store(true, Ordering::Release);
        }
        ready
    }

    /// The copier's error, if it stopped on one.
    pub fn error(&self) -> Option<String> {
        self.error.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Set before the copier starts, which is the only user.
    fn link(&self) -> &NodeLink {
        self.link.get().expect("set by start_copier")
    }

    fn writes_in_flight(&self) -> u64 {
        self.gate.in_flight()
    }

    /// First half of the pivot: holds new writes, waits for the ones sent
    /// to the source and for the copier to copy what they dirtied, then
    /// flushes the target. On error the mirror is unfrozen.
    pub fn freeze(self: &Arc<Self>) -> Result<(), MirrorError> {
        self.gate.freeze();
        // Every reactor now sees the gate frozen: a write that found it open
        // was counted before the reactor's quiescent point (`gate`).
        self.graph.handle().synchronize();
        let deadline = Instant::now() + PIVOT_WAIT;
        loop {
            if let Some(e) = self.error() {
                self.thaw();
                return Err(MirrorError::Copy(e));
            }
            let writes = self.writes_in_flight();
            if writes == 0 && self.in_sync() {
                break;
            }
            if Instant::now() > deadline {
                self.thaw();
                return Err(MirrorError::NotInSync(
                    PIVOT_WAIT,
                    self.bitmap.count(),
                    writes,
                ));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        if let Err(e) = self.flush_target() {
            self.thaw();
            return Err(MirrorError::Flush(e));
        }
        Ok(())
    }

    /// Lets writes through again, those held first (a pivot that failed).
    pub fn thaw(self: &Arc<Self>) {
        self.gate.thaw();
        let m = self.clone();
        self.graph.handle().on_each_reactor(move |r| {
            for io in m.local(r).take_held() {
                m.write(r, io);
            }
        });
    }

    /// Second half of the pivot, once the graph routes to the target and
    /// no reactor sees the filter any more: the held writes go to the
    /// target, and the copier stops.
    pub fn release_to_target(self: &Arc<Self>) {
        self.pivoted.store(true, Ordering::SeqCst);
        let m = self.clone();
        self.graph.handle().on_each_reactor(move |r| {
            for io in m.local(r).take_held() {
                // Held, so pinned on the filter: reaches the target even
                // though the filter is retired now.
                io.forward(r, TARGET);
            }
        });
        self.stop_copier();
    }

    /// Stops the copier and waits until it has no copy in flight.
    pub fn stop_copier(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + PIVOT_WAIT;
        while !self.stopped.load(Ordering::Acquire) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Drops this mirror's reactor-local tables, once the filter has left
    /// the graph and drained (after the pivot or a cancel).
    pub fn forget(&self) {
        let id = self.id;
        self.graph.handle().on_each_reactor(move |r| {
            let table = r.local(|_| Locals::default());
            let gone = table.0.borrow_mut().remove(&id);
            drop(gone);
        });
    }

    fn flush_target(&self) -> Result<(), IoError> {
        let link = self.link.get().ok_or(IoError::NoDevice)?.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        self.graph.handle().send_blocking(self.copier_reactor, move |r| {
            let io = Io::new(
                IoOp::Flush,
                0,
                0,
                crate::IoBuf::None,
                Rc::new(copier::OnceSink(RefCell::new(Some(tx)))),
                0,
            );
            link.submit(r, TARGET, io);
        });
        rx.recv_timeout(PIVOT_WAIT)
            .map_err(|_| IoError::Busy)
            .and_then(|r| r)
    }

    fn local(&self, r: &Reactor) -> Rc<Local> {
        let table = r.local(|_| Locals::default());
        let mut t = table.0.borrow_mut();
        t.entry(self.id)
            .or_insert_with(|| {
                Rc::new(Local {
                    held: RefCell::default(),
                    sink: RefCell::default(),
                })
            })
            .clone()
    }

    /// A write-like I/O reaches the filter.
    fn write(self: &Arc<Self>, r: &Reactor, io: Io) {
        if self.pivoted.load(Ordering::Relaxed) {
            io.forward(r, TARGET);
            return;
        }
        let local = self.local(r);
        if !self.gate.enter(r.index()) {
            local.held.borrow_mut().push(io);
            return;
        }
        let (op, offset, len) = (io.op, io.offset, io.len);
        let parent = Parent::new(io);
        // The child's data is a view of the parent's buffer; the parent
        // stays pinned on the filter until the child completed.
        let child = parent.child(op, offset, len, 0, local.sink(self), 0);
        parent.submit(r, SOURCE, child);
        // If the child already completed, this completes the parent;
        // otherwise the child's completion does.
        parent.complete_if_last(r);
    }
}

/// The reactor-local tables of every mirror on this reactor.
#[derive(Default)]
struct Locals(RefCell<HashMap<u64, Rc<Local>>>);

/// One mirror's state on one reactor.
struct Local {
    /// Writes held while frozen.
    held: RefCell<Vec<Io>>,
    /// Where child writes complete.
    sink: RefCell<Option<Rc<WriteSink>>>,
}

impl Local {
    fn take_held(&self) -> Vec<Io> {
        std::mem::take(&mut *self.held.borrow_mut())
    }

    fn sink(&self, m: &Arc<Mirror>) -> Rc<dyn IoSink> {
        self.sink
            .borrow_mut()
            .get_or_insert_with(|| Rc::new(WriteSink(m.clone())))
            .clone()
    }
}

/// Completes a parent write when its child write at the source completes.
struct WriteSink(Arc<Mirror>);

impl IoSink for WriteSink {
    fn io_done(&self, r: &Reactor, child: Io, result: IoResult) {
        let m = &self.0;
        // Marked whatever the result: a failed write may have changed part
        // of the region.
        m.bitmap.mark(r.index(), child.offset, child.len);
        // After the mark: the pivot reads zero only once it is visible.
        m.gate.exit(r.index());
        let parent = Parent::of(&child);
        // The child keeps the parent: it goes first, so that the parent
        // can complete.
        drop(child);
        if let Some(parent) = parent {
            parent.record(result);
            parent.complete_if_last(r);
        }
    }
}

/// The filter node: `Mirror`'s face in the graph.
pub struct MirrorNode(Arc<Mirror>);

impl BlockNode for MirrorNode {
    type Channel = ();

    fn kind(&self) -> &'static str {
        "mirror"
    }

    fn geometry(&self) -> Geometry {
        self.0.geometry
    }

    fn num_children(&self) -> usize {
        2
    }

    /// Refuses any resize of the source or the target while the job runs:
    /// the bitmap covers the old size, so a grown source's new blocks
    /// would never be copied (the pivot would hand the host a smaller
    /// device than it had), and a shrunk source or target would fail the
    /// copy or the host's I/O past its new end.
    fn child_resized(
        &self,
        slot: usize,
        _children: &[Geometry],
        _current: Geometry,
    ) -> Result<Option<Geometry>, String> {
        let which = if slot == SOURCE { "source" } else { "target" };
        Err(format!(
            "it is the {which} of a running mirror job; complete or cancel the job first"
        ))
    }

    #[inline]
    fn route(&self, io: &mut Io) -> Option<usize> {
        match io.op {
            IoOp::Read | IoOp::Flush => Some(SOURCE),
            IoOp::Write | IoOp::WriteZeroes | IoOp::Discard => None,
        }
    }

    fn create_channel(&self, _r: &Reactor) {}

    /// Removed while frozen by something other than the pivot (which
    /// released the held writes to the target already): the held writes
    /// go on to the source, or the removal would wait for them forever.
    fn retiring(&self, handle: &pollux_poller::Handle) {
        if !self.0.pivoted.load(Ordering::SeqCst) && !handle.is_stopping() {
            self.0.thaw();
        }
    }

    fn execute(&self, r: &Reactor, _ch: &(), io: Io) {
        self.0.write(r, io);
    }
}
