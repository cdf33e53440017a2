//! The NVMe/TCP target front-end.
//!
//! Rooms, transport first:
//! - `listener` binds and accepts (control threads); `group` is the
//!   per-reactor poll group owning the queue pairs; `conn` is one NVMe/TCP
//!   queue pair: socket, PDU framing and the driver of its requests;
//!   `phase` is how far a queue pair got (ICReq, Connect, admin or I/O
//!   queue, closing); `transport` holds `nvmf_create_transport`'s options.
//! - `request` is one command and, in `request::state`, its state machine
//!   (SPDK tcp.c's request states): `set_state` is the only way a state
//!   changes, checked against the transition table and counted for
//!   `pollux_nvmf_requests`.
//! - `connect` is Fabrics Connect, which makes a queue pair an admin or I/O
//!   queue. `admin` and `io_cmd` are the command sets; like SPDK's ctrlr.c
//!   they work on a request and its controller and return an `Outcome`
//!   (`command`) the transport acts on, so they know no sockets.
//! - `controller` is the state a controller's queues share; `subsystem`
//!   the subsystems, namespaces as graph roots and discovery; `status` the
//!   one place errors become wire values (NVMe statuses, C2HTermReqs);
//!   `introspect` what RPC reads.
//!
//! Each accepted connection is one queue pair owned by one reactor (round
//! robin). Socket I/O and command processing for it happen on that reactor
//! only; controller-wide state (CC, features, KATO) is behind a mutex that
//! only admin-path code takes.

mod admin;
mod ana;
mod auth;
mod command;
mod conn;
mod connect;
mod controller;
mod fused;
mod group;
mod introspect;
mod io_cmd;
mod listener;
mod phase;
mod request;
mod reservation;
mod resp_group;
mod status;
mod subsystem;
mod transport;
mod txq;
mod visibility;

#[cfg(test)]
mod tests;

/// Fuzz target bodies (`target/fuzz`).
#[doc(hidden)]
pub mod fuzzing {
    pub use super::reservation::fuzz as reservation;
}

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use std::time::{Duration, Instant};

use pollux_graph::Graph;

use crate::config::NvmfConfig;
use controller::ControllerTable;
use listener::Listener;
use request::{ReqState, StateCounts};
use subsystem::Subsystem;

/// In-capsule data accepted per command (admin and I/O queues). Linux
/// puts writes up to IOCCSZ*16-64 bytes in the capsule, so 4 KiB writes
/// avoid an R2T round trip while larger ones use R2T.
pub const IN_CAPSULE_DATA: u32 = 8 * 1024;
/// Largest H2CData PDU we accept (advertised in ICResp).
pub const MAXH2CDATA: u32 = 128 * 1024;
/// MDTS as a power of two of 4 KiB pages (CAP.MPSMIN = 0): 2^5 * 4 KiB =
/// 128 KiB, one R2T / one C2HData per command.
pub const MDTS: u8 = 5;
/// MDTS in bytes.
pub const MDTS_BYTES: u32 = 4096 << MDTS;
/// Deepest queue (CAP.MQES + 1, MAXCMD). Linux asks for 128 entries by
/// default; load generators that keep QD 128 outstanding ask for one more
/// (a queue of N entries holds N - 1), so allow twice that.
pub const MAX_QUEUE_DEPTH: u32 = 256;
/// Deepest admin queue by default: SPDK's TCP default, four times what
/// Linux and SPDK hosts use (NVME_AQ_DEPTH 32).
pub const ADMIN_QUEUE_DEPTH: u32 = 128;
/// In-capsule data accepted on the admin queue and for Connect on any
/// queue, whatever `in_capsule_data_size` says: Connect data (1 KiB)
/// always travels in-capsule, and Linux sends admin writes of up to 8 KiB
/// in-capsule (NVME_TCP_ADMIN_CCSZ).
pub const ADMIN_IN_CAPSULE_DATA: u32 = 8 * 1024;
/// I/O queues per controller (Number of Queues grants at most this).
pub const MAX_IO_QUEUES: u16 = 64;
/// Connections per listener; further ones are closed at accept, so a
/// flood costs a bounded number of descriptors and buffers.
pub const MAX_CONNECTIONS_PER_LISTENER: usize = 1024;
/// A connection must send ICReq this soon after accept, or it is closed
/// (half-open and idle sockets cannot pin resources for long).
pub const IC_TIMEOUT: Duration = Duration::from_secs(10);
/// ... and Connect this soon after accept.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Data buffer bytes (R2T and read buffers) the queue pairs of one reactor
/// may hold at once; beyond it requests wait in NEED_BUFFER. 64 MiB is 512
/// commands of MDTS size in flight per core, far more than a core needs to
/// keep the network busy.
pub const BUFFER_BUDGET_PER_REACTOR: u64 = 64 * 1024 * 1024;
/// How long `stop` waits for queue pairs to drain.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

