//! The NVMe/TCP twin of vhost_sessions.rs: Linux kernel initiators (one
//! guest from `../shared/vm/vm-client`) come and go while the graph under
//! their namespace changes. Two subsystems, built over rpc.py, export one
//! bdev: the guest stays connected to `stay` with fio verify running all
//! the while, and connects to `cycle`, runs a short fio verify and
//! disconnects, round after round. Meanwhile the host, over rpc.py and its
//! `JSONRPCClient`, inserts and removes delay, error (no injection), QoS
//! and passthru filters above the exported node, mirrors it to a file bdev
//! and pivots (both exports move) with filters under the mirror, grows
//! the file and rescans, does the filters again above the new node with a
//! grow each round, deletes the old node and grows the file once more,
//! which is the guest's sign to finish. Every other cycle connect asks
//! for header and data digests. Every connect and
//! every fio run must succeed, the daemon must not panic, and the file
//! must hold what the guest reads back.
//!
//! The test never skips: if the VM cannot run it fails and says why.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{free_port, md5_of, sparse_file, Daemon, SpdkRpc, VmClient};

const CYCLE: &str = "nqn.2016-06.io.spdk:cycle";
const STAY: &str = "nqn.2016-06.io.spdk:stay";
const MIB: u64 = 1 << 20;
/// The malloc bdev and the mirror's file at first; the file then grows to
/// `GROWN_MB`, by 1 MiB a filter round above it, and last to `FINAL_MB`.
const DISK_MB: u64 = 32;
const GROWN_MB: u64 = 48;
const FINAL_MB: u64 = GROWN_MB + FILTER_ROUNDS as u64 + 8;
/// Longest pause after each graph change, in seconds: the guest's I/O,
/// connects and disconnects fall at every point of each change.
const MAX_PAUSE_S: f64 = 0.03;
/// Rounds of the filter changes (10 changes a round) above each node: at
/// 15 ms a pause on average plus the call, about 10 s each (measured:
/// 850 changes in 20 s), in which the guest's cycle host comes and goes
/// four or five times (a round takes it about 2.5 s under TCG).
const FILTER_ROUNDS: usize = 40;

