//! RAID nodes in a live graph: data placed where SPDK places it, a RAID1
//! that loses a member under load with no failed I/O, and a rebuild racing
//! writers that leaves the new member an exact copy.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{io, runtime};
use pollux_graph::nodes::raid::{Array, Level, RaidOptions};
use pollux_graph::nodes::ram::RamNode;
use pollux_graph::{BlockNode, Geometry, Graph, Io, IoError, IoOp, RootId};
use pollux_poller::Reactor;
use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};

const BS: u32 = 512;
const MIB: u64 = 1 << 20;

/// A ram disk whose I/O fails once `broken` is set: a member going bad.
struct Flaky {
    ram: RamNode,
    broken: Arc<AtomicBool>,
}

impl BlockNode for Flaky {
    type Channel = ();
    fn kind(&self) -> &'static str {
        "flaky"
    }
    fn geometry(&self) -> Geometry {
        self.ram.geometry()
    }
    fn create_channel(&self, _r: &Reactor) {}
    fn execute(&self, r: &Reactor, ch: &(), io: Io) {
        if self.broken.load(Ordering::Relaxed) {
            io.complete_later(r, Err(IoError::Backend(libc::EIO)));
        } else {
            self.ram.execute(r, ch, io);
        }
    }
}

fn ram(g: &Graph, name: &str, size: u64) {
    g.add_node(name, RamNode::new(size, BS).unwrap(), &[])
        .unwrap();
}

fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0; len];
    SmallRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

fn write(g: &Arc<Graph>, root: RootId, off: u64, data: Vec<u8>) {
    let len = data.len() as u64;
    let (res, _) = io(g, root, IoOp::Write, off, len, Some(data));
    res.unwrap();
}

fn read(g: &Arc<Graph>, root: RootId, off: u64, len: u64) -> Vec<u8> {
    let (res, data) = io(g, root, IoOp::Read, off, len, None);
    res.unwrap();
    data
}

#[test]
fn raid0_and_concat_place_data_as_spdk_does() {
    let rt = runtime(1);
    let g = Graph::new(rt.handle());
    for n in ["a", "b", "c"] {
        ram(&g, n, 4 * MIB);
    }
    Array::create(&g, "r0", Level::Raid0, 4, &["a", "b", "c"]).unwrap();
    let root = g.add_root("r0", "r0").unwrap();
    let ra = g.add_root("a", "a").unwrap();
    let rb = g.add_root("b", "b").unwrap();
    assert_eq!(g.node_geometry("r0").unwrap().size(), 12 * MIB);
    // 64 KiB from 6 KiB: strips 1..=17, i.e. members b, c, a, ... in turn.
    let data = bytes(1, 65536);
    write(&g, root, 6144, data.clone());
    assert_eq!(read(&g, root, 6144, 65536), data);
    // Array strip 1 (bytes 4096..8192) is member b's strip 0.
    assert_eq!(read(&g, rb, 2048, 2048), data[..2048]);
    // Array strip 3 is member a's strip 1.
    assert_eq!(read(&g, ra, 4096, 4096), data[6144..10240]);
    // Discard and write zeroes cross every member in one request each.
    let (res, _) = io(&g, root, IoOp::WriteZeroes, 8192, 32768, None);
    res.unwrap();
    let back = read(&g, root, 6144, 65536);
    assert_eq!(back[..2048], data[..2048]);
    assert!(back[2048..34816].iter().all(|&b| b == 0));
    assert_eq!(back[34816..], data[34816..]);
    let (res, _) = io(&g, root, IoOp::Flush, 0, 0, None);
    res.unwrap();

    ram(&g, "x", 3 * MIB);
    ram(&g, "y", 2 * MIB);
    Array::create(&g, "cat", Level::Concat, 64, &["x", "y"]).unwrap();
    let root = g.add_root("cat", "cat").unwrap();
    let ry = g.add_root("y", "y").unwrap();
    let data = bytes(2, 131072);
    write(&g, root, 3 * MIB - 65536, data.clone());
    assert_eq!(read(&g, root, 3 * MIB - 65536, 131072), data);
    assert_eq!(read(&g, ry, 0, 65536), data[65536..]);
    let info = Array::find(&g, "cat").unwrap().info(&g);
    assert_eq!(info.block_count * u64::from(BS), 5 * MIB);
    g.shutdown();
    rt.shutdown();
}

