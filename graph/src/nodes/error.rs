//! `error`: injects errors into the I/O passing through it (SPDK's error
//! bdev, `EE_<base>`). Per op class (read, write, unmap, flush) it holds
//! what to inject and how many times: `failure` fails the I/O, `nomem`
//! answers it busy, `nvme_failure` fails it with a given NVMe status,
//! `pending` holds it (until the bdev is deleted, when it fails),
//! `corrupt_data` flips a byte of the data, written (before it is
//! written, in the caller's buffer, as SPDK does) or read (after a
//! successful read).
//!
//! With nothing armed, routing forwards every I/O at once (the fast path):
//! the per-I/O cost is a load of each class's remaining count, a line the
//! reactors only read. An injection takes one off with a compare-exchange,
//! as SPDK does: only injected I/O writes the shared line.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use pollux_poller::Reactor;

use crate::filter::Parent;
use crate::io::{Io, IoError, IoOp, IoResult, IoSink};
use crate::node::{BlockNode, Geometry};
use crate::IoBuf;

/// What to inject, as SPDK's `error_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorType {
    /// The I/O fails.
    Failure = 1,
    /// The I/O is held and never completes while the bdev lives.
    Pending = 2,
    /// The data is corrupted: one byte XORed with a value.
    CorruptData = 3,
    /// The I/O is answered "no resources" (retryable).
    Nomem = 4,
    /// The I/O fails with a given NVMe status (`nvme_sct`, `nvme_sc`).
    NvmeFailure = 5,
}

impl ErrorType {
    /// SPDK's name.
    pub fn name(self) -> &'static str {
        match self {
            ErrorType::Failure => "failure",
            ErrorType::Pending => "pending",
            ErrorType::CorruptData => "corrupt_data",
            ErrorType::Nomem => "nomem",
            ErrorType::NvmeFailure => "nvme_failure",
        }
    }

    /// The type SPDK calls `name`.
    pub fn from_name(name: &str) -> Option<ErrorType> {
        [
            ErrorType::Failure,
            ErrorType::Pending,
            ErrorType::CorruptData,
            ErrorType::Nomem,
            ErrorType::NvmeFailure,
        ]
        .into_iter()
        .find(|t| t.name() == name)
    }

    fn from_u8(v: u8) -> Option<ErrorType> {
        match v {
            1 => Some(ErrorType::Failure),
            2 => Some(ErrorType::Pending),
            3 => Some(ErrorType::CorruptData),
            4 => Some(ErrorType::Nomem),
            5 => Some(ErrorType::NvmeFailure),
            _ => None,
        }
    }
}

/// The op classes errors are injected into, as SPDK's `io_type`s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorIoType {
    /// Reads.
    Read = 0,
    /// Writes.
    Write = 1,
    /// Unmap (discard).
    Unmap = 2,
    /// Flush.
    Flush = 3,
}

impl ErrorIoType {
    /// Every class.
    pub const ALL: [ErrorIoType; 4] = [
        ErrorIoType::Read,
        ErrorIoType::Write,
        ErrorIoType::Unmap,
        ErrorIoType::Flush,
    ];

    /// SPDK's name.
    pub fn name(self) -> &'static str {
        match self {
            ErrorIoType::Read => "read",
            ErrorIoType::Write => "write",
            ErrorIoType::Unmap => "unmap",
            ErrorIoType::Flush => "flush",
        }
    }

    fn of(op: IoOp) -> Option<ErrorIoType> {
        match op {
            IoOp::Read => Some(ErrorIoType::Read),
            IoOp::Write => Some(ErrorIoType::Write),
            IoOp::Discard => Some(ErrorIoType::Unmap),
            IoOp::Flush => Some(ErrorIoType::Flush),
            // SPDK injects nothing into write zeroes either.
            IoOp::WriteZeroes => None,
        }
    }
}

/// One class's injection.
#[derive(Debug, Default)]
struct Slot {
    error_type: AtomicU8,
    remaining: AtomicU32,
    queue_depth: AtomicU64,
    corrupt_offset: AtomicU64,
    corrupt_value: AtomicU8,
    /// `nvme_failure`'s status: sct in the high byte, sc in the low.
    nvme_status: AtomicU16,
}

/// What an error bdev injects, shared by the control plane and the
/// reactors.
#[derive(Debug, Default)]
pub struct ErrorInjection {
    slots: [Slot; 4],
}

