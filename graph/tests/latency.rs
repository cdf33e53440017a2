//! Latency histograms per node and op, and the grace-period histogram.

mod common;

use common::{io, runtime};
use pollux_graph::nodes::{passthru::PassthruNode, ram::RamNode};
use pollux_graph::{Graph, IoOp, OpMask, RootId};

const MIB: u64 = 1 << 20;

/// A 1 MiB ram0 under a passthru filter pt0, exported as root "r": a path
/// of two nodes, each with its own histogram.
fn ram_under_passthru(g: &Graph) -> RootId {
    g.add_node("ram0", RamNode::new(MIB, 512).unwrap(), &[])
        .unwrap();
    let geo = g.node_geometry("ram0").unwrap();
    g.insert_filter("ram0", "pt0", PassthruNode::new(geo))
        .unwrap();
    g.add_root("r", "pt0").unwrap()
}

#[test]
fn every_node_on_the_path_records_successful_io_latency() {
    let rt = runtime(1);
    let g = Graph::new(rt.handle());
    let root = ram_under_passthru(&g);
    for _ in 0..3 {
        io(&g, root, IoOp::Write, 0, 4096, Some(vec![1; 4096]))
            .0
            .unwrap();
    }
    io(&g, root, IoOp::Read, 0, 512, None).0.unwrap();
    // Failed I/O counts as an error, not in the latency histogram, so a
    // histogram's count always equals the op counter.
    assert!(io(&g, root, IoOp::Read, MIB, 512, None).0.is_err());

    for name in ["pt0", "ram0"] {
        let st = g.node_stats(name).unwrap();
        for op in IoOp::ALL {
            let i = op.as_index();
            assert_eq!(st.latency[i].count(), st.ops[i], "{name} {op:?}");
        }
        let w = st.latency[IoOp::Write.as_index()];
        assert_eq!(w.count(), 3, "{name}");
        // Each I/O crossed a message and a loop iteration: not zero, and
        // well under the 10 s the test would time out at.
        assert!(w.sum_ns > 0 && w.sum_ns < 30_000_000_000, "{name} {w:?}");
    }
    // The range check failed at the filter, before the I/O reached ram0.
    assert_eq!(g.node_stats("pt0").unwrap().errors[0], 1);
    assert_eq!(g.node_stats("ram0").unwrap().errors[0], 0);
}

/// `Graph::set_histogram` (SPDK's `bdev_enable_histogram`): a node whose
/// histogram is off for an op records none of that op's latency, counts it
/// all the same, and records again once it is back on; each node on a path
/// follows its own switch.
#[test]
fn histogram_switch_stops_and_resumes_recording_per_node_and_op() {
    let rt = runtime(1);
    let g = Graph::new(rt.handle());
    let root = ram_under_passthru(&g);
    let (r, w) = (IoOp::Read.as_index(), IoOp::Write.as_index());
    let write = || {
        io(&g, root, IoOp::Write, 0, 512, Some(vec![7; 512]))
            .0
            .unwrap()
    };
    let read = || io(&g, root, IoOp::Read, 0, 512, None).0.unwrap();
    assert_eq!(g.node_stats("ram0").unwrap().histogram, OpMask::DEFAULT);

    // Every histogram off: nothing is timed anywhere.
    g.set_histogram("pt0", OpMask::NONE).unwrap();
    g.set_histogram("ram0", OpMask::NONE).unwrap();
    write();
    read();
    for name in ["pt0", "ram0"] {
        let st = g.node_stats(name).unwrap();
        assert_eq!(st.histogram, OpMask::NONE, "{name}");
        assert_eq!((st.ops[w], st.ops[r]), (1, 1), "{name}: still counted");
        assert_eq!(st.latency[w], Default::default(), "{name}");
        assert_eq!(st.latency[r], Default::default(), "{name}");
    }
    let info = g.describe();
    assert!(info.nodes.iter().all(|n| n.histogram == OpMask::NONE));

    // Only the leaf, and only for reads: the filter above stays off.
    g.set_histogram("ram0", OpMask::of(IoOp::Read)).unwrap();
    write();
    read();
    read();
    let leaf = g.node_stats("ram0").unwrap();
    assert_eq!(leaf.latency[r].count(), 2);
    assert!(leaf.latency[r].sum_ns > 0);
    assert_eq!(leaf.latency[w].count(), 0);
    assert_eq!(g.node_stats("pt0").unwrap().latency[r].count(), 0);

    // Everything back on: both nodes record from here, and the leaf's
    // histograms continue where they stopped.
    g.set_histogram("pt0", OpMask::ALL).unwrap();
    g.set_histogram("ram0", OpMask::ALL).unwrap();
    write();
    read();
    let leaf = g.node_stats("ram0").unwrap();
    assert_eq!((leaf.latency[w].count(), leaf.latency[r].count()), (1, 3));
    let filter = g.node_stats("pt0").unwrap();
    assert_eq!(
        (filter.latency[w].count(), filter.latency[r].count()),
        (1, 1)
    );
    assert_eq!((filter.ops[w], filter.ops[r]), (3, 4));

    assert!(matches!(
        g.set_histogram("nope", OpMask::ALL),
        Err(pollux_graph::GraphError::NoSuchNode(_))
    ));
}

#[test]
fn every_publication_records_its_grace_period() {
    let rt = runtime(2);
    let g = Graph::new(rt.handle());
    g.add_node("ram0", RamNode::new(MIB, 512).unwrap(), &[])
        .unwrap();
    g.add_root("r", "ram0").unwrap();
    g.remove_root("r").unwrap();
    let st = g.stats();
    assert_eq!(st.publishes, 3);
    assert_eq!(st.grace_periods.count(), st.publishes);
    assert_eq!(st.grace_periods.sum_ns, st.grace_total.as_nanos() as u64);
}
