//! In-flight pins: how the control plane frees a removed node without a
//! global drain.
//!
//! Each node counts its in-flight I/O per reactor, in a counter only that
//! reactor writes. An I/O pins every node it passes (`Path::push`, before
//! the reactor's next quiescent point) and unpins them when it completes
//! (`Path::finish`). The writer unpublishes the node, waits one grace period
//! (no reactor can reach it any more, so no new pin can appear), then waits
//! until every reactor's counter for that node reads zero
//! (`NodeCore::wait_drained`), and only then closes it.
//!
//! `NodeCore`'s pin, unpin and drain are the protocol; the loom models below
//! run them with the graph's real publication (`rcu`) and the poller's real
//! grace period. `Path` needs a `Reactor`, which loom builds do not have.

use crossbeam_utils::CachePadded;
use pollux_poller::sync::{single_writer_add, AtomicU64, Ordering};

#[cfg(not(loom))]
use std::ptr::NonNull;

#[cfg(not(loom))]
use pollux_poller::Reactor;

#[cfg(not(loom))]
use crate::io::{IoError, IoOp, MAX_DEPTH};
use crate::latency::LatencyShard;

/// One reactor's counters for one node. Written only by that reactor.
#[derive(Default)]
pub(crate) struct NodeCounters {
    inflight: AtomicU64,
    /// LBA range locks installed on the node on this reactor
    /// (`range_lock`): beside `inflight`, so the write path's "any lock
    /// here?" reads the line the pin writes anyway, and nothing else is
    /// touched while it reads zero.
    range_locks: AtomicU64,
    pub(crate) ops: [AtomicU64; 5],
    pub(crate) bytes: [AtomicU64; 5],
    pub(crate) errors: [AtomicU64; 5],
    /// Latency of successful I/O by op, from submission to completion.
    pub(crate) latency: [LatencyShard; 5],
}

impl NodeCounters {
    /// Owning reactor: one more I/O in flight on the node. Relaxed is
    /// enough: the reactor's next quiescent point (a Release store) orders
    /// it before any grace period that could end the node's life.
    #[inline]
    pub(crate) fn pin(&self) {
        single_writer_add(&self.inflight, 1);
    }

    /// Owning reactor: an I/O pinned by `pin` is done with the node.
    #[inline]
    pub(crate) fn unpin(&self) {
        // Release: the drain reads zero only after everything this I/O did
        // with the node (hence not `single_writer_add`, which is Relaxed).
        let n = self.inflight.load(Ordering::Relaxed);
        self.inflight.store(n - 1, Ordering::Release);
    }

    /// I/O in flight on this reactor (statistics: may be stale at once).
    pub(crate) fn inflight(&self) -> u64 {
        self.inflight.load(Ordering::Relaxed)
    }

    /// Owning reactor: whether a range lock is installed on the node here.
    #[inline]
    pub(crate) fn range_locked(&self) -> bool {
        self.range_locks.load(Ordering::Relaxed) != 0
    }

    /// Owning reactor: one more (`up`) or one less range lock on the node.
    pub(crate) fn count_range_lock(&self, up: bool) {
        let n = self.range_locks.load(Ordering::Relaxed);
        let n = if up { n + 1 } else { n.saturating_sub(1) };
        self.range_locks.store(n, Ordering::Relaxed);
    }
}

/// The type-independent part of a node: its identity and counters.
pub(crate) struct NodeCore {
    pub(crate) name: String,
    pub(crate) counters: Box<[CachePadded<NodeCounters>]>,
    /// Where the node sits in its graph, for I/O it holds to find its
    /// children later (`Io::forward`).
    #[cfg(not(loom))]
    pub(crate) home: crate::filter::Home,
    /// Model-only fault: `wait_drained` returns at once, which the models
    /// must catch.
    #[cfg(loom)]
    skip_drain_wait: bool,
}

