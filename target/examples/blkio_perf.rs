//! A vhost-user-blk load generator on libblkio (the `blkio` crate, its
//! `virtio-blk-vhost-user` driver): random reads at a fixed queue depth for
//! a fixed time, completions busy-polled, IOPS and latency printed.
//!
//! It is the one client `scripts/bench-vhost-qsd.sh` drives both Pollux and
//! qemu-storage-daemon with, so the comparison measures the servers, not
//! two different clients. It lives in `examples/` so that libblkio stays a
//! dev-dependency and never reaches the daemon's build.
//!
//! ```sh
//! cargo run --release --example blkio_perf -- --socket S --qd 32 --time 5 --json
//! ```

use std::mem::MaybeUninit;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use blkio::{Blkio, Blkioq, Completion, ReqFlags};
use clap::Parser;
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Completions fetched per `do_io` call: one full ring's worth at the
/// deepest queue depth we run, so a burst is drained in one call.
const COMPLETIONS: usize = 1024;
/// Histogram range: 1 ns to 10 s, 3 significant digits (0.1 % error).
const HIST_MAX_NS: u64 = 10_000_000_000;

#[derive(Parser, Debug)]
#[command(about = "Random-read load over vhost-user-blk through libblkio")]
struct Args {
    /// The vhost-user-blk socket.
    #[arg(long)]
    socket: PathBuf,
    /// Requests in flight per queue.
    #[arg(long, default_value_t = 1)]
    qd: usize,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 5.0)]
    time: f64,
    /// Unmeasured seconds first (connection, page faults, server ramp-up).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Block size in bytes.
    #[arg(long, default_value_t = 4096)]
    bs: usize,
    /// Virtqueues, all driven from this one thread.
    #[arg(long, default_value_t = 1)]
    queues: usize,
    /// Ring size. Without INDIRECT_DESC a read takes 3 descriptors (header,
    /// data, status), so QD 128 needs 384 entries: libblkio's default of
    /// 256 would silently cap the queue depth at 85.
    #[arg(long, default_value_t = 1024)]
    queue_size: i32,
    /// Use interrupt queues (call eventfd, blocking `do_io`) instead of
    /// busy-polled poll queues.
    #[arg(long)]
    irq: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// One virtqueue with its requests' buffers and submit timestamps.
struct Lane {
    q: Blkioq,
    /// Host address of this lane's `qd * bs` bytes in the shared region.
    base: usize,
    /// Submit time (raw TSC) of the request in each slot.
    started: Vec<u64>,
}

struct Stats {
    ios: u64,
    errors: u64,
    hist: Histogram<u64>,
}

