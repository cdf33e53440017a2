//! Building the configured bdevs into the graph.

use std::io;
use std::sync::Arc;

use pollux_graph::nodes::delay::{DelayLatencies, DelayNode};
use pollux_graph::nodes::error::ErrorNode;
use pollux_graph::nodes::file::{FileError, FileNode};
use pollux_graph::nodes::raid::{Array, RaidError};
use pollux_graph::nodes::split::{SplitError, SplitPlan};
use pollux_graph::nodes::{null::NullNode, passthru::PassthruNode, ram::RamNode};
use pollux_graph::{Graph, GraphError};

use crate::config::{BdevConfig, BdevKind};

/// Why a bdev could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BdevError {
    /// The graph refused the node (name taken, ...).
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// A RAM disk's memory could not be allocated.
    #[error("bdev {name:?}: cannot allocate {size} bytes: {source}")]
    Alloc {
        /// The bdev.
        name: String,
        /// Bytes asked for.
        size: u64,
        /// Why.
        source: io::Error,
    },
    /// A file bdev's path could not be opened as one.
    #[error("bdev {name:?}: {source}")]
    File {
        /// The bdev.
        name: String,
        /// Why.
        source: FileError,
    },
    /// An NVMe controller could not be attached (the message names the
    /// device and says what to do).
    #[error(transparent)]
    Nvme(#[from] crate::nvme_bdev::NvmeBdevError),
    /// A RAID array could not be built.
    #[error("bdev {name:?}: {source}")]
    Raid {
        /// The array.
        name: String,
        /// Why.
        source: RaidError,
    },
    /// A base cannot be split as asked.
    #[error("split of {base:?}: {source}")]
    Split {
        /// The base.
        base: String,
        /// Why.
        source: SplitError,
    },
    /// A passthru's base bdev does not exist.
    #[error("bdev {name:?}: no bdev named {child:?}")]
    NoSuchBase {
        /// The bdev.
        name: String,
        /// The missing base.
        child: String,
    },
}

/// Adds every bdev to `graph`, children before their parents whatever the
/// order in the file (the config was checked for unknown children and cycles).
pub fn build_all(graph: &Arc<Graph>, bdevs: &[BdevConfig]) -> Result<(), BdevError> {
    let mut pending: Vec<&BdevConfig> = bdevs.iter().collect();
    while !pending.is_empty() {
        let before = pending.len();
        let mut rest = Vec::new();
        for b in pending {
            let ready = match &b.kind {
                BdevKind::Raid(r) => r
                    .base_bdevs
                    .iter()
                    .all(|m| graph.node_geometry(m).is_some()),
                k => k.child().is_none_or(|c| graph.node_geometry(c).is_some()),
            };
            if ready {
                build(graph, b)?;
            } else {
                rest.push(b);
            }
        }
        if rest.len() == before {
            // No waiting child appeared: building the first waiter fails
            // naming the child it lacks (and if it has appeared since, the
            // waiter is built and the loop goes on).
            build(graph, rest.remove(0))?;
        }
        pending = rest;
    }
    Ok(())
}

/// The geometry of `child`, the base of bdev `name`.
fn base_geometry(
    graph: &Graph,
    name: &str,
    child: &str,
) -> Result<pollux_graph::Geometry, BdevError> {
    graph
        .node_geometry(child)
        .ok_or_else(|| BdevError::NoSuchBase {
            name: name.to_owned(),
            child: child.to_owned(),
        })
}

/// Adds one bdev.
pub fn build(graph: &Arc<Graph>, b: &BdevConfig) -> Result<(), BdevError> {
    let name = b.name.as_str();
    match &b.kind {
        BdevKind::Null {
            size,
            block_size,
            read_zeroes,
        } => {
            let node = NullNode::new(*size, *block_size).with_read_zeroes(*read_zeroes);
            graph.add_node(name, node, &[])?;
        }
        BdevKind::Ram { size, block_size } => {
            let node = RamNode::new(*size, *block_size).map_err(|source| BdevError::Alloc {
                name: name.to_owned(),
                size: *size,
                source,
            })?;
            graph.add_node(name, node, &[])?;
        }
        BdevKind::File {
            path,
            direct,
            block_size,
        } => {
            let node =
                FileNode::open(path, *direct, *block_size).map_err(|source| BdevError::File {
                    name: name.to_owned(),
                    source,
                })?;
            graph.add_node(name, node, &[])?;
        }
        BdevKind::Passthru { child } => {
            let geo = graph
                .node_geometry(child)
                .ok_or_else(|| BdevError::NoSuchBase {
                    name: name.to_owned(),
                    child: child.clone(),
                })?;
            graph.add_node(name, PassthruNode::new(geo), &[child])?;
        }
        BdevKind::Delay {
            child,
            latencies_us,
        } => {
            let geo = base_geometry(graph, name, child)?;
            let lat = Arc::new(DelayLatencies::new(*latencies_us));
            graph.add_node(name, DelayNode::new(geo, lat), &[child])?;
        }
        BdevKind::Error { child } => {
            let geo = base_geometry(graph, name, child)?;
            graph.add_node(name, ErrorNode::new(geo), &[child])?;
        }
        BdevKind::Nvme {
            pci,
            io_queue_depth,
        } => {
            crate::nvme_bdev::attach(graph, name, pci, *io_queue_depth)?;
        }
        BdevKind::Split {
            base_bdev,
            split_count,
            split_size_mb,
        } => {
            let base = base_geometry(graph, name, base_bdev)?;
            let plan = SplitPlan::new(base, *split_count, *split_size_mb).map_err(|source| {
                BdevError::Split {
                    base: base_bdev.clone(),
                    source,
                }
            })?;
            if plan.count < *split_count {
                tracing::warn!(
                    base = %base_bdev,
                    asked = split_count,
                    count = plan.count,
                    "split count is greater than the maximum possible; clamping"
                );
            }
            for i in 0..plan.count {
                let part = crate::config::split_part_name(base_bdev, i);
                graph.add_node(&part, plan.part(base, i), &[base_bdev])?;
            }
        }
        BdevKind::Raid(r) => {
            let members: Vec<&str> = r.base_bdevs.iter().map(String::as_str).collect();
            Array::create(graph, name, r.level, r.strip_size_kb, &members).map_err(|source| {
                BdevError::Raid {
                    name: name.to_owned(),
                    source,
                }
            })?;
        }
    }
    tracing::info!(bdev = name, kind = ?b.kind, "bdev created");
    Ok(())
}
