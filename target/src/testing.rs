//! The fixture every unit test of the crate that needs reactors starts
//! from: a runtime and its block graph, torn down in the order the daemon
//! tears them down, and the one-namespace NVMe-oF subsystem the nvmf tests
//! export.

use std::sync::Arc;
use std::time::Duration;

use pollux_graph::nodes::ram::RamNode;
use pollux_graph::Graph;
use pollux_poller::{IdlePolicy, Runtime, RuntimeConfig};

use crate::config::{NvmfSubsystemConfig, DEFAULT_IDLE_AFTER_US};

/// Block size of the RAM nodes the tests add: the smallest a node has, so
/// any test transfer of whole sectors is whole blocks.
pub(crate) const RAM_BLOCK_SIZE: u32 = 512;

/// Reactors and a block graph over them. Dropping it shuts the graph down
/// (closing its nodes on their reactors), then stops and joins the
/// reactors; whatever a test started on top (a front-end) it stops first.
pub(crate) struct Reactors {
    // Declared before `graph`: dropped (joined) right after `Drop::drop`
    // shut the graph down, before the graph's last reference goes.
    rt: Runtime,
    pub(crate) graph: Arc<Graph>,
}

impl Reactors {
    /// Reactors on `cores` with `idle`, and an empty graph.
    pub(crate) fn start(cores: Vec<usize>, idle: IdlePolicy) -> Reactors {
        let rt = Runtime::start(RuntimeConfig::new(cores, idle)).unwrap();
        let graph = Graph::new(rt.handle());
        Reactors { rt, graph }
    }

    /// Adaptive reactors on `cores`, as a default config runs them.
    pub(crate) fn adaptive(cores: Vec<usize>) -> Reactors {
        Reactors::start(
            cores,
            IdlePolicy::Adaptive {
                idle_after: Duration::from_micros(DEFAULT_IDLE_AFTER_US),
            },
        )
    }

    /// Adds a RAM node `name` of `bytes` in [`RAM_BLOCK_SIZE`] blocks.
    pub(crate) fn add_ram(&self, name: &str, bytes: u64) {
        self.graph
            .add_node(name, RamNode::new(bytes, RAM_BLOCK_SIZE).unwrap(), &[])
            .unwrap();
    }

    pub(crate) fn runtime(&self) -> &Runtime {
        &self.rt
    }
}

impl Drop for Reactors {
    fn drop(&mut self) {
        self.graph.shutdown();
    }
}

/// Subsystem `nqn` with `namespace` as namespace 1, open to any host, on an
/// ephemeral loopback port (the tests' host reads it back from the
/// target).
pub(crate) fn loopback_subsystem(nqn: &str, namespace: &str) -> NvmfSubsystemConfig {
    NvmfSubsystemConfig {
        nqn: nqn.into(),
        serial: "SN0001".into(),
        model: "Pollux".into(),
        namespaces: vec![namespace.into()],
        allow_any_host: true,
        hosts: vec![],
        listen: vec!["127.0.0.1:0".parse().unwrap()],
    }
}
