//! The published graph and the control-plane operations that change it.
//!
//! Readers (reactors) load the current snapshot pointer: one plain load, no
//! lock, no read-modify-write, nothing written. Writers serialize on the
//! writer lock, build a new snapshot from the current one, publish it with
//! one store, wait for a grace period (`Handle::synchronize`), free the old
//! snapshot, then wait for in-flight I/O on nodes that left the graph and
//! close them. The publication itself is `rcu::Rcu`, the pins and the drain
//! `pin::NodeCore`: both are model-checked with loom.

use std::collections::HashSet;
use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pollux_poller::{Handle, Reactor};

use crate::cell::{DynNode, NodeCell};
use crate::io::{IoOp, MAX_DEPTH};
use crate::latency::{self, LatencyHistogram, OpMask};
use crate::node::{BlockNode, Geometry};
use crate::rcu::Rcu;
use crate::snapshot::{NodeEntry, NodeId, RootEntry, RootId, Snapshot, SnapshotGuard};

/// How long closing a node waits for its reactors to drop their channels:
/// a message round trip, far longer only if a reactor is stuck.
const CHANNEL_DROP_WAIT: Duration = Duration::from_secs(5);

/// Why a graph change was refused. Nothing was published then.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    /// A node or root with this name exists.
    #[error("a node named {0:?} already exists")]
    NameExists(String),
    /// A root with this name exists.
    #[error("a root named {0:?} already exists")]
    RootExists(String),
    /// No node by that name.
    #[error("no node named {0:?}")]
    NoSuchNode(String),
    /// No root by that name.
    #[error("no root named {0:?}")]
    NoSuchRoot(String),
    /// The node is still referenced.
    #[error("node {name:?} is in use by {users}")]
    InUse {
        /// The node.
        name: String,
        /// Who references it (parents and roots).
        users: String,
    },
    /// Wrong number of children for the node kind.
    #[error("node {name:?} ({kind}) takes {expected} children, got {got}")]
    Children {
        /// The node.
        name: String,
        /// Its kind.
        kind: &'static str,
        /// How many it takes.
        expected: usize,
        /// How many were given.
        got: usize,
    },
    /// The change would create a cycle.
    #[error("making {child:?} a child of {parent:?} would create a cycle")]
    Cycle {
        /// The parent.
        parent: String,
        /// The would-be child.
        child: String,
    },
    /// The change would make a path longer than `MAX_DEPTH`.
    #[error("the change would stack more than {MAX_DEPTH} nodes on one path")]
    TooDeep,
    /// `old` is not a child of `parent`.
    #[error("{child:?} is not a child of {parent:?}")]
    NotAChild {
        /// The parent.
        parent: String,
        /// The supposed child.
        child: String,
    },
    /// A filter must present the same geometry as what it stands on.
    #[error("{filter:?} has geometry {got:?} but {child:?} has {expected:?}")]
    Geometry {
        /// The filter.
        filter: String,
        /// The child.
        child: String,
        /// The child's geometry.
        expected: Geometry,
        /// The filter's.
        got: Geometry,
    },
    /// Only filters (one child) can be removed with `remove_filter`.
    #[error("{0:?} is not a filter")]
    NotAFilter(String),
    /// The node refused its children (`BlockNode::check_children`).
    #[error("{name:?} cannot stand on its children: {reason}")]
    BadChildren {
        /// The node.
        name: String,
        /// Why.
        reason: String,
    },
    /// Node names must not be empty.
    #[error("empty node name")]
    EmptyName,
    /// The node's kind has a fixed size.
    #[error("{0:?} cannot be resized")]
    NotResizable(String),
    /// A shrink while I/O is in flight on the node: that I/O may end past
    /// the new end, so the old size stays.
    #[error("{name:?} has {inflight} I/O in flight; a shrink could cut under it")]
    ShrinkInFlight {
        /// The node.
        name: String,
        /// I/O in flight when the shrink was refused.
        inflight: u64,
    },
    /// A size of zero blocks.
    #[error("{0:?} cannot be resized to zero blocks")]
    ZeroSize(String),
    /// A node above refuses its child's new size (`BlockNode::child_resized`).
    #[error("{name:?} cannot be resized under {by:?}: {reason}")]
    ResizeRefused {
        /// The node being resized.
        name: String,
        /// The node above that refuses.
        by: String,
        /// Why.
        reason: String,
    },
}

/// A root whose geometry a publication changed (a resize below it, or a
/// change of what it points at), as `Graph::watch_roots` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootChange {
    /// The root.
    pub root: RootId,
    /// Its name.
    pub name: String,
    /// Its geometry now.
    pub geometry: Geometry,
}

/// A watcher of root geometry changes (`Graph::watch_roots`).
type RootWatcher = Arc<dyn Fn(&[RootChange]) + Send + Sync>;

/// Names a watcher registered with `Graph::watch_roots`, to remove it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchId(u64);

/// Why a rescan failed.
#[derive(Debug, thiserror::Error)]
pub enum RescanError {
    /// The graph refused the new size.
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// The backend's size could not be read.
    #[error("cannot read the backend's size: {0}")]
    Backend(std::io::Error),
}

/// A node as `Graph::describe` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    /// Name.
    pub name: String,
    /// Kind (`null`, `ram`, `file`, `passthru`).
    pub kind: &'static str,
    /// Geometry.
    pub geometry: Geometry,
    /// Children, in slot order.
    pub children: Vec<String>,
    /// The ops its latency histogram records (`Graph::set_histogram`).
    pub histogram: OpMask,
}

/// A root as `Graph::describe` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootInfo {
    /// Name.
    pub name: String,
    /// The node it points at.
    pub node: String,
}

/// The whole graph at one generation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GraphInfo {
    /// Publication number.
    pub generation: u64,
    /// Nodes, sorted by name.
    pub nodes: Vec<NodeInfo>,
    /// Roots, sorted by name.
    pub roots: Vec<RootInfo>,
}

