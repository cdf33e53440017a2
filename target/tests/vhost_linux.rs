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

mod support;

use support::{sparse_file, Daemon, VmClient};

/// Backing file: room for fio's 32 MiB region and more.
const DISK_MB: u64 = 64;

#[test]
fn linux_guest_two_queues_fio_verify() {
    let vm = VmClient::find();
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    sparse_file(&disk, DISK_MB << 20);
    let sock = dir.path().join("vhost.0");
    let cfg = format!(
        "[reactors]\ncores = [0, 1]\nidle = \"adaptive\"\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n\
         [[bdev]]\nname = \"disk0\"\nkind = \"file\"\npath = \"{}\"\n\
         [[vhost.blk]]\nsocket = \"{}\"\nbdev = \"disk0\"\nnum_queues = 2\nqueue_cores = [0, 1]\n",
        disk.display(),
        sock.display()
    );
    let mut daemon = Daemon::builder().in_dir(dir).config(cfg).start();

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
    let vhost = ["--cpus", "2", "--vhost-user-blk", sock.to_str().unwrap()];
    let out = vm.run(&vhost, 400, script);
    let status = daemon.stop();
    let log = daemon.log();
    let ctx = out.report(&log);
    let stdout = &out.stdout;
    assert!(out.status.success(), "guest script failed\n{ctx}");
    assert_eq!(out.marker("MQ="), Some("2"), "{ctx}");
    assert_eq!(
        out.marker("SIZE="),
        Some((DISK_MB << 11).to_string().as_str()),
        "{ctx}"
    );
    assert!(
        out.marker("SERIAL=")
            .is_some_and(|s| s.starts_with("PLXVB")),
        "GET_ID serial\n{ctx}"
    );
    assert_eq!(out.marker("CACHE="), Some("write back"), "{ctx}");
    assert_eq!(out.marker("FIO_RC="), Some("0"), "{ctx}");
    assert_eq!(out.marker("FIO_MQ_RC="), Some("0"), "{ctx}");
    assert!(stdout.contains("DONE"), "{ctx}");
    assert!(
        log.contains("queue=0") && log.contains("queue=1") && log.contains("reactor=1"),
        "both queues should have been polled, queue 1 on reactor 1\n{ctx}"
    );
    assert!(status.success(), "pollux exit status {status}\n{ctx}");
}
