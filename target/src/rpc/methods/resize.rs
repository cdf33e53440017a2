//! Resize methods: `bdev_null_resize`, and `bdev_aio_rescan` /
//! `bdev_uring_rescan` for a file bdev whose file changed size. The new
//! size is a graph publication; the front-ends hear of it through the
//! graph's root watchers (an NVMe AEN, a virtio config-change interrupt).

use serde::Deserialize;
use serde_json::{json, Value};

use crate::rpc::errors::errno;
use crate::rpc::jsonrpc::{params, RpcError};
use crate::rpc::Dispatcher;
use pollux_graph::RescanError;

/// `bdev_null_resize`'s unit: SPDK takes the new size in MiB.
const MIB: u64 = 1 << 20;

pub(super) fn register(d: &mut Dispatcher) {
    d.register("bdev_null_resize", bdev_null_resize);
    d.register("bdev_aio_rescan", rescan);
    d.register("bdev_uring_rescan", rescan);
}

/// `bdev_null_resize`'s params (SPDK 24.01 to 26.09).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NullResize {
    name: String,
    /// MiB.
    new_size: u64,
}

/// `bdev_*_rescan`'s params.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Named {
    name: String,
}

/// A mirror job copies a fixed size: its source and target keep theirs
/// until it ends.
fn not_in_a_job(d: &Dispatcher, name: &str) -> Result<(), RpcError> {
    if let Some((job, role)) = d.ctx.jobs.user(name) {
        // The mirror's bitmap covers the old size: a grown source's new
        // blocks would never be copied, a shrunk one cut under the copy.
        return Err(RpcError::errno(
            errno::EBUSY,
            format!(
                "{name:?} is the {role} of mirror job {job:?}; complete or cancel the job first"
            ),
        ));
    }
    Ok(())
}

fn bdev_null_resize(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let p: NullResize = params(p)?;
    not_in_a_job(d, &p.name)?;
    let created_by = d.ctx.bdevs().get(&p.name).map(|r| r.method);
    let geo = d.ctx.graph.node_geometry(&p.name);
    let (Some("bdev_null_create"), Some(geo)) = (created_by, geo) else {
        return Err(RpcError::no_such_bdev(&p.name));
    };
    // As SPDK's bdev_null_resize: the size is compared in whole MiB, and
    // a null bdev only grows.
    if p.new_size < geo.size() / MIB {
        return Err(RpcError::errno(
            errno::EINVAL,
            format!(
                "the new size {} MiB of {:?} is smaller than its current size",
                p.new_size, p.name
            ),
        ));
    }
    let bytes = p
        .new_size
        .checked_mul(MIB)
        .ok_or_else(|| RpcError::errno(errno::EINVAL, "new_size is too large"))?;
    let blocks = bytes / u64::from(geo.block_size);
    d.ctx.graph.resize(&p.name, blocks)?;
    super::filters::pin_split_sizes(&d.ctx);
    if let Some(r) = d.ctx.bdevs().get_mut(&p.name) {
        // save_config replays the bdev at its new size.
        r.params["num_blocks"] = json!(blocks);
    }
    Ok(json!(true))
}

fn rescan(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let p: Named = params(p)?;
    not_in_a_job(d, &p.name)?;
    let created_by = d.ctx.bdevs().get(&p.name).map(|r| r.method);
    // The file node serves both SPDK names, whichever created it (a file
    // bdev from the TOML config is recorded as a uring one).
    if !matches!(created_by, Some("bdev_aio_create" | "bdev_uring_create")) {
        return Err(RpcError::no_such_bdev(&p.name));
    }
    match d.ctx.graph.rescan(&p.name) {
        Ok(_) => {
            super::filters::pin_split_sizes(&d.ctx);
            Ok(json!(true))
        }
        Err(RescanError::Graph(e)) => Err(e.into()),
        Err(RescanError::Backend(e)) => Err(RpcError::errno(
            -e.raw_os_error().unwrap_or(libc::EIO),
            format!("{:?}: {e}", p.name),
        )),
    }
}
