//! The vhost-user protocol for one front-end connection (a session).
//!
//! Runs on the device's control thread: `vhost::vhost_user::BackendReqHandler`
//! decodes and validates each message and calls the
//! `VhostUserBackendReqHandlerMut` methods below. Nothing here touches a
//! ring: starting, remapping and stopping queues are messages to the queue's
//! reactor (see `queue.rs`), and stopping waits for that reactor's answer.

use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use pollux_poller::{Handle, Reactor};
use vhost::vhost_user::message::{
    VhostTransferStateDirection, VhostTransferStatePhase, VhostUserConfigFlags, VhostUserInflight,
    VhostUserLog, VhostUserMemoryRegion, VhostUserProtocolFeatures, VhostUserShMemConfig,
    VhostUserSharedMsg, VhostUserSingleMemoryRegion, VhostUserVringAddrFlags, VhostUserVringState,
};
use vhost::vhost_user::{
    Error as VuError, GpuBackend, Result as VuResult, VhostUserBackendReqHandlerMut,
};
use vhost::VhostUserMemoryRegionBase;
use vm_memory::GuestMemoryMmap;

use super::config_space::{self, features as f, CONFIG_LEN, WRITEBACK_OFFSET};
use super::inflight::InflightArea;
use super::memory::{MemTable, MAX_MEM_SLOTS};
use super::queue::{self, DeviceInfo, QueueKey, QueueSetup};
use super::request::Limits;

/// Largest ring a front-end may ask for (split rings, virtio 1.2, 2.7).
const MAX_QUEUE_SIZE: u32 = 32768;
/// How long a queue may take to drain its in-flight I/O when it stops
/// before the control thread gives up waiting (the queue still drains and
/// removes itself later). Generous: a file bdev may be slow to flush.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a running queue's reactor may take to switch to a new memory
/// map or call fd. The message runs at the reactor's next loop iteration
/// (an idle reactor is woken by it), microseconds away; only a wedged
/// reactor misses this, and then the front-end is refused rather than the
/// control thread left waiting for ever.
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Session numbers, so queues of a new connection never collide with a
/// previous connection's queues still draining on a reactor.
static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// What the control thread knows about a device, fixed at startup.
pub struct DeviceCtl {
    /// Shared with the queues.
    pub info: Arc<DeviceInfo>,
    /// The reactors.
    pub handle: Handle,
    /// Queues offered (MQ).
    pub num_queues: u16,
    /// Reactor index polling each queue.
    pub queue_reactors: Vec<usize>,
    /// Parser limits, before INDIRECT_DESC negotiation.
    pub limits: Limits,
    /// Optimal I/O size in bytes, for the topology fields.
    pub opt_io_bytes: u32,
}

impl DeviceCtl {
    /// The virtio features offered.
    pub fn features(&self) -> u64 {
        let mut bits = f::VERSION_1
            | f::EVENT_IDX
            | f::INDIRECT_DESC
            | f::PROTOCOL_FEATURES
            | f::SIZE_MAX
            | f::SEG_MAX
            | f::BLK_SIZE
            | f::TOPOLOGY
            | f::FLUSH
            | f::DISCARD
            | f::WRITE_ZEROES
            | f::CONFIG_WCE
            | f::MQ;
        if self.limits.readonly {
            bits |= f::RO;
        }
        bits
    }

    /// The vhost-user protocol features offered. CONFIGURE_MEM_SLOTS is
    /// beyond the list because libblkio refuses back-ends without
    /// it (it maps its buffers with ADD_MEM_REG).
    pub fn protocol_features() -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::REPLY_ACK
            | VhostUserProtocolFeatures::INFLIGHT_SHMFD
            | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS
            | VhostUserProtocolFeatures::BACKEND_REQ
    }
}

#[derive(Default)]
struct Vring {
    size: u16,
    /// Front-end virtual addresses from SET_VRING_ADDR.
    addrs: Option<(u64, u64, u64)>,
    base: u16,
    /// SET_VRING_KICK seen; the fd is `None` when the front-end polls.
    kick: Option<Option<File>>,
    call: Option<File>,
    enabled: bool,
    started: bool,
}

/// One front-end connection.
pub struct Session {
    dev: Arc<DeviceCtl>,
    id: u64,
    acked_features: u64,
    acked_protocol: u64,
    mem: MemTable,
    snapshot: Arc<GuestMemoryMmap>,
    vrings: Vec<Vring>,
    inflight: Option<Arc<InflightArea>>,
}

