//! The mirror's copier: on one reactor, takes dirty regions from the
//! bitmap and copies them from the source to the target, `QUEUE_DEPTH` at
//! a time, until told to stop. When nothing is dirty it looks again every
//! `IDLE_PERIOD` (guest writes dirty regions again while the job runs).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use pollux_poller::Reactor;

use super::Mirror;
use crate::buf::{AlignedBuf, IoBuf};
use crate::io::{Io, IoOp, IoResult, IoSink};

/// Copies in flight: enough to keep a device busy without taking a large
/// share of its queue from the guest.
const QUEUE_DEPTH: usize = 4;
/// How often an idle copier looks for new dirty regions: short enough that
/// a job under steady writes stays close to in sync, long enough that an
/// idle one costs nothing measurable.
const IDLE_PERIOD: Duration = Duration::from_millis(1);

/// Tag bit of a copy's write phase (the read phase has it clear).
const WRITE_PHASE: u64 = 1 << 63;

struct Copier {
    m: Arc<Mirror>,
    /// Where the next search for a dirty region starts.
    cursor: Cell<u64>,
    /// Copies in flight on this reactor.
    active: Cell<usize>,
    /// Region buffers, reused.
    spare: RefCell<Vec<AlignedBuf>>,
    /// An idle timer is armed.
    timer_armed: Cell<bool>,
    me: RefCell<Option<Rc<dyn IoSink>>>,
}

/// Starts the copier of `m` on `r`.
pub(super) fn start(r: &Reactor, m: Arc<Mirror>) {
    let c = Rc::new(Copier {
        m,
        cursor: Cell::new(0),
        active: Cell::new(0),
        spare: RefCell::default(),
        timer_armed: Cell::new(false),
        me: RefCell::default(),
    });
    let sink: Rc<dyn IoSink> = Rc::new(CopySink(c.clone()));
    *c.me.borrow_mut() = Some(sink);
    fill(r, &c);
}

/// Starts copies until `QUEUE_DEPTH` are in flight or nothing is dirty.
fn fill(r: &Reactor, c: &Rc<Copier>) {
    let m = &c.m;
    while c.active.get() < QUEUE_DEPTH {
        if m.stop.load(Ordering::Relaxed) || m.error().is_some() {
            break;
        }
        // Counted before the region is taken: `in_sync` never sees a
        // region that is neither dirty nor counted.
        m.copies.fetch_add(1, Ordering::AcqRel);
        let Some(bit) = m.bitmap.take_next(c.cursor.get()) else {
            m.copies.fetch_sub(1, Ordering::AcqRel);
            m.first_pass_done.store(true, Ordering::Release);
            break;
        };
        if bit < c.cursor.get() {
            // Wrapped: every region dirty at the start was taken once.
            m.first_pass_done.store(true, Ordering::Release);
        }
        c.cursor.set(bit + 1);
        c.active.set(c.active.get() + 1);
        let (offset, len) = m.bitmap.region(bit);
        let buf = c
            .spare
            .borrow_mut()
            .pop()
            .filter(|b| b.len() as u64 == len)
            .unwrap_or_else(|| AlignedBuf::zeroed(len as usize));
        let sink = c.me.borrow().clone().expect("set at start");
        let io = Io::new(IoOp::Read, offset, len, IoBuf::Owned(buf), sink, bit);
        m.link().submit(r, super::SOURCE, io);
    }
    if c.active.get() == 0 {
        if m.stop.load(Ordering::Relaxed) || m.error().is_some() {
            m.stopped.store(true, Ordering::Release);
            *c.me.borrow_mut() = None;
            return;
        }
        if !c.timer_armed.replace(true) {
            let c2 = c.clone();
            r.add_timer(IDLE_PERIOD, move |r| {
                c2.timer_armed.set(false);
                fill(r, &c2);
            });
        }
    }
}

struct CopySink(Rc<Copier>);

impl IoSink for CopySink {
    fn io_done(&self, r: &Reactor, mut io: Io, result: IoResult) {
        let c = &self.0;
        let m = &c.m;
        let bit = io.tag & !WRITE_PHASE;
        if let Err(e) = result {
            *m.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!(
                "{} of {}+{}: {e}",
                if io.tag & WRITE_PHASE != 0 { "target write" } else { "source read" },
                io.offset,
                io.len
            ));
            // The region was not copied: dirty again, for a retry by a new job.
            m.bitmap.mark(r.index(), io.offset, io.len);
            done(r, c, io);
            return;
        }
        if io.tag & WRITE_PHASE == 0 {
            let buf = std::mem::replace(&mut io.buf, IoBuf::None);
            let sink = c.me.borrow().clone().expect("set while copies run");
            let w = Io::new(IoOp::Write, io.offset, io.len, buf, sink, bit | WRITE_PHASE);
            m.link().submit(r, super::TARGET, w);
            return;
        }
        m.copied.fetch_add(io.len, Ordering::Relaxed);
        done(r, c, io);
    }
}

/// A copy finished (or failed): its buffer is kept, the next one starts.
fn done(r: &Reactor, c: &Rc<Copier>, mut io: Io) {
    if let IoBuf::Owned(b) = std::mem::replace(&mut io.buf, IoBuf::None) {
        c.spare.borrow_mut().push(b);
    }
    c.active.set(c.active.get() - 1);
    c.m.copies.fetch_sub(1, Ordering::AcqRel);
    fill(r, c);
}

/// Sends one I/O's result to a control thread.
pub(super) struct OnceSink(pub(super) RefCell<Option<mpsc::Sender<IoResult>>>);

impl IoSink for OnceSink {
    fn io_done(&self, _r: &Reactor, _io: Io, result: IoResult) {
        if let Some(tx) = self.0.borrow_mut().take() {
            let _ = tx.send(result);
        }
    }
}
