//! In-process tests: collection from a live runtime and graph, front-end
//! gauges, and the HTTP endpoint's behaviour with good and bad clients.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::rc::Rc;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use pollux_graph::nodes::{passthru::PassthruNode, ram::RamNode};
use pollux_graph::{AlignedBuf, Io, IoBuf, IoOp, IoResult, IoSink};
use pollux_poller::{IdlePolicy, Reactor, Runtime, RuntimeConfig};

use super::*;

fn runtime() -> Runtime {
    let core = pollux_poller::cpu::online_cpus()
        .unwrap()
        .iter()
        .next()
        .unwrap();
    Runtime::start(RuntimeConfig::new(
        vec![core],
        IdlePolicy::Adaptive {
            idle_after: Duration::from_micros(100),
        },
    ))
    .unwrap()
}

struct Done(mpsc::Sender<IoResult>);

impl IoSink for Done {
    fn io_done(&self, _r: &Reactor, _io: Io, result: IoResult) {
        let _ = self.0.send(result);
    }
}

fn run_io(graph: &Arc<Graph>, root: &str, op: IoOp, offset: u64, len: u64) -> IoResult {
    let (tx, rx) = mpsc::channel();
    let g = graph.clone();
    let root = graph.read(|s| s.root_id(root)).unwrap();
    graph.handle().send_blocking(0, move |r: &Reactor| {
        let buf = if op.has_data() {
            IoBuf::Owned(AlignedBuf::zeroed(len as usize))
        } else {
            IoBuf::None
        };
        let io = Io::new(op, offset, len, buf, Rc::new(Done(tx)), 0);
        g.snapshot(r).submit(r, root, io);
    });
    rx.recv_timeout(Duration::from_secs(10)).unwrap()
}

/// The value of the sample line that starts with `series ` (name plus
/// labels exactly as encoded).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

#[test]
fn build_info_alone_is_a_valid_exposition() {
    let m = Metrics::new("1.2.3");
    let text = m.encode().unwrap();
    assert_eq!(
        text,
        "# HELP pollux_build_info Always 1; the version label identifies the running Pollux.\n\
         # TYPE pollux_build_info gauge\n\
         pollux_build_info{version=\"1.2.3\"} 1\n"
    );
}

#[test]
fn reactor_graph_and_bdev_families_follow_the_io() {
    let rt = runtime();
    let graph = Graph::new(rt.handle());
    graph
        .add_node("ram0", RamNode::new(1 << 20, 512).unwrap(), &[])
        .unwrap();
    let geo = graph.node_geometry("ram0").unwrap();
    graph
        .insert_filter("ram0", "pt0", PassthruNode::new(geo))
        .unwrap();
    graph.add_root("r", "pt0").unwrap();

    let m = Metrics::new("0.0.0");
    m.register_reactors(rt.handle().clone()).unwrap();
    m.register_graph(graph.clone()).unwrap();
    // The same source twice is a programming error the registry reports.
    assert!(matches!(
        m.register_graph(graph.clone()),
        Err(MetricsError::Register(_))
    ));

    let before = m.encode().unwrap();
    let core = rt.handle().reactors()[0].core;
    let polls = format!("pollux_reactor_polls_total{{core=\"{core}\"}}");
    for series in [
        polls.as_str(),
        &format!("pollux_reactor_busy_seconds_total{{core=\"{core}\"}}"),
        &format!("pollux_reactor_idle_seconds_total{{core=\"{core}\"}}"),
        &format!("pollux_reactor_messages_total{{core=\"{core}\"}}"),
        "pollux_graph_generation",
        "pollux_graph_publishes_total",
        "pollux_graph_grace_period_seconds_count",
        "pollux_bdev_ops_total{bdev=\"ram0\",op=\"discard\"}",
        "pollux_bdev_latency_seconds_count{bdev=\"pt0\",op=\"write_zeroes\"}",
    ] {
        assert!(
            sample(&before, series).is_some(),
            "{series} missing:\n{before}"
        );
    }
    assert_eq!(sample(&before, "pollux_graph_generation"), Some(3.0));
    assert_eq!(sample(&before, "pollux_graph_publishes_total"), Some(3.0));
    assert_eq!(
        sample(&before, "pollux_graph_grace_period_seconds_count"),
        Some(3.0)
    );

    for _ in 0..4 {
        run_io(&graph, "r", IoOp::Write, 0, 4096).unwrap();
    }
    run_io(&graph, "r", IoOp::Read, 512, 512).unwrap();
    run_io(&graph, "r", IoOp::Flush, 0, 0).unwrap();
    assert!(run_io(&graph, "r", IoOp::Read, 1 << 20, 512).is_err());

    let after = m.encode().unwrap();
    for bdev in ["pt0", "ram0"] {
        let s = |name: &str, op: &str| {
            sample(&after, &format!("{name}{{bdev=\"{bdev}\",op=\"{op}\"}}")).unwrap()
        };
        assert_eq!(s("pollux_bdev_ops_total", "write"), 4.0, "{bdev}");
        assert_eq!(s("pollux_bdev_bytes_total", "write"), 4.0 * 4096.0);
        assert_eq!(s("pollux_bdev_ops_total", "read"), 1.0);
        assert_eq!(s("pollux_bdev_bytes_total", "read"), 512.0);
        assert_eq!(s("pollux_bdev_ops_total", "flush"), 1.0);
        assert_eq!(s("pollux_bdev_latency_seconds_count", "write"), 4.0);
        assert!(s("pollux_bdev_latency_seconds_sum", "write") > 0.0);
        let inf = format!(
            "pollux_bdev_latency_seconds_bucket{{bdev=\"{bdev}\",op=\"write\",le=\"+Inf\"}}"
        );
        assert_eq!(sample(&after, &inf), Some(4.0));
        assert_eq!(
            sample(&after, &format!("pollux_bdev_inflight{{bdev=\"{bdev}\"}}")),
            Some(0.0)
        );
    }
    // The out-of-range read failed at the filter, before reaching ram0.
    assert_eq!(
        sample(&after, "pollux_bdev_errors_total{bdev=\"pt0\",op=\"read\"}"),
        Some(1.0)
    );
    // The reactor ran (messages carried the I/O), so its counters moved.
    assert!(sample(&after, &polls).unwrap() > sample(&before, &polls).unwrap());

    graph.shutdown();
    rt.shutdown();
}

