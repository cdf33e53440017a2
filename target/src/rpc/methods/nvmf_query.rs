//! `nvmf_subsystem_get_qpairs` and `nvmf_subsystem_get_listeners`: what
//! orchestrators call to look at a subsystem, in the shapes of SPDK's
//! `dump_nvmf_qpair` and `dump_nvmf_subsystem_listener` (nvmf_rpc.c).

use serde_json::{json, Value};

use super::nvmf::{check_tgt, listen_address, target, Nqn};
use crate::nvmf::QpairInfo;
use crate::rpc::errors;
use crate::rpc::jsonrpc::{params, RpcError};
use crate::rpc::Dispatcher;

pub(super) fn register(d: &mut Dispatcher) {
    d.register("nvmf_subsystem_get_qpairs", nvmf_subsystem_get_qpairs);
    d.register("nvmf_subsystem_get_listeners", nvmf_subsystem_get_listeners);
}

fn nvmf_subsystem_get_qpairs(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let n: Nqn = params(p)?;
    check_tgt(&n.tgt_name)?;
    let list = target(d)?
        .subsystem_qpairs(&n.nqn)
        .map_err(|e| errors::nvmf("nqn", e))?;
    Ok(json!(list.iter().map(describe_qpair).collect::<Vec<_>>()))
}

fn describe_qpair(q: &QpairInfo) -> Value {
    json!({
        "cntlid": q.cntlid,
        "qid": q.qid,
        "state": q.state,
        // The reactor's thread, named as framework_get_reactors names it.
        "thread": format!("reactor_{}", q.core),
        "hostnqn": q.hostnqn,
        "listen_address": listen_address(&q.listen),
        "peer_address": listen_address(&q.peer),
    })
}

fn nvmf_subsystem_get_listeners(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let n: Nqn = params(p)?;
    check_tgt(&n.tgt_name)?;
    let list = target(d)?
        .subsystem_listeners(&n.nqn)
        .map_err(|e| errors::nvmf("nqn", e))?;
    Ok(json!(list
        .iter()
        .map(|a| json!({"address": listen_address(a)}))
        .collect::<Vec<_>>()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_qpair_is_described_as_spdk_dumps_it() {
        let q = QpairInfo {
            cntlid: 1,
            qid: 2,
            state: "enabled",
            core: 3,
            hostnqn: "nqn.2014-08.org.nvmexpress:uuid:x".into(),
            listen: "127.0.0.1:4420".parse().unwrap(),
            peer: "127.0.0.1:50000".parse().unwrap(),
        };
        assert_eq!(
            describe_qpair(&q),
            json!({
                "cntlid": 1, "qid": 2, "state": "enabled", "thread": "reactor_3",
                "hostnqn": "nqn.2014-08.org.nvmexpress:uuid:x",
                "listen_address": {"trtype": "TCP", "adrfam": "IPv4",
                                   "traddr": "127.0.0.1", "trsvcid": "4420"},
                "peer_address": {"trtype": "TCP", "adrfam": "IPv4",
                                 "traddr": "127.0.0.1", "trsvcid": "50000"},
            })
        );
    }
}
