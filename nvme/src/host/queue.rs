//! One NVMe/TCP queue pair, host side: a TCP connection carrying one
//! submission/completion queue.
//!
//! Commands are pipelined: `submit` queues the capsule (with in-capsule data
//! for small writes) and `poll` moves bytes both ways, answers R2Ts with
//! H2CData, gathers C2HData into the command's buffer and reports
//! completions. The socket is non-blocking; `wait` blocks by polling.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::cqe::Cqe;
use crate::fabrics::{ConnectCmd, ConnectData, Nqn};
use crate::sqe::{Sgl, Sqe};
use crate::status::Status;
use crate::tcp::{
    crc32c, decode_common_header, decode_header, DataHdr, IcReq, Limits, Pdu, PduError, PduFrame,
    Role, TxParams, COMMON_HEADER_LEN, DGST_DATA, DGST_HEADER, PFV_1_0,
};

use super::HostError;

/// Largest C2HData PDU this host accepts: generous, since the controller
/// picks the PDU size (SPDK and Linux send a whole transfer in one PDU) and
/// MDTS bounds it anyway.
const MAX_C2H_DATA: u32 = 4 << 20;

/// Connection parameters shared by every queue of a controller.
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// Target address.
    pub addr: SocketAddr,
    /// Subsystem NQN.
    pub subnqn: String,
    /// Host NQN; empty sends an all-zero HOSTNQN field, as SPDK's
    /// initiator does when its transport ID names no `hostnqn`.
    pub hostnqn: String,
    /// Host identifier.
    pub hostid: [u8; 16],
    /// Ask for header digests.
    pub hdgst: bool,
    /// Ask for data digests.
    pub ddgst: bool,
    /// Keep-alive timeout for the admin queue (0 = none).
    pub kato: Duration,
    /// How long to wait for any single blocking step.
    pub timeout: Duration,
    /// Disable SQ flow control on every queue (Connect CATTR bit 2, nvme-cli
    /// `--disable-sqflow`). Only then may the controller complete a read
    /// by a C2HData PDU with SUCCESS instead of a CapsuleResp.
    pub disable_sqflow: bool,
}

impl HostConfig {
    /// Defaults for `addr` and `subnqn`: a fixed host NQN, no digests.
    pub fn new(addr: SocketAddr, subnqn: &str) -> Self {
        HostConfig {
            addr,
            subnqn: subnqn.to_owned(),
            hostnqn: "nqn.2024-11.dev.pollux:host".to_owned(),
            hostid: *b"pollux-host-id-0",
            hdgst: false,
            ddgst: false,
            kato: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
            disable_sqflow: false,
        }
    }
}

/// A finished command.
#[derive(Debug)]
pub struct Completion {
    /// The completion queue entry.
    pub cqe: Cqe,
    /// The command's data buffer (read data, or the written data back).
    pub data: Vec<u8>,
}

impl Completion {
    /// The status, as a Result.
    pub fn status(&self) -> Result<(), Status> {
        let s = self.cqe.status();
        if s.is_success() {
            Ok(())
        } else {
            Err(s)
        }
    }
}

/// A command in flight.
struct Pending {
    data: Vec<u8>,
    /// Write data not sent in-capsule: sent on R2T.
    awaiting_r2t: bool,
    /// Read: bytes of C2HData received.
    received: u64,
}

/// One queue pair.
pub struct QueuePair {
    stream: TcpStream,
    qid: u16,
    tx: TxParams,
    rx_limits: Limits,
    maxh2cdata: u32,
    /// Largest write sent as in-capsule data; 0 disables in-capsule data.
    in_capsule_max: u32,
    pending: Vec<Option<Pending>>,
    free_cids: Vec<u16>,
    outstanding: usize,
    txbuf: Vec<u8>,
    txpos: usize,
    rxbuf: Vec<u8>,
    rxlen: usize,
    completed: Vec<Completion>,
    /// SQ flow control was disabled at Connect.
    sqflow_disabled: bool,
    /// Commands completed by a C2HData SUCCESS flag (no CapsuleResp).
    c2h_success: u64,
}

