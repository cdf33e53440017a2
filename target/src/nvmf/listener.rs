//! Listeners: one control thread per address accepts connections and
//! hands each socket to a reactor (round robin), which owns it from then
//! on. Accepting is control path; nothing here touches the I/O path.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::{group, Shared, MAX_CONNECTIONS_PER_LISTENER};

/// How often an idle accept thread re-checks its stop flag.
const ACCEPT_POLL: Duration = Duration::from_millis(100);
/// Back-off after an accept error such as EMFILE, so a descriptor shortage
/// does not become a busy loop.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// One live connection counted against its listener's limit; released
/// when the connection (its owner) is dropped.
pub struct ConnPermit {
    count: Arc<AtomicUsize>,
    total: Arc<Shared>,
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
        self.total.conns.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A bound listener and its accept thread.
pub struct Listener {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    /// Binds `addr` (no thread yet: `start` once subsystems exist).
    pub fn bind(addr: SocketAddr) -> io::Result<(TcpListener, SocketAddr)> {
        let l = TcpListener::bind(addr)?;
        let bound = l.local_addr()?;
        l.set_nonblocking(true)?;
        Ok((l, bound))
    }

    /// Starts accepting on `l`.
    pub fn start(l: TcpListener, addr: SocketAddr, shared: Arc<Shared>) -> io::Result<Listener> {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("nvmf-accept-{}", addr.port()))
            .spawn(move || accept_loop(l, addr, shared, stop2))?;
        Ok(Listener {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops accepting and joins the thread; the socket closes.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop();
    }
}

fn wait_readable(l: &TcpListener, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd: l.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `pfd` is one valid pollfd for the duration of the call and
    // we pass a count of 1.
    let n = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as libc::c_int) };
    n > 0
}

fn accept_loop(l: TcpListener, addr: SocketAddr, shared: Arc<Shared>, stop: Arc<AtomicBool>) {
    let count = Arc::new(AtomicUsize::new(0));
    let reactors = shared.graph.handle().num_reactors().max(1);
    let mut next = 0usize;
    tracing::info!(%addr, "nvmf: listening");
    while !stop.load(Ordering::Acquire) {
        if !wait_readable(&l, ACCEPT_POLL) {
            continue;
        }
        let (sock, peer) = match l.accept() {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!(%addr, error = %e, "nvmf: accept failed");
                std::thread::sleep(ACCEPT_ERROR_BACKOFF);
                continue;
            }
        };
        if shared.stopping.load(Ordering::Acquire) {
            break;
        }
        if count.load(Ordering::Acquire) >= MAX_CONNECTIONS_PER_LISTENER {
            // Refused by closing at once: the host sees a reset/EOF before
            // ICResp and may retry; existing queue pairs are unaffected.
            tracing::warn!(%addr, %peer, limit = MAX_CONNECTIONS_PER_LISTENER,
                "nvmf: connection limit reached, refusing");
            drop(sock);
            continue;
        }
        count.fetch_add(1, Ordering::AcqRel);
        shared.conns.fetch_add(1, Ordering::AcqRel);
        let permit = ConnPermit {
            count: count.clone(),
            total: shared.clone(),
        };
        let target = next % reactors;
        next = next.wrapping_add(1);
        let sh = shared.clone();
        shared.graph.handle().send_blocking(target, move |r| {
            group::attach(r, sh, sock, addr, permit);
        });
    }
    tracing::info!(%addr, "nvmf: listener stopped");
}
