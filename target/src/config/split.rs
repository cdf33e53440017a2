//! `[[bdev]]` entries of kind `split`: `bdev_split_create`'s params, and
//! like it one entry makes every part, named `<base_bdev>p<i>` as SPDK
//! names them (so the entry takes no `name`):
//!
//! ```toml
//! [[bdev]]
//! kind = "split"
//! base_bdev = "d0"
//! split_count = 4
//! split_size_mb = 64   # optional: without it, an equal share of the base
//! ```
//!
//! The parts' size comes from the base's at start-up, so the config can
//! check only names: any part up to `split_count` may be used by an export
//! or another bdev; one the base turns out too small for is refused when
//! the bdevs are built.

use pollux_graph::nodes::split::{SplitError, MAX_PARTS};

use super::{BdevConfig, BdevKind, ConfigError};

/// The keys a `split` entry takes.
pub(super) const KEYS: [&str; 3] = ["base_bdev", "split_count", "split_size_mb"];

/// The raw keys of a split entry.
pub(super) struct RawSplit {
    pub(super) name: Option<String>,
    pub(super) base_bdev: Option<String>,
    pub(super) split_count: Option<u64>,
    pub(super) split_size_mb: Option<u64>,
}

/// Part `i` of `base`.
pub fn part_name(base: &str, i: u64) -> String {
    format!("{base}p{i}")
}

/// The name the entry goes by in the config (for duplicates and error
/// messages): its first part's.
pub(super) fn entry_name(i: usize, raw: &RawSplit) -> Result<String, ConfigError> {
    let base = match raw.base_bdev.as_deref() {
        None => {
            return Err(ConfigError::invalid(
                format!("bdev[{i}].base_bdev"),
                "missing (name the bdev to split)",
            ))
        }
        Some(b) if b.trim().is_empty() => {
            return Err(ConfigError::invalid(
                format!("bdev[{i}].base_bdev"),
                "must not be empty",
            ))
        }
        Some(b) => b,
    };
    if raw.name.is_some() {
        return Err(ConfigError::invalid(
            format!("bdev[{i}].name"),
            format!(
                "not valid for kind split (its parts are named {:?}, {:?}, ..., as SPDK names them)",
                part_name(base, 0),
                part_name(base, 1)
            ),
        ));
    }
    Ok(part_name(base, 0))
}

/// Checks one entry's own keys (`field` turns a key into its full path).
pub(super) fn validate(
    raw: RawSplit,
    field: impl Fn(&str) -> String,
) -> Result<BdevKind, ConfigError> {
    let base_bdev = raw.base_bdev.expect("checked by entry_name");
    let split_count = match raw.split_count {
        None => {
            return Err(ConfigError::invalid(
                field("split_count"),
                "missing (how many parts)",
            ))
        }
        Some(0) => {
            return Err(ConfigError::invalid(
                field("split_count"),
                SplitError::ZeroCount.to_string(),
            ))
        }
        Some(n) if n > MAX_PARTS => {
            return Err(ConfigError::invalid(
                field("split_count"),
                SplitError::TooMany(n).to_string(),
            ))
        }
        Some(n) => n,
    };
    Ok(BdevKind::Split {
        base_bdev,
        split_count,
        split_size_mb: raw.split_size_mb.unwrap_or(0),
    })
}

/// The names of the parts `b` makes, if it is a split.
pub(super) fn parts(b: &BdevConfig) -> impl Iterator<Item = String> + '_ {
    let (base, count) = match &b.kind {
        BdevKind::Split {
            base_bdev,
            split_count,
            ..
        } => (base_bdev.as_str(), *split_count),
        _ => ("", 0),
    };
    (0..count).map(move |i| part_name(base, i))
}

#[cfg(test)]
mod tests {
    use crate::config::{testing, BdevKind};

    const RAM: &str = "[[bdev]]\nname = \"d0\"\nkind = \"ram\"\nsize = \"64MiB\"\n";