impl QueuePair {
    /// Connects queue `qid` of `queue_size` entries: TCP, ICReq/ICResp, then
    /// Fabrics Connect. For the admin queue (`qid` 0) pass
    /// `ConnectData::CNTLID_DYNAMIC` and get the new controller's ID back;
    /// for I/O queues pass that ID.
    pub fn connect(
        cfg: &HostConfig,
        qid: u16,
        queue_size: u16,
        cntlid: u16,
    ) -> Result<(QueuePair, u16), HostError> {
        let stream = TcpStream::connect_timeout(&cfg.addr, cfg.timeout)?;
        stream.set_nodelay(true)?;
        let mut qp = QueuePair {
            stream,
            qid,
            tx: TxParams::default(),
            rx_limits: Limits::new(Role::Host),
            maxh2cdata: 0,
            in_capsule_max: 0,
            pending: (0..queue_size.max(1)).map(|_| None).collect(),
            // Pop from the end: lowest CIDs first.
            free_cids: (0..queue_size.max(1)).rev().collect(),
            outstanding: 0,
            txbuf: Vec::with_capacity(64 << 10),
            txpos: 0,
            rxbuf: vec![0; (MAX_C2H_DATA as usize) + 4096],
            rxlen: 0,
            completed: Vec::new(),
            sqflow_disabled: cfg.disable_sqflow,
            c2h_success: 0,
        };
        qp.initialize(cfg)?;
        qp.stream.set_nonblocking(true)?;
        let connect = ConnectCmd {
            cid: 0,
            recfmt: 0,
            qid,
            sqsize: queue_size.saturating_sub(1),
            cattr: if cfg.disable_sqflow {
                ConnectCmd::CATTR_SQ_FLOW_DISABLE
            } else {
                0
            },
            kato: if qid == 0 {
                cfg.kato.as_millis().min(u32::MAX as u128) as u32
            } else {
                0
            },
            dptr: Sgl::in_capsule(0, ConnectData::SIZE as u32),
        };
        let data = ConnectData {
            hostid: cfg.hostid,
            cntlid,
            subnqn: Nqn::new(&cfg.subnqn)?,
            hostnqn: Nqn::field(&cfg.hostnqn)?,
        };
        // Connect data always travels in-capsule (Fabrics requires at least
        // 1024 bytes of in-capsule space for it on every queue).
        let saved = qp.in_capsule_max;
        qp.in_capsule_max = ConnectData::SIZE as u32;
        let c = qp.execute(
            connect.to_sqe(),
            data.to_bytes().to_vec(),
            true,
            cfg.timeout,
        )?;
        qp.in_capsule_max = saved;
        c.status().map_err(HostError::Status)?;
        Ok((qp, c.cqe.dw0() as u16))
    }

    /// Sets the largest write sent in-capsule (from the controller's IOCCSZ).
    pub fn set_in_capsule_max(&mut self, bytes: u32) {
        self.in_capsule_max = bytes;
    }

    /// Queue identifier.
    pub fn qid(&self) -> u16 {
        self.qid
    }

    /// Commands submitted and not yet completed.
    pub fn outstanding(&self) -> usize {
        self.outstanding
    }

    /// Commands the controller completed by C2HData SUCCESS alone.
    pub fn c2h_success_count(&self) -> u64 {
        self.c2h_success
    }

    /// Free command slots.
    pub fn free_slots(&self) -> usize {
        self.free_cids.len()
    }

    fn initialize(&mut self, cfg: &HostConfig) -> Result<(), HostError> {
        let dgst = if cfg.hdgst { DGST_HEADER } else { 0 } | if cfg.ddgst { DGST_DATA } else { 0 };
        let req = Pdu::IcReq(IcReq {
            pfv: PFV_1_0,
            hpda: 0,
            dgst,
            maxr2t: 0,
        });
        let mut hdr = [0u8; 128];
        let f = req.encode(&TxParams::default(), 0, &mut hdr)?;
        self.stream.set_read_timeout(Some(cfg.timeout))?;
        self.stream.write_all(&hdr[..f.header_len()])?;
        let mut ch = [0u8; COMMON_HEADER_LEN];
        self.stream.read_exact(&mut ch)?;
        let frame = decode_common_header(&ch, &self.rx_limits)?;
        let mut full = vec![0u8; frame.header_len()];
        full[..COMMON_HEADER_LEN].copy_from_slice(&ch);
        self.stream.read_exact(&mut full[COMMON_HEADER_LEN..])?;
        let (_, pdu) = decode_header(&full, &self.rx_limits)?;
        let resp = match pdu {
            Pdu::IcResp(r) => r,
            Pdu::C2HTermReq(t) => return Err(HostError::Terminated(t)),
            other => {
                return Err(HostError::Protocol(format!(
                    "expected ICResp, got {other:?}"
                )))
            }
        };
        let hdgst = resp.dgst & DGST_HEADER != 0;
        let ddgst = resp.dgst & DGST_DATA != 0;
        self.tx = TxParams {
            hdgst,
            ddgst,
            pda: resp.cpda,
        };
        self.maxh2cdata = resp.maxh2cdata;
        self.rx_limits = Limits::established(Role::Host, hdgst, ddgst, 0, 0, MAX_C2H_DATA);
        self.stream.set_read_timeout(None)?;
        Ok(())
    }

