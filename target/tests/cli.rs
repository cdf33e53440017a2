//! The `pollux` binary as a user runs it: config validation and exit codes,
//! the daemon's start and clean stop on signals, and `perf local`.

mod support;

use std::io::Write;
use std::process::Output;
use std::time::Duration;

use support::{pollux, Daemon};

fn config(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

fn check(text: &str) -> Output {
    let f = config(text);
    pollux()
        .arg("--check-config")
        .arg(f.path())
        .output()
        .unwrap()
}

#[test]
fn check_config_accepts_the_documented_example() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk0.img");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    let out = check(&format!(
        r#"
[reactors]
cores = [0]
idle = "adaptive"

[[bdev]]
name = "null0"
kind = "null"
size = "4GiB"
block_size = 4096

[[bdev]]
name = "disk0"
kind = "file"
path = "{}"
direct = true

[[bdev]]
name = "pt0"
kind = "passthru"
child = "disk0"
"#,
        img.display()
    ));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_configs_exit_2_with_one_line_naming_the_key() {
    let cases = [
        ("[reactors]\ncores = [0]\nbogus = 1\n", "bogus"),
        ("[[bdev]]\nname = \"n\"\nkind = \"null\"\nsize = \"4 XB\"\n", "size"),
        (
            "[[bdev]]\nname = \"f\"\nkind = \"file\"\npath = \"/nonexistent/pollux.img\"\n",
            "path",
        ),
        (
            "[[bdev]]\nname = \"a\"\nkind = \"null\"\nsize = 4096\n[[bdev]]\nname = \"a\"\nkind = \"null\"\nsize = 4096\n",
            "name",
        ),
        ("[reactors]\ncores = [0, 4095]\n", "4095"),
        ("[reactors]\ncores = \"0-3,8\"\n", "reactors.cores"),
    ];
    for (text, key) in cases {
        let out = check(text);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}\n{err}");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "one error line expected for {text}: {err}");
        assert!(lines[0].contains(key), "{key} not named in: {err}");
    }
}

#[test]
fn empty_config_is_valid() {
    let out = check("");
    assert!(out.status.success());
}

/// Starts the daemon (no `--rpc-socket`, as a user runs it) and waits
/// for its "ready" log line.
fn start_daemon(args: &[&str]) -> Daemon {
    Daemon::builder()
        .no_rpc_socket()
        .args(args)
        .timeout(Duration::from_secs(20))
        .start()
}

#[test]
fn daemon_runs_embedded_default_and_stops_cleanly_on_sigterm() {
    let mut d = start_daemon(&[]);
    let st = d.signal_and_wait(libc::SIGTERM);
    assert_eq!(st.code(), Some(0));
}

#[test]
fn daemon_flushes_file_bdevs_and_exits_0_on_sigint() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let img = dir.path().join("d.img");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    // Port 0: tests run in parallel, and the default metrics port may be
    // taken by another daemon on the machine.
    let cfg = config(&format!(
        "[reactors]\ncores = [0]\nidle = \"adaptive\"\n[[bdev]]\nname = \"d\"\nkind = \"file\"\npath = \"{}\"\n[[bdev]]\nname = \"p\"\nkind = \"passthru\"\nchild = \"d\"\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n",
        img.display()
    ));
    let mut d = start_daemon(&["--config", cfg.path().to_str().unwrap()]);
    let st = d.signal_and_wait(libc::SIGINT);
    assert_eq!(st.code(), Some(0));
}

#[test]
fn perf_local_prints_the_json_report() {
    let cfg = config(
        "[reactors]\ncores = [0]\nidle = \"adaptive\"\n[[bdev]]\nname = \"n\"\nkind = \"ram\"\nsize = \"64MiB\"\nblock_size = 4096\n",
    );
    for rw in ["randread", "randwrite", "randrw"] {
        let out = pollux()
            .args(["perf", "local", "--config"])
            .arg(cfg.path())
            .args([
                "--bdev", "n", "--rw", rw, "--bs", "4096", "--qd", "8", "--time", "1", "--json",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(v["iops"].as_f64().unwrap() > 1000.0, "{v}");
        assert!(v["mib_s"].as_f64().unwrap() > 0.0);
        for k in ["avg", "p50", "p99"] {
            assert!(v["lat_us"][k].as_f64().unwrap() > 0.0, "{v}");
        }
        assert_eq!(v["errors"].as_u64(), Some(0));
    }
}

#[test]
fn perf_local_rejects_unknown_bdev() {
    let out = pollux()
        .args(["perf", "local", "--bdev", "nope", "--time", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
}
