//! Issue 13, "what orchestrators call to look around", through SPDK's
//! rpc.py from PyPI: `spdk_get_version`, `thread_get_stats`, the `log_*`
//! methods (which must change what the daemon logs), and a subsystem's
//! `nvmf_subsystem_get_qpairs`, `_get_listeners` and `_get_controllers`
//! with a host connected, in SPDK v25.09's shapes.

mod support;

use std::time::{Duration, Instant};

use pollux_nvme::host::{self, HostConfig};
use serde_json::{json, Value};
use support::{free_port, tcp_listener, Daemon};

const NQN: &str = "nqn.2016-06.io.spdk:orchestrator";

/// `log` has `needle` appear within a few seconds (the daemon's stderr
/// is read by a thread).
fn wait_log(d: &Daemon, needle: &str) -> bool {
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        if d.log().contains(needle) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn version_threads_and_log_levels_answer_as_spdk() {
    let d = Daemon::builder().empty_target("[0, 1]").start();
    let rpc = d.spdk();

    let v = rpc.run(&["spdk_get_version"]);
    assert!(
        v["version"].as_str().unwrap().starts_with("Pollux v"),
        "{v}"
    );
    for f in ["major", "minor", "patch"] {
        assert!(v["fields"][f].is_u64(), "{v}");
    }
    assert!(v["fields"]["suffix"].is_string(), "{v}");

    let t = rpc.run(&["thread_get_stats"]);
    assert_eq!(t["tick_rate"], json!(1_000_000_000u64), "{t}");
    let threads = t["threads"].as_array().unwrap();
    assert_eq!(threads.len(), 2, "{t}");
    for (i, th) in threads.iter().enumerate() {
        let keys: Vec<&str> = th.as_object().unwrap().keys().map(String::as_str).collect();
        let mut want = vec![
            "active_pollers_count",
            "busy",
            "cpumask",
            "id",
            "idle",
            "name",
            "paused_pollers_count",
            "timed_pollers_count",
        ];
        want.sort();
        assert_eq!(keys, want, "{th}");
        assert_eq!(th["name"], json!(format!("reactor_{i}")));
        assert_eq!(th["id"], json!(i + 1));
        assert_eq!(th["cpumask"], json!(format!("{:x}", 1 << i)));
        assert!(th["idle"].as_u64().unwrap() > 0, "{th}");
    }
    // SPDK refuses params here (rpc.py sends none; `{}` it leaves out).
    let e = rpc
        .try_call("thread_get_stats", json!({"x": 1}))
        .unwrap_err();
    assert!(e.contains("-32602"), "{e}");

    // Levels: the daemon runs at POLLUX_LOG=info.
    assert_eq!(rpc.run(&["log_get_print_level"]), json!("INFO"));
    assert_eq!(rpc.run(&["log_get_level"]), json!("INFO"));
    let flags = rpc.run(&["log_get_flags"]);
    for f in ["nvmf", "nvmf_tcp", "bdev", "rpc", "vhost", "thread"] {
        assert_eq!(flags[f], json!(false), "{flags}");
    }

    // A flag shows its component's debug messages once the level is
    // DEBUG, as SPDK_DEBUGLOG does, and only then.
    rpc.run(&["log_set_flag", "rpc"]);
    rpc.run(&["bdev_get_bdevs"]);
    assert!(!d.log().contains("RPC call"), "debug before DEBUG");
    rpc.run(&["log_set_print_level", "DEBUG"]);
    assert_eq!(rpc.run(&["log_get_print_level"]), json!("DEBUG"));
    assert_eq!(rpc.run(&["log_get_level"]), json!("INFO"));
    rpc.run(&["bdev_get_bdevs"]);
    assert!(wait_log(&d, "RPC call"), "no rpc debug line:\n{}", d.log());
    assert_eq!(rpc.run(&["log_get_flags"])["rpc"], json!(true));
    // Other components stay at info.
    assert!(!d.log().contains("DEBUG pollux_poller"), "{}", d.log());

    rpc.run(&["log_clear_flag", "rpc"]);
    assert_eq!(rpc.run(&["log_get_flags"])["rpc"], json!(false));
    let before = d.log().matches("RPC call").count();
    rpc.run(&["bdev_get_bdevs"]);
    rpc.run(&["spdk_get_version"]);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(d.log().matches("RPC call").count(), before, "flag cleared");

    // `all` sets every flag; SPDK's level names only.
    rpc.run(&["log_set_flag", "all"]);
    let flags = rpc.run(&["log_get_flags"]);
    assert!(
        flags
            .as_object()
            .unwrap()
            .values()
            .all(|v| v == &json!(true)),
        "{flags}"
    );
    rpc.run(&["log_clear_flag", "all"]);
    rpc.run(&["log_set_level", "ERROR"]);
    assert_eq!(rpc.run(&["log_get_level"]), json!("ERROR"));
    rpc.run(&["log_set_print_level", "WARNING"]);
    assert_eq!(rpc.run(&["log_get_print_level"]), json!("WARNING"));
    let e = rpc
        .try_call("log_set_level", json!({"level": "warn"}))
        .unwrap_err();
    assert!(
        e.contains("-32602") && e.contains("invalid log level"),
        "{e}"
    );
    let e = rpc.fails(&["log_set_flag", "no_such_component"]);
    assert!(e.contains("invalid log flag"), "{e}");
    let e = rpc.try_call("log_get_flags", json!({"x": 1})).unwrap_err();
    assert!(e.contains("-32602"), "{e}");
    // At WARNING, info lines stop (those written before are all read
    // once the log thread caught up).
    std::thread::sleep(Duration::from_millis(200));
    let before = d.log().matches("INFO").count();
    rpc.run(&["bdev_malloc_create", "-b", "Malloc9", "8", "512"]);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(d.log().matches("INFO").count(), before, "{}", d.log());
}

#[test]
fn qpairs_listeners_and_controllers_of_a_connected_subsystem() {
    let d = Daemon::builder().empty_target("[0, 1]").start();
    let rpc = d.spdk();
    let (port, port2) = (free_port(), free_port());
    rpc.run(&["nvmf_create_transport", "-t", "TCP"]);
    rpc.run(&["bdev_malloc_create", "-b", "Malloc0", "8", "512"]);
    rpc.export_tcp(NQN, "Malloc0", port);
    let p2 = port2.to_string();
    let mut add = vec!["nvmf_subsystem_add_listener", NQN];
    add.extend(tcp_listener(&p2));
    rpc.run(&add);

    let listeners = rpc.run(&["nvmf_subsystem_get_listeners", NQN]);
    let addr = |p: u16| json!({"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": p.to_string()});
    assert_eq!(
        listeners,
        json!([{"address": addr(port)}, {"address": addr(port2)}])
    );

    assert_eq!(rpc.run(&["nvmf_subsystem_get_qpairs", NQN]), json!([]));
    let target = format!("127.0.0.1:{port2}").parse().unwrap();
    let mut ctrl = host::Controller::connect(HostConfig::new(target, NQN)).unwrap();
    let granted = ctrl.set_num_queues(2).unwrap();
    assert!(granted >= 2);
    let q1 = ctrl.io_queue(1, 32).unwrap();
    let q2 = ctrl.io_queue(2, 32).unwrap();

    let qpairs = rpc.run(&["nvmf_subsystem_get_qpairs", NQN]);
    let list = qpairs.as_array().unwrap();
    let mut qids: Vec<u64> = list.iter().map(|q| q["qid"].as_u64().unwrap()).collect();
    qids.sort();
    assert_eq!(qids, [0, 1, 2], "{qpairs}");
    for q in list {
        let keys: Vec<&str> = q.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "cntlid",
                "hostnqn",
                "listen_address",
                "peer_address",
                "qid",
                "state",
                "thread"
            ],
            "{q}"
        );
        assert_eq!(q["cntlid"], json!(ctrl.cntlid()));
        assert_eq!(q["state"], json!("enabled"));
        assert_eq!(q["hostnqn"], json!("nqn.2024-11.dev.pollux:host"));
        assert_eq!(q["listen_address"], addr(port2));
        assert_eq!(q["peer_address"]["traddr"], json!("127.0.0.1"));
        let thread = q["thread"].as_str().unwrap();
        assert!(["reactor_0", "reactor_1"].contains(&thread), "{q}");
    }
    // Every queue pair has its own TCP connection: distinct peer ports.
    let mut peers: Vec<&Value> = list.iter().map(|q| &q["peer_address"]["trsvcid"]).collect();
    peers.sort_by_key(|v| v.as_str().unwrap().to_owned());
    peers.dedup();
    assert_eq!(peers.len(), 3, "{qpairs}");

    // A discovery controller's admin queue is the discovery subsystem's.
    let disc_addr = format!("127.0.0.1:{port}").parse().unwrap();
    let disc = host::Controller::connect(HostConfig::new(
        disc_addr,
        "nqn.2014-08.org.nvmexpress.discovery",
    ))
    .unwrap();
    let dq = rpc.run(&[
        "nvmf_subsystem_get_qpairs",
        "nqn.2014-08.org.nvmexpress.discovery",
    ]);
    assert_eq!(dq.as_array().unwrap().len(), 1, "{dq}");
    assert_eq!(dq[0]["qid"], json!(0));
    assert_eq!(dq[0]["cntlid"], json!(disc.cntlid()));
    assert_eq!(dq[0]["listen_address"], addr(port));
    disc.shutdown().unwrap();
    // The subsystem's own list is unchanged by it.
    assert_eq!(
        rpc.run(&["nvmf_subsystem_get_qpairs", NQN])
            .as_array()
            .unwrap()
            .len(),
        3
    );

    let ctrls = rpc.run(&["nvmf_subsystem_get_controllers", NQN]);
    assert_eq!(ctrls.as_array().unwrap().len(), 1, "{ctrls}");
    assert_eq!(ctrls[0]["cntlid"], json!(ctrl.cntlid()));
    assert_eq!(ctrls[0]["num_io_qpairs"], json!(3));

    // Unknown subsystems are SPDK's -32602.
    let e = rpc.fails(&["nvmf_subsystem_get_qpairs", "nqn.2016-06.io.spdk:none"]);
    assert!(e.contains("-32602"), "{e}");
    let e = rpc.fails(&["nvmf_subsystem_get_listeners", "nqn.2016-06.io.spdk:none"]);
    assert!(e.contains("-32602"), "{e}");

    drop((q1, q2));
    ctrl.shutdown().unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    while rpc.run(&["nvmf_subsystem_get_qpairs", NQN]) != json!([]) {
        assert!(Instant::now() < end, "qpairs still listed after disconnect");
        std::thread::sleep(Duration::from_millis(50));
    }
}
