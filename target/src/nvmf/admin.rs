//! The admin command set on a request and its controller: Identify, Get
//! Log Page, Get/Set Features, Asynchronous Event Request, Keep Alive,
//! Abort, Property Get/Set. As SPDK's `ctrlr.c` works on an
//! `spdk_nvmf_request`, these functions take the command (SQE, data
//! buffer, completion fields) and its controller and say what the
//! transport does next ([`Outcome`]); they know nothing of sockets, so
//! another transport can reuse them and tests can call them directly.
//! Fabrics Connect, which makes the queue pair, is in `connect`.

use std::time::Instant;

use pollux_nvme::ana::LSP_RGO;
use pollux_nvme::fabrics::{
    self, property, Cap, Cc, FabricsCmd, PropertySize, CAP_CSS_NVM, DISCOVERY_NQN, FABRICS_OPCODE,
};
use pollux_nvme::features::{aec, AsyncEvent, FeatureId, FeaturesCmd, NumQueues, Select};
use pollux_nvme::identify::{
    self, anacap, ascii_field, cmic, cntrltype, ctratt, dlfeat, fuses, lpa, oaes, oncs, rescap,
    sgls, vwc, Cns, IdentifyCmd, IdentifyController, IdentifyNamespace, NsIdDescriptor,
    IDENTIFY_LEN,
};
use pollux_nvme::log_page::{
    effects, write_changed_ns_list, CommandEffectsLog, FirmwareSlotLog, GetLogPageCmd, LogPageId,
    SmartLog, CHANGED_NS_LIST_LEN,
};
use pollux_nvme::opcode::{AdminOpcode, IoOpcode};
use pollux_nvme::reservation::{write_notification_log, NOTIFICATION_LOG_LEN};
use pollux_nvme::Status;
use pollux_poller::Reactor;

use super::ana;
use super::command::Outcome;
use super::controller::{Controller, CtrlKind};
use super::request::Request;
use super::subsystem::discovery_log;
use super::Shared;

/// Reported NVMe version: 1.4, so hosts use only the Identify CNS values
/// this target implements (00h-03h, no I/O command set CNS).
const NVME_VERSION: u32 = fabrics::version(1, 4, 0);
/// Outstanding AERs accepted (AERL is 0-based): Linux sends one, SPDK up
/// to four.
pub(super) const AER_LIMIT: usize = 4;
/// Aborts accepted at a time (ACL, 0-based).
const ABORT_LIMIT: u8 = 4;
/// CAP.TO in 500 ms units: how long a host waits for CSTS.RDY. Ours flips
/// at once; 15 s is what Linux's own target reports.
const CAP_TIMEOUT: u8 = 30;
/// Model number of discovery controllers.
const DISCOVERY_MODEL: &str = "Pollux Discovery";

/// What admin commands need beyond the request and its controller.
pub struct AdminCtx<'a> {
    /// The target: the graph (namespace geometry) and what discovery
    /// lists.
    pub shared: &'a Shared,
    /// The reactor the command runs on (graph snapshots are read on it).
    pub reactor: &'a Reactor,
    /// AERs the queue already holds.
    pub held_aers: usize,
}

/// Executes the admin command in `req` for `ctrl`. Data a command returns
/// is written into `req.buf` (zeroed, sized by the SGL); its completion
/// status and dwords go into `req`.
pub fn execute(req: &mut Request, ctrl: &Controller, cx: &AdminCtx<'_>) -> Outcome {
    match dispatch(req, ctrl, cx) {
        Ok(outcome) => outcome,
        Err(status) => {
            req.fail(status);
            Outcome::Complete
        }
    }
}

fn dispatch(req: &mut Request, ctrl: &Controller, cx: &AdminCtx<'_>) -> Result<Outcome, Status> {
    let sqe = req.sqe;
    // Any admin command proves the host alive (it is cheap here: the
    // admin queue is control path).
    ctrl.state().last_keep_alive = Instant::now();
    if sqe.opcode() == FABRICS_OPCODE {
        fabrics(req, ctrl)?;
        return Ok(Outcome::Complete);
    }
    let Some(op) = AdminOpcode::from_u8(sqe.opcode()) else {
        return Err(Status::INVALID_OPCODE.with_dnr());
    };
    if !ctrl.is_ready() {
        return Err(Status::COMMAND_SEQUENCE_ERROR.with_dnr());
    }
    match op {
        AdminOpcode::Identify => identify(req, ctrl, cx)?,
        AdminOpcode::GetLogPage => get_log_page(req, ctrl, cx)?,
        AdminOpcode::GetFeatures | AdminOpcode::SetFeatures => features(req, ctrl)?,
        AdminOpcode::AsyncEventRequest => {
            if cx.held_aers >= AER_LIMIT {
                return Err(Status::AER_LIMIT_EXCEEDED.with_dnr());
            }
            return Ok(Outcome::HoldAer);
        }
        AdminOpcode::KeepAlive => {}
        AdminOpcode::Abort => {
            // Commands run to completion quickly; report "not aborted"
            // (dword 0 bit 0 set), which every host handles.
            req.dw0 = 1;
        }
        _ => return Err(Status::INVALID_OPCODE.with_dnr()),
    }
    Ok(Outcome::Complete)
}

