//! The userspace NVMe PCIe driver on a real (emulated) SSD: pollux runs in
//! a QEMU guest whose NVMe controller sits behind an intel-iommu and is
//! bound to vfio-pci (`vm-client --nvme-pci IMG`), exports the namespace
//! over NVMe/TCP on the guest's 127.0.0.1, and the guest kernel's nvme-tcp
//! initiator runs fio with verify, a known pattern, write zeroes, DSM
//! deallocate and flush through it. Back on the host the pattern and the
//! zeroed range must be in IMG.
//!
//! The same boot runs the error paths: with the device unbound from
//! vfio-pci, starting on it exits with status 2 and one line naming the
//! device, and `bdev_nvme_attach_controller` answers a JSON-RPC error while
//! the daemon keeps serving; rebound, attach and detach work at run time,
//! and a detach while the namespace is exported is refused.
//!
//! Inside the guest the JSON-RPC client is `pollux rpc` (the guest has no
//! Python); rpc.py drives the same methods on the host in
//! `rpc_py_attach_errors_and_listing`.
//!
//! This test never skips: if the VM cannot run it fails and says why.

mod support;

use std::path::Path;
use std::process::Command;

use support::{file_md5, sparse_file, Daemon, VmClient};

const NQN: &str = "nqn.2024-11.dev.pollux:ssd";
/// IMG size: room for every region the script writes (under 24 MiB).
const IMG_MB: u64 = 32;

/// MD5 of `len_kb` KiB at `offset_kb` KiB of `path`.
fn host_md5(path: &Path, offset_kb: u64, len_kb: u64) -> String {
    file_md5(path, offset_kb << 10, len_kb << 10)
}

/// A copy of the pollux binary without debug info, small enough to put
/// into the guest quickly.
fn stripped_pollux(dir: &Path) -> std::path::PathBuf {
    let dst = dir.join("pollux");
    let st = Command::new("objcopy")
        .args(["--strip-debug", env!("CARGO_BIN_EXE_pollux")])
        .arg(&dst)
        .status()
        .expect("running objcopy (binutils)");
    assert!(st.success(), "objcopy --strip-debug failed");
    dst
}

