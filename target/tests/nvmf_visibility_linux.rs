//! Issue 13, namespace visibility: a namespace added over rpc.py with
//! `--no-auto-visible` is not there for a connected Linux host (not in its
//! active namespace list, no block device) until `nvmf_ns_add_host` gives
//! it to that host, when the kernel's rescan
//! (Namespace Attribute Changed AEN) makes `/dev/nvme0n2` appear; after
//! `nvmf_ns_remove_host` it goes again. Another host's controller never
//! sees it. One guest boot (`../shared/vm/vm-client`) connecting as two
//! hosts. (Linux refuses passthrough to an NSID it has no device for, so
//! I/O to a hidden NSID is checked in `io_cmd`'s unit tests.)

mod support;

use std::thread;

use serde_json::json;
use support::nvmf_guest::{guest_signal_fn, wait_guest_signal};
use support::{free_port, Daemon, VmClient};

const NQN: &str = "nqn.2016-06.io.spdk:vis";
const HOST_A: &str = "nqn.2014-08.org.nvmexpress:uuid:aaaaaaaa-1111-4000-8000-00000000000a";
const HOSTID_A: &str = "aaaaaaaa-1111-4000-8000-00000000000a";
const HOST_B: &str = "nqn.2014-08.org.nvmexpress:uuid:bbbbbbbb-1111-4000-8000-00000000000b";
const HOSTID_B: &str = "bbbbbbbb-1111-4000-8000-00000000000b";

fn guest_script(port: u16) -> String {
    let signal = guest_signal_fn(port);
    format!(
        r#"
set -e
# The kernel's fabrics interface: nvme-cli 2.3 refuses a second
# connection to one address whatever the host NQN.
c() {{ echo "transport=tcp,traddr=10.0.2.2,trsvcid={port},nqn={NQN},hostnqn=$1,hostid=$2,keep_alive_tmo=30" > /dev/nvme-fabrics; }}
c {HOST_A} {HOSTID_A}
c {HOST_B} {HOSTID_B}
i=0; while [ ! -b /dev/nvme0n1 ]; do i=$((i+1)); [ $i -gt 100 ] && {{ echo NO_DEVICE; exit 1; }}; sleep 0.1; done
# Each controller's active namespaces, as the target lists them.
lsns() {{ echo $(nvme list-ns /dev/$1 | sed 's/.*: *//'); }}
echo BEFORE_A $(lsns nvme0)
echo BEFORE_B $(lsns nvme1)
{signal}signal
i=0; while [ ! -b /dev/nvme0n2 ]; do i=$((i+1)); [ $i -gt 1200 ] && {{ echo NEVER_APPEARED; exit 1; }}; sleep 0.1; done
echo SHOWN_A $(lsns nvme0)
echo SHOWN_B $(lsns nvme1)
dd if=/dev/nvme0n2 of=/dev/null bs=4k count=16 iflag=direct 2>/dev/null && echo SHOWN_IO ok
signal
i=0; while [ -b /dev/nvme0n2 ]; do i=$((i+1)); [ $i -gt 1200 ] && {{ echo NEVER_WENT; exit 1; }}; sleep 0.1; done
echo HIDDEN_AGAIN_A $(lsns nvme0)
nvme disconnect -n {NQN}
echo ALL_OK
"#
    )
}

#[test]
fn hidden_namespaces_appear_for_the_host_they_are_given_to() {
    let vm = VmClient::find();
    let daemon = Daemon::builder().empty_target("[0]").start();
    let rpc = daemon.spdk();
    let port = free_port();
    rpc.run(&["bdev_malloc_create", "-b", "m0", "16", "512"]);
    rpc.run(&["bdev_malloc_create", "-b", "m1", "16", "512"]);
    rpc.run(&["nvmf_create_subsystem", NQN, "-a"]);
    rpc.run(&["nvmf_subsystem_add_ns", NQN, "m0"]);
    rpc.run(&["nvmf_subsystem_add_ns", NQN, "m1", "-n", "2", "-i"]);
    rpc.add_tcp_listener(NQN, port, &[]);
    let subs = rpc.run(&["nvmf_get_subsystems", NQN]);
    assert_eq!(
        subs[0]["namespaces"][1]["no_auto_visible"],
        json!(true),
        "{subs}"
    );
    // Unknown namespace and a host given twice are refused.
    rpc.fails(&["nvmf_ns_add_host", NQN, "9", HOST_A]);

    let script = guest_script(port);
    let guest = thread::spawn(move || vm.run(&[], 400, &script));
    let wait_signal = |n| wait_guest_signal(&daemon, &guest, n);
    // The guest listed the namespaces of both hosts.
    wait_signal(1);
    rpc.run(&["nvmf_ns_add_host", NQN, "2", HOST_A]);
    rpc.fails(&["nvmf_ns_add_host", NQN, "2", HOST_A]);
    // It saw the namespace appear and read it.
    wait_signal(2);
    rpc.run(&["nvmf_ns_remove_host", NQN, "2", HOST_A]);
    let out = guest.join().unwrap();
    let report = || out.report(&daemon.log());
    assert!(out.status.success(), "guest failed:\n{}", report());
    assert!(out.stdout.contains("ALL_OK"), "{}", report());
    assert_eq!(out.marker("BEFORE_A"), Some("0x1"), "{}", report());
    assert_eq!(out.marker("BEFORE_B"), Some("0x1"), "{}", report());
    assert_eq!(out.marker("SHOWN_A"), Some("0x1 0x2"), "{}", report());
    assert_eq!(out.marker("SHOWN_B"), Some("0x1"), "{}", report());
    assert_eq!(out.marker("SHOWN_IO"), Some("ok"), "{}", report());
    assert_eq!(out.marker("HIDDEN_AGAIN_A"), Some("0x1"), "{}", report());
}
