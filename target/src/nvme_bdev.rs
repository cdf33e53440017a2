//! NVMe PCIe controllers attached as bdevs (config `kind = "nvme"` and
//! `bdev_nvme_attach_controller`): which controllers exist, the bdevs each
//! one made, and their teardown.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use pollux_graph::{Graph, GraphError};
use pollux_nvme_pci::{AttachError, Controller, CtrlOpts};

/// Why a controller could not be attached or detached.
#[derive(Debug, thiserror::Error)]
pub enum NvmeBdevError {
    /// The device could not be brought up; the message names it and says
    /// what to do.
    #[error(transparent)]
    Attach(#[from] AttachError),
    /// A controller of that name exists.
    #[error("a controller named {0:?} already exists")]
    NameExists(String),
    /// The device is attached under another name.
    #[error("nvme {bdf}: already attached as controller {name:?}")]
    AlreadyAttached {
        /// PCI address.
        bdf: String,
        /// Its controller name.
        name: String,
    },
    /// No controller of that name.
    #[error("no NVMe controller named {0:?}")]
    NoSuchController(String),
    /// The graph refused a namespace bdev (name taken, in use).
    #[error(transparent)]
    Graph(#[from] GraphError),
}

/// An attached controller and its namespace bdevs.
pub struct Attached {
    /// The driver's controller.
    pub ctrl: Arc<Controller>,
    /// Its bdevs, `{name}n{nsid}`.
    pub bdevs: Vec<String>,
}

/// The controllers of this process. The graph is per process too, and a
/// device can be opened by one process only (VFIO), so one table serves.
static CONTROLLERS: Mutex<BTreeMap<String, Attached>> = Mutex::new(BTreeMap::new());

fn table() -> MutexGuard<'static, BTreeMap<String, Attached>> {
    CONTROLLERS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Attaches the controller at `pci` as `name`, adding its namespaces to
/// `graph`; returns the bdev names.
pub fn attach(
    graph: &Arc<Graph>,
    name: &str,
    pci: &str,
    io_queue_depth: u16,
) -> Result<Vec<String>, NvmeBdevError> {
    {
        let t = table();
        if t.contains_key(name) {
            return Err(NvmeBdevError::NameExists(name.to_owned()));
        }
        let bdf = pci.to_ascii_lowercase();
        if let Some((other, _)) = t.iter().find(|(_, a)| a.ctrl.bdf() == bdf) {
            return Err(NvmeBdevError::AlreadyAttached {
                bdf,
                name: other.clone(),
            });
        }
    }
    let reactors = graph.handle().num_reactors();
    let (ctrl, nodes) = pollux_nvme_pci::attach(name, pci, CtrlOpts { io_queue_depth }, reactors)?;
    let mut bdevs: Vec<String> = Vec::new();
    for (bdev, node) in nodes {
        if let Err(e) = graph.add_node(&bdev, node, &[]) {
            for b in &bdevs {
                let _ = graph.remove_node(b);
            }
            ctrl.shutdown();
            return Err(e.into());
        }
        bdevs.push(bdev);
    }
    tracing::info!(
        controller = name, pci, numa_node = ?ctrl.info().numa_node, bdevs = ?bdevs,
        "NVMe bdevs created"
    );
    table().insert(
        name.to_owned(),
        Attached {
            ctrl,
            bdevs: bdevs.clone(),
        },
    );
    Ok(bdevs)
}

/// Removes the controller's bdevs (each drains its in-flight I/O, as any
/// node removal) and shuts it down. Refused, with nothing removed, while a
/// bdev is in use.
pub fn detach(graph: &Arc<Graph>, name: &str) -> Result<(), NvmeBdevError> {
    let bdevs = match table().get(name) {
        Some(a) => a.bdevs.clone(),
        None => return Err(NvmeBdevError::NoSuchController(name.to_owned())),
    };
    let users: Vec<String> = {
        let info = graph.describe();
        bdevs
            .iter()
            .filter(|b| {
                info.roots.iter().any(|r| &r.node == *b)
                    || info
                        .nodes
                        .iter()
                        .any(|n| n.children.iter().any(|c| c == *b))
            })
            .cloned()
            .collect()
    };
    if let Some(b) = users.first() {
        // The graph's own refusal, naming who uses it.
        graph.remove_node(b)?;
    }
    for b in &bdevs {
        match graph.remove_node(b) {
            Ok(()) | Err(GraphError::NoSuchNode(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(a) = table().remove(name) {
        // With namespaces, the last one's close already shut it down.
        a.ctrl.shutdown();
    }
    Ok(())
}

/// Every attached controller, by name.
pub fn list() -> Vec<(String, Arc<Controller>, Vec<String>)> {
    table()
        .iter()
        .map(|(n, a)| (n.clone(), a.ctrl.clone(), a.bdevs.clone()))
        .collect()
}

/// Forgets every controller (daemon shutdown, after the graph closed them).
pub fn clear() {
    table().clear();
}

/// Feeds the `pollux_nvme_*` families from the controllers' queue pairs.
pub fn register_metrics(
    m: &pollux_metrics::Metrics,
) -> Result<Vec<pollux_metrics::GaugeRegistration>, pollux_metrics::MetricsError> {
    use std::sync::atomic::Ordering::Relaxed;

    use pollux_nvme_pci::QpStats;

    fn per_controller(f: fn(&QpStats) -> u64) -> Vec<(String, f64)> {
        list()
            .into_iter()
            .map(|(name, ctrl, _)| {
                let sum: u64 = ctrl.queue_stats().iter().map(|q| f(q)).sum();
                (name, sum as f64)
            })
            .collect()
    }
    Ok(vec![
        m.register_counters(&pollux_metrics::NVME_COMMANDS, || {
            per_controller(|q| q.commands.load(Relaxed))
        })?,
        m.register_counters(&pollux_metrics::NVME_ERRORS, || {
            per_controller(|q| q.errors.load(Relaxed))
        })?,
        m.register_gauges(&pollux_metrics::NVME_QUEUE_SLOTS_IN_USE, || {
            per_controller(|q| q.in_use.load(Relaxed))
        })?,
    ])
}
