//! Two reactors run random, verified I/O on a `ram` node while the control
//! thread inserts and removes a `passthru` filter above it 10,000 times,
//! and the same, fewer times, with filters that own their I/O: one that
//! holds every I/O on a timer, one that splits every I/O into child I/Os.
//! Required: zero failed I/Os, zero mismatches, and every superseded
//! snapshot reclaimed.

mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::filters::{DelayFilter, HalvesFilter};
use pollux_graph::nodes::{passthru::PassthruNode, ram::RamNode};
use pollux_graph::{
    AlignedBuf, BlockNode, Geometry, Graph, Io, IoBuf, IoOp, IoResult, IoSink, RootId,
};
use pollux_poller::Reactor;
use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};

const CYCLES: usize = 10_000;
const BLOCK: u64 = 4096;
/// Blocks per I/O slot: each slot owns a disjoint range so its reads have
/// exactly one expected content.
const BLOCKS_PER_SLOT: u64 = 64;
const SLOTS_PER_REACTOR: u64 = 8;

#[derive(Default)]
struct Totals {
    ios: AtomicU64,
    failed: AtomicU64,
    mismatched: AtomicU64,
    outstanding: AtomicU64,
}

/// The block content a seed stands for: the same bytes every time, so a
/// read is checked against the seed of the last write.
fn pattern(seed: u64, out: &mut [u8]) {
    SmallRng::seed_from_u64(seed).fill_bytes(out);
}

struct Slot {
    first_block: u64,
    /// Pattern seed last written per block of the slot (0 = never written).
    written: Vec<u64>,
    /// Seeded per slot: a failing run replays the same I/O sequence.
    rng: SmallRng,
}

struct Worker {
    graph: Arc<Graph>,
    root: RootId,
    stop: Arc<AtomicBool>,
    totals: Arc<Totals>,
    slots: RefCell<Vec<Slot>>,
    running: std::cell::Cell<u64>,
    me: RefCell<Option<Rc<Worker>>>,
}

impl Worker {
    /// Next step for slot `tag`: a write of a fresh pattern or a read that
    /// verifies the last one.
    fn start(&self, r: &Reactor, tag: u64) {
        if self.stop.load(Ordering::Relaxed) {
            self.running.set(self.running.get() - 1);
            if self.running.get() == 0 {
                // Last slot of this worker: break its self-reference.
                self.me.borrow_mut().take();
            }
            self.totals.outstanding.fetch_sub(1, Ordering::SeqCst);
            return;
        }
        let mut slots = self.slots.borrow_mut();
        let s = &mut slots[tag as usize];
        let blk = s.rng.random_range(0..BLOCKS_PER_SLOT);
        let offset = (s.first_block + blk) * BLOCK;
        let mut buf = AlignedBuf::zeroed(BLOCK as usize);
        let op = if s.rng.random_bool(0.5) || s.written[blk as usize] == 0 {
            // Odd, so never the "never written" 0.
            let seed = s.rng.random::<u64>() | 1;
            pattern(seed, buf.as_mut_slice());
            s.written[blk as usize] = seed;
            IoOp::Write
        } else {
            IoOp::Read
        };
        drop(slots);
        let sink: Rc<dyn IoSink> = self.me.borrow().clone().expect("set");
        let io = Io::new(op, offset, BLOCK, IoBuf::Owned(buf), sink, tag);
        self.graph.snapshot(r).submit(r, self.root, io);
    }
}

