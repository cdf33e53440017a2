//! Pollux's own graph methods: inspect the published graph and change it
//! live (every change is one RCU publication while I/O runs).

use serde::Deserialize;
use serde_json::{json, Value};

use crate::rpc::jsonrpc::{params, NoParams, RpcError};
use crate::rpc::Dispatcher;
use pollux_graph::GraphError;

pub(super) fn register(d: &mut Dispatcher) {
    d.register("pollux_graph_get", pollux_graph_get);
    d.register("pollux_graph_insert_filter", pollux_graph_insert_filter);
    d.register("pollux_graph_remove_filter", pollux_graph_remove_filter);
    d.register("pollux_graph_replace_child", pollux_graph_replace_child);
    // Filters stand on bdevs and on what front-ends attached (roots), so
    // they are replayed last.
    d.register_subsystem(crate::rpc::Subsystem {
        name: "pollux_graph",
        depends_on: &["bdev"],
        writer: |d| d.ctx.filters().clone(),
    });
}

fn pollux_graph_get(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let NoParams {} = params(p)?;
    let g = d.ctx.graph.describe();
    let nodes: Vec<Value> = g
        .nodes
        .iter()
        .map(|n| {
            json!({
                "name": n.name,
                "kind": n.kind,
                "block_size": n.geometry.block_size,
                "num_blocks": n.geometry.block_count,
            })
        })
        .collect();
    let edges: Vec<Value> = g
        .nodes
        .iter()
        .flat_map(|n| {
            n.children
                .iter()
                .map(move |c| json!({"parent": n.name, "child": c}))
        })
        .collect();
    let roots: Vec<Value> = g
        .roots
        .iter()
        .map(|r| json!({"name": r.name, "node": r.node}))
        .collect();
    Ok(json!({"generation": g.generation, "nodes": nodes, "edges": edges, "roots": roots}))
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct FilterSpec {
    name: String,
    kind: String,
    /// The kind's own settings (`delay`: the four `bdev_delay_create`
    /// latencies, default 0); none for `passthru` and `error`.
    #[serde(default)]
    params: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InsertFilter {
    node: String,
    filter: FilterSpec,
}

fn pollux_graph_insert_filter(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let p: InsertFilter = params(p)?;
    let geo = d
        .ctx
        .graph
        .node_geometry(&p.node)
        .ok_or_else(|| GraphError::NoSuchNode(p.node.clone()))?;
    super::filters::insert_filter(
        d,
        &p.node,
        &p.filter.name,
        &p.filter.kind,
        p.filter.params.clone(),
        geo,
    )?;
    let mut filter = json!({"name": p.filter.name, "kind": p.filter.kind});
    if let Some(fp) = &p.filter.params {
        filter["params"] = fp.clone();
    }
    d.ctx.filters().push(json!({
        "method": "pollux_graph_insert_filter",
        "params": {"node": p.node, "filter": filter},
    }));
    Ok(json!(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveFilter {
    name: String,
}

fn pollux_graph_remove_filter(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let p: RemoveFilter = params(p)?;
    d.ctx.graph.remove_filter(&p.name)?;
    d.ctx
        .filters()
        .retain(|f| f["params"]["filter"]["name"].as_str() != Some(p.name.as_str()));
    Ok(json!(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplaceChild {
    node: String,
    old: String,
    new: String,
}

fn pollux_graph_replace_child(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let p: ReplaceChild = params(p)?;
    d.ctx.graph.replace_child(&p.node, &p.old, &p.new)?;
    // A passthru bdev's base is part of how save_config recreates it.
    if let Some(rec) = d.ctx.bdevs().get_mut(&p.node) {
        if rec.params.get("base_bdev_name").and_then(Value::as_str) == Some(p.old.as_str()) {
            rec.params["base_bdev_name"] = json!(p.new);
        }
    }
    Ok(json!(true))
}
