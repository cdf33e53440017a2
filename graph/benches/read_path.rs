//! Cost of the graph read path on a reactor, in ns per I/O.
//!
//! `snapshot_and_route`: what every I/O pays to find its device, i.e. load
//! the published snapshot (RCU read), resolve the root, reach the node.
//! `route_only`: the same resolution on a snapshot reference taken once,
//! i.e. without the snapshot load. The difference is the price of RCU.
//! `route_through_passthru`: resolution through one filter level.
//!
//! Each sample runs on reactor 0 (the graph is only readable there) and
//! reports the time measured on the reactor.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use pollux_graph::nodes::{null::NullNode, passthru::PassthruNode};
use pollux_graph::Graph;
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
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
