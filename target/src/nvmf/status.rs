//! The one place that maps internal errors to what goes on the wire: graph
//! `IoError`s to NVMe completion statuses, and PDU errors to C2HTermReqs.

use pollux_graph::{IoError, IoOp};
use pollux_nvme::tcp::{PduError, TermReq};
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

/// The C2HTermReq for a fatal receive error, or `None` when the error is
/// not fatal (a data digest mismatch completes the command instead).
pub fn term_req_for(e: &PduError) -> Option<TermReq> {
    e.term_req()
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
        let t = term_req_for(&PduError::HeaderDigest {
            expected: 1,
            got: 2,
        })
        .unwrap();
        assert_eq!(t.fes, Fes::HEADER_DIGEST_ERROR);
        let dd = PduError::DataDigest {
            expected: 1,
            got: 2,
        };
        assert!(term_req_for(&dd).is_none());
        assert!(data_digest_status(&dd).same_code(&Status::TRANSIENT_TRANSPORT_ERROR));
    }
}
