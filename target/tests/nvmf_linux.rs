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

use support::nvmf_guest::guest_wait_dev;
use support::{file_md5, free_port, sparse_file, Daemon, Ready, VmClient};

const NQN: &str = "nqn.2024-11.dev.pollux:vmtest";
/// Backing file size: room for three 16 MiB fio regions.
const DISK_MB: u64 = 64;

/// MD5 of `len_mb` MiB at `offset_mb` MiB of `path`.
fn host_md5(path: &std::path::Path, offset_mb: u64, len_mb: u64) -> String {
    file_md5(path, offset_mb << 20, len_mb << 20)
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
    let wait_dev = guest_wait_dev("nvme0n1", 100);
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

/// One daemon built over rpc.py with non-default transport options
/// (`c2h_success` as given), exporting a 64 MiB malloc bdev on `port`.
fn rpc_built_daemon(port: u16, c2h_success: bool) -> Daemon {
    let d = Daemon::builder()
        .config("[reactors]\ncores = [0]\n[metrics]\nlisten = \"127.0.0.1:0\"\n")
        .start();
    let rpc = d.spdk();
    // In-capsule 4 KiB (so 16 KiB writes take R2T), 64 KiB commands (MDTS
    // 4: Linux splits larger ones), 64-entry queues (Linux clamps its 128
    // to CAP.MQES), two I/O queues, and a 512 KiB buffer budget (64 units
    // of 8 KiB), which fio at QD 16 x 64 KiB overruns, so requests wait
    // for buffers. io_unit_size and num_shared_buffers as rpc.py up to
    // 26.05 sends them.
    let mut params = serde_json::json!({
        "trtype": "TCP", "max_queue_depth": 64, "max_io_qpairs_per_ctrlr": 2,
        "in_capsule_data_size": 4096, "max_io_size": 65536, "io_unit_size": 8192,
        "num_shared_buffers": 64, "max_aq_depth": 32, "c2h_success": c2h_success,
    });
    if !c2h_success {
        // What `rpc.py nvmf_create_transport -o` sends.
        params["no_srq"] = serde_json::json!(false);
    }
    rpc.call("nvmf_create_transport", params);
    rpc.run(&["bdev_malloc_create", "-b", "Malloc0", "64", "512"]);
    rpc.export_tcp(NQN, "Malloc0", port);
    d
}

/// (sqflow_disabled, c2h_success) of every I/O queue pair the log says
/// closed.
fn io_queue_stats(log: &str) -> Vec<(bool, u64)> {
    log.lines()
        .filter(|l| l.contains("queue pair closed") && !l.contains("qid=Some(0)"))
        .filter(|l| l.contains("qid=Some("))
        .map(|l| {
            let field = |k: &str| {
                l.split(&format!("{k}="))
                    .nth(1)
                    .and_then(|s| s.split_whitespace().next())
                    .unwrap_or_default()
                    .to_owned()
            };
            (
                field("sqflow_disabled") == "true",
                field("c2h_success").parse().unwrap_or(u64::MAX),
            )
        })
        .collect()
}

/// Issue 8 §5 and §6 with the Linux initiator: reads complete by C2HData
/// SUCCESS only on queues whose host disabled SQ flow control
/// (`nvme connect --disable-sqflow`) and only while `c2h_success` is on;
/// everywhere else the CapsuleResp carries SQHD. Linux connects with flow
/// control on unless told otherwise. Both daemons run non-default
/// transport options, and fio verify passes on each queue kind.
#[test]
fn linux_initiator_c2h_success_rule_and_transport_options() {
    let vm = VmClient::find();
    let (port_on, port_off) = (free_port(), free_port());
    let on = rpc_built_daemon(port_on, true);
    let off = rpc_built_daemon(port_off, false);
    let fio = |name: &str, bs: &str, offset_mb: u64| {
        format!(
            "fio --name={name} --filename=/dev/nvme0n1 --rw=randwrite --bs={bs} \
             --offset={offset_mb}m --size=8m --iodepth=16 --ioengine=libaio --direct=1 \
             --verify=crc32c --do_verify=1 --verify_fatal=1 --randrepeat=0 --output-format=terse \
             >/tmp/{name}.out 2>&1 || {{ cat /tmp/{name}.out; echo FIO_FAILED {name}; exit 1; }}\n\
             echo FIO_OK {name}\n"
        )
    };
    let wait_dev = guest_wait_dev("nvme0n1", 100);
    let mut script = String::from("set -e\n");
    for (tag, port) in [("on", port_on), ("off", port_off)] {
        for (mode, flag) in [("nosqflow", " --disable-sqflow"), ("sqflow", "")] {
            let n = format!("{tag}_{mode}");
            write!(
                script,
                "nvme connect -t tcp -a 10.0.2.2 -s {port} -n {NQN}{flag}\n{wait_dev}\
                 echo MAX_SECTORS_{n} $(cat /sys/block/nvme0n1/queue/max_hw_sectors_kb)\n\
                 {}{}{}\
                 nvme disconnect -n {NQN}\n\
                 i=0; while [ -b /dev/nvme0n1 ]; do i=$((i+1)); [ $i -gt 100 ] && exit 1; sleep 0.1; done\n",
                fio(&format!("{n}_4k"), "4k", 0),
                fio(&format!("{n}_16k"), "16k", 8),
                fio(&format!("{n}_256k"), "256k", 16),
            )
            .unwrap();
        }
    }
    script.push_str("echo ALL_OK\n");
    let out = vm.run(&[], 900, &script);
    let logs = || format!("{}\n--- c2h_success off ---\n{}", on.log(), off.log());
    let report = || out.report(&logs());
    assert!(out.status.success(), "guest script failed:\n{}", report());
    assert!(out.stdout.contains("ALL_OK"), "{}", report());
    // MDTS (64 KiB) reached the block layer.
    for n in ["on_nosqflow", "on_sqflow", "off_nosqflow", "off_sqflow"] {
        assert_eq!(
            out.marker(&format!("MAX_SECTORS_{n}")),
            Some("64"),
            "{}",
            report()
        );
    }

    let on_stats = io_queue_stats(&on.log());
    let off_stats = io_queue_stats(&off.log());
    assert!(!on_stats.is_empty() && !off_stats.is_empty(), "{}", logs());
    // Linux's default keeps SQ flow control on, and such queues never get
    // SUCCESS; with --disable-sqflow they do (reads complete without a
    // CapsuleResp) where c2h_success is on.
    assert!(on_stats.iter().any(|&(d, _)| !d), "{}", logs());
    assert!(
        on_stats.iter().filter(|s| !s.0).all(|s| s.1 == 0),
        "SUCCESS under SQ flow control:\n{}",
        logs()
    );
    let with_success: u64 = on_stats.iter().filter(|s| s.0).map(|s| s.1).sum();
    assert!(
        with_success > 0,
        "no SUCCESS with flow control off:\n{}",
        logs()
    );
    // c2h_success off: never, even where the host allowed it.
    assert!(off_stats.iter().any(|&(d, _)| d), "{}", logs());
    assert!(
        off_stats.iter().all(|s| s.1 == 0),
        "SUCCESS with c2h_success off:\n{}",
        logs()
    );
    // No transport error on either, with the small buffer budget.
    for log in [on.log(), off.log()] {
        assert!(
            !log.contains("C2HTermReq") && !log.contains("data_digest_errors=1"),
            "{log}"
        );
    }
}
