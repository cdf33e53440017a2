//! SPDK-compatible JSON-RPC: the server, the method table and the context
//! the methods act on. Method names, params and result shapes follow SPDK's
//! `doc/jsonrpc.md` and `python/spdk/rpc/` so that `scripts/rpc.py` and
//! tools built on it work unchanged.

pub mod errors;
pub mod jsonrpc;
mod methods;
mod server;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use pollux_graph::Graph;
use pollux_poller::Handle;
use serde_json::Value;

use crate::nvmf::NvmfTarget;
use crate::vhost::VhostTargets;
pub use jsonrpc::RpcError;
pub use methods::bdev::record_config_bdevs;
pub use methods::jobs::start_config_mirrors;
pub use server::{call, RpcServer};

/// Default socket path (`[rpc] socket`), as SPDK's `/var/tmp/spdk.sock`.
pub const DEFAULT_SOCKET: &str = crate::config::DEFAULT_RPC_SOCKET;

/// How a bdev was created, so `save_config` can replay it and
/// `bdev_get_bdevs` can describe it.
#[derive(Clone, Debug)]
pub struct BdevRecord {
    /// The creating SPDK method (`bdev_malloc_create`, ...).
    pub method: &'static str,
    /// Its params, normalised.
    pub params: Value,
    /// The bdev's UUID.
    pub uuid: String,
    /// SPDK's product name for the kind.
    pub product_name: &'static str,
    /// Whether `save_config` replays `method` for this bdev: false for the
    /// bdevs one call made beside the first (the parts of a split).
    pub replay: bool,
}

/// What the methods act on.
pub struct RpcContext {
    /// The block graph.
    pub graph: Arc<Graph>,
    /// The reactors.
    pub handle: Handle,
    /// The vhost-user-blk front-end, when the daemon runs one (`vhost_*`
    /// methods answer that vhost is not available otherwise).
    pub vhost: Option<Arc<VhostTargets>>,
    /// The NVMe/TCP front-end, when the daemon runs one (`nvmf_*` methods
    /// answer that NVMe-oF is not available otherwise).
    pub nvmf: Option<Arc<NvmfTarget>>,
    /// Named keys (`keyring_*`), which hosts' DH-HMAC-CHAP keys name.
    pub keyring: Arc<crate::keyring::Keyring>,
    /// Rate limits and throttle groups.
    pub qos: Arc<crate::qos::Qos>,
    bdevs: Mutex<BTreeMap<String, BdevRecord>>,
    filters: Mutex<Vec<Value>>,
    /// Block jobs (`pollux_mirror_start`, `pollux_job_*`).
    pub jobs: crate::jobs::Jobs,
    /// `bdev_raid_set_options`: what the next rebuild uses.
    pub(crate) raid_options: Mutex<pollux_graph::nodes::raid::RaidOptions>,
}

impl RpcContext {
    /// A context over a started target.
    pub fn new(graph: Arc<Graph>, handle: Handle) -> Self {
        RpcContext {
            graph,
            handle,
            vhost: None,
            nvmf: None,
            keyring: Arc::default(),
            qos: Arc::default(),
            bdevs: Mutex::default(),
            filters: Mutex::default(),
            jobs: crate::jobs::Jobs::default(),
            raid_options: Mutex::default(),
        }
    }

    /// Gives the `vhost_*` methods the front-end to act on.
    pub fn with_vhost(mut self, vhost: Arc<VhostTargets>) -> Self {
        self.vhost = Some(vhost);
        self
    }

    /// Shares the target's rate limits (those of its config) with the
    /// methods.
    pub fn with_qos(mut self, qos: Arc<crate::qos::Qos>) -> Self {
        self.qos = qos;
        self
    }

    /// Gives the `nvmf_*` methods the front-end to act on.
    pub fn with_nvmf(mut self, nvmf: Arc<NvmfTarget>) -> Self {
        self.nvmf = Some(nvmf);
        self
    }

    /// The bdev records (control path: a mutex is fine).
    pub fn bdevs(&self) -> MutexGuard<'_, BTreeMap<String, BdevRecord>> {
        self.bdevs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Filters inserted with `pollux_graph_insert_filter`, as replayable
    /// `save_config` entries.
    pub fn filters(&self) -> MutexGuard<'_, Vec<Value>> {
        self.filters.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A method: params in, result or error out.
pub type Handler = fn(&Dispatcher, Option<Value>) -> Result<Value, RpcError>;

/// A subsystem's part of `save_config`: the method calls that rebuild it.
pub type ConfigWriter = fn(&Dispatcher) -> Vec<Value>;

/// A configuration subsystem as `framework_get_subsystems` lists it.
pub struct Subsystem {
    /// Name (`bdev`, `nvmf`, `vhost_blk`, ...).
    pub name: &'static str,
    /// Subsystems whose config must be applied first.
    pub depends_on: &'static [&'static str],
    /// Writes its config.
    pub writer: ConfigWriter,
}