fn handler_err(msg: impl Into<String>) -> VuError {
    VuError::ReqHandlerError(std::io::Error::other(msg.into()))
}

impl Session {
    /// A fresh session for a new connection.
    pub fn new(dev: Arc<DeviceCtl>) -> Session {
        let vrings = (0..dev.num_queues).map(|_| Vring::default()).collect();
        Session {
            dev,
            id: NEXT_SESSION.fetch_add(1, Ordering::Relaxed),
            acked_features: 0,
            acked_protocol: 0,
            mem: MemTable::default(),
            snapshot: Arc::new(GuestMemoryMmap::new()),
            vrings,
            inflight: None,
        }
    }

    /// The session number (`vhost_get_controllers` reports it).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// How many virtqueues are being polled now.
    pub fn started_queues(&self) -> usize {
        self.vrings.iter().filter(|v| v.started).count()
    }

    fn vring(&mut self, index: u32) -> VuResult<&mut Vring> {
        self.vrings
            .get_mut(index as usize)
            .ok_or(VuError::InvalidParam)
    }

    fn key(&self, index: usize) -> QueueKey {
        QueueKey {
            session: self.id,
            index: index as u16,
        }
    }

    /// Starts ring `i` once it has a size, addresses, a kick and is enabled.
    fn maybe_start(&mut self, i: usize) -> VuResult<()> {
        let protocol = self.acked_features & f::PROTOCOL_FEATURES != 0;
        let v = &self.vrings[i];
        // Without PROTOCOL_FEATURES rings start enabled (vhost-user spec,
        // "Ring states").
        let enabled = v.enabled || !protocol;
        if v.started || v.size == 0 || v.kick.is_none() || !enabled {
            return Ok(());
        }
        let Some((desc_va, used_va, avail_va)) = v.addrs else {
            return Ok(());
        };
        let gpa = |va: u64| {
            self.mem
                .va_to_gpa(va)
                .ok_or_else(|| handler_err(format!("ring address {va:#x} is not in guest memory")))
        };
        let (desc, used, avail) = (gpa(desc_va)?, gpa(used_va)?, gpa(avail_va)?);
        let kick = match &v.kick {
            Some(Some(fd)) => Some(fd.try_clone().map_err(VuError::ReqHandlerError)?),
            _ => None,
        };
        let call = match &v.call {
            Some(fd) => Some(fd.try_clone().map_err(VuError::ReqHandlerError)?),
            None => None,
        };
        let limits = Limits {
            indirect: self.acked_features & f::INDIRECT_DESC != 0,
            ..self.dev.limits
        };
        let setup = QueueSetup {
            key: self.key(i),
            size: v.size,
            desc,
            avail,
            used,
            next_avail: v.base,
            event_idx: self.acked_features & f::EVENT_IDX != 0,
            limits,
            kick,
            call,
            mem: self.snapshot.clone(),
            inflight: self
                .inflight
                .as_ref()
                .and_then(|a| a.queue(i as u16, v.size)),
            dev: self.dev.info.clone(),
        };
        let reactor = self.dev.queue_reactors[i];
        self.dev
            .handle
            .call(reactor, move |r| queue::start(r, setup))
            .map_err(|e| handler_err(e.to_string()))?;
        self.vrings[i].started = true;
        tracing::info!(device = %self.dev.info.name, queue = i, reactor, "virtqueue polling");
        Ok(())
    }

    /// Stops ring `i` if it runs, waiting for its in-flight I/O, and keeps
    /// the avail index it reached as the ring's base.
    fn stop_ring(&mut self, i: usize) {
        if !self.vrings[i].started {
            return;
        }
        let (tx, rx) = mpsc::channel();
        let key = self.key(i);
        self.dev
            .handle
            .send_blocking(self.dev.queue_reactors[i], move |r| queue::stop(r, key, tx));
        match rx.recv_timeout(STOP_TIMEOUT) {
            Ok(base) => self.vrings[i].base = base,
            Err(_) => tracing::error!(
                device = %self.dev.info.name, queue = i,
                "virtqueue did not drain in {STOP_TIMEOUT:?}; detaching it"
            ),
        }
        self.vrings[i].started = false;
    }

    /// Stops every ring; called when the connection ends.
    pub fn shutdown(&mut self) {
        for i in 0..self.vrings.len() {
            self.stop_ring(i);
        }
    }

