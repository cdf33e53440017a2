//! The split, error and delay nodes on a ram disk, from a reactor: what
//! the RPC tests cannot reach from a host (pending I/O held and resumed or
//! failed, the delay's latency changing live, a split part's bounds).

mod common;

use std::rc::Rc;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{io, runtime, start_io, ChanSink};
use pollux_graph::nodes::delay::{DelayKind, DelayLatencies, DelayNode};
use pollux_graph::nodes::error::{
    fail_pending, resume_pending, ErrorIoType, ErrorNode, ErrorType, Injection,
};
use pollux_graph::nodes::{ram::RamNode, split::SplitNode};
use pollux_graph::{AlignedBuf, Graph, GraphError, Io, IoBuf, IoError, IoOp, RootId};
use pollux_poller::Reactor;

const MIB: u64 = 1 << 20;

fn ram_graph(rt: &pollux_poller::Runtime) -> (Arc<Graph>, RootId) {
    let g = Graph::new(rt.handle());
    g.add_node("ram0", RamNode::new(MIB, 4096).unwrap(), &[])
        .unwrap();
    let root = g.add_root("r", "ram0").unwrap();
    (g, root)
}

#[test]
fn pending_io_is_held_until_resumed_or_failed() {
    let rt = runtime(1);
    let (g, root) = ram_graph(&rt);
    let geo = g.node_geometry("ram0").unwrap();
    g.insert_filter("ram0", "EE_ram0", ErrorNode::new(geo))
        .unwrap();
    let id = g.with_node("EE_ram0", |n: &ErrorNode| {
        n.injection().arm(
            ErrorIoType::Write,
            Injection {
                error_type: ErrorType::Pending,
                count: 2,
                corrupt_offset: 0,
                corrupt_value: 0,
                queue_depth: 0,
                nvme_status: (0, 0),
            },
        );
        n.id()
    });
    let id = id.unwrap();
    let start = |seed: u8| start_io(&g, 0, root, IoOp::Write, 0, 4096, Some(vec![seed; 4096]));
    let first = start(1);
    assert!(
        first.recv_timeout(Duration::from_millis(100)).is_err(),
        "held"
    );
    assert_eq!(
        rt.handle()
            .call(0, move |r: &Reactor| resume_pending(r, id)),
        1
    );
    assert_eq!(
        first.recv_timeout(Duration::from_secs(10)).unwrap().0,
        Ok(())
    );
    assert_eq!(io(&g, root, IoOp::Read, 0, 4096, None).1, vec![1; 4096]);

    let second = start(2);
    assert!(
        second.recv_timeout(Duration::from_millis(100)).is_err(),
        "held"
    );
    assert_eq!(
        rt.handle().call(0, move |r: &Reactor| fail_pending(r, id)),
        1
    );
    assert!(second
        .recv_timeout(Duration::from_secs(10))
        .unwrap()
        .0
        .is_err());
    // Both injections used: writes go through again.
    assert_eq!(
        start(3).recv_timeout(Duration::from_secs(10)).unwrap().0,
        Ok(())
    );
    g.remove_filter("EE_ram0").unwrap();
}

#[test]
fn failure_and_nomem_injections_count_down() {
    let rt = runtime(1);
    let (g, root) = ram_graph(&rt);
    let geo = g.node_geometry("ram0").unwrap();
    g.insert_filter("ram0", "EE_ram0", ErrorNode::new(geo))
        .unwrap();
    let arm = |t: ErrorType, class: ErrorIoType| {
        g.with_node("EE_ram0", |n: &ErrorNode| {
            n.injection().arm(
                class,
                Injection {
                    error_type: t,
                    count: 1,
                    corrupt_offset: 0,
                    corrupt_value: 0,
                    queue_depth: 0,
                    nvme_status: (0, 0),
                },
            )
        })
        .unwrap()
    };
    arm(ErrorType::Nomem, ErrorIoType::Flush);
    assert_eq!(io(&g, root, IoOp::Flush, 0, 0, None).0, Err(IoError::Busy));
    assert_eq!(io(&g, root, IoOp::Flush, 0, 0, None).0, Ok(()));
    arm(ErrorType::Failure, ErrorIoType::Unmap);
    assert!(io(&g, root, IoOp::Discard, 0, 4096, None).0.is_err());
    assert_eq!(io(&g, root, IoOp::Discard, 0, 4096, None).0, Ok(()));
    // Write zeroes is never injected into, as in SPDK.
    arm(ErrorType::Failure, ErrorIoType::Write);
    assert_eq!(io(&g, root, IoOp::WriteZeroes, 0, 4096, None).0, Ok(()));
}

