//! One virtqueue, polled by a poller on its reactor.
//!
//! The control thread builds a [`QueueSetup`] and sends it to the queue's
//! reactor ([`start`]); from then on only that reactor touches the ring.
//! Later control messages (new memory map, new call fd, stop) find the queue
//! in the reactor's [`Registry`] by [`QueueKey`]; the control thread waits
//! for each to have run before it answers the front-end, which may use the
//! change as soon as it has the answer. Guest memory is held per
//! queue as an `Rc` of the session's current map: each request keeps a clone
//! of the `Rc` it was parsed with (in its slot and in its `IoBuf::raw`), so
//! a remap (new map by message) never unmaps memory an in-flight I/O uses,
//! and no per-I/O atomic is shared between reactors.

use std::any::Any;
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use pollux_graph::{Graph, Io, IoBuf, IoOp, IoResult, IoSink, RawSegment, RootId};
use pollux_poller::{Events, PollStatus, PollerId, Reactor};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::inflight::InflightQueue;
use super::memory::{Guest, RegionHint};
use super::request::{self, Desc, GuestMem, Limits, Op, Ring, ID_BYTES, S_IOERR, S_OK};
use super::ring::{RingAddrs, SplitRing};

/// Requests taken from the avail ring per poll, so one busy queue cannot
/// starve the other pollers of its reactor.
const POLL_BATCH: usize = 32;

/// What every queue of a device shares (immutable but for `writeback`).
pub struct DeviceInfo {
    /// The `[[vhost.blk]]` socket path, for logs.
    pub name: String,
    /// The graph requests go to.
    pub graph: Arc<Graph>,
    /// The root of the exported bdev.
    pub root: RootId,
    /// Serial number returned by GET_ID.
    pub serial: [u8; ID_BYTES],
    /// CONFIG_WCE: false after the driver switched to writethrough, in which
    /// case each write is followed by a flush before it completes.
    pub writeback: AtomicBool,
    /// Reactors sleep in epoll when idle: kicks must wake them.
    pub adaptive: bool,
    /// The capacity in sectors now: `Limits::capacity_sectors` at the
    /// start, changed by a resize below the root (the graph's root watcher)
    /// before the front-end is told. Read by each request's range check
    /// and by GET_CONFIG; written only at a resize.
    pub capacity_sectors: AtomicU64,
    /// The backend request channel of the connected front-end, if it gave
    /// one (`backend_channel`): where a resize is announced.
    pub backend_req: Mutex<Option<std::os::unix::net::UnixStream>>,
}

/// Names a queue across reactors: the session (one front-end connection)
/// and the queue index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct QueueKey {
    /// Session number, unique for the daemon's lifetime.
    pub session: u64,
    /// Virtqueue index.
    pub index: u16,
}

/// Everything a reactor needs to start polling a queue.
pub struct QueueSetup {
    /// Which queue.
    pub key: QueueKey,
    /// Ring size (a power of two).
    pub size: u16,
    /// Guest addresses of the descriptor table, avail and used rings.
    pub desc: u64,
    /// Avail ring.
    pub avail: u64,
    /// Used ring.
    pub used: u64,
    /// SET_VRING_BASE: first avail index to process.
    pub next_avail: u16,
    /// RING_EVENT_IDX negotiated.
    pub event_idx: bool,
    /// Parser limits (INDIRECT_DESC included).
    pub limits: Limits,
    /// The front-end's kick eventfd (none: the front-end never kicks).
    pub kick: Option<File>,
    /// The call eventfd (none: the front-end polls).
    pub call: Option<File>,
    /// The current memory map.
    pub mem: Arc<GuestMemoryMmap>,
    /// INFLIGHT_SHMEM tracking for this queue.
    pub inflight: Option<InflightQueue>,
    /// The device.
    pub dev: Arc<DeviceInfo>,
}

/// Why a queue could not start.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The ring layout is invalid.
    #[error("queue {index}: {reason}")]
    Ring {
        /// Queue index.
        index: u16,
        /// What is wrong.
        reason: String,
    },
    /// The kick fd could not be added to the reactor's epoll set.
    #[error("queue {index}: cannot watch the kick fd: {source}")]
    Kick {
        /// Queue index.
        index: u16,
        /// The epoll error.
        source: std::io::Error,
    },
}

type Mem = Rc<Arc<GuestMemoryMmap>>;

struct Slot {
    busy: bool,
    /// Host address of the status byte, found by the parser inside `mem`.
    status: *mut u8,
    used_len: u32,
    /// The map the request was parsed with; keeps it mapped until done.
    mem: Option<Mem>,
    flush_after: bool,
}

