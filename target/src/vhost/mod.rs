//! vhost-user-blk: local VMs (QEMU, cloud-hypervisor, libblkio clients)
//! reach Pollux through a Unix socket per `[[vhost.blk]]`.
//!
//! Threads: one control thread per device accepts a front-end and runs the
//! vhost-user protocol (`backend`); every virtqueue is polled by a poller on
//! the reactor the config maps it to (`queue`), with no worker thread per
//! queue. Rooms: `request` (descriptor chain → request, pure, fuzzed),
//! `config_space` (feature bits and the virtio-blk config space), `memory`
//! (the front-end's memory table), `inflight` (INFLIGHT_SHMFD tracking).

mod backend;
mod config_space;
mod inflight;
mod memory;
mod queue;
pub mod request;

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use pollux_graph::Graph;
use pollux_poller::Handle;
use vhost::vhost_user::{BackendReqHandler, Error as VuError};

use crate::config::VhostBlkConfig;
use backend::{DeviceCtl, Session};
use queue::DeviceInfo;
use request::{Limits, ID_BYTES, SECTOR_SIZE};

/// SEG_MAX: QEMU's default for a 128-entry ring (queue size minus header
/// and status), the number Linux guests size their requests by.
const SEG_MAX: u32 = 126;
/// SIZE_MAX: largest data descriptor. Guests split larger segments; 1 MiB
/// keeps one request's bounce buffer (file node, unaligned memory) bounded.
const SIZE_MAX: u32 = 1 << 20;
/// Largest discard / write-zeroes range, in sectors (32 MiB): ram and file
/// nodes zero synchronously or in one syscall, and a bigger range would
/// hold the reactor (ram) for too long.
const MAX_DWZ_SECTORS: u32 = 1 << 16;
/// One range per discard / write-zeroes request, as QEMU offers.
const MAX_DWZ_SEG: u32 = 1;
/// Only the owner may connect: the socket is the disk.
const SOCKET_MODE: u32 = 0o600;