#[test]
fn queue_depth_and_nvme_failure_injections() {
    let rt = runtime(1);
    let (g, root) = ram_graph(&rt);
    let geo = g.node_geometry("ram0").unwrap();
    // A lower error node holds writes (pending) so that they stay in
    // flight through the upper one, whose injection waits for a depth.
    g.insert_filter("ram0", "EE_ram0", ErrorNode::new(geo))
        .unwrap();
    g.insert_filter("EE_ram0", "EE_EE_ram0", ErrorNode::new(geo))
        .unwrap();
    let arm = |node: &str, t: ErrorType, count: u32, queue_depth: u64, nvme_status: (u8, u8)| {
        g.with_node(node, |n: &ErrorNode| {
            n.injection().arm(
                ErrorIoType::Write,
                Injection {
                    error_type: t,
                    count,
                    corrupt_offset: 0,
                    corrupt_value: 0,
                    queue_depth,
                    nvme_status,
                },
            );
            n.id()
        })
        .unwrap()
    };
    let lower = arm("EE_ram0", ErrorType::Pending, 2, 0, (0, 0));
    arm("EE_EE_ram0", ErrorType::NvmeFailure, 1, 2, (0, 0x81));
    let start = || start_io(&g, 0, root, IoOp::Write, 0, 4096, None);
    // Two writes held below: each found fewer than 2 others in flight.
    let (a, b) = (start(), start());
    for w in [&a, &b] {
        assert!(w.recv_timeout(Duration::from_millis(100)).is_err(), "held");
    }
    // The third finds 2: it fails, with the status asked for.
    let third = start().recv_timeout(Duration::from_secs(10)).unwrap().0;
    assert_eq!(third, Err(IoError::Nvme { sct: 0, sc: 0x81 }));
    assert_eq!(
        rt.handle()
            .call(0, move |r: &Reactor| resume_pending(r, lower)),
        2
    );
    for w in [a, b] {
        assert_eq!(w.recv_timeout(Duration::from_secs(10)).unwrap().0, Ok(()));
    }
    // The one injection is used: writes go through.
    assert_eq!(io(&g, root, IoOp::Write, 0, 4096, None).0, Ok(()));
    // With nothing else in flight, a depth of 1 is never reached.
    arm("EE_EE_ram0", ErrorType::Failure, 1, 1, (0, 0));
    assert_eq!(io(&g, root, IoOp::Write, 0, 4096, None).0, Ok(()));
    g.remove_filter("EE_EE_ram0").unwrap();
    g.remove_filter("EE_ram0").unwrap();
}

#[test]
fn delay_holds_reads_and_writes_for_their_latency() {
    let rt = runtime(1);
    let (g, root) = ram_graph(&rt);
    let geo = g.node_geometry("ram0").unwrap();
    let lat = Arc::new(DelayLatencies::new([3000, 3000, 0, 0]));
    g.insert_filter("ram0", "d0", DelayNode::new(geo, lat.clone()))
        .unwrap();
    let t = Instant::now();
    assert_eq!(io(&g, root, IoOp::Read, 0, 4096, None).0, Ok(()));
    assert!(
        t.elapsed() >= Duration::from_micros(3000),
        "{:?}",
        t.elapsed()
    );
    lat.set(DelayKind::AvgRead, 0);
    lat.set(DelayKind::P99Read, 0);
    lat.set(DelayKind::AvgWrite, 1000);
    lat.set(DelayKind::P99Write, 1000);
    let t = Instant::now();
    assert_eq!(
        io(&g, root, IoOp::Write, 0, 4096, Some(vec![5; 4096])).0,
        Ok(())
    );
    assert!(
        t.elapsed() >= Duration::from_micros(1000),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(io(&g, root, IoOp::Read, 0, 4096, None).1, vec![5; 4096]);
    // Many at once: each is released once due, none lost.
    let (tx, rx) = mpsc::channel();
    let g2 = g.clone();
    rt.handle().send_blocking(0, move |r: &Reactor| {
        for i in 0..64u64 {
            let b = AlignedBuf::zeroed(4096);
            let io = Io::new(
                IoOp::Write,
                i * 4096,
                4096,
                IoBuf::Owned(b),
                Rc::new(ChanSink(tx.clone())),
                i,
            );
            g2.snapshot(r).submit(r, root, io);
        }
    });
    for _ in 0..64 {
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap().0, Ok(()));
    }
    g.remove_filter("d0").unwrap();
}

#[test]
fn split_parts_map_onto_their_base_and_stay_inside_it() {
    let rt = runtime(1);
    let (g, root) = ram_graph(&rt);
    let geo = g.node_geometry("ram0").unwrap();
    let half = geo.block_count / 2;
    g.add_node("ram0p1", SplitNode::new(geo, half, half), &["ram0"])
        .unwrap();
    assert!(matches!(
        g.add_node("bad", SplitNode::new(geo, half + 1, half), &["ram0"]),
        Err(GraphError::BadChildren { .. })
    ));
    let p1 = g.add_root("p1", "ram0p1").unwrap();
    assert_eq!(
        io(&g, p1, IoOp::Write, 0, 4096, Some(vec![9; 4096])).0,
        Ok(())
    );
    assert_eq!(
        io(&g, root, IoOp::Read, half * 4096, 4096, None).1,
        vec![9; 4096]
    );
    assert!(matches!(
        io(&g, p1, IoOp::Read, half * 4096, 4096, None).0,
        Err(IoError::OutOfRange { .. })
    ));
}

/// Removing an error filter that holds `pending` I/O fails that I/O
/// instead of waiting for it forever.
#[test]
fn removing_an_error_filter_fails_its_pending_io() {
    let rt = runtime(2);
    let (g, root) = ram_graph(&rt);
    let geo = g.node_geometry("ram0").unwrap();
    g.insert_filter("ram0", "EE_ram0", ErrorNode::new(geo))
        .unwrap();
    g.with_node("EE_ram0", |n: &ErrorNode| {
        n.injection().arm(
            ErrorIoType::Read,
            Injection {
                error_type: ErrorType::Pending,
                count: 1,
                corrupt_offset: 0,
                corrupt_value: 0,
                queue_depth: 0,
                nvme_status: (0, 0),
            },
        )
    })
    .unwrap();
    let rx = start_io(&g, 1, root, IoOp::Read, 0, 4096, None);
    assert!(rx.recv_timeout(Duration::from_millis(100)).is_err(), "held");
    g.remove_filter("EE_ram0").unwrap();
    assert!(rx.recv_timeout(Duration::from_secs(10)).unwrap().0.is_err());
    assert_eq!(io(&g, root, IoOp::Read, 0, 4096, None).0, Ok(()));
}
