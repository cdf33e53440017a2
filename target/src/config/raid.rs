//! `[[bdev]]` entries of kind `raid`: the keys are `bdev_raid_create`'s
//! params, so a TOML array and an RPC-made one are written alike:
//!
//! ```toml
//! [[bdev]]
//! name = "r0"
//! kind = "raid"
//! raid_level = "raid0"      # raid0 | raid1 | concat (or SPDK's 0, 1)
//! base_bdevs = ["d0", "d1"]
//! strip_size_kb = 64        # raid0 and concat only
//! ```

use std::collections::HashMap;

use pollux_graph::nodes::raid::Level;

use super::{BdevConfig, BdevKind, ConfigError};

/// The most members an array takes: SPDK's `RPC_MAX_BASE_BDEVS` (and its
/// `uint8_t` slot count).
pub const MAX_MEMBERS: usize = 255;

/// A RAID array's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaidConfig {
    /// raid0, raid1 or concat.
    pub level: Level,
    /// Strip size in KiB (a power of two; 0 for raid1).
    pub strip_size_kb: u32,
    /// Member bdevs in slot order; each exists, none twice.
    pub base_bdevs: Vec<String>,
}

/// The raw keys of a raid entry.
pub(super) struct RawRaid {
    pub(super) raid_level: Option<String>,
    pub(super) base_bdevs: Option<Vec<String>>,
    pub(super) strip_size_kb: Option<u32>,
}

/// Checks one entry's own keys (`field` turns a key into its full path).
pub(super) fn validate(
    raw: RawRaid,
    field: impl Fn(&str) -> String,
) -> Result<BdevKind, ConfigError> {
    let level = match raw.raid_level.as_deref() {
        None => {
            return Err(ConfigError::invalid(
                field("raid_level"),
                "missing (raid0, raid1 or concat)",
            ))
        }
        Some(s) => Level::parse(s).ok_or_else(|| {
            ConfigError::invalid(
                field("raid_level"),
                format!("{s:?} is not a RAID level Pollux builds (raid0, raid1 or concat)"),
            )
        })?,
    };
    let base_bdevs = raw.base_bdevs.ok_or_else(|| {
        ConfigError::invalid(field("base_bdevs"), "missing (a list of bdev names)")
    })?;
    if base_bdevs.len() < level.min_members() || base_bdevs.len() > MAX_MEMBERS {
        return Err(ConfigError::invalid(
            field("base_bdevs"),
            format!(
                "{} takes {} to {MAX_MEMBERS} base bdevs, got {}",
                level.name(),
                level.min_members(),
                base_bdevs.len()
            ),
        ));
    }
    for (i, b) in base_bdevs.iter().enumerate() {
        if b.trim().is_empty() {
            return Err(ConfigError::invalid(
                format!("{}[{i}]", field("base_bdevs")),
                "must not be empty",
            ));
        }
        if base_bdevs[..i].contains(b) {
            return Err(ConfigError::invalid(
                format!("{}[{i}]", field("base_bdevs")),
                format!("{b:?} is listed twice"),
            ));
        }
    }
    let strip_size_kb = match (level.has_strip(), raw.strip_size_kb) {
        (true, Some(z)) if z.is_power_of_two() => z,
        (true, Some(z)) => {
            return Err(ConfigError::invalid(
                field("strip_size_kb"),
                format!("{z} is not a power of two"),
            ))
        }
        (true, None) => {
            return Err(ConfigError::invalid(
                field("strip_size_kb"),
                format!("missing ({} stripes: e.g. 64)", level.name()),
            ))
        }
        (false, None | Some(0)) => 0,
        (false, Some(_)) => {
            return Err(ConfigError::invalid(
                field("strip_size_kb"),
                "not valid for raid1 (it does not stripe)",
            ))
        }
    };
    Ok(BdevKind::Raid(RaidConfig {
        level,
        strip_size_kb,
        base_bdevs,
    }))
}

/// The bdevs `b` stands on.
pub(super) fn children_of(b: &BdevConfig) -> Vec<&str> {
    match &b.kind {
        BdevKind::Raid(r) => r.base_bdevs.iter().map(String::as_str).collect(),
        k => k.child().into_iter().collect(),
    }
}

