//! vhost-user-blk with a real client: libblkio's `virtio-blk-vhost-user`
//! driver (the `blkio` crate is libblkio itself, in Rust, so no C library
//! is needed). The daemon runs with `idle = "adaptive"`, so every request
//! also exercises the kick-eventfd wakeup of a sleeping reactor.
//!
//! Covered: write + flush + read-back verify on 1 and on 2 queues (the two
//! queues polled by two reactors), discard and write-zeroes, out-of-range
//! requests failing cleanly, a client disconnecting and a new one
//! connecting (and seeing the first one's data), a read-only export, and a
//! front-end sending garbage being dropped while the device keeps serving.

mod support;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use blkio::{Blkio, ReqFlags};
use support::blkio_host::BlkioHost;
use support::{pattern, pollux, Daemon};

const DISK: u64 = 64 << 20;
const BUF: usize = 1 << 20;
/// Any free port for the metrics endpoint, so tests can run side by side.
const METRICS: &str = "[metrics]\nlisten = \"127.0.0.1:0\"\n";

/// Pollux with ram0 on two adaptive reactors and the `[[vhost.blk]]`
/// tables `blk`, in which `DIR` stands for the daemon's directory.
fn start(blk: &str) -> Daemon {
    let b = Daemon::builder().log_filter("info,pollux::vhost=debug");
    let text = format!(
        "[reactors]\ncores = [0, 1]\nidle = \"adaptive\"\n{METRICS}\
         [[bdev]]\nname = \"ram0\"\nkind = \"ram\"\nsize = {DISK}\n\
         {}",
        blk.replace("DIR", b.dir().to_str().unwrap())
    );
    b.config(text).start()
}

/// Writes a pattern at `start` through queue `wq`, flushes, reads it back
/// through queue `rq` and compares.
fn write_verify(c: &mut BlkioHost, wq: usize, rq: usize, start: u64, len: usize, seed: u64) {
    let data = pattern(seed, len);
    c.buf(0, len).copy_from_slice(&data);
    assert_eq!(c.write(wq, start, 0, len), 0, "write at {start}");
    assert_eq!(c.flush(wq), 0, "flush");
    c.buf(len, len).fill(0xee);
    assert_eq!(c.read(rq, start, len, len), 0, "read at {start}");
    assert!(
        c.buf(len, len) == &data[..],
        "data read back at {start} differs"
    );
}

