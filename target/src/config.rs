//! Daemon configuration: the `pollux.toml` format.
//!
//! Parsing happens in two steps. The text is first parsed into a
//! `toml::Table`, so syntax errors come with a line and column. That table is
//! then deserialized into permissive "raw" structs (every field optional,
//! unknown keys denied), and finally validated into the public types. The
//! raw step keeps serde's key path for type errors; the validation step
//! exists because serde alone cannot say things like "`path` is not valid
//! for a null bdev" or "core 7 does not exist on this machine".
//!
//! Every error is one line that starts with the key it is about, e.g.
//! `bdev[1] ("disk0").path: /nope.img: No such file or directory`.

// The daemon's `main` does not use the config yet; remove once it does.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pollux_poller::cpu::{self, CpuError, CpuSet};
use serde::Deserialize;

mod metrics;
mod mirror;
mod nvme;
mod nvmf;
mod qos;
mod raid;
mod rpc;
mod split;
mod stacked;
mod vhost;
pub use metrics::MetricsConfig;
pub use mirror::MirrorConfig;
pub use nvmf::{NvmfConfig, NvmfSubsystemConfig};
pub use qos::{QosConfig, QosLimitConfig};
pub use raid::RaidConfig;
pub use rpc::{RpcConfig, DEFAULT_SOCKET as DEFAULT_RPC_SOCKET};
pub use split::part_name as split_part_name;
pub use vhost::{VhostBlkConfig, VhostConfig, MAX_NUM_QUEUES as MAX_VHOST_QUEUES};

/// Default for `reactors.idle_after_us`.
pub(crate) const DEFAULT_IDLE_AFTER_US: u64 = 200;
/// Default `block_size` for every bdev kind that has one.
const DEFAULT_BLOCK_SIZE: u32 = 512;
const BLOCK_SIZES: [u32; 2] = [512, 4096];
const SIZE_HINT: &str = r#"use e.g. 4096, "512MiB", "4GiB""#;
const KINDS: &str = "null, ram, file, passthru, delay, error, nvme, raid, split";

/// The whole daemon configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `[reactors]`: which cores run poll loops and how they idle.
    pub reactors: ReactorsConfig,
    /// `[[bdev]]` entries, in file order.
    pub bdevs: Vec<BdevConfig>,
    /// `[[nvmf.subsystem]]` exports.
    pub nvmf: NvmfConfig,
    /// `[metrics]`: the Prometheus endpoint.
    pub metrics: MetricsConfig,
    /// `[rpc]`: the JSON-RPC socket.
    pub rpc: RpcConfig,
    /// `[vhost]`: vhost-user-blk exports and where RPC-created sockets go.
    pub vhost: VhostConfig,
    /// `[[throttle_group]]` and `[[qos]]`: rate limits on bdevs.
    pub qos: QosConfig,
    /// `[[mirror]]`: mirror jobs started with the daemon.
    pub mirrors: Vec<MirrorConfig>,
}

/// The `[reactors]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReactorsConfig {
    /// CPU ids, one reactor per core, in the order written.
    pub cores: Vec<usize>,
    /// What a reactor does when it has no work.
    pub idle: IdleMode,
    /// In adaptive mode, how long a reactor spins without work before it
    /// sleeps. Kept (but unused) in poll mode so switching modes does not
    /// lose the setting.
    pub idle_after: Duration,
}

impl Default for ReactorsConfig {
    fn default() -> Self {
        ReactorsConfig {
            cores: vec![0],
            idle: IdleMode::Adaptive,
            idle_after: Duration::from_micros(DEFAULT_IDLE_AFTER_US),
        }
    }
}

/// Reactor idle behaviour (`reactors.idle`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdleMode {
    /// `"poll"`: spin forever; lowest latency, one full core per reactor.
    Poll,
    /// `"adaptive"`: spin while busy, sleep after `idle_after` without work.
    #[default]
    Adaptive,
}

/// One `[[bdev]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BdevConfig {
    /// Unique, non-empty name other bdevs and exports refer to.
    pub name: String,
    /// Kind and kind-specific settings.
    pub kind: BdevKind,
}

/// A bdev's kind (`kind = "..."`) with the settings valid for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BdevKind {
    /// Discards writes, reads zeroes.
    Null {
        /// Size in bytes; a non-zero multiple of `block_size`.
        size: u64,
        /// 512 or 4096.
        block_size: u32,
        /// `read_zeroes` (default true): reads fill the buffer with zeroes.
        /// False leaves it as it was, as SPDK's null bdev and qemu's
        /// null-co with read-zeroes=off do: no memory is touched per read.
        read_zeroes: bool,
    },
    /// Memory-backed disk.
    Ram {
        /// Size in bytes; a non-zero multiple of `block_size`.
        size: u64,
        /// 512 or 4096.
        block_size: u32,
    },
    /// A regular file or block device.
    File {
        /// Existing regular file or block device.
        path: PathBuf,
        /// Try `O_DIRECT` first (falls back to buffered I/O at open time).
        direct: bool,
        /// 512 or 4096.
        block_size: u32,
    },
    /// Forwards every I/O to another bdev.
    Passthru {
        /// Name of the bdev below; exists and forms no cycle.
        child: String,
    },
    /// A RAID array over other bdevs (raid0, raid1, concat).
    Raid(RaidConfig),
    /// An NVMe SSD driven from userspace over VFIO; the bdev name is the
    /// controller's, its namespaces become bdevs `{name}n{nsid}`.
    Nvme {
        /// The controller's PCI address (DDDD:BB:DD.F), bound to vfio-pci.
        pci: String,
        /// Entries per I/O queue.
        io_queue_depth: u16,
    },
    /// Adds latency to reads and writes, as `bdev_delay_create`.
    Delay {
        /// Name of the bdev below.
        child: String,
        /// `[avg_read, p99_read, avg_write, p99_write]` latencies in µs.
        latencies_us: [u64; 4],
    },
    /// Injects errors when `bdev_error_inject_error` says so, as
    /// `bdev_error_create`; named `EE_<child>` as SPDK names it.
    Error {
        /// Name of the bdev below.
        child: String,
    },
    /// Parts of another bdev, as `bdev_split_create`: the entry makes
    /// bdevs `<base_bdev>p0` to `p<split_count - 1>` (its `name` is the
    /// first one's).
    Split {
        /// Name of the bdev split.
        base_bdev: String,
        /// Parts asked for (fewer if a fixed size fits fewer).
        split_count: u64,
        /// MiB per part; 0: an equal share of the base.
        split_size_mb: u64,
    },
}

