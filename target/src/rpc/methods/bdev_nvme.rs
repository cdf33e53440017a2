//! NVMe PCIe controller methods, as SPDK's `module/bdev/nvme/bdev_nvme_rpc.c`
//! names and shapes them: `bdev_nvme_attach_controller` (trtype PCIe),
//! `bdev_nvme_detach_controller`, `bdev_nvme_get_controllers`.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::nvme_bdev;
use crate::rpc::errors::errno;
use crate::rpc::jsonrpc::{params, RpcError};
use crate::rpc::Dispatcher;

/// The transport this daemon attaches controllers over (SPDK spells it
/// `PCIe` and compares case-insensitively).
const PCIE: &str = "PCIe";

pub(super) fn register(d: &mut Dispatcher) {
    d.register("bdev_nvme_attach_controller", attach);
    d.register("bdev_nvme_detach_controller", detach);
    d.register("bdev_nvme_get_controllers", get_controllers);
}

/// `bdev_nvme_attach_controller`'s params. The fabrics-only ones (what
/// rpc.py sends for TCP/RDMA) are accepted and ignored, as SPDK ignores
/// them for PCIe.
#[derive(Deserialize)]
#[allow(dead_code)] // fabrics-only params: accepted, not used over PCIe
struct AttachParams {
    name: String,
    trtype: String,
    traddr: String,
    adrfam: Option<String>,
    trsvcid: Option<String>,
    priority: Option<Value>,
    subnqn: Option<String>,
    hostnqn: Option<String>,
    hostaddr: Option<String>,
    hostsvcid: Option<String>,
    #[serde(default)]
    prchk_reftag: bool,
    #[serde(default)]
    prchk_guard: bool,
    #[serde(default)]
    hdgst: bool,
    #[serde(default)]
    ddgst: bool,
    fabrics_connect_timeout_us: Option<u64>,
    multipath: Option<String>,
    num_io_queues: Option<u32>,
    ctrlr_loss_timeout_sec: Option<i64>,
    reconnect_delay_sec: Option<u32>,
    fast_io_fail_timeout_sec: Option<u32>,
    psk: Option<String>,
    max_bdevs: Option<u32>,
    dhchap_key: Option<String>,
    dhchap_ctrlr_key: Option<String>,
    allow_unrecognized_csi: Option<bool>,
    multipath_opts: Option<Value>,
    /// Pollux extension: entries per I/O queue (the config's
    /// `io_queue_depth`). SPDK sets it with `bdev_nvme_set_options`.
    io_queue_size: Option<u32>,
    /// Params of newer SPDK releases. rpc.py sends every flag it knows,
    /// unset ones as `false`: those ask for nothing and are accepted; any
    /// other value asks for a feature this driver lacks.
    #[serde(flatten)]
    rest: serde_json::Map<String, Value>,
}

