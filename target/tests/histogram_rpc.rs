//! SPDK's `bdev_enable_histogram`, driven by SPDK's own rpc.py on a live
//! bdev while a host (libblkio's `virtio-blk-vhost-user` driver) keeps I/O
//! running: /metrics drops a bdev's latency series while its histogram is
//! off and the op counters keep moving, brings it back when it is on again
//! (for every op, or for the one `--opc` names), save_config records the
//! switch, and what Pollux cannot honour is refused by name.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::blkio_host::BlkioHost;
use support::{scrape, series, try_series, Daemon};

const BDEV: &str = "Malloc0";
const BLOCK: usize = 4096;
/// How long a scrape may wait for the counters to move under I/O on a
/// loaded debug build.
const MOVE_WITHIN: Duration = Duration::from_secs(20);

fn latency_count(text: &str, op: &str) -> Option<f64> {
    try_series(
        text,
        &format!("pollux_bdev_latency_seconds_count{{bdev=\"{BDEV}\",op=\"{op}\"}}"),
    )
}

fn ops(text: &str, op: &str) -> f64 {
    series(
        text,
        &format!("pollux_bdev_ops_total{{bdev=\"{BDEV}\",op=\"{op}\"}}"),
    )
}

/// Scrapes until `done` holds for a scrape, or panics with the last one.
fn scrape_until(d: &Daemon, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + MOVE_WITHIN;
    loop {
        let text = scrape(d.metrics_addr());
        if done(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "{what} never happened:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The `bdev_enable_histogram` calls of save_config's bdev subsystem.
fn saved_switches(d: &Daemon) -> Vec<Value> {
    let cfg = d.spdk().run(&["save_config"]);
    cfg["subsystems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["subsystem"] == "bdev")
        .flat_map(|s| s["config"].as_array().unwrap().clone())
        .filter(|c| c["method"] == "bdev_enable_histogram")
        .map(|c| c["params"].clone())
        .collect()
}

#[test]
fn histogram_switch_under_io_reaches_metrics_and_save_config() {
    let d = Daemon::builder().empty_target("[0]").start();
    let rpc = d.spdk();
    assert_eq!(
        rpc.run(&["bdev_malloc_create", "-b", BDEV, "16", "4096"]),
        json!(BDEV)
    );
    rpc.run(&[
        "vhost_create_blk_controller",
        "--cpumask",
        "0x1",
        "vhost.0",
        BDEV,
    ]);
    let mut host = BlkioHost::connect(&d.dir().join("vhost.0"), 1, 2 * BLOCK);
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let io = {
        let (stop, errors) = (stop.clone(), errors.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let start = (i % 1024) * BLOCK as u64;
                for write in [true, false] {
                    if host.try_io(0, write, start, 0, BLOCK) != Some(0) {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                i += 1;
            }
        })
    };

    // The default: on, so the latency series move with the I/O.
    scrape_until(&d, "reads timed by default", |t| {
        latency_count(t, "read").is_some_and(|c| c > 10.0)
            && latency_count(t, "write").is_some_and(|c| c > 10.0)
    });
    assert_eq!(saved_switches(&d), Vec::<Value>::new(), "default: nothing");

    // Off: the series go, the op counters keep moving. rpc.py prints
    // nothing on success (no error is the check); the answer is SPDK's bool.
    rpc.run(&["bdev_enable_histogram", "--no-histogram", BDEV]);
    let off = scrape(d.metrics_addr());
    for op in ["read", "write", "flush", "write_zeroes", "discard"] {
        assert_eq!(latency_count(&off, op), None, "{op} while off:\n{off}");
    }
    let reads_off = ops(&off, "read");
    scrape_until(&d, "reads counted while off", |t| {
        ops(t, "read") > reads_off + 10.0 && latency_count(t, "read").is_none()
    });
    assert_eq!(
        saved_switches(&d),
        vec![json!({"name": BDEV, "enable": false})]
    );

    // On for reads only (`--opc`): reads are timed again, from where
    // their histogram stopped; writes stay without a series.
    rpc.run(&["bdev_enable_histogram", "--histogram", "-o", "read", BDEV]);
    let first = latency_count(&scrape(d.metrics_addr()), "read").expect("read series back");
    let t = scrape_until(&d, "reads timed again", |t| {
        latency_count(t, "read").is_some_and(|c| c > first + 10.0)
    });
    assert_eq!(latency_count(&t, "write"), None, "{t}");
    assert_eq!(
        saved_switches(&d),
        vec![json!({"name": BDEV, "enable": true, "opc": "read"})]
    );

    assert_eq!(
        rpc.call(
            "bdev_enable_histogram",
            json!({"name": BDEV, "enable": true, "opc": "read"})
        ),
        json!(true)
    );

    // Every op, with SPDK's bucket layout spelled out (its defaults).
    rpc.run(&[
        "bdev_enable_histogram",
        "--histogram",
        "--granularity",
        "7",
        "--min-nsec",
        "1000",
        "--max-nsec",
        "120000000000",
        BDEV,
    ]);
    let w = latency_count(&scrape(d.metrics_addr()), "write").expect("write series back");
    scrape_until(&d, "writes timed again", |t| {
        latency_count(t, "write").is_some_and(|c| c > w + 10.0)
    });
    assert_eq!(saved_switches(&d), Vec::<Value>::new(), "back to default");

    // Refusals, each naming its cause; none of them changes the switch.
    let e = rpc.fails(&["bdev_enable_histogram", "--no-histogram", "Nope0"]);
    assert!(e.contains("-19") && e.contains("Nope0"), "{e}");
    let e = rpc.fails(&["bdev_enable_histogram", "--histogram", "-o", "bogus", BDEV]);
    assert!(e.contains("-32603") && e.contains("Invalid Io type"), "{e}");
    let e = rpc.fails(&["bdev_enable_histogram", "--histogram", "-o", "reset", BDEV]);
    assert!(e.contains("-32602") && e.contains("opc"), "{e}");
    let e = rpc.fails(&[
        "bdev_enable_histogram",
        "--histogram",
        "--granularity",
        "3",
        BDEV,
    ]);
    assert!(e.contains("-32602") && e.contains("granularity"), "{e}");
    let e = rpc.fails(&[
        "bdev_enable_histogram",
        "--histogram",
        "--max-nsec",
        "5000",
        BDEV,
    ]);
    assert!(e.contains("-32602") && e.contains("max_nsec"), "{e}");
    let e = rpc
        .try_call(
            "bdev_enable_histogram",
            json!({"name": BDEV, "enable": true, "bogus": 1}),
        )
        .unwrap_err();
    assert!(e.contains("bogus"), "{e}");
    assert_eq!(saved_switches(&d), Vec::<Value>::new());

    stop.store(true, Ordering::Relaxed);
    io.join().unwrap();
    assert_eq!(errors.load(Ordering::Relaxed), 0, "host I/O failed");
}