impl BdevKind {
    /// The bdev below, for the kinds stacked on one.
    pub fn child(&self) -> Option<&str> {
        match self {
            BdevKind::Passthru { child }
            | BdevKind::Delay { child, .. }
            | BdevKind::Error { child }
            | BdevKind::Split {
                base_bdev: child, ..
            } => Some(child),
            _ => None,
        }
    }
}

/// A configuration error. Its `Display` is one line; callers prefix the
/// file path.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("{}", io_message(.source))]
    Read {
        /// The underlying error.
        source: io::Error,
    },
    /// The text is not valid TOML.
    #[error("TOML syntax error at line {line}, column {column}: {message}")]
    Syntax {
        /// 1-based line.
        line: usize,
        /// 1-based column, in characters.
        column: usize,
        /// What the parser expected.
        message: String,
    },
    /// A key is missing, unknown, mistyped or has an invalid value.
    #[error("{key}: {message}")]
    Invalid {
        /// Path of the key, e.g. `reactors.cores` or `bdev[1] ("disk0").path`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// The online CPUs could not be determined, so cores cannot be checked.
    #[error("cannot list online CPUs: {0}")]
    Cpus(#[from] CpuError),
}

impl ConfigError {
    /// The key an `Invalid` error is about.
    #[cfg(test)]
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }

    fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// A string that is not a size, from [`parse_size`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// Not a number with an optional unit suffix.
    #[error("{0:?} is not a size ({SIZE_HINT})")]
    Invalid(String),
    /// A valid size that does not fit in 64 bits.
    #[error("{0:?} is too large (more than 2^64 bytes)")]
    Overflow(String),
}

/// Parses a byte size: a plain integer, or an integer followed by a unit.
///
/// Units (case-insensitive, optional space before them): `B`; `K`, `KiB`,
/// `M`, `MiB`, `G`, `GiB`, `T`, `TiB` are powers of 1024, as storage users
/// expect; `KB`, `MB`, `GB`, `TB` are powers of 1000, as the SI prefixes
/// say. Zero parses; whether zero is allowed is up to the caller.
pub fn parse_size(s: &str) -> Result<u64, SizeError> {
    let invalid = || SizeError::Invalid(s.to_owned());
    let text = s.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err(invalid());
    }
    let multiplier: u64 = match unit.trim_start().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return Err(invalid()),
    };
    let overflow = || SizeError::Overflow(s.to_owned());
    // All digits, so a parse failure can only be overflow.
    let n: u64 = digits.parse().map_err(|_| overflow())?;
    n.checked_mul(multiplier).ok_or_else(overflow)
}

impl Config {
    /// Parses and validates a config, checking `reactors.cores` against
    /// `online`.
    pub fn from_toml_str(text: &str, online: &CpuSet) -> Result<Config, ConfigError> {
        let table: toml::Table = text.parse().map_err(|e| syntax_error(text, &e))?;
        let raw: RawConfig =
            serde_path_to_error::deserialize(table.clone()).map_err(|e| serde_error(&e, &table))?;
        let reactors = raw.reactors.validate(online)?;
        let bdevs = validate_bdevs(raw.bdev)?;
        let nvmf = nvmf::validate_nvmf(raw.nvmf, &bdevs)?;
        let metrics = metrics::validate_metrics(raw.metrics)?;
        let rpc = rpc::validate_rpc(raw.rpc)?;
        let vhost = vhost::validate_vhost(raw.vhost, &bdevs, &reactors)?;
        let qos = qos::validate_qos(raw.throttle_group, raw.qos, &bdevs)?;
        let mirrors = mirror::validate_mirrors(raw.mirror, &bdevs)?;
        Ok(Config {
            reactors,
            bdevs,
            nvmf,
            metrics,
            rpc,
            vhost,
            qos,
            mirrors,
        })
    }

    /// Reads and validates the config file at `path` against the CPUs
    /// online now.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = fs::read_to_string(path).map_err(|source| ConfigError::Read { source })?;
        let online = cpu::online_cpus()?;
        Config::from_toml_str(&text, &online)
    }

    /// The config used when none is given: one adaptive reactor on core 0
    /// and a 1 GiB ram bdev `ram0` with 512-byte blocks, exported over
    /// NVMe/TCP as `nqn.2024-11.dev.pollux:ram0` on 127.0.0.1:4420, so the
    /// daemon is usable out of the box.
    pub fn embedded_default() -> Config {
        Config {
            reactors: ReactorsConfig::default(),
            bdevs: vec![BdevConfig {
                name: "ram0".to_owned(),
                kind: BdevKind::Ram {
                    size: 1 << 30,
                    block_size: DEFAULT_BLOCK_SIZE,
                },
            }],
            nvmf: NvmfConfig {
                subsystems: vec![NvmfSubsystemConfig::embedded_default()],
            },
            metrics: MetricsConfig::default(),
            rpc: RpcConfig::default(),
            vhost: VhostConfig::default(),
            qos: QosConfig::default(),
            mirrors: Vec::new(),
        }
    }
}

// ---------------------------------------------------------------------------
// Raw (serde) layer. Every field is optional so that missing and misplaced
// keys are reported by validation, with a message that says what to do.

/// Adding a section (`[nvmf]`, `[metrics]`, ...) is one field here plus its
/// validated counterpart in `Config`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawConfig {
    #[serde(default)]
    reactors: RawReactors,
    #[serde(default)]
    bdev: Vec<RawBdev>,
    #[serde(default)]
    nvmf: nvmf::RawNvmf,
    #[serde(default)]
    metrics: metrics::RawMetrics,
    #[serde(default)]
    rpc: rpc::RawRpc,
    #[serde(default)]
    vhost: vhost::RawVhost,
    #[serde(default)]
    throttle_group: Vec<qos::RawGroup>,
    #[serde(default)]
    qos: Vec<qos::RawQos>,
    #[serde(default)]
    mirror: Vec<mirror::RawMirror>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a [reactors] table")]
