//! The `[[vhost.blk]]` section: vhost-user-blk exports.
//!
//! Same raw → validated pattern and one-line `key: message` errors as the
//! rest of the config.

use std::collections::HashSet;
use std::path::PathBuf;

use serde::Deserialize;

use super::{BdevConfig, ConfigError, ReactorsConfig};

/// Most virtqueues one device may have. virtio allows 65535; beyond one
/// queue per reactor they only add rings to poll, and QEMU caps
/// vhost-user-blk at 1024.
pub const MAX_NUM_QUEUES: u16 = 1024;

/// Default `[vhost] socket_dir`. SPDK creates controller sockets in its
/// `-S` directory (default: its working directory); a daemon's working
/// directory is `/` under systemd, so Pollux uses /var/tmp, where SPDK
/// deployments conventionally point `-S` and where its RPC socket lives.
pub const DEFAULT_SOCKET_DIR: &str = "/var/tmp";

/// `[vhost]`: vhost-user exports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VhostConfig {
    /// Directory in which `vhost_create_blk_controller` creates the socket
    /// named by its `ctrlr` param (absolute).
    pub socket_dir: PathBuf,
    /// `[[vhost.blk]]` entries, in file order.
    pub blk: Vec<VhostBlkConfig>,
}

impl Default for VhostConfig {
    fn default() -> Self {
        VhostConfig {
            socket_dir: PathBuf::from(DEFAULT_SOCKET_DIR),
            blk: Vec::new(),
        }
    }
}

/// One `[[vhost.blk]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VhostBlkConfig {
    /// Unix socket the front-end connects to (unique).
    pub socket: PathBuf,
    /// The exported bdev (exists).
    pub bdev: String,
    /// Virtqueues offered (1..=MAX_NUM_QUEUES).
    pub num_queues: u16,
    /// Reactor index polling each virtqueue (`queue_cores[i]` mapped to its
    /// reactor, or round robin over the reactors when absent).
    pub queue_reactors: Vec<usize>,
    /// Export read-only (VIRTIO_BLK_F_RO).
    pub readonly: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a [vhost] table")]
