//! Issue 13, ANA: the Linux kernel's native NVMe multipath over two
//! listeners of one subsystem built with SPDK's rpc.py (`--ana-reporting`,
//! the second listener added `non_optimized`). The guest (one boot, see
//! `../shared/vm/vm-client`) connects through both ports, so
//! `/dev/nvme0n1` has two paths, and runs fio verify in a loop while the
//! host makes the optimized listener inaccessible and later optimized
//! again with `nvmf_subsystem_listener_set_ana_state`. The guest follows
//! each change (ANA Change AEN, ANA log page) in its path `ana_state`
//! files, I/O moves to the non-optimized path and back, and no fio run
//! fails.

mod support;

use std::thread;

use serde_json::json;
use support::nvmf_guest::{guest_signal_fn, wait_guest_signal};
use support::{free_port, Daemon, VmClient};

const NQN: &str = "nqn.2016-06.io.spdk:ana";

/// The guest: connect through both ports, name the two path devices by
/// port, run fio verify in the background and report each ANA state it
/// sees with the per-path I/O counters of that moment.
fn guest_script(p1: u16, p2: u16) -> String {
    let signal = guest_signal_fn(p1);
    format!(
        r#"
set -e
nvme connect -t tcp -a 10.0.2.2 -s {p1} -n {NQN} --keep-alive-tmo=30
nvme connect -t tcp -a 10.0.2.2 -s {p2} -n {NQN} --keep-alive-tmo=30
i=0; while [ ! -b /dev/nvme0n1 ]; do i=$((i+1)); [ $i -gt 100 ] && {{ echo NO_DEVICE; exit 1; }}; sleep 0.1; done
path_of() {{
  for c in /sys/block/nvme0c*n1; do
    grep -q "trsvcid=$1" $c/device/address && {{ basename $c; return; }}
  done
}}
# The head node can appear before the second path's device does.
i=0
while P1=$(path_of {p1}); P2=$(path_of {p2}); [ -z "$P1" ] || [ -z "$P2" ]; do
  i=$((i+1)); [ $i -gt 300 ] && {{ echo NO_PATHS; ls /sys/block; exit 1; }}; sleep 0.1
done
state() {{ cat /sys/block/$1/ana_state; }}
# Completed I/Os of a path: reads + writes of its stat file.
ios() {{ set -- $(cat /sys/block/$1/stat); echo $(($1 + $5)); }}
echo PATHS $P1 $P2
echo INITIAL $(state $P1) $(state $P2)
(
  n=0
  while [ ! -f /tmp/stop ]; do
    n=$((n+1))
    fio --name=v$n --filename=/dev/nvme0n1 --rw=randwrite --bs=4k --size=4m \
        --offset=$(( (n % 8) * 4 ))m --iodepth=8 --ioengine=libaio --direct=1 \
        --verify=crc32c --do_verify=1 --verify_fatal=1 --randrepeat=0 \
        --output-format=terse > /tmp/fio.$n 2>&1 || {{ cat /tmp/fio.$n; echo FIO_FAILED $n; }}
  done
  echo FIO_RUNS $n
) > /tmp/fio.log 2>&1 &
{signal}sleep 2; signal
wait_state() {{
  i=0
  while [ "$(state $1)" != "$2" ]; do
    i=$((i+1)); [ $i -gt 1200 ] && {{ echo TIMEOUT $1 $2 $(state $1); return 1; }}
    sleep 0.1
  done
}}
wait_state $P1 inaccessible
a1=$(ios $P1); a2=$(ios $P2); sleep 4; b1=$(ios $P1); b2=$(ios $P2)
echo INACCESSIBLE $(state $P1) $(state $P2) $((b1 - a1)) $((b2 - a2))
signal
wait_state $P1 optimized
sleep 1
a1=$(ios $P1); a2=$(ios $P2); sleep 4; b1=$(ios $P1); b2=$(ios $P2)
echo OPTIMIZED $(state $P1) $(state $P2) $((b1 - a1)) $((b2 - a2))
touch /tmp/stop; wait
cat /tmp/fio.log
grep -q FIO_FAILED /tmp/fio.log && exit 1
nvme disconnect -n {NQN}
echo ALL_OK
"#
    )
}

#[test]
fn linux_multipath_follows_listener_ana_states() {
    let vm = VmClient::find();
    let daemon = Daemon::builder().empty_target("[0, 1]").start();
    let rpc = daemon.spdk();
    let (p1, p2) = (free_port(), free_port());
    let s1 = p1.to_string();
    rpc.run(&["bdev_malloc_create", "-b", "m0", "64", "512"]);
    rpc.run(&["nvmf_create_subsystem", NQN, "-a", "-r"]);
    rpc.run(&["nvmf_subsystem_add_ns", NQN, "m0"]);
    rpc.add_tcp_listener(NQN, p1, &[]);
    rpc.add_tcp_listener(NQN, p2, &["-n", "non_optimized"]);
    let subs = rpc.run(&["nvmf_get_subsystems", NQN]);
    assert_eq!(subs[0]["ana_reporting"], json!(true), "{subs}");
    assert_eq!(subs[0]["namespaces"][0]["anagrpid"], json!(1), "{subs}");

    let script = guest_script(p1, p2);
    let guest = thread::spawn(move || vm.run(&["--cpus", "2"], 600, &script));

    let wait_signal = |n| wait_guest_signal(&daemon, &guest, n);
    // Both paths up and fio under way.
    wait_signal(1);
    let ctrls = rpc.run(&["nvmf_subsystem_get_controllers", NQN]);
    assert_eq!(ctrls.as_array().map(Vec::len), Some(2), "{ctrls}");
    let set = |state: &str| {
        rpc.run(&[
            "nvmf_subsystem_listener_set_ana_state",
            NQN,
            "-t",
            "tcp",
            "-a",
            "127.0.0.1",
            "-s",
            &s1,
            "-n",
            state,
        ])
    };
    set("inaccessible");
    // The guest saw it and sampled the counters.
    wait_signal(2);
    set("optimized");
    let out = guest.join().unwrap();
    let report = || out.report(&daemon.log());
    assert!(out.status.success(), "guest failed:\n{}", report());
    assert!(out.stdout.contains("ALL_OK"), "{}", report());
    assert_eq!(
        out.marker("INITIAL"),
        Some("optimized non-optimized"),
        "{}",
        report()
    );
    let fields = |key: &str| -> Vec<String> {
        out.marker(key)
            .unwrap_or_else(|| panic!("no {key}:\n{}", report()))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    let ios = |v: &[String], i: usize| v[i].parse::<u64>().unwrap();
    // Inaccessible: nothing completes on that path, the non-optimized one
    // serves.
    let inacc = fields("INACCESSIBLE");
    assert_eq!(
        inacc[..2],
        ["inaccessible", "non-optimized"],
        "{}",
        report()
    );
    assert_eq!(ios(&inacc, 2), 0, "{}", report());
    assert!(ios(&inacc, 3) > 0, "{}", report());
    // Optimized again: I/O is back on it, off the non-optimized path.
    let opt = fields("OPTIMIZED");
    assert_eq!(opt[..2], ["optimized", "non-optimized"], "{}", report());
    assert!(ios(&opt, 2) > 0, "{}", report());
    assert_eq!(ios(&opt, 3), 0, "{}", report());
    let runs: u64 = out
        .marker("FIO_RUNS")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(runs >= 3, "fio verify ran {runs} times:\n{}", report());
}