struct RawReactors {
    // A list or a string, so it stays a TOML value until validation.
    cores: Option<toml::Value>,
    idle: Option<String>,
    idle_after_us: Option<u64>,
}

// Flat on purpose: a tagged enum would turn `path` on a null bdev into an
// opaque "unknown field" error instead of naming the kind it belongs to.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [[bdev]] table")]
struct RawBdev {
    name: Option<String>,
    kind: Option<String>,
    size: Option<toml::Value>,
    block_size: Option<u32>,
    path: Option<String>,
    direct: Option<bool>,
    child: Option<String>,
    avg_read_latency: Option<u64>,
    p99_read_latency: Option<u64>,
    avg_write_latency: Option<u64>,
    p99_write_latency: Option<u64>,
    pci: Option<String>,
    io_queue_depth: Option<u32>,
    read_zeroes: Option<bool>,
    raid_level: Option<String>,
    base_bdevs: Option<Vec<String>>,
    strip_size_kb: Option<u32>,
    base_bdev: Option<String>,
    split_count: Option<u64>,
    split_size_mb: Option<u64>,
}

impl RawReactors {
    fn validate(self, online: &CpuSet) -> Result<ReactorsConfig, ConfigError> {
        let defaults = ReactorsConfig::default();
        let cores = match self.cores {
            None => defaults.cores,
            Some(value) => parse_cores(&value)?,
        };
        cpu::validate_cores(&cores, online)
            .map_err(|e| ConfigError::invalid("reactors.cores", e.to_string()))?;
        let idle = match self.idle.as_deref() {
            None => defaults.idle,
            Some("poll") => IdleMode::Poll,
            Some("adaptive") => IdleMode::Adaptive,
            Some(other) => {
                return Err(ConfigError::invalid(
                    "reactors.idle",
                    format!(r#"{other:?} is not an idle mode (use "poll" or "adaptive")"#),
                ))
            }
        };
        let idle_after = self
            .idle_after_us
            .map_or(defaults.idle_after, Duration::from_micros);
        Ok(ReactorsConfig {
            cores,
            idle,
            idle_after,
        })
    }
}

fn parse_cores(value: &toml::Value) -> Result<Vec<usize>, ConfigError> {
    const KEY: &str = "reactors.cores";
    match value {
        toml::Value::String(s) => {
            cpu::parse_cpu_list(s).map_err(|e| ConfigError::invalid(KEY, e.to_string()))
        }
        toml::Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                toml::Value::Integer(n) => usize::try_from(*n)
                    .ok()
                    .filter(|&n| n <= cpu::MAX_CPU_ID)
                    .ok_or_else(|| {
                        ConfigError::invalid(format!("{KEY}[{i}]"), format!("{n} is not a CPU id"))
                    }),
                other => Err(ConfigError::invalid(
                    format!("{KEY}[{i}]"),
                    format!("expected a CPU id, found {}", describe(other)),
                )),
            })
            .collect(),
        other => Err(ConfigError::invalid(
            KEY,
            format!(
                r#"expected a list of CPU ids or a string such as "0-3,8", found {}"#,
                describe(other)
            ),
        )),
    }
}

/// Which keys a kind accepts beyond `name` and `kind`; used to reject
/// misplaced keys with a message naming the kind.
fn allowed_keys(kind: &str) -> &'static [&'static str] {
    match kind {
        "null" => &["size", "block_size", "read_zeroes"],
        "ram" => &["size", "block_size"],
        "file" => &["path", "direct", "block_size"],
        "passthru" | "error" => &["child"],
        "delay" => &stacked::DELAY_KEYS,
        "nvme" => &["pci", "io_queue_depth"],
        "raid" => &["raid_level", "base_bdevs", "strip_size_kb"],
        "split" => &split::KEYS,
        _ => &[],
    }
}

fn validate_bdevs(raw: Vec<RawBdev>) -> Result<Vec<BdevConfig>, ConfigError> {
    let mut bdevs = Vec::with_capacity(raw.len());
    let mut index_of: HashMap<String, usize> = HashMap::new();
    for (i, bdev) in raw.into_iter().enumerate() {
        let config = validate_bdev(i, bdev)?;
        // A split's every part is a bdev name other entries may use.
        let names = std::iter::once(config.name.clone()).chain(split::parts(&config).skip(1));
        for name in names {
            if let Some(first) = index_of.insert(name.clone(), i) {
                return Err(ConfigError::invalid(
                    format!("{}.name", bdev_key(i, Some(&config.name))),
                    format!("duplicate bdev name {name:?} (also bdev[{first}])"),
                ));
            }
        }
        bdevs.push(config);
    }
    check_children(&bdevs, &index_of)?;
    raid::check_members(&bdevs, &index_of)?;
    Ok(bdevs)
}

