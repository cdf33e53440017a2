//! The Pollux storage target as a library: the `pollux` binary
//! (`src/main.rs`) parses the command line and calls into it, and the fuzz
//! targets and tests use it directly.
//!
//! Rooms, by what they hold:
//! - `config`: the TOML format, checked key by key;
//! - `bdev`: building the configured bdevs into the block graph;
//! - `daemon`: the long-running process (reactors, graph, front-ends,
//!   signals, drain on exit);
//! - `nvmf`: the NVMe/TCP target front-end;
//! - `vhost`: the vhost-user-blk front-end;
//! - `rpc`: SPDK-compatible JSON-RPC (server, method table, error mapping);
//! - `logging`: the log filter the log RPCs change at run time;
//! - `exporter`: the Prometheus endpoint fed by reactors, graph and
//!   front-ends;
//! - `perf`, `perf_nvmf`: the `pollux perf` load generators.

pub mod bdev;
pub mod config;
pub mod daemon;
pub mod exporter;
pub mod jobs;
pub mod keyring;
pub mod logging;
pub mod nvme_bdev;
pub mod nvmf;
pub mod perf;
pub mod perf_nvmf;
pub mod qos;
pub mod rpc;
#[cfg(test)]
mod testing;
pub mod vhost;
