//! NVMe-oF methods about which host sees what through which path, named
//! and shaped as SPDK's `nvmf_rpc.c`: ANA states of listeners, ANA groups
//! of namespaces, and per-host namespace visibility.

use serde::Deserialize;
use serde_json::{json, Value};

use super::nvmf::{check_tgt, parse_listen, refuse, target, ListenAddress};
use crate::nvmf::AnaState;
use crate::rpc::errors;
use crate::rpc::jsonrpc::{params, RpcError};
use crate::rpc::Dispatcher;

pub(super) fn register(d: &mut Dispatcher) {
    d.register(
        "nvmf_subsystem_listener_set_ana_state",
        nvmf_subsystem_listener_set_ana_state,
    );
    d.register(
        "nvmf_subsystem_set_ns_ana_group",
        nvmf_subsystem_set_ns_ana_group,
    );
    d.register("nvmf_ns_add_host", |d, p| ns_visible(d, p, true));
    d.register("nvmf_ns_remove_host", |d, p| ns_visible(d, p, false));
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetAnaState {
    nqn: String,
    listen_address: ListenAddress,
    ana_state: String,
    tgt_name: Option<String>,
    anagrpid: Option<u32>,
}

fn nvmf_subsystem_listener_set_ana_state(
    d: &Dispatcher,
    p: Option<Value>,
) -> Result<Value, RpcError> {
    let a: SetAnaState = params(p)?;
    check_tgt(&a.tgt_name)?;
    let addr = parse_listen(&a.listen_address)?;
    let Some(state) = AnaState::from_spdk_name(&a.ana_state) else {
        return Err(refuse(
            "ana_state",
            &format!(
                "{:?} is not optimized, non_optimized or inaccessible",
                a.ana_state
            ),
        ));
    };
    let t = target(d)?;
    if !t
        .subsystems()
        .iter()
        .find(|s| s.nqn == a.nqn)
        .is_none_or(|s| s.ana_reporting)
    {
        // SPDK's answer too: the state would reach no host.
        return Err(refuse(
            "nqn",
            &format!("{}: ANA reporting is disabled", a.nqn),
        ));
    }
    // 0 is rpc.py's "every group", as absent.
    let group = a.anagrpid.filter(|&g| g != 0);
    t.set_listener_ana_state(&a.nqn, addr, state, group)
        .map_err(|e| errors::nvmf("listen_address", e))?;
    Ok(json!(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetNsAnaGroup {
    nqn: String,
    nsid: u32,
    anagrpid: u32,
    tgt_name: Option<String>,
}

fn nvmf_subsystem_set_ns_ana_group(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let a: SetNsAnaGroup = params(p)?;
    check_tgt(&a.tgt_name)?;
    target(d)?
        .set_ns_ana_group(&a.nqn, a.nsid, a.anagrpid)
        .map_err(|e| errors::nvmf("anagrpid", e))?;
    Ok(json!(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NsHost {
    nqn: String,
    nsid: u32,
    host: String,
    tgt_name: Option<String>,
}

fn ns_visible(d: &Dispatcher, p: Option<Value>, visible: bool) -> Result<Value, RpcError> {
    let h: NsHost = params(p)?;
    check_tgt(&h.tgt_name)?;
    target(d)?
        .set_ns_visible(&h.nqn, h.nsid, &h.host, visible)
        .map_err(|e| errors::nvmf("host", e))?;
    Ok(json!(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every param rpc.py sends for these methods decodes; a misspelt one
    /// is refused by name.
    #[test]
    fn rpc_py_params_decode() {
        params::<SetAnaState>(Some(json!({
            "nqn": "nqn.2016-06.io.spdk:a", "tgt_name": "nvmf_tgt",
            "listen_address": {"trtype": "tcp", "adrfam": "ipv4", "traddr": "127.0.0.1", "trsvcid": "4420"},
            "ana_state": "inaccessible", "anagrpid": 2
        })))
        .unwrap();
        params::<SetNsAnaGroup>(Some(json!({
            "nqn": "nqn.2016-06.io.spdk:a", "nsid": 1, "anagrpid": 2, "tgt_name": "nvmf_tgt"
        })))
        .unwrap();
        params::<NsHost>(Some(json!({
            "nqn": "nqn.2016-06.io.spdk:a", "nsid": 1, "host": "nqn.h", "tgt_name": "nvmf_tgt"
        })))
        .unwrap();
        let e = params::<NsHost>(Some(json!({"nqn": "n", "nsid": 1, "hots": "h"})))
            .err()
            .expect("refused");
        assert!(e.message.contains("hots"), "{}", e.message);
    }
}
