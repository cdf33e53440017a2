//! The long-running daemon, until SIGINT or SIGTERM: the reactors, the
//! graph built from the config's bdevs, the NVMe/TCP front-end
//! ([`crate::nvmf::NvmfTarget`]), the vhost-user-blk front-end
//! ([`crate::vhost::VhostTargets`]), the Prometheus exporter and the
//! JSON-RPC server. It stops them in the opposite order of what depends on
//! what: the RPC server, the front-ends, the exporter, then the graph and
//! the reactors ([`Target::shutdown`]).

use std::sync::Arc;

use anyhow::{Context, Result};
use pollux_graph::Graph;
use pollux_poller::{IdlePolicy, Runtime, RuntimeConfig};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::bdev;
use crate::config::{Config, IdleMode};

/// Reactor settings from the config.
pub fn runtime_config(cfg: &Config) -> RuntimeConfig {
    let idle = match cfg.reactors.idle {
        IdleMode::Poll => IdlePolicy::Poll,
        IdleMode::Adaptive => IdlePolicy::Adaptive {
            idle_after: cfg.reactors.idle_after,
        },
    };
    RuntimeConfig::new(cfg.reactors.cores.clone(), idle)
}

/// A started target: reactors plus the graph built from the config.
pub struct Target {
    /// The graph; front-ends attach roots to it.
    pub graph: Arc<Graph>,
    /// The reactors. Dropped last.
    pub runtime: Runtime,
    /// Rate limits and throttle groups (the config's `[[qos]]` and
    /// `[[throttle_group]]`, then RPCs).
    pub qos: Arc<crate::qos::Qos>,
}

impl Target {
    /// Starts the reactors and builds the configured bdevs.
    pub fn start(cfg: &Config) -> Result<Target> {
        let runtime = Runtime::start(runtime_config(cfg)).context("starting reactors")?;
        let graph = Graph::new(runtime.handle());
        bdev::build_all(&graph, &cfg.bdevs)?;
        let qos = Arc::new(crate::qos::Qos::default());
        crate::qos::apply_config(&qos, &graph, &cfg.qos)?;
        Ok(Target {
            graph,
            runtime,
            qos,
        })
    }

    /// Orderly stop: unpublish everything, let in-flight I/O finish, close
    /// (flush) every node, then stop the reactors.
    pub fn shutdown(self) {
        self.graph.shutdown();
        self.runtime.shutdown();
    }
}

/// Command-line settings of a daemon run that are not in the config file.
pub struct RunOptions {
    /// The JSON-RPC socket path.
    pub rpc_socket: std::path::PathBuf,
    /// An SPDK-format JSON config to apply at start (`--json`).
    pub json_config: Option<std::path::PathBuf>,
}

/// Runs the daemon until SIGINT/SIGTERM, then shuts down cleanly.
pub fn run(cfg: Config, opts: RunOptions) -> Result<()> {
    // Register before starting anything so an early signal is not lost.
    let mut signals = Signals::new([SIGINT, SIGTERM]).context("installing signal handlers")?;
    let target = Target::start(&cfg)?;
    // Shared with the RPC methods, which change subsystems at run time.
    let nvmf = Arc::new(crate::nvmf::NvmfTarget::start(&cfg.nvmf, &target.graph)?);
    // Shared with the RPC methods, which create and delete controllers.
    let vhost = Arc::new(crate::vhost::VhostTargets::start(
        &cfg.vhost,
        &target.graph,
        target.runtime.handle(),
        cfg.reactors.idle == IdleMode::Adaptive,
    )?);
    let exporter = crate::exporter::Exporter::start(&cfg.metrics, &target)?;
    let vhost_gauge = {
        let vhost = vhost.clone();
        exporter
            .metrics
            .register_gauges(&pollux_metrics::VHOST_QUEUES, move || {
                vhost
                    .list()
                    .into_iter()
                    .map(|c| {
                        let started = c.session.map_or(0, |s| s.started_queues);
                        (c.ctrlr, started as f64)
                    })
                    .collect()
            })?
    };
    let nvmf_gauge = {
        let nvmf = nvmf.clone();
        exporter
            .metrics
            .register_gauges(&pollux_metrics::NVMF_CONNECTIONS, move || {
                nvmf.connections()
                    .into_iter()
                    .map(|(nqn, n)| (nqn, n as f64))
                    .collect()
            })?
    };
    let nvmf_requests_gauge = {
        let nvmf = nvmf.clone();
        exporter
            .metrics
            .register_gauges(&pollux_metrics::NVMF_REQUESTS, move || {
                nvmf.request_states()
                    .into_iter()
                    .map(|(state, n)| (state.to_owned(), n as f64))
                    .collect()
            })?
    };
    let nvme_metrics = crate::nvme_bdev::register_metrics(&exporter.metrics)?;
    let rpc_ctx = Arc::new(
        crate::rpc::RpcContext::new(target.graph.clone(), target.runtime.handle().clone())
            .with_vhost(vhost.clone())
            .with_nvmf(nvmf.clone())
            .with_qos(target.qos.clone()),
    );
    crate::rpc::record_config_bdevs(&rpc_ctx, &cfg.bdevs);
    let dispatcher = Arc::new(crate::rpc::Dispatcher::new(rpc_ctx));
    if let Some(path) = &opts.json_config {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        dispatcher
            .load_json_config(&json)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    }
    // After --json too: a job may stand on what it created.
    crate::rpc::start_config_mirrors(&dispatcher, &cfg.mirrors).map_err(anyhow::Error::msg)?;
    let rpc = crate::rpc::RpcServer::start(&opts.rpc_socket, dispatcher)?;
    let info = target.graph.describe();
    tracing::info!(
        reactors = ?cfg.reactors.cores,
        idle = ?cfg.reactors.idle,
        bdevs = ?info.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
        "pollux ready"
    );
    let sig = signals.forever().next();
    tracing::info!(signal = ?sig, "shutting down: draining I/O and flushing");
    // No control-plane change may race the teardown below.
    drop(rpc);
    // Front-ends first: stop accepting and drain queue pairs, so the graph
    // shutdown below flushes data that is no longer changing.
    nvmf.stop();
    drop(nvmf_gauge);
    drop(nvmf_requests_gauge);
    drop(vhost_gauge);
    drop(nvme_metrics);
    vhost.stop();
    exporter.shutdown();
    target.shutdown();
    // The graph closed (shut down) every controller; now free them.
    crate::nvme_bdev::clear();
    tracing::info!("stopped");
    Ok(())
}
