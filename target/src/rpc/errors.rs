//! The one place that turns the libraries' errors into JSON-RPC answers,
//! with the codes SPDK's methods send for the same failure:
//!
//! - bdev creation and deletion (`module/bdev/*/…_rpc.c`, `lib/bdev/bdev_rpc.c`)
//!   answer with the negated errno of the failure,
//!   `spdk_jsonrpc_send_error_response(request, rc, spdk_strerror(-rc))`:
//!   -17 for a name that is taken, -19 for no such bdev, -16 for a bdev in use;
//! - vhost (`lib/vhost/vhost_rpc.c`) answers every failure with -32602 and
//!   the errno's text;
//! - NVMe-oF (`lib/nvmf/nvmf_rpc.c`) answers -32602 for anything the caller
//!   named wrongly and -32603 for failures of the target itself.
//!
//! SPDK's message is only `strerror`; Pollux keeps it as the message's
//! first words (tools match on "No such device") and adds what it knows.

use pollux_graph::nodes::file::FileError;
use pollux_graph::GraphError;

use super::jsonrpc::{code, RpcError};
use crate::bdev::BdevError;
use crate::nvmf::NvmfError;
use crate::qos::QosError;
use crate::vhost::ControlError;

/// The negated errnos SPDK's bdev methods answer with.
pub mod errno {
    /// `-EBUSY`: the bdev is still used by something stacked on it.
    pub const EBUSY: i32 = -libc::EBUSY;
    /// `-EEXIST`: the name is taken.
    pub const EEXIST: i32 = -libc::EEXIST;
    /// `-ENODEV`: no such bdev.
    pub const ENODEV: i32 = -libc::ENODEV;
    /// `-ENOMEM`: a RAM disk could not be allocated.
    pub const ENOMEM: i32 = -libc::ENOMEM;
    /// `-EINVAL`: what was asked cannot be built (a file's geometry).
    pub const EINVAL: i32 = -libc::EINVAL;
    /// `-EIO`: an I/O error without an OS errno.
    pub const EIO: i32 = -libc::EIO;
}

impl RpcError {
    /// An answer with the negated errno `code`, its text first (as SPDK's
    /// `spdk_strerror(-rc)`) and then `detail`.
    pub fn errno(code: i32, detail: impl std::fmt::Display) -> Self {
        let text = std::io::Error::from_raw_os_error(-code).to_string();
        // io::Error's text is "No such device (os error 19)": SPDK's is
        // only the part before the number.
        let text = text.split(" (os error").next().unwrap_or(&text);
        RpcError {
            code,
            message: format!("{text}: {detail}"),
        }
    }

    /// -19 for a bdev that does not exist.
    pub fn no_such_bdev(name: &str) -> Self {
        RpcError::errno(errno::ENODEV, format!("no bdev named {name:?}"))
    }
}

/// A graph change refused, as the bdev and graph methods answer it.
impl From<GraphError> for RpcError {
    fn from(e: GraphError) -> Self {
        match e {
            GraphError::NameExists(_) | GraphError::RootExists(_) => {
                RpcError::errno(errno::EEXIST, e)
            }
            GraphError::NoSuchNode(_) | GraphError::NoSuchRoot(_) => {
                RpcError::errno(errno::ENODEV, e)
            }
            GraphError::InUse { .. }
            | GraphError::ShrinkInFlight { .. }
            | GraphError::ResizeRefused { .. } => RpcError::errno(errno::EBUSY, e),
            GraphError::NotResizable(_) | GraphError::ZeroSize(_) => {
                RpcError::errno(errno::EINVAL, e)
            }
            // The caller asked for a shape the graph cannot take.
            GraphError::Children { .. }
            | GraphError::Cycle { .. }
            | GraphError::TooDeep
            | GraphError::NotAChild { .. }
            | GraphError::Geometry { .. }
            | GraphError::BadChildren { .. }
            | GraphError::NotAFilter(_)
            | GraphError::EmptyName => RpcError::invalid_params(e.to_string()),
        }
    }
}

/// A bdev that could not be built, as SPDK's `bdev_*_create` answers it.
impl From<BdevError> for RpcError {
    fn from(e: BdevError) -> Self {
        match e {
            BdevError::Graph(g) => g.into(),
            BdevError::Alloc { .. } => RpcError::errno(errno::ENOMEM, e),
            BdevError::NoSuchBase { .. } => RpcError::errno(errno::ENODEV, e),
            BdevError::Split { .. } => RpcError::errno(errno::EINVAL, e),
            BdevError::Nvme(e) => e.into(),
            BdevError::Raid { source, .. } => source.into(),
            BdevError::File { ref source, .. } => {
                let code = match source {
                    // The OS's own answer, as bdev_aio_create passes on
                    // open(2)'s errno.
                    FileError::Io { source, .. } => {
                        source.raw_os_error().map_or(errno::EIO, |n| -n)
                    }
                    // Every other refusal is about what the path is or the
                    // block size asked for.
                    _ => errno::EINVAL,
                };
                RpcError::errno(code, e)
            }
        }
    }
}

