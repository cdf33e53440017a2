//! The rebuild copy: reads each window from a readable member and writes
//! it to the new one, on one reactor, driven by its own completions and
//! timers (nothing blocks). The fence (`rebuild`) keeps array writes from
//! racing it; the membership it belongs to is reached through a
//! `NodeLink`, so if that membership leaves the graph the copy's I/O fails
//! with `NoDevice` and the copy stops.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pollux_poller::Reactor;

use super::node::Shape;
use super::rebuild::{Fence, Outcome};
use crate::buf::{AlignedBuf, IoBuf};
use crate::filter::NodeLink;
use crate::io::{Io, IoError, IoOp, IoResult, IoSink};

/// How often the copy looks whether the writes of the previous epoch
/// drained: they are ordinary array writes, done in microseconds to a few
/// milliseconds.
const DRAIN_POLL: Duration = Duration::from_micros(20);

const TAG_READ: u64 = 0;
const TAG_WRITE: u64 = 1;

/// One rebuild's copy.
pub(crate) struct Copy {
    link: NodeLink,
    shape: Arc<Shape>,
    fence: Arc<Fence>,
    /// The array slot being rebuilt.
    target: usize,
    /// Bytes per second, 0 for no limit (`process_max_bandwidth_mb_sec`).
    max_rate: u64,
    /// Start of the next window.
    next: Cell<u64>,
    /// The slot the current window is read from.
    source: Cell<usize>,
    /// The copy buffer, while no I/O holds it.
    buf: RefCell<Option<AlignedBuf>>,
    started: Instant,
}

impl Copy {
    /// Starts copying onto `target` of `shape`'s membership, on `r`.
    pub(crate) fn start(
        r: &Reactor,
        link: NodeLink,
        shape: Arc<Shape>,
        target: usize,
        max_rate: u64,
    ) {
        let Some(rb) = shape.rebuild.clone() else {
            return;
        };
        let copy = Rc::new(Copy {
            link,
            fence: rb.fence.clone(),
            target,
            max_rate,
            next: Cell::new(0),
            source: Cell::new(0),
            buf: RefCell::new(Some(AlignedBuf::zeroed(rb.fence.window() as usize))),
            started: Instant::now(),
            shape,
        });
        tracing::info!(array = %copy.shape.name, target = target, "rebuild started");
        copy.step(r);
    }

    /// Moves the window to `next` and waits for the writes that may have
    /// seen the old one.
    fn step(self: &Rc<Self>, r: &Reactor) {
        if self.fence.outcome() != Outcome::Running {
            return;
        }
        let parity = self.fence.advance(self.next.get());
        self.wait_drained(r, parity);
    }

    fn wait_drained(self: &Rc<Self>, r: &Reactor, parity: usize) {
        if self.fence.outcome() != Outcome::Running {
            return;
        }
        if !self.fence.drained(parity) {
            let me = self.clone();
            r.add_timer(DRAIN_POLL, move |r| me.wait_drained(r, parity));
            return;
        }
        match self.fence.current_window() {
            Some((off, len)) => self.read(r, off, len, 0),
            None => {
                // Past the end and fenced: no write that skipped the target
                // is in flight, so the target is a whole member now.
                if self.fence.finish(Outcome::Done) {
                    tracing::info!(
                        array = %self.shape.name,
                        target = self.target,
                        secs = self.started.elapsed().as_secs_f64(),
                        "rebuild done"
                    );
                }
            }
        }
    }

    /// Reads the window from the first readable slot at or after `from`.
    fn read(self: &Rc<Self>, r: &Reactor, off: u64, len: u64, from: usize) {
        let n = self.shape.members.len();
        let source = (from..n).find(|&s| {
            s != self.target
                && self.shape.edge[s].is_some()
                && self.shape.members[s].as_ref().is_some_and(|m| !m.is_failed())
        });
        let (Some(source), Some(buf)) = (source, self.buf.borrow_mut().take()) else {
            self.fail("no member left to read from");
            return;
        };
        self.source.set(source);
        let mut buf = buf;
        if buf.len() as u64 != len {
            buf = AlignedBuf::zeroed(len as usize);
        }
        let io = Io::new(
            IoOp::Read,
            off,
            len,
            IoBuf::Owned(buf),
            self.sink(),
            TAG_READ,
        );
        let edge = self.shape.edge[source].expect("checked present");
        self.link.submit(r, edge, io);
    }

    fn fail(&self, why: &str) {
        if self.fence.finish(Outcome::Failed) {
            tracing::warn!(array = %self.shape.name, target = self.target, why, "rebuild failed");
        }
    }

    fn stop(&self) {
        if self.fence.finish(Outcome::Stopped) {
            tracing::info!(array = %self.shape.name, target = self.target, "rebuild stopped");
        }
    }
}

/// Where the copy's I/O completes: one per I/O (two per window), holding
/// the copy alive while the I/O is in flight.
struct CopySink(Rc<Copy>);

impl Copy {
    fn sink(self: &Rc<Self>) -> Rc<dyn IoSink> {
        Rc::new(CopySink(self.clone()))
    }
}

impl IoSink for CopySink {
    fn io_done(&self, r: &Reactor, mut io: Io, result: IoResult) {
        let me = &self.0;
        if let IoBuf::Owned(b) = std::mem::replace(&mut io.buf, IoBuf::None) {
            *me.buf.borrow_mut() = Some(b);
        }
        let (tag, off, len) = (io.tag, io.offset, io.len);
        drop(io);
        match (tag, result) {
            (_, Err(IoError::NoDevice)) => me.stop(),
            (TAG_READ, Err(e)) => {
                let s = me.source.get();
                if let Some(m) = &me.shape.members[s] {
                    m.fail(&me.shape.name, &e);
                }
                me.read(r, off, len, s + 1);
            }
            (TAG_READ, Ok(())) => {
                let Some(buf) = me.buf.borrow_mut().take() else {
                    me.fail("copy buffer lost");
                    return;
                };
                let io = Io::new(IoOp::Write, off, len, IoBuf::Owned(buf), me.sink(), TAG_WRITE);
                match me.shape.edge[me.target] {
                    Some(edge) => me.link.submit(r, edge, io),
                    None => io.complete_later(r, Err(IoError::NoDevice)),
                }
            }
            (_, Err(e)) => {
                if let Some(m) = &me.shape.members[me.target] {
                    m.fail(&me.shape.name, &e);
                }
                me.fail("the new member failed a write");
            }
            (_, Ok(())) => {
                me.next.set(off + len);
                let pause = me.pause(off + len);
                if pause.is_zero() {
                    me.step(r);
                } else {
                    let me = me.clone();
                    r.add_timer(pause, move |r| me.step(r));
                }
            }
        }
    }
}

impl Copy {
    /// How long to wait before the next window to stay under the rate.
    fn pause(&self, copied: u64) -> Duration {
        if self.max_rate == 0 {
            return Duration::ZERO;
        }
        let due = Duration::from_secs_f64(copied as f64 / self.max_rate as f64);
        due.saturating_sub(self.started.elapsed())
    }
}
