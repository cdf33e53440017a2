//! The per-reactor io_uring the `file` node submits to.
//!
//! One ring per reactor, shared by every file node on it, obtained with
//! `Ring::get` (a reactor-local singleton). `Ring::submit` only queues SQEs;
//! the ring's poller submits them with one `io_uring_enter` per loop
//! iteration, reaps completions and completes the requests. In-flight
//! requests live in a slab indexed by `user_data` that owns the `Io` (and so
//! its buffer) and the iovecs the kernel reads, at stable addresses, until
//! the CQE arrives.
//!
//! A sleeping adaptive reactor must wake on completions. With the ring's
//! default setup the kernel already interrupts the reactor's epoll_wait to
//! run its completion task work, but that is an implementation detail (it
//! changes with IORING_SETUP_COOP_TASKRUN, and completions posted straight
//! from io-wq do not need task work), so the ring's own descriptor is also a
//! wake fd: epoll reports it readable exactly while the completion queue is
//! non-empty. That is preferred to an eventfd registered with the ring,
//! which must be drained, and which the kernel signals just after making the
//! CQE visible: a poller that reaps the CQE and drains the eventfd in between
//! leaves it readable with nothing to reap, and the reactor then cannot
//! sleep until the next completion. The ring fd has no such state.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use io_uring::{opcode, squeue, types, IoUring};
use pollux_poller::{Events, PollStatus, Reactor};

use crate::buf::{AlignedBuf, IoBuf, BUF_ALIGN};
use crate::io::{Io, IoError, IoOp, IoResult};

/// SQ entries per ring, which is also the cap on requests handed to the
/// kernel at once. 512 covers the queue depth of several NVMe/TCP queue
/// pairs sharing a reactor. The CQ gets twice as many entries (the kernel
/// default), so with at most 512 requests in the kernel it can never
/// overflow; anything beyond waits in the ring's backlog.
const RING_DEPTH: u32 = 512;

/// Most iovecs one readv/writev takes (the kernel's UIO_MAXIOV). Longer
/// scatter lists are bounced into one buffer by the file node.
pub(crate) const MAX_IOVECS: usize = 1024;

/// Smallest bounce buffer allocated, so one pooled buffer serves requests of
/// any common size instead of the pool filling with 4 KiB buffers.
const BOUNCE_MIN: usize = 128 << 10;

/// Bounce buffers kept for reuse per reactor (at most 32 x 1 MiB pinned).
const BOUNCE_POOL: usize = 32;

/// Bounce buffers larger than this are freed after use: rare huge requests
/// should not pin their memory for the life of the reactor.
const BOUNCE_KEEP_MAX: usize = 1 << 20;

/// Size of the zero buffer used when the file system cannot zero a range
/// itself: big enough that writing zeroes costs few round trips, small
/// enough to keep per reactor.
const ZERO_CHUNK: usize = 1 << 20;

/// Which zeroing fallocate modes the file has refused (EOPNOTSUPP), learnt
/// once and shared by every reactor so later requests skip straight to what
/// works.
#[derive(Default, Debug)]
pub(crate) struct FallocSupport {
    no_punch_hole: AtomicBool,
    no_zero_range: AtomicBool,
}

/// What a request asks of the kernel, and the state to finish it.
pub(crate) enum Kind {
    /// readv/writev of the Io's buffer, or of `bounce` when the buffer is
    /// unsuitable for the file (O_DIRECT alignment, too many segments).
    Rw {
        /// Holds the data in place of the Io's buffer: filled before submit
        /// for writes, copied out after completion for reads.
        bounce: Option<AlignedBuf>,
    },
    /// fdatasync.
    Fsync,
    /// fallocate with `mode`; EOPNOTSUPP moves down `Kind::zeroing`'s chain.
    Fallocate {
        mode: i32,
        support: Arc<FallocSupport>,
    },
    /// Zeroing by writing the ring's zero buffer, chunk by chunk.
    ZeroFill,
}

impl FallocSupport {
    /// (punch hole refused, zero range refused), for tests.
    #[cfg(test)]
    pub(crate) fn refused(&self) -> (bool, bool) {
        (
            self.no_punch_hole.load(Ordering::Relaxed),
            self.no_zero_range.load(Ordering::Relaxed),
        )
    }
}

