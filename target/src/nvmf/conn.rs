//! One NVMe/TCP connection = one queue pair, owned by one reactor: the
//! socket, PDU framing (receive and transmit), the request slots and the
//! driver of each request's state machine.
//!
//! Receive is incremental over a fixed buffer: a PDU header must fit in it,
//! data is copied out as it arrives into the request's own buffer, whose
//! size was bounded by the negotiated limits before it was allocated. The
//! transmit side appends whole PDUs to one byte queue and writes as much as
//! the socket takes; while that queue is above a high-water mark the
//! connection stops parsing new commands (back-pressure, not growth).

use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Instant;

use pollux_graph::{AlignedBuf, Io, IoResult, IoSink};
use pollux_nvme::fabrics::{fctype, FabricsType, FABRICS_OPCODE};
use pollux_nvme::tcp::{
    data_digest, decode_common_header, decode_header, term_req_data, DataDigest, IcResp, Limits,
    Pdu, PduError, PduFrame, R2t, Role, TermReq, TxParams, COMMON_HEADER_LEN, DGST_DATA,
    DGST_HEADER, DIGEST_LEN, PFV_1_0,
};
use pollux_nvme::{Cqe, Sgl, Status};
use pollux_poller::{Events, Reactor, TimerId};

use super::admin::{self, AdminCtx};
use super::command::Outcome;
use super::group::Registration;
use super::io_cmd::{self, IoCtx};
use super::listener::ConnPermit;
use super::phase::QueuePhase;
use super::request::{ReqState, Request, StateCounts, Xfer};
use super::status::{self, FatalPdu, PduFault};
use super::transport::TransportOpts;
use super::{Shared, ADMIN_IN_CAPSULE_DATA};

/// Receive buffer: large enough for any PDU header (72 + digest + padding
/// < 256) and for a good batch of small capsules per read.
const RX_BUF: usize = 64 * 1024;
/// Stop parsing new PDUs while this much response data waits for the
/// socket: the host is not reading, so taking more commands would only
/// grow the queue.
pub(super) const TX_HIGH_WATER: usize = 1024 * 1024;
/// Reads per poll, so one busy connection cannot starve the others on the
/// reactor (level-triggered epoll brings us back).
const READS_PER_POLL: usize = 8;
/// Request slots before Connect says how deep the queue is: just the
/// Connect itself.
const PRE_CONNECT_SLOTS: usize = 1;
/// Data buffers kept for reuse per connection: allocating (and zeroing)
/// a fresh aligned buffer per command costs more than the command's
/// protocol work (callgrind, QD 128 4 KiB reads: a 4 KiB memset and a
/// posix_memalign, 3,300 instructions, against 1,900 for the rest of the
/// request driver), and sizes repeat (the host's block size). So the
/// cache holds up to one buffer per queue slot (a full queue's reads come
/// back and go out again without allocating), at least `BUF_CACHE_MIN`
/// before Connect sized the queue, and never more than
/// `BUF_CACHE_BYTES`, so many connections with large I/Os hold a bounded
/// amount each.
const BUF_CACHE_MIN: usize = 32;
const BUF_CACHE_BYTES: usize = 1024 * 1024;

/// Reusable data buffers of one connection.
struct BufCache {
    bufs: Vec<AlignedBuf>,
    bytes: usize,
    /// Buffers kept at most: the queue depth (`Conn::set_queue_depth`).
    max: usize,
}

impl Default for BufCache {
    fn default() -> Self {
        BufCache {
            bufs: Vec::new(),
            bytes: 0,
            max: BUF_CACHE_MIN,
        }
    }
}

impl BufCache {
    /// A buffer of exactly `len` bytes, reused when one of that size is
    /// cached. Contents are unspecified: every user overwrites the whole
    /// buffer (received data, a read) or zeroes it (admin data).
    fn take(&mut self, len: usize) -> AlignedBuf {
        match self.bufs.iter().rposition(|b| b.len() == len) {
            Some(i) => {
                self.bytes -= len;
                self.bufs.swap_remove(i)
            }
            None => AlignedBuf::zeroed(len),
        }
    }

    fn give(&mut self, buf: AlignedBuf) {
        if self.bufs.len() < self.max && self.bytes + buf.len() <= BUF_CACHE_BYTES {
            self.bytes += buf.len();
            self.bufs.push(buf);
        }
    }
}

/// Bytes of R2T and read buffers the connections of one poll group may
/// hold at once (SPDK's shared data buffer pool): a request that would
/// exceed it waits in NEED_BUFFER, so many hosts at full queue depth cannot
/// make the target allocate without bound. Reactor-local, no atomics.
/// Signed: when `nvmf_create_transport` shrinks the budget of a group with
/// buffers out, it stays below zero until they come back.
pub type Budget = Rc<std::cell::Cell<i64>>;

/// Where the data of the PDU being received goes.
#[derive(Clone, Copy, Debug)]
enum Dest {
    /// In-capsule data of the command in `slot`.
    Capsule { slot: u16 },
    /// H2CData for the command in `slot`.
    H2C { slot: u16 },
}

/// Receive state between PDUs and inside one.
#[derive(Clone, Copy, Debug)]
enum RxState {
    /// Expecting a PDU header.
    Header,
    /// Inside a PDU's padding, data and data digest.
    Body {
        dest: Dest,
        pad_left: usize,
        /// Offset in the destination buffer of the next data byte.
        off: usize,
        data_left: usize,
        digest: DataDigest,
        ddgst: bool,
        dgst: [u8; DIGEST_LEN],
        dgst_have: usize,
    },
}

/// Why a connection closes.
#[derive(Debug)]
pub enum CloseReason {
    /// The peer closed or reset it.
    PeerClosed,
    /// A socket error.
    Io(io::Error),
    /// A fatal protocol error (a C2HTermReq was sent).
    Fatal(String),
    /// The host sent an H2CTermReq.
    HostTerminated,
    /// The controller was torn down (keep alive, host disconnect).
    ControllerGone,
    /// ICReq or Connect did not arrive in time.
    Timeout(&'static str),
    /// The target is stopping.
    Stopping,
    /// In-band authentication failed or timed out.
    Auth(&'static str),
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::PeerClosed => write!(f, "closed by the host"),
            CloseReason::Io(e) => write!(f, "socket error: {e}"),
            CloseReason::Fatal(why) => write!(f, "fatal transport error: {why}"),
            CloseReason::HostTerminated => write!(f, "host sent H2CTermReq"),
            CloseReason::ControllerGone => write!(f, "controller torn down"),
            CloseReason::Timeout(what) => write!(f, "timeout: {what}"),
            CloseReason::Stopping => write!(f, "target stopping"),
            CloseReason::Auth(why) => write!(f, "authentication: {why}"),
        }
    }
}

