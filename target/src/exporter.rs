//! The daemon's Prometheus endpoint: a registry fed by the target's
//! reactors and graph (front-ends add their gauges to `metrics`), served
//! on `[metrics] listen` from a control thread.

use std::sync::Arc;

use anyhow::{Context, Result};
use pollux_metrics::{Metrics, Server};

use crate::config::MetricsConfig;
use crate::daemon::Target;

/// A running endpoint. Stop it before the target, so no scrape reads a
/// graph that is being torn down (harmless, but pointless).
pub struct Exporter {
    /// The registry; front-ends register their gauges here.
    pub metrics: Arc<Metrics>,
    server: Server,
}

impl Exporter {
    /// Registers `target`'s sources and starts serving.
    pub fn start(cfg: &MetricsConfig, target: &Target) -> Result<Exporter> {
        let metrics = Arc::new(Metrics::new(env!("CARGO_PKG_VERSION")));
        metrics.register_reactors(target.runtime.handle().clone())?;
        metrics.register_graph(target.graph.clone())?;
        let server = Server::start(metrics.clone(), cfg.listen).context("metrics.listen")?;
        Ok(Exporter { metrics, server })
    }

    /// Stops serving and waits for the endpoint's thread.
    pub fn shutdown(self) {
        self.server.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::rc::Rc;
    use std::sync::mpsc;
    use std::time::Duration;

    use pollux_graph::{AlignedBuf, Io, IoBuf, IoOp, IoResult, IoSink};
    use pollux_poller::Reactor;

    use super::*;
    use crate::config::Config;

    struct Done(mpsc::Sender<IoResult>);

    impl IoSink for Done {
        fn io_done(&self, _r: &Reactor, _io: Io, result: IoResult) {
            let _ = self.0.send(result);
        }
    }

    fn scrape(exporter: &Exporter) -> String {
        let mut c = TcpStream::connect(exporter.server.local_addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.0 200 OK\r\n"), "{out}");
        out
    }

    fn value(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{series} missing:\n{text}"))
            .parse()
            .unwrap()
    }

    /// The daemon's wiring end to end: I/O through the target's graph shows
    /// up in what its endpoint serves.
    #[test]
    fn scraped_bdev_counters_follow_the_io() {
        let online = pollux_poller::cpu::online_cpus().unwrap();
        let core = online.iter().next().unwrap();
        let cfg = Config::from_toml_str(
            &format!(
                "[reactors]\ncores = [{core}]\nidle = \"adaptive\"\n\
                 [[bdev]]\nname = \"ram0\"\nkind = \"ram\"\nsize = \"1MiB\"\nblock_size = 4096\n\
                 [metrics]\nlisten = \"127.0.0.1:0\"\n"
            ),
            &online,
        )
        .unwrap();
        let target = Target::start(&cfg).unwrap();
        let exporter = Exporter::start(&cfg.metrics, &target).unwrap();
        let ops = "pollux_bdev_ops_total{bdev=\"ram0\",op=\"write\"}";
        let bytes = "pollux_bdev_bytes_total{bdev=\"ram0\",op=\"write\"}";
        let lat = "pollux_bdev_latency_seconds_count{bdev=\"ram0\",op=\"write\"}";
        let before = scrape(&exporter);
        assert_eq!(value(&before, ops), 0.0);

        let root = target.graph.add_root("t", "ram0").unwrap();
        let (tx, rx) = mpsc::channel();
        let graph = target.graph.clone();
        target
            .runtime
            .handle()
            .send_blocking(0, move |r: &Reactor| {
                let sink = Rc::new(Done(tx));
                for i in 0..10u64 {
                    let buf = IoBuf::Owned(AlignedBuf::zeroed(4096));
                    let io = Io::new(IoOp::Write, i * 4096, 4096, buf, sink.clone(), i);
                    graph.snapshot(r).submit(r, root, io);
                }
            });
        for _ in 0..10 {
            rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap();
        }

        let after = scrape(&exporter);
        assert_eq!(value(&after, ops), 10.0);
        assert_eq!(value(&after, bytes), 40960.0);
        assert_eq!(value(&after, lat), 10.0);
        // Adding the root was a publication.
        assert_eq!(
            value(&after, "pollux_graph_publishes_total"),
            value(&before, "pollux_graph_publishes_total") + 1.0
        );
        target.graph.remove_root("t").unwrap();
        exporter.shutdown();
        target.shutdown();
    }
}