#[test]
fn libblkio_io_queues_reconnect_and_bad_input() {
    let mut d = start(
        "[[vhost.blk]]\nsocket = \"DIR/vhost.0\"\nbdev = \"ram0\"\nnum_queues = 2\n\
         [[vhost.blk]]\nsocket = \"DIR/vhost.ro\"\nbdev = \"ram0\"\nreadonly = true\n",
    );
    let sock = d.dir().join("vhost.0");
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket mode");

    // One queue: write, flush, read back; several sizes and offsets.
    let mut c = BlkioHost::connect(&sock, 1, BUF);
    assert_eq!(c.blkio().get_u64("capacity").unwrap(), DISK);
    assert_eq!(c.blkio().get_i32("max-queues").unwrap(), 2);
    for (i, (start, len)) in [
        (0u64, 4096usize),
        (1 << 20, 65536),
        (DISK - 4096, 4096),
        (12_288, 512),
    ]
    .into_iter()
    .enumerate()
    {
        write_verify(&mut c, 0, 0, start, len, i as u64);
    }

    // Out of range and misaligned: a clean error, and the queue still works.
    assert!(c.read(0, DISK, 0, 4096) < 0, "read past the end must fail");
    assert!(
        c.write(0, DISK - 512, 0, 4096) < 0,
        "write across the end must fail"
    );
    assert!(
        c.read(0, u64::MAX - 511, 0, 512) < 0,
        "overflowing offset must fail"
    );
    write_verify(&mut c, 0, 0, 8192, 4096, 99);

    // Discard and write zeroes read back as zeroes.
    write_verify(&mut c, 0, 0, 2 << 20, 131_072, 7);
    let r = c.request(0, |q, _| q.discard(2 << 20, 65536, 0, ReqFlags::empty()));
    assert_eq!(r, 0, "discard");
    let r = c.request(0, |q, _| {
        q.write_zeroes((2 << 20) + 65536, 65536, 0, ReqFlags::empty())
    });
    assert_eq!(r, 0, "write zeroes");
    c.buf(0, 131_072).fill(0xee);
    assert_eq!(c.read(0, 2 << 20, 0, 131_072), 0);
    assert!(
        c.buf(0, 131_072).iter().all(|&b| b == 0),
        "discard/write-zeroes left data"
    );

    // Disconnect; a new client with two queues sees the old data, and the
    // two queues (on two reactors) see each other's writes.
    drop(c);
    let mut c = BlkioHost::connect(&sock, 2, BUF);
    let expect = pattern(99, 4096);
    assert_eq!(c.read(1, 8192, 0, 4096), 0);
    assert!(
        c.buf(0, 4096) == &expect[..],
        "data written before the reconnect is gone"
    );
    for i in 0..16u64 {
        let (wq, rq) = ((i % 2) as usize, ((i + 1) % 2) as usize);
        write_verify(&mut c, wq, rq, (4 << 20) + i * 65536, 65536, 100 + i);
    }
    drop(c);

    // A front-end that sends garbage is disconnected; the device keeps
    // serving the next one.
    {
        let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        // request 0xdead, flags version 1, size 4 with 4 bytes of payload.
        let mut msg = vec![0xad, 0xde, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0];
        msg.extend_from_slice(&[1, 2, 3, 4]);
        s.write_all(&msg).unwrap();
        let mut b = [0u8; 1];
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let n = std::io::Read::read(&mut s, &mut b).unwrap_or(0);
        assert_eq!(n, 0, "pollux must close a connection that sends garbage");
    }
    let mut c = BlkioHost::connect(&sock, 2, BUF);
    write_verify(&mut c, 1, 0, 0, 4096, 5);
    drop(c);

    // The read-only export: reads work, writes fail, the driver must open
    // it read-only.
    let ro = d.dir().join("vhost.ro");
    let mut b = Blkio::new("virtio-blk-vhost-user").unwrap();
    b.set_str("path", ro.to_str().unwrap()).unwrap();
    b.connect().unwrap();
    assert!(b.start().is_err(), "a read-only device opened read-write");
    drop(b);
    let mut c = BlkioHost::connect_read_only(&ro, 1, BUF);
    assert_eq!(c.read(0, 0, 0, 4096), 0);
    let expect = pattern(5, 4096);
    assert!(c.buf(0, 4096) == &expect[..]);
    drop(c);

    let st = d.stop();
    assert!(st.success(), "pollux exit status {st}; log:\n{}", d.log());
    assert!(!sock.exists(), "socket file left behind");
}

#[test]
fn socket_setup_errors_and_stale_socket() {
    // A stale socket file (nobody listening) is replaced.
    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let d = Daemon::builder()
        .config(format!(
            "[reactors]\nidle = \"adaptive\"\n{METRICS}[[bdev]]\nname = \"n\"\nkind = \"null\"\nsize = \"1GiB\"\n\
             [[vhost.blk]]\nsocket = \"{}\"\nbdev = \"n\"\n",
            stale.display()
        ))
        .start();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut ok = false;
    while Instant::now() < deadline {
        if let Ok(mut b) = Blkio::new("virtio-blk-vhost-user") {
            b.set_str("path", stale.to_str().unwrap()).unwrap();
            if b.connect().is_ok() {
                ok = true;
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(d);
    assert!(ok, "pollux did not replace the stale socket");

    // A path that cannot be created: a clear startup error naming the key.
    let cfg = dir.path().join("p.toml");
    std::fs::write(
        &cfg,
        format!(
            "{METRICS}[[bdev]]\nname = \"n\"\nkind = \"null\"\nsize = \"1GiB\"\n\
             [[vhost.blk]]\nsocket = \"/nonexistent-dir/x.sock\"\nbdev = \"n\"\n"
        ),
    )
    .unwrap();
    let out = pollux()
        .arg("--config")
        .arg(&cfg)
        .arg("--rpc-socket")
        .arg(dir.path().join("rpc2.sock"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("vhost.blk[0].socket: /nonexistent-dir/x.sock: No such file or directory"),
        "{err}"
    );
}
