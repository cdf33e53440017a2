//! RAID arrays (issue 12) with real clients: SPDK's rpc.py builds, lists
//! and deletes them and changes their members; libblkio's
//! `virtio-blk-vhost-user` driver runs verified I/O through them.
//!
//! Covered: the RPCs' shapes and errors against SPDK's, save_config →
//! `pollux --json` recreating the arrays; raid0 (I/O split at strips),
//! raid1 and a TOML-made concat verified through vhost-user-blk; a RAID1
//! member removed and a new one added under verified load (a background
//! rebuild with SPDK's `process` progress), 0 failed I/O, and the rebuilt
//! member alone then reading back every byte.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};
use serde_json::{json, Value};
use support::blkio_host::BlkioHost;
use support::{pattern, scrape, series, Daemon, SpdkRpc};

/// Each member: 16 MiB of 4 KiB blocks (rpc.py takes MiB).
const DISK_MIB: u64 = 16;
const BLOCK: u64 = 4096;
/// Largest request of the verifying host: 16 blocks, so raid0 with 4 KiB
/// strips splits it across every member.
const MAX_IO: usize = 65536;

fn start(extra_toml: &str) -> Daemon {
    let b = Daemon::builder();
    let cfg = format!(
        "[reactors]\ncores = [0, 1]\nidle = \"adaptive\"\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n\
         [vhost]\nsocket_dir = \"{}\"\n{extra_toml}",
        b.dir().display()
    );
    b.config(cfg).start()
}

fn malloc(rpc: &SpdkRpc, name: &str) {
    rpc.run(&[
        "bdev_malloc_create",
        "-b",
        name,
        &DISK_MIB.to_string(),
        "4096",
    ]);
}

/// What the verifying host saw.
#[derive(Default)]
struct IoTally {
    verified: AtomicU64,
    errors: AtomicU64,
    mismatches: AtomicU64,
}

