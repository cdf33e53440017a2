//! NVM I/O commands on a request and its controller: Read, Write, Flush,
//! Write Zeroes, Dataset Management (deallocate) and Compare, submitted to the
//! namespace's graph root. Range and length checks happen here so the
//! graph only sees well-formed requests; what it still reports is mapped
//! in `status.rs`. Nothing here knows the transport: the I/O completes to
//! the sink and tag the transport passes in.

use std::rc::Rc;

use pollux_graph::{AlignedBuf, Graph, Io, IoBuf, IoOp, IoSink, RootId};
use pollux_nvme::ana::AnaState;
use pollux_nvme::fabrics::{FabricsCmd, FABRICS_OPCODE};
use pollux_nvme::identify::oncs;
use pollux_nvme::io::{DsmCmd, DsmRange, LbaRangeCmd, DSM_ATTR_DEALLOCATE};
use pollux_nvme::opcode::IoOpcode;
use pollux_nvme::reservation::{ResvCdw10, REPORT_EDS};
use pollux_nvme::sqe::Fuse;
use pollux_nvme::Status;
use pollux_poller::Reactor;

use super::command::Outcome;
use super::controller::Controller;
use super::request::Request;
use super::reservation::Requester;
use super::subsystem::{Namespace, NsCache, Subsystem};

/// Ranges a Dataset Management command may carry (NR is 8 bits, 0-based).
const DSM_RANGES_MAX: usize = 256;

/// What I/O commands need beyond the request and its controller.
pub struct IoCtx<'a> {
    /// The reactor the command runs (and completes) on.
    pub reactor: &'a Reactor,
    /// The graph the namespaces are roots of.
    pub graph: &'a Graph,
    /// The queue's view of its subsystem's namespace table.
    pub ns_cache: &'a mut NsCache,
    /// Where the command's graph I/O completes.
    pub sink: &'a Rc<dyn IoSink>,
    /// The tag the completions carry (the transport's request slot).
    pub tag: u64,
}

/// Executes the I/O queue command in `req` for `ctrl`.
pub fn execute(req: &mut Request, ctrl: &Controller, cx: &mut IoCtx<'_>) -> Outcome {
    match dispatch(req, ctrl, cx) {
        Ok(outcome) => outcome,
        Err(status) => {
            req.fail(status);
            Outcome::Complete
        }
    }
}

