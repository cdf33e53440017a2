//! NVM I/O commands on I/O queues: Read, Write, Flush, Write Zeroes and
//! Dataset Management (deallocate), submitted to the namespace's graph
//! root. Range and length checks happen here so the graph only sees
//! well-formed requests; what it still reports is mapped in `status.rs`.

use pollux_graph::{Io, IoBuf, IoOp};
use pollux_nvme::fabrics::{FabricsCmd, FABRICS_OPCODE};
use pollux_nvme::identify::oncs;
use pollux_nvme::io::{DsmCmd, DsmRange, LbaRangeCmd, DSM_ATTR_DEALLOCATE};
use pollux_nvme::opcode::IoOpcode;
use pollux_nvme::Status;
use pollux_poller::Reactor;

use super::conn::{CloseReason, Conn};

impl Conn {
    /// Executes an I/O queue command. Returns true if it now waits for the
    /// graph.
    pub(super) fn exec_io(&mut self, r: &Reactor, slot: u16) -> bool {
        let sqe = self.sqe(slot);
        if sqe.opcode() == FABRICS_OPCODE {
            match FabricsCmd::parse(&sqe) {
                Ok(FabricsCmd::Disconnect { .. }) => {
                    // Answer first; the queue closes once the response is
                    // on its way.
                    self.request_close(CloseReason::PeerClosed);
                }
                Ok(FabricsCmd::Connect(_)) => {
                    self.fail(slot, Status::COMMAND_SEQUENCE_ERROR.with_dnr())
                }
                _ => self.fail(slot, Status::INVALID_OPCODE.with_dnr()),
            }
            return false;
        }
        let Some(op) = IoOpcode::from_u8(sqe.opcode()) else {
            self.fail(slot, Status::INVALID_OPCODE.with_dnr());
            return false;
        };
        // Commands `masked_oncs` hid from Identify are not offered at all.
        let oncs_bit = match op {
            IoOpcode::DatasetManagement => oncs::DSM,
            IoOpcode::WriteZeroes => oncs::WRITE_ZEROES,
            _ => 0,
        };
        if self.opts.masked_oncs & oncs_bit != 0 {
            self.fail(slot, Status::INVALID_OPCODE.with_dnr());
            return false;
        }
        let i = slot as usize;
        let Some(subsys) = self.phase.ctrl().and_then(|c| c.subsystem()) else {
            self.fail(slot, Status::INVALID_OPCODE.with_dnr());
            return false;
        };
        // Lock-free unless the namespace table changed since the last
        // command of this queue pair.
        let Some(root) = self.ns_cache.table(subsys).get(sqe.nsid()).map(|n| n.root) else {
            self.reqs[i].fail(Status::INVALID_NAMESPACE_OR_FORMAT.with_dnr());
            return false;
        };
        let snap = self.shared.graph.snapshot(r);
        let Some(geo) = snap.root_geometry(root) else {
            self.reqs[i].fail(Status::INVALID_NAMESPACE_OR_FORMAT.with_dnr());
            return false;
        };
        let bs = u64::from(geo.block_size);
        let shift = geo.block_size.trailing_zeros();
        let req = &mut self.reqs[i];
        let io = match op {
            IoOpcode::Read | IoOpcode::Write | IoOpcode::WriteZeroes => {
                let cmd = LbaRangeCmd::parse(&sqe);
                if !cmd.in_range(geo.block_count) {
                    req.fail(Status::LBA_OUT_OF_RANGE.with_dnr());
                    return false;
                }
                let len = cmd.byte_len(shift);
                let offset = cmd.slba * bs;
                if op == IoOpcode::WriteZeroes {
                    Io::new(
                        IoOp::WriteZeroes,
                        offset,
                        len,
                        IoBuf::None,
                        self.sink.clone(),
                        u64::from(slot),
                    )
                } else {
                    if len > u64::from(self.opts.max_io_size) {
                        req.fail(Status::INVALID_FIELD.with_dnr());
                        return false;
                    }
                    if len != u64::from(req.xfer_len) {
                        req.fail(Status::DATA_SGL_LENGTH_INVALID.with_dnr());
                        return false;
                    }
                    let Some(buf) = req.buf.take() else {
                        req.fail(Status::DATA_SGL_LENGTH_INVALID.with_dnr());
                        return false;
                    };
                    let gop = if op == IoOpcode::Read {
                        IoOp::Read
                    } else {
                        IoOp::Write
                    };
                    Io::new(
                        gop,
                        offset,
                        len,
                        IoBuf::Owned(buf),
                        self.sink.clone(),
                        u64::from(slot),
                    )
                }
            }
            IoOpcode::Flush => Io::new(
                IoOp::Flush,
                0,
                0,
                IoBuf::None,
                self.sink.clone(),
                u64::from(slot),
            ),
            IoOpcode::DatasetManagement => {
                let cmd = DsmCmd::parse(&sqe);
                if cmd.attributes & DSM_ATTR_DEALLOCATE == 0 {
                    // Only hints: nothing to do.
                    return false;
                }
                let data = req.buf.as_ref().map_or(&[][..], |b| b.as_slice());
                if data.len() < cmd.data_len() {
                    req.fail(Status::DATA_SGL_LENGTH_INVALID.with_dnr());
                    return false;
                }
                let ranges = &data[..cmd.data_len()];
                let out_of_range = DsmRange::iter(ranges).any(|rg| {
                    rg.slba
                        .checked_add(u64::from(rg.nlb))
                        .is_none_or(|end| end > geo.block_count)
                });
                if out_of_range {
                    req.fail(Status::LBA_OUT_OF_RANGE.with_dnr());
                    return false;
                }
                // Copy the ranges out: the buffer is released before the
                // discards complete. At most 256 ranges (NR is 8 bits).
                let mut list = [(0u64, 0u64); 256];
                let mut n = 0;
                for rg in DsmRange::iter(ranges).filter(|rg| rg.nlb > 0) {
                    list[n] = (rg.slba * bs, u64::from(rg.nlb) * bs);
                    n += 1;
                }
                req.buf = None;
                if n == 0 {
                    return false;
                }
                req.outstanding = n as u32;
                for &(off, len) in &list[..n] {
                    let io = Io::new(
                        IoOp::Discard,
                        off,
                        len,
                        IoBuf::None,
                        self.sink.clone(),
                        u64::from(slot),
                    );
                    snap.submit(r, root, io);
                }
                return true;
            }
            _ => {
                req.fail(Status::INVALID_OPCODE.with_dnr());
                return false;
            }
        };
        req.outstanding = 1;
        snap.submit(r, root, io);
        true
    }
}
