//! Type erasure: a `BlockNode` with its per-reactor channels and counters.

use std::cell::{OnceCell, UnsafeCell};
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_utils::CachePadded;
use pollux_poller::Reactor;

use crate::io::Io;
use crate::node::{BlockNode, Geometry};
use crate::pin::NodeCore;
use crate::rcu::Rcu;
use crate::snapshot::Snapshot;

/// The object-safe face of a node that the snapshot stores.
pub(crate) trait DynNode: Send + Sync {
    fn core(&self) -> &NodeCore;
    fn kind(&self) -> &'static str;
    fn geometry(&self) -> Geometry;
    /// The node itself, for control-plane calls on its own API.
    fn as_any(&self) -> &dyn std::any::Any;
    fn same_geometry_as_children(&self) -> bool;
    fn check_children(&self, children: &[Geometry]) -> Result<(), String>;
    fn route(&self, io: &mut Io) -> Option<usize>;
    fn execute(&self, r: &Reactor, io: Io);
    fn retiring(&self, handle: &pollux_poller::Handle);
    fn close(&self);
    fn resize(&self, block_count: u64) -> bool;
    fn backend_size(&self) -> Option<std::io::Result<u64>>;
    fn child_resized(
        &self,
        slot: usize,
        children: &[Geometry],
        current: Geometry,
    ) -> Result<Option<Geometry>, String>;
    /// Whether reactor `index` created its channel (control thread).
    fn has_channel(&self, index: usize) -> bool;
    /// Drops reactor `r`'s channel.
    ///
    /// # Safety
    /// Only from a top-level callback of `r` (nothing of the node on the
    /// stack), once the node is closed: nothing borrows the channel then,
    /// and nothing of the node runs on `r` any more (see `Graph::update`).
    unsafe fn drop_channel(&self, r: &Reactor);
}

pub(crate) struct NodeCell<N: BlockNode> {
    core: NodeCore,
    node: N,
    channels: ChannelSlots<N::Channel>,
}

impl<N: BlockNode> NodeCell<N> {
    /// `rcu` is the publication of the graph the node is being added to.
    pub(crate) fn new(
        name: String,
        node: N,
        handle: &pollux_poller::Handle,
        rcu: *const Rcu<Snapshot>,
    ) -> Self {
        let mut core = NodeCore::new(name, handle.num_reactors());
        core.home = crate::filter::Home::new(rcu, handle.runtime_id());
        NodeCell {
            core,
            node,
            channels: ChannelSlots::new(handle),
        }
    }
}

impl<N: BlockNode> DynNode for NodeCell<N> {
    fn core(&self) -> &NodeCore {
        &self.core
    }
    fn kind(&self) -> &'static str {
        self.node.kind()
    }
    fn geometry(&self) -> Geometry {
        self.node.geometry()
    }
    fn as_any(&self) -> &dyn std::any::Any {
        &self.node
    }
    fn same_geometry_as_children(&self) -> bool {
        self.node.same_geometry_as_children()
    }
    fn check_children(&self, children: &[Geometry]) -> Result<(), String> {
        self.node.check_children(children)
    }
    #[inline]
    fn route(&self, io: &mut Io) -> Option<usize> {
        self.node.route(io)
    }
    #[inline]
    fn execute(&self, r: &Reactor, io: Io) {
        let ch = self.channels.get_or_init(r, || self.node.create_channel(r));
        self.node.execute(r, ch, io);
    }
    fn retiring(&self, handle: &pollux_poller::Handle) {
        self.node.retiring(handle);
    }
    fn close(&self) {
        self.node.close();
    }
    fn resize(&self, block_count: u64) -> bool {
        self.node.resize(block_count)
    }
    fn backend_size(&self) -> Option<std::io::Result<u64>> {
        self.node.backend_size()
    }
    fn child_resized(
        &self,
        slot: usize,
        children: &[Geometry],
        current: Geometry,
    ) -> Result<Option<Geometry>, String> {
        self.node.child_resized(slot, children, current)
    }
    fn has_channel(&self, index: usize) -> bool {
        self.channels.created(index)
    }
    unsafe fn drop_channel(&self, r: &Reactor) {
        // SAFETY: the caller's contract is `ChannelSlots::drop_on`'s.
        unsafe { self.channels.drop_on(r) }
    }
}

