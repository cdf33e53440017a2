//! Building the configured bdevs into the graph.

use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use pollux_graph::nodes::{file::FileNode, null::NullNode, passthru::PassthruNode, ram::RamNode};
use pollux_graph::Graph;

use crate::config::{BdevConfig, BdevKind};

/// Adds every bdev to `graph`, children before their parents whatever the
/// order in the file (the config was checked for unknown children and cycles).
pub fn build_all(graph: &Arc<Graph>, bdevs: &[BdevConfig]) -> Result<()> {
    let mut pending: Vec<&BdevConfig> = bdevs.iter().collect();
    while !pending.is_empty() {
        let before = pending.len();
        let mut rest = Vec::new();
        for b in pending {
            let ready = match &b.kind {
                BdevKind::Passthru { child } => graph.node_geometry(child).is_some(),
                _ => true,
            };
            if ready {
                build(graph, b)?;
            } else {
                rest.push(b);
            }
        }
        if rest.len() == before {
            return Err(anyhow!("bdev {:?}: its child is not defined", rest[0].name));
        }
        pending = rest;
    }
    Ok(())
}

/// Adds one bdev.
pub fn build(graph: &Arc<Graph>, b: &BdevConfig) -> Result<()> {
    let name = b.name.as_str();
    match &b.kind {
        BdevKind::Null { size, block_size } => {
            graph.add_node(name, NullNode::new(*size, *block_size), &[])?;
        }
        BdevKind::Ram { size, block_size } => {
            let node = RamNode::new(*size, *block_size)
                .with_context(|| format!("bdev {name:?}: cannot allocate {size} bytes"))?;
            graph.add_node(name, node, &[])?;
        }
        BdevKind::File {
            path,
            direct,
            block_size,
        } => {
            let node = FileNode::open(path, *direct, *block_size)
                .with_context(|| format!("bdev {name:?}"))?;
            graph.add_node(name, node, &[])?;
        }
        BdevKind::Passthru { child } => {
            let geo = graph
                .node_geometry(child)
                .ok_or_else(|| anyhow!("bdev {name:?}: no bdev named {child:?}"))?;
            graph.add_node(name, PassthruNode::new(geo), &[child])?;
        }
    }
    tracing::info!(bdev = name, kind = ?b.kind, "bdev created");
    Ok(())
}