/// Per-op counters of a node, summed over reactors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Completed operations, by `IoOp::as_index`.
    pub ops: [u64; 5],
    /// Bytes moved (or covered, for zeroes/discard), by op.
    pub bytes: [u64; 5],
    /// Failed operations, by op.
    pub errors: [u64; 5],
    /// I/O in flight now.
    pub inflight: u64,
    /// Latency of successful I/O from submission to completion, by op.
    /// Only what was recorded while the op's histogram was on.
    pub latency: [LatencyHistogram; 5],
    /// The ops whose histogram is on now: the others' `latency` is frozen
    /// at what they recorded before it was switched off.
    pub histogram: OpMask,
}

/// Publication counters, for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GraphStats {
    /// Current generation.
    pub generation: u64,
    /// Snapshots published.
    pub publishes: u64,
    /// Superseded snapshots freed after their grace period.
    pub reclaimed: u64,
    /// Nodes closed after leaving the graph and draining.
    pub nodes_closed: u64,
    /// Versions published only to drop the entries of drained nodes (one
    /// per change that removed nodes): not graph changes, so not counted
    /// in `publishes`, `reclaimed` or the grace-period figures.
    pub sweeps: u64,
    /// Total time spent waiting for grace periods.
    pub grace_total: Duration,
    /// Distribution of the grace-period waits.
    pub grace_periods: LatencyHistogram,
}

#[derive(Default)]
struct Counters {
    publishes: AtomicU64,
    reclaimed: AtomicU64,
    nodes_closed: AtomicU64,
    sweeps: AtomicU64,
    grace_ns: AtomicU64,
    /// Control path only (one record per publication): a mutex is fine.
    grace_hist: Mutex<LatencyHistogram>,
}

/// The block graph of one runtime.
pub struct Graph {
    handle: Handle,
    /// The published snapshot, whose readers are the reactors of `handle`.
    /// Boxed so its address outlives the graph when the graph is dropped
    /// with I/O in flight: nodes point at it (`filter::Home`) for the I/O
    /// they hold, and `Drop` leaks it then rather than free it.
    snapshots: ManuallyDrop<Box<Rcu<Snapshot>>>,
    counters: Counters,
    /// Told after each publication that changed a root's geometry.
    watchers: Mutex<Vec<(WatchId, RootWatcher)>>,
    next_watch: AtomicU64,
}

impl Graph {
    /// An empty graph whose readers are the reactors of `handle`.
    pub fn new(handle: &Handle) -> Arc<Graph> {
        // Calibrate the latency clock here rather than in the first I/O.
        latency::init_clock();
        Arc::new(Graph {
            handle: handle.clone(),
            snapshots: ManuallyDrop::new(Box::new(Rcu::new(Snapshot::empty()))),
            counters: Counters::default(),
            watchers: Mutex::default(),
            next_watch: AtomicU64::new(0),
        })
    }

    /// The runtime handle the graph was made for.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// The current snapshot, for a reactor. It stays valid for as long as
    /// the `&Reactor` borrow, i.e. until the callback that received it
    /// returns: the reactor passes no quiescent point before that.
    ///
    /// # Panics
    /// If `r` belongs to another runtime (a caller bug).
    #[inline]
    pub fn snapshot<'r>(&'r self, r: &'r Reactor) -> SnapshotGuard<'r> {
        assert_eq!(
            r.runtime_id(),
            self.handle.runtime_id(),
            "graph read from a reactor of another runtime"
        );
        // SAFETY: a callback of a reactor of this runtime (the check above)
        // is a read-side critical section of `snapshots`: `update`'s grace
        // period is `Handle::synchronize`, which waits for every reactor of
        // this runtime to pass a quiescent point, and reactors pass those
        // only between callbacks. `&Reactor` exists only inside one, and the
        // guard borrows it: it cannot be cloned into an owned snapshot,
        // stored past the callback or sent to another thread, so the
        // snapshot stays allocated for as long as the guard lives.
        unsafe { SnapshotGuard::new(self.snapshots.read_unchecked(), r) }
    }

    /// The current snapshot for the control plane, under the writer lock so
    /// it cannot be freed meanwhile. `f` gets a borrow it cannot return (the
    /// lifetime is its own) nor turn into an owned snapshot (`Snapshot` is
    /// not `Clone`), so nothing of it outlives the lock.
    pub fn read<T>(&self, f: impl FnOnce(&Snapshot) -> T) -> T {
        f(self.snapshots.lock().current())
    }

    /// Builds a new snapshot with `change`, publishes it, waits for a grace
    /// period, frees the old one, then drains and closes removed nodes.
    ///
    /// Removed nodes are not dropped from the new snapshot but retired
    /// (`NodeEntry::retired`): I/O a filter holds still reaches the filter's
    /// children through the entry until the node drained. The order of the
    /// drain is argued in `crate::filter`'s documentation; retired entries
    /// of earlier changes are all closed and are dropped here.
    fn update<T>(
        &self,
        change: impl FnOnce(&mut Snapshot) -> Result<T, GraphError>,
    ) -> Result<T, GraphError> {
        self.update_checked(change, || Ok(()))
    }

    /// `update`, with `verify` run once the grace period has passed (no
    /// reactor routes by the old snapshot any more) and before removed nodes
    /// are drained: if it fails, the old snapshot is published again, and
    /// nothing changed.
    fn update_checked<T>(
        &self,
        change: impl FnOnce(&mut Snapshot) -> Result<T, GraphError>,
        verify: impl FnOnce() -> Result<(), GraphError>,
    ) -> Result<T, GraphError> {
        let changed = self.publish_checked(change, verify)?;
        if !changed.1.is_empty() {
            let watchers = self
                .watchers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            for (_, w) in watchers {
                w(&changed.1);
            }
        }
        Ok(changed.0)
    }

    /// Registers `f`, called on the control thread after each publication
    /// that changed the geometry of a root (resize, pivot), outside the
    /// writer lock: front-ends tell their hosts (an NVMe AEN, a virtio
    /// config-change interrupt).
    pub fn watch_roots(&self, f: impl Fn(&[RootChange]) + Send + Sync + 'static) -> WatchId {
        let id = WatchId(self.next_watch.fetch_add(1, Ordering::Relaxed));
        self.watchers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((id, Arc::new(f)));
        id
    }

