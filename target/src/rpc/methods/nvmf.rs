//! NVMe-oF methods, named and shaped as SPDK's `lib/nvmf/nvmf_rpc.c`:
//! transports, subsystems, namespaces, listeners and hosts, all changeable
//! while hosts are connected (over `crate::nvmf::NvmfTarget`).
//!
//! Pollux has one NVMe-oF target (SPDK's default `nvmf_tgt`) and one
//! transport, TCP. Options Pollux cannot honour (TLS, passthrough) are
//! refused with -32602 naming the param rather than silently ignored.
//! ANA and namespace visibility methods are in `nvmf_paths`, the
//! DH-HMAC-CHAP host keys in `nvmf_auth`.

use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;
use serde_json::{json, Value};

use crate::nvmf::{
    AnaState, ControllerInfo, NsOptions, NvmfTarget, SubsystemInfo, SubsystemSpec, TransportOpts,
};
use crate::rpc::errors;
use crate::rpc::jsonrpc::{params, RpcError};
use crate::rpc::Dispatcher;

/// SPDK's name for its one default target; `tgt_name` may only name it.
const DEFAULT_TGT: &str = "nvmf_tgt";
/// The only transport.
const TCP: &str = "TCP";
/// The port SPDK uses when `trsvcid` is absent (IANA NVMe/TCP port).
const DEFAULT_TRSVCID: u16 = 4420;
/// Identify Controller SN is 20 ASCII bytes.
const SERIAL_MAX: usize = 20;
/// Identify Controller MN is 40 ASCII bytes.
const MODEL_MAX: usize = 40;
/// NVMe Base 2.0 section 4.5: an NQN is at most 223 bytes.
const NQN_MAX: usize = 223;
/// SPDK's serial number when none is given (`nvmf_rpc.c`).
const DEFAULT_SERIAL: &str = "00000000000000000000";
/// Model number when none is given.
const DEFAULT_MODEL: &str = "Pollux";
/// Dynamic controller IDs Pollux allocates (SPDK's defaults too).
const CNTLID_MIN: u16 = 1;
/// Highest dynamic controller ID (FFF0h and up are reserved).
const CNTLID_MAX: u16 = 0xFFEF;
/// The discovery subsystem's NQN.
const DISCOVERY_NQN: &str = pollux_nvme::fabrics::DISCOVERY_NQN;

pub(super) fn register(d: &mut Dispatcher) {
    d.register("nvmf_create_transport", nvmf_create_transport);
    d.register("nvmf_get_transports", nvmf_get_transports);
    d.register("nvmf_create_subsystem", nvmf_create_subsystem);
    d.register("nvmf_delete_subsystem", nvmf_delete_subsystem);
    d.register("nvmf_get_subsystems", nvmf_get_subsystems);
    d.register("nvmf_subsystem_add_ns", nvmf_subsystem_add_ns);
    d.register("nvmf_subsystem_remove_ns", nvmf_subsystem_remove_ns);
    d.register("nvmf_subsystem_add_listener", |d, p| listener(d, p, true));
    d.register("nvmf_subsystem_remove_listener", |d, p| {
        listener(d, p, false)
    });
    d.register("nvmf_subsystem_add_host", nvmf_subsystem_add_host);
    d.register("nvmf_subsystem_remove_host", nvmf_subsystem_remove_host);
    d.register(
        "nvmf_subsystem_allow_any_host",
        nvmf_subsystem_allow_any_host,
    );
    d.register(
        "nvmf_subsystem_get_controllers",
        nvmf_subsystem_get_controllers,
    );
    d.register_subsystem(crate::rpc::Subsystem {
        name: "nvmf",
        depends_on: &["bdev"],
        writer: config_writer,
    });
}

pub(super) fn target(d: &Dispatcher) -> Result<&NvmfTarget, RpcError> {
    d.ctx
        .nvmf
        .as_deref()
        .ok_or_else(|| RpcError::failed("NVMe-oF is not available in this process"))
}

pub(super) fn check_tgt(tgt_name: &Option<String>) -> Result<(), RpcError> {
    match tgt_name.as_deref() {
        None | Some(DEFAULT_TGT) => Ok(()),
        Some(t) => Err(RpcError::invalid_params(format!(
            "tgt_name: no target {t:?} (Pollux has one target, {DEFAULT_TGT:?})"
        ))),
    }
}

pub(super) fn refuse(param: &str, why: &str) -> RpcError {
    RpcError::invalid_params(format!("{param}: {why}"))
}

fn check_nqn(param: &str, nqn: &str) -> Result<(), RpcError> {
    if !nqn.starts_with("nqn.") {
        return Err(refuse(
            param,
            &format!("{nqn:?} is not an NQN (it must start with \"nqn.\")"),
        ));
    }
    if nqn.len() > NQN_MAX || nqn.bytes().any(|b| b.is_ascii_control()) {
        return Err(refuse(
            param,
            &format!("must be at most {NQN_MAX} bytes without control characters"),
        ));
    }
    Ok(())
}