/// The method table.
pub struct Dispatcher {
    /// The state the methods act on.
    pub ctx: Arc<RpcContext>,
    methods: BTreeMap<&'static str, Handler>,
    /// In dependency order.
    subsystems: Vec<Subsystem>,
}

impl Dispatcher {
    /// A dispatcher with every built-in method.
    pub fn new(ctx: Arc<RpcContext>) -> Self {
        let mut d = Dispatcher {
            ctx,
            methods: BTreeMap::new(),
            subsystems: Vec::new(),
        };
        methods::register_all(&mut d);
        d
    }

    /// Adds (or replaces) a method.
    pub fn register(&mut self, name: &'static str, handler: Handler) {
        self.methods.insert(name, handler);
    }

    /// Adds a configuration subsystem (after those it depends on).
    pub fn register_subsystem(&mut self, s: Subsystem) {
        self.subsystems.push(s);
    }

    /// The configuration subsystems, in dependency order.
    pub fn subsystems(&self) -> &[Subsystem] {
        &self.subsystems
    }

    /// Method names, sorted.
    pub fn method_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.methods.keys().copied()
    }

    /// Runs one method.
    pub fn call(&self, method: &str, params: Option<Value>) -> Result<Value, RpcError> {
        let Some(handler) = self.methods.get(method) else {
            return Err(RpcError {
                code: jsonrpc::code::METHOD_NOT_FOUND,
                message: format!("Method not found: {method}"),
            });
        };
        let span = tracing::info_span!("rpc", method);
        let _g = span.enter();
        // What `log_set_flag rpc` with print level DEBUG shows.
        tracing::debug!(?params, "RPC call");
        let result = handler(self, params);
        if let Err(e) = &result {
            tracing::info!(code = e.code, message = %e.message, "RPC failed");
        }
        result
    }

    /// Answers one request object, or a batch (an array of them, as
    /// rpc.py's `--batch-mode` sends since SPDK 26.09) with an array of
    /// answers; `None` for notifications and batches of only those.
    pub fn handle_value(&self, v: Value) -> Option<Value> {
        let Value::Array(batch) = v else {
            return self.handle_one(v);
        };
        if batch.is_empty() || batch.len() > jsonrpc::MAX_BATCH {
            let msg = format!(
                "a batch must hold 1 to {} requests, not {}",
                jsonrpc::MAX_BATCH,
                batch.len()
            );
            return Some(jsonrpc::response(None, Err(jsonrpc::invalid_request(&msg))));
        }
        let answers: Vec<Value> = batch
            .into_iter()
            .filter_map(|req| self.handle_one(req))
            .collect();
        (!answers.is_empty()).then_some(Value::Array(answers))
    }

    fn handle_one(&self, v: Value) -> Option<Value> {
        match jsonrpc::parse_request(v) {
            Err((id, e)) => Some(jsonrpc::response(id, Err(e))),
            Ok(req) => {
                let result = self.call(&req.method, req.params);
                req.id.map(|id| jsonrpc::response(Some(id), result))
            }
        }
    }

    /// Applies an SPDK-format JSON config (`{"subsystems": [...]}`, what
    /// `save_config` writes): every method of every subsystem, in order.
    pub fn load_json_config(&self, config: &Value) -> Result<(), String> {
        let subsystems = config
            .get("subsystems")
            .and_then(Value::as_array)
            .ok_or("the JSON config has no \"subsystems\" array")?;
        for (i, sub) in subsystems.iter().enumerate() {
            let name = sub.get("subsystem").and_then(Value::as_str).unwrap_or("?");
            let Some(entries) = sub.get("config").and_then(Value::as_array) else {
                continue; // SPDK writes "config": null for empty subsystems
            };
            for (j, entry) in entries.iter().enumerate() {
                let method = entry.get("method").and_then(Value::as_str).ok_or_else(|| {
                    format!("subsystems[{i}] ({name}).config[{j}]: no \"method\"")
                })?;
                self.call(method, entry.get("params").cloned())
                    .map_err(|e| {
                        format!(
                            "subsystems[{i}] ({name}).config[{j}] {method}: {}",
                            e.message
                        )
                    })?;
            }
        }
        Ok(())
    }
}
