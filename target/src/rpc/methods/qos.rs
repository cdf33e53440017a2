//! Rate limits: SPDK's `bdev_set_qos_limit`, and Pollux's throttle groups
//! (QEMU's `throttle-group`), which several bdevs share through
//! `bdev_set_qos_limit`'s `group` param.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::qos::{LimitUpdate, LIMIT_NAMES};
use crate::rpc::jsonrpc::{params, RpcError};
use crate::rpc::Dispatcher;

pub(super) fn register(d: &mut Dispatcher) {
    d.register("bdev_set_qos_limit", bdev_set_qos_limit);
    d.register("pollux_throttle_group_create", group_create);
    d.register("pollux_throttle_group_set", group_set);
    d.register("pollux_throttle_group_delete", group_delete);
    d.register("pollux_throttle_group_get", group_get);
}

// The four limits are spelled out in each params struct: serde's
// `deny_unknown_fields` does not work through `flatten`.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetQosLimit {
    name: String,
    rw_ios_per_sec: Option<u64>,
    rw_mbytes_per_sec: Option<u64>,
    r_mbytes_per_sec: Option<u64>,
    w_mbytes_per_sec: Option<u64>,
    /// A Pollux extension: the throttle group to join ("" leaves it).
    group: Option<String>,
}

fn bdev_set_qos_limit(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let p: SetQosLimit = params(p)?;
    d.ctx.qos.set_limits(
        &d.ctx.graph,
        &p.name,
        update(
            p.rw_ios_per_sec,
            p.rw_mbytes_per_sec,
            p.r_mbytes_per_sec,
            p.w_mbytes_per_sec,
        ),
        p.group.as_deref(),
    )?;
    Ok(json!(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Group {
    name: String,
    rw_ios_per_sec: Option<u64>,
    rw_mbytes_per_sec: Option<u64>,
    r_mbytes_per_sec: Option<u64>,
    w_mbytes_per_sec: Option<u64>,
}

fn group_create(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let p: Group = params(p)?;
    d.ctx.qos.create_group(
        &p.name,
        update(
            p.rw_ios_per_sec,
            p.rw_mbytes_per_sec,
            p.r_mbytes_per_sec,
            p.w_mbytes_per_sec,
        ),
    )?;
    Ok(json!(true))
}

fn group_set(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let p: Group = params(p)?;
    d.ctx.qos.set_group(
        &p.name,
        update(
            p.rw_ios_per_sec,
            p.rw_mbytes_per_sec,
            p.r_mbytes_per_sec,
            p.w_mbytes_per_sec,
        ),
    )?;
    Ok(json!(true))
}

fn update(
    rw_ios: Option<u64>,
    rw_mb: Option<u64>,
    r_mb: Option<u64>,
    w_mb: Option<u64>,
) -> LimitUpdate {
    LimitUpdate([rw_ios, rw_mb, r_mb, w_mb])
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Named {
    name: String,
}

fn group_delete(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let p: Named = params(p)?;
    d.ctx.qos.delete_group(&p.name)?;
    Ok(json!(true))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct MaybeNamed {
    name: Option<String>,
}

fn group_get(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let p: MaybeNamed = match p {
        None => MaybeNamed::default(),
        p => params(p)?,
    };
    let groups = d.ctx.qos.groups();
    if let Some(name) = &p.name {
        if !groups.iter().any(|g| &g.name == name) {
            return Err(crate::qos::QosError::NoSuchGroup(name.clone()).into());
        }
    }
    Ok(Value::Array(
        groups
            .into_iter()
            .filter(|g| p.name.as_ref().is_none_or(|n| *n == g.name))
            .map(|g| {
                let mut o = limits_object(&g.limits, true);
                o.insert("name".into(), json!(g.name));
                o.insert("members".into(), json!(g.members));
                Value::Object(o)
            })
            .collect(),
    ))
}

/// The limits as SPDK writes them: every one (`bdev_get_bdevs`'s
/// `assigned_rate_limits`), or only those set (`save_config`).
pub fn limits_object(limits: &[u64; 4], all: bool) -> Map<String, Value> {
    LIMIT_NAMES
        .iter()
        .zip(limits)
        .filter(|(_, &l)| all || l != 0)
        .map(|(n, &l)| (n.to_string(), json!(l)))
        .collect()
}

/// `save_config`'s part: the groups, then each limited bdev's
/// `bdev_set_qos_limit` (after the bdevs, which the bdev writer emits
/// first).
pub fn config(d: &Dispatcher) -> Vec<Value> {
    let mut out: Vec<Value> = d
        .ctx
        .qos
        .groups()
        .into_iter()
        .map(|g| {
            let mut params = limits_object(&g.limits, false);
            params.insert("name".into(), json!(g.name));
            json!({"method": "pollux_throttle_group_create", "params": params})
        })
        .collect();
    out.extend(d.ctx.qos.limited_bdevs().into_iter().map(|(name, l)| {
        let mut params = limits_object(&l.limits, false);
        params.insert("name".into(), json!(name));
        if let Some(g) = l.group {
            params.insert("group".into(), json!(g));
        }
        json!({"method": "bdev_set_qos_limit", "params": params})
    }));
    out
}