/// Counters reported when the connection closes (and checked by tests).
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnStats {
    /// Commands received.
    pub commands: u64,
    /// R2Ts sent.
    pub r2ts: u64,
    /// Writes whose data came in the capsule.
    pub in_capsule: u64,
    /// C2HData PDUs sent.
    pub c2h: u64,
    /// Commands completed by C2HData SUCCESS (no CapsuleResp).
    pub c2h_success: u64,
    /// Data digest errors.
    pub data_digest_errors: u64,
}

/// A fatal receive error: the TermReq to send and the offending header.
struct Fatal {
    term: TermReq,
    header: Vec<u8>,
    why: String,
}

impl Fatal {
    /// A fatal error in the PDU whose header is `header`; the TermReq comes
    /// from `status::c2h_term_req`, the one place that builds them.
    fn new(e: FatalPdu<'_>, header: &[u8], why: String) -> Fatal {
        Fatal {
            term: status::c2h_term_req(e),
            header: term_req_data(header).to_vec(),
            why,
        }
    }

    /// The decoder refused the PDU.
    fn decode(e: &PduError, header: &[u8]) -> Fatal {
        Fatal::new(FatalPdu::Decode(e), header, e.to_string())
    }

    /// The PDU breaks the queue pair's state.
    fn fault(f: PduFault, header: &[u8], why: impl Into<String>) -> Fatal {
        Fatal::new(FatalPdu::Fault(f), header, why.into())
    }
}

/// Completion sink of one connection: graph I/O finishes here, on the
/// connection's reactor.
pub struct ConnSink {
    conn: Weak<std::cell::RefCell<Conn>>,
}

impl IoSink for ConnSink {
    fn io_done(&self, r: &Reactor, io: Io, result: IoResult) {
        // A connection closed with I/O in flight: the I/O (and its buffer)
        // is simply dropped here.
        let Some(conn) = self.conn.upgrade() else {
            return;
        };
        if let Ok(mut c) = conn.try_borrow_mut() {
            c.io_done(r, io, result);
            c.flush_if_last();
            c.wake_group();
            return;
        }
        // Only reachable if a node completed synchronously inside our own
        // submit; retry on the next timer pass instead of panicking.
        let weak = Rc::downgrade(&conn);
        r.add_timer(std::time::Duration::ZERO, move |r| {
            if let Some(c) = weak.upgrade() {
                let mut c = c.borrow_mut();
                c.io_done(r, io, result);
                c.wake_group();
            }
        });
    }
}

/// One queue pair.
pub struct Conn {
    pub(super) shared: Arc<Shared>,
    sock: TcpStream,
    /// Remote address.
    pub peer: SocketAddr,
    /// The listener address the connection came in on.
    pub port: SocketAddr,
    /// Transport options taken at accept; replaced by the controller's at
    /// Connect (see `transport`).
    pub(super) opts: Arc<TransportOpts>,
    /// The host disabled SQ flow control at Connect (CATTR bit 2).
    pub(super) sqflow_disabled: bool,
    /// How far the queue pair got: its controller and QID live here.
    pub(super) phase: QueuePhase,
    /// DH-HMAC-CHAP state when the host must authenticate (`auth`).
    pub(super) auth: Option<Box<super::auth::QpairAuth>>,
    /// This connection, for completions that come back from other
    /// threads through the reactor (`auth`'s DH jobs).
    pub(super) me: Weak<std::cell::RefCell<Conn>>,
    pub(super) created: Instant,
    limits: Limits,
    pub(super) tx_params: TxParams,
    rx: Box<[u8]>,
    rx_start: usize,
    rx_end: usize,
    rx_state: RxState,
    tx: super::txq::TxQueue,
    /// CapsuleResps of reads held behind their C2HData PDUs (see
    /// `resp_group`), moved to the end of `tx` when the group is full and
    /// at every flush; never written from here.
    tx_held: super::txq::TxQueue,
    resp_group: super::resp_group::RespGroup,
    pub(super) reqs: Vec<Request>,
    /// Requests per state (the `pollux_nvmf_requests` gauge's share of
    /// this queue pair); `Request::set_state` keeps it.
    pub(super) states: Arc<StateCounts>,
    free: Vec<u16>,
    /// Connect's SQSIZE (0-based).
    pub(super) sqsize: u16,
    pub(super) sqhd: u16,
    /// This queue pair's view of its subsystem's namespace table.
    pub(super) ns_cache: super::subsystem::NsCache,
    /// Slots holding Asynchronous Event Requests.
    pub(super) aers: Vec<u16>,
    /// The last command received, if it was the first of a fused pair:
    /// the next one must be its second (`fused`).
    pub(super) fused_first: Option<u16>,
    pub(super) sink: Rc<dyn IoSink>,
    pub(super) ka_timer: Option<TimerId>,
    pub(super) stats: ConnStats,
    close: Option<CloseReason>,
    /// Parsing stopped for back-pressure with bytes still buffered.
    rx_paused: bool,
    /// Requests with graph I/O in flight.
    graph_busy: u32,
    /// Reusable data buffers.
    bufs: BufCache,
    /// The poll group's buffer budget.
    budget: Budget,
    /// Requests waiting in NEED_BUFFER for budget, oldest first.
    buf_wait: std::collections::VecDeque<u16>,
    /// Our place in the poll group (None until added).
    reg: Option<Registration>,
    /// Events currently registered.
    interest: Events,
    _permit: ConnPermit,
}

/// Read interest (level-triggered: back-pressured connections drop it).
const EV_IN: Events = Events::READABLE.union(Events::READ_HANGUP);
/// Write interest, only while responses wait for the socket.
const EV_OUT: Events = Events::WRITABLE;