/// The guest: `stay` connected with fio verify in a loop on its region
/// (16 to 32 MiB); rounds of connect `cycle`, a verified write in the
/// first 8 MiB (fio's 1 MiB of 16 KiB writes, beyond in-capsule data, so
/// R2T too, with digests; or dd's 256 KiB of 64 KiB writes, read back and
/// compared, without), disconnect,
/// until the stay namespace has its final size, and one round more. Then
/// the MD5 of the first 32 MiB, as read through `stay`.
fn guest_script(port: u16) -> String {
    let final_sectors = FINAL_MB * MIB / 512;
    format!(
        r#"
# The head node of subsystem $1's namespace, if connected.
dev_of() {{
  for d in /sys/block/nvme*n1; do
    # Quoted, and only a match of the glob: devices come and go while
    # this runs (an unmatched pattern that matches by the next line would
    # come back as a name with a star).
    [ -e "$d" ] || continue
    b="${{d##*/}}"; case "$b" in *c*) continue;; esac
    [ "$(cat "$d/device/subsysnqn" 2>/dev/null)" = "$1" ] && {{ echo "$b"; return; }}
  done
}}
wait_dev() {{
  i=0; while D=$(dev_of $1); [ -z "$D" ]; do
    i=$((i+1)); [ $i -gt 300 ] && {{ echo NO_DEVICE $1; nvme list; return 1; }}; sleep 0.1
  done; echo $D
}}
conn() {{ nvme connect -t tcp -a 10.0.2.2 -s {port} -n $1 --keep-alive-tmo=30 $2 > /tmp/conn.out 2>&1; }}
conn {STAY} || {{ cat /tmp/conn.out; echo CONNECT_FAILED stay; exit 1; }}
S=$(wait_dev {STAY}) || {{ echo "$S"; exit 1; }}
(
  n=0
  while [ ! -f /tmp/stop ]; do
    n=$((n+1))
    fio --name=stay$n --filename=/dev/$S --rw=randwrite --bs=4k --offset=16m --size=16m \
        --iodepth=8 --ioengine=libaio --direct=1 --verify=crc32c --verify_backlog=256 \
        --do_verify=1 --verify_fatal=1 --time_based --runtime=3 --randrepeat=0 \
        --output-format=terse > /tmp/stay.out 2>&1 || {{ cat /tmp/stay.out; echo FIO_FAILED stay$n; }}
  done
  echo STAY_RUNS $n
) > /tmp/stay.log 2>&1 &
r=0; last=0
while :; do
  [ -e /sys/block/$S ] || {{ echo STAY_GONE; break; }}
  [ $(cat /sys/block/$S/size) -eq {final_sectors} ] && last=1
  r=$((r+1))
  # Header and data digests on every other connect.
  dg=; [ $((r % 2)) = 1 ] && dg="--hdr-digest --data-digest"
  if conn {CYCLE} "$dg"; then
    echo ROUND $r $(cut -d' ' -f1 /proc/uptime)
    C=$(wait_dev {CYCLE}) || {{ echo "$C"; exit 1; }}
    if [ -n "$dg" ]; then
      fio --name=cycle$r --filename=/dev/$C --rw=randwrite --bs=16k --offset=$(( r % 8 ))m \
          --size=1m --iodepth=8 --ioengine=libaio --direct=1 --verify=crc32c --do_verify=1 \
          --verify_fatal=1 --randrepeat=0 --output-format=terse > /tmp/cycle.out 2>&1 \
        || {{ cat /tmp/cycle.out; echo FIO_FAILED cycle$r; }}
    else
      # fio takes a second to start under TCG: here 256 KiB of 64 KiB
      # writes read back with dd, so that more hosts come and go.
      dd if=/dev/urandom of=/tmp/w bs=64k count=4 2>/dev/null
      dd if=/tmp/w of=/dev/$C bs=64k seek=$(( (r % 8) * 16 )) oflag=direct 2>/dev/null
      dd if=/dev/$C of=/tmp/r bs=64k skip=$(( (r % 8) * 16 )) count=4 iflag=direct 2>/dev/null
      [ "$(md5sum < /tmp/w)" = "$(md5sum < /tmp/r)" ] || echo VERIFY_FAILED dd$r
    fi
    nvme disconnect -n {CYCLE} > /dev/null || echo DISCONNECT_FAILED $r
    i=0; while [ -n "$(dev_of {CYCLE})" ]; do
      i=$((i+1)); [ $i -gt 300 ] && {{ echo STILL_CONNECTED $r; exit 1; }}; sleep 0.1
    done
  else
    cat /tmp/conn.out; echo CONNECT_FAILED cycle$r
  fi
  [ $last = 1 ] && break
  [ $r -ge 300 ] && {{ echo NO_FINAL_SIZE $(cat /sys/block/$S/size); break; }}
done
echo ROUNDS $r
touch /tmp/stop; wait
cat /tmp/stay.log
echo STAY_SIZE $(cat /sys/block/$S/size)
echo MD5 $(dd if=/dev/$S bs=1M count={DISK_MB} iflag=direct 2>/dev/null | md5sum)
nvme disconnect -n {STAY} > /dev/null
echo ALL_OK
"#
    )
}

/// How many controllers of `cycle` the daemon has made so far.
fn cycle_connects(d: &Daemon) -> usize {
    d.log()
        .lines()
        .filter(|l| l.contains("controller created") && l.contains(CYCLE))
        .count()
}

fn writes(rpc: &SpdkRpc, bdev: &str) -> u64 {
    rpc.call("bdev_get_iostat", json!({"name": bdev}))["bdevs"][0]["num_write_ops"]
        .as_u64()
        .unwrap_or(0)
}

