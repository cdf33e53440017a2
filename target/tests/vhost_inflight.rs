//! vhost-user-blk INFLIGHT_SHMEM end to end: requests in flight when the
//! back-end crashes are resubmitted after the front-end reconnects, so the
//! guest loses none of them.
//!
//! A Linux guest (QEMU's `vhost-user-blk-pci` on a chardev with
//! `reconnect-ms`, added with `--qemu-arg` because vm-client's own
//! `--vhost-user-blk` chardev does not reconnect) runs fio random writes
//! with crc32c verification on `/dev/vda`. While it writes, the host
//! SIGKILLs Pollux (no clean disconnect) and starts it again with the same
//! config; QEMU reconnects, hands back its inflight area, and Pollux must
//! resubmit what was in flight. fio must finish without an error and its
//! verify phase must pass, and the restarted Pollux must have logged that it
//! resubmitted a non-zero number of requests (the kill is repeated at a
//! later moment if one crash happened to catch nothing in flight).
//!
//! The backing file lives under `CARGO_TARGET_TMPDIR` (a real file system)
//! so its data outlives each Pollux process. This test never skips;
//! `VM_CLIENT` and `VM_CLIENT_ACCEL` work as in `vhost_linux.rs`.

mod support;

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};

use support::{scrape, sparse_file, try_series, Daemon, VmClient};

/// Backing file: room for fio's region and more.
const DISK_MB: u64 = 384;
/// fio's region: long enough that the write phase spans the crashes.
const FIO_MB: u64 = 320;
/// How many crashes to try before giving up on catching a request in flight.
/// A guest request spends ~0.1 ms inside pollux (the TCG guest's own time
/// dominates), so a crash catches one in flight only about half the time
/// even when aimed with the in-flight gauge: allow enough crashes that a
/// run without any catch is vanishingly unlikely.
const MAX_CRASHES: usize = 12;
/// The target's own count of I/O it holds on the exported bdev.
const INFLIGHT: &str = "pollux_bdev_inflight{bdev=\"disk0\"}";
const RESUBMIT_LINE: &str = "resubmitting requests in flight at the last disconnect";

/// Bytes the backing file has allocated: grows while the guest writes.
fn allocated(disk: &Path) -> u64 {
    std::fs::metadata(disk)
        .map(|m| m.blocks() * 512)
        .unwrap_or(0)
}

/// The `count=` of every resubmission line in a Pollux log.
fn resubmitted(log: &str) -> Vec<u64> {
    log.lines()
        .filter(|l| l.contains(RESUBMIT_LINE))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("count="))
                .and_then(|n| n.parse().ok())
        })
        .collect()
}

/// Waits until `cond` holds or `timeout` passes; returns whether it held.
fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

#[test]
fn inflight_requests_survive_backend_crash() {
    let vm = VmClient::find();
    let data = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let disk = data.path().join("disk.img");
    sparse_file(&disk, DISK_MB << 20);
    let sock = data.path().join("vhost.0");
    let cfg = format!(
        "[reactors]\ncores = [0]\nidle = \"adaptive\"\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n\
         [[bdev]]\nname = \"disk0\"\nkind = \"file\"\npath = \"{}\"\n\
         [[vhost.blk]]\nsocket = \"{}\"\nbdev = \"disk0\"\nnum_queues = 1\n",
        disk.display(),
        sock.display()
    );
    // Each daemon gets its own private directory (config, RPC socket); the
    // disk and the vhost socket stay in `data` across restarts.
    let start = || Daemon::builder().config(cfg.clone()).start();
    let mut daemon = start();

    let script = format!(
        r#"
# vm-client does not wait for a disk it did not add itself
i=0; while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
echo "SIZE=$(cat /sys/block/vda/size)"
fio --name=crash --filename=/dev/vda --rw=randwrite --bs=4k --iodepth=16 \
    --ioengine=libaio --direct=1 --size={FIO_MB}M --verify=crc32c --do_verify=1 \
    --verify_fatal=1 --numjobs=1 --output-format=terse --terse-version=3 > /tmp/fio.out
echo "FIO_RC=$?"
echo "FIO_TERSE=$(head -n 1 /tmp/fio.out)"
echo DONE
"#
    );
    let chardev = format!("socket,id=vub9,path={},reconnect-ms=500", sock.display());
    let args: Vec<String> = [
        "--cpus",
        "1",
        "--qemu-arg",
        "-chardev",
        "--qemu-arg",
        &chardev,
        "--qemu-arg",
        "-device",
        "--qemu-arg",
        "vhost-user-blk-pci,chardev=vub9,num-queues=1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let guest = std::thread::spawn(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        vm.run(&args, 300, &script)
    });

    // Crash while the guest writes; again, a bit later each time, if a
    // crash caught nothing in flight.
    let mut logs = Vec::new();
    let mut counts = Vec::new();
    for crash in 0..MAX_CRASHES {
        // Writes are under way: the file keeps growing.
        let before = allocated(&disk);
        let growing = wait_for(Duration::from_secs(600), || {
            guest.is_finished() || allocated(&disk) >= before + (2 << 20)
        });
        if guest.is_finished() || !growing {
            break;
        }
        // Aim: crash right after the target reports guest I/O in flight.
        let addr = daemon.metrics_addr();
        let _ = wait_for(Duration::from_secs(3), || {
            try_series(&scrape(addr), INFLIGHT).is_some_and(|n| n > 0.0)
        });
        let status = daemon.signal_and_wait(libc::SIGKILL);
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
        logs.push(daemon.log());
        daemon = start();
        // QEMU reconnects within its 500 ms and starts the queue again.
        let reconnected = wait_for(Duration::from_secs(60), || {
            daemon.log().contains("virtqueue polling")
        });
        assert!(
            reconnected,
            "QEMU did not reconnect after crash {crash}:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(300));
        counts = resubmitted(&daemon.log());
        if counts.iter().any(|&n| n > 0) {
            break;
        }
    }

    let out = guest.join().unwrap();
    let status = daemon.stop();
    logs.push(daemon.log());
    let log = logs.join("\n--- pollux restarted ---\n");
    let ctx = out.report(&log);
    eprintln!(
        "{} crash(es); resubmitted after the last: {counts:?}",
        logs.len() - 1
    );
    assert!(
        counts.iter().any(|&n| n > 0),
        "no crash caught a request in flight (resubmitted {counts:?})\n{ctx}"
    );
    assert!(out.status.success(), "guest script failed\n{ctx}");
    assert_eq!(
        out.marker("SIZE="),
        Some((DISK_MB << 11).to_string().as_str()),
        "{ctx}"
    );
    assert_eq!(out.marker("FIO_RC="), Some("0"), "{ctx}");
    // terse v3: field 5 is the error, 6 the KiB read (the verify phase),
    // 47 the KiB written, 50 the write runtime in ms.
    let terse: Vec<&str> = out.marker("FIO_TERSE=").unwrap_or("").split(';').collect();
    assert!(terse.len() > 47, "no fio terse output\n{ctx}");
    assert_eq!(terse[4], "0", "fio error\n{ctx}");
    let (read_kb, write_kb) = (terse[5], terse[46]);
    eprintln!(
        "fio: error={} read_kb={read_kb} write_kb={write_kb} write_ms={}",
        terse[4], terse[49]
    );
    assert_eq!(write_kb, (FIO_MB << 10).to_string(), "fio wrote all\n{ctx}");
    assert_eq!(read_kb, write_kb, "fio verified all it wrote\n{ctx}");
    assert!(out.stdout.contains("DONE"), "{ctx}");
    assert!(status.success(), "pollux exit status {status}\n{ctx}");
}
