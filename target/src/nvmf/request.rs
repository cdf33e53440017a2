//! One command on a queue pair: its slot, data and completion fields. Its
//! state machine (`state`: the states, the transition table and
//! `Request::set_state`, the only way to change state) is modelled on SPDK
//! `lib/nvmf/tcp.c`. The driver (`conn.rs`) advances a request until it
//! reaches a waiting state (NeedBuffer without budget,
//! TransferringHostToController, FusedAwaitingPartner, AwaitingRangeLock,
//! Executing) or Free.

mod state;

use pollux_graph::AlignedBuf;
use pollux_nvme::{Sqe, Status};

pub use state::{ReqState, StateCounts};

/// Data direction of a command, from its opcode (or FCTYPE).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Xfer {
    /// No data.
    None,
    /// Host to controller.
    H2C,
    /// Controller to host.
    C2H,
}

/// One queue slot. The slot index is the R2T transfer tag and the graph
/// I/O tag, so completion lookup is an array index.
pub struct Request {
    /// State: changed only by `set_state`.
    state: ReqState,
    /// The command.
    pub sqe: Sqe,
    /// Data direction.
    pub xfer: Xfer,
    /// Bytes of data the command moves (the SGL length).
    pub xfer_len: u32,
    /// Data buffer (in-capsule data, H2C data, or C2H data to send).
    pub buf: Option<AlignedBuf>,
    /// Bytes of data received so far (in-capsule or H2CData).
    pub received: u32,
    /// Data arrived in the capsule.
    pub in_capsule: bool,
    /// Completion status.
    pub status: Status,
    /// Completion dword 0.
    pub dw0: u32,
    /// Completion dword 1.
    pub dw1: u32,
    /// Graph I/Os still in flight (several for Dataset Management).
    pub outstanding: u32,
    /// C2H bytes to send (may be less than the buffer, e.g. a log page
    /// shorter than asked for is zero padded inside the buffer).
    pub c2h_len: u32,
    /// Bytes charged to the poll group's buffer budget (returned when the
    /// request completes).
    pub charged: u32,
    /// Half of a fused pair: its partner and how the pair stands.
    pub fused: super::fused::FusedLink,
}

impl Request {
    /// An unused slot.
    pub fn free() -> Self {
        Request {
            state: ReqState::Free,
            sqe: Sqe::default(),
            xfer: Xfer::None,
            xfer_len: 0,
            buf: None,
            received: 0,
            in_capsule: false,
            status: Status::SUCCESS,
            dw0: 0,
            dw1: 0,
            outstanding: 0,
            c2h_len: 0,
            charged: 0,
            fused: Default::default(),
        }
    }

    /// Starts the free slot for a newly received command.
    pub fn start(&mut self, counts: &StateCounts, sqe: Sqe, in_capsule: Option<AlignedBuf>) {
        *self = Request::free();
        self.in_capsule = in_capsule.is_some();
        self.buf = in_capsule;
        self.sqe = sqe;
        self.set_state(counts, ReqState::New);
    }

    /// Records that the command completes with `status` (the driver moves
    /// it on; a failed command still passes ReadyToComplete).
    pub fn fail(&mut self, status: Status) {
        self.status = status;
    }

    /// The host's command data (in-capsule or H2C), empty without any.
    pub fn data(&self) -> &[u8] {
        self.buf.as_ref().map_or(&[][..], |b| b.as_slice())
    }

    /// Builds a command's C2H data from a byte slice (admin data): copies
    /// what fits into the request buffer, whose rest stays zero.
    pub fn put_c2h(&mut self, data: &[u8]) {
        if let Some(buf) = self.buf.as_mut() {
            let n = data.len().min(buf.len());
            buf.as_mut_slice()[..n].copy_from_slice(&data[..n]);
        }
    }

    /// Command identifier.
    pub fn cid(&self) -> u16 {
        self.sqe.cid()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_resets_previous_command() {
        let counts = StateCounts::default();
        let mut r = Request::free();
        r.fail(Status::INVALID_FIELD);
        r.dw0 = 7;
        r.start(&counts, Sqe::new(0x02, 5), None);
        assert_eq!(r.state(), ReqState::New);
        assert_eq!(r.cid(), 5);
        assert_eq!(r.dw0, 0);
        assert!(r.status.is_success());
    }
}