/// One injection as `bdev_error_inject_error` asks for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Injection {
    /// What to inject.
    pub error_type: ErrorType,
    /// How many I/Os get it.
    pub count: u32,
    /// For `corrupt_data`: the byte of the I/O's data to change.
    pub corrupt_offset: u64,
    /// For `corrupt_data`: what it is XORed with (non-zero).
    pub corrupt_value: u8,
    /// Inject only into I/O that finds at least this many others in
    /// flight through the bdev on its reactor (SPDK's per-channel
    /// `queue_depth`); 0: into any.
    pub queue_depth: u64,
    /// For `nvme_failure`: the status code type and status code.
    pub nvme_status: (u8, u8),
}

/// What an I/O drew from the injection table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Drawn {
    error_type: ErrorType,
    corrupt_offset: u64,
    corrupt_value: u8,
    nvme_status: (u8, u8),
}

impl ErrorInjection {
    /// Arms `inj` for `class`. The count is stored last, so a reactor that
    /// sees it sees the rest.
    pub fn arm(&self, class: ErrorIoType, inj: Injection) {
        let s = &self.slots[class as usize];
        s.error_type.store(inj.error_type as u8, Ordering::Relaxed);
        s.queue_depth.store(inj.queue_depth, Ordering::Relaxed);
        s.corrupt_offset
            .store(inj.corrupt_offset, Ordering::Relaxed);
        s.corrupt_value.store(inj.corrupt_value, Ordering::Relaxed);
        let (sct, sc) = inj.nvme_status;
        s.nvme_status
            .store(u16::from(sct) << 8 | u16::from(sc), Ordering::Relaxed);
        s.remaining.store(inj.count, Ordering::Release);
    }

    /// Clears every class (SPDK's `io_type` `clear`).
    pub fn clear(&self) {
        for s in &self.slots {
            s.remaining.store(0, Ordering::Relaxed);
        }
    }

    /// How many injections are left for `class`.
    pub fn remaining(&self, class: ErrorIoType) -> u32 {
        self.slots[class as usize].remaining.load(Ordering::Relaxed)
    }

    #[inline]
    fn armed(&self, class: ErrorIoType) -> bool {
        self.slots[class as usize].remaining.load(Ordering::Relaxed) != 0
    }

    /// Takes one injection for `class`, if any is left, for an I/O that
    /// finds `others` in flight beside it (SPDK checks the queue depth
    /// before it takes one off).
    fn take(&self, class: ErrorIoType, others: u64) -> Option<Drawn> {
        let s = &self.slots[class as usize];
        if others < s.queue_depth.load(Ordering::Relaxed) {
            return None;
        }
        s.remaining
            .fetch_update(Ordering::Acquire, Ordering::Relaxed, |n| n.checked_sub(1))
            .ok()?;
        let status = s.nvme_status.load(Ordering::Relaxed);
        Some(Drawn {
            error_type: ErrorType::from_u8(s.error_type.load(Ordering::Relaxed))?,
            corrupt_offset: s.corrupt_offset.load(Ordering::Relaxed),
            corrupt_value: s.corrupt_value.load(Ordering::Relaxed),
            nvme_status: ((status >> 8) as u8, status as u8),
        })
    }
}

/// The I/O held by `pending` injections on one reactor, by error node
/// (`ErrorNode::id`): reactor-local, so that deleting the bdev can fail
/// them from a message to each reactor (`fail_pending`).
#[derive(Default)]
struct PendingIos(RefCell<HashMap<u64, Vec<Io>>>);

/// Fails every I/O the error node `id` holds as `pending` on reactor `r`.
/// Call it on each reactor before removing the node: the removal waits for
/// held I/O, which `pending` would hold forever.
pub fn fail_pending(r: &Reactor, id: u64) -> usize {
    let ios = r
        .local(|_| PendingIos::default())
        .0
        .borrow_mut()
        .remove(&id)
        .unwrap_or_default();
    let n = ios.len();
    for io in ios {
        io.complete(r, Err(IoError::Backend(libc::ECANCELED)));
    }
    n
}

/// A filter that injects errors.
pub struct ErrorNode {
    geometry: Geometry,
    injection: Arc<ErrorInjection>,
    id: u64,
}