    /// Removes a watcher (it may still be running one last call).
    pub fn unwatch_roots(&self, id: WatchId) {
        self.watchers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(w, _)| *w != id);
    }

    fn publish_checked<T>(
        &self,
        change: impl FnOnce(&mut Snapshot) -> Result<T, GraphError>,
        verify: impl FnOnce() -> Result<(), GraphError>,
    ) -> Result<(T, Vec<RootChange>), GraphError> {
        let mut w = self.snapshots.lock();
        let old = w.current();
        let mut next = old.fork();
        let out = change(&mut next)?;
        validate(&next)?;
        next.generation = old.generation + 1;
        let kept: HashSet<*const ()> = next
            .all_nodes()
            .map(|(_, e)| Arc::as_ptr(&e.cell) as *const ())
            .collect();
        // A change retires what it removes; anything it dropped outright
        // would lose the edges its held I/O needs.
        debug_assert!(old
            .live_nodes()
            .all(|(_, e)| kept.contains(&(Arc::as_ptr(&e.cell) as *const ()))));
        let removed: Vec<(NodeId, Arc<dyn DynNode>)> = next
            .all_nodes()
            .filter(|(_, e)| e.retired)
            .map(|(id, e)| (id, e.cell.clone()))
            .collect();
        let order = parents_first(&next, &removed);
        let changed = root_changes(old, &next);
        self.publish(&mut w, next, verify)?;
        if !order.is_empty() {
            for node in &order {
                node.retiring(&self.handle);
            }
            for node in &order {
                self.wait_drained(node);
            }
            // Drained: drop the retired entries in a version of their own,
            // so that the nodes are freed now rather than at the next
            // change. It looks the same from outside (retired entries are
            // invisible), so it keeps the generation and is counted apart
            // (`GraphStats::sweeps`). Its grace period is also the one the
            // drain rule needs before closing: the code of a node may still
            // run until the end of the callback in which its last pin went
            // (a child's completion completing its parent).
            let mut swept = w.current().fork();
            for n in swept.nodes.iter_mut() {
                if n.as_ref().is_some_and(|e| e.retired) {
                    *n = None;
                }
            }
            drop(w.publish(swept, || {
                self.handle.synchronize();
            }));
            self.counters.sweeps.fetch_add(1, Ordering::Relaxed);
            for node in &order {
                self.close(node);
            }
        }
        Ok((out, changed))
    }

    /// Publishes `next`, waits for the grace period, runs `verify` and
    /// frees the version it replaced; if `verify` fails, the replaced
    /// version is published again (its nodes live again: nothing retired
    /// in `next` is drained) and the error returned.
    fn publish(
        &self,
        w: &mut crate::rcu::Writer<'_, Snapshot>,
        next: Snapshot,
        verify: impl FnOnce() -> Result<(), GraphError>,
    ) -> Result<(), GraphError> {
        let mut grace = Duration::ZERO;
        // `Handle::synchronize` is the grace period `publish` asks for: the
        // reactors of this runtime are the snapshot's only readers without
        // the lock (`snapshot`), and it returns once each of them passed a
        // quiescent point, i.e. left every callback that could borrow the old
        // snapshot. Removed nodes stay alive meanwhile (the caller holds
        // them), so I/O that pinned them can still complete.
        let old = w.publish(next, || {
            self.counters.publishes.fetch_add(1, Ordering::Relaxed);
            grace = self.handle.synchronize();
        });
        self.counters
            .grace_ns
            .fetch_add(grace.as_nanos() as u64, Ordering::Relaxed);
        self.counters
            .grace_hist
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(grace.as_nanos() as u64);
        if let Err(e) = verify() {
            // Back to the old version: same nodes, so nothing is drained.
            let mut back = old.fork();
            back.generation = old.generation + 2;
            let newer = w.publish(back, || {
                self.counters.publishes.fetch_add(1, Ordering::Relaxed);
                self.handle.synchronize();
            });
            drop(newer);
            drop(old);
            self.counters.reclaimed.fetch_add(2, Ordering::Relaxed);
            return Err(e);
        }
        drop(old);
        self.counters.reclaimed.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Waits until no reactor has I/O in flight on `node`. Only this node's
    /// I/O is waited for: the rest of the graph keeps going.
    fn wait_drained(&self, node: &Arc<dyn DynNode>) {
        let start = Instant::now();
        let mut logged = false;
        node.core().wait_drained(|| {
            if !logged && start.elapsed() > Duration::from_secs(5) {
                tracing::warn!(node = %node.core().name, "still waiting for in-flight I/O");
                logged = true;
            }
            std::thread::sleep(Duration::from_micros(50));
        });
    }

    /// Closes a drained node and has each reactor that made a channel for
    /// it drop that channel, on its own thread.
    fn close(&self, node: &Arc<dyn DynNode>) {
        node.close();
        self.counters.nodes_closed.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(node = %node.core().name, "node closed");
        let (tx, rx) = std::sync::mpsc::channel();
        let mut asked = 0;
        for i in 0..self.handle.num_reactors() {
            if !node.has_channel(i) || self.handle.is_stopping() {
                continue;
            }
            let (n, tx) = (node.clone(), tx.clone());
            // A full inbox leaves the channel to be leaked with the node
            // (`ChannelSlots`' drop) rather than block the control plane.
            let sent = self.handle.send(i, move |r: &Reactor| {
                // SAFETY: a top-level message callback of `r`, for a closed
                // node: drained, a grace period after its last pin.
                unsafe { n.drop_channel(r) };
                // Our clone goes before the answer, so the node is freed
                // by the caller's last reference, on the control thread.
                drop(n);
                let _ = tx.send(());
            });
            asked += usize::from(sent.is_ok());
        }
        drop(tx);
        for _ in 0..asked {
            // A reactor that stops before answering drops the message, and
            // with it the sender: no hang.
            if rx.recv_timeout(CHANNEL_DROP_WAIT).is_err() {
                tracing::warn!(node = %node.core().name, "a reactor did not drop its channel");
                break;
            }
        }
    }

    /// A node's own way into the graph (`NodeLink::submit`), for I/O it
    /// issues itself; `None` if there is no node by that name.
    pub fn link(self: &Arc<Self>, name: &str) -> Option<crate::filter::NodeLink> {
        self.read(|s| {
            let id = s.node_id(name)?;
            let e = s.entry(id)?;
            Some(crate::filter::NodeLink::new(self.clone(), id, &e.cell))
        })
    }

    /// Adds a node with edges to `children` (by name, in slot order).
    pub fn add_node<N: BlockNode>(
        &self,
        name: &str,
        node: N,
        children: &[&str],
    ) -> Result<NodeId, GraphError> {
        let _span = tracing::info_span!("graph_add_node", name).entered();
        if name.is_empty() {
            return Err(GraphError::EmptyName);
        }
        let cell = self.new_cell(name, node, children.len())?;
        self.update(|s| {
            if s.names.contains_key(name) {
                return Err(GraphError::NameExists(name.into()));
            }
            let kids = children
                .iter()
                .map(|c| lookup(s, c))
                .collect::<Result<Vec<_>, _>>()?;
            check_children(s, &*cell, &kids)?;
            Ok(insert_node(s, cell, kids))
        })
    }

    /// Swaps node `name` for `node` standing on `children`, in one
    /// publication: the new node takes the name, and every parent edge and
    /// root that pointed at the old one points at it. The old node is
    /// retired and drains like a removed one (I/O it holds still reaches
    /// its old children), so an I/O sees the old node or the new one, never
    /// a mix. For a node whose children change (a RAID's members): the new
    /// node must present the same geometry, which its parents and exports
    /// were checked against.
    pub fn replace_node<N: BlockNode>(
        &self,
        name: &str,
        node: N,
        children: &[&str],
    ) -> Result<NodeId, GraphError> {
        let _span = tracing::info_span!("graph_replace_node", name).entered();
        let cell = self.new_cell(name, node, children.len())?;
        self.update(|s| {
            let old = lookup(s, name)?;
            let kids = children
                .iter()
                .map(|c| lookup(s, c))
                .collect::<Result<Vec<_>, _>>()?;
            let e = s.entry(old).expect("looked up");
            let (was, now) = (e.geometry, cell.geometry());
            if was.block_size != now.block_size || was.block_count != now.block_count {
                return Err(GraphError::Geometry {
                    filter: name.into(),
                    child: name.into(),
                    expected: was,
                    got: now,
                });
            }
            let histogram = e.histogram;
            check_children(s, &*cell, &kids)?;
            retire(s, old);
            let new = insert_node(s, cell, kids);
            s.nodes[new.0 as usize].as_mut().expect("inserted").histogram = histogram;
            redirect(s, old, new, None);
            Ok(new)
        })
    }

    /// Removes a node. Refused while a parent or a root references it.
    pub fn remove_node(&self, name: &str) -> Result<(), GraphError> {
        let _span = tracing::info_span!("graph_remove_node", name).entered();
        self.update(|s| {
            let id = lookup(s, name)?;
            let users = users_of(s, id);
            if !users.is_empty() {
                return Err(GraphError::InUse {
                    name: name.into(),
                    users: users.join(", "),
                });
            }
            retire(s, id);
            Ok(())
        })
    }

    /// The cell of a node about to be added as `name` with `children`
    /// children, once its kind is known to take that many.
    fn new_cell<N: BlockNode>(
        &self,
        name: &str,
        node: N,
        children: usize,
    ) -> Result<Arc<dyn DynNode>, GraphError> {
        if node.num_children() != children {
            return Err(GraphError::Children {
                name: name.into(),
                kind: node.kind(),
                expected: node.num_children(),
                got: children,
            });
        }
        Ok(Arc::new(NodeCell::new(
            name.into(),
            node,
            &self.handle,
            self.rcu_ptr(),
        )))
    }

    /// Adds a named root pointing at `node`; front-ends submit through it.
    pub fn add_root(&self, name: &str, node: &str) -> Result<RootId, GraphError> {
        let _span = tracing::info_span!("graph_add_root", name, node).entered();
        self.update(|s| {
            if s.root_id(name).is_some() {
                return Err(GraphError::RootExists(name.into()));
            }
            let target = bound_top(s, lookup(s, node)?);
            let entry = RootEntry {
                name: name.into(),
                node: target,
            };
            Ok(RootId(put_in_free_slot(&mut s.roots, entry)))
        })
    }

    /// Removes a root. I/O already submitted through it completes normally.
    pub fn remove_root(&self, name: &str) -> Result<(), GraphError> {
        let _span = tracing::info_span!("graph_remove_root", name).entered();
        self.update(|s| {
            let id = s
                .root_id(name)
                .ok_or_else(|| GraphError::NoSuchRoot(name.into()))?;
            s.roots[id.0 as usize] = None;
            Ok(())
        })
    }

    /// Points `parent`'s edge to `old` at `new` instead.
    pub fn replace_child(&self, parent: &str, old: &str, new: &str) -> Result<(), GraphError> {
        let _span = tracing::info_span!("graph_replace_child", parent, old, new).entered();
        self.update(|s| {
            let p = lookup(s, parent)?;
            let o = lookup(s, old)?;
            let n = lookup(s, new)?;
            let entry = s.nodes[p.0 as usize].as_mut().expect("looked up");
            let slot = entry.children.iter().position(|c| *c == o).ok_or_else(|| {
                GraphError::NotAChild {
                    parent: parent.into(),
                    child: old.into(),
                }
            })?;
            entry.children[slot] = n;
            let (cell, kids) = (entry.cell.clone(), entry.children.clone());
            check_children(s, &*cell, &kids)?;
            Ok(())
        })
    }

    /// Sets which ops node `name`'s latency histogram records
    /// (`OpMask::NONE`: off). Published like any graph change, so each
    /// reactor sees the switch in the snapshot entry it reads anyway, and an
    /// I/O already in flight completes as it was submitted. What was
    /// recorded before is kept: switching an op off freezes its histogram,
    /// switching it on again continues it.
    pub fn set_histogram(&self, name: &str, ops: OpMask) -> Result<(), GraphError> {
        let _span = tracing::info_span!("graph_set_histogram", name, ?ops).entered();
        self.update(|s| {
            let id = lookup(s, name)?;
            s.nodes[id.0 as usize]
                .as_mut()
                .expect("looked up")
                .histogram = ops;
            Ok(())
        })
    }

    /// Gives leaf `name` `block_count` blocks, published like any graph
    /// change: the new size is in the snapshot each reactor reads for the
    /// range check, and every node above that follows its child's size
    /// (`BlockNode::child_resized`: the filters, RAID arrays) takes it in
    /// the same publication; a node above may refuse it instead
    /// (`GraphError::ResizeRefused`: a split or an array whose data would
    /// no longer fit, a running mirror), and then nothing is published.
    /// Roots whose size changed are reported to the watchers
    /// (`watch_roots`). Returns the old count.
    ///
    /// A shrink is refused while any I/O is in flight on the node: an I/O's
    /// path records the nodes it pinned, not its range, so the graph cannot
    /// tell an in-flight I/O below the new end from one past it (SPDK
    /// refuses every shrink of an open bdev). It is checked twice: before
    /// publishing, and after the grace period, when every I/O still in
    /// flight that was routed by the old size is counted; if some is, the
    /// old size is published again.
    pub fn resize(&self, name: &str, block_count: u64) -> Result<u64, GraphError> {
        let _span = tracing::info_span!("graph_resize", name, block_count).entered();
        if block_count == 0 {
            return Err(GraphError::ZeroSize(name.into()));
        }
        let (cell, old) = self.read(|s| {
            let e = s.entry(lookup(s, name)?).expect("looked up");
            Ok::<_, GraphError>((e.cell.clone(), e.geometry.block_count))
        })?;
        if old == block_count {
            return Ok(old);
        }
        let shrink = block_count < old;
        let busy = |cell: &dyn DynNode| match cell.core().inflight() {
            0 => Ok(()),
            inflight => Err(GraphError::ShrinkInFlight {
                name: name.into(),
                inflight,
            }),
        };
        if shrink {
            busy(&*cell)?;
        }
        // A grow is served by the node before the snapshot routes I/O to
        // the new blocks; a shrink only once no I/O routed by the old size
        // is left (in `verify`), so none of it fails the node's own range
        // check. Asking for the current size tells whether it can resize.
        if !cell.resize(if shrink { old } else { block_count }) {
            return Err(GraphError::NotResizable(name.into()));
        }
        let result = self.update_checked(
            |s| {
                let id = lookup(s, name)?;
                let e = s.nodes[id.0 as usize].as_mut().expect("looked up");
                if !Arc::ptr_eq(&e.cell, &cell) {
                    // Replaced by a node of the same name meanwhile.
                    return Err(GraphError::NoSuchNode(name.into()));
                }
                e.geometry.block_count = block_count;
                propagate_resize(s, id).map_err(|(by, reason)| GraphError::ResizeRefused {
                    name: name.into(),
                    by,
                    reason,
                })
            },
            || {
                if shrink {
                    busy(&*cell)?;
                    cell.resize(block_count);
                }
                Ok(())
            },
        );
        match result {
            Ok(()) => {
                tracing::info!(node = name, old, new = block_count, "node resized");
                Ok(old)
            }
            Err(e) => {
                if !shrink {
                    cell.resize(old);
                }
                Err(e)
            }
        }
    }

    /// `resize` to what leaf `name`'s backend holds now (a file that grew
    /// or shrank), rounded down to whole blocks. Returns the old and new
    /// block counts. A node without a backend size cannot be rescanned.
    pub fn rescan(&self, name: &str) -> Result<(u64, u64), RescanError> {
        let (cell, geo) = self.read(|s| {
            let e = s.entry(lookup(s, name)?).expect("looked up");
            Ok::<_, GraphError>((e.cell.clone(), e.geometry))
        })?;
        let size = cell
            .backend_size()
            .ok_or_else(|| GraphError::NotResizable(name.into()))?
            .map_err(RescanError::Backend)?;
        let new = size / u64::from(geo.block_size);
        let old = self.resize(name, new)?;
        Ok((old, new))
    }

    /// Puts `filter` above `node` in one publication: every parent edge and
    /// every root that pointed at `node` now points at the filter, whose one
    /// child is `node`.
    pub fn insert_filter<N: BlockNode>(
        &self,
        node: &str,
        filter_name: &str,
        filter: N,
    ) -> Result<NodeId, GraphError> {
        let _span = tracing::info_span!("graph_insert_filter", node, filter_name).entered();
        self.put_filter(node, filter_name, filter, &[], false)
    }

    /// Like `insert_filter`, and the filter is bound to `node`: roots added
    /// on `node` later go to the filter (a QoS limit that exports made
    /// after it must not bypass).
    pub fn insert_bound_filter<N: BlockNode>(
        &self,
        node: &str,
        filter_name: &str,
        filter: N,
    ) -> Result<NodeId, GraphError> {
        let _span = tracing::info_span!("graph_insert_filter", node, filter_name).entered();
        self.put_filter(node, filter_name, filter, &[], true)
    }

    /// `insert_filter` for a filter with more children than the node it
    /// stands above: `node` is its child slot 0, `others` the next slots
    /// (a mirror's target). One publication.
    pub fn insert_filter_with<N: BlockNode>(
        &self,
        node: &str,
        filter_name: &str,
        filter: N,
        others: &[&str],
    ) -> Result<NodeId, GraphError> {
        let _span = tracing::info_span!("graph_insert_filter_with", node, filter_name).entered();
        self.put_filter(node, filter_name, filter, others, false)
    }

    /// The three inserts above: `filter` above `node` (its child slot 0),
    /// `others` in the next slots, `bound` to `node` or not. A one-child
    /// filter of the wrong shape is `NotAFilter`; with `others`, the child
    /// count error names what was expected.
    fn put_filter<N: BlockNode>(
        &self,
        node: &str,
        filter_name: &str,
        filter: N,
        others: &[&str],
        bound: bool,
    ) -> Result<NodeId, GraphError> {
        if filter_name.is_empty() {
            return Err(GraphError::EmptyName);
        }
        let cell = self
            .new_cell(filter_name, filter, 1 + others.len())
            .map_err(|e| match e {
                GraphError::Children { .. } if others.is_empty() => {
                    GraphError::NotAFilter(filter_name.into())
                }
                e => e,
            })?;
        self.update(|s| {
            if s.names.contains_key(filter_name) {
                return Err(GraphError::NameExists(filter_name.into()));
            }
            let below = lookup(s, node)?;
            let mut kids = vec![below];
            for o in others {
                kids.push(lookup(s, o)?);
            }
            check_children(s, &*cell, &kids)?;
            let f = insert_node(s, cell, kids);
            redirect(s, below, f, Some(f));
            if let Some(Some(e)) = s.nodes.get_mut(f.0 as usize) {
                e.bound = bound;
            }
            Ok(f)
        })
    }

    /// Every parent edge and root that points at `old` points at `new`, a
    /// node already in the graph, and `old` leaves the graph, in one
    /// publication (a mirror's pivot or cancel; `replace_node` instead
    /// swaps in a new node under the old one's name). `new` must have `old`'s geometry. `after_grace` runs once no
    /// reactor routes by the old snapshot and before `old` is drained (it
    /// may need to finish I/O that `old` holds); if it fails, the old
    /// snapshot is published again.
    pub fn redirect_node(
        &self,
        old: &str,
        new: &str,
        after_grace: impl FnOnce() -> Result<(), GraphError>,
    ) -> Result<(), GraphError> {
        let _span = tracing::info_span!("graph_redirect_node", old, new).entered();
        self.update_checked(
            |s| {
                let o = lookup(s, old)?;
                let n = lookup(s, new)?;
                let (go, gn) = (s.entry(o).expect("live").geometry, s.entry(n).expect("live").geometry);
                if (go.block_size, go.block_count) != (gn.block_size, gn.block_count) {
                    return Err(GraphError::Geometry {
                        filter: old.into(),
                        child: new.into(),
                        expected: go,
                        got: gn,
                    });
                }
                redirect(s, o, n, Some(o));
                // Retired, not dropped: writes the node still holds (a
                // mirror's, frozen for the pivot) and writes on their way
                // to its children reach them until it drained.
                retire(s, o);
                Ok(())
            },
            after_grace,
        )
    }

    /// Removes a filter: its parents and roots point at its child again.
    pub fn remove_filter(&self, name: &str) -> Result<(), GraphError> {
        let _span = tracing::info_span!("graph_remove_filter", name).entered();
        self.update(|s| {
            let f = lookup(s, name)?;
            let entry = s.nodes[f.0 as usize].as_ref().expect("looked up");
            if entry.children.len() != 1 {
                return Err(GraphError::NotAFilter(name.into()));
            }
            let child = entry.children[0];
            redirect(s, f, child, None);
            retire(s, f);
            Ok(())
        })
    }

    /// Nodes, edges and roots at the current generation.
    pub fn describe(&self) -> GraphInfo {
        self.read(|s| {
            let name_of = |id: NodeId| s.entry(id).map(|e| e.cell.core().name.clone());
            let mut nodes: Vec<NodeInfo> = s
                .live_nodes()
                .map(|(_, e)| NodeInfo {
                    name: e.cell.core().name.clone(),
                    kind: e.cell.kind(),
                    geometry: e.geometry,
                    children: e.children.iter().filter_map(|c| name_of(*c)).collect(),
                    histogram: e.histogram,
                })
                .collect();
            nodes.sort_by(|a, b| a.name.cmp(&b.name));
            let mut roots: Vec<RootInfo> = s
                .live_roots()
                .filter_map(|(_, r)| {
                    Some(RootInfo {
                        name: r.name.clone(),
                        node: name_of(r.node)?,
                    })
                })
                .collect();
            roots.sort_by(|a, b| a.name.cmp(&b.name));
            GraphInfo {
                generation: s.generation,
                nodes,
                roots,
            }
        })
    }

    /// Runs `f` on the node called `name` if it is an `N`: for control-plane
    /// calls on a kind's own API (changing a delay's latencies, arming an
    /// error injection) while the node is in the graph. Holds the writer
    /// lock meanwhile: `f` must not change the graph.
    pub fn with_node<N: BlockNode, R>(&self, name: &str, f: impl FnOnce(&N) -> R) -> Option<R> {
        self.read(|s| {
            let e = s.entry(s.node_id(name)?)?;
            e.cell.as_any().downcast_ref::<N>().map(f)
        })
    }

    /// Geometry of the node called `name`.
    pub fn node_geometry(&self, name: &str) -> Option<Geometry> {
        self.read(|s| Some(s.entry(s.node_id(name)?)?.geometry))
    }

    /// Counters of a node, summed over reactors.
    pub fn node_stats(&self, name: &str) -> Option<NodeStats> {
        self.read(|s| {
            let e = s.entry(s.node_id(name)?)?;
            let mut st = NodeStats {
                histogram: e.histogram,
                ..NodeStats::default()
            };
            for c in e.cell.core().counters.iter() {
                for op in IoOp::ALL {
                    let i = op.as_index();
                    st.ops[i] += c.ops[i].load(Ordering::Relaxed);
                    st.bytes[i] += c.bytes[i].load(Ordering::Relaxed);
                    st.errors[i] += c.errors[i].load(Ordering::Relaxed);
                    c.latency[i].add_to(&mut st.latency[i]);
                }
                st.inflight += c.inflight();
            }
            Some(st)
        })
    }

    /// Publication counters.
    pub fn stats(&self) -> GraphStats {
        GraphStats {
            generation: self.read(|s| s.generation),
            publishes: self.counters.publishes.load(Ordering::Relaxed),
            reclaimed: self.counters.reclaimed.load(Ordering::Relaxed),
            nodes_closed: self.counters.nodes_closed.load(Ordering::Relaxed),
            sweeps: self.counters.sweeps.load(Ordering::Relaxed),
            grace_total: Duration::from_nanos(self.counters.grace_ns.load(Ordering::Relaxed)),
            grace_periods: *self
                .counters
                .grace_hist
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        }
    }

    /// Shutdown: unpublishes everything, waits for in-flight I/O on every
    /// node and closes them all (file nodes make their data durable).
    pub fn shutdown(&self) {
        let _span = tracing::info_span!("graph_shutdown").entered();
        let _ = self.update(|s| {
            s.roots.clear();
            let ids: Vec<NodeId> = s.live_nodes().map(|(id, _)| id).collect();
            for id in ids {
                retire(s, id);
            }
            Ok(())
        });
    }
}