static NEXT_TARGET_ID: AtomicU64 = AtomicU64::new(1);

/// Errors starting or changing the front-end.
#[derive(Debug, thiserror::Error)]
pub enum NvmfError {
    /// A listen address could not be bound.
    #[error("nvmf: cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A subsystem could not be built or changed.
    #[error(transparent)]
    Subsystem(#[from] subsystem::SubsystemError),
    /// An accept thread could not be started.
    #[error("nvmf: cannot start accept thread: {0}")]
    Thread(std::io::Error),
    /// No subsystem with that NQN.
    #[error("no subsystem {0}")]
    NoSuchSubsystem(String),
    /// The NQN is taken (or is the discovery NQN).
    #[error("subsystem {0} already exists")]
    SubsystemExists(String),
    /// The subsystem already listens there.
    #[error("subsystem {nqn} already listens on {addr}")]
    ListenerExists {
        /// Subsystem.
        nqn: String,
        /// Address.
        addr: SocketAddr,
    },
    /// The subsystem does not listen there.
    #[error("subsystem {nqn} does not listen on {addr}")]
    NoSuchListener {
        /// Subsystem.
        nqn: String,
        /// Address.
        addr: SocketAddr,
    },
    /// The host is already on the allow list.
    #[error("host {host} is already allowed on {nqn}")]
    HostExists {
        /// Subsystem.
        nqn: String,
        /// Host NQN.
        host: String,
    },
    /// The host is not on the allow list.
    #[error("host {host} is not allowed on {nqn}")]
    NoSuchHost {
        /// Subsystem.
        nqn: String,
        /// Host NQN.
        host: String,
    },
    /// The target is stopping.
    #[error("nvmf: the target is stopping")]
    Stopping,
    /// `nvmf_create_transport` ran already.
    #[error("transport TCP already exists")]
    TransportExists,
    /// A transport option is outside Pollux's bounds.
    #[error(transparent)]
    Opts(#[from] OptsError),
}

pub use auth::{HostKeys, Policy as AuthPolicy};
pub use introspect::{ControllerInfo, QpairInfo};
pub use pollux_nvme::ana::AnaState;
pub use subsystem::{Access, NsOptions, SubsystemSpec, DEFAULT_MAX_NSID};
pub use transport::{OptsError, TransportOpts};

/// State shared by the listeners and every poll group of one target.
pub struct Shared {
    id: u64,
    graph: Arc<Graph>,
    /// Subsystems (Connect and discovery read it; the control plane
    /// changes it).
    subsystems: Mutex<Vec<Arc<Subsystem>>>,
    /// Every address ever bound (PORTID = index, stable for the run).
    ports: Mutex<Vec<SocketAddr>>,
    /// Discovery log generation counter, bumped by every change a
    /// discovery controller could see.
    discovery_gen: AtomicU64,
    ctrls: Mutex<ControllerTable>,
    stopping: AtomicBool,
    /// Live connections (accepted, not yet dropped).
    conns: AtomicUsize,
    /// Transport options for connections accepted from now on.
    opts: Mutex<Arc<TransportOpts>>,
    /// Requests that had to wait for the buffer budget (cold path only:
    /// counted when one starts waiting).
    buffer_waits: AtomicU64,
    /// Each live queue pair's requests per state, summed at scrape time
    /// (`request_states`); a closed queue pair's share goes with it.
    request_states: Mutex<Vec<Weak<StateCounts>>>,
    /// DH-HMAC-CHAP digests and groups (`nvmf_set_config`).
    auth_policy: auth::Policy,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock still holds consistent plain data.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// A target without subsystems, listeners or controllers.
    fn new(graph: &Arc<Graph>, opts: TransportOpts) -> Shared {
        Shared {
            id: NEXT_TARGET_ID.fetch_add(1, Ordering::Relaxed),
            graph: graph.clone(),
            subsystems: Mutex::new(Vec::new()),
            ports: Mutex::new(Vec::new()),
            discovery_gen: AtomicU64::new(1),
            ctrls: Mutex::new(ControllerTable::default()),
            stopping: AtomicBool::new(false),
            conns: AtomicUsize::new(0),
            opts: Mutex::new(Arc::new(opts)),
            buffer_waits: AtomicU64::new(0),
            request_states: Mutex::new(Vec::new()),
            auth_policy: auth::Policy::default(),
        }
    }

    fn controllers(&self) -> MutexGuard<'_, ControllerTable> {
        lock(&self.ctrls)
    }

    /// The subsystem with this NQN.
    fn subsystem(&self, nqn: &str) -> Option<Arc<Subsystem>> {
        lock(&self.subsystems)
            .iter()
            .find(|s| s.nqn == nqn)
            .cloned()
    }

    /// A resize below namespaces' roots: their hosts get the Changed
    /// Namespace List entry and a Namespace Attribute Changed AEN, and
    /// read the new size with Identify (which reads the published graph).
    fn roots_resized(&self, changed: &[pollux_graph::RootChange]) {
        for sub in self.subsystem_list() {
            for ns in sub.namespaces().iter() {
                if changed
                    .iter()
                    .any(|c| c.root == ns.root && c.name == ns.root_name)
                {
                    tracing::info!(nqn = %sub.nqn, nsid = ns.nsid, "nvmf: namespace resized");
                    for c in self.controllers().of_subsystem(&sub.nqn) {
                        c.namespace_changed(ns.nsid);
                    }
                }
            }
        }
    }

    /// A snapshot of the subsystem list.
    fn subsystem_list(&self) -> Vec<Arc<Subsystem>> {
        lock(&self.subsystems).clone()
    }

    /// A snapshot of the PORTID table.
    fn port_list(&self) -> Vec<SocketAddr> {
        lock(&self.ports).clone()
    }

    /// The transport options new connections take.
    fn opts(&self) -> Arc<TransportOpts> {
        lock(&self.opts).clone()
    }

    /// Per-state counts for a new queue pair, registered for the gauge
    /// (at accept: control path).
    fn register_request_states(&self) -> Arc<StateCounts> {
        let counts = Arc::new(StateCounts::default());
        let mut all = lock(&self.request_states);
        all.retain(|w| w.strong_count() > 0);
        all.push(Arc::downgrade(&counts));
        counts
    }

    fn discovery_changed(&self) {
        self.discovery_gen.fetch_add(1, Ordering::AcqRel);
    }
}

/// A bound address and its accept thread.
struct BoundListener {
    /// The address asked for (port 0 allowed).
    requested: SocketAddr,
    /// The address bound.
    bound: SocketAddr,
    listener: Listener,
}

/// What `subsystems()` reports about one subsystem.
#[derive(Debug, Clone)]
pub struct SubsystemInfo {
    /// NQN.
    pub nqn: String,
    /// Serial number.
    pub serial: String,
    /// Model number.
    pub model: String,
    /// 0 = unlimited.
    pub max_namespaces: u32,
    /// Hosts and listeners.
    pub access: Access,
    /// ANA reporting on.
    pub ana_reporting: bool,
    /// (nsid, bdev, nguid, nguid given by the creator, uuid).
    pub namespaces: Vec<NamespaceInfo>,
}

/// One namespace of `SubsystemInfo`.
#[derive(Debug, Clone)]
pub struct NamespaceInfo {
    /// NSID.
    pub nsid: u32,
    /// Bdev.
    pub bdev: String,
    /// NGUID.
    pub nguid: [u8; 16],
    /// Whether the NGUID was given at creation.
    pub nguid_given: bool,
    /// UUID reported to hosts.
    pub uuid: [u8; 16],
    /// ANA group.
    pub anagrpid: u32,
    /// Visible to every host (else only to `hosts`).
    pub auto_visible: bool,
    /// Hosts it is visible to (`nvmf_ns_add_host`).
    pub hosts: Vec<String>,
    /// Reservation ptpl file.
    pub ptpl_file: Option<std::path::PathBuf>,
}

/// A running NVMe/TCP front-end. Every method takes `&self`: the control
/// plane changes subsystems, namespaces, hosts and listeners while hosts
/// are connected.
pub struct NvmfTarget {
    shared: Arc<Shared>,
    listeners: Mutex<Vec<BoundListener>>,
    /// Serialises control-plane changes (so listener refcounts and
    /// subsystem lists change together).
    control: Mutex<()>,
    /// Whether `nvmf_create_transport` ran (the options are in `shared`).
    transport_created: Mutex<bool>,
}

impl NvmfTarget {
    /// Binds every configured listener, creates the namespaces' graph
    /// roots and starts accepting. With no subsystems nothing listens
    /// until the control plane adds some.
    pub fn start(cfg: &NvmfConfig, graph: &Arc<Graph>) -> Result<NvmfTarget, NvmfError> {
        NvmfTarget::start_with_budget(cfg, graph, BUFFER_BUDGET_PER_REACTOR)
    }

