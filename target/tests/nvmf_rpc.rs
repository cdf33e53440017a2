//! Issue 5 §7, first bullet, for NVMe-oF: what SPDK's rpc.py sends builds
//! an NVMe/TCP target from an empty config (reactors only), hosts connect
//! and do I/O, namespaces come and go while they are connected, and
//! everything is torn down over RPC with nothing leaked.
//!
//! Two hosts: our own initiator (`pollux perf nvmf`, fast, no VM) and the
//! Linux kernel (`nvme-tcp` + nvme-cli + fio in a QEMU guest through
//! `../shared/vm/vm-client`, one boot), which must see the namespace added
//! over RPC appear (Namespace Attribute Changed AEN → rescan) and go.

mod support;

use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{free_port, pollux, scrape, tcp_listener, try_series, Daemon, SpdkRpc, VmClient};

const NQN: &str = "nqn.2016-06.io.spdk:cnode1";
const SERIAL: &str = "SPDK00000000000001";
const DISCOVERY: &str = "nqn.2014-08.org.nvmexpress.discovery";
/// The Linux guest's host NQN and host ID (given to `nvme connect`, so
/// `nvmf_subsystem_get_controllers` can be checked against them).
const GUEST_HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:8d1f0c3a-27b4-4d8e-9c51-0a6e2f3b7d19";
const GUEST_HOSTID: &str = "8d1f0c3a-27b4-4d8e-9c51-0a6e2f3b7d19";

/// The request states `pollux_nvmf_requests` reports: SPDK's
/// `TCP_REQUEST_STATE_*` names in lower case, `free` left out, and the
/// two of a fused compare-and-write pair.
const REQUEST_STATES: [&str; 11] = [
    "new",
    "need_buffer",
    "transferring_host_to_controller",
    "ready_to_execute",
    "fused_awaiting_partner",
    "awaiting_range_lock",
    "executing",
    "executed",
    "ready_to_complete",
    "transferring_controller_to_host",
    "completed",
];

/// A daemon with its SPDK client and metrics address.
struct Target {
    daemon: Daemon,
    rpc: SpdkRpc,
    metrics: SocketAddr,
}

impl Target {
    /// Pollux from an empty config: reactors only, metrics on a free port,
    /// a private RPC socket.
    fn start(extra: &[&str]) -> Target {
        let daemon = Daemon::builder()
            .config(
                "[reactors]\ncores = [0, 1]\nidle = \"adaptive\"\n\
                 [metrics]\nlisten = \"127.0.0.1:0\"\n",
            )
            .args(extra)
            .start();
        Target {
            rpc: daemon.spdk(),
            metrics: daemon.metrics_addr(),
            daemon,
        }
    }

    /// `pollux_nvmf_connections{subsystem="nqn"}`, 0 when absent.
    fn connections(&self, nqn: &str) -> f64 {
        let series = format!("pollux_nvmf_connections{{subsystem=\"{nqn}\"}}");
        try_series(&scrape(self.metrics), &series).unwrap_or(0.0)
    }

    /// `pollux_nvmf_requests{state}` for every state it reports (all but
    /// `free`), in one scrape.
    fn request_states(&self) -> Vec<(&'static str, f64)> {
        let text = scrape(self.metrics);
        REQUEST_STATES
            .iter()
            .map(|&st| {
                let series = format!("pollux_nvmf_requests{{state=\"{st}\"}}");
                let v = try_series(&text, &series)
                    .unwrap_or_else(|| panic!("{series} missing:\n{text}"));
                (st, v)
            })
            .collect()
    }