/// Identifies error nodes for `fail_pending`.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl ErrorNode {
    /// An error filter presenting `child`'s geometry, injecting nothing yet.
    pub fn new(child: Geometry) -> Self {
        ErrorNode {
            geometry: child,
            injection: Arc::default(),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The injection table, for `bdev_error_inject_error`.
    pub fn injection(&self) -> &Arc<ErrorInjection> {
        &self.injection
    }

    /// The id `fail_pending` takes.
    pub fn id(&self) -> u64 {
        self.id
    }
}

/// XORs byte `offset` of `buf` (if it has one) with `value`.
fn corrupt(buf: &mut IoBuf, mut offset: u64, value: u8) {
    for seg in buf.segments() {
        if (seg.len as u64) > offset {
            // SAFETY: `offset < seg.len`, and the segment is valid for
            // writes of its length (IoBuf's invariant).
            unsafe { *seg.ptr.add(offset as usize) ^= value };
            return;
        }
        offset -= seg.len as u64;
    }
}

/// Where corrupted reads complete: the byte is flipped once the read
/// succeeded.
struct CorruptRead {
    offset: u64,
    value: u8,
}

impl IoSink for CorruptRead {
    fn io_done(&self, r: &Reactor, child: Io, result: IoResult) {
        let Some(parent) = Parent::of(&child) else {
            return;
        };
        parent.record(result);
        drop(child);
        match parent.try_into_io() {
            Ok((mut io, result)) => {
                if result.is_ok() {
                    corrupt(&mut io.buf, self.offset, self.value);
                }
                io.complete(r, result);
            }
            // One child per parent: not reached.
            Err(p) => drop(p),
        }
    }
}

impl BlockNode for ErrorNode {
    type Channel = ();

    fn kind(&self) -> &'static str {
        "error"
    }

    fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn num_children(&self) -> usize {
        1
    }

    #[inline]
    fn route(&self, io: &mut Io) -> Option<usize> {
        match ErrorIoType::of(io.op) {
            Some(c) if self.injection.armed(c) => None,
            _ => Some(0),
        }
    }

    fn create_channel(&self, _r: &Reactor) {}

    fn retiring(&self, handle: &pollux_poller::Handle) {
        // Nothing is injected any more, and what `pending` holds fails, as
        // an SPDK reset aborts it: the removal would wait for it forever.
        self.injection.clear();
        if !handle.is_stopping() {
            let id = self.id;
            handle.on_each_reactor(move |r| {
                fail_pending(r, id);
            });
        }
    }

    fn execute(&self, r: &Reactor, _ch: &(), mut io: Io) {
        // The count includes this I/O: SPDK's excludes it.
        let others = io.inflight_at_holder(r).saturating_sub(1);
        let taken = ErrorIoType::of(io.op).and_then(|c| self.injection.take(c, others));
        let Some(drawn) = taken else {
            io.forward(r, 0);
            return;
        };
        let (offset, value) = (drawn.corrupt_offset, drawn.corrupt_value);
        match drawn.error_type {
            ErrorType::Failure => io.complete_later(r, Err(IoError::Backend(libc::EIO))),
            ErrorType::NvmeFailure => {
                let (sct, sc) = drawn.nvme_status;
                io.complete_later(r, Err(IoError::Nvme { sct, sc }))
            }
            ErrorType::Nomem => io.complete_later(r, Err(IoError::Busy)),
            ErrorType::Pending => {
                let p = r.local(|_| PendingIos::default());
                p.0.borrow_mut().entry(self.id).or_default().push(io);
            }
            ErrorType::CorruptData => match io.op {
                IoOp::Write => {
                    corrupt(&mut io.buf, offset, value);
                    io.forward(r, 0);
                }
                IoOp::Read => {
                    let (op, off, len, tag) = (io.op, io.offset, io.len, io.tag);
                    let parent = Parent::new(io);
                    let sink: Rc<dyn IoSink> = Rc::new(CorruptRead { offset, value });
                    let child = parent.child(op, off, len, 0, sink, tag);
                    parent.submit(r, 0, child);
                }
                // Dataless: nothing to corrupt.
                _ => io.forward(r, 0),
            },
        }
    }
}

/// Resumes every I/O the error node `id` holds as `pending` on reactor `r`
/// (SPDK's `bdev_error_resume_pending`): each goes on to the child.
pub fn resume_pending(r: &Reactor, id: u64) -> usize {
    let ios = r
        .local(|_| PendingIos::default())
        .0
        .borrow_mut()
        .remove(&id)
        .unwrap_or_default();
    let n = ios.len();
    for io in ios {
        io.forward(r, 0);
    }
    n
}