impl NodeCore {
    pub(crate) fn new(name: String, reactors: usize) -> Self {
        NodeCore {
            name,
            counters: (0..reactors).map(|_| CachePadded::default()).collect(),
            #[cfg(not(loom))]
            home: crate::filter::Home::default(),
            #[cfg(loom)]
            skip_drain_wait: false,
        }
    }

    /// The same, with the drain wait skipped (model twin only).
    #[cfg(loom)]
    pub(crate) fn skipping_drain_wait(name: String, reactors: usize) -> Self {
        NodeCore {
            skip_drain_wait: true,
            ..NodeCore::new(name, reactors)
        }
    }

    /// In-flight I/O summed over reactors. Acquire: once it reads zero,
    /// everything the unpinned I/O did with the node happened before.
    pub(crate) fn inflight(&self) -> u64 {
        self.counters
            .iter()
            .map(|c| c.inflight.load(Ordering::Acquire))
            .sum()
    }

    /// Control thread: returns once no reactor has I/O in flight on the
    /// node, calling `wait` between looks. Only meaningful once the node is
    /// unreachable and a grace period has passed: before that a reactor
    /// could pin it again.
    pub(crate) fn wait_drained(&self, mut wait: impl FnMut()) {
        #[cfg(loom)]
        if self.skip_drain_wait {
            return;
        }
        while self.inflight() != 0 {
            wait();
        }
    }
}

#[cfg(not(loom))]
const _: () = assert!(
    MAX_DEPTH <= u8::BITS as usize,
    "Path::timed has one bit per node"
);

/// Path entries kept in the `Io` itself. Two cover a root on a leaf and a
/// root on one filter (a QoS limit, a delay) over a leaf; deeper stacks
/// take one small allocation per I/O for the rest. Two keep `Io` at 128
/// bytes, which the compiler moves with a few vector stores instead of a
/// `memcpy` call: with all `MAX_DEPTH` inline it was 176, and its moves
/// were a third of a null read's time (BENCHMARKS.md, issue 10).
#[cfg(not(loom))]
const INLINE: usize = 2;

/// The nodes an I/O went through, each pinned (counted in flight on the
/// submitting reactor) until the I/O completes.
#[cfg(not(loom))]
#[derive(Default)]
pub(crate) struct Path {
    head: [Option<NonNull<NodeCore>>; INLINE],
    /// Entries `INLINE..`, allocated when the I/O reaches a node past them.
    tail: Option<Box<[Option<NonNull<NodeCore>>; MAX_DEPTH - INLINE]>>,
    len: u8,
    /// Bit `i`: node `i` records this I/O's latency (its histogram was on
    /// for the op when the I/O passed it). Decided at submission, so a flip
    /// of the histogram never half-counts an I/O in flight.
    timed: u8,
}

#[cfg(not(loom))]
impl Path {
    /// Pins `core` for this I/O on reactor `r`; `timed`: the node records
    /// the I/O's latency when it completes. `Ok(true)`: a range lock is
    /// installed on the node on this reactor (read from the line the pin
    /// writes, so the check costs no other look-up).
    #[inline]
    pub(crate) fn push(
        &mut self,
        r: &Reactor,
        core: &NodeCore,
        timed: bool,
    ) -> Result<bool, IoError> {
        let i = self.len as usize;
        if i == MAX_DEPTH {
            // The graph refuses deeper paths; this is a second line of defence.
            return Err(IoError::NoDevice);
        }
        let c = &core.counters[r.index()];
        c.pin();
        let locked = c.range_locked();
        let p = Some(NonNull::from(core));
        if i < INLINE {
            self.head[i] = p;
        } else {
            self.tail
                .get_or_insert_with(|| Box::new([None; MAX_DEPTH - INLINE]))[i - INLINE] = p;
        }
        self.timed |= u8::from(timed) << i;
        self.len += 1;
        Ok(locked)
    }

    /// Entry `i` (below `len`).
    #[inline]
    fn get(&self, i: usize) -> Option<NonNull<NodeCore>> {
        if i < INLINE {
            self.head[i]
        } else {
            self.tail.as_ref()?[i - INLINE]
        }
    }