/// The host's changes, on one connection of SPDK's `JSONRPCClient` (a
/// process per call would space them seconds apart on a loaded machine):
/// `rounds` rounds of each filter kind above Malloc0, alone and stacked
/// (QoS under a passthru, the lower one removed first); a mirror to AIO1
/// and its pivot, with a passthru and a QoS limit put under the mirror
/// while it copies; the file grown to `grown` MiB and rescanned; the
/// filters again above AIO1, the file 1 MiB larger each round; Malloc0
/// deleted; the file grown to `final` MiB. Pauses are uniform in
/// [0, max_pause], seeded so that every run draws the same sequence. Any
/// JSON-RPC error raises.
const CHURN_SCRIPT: &str = r#"
import os, random, time
path, rounds, max_pause = sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
grown, final = int(sys.argv[5]), int(sys.argv[6])
rnd = random.Random(12)
changes = []
def step(what, method, params):
    c.call(method, params)
    changes.append(what)
    time.sleep(rnd.uniform(0, max_pause))
def ins(node, name, kind, params=None):
    f = {"name": name, "kind": kind}
    if params:
        f["params"] = params
    step(f"+{kind}", "pollux_graph_insert_filter", {"node": node, "filter": f})
def rm(name):
    step(f"-{name}", "pollux_graph_remove_filter", {"name": name})
def qos(node, ios):
    step(f"qos {ios}", "bdev_set_qos_limit", {"name": node, "rw_ios_per_sec": ios})
DELAY = {"avg_read_latency": 200, "p99_read_latency": 2000,
         "avg_write_latency": 200, "p99_write_latency": 2000}
def filters(node, grow_from=None):
    for i in range(rounds):
        ins(node, "churn_delay", "delay", DELAY); rm("churn_delay")
        ins(node, "churn_error", "error"); rm("churn_error")
        ins(node, "churn_pt", "passthru"); rm("churn_pt")
        # A limit the guest reaches (TCG runs a few thousand IOPS), so
        # requests wait in the buckets when it comes and goes.
        qos(node, 1000); ins(node, "churn_pt", "passthru"); qos(node, 0); rm("churn_pt")
        if grow_from:
            grow(grow_from + 1 + i)
def wait_job(state):
    for _ in range(1200):
        j = [j for j in c.call("pollux_job_list") if j["job"] == "pivot"][0]
        if j["state"] == state:
            return
        time.sleep(0.1)
    raise Exception(f"the mirror never got {state}: {j}")
def grow(mb):
    os.truncate(path, mb << 20)
    step(f"grow {mb}", "bdev_aio_rescan", {"name": "AIO1"})
t0 = time.time()
filters("Malloc0")
step("mirror", "pollux_mirror_start",
     {"job": "pivot", "source": "Malloc0", "target": "AIO1", "granularity": 65536})
# Filters under the mirror while it copies (they stay with Malloc0 at
# the pivot), the QoS one holding requests back when the exports move.
ins("Malloc0", "churn_pt", "passthru")
qos("Malloc0", 1000)
wait_job("ready")
step("pivot", "pollux_job_complete", {"job": "pivot"})
wait_job("completed")
qos("Malloc0", 0)
rm("churn_pt")
subs = c.call("nvmf_get_subsystems")
ns = [n["bdev_name"] for s in subs for n in s.get("namespaces", [])]
assert ns == ["AIO1", "AIO1"], subs
grow(grown)
filters("AIO1", grown)
step("delete Malloc0", "bdev_malloc_delete", {"name": "Malloc0"})
grow(final)
print(json.dumps({"changes": changes, "seconds": time.time() - t0}))
"#;

