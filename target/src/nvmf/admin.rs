//! Fabrics Connect and the admin command set: Identify, Get Log Page,
//! Get/Set Features, Asynchronous Event Request, Keep Alive, Abort,
//! Property Get/Set.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pollux_nvme::fabrics::{
    self, property, Cap, Cc, ConnectData, FabricsCmd, PropertySize, CAP_CSS_NVM, DISCOVERY_NQN,
    FABRICS_OPCODE,
};
use pollux_nvme::features::{aec, FeatureId, FeaturesCmd, NumQueues, Select};
use pollux_nvme::identify::{
    self, ascii_field, cmic, cntrltype, ctratt, dlfeat, lpa, oaes, oncs, sgls, vwc, Cns,
    IdentifyCmd, IdentifyController, IdentifyNamespace, NsIdDescriptor, IDENTIFY_LEN,
};
use pollux_nvme::log_page::{
    effects, write_changed_ns_list, CommandEffectsLog, FirmwareSlotLog, GetLogPageCmd, LogPageId,
    SmartLog, CHANGED_NS_LIST_LEN,
};
use pollux_nvme::opcode::{AdminOpcode, IoOpcode};
use pollux_nvme::Status;
use pollux_poller::Reactor;

use super::conn::Conn;
use super::controller::{Controller, CtrlKind};
use super::phase::QueuePhase;
use super::request::ReqState;
use super::subsystem::discovery_log;

/// Reported NVMe version: 1.4, so hosts use only the Identify CNS values
/// this target implements (00h-03h, no I/O command set CNS).
const NVME_VERSION: u32 = fabrics::version(1, 4, 0);
/// Outstanding AERs accepted (AERL is 0-based): Linux sends one, SPDK up
/// to four.
const AER_LIMIT: usize = 4;
/// Aborts accepted at a time (ACL, 0-based).
const ABORT_LIMIT: u8 = 4;
/// CAP.TO in 500 ms units: how long a host waits for CSTS.RDY. Ours flips
/// at once; 15 s is what Linux's own target reports.
const CAP_TIMEOUT: u8 = 30;
/// Model number of discovery controllers.
const DISCOVERY_MODEL: &str = "Pollux Discovery";

fn invalid_param(ipo: u16, in_data: bool) -> (Status, u32) {
    (
        Status::CONNECT_INVALID_PARAMETERS.with_dnr(),
        fabrics::connect_invalid_param_dw0(ipo, in_data),
    )
}

impl Conn {
    /// Executes the first command of a queue, which must be Connect.
    pub(super) fn exec_connect(&mut self, r: &Reactor, slot: u16) {
        let res = self.connect(r, slot);
        let req = &mut self.reqs[slot as usize];
        match res {
            Ok(cntlid) => {
                req.dw0 = fabrics::connect_success_dw0(cntlid);
                // Connect was entry 0 of the queue it created (SQSIZE was
                // unknown when it arrived): the head is now past it.
                if !self.sqflow_disabled {
                    self.sqhd = 1;
                }
            }
            Err((status, dw0)) => {
                req.dw0 = dw0;
                req.fail(status);
            }
        }
    }