/// A completed request whose writes to guest memory wait for the queue's
/// next publication. Those lines are the driver's (it wrote the request
/// and polls the used ring from the other core), so each store to them
/// takes the line back across cores. Made per completion, these stores sat
/// in the store buffer while the next completion's `Io` moves waited for it
/// to drain (a move's wide load over a field just written cannot be
/// forwarded): about a fifth of the server's time at QD 128. Made together
/// just before the used index, the misses overlap and nothing waits on
/// them but the publication's fence, once per poll.
struct Done {
    head: u16,
    used_len: u32,
    status: u8,
    /// Host address of the status byte; null if the slot had no map.
    at: *mut u8,
    /// Keeps the map that `at` points into mapped until the byte is written.
    _mem: Option<Mem>,
}

impl Default for Slot {
    fn default() -> Self {
        Slot {
            busy: false,
            status: std::ptr::null_mut(),
            used_len: 0,
            mem: None,
            flush_after: false,
        }
    }
}

struct State {
    queue: SplitRing,
    ring: Ring,
    limits: Limits,
    mem: Mem,
    /// The region the last request was found in, in `mem` (reset with it).
    hint: Option<RegionHint>,
    /// Owned so the fd stays open while it is an epoll wake source.
    _kick: Option<File>,
    call: Option<File>,
    slots: Vec<Slot>,
    in_flight: u32,
    need_signal: bool,
    /// The driver's bad avail index was logged (once per queue).
    corrupt_logged: bool,
    /// avail index at which notifications were last re-armed (adaptive).
    armed_at: Option<u16>,
    scratch: Vec<Desc>,
    /// Segment vectors of completed requests, reused by the next ones so
    /// that a read or write allocates nothing. Never longer than the most
    /// requests ever in flight at once (at most the ring size).
    spare_segments: Vec<Vec<RawSegment>>,
    inflight: Option<InflightQueue>,
    /// Completions whose status byte and used entry are still to be
    /// written (see `Done`).
    done: Vec<Done>,
    counter: u64,
    resubmit: VecDeque<u16>,
    stop: Option<mpsc::Sender<u16>>,
    poller: Option<PollerId>,
    wake_fd: Option<RawFd>,
}

/// A started virtqueue; owned by its poller, its registry entry and its
/// in-flight I/Os.
pub struct VirtQueue {
    key: QueueKey,
    dev: Arc<DeviceInfo>,
    st: RefCell<State>,
}

/// The queues a reactor polls.
#[derive(Default)]
pub struct Registry(RefCell<HashMap<QueueKey, Rc<VirtQueue>>>);

fn registry(r: &Reactor) -> Rc<Registry> {
    r.local(|_| Registry::default())
}

fn find(r: &Reactor, key: QueueKey) -> Option<Rc<VirtQueue>> {
    registry(r).0.borrow().get(&key).cloned()
}

/// What one look at the avail ring found.
enum Next {
    /// Nothing to take.
    Empty,
    /// A request was taken (submitted, completed or dropped).
    Handled,
}