fn validate_bdev(i: usize, mut raw: RawBdev) -> Result<BdevConfig, ConfigError> {
    let mut split = None;
    if raw.kind.as_deref() == Some("split") {
        let s = split::RawSplit {
            name: raw.name.take(),
            base_bdev: raw.base_bdev.take(),
            split_count: raw.split_count.take(),
            split_size_mb: raw.split_size_mb.take(),
        };
        raw.name = Some(split::entry_name(i, &s)?);
        split = Some(s);
    }
    let name = match raw.name.as_deref() {
        None => return Err(ConfigError::invalid(format!("bdev[{i}].name"), "missing")),
        Some(n) if n.trim().is_empty() => {
            return Err(ConfigError::invalid(
                format!("bdev[{i}].name"),
                "must not be empty",
            ))
        }
        Some(n) => n.to_owned(),
    };
    let key = bdev_key(i, Some(&name));
    let field = |f: &str| format!("{key}.{f}");
    let kind = match raw.kind.as_deref() {
        None => {
            return Err(ConfigError::invalid(
                field("kind"),
                format!("missing (use one of {KINDS})"),
            ))
        }
        Some(
            k @ ("null" | "ram" | "file" | "passthru" | "delay" | "error" | "nvme" | "raid"
            | "split"),
        ) => k,
        Some(other) => {
            return Err(ConfigError::invalid(
                field("kind"),
                format!("{other:?} is not a bdev kind (use one of {KINDS})"),
            ))
        }
    };

    let present = [
        ("size", raw.size.is_some()),
        ("block_size", raw.block_size.is_some()),
        ("path", raw.path.is_some()),
        ("direct", raw.direct.is_some()),
        ("child", raw.child.is_some()),
        ("avg_read_latency", raw.avg_read_latency.is_some()),
        ("p99_read_latency", raw.p99_read_latency.is_some()),
        ("avg_write_latency", raw.avg_write_latency.is_some()),
        ("p99_write_latency", raw.p99_write_latency.is_some()),
        ("pci", raw.pci.is_some()),
        ("io_queue_depth", raw.io_queue_depth.is_some()),
        ("read_zeroes", raw.read_zeroes.is_some()),
        ("raid_level", raw.raid_level.is_some()),
        ("base_bdevs", raw.base_bdevs.is_some()),
        ("strip_size_kb", raw.strip_size_kb.is_some()),
        ("base_bdev", raw.base_bdev.is_some()),
        ("split_count", raw.split_count.is_some()),
        ("split_size_mb", raw.split_size_mb.is_some()),
    ];
    let allowed = allowed_keys(kind);
    if let Some((bad, _)) = present
        .iter()
        .find(|(k, is_set)| *is_set && !allowed.contains(k))
    {
        return Err(ConfigError::invalid(
            field(bad),
            format!(
                "not valid for kind {kind} (kind {kind} takes: {})",
                allowed.join(", ")
            ),
        ));
    }

    let block_size = match raw.block_size {
        None => DEFAULT_BLOCK_SIZE,
        Some(bs) if BLOCK_SIZES.contains(&bs) => bs,
        Some(bs) => {
            return Err(ConfigError::invalid(
                field("block_size"),
                format!("{bs} is not supported (use 512 or 4096)"),
            ))
        }
    };

    let kind = match kind {
        "null" | "ram" => {
            let size = validate_size(&field("size"), raw.size.as_ref(), block_size)?;
            if kind == "null" {
                BdevKind::Null {
                    size,
                    block_size,
                    read_zeroes: raw.read_zeroes.unwrap_or(true),
                }
            } else {
                BdevKind::Ram { size, block_size }
            }
        }
        "file" => {
            let path = validate_file(&field("path"), raw.path.as_deref(), block_size)?;
            BdevKind::File {
                path,
                direct: raw.direct.unwrap_or(true),
                block_size,
            }
        }
        "nvme" => nvme::validate(&field, raw.pci, raw.io_queue_depth)?,
        "split" => split::validate(split.take().expect("taken for a split"), field)?,
        "raid" => raid::validate(
            raid::RawRaid {
                raid_level: raw.raid_level,
                base_bdevs: raw.base_bdevs,
                strip_size_kb: raw.strip_size_kb,
            },
            field,
        )?,
        _ => match raw.child {
            Some(child) if !child.trim().is_empty() && kind != "passthru" => {
                let us = [
                    raw.avg_read_latency,
                    raw.p99_read_latency,
                    raw.avg_write_latency,
                    raw.p99_write_latency,
                ];
                stacked::validate(kind, &name, child, us, &field)?
            }
            Some(child) if !child.trim().is_empty() => BdevKind::Passthru { child },
            Some(_) => return Err(ConfigError::invalid(field("child"), "must not be empty")),
            None => {
                return Err(ConfigError::invalid(
                    field("child"),
                    "missing (name the bdev this one forwards to)",
                ))
            }
        },
    };
    Ok(BdevConfig { name, kind })
}

fn validate_size(
    key: &str,
    value: Option<&toml::Value>,
    block_size: u32,
) -> Result<u64, ConfigError> {
    let size = match value {
        None => return Err(ConfigError::invalid(key, format!("missing ({SIZE_HINT})"))),
        Some(toml::Value::Integer(n)) => u64::try_from(*n)
            .map_err(|_| ConfigError::invalid(key, format!("{n} is not a size ({SIZE_HINT})")))?,
        Some(toml::Value::String(s)) => {
            parse_size(s).map_err(|e| ConfigError::invalid(key, e.to_string()))?
        }
        Some(other) => {
            return Err(ConfigError::invalid(
                key,
                format!("expected a size, found {} ({SIZE_HINT})", describe(other)),
            ))
        }
    };
    if size == 0 {
        return Err(ConfigError::invalid(key, "must be greater than zero"));
    }
    if size % u64::from(block_size) != 0 {
        return Err(ConfigError::invalid(
            key,
            format!("{size} bytes is not a multiple of block_size {block_size}"),
        ));
    }
    Ok(size)
}

fn validate_file(key: &str, path: Option<&str>, block_size: u32) -> Result<PathBuf, ConfigError> {
    let path = match path {
        None => {
            return Err(ConfigError::invalid(
                key,
                "missing (a regular file or block device)",
            ))
        }
        Some("") => return Err(ConfigError::invalid(key, "must not be empty")),
        Some(p) => PathBuf::from(p),
    };
    let shown = path.display();
    let meta = fs::metadata(&path)
        .map_err(|e| ConfigError::invalid(key, format!("{shown}: {}", io_message(&e))))?;
    let file_type = meta.file_type();
    if file_type.is_file() {
        // Block devices report length 0 here, so only regular files can be
        // checked up front; the bdev re-checks devices when it opens them.
        if meta.len() == 0 {
            return Err(ConfigError::invalid(key, format!("{shown}: file is empty")));
        }
        if meta.len() % u64::from(block_size) != 0 {
            return Err(ConfigError::invalid(
                key,
                format!(
                    "{shown}: file is {} bytes, not a multiple of block_size {block_size}",
                    meta.len()
                ),
            ));
        }
    } else if !file_type.is_block_device() {
        return Err(ConfigError::invalid(
            key,
            format!("{shown}: not a regular file or block device"),
        ));
    }
    Ok(path)
}

