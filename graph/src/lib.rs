//! The block graph: nodes (null, ram, file, passthru), the edges between
//! them and the named roots front-ends submit to, published as immutable
//! snapshots RCU-style so reactors read it with no lock and no shared write.
//!
//! Rooms: `node` (the trait), `io` and `buf` (requests and their data),
//! `snapshot` (one published version, and routing through it), `graph`
//! (publication and the control-plane operations), `pin` (the per-node
//! in-flight pins an I/O holds until it completes), `completion`
//! (completions deferred to the next loop iteration), `cell` (type
//! erasure), `nodes` (the kinds), `uring` (the per-reactor io_uring the file
//! node uses), `latency` (the latency histograms and their clock).

pub mod buf;
mod cell;
mod completion;
mod graph;
pub mod io;
pub mod latency;
pub mod node;
pub mod nodes;
mod pin;
mod snapshot;
pub mod uring;

pub use buf::{AlignedBuf, IoBuf, RawSegment};
pub use graph::{Graph, GraphError, GraphInfo, GraphStats, NodeInfo, NodeStats, RootInfo};
pub use io::{Io, IoError, IoOp, IoResult, IoSink};
pub use latency::LatencyHistogram;
pub use node::{BlockNode, Geometry};
pub use snapshot::{NodeId, RootId, Snapshot, SnapshotGuard};
