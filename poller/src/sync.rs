//! Atomics and cells that `loom` can model.
//!
//! The lock-free protocols of this crate (the sleep/wakeup handshake and the
//! quiescent-state grace period) are compiled against these names so that the
//! very same code runs under `RUSTFLAGS="--cfg loom"` in the model tests.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
