//! The NVMe/TCP target front-end.
//!
//! Rooms: `listener` (bind and accept, control threads), `group` (the
//! per-reactor poll group owning the queue pairs), `conn` (one queue pair:
//! socket, PDU framing, request driver), `request` (the request state
//! machine), `admin` (Connect and admin commands), `io_cmd` (NVM I/O
//! commands), `controller` (state shared by a controller's queues),
//! `subsystem` (subsystems, namespaces as graph roots, discovery) and
//! `status` (error → NVMe status / TermReq mapping).
//!
//! Each accepted connection is one queue pair owned by one reactor (round
//! robin). Socket I/O and command processing for it happen on that reactor
//! only; controller-wide state (CC, features, KATO) is behind a mutex that
//! only admin-path code takes.

mod admin;
mod conn;
mod controller;
mod group;
mod io_cmd;
mod listener;
mod request;
mod status;
mod subsystem;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use pollux_graph::Graph;

use crate::config::NvmfConfig;
use controller::ControllerTable;
use listener::Listener;
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
/// Admin queue depth hosts normally use (Linux NVME_AQ_DEPTH).
pub const ADMIN_QUEUE_DEPTH: u32 = 32;
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

/// Errors starting the front-end.
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
    /// A subsystem could not be built.
    #[error(transparent)]
    Subsystem(#[from] subsystem::SubsystemError),
    /// An accept thread could not be started.
    #[error("nvmf: cannot start accept thread: {0}")]
    Thread(std::io::Error),
}

/// State shared by the listeners and every poll group of one target.
pub struct Shared {
    id: u64,
    graph: Arc<Graph>,
    subsystems: Vec<Arc<Subsystem>>,
    /// Every bound listener address (PORTID = index).
    ports: Vec<SocketAddr>,
    ctrls: Mutex<ControllerTable>,
    stopping: AtomicBool,
    /// Live connections (accepted, not yet dropped).
    conns: AtomicUsize,
    /// Buffer budget of each poll group.
    buffer_budget: u64,
}

impl Shared {
    fn controllers(&self) -> MutexGuard<'_, ControllerTable> {
        self.ctrls.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running NVMe/TCP front-end.
pub struct NvmfTarget {
    shared: Arc<Shared>,
    listeners: Vec<Listener>,
}

impl NvmfTarget {
    /// Binds every configured listener, creates the namespaces' graph
    /// roots and starts accepting. With no subsystems nothing listens.
    pub fn start(cfg: &NvmfConfig, graph: &Arc<Graph>) -> Result<NvmfTarget, NvmfError> {
        NvmfTarget::start_with_budget(cfg, graph, BUFFER_BUDGET_PER_REACTOR)
    }

    /// `start` with a given per-reactor buffer budget (at least MDTS, so
    /// every request can eventually get its buffer).
    pub(crate) fn start_with_budget(
        cfg: &NvmfConfig,
        graph: &Arc<Graph>,
        buffer_budget: u64,
    ) -> Result<NvmfTarget, NvmfError> {
        let buffer_budget = buffer_budget.max(u64::from(MDTS_BYTES));
        // Bind each distinct address once; remember what it resolved to.
        let mut bound: Vec<(SocketAddr, SocketAddr, std::net::TcpListener)> = Vec::new();
        for s in &cfg.subsystems {
            for &addr in &s.listen {
                if bound.iter().any(|(want, _, _)| *want == addr) {
                    continue;
                }
                let (l, actual) =
                    Listener::bind(addr).map_err(|source| NvmfError::Bind { addr, source })?;
                bound.push((addr, actual, l));
            }
        }
        let mut subsystems = Vec::new();
        for s in &cfg.subsystems {
            let ports = s
                .listen
                .iter()
                .filter_map(|a| bound.iter().find(|(w, _, _)| w == a).map(|(_, b, _)| *b))
                .collect();
            match Subsystem::build(s, graph, ports) {
                Ok(sub) => subsystems.push(Arc::new(sub)),
                Err(e) => {
                    for sub in &subsystems {
                        Subsystem::remove_roots(sub, graph);
                    }
                    return Err(e.into());
                }
            }
        }
        let shared = Arc::new(Shared {
            id: NEXT_TARGET_ID.fetch_add(1, Ordering::Relaxed),
            graph: graph.clone(),
            subsystems,
            ports: bound.iter().map(|(_, b, _)| *b).collect(),
            ctrls: Mutex::new(ControllerTable::default()),
            stopping: AtomicBool::new(false),
            conns: AtomicUsize::new(0),
            buffer_budget,
        });
        let mut listeners = Vec::new();
        for (_, addr, l) in bound {
            listeners.push(Listener::start(l, addr, shared.clone()).map_err(NvmfError::Thread)?);
        }
        for s in &shared.subsystems {
            tracing::info!(nqn = %s.nqn, namespaces = ?s.namespaces.iter().map(|n| n.bdev.as_str()).collect::<Vec<_>>(),
                listen = ?s.ports, "nvmf: subsystem exported");
        }
        Ok(NvmfTarget { shared, listeners })
    }

    /// The bound listener addresses (ports resolved).
    #[cfg(test)]
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.shared.ports.clone()
    }

    /// Reports that namespace `nsid` of subsystem `nqn` was added, removed
    /// or resized to every connected controller (Changed Namespace List and
    /// Namespace Attribute Changed AEN). For the control plane: the RPC
    /// layer calls it once namespaces can change at run time.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn notify_namespace_changed(&self, nqn: &str, nsid: u32) {
        let ctrls = self.shared.controllers().of_subsystem(nqn);
        for c in ctrls {
            c.namespace_changed(nsid);
        }
    }

    /// Stops accepting, lets in-flight commands finish (queue pairs stop
    /// taking new commands and close once idle), then tears down every
    /// controller and removes the namespaces' roots.
    pub fn stop(mut self) {
        self.shared.stopping.store(true, Ordering::Release);
        for l in &mut self.listeners {
            l.stop();
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
        for s in &self.shared.subsystems {
            s.remove_roots(&self.shared.graph);
        }
        tracing::info!("nvmf: stopped");
    }
}
