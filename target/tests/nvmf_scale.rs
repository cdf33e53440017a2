//! Issue 13, "Scale": 256 subsystems and 1,000 namespaces on one target,
//! built with SPDK's rpc.py client library, seen by the Linux kernel
//! initiator in a guest: `nvme discover` lists every subsystem (the
//! discovery log page is read in pieces by offset), and lists the 1,000
//! namespaces of one subsystem (`nvme list`) and reads the last one. The
//! 999 namespaces after the first are added while a host (our initiator)
//! is connected to that subsystem. (Linux, connected meanwhile, rescans
//! and re-identifies every namespace on each change notice: under TCG
//! that alone took minutes, so the guest connects afterwards.) The same guest runs
//! nvme-cli's `nvme compare` (NVM Compare, opcode 05h) against the first
//! namespace, a null bdev that reads as zeroes: equal data succeeds, other
//! data gets Compare Failure.

mod support;

use pollux_nvme::host;
use serde_json::json;
use support::{free_port, Daemon, VmClient};

const SUBSYSTEMS: usize = 256;
const NAMESPACES: usize = 1000;
/// The subsystem with the namespaces; the others are `cnode1` and on.
const BIG: &str = "nqn.2016-06.io.spdk:cnode0";

/// Runs `body` (Python, `c` a connected `JSONRPCClient`, `port` and `big`
/// given) through SPDK's client library; its stdout.
fn python(rpc: &support::SpdkRpc, body: &str, port: u16) -> String {
    let out = rpc.python(
        &format!("port = sys.argv[2]\nbig = sys.argv[3]\n{body}"),
        &[&port.to_string(), BIG],
    );
    assert!(
        out.status.success(),
        "rpc client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn linux_discovers_256_subsystems_and_lists_1000_namespaces() {
    let vm = VmClient::find();
    let d = Daemon::builder().empty_target("[0, 1]").start();
    let rpc = d.spdk();
    let port = free_port();

    // Every subsystem listens on the one port; the big one has room for
    // all namespaces (NN) and its first namespace before the host comes.
    python(
        &rpc,
        &format!(
            "c.call('nvmf_create_transport', {{'trtype': 'TCP'}})\n\
             for i in range({SUBSYSTEMS}):\n\
             \x20   nqn = 'nqn.2016-06.io.spdk:cnode%d' % i\n\
             \x20   c.call('nvmf_create_subsystem', {{'nqn': nqn, 'allow_any_host': True,\n\
             \x20          'max_namespaces': {NAMESPACES}}})\n\
             \x20   c.call('nvmf_subsystem_add_listener', {{'nqn': nqn, 'listen_address':\n\
             \x20          {{'trtype': 'TCP', 'adrfam': 'IPv4', 'traddr': '127.0.0.1', 'trsvcid': port}}}})\n\
             c.call('bdev_null_create', {{'name': 'Null1', 'num_blocks': 2048, 'block_size': 512}})\n\
             c.call('nvmf_subsystem_add_ns', {{'nqn': big, 'namespace': {{'bdev_name': 'Null1'}}}})\n"
        ),
        port,
    );

    // A host connected to the big subsystem (admin and one I/O queue)
    // while the other 999 namespaces are added.
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut host = host::Controller::connect(host::HostConfig::new(addr, BIG)).unwrap();
    host.set_num_queues(1).unwrap();
    let queue = host.io_queue(1, 32).unwrap();
    let took = python(
        &rpc,
        &format!(
            "import time\n\
             t = time.monotonic()\n\
             for i in range(2, {NAMESPACES} + 1):\n\
             \x20   c.call('bdev_null_create', {{'name': 'Null%d' % i, 'num_blocks': 2048, 'block_size': 512}})\n\
             \x20   c.call('nvmf_subsystem_add_ns', {{'nqn': big, 'namespace': {{'bdev_name': 'Null%d' % i}}}})\n\
             print('%.3f' % (time.monotonic() - t))\n"
        ),
        port,
    );
    // Reported, not asserted (timings belong to BENCHMARKS.md).
    eprintln!(
        "{} namespaces added with a host connected in {} s",
        NAMESPACES - 1,
        took.trim()
    );

    drop(queue);
    host.shutdown().unwrap();

    let script = format!(
        "set -e\n\
         nvme discover -t tcp -a 10.0.2.2 -s {port} > /tmp/disc.txt 2>&1 || {{ cat /tmp/disc.txt; exit 1; }}\n\
         echo DISCOVERED $(grep -c '^subnqn:' /tmp/disc.txt)\n\
         echo LAST_ENTRY $(grep -c 'subnqn: *nqn.2016-06.io.spdk:cnode{last}$' /tmp/disc.txt)\n\
         nvme connect -t tcp -a 10.0.2.2 -s {port} -n {BIG}\n\
         i=0; while [ ! -b /dev/nvme0n1 ]; do i=$((i+1)); [ $i -gt 300 ] && {{ echo NO_NS1; exit 1; }}; sleep 0.1; done\n\
         echo CONNECTED at $(cut -d' ' -f1 /proc/uptime) s\n\
         dd if=/dev/zero of=/tmp/zero bs=4096 count=1 2>/dev/null\n\
         ( printf x; dd if=/dev/zero bs=4095 count=1 2>/dev/null ) > /tmp/other\n\
         nvme compare /dev/nvme0n1 -s 0 -c 7 -z 4096 -d /tmp/zero && echo COMPARE_EQUAL_OK\n\
         if nvme compare /dev/nvme0n1 -s 0 -c 7 -z 4096 -d /tmp/other > /tmp/cmp.txt 2>&1; then echo COMPARE_DIFF_PASSED; \
         else echo COMPARE_DIFF_REFUSED $(cat /tmp/cmp.txt); fi\n\
         i=0; while [ $(ls /dev | grep -c '^nvme0n[0-9]*$') -lt {NAMESPACES} ]; do\n\
         \x20 i=$((i+1)); [ $i -gt 1200 ] && {{ echo ONLY $(ls /dev | grep -c '^nvme0n[0-9]*$'); exit 1; }}; sleep 0.5; done\n\
         echo ALL_DEVICES at $(cut -d' ' -f1 /proc/uptime) s\n\
         echo LISTED $(nvme list | grep -c '/dev/nvme0n')\n\
         echo LIST_DONE at $(cut -d' ' -f1 /proc/uptime) s\n\
         dd if=/dev/nvme0n{NAMESPACES} of=/dev/null bs=4k count=16 iflag=direct 2>/dev/null && echo READ_LAST\n\
         echo ALL_OK at $(cut -d' ' -f1 /proc/uptime) s\n",
        last = SUBSYSTEMS - 1,
    );
    // No disconnect at the end: the guest is thrown away, and removing
    // 1,000 block devices took Linux three minutes under TCG.
    let out = vm.run(&[], 900, &script);
    for m in ["CONNECTED", "ALL_DEVICES", "LIST_DONE", "ALL_OK"] {
        eprintln!("guest: {m} {}", out.marker(m).unwrap_or("?"));
    }
    assert!(
        out.status.success(),
        "guest script failed:\n{}",
        out.report(&d.log())
    );
    let report = || out.report(&d.log());
    assert_eq!(
        out.marker("DISCOVERED"),
        Some(SUBSYSTEMS.to_string().as_str()),
        "{}",
        report()
    );
    assert_eq!(out.marker("LAST_ENTRY"), Some("1"), "{}", report());
    assert_eq!(
        out.marker("LISTED"),
        Some(NAMESPACES.to_string().as_str()),
        "{}",
        report()
    );
    // nvme-cli names the status and its field: SCT 2h, SC 85h, DNR.
    let refused = out.marker("COMPARE_DIFF_REFUSED").unwrap_or_default();
    assert!(
        refused.contains("Compare Failure") && refused.contains("(0x4285)"),
        "miscompare not reported as Compare Failure:\n{}",
        report()
    );
    for m in ["CONNECTED", "COMPARE_EQUAL_OK", "READ_LAST", "ALL_OK"] {
        assert!(out.stdout.contains(m), "{m} missing:\n{}", report());
    }
    let subs = rpc.call("nvmf_get_subsystems", json!({}));
    // The discovery subsystem is listed first, as SPDK does.
    assert_eq!(subs.as_array().unwrap().len(), SUBSYSTEMS + 1);
    assert_eq!(
        subs[1]["namespaces"].as_array().unwrap().len(),
        NAMESPACES,
        "{}",
        subs[1]["nqn"]
    );
}
