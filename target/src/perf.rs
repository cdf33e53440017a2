//! `pollux perf local`: a bdevperf-like load generator that runs on every
//! configured reactor through the graph.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use pollux_graph::{AlignedBuf, Graph, Io, IoBuf, IoOp, IoResult, IoSink, RootId};
use pollux_poller::Reactor;
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use serde::Serialize;

use crate::config::Config;
use crate::daemon::Target;

/// The access pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Rw {
    /// Random reads.
    Randread,
    /// Random writes.
    Randwrite,
    /// Random reads and writes, half each.
    Randrw,
}

/// One load run.
#[derive(Clone, Debug)]
pub struct PerfSpec {
    /// Access pattern.
    pub rw: Rw,
    /// I/O size in bytes.
    pub bs: u32,
    /// Queue depth per reactor.
    pub qd: u32,
    /// Run time.
    pub time: Duration,
}

/// Latency summary in microseconds.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct LatencyUs {
    /// Mean.
    pub avg: f64,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
}

/// The result, printed as text or (`--json`) as this object.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct PerfReport {
    /// Completed I/O per second.
    pub iops: f64,
    /// Throughput in MiB/s.
    pub mib_s: f64,
    /// Latency.
    pub lat_us: LatencyUs,
    /// Failed I/Os.
    pub errors: u64,
}

/// What one reactor's job measured.
struct JobResult {
    ios: u64,
    lat_sum_ns: u64,
    errors: u64,
    elapsed: Duration,
    hist: Histogram<u64>,
}

/// Longest latency the histogram tracks (ns): anything slower is clamped.
const MAX_LATENCY_NS: u64 = 60_000_000_000;

/// One successful I/O in this many goes into the latency histogram (the
/// first one included, so a short run has a sample): at a million I/O per
/// second that is 62,500 samples a second, plenty for a p99.
const LATENCY_SAMPLE: u64 = 16;

struct Job {
    graph: Arc<Graph>,
    root: RootId,
    stop: Arc<AtomicBool>,
    spec: PerfSpec,
    /// Number of `bs`-sized slots on the device.
    slots: u64,
    /// Offsets and read/write choices: deterministic per reactor, so runs
    /// are repeatable.
    rng: RefCell<SmallRng>,
    hist: RefCell<Histogram<u64>>,
    ios: Cell<u64>,
    /// Sum of the successful I/Os' latencies, for the mean.
    lat_sum_ns: Cell<u64>,
    errors: Cell<u64>,
    outstanding: Cell<u32>,
    t0: Instant,
    me: RefCell<Option<Rc<Job>>>,
    done: mpsc::Sender<JobResult>,
}

impl Job {
    fn submit(&self, r: &Reactor, tag: u64, buf: AlignedBuf) {
        // One draw per I/O: its low bit picks the op, its high bits the
        // slot (a multiply-high maps them onto the slots: the same spread
        // as `%` without a 64-bit division per I/O).
        let x = self.rng.borrow_mut().next_u64();
        let op = match self.spec.rw {
            Rw::Randread => IoOp::Read,
            Rw::Randwrite => IoOp::Write,
            Rw::Randrw if x & 1 == 0 => IoOp::Read,
            Rw::Randrw => IoOp::Write,
        };
        let bs = self.spec.bs as u64;
        let offset = ((u128::from(x) * u128::from(self.slots)) >> 64) as u64 * bs;
        let sink: Rc<dyn IoSink> = self.me.borrow().clone().expect("job running");
        let io = Io::new(op, offset, bs, IoBuf::Owned(buf), sink, tag);
        self.graph.snapshot(r).submit(r, self.root, io);
    }

    fn finish(&self) {
        let result = JobResult {
            ios: self.ios.get(),
            lat_sum_ns: self.lat_sum_ns.get(),
            errors: self.errors.get(),
            elapsed: self.t0.elapsed(),
            hist: self.hist.replace(Histogram::new(1).expect("valid")),
        };
        let _ = self.done.send(result);
        // Break the job's self-reference: it is dropped on this reactor.
        self.me.borrow_mut().take();
    }
}

impl IoSink for Job {
    fn io_done(&self, r: &Reactor, io: Io, result: IoResult) {
        let tag = io.tag;
        // The graph timed the I/O already (TSC at submit and completion):
        // reuse it rather than read the clock twice more per I/O.
        let ns = io.latency_ns();
        let IoBuf::Owned(buf) = io.buf else {
            unreachable!("perf submits owned buffers")
        };
        if self.stop.load(Ordering::Relaxed) {
            self.outstanding.set(self.outstanding.get() - 1);
            if self.outstanding.get() == 0 {
                self.finish();
            }
            return;
        }
        match result {
            Ok(()) => {
                let n = self.ios.get();
                self.ios.set(n + 1);
                self.lat_sum_ns.set(self.lat_sum_ns.get() + ns);
                // The percentiles come from a sample of the I/O (an
                // hdrhistogram record costs as much as a third of a null
                // read); the mean is over every one.
                if n % LATENCY_SAMPLE == 0 {
                    let _ = self.hist.borrow_mut().record(ns.clamp(1, MAX_LATENCY_NS));
                }
            }
            Err(_) => self.errors.set(self.errors.get() + 1),
        }
        self.submit(r, tag, buf);
    }
}

