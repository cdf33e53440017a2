//! Asymmetric Namespace Access: the ANA state of each (listener, ANA
//! group), as SPDK keeps it per subsystem listener, the ANA log page a
//! controller reads through its listener, and the control-plane changes
//! (`nvmf_subsystem_listener_set_ana_state`, `nvmf_subsystem_set_ns_ana_group`)
//! with their ANA Change notices.
//!
//! The table is immutable and published with the namespace table
//! (`NsTable::ana`), so the I/O path reads a namespace and its path state
//! from one snapshot, lock-free.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use pollux_nvme::ana::{write_ana_log, AnaGroup, AnaState};

use super::subsystem::{NsTable, Subsystem, SubsystemError};
use super::{NvmfError, NvmfTarget};

/// One listener's states: `all` for every group but those in `groups`.
#[derive(Debug, Clone)]
struct ListenerAna {
    port: SocketAddr,
    all: AnaState,
    groups: BTreeMap<u32, AnaState>,
}

/// The ANA states of a subsystem's listeners. A listener never set is
/// optimized for every group (SPDK's default).
#[derive(Debug, Clone, Default)]
pub struct AnaTable {
    listeners: Vec<ListenerAna>,
}

impl AnaTable {
    /// The state of group `anagrpid` through `port`.
    #[inline]
    pub fn state(&self, port: Option<SocketAddr>, anagrpid: u32) -> AnaState {
        let Some(port) = port else {
            return AnaState::Optimized;
        };
        // Subsystems have a handful of listeners: a scan beats a map.
        match self.listeners.iter().find(|l| l.port == port) {
            Some(l) => l.groups.get(&anagrpid).copied().unwrap_or(l.all),
            None => AnaState::Optimized,
        }
    }

    /// This table with group `anagrpid` (every group for `None`) of `port`
    /// in `state`.
    pub fn with_state(&self, port: SocketAddr, anagrpid: Option<u32>, state: AnaState) -> Self {
        let mut t = self.clone();
        let at = match t.listeners.iter().position(|l| l.port == port) {
            Some(i) => i,
            None => {
                t.listeners.push(ListenerAna {
                    port,
                    all: AnaState::Optimized,
                    groups: BTreeMap::new(),
                });
                t.listeners.len() - 1
            }
        };
        let l = &mut t.listeners[at];
        match anagrpid {
            None => {
                l.all = state;
                l.groups.clear();
            }
            Some(g) => {
                l.groups.insert(g, state);
            }
        }
        t
    }

    /// This table without `port` (a removed listener starts over as
    /// optimized if it is added again).
    pub fn without(&self, port: SocketAddr) -> Self {
        let mut t = self.clone();
        t.listeners.retain(|l| l.port != port);
        t
    }
}

/// The ANA log page of `sub` for a controller of `hostnqn` on `port`: one
/// descriptor per group of the namespaces the host sees, each with its
/// NSIDs unless `rgo`. Complete, however many namespaces there are; the
/// host pages through it with the log page offset.
pub fn ana_log(
    sub: &Subsystem,
    table: &NsTable,
    port: Option<SocketAddr>,
    hostnqn: &str,
    rgo: bool,
) -> Vec<u8> {
    let mut groups: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for ns in table.iter().filter(|n| n.visible_to(hostnqn)) {
        groups.entry(ns.anagrpid).or_default().push(ns.nsid);
    }
    let change_count = sub.ana_change_count.load(Ordering::Acquire);
    let groups: Vec<AnaGroup> = groups
        .into_iter()
        .map(|(anagrpid, nsids)| AnaGroup {
            anagrpid,
            change_count,
            state: table.ana.state(port, anagrpid),
            nsids,
        })
        .collect();
    write_ana_log(change_count, &groups, rgo)
}

/// Highest ANA group of a subsystem's namespaces (0 without any).
pub fn highest_group(table: &NsTable) -> u32 {
    table.iter().map(|n| n.anagrpid).max().unwrap_or(0)
}

impl NvmfTarget {
    /// Turns ANA reporting on or off (`nvmf_create_subsystem
    /// --ana-reporting`, before any host connects).
    pub fn set_ana_reporting(&self, nqn: &str, on: bool) -> Result<(), NvmfError> {
        let _c = self.control()?;
        self.get(nqn)?.ana_reporting.store(on, Ordering::Relaxed);
        Ok(())
    }