impl Conn {
    /// Wraps an accepted, non-blocking socket.
    pub fn new(
        shared: Arc<Shared>,
        sock: TcpStream,
        port: SocketAddr,
        permit: ConnPermit,
        budget: Budget,
    ) -> io::Result<Rc<std::cell::RefCell<Conn>>> {
        sock.set_nonblocking(true)?;
        sock.set_nodelay(true)?;
        let peer = sock.peer_addr()?;
        let opts = shared.opts();
        let states = shared.register_request_states();
        if opts.sock_priority != 0 {
            set_sock_priority(&sock, opts.sock_priority);
        }
        Ok(Rc::new_cyclic(|weak| {
            std::cell::RefCell::new(Conn {
                shared,
                sock,
                peer,
                port,
                opts,
                sqflow_disabled: false,
                phase: QueuePhase::AwaitIcReq,
                auth: None,
                me: weak.clone(),
                created: Instant::now(),
                limits: Limits::new(Role::Controller),
                tx_params: TxParams::default(),
                rx: vec![0u8; RX_BUF].into_boxed_slice(),
                rx_start: 0,
                rx_end: 0,
                rx_state: RxState::Header,
                tx: super::txq::TxQueue::default(),
                tx_held: super::txq::TxQueue::default(),
                resp_group: Default::default(),
                reqs: (0..PRE_CONNECT_SLOTS).map(|_| Request::free()).collect(),
                states,
                free: (0..PRE_CONNECT_SLOTS as u16).rev().collect(),
                sqsize: 0,
                sqhd: 0,
                ns_cache: Default::default(),
                aers: Vec::new(),
                fused_first: None,
                sink: Rc::new(ConnSink { conn: weak.clone() }),
                ka_timer: None,
                stats: ConnStats::default(),
                close: None,
                rx_paused: false,
                graph_busy: 0,
                bufs: BufCache::default(),
                budget,
                buf_wait: std::collections::VecDeque::new(),
                reg: None,
                interest: Events::EMPTY,
                _permit: permit,
            })
        }))
    }

    /// The socket's fd (for epoll).
    pub fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// Whether the poll group must call `poll` even without readiness.
    pub fn needs_poll(&self) -> bool {
        self.close.is_some()
            || (self.rx_paused && !self.backpressured())
            || !self.buf_wait.is_empty()
            // Responses queued by completions since the last pass: one
            // write per pass for all of them.
            || (!self.tx.is_empty() && !self.interest.contains(EV_OUT))
    }

    /// Puts the connection on its poll group's pending list if it has
    /// work no socket event will announce (a completion queued a
    /// response): without this the group would not poll it again.
    pub(super) fn wake_group(&self) {
        if let Some(reg) = &self.reg {
            if self.needs_poll() {
                reg.mark_pending();
            }
        }
    }

    /// The connection was added to its poll group for `events`.
    pub fn registered(&mut self, reg: Registration, events: Events) {
        self.reg = Some(reg);
        self.interest = events;
    }

    /// The read/write interest this connection needs now.
    pub fn wanted_events(&self) -> Events {
        let read = if self.backpressured() || self.stopping() {
            Events::READ_HANGUP
        } else {
            EV_IN
        };
        let write = if !self.tx.is_empty() {
            EV_OUT
        } else {
            Events::EMPTY
        };
        read | write
    }

    /// Re-registers with epoll when the interest changed: write interest
    /// only while output is blocked, no read interest while back-pressured
    /// (either would make level-triggered epoll spin).
    fn update_interest(&mut self) {
        let want = self.wanted_events();
        if want == self.interest {
            return;
        }
        let Some(reg) = &self.reg else { return };
        if reg.modify(self.fd(), want).is_ok() {
            self.interest = want;
        }
    }

    fn backpressured(&self) -> bool {
        self.tx.pending() > TX_HIGH_WATER
    }

    /// Requests being executed (I/O in flight or AER held).
    fn busy_requests(&self) -> usize {
        self.reqs
            .iter()
            .filter(|q| q.state() == ReqState::Executing)
            .count()
            .saturating_sub(self.aers.len())
    }

    /// Does ready socket work. `Err` means: close the connection.
    pub fn poll(&mut self, r: &Reactor, readable: bool) -> Result<bool, CloseReason> {
        if let Some(reason) = self.close.take() {
            return Err(reason);
        }
        let mut work = self.flush()?;
        work |= self.retry_buffer_waits(r);
        if (readable || self.rx_paused) && !self.stopping() {
            work |= self.receive(r)?;
            // An AER just received may find its event already pending.
            work |= self.complete_aers(r);
            work |= self.flush()?;
        }
        if let Some(reason) = self.close.take() {
            return Err(reason);
        }
        self.update_interest();
        Ok(work)
    }

    /// Resumes requests waiting in NEED_BUFFER, oldest first, while the
    /// budget allows.
    fn retry_buffer_waits(&mut self, r: &Reactor) -> bool {
        let mut work = false;
        while let Some(&slot) = self.buf_wait.front() {
            let req = &self.reqs[slot as usize];
            if req.state() != ReqState::NeedBuffer {
                self.buf_wait.pop_front();
                continue;
            }
            if self.budget.get() < i64::from(self.opts.buffer_charge(req.xfer_len)) {
                break;
            }
            self.process(r, slot);
            work = true;
            if self.buf_wait.front() == Some(&slot) {
                break;
            }
        }
        work
    }

