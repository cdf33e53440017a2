//! Bdev methods: create and delete (malloc and null map to `ram` and `null`
//! nodes, aio and uring to `file`, passthru to `passthru`), list, iostat.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::bdev;
use crate::config::{BdevConfig, BdevKind};
use crate::rpc::jsonrpc::{params, RpcError};
use crate::rpc::{BdevRecord, Dispatcher, RpcContext};
use pollux_graph::IoOp;

pub(super) fn register(d: &mut Dispatcher) {
    d.register("bdev_malloc_create", bdev_malloc_create);
    d.register("bdev_malloc_delete", |d, p| {
        delete(d, p, "bdev_malloc_create")
    });
    d.register("bdev_null_create", bdev_null_create);
    d.register("bdev_null_delete", |d, p| delete(d, p, "bdev_null_create"));
    d.register("bdev_aio_create", |d, p| {
        file_create(d, p, "bdev_aio_create")
    });
    d.register("bdev_aio_delete", |d, p| delete(d, p, "bdev_aio_create"));
    d.register("bdev_uring_create", |d, p| {
        file_create(d, p, "bdev_uring_create")
    });
    d.register("bdev_uring_delete", |d, p| {
        delete(d, p, "bdev_uring_create")
    });
    d.register("bdev_passthru_create", bdev_passthru_create);
    d.register("bdev_passthru_delete", |d, p| {
        delete(d, p, "bdev_passthru_create")
    });
    d.register("bdev_get_bdevs", bdev_get_bdevs);
    d.register("bdev_get_iostat", bdev_get_iostat);
    d.register_subsystem(crate::rpc::Subsystem {
        name: "bdev",
        depends_on: &[],
        writer: |d| {
            creation_order(d)
                .into_iter()
                .map(|(method, params)| json!({"method": method, "params": params}))
                .collect()
        },
    });
}

/// Records the bdevs built from the TOML config, as the SPDK methods that
/// would have created them.
pub fn record_config_bdevs(ctx: &RpcContext, bdevs: &[BdevConfig]) {
    for b in bdevs {
        let (method, params) = match &b.kind {
            BdevKind::Null { size, block_size } => (
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
        _ => "passthru",
    }
}

fn record(
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
        },
    );
}

