//! Issue 12's split, error and delay bdevs, with real clients: built,
//! changed and deleted by SPDK's rpc.py, and served through vhost-user-blk
//! to libblkio, which verifies the data. Also: error and delay filters put
//! above a live bdev and taken out again under verified I/O with 0 failed
//! requests, and save_config → `pollux --json` rebuilding the bdevs.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::blkio_host::BlkioHost;
use support::{pattern, Daemon, SpdkRpc};

/// The malloc bdev: 64 MiB (rpc.py takes the size in MiB) of 4 KiB blocks.
const DISK_MIB: u64 = 64;
const MIB: u64 = 1 << 20;
const BUF: usize = 1 << 20;

fn start(dir: tempfile::TempDir, extra: &[&str]) -> Daemon {
    Daemon::builder()
        .in_dir(dir)
        .empty_target("[0, 1]")
        .args(extra)
        .start()
}

/// A vhost-user-blk controller `ctrlr` on `bdev`, and a libblkio host on it.
fn host(d: &Daemon, rpc: &SpdkRpc, ctrlr: &str, bdev: &str) -> BlkioHost {
    rpc.run(&["vhost_create_blk_controller", ctrlr, bdev]);
    BlkioHost::connect(&d.dir().join(ctrlr), 1, BUF)
}

fn write_pattern(h: &mut BlkioHost, start: u64, len: usize, seed: u64) -> Vec<u8> {
    let data = pattern(seed, len);
    h.buf(0, len).copy_from_slice(&data);
    assert_eq!(h.write(0, start, 0, len), 0, "write at {start}");
    data
}

fn read_back(h: &mut BlkioHost, start: u64, len: usize) -> Vec<u8> {
    h.buf(BUF / 2, len).fill(0xee);
    assert_eq!(h.read(0, start, BUF / 2, len), 0, "read at {start}");
    h.buf(BUF / 2, len).to_vec()
}

