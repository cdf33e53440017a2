//! Bdev methods: create and delete (malloc and null map to `ram` and `null`
//! nodes, aio and uring to `file`, passthru to `passthru`), list, iostat.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::bdev;
use crate::config::{BdevConfig, BdevKind};
use crate::rpc::jsonrpc::{params, RpcError};
use crate::rpc::{BdevRecord, Dispatcher, RpcContext};
use pollux_graph::{GraphError, IoOp, OpMask};

pub(super) fn register(d: &mut Dispatcher) {
    d.register("bdev_malloc_create", bdev_malloc_create);
    d.register("bdev_malloc_delete", |d, p| {
        delete(d, p, "bdev_malloc_create")
    });
    d.register("bdev_null_create", bdev_null_create);
    d.register("bdev_null_delete", |d, p| delete(d, p, "bdev_null_create"));
    d.register("bdev_aio_create", aio_create);
    d.register("bdev_aio_delete", |d, p| delete(d, p, "bdev_aio_create"));
    d.register("bdev_uring_create", uring_create);
    d.register("bdev_uring_delete", |d, p| {
        delete(d, p, "bdev_uring_create")
    });
    d.register("bdev_passthru_create", bdev_passthru_create);
    d.register("bdev_passthru_delete", |d, p| {
        delete(d, p, "bdev_passthru_create")
    });
    d.register("bdev_get_bdevs", bdev_get_bdevs);
    d.register("bdev_get_iostat", bdev_get_iostat);
    d.register("bdev_enable_histogram", bdev_enable_histogram);
    d.register_subsystem(crate::rpc::Subsystem {
        name: "bdev",
        depends_on: &[],
        writer: |d| {
            // RAID options first, then NVMe controllers: their namespaces
            // may be the base of bdevs below.
            let mut out = vec![super::raid::options_config(&d.ctx)];
            out.extend(super::bdev_nvme::config_entries());
            out.extend(
                creation_order(d)
                    .into_iter()
                    .map(|(method, params)| json!({"method": method, "params": params})),
            );
            out.extend(histogram_config(d));
            out.extend(super::qos::config(d));
            out
        },
    });
}

/// Records the bdevs built from the TOML config, as the SPDK methods that
/// would have created them.
pub fn record_config_bdevs(ctx: &RpcContext, bdevs: &[BdevConfig]) {
    for b in bdevs {
        let (method, params) = match &b.kind {
            BdevKind::Null {
                size, block_size, ..
            } => (
                "bdev_null_create",
                json!({"name": b.name, "num_blocks": size / u64::from(*block_size), "block_size": block_size}),
            ),
            BdevKind::Ram { size, block_size } => (
                "bdev_malloc_create",
                json!({"name": b.name, "num_blocks": size / u64::from(*block_size), "block_size": block_size}),
            ),
            BdevKind::File {
                path, block_size, ..
            } => (
                "bdev_uring_create",
                json!({"name": b.name, "filename": path, "block_size": block_size}),
            ),
            BdevKind::Passthru { child } => (
                "bdev_passthru_create",
                json!({"name": b.name, "base_bdev_name": child}),
            ),
            BdevKind::Delay {
                child,
                latencies_us: [ar, pr, aw, pw],
            } => (
                "bdev_delay_create",
                json!({"name": b.name, "base_bdev_name": child,
                    "avg_read_latency": ar, "p99_read_latency": pr,
                    "avg_write_latency": aw, "p99_write_latency": pw}),
            ),
            BdevKind::Error { child } => ("bdev_error_create", json!({"base_name": child})),
            // Controllers are replayed by the bdev_nvme methods' own
            // records (`bdev_nvme::record`), not as one bdev.
            BdevKind::Nvme { .. } => continue,
            BdevKind::Raid(_) => {
                super::raid::record(ctx, b, None);
                continue;
            }
            BdevKind::Split {
                base_bdev,
                split_count,
                split_size_mb,
            } => {
                super::filters::record_split(ctx, base_bdev, *split_count, *split_size_mb);
                continue;
            }
        };
        record(ctx, &b.name, method, params, None);
    }
}

fn product_name(method: &str) -> &'static str {
    match method {
        "bdev_malloc_create" => "Malloc disk",
        "bdev_null_create" => "Null disk",
        "bdev_aio_create" => "AIO disk",
        "bdev_uring_create" => "URING bdev",
        "bdev_split_create" => "Split Disk",
        "bdev_error_create" => "Error Injection Disk",
        "bdev_delay_create" => "delay",
        _ => "passthru",
    }
}

