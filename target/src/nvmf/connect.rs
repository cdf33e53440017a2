//! Fabrics Connect: the first command of every queue pair. It creates the
//! controller (admin queue) or joins one (I/O queue) and moves the queue
//! pair to its phase, so it works on the connection, unlike the admin and
//! I/O commands that follow (`admin`, `io_cmd`), which work on a request
//! and its controller.

use std::sync::Arc;
use std::time::Duration;

use pollux_nvme::fabrics::{self, ConnectData, FabricsCmd, DISCOVERY_NQN};
use pollux_nvme::Status;
use pollux_poller::Reactor;

use super::admin::io_queues;
use super::auth::QpairAuth;
use super::conn::Conn;
use super::controller::{Controller, CtrlKind};
use super::phase::QueuePhase;

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
                if self.auth.is_some() {
                    req.dw0 |= pollux_nvme::auth::CONNECT_AUTHREQ_ATR;
                }
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
        let sqe = self.reqs[slot as usize].sqe;
        let cmd = match FabricsCmd::parse(&sqe) {
            Ok(FabricsCmd::Connect(c)) => c,
            _ => return Err((Status::COMMAND_SEQUENCE_ERROR.with_dnr(), 0)),
        };
        if cmd.recfmt != 0 {
            return Err((Status::CONNECT_INCOMPATIBLE_FORMAT.with_dnr(), 0));
        }
        let data = ConnectData::parse(self.reqs[slot as usize].data())
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
        // A host with a DH-HMAC-CHAP key must authenticate every queue.
        let keys = match &kind {
            CtrlKind::Io(sub) => sub.access().dhchap.get(&hostnqn).cloned(),
            CtrlKind::Discovery => None,
        };
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
            let _ = ctrl.listener.set(self.port);
            if let Some(sub) = ctrl.subsystem() {
                sub.register_controller(&ctrl);
            }
            self.auth = keys.map(|k| Box::new(QpairAuth::new(k, &hostnqn, &subnqn, 0, kato)));
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
        let kato = ctrl.state().kato_ms;
        self.auth = keys.map(|k| Box::new(QpairAuth::new(k, &hostnqn, &subnqn, cmd.qid, kato)));
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
}
