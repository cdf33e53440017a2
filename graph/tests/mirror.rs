//! The mirror filter: a live copy under writes, then the pivot, with no
//! write lost.

mod common;

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{io, runtime};
use pollux_graph::nodes::mirror::Mirror;
use pollux_graph::nodes::ram::RamNode;
use pollux_graph::{AlignedBuf, Graph, Io, IoBuf, IoOp, IoResult, IoSink, RootId};
use pollux_poller::Reactor;

const MIB: u64 = 1 << 20;
const BLOCK: u64 = 4096;

/// Block `i`'s content at generation `g`.
fn block(i: u64, g: u64) -> Vec<u8> {
    (0..BLOCK).map(|k| (i * 31 + g * 7 + k) as u8).collect()
}

/// Keeps writing generations of every block through `root` on reactor 0
/// until `stop`, one write at a time per block stream, counting failures.
struct Writer {
    graph: Arc<Graph>,
    root: RootId,
    stop: Arc<AtomicBool>,
    failed: Arc<AtomicU64>,
    /// The generation each block acknowledged last.
    acked: Arc<Vec<AtomicU64>>,
    blocks: u64,
}

impl Writer {
    fn submit(self: &Rc<Self>, r: &Reactor, i: u64, g: u64) {
        let mut b = AlignedBuf::zeroed(BLOCK as usize);
        b.as_mut_slice().copy_from_slice(&block(i, g));
        let io = Io::new(
            IoOp::Write,
            i * BLOCK,
            BLOCK,
            IoBuf::Owned(b),
            self.clone(),
            i << 32 | g,
        );
        self.graph.snapshot(r).submit(r, self.root, io);
    }
}

impl IoSink for Writer {
    fn io_done(&self, r: &Reactor, io: Io, result: IoResult) {
        let (i, g) = (io.tag >> 32, io.tag & 0xffff_ffff);
        if result.is_err() {
            self.failed.fetch_add(1, Ordering::Relaxed);
        } else {
            self.acked[i as usize].store(g, Ordering::Relaxed);
        }
        if !self.stop.load(Ordering::Relaxed) {
            // Not `self.submit`: `self` is not the Rc here; go round through
            // the reactor-local copy.
            let w = WRITER.with(|w| w.borrow().clone()).expect("set");
            // Spread the streams: the next block is a pseudo-random one.
            let next = (i * 7 + g) % self.blocks;
            w.submit(r, next, g + 1);
        }
    }
}

thread_local! {
    static WRITER: std::cell::RefCell<Option<Rc<Writer>>> = const { std::cell::RefCell::new(None) };
}

#[test]
fn mirror_and_pivot_under_writes_lose_nothing() {
    let rt = runtime(2);
    let g = Graph::new(rt.handle());
    let size = 4 * MIB;
    g.add_node("src", RamNode::new(size, 512).unwrap(), &[])
        .unwrap();
    g.add_node("dst", RamNode::new(size, 512).unwrap(), &[])
        .unwrap();
    let root = g.add_root("r", "src").unwrap();
    let blocks = size / BLOCK;
    for i in 0..blocks {
        io(&g, root, IoOp::Write, i * BLOCK, BLOCK, Some(block(i, 0)))
            .0
            .unwrap();
    }

    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..blocks).map(|_| AtomicU64::new(0)).collect());
    {
        let (g2, stop, failed, acked) = (g.clone(), stop.clone(), failed.clone(), acked.clone());
        g.handle().call(0, move |r| {
            let w = Rc::new(Writer {
                graph: g2,
                root,
                stop,
                failed,
                acked,
                blocks,
            });
            WRITER.with(|x| *x.borrow_mut() = Some(w.clone()));
            // 8 streams of writes.
            for s in 0..8 {
                w.submit(r, s * 61 % blocks, 1);
            }
        });
    }

    let m = Mirror::new(&g, g.node_geometry("src").unwrap(), 64 * 1024, 1);
    g.insert_filter_with("src", "mirror0", m.node(), &["dst"])
        .unwrap();
    m.start_copier(g.link("mirror0").unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !m.ready() {
        assert!(
            Instant::now() < deadline,
            "never in sync: {:?}",
            m.progress()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    m.freeze().unwrap();
    g.redirect_node("mirror0", "dst", || {
        m.release_to_target();
        Ok(())
    })
    .unwrap();
    m.forget();
    assert_eq!(g.describe().roots[0].node, "dst");

    // Writes keep going, now to dst; then stop them and compare.
    std::thread::sleep(Duration::from_millis(50));
    stop.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(100));
    g.handle()
        .call(0, |_| WRITER.with(|w| *w.borrow_mut() = None));
    assert_eq!(failed.load(Ordering::Relaxed), 0, "failed writes");
    g.remove_node("src").unwrap();
    for i in 0..blocks {
        let (res, back) = io(&g, root, IoOp::Read, i * BLOCK, BLOCK, None);
        res.unwrap();
        let want = acked[i as usize].load(Ordering::Relaxed);
        // The block holds the last acknowledged generation (or a later one
        // whose acknowledgement was in flight when the writers stopped).
        let ok = (want..want + 3).any(|gen| back == block(i, gen));
        assert!(ok, "block {i} lost its generation {want}");
    }
}

/// Sends one I/O's result to the test thread.
struct Done(std::sync::mpsc::Sender<IoResult>);

impl IoSink for Done {
    fn io_done(&self, _r: &Reactor, _io: Io, result: IoResult) {
        let _ = self.0.send(result);
    }
}

/// A mirror cancelled while frozen (the write it holds is retired with
/// it): the held write still reaches the source through the retired
/// filter, and the removal does not wait forever for it.
#[test]
fn mirror_removed_while_holding_a_write_sends_it_to_the_source() {
    let rt = runtime(2);
    let g = Graph::new(rt.handle());
    let size = MIB;
    g.add_node("src", RamNode::new(size, 512).unwrap(), &[])
        .unwrap();
    g.add_node("dst", RamNode::new(size, 512).unwrap(), &[])
        .unwrap();
    let root = g.add_root("r", "src").unwrap();
    let m = Mirror::new(&g, g.node_geometry("src").unwrap(), 64 * 1024, 1);
    g.insert_filter_with("src", "mirror0", m.node(), &["dst"])
        .unwrap();
    m.start_copier(g.link("mirror0").unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !m.ready() {
        assert!(Instant::now() < deadline, "never in sync");
        std::thread::sleep(Duration::from_millis(5));
    }
    m.freeze().unwrap();

    let (tx, rx) = std::sync::mpsc::channel();
    let g2 = g.clone();
    g.handle().call(0, move |r| {
        let mut b = AlignedBuf::zeroed(BLOCK as usize);
        b.as_mut_slice().copy_from_slice(&block(3, 9));
        let io = Io::new(
            IoOp::Write,
            3 * BLOCK,
            BLOCK,
            IoBuf::Owned(b),
            Rc::new(Done(tx)),
            0,
        );
        g2.snapshot(r).submit(r, root, io);
    });
    // Frozen: held in the filter.
    assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());

    // The job's cancel: the copier stops, the filter leaves for the source.
    m.stop_copier();
    g.redirect_node("mirror0", "src", || Ok(())).unwrap();
    m.forget();
    rx.recv_timeout(Duration::from_secs(5))
        .expect("the held write completed")
        .unwrap();
    assert_eq!(g.describe().roots[0].node, "src");
    let (res, back) = io(&g, root, IoOp::Read, 3 * BLOCK, BLOCK, None);
    res.unwrap();
    assert_eq!(back, block(3, 9), "the held write is on the source");
}
