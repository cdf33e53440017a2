//! The harness the integration tests share: the `pollux` daemon started
//! from a config in a private temp dir ([`Daemon`]), free ports, SPDK's
//! JSON-RPC client ([`SpdkRpc`]), the throw-away Linux guest
//! ([`VmClient`]) and the Prometheus endpoint ([`scrape`], [`series`]).
//!
//! Each test binary includes this with `mod support;`.

// Every test binary compiles its own copy of this module and uses only
// part of it, so what one binary leaves unused is not dead code.
#![allow(dead_code)]

pub mod blkio_host;
pub mod nvmf_guest;

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The line the daemon logs once everything in its config is up.
pub const READY: &str = "pollux ready";

/// `len` bytes that only `seed` produces (deterministic, so a test can
/// write them, read them back and compare, or regenerate them later).
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut out = vec![0; len];
    rand::rngs::SmallRng::seed_from_u64(seed).fill_bytes(&mut out);
    out
}

/// The `pollux` binary, logging at info without colour codes.
pub fn pollux() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pollux"));
    c.env("POLLUX_LOG", "info").env("NO_COLOR", "1");
    c
}

/// rpc.py's options naming a TCP listener on 127.0.0.1:`port`, for
/// `nvmf_subsystem_add_listener` and `nvmf_subsystem_remove_listener`.
pub fn tcp_listener(port: &str) -> [&str; 6] {
    ["-t", "tcp", "-a", "127.0.0.1", "-s", port]
}

/// A port nothing listens on right now (the kernel's pick, released at once).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Creates `path` as a sparse file of `len` bytes (a backing disk image).
pub fn sparse_file(path: &Path, len: u64) {
    std::fs::File::create(path).unwrap().set_len(len).unwrap();
}