/// Starts polling `s` on this reactor.
pub fn start(r: &Reactor, s: QueueSetup) -> Result<(), QueueError> {
    let index = s.key.index;
    let addrs = RingAddrs {
        desc: s.desc,
        avail: s.avail,
        used: s.used,
    };
    let mut queue = SplitRing::new(
        &Guest::new(&s.mem),
        addrs,
        s.size,
        s.event_idx,
        s.next_avail,
    )
    .map_err(|e| QueueError::Ring {
        index,
        reason: e.to_string(),
    })?;
    let used_idx = queue.used_idx();
    let mut next_avail = s.next_avail;
    let (mut resubmit, mut counter) = (VecDeque::new(), 0);
    if let Some(inf) = &s.inflight {
        let (heads, max) = inf.recover(used_idx);
        if !heads.is_empty() {
            // As libvhost-user: the requests between the used index and the
            // resubmitted ones are exactly those in flight.
            next_avail = used_idx.wrapping_add(heads.len() as u16);
            tracing::info!(
                device = %s.dev.name, queue = index, count = heads.len(),
                "resubmitting requests in flight at the last disconnect"
            );
        }
        resubmit = heads.into_iter().filter(|&h| h < s.size).collect();
        counter = max;
    }
    queue.set_next_avail(next_avail);
    if !s.dev.adaptive {
        // Polling never needs a kick: ask the driver not to send them
        // (a no-op with EVENT_IDX, where avail_event simply is never moved).
        queue.disable_notification();
    }
    let wake_fd = if let (true, Some(kick)) = (s.dev.adaptive, &s.kick) {
        let fd = kick.as_raw_fd();
        // Edge-triggered: every kick (eventfd write) wakes a sleeping
        // reactor, and the kick counter never has to be read back.
        r.register_wake_fd(fd, Events::READABLE | Events::EDGE_TRIGGERED)
            .map_err(|source| QueueError::Kick { index, source })?;
        Some(fd)
    } else {
        None
    };
    let q = Rc::new(VirtQueue {
        key: s.key,
        dev: s.dev,
        st: RefCell::new(State {
            queue,
            ring: Ring {
                desc_table: s.desc,
                size: s.size,
            },
            limits: s.limits,
            mem: Rc::new(s.mem),
            hint: None,
            _kick: s.kick,
            call: s.call,
            slots: (0..s.size).map(|_| Slot::default()).collect(),
            in_flight: 0,
            need_signal: false,
            corrupt_logged: false,
            armed_at: None,
            scratch: Vec::new(),
            spare_segments: Vec::new(),
            done: Vec::new(),
            inflight: s.inflight,
            counter,
            resubmit,
            stop: None,
            poller: None,
            wake_fd,
        }),
    });
    let polled = q.clone();
    let id = r.register_poller(move |r: &Reactor| polled.poll(r));
    q.st.borrow_mut().poller = Some(id);
    registry(r).0.borrow_mut().insert(s.key, q);
    tracing::debug!(queue = ?s.key, reactor = r.index(), "virtqueue started");
    Ok(())
}

/// Switches a queue to a new memory map (after SET_MEM_TABLE, ADD_MEM_REG
/// or REM_MEM_REG). Requests already parsed keep their own map.
pub fn update_mem(r: &Reactor, key: QueueKey, mem: Arc<GuestMemoryMmap>) {
    if let Some(q) = find(r, key) {
        let mut st = q.st.borrow_mut();
        if let Err(e) = st.queue.remap(&Guest::new(&mem)) {
            // Stopped until a map holds the rings again (as a ring access
            // outside memory failed with virtio-queue).
            tracing::warn!(queue = ?key, error = %e, "rings not in the new memory map");
        }
        st.mem = Rc::new(mem);
        st.hint = None;
    }
}

/// The memory map a queue parses new requests with.
#[cfg(test)]
pub fn current_mem(r: &Reactor, key: QueueKey) -> Option<Arc<GuestMemoryMmap>> {
    find(r, key).map(|q| Arc::clone(&q.st.borrow().mem))
}

/// Replaces a queue's call fd (QEMU does this when it masks interrupts).
pub fn update_call(r: &Reactor, key: QueueKey, call: Option<File>) {
    if let Some(q) = find(r, key) {
        q.st.borrow_mut().call = call;
    }
}

/// Stops taking requests from the queue; once its in-flight requests have
/// completed, removes it and sends the next avail index on `reply`.
pub fn stop(r: &Reactor, key: QueueKey, reply: mpsc::Sender<u16>) {
    match find(r, key) {
        Some(q) => {
            q.st.borrow_mut().stop = Some(reply);
            q.try_finish_stop(r);
        }
        None => {
            let _ = reply.send(0);
        }
    }
}

impl VirtQueue {
    fn poll(self: &Rc<Self>, r: &Reactor) -> PollStatus {
        // Completions since the last poll first: the driver can reuse
        // those slots while this poll parses new requests.
        let mut busy = self.flush_used();
        for _ in 0..POLL_BATCH {
            match self.next_request(r) {
                Next::Empty => break,
                Next::Handled => busy = true,
            }
        }
        // And those of this poll's own requests (errors, GET_ID, a
        // backend that completed at once).
        busy |= self.flush_used();
        let stopping = self.st.borrow().stop.is_some();
        if stopping {
            self.try_finish_stop(r);
        }
        if busy {
            PollStatus::Busy
        } else {
            PollStatus::Idle
        }
    }

    /// Publishes the used entries added since the last call and notifies
    /// the driver if it wants it; false if there were none.
    fn flush_used(&self) -> bool {
        let mut st = self.st.borrow_mut();
        if !st.need_signal {
            return false;
        }
        st.need_signal = false;
        st.publish_and_signal();
        true
    }