pub(super) fn record(
    ctx: &RpcContext,
    name: &str,
    method: &'static str,
    mut params: Value,
    uuid: Option<String>,
) {
    let uuid = uuid.unwrap_or_else(new_uuid);
    params["uuid"] = json!(uuid);
    ctx.bdevs().insert(
        name.to_owned(),
        BdevRecord {
            method,
            params,
            uuid,
            product_name: product_name(method),
            replay: true,
        },
    );
}

/// A random (version 4) UUID.
pub(super) fn new_uuid() -> String {
    let b: [u8; 16] = rand::random();
    let mut b = b;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn check_block_size(bs: u32) -> Result<u32, RpcError> {
    if bs.is_power_of_two() && (512..=4096).contains(&bs) {
        Ok(bs)
    } else {
        Err(RpcError::invalid_params(format!(
            "block_size: {bs} is not a power of two between 512 and 4096"
        )))
    }
}

/// Builds `cfg` and records it as made by `method` with `params` (what
/// `save_config` replays): the answer of every `bdev_*_create`, its name.
fn create(
    d: &Dispatcher,
    cfg: BdevConfig,
    method: &'static str,
    params: Value,
    uuid: Option<String>,
) -> Result<Value, RpcError> {
    if d.ctx.bdevs().contains_key(&cfg.name) || d.ctx.graph.node_geometry(&cfg.name).is_some() {
        return Err(GraphError::NameExists(cfg.name).into());
    }
    bdev::build(&d.ctx.graph, &cfg)?;
    record(&d.ctx, &cfg.name, method, params, uuid);
    Ok(json!(cfg.name))
}

/// -32602 naming `param` when a documented SPDK param asks for something
/// Pollux's nodes lack. Callers pass `asked = false` for the param's
/// default (absent, 0, false, -1 for NUMA ids): rpc.py sends several of
/// those unasked, and they must never fail a call.
pub(super) fn lacks(param: &str, asked: bool, what: &str) -> Result<(), RpcError> {
    if asked {
        Err(RpcError::invalid_params(format!("{param}: {what}")))
    } else {
        Ok(())
    }
}

/// A `uuid` param: SPDK decodes it with `spdk_json_decode_uuid` and answers
/// "Invalid parameters" for anything but a UUID. Returned in lower case.
pub(super) fn check_uuid(uuid: Option<String>) -> Result<Option<String>, RpcError> {
    let Some(u) = uuid else { return Ok(None) };
    let groups: Vec<&str> = u.split('-').collect();
    let shape = groups.iter().map(|g| g.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12];
    if !shape
        || !groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(RpcError::invalid_params(format!(
            "uuid: {u:?} is not a UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"
        )));
    }
    Ok(Some(u.to_ascii_lowercase()))
}

/// `physical_block_size`: a node has one block size, so only that one
/// (or SPDK's "same as block_size", 0) can be honoured.
fn check_physical_block_size(pbs: Option<u32>, bs: u32) -> Result<(), RpcError> {
    let p = pbs.unwrap_or(0);
    lacks(
        "physical_block_size",
        p != 0 && p != bs,
        &format!("{p} differs from block_size {bs}; Pollux nodes have one block size"),
    )
}

/// Metadata and protection information (`bdev_malloc_create`,
/// `bdev_null_create`): Pollux's nodes have neither, so `md_size` and
/// `dif_type` must be 0. The layout params only describe metadata, which
/// then does not exist, so any value of theirs asks for nothing.
///
/// The create methods take it flattened, and a flattened struct's fields
/// reach serde through a buffer that loses their path, so each field names
/// itself in its own decode errors (`named`).
#[derive(Deserialize, Default)]
#[serde(default)]
struct Metadata {
    #[serde(deserialize_with = "md_size")]
    md_size: Option<u32>,
    #[allow(dead_code)] // describes metadata, which md_size = 0 rules out
    #[serde(deserialize_with = "md_interleave")]
    md_interleave: Option<bool>,
    #[serde(deserialize_with = "dif_type")]
    dif_type: Option<i32>,
    #[allow(dead_code)] // likewise
    #[serde(deserialize_with = "dif_is_head_of_md")]
    dif_is_head_of_md: Option<bool>,
    #[allow(dead_code)] // likewise
    #[serde(deserialize_with = "dif_pi_format")]
    dif_pi_format: Option<u32>,
}

/// Decodes an optional param, prefixing a decode error with its name.
fn named<'de, D, T>(d: D, name: &str) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map_err(|e| serde::de::Error::custom(format!("{name}: {e}")))
}

macro_rules! named_params {
    ($($field:ident: $ty:ty),* $(,)?) => {$(
        fn $field<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<$ty>, D::Error> {
            named(d, stringify!($field))
        }
    )*};
}

named_params!(
    md_size: u32,
    md_interleave: bool,
    dif_type: i32,
    dif_is_head_of_md: bool,
    dif_pi_format: u32,
);

