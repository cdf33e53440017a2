//! Arrays and splits when the bdevs below them change size (issue 12's
//! "growing a RAID or split by its members"), through SPDK's rpc.py
//! (`bdev_null_resize`, `bdev_aio_rescan`) and libblkio on vhost-user-blk:
//! a raid1 grows to its smallest member, a concat by its last member, with
//! the data where it was and the host seeing the new capacity; a split
//! keeps its parts, and save_config replays them where they are. The
//! splits and arrays come from the TOML config (`kind = "split"`,
//! `kind = "raid"`).

mod support;

use serde_json::{json, Value};
use support::blkio_host::BlkioHost;
use support::{pattern, sparse_file, Daemon, SpdkRpc};

const MIB: u64 = 1 << 20;
const BUF: usize = 1 << 20;

fn config(dir: &std::path::Path) -> String {
    for (f, mb) in [("f0", 16), ("f1", 16), ("disk", 32)] {
        sparse_file(&dir.join(f), mb * MIB);
    }
    let p = |f: &str| dir.join(f).display().to_string();
    format!(
        r#"[reactors]
cores = [0]
idle = "adaptive"

[metrics]
listen = "127.0.0.1:0"

[[bdev]]
name = "m0"
kind = "null"
size = "32MiB"

[[bdev]]
name = "m1"
kind = "null"
size = "32MiB"

[[bdev]]
name = "r1"
kind = "raid"
raid_level = "raid1"
base_bdevs = ["m0", "m1"]

[[bdev]]
name = "f0"
kind = "file"
path = "{f0}"

[[bdev]]
name = "f1"
kind = "file"
path = "{f1}"

[[bdev]]
name = "cat"
kind = "raid"
raid_level = "concat"
base_bdevs = ["f0", "f1"]
strip_size_kb = 64

[[bdev]]
name = "disk"
kind = "file"
path = "{disk}"

[[bdev]]
kind = "split"
base_bdev = "disk"
split_count = 2

[[bdev]]
name = "n"
kind = "null"
size = "16MiB"

[[bdev]]
kind = "split"
base_bdev = "n"
split_count = 4
split_size_mb = 2

[[vhost.blk]]
socket = "{cat_sock}"
bdev = "cat"

[[vhost.blk]]
socket = "{r1_sock}"
bdev = "r1"

[[vhost.blk]]
socket = "{p1_sock}"
bdev = "diskp1"
"#,
        f0 = p("f0"),
        f1 = p("f1"),
        disk = p("disk"),
        cat_sock = p("cat.sock"),
        r1_sock = p("r1.sock"),
        p1_sock = p("p1.sock"),
    )
}

fn blocks(rpc: &SpdkRpc, name: &str) -> u64 {
    rpc.run(&["bdev_get_bdevs", "-b", name])[0]["num_blocks"]
        .as_u64()
        .unwrap()
}