impl Graph {
    /// The publication nodes point at (`filter::Home`).
    fn rcu_ptr(&self) -> *const Rcu<Snapshot> {
        &**self.snapshots
    }
}

impl Drop for Graph {
    fn drop(&mut self) {
        // Exclusive (&mut self): no guard or `read` borrows the graph any more.
        let last = self.snapshots.get_mut();
        // I/O still in flight on a node (its reactors are gone, or the graph
        // is unreachable from them) points at the node, which writes its
        // counters when it completes, and may be held by a filter that will
        // forward it through this publication (`filter::Home`). Nothing can
        // wait for it here (this may run on the reactor that will complete
        // it), so then the publication and every node are leaked instead of
        // freed. The count read is final: every pin was made through a guard
        // borrowing this graph (so before the last `Arc<Graph>` was dropped,
        // which orders it before this drop) or by I/O already pinned on one
        // of its nodes, which this finds pinned.
        let inflight: u64 = last.all_nodes().map(|(_, e)| e.cell.core().inflight()).sum();
        if inflight != 0 {
            tracing::warn!(
                inflight,
                "graph dropped with I/O in flight; its nodes are leaked, not closed"
            );
            return;
        }
        // Retired nodes are closed already; the rest are closed now, unless
        // someone else still holds them.
        for (_, e) in last.live_nodes() {
            if Arc::strong_count(&e.cell) == 1 {
                e.cell.close();
            }
        }
        // SAFETY: dropped once, here; nothing reads it after (`&mut self`,
        // and no I/O in flight could reach it through a node's `Home`).
        unsafe { ManuallyDrop::drop(&mut self.snapshots) };
    }
}