impl Metadata {
    fn check(&self) -> Result<(), RpcError> {
        lacks(
            "md_size",
            self.md_size.unwrap_or(0) != 0,
            "per-block metadata is not supported",
        )?;
        lacks(
            "dif_type",
            self.dif_type.unwrap_or(0) != 0,
            "protection information is not supported",
        )
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MallocCreate {
    name: Option<String>,
    num_blocks: u64,
    block_size: u32,
    uuid: Option<String>,
    physical_block_size: Option<u32>,
    /// SPDK splits I/O there and reports it to NVMe-oF hosts as NOIOB.
    optimal_io_boundary: Option<u32>,
    numa_id: Option<i32>,
    #[serde(flatten)]
    metadata: Metadata,
}

/// What `bdev_malloc_create` and `bdev_null_create` check first, before
/// their own params: metadata and PI, then the block sizes. Returns the
/// block size.
fn check_blocks(
    metadata: &Metadata,
    block_size: u32,
    physical_block_size: Option<u32>,
) -> Result<u32, RpcError> {
    metadata.check()?;
    let bs = check_block_size(block_size)?;
    check_physical_block_size(physical_block_size, bs)?;
    Ok(bs)
}

/// What `bdev_malloc_create` and `bdev_null_create` end with: checks
/// `uuid` and the size, then creates `name`, `num_blocks` blocks of `bs`
/// bytes (checked by [`check_blocks`]), as the `kind` made of its size in
/// bytes and its block size. `save_config` replays it with the name, the
/// block count and the block size.
fn create_blocks(
    d: &Dispatcher,
    method: &'static str,
    name: String,
    num_blocks: u64,
    bs: u32,
    uuid: Option<String>,
    kind: fn(u64, u32) -> BdevKind,
) -> Result<Value, RpcError> {
    let uuid = check_uuid(uuid)?;
    let size = size_of(num_blocks, bs)?;
    let params = json!({"name": name, "num_blocks": num_blocks, "block_size": bs});
    let cfg = BdevConfig {
        name,
        kind: kind(size, bs),
    };
    create(d, cfg, method, params, uuid)
}

fn bdev_malloc_create(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let p: MallocCreate = params(p)?;
    let bs = check_blocks(&p.metadata, p.block_size, p.physical_block_size)?;
    lacks(
        "optimal_io_boundary",
        p.optimal_io_boundary.unwrap_or(0) != 0,
        "Pollux neither splits I/O at a boundary nor reports one",
    )?;
    // -1 is SPDK's "any NUMA node".
    lacks(
        "numa_id",
        p.numa_id.unwrap_or(-1) != -1,
        "RAM disks cannot be placed on a chosen NUMA node",
    )?;
    let name = p.name.unwrap_or_else(|| {
        // SPDK names unnamed malloc bdevs Malloc0, Malloc1, ...
        (0..)
            .map(|i| format!("Malloc{i}"))
            .find(|n| !d.ctx.bdevs().contains_key(n) && d.ctx.graph.node_geometry(n).is_none())
            .expect("an unused name exists")
    });
    create_blocks(
        d,
        "bdev_malloc_create",
        name,
        p.num_blocks,
        bs,
        p.uuid,
        |size, block_size| BdevKind::Ram { size, block_size },
    )
}

fn size_of(num_blocks: u64, bs: u32) -> Result<u64, RpcError> {
    match num_blocks.checked_mul(u64::from(bs)) {
        Some(s) if num_blocks > 0 => Ok(s),
        _ => Err(RpcError::invalid_params(format!(
            "num_blocks: {num_blocks} blocks of {bs} bytes is not a valid size"
        ))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NullCreate {
    name: String,
    num_blocks: u64,
    block_size: u32,
    uuid: Option<String>,
    physical_block_size: Option<u32>,
    /// The write and unmap hints SPDK 25.09 added; NVMe-oF reports them to
    /// hosts (NPWG, NPWA, NOWS, NPDG, NPDA), Pollux reports none.
    preferred_write_alignment: Option<u32>,
    preferred_write_granularity: Option<u32>,
    optimal_write_size: Option<u32>,
    preferred_unmap_alignment: Option<u32>,
    preferred_unmap_granularity: Option<u32>,
    #[serde(flatten)]
    metadata: Metadata,
}

fn bdev_null_create(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let p: NullCreate = params(p)?;
    let bs = check_blocks(&p.metadata, p.block_size, p.physical_block_size)?;
    for (param, v) in [
        ("preferred_write_alignment", p.preferred_write_alignment),
        ("preferred_write_granularity", p.preferred_write_granularity),
        ("optimal_write_size", p.optimal_write_size),
        ("preferred_unmap_alignment", p.preferred_unmap_alignment),
        ("preferred_unmap_granularity", p.preferred_unmap_granularity),
    ] {
        lacks(
            param,
            v.unwrap_or(0) != 0,
            "Pollux reports no write or unmap granularity hints",
        )?;
    }
    create_blocks(
        d,
        "bdev_null_create",
        p.name,
        p.num_blocks,
        bs,
        p.uuid,
        |size, block_size| BdevKind::Null {
            size,
            block_size,
            read_zeroes: true,
        },
    )
}

/// `bdev_aio_create`'s params (SPDK 24.01 to 26.09).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AioCreate {
    name: String,
    filename: std::path::PathBuf,
    block_size: Option<u32>,
    uuid: Option<String>,
    readonly: Option<bool>,
    /// true asks for UNMAP and WRITE ZEROES through fallocate(2), which
    /// the file node always does; false is SPDK's default, accepted.
    #[allow(dead_code)] // honoured either way, see above
    fallocate: Option<bool>,
    /// RWF_NOWAIT on block devices (SPDK 26.01).
    nowait: Option<bool>,
}

/// `bdev_uring_create`'s params (SPDK 24.01 to 26.09).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UringCreate {
    name: String,
    filename: std::path::PathBuf,
    block_size: Option<u32>,
    uuid: Option<String>,
}

fn aio_create(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let p: AioCreate = params(p)?;
    lacks(
        "readonly",
        p.readonly == Some(true),
        "read-only file bdevs are not supported",
    )?;
    lacks(
        "nowait",
        p.nowait == Some(true),
        "RWF_NOWAIT submission is not supported",
    )?;
    file_create(
        d,
        UringCreate {
            name: p.name,
            filename: p.filename,
            block_size: p.block_size,
            uuid: p.uuid,
        },
        "bdev_aio_create",
    )
}

fn uring_create(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    file_create(d, params(p)?, "bdev_uring_create")
}

fn file_create(d: &Dispatcher, p: UringCreate, method: &'static str) -> Result<Value, RpcError> {
    let bs = check_block_size(p.block_size.unwrap_or(512))?;
    let uuid = check_uuid(p.uuid)?;
    let params = json!({"name": p.name, "filename": p.filename, "block_size": bs});
    let kind = BdevKind::File {
        path: p.filename,
        direct: true,
        block_size: bs,
    };
    create(d, BdevConfig { name: p.name, kind }, method, params, uuid)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PassthruCreate {
    base_bdev_name: String,
    name: String,
    uuid: Option<String>,
}

fn bdev_passthru_create(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let p: PassthruCreate = params(p)?;
    let uuid = check_uuid(p.uuid)?;
    if d.ctx.graph.node_geometry(&p.base_bdev_name).is_none() {
        return Err(RpcError::no_such_bdev(&p.base_bdev_name));
    }
    let params = json!({"name": p.name, "base_bdev_name": p.base_bdev_name});
    let kind = BdevKind::Passthru {
        child: p.base_bdev_name,
    };
    let cfg = BdevConfig { name: p.name, kind };
    create(d, cfg, "bdev_passthru_create", params, uuid)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Named {
    name: String,
}

fn delete(d: &Dispatcher, p: Option<Value>, created_by: &str) -> Result<Value, RpcError> {
    let p: Named = params(p)?;
    let method = d.ctx.bdevs().get(&p.name).map(|r| r.method);
    match method {
        Some(m) if m == created_by => {}
        _ => return Err(RpcError::no_such_bdev(&p.name)),
    }
    d.ctx.qos.forget(&d.ctx.graph, &p.name)?;
    d.ctx.graph.remove_node(&p.name)?;
    d.ctx.bdevs().remove(&p.name);
    Ok(json!(true))
}

/// Records in an order that can be replayed: every base before what is
/// stacked on it.
fn creation_order(d: &Dispatcher) -> Vec<(&'static str, Value)> {
    let records = d.ctx.bdevs().clone();
    let mut done: Vec<String> = Vec::new();
    let mut out = Vec::new();
    let mut pending: Vec<(&String, &BdevRecord)> = records.iter().collect();
    while !pending.is_empty() {
        let before = pending.len();
        pending.retain(|(name, r)| {
            let base = ["base_bdev_name", "base_bdev", "base_name"]
                .iter()
                .find_map(|k| r.params.get(*k).and_then(Value::as_str));
            // An array's members (`base_bdevs`) come before it too.
            let members = r.params.get("base_bdevs").and_then(Value::as_array);
            let bases = base
                .into_iter()
                .chain(members.into_iter().flatten().filter_map(Value::as_str));
            let ready = bases
                .into_iter()
                .all(|b| done.iter().any(|n| n == b) || !records.contains_key(b));
            if ready {
                // A bdev another one's call makes (a split's later parts)
                // is built by that call, not replayed on its own.
                if r.replay {
                    out.push((r.method, r.params.clone()));
                }
                done.push((*name).clone());
            }
            !ready
        });
        if pending.len() == before {
            break; // a cycle cannot be built; emit nothing more
        }
    }
    out
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetBdevs {
    name: Option<String>,
    /// Milliseconds to wait for `name` to appear (another client may be
    /// creating it), as SPDK's `bdev_get_bdevs -t`.
    timeout: Option<u64>,
}

/// How often `bdev_get_bdevs` with a timeout looks for the bdev again.
const BDEV_WAIT_POLL: std::time::Duration = std::time::Duration::from_millis(10);
/// Longest `bdev_get_bdevs` wait: a waiting request holds one of the
/// server's bounded client threads, and rpc.py gives up on an answer
/// after 60 s by default anyway.
const BDEV_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(600);

/// The node kind of QoS filters.
const QOS_KIND: &str = pollux_graph::nodes::qos::KIND;

fn bdev_get_bdevs(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let p: GetBdevs = params(p)?;
    if let (Some(name), Some(ms)) = (&p.name, p.timeout) {
        // Runs on this client's own control thread: only it waits.
        let wait = std::time::Duration::from_millis(ms).min(BDEV_WAIT_MAX);
        let deadline = std::time::Instant::now() + wait;
        while d.ctx.graph.node_geometry(name).is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(BDEV_WAIT_POLL);
        }
    }
    let info = d.ctx.graph.describe();
    let records = d.ctx.bdevs().clone();
    // A bdev's QoS filter is part of the bdev, as SPDK's QoS is: it is not
    // listed, and does not claim the bdev; what stands on the filter does.
    let used_by = |name: &str| {
        info.nodes
            .iter()
            .any(|n| n.kind != QOS_KIND && n.children.iter().any(|c| c == name))
            || info.roots.iter().any(|r| r.node == name)
    };
    let claimed = |name: &str| used_by(name) || used_by(&crate::qos::filter_name(name));
    let list: Vec<Value> = info
        .nodes
        .iter()
        .filter(|n| n.kind != QOS_KIND)
        .filter(|n| p.name.as_deref().is_none_or(|want| want == n.name))
        .map(|n| {
            let rec = records.get(&n.name);
            let is_file = n.kind == "file";
            json!({
                "name": n.name,
                "aliases": [],
                "product_name": rec.map(|r| r.product_name).unwrap_or(n.kind),
                "block_size": n.geometry.block_size,
                "num_blocks": n.geometry.block_count,
                "uuid": rec.map(|r| r.uuid.clone()),
                "assigned_rate_limits":
                    super::qos::limits_object(&d.ctx.qos.limits_of(&n.name).limits, true),
                "claimed": claimed(&n.name),
                "zoned": false,
                "supported_io_types": {
                    "read": true, "write": true, "unmap": true, "flush": true,
                    "reset": false, "nvme_admin": false, "nvme_io": false,
                    "write_zeroes": true, "zcopy": false, "compare": false,
                    "compare_and_write": false, "abort": false,
                },
                "driver_specific": if is_file {
                    json!({"pollux": {"kind": n.kind}})
                } else if n.kind == "passthru" {
                    json!({"passthru": {"name": n.name, "base_bdev_name": n.children.first()}})
                } else if let Some(a) = (n.kind == "raid")
                    .then(|| pollux_graph::nodes::raid::Array::find(&d.ctx.graph, &n.name))
                    .flatten()
                {
                    json!({"raid": super::raid::info_json(&a.info(&d.ctx.graph), &records)})
                } else {
                    json!({"pollux": {"kind": n.kind}})
                },
            })
        })
        .collect();
    if let Some(want) = &p.name {
        if list.is_empty() {
            return Err(RpcError::no_such_bdev(want));
        }
    }
    Ok(json!(list))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetIostat {
    name: Option<String>,
    /// SPDK 26.01's list form of `name` (at most 1024 names, its schema's
    /// bound).
    names: Option<Vec<String>>,
    per_channel: Option<bool>,
    /// SPDK 25.01: reset the counters after reading them.
    reset_mode: Option<String>,
}

/// Most names `bdev_get_iostat` takes (SPDK's `bdev_iostat_names`).
const IOSTAT_NAMES_MAX: usize = 1024;

fn bdev_get_iostat(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let p: GetIostat = params(p)?;
    // Pollux sums each node's per-core counters when read; the per-channel
    // breakdown SPDK answers with is not kept apart.
    lacks(
        "per_channel",
        p.per_channel == Some(true),
        "per-channel statistics are not kept",
    )?;
    match p.reset_mode.as_deref() {
        None | Some("none") => {}
        Some(m @ ("all" | "maxmin" | "error")) => {
            return Err(RpcError::invalid_params(format!(
                "reset_mode: {m:?}: Pollux's counters cannot be reset (they are monotonic, as Prometheus reads them)"
            )))
        }
        Some(m) => {
            return Err(RpcError::invalid_params(format!(
                "reset_mode: {m:?} is not one of all, maxmin, error, none"
            )))
        }
    }
    let wanted: Option<Vec<String>> = match (p.name, p.names) {
        (Some(_), Some(_)) => {
            return Err(RpcError::invalid_params(
                "names: give either name or names, not both",
            ))
        }
        (Some(n), None) => Some(vec![n]),
        (None, Some(ns)) if ns.len() > IOSTAT_NAMES_MAX => {
            return Err(RpcError::invalid_params(format!(
                "names: {} names, at most {IOSTAT_NAMES_MAX}",
                ns.len()
            )))
        }
        (None, names) => names,
    };
    let info = d.ctx.graph.describe();
    if let Some(missing) = wanted
        .iter()
        .flatten()
        .find(|w| !info.nodes.iter().any(|n| &n.name == *w))
    {
        return Err(RpcError::no_such_bdev(missing));
    }
    let mut bdevs = Vec::new();
    for n in info
        .nodes
        .iter()
        .filter(|n| wanted.as_ref().is_none_or(|w| w.contains(&n.name)))
    {
        let Some(s) = d.ctx.graph.node_stats(&n.name) else {
            continue;
        };
        let (r, w, z, u, f) = (
            IoOp::Read.as_index(),
            IoOp::Write.as_index(),
            IoOp::WriteZeroes.as_index(),
            IoOp::Discard.as_index(),
            IoOp::Flush.as_index(),
        );
        bdevs.push(json!({
            "name": n.name,
            "bytes_read": s.bytes[r], "num_read_ops": s.ops[r],
            "bytes_written": s.bytes[w], "num_write_ops": s.ops[w],
            "bytes_unmapped": s.bytes[u], "num_unmap_ops": s.ops[u],
            "bytes_copied": 0, "num_copy_ops": 0,
            "num_write_zeroes_ops": s.ops[z], "num_flush_ops": s.ops[f],
            "read_latency_ticks": 0, "write_latency_ticks": 0, "unmap_latency_ticks": 0,
            "io_error": s.errors.iter().sum::<u64>(),
        }));
    }
    Ok(json!({
        "tick_rate": 1_000_000_000u64,
        "ticks": d.ctx.handle.stats(0).busy_ns + d.ctx.handle.stats(0).idle_ns,
        "bdevs": bdevs,
    }))
}

/// `bdev_enable_histogram`'s params, every one rpc.py 24.01 to 26.9 sends:
/// `name` and `enable` (24.01), `opc` (24.09), `granularity`, `min_nsec`
/// and `max_nsec` (25.01).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnableHistogram {
    name: String,
    enable: bool,
    /// One SPDK I/O type name: only that op is recorded.
    opc: Option<String>,
    granularity: Option<u8>,
    min_nsec: Option<u64>,
    max_nsec: Option<u64>,
}

/// SPDK's bucket layout when none is given (`SPDK_HISTOGRAM_GRANULARITY_DEFAULT`
/// and bdev_rpc.c's `SPDK_BDEV_HISTOGRAM_DEFAULT_{MIN,MAX}_VALUE_NS`): what a
/// client may send explicitly without asking for another layout.
const SPDK_HISTOGRAM_GRANULARITY: u8 = 7;
const SPDK_HISTOGRAM_MIN_NS: u64 = 1_000;
const SPDK_HISTOGRAM_MAX_NS: u64 = 120_000_000_000;

/// Switches a node's latency histogram (the `pollux_bdev_latency_seconds`
/// series of /metrics) on or off at run time, as SPDK's method of that name
/// does: a graph publication, so the I/O path reads the switch from the
/// snapshot entry it reads anyway and, off, reads no clock at all.
fn bdev_enable_histogram(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let p: EnableHistogram = params(p)?;
    if d.ctx.graph.node_geometry(&p.name).is_none() {
        return Err(RpcError::no_such_bdev(&p.name));
    }
    let ops = if !p.enable {
        // SPDK ignores the rest when disabling.
        OpMask::NONE
    } else {
        // Pollux's buckets are fixed powers of two (256 ns to 8.6 s), summed
        // across reactors and exported as Prometheus `le` bounds.
        let fixed = "Pollux's histogram buckets are fixed (powers of two from 256 ns)";
        lacks(
            "granularity",
            p.granularity
                .is_some_and(|g| g != 0 && g != SPDK_HISTOGRAM_GRANULARITY),
            fixed,
        )?;
        lacks(
            "min_nsec",
            p.min_nsec
                .is_some_and(|n| n != 0 && n != SPDK_HISTOGRAM_MIN_NS),
            fixed,
        )?;
        lacks(
            "max_nsec",
            p.max_nsec
                .is_some_and(|n| n != 0 && n != SPDK_HISTOGRAM_MAX_NS),
            fixed,
        )?;
        match p.opc.as_deref() {
            None => OpMask::ALL,
            Some(opc) => OpMask::of(histogram_op(opc)?),
        }
    };
    d.ctx.graph.set_histogram(&p.name, ops)?;
    Ok(json!(true))
}

/// save_config's `bdev_enable_histogram` calls, after every bdev exists.
/// SPDK writes one for each bdev whose histogram is on, its default being
/// off (bdev.c's `bdev_enable_histogram_config_json`); Pollux's default is
/// on, so it writes one for each bdev whose switch differs from what a new
/// node gets, and a replay restores the switch either way.
fn histogram_config(d: &Dispatcher) -> Vec<Value> {
    let records = d.ctx.bdevs().clone();
    d.ctx
        .graph
        .describe()
        .nodes
        .into_iter()
        .filter(|n| records.contains_key(&n.name) && n.histogram != OpMask::DEFAULT)
        .map(|n| {
            let mut params = json!({"name": n.name, "enable": !n.histogram.is_none()});
            let only = IoOp::ALL
                .into_iter()
                .filter(|op| n.histogram.has(OpMask::of(*op)))
                .collect::<Vec<_>>();
            if let [op] = only[..] {
                params["opc"] = json!(spdk_io_type(op));
            }
            json!({"method": "bdev_enable_histogram", "params": params})
        })
        .collect()
}

/// SPDK's I/O type name for an op.
fn spdk_io_type(op: IoOp) -> &'static str {
    match op {
        IoOp::Read => "read",
        IoOp::Write => "write",
        IoOp::Flush => "flush",
        IoOp::Discard => "unmap",
        IoOp::WriteZeroes => "write_zeroes",
    }
}

/// The op an SPDK I/O type name (`spdk_bdev_get_io_type`) stands for: the
/// inverse of [`spdk_io_type`].
fn histogram_op(opc: &str) -> Result<IoOp, RpcError> {
    if let Some(op) = IoOp::ALL.into_iter().find(|&op| spdk_io_type(op) == opc) {
        return Ok(op);
    }
    match opc {
        // SPDK's other I/O types: none of them reaches a Pollux node.
        "reset" | "nvme_admin" | "nvme_io" | "nvme_io_md" | "zcopy" | "get_zone_info"
        | "zone_management" | "zone_append" | "compare" | "compare_and_write" | "abort"
        | "seek_hole" | "seek_data" | "copy" | "nvme_iov_md" | "nvme_nssr"
        | "write_uncorrectable" => Err(RpcError::invalid_params(format!(
            "opc: Pollux's bdevs do no {opc} I/O; read, write, unmap, flush and write_zeroes are timed"
        ))),
        // SPDK's answer to a name it does not know.
        _ => Err(RpcError::failed("Invalid Io type")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The message of a refused decode.
    fn refused<T: serde::de::DeserializeOwned>(v: Value) -> String {
        let e = params::<T>(Some(v)).err().expect("should be refused");
        assert_eq!(e.code, crate::rpc::jsonrpc::code::INVALID_PARAMS);
        e.message
    }

    /// Every param rpc.py 25.5 to 26.9 sends with every CLI option given,
    /// and every one SPDK's servers 24.01 to 26.09 decode, is a known
    /// field; an undocumented one is still refused, by name.
    #[test]
    fn every_documented_param_decodes() {
        let md = json!({"md_size": 0, "md_interleave": false, "dif_type": 0,
            "dif_is_head_of_md": false, "dif_pi_format": 0});
        let mut malloc = json!({"name": "m", "num_blocks": 8, "block_size": 512,
            "uuid": "5f7c2a7e-7d3a-4e1b-9a53-6f0c1d2e3f40", "physical_block_size": 512,
            "optimal_io_boundary": 0, "numa_id": -1});
        malloc
            .as_object_mut()
            .unwrap()
            .extend(md.as_object().unwrap().clone());
        params::<MallocCreate>(Some(malloc)).unwrap();
        let mut null = json!({"name": "n", "num_blocks": 8, "block_size": 512,
            "uuid": "5f7c2a7e-7d3a-4e1b-9a53-6f0c1d2e3f40", "physical_block_size": 512,
            "preferred_write_alignment": 0, "preferred_write_granularity": 0,
            "optimal_write_size": 0, "preferred_unmap_alignment": 0,
            "preferred_unmap_granularity": 0});
        null.as_object_mut()
            .unwrap()
            .extend(md.as_object().unwrap().clone());
        params::<NullCreate>(Some(null)).unwrap();
        params::<AioCreate>(Some(
            json!({"name": "a", "filename": "/f", "block_size": 512,
            "readonly": false, "fallocate": false, "uuid": "5f7c2a7e-7d3a-4e1b-9a53-6f0c1d2e3f40",
            "nowait": false}),
        ))
        .unwrap();
        params::<UringCreate>(Some(
            json!({"name": "u", "filename": "/f", "block_size": 512,
            "uuid": "5f7c2a7e-7d3a-4e1b-9a53-6f0c1d2e3f40"}),
        ))
        .unwrap();
        params::<PassthruCreate>(Some(
            json!({"name": "p", "base_bdev_name": "b", "uuid": "5f7c2a7e-7d3a-4e1b-9a53-6f0c1d2e3f40"}),
        ))
        .unwrap();
        params::<GetBdevs>(Some(json!({"name": "b", "timeout": 0}))).unwrap();
        params::<GetIostat>(Some(
            json!({"names": ["b"], "per_channel": false, "reset_mode": "none"}),
        ))
        .unwrap();
        params::<GetIostat>(Some(json!({"name": "b", "per_channel": false}))).unwrap();
        assert!(refused::<NullCreate>(
            json!({"name": "n", "num_blocks": 8, "block_size": 512, "md_sise": 0})
        )
        .contains("md_sise"));
        // bdev_uring_create has none of bdev_aio_create's extras (SPDK's
        // uring decoder does not list them either).
        assert!(
            refused::<UringCreate>(json!({"name": "u", "filename": "/f", "nowait": false}))
                .contains("nowait")
        );
    }

    #[test]
    fn flattened_metadata_params_name_themselves_in_decode_errors() {
        for (param, bad) in [
            ("md_size", json!("x")),
            ("md_interleave", json!(3)),
            ("dif_type", json!("1")),
            ("dif_is_head_of_md", json!("yes")),
            ("dif_pi_format", json!(-1)),
        ] {
            let mut p = json!({"name": "m", "num_blocks": 8, "block_size": 512});
            p[param] = bad;
            let refusals = [
                params::<MallocCreate>(Some(p.clone())).err(),
                params::<NullCreate>(Some(p)).err(),
            ];
            for e in refusals {
                let m = e.expect("refused").message;
                assert!(m.starts_with(&format!("{param}: ")), "{m}");
            }
        }
        // Flattening keeps unknown params refused.
        let p = json!({"name": "m", "num_blocks": 8, "block_size": 512, "md_sise": 0});
        let e = params::<MallocCreate>(Some(p)).err().expect("refused");
        assert!(e.message.contains("md_sise"), "{}", e.message);
    }

    #[test]
    fn defaults_pass_and_what_pollux_lacks_is_named() {
        let metadata_check = |v: Value| params::<MallocCreate>(Some(v)).unwrap().metadata.check();
        // rpc.py 25.5's bdev_malloc_create without options.
        metadata_check(json!({"block_size": 512, "num_blocks": 8,
            "dif_is_head_of_md": false, "md_interleave": false}))
        .unwrap();
        for (param, asked) in [("md_size", 8), ("dif_type", 1)] {
            let mut p = json!({"block_size": 512, "num_blocks": 8});
            p[param] = json!(asked);
            let e = metadata_check(p).unwrap_err();
            assert!(e.message.starts_with(&format!("{param}:")), "{}", e.message);
        }
        check_physical_block_size(None, 512).unwrap();
        check_physical_block_size(Some(0), 4096).unwrap();
        check_physical_block_size(Some(4096), 4096).unwrap();
        let e = check_physical_block_size(Some(4096), 512).unwrap_err();
        assert!(
            e.message.starts_with("physical_block_size:"),
            "{}",
            e.message
        );
    }

    #[test]
    fn uuids_are_checked_as_spdk_decodes_them() {
        assert_eq!(check_uuid(None).unwrap(), None);
        assert_eq!(
            check_uuid(Some("5F7C2A7E-7D3A-4E1B-9A53-6F0C1D2E3F40".into())).unwrap(),
            Some("5f7c2a7e-7d3a-4e1b-9a53-6f0c1d2e3f40".into())
        );
        for bad in [
            "Xuuid",
            "5f7c2a7e7d3a4e1b9a536f0c1d2e3f40",
            "5f7c2a7e-7d3a-4e1b-9a53-6f0c1d2e3f4g",
        ] {
            let e = check_uuid(Some(bad.into())).unwrap_err();
            assert!(e.message.starts_with("uuid:"), "{}", e.message);
        }
    }
}