fn main() -> Result<()> {
    let a = Args::parse();
    if a.qd == 0 || a.queues == 0 || a.bs == 0 || a.bs % 512 != 0 {
        bail!("--qd and --queues must be at least 1, --bs a multiple of 512");
    }
    let mut b = Blkio::new("virtio-blk-vhost-user").map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let path = a.socket.to_str().context("socket path is not UTF-8")?;
    let err = |what: &str, e: blkio::Error| anyhow::anyhow!("{what}: {e:?}");
    b.set_str("path", path).map_err(|e| err("path", e))?;
    b.connect().map_err(|e| err("connect", e))?;
    let queues = i32::try_from(a.queues)?;
    // Poll queues never arm the call eventfd: completions are found by
    // spinning on the used ring, as an SPDK-style client does, so the
    // client is not the bottleneck and the server never pays for a
    // notification syscall the client would not read.
    let (irq_queues, poll_queues) = if a.irq { (queues, 0) } else { (0, queues) };
    b.set_i32("num-queues", irq_queues)
        .map_err(|e| err("num-queues", e))?;
    b.set_i32("num-poll-queues", poll_queues)
        .map_err(|e| err("num-poll-queues", e))?;
    b.set_i32("queue-size", a.queue_size)
        .map_err(|e| err("queue-size", e))?;
    let capacity = b.get_u64("capacity").map_err(|e| err("capacity", e))?;
    let out = b.start().map_err(|e| err("start", e))?;
    let qs = if a.irq { out.queues } else { out.poll_queues };
    let align = b
        .get_u64("mem-region-alignment")
        .map_err(|e| err("mem-region-alignment", e))? as usize;
    let per_lane = a.qd * a.bs;
    let len = (per_lane * a.queues).div_ceil(align) * align;
    let region = b.alloc_mem_region(len).map_err(|e| err("alloc", e))?;
    b.map_mem_region(&region).map_err(|e| err("map", e))?;
    let blocks = capacity / a.bs as u64;
    if blocks == 0 {
        bail!("device smaller than one block");
    }

    let clock = quanta::Clock::new();
    // SmallRng: a random offset costs a few instructions, so the client
    // spends its time in the ring, not in the generator.
    let mut rng = SmallRng::seed_from_u64(u64::from(std::process::id()));
    let mut lanes: Vec<Lane> = qs
        .into_iter()
        .enumerate()
        .map(|(i, q)| Lane {
            q,
            base: region.addr + i * per_lane,
            started: vec![0; a.qd],
        })
        .collect();
    for lane in &mut lanes {
        for slot in 0..a.qd {
            submit(lane, slot, a.bs, blocks, &mut rng, &clock);
        }
    }

    let mut comps: Vec<MaybeUninit<Completion>> = (0..COMPLETIONS.max(a.qd))
        .map(|_| MaybeUninit::uninit())
        .collect();
    // The warm-up's numbers are discarded; only its requests carry over.
    run(
        &mut lanes, &mut comps, &a, blocks, &mut rng, &clock, a.warmup,
    )?;
    let measured = run(&mut lanes, &mut comps, &a, blocks, &mut rng, &clock, a.time)?;
    // Requests still in flight are abandoned: dropping the queues and the
    // Blkio disconnects, and the server drains them on its side.

    let secs = a.time;
    let iops = measured.ios as f64 / secs;
    let h = &measured.hist;
    let us = |ns: u64| ns as f64 / 1000.0;
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "iops": iops.round(),
                "ios": measured.ios,
                "secs": secs,
                "qd": a.qd,
                "queues": a.queues,
                "bs": a.bs,
                "errors": measured.errors,
                "lat_us": {
                    "avg": (h.mean() / 10.0).round() / 100.0,
                    "p50": us(h.value_at_quantile(0.5)),
                    "p99": us(h.value_at_quantile(0.99)),
                },
            })
        );
    } else {
        println!(
            "{:.0} IOPS ({} I/Os in {secs} s, {} errors), latency avg {:.2} us, p50 {:.2} us, p99 {:.2} us",
            iops,
            measured.ios,
            measured.errors,
            h.mean() / 1000.0,
            us(h.value_at_quantile(0.5)),
            us(h.value_at_quantile(0.99)),
        );
    }
    if measured.errors != 0 {
        bail!("{} requests failed", measured.errors);
    }
    Ok(())
}

/// Submits a random aligned read into `slot`'s buffer.
fn submit(
    lane: &mut Lane,
    slot: usize,
    bs: usize,
    blocks: u64,
    rng: &mut SmallRng,
    clock: &quanta::Clock,
) {
    let start = rng.random_range(0..blocks) * bs as u64;
    let buf = (lane.base + slot * bs) as *mut u8;
    lane.started[slot] = clock.raw();
    lane.q.read(start, buf, bs, slot, ReqFlags::empty());
}

/// Keeps every lane at its queue depth for `secs` seconds; returns what
/// completed in that time.
fn run(
    lanes: &mut [Lane],
    comps: &mut [MaybeUninit<Completion>],
    a: &Args,
    blocks: u64,
    rng: &mut SmallRng,
    clock: &quanta::Clock,
    secs: f64,
) -> Result<Stats> {
    let mut st = Stats {
        ios: 0,
        errors: 0,
        hist: Histogram::new_with_bounds(1, HIST_MAX_NS, 3)?,
    };
    let t0 = clock.raw();
    let limit = Duration::from_secs_f64(secs);
    // One lane: let libblkio wait (spin, on a poll queue) for at least one
    // completion. Several lanes in one thread: never wait on one queue
    // while another has completions.
    let min = usize::from(lanes.len() == 1);
    let mut timeout = Duration::from_secs(10);
    loop {
        for lane in lanes.iter_mut() {
            let n = lane
                .q
                .do_io(comps, min, Some(&mut timeout), None)
                .map_err(|e| anyhow::anyhow!("do_io: {e:?}"))?;
            timeout = Duration::from_secs(10);
            let now = clock.raw();
            for c in &comps[..n] {
                // SAFETY: do_io initialised the first `n` completions.
                let c = unsafe { c.assume_init_read() };
                let slot = c.user_data;
                if c.ret != 0 {
                    st.errors += 1;
                }
                st.ios += 1;
                let ns = clock.delta_as_nanos(lane.started[slot], now).max(1);
                st.hist.saturating_record(ns);
                submit(lane, slot, a.bs, blocks, rng, clock);
            }
        }
        if clock.delta(t0, clock.raw()) >= limit {
            return Ok(st);
        }
    }
}
