//! The one place that maps internal errors to what goes on the wire: graph
//! `IoError`s to NVMe completion statuses, and PDU errors to C2HTermReqs.

use pollux_graph::{IoError, IoOp};
use pollux_nvme::tcp::{fei, Fes, PduError, TermReq};
use pollux_nvme::Status;

/// Completion status for a failed graph I/O.
pub fn io_error_status(op: IoOp, e: &IoError) -> Status {
    match e {
        IoError::OutOfRange { .. } => Status::LBA_OUT_OF_RANGE.with_dnr(),
        // The transport validated SLBA/NLB against the block size, so a
        // misaligned request means the host's SGL disagreed with NLB.
        IoError::Misaligned { .. } => Status::INVALID_FIELD.with_dnr(),
        IoError::BufferMismatch { .. } => Status::DATA_SGL_LENGTH_INVALID.with_dnr(),
        IoError::Unsupported(_) => Status::INVALID_OPCODE.with_dnr(),
        // The namespace's root left the graph (hot removal, shutdown).
        IoError::NoDevice => Status::INVALID_NAMESPACE_OR_FORMAT.with_dnr(),
        // Out of resources is transient: let the host retry (no DNR).
        IoError::Busy => Status::COMMAND_INTERRUPTED,
        // Injected as asked (SPDK's nvme_failure completes with the status
        // as given, no DNR).
        IoError::Nvme { sct, sc } => Status::new(pollux_nvme::Sct(*sct & 0x7), *sc),
        IoError::Backend(errno) => match (*errno, op) {
            (libc::ENOSPC, _) => Status::CAPACITY_EXCEEDED.with_dnr(),
            (libc::EROFS | libc::EPERM | libc::EACCES, IoOp::Write | IoOp::WriteZeroes) => {
                Status::WRITE_TO_READ_ONLY.with_dnr()
            }
            (libc::EOPNOTSUPP | libc::EINVAL, _) => Status::INVALID_FIELD.with_dnr(),
            (_, IoOp::Read) => Status::UNRECOVERED_READ_ERROR,
            (_, IoOp::Write | IoOp::WriteZeroes | IoOp::Flush) => Status::WRITE_FAULT,
            (_, IoOp::Discard) => Status::INTERNAL_ERROR,
        },
    }
}

/// A protocol violation in a PDU that decoded cleanly: the host broke a
/// rule that only the queue pair's state can check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PduFault {
    /// A CapsuleCmd while every request slot is in use: the host went
    /// beyond the queue depth its Connect asked for.
    QueueOverflow,
    /// H2CData whose TTAG names no request slot.
    UnknownTransferTag,
    /// H2CData for a command that has no R2T outstanding.
    NoR2tOutstanding,
    /// H2CData whose CCCID is not the command its TTAG's R2T was for.
    CccidMismatch,
    /// H2CData outside what the R2T asked for (or empty).
    DataOutOfRange,
    /// A PDU type a controller never receives (the decoder lets through
    /// only host PDUs, so this is a guard, not an expected case).
    UnexpectedType,
}

/// Every fatal receive error a queue pair answers with a C2HTermReq.
#[derive(Clone, Copy, Debug)]
pub enum FatalPdu<'e> {
    /// The decoder refused the PDU.
    Decode(&'e PduError),
    /// The PDU is well-formed but breaks the queue pair's state.
    Fault(PduFault),
}

