//! The JSON-RPC control plane driven by SPDK's own client (`spdk-rpc` from
//! the `spdk` Python package, installed by .ci/run into /opt/spdk-rpc):
//! what rpc.py sends builds a target from an empty config, save_config
//! round-trips through `pollux --json`, and bad requests get JSON-RPC errors
//! while the daemon keeps serving.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn spdk_rpc() -> PathBuf {
    let p = std::env::var_os("SPDK_RPC")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/spdk-rpc/bin/spdk-rpc"));
    assert!(
        p.exists(),
        "SPDK's rpc client is missing at {}: run .ci/run, or \
         `python3 -m venv /opt/spdk-rpc && /opt/spdk-rpc/bin/pip install spdk==26.9`",
        p.display()
    );
    p
}

struct Daemon {
    child: Child,
    sock: PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    fn start(extra: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("pollux.sock");
        let cfg = dir.path().join("empty.toml");
        std::fs::write(
            &cfg,
            "[reactors]\ncores = [0]\nidle = \"adaptive\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
        )
        .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_pollux"))
            .arg("--config")
            .arg(&cfg)
            .arg("--rpc-socket")
            .arg(&sock)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(&sock).is_err() {
            assert!(Instant::now() < deadline, "RPC socket never appeared");
            std::thread::sleep(Duration::from_millis(20));
        }
        Daemon {
            child,
            sock,
            _dir: dir,
        }
    }