/// A rate limit refused, with the codes of SPDK's `bdev_set_qos_limit`
/// (-19 for a bdev it cannot open, -22 "No rate limits specified") and
/// the bdev methods' codes for the throttle groups.
impl From<QosError> for RpcError {
    fn from(e: QosError) -> Self {
        match e {
            QosError::Graph(g) => g.into(),
            QosError::NoLimits => RpcError {
                code: errno::EINVAL,
                message: e.to_string(),
            },
            QosError::NoSuchBdev(_) | QosError::NoSuchGroup(_) => RpcError::errno(errno::ENODEV, e),
            QosError::GroupExists(_) => RpcError::errno(errno::EEXIST, e),
            QosError::GroupInUse(..) => RpcError::errno(errno::EBUSY, e),
            QosError::EmptyName => RpcError::invalid_params(e.to_string()),
        }
    }
}

/// A vhost controller change refused: -32602, as every failure of SPDK's
/// `vhost_*` methods (`SPDK_JSONRPC_ERROR_INVALID_PARAMS, spdk_strerror(-rc)`).
impl From<ControlError> for RpcError {
    fn from(e: ControlError) -> Self {
        RpcError::invalid_params(e.to_string())
    }
}

/// An NVMe-oF target change refused, prefixed with the param at fault:
/// -32602 for anything the caller named wrongly, -32603 for the target's
/// own failures (stopping, no thread) and, as SPDK's `nvmf_rpc.c` answers
/// them with SPDK_JSONRPC_ERROR_INTERNAL_ERROR, for creating a subsystem or
/// a transport that already exists.
pub fn nvmf(param: &str, e: NvmfError) -> RpcError {
    match e {
        NvmfError::NoSuchSubsystem(_) => RpcError::invalid_params(format!("nqn: {e}")),
        NvmfError::SubsystemExists(_) | NvmfError::TransportExists => RpcError {
            code: code::INTERNAL_ERROR,
            message: format!("{param}: {e}"),
        },
        // The bound's own message names the option.
        NvmfError::Opts(o) => RpcError::invalid_params(o.to_string()),
        NvmfError::Stopping | NvmfError::Thread(_) => RpcError {
            code: code::INTERNAL_ERROR,
            message: e.to_string(),
        },
        NvmfError::Bind { .. }
        | NvmfError::Subsystem(_)
        | NvmfError::ListenerExists { .. }
        | NvmfError::NoSuchListener { .. }
        | NvmfError::HostExists { .. }
        | NvmfError::NoSuchHost { .. } => RpcError::invalid_params(format!("{param}: {e}")),
    }
}