/// Completes a held AER with `ev`.
pub fn complete_aer(req: &mut Request, ev: AsyncEvent) {
    req.dw0 = ev.to_dw0();
}

/// Property Get/Set on the admin queue (Connect and Disconnect are not
/// admin commands once the queue is connected).
fn fabrics(req: &mut Request, ctrl: &Controller) -> Result<(), Status> {
    match FabricsCmd::parse(&req.sqe) {
        Ok(FabricsCmd::PropertyGet(p)) => {
            let Some(size) = property::size(p.offset) else {
                return Err(Status::INVALID_FIELD.with_dnr());
            };
            if size != p.size.bytes() {
                return Err(Status::INVALID_FIELD.with_dnr());
            }
            let st = ctrl.state();
            let value: u64 = match p.offset {
                property::CAP => {
                    Cap(0)
                        .with_mqes((ctrl.opts.max_queue_depth - 1) as u16)
                        .with_cqr(1)
                        .with_to(CAP_TIMEOUT)
                        .with_css(CAP_CSS_NVM)
                        .0
                }
                property::VS => u64::from(NVME_VERSION),
                property::CC => u64::from(st.cc.0),
                property::CSTS => u64::from(st.csts.0),
                _ => 0,
            };
            req.dw0 = value as u32;
            if p.size == PropertySize::Eight {
                req.dw1 = (value >> 32) as u32;
            }
            Ok(())
        }
        Ok(FabricsCmd::PropertySet(p)) => match p.offset {
            property::CC if p.size == PropertySize::Four => {
                let cc = Cc(p.value as u32);
                tracing::debug!(cntlid = ctrl.cntlid, cc = cc.0, "nvmf: CC write");
                ctrl.write_cc(cc);
                Ok(())
            }
            // NSSR: a subsystem reset means nothing to a software target.
            property::NSSR if p.size == PropertySize::Four => Ok(()),
            _ => Err(Status::INVALID_FIELD.with_dnr()),
        },
        Ok(FabricsCmd::Connect(_)) => Err(Status::COMMAND_SEQUENCE_ERROR.with_dnr()),
        Ok(FabricsCmd::Disconnect { .. }) => Err(Status::INVALID_FIELD.with_dnr()),
        Ok(FabricsCmd::Other { .. }) => Err(Status::INVALID_OPCODE.with_dnr()),
        Err(_) => Err(Status::INVALID_FIELD.with_dnr()),
    }
}

fn identify(req: &mut Request, ctrl: &Controller, cx: &AdminCtx<'_>) -> Result<(), Status> {
    let sqe = req.sqe;
    let Ok(cmd) = IdentifyCmd::parse(&sqe) else {
        return Err(Status::INVALID_FIELD.with_dnr());
    };
    if req.buf.is_none() {
        return Err(Status::DATA_SGL_LENGTH_INVALID.with_dnr());
    }
    let mut out = [0u8; IDENTIFY_LEN];
    let sub = ctrl.subsystem();
    match (cmd.cns(), sub) {
        (Some(Cns::Controller), _) => identify_controller(ctrl).write(&mut out),
        (Some(Cns::Namespace), Some(sub)) => {
            if cmd.nsid == 0xFFFF_FFFF {
                // Capabilities common to all namespaces: none beyond
                // the defaults, reported as zeroes.
            } else if let Some(ns) = sub
                .namespace(cmd.nsid)
                .filter(|n| n.visible_to(&ctrl.hostnqn))
            {
                let geo = cx.shared.graph.snapshot(cx.reactor).root_geometry(ns.root);
                if let Some(geo) = geo {
                    let lbads = geo.block_size.trailing_zeros() as u8;
                    let mut id = IdentifyNamespace::simple(geo.block_count, lbads);
                    // Deallocated blocks read as zeroes on every node
                    // we ship.
                    id.dlfeat = dlfeat::READ_ZEROES;
                    // Several controllers (hosts, paths) may share it.
                    id.nmic = 1;
                    id.nguid = ns.nguid;
                    id.rescap = RESCAP
                        | if ns.resv.ptpl_file().is_some() {
                            rescap::PTPL
                        } else {
                            0
                        };
                    if sub.ana_reporting() {
                        id.anagrpid = ns.anagrpid;
                    }
                    id.write(&mut out);
                }
            } else if cmd.nsid != 0 && cmd.nsid <= sub.nn() {
                // An inactive NSID within NN (removed, or not yet
                // added): all zeroes, as the spec asks.
            } else {
                return Err(Status::INVALID_NAMESPACE_OR_FORMAT.with_dnr());
            }
        }
        (Some(Cns::ActiveNamespaceList), Some(sub)) => {
            if cmd.nsid >= 0xFFFF_FFFE {
                return Err(Status::INVALID_NAMESPACE_OR_FORMAT.with_dnr());
            }
            let nsids: Vec<u32> = sub
                .namespaces()
                .iter()
                .filter(|n| n.visible_to(&ctrl.hostnqn))
                .map(|n| n.nsid)
                .collect();
            identify::write_active_ns_list(&nsids, cmd.nsid, &mut out);
        }
        (Some(Cns::NamespaceDescriptorList), Some(sub)) => {
            let visible = sub
                .namespace(cmd.nsid)
                .filter(|n| n.visible_to(&ctrl.hostnqn));
            let Some(ns) = visible else {
                return Err(Status::INVALID_NAMESPACE_OR_FORMAT.with_dnr());
            };
            let uuid = ns.uuid();
            let descs = [NsIdDescriptor::Nguid(ns.nguid), NsIdDescriptor::Uuid(uuid)];
            if identify::write_ns_desc_list(&descs, &mut out).is_err() {
                return Err(Status::INTERNAL_ERROR);
            }
        }
        // I/O command set specific structures for the NVM set: nothing
        // beyond the base structures, i.e. all zeroes.
        (Some(Cns::CsController), Some(_)) if cmd.csi == 0 => {}
        (Some(Cns::CsNamespace), Some(sub)) if cmd.csi == 0 => {
            if !sub
                .namespace(cmd.nsid)
                .is_some_and(|n| n.visible_to(&ctrl.hostnqn))
            {
                return Err(Status::INVALID_NAMESPACE_OR_FORMAT.with_dnr());
            }
        }
        _ => return Err(Status::INVALID_FIELD.with_dnr()),
    }
    req.put_c2h(&out);
    Ok(())
}

