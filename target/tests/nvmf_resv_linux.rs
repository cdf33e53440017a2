//! Issue 13, reservations: two Linux hosts (one guest connecting twice
//! with two host NQNs and host IDs, so `/dev/nvme0` is host A's controller
//! and `/dev/nvme1` host B's) use nvme-cli's `resv-register`,
//! `resv-acquire`, `resv-release` and `resv-report` on a namespace with a
//! ptpl file (`nvmf_subsystem_add_ns --ptpl-file` over rpc.py).
//! Conflicting I/O gets Reservation Conflict (status 83h), the holder and
//! registrants keep access as the type says, B preempts A (and A finds a
//! Registration Preempted page in its Reservation Notification log, read
//! with `nvme get-log --log-id=0x80`); then pollux is
//! restarted under the connected guest and, once Linux has reconnected,
//! the reservation is still there and still enforced.
//!
//! The guest connects through `/dev/nvme-fabrics` (nvme-cli 2.3 refuses a
//! second connection to one address even for another host NQN). I/O goes
//! through the controller character devices (nvme-cli's
//! `io-passthru` on `/dev/nvmeN`), so each host's commands take its own
//! controller rather than whichever path multipath picks.

mod support;

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{free_port, Daemon, SpdkRpc, VmClient};

const NQN: &str = "nqn.2016-06.io.spdk:resv";
const HOST_A: &str = "nqn.2014-08.org.nvmexpress:uuid:aaaaaaaa-0000-4000-8000-00000000000a";
const HOSTID_A: &str = "aaaaaaaa-0000-4000-8000-00000000000a";
const HOST_B: &str = "nqn.2014-08.org.nvmexpress:uuid:bbbbbbbb-0000-4000-8000-00000000000b";
const HOSTID_B: &str = "bbbbbbbb-0000-4000-8000-00000000000b";

/// A daemon exporting a 32 MiB malloc namespace with `ptpl` on `port`.
fn start(port: u16, ptpl: &Path) -> (Daemon, SpdkRpc) {
    let daemon = Daemon::builder().empty_target("[0]").start();
    let rpc = daemon.spdk();
    rpc.run(&["bdev_malloc_create", "-b", "m0", "32", "512"]);
    rpc.run(&["nvmf_create_subsystem", NQN, "-a"]);
    rpc.run(&[
        "nvmf_subsystem_add_ns",
        NQN,
        "m0",
        "-p",
        ptpl.to_str().unwrap(),
    ]);
    rpc.add_tcp_listener(NQN, port, &[]);
    (daemon, rpc)
}

fn guest_script(port: u16) -> String {
    format!(
        r#"
set -e
# The kernel's fabrics interface: nvme-cli 2.3 refuses a second
# connection to one address whatever the host NQN.
c() {{ echo "transport=tcp,traddr=10.0.2.2,trsvcid={port},nqn={NQN},hostnqn=$1,hostid=$2,reconnect_delay=1,keep_alive_tmo=30" > /dev/nvme-fabrics; }}
c {HOST_A} {HOSTID_A}
c {HOST_B} {HOSTID_B}
i=0; while [ ! -b /dev/nvme0n1 ]; do i=$((i+1)); [ $i -gt 100 ] && {{ echo NO_DEVICE; exit 1; }}; sleep 0.1; done
grep -q {HOST_A} /sys/class/nvme/nvme0/hostnqn && grep -q {HOST_B} /sys/class/nvme/nvme1/hostnqn
dd if=/dev/urandom of=/tmp/blk bs=512 count=1 2>/dev/null
# RESULT name: "ok", or the NVMe status nvme-cli printed.
io() {{
  if out=$(nvme io-passthru /dev/$1 -n 1 -o $2 -l 512 $3 2>&1); then echo "RESULT $4 ok"
  else echo "RESULT $4 $(echo "$out" | grep -io 'reservation.conflict\|status[^(]*([0-9a-fx]*)' | head -1)"; fi
}}
wr() {{ io $1 0x01 "-w -i /tmp/blk" $2; }}
rd() {{ io $1 0x02 "-r" $2; }}
report() {{ echo "REPORT $1 $(nvme resv-report /dev/$2 -n 1 --eds -o json | tr -d ' \n')"; }}
nvme resv-register /dev/nvme0 -n 1 --nrkey=0xa1 --rrega=0 --cptpl=3
nvme resv-register /dev/nvme1 -n 1 --nrkey=0xb1 --rrega=0
nvme resv-acquire /dev/nvme0 -n 1 --crkey=0xa1 --rtype=1 --racqa=0
report we nvme1
wr nvme0 we_holder_write
wr nvme1 we_other_write
rd nvme1 we_other_read
# A wrong key does not acquire, register or release.
if nvme resv-acquire /dev/nvme1 -n 1 --crkey=0xbad --rtype=1 --racqa=0 2>/dev/null; then echo RESULT bad_key ok; else echo RESULT bad_key refused; fi
# B preempts A into Exclusive Access: A is unregistered, B holds.
nvme resv-acquire /dev/nvme1 -n 1 --crkey=0xb1 --prkey=0xa1 --rtype=2 --racqa=1
report ea nvme0
# A was told (Reservation Notification log page, LID 80h).
echo "NOTICE_A $(nvme get-log /dev/nvme0 --log-id=0x80 --log-len=64 | grep '^0000:')"
rd nvme0 ea_other_read
rd nvme1 ea_holder_read
# B replaces its key: the host restarts pollux once that is in the file.
nvme resv-register /dev/nvme1 -n 1 --crkey=0xb1 --nrkey=0xb2 --rrega=2
echo PREEMPTED
# The host restarts pollux now: wait until B's controller is back.
i=0; while [ "$(cat /sys/class/nvme/nvme1/state)" = live ]; do i=$((i+1)); [ $i -gt 600 ] && {{ echo NO_RESTART; exit 1; }}; sleep 0.1; done
i=0; while [ "$(cat /sys/class/nvme/nvme1/state)" != live ] || [ "$(cat /sys/class/nvme/nvme0/state)" != live ]; do i=$((i+1)); [ $i -gt 1200 ] && {{ echo NO_RECONNECT; exit 1; }}; sleep 0.1; done
report restarted nvme0
rd nvme0 restarted_other_read
wr nvme1 restarted_holder_write
nvme resv-release /dev/nvme1 -n 1 --crkey=0xb2 --rtype=2 --rrela=0
rd nvme0 released_read
report released nvme1
nvme disconnect -n {NQN}
echo ALL_OK
"#
    )
}