fn check_ascii(param: &str, value: &str, max: usize) -> Result<(), RpcError> {
    if value.is_empty() || value.len() > max || !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(refuse(
            param,
            &format!("{value:?} must be 1 to {max} printable ASCII characters"),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------- transports

/// Every parameter SPDK's rpc.py sends for `nvmf_create_transport`, from
/// 24.01 to 26.09 (`scripts/rpc.py` / `python/spdk/cli/nvmf.py`; rpc.py
/// sends its store_true flags as `false` and `c2h_success`/`no_srq`
/// always). Unknown fields are refused, naming them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTransport {
    trtype: String,
    tgt_name: Option<String>,
    // Honoured, within `TransportOpts::validate`'s bounds.
    max_queue_depth: Option<u64>,
    max_io_qpairs_per_ctrlr: Option<u64>,
    in_capsule_data_size: Option<u64>,
    max_io_size: Option<u64>,
    io_unit_size: Option<u64>,
    max_aq_depth: Option<u64>,
    num_shared_buffers: Option<u64>,
    c2h_success: Option<bool>,
    sock_priority: Option<u64>,
    kas: Option<u64>,
    min_kato: Option<u64>,
    abort_timeout_sec: Option<u64>,
    masked_oncs: Option<Vec<String>>,
    masked_fuses: Option<Vec<String>>,
    /// No namespace carries protection information, so there is never
    /// anything to insert or strip (as SPDK with a bdev without DIF).
    dif_insert_or_strip: Option<bool>,
    /// SPDK falls back to copies where the bdev has no zero-copy path;
    /// Pollux's nodes have none, so it always does (reported false).
    #[allow(dead_code)] // accepted, as SPDK
    zcopy: Option<bool>,
    /// Pollux passes no command through, with or without the flag.
    #[allow(dead_code)] // accepted, as SPDK
    disable_command_passthru: Option<bool>,
    // Reservations from SPDK's transport-wide shared pool for each poll
    // group: Pollux's groups each own their whole budget, so there is
    // nothing to reserve.
    #[allow(dead_code)] // accepted, as SPDK
    buf_cache_size: Option<Value>,
    #[allow(dead_code)] // accepted, as SPDK
    iobuf_small_cache_size: Option<Value>,
    #[allow(dead_code)] // accepted, as SPDK
    iobuf_large_cache_size: Option<Value>,
    /// Preallocated buffers for Connect/admin in-capsule data; Pollux
    /// takes those from the connection's buffer cache.
    #[allow(dead_code)] // accepted, as SPDK
    control_msg_num: Option<Value>,
    /// Accept threads block in accept(2): nothing polls.
    #[allow(dead_code)] // accepted, as SPDK
    acceptor_poll_rate: Option<Value>,
    // RDMA and vfio-user only: SPDK's TCP transport ignores them too.
    #[allow(dead_code)] // accepted, as SPDK
    num_cqe: Option<Value>,
    #[allow(dead_code)] // accepted, as SPDK
    max_srq_depth: Option<Value>,
    #[allow(dead_code)] // accepted, as SPDK
    no_srq: Option<Value>,
    #[allow(dead_code)] // accepted, as SPDK
    acceptor_backlog: Option<Value>,
    #[allow(dead_code)] // accepted, as SPDK
    no_wr_batching: Option<Value>,
    #[allow(dead_code)] // accepted, as SPDK
    ack_timeout: Option<Value>,
    #[allow(dead_code)] // accepted, as SPDK
    data_wr_pool_size: Option<Value>,
    #[allow(dead_code)] // accepted, as SPDK
    disable_mappable_bar0: Option<Value>,
    #[allow(dead_code)] // accepted, as SPDK
    disable_adaptive_irq: Option<Value>,
    #[allow(dead_code)] // accepted, as SPDK
    disable_shadow_doorbells: Option<Value>,
}

/// `masked_oncs` names (SPDK's rpc.py) and the ONCS bit of each; Pollux
/// offers Compare, Dataset Management, Write Zeroes and reservations, so
/// masking the others changes nothing.
const ONCS_NAMES: [(&str, u16); 5] = [
    ("nvmcmps", pollux_nvme::identify::oncs::COMPARE),
    ("nvmdsmsv", pollux_nvme::identify::oncs::DSM),
    ("nvmwzsv", pollux_nvme::identify::oncs::WRITE_ZEROES),
    ("reservs", pollux_nvme::identify::oncs::RESERVATIONS),
    ("nvmcpys", 0),
];
/// `masked_fuses` names and the FUSES bit of each.
const FUSES_NAMES: [(&str, u16); 1] = [("fcws", pollux_nvme::identify::fuses::COMPARE_AND_WRITE)];

fn opt_u32(param: &str, v: Option<u64>, default: u32) -> Result<u32, RpcError> {
    match v {
        None => Ok(default),
        Some(n) => {
            u32::try_from(n).map_err(|_| refuse(param, &format!("{n} is above {}", u32::MAX)))
        }
    }
}

impl CreateTransport {
    /// The options asked for, over Pollux's defaults.
    fn opts(&self) -> Result<TransportOpts, RpcError> {
        let d = TransportOpts::default();
        let mut masked_oncs = 0;
        for name in self.masked_oncs.iter().flatten() {
            let Some((_, bit)) = ONCS_NAMES.iter().find(|(n, _)| n == name) else {
                return Err(refuse("masked_oncs", &format!("unknown feature {name:?}")));
            };
            masked_oncs |= bit;
        }
        let mut masked_fuses = 0;
        for name in self.masked_fuses.iter().flatten() {
            let Some((_, bit)) = FUSES_NAMES.iter().find(|(n, _)| n == name) else {
                return Err(refuse("masked_fuses", &format!("unknown feature {name:?}")));
            };
            masked_fuses |= bit;
        }
        // Without io_unit_size the granule follows max_io_size (SPDK's
        // default equals its default max_io_size).
        let max_io_size = opt_u32("max_io_size", self.max_io_size, d.max_io_size)?;
        let io_unit_default = d.io_unit_size.min(max_io_size.max(1));
        let io_unit_size = opt_u32("io_unit_size", self.io_unit_size, io_unit_default)?;
        // Without num_shared_buffers the budget stays the default bytes.
        let bufs_default =
            (d.buffer_budget() / u64::from(io_unit_size.max(1))).min(u64::from(u32::MAX)) as u32;
        Ok(TransportOpts {
            max_queue_depth: opt_u32("max_queue_depth", self.max_queue_depth, d.max_queue_depth)?,
            max_aq_depth: opt_u32("max_aq_depth", self.max_aq_depth, d.max_aq_depth)?,
            max_io_qpairs_per_ctrlr: opt_u32(
                "max_io_qpairs_per_ctrlr",
                self.max_io_qpairs_per_ctrlr,
                d.max_io_qpairs_per_ctrlr,
            )?,
            in_capsule_data_size: opt_u32(
                "in_capsule_data_size",
                self.in_capsule_data_size,
                d.in_capsule_data_size,
            )?,
            max_io_size,
            io_unit_size,
            num_shared_buffers: opt_u32(
                "num_shared_buffers",
                self.num_shared_buffers,
                bufs_default,
            )?,
            c2h_success: self.c2h_success.unwrap_or(d.c2h_success),
            sock_priority: opt_u32("sock_priority", self.sock_priority, d.sock_priority)?,
            kas: opt_u32("kas", self.kas, d.kas)?,
            min_kato: opt_u32("min_kato", self.min_kato, d.min_kato)?,
            abort_timeout_sec: opt_u32(
                "abort_timeout_sec",
                self.abort_timeout_sec,
                d.abort_timeout_sec,
            )?,
            masked_oncs,
            masked_fuses,
            dif_insert_or_strip: self.dif_insert_or_strip.unwrap_or(d.dif_insert_or_strip),
        })
    }
}

/// The options in force under SPDK's names (`nvmf_get_transports`, and
/// `save_config`, whose replay gives the same options back).
fn transport_json(o: &TransportOpts) -> Value {
    let masked: Vec<&str> = ONCS_NAMES
        .iter()
        .filter(|(_, bit)| *bit != 0 && o.masked_oncs & bit == *bit)
        .map(|(n, _)| *n)
        .collect();
    json!({
        "trtype": TCP,
        "max_queue_depth": o.max_queue_depth,
        "max_io_qpairs_per_ctrlr": o.max_io_qpairs_per_ctrlr,
        "in_capsule_data_size": o.in_capsule_data_size,
        "max_io_size": o.max_io_size,
        "io_unit_size": o.io_unit_size,
        "max_aq_depth": o.max_aq_depth,
        "num_shared_buffers": o.num_shared_buffers,
        "c2h_success": o.c2h_success,
        "dif_insert_or_strip": o.dif_insert_or_strip,
        "zcopy": false,
        "sock_priority": o.sock_priority,
        "abort_timeout_sec": o.abort_timeout_sec,
        "kas": o.kas,
        "min_kato": o.min_kato,
        "masked_oncs": masked,
    })
}

fn nvmf_create_transport(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let c: CreateTransport = params(p)?;
    check_tgt(&c.tgt_name)?;
    if !c.trtype.eq_ignore_ascii_case(TCP) {
        return Err(refuse(
            "trtype",
            &format!(
                "transport {:?} is not available (Pollux serves TCP only)",
                c.trtype
            ),
        ));
    }
    let opts = c.opts()?;
    target(d)?
        .create_transport(opts)
        .map_err(|e| errors::nvmf("trtype", e))?;
    Ok(json!(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetTransports {
    trtype: Option<String>,
    tgt_name: Option<String>,
}

fn nvmf_get_transports(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let g: GetTransports = params(p)?;
    check_tgt(&g.tgt_name)?;
    let t = target(d)?;
    let list: Vec<Value> = t.transport().iter().map(transport_json).collect();
    if let Some(tr) = &g.trtype {
        if !tr.eq_ignore_ascii_case(TCP) || list.is_empty() {
            return Err(refuse("trtype", &format!("no transport {tr:?}")));
        }
    }
    Ok(json!(list))
}

// ---------------------------------------------------------------- subsystems

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateSubsystem {
    nqn: String,
    tgt_name: Option<String>,
    serial_number: Option<String>,
    model_number: Option<String>,
    #[serde(default)]
    allow_any_host: bool,
    #[serde(default)]
    max_namespaces: u32,
    #[serde(default)]
    ana_reporting: bool,
    min_cntlid: Option<u16>,
    max_cntlid: Option<u16>,
    /// Limits SPDK reports to hosts in Identify Controller (DMRSL, WZSL):
    /// `dmrsl`/`wzsl` since 26.05, in KiB before. 0 (SPDK's default) is
    /// "no limit", which is what Pollux's nodes have and report.
    max_discard_size_kib: Option<u64>,
    max_write_zeroes_size_kib: Option<u64>,
    dmrsl: Option<u32>,
    wzsl: Option<u8>,
    #[serde(default)]
    passthrough: bool,
    #[serde(default)]
    enable_nssr: bool,
    admin_label: Option<String>,
}

fn nvmf_create_subsystem(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let c: CreateSubsystem = params(p)?;
    check_tgt(&c.tgt_name)?;
    check_nqn("nqn", &c.nqn)?;
    let serial = c.serial_number.unwrap_or_else(|| DEFAULT_SERIAL.into());
    check_ascii("serial_number", &serial, SERIAL_MAX)?;
    let model = c.model_number.unwrap_or_else(|| DEFAULT_MODEL.into());
    check_ascii("model_number", &model, MODEL_MAX)?;
    let nqn = c.nqn.clone();
    if c.passthrough {
        return Err(refuse(
            "passthrough",
            "NVMe passthrough needs an NVMe bdev, which Pollux does not have",
        ));
    }
    for (param, v, default) in [
        ("min_cntlid", c.min_cntlid, CNTLID_MIN),
        ("max_cntlid", c.max_cntlid, CNTLID_MAX),
    ] {
        if v.is_some_and(|v| v != default) {
            return Err(refuse(
                param,
                &format!("Pollux allocates controller IDs {CNTLID_MIN}..={CNTLID_MAX} (0x{CNTLID_MAX:X}) only"),
            ));
        }
    }
    for (param, v) in [
        ("max_discard_size_kib", c.max_discard_size_kib),
        ("max_write_zeroes_size_kib", c.max_write_zeroes_size_kib),
        ("dmrsl", c.dmrsl.map(u64::from)),
        ("wzsl", c.wzsl.map(u64::from)),
    ] {
        if v.is_some_and(|v| v != 0) {
            return Err(refuse(
                param,
                "reporting a size limit is not supported (Pollux's namespaces take any size; 0 = no limit)",
            ));
        }
    }
    if c.admin_label.is_some() {
        return Err(refuse(
            "admin_label",
            "extended discovery log entries are not supported",
        ));
    }
    if c.enable_nssr {
        return Err(refuse(
            "enable_nssr",
            "NVM subsystem reset is not offered (CAP.NSSRS is 0)",
        ));
    }
    target(d)?
        .create_subsystem(SubsystemSpec {
            nqn: c.nqn,
            serial,
            model,
            max_namespaces: c.max_namespaces,
            nn_floor: if c.max_namespaces == 0 {
                crate::nvmf::DEFAULT_MAX_NSID
            } else {
                c.max_namespaces
            },
            allow_any_host: c.allow_any_host,
            hosts: Vec::new(),
        })
        .map_err(|e| errors::nvmf("nqn", e))?;
    if c.ana_reporting {
        target(d)?
            .set_ana_reporting(&nqn, true)
            .map_err(|e| errors::nvmf("ana_reporting", e))?;
    }
    Ok(json!(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Nqn {
    pub(super) nqn: String,
    pub(super) tgt_name: Option<String>,
}

fn nvmf_delete_subsystem(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let n: Nqn = params(p)?;
    check_tgt(&n.tgt_name)?;
    if n.nqn == DISCOVERY_NQN {
        return Err(refuse("nqn", "the discovery subsystem cannot be deleted"));
    }
    target(d)?
        .delete_subsystem(&n.nqn)
        .map_err(|e| errors::nvmf("nqn", e))?;
    Ok(json!(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetSubsystems {
    nqn: Option<String>,
    tgt_name: Option<String>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

fn uuid_string(u: &[u8; 16]) -> String {
    let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

pub(super) fn listen_address(addr: &SocketAddr) -> Value {
    json!({
        "trtype": TCP,
        "adrfam": if addr.is_ipv4() { "IPv4" } else { "IPv6" },
        "traddr": addr.ip().to_string(),
        "trsvcid": addr.port().to_string(),
    })
}

fn describe(s: &SubsystemInfo) -> Value {
    json!({
        "nqn": s.nqn,
        "subtype": "NVMe",
        "listen_addresses": s.access.ports.iter().map(listen_address).collect::<Vec<_>>(),
        "allow_any_host": s.access.allow_any_host,
        "hosts": s.access.hosts.iter().map(|h| super::nvmf_auth::host_json(&s.access, h)).collect::<Vec<_>>(),
        "serial_number": s.serial,
        "model_number": s.model,
        "max_namespaces": s.max_namespaces,
        "min_cntlid": CNTLID_MIN,
        "max_cntlid": CNTLID_MAX,
        "ana_reporting": s.ana_reporting,
        "namespaces": s.namespaces.iter().map(|n| {
            let mut ns = json!({
                "nsid": n.nsid,
                "bdev_name": n.bdev,
                "name": n.bdev,
                "nguid": hex(&n.nguid),
                "uuid": uuid_string(&n.uuid),
                "no_auto_visible": !n.auto_visible,
            });
            // As SPDK: the group only where hosts are told about it.
            if s.ana_reporting {
                ns["anagrpid"] = json!(n.anagrpid);
            }
            if let Some(p) = &n.ptpl_file {
                ns["ptpl_file"] = json!(p.display().to_string());
            }
            ns
        }).collect::<Vec<_>>(),
    })
}

fn nvmf_get_subsystems(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let g: GetSubsystems = params(p)?;
    check_tgt(&g.tgt_name)?;
    let mut list = vec![json!({
        "nqn": DISCOVERY_NQN,
        "subtype": "Discovery",
        "listen_addresses": [],
        "hosts": [],
        "allow_any_host": true,
    })];
    if let Some(t) = d.ctx.nvmf.as_deref() {
        list.extend(t.subsystems().iter().map(describe));
    }
    if let Some(nqn) = &g.nqn {
        list.retain(|s| s["nqn"] == json!(nqn));
        if list.is_empty() {
            return Err(refuse("nqn", &format!("no subsystem {nqn}")));
        }
    }
    Ok(json!(list))
}

// ---------------------------------------------------------------- namespaces

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NsParams {
    bdev_name: String,
    nsid: Option<u32>,
    nguid: Option<String>,
    uuid: Option<String>,
    eui64: Option<String>,
    ptpl_file: Option<String>,
    anagrpid: Option<u32>,
    #[serde(default)]
    no_auto_visible: bool,
    /// SPDK 25.01 to 26.05 (rpc.py sends `false` unasked): expose the bdev
    /// without its per-block metadata. Pollux's bdevs have none (md_size
    /// is refused at creation), so the namespace is metadata-free either
    /// way and both values are honoured.
    #[allow(dead_code)] // honoured either way, see above
    hide_metadata: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddNs {
    nqn: String,
    namespace: NsParams,
    tgt_name: Option<String>,
}

/// 16 bytes from 32 hex digits, dashes allowed (a UUID or an NGUID).
fn parse_16(param: &str, text: &str) -> Result<[u8; 16], RpcError> {
    let digits: Vec<u8> = text.bytes().filter(|&b| b != b'-').collect();
    let bad = || refuse(param, &format!("{text:?} is not 16 bytes of hexadecimal"));
    if digits.len() != 32 {
        return Err(bad());
    }
    let mut out = [0u8; 16];
    for (i, pair) in digits.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).map_err(|_| bad())?;
        out[i] = u8::from_str_radix(s, 16).map_err(|_| bad())?;
    }
    Ok(out)
}

fn nvmf_subsystem_add_ns(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let a: AddNs = params(p)?;
    check_tgt(&a.tgt_name)?;
    let ns = a.namespace;
    if ns.eui64.is_some() {
        return Err(refuse(
            "namespace.eui64",
            "EUI-64 identifiers are not supported (use nguid or uuid)",
        ));
    }
    if ns.ptpl_file.as_deref() == Some("") {
        return Err(refuse("namespace.ptpl_file", "an empty path"));
    }
    if ns.nsid == Some(0) {
        return Err(refuse("namespace.nsid", "0 is not a namespace ID"));
    }
    let nguid = match (&ns.nguid, &ns.uuid) {
        (Some(n), _) => Some(parse_16("namespace.nguid", n)?),
        (None, Some(u)) => Some(parse_16("namespace.uuid", u)?),
        (None, None) => None,
    };
    if d.ctx.graph.node_geometry(&ns.bdev_name).is_none() {
        return Err(refuse(
            "namespace.bdev_name",
            &format!("no bdev {:?}", ns.bdev_name),
        ));
    }
    // The ANA group is recorded without ANA reporting too (SPDK shows it
    // to nobody then); its bound is SPDK's: 0 (= the NSID) up to the
    // subsystem's namespace limit.
    let opts = NsOptions {
        anagrpid: ns.anagrpid,
        no_auto_visible: ns.no_auto_visible,
        ptpl_file: ns.ptpl_file.map(Into::into),
    };
    let nsid = target(d)?
        .add_namespace_opts(&a.nqn, &ns.bdev_name, ns.nsid, nguid, &opts)
        .map_err(|e| errors::nvmf("namespace", e))?;
    Ok(json!(nsid))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveNs {
    nqn: String,
    nsid: u32,
    tgt_name: Option<String>,
}

fn nvmf_subsystem_remove_ns(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let r: RemoveNs = params(p)?;
    check_tgt(&r.tgt_name)?;
    target(d)?
        .remove_namespace(&r.nqn, r.nsid)
        .map_err(|e| errors::nvmf("nsid", e))?;
    Ok(json!(true))
}

// ---------------------------------------------------------------- listeners

/// `trsvcid` is a string in SPDK's schema; accept a number too.
#[derive(Deserialize)]
#[serde(untagged)]
enum Svc {
    Text(String),
    Number(u16),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListenAddress {
    trtype: Option<String>,
    /// SPDK 24.01 and 24.05 also took the transport under this name (a
    /// deprecated alias of `trtype`, used when `trtype` is absent).
    transport: Option<String>,
    adrfam: Option<String>,
    traddr: String,
    trsvcid: Option<Svc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenerParams {
    nqn: String,
    listen_address: ListenAddress,
    tgt_name: Option<String>,
    #[serde(default)]
    secure_channel: bool,
    ana_state: Option<String>,
    sock_impl: Option<String>,
    numa_id: Option<i32>,
}

pub(super) fn parse_listen(a: &ListenAddress) -> Result<SocketAddr, RpcError> {
    let Some(trtype) = a.trtype.as_ref().or(a.transport.as_ref()) else {
        return Err(refuse("listen_address.trtype", "missing"));
    };
    if !trtype.eq_ignore_ascii_case(TCP) {
        return Err(refuse(
            "listen_address.trtype",
            &format!("{trtype:?} is not available (Pollux serves TCP only)"),
        ));
    }
    let text = a.traddr.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = text.parse().map_err(|_| {
        refuse(
            "listen_address.traddr",
            &format!("{:?} is not an IP address", a.traddr),
        )
    })?;
    match a.adrfam.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None => {}
        Some("ipv4") if ip.is_ipv4() => {}
        Some("ipv6") if ip.is_ipv6() => {}
        Some(f @ ("ipv4" | "ipv6")) => {
            return Err(refuse(
                "listen_address.adrfam",
                &format!("{f} does not match traddr {ip}"),
            ))
        }
        Some(f) => {
            return Err(refuse(
                "listen_address.adrfam",
                &format!("{f:?} is not available over TCP (ipv4 or ipv6)"),
            ))
        }
    }
    let port = match &a.trsvcid {
        None => DEFAULT_TRSVCID,
        Some(Svc::Number(n)) => *n,
        Some(Svc::Text(t)) => t.trim().parse::<u16>().map_err(|_| {
            refuse(
                "listen_address.trsvcid",
                &format!("{t:?} is not a TCP port"),
            )
        })?,
    };
    Ok(SocketAddr::new(ip, port))
}

fn listener(d: &Dispatcher, p: Option<Value>, add: bool) -> Result<Value, RpcError> {
    let l: ListenerParams = params(p)?;
    check_tgt(&l.tgt_name)?;
    let addr = parse_listen(&l.listen_address)?;
    if l.secure_channel {
        return Err(refuse("secure_channel", "TLS is not supported"));
    }
    let ana_state = match l.ana_state.as_deref() {
        None => None,
        Some(s) => Some(AnaState::from_spdk_name(s).ok_or_else(|| {
            refuse(
                "ana_state",
                &format!("{s:?} is not optimized, non_optimized or inaccessible"),
            )
        })?),
    };
    if l.sock_impl.as_deref().is_some_and(|s| s != "posix") {
        return Err(refuse(
            "sock_impl",
            "Pollux has one socket implementation, \"posix\"",
        ));
    }
    // NUMA placement only matters to vfio-user, as in SPDK.
    let _ = l.numa_id;
    // "discovery" is rpc.py's shortcut for the discovery NQN.
    if l.nqn == DISCOVERY_NQN || l.nqn == "discovery" {
        return Err(refuse(
            "nqn",
            "discovery is answered on every subsystem listener; a discovery-only listener is not supported",
        ));
    }
    let t = target(d)?;
    if add {
        let bound = t
            .add_listener(&l.nqn, addr)
            .map_err(|e| errors::nvmf("listen_address", e))?;
        // The initial state, before any host can connect through it.
        if let Some(state) = ana_state.filter(|&s| s != AnaState::Optimized) {
            t.set_listener_ana_state(&l.nqn, bound, state, None)
                .map_err(|e| errors::nvmf("ana_state", e))?;
        }
    } else {
        t.remove_listener(&l.nqn, addr)
            .map_err(|e| errors::nvmf("listen_address", e))?;
    }
    Ok(json!(true))
}

// ---------------------------------------------------------------- hosts

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddHost {
    nqn: String,
    host: String,
    tgt_name: Option<String>,
    psk: Option<String>,
    dhchap_key: Option<String>,
    dhchap_ctrlr_key: Option<String>,
}

fn nvmf_subsystem_add_host(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let h: AddHost = params(p)?;
    check_tgt(&h.tgt_name)?;
    check_nqn("host", &h.host)?;
    if h.psk.is_some() {
        return Err(refuse("psk", "TLS is not supported"));
    }
    let keys =
        super::nvmf_auth::host_keys(d, h.dhchap_key.as_deref(), h.dhchap_ctrlr_key.as_deref())?;
    target(d)?
        .add_host_with_keys(&h.nqn, &h.host, keys)
        .map_err(|e| errors::nvmf("host", e))?;
    Ok(json!(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveHost {
    nqn: String,
    host: String,
    tgt_name: Option<String>,
    /// Pollux tears the host's controllers down at once and their I/O in
    /// flight completes on its own; there is nothing to wait for.
    #[allow(dead_code)] // accepted, as SPDK
    timeout_ms: Option<u64>,
}

fn nvmf_subsystem_remove_host(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let h: RemoveHost = params(p)?;
    check_tgt(&h.tgt_name)?;
    target(d)?
        .remove_host(&h.nqn, &h.host)
        .map_err(|e| errors::nvmf("host", e))?;
    Ok(json!(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowAny {
    nqn: String,
    allow_any_host: bool,
    tgt_name: Option<String>,
}

fn nvmf_subsystem_allow_any_host(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let a: AllowAny = params(p)?;
    check_tgt(&a.tgt_name)?;
    target(d)?
        .set_allow_any_host(&a.nqn, a.allow_any_host)
        .map_err(|e| errors::nvmf("nqn", e))?;
    Ok(json!(true))
}

// ---------------------------------------------------------------- controllers

/// `nvmf_subsystem_get_controllers`: the connected controllers of one
/// subsystem, in the shape of SPDK's `dump_nvmf_ctrlr`.
fn nvmf_subsystem_get_controllers(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let n: Nqn = params(p)?;
    check_tgt(&n.tgt_name)?;
    let list = target(d)?
        .subsystem_controllers(&n.nqn)
        .map_err(|e| errors::nvmf("nqn", e))?;
    Ok(json!(list
        .iter()
        .map(describe_controller)
        .collect::<Vec<_>>()))
}

fn describe_controller(c: &ControllerInfo) -> Value {
    json!({
        "cntlid": c.cntlid,
        // SPDK 26.05 added the controller type (CNTRLTYPE's name).
        "cntrltype": if c.discovery { "discovery" } else { "io" },
        "hostnqn": c.hostnqn,
        "hostid": uuid_string(&c.hostid),
        // SPDK counts the bits of the controller's qpair_mask, where the
        // admin queue (QID 0) has its bit too; the same count here, so an
        // orchestrator reads the same number from either target.
        "num_io_qpairs": c.queues,
    })
}

// ---------------------------------------------------------------- save_config

/// `save_config`'s nvmf part, in SPDK's order: the transport, then per
/// subsystem create, listeners, hosts, namespaces. Subsystems from the
/// TOML config are written too (with the TCP transport they imply).
fn config_writer(d: &Dispatcher) -> Vec<Value> {
    let Some(t) = d.ctx.nvmf.as_deref() else {
        return Vec::new();
    };
    let subs = t.subsystems();
    let mut out: Vec<Value> = super::nvmf_auth::set_config_entry(d).into_iter().collect();
    // The options in force, so a replay creates the same transport; with
    // only TOML subsystems, the defaults they run with.
    if t.transport().is_some() || !subs.is_empty() {
        let tr = transport_json(&t.transport_opts());
        out.push(json!({"method": "nvmf_create_transport", "params": tr}));
    }
    for s in &subs {
        out.push(json!({"method": "nvmf_create_subsystem", "params": {
            "nqn": s.nqn,
            "serial_number": s.serial,
            "model_number": s.model,
            "allow_any_host": s.access.allow_any_host,
            "max_namespaces": s.max_namespaces,
            "ana_reporting": s.ana_reporting,
        }}));
        for port in &s.access.ports {
            out.push(json!({"method": "nvmf_subsystem_add_listener", "params": {
                "nqn": s.nqn,
                "listen_address": listen_address(port),
            }}));
        }
        for h in &s.access.hosts {
            let mut p = super::nvmf_auth::host_json(&s.access, h);
            p["host"] = json!(h);
            p["nqn"] = json!(s.nqn);
            out.push(json!({"method": "nvmf_subsystem_add_host", "params": p}));
        }
        for n in &s.namespaces {
            let mut ns = json!({"bdev_name": n.bdev, "nsid": n.nsid});
            if n.nguid_given {
                ns["nguid"] = json!(hex(&n.nguid));
            }
            if n.anagrpid != n.nsid {
                ns["anagrpid"] = json!(n.anagrpid);
            }
            if !n.auto_visible {
                ns["no_auto_visible"] = json!(true);
            }
            if let Some(p) = &n.ptpl_file {
                ns["ptpl_file"] = json!(p.display().to_string());
            }
            out.push(json!({"method": "nvmf_subsystem_add_ns", "params": {
                "nqn": s.nqn,
                "namespace": ns,
            }}));
            for h in &n.hosts {
                out.push(json!({"method": "nvmf_ns_add_host", "params": {
                    "nqn": s.nqn,
                    "nsid": n.nsid,
                    "host": h,
                }}));
            }
        }
        // Listener ANA states last: their groups exist by now.
        for port in &s.access.ports {
            let states = t.listener_ana_states(&s.nqn, *port).unwrap_or_default();
            for (g, st) in states
                .into_iter()
                .filter(|(_, st)| *st != AnaState::Optimized)
            {
                out.push(
                    json!({"method": "nvmf_subsystem_listener_set_ana_state", "params": {
                        "nqn": s.nqn,
                        "listen_address": listen_address(port),
                        "ana_state": st.spdk_name(),
                        "anagrpid": g,
                    }}),
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every param rpc.py 25.5 to 26.9 sends with every CLI option given,
    /// and every one SPDK's servers 24.01 to 26.09 decode, is a known
    /// field (the values here are the defaults rpc.py sends unasked, or
    /// plain ones); an undocumented one is still refused, by name.
    #[test]
    fn every_documented_param_decodes() {
        params::<CreateSubsystem>(Some(json!({
            "nqn": "nqn.2016-06.io.spdk:a", "tgt_name": "nvmf_tgt",
            "serial_number": "S", "model_number": "M", "allow_any_host": false,
            "max_namespaces": 0, "ana_reporting": false, "min_cntlid": 1,
            "max_cntlid": 65519, "max_discard_size_kib": 0,
            "max_write_zeroes_size_kib": 0, "dmrsl": 0, "wzsl": 0,
            "passthrough": false, "enable_nssr": false, "admin_label": "x"
        })))
        .unwrap();
        params::<AddNs>(Some(json!({
            "nqn": "nqn.2016-06.io.spdk:a", "tgt_name": "nvmf_tgt",
            "namespace": {
                "bdev_name": "b", "nsid": 1, "nguid": NGUID, "uuid": UUID,
                "eui64": "0011223344556677", "ptpl_file": "/p", "anagrpid": 1,
                "no_auto_visible": false, "hide_metadata": false
            }
        })))
        .unwrap();
        for listen_address in [
            json!({"trtype": "tcp", "adrfam": "ipv4", "traddr": "127.0.0.1", "trsvcid": "4420"}),
            // SPDK 24.01 and 24.05's deprecated name for trtype.
            json!({"transport": "tcp", "traddr": "127.0.0.1", "trsvcid": "4420"}),
        ] {
            let l: ListenerParams = params(Some(json!({
                "nqn": "nqn.2016-06.io.spdk:a", "tgt_name": "nvmf_tgt",
                "listen_address": listen_address, "secure_channel": false,
                "ana_state": "optimized", "sock_impl": "posix", "numa_id": -1
            })))
            .unwrap();
            assert_eq!(
                parse_listen(&l.listen_address).unwrap(),
                "127.0.0.1:4420".parse().unwrap()
            );
        }
        params::<AddHost>(Some(json!({
            "nqn": "nqn.2016-06.io.spdk:a", "host": "nqn.h", "tgt_name": "nvmf_tgt",
            "psk": "k", "dhchap_key": "k", "dhchap_ctrlr_key": "k"
        })))
        .unwrap();
        params::<RemoveHost>(Some(json!({
            "nqn": "nqn.2016-06.io.spdk:a", "host": "nqn.h", "tgt_name": "nvmf_tgt",
            "timeout_ms": 1000
        })))
        .unwrap();
        params::<Nqn>(Some(
            json!({"nqn": "nqn.2016-06.io.spdk:a", "tgt_name": "nvmf_tgt"}),
        ))
        .unwrap();
        let e = params::<AddNs>(Some(json!({
            "nqn": "nqn.2016-06.io.spdk:a",
            "namespace": {"bdev_name": "b", "hide_metdata": false}
        })))
        .err()
        .expect("a misspelt param is refused");
        assert!(e.message.contains("hide_metdata"), "{}", e.message);
    }

    /// What `nvmf_subsystem_get_controllers` answers for one controller:
    /// SPDK's keys, the host ID as a UUID.
    #[test]
    fn controllers_are_described_as_spdk_dumps_them() {
        let c = ControllerInfo {
            cntlid: 3,
            discovery: false,
            hostnqn: "nqn.2014-08.org.nvmexpress:uuid:x".into(),
            hostid: parse_16("hostid", UUID).unwrap(),
            queues: 5,
        };
        assert_eq!(
            describe_controller(&c),
            json!({
                "cntlid": 3, "cntrltype": "io",
                "hostnqn": "nqn.2014-08.org.nvmexpress:uuid:x",
                "hostid": UUID, "num_io_qpairs": 5
            })
        );
    }

    const NGUID: &str = "0123456789ABCDEF0123456789ABCDEF";
    const UUID: &str = "5f7c2a7e-7d3a-4e1b-9a53-6f0c1d2e3f40";
}
