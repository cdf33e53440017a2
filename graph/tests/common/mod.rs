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

/// Runs one I/O through `root` on reactor 0 and waits for it.
pub fn io(
    graph: &Arc<Graph>,
    root: RootId,
    op: IoOp,
    offset: u64,
    len: u64,
    data: Option<Vec<u8>>,
) -> (IoResult, Vec<u8>) {
    let (tx, rx) = mpsc::channel();
    let g = graph.clone();
    graph.handle().send_blocking(0, move |r: &Reactor| {
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
    rx.recv_timeout(Duration::from_secs(10))
        .expect("I/O never completed")
}
