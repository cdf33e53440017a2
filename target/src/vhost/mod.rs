//! vhost-user-blk: local VMs (QEMU, cloud-hypervisor, libblkio clients)
//! reach Pollux through a Unix socket per controller: one per
//! `[[vhost.blk]]`, plus those created with `vhost_create_blk_controller`
//! (`VhostTargets::create`/`delete`/`list` are the control-plane API; the
//! RPC methods call them, never the other way round).
//!
//! Threads: one control thread per device accepts a front-end and runs the
//! vhost-user protocol (`backend`); every virtqueue is polled by a poller on
//! the reactor the config maps it to (`queue`), with no worker thread per
//! queue. Rooms: `request` (descriptor chain → request, pure, fuzzed),
//! `config_space` (feature bits and the virtio-blk config space), `memory`
//! (the front-end's memory table), `inflight` (INFLIGHT_SHMFD tracking).

mod backend;
mod backend_channel;
mod config_space;
mod inflight;
mod memory;
mod queue;
pub mod request;
mod ring;

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use pollux_graph::Graph;
use pollux_poller::Handle;
use vhost::vhost_user::{BackendReqHandler, Error as VuError};

use crate::config::{VhostBlkConfig, VhostConfig};
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

/// Why the vhost exports of the config could not start.
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

/// Why a controller could not be created or deleted while the daemon runs.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The name is taken.
    #[error("controller {0:?} already exists")]
    Exists(String),
    /// Another controller serves this socket path.
    #[error("socket {path} is used by controller {ctrlr:?}")]
    SocketInUse {
        /// The path.
        path: PathBuf,
        /// Its controller.
        ctrlr: String,
    },
    /// No controller by that name.
    #[error("No such device: no controller {0:?}")]
    NoSuchController(String),
    /// A front-end is connected: deleting would pull the disk from under a
    /// running VM, which SPDK refuses too (EBUSY).
    #[error("controller {0:?} has a front-end connected; disconnect it first")]
    Busy(String),
    /// The socket could not be created.
    #[error("socket {path}: {source}")]
    Socket {
        /// The path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The bdev cannot be exported.
    #[error("dev_name: {0}")]
    Bdev(String),
}

/// `start_one`'s failures, before the caller names the config key or param.
enum SetupError {
    Socket(io::Error),
    Bdev(String),
}

/// A connected front-end, as the control plane sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    /// Session number, unique for the daemon's lifetime.
    pub id: u64,
    /// Virtqueues being polled.
    pub started_queues: usize,
}

/// One controller, for `vhost_get_controllers` and `save_config`.
#[derive(Clone, Debug)]
pub struct ControllerInfo {
    /// Its name (SPDK's `ctrlr`).
    pub ctrlr: String,
    /// Socket, bdev, queues and their reactors, read-only flag.
    pub config: VhostBlkConfig,
    /// The connected front-end, if any.
    pub session: Option<SessionInfo>,
}

/// The vhost-user-blk front-end: the controllers of the config and those
/// created over RPC. Shared between the daemon and the RPC control
/// threads; it knows nothing of RPC.
pub struct VhostTargets {
    graph: Arc<Graph>,
    handle: Handle,
    adaptive: bool,
    socket_dir: PathBuf,
    /// By controller name. Create, delete and stop hold the lock for their
    /// whole run so that a socket path is never bound by a new controller
    /// while a deleted one still removes its file.
    devices: Mutex<BTreeMap<String, Device>>,
}

struct Device {
    config: VhostBlkConfig,
    /// The graph watcher that follows resizes of the exported bdev.
    watch: (Arc<Graph>, pollux_graph::WatchId),
    root_name: String,
    /// Written by the control thread, read by `list`.
    session: Arc<Mutex<Option<SessionInfo>>>,
    /// Dropping it wakes the control thread's poll (end of file).
    stop: UnixStream,
    thread: Option<JoinHandle<()>>,
}