/// The C2HTermReq fields (FES and FEI) for a fatal receive error, the one
/// place that decides them: decoder errors as the decoder maps them,
/// state faults by the field at fault, named by the decoder's
/// [`fei`] offsets.
pub fn c2h_term_req(e: FatalPdu<'_>) -> TermReq {
    let (fes, fei) = match e {
        FatalPdu::Decode(e) => {
            // Only fatal decoder errors reach here (a truncated header is
            // read further and a data digest error fails the command); a
            // TermReq is due anyway, so the PDU's type is what we blame.
            return e.term_req().unwrap_or(TermReq {
                fes: Fes::INVALID_HEADER_FIELD,
                fei: fei::TYPE,
            });
        }
        // Sequence errors carry no FEI (it is reserved for FES 02h).
        FatalPdu::Fault(PduFault::QueueOverflow) => (Fes::PDU_SEQUENCE_ERROR, 0),
        FatalPdu::Fault(PduFault::NoR2tOutstanding) => (Fes::PDU_SEQUENCE_ERROR, 0),
        FatalPdu::Fault(PduFault::UnknownTransferTag) => (Fes::INVALID_HEADER_FIELD, fei::TTAG),
        FatalPdu::Fault(PduFault::CccidMismatch) => (Fes::INVALID_HEADER_FIELD, fei::CCCID),
        // Data Transfer Out of Range has no FEI either.
        FatalPdu::Fault(PduFault::DataOutOfRange) => (Fes::DATA_OUT_OF_RANGE, 0),
        FatalPdu::Fault(PduFault::UnexpectedType) => (Fes::INVALID_HEADER_FIELD, fei::TYPE),
    };
    TermReq { fes, fei }
}

/// Completion status for a command whose data failed its digest: the
/// codec's mapping (Transient Transport Error, retryable).
pub fn data_digest_status(e: &PduError) -> Status {
    e.status().unwrap_or(Status::TRANSIENT_TRANSPORT_ERROR)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pollux_nvme::tcp::Fes;

    #[test]
    fn io_errors_map_to_nvme_statuses() {
        let oor = IoError::OutOfRange {
            offset: 0,
            len: 1,
            size: 0,
        };
        assert!(io_error_status(IoOp::Read, &oor).same_code(&Status::LBA_OUT_OF_RANGE));
        // Error injection's nvme_failure: the status as asked, no DNR.
        let s = io_error_status(IoOp::Write, &IoError::Nvme { sct: 1, sc: 0x80 });
        assert!(
            s.same_code(&Status::new(pollux_nvme::Sct(1), 0x80)),
            "{s:?}"
        );
        assert_eq!(s.to_field(false) & (1 << 15), 0, "no DNR");
        assert!(io_error_status(IoOp::Read, &IoError::Backend(libc::EIO))
            .same_code(&Status::UNRECOVERED_READ_ERROR));
        assert!(io_error_status(IoOp::Write, &IoError::Backend(libc::EIO))
            .same_code(&Status::WRITE_FAULT));
        assert!(
            io_error_status(IoOp::Write, &IoError::Busy).same_code(&Status::COMMAND_INTERRUPTED)
        );
    }

    #[test]
    fn pdu_errors_map_to_term_reqs() {
        let t = c2h_term_req(FatalPdu::Decode(&PduError::HeaderDigest {
            expected: 1,
            got: 2,
        }));
        assert_eq!(t.fes, Fes::HEADER_DIGEST_ERROR);
        let t = c2h_term_req(FatalPdu::Decode(&PduError::InvalidPdo(3)));
        assert_eq!((t.fes, t.fei), (Fes::INVALID_HEADER_FIELD, fei::PDO));
        let dd = PduError::DataDigest {
            expected: 1,
            got: 2,
        };
        assert!(data_digest_status(&dd).same_code(&Status::TRANSIENT_TRANSPORT_ERROR));
    }

    /// Each state fault names the H2CData field at fault by its header
    /// offset (TTAG at byte 10, CCCID at 8); sequence and range errors
    /// carry none.
    #[test]
    fn state_faults_map_to_term_reqs_by_field() {
        let cases = [
            (PduFault::QueueOverflow, Fes::PDU_SEQUENCE_ERROR, 0),
            (PduFault::NoR2tOutstanding, Fes::PDU_SEQUENCE_ERROR, 0),
            (PduFault::UnknownTransferTag, Fes::INVALID_HEADER_FIELD, 10),
            (PduFault::CccidMismatch, Fes::INVALID_HEADER_FIELD, 8),
            (PduFault::DataOutOfRange, Fes::DATA_OUT_OF_RANGE, 0),
            (PduFault::UnexpectedType, Fes::INVALID_HEADER_FIELD, 0),
        ];
        for (fault, fes, fei) in cases {
            let t = c2h_term_req(FatalPdu::Fault(fault));
            assert_eq!((t.fes, t.fei), (fes, fei), "{fault:?}");
        }
    }
}