    fn split(extra: &str) -> String {
        format!("{RAM}[[bdev]]\nkind = \"split\"\nbase_bdev = \"d0\"\n{extra}")
    }

    #[test]
    fn split_entry_makes_named_parts() {
        let text = split("split_count = 4\nsplit_size_mb = 8\n")
            + "[[bdev]]\nname = \"pt\"\nkind = \"passthru\"\nchild = \"d0p3\"\n\
               [[nvmf.subsystem]]\nnqn = \"nqn.2016-06.io.spdk:p1\"\nnamespaces = [\"d0p1\"]\nallow_any_host = true\n";
        let c = testing::parse(&text).unwrap();
        assert_eq!(c.bdevs[1].name, "d0p0");
        assert_eq!(
            c.bdevs[1].kind,
            BdevKind::Split {
                base_bdev: "d0".into(),
                split_count: 4,
                split_size_mb: 8
            }
        );
        let c = testing::parse(&split("split_count = 2\n")).unwrap();
        assert!(matches!(
            c.bdevs[1].kind,
            BdevKind::Split {
                split_size_mb: 0,
                ..
            }
        ));
    }

    #[test]
    fn split_refusals() {
        let e = testing::err(&split("name = \"x\"\nsplit_count = 2\n"));
        assert!(e.contains("bdev[1].name: not valid for kind split"), "{e}");
        assert!(e.contains("\"d0p0\", \"d0p1\""), "{e}");
        let e = testing::err(&split(""));
        assert!(e.contains("split_count: missing"), "{e}");
        let e = testing::err(&split("split_count = 0\n"));
        assert!(e.contains("split_count can't be 0"), "{e}");
        let e = testing::err(&split("split_count = 100000\n"));
        assert!(e.contains("above the 1024 parts"), "{e}");
        let e = testing::err(&split("split_count = 2\nchild = \"d0\"\n"));
        assert!(e.contains("child: not valid for kind split"), "{e}");
        let e = testing::err("[[bdev]]\nkind = \"split\"\nsplit_count = 2\n");
        assert!(e.contains("bdev[0].base_bdev: missing"), "{e}");
        let e = testing::err("[[bdev]]\nkind = \"split\"\nbase_bdev = \"no\"\nsplit_count = 2\n");
        assert!(e.contains("no bdev named \"no\""), "{e}");
        // A part beyond split_count does not exist.
        let e = testing::err(
            &(split("split_count = 2\n")
                + "[[bdev]]\nname = \"pt\"\nkind = \"passthru\"\nchild = \"d0p2\"\n"),
        );
        assert!(e.contains("no bdev named \"d0p2\""), "{e}");
        // Two splits of one base, or a bdev named like a part.
        let e =
            testing::err(&(split("split_count = 2\n") + &split("split_count = 3\n")[RAM.len()..]));
        assert!(e.contains("duplicate bdev name \"d0p0\""), "{e}");
        let e = testing::err(
            &(split("split_count = 2\n")
                + "[[bdev]]\nname = \"d0p1\"\nkind = \"ram\"\nsize = 4096\n"),
        );
        assert!(e.contains("duplicate bdev name \"d0p1\""), "{e}");
        // An array over a part of a split of itself.
        let e = testing::err(
            "[[bdev]]\nname = \"r\"\nkind = \"raid\"\nraid_level = \"concat\"\n\
             strip_size_kb = 64\nbase_bdevs = [\"rp1\"]\n\
             [[bdev]]\nkind = \"split\"\nbase_bdev = \"r\"\nsplit_count = 2\n",
        );
        assert!(e.contains("cycle: r -> rp1 -> r"), "{e}");
    }

    #[test]
    fn parts_take_qos_limits() {
        let text = split("split_count = 2\n") + "[[qos]]\nbdev = \"d0p1\"\nrw_ios_per_sec = 1000\n";
        testing::parse(&text).unwrap();
    }
}