/// One lazily created channel per reactor, created, used and dropped only
/// on its own reactor: a channel may hold what cannot leave its thread
/// (`Rc`s, the `Io`s a filter holds), unlike `PerReactor`'s values.
struct ChannelSlots<T> {
    runtime_id: u64,
    slots: Box<[CachePadded<Slot<T>>]>,
}

struct Slot<T> {
    value: UnsafeCell<OnceCell<T>>,
    /// Set once the reactor created its channel, so that the control thread
    /// knows whom to ask to drop it without reading the value.
    created: AtomicBool,
}

// SAFETY: slot `i`'s value is reached only through `get_or_init` and
// `drop_on`, which take a `&Reactor` of index `i` of this runtime
// (checked); a `Reactor` is neither Send nor Sync and exactly one exists
// per index, on its own thread. So each value is created, borrowed and
// dropped on one thread, whatever `T` is. `Drop` on another thread never
// drops a value: it leaks what was not dropped on its reactor. `created`
// is an atomic.
unsafe impl<T: 'static> Sync for ChannelSlots<T> {}
// SAFETY: as for `Sync`: moving the container moves no value's use to
// another thread.
unsafe impl<T: 'static> Send for ChannelSlots<T> {}

impl<T> ChannelSlots<T> {
    fn new(handle: &pollux_poller::Handle) -> Self {
        ChannelSlots {
            runtime_id: handle.runtime_id(),
            slots: (0..handle.num_reactors())
                .map(|_| {
                    CachePadded::new(Slot {
                        value: UnsafeCell::new(OnceCell::new()),
                        created: AtomicBool::new(false),
                    })
                })
                .collect(),
        }
    }

    #[inline]
    fn slot(&self, r: &Reactor) -> &Slot<T> {
        assert_eq!(
            r.runtime_id(),
            self.runtime_id,
            "channel used from another runtime's reactor"
        );
        &self.slots[r.index()]
    }

    #[inline]
    fn get_or_init<'a>(&'a self, r: &'a Reactor, init: impl FnOnce() -> T) -> &'a T {
        let slot = self.slot(r);
        // SAFETY: only this reactor's thread reaches this slot (see `Sync`),
        // and the only `&mut` to it is `drop_on`'s, whose caller guarantees
        // no borrow handed out here is alive.
        let cell = unsafe { &*slot.value.get() };
        if let Some(v) = cell.get() {
            return v;
        }
        let v = cell.get_or_init(init);
        slot.created.store(true, Ordering::Release);
        v
    }

    fn created(&self, index: usize) -> bool {
        self.slots
            .get(index)
            .is_some_and(|s| s.created.load(Ordering::Acquire))
    }

    /// Drops reactor `r`'s value.
    ///
    /// # Safety
    /// No borrow from `get_or_init` on `r` may be alive.
    unsafe fn drop_on(&self, r: &Reactor) {
        let slot = self.slot(r);
        // SAFETY: this reactor's thread only (see `Sync`), with no borrow
        // alive (the caller's contract).
        drop(unsafe { &mut *slot.value.get() }.take());
    }
}

impl<T> Drop for ChannelSlots<T> {
    fn drop(&mut self) {
        for s in self.slots.iter_mut() {
            // Possibly the wrong thread for `T`: leak rather than drop. The
            // graph drops each channel on its reactor when it closes the
            // node; what is left is teardown after the reactors stopped.
            if let Some(v) = s.value.get_mut().take() {
                std::mem::forget(v);
            }
        }
    }
}