    /// Hands the current memory map to every running queue, and returns
    /// only once each queue's reactor has switched to it: the reply to
    /// SET_MEM_TABLE / ADD_MEM_REG / REM_MEM_REG (REPLY_ACK) goes out after
    /// this, and a front-end may put requests into the new memory as soon
    /// as it has that reply (libblkio does, right after mapping a buffer).
    fn publish_mem(&mut self) -> VuResult<()> {
        self.snapshot = self
            .mem
            .snapshot()
            .map_err(|e| handler_err(e.to_string()))?;
        let mut applied = Applied::new();
        for i in 0..self.vrings.len() {
            if self.vrings[i].started {
                let (key, mem) = (self.key(i), self.snapshot.clone());
                applied.send(&self.dev, i, move |r| queue::update_mem(r, key, mem));
            }
        }
        applied.wait("memory map")
    }
}

/// Changes sent to the reactors of running rings, acknowledged to the
/// front-end only once every one of them has run: a message only queues
/// the change, and the queue's poller may go on parsing requests with what
/// it had (another iteration, or a whole batch if the reactor's thread is
/// preempted) until its reactor drains its inbox.
struct Applied {
    done: mpsc::Sender<()>,
    ran: mpsc::Receiver<()>,
    sent: usize,
}

impl Applied {
    fn new() -> Applied {
        let (done, ran) = mpsc::channel();
        Applied { done, ran, sent: 0 }
    }

    /// Sends `change` to the reactor of ring `i`.
    fn send(&mut self, dev: &DeviceCtl, i: usize, change: impl FnOnce(&Reactor) + Send + 'static) {
        let done = self.done.clone();
        dev.handle.send_blocking(dev.queue_reactors[i], move |r| {
            change(r);
            let _ = done.send(());
        });
        self.sent += 1;
    }

