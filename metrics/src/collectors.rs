//! The collectors: each reads its source's per-reactor shards when the
//! registry is gathered (at scrape time) and sums them there, so nothing is
//! written on the I/O path for the sake of metrics beyond the owner-only
//! shard counters the graph and the reactors keep anyway.

use std::sync::{Arc, Mutex};

use pollux_graph::{Graph, IoOp};
use pollux_poller::Handle;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;

use crate::family::{FamilySpec, MetricType};

/// Nanoseconds per second.
const NS_PER_S: f64 = 1e9;

// ---------------------------------------------------------------------------
// Build information.

pub(crate) const BUILD_INFO: FamilySpec = FamilySpec {
    name: "pollux_build_info",
    help: "Always 1; the version label identifies the running Pollux.",
    kind: MetricType::GAUGE,
    labels: &["version"],
};

pub(crate) struct BuildInfo {
    version: String,
    desc: Desc,
}

impl BuildInfo {
    pub(crate) fn new(version: &str) -> Self {
        BuildInfo {
            version: version.to_owned(),
            desc: BUILD_INFO.desc(),
        }
    }
}

impl Collector for BuildInfo {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut f = BUILD_INFO.family();
        f.value(&[&self.version], 1.0);
        vec![f.build()]
    }
}

// ---------------------------------------------------------------------------
// Reactors.

pub(crate) const REACTOR_FAMILIES: [FamilySpec; 4] = [
    FamilySpec {
        name: "pollux_reactor_polls_total",
        help: "Poll-loop iterations of the reactor pinned to this core.",
        kind: MetricType::COUNTER,
        labels: &["core"],
    },
    FamilySpec {
        name: "pollux_reactor_busy_seconds_total",
        help: "Time the reactor spent in iterations that found work.",
        kind: MetricType::COUNTER,
        labels: &["core"],
    },
    FamilySpec {
        name: "pollux_reactor_idle_seconds_total",
        help: "Time the reactor spent in iterations that found no work, sleep included.",
        kind: MetricType::COUNTER,
        labels: &["core"],
    },
    FamilySpec {
        name: "pollux_reactor_messages_total",
        help: "Messages the reactor took from its inbox.",
        kind: MetricType::COUNTER,
        labels: &["core"],
    },
];

/// Reads every reactor's stats (each written only by its reactor).
pub(crate) struct ReactorCollector {
    handle: Handle,
    descs: Vec<Desc>,
}

impl ReactorCollector {
    pub(crate) fn new(handle: Handle) -> Self {
        ReactorCollector {
            handle,
            descs: REACTOR_FAMILIES.iter().map(FamilySpec::desc).collect(),
        }
    }
}

impl Collector for ReactorCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let [polls, busy, idle, messages] = &REACTOR_FAMILIES;
        let (mut polls, mut busy, mut idle, mut messages) = (
            polls.family(),
            busy.family(),
            idle.family(),
            messages.family(),
        );
        for info in self.handle.reactors() {
            let st = self.handle.stats(info.index);
            let core = info.core.to_string();
            let l = [core.as_str()];
            polls.value(&l, st.polls as f64);
            busy.value(&l, st.busy_ns as f64 / NS_PER_S);
            idle.value(&l, st.idle_ns as f64 / NS_PER_S);
            messages.value(&l, st.messages as f64);
        }
        vec![polls.build(), busy.build(), idle.build(), messages.build()]
    }
}

// ---------------------------------------------------------------------------
// The graph: publication counters and per-bdev I/O.

pub(crate) const GRAPH_GENERATION: FamilySpec = FamilySpec {
    name: "pollux_graph_generation",
    help: "Publication number of the current block graph.",
    kind: MetricType::GAUGE,
    labels: &[],
};
pub(crate) const GRAPH_PUBLISHES: FamilySpec = FamilySpec {
    name: "pollux_graph_publishes_total",
    help: "Block-graph snapshots published (one per control-plane change).",
    kind: MetricType::COUNTER,
    labels: &[],
};
pub(crate) const GRAPH_RECLAIMED: FamilySpec = FamilySpec {
    name: "pollux_graph_reclaimed_total",
    help: "Superseded graph snapshots freed after their grace period.",
    kind: MetricType::COUNTER,
    labels: &[],
};
pub(crate) const GRAPH_NODES_CLOSED: FamilySpec = FamilySpec {
    name: "pollux_graph_nodes_closed_total",
    help: "Bdevs closed after leaving the graph and draining their I/O.",
    kind: MetricType::COUNTER,
    labels: &[],
};
pub(crate) const GRAPH_GRACE: FamilySpec = FamilySpec {
    name: "pollux_graph_grace_period_seconds",
    help: "Time each graph publication waited for every reactor to pass a quiescent point.",
    kind: MetricType::HISTOGRAM,
    labels: &[],
};
pub(crate) const BDEV_OPS: FamilySpec = FamilySpec {
    name: "pollux_bdev_ops_total",
    help: "I/O operations completed successfully by the bdev.",
    kind: MetricType::COUNTER,
    labels: &["bdev", "op"],
};
pub(crate) const BDEV_BYTES: FamilySpec = FamilySpec {
    name: "pollux_bdev_bytes_total",
    help: "Bytes moved (or covered, for write_zeroes and discard) by successful I/O.",
    kind: MetricType::COUNTER,
    labels: &["bdev", "op"],
};
pub(crate) const BDEV_ERRORS: FamilySpec = FamilySpec {
    name: "pollux_bdev_errors_total",
    help: "I/O operations that failed at or below the bdev.",
    kind: MetricType::COUNTER,
    labels: &["bdev", "op"],
};
pub(crate) const BDEV_LATENCY: FamilySpec = FamilySpec {
    name: "pollux_bdev_latency_seconds",
    help: "Latency of successful I/O from submission to the graph until completion.",
    kind: MetricType::HISTOGRAM,
    labels: &["bdev", "op"],
};
pub(crate) const BDEV_INFLIGHT: FamilySpec = FamilySpec {
    name: "pollux_bdev_inflight",
    help: "I/O operations in flight on the bdev.",
    kind: MetricType::GAUGE,
    labels: &["bdev"],
};