    /// `start` with a given per-reactor buffer budget (at least one
    /// largest command, so every request can eventually get its buffer).
    pub(crate) fn start_with_budget(
        cfg: &NvmfConfig,
        graph: &Arc<Graph>,
        buffer_budget: u64,
    ) -> Result<NvmfTarget, NvmfError> {
        let mut opts = TransportOpts::default();
        let unit = u64::from(opts.io_unit_size);
        opts.num_shared_buffers = buffer_budget
            .div_ceil(unit)
            .max(u64::from(opts.max_io_size).div_ceil(unit))
            .min(u64::from(u32::MAX)) as u32;
        let shared = Arc::new(Shared::new(graph, opts));
        let weak = Arc::downgrade(&shared);
        graph.watch_roots(move |changed| {
            if let Some(shared) = weak.upgrade() {
                shared.roots_resized(changed);
            }
        });
        let t = NvmfTarget {
            shared,
            listeners: Mutex::new(Vec::new()),
            control: Mutex::new(()),
            transport_created: Mutex::new(false),
        };
        for s in &cfg.subsystems {
            let built = Subsystem::build(s, graph, Vec::new()).map_err(NvmfError::from);
            let result = built.and_then(|sub| {
                let sub = Arc::new(sub);
                lock(&t.shared.subsystems).push(sub.clone());
                for &addr in &s.listen {
                    t.listen(&sub, addr)?;
                }
                Ok(sub)
            });
            match result {
                Ok(sub) => {
                    tracing::info!(nqn = %sub.nqn, namespaces = ?sub.namespaces().iter().map(|n| n.bdev.clone()).collect::<Vec<_>>(),
                        listen = ?sub.access().ports, "nvmf: subsystem exported");
                }
                Err(e) => {
                    t.stop();
                    return Err(e);
                }
            }
        }
        Ok(t)
    }