    /// Waits for `cond`, panicking with `what` and the log after `secs`.
    fn wait(&self, secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !cond() {
            assert!(
                Instant::now() < deadline,
                "timed out: {what}\n{}",
                self.daemon.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn build_target(&self, port: u16) {
        assert_eq!(
            self.rpc
                .run(&["bdev_malloc_create", "-b", "Malloc0", "64", "512"]),
            json!("Malloc0")
        );
        self.rpc.run(&["nvmf_create_transport", "-t", "TCP"]);
        self.rpc
            .run(&["nvmf_create_subsystem", NQN, "-a", "-s", SERIAL]);
        // rpc.py prints nothing for add_ns; the NSID is checked below.
        self.rpc.run(&["nvmf_subsystem_add_ns", NQN, "Malloc0"]);
        self.listener("nvmf_subsystem_add_listener", port);
    }

    /// Adds or removes (`method`) NQN's TCP listener on 127.0.0.1:`port`,
    /// with every option rpc.py takes for it.
    fn listener(&self, method: &str, port: u16) {
        let port = port.to_string();
        let mut args = vec![method, NQN];
        args.extend(tcp_listener(&port));
        args.extend(["-f", "ipv4"]);
        self.rpc.run(&args);
    }

    fn tear_down(&self, port: u16) {
        self.rpc.run(&["nvmf_subsystem_remove_ns", NQN, "1"]);
        self.listener("nvmf_subsystem_remove_listener", port);
        self.rpc.run(&["nvmf_delete_subsystem", NQN]);
        self.rpc.run(&["bdev_malloc_delete", "Malloc0"]);
        let subs = self.rpc.run(&["nvmf_get_subsystems"]);
        assert_eq!(subs.as_array().unwrap().len(), 1, "{subs}");
        assert_eq!(subs[0]["nqn"], json!(DISCOVERY));
        assert_eq!(self.rpc.run(&["bdev_get_bdevs"]), json!([]));
        assert_eq!(self.connections(NQN), 0.0);
        assert!(
            TcpStream::connect(("127.0.0.1", port)).is_err(),
            "the removed listener still accepts"
        );
    }
}

fn perf(port: u16, nsid: u32, secs: u32) -> Command {
    let mut c = pollux();
    c.args(["perf", "nvmf", "--addr"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["--nqn", NQN, "--nsid", &nsid.to_string()])
        .args(["--rw", "randrw", "--bs", "4096", "--qd", "32"])
        .args(["--time", &secs.to_string(), "--connections", "2", "--json"]);
    c
}

fn perf_ok(out: std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "perf nvmf failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["errors"], json!(0), "{v}");
    assert!(v["iops"].as_f64().unwrap() > 0.0, "{v}");
    v
}

#[test]
fn rpc_built_target_serves_our_initiator_and_tears_down_clean() {
    let d = Target::start(&[]);
    let port = free_port();
    let baseline_fds = d.daemon.open_fds();
    d.build_target(port);

    let subs = d.rpc.run(&["nvmf_get_subsystems"]);
    assert_eq!(subs[0]["subtype"], json!("Discovery"));
    let s = &subs[1];
    assert_eq!(s["nqn"], json!(NQN));
    assert_eq!(s["subtype"], json!("NVMe"));
    assert_eq!(s["serial_number"], json!(SERIAL));
    assert_eq!(s["allow_any_host"], json!(true));
    assert_eq!(
        s["listen_addresses"],
        json!([{"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": port.to_string()}])
    );
    assert_eq!(s["namespaces"][0]["nsid"], json!(1));
    assert_eq!(s["namespaces"][0]["bdev_name"], json!("Malloc0"));
    let tr = d.rpc.run(&["nvmf_get_transports"]);
    assert_eq!(tr[0]["trtype"], json!("TCP"));
    assert_eq!(tr[0]["c2h_success"], json!(true));

    // I/O while a second namespace is added, used and removed.
    let bg = perf(port, 1, 4)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Admin + I/O queue per connection; perf opens them one after the
    // other, so wait for both rather than seeing the first.
    d.wait(20, "perf's admin and I/O queues connected", || {
        d.connections(NQN) >= 2.0
    });
    // Under QD 32 requests are seen in flight, in the states they pass.
    d.wait(20, "requests in flight on the gauge", || {
        d.request_states().iter().any(|&(_, n)| n > 0.0)
    });
    d.rpc
        .run(&["bdev_malloc_create", "-b", "Malloc1", "32", "4096"]);
    // The method answers the NSID (rpc.py does not print it).
    assert_eq!(
        d.rpc
            .try_call(
                "nvmf_subsystem_add_ns",
                json!({"nqn": NQN, "namespace": {"bdev_name": "Malloc1"}})
            )
            .unwrap(),
        json!(2)
    );
    perf_ok(perf(port, 2, 1).output().unwrap());
    d.rpc.run(&["nvmf_subsystem_remove_ns", NQN, "2"]);
    d.rpc.run(&["bdev_malloc_delete", "Malloc1"]);
    perf_ok(bg.wait_with_output().unwrap());
    // Every request the hosts sent has left the state machine.
    d.wait(20, "no request left in any state", || {
        d.request_states().iter().all(|&(_, n)| n == 0.0)
    });
    // The removed NSID is gone for new hosts too.
    let gone = perf(port, 2, 1).output().unwrap();
    let v: Option<Value> = serde_json::from_slice(&gone.stdout).ok();
    assert!(
        !gone.status.success() || v.is_some_and(|v| v["errors"] != json!(0)),
        "I/O to a removed namespace succeeded"
    );

    // Hosts: a closed allow list refuses, adding the host admits it.
    d.rpc
        .run(&["nvmf_subsystem_allow_any_host", NQN, "--no-allow-any-host"]);
    d.rpc.run(&[
        "nvmf_subsystem_add_host",
        NQN,
        "nqn.2014-08.org.nvmexpress:uuid:test",
    ]);
    let s = &d.rpc.run(&["nvmf_get_subsystems", NQN])[0];
    assert_eq!(s["allow_any_host"], json!(false));
    assert_eq!(
        s["hosts"],
        json!([{"nqn": "nqn.2014-08.org.nvmexpress:uuid:test"}])
    );
    d.rpc.run(&[
        "nvmf_subsystem_remove_host",
        NQN,
        "nqn.2014-08.org.nvmexpress:uuid:test",
    ]);
    d.rpc
        .run(&["nvmf_subsystem_allow_any_host", NQN, "--allow-any-host"]);

    // save_config → pollux --json rebuilds the same target.
    let saved = d.rpc.run(&["save_config"]);
    let nvmf = saved["subsystems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["subsystem"] == json!("nvmf"))
        .expect("nvmf in save_config")
        .clone();
    let methods: Vec<&str> = nvmf["config"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["method"].as_str().unwrap())
        .collect();
    assert_eq!(
        methods,
        [
            "nvmf_create_transport",
            "nvmf_create_subsystem",
            "nvmf_subsystem_add_listener",
            "nvmf_subsystem_add_ns"
        ]
    );
    let order: Vec<&str> = saved["subsystems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["subsystem"].as_str().unwrap())
        .collect();
    let pos = |n: &str| order.iter().position(|s| *s == n).unwrap();
    assert!(
        pos("bdev") < pos("nvmf") && pos("nvmf") < pos("pollux_graph"),
        "{order:?}"
    );

    // Bad params: -32602 naming the param; the daemon keeps serving.
    for (method, params, names) in [
        ("nvmf_create_subsystem", json!({"nqn": "bad"}), "nqn"),
        (
            "nvmf_subsystem_add_ns",
            json!({"nqn": NQN, "namespace": {"bdev_name": "nope"}}),
            "namespace.bdev_name",
        ),
        (
            "nvmf_subsystem_add_ns",
            json!({"nqn": NQN, "namespace": {"bdev_name": "Malloc0", "nsid": 1}}),
            "namespace",
        ),
        (
            "nvmf_subsystem_remove_ns",
            json!({"nqn": NQN, "nsid": 9}),
            "nsid",
        ),
        (
            "nvmf_subsystem_remove_ns",
            json!({"nqn": NQN, "nsid": "x"}),
            "nsid",
        ),
        (
            "nvmf_subsystem_add_listener",
            json!({"nqn": NQN, "listen_address": {"trtype": "rdma", "traddr": "127.0.0.1", "trsvcid": "4420"}}),
            "listen_address.trtype",
        ),
        (
            "nvmf_subsystem_add_listener",
            json!({"nqn": NQN, "listen_address": {"trtype": "tcp", "traddr": "nowhere", "trsvcid": "4420"}}),
            "listen_address.traddr",
        ),
        ("nvmf_create_transport", json!({"trtype": "RDMA"}), "trtype"),
        (
            "nvmf_delete_subsystem",
            json!({"nqn": "nqn.2016-06.io.spdk:none"}),
            "nqn",
        ),
        (
            "nvmf_subsystem_add_host",
            json!({"nqn": NQN, "host": "nqn.x:h", "psk": "key0"}),
            "psk",
        ),
    ] {
        let e = d
            .rpc
            .try_call(method, params.clone())
            .expect_err(&format!("{method} {params} should fail"));
        assert!(e.contains("-32602"), "{method} {params}: {e}");
        assert!(
            e.contains(names),
            "{method} {params}: {e} does not name {names}"
        );
    }
    // A subsystem that exists already: SPDK's internal error, -32603.
    let e = d
        .rpc
        .try_call("nvmf_create_subsystem", json!({"nqn": NQN}))
        .expect_err("a second subsystem of that NQN");
    assert!(e.contains("-32603") && e.contains("already exists"), "{e}");

    d.tear_down(port);
    d.wait(10, "fds back to baseline", || {
        d.daemon.open_fds() <= baseline_fds
    });

    // The saved config rebuilds the target in a fresh daemon.
    let json_path = d.daemon.dir().join("saved.json");
    std::fs::write(&json_path, saved.to_string()).unwrap();
    let d2 = Target::start(&["--json", json_path.to_str().unwrap()]);
    let s = &d2.rpc.run(&["nvmf_get_subsystems", NQN])[0];
    assert_eq!(s["serial_number"], json!(SERIAL));
    assert_eq!(s["namespaces"][0]["bdev_name"], json!("Malloc0"));
    perf_ok(perf(port, 1, 1).output().unwrap());
}

#[test]
fn linux_host_sees_namespaces_added_and_removed_over_rpc() {
    let vm = VmClient::find();
    let d = Target::start(&[]);
    let port = free_port();
    let baseline_fds = d.daemon.open_fds();
    d.build_target(port);

    // The guest waits for each change the host makes over RPC; the host
    // sees the guest's progress through the target (connections, reads on
    // the new namespace). Timeouts are generous: TCG is slow.
    let script = format!(
        "set -e\n\
         nvme connect -t tcp -a 10.0.2.2 -s {port} -n {NQN} --hostnqn={GUEST_HOSTNQN} --hostid={GUEST_HOSTID}\n\
         i=0; while [ ! -b /dev/nvme0n1 ]; do i=$((i+1)); [ $i -gt 200 ] && {{ echo NO_NS1; nvme list; exit 1; }}; sleep 0.1; done\n\
         fio --name=v --filename=/dev/nvme0n1 --rw=randwrite --bs=4k --size=8m --iodepth=16 \
             --ioengine=libaio --direct=1 --verify=crc32c --do_verify=1 --verify_fatal=1 \
             --randrepeat=0 >/tmp/v.out 2>&1 || {{ cat /tmp/v.out; echo FIO_FAILED; exit 1; }}\n\
         echo FIO_OK\n\
         i=0; while [ ! -b /dev/nvme0n2 ]; do i=$((i+1)); [ $i -gt 1200 ] && {{ echo NO_NS2; nvme list; exit 1; }}; sleep 0.1; done\n\
         echo NS2_APPEARED\n\
         dd if=/dev/nvme0n2 of=/dev/null bs=4k count=256 iflag=direct\n\
         i=0; while [ -b /dev/nvme0n2 ]; do i=$((i+1)); [ $i -gt 1200 ] && {{ echo NS2_STAYED; exit 1; }}; sleep 0.1; done\n\
         echo NS2_GONE\n\
         nvme disconnect -n {NQN}\n\
         echo ALL_OK\n"
    );
    let guest = std::thread::spawn(move || vm.run(&[], 900, &script));

    let reads = |bdev: &str| {
        d.rpc
            .try_call("bdev_get_iostat", json!({"name": bdev}))
            .map(|v| v["bdevs"][0]["num_read_ops"].as_u64().unwrap_or(0))
            .unwrap_or(0)
    };
    // Host connected and fio's verify pass read its 8 MiB back (2,048 4 KiB
    // reads): the controller is long set up (AEC enabled, AER posted), so
    // the namespace below can only show up through the AEN and rescan.
    d.wait(600, "the guest connects", || d.connections(NQN) > 0.0);
    d.wait(600, "fio verifies on nsid 1", || reads("Malloc0") >= 2048);
    // Who is connected, as orchestrators ask it: the guest's one
    // controller, with the host NQN and ID it connected with and its
    // queues (admin + one I/O queue per guest CPU), as many as the
    // connections gauge counts.
    let ctrls = d.rpc.run(&["nvmf_subsystem_get_controllers", NQN]);
    assert_eq!(ctrls.as_array().unwrap().len(), 1, "{ctrls}");
    let c = &ctrls[0];
    assert_eq!(c["hostnqn"], json!(GUEST_HOSTNQN), "{c}");
    assert_eq!(c["hostid"], json!(GUEST_HOSTID), "{c}");
    assert_eq!(c["cntrltype"], json!("io"), "{c}");
    assert!(c["cntlid"].as_u64().unwrap() >= 1, "{c}");
    let queues = c["num_io_qpairs"].as_u64().unwrap();
    assert!(queues >= 2, "admin and at least one I/O queue: {c}");
    assert_eq!(queues as f64, d.connections(NQN), "{c}");
    d.rpc
        .run(&["bdev_malloc_create", "-b", "Malloc1", "32", "512"]);
    d.rpc
        .run(&["nvmf_subsystem_add_ns", NQN, "Malloc1", "-n", "2"]);
    // The kernel reads a new namespace (partition scan, then our dd).
    d.wait(600, "the guest reads the new namespace", || {
        reads("Malloc1") >= 256
    });
    d.rpc.run(&["nvmf_subsystem_remove_ns", NQN, "2"]);
    d.rpc.run(&["bdev_malloc_delete", "Malloc1"]);

    let out = guest.join().unwrap();
    let stdout = &out.stdout;
    assert!(
        out.status.success(),
        "guest script failed:\n{}",
        out.report(&d.daemon.log())
    );
    for m in ["FIO_OK", "NS2_APPEARED", "NS2_GONE", "ALL_OK"] {
        assert!(stdout.contains(m), "{m} missing:\n{stdout}");
    }
    d.wait(20, "the guest's queue pairs close", || {
        d.connections(NQN) == 0.0
    });
    d.wait(20, "the guest's controller goes", || {
        d.rpc.run(&["nvmf_subsystem_get_controllers", NQN]) == json!([])
    });
    d.tear_down(port);
    d.wait(10, "fds back to baseline", || {
        d.daemon.open_fds() <= baseline_fds
    });
}