#[test]
fn front_end_gauges_come_and_go_with_their_sources() {
    let m = Metrics::new("0.0.0");
    assert!(!m.encode().unwrap().contains("pollux_nvmf_connections"));
    let conns = Arc::new(AtomicU64::new(2));
    let c = conns.clone();
    let a = m
        .register_gauges(&NVMF_CONNECTIONS, move || {
            vec![(
                "nqn.2016-06.io.spdk:cnode1".to_owned(),
                c.load(Ordering::Relaxed) as f64,
            )]
        })
        .unwrap();
    let b = m
        .register_gauges(&NVMF_CONNECTIONS, || vec![("nqn.x:2".to_owned(), 0.0)])
        .unwrap();
    let v = m
        .register_gauges(&VHOST_QUEUES, || vec![("vhost.0".to_owned(), 4.0)])
        .unwrap();
    conns.store(3, Ordering::Relaxed);
    let text = m.encode().unwrap();
    assert_eq!(
        sample(
            &text,
            "pollux_nvmf_connections{subsystem=\"nqn.2016-06.io.spdk:cnode1\"}"
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(&text, "pollux_nvmf_connections{subsystem=\"nqn.x:2\"}"),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "pollux_vhost_queues{controller=\"vhost.0\"}"),
        Some(4.0)
    );
    assert_eq!(
        text.matches("# TYPE pollux_nvmf_connections gauge").count(),
        1
    );

    drop(a);
    let text = m.encode().unwrap();
    assert!(!text.contains("cnode1"), "{text}");
    assert!(text.contains("nqn.x:2"));
    drop((b, v));
    let text = m.encode().unwrap();
    assert!(!text.contains("pollux_nvmf_connections"), "{text}");
    assert!(!text.contains("pollux_vhost_queues"), "{text}");

    // Reusing a name with another label is refused.
    static ODD: GaugeSpec = GaugeSpec {
        name: "pollux_nvmf_connections",
        help: NVMF_CONNECTIONS.help,
        label: "nqn",
    };
    assert!(matches!(
        m.register_gauges(&ODD, Vec::new),
        Err(MetricsError::GaugeMismatch { .. })
    ));
}

fn local_server() -> (Server, SocketAddr) {
    let m = Arc::new(Metrics::new("9.9.9"));
    let s = Server::start(m, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = s.local_addr();
    (s, addr)
}

/// Sends a raw request and returns the whole response.
fn http(addr: SocketAddr, request: &str) -> String {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn endpoint_serves_get_metrics_only() {
    let (server, addr) = local_server();
    let ok = http(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
    assert!(
        ok.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{ok}"
    );
    assert!(
        ok.ends_with("pollux_build_info{version=\"9.9.9\"} 1\n"),
        "{ok}"
    );

    let nf = http(addr, "GET /other HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(nf.starts_with("HTTP/1.1 404 "), "{nf}");
    let na = http(
        addr,
        "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    );
    assert!(na.starts_with("HTTP/1.1 405 "), "{na}");
    assert!(na.to_ascii_lowercase().contains("allow: get, head"), "{na}");
    let bad = http(addr, "NONSENSE\r\n\r\n");
    assert!(bad.is_empty() || bad.starts_with("HTTP/1.1 400 "), "{bad}");
    server.shutdown();
    // Stopped means closed.
    assert!(TcpStream::connect(addr).is_err());
}

#[test]
fn a_stuck_client_does_not_stall_others() {
    let (server, addr) = local_server();
    // Half a request, never finished, and a client that never reads.
    let mut stuck = TcpStream::connect(addr).unwrap();
    stuck.write_all(b"GET /metr").unwrap();
    let mut mute = TcpStream::connect(addr).unwrap();
    mute.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let t = Instant::now();
    for _ in 0..5 {
        let ok = http(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
    }
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    drop((stuck, mute));
    server.shutdown();
}

#[test]
fn a_taken_port_is_reported() {
    let (server, addr) = local_server();
    let e = match Server::start(Arc::new(Metrics::new("x")), addr) {
        Err(e) => e,
        Ok(_) => panic!("bound {addr} twice"),
    };
    assert!(matches!(e, MetricsError::Bind { .. }), "{e}");
    assert_eq!(e.to_string(), addr.to_string());
    let cause = std::error::Error::source(&e).unwrap().to_string();
    assert!(cause.starts_with("Address already in use"), "{cause}");
    server.shutdown();
}
