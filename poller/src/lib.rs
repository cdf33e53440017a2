//! Pinned reactors: per-core run-to-completion poll loops that own their
//! queue pairs and backend channels, talk only through lock-free inboxes,
//! sleep (in `adaptive` mode) without losing a wakeup, and report quiescent
//! points so published data can be reclaimed RCU-style.
//!
//! Layout: `runtime` starts reactors and hands out a `Handle`; `reactor` is
//! the loop and the context callbacks receive; `wakeup` and `qsbr` are the
//! two lock-free protocols (model-checked with loom); `sync` is what they
//! and the graph's protocols are built on (std or loom atomics, and the
//! owner-only counter helper); `epoll` is the one safe epoll type, which
//! the reactor sleeps on and the front-ends register their sockets with;
//! `timer`, `stats` and `per_reactor` hold what their names say; `cpu`
//! validates core lists.

pub mod sync;

pub mod cpu;
#[cfg(not(loom))]
mod epoll;
// Public only to the loom models of the graph crate, which drive the real
// grace period without a runtime; production code uses `Handle::synchronize`.
#[cfg(loom)]
pub mod qsbr;
#[cfg(not(loom))]
pub(crate) mod qsbr;
// Under loom only its own models use it (the graph's models need only qsbr).
#[cfg(any(not(loom), test))]
pub(crate) mod wakeup;

#[cfg(not(loom))]
mod per_reactor;
#[cfg(not(loom))]
mod reactor;
#[cfg(not(loom))]
mod runtime;
#[cfg(not(loom))]
mod stats;
#[cfg(not(loom))]
mod timer;

#[cfg(not(loom))]
pub use epoll::{Epoll, Event, EventBuf, Events};
#[cfg(not(loom))]
pub use per_reactor::PerReactor;
#[cfg(not(loom))]
pub use reactor::{PollStatus, Poller, PollerId, Reactor};
#[cfg(not(loom))]
pub use runtime::{
    Handle, IdlePolicy, InboxFull, ReactorInfo, Runtime, RuntimeConfig, StartError,
    DEFAULT_INBOX_CAPACITY,
};
#[cfg(not(loom))]
pub use stats::StatsSnapshot;
#[cfg(not(loom))]
pub use timer::TimerId;
