//! Subsystems (NQN, identity, namespaces as graph roots, host allow list,
//! listeners) and the discovery subsystem's log page.

use std::net::SocketAddr;

use pollux_graph::{Graph, RootId};
use pollux_nvme::fabrics::Nqn;
use pollux_nvme::log_page::{adrfam, subtype, treq, write_discovery_log, DiscoveryLogEntry};

use crate::config::NvmfSubsystemConfig;

/// A namespace: an NSID bound to a graph root over a bdev.
#[derive(Debug)]
pub struct Namespace {
    /// 1-based namespace ID.
    pub nsid: u32,
    /// The bdev it exports.
    pub bdev: String,
    /// The root I/O is submitted to.
    pub root: RootId,
    /// The root's name in the graph (`nvmf:<nqn>:<nsid>`).
    pub root_name: String,
    /// Namespace globally unique identifier, stable across restarts
    /// (derived from NQN and NSID), so multipath hosts recognise it.
    pub nguid: [u8; 16],
}

/// An NVM subsystem.
#[derive(Debug)]
pub struct Subsystem {
    /// Subsystem NQN.
    pub nqn: String,
    /// Serial number.
    pub serial: String,
    /// Model number.
    pub model: String,
    /// Namespaces, NSID order.
    pub namespaces: Vec<Namespace>,
    /// Any host may connect.
    pub allow_any_host: bool,
    /// Allowed host NQNs otherwise.
    pub hosts: Vec<String>,
    /// Addresses actually bound for this subsystem (a configured port 0
    /// becomes the ephemeral port picked at bind time).
    pub ports: Vec<SocketAddr>,
}

/// Errors building subsystems.
#[derive(Debug, thiserror::Error)]
pub enum SubsystemError {
    /// A namespace's root could not be added.
    #[error("subsystem {nqn}: namespace {nsid} (bdev {bdev:?}): {source}")]
    Root {
        /// Subsystem.
        nqn: String,
        /// NSID.
        nsid: u32,
        /// Bdev.
        bdev: String,
        /// Why (boxed: the error is rare and large).
        source: Box<pollux_graph::GraphError>,
    },
}

fn hash64(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl Subsystem {
    /// Creates the subsystem's graph roots, one per namespace.
    pub fn build(
        cfg: &NvmfSubsystemConfig,
        graph: &Graph,
        ports: Vec<SocketAddr>,
    ) -> Result<Subsystem, SubsystemError> {
        let mut namespaces = Vec::with_capacity(cfg.namespaces.len());
        for (i, bdev) in cfg.namespaces.iter().enumerate() {
            let nsid = i as u32 + 1;
            let root_name = format!("nvmf:{}:{}", cfg.nqn, nsid);
            let root = graph
                .add_root(&root_name, bdev)
                .map_err(|source| SubsystemError::Root {
                    nqn: cfg.nqn.clone(),
                    nsid,
                    bdev: bdev.clone(),
                    source: Box::new(source),
                })?;
            let key = format!("{}#{}", cfg.nqn, nsid);
            let a = hash64(1, key.as_bytes());
            let b = hash64(2, key.as_bytes());
            let mut nguid = [0u8; 16];
            nguid[..8].copy_from_slice(&a.to_be_bytes());
            nguid[8..].copy_from_slice(&b.to_be_bytes());
            namespaces.push(Namespace {
                nsid,
                bdev: bdev.clone(),
                root,
                root_name,
                nguid,
            });
        }
        Ok(Subsystem {
            nqn: cfg.nqn.clone(),
            serial: cfg.serial.clone(),
            model: cfg.model.clone(),
            namespaces,
            allow_any_host: cfg.allow_any_host,
            hosts: cfg.hosts.clone(),
            ports,
        })
    }

    /// Removes the namespaces' roots (I/O already submitted completes).
    pub fn remove_roots(&self, graph: &Graph) {
        for ns in &self.namespaces {
            let _ = graph.remove_root(&ns.root_name);
        }
    }

    /// Whether `hostnqn` may connect.
    pub fn host_allowed(&self, hostnqn: &str) -> bool {
        self.allow_any_host || self.hosts.iter().any(|h| h == hostnqn)
    }

    /// The namespace with this NSID.
    pub fn namespace(&self, nsid: u32) -> Option<&Namespace> {
        let i = usize::try_from(nsid.checked_sub(1)?).ok()?;
        self.namespaces.get(i)
    }

    /// Number of namespaces (Identify Controller NN: the highest NSID).
    pub fn nn(&self) -> u32 {
        self.namespaces.len() as u32
    }

    /// Whether this subsystem is reachable through `port`.
    pub fn listens_on(&self, port: SocketAddr) -> bool {
        self.ports.contains(&port)
    }
}

/// Index of `port` in the target's listener list, reported as PORTID.
fn port_id(all_ports: &[SocketAddr], port: &SocketAddr) -> u16 {
    all_ports.iter().position(|p| p == port).unwrap_or(0) as u16
}

/// The discovery log page for `hostnqn`: one entry per (subsystem the host
/// may use, listener of that subsystem).
pub fn discovery_log(
    subsystems: &[std::sync::Arc<Subsystem>],
    all_ports: &[SocketAddr],
    hostnqn: &str,
) -> Vec<u8> {
    let mut entries = Vec::new();
    for s in subsystems.iter().filter(|s| s.host_allowed(hostnqn)) {
        let Ok(nqn) = Nqn::new(&s.nqn) else { continue };
        for port in &s.ports {
            let fam = if port.is_ipv4() {
                adrfam::IPV4
            } else {
                adrfam::IPV6
            };
            let mut e = DiscoveryLogEntry::tcp(
                subtype::NVME,
                fam,
                port_id(all_ports, port),
                &port.ip().to_string(),
                &port.port().to_string(),
                nqn,
            );
            e.treq = treq::SECURE_NOT_REQUIRED;
            e.asqsz = super::ADMIN_QUEUE_DEPTH as u16;
            entries.push(e);
        }
    }
    let mut out = vec![0u8; 1024 * (entries.len() + 1)];
    // Cannot fail: `out` is sized for the header plus every entry.
    let _ = write_discovery_log(DISCOVERY_GENCTR, &entries, &mut out);
    out
}

/// Discovery log generation counter. Subsystems are fixed at start, so
/// the log never changes while the daemon runs.
const DISCOVERY_GENCTR: u64 = 1;
