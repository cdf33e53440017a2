//! The block graph: nodes (null, ram, file, passthru), the edges between
//! them and the named roots front-ends submit to, published as immutable
//! snapshots RCU-style so reactors read it with no lock and no shared write.
//!
//! Rooms: `node` (the trait), `io` and `buf` (requests and their data),
//! `snapshot` (one published version, and routing through it), `rcu` (the
//! publication protocol: load, publish, hand back after a grace period),
//! `graph` (the published graph and the control-plane operations), `pin`
//! (the per-node in-flight pins an I/O holds and the drain that waits for
//! them), `completion` (completions deferred to the next loop iteration),
//! `cell` (type erasure), `nodes` (the kinds), `uring` (the per-reactor
//! io_uring the file node uses), `latency` (the latency histograms and their
//! clock).
//!
//! Under `cfg(loom)` only the protocol rooms (`rcu`, `pin`, and `latency`
//! whose counters `pin` holds) are built, with loom's atomics, for the
//! models in their tests: the rest needs reactors, which loom cannot run.

// Under loom the callers of the protocol rooms' production-only parts
// (statistics, names, teardown) are not built.
#![cfg_attr(loom, allow(dead_code))]

#[cfg(not(loom))]
pub mod buf;
#[cfg(not(loom))]
mod cell;
#[cfg(not(loom))]
mod completion;
#[cfg(not(loom))]
mod graph;
#[cfg(not(loom))]
pub mod io;
pub mod latency;
#[cfg(not(loom))]
pub mod node;
#[cfg(not(loom))]
pub mod nodes;
mod pin;
mod rcu;
#[cfg(not(loom))]
mod snapshot;
#[cfg(not(loom))]
pub mod uring;

#[cfg(not(loom))]
pub use buf::{AlignedBuf, IoBuf, RawSegment};
#[cfg(not(loom))]
pub use graph::{Graph, GraphError, GraphInfo, GraphStats, NodeInfo, NodeStats, RootInfo};
#[cfg(not(loom))]
pub use io::{Io, IoError, IoOp, IoResult, IoSink};
pub use latency::LatencyHistogram;
#[cfg(not(loom))]
pub use node::{BlockNode, Geometry};
#[cfg(not(loom))]
pub use snapshot::{NodeId, RootId, Snapshot, SnapshotGuard};