    fn try_finish_stop(&self, r: &Reactor) {
        let mut st = self.st.borrow_mut();
        if st.in_flight != 0 {
            return;
        }
        let Some(reply) = st.stop.take() else { return };
        if st.need_signal {
            st.need_signal = false;
            st.publish_and_signal();
        }
        if let Some(id) = st.poller.take() {
            r.unregister_poller(id);
        }
        if let Some(fd) = st.wake_fd.take() {
            // Before the kick fd closes (when the last Rc goes).
            let _ = r.unregister_wake_fd(fd);
        }
        let next_avail = st.queue.next_avail();
        drop(st);
        registry(r).0.borrow_mut().remove(&self.key);
        tracing::debug!(queue = ?self.key, next_avail, "virtqueue stopped");
        let _ = reply.send(next_avail);
    }

    /// Takes one request from the ring and submits it (or completes it,
    /// if it fails or needs no block device).
    fn next_request(self: &Rc<Self>, r: &Reactor) -> Next {
        let mut guard = self.st.borrow_mut();
        let st = &mut *guard;
        if st.stop.is_some() {
            return Next::Empty;
        }
        let head = match st.resubmit.pop_front() {
            Some(h) => h,
            None => match st.queue.pop() {
                Ok(Some(head)) => head,
                Ok(None) => {
                    if self.dev.adaptive && st.armed_at != Some(st.queue.next_avail()) {
                        // The ring looks empty: ask for a kick on the next
                        // request (the reactor may go to sleep), then look
                        // once more so a request added meanwhile is not
                        // left waiting for a kick that will not come.
                        st.armed_at = Some(st.queue.next_avail());
                        if st.queue.enable_notification() {
                            return Next::Handled;
                        }
                    }
                    return Next::Empty;
                }
                Err(e) => {
                    // As virtio-queue: nothing is taken from a ring whose
                    // driver claims more entries than it has. Said once:
                    // the queue sees it again on every poll.
                    if !st.corrupt_logged {
                        st.corrupt_logged = true;
                        tracing::warn!(device = %self.dev.name, queue = self.key.index,
                            "{e}; ignored");
                    }
                    return Next::Empty;
                }
            },
        };
        let h = usize::from(head);
        if h >= st.slots.len() || st.slots[h].busy {
            // A head the driver reused while we still own it: the ring is
            // corrupt; there is no way to complete it twice.
            tracing::warn!(device = %self.dev.name, queue = self.key.index, head,
                "driver made an in-flight descriptor available again; ignored");
            return Next::Handled;
        }
        if let Some(inf) = &st.inflight {
            st.counter += 1;
            inf.fetched(head, st.counter);
        }
        let segments = st.spare_segments.pop().unwrap_or_default();
        // The capacity may have changed since the session started (resize).
        st.limits.capacity_sectors = self.dev.capacity_sectors.load(Ordering::Relaxed);
        let guest = Guest::with_hint(&st.mem, st.hint);
        let parsed = request::parse(&guest, st.ring, head, &st.limits, &mut st.scratch, segments);
        // The parser found the status byte in guest memory; this is its
        // host address (a hit of the region cache).
        let status_ptr = parsed
            .as_ref()
            .ok()
            .and_then(|req| guest.host(req.status, 1));
        st.hint = guest.hint();
        let req = match parsed {
            Ok(req) => req,
            Err(f) => {
                tracing::debug!(device = %self.dev.name, queue = self.key.index, head,
                    reason = f.reason, "request failed");
                let used_len = match f.status {
                    Some(at) => {
                        let _ = st.mem.write_obj(f.code, GuestAddress(at));
                        1
                    }
                    None => 0,
                };
                st.complete(head, used_len);
                return Next::Handled;
            }
        };
        let op = match req.op {
            Op::GetId => {
                let n = req.len as usize;
                let ok = st
                    .mem
                    .write_slice(&self.dev.serial[..n], GuestAddress(req.offset))
                    .is_ok();
                let status = if ok { S_OK } else { S_IOERR };
                let _ = st.mem.write_obj(status, GuestAddress(req.status));
                st.complete(head, req.used_len);
                return Next::Handled;
            }
            Op::Read => IoOp::Read,
            Op::Write => IoOp::Write,
            Op::Flush => IoOp::Flush,
            Op::Discard => IoOp::Discard,
            Op::WriteZeroes => IoOp::WriteZeroes,
        };
        let mem = st.mem.clone();
        let buf = if req.data.is_empty() {
            IoBuf::None
        } else {
            let keep: Rc<dyn Any> = mem.clone();
            // SAFETY: `parse` returned each segment only after `Guest::host`
            // found it inside one region of `mem`, and `keep` holds that map
            // (and so the mmap) until the I/O is dropped. The memory is
            // shared with the front-end process and is only ever reached
            // through raw pointers (copies and kernel I/O), never through
            // Rust references, so segments the guest made overlap cannot
            // alias a reference.
            unsafe { IoBuf::raw(req.data, keep) }
        };
        let Some(status_ptr) = status_ptr else {
            // Unreachable: `parse` checked the status byte with the same map.
            st.complete(head, 0);
            return Next::Handled;
        };
        st.slots[h] = Slot {
            busy: true,
            status: status_ptr,
            used_len: req.used_len,
            mem: Some(mem),
            flush_after: op == IoOp::Write && !self.dev.writeback.load(Ordering::Relaxed),
        };
        st.in_flight += 1;
        drop(guard);
        let sink: Rc<dyn IoSink> = self.clone();
        // Built in place in the call: the `Io` is large, and returning it
        // to the caller first was one more copy per request.
        self.dev.graph.snapshot(r).submit(
            r,
            self.dev.root,
            Io::new(op, req.offset, req.len, buf, sink, u64::from(head)),
        );
        Next::Handled
    }
}

