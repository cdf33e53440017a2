//! Resize: a new size is published like any graph change, filters above
//! follow it, watchers hear of changed roots, and a shrink under in-flight
//! I/O is refused.

mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use common::{io, runtime, ChanSink};
use pollux_graph::nodes::file::FileNode;
use pollux_graph::nodes::{null::NullNode, passthru::PassthruNode, ram::RamNode};
use pollux_graph::{BlockNode, Geometry, Graph, GraphError, Io, IoBuf, IoError, IoOp, RootChange};
use pollux_poller::Reactor;

const MIB: u64 = 1 << 20;

#[test]
fn grow_reaches_filters_roots_and_watchers() {
    let rt = runtime(1);
    let g = Graph::new(rt.handle());
    g.add_node("null0", NullNode::new(MIB, 512), &[]).unwrap();
    g.add_node(
        "pt0",
        PassthruNode::new(g.node_geometry("null0").unwrap()),
        &["null0"],
    )
    .unwrap();
    let root = g.add_root("r", "pt0").unwrap();
    let seen: Arc<Mutex<Vec<RootChange>>> = Arc::default();
    let s2 = seen.clone();
    g.watch_roots(move |c| s2.lock().unwrap().extend_from_slice(c));

    // Past the old end: refused by the range check.
    let (res, _) = io(&g, root, IoOp::Read, MIB, 4096, None);
    assert!(matches!(res, Err(IoError::OutOfRange { .. })), "{res:?}");

    let gen = g.stats().generation;
    assert_eq!(g.resize("null0", 2 * MIB / 512).unwrap(), MIB / 512);
    assert_eq!(g.stats().generation, gen + 1, "one publication");
    assert_eq!(g.node_geometry("pt0").unwrap().size(), 2 * MIB);
    g.read(|s| assert_eq!(s.root_geometry(root).unwrap().size(), 2 * MIB));
    io(&g, root, IoOp::Read, MIB, 4096, None).0.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].name, "r");
    assert_eq!(seen[0].geometry.block_count, 2 * MIB / 512);

    // The same size again publishes nothing.
    g.resize("null0", 2 * MIB / 512).unwrap();
    assert_eq!(g.stats().generation, gen + 1);
    // A filter is resized only by its child.
    assert_eq!(
        g.resize("pt0", 8).unwrap_err(),
        GraphError::NotResizable("pt0".into())
    );
    assert_eq!(
        g.resize("null0", 0).unwrap_err(),
        GraphError::ZeroSize("null0".into())
    );
}

#[test]
fn ram_has_a_fixed_size() {
    let rt = runtime(1);
    let g = Graph::new(rt.handle());
    g.add_node("ram0", RamNode::new(MIB, 512).unwrap(), &[])
        .unwrap();
    assert_eq!(
        g.resize("ram0", 4096).unwrap_err(),
        GraphError::NotResizable("ram0".into())
    );
    assert_eq!(g.node_geometry("ram0").unwrap().size(), MIB);
}

thread_local! {
    /// I/O that `HoldNode` keeps in flight until the test releases it.
    static HELD: RefCell<Vec<Io>> = const { RefCell::new(Vec::new()) };
}

/// A resizable leaf that completes nothing until `release` is called on
/// its reactor: I/O stays in flight as long as the test wants.
struct HoldNode(Geometry);

impl BlockNode for HoldNode {
    type Channel = ();
    fn kind(&self) -> &'static str {
        "hold"
    }
    fn geometry(&self) -> Geometry {
        self.0
    }
    fn resize(&self, _block_count: u64) -> bool {
        true
    }
    fn create_channel(&self, _r: &Reactor) {}
    fn execute(&self, _r: &Reactor, _ch: &(), io: Io) {
        HELD.with(|h| h.borrow_mut().push(io));
    }
}

