//! Resize through SPDK's rpc.py (`bdev_null_resize`, `bdev_uring_rescan`,
//! `bdev_aio_rescan`), and what a real host sees of it: the Linux kernel's
//! NVMe/TCP initiator, in a guest started by `../shared/vm/vm-client`, gets
//! the Namespace Attribute Changed AEN, reads the Changed Namespace List
//! and the new size (`/sys/block/nvme0nX/size`) without reconnecting, and
//! does I/O past the old end; its virtio-blk driver, on QEMU's
//! vhost-user-blk, gets the config-change interrupt Pollux asks for with
//! VHOST_USER_BACKEND_CONFIG_CHANGE_MSG and reads the new capacity
//! (`/sys/block/vda/size`).
//!
//! The VM test never skips: if the VM cannot run it fails and says why.

mod support;

use support::blkio_host::BlkioHost;

use std::time::{Duration, Instant};

use serde_json::json;
use support::nvmf_guest::guest_wait_dev;
use support::{free_port, sparse_file, Daemon, VmClient};

const NQN: &str = "nqn.2024-11.dev.pollux:resize";
const MIB: u64 = 1 << 20;

fn config(disk: &std::path::Path, port: u16, sock: &std::path::Path) -> String {
    format!(
        r#"[reactors]
cores = [0]
idle = "adaptive"

[metrics]
listen = "127.0.0.1:0"

[[bdev]]
name = "null0"
kind = "null"
size = "64MiB"
block_size = 512

[[bdev]]
name = "file0"
kind = "file"
path = "{}"
block_size = 512

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

[[nvmf.subsystem]]
nqn = "{NQN}"
namespaces = ["null0", "file0", "r1"]
allow_any_host = true
listen = ["127.0.0.1:{port}"]

[[bdev]]
name = "null1"
kind = "null"
size = "64MiB"
block_size = 512

[[vhost.blk]]
socket = "{}"
bdev = "null1"
"#,
        disk.display(),
        sock.display()
    )
}

fn num_blocks(d: &Daemon, name: &str) -> u64 {
    d.spdk().run(&["bdev_get_bdevs", "-b", name])[0]["num_blocks"]
        .as_u64()
        .unwrap()
}

#[test]
fn resize_rpcs_follow_spdk() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    sparse_file(&disk, 32 * MIB);
    let d = Daemon::builder()
        .in_dir(dir)
        .config(config(&disk, free_port(), &disk.with_extension("sock")))
        .start();
    let rpc = d.spdk();

    assert_eq!(rpc.run(&["bdev_null_resize", "null0", "96"]), json!(true));
    assert_eq!(num_blocks(&d, "null0"), 96 * MIB / 512);
    // As SPDK: a null bdev only grows (-EINVAL), and only null bdevs are
    // resized this way (-ENODEV).
    let e = rpc.fails(&["bdev_null_resize", "null0", "32"]);
    assert!(e.contains("-22") || e.contains("Invalid argument"), "{e}");
    let e = rpc.fails(&["bdev_null_resize", "file0", "128"]);
    assert!(e.contains("-19") || e.contains("No such device"), "{e}");
    // save_config replays the new size.
    let saved = rpc.run(&["save_config"]).to_string();
    assert!(
        saved.contains(&format!("\"num_blocks\":{}", 96 * MIB / 512)),
        "{saved}"
    );

    // The file grew behind the bdev's back: both rescan names pick it up.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&disk)
        .unwrap()
        .set_len(48 * MIB)
        .unwrap();
    assert_eq!(rpc.run(&["bdev_uring_rescan", "file0"]), json!(true));
    assert_eq!(num_blocks(&d, "file0"), 48 * MIB / 512);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&disk)
        .unwrap()
        .set_len(56 * MIB)
        .unwrap();
    assert_eq!(rpc.run(&["bdev_aio_rescan", "file0"]), json!(true));
    assert_eq!(num_blocks(&d, "file0"), 56 * MIB / 512);
    let e = rpc.fails(&["bdev_aio_rescan", "null0"]);
    assert!(e.contains("-19") || e.contains("No such device"), "{e}");
}