impl Kind {
    /// How to make a range read back zeroes, given what the file supports:
    /// punch a hole (discard only: it deallocates), else zero the range in
    /// place, else write zeroes.
    pub(crate) fn zeroing(discard: bool, support: Arc<FallocSupport>) -> Kind {
        let keep = libc::FALLOC_FL_KEEP_SIZE;
        if discard && !support.no_punch_hole.load(Ordering::Relaxed) {
            Kind::Fallocate {
                mode: libc::FALLOC_FL_PUNCH_HOLE | keep,
                support,
            }
        } else if !support.no_zero_range.load(Ordering::Relaxed) {
            Kind::Fallocate {
                mode: libc::FALLOC_FL_ZERO_RANGE | keep,
                support,
            }
        } else {
            Kind::ZeroFill
        }
    }
}

/// One I/O on a file descriptor.
pub(crate) struct Request {
    io: Io,
    /// The file. Owned by the node, which outlives its in-flight I/O (the
    /// graph closes a node only after its I/O drained).
    fd: RawFd,
    kind: Kind,
    /// Bytes already transferred, for resubmitting short reads and writes.
    done: u64,
}

impl Request {
    pub(crate) fn new(io: Io, fd: RawFd, kind: Kind) -> Request {
        Request {
            io,
            fd,
            kind,
            done: 0,
        }
    }
}

/// A slab entry. `iov` keeps its heap allocation across requests (and
/// across growth of the slab, which moves only the Vec header), so the
/// iovecs the kernel reads stay put until the CQE.
#[derive(Default)]
struct Slot {
    req: Option<Request>,
    iov: Vec<libc::iovec>,
}

/// What a CQE means for its request.
enum Next {
    Done(IoResult),
    Again,
}

struct Inner {
    uring: IoUring,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Slab indices waiting for room in the kernel, in order.
    backlog: VecDeque<u32>,
    /// Requests pushed to the SQ and not yet reaped.
    in_kernel: u32,
    /// Finished requests, completed once the ring is no longer borrowed
    /// (sinks may submit again). Kept to reuse its allocation.
    done: Vec<(Io, IoResult)>,
    bounce: Vec<AlignedBuf>,
    zeroes: Option<AlignedBuf>,
    /// A persistent submit error is logged once, not on every iteration.
    submit_error_logged: bool,
}

/// The reactor's io_uring, or why it could not be created (every request
/// then fails with that errno).
pub(crate) struct Ring {
    inner: Result<Rc<RefCell<Inner>>, i32>,
}

impl Ring {
    /// This reactor's ring, created (with its poller) on first use.
    pub(crate) fn get(r: &Reactor) -> Rc<Ring> {
        r.local(Ring::new)
    }

    fn new(r: &Reactor) -> Ring {
        match Inner::new(r) {
            Ok(inner) => {
                let inner = Rc::new(RefCell::new(inner));
                let p = inner.clone();
                r.register_poller(move |r: &Reactor| poll(&p, r));
                Ring { inner: Ok(inner) }
            }
            Err(e) => {
                tracing::warn!(
                    reactor = r.index(),
                    "cannot create an io_uring: {e}; file I/O on this reactor will fail"
                );
                Ring {
                    inner: Err(e.raw_os_error().unwrap_or(libc::EIO)),
                }
            }
        }
    }

    /// Queues `req`; it is submitted on the ring poller's next run.
    pub(crate) fn submit(&self, r: &Reactor, req: Request) {
        match &self.inner {
            Ok(inner) => inner.borrow_mut().start(req),
            Err(errno) => req.io.complete_later(r, Err(IoError::Backend(*errno))),
        }
    }

    /// A bounce buffer of at least `len` bytes (aligned to `BUF_ALIGN`); it
    /// returns to the pool when its request finishes.
    pub(crate) fn take_bounce(&self, len: usize) -> AlignedBuf {
        if let Ok(inner) = &self.inner {
            let mut inner = inner.borrow_mut();
            if let Some(i) = inner.bounce.iter().position(|b| b.len() >= len) {
                return inner.bounce.swap_remove(i);
            }
        }
        AlignedBuf::zeroed(len.max(BOUNCE_MIN).next_multiple_of(BUF_ALIGN))
    }
}

fn poll(cell: &RefCell<Inner>, r: &Reactor) -> PollStatus {
    let mut inner = cell.borrow_mut();
    // Everything queued counts in `in_kernel` from the moment it is in the
    // SQ, so this is the whole idle check: no atomic load, no syscall.
    if inner.in_kernel == 0 && inner.backlog.is_empty() {
        return PollStatus::Idle;
    }
    let reaped = inner.reap();
    let mut done = std::mem::take(&mut inner.done);
    drop(inner);
    for (io, result) in done.drain(..) {
        io.complete(r, result);
    }
    let mut inner = cell.borrow_mut();
    inner.done = done;
    // After the completions, so I/O the sinks issued goes out in this same
    // io_uring_enter.
    inner.fill_from_backlog();
    let submitted = inner.submit();
    if reaped > 0 || submitted {
        PollStatus::Busy
    } else {
        PollStatus::Idle
    }
}