    /// The node the I/O reached last: the one holding it, for a filter.
    #[inline]
    pub(crate) fn last(&self) -> Option<NonNull<NodeCore>> {
        (self.len as usize).checked_sub(1).and_then(|i| self.get(i))
    }

    /// I/O in flight on reactor `r` at the node the I/O reached last,
    /// this one included.
    #[inline]
    pub(crate) fn last_inflight(&self, r: &Reactor) -> u64 {
        let Some(p) = self.last() else { return 0 };
        // SAFETY: this I/O pinned the node on this reactor and has not
        // unpinned it yet (`finish` empties the path), so the node is alive,
        // as in `finish`.
        let core = unsafe { p.as_ref() };
        core.counters[r.index()].inflight()
    }

    /// True once a node on the path records the I/O's latency (the clock
    /// was read at that node).
    #[inline]
    pub(crate) fn timed(&self) -> bool {
        self.timed != 0
    }

    /// True while the I/O holds pins (submitted and not completed).
    #[inline]
    pub(crate) fn in_flight(&self) -> bool {
        self.len != 0
    }

    /// Accounts the finished I/O on every pinned node and unpins them.
    /// `submitted` is the raw clock reading taken when the I/O reached the
    /// first timed node. Returns the latency recorded (0 for failed I/O, and
    /// for I/O no node timed).
    #[inline]
    pub(crate) fn finish(
        &mut self,
        r: &Reactor,
        op: IoOp,
        len: u64,
        ok: bool,
        submitted: u64,
    ) -> u64 {
        let i = op.as_index();
        // One clock read per I/O, however many nodes it went through: every
        // node on the path sees the latency from submission, as the caller
        // of that node would.
        let ns = if ok && self.timed != 0 {
            crate::latency::elapsed_ns(submitted)
        } else {
            0
        };
        let timed = self.timed;
        for k in 0..self.len as usize {
            let Some(p) = self.get(k) else { continue };
            // SAFETY: the node's only owners are the published snapshot and,
            // while it drains, the writer (snapshots cannot be cloned or owned
            // outside the graph, see `Snapshot`). The writer frees it only
            // after it left the published graph, a grace period passed and
            // every reactor's in-flight count for it read zero
            // (`Graph::update`, through `NodeCore::wait_drained`); `Graph`'s
            // drop frees it only if the count reads zero and leaks it
            // otherwise. This I/O pinned the node on this reactor (the only
            // one that completes it: `Io` is not `Send`) and has not unpinned
            // it yet (`len` drops to 0 below, so no entry is unpinned twice),
            // so the node is alive.
            let core = unsafe { p.as_ref() };
            let c = &core.counters[r.index()];
            if ok {
                single_writer_add(&c.ops[i], 1);
                single_writer_add(&c.bytes[i], len);
                if timed & (1 << k) != 0 {
                    c.latency[i].record(ns);
                }
            } else {
                single_writer_add(&c.errors[i], 1);
            }
            c.unpin();
        }
        self.len = 0;
        self.timed = 0;
        ns
    }
}

#[cfg(not(loom))]
impl Drop for Path {
    fn drop(&mut self) {
        // An Io dropped without completing would leave its nodes pinned
        // forever and their removal would hang; make that loud in tests.
        debug_assert!(self.len == 0, "I/O dropped without completion");
    }
}

#[cfg(all(test, loom))]
mod tests {
    //! Run with: RUSTFLAGS="--cfg loom" cargo test -p pollux-graph --release --lib loom
    //!
    //! The node lifetime rule: an I/O pins the node it found before its
    //! reactor's next quiescent point and may use it for many iterations.
    //! The writer unpublishes the node (`Rcu`'s real `publish`, with the
    //! poller's real grace period), waits with `NodeCore::wait_drained`, and
    //! only then closes it. The reader must never use a closed node.
    use super::*;
    use crate::rcu::Rcu;
    use loom::thread;
    use pollux_poller::qsbr::{GracePeriod, QsCounter};
    use pollux_poller::sync::{Arc, AtomicBool};

