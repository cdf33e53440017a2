//! Cost of the graph read path on a reactor, in ns per I/O.
//!
//! `snapshot_and_route`: what every I/O pays to find its device, i.e. load
//! the published snapshot (RCU read), resolve the root, reach the node.
//! `route_only`: the same resolution on a snapshot reference taken once,
//! i.e. without the snapshot load. The difference is the price of RCU.
//! `route_through_passthru`: resolution through one filter level.
//! `submit_complete_write_null[_through_passthru]`: a whole I/O, from
//! `submit` through pinning, the null node and the deferred completion to
//! the sink that resubmits it, `QD` at a time (the loop's per-iteration
//! cost is shared by the I/O of one iteration, as on a loaded reactor).
//! `submit_complete_write_null_histogram_off[_through_passthru]`: the same
//! with every latency histogram on the path switched off
//! (`Graph::set_histogram`, SPDK's `bdev_enable_histogram`): the
//! difference is what the histograms cost per I/O.
//!
//! Each sample runs on reactor 0 (the graph is only readable there) and
//! reports the time measured on the reactor.

use std::cell::Cell;
use std::hint::black_box;
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use pollux_graph::nodes::{null::NullNode, passthru::PassthruNode};
use pollux_graph::{AlignedBuf, Graph, Io, IoBuf, IoOp, IoResult, IoSink, OpMask, RootId};
use pollux_poller::{IdlePolicy, Reactor, Runtime, RuntimeConfig};

fn bench(c: &mut Criterion) {
    let rt = Runtime::start(RuntimeConfig::new(vec![0], IdlePolicy::Poll)).unwrap();
    let g = Graph::new(rt.handle());
    g.add_node("null0", NullNode::new(1 << 30, 4096), &[])
        .unwrap();
    let geo = g.node_geometry("null0").unwrap();
    g.add_node("pt0", PassthruNode::new(geo), &["null0"])
        .unwrap();
    let root = g.add_root("r", "null0").unwrap();
    let root_pt = g.add_root("rp", "pt0").unwrap();
    // The same two paths with their histograms off.
    g.add_node("null1", NullNode::new(1 << 30, 4096), &[])
        .unwrap();
    g.add_node("pt1", PassthruNode::new(geo), &["null1"])
        .unwrap();
    for n in ["null1", "pt1"] {
        g.set_histogram(n, OpMask::NONE).unwrap();
    }
    let root_off = g.add_root("r_off", "null1").unwrap();
    let root_pt_off = g.add_root("rp_off", "pt1").unwrap();

    let mut group = c.benchmark_group("graph_read_path");
    group.measurement_time(Duration::from_secs(3));

    let g1 = g.clone();
    group.bench_function("snapshot_and_route", |b| {
        b.iter_custom(|iters| {
            let g = g1.clone();
            rt.handle().call(0, move |r: &Reactor| {
                let t = Instant::now();
                for _ in 0..iters {
                    let s = g.snapshot(black_box(r));
                    black_box(s.root_geometry(black_box(root)));
                }
                t.elapsed()
            })
        })
    });

    let g2 = g.clone();
    group.bench_function("route_only", |b| {
        b.iter_custom(|iters| {
            let g = g2.clone();
            rt.handle().call(0, move |r: &Reactor| {
                let s = g.snapshot(r);
                let t = Instant::now();
                for _ in 0..iters {
                    black_box(black_box(s).root_geometry(black_box(root)));
                }
                t.elapsed()
            })
        })
    });

    let g3 = g.clone();
    group.bench_function("snapshot_and_route_through_passthru", |b| {
        b.iter_custom(|iters| {
            let g = g3.clone();
            rt.handle().call(0, move |r: &Reactor| {
                let t = Instant::now();
                for _ in 0..iters {
                    let s = g.snapshot(black_box(r));
                    black_box(s.leaf_geometry(black_box(root_pt)));
                }
                t.elapsed()
            })
        })
    });
    for (name, root) in [
        ("submit_complete_write_null", root),
        ("submit_complete_write_null_through_passthru", root_pt),
        ("submit_complete_write_null_histogram_off", root_off),
        (
            "submit_complete_write_null_histogram_off_through_passthru",
            root_pt_off,
        ),
    ] {
        let g = g.clone();
        group.bench_function(name, |b| {
            b.iter_custom(|iters| submit_loop(&rt, &g, root, iters))
        });
    }
    group.finish();
}

/// I/O in flight at once in the submit benchmarks.
const QD: u64 = 32;

/// Resubmits each completed I/O until `left` reaches zero, then reports
/// the time since `start` once the last one is back.
struct Chain {
    graph: Arc<Graph>,
    root: RootId,
    left: Cell<u64>,
    inflight: Cell<u64>,
    start: Instant,
    done: mpsc::Sender<Duration>,
}

impl IoSink for Chain {
    fn io_done(&self, r: &Reactor, io: Io, result: IoResult) {
        assert_eq!(result, Ok(()));
        if self.left.get() > 0 {
            self.left.set(self.left.get() - 1);
            self.graph.snapshot(r).submit(r, self.root, io);
            return;
        }
        self.inflight.set(self.inflight.get() - 1);
        if self.inflight.get() == 0 {
            let _ = self.done.send(self.start.elapsed());
        }
    }
}

fn submit_loop(rt: &Runtime, g: &Arc<Graph>, root: RootId, iters: u64) -> Duration {
    let (tx, rx) = mpsc::channel();
    let g = g.clone();
    rt.handle().call(0, move |r: &Reactor| {
        let qd = QD.min(iters.max(1));
        let chain = Rc::new(Chain {
            graph: g.clone(),
            root,
            left: Cell::new(iters.saturating_sub(qd)),
            inflight: Cell::new(qd),
            start: Instant::now(),
            done: tx,
        });
        for tag in 0..qd {
            let buf = IoBuf::Owned(AlignedBuf::zeroed(4096));
            let io = Io::new(IoOp::Write, 0, 4096, buf, chain.clone(), tag);
            g.snapshot(r).submit(r, root, io);
        }
    });
    rx.recv().expect("the submit loop never finished")
}

criterion_group!(benches, bench);
criterion_main!(benches);
