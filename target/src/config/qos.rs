//! `[[throttle_group]]` and `[[qos]]`: rate limits on bdevs, the TOML
//! form of `pollux_throttle_group_create` and `bdev_set_qos_limit`.
//!
//! ```toml
//! [[throttle_group]]
//! name = "tenant-a"
//! rw_ios_per_sec = 50000
//!
//! [[qos]]
//! bdev = "null0"
//! rw_ios_per_sec = 20000    # I/Os per second, a multiple of 1000 (rounded up)
//! rw_mbytes_per_sec = 100   # MiB per second; also r_ and w_mbytes_per_sec
//! group = "tenant-a"        # optional: share the group's budget too
//! ```

use serde::Deserialize;

use super::{BdevConfig, ConfigError};
use crate::qos::LimitUpdate;

/// The rate limits of a config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QosConfig {
    /// `[[throttle_group]]`: name and limits, in file order.
    pub groups: Vec<(String, LimitUpdate)>,
    /// `[[qos]]`: one bdev's limits and group, in file order.
    pub limits: Vec<QosLimitConfig>,
}

/// One `[[qos]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QosLimitConfig {
    /// The bdev limited; one of the config's bdevs.
    pub bdev: String,
    /// Its limits.
    pub limits: LimitUpdate,
    /// Its throttle group, one of the config's.
    pub group: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [[throttle_group]] table")]
pub(super) struct RawGroup {
    name: Option<String>,
    rw_ios_per_sec: Option<u64>,
    rw_mbytes_per_sec: Option<u64>,
    r_mbytes_per_sec: Option<u64>,
    w_mbytes_per_sec: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [[qos]] table")]
pub(super) struct RawQos {
    bdev: Option<String>,
    rw_ios_per_sec: Option<u64>,
    rw_mbytes_per_sec: Option<u64>,
    r_mbytes_per_sec: Option<u64>,
    w_mbytes_per_sec: Option<u64>,
    group: Option<String>,
}

pub(super) fn validate_qos(
    groups: Vec<RawGroup>,
    limits: Vec<RawQos>,
    bdevs: &[BdevConfig],
) -> Result<QosConfig, ConfigError> {
    let mut out = QosConfig::default();
    for (i, g) in groups.into_iter().enumerate() {
        let key = format!("throttle_group[{i}]");
        let name = match g.name {
            Some(n) if !n.is_empty() => n,
            _ => return Err(ConfigError::invalid(format!("{key}.name"), "missing")),
        };
        if out.groups.iter().any(|(n, _)| *n == name) {
            return Err(ConfigError::invalid(
                format!("{key}.name"),
                format!("{name:?} is already a throttle group"),
            ));
        }
        let update = LimitUpdate([
            g.rw_ios_per_sec,
            g.rw_mbytes_per_sec,
            g.r_mbytes_per_sec,
            g.w_mbytes_per_sec,
        ]);
        out.groups.push((name, update));
    }
    for (i, q) in limits.into_iter().enumerate() {
        let key = format!("qos[{i}]");
        let bdev = match q.bdev {
            Some(b)
                if bdevs
                    .iter()
                    .any(|c| c.name == b || super::split::parts(c).any(|p| p == b)) =>
            {
                b
            }
            Some(b) => {
                return Err(ConfigError::invalid(
                    format!("{key}.bdev"),
                    format!("{b:?} is not a [[bdev]] of this config"),
                ))
            }
            None => return Err(ConfigError::invalid(format!("{key}.bdev"), "missing")),
        };
        if out.limits.iter().any(|l| l.bdev == bdev) {
            return Err(ConfigError::invalid(
                format!("{key}.bdev"),
                format!("{bdev:?} already has a [[qos]] entry"),
            ));
        }
        if let Some(g) = &q.group {
            if !out.groups.iter().any(|(n, _)| n == g) {
                return Err(ConfigError::invalid(
                    format!("{key}.group"),
                    format!("{g:?} is not a [[throttle_group]] of this config"),
                ));
            }
        }
        let limits = LimitUpdate([
            q.rw_ios_per_sec,
            q.rw_mbytes_per_sec,
            q.r_mbytes_per_sec,
            q.w_mbytes_per_sec,
        ]);
        if limits.is_empty() && q.group.is_none() {
            return Err(ConfigError::invalid(
                key,
                "sets no limit (give rw_ios_per_sec, rw_mbytes_per_sec, r_mbytes_per_sec, \
                 w_mbytes_per_sec or group)",
            ));
        }
        out.limits.push(QosLimitConfig {
            bdev,
            limits,
            group: q.group,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{err, parse};

    const NULL0: &str = "[[bdev]]\nname = \"null0\"\nkind = \"null\"\nsize = 1048576\n";

    #[test]
    fn limits_and_groups_parse() {
        let c = parse(&format!(
            "{NULL0}[[throttle_group]]\nname = \"g\"\nrw_ios_per_sec = 5000\n\
             [[qos]]\nbdev = \"null0\"\nrw_mbytes_per_sec = 10\ngroup = \"g\"\n"
        ))
        .unwrap();
        assert_eq!(c.qos.groups.len(), 1);
        assert_eq!(c.qos.groups[0].0, "g");
        assert_eq!(c.qos.groups[0].1 .0, [Some(5000), None, None, None]);
        let l = &c.qos.limits[0];
        assert_eq!(l.bdev, "null0");
        assert_eq!(l.limits.0, [None, Some(10), None, None]);
        assert_eq!(l.group.as_deref(), Some("g"));
    }

    #[test]
    fn bad_qos_entries_are_named() {
        assert_eq!(
            err("[[qos]]\nbdev = \"nope\"\nrw_ios_per_sec = 1000\n"),
            r#"qos[0].bdev: "nope" is not a [[bdev]] of this config"#
        );
        assert_eq!(
            err(&format!(
                "{NULL0}[[qos]]\nbdev = \"null0\"\nrw_ios_per_sec = 1000\ngroup = \"x\"\n"
            )),
            r#"qos[0].group: "x" is not a [[throttle_group]] of this config"#
        );
        assert!(err(&format!("{NULL0}[[qos]]\nbdev = \"null0\"\n"))
            .starts_with("qos[0]: sets no limit"));
        assert!(
            err(&format!("{NULL0}[[qos]]\nbdev = \"null0\"\nrw_iops = 1\n")).contains("rw_iops")
        );
        assert_eq!(
            err("[[throttle_group]]\nrw_ios_per_sec = 1000\n"),
            "throttle_group[0].name: missing"
        );
    }
}