    fn connect(&mut self, r: &Reactor, slot: u16) -> Result<u16, (Status, u32)> {
        let sqe = self.sqe(slot);
        let cmd = match FabricsCmd::parse(&sqe) {
            Ok(FabricsCmd::Connect(c)) => c,
            _ => return Err((Status::COMMAND_SEQUENCE_ERROR.with_dnr(), 0)),
        };
        if cmd.recfmt != 0 {
            return Err((Status::CONNECT_INCOMPATIBLE_FORMAT.with_dnr(), 0));
        }
        let data = ConnectData::parse(self.h2c_data(slot))
            .map_err(|_| (Status::DATA_SGL_LENGTH_INVALID.with_dnr(), 0))?;
        let subnqn = data
            .subnqn
            .as_str()
            .map_err(|_| invalid_param(ConnectData::SUBNQN_OFFSET, true))?
            .to_owned();
        // An empty HOSTNQN (all zeroes: SPDK's initiator without a
        // `hostnqn`) is well-formed, as the Linux and SPDK targets take it;
        // it only ever passes "any host". Unterminated or oversized fields
        // are refused here.
        let hostnqn = data
            .hostnqn
            .as_str()
            .map_err(|_| invalid_param(ConnectData::HOSTNQN_OFFSET, true))?
            .to_owned();
        // The admin queue's limits come from the options this connection
        // took; an I/O queue's from its controller's (checked below).
        if cmd.qid == 0 {
            self.check_sqsize(cmd.sqsize, self.opts.max_aq_depth)?;
        }
        let kind = if subnqn == DISCOVERY_NQN {
            if cmd.qid != 0 {
                return Err(invalid_param(fabrics::ConnectCmd::QID_OFFSET, false));
            }
            CtrlKind::Discovery
        } else {
            let Some(sub) = self.shared.subsystem(&subnqn) else {
                tracing::warn!(peer = %self.peer, subnqn, "nvmf: Connect to unknown subsystem");
                return Err(invalid_param(ConnectData::SUBNQN_OFFSET, true));
            };
            if !sub.listens_on(self.port) {
                tracing::warn!(peer = %self.peer, subnqn, port = %self.port, "nvmf: subsystem not exported here");
                return Err(invalid_param(ConnectData::SUBNQN_OFFSET, true));
            }
            if !sub.host_allowed(&hostnqn) {
                tracing::warn!(peer = %self.peer, subnqn, hostnqn, "nvmf: host not allowed");
                return Err((Status::CONNECT_INVALID_HOST.with_dnr(), 0));
            }
            CtrlKind::Io(sub)
        };
        let depth = usize::from(cmd.sqsize) + 1;
        if cmd.qid == 0 {
            if data.cntlid != ConnectData::CNTLID_DYNAMIC && data.cntlid != 0xFFFE {
                return Err(invalid_param(ConnectData::CNTLID_OFFSET, true));
            }
            let kato = self.opts.kato(cmd.kato);
            let created = self.shared.controllers().create(
                kind,
                hostnqn.clone(),
                data.hostid,
                kato,
                self.opts.clone(),
            );
            let Some(ctrl) = created else {
                return Err((Status::CONNECT_CONTROLLER_BUSY, 0));
            };
            tracing::info!(peer = %self.peer, cntlid = ctrl.cntlid, subnqn, hostnqn,
                kato_ms = kato, "nvmf: controller created");
            self.sqflow_disabled = cmd.cattr & fabrics::ConnectCmd::CATTR_SQ_FLOW_DISABLE != 0;
            self.start_keep_alive(r, &ctrl);
            self.sqsize = cmd.sqsize;
            self.set_queue_depth(depth);
            let cntlid = ctrl.cntlid;
            self.phase = QueuePhase::Admin(ctrl);
            return Ok(cntlid);
        }
        let Some(ctrl) = self.shared.controllers().get(data.cntlid) else {
            return Err(invalid_param(ConnectData::CNTLID_OFFSET, true));
        };
        if ctrl.is_dead() {
            return Err(invalid_param(ConnectData::CNTLID_OFFSET, true));
        }
        // Each field that disagrees with the admin queue's is named, as
        // SPDK does; an empty HOSTNQN matches only an empty one.
        if ctrl.subsystem().is_none_or(|s| s.nqn != subnqn) {
            return Err(invalid_param(ConnectData::SUBNQN_OFFSET, true));
        }
        if ctrl.hostnqn != hostnqn {
            tracing::warn!(peer = %self.peer, cntlid = ctrl.cntlid, hostnqn, "nvmf: I/O queue Connect with another HOSTNQN");
            return Err(invalid_param(ConnectData::HOSTNQN_OFFSET, true));
        }
        self.check_sqsize(cmd.sqsize, ctrl.opts.max_queue_depth)?;
        {
            let mut st = ctrl.state();
            if !(st.cc.enabled() && st.csts.rdy() == 1) {
                return Err(invalid_param(ConnectData::CNTLID_OFFSET, true));
            }
            let max_qid = st
                .nq_granted
                .map_or(io_queues(&ctrl), |g| g.saturating_add(1));
            if cmd.qid > max_qid || st.io_qids.contains(&cmd.qid) {
                tracing::warn!(peer = %self.peer, qid = cmd.qid, max_qid, "nvmf: Connect with bad QID");
                return Err(invalid_param(fabrics::ConnectCmd::QID_OFFSET, false));
            }
            st.io_qids.push(cmd.qid);
        }
        tracing::debug!(peer = %self.peer, cntlid = ctrl.cntlid, qid = cmd.qid, depth, "nvmf: I/O queue connected");
        self.sqflow_disabled = cmd.cattr & fabrics::ConnectCmd::CATTR_SQ_FLOW_DISABLE != 0;
        // The queue follows its controller: the in-capsule size and MDTS
        // that Identify reported.
        self.opts = ctrl.opts.clone();
        self.set_in_capsule_limit(ctrl.opts.in_capsule_data_size);
        self.sqsize = cmd.sqsize;
        self.set_queue_depth(depth);
        let cntlid = ctrl.cntlid;
        self.phase = QueuePhase::Io { ctrl, qid: cmd.qid };
        Ok(cntlid)
    }

