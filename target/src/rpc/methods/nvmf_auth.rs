//! The DH-HMAC-CHAP parts of the NVMe-oF methods: `nvmf_set_config`'s
//! `dhchap_digests`/`dhchap_dhgroups` (SPDK's
//! `module/event/subsystems/nvmf/nvmf_rpc.c`), the keys of
//! `nvmf_subsystem_add_host`, and their place in `nvmf_get_subsystems`
//! and `save_config`.

use serde::Deserialize;
use serde_json::{json, Value};

use pollux_nvme::auth::{DhGroupId, HashId};

use crate::nvmf::{Access, HostKeys};
use crate::rpc::jsonrpc::{params, RpcError};
use crate::rpc::Dispatcher;

pub(super) fn register(d: &mut Dispatcher) {
    d.register("nvmf_set_config", nvmf_set_config);
    d.register("nvmf_subsystem_set_keys", nvmf_subsystem_set_keys);
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetKeys {
    nqn: String,
    host: String,
    tgt_name: Option<String>,
    dhchap_key: Option<String>,
    dhchap_ctrlr_key: Option<String>,
}

/// SPDK's `nvmf_subsystem_set_keys`: both keys are replaced (an absent one
/// is removed), for key rotation while hosts stay connected.
fn nvmf_subsystem_set_keys(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let k: SetKeys = params(p)?;
    if k.tgt_name.as_deref().is_some_and(|t| t != "nvmf_tgt") {
        return Err(RpcError::invalid_params(format!(
            "tgt_name: no target named {:?}",
            k.tgt_name.unwrap_or_default()
        )));
    }
    let einval = |why: String| RpcError::errno(-libc::EINVAL, why);
    if k.dhchap_key.is_none() && k.dhchap_ctrlr_key.is_some() {
        return Err(einval(
            "a DH-HMAC-CHAP controller key requires a host key".into(),
        ));
    }
    let keys = host_keys(d, k.dhchap_key.as_deref(), k.dhchap_ctrlr_key.as_deref())?;
    let t = d
        .ctx
        .nvmf
        .as_deref()
        .ok_or_else(|| RpcError::failed("NVMe-oF is not available in this process"))?;
    t.set_host_keys(&k.nqn, &k.host, keys)
        .map_err(|e| match e {
            crate::nvmf::NvmfError::NoSuchSubsystem(_) => RpcError::invalid_params(e.to_string()),
            e => einval(e.to_string()),
        })?;
    Ok(json!(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetConfig {
    dhchap_digests: Option<Vec<String>>,
    dhchap_dhgroups: Option<Vec<String>>,
    /// Pollux passes no admin commands through; absent or `{}` only.
    passthru_identify_ctrlr: Option<Value>,
    admin_cmd_passthru: Option<Value>,
    /// Pollux's reactors each own their poll group; a mask cannot move
    /// them.
    poll_groups_mask: Option<String>,
    /// Pollux's discovery log lists every subsystem a host may reach on
    /// every listener, SPDK's `match_any`.
    discovery_filter: Option<String>,
    /// The same as a list (SPDK 26.x).
    discovery_filters: Option<Vec<String>>,
    /// Pollux lets a host NQN connect through any listener
    /// (SPDK's default, `allow`).
    dup_host_policy: Option<String>,
}

fn nvmf_set_config(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let c: SetConfig = params(p)?;
    let empty = |v: &Option<Value>| v.as_ref().is_none_or(|v| v == &json!({}));
    if !empty(&c.passthru_identify_ctrlr) || !empty(&c.admin_cmd_passthru) {
        return Err(RpcError::invalid_params(
            "admin_cmd_passthru: admin command passthrough is not supported",
        ));
    }
    if c.poll_groups_mask.is_some() {
        return Err(RpcError::invalid_params(
            "poll_groups_mask: poll groups follow the configured reactors",
        ));
    }
    let filters = c
        .discovery_filter
        .iter()
        .chain(c.discovery_filters.iter().flatten());
    if filters.into_iter().any(|f| f != "match_any") {
        return Err(RpcError::invalid_params(
            "discovery_filter: only match_any is supported",
        ));
    }
    if c.dup_host_policy.as_deref().is_some_and(|p| p != "allow") {
        return Err(RpcError::invalid_params(
            "dup_host_policy: only allow is supported",
        ));
    }
    let digests = c
        .dhchap_digests
        .as_ref()
        .map(|v| names(v, "dhchap_digests", HashId::from_name))
        .transpose()?;
    let groups = c
        .dhchap_dhgroups
        .as_ref()
        .map(|v| names(v, "dhchap_dhgroups", DhGroupId::from_name))
        .transpose()?;
    let t = d
        .ctx
        .nvmf
        .as_deref()
        .ok_or_else(|| RpcError::failed("NVMe-oF is not available in this process"))?;
    t.auth_policy().set(digests.as_deref(), groups.as_deref());
    Ok(json!(true))
}

fn names<T>(v: &[String], param: &str, f: fn(&str) -> Option<T>) -> Result<Vec<T>, RpcError> {
    if v.is_empty() {
        return Err(RpcError::invalid_params(format!("{param}: empty list")));
    }
    v.iter()
        .map(|n| {
            f(n).ok_or_else(|| RpcError::invalid_params(format!("{param}: unknown name {n:?}")))
        })
        .collect()
}

/// The keys `nvmf_subsystem_add_host` names, looked up in the keyring
/// (-32602 for a missing one, as SPDK).
pub(super) fn host_keys(
    d: &Dispatcher,
    key: Option<&str>,
    ctrlr_key: Option<&str>,
) -> Result<Option<HostKeys>, RpcError> {
    let find = |name: &str, what: &str| {
        d.ctx
            .keyring
            .get(name)
            .ok_or_else(|| RpcError::invalid_params(format!("{what}: unable to find key {name:?}")))
    };
    match (key, ctrlr_key) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(RpcError::invalid_params(
            "dhchap_ctrlr_key: needs a dhchap_key",
        )),
        (Some(k), c) => Ok(Some(HostKeys {
            key: find(k, "dhchap_key")?,
            ctrlr_key: c.map(|c| find(c, "dhchap_ctrlr_key")).transpose()?,
        })),
    }
}

/// One `hosts` entry of `nvmf_get_subsystems` (and `save_config`'s
/// `nvmf_subsystem_add_host` params, with the subsystem's NQN added).
pub(super) fn host_json(a: &Access, host: &str) -> Value {
    let mut v = json!({"nqn": host});
    if let Some(k) = a.dhchap.get(host) {
        v["dhchap_key"] = json!(k.key.name());
        if let Some(c) = &k.ctrlr_key {
            v["dhchap_ctrlr_key"] = json!(c.name());
        }
    }
    v
}

/// `save_config`'s `nvmf_set_config`: the DH-HMAC-CHAP lists, when they
/// are not the defaults.
pub(super) fn set_config_entry(d: &Dispatcher) -> Option<Value> {
    let t = d.ctx.nvmf.as_deref()?;
    let p = t.auth_policy();
    let (digests, groups) = (p.digests(), p.dhgroups());
    if digests.len() == HashId::ALL.len() && groups.len() == DhGroupId::ALL.len() {
        return None;
    }
    Some(json!({"method": "nvmf_set_config", "params": {
        "dhchap_digests": digests.iter().map(|h| h.name()).collect::<Vec<_>>(),
        "dhchap_dhgroups": groups.iter().map(|g| g.name()).collect::<Vec<_>>(),
    }}))
}