/// The guest script. Markers (`KEY value`) report each step.
fn script() -> String {
    format!(
        r#"set -e
bdf=$(cat /run/nvme-pci)
sys=/sys/bus/pci/devices/$bdf
echo BDF $bdf
cat > /tmp/ssd.toml <<EOT
[reactors]
cores = [0, 1]
idle = "adaptive"

[rpc]
socket = "/tmp/pollux.sock"

[[bdev]]
name = "nvme0"
kind = "nvme"
pci = "$bdf"
io_queue_depth = 64

[[nvmf.subsystem]]
nqn = "{NQN}"
namespaces = ["nvme0n1"]
allow_any_host = true
listen = ["127.0.0.1:4420"]
EOT
cat > /tmp/empty.toml <<EOT
[reactors]
cores = [0, 1]
idle = "adaptive"

[rpc]
socket = "/tmp/pollux.sock"
EOT
rpc() {{ /pollux --rpc-socket /tmp/pollux.sock rpc "$@"; }}
wait_ready() {{
  i=0
  until grep -q 'pollux ready' $1; do
    i=$((i+1)); [ $i -gt 300 ] && {{ echo NOT_READY; cat $1; exit 1; }}
    sleep 0.1
  done
}}

# 1. Not bound to vfio-pci: start fails, status 2, one line naming it.
echo $bdf > $sys/driver/unbind
set +e
POLLUX_LOG=off /pollux --config /tmp/ssd.toml > /tmp/start.out 2>&1
st=$?
set -e
echo START_STATUS $st
echo START_LINES $(wc -l < /tmp/start.out)
echo START_ERR $(cat /tmp/start.out)

# 2. At run time: attach answers a JSON-RPC error, the daemon keeps serving.
/pollux --config /tmp/empty.toml > /tmp/rt.log 2>&1 &
rt=$!
wait_ready /tmp/rt.log
set +e
rpc bdev_nvme_attach_controller '{{"name":"Nvme0","trtype":"PCIe","traddr":"'$bdf'"}}' > /tmp/att.out 2>&1
echo RPC_ATTACH_STATUS $?
set -e
echo RPC_ATTACH_ERR $(cat /tmp/att.out)
rpc bdev_nvme_get_controllers | tr -d ' \n'; echo
rpc spdk_get_version > /dev/null && echo RPC_ALIVE

# Rebound: attach and detach at run time.
echo $bdf > /sys/bus/pci/drivers/vfio-pci/bind
echo ATTACH $(rpc bdev_nvme_attach_controller '{{"name":"Nvme0","trtype":"PCIe","traddr":"'$bdf'"}}' | tr -d ' \n')
echo CTRLS $(rpc bdev_nvme_get_controllers '{{"name":"Nvme0"}}' | tr -d ' \n')
echo DETACH_RT $(rpc bdev_nvme_detach_controller '{{"name":"Nvme0"}}')
kill $rt; wait $rt && echo RT_EXIT_OK

# 3. On the SSD from the config, exported over NVMe/TCP.
/pollux --config /tmp/ssd.toml > /tmp/pollux.log 2>&1 &
pid=$!
wait_ready /tmp/pollux.log
nvme connect -t tcp -a 127.0.0.1 -s 4420 -n {NQN}
i=0; while [ ! -b /dev/nvme0n1 ]; do i=$((i+1)); [ $i -gt 100 ] && {{ echo NO_DEVICE; exit 1; }}; sleep 0.1; done
d=/dev/nvme0n1
# A known pattern at 1 MiB, 1 MiB long (commands cut to the export's MDTS).
dd if=/dev/urandom of=/tmp/pat bs=64K count=16 2>/dev/null
dd if=/tmp/pat of=$d bs=1M seek=1 oflag=direct 2>/dev/null
echo PAT_MD5 $(md5sum < /tmp/pat)
echo READ_MD5 $(dd if=$d bs=1M skip=1 count=1 iflag=direct 2>/dev/null | md5sum)
# Write zeroes over 4..5 MiB and deallocate 5..6 MiB, both written first.
dd if=/dev/urandom of=$d bs=1M seek=4 count=2 oflag=direct 2>/dev/null
nvme write-zeroes $d --namespace-id=1 --start-block=8192 --block-count=2047
nvme dsm $d --namespace-id=1 --ad --slbs=10240 --blocks=2048
nvme flush $d --namespace-id=1
echo ZERO_MD5 $(dd if=$d bs=1M skip=4 count=2 iflag=direct 2>/dev/null | md5sum)

echo ZEROS_MD5 $(dd if=/dev/zero bs=1M count=2 2>/dev/null | md5sum)
for job in 4k:8 64k:12 128k:16; do
  bs=${{job%%:*}}; off=${{job##*:}}
  fio --name=v$bs --filename=$d --rw=randwrite --bs=$bs --offset=${{off}}m --size=4m \
      --iodepth=16 --ioengine=libaio --direct=1 --verify=crc32c --do_verify=1 \
      --verify_fatal=1 --randrepeat=0 --output-format=terse > /tmp/fio.out 2>&1 \
    || {{ cat /tmp/fio.out; echo FIO_FAILED $bs; exit 1; }}
  echo FIO_OK $bs
done
wget -qO- http://127.0.0.1:9469/metrics | grep '^pollux_nvme_' | sed 's/^/METRIC /'
echo GET_CTRL $(rpc bdev_nvme_get_controllers | tr -d ' \n')
echo SAVED $(rpc save_config | tr -d ' \n' | grep -o '"method":"bdev_nvme_attach_controller","params":{{[^}}]*}}')
set +e
rpc bdev_nvme_detach_controller '{{"name":"nvme0"}}' > /tmp/det.out 2>&1
echo BUSY_STATUS $?
set -e
echo BUSY_ERR $(cat /tmp/det.out)
nvme disconnect-all
kill $pid
wait $pid && echo EXIT_OK
grep -c 'NVMe controller shut down' /tmp/pollux.log | sed 's/^/SHUTDOWN_LOGGED /'
"#
    )
}

#[test]
fn guest_ssd_over_vfio_exported_to_the_kernel_initiator() {
    let vm = VmClient::find();
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("ssd.img");
    sparse_file(&img, IMG_MB << 20);
    let bin = stripped_pollux(dir.path());
    let out = vm.run(
        &[
            "--nvme-pci",
            img.to_str().unwrap(),
            "--put",
            &format!("{}:/pollux", bin.display()),
        ],
        600,
        &script(),
    );
    let report = || out.report("(inside the guest; see the guest output)");
    assert!(out.status.success(), "guest script failed:\n{}", report());
    let m = |k: &str| {
        out.marker(k)
            .unwrap_or_else(|| panic!("missing {k}:\n{}", report()))
            .to_owned()
    };
    let bdf = m("BDF");

    // The start-up error: status 2, one line, naming the device.
    assert_eq!(m("START_STATUS"), "2", "{}", report());
    assert_eq!(m("START_LINES"), "1", "{}", report());
    let err = m("START_ERR");
    assert!(
        err.starts_with(&format!(
            "pollux: nvme {bdf}: bound to no driver, not vfio-pci"
        )),
        "{}",
        report()
    );
    // The run-time error: a JSON-RPC error with SPDK's code, and the daemon
    // still answers.
    assert_eq!(m("RPC_ATTACH_STATUS"), "1", "{}", report());
    let rpc_err = m("RPC_ATTACH_ERR");
    assert!(
        rpc_err.contains("\"code\":-19") && rpc_err.contains(&format!("nvme {bdf}: bound to")),
        "{}",
        report()
    );
    assert!(out.stdout.contains("RPC_ALIVE"), "{}", report());
    assert_eq!(m("ATTACH"), r#"["Nvme0n1"]"#, "{}", report());
    let ctrls = m("CTRLS");
    assert!(
        ctrls.contains(r#""name":"Nvme0""#)
            && ctrls.contains(&format!(r#""traddr":"{bdf}""#))
            && ctrls.contains(r#""trtype":"PCIe""#),
        "{}",
        report()
    );
    assert_eq!(m("DETACH_RT"), "true", "{}", report());
    assert!(out.stdout.contains("RT_EXIT_OK"), "{}", report());

    // The data path, checked by the initiator...
    let first = |k: &str| {
        m(k).split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(first("PAT_MD5"), first("READ_MD5"), "{}", report());
    assert_eq!(first("ZERO_MD5"), first("ZEROS_MD5"), "{}", report());
    for bs in ["4k", "64k", "128k"] {
        assert!(
            out.stdout.contains(&format!("FIO_OK {bs}")),
            "fio {bs}:\n{}",
            report()
        );
    }
    // ...and by the SSD's backing file on the host.
    assert_eq!(host_md5(&img, 1024, 1024), first("PAT_MD5"), "{}", report());
    assert_eq!(
        host_md5(&img, 4096, 2048),
        first("ZEROS_MD5"),
        "{}",
        report()
    );

    let metric = |name: &str| -> f64 {
        out.stdout
            .lines()
            .filter_map(|l| l.strip_prefix("METRIC "))
            .find(|l| l.starts_with(&format!("{name}{{controller=\"nvme0\"}}")))
            .and_then(|l| l.split_whitespace().last()?.parse().ok())
            .unwrap_or_else(|| panic!("no {name}:\n{}", report()))
    };
    assert!(
        metric("pollux_nvme_commands_total") > 1000.0,
        "{}",
        report()
    );
    assert_eq!(metric("pollux_nvme_errors_total"), 0.0, "{}", report());
    assert_eq!(
        metric("pollux_nvme_queue_slots_in_use"),
        0.0,
        "{}",
        report()
    );
    let saved = m("SAVED");
    assert!(
        saved.contains(r#""name":"nvme0""#)
            && saved.contains(&format!(r#""traddr":"{bdf}""#))
            && saved.contains(r#""trtype":"PCIe""#)
            && saved.contains(r#""io_queue_size":64"#),
        "{}",
        report()
    );
    let get = m("GET_CTRL");
    assert!(get.contains(r#""name":"nvme0""#) && get.contains(r#""bdevs":["nvme0n1"]"#));
    assert_eq!(m("BUSY_STATUS"), "1", "{}", report());
    assert!(m("BUSY_ERR").contains("\"code\":-16"), "{}", report());
    assert!(out.stdout.contains("EXIT_OK"), "{}", report());
    assert_eq!(m("SHUTDOWN_LOGGED"), "1", "{}", report());
}

/// rpc.py's bdev_nvme methods against a host without the device: the
/// attach error names it, and the daemon keeps serving.
#[test]
fn rpc_py_attach_errors_and_listing() {
    let d = Daemon::builder().empty_target("[0]").start();
    let rpc = d.spdk();
    let err = rpc.fails(&[
        "bdev_nvme_attach_controller",
        "-b",
        "Nvme0",
        "-t",
        "pcie",
        "-a",
        "ffff:ff:1f.7",
    ]);
    assert!(
        err.contains("nvme ffff:ff:1f.7: no such PCI device"),
        "{err}"
    );
    let err = rpc.fails(&[
        "bdev_nvme_attach_controller",
        "-b",
        "Nvme0",
        "-t",
        "tcp",
        "-a",
        "127.0.0.1",
        "-s",
        "4420",
        "-n",
        "nqn.x",
    ]);
    assert!(err.contains("trtype"), "{err}");
    let err = rpc.fails(&[
        "bdev_nvme_attach_controller",
        "-b",
        "N",
        "-t",
        "pcie",
        "-a",
        "00:02.0",
    ]);
    assert!(err.contains("not a PCI address"), "{err}");
    assert_eq!(
        rpc.run(&["bdev_nvme_get_controllers"]),
        serde_json::json!([])
    );
    let err = rpc.fails(&["bdev_nvme_get_controllers", "-n", "Nvme0"]);
    assert!(err.contains("No such device"), "{err}");
    let err = rpc.fails(&["bdev_nvme_detach_controller", "Nvme0"]);
    assert!(err.contains("No such device"), "{err}");
    // Still serving.
    assert_eq!(rpc.run(&["bdev_get_bdevs"]), serde_json::json!([]));
}

/// At start, a device that cannot be attached is one line and status 2.
#[test]
fn start_with_a_missing_device_exits_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("p.toml");
    std::fs::write(
        &cfg,
        "[[bdev]]\nname = \"nvme0\"\nkind = \"nvme\"\npci = \"ffff:ff:1f.7\"\n",
    )
    .unwrap();
    let out = support::pollux()
        .arg("--config")
        .arg(&cfg)
        .env("POLLUX_LOG", "off")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("pollux: nvme ffff:ff:1f.7: no such PCI device"),
        "{err}"
    );
}
