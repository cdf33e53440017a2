//! vhost methods: `vhost_create_blk_controller`, `vhost_delete_controller`,
//! `vhost_get_controllers`, as SPDK's `lib/vhost/vhost_rpc.c` names and
//! shapes them, over the front-end's control-plane API
//! (`crate::vhost::VhostTargets`).
//!
//! SPDK runs each controller on one SPDK thread placed within `cpumask`;
//! Pollux polls each virtqueue on a reactor, so `cpumask` chooses the
//! reactors and the queues are spread over them round robin.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::VhostBlkConfig;
use crate::rpc::jsonrpc::{params, RpcError};
use crate::rpc::Dispatcher;
use crate::vhost::{ControlError, ControllerInfo, VhostTargets};

/// Virtqueues offered when `num_queues` is absent. SPDK offers 256
/// (SPDK_VHOST_MAX_VQUEUES), and QEMU's vhost-user-blk-pci asks for one
/// queue per vCPU by default and refuses a back-end offering fewer; a queue
/// the front-end never starts costs a few bytes per connection.
const DEFAULT_NUM_QUEUES: u16 = 256;

/// Most queues a controller may offer; the config's limit, for the same
/// reason (QEMU caps vhost-user-blk at 1024).
const MAX_NUM_QUEUES: u16 = crate::config::MAX_VHOST_QUEUES;

/// Highest CPU id a cpumask may name: CONFIG_NR_CPUS tops out at 8192
/// (x86_64 MAXSMP). Bounds the work a list such as "[0-4000000000]" costs.
const MAX_CPU: usize = 8192;

/// The only transport: SPDK's name for vhost-user-blk.
const TRANSPORT: &str = "vhost_user_blk";

pub(super) fn register(d: &mut Dispatcher) {
    d.register("vhost_create_blk_controller", vhost_create_blk_controller);
    d.register("vhost_delete_controller", vhost_delete_controller);
    d.register("vhost_get_controllers", vhost_get_controllers);
    d.register_subsystem(crate::rpc::Subsystem {
        name: "vhost_blk",
        depends_on: &["bdev"],
        writer: config_writer,
    });
}

