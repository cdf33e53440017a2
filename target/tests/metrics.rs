//! The daemon's Prometheus endpoint from outside: the families are there,
//! counters move between scrapes, `promtool check metrics` accepts the
//! output, and a real Prometheus server (Debian's `prometheus` package)
//! scrapes it. Missing `promtool`/`prometheus` binaries fail the tests.

mod support;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{free_port, http_get, scrape, try_series, Daemon};

/// How long the daemon and Prometheus get to come up, and Prometheus to
/// complete its first scrapes (1 s interval) on a loaded CI machine.
const STARTUP: Duration = Duration::from_secs(30);

/// Kills and reaps the child when dropped, so a failed assertion does not
/// leave a Prometheus server behind.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `binary` from PATH, or a failure that says how to get it.
fn require(binary: &str) -> String {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(binary).is_file()));
    assert!(
        found,
        "`{binary}` is not installed: these tests need Debian's `prometheus` package \
         (apt-get install prometheus), which provides prometheus and promtool"
    );
    binary.to_owned()
}

/// Starts `pollux` with one adaptive reactor on core 0, a ram bdev and the
/// metrics endpoint on a free port; returns once it reports ready.
fn start_pollux() -> (Daemon, SocketAddr) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let d = Daemon::builder()
        .config(format!(
            "[reactors]\ncores = [0]\nidle = \"adaptive\"\n\n\
             [[bdev]]\nname = \"ram0\"\nkind = \"ram\"\nsize = \"16MiB\"\nblock_size = 4096\n\n\
             [metrics]\nlisten = \"{addr}\"\n"
        ))
        .no_rpc_socket()
        .timeout(STARTUP)
        .start();
    (d, addr)
}

#[test]
fn metrics_endpoint_serves_every_family_and_counters_move() {
    let (_pollux, addr) = start_pollux();

    let first = scrape(addr);
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        try_series(
            &first,
            &format!("pollux_build_info{{version=\"{version}\"}}")
        ),
        Some(1.0),
        "{first}"
    );
    for family in CORE_FAMILIES {
        assert!(
            first.contains(&format!("\n# TYPE {family} ")),
            "{family} missing:\n{first}"
        );
    }
    for op in ["read", "write", "flush", "write_zeroes", "discard"] {
        let series = format!("pollux_bdev_ops_total{{bdev=\"ram0\",op=\"{op}\"}}");
        assert_eq!(try_series(&first, &series), Some(0.0), "{series}");
        let series =
            format!("pollux_bdev_latency_seconds_bucket{{bdev=\"ram0\",op=\"{op}\",le=\"+Inf\"}}");
        assert_eq!(try_series(&first, &series), Some(0.0), "{series}");
    }
    // Building ram0 was one publication, each with one grace period.
    assert_eq!(try_series(&first, "pollux_graph_generation"), Some(1.0));
    assert_eq!(
        try_series(&first, "pollux_graph_publishes_total"),
        Some(1.0)
    );
    assert_eq!(
        try_series(&first, "pollux_graph_grace_period_seconds_count"),
        Some(1.0)
    );

    // An idle adaptive reactor still wakes at least once a second, so its
    // loop and time counters move between scrapes.
    let polls = "pollux_reactor_polls_total{core=\"0\"}";
    let idle = "pollux_reactor_idle_seconds_total{core=\"0\"}";
    let (p0, i0) = (
        try_series(&first, polls).unwrap(),
        try_series(&first, idle).unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = scrape(addr);
        if try_series(&now, polls).unwrap() > p0 && try_series(&now, idle).unwrap() > i0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "reactor counters did not move:\n{now}"
        );
    }

    // Anything but /metrics is not found.
    assert_eq!(http_get(addr, "/").0, 404);
    assert_eq!(http_get(addr, "/metrics/x").0, 404);
}

#[test]
fn promtool_accepts_the_exposition() {
    let promtool = require("promtool");
    let (_pollux, addr) = start_pollux();
    let text = scrape(addr);
    let mut check = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- exposition ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_prometheus_server_scrapes_pollux() {
    let prometheus = require("prometheus");
    let dir = tempfile::tempdir().unwrap();
    let (_pollux, target) = start_pollux();

    let prom_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: pollux\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let _server = Reaped(
        Command::new(prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={prom_addr}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );

    let query = |q: &str| -> Option<serde_json::Value> {
        let c = TcpStream::connect(prom_addr).ok()?;
        drop(c);
        let (status, body) = http_get(prom_addr, &format!("/api/v1/query?query={q}"));
        if status != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let result = v["data"]["result"].as_array()?;
        result.first().cloned()
    };
    let deadline = Instant::now() + STARTUP;
    let (up, info) = loop {
        let up = query("up%7Bjob%3D%22pollux%22%7D");
        let info = query("pollux_build_info");
        if let (Some(up), Some(info)) = (&up, &info) {
            if up["value"][1] == "1" {
                break (up.clone(), info.clone());
            }
        }
        if Instant::now() > deadline {
            let log =
                std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
            panic!(
                "Prometheus did not scrape pollux within {STARTUP:?} \
                 (up: {up:?}, build_info: {info:?}); its log:\n{log}"
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(up["metric"]["instance"], target.to_string());
    assert_eq!(info["metric"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(info["value"][1], "1");
}

/// The metric families the daemon exports from its start, whatever its
/// config.
const CORE_FAMILIES: &[&str] = &[
    "pollux_build_info",
    "pollux_reactor_polls_total",
    "pollux_reactor_busy_seconds_total",
    "pollux_reactor_idle_seconds_total",
    "pollux_reactor_messages_total",
    "pollux_bdev_ops_total",
    "pollux_bdev_bytes_total",
    "pollux_bdev_errors_total",
    "pollux_bdev_latency_seconds",
    "pollux_bdev_inflight",
    "pollux_graph_generation",
    "pollux_graph_publishes_total",
    "pollux_graph_reclaimed_total",
    "pollux_graph_nodes_closed_total",
    "pollux_graph_grace_period_seconds",
];

/// The front-ends' gauges: they only appear once a front-end registers
/// them.
const FRONT_END_FAMILIES: &[&str] = &[
    "pollux_nvmf_connections",
    "pollux_nvmf_requests",
    "pollux_vhost_queues",
];

/// Every metric family the daemon exports.
fn is_family(name: &str) -> bool {
    CORE_FAMILIES.contains(&name) || FRONT_END_FAMILIES.contains(&name)
}

fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

#[test]
fn grafana_dashboard_queries_are_valid_promql_over_our_metrics() {
    let promtool = require("promtool");
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/grafana/pollux-dashboard.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut all = Vec::new();
    exprs(&dashboard["panels"], &mut all);
    assert!(all.len() >= 15, "only {} queries", all.len());

    // Grafana's variables, as Prometheus would see them substituted.
    let rules: Vec<serde_json::Value> = all
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let e = e
                .replace("$__rate_interval", "1m")
                .replace("$instance", ".*")
                .replace("$bdev", ".*");
            for name in e
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("pollux_"))
            {
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .filter(|f| is_family(f))
                    .unwrap_or(name);
                assert!(is_family(family), "unknown metric {name} in {e}");
            }
            serde_json::json!({ "record": format!("dashboard:query_{i}"), "expr": e })
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    // JSON is YAML, so promtool reads this as a rules file.
    let file = dir.path().join("dashboard-rules.yml");
    let doc = serde_json::json!({ "groups": [{ "name": "dashboard", "rules": rules }] });
    std::fs::write(&file, doc.to_string()).unwrap();
    let out = Command::new(promtool)
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