impl IoSink for Worker {
    fn io_done(&self, r: &Reactor, mut io: Io, result: IoResult) {
        self.totals.ios.fetch_add(1, Ordering::Relaxed);
        if result.is_err() {
            self.totals.failed.fetch_add(1, Ordering::Relaxed);
        } else if io.op == IoOp::Read {
            let slots = self.slots.borrow();
            let s = &slots[io.tag as usize];
            let blk = io.offset / BLOCK - s.first_block;
            let mut want = vec![0u8; BLOCK as usize];
            pattern(s.written[blk as usize], &mut want);
            let IoBuf::Owned(b) = &mut io.buf else {
                unreachable!()
            };
            if b.as_slice() != want.as_slice() {
                self.totals.mismatched.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.start(r, io.tag);
    }
}

#[test]
fn filter_churn_under_verified_io() {
    churn(CYCLES, 4096, PassthruNode::new);
}

/// A filter that holds every I/O (on a reactor timer) is inserted and
/// removed while it holds some: each is released to the child it had.
#[test]
fn holding_filter_churn_under_verified_io() {
    churn(HOLDING_CYCLES, 4096, |geometry| DelayFilter {
        geometry,
        delay: Duration::from_micros(20),
    });
}

/// A filter that splits every I/O into two child I/Os is inserted and
/// removed while parents and children are in flight.
#[test]
fn fan_out_filter_churn_under_verified_io() {
    // 512-byte blocks, so each 4 KiB I/O splits.
    churn(HOLDING_CYCLES, 512, |geometry| HalvesFilter { geometry });
}

/// Fewer cycles for the filters that own their I/O: each removal waits for
/// what they hold, and what they do is the same every cycle.
const HOLDING_CYCLES: usize = 300;

fn churn<F: BlockNode>(cycles: usize, block_size: u32, filter: impl Fn(Geometry) -> F) {
    let rt = common::runtime(2);
    let g = Graph::new(rt.handle());
    let size = 2 * SLOTS_PER_REACTOR * BLOCKS_PER_SLOT * BLOCK;
    g.add_node("ram0", RamNode::new(size, block_size).unwrap(), &[])
        .unwrap();
    let root = g.add_root("vol", "ram0").unwrap();
    let geo = g.describe().nodes[0].geometry;

    let stop = Arc::new(AtomicBool::new(false));
    let totals = Arc::new(Totals::default());
    for reactor in 0..2u64 {
        let (g2, stop2, totals2) = (g.clone(), stop.clone(), totals.clone());
        rt.handle()
            .send_blocking(reactor as usize, move |r: &Reactor| {
                let slots = (0..SLOTS_PER_REACTOR)
                    .map(|i| Slot {
                        first_block: (reactor * SLOTS_PER_REACTOR + i) * BLOCKS_PER_SLOT,
                        written: vec![0; BLOCKS_PER_SLOT as usize],
                        rng: SmallRng::seed_from_u64(reactor << 32 | i),
                    })
                    .collect();
                let w = Rc::new(Worker {
                    graph: g2,
                    root,
                    stop: stop2,
                    totals: totals2.clone(),
                    slots: RefCell::new(slots),
                    running: std::cell::Cell::new(SLOTS_PER_REACTOR),
                    me: RefCell::new(None),
                });
                *w.me.borrow_mut() = Some(w.clone());
                for tag in 0..SLOTS_PER_REACTOR {
                    totals2.outstanding.fetch_add(1, Ordering::SeqCst);
                    w.start(r, tag);
                }
            });
    }

    let before = g.stats();
    let t = Instant::now();
    for _ in 0..cycles {
        g.insert_filter("ram0", "pt0", filter(geo)).unwrap();
        g.remove_filter("pt0").unwrap();
    }
    let churn = t.elapsed();
    let ios_during = totals.ios.load(Ordering::Relaxed);

    stop.store(true, Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(10);
    while totals.outstanding.load(Ordering::SeqCst) != 0 {
        assert!(Instant::now() < deadline, "I/O did not drain");
        std::thread::sleep(Duration::from_millis(1));
    }
    let after = g.stats();
    eprintln!(
        "{cycles} insert/remove cycles in {churn:?}, {ios_during} verified I/Os meanwhile, \
         mean grace period {:?}",
        (after.grace_total - before.grace_total) / (2 * cycles as u32)
    );

    assert_eq!(totals.failed.load(Ordering::Relaxed), 0, "failed I/Os");
    assert_eq!(
        totals.mismatched.load(Ordering::Relaxed),
        0,
        "data mismatches"
    );
    assert!(ios_during > 0, "no I/O ran during the churn");
    let published = after.publishes - before.publishes;
    assert_eq!(published, 2 * cycles as u64);
    assert_eq!(
        after.reclaimed, after.publishes,
        "every superseded snapshot must be reclaimed"
    );
    assert_eq!(after.nodes_closed - before.nodes_closed, cycles as u64);
    assert_eq!(g.node_stats("ram0").unwrap().inflight, 0);
}