fn vhost(d: &Dispatcher) -> Result<&VhostTargets, RpcError> {
    d.ctx
        .vhost
        .as_deref()
        .ok_or_else(|| RpcError::failed("vhost is not available in this process"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBlk {
    ctrlr: String,
    dev_name: String,
    cpumask: Option<String>,
    #[serde(default)]
    readonly: bool,
    #[serde(default)]
    packed_ring: bool,
    /// Only meaningful with packed rings, which are refused.
    #[serde(default)]
    #[allow(dead_code)] // accepted for compatibility with older rpc.py
    packed_ring_recovery: bool,
    transport: Option<String>,
    /// Pollux extension: virtqueues offered (default 256).
    num_queues: Option<u16>,
    /// Pollux extension: the core polling each queue (default: round robin
    /// over `cpumask`).
    queue_cores: Option<Vec<usize>>,
}

fn vhost_create_blk_controller(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let p: CreateBlk = params(p)?;
    let vhost = vhost(d)?;
    if let Some(t) = p.transport.as_deref().filter(|t| *t != TRANSPORT) {
        return Err(RpcError::invalid_params(format!(
            "transport: {t:?} is not available (Pollux serves {TRANSPORT:?})"
        )));
    }
    if p.packed_ring {
        return Err(RpcError::invalid_params(
            "packed_ring: packed virtqueues are not supported (split rings only)",
        ));
    }
    let socket = vhost
        .socket_for(&p.ctrlr)
        .map_err(|m| RpcError::invalid_params(format!("ctrlr: {m}")))?;
    let reactors = Reactors::of(d);
    let mask: Vec<usize> = match &p.cpumask {
        None => (0..reactors.cores.len()).collect(),
        Some(text) => {
            let cores = parse_cpumask(text)
                .map_err(|m| RpcError::invalid_params(format!("cpumask: {m}")))?;
            let mut idx = cores
                .iter()
                .map(|&c| reactors.index_of(c, "cpumask"))
                .collect::<Result<Vec<_>, _>>()?;
            idx.sort_unstable();
            idx
        }
    };
    let num_queues = p.num_queues.unwrap_or(DEFAULT_NUM_QUEUES);
    if num_queues == 0 || num_queues > MAX_NUM_QUEUES {
        return Err(RpcError::invalid_params(format!(
            "num_queues: {num_queues} is not between 1 and {MAX_NUM_QUEUES}"
        )));
    }
    let queue_reactors = match &p.queue_cores {
        None => round_robin(&mask, num_queues),
        Some(cores) => {
            if cores.len() != usize::from(num_queues) {
                return Err(RpcError::invalid_params(format!(
                    "queue_cores: has {} entries but num_queues is {num_queues} (one core per queue)",
                    cores.len()
                )));
            }
            let mut out = Vec::with_capacity(cores.len());
            for (q, &core) in cores.iter().enumerate() {
                let r = reactors.index_of(core, &format!("queue_cores[{q}]"))?;
                if !mask.contains(&r) {
                    return Err(RpcError::invalid_params(format!(
                        "queue_cores[{q}]: core {core} is not in cpumask"
                    )));
                }
                out.push(r);
            }
            out
        }
    };
    let cfg = VhostBlkConfig {
        socket,
        bdev: p.dev_name,
        num_queues,
        queue_reactors,
        readonly: p.readonly,
    };
    vhost.create(&p.ctrlr, &cfg)?;
    Ok(json!(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteCtrlr {
    ctrlr: String,
}

fn vhost_delete_controller(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let p: DeleteCtrlr = params(p)?;
    vhost(d)?.delete(&p.ctrlr)?;
    Ok(json!(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetCtrlrs {
    /// SPDK's param is `name`, although the result calls it `ctrlr`.
    name: Option<String>,
}

fn vhost_get_controllers(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let p: GetCtrlrs = params(p)?;
    let reactors = Reactors::of(d);
    let list: Vec<Value> = vhost(d)?
        .list()
        .iter()
        .filter(|c| p.name.as_deref().is_none_or(|n| n == c.ctrlr))
        .map(|c| describe(c, &reactors))
        .collect();
    if let (Some(name), true) = (&p.name, list.is_empty()) {
        return Err(ControlError::NoSuchController(name.clone()).into());
    }
    Ok(json!(list))
}

fn describe(c: &ControllerInfo, reactors: &Reactors) -> Value {
    let sessions: Vec<Value> = c
        .session
        .iter()
        .map(|s| {
            json!({
                "vid": s.id,
                "id": s.id,
                "name": format!("{}_s{}", c.ctrlr, s.id),
                "started": s.started_queues > 0,
                "max_queues": s.started_queues,
            })
        })
        .collect();
    json!({
        "ctrlr": c.ctrlr,
        "cpumask": format!("0x{}", format_mask(&reactors.mask_of(&c.config.queue_reactors))),
        // Pollux does not coalesce interrupts: 0 is SPDK's "disabled".
        "delay_base_us": 0,
        "iops_threshold": 0,
        "socket": c.config.socket,
        "sessions": sessions,
        "num_queues": c.config.num_queues,
        "backend_specific": {
            "block": {
                "readonly": c.config.readonly,
                "bdev": c.config.bdev,
                "transport": TRANSPORT,
            }
        },
    })
}

/// `save_config`'s vhost_blk part: one create call per controller, with
/// the Pollux extensions only where the defaults would not rebuild the
/// same queue mapping.
fn config_writer(d: &Dispatcher) -> Vec<Value> {
    let Some(vhost) = d.ctx.vhost.as_deref() else {
        return Vec::new();
    };
    let reactors = Reactors::of(d);
    vhost
        .list()
        .iter()
        .map(|c| {
            let cores = reactors.mask_of(&c.config.queue_reactors);
            let mut mask: Vec<usize> = c.config.queue_reactors.clone();
            mask.sort_unstable();
            mask.dedup();
            let mut params = json!({
                "ctrlr": c.ctrlr,
                "dev_name": c.config.bdev,
                // SPDK writes the mask without "0x" here.
                "cpumask": format_mask(&cores),
                "readonly": c.config.readonly,
                "transport": TRANSPORT,
            });
            if c.config.num_queues != DEFAULT_NUM_QUEUES {
                params["num_queues"] = json!(c.config.num_queues);
            }
            if c.config.queue_reactors != round_robin(&mask, c.config.num_queues) {
                params["queue_cores"] = json!(c
                    .config
                    .queue_reactors
                    .iter()
                    .map(|&r| reactors.cores[r])
                    .collect::<Vec<_>>());
            }
            json!({"method": "vhost_create_blk_controller", "params": params})
        })
        .collect()
}

/// Queue `q` on `mask[q % len]`.
fn round_robin(mask: &[usize], num_queues: u16) -> Vec<usize> {
    (0..usize::from(num_queues))
        .map(|q| mask[q % mask.len()])
        .collect()
}

/// The reactors' cores, by reactor index.
struct Reactors {
    cores: Vec<usize>,
}

impl Reactors {
    fn of(d: &Dispatcher) -> Reactors {
        let mut infos = d.ctx.handle.reactors();
        infos.sort_by_key(|r| r.index);
        Reactors {
            cores: infos.iter().map(|r| r.core).collect(),
        }
    }

    /// The reactor polling on `core`, or -32602 naming `param`.
    fn index_of(&self, core: usize, param: &str) -> Result<usize, RpcError> {
        self.cores.iter().position(|&c| c == core).ok_or_else(|| {
            RpcError::invalid_params(format!(
                "{param}: core {core} runs no reactor (reactor cores: {:?})",
                self.cores
            ))
        })
    }

    /// The cores of reactor indexes `reactors`, sorted and deduplicated.
    fn mask_of(&self, reactors: &[usize]) -> Vec<usize> {
        let mut cores: Vec<usize> = reactors.iter().map(|&r| self.cores[r]).collect();
        cores.sort_unstable();
        cores.dedup();
        cores
    }
}

/// Parses an SPDK cpumask (`spdk_cpuset_parse`): hexadecimal with or
/// without "0x" ("0x3", "3"), or a bracketed list ("[0,2-3]"). Returns the
/// CPU ids, sorted, without duplicates; an empty mask is an error.
fn parse_cpumask(text: &str) -> Result<Vec<usize>, String> {
    let t = text.trim();
    let mut cores = Vec::new();
    if let Some(list) = t.strip_prefix('[') {
        let list = list
            .strip_suffix(']')
            .ok_or_else(|| format!("{text:?}: a list must end with ']'"))?;
        for part in list.split(',') {
            let part = part.trim();
            let (lo, hi) = match part.split_once('-') {
                Some((a, b)) => (cpu_id(a, text)?, cpu_id(b, text)?),
                None => (cpu_id(part, text)?, cpu_id(part, text)?),
            };
            if lo > hi {
                return Err(format!("{text:?}: range {part} is backwards"));
            }
            cores.extend(lo..=hi);
        }
    } else {
        let hex = t
            .strip_prefix("0x")
            .or_else(|| t.strip_prefix("0X"))
            .unwrap_or(t);
        if hex.is_empty() || hex.len() > MAX_CPU / 4 {
            return Err(format!("{text:?} is not a CPU mask"));
        }
        for (i, ch) in hex.chars().rev().enumerate() {
            let nibble = ch
                .to_digit(16)
                .ok_or_else(|| format!("{text:?} is not a hexadecimal CPU mask or a [list]"))?;
            cores.extend((0..4).filter(|b| nibble & (1 << b) != 0).map(|b| i * 4 + b));
        }
    }
    cores.sort_unstable();
    cores.dedup();
    if cores.is_empty() {
        return Err(format!("{text:?} selects no CPU"));
    }
    Ok(cores)
}

fn cpu_id(s: &str, text: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n < MAX_CPU => Ok(n),
        _ => Err(format!("{text:?}: {s:?} is not a CPU id below {MAX_CPU}")),
    }
}

/// CPU ids as an SPDK hex mask, without "0x" (`spdk_cpuset_fmt`).
fn format_mask(cores: &[usize]) -> String {
    let Some(&max) = cores.iter().max() else {
        return "0".into();
    };
    let mut nibbles = vec![0u32; max / 4 + 1];
    for &c in cores {
        nibbles[c / 4] |= 1 << (c % 4);
    }
    nibbles
        .iter()
        .rev()
        .map(|n| char::from_digit(*n, 16).expect("a nibble"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpumasks_parse_like_spdk() {
        assert_eq!(parse_cpumask("0x3"), Ok(vec![0, 1]));
        assert_eq!(parse_cpumask("3"), Ok(vec![0, 1]));
        assert_eq!(parse_cpumask("0X10"), Ok(vec![4]));
        assert_eq!(parse_cpumask("[0,2-3]"), Ok(vec![0, 2, 3]));
        assert_eq!(parse_cpumask("[1, 1]"), Ok(vec![1]));
        assert!(parse_cpumask("0x0").unwrap_err().contains("selects no CPU"));
        assert!(parse_cpumask("0xg").is_err());
        assert!(parse_cpumask("[3-1]").unwrap_err().contains("backwards"));
        assert!(parse_cpumask("[0-4000000000]").is_err());
        assert!(parse_cpumask("[0").is_err());
        assert!(parse_cpumask("").is_err());
    }

    #[test]
    fn masks_format_like_spdk() {
        assert_eq!(format_mask(&[0]), "1");
        assert_eq!(format_mask(&[0, 1]), "3");
        assert_eq!(format_mask(&[4, 9]), "210");
        for cores in [vec![0, 1], vec![3, 8, 64]] {
            assert_eq!(parse_cpumask(&format_mask(&cores)), Ok(cores));
        }
    }

    /// Every param rpc.py 25.5 to 26.9 sends (and SPDK 24.01's
    /// `packed_ring_recovery`) is a known field.
    #[test]
    fn every_documented_param_decodes() {
        let p: CreateBlk = params(Some(serde_json::json!({
            "ctrlr": "c", "dev_name": "d", "cpumask": "0x1", "readonly": false,
            "packed_ring": false, "packed_ring_recovery": false,
            "transport": TRANSPORT
        })))
        .unwrap();
        assert_eq!((p.ctrlr.as_str(), p.dev_name.as_str()), ("c", "d"));
        params::<GetCtrlrs>(Some(serde_json::json!({"name": "c"}))).unwrap();
        params::<DeleteCtrlr>(Some(serde_json::json!({"ctrlr": "c"}))).unwrap();
        let e = params::<CreateBlk>(Some(serde_json::json!({
            "ctrlr": "c", "dev_name": "d", "read_only": true
        })))
        .err()
        .expect("a misspelt param is refused");
        assert!(e.message.contains("read_only"), "{}", e.message);
    }

    #[test]
    fn queues_spread_round_robin() {
        assert_eq!(round_robin(&[0, 1], 5), vec![0, 1, 0, 1, 0]);
        assert_eq!(round_robin(&[1], 2), vec![1, 1]);
    }
}
