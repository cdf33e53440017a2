//! Subsystems (NQN, identity, namespaces as graph roots, host allow list,
//! listeners) and the discovery subsystem's log page.
//!
//! Everything here can change while hosts are connected (control plane).
//! The I/O path never takes a lock for a namespace lookup: the namespace
//! table is an immutable `Arc<NsTable>` republished on every change with a
//! bumped generation; a queue pair caches the table and only re-fetches it
//! (under the control-path mutex) when the generation it reads moved.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use pollux_graph::{Graph, RootId};
use pollux_nvme::fabrics::Nqn;
use pollux_nvme::log_page::{adrfam, subtype, treq, write_discovery_log, DiscoveryLogEntry};

use crate::config::NvmfSubsystemConfig;

use super::ana::AnaTable;
use super::controller::Controller;
use super::reservation::Reservation;

/// Identify Controller NN reported by subsystems created with
/// `max_namespaces` 0 (unlimited), as SPDK (NVMF_SUBSYSTEM_DEFAULT_NAMESPACES),
/// so hosts size their namespace scans for namespaces added later.
pub const DEFAULT_MAX_NSID: u32 = 32;
/// Highest valid NSID (FFFFFFFFh is the broadcast value, FFFFFFFEh reserved).
pub const NSID_MAX: u32 = 0xFFFF_FFFE;

/// A namespace: an NSID bound to a graph root over a bdev. A change of
/// its ANA group or visibility publishes a changed copy (the reservation
/// state is shared by every copy).
#[derive(Debug, Clone)]
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
    /// (derived from NQN and NSID unless given), so multipath hosts
    /// recognise it.
    pub nguid: [u8; 16],
    /// Whether `nguid` was given by the creator (save_config replays it).
    pub nguid_given: bool,
    /// ANA group (the NSID unless given).
    pub anagrpid: u32,
    /// Visible to every allowed host; otherwise only to `hosts`.
    pub auto_visible: bool,
    /// Hosts the namespace is visible to besides (`nvmf_ns_add_host`).
    pub hosts: Vec<String>,
    /// Reservations and their persistence.
    pub resv: Arc<Reservation>,
}

impl Namespace {
    /// The namespace UUID reported in the NS Identification Descriptor
    /// list: the NGUID with RFC 4122 variant and version 4 bits set.
    pub fn uuid(&self) -> [u8; 16] {
        ns_uuid(self.nguid)
    }

    /// Whether the controllers of `hostnqn` see this namespace.
    #[inline]
    pub fn visible_to(&self, hostnqn: &str) -> bool {
        self.auto_visible || self.hosts.iter().any(|h| h == hostnqn)
    }
}

/// How a namespace is made beyond its bdev, NSID and NGUID
/// (`nvmf_subsystem_add_ns`).
#[derive(Debug, Clone, Default)]
pub struct NsOptions {
    /// ANA group; `None` or 0 = the NSID.
    pub anagrpid: Option<u32>,
    /// Hidden until `nvmf_ns_add_host`.
    pub no_auto_visible: bool,
    /// Where reservations persist (SPDK's ptpl JSON file).
    pub ptpl_file: Option<std::path::PathBuf>,
}

/// The namespaces of a subsystem, sorted by NSID. Never modified after
/// publication.
#[derive(Debug, Default)]
pub struct NsTable {
    list: Vec<Arc<Namespace>>,
    /// The listeners' ANA states, published with the namespaces so the
    /// I/O path reads both from one snapshot.
    pub ana: Arc<AnaTable>,
}

impl NsTable {
    /// The namespace with this NSID.
    #[inline]
    pub fn get(&self, nsid: u32) -> Option<&Arc<Namespace>> {
        self.list
            .binary_search_by_key(&nsid, |n| n.nsid)
            .ok()
            .map(|i| &self.list[i])
    }

    /// All namespaces, NSID order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Namespace>> {
        self.list.iter()
    }
}

/// A queue pair's cached view of a subsystem's namespace table.
#[derive(Debug, Default)]
pub struct NsCache {
    generation: u64,
    table: Option<Arc<NsTable>>,
}

impl NsCache {
    /// The current table of `sub`: one atomic load when nothing changed;
    /// the control-path mutex only right after a change.
    #[inline]
    pub fn table(&mut self, sub: &Subsystem) -> &Arc<NsTable> {
        let g = sub.ns_generation.load(Ordering::Acquire);
        if self.table.is_none() || self.generation != g {
            let st = sub.ns_state();
            // Read under the lock: table and generation change together.
            self.generation = sub.ns_generation.load(Ordering::Acquire);
            self.table = Some(st.table.clone());
        }
        self.table.get_or_insert_with(Default::default)
    }
}

