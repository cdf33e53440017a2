//! `keyring_file_add_key`, `keyring_file_remove_key`, `keyring_get_keys`,
//! named and shaped as SPDK's `module/keyring/file/keyring_rpc.c` and
//! `lib/keyring/keyring_rpc.c`.

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::keyring::{KeyringError, FILE_MODULE};
use crate::rpc::jsonrpc::{params, NoParams, RpcError};
use crate::rpc::Dispatcher;

pub(super) fn register(d: &mut Dispatcher) {
    d.register("keyring_file_add_key", keyring_file_add_key);
    d.register("keyring_file_remove_key", keyring_file_remove_key);
    d.register("keyring_get_keys", keyring_get_keys);
    d.register_subsystem(crate::rpc::Subsystem {
        name: "keyring",
        depends_on: &[],
        writer: config_writer,
    });
}

/// SPDK's `spdk_jsonrpc_send_error_response(request, rc, spdk_strerror(-rc))`.
fn err(e: KeyringError) -> RpcError {
    RpcError::errno(e.errno(), e)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddKey {
    name: String,
    path: PathBuf,
}

fn keyring_file_add_key(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let k: AddKey = params(p)?;
    d.ctx.keyring.add_file_key(&k.name, &k.path).map_err(err)?;
    Ok(json!(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveKey {
    name: String,
}

fn keyring_file_remove_key(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let k: RemoveKey = params(p)?;
    d.ctx.keyring.remove(&k.name).map_err(err)?;
    Ok(json!(true))
}

fn keyring_get_keys(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let NoParams {} = params(p)?;
    Ok(json!(d
        .ctx
        .keyring
        .list()
        .iter()
        .map(|k| json!({
            "name": k.name,
            "module": FILE_MODULE,
            // Removed keys leave the list at once; holders keep theirs.
            "removed": false,
            "probed": false,
            "refcnt": k.refcnt,
            "path": k.path,
        }))
        .collect::<Vec<_>>()))
}

fn config_writer(d: &Dispatcher) -> Vec<Value> {
    d.ctx
        .keyring
        .list()
        .iter()
        .map(|k| {
            json!({"method": "keyring_file_add_key", "params": {"name": k.name, "path": k.path}})
        })
        .collect()
}