    fn stopping(&self) -> bool {
        self.shared
            .stopping
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Periodic checks (poll-group timer): handshake timeouts, controller
    /// teardown, target stop, pending async events.
    pub fn tick(&mut self, r: &Reactor, now: Instant) -> Result<(), CloseReason> {
        let age = now.saturating_duration_since(self.created);
        match self.phase {
            QueuePhase::AwaitIcReq if age > super::IC_TIMEOUT => {
                return Err(CloseReason::Timeout("no ICReq"))
            }
            QueuePhase::AwaitConnect if age > super::CONNECT_TIMEOUT => {
                return Err(CloseReason::Timeout("no Connect"))
            }
            _ => {}
        }
        if self.phase.ctrl().is_some_and(|c| c.is_dead()) {
            return Err(CloseReason::ControllerGone);
        }
        if let Some(a) = self.auth.as_deref_mut() {
            a.check_timeout(now).map_err(CloseReason::Auth)?;
            // KATO counts from when the host may use the controller: the
            // first transaction's own step deadline bounds it until then
            // (Linux's nvmet, too, starts KATO only at CC.EN).
            if let (false, QueuePhase::Admin(c)) = (a.authenticated(), &self.phase) {
                c.state().last_keep_alive = now;
            }
        }
        if self.stopping() && self.busy_requests() == 0 {
            let _ = self.flush();
            return Err(CloseReason::Stopping);
        }
        if self.complete_aers(r) {
            self.flush()?;
        }
        self.update_interest();
        Ok(())
    }

    /// Releases everything the connection holds in the controller.
    pub fn teardown(&mut self, r: &Reactor, reason: &CloseReason) {
        // Give the budget back now; buffers of I/O still in flight are freed
        // when the graph completes it (briefly over budget, never leaked).
        let charged: i64 = self.reqs.iter().map(|q| i64::from(q.charged)).sum();
        self.budget.set(self.budget.get() + charged);
        for q in &mut self.reqs {
            q.charged = 0;
        }
        if let Some(t) = self.ka_timer.take() {
            r.cancel_timer(t);
        }
        let _ = self.sock.shutdown(Shutdown::Both);
        let qid = self.phase.qid();
        match std::mem::replace(&mut self.phase, QueuePhase::Closing { qid }) {
            // The admin queue going away ends the controller and, with it,
            // every I/O queue (they see `dead` on their next tick).
            QueuePhase::Admin(ctrl) => self.shared.controllers().remove(ctrl.cntlid),
            QueuePhase::Io { ctrl, qid } => ctrl.state().io_qids.retain(|&q| q != qid),
            QueuePhase::AwaitIcReq | QueuePhase::AwaitConnect | QueuePhase::Closing { .. } => {}
        }
        let level_info = matches!(
            reason,
            CloseReason::PeerClosed | CloseReason::Stopping | CloseReason::ControllerGone
        );
        let s = self.stats;
        if level_info {
            tracing::info!(peer = %self.peer, qid = ?qid, commands = s.commands, r2ts = s.r2ts,
                in_capsule_writes = s.in_capsule, c2h_pdus = s.c2h, c2h_success = s.c2h_success,
                sqflow_disabled = self.sqflow_disabled, data_digest_errors = s.data_digest_errors,
                reason = %reason, "nvmf: queue pair closed");
        } else {
            tracing::warn!(peer = %self.peer, qid = ?qid, commands = s.commands, r2ts = s.r2ts,
                in_capsule_writes = s.in_capsule, c2h_pdus = s.c2h, c2h_success = s.c2h_success,
                sqflow_disabled = self.sqflow_disabled, data_digest_errors = s.data_digest_errors,
                reason = %reason, "nvmf: queue pair closed");
        }
    }

    // ----------------------------------------------------------------- rx

    fn receive(&mut self, r: &Reactor) -> Result<bool, CloseReason> {
        let mut work = false;
        let mut reads = 0;
        let mut drained = false;
        self.rx_paused = false;
        loop {
            loop {
                if self.backpressured() {
                    self.rx_paused = self.rx_start < self.rx_end;
                    return Ok(work);
                }
                match self.parse_one(r) {
                    Ok(true) => work = true,
                    Ok(false) => break,
                    Err(f) => return Err(self.send_term(f)),
                }
                if self.close.is_some() {
                    return Ok(work);
                }
            }
            // A short read emptied the socket: skip the read that would
            // only say EAGAIN (level-triggered epoll reports new data).
            if reads == READS_PER_POLL || drained {
                return Ok(work);
            }
            // Make room: keep the unparsed tail at the front.
            if self.rx_start == self.rx_end {
                self.rx_start = 0;
                self.rx_end = 0;
            } else if self.rx_start > RX_BUF / 2 || self.rx_end == RX_BUF {
                self.rx.copy_within(self.rx_start..self.rx_end, 0);
                self.rx_end -= self.rx_start;
                self.rx_start = 0;
            }
            reads += 1;
            match self.sock.read(&mut self.rx[self.rx_end..]) {
                Ok(0) => return Err(CloseReason::PeerClosed),
                Ok(n) => {
                    drained = self.rx_end + n < RX_BUF;
                    self.rx_end += n;
                    work = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(work),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(CloseReason::Io(e)),
            }
        }
    }

    /// Parses what the buffer holds of the current PDU. `Ok(false)`: need
    /// more bytes.
    fn parse_one(&mut self, r: &Reactor) -> Result<bool, Fatal> {
        match self.rx_state {
            RxState::Header => self.parse_header(r),
            RxState::Body { .. } => self.parse_body(r),
        }
    }

    fn parse_header(&mut self, r: &Reactor) -> Result<bool, Fatal> {
        let avail = &self.rx[self.rx_start..self.rx_end];
        // One pass over the common header when the whole header is here
        // (the common case: a batch of capsules in one read); `Truncated`
        // is only ever "not all of it yet".
        let (frame, pdu) = match decode_header(avail, &self.limits) {
            Ok(d) => d,
            Err(PduError::Truncated { .. }) => return Ok(false),
            // The TermReq quotes the common header when that was wrong,
            // else the whole header.
            Err(e) => {
                let quoted = match decode_common_header(avail, &self.limits) {
                    Ok(f) => &avail[..f.header_len().min(avail.len())],
                    Err(_) => &avail[..COMMON_HEADER_LEN.min(avail.len())],
                };
                return Err(Fatal::decode(&e, quoted));
            }
        };
        let hl = frame.header_len();
        let mut hdr = [0u8; 132];
        hdr[..hl].copy_from_slice(&avail[..hl]);
        self.rx_start += hl;
        self.on_pdu(r, frame, pdu, &hdr[..hl])?;
        Ok(true)
    }

    fn on_pdu(&mut self, r: &Reactor, frame: PduFrame, pdu: Pdu, hdr: &[u8]) -> Result<(), Fatal> {
        match pdu {
            Pdu::IcReq(req) => {
                let dgst = req.dgst & (DGST_HEADER | DGST_DATA);
                let hdgst = dgst & DGST_HEADER != 0;
                let ddgst = dgst & DGST_DATA != 0;
                self.tx_params = TxParams {
                    hdgst,
                    ddgst,
                    pda: req.hpda,
                };
                // Until Connect says which queue this is, in-capsule data is
                // bounded as on the admin queue (Connect data is 1 KiB).
                self.limits = Limits::established(
                    Role::Controller,
                    hdgst,
                    ddgst,
                    0,
                    ADMIN_IN_CAPSULE_DATA,
                    self.opts.maxh2cdata(),
                );
                self.phase = QueuePhase::AwaitConnect;
                tracing::info!(peer = %self.peer, hdgst, ddgst, hpda = req.hpda, "nvmf: ICReq");
                let resp = Pdu::IcResp(IcResp {
                    pfv: PFV_1_0,
                    cpda: 0,
                    dgst,
                    maxh2cdata: self.opts.maxh2cdata(),
                });
                self.send_pdu(&resp, &[]);
                Ok(())
            }
            Pdu::H2CTermReq(t) => {
                tracing::warn!(peer = %self.peer, fes = t.fes.0, fei = t.fei, "nvmf: host sent H2CTermReq");
                self.close = Some(CloseReason::HostTerminated);
                Ok(())
            }
            Pdu::CapsuleCmd(sqe) => {
                self.stats.commands += 1;
                self.resp_group.command(sqe.cid());
                self.sqhd = if self.sqsize == 0 || self.sqflow_disabled {
                    0
                } else {
                    (self.sqhd + 1) % (self.sqsize + 1)
                };
                let Some(slot) = self.free.pop() else {
                    return Err(Fatal::fault(
                        PduFault::QueueOverflow,
                        hdr,
                        "command beyond the negotiated queue depth",
                    ));
                };
                let n = frame.data_len as usize;
                if n == 0 {
                    self.reqs[slot as usize].start(&self.states, sqe, None);
                    self.fused_order(r, slot);
                    self.process(r, slot);
                } else {
                    // `n` is bounded by the in-capsule limit we advertised
                    // (checked by the decoder before we got here).
                    let buf = self.bufs.take(n);
                    self.reqs[slot as usize].start(&self.states, sqe, Some(buf));
                    self.fused_order(r, slot);
                    self.rx_state = Self::body(Dest::Capsule { slot }, &frame, 0);
                }
                Ok(())
            }
            Pdu::H2CData { hdr: d, .. } => {
                let slot = d.ttag;
                let Some(req) = self.reqs.get(slot as usize) else {
                    return Err(Fatal::fault(
                        PduFault::UnknownTransferTag,
                        hdr,
                        "H2CData with an unknown transfer tag",
                    ));
                };
                if req.state() != ReqState::TransferringHostToController {
                    return Err(Fatal::fault(
                        PduFault::NoR2tOutstanding,
                        hdr,
                        "H2CData without an outstanding R2T",
                    ));
                }
                if req.cid() != d.cccid {
                    return Err(Fatal::fault(
                        PduFault::CccidMismatch,
                        hdr,
                        "H2CData CCCID does not match the R2T",
                    ));
                }
                let end = u64::from(d.datao) + u64::from(d.datal);
                if d.datao != req.received || end > u64::from(req.xfer_len) || d.datal == 0 {
                    return Err(Fatal::fault(
                        PduFault::DataOutOfRange,
                        hdr,
                        format!(
                            "H2CData {}+{} outside the expected {}..{}",
                            d.datao, d.datal, req.received, req.xfer_len
                        ),
                    ));
                }
                self.rx_state = Self::body(Dest::H2C { slot }, &frame, d.datao as usize);
                Ok(())
            }
            // The decoder only passes types a host sends.
            other => Err(Fatal::fault(
                PduFault::UnexpectedType,
                hdr,
                format!("unexpected {:?}", other.pdu_type()),
            )),
        }
    }

    fn body(dest: Dest, frame: &PduFrame, off: usize) -> RxState {
        RxState::Body {
            dest,
            pad_left: frame.pad_len(),
            off,
            data_left: frame.data_len as usize,
            digest: DataDigest::new(),
            ddgst: frame.ddgst,
            dgst: [0; DIGEST_LEN],
            dgst_have: 0,
        }
    }

    fn parse_body(&mut self, r: &Reactor) -> Result<bool, Fatal> {
        let RxState::Body {
            dest,
            mut pad_left,
            mut off,
            mut data_left,
            mut digest,
            ddgst,
            mut dgst,
            mut dgst_have,
        } = self.rx_state
        else {
            return Ok(false);
        };
        let before = self.rx_start;
        // Padding.
        let n = pad_left.min(self.rx_end - self.rx_start);
        pad_left -= n;
        self.rx_start += n;
        // Data.
        if pad_left == 0 && data_left > 0 {
            let n = data_left.min(self.rx_end - self.rx_start);
            let src = &self.rx[self.rx_start..self.rx_start + n];
            let slot = match dest {
                Dest::Capsule { slot } | Dest::H2C { slot } => slot,
            };
            if let Some(buf) = self.reqs[slot as usize].buf.as_mut() {
                // Bounds were validated against the buffer's length (the
                // capsule buffer is exactly the data length; H2C offsets
                // were checked against the transfer length).
                if let Some(dst) = buf.as_mut_slice().get_mut(off..off + n) {
                    dst.copy_from_slice(src);
                }
            }
            if ddgst {
                digest.update(src);
            }
            off += n;
            data_left -= n;
            self.rx_start += n;
        }
        // Data digest.
        if pad_left == 0 && data_left == 0 && ddgst && dgst_have < DIGEST_LEN {
            let n = (DIGEST_LEN - dgst_have).min(self.rx_end - self.rx_start);
            dgst[dgst_have..dgst_have + n]
                .copy_from_slice(&self.rx[self.rx_start..self.rx_start + n]);
            dgst_have += n;
            self.rx_start += n;
        }
        let done = pad_left == 0 && data_left == 0 && (!ddgst || dgst_have == DIGEST_LEN);
        if !done {
            self.rx_state = RxState::Body {
                dest,
                pad_left,
                off,
                data_left,
                digest,
                ddgst,
                dgst,
                dgst_have,
            };
            return Ok(self.rx_start != before);
        }
        self.rx_state = RxState::Header;
        let digest_ok = !ddgst || digest.matches(dgst);
        if !digest_ok {
            self.stats.data_digest_errors += 1;
            tracing::warn!(peer = %self.peer, "nvmf: data digest mismatch");
        }
        let bad_digest = PduError::DataDigest {
            expected: digest.value(),
            got: u32::from_le_bytes(dgst),
        };
        match dest {
            Dest::Capsule { slot } => {
                let req = &mut self.reqs[slot as usize];
                req.received = req.buf.as_ref().map_or(0, |b| b.len() as u32);
                if !digest_ok {
                    req.fail(status::data_digest_status(&bad_digest));
                    req.set_state(&self.states, ReqState::ReadyToComplete);
                }
                self.process(r, slot);
            }
            Dest::H2C { slot } => {
                let req = &mut self.reqs[slot as usize];
                req.received = off as u32;
                if !digest_ok {
                    req.status = status::data_digest_status(&bad_digest);
                }
                if req.received == req.xfer_len {
                    let next = if req.status.is_success() {
                        ReqState::ReadyToExecute
                    } else {
                        ReqState::ReadyToComplete
                    };
                    req.set_state(&self.states, next);
                    self.process(r, slot);
                }
            }
        }
        Ok(true)
    }

    // ----------------------------------------------------------------- tx

    /// Queues one PDU with its data (and data digest when negotiated).
    pub(super) fn send_pdu(&mut self, pdu: &Pdu, data: &[u8]) {
        let mut hdr = [0u8; 256];
        let frame = match pdu.encode(&self.tx_params, data.len() as u32, &mut hdr) {
            Ok(f) => f,
            Err(e) => {
                // Our own encoding failed: a bug, not peer input. Drop the
                // connection rather than send something malformed.
                tracing::error!(error = %e, "nvmf: cannot encode {:?}", pdu.pdu_type());
                self.close = Some(CloseReason::Fatal(format!("encode: {e}")));
                return;
            }
        };
        let hl = if frame.data_len > 0 {
            frame.data_offset as usize
        } else {
            frame.header_len()
        };
        self.tx.push_bytes(&hdr[..hl]);
        if frame.data_len > 0 {
            self.tx.push_bytes(data);
            if frame.ddgst {
                self.tx.push_bytes(&data_digest(&[data]));
            }
        }
    }

    /// Queues one PDU whose data is the first `len` bytes of `buf`, sent
    /// from `buf` itself (no copy); `buf` goes back to the buffer cache
    /// once the socket took it.
    fn send_pdu_buf(&mut self, pdu: &Pdu, buf: AlignedBuf, len: usize) {
        let len = len.min(buf.len());
        let mut hdr = [0u8; 256];
        let frame = match pdu.encode(&self.tx_params, len as u32, &mut hdr) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(error = %e, "nvmf: cannot encode {:?}", pdu.pdu_type());
                self.close = Some(CloseReason::Fatal(format!("encode: {e}")));
                self.bufs.give(buf);
                return;
            }
        };
        if frame.data_len == 0 {
            self.tx.push_bytes(&hdr[..frame.header_len()]);
            self.bufs.give(buf);
            return;
        }
        self.tx.push_bytes(&hdr[..frame.data_offset as usize]);
        let digest = frame.ddgst.then(|| data_digest(&[&buf.as_slice()[..len]]));
        self.tx.push_buf(buf, len);
        if let Some(d) = digest {
            self.tx.push_bytes(&d);
        }
    }