    /// `nvmf_subsystem_listener_set_ana_state`: group `anagrpid` (every
    /// group for `None`) of subsystem `nqn` is in `state` through listener
    /// `addr`; the controllers connected there get an ANA Change notice.
    pub fn set_listener_ana_state(
        &self,
        nqn: &str,
        addr: SocketAddr,
        state: AnaState,
        anagrpid: Option<u32>,
    ) -> Result<(), NvmfError> {
        let _c = self.control()?;
        let sub = self.get(nqn)?;
        if let Some(g) = anagrpid {
            let max = sub.anagrp_max();
            if g == 0 || g > max {
                return Err(SubsystemError::BadAnaGroup {
                    nqn: nqn.to_owned(),
                    anagrpid: g,
                    max,
                }
                .into());
            }
        }
        let bound = self.bound_addr(addr);
        if !sub.listens_on(bound) {
            return Err(NvmfError::NoSuchListener {
                nqn: nqn.to_owned(),
                addr,
            });
        }
        sub.publish_ana(|t| t.with_state(bound, anagrpid, state));
        tracing::info!(nqn, %bound, state = state.spdk_name(), ?anagrpid, "nvmf: ANA state set");
        let ctrls = self.shared.controllers().of_subsystem(nqn);
        for c in ctrls {
            if c.listener.get() == Some(&bound) {
                c.ana_changed();
            }
        }
        Ok(())
    }

    /// `nvmf_subsystem_set_ns_ana_group`: namespace `nsid` moves to group
    /// `anagrpid`; every controller gets an ANA Change notice and reads
    /// the new grouping from the log.
    pub fn set_ns_ana_group(&self, nqn: &str, nsid: u32, anagrpid: u32) -> Result<(), NvmfError> {
        let _c = self.control()?;
        let sub = self.get(nqn)?;
        let max = sub.anagrp_max();
        if anagrpid == 0 || anagrpid > max {
            return Err(SubsystemError::BadAnaGroup {
                nqn: nqn.to_owned(),
                anagrpid,
                max,
            }
            .into());
        }
        sub.update_namespace(nsid, |ns| {
            ns.anagrpid = anagrpid;
            Ok(())
        })?;
        sub.ana_change_count.fetch_add(1, Ordering::AcqRel);
        tracing::info!(nqn, nsid, anagrpid, "nvmf: namespace ANA group set");
        let ctrls = self.shared.controllers().of_subsystem(nqn);
        for c in ctrls {
            c.ana_changed();
        }
        Ok(())
    }

    /// The ANA state of every group in use of `nqn` through `port`, for
    /// `nvmf_get_subsystems` and `save_config` (`None` without ANA
    /// reporting).
    pub fn listener_ana_states(&self, nqn: &str, port: SocketAddr) -> Option<Vec<(u32, AnaState)>> {
        let sub = self.shared.subsystem(nqn)?;
        if !sub.ana_reporting() {
            return None;
        }
        let table = sub.namespaces();
        let max = sub.anagrp_max().max(highest_group(&table));
        Some(
            (1..=max)
                .map(|g| (g, table.ana.state(Some(port), g)))
                .collect(),
        )
    }

    /// The address a listener of `addr` is bound to (a port 0 resolved).
    fn bound_addr(&self, addr: SocketAddr) -> SocketAddr {
        super::lock(&self.listeners)
            .iter()
            .find(|l| l.requested == addr || l.bound == addr)
            .map_or(addr, |l| l.bound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_default_to_optimized_and_group_overrides_win() {
        let p1: SocketAddr = "127.0.0.1:4420".parse().unwrap();
        let p2: SocketAddr = "127.0.0.1:4421".parse().unwrap();
        let t = AnaTable::default();
        assert_eq!(t.state(Some(p1), 1), AnaState::Optimized);
        let t = t.with_state(p1, None, AnaState::Inaccessible);
        let t = t.with_state(p1, Some(2), AnaState::NonOptimized);
        assert_eq!(t.state(Some(p1), 1), AnaState::Inaccessible);
        assert_eq!(t.state(Some(p1), 2), AnaState::NonOptimized);
        assert_eq!(t.state(Some(p2), 1), AnaState::Optimized);
        // Setting every group drops the overrides.
        let t = t.with_state(p1, None, AnaState::Optimized);
        assert_eq!(t.state(Some(p1), 2), AnaState::Optimized);
        let t = t.with_state(p2, None, AnaState::Inaccessible).without(p2);
        assert_eq!(t.state(Some(p2), 1), AnaState::Optimized);
    }
}
