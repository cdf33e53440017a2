//! The `[rpc]` section: where the JSON-RPC Unix socket is created.
//!
//! Kept beside `config.rs` with the same raw → validated pattern and the
//! same one-line `key: message` errors. `--rpc-socket PATH` overrides it.

use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;

/// Default socket path, as SPDK's `/var/tmp/spdk.sock`: /var/tmp survives
/// reboots' tmpfs cleaning rules on most distributions and is writable by
/// the service user without extra setup.
pub const DEFAULT_SOCKET: &str = "/var/tmp/pollux.sock";

/// Longest path a Unix socket address holds (`sun_path` is 108 bytes,
/// NUL-terminated). Checked here so a bad path fails at config load, not
/// after the reactors started.
const MAX_SOCKET_PATH: usize = 107;

/// `[rpc]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcConfig {
    /// The JSON-RPC socket (created mode 0600).
    pub socket: PathBuf,
}

impl Default for RpcConfig {
    fn default() -> Self {
        RpcConfig {
            socket: PathBuf::from(DEFAULT_SOCKET),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "an [rpc] table")]
pub(super) struct RawRpc {
    socket: Option<String>,
}

pub(super) fn validate_rpc(raw: RawRpc) -> Result<RpcConfig, ConfigError> {
    let Some(socket) = raw.socket else {
        return Ok(RpcConfig::default());
    };
    if socket.trim().is_empty() {
        return Err(ConfigError::invalid("rpc.socket", "must not be empty"));
    }
    if socket.len() > MAX_SOCKET_PATH || socket.contains('\0') {
        return Err(ConfigError::invalid(
            "rpc.socket",
            format!(
                "{socket:?} is not a Unix socket path ({MAX_SOCKET_PATH} bytes at most, no NUL)"
            ),
        ));
    }
    Ok(RpcConfig {
        socket: PathBuf::from(socket),
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{err, parse};
    use super::super::Config;
    use super::RpcConfig;

    #[test]
    fn default_is_var_tmp_pollux_sock() {
        let c = parse("").unwrap();
        assert_eq!(c.rpc, RpcConfig::default());
        assert_eq!(c.rpc.socket.to_str(), Some("/var/tmp/pollux.sock"));
        assert_eq!(parse("[rpc]\n").unwrap().rpc, c.rpc);
        assert_eq!(Config::embedded_default().rpc, c.rpc);
    }

    #[test]
    fn socket_is_taken_as_written() {
        let c = parse("[rpc]\nsocket = \"/run/pollux/rpc.sock\"\n").unwrap();
        assert_eq!(c.rpc.socket.to_str(), Some("/run/pollux/rpc.sock"));
        let c = parse("[rpc]\nsocket = \"rel.sock\"\n").unwrap();
        assert_eq!(c.rpc.socket.to_str(), Some("rel.sock"));
    }

    #[test]
    fn bad_rpc_keys_are_named() {
        assert_eq!(
            err("[rpc]\nsocket = \"\"\n"),
            "rpc.socket: must not be empty"
        );
        let long = format!("/{}", "x".repeat(120));
        assert!(err(&format!("[rpc]\nsocket = \"{long}\"\n")).starts_with("rpc.socket: \"/xxx"));
        assert!(err("[rpc]\nsocket = 1\n").starts_with("rpc.socket: invalid type"));
        assert!(err("[rpc]\nlisten = \"x\"\n").starts_with("rpc.listen: unknown key"));
        assert!(err("rpc = 1\n").starts_with("rpc: invalid type"));
    }
}
