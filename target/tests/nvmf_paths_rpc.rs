//! Issue 13's ANA, reservation and visibility RPCs as SPDK's rpc.py sends
//! them: `nvmf_create_subsystem --ana-reporting`, `nvmf_subsystem_add_ns
//! --anagrpid/--ptpl-file/--no-auto-visible`,
//! `nvmf_subsystem_set_ns_ana_group`,
//! `nvmf_subsystem_listener_set_ana_state` (all groups and `-g`),
//! `nvmf_ns_add_host`/`nvmf_ns_remove_host`: what they change shows in
//! `nvmf_get_subsystems`, wrong values get SPDK's -32602, and
//! `save_config` replays all of it into a fresh daemon. (The Linux guest
//! tests show hosts following the same changes.)

mod support;

use serde_json::{json, Value};
use support::{free_port, Daemon};

const NQN: &str = "nqn.2016-06.io.spdk:paths";
const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:cccccccc-0000-4000-8000-00000000000c";

fn ns(subs: &Value, nsid: u64) -> &Value {
    subs[0]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["nsid"] == json!(nsid))
        .unwrap_or_else(|| panic!("no namespace {nsid}: {subs}"))
}

#[test]
fn ana_groups_states_ptpl_and_visibility_over_rpc_py_and_save_config() {
    let d = Daemon::builder().empty_target("[0]").start();
    let rpc = d.spdk();
    let port = free_port().to_string();
    let ptpl = d.dir().join("ns2.ptpl");
    for b in ["m0", "m1", "m2"] {
        rpc.run(&["bdev_malloc_create", "-b", b, "8", "512"]);
    }
    // Without --ana-reporting the group is kept and shown to nobody, and
    // a listener state is refused (SPDK: "ANA reporting is disabled").
    rpc.run(&["nvmf_create_subsystem", "nqn.2016-06.io.spdk:plain", "-a"]);
    rpc.run(&[
        "nvmf_subsystem_add_listener",
        "nqn.2016-06.io.spdk:plain",
        "-t",
        "tcp",
        "-a",
        "127.0.0.1",
        "-s",
        &port,
    ]);
    let e = rpc.fails(&[
        "nvmf_subsystem_listener_set_ana_state",
        "nqn.2016-06.io.spdk:plain",
        "-t",
        "tcp",
        "-a",
        "127.0.0.1",
        "-s",
        &port,
        "-n",
        "inaccessible",
    ]);
    assert!(e.contains("-32602") && e.contains("ANA reporting"), "{e}");

    rpc.run(&["nvmf_create_subsystem", NQN, "-a", "-r", "-m", "8"]);
    rpc.run(&["nvmf_subsystem_add_ns", NQN, "m0"]);
    rpc.run(&[
        "nvmf_subsystem_add_ns",
        NQN,
        "m1",
        "-a",
        "3",
        "-p",
        ptpl.to_str().unwrap(),
    ]);
    rpc.run(&["nvmf_subsystem_add_ns", NQN, "m2", "-i"]);
    // Groups above the namespace limit are SPDK's invalid params.
    let e = rpc.fails(&["nvmf_subsystem_add_ns", NQN, "m2", "-n", "5", "-a", "9"]);
    assert!(e.contains("-32602"), "{e}");
    rpc.run(&[
        "nvmf_subsystem_add_listener",
        NQN,
        "-t",
        "tcp",
        "-a",
        "127.0.0.1",
        "-s",
        &port,
        "-n",
        "non_optimized",
    ]);
    rpc.run(&["nvmf_subsystem_set_ns_ana_group", NQN, "1", "2"]);
    let e = rpc.fails(&["nvmf_subsystem_set_ns_ana_group", NQN, "1", "0"]);
    assert!(e.contains("-32602"), "{e}");
    let e = rpc.fails(&["nvmf_subsystem_set_ns_ana_group", NQN, "7", "1"]);
    assert!(e.contains("-32602"), "{e}");
    rpc.run(&[
        "nvmf_subsystem_listener_set_ana_state",
        NQN,
        "-t",
        "tcp",
        "-a",
        "127.0.0.1",
        "-s",
        &port,
        "-n",
        "inaccessible",
        "-g",
        "3",
    ]);
    let e = rpc.fails(&[
        "nvmf_subsystem_listener_set_ana_state",
        NQN,
        "-t",
        "tcp",
        "-a",
        "127.0.0.1",
        "-s",
        &free_port().to_string(),
        "-n",
        "optimized",
    ]);
    assert!(e.contains("-32602"), "not a listener of it: {e}");
    rpc.run(&["nvmf_ns_add_host", NQN, "3", HOST]);
    let e = rpc.fails(&["nvmf_ns_add_host", NQN, "3", HOST]);
    assert!(e.contains("-32602"), "{e}");
    let e = rpc.fails(&["nvmf_ns_remove_host", NQN, "1", HOST]);
    assert!(e.contains("-32602"), "{e}");

    let subs = rpc.run(&["nvmf_get_subsystems", NQN]);
    assert_eq!(subs[0]["ana_reporting"], json!(true), "{subs}");
    assert_eq!(ns(&subs, 1)["anagrpid"], json!(2), "{subs}");
    assert_eq!(ns(&subs, 2)["anagrpid"], json!(3), "{subs}");
    assert_eq!(ns(&subs, 2)["ptpl_file"], json!(ptpl.display().to_string()));
    assert_eq!(ns(&subs, 3)["no_auto_visible"], json!(true), "{subs}");

    // save_config replays into a fresh daemon: the same subsystem,
    // groups, visibility, ptpl file and listener states.
    let config = rpc.run(&["save_config"]);
    let nvmf = config["subsystems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["subsystem"] == json!("nvmf"))
        .unwrap()["config"]
        .clone();
    let calls: Vec<&str> = nvmf
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["method"].as_str().unwrap())
        .collect();
    assert!(calls.contains(&"nvmf_ns_add_host"), "{nvmf}");
    let states: Vec<&Value> = nvmf
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["method"] == json!("nvmf_subsystem_listener_set_ana_state"))
        .map(|c| &c["params"])
        .collect();
    // Group 3 inaccessible, every other group non-optimized.
    assert!(
        states
            .iter()
            .any(|p| p["anagrpid"] == json!(3) && p["ana_state"] == json!("inaccessible")),
        "{nvmf}"
    );
    assert!(
        states
            .iter()
            .any(|p| p["anagrpid"] == json!(2) && p["ana_state"] == json!("non_optimized")),
        "{nvmf}"
    );
    let mut d2 = Daemon::builder().empty_target("[0]").start();
    let rpc2 = d2.spdk();
    drop(d);
    let (ok, out) = rpc2.run_stdin(&["load_config"], &config.to_string());
    assert!(ok, "load_config: {out}\n{}", d2.log());
    let again = rpc2.run(&["nvmf_get_subsystems", NQN]);
    for key in ["anagrpid", "ptpl_file", "no_auto_visible"] {
        for nsid in 1..=3 {
            assert_eq!(
                ns(&again, nsid)[key],
                ns(&subs, nsid)[key],
                "{key} of {nsid}"
            );
        }
    }
    assert!(d2.stop().success());
}