    /// Writes queued bytes. `Ok(true)` if anything was written.
    pub(super) fn flush(&mut self) -> Result<bool, CloseReason> {
        self.release_held();
        let bufs = &mut self.bufs;
        self.tx
            .flush(&mut self.sock, |b| bufs.give(b))
            .map_err(|e| match e.kind() {
                io::ErrorKind::WriteZero => CloseReason::PeerClosed,
                _ => CloseReason::Io(e),
            })
    }

    /// Puts the held CapsuleResps at the end of the transmit queue, behind
    /// the data PDUs they answer.
    fn release_held(&mut self) {
        if !self.tx_held.is_empty() {
            self.tx_held.move_to(&mut self.tx);
        }
        self.resp_group.released();
    }

    /// After a graph completion: writes the queued responses now when no
    /// other graph I/O of this queue is in flight, so nothing else could
    /// join them in this pass's write (QD 1 saves the rest of the reactor
    /// iteration and the next pass's start); with I/O in flight they wait
    /// for the poll group's next pass and go out in one write. A socket
    /// error closes the connection there.
    fn flush_if_last(&mut self) {
        if self.graph_busy != 0 || self.tx.is_empty() || self.interest.contains(EV_OUT) {
            return;
        }
        if let Err(reason) = self.flush() {
            self.close.get_or_insert(reason);
        }
    }