fn names(rpc: &SpdkRpc) -> Vec<String> {
    let mut v: Vec<String> = rpc
        .run(&["bdev_get_bdevs"])
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn split_error_and_delay_through_rpc_py_and_libblkio() {
    let mut d = start(tempfile::tempdir().unwrap(), &[]);
    let rpc = d.spdk();
    rpc.run(&[
        "bdev_malloc_create",
        "-b",
        "Malloc0",
        &DISK_MIB.to_string(),
        "4096",
    ]);

    // Split: two halves named as SPDK names them; -s sizes them.
    // rpc.py prints the names space-separated; the JSON answer is the array.
    assert_eq!(
        rpc.run(&["bdev_split_create", "Malloc0", "2"]),
        json!("Malloc0p0 Malloc0p1")
    );
    let e = rpc.fails(&["bdev_split_create", "Malloc0", "2"]);
    assert!(e.contains("already exists"), "{e}");
    let parts = rpc.run(&["bdev_get_bdevs", "-b", "Malloc0p1"]);
    assert_eq!(parts[0]["num_blocks"], json!(DISK_MIB * MIB / 2 / 4096));
    assert_eq!(parts[0]["product_name"], json!("Split Disk"));
    rpc.run(&["bdev_malloc_create", "-b", "Malloc1", "16", "512"]);
    assert_eq!(
        rpc.call(
            "bdev_split_create",
            json!({"base_bdev": "Malloc1", "split_count": 8, "split_size_mb": 4})
        ),
        json!(["Malloc1p0", "Malloc1p1", "Malloc1p2", "Malloc1p3"]),
        "a count that does not fit is clamped"
    );

    // Error over part 1, delay over part 0.
    assert_eq!(
        rpc.run(&["bdev_error_create", "Malloc0p1"]),
        json!("EE_Malloc0p1")
    );
    assert_eq!(
        rpc.run(&[
            "bdev_delay_create",
            "-b",
            "Malloc0p0",
            "-d",
            "Delay0",
            "-r",
            "2000",
            "-t",
            "2000",
            "-w",
            "100",
            "-n",
            "1000",
        ]),
        json!("Delay0")
    );
    let e = rpc.fails(&[
        "bdev_delay_create",
        "-b",
        "Malloc0p0",
        "-d",
        "Delay1",
        "-r",
        "10",
        "-t",
        "5",
        "-w",
        "1",
        "-n",
        "1",
    ]);
    assert!(e.contains("p99"), "p99 below avg is refused: {e}");

    let mut whole = host(&d, &rpc, "vb.m", "Malloc0");
    let mut ee = host(&d, &rpc, "vb.e", "EE_Malloc0p1");
    let mut delay = host(&d, &rpc, "vb.d", "Delay0");
    assert_eq!(ee.blkio().get_u64("capacity").unwrap(), DISK_MIB * MIB / 2);

    // The parts map onto the base: part 1 starts half way.
    let a = write_pattern(&mut ee, 4096, 65536, 1);
    assert_eq!(read_back(&mut whole, DISK_MIB * MIB / 2 + 4096, 65536), a);
    let b = write_pattern(&mut delay, 0, 8192, 2);
    assert_eq!(read_back(&mut whole, 0, 8192), b);
    // Reads through the delay take at least the average read latency.
    let t = Instant::now();
    assert_eq!(read_back(&mut delay, 0, 8192), b);
    assert!(
        t.elapsed() >= Duration::from_micros(2000),
        "{:?}",
        t.elapsed()
    );
    rpc.run(&["bdev_delay_update_latency", "Delay0", "avg_read", "0"]);
    rpc.run(&["bdev_delay_update_latency", "Delay0", "p99_read", "0"]);
    assert_eq!(read_back(&mut delay, 0, 8192), b);
    let e = rpc.fails(&["bdev_delay_update_latency", "nope", "avg_read", "1"]);
    assert!(e.contains("No such device"), "{e}");

    // Error injection: one write fails, the next succeeds.
    rpc.run(&[
        "bdev_error_inject_error",
        "EE_Malloc0p1",
        "write",
        "failure",
        "-n",
        "1",
    ]);
    ee.buf(0, 4096).fill(7);
    assert_ne!(
        ee.try_io(0, true, 0, 0, 4096),
        Some(0),
        "the injected write failure"
    );
    assert_eq!(
        ee.try_io(0, true, 0, 0, 4096),
        Some(0),
        "only one was injected"
    );
    // Corrupted reads flip the byte asked for; the data below is intact.
    rpc.run(&[
        "bdev_error_inject_error",
        "EE_Malloc0p1",
        "read",
        "corrupt_data",
        "-n",
        "1",
        "-o",
        "10",
        "-v",
        "255",
    ]);
    let mut got = read_back(&mut ee, 4096, 65536);
    assert_ne!(got, a);
    got[10] ^= 255;
    assert_eq!(got, a, "exactly byte 10 is corrupted");
    assert_eq!(read_back(&mut ee, 4096, 65536), a);
    let e = rpc.fails(&[
        "bdev_error_inject_error",
        "EE_Malloc0p1",
        "read",
        "corrupt_data",
    ]);
    assert!(e.contains("corrupt_value"), "{e}");
    // `all` then `clear`: nothing fails any more.
    rpc.run(&[
        "bdev_error_inject_error",
        "EE_Malloc0p1",
        "all",
        "failure",
        "-n",
        "100",
    ]);
    assert_ne!(ee.try_io(0, false, 0, 0, 4096), Some(0));
    rpc.run(&[
        "bdev_error_inject_error",
        "EE_Malloc0p1",
        "clear",
        "failure",
    ]);
    assert_eq!(ee.try_io(0, false, 0, 0, 4096), Some(0));
    // nvme_failure: the status as given (NVMe/TCP hosts get it; a
    // virtio-blk host sees the write fail).
    rpc.run(&[
        "bdev_error_inject_error",
        "EE_Malloc0p1",
        "write",
        "nvme_failure",
        "--nvme-sct",
        "0",
        "--nvme-sc",
        "129",
    ]);
    assert_ne!(ee.try_io(0, true, 0, 0, 4096), Some(0));
    assert_eq!(ee.try_io(0, true, 0, 0, 4096), Some(0));
    for bad in [["0", "0"], ["8", "1"], ["0", "256"]] {
        let e = rpc.fails(&[
            "bdev_error_inject_error",
            "EE_Malloc0p1",
            "write",
            "nvme_failure",
            "--nvme-sct",
            bad[0],
            "--nvme-sc",
            bad[1],
        ]);
        assert!(e.contains("-22"), "{e}");
    }
    // queue_depth: only I/O that finds that many others in flight gets
    // it; one request at a time never does, and the injection stays armed.
    rpc.run(&[
        "bdev_error_inject_error",
        "EE_Malloc0p1",
        "write",
        "failure",
        "-n",
        "1",
        "-q",
        "4",
    ]);
    for _ in 0..8 {
        assert_eq!(ee.try_io(0, true, 0, 0, 4096), Some(0));
    }
    rpc.run(&[
        "bdev_error_inject_error",
        "EE_Malloc0p1",
        "clear",
        "failure",
    ]);

    // The graph and the metrics know every node.
    let g = rpc.call("pollux_graph_get", json!({}));
    let kind = |n: &str| {
        g["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == json!(n))
            .map(|x| x["kind"].clone())
    };
    assert_eq!(kind("Malloc0p1"), Some(json!("split")));
    assert_eq!(kind("EE_Malloc0p1"), Some(json!("error")));
    assert_eq!(kind("Delay0"), Some(json!("delay")));
    let m = support::scrape(d.metrics_addr());
    for b in ["Malloc0p1", "EE_Malloc0p1", "Delay0"] {
        let reads = support::series(
            &m,
            &format!("pollux_bdev_ops_total{{bdev=\"{b}\",op=\"read\"}}"),
        );
        assert!(reads >= 1.0, "{b}: {reads} reads in /metrics");
    }

    // save_config replays them; a fresh daemon loading it has the same bdevs.
    let saved = rpc.run(&["save_config"]);
    let bdev_cfg = saved["subsystems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["subsystem"] == json!("bdev"))
        .unwrap()["config"]
        .clone();
    let methods: Vec<&str> = bdev_cfg
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["method"].as_str().unwrap())
        .collect();
    assert_eq!(
        methods
            .iter()
            .filter(|m| **m == "bdev_split_create")
            .count(),
        2
    );
    let delay_cfg = bdev_cfg
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["method"] == json!("bdev_delay_create"))
        .unwrap();
    assert_eq!(
        delay_cfg["params"]["avg_read_latency"],
        json!(0),
        "the updated latency"
    );
    assert_eq!(delay_cfg["params"]["avg_write_latency"], json!(100));
    let dir2 = tempfile::tempdir().unwrap();
    let path = dir2.path().join("saved.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&saved).unwrap()).unwrap();
    let mut d2 = start(dir2, &["--json", path.to_str().unwrap()]);
    assert_eq!(names(&d2.spdk()), names(&rpc));
    assert!(d2.stop().success(), "{}", d2.log());

    // Deleting: refused while exported, then in SPDK's order.
    let e = rpc.fails(&["bdev_error_delete", "EE_Malloc0p1"]);
    assert!(e.contains("in use"), "{e}");
    drop((ee, delay, whole));
    for c in ["vb.e", "vb.d", "vb.m"] {
        wait_no_session(&rpc, c);
        rpc.run(&["vhost_delete_controller", c]);
    }
    rpc.run(&["bdev_error_delete", "EE_Malloc0p1"]);
    rpc.run(&["bdev_delay_delete", "Delay0"]);
    rpc.run(&["bdev_split_delete", "Malloc0"]);
    rpc.run(&["bdev_split_delete", "Malloc1"]);
    let e = rpc.fails(&["bdev_split_delete", "Malloc0"]);
    assert!(e.contains("No such device"), "{e}");
    assert_eq!(names(&rpc), ["Malloc0", "Malloc1"]);
    let st = d.stop();
    assert!(st.success(), "pollux exit status {st}; log:\n{}", d.log());
}

fn wait_no_session(rpc: &SpdkRpc, ctrlr: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let c = rpc.run(&["vhost_get_controllers", "-n", ctrlr]);
        if c[0]["sessions"] == json!([]) {
            return;
        }
        assert!(Instant::now() < deadline, "session never ended: {c}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Inserts an error filter and a delay filter above the live Malloc0 and
/// removes them again, `CYCLES` times each, while a libblkio host runs
/// write + read-back verify through a controller on Malloc0.
const CYCLES: usize = 100;

const CHURN_SCRIPT: &str = r#"
n, node = int(sys.argv[2]), sys.argv[3]
for i in range(n):
    c.call("pollux_graph_insert_filter", {"node": node, "filter": {"name": "err0", "kind": "error"}})
    c.call("pollux_graph_insert_filter", {"node": "err0", "filter": {"name": "dly0", "kind": "delay",
        "params": {"avg_read_latency": 50, "p99_read_latency": 500, "avg_write_latency": 50, "p99_write_latency": 500}}})
    if i % 10 == 0:
        g = c.call("pollux_graph_get")
        assert [r["node"] for r in g["roots"]] == ["dly0"], g
    c.call("pollux_graph_remove_filter", {"name": "err0"})
    c.call("pollux_graph_remove_filter", {"name": "dly0"})
g = c.call("pollux_graph_get")
assert [r["node"] for r in g["roots"]] == [node], g
print(json.dumps({"cycles": n}))
"#;

#[test]
fn error_and_delay_filters_come_and_go_under_verified_io() {
    let mut d = start(tempfile::tempdir().unwrap(), &[]);
    let rpc = d.spdk();
    rpc.run(&["bdev_malloc_create", "-b", "Malloc0", "16", "4096"]);
    let mut h = host(&d, &rpc, "vb.0", "Malloc0");
    let stop = Arc::new(AtomicBool::new(false));
    let (verified, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let io = {
        let (stop, verified, errors) = (stop.clone(), verified.clone(), errors.clone());
        std::thread::spawn(move || {
            let mut seed = 0u64;
            while !stop.load(Ordering::Relaxed) {
                seed += 1;
                let (start, len) = ((seed % 1000) * 8192, 8192);
                let data = pattern(seed, len);
                h.buf(0, len).copy_from_slice(&data);
                if h.try_io(0, true, start, 0, len) != Some(0) {
                    errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                h.buf(BUF / 2, len).fill(0);
                if h.try_io(0, false, start, BUF / 2, len) != Some(0)
                    || h.buf(BUF / 2, len) != &data[..]
                {
                    errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                verified.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while verified.load(Ordering::Relaxed) < 10 {
        assert!(Instant::now() < deadline, "no I/O completed");
        std::thread::sleep(Duration::from_millis(10));
    }
    let before = verified.load(Ordering::Relaxed);
    let out = rpc.python(CHURN_SCRIPT, &[&CYCLES.to_string(), "Malloc0"]);
    assert!(
        out.status.success(),
        "filter churn failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let during = verified.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    io.join().unwrap();
    eprintln!("{CYCLES} error+delay insert/remove cycles, {during} verified pairs during them");
    assert_eq!(errors.load(Ordering::Relaxed), 0, "failed or wrong I/O");
    assert!(during > 0, "the host stalled during the churn");
    let saved: Value = rpc.run(&["save_config"]);
    assert!(
        !saved.to_string().contains("err0"),
        "removed filters are not saved"
    );
    let st = d.stop();
    assert!(st.success(), "pollux exit status {st}; log:\n{}", d.log());
}

/// The TOML forms: an error bdev and a delay bdev on a ram disk, served to
/// libblkio, and written back by save_config as the SPDK calls.
#[test]
fn toml_delay_and_error_bdevs_serve_and_save() {
    let b = Daemon::builder();
    let text = format!(
        "[reactors]\ncores = [0, 1]\nidle = \"adaptive\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n\
         [vhost]\nsocket_dir = \"{}\"\n\
         [[bdev]]\nname = \"d0\"\nkind = \"delay\"\nchild = \"EE_ram0\"\n\
         avg_write_latency = 500\np99_write_latency = 5000\n\
         [[bdev]]\nname = \"EE_ram0\"\nkind = \"error\"\nchild = \"ram0\"\n\
         [[bdev]]\nname = \"ram0\"\nkind = \"ram\"\nsize = \"16MiB\"\nblock_size = 4096\n",
        b.dir().display()
    );
    let mut d = b.config(text).start();
    let rpc = d.spdk();
    assert_eq!(names(&rpc), ["EE_ram0", "d0", "ram0"]);
    let mut h = host(&d, &rpc, "vb.t", "d0");
    let data = write_pattern(&mut h, 8192, 16384, 7);
    assert_eq!(read_back(&mut h, 8192, 16384), data);
    rpc.run(&[
        "bdev_error_inject_error",
        "EE_ram0",
        "read",
        "failure",
        "-n",
        "1",
    ]);
    assert_ne!(
        h.try_io(0, false, 0, 0, 4096),
        Some(0),
        "injected through d0"
    );
    let saved = rpc.run(&["save_config"]).to_string();
    assert!(
        saved.contains(r#""method":"bdev_error_create","params":{"base_name":"ram0""#),
        "{saved}"
    );
    assert!(saved.contains(r#""avg_write_latency":500"#), "{saved}");
    drop(h);
    let st = d.stop();
    assert!(st.success(), "pollux exit status {st}; log:\n{}", d.log());
}