fn dispatch(req: &mut Request, ctrl: &Controller, cx: &mut IoCtx<'_>) -> Result<Outcome, Status> {
    let sqe = req.sqe;
    if sqe.opcode() == FABRICS_OPCODE {
        return match FabricsCmd::parse(&sqe) {
            // Answer first; the queue closes once the response is on its
            // way.
            Ok(FabricsCmd::Disconnect { .. }) => Ok(Outcome::CompleteAndClose),
            Ok(FabricsCmd::Connect(_)) => Err(Status::COMMAND_SEQUENCE_ERROR.with_dnr()),
            _ => Err(Status::INVALID_OPCODE.with_dnr()),
        };
    }
    let Some(op) = IoOpcode::from_u8(sqe.opcode()) else {
        return Err(Status::INVALID_OPCODE.with_dnr());
    };
    // Fused pairs run in `fused` (the driver sends them there); what
    // reaches here fused is the reserved encoding.
    if sqe.fuse() != Fuse::Normal {
        return Err(Status::INVALID_FIELD.with_dnr());
    }
    // Commands `masked_oncs` hid from Identify are not offered at all.
    let oncs_bit = match op {
        IoOpcode::DatasetManagement => oncs::DSM,
        IoOpcode::WriteZeroes => oncs::WRITE_ZEROES,
        IoOpcode::Compare => oncs::COMPARE,
        IoOpcode::ReservationRegister
        | IoOpcode::ReservationReport
        | IoOpcode::ReservationAcquire
        | IoOpcode::ReservationRelease => oncs::RESERVATIONS,
        _ => 0,
    };
    if ctrl.opts.masked_oncs & oncs_bit != 0 {
        return Err(Status::INVALID_OPCODE.with_dnr());
    }
    let Some(subsys) = ctrl.subsystem() else {
        return Err(Status::INVALID_OPCODE.with_dnr());
    };
    // Lock-free unless the namespace table changed since the last command
    // of this queue pair.
    let root = {
        let table = cx.ns_cache.table(subsys);
        // A namespace hidden from this host is no namespace to it.
        let Some(ns) = table
            .get(sqe.nsid())
            .filter(|n| n.visible_to(&ctrl.hostnqn))
        else {
            return Err(Status::INVALID_NAMESPACE_OR_FORMAT.with_dnr());
        };
        if subsys.ana_reporting() {
            ana_check(table.ana.state(ctrl.listener.get().copied(), ns.anagrpid))?;
        }
        if let Some(done) = reservation_cmd(req, ctrl, op, ns, subsys)? {
            return Ok(done);
        }
        ns.resv.check_io(&ctrl.hostid, op)?;
        ns.root
    };
    let snap = cx.graph.snapshot(cx.reactor);
    let Some(geo) = snap.root_geometry(root) else {
        return Err(Status::INVALID_NAMESPACE_OR_FORMAT.with_dnr());
    };
    let bs = u64::from(geo.block_size);
    let shift = geo.block_size.trailing_zeros();
    let io = |op: IoOp, offset: u64, len: u64, buf: IoBuf| {
        Io::new(op, offset, len, buf, cx.sink.clone(), cx.tag)
    };
    let one = match op {
        IoOpcode::Read | IoOpcode::Write | IoOpcode::WriteZeroes => {
            let cmd = LbaRangeCmd::parse(&sqe);
            if !cmd.in_range(geo.block_count) {
                return Err(Status::LBA_OUT_OF_RANGE.with_dnr());
            }
            let len = cmd.byte_len(shift);
            let offset = cmd.slba * bs;
            if op == IoOpcode::WriteZeroes {
                io(IoOp::WriteZeroes, offset, len, IoBuf::None)
            } else {
                if len > u64::from(ctrl.opts.max_io_size) {
                    return Err(Status::INVALID_FIELD.with_dnr());
                }
                if len != u64::from(req.xfer_len) {
                    return Err(Status::DATA_SGL_LENGTH_INVALID.with_dnr());
                }
                let Some(buf) = req.buf.take() else {
                    return Err(Status::DATA_SGL_LENGTH_INVALID.with_dnr());
                };
                let gop = if op == IoOpcode::Read {
                    IoOp::Read
                } else {
                    IoOp::Write
                };
                io(gop, offset, len, IoBuf::Owned(buf))
            }
        }
        IoOpcode::Compare => {
            let cmd = LbaRangeCmd::parse(&sqe);
            if !cmd.in_range(geo.block_count) {
                return Err(Status::LBA_OUT_OF_RANGE.with_dnr());
            }
            let len = cmd.byte_len(shift);
            if len > u64::from(ctrl.opts.max_io_size) {
                return Err(Status::INVALID_FIELD.with_dnr());
            }
            if len != u64::from(req.xfer_len) || req.data().len() as u64 != len {
                return Err(Status::DATA_SGL_LENGTH_INVALID.with_dnr());
            }
            // The host's data stays in the request for `compare_done`; the
            // blocks are read beside it (at most max_io_size per request,
            // so a queue holds at most its depth of these).
            let read = AlignedBuf::zeroed(len as usize);
            io(IoOp::Read, cmd.slba * bs, len, IoBuf::Owned(read))
        }
        IoOpcode::Flush => io(IoOp::Flush, 0, 0, IoBuf::None),
        IoOpcode::DatasetManagement => {
            let cmd = DsmCmd::parse(&sqe);
            if cmd.attributes & DSM_ATTR_DEALLOCATE == 0 {
                // Only hints: nothing to do.
                return Ok(Outcome::Complete);
            }
            let data = req.data();
            if data.len() < cmd.data_len() {
                return Err(Status::DATA_SGL_LENGTH_INVALID.with_dnr());
            }
            let ranges = &data[..cmd.data_len()];
            let out_of_range = DsmRange::iter(ranges).any(|rg| {
                rg.slba
                    .checked_add(u64::from(rg.nlb))
                    .is_none_or(|end| end > geo.block_count)
            });
            if out_of_range {
                return Err(Status::LBA_OUT_OF_RANGE.with_dnr());
            }
            // Copy the ranges out: the buffer is released before the
            // discards complete.
            let mut list = [(0u64, 0u64); DSM_RANGES_MAX];
            let mut n = 0;
            for rg in DsmRange::iter(ranges).filter(|rg| rg.nlb > 0) {
                list[n] = (rg.slba * bs, u64::from(rg.nlb) * bs);
                n += 1;
            }
            req.buf = None;
            if n == 0 {
                return Ok(Outcome::Complete);
            }
            req.outstanding = n as u32;
            for &(off, len) in &list[..n] {
                snap.submit(cx.reactor, root, io(IoOp::Discard, off, len, IoBuf::None));
            }
            return Ok(Outcome::Submitted);
        }
        _ => return Err(Status::INVALID_OPCODE.with_dnr()),
    };
    req.outstanding = 1;
    snap.submit(cx.reactor, root, one);
    Ok(Outcome::Submitted)
}

