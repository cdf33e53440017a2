//! Load on the NVMe/TCP target from our own initiator (`pollux perf nvmf`):
//! many connections at queue depth 128 with verified completion counts,
//! and hosts killed in the middle of I/O, after which nothing is leaked
//! (file descriptors, in-flight I/O) and new hosts are served.

mod support;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{free_port, pollux, scrape, series, Daemon, Ready};

const NQN: &str = "nqn.2024-11.dev.pollux:load";

/// The daemon serving ram0 over NVMe/TCP on `port`, metrics on `metrics`.
struct Target {
    daemon: Daemon,
    port: u16,
    metrics: SocketAddr,
}

impl Target {
    fn start() -> Target {
        let (port, metrics) = (free_port(), free_port());
        let daemon = Daemon::builder()
            .config(format!(
                "[reactors]\ncores = [0]\nidle = \"adaptive\"\n\
                 [[bdev]]\nname = \"ram0\"\nkind = \"ram\"\nsize = \"64MiB\"\n\
                 [[nvmf.subsystem]]\nnqn = \"{NQN}\"\nnamespaces = [\"ram0\"]\n\
                 allow_any_host = true\nlisten = [\"127.0.0.1:{port}\"]\n\
                 [metrics]\nlisten = \"127.0.0.1:{metrics}\"\n"
            ))
            .ready(Ready::Tcp(([127, 0, 0, 1], port).into()))
            .timeout(Duration::from_secs(20))
            .start();
        Target {
            daemon,
            port,
            metrics: ([127, 0, 0, 1], metrics).into(),
        }
    }

    fn perf(&self, args: &[&str]) -> Command {
        let mut c = pollux();
        c.args(["perf", "nvmf", "--addr"])
            .arg(format!("127.0.0.1:{}", self.port))
            .args(["--nqn", NQN])
            .args(args);
        c
    }

    fn open_fds(&self) -> usize {
        self.daemon.open_fds()
    }

    fn metric(&self, name: &str) -> f64 {
        series(&scrape(self.metrics), name)
    }
}

fn run_json(mut c: Command) -> serde_json::Value {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "perf nvmf failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn many_connections_at_qd128_and_abrupt_disconnects_leak_nothing() {
    let d = Target::start();

    // 8 connections x QD 128, mixed reads and writes of 4 KiB (in-capsule)
    // and 16 KiB (R2T), with and without digests.
    for args in [
        &[
            "--connections",
            "8",
            "--qd",
            "128",
            "--rw",
            "randrw",
            "--bs",
            "4096",
        ][..],
        &[
            "--connections",
            "4",
            "--qd",
            "128",
            "--rw",
            "randwrite",
            "--bs",
            "16384",
        ][..],
        &[
            "--connections",
            "2",
            "--qd",
            "64",
            "--rw",
            "randrw",
            "--bs",
            "8192",
            "--hdr-digest",
            "--data-digest",
        ][..],
    ] {
        let mut c = d.perf(args);
        c.args(["--time", "2", "--json"]);
        let r = run_json(c);
        assert_eq!(r["errors"], 0, "{args:?}: {r}");
        assert!(r["iops"].as_f64().unwrap() > 100.0, "{args:?}: {r}");
    }

    // Steady state after the first hosts came and went cleanly: per-reactor
    // resources created on first use (poll group, metrics server) are in
    // the baseline; only growth across the kills below is a leak.
    let _ = d.metric("pollux_bdev_inflight{bdev=\"ram0\"}");
    let baseline_fds = d.open_fds();

    // Hosts killed (SIGKILL: no disconnect, no shutdown) in the middle of
    // I/O, several times over.
    for round in 0..5 {
        let mut c = d.perf(&[
            "--connections",
            "4",
            "--qd",
            "128",
            "--rw",
            "randrw",
            "--time",
            "30",
        ]);
        let mut child = c
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300 + 100 * round));
        child.kill().unwrap();
        child.wait().unwrap();
    }

    // The target noticed every dead connection and released everything.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let fds = d.open_fds();
        let inflight = d.metric("pollux_bdev_inflight{bdev=\"ram0\"}");
        if fds <= baseline_fds && inflight == 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "leak after abrupt disconnects: {fds} fds (baseline {baseline_fds}), {inflight} in flight"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // And new hosts are served as before.
    let mut c = d.perf(&["--connections", "2", "--qd", "32", "--time", "1", "--json"]);
    c.args(["--rw", "randread"]);
    let r = run_json(c);
    assert_eq!(r["errors"], 0, "{r}");
}
