//! `kind = "nvme"` bdevs: a controller over VFIO by PCI address.

use super::{BdevConfig, BdevKind, ConfigError};

/// Default `io_queue_depth`: SPDK's default I/O queue size.
const DEFAULT_IO_QUEUE_DEPTH: u16 = pollux_nvme_pci::DEFAULT_IO_QUEUE_DEPTH;
/// Smallest useful queue: one command in flight needs two entries.
const MIN_IO_QUEUE_DEPTH: u32 = 2;
/// The NVMe maximum (CAP.MQES is 16 bits, 0's based).
const MAX_IO_QUEUE_DEPTH: u32 = 65536;

pub(super) fn validate(
    field: &dyn Fn(&str) -> String,
    pci: Option<String>,
    depth: Option<u32>,
) -> Result<BdevKind, ConfigError> {
    let pci = match pci {
        Some(p) if pollux_nvme_pci::is_pci_address(&p) => p.to_ascii_lowercase(),
        Some(p) => {
            return Err(ConfigError::invalid(
                field("pci"),
                format!("{p:?} is not a PCI address (write it as 0000:00:02.0)"),
            ))
        }
        None => {
            return Err(ConfigError::invalid(
                field("pci"),
                "missing (the controller's PCI address, e.g. \"0000:00:02.0\")",
            ))
        }
    };
    let io_queue_depth = match depth {
        None => DEFAULT_IO_QUEUE_DEPTH,
        Some(d) if (MIN_IO_QUEUE_DEPTH..=MAX_IO_QUEUE_DEPTH).contains(&d) => {
            d.min(u16::MAX as u32) as u16
        }
        Some(d) => {
            return Err(ConfigError::invalid(
                field("io_queue_depth"),
                format!("{d} is outside {MIN_IO_QUEUE_DEPTH}..={MAX_IO_QUEUE_DEPTH}"),
            ))
        }
    };
    Ok(BdevKind::Nvme {
        pci,
        io_queue_depth,
    })
}

/// True if the config creates a bdev named `name`: one of its `[[bdev]]`
/// entries or split parts, or a namespace of one of its NVMe controllers.
pub(super) fn bdev_exists(bdevs: &[BdevConfig], name: &str) -> bool {
    bdevs
        .iter()
        .any(|b| b.name == name || super::split::parts(b).any(|p| p == name))
        || is_namespace_of(bdevs, name)
}

/// True if `name` is a namespace bdev (`{controller}n{nsid}`) of one of the
/// configured NVMe controllers: those exist only once the controller is
/// attached, so a passthru may name them.
pub(super) fn is_namespace_of(bdevs: &[BdevConfig], name: &str) -> bool {
    bdevs.iter().any(|b| {
        matches!(b.kind, BdevKind::Nvme { .. })
            && name
                .strip_prefix(b.name.as_str())
                .and_then(|rest| rest.strip_prefix('n'))
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()))
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{testing, BdevKind, Config};

    fn parse(text: &str) -> Result<Config, String> {
        testing::parse(text).map_err(|e| e.to_string())
    }

    #[test]
    fn nvme_bdev() {
        let c = parse(
            "[[bdev]]\nname = \"nvme0\"\nkind = \"nvme\"\npci = \"0000:00:02.0\"\n\
             io_queue_depth = 128\n\
             [[bdev]]\nname = \"pt\"\nkind = \"passthru\"\nchild = \"nvme0n1\"\n",
        )
        .unwrap();
        assert_eq!(
            c.bdevs[0].kind,
            BdevKind::Nvme {
                pci: "0000:00:02.0".into(),
                io_queue_depth: 128
            }
        );
        let c = parse("[[bdev]]\nname = \"n\"\nkind = \"nvme\"\npci = \"0000:AF:00.0\"\n").unwrap();
        assert_eq!(
            c.bdevs[0].kind,
            BdevKind::Nvme {
                pci: "0000:af:00.0".into(),
                io_queue_depth: 256
            }
        );
    }

    #[test]
    fn nvme_bdev_errors() {
        assert_eq!(
            parse("[[bdev]]\nname = \"n\"\nkind = \"nvme\"\n").unwrap_err(),
            r#"bdev[0] ("n").pci: missing (the controller's PCI address, e.g. "0000:00:02.0")"#
        );
        assert!(
            parse("[[bdev]]\nname = \"n\"\nkind = \"nvme\"\npci = \"00:02.0\"\n")
                .unwrap_err()
                .starts_with(r#"bdev[0] ("n").pci: "00:02.0" is not a PCI address"#)
        );
        assert!(parse(
            "[[bdev]]\nname = \"n\"\nkind = \"nvme\"\npci = \"0000:00:02.0\"\nio_queue_depth = 1\n"
        )
        .unwrap_err()
        .starts_with(r#"bdev[0] ("n").io_queue_depth: 1 is outside"#));
        assert!(parse(
            "[[bdev]]\nname = \"n\"\nkind = \"nvme\"\npci = \"0000:00:02.0\"\nsize = 4096\n"
        )
        .unwrap_err()
        .starts_with(r#"bdev[0] ("n").size: not valid for kind nvme"#));
        assert_eq!(
            parse(
                "[[bdev]]\nname = \"pt\"\nkind = \"passthru\"\nchild = \"nvme0n\"\n\
                   [[bdev]]\nname = \"nvme0\"\nkind = \"nvme\"\npci = \"0000:00:02.0\"\n"
            )
            .unwrap_err(),
            r#"bdev[0] ("pt").child: no bdev named "nvme0n""#
        );
    }
}
