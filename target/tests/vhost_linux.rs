//! vhost-user-blk with a Linux guest: QEMU's `vhost-user-blk-pci` and the
//! guest kernel's `virtio_blk` driver, in a throw-away VM started by
//! `../shared/vm/vm-client` (2 vCPUs, so QEMU asks for 2 queues).
//!
//! One boot runs every step: the guest must see 2 hardware queues
//! (`/sys/block/vda/mq`), the disk ID (GET_ID) and the capacity, then fio
//! random writes with crc32c verification on `/dev/vda`, then a flush.
//! Pollux runs with `idle = "adaptive"` on two reactors, one per queue.
//!
//! This test never skips: if the VM cannot run it fails and says why.
//! `VM_CLIENT` overrides the vm-client path, `VM_CLIENT_ACCEL` the
//! accelerator (default `tcg`, see ../shared/vm/README.md).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Backing file: room for fio's 32 MiB region and more.
const DISK_MB: u64 = 64;

fn vm_client() -> PathBuf {
    if let Some(p) = std::env::var_os("VM_CLIENT") {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/vm/vm-client")
}

fn marker<'a>(out: &'a str, key: &str) -> Option<&'a str> {
    out.lines()
        .find_map(|l| l.trim().strip_prefix(key))
        .map(str::trim)
}

#[test]
fn linux_guest_two_queues_fio_verify() {
    let vm = vm_client();
    assert!(
        vm.is_file(),
        "vm-client not found at {} (set VM_CLIENT): this test needs it and does not skip",
        vm.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(DISK_MB << 20)
        .unwrap();
    let sock = dir.path().join("vhost.0");
    let cfg = dir.path().join("pollux.toml");
    std::fs::write(
        &cfg,
        format!(
            "[reactors]\ncores = [0, 1]\nidle = \"adaptive\"\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\n\
             [[bdev]]\nname = \"disk0\"\nkind = \"file\"\npath = \"{}\"\n\
             [[vhost.blk]]\nsocket = \"{}\"\nbdev = \"disk0\"\nnum_queues = 2\nqueue_cores = [0, 1]\n",
            disk.display(),
            sock.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pollux"))
        .arg("--config")
        .arg(&cfg)
        .arg("--rpc-socket")
        .arg(dir.path().join("rpc.sock"))
        .env("POLLUX_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start pollux");
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let log2 = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.contains("pollux ready") {
                let _ = tx.send(());
            }
            let mut l = log2.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    });
    if rx.recv_timeout(Duration::from_secs(30)).is_err() {
        let _ = child.kill();
        panic!("pollux did not start; log:\n{}", log.lock().unwrap());
    }

    let script = r#"
set -e
echo "MQ=$(ls /sys/block/vda/mq | wc -l)"
echo "SIZE=$(cat /sys/block/vda/size)"
echo "SERIAL=$(cat /sys/block/vda/serial 2>/dev/null || echo none)"
echo "CACHE=$(cat /sys/block/vda/queue/write_cache)"
fio --name=verify --filename=/dev/vda --rw=randwrite --bs=4k --iodepth=16 \
    --ioengine=libaio --direct=1 --size=32M --verify=crc32c --do_verify=1 \
    --verify_fatal=1 --numjobs=1 --output-format=terse --terse-version=3 > /tmp/fio.out
echo "FIO_RC=$?"
fio --name=mq --filename=/dev/vda --rw=randread --bs=4k --iodepth=8 \
    --ioengine=libaio --direct=1 --size=32M --numjobs=2 --time_based --runtime=2 \
    --group_reporting --output-format=terse --terse-version=3 > /tmp/fio2.out
echo "FIO_MQ_RC=$?"
sync
echo DONE
"#;
    let accel = std::env::var("VM_CLIENT_ACCEL").unwrap_or_else(|_| "tcg".into());
    let out = Command::new(&vm)
        .args(["--cpus", "2", "--accel", &accel, "--timeout", "400"])
        .arg("--vhost-user-blk")
        .arg(&sock)
        .args(["--", script])
        .output()
        .expect("cannot run vm-client");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    // SAFETY: kill(2) on our own child's pid has no memory-safety
    // preconditions.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let log = log.lock().unwrap().clone();
    let ctx = format!(
        "vm-client status {:?}\n--- guest output\n{stdout}\n--- vm-client stderr\n{stderr}\n--- pollux log\n{log}",
        out.status
    );
    assert!(out.status.success(), "guest script failed\n{ctx}");
    assert_eq!(marker(&stdout, "MQ="), Some("2"), "{ctx}");
    assert_eq!(
        marker(&stdout, "SIZE="),
        Some((DISK_MB << 11).to_string().as_str()),
        "{ctx}"
    );
    assert!(
        marker(&stdout, "SERIAL=").is_some_and(|s| s.starts_with("PLXVB")),
        "GET_ID serial\n{ctx}"
    );
    assert_eq!(marker(&stdout, "CACHE="), Some("write back"), "{ctx}");
    assert_eq!(marker(&stdout, "FIO_RC="), Some("0"), "{ctx}");
    assert_eq!(marker(&stdout, "FIO_MQ_RC="), Some("0"), "{ctx}");
    assert!(stdout.contains("DONE"), "{ctx}");
    assert!(
        log.contains("queue=0") && log.contains("queue=1") && log.contains("reactor=1"),
        "both queues should have been polled, queue 1 on reactor 1\n{ctx}"
    );
    assert!(status.success(), "pollux exit status {status}\n{ctx}");
}