fn lookup(s: &Snapshot, name: &str) -> Result<NodeId, GraphError> {
    s.node_id(name)
        .ok_or_else(|| GraphError::NoSuchNode(name.into()))
}

fn insert_node(s: &mut Snapshot, cell: Arc<dyn DynNode>, children: Vec<NodeId>) -> NodeId {
    let name = cell.core().name.clone();
    let geometry = cell.geometry();
    let core: *const crate::pin::NodeCore = cell.core();
    let entry = NodeEntry {
        cell,
        geometry,
        children,
        histogram: OpMask::DEFAULT,
        bound: false,
        retired: false,
    };
    let id = NodeId(put_in_free_slot(&mut s.nodes, entry));
    // SAFETY: `core` points into the cell the entry just took, alive.
    unsafe { &*core }.home.set_id(id);
    s.names.insert(name, id);
    id
}

/// Takes node `id` out of the graph in this version: its name is free,
/// its entry stays (children and all) for the I/O it still holds, until
/// `Graph::update` drained and closed it.
fn retire(s: &mut Snapshot, id: NodeId) {
    if let Some(e) = s.nodes[id.0 as usize].as_mut() {
        e.retired = true;
        let name = e.cell.core().name.clone();
        if s.names.get(&name) == Some(&id) {
            s.names.remove(&name);
        }
    }
}