/// Runs `spec` against bdev `bdev` of the target described by `cfg`.
pub fn run_local(cfg: &Config, bdev: &str, spec: &PerfSpec) -> Result<PerfReport> {
    if spec.bs == 0 || spec.qd == 0 {
        bail!("--bs and --qd must be positive");
    }
    let target = Target::start(cfg)?;
    let report = run_on(&target, bdev, spec);
    target.shutdown();
    report
}

fn run_on(target: &Target, bdev: &str, spec: &PerfSpec) -> Result<PerfReport> {
    let graph = &target.graph;
    let root = graph
        .add_root("perf", bdev)
        .with_context(|| format!("--bdev {bdev}"))?;
    let geo = graph.node_geometry(bdev).expect("root added");
    if spec.bs % geo.block_size != 0 {
        bail!(
            "--bs {} is not a multiple of the block size {} of {bdev}",
            spec.bs,
            geo.block_size
        );
    }
    let slots = geo.size() / spec.bs as u64;
    if slots == 0 {
        bail!("--bs {} is larger than {bdev}", spec.bs);
    }

    let handle = target.runtime.handle();
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    for i in 0..handle.num_reactors() {
        let (graph, stop, tx, spec) = (graph.clone(), stop.clone(), tx.clone(), spec.clone());
        handle.send_blocking(i, move |r: &Reactor| {
            let qd = spec.qd;
            let now = Instant::now();
            let job = Rc::new(Job {
                graph,
                root,
                stop,
                slots,
                rng: RefCell::new(SmallRng::seed_from_u64(r.index() as u64)),
                hist: RefCell::new(
                    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("valid bounds"),
                ),
                ios: Cell::new(0),
                lat_sum_ns: Cell::new(0),
                errors: Cell::new(0),
                outstanding: Cell::new(qd),
                t0: now,
                me: RefCell::new(None),
                done: tx,
                spec,
            });
            *job.me.borrow_mut() = Some(job.clone());
            for tag in 0..qd as u64 {
                job.submit(r, tag, AlignedBuf::zeroed(job.spec.bs as usize));
            }
        });
    }
    drop(tx);
    std::thread::sleep(spec.time);
    stop.store(true, Ordering::Relaxed);

    let mut ios = 0;
    let mut lat_sum_ns = 0u64;
    let mut errors = 0;
    let mut elapsed = Duration::ZERO;
    let mut hist = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("valid");
    for _ in 0..handle.num_reactors() {
        let r = rx
            .recv_timeout(Duration::from_secs(60))
            .context("a reactor's I/O did not drain within 60 s")?;
        ios += r.ios;
        lat_sum_ns += r.lat_sum_ns;
        errors += r.errors;
        elapsed = elapsed.max(r.elapsed);
        hist.add(&r.hist).expect("same bounds");
    }
    graph.remove_root("perf")?;
    let secs = elapsed.as_secs_f64().max(1e-9);
    let iops = ios as f64 / secs;
    Ok(PerfReport {
        iops,
        mib_s: iops * spec.bs as f64 / (1024.0 * 1024.0),
        lat_us: LatencyUs {
            avg: lat_sum_ns as f64 / ios.max(1) as f64 / 1000.0,
            p50: hist.value_at_quantile(0.50) as f64 / 1000.0,
            p99: hist.value_at_quantile(0.99) as f64 / 1000.0,
        },
        errors,
    })
}

/// Prints a report as one line of text.
pub fn print_text(bdev: &str, spec: &PerfSpec, reactors: usize, r: &PerfReport) {
    println!(
        "bdev {bdev}: {:?} bs={} qd={} x {reactors} reactor(s), {:?}",
        spec.rw, spec.bs, spec.qd, spec.time
    );
    print_report(r);
}

/// Prints the figures of a report as one line.
pub fn print_report(r: &PerfReport) {
    println!(
        "IOPS {:.0}  MiB/s {:.1}  latency us: avg {:.2} p50 {:.2} p99 {:.2}  errors {}",
        r.iops, r.mib_s, r.lat_us.avg, r.lat_us.p50, r.lat_us.p99, r.errors
    );
}
