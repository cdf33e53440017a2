//! The JSON-RPC Unix socket: one accept thread, one thread per client.
//!
//! Requests run on these control threads, never on a reactor. A client that
//! is slow or stuck only holds its own thread; the number of clients and the
//! size of a pending request are bounded.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;

use super::jsonrpc::{self, code, Next, RpcError};
use super::Dispatcher;

/// Concurrent clients; more are answered with an error and closed, so a
/// flood of idle connections cannot exhaust threads.
const MAX_CLIENTS: usize = 64;

/// Largest request accepted; SPDK's own server limit is in the same range.
/// Past it the client gets a parse error and is disconnected.
const MAX_REQUEST: usize = 4 << 20;

/// How often blocked threads look at the stop flag. Only stopping waits
/// for it: a connection or a request ends the wait at once.
const POLL: Duration = Duration::from_millis(100);

/// A client that does not read its answers for this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The running server; dropping it stops accepting and removes the socket.
pub struct RpcServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RpcServer {
    /// Listens on `path` (mode 0600, a stale socket file is replaced).
    pub fn start(path: &Path, dispatcher: Arc<Dispatcher>) -> Result<RpcServer> {
        if path.exists() {
            std::fs::remove_file(path)
                .with_context(|| format!("removing stale RPC socket {}", path.display()))?;
        }
        let listener = UnixListener::bind(path)
            .with_context(|| format!("creating RPC socket {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("setting mode 0600 on {}", path.display()))?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("rpc-accept".into())
            .spawn(move || accept_loop(listener, dispatcher, stop2))?;
        tracing::info!(socket = %path.display(), "JSON-RPC listening");
        Ok(RpcServer {
            path: path.to_owned(),
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for RpcServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn accept_loop(listener: UnixListener, dispatcher: Arc<Dispatcher>, stop: Arc<AtomicBool>) {
    let clients = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::Relaxed) {
        // Block until a client connects (or POLL passes, to look at the
        // stop flag). Sleeping between non-blocking accepts instead made
        // every connection wait for the rest of the sleep: rpc.py opens one
        // per call, so each RPC took ~25 ms.
        match wait_readable(&listener, POLL) {
            Ok(false) => continue,
            Ok(true) => {}
            Err(e) => {
                tracing::warn!(error = %e, "RPC socket poll failed");
                std::thread::sleep(POLL);
                continue;
            }
        }
        match listener.accept() {
            Ok((stream, _)) => {
                if clients.load(Ordering::Relaxed) >= MAX_CLIENTS {
                    let _ = refuse(stream);
                    continue;
                }
                clients.fetch_add(1, Ordering::Relaxed);
                let (d, s, c) = (dispatcher.clone(), stop.clone(), clients.clone());
                let spawned =
                    std::thread::Builder::new()
                        .name("rpc-client".into())
                        .spawn(move || {
                            if let Err(e) = serve_client(stream, &d, &s) {
                                tracing::debug!(error = %e, "RPC client closed");
                            }
                            c.fetch_sub(1, Ordering::Relaxed);
                        });
                if spawned.is_err() {
                    clients.fetch_sub(1, Ordering::Relaxed);
                }
            }
            // Another wakeup took it, or the client gave up meanwhile.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => {
                tracing::warn!(error = %e, "RPC accept failed");
                std::thread::sleep(POLL);
            }
        }
    }
}

/// Waits up to `timeout` for `listener` to have a connection to accept.
fn wait_readable(listener: &UnixListener, timeout: Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `pfd` is one valid pollfd on our stack, for a descriptor the
    // borrowed listener keeps open for the whole call.
    let n = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as libc::c_int) };
    match n {
        n if n > 0 => Ok(true),
        0 => Ok(false),
        _ => {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            }
        }
    }
}

fn refuse(mut stream: UnixStream) -> io::Result<()> {
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let err = RpcError::failed("too many RPC clients");
    write_value(&mut stream, &jsonrpc::response(None, Err(err)))
}

fn write_value(stream: &mut UnixStream, v: &Value) -> io::Result<()> {
    let mut out = serde_json::to_vec(v).expect("a Value serializes");
    out.push(b'\n');
    stream.write_all(&out)
}

fn serve_client(mut stream: UnixStream, d: &Dispatcher, stop: &AtomicBool) -> io::Result<()> {
    stream.set_read_timeout(Some(POLL))?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 16 << 10];
    loop {
        // Answer every complete request already buffered.
        loop {
            match jsonrpc::next_value(&buf) {
                Next::Value(v, used) => {
                    buf.drain(..used);
                    if let Some(answer) = d.handle_value(v) {
                        write_value(&mut stream, &answer)?;
                    }
                }
                Next::Incomplete => break,
                Next::Invalid(msg) => {
                    // The stream cannot be resynchronised: answer and close.
                    let err = RpcError {
                        code: code::PARSE_ERROR,
                        message: format!("parse error: {msg}"),
                    };
                    return write_value(&mut stream, &jsonrpc::response(None, Err(err)));
                }
            }
        }
        if buf.len() > MAX_REQUEST {
            let err = RpcError {
                code: code::PARSE_ERROR,
                message: format!("request larger than {MAX_REQUEST} bytes"),
            };
            return write_value(&mut stream, &jsonrpc::response(None, Err(err)));
        }
        if buf.iter().all(u8::is_ascii_whitespace) {
            buf.clear();
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// `pollux rpc`: sends one request and returns the answer object.
pub fn call(path: &Path, method: &str, params: Option<Value>) -> Result<Value> {
    let mut stream = UnixStream::connect(path)
        .with_context(|| format!("connecting to {} (is pollux running?)", path.display()))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut req = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method});
    if let Some(p) = params {
        req["params"] = p;
    }
    write_value(&mut stream, &req)?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 << 10];
    loop {
        if let Next::Value(v, _) = jsonrpc::next_value(&buf) {
            return Ok(v);
        }
        let n = stream.read(&mut chunk).context("reading the answer")?;
        if n == 0 {
            anyhow::bail!("connection closed before a complete answer");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
