//! `[[mirror]]`: mirror jobs started with the daemon, the TOML form of
//! `pollux_mirror_start`. Completing one (the pivot) stays an RPC,
//! `pollux_job_complete`, as with QEMU's `blockdev-mirror`: the pivot is
//! the operator's decision, once the job reports `ready`.
//!
//! ```toml
//! [[mirror]]
//! job = "move-disk0"        # the job's name in pollux_job_list
//! source = "disk0"          # the live node whose exports move on complete
//! target = "disk1"          # at least as large as the source
//! granularity = 65536       # optional: bytes per dirty bit, a power of two
//! ```

use serde::Deserialize;

use super::{BdevConfig, ConfigError};
use crate::jobs::{MIRROR_MAX_GRANULARITY, MIRROR_MIN_GRANULARITY};

/// One `[[mirror]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorConfig {
    /// The job's name.
    pub job: String,
    /// The bdev copied; one of the config's.
    pub source: String,
    /// The bdev copied to; one of the config's.
    pub target: String,
    /// Bytes per dirty bit; the job's default when absent.
    pub granularity: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [[mirror]] table")]
pub(super) struct RawMirror {
    job: Option<String>,
    source: Option<String>,
    target: Option<String>,
    granularity: Option<u64>,
}

pub(super) fn validate_mirrors(
    raw: Vec<RawMirror>,
    bdevs: &[BdevConfig],
) -> Result<Vec<MirrorConfig>, ConfigError> {
    let mut out: Vec<MirrorConfig> = Vec::new();
    for (i, m) in raw.into_iter().enumerate() {
        let key = format!("mirror[{i}]");
        let job = match m.job {
            Some(j) if !j.is_empty() => j,
            _ => return Err(ConfigError::invalid(format!("{key}.job"), "missing")),
        };
        if out.iter().any(|o| o.job == job) {
            return Err(ConfigError::invalid(
                format!("{key}.job"),
                format!("{job:?} is already a [[mirror]] job"),
            ));
        }
        let node = |field: &str, v: Option<String>| -> Result<String, ConfigError> {
            let k = format!("{key}.{field}");
            let n = v.ok_or_else(|| ConfigError::invalid(&k, "missing"))?;
            if !bdevs.iter().any(|b| b.name == n) {
                return Err(ConfigError::invalid(
                    k,
                    format!("{n:?} is not a [[bdev]] of this config"),
                ));
            }
            // As pollux_mirror_start: a node is in one job at a time.
            if out.iter().any(|o| o.source == n || o.target == n) {
                return Err(ConfigError::invalid(
                    k,
                    format!("{n:?} is already in another [[mirror]] job"),
                ));
            }
            Ok(n)
        };
        let source = node("source", m.source)?;
        let target = node("target", m.target)?;
        if source == target {
            return Err(ConfigError::invalid(
                format!("{key}.target"),
                "is the source; a mirror copies to another bdev",
            ));
        }
        if let Some(g) = m.granularity {
            if !g.is_power_of_two()
                || !(MIRROR_MIN_GRANULARITY..=MIRROR_MAX_GRANULARITY).contains(&g)
            {
                return Err(ConfigError::invalid(
                    format!("{key}.granularity"),
                    format!(
                        "{g} is not a power of two from {MIRROR_MIN_GRANULARITY} to \
                         {MIRROR_MAX_GRANULARITY} (and at least the source's block size)"
                    ),
                ));
            }
        }
        out.push(MirrorConfig {
            job,
            source,
            target,
            granularity: m.granularity,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{err, parse};

    const BDEVS: &str = "[[bdev]]\nname = \"a\"\nkind = \"ram\"\nsize = 1048576\n\
                         [[bdev]]\nname = \"b\"\nkind = \"ram\"\nsize = 1048576\n\
                         [[bdev]]\nname = \"c\"\nkind = \"ram\"\nsize = 1048576\n";

    #[test]
    fn mirrors_parse_in_file_order() {
        let c = parse(&format!(
            "{BDEVS}[[mirror]]\njob = \"m\"\nsource = \"a\"\ntarget = \"b\"\n\
             granularity = 131072\n"
        ))
        .unwrap();
        assert_eq!(c.mirrors.len(), 1);
        let m = &c.mirrors[0];
        assert_eq!((m.job.as_str(), m.source.as_str()), ("m", "a"));
        assert_eq!((m.target.as_str(), m.granularity), ("b", Some(131072)));
        assert!(parse(BDEVS).unwrap().mirrors.is_empty());
    }

    #[test]
    fn bad_mirror_entries_are_named() {
        let e = |body: &str| err(&format!("{BDEVS}[[mirror]]\n{body}"));
        assert!(e("source = \"a\"\ntarget = \"b\"\n").contains("mirror[0].job"));
        let x = e("job = \"m\"\nsource = \"x\"\ntarget = \"b\"\n");
        assert!(
            x.contains("mirror[0].source") && x.contains("not a [[bdev]]"),
            "{x}"
        );
        let x = e("job = \"m\"\nsource = \"a\"\n");
        assert!(
            x.contains("mirror[0].target") && x.contains("missing"),
            "{x}"
        );
        let x = e("job = \"m\"\nsource = \"a\"\ntarget = \"a\"\n");
        assert!(x.contains("mirror[0].target"), "{x}");
        let x = e("job = \"m\"\nsource = \"a\"\ntarget = \"b\"\ngranularity = 1000\n");
        assert!(x.contains("mirror[0].granularity"), "{x}");
        let x = e("job = \"m\"\nsource = \"a\"\ntarget = \"b\"\nspeed = 1\n");
        assert!(x.contains("speed"), "{x}");
        let two = |j2: &str, s2: &str, t2: &str| {
            err(&format!(
                "{BDEVS}[[mirror]]\njob = \"m\"\nsource = \"a\"\ntarget = \"b\"\n\
                 [[mirror]]\njob = \"{j2}\"\nsource = \"{s2}\"\ntarget = \"{t2}\"\n"
            ))
        };
        assert!(two("m", "c", "b").contains("mirror[1].job"));
        assert!(two("n", "b", "c").contains("mirror[1].source"));
        assert!(two("n", "c", "a").contains("mirror[1].target"));
    }
}
