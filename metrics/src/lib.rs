//! Prometheus exposition for Pollux.
//!
//! `Metrics` is a registry of collectors that read their sources only when
//! scraped: reactor statistics (`register_reactors`), the block graph and
//! its bdevs (`register_graph`), and gauges that front-ends feed through
//! closures (`register_gauges`), so this crate knows nothing of NVMe-oF or
//! vhost beyond the metric names they report under. Counters stay in the
//! per-reactor shards their owners write; the collectors sum them here.
//! `Server` serves the text format on `GET /metrics` from a control thread.
//!
//! Rooms: `family` (building families from scraped values), `collectors`
//! (one per source), `server` (the HTTP endpoint).

mod collectors;
mod family;
mod server;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use pollux_graph::Graph;
use pollux_poller::Handle;
use prometheus::core::Collector;
use prometheus::{Encoder, Registry, TextEncoder};

use crate::collectors::{BuildInfo, GaugeFamily, GraphCollector, ReactorCollector};
use crate::family::{FamilySpec, MetricType};

pub use server::{Server, METRICS_PATH};

/// Where `/metrics` listens unless configured otherwise (`[metrics]
/// listen`). Loopback only, because the endpoint has no authentication;
/// the port is part of the documented interface scrape configs rely on.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    9469,
));

/// A gauge family that front-ends feed: its name, help and one label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GaugeSpec {
    /// Metric name.
    pub name: &'static str,
    /// Help text.
    pub help: &'static str,
    /// The label that tells the series apart.
    pub label: &'static str,
}

/// NVMe-oF host connections per subsystem (the NVMe/TCP front-end).
pub const NVMF_CONNECTIONS: GaugeSpec = GaugeSpec {
    name: "pollux_nvmf_connections",
    help: "NVMe-oF host connections (queue pairs) per subsystem.",
    label: "subsystem",
};

/// NVMe/TCP requests per state of the request state machine (the
/// NVMe/TCP front-end), summed over its queue pairs; states are SPDK's
/// `TCP_REQUEST_STATE_*` names in lower case (`need_buffer`, `executing`,
/// ...).
pub const NVMF_REQUESTS: GaugeSpec = GaugeSpec {
    name: "pollux_nvmf_requests",
    help: "NVMe/TCP requests per request state, over all queue pairs.",
    label: "state",
};

/// Active virtqueues per vhost-user-blk controller (the vhost front-end).
pub const VHOST_QUEUES: GaugeSpec = GaugeSpec {
    name: "pollux_vhost_queues",
    help: "Active virtqueues per vhost-user-blk controller.",
    label: "controller",
};

/// A counter family that a driver feeds, like `GaugeSpec`; the name ends
/// in `_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CounterSpec {
    /// Metric name.
    pub name: &'static str,
    /// Help text.
    pub help: &'static str,
    /// The label that tells the series apart.
    pub label: &'static str,
}

/// I/O commands completed per NVMe PCIe controller (the nvme bdev driver).
pub const NVME_COMMANDS: CounterSpec = CounterSpec {
    name: "pollux_nvme_commands_total",
    help: "I/O commands completed per NVMe controller, over its queue pairs.",
    label: "controller",
};

/// I/O commands that failed per NVMe PCIe controller (error status from
/// the device, or failed by the driver after a controller fault).
pub const NVME_ERRORS: CounterSpec = CounterSpec {
    name: "pollux_nvme_errors_total",
    help: "I/O commands that failed per NVMe controller.",
    label: "controller",
};

/// I/O queue slots (command identifiers) in use per NVMe PCIe controller.
pub const NVME_QUEUE_SLOTS_IN_USE: GaugeSpec = GaugeSpec {
    name: "pollux_nvme_queue_slots_in_use",
    help: "I/O queue slots in use per NVMe controller, over its queue pairs.",
    label: "controller",
};

