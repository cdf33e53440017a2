//! The driver's CPU per I/O, without a device: the real queue pair over the
//! software device of `sim`, one request at a time or `qd` in flight.
//! Meant for instruction counts, which a busy machine does not disturb:
//!
//! ```sh
//! cargo bench -p pollux-nvme-pci --bench driver_path --no-run
//! valgrind --tool=callgrind --callgrind-out-file=cg.out \
//!     build/release/deps/driver_path-* 4096 32 20000
//! callgrind_annotate --inclusive=yes cg.out | grep -E 'Sim::(submit|poll)'
//! ```
//!
//! `Sim::submit` + `Sim::poll` (never inlined) are the driver's share per
//! I/O: splitting, bounce copy, SQE and PRPs, doorbells, completion checks.
//! `Sim::fetch`/`Sim::complete` are the device's and are left out.
//! Arguments: I/O size in bytes, queue depth, number of I/Os; `write` as a
//! fourth argument for writes.

use std::rc::Rc;
use std::time::Instant;

use pollux_graph::{AlignedBuf, Io, IoBuf, IoOp, IoResult, IoSink};
use pollux_nvme::status::Status;
use pollux_nvme_pci::sim::{Sim, SimOpts};
use pollux_poller::Reactor;

struct NoSink;
impl IoSink for NoSink {
    fn io_done(&self, _r: &Reactor, _io: Io, _res: IoResult) {
        unreachable!("completions are taken from poll")
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let size: u64 = args.first().and_then(|s| s.parse().ok()).unwrap_or(4096);
    let qd: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1);
    let count: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let op = if args.get(3).map(String::as_str) == Some("write") {
        IoOp::Write
    } else {
        IoOp::Read
    };
    let mut sim = Sim::new(SimOpts {
        depth: 256,
        ..SimOpts::default()
    });
    let sink: Rc<dyn IoSink> = Rc::new(NoSink);
    let mut free: Vec<Io> = (0..qd as u64)
        .map(|t| {
            let buf = IoBuf::Owned(AlignedBuf::zeroed(size as usize));
            Io::new(op, 0, size, buf, sink.clone(), t)
        })
        .collect();
    let mut done = Vec::with_capacity(qd);
    let span = (1u64 << 30) / size;
    let start = Instant::now();
    let mut submitted = 0u64;
    let mut completed = 0u64;
    while completed < count {
        while submitted < count {
            let Some(mut io) = free.pop() else { break };
            io.offset = (submitted * 7919 % span) * size;
            sim.submit(io);
            submitted += 1;
        }
        sim.poll(&mut done);
        for s in sim.fetch() {
            sim.complete(s.cid(), Status::SUCCESS);
        }
        sim.poll(&mut done);
        for (io, r) in done.drain(..) {
            assert!(r.is_ok());
            completed += 1;
            free.push(io);
        }
    }
    let el = start.elapsed();
    println!(
        "{op:?} {size} B qd {qd}: {count} I/Os, {:.0} ns per I/O (driver and software device)",
        el.as_nanos() as f64 / count as f64
    );
}