/// The retired nodes in drain order: each after every retired node that
/// routes to it, so that no retired node still forwards I/O to a child
/// that is being closed.
fn parents_first(s: &Snapshot, retired: &[(NodeId, Arc<dyn DynNode>)]) -> Vec<Arc<dyn DynNode>> {
    let mut left: Vec<&(NodeId, Arc<dyn DynNode>)> = retired.iter().collect();
    let mut out = Vec::with_capacity(left.len());
    while !left.is_empty() {
        let before = left.len();
        let mut i = 0;
        while i < left.len() {
            let id = left[i].0;
            let has_parent = left.iter().any(|(p, _)| {
                *p != id && s.entry(*p).is_some_and(|e| e.children.contains(&id))
            });
            if has_parent {
                i += 1;
            } else {
                out.push(left.remove(i).1.clone());
            }
        }
        if left.len() == before {
            // A cycle cannot be published (`validate`); drain the rest in
            // any order rather than loop.
            out.extend(left.drain(..).map(|(_, c)| c.clone()));
        }
    }
    out
}

/// Stores `item` in the first empty slot (ids are reused so the tables do
/// not grow with churn) and returns its index.
fn put_in_free_slot<T>(slots: &mut Vec<Option<T>>, item: T) -> u32 {
    match slots.iter().position(Option::is_none) {
        Some(i) => {
            slots[i] = Some(item);
            i as u32
        }
        None => {
            slots.push(Some(item));
            slots.len() as u32 - 1
        }
    }
}