fn get_log_page(req: &mut Request, ctrl: &Controller, cx: &AdminCtx<'_>) -> Result<(), Status> {
    let sqe = req.sqe;
    let Ok(cmd) = GetLogPageCmd::parse(&sqe) else {
        return Err(Status::INVALID_FIELD.with_dnr());
    };
    let discovery = matches!(ctrl.kind, CtrlKind::Discovery);
    let page: Vec<u8> = match (cmd.log_page_id(), discovery) {
        (Some(LogPageId::Discovery), true) => discovery_log(
            &cx.shared.subsystem_list(),
            &cx.shared.port_list(),
            &ctrl.hostnqn,
            ctrl.opts.max_aq_depth,
            cx.shared
                .discovery_gen
                .load(std::sync::atomic::Ordering::Acquire),
        ),
        (Some(LogPageId::ErrorInformation), _) => vec![0u8; 64],
        (Some(LogPageId::ReservationNotification), false) => {
            // One page per read, oldest first; an empty page once all
            // are read, which re-arms the event.
            let mut st = ctrl.state();
            match st.resv_log.pop_front() {
                Some((count, kind, nsid)) => {
                    let left = st.resv_log.len();
                    if left == 0 && !cmd.rae {
                        st.resv_notice_masked = false;
                    }
                    write_notification_log(count, kind, left, nsid)
                }
                None => {
                    if !cmd.rae {
                        st.resv_notice_masked = false;
                    }
                    vec![0u8; NOTIFICATION_LOG_LEN]
                }
            }
        }
        (Some(LogPageId::Ana), false) => {
            let Some(sub) = ctrl.subsystem().filter(|s| s.ana_reporting()) else {
                return Err(Status::INVALID_LOG_PAGE.with_dnr());
            };
            if !cmd.rae {
                // Reading the log re-arms the notice.
                ctrl.state().ana_notice_masked = false;
            }
            ana::ana_log(
                sub,
                &sub.namespaces(),
                ctrl.listener.get().copied(),
                &ctrl.hostnqn,
                cmd.lsp & LSP_RGO != 0,
            )
        }
        (Some(LogPageId::SmartHealth), false) => {
            let log = SmartLog {
                // 37 C in kelvin, a plausible idle temperature.
                composite_temp: 310,
                avail_spare: 100,
                spare_thresh: 10,
                ..Default::default()
            };
            let mut b = vec![0u8; SmartLog::SIZE];
            let _ = log.write(&mut b);
            b
        }
        (Some(LogPageId::FirmwareSlot), false) => {
            let mut log = FirmwareSlotLog {
                afi: 1,
                ..Default::default()
            };
            log.frs[0] = ascii_field(env!("CARGO_PKG_VERSION"));
            let mut b = vec![0u8; FirmwareSlotLog::SIZE];
            let _ = log.write(&mut b);
            b
        }
        (Some(LogPageId::ChangedNamespaceList), false) => {
            let list = {
                let mut st = ctrl.state();
                if cmd.rae {
                    st.changed_ns.clone()
                } else {
                    // Reading the list re-arms the notice.
                    st.ns_notice_masked = false;
                    std::mem::take(&mut st.changed_ns)
                }
            };
            let mut b = vec![0u8; CHANGED_NS_LIST_LEN];
            let _ = write_changed_ns_list(&list, &mut b);
            b
        }
        (Some(LogPageId::CommandsSupportedEffects), false) => {
            let mut log = CommandEffectsLog::default();
            for op in [
                AdminOpcode::GetLogPage,
                AdminOpcode::Identify,
                AdminOpcode::Abort,
                AdminOpcode::SetFeatures,
                AdminOpcode::GetFeatures,
                AdminOpcode::AsyncEventRequest,
                AdminOpcode::KeepAlive,
            ] {
                log.acs[op.as_u8() as usize] = effects::CSUPP;
            }
            for op in [
                IoOpcode::Read,
                IoOpcode::Compare,
                IoOpcode::ReservationReport,
            ] {
                log.iocs[op.as_u8() as usize] = effects::CSUPP;
            }
            for op in [
                IoOpcode::ReservationRegister,
                IoOpcode::ReservationAcquire,
                IoOpcode::ReservationRelease,
            ] {
                log.iocs[op.as_u8() as usize] = effects::CSUPP;
            }
            for op in [
                IoOpcode::Write,
                IoOpcode::Flush,
                IoOpcode::WriteZeroes,
                IoOpcode::DatasetManagement,
            ] {
                log.iocs[op.as_u8() as usize] = effects::CSUPP | effects::LBCC;
            }
            let mut b = vec![0u8; CommandEffectsLog::SIZE];
            let _ = log.write(&mut b);
            b
        }
        _ => return Err(Status::INVALID_LOG_PAGE.with_dnr()),
    };
    let range = cmd.range(page.len())?;
    req.put_c2h(&page[range.start..range.end]);
    Ok(())
}