    /// Makes `sub` reachable on `addr`: binds it unless another subsystem
    /// already did. Call with `control` held or before the target is
    /// shared.
    fn listen(&self, sub: &Arc<Subsystem>, addr: SocketAddr) -> Result<SocketAddr, NvmfError> {
        let mut ls = lock(&self.listeners);
        let existing = ls
            .iter()
            .find(|l| l.requested == addr || l.bound == addr)
            .map(|l| l.bound);
        let bound = match existing {
            Some(b) => b,
            None => {
                let (l, bound) =
                    Listener::bind(addr).map_err(|source| NvmfError::Bind { addr, source })?;
                {
                    let mut ports = lock(&self.shared.ports);
                    if !ports.contains(&bound) {
                        ports.push(bound);
                    }
                }
                let listener =
                    Listener::start(l, bound, self.shared.clone()).map_err(NvmfError::Thread)?;
                ls.push(BoundListener {
                    requested: addr,
                    bound,
                    listener,
                });
                bound
            }
        };
        let mut a = sub.access();
        if a.ports.contains(&bound) {
            return Err(NvmfError::ListenerExists {
                nqn: sub.nqn.clone(),
                addr,
            });
        }
        a.ports.push(bound);
        drop(a);
        self.shared.discovery_changed();
        Ok(bound)
    }