fn set_len(path: &std::path::Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// Writes `data` at `at` through `c`, reads it back, and checks it.
fn write_verify(c: &mut BlkioHost, at: u64, data: &[u8]) {
    c.buf(0, data.len()).copy_from_slice(data);
    assert_eq!(c.write(0, at, 0, data.len()), 0, "write at {at}");
    verify(c, at, data);
}

fn verify(c: &mut BlkioHost, at: u64, data: &[u8]) {
    c.buf(0, data.len()).fill(0);
    assert_eq!(c.read(0, at, 0, data.len()), 0, "read at {at}");
    assert!(c.buf(0, data.len()) == data, "data at {at} differs");
}

fn bdev_config(saved: &Value) -> Vec<Value> {
    saved["subsystems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["subsystem"] == json!("bdev"))
        .unwrap()["config"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn arrays_grow_with_their_members_and_splits_keep_their_parts() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let path = |f: &str| dir.path().join(f);
    let (f0, f1, disk) = (path("f0"), path("f1"), path("disk"));
    let (cat_sock, r1_sock, p1_sock) = (path("cat.sock"), path("r1.sock"), path("p1.sock"));
    let d = Daemon::builder().in_dir(dir).config(cfg).start();
    let rpc = d.spdk();

    // The TOML splits: parts named as SPDK names them, in the graph as
    // `split` nodes.
    assert_eq!(blocks(&rpc, "diskp0"), 16 * MIB / 512);
    assert_eq!(blocks(&rpc, "diskp1"), 16 * MIB / 512);
    for i in 0..4 {
        assert_eq!(blocks(&rpc, &format!("np{i}")), 2 * MIB / 512);
    }
    let graph = rpc.call("pollux_graph_get", json!({}));
    let node = |n: &str| {
        graph["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == json!(n))
            .cloned()
            .unwrap_or_else(|| panic!("no node {n} in {graph}"))
    };
    assert_eq!(node("diskp1")["kind"], json!("split"));
    let edges = graph["edges"].as_array().unwrap();
    assert!(
        edges.contains(&json!({"parent": "np3", "child": "n"})),
        "{graph}"
    );

    // concat: data across the members, then the last member grows.
    let mut cat = BlkioHost::connect(&cat_sock, 1, BUF);
    assert_eq!(cat.blkio().get_u64("capacity").unwrap(), 32 * MIB);
    let across = pattern(1, 256 << 10);
    write_verify(&mut cat, 16 * MIB - (128 << 10), &across);
    set_len(&f1, 24 * MIB + 4096);
    assert_eq!(rpc.run(&["bdev_aio_rescan", "f1"]), json!(true));
    // Whole strips of the last member: 24 MiB of it.
    assert_eq!(blocks(&rpc, "cat"), 40 * MIB / 512);
    assert_eq!(cat.blkio().get_u64("capacity").unwrap(), 40 * MIB);
    verify(&mut cat, 16 * MIB - (128 << 10), &across);
    let tail = pattern(2, 64 << 10);
    write_verify(&mut cat, 40 * MIB - (64 << 10), &tail);
    let raid = rpc.run(&["bdev_raid_get_bdevs", "all"]);
    let cat_info = raid
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == json!("cat"))
        .unwrap();
    assert_eq!(
        cat_info["base_bdevs_list"][1]["data_size"],
        json!(24 * MIB / 512),
        "{cat_info}"
    );
    // A member before the last cannot grow: the next one's data starts
    // where it ends.
    set_len(&f0, 20 * MIB);
    let e = rpc.fails(&["bdev_aio_rescan", "f0"]);
    assert!(e.contains("before the last"), "{e}");
    assert_eq!(blocks(&rpc, "f0"), 16 * MIB / 512);
    set_len(&f0, 16 * MIB);
    // Nor may the last shrink under the array.
    set_len(&f1, 8 * MIB);
    let e = rpc.fails(&["bdev_aio_rescan", "f1"]);
    assert!(e.contains("-16") && e.contains("the array uses"), "{e}");
    // (The cut file lost the tail; what lies below the cut is intact.)
    set_len(&f1, 24 * MIB + 4096);
    verify(&mut cat, 16 * MIB - (128 << 10), &across);

    // raid1: its smallest member's size, once both grew.
    let r1 = BlkioHost::connect(&r1_sock, 1, BUF);
    assert_eq!(rpc.run(&["bdev_null_resize", "m0", "64"]), json!(true));
    assert_eq!(blocks(&rpc, "r1"), 32 * MIB / 512);
    assert_eq!(rpc.run(&["bdev_null_resize", "m1", "48"]), json!(true));
    assert_eq!(blocks(&rpc, "r1"), 48 * MIB / 512);
    assert_eq!(r1.blkio().get_u64("capacity").unwrap(), 48 * MIB);

    // Splits keep their parts: an equal share and a fixed size alike.
    let mut p1 = BlkioHost::connect(&p1_sock, 1, BUF);
    let part = pattern(3, 128 << 10);
    write_verify(&mut p1, 0, &part);
    set_len(&disk, 48 * MIB);
    assert_eq!(rpc.run(&["bdev_aio_rescan", "disk"]), json!(true));
    assert_eq!(blocks(&rpc, "disk"), 48 * MIB / 512);
    assert_eq!(blocks(&rpc, "diskp1"), 16 * MIB / 512);
    assert_eq!(p1.blkio().get_u64("capacity").unwrap(), 16 * MIB);
    verify(&mut p1, 0, &part);
    assert_eq!(rpc.run(&["bdev_null_resize", "n", "64"]), json!(true));
    assert_eq!(blocks(&rpc, "np3"), 2 * MIB / 512);
    // A base shrinking under a part is refused, naming it.
    set_len(&disk, 24 * MIB);
    let e = rpc.fails(&["bdev_aio_rescan", "disk"]);
    assert!(e.contains("diskp1"), "{e}");
    set_len(&disk, 48 * MIB);

    // save_config: one bdev_split_create per base; the equal-share one now
    // with its part size, so a replay on the grown base lays the parts
    // out where they are.
    let saved = rpc.run(&["save_config"]);
    let splits: Vec<Value> = bdev_config(&saved)
        .into_iter()
        .filter(|c| c["method"] == json!("bdev_split_create"))
        .map(|c| c["params"].clone())
        .collect();
    assert_eq!(splits.len(), 2, "{splits:?}");
    let of = |base: &str| {
        splits
            .iter()
            .find(|p| p["base_bdev"] == json!(base))
            .unwrap()
            .clone()
    };
    assert_eq!(
        of("disk"),
        json!({"base_bdev": "disk", "split_count": 2, "split_size_mb": 16})
    );
    assert_eq!(
        of("n"),
        json!({"base_bdev": "n", "split_count": 4, "split_size_mb": 2})
    );
    drop((cat, r1, p1));

    // A fresh daemon loading it (--json) has the parts where they were.
    let dir2 = tempfile::tempdir().unwrap();
    let json_path = dir2.path().join("saved.json");
    // Its bdevs only: the vhost controllers' sockets are the first
    // daemon's.
    let bdevs = json!({"subsystems": [{"subsystem": "bdev", "config": bdev_config(&saved)}]});
    std::fs::write(&json_path, serde_json::to_vec(&bdevs).unwrap()).unwrap();
    let mut d2 = Daemon::builder()
        .in_dir(dir2)
        .empty_target("[0]")
        .args(["--json", json_path.to_str().unwrap()])
        .start();
    let rpc2 = d2.spdk();
    assert_eq!(blocks(&rpc2, "diskp1"), 16 * MIB / 512);
    assert_eq!(blocks(&rpc2, "cat"), 40 * MIB / 512);
    assert_eq!(blocks(&rpc2, "r1"), 48 * MIB / 512);
    rpc2.run(&["vhost_create_blk_controller", "vb.p1", "diskp1"]);
    let mut p1 = BlkioHost::connect(&d2.dir().join("vb.p1"), 1, BUF);
    verify(&mut p1, 0, &part);
    drop(p1);
    assert!(d2.stop().success(), "{}", d2.log());
}
