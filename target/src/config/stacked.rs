//! `[[bdev]]` kinds stacked on another bdev beyond passthru: `delay` and
//! `error`, with the settings of their SPDK create methods.

use super::{BdevKind, ConfigError};

/// The keys a `delay` bdev takes, `bdev_delay_create`'s names.
pub(super) const DELAY_KEYS: [&str; 5] = [
    "child",
    "avg_read_latency",
    "p99_read_latency",
    "avg_write_latency",
    "p99_write_latency",
];

/// A `delay` or `error` bdev called `name` on `child`; `us` are the delay's
/// latencies (`[avg_read, p99_read, avg_write, p99_write]`, µs, default 0).
pub(super) fn validate(
    kind: &str,
    name: &str,
    child: String,
    us: [Option<u64>; 4],
    field: &dyn Fn(&str) -> String,
) -> Result<BdevKind, ConfigError> {
    match kind {
        "error" => {
            // save_config rebuilds it with bdev_error_create, which names
            // it after its base.
            let want = format!("EE_{child}");
            if name != want {
                return Err(ConfigError::invalid(
                    field("name"),
                    format!("an error bdev on {child:?} is named {want:?}, as SPDK names it"),
                ));
            }
            Ok(BdevKind::Error { child })
        }
        _ => {
            let latencies_us = us.map(|v| v.unwrap_or(0));
            let [ar, pr, aw, pw] = latencies_us;
            if pr < ar {
                return Err(ConfigError::invalid(
                    field("p99_read_latency"),
                    format!("{pr} is below avg_read_latency {ar}"),
                ));
            }
            if pw < aw {
                return Err(ConfigError::invalid(
                    field("p99_write_latency"),
                    format!("{pw} is below avg_write_latency {aw}"),
                ));
            }
            Ok(BdevKind::Delay {
                child,
                latencies_us,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::testing;
    use crate::config::BdevKind;

    fn parse(text: &str) -> Result<Vec<(String, BdevKind)>, String> {
        testing::parse(text)
            .map(|c| c.bdevs.into_iter().map(|b| (b.name, b.kind)).collect())
            .map_err(|e| e.to_string())
    }

    const RAM: &str = "[[bdev]]\nname = \"ram0\"\nkind = \"ram\"\nsize = 4096\n";

    #[test]
    fn delay_and_error_bdevs() {
        let text = format!(
            "{RAM}[[bdev]]\nname = \"EE_ram0\"\nkind = \"error\"\nchild = \"ram0\"\n\
             [[bdev]]\nname = \"d0\"\nkind = \"delay\"\nchild = \"EE_ram0\"\n\
             avg_read_latency = 10\np99_read_latency = 100\n"
        );
        let b = parse(&text).unwrap();
        assert_eq!(
            b[1].1,
            BdevKind::Error {
                child: "ram0".into()
            }
        );
        assert_eq!(
            b[2].1,
            BdevKind::Delay {
                child: "EE_ram0".into(),
                latencies_us: [10, 100, 0, 0]
            }
        );
    }

    #[test]
    fn delay_and_error_refusals() {
        let e = parse(&format!(
            "{RAM}[[bdev]]\nname = \"e\"\nkind = \"error\"\nchild = \"ram0\"\n"
        ))
        .unwrap_err();
        assert!(e.contains("is named \"EE_ram0\""), "{e}");
        let e = parse(&format!(
            "{RAM}[[bdev]]\nname = \"d\"\nkind = \"delay\"\nchild = \"ram0\"\navg_write_latency = 5\n"
        ))
        .unwrap_err();
        assert!(
            e.contains("p99_write_latency: 0 is below avg_write_latency 5"),
            "{e}"
        );
        let e = parse(&format!(
            "{RAM}[[bdev]]\nname = \"EE_ram0\"\nkind = \"error\"\nchild = \"ram0\"\navg_read_latency = 1\n"
        ))
        .unwrap_err();
        assert!(e.contains("not valid for kind error"), "{e}");
        let e = parse("[[bdev]]\nname = \"d\"\nkind = \"delay\"\nchild = \"nope\"\n").unwrap_err();
        assert!(e.contains("no bdev named \"nope\""), "{e}");
    }
}
