//! State with one slot per reactor, each slot touched only by its reactor.
//!
//! This is the backing store of SPDK-style I/O channels: a node keeps a
//! `PerReactor<Channel>` and each reactor lazily creates its own channel on
//! first use, with no lock and no sharing between reactors.

use std::cell::OnceCell;

use crossbeam_utils::CachePadded;

use crate::reactor::Reactor;

/// One lazily initialised `T` per reactor of a runtime.
pub struct PerReactor<T> {
    runtime_id: u64,
    slots: Box<[CachePadded<OnceCell<T>>]>,
}

// SAFETY: slot `i` is only reached through `get`/`get_or_init`, which require
// a `&Reactor` of index `i` from the same runtime (checked). A `Reactor` is
// neither Send nor Sync and exactly one exists per index per runtime, living
// on that reactor's thread, so each slot is only ever accessed from one thread.
// Exclusive access (`iter_mut`, drop) goes through `&mut self`. `T: Send` lets
// the slots be dropped on whichever thread drops the container.
unsafe impl<T: Send> Sync for PerReactor<T> {}

impl<T> PerReactor<T> {
    /// Empty slots for every reactor of the runtime `handle` belongs to.
    pub fn new(handle: &crate::Handle) -> Self {
        PerReactor {
            runtime_id: handle.runtime_id(),
            slots: (0..handle.num_reactors())
                .map(|_| CachePadded::new(OnceCell::new()))
                .collect(),
        }
    }

    #[inline]
    fn slot<'a>(&'a self, r: &'a Reactor) -> &'a OnceCell<T> {
        assert_eq!(
            r.runtime_id(),
            self.runtime_id,
            "PerReactor used from another runtime's reactor"
        );
        &self.slots[r.index()]
    }

    /// This reactor's value, if created.
    #[inline]
    pub fn get<'a>(&'a self, r: &'a Reactor) -> Option<&'a T> {
        self.slot(r).get()
    }

    /// This reactor's value, created by `init` on first use.
    #[inline]
    pub fn get_or_init<'a>(&'a self, r: &'a Reactor, init: impl FnOnce() -> T) -> &'a T {
        self.slot(r).get_or_init(init)
    }

    /// Every created value, with exclusive access (teardown, tests).
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.slots.iter_mut().filter_map(|s| s.get_mut())
    }
}