    /// Sends a C2HTermReq and marks the connection for closing.
    fn send_term(&mut self, f: Fatal) -> CloseReason {
        tracing::warn!(peer = %self.peer, fes = f.term.fes.0, fei = f.term.fei, error = %f.why,
            "nvmf: fatal PDU error, sending C2HTermReq");
        self.send_pdu(&Pdu::C2HTermReq(f.term), &f.header);
        // Best effort: the TermReq is small; whatever the socket does not
        // take now is lost with the connection.
        let _ = self.flush();
        CloseReason::Fatal(f.why)
    }

    // ------------------------------------------------------ request driver

    /// Advances the request in `slot` until it waits or completes.
    pub(super) fn process(&mut self, r: &Reactor, slot: u16) {
        let i = slot as usize;
        loop {
            let state = self.reqs[i].state();
            match state {
                ReqState::Free => return,
                ReqState::New => {
                    let next = match self.req_parse(i) {
                        Ok(()) => ReqState::NeedBuffer,
                        Err(status) => {
                            self.reqs[i].fail(status);
                            ReqState::ReadyToComplete
                        }
                    };
                    self.reqs[i].set_state(&self.states, next);
                }
                ReqState::NeedBuffer => {
                    let req = &mut self.reqs[i];
                    let needs_buf =
                        matches!(req.xfer, Xfer::C2H) || (req.xfer == Xfer::H2C && !req.in_capsule);
                    if needs_buf && req.charged == 0 {
                        let charge = self.opts.buffer_charge(req.xfer_len);
                        let len = i64::from(charge);
                        let avail = self.budget.get();
                        // FIFO: a request may not overtake earlier waiters.
                        let first = self.buf_wait.front().is_none_or(|&s| s == slot);
                        if avail < len || !first {
                            if !self.buf_wait.contains(&slot) {
                                self.shared
                                    .buffer_waits
                                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                self.buf_wait.push_back(slot);
                            }
                            return;
                        }
                        self.budget.set(avail - len);
                        req.charged = charge;
                        if self.buf_wait.front() == Some(&slot) {
                            self.buf_wait.pop_front();
                        }
                    }
                    match req.xfer {
                        Xfer::H2C if !req.in_capsule => {
                            req.buf = Some(self.bufs.take(req.xfer_len as usize));
                            req.set_state(&self.states, ReqState::TransferringHostToController);
                            let r2t = Pdu::R2T(R2t {
                                cccid: req.cid(),
                                ttag: slot,
                                r2to: 0,
                                r2tl: req.xfer_len,
                            });
                            self.stats.r2ts += 1;
                            self.send_pdu(&r2t, &[]);
                        }
                        Xfer::H2C => {
                            self.stats.in_capsule += 1;
                            req.set_state(&self.states, ReqState::ReadyToExecute);
                        }
                        Xfer::C2H => {
                            let mut buf = self.bufs.take(req.xfer_len as usize);
                            if !self.phase.is_io() {
                                // Admin data is built piecewise over zeroes.
                                buf.as_mut_slice().fill(0);
                            }
                            req.buf = Some(buf);
                            req.c2h_len = req.xfer_len;
                            req.set_state(&self.states, ReqState::ReadyToExecute);
                        }
                        Xfer::None => req.set_state(&self.states, ReqState::ReadyToExecute),
                    }
                }
                ReqState::TransferringHostToController
                | ReqState::AwaitingRangeLock
                | ReqState::Executing => return,
                ReqState::ReadyToExecute
                    if self.phase.is_io()
                        && matches!(
                            self.reqs[i].sqe.fuse(),
                            pollux_nvme::Fuse::First | pollux_nvme::Fuse::Second
                        ) =>
                {
                    self.reqs[i].set_state(&self.states, ReqState::FusedAwaitingPartner);
                }
                ReqState::FusedAwaitingPartner => {
                    if !self.fused_ready(r, slot) {
                        return;
                    }
                }
                ReqState::ReadyToExecute => {
                    // A failed command is Executed too: its status says how.
                    let next = match self.execute(r, slot) {
                        Outcome::Complete => ReqState::Executed,
                        Outcome::Submitted => {
                            if self.reqs[i].outstanding > 0 {
                                self.graph_busy += 1;
                            }
                            ReqState::Executing
                        }
                        Outcome::HoldAer => {
                            // Completed by `complete_aers` from the poll or
                            // the tick, never from inside this loop.
                            self.aers.push(slot);
                            ReqState::Executing
                        }
                        Outcome::CompleteAndClose => {
                            self.request_close(CloseReason::PeerClosed);
                            ReqState::Executed
                        }
                    };
                    self.reqs[i].set_state(&self.states, next);
                }
                ReqState::Executed => {
                    self.reqs[i].set_state(&self.states, ReqState::ReadyToComplete)
                }
                ReqState::ReadyToComplete => self.respond(i),
                ReqState::TransferringControllerToHost => {
                    // The C2HData is already in the transmit queue.
                    self.reqs[i].set_state(&self.states, ReqState::Completed);
                }
                ReqState::Completed => {
                    let kick = self.fused_completed(slot);
                    self.reqs[i].set_state(&self.states, ReqState::Free);
                    let done = std::mem::replace(&mut self.reqs[i], Request::free());
                    if let Some(b) = done.buf {
                        self.bufs.give(b);
                    }
                    self.budget.set(self.budget.get() + i64::from(done.charged));
                    self.free.push(slot);
                    if let Some(partner) = kick {
                        self.process(r, partner);
                    }
                    return;
                }
            }
        }
    }

