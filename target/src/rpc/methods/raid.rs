//! RAID methods, as SPDK's `module/bdev/raid/bdev_raid_rpc.c` names and
//! answers them: `bdev_raid_create`, `bdev_raid_delete`,
//! `bdev_raid_get_bdevs`, `bdev_raid_add_base_bdev`,
//! `bdev_raid_remove_base_bdev`, `bdev_raid_set_options`.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::bdev;
use crate::config::{BdevConfig, BdevKind, RaidConfig};
use crate::rpc::errors::errno;
use crate::rpc::jsonrpc::{params, RpcError};
use crate::rpc::{BdevRecord, Dispatcher, RpcContext};
use pollux_graph::nodes::raid::{Array, ArrayInfo, Level, RaidError, RaidOptions};

/// The most base bdevs `bdev_raid_create` takes (SPDK's
/// `RPC_MAX_BASE_BDEVS`).
const MAX_BASE_BDEVS: usize = 255;

pub(super) fn register(d: &mut Dispatcher) {
    d.register("bdev_raid_create", bdev_raid_create);
    d.register("bdev_raid_delete", bdev_raid_delete);
    d.register("bdev_raid_get_bdevs", bdev_raid_get_bdevs);
    d.register("bdev_raid_add_base_bdev", bdev_raid_add_base_bdev);
    d.register("bdev_raid_remove_base_bdev", bdev_raid_remove_base_bdev);
    d.register("bdev_raid_set_options", bdev_raid_set_options);
}

fn options(ctx: &RpcContext) -> RaidOptions {
    *ctx.raid_options.lock().unwrap_or_else(|e| e.into_inner())
}

/// What `save_config` writes for the arrays' options: SPDK writes
/// `bdev_raid_set_options` first in the bdev subsystem.
pub fn options_config(ctx: &RpcContext) -> Value {
    let o = options(ctx);
    json!({"method": "bdev_raid_set_options", "params": {
        "process_window_size_kb": o.window / 1024,
        "process_max_bandwidth_mb_sec": o.max_rate / (1024 * 1024),
    }})
}

/// An array refusal, with SPDK's errno for it.
impl From<RaidError> for RpcError {
    fn from(e: RaidError) -> Self {
        let code = match &e {
            RaidError::Graph(_) => match e {
                RaidError::Graph(g) => return g.into(),
                _ => unreachable!("matched above"),
            },
            RaidError::NoSuchBdev(_) | RaidError::NotAMember(_) => errno::ENODEV,
            RaidError::InProcess(_) | RaidError::Claimed { .. } => -libc::EPERM,
            RaidError::LastMember { .. } => errno::EBUSY,
            RaidError::Layout(_) | RaidError::NoEmptySlot { .. } | RaidError::Unfit { .. } => {
                errno::EINVAL
            }
        };
        RpcError::errno(code, e)
    }
}

/// `bdev_raid_create`'s params: every one rpc.py 25.5 to 26.9 sends.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Create {
    name: String,
    raid_level: String,
    base_bdevs: BaseBdevs,
    strip_size_kb: Option<u32>,
    uuid: Option<String>,
    superblock: Option<bool>,
}

/// SPDK decodes `base_bdevs` as an array of names; rpc.py splits the
/// CLI's quoted list before sending it. A space-separated string (what
/// hand-written JSON sometimes holds) is accepted too.
#[derive(Deserialize)]
#[serde(untagged)]
enum BaseBdevs {
    List(Vec<String>),
    Words(String),
}

impl BaseBdevs {
    fn names(self) -> Vec<String> {
        match self {
            BaseBdevs::List(v) => v,
            BaseBdevs::Words(s) => s.split_whitespace().map(str::to_owned).collect(),
        }
    }
}

fn bdev_raid_create(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let p: Create = params(p)?;
    let level = Level::parse(&p.raid_level).ok_or_else(|| {
        RpcError::invalid_params(format!(
            "raid_level: {:?} is not one Pollux builds (raid0, raid1, concat; raid5f is not built)",
            p.raid_level
        ))
    })?;
    if p.superblock == Some(true) {
        return Err(RpcError::invalid_params(
            "superblock: on-disk RAID superblocks are not supported; arrays are recreated from save_config",
        ));
    }
    let members = p.base_bdevs.names();
    if members.len() > MAX_BASE_BDEVS {
        return Err(RpcError::invalid_params(format!(
            "base_bdevs: at most {MAX_BASE_BDEVS} base bdevs, got {}",
            members.len()
        )));
    }
    if members.iter().any(|m| m.is_empty()) {
        return Err(RpcError::errno(
            errno::EINVAL,
            "The base bdev name cannot be empty",
        ));
    }
    let uuid = super::bdev::check_uuid(p.uuid)?;
    let failed = |e: RpcError| RpcError {
        code: e.code,
        message: format!("Failed to create RAID bdev {}: {}", p.name, e.message),
    };
    if d.ctx.bdevs().contains_key(&p.name) || d.ctx.graph.node_geometry(&p.name).is_some() {
        return Err(failed(RpcError::errno(errno::EEXIST, "the name is taken")));
    }
    let strip = p.strip_size_kb.unwrap_or(0);
    let cfg = BdevConfig {
        name: p.name.clone(),
        kind: BdevKind::Raid(RaidConfig {
            level,
            strip_size_kb: strip,
            base_bdevs: members,
        }),
    };
    bdev::build(&d.ctx.graph, &cfg).map_err(|e| failed(e.into()))?;
    record(&d.ctx, &cfg, uuid);
    Ok(json!(true))
}