impl Inner {
    fn new(r: &Reactor) -> io::Result<Inner> {
        let uring = IoUring::new(RING_DEPTH)?;
        r.register_wake_fd(uring.as_raw_fd(), Events::READABLE)?;
        Ok(Inner {
            uring,
            slots: Vec::new(),
            free: Vec::new(),
            backlog: VecDeque::new(),
            in_kernel: 0,
            done: Vec::new(),
            bounce: Vec::new(),
            zeroes: None,
            submit_error_logged: false,
        })
    }

    fn start(&mut self, req: Request) {
        if matches!(req.kind, Kind::ZeroFill) {
            self.ensure_zeroes();
        }
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot::default());
                (self.slots.len() - 1) as u32
            }
        };
        self.slots[idx as usize].req = Some(req);
        if self.backlog.is_empty() && self.in_kernel < RING_DEPTH {
            self.push(idx);
        } else {
            self.backlog.push_back(idx);
        }
    }

    fn ensure_zeroes(&mut self) {
        if self.zeroes.is_none() {
            self.zeroes = Some(AlignedBuf::zeroed(ZERO_CHUNK));
        }
    }

    fn fill_from_backlog(&mut self) {
        while self.in_kernel < RING_DEPTH {
            let Some(idx) = self.backlog.pop_front() else {
                break;
            };
            self.push(idx);
        }
    }

    /// Builds the SQE for slot `idx` and puts it in the SQ.
    fn push(&mut self, idx: u32) {
        let zeroes = self
            .zeroes
            .as_ref()
            .map_or(std::ptr::null(), |z| z.as_slice().as_ptr());
        let slot = &mut self.slots[idx as usize];
        let sqe = prepare(slot, zeroes).user_data(idx as u64);
        // SAFETY: the SQE points at `slot.iov` (whose heap buffer is not
        // touched until this slot's CQE is reaped) and through it at the
        // Io's buffer, the bounce buffer or the ring's zero buffer, all owned
        // by the slab entry or the ring until then. Drop waits for in-kernel
        // requests before freeing any of it.
        let pushed = unsafe { self.uring.submission().push(&sqe) };
        if pushed.is_err() {
            // Cannot happen while in_kernel < RING_DEPTH bounds the SQ's
            // fill, but if it did, waiting is the right answer.
            self.backlog.push_front(idx);
            return;
        }
        self.in_kernel += 1;
    }

    /// Hands queued SQEs to the kernel; true if there were any.
    fn submit(&mut self) -> bool {
        if self.uring.submission().is_empty() {
            return false;
        }
        match self.uring.submit() {
            Ok(_) => self.submit_error_logged = false,
            // The SQEs stay queued and go out on the next run; nothing is
            // lost. EAGAIN/EBUSY/EINTR are transient by definition.
            Err(e) => match e.raw_os_error() {
                Some(libc::EAGAIN | libc::EBUSY | libc::EINTR) => {}
                _ if self.submit_error_logged => {}
                _ => {
                    tracing::warn!("io_uring submit failed: {e}; retrying");
                    self.submit_error_logged = true;
                }
            },
        }
        true
    }

    /// Processes every available CQE; returns how many.
    fn reap(&mut self) -> usize {
        // Copied out in batches: handling a CQE needs the ring mutably (the
        // zero buffer, the backlog) while the CQ borrows it.
        let mut batch = [(0u64, 0i32); 64];
        let mut total = 0;
        loop {
            let mut n = 0;
            for cqe in self.uring.completion() {
                batch[n] = (cqe.user_data(), cqe.result());
                n += 1;
                if n == batch.len() {
                    break;
                }
            }
            for &(user_data, res) in &batch[..n] {
                self.on_cqe(user_data as u32, res);
            }
            total += n;
            if n < batch.len() {
                return total;
            }
        }
    }

    fn on_cqe(&mut self, idx: u32, res: i32) {
        let Some(slot) = self.slots.get_mut(idx as usize) else {
            tracing::error!(idx, "io_uring completion for an unknown request");
            return;
        };
        let Some(mut req) = slot.req.take() else {
            tracing::error!(idx, "io_uring completion for a free slot");
            return;
        };
        self.in_kernel -= 1;
        match progress(&mut req, res) {
            Next::Again => {
                if matches!(req.kind, Kind::ZeroFill) {
                    self.ensure_zeroes();
                }
                self.slots[idx as usize].req = Some(req);
                self.backlog.push_back(idx);
            }
            Next::Done(result) => {
                self.free.push(idx);
                self.finish(req, result);
            }
        }
    }

    fn finish(&mut self, req: Request, result: IoResult) {
        let Request { mut io, kind, .. } = req;
        if let Kind::Rw {
            bounce: Some(bounce),
        } = kind
        {
            if result.is_ok() && io.op == IoOp::Read {
                io.buf
                    .copy_from_slice(&bounce.as_slice()[..io.len as usize]);
            }
            if self.bounce.len() < BOUNCE_POOL && bounce.len() <= BOUNCE_KEEP_MAX {
                self.bounce.push(bounce);
            }
        }
        self.done.push((io, result));
    }
}