/// MD5 of `data` via coreutils, in hex, as the guest's busybox `md5sum`
/// prints it (to compare what the guest read with a backing file).
pub fn md5_of(data: &[u8]) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("md5sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// [`md5_of`] the `len` bytes at `offset` of the file at `path` (a
/// backing disk image, to compare with what a guest read).
pub fn file_md5(path: &Path, offset: u64, len: u64) -> String {
    use std::io::Seek;
    let mut f = std::fs::File::open(path).unwrap();
    f.seek(std::io::SeekFrom::Start(offset)).unwrap();
    let mut data = Vec::new();
    f.take(len).read_to_end(&mut data).unwrap();
    assert_eq!(data.len() as u64, len, "{} is shorter", path.display());
    md5_of(&data)
}

/// When [`DaemonBuilder::start`] considers the daemon up.
pub enum Ready {
    /// It logged a line containing this text.
    LogLine(&'static str),
    /// Its `--rpc-socket` accepts connections.
    RpcSocket,
    /// This Unix socket accepts connections.
    Socket(PathBuf),
    /// This TCP address accepts connections.
    Tcp(SocketAddr),
}

/// How to start a [`Daemon`]; see [`Daemon::builder`].
pub struct DaemonBuilder {
    dir: tempfile::TempDir,
    config: Option<String>,
    rpc_socket: bool,
    args: Vec<OsString>,
    log_filter: String,
    ready: Ready,
    timeout: Duration,
}

impl DaemonBuilder {
    /// The daemon's private directory (its config and RPC socket go here),
    /// for paths the config text names.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Uses `dir` as the daemon's private directory (removed with it).
    pub fn in_dir(mut self, dir: tempfile::TempDir) -> Self {
        self.dir = dir;
        self
    }

    /// The TOML config, written to `pollux.toml` in the daemon's directory
    /// and passed as `--config`. Without it, the embedded default runs.
    pub fn config(mut self, text: impl Into<String>) -> Self {
        self.config = Some(text.into());
        self
    }

    /// The config of an empty target: adaptive reactors on `cores` (TOML,
    /// such as `[0, 1]`), metrics on a free port, vhost controller sockets
    /// in the daemon's directory (so after [`Self::in_dir`], if any).
    pub fn empty_target(self, cores: &str) -> Self {
        let cfg = format!(
            "[reactors]\ncores = {cores}\nidle = \"adaptive\"\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\n\
             [vhost]\nsocket_dir = \"{}\"\n",
            self.dir().display()
        );
        self.config(cfg)
    }

    /// No `--rpc-socket` (the daemon uses its config's or the default).
    pub fn no_rpc_socket(mut self) -> Self {
        self.rpc_socket = false;
        self
    }

    /// Extra command-line arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// `POLLUX_LOG` (default `info`).
    pub fn log_filter(mut self, filter: &str) -> Self {
        self.log_filter = filter.to_owned();
        self
    }

    /// When the daemon counts as started (default: it logged [`READY`]).
    pub fn ready(mut self, ready: Ready) -> Self {
        self.ready = ready;
        self
    }

    /// How long starting, and stopping, may each take (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Starts the daemon and waits until it is ready; panics with its log
    /// if it exits first or takes longer than the timeout.
    pub fn start(self) -> Daemon {
        let mut cmd = pollux();
        cmd.env("POLLUX_LOG", &self.log_filter);
        let config = self.config.as_ref().map(|text| {
            let cfg = self.dir.path().join("pollux.toml");
            std::fs::write(&cfg, text).unwrap();
            cmd.arg("--config").arg(&cfg);
            cfg
        });
        let rpc_socket = self.rpc_socket.then(|| self.dir.path().join("rpc.sock"));
        if let Some(sock) = &rpc_socket {
            // A private RPC socket, so tests can run beside other daemons.
            cmd.arg("--rpc-socket").arg(sock);
        }
        let mut child = cmd
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start pollux");
        let stderr = child.stderr.take().unwrap();
        let ready_line = match self.ready {
            Ready::LogLine(l) => Some(l),
            _ => None,
        };
        let (log, logged) = collect_log(stderr, ready_line);
        let mut d = Daemon {
            child,
            dir: self.dir,
            config,
            rpc_socket,
            log,
            timeout: self.timeout,
        };
        let deadline = Instant::now() + d.timeout;
        let wait_connect = |d: &mut Daemon, what: &str, connect: &dyn Fn() -> bool| {
            while !connect() {
                if let Some(st) = d.child.try_wait().unwrap() {
                    panic!("pollux exited ({st}) before {what} came up:\n{}", d.log());
                }
                assert!(
                    Instant::now() < deadline,
                    "{what} never came up within {:?}:\n{}",
                    d.timeout,
                    d.log()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        match self.ready {
            Ready::LogLine(line) => match logged.recv_timeout(d.timeout) {
                Ok(true) => {}
                Ok(false) | Err(RecvTimeoutError::Disconnected) => {
                    panic!("pollux exited before it logged {line:?}:\n{}", d.log())
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "pollux did not log {line:?} within {:?}:\n{}",
                    d.timeout,
                    d.log()
                ),
            },
            Ready::RpcSocket => {
                let sock = d.rpc_socket().to_owned();
                wait_connect(&mut d, "the RPC socket", &|| {
                    UnixStream::connect(&sock).is_ok()
                });
            }
            Ready::Socket(sock) => {
                wait_connect(&mut d, &format!("socket {}", sock.display()), &|| {
                    UnixStream::connect(&sock).is_ok()
                });
            }
            Ready::Tcp(addr) => {
                wait_connect(&mut d, &format!("listener {addr}"), &|| {
                    TcpStream::connect(addr).is_ok()
                });
            }
        }
        d
    }
}

/// The log as far as read, and the metrics address once logged.
#[derive(Default)]
struct Log {
    text: String,
    metrics: Option<SocketAddr>,
}

/// Reads the daemon's stderr into a shared [`Log`] on a thread. The
/// receiver gets `true` when a line contains `ready_line`, `false` when
/// stderr closes.
fn collect_log(
    stderr: std::process::ChildStderr,
    ready_line: Option<&'static str>,
) -> (Arc<Mutex<Log>>, Receiver<bool>) {
    let log = Arc::new(Mutex::new(Log::default()));
    let (tx, rx) = std::sync::mpsc::channel();
    let shared = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let line = strip_ansi(&line);
            let mut l = shared.lock().unwrap();
            if line.contains("metrics endpoint listening") {
                l.metrics = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("addr="))
                    .and_then(|a| a.parse().ok());
            }
            l.text.push_str(&line);
            l.text.push('\n');
            drop(l);
            if ready_line.is_some_and(|r| line.contains(r)) {
                let _ = tx.send(true);
            }
        }
        let _ = tx.send(false);
    });
    (log, rx)
}

/// Removes terminal colour codes the log formatter may add.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC '[' parameters, ending with a letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A running `pollux` daemon with its stderr collected. Dropping it stops
/// it (SIGTERM, then SIGKILL if it does not stop within the timeout; at
/// once SIGKILL, after printing the log, when the test is panicking).
pub struct Daemon {
    child: Child,
    dir: tempfile::TempDir,
    config: Option<PathBuf>,
    rpc_socket: Option<PathBuf>,
    log: Arc<Mutex<Log>>,
    timeout: Duration,
}

impl Daemon {
    /// A daemon in a fresh temp dir, with a private `--rpc-socket` there,
    /// ready once it logs [`READY`].
    pub fn builder() -> DaemonBuilder {
        DaemonBuilder {
            dir: tempfile::tempdir().unwrap(),
            config: None,
            rpc_socket: true,
            args: Vec::new(),
            log_filter: "info".to_owned(),
            ready: Ready::LogLine(READY),
            timeout: Duration::from_secs(30),
        }
    }

    /// The daemon's private directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The `--config` file it was given.
    pub fn config_path(&self) -> &Path {
        self.config
            .as_deref()
            .expect("the daemon was started without --config")
    }

    /// The `--rpc-socket` it was given.
    pub fn rpc_socket(&self) -> &Path {
        self.rpc_socket
            .as_deref()
            .expect("the daemon was started without --rpc-socket")
    }

    /// SPDK's client, talking to [`Self::rpc_socket`].
    pub fn spdk(&self) -> SpdkRpc {
        SpdkRpc::new(self.rpc_socket())
    }

    /// Its stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().text.clone()
    }

    /// The metrics endpoint's address, from the log.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.log
            .lock()
            .unwrap()
            .metrics
            .unwrap_or_else(|| panic!("pollux logged no metrics address:\n{}", self.log()))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How many file descriptors the daemon has open.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .count()
    }

    /// SIGTERM, and its exit status once it stopped.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal_and_wait(libc::SIGTERM)
    }

    /// Sends `sig` and waits for the daemon to exit; panics with the log
    /// if it does not within the timeout.
    pub fn signal_and_wait(&mut self, sig: i32) -> ExitStatus {
        self.signal(sig);
        self.wait_exit()
            .unwrap_or_else(|| panic!("pollux did not stop; log:\n{}", self.log()))
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid has no memory-safety
        // preconditions.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    fn wait_exit(&mut self) -> Option<ExitStatus> {
        let deadline = Instant::now() + self.timeout;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        if std::thread::panicking() {
            eprintln!("pollux log:\n{}", self.log());
        } else {
            self.signal(libc::SIGTERM);
            if self.wait_exit().is_some() {
                return;
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One GET over HTTP/1.0 (the server closes the connection after an
/// unchunked body): the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let (head, body) = http_get_raw(addr, path);
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, body)
}

fn http_get_raw(addr: SocketAddr, path: &str) -> (String, String) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(c, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut raw = String::new();
    c.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    (head.to_owned(), body.to_owned())
}

/// The body of `/metrics` at `addr`, which must answer `200 OK`.
pub fn scrape(addr: SocketAddr) -> String {
    let (head, body) = http_get_raw(addr, "/metrics");
    assert!(head.starts_with("HTTP/1.0 200 OK"), "{head}\n\n{body}");
    body
}

/// The value of the sample whose name and labels are exactly `name`.
pub fn try_series(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
}

/// Like [`try_series`], panicking when the sample is missing.
pub fn series(text: &str, name: &str) -> f64 {
    try_series(text, name).unwrap_or_else(|| panic!("{name} missing:\n{text}"))
}

/// Every release of the `spdk` package (SPDK's rpc.py) on PyPI, oldest
/// first. scripts/test-deps.sh installs each into its own venv,
/// [`spdk_release_venv`]; the RPC acceptance test (tests/rpc_releases.rs)
/// drives Pollux with each one.
pub const SPDK_RELEASES: &[&str] = &["25.5", "25.5.1", "25.9", "26.1", "26.5", "26.9"];

/// Where scripts/test-deps.sh installs `spdk==version`:
/// `/opt/spdk-rpc-VERSION`, or `$SPDK_RPC_VENVS/spdk-rpc-VERSION`.
pub fn spdk_release_venv(version: &str) -> PathBuf {
    let base = std::env::var_os("SPDK_RPC_VENVS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt"));
    base.join(format!("spdk-rpc-{version}"))
}

/// SPDK's JSON-RPC client (`spdk-rpc`, rpc.py from the `spdk` Python
/// package, and its `JSONRPCClient`) bound to one socket. `SPDK_RPC`
/// overrides the `spdk-rpc` path of [`SpdkRpc::new`].
pub struct SpdkRpc {
    bin: PathBuf,
    sock: PathBuf,
}

impl SpdkRpc {
    /// The client of one `spdk` release ([`SPDK_RELEASES`]) from its venv.
    /// Panics, saying how to install it, when that venv is missing or holds
    /// another release: the release tests never skip.
    pub fn release(sock: &Path, version: &str) -> SpdkRpc {
        let venv = spdk_release_venv(version);
        let bin = venv.join("bin/spdk-rpc");
        assert!(
            bin.exists(),
            "SPDK's rpc client {version} is missing at {}: run scripts/test-deps.sh, or \
             `python3 -m venv {v} && {v}/bin/pip install spdk=={version}`",
            bin.display(),
            v = venv.display()
        );
        let installed = Command::new(venv.join("bin/python3"))
            .args([
                "-c",
                "import importlib.metadata as m; print(m.version('spdk'))",
            ])
            .output()
            .unwrap();
        let installed = String::from_utf8_lossy(&installed.stdout).trim().to_owned();
        assert_eq!(
            installed,
            version,
            "{} holds spdk {installed}, not {version}: run scripts/test-deps.sh",
            venv.display()
        );
        SpdkRpc {
            bin,
            sock: sock.to_owned(),
        }
    }

    /// Panics, saying how to install it, when the client is missing.
    pub fn new(sock: &Path) -> SpdkRpc {
        let bin = std::env::var_os("SPDK_RPC")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/opt/spdk-rpc/bin/spdk-rpc"));
        assert!(
            bin.exists(),
            "SPDK's rpc client is missing at {}: run scripts/test-deps.sh, or \
             `python3 -m venv /opt/spdk-rpc && /opt/spdk-rpc/bin/pip install spdk==26.9`",
            bin.display()
        );
        SpdkRpc {
            bin,
            sock: sock.to_owned(),
        }
    }

    /// `spdk-rpc -s SOCK args...`: its stdout as JSON (or as a JSON string
    /// when it prints a bare word), or its stdout and stderr on failure.
    pub fn try_run(&self, args: &[&str]) -> Result<Value, String> {
        let out = Command::new(&self.bin)
            .arg("-s")
            .arg(&self.sock)
            .args(args)
            .output()
            .unwrap();
        // rpc.py prints the JSON-RPC error on stdout.
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() {
            return Err(format!("{text}{}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// `spdk-rpc -s SOCK args...` with `input` on its stdin (rpc.py runs
    /// one command per line from stdin, and sends them as one JSON-RPC
    /// batch with `-b`): its stdout and whether it succeeded.
    pub fn run_stdin(&self, args: &[&str], input: &str) -> (bool, String) {
        let mut child = Command::new(&self.bin)
            .arg("-s")
            .arg(&self.sock)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// This client in `--server` mode ([`SpdkRpcServer`]).
    pub fn server(&self) -> SpdkRpcServer {
        let mut child = Command::new(&self.bin)
            .arg("--server")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let mut err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        SpdkRpcServer {
            stdin: child.stdin.take(),
            stdout: BufReader::new(child.stdout.take().unwrap()),
            stderr,
            child,
            sock: self.sock.clone(),
        }
    }

    /// [`Self::try_run`], which must succeed.
    pub fn run(&self, args: &[&str]) -> Value {
        self.try_run(args)
            .unwrap_or_else(|e| panic!("spdk-rpc {args:?} failed: {e}"))
    }

    /// [`Self::try_run`], which must fail: the error text.
    pub fn fails(&self, args: &[&str]) -> String {
        match self.try_run(args) {
            Ok(v) => panic!("spdk-rpc {args:?} should fail, returned {v}"),
            Err(e) => e,
        }
    }

    /// Runs the Python `body` with SPDK's `JSONRPCClient` bound to `c`
    /// (and `json`, `sys` imported); `args` are `sys.argv[2..]`.
    pub fn python(&self, body: &str, args: &[&str]) -> Output {
        let script = format!(
            "import json, sys\nfrom spdk.rpc.client import JSONRPCClient\n\
             c = JSONRPCClient(sys.argv[1])\n{body}"
        );
        Command::new(self.bin.with_file_name("python3"))
            .args(["-c", &script])
            .arg(&self.sock)
            .args(args)
            .output()
            .unwrap()
    }

    /// Calls any method through `JSONRPCClient` (for methods rpc.py has no
    /// subcommand for): the result, or the error text (which carries the
    /// JSON-RPC code and message).
    pub fn try_call(&self, method: &str, params: Value) -> Result<Value, String> {
        let out = self.python(
            "print(json.dumps(c.call(sys.argv[2], json.loads(sys.argv[3]))))\n",
            &[method, &params.to_string()],
        );
        if out.status.success() {
            Ok(serde_json::from_slice(&out.stdout).unwrap())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// [`Self::try_call`], which must succeed.
    pub fn call(&self, method: &str, params: Value) -> Value {
        self.try_call(method, params)
            .unwrap_or_else(|e| panic!("{method} failed: {e}"))
    }
}

/// rpc.py's `--server` mode (every release since 25.05 has it): one
/// `spdk-rpc` process reads command lines on stdin and ends each answer
/// with a `**STATUS=0|1` line. Each line goes through the same argument
/// parser and client as a plain `spdk-rpc` invocation (a fresh connection
/// per command), without starting Python for every command.
pub struct SpdkRpcServer {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    stdout: BufReader<std::process::ChildStdout>,
    stderr: Arc<Mutex<String>>,
    sock: PathBuf,
}

/// `arg` quoted for Python's `shlex.split`.
fn sh_quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', "'\\''"))
}

impl SpdkRpcServer {
    /// Runs one command: its output as JSON (or as a JSON string for a
    /// bare word), or its output and stderr on failure.
    pub fn try_run(&mut self, args: &[&str]) -> Result<Value, String> {
        let mut line = format!("-s {}", sh_quote(&self.sock.to_string_lossy()));
        for a in args {
            line.push(' ');
            line.push_str(&sh_quote(a));
        }
        line.push('\n');
        let stdin = self.stdin.as_mut().expect("the server is running");
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.flush().unwrap();
        let mut out = String::new();
        loop {
            let mut l = String::new();
            if self.stdout.read_line(&mut l).unwrap() == 0 {
                let status = self.child.wait().unwrap();
                panic!(
                    "spdk-rpc --server exited ({status}) during {args:?}:\n{out}{}",
                    self.stderr.lock().unwrap()
                );
            }
            match l.trim_end() {
                "**STATUS=0" => {
                    let text = out.trim();
                    return Ok(serde_json::from_str(text)
                        .unwrap_or_else(|_| Value::String(text.to_owned())));
                }
                "**STATUS=1" => {
                    // argparse reports on stderr; give it a moment to land.
                    std::thread::sleep(Duration::from_millis(20));
                    let err = std::mem::take(&mut *self.stderr.lock().unwrap());
                    return Err(format!("{out}{err}"));
                }
                _ => out.push_str(&l),
            }
        }
    }

    /// [`Self::try_run`], which must succeed.
    pub fn run(&mut self, args: &[&str]) -> Value {
        self.try_run(args)
            .unwrap_or_else(|e| panic!("spdk-rpc {args:?} failed: {e}"))
    }

    /// [`Self::try_run`], which must fail: the error text.
    pub fn fails(&mut self, args: &[&str]) -> String {
        match self.try_run(args) {
            Ok(v) => panic!("spdk-rpc {args:?} should fail, returned {v}"),
            Err(e) => e,
        }
    }
}

impl Drop for SpdkRpcServer {
    fn drop(&mut self) {
        // End of input ends the server.
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// `../shared/vm/vm-client`, which boots a throw-away QEMU guest and runs
/// a shell script in it. `VM_CLIENT` overrides its path, `VM_CLIENT_ACCEL`
/// the accelerator (default `tcg`: on the CI hosts KVM is a PVM that makes
/// QEMU abort, see ../shared/vm/README.md).
pub struct VmClient {
    path: PathBuf,
}

impl VmClient {
    /// Panics when vm-client is missing: the VM tests never skip.
    pub fn find() -> VmClient {
        let path = std::env::var_os("VM_CLIENT")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/vm/vm-client")
            });
        assert!(
            path.is_file(),
            "vm-client not found at {} (set VM_CLIENT): this test needs it and does not skip",
            path.display()
        );
        VmClient { path }
    }

    /// Boots a guest with the vm-client `options` (e.g. `--cpus 2`), runs
    /// `script` in it, killing it after `timeout_secs`.
    pub fn run(&self, options: &[&str], timeout_secs: u32, script: &str) -> VmRun {
        let accel = std::env::var("VM_CLIENT_ACCEL").unwrap_or_else(|_| "tcg".into());
        let out = Command::new(&self.path)
            .args(options)
            .args(["--accel", &accel, "--timeout", &timeout_secs.to_string()])
            .args(["--", script])
            .stdin(Stdio::null())
            .output()
            .expect("cannot run vm-client");
        VmRun {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// What a guest run printed.
pub struct VmRun {
    /// vm-client's: the guest script's exit code, 124 on timeout.
    pub status: ExitStatus,
    /// The guest script's output.
    pub stdout: String,
    pub stderr: String,
}

impl VmRun {
    /// The rest of the first guest output line starting with `key`, trimmed.
    pub fn marker(&self, key: &str) -> Option<&str> {
        self.stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .map(str::trim)
    }

    /// Everything there is to know when an assertion fails.
    pub fn report(&self, pollux_log: &str) -> String {
        format!(
            "vm-client {}\n--- guest output ---\n{}\n--- vm-client stderr ---\n{}\n--- pollux log ---\n{pollux_log}",
            self.status, self.stdout, self.stderr
        )
    }
}
