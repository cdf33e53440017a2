//! The filter API (`pollux_graph::filter`) under graph changes: I/O held by
//! a filter, or fanned out by one, outlives the filter's removal and still
//! reaches the filter's children; a node's own I/O reaches its children
//! only while the node is in the graph.

mod common;

use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use common::filters::{release_parked, HalvesFilter, ParkFilter};
use common::{io, runtime, ChanSink};
use pollux_graph::nodes::{passthru::PassthruNode, ram::RamNode};
use pollux_graph::{
    AlignedBuf, BlockNode, Geometry, Graph, GraphError, Io, IoBuf, IoError, IoOp, IoResult, RootId,
};
use pollux_poller::Reactor;

const MIB: u64 = 1 << 20;

type Done = common::Completion;

/// Submits a write of `data` at `offset` through `root` on reactor 0
/// without waiting for it.
fn start_write(g: &Arc<Graph>, root: RootId, offset: u64, data: Vec<u8>) -> Done {
    let len = data.len() as u64;
    common::start_io(g, 0, root, IoOp::Write, offset, len, Some(data))
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

/// Waits until `parked` reads `n`.
fn wait_parked(parked: &AtomicUsize, n: usize) {
    for _ in 0..10_000 {
        if parked.load(Ordering::SeqCst) == n {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("{} I/O parked, expected {n}", parked.load(Ordering::SeqCst));
}

/// Removing a filter that holds a write waits for the write, and the write,
/// released after the filter left the graph, lands on the filter's child.
#[test]
fn io_held_by_a_removed_filter_reaches_its_child() {
    let rt = runtime(1);
    let g = Graph::new(rt.handle());
    g.add_node("ram0", RamNode::new(MIB, 4096).unwrap(), &[])
        .unwrap();
    let root = g.add_root("r", "ram0").unwrap();
    let geometry = g.node_geometry("ram0").unwrap();
    let parked = Arc::new(AtomicUsize::new(0));
    g.insert_filter(
        "ram0",
        "park",
        ParkFilter {
            geometry,
            parked: parked.clone(),
        },
    )
    .unwrap();

    let data = pattern(8192, 7);
    let done = start_write(&g, root, 4096, data.clone());
    wait_parked(&parked, 1);

    let g2 = g.clone();
    let remover = std::thread::spawn(move || g2.remove_filter("park"));
    std::thread::sleep(Duration::from_millis(100));
    assert!(!remover.is_finished(), "removed with I/O held");
    // Gone from the graph already (as the reactors see it: the control
    // plane's view waits for the removal's lock), and new I/O goes
    // straight to ram0.
    let g3 = g.clone();
    let seen = rt
        .handle()
        .call(0, move |r: &Reactor| g3.snapshot(r).node_id("park"));
    assert_eq!(seen, None);
    assert_eq!(io(&g, root, IoOp::Read, 0, 4096, None).0, Ok(()));

    let p = parked.clone();
    rt.handle()
        .call(0, move |r: &Reactor| release_parked(r, &p));
    let (res, _) = done.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(res, Ok(()));
    remover.join().unwrap().unwrap();
    assert_eq!(g.stats().nodes_closed, 1);

    let (res, read) = io(&g, root, IoOp::Read, 4096, 8192, None);
    assert_eq!(res, Ok(()));
    assert_eq!(read, data, "the released write did not land on ram0");
}

/// A fan-out filter removed while its children are in flight (parked
/// below it): the removal waits for the parent, the children land, and
/// the parent completes once both did.
#[test]
fn fan_out_filter_removed_while_its_children_are_in_flight() {
    let rt = runtime(1);
    let g = Graph::new(rt.handle());
    g.add_node("ram0", RamNode::new(MIB, 4096).unwrap(), &[])
        .unwrap();
    let root = g.add_root("r", "ram0").unwrap();
    let geometry = g.node_geometry("ram0").unwrap();
    let parked = Arc::new(AtomicUsize::new(0));
    g.insert_filter(
        "ram0",
        "park",
        ParkFilter {
            geometry,
            parked: parked.clone(),
        },
    )
    .unwrap();
    g.insert_filter("park", "halves", HalvesFilter { geometry })
        .unwrap();

    let data = pattern(4 * 4096, 3);
    let done = start_write(&g, root, 8192, data.clone());
    // Both halves parked below the fan-out filter.
    wait_parked(&parked, 2);

    let g2 = g.clone();
    let remover = std::thread::spawn(move || g2.remove_filter("halves"));
    std::thread::sleep(Duration::from_millis(100));
    assert!(!remover.is_finished(), "removed with a parent in flight");
    assert!(done.try_recv().is_err(), "the parent completed early");

    let p = parked.clone();
    rt.handle()
        .call(0, move |r: &Reactor| release_parked(r, &p));
    let (res, _) = done.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(res, Ok(()));
    remover.join().unwrap().unwrap();
    g.remove_filter("park").unwrap();

    let (res, read) = io(&g, root, IoOp::Read, 8192, 4 * 4096, None);
    assert_eq!(res, Ok(()));
    assert_eq!(read, data, "a half went missing");
    // Each half went through ram0 as its own I/O.
    let st = g.node_stats("ram0").unwrap();
    assert_eq!(st.ops[IoOp::Write.as_index()], 2);
}

/// A fan-out filter's children read into the right parts of the parent's
/// buffer, including for a buffer made of several segments.
#[test]
fn fan_out_reads_fill_the_parent_buffer() {
    let rt = runtime(1);
    let g = Graph::new(rt.handle());
    g.add_node("ram0", RamNode::new(MIB, 512).unwrap(), &[])
        .unwrap();
    let root = g.add_root("r", "ram0").unwrap();
    let data = pattern(3 * 512, 9);
    assert_eq!(
        io(&g, root, IoOp::Write, 512, 3 * 512, Some(data.clone())).0,
        Ok(())
    );
    let geometry = g.node_geometry("ram0").unwrap();
    g.insert_filter("ram0", "halves", HalvesFilter { geometry })
        .unwrap();

    let (res, read) = io(&g, root, IoOp::Read, 512, 3 * 512, None);
    assert_eq!(res, Ok(()));
    assert_eq!(read, data);

    // Three segments of 700, 100 and 736 bytes: the halves (512 and 1024
    // bytes) cut across them.
    let (tx, rx) = mpsc::channel();
    let g2 = g.clone();
    rt.handle().send_blocking(0, move |r: &Reactor| {
        let mem = Rc::new(std::cell::RefCell::new(vec![0u8; 3 * 512]));
        let base = mem.borrow_mut().as_mut_ptr();
        let segs = [(0, 700), (700, 100), (800, 736)]
            .map(|(at, len)| pollux_graph::RawSegment {
                // SAFETY: inside the 1536-byte vector.
                ptr: unsafe { base.add(at) },
                len,
            })
            .to_vec();
        // SAFETY: the segments are disjoint parts of `mem`, which `keep`
        // holds; nothing borrows it until the I/O completed.
        let buf = unsafe { IoBuf::raw(segs, mem.clone()) };
        struct Back(
            mpsc::Sender<(IoResult, Vec<u8>)>,
            Rc<std::cell::RefCell<Vec<u8>>>,
        );
        impl pollux_graph::IoSink for Back {
            fn io_done(&self, _r: &Reactor, io: Io, result: IoResult) {
                drop(io);
                let _ = self.0.send((result, self.1.borrow().clone()));
            }
        }
        let io = Io::new(IoOp::Read, 512, 3 * 512, buf, Rc::new(Back(tx, mem)), 0);
        g2.snapshot(r).submit(r, root, io);
    });
    let (res, read) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(res, Ok(()));
    assert_eq!(read, data);
}

/// A node's own I/O (`NodeLink`) reaches its children while the node is
/// in the graph, and is refused once it left.
#[test]
fn own_io_reaches_children_only_while_the_node_is_live() {
    let rt = runtime(1);
    let g = Graph::new(rt.handle());
    g.add_node("ram0", RamNode::new(MIB, 4096).unwrap(), &[])
        .unwrap();
    let root = g.add_root("r", "ram0").unwrap();
    let geometry = g.node_geometry("ram0").unwrap();
    g.insert_filter("ram0", "pt0", PassthruNode::new(geometry))
        .unwrap();
    let link = g.link("pt0").unwrap();
    assert!(link.is_live());
    assert_eq!(link.child_geometry(0), Some(geometry));

    let own_write = |link: pollux_graph::NodeLink, data: Vec<u8>| {
        let (tx, rx) = mpsc::channel();
        g.handle().send_blocking(0, move |r: &Reactor| {
            let mut b = AlignedBuf::zeroed(data.len());
            b.as_mut_slice().copy_from_slice(&data);
            let len = data.len() as u64;
            let io = Io::new(
                IoOp::Write,
                0,
                len,
                IoBuf::Owned(b),
                Rc::new(ChanSink(tx)),
                0,
            );
            link.submit(r, 0, io);
        });
        rx.recv_timeout(Duration::from_secs(10)).unwrap().0
    };
    let data = pattern(4096, 1);
    assert_eq!(own_write(link.clone(), data.clone()), Ok(()));
    assert_eq!(io(&g, root, IoOp::Read, 0, 4096, None).1, data);
    // Counted on the child, not on the node that issued it.
    assert_eq!(g.node_stats("pt0").unwrap().ops[IoOp::Write.as_index()], 0);

    g.remove_filter("pt0").unwrap();
    assert!(!link.is_live());
    assert_eq!(
        own_write(link.clone(), pattern(4096, 2)),
        Err(IoError::NoDevice)
    );
    // A new node under the same name is not the linked one.
    g.insert_filter("ram0", "pt0", PassthruNode::new(geometry))
        .unwrap();
    assert!(!link.is_live());
    assert_eq!(own_write(link, pattern(4096, 2)), Err(IoError::NoDevice));
    assert_eq!(io(&g, root, IoOp::Read, 0, 4096, None).1, data);
}

/// Forwarding an I/O no filter holds fails it instead of routing it.
#[test]
fn forwarding_an_unheld_io_fails_it() {
    let rt = runtime(1);
    let (tx, rx) = mpsc::channel();
    rt.handle().send_blocking(0, move |r: &Reactor| {
        let io = Io::new(IoOp::Flush, 0, 0, IoBuf::None, Rc::new(ChanSink(tx)), 0);
        io.forward(r, 0);
    });
    let (res, _) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(res, Err(IoError::NoDevice));
}

/// A node whose geometry is not its child's (a partition) says so, and
/// checks its children itself.
struct Half(Geometry);

impl BlockNode for Half {
    type Channel = ();
    fn kind(&self) -> &'static str {
        "test_half"
    }
    fn geometry(&self) -> Geometry {
        Geometry {
            block_count: self.0.block_count / 2,
            ..self.0
        }
    }
    fn num_children(&self) -> usize {
        1
    }
    fn same_geometry_as_children(&self) -> bool {
        false
    }
    fn check_children(&self, children: &[Geometry]) -> Result<(), String> {
        match children {
            [c] if c.block_size == self.0.block_size && c.block_count >= self.0.block_count => {
                Ok(())
            }
            _ => Err("child too small".into()),
        }
    }
    fn route(&self, _io: &mut Io) -> Option<usize> {
        Some(0)
    }
    fn create_channel(&self, _r: &Reactor) {}
    fn execute(&self, r: &Reactor, _ch: &(), io: Io) {
        io.complete_later(r, Err(IoError::Unsupported("execute")));
    }
}

#[test]
fn nodes_check_their_children_geometry() {
    let rt = runtime(1);
    let g = Graph::new(rt.handle());
    g.add_node("ram0", RamNode::new(MIB, 4096).unwrap(), &[])
        .unwrap();
    g.add_node("small", RamNode::new(MIB / 4, 4096).unwrap(), &[])
        .unwrap();
    let geometry = g.node_geometry("ram0").unwrap();
    g.add_node("half", Half(geometry), &["ram0"]).unwrap();
    assert_eq!(g.node_geometry("half").unwrap().size(), MIB / 2);
    assert!(matches!(
        g.add_node("half2", Half(geometry), &["small"]),
        Err(GraphError::BadChildren { .. })
    ));
    assert!(matches!(
        g.replace_child("half", "ram0", "small"),
        Err(GraphError::BadChildren { .. })
    ));
    // Nodes that pass I/O through keep the same-geometry rule.
    assert!(matches!(
        g.add_node("pt", PassthruNode::new(geometry), &["small"]),
        Err(GraphError::Geometry { .. })
    ));
}