#[test]
fn linux_hosts_reserve_conflict_and_the_reservation_survives_a_restart() {
    let vm = VmClient::find();
    let dir = tempfile::tempdir().unwrap();
    let ptpl = dir.path().join("ns1.ptpl.json");
    let port = free_port();
    let (mut daemon, rpc) = start(port, &ptpl);
    let subs = rpc.run(&["nvmf_get_subsystems", NQN]);
    assert_eq!(
        subs[0]["namespaces"][0]["ptpl_file"],
        json!(ptpl.display().to_string()),
        "{subs}"
    );

    let script = guest_script(port);
    let guest = thread::spawn(move || vm.run(&[], 600, &script));
    // B's preempt and its new key are in the ptpl file (Exclusive Access,
    // B alone): the guest is done with the first phase, restart.
    let start_wait = Instant::now();
    let file = loop {
        let text = std::fs::read_to_string(&ptpl).unwrap_or_default();
        if let Ok(v) = serde_json::from_str::<Value>(&text) {
            if v["rtype"] == json!(2) && v["registrants"][0]["rkey"] == json!(0xb2) {
                break v;
            }
        }
        if guest.is_finished() || start_wait.elapsed() > Duration::from_secs(400) {
            let out = guest.join().unwrap();
            panic!(
                "no preempt reached the ptpl file:\n{}",
                out.report(&daemon.log())
            );
        }
        thread::sleep(Duration::from_millis(100));
    };
    // SPDK's format: holder and registrants by host UUID.
    assert_eq!(file["ptpl"], json!(true), "{file}");
    // The reservation key follows the holder's replaced key.
    assert_eq!(file["crkey"], json!(0xb2), "{file}");
    assert_eq!(file["holder_uuid"], json!(HOSTID_B), "{file}");
    assert_eq!(
        file["registrants"],
        json!([{"rkey": 0xb2, "host_uuid": HOSTID_B}]),
        "{file}"
    );
    let first_log = daemon.log();
    assert!(daemon.stop().success(), "{first_log}");
    let (daemon, _rpc) = start(port, &ptpl);
    let out = guest.join().unwrap();
    let report = || {
        out.report(&format!(
            "{first_log}\n--- after restart ---\n{}",
            daemon.log()
        ))
    };
    assert!(out.status.success(), "guest failed:\n{}", report());
    assert!(out.stdout.contains("ALL_OK"), "{}", report());
    let result = |name: &str| {
        out.stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(&format!("RESULT {name} ")))
            .unwrap_or_else(|| panic!("no result {name}:\n{}", report()))
            .to_ascii_lowercase()
    };
    let conflict = |name: &str| {
        let r = result(name);
        assert!(
            r.contains("reservation") && r.contains("conflict") || r.contains("0x83"),
            "{name}: {r}\n{}",
            report()
        );
    };
    assert_eq!(result("we_holder_write"), "ok", "{}", report());
    conflict("we_other_write");
    assert_eq!(result("we_other_read"), "ok", "{}", report());
    assert_eq!(result("bad_key"), "refused", "{}", report());
    conflict("ea_other_read");
    assert_eq!(result("ea_holder_read"), "ok", "{}", report());
    conflict("restarted_other_read");
    assert_eq!(result("restarted_holder_write"), "ok", "{}", report());
    assert_eq!(result("released_read"), "ok", "{}", report());

    let report_json = |name: &str| -> Value {
        let text = out
            .marker(&format!("REPORT {name}"))
            .unwrap_or_else(|| panic!("no report {name}:\n{}", report()));
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{name}: {e}: {text}"))
    };
    let rtype = |v: &Value| v["rtype"].as_u64();
    let we = report_json("we");
    assert_eq!(rtype(&we), Some(1), "{we}");
    assert_eq!(we["regctl"].as_u64(), Some(2), "{we}");
    // A's notification: Registration Preempted (type 1) on NSID 1.
    let notice: Vec<&str> = out
        .marker("NOTICE_A")
        .unwrap_or_else(|| panic!("no notice:\n{}", report()))
        .split_whitespace()
        .collect();
    assert_eq!(
        (notice.get(9).copied(), notice.get(13).copied()),
        (Some("01"), Some("01")),
        "{notice:?}\n{}",
        report()
    );
    let ea = report_json("ea");
    assert_eq!(
        (rtype(&ea), ea["regctl"].as_u64()),
        (Some(2), Some(1)),
        "{ea}"
    );
    // After the restart: the same reservation, PTPL still on.
    let again = report_json("restarted");
    assert_eq!(
        (
            rtype(&again),
            again["regctl"].as_u64(),
            again["ptpls"].as_u64()
        ),
        (Some(2), Some(1), Some(1)),
        "{again}"
    );
    assert_eq!(rtype(&report_json("released")), Some(0));
}