/// Host access and listeners: read by Connect and discovery only.
#[derive(Debug, Clone)]
pub struct Access {
    /// Any host may connect.
    pub allow_any_host: bool,
    /// Allowed host NQNs otherwise.
    pub hosts: Vec<String>,
    /// Hosts that must authenticate (DH-HMAC-CHAP), with their keys.
    pub dhchap: std::collections::BTreeMap<String, super::auth::HostKeys>,
    /// Addresses actually bound for this subsystem (a configured port 0
    /// becomes the ephemeral port picked at bind time).
    pub ports: Vec<SocketAddr>,
}

#[derive(Debug)]
struct NsState {
    table: Arc<NsTable>,
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
    /// Most namespaces (and highest NSID) allowed; 0 = unlimited.
    pub max_namespaces: u32,
    /// Identify Controller NN floor (NN is at least the highest NSID).
    nn_floor: u32,
    /// Bumped (under `ns`) each time a new table is published.
    ns_generation: AtomicU64,
    /// Held only to swap or clone the table: queue pairs take it right
    /// after a change, so nothing slow (graph publication waits for every
    /// reactor) may run under it.
    ns: Mutex<NsState>,
    /// Serialises namespace changes (control threads only).
    change: Mutex<()>,
    access: Mutex<Access>,
    /// ANA reporting on (`nvmf_create_subsystem --ana-reporting`): read
    /// once per I/O, written only at creation.
    pub ana_reporting: AtomicBool,
    /// ANA log change count, bumped by every ANA state or group change.
    pub ana_change_count: AtomicU64,
    /// Controllers made for this subsystem (reservation notices go to a
    /// host's controllers); dead ones are pruned on registration.
    ctrls: Mutex<Vec<Weak<Controller>>>,
}