    /// SQSIZE is 0-based and a queue needs at least two entries.
    fn check_sqsize(&self, sqsize: u16, max_depth: u32) -> Result<(), (Status, u32)> {
        if sqsize == 0 || u32::from(sqsize) + 1 > max_depth {
            tracing::warn!(peer = %self.peer, sqsize, max_depth, "nvmf: Connect with bad SQSIZE");
            return Err(invalid_param(fabrics::ConnectCmd::SQSIZE_OFFSET, false));
        }
        Ok(())
    }

    /// KATO enforcement: a timer on this (the admin queue's) reactor tears
    /// the controller down when no Keep Alive arrived within KATO.
    fn start_keep_alive(&mut self, r: &Reactor, ctrl: &Arc<Controller>) {
        let ctrl = ctrl.clone();
        let shared = self.shared.clone();
        let period = Duration::from_millis(250);
        self.ka_timer = Some(r.add_periodic(period, move |_r| {
            if ctrl.is_dead() {
                return false;
            }
            let (kato, last) = {
                let st = ctrl.state();
                (st.kato_ms, st.last_keep_alive)
            };
            if kato != 0 && last.elapsed() > Duration::from_millis(u64::from(kato)) {
                tracing::warn!(
                    cntlid = ctrl.cntlid,
                    kato_ms = kato,
                    "nvmf: keep alive timeout, tearing the controller down"
                );
                shared.controllers().remove(ctrl.cntlid);
                return false;
            }
            true
        }));
    }

    /// Completes held AERs while events are pending.
    pub(super) fn complete_aers(&mut self, r: &Reactor, ctrl: &Controller) {
        while !self.aers.is_empty() {
            let Some(ev) = ctrl.take_event() else { break };
            let slot = self.aers.remove(0);
            let req = &mut self.reqs[slot as usize];
            if req.state() != ReqState::Executing {
                continue;
            }
            req.dw0 = ev.to_dw0();
            req.set_state(&self.states, ReqState::Executed);
            self.process(r, slot);
        }
    }

    /// Executes an admin command. Returns true if it is held (AER).
    pub(super) fn exec_admin(&mut self, r: &Reactor, slot: u16) -> bool {
        let QueuePhase::Admin(ctrl) = &self.phase else {
            self.fail(slot, Status::COMMAND_SEQUENCE_ERROR.with_dnr());
            return false;
        };
        let ctrl = ctrl.clone();
        let sqe = self.sqe(slot);
        // Any admin command proves the host alive (it is cheap here: the
        // admin queue is control path).
        ctrl.state().last_keep_alive = Instant::now();
        if sqe.opcode() == FABRICS_OPCODE {
            self.exec_fabrics_admin(&ctrl, slot);
            return false;
        }
        let Some(op) = AdminOpcode::from_u8(sqe.opcode()) else {
            self.fail(slot, Status::INVALID_OPCODE.with_dnr());
            return false;
        };
        if !ctrl.is_ready() {
            self.fail(slot, Status::COMMAND_SEQUENCE_ERROR.with_dnr());
            return false;
        }
        match op {
            AdminOpcode::Identify => self.identify(r, &ctrl, slot),
            AdminOpcode::GetLogPage => self.get_log_page(&ctrl, slot),
            AdminOpcode::GetFeatures | AdminOpcode::SetFeatures => self.features(&ctrl, slot),
            AdminOpcode::AsyncEventRequest => {
                if self.aers.len() >= AER_LIMIT {
                    self.fail(slot, Status::AER_LIMIT_EXCEEDED.with_dnr());
                    return false;
                }
                self.aers.push(slot);
                if ctrl.has_event() {
                    // Mark it held first so completion finds it executing.
                    self.reqs[slot as usize].set_state(&self.states, ReqState::Executing);
                    self.complete_aers(r, &ctrl);
                    return self.reqs[slot as usize].state() == ReqState::Executing;
                }
                return true;
            }
            AdminOpcode::KeepAlive => {}
            AdminOpcode::Abort => {
                // Commands run to completion quickly; report "not aborted"
                // (dword 0 bit 0 set), which every host handles.
                self.reqs[slot as usize].dw0 = 1;
            }
            _ => self.fail(slot, Status::INVALID_OPCODE.with_dnr()),
        }
        false
    }

