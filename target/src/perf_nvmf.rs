//! `pollux perf nvmf`: an NVMe/TCP load generator in the manner of
//! `spdk_nvme_perf`, built on the `nvme` crate's initiator. One thread polls
//! every connection; pin it to a core (`taskset`) away from the target.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use pollux_nvme::host::{rw_sqe, Controller, HostConfig, QueuePair};
use quanta::Clock;
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};

use crate::perf::{LatencyUs, PerfReport, PerfSpec, Rw};

/// One run against a remote namespace.
#[derive(Clone, Debug)]
pub struct NvmfSpec {
    /// Target address.
    pub addr: SocketAddr,
    /// Subsystem NQN.
    pub nqn: String,
    /// Namespace.
    pub nsid: u32,
    /// Pattern, size, queue depth (per connection) and time.
    pub load: PerfSpec,
    /// I/O queues (connections).
    pub connections: u16,
    /// Header digests.
    pub hdgst: bool,
    /// Data digests.
    pub ddgst: bool,
}

/// Longest latency tracked (ns).
const MAX_LATENCY_NS: u64 = 60_000_000_000;

/// Keep-alives go out this often; the admin queue asks for a KATO of 30 s.
const KEEP_ALIVE_EVERY: Duration = Duration::from_secs(5);

struct Queue {
    qp: QueuePair,
    started: Vec<u64>,
    bufs: Vec<Vec<u8>>,
}

/// Runs the load and returns the same report as `perf local`.
pub fn run(spec: &NvmfSpec) -> Result<PerfReport> {
    let load = &spec.load;
    if load.bs == 0 || load.qd == 0 || spec.connections == 0 {
        bail!("--bs, --qd and --connections must be positive");
    }
    let mut cfg = HostConfig::new(spec.addr, &spec.nqn);
    cfg.hdgst = spec.hdgst;
    cfg.ddgst = spec.ddgst;
    let mut ctrl =
        Controller::connect(cfg).with_context(|| format!("connecting to {}", spec.addr))?;
    let ns = ctrl
        .identify_namespace(spec.nsid)
        .with_context(|| format!("identify namespace {}", spec.nsid))?;
    let lbaf = ns.active_lbaf().context("namespace has no LBA format")?;
    let block = 1u64 << lbaf.lbads;
    if ns.nsze == 0 {
        bail!("namespace {} is empty or inactive", spec.nsid);
    }
    if u64::from(load.bs) % block != 0 {
        bail!(
            "--bs {} is not a multiple of the block size {block}",
            load.bs
        );
    }
    let nlb = (u64::from(load.bs) / block) as u32;
    let slots = ns.nsze / u64::from(nlb);
    if slots == 0 {
        bail!("--bs {} is larger than the namespace", load.bs);
    }
    let granted = ctrl.set_num_queues(spec.connections)?;
    if granted < spec.connections {
        bail!("the controller grants only {granted} I/O queues");
    }
    let qsize = u16::try_from(load.qd + 1).context("--qd too large")?;
    let mut queues = (1..=spec.connections)
        .map(|qid| {
            Ok(Queue {
                qp: ctrl.io_queue(qid, qsize)?,
                started: vec![0; qsize as usize],
                bufs: (0..load.qd).map(|_| vec![0u8; load.bs as usize]).collect(),
            })
        })
        .collect::<Result<Vec<_>>>()?;

    let clock = Clock::new();
    let mut hist = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_NS, 3)?;
    let (mut ios, mut errors) = (0u64, 0u64);
    // Deterministic, so runs are repeatable.
    let mut rng = SmallRng::seed_from_u64(0);
    let t0 = Instant::now();
    let end = t0 + load.time;
    let mut last_ka = t0;
    let mut stopping = false;
    loop {
        let now = Instant::now();
        if !stopping && now >= end {
            stopping = true;
        }
        let mut outstanding = 0;
        for q in queues.iter_mut() {
            while !stopping && (q.qp.outstanding() as u32) < load.qd {
                let Some(buf) = q.bufs.pop() else { break };
                // One draw per I/O: its top bit picks the op, the rest the
                // block.
                let x = rng.next_u64();
                let write = match load.rw {
                    Rw::Randread => false,
                    Rw::Randwrite => true,
                    Rw::Randrw => x >> 63 == 1,
                };
                let slba = (x % slots) * u64::from(nlb);
                let t = clock.raw();
                let cid =
                    q.qp.submit(rw_sqe(write, spec.nsid, slba, nlb), buf, write)
                        .context("queue full")?;
                q.started[cid as usize] = t;
            }
            q.qp.poll().context("I/O queue failed")?;
            let now = clock.raw();
            let Queue {
                qp, started, bufs, ..
            } = q;
            for c in qp.take_completed() {
                let ns = clock.delta_as_nanos(started[c.cqe.cid() as usize], now);
                if c.status().is_ok() {
                    ios += 1;
                    let _ = hist.record(ns.clamp(1, MAX_LATENCY_NS));
                } else {
                    errors += 1;
                }
                bufs.push(c.data);
            }
            outstanding += q.qp.outstanding();
        }
        if stopping && outstanding == 0 {
            break;
        }
        if stopping && now > end + Duration::from_secs(30) {
            bail!("{outstanding} I/Os did not complete within 30 s");
        }
        if now.duration_since(last_ka) >= KEEP_ALIVE_EVERY {
            ctrl.keep_alive()?;
            last_ka = now;
        }
    }
    let elapsed = t0.elapsed().min(load.time.max(Duration::from_millis(1)));
    drop(queues);
    let _ = ctrl.shutdown();
    let iops = ios as f64 / elapsed.as_secs_f64();
    Ok(PerfReport {
        iops,
        mib_s: iops * f64::from(load.bs) / (1024.0 * 1024.0),
        lat_us: LatencyUs {
            avg: hist.mean() / 1000.0,
            p50: hist.value_at_quantile(0.5) as f64 / 1000.0,
            p99: hist.value_at_quantile(0.99) as f64 / 1000.0,
        },
        errors,
    })
}