/// A random (version 4) UUID.
fn new_uuid() -> String {
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

fn build(d: &Dispatcher, cfg: &BdevConfig) -> Result<(), RpcError> {
    if d.ctx.bdevs().contains_key(&cfg.name) || d.ctx.graph.node_geometry(&cfg.name).is_some() {
        return Err(RpcError::failed(format!(
            "bdev {:?} already exists",
            cfg.name
        )));
    }
    bdev::build(&d.ctx.graph, cfg).map_err(|e| RpcError::failed(format!("{e:#}")))
}

/// Optional SPDK params Pollux accepts and has no use for (metadata and
/// protection information are not supported: non-zero values are refused).
#[derive(Deserialize, Default)]
#[serde(default)]
struct Unsupported {
    md_size: Option<u32>,
    md_interleave: Option<bool>,
    dif_type: Option<u32>,
    dif_is_head_of_md: Option<bool>,
    dif_pi_format: Option<u32>,
}

impl Unsupported {
    fn check(&self) -> Result<(), RpcError> {
        if self.md_size.unwrap_or(0) != 0 || self.dif_type.unwrap_or(0) != 0 {
            return Err(RpcError::invalid_params(
                "md_size/dif_type: metadata and protection information are not supported",
            ));
        }
        let _ = (
            self.md_interleave,
            self.dif_is_head_of_md,
            self.dif_pi_format,
        );
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MallocCreate {
    name: Option<String>,
    num_blocks: u64,
    block_size: u32,
    uuid: Option<String>,
    #[allow(dead_code)] // accepted for compatibility; the node has one block size
    physical_block_size: Option<u32>,
    #[allow(dead_code)] // accepted for compatibility; Pollux does not split I/O
    optimal_io_boundary: Option<u32>,
    #[serde(flatten)]
    unsupported: Unsupported,
}

fn bdev_malloc_create(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let p: MallocCreate = params(p)?;
    p.unsupported.check()?;
    let bs = check_block_size(p.block_size)?;
    let name = match p.name {
        Some(n) => n,
        // SPDK names unnamed malloc bdevs Malloc0, Malloc1, ...
        None => (0..)
            .map(|i| format!("Malloc{i}"))
            .find(|n| !d.ctx.bdevs().contains_key(n) && d.ctx.graph.node_geometry(n).is_none())
            .expect("an unused name exists"),
    };
    let size = size_of(p.num_blocks, bs)?;
    build(
        d,
        &BdevConfig {
            name: name.clone(),
            kind: BdevKind::Ram {
                size,
                block_size: bs,
            },
        },
    )?;
    let params = json!({"name": name, "num_blocks": p.num_blocks, "block_size": bs});
    record(&d.ctx, &name, "bdev_malloc_create", params, p.uuid);
    Ok(json!(name))
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
    #[allow(dead_code)] // accepted for compatibility
    physical_block_size: Option<u32>,
    #[serde(flatten)]
    unsupported: Unsupported,
}

fn bdev_null_create(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let p: NullCreate = params(p)?;
    p.unsupported.check()?;
    let bs = check_block_size(p.block_size)?;
    let size = size_of(p.num_blocks, bs)?;
    build(
        d,
        &BdevConfig {
            name: p.name.clone(),
            kind: BdevKind::Null {
                size,
                block_size: bs,
            },
        },
    )?;
    let params = json!({"name": p.name, "num_blocks": p.num_blocks, "block_size": bs});
    record(&d.ctx, &p.name, "bdev_null_create", params, p.uuid);
    Ok(json!(p.name))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCreate {
    name: String,
    filename: std::path::PathBuf,
    block_size: Option<u32>,
    uuid: Option<String>,
    #[allow(dead_code)] // bdev_aio_create: Pollux opens files read-write
    readonly: Option<bool>,
    #[allow(dead_code)] // bdev_aio_create: no fallocate-on-write mode
    fallocate: Option<bool>,
}

fn file_create(d: &Dispatcher, p: Option<Value>, method: &'static str) -> Result<Value, RpcError> {
    let p: FileCreate = params(p)?;
    let bs = check_block_size(p.block_size.unwrap_or(512))?;
    if p.readonly == Some(true) {
        return Err(RpcError::invalid_params(
            "readonly: read-only file bdevs are not supported",
        ));
    }
    build(
        d,
        &BdevConfig {
            name: p.name.clone(),
            kind: BdevKind::File {
                path: p.filename.clone(),
                direct: true,
                block_size: bs,
            },
        },
    )?;
    let params = json!({"name": p.name, "filename": p.filename, "block_size": bs});
    record(&d.ctx, &p.name, method, params, p.uuid);
    Ok(json!(p.name))
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
    if d.ctx.graph.node_geometry(&p.base_bdev_name).is_none() {
        return Err(RpcError::failed(format!(
            "no bdev named {:?}",
            p.base_bdev_name
        )));
    }
    build(
        d,
        &BdevConfig {
            name: p.name.clone(),
            kind: BdevKind::Passthru {
                child: p.base_bdev_name.clone(),
            },
        },
    )?;
    let params = json!({"name": p.name, "base_bdev_name": p.base_bdev_name});
    record(&d.ctx, &p.name, "bdev_passthru_create", params, p.uuid);
    Ok(json!(p.name))
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
        _ => return Err(RpcError::failed(format!("No such device: {:?}", p.name))),
    }
    d.ctx.graph.remove_node(&p.name).map_err(RpcError::failed)?;
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
            let base = r.params.get("base_bdev_name").and_then(Value::as_str);
            let ready =
                base.is_none_or(|b| done.iter().any(|n| n == b) || !records.contains_key(b));
            if ready {
                out.push((r.method, r.params.clone()));
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
    #[allow(dead_code)] // bdevs appear synchronously; nothing to wait for
    timeout: Option<u64>,
}

fn bdev_get_bdevs(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let p: GetBdevs = params(p)?;
    let info = d.ctx.graph.describe();
    let records = d.ctx.bdevs().clone();
    let claimed = |name: &str| {
        info.nodes
            .iter()
            .any(|n| n.children.iter().any(|c| c == name))
            || info.roots.iter().any(|r| r.node == name)
    };
    let list: Vec<Value> = info
        .nodes
        .iter()
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
                "assigned_rate_limits": {
                    "rw_ios_per_sec": 0, "rw_mbytes_per_sec": 0,
                    "r_mbytes_per_sec": 0, "w_mbytes_per_sec": 0
                },
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
                } else {
                    json!({"pollux": {"kind": n.kind}})
                },
            })
        })
        .collect();
    if let Some(want) = &p.name {
        if list.is_empty() {
            return Err(RpcError::failed(format!("No such device: {want:?}")));
        }
    }
    Ok(json!(list))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetIostat {
    name: Option<String>,
    #[allow(dead_code)] // Pollux sums channels; per-channel stats are not kept apart
    per_channel: Option<bool>,
}

fn bdev_get_iostat(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let p: GetIostat = params(p)?;
    let info = d.ctx.graph.describe();
    let mut bdevs = Vec::new();
    for n in info
        .nodes
        .iter()
        .filter(|n| p.name.as_deref().is_none_or(|want| want == n.name))
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
    if let Some(want) = &p.name {
        if bdevs.is_empty() {
            return Err(RpcError::failed(format!("No such device: {want:?}")));
        }
    }
    Ok(json!({
        "tick_rate": 1_000_000_000u64,
        "ticks": d.ctx.handle.stats(0).busy_ns + d.ctx.handle.stats(0).idle_ns,
        "bdevs": bdevs,
    }))
}
