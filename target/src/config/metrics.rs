//! The `[metrics]` section: where the Prometheus `/metrics` endpoint listens.
//!
//! Kept beside `config.rs` with the same raw → validated pattern and the
//! same one-line `key: message` errors.

use std::net::SocketAddr;

use serde::Deserialize;

use super::ConfigError;

/// `[metrics]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Address of the `/metrics` endpoint. Port 0 lets the kernel pick one
    /// (the daemon logs the address it got).
    pub listen: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: pollux_metrics::DEFAULT_LISTEN,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a [metrics] table")]
pub(super) struct RawMetrics {
    listen: Option<String>,
}

pub(super) fn validate_metrics(raw: RawMetrics) -> Result<MetricsConfig, ConfigError> {
    let Some(text) = raw.listen else {
        return Ok(MetricsConfig::default());
    };
    // IP:port only, no host names: the daemon binds before anything could
    // resolve a name, and a name resolving to several addresses would
    // leave it unclear which one is served.
    let listen = text.parse::<SocketAddr>().map_err(|_| {
        ConfigError::invalid(
            "metrics.listen",
            format!(
                "{text:?} is not an address (use IP:PORT, e.g. \"{}\")",
                pollux_metrics::DEFAULT_LISTEN
            ),
        )
    })?;
    Ok(MetricsConfig { listen })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{err, parse};
    use super::super::Config;
    use super::MetricsConfig;

    #[test]
    fn default_is_loopback_9469() {
        let c = parse("").unwrap();
        assert_eq!(c.metrics, MetricsConfig::default());
        assert_eq!(c.metrics.listen.to_string(), "127.0.0.1:9469");
        assert_eq!(parse("[metrics]\n").unwrap().metrics, c.metrics);
        assert_eq!(Config::embedded_default().metrics, c.metrics);
    }

    #[test]
    fn listen_takes_ipv4_and_ipv6_addresses() {
        let c = parse("[metrics]\nlisten = \"0.0.0.0:9100\"\n").unwrap();
        assert_eq!(c.metrics.listen.to_string(), "0.0.0.0:9100");
        let c = parse("[metrics]\nlisten = \"[::1]:0\"\n").unwrap();
        assert_eq!(c.metrics.listen.to_string(), "[::1]:0");
    }

    #[test]
    fn bad_metrics_keys_are_named() {
        assert_eq!(
            err("[metrics]\nlisten = \"x\"\n"),
            r#"metrics.listen: "x" is not an address (use IP:PORT, e.g. "127.0.0.1:9469")"#
        );
        assert!(err("[metrics]\nlisten = \"localhost:9469\"\n")
            .starts_with(r#"metrics.listen: "localhost:9469" is not an address"#));
        assert!(err("[metrics]\nlisten = \"127.0.0.1\"\n")
            .starts_with(r#"metrics.listen: "127.0.0.1" is not an address"#));
        assert!(err("[metrics]\nlisten = 9469\n").starts_with("metrics.listen: invalid type"));
        assert!(err("[metrics]\nport = 1\n").starts_with("metrics.port: unknown key"));
        assert!(err("metrics = 1\n").starts_with("metrics: invalid type"));
    }
}