fn features(req: &mut Request, ctrl: &Controller) -> Result<(), Status> {
    let sqe = req.sqe;
    let Ok(f) = FeaturesCmd::parse(&sqe) else {
        return Err(Status::INVALID_FIELD.with_dnr());
    };
    if let Select::Reserved(_) = f.sel {
        return Err(Status::INVALID_FIELD.with_dnr());
    }
    if f.save {
        return Err(Status::FEATURE_NOT_SAVEABLE.with_dnr());
    }
    let mut st = ctrl.state();
    let dw0 = match f.feature_id() {
        Some(FeatureId::Arbitration) => {
            if f.set {
                st.arbitration = f.cdw11;
            }
            st.arbitration
        }
        Some(FeatureId::PowerManagement) => {
            // Only power state 0 exists (NPSS = 0).
            if f.set {
                if f.cdw11 & 0x1f != 0 {
                    drop(st);
                    return Err(Status::INVALID_FIELD.with_dnr());
                }
                st.power_mgmt = f.cdw11;
            }
            st.power_mgmt
        }
        Some(FeatureId::TemperatureThreshold) => {
            if f.set {
                st.temp_threshold = f.cdw11 & 0xffff;
            }
            st.temp_threshold
        }
        Some(FeatureId::ErrorRecovery) | Some(FeatureId::WriteAtomicity) => 0,
        Some(FeatureId::VolatileWriteCache) => {
            if f.set {
                st.vwc = f.cdw11 & pollux_nvme::features::VWC_WCE != 0;
            }
            u32::from(st.vwc)
        }
        Some(FeatureId::NumberOfQueues) => {
            let max = io_queues(ctrl) - 1;
            if f.set {
                let req = NumQueues::from_dword(f.cdw11);
                if !req.is_valid_request() {
                    drop(st);
                    return Err(Status::INVALID_FIELD.with_dnr());
                }
                let granted = req.nsq.min(req.ncq).min(max);
                st.nq_granted = Some(granted);
            }
            let g = st.nq_granted.unwrap_or(max);
            NumQueues { nsq: g, ncq: g }.to_dword()
        }
        Some(FeatureId::AsyncEventConfig) => {
            if f.set {
                st.aec = f.cdw11 & (aec::NS_ATTR | aec::ANA_CHANGE | aec::DISCOVERY_CHANGE);
            }
            st.aec
        }
        Some(FeatureId::HostIdentifier) if !f.set => {
            // Bit 0 of CDW11 (EXHID) asks for the 128-bit form, the
            // only one we keep.
            drop(st);
            if f.cdw11 & 1 == 0 || req.buf.is_none() {
                return Err(Status::INVALID_FIELD.with_dnr());
            }
            req.put_c2h(&ctrl.hostid);
            return Ok(());
        }
        Some(FeatureId::ReservationPersistence) if !f.set => {
            let ns = ctrl
                .subsystem()
                .and_then(|s| s.namespace(sqe.nsid()))
                .filter(|n| n.visible_to(&ctrl.hostnqn));
            let Some(ns) = ns else {
                drop(st);
                return Err(Status::INVALID_NAMESPACE_OR_FORMAT.with_dnr());
            };
            u32::from(ns.resv.ptpl_active())
        }
        Some(FeatureId::KeepAliveTimer) => {
            if f.set {
                st.kato_ms = ctrl.opts.kato(f.cdw11);
                st.last_keep_alive = Instant::now();
            }
            st.kato_ms
        }
        _ => {
            drop(st);
            return Err(Status::INVALID_FIELD.with_dnr());
        }
    };
    drop(st);
    req.dw0 = dw0;
    Ok(())
}

/// I/O queues a controller may have (1-based), from its options.
pub(super) fn io_queues(ctrl: &Controller) -> u16 {
    // Validated to 1..=IO_QPAIRS_MAX, which fits.
    ctrl.opts.max_io_qpairs_per_ctrlr.min(u32::from(u16::MAX)) as u16
}