/// Where a compare-and-write pair's I/O goes: the namespace's root and the
/// byte range both halves cover.
#[derive(Clone, Copy, Debug)]
pub struct CwPlan {
    /// The namespace's graph root.
    pub root: RootId,
    /// Start, in bytes.
    pub offset: u64,
    /// Length, in bytes.
    pub len: u64,
}

/// The checks of a fused Compare (`first`) and Write (`second`): each as
/// if alone (namespace, ANA, reservation, range, lengths) and both on the
/// same blocks of the same namespace (SPDK
/// `nvmf_bdev_ctrlr_compare_and_write_cmd`). `Err` is the status the pair
/// fails with (the first gets it; the second is aborted).
pub fn fused_plan(
    first: &Request,
    second: &Request,
    ctrl: &Controller,
    cx: &mut IoCtx<'_>,
) -> Result<CwPlan, Status> {
    if ctrl.opts.masked_oncs & oncs::COMPARE != 0 {
        return Err(Status::INVALID_OPCODE.with_dnr());
    }
    let cmp = LbaRangeCmd::parse(&first.sqe);
    let wr = LbaRangeCmd::parse(&second.sqe);
    if (cmp.nsid, cmp.slba, cmp.nlb) != (wr.nsid, wr.slba, wr.nlb) {
        return Err(Status::INVALID_FIELD.with_dnr());
    }
    let Some(subsys) = ctrl.subsystem() else {
        return Err(Status::INVALID_OPCODE.with_dnr());
    };
    let root = {
        let table = cx.ns_cache.table(subsys);
        let Some(ns) = table.get(cmp.nsid).filter(|n| n.visible_to(&ctrl.hostnqn)) else {
            return Err(Status::INVALID_NAMESPACE_OR_FORMAT.with_dnr());
        };
        if subsys.ana_reporting() {
            ana_check(table.ana.state(ctrl.listener.get().copied(), ns.anagrpid))?;
        }
        // A host that may not write may not compare-and-write either.
        ns.resv.check_io(&ctrl.hostid, IoOpcode::Compare)?;
        ns.resv.check_io(&ctrl.hostid, IoOpcode::Write)?;
        ns.root
    };
    let Some(geo) = cx.graph.snapshot(cx.reactor).root_geometry(root) else {
        return Err(Status::INVALID_NAMESPACE_OR_FORMAT.with_dnr());
    };
    if !cmp.in_range(geo.block_count) {
        return Err(Status::LBA_OUT_OF_RANGE.with_dnr());
    }
    let len = cmp.byte_len(geo.block_size.trailing_zeros());
    if len > u64::from(ctrl.opts.max_io_size) {
        return Err(Status::INVALID_FIELD.with_dnr());
    }
    for half in [first, second] {
        if len != u64::from(half.xfer_len) || half.data().len() as u64 != len {
            return Err(Status::DATA_SGL_LENGTH_INVALID.with_dnr());
        }
    }
    Ok(CwPlan {
        root,
        offset: cmp.slba * u64::from(geo.block_size),
        len,
    })
}