/// Checks every array's members: they exist, belong to one array only (an
/// array claims its members, as SPDK's raid module does) and no array
/// stands on itself through the bdevs below it.
pub(super) fn check_members(
    bdevs: &[BdevConfig],
    index_of: &HashMap<String, usize>,
) -> Result<(), ConfigError> {
    let mut owner: HashMap<&str, &str> = HashMap::new();
    for (i, b) in bdevs.iter().enumerate() {
        let BdevKind::Raid(r) = &b.kind else { continue };
        for (j, m) in r.base_bdevs.iter().enumerate() {
            let key = format!("{}.base_bdevs[{j}]", super::bdev_key(i, Some(&b.name)));
            if !index_of.contains_key(m) {
                return Err(ConfigError::invalid(key, format!("no bdev named {m:?}")));
            }
            if let Some(other) = owner.insert(m, &b.name) {
                return Err(ConfigError::invalid(
                    key,
                    format!("{m:?} is already a member of {other:?}"),
                ));
            }
        }
        // Depth-first walk below the array; the graph is small.
        let mut stack: Vec<Vec<&str>> = vec![vec![b.name.as_str()]];
        while let Some(path) = stack.pop() {
            let last = &bdevs[index_of[*path.last().expect("non-empty")]];
            for c in children_of(last) {
                let mut next = path.clone();
                next.push(c);
                if c == b.name {
                    return Err(ConfigError::invalid(
                        format!("{}.base_bdevs", super::bdev_key(i, Some(&b.name))),
                        format!("cycle: {}", next.join(" -> ")),
                    ));
                }
                if path.len() <= bdevs.len() && index_of.contains_key(c) {
                    stack.push(next);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testing::{err, parse};
    use super::*;

    const DISKS: &str = "[[bdev]]\nname = \"d0\"\nkind = \"ram\"\nsize = \"1MiB\"\n\
                         [[bdev]]\nname = \"d1\"\nkind = \"ram\"\nsize = \"1MiB\"\n";

    fn raid(extra: &str) -> String {
        format!("{DISKS}[[bdev]]\nname = \"r\"\nkind = \"raid\"\n{extra}")
    }

    #[test]
    fn arrays_parse_with_spdk_param_names() {
        let c = parse(&raid(
            "raid_level = \"raid0\"\nbase_bdevs = [\"d0\", \"d1\"]\nstrip_size_kb = 64\n",
        ))
        .unwrap();
        assert_eq!(
            c.bdevs[2].kind,
            BdevKind::Raid(RaidConfig {
                level: Level::Raid0,
                strip_size_kb: 64,
                base_bdevs: vec!["d0".into(), "d1".into()],
            })
        );
        let c = parse(&raid("raid_level = \"1\"\nbase_bdevs = [\"d1\", \"d0\"]\n")).unwrap();
        assert!(matches!(&c.bdevs[2].kind, BdevKind::Raid(r) if r.level == Level::Raid1));
        // An array can be exported and stacked on like any bdev.
        parse(&format!(
            "{}[[bdev]]\nname = \"p\"\nkind = \"passthru\"\nchild = \"r\"\n",
            raid("raid_level = \"concat\"\nbase_bdevs = [\"d0\"]\nstrip_size_kb = 4\n")
        ))
        .unwrap();
    }

    #[test]
    fn mistakes_name_their_key() {
        for (extra, want) in [
            (
                "base_bdevs = [\"d0\"]\n",
                r#"bdev[2] ("r").raid_level: missing"#,
            ),
            (
                "raid_level = \"raid5f\"\nbase_bdevs = [\"d0\"]\n",
                r#"bdev[2] ("r").raid_level: "raid5f" is not"#,
            ),
            (
                "raid_level = \"raid1\"\n",
                r#"bdev[2] ("r").base_bdevs: missing"#,
            ),
            (
                "raid_level = \"raid1\"\nbase_bdevs = [\"d0\"]\n",
                r#"bdev[2] ("r").base_bdevs: raid1 takes 2 to 255"#,
            ),
            (
                "raid_level = \"raid0\"\nbase_bdevs = [\"d0\", \"d1\"]\n",
                r#"bdev[2] ("r").strip_size_kb: missing"#,
            ),
            (
                "raid_level = \"raid0\"\nbase_bdevs = [\"d0\"]\nstrip_size_kb = 48\n",
                r#"bdev[2] ("r").strip_size_kb: 48 is not a power of two"#,
            ),
            (
                "raid_level = \"raid1\"\nbase_bdevs = [\"d0\", \"d1\"]\nstrip_size_kb = 64\n",
                r#"bdev[2] ("r").strip_size_kb: not valid for raid1"#,
            ),
            (
                "raid_level = \"raid1\"\nbase_bdevs = [\"d0\", \"d0\"]\n",
                r#"bdev[2] ("r").base_bdevs[1]: "d0" is listed twice"#,
            ),
            (
                "raid_level = \"raid1\"\nbase_bdevs = [\"d0\", \"nope\"]\n",
                r#"bdev[2] ("r").base_bdevs[1]: no bdev named "nope""#,
            ),
            (
                "raid_level = \"raid1\"\nbase_bdevs = [\"d0\", \"r\"]\n",
                r#"bdev[2] ("r").base_bdevs: cycle: r -> r"#,
            ),
            (
                "raid_level = \"raid1\"\nbase_bdevs = [\"d0\", \"d1\"]\nchild = \"d0\"\n",
                r#"bdev[2] ("r").child: not valid for kind raid"#,
            ),
        ] {
            let msg = err(&raid(extra));
            assert!(msg.starts_with(want), "{extra:?}: {msg}");
        }
        // Two arrays cannot share a member, and a cycle through a passthru
        // is found.
        let two = format!(
            "{}[[bdev]]\nname = \"s\"\nkind = \"raid\"\nraid_level = \"raid1\"\nbase_bdevs = [\"d1\", \"d0\"]\n",
            raid("raid_level = \"raid1\"\nbase_bdevs = [\"d0\", \"d1\"]\n")
        );
        let msg = err(&two);
        assert!(
            msg.starts_with(r#"bdev[3] ("s").base_bdevs[0]: "d1" is already a member of "r""#),
            "{msg}"
        );
        let via = format!(
            "{}[[bdev]]\nname = \"p\"\nkind = \"passthru\"\nchild = \"r\"\n",
            raid("raid_level = \"raid1\"\nbase_bdevs = [\"d0\", \"p\"]\n")
        );
        let msg = err(&via);
        assert!(msg.contains("cycle: r -> p -> r"), "{msg}");
    }
}