#[test]
fn shrink_under_inflight_io_is_refused() {
    let rt = runtime(1);
    let g = Graph::new(rt.handle());
    let geo = NullNode::new(MIB, 512).geometry();
    g.add_node("hold0", HoldNode(geo), &[]).unwrap();
    let root = g.add_root("r", "hold0").unwrap();

    // One write near the end, held in flight.
    let (tx, rx) = mpsc::channel();
    let g2 = g.clone();
    g.handle().call(0, move |r: &Reactor| {
        let buf = IoBuf::Owned(pollux_graph::AlignedBuf::zeroed(4096));
        let io = Io::new(IoOp::Write, MIB - 4096, 4096, buf, Rc::new(ChanSink(tx)), 0);
        g2.snapshot(r).submit(r, root, io);
    });
    let gen = g.stats().generation;
    let err = g.resize("hold0", MIB / 512 / 2).unwrap_err();
    assert!(
        matches!(err, GraphError::ShrinkInFlight { inflight: 1, .. }),
        "{err:?}"
    );
    assert_eq!(g.stats().generation, gen, "nothing published");
    assert_eq!(g.node_geometry("hold0").unwrap().size(), MIB);

    // Released, the write completes and the shrink goes through.
    g.handle().call(0, |r: &Reactor| {
        for io in HELD.with(|h| std::mem::take(&mut *h.borrow_mut())) {
            io.complete(r, Ok(()));
        }
    });
    rx.recv_timeout(Duration::from_secs(5)).unwrap().0.unwrap();
    assert_eq!(g.resize("hold0", MIB / 512 / 2).unwrap(), MIB / 512);
    assert_eq!(g.node_geometry("hold0").unwrap().size(), MIB / 2);
    let (res, _) = io(&g, root, IoOp::Write, MIB - 4096, 4096, Some(vec![1; 4096]));
    assert!(matches!(res, Err(IoError::OutOfRange { .. })), "{res:?}");
}

#[test]
fn rescan_follows_a_file_that_grew() {
    let rt = runtime(1);
    let g = Graph::new(rt.handle());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk");
    std::fs::File::create(&path).unwrap().set_len(MIB).unwrap();
    g.add_node("f0", FileNode::open(&path, false, 512).unwrap(), &[])
        .unwrap();
    let root = g.add_root("r", "f0").unwrap();
    let (res, _) = io(&g, root, IoOp::Write, MIB, 4096, Some(vec![7; 4096]));
    assert!(res.is_err());

    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(3 * MIB)
        .unwrap();
    assert_eq!(g.rescan("f0").unwrap(), (MIB / 512, 3 * MIB / 512));
    io(&g, root, IoOp::Write, 2 * MIB, 4096, Some(vec![7; 4096]))
        .0
        .unwrap();
    let (res, back) = io(&g, root, IoOp::Read, 2 * MIB, 4096, None);
    res.unwrap();
    assert!(back.iter().all(|b| *b == 7));
    // The node's own range check follows too: the file did not grow past
    // the published size.
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 3 * MIB);

    // A null node has no backend to rescan.
    g.add_node("null0", NullNode::new(MIB, 512), &[]).unwrap();
    assert!(g.rescan("null0").is_err());
}

#[test]
fn splits_keep_their_layout_when_the_base_changes() {
    use pollux_graph::nodes::split::SplitPlan;
    let rt = runtime(1);
    let g = Graph::new(rt.handle());
    let add_split = |base: &str, count: u64, size_mb: u64| {
        let geo = g.node_geometry(base).unwrap();
        let plan = SplitPlan::new(geo, count, size_mb).unwrap();
        for i in 0..plan.count {
            g.add_node(&format!("{base}p{i}"), plan.part(geo, i), &[base])
                .unwrap();
        }
    };
    let blocks = |n: &str| g.node_geometry(n).unwrap().block_count;
    // Equal shares of whole MiB: the base may grow, the parts stay.
    g.add_node("a", NullNode::new(8 * MIB, 512), &[]).unwrap();
    add_split("a", 2, 0);
    g.resize("a", 32 * MIB / 512).unwrap();
    assert_eq!(blocks("ap1"), 4 * MIB / 512);
    // ... and shrink while it still holds them; not under them.
    g.resize("a", 8 * MIB / 512).unwrap();
    let e = g.resize("a", 6 * MIB / 512).unwrap_err().to_string();
    assert!(e.contains("cannot be resized under \"ap1\""), "{e}");
    assert_eq!(blocks("a"), 8 * MIB / 512);
    // Equal shares that are not whole MiB cannot be replayed on another
    // base size: refused.
    g.add_node("b", NullNode::new(8 * MIB, 512), &[]).unwrap();
    add_split("b", 3, 0);
    let e = g.resize("b", 16 * MIB / 512).unwrap_err().to_string();
    assert!(e.contains("not whole MiB"), "{e}");
    // A fixed part size: the base grows, the parts stay.
    g.add_node("c", NullNode::new(8 * MIB, 512), &[]).unwrap();
    add_split("c", 3, 1);
    g.resize("c", 16 * MIB / 512).unwrap();
    assert_eq!(blocks("cp2"), MIB / 512);
    g.shutdown();
    rt.shutdown();
}
