//! Shared helpers for graph tests: a runtime, and a sink that reports
//! completions to the test thread.

#![allow(dead_code)]

use std::rc::Rc;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use pollux_graph::{AlignedBuf, Graph, Io, IoBuf, IoOp, IoResult, IoSink, RootId};
use pollux_poller::{IdlePolicy, Reactor, Runtime, RuntimeConfig};

pub fn runtime(n: usize) -> Runtime {
    let online: Vec<usize> = pollux_poller::cpu::online_cpus().unwrap().iter().collect();
    let cores = (0..n).map(|i| online[i % online.len()]).collect();
    Runtime::start(RuntimeConfig::new(
        cores,
        IdlePolicy::Adaptive {
            idle_after: Duration::from_micros(100),
        },
    ))
    .unwrap()
}

/// Sends (result, data read) back to the test thread.
pub struct ChanSink(pub mpsc::Sender<(IoResult, Vec<u8>)>);

impl IoSink for ChanSink {
    fn io_done(&self, _r: &Reactor, mut io: Io, result: IoResult) {
        let data = match &mut io.buf {
            IoBuf::Owned(b) => b.as_slice().to_vec(),
            _ => Vec::new(),
        };
        let _ = self.0.send((result, data));
    }
}

/// What a `ChanSink` reports: the I/O's result and the data it read.
pub type Completion = mpsc::Receiver<(IoResult, Vec<u8>)>;

/// Submits one I/O through `root` on reactor `on` without waiting for it:
/// a buffer of `len` bytes for an op with data, starting with `data`.
pub fn start_io(
    graph: &Arc<Graph>,
    on: usize,
    root: RootId,
    op: IoOp,
    offset: u64,
    len: u64,
    data: Option<Vec<u8>>,
) -> Completion {
    let (tx, rx) = mpsc::channel();
    let g = graph.clone();
    graph.handle().send_blocking(on, move |r: &Reactor| {
        let buf = if op.has_data() {
            let mut b = AlignedBuf::zeroed(len as usize);
            if let Some(d) = data {
                b.as_mut_slice()[..d.len()].copy_from_slice(&d);
            }
            IoBuf::Owned(b)
        } else {
            IoBuf::None
        };
        let io = Io::new(op, offset, len, buf, Rc::new(ChanSink(tx)), 0);
        g.snapshot(r).submit(r, root, io);
    });
    rx
}

/// Runs one I/O through `root` on reactor 0 and waits for it.
pub fn io(
    graph: &Arc<Graph>,
    root: RootId,
    op: IoOp,
    offset: u64,
    len: u64,
    data: Option<Vec<u8>>,
) -> (IoResult, Vec<u8>) {
    start_io(graph, 0, root, op, offset, len, data)
        .recv_timeout(Duration::from_secs(10))
        .expect("I/O never completed")
}

pub mod filters {
    //! Filters built on the filter API (`pollux_graph::filter`), the way a
    //! node in another crate would: one that holds every I/O on a reactor
    //! timer before forwarding it, one that splits every I/O in two halves
    //! sent as child I/Os, and one that parks I/O until the test releases it.

    use std::cell::RefCell;
    use std::collections::VecDeque;
    use std::rc::Rc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use pollux_graph::{BlockNode, Geometry, Io, IoOp, IoResult, IoSink, Parent};
    use pollux_poller::Reactor;

    /// Holds every I/O for `delay` on a reactor timer, then forwards it.
    pub struct DelayFilter {
        pub geometry: Geometry,
        pub delay: Duration,
    }

    impl BlockNode for DelayFilter {
        type Channel = Rc<RefCell<VecDeque<Io>>>;

        fn kind(&self) -> &'static str {
            "test_delay"
        }
        fn geometry(&self) -> Geometry {
            self.geometry
        }
        fn num_children(&self) -> usize {
            1
        }
        fn create_channel(&self, _r: &Reactor) -> Self::Channel {
            Rc::default()
        }
        fn execute(&self, r: &Reactor, held: &Self::Channel, io: Io) {
            held.borrow_mut().push_back(io);
            let held = held.clone();
            r.add_timer(self.delay, move |r| {
                if let Some(io) = held.borrow_mut().pop_front() {
                    io.forward(r, 0);
                }
            });
        }
    }

    /// Splits each data I/O (of at least two blocks) into two child I/Os,
    /// one per half, to its one child; the rest goes through `route`.
    pub struct HalvesFilter {
        pub geometry: Geometry,
    }

    /// Where the halves complete: the parent completes with the first
    /// error once both did.
    pub struct HalvesDone;

    impl IoSink for HalvesDone {
        fn io_done(&self, r: &Reactor, child: Io, result: IoResult) {
            let parent = Parent::of(&child).expect("a child of a Parent");
            parent.record(result);
            drop(child);
            parent.complete_if_last(r);
        }
    }

    impl BlockNode for HalvesFilter {
        type Channel = Rc<dyn IoSink>;

        fn kind(&self) -> &'static str {
            "test_halves"
        }
        fn geometry(&self) -> Geometry {
            self.geometry
        }
        fn num_children(&self) -> usize {
            1
        }
        fn route(&self, io: &mut Io) -> Option<usize> {
            let bs = u64::from(self.geometry.block_size);
            (!io.op.has_data() || io.len < 2 * bs).then_some(0)
        }
        fn create_channel(&self, _r: &Reactor) -> Self::Channel {
            Rc::new(HalvesDone)
        }
        fn execute(&self, r: &Reactor, sink: &Self::Channel, io: Io) {
            let bs = u64::from(self.geometry.block_size);
            let (op, off, len) = (io.op, io.offset, io.len);
            let first = len / bs / 2 * bs;
            let parent = Parent::new(io);
            for (at, n) in [(0, first), (first, len - first)] {
                let child = parent.child(op, off + at, n, at, sink.clone(), 0);
                parent.submit(r, 0, child);
            }
        }
    }

    /// Parks every write until `release`; the rest goes through `route`.
    pub struct ParkFilter {
        pub geometry: Geometry,
        pub parked: Arc<AtomicUsize>,
    }

    /// The writes a `ParkFilter` parked on one reactor.
    #[derive(Default)]
    pub struct Parked(pub RefCell<Vec<Io>>);

    impl BlockNode for ParkFilter {
        type Channel = ();

        fn kind(&self) -> &'static str {
            "test_park"
        }
        fn geometry(&self) -> Geometry {
            self.geometry
        }
        fn num_children(&self) -> usize {
            1
        }
        fn route(&self, io: &mut Io) -> Option<usize> {
            (io.op != IoOp::Write).then_some(0)
        }
        fn create_channel(&self, _r: &Reactor) {}
        fn execute(&self, r: &Reactor, _ch: &(), io: Io) {
            self.parked.fetch_add(1, Ordering::SeqCst);
            r.local(|_| Parked::default()).0.borrow_mut().push(io);
        }
    }

    /// Forwards every write parked on reactor `r` by a `ParkFilter`.
    pub fn release_parked(r: &Reactor, parked: &AtomicUsize) {
        let ios = std::mem::take(&mut *r.local(|_| Parked::default()).0.borrow_mut());
        for io in ios {
            parked.fetch_sub(1, Ordering::SeqCst);
            io.forward(r, 0);
        }
    }
}