/// Writes and verifies random blocks of the first `span` bytes of `root`
/// from the test thread until `stop`; counts failures.
fn load(
    g: Arc<Graph>,
    root: RootId,
    span: u64,
    stop: Arc<AtomicBool>,
    failed: Arc<AtomicU64>,
    done: Arc<AtomicU64>,
) -> thread::JoinHandle<Vec<(u64, Vec<u8>)>> {
    thread::spawn(move || {
        let mut rng = SmallRng::seed_from_u64(9);
        let mut last = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let off = rng.random_range(0..span / 16384) * 16384;
            let data = bytes(rng.next_u64(), 16384);
            let (res, _) = io(&g, root, IoOp::Write, off, 16384, Some(data.clone()));
            if let Err(e) = res {
                eprintln!("write at {off} failed: {e}");
                failed.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let (res, back) = io(&g, root, IoOp::Read, off, 16384, None);
            if res.is_err() || back != data {
                eprintln!("read at {off}: {res:?}, same data: {}", back == data);
                failed.fetch_add(1, Ordering::Relaxed);
            }
            last.push((off, data));
            done.fetch_add(1, Ordering::Relaxed);
        }
        last
    })
}

fn wait(done: &AtomicU64, more: u64) {
    let target = done.load(Ordering::Relaxed) + more;
    let deadline = Instant::now() + Duration::from_secs(30);
    while done.load(Ordering::Relaxed) < target {
        assert!(Instant::now() < deadline, "I/O stalled");
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn raid1_degrades_under_load_when_a_member_fails() {
    let rt = runtime(2);
    let g = Graph::new(rt.handle());
    ram(&g, "good", 8 * MIB);
    let broken = Arc::new(AtomicBool::new(false));
    g.add_node(
        "bad",
        Flaky {
            ram: RamNode::new(8 * MIB, BS).unwrap(),
            broken: broken.clone(),
        },
        &[],
    )
    .unwrap();
    let array = Array::create(&g, "r1", Level::Raid1, 0, &["bad", "good"]).unwrap();
    let root = g.add_root("r1", "r1").unwrap();
    let (stop, failed, done) = Default::default();
    let (stop, failed, done): (Arc<AtomicBool>, Arc<AtomicU64>, Arc<AtomicU64>) =
        (stop, failed, done);
    let worker = load(
        g.clone(),
        root,
        8 * MIB,
        stop.clone(),
        failed.clone(),
        done.clone(),
    );
    wait(&done, 50);
    broken.store(true, Ordering::Relaxed);
    wait(&done, 100);
    let info = array.info(&g);
    assert!(
        info.slots[0].failed && !info.slots[0].configured,
        "{info:?}"
    );
    assert!(info.slots[1].configured, "{info:?}");
    // Replace the failed member while I/O runs: the slot refills and
    // rebuilds, the bad node can then leave the graph.
    ram(&g, "new", 8 * MIB);
    array.add_member(&g, "new", RaidOptions::default()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while array.info(&g).process.is_some() {
        assert!(Instant::now() < deadline, "rebuild never ended");
        thread::sleep(Duration::from_millis(5));
    }
    wait(&done, 50);
    stop.store(true, Ordering::Relaxed);
    let written = worker.join().unwrap();
    assert_eq!(failed.load(Ordering::Relaxed), 0, "array I/O failed");
    g.remove_node("bad").unwrap();
    // The new member alone holds what was written last.
    array.remove_member(&g, "good").unwrap();
    let mut latest = std::collections::HashMap::new();
    for (off, data) in written {
        latest.insert(off, data);
    }
    for (off, data) in latest {
        assert_eq!(read(&g, root, off, 16384), data, "at {off}");
    }
    g.shutdown();
    rt.shutdown();
}

#[test]
fn rebuild_racing_writers_leaves_an_exact_copy() {
    let rt = runtime(2);
    let g = Graph::new(rt.handle());
    ram(&g, "m0", 16 * MIB);
    ram(&g, "m1", 16 * MIB);
    let array = Array::create(&g, "r1", Level::Raid1, 0, &["m0", "m1"]).unwrap();
    let root = g.add_root("r1", "r1").unwrap();
    let fill = bytes(3, (16 * MIB) as usize);
    for (i, chunk) in fill.chunks(MIB as usize).enumerate() {
        write(&g, root, i as u64 * MIB, chunk.to_vec());
    }
    array.remove_member(&g, "m1").unwrap();
    ram(&g, "m2", 16 * MIB);
    let (stop, failed, done): (Arc<AtomicBool>, Arc<AtomicU64>, Arc<AtomicU64>) =
        Default::default();
    let worker = load(
        g.clone(),
        root,
        16 * MIB,
        stop.clone(),
        failed.clone(),
        done.clone(),
    );
    wait(&done, 20);
    // Small windows and a slow copy: many window moves under the writes.
    let opts = RaidOptions {
        window: 64 << 10,
        max_rate: 16 * MIB,
    };
    array.add_member(&g, "m2", opts).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut samples = 0;
    while array.info(&g).process.is_some() {
        samples += 1;
        assert!(Instant::now() < deadline, "rebuild never ended");
        thread::sleep(Duration::from_millis(10));
    }
    assert!(samples > 5, "the rebuild did not overlap the load");
    stop.store(true, Ordering::Relaxed);
    let written = worker.join().unwrap();
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    // m2 now equals m0 byte for byte.
    let r0 = g.add_root("m0", "m0").unwrap();
    let r2 = g.add_root("m2", "m2").unwrap();
    for off in (0..16 * MIB).step_by(MIB as usize) {
        assert_eq!(read(&g, r0, off, MIB), read(&g, r2, off, MIB), "at {off}");
    }
    assert!(!written.is_empty());
    g.shutdown();
    rt.shutdown();
}

/// A file-backed member whose file the test grows, as bdev_aio_rescan sees.
fn file_member(g: &Graph, dir: &std::path::Path, name: &str, size: u64) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::File::create(&path).unwrap().set_len(size).unwrap();
    let node = pollux_graph::nodes::file::FileNode::open(&path, false, BS).unwrap();
    g.add_node(name, node, &[]).unwrap();
    path
}

fn grow_file(g: &Graph, path: &std::path::Path, name: &str, size: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(size)
        .unwrap();
    g.rescan(name).unwrap();
}

fn size_of(g: &Graph, name: &str) -> u64 {
    g.node_geometry(name).unwrap().size()
}

#[test]
fn arrays_grow_with_their_members_and_keep_their_data() {
    let rt = runtime(1);
    let g = Graph::new(rt.handle());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // concat over x (3 MiB) and y (2 MiB), 64 KiB strips.
    let x = file_member(&g, d, "x", 3 * MIB);
    let y = file_member(&g, d, "y", 2 * MIB);
    Array::create(&g, "cat", Level::Concat, 64, &["x", "y"]).unwrap();
    let cat = g.add_root("cat", "cat").unwrap();
    let data = bytes(3, 131072);
    write(&g, cat, 3 * MIB - 65536, data.clone());
    // x is not the last member: an array assembled again over a bigger x
    // would start y later, so x's growth is refused.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&x)
        .unwrap()
        .set_len(4 * MIB)
        .unwrap();
    let e = g.rescan("x").unwrap_err().to_string();
    assert!(e.contains("before the last"), "{e}");
    assert_eq!(size_of(&g, "x"), 3 * MIB);
    assert_eq!(size_of(&g, "cat"), 5 * MIB);
    // y is: the array takes its new whole strips, at the end.
    grow_file(&g, &y, "y", 3 * MIB + 100 * 512);
    assert_eq!(size_of(&g, "cat"), 6 * MIB);
    assert_eq!(read(&g, cat, 3 * MIB - 65536, 131072), data);
    let tail = bytes(4, 65536);
    write(&g, cat, 6 * MIB - 65536, tail.clone());
    let ry = g.add_root("y", "y").unwrap();
    assert_eq!(read(&g, ry, 3 * MIB - 65536, 65536), tail);
    let info = Array::find(&g, "cat").unwrap().info(&g);
    assert_eq!(info.block_count * u64::from(BS), 6 * MIB);
    assert_eq!(info.slots[1].data_size, 3 * MIB);
    // A member shrinking under the array is refused; nothing changes.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&y)
        .unwrap()
        .set_len(MIB)
        .unwrap();
    let e = g.rescan("y").unwrap_err().to_string();
    assert!(e.contains("cannot be resized under \"cat\""), "{e}");
    assert_eq!(size_of(&g, "y"), 3 * MIB + 100 * 512);
    assert_eq!(size_of(&g, "cat"), 6 * MIB);

    // raid0 over a and b (1 MiB each), 64 KiB strips: grows to twice its
    // smallest member's whole strips, once both grew.
    let a = file_member(&g, d, "a", MIB);
    let b = file_member(&g, d, "b", MIB);
    Array::create(&g, "r0", Level::Raid0, 64, &["a", "b"]).unwrap();
    let r0 = g.add_root("r0", "r0").unwrap();
    let data = bytes(5, 262144);
    write(&g, r0, MIB, data.clone());
    grow_file(&g, &a, "a", 3 * MIB);
    assert_eq!(size_of(&g, "r0"), 2 * MIB);
    grow_file(&g, &b, "b", 2 * MIB + 4096);
    assert_eq!(size_of(&g, "r0"), 4 * MIB);
    assert_eq!(read(&g, r0, MIB, 262144), data);
    // Array strip 63 (the last) is member b's strip 31.
    let tail = bytes(6, 65536);
    write(&g, r0, 4 * MIB - 65536, tail.clone());
    let rb = g.add_root("b", "b").unwrap();
    assert_eq!(read(&g, rb, 2 * MIB - 65536, 65536), tail);

    // raid1 over m and n: the smallest member's size.
    let m = file_member(&g, d, "m", MIB);
    let n = file_member(&g, d, "n", MIB);
    Array::create(&g, "r1", Level::Raid1, 0, &["m", "n"]).unwrap();
    let r1 = g.add_root("r1", "r1").unwrap();
    grow_file(&g, &m, "m", 2 * MIB);
    assert_eq!(size_of(&g, "r1"), MIB);
    grow_file(&g, &n, "n", 3 * MIB);
    assert_eq!(size_of(&g, "r1"), 2 * MIB);
    let tail = bytes(7, 4096);
    write(&g, r1, 2 * MIB - 4096, tail.clone());
    let rn = g.add_root("n", "n").unwrap();
    assert_eq!(read(&g, rn, 2 * MIB - 4096, 4096), tail);
    // A member taking the place of one removed must hold the grown size.
    Array::find(&g, "r1")
        .unwrap()
        .remove_member(&g, "n")
        .unwrap();
    assert_eq!(size_of(&g, "r1"), 2 * MIB);
    file_member(&g, d, "small", MIB);
    let e = Array::find(&g, "r1")
        .unwrap()
        .add_member(&g, "small", RaidOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("the array needs 2097152"), "{e}");
    g.shutdown();
    rt.shutdown();
}
