//! Atomics, locks and the owner-only counter helper, in the versions `loom`
//! can model.
//!
//! The lock-free protocols of this crate (the sleep/wakeup handshake and the
//! quiescent-state grace period) and of `pollux-graph` (snapshot publication
//! and the per-node in-flight pins) are compiled against these names, so the
//! very same code runs under `RUSTFLAGS="--cfg loom"` in the model tests.
//! Outside loom they are the `std` types themselves, at no cost.

#[cfg(loom)]
pub use loom::sync::atomic::{fence, AtomicBool, AtomicPtr, AtomicU64, Ordering};
#[cfg(loom)]
pub use loom::sync::{Arc, Mutex, MutexGuard};

#[cfg(not(loom))]
pub use std::sync::atomic::{fence, AtomicBool, AtomicPtr, AtomicU64, Ordering};
#[cfg(not(loom))]
pub use std::sync::{Arc, Mutex, MutexGuard};

/// Adds `by` (wrapping) to a counter that only the calling thread writes.
///
/// The per-reactor counters (loop statistics, per-node I/O counts and
/// in-flight pins, latency buckets) each have exactly one writer, their
/// reactor, and are read by other threads at any time. With one writer a
/// relaxed load followed by a relaxed store loses no update, and readers
/// still see whole values (each access is atomic). It is deliberately not a
/// `fetch_add`: a read-modify-write is a locked instruction on x86 (~20
/// cycles, and a full barrier) where this is two plain moves, and it would
/// buy nothing here since nobody else writes the counter.
///
/// Callers that need the store to publish something (the in-flight unpin,
/// which must be `Release`) write their own load and store instead.
#[inline]
pub fn single_writer_add(counter: &AtomicU64, by: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(by),
        Ordering::Relaxed,
    );
}