/// Checks that every passthru child exists and that no chain of passthrus
/// loops back on itself (which would recurse forever at I/O time).
fn check_children(
    bdevs: &[BdevConfig],
    index_of: &HashMap<String, usize>,
) -> Result<(), ConfigError> {
    let child_of = |b: &BdevConfig| b.kind.child().map(str::to_owned);
    for (i, bdev) in bdevs.iter().enumerate() {
        let Some(child) = child_of(bdev) else {
            continue;
        };
        let key = format!("{}.child", bdev_key(i, Some(&bdev.name)));
        if !index_of.contains_key(&child) && !nvme::is_namespace_of(bdevs, &child) {
            return Err(ConfigError::invalid(
                key,
                format!("no bdev named {child:?}"),
            ));
        }
        // Walk down the chain; a chain longer than the bdev count must
        // revisit something. Cycles not through `bdev` itself are reported
        // when the walk starts from one of their members.
        let mut chain = vec![bdev.name.clone()];
        let mut next = Some(child);
        while let Some(name) = next {
            if name == bdev.name {
                chain.push(name);
                return Err(ConfigError::invalid(
                    key,
                    format!("passthru cycle: {}", chain.join(" -> ")),
                ));
            }
            if chain.contains(&name) || chain.len() > bdevs.len() {
                break;
            }
            next = index_of.get(&name).and_then(|&j| child_of(&bdevs[j]));
            chain.push(name);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Error formatting.

fn bdev_key(i: usize, name: Option<&str>) -> String {
    match name {
        Some(n) if !n.trim().is_empty() => format!("bdev[{i}] ({n:?})"),
        _ => format!("bdev[{i}]"),
    }
}

fn syntax_error(text: &str, e: &toml::de::Error) -> ConfigError {
    let (line, column) = match e.span() {
        Some(span) => line_column(text, span.start),
        None => (1, 1),
    };
    ConfigError::Syntax {
        line,
        column,
        message: one_line(e.message()),
    }
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    // Spans are byte offsets; step back to a char boundary before slicing.
    let offset = (0..=offset)
        .rev()
        .find(|&o| text.is_char_boundary(o))
        .unwrap_or(0);
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |p| p + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Turns a serde error plus its key path into one `key: message` line,
/// naming bdevs by name where the table has one.
fn serde_error(
    e: &serde_path_to_error::Error<toml::de::Error>,
    table: &toml::Table,
) -> ConfigError {
    let mut key = String::new();
    let mut segments = e.path().iter().peekable();
    while let Some(segment) = segments.next() {
        match segment {
            serde_path_to_error::Segment::Map { key: k }
            | serde_path_to_error::Segment::Enum { variant: k } => {
                if key.is_empty() {
                    key.push_str(k);
                } else {
                    let _ = write!(key, ".{k}");
                }
                if key == "bdev" {
                    if let Some(serde_path_to_error::Segment::Seq { index }) = segments.peek() {
                        key = bdev_key(*index, bdev_name_in(table, *index));
                        segments.next();
                    }
                }
            }
            serde_path_to_error::Segment::Seq { index } => {
                let _ = write!(key, "[{index}]");
            }
            serde_path_to_error::Segment::Unknown => {}
        }
    }
    let message = one_line(e.inner().message());
    // serde reports unknown/missing fields at the enclosing table; move the
    // field name into the key so the line points at the actual key.
    for (prefix, what) in [
        ("unknown field `", "unknown key"),
        ("missing field `", "missing"),
    ] {
        if let Some(rest) = message.strip_prefix(prefix) {
            if let Some((field, tail)) = rest.split_once('`') {
                // Unknown fields already end the path; missing ones do not.
                let key = if key.is_empty() {
                    field.to_owned()
                } else if key == field || key.ends_with(&format!(".{field}")) {
                    key
                } else {
                    format!("{key}.{field}")
                };
                let tail = tail.trim_start_matches(',').trim();
                let message = if tail.is_empty() {
                    what.to_owned()
                } else {
                    format!("{what} ({tail})")
                };
                return ConfigError::invalid(key, message);
            }
        }
    }
    if key == "bdev" && message.ends_with("expected a sequence") {
        // The easy mistake is `[bdev]` for `[[bdev]]`; say so.
        return ConfigError::invalid(key, "must be written [[bdev]] (an array of tables)");
    }
    if key.is_empty() {
        key.push_str("(top level)");
    }
    ConfigError::invalid(key, message)
}

fn bdev_name_in(table: &toml::Table, index: usize) -> Option<&str> {
    table
        .get("bdev")?
        .as_array()?
        .get(index)?
        .get("name")?
        .as_str()
}

fn describe(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => format!("string {s:?}"),
        toml::Value::Integer(n) => format!("integer {n}"),
        toml::Value::Float(x) => format!("float {x}"),
        toml::Value::Boolean(b) => format!("boolean {b}"),
        toml::Value::Datetime(d) => format!("datetime {d}"),
        toml::Value::Array(_) => "an array".to_owned(),
        toml::Value::Table(_) => "a table".to_owned(),
    }
}

fn one_line(message: &str) -> String {
    message
        .trim()
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("; ")
}

/// `io::Error`'s text without the " (os error N)" suffix, which only adds
/// noise to a config message.
fn io_message(e: &io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => text[..at].to_owned(),
        _ => text,
    }
}

/// Helpers for the section modules' tests: parse against this machine's
/// online CPUs, and check that an error is one line.
#[cfg(test)]
pub(crate) mod testing {
    use super::{Config, ConfigError};

    /// Parses `text` as a whole config.
    pub(crate) fn parse(text: &str) -> Result<Config, ConfigError> {
        let online = pollux_poller::cpu::online_cpus().unwrap();
        Config::from_toml_str(text, &online)
    }

    /// Parses `text`, expects an error, checks it is one line and returns it.
    pub(crate) fn err(text: &str) -> String {
        let msg = parse(text).expect_err("rejected").to_string();
        assert!(!msg.contains('\n'), "not one line: {msg:?}");
        msg
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn online() -> CpuSet {
        [0, 1].into_iter().collect()
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(text, &online())
    }

    /// Parses `text`, expects an error, checks it is one line and returns it.
    fn err(text: &str) -> String {
        let e = parse(text).expect_err("config should be rejected");
        let msg = e.to_string();
        assert!(!msg.contains('\n'), "not one line: {msg:?}");
        msg
    }

    fn image(len: usize) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&vec![0u8; len]).unwrap();
        f
    }

    #[test]
    fn example_config_parses() {
        let img = image(8192);
        let text = format!(
            r#"
[reactors]
cores = [0, 1]        # CPU ids, or a string such as "0-3,8"
idle = "adaptive"
idle_after_us = 200

[[bdev]]
name = "null0"
kind = "null"
size = "4GiB"
block_size = 4096

[[bdev]]
name = "disk0"
kind = "file"
path = '{}'
direct = true

[[bdev]]
name = "pt0"
kind = "passthru"
child = "disk0"
"#,
            img.path().display()
        );
        let config = parse(&text).unwrap();
        assert_eq!(
            config,
            Config {
                reactors: ReactorsConfig {
                    cores: vec![0, 1],
                    idle: IdleMode::Adaptive,
                    idle_after: Duration::from_micros(200),
                },
                bdevs: vec![
                    BdevConfig {
                        name: "null0".into(),
                        kind: BdevKind::Null {
                            size: 4 << 30,
                            block_size: 4096,
                            read_zeroes: true,
                        },
                    },
                    BdevConfig {
                        name: "disk0".into(),
                        kind: BdevKind::File {
                            path: img.path().to_owned(),
                            direct: true,
                            block_size: 512
                        },
                    },
                    BdevConfig {
                        name: "pt0".into(),
                        kind: BdevKind::Passthru {
                            child: "disk0".into()
                        },
                    },
                ],
                nvmf: NvmfConfig::default(),
                metrics: MetricsConfig::default(),
                rpc: RpcConfig::default(),
                vhost: VhostConfig::default(),
                qos: QosConfig::default(),
                mirrors: Vec::new(),
            }
        );
    }

    #[test]
    fn empty_config_uses_defaults() {
        let config = parse("").unwrap();
        assert_eq!(config.reactors, ReactorsConfig::default());
        assert_eq!(config.reactors.cores, vec![0]);
        assert_eq!(config.reactors.idle, IdleMode::Adaptive);
        assert_eq!(config.reactors.idle_after, Duration::from_micros(200));
        assert!(config.bdevs.is_empty());
        assert_eq!(
            parse("[reactors]\n").unwrap().reactors,
            ReactorsConfig::default()
        );
    }

    #[test]
    fn reactors_options() {
        let config =
            parse("[reactors]\ncores = \"0-1\"\nidle = \"poll\"\nidle_after_us = 50\n").unwrap();
        assert_eq!(config.reactors.cores, vec![0, 1]);
        assert_eq!(config.reactors.idle, IdleMode::Poll);
        assert_eq!(config.reactors.idle_after, Duration::from_micros(50));
    }

    #[test]
    fn defaults_for_optional_bdev_keys() {
        let img = image(4096);
        let text = format!(
            "[[bdev]]\nname = \"r\"\nkind = \"ram\"\nsize = 1048576\n\
             [[bdev]]\nname = \"f\"\nkind = \"file\"\npath = '{}'\n",
            img.path().display()
        );
        let config = parse(&text).unwrap();
        assert_eq!(
            config.bdevs[0].kind,
            BdevKind::Ram {
                size: 1 << 20,
                block_size: 512
            }
        );
        assert_eq!(
            config.bdevs[1].kind,
            BdevKind::File {
                path: img.path().to_owned(),
                direct: true,
                block_size: 512
            }
        );
    }

    #[test]
    fn syntax_error_is_one_line_with_position() {
        let msg = err("[reactors]\ncores = [0,\n");
        assert!(msg.starts_with("TOML syntax error at line "), "{msg}");
        assert!(msg.contains("column"), "{msg}");
        let msg = err("[reactors]\nidle = adaptive\n");
        assert!(
            msg.starts_with("TOML syntax error at line 2, column 8"),
            "{msg}"
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        let msg = err("[nvmf2]\n");
        assert!(msg.starts_with("nvmf2: unknown key"), "{msg}");
        let msg = err("[reactors]\nidel = \"poll\"\n");
        assert!(msg.starts_with("reactors.idel: unknown key"), "{msg}");
        let msg = err("[[bdev]]\nname = \"n\"\nkind = \"null\"\nsise = 4096\n");
        assert!(
            msg.starts_with(r#"bdev[0] ("n").sise: unknown key"#),
            "{msg}"
        );
    }

    #[test]
    fn null_read_zeroes_defaults_on() {
        let kind = |extra: &str| {
            let text = format!("[[bdev]]\nname = \"n\"\nkind = \"null\"\nsize = 4096\n{extra}");
            parse(&text).unwrap().bdevs[0].kind.clone()
        };
        let zeroes = |k: BdevKind| match k {
            BdevKind::Null { read_zeroes, .. } => read_zeroes,
            other => panic!("{other:?}"),
        };
        assert!(zeroes(kind("")));
        assert!(!zeroes(kind("read_zeroes = false\n")));
    }

    #[test]
    fn key_for_wrong_kind_is_rejected() {
        let msg = err("[[bdev]]\nname = \"null0\"\nkind = \"null\"\nsize = 4096\npath = \"/x\"\n");
        assert_eq!(
            msg,
            r#"bdev[0] ("null0").path: not valid for kind null (kind null takes: size, block_size, read_zeroes)"#
        );
        let msg = err("[[bdev]]\nname = \"r\"\nkind = \"ram\"\nsize = 4096\nread_zeroes = false\n");
        assert!(
            msg.starts_with(r#"bdev[0] ("r").read_zeroes: not valid for kind ram"#),
            "{msg}"
        );
        let msg =
            err("[[bdev]]\nname = \"p\"\nkind = \"passthru\"\nchild = \"x\"\nblock_size = 512\n");
        assert!(
            msg.starts_with(r#"bdev[0] ("p").block_size: not valid for kind passthru"#),
            "{msg}"
        );
    }

    #[test]
    fn wrong_types_name_the_key() {
        let msg =
            err("[[bdev]]\nname = \"n\"\nkind = \"null\"\nsize = 4096\nblock_size = \"big\"\n");
        assert!(
            msg.starts_with(r#"bdev[0] ("n").block_size: invalid type"#),
            "{msg}"
        );
        let msg = err("[reactors]\nidle = 5\n");
        assert!(msg.starts_with("reactors.idle: invalid type"), "{msg}");
        let msg = err("reactors = 5\n");
        assert!(msg.starts_with("reactors: invalid type"), "{msg}");
        assert_eq!(
            err("[bdev]\nname = \"n\"\n"),
            "bdev: must be written [[bdev]] (an array of tables)"
        );
        let msg = err("[reactors]\nidle_after_us = -1\n");
        assert!(msg.starts_with("reactors.idle_after_us: "), "{msg}");
    }

    fn null_with_size(size: &str) -> String {
        format!("[[bdev]]\nname = \"n\"\nkind = \"null\"\nsize = {size}\n")
    }

    #[test]
    fn bad_sizes() {
        assert_eq!(
            err(&null_with_size(r#""4 XB""#)),
            r#"bdev[0] ("n").size: "4 XB" is not a size (use e.g. 4096, "512MiB", "4GiB")"#
        );
        assert_eq!(
            err(&null_with_size("0")),
            r#"bdev[0] ("n").size: must be greater than zero"#
        );
        assert_eq!(
            err(&null_with_size(r#""0GiB""#)),
            r#"bdev[0] ("n").size: must be greater than zero"#
        );
        assert_eq!(
            err(&null_with_size("1000")),
            r#"bdev[0] ("n").size: 1000 bytes is not a multiple of block_size 512"#
        );
        assert_eq!(
            err(&null_with_size(r#""4MB""#)),
            r#"bdev[0] ("n").size: 4000000 bytes is not a multiple of block_size 512"#
        );
        assert!(err(&null_with_size(r#""99999999TiB""#))
            .starts_with(r#"bdev[0] ("n").size: "99999999TiB" is too large"#));
        assert!(err(&null_with_size("-5")).starts_with(r#"bdev[0] ("n").size: -5 is not a size"#));
        assert!(err(&null_with_size("1.5")).starts_with(r#"bdev[0] ("n").size: expected a size"#));
        assert!(err("[[bdev]]\nname = \"n\"\nkind = \"ram\"\n")
            .starts_with(r#"bdev[0] ("n").size: missing"#));
    }

    #[test]
    fn bad_block_size() {
        let msg = err("[[bdev]]\nname = \"n\"\nkind = \"null\"\nsize = 4096\nblock_size = 1024\n");
        assert_eq!(
            msg,
            r#"bdev[0] ("n").block_size: 1024 is not supported (use 512 or 4096)"#
        );
    }

    #[test]
    fn missing_file_names_path() {
        let text = "[[bdev]]\nname = \"null0\"\nkind = \"null\"\nsize = 4096\n\
                    [[bdev]]\nname = \"disk0\"\nkind = \"file\"\npath = \"/nope.img\"\n";
        assert_eq!(
            err(text),
            r#"bdev[1] ("disk0").path: /nope.img: No such file or directory"#
        );
    }

    #[test]
    fn file_must_be_a_usable_file() {
        let dir = tempfile::tempdir().unwrap();
        let msg = err(&format!(
            "[[bdev]]\nname = \"d\"\nkind = \"file\"\npath = '{}'\n",
            dir.path().display()
        ));
        assert!(msg.ends_with("not a regular file or block device"), "{msg}");

        let odd = image(1000);
        let msg = err(&format!(
            "[[bdev]]\nname = \"d\"\nkind = \"file\"\npath = '{}'\n",
            odd.path().display()
        ));
        assert!(msg.starts_with(r#"bdev[0] ("d").path: "#), "{msg}");
        assert!(msg.ends_with("not a multiple of block_size 512"), "{msg}");

        let empty = image(0);
        let msg = err(&format!(
            "[[bdev]]\nname = \"d\"\nkind = \"file\"\npath = '{}'\n",
            empty.path().display()
        ));
        assert!(msg.ends_with("file is empty"), "{msg}");

        assert!(err("[[bdev]]\nname = \"d\"\nkind = \"file\"\n")
            .starts_with(r#"bdev[0] ("d").path: missing"#));
    }

    #[test]
    fn direct_can_be_turned_off() {
        let img = image(4096);
        let config = parse(&format!(
            "[[bdev]]\nname = \"d\"\nkind = \"file\"\npath = '{}'\ndirect = false\nblock_size = 4096\n",
            img.path().display()
        ))
        .unwrap();
        assert_eq!(
            config.bdevs[0].kind,
            BdevKind::File {
                path: img.path().to_owned(),
                direct: false,
                block_size: 4096
            }
        );
    }

    #[test]
    fn names_and_kinds() {
        let two = "[[bdev]]\nname = \"a\"\nkind = \"null\"\nsize = 512\n\
                   [[bdev]]\nname = \"a\"\nkind = \"ram\"\nsize = 512\n";
        assert_eq!(
            err(two),
            r#"bdev[1] ("a").name: duplicate bdev name "a" (also bdev[0])"#
        );
        assert_eq!(
            err("[[bdev]]\nname = \"\"\nkind = \"null\"\nsize = 512\n"),
            "bdev[0].name: must not be empty"
        );
        assert_eq!(
            err("[[bdev]]\nkind = \"null\"\nsize = 512\n"),
            "bdev[0].name: missing"
        );
        assert!(err("[[bdev]]\nname = \"a\"\n").starts_with(r#"bdev[0] ("a").kind: missing"#));
        assert_eq!(
            err("[[bdev]]\nname = \"a\"\nkind = \"iscsi\"\n"),
            r#"bdev[0] ("a").kind: "iscsi" is not a bdev kind (use one of null, ram, file, passthru, delay, error, nvme, raid, split)"#
        );
    }

    fn passthru(name: &str, child: &str) -> String {
        format!("[[bdev]]\nname = \"{name}\"\nkind = \"passthru\"\nchild = \"{child}\"\n")
    }

    const NULL0: &str = "[[bdev]]\nname = \"null0\"\nkind = \"null\"\nsize = 512\n";

    #[test]
    fn passthru_children() {
        // Children may be declared after their parent, and chains are fine.
        let text = format!(
            "{}{}{NULL0}",
            passthru("pt1", "pt0"),
            passthru("pt0", "null0")
        );
        assert_eq!(parse(&text).unwrap().bdevs.len(), 3);

        assert_eq!(
            err(&format!("{NULL0}{}", passthru("pt0", "nope"))),
            r#"bdev[1] ("pt0").child: no bdev named "nope""#
        );
        assert_eq!(
            err(&passthru("pt0", "pt0")),
            r#"bdev[0] ("pt0").child: passthru cycle: pt0 -> pt0"#
        );
        assert_eq!(
            err(&format!("{}{}", passthru("a", "b"), passthru("b", "a"))),
            r#"bdev[0] ("a").child: passthru cycle: a -> b -> a"#
        );
        // A cycle below a non-cyclic passthru is reported at a member.
        let msg = err(&format!(
            "{}{}{}",
            passthru("top", "a"),
            passthru("a", "b"),
            passthru("b", "a")
        ));
        assert_eq!(msg, r#"bdev[1] ("a").child: passthru cycle: a -> b -> a"#);
    }

    #[test]
    fn cores_are_checked() {
        assert_eq!(
            err("[reactors]\ncores = [0, 7]\n"),
            "reactors.cores: core 7 does not exist on this machine (online CPUs: 0-1)"
        );
        assert_eq!(
            err("[reactors]\ncores = \"0-7\"\n"),
            "reactors.cores: core 2 does not exist on this machine (online CPUs: 0-1)"
        );
        assert_eq!(
            err("[reactors]\ncores = []\n"),
            "reactors.cores: the core list is empty"
        );
        assert_eq!(
            err("[reactors]\ncores = [1, 1]\n"),
            "reactors.cores: core 1 is listed more than once"
        );
        assert_eq!(
            err("[reactors]\ncores = \"1-0\"\n"),
            "reactors.cores: range 1-0 is reversed (write 0-1)"
        );
        assert_eq!(
            err("[reactors]\ncores = [0, -1]\n"),
            "reactors.cores[1]: -1 is not a CPU id"
        );
        assert!(err("[reactors]\ncores = [\"0\"]\n")
            .starts_with("reactors.cores[0]: expected a CPU id"));
        assert!(err("[reactors]\ncores = 0\n").starts_with("reactors.cores: expected a list"));
    }

    #[test]
    fn bad_idle_mode() {
        assert_eq!(
            err("[reactors]\nidle = \"busy\"\n"),
            r#"reactors.idle: "busy" is not an idle mode (use "poll" or "adaptive")"#
        );
    }

    #[test]
    fn parse_size_units() {
        let cases: &[(&str, u64)] = &[
            ("0", 0),
            ("4096", 4096),
            ("512B", 512),
            ("4K", 4096),
            ("4KiB", 4096),
            ("4KB", 4000),
            ("512MiB", 512 << 20),
            ("512 MiB", 512 << 20),
            ("3M", 3 << 20),
            ("2MB", 2_000_000),
            ("4GiB", 4 << 30),
            ("4gib", 4 << 30),
            ("4G", 4 << 30),
            ("1GB", 1_000_000_000),
            ("1TiB", 1 << 40),
            ("1T", 1 << 40),
            ("1TB", 1_000_000_000_000),
            (" 8K ", 8192),
        ];
        for &(s, want) in cases {
            assert_eq!(parse_size(s), Ok(want), "{s:?}");
        }
        for s in ["", "GiB", "4 XB", "1.5G", "-1", "4GiBs", "0x10", "4 K B"] {
            assert_eq!(
                parse_size(s),
                Err(SizeError::Invalid(s.to_owned())),
                "{s:?}"
            );
        }
        assert!(matches!(
            parse_size("16777216TiB"),
            Err(SizeError::Overflow(_))
        ));
        assert!(matches!(
            parse_size("99999999999999999999"),
            Err(SizeError::Overflow(_))
        ));
        assert_eq!(parse_size("16777215TiB"), Ok(16_777_215u64 << 40));
    }

    #[test]
    fn embedded_default_is_valid_and_as_documented() {
        let config = Config::embedded_default();
        assert_eq!(config.reactors, ReactorsConfig::default());
        assert_eq!(
            config.bdevs,
            vec![BdevConfig {
                name: "ram0".into(),
                kind: BdevKind::Ram {
                    size: 1 << 30,
                    block_size: 512
                },
            }]
        );
        // The same thing written as TOML must parse to the same config.
        let text = "[[bdev]]\nname = \"ram0\"\nkind = \"ram\"\nsize = \"1GiB\"\n\
                    [[nvmf.subsystem]]\nnqn = \"nqn.2024-11.dev.pollux:ram0\"\n\
                    namespaces = [\"ram0\"]\nallow_any_host = true\n";
        assert_eq!(parse(text).unwrap(), config);
    }

    #[test]
    fn load_reads_file_and_reports_io_errors() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"[reactors]\ncores = [0]\nidle = \"poll\"\n")
            .unwrap();
        let config = Config::load(f.path()).unwrap();
        assert_eq!(config.reactors.idle, IdleMode::Poll);

        let dir = tempfile::tempdir().unwrap();
        let e = Config::load(&dir.path().join("missing.toml")).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }));
        assert_eq!(e.to_string(), "No such file or directory");
    }

    #[test]
    fn error_key_accessor() {
        let e = parse("[reactors]\nidle = \"x\"\n").unwrap_err();
        assert_eq!(e.key(), Some("reactors.idle"));
        assert_eq!(parse("[").unwrap_err().key(), None);
    }
}