/// Random write + read-back verify over the first `size` bytes until
/// `stop`, writes on queue 0 and reads on queue 1 (two reactors), keeping
/// `shadow` equal to what the device should hold.
fn verify_loop(
    host: &mut BlkioHost,
    size: u64,
    seed: u64,
    stop: &AtomicBool,
    tally: &IoTally,
    shadow: &Mutex<Vec<u8>>,
) {
    let blocks = size / BLOCK;
    let max_blocks = (MAX_IO as u64 / BLOCK) as usize;
    let mut rng = SmallRng::seed_from_u64(seed);
    while !stop.load(Ordering::Relaxed) {
        let start = rng.random_range(0..blocks - max_blocks as u64) * BLOCK;
        let len = rng.random_range(1..=max_blocks) * BLOCK as usize;
        let data = pattern(rng.next_u64(), len);
        host.buf(0, len).copy_from_slice(&data);
        if host.try_io(0, true, start, 0, len) != Some(0) {
            tally.errors.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        shadow.lock().unwrap()[start as usize..start as usize + len].copy_from_slice(&data);
        host.buf(MAX_IO, len).fill(0xee);
        if host.try_io(1, false, start, MAX_IO, len) != Some(0) {
            tally.errors.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if host.buf(MAX_IO, len) != &data[..] {
            tally.mismatches.fetch_add(1, Ordering::Relaxed);
        }
        tally.verified.fetch_add(1, Ordering::Relaxed);
    }
}

/// `verify_loop` on its own thread, and the test's handles on it.
struct Load {
    stop: Arc<AtomicBool>,
    tally: Arc<IoTally>,
    shadow: Arc<Mutex<Vec<u8>>>,
    io: std::thread::JoinHandle<BlkioHost>,
}

impl Load {
    /// Starts the loop on `host` over `size` bytes whose contents are
    /// `shadow`.
    fn start(mut host: BlkioHost, size: u64, seed: u64, shadow: Vec<u8>) -> Load {
        let tally = Arc::new(IoTally::default());
        let stop = Arc::new(AtomicBool::new(false));
        let shadow = Arc::new(Mutex::new(shadow));
        let io = {
            let (stop, tally, shadow) = (stop.clone(), tally.clone(), shadow.clone());
            std::thread::spawn(move || {
                verify_loop(&mut host, size, seed, &stop, &tally, &shadow);
                host
            })
        };
        Load {
            stop,
            tally,
            shadow,
            io,
        }
    }

    /// Waits for `n` more verified pairs.
    fn wait_pairs(&self, n: u64) {
        let target = self.tally.verified.load(Ordering::Relaxed) + n;
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.tally.verified.load(Ordering::Relaxed) < target {
            assert!(Instant::now() < deadline, "I/O stalled");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the loop, checks that no I/O failed and no read differed, and
    /// returns the host, the verified pairs and what the disk must hold.
    fn finish(self) -> (BlkioHost, u64, Vec<u8>) {
        self.stop.store(true, Ordering::Relaxed);
        let host = self.io.join().unwrap();
        assert_eq!(self.tally.errors.load(Ordering::Relaxed), 0, "I/O errors");
        assert_eq!(
            self.tally.mismatches.load(Ordering::Relaxed),
            0,
            "data differs"
        );
        let verified = self.tally.verified.load(Ordering::Relaxed);
        let shadow = std::mem::take(&mut *self.shadow.lock().unwrap());
        (host, verified, shadow)
    }
}

/// Reads the whole device through the host and compares it with `shadow`.
fn read_all_matches(host: &mut BlkioHost, shadow: &[u8]) -> Result<(), String> {
    for start in (0..shadow.len()).step_by(MAX_IO) {
        let len = MAX_IO.min(shadow.len() - start);
        if host.try_io(0, false, start as u64, 0, len) != Some(0) {
            return Err(format!("read at {start} failed"));
        }
        if host.buf(0, len) != &shadow[start..start + len] {
            return Err(format!("data at {start} differs"));
        }
    }
    Ok(())
}

/// Runs verified I/O through `sock` until `pairs` write + read pairs
/// passed; returns the tally.
fn verify_pairs(sock: &std::path::Path, size: u64, pairs: u64) -> Arc<IoTally> {
    let mut host = BlkioHost::connect(sock, 2, 2 * MAX_IO);
    assert_eq!(host.blkio().get_u64("capacity").unwrap(), size);
    let tally = Arc::new(IoTally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let shadow = Mutex::new(vec![0u8; size as usize]);
    let io = {
        let (stop, tally) = (stop.clone(), tally.clone());
        std::thread::spawn(move || {
            verify_loop(&mut host, size, 7, &stop, &tally, &shadow);
            let shadow = shadow.into_inner().unwrap();
            // Everything written reads back in one sweep too.
            read_all_matches(&mut host, &shadow)
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while tally.verified.load(Ordering::Relaxed) < pairs {
        assert!(Instant::now() < deadline, "I/O did not progress");
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    io.join().unwrap().unwrap();
    tally
}

fn wait_no_session(rpc: &SpdkRpc, ctrlr: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while rpc.run(&["vhost_get_controllers", "-n", ctrlr])[0]["sessions"] != json!([]) {
        assert!(Instant::now() < deadline, "session of {ctrlr} never ended");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn raid(rpc: &SpdkRpc, name: &str) -> Value {
    let all = rpc.run(&["bdev_raid_get_bdevs", "all"]);
    all.as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no array {name} in {all}"))
}

#[test]
fn raid_rpcs_shapes_errors_and_save_config_round_trip() {
    let d = start("");
    let rpc = d.spdk();
    for m in ["M0", "M1", "M2", "M3"] {
        malloc(&rpc, m);
    }
    // rpc.py prints nothing on success.
    rpc.run(&[
        "bdev_raid_create",
        "-n",
        "r0",
        "-r",
        "raid0",
        "-z",
        "64",
        "-b",
        "M0 M1",
    ]);
    rpc.run(&[
        "bdev_raid_create",
        "-n",
        "r1",
        "-r",
        "1",
        "-b",
        "M2 M3",
        "--uuid",
        "5f7c2a7e-7d3a-4e1b-9a53-6f0c1d2e3f40",
    ]);
    let r0 = raid(&rpc, "r0");
    assert_eq!(r0["raid_level"], "raid0");
    assert_eq!(r0["strip_size_kb"], 64);
    assert_eq!(r0["state"], "online");
    assert_eq!(r0["superblock"], false);
    assert_eq!(r0["num_base_bdevs"], 2);
    assert_eq!(r0["num_base_bdevs_discovered"], 2);
    assert_eq!(r0["num_base_bdevs_operational"], 2);
    let list = r0["base_bdevs_list"].as_array().unwrap();
    assert_eq!(list[0]["name"], "M0");
    assert_eq!(list[1]["is_configured"], true);
    assert_eq!(list[0]["data_size"], DISK_MIB * 256);
    assert!(r0.get("process").is_none());
    let r1 = raid(&rpc, "r1");
    assert_eq!(
        (&r1["raid_level"], &r1["strip_size_kb"], &r1["uuid"]),
        (
            &json!("raid1"),
            &json!(0),
            &json!("5f7c2a7e-7d3a-4e1b-9a53-6f0c1d2e3f40")
        )
    );
    assert_eq!(
        rpc.run(&["bdev_raid_get_bdevs", "online"])
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(rpc.run(&["bdev_raid_get_bdevs", "offline"]), json!([]));
    assert_eq!(rpc.run(&["bdev_raid_get_bdevs", "configuring"]), json!([]));

    // bdev_get_bdevs: the array's size and SPDK's driver_specific.raid; its
    // members are claimed.
    let b = rpc.run(&["bdev_get_bdevs", "-b", "r0"]);
    assert_eq!(b[0]["product_name"], "Raid Volume");
    assert_eq!(b[0]["num_blocks"], 2 * DISK_MIB * 256);
    assert_eq!(b[0]["driver_specific"]["raid"]["raid_level"], "raid0");
    assert_eq!(rpc.run(&["bdev_get_bdevs", "-b", "M0"])[0]["claimed"], true);
    assert_eq!(
        rpc.run(&["bdev_get_bdevs", "-b", "r1"])[0]["num_blocks"],
        DISK_MIB * 256
    );

    // SPDK's refusals.
    let e = rpc.fails(&["bdev_raid_create", "-n", "r0", "-r", "raid1", "-b", "M0 M1"]);
    assert!(e.contains("File exists"), "{e}");
    let e = rpc.fails(&["bdev_raid_create", "-n", "x", "-r", "raid0", "-b", "M0"]);
    assert!(e.contains("Invalid argument") || e.contains("strip"), "{e}");
    // The strip is checked before the members, as SPDK does.
    let e = rpc.fails(&[
        "bdev_raid_create",
        "-n",
        "x",
        "-r",
        "raid0",
        "-z",
        "48",
        "-b",
        "nope",
    ]);
    assert!(e.contains("invalid strip size 48"), "{e}");
    let e = rpc.fails(&[
        "bdev_raid_create",
        "-n",
        "x",
        "-r",
        "raid1",
        "-b",
        "M0 nope",
    ]);
    assert!(
        e.contains("No such device") || e.contains("already a member"),
        "{e}"
    );
    malloc(&rpc, "M4");
    let e = rpc.fails(&["bdev_raid_create", "-n", "x", "-r", "raid1", "-b", "M4"]);
    assert!(e.contains("at least 2"), "{e}");
    let e = rpc.fails(&["bdev_raid_create", "-n", "x", "-r", "raid1", "-b", "M4 M0"]);
    assert!(e.contains("already a member"), "{e}");
    let e = rpc.fails(&["bdev_raid_create", "-n", "x", "-r", "5f", "-b", "M4"]);
    assert!(e.contains("raid5f") || e.contains("raid_level"), "{e}");
    let e = rpc
        .try_call("bdev_raid_get_bdevs", json!({"category": "broken"}))
        .unwrap_err();
    assert!(e.contains("Invalid argument"), "{e}");
    // raid0 members cannot be removed (the array would lose data); a
    // member of no array is no member.
    let e = rpc.fails(&["bdev_raid_remove_base_bdev", "M0"]);
    assert!(e.contains("without its data"), "{e}");
    let e = rpc.fails(&["bdev_raid_remove_base_bdev", "M4"]);
    assert!(e.contains("not a member"), "{e}");
    let e = rpc.fails(&["bdev_raid_add_base_bdev", "r0", "M4"]);
    assert!(e.contains("no empty slot"), "{e}");
    // A member of an array cannot be deleted under it.
    let e = rpc.fails(&["bdev_malloc_delete", "M0"]);
    assert!(e.contains("in use") || e.contains("busy"), "{e}");

    // A raid1 member out and back in: an empty slot, then a rebuild.
    rpc.run(&["bdev_raid_remove_base_bdev", "M3"]);
    let r1 = raid(&rpc, "r1");
    assert_eq!(r1["base_bdevs_list"][1]["name"], Value::Null);
    assert_eq!(r1["base_bdevs_list"][1]["is_configured"], false);
    assert_eq!(r1["num_base_bdevs_operational"], 1);
    assert_eq!(r1["state"], "online");
    let e = rpc.fails(&["bdev_raid_remove_base_bdev", "M2"]);
    assert!(e.contains("without its data"), "{e}");
    rpc.run(&["bdev_raid_add_base_bdev", "r1", "M4"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while raid(&rpc, "r1")["num_base_bdevs_operational"] != 2 {
        assert!(
            Instant::now() < deadline,
            "rebuild never ended: {}",
            raid(&rpc, "r1")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(raid(&rpc, "r1")["base_bdevs_list"][1]["name"], "M4");

    // save_config replays: options first, members before arrays.
    rpc.run(&["bdev_raid_set_options", "-w", "512", "-b", "100"]);
    let saved = rpc.run(&["save_config"]);
    let bdev = saved["subsystems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["subsystem"] == "bdev")
        .unwrap()["config"]
        .clone();
    let methods: Vec<&str> = bdev
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["method"].as_str().unwrap())
        .collect();
    assert_eq!(methods[0], "bdev_raid_set_options");
    assert_eq!(bdev[0]["params"]["process_window_size_kb"], 512);
    let at = |m: &str, name: &str| {
        bdev.as_array()
            .unwrap()
            .iter()
            .position(|c| c["method"] == m && c["params"]["name"] == name)
            .unwrap_or_else(|| panic!("no {m} {name} in {bdev}"))
    };
    assert!(at("bdev_malloc_create", "M1") < at("bdev_raid_create", "r0"));
    assert!(at("bdev_malloc_create", "M4") < at("bdev_raid_create", "r1"));
    let r1cfg = &bdev[at("bdev_raid_create", "r1")]["params"];
    assert_eq!(r1cfg["base_bdevs"], json!(["M2", "M4"]));
    assert_eq!(r1cfg["uuid"], "5f7c2a7e-7d3a-4e1b-9a53-6f0c1d2e3f40");
    assert!(r1cfg.get("strip_size_kb").is_none());
    assert_eq!(
        bdev[at("bdev_raid_create", "r0")]["params"]["strip_size_kb"],
        64
    );

    let dir = tempfile::tempdir().unwrap();
    let json_path = dir.path().join("saved.json");
    std::fs::write(&json_path, saved.to_string()).unwrap();
    let d2 = Daemon::builder()
        .empty_target("[0]")
        .args(["--json", json_path.to_str().unwrap()])
        .start();
    let rpc2 = d2.spdk();
    assert_eq!(raid(&rpc2, "r1")["base_bdevs_list"][1]["name"], "M4");
    assert_eq!(raid(&rpc2, "r0")["strip_size_kb"], 64);
    let g = rpc2.call("pollux_graph_get", json!({}));
    let edges = g["edges"].as_array().unwrap();
    assert!(
        edges.contains(&json!({"parent": "r0", "child": "M1"})),
        "{g}"
    );
    drop(d2);

    // Delete: the members are free again.
    rpc.run(&["bdev_raid_delete", "r0"]);
    rpc.run(&["bdev_raid_delete", "r1"]);
    assert_eq!(rpc.run(&["bdev_raid_get_bdevs", "all"]), json!([]));
    let e = rpc.fails(&["bdev_raid_delete", "r0"]);
    assert!(e.contains("No such device"), "{e}");
    rpc.run(&["bdev_malloc_delete", "M0"]);
}

#[test]
fn raid0_raid1_and_toml_concat_verified_through_libblkio() {
    // The concat comes from the TOML config, the others from rpc.py.
    let d = start(
        "[[bdev]]\nname = \"c0\"\nkind = \"ram\"\nsize = \"8MiB\"\nblock_size = 4096\n\
         [[bdev]]\nname = \"c1\"\nkind = \"ram\"\nsize = \"12MiB\"\nblock_size = 4096\n\
         [[bdev]]\nname = \"cat\"\nkind = \"raid\"\nraid_level = \"concat\"\n\
         base_bdevs = [\"c0\", \"c1\"]\nstrip_size_kb = 64\n",
    );
    let rpc = d.spdk();
    for m in ["M0", "M1", "M2", "M3", "M4"] {
        malloc(&rpc, m);
    }
    rpc.run(&[
        "bdev_raid_create",
        "-n",
        "r0",
        "-r",
        "raid0",
        "-z",
        "4",
        "-b",
        "M0 M1 M2",
    ]);
    rpc.run(&["bdev_raid_create", "-n", "r1", "-r", "raid1", "-b", "M3 M4"]);
    let size = DISK_MIB << 20;
    for (array, bytes, pairs) in [
        ("r0", 3 * size, 300),
        ("r1", size, 300),
        ("cat", 20 << 20, 300),
    ] {
        rpc.run(&[
            "vhost_create_blk_controller",
            "--cpumask",
            "0x3",
            &format!("v.{array}"),
            array,
        ]);
        let sock = d.dir().join(format!("v.{array}"));
        let t = verify_pairs(&sock, bytes, pairs);
        assert_eq!(t.errors.load(Ordering::Relaxed), 0, "{array}: I/O errors");
        assert_eq!(
            t.mismatches.load(Ordering::Relaxed),
            0,
            "{array}: data differs"
        );
        wait_no_session(&rpc, &format!("v.{array}"));
        rpc.run(&["vhost_delete_controller", &format!("v.{array}")]);
    }
    // The raid1 copies are whole: each member alone reads back the same.
    let r1 = raid(&rpc, "r1");
    assert_eq!(r1["num_base_bdevs_operational"], 2, "{r1}");
    // Both raid1 members count the writes; reads went to one or the other.
    let st = rpc.call("bdev_get_iostat", json!({"name": "M3"}));
    let st4 = rpc.call("bdev_get_iostat", json!({"name": "M4"}));
    assert_eq!(
        st["bdevs"][0]["num_write_ops"],
        st4["bdevs"][0]["num_write_ops"]
    );
    assert!(st["bdevs"][0]["num_read_ops"].as_u64().unwrap() > 0);
    assert!(st4["bdevs"][0]["num_read_ops"].as_u64().unwrap() > 0);
    // Every array has the pollux_bdev_* series of any node.
    let m = scrape(d.metrics_addr());
    for array in ["r0", "r1", "cat"] {
        let w = series(
            &m,
            &format!("pollux_bdev_ops_total{{bdev=\"{array}\",op=\"write\"}}"),
        );
        assert!(w >= 300.0, "{array}: {w} writes counted");
    }
    // The graph shows the arrays and their members.
    let g = rpc.call("pollux_graph_get", json!({}));
    let kind = |n: &str| {
        g["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == n)
            .unwrap()["kind"]
            .clone()
    };
    assert_eq!((kind("r0"), kind("cat")), (json!("raid"), json!("raid")));
    assert!(g["edges"]
        .as_array()
        .unwrap()
        .contains(&json!({"parent": "cat", "child": "c1"})));
    // raid0 with 4 KiB strips spread the writes over all three members.
    for m in ["M0", "M1", "M2"] {
        let s = rpc.call("bdev_get_iostat", json!({"name": m}));
        assert!(
            s["bdevs"][0]["num_write_ops"].as_u64().unwrap() > 100,
            "{m}: {s}"
        );
    }
}

#[test]
fn raid1_member_swap_and_rebuild_under_verified_load() {
    let d = start("");
    let rpc = d.spdk();
    for m in ["M0", "M1", "M2"] {
        malloc(&rpc, m);
    }
    // A slow copy in small windows, so the rebuild runs for a while under
    // the load: 16 MiB at 4 MiB/s.
    rpc.run(&["bdev_raid_set_options", "-w", "256", "-b", "4"]);
    rpc.run(&["bdev_raid_create", "-n", "r1", "-r", "raid1", "-b", "M0 M1"]);
    rpc.run(&[
        "vhost_create_blk_controller",
        "--cpumask",
        "0x3",
        "v.r1",
        "r1",
    ]);
    let size = DISK_MIB << 20;
    let mut host = BlkioHost::connect(&d.dir().join("v.r1"), 2, 2 * MAX_IO);
    let mut shadow = vec![0u8; size as usize];
    // Fill the whole array first, so the copy has data everywhere.
    {
        for start in (0..size as usize).step_by(MAX_IO) {
            let data = pattern(start as u64, MAX_IO);
            host.buf(0, MAX_IO).copy_from_slice(&data);
            assert_eq!(host.write(0, start as u64, 0, MAX_IO), 0);
            shadow[start..start + MAX_IO].copy_from_slice(&data);
        }
    }
    let load = Load::start(host, size, 11, shadow);
    load.wait_pairs(50);
    // Degrade: M1 out; I/O goes on on M0 alone.
    rpc.run(&["bdev_raid_remove_base_bdev", "M1"]);
    load.wait_pairs(50);
    // A new member: the copy runs while the host writes.
    // One rpc.py process for the looks (`--server`): a fresh rpc.py per
    // call takes a second or more on a loaded machine, as long as the copy.
    let mut looks = rpc.server();
    rpc.run(&["bdev_raid_add_base_bdev", "r1", "M2"]);
    let mut progress = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let all = looks.run(&["bdev_raid_get_bdevs", "all"]);
        let r = all
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "r1")
            .cloned()
            .unwrap_or_else(|| panic!("no array r1 in {all}"));
        match r.get("process") {
            Some(p) => {
                assert_eq!(p["type"], "rebuild");
                assert_eq!(p["target"], "M2");
                progress.push(p["progress"]["blocks"].as_u64().unwrap());
                assert_eq!(r["base_bdevs_list"][1]["is_configured"], false, "{r}");
            }
            None => {
                assert_eq!(r["num_base_bdevs_operational"], 2, "{r}");
                break;
            }
        }
        assert!(Instant::now() < deadline, "rebuild never ended: {r}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Two looks while it runs show it moving.
    assert!(
        progress.len() >= 2,
        "the rebuild was not seen running: {progress:?}"
    );
    assert!(progress[0] < DISK_MIB * 256, "{progress:?}");
    assert!(
        progress.windows(2).all(|w| w[0] <= w[1]),
        "progress went back: {progress:?}"
    );
    load.wait_pairs(50);
    // The old member out: the rebuilt one alone serves the array.
    rpc.run(&["bdev_raid_remove_base_bdev", "M0"]);
    load.wait_pairs(50);
    let (mut host, during, shadow) = load.finish();
    eprintln!("{during} verified pairs; rebuild progress samples {progress:?}");
    let r = raid(&rpc, "r1");
    assert_eq!(r["base_bdevs_list"][0]["name"], Value::Null, "{r}");
    assert_eq!(r["base_bdevs_list"][1]["name"], "M2", "{r}");
    // Every byte, from M2 alone.
    read_all_matches(&mut host, &shadow).unwrap();
}

#[test]
fn raid1_degrades_with_no_failed_io_when_an_error_bdev_member_fails_under_load() {
    let d = start("");
    let rpc = d.spdk();
    for m in ["M0", "M1", "M2"] {
        malloc(&rpc, m);
    }
    // SPDK's error bdev over M1 is the member that will go bad.
    assert_eq!(rpc.run(&["bdev_error_create", "M1"]), json!("EE_M1"));
    rpc.run(&[
        "bdev_raid_create",
        "-n",
        "r1",
        "-r",
        "raid1",
        "-b",
        "M0 EE_M1",
    ]);
    rpc.run(&[
        "vhost_create_blk_controller",
        "--cpumask",
        "0x3",
        "v.r1",
        "r1",
    ]);
    let size = DISK_MIB << 20;
    let host = BlkioHost::connect(&d.dir().join("v.r1"), 2, 2 * MAX_IO);
    let load = Load::start(host, size, 5, vec![0u8; size as usize]);
    load.wait_pairs(50);
    // Every I/O of the member fails from now on: the array degrades.
    rpc.run(&[
        "bdev_error_inject_error",
        "EE_M1",
        "all",
        "failure",
        "-n",
        "1000000",
    ]);
    load.wait_pairs(100);
    let r = raid(&rpc, "r1");
    assert_eq!(r["state"], "online", "{r}");
    assert_eq!(r["num_base_bdevs_operational"], 1, "{r}");
    let bad = &r["base_bdevs_list"][1];
    assert_eq!(
        (&bad["name"], &bad["failed"], &bad["is_configured"]),
        (&json!("EE_M1"), &json!(true), &json!(false)),
        "{r}"
    );
    // The failed member goes, a new one comes and is rebuilt, all under
    // the load; the error bdev can then be deleted.
    rpc.run(&["bdev_raid_remove_base_bdev", "EE_M1"]);
    rpc.run(&["bdev_error_delete", "EE_M1"]);
    rpc.run(&["bdev_raid_add_base_bdev", "r1", "M2"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while raid(&rpc, "r1")["num_base_bdevs_operational"] != 2 {
        assert!(Instant::now() < deadline, "rebuild never ended");
        std::thread::sleep(Duration::from_millis(100));
    }
    load.wait_pairs(50);
    let (mut host, _, shadow) = load.finish();
    // The rebuilt member alone holds every byte.
    rpc.run(&["bdev_raid_remove_base_bdev", "M0"]);
    read_all_matches(&mut host, &shadow).unwrap();
}

#[test]
fn raid1_inserted_above_a_live_export_mirrors_it_and_leaves_on_the_copy() {
    let d = start("");
    let rpc = d.spdk();
    for m in ["M0", "M1"] {
        malloc(&rpc, m);
    }
    rpc.run(&[
        "vhost_create_blk_controller",
        "--cpumask",
        "0x3",
        "v.m0",
        "M0",
    ]);
    let size = DISK_MIB << 20;
    let host = BlkioHost::connect(&d.dir().join("v.m0"), 2, 2 * MAX_IO);
    let load = Load::start(host, size, 3, vec![0u8; size as usize]);
    load.wait_pairs(50);
    // In above the live export, out again on the copy: a live migration.
    rpc.call(
        "pollux_graph_insert_filter",
        json!({"node": "M0", "filter": {"name": "mir0", "kind": "raid1"}}),
    );
    let r = raid(&rpc, "mir0");
    assert_eq!(r["base_bdevs_list"][0]["name"], "M0", "{r}");
    assert_eq!(r["base_bdevs_list"][1]["name"], Value::Null, "{r}");
    load.wait_pairs(50);
    rpc.run(&["bdev_raid_add_base_bdev", "mir0", "M1"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while raid(&rpc, "mir0")["num_base_bdevs_operational"] != 2 {
        assert!(Instant::now() < deadline, "rebuild never ended");
        std::thread::sleep(Duration::from_millis(100));
    }
    load.wait_pairs(50);
    rpc.run(&["bdev_raid_remove_base_bdev", "M0"]);
    rpc.call("pollux_graph_remove_filter", json!({"name": "mir0"}));
    let g = rpc.call("pollux_graph_get", json!({}));
    assert_eq!(g["roots"][0]["node"], "M1", "{g}");
    load.wait_pairs(50);
    let (mut host, _, shadow) = load.finish();
    // M0 is free: delete it; M1 alone holds every byte.
    rpc.run(&["bdev_malloc_delete", "M0"]);
    read_all_matches(&mut host, &shadow).unwrap();
}