    /// NEW: data direction and length from the opcode and the SGL; `Err`
    /// is the status of a command whose SGL is inconsistent with them.
    fn req_parse(&mut self, i: usize) -> Result<(), Status> {
        let req = &mut self.reqs[i];
        let sqe = req.sqe;
        let dir = if sqe.opcode() == FABRICS_OPCODE {
            fctype(&sqe) & 0x3
        } else {
            sqe.opcode() & 0x3
        };
        req.xfer = match dir {
            0 => Xfer::None,
            1 => Xfer::H2C,
            2 => Xfer::C2H,
            _ => return Err(Status::INVALID_FIELD.with_dnr()),
        };
        if req.xfer == Xfer::None {
            if req.in_capsule {
                return Err(Status::INVALID_FIELD.with_dnr());
            }
            return Ok(());
        }
        let sgl = sqe.sgl();
        if sgl.length() == 0 && !req.in_capsule {
            // A data-direction opcode without data (Set Features, Write
            // Zeroes-style commands): any zero-length descriptor will do.
            req.xfer = Xfer::None;
            return Ok(());
        }
        match sgl {
            Sgl::InCapsule { offset, length } => {
                if req.xfer != Xfer::H2C || !req.in_capsule {
                    return Err(Status::INVALID_FIELD.with_dnr());
                }
                if offset != 0 {
                    return Err(Status::SGL_OFFSET_INVALID.with_dnr());
                }
                if length != req.received {
                    return Err(Status::DATA_SGL_LENGTH_INVALID.with_dnr());
                }
                req.xfer_len = length;
            }
            Sgl::Transport { length, .. } => {
                if req.in_capsule {
                    return Err(Status::INVALID_FIELD.with_dnr());
                }
                if length > self.opts.max_io_size {
                    return Err(Status::INVALID_FIELD.with_dnr());
                }
                req.xfer_len = length;
            }
            _ => return Err(Status::SGL_DESCRIPTOR_TYPE_INVALID.with_dnr()),
        }
        if req.xfer_len == 0 {
            req.xfer = Xfer::None;
        }
        Ok(())
    }

    /// READY_TO_EXECUTE: Connect on a new queue; otherwise the admin or
    /// I/O command set, on the request and its controller.
    fn execute(&mut self, r: &Reactor, slot: u16) -> Outcome {
        if let Some(outcome) = self.auth_gate(r, slot) {
            return outcome;
        }
        let req = &mut self.reqs[slot as usize];
        match &self.phase {
            QueuePhase::Admin(ctrl) => {
                let cx = AdminCtx {
                    shared: &self.shared,
                    reactor: r,
                    held_aers: self.aers.len(),
                };
                admin::execute(req, ctrl, &cx)
            }
            QueuePhase::Io { ctrl, .. } => {
                let mut cx = IoCtx {
                    reactor: r,
                    graph: &self.shared.graph,
                    ns_cache: &mut self.ns_cache,
                    sink: &self.sink,
                    tag: u64::from(slot),
                };
                io_cmd::execute(req, ctrl, &mut cx)
            }
            // Commands arrive only after ICReq and none once closing.
            QueuePhase::AwaitConnect | QueuePhase::AwaitIcReq | QueuePhase::Closing { .. } => {
                self.exec_connect(r, slot);
                Outcome::Complete
            }
        }
    }

    /// Completes held AERs while the admin queue's controller has events.
    /// Called from the poll and the tick, so a completion never re-enters
    /// the request driver. True if any completed.
    fn complete_aers(&mut self, r: &Reactor) -> bool {
        let QueuePhase::Admin(ctrl) = &self.phase else {
            return false;
        };
        if self.aers.is_empty() || !ctrl.has_event() {
            return false;
        }
        let ctrl = ctrl.clone();
        let mut done = false;
        while !self.aers.is_empty() {
            let Some(ev) = ctrl.take_event() else { break };
            let slot = self.aers.remove(0);
            let req = &mut self.reqs[slot as usize];
            if req.state() != ReqState::Executing {
                continue;
            }
            admin::complete_aer(req, ev);
            req.set_state(&self.states, ReqState::Executed);
            self.process(r, slot);
            done = true;
        }
        done
    }