/// Numbers control threads (`vhost-blkN`) across runtime creations.
static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take the control plane down with it: the
    // maps stay consistent because every update is a single insert/remove.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl VhostTargets {
    /// Creates every `[[vhost.blk]]` socket and starts serving it.
    pub fn start(
        cfg: &VhostConfig,
        graph: &Arc<Graph>,
        handle: &Handle,
        adaptive: bool,
    ) -> Result<VhostTargets, VhostError> {
        let targets = VhostTargets {
            graph: graph.clone(),
            handle: handle.clone(),
            adaptive,
            socket_dir: cfg.socket_dir.clone(),
            devices: Mutex::default(),
        };
        for (index, blk) in cfg.blk.iter().enumerate() {
            let ctrlr = targets.name_for(&blk.socket);
            let dev = targets.start_one(&ctrlr, blk).map_err(|e| match e {
                SetupError::Socket(source) => VhostError::Socket {
                    index,
                    path: blk.socket.clone(),
                    source,
                },
                SetupError::Bdev(message) => VhostError::Bdev { index, message },
            })?;
            lock(&targets.devices).insert(ctrlr, dev);
        }
        Ok(targets)
    }

    /// The socket path for controller name `ctrlr`: `socket_dir/ctrlr`, as
    /// SPDK does with its `-S` directory. An absolute path is taken as is
    /// (a Pollux extension, so that `save_config` can replay controllers
    /// of the TOML config whose socket is elsewhere).
    pub fn socket_for(&self, ctrlr: &str) -> Result<PathBuf, String> {
        if ctrlr.is_empty() {
            return Err("must not be empty".into());
        }
        if ctrlr.starts_with('/') {
            return Ok(PathBuf::from(ctrlr));
        }
        if ctrlr.contains('/') || ctrlr == "." || ctrlr == ".." {
            return Err(format!(
                "{ctrlr:?} is not a socket name (no '/'; or an absolute path)"
            ));
        }
        Ok(self.socket_dir.join(ctrlr))
    }

    /// The controller name of a config entry: the socket's file name when
    /// it lives in `socket_dir` (what `vhost_create_blk_controller` would
    /// have made of that name), else the whole path.
    fn name_for(&self, socket: &Path) -> String {
        match (socket.parent(), socket.file_name()) {
            (Some(dir), Some(file)) if dir == self.socket_dir => file.to_string_lossy().into(),
            _ => socket.display().to_string(),
        }
    }

    /// Creates controller `ctrlr` and starts serving its socket, while the
    /// daemon runs.
    pub fn create(&self, ctrlr: &str, config: &VhostBlkConfig) -> Result<(), ControlError> {
        let mut devices = lock(&self.devices);
        if devices.contains_key(ctrlr) {
            return Err(ControlError::Exists(ctrlr.into()));
        }
        if let Some((other, _)) = devices
            .iter()
            .find(|(_, d)| d.config.socket == config.socket)
        {
            return Err(ControlError::SocketInUse {
                path: config.socket.clone(),
                ctrlr: other.clone(),
            });
        }
        let dev = self.start_one(ctrlr, config).map_err(|e| match e {
            SetupError::Socket(source) => ControlError::Socket {
                path: config.socket.clone(),
                source,
            },
            SetupError::Bdev(m) => ControlError::Bdev(m),
        })?;
        devices.insert(ctrlr.into(), dev);
        Ok(())
    }

    /// Deletes controller `ctrlr`: its socket file and its graph root go.
    /// Refused while a front-end is connected.
    pub fn delete(&self, ctrlr: &str) -> Result<(), ControlError> {
        let mut devices = lock(&self.devices);
        let dev = devices
            .get(ctrlr)
            .ok_or_else(|| ControlError::NoSuchController(ctrlr.into()))?;
        if lock(&dev.session).is_some() {
            return Err(ControlError::Busy(ctrlr.into()));
        }
        let dev = devices.remove(ctrlr).expect("looked up under the lock");
        self.retire(dev);
        tracing::info!(ctrlr, "vhost-user-blk controller deleted");
        Ok(())
    }

    /// Every controller, by name.
    pub fn list(&self) -> Vec<ControllerInfo> {
        lock(&self.devices)
            .iter()
            .map(|(name, d)| ControllerInfo {
                ctrlr: name.clone(),
                config: d.config.clone(),
                session: *lock(&d.session),
            })
            .collect()
    }

    /// Controllers exporting bdev `old` now export `new` (a mirror job's
    /// pivot moved their roots): what listings and `save_config` name.
    pub fn rename_bdev(&self, old: &str, new: &str) {
        for d in lock(&self.devices).values_mut() {
            if d.config.bdev == old {
                d.config.bdev = new.to_owned();
            }
        }
    }

    /// Disconnects every front-end (draining its queues), removes the
    /// sockets and the graph roots.
    pub fn stop(&self) {
        let mut devices = lock(&self.devices);
        for (_, d) in std::mem::take(&mut *devices) {
            self.retire(d);
        }
    }

    /// Stops a device (a front-end still connected is disconnected and its
    /// queues drained), then unpublishes its root.
    fn retire(&self, dev: Device) {
        let root = dev.root_name.clone();
        drop(dev);
        let _ = self.graph.remove_root(&root);
    }

    fn start_one(&self, ctrlr: &str, cfg: &VhostBlkConfig) -> Result<Device, SetupError> {
        let graph = &self.graph;
        let geo = graph
            .node_geometry(&cfg.bdev)
            .ok_or_else(|| SetupError::Bdev(format!("no bdev named {:?}", cfg.bdev)))?;
        let root_name = format!("vhost-blk:{}", cfg.socket.display());
        let root = graph
            .add_root(&root_name, &cfg.bdev)
            .map_err(|e| SetupError::Bdev(e.to_string()))?;
        let unroot = |e: io::Error| {
            let _ = graph.remove_root(&root_name);
            SetupError::Socket(e)
        };
        let listener = bind_socket(&cfg.socket).map_err(unroot)?;
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
                adaptive: self.adaptive,
                capacity_sectors: AtomicU64::new(limits.capacity_sectors),
                backend_req: Mutex::default(),
            }),
            handle: self.handle.clone(),
            num_queues: cfg.num_queues,
            queue_reactors: cfg.queue_reactors.clone(),
            limits,
            opt_io_bytes: geo.optimal_align.max(geo.block_size),
        });
        let watch = graph.watch_roots(resize_watcher(&ctl.info, &root_name));
        let unwatch = |e| {
            graph.unwatch_roots(watch);
            e
        };
        let (stop, stop_rx) = UnixStream::pair()
            .map_err(|e| {
                let _ = std::fs::remove_file(&cfg.socket);
                unroot(e)
            })
            .map_err(unwatch)?;
        let session = Arc::new(Mutex::new(None));
        let status = session.clone();
        let seq = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
        let thread = std::thread::Builder::new()
            .name(format!("vhost-blk{seq}"))
            .spawn(move || serve(listener, stop_rx, ctl, &status))
            .map_err(|e| {
                let _ = std::fs::remove_file(&cfg.socket);
                unroot(e)
            })
            .map_err(unwatch)?;
        tracing::info!(ctrlr, socket = %name, bdev = %cfg.bdev, num_queues = cfg.num_queues,
            queue_reactors = ?cfg.queue_reactors, readonly = cfg.readonly, "vhost-user-blk listening");
        Ok(Device {
            config: cfg.clone(),
            watch: (graph.clone(), watch),
            root_name,
            session,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Device {
    /// Also runs when the daemon fails to start after the devices did.
    fn drop(&mut self) {
        self.watch.0.unwatch_roots(self.watch.1);
        let _ = self.stop.shutdown(std::net::Shutdown::Both);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.config.socket);
    }
}

/// The root watcher of a device: a resize of the bdev under `root_name`
/// becomes the device's capacity, and the connected front-end is told
/// with CONFIG_CHANGE_MSG (it re-reads the config space and interrupts
/// the guest).
fn resize_watcher(
    info: &Arc<DeviceInfo>,
    root_name: &str,
) -> impl Fn(&[pollux_graph::RootChange]) + Send + Sync + 'static {
    let info = Arc::downgrade(info);
    let root_name = root_name.to_owned();
    move |changed| {
        let Some(info) = info.upgrade() else { return };
        let Some(c) = changed
            .iter()
            .find(|c| c.root == info.root && c.name == root_name)
        else {
            return;
        };
        let sectors = c.geometry.size() / SECTOR_SIZE;
        info.capacity_sectors.store(sectors, Ordering::Relaxed);
        let mut chan = lock(&info.backend_req);
        let sent = match chan.as_mut() {
            Some(sock) => backend_channel::send_config_change(sock),
            None => Ok(()),
        };
        match sent {
            Ok(()) => tracing::info!(socket = %info.name, capacity_sectors = sectors,
                notified = chan.is_some(), "vhost-user-blk: capacity changed"),
            Err(e) => {
                tracing::warn!(socket = %info.name, error = %e,
                    "vhost-user-blk: cannot send the config change; the channel is dropped");
                *chan = None;
            }
        }
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
/// `status` shows the connected front-end to the control plane.
fn serve(
    listener: UnixListener,
    stop: UnixStream,
    ctl: Arc<DeviceCtl>,
    status: &Mutex<Option<SessionInfo>>,
) {
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
        let publish = || {
            // Uncontended: only this thread handles the session's messages.
            if let Ok(s) = session.try_lock() {
                *lock(status) = Some(SessionInfo {
                    id: s.id(),
                    started_queues: s.started_queues(),
                });
            }
        };
        publish();
        let mut handler = BackendReqHandler::from_stream(stream, session.clone());
        loop {
            if !wait_readable(handler.as_raw_fd(), &stop) {
                break;
            }
            if let Some(chan) = backend_channel::peek_backend_req_fd(handler.as_raw_fd()) {
                tracing::debug!(socket = %name, "backend request channel set");
                *lock(&ctl.info.backend_req) = Some(chan);
            }
            match handler.handle_request() {
                Ok(()) => publish(),
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
        // Only now is the controller free to delete: its queues drained.
        *lock(status) = None;
        *lock(&ctl.info.backend_req) = None;
    }
    tracing::debug!(socket = %name, "vhost-user-blk control thread stopped");
}
