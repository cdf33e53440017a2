//! Read-only views of live controllers for the control plane
//! (`nvmf_subsystem_get_controllers`), kept apart from the data path.

use super::{NvmfError, NvmfTarget};

/// One connected controller, as the control plane reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerInfo {
    /// Controller ID Connect returned.
    pub cntlid: u16,
    /// Host NQN from the admin Connect (empty when the host sent none).
    pub hostnqn: String,
    /// Host identifier from the admin Connect.
    pub hostid: [u8; 16],
    /// Queue pairs connected: the admin queue plus each I/O queue.
    pub queues: usize,
}

impl NvmfTarget {
    /// The live I/O controllers of subsystem `nqn`, by cntlid.
    pub fn subsystem_controllers(&self, nqn: &str) -> Result<Vec<ControllerInfo>, NvmfError> {
        self.get(nqn)?;
        // Lock order as in `connections`: the table, then each controller.
        let mut list: Vec<ControllerInfo> = self
            .shared
            .controllers()
            .of_subsystem(nqn)
            .iter()
            .filter(|c| !c.is_dead())
            .map(|c| ControllerInfo {
                cntlid: c.cntlid,
                hostnqn: c.hostnqn.clone(),
                hostid: c.hostid,
                queues: 1 + c.state().io_qids.len(),
            })
            .collect();
        list.sort_by_key(|c| c.cntlid);
        Ok(list)
    }
}