pub(crate) const GRAPH_FAMILIES: [FamilySpec; 10] = [
    GRAPH_GENERATION,
    GRAPH_PUBLISHES,
    GRAPH_RECLAIMED,
    GRAPH_NODES_CLOSED,
    GRAPH_GRACE,
    BDEV_OPS,
    BDEV_BYTES,
    BDEV_ERRORS,
    BDEV_LATENCY,
    BDEV_INFLIGHT,
];

/// Reads the graph's counters and every node's per-reactor shards.
pub(crate) struct GraphCollector {
    graph: Arc<Graph>,
    descs: Vec<Desc>,
}

impl GraphCollector {
    pub(crate) fn new(graph: Arc<Graph>) -> Self {
        GraphCollector {
            graph,
            descs: GRAPH_FAMILIES.iter().map(FamilySpec::desc).collect(),
        }
    }
}

impl Collector for GraphCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let gs = self.graph.stats();
        let mut out = Vec::with_capacity(GRAPH_FAMILIES.len());
        let mut f = GRAPH_GENERATION.family();
        f.value(&[], gs.generation as f64);
        out.push(f.build());
        for (spec, v) in [
            (GRAPH_PUBLISHES, gs.publishes),
            (GRAPH_RECLAIMED, gs.reclaimed),
            (GRAPH_NODES_CLOSED, gs.nodes_closed),
        ] {
            let mut f = spec.family();
            f.value(&[], v as f64);
            out.push(f.build());
        }
        let mut f = GRAPH_GRACE.family();
        f.histogram(&[], &gs.grace_periods);
        out.push(f.build());

        let (mut ops, mut bytes, mut errors, mut latency, mut inflight) = (
            BDEV_OPS.family(),
            BDEV_BYTES.family(),
            BDEV_ERRORS.family(),
            BDEV_LATENCY.family(),
            BDEV_INFLIGHT.family(),
        );
        for node in self.graph.describe().nodes {
            // A node removed since `describe` simply drops out of this scrape.
            let Some(st) = self.graph.node_stats(&node.name) else {
                continue;
            };
            let bdev = node.name.as_str();
            for op in IoOp::ALL {
                let (i, l) = (op.as_index(), [bdev, op.name()]);
                ops.value(&l, st.ops[i] as f64);
                bytes.value(&l, st.bytes[i] as f64);
                errors.value(&l, st.errors[i] as f64);
                // An op whose histogram is off (`bdev_enable_histogram`)
                // has no latency series: a frozen one would read as "no
                // I/O" while the op counter moves.
                if st.histogram.has_index(i) {
                    latency.histogram(&l, &st.latency[i]);
                }
            }
            inflight.value(&[bdev], st.inflight as f64);
        }
        out.extend([
            ops.build(),
            bytes.build(),
            errors.build(),
            latency.build(),
            inflight.build(),
        ]);
        out
    }
}

// ---------------------------------------------------------------------------
// Front-end gauges.

/// What a gauge source reports: (label value, gauge value) pairs.
pub(crate) type GaugeFn = dyn Fn() -> Vec<(String, f64)> + Send + Sync;

/// One gauge family fed by any number of sources (say, one per front-end
/// instance); sources come and go with the front-ends.
pub(crate) struct GaugeFamily {
    pub(crate) spec: FamilySpec,
    desc: Desc,
    pub(crate) sources: Mutex<Vec<(u64, Arc<GaugeFn>)>>,
}

impl GaugeFamily {
    pub(crate) fn new(spec: FamilySpec) -> Self {
        GaugeFamily {
            desc: spec.desc(),
            spec,
            sources: Mutex::new(Vec::new()),
        }
    }
}

impl Collector for GaugeFamily {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        // Clone the list out so a slow source does not hold the lock that
        // (un)registering front-ends take.
        let sources: Vec<Arc<GaugeFn>> = self
            .sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(_, f)| f.clone())
            .collect();
        let mut f = self.spec.family();
        for source in sources {
            for (label, v) in source() {
                f.value(&[&label], v);
            }
        }
        // With no sources the family is empty; the registry leaves it out.
        vec![f.build()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spec_is_a_valid_descriptor() {
        let all = REACTOR_FAMILIES
            .iter()
            .chain(&GRAPH_FAMILIES)
            .chain([&BUILD_INFO]);
        for spec in all {
            let d = spec.desc();
            assert_eq!(d.fq_name, spec.name);
            assert!(spec.name.starts_with("pollux_"), "{}", spec.name);
            // Prometheus naming: counters end in _total, and no other kind does.
            assert_eq!(
                spec.kind == MetricType::COUNTER,
                spec.name.ends_with("_total"),
                "{}",
                spec.name
            );
        }
    }
}