/// Why the vhost exports could not start.
#[derive(Debug, thiserror::Error)]
pub enum VhostError {
    /// The socket could not be created.
    #[error("vhost.blk[{index}].socket: {path}: {source}")]
    Socket {
        /// Entry index.
        index: usize,
        /// The path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The bdev is not in the graph.
    #[error("vhost.blk[{index}].bdev: {message}")]
    Bdev {
        /// Entry index.
        index: usize,
        /// Why.
        message: String,
    },
}

/// The running vhost-user-blk devices.
pub struct VhostTargets {
    devices: Vec<Device>,
}

struct Device {
    path: PathBuf,
    root_name: String,
    /// Dropping it wakes the control thread's poll (end of file).
    stop: UnixStream,
    thread: Option<JoinHandle<()>>,
}

/// Creates every `[[vhost.blk]]` socket and starts serving it.
pub fn start(
    cfgs: &[VhostBlkConfig],
    graph: &Arc<Graph>,
    handle: &Handle,
    adaptive: bool,
) -> Result<VhostTargets, VhostError> {
    let mut targets = VhostTargets {
        devices: Vec::new(),
    };
    for (index, cfg) in cfgs.iter().enumerate() {
        let dev = start_one(index, cfg, graph, handle, adaptive)?;
        targets.devices.push(dev);
    }
    Ok(targets)
}

fn start_one(
    index: usize,
    cfg: &VhostBlkConfig,
    graph: &Arc<Graph>,
    handle: &Handle,
    adaptive: bool,
) -> Result<Device, VhostError> {
    let bdev_err = |message: String| VhostError::Bdev { index, message };
    let geo = graph
        .node_geometry(&cfg.bdev)
        .ok_or_else(|| bdev_err(format!("no bdev named {:?}", cfg.bdev)))?;
    let root_name = format!("vhost-blk:{}", cfg.socket.display());
    let root = graph
        .add_root(&root_name, &cfg.bdev)
        .map_err(|e| bdev_err(e.to_string()))?;
    let listener = match bind_socket(&cfg.socket) {
        Ok(l) => l,
        Err(source) => {
            let _ = graph.remove_root(&root_name);
            return Err(VhostError::Socket {
                index,
                path: cfg.socket.clone(),
                source,
            });
        }
    };
    let limits = Limits {
        capacity_sectors: geo.size() / SECTOR_SIZE,
        block_size: geo.block_size,
        seg_max: SEG_MAX,
        size_max: SIZE_MAX,
        max_dwz_sectors: MAX_DWZ_SECTORS,
        max_dwz_seg: MAX_DWZ_SEG,
        readonly: cfg.readonly,
        indirect: false,
    };
    let name = cfg.socket.display().to_string();
    let ctl = Arc::new(DeviceCtl {
        info: Arc::new(DeviceInfo {
            serial: serial_for(&name),
            name: name.clone(),
            graph: graph.clone(),
            root,
            writeback: AtomicBool::new(true),
            adaptive,
        }),
        handle: handle.clone(),
        num_queues: cfg.num_queues,
        queue_reactors: cfg.queue_reactors.clone(),
        limits,
        opt_io_bytes: geo.optimal_align.max(geo.block_size),
    });
    let (stop, stop_rx) = UnixStream::pair().map_err(|source| VhostError::Socket {
        index,
        path: cfg.socket.clone(),
        source,
    })?;
    let thread = std::thread::Builder::new()
        .name(format!("vhost-blk{index}"))
        .spawn(move || serve(listener, stop_rx, ctl))
        .map_err(|source| VhostError::Socket {
            index,
            path: cfg.socket.clone(),
            source,
        })?;
    tracing::info!(socket = %name, bdev = %cfg.bdev, num_queues = cfg.num_queues,
        queue_reactors = ?cfg.queue_reactors, readonly = cfg.readonly, "vhost-user-blk listening");
    Ok(Device {
        path: cfg.socket.clone(),
        root_name,
        stop,
        thread: Some(thread),
    })
}

impl VhostTargets {
    /// Disconnects every front-end (draining its queues), removes the
    /// sockets and the graph roots.
    pub fn stop(mut self, graph: &Graph) {
        for d in self.devices.drain(..) {
            let root = d.root_name.clone();
            drop(d);
            let _ = graph.remove_root(&root);
        }
    }
}

impl Drop for Device {
    /// Also runs when the daemon fails to start after the devices did.
    fn drop(&mut self) {
        let _ = self.stop.shutdown(std::net::Shutdown::Both);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A stable 20-byte serial (GET_ID) from the socket path (FNV-1a), so a
/// guest sees the same disk ID across restarts.
fn serial_for(name: &str) -> [u8; ID_BYTES] {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let text = format!("PLXVB{h:015X}");
    let mut out = [0u8; ID_BYTES];
    let n = text.len().min(ID_BYTES);
    out[..n].copy_from_slice(&text.as_bytes()[..n]);
    out
}

/// Creates the listening socket with mode 0600, replacing a stale socket
/// file (but never another kind of file).
fn bind_socket(path: &Path) -> io::Result<UnixListener> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            // A socket file nobody listens on is left over from an earlier
            // run; one that accepts connections belongs to a live process.
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "another process is listening on this socket",
                ));
            }
            std::fs::remove_file(path)?;
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "exists and is not a socket",
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let bytes = path.as_os_str().as_bytes();
    let mut addr = libc::sockaddr_un {
        sun_family: libc::AF_UNIX as libc::sa_family_t,
        sun_path: [0; 108],
    };
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "path too long for a Unix socket (107 bytes at most) or contains NUL",
        ));
    }
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: plain syscall; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket owned by nobody else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // Linux creates the socket file with the socket inode's mode (minus the
    // umask): setting it before bind leaves no window in which another user
    // could connect. The chmod after bind covers other kernels.
    // SAFETY: plain syscalls on descriptors and a sockaddr we own; results
    // are checked.
    let rc = unsafe {
        libc::fchmod(sock.as_raw_fd(), SOCKET_MODE);
        libc::bind(
            sock.as_raw_fd(),
            std::ptr::addr_of!(addr).cast(),
            std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    std::fs::set_permissions(
        path,
        std::os::unix::fs::PermissionsExt::from_mode(SOCKET_MODE),
    )?;
    // SAFETY: plain syscall on a socket we own.
    if unsafe { libc::listen(sock.as_raw_fd(), 16) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(UnixListener::from(sock))
}

/// Waits until `fd` is readable or `stop` is; false when stopping.
fn wait_readable(fd: RawFd, stop: &UnixStream) -> bool {
    let mut fds = [
        libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: stop.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: `fds` is a valid array of two pollfds, its length passed.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if rc < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return false;
        }
        if fds[1].revents != 0 {
            return false;
        }
        if fds[0].revents != 0 {
            return true;
        }
    }
}

/// The device's control thread: one front-end at a time, until stopped.
fn serve(listener: UnixListener, stop: UnixStream, ctl: Arc<DeviceCtl>) {
    let name = ctl.info.name.clone();
    while wait_readable(listener.as_raw_fd(), &stop) {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(socket = %name, error = %e, "accept failed");
                continue;
            }
        };
        tracing::info!(socket = %name, "front-end connected");
        let session = Arc::new(Mutex::new(Session::new(ctl.clone())));
        let mut handler = BackendReqHandler::from_stream(stream, session.clone());
        loop {
            if !wait_readable(handler.as_raw_fd(), &stop) {
                break;
            }
            match handler.handle_request() {
                Ok(()) => {}
                Err(VuError::Disconnected | VuError::PartialMessage) => {
                    tracing::info!(socket = %name, "front-end disconnected");
                    break;
                }
                Err(e) => {
                    // A malformed message or a request we refuse: this
                    // front-end is dropped; other devices are unaffected.
                    tracing::warn!(socket = %name, error = %e,
                        "vhost-user message failed; disconnecting the front-end");
                    break;
                }
            }
        }
        drop(handler);
        // Drain and stop this session's queues before the next front-end.
        if let Ok(mut s) = session.lock() {
            s.shutdown();
        };
    }
    tracing::debug!(socket = %name, "vhost-user-blk control thread stopped");
}