/// Identify Controller for `ctrl`, satisfying Linux's fabrics checks
/// (`nvme_init_ctrl_finish`): KAS ≠ 0, IOCCSZ ≥ 4, IORCSZ ≥ 1, SGL support,
/// ICDOFF = 0, CNTLID equal to Connect's, MAXCMD, SUBNQN.
fn identify_controller(ctrl: &Controller) -> IdentifyController {
    let mut id = IdentifyController::default();
    let (nqn, serial, model, nn, kind) = match &ctrl.kind {
        CtrlKind::Io(s) => (
            s.nqn.as_str(),
            s.serial.as_str(),
            s.model.as_str(),
            s.nn(),
            cntrltype::IO,
        ),
        CtrlKind::Discovery => (
            DISCOVERY_NQN,
            "POLLUX-DISCOVERY",
            DISCOVERY_MODEL,
            0,
            cntrltype::DISCOVERY,
        ),
    };
    id.sn = ascii_field(serial);
    id.mn = ascii_field(model);
    id.fr = ascii_field(env!("CARGO_PKG_VERSION"));
    // Recommended arbitration burst: 64 commands.
    id.rab = 6;
    // Dynamic model: any number of controllers per subsystem.
    id.cmic = cmic::MULTI_CTRL;
    let opts = &ctrl.opts;
    id.mdts = opts.mdts();
    id.cntlid = ctrl.cntlid;
    id.ver = NVME_VERSION;
    id.oaes = if kind == cntrltype::IO {
        oaes::NS_ATTR
    } else {
        0
    };
    id.ctratt = ctratt::HOST_ID_128;
    id.cntrltype = kind;
    id.acl = ABORT_LIMIT - 1;
    id.aerl = (AER_LIMIT - 1) as u8;
    // One firmware slot, read-only.
    id.frmw = (1 << 1) | 1;
    id.lpa = lpa::CMD_EFFECTS | lpa::EXTENDED_DATA;
    id.kas = opts.kas as u16;
    id.sqes = 0x66;
    id.cqes = 0x44;
    id.maxcmd = opts.max_queue_depth as u16;
    id.nn = nn;
    id.oncs =
        (oncs::COMPARE | oncs::DSM | oncs::WRITE_ZEROES | oncs::RESERVATIONS) & !opts.masked_oncs;
    // Fused compare-and-write (`fused`). ACWU stays 0 (one block, the
    // field is 0-based) as SPDK reports it, though the range lock keeps
    // the whole command's range atomic.
    id.fuses = fuses::COMPARE_AND_WRITE & !opts.masked_fuses;
    if let CtrlKind::Io(s) = &ctrl.kind {
        if s.ana_reporting() {
            ana_identify(&mut id, s);
        }
    }
    // A volatile cache is reported so hosts send Flush (the file node
    // buffers, and Flush is what makes its data durable); broadcast flush
    // (NSID FFFFFFFFh) is not supported.
    id.vwc = vwc::PRESENT | vwc::NO_FLUSH_BROADCAST;
    id.sgls = sgls::SUPPORTED | sgls::OFFSET | sgls::TRANSPORT_DATA_BLOCK;
    if let Ok(n) = fabrics::Nqn::new(nqn) {
        id.subnqn = n;
    }
    id.ioccsz = opts.ioccsz();
    id.iorcsz = 1;
    id.icdoff = 0;
    id.fcatt = 0;
    id.msdbd = 1;
    id
}

/// Every reservation type, and IEKEY as NVMe 1.3 defines it (PTPL is per
/// namespace: only with a ptpl file).
const RESCAP: u8 = rescap::WRITE_EXCLUSIVE
    | rescap::EXCLUSIVE_ACCESS
    | rescap::WRITE_EXCLUSIVE_REG_ONLY
    | rescap::EXCLUSIVE_ACCESS_REG_ONLY
    | rescap::WRITE_EXCLUSIVE_ALL_REGS
    | rescap::EXCLUSIVE_ACCESS_ALL_REGS
    | rescap::IGNORE_EXISTING_KEY;
/// ANATT: state changes here are instant; 10 s is SPDK's value, the time
/// a host waits on a group in the change state.
const ANA_TRANSITION_SECS: u8 = 10;

/// ANA reporting in Identify Controller, as Linux's multipath needs it:
/// CMIC bit 3, the notice in OAES, ANACAP, and ANAGRPMAX/NANAGRPID/MNAN
/// sized so the whole log (every group, every NSID) fits the buffer the
/// host allocates from them.
fn ana_identify(id: &mut IdentifyController, s: &super::subsystem::Subsystem) {
    id.cmic |= cmic::ANA | cmic::MULTI_PORT;
    id.oaes |= oaes::ANA_CHANGE;
    id.anatt = ANA_TRANSITION_SECS;
    id.anacap = anacap::OPTIMIZED | anacap::NON_OPTIMIZED | anacap::INACCESSIBLE;
    let groups = s
        .anagrp_max()
        .max(id.nn)
        .max(ana::highest_group(&s.namespaces()));
    id.anagrpmax = groups;
    id.nanagrpid = groups;
    // Linux wants 0 < MNAN <= NN, and sizes its ANA log buffer by MNAN.
    id.mnan = id.nn.max(1);
}