/// The SQE for the request in `slot`, continuing after what is done.
fn prepare(slot: &mut Slot, zeroes: *const u8) -> squeue::Entry {
    let Slot { req, iov } = slot;
    let req = req.as_mut().expect("preparing an empty slot");
    let fd = types::Fd(req.fd);
    let offset = req.io.offset + req.done;
    let rest = (req.io.len - req.done) as usize;
    iov.clear();
    match &mut req.kind {
        Kind::Rw { bounce } => {
            match bounce {
                Some(b) => {
                    let start = req.done as usize;
                    iov.push(iovec(
                        b.as_mut_slice()[start..].as_mut_ptr(),
                        rest.min(b.len() - start),
                    ));
                }
                None => {
                    let mut skip = req.done as usize;
                    for seg in req.io.buf.segments() {
                        if skip >= seg.len {
                            skip -= seg.len;
                            continue;
                        }
                        iov.push(iovec(seg.ptr.wrapping_add(skip), seg.len - skip));
                        skip = 0;
                    }
                }
            }
            if req.io.op == IoOp::Read {
                opcode::Readv::new(fd, iov.as_ptr(), iov.len() as u32)
                    .offset(offset)
                    .build()
            } else {
                opcode::Writev::new(fd, iov.as_ptr(), iov.len() as u32)
                    .offset(offset)
                    .build()
            }
        }
        Kind::ZeroFill => {
            iov.push(iovec(zeroes.cast_mut(), rest.min(ZERO_CHUNK)));
            opcode::Writev::new(fd, iov.as_ptr(), 1)
                .offset(offset)
                .build()
        }
        Kind::Fsync => opcode::Fsync::new(fd)
            .flags(types::FsyncFlags::DATASYNC)
            .build(),
        Kind::Fallocate { mode, .. } => opcode::Fallocate::new(fd, rest as u64)
            .offset(offset)
            .mode(*mode)
            .build(),
    }
}

fn iovec(ptr: *mut u8, len: usize) -> libc::iovec {
    libc::iovec {
        iov_base: ptr.cast(),
        iov_len: len,
    }
}

/// Advances `req` by the CQE result `res`.
fn progress(req: &mut Request, res: i32) -> Next {
    // io_uring retries EAGAIN itself for files; these only surface for
    // interrupted or non-blocking descriptors, where trying again is right.
    let retry = res == -libc::EINTR || res == -libc::EAGAIN;
    match &mut req.kind {
        Kind::Rw { .. } | Kind::ZeroFill => {
            if retry {
                return Next::Again;
            }
            if res < 0 {
                return Next::Done(Err(IoError::Backend(-res)));
            }
            if res == 0 {
                if req.io.op != IoOp::Read || matches!(req.kind, Kind::ZeroFill) {
                    // A write that moves nothing would loop forever.
                    return Next::Done(Err(IoError::Backend(libc::EIO)));
                }
                // End of file inside the device: the file shrank under us.
                // Unwritten blocks read as zeroes, so the rest does too.
                zero_tail(req);
                return Next::Done(Ok(()));
            }
            req.done += res as u64;
            if req.done < req.io.len {
                Next::Again
            } else {
                Next::Done(Ok(()))
            }
        }
        Kind::Fsync => Next::Done(if res < 0 {
            Err(IoError::Backend(-res))
        } else {
            Ok(())
        }),
        Kind::Fallocate { mode, support } => {
            if res == -libc::EOPNOTSUPP {
                let flag = if *mode & libc::FALLOC_FL_PUNCH_HOLE != 0 {
                    &support.no_punch_hole
                } else {
                    &support.no_zero_range
                };
                flag.store(true, Ordering::Relaxed);
                // The next step always zeroes: punching is only the first
                // choice for a discard.
                req.kind = Kind::zeroing(false, support.clone());
                return Next::Again;
            }
            if retry {
                return Next::Again;
            }
            Next::Done(if res < 0 {
                Err(IoError::Backend(-res))
            } else {
                Ok(())
            })
        }
    }
}

