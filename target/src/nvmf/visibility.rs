//! Per-host namespace visibility (`nvmf_subsystem_add_ns --no-auto-visible`,
//! `nvmf_ns_add_host`, `nvmf_ns_remove_host`): a namespace that is not
//! auto-visible exists only for the hosts it was given to. To the others
//! it is an inactive NSID: absent from the active namespace list, zeroes
//! in Identify, Invalid Namespace for I/O. A change reaches the host's
//! controllers as a Namespace Attribute Changed notice.

use super::subsystem::SubsystemError;
use super::{NvmfError, NvmfTarget};

impl NvmfTarget {
    /// Makes namespace `nsid` of `nqn` visible to `host` (or hides it
    /// again when `visible` is false), and tells the host's controllers.
    pub fn set_ns_visible(
        &self,
        nqn: &str,
        nsid: u32,
        host: &str,
        visible: bool,
    ) -> Result<(), NvmfError> {
        let _c = self.control()?;
        let sub = self.get(nqn)?;
        sub.update_namespace(nsid, |ns| {
            let at = ns.hosts.iter().position(|h| h == host);
            match (visible, at) {
                (true, None) => ns.hosts.push(host.to_owned()),
                (false, Some(i)) => {
                    ns.hosts.remove(i);
                }
                (true, Some(_)) | (false, None) => {
                    return Err(SubsystemError::NsHost {
                        nqn: nqn.to_owned(),
                        nsid,
                        host: host.to_owned(),
                        what: if visible {
                            "already sees it"
                        } else {
                            "was not given it"
                        },
                    })
                }
            }
            Ok(())
        })?;
        tracing::info!(
            nqn,
            nsid,
            host,
            visible,
            "nvmf: namespace visibility changed"
        );
        let ctrls = self.shared.controllers().of_subsystem(nqn);
        for c in ctrls {
            if c.hostnqn == host {
                c.namespace_changed(nsid);
            }
        }
        Ok(())
    }
}