#[cfg(test)]
mod tests {
    use pollux_nvme::features::{AsyncEvent, NumQueues};
    use pollux_nvme::identify::{IdentifyController, IdentifyNamespace};
    use pollux_nvme::log_page::GetLogPageCmd;
    use pollux_nvme::{Sqe, Status};

    use super::*;
    use crate::nvmf::command::bench::{request, Bench, BLOCKS};

    fn run_admin(
        b: &Bench,
        sqe: Sqe,
        len: usize,
        held_aers: usize,
    ) -> (Outcome, Status, u32, Vec<u8>) {
        b.run(move |r, shared, ctrl| {
            let mut req = request(sqe, len);
            let cx = AdminCtx {
                shared,
                reactor: r,
                held_aers,
            };
            let out = execute(&mut req, ctrl, &cx);
            (out, req.status, req.dw0, req.data().to_vec())
        })
    }

    fn identify_sqe(cns: u8, nsid: u32) -> Sqe {
        let mut s = Sqe::new(AdminOpcode::Identify.as_u8(), 1);
        s.set_cdw10(u32::from(cns));
        s.set_nsid(nsid);
        s
    }

    fn features_sqe(set: bool, fid: u8, cdw11: u32) -> Sqe {
        let op = if set {
            AdminOpcode::SetFeatures
        } else {
            AdminOpcode::GetFeatures
        };
        let mut s = Sqe::new(op.as_u8(), 2);
        s.set_cdw10(u32::from(fid));
        s.set_cdw11(cdw11);
        s
    }

    #[test]
    fn identify_reports_the_controller_and_its_namespace() {
        let b = Bench::new(true);
        let (out, st, _, data) = run_admin(&b, identify_sqe(1, 0), IDENTIFY_LEN, 0);
        assert_eq!(out, Outcome::Complete);
        assert!(st.is_success(), "{st:?}");
        let id = IdentifyController::parse(&data).unwrap();
        assert_eq!(id.cntlid, b.ctrl.cntlid);
        assert_eq!(id.nn, 1);

        let (_, st, _, data) = run_admin(&b, identify_sqe(0, 1), IDENTIFY_LEN, 0);
        assert!(st.is_success(), "{st:?}");
        assert_eq!(IdentifyNamespace::parse(&data).unwrap().nsze, BLOCKS);

        // NSID beyond NN, and no data buffer to answer into.
        let (out, st, _, _) = run_admin(&b, identify_sqe(0, 9), IDENTIFY_LEN, 0);
        assert_eq!(out, Outcome::Complete);
        assert!(st.same_code(&Status::INVALID_NAMESPACE_OR_FORMAT), "{st:?}");
        let (_, st, _, _) = run_admin(&b, identify_sqe(1, 0), 0, 0);
        assert!(st.same_code(&Status::DATA_SGL_LENGTH_INVALID), "{st:?}");
    }

    #[test]
    fn ana_reporting_shows_in_identify_and_the_log_pages_through_offsets() {
        use pollux_nvme::ana::{parse_ana_log, AnaState};
        let b = Bench::new(true);
        let sub = b.ctrl.subsystem().unwrap().clone();
        // Without ANA reporting: no CMIC bit, no log.
        let (_, _, _, data) = run_admin(&b, identify_sqe(1, 0), IDENTIFY_LEN, 0);
        assert_eq!(
            IdentifyController::parse(&data).unwrap().cmic & cmic::ANA,
            0
        );
        let (_, st, _, _) = run_admin(&b, GetLogPageCmd::new(0x0C, 0, 0, 4096).to_sqe(3), 4096, 0);
        assert!(st.same_code(&Status::INVALID_LOG_PAGE), "{st:?}");

        sub.ana_reporting
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let port: std::net::SocketAddr = "127.0.0.1:4420".parse().unwrap();
        b.ctrl.listener.set(port).unwrap();
        sub.publish_ana(|t| t.with_state(port, None, AnaState::NonOptimized));
        let (_, _, _, data) = run_admin(&b, identify_sqe(1, 0), IDENTIFY_LEN, 0);
        let id = IdentifyController::parse(&data).unwrap();
        assert_ne!(id.cmic & cmic::ANA, 0);
        assert_ne!(id.oaes & oaes::ANA_CHANGE, 0);
        assert!(id.mnan >= 1 && id.mnan <= id.nn, "Linux's MNAN check");
        assert!(id.anagrpmax >= 1 && id.nanagrpid == id.anagrpmax);
        assert_eq!(id.anatt, ANA_TRANSITION_SECS);
        // The spec's offsets, which Linux reads.
        assert_eq!(data[343], id.anacap);
        assert_eq!(
            u32::from_le_bytes(data[344..348].try_into().unwrap()),
            id.anagrpmax
        );
        let (_, _, _, data) = run_admin(&b, identify_sqe(0, 1), IDENTIFY_LEN, 0);
        let ns = IdentifyNamespace::parse(&data).unwrap();
        assert_eq!(ns.anagrpid, 1);
        assert_eq!(ns.rescap & 0x7e, 0x7e, "every reservation type");

        // The log in two pieces is the log in one.
        let (_, st, _, whole) =
            run_admin(&b, GetLogPageCmd::new(0x0C, 0, 0, 4096).to_sqe(3), 4096, 0);
        assert!(st.is_success(), "{st:?}");
        let (cc, groups) = parse_ana_log(&whole).unwrap();
        assert!(cc >= 1);
        assert_eq!(groups.len(), 1);
        assert_eq!(
            (groups[0].state, groups[0].nsids.clone()),
            (AnaState::NonOptimized, vec![1])
        );
        let (_, _, _, head) = run_admin(&b, GetLogPageCmd::new(0x0C, 0, 0, 16).to_sqe(3), 16, 0);
        let (_, _, _, tail) = run_admin(&b, GetLogPageCmd::new(0x0C, 0, 16, 36).to_sqe(3), 36, 0);
        assert_eq!([head, tail].concat(), whole[..52]);
        // Return Groups Only: no NSID list.
        let mut rgo = GetLogPageCmd::new(0x0C, 0, 0, 4096);
        rgo.lsp = 1;
        let (_, _, _, data) = run_admin(&b, rgo.to_sqe(3), 4096, 0);
        assert!(parse_ana_log(&data).unwrap().1[0].nsids.is_empty());
    }

