//! The `[[nvmf.subsystem]]` section: NVMe/TCP exports.
//!
//! Kept beside `config.rs` (same raw → validated pattern, same one-line
//! `key: message` errors) so the NVMe-oF keys do not crowd the core file.

use std::collections::HashSet;
use std::net::SocketAddr;

use serde::Deserialize;

use super::{BdevConfig, ConfigError};

/// Listen address used when a subsystem names none: loopback only, so a
/// default install never exposes storage to the network.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:4420";
/// Model number reported when `model` is absent.
pub const DEFAULT_MODEL: &str = "Pollux";
/// Identify Controller SN is 20 ASCII bytes.
const SERIAL_MAX: usize = 20;
/// Identify Controller MN is 40 ASCII bytes.
const MODEL_MAX: usize = 40;
/// NVMe Base 2.0 section 4.5: an NQN is at most 223 bytes.
const NQN_MAX: usize = 223;
/// The well-known discovery NQN; a subsystem may not take it.
const DISCOVERY_NQN: &str = "nqn.2014-08.org.nvmexpress.discovery";

/// `[nvmf]`: NVMe over TCP exports.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NvmfConfig {
    /// `[[nvmf.subsystem]]` entries, in file order.
    pub subsystems: Vec<NvmfSubsystemConfig>,
}

/// One `[[nvmf.subsystem]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvmfSubsystemConfig {
    /// Subsystem NQN (unique, `nqn.` prefix, at most 223 bytes).
    pub nqn: String,
    /// Serial number (printable ASCII, at most 20 bytes).
    pub serial: String,
    /// Model number (printable ASCII, at most 40 bytes).
    pub model: String,
    /// Bdev names; namespace IDs are 1.. in this order.
    pub namespaces: Vec<String>,
    /// Any host NQN may connect.
    pub allow_any_host: bool,
    /// Host NQNs allowed when `allow_any_host` is false.
    pub hosts: Vec<String>,
    /// TCP listen addresses.
    pub listen: Vec<SocketAddr>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "an [nvmf] table")]
pub(super) struct RawNvmf {
    #[serde(default)]
    subsystem: Vec<RawSubsystem>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "an [[nvmf.subsystem]] table")]
struct RawSubsystem {
    nqn: Option<String>,
    serial: Option<String>,
    model: Option<String>,
    namespaces: Option<Vec<String>>,
    allow_any_host: Option<bool>,
    hosts: Option<Vec<String>>,
    listen: Option<Vec<String>>,
}

impl NvmfSubsystemConfig {
    /// The export the embedded default ships: `ram0` on loopback, any host.
    pub fn embedded_default() -> Self {
        let nqn = "nqn.2024-11.dev.pollux:ram0".to_owned();
        NvmfSubsystemConfig {
            serial: generated_serial(&nqn),
            nqn,
            model: DEFAULT_MODEL.to_owned(),
            namespaces: vec!["ram0".to_owned()],
            allow_any_host: true,
            hosts: Vec::new(),
            listen: vec![DEFAULT_LISTEN.parse().expect("constant address")],
        }
    }
}

/// A stable serial derived from the NQN (FNV-1a), so restarting the daemon
/// does not make hosts see a different device.
pub fn generated_serial(nqn: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in nqn.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("PLX{:016X}", h)
}

fn key(i: usize, nqn: Option<&str>, field: &str) -> String {
    match nqn {
        Some(n) if !n.is_empty() => format!("nvmf.subsystem[{i}] ({n:?}).{field}"),
        _ => format!("nvmf.subsystem[{i}].{field}"),
    }
}

fn check_nqn(key: &str, nqn: &str) -> Result<(), ConfigError> {
    if !nqn.starts_with("nqn.") {
        return Err(ConfigError::invalid(
            key,
            format!("{nqn:?} is not an NQN (it must start with \"nqn.\")"),
        ));
    }
    if nqn.len() > NQN_MAX {
        return Err(ConfigError::invalid(
            key,
            format!(
                "{} bytes is longer than the NQN limit of {NQN_MAX}",
                nqn.len()
            ),
        ));
    }
    if nqn.bytes().any(|b| b.is_ascii_control()) {
        return Err(ConfigError::invalid(
            key,
            "must not contain control characters",
        ));
    }
    Ok(())
}

fn check_ascii(key: &str, value: &str, max: usize) -> Result<(), ConfigError> {
    if value.is_empty() {
        return Err(ConfigError::invalid(key, "must not be empty"));
    }
    if value.len() > max || !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(ConfigError::invalid(
            key,
            format!("{value:?} must be at most {max} printable ASCII characters"),
        ));
    }
    Ok(())
}

