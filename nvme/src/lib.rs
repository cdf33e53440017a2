//! NVMe base types and the NVMe/TCP PDU codec.
//!
//! The codec is pure data: no sockets, no threads, no allocation on the
//! decode path; only `host` opens sockets. The
//! same types serve the controller (target) side and the host (initiator)
//! side, so every structure can be both built and parsed.
//!
//! Layout:
//! - [`sqe`], [`cqe`], [`status`]: queue entries, SGL descriptors, status codes.
//! - [`opcode`], [`io`]: admin / NVM opcodes and I/O command fields.
//! - [`fabrics`]: Fabrics commands (Connect, Property Get/Set), Connect data,
//!   controller properties (CAP, VS, CC, CSTS).
//! - [`identify`], [`log_page`], [`features`]: admin data structures.
//! - [`tcp`]: NVMe/TCP PDUs, the incremental decoder and CRC32C digests.
//! - [`host`]: an NVMe/TCP initiator over std sockets, for tests and the
//!   `pollux perf nvmf` load generator.
//!
//! Offsets follow NVMe Base 2.0, NVMe over Fabrics 1.1 and NVMe/TCP Transport
//! 1.0, cross-checked against Linux `include/linux/nvme.h`,
//! `include/linux/nvme-tcp.h` and SPDK `nvme_spec.h` / `nvmf_spec.h`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[macro_use]
mod macros;
mod bytes;

pub mod ana;
pub mod auth;
pub mod cqe;
pub mod error;
pub mod fabrics;
pub mod features;
pub mod host;
pub mod identify;
pub mod io;
pub mod log_page;
pub mod opcode;
pub mod reservation;
pub mod sqe;
pub mod status;
pub mod tcp;

#[doc(hidden)]
pub mod fuzzing;

pub use cqe::Cqe;
pub use error::ParseError;
pub use sqe::{Fuse, Psdt, Sgl, Sqe};
pub use status::{Sct, Status};