    /// A node as the model sees it: the real core and a closed mark. The
    /// writer holds an `Arc` until every thread is joined, as `Graph::update`
    /// holds the removed nodes, so a late use reads the mark, not freed
    /// memory.
    struct Node {
        core: NodeCore,
        closed: AtomicBool,
    }

    /// A published version: the node, or none once it was removed.
    struct Version {
        node: Option<Arc<Node>>,
    }

    fn model(core: fn(String, usize) -> NodeCore) {
        let mut b = loom::model::Builder::new();
        // Three preemptions cover the pin racing the unpublish and the drain
        // racing the unpin, and keep the run to seconds.
        b.preemption_bound = Some(3);
        b.check(move || {
            let node = Arc::new(Node {
                core: core("n".into(), 1),
                closed: AtomicBool::new(false),
            });
            let rcu = Arc::new(Rcu::new(Version {
                node: Some(node.clone()),
            }));
            let qs = Arc::new(QsCounter::new());

            let (r2, q2) = (rcu.clone(), qs.clone());
            let reader = thread::spawn(move || {
                // Iteration 1: find the node and pin it.
                // SAFETY: between two quiescent points of `q2`, which the
                // writer's grace period waits for.
                let v = unsafe { r2.read_unchecked() };
                let Some(n) = v.node.as_deref() else {
                    q2.go_offline();
                    return;
                };
                n.core.counters[0].pin();
                let n: *const Node = n;
                q2.quiescent();
                // Iteration 2: the I/O completes; the node must still be open.
                // SAFETY: the writer's `Arc` keeps the memory until the join;
                // whether the node is still usable is what the model checks.
                let n = unsafe { &*n };
                assert!(!n.closed.load(Ordering::Relaxed), "used a closed node");
                n.core.counters[0].unpin();
                q2.quiescent();
                q2.go_offline();
            });

            // The writer: unpublish, grace period, drop the old version,
            // drain, close (the order of `Graph::update`).
            let old = rcu.lock().publish(Version { node: None }, || {
                GracePeriod::wait(|| std::iter::once(&*qs), |_| thread::yield_now())
            });
            drop(old);
            node.core.wait_drained(thread::yield_now);
            node.closed.store(true, Ordering::Relaxed);

            reader.join().unwrap();
        });
    }

    /// The filter drain rule (`crate::filter`): a filter holds an I/O that
    /// pinned it, and later forwards it through the filter's entry in the
    /// *current* version to its child. The writer removes the filter
    /// (retires it: entry kept, unreachable), drains it, drops the entry,
    /// then removes the child. The held I/O must find the filter's entry
    /// and must never reach a closed child.
    struct FilterVersion {
        /// The filter's entry and whether it is retired; its one child
        /// is `child`.
        filter: Option<(Arc<Node>, bool)>,
        child: Option<Arc<Node>>,
    }

    #[derive(Clone, Copy)]
    enum FilterFault {
        None,
        /// The writer does not wait for the retired filter to drain before
        /// removing its child.
        SkipFilterDrain,
        /// Removing the filter drops its entry at once (the rule before
        /// filters could hold I/O).
        DropEntryAtRemoval,
    }

    fn node(name: &str, skip_drain: bool) -> Arc<Node> {
        Arc::new(Node {
            core: if skip_drain {
                NodeCore::skipping_drain_wait(name.into(), 1)
            } else {
                NodeCore::new(name.into(), 1)
            },
            closed: AtomicBool::new(false),
        })
    }

