//! The host (initiator) side of NVMe/TCP, for tests and load generation.
//!
//! `QueuePair` is one connection (admin or I/O queue); `Controller` brings a
//! controller up the way Linux and SPDK hosts do: admin Connect, CAP, CC.EN,
//! wait for CSTS.RDY, Identify, Set Features (Number of Queues), then I/O
//! queues with the controller's ID. Blocking std sockets, no runtime: the
//! load generator pins its one thread to a core and polls.

mod queue;

use std::time::{Duration, Instant};

pub use queue::{Completion, HostConfig, QueuePair};

use crate::fabrics::{property, Cc, ConnectData, Csts, PropertyGet, PropertySet, PropertySize};
use crate::identify::{IdentifyCmd, IdentifyController, IdentifyNamespace};
use crate::opcode::{AdminOpcode, IoOpcode};
use crate::sqe::Sqe;
use crate::status::Status;
use crate::tcp::{EncodeError, PduError, TermReq};

/// Admin queue entries: enough for Identify, features, AERs and keep-alives.
const ADMIN_QUEUE_SIZE: u16 = 32;

/// What can go wrong on the host side.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// Socket error.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// The controller sent a malformed PDU.
    #[error("bad PDU from the controller: {0}")]
    Pdu(PduError),
    /// The controller terminated the connection.
    #[error("controller sent C2HTermReq {0:?}")]
    Terminated(TermReq),
    /// The controller violated the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A command failed.
    #[error("command failed with status {0:?}")]
    Status(Status),
    /// Every command slot is in use.
    #[error("queue full")]
    QueueFull,
    /// No answer in time.
    #[error("timed out")]
    Timeout,
    /// The connection closed.
    #[error("connection closed by the controller")]
    Closed,
    /// A field could not be encoded.
    #[error("{0}")]
    Parse(#[from] crate::ParseError),
    /// A PDU could not be encoded.
    #[error("{0}")]
    Encode(#[from] EncodeError),
}

/// A controller connected through its admin queue.
pub struct Controller {
    cfg: HostConfig,
    admin: QueuePair,
    cntlid: u16,
    /// Identify Controller data.
    pub identify: IdentifyController,
    /// The CAP property read at connect.
    pub cap: crate::fabrics::Cap,
}

impl Controller {
    /// Connects and enables the controller.
    pub fn connect(cfg: HostConfig) -> Result<Controller, HostError> {
        let (admin, cntlid) =
            QueuePair::connect(&cfg, 0, ADMIN_QUEUE_SIZE, ConnectData::CNTLID_DYNAMIC)?;
        let mut c = Controller {
            cfg,
            admin,
            cntlid,
            identify: IdentifyController::default(),
            cap: crate::fabrics::Cap(0),
        };
        let cap = crate::fabrics::Cap(c.get_property(property::CAP, PropertySize::Eight)?);
        c.cap = cap;
        let cc = Cc(0).with_en(1).with_iosqes(6).with_iocqes(4);
        c.set_property(property::CC, PropertySize::Four, u64::from(cc.0))?;
        // CAP.TO is in 500 ms units.
        let deadline = Instant::now() + Duration::from_millis(500 * u64::from(cap.to().max(1)));
        loop {
            let csts = Csts(c.get_property(property::CSTS, PropertySize::Four)? as u32);
            if csts.rdy() == 1 {
                break;
            }
            if Instant::now() > deadline {
                return Err(HostError::Timeout);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let data = c.admin_read(
            IdentifyCmd {
                cns: 1,
                ..Default::default()
            }
            .to_sqe(0),
            4096,
        )?;
        c.identify = IdentifyController::parse(&data)?;
        Ok(c)
    }

    /// The controller ID.
    pub fn cntlid(&self) -> u16 {
        self.cntlid
    }

    fn get_property(&mut self, offset: u32, size: PropertySize) -> Result<u64, HostError> {
        let sqe = PropertyGet {
            cid: 0,
            size,
            offset,
        }
        .to_sqe();
        let c = self.admin_exec(sqe, Vec::new(), false)?;
        Ok(c.cqe.result64())
    }

    fn set_property(
        &mut self,
        offset: u32,
        size: PropertySize,
        value: u64,
    ) -> Result<(), HostError> {
        let sqe = PropertySet {
            cid: 0,
            size,
            offset,
            value,
        }
        .to_sqe();
        self.admin_exec(sqe, Vec::new(), false).map(|_| ())
    }

    fn admin_exec(
        &mut self,
        sqe: Sqe,
        data: Vec<u8>,
        write: bool,
    ) -> Result<Completion, HostError> {
        let c = self.admin.execute(sqe, data, write, self.cfg.timeout)?;
        c.status().map_err(HostError::Status)?;
        Ok(c)
    }

    /// Runs an admin command that returns `len` bytes.
    pub fn admin_read(&mut self, sqe: Sqe, len: usize) -> Result<Vec<u8>, HostError> {
        Ok(self.admin_exec(sqe, vec![0; len], false)?.data)
    }

    /// Identify Namespace `nsid`.
    pub fn identify_namespace(&mut self, nsid: u32) -> Result<IdentifyNamespace, HostError> {
        let data = self.admin_read(
            IdentifyCmd {
                nsid,
                cns: 0,
                ..Default::default()
            }
            .to_sqe(0),
            4096,
        )?;
        Ok(IdentifyNamespace::parse(&data)?)
    }

    /// Asks for `n` I/O queues; returns how many were granted.
    pub fn set_num_queues(&mut self, n: u16) -> Result<u16, HostError> {
        let mut sqe = Sqe::new(AdminOpcode::SetFeatures.as_u8(), 0);
        sqe.set_cdw10(0x07);
        let v = u32::from(n.saturating_sub(1));
        sqe.set_cdw11(v | (v << 16));
        let c = self.admin_exec(sqe, Vec::new(), false)?;
        Ok((c.cqe.dw0() as u16).min((c.cqe.dw0() >> 16) as u16) + 1)
    }

    /// Sends a Keep Alive.
    pub fn keep_alive(&mut self) -> Result<(), HostError> {
        let sqe = Sqe::new(AdminOpcode::KeepAlive.as_u8(), 0);
        self.admin_exec(sqe, Vec::new(), false).map(|_| ())
    }

    /// Connects I/O queue `qid` with `queue_size` entries.
    pub fn io_queue(&self, qid: u16, queue_size: u16) -> Result<QueuePair, HostError> {
        let (mut qp, _) = QueuePair::connect(&self.cfg, qid, queue_size, self.cntlid)?;
        // IOCCSZ is in 16-byte units and includes the 64-byte SQE.
        let icd = (self.identify.ioccsz * 16).saturating_sub(64);
        qp.set_in_capsule_max(icd);
        Ok(qp)
    }

    /// Normal shutdown (CC.SHN), waiting for CSTS.SHST complete.
    pub fn shutdown(mut self) -> Result<(), HostError> {
        let cc = Cc(0).with_en(1).with_shn(crate::fabrics::Shn::Normal);
        self.set_property(property::CC, PropertySize::Four, u64::from(cc.0))?;
        let deadline = Instant::now() + self.cfg.timeout;
        loop {
            let csts = Csts(self.get_property(property::CSTS, PropertySize::Four)? as u32);
            if csts.shst() == crate::fabrics::Shst::Complete {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(HostError::Timeout);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Builds a Read or Write SQE for `nlb` blocks at `slba`.
pub fn rw_sqe(write: bool, nsid: u32, slba: u64, nlb: u32) -> Sqe {
    let op = if write {
        IoOpcode::Write
    } else {
        IoOpcode::Read
    };
    let mut s = Sqe::new(op.as_u8(), 0);
    s.set_nsid(nsid);
    s.set_cdw10(slba as u32);
    s.set_cdw11((slba >> 32) as u32);
    s.set_cdw12(nlb.saturating_sub(1) & 0xFFFF);
    s
}

/// Builds a Flush SQE.
pub fn flush_sqe(nsid: u32) -> Sqe {
    let mut s = Sqe::new(IoOpcode::Flush.as_u8(), 0);
    s.set_nsid(nsid);
    s
}