    /// Queues a command. `data` is the write payload (for writes) or a
    /// buffer of the transfer length (for reads); `write` tells which.
    /// Returns the CID, or `None` if every slot is busy.
    pub fn submit(&mut self, mut sqe: Sqe, data: Vec<u8>, write: bool) -> Option<u16> {
        let cid = self.free_cids.pop()?;
        sqe.set_cid(cid);
        let len = data.len() as u32;
        let in_capsule = write && len > 0 && len <= self.in_capsule_max;
        if len > 0 {
            let sgl = if in_capsule {
                Sgl::in_capsule(0, len)
            } else {
                Sgl::transport(len)
            };
            sqe.set_sgl(&sgl);
        }
        let payload: &[u8] = if in_capsule { &data } else { &[] };
        self.push_pdu(&Pdu::CapsuleCmd(sqe), payload);
        self.pending[cid as usize] = Some(Pending {
            awaiting_r2t: write && len > 0 && !in_capsule,
            received: 0,
            data,
        });
        self.outstanding += 1;
        Some(cid)
    }

    fn push_pdu(&mut self, pdu: &Pdu, data: &[u8]) {
        let mut hdr = [0u8; 160];
        let f = pdu
            .encode(&self.tx, data.len() as u32, &mut hdr)
            .expect("host PDUs are well formed");
        let head = if data.is_empty() {
            f.header_len()
        } else {
            f.data_offset as usize
        };
        self.txbuf.extend_from_slice(&hdr[..head]);
        self.txbuf.extend_from_slice(data);
        if f.ddgst {
            self.txbuf.extend_from_slice(&crc32c(data).to_le_bytes());
        }
    }