/// Errors of the metrics registry and endpoint. Messages leave the cause
/// to `source()`, so an error chain prints each part once.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The listen address could not be bound.
    #[error("{addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Setting up the endpoint's socket, runtime or thread failed.
    #[error("cannot set up the metrics endpoint")]
    Io(#[source] std::io::Error),
    /// A collector could not be registered (for instance a source of the
    /// same kind was registered twice).
    #[error("cannot register metrics")]
    Register(#[source] prometheus::Error),
    /// A gauge family was registered again with a different help or label.
    #[error("gauge family {name} is already registered with label {label:?}")]
    GaugeMismatch {
        /// The family.
        name: &'static str,
        /// The label it was first registered with.
        label: &'static str,
    },
    /// The exposition could not be encoded.
    #[error("cannot encode metrics")]
    Encode(#[source] prometheus::Error),
}

/// The registry every source is added to; scraped by `Server`.
pub struct Metrics {
    registry: Registry,
    gauges: Mutex<HashMap<&'static str, Arc<GaugeFamily>>>,
    next_source: AtomicU64,
}

impl Metrics {
    /// A registry holding `pollux_build_info{version}`.
    pub fn new(version: &str) -> Metrics {
        let registry = Registry::new();
        registry
            .register(Box::new(BuildInfo::new(version)))
            .expect("an empty registry accepts the first collector");
        Metrics {
            registry,
            gauges: Mutex::new(HashMap::new()),
            next_source: AtomicU64::new(0),
        }
    }

    /// Adds the `pollux_reactor_*{core}` families for the reactors of
    /// `handle`. Once per registry.
    pub fn register_reactors(&self, handle: Handle) -> Result<(), MetricsError> {
        self.registry
            .register(Box::new(ReactorCollector::new(handle)))
            .map_err(MetricsError::Register)
    }

    /// Adds the `pollux_graph_*` and `pollux_bdev_*{bdev,op}` families for
    /// `graph`. Once per registry.
    pub fn register_graph(&self, graph: Arc<Graph>) -> Result<(), MetricsError> {
        self.registry
            .register(Box::new(GraphCollector::new(graph)))
            .map_err(MetricsError::Register)
    }

    /// Adds a source of `spec` gauges: at every scrape `source` returns
    /// (label value, value) pairs. Any number of sources may feed a family;
    /// each stops when its `GaugeRegistration` is dropped. A family with no
    /// sources is left out of the exposition.
    pub fn register_gauges(
        &self,
        spec: &'static GaugeSpec,
        source: impl Fn() -> Vec<(String, f64)> + Send + Sync + 'static,
    ) -> Result<GaugeRegistration, MetricsError> {
        self.register_family(
            (spec.name, spec.help, &spec.label),
            MetricType::GAUGE,
            source,
        )
    }

    /// Adds a source of `spec` counters, as `register_gauges` does for
    /// gauges: the source returns each series' running total.
    pub fn register_counters(
        &self,
        spec: &'static CounterSpec,
        source: impl Fn() -> Vec<(String, f64)> + Send + Sync + 'static,
    ) -> Result<GaugeRegistration, MetricsError> {
        self.register_family(
            (spec.name, spec.help, &spec.label),
            MetricType::COUNTER,
            source,
        )
    }

    /// Registers a source for the family (name, help, label) of `kind`.
    fn register_family(
        &self,
        (name, help, label): (&'static str, &'static str, &'static &'static str),
        kind: MetricType,
        source: impl Fn() -> Vec<(String, f64)> + Send + Sync + 'static,
    ) -> Result<GaugeRegistration, MetricsError> {
        let mut gauges = self.gauges.lock().unwrap_or_else(|e| e.into_inner());
        let family = match gauges.get(name) {
            Some(f) => {
                if f.spec.labels != [*label] || f.spec.help != help || f.spec.kind != kind {
                    return Err(MetricsError::GaugeMismatch {
                        name,
                        label: f.spec.labels[0],
                    });
                }
                f.clone()
            }
            None => {
                let family = Arc::new(GaugeFamily::new(FamilySpec {
                    name,
                    help,
                    kind,
                    labels: std::slice::from_ref(label),
                }));
                self.registry
                    .register(Box::new(SharedCollector(family.clone())))
                    .map_err(MetricsError::Register)?;
                gauges.insert(name, family.clone());
                family
            }
        };
        let id = self.next_source.fetch_add(1, Ordering::Relaxed);
        family
            .sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((id, Arc::new(source)));
        Ok(GaugeRegistration {
            family: Arc::downgrade(&family),
            id,
        })
    }

    /// The exposition in Prometheus' text format, read from every source now.
    pub fn encode(&self) -> Result<String, MetricsError> {
        let _span = tracing::debug_span!("metrics_scrape").entered();
        let families = self.registry.gather();
        let mut out = Vec::with_capacity(16 * 1024);
        TextEncoder::new()
            .encode(&families, &mut out)
            .map_err(MetricsError::Encode)?;
        // The text encoder only writes UTF-8 (names, escaped labels, numbers).
        Ok(String::from_utf8(out).expect("the text format is UTF-8"))
    }
}

/// Keeps a gauge source registered; dropping it removes the source.
#[must_use = "the source is removed when this is dropped"]
pub struct GaugeRegistration {
    family: Weak<GaugeFamily>,
    id: u64,
}

impl Drop for GaugeRegistration {
    fn drop(&mut self) {
        if let Some(f) = self.family.upgrade() {
            f.sources
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|(id, _)| *id != self.id);
        }
    }
}

/// Lets the registry own a collector that `Metrics` also keeps a handle to.
struct SharedCollector(Arc<GaugeFamily>);

impl Collector for SharedCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.0.desc()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.0.collect()
    }
}

#[cfg(test)]
mod tests;