pub(super) fn validate_nvmf(raw: RawNvmf, bdevs: &[BdevConfig]) -> Result<NvmfConfig, ConfigError> {
    let mut seen = HashSet::new();
    let mut subsystems = Vec::with_capacity(raw.subsystem.len());
    for (i, s) in raw.subsystem.into_iter().enumerate() {
        let nqn = match s.nqn {
            None => return Err(ConfigError::invalid(key(i, None, "nqn"), "missing")),
            Some(n) => n,
        };
        let k = |f: &str| key(i, Some(&nqn), f);
        check_nqn(&k("nqn"), &nqn)?;
        if nqn == DISCOVERY_NQN {
            return Err(ConfigError::invalid(
                k("nqn"),
                "is the discovery subsystem's NQN, which the target serves itself",
            ));
        }
        if !seen.insert(nqn.clone()) {
            return Err(ConfigError::invalid(k("nqn"), "duplicate subsystem NQN"));
        }
        let serial = match s.serial {
            None => generated_serial(&nqn),
            Some(v) => {
                check_ascii(&k("serial"), &v, SERIAL_MAX)?;
                v
            }
        };
        let model = match s.model {
            None => DEFAULT_MODEL.to_owned(),
            Some(v) => {
                check_ascii(&k("model"), &v, MODEL_MAX)?;
                v
            }
        };
        let namespaces = s.namespaces.unwrap_or_default();
        let mut ns_seen = HashSet::new();
        for (j, name) in namespaces.iter().enumerate() {
            let nk = format!("{}[{j}]", k("namespaces"));
            if !super::nvme::bdev_exists(bdevs, name) {
                return Err(ConfigError::invalid(nk, format!("no bdev named {name:?}")));
            }
            if !ns_seen.insert(name) {
                return Err(ConfigError::invalid(
                    nk,
                    format!("bdev {name:?} is already a namespace of this subsystem"),
                ));
            }
        }
        let allow_any_host = s.allow_any_host.unwrap_or(false);
        let hosts = s.hosts.unwrap_or_default();
        for (j, h) in hosts.iter().enumerate() {
            check_nqn(&format!("{}[{j}]", k("hosts")), h)?;
        }
        if !allow_any_host && hosts.is_empty() {
            return Err(ConfigError::invalid(
                k("hosts"),
                "no host may connect: list host NQNs or set allow_any_host = true",
            ));
        }
        let listen = match s.listen {
            None => vec![DEFAULT_LISTEN.parse().expect("constant address")],
            Some(l) if l.is_empty() => {
                return Err(ConfigError::invalid(
                    k("listen"),
                    "must name at least one address such as \"127.0.0.1:4420\"",
                ))
            }
            Some(l) => l
                .iter()
                .enumerate()
                .map(|(j, a)| {
                    a.parse::<SocketAddr>().map_err(|_| {
                        ConfigError::invalid(
                            format!("{}[{j}]", k("listen")),
                            format!("{a:?} is not an IP:port address such as \"127.0.0.1:4420\""),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        subsystems.push(NvmfSubsystemConfig {
            nqn,
            serial,
            model,
            namespaces,
            allow_any_host,
            hosts,
            listen,
        });
    }
    Ok(NvmfConfig { subsystems })
}

#[cfg(test)]
mod tests {
    use super::super::testing::parse;

    fn sub(extra: &str) -> String {
        format!(
            "[[bdev]]\nname = \"d0\"\nkind = \"null\"\nsize = \"1MiB\"\n\
             [[nvmf.subsystem]]\nnqn = \"nqn.2024-11.dev.pollux:d0\"\n{extra}"
        )
    }

    #[test]
    fn full_subsystem_parses() {
        let c = parse(&sub(
            "serial = \"S1\"\nmodel = \"M\"\nnamespaces = [\"d0\"]\nallow_any_host = false\n\
             hosts = [\"nqn.2014-08.org.nvmexpress:uuid:1\"]\nlisten = [\"127.0.0.1:4421\"]\n",
        ))
        .unwrap();
        let s = &c.nvmf.subsystems[0];
        assert_eq!(s.serial, "S1");
        assert_eq!(s.model, "M");
        assert_eq!(s.namespaces, vec!["d0"]);
        assert!(!s.allow_any_host);
        assert_eq!(s.listen[0].port(), 4421);
    }

    #[test]
    fn defaults() {
        let c = parse(&sub("allow_any_host = true\n")).unwrap();
        let s = &c.nvmf.subsystems[0];
        assert_eq!(s.model, "Pollux");
        assert!(s.serial.starts_with("PLX") && s.serial.len() <= 20);
        assert_eq!(s.listen, vec!["127.0.0.1:4420".parse().unwrap()]);
    }

    #[test]
    fn errors_name_the_key() {
        let err = |extra: &str| parse(&sub(extra)).unwrap_err().to_string();
        assert!(
            err("allow_any_host = true\nnamespaces = [\"nope\"]\n").starts_with(
                "nvmf.subsystem[0] (\"nqn.2024-11.dev.pollux:d0\").namespaces[0]: no bdev"
            )
        );
        assert!(err("").contains(".hosts: no host may connect"));
        assert!(err("allow_any_host = true\nlisten = [\"x\"]\n").contains(".listen[0]:"));
        assert!(
            err("allow_any_host = true\nserial = \"123456789012345678901\"\n").contains(".serial:")
        );
        assert!(err("allow_any_host = true\nbogus = 1\n").contains("unknown key"));
        let e = parse("[[nvmf.subsystem]]\nnqn = \"bad\"\nallow_any_host = true\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("nvmf.subsystem[0] (\"bad\").nqn: "), "{e}");
    }
}
