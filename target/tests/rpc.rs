//! The JSON-RPC control plane driven by SPDK's own client (`spdk-rpc` from
//! the `spdk` Python package, installed by .ci/run into /opt/spdk-rpc):
//! what rpc.py sends builds a target from an empty config, save_config
//! round-trips through `pollux --json`, and bad requests get JSON-RPC errors
//! while the daemon keeps serving.

mod support;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{pollux, Daemon, Ready};

/// Pollux from an empty config (one reactor, metrics on a free port) with
/// a private RPC socket, once that socket accepts connections.
fn start(extra: &[&str]) -> Daemon {
    Daemon::builder()
        .config(
            "[reactors]\ncores = [0]\nidle = \"adaptive\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
        )
        .args(extra)
        .ready(Ready::RpcSocket)
        .timeout(Duration::from_secs(20))
        .start()
}

fn names(bdevs: &Value) -> Vec<String> {
    let mut v: Vec<String> = bdevs
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn spdk_rpc_builds_changes_saves_and_tears_down_a_target() {
    let d = start(&[]);
    let rpc = d.spdk();
    assert!(rpc.run(&["spdk_get_version"])["version"]
        .as_str()
        .unwrap()
        .contains("Pollux"));
    // rpc.py prints nothing for framework_wait_init: success is the check.
    rpc.run(&["framework_wait_init"]);
    let methods = rpc.run(&["rpc_get_methods"]);
    for m in ["bdev_malloc_create", "save_config", "pollux_graph_get"] {
        assert!(methods.as_array().unwrap().contains(&json!(m)), "{m}");
    }

    assert_eq!(
        rpc.run(&["bdev_malloc_create", "-b", "Malloc0", "64", "4096"]),
        json!("Malloc0")
    );
    assert_eq!(
        rpc.run(&["bdev_null_create", "Null0", "128", "512"]),
        json!("Null0")
    );
    let img = d.dir().join("disk.img");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    assert_eq!(
        rpc.run(&["bdev_uring_create", img.to_str().unwrap(), "Uring0", "512"]),
        json!("Uring0")
    );
    assert_eq!(
        rpc.run(&["bdev_passthru_create", "-b", "Malloc0", "-p", "PT0"]),
        json!("PT0")
    );
    let bdevs = rpc.run(&["bdev_get_bdevs"]);
    assert_eq!(names(&bdevs), ["Malloc0", "Null0", "PT0", "Uring0"]);
    let m0 = rpc.run(&["bdev_get_bdevs", "-b", "Malloc0"]);
    assert_eq!(m0[0]["block_size"], json!(4096));
    // rpc.py takes the size in MiB and sends num_blocks.
    assert_eq!(m0[0]["num_blocks"], json!(64 * 1024 * 1024 / 4096));
    assert_eq!(m0[0]["claimed"], json!(true), "PT0 stands on Malloc0");
    assert_eq!(m0[0]["product_name"], json!("Malloc disk"));

    // Live graph changes with Pollux's own methods (rpc.py's generic call).
    let before = rpc.call("pollux_graph_get", json!({}))["generation"]
        .as_u64()
        .unwrap();
    rpc.call(
        "pollux_graph_insert_filter",
        json!({"node": "Null0", "filter": {"name": "f0", "kind": "passthru"}}),
    );
    let g = rpc.call("pollux_graph_get", json!({}));
    assert!(g["generation"].as_u64().unwrap() > before);
    assert!(g["edges"]
        .as_array()
        .unwrap()
        .contains(&json!({"parent": "f0", "child": "Null0"})));

    // save_config, then a fresh daemon loads it with --json.
    let saved = rpc.run(&["save_config"]);
    let cfg_path = d.dir().join("saved.json");
    std::fs::write(&cfg_path, serde_json::to_vec_pretty(&saved).unwrap()).unwrap();
    let d2 = start(&["--json", cfg_path.to_str().unwrap()]);
    let rpc2 = d2.spdk();
    assert_eq!(
        names(&rpc2.run(&["bdev_get_bdevs"])),
        ["Malloc0", "Null0", "PT0", "Uring0", "f0"]
    );
    let g2 = rpc2.call("pollux_graph_get", json!({}));
    assert_eq!(g2["edges"], g["edges"]);
    drop(d2);

    // Deleting a bdev something stands on is refused, naming the user.
    let err = rpc.fails(&["bdev_malloc_delete", "Malloc0"]);
    assert!(err.contains("PT0"), "{err}");
    rpc.call("pollux_graph_remove_filter", json!({"name": "f0"}));
    rpc.run(&["bdev_passthru_delete", "PT0"]);
    rpc.run(&["bdev_malloc_delete", "Malloc0"]);
    rpc.run(&["bdev_null_delete", "Null0"]);
    rpc.run(&["bdev_uring_delete", "Uring0"]);
    assert_eq!(rpc.run(&["bdev_get_bdevs"]), json!([]));
    assert_eq!(rpc.call("pollux_graph_get", json!({}))["nodes"], json!([]));
}

fn raw(sock: &Path, bytes: &[u8]) -> Vec<Value> {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(bytes).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn bad_requests_get_json_rpc_errors_and_the_daemon_keeps_serving() {
    let d = start(&[]);
    let r = raw(
        d.rpc_socket(),
        b"{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\": ",
    );
    assert!(r.is_empty(), "an unfinished request gets no answer: {r:?}");
    let r = raw(d.rpc_socket(), b"{]");
    assert_eq!(r[0]["error"]["code"], json!(-32700));
    let r = raw(
        d.rpc_socket(),
        br#"{"jsonrpc":"2.0","id":2,"method":"no_such_method"}"#,
    );
    assert_eq!(r[0]["error"]["code"], json!(-32601));
    let r = raw(
        d.rpc_socket(),
        br#"{"jsonrpc":"2.0","id":3,"method":"bdev_malloc_create","params":{"num_blocks":"x","block_size":512}}"#,
    );
    assert_eq!(r[0]["error"]["code"], json!(-32602));
    assert!(r[0]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("num_blocks"));
    let r = raw(
        d.rpc_socket(),
        br#"{"jsonrpc":"2.0","id":4,"method":"bdev_null_create","params":{"name":"n","num_blocks":8,"block_size":512,"bogus":1}}"#,
    );
    assert_eq!(r[0]["error"]["code"], json!(-32602));
    assert!(r[0]["error"]["message"].as_str().unwrap().contains("bogus"));
    // Two requests back to back on one connection, then garbage.
    let r = raw(
        d.rpc_socket(),
        b"{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"spdk_get_version\"}\n{\"jsonrpc\":\"2.0\",\"id\":6,\"method\":\"framework_wait_init\"} ]]",
    );
    assert_eq!(r.len(), 3);
    assert_eq!(r[0]["id"], json!(5));
    assert_eq!(r[1]["result"], json!(true));
    assert_eq!(r[2]["error"]["code"], json!(-32700));

    // A stuck client (connected, never finishing its request) does not
    // stall another one.
    let mut stuck = UnixStream::connect(d.rpc_socket()).unwrap();
    stuck.write_all(b"{\"jsonrpc\": \"2.0\", ").unwrap();
    let t = Instant::now();
    assert!(d.spdk().run(&["spdk_get_version"])["version"].is_string());
    assert!(t.elapsed() < Duration::from_secs(5));
    drop(stuck);
}

/// `[rpc] socket` places the socket (mode 0600) when `--rpc-socket` is
/// absent, and `pollux --config FILE rpc` finds it there too.
#[test]
fn rpc_socket_comes_from_the_config_file() {
    use std::os::unix::fs::PermissionsExt;
    let b = Daemon::builder();
    let sock = b.dir().join("from-config.sock");
    let mut d = b
        .config(format!(
            "[reactors]\ncores = [0]\n[metrics]\nlisten = \"127.0.0.1:0\"\n[rpc]\nsocket = \"{}\"\n",
            sock.display()
        ))
        .no_rpc_socket()
        .ready(Ready::Socket(sock.clone()))
        .timeout(Duration::from_secs(20))
        .start();
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    let out = pollux()
        .arg("--config")
        .arg(d.config_path())
        .args(["rpc", "spdk_get_version"])
        .output()
        .unwrap();
    let status = d.stop();
    assert_eq!(mode, 0o600, "socket mode");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Pollux"));
    assert!(status.success());
    assert!(!sock.exists(), "socket left behind");
}

/// `bdev_get_bdevs -b NAME -t MS` waits for a bdev another client is
/// creating, as SPDK's does, and answers "No such device" once the time
/// is up.
#[test]
fn bdev_get_bdevs_waits_for_the_bdev_up_to_its_timeout() {
    let d = start(&[]);
    let sock = d.rpc_socket().to_owned();
    let waiter = std::thread::spawn(move || {
        support::SpdkRpc::new(&sock).run(&["bdev_get_bdevs", "-b", "Late0", "-t", "20000"])
    });
    std::thread::sleep(Duration::from_millis(500));
    d.spdk().run(&["bdev_null_create", "Late0", "8", "512"]);
    let got = waiter.join().unwrap();
    assert_eq!(got[0]["name"], json!("Late0"), "{got}");
    let t = Instant::now();
    let e = d
        .spdk()
        .fails(&["bdev_get_bdevs", "-b", "Never0", "-t", "300"]);
    assert!(e.contains("No such device"), "{e}");
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
}

/// Bdev and graph failures answer with the negated errnos SPDK's bdev
/// methods send (`spdk_jsonrpc_send_error_response(request, rc,
/// spdk_strerror(-rc))`), and vhost's with -32602 as SPDK's vhost_rpc.c.
#[test]
fn failures_answer_with_spdk_codes() {
    let d = start(&[]);
    let rpc = d.spdk();
    rpc.run(&["bdev_null_create", "Null0", "8", "512"]);
    let code = |args: &[&str], want: i32| {
        let e = rpc.fails(args);
        assert!(e.contains(&format!("\"code\": {want}")), "{args:?}: {e}");
    };
    code(&["bdev_null_create", "Null0", "8", "512"], -17);
    code(&["bdev_null_delete", "Null9"], -19);
    code(&["bdev_get_bdevs", "-b", "Null9"], -19);
    code(&["bdev_passthru_create", "-b", "Null9", "-p", "P0"], -19);
    rpc.run(&["bdev_passthru_create", "-b", "Null0", "-p", "P0"]);
    code(&["bdev_null_delete", "Null0"], -16);
    code(&["vhost_delete_controller", "vb9"], -32602);
}