fn attach(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let p: AttachParams = params(p)?;
    if !p.trtype.eq_ignore_ascii_case(PCIE) {
        return Err(RpcError::invalid_params(format!(
            "trtype: {:?} is not supported; this daemon attaches local SSDs over PCIe (-t pcie)",
            p.trtype
        )));
    }
    if let Some((k, _)) = p
        .rest
        .iter()
        .find(|(_, v)| !matches!(v, Value::Null | Value::Bool(false)))
    {
        return Err(RpcError::invalid_params(format!(
            "{k}: not supported by this daemon's NVMe driver"
        )));
    }
    if p.prchk_reftag || p.prchk_guard {
        return Err(RpcError::invalid_params(
            "prchk_reftag/prchk_guard: protection information is not supported",
        ));
    }
    if p.name.is_empty() {
        return Err(RpcError::invalid_params("name: must not be empty"));
    }
    if !pollux_nvme_pci::is_pci_address(&p.traddr.to_ascii_lowercase()) {
        return Err(RpcError::errno(
            errno::EINVAL,
            format!(
                "traddr: {:?} is not a PCI address (write it as 0000:00:02.0)",
                p.traddr
            ),
        ));
    }
    let depth = match p.io_queue_size {
        None => pollux_nvme_pci::DEFAULT_IO_QUEUE_DEPTH,
        Some(n @ 2..=65535) => n as u16,
        Some(n) => {
            return Err(RpcError::invalid_params(format!(
                "io_queue_size: {n} is outside 2..=65535"
            )))
        }
    };
    let bdevs = nvme_bdev::attach(&d.ctx.graph, &p.name, &p.traddr, depth)?;
    Ok(json!(bdevs))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DetachParams {
    name: String,
    trtype: Option<String>,
    traddr: Option<String>,
    adrfam: Option<String>,
    trsvcid: Option<String>,
    subnqn: Option<String>,
    hostaddr: Option<String>,
    hostsvcid: Option<String>,
}

fn detach(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let p: DetachParams = params(p)?;
    // SPDK detaches only the path matching every trid field given; a PCIe
    // controller has one path, so a field that does not match it is an
    // unknown path.
    if let Some((_, ctrl, _)) = nvme_bdev::list().into_iter().find(|(n, _, _)| *n == p.name) {
        let mismatch = p
            .trtype
            .as_deref()
            .is_some_and(|t| !t.eq_ignore_ascii_case(PCIE))
            || p.traddr
                .as_deref()
                .is_some_and(|a| !a.eq_ignore_ascii_case(ctrl.bdf()))
            || [&p.adrfam, &p.trsvcid, &p.subnqn, &p.hostaddr, &p.hostsvcid]
                .iter()
                .any(|f| f.as_deref().is_some_and(|v| !v.is_empty()));
        if mismatch {
            return Err(RpcError::errno(
                errno::ENODEV,
                format!("controller {:?} has no path matching that trid", p.name),
            ));
        }
    }
    nvme_bdev::detach(&d.ctx.graph, &p.name)?;
    Ok(json!(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetParams {
    name: Option<String>,
}

fn get_controllers(_d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let p: GetParams = params(p)?;
    let all = nvme_bdev::list();
    if let Some(n) = &p.name {
        if !all.iter().any(|(name, _, _)| name == n) {
            return Err(RpcError::errno(
                errno::ENODEV,
                format!("no NVMe controller named {n:?}"),
            ));
        }
    }
    let out: Vec<Value> = all
        .into_iter()
        .filter(|(name, _, _)| p.name.as_ref().is_none_or(|n| n == name))
        .map(|(name, ctrl, bdevs)| {
            let info = ctrl.info();
            let state = if ctrl.is_failed() {
                "failed"
            } else {
                "enabled"
            };
            let mut c = json!({
                "state": state,
                "trid": {"trtype": PCIE, "traddr": ctrl.bdf()},
                "cntlid": 0,
                "host": {"nqn": "", "addr": "", "svcid": ""},
                "model_number": info.model,
                "serial_number": info.serial,
                "firmware_revision": info.firmware,
                "num_io_queues": info.io_queues,
                "io_queue_size": info.io_queue_depth,
                "bdevs": bdevs,
            });
            // SPDK leaves numa_id out when the platform reports none.
            if let Some(n) = info.numa_node {
                c["numa_id"] = json!(n);
            }
            json!({"name": name, "ctrlrs": [c]})
        })
        .collect();
    Ok(Value::Array(out))
}

/// save_config's entries for the attached controllers, as SPDK writes
/// them in the bdev subsystem (`io_queue_size` only when not the default).
pub(super) fn config_entries() -> Vec<Value> {
    nvme_bdev::list()
        .into_iter()
        .map(|(name, ctrl, _)| {
            let mut params = json!({"name": name, "trtype": PCIE, "traddr": ctrl.bdf()});
            let depth = ctrl.info().io_queue_depth;
            if depth != pollux_nvme_pci::DEFAULT_IO_QUEUE_DEPTH {
                params["io_queue_size"] = json!(depth);
            }
            json!({"method": "bdev_nvme_attach_controller", "params": params})
        })
        .collect()
}
