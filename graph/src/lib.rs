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
//! `cell` (type erasure and the per-reactor channels), `filter` (the API
//! of filters that own their I/O: hold, forward, fan out, issue their
//! own), `gate` (the mirror's write gate), `range_lock` (LBA range locks
//! across reactors, for compare-and-write), `nodes` (the kinds), `uring`
//! (the per-reactor
//! io_uring the file node uses), `latency` (the latency histograms and their
//! clock), `throttle` (the shared rate budgets QoS filters draw from).
//!
//! Under `cfg(loom)` only the protocol rooms (`rcu`, `pin`, `throttle`,
//! the RAID rebuild fence, and `latency` whose counters `pin` holds) are
//! built, with loom's atomics, for the models in their tests: the rest
//! needs reactors, which loom cannot run.

// Under loom the callers of the protocol rooms' production-only parts
// (statistics, names, teardown) are not built.
#![cfg_attr(loom, allow(dead_code))]

// The protocol rooms, built everywhere.
mod gate;
pub mod latency;
mod pin;
mod rcu;
pub mod throttle;
// The RAID rebuild fence is a protocol room too; in ordinary builds it is
// `nodes::raid::rebuild`.
#[cfg(loom)]
#[path = "nodes/raid/rebuild.rs"]
mod raid_fence;

pub use latency::{LatencyHistogram, OpMask};

/// Declares the rooms that need reactors: they are left out under loom.
macro_rules! with_reactors {
    ($($item:item)*) => {
        $(#[cfg(not(loom))] $item)*
    };
}

with_reactors! {
    pub mod buf;
    mod cell;
    mod completion;
    pub mod filter;
    mod graph;
    pub mod io;
    mod range_lock;
    pub mod node;
    pub mod nodes;
    mod snapshot;
    pub mod uring;

    pub use buf::{AlignedBuf, IoBuf, RawSegment};
    pub use graph::{
        Graph, GraphError, GraphInfo, GraphStats, NodeInfo, NodeStats, RescanError, RootChange,
        RootInfo, WatchId,
    };
    pub use filter::{NodeLink, Parent};
    pub use io::{Io, IoError, IoOp, IoResult, IoSink};
    pub use range_lock::{LockDone, RangeLock};
    pub use node::{BlockNode, Geometry};
    pub use snapshot::{NodeId, RootId, Snapshot, SnapshotGuard};
}