/// Zeroes the request's data from `done` to its end.
fn zero_tail(req: &mut Request) {
    let (from, len) = (req.done as usize, req.io.len as usize);
    if let Kind::Rw { bounce: Some(b) } = &mut req.kind {
        b.as_mut_slice()[from..len].fill(0);
        return;
    }
    zero_buf_from(&mut req.io.buf, from);
}

fn zero_buf_from(buf: &mut IoBuf, mut skip: usize) {
    for seg in buf.segments() {
        if skip >= seg.len {
            skip -= seg.len;
            continue;
        }
        // SAFETY: `seg` is valid for writes of `seg.len` bytes (IoBuf
        // invariant) and `skip < seg.len`.
        unsafe { std::ptr::write_bytes(seg.ptr.add(skip), 0, seg.len - skip) };
        skip = 0;
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The kernel may still write into buffers the slab owns: wait for
        // every request handed to it before anything is freed. There is no
        // reactor to complete them on any more, so their Ios are leaked
        // (the reactor is going away; completing would need `&Reactor`).
        while self.in_kernel > 0 {
            if let Err(e) = self.uring.submit_and_wait(1) {
                if e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                tracing::error!(
                    in_flight = self.in_kernel,
                    "io_uring wait failed at shutdown: {e}; leaking in-flight buffers"
                );
                std::mem::forget(std::mem::take(&mut self.slots));
                std::mem::forget(self.zeroes.take());
                return;
            }
            let cqes: Vec<u64> = self.uring.completion().map(|c| c.user_data()).collect();
            for ud in cqes {
                if let Some(req) = self.slots.get_mut(ud as usize).and_then(|s| s.req.take()) {
                    self.in_kernel -= 1;
                    std::mem::forget(req.io);
                }
            }
        }
        for slot in &mut self.slots {
            if let Some(req) = slot.req.take() {
                std::mem::forget(req.io);
            }
        }
        for (io, _) in self.done.drain(..) {
            std::mem::forget(io);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::os::fd::FromRawFd;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use pollux_poller::{IdlePolicy, Runtime, RuntimeConfig};

    use crate::io::IoSink;

    #[test]
    fn io_uring_is_available() {
        IoUring::new(8).expect("io_uring is not available in this environment");
    }

    struct Tx(mpsc::Sender<(u64, IoResult, Vec<u8>)>);

    impl IoSink for Tx {
        fn io_done(&self, _r: &Reactor, mut io: Io, result: IoResult) {
            let mut data = vec![0u8; io.len as usize];
            io.buf.copy_to_slice(&mut data);
            let _ = self.0.send((io.tag, result, data));
        }
    }

    /// A completion arriving while the adaptive reactor sleeps in epoll must
    /// wake it at once, not after its 1 s sleep cap.
    #[test]
    fn completion_wakes_a_sleeping_reactor() {
        let rt = Runtime::start(RuntimeConfig::new(
            vec![0],
            IdlePolicy::Adaptive {
                idle_after: Duration::from_micros(100),
            },
        ))
        .unwrap();
        let mut fds = [0; 2];
        // SAFETY: `fds` is a writable array of two ints, as pipe2 requires.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: both descriptors are fresh and owned by nobody else.
        let (rd, wr) = unsafe {
            (
                std::fs::File::from_raw_fd(fds[0]),
                std::fs::File::from_raw_fd(fds[1]),
            )
        };
        let (tx, rx) = mpsc::channel();
        let fd = rd.as_raw_fd();
        rt.handle().call(0, move |r| {
            let io = Io::new(
                IoOp::Read,
                0,
                4,
                IoBuf::Owned(AlignedBuf::zeroed(4)),
                Rc::new(Tx(tx)),
                7,
            );
            Ring::get(r).submit(r, Request::new(io, fd, Kind::Rw { bounce: None }));
        });
        // Long enough for the reactor to fall asleep.
        std::thread::sleep(Duration::from_millis(50));
        let t = Instant::now();
        use std::io::Write;
        (&wr).write_all(b"ping").unwrap();
        let (tag, result, data) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        let waited = t.elapsed();
        assert_eq!((tag, result, &data[..]), (7, Ok(()), &b"ping"[..]));
        assert!(
            waited < Duration::from_millis(300),
            "completion took {waited:?}: the ring fd did not wake the reactor"
        );
        drop(rd);
    }
}