    /// Moves bytes both ways and processes whatever arrived. Returns the
    /// commands completed by this call (also kept for `take_completed`).
    pub fn poll(&mut self) -> Result<usize, HostError> {
        self.flush()?;
        let before = self.completed.len();
        loop {
            match self.stream.read(&mut self.rxbuf[self.rxlen..]) {
                Ok(0) => return Err(HostError::Closed),
                Ok(n) => {
                    self.rxlen += n;
                    self.process_rx()?;
                    if self.rxlen < self.rxbuf.len() / 2 {
                        // A short read: the socket is likely drained.
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.flush()?;
        Ok(self.completed.len() - before)
    }

    /// Completions gathered so far.
    pub fn take_completed(&mut self) -> std::vec::Drain<'_, Completion> {
        self.completed.drain(..)
    }

    fn flush(&mut self) -> Result<(), HostError> {
        while self.txpos < self.txbuf.len() {
            match self.stream.write(&self.txbuf[self.txpos..]) {
                Ok(0) => return Err(HostError::Closed),
                Ok(n) => self.txpos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        if self.txpos == self.txbuf.len() {
            self.txbuf.clear();
            self.txpos = 0;
        }
        Ok(())
    }

    /// Parses every whole PDU in the receive buffer.
    fn process_rx(&mut self) -> Result<(), HostError> {
        let mut off = 0;
        loop {
            let avail = &self.rxbuf[off..self.rxlen];
            if avail.len() < COMMON_HEADER_LEN {
                break;
            }
            let frame = decode_common_header(&avail[..COMMON_HEADER_LEN], &self.rx_limits)?;
            if avail.len() < frame.plen as usize {
                break;
            }
            let pdu_bytes = off..off + frame.plen as usize;
            off += frame.plen as usize;
            let (frame, pdu) = decode_header(&self.rxbuf[pdu_bytes.start..], &self.rx_limits)?;
            self.handle_pdu(frame, pdu, pdu_bytes.start)?;
        }
        self.rxbuf.copy_within(off..self.rxlen, 0);
        self.rxlen -= off;
        Ok(())
    }

    fn handle_pdu(&mut self, frame: PduFrame, pdu: Pdu, start: usize) -> Result<(), HostError> {
        match pdu {
            Pdu::CapsuleResp(cqe) => self.complete(cqe),
            Pdu::C2HData { hdr, success, .. } => {
                let d0 = start + frame.data_offset as usize;
                let data = &self.rxbuf[d0..d0 + frame.data_len as usize];
                if frame.ddgst {
                    let mut wire = [0u8; 4];
                    wire.copy_from_slice(&self.rxbuf[d0 + data.len()..d0 + data.len() + 4]);
                    frame.check_data_digest(crc32c(data), wire)?;
                }
                let cid = hdr.cccid as usize;
                let Some(Some(p)) = self.pending.get_mut(cid) else {
                    return Err(HostError::Protocol(format!(
                        "C2HData for unknown command {cid}"
                    )));
                };
                let (o, l) = (hdr.datao as usize, hdr.datal as usize);
                if l != data.len() || o.checked_add(l).is_none_or(|end| end > p.data.len()) {
                    return Err(HostError::Protocol(format!(
                        "C2HData {o}+{l} outside a {}-byte buffer",
                        p.data.len()
                    )));
                }
                p.data[o..o + l].copy_from_slice(data);
                p.received += l as u64;
                if success {
                    // Without SQHD the host cannot track the SQ head, so the
                    // spec allows SUCCESS only on queues that disabled SQ
                    // flow control: anything else is a controller bug.
                    if !self.sqflow_disabled {
                        return Err(HostError::Protocol(format!(
                            "C2HData SUCCESS for command {cid} while SQ flow control is enabled"
                        )));
                    }
                    self.c2h_success += 1;
                    let mut cqe = Cqe::new(hdr.cccid, Status::SUCCESS);
                    cqe.set_sqid(self.qid);
                    self.complete(cqe)?;
                }
                Ok(())
            }
            Pdu::R2T(r2t) => {
                let maxh2c = self.maxh2cdata.max(4096) as usize;
                let p = self.pending_mut(r2t.cccid)?;
                let (o, l) = (r2t.r2to as usize, r2t.r2tl as usize);
                if !p.awaiting_r2t || o.checked_add(l).is_none_or(|end| end > p.data.len()) {
                    return Err(HostError::Protocol(format!("unexpected R2T {r2t:?}")));
                }
                // Split into MAXH2CDATA-sized H2CData PDUs.
                let data = std::mem::take(&mut p.data);
                let mut pos = o;
                while pos < o + l {
                    let n = (o + l - pos).min(maxh2c);
                    let hdr = DataHdr {
                        cccid: r2t.cccid,
                        ttag: r2t.ttag,
                        datao: pos as u32,
                        datal: n as u32,
                    };
                    let last = pos + n == o + l;
                    self.push_pdu(&Pdu::H2CData { hdr, last }, &data[pos..pos + n]);
                    pos += n;
                }
                self.pending_mut(r2t.cccid)?.data = data;
                Ok(())
            }
            Pdu::C2HTermReq(t) => Err(HostError::Terminated(t)),
            other => Err(HostError::Protocol(format!(
                "unexpected {:?} from the controller",
                other.pdu_type()
            ))),
        }
    }

    fn pending_mut(&mut self, cid: u16) -> Result<&mut Pending, HostError> {
        self.pending
            .get_mut(cid as usize)
            .and_then(Option::as_mut)
            .ok_or_else(|| HostError::Protocol(format!("PDU for unknown command {cid}")))
    }

    fn complete(&mut self, cqe: Cqe) -> Result<(), HostError> {
        let cid = cqe.cid();
        let p = self
            .pending
            .get_mut(cid as usize)
            .and_then(Option::take)
            .ok_or_else(|| HostError::Protocol(format!("completion for unknown command {cid}")))?;
        self.free_cids.push(cid);
        self.outstanding -= 1;
        self.completed.push(Completion { cqe, data: p.data });
        Ok(())
    }

    /// Submits one command and waits for its completion (admin use).
    pub fn execute(
        &mut self,
        sqe: Sqe,
        data: Vec<u8>,
        write: bool,
        timeout: Duration,
    ) -> Result<Completion, HostError> {
        let cid = self.submit(sqe, data, write).ok_or(HostError::QueueFull)?;
        let deadline = Instant::now() + timeout;
        loop {
            self.poll()?;
            if let Some(i) = self.completed.iter().position(|c| c.cqe.cid() == cid) {
                return Ok(self.completed.swap_remove(i));
            }
            if Instant::now() > deadline {
                return Err(HostError::Timeout);
            }
            std::thread::sleep(Duration::from_micros(50));
        }
    }

    /// Sends raw bytes as they are (tests of the target's bad-input handling).
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), HostError> {
        self.txbuf.extend_from_slice(bytes);
        self.flush()
    }

    /// Error if the controller rejected the connection with a PduError.
    pub fn limits(&self) -> &Limits {
        &self.rx_limits
    }
}

impl From<PduError> for HostError {
    fn from(e: PduError) -> Self {
        HostError::Pdu(e)
    }
}