    #[test]
    fn a_thousand_namespaces_are_all_in_the_ana_log() {
        use pollux_nvme::ana::parse_ana_log;
        let b = Bench::new(true);
        let sub = b.ctrl.subsystem().unwrap().clone();
        sub.ana_reporting
            .store(true, std::sync::atomic::Ordering::Relaxed);
        for nsid in 2..=1000 {
            sub.add_namespace(&b.shared.graph, "ram0", Some(nsid), None)
                .unwrap();
        }
        // Four groups, as a gateway spreading namespaces over paths does.
        for nsid in 1..=1000 {
            sub.update_namespace(nsid, |ns| {
                ns.anagrpid = nsid % 4 + 1;
                Ok(())
            })
            .unwrap();
        }
        let (_, _, _, data) = run_admin(&b, identify_sqe(1, 0), IDENTIFY_LEN, 0);
        let id = IdentifyController::parse(&data).unwrap();
        let host_buf = 16 + 32 * id.nanagrpid as usize + 4 * id.mnan as usize;
        let len = 16 + 4 * 32 + 1000 * 4;
        assert!(
            host_buf >= len,
            "Linux's buffer {host_buf} holds the log {len}"
        );
        // Read in 4 KiB pieces by offset, as a host limited by MDTS would.
        let mut page = Vec::new();
        while page.len() < len {
            let cmd = GetLogPageCmd::new(0x0C, u32::MAX, page.len() as u64, 4096);
            let (_, st, _, piece) = run_admin(&b, cmd.to_sqe(3), 4096, 0);
            assert!(st.is_success(), "{st:?}");
            page.extend_from_slice(&piece);
        }
        let (_, groups) = parse_ana_log(&page).unwrap();
        let mut nsids: Vec<u32> = groups.iter().flat_map(|g| g.nsids.clone()).collect();
        nsids.sort_unstable();
        assert_eq!(nsids, (1..=1000).collect::<Vec<u32>>());
        assert!(groups
            .iter()
            .all(|g| g.nsids.iter().all(|n| n % 4 + 1 == g.anagrpid)));
    }

    #[test]
    fn reservation_notices_are_read_one_page_at_a_time() {
        use pollux_nvme::reservation::{notice, RESERVATION_LOG_AVAILABLE};
        let b = Bench::new(true);
        b.ctrl.reservation_notice(1, notice::REGISTRATION_PREEMPTED);
        b.ctrl.reservation_notice(1, notice::RESERVATION_RELEASED);
        assert_eq!(b.ctrl.take_event(), Some(RESERVATION_LOG_AVAILABLE));
        assert_eq!(b.ctrl.take_event(), None, "one event until the log is read");
        let read = |b: &Bench| {
            let (_, st, _, d) = run_admin(
                b,
                GetLogPageCmd::new(0x80, u32::MAX, 0, 64).to_sqe(3),
                64,
                0,
            );
            assert!(st.is_success(), "{st:?}");
            (
                u64::from_le_bytes(d[..8].try_into().unwrap()),
                d[8],
                d[9],
                d[12],
            )
        };
        assert_eq!(read(&b), (1, notice::REGISTRATION_PREEMPTED, 1, 1));
        assert_eq!(read(&b), (2, notice::RESERVATION_RELEASED, 0, 1));
        assert_eq!(read(&b), (0, notice::EMPTY, 0, 0));
        b.ctrl.reservation_notice(1, notice::RESERVATION_PREEMPTED);
        assert!(b.ctrl.has_event(), "re-armed by reading the log empty");
    }

