//! Acceptance test with a real NVMe/TCP client: the Linux kernel initiator
//! (`nvme-tcp` + nvme-cli + fio) in a throw-away QEMU guest started by
//! `../shared/vm/vm-client`.
//!
//! One guest boot runs every step (boots cost 6-10 s under TCG):
//! discovery, connect without digests, fio verify with 4 KiB writes
//! (in-capsule data) and 16 KiB writes (R2T + H2CData, since in-capsule
//! data is 8 KiB), disconnect, reconnect with header and data digests and
//! verify again. The host then checks that what the guest read back is in
//! the backing file, and the target's log that the R2T path and digests
//! were really used.
//!
//! This test never skips: if the VM cannot run it fails and says why.
//! `VM_CLIENT` overrides the vm-client path, `VM_CLIENT_ACCEL` the
//! accelerator (default `tcg`: on the CI hosts KVM is a PVM that makes
//! QEMU abort, see ../shared/vm/README.md).

mod support;

use std::fmt::Write;
use std::process::Command;

use support::{free_port, sparse_file, Daemon, Ready, VmClient};

const NQN: &str = "nqn.2024-11.dev.pollux:vmtest";
/// Backing file size: room for three 16 MiB fio regions.
const DISK_MB: u64 = 64;

/// MD5 of `len` bytes at `offset` of `path`, via coreutils (also what the
/// guest's busybox prints).
fn host_md5(path: &std::path::Path, offset_mb: u64, len_mb: u64) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "dd if='{}' bs=1M skip={offset_mb} count={len_mb} status=none | md5sum",
            path.display()
        ))
        .output()
        .expect("running dd | md5sum on the host");
    assert!(out.status.success(), "host md5sum failed");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn linux_kernel_initiator_discover_connect_fio_verify() {
    let vm = VmClient::find();
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    sparse_file(&disk, DISK_MB << 20);
    let port = free_port();
    let mut config = String::new();
    write!(
        config,
        r#"[reactors]
cores = [0]
idle = "adaptive"

[metrics]
listen = "127.0.0.1:0"

[[bdev]]
name = "disk0"
kind = "file"
path = "{}"
block_size = 512

[[nvmf.subsystem]]
nqn = "{NQN}"
namespaces = ["disk0"]
allow_any_host = true
listen = ["127.0.0.1:{port}"]
"#,
        disk.display()
    )
    .unwrap();

    let mut daemon = Daemon::builder()
        .in_dir(dir)
        .config(config)
        .ready(Ready::LogLine("nvmf: listening"))
        .start();

    let fio = |name: &str, bs: &str, offset_mb: u64, size_mb: u64| {
        format!(
            "fio --name={name} --filename=/dev/nvme0n1 --rw=randwrite --bs={bs} \
             --offset={offset_mb}m --size={size_mb}m --iodepth=16 --ioengine=libaio --direct=1 \
             --verify=crc32c --do_verify=1 --verify_fatal=1 --randrepeat=0 --output-format=terse \
             >/tmp/{name}.out 2>&1 || {{ cat /tmp/{name}.out; echo FIO_FAILED {name}; exit 1; }}\n\
             echo FIO_OK {name}\n"
        )
    };
    let wait_dev = "i=0; while [ ! -b /dev/nvme0n1 ]; do i=$((i+1)); \
                    [ $i -gt 100 ] && { echo NO_DEVICE; nvme list; exit 1; }; sleep 0.1; done\n";
    let script = format!(
        "set -e\n\
         nvme discover -t tcp -a 10.0.2.2 -s {port} > /tmp/disc.txt 2>&1 || {{ cat /tmp/disc.txt; exit 1; }}\n\
         cat /tmp/disc.txt\n\
         grep -q 'subnqn: *{NQN}' /tmp/disc.txt && echo DISCOVER_OK\n\
         nvme connect -t tcp -a 10.0.2.2 -s {port} -n {NQN}\n\
         {wait_dev}\
         nvme list\n\
         {f4k}{f16k}\
         echo GUEST_MD5_PLAIN $(dd if=/dev/nvme0n1 bs=1M count=32 iflag=direct 2>/dev/null | md5sum)\n\
         nvme disconnect -n {NQN}\n\
         echo DISCONNECT_OK\n\
         nvme connect -t tcp -a 10.0.2.2 -s {port} -n {NQN} --hdr-digest --data-digest\n\
         {wait_dev}\
         {f16kd}{f4kd}\
         echo GUEST_MD5_DIGEST $(dd if=/dev/nvme0n1 bs=1M skip=32 count=32 iflag=direct 2>/dev/null | md5sum)\n\
         nvme disconnect -n {NQN}\n\
         echo ALL_OK\n",
        f4k = fio("w4k", "4k", 0, 16),
        f16k = fio("w16k", "16k", 16, 16),
        f16kd = fio("w16k_digest", "16k", 32, 16),
        f4kd = fio("w4k_digest", "4k", 48, 16),
    );
    let out = vm.run(&[], 900, &script);
    let stdout = &out.stdout;
    let report = || out.report(&daemon.log());
    assert!(out.status.success(), "guest script failed:\n{}", report());
    for m in [
        "DISCOVER_OK",
        "FIO_OK w4k",
        "FIO_OK w16k",
        "DISCONNECT_OK",
        "FIO_OK w16k_digest",
        "FIO_OK w4k_digest",
        "ALL_OK",
    ] {
        assert!(stdout.contains(m), "missing {m}:\n{}", report());
    }

    // What the guest read through the target is what is in the file.
    let plain = out
        .marker("GUEST_MD5_PLAIN")
        .and_then(|s| s.split_whitespace().next());
    let digest = out
        .marker("GUEST_MD5_DIGEST")
        .and_then(|s| s.split_whitespace().next());
    assert_eq!(plain, Some(host_md5(&disk, 0, 32).as_str()), "{}", report());
    assert_eq!(
        digest,
        Some(host_md5(&disk, 32, 32).as_str()),
        "{}",
        report()
    );

    let log = daemon.log();
    // 16 KiB writes exceed the 8 KiB in-capsule size: R2T must have run.
    let r2ts: u64 = log
        .lines()
        .filter(|l| l.contains("queue pair closed"))
        .filter_map(|l| l.split("r2ts=").nth(1))
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    assert!(r2ts > 0, "no R2T was sent:\n{log}");
    assert!(
        log.contains("hdgst=true ddgst=true"),
        "digests were never negotiated:\n{log}"
    );
    assert!(
        !log.contains("data_digest_errors=1") && !log.contains("C2HTermReq"),
        "transport errors:\n{log}"
    );

    let status = daemon.stop();
    assert!(
        status.success(),
        "pollux exit: {status:?}\n{}",
        daemon.log()
    );
    // After an orderly stop (graph flush) the data is still there.
    assert_eq!(plain, Some(host_md5(&disk, 0, 32).as_str()));
}