    /// Runs `spdk-rpc -s SOCK args...` and returns its stdout as JSON (or
    /// as a JSON string when it prints a bare word).
    fn rpc(&self, args: &[&str]) -> Value {
        let out = Command::new(spdk_rpc())
            .arg("-s")
            .arg(&self.sock)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "spdk-rpc {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    }

    /// Calls any method through SPDK's client library (`JSONRPCClient`,
    /// what rpc.py is built on), for methods rpc.py has no subcommand for.
    fn call(&self, method: &str, params: Value) -> Value {
        let python = spdk_rpc().with_file_name("python3");
        let script = "import json, sys\n\
from spdk.rpc.client import JSONRPCClient\n\
c = JSONRPCClient(sys.argv[1])\n\
print(json.dumps(c.call(sys.argv[2], json.loads(sys.argv[3]))))\n";
        let out = Command::new(python)
            .args(["-c", script])
            .arg(&self.sock)
            .arg(method)
            .arg(params.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{method} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn rpc_fails(&self, args: &[&str]) -> String {
        let out = Command::new(spdk_rpc())
            .arg("-s")
            .arg(&self.sock)
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "spdk-rpc {args:?} should fail");
        // rpc.py prints the JSON-RPC error on stdout.
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child has no memory-safety concerns.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
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
    let d = Daemon::start(&[]);
    assert!(d.rpc(&["spdk_get_version"])["version"]
        .as_str()
        .unwrap()
        .contains("Pollux"));
    // rpc.py prints nothing for framework_wait_init: success is the check.
    d.rpc(&["framework_wait_init"]);
    let methods = d.rpc(&["rpc_get_methods"]);
    for m in ["bdev_malloc_create", "save_config", "pollux_graph_get"] {
        assert!(methods.as_array().unwrap().contains(&json!(m)), "{m}");
    }

    assert_eq!(
        d.rpc(&["bdev_malloc_create", "-b", "Malloc0", "64", "4096"]),
        json!("Malloc0")
    );
    assert_eq!(
        d.rpc(&["bdev_null_create", "Null0", "128", "512"]),
        json!("Null0")
    );
    let img = d._dir.path().join("disk.img");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    assert_eq!(
        d.rpc(&["bdev_uring_create", img.to_str().unwrap(), "Uring0", "512"]),
        json!("Uring0")
    );
    assert_eq!(
        d.rpc(&["bdev_passthru_create", "-b", "Malloc0", "-p", "PT0"]),
        json!("PT0")
    );
    let bdevs = d.rpc(&["bdev_get_bdevs"]);
    assert_eq!(names(&bdevs), ["Malloc0", "Null0", "PT0", "Uring0"]);
    let m0 = d.rpc(&["bdev_get_bdevs", "-b", "Malloc0"]);
    assert_eq!(m0[0]["block_size"], json!(4096));
    // rpc.py takes the size in MiB and sends num_blocks.
    assert_eq!(m0[0]["num_blocks"], json!(64 * 1024 * 1024 / 4096));
    assert_eq!(m0[0]["claimed"], json!(true), "PT0 stands on Malloc0");
    assert_eq!(m0[0]["product_name"], json!("Malloc disk"));

    // Live graph changes with Pollux's own methods (rpc.py's generic call).
    let before = d.call("pollux_graph_get", json!({}))["generation"]
        .as_u64()
        .unwrap();
    d.call(
        "pollux_graph_insert_filter",
        json!({"node": "Null0", "filter": {"name": "f0", "kind": "passthru"}}),
    );
    let g = d.call("pollux_graph_get", json!({}));
    assert!(g["generation"].as_u64().unwrap() > before);
    assert!(g["edges"]
        .as_array()
        .unwrap()
        .contains(&json!({"parent": "f0", "child": "Null0"})));

    // save_config, then a fresh daemon loads it with --json.
    let saved = d.rpc(&["save_config"]);
    let cfg_path = d._dir.path().join("saved.json");
    std::fs::write(&cfg_path, serde_json::to_vec_pretty(&saved).unwrap()).unwrap();
    let d2 = Daemon::start(&["--json", cfg_path.to_str().unwrap()]);
    assert_eq!(
        names(&d2.rpc(&["bdev_get_bdevs"])),
        ["Malloc0", "Null0", "PT0", "Uring0", "f0"]
    );
    let g2 = d2.call("pollux_graph_get", json!({}));
    assert_eq!(g2["edges"], g["edges"]);
    drop(d2);

    // Deleting a bdev something stands on is refused, naming the user.
    let err = d.rpc_fails(&["bdev_malloc_delete", "Malloc0"]);
    assert!(err.contains("PT0"), "{err}");
    d.call("pollux_graph_remove_filter", json!({"name": "f0"}));
    d.rpc(&["bdev_passthru_delete", "PT0"]);
    d.rpc(&["bdev_malloc_delete", "Malloc0"]);
    d.rpc(&["bdev_null_delete", "Null0"]);
    d.rpc(&["bdev_uring_delete", "Uring0"]);
    assert_eq!(d.rpc(&["bdev_get_bdevs"]), json!([]));
    assert_eq!(d.call("pollux_graph_get", json!({}))["nodes"], json!([]));
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
    let d = Daemon::start(&[]);
    let r = raw(&d.sock, b"{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\": ");
    assert!(r.is_empty(), "an unfinished request gets no answer: {r:?}");
    let r = raw(&d.sock, b"{]");
    assert_eq!(r[0]["error"]["code"], json!(-32700));
    let r = raw(
        &d.sock,
        br#"{"jsonrpc":"2.0","id":2,"method":"no_such_method"}"#,
    );
    assert_eq!(r[0]["error"]["code"], json!(-32601));
    let r = raw(
        &d.sock,
        br#"{"jsonrpc":"2.0","id":3,"method":"bdev_malloc_create","params":{"num_blocks":"x","block_size":512}}"#,
    );
    assert_eq!(r[0]["error"]["code"], json!(-32602));
    assert!(r[0]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("num_blocks"));
    let r = raw(
        &d.sock,
        br#"{"jsonrpc":"2.0","id":4,"method":"bdev_null_create","params":{"name":"n","num_blocks":8,"block_size":512,"bogus":1}}"#,
    );
    assert_eq!(r[0]["error"]["code"], json!(-32602));
    assert!(r[0]["error"]["message"].as_str().unwrap().contains("bogus"));
    // Two requests back to back on one connection, then garbage.
    let r = raw(
        &d.sock,
        b"{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"spdk_get_version\"}\n{\"jsonrpc\":\"2.0\",\"id\":6,\"method\":\"framework_wait_init\"} ]]",
    );
    assert_eq!(r.len(), 3);
    assert_eq!(r[0]["id"], json!(5));
    assert_eq!(r[1]["result"], json!(true));
    assert_eq!(r[2]["error"]["code"], json!(-32700));

    // A stuck client (connected, never finishing its request) does not
    // stall another one.
    let mut stuck = UnixStream::connect(&d.sock).unwrap();
    stuck.write_all(b"{\"jsonrpc\": \"2.0\", ").unwrap();
    let t = Instant::now();
    assert!(d.rpc(&["spdk_get_version"])["version"].is_string());
    assert!(t.elapsed() < Duration::from_secs(5));
    drop(stuck);
}

/// `[rpc] socket` places the socket (mode 0600) when `--rpc-socket` is
/// absent, and `pollux --config FILE rpc` finds it there too.
#[test]
fn rpc_socket_comes_from_the_config_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("from-config.sock");
    let cfg = dir.path().join("p.toml");
    std::fs::write(
        &cfg,
        format!(
            "[reactors]\ncores = [0]\n[metrics]\nlisten = \"127.0.0.1:0\"\n[rpc]\nsocket = \"{}\"\n",
            sock.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pollux"))
        .arg("--config")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while UnixStream::connect(&sock).is_err() {
        assert!(Instant::now() < deadline, "[rpc] socket never appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    let out = Command::new(env!("CARGO_BIN_EXE_pollux"))
        .arg("--config")
        .arg(&cfg)
        .args(["rpc", "spdk_get_version"])
        .output()
        .unwrap();
    // SAFETY: kill(2) on our own child has no memory-safety concerns.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
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