pub(super) struct RawVhost {
    socket_dir: Option<String>,
    #[serde(default)]
    blk: Vec<RawBlk>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [[vhost.blk]] table")]
struct RawBlk {
    socket: Option<String>,
    bdev: Option<String>,
    num_queues: Option<u16>,
    queue_cores: Option<Vec<usize>>,
    readonly: Option<bool>,
}

fn key(i: usize, field: &str) -> String {
    format!("vhost.blk[{i}].{field}")
}

pub(super) fn validate_vhost(
    raw: RawVhost,
    bdevs: &[BdevConfig],
    reactors: &ReactorsConfig,
) -> Result<VhostConfig, ConfigError> {
    let mut sockets = HashSet::new();
    let mut blk = Vec::with_capacity(raw.blk.len());
    for (i, b) in raw.blk.into_iter().enumerate() {
        let socket = match b.socket {
            None => return Err(ConfigError::invalid(key(i, "socket"), "missing")),
            Some(s) if s.trim().is_empty() => {
                return Err(ConfigError::invalid(key(i, "socket"), "must not be empty"))
            }
            Some(s) => PathBuf::from(s),
        };
        if !sockets.insert(socket.clone()) {
            return Err(ConfigError::invalid(
                key(i, "socket"),
                format!("{} is used by another [[vhost.blk]]", socket.display()),
            ));
        }
        let bdev = b
            .bdev
            .ok_or_else(|| ConfigError::invalid(key(i, "bdev"), "missing"))?;
        if !super::nvme::bdev_exists(bdevs, &bdev) {
            return Err(ConfigError::invalid(
                key(i, "bdev"),
                format!("no bdev named {bdev:?}"),
            ));
        }
        let num_queues = b.num_queues.unwrap_or(1);
        if num_queues == 0 || num_queues > MAX_NUM_QUEUES {
            return Err(ConfigError::invalid(
                key(i, "num_queues"),
                format!("{num_queues} is not between 1 and {MAX_NUM_QUEUES}"),
            ));
        }
        let queue_reactors = match b.queue_cores {
            None => (0..usize::from(num_queues))
                .map(|q| q % reactors.cores.len())
                .collect(),
            Some(cores) => {
                if cores.len() != usize::from(num_queues) {
                    return Err(ConfigError::invalid(
                        key(i, "queue_cores"),
                        format!(
                            "has {} entries but num_queues is {num_queues} (one core per queue)",
                            cores.len()
                        ),
                    ));
                }
                cores
                    .iter()
                    .enumerate()
                    .map(|(q, core)| {
                        reactors
                            .cores
                            .iter()
                            .position(|c| c == core)
                            .ok_or_else(|| {
                                ConfigError::invalid(
                                    format!("{}[{q}]", key(i, "queue_cores")),
                                    format!(
                                        "core {core} runs no reactor (reactors.cores is {:?})",
                                        reactors.cores
                                    ),
                                )
                            })
                    })
                    .collect::<Result<_, _>>()?
            }
        };
        blk.push(VhostBlkConfig {
            socket,
            bdev,
            num_queues,
            queue_reactors,
            readonly: b.readonly.unwrap_or(false),
        });
    }
    let socket_dir = match raw.socket_dir {
        None => PathBuf::from(DEFAULT_SOCKET_DIR),
        // Relative paths would depend on the daemon's working directory,
        // which differs between a shell and a service manager.
        Some(d) if !d.starts_with('/') => {
            return Err(ConfigError::invalid(
                "vhost.socket_dir",
                format!("{d:?} is not an absolute path"),
            ))
        }
        Some(d) => PathBuf::from(d),
    };
    Ok(VhostConfig { socket_dir, blk })
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use pollux_poller::cpu::CpuSet;

    fn parse(extra: &str) -> Result<Config, String> {
        let text = format!(
            "[reactors]\ncores = [0, 1]\n[[bdev]]\nname = \"d0\"\nkind = \"null\"\nsize = \"1GiB\"\n{extra}"
        );
        let online: CpuSet = (0..4).collect();
        Config::from_toml_str(&text, &online).map_err(|e| e.to_string())
    }

    #[test]
    fn full_entry_and_defaults() {
        let c = parse(
            "[[vhost.blk]]\nsocket = \"/tmp/a.sock\"\nbdev = \"d0\"\nnum_queues = 2\nqueue_cores = [1, 0]\nreadonly = true\n\
             [[vhost.blk]]\nsocket = \"/tmp/b.sock\"\nbdev = \"d0\"\nnum_queues = 3\n",
        )
        .unwrap();
        assert_eq!(c.vhost.blk[0].queue_reactors, vec![1, 0]);
        assert!(c.vhost.blk[0].readonly);
        assert_eq!(c.vhost.blk[1].queue_reactors, vec![0, 1, 0]);
        assert!(!c.vhost.blk[1].readonly);
    }

    #[test]
    fn errors_name_the_key() {
        let e = parse("[[vhost.blk]]\nbdev = \"d0\"\n").unwrap_err();
        assert!(e.starts_with("vhost.blk[0].socket: missing"), "{e}");
        let e = parse("[[vhost.blk]]\nsocket = \"/s\"\nbdev = \"nope\"\n").unwrap_err();
        assert!(e.starts_with("vhost.blk[0].bdev: no bdev"), "{e}");
        let e =
            parse("[[vhost.blk]]\nsocket = \"/s\"\nbdev = \"d0\"\nnum_queues = 0\n").unwrap_err();
        assert!(e.starts_with("vhost.blk[0].num_queues:"), "{e}");
        let e = parse(
            "[[vhost.blk]]\nsocket = \"/s\"\nbdev = \"d0\"\nnum_queues = 2\nqueue_cores = [0]\n",
        )
        .unwrap_err();
        assert!(e.starts_with("vhost.blk[0].queue_cores:"), "{e}");
        let e = parse("[[vhost.blk]]\nsocket = \"/s\"\nbdev = \"d0\"\nqueue_cores = [3]\n")
            .unwrap_err();
        assert!(
            e.starts_with("vhost.blk[0].queue_cores[0]: core 3 runs no reactor"),
            "{e}"
        );
        let e = parse("[[vhost.blk]]\nsocket = \"/s\"\nbdev = \"d0\"\nsize = 1\n").unwrap_err();
        assert!(e.starts_with("vhost.blk[0].size: unknown key"), "{e}");
        let e = parse(
            "[[vhost.blk]]\nsocket = \"/s\"\nbdev = \"d0\"\n[[vhost.blk]]\nsocket = \"/s\"\nbdev = \"d0\"\n",
        )
        .unwrap_err();
        assert!(e.starts_with("vhost.blk[1].socket:"), "{e}");
        let e = parse("[vhost]\nnet = 1\n").unwrap_err();
        assert!(e.starts_with("vhost.net: unknown key"), "{e}");
        let e = parse("[vhost]\nsocket_dir = \"tmp\"\n").unwrap_err();
        assert_eq!(e, "vhost.socket_dir: \"tmp\" is not an absolute path");
    }

    #[test]
    fn socket_dir_defaults_to_var_tmp() {
        assert_eq!(
            parse("").unwrap().vhost.socket_dir.to_str(),
            Some("/var/tmp")
        );
        let c = parse("[vhost]\nsocket_dir = \"/run/pollux\"\n").unwrap();
        assert_eq!(c.vhost.socket_dir.to_str(), Some("/run/pollux"));
    }
}