impl State {
    /// Puts `head` in the used ring and marks the used index as due for
    /// publication at the end of the queue's poll (one store and one
    /// notification decision per poll, not per request).
    fn complete(&mut self, head: u16, used_len: u32) {
        if let Some(inf) = &self.inflight {
            inf.completing(head);
        }
        self.queue.push_used(head, used_len);
        if let Some(inf) = &self.inflight {
            // Inflight tracking repairs at most one entry that reached the
            // used ring without its index (libvhost-user's recovery), so
            // with it the index is published per request.
            self.queue.publish();
            inf.completed(head, self.queue.next_used());
        }
        self.need_signal = true;
    }

    /// Writes a completed request's status byte and puts it in the used
    /// ring.
    fn finish(&mut self, d: Done) {
        if !d.at.is_null() {
            // SAFETY: `d.at` is the host address of the status byte, which
            // the parser found inside one region of the map `d._mem` holds
            // (so it is still mapped). The byte is shared with the
            // front-end: one volatile store, no reference.
            unsafe { std::ptr::write_volatile(d.at, d.status) };
        }
        self.complete(d.head, d.used_len);
    }

    /// Publishes the used index and interrupts the driver through the call
    /// fd unless event-idx (or NO_INTERRUPT) says it does not want one.
    fn publish_and_signal(&mut self) {
        let mut done = std::mem::take(&mut self.done);
        for d in done.drain(..) {
            self.finish(d);
        }
        self.done = done;
        // All of it is published below; `finish` must not leave the queue
        // due for another publication (and a second interrupt).
        self.need_signal = false;
        self.queue.publish();
        if self.queue.needs_notification() {
            if let Some(call) = &self.call {
                // A full eventfd counter (EAGAIN) already means "signalled".
                let _ = (&*call).write(&1u64.to_ne_bytes());
            }
        }
    }
}

impl IoSink for VirtQueue {
    fn io_done(&self, r: &Reactor, mut io: Io, result: IoResult) {
        let head = io.tag as u16;
        let mut st = self.st.borrow_mut();
        let Some(slot) = st.slots.get_mut(usize::from(head)) else {
            return;
        };
        if result.is_ok() && slot.flush_after {
            // Writethrough mode: the write completes once it is durable.
            slot.flush_after = false;
            drop(st);
            io.op = IoOp::Flush;
            io.offset = 0;
            io.len = 0;
            io.buf = IoBuf::None;
            self.dev.graph.snapshot(r).submit(r, self.dev.root, io);
            return;
        }
        if let IoBuf::Raw { mut segments, .. } = std::mem::replace(&mut io.buf, IoBuf::None) {
            segments.clear();
            st.spare_segments.push(segments);
        }
        drop(io);
        let Some(slot) = st.slots.get_mut(usize::from(head)) else {
            return;
        };
        let slot = std::mem::take(slot);
        let status = match &result {
            Ok(()) => S_OK,
            Err(e) => {
                tracing::debug!(device = %self.dev.name, queue = self.key.index, head,
                    error = %e, "I/O failed");
                S_IOERR
            }
        };
        st.in_flight -= 1;
        let done = Done {
            head,
            used_len: slot.used_len,
            status,
            at: if slot.mem.is_some() {
                slot.status
            } else {
                std::ptr::null_mut()
            },
            _mem: slot.mem,
        };
        if st.inflight.is_some() {
            // With inflight tracking the index is published per request
            // (`State::complete`), so its writes are made now.
            st.finish(done);
        } else {
            st.done.push(done);
            st.need_signal = true;
        }
    }
}