#[test]
fn linux_nvme_tcp_host_sees_the_new_size() {
    let vm = VmClient::find();
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    sparse_file(&disk, 32 * MIB);
    let port = free_port();
    let sock = dir.path().join("vhost.sock");
    let d = Daemon::builder()
        .in_dir(dir)
        .config(config(&disk, port, &sock))
        .start();

    // The guest reports its sizes, then writes one block to null0: the
    // host resizes once it counts that write, so the guest has certainly
    // read the old sizes first. Then the guest waits for both to change.
    let wait_dev = |dev| guest_wait_dev(dev, 100);
    let script = format!(
        "set -e\n\
         nvme connect -t tcp -a 10.0.2.2 -s {port} -n {NQN}\n\
         {w1}{w2}{w3}\
         echo OLD_SIZES $(cat /sys/block/nvme0n1/size) $(cat /sys/block/nvme0n2/size) $(cat /sys/block/vda/size) $(cat /sys/block/nvme0n3/size)\n\
         dd if=/dev/zero of=/dev/nvme0n1 bs=4k count=1 oflag=direct 2>/dev/null\n\
         a=$(cat /sys/block/nvme0n1/size); b=$(cat /sys/block/nvme0n2/size); c=$(cat /sys/block/vda/size); e=$(cat /sys/block/nvme0n3/size); i=0\n\
         while [ $a -eq {n1} ] || [ $b -eq {n2} ] || [ $c -eq {n1} ] || [ $e -eq {n2} ]; do i=$((i+1)); \
           [ $i -gt 600 ] && {{ echo NO_RESIZE $a $b $c $e; exit 1; }}; sleep 0.1; \
           a=$(cat /sys/block/nvme0n1/size); b=$(cat /sys/block/nvme0n2/size); c=$(cat /sys/block/vda/size); e=$(cat /sys/block/nvme0n3/size); done\n\
         echo NEW_SIZES $a $b $c $e\n\
         dd if=/dev/vda of=/dev/null bs=4k skip=$(( (150 << 20) / 4096 )) count=1 iflag=direct 2>/dev/null && echo VDA_TAIL_OK\n\
         nvme get-log /dev/nvme0 --log-id=4 --log-len=16 2>&1 | head -3 || true\n\
         dd if=/dev/urandom of=/tmp/blk bs=4k count=1 2>/dev/null\n\
         dd if=/tmp/blk of=/dev/nvme0n2 bs=4k seek=$(( (40 << 20) / 4096 )) count=1 oflag=direct 2>/dev/null\n\
         echo TAIL_MD5 $(md5sum < /tmp/blk)\n\
         echo READ_MD5 $(dd if=/dev/nvme0n2 bs=4k skip=$(( (40 << 20) / 4096 )) count=1 iflag=direct 2>/dev/null | md5sum)\n\
         nvme disconnect -n {NQN}\n\
         echo ALL_OK\n",
        w1 = wait_dev("nvme0n1"),
        w2 = wait_dev("nvme0n2"),
        w3 = wait_dev("nvme0n3"),
        n1 = 64 * MIB / 512,
        n2 = 32 * MIB / 512,
    );

    let rpc_sock = d.rpc_socket().to_owned();
    let resizer = std::thread::spawn(move || {
        let rpc = support::SpdkRpc::new(&rpc_sock);
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let st = rpc.run(&["bdev_get_iostat", "--names", "null0"]);
            if st["bdevs"][0]["num_write_ops"].as_u64().unwrap_or(0) > 0 {
                break;
            }
            assert!(Instant::now() < deadline, "the guest never wrote");
            std::thread::sleep(Duration::from_millis(200));
        }
        rpc.run(&["bdev_null_resize", "null0", "128"]);
        rpc.run(&["bdev_null_resize", "null1", "160"]);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&disk)
            .unwrap()
            .set_len(48 * MIB)
            .unwrap();
        rpc.run(&["bdev_uring_rescan", "file0"]);
        // The raid1 namespace grows once both members did (issue 12's
        // growing a RAID by its members): to the smaller, 48 MiB.
        rpc.run(&["bdev_null_resize", "m0", "64"]);
        rpc.run(&["bdev_null_resize", "m1", "48"]);
        disk
    });
    let out = vm.run(
        &["--cpus", "1", "--vhost-user-blk", sock.to_str().unwrap()],
        900,
        &script,
    );
    let report = || out.report(&d.log());
    assert!(
        resizer.is_finished(),
        "the guest ended before the host resized:\n{}",
        report()
    );
    let disk = match resizer.join() {
        Ok(disk) => disk,
        Err(_) => panic!("the resizing thread failed:\n{}", report()),
    };
    assert!(out.status.success(), "guest script failed:\n{}", report());
    assert_eq!(
        out.marker("OLD_SIZES"),
        Some(
            format!(
                "{} {} {} {}",
                64 * MIB / 512,
                32 * MIB / 512,
                64 * MIB / 512,
                32 * MIB / 512
            )
            .as_str()
        ),
        "{}",
        report()
    );
    assert_eq!(
        out.marker("NEW_SIZES"),
        Some(
            format!(
                "{} {} {} {}",
                128 * MIB / 512,
                48 * MIB / 512,
                160 * MIB / 512,
                48 * MIB / 512
            )
            .as_str()
        ),
        "{}",
        report()
    );
    let tail = out.marker("TAIL_MD5").unwrap_or("none");
    assert_eq!(out.marker("READ_MD5"), Some(tail), "{}", report());
    assert!(out.stdout.contains("VDA_TAIL_OK"), "{}", report());
    assert!(out.stdout.contains("ALL_OK"), "{}", report());
    // The write past the old end is in the file.
    let data = std::fs::read(&disk).unwrap();
    assert_eq!(data.len() as u64, 48 * MIB);
    assert!(
        data[(40 * MIB) as usize..(40 * MIB) as usize + 4096]
            .iter()
            .any(|b| *b != 0),
        "{}",
        report()
    );
}

#[test]
fn libblkio_reads_the_new_capacity() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    sparse_file(&disk, 32 * MIB);
    let sock = dir.path().join("vhost.sock");
    let d = Daemon::builder()
        .in_dir(dir)
        .config(config(&disk, free_port(), &sock))
        .start();
    let mut c = BlkioHost::connect(&sock, 1, 1 << 20);
    assert_eq!(c.blkio().get_u64("capacity").unwrap(), 64 * MIB);
    // Past the old end: refused (virtio IOERR) before the resize.
    assert!(c.write(0, 100 * MIB, 0, 4096) < 0);
    d.spdk().run(&["bdev_null_resize", "null1", "160"]);
    assert_eq!(c.blkio().get_u64("capacity").unwrap(), 160 * MIB);
    assert_eq!(c.write(0, 100 * MIB, 0, 4096), 0);
    assert_eq!(c.read(0, 100 * MIB, 0, 4096), 0);
}