/// Errors building or changing subsystems.
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
    /// The NSID is taken.
    #[error("subsystem {nqn}: NSID {nsid} is already in use")]
    NsidInUse {
        /// Subsystem.
        nqn: String,
        /// NSID.
        nsid: u32,
    },
    /// The NSID is out of range (0, reserved, or above max_namespaces).
    #[error("subsystem {nqn}: NSID {nsid} is not between 1 and {max}")]
    BadNsid {
        /// Subsystem.
        nqn: String,
        /// NSID.
        nsid: u32,
        /// Highest allowed.
        max: u32,
    },
    /// Every allowed NSID is taken.
    #[error("subsystem {nqn}: no free NSID (max_namespaces {max})")]
    Full {
        /// Subsystem.
        nqn: String,
        /// The limit.
        max: u32,
    },
    /// No namespace with that NSID.
    #[error("subsystem {nqn}: no namespace {nsid}")]
    NoSuchNamespace {
        /// Subsystem.
        nqn: String,
        /// NSID.
        nsid: u32,
    },
    /// An ANA group ID above what the subsystem reports.
    #[error("subsystem {nqn}: ANA group {anagrpid} is not between 1 and {max}")]
    BadAnaGroup {
        /// Subsystem.
        nqn: String,
        /// The group.
        anagrpid: u32,
        /// Highest allowed.
        max: u32,
    },
    /// The namespace's ptpl file could not be read or does not fit it.
    #[error("subsystem {nqn}: namespace {nsid}: {why}")]
    Ptpl {
        /// Subsystem.
        nqn: String,
        /// NSID.
        nsid: u32,
        /// Why.
        why: String,
    },
    /// The host is (or is not) among the namespace's visible hosts.
    #[error("subsystem {nqn}: namespace {nsid}: host {host} {what}")]
    NsHost {
        /// Subsystem.
        nqn: String,
        /// NSID.
        nsid: u32,
        /// Host NQN.
        host: String,
        /// "is already visible" / "is not visible".
        what: &'static str,
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

/// The UUID form of an NGUID (see `Namespace::uuid`).
fn ns_uuid(nguid: [u8; 16]) -> [u8; 16] {
    let mut uuid = nguid;
    uuid[6] = (uuid[6] & 0x0f) | 0x40;
    uuid[8] = (uuid[8] & 0x3f) | 0x80;
    uuid
}

fn derived_nguid(nqn: &str, nsid: u32) -> [u8; 16] {
    let key = format!("{nqn}#{nsid}");
    let mut nguid = [0u8; 16];
    nguid[..8].copy_from_slice(&hash64(1, key.as_bytes()).to_be_bytes());
    nguid[8..].copy_from_slice(&hash64(2, key.as_bytes()).to_be_bytes());
    nguid
}

/// How a new subsystem is made (TOML config or `nvmf_create_subsystem`).
#[derive(Debug, Clone)]
pub struct SubsystemSpec {
    /// NQN.
    pub nqn: String,
    /// Serial number.
    pub serial: String,
    /// Model number.
    pub model: String,
    /// 0 = unlimited.
    pub max_namespaces: u32,
    /// Identify Controller NN floor.
    pub nn_floor: u32,
    /// Any host may connect.
    pub allow_any_host: bool,
    /// Allowed hosts.
    pub hosts: Vec<String>,
}

impl Subsystem {
    /// An empty subsystem (no namespaces, no listeners).
    pub fn new(spec: SubsystemSpec) -> Subsystem {
        Subsystem {
            nqn: spec.nqn,
            serial: spec.serial,
            model: spec.model,
            max_namespaces: spec.max_namespaces,
            nn_floor: spec.nn_floor,
            ns_generation: AtomicU64::new(0),
            ns: Mutex::new(NsState {
                table: Arc::default(),
            }),
            change: Mutex::new(()),
            access: Mutex::new(Access {
                allow_any_host: spec.allow_any_host,
                hosts: spec.hosts,
                dhchap: Default::default(),
                ports: Vec::new(),
            }),
            ana_reporting: AtomicBool::new(false),
            ana_change_count: AtomicU64::new(0),
            ctrls: Mutex::new(Vec::new()),
        }
    }

    /// Creates the subsystem's graph roots, one per configured namespace.
    pub fn build(
        cfg: &NvmfSubsystemConfig,
        graph: &Graph,
        ports: Vec<SocketAddr>,
    ) -> Result<Subsystem, SubsystemError> {
        let s = Subsystem::new(SubsystemSpec {
            nqn: cfg.nqn.clone(),
            serial: cfg.serial.clone(),
            model: cfg.model.clone(),
            max_namespaces: 0,
            // NN follows the configured namespaces, as before runtime
            // changes existed.
            nn_floor: 0,
            allow_any_host: cfg.allow_any_host,
            hosts: cfg.hosts.clone(),
        });
        for (i, bdev) in cfg.namespaces.iter().enumerate() {
            if let Err(e) = s.add_namespace(graph, bdev, Some(i as u32 + 1), None) {
                s.remove_roots(graph);
                return Err(e);
            }
        }
        s.access().ports = ports;
        Ok(s)
    }

    fn ns_state(&self) -> MutexGuard<'_, NsState> {
        self.ns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Host access and listeners (control path).
    pub fn access(&self) -> MutexGuard<'_, Access> {
        self.access.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn changing(&self) -> MutexGuard<'_, ()> {
        self.change.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, list: Vec<Arc<Namespace>>) {
        let mut st = self.ns_state();
        let ana = st.table.ana.clone();
        st.table = Arc::new(NsTable { list, ana });
        self.ns_generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Publishes the namespaces with a changed ANA table.
    pub(super) fn publish_ana(&self, change: impl FnOnce(&AnaTable) -> AnaTable) {
        let _change = self.changing();
        let mut st = self.ns_state();
        let ana = Arc::new(change(&st.table.ana));
        let list = st.table.list.clone();
        st.table = Arc::new(NsTable { list, ana });
        self.ana_change_count.fetch_add(1, Ordering::AcqRel);
        self.ns_generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Records a controller of this subsystem (at Connect).
    pub(super) fn register_controller(&self, c: &Arc<Controller>) {
        let mut all = self.ctrls.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|w| w.upgrade().is_some_and(|c| !c.is_dead()));
        all.push(Arc::downgrade(c));
    }

    /// The live controllers of the host with `hostid`.
    pub(super) fn controllers_of_host(&self, hostid: &[u8; 16]) -> Vec<Arc<Controller>> {
        self.ctrls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|c| !c.is_dead() && &c.hostid == hostid)
            .collect()
    }

    /// Whether ANA reporting is on.
    #[inline]
    pub fn ana_reporting(&self) -> bool {
        self.ana_reporting.load(Ordering::Relaxed)
    }

    /// Highest ANA group ID a namespace may take: SPDK's bound, the
    /// namespace limit (or the NN floor of unlimited subsystems).
    pub fn anagrp_max(&self) -> u32 {
        match self.max_namespaces {
            0 => self.nn_floor.max(DEFAULT_MAX_NSID),
            m => m,
        }
    }

    /// Replaces namespace `nsid` by `change` of it (ANA group, visible
    /// hosts): the root stays, so I/O in flight is not disturbed.
    pub fn update_namespace(
        &self,
        nsid: u32,
        change: impl FnOnce(&mut Namespace) -> Result<(), SubsystemError>,
    ) -> Result<Arc<Namespace>, SubsystemError> {
        let _change = self.changing();
        let table = self.namespaces();
        let Some(at) = table.list.iter().position(|n| n.nsid == nsid) else {
            return Err(SubsystemError::NoSuchNamespace {
                nqn: self.nqn.clone(),
                nsid,
            });
        };
        let mut ns = (*table.list[at]).clone();
        change(&mut ns)?;
        let ns = Arc::new(ns);
        let mut list = table.list.clone();
        list[at] = ns.clone();
        self.publish(list);
        Ok(ns)
    }

    /// Adds a namespace over `bdev` (NSID: `nsid` or the lowest free one).
    /// The root exists before the table naming it is published.
    pub fn add_namespace(
        &self,
        graph: &Graph,
        bdev: &str,
        nsid: Option<u32>,
        nguid: Option<[u8; 16]>,
    ) -> Result<u32, SubsystemError> {
        self.add_namespace_opts(graph, bdev, nsid, nguid, &NsOptions::default())
    }

    /// `add_namespace` with ANA group, visibility and ptpl file.
    pub fn add_namespace_opts(
        &self,
        graph: &Graph,
        bdev: &str,
        nsid: Option<u32>,
        nguid: Option<[u8; 16]>,
        opts: &NsOptions,
    ) -> Result<u32, SubsystemError> {
        let _change = self.changing();
        let table = self.namespaces();
        let max = if self.max_namespaces == 0 {
            NSID_MAX
        } else {
            self.max_namespaces
        };
        let nsid = match nsid {
            Some(n) if n == 0 || n > max => {
                return Err(SubsystemError::BadNsid {
                    nqn: self.nqn.clone(),
                    nsid: n,
                    max,
                })
            }
            Some(n) if table.get(n).is_some() => {
                return Err(SubsystemError::NsidInUse {
                    nqn: self.nqn.clone(),
                    nsid: n,
                })
            }
            Some(n) => n,
            None => {
                // The list is sorted: the first gap is the lowest free NSID.
                let mut want = 1u32;
                for ns in table.iter() {
                    if ns.nsid != want {
                        break;
                    }
                    want += 1;
                }
                if want > max {
                    return Err(SubsystemError::Full {
                        nqn: self.nqn.clone(),
                        max,
                    });
                }
                want
            }
        };
        let anagrpid = match opts.anagrpid {
            None | Some(0) => nsid,
            Some(g) => g,
        };
        // SPDK bounds an explicit group by the namespace limit; the
        // default (the NSID) is within NN by construction.
        if opts.anagrpid.is_some_and(|g| g > self.anagrp_max()) {
            return Err(SubsystemError::BadAnaGroup {
                nqn: self.nqn.clone(),
                anagrpid,
                max: self.anagrp_max(),
            });
        }
        let nguid_given = nguid.is_some();
        let nguid = nguid.unwrap_or_else(|| derived_nguid(&self.nqn, nsid));
        let resv = Reservation::new(opts.ptpl_file.clone(), ns_uuid(nguid)).map_err(|why| {
            SubsystemError::Ptpl {
                nqn: self.nqn.clone(),
                nsid,
                why,
            }
        })?;
        let root_name = format!("nvmf:{}:{}", self.nqn, nsid);
        let root = graph
            .add_root(&root_name, bdev)
            .map_err(|source| SubsystemError::Root {
                nqn: self.nqn.clone(),
                nsid,
                bdev: bdev.to_owned(),
                source: Box::new(source),
            })?;
        let ns = Arc::new(Namespace {
            nsid,
            bdev: bdev.to_owned(),
            root,
            root_name,
            nguid,
            nguid_given,
            anagrpid,
            auto_visible: !opts.no_auto_visible,
            hosts: Vec::new(),
            resv: Arc::new(resv),
        });
        let mut list: Vec<Arc<Namespace>> = table.list.clone();
        let at = list.partition_point(|n| n.nsid < nsid);
        list.insert(at, ns);
        self.publish(list);
        Ok(nsid)
    }

    /// Removes a namespace: the table without it is published first, then
    /// its root is removed (which waits for a grace period, so no queue
    /// pair can still pick the old root afterwards); I/O already submitted
    /// through it completes normally.
    pub fn remove_namespace(&self, graph: &Graph, nsid: u32) -> Result<(), SubsystemError> {
        let _change = self.changing();
        let table = self.namespaces();
        let Some(ns) = table.get(nsid).cloned() else {
            return Err(SubsystemError::NoSuchNamespace {
                nqn: self.nqn.clone(),
                nsid,
            });
        };
        let list = table
            .list
            .iter()
            .filter(|n| n.nsid != nsid)
            .cloned()
            .collect();
        self.publish(list);
        let _ = graph.remove_root(&ns.root_name);
        Ok(())
    }

    /// Removes every namespace's root (I/O already submitted completes).
    pub fn remove_roots(&self, graph: &Graph) {
        let _change = self.changing();
        let old = self.namespaces();
        self.publish(Vec::new());
        for ns in old.iter() {
            let _ = graph.remove_root(&ns.root_name);
        }
    }

    /// Namespaces exporting bdev `old` now export `new` (a mirror job
    /// pivoted their root): what listings and `save_config` name. Returns
    /// how many changed.
    pub fn rename_bdev(&self, old: &str, new: &str) -> usize {
        let _change = self.changing();
        let table = self.namespaces();
        let mut n = 0;
        let list: Vec<Arc<Namespace>> = table
            .list
            .iter()
            .map(|ns| {
                if ns.bdev != old {
                    return ns.clone();
                }
                n += 1;
                Arc::new(Namespace {
                    nsid: ns.nsid,
                    bdev: new.to_owned(),
                    root: ns.root,
                    root_name: ns.root_name.clone(),
                    nguid: ns.nguid,
                    nguid_given: ns.nguid_given,
                    anagrpid: ns.anagrpid,
                    auto_visible: ns.auto_visible,
                    hosts: ns.hosts.clone(),
                    // The same namespace, exported from another bdev: its
                    // registrations and reservation stay.
                    resv: ns.resv.clone(),
                })
            })
            .collect();
        if n > 0 {
            self.publish(list);
        }
        n
    }

    /// The current namespace table (control path).
    pub fn namespaces(&self) -> Arc<NsTable> {
        self.ns_state().table.clone()
    }

    /// The namespace with this NSID (control path).
    pub fn namespace(&self, nsid: u32) -> Option<Arc<Namespace>> {
        self.ns_state().table.get(nsid).cloned()
    }

    /// Whether `hostnqn` may connect.
    pub fn host_allowed(&self, hostnqn: &str) -> bool {
        let a = self.access();
        // An empty HOSTNQN names no host, so it can match no allow list.
        a.allow_any_host || (!hostnqn.is_empty() && a.hosts.iter().any(|h| h == hostnqn))
    }

    /// Identify Controller NN: the highest NSID a host should consider.
    pub fn nn(&self) -> u32 {
        let top = self.ns_state().table.list.last().map_or(0, |n| n.nsid);
        top.max(self.nn_floor)
    }

    /// Whether this subsystem is reachable through `port`.
    pub fn listens_on(&self, port: SocketAddr) -> bool {
        self.access().ports.contains(&port)
    }
}

/// Index of `port` in the target's listener list, reported as PORTID.
fn port_id(all_ports: &[SocketAddr], port: &SocketAddr) -> u16 {
    all_ports.iter().position(|p| p == port).unwrap_or(0) as u16
}

/// The discovery log page for `hostnqn`: one entry per (subsystem the host
/// may use, listener of that subsystem). `asqsz` is the deepest admin
/// queue a host may ask for.
pub fn discovery_log(
    subsystems: &[Arc<Subsystem>],
    all_ports: &[SocketAddr],
    hostnqn: &str,
    asqsz: u32,
    genctr: u64,
) -> Vec<u8> {
    let mut entries = Vec::new();
    for s in subsystems.iter().filter(|s| s.host_allowed(hostnqn)) {
        let Ok(nqn) = Nqn::new(&s.nqn) else { continue };
        let ports = s.access().ports.clone();
        for port in &ports {
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
            e.asqsz = asqsz.min(u32::from(u16::MAX)) as u16;
            entries.push(e);
        }
    }
    let mut out = vec![0u8; 1024 * (entries.len() + 1)];
    // Cannot fail: `out` is sized for the header plus every entry.
    let _ = write_discovery_log(genctr, &entries, &mut out);
    out
}
