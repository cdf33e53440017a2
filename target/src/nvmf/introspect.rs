//! Read-only views of live controllers, queue pairs and listeners for the
//! control plane (`nvmf_subsystem_get_controllers`, `_get_qpairs`,
//! `_get_listeners`), kept apart from the data path.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use super::{group, NvmfError, NvmfTarget};

/// One connected controller, as the control plane reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerInfo {
    /// Controller ID Connect returned.
    pub cntlid: u16,
    /// A discovery controller (else an I/O controller).
    pub discovery: bool,
    /// Host NQN from the admin Connect (empty when the host sent none).
    pub hostnqn: String,
    /// Host identifier from the admin Connect.
    pub hostid: [u8; 16],
    /// Queue pairs connected: the admin queue plus each I/O queue.
    pub queues: usize,
}

impl NvmfTarget {
    /// The live controllers of subsystem `nqn` (of the discovery
    /// subsystem: the discovery controllers), by cntlid.
    pub fn subsystem_controllers(&self, nqn: &str) -> Result<Vec<ControllerInfo>, NvmfError> {
        let discovery = nqn == pollux_nvme::fabrics::DISCOVERY_NQN;
        if !discovery {
            self.get(nqn)?;
        }
        // Lock order as in `connections`: the table, then each controller.
        let table = self.shared.controllers();
        let ctrls = if discovery {
            table.discovery()
        } else {
            table.of_subsystem(nqn)
        };
        let mut list: Vec<ControllerInfo> = ctrls
            .iter()
            .filter(|c| !c.is_dead())
            .map(|c| ControllerInfo {
                cntlid: c.cntlid,
                discovery,
                hostnqn: c.hostnqn.clone(),
                hostid: c.hostid,
                queues: 1 + c.state().io_qids.len(),
            })
            .collect();
        drop(table);
        list.sort_by_key(|c| c.cntlid);
        Ok(list)
    }
}

/// One connected queue pair, as `nvmf_subsystem_get_qpairs` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QpairInfo {
    /// Its controller.
    pub cntlid: u16,
    /// Queue ID (0 = admin).
    pub qid: u16,
    /// SPDK's qpair state name (`enabled`, `deactivating`).
    pub state: &'static str,
    /// The reactor owning it, by core (SPDK's thread name `reactor_N`).
    pub core: usize,
    /// Host NQN of its controller.
    pub hostnqn: String,
    /// The listener it came in on.
    pub listen: SocketAddr,
    /// The host's address.
    pub peer: SocketAddr,
}

impl NvmfTarget {
    /// The connected queue pairs of subsystem `nqn` (of the discovery
    /// subsystem: the discovery controllers' admin queues), reactor by
    /// reactor (as SPDK walks its poll groups), each reactor's in slot
    /// order.
    pub fn subsystem_qpairs(&self, nqn: &str) -> Result<Vec<QpairInfo>, NvmfError> {
        let discovery = nqn == pollux_nvme::fabrics::DISCOVERY_NQN;
        if !discovery {
            self.get(nqn)?;
        }
        let found = Arc::new(Mutex::new(Vec::<(usize, Vec<QpairInfo>)>::new()));
        let (target_id, nqn_owned, out) = (self.shared.id, nqn.to_owned(), found.clone());
        self.shared.graph.handle().on_each_reactor(move |r| {
            let mut mine = Vec::new();
            group::for_each_conn(r, target_id, |c| {
                let (Some(ctrl), Some(qid)) = (c.phase.ctrl(), c.phase.qid()) else {
                    return;
                };
                let ours = match ctrl.subsystem() {
                    Some(s) => s.nqn == nqn_owned,
                    None => discovery,
                };
                if !ours {
                    return;
                }
                mine.push(QpairInfo {
                    cntlid: ctrl.cntlid,
                    qid,
                    state: if ctrl.is_dead() {
                        "deactivating"
                    } else {
                        "enabled"
                    },
                    core: r.core(),
                    hostnqn: ctrl.hostnqn.clone(),
                    listen: c.port,
                    peer: c.peer,
                });
            });
            out.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((r.index(), mine));
        });
        let mut per_reactor = std::mem::take(&mut *found.lock().unwrap_or_else(|e| e.into_inner()));
        per_reactor.sort_by_key(|(i, _)| *i);
        Ok(per_reactor.into_iter().flat_map(|(_, q)| q).collect())
    }

    /// The addresses subsystem `nqn` listens on, in the order they were
    /// added (`nvmf_subsystem_get_listeners`).
    pub fn subsystem_listeners(&self, nqn: &str) -> Result<Vec<SocketAddr>, NvmfError> {
        Ok(self.get(nqn)?.access().ports.clone())
    }
}