    fn exec_fabrics_admin(&mut self, ctrl: &Controller, slot: u16) {
        let sqe = self.sqe(slot);
        let req = &mut self.reqs[slot as usize];
        match FabricsCmd::parse(&sqe) {
            Ok(FabricsCmd::PropertyGet(p)) => {
                let Some(size) = property::size(p.offset) else {
                    return req.fail(Status::INVALID_FIELD.with_dnr());
                };
                if size != p.size.bytes() {
                    return req.fail(Status::INVALID_FIELD.with_dnr());
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
            }
            Ok(FabricsCmd::PropertySet(p)) => match p.offset {
                property::CC if p.size == PropertySize::Four => {
                    let cc = Cc(p.value as u32);
                    tracing::debug!(cntlid = ctrl.cntlid, cc = cc.0, "nvmf: CC write");
                    ctrl.write_cc(cc);
                }
                // NSSR: a subsystem reset means nothing to a software target.
                property::NSSR if p.size == PropertySize::Four => {}
                _ => req.fail(Status::INVALID_FIELD.with_dnr()),
            },
            Ok(FabricsCmd::Connect(_)) => req.fail(Status::COMMAND_SEQUENCE_ERROR.with_dnr()),
            Ok(FabricsCmd::Disconnect { .. }) => req.fail(Status::INVALID_FIELD.with_dnr()),
            Ok(FabricsCmd::Other { .. }) => req.fail(Status::INVALID_OPCODE.with_dnr()),
            Err(_) => req.fail(Status::INVALID_FIELD.with_dnr()),
        }
    }

    fn identify(&mut self, r: &Reactor, ctrl: &Controller, slot: u16) {
        let sqe = self.sqe(slot);
        let Ok(cmd) = IdentifyCmd::parse(&sqe) else {
            return self.fail(slot, Status::INVALID_FIELD.with_dnr());
        };
        if self.reqs[slot as usize].buf.is_none() {
            return self.fail(slot, Status::DATA_SGL_LENGTH_INVALID.with_dnr());
        }
        let mut out = [0u8; IDENTIFY_LEN];
        let sub = ctrl.subsystem();
        match (cmd.cns(), sub) {
            (Some(Cns::Controller), _) => identify_controller(ctrl).write(&mut out),
            (Some(Cns::Namespace), Some(sub)) => {
                if cmd.nsid == 0xFFFF_FFFF {
                    // Capabilities common to all namespaces: none beyond
                    // the defaults, reported as zeroes.
                } else if let Some(ns) = sub.namespace(cmd.nsid) {
                    let geo = self.shared.graph.snapshot(r).root_geometry(ns.root);
                    if let Some(geo) = geo {
                        let lbads = geo.block_size.trailing_zeros() as u8;
                        let mut id = IdentifyNamespace::simple(geo.block_count, lbads);
                        // Deallocated blocks read as zeroes on every node
                        // we ship.
                        id.dlfeat = dlfeat::READ_ZEROES;
                        // Several controllers (hosts, paths) may share it.
                        id.nmic = 1;
                        id.nguid = ns.nguid;
                        id.write(&mut out);
                    }
                } else if cmd.nsid != 0 && cmd.nsid <= sub.nn() {
                    // An inactive NSID within NN (removed, or not yet
                    // added): all zeroes, as the spec asks.
                } else {
                    return self.fail(slot, Status::INVALID_NAMESPACE_OR_FORMAT.with_dnr());
                }
            }
            (Some(Cns::ActiveNamespaceList), Some(sub)) => {
                if cmd.nsid >= 0xFFFF_FFFE {
                    return self.fail(slot, Status::INVALID_NAMESPACE_OR_FORMAT.with_dnr());
                }
                let nsids: Vec<u32> = sub.namespaces().iter().map(|n| n.nsid).collect();
                identify::write_active_ns_list(&nsids, cmd.nsid, &mut out);
            }
            (Some(Cns::NamespaceDescriptorList), Some(sub)) => {
                let Some(ns) = sub.namespace(cmd.nsid) else {
                    return self.fail(slot, Status::INVALID_NAMESPACE_OR_FORMAT.with_dnr());
                };
                let uuid = ns.uuid();
                let descs = [NsIdDescriptor::Nguid(ns.nguid), NsIdDescriptor::Uuid(uuid)];
                if identify::write_ns_desc_list(&descs, &mut out).is_err() {
                    return self.fail(slot, Status::INTERNAL_ERROR);
                }
            }
            // I/O command set specific structures for the NVM set: nothing
            // beyond the base structures, i.e. all zeroes.
            (Some(Cns::CsController), Some(_)) if cmd.csi == 0 => {}
            (Some(Cns::CsNamespace), Some(sub)) if cmd.csi == 0 => {
                if sub.namespace(cmd.nsid).is_none() {
                    return self.fail(slot, Status::INVALID_NAMESPACE_OR_FORMAT.with_dnr());
                }
            }
            _ => return self.fail(slot, Status::INVALID_FIELD.with_dnr()),
        }
        self.put_c2h(slot, &out);
    }

    fn get_log_page(&mut self, ctrl: &Controller, slot: u16) {
        let sqe = self.sqe(slot);
        let Ok(cmd) = GetLogPageCmd::parse(&sqe) else {
            return self.fail(slot, Status::INVALID_FIELD.with_dnr());
        };
        let discovery = matches!(ctrl.kind, CtrlKind::Discovery);
        let page: Vec<u8> = match (cmd.log_page_id(), discovery) {
            (Some(LogPageId::Discovery), true) => discovery_log(
                &self.shared.subsystem_list(),
                &self.shared.port_list(),
                &ctrl.hostnqn,
                ctrl.opts.max_aq_depth,
                self.shared
                    .discovery_gen
                    .load(std::sync::atomic::Ordering::Acquire),
            ),
            (Some(LogPageId::ErrorInformation), _) => vec![0u8; 64],
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
                log.iocs[IoOpcode::Read.as_u8() as usize] = effects::CSUPP;
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
            _ => return self.fail(slot, Status::INVALID_LOG_PAGE.with_dnr()),
        };
        let range = match cmd.range(page.len()) {
            Ok(r) => r,
            Err(status) => return self.fail(slot, status),
        };
        self.put_c2h(slot, &page[range.start..range.end]);
    }

    fn features(&mut self, ctrl: &Controller, slot: u16) {
        let sqe = self.sqe(slot);
        let Ok(f) = FeaturesCmd::parse(&sqe) else {
            return self.fail(slot, Status::INVALID_FIELD.with_dnr());
        };
        if let Select::Reserved(_) = f.sel {
            return self.fail(slot, Status::INVALID_FIELD.with_dnr());
        }
        if f.save {
            return self.fail(slot, Status::FEATURE_NOT_SAVEABLE.with_dnr());
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
                        return self.fail(slot, Status::INVALID_FIELD.with_dnr());
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
                        return self.fail(slot, Status::INVALID_FIELD.with_dnr());
                    }
                    let granted = req.nsq.min(req.ncq).min(max);
                    st.nq_granted = Some(granted);
                }
                let g = st.nq_granted.unwrap_or(max);
                NumQueues { nsq: g, ncq: g }.to_dword()
            }
            Some(FeatureId::AsyncEventConfig) => {
                if f.set {
                    st.aec = f.cdw11 & (aec::NS_ATTR | aec::DISCOVERY_CHANGE);
                }
                st.aec
            }
            Some(FeatureId::HostIdentifier) if !f.set => {
                // Bit 0 of CDW11 (EXHID) asks for the 128-bit form, the
                // only one we keep.
                drop(st);
                if f.cdw11 & 1 == 0 || self.reqs[slot as usize].buf.is_none() {
                    return self.fail(slot, Status::INVALID_FIELD.with_dnr());
                }
                self.put_c2h(slot, &ctrl.hostid);
                return;
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
                return self.fail(slot, Status::INVALID_FIELD.with_dnr());
            }
        };
        drop(st);
        self.reqs[slot as usize].dw0 = dw0;
    }
}

/// I/O queues a controller may have (1-based), from its options.
fn io_queues(ctrl: &Controller) -> u16 {
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
    id.oncs = (oncs::DSM | oncs::WRITE_ZEROES) & !opts.masked_oncs;
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