/// Records an array for `save_config` and `bdev_get_bdevs`.
pub fn record(ctx: &RpcContext, cfg: &BdevConfig, uuid: Option<String>) {
    let BdevKind::Raid(r) = &cfg.kind else { return };
    let uuid = uuid.unwrap_or_else(super::bdev::new_uuid);
    let mut params = json!({
        "name": cfg.name,
        "uuid": uuid,
        "raid_level": r.level.name(),
        "base_bdevs": r.base_bdevs,
    });
    if r.strip_size_kb != 0 {
        params["strip_size_kb"] = json!(r.strip_size_kb);
    }
    ctx.bdevs().insert(
        cfg.name.clone(),
        BdevRecord {
            method: "bdev_raid_create",
            params,
            uuid,
            product_name: "Raid Volume",
            replay: true,
        },
    );
}

/// Keeps the record's `base_bdevs` (what save_config replays) in step with
/// the array's members.
fn update_record(ctx: &RpcContext, array: &Array) {
    let members = array.members();
    if let Some(rec) = ctx.bdevs().get_mut(array.name()) {
        rec.params["base_bdevs"] = json!(members);
    }
    // An array put above a node with pollux_graph_insert_filter is
    // replayed above its first member (its other members are not: a
    // replayed mirror starts with one copy).
    for f in ctx.filters().iter_mut() {
        if f["params"]["filter"]["name"].as_str() == Some(array.name()) {
            if let Some(first) = members.first() {
                f["params"]["node"] = json!(first);
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Delete {
    name: String,
    /// SPDK 24.09: wipe the superblock from the members. Pollux writes
    /// none, so there is nothing to clear either way.
    #[allow(dead_code)]
    clear_sb: Option<bool>,
}

fn find(d: &Dispatcher, name: &str) -> Result<std::sync::Arc<Array>, RpcError> {
    Array::find(&d.ctx.graph, name).ok_or_else(|| RpcError::no_such_bdev(name))
}

fn bdev_raid_delete(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let p: Delete = params(p)?;
    let array = find(d, &p.name)?;
    array.delete(&d.ctx.graph)?;
    d.ctx.bdevs().remove(&p.name);
    Ok(json!(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetBdevs {
    category: String,
}

fn bdev_raid_get_bdevs(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let p: GetBdevs = params(p)?;
    if !matches!(
        p.category.as_str(),
        "all" | "online" | "configuring" | "offline"
    ) {
        // SPDK: spdk_jsonrpc_send_error_response(request, -EINVAL, ...).
        return Err(RpcError::errno(
            errno::EINVAL,
            format!(
                "category: {:?} is not all, online, configuring or offline",
                p.category
            ),
        ));
    }
    let records = d.ctx.bdevs().clone();
    let list: Vec<Value> = Array::all(&d.ctx.graph)
        .into_iter()
        .map(|a| a.info(&d.ctx.graph))
        .filter(|i| p.category == "all" || i.state.name() == p.category)
        .map(|i| {
            let mut v = json!({"name": i.name});
            let info = info_json(&i, &records);
            v.as_object_mut()
                .expect("object")
                .extend(info.as_object().expect("object").clone());
            v
        })
        .collect();
    Ok(json!(list))
}

/// SPDK's `raid_bdev_write_info_json`: what `bdev_raid_get_bdevs` lists
/// after the name and what `bdev_get_bdevs` puts in `driver_specific.raid`.
pub fn info_json(i: &ArrayInfo, records: &std::collections::BTreeMap<String, BdevRecord>) -> Value {
    let uuid_of = |n: &str| {
        records
            .get(n)
            .map(|r| r.uuid.clone())
            .unwrap_or_else(|| NULL_UUID.to_owned())
    };
    let bs = u64::from(i.block_size);
    let mut v = json!({
        "uuid": uuid_of(&i.name),
        "strip_size_kb": i.strip_kb,
        "state": i.state.name(),
        "raid_level": i.level.name(),
        "superblock": false,
        "num_base_bdevs": i.slots.len(),
        "num_base_bdevs_discovered": i.slots.iter().filter(|s| s.name.is_some() && !s.failed).count(),
        "num_base_bdevs_operational": i.slots.iter().filter(|s| s.configured).count(),
    });
    if let Some(pr) = &i.process {
        let total = i.block_count * bs;
        v["process"] = json!({
            "type": "rebuild",
            "target": pr.target,
            "progress": {
                "blocks": pr.done / bs,
                "percent": (pr.done * 100).checked_div(total).unwrap_or(0),
            },
        });
    }
    v["base_bdevs_list"] = i
        .slots
        .iter()
        .map(|s| {
            json!({
                "name": s.name,
                "uuid": s.name.as_deref().map_or_else(|| NULL_UUID.to_owned(), uuid_of),
                "is_configured": s.configured,
                "data_offset": 0,
                "data_size": s.data_size / bs,
                // Pollux's own: the member's I/O failed, so the array no
                // longer uses it (SPDK drops such a member from its slot).
                "failed": s.failed,
            })
        })
        .collect();
    v
}

/// SPDK's all-zero UUID, for empty slots.
const NULL_UUID: &str = "00000000-0000-0000-0000-000000000000";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddBase {
    base_bdev: String,
    raid_bdev: String,
}

fn bdev_raid_add_base_bdev(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let p: AddBase = params(p)?;
    let array = find(d, &p.raid_bdev)?;
    array.add_member(&d.ctx.graph, &p.base_bdev, options(&d.ctx))?;
    update_record(&d.ctx, &array);
    Ok(json!(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveBase {
    name: String,
}

fn bdev_raid_remove_base_bdev(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let p: RemoveBase = params(p)?;
    let owner = pollux_graph::nodes::raid::member_of(&d.ctx.graph, &p.name);
    let Some(owner) = owner else {
        return Err(if d.ctx.graph.node_geometry(&p.name).is_none() {
            RpcError::no_such_bdev(&p.name)
        } else {
            RaidError::NotAMember(p.name).into()
        });
    };
    let array = find(d, &owner)?;
    array.remove_member(&d.ctx.graph, &p.name)?;
    update_record(&d.ctx, &array);
    Ok(json!(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetOptions {
    process_window_size_kb: Option<u32>,
    process_max_bandwidth_mb_sec: Option<u32>,
}

fn bdev_raid_set_options(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let p: SetOptions = params(p)?;
    let mut o = options(&d.ctx);
    if let Some(kb) = p.process_window_size_kb {
        // SPDK refuses 0 (`raid_bdev_set_opts`: -EINVAL).
        if kb == 0 {
            return Err(RpcError::errno(
                errno::EINVAL,
                "process_window_size_kb must be greater than 0",
            ));
        }
        o.window = u64::from(kb) * 1024;
    }
    if let Some(mb) = p.process_max_bandwidth_mb_sec {
        o.max_rate = u64::from(mb) * 1024 * 1024;
    }
    *d.ctx.raid_options.lock().unwrap_or_else(|e| e.into_inner()) = o;
    Ok(json!(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_param_rpc_py_sends_decodes() {
        // rpc.py 26.9 `bdev_raid_create -n r -z 64 -r raid0 -b "a b" --uuid U -s`.
        let c: Create = params(Some(json!({"name": "r", "strip_size_kb": 64,
            "raid_level": "raid0", "base_bdevs": ["a", "b"],
            "uuid": "5f7c2a7e-7d3a-4e1b-9a53-6f0c1d2e3f40", "superblock": false})))
        .unwrap();
        assert_eq!(c.base_bdevs.names(), ["a", "b"]);
        let c: Create = params(Some(
            json!({"name": "r", "raid_level": "1", "base_bdevs": "a  b"}),
        ))
        .unwrap();
        assert_eq!(c.base_bdevs.names(), ["a", "b"]);
        params::<Delete>(Some(json!({"name": "r", "clear_sb": false}))).unwrap();
        params::<AddBase>(Some(json!({"base_bdev": "a", "raid_bdev": "r"}))).unwrap();
        params::<RemoveBase>(Some(json!({"name": "a"}))).unwrap();
        params::<SetOptions>(Some(json!({"process_window_size_kb": 1024,
            "process_max_bandwidth_mb_sec": 0})))
        .unwrap();
        assert!(params::<Create>(Some(
            json!({"name": "r", "raid_level": "1", "base_bdevs": [], "strip_sise_kb": 4})
        ))
        .is_err());
    }
}
