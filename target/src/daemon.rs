//! The long-running daemon: reactors, the graph and (later) front-ends,
//! until SIGINT or SIGTERM.

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
}

impl Target {
    /// Starts the reactors and builds the configured bdevs.
    pub fn start(cfg: &Config) -> Result<Target> {
        let runtime = Runtime::start(runtime_config(cfg)).context("starting reactors")?;
        let graph = Graph::new(runtime.handle());
        bdev::build_all(&graph, &cfg.bdevs)?;
        Ok(Target { graph, runtime })
    }

    /// Orderly stop: unpublish everything, let in-flight I/O finish, close
    /// (flush) every node, then stop the reactors.
    pub fn shutdown(self) {
        self.graph.shutdown();
        self.runtime.shutdown();
    }
}

/// Runs the daemon until SIGINT/SIGTERM, then shuts down cleanly.
pub fn run(cfg: Config) -> Result<()> {
    // Register before starting anything so an early signal is not lost.
    let mut signals = Signals::new([SIGINT, SIGTERM]).context("installing signal handlers")?;
    let target = Target::start(&cfg)?;
    let info = target.graph.describe();
    tracing::info!(
        reactors = ?cfg.reactors.cores,
        idle = ?cfg.reactors.idle,
        bdevs = ?info.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
        "pollux ready"
    );
    let sig = signals.forever().next();
    tracing::info!(signal = ?sig, "shutting down: draining I/O and flushing");
    target.shutdown();
    tracing::info!("stopped");
    Ok(())
}