    /// Waits until every change sent has run. A reactor that does not get
    /// to it in time (or stops, dropping the message) fails the vhost-user
    /// message, which disconnects the front-end rather than hang its
    /// control thread.
    fn wait(self, what: &str) -> VuResult<()> {
        let Applied { done, ran, sent } = self;
        // Only the messages' clones are left: a message dropped unrun (the
        // runtime stopping) ends the wait at once, not at the deadline.
        drop(done);
        let deadline = Instant::now() + APPLY_TIMEOUT;
        for _ in 0..sent {
            let left = deadline.saturating_duration_since(Instant::now());
            ran.recv_timeout(left).map_err(|_| {
                handler_err(format!(
                    "a queue's reactor did not switch to the new {what} within {APPLY_TIMEOUT:?}"
                ))
            })?;
        }
        Ok(())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl VhostUserBackendReqHandlerMut for Session {
    fn set_owner(&mut self) -> VuResult<()> {
        Ok(())
    }

    fn reset_owner(&mut self) -> VuResult<()> {
        self.reset_device()
    }

    fn reset_device(&mut self) -> VuResult<()> {
        self.shutdown();
        for v in &mut self.vrings {
            *v = Vring::default();
        }
        Ok(())
    }

    fn get_features(&mut self) -> VuResult<u64> {
        Ok(self.dev.features())
    }

    fn set_features(&mut self, features: u64) -> VuResult<()> {
        if features & !self.dev.features() != 0 {
            return Err(VuError::InvalidParam);
        }
        self.acked_features = features;
        Ok(())
    }

    fn set_mem_table(
        &mut self,
        ctx: &[VhostUserMemoryRegion],
        files: Vec<File>,
        _postcopy_listening: Option<bool>,
    ) -> VuResult<Option<Vec<VhostUserMemoryRegionBase>>> {
        self.mem
            .set(ctx, files)
            .map_err(|e| handler_err(e.to_string()))?;
        self.publish_mem()?;
        Ok(None)
    }

    fn set_vring_num(&mut self, index: u32, num: u32) -> VuResult<()> {
        if num == 0 || num > MAX_QUEUE_SIZE || !num.is_power_of_two() {
            return Err(VuError::InvalidParam);
        }
        self.vring(index)?.size = num as u16;
        Ok(())
    }

    fn set_vring_addr(
        &mut self,
        index: u32,
        _flags: VhostUserVringAddrFlags,
        descriptor: u64,
        used: u64,
        available: u64,
        _log: u64,
    ) -> VuResult<()> {
        self.vring(index)?.addrs = Some((descriptor, used, available));
        Ok(())
    }

    fn set_vring_base(&mut self, index: u32, base: u32) -> VuResult<()> {
        self.vring(index)?.base = base as u16;
        Ok(())
    }

    fn get_vring_base(&mut self, index: u32) -> VuResult<VhostUserVringState> {
        self.vring(index)?;
        let i = index as usize;
        // GET_VRING_BASE stops the ring (vhost-user spec).
        self.stop_ring(i);
        let v = &mut self.vrings[i];
        v.kick = None;
        Ok(VhostUserVringState::new(index, u32::from(v.base)))
    }

    fn set_vring_kick(&mut self, index: u8, fd: Option<File>) -> VuResult<()> {
        self.vring(u32::from(index))?;
        let i = usize::from(index);
        // A new kick fd for a running ring: restart it on the new fd.
        self.stop_ring(i);
        self.vrings[i].kick = Some(fd);
        self.maybe_start(i)
    }

    fn set_vring_call(&mut self, index: u8, fd: Option<File>) -> VuResult<()> {
        self.vring(u32::from(index))?;
        let i = usize::from(index);
        if self.vrings[i].started {
            let call = match &fd {
                Some(f) => Some(f.try_clone().map_err(VuError::ReqHandlerError)?),
                None => None,
            };
            let key = self.key(i);
            // Acknowledged only once the queue signals the new fd: QEMU
            // masks a vector by switching fds, and on unmask switches back
            // and then checks the masked fd for interrupts sent meanwhile;
            // one sent to it after that check would be lost.
            let mut applied = Applied::new();
            applied.send(&self.dev, i, move |r| queue::update_call(r, key, call));
            applied.wait("call fd")?;
        }
        self.vrings[i].call = fd;
        Ok(())
    }

    fn set_vring_err(&mut self, index: u8, _fd: Option<File>) -> VuResult<()> {
        // Pollux never reports ring errors this way; the fd is closed.
        self.vring(u32::from(index)).map(|_| ())
    }

    fn get_protocol_features(&mut self) -> VuResult<VhostUserProtocolFeatures> {
        Ok(DeviceCtl::protocol_features())
    }

    fn set_protocol_features(&mut self, features: u64) -> VuResult<()> {
        if features & !DeviceCtl::protocol_features().bits() != 0 {
            return Err(VuError::InvalidParam);
        }
        self.acked_protocol = features;
        Ok(())
    }

    fn get_queue_num(&mut self) -> VuResult<u64> {
        Ok(u64::from(self.dev.num_queues))
    }

    fn set_vring_enable(&mut self, index: u32, enable: bool) -> VuResult<()> {
        self.vring(index)?.enabled = enable;
        if enable {
            self.maybe_start(index as usize)
        } else {
            self.stop_ring(index as usize);
            Ok(())
        }
    }

    fn get_config(
        &mut self,
        offset: u32,
        size: u32,
        _flags: VhostUserConfigFlags,
    ) -> VuResult<Vec<u8>> {
        let writeback = self.dev.info.writeback.load(Ordering::Relaxed);
        let limits = super::request::Limits {
            capacity_sectors: self.dev.info.capacity_sectors.load(Ordering::Relaxed),
            ..self.dev.limits
        };
        let space = config_space::config_space(
            &limits,
            self.dev.num_queues,
            writeback,
            self.dev.opt_io_bytes,
        );
        // Fields past CONFIG_LEN (not offered) read as zero, so any
        // front-end's idea of the struct size is served.
        let mut out = vec![0u8; size as usize];
        let start = (offset as usize).min(CONFIG_LEN);
        let end = (offset as usize + size as usize).min(CONFIG_LEN);
        out[..end - start].copy_from_slice(&space[start..end]);
        Ok(out)
    }

    fn set_config(
        &mut self,
        offset: u32,
        buf: &[u8],
        _flags: VhostUserConfigFlags,
    ) -> VuResult<()> {
        // Only `writeback` is writable (CONFIG_WCE); writes elsewhere are
        // ignored, as a virtio-pci device ignores writes to read-only fields.
        let at = WRITEBACK_OFFSET as u64;
        let start = u64::from(offset);
        if at >= start && at < start + buf.len() as u64 {
            let wb = buf[(at - start) as usize] != 0;
            self.dev.info.writeback.store(wb, Ordering::Relaxed);
            tracing::info!(device = %self.dev.info.name, writeback = wb, "write cache mode set");
        }
        Ok(())
    }

    fn set_gpu_socket(&mut self, _gpu_backend: GpuBackend) -> VuResult<()> {
        Err(VuError::InvalidOperation("not a GPU device"))
    }

    fn get_shared_object(&mut self, _uuid: VhostUserSharedMsg) -> VuResult<File> {
        Err(VuError::InvalidOperation(
            "shared objects are not supported",
        ))
    }

    fn get_inflight_fd(&mut self, msg: &VhostUserInflight) -> VuResult<(VhostUserInflight, File)> {
        if msg.num_queues == 0 || msg.queue_size == 0 || msg.num_queues > self.dev.num_queues {
            return Err(VuError::InvalidParam);
        }
        let (area, file, size) = InflightArea::create(msg.num_queues, msg.queue_size)
            .map_err(VuError::ReqHandlerError)?;
        self.inflight = Some(Arc::new(area));
        Ok((
            VhostUserInflight::new(size, 0, msg.num_queues, msg.queue_size),
            file,
        ))
    }

    fn set_inflight_fd(&mut self, msg: &VhostUserInflight, file: File) -> VuResult<()> {
        let area = InflightArea::open(
            file,
            msg.mmap_size,
            msg.mmap_offset,
            msg.num_queues,
            msg.queue_size,
        )
        .map_err(VuError::ReqHandlerError)?;
        self.inflight = Some(Arc::new(area));
        Ok(())
    }

    fn get_max_mem_slots(&mut self) -> VuResult<u64> {
        Ok(MAX_MEM_SLOTS)
    }

    fn add_mem_region(
        &mut self,
        region: &VhostUserSingleMemoryRegion,
        fd: File,
        _postcopy_listening: Option<bool>,
    ) -> VuResult<Option<VhostUserMemoryRegionBase>> {
        self.mem
            .add(region, fd)
            .map_err(|e| handler_err(e.to_string()))?;
        self.publish_mem()?;
        Ok(None)
    }

    fn remove_mem_region(&mut self, region: &VhostUserSingleMemoryRegion) -> VuResult<()> {
        self.mem
            .remove(region)
            .map_err(|e| handler_err(e.to_string()))?;
        self.publish_mem()
    }

    fn set_device_state_fd(
        &mut self,
        _direction: VhostTransferStateDirection,
        _phase: VhostTransferStatePhase,
        _fd: File,
    ) -> VuResult<Option<File>> {
        Err(VuError::InvalidOperation("migration is not supported"))
    }

    fn check_device_state(&mut self) -> VuResult<()> {
        Err(VuError::InvalidOperation("migration is not supported"))
    }

    fn get_shmem_config(&mut self) -> VuResult<VhostUserShMemConfig> {
        Err(VuError::InvalidOperation("no shared memory regions"))
    }

    fn set_log_base(&mut self, _log: &VhostUserLog, _file: File) -> VuResult<()> {
        Err(VuError::InvalidOperation("dirty logging is not supported"))
    }
}

#[cfg(test)]
mod tests {
    //! The ordering the front-end relies on: a reply to a message that
    //! changes what a running queue uses is sent only once the queue's
    //! reactor has switched. Each test holds the reactor in a message of
    //! its own, so the change cannot run before the test lets it: the
    //! handler must not have returned (and so the reply must not have gone
    //! out) while it is held.

    use std::sync::mpsc::RecvTimeoutError;

    use pollux_graph::nodes::null::NullNode;
    use pollux_poller::Runtime;
    use vm_memory::{GuestAddress, GuestMemoryBackend};

    use super::*;
    use crate::testing::Reactors;
    use crate::vhost::queue::current_mem;

    /// Guest address and front-end address of the ring region, and of the
    /// buffer region added once the ring runs (libblkio's order).
    const RING_GPA: u64 = 0x1_0000;
    const RING_VA: u64 = 0x7f00_0000_0000;
    const BUF_GPA: u64 = 0x10_0000;
    const REGION: u64 = 64 << 10;
    const RING_SIZE: u32 = 16;
    /// How long the reactor is held: if the handler returns within it, it
    /// returned without waiting for the reactor.
    const HOLD: Duration = Duration::from_millis(300);

    fn region_file() -> File {
        let f = tempfile::tempfile().unwrap();
        f.set_len(REGION).unwrap();
        f
    }

    /// A session on one adaptive reactor with ring 0 of a null device
    /// running, its rings in the region at RING_GPA.
    fn running_session() -> (Reactors, Session) {
        let reactors = Reactors::adaptive(vec![0]);
        let graph = reactors.graph.clone();
        graph
            .add_node("null0", NullNode::new(1 << 20, 512), &[])
            .unwrap();
        let root = graph.add_root("vhost-blk:test", "null0").unwrap();
        let dev = Arc::new(DeviceCtl {
            info: Arc::new(DeviceInfo {
                name: "test".into(),
                graph,
                root,
                serial: [0; 20],
                writeback: std::sync::atomic::AtomicBool::new(true),
                adaptive: true,
                capacity_sectors: AtomicU64::new(2048),
                backend_req: std::sync::Mutex::default(),
            }),
            handle: reactors.runtime().handle().clone(),
            num_queues: 1,
            queue_reactors: vec![0],
            limits: Limits {
                capacity_sectors: 2048,
                block_size: 512,
                seg_max: 126,
                size_max: 1 << 20,
                max_dwz_sectors: 1 << 16,
                max_dwz_seg: 1,
                readonly: false,
                indirect: false,
            },
            opt_io_bytes: 512,
        });
        let mut s = Session::new(dev);
        s.set_features(f::VERSION_1 | f::PROTOCOL_FEATURES).unwrap();
        let ring = VhostUserSingleMemoryRegion::new(RING_GPA, REGION, RING_VA, 0);
        s.add_mem_region(&ring, region_file(), None).unwrap();
        s.set_vring_num(0, RING_SIZE).unwrap();
        // Descriptor table, then the avail and used rings, in one page.
        let flags = VhostUserVringAddrFlags::empty();
        s.set_vring_addr(0, flags, RING_VA, RING_VA + 0x400, RING_VA + 0x200, 0)
            .unwrap();
        s.set_vring_kick(0, None).unwrap();
        s.set_vring_enable(0, true).unwrap();
        assert_eq!(s.started_queues(), 1);
        (reactors, s)
    }

    /// Holds reactor 0 in a message until the returned sender is dropped.
    fn hold_reactor(rt: &Runtime) -> mpsc::Sender<()> {
        let (release, held) = mpsc::channel::<()>();
        rt.handle().send_blocking(0, move |_| {
            let _ = held.recv();
        });
        release
    }

    /// Runs `change` on the session in another thread while reactor 0 is
    /// held; checks it is still waiting when the hold ends, then that it
    /// returns Ok once the reactor ran. Gives the session back.
    fn change_waits_for_reactor(
        rt: &Runtime,
        s: Session,
        change: impl FnOnce(&mut Session) -> VuResult<()> + Send + 'static,
    ) -> Session {
        let release = hold_reactor(rt);
        let (done_tx, done) = mpsc::channel();
        let t = std::thread::spawn(move || {
            let mut s = s;
            let r = change(&mut s);
            let _ = done_tx.send(r.is_ok());
            s
        });
        assert_eq!(
            done.recv_timeout(HOLD),
            Err(RecvTimeoutError::Timeout),
            "the handler returned (its reply would be sent) before the queue's reactor \
             switched to the change"
        );
        drop(release);
        assert_eq!(done.recv_timeout(APPLY_TIMEOUT), Ok(true));
        t.join().unwrap()
    }

    #[test]
    fn add_mem_region_is_answered_after_the_running_queue_switched() {
        let (reactors, s) = running_session();
        let rt = reactors.runtime();
        let buf = VhostUserSingleMemoryRegion::new(BUF_GPA, REGION, RING_VA + REGION, 0);
        let s = change_waits_for_reactor(rt, s, move |s| {
            s.add_mem_region(&buf, region_file(), None).map(|_| ())
        });
        let key = s.key(0);
        let mem = rt
            .handle()
            .call(0, move |r| current_mem(r, key))
            .expect("queue 0 runs");
        assert!(
            mem.address_in_range(GuestAddress(BUF_GPA)),
            "the running queue parses with a map that lacks the added region"
        );

        // Removing it is ordered the same way.
        let mut s = change_waits_for_reactor(rt, s, move |s| s.remove_mem_region(&buf));
        let mem = rt.handle().call(0, move |r| current_mem(r, key)).unwrap();
        assert!(!mem.address_in_range(GuestAddress(BUF_GPA)));
        s.shutdown();
    }

    #[test]
    fn set_vring_call_is_answered_after_the_running_queue_switched() {
        let (reactors, s) = running_session();
        let rt = reactors.runtime();
        let call: File = tempfile::tempfile().unwrap();
        let mut s = change_waits_for_reactor(rt, s, move |s| s.set_vring_call(0, Some(call)));
        assert!(s.vrings[0].call.is_some());
        s.shutdown();
    }
}
