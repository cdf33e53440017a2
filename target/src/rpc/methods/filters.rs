//! The stacked bdevs SPDK users compose: split (`bdev_split_*`), error
//! injection (`bdev_error_*`) and delay (`bdev_delay_*`), with SPDK's
//! method and param names. Each is a graph node above its base
//! (`pollux_graph::nodes::{split, error, delay}`), recorded for
//! `save_config` like every bdev.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Value};

use super::bdev::{check_uuid, lacks, record};
use crate::config::split_part_name;
use crate::rpc::errors::errno;
use crate::rpc::jsonrpc::{params, RpcError};
use crate::rpc::{Dispatcher, RpcContext};
use pollux_graph::nodes::delay::{DelayKind, DelayLatencies, DelayNode};
use pollux_graph::nodes::error::{resume_pending, ErrorIoType, ErrorNode, ErrorType, Injection};
use pollux_graph::nodes::split::{SplitError, SplitPlan};
use pollux_graph::GraphError;

pub(super) fn register(d: &mut Dispatcher) {
    d.register("bdev_split_create", bdev_split_create);
    d.register("bdev_split_delete", bdev_split_delete);
    d.register("bdev_error_create", bdev_error_create);
    d.register("bdev_error_delete", bdev_error_delete);
    d.register("bdev_error_inject_error", bdev_error_inject_error);
    d.register("bdev_error_resume_pending", bdev_error_resume_pending);
    d.register("bdev_delay_create", bdev_delay_create);
    d.register("bdev_delay_delete", bdev_delay_delete);
    d.register("bdev_delay_update_latency", bdev_delay_update_latency);
}