    /// Stops accepting on listeners no subsystem uses any more (existing
    /// connections stay, as SPDK).
    fn close_unused_listeners(&self) {
        let used: Vec<SocketAddr> = self
            .shared
            .subsystem_list()
            .iter()
            .flat_map(|s| s.access().ports.clone())
            .collect();
        let closed: Vec<BoundListener> = {
            let mut ls = lock(&self.listeners);
            let (keep, closed) = std::mem::take(&mut *ls)
                .into_iter()
                .partition(|l| used.contains(&l.bound));
            *ls = keep;
            closed
        };
        for mut l in closed {
            l.listener.stop();
            tracing::info!(addr = %l.bound, "nvmf: listener removed");
        }
    }

    fn control(&self) -> Result<MutexGuard<'_, ()>, NvmfError> {
        if self.shared.stopping.load(Ordering::Acquire) {
            return Err(NvmfError::Stopping);
        }
        Ok(lock(&self.control))
    }

    fn get(&self, nqn: &str) -> Result<Arc<Subsystem>, NvmfError> {
        self.shared
            .subsystem(nqn)
            .ok_or_else(|| NvmfError::NoSuchSubsystem(nqn.to_owned()))
    }

    /// The bound listener addresses (ports resolved).
    #[cfg(test)]
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        lock(&self.listeners).iter().map(|l| l.bound).collect()
    }

    /// Creates an empty subsystem (no namespaces, no listeners).
    pub fn create_subsystem(&self, spec: SubsystemSpec) -> Result<(), NvmfError> {
        let _c = self.control()?;
        let mut subs = lock(&self.shared.subsystems);
        if spec.nqn == pollux_nvme::fabrics::DISCOVERY_NQN || subs.iter().any(|s| s.nqn == spec.nqn)
        {
            return Err(NvmfError::SubsystemExists(spec.nqn));
        }
        tracing::info!(nqn = %spec.nqn, "nvmf: subsystem created");
        subs.push(Arc::new(Subsystem::new(spec)));
        Ok(())
    }

    /// Deletes a subsystem: it disappears from Connect and discovery, its
    /// controllers are torn down (their hosts are disconnected), its
    /// namespaces' roots are removed (I/O in flight on them completes)
    /// and listeners nobody else uses stop accepting.
    pub fn delete_subsystem(&self, nqn: &str) -> Result<(), NvmfError> {
        let _c = self.control()?;
        let sub = {
            let mut subs = lock(&self.shared.subsystems);
            let i = subs
                .iter()
                .position(|s| s.nqn == nqn)
                .ok_or_else(|| NvmfError::NoSuchSubsystem(nqn.to_owned()))?;
            subs.remove(i)
        };
        self.shared.discovery_changed();
        {
            let mut ctrls = self.shared.controllers();
            for c in ctrls.of_subsystem(nqn) {
                ctrls.remove(c.cntlid);
            }
        }
        sub.remove_roots(&self.shared.graph);
        self.close_unused_listeners();
        tracing::info!(nqn, "nvmf: subsystem deleted");
        Ok(())
    }

    /// Adds a namespace over `bdev` and tells connected hosts. Returns the
    /// NSID.
    pub fn add_namespace(
        &self,
        nqn: &str,
        bdev: &str,
        nsid: Option<u32>,
        nguid: Option<[u8; 16]>,
    ) -> Result<u32, NvmfError> {
        self.add_namespace_opts(nqn, bdev, nsid, nguid, &NsOptions::default())
    }

    /// `add_namespace` with ANA group, visibility and ptpl file. Only the
    /// hosts that see it are told.
    pub fn add_namespace_opts(
        &self,
        nqn: &str,
        bdev: &str,
        nsid: Option<u32>,
        nguid: Option<[u8; 16]>,
        opts: &NsOptions,
    ) -> Result<u32, NvmfError> {
        let _c = self.control()?;
        let sub = self.get(nqn)?;
        let nsid = sub.add_namespace_opts(&self.shared.graph, bdev, nsid, nguid, opts)?;
        tracing::info!(nqn, nsid, bdev, "nvmf: namespace added");
        if opts.no_auto_visible {
            return Ok(nsid);
        }
        self.notify_namespace_changed(nqn, nsid);
        Ok(nsid)
    }

    /// Removes a namespace (waits only for a grace period; I/O in flight on
    /// it completes) and tells connected hosts.
    pub fn remove_namespace(&self, nqn: &str, nsid: u32) -> Result<(), NvmfError> {
        let _c = self.control()?;
        let sub = self.get(nqn)?;
        sub.remove_namespace(&self.shared.graph, nsid)?;
        tracing::info!(nqn, nsid, "nvmf: namespace removed");
        self.notify_namespace_changed(nqn, nsid);
        Ok(())
    }

    /// Makes subsystem `nqn` reachable on `addr` (binding it if needed).
    /// Returns the bound address.
    pub fn add_listener(&self, nqn: &str, addr: SocketAddr) -> Result<SocketAddr, NvmfError> {
        let _c = self.control()?;
        let sub = self.get(nqn)?;
        let bound = self.listen(&sub, addr)?;
        tracing::info!(nqn, %bound, "nvmf: listener added");
        Ok(bound)
    }

    /// Stops exporting `nqn` on `addr`; the socket closes once no
    /// subsystem uses it. Connections already made stay, as in SPDK.
    pub fn remove_listener(&self, nqn: &str, addr: SocketAddr) -> Result<(), NvmfError> {
        let _c = self.control()?;
        let sub = self.get(nqn)?;
        let bound = lock(&self.listeners)
            .iter()
            .find(|l| l.requested == addr || l.bound == addr)
            .map_or(addr, |l| l.bound);
        {
            let mut a = sub.access();
            let Some(i) = a.ports.iter().position(|p| *p == bound) else {
                return Err(NvmfError::NoSuchListener {
                    nqn: nqn.to_owned(),
                    addr,
                });
            };
            a.ports.remove(i);
        }
        sub.publish_ana(|t| t.without(bound));
        self.shared.discovery_changed();
        self.close_unused_listeners();
        Ok(())
    }

    /// Adds `host` to the allow list of `nqn`.
    pub fn add_host(&self, nqn: &str, host: &str) -> Result<(), NvmfError> {
        let _c = self.control()?;
        let sub = self.get(nqn)?;
        let mut a = sub.access();
        if a.hosts.iter().any(|h| h == host) {
            return Err(NvmfError::HostExists {
                nqn: nqn.to_owned(),
                host: host.to_owned(),
            });
        }
        a.hosts.push(host.to_owned());
        drop(a);
        self.shared.discovery_changed();
        Ok(())
    }

    /// Removes `host` from the allow list; unless any host is allowed, its
    /// controllers on `nqn` are disconnected (as SPDK does).
    pub fn remove_host(&self, nqn: &str, host: &str) -> Result<(), NvmfError> {
        let _c = self.control()?;
        let sub = self.get(nqn)?;
        let allow_any = {
            let mut a = sub.access();
            let Some(i) = a.hosts.iter().position(|h| h == host) else {
                return Err(NvmfError::NoSuchHost {
                    nqn: nqn.to_owned(),
                    host: host.to_owned(),
                });
            };
            a.hosts.remove(i);
            a.dhchap.remove(host);
            a.allow_any_host
        };
        self.shared.discovery_changed();
        if !allow_any {
            let mut ctrls = self.shared.controllers();
            for c in ctrls.of_subsystem(nqn) {
                if c.hostnqn == host {
                    ctrls.remove(c.cntlid);
                }
            }
        }
        Ok(())
    }

    /// Sets allow_any_host of `nqn` (affects later Connects only).
    pub fn set_allow_any_host(&self, nqn: &str, allow: bool) -> Result<(), NvmfError> {
        let _c = self.control()?;
        self.get(nqn)?.access().allow_any_host = allow;
        self.shared.discovery_changed();
        Ok(())
    }

    /// Every subsystem, in creation order.
    pub fn subsystems(&self) -> Vec<SubsystemInfo> {
        self.shared
            .subsystem_list()
            .iter()
            .map(|s| SubsystemInfo {
                nqn: s.nqn.clone(),
                serial: s.serial.clone(),
                model: s.model.clone(),
                max_namespaces: s.max_namespaces,
                access: s.access().clone(),
                ana_reporting: s.ana_reporting(),
                namespaces: s
                    .namespaces()
                    .iter()
                    .map(|n| NamespaceInfo {
                        nsid: n.nsid,
                        bdev: n.bdev.clone(),
                        nguid: n.nguid,
                        nguid_given: n.nguid_given,
                        uuid: n.uuid(),
                        anagrpid: n.anagrpid,
                        auto_visible: n.auto_visible,
                        hosts: n.hosts.clone(),
                        ptpl_file: n.resv.ptpl_file().map(Into::into),
                    })
                    .collect(),
            })
            .collect()
    }

    /// Requests of every queue pair per request state, for the
    /// `pollux_nvmf_requests{state}` gauge: every state but `free` (an
    /// unused slot is no request), zeroes included.
    pub fn request_states(&self) -> Vec<(&'static str, u64)> {
        let live: Vec<Arc<StateCounts>> = lock(&self.shared.request_states)
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        ReqState::ALL
            .iter()
            .filter(|&&s| s != ReqState::Free)
            .map(|&s| {
                let n = live.iter().fold(0u64, |n, c| n.wrapping_add(c.get(s)));
                (s.name(), n)
            })
            .collect()
    }

    /// Queue pairs (admin + I/O) connected per subsystem, for the
    /// `pollux_nvmf_connections` gauge. Subsystems without any report 0.
    pub fn connections(&self) -> Vec<(String, usize)> {
        let subs = self.shared.subsystem_list();
        let ctrls = self.shared.controllers();
        subs.iter()
            .map(|s| {
                let n = ctrls
                    .of_subsystem(&s.nqn)
                    .iter()
                    .filter(|c| !c.is_dead())
                    .map(|c| 1 + c.state().io_qids.len())
                    .sum();
                (s.nqn.clone(), n)
            })
            .collect()
    }

    /// `nvmf_create_transport`: checks `opts` against Pollux's bounds and
    /// makes them the options of every connection accepted from now on
    /// (connections already up keep theirs, as in SPDK, where a transport's
    /// options are fixed before it serves anyone). Returns the options in
    /// force (some are adjusted, see `TransportOpts::validate`).
    pub fn create_transport(&self, mut opts: TransportOpts) -> Result<TransportOpts, NvmfError> {
        let _c = self.control()?;
        let mut created = lock(&self.transport_created);
        if *created {
            return Err(NvmfError::TransportExists);
        }
        opts.validate()?;
        tracing::info!(?opts, "nvmf: TCP transport options set");
        *lock(&self.shared.opts) = Arc::new(opts.clone());
        *created = true;
        Ok(opts)
    }

    /// The options in force once `nvmf_create_transport` ran, else `None`.
    pub fn transport(&self) -> Option<TransportOpts> {
        let created = *lock(&self.transport_created);
        created.then(|| (*self.shared.opts()).clone())
    }

    /// The options new connections take (the defaults until
    /// `nvmf_create_transport`).
    pub fn transport_opts(&self) -> TransportOpts {
        (*self.shared.opts()).clone()
    }

    /// Reports that namespace `nsid` of subsystem `nqn` was added, removed
    /// or resized to every connected controller (Changed Namespace List and
    /// Namespace Attribute Changed AEN).
    pub fn notify_namespace_changed(&self, nqn: &str, nsid: u32) {
        let ctrls = self.shared.controllers().of_subsystem(nqn);
        for c in ctrls {
            c.namespace_changed(nsid);
        }
    }

    /// Namespaces exporting bdev `old` now export `new` (a mirror job's
    /// pivot moved their roots).
    pub fn rename_bdev(&self, old: &str, new: &str) {
        for s in self.shared.subsystem_list() {
            s.rename_bdev(old, new);
        }
    }

    /// Stops accepting, lets in-flight commands finish (queue pairs stop
    /// taking new commands and close once idle), then tears down every
    /// controller and removes the namespaces' roots. Idempotent.
    pub fn stop(&self) {
        if self.shared.stopping.swap(true, Ordering::AcqRel) {
            return;
        }
        let _c = lock(&self.control);
        for l in lock(&self.listeners).iter_mut() {
            l.listener.stop();
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while self.shared.conns.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let left = self.shared.conns.load(Ordering::Acquire);
        if left > 0 {
            tracing::warn!(
                connections = left,
                "nvmf: connections still busy at stop; closing them"
            );
        }
        let id = self.shared.id;
        self.shared
            .graph
            .handle()
            .on_each_reactor(move |r| group::detach(r, id));
        self.shared.controllers().kill_all();
        for s in self.shared.subsystem_list() {
            s.remove_roots(&self.shared.graph);
        }
        lock(&self.listeners).clear();
        tracing::info!("nvmf: stopped");
    }
}