    /// READY_TO_COMPLETE: C2HData (with SUCCESS where `c2h_success` allows
    /// it) and/or CapsuleResp.
    fn respond(&mut self, i: usize) {
        let qid = self.phase.qid().unwrap_or(0);
        let is_connect = {
            let sqe = &self.reqs[i].sqe;
            sqe.opcode() == FABRICS_OPCODE && fctype(sqe) == FabricsType::Connect.as_u8()
        };
        // Without SQ flow control SQHD is not tracked: the Connect response
        // says FFFFh and later ones keep the head where Connect left it, as
        // the Linux target does.
        let sqhd = if self.sqflow_disabled && is_connect {
            0xFFFF
        } else {
            self.sqhd
        };
        let success_allowed = c2h_success_allowed(&self.opts, self.sqflow_disabled);
        let req = &mut self.reqs[i];
        let send_data = req.status.is_success() && req.xfer == Xfer::C2H && req.c2h_len > 0;
        let cqe = {
            let mut c = Cqe::new(req.cid(), req.status);
            c.set_dw0(req.dw0);
            c.set_dw1(req.dw1);
            c.set_sqid(qid);
            c.set_sqhd(sqhd);
            c
        };
        if send_data {
            // SUCCESS stands for a CQE of all-zero dwords 0 and 1.
            let success = success_allowed && req.dw0 == 0 && req.dw1 == 0;
            let buf = req.buf.take();
            let len = req.c2h_len;
            let cid = req.cid();
            req.set_state(&self.states, ReqState::TransferringControllerToHost);
            let pdu = Pdu::C2HData {
                hdr: pollux_nvme::tcp::DataHdr {
                    cccid: cid,
                    ttag: 0,
                    datao: 0,
                    datal: len,
                },
                last: true,
                success,
            };
            self.stats.c2h += 1;
            self.stats.c2h_success += u64::from(success);
            match buf {
                Some(b) => self.send_pdu_buf(&pdu, b, len as usize),
                None => self.send_pdu(&pdu, &[]),
            }
            if !success {
                // Queued aside, behind this group's data (see `resp_group`).
                std::mem::swap(&mut self.tx, &mut self.tx_held);
                self.send_pdu(&Pdu::CapsuleResp(cqe), &[]);
                std::mem::swap(&mut self.tx, &mut self.tx_held);
                if self.resp_group.hold_one() {
                    self.release_held();
                }
            }
        } else {
            req.set_state(&self.states, ReqState::Completed);
            self.send_pdu(&Pdu::CapsuleResp(cqe), &[]);
        }
    }

    /// Graph completion of one of a request's I/Os.
    fn io_done(&mut self, r: &Reactor, io: Io, result: IoResult) {
        let slot = io.tag as u16;
        let Some(req) = self.reqs.get_mut(slot as usize) else {
            return;
        };
        if req.state() != ReqState::Executing || req.outstanding == 0 {
            return;
        }
        if let Err(e) = &result {
            if req.status.is_success() {
                req.status = status::io_error_status(io.op, e);
            }
        }
        if let pollux_graph::IoBuf::Owned(b) = io.buf {
            if io.op == pollux_graph::IoOp::Read && super::io_cmd::is_compare(req) {
                super::io_cmd::compare_done(req, b.as_slice());
                self.bufs.give(b);
            } else if io.op == pollux_graph::IoOp::Read {
                req.buf = Some(b);
            } else {
                self.bufs.give(b);
            }
        }
        let req = &mut self.reqs[slot as usize];
        req.outstanding -= 1;
        if req.outstanding == 0 && req.fused.started {
            // A compare-and-write half: the pair moves on together.
            match req.sqe.fuse() {
                pollux_nvme::Fuse::First => self.fused_compared(r, slot),
                _ => self.fused_written(r, slot),
            }
            return;
        }
        if req.outstanding == 0 {
            self.graph_busy = self.graph_busy.saturating_sub(1);
            req.set_state(&self.states, ReqState::Executed);
            // The response goes out on the poll group's next pass, batched
            // with the other completions of this iteration.
            self.process(r, slot);
        }
    }

    /// Grows the slot table to the queue depth Connect asked for.
    pub(super) fn set_queue_depth(&mut self, depth: usize) {
        let old = self.reqs.len();
        if depth > old {
            self.reqs.resize_with(depth, Request::free);
            self.free.extend((old as u16..depth as u16).rev());
        }
        self.bufs.max = self.bufs.max.max(depth);
    }

    /// In-capsule data accepted per command from now on (an I/O queue
    /// after its Connect).
    pub(super) fn set_in_capsule_limit(&mut self, bytes: u32) {
        self.limits.max_in_capsule = bytes;
    }

    /// Marks the connection for closing (e.g. Disconnect).
    pub(super) fn request_close(&mut self, reason: CloseReason) {
        self.close = Some(reason);
    }
}

/// Whether the last C2HData of a read may carry SUCCESS, completing the
/// command without a CapsuleResp. That CapsuleResp is where the host
/// learns SQHD, so (the NVMe/TCP transport's C2HData SUCCESS rule, the
/// Linux target's `sqhd_disabled`, SPDK's `sq_flow_control_disabled`) only
/// a queue whose host disabled SQ flow control may go without it; and
/// SPDK's `c2h_success` option can forbid it altogether.
pub(super) fn c2h_success_allowed(opts: &TransportOpts, sqflow_disabled: bool) -> bool {
    opts.c2h_success && sqflow_disabled
}

/// SO_PRIORITY for an accepted socket (`sock_priority`). Failure (a value
/// above 6 without CAP_NET_ADMIN) is logged, not fatal, as in SPDK's posix
/// sock layer.
fn set_sock_priority(sock: &TcpStream, prio: u32) {
    let v = prio as libc::c_int;
    // SAFETY: `sock` is an open socket we own for the call; the option
    // value points to a live c_int whose size we pass.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PRIORITY,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        tracing::warn!(error = %io::Error::last_os_error(), prio, "nvmf: cannot set SO_PRIORITY");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c2h_success_needs_sq_flow_control_off_and_the_option_on() {
        let mut o = TransportOpts::default();
        assert!(o.c2h_success, "SPDK's default");
        assert!(
            !c2h_success_allowed(&o, false),
            "flow control on: SQHD needed"
        );
        assert!(c2h_success_allowed(&o, true));
        o.c2h_success = false;
        assert!(!c2h_success_allowed(&o, true), "c2h_success off");
        assert!(!c2h_success_allowed(&o, false));
    }

    #[test]
    fn sock_priority_reaches_the_socket() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        set_sock_priority(&s, 3);
        let mut v: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `s` is open; `v` and `len` are live and sized for the
        // call.
        let rc = unsafe {
            libc::getsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PRIORITY,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0);
        assert_eq!(v, 3);
    }
}