/// An NVMe controller attach or detach refused, with the negated errno
/// SPDK's `bdev_nvme_rpc.c` answers: -17 for a name or device already
/// attached, -19 for a missing controller or a device that cannot be
/// opened, -22 for a controller that misbehaves, -16 for a bdev in use.
impl From<crate::nvme_bdev::NvmeBdevError> for RpcError {
    fn from(e: crate::nvme_bdev::NvmeBdevError) -> Self {
        use crate::nvme_bdev::NvmeBdevError as E;
        use pollux_nvme_pci::AttachError as A;
        match e {
            E::Graph(g) => g.into(),
            E::NameExists(_) | E::AlreadyAttached { .. } => RpcError::errno(errno::EEXIST, e),
            E::NoSuchController(_) => RpcError::errno(errno::ENODEV, e),
            E::Attach(ref a) => {
                let code = match a {
                    A::BadAddress { .. } | A::Controller { .. } => errno::EINVAL,
                    A::NotReady { .. } => errno::EIO,
                    _ => errno::ENODEV,
                };
                RpcError::errno(code, e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::path::PathBuf;

    use super::*;

    fn graph(e: GraphError) -> RpcError {
        e.into()
    }

    #[test]
    fn graph_errors_get_spdk_bdev_codes() {
        let e = graph(GraphError::NameExists("a".into()));
        assert_eq!(e.code, -17);
        assert_eq!(e.message, "File exists: a node named \"a\" already exists");
        assert_eq!(graph(GraphError::RootExists("a".into())).code, -17);
        let e = graph(GraphError::NoSuchNode("a".into()));
        assert_eq!(e.code, -19);
        assert!(e.message.starts_with("No such device: "), "{}", e.message);
        assert_eq!(graph(GraphError::NoSuchRoot("a".into())).code, -19);
        let busy = GraphError::InUse {
            name: "a".into(),
            users: "b".into(),
        };
        let e = graph(busy);
        assert_eq!(e.code, -16);
        assert!(
            e.message.starts_with("Device or resource busy: "),
            "{}",
            e.message
        );
        for shape in [
            GraphError::TooDeep,
            GraphError::EmptyName,
            GraphError::NotAFilter("a".into()),
            GraphError::Cycle {
                parent: "a".into(),
                child: "b".into(),
            },
            GraphError::NotAChild {
                parent: "a".into(),
                child: "b".into(),
            },
            GraphError::Children {
                name: "a".into(),
                kind: "passthru",
                expected: 1,
                got: 0,
            },
        ] {
            let text = shape.to_string();
            let e = graph(shape);
            assert_eq!(e.code, code::INVALID_PARAMS, "{text}");
            assert_eq!(e.message, text);
        }
    }

    #[test]
    fn bdev_errors_get_spdk_create_codes() {
        let e: RpcError = BdevError::Graph(GraphError::NameExists("a".into())).into();
        assert_eq!(e.code, errno::EEXIST);
        let e: RpcError = BdevError::NoSuchBase {
            name: "p".into(),
            child: "b".into(),
        }
        .into();
        assert_eq!(e.code, errno::ENODEV);
        assert!(e.message.contains("\"b\""), "{}", e.message);
        let e: RpcError = BdevError::Alloc {
            name: "r".into(),
            size: 1 << 40,
            source: io::Error::other("too big"),
        }
        .into();
        assert_eq!(e.code, errno::ENOMEM);
        assert!(
            e.message.starts_with("Cannot allocate memory: "),
            "{}",
            e.message
        );
        let missing = BdevError::File {
            name: "f".into(),
            source: FileError::Io {
                path: PathBuf::from("/nonexistent"),
                source: io::Error::from_raw_os_error(libc::ENOENT),
            },
        };
        assert_eq!(RpcError::from(missing).code, -libc::ENOENT);
        let no_errno = BdevError::File {
            name: "f".into(),
            source: FileError::Io {
                path: PathBuf::from("/x"),
                source: io::Error::other("short read"),
            },
        };
        assert_eq!(RpcError::from(no_errno).code, errno::EIO);
        let not_a_file = BdevError::File {
            name: "f".into(),
            source: FileError::NotFileOrDevice {
                path: PathBuf::from("/dev/null"),
            },
        };
        assert_eq!(RpcError::from(not_a_file).code, errno::EINVAL);
    }

    #[test]
    fn no_such_bdev_reads_as_spdk_strerror() {
        let e = RpcError::no_such_bdev("Malloc9");
        assert_eq!(e.code, -19);
        assert_eq!(e.message, "No such device: no bdev named \"Malloc9\"");
    }

    #[test]
    fn vhost_errors_are_invalid_params() {
        for e in [
            ControlError::Exists("vb0".into()),
            ControlError::NoSuchController("vb0".into()),
            ControlError::Busy("vb0".into()),
            ControlError::Bdev("no bdev named \"x\"".into()),
        ] {
            let text = e.to_string();
            let r = RpcError::from(e);
            assert_eq!(r.code, code::INVALID_PARAMS);
            assert_eq!(r.message, text);
        }
    }

    #[test]
    fn nvmf_errors_name_the_param() {
        let e = nvmf("host", NvmfError::NoSuchSubsystem("nqn.x".into()));
        assert_eq!(e.code, code::INVALID_PARAMS);
        assert!(e.message.starts_with("nqn: "), "{}", e.message);
        let e = nvmf(
            "host",
            NvmfError::NoSuchHost {
                nqn: "nqn.x".into(),
                host: "nqn.h".into(),
            },
        );
        assert_eq!(e.code, code::INVALID_PARAMS);
        assert!(e.message.starts_with("host: "), "{}", e.message);
        let e = nvmf("trtype", NvmfError::TransportExists);
        assert_eq!(e.code, code::INTERNAL_ERROR);
        assert!(e.message.starts_with("trtype: "), "{}", e.message);
        let e = nvmf("nqn", NvmfError::SubsystemExists("nqn.x".into()));
        assert_eq!(e.code, code::INTERNAL_ERROR);
        assert!(e.message.starts_with("nqn: "), "{}", e.message);
        assert_eq!(nvmf("nqn", NvmfError::Stopping).code, code::INTERNAL_ERROR);
    }
}
