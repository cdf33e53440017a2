//! `spdk_get_version`, `rpc_get_methods`, `framework_wait_init`,
//! `framework_get_reactors`, `save_config`.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::rpc::jsonrpc::{code, params, NoParams, RpcError};
use crate::rpc::Dispatcher;

pub(super) fn register(d: &mut Dispatcher) {
    d.register("spdk_get_version", spdk_get_version);
    d.register("rpc_get_methods", rpc_get_methods);
    d.register("framework_wait_init", framework_wait_init);
    d.register("framework_get_reactors", framework_get_reactors);
    d.register("save_config", save_config);
    d.register("framework_start_init", framework_start_init);
    d.register("framework_get_subsystems", framework_get_subsystems);
    d.register("framework_get_config", framework_get_config);
}

fn spdk_get_version(_d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let NoParams {} = params(p)?;
    let v = env!("CARGO_PKG_VERSION");
    let mut parts = v.split('.').map(|s| s.parse::<u32>().unwrap_or(0));
    let (major, minor, patch) = (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    );
    Ok(json!({
        "version": format!("Pollux v{v}"),
        "fields": {"major": major, "minor": minor, "patch": patch, "suffix": ""}
    }))
}

/// Methods SPDK registers for its startup state only (before
/// `framework_start_init`). Pollux is initialised before its socket opens,
/// so it is always in SPDK's runtime state: these are listed by
/// `rpc_get_methods` but not with `current`, and answer as SPDK does at
/// runtime. rpc.py's `load_config` and spdkcli rely on exactly that to
/// tell an initialised target from one waiting for `framework_start_init`.
const STARTUP_ONLY: &[&str] = &["framework_start_init"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetMethods {
    #[serde(default)]
    current: bool,
    /// Pollux registers no deprecated aliases, so there are none to add.
    #[serde(default)]
    #[allow(dead_code)] // honoured: the list is the same either way
    include_aliases: bool,
}

fn rpc_get_methods(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let g: GetMethods = params(p)?;
    let names: Vec<&str> = d
        .method_names()
        .filter(|m| !(g.current && STARTUP_ONLY.contains(m)))
        .collect();
    Ok(json!(names))
}

/// SPDK's answer to a startup-only method once the framework runs
/// (`lib/rpc/rpc.c`, `jsonrpc_handler`).
fn framework_start_init(_d: &Dispatcher, _p: Option<Value>) -> Result<Value, RpcError> {
    Err(RpcError {
        code: code::INVALID_STATE,
        message: "Method may only be called before framework is initialized. \
                  Use --wait-for-rpc command line parameter and then issue this RPC \
                  before the framework_start_init RPC."
            .into(),
    })
}

fn framework_wait_init(_d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let NoParams {} = params(p)?;
    // The target is fully initialised before the socket opens.
    Ok(json!(true))
}

fn framework_get_reactors(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let NoParams {} = params(p)?;
    let h = &d.ctx.handle;
    let reactors: Vec<Value> = h
        .reactors()
        .iter()
        .map(|r| {
            let s = h.stats(r.index);
            json!({
                "lcore": r.core,
                "busy": s.busy_ns,
                "idle": s.idle_ns,
                "in_interrupt": false,
                "irq": 0,
                "sys": 0,
                "usr": 0,
                "numa_id": r.numa_node.map(i64::from).unwrap_or(-1),
                "lw_threads": [{
                    "name": format!("reactor_{}", r.core),
                    "id": r.index + 1,
                    "cpumask": format!("{:x}", 1u128 << (r.core % 128)),
                    "elapsed": s.busy_ns + s.idle_ns,
                }],
            })
        })
        .collect();
    Ok(json!({
        // Busy and idle are reported in nanoseconds.
        "tick_rate": 1_000_000_000u64,
        "pid": std::process::id(),
        "reactors": reactors,
    }))
}

/// What rpc.py's `save_config` asks first: the subsystems and their order.
fn framework_get_subsystems(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let NoParams {} = params(p)?;
    let list: Vec<Value> = d
        .subsystems()
        .iter()
        .map(|s| json!({"subsystem": s.name, "depends_on": s.depends_on}))
        .collect();
    Ok(json!(list))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetConfig {
    name: String,
    #[serde(default)]
    #[allow(dead_code)] // Pollux writes no batches
    with_batches: bool,
}

/// One subsystem's method calls, as rpc.py's `save_config` collects them.
fn framework_get_config(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let p: GetConfig = params(p)?;
    let s = d
        .subsystems()
        .iter()
        .find(|s| s.name == p.name)
        .ok_or_else(|| RpcError::invalid_params(format!("name: no subsystem {:?}", p.name)))?;
    Ok(json!((s.writer)(d)))
}

/// The whole config in one call (what rpc.py assembles from the two above).
fn save_config(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let NoParams {} = params(p)?;
    let subsystems: Vec<Value> = d
        .subsystems()
        .iter()
        .map(|s| json!({"subsystem": s.name, "config": (s.writer)(d)}))
        .collect();
    Ok(json!({ "subsystems": subsystems }))
}
