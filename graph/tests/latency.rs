//! Latency histograms per node and op, and the grace-period histogram.

mod common;

use common::{io, runtime};
use pollux_graph::nodes::{passthru::PassthruNode, ram::RamNode};
use pollux_graph::{Graph, IoOp};

const MIB: u64 = 1 << 20;

#[test]
fn every_node_on_the_path_records_successful_io_latency() {
    let rt = runtime(1);
    let g = Graph::new(rt.handle());
    g.add_node("ram0", RamNode::new(MIB, 512).unwrap(), &[])
        .unwrap();
    let geo = g.node_geometry("ram0").unwrap();
    g.insert_filter("ram0", "pt0", PassthruNode::new(geo))
        .unwrap();
    let root = g.add_root("r", "pt0").unwrap();
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