/// Whether `req` is a Compare, whose read completes in `compare_done`
/// instead of becoming C2H data.
#[inline]
pub fn is_compare(req: &Request) -> bool {
    req.sqe.opcode() == IoOpcode::Compare.as_u8()
}

/// Finishes a Compare once its blocks are read: Compare Failure (media
/// and data integrity errors, 85h; DNR, as retrying cannot change the
/// answer) unless they equal the host's data.
pub fn compare_done(req: &mut Request, read: &[u8]) {
    if req.status.is_success() && req.data() != read {
        req.status = Status::COMPARE_FAILURE.with_dnr();
    }
}

/// The status of I/O through a path in `state`: none for the accessible
/// states. Without DNR, so a multipath host retries on another path.
#[inline]
fn ana_check(state: AnaState) -> Result<(), Status> {
    match state {
        AnaState::Optimized | AnaState::NonOptimized => Ok(()),
        AnaState::Inaccessible => Err(Status::ANA_INACCESSIBLE),
        AnaState::PersistentLoss => Err(Status::ANA_PERSISTENT_LOSS),
        AnaState::Change => Err(Status::ANA_TRANSITION),
    }
}

/// Executes a reservation command (`Some`), or says `op` is none.
fn reservation_cmd(
    req: &mut Request,
    ctrl: &Controller,
    op: IoOpcode,
    ns: &Namespace,
    subsys: &Subsystem,
) -> Result<Option<Outcome>, Status> {
    match op {
        IoOpcode::ReservationRegister
        | IoOpcode::ReservationAcquire
        | IoOpcode::ReservationRelease => {
            let who = Requester {
                hostid: ctrl.hostid,
                cntlid: ctrl.cntlid,
            };
            let cdw10 = ResvCdw10::parse(&req.sqe);
            let notices = ns.resv.execute(op, cdw10, req.data(), who)?;
            for n in notices {
                for c in subsys.controllers_of_host(&n.hostid) {
                    c.reservation_notice(ns.nsid, n.kind);
                }
            }
        }
        IoOpcode::ReservationReport => {
            // Host IDs are 128-bit here (CTRATT bit 0), which only the
            // extended structure carries.
            if req.sqe.cdw11() & REPORT_EDS == 0 {
                return Err(Status::HOST_ID_INCONSISTENT_FORMAT.with_dnr());
            }
            if req.buf.is_none() {
                return Err(Status::INVALID_FIELD.with_dnr());
            }
            let report = ns.resv.report();
            req.put_c2h(&report);
        }
        _ => return Ok(None),
    }
    Ok(Some(Outcome::Complete))
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use pollux_graph::IoResult;
    use pollux_nvme::Sqe;

    use super::*;
    use crate::nvmf::command::bench::{request, Bench, BLOCKS};

    /// Hands each completion's tag and result to the test.
    struct Done(mpsc::Sender<(u64, bool)>);

    impl IoSink for Done {
        fn io_done(&self, _r: &Reactor, io: Io, result: IoResult) {
            let _ = self.0.send((io.tag, result.is_ok()));
        }
    }

    fn rw_sqe(op: IoOpcode, nsid: u32, slba: u64, nlb: u32) -> Sqe {
        let mut s = Sqe::new(op.as_u8(), 9);
        LbaRangeCmd {
            nsid,
            slba,
            nlb,
            fua: false,
            deac: false,
        }
        .write(&mut s);
        s
    }

    /// Runs one I/O command with data buffer `len`; the outcome, status
    /// and graph I/Os in flight, and the completions that arrive.
    fn run_io(b: &Bench, sqe: Sqe, len: usize) -> (Outcome, Status, u32, Vec<(u64, bool)>) {
        let (tx, rx) = mpsc::channel();
        let (out, st, n) = b.run(move |r, shared, ctrl| {
            let sink: Rc<dyn IoSink> = Rc::new(Done(tx));
            let mut ns_cache = NsCache::default();
            let mut req = request(sqe, len);
            let mut cx = IoCtx {
                reactor: r,
                graph: &shared.graph,
                ns_cache: &mut ns_cache,
                sink: &sink,
                tag: 42,
            };
            let out = execute(&mut req, ctrl, &mut cx);
            (out, req.status, req.outstanding)
        });
        let done = (0..n)
            .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap())
            .collect();
        (out, st, n, done)
    }

    #[test]
    fn reads_and_writes_inside_the_namespace_go_to_the_graph() {
        let b = Bench::new(true);
        let (out, st, n, done) = run_io(&b, rw_sqe(IoOpcode::Write, 1, BLOCKS - 8, 8), 4096);
        assert_eq!((out, n), (Outcome::Submitted, 1));
        assert!(st.is_success());
        assert_eq!(done, vec![(42, true)], "completes to the transport's tag");
        let (out, _, _, done) = run_io(&b, rw_sqe(IoOpcode::Read, 1, 0, 1), 512);
        assert_eq!(out, Outcome::Submitted);
        assert_eq!(done, vec![(42, true)]);
    }

    #[test]
    fn range_length_and_namespace_are_checked_before_the_graph() {
        let b = Bench::new(true);
        // The last block plus one.
        let (out, st, n, _) = run_io(&b, rw_sqe(IoOpcode::Read, 1, BLOCKS - 1, 2), 1024);
        assert_eq!((out, n), (Outcome::Complete, 0));
        assert!(st.same_code(&Status::LBA_OUT_OF_RANGE), "{st:?}");
        // SLBA + NLB overflowing u64.
        let (_, st, _, _) = run_io(&b, rw_sqe(IoOpcode::Write, 1, u64::MAX, 1), 512);
        assert!(st.same_code(&Status::LBA_OUT_OF_RANGE), "{st:?}");
        // NLB says 2 blocks, the SGL one.
        let (_, st, n, _) = run_io(&b, rw_sqe(IoOpcode::Write, 1, 0, 2), 512);
        assert_eq!(n, 0);
        assert!(st.same_code(&Status::DATA_SGL_LENGTH_INVALID), "{st:?}");
        let (_, st, _, _) = run_io(&b, rw_sqe(IoOpcode::Read, 2, 0, 1), 512);
        assert!(st.same_code(&Status::INVALID_NAMESPACE_OR_FORMAT), "{st:?}");
        let (_, st, _, _) = run_io(&b, Sqe::new(0x7e, 9), 0);
        assert!(st.same_code(&Status::INVALID_OPCODE), "{st:?}");
    }

    #[test]
    fn a_hidden_namespace_is_no_namespace_until_given_to_the_host() {
        let b = Bench::new(true);
        let sub = b.ctrl.subsystem().unwrap().clone();
        sub.update_namespace(1, |ns| {
            ns.auto_visible = false;
            Ok(())
        })
        .unwrap();
        let (_, st, _, _) = run_io(&b, rw_sqe(IoOpcode::Read, 1, 0, 1), 512);
        assert!(st.same_code(&Status::INVALID_NAMESPACE_OR_FORMAT), "{st:?}");
        sub.update_namespace(1, |ns| {
            ns.hosts.push("nqn.host".into());
            Ok(())
        })
        .unwrap();
        let (out, st, _, _) = run_io(&b, rw_sqe(IoOpcode::Read, 1, 0, 1), 512);
        assert_eq!(out, Outcome::Submitted, "{st:?}");
    }

    #[test]
    fn an_inaccessible_path_fails_io_without_dnr_and_non_optimized_serves() {
        let b = Bench::new(true);
        let sub = b.ctrl.subsystem().unwrap().clone();
        let port: std::net::SocketAddr = "127.0.0.1:4420".parse().unwrap();
        b.ctrl.listener.set(port).unwrap();
        sub.publish_ana(|t| t.with_state(port, None, AnaState::Inaccessible));
        // Without ANA reporting every path is optimized.
        let (out, _, _, _) = run_io(&b, rw_sqe(IoOpcode::Read, 1, 0, 1), 512);
        assert_eq!(out, Outcome::Submitted);
        sub.ana_reporting
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let (out, st, _, _) = run_io(&b, rw_sqe(IoOpcode::Write, 1, 0, 1), 512);
        assert_eq!(out, Outcome::Complete);
        assert!(st.same_code(&Status::ANA_INACCESSIBLE), "{st:?}");
        assert_eq!(st.to_field(false) & Status::DNR, 0, "retryable elsewhere");
        // Another group of the same listener is unaffected.
        sub.publish_ana(|t| t.with_state(port, None, AnaState::Optimized));
        sub.publish_ana(|t| t.with_state(port, Some(2), AnaState::Inaccessible));
        let (out, _, _, _) = run_io(&b, rw_sqe(IoOpcode::Read, 1, 0, 1), 512);
        assert_eq!(out, Outcome::Submitted);
        sub.publish_ana(|t| t.with_state(port, Some(1), AnaState::NonOptimized));
        let (out, _, _, _) = run_io(&b, rw_sqe(IoOpcode::Read, 1, 0, 1), 512);
        assert_eq!(out, Outcome::Submitted);
    }

    #[test]
    fn reservation_commands_run_and_report_needs_the_extended_form() {
        use pollux_nvme::reservation::ReservationStatus;
        let b = Bench::new(true);
        let mut reg = Sqe::new(IoOpcode::ReservationRegister.as_u8(), 3);
        reg.set_nsid(1);
        let data: Vec<u8> = [0u64, 0x77].iter().flat_map(|k| k.to_le_bytes()).collect();
        let (out, st) = b.run(move |r, shared, ctrl| {
            let sink: Rc<dyn IoSink> = Rc::new(Done(mpsc::channel().0));
            let mut ns_cache = NsCache::default();
            let mut req = request(reg, 16);
            req.buf
                .as_mut()
                .unwrap()
                .as_mut_slice()
                .copy_from_slice(&data);
            let mut cx = IoCtx {
                reactor: r,
                graph: &shared.graph,
                ns_cache: &mut ns_cache,
                sink: &sink,
                tag: 1,
            };
            (execute(&mut req, ctrl, &mut cx), req.status)
        });
        assert_eq!(out, Outcome::Complete);
        assert!(st.is_success(), "{st:?}");
        let mut rep = Sqe::new(IoOpcode::ReservationReport.as_u8(), 4);
        rep.set_nsid(1);
        rep.set_cdw10(4096 / 4 - 1);
        let (_, st, _, _) = run_io(&b, rep, 4096);
        assert!(st.same_code(&Status::HOST_ID_INCONSISTENT_FORMAT), "{st:?}");
        rep.set_cdw11(1);
        let (status, data) = b.run(move |r, shared, ctrl| {
            let sink: Rc<dyn IoSink> = Rc::new(Done(mpsc::channel().0));
            let mut ns_cache = NsCache::default();
            let mut req = request(rep, 4096);
            let mut cx = IoCtx {
                reactor: r,
                graph: &shared.graph,
                ns_cache: &mut ns_cache,
                sink: &sink,
                tag: 1,
            };
            execute(&mut req, ctrl, &mut cx);
            (req.status, req.data().to_vec())
        });
        assert!(status.is_success(), "{status:?}");
        let report = ReservationStatus::parse(&data, true).unwrap();
        assert_eq!(report.regs.len(), 1);
        assert_eq!(
            (report.regs[0].hostid, report.regs[0].rkey),
            ([7; 16], 0x77)
        );
    }

    #[test]
    fn disconnect_completes_then_closes() {
        let b = Bench::new(true);
        let s = FabricsCmd::Disconnect { cid: 9 }.to_sqe();
        let (out, st, _, _) = run_io(&b, s, 0);
        assert_eq!(out, Outcome::CompleteAndClose);
        assert!(st.is_success());
    }
}
