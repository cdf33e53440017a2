//! The `qos` filter on a reactor: I/O beyond the budget waits and is
//! released timeslice by timeslice, in order; removing the filter while it
//! holds I/O waits for that I/O, which still lands on the child; a root
//! added on a bdev with a bound limit goes through the limit.

mod common;

use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::{io, runtime, ChanSink};
use pollux_graph::nodes::qos::QosNode;
use pollux_graph::nodes::ram::RamNode;
use pollux_graph::throttle::{Budget, RateLimits};
use pollux_graph::{AlignedBuf, Graph, Io, IoBuf, IoOp};
use pollux_poller::Reactor;

const MIB: u64 = 1 << 20;
const BLOCK: u64 = 4096;

fn pattern(i: u64) -> Vec<u8> {
    (0..BLOCK).map(|b| (b as u8) ^ (i as u8)).collect()
}

#[test]
fn held_io_is_released_in_order_and_survives_removal() {
    let rt = runtime(1);
    let g = Graph::new(rt.handle());
    g.add_node("ram0", RamNode::new(MIB, BLOCK as u32).unwrap(), &[])
        .unwrap();
    let geometry = g.node_geometry("ram0").unwrap();
    // 1,000 IOPS: one I/O per 1 ms timeslice.
    let budget = Arc::new(Budget::new(RateLimits([1000, 0, 0, 0])));
    g.insert_bound_filter("ram0", "ram0@qos", QosNode::new(geometry, vec![budget]))
        .unwrap();
    // Bound: the root goes to the limit, not around it.
    let root = g.add_root("r", "ram0").unwrap();
    assert_eq!(
        g.describe().roots[0].node,
        "ram0@qos",
        "a root on a bdev with a bound limit"
    );

    // 40 writes at once: far beyond the first slice's one token.
    const N: u64 = 40;
    let (tx, rx) = mpsc::channel();
    let (sent_tx, sent_rx) = mpsc::channel();
    let g2 = g.clone();
    let start = Instant::now();
    g.handle().send_blocking(0, move |r: &Reactor| {
        for i in 0..N {
            let mut b = AlignedBuf::zeroed(BLOCK as usize);
            b.as_mut_slice().copy_from_slice(&pattern(i));
            let io = Io::new(
                IoOp::Write,
                i * BLOCK,
                BLOCK,
                IoBuf::Owned(b),
                Rc::new(ChanSink(tx.clone())),
                i,
            );
            g2.snapshot(r).submit(r, root, io);
        }
        sent_tx.send(()).unwrap();
    });
    // `send_blocking` waits for room in the reactor's queue, not for the
    // callback: wait until the writes went in through the limit.
    sent_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    // Remove the limit while it holds most of them: the removal waits.
    g.remove_filter("ram0@qos").unwrap();
    let mut done = 0;
    while done < N {
        let (res, _) = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("a held write never completed");
        assert_eq!(res, Ok(()));
        done += 1;
    }
    // One per timeslice: the last could not go before ~N-1 slices passed.
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(N - 5),
        "{N} writes at 1,000 IOPS took only {took:?}"
    );
    // Every write landed on the child, through the root that now points
    // at it directly.
    for i in 0..N {
        let (res, data) = io(&g, root, IoOp::Read, i * BLOCK, BLOCK, None);
        assert_eq!(res, Ok(()));
        assert!(data == pattern(i), "block {i}");
    }
}

/// Tags in completion order, for I/O submitted in one reactor callback.
fn completion_order(g: &Arc<Graph>, root: pollux_graph::RootId, ios: Vec<(IoOp, u64)>) -> Vec<u64> {
    let (tx, rx) = mpsc::channel();
    let g2 = g.clone();
    let n = ios.len();
    g.handle().send_blocking(0, move |r: &Reactor| {
        for (tag, (op, offset)) in ios.into_iter().enumerate() {
            let (len, buf) = if op.has_data() {
                (BLOCK, IoBuf::Owned(AlignedBuf::zeroed(BLOCK as usize)))
            } else {
                (0, IoBuf::None)
            };
            let io = Io::new(
                op,
                offset,
                len,
                buf,
                Rc::new(TagSink(tx.clone())),
                tag as u64,
            );
            g2.snapshot(r).submit(r, root, io);
        }
    });
    (0..n)
        .map(|_| {
            rx.recv_timeout(Duration::from_secs(10))
                .expect("I/O never completed")
        })
        .collect()
}

struct TagSink(mpsc::Sender<u64>);

impl pollux_graph::IoSink for TagSink {
    fn io_done(&self, _r: &Reactor, io: Io, result: pollux_graph::IoResult) {
        assert_eq!(result, Ok(()));
        let _ = self.0.send(io.tag);
    }
}

#[test]
fn flushes_pass_reads_waiting_for_tokens() {
    let rt = runtime(1);
    let g = Graph::new(rt.handle());
    g.add_node("ram0", RamNode::new(MIB, BLOCK as u32).unwrap(), &[])
        .unwrap();
    let geometry = g.node_geometry("ram0").unwrap();
    let budget = Arc::new(Budget::new(RateLimits([1000, 0, 0, 0])));
    g.insert_bound_filter(
        "ram0",
        "ram0@qos",
        QosNode::new(geometry, vec![budget.clone()]),
    )
    .unwrap();
    let root = g.add_root("r", "ram0").unwrap();
    // Ten reads queue behind the 1,000 IOPS budget; the flush after them
    // is not limited (as in SPDK) and overtakes them. The reads keep
    // their order.
    let mut ios: Vec<(IoOp, u64)> = (0..10).map(|i| (IoOp::Read, i * BLOCK)).collect();
    ios.push((IoOp::Flush, 0));
    let order = completion_order(&g, root, ios);
    let flush = order.iter().position(|&t| t == 10).unwrap();
    assert!(flush < 9, "the flush waited behind the reads: {order:?}");
    let reads: Vec<u64> = order.into_iter().filter(|&t| t != 10).collect();
    assert_eq!(reads, (0..10).collect::<Vec<_>>());
    // With the limit lifted (live, no publication), nothing waits: the
    // reads complete in submission order, interleaved with nothing.
    budget.set_limits(RateLimits::default());
    std::thread::sleep(Duration::from_millis(2));
    let order = completion_order(&g, root, (0..10).map(|i| (IoOp::Read, i * BLOCK)).collect());
    assert_eq!(order, (0..10).collect::<Vec<_>>());
}
