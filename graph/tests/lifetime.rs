//! Node lifetime against I/O in flight: a node that left the graph is closed
//! and freed only once the I/O that pinned it has completed, whether it left
//! by a graph change or because the graph itself was dropped.
//!
//! The node used here parks every I/O until the test releases it, so the
//! I/O is in flight across as many quiescent points as the test likes.

mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use common::{runtime, ChanSink};
use pollux_graph::{AlignedBuf, BlockNode, Geometry, Graph, Io, IoBuf, IoOp, RootId};
use pollux_poller::{Handle, Reactor};

const BLOCK: u32 = 4096;

/// What the test sees of a `HoldNode`.
#[derive(Default)]
struct State {
    parked: AtomicUsize,
    closed: AtomicBool,
    dropped: AtomicBool,
    /// Set if the node was closed or freed while an I/O was parked on it:
    /// what the graph must never do.
    violated: AtomicBool,
}

/// A leaf that completes nothing until told to.
struct HoldNode(Arc<State>);

/// The I/O parked on one reactor.
#[derive(Default)]
struct Parked(RefCell<Vec<Io>>);

impl BlockNode for HoldNode {
    type Channel = ();

    fn kind(&self) -> &'static str {
        "hold"
    }

    fn geometry(&self) -> Geometry {
        Geometry {
            block_size: BLOCK,
            block_count: 16,
            required_align: 1,
            optimal_align: BLOCK,
        }
    }

    fn create_channel(&self, _r: &Reactor) {}

    fn execute(&self, r: &Reactor, _ch: &(), io: Io) {
        self.0.parked.fetch_add(1, Ordering::SeqCst);
        r.local(|_| Parked::default()).0.borrow_mut().push(io);
    }

    fn close(&self) {
        if self.0.parked.load(Ordering::SeqCst) != 0 {
            self.0.violated.store(true, Ordering::SeqCst);
        }
        self.0.closed.store(true, Ordering::SeqCst);
    }
}

impl Drop for HoldNode {
    fn drop(&mut self) {
        if self.0.parked.load(Ordering::SeqCst) != 0 {
            self.0.violated.store(true, Ordering::SeqCst);
        }
        self.0.dropped.store(true, Ordering::SeqCst);
    }
}

/// A graph whose root "r" leads to one `HoldNode`, with one write parked on
/// it. The receiver gets the write's completion once the test releases it.
fn graph_with_parked_write(handle: &Handle) -> (Arc<Graph>, Arc<State>, Completions) {
    let graph = Graph::new(handle);
    let state = Arc::new(State::default());
    graph
        .add_node("hold", HoldNode(state.clone()), &[])
        .unwrap();
    let root = graph.add_root("r", "hold").unwrap();
    let (tx, rx) = mpsc::channel();
    submit(&graph, root, tx);
    assert_eq!(state.parked.load(Ordering::SeqCst), 1);
    (graph, state, rx)
}

/// What a `ChanSink` reports: each I/O's result and the data it read.
type Completions = mpsc::Receiver<(pollux_graph::IoResult, Vec<u8>)>;

/// Submits one write through `root` on reactor 0; it parks on the node.
fn submit(graph: &Arc<Graph>, root: RootId, tx: mpsc::Sender<(pollux_graph::IoResult, Vec<u8>)>) {
    let g = graph.clone();
    graph.handle().call(0, move |r: &Reactor| {
        let buf = IoBuf::Owned(AlignedBuf::zeroed(BLOCK as usize));
        let io = Io::new(
            IoOp::Write,
            0,
            u64::from(BLOCK),
            buf,
            Rc::new(ChanSink(tx)),
            1,
        );
        g.snapshot(r).submit(r, root, io);
    });
}

/// Completes every I/O parked on reactor 0.
fn release(handle: &Handle, state: &Arc<State>) {
    let state = state.clone();
    handle.call(0, move |r: &Reactor| {
        let parked = std::mem::take(&mut *r.local(|_| Parked::default()).0.borrow_mut());
        for io in parked {
            // Counted down before the completion so that a close or free the
            // completion allows is not mistaken for a violation.
            state.parked.fetch_sub(1, Ordering::SeqCst);
            io.complete(r, Ok(()));
        }
    });
}

#[test]
fn removed_node_is_closed_only_after_its_io_completes() {
    let rt = runtime(1);
    let (graph, state, rx) = graph_with_parked_write(rt.handle());

    // The I/O stays in flight over many reactor iterations (and grace
    // periods: removing the root publishes and waits for one).
    graph.remove_root("r").unwrap();
    let g = graph.clone();
    let remover = std::thread::spawn(move || g.remove_node("hold"));
    // The removal waits for the parked I/O, however long it takes.
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        !remover.is_finished(),
        "remove_node returned with I/O in flight"
    );
    assert!(!state.closed.load(Ordering::SeqCst));
    assert!(!state.dropped.load(Ordering::SeqCst));

    release(rt.handle(), &state);
    let (res, _) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(res, Ok(()));
    remover.join().unwrap().unwrap();
    assert!(
        state.closed.load(Ordering::SeqCst),
        "the node was not closed"
    );
    assert!(
        state.dropped.load(Ordering::SeqCst),
        "the node was not freed"
    );
    assert!(
        !state.violated.load(Ordering::SeqCst),
        "closed or freed with I/O in flight"
    );
    assert_eq!(graph.stats().nodes_closed, 1);
}

#[test]
fn dropping_the_graph_with_io_in_flight_leaks_the_node_instead_of_freeing_it() {
    let rt = runtime(1);
    let (graph, state, rx) = graph_with_parked_write(rt.handle());

    // The last reference: the graph and its snapshot go away while the I/O
    // still points at the node.
    assert_eq!(Arc::strong_count(&graph), 1);
    drop(graph);
    assert!(
        !state.closed.load(Ordering::SeqCst) && !state.dropped.load(Ordering::SeqCst),
        "the node was closed or freed under its in-flight I/O"
    );

    // Its completion still finds the node's counters alive.
    release(rt.handle(), &state);
    let (res, _) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(res, Ok(()));
    assert!(!state.violated.load(Ordering::SeqCst));
}

#[test]
fn dropping_an_idle_graph_closes_and_frees_its_nodes() {
    let rt = runtime(1);
    let (graph, state, rx) = graph_with_parked_write(rt.handle());
    release(rt.handle(), &state);
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap().0, Ok(()));

    drop(graph);
    assert!(state.closed.load(Ordering::SeqCst));
    assert!(state.dropped.load(Ordering::SeqCst));
    assert!(!state.violated.load(Ordering::SeqCst));
}