#[test]
fn linux_hosts_come_and_go_while_the_graph_changes() {
    let vm = VmClient::find();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("aio1.img");
    sparse_file(&file, DISK_MB * MIB);
    let mut d = Daemon::builder().in_dir(dir).empty_target("[0, 1]").start();
    let port = free_port();
    let rpc = d.spdk();
    rpc.run(&["nvmf_create_transport", "-t", "TCP"]);
    rpc.run(&[
        "bdev_malloc_create",
        "-b",
        "Malloc0",
        &DISK_MB.to_string(),
        "512",
    ]);
    rpc.run(&["bdev_aio_create", file.to_str().unwrap(), "AIO1", "512"]);
    rpc.export_tcp(STAY, "Malloc0", port);
    rpc.export_tcp(CYCLE, "Malloc0", port);

    let script = guest_script(port);
    let guest = std::thread::spawn(move || vm.run(&["--cpus", "2"], 400, &script));

    // Begin once the stay host writes and a cycle host has come.
    let deadline = Instant::now() + Duration::from_secs(240);
    while writes(&rpc, "Malloc0") < 500 || cycle_connects(&d) == 0 {
        if guest.is_finished() || Instant::now() > deadline {
            let out = guest.join().unwrap();
            panic!("the guest never got going:\n{}", out.report(&d.log()));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let connects_before = cycle_connects(&d);
    let churn = rpc.python(
        CHURN_SCRIPT,
        &[
            file.to_str().unwrap(),
            &FILTER_ROUNDS.to_string(),
            &MAX_PAUSE_S.to_string(),
            &GROWN_MB.to_string(),
            &FINAL_MB.to_string(),
        ],
    );
    let connects_during = cycle_connects(&d) - connects_before;
    if !churn.status.success() {
        // Its stay device gone, the guest ends at once rather than at its
        // timeout.
        let _ = rpc.try_run(&["nvmf_delete_subsystem", STAY]);
        let out = guest.join().unwrap();
        panic!(
            "the graph changes failed: {}\n{}",
            String::from_utf8_lossy(&churn.stderr),
            out.report(&d.log())
        );
    }
    let summary: Value = serde_json::from_slice(&churn.stdout).unwrap();
    let changes = summary["changes"].as_array().map_or(0, Vec::len);

    let out = guest.join().unwrap();
    let plog = d.log();
    let report = || out.report(&plog);
    eprintln!(
        "{changes} graph changes in {:.1} s, {connects_during} cycle connects meanwhile; \
         guest rounds {:?}, stay fio runs {:?}",
        summary["seconds"].as_f64().unwrap_or(0.0),
        out.marker("ROUNDS"),
        out.marker("STAY_RUNS")
    );
    // Ten filter changes a round above each node and a grow a round above
    // AIO1; mirror, pivot and four filter changes under it, two grows and
    // a delete.
    assert_eq!(
        changes,
        2 * 10 * FILTER_ROUNDS + FILTER_ROUNDS + 9,
        "{summary}"
    );
    assert!(out.status.success(), "guest failed:\n{}", report());
    for bad in [
        "CONNECT_FAILED",
        "FIO_FAILED",
        "VERIFY_FAILED",
        "DISCONNECT_FAILED",
        "NO_FINAL_SIZE",
        "STAY_GONE",
    ] {
        assert!(!out.stdout.contains(bad), "{bad}:\n{}", report());
    }
    assert!(out.stdout.contains("ALL_OK"), "{}", report());
    // The changes overlapped hosts coming and going, and the stay host saw
    // the final size without reconnecting.
    assert!(
        connects_during >= 5,
        "only {connects_during} connects during the changes:\n{}",
        report()
    );
    let final_sectors = (FINAL_MB * MIB / 512).to_string();
    assert_eq!(
        out.marker("STAY_SIZE"),
        Some(final_sectors.as_str()),
        "{}",
        report()
    );
    let stay_runs: u64 = out
        .marker("STAY_RUNS")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(stay_runs >= 2, "{}", report());
    assert!(!plog.contains("panicked"), "{}", report());

    let status = d.stop();
    assert!(status.success(), "pollux exit: {status:?}\n{}", d.log());
    // After an orderly stop, the file holds what the guest read through
    // the pivoted exports.
    let data = std::fs::read(&file).unwrap();
    let host = md5_of(&data[..(DISK_MB * MIB) as usize]);
    let guest_md5 = out.marker("MD5").and_then(|s| s.split_whitespace().next());
    assert_eq!(guest_md5, Some(host.as_str()), "{}", report());
}