/// A name no bdev has yet.
fn check_free(d: &Dispatcher, name: &str) -> Result<(), RpcError> {
    if d.ctx.bdevs().contains_key(name) || d.ctx.graph.node_geometry(name).is_some() {
        return Err(GraphError::NameExists(name.into()).into());
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SplitCreate {
    base_bdev: String,
    split_count: u64,
    split_size_mb: Option<u64>,
}

/// SPDK's vbdev_split: `split_count` parts named `<base>p<i>`, each
/// `split_size_mb` MiB or, without it, an equal share of the base; a
/// count that does not fit is clamped to what does. Answers the names.
fn bdev_split_create(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let p: SplitCreate = params(p)?;
    if p.split_count == 0 {
        return Err(RpcError::errno(errno::EINVAL, SplitError::ZeroCount));
    }
    if d.ctx.graph.node_geometry(&p.base_bdev).is_none() {
        return Err(RpcError::no_such_bdev(&p.base_bdev));
    }
    if split_parts(d, &p.base_bdev).next().is_some() {
        return Err(RpcError::errno(
            errno::EEXIST,
            format!(
                "split bdev config for base bdev {:?} already exists",
                p.base_bdev
            ),
        ));
    }
    let size_mb = p.split_size_mb.unwrap_or(0);
    let names = split_create(d, &p.base_bdev, p.split_count, size_mb)?;
    Ok(json!(names))
}

/// Builds the parts of `base` (all or none) and records them.
fn split_create(
    d: &Dispatcher,
    base_bdev: &str,
    split_count: u64,
    split_size_mb: u64,
) -> Result<Vec<String>, RpcError> {
    let base = d
        .ctx
        .graph
        .node_geometry(base_bdev)
        .ok_or_else(|| RpcError::no_such_bdev(base_bdev))?;
    let plan = SplitPlan::new(base, split_count, split_size_mb)
        .map_err(|e| RpcError::errno(errno::EINVAL, e))?;
    if plan.count < split_count {
        tracing::warn!(
            base = %base_bdev,
            asked = split_count,
            count = plan.count,
            "split count is greater than the maximum possible; clamping"
        );
    }
    let names: Vec<String> = (0..plan.count)
        .map(|i| split_part_name(base_bdev, i))
        .collect();
    for n in &names {
        check_free(d, n)?;
    }
    for (i, n) in names.iter().enumerate() {
        if let Err(e) = d
            .ctx
            .graph
            .add_node(n, plan.part(base, i as u64), &[base_bdev])
        {
            // All or nothing, as SPDK builds the parts in one go.
            for made in &names[..i] {
                let _ = d.ctx.graph.remove_node(made);
            }
            return Err(e.into());
        }
    }
    record_split(&d.ctx, base_bdev, split_count, split_size_mb);
    Ok(names)
}

/// Records the parts of `base` in the graph (from `bdev_split_create` or
/// the TOML `split` kind) for `save_config` and `bdev_get_bdevs`.
pub(super) fn record_split(
    ctx: &RpcContext,
    base_bdev: &str,
    split_count: u64,
    split_size_mb: u64,
) {
    let params = json!({
        "base_bdev": base_bdev,
        "split_count": split_count,
        "split_size_mb": split_size_mb,
    });
    let parts = (0..split_count)
        .map(|i| split_part_name(base_bdev, i))
        .take_while(|n| ctx.graph.node_geometry(n).is_some());
    for (i, n) in parts.enumerate() {
        record(ctx, &n, "bdev_split_create", params.clone(), None);
        // One `bdev_split_create` rebuilds every part: replay the first.
        // Its params are SPDK's, which take no UUID (parts get their own).
        if let Some(r) = ctx.bdevs().get_mut(&n) {
            r.replay = i == 0;
            if let Some(o) = r.params.as_object_mut() {
                o.remove("uuid");
            }
        }
    }
}

/// One MiB, the unit of `split_size_mb`.
const MIB: u64 = 1 << 20;

/// After a resize: the equal-share splits whose base no longer divides
/// into their parts are recorded with their part size, so that
/// save_config replays the parts where they are, not as new shares of
/// the new size. (The split node refuses a base resize under parts that
/// are not whole MiB, which `split_size_mb` could not say.)
pub(super) fn pin_split_sizes(ctx: &RpcContext) {
    let recs: Vec<(String, String, u64)> = ctx
        .bdevs()
        .iter()
        .filter(|(_, r)| {
            r.method == "bdev_split_create"
                && r.params.get("split_size_mb").and_then(Value::as_u64) == Some(0)
        })
        .filter_map(|(n, r)| {
            let base = r.params.get("base_bdev")?.as_str()?.to_owned();
            let count = r.params.get("split_count")?.as_u64()?;
            Some((n.clone(), base, count))
        })
        .collect();
    for (part, base, count) in recs {
        let (Some(p), Some(b)) = (
            ctx.graph.node_geometry(&part),
            ctx.graph.node_geometry(&base),
        ) else {
            continue;
        };
        if b.block_count / count == p.block_count {
            continue;
        }
        if p.size() % MIB != 0 {
            tracing::warn!(part, base, "save_config cannot keep this split's layout");
            continue;
        }
        if let Some(r) = ctx.bdevs().get_mut(&part) {
            r.params["split_size_mb"] = json!(p.size() / MIB);
        }
        tracing::info!(
            part,
            base,
            size_mb = p.size() / MIB,
            "split replayed with its part size from now on"
        );
    }
}

/// The parts split off `base`, by name.
fn split_parts<'a>(d: &'a Dispatcher, base: &'a str) -> impl Iterator<Item = String> + 'a {
    let recs = d.ctx.bdevs().clone();
    recs.into_iter()
        .filter(move |(_, r)| {
            r.method == "bdev_split_create"
                && r.params.get("base_bdev").and_then(Value::as_str) == Some(base)
        })
        .map(|(n, _)| n)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SplitDelete {
    base_bdev: String,
}

fn bdev_split_delete(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let p: SplitDelete = params(p)?;
    let parts: Vec<String> = split_parts(d, &p.base_bdev).collect();
    if parts.is_empty() {
        return Err(RpcError::no_such_bdev(&p.base_bdev));
    }
    // Refuse before removing any: a part in use keeps them all.
    for n in &parts {
        let users = d.ctx.graph.describe();
        let used = users.nodes.iter().any(|x| x.children.contains(n))
            || users.roots.iter().any(|r| &r.node == n);
        if used {
            return Err(GraphError::InUse {
                name: n.clone(),
                users: "an export or a bdev above it".into(),
            }
            .into());
        }
    }
    for n in &parts {
        d.ctx.graph.remove_node(n)?;
        d.ctx.bdevs().remove(n);
    }
    Ok(json!(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ErrorCreate {
    base_name: String,
    uuid: Option<String>,
}

/// SPDK's error bdev: `EE_<base>` over the base, injecting nothing yet.
fn bdev_error_create(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let p: ErrorCreate = params(p)?;
    let uuid = check_uuid(p.uuid)?;
    let geo = d
        .ctx
        .graph
        .node_geometry(&p.base_name)
        .ok_or_else(|| RpcError::no_such_bdev(&p.base_name))?;
    let name = format!("EE_{}", p.base_name);
    check_free(d, &name)?;
    d.ctx
        .graph
        .add_node(&name, ErrorNode::new(geo), &[&p.base_name])?;
    record(
        &d.ctx,
        &name,
        "bdev_error_create",
        json!({"base_name": p.base_name}),
        uuid,
    );
    Ok(json!(name))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Named {
    name: String,
}

/// The error node called `name` (made by `bdev_error_create`, or put
/// above a node with `pollux_graph_insert_filter`): its id and injection
/// table.
fn error_node(
    d: &Dispatcher,
    name: &str,
) -> Result<(u64, Arc<pollux_graph::nodes::error::ErrorInjection>), RpcError> {
    d.ctx
        .graph
        .with_node(name, |n: &ErrorNode| (n.id(), n.injection().clone()))
        .ok_or_else(|| RpcError::no_such_bdev(name))
}

fn bdev_error_delete(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let p: Named = params(p)?;
    let made_here = d
        .ctx
        .bdevs()
        .get(&p.name)
        .is_some_and(|r| r.method == "bdev_error_create");
    if !made_here {
        return Err(RpcError::no_such_bdev(&p.name));
    }
    error_node(d, &p.name)?;
    // Refused while in use, before anything changes.
    let g = d.ctx.graph.describe();
    let used = g.nodes.iter().any(|x| x.children.contains(&p.name))
        || g.roots.iter().any(|r| r.node == p.name);
    if used {
        return Err(GraphError::InUse {
            name: p.name,
            users: "an export or a bdev above it".into(),
        }
        .into());
    }
    // Held `pending` I/O fails when the node retires
    // (`ErrorNode::retiring`), as an SPDK reset aborts it.
    d.ctx.graph.remove_node(&p.name)?;
    d.ctx.bdevs().remove(&p.name);
    Ok(json!(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InjectError {
    name: String,
    io_type: String,
    error_type: String,
    num: Option<u32>,
    queue_depth: Option<u64>,
    corrupt_offset: Option<u64>,
    corrupt_value: Option<u8>,
    nvme_sct: Option<u32>,
    nvme_sc: Option<u32>,
}

fn bdev_error_inject_error(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let p: InjectError = params(p)?;
    let classes: Vec<ErrorIoType> = match p.io_type.as_str() {
        "all" => ErrorIoType::ALL.to_vec(),
        "clear" => Vec::new(),
        t => vec![ErrorIoType::ALL
            .into_iter()
            .find(|c| c.name() == t)
            .ok_or_else(|| {
                RpcError::invalid_params(format!(
                    "io_type: {t:?} is not one of read, write, unmap, flush, all, clear"
                ))
            })?],
    };
    let error_type = ErrorType::from_name(&p.error_type).ok_or_else(|| {
        RpcError::invalid_params(format!(
            "error_type: {:?} is not one of failure, nvme_failure, pending, corrupt_data, nomem",
            p.error_type
        ))
    })?;
    let (sct, sc) = (p.nvme_sct.unwrap_or(0), p.nvme_sc.unwrap_or(0));
    let nvme_status = if error_type == ErrorType::NvmeFailure {
        // The status field's widths: SCT is 3 bits, SC 8.
        let (Ok(sct @ 0..=7), Ok(sc)) = (u8::try_from(sct), u8::try_from(sc)) else {
            return Err(RpcError::errno(
                errno::EINVAL,
                format!("nvme_sct {sct} / nvme_sc {sc} is not an NVMe status (sct 0-7, sc 0-255)"),
            ));
        };
        if (sct, sc) == (0, 0) {
            return Err(RpcError::errno(
                errno::EINVAL,
                "nvme_sct 0 and nvme_sc 0 is success, not a failure".to_string(),
            ));
        }
        (sct, sc)
    } else {
        lacks("nvme_sct", sct != 0 || sc != 0, "only for nvme_failure")?;
        (0, 0)
    };
    let corrupt_value = p.corrupt_value.unwrap_or(0);
    if error_type == ErrorType::CorruptData && corrupt_value == 0 {
        // SPDK: XOR with 0 cannot corrupt anything.
        return Err(RpcError::errno(
            errno::EINVAL,
            "corrupt_value should be non-zero".to_string(),
        ));
    }
    let (_, inj) = error_node(d, &p.name)?;
    if p.io_type == "clear" {
        inj.clear();
        return Ok(json!(true));
    }
    let injection = Injection {
        error_type,
        count: p.num.unwrap_or(1),
        corrupt_offset: p.corrupt_offset.unwrap_or(0),
        corrupt_value,
        queue_depth: p.queue_depth.unwrap_or(0),
        nvme_status,
    };
    for c in classes {
        inj.arm(c, injection);
    }
    Ok(json!(true))
}

fn bdev_error_resume_pending(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let p: Named = params(p)?;
    let (id, _) = error_node(d, &p.name)?;
    d.ctx.handle.on_each_reactor(move |r| {
        resume_pending(r, id);
    });
    Ok(json!(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DelayCreate {
    base_bdev_name: String,
    name: String,
    uuid: Option<String>,
    avg_read_latency: u64,
    p99_read_latency: u64,
    avg_write_latency: u64,
    p99_write_latency: u64,
}

fn bdev_delay_create(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let p: DelayCreate = params(p)?;
    let uuid = check_uuid(p.uuid)?;
    if p.p99_read_latency < p.avg_read_latency || p.p99_write_latency < p.avg_write_latency {
        // SPDK's create_delay_disk.
        return Err(RpcError::errno(
            errno::EINVAL,
            "p99 latencies must be at least the average latencies".to_string(),
        ));
    }
    let geo = d
        .ctx
        .graph
        .node_geometry(&p.base_bdev_name)
        .ok_or_else(|| RpcError::no_such_bdev(&p.base_bdev_name))?;
    check_free(d, &p.name)?;
    let us = [
        p.avg_read_latency,
        p.p99_read_latency,
        p.avg_write_latency,
        p.p99_write_latency,
    ];
    let node = DelayNode::new(geo, Arc::new(DelayLatencies::new(us)));
    d.ctx.graph.add_node(&p.name, node, &[&p.base_bdev_name])?;
    record(
        &d.ctx,
        &p.name,
        "bdev_delay_create",
        json!({
            "name": p.name,
            "base_bdev_name": p.base_bdev_name,
            "avg_read_latency": p.avg_read_latency,
            "p99_read_latency": p.p99_read_latency,
            "avg_write_latency": p.avg_write_latency,
            "p99_write_latency": p.p99_write_latency,
        }),
        uuid,
    );
    Ok(json!(p.name))
}

fn bdev_delay_delete(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let p: Named = params(p)?;
    let made_here = d
        .ctx
        .bdevs()
        .get(&p.name)
        .is_some_and(|r| r.method == "bdev_delay_create");
    if !made_here {
        return Err(RpcError::no_such_bdev(&p.name));
    }
    d.ctx.graph.remove_node(&p.name)?;
    d.ctx.bdevs().remove(&p.name);
    Ok(json!(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateLatency {
    delay_bdev_name: String,
    latency_type: String,
    latency_us: u64,
}

fn bdev_delay_update_latency(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let p: UpdateLatency = params(p)?;
    let kind = DelayKind::from_name(&p.latency_type).ok_or_else(|| {
        RpcError::invalid_params(format!(
            "latency_type: {:?} is not one of avg_read, p99_read, avg_write, p99_write",
            p.latency_type
        ))
    })?;
    let set = d.ctx.graph.with_node(&p.delay_bdev_name, |n: &DelayNode| {
        n.latencies().set(kind, p.latency_us)
    });
    if set.is_none() {
        return Err(RpcError::no_such_bdev(&p.delay_bdev_name));
    }
    // save_config replays the latency now in force.
    if let Some(r) = d.ctx.bdevs().get_mut(&p.delay_bdev_name) {
        r.params[format!("{}_latency", kind.name())] = json!(p.latency_us);
    }
    Ok(json!(true))
}

/// The latencies a `delay` filter of `pollux_graph_insert_filter` takes,
/// named as `bdev_delay_create`'s.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct DelayParams {
    avg_read_latency: u64,
    p99_read_latency: u64,
    avg_write_latency: u64,
    p99_write_latency: u64,
}

/// `pollux_graph_insert_filter`'s kinds: `passthru`, `delay` (with
/// `params`) and `error` (injecting nothing until
/// `bdev_error_inject_error` names it), put above the live node `node`.
pub(super) fn insert_filter(
    d: &Dispatcher,
    node: &str,
    name: &str,
    kind: &str,
    fparams: Option<Value>,
    geo: pollux_graph::Geometry,
) -> Result<(), RpcError> {
    let no_params = |k: &str| match &fparams {
        None => Ok(()),
        Some(_) => Err(RpcError::invalid_params(format!(
            "filter.params: a {k} filter takes none"
        ))),
    };
    match kind {
        "passthru" => {
            no_params(kind)?;
            let f = pollux_graph::nodes::passthru::PassthruNode::new(geo);
            d.ctx.graph.insert_filter(node, name, f)?;
        }
        "error" => {
            no_params(kind)?;
            d.ctx.graph.insert_filter(node, name, ErrorNode::new(geo))?;
        }
        // A one-member RAID1 above the node: `bdev_raid_add_base_bdev`
        // then mirrors it onto another bdev under load.
        "raid1" => {
            no_params(kind)?;
            pollux_graph::nodes::raid::Array::insert_above(&d.ctx.graph, node, name)?;
        }
        "delay" => {
            let p: DelayParams = match fparams {
                Some(v) => serde_json::from_value(v)
                    .map_err(|e| RpcError::invalid_params(format!("filter.params: {e}")))?,
                None => DelayParams::default(),
            };
            let us = [
                p.avg_read_latency,
                p.p99_read_latency,
                p.avg_write_latency,
                p.p99_write_latency,
            ];
            let f = DelayNode::new(geo, Arc::new(DelayLatencies::new(us)));
            d.ctx.graph.insert_filter(node, name, f)?;
        }
        k => {
            return Err(RpcError::invalid_params(format!(
                "filter.kind: {k:?} is not a filter kind (known: passthru, delay, error, raid1)"
            )))
        }
    }
    Ok(())
}
