//! What the NVMe/TCP tests with the Linux guest share: a subsystem built
//! over rpc.py ([`SpdkRpc::export_tcp`], [`SpdkRpc::add_tcp_listener`]),
//! the guest's shell steps that wait for a namespace's block device, and
//! the guest's way of telling the host to go on ([`wait_guest_signal`]).

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{tcp_listener, Daemon, SpdkRpc};

/// What the daemon logs when a discovery controller is made: a guest's
/// `nvme discover` ([`GUEST_SIGNAL_CMD`]) is its "go on" to the host,
/// which sees no guest output until the guest ends.
pub const SIGNAL: &str = "subnqn=\"nqn.2014-08.org.nvmexpress.discovery\"";

/// The guest shell function `signal` that sends [`SIGNAL`] through the
/// target's listener on `port` (the guest reaches the host's loopback as
/// 10.0.2.2 only).
pub fn guest_signal_fn(port: u16) -> String {
    format!("signal() {{ nvme discover -t tcp -a 10.0.2.2 -s {port} > /dev/null 2>&1 || true; }}\n")
}

/// Waits until the daemon has logged the guest's `n`-th [`SIGNAL`];
/// panics with the log if the guest ends first or after 300 s.
pub fn wait_guest_signal<T>(daemon: &Daemon, guest: &JoinHandle<T>, n: usize) {
    let start = Instant::now();
    while daemon.log().matches(SIGNAL).count() < n {
        if guest.is_finished() || start.elapsed() > Duration::from_secs(300) {
            panic!("no guest signal {n}:\n{}", daemon.log());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A guest shell line that waits up to `tries` tenths of a second for
/// `/dev/DEV`, and otherwise prints `NO_DEVICE DEV` and `nvme list` and
/// exits 1.
pub fn guest_wait_dev(dev: &str, tries: u32) -> String {
    format!(
        "i=0; while [ ! -b /dev/{dev} ]; do i=$((i+1)); \
         [ $i -gt {tries} ] && {{ echo NO_DEVICE {dev}; nvme list; exit 1; }}; sleep 0.1; done\n"
    )
}

impl SpdkRpc {
    /// `nvmf_subsystem_add_listener NQN -t tcp -a 127.0.0.1 -s PORT` and
    /// `extra` options (such as `-n non_optimized`).
    pub fn add_tcp_listener(&self, nqn: &str, port: u16, extra: &[&str]) {
        let port = port.to_string();
        let mut add = vec!["nvmf_subsystem_add_listener", nqn];
        add.extend(tcp_listener(&port));
        add.extend(extra);
        self.run(&add);
    }

    /// Exports `bdev` over NVMe/TCP as the tests do: subsystem `nqn` open
    /// to any host, `bdev` its namespace, a TCP listener on
    /// 127.0.0.1:`port`. The transport must exist.
    pub fn export_tcp(&self, nqn: &str, bdev: &str, port: u16) {
        self.run(&["nvmf_create_subsystem", nqn, "-a"]);
        self.run(&["nvmf_subsystem_add_ns", nqn, bdev]);
        self.add_tcp_listener(nqn, port, &[]);
    }
}
