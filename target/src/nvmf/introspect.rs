//! Read-only views of live controllers for the control plane
//! (`nvmf_subsystem_get_controllers`), kept apart from the data path.

use super::{NvmfError, NvmfTarget};

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