    fn filter_model(fault: FilterFault) {
        let mut b = loom::model::Builder::new();
        // Two preemptions reach the forward racing the retirement and the
        // child's removal racing the forward, in a run of seconds.
        b.preemption_bound = Some(2);
        b.check(move || {
            let f = node("f", matches!(fault, FilterFault::SkipFilterDrain));
            let c = node("c", false);
            let rcu = Arc::new(Rcu::new(FilterVersion {
                filter: Some((f.clone(), false)),
                child: Some(c.clone()),
            }));
            let qs = Arc::new(QsCounter::new());

            let (r2, q2) = (rcu.clone(), qs.clone());
            let reader = thread::spawn(move || {
                // Iteration 1: an I/O reaches the live filter, which holds it.
                // SAFETY: between two quiescent points of `q2`.
                let v = unsafe { r2.read_unchecked() };
                let f: *const Node = match &v.filter {
                    Some((f, false)) => {
                        f.core.counters[0].pin();
                        &**f
                    }
                    _ => {
                        q2.go_offline();
                        return;
                    }
                };
                q2.quiescent();
                // Iteration 2: the filter forwards it, through its entry in
                // the version published now, to its child.
                // SAFETY: as above.
                let v = unsafe { r2.read_unchecked() };
                let Some((fe, _)) = &v.filter else {
                    panic!("held I/O lost its filter's entry");
                };
                assert!(std::ptr::eq(&**fe, f));
                let Some(child) = v.child.as_deref() else {
                    panic!("held I/O found no child");
                };
                assert!(
                    !child.closed.load(Ordering::Relaxed),
                    "held I/O reached a closed node"
                );
                child.core.counters[0].pin();
                let child: *const Node = child;
                q2.quiescent();
                // Iteration 3: the I/O completes on the child, then unpins
                // both.
                // SAFETY: the writer's `Arc`s keep the memory until the
                // join; whether the nodes are usable is what is checked.
                let (f, child) = unsafe { (&*f, &*child) };
                assert!(
                    !child.closed.load(Ordering::Relaxed),
                    "held I/O reached a closed node"
                );
                assert!(
                    !f.closed.load(Ordering::Relaxed),
                    "held I/O reached a closed node"
                );
                child.core.counters[0].unpin();
                f.core.counters[0].unpin();
                q2.quiescent();
                q2.go_offline();
            });

            let grace = || GracePeriod::wait(|| std::iter::once(&*qs), |_| thread::yield_now());
            // remove_filter: retire (or, faulty, drop) the entry, drain,
            // drop the entry, close.
            let retired = match fault {
                FilterFault::DropEntryAtRemoval => None,
                _ => Some((f.clone(), true)),
            };
            drop(rcu.lock().publish(
                FilterVersion {
                    filter: retired,
                    child: Some(c.clone()),
                },
                grace,
            ));
            f.core.wait_drained(thread::yield_now);
            drop(rcu.lock().publish(
                FilterVersion {
                    filter: None,
                    child: Some(c.clone()),
                },
                grace,
            ));
            f.closed.store(true, Ordering::Relaxed);
            // remove_node on the child, now that no entry routes to it.
            drop(rcu.lock().publish(
                FilterVersion {
                    filter: None,
                    child: None,
                },
                grace,
            ));
            c.core.wait_drained(thread::yield_now);
            c.closed.store(true, Ordering::Relaxed);

            reader.join().unwrap();
        });
    }

    #[test]
    fn loom_held_io_reaches_the_child_of_a_removed_filter() {
        filter_model(FilterFault::None);
    }

    #[test]
    #[should_panic(expected = "held I/O")]
    fn loom_finds_child_closed_before_the_filter_drained() {
        filter_model(FilterFault::SkipFilterDrain);
    }

    #[test]
    #[should_panic(expected = "held I/O")]
    fn loom_finds_filter_entry_dropped_at_removal() {
        filter_model(FilterFault::DropEntryAtRemoval);
    }

    #[test]
    fn loom_pin_outlives_grace_period() {
        model(NodeCore::new);
    }

    /// The grace period alone does not protect an I/O that outlives its
    /// iteration: closing without the drain must be caught.
    #[test]
    #[should_panic(expected = "used a closed node")]
    fn loom_finds_close_without_drain() {
        model(NodeCore::skipping_drain_wait);
    }
}