/// The node a root added on `id` points at: the topmost filter bound to
/// `id` (through a chain of bound filters), or `id` itself.
fn bound_top(s: &Snapshot, mut id: NodeId) -> NodeId {
    for _ in 0..MAX_DEPTH {
        let above = s
            .live_nodes()
            .find(|(_, e)| e.bound && e.children.as_slice() == [id]);
        match above {
            Some((f, _)) => id = f,
            None => break,
        }
    }
    id
}

/// Every edge and root pointing at `from` now points at `to`, except the
/// edges of `skip` (the filter being inserted above `from`).
fn redirect(s: &mut Snapshot, from: NodeId, to: NodeId, skip: Option<NodeId>) {
    for (i, n) in s.nodes.iter_mut().enumerate() {
        let Some(n) = n else { continue };
        if Some(NodeId(i as u32)) == skip {
            continue;
        }
        for c in &mut n.children {
            if *c == from {
                *c = to;
            }
        }
    }
    for r in s.roots.iter_mut().flatten() {
        if r.node == from {
            r.node = to;
        }
    }
}

fn users_of(s: &Snapshot, id: NodeId) -> Vec<String> {
    let parents = s
        .live_nodes()
        .filter(|(_, e)| e.children.contains(&id))
        .map(|(_, e)| format!("node {:?}", e.cell.core().name));
    let roots = s
        .live_roots()
        .filter(|(_, r)| r.node == id)
        .map(|(_, r)| format!("root {:?}", r.name));
    parents.chain(roots).collect()
}