    #[test]
    fn ana_change_notice_waits_for_the_host_to_read_the_log() {
        let b = Bench::new(true);
        b.ctrl.ana_changed();
        assert!(!b.ctrl.has_event(), "not enabled");
        b.ctrl.state().aec = aec::ANA_CHANGE;
        b.ctrl.ana_changed();
        b.ctrl.ana_changed();
        assert_eq!(b.ctrl.take_event(), Some(pollux_nvme::ana::ANA_CHANGED));
        assert_eq!(b.ctrl.take_event(), None, "masked until the log is read");
        b.ctrl.state().ana_notice_masked = false;
        b.ctrl.ana_changed();
        assert!(b.ctrl.has_event());
    }

    #[test]
    fn admin_commands_wait_for_cc_enable() {
        let b = Bench::new(false);
        let (_, st, _, _) = run_admin(&b, identify_sqe(1, 0), IDENTIFY_LEN, 0);
        assert!(st.same_code(&Status::COMMAND_SEQUENCE_ERROR), "{st:?}");
    }

    #[test]
    fn get_and_set_features_keep_controller_state() {
        let b = Bench::new(true);
        // Number of Queues: granted at most what the options allow.
        let ask = NumQueues { nsq: 3, ncq: 5 }.to_dword();
        let (_, st, dw0, _) = run_admin(&b, features_sqe(true, 0x07, ask), 0, 0);
        assert!(st.is_success(), "{st:?}");
        assert_eq!(NumQueues::from_dword(dw0), NumQueues { nsq: 3, ncq: 3 });
        assert_eq!(b.ctrl.state().nq_granted, Some(3));
        let (_, _, dw0, _) = run_admin(&b, features_sqe(false, 0x07, 0), 0, 0);
        assert_eq!(NumQueues::from_dword(dw0), NumQueues { nsq: 3, ncq: 3 });
        // Volatile write cache off, then read back.
        let (_, st, _, _) = run_admin(&b, features_sqe(true, 0x06, 0), 0, 0);
        assert!(st.is_success());
        let (_, _, dw0, _) = run_admin(&b, features_sqe(false, 0x06, 0), 0, 0);
        assert_eq!(dw0, 0);
        // Saving is not supported; an unknown feature is an invalid field.
        let mut save = features_sqe(true, 0x06, 1);
        save.set_cdw10(0x06 | 1 << 31);
        let (_, st, _, _) = run_admin(&b, save, 0, 0);
        assert!(st.same_code(&Status::FEATURE_NOT_SAVEABLE), "{st:?}");
        let (_, st, _, _) = run_admin(&b, features_sqe(false, 0x7f, 0), 0, 0);
        assert!(st.same_code(&Status::INVALID_FIELD), "{st:?}");
        // The host ID comes back as Connect gave it.
        let (_, st, _, data) = run_admin(&b, features_sqe(false, 0x81, 1), 16, 0);
        assert!(st.is_success(), "{st:?}");
        assert_eq!(data, [7; 16]);
    }

    #[test]
    fn get_log_page_stays_inside_the_page() {
        let b = Bench::new(true);
        // SMART / Health (02h) is 512 bytes: a longer read is zero padded,
        // an offset past its end and a misaligned offset are invalid.
        let (_, st, _, data) =
            run_admin(&b, GetLogPageCmd::new(0x02, 0, 0, 1024).to_sqe(3), 1024, 0);
        assert!(st.is_success(), "{st:?}");
        assert!(data[512..].iter().all(|&x| x == 0));
        let (_, st, _, _) = run_admin(&b, GetLogPageCmd::new(0x02, 0, 516, 4).to_sqe(3), 4, 0);
        assert!(st.same_code(&Status::INVALID_FIELD), "{st:?}");
        let (_, st, _, _) = run_admin(&b, GetLogPageCmd::new(0x02, 0, 2, 4).to_sqe(3), 4, 0);
        assert!(st.same_code(&Status::INVALID_FIELD), "{st:?}");
        // The discovery log is for discovery controllers only.
        let (_, st, _, _) = run_admin(&b, GetLogPageCmd::new(0x70, 0, 0, 1024).to_sqe(3), 1024, 0);
        assert!(st.same_code(&Status::INVALID_LOG_PAGE), "{st:?}");
    }

    #[test]
    fn aer_is_held_up_to_the_limit_and_completes_with_the_event() {
        let b = Bench::new(true);
        let aer = Sqe::new(AdminOpcode::AsyncEventRequest.as_u8(), 4);
        let (out, st, _, _) = run_admin(&b, aer, 0, 0);
        assert_eq!(out, Outcome::HoldAer);
        assert!(st.is_success());
        let (out, st, _, _) = run_admin(&b, aer, 0, AER_LIMIT);
        assert_eq!(out, Outcome::Complete);
        assert!(st.same_code(&Status::AER_LIMIT_EXCEEDED), "{st:?}");
        let mut req = request(aer, 0);
        complete_aer(&mut req, AsyncEvent::NS_ATTR_CHANGED);
        assert_eq!(req.dw0, AsyncEvent::NS_ATTR_CHANGED.to_dw0());
        assert!(req.status.is_success());
    }
}
