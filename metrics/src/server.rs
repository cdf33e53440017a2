//! The `/metrics` HTTP endpoint.
//!
//! It runs on its own control thread (never a reactor) with a
//! single-threaded tokio runtime driving hyper: each connection is a task,
//! so a slow or stuck client only holds its own task. Every connection is
//! bounded: the request headers must arrive within `HEADER_TIMEOUT`, the
//! whole exchange must finish within `REQUEST_TIMEOUT`, each connection
//! serves one request (no keep-alive to hold a slot idle), and at most
//! `MAX_CONNECTIONS` are open at once. The scrape itself (which may wait
//! for the graph's writer lock during a publication) runs on a small
//! blocking pool so it never stalls the accept loop.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{oneshot, Semaphore};

use crate::{Metrics, MetricsError};

/// The only path served.
pub const METRICS_PATH: &str = "/metrics";

/// Time a client gets to send its request headers: generous for any real
/// scraper on a LAN, short enough that a slowloris client cannot pin slots.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Time one connection may take in total, response included. Above
/// Prometheus' default scrape timeout (10 s), so a real scrape is never
/// cut short, while a client that stops reading is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections served at once; more are closed on accept. Scrapers open
/// one connection per scrape, so a few dozen is plenty even with several
/// Prometheus servers, and it caps what misbehaving clients can hold.
const MAX_CONNECTIONS: usize = 64;

/// Threads encoding scrapes at once (they may block on the graph lock).
const SCRAPE_THREADS: usize = 2;

/// Back-off after a failed accept (e.g. out of file descriptors), so the
/// loop does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How long shutdown waits for scrapes still encoding.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// The running endpoint. Dropping it stops it.
pub struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds `addr` and serves `metrics` on `GET /metrics` from a new
    /// thread. Port 0 picks a free port (see `local_addr`).
    pub fn start(metrics: Arc<Metrics>, addr: SocketAddr) -> Result<Server, MetricsError> {
        let _span = tracing::info_span!("metrics_server_start", %addr).entered();
        // Bound here, not on the server thread, so the caller learns at
        // once that the address is taken.
        let listener = std::net::TcpListener::bind(addr)
            .map_err(|source| MetricsError::Bind { addr, source })?;
        listener.set_nonblocking(true).map_err(MetricsError::Io)?;
        let local = listener.local_addr().map_err(MetricsError::Io)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .max_blocking_threads(SCRAPE_THREADS)
            .thread_name("pollux-scrape")
            .build()
            .map_err(MetricsError::Io)?;
        let (stop_tx, stop_rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("pollux-metrics".into())
            .spawn(move || {
                runtime.block_on(serve(listener, metrics, stop_rx));
                runtime.shutdown_timeout(SHUTDOWN_GRACE);
            })
            .map_err(MetricsError::Io)?;
        tracing::info!(addr = %local, "metrics endpoint listening");
        Ok(Server {
            addr: local,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, drops open connections and joins the thread.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

async fn serve(
    listener: std::net::TcpListener,
    metrics: Arc<Metrics>,
    mut stop: oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "metrics endpoint cannot use its socket");
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            _ = &mut stop => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "metrics endpoint: too many connections, closing");
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .serve_connection(
                    TokioIo::new(stream),
                    service_fn(move |req| respond(req, metrics.clone())),
                );
            match tokio::time::timeout(REQUEST_TIMEOUT, conn).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "metrics connection failed"),
                Err(_) => tracing::debug!(%peer, "metrics connection timed out"),
            }
        });
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r
}

async fn respond(
    req: Request<Incoming>,
    metrics: Arc<Metrics>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() != METRICS_PATH {
        return Ok(text(StatusCode::NOT_FOUND, "not found; try /metrics\n"));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Ok(r);
    }
    let encoded = tokio::task::spawn_blocking(move || metrics.encode()).await;
    Ok(match encoded {
        Ok(Ok(body)) => {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(prometheus::TEXT_FORMAT),
            );
            r
        }
        Ok(Err(e)) => {
            tracing::error!(error = ?e, "metrics scrape failed");
            text(StatusCode::INTERNAL_SERVER_ERROR, "scrape failed\n")
        }
        Err(e) => {
            tracing::error!(error = %e, "metrics scrape panicked");
            text(StatusCode::INTERNAL_SERVER_ERROR, "scrape failed\n")
        }
    })
}