/// A filter that forwards I/O unchanged must look exactly like its
/// children; any node may refuse its children (`check_children`).
fn check_children(s: &Snapshot, node: &dyn DynNode, kids: &[NodeId]) -> Result<(), GraphError> {
    let mut geos = Vec::with_capacity(kids.len());
    for k in kids {
        let c = s.entry(*k).expect("looked up");
        // The published geometry: a resized leaf's cell may still report
        // its old size (`Graph::resize`).
        let (expected, got) = (c.geometry, node.geometry());
        if node.same_geometry_as_children()
            && (expected.block_size != got.block_size || expected.block_count != got.block_count)
        {
            return Err(GraphError::Geometry {
                filter: node.core().name.clone(),
                child: c.cell.core().name.clone(),
                expected,
                got,
            });
        }
        geos.push(expected);
    }
    node.check_children(&geos)
        .map_err(|reason| GraphError::BadChildren {
            name: node.core().name.clone(),
            reason,
        })
}

/// After node `id`'s geometry changed in `s`: every parent that follows
/// its children's size takes its new geometry, and so on up. `Err` names
/// the node that refuses the change, and why (`s` is then dropped).
fn propagate_resize(s: &mut Snapshot, id: NodeId) -> Result<(), (String, String)> {
    let mut work = vec![id];
    // Bounded: the graph has no cycles (checked at every publication) and
    // a node is pushed again only when its geometry changed.
    while let Some(c) = work.pop() {
        for i in 0..s.nodes.len() {
            let Some(n) = &s.nodes[i] else { continue };
            for (slot, k) in n.children.iter().enumerate() {
                if *k != c {
                    continue;
                }
                // Every child's geometry: a RAID's size depends on all of
                // its members'.
                let kids: Vec<Geometry> = n
                    .children
                    .iter()
                    .map(|k| s.entry(*k).expect("live child").geometry)
                    .collect();
                let took = n
                    .cell
                    .child_resized(slot, &kids, n.geometry)
                    .map_err(|reason| (n.cell.core().name.clone(), reason))?;
                if let Some(g) = took {
                    if g != n.geometry {
                        s.nodes[i].as_mut().expect("live").geometry = g;
                        work.push(NodeId(i as u32));
                    }
                }
                // A node with this child in two slots is asked once.
                break;
            }
        }
    }
    Ok(())
}

/// The roots of `next` whose geometry differs from what they had in `old`.
fn root_changes(old: &Snapshot, next: &Snapshot) -> Vec<RootChange> {
    next.live_roots()
        .filter_map(|(id, r)| {
            let now = next.entry(r.node)?.geometry;
            let before = old.roots.get(id.0 as usize)?.as_ref()?;
            let was = old.entry(before.node)?.geometry;
            (before.name == r.name && (was.block_count, was.block_size) != (now.block_count, now.block_size))
                .then(|| RootChange {
                    root: id,
                    name: r.name.clone(),
                    geometry: now,
                })
        })
        .collect()
}

/// No cycles and no path deeper than `MAX_DEPTH`.
fn validate(s: &Snapshot) -> Result<(), GraphError> {
    // Depth of the longest path starting at each node, by DFS with an
    // on-stack marker for cycle detection. Graphs here are small.
    fn depth(
        s: &Snapshot,
        id: NodeId,
        on_stack: &mut Vec<NodeId>,
        memo: &mut std::collections::HashMap<NodeId, usize>,
    ) -> Result<usize, GraphError> {
        if let Some(d) = memo.get(&id) {
            return Ok(*d);
        }
        if on_stack.contains(&id) {
            let name = |i: NodeId| {
                s.entry(i)
                    .map(|e| e.cell.core().name.clone())
                    .unwrap_or_default()
            };
            return Err(GraphError::Cycle {
                parent: name(*on_stack.last().expect("non-empty")),
                child: name(id),
            });
        }
        on_stack.push(id);
        let mut d = 0;
        if let Some(e) = s.entry(id) {
            for c in &e.children {
                d = d.max(depth(s, *c, on_stack, memo)?);
            }
        }
        on_stack.pop();
        memo.insert(id, d + 1);
        Ok(d + 1)
    }
    // Live nodes route only to live nodes and roots point at live nodes:
    // retired entries are reachable only by I/O already pinned on them.
    let live = |id: &NodeId| s.entry(*id).is_some_and(|e| !e.retired);
    debug_assert!(s.live_nodes().all(|(_, e)| e.children.iter().all(live)));
    debug_assert!(s.live_roots().all(|(_, r)| live(&r.node)));
    let mut memo = std::collections::HashMap::new();
    for (id, _) in s.live_nodes() {
        if depth(s, id, &mut Vec::new(), &mut memo)? > MAX_DEPTH {
            return Err(GraphError::TooDeep);
        }
    }
    Ok(())
}
