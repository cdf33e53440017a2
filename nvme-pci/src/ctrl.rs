//! One controller: bring-up through CC/CSTS, the admin queue (identify,
//! number of queues, I/O queue creation, log pages, async events), health
//! watching and shutdown.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pollux_nvme::cqe::Cqe;
use pollux_nvme::identify::{IdentifyController, IdentifyNamespace, IDENTIFY_LEN};
use pollux_nvme::log_page::{GetLogPageCmd, SmartLog};
use pollux_nvme::opcode::AdminOpcode;
use pollux_nvme::sqe::Sqe;

use crate::dma::{DmaMem, Iommu};
use crate::error::AttachError;
use crate::mmio::Bar;
use crate::queue::{CidTable, CompQueue, SubQueue};
use crate::regs::{self, Cap, PAGE};
use crate::vfio::{self, PciFunction};

/// Admin queue entries: a handful of synchronous commands plus the async
/// event requests; far below every controller's minimum MQES.
const ADMIN_ENTRIES: u16 = 32;
/// Async event requests kept outstanding (at most AERL + 1).
const MAX_AERS: u8 = 4;
/// Time an admin command may take: generous for a controller under load
/// and for an emulated one, short enough for an RPC to answer.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the admin thread reaps async events and checks CSTS: a failed
/// or removed device fails its I/O within this long.
const WATCH_PERIOD: Duration = Duration::from_millis(10);
/// Feature Identifier: Number of Queues.
const FID_NUM_QUEUES: u32 = 0x07;
/// Identify CNS values used.
const CNS_NAMESPACE: u32 = 0x00;
const CNS_CONTROLLER: u32 = 0x01;
const CNS_ACTIVE_NS_LIST: u32 = 0x02;
/// SMART / health log page.
const LID_SMART: u8 = 0x02;
/// Default I/O queue depth (entries), SPDK's io_queue_size default.
pub const DEFAULT_IO_QUEUE_DEPTH: u16 = 256;

/// Controller options from the config or RPC.
#[derive(Clone, Copy, Debug)]
pub struct CtrlOpts {
    /// Entries per I/O queue (clamped to CAP.MQES + 1).
    pub io_queue_depth: u16,
}

impl Default for CtrlOpts {
    fn default() -> Self {
        CtrlOpts {
            io_queue_depth: DEFAULT_IO_QUEUE_DEPTH,
        }
    }
}

/// An active namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Namespace {
    /// Namespace ID.
    pub nsid: u32,
    /// Logical block size in bytes.
    pub block_size: u32,
    /// Size in blocks.
    pub blocks: u64,
    /// Deallocated blocks read back as zeroes (DLFEAT bits 2:0 = 001b).
    pub dealloc_reads_zeroes: bool,
}

/// What identify said about the controller, for RPCs and the data path.
#[derive(Clone, Debug)]
pub struct CtrlInfo {
    /// Serial number.
    pub serial: String,
    /// Model number.
    pub model: String,
    /// Firmware revision.
    pub firmware: String,
    /// Version register.
    pub version: u32,
    /// Largest transfer per command in bytes (MDTS, capped to our lists).
    pub max_xfer: usize,
    /// SGL support (SGLS bits 1:0: 0 none, 1 any alignment, 2 dword).
    pub sgl: u32,
    /// Optional NVM commands (ONCS).
    pub oncs: u16,
    /// Volatile write cache present.
    pub vwc: bool,
    /// I/O queue pairs the controller granted.
    pub io_queues: u16,
    /// Entries per I/O queue.
    pub io_queue_depth: u16,
    /// The device's NUMA node.
    pub numa_node: Option<u32>,
}

/// Counters of one I/O queue pair, written only by its reactor (plain
/// stores, no read-modify-write) and read by the metrics scrape.
#[derive(Debug, Default)]
pub struct QpStats {
    /// Reactor index owning the queue pair.
    pub reactor: usize,
    /// Queue ID.
    pub qid: u16,
    /// Commands completed.
    pub commands: AtomicU64,
    /// Commands that completed with an error status (or were failed).
    pub errors: AtomicU64,
    /// Queue slots (CIDs) in use now.
    pub in_use: AtomicU64,
}

enum AdminCmd {
    Sync,
    Aer,
}

struct Admin {
    sq: SubQueue,
    cq: CompQueue,
    cids: CidTable<AdminCmd>,
    /// Data buffer of the synchronous commands (identify, log pages).
    buf: DmaMem,
    /// Async event completions seen (dw0) and not yet handled.
    events: Vec<u32>,
}

/// A controller attached through VFIO.
pub struct Controller {
    name: String,
    cap: Cap,
    admin: Mutex<Admin>,
    info: CtrlInfo,
    namespaces: Vec<Namespace>,
    free_qids: Mutex<Vec<u16>>,
    failed: AtomicBool,
    detached: AtomicBool,
    shut_down: AtomicBool,
    /// Namespace bdevs still open; the last to close shuts the controller down.
    open_namespaces: AtomicUsize,
    stats: Mutex<Vec<Arc<QpStats>>>,
    admin_commands: AtomicU64,
    async_events: AtomicU64,
    watcher: Mutex<Option<JoinHandle<()>>>,
    /// A software device (`sim`): no admin queue commands are sent.
    simulated: bool,
    /// Last: the device (and with it the IOMMU domain) closes after the
    /// admin queue memory above is unmapped.
    pci: PciFunction,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("name", &self.name)
            .field("bdf", &self.pci.bdf)
            .finish()
    }
}

fn ascii(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .trim_end_matches([' ', '\0'])
        .to_owned()
}

impl Admin {
    fn exec(&mut self, bar: &Bar, cap: &Cap, mut sqe: Sqe) -> Result<Cqe, String> {
        let Ok(cid) = self.cids.insert(AdminCmd::Sync) else {
            return Err("admin queue full".into());
        };
        sqe.set_cid(cid);
        if !self.sq.push(&sqe) {
            let _ = self.cids.take(cid);
            return Err("admin queue full".into());
        }
        if let Some(t) = self.sq.take_doorbell() {
            bar.write32(cap.sq_doorbell(0), t);
        }
        let start = Instant::now();
        loop {
            let mut ours = None;
            while let Some(cqe) = self.cq.pop() {
                if let Some(c) = self.complete(cqe) {
                    if c.cid() == cid {
                        ours = Some(c);
                    }
                }
            }
            if let Some(t) = self.cq.take_doorbell() {
                bar.write32(cap.cq_doorbell(0), t);
            }
            if let Some(c) = ours {
                let st = c.status();
                return if st.is_success() {
                    Ok(c)
                } else {
                    Err(format!(
                        "admin command {:#04x} failed: {}",
                        sqe.opcode(),
                        st.name().unwrap_or("error")
                    ))
                };
            }
            if start.elapsed() > ADMIN_TIMEOUT {
                // The CID stays taken: a late completion is then recognised
                // as stale rather than mistaken for a newer command's.
                return Err(format!("admin command {:#04x} timed out", sqe.opcode()));
            }
            std::thread::sleep(Duration::from_micros(20));
        }
    }

    /// Takes one admin completion: async events are recorded, synchronous
    /// ones handed back. Hostile entries are dropped.
    fn complete(&mut self, cqe: Cqe) -> Option<Cqe> {
        if let Err(e) = self.sq.set_head(cqe.sqhd()) {
            tracing::warn!(error = %e, "admin completion refused");
            return None;
        }
        match self.cids.take(cqe.cid()) {
            Ok(AdminCmd::Sync) => Some(cqe),
            Ok(AdminCmd::Aer) => {
                if cqe.status().is_success() {
                    self.events.push(cqe.dw0());
                }
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "admin completion refused");
                None
            }
        }
    }

    fn arm_aer(&mut self, bar: &Bar, cap: &Cap) {
        let Ok(cid) = self.cids.insert(AdminCmd::Aer) else {
            return;
        };
        let sqe = Sqe::new(AdminOpcode::AsyncEventRequest as u8, cid);
        self.sq.push(&sqe);
        if let Some(t) = self.sq.take_doorbell() {
            bar.write32(cap.sq_doorbell(0), t);
        }
    }
}

impl Controller {
    /// Opens, resets and enables the controller at `bdf`, identifies it and
    /// its namespaces. `max_io_queues`: one per reactor.
    pub fn attach(
        name: &str,
        bdf: &str,
        opts: CtrlOpts,
        max_io_queues: u16,
    ) -> Result<Arc<Controller>, AttachError> {
        let pci = vfio::open(bdf)?;
        let bdf = pci.bdf.clone();
        let bar = &pci.bar;
        let cerr = |what: String| AttachError::Controller {
            bdf: bdf.clone(),
            what,
        };
        let cap = Cap::parse(bar.read64(regs::CAP));
        if bar.read32(regs::CSTS) == regs::REMOVED {
            return Err(cerr("registers read as all ones (device removed?)".into()));
        }
        if !cap.nvm_css || cap.mps_min > PAGE {
            return Err(cerr(
                "controller supports neither the NVM command set at 4 KiB pages".into(),
            ));
        }
        if !bar.contains(cap.cq_doorbell(max_io_queues)) {
            return Err(cerr(format!(
                "doorbell stride {} does not fit BAR0 of {} bytes",
                cap.doorbell_stride,
                bar.len()
            )));
        }
        let os = |what: &'static str| {
            let bdf = bdf.clone();
            move |source| AttachError::Os { bdf, what, source }
        };
        let node = pci.numa_node;
        let iommu: &Arc<dyn Iommu> = &pci.iommu;

        // Reset: CC.EN = 0, then wait for CSTS.RDY = 0.
        if bar.read32(regs::CC) & regs::CC_EN != 0 {
            bar.write32(regs::CC, bar.read32(regs::CC) & !regs::CC_EN);
        }
        wait_rdy(bar, &cap, false).map_err(|csts| AttachError::NotReady {
            bdf: bdf.clone(),
            state: "disabled",
            ms: cap.timeout.as_millis(),
            csts,
        })?;

        let asq = DmaMem::new(iommu, ADMIN_ENTRIES as usize * Sqe::SIZE, node)
            .map_err(os("cannot allocate the admin queue"))?;
        let acq = DmaMem::new(iommu, ADMIN_ENTRIES as usize * Cqe::SIZE, node)
            .map_err(os("cannot allocate the admin queue"))?;
        let buf = DmaMem::new(iommu, IDENTIFY_LEN, node)
            .map_err(os("cannot allocate the admin buffer"))?;
        bar.write32(regs::AQA, regs::aqa(ADMIN_ENTRIES));
        bar.write64(regs::ASQ, asq.iova());
        bar.write64(regs::ACQ, acq.iova());
        bar.write32(regs::CC, regs::cc_enable());
        wait_rdy(bar, &cap, true).map_err(|csts| AttachError::NotReady {
            bdf: bdf.clone(),
            state: "ready",
            ms: cap.timeout.as_millis(),
            csts,
        })?;

        let mut admin = Admin {
            sq: SubQueue::new(asq, ADMIN_ENTRIES),
            cq: CompQueue::new(acq, ADMIN_ENTRIES),
            cids: CidTable::new(ADMIN_ENTRIES - 1),
            buf,
            events: Vec::new(),
        };

        // Identify controller.
        let mut sqe = Sqe::new(AdminOpcode::Identify as u8, 0);
        sqe.set_cdw10(CNS_CONTROLLER);
        set_prp(&mut sqe, admin.buf.iova(), 0);
        admin.exec(bar, &cap, sqe).map_err(&cerr)?;
        let id = IdentifyController::parse(&admin.buf.read::<IDENTIFY_LEN>(0))
            .map_err(|e| cerr(format!("bad identify controller data: {e}")))?;
        let max_xfer = match id.mdts {
            0 => crate::prp::MAX_XFER,
            m => (PAGE << m.min(20)).min(crate::prp::MAX_XFER),
        };

        // Number of queues: one pair per reactor.
        let mut sqe = Sqe::new(AdminOpcode::SetFeatures as u8, 0);
        sqe.set_cdw10(FID_NUM_QUEUES);
        let want = u32::from(max_io_queues.max(1) - 1);
        sqe.set_cdw11(want | (want << 16));
        let c = admin.exec(bar, &cap, sqe).map_err(&cerr)?;
        let granted = ((c.dw0() & 0xffff).min(c.dw0() >> 16) + 1) as u16;
        let io_queues = granted.min(max_io_queues.max(1));

        // Active namespaces.
        let mut sqe = Sqe::new(AdminOpcode::Identify as u8, 0);
        sqe.set_cdw10(CNS_ACTIVE_NS_LIST);
        set_prp(&mut sqe, admin.buf.iova(), 0);
        admin.exec(bar, &cap, sqe).map_err(&cerr)?;
        let list = admin.buf.read::<IDENTIFY_LEN>(0);
        let nsids: Vec<u32> = pollux_nvme::identify::parse_ns_list(&list)
            .take_while(|&n| n != 0)
            .filter(|&n| n <= id.nn.max(1024))
            .collect();
        let mut namespaces = Vec::new();
        for nsid in nsids {
            let mut sqe = Sqe::new(AdminOpcode::Identify as u8, 0);
            sqe.set_nsid(nsid);
            sqe.set_cdw10(CNS_NAMESPACE);
            set_prp(&mut sqe, admin.buf.iova(), 0);
            admin.exec(bar, &cap, sqe).map_err(&cerr)?;
            let ns = IdentifyNamespace::parse(&admin.buf.read::<IDENTIFY_LEN>(0))
                .map_err(|e| cerr(format!("bad identify namespace data: {e}")))?;
            let Some(lbaf) = ns.active_lbaf() else {
                continue;
            };
            if ns.nsze == 0 || !(9..=12).contains(&lbaf.lbads) || lbaf.ms != 0 {
                tracing::warn!(
                    bdf = %bdf, nsid, lbads = lbaf.lbads, ms = lbaf.ms,
                    "namespace skipped: empty, or a block format with metadata or outside 512..4096"
                );
                continue;
            }
            tracing::debug!(bdf = %bdf, nsid, nsze = ns.nsze, dlfeat = ns.dlfeat, "namespace");
            namespaces.push(Namespace {
                nsid,
                block_size: 1 << lbaf.lbads,
                blocks: ns.nsze,
                dealloc_reads_zeroes: ns.dlfeat & 0b111 == 0b001,
            });
        }

        // Health at attach, and async events from now on.
        let smart = GetLogPageCmd::new(LID_SMART, u32::MAX, 0, 512);
        let mut sqe = smart.to_sqe(0);
        set_prp(&mut sqe, admin.buf.iova(), 0);
        if admin.exec(bar, &cap, sqe).is_ok() {
            if let Ok(s) = SmartLog::parse(&admin.buf.read::<512>(0)) {
                if s.critical_warning != 0 {
                    tracing::warn!(bdf = %bdf, critical_warning = s.critical_warning, "SSD reports a critical warning");
                }
            }
        }
        for _ in 0..(id.aerl.saturating_add(1)).min(MAX_AERS) {
            admin.arm_aer(bar, &cap);
        }

        let depth = opts
            .io_queue_depth
            .clamp(2, cap.max_entries.min(u16::MAX as u32) as u16);
        let info = CtrlInfo {
            serial: ascii(&id.sn),
            model: ascii(&id.mn),
            firmware: ascii(&id.fr),
            version: bar.read32(regs::VS),
            max_xfer,
            sgl: id.sgls & 0b11,
            oncs: id.oncs,
            vwc: id.vwc & 1 != 0,
            io_queues,
            io_queue_depth: depth,
            numa_node: node,
        };
        tracing::info!(
            name, bdf = %bdf, model = %info.model, serial = %info.serial,
            numa_node = ?node, namespaces = namespaces.len(), io_queues, depth,
            "NVMe controller attached"
        );
        let ctrl = Arc::new(Controller {
            name: name.to_owned(),
            cap,
            admin: Mutex::new(admin),
            info,
            namespaces,
            free_qids: Mutex::new((1..=io_queues).rev().collect()),
            failed: AtomicBool::new(false),
            detached: AtomicBool::new(false),
            shut_down: AtomicBool::new(false),
            open_namespaces: AtomicUsize::new(0),
            stats: Mutex::default(),
            admin_commands: AtomicU64::new(0),
            async_events: AtomicU64::new(0),
            watcher: Mutex::default(),
            simulated: false,
            pci,
        });
        let weak = Arc::downgrade(&ctrl);
        let watcher = std::thread::Builder::new()
            .name(format!("nvme-{name}"))
            .spawn(move || {
                while let Some(c) = weak.upgrade() {
                    if c.shut_down.load(Ordering::Acquire) {
                        break;
                    }
                    c.watch();
                    drop(c);
                    std::thread::sleep(WATCH_PERIOD);
                }
            })
            .map_err(os("cannot start the admin thread"))?;
        *ctrl.watcher.lock().unwrap_or_else(|e| e.into_inner()) = Some(watcher);
        Ok(ctrl)
    }

    /// A controller over the software device of `sim`: not brought up,
    /// I/O queue creation and deletion are no-ops, nothing watches it.
    pub(crate) fn simulated(
        pci: PciFunction,
        namespaces: Vec<Namespace>,
        info: CtrlInfo,
        io_queues: u16,
    ) -> Result<Arc<Controller>, String> {
        let cap = Cap::parse(u64::from(info.io_queue_depth - 1) | (1 << 37));
        let iommu = pci.iommu.clone();
        let mem = |n| DmaMem::new(&iommu, n, None).map_err(|e| e.to_string());
        let admin = Admin {
            sq: SubQueue::new(mem(PAGE)?, 2),
            cq: CompQueue::new(mem(PAGE)?, 2),
            cids: CidTable::new(1),
            buf: mem(PAGE)?,
            events: Vec::new(),
        };
        Ok(Arc::new(Controller {
            name: "sim".into(),
            cap,
            admin: Mutex::new(admin),
            info,
            namespaces,
            free_qids: Mutex::new((1..=io_queues).rev().collect()),
            failed: AtomicBool::new(false),
            detached: AtomicBool::new(false),
            shut_down: AtomicBool::new(true),
            open_namespaces: AtomicUsize::new(0),
            stats: Mutex::default(),
            admin_commands: AtomicU64::new(0),
            async_events: AtomicU64::new(0),
            watcher: Mutex::default(),
            simulated: true,
            pci,
        }))
    }

    /// The controller's name (the bdev prefix).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its PCI address.
    pub fn bdf(&self) -> &str {
        &self.pci.bdf
    }

    /// Identify results.
    pub fn info(&self) -> &CtrlInfo {
        &self.info
    }

    /// The active namespaces found at attach.
    pub fn namespaces(&self) -> &[Namespace] {
        &self.namespaces
    }

    /// Counters of every queue pair created so far.
    pub fn queue_stats(&self) -> Vec<Arc<QpStats>> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Admin commands run and async events received.
    pub fn admin_counts(&self) -> (u64, u64) {
        (
            self.admin_commands.load(Ordering::Relaxed),
            self.async_events.load(Ordering::Relaxed),
        )
    }

    /// True once the controller reported a fatal status or vanished.
    #[inline]
    pub fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// True once the controller was detached: queue pairs go away.
    #[inline]
    pub fn is_detached(&self) -> bool {
        self.detached.load(Ordering::Relaxed)
    }

    /// Marks the controller failed: every queue pair fails its I/O.
    pub fn fail(&self, why: &str) {
        if !self.failed.swap(true, Ordering::AcqRel) {
            tracing::error!(name = %self.name, bdf = %self.pci.bdf, why, "NVMe controller failed; its I/O now fails");
            // Disabled, it stops its DMA before the queue pairs drop the
            // memory of the commands they fail (unmapped first anyway).
            let bar = self.bar();
            if bar.read32(regs::CSTS) != regs::REMOVED {
                bar.write32(regs::CC, bar.read32(regs::CC) & !regs::CC_EN);
            }
        }
    }

    pub(crate) fn bar(&self) -> &Bar {
        &self.pci.bar
    }

    pub(crate) fn cap(&self) -> &Cap {
        &self.cap
    }

    pub(crate) fn iommu(&self) -> &Arc<dyn Iommu> {
        &self.pci.iommu
    }

    pub(crate) fn register_stats(&self, s: Arc<QpStats>) {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).push(s);
    }

    pub(crate) fn namespace_opened(&self) {
        self.open_namespaces.fetch_add(1, Ordering::AcqRel);
    }

    /// A namespace bdev left the graph (drained); the last one detaches
    /// and shuts the controller down.
    pub(crate) fn namespace_closed(&self) {
        if self.open_namespaces.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shutdown();
        }
    }

    fn admin(&self) -> std::sync::MutexGuard<'_, Admin> {
        self.admin.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn exec(&self, sqe: Sqe) -> Result<Cqe, String> {
        if self.is_failed() {
            return Err("controller failed".into());
        }
        self.admin_commands.fetch_add(1, Ordering::Relaxed);
        let r = self.admin().exec(self.bar(), &self.cap, sqe);
        r
    }

    /// Creates I/O CQ and SQ `qid` over `cq` and `sq` (physically
    /// contiguous, no interrupts: the reactor polls).
    pub(crate) fn create_io_queues(
        &self,
        qid: u16,
        depth: u16,
        cq: u64,
        sq: u64,
    ) -> Result<(), String> {
        if self.simulated {
            return Ok(());
        }
        let mut c = Sqe::new(AdminOpcode::CreateIoCq as u8, 0);
        set_prp(&mut c, cq, 0);
        c.set_cdw10((u32::from(depth - 1) << 16) | u32::from(qid));
        c.set_cdw11(1); // PC = 1, IEN = 0
        self.exec(c)?;
        let mut s = Sqe::new(AdminOpcode::CreateIoSq as u8, 0);
        set_prp(&mut s, sq, 0);
        s.set_cdw10((u32::from(depth - 1) << 16) | u32::from(qid));
        s.set_cdw11((u32::from(qid) << 16) | 1); // CQID, PC = 1
        if let Err(e) = self.exec(s) {
            let mut d = Sqe::new(AdminOpcode::DeleteIoCq as u8, 0);
            d.set_cdw10(u32::from(qid));
            let _ = self.exec(d);
            return Err(e);
        }
        Ok(())
    }

    /// Deletes I/O queue pair `qid` (SQ first, as the spec requires).
    pub(crate) fn delete_io_queues(&self, qid: u16) {
        if !self.shut_down.load(Ordering::Acquire) && !self.is_failed() {
            for op in [AdminOpcode::DeleteIoSq, AdminOpcode::DeleteIoCq] {
                let mut d = Sqe::new(op as u8, 0);
                d.set_cdw10(u32::from(qid));
                if let Err(e) = self.exec(d) {
                    tracing::warn!(name = %self.name, qid, error = %e, "deleting an I/O queue failed");
                }
            }
        }
        self.free_qids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(qid);
    }

    pub(crate) fn take_qid(&self) -> Option<u16> {
        self.free_qids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
    }

    /// One round of the admin thread: controller health, then async events.
    fn watch(&self) {
        if self.is_failed() || self.shut_down.load(Ordering::Acquire) {
            return;
        }
        let csts = self.bar().read32(regs::CSTS);
        if csts == regs::REMOVED {
            self.fail("the device is gone (registers read as all ones)");
            return;
        }
        if csts & regs::CSTS_CFS != 0 {
            self.fail("controller fatal status (CSTS.CFS)");
            return;
        }
        let Ok(mut admin) = self.admin.try_lock() else {
            return;
        };
        while let Some(cqe) = admin.cq.pop() {
            let _ = admin.complete(cqe);
        }
        if let Some(t) = admin.cq.take_doorbell() {
            self.bar().write32(self.cap.cq_doorbell(0), t);
        }
        let events = std::mem::take(&mut admin.events);
        for ev in events {
            self.async_events.fetch_add(1, Ordering::Relaxed);
            let lid = ((ev >> 16) & 0xff) as u8;
            tracing::warn!(
                name = %self.name,
                event_type = ev & 0x7,
                info = (ev >> 8) & 0xff,
                log_page = lid,
                "NVMe asynchronous event"
            );
            // Reading the log page clears the event so the controller can
            // report the next one of its type.
            let mut sqe = GetLogPageCmd::new(lid, u32::MAX, 0, 512).to_sqe(0);
            set_prp(&mut sqe, admin.buf.iova(), 0);
            let _ = admin.exec(self.bar(), &self.cap, sqe);
            admin.arm_aer(self.bar(), &self.cap);
        }
    }

    /// Normal shutdown (CC.SHN) then disable; the controller does no more
    /// DMA after this, so queue memory may be freed.
    pub fn shutdown(&self) {
        if self.simulated || self.shut_down.swap(true, Ordering::AcqRel) {
            return;
        }
        self.detached.store(true, Ordering::Release);
        let bar = self.bar();
        if !self.is_failed() && bar.read32(regs::CSTS) != regs::REMOVED {
            bar.write32(regs::CC, bar.read32(regs::CC) | regs::CC_SHN_NORMAL);
            let start = Instant::now();
            while bar.read32(regs::CSTS) & regs::CSTS_SHST_MASK != regs::CSTS_SHST_DONE {
                if start.elapsed() > self.cap.timeout {
                    tracing::warn!(name = %self.name, "controller shutdown timed out");
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        bar.write32(regs::CC, 0);
        let _ = wait_rdy(bar, &self.cap, false);
        if let Some(w) = self
            .watcher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            if w.thread().id() != std::thread::current().id() {
                let _ = w.join();
            }
        }
        tracing::info!(name = %self.name, bdf = %self.pci.bdf, "NVMe controller shut down");
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Waits for CSTS.RDY to equal `ready` within CAP.TO; Err(last CSTS) on
/// timeout, fatal status or a vanished device.
fn wait_rdy(bar: &Bar, cap: &Cap, ready: bool) -> Result<(), u32> {
    let start = Instant::now();
    loop {
        let csts = bar.read32(regs::CSTS);
        if csts == regs::REMOVED || (ready && csts & regs::CSTS_CFS != 0) {
            return Err(csts);
        }
        if (csts & regs::CSTS_RDY != 0) == ready {
            return Ok(());
        }
        if start.elapsed() > cap.timeout {
            return Err(csts);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Sets PRP1 and PRP2 of an SQE.
pub(crate) fn set_prp(sqe: &mut Sqe, prp1: u64, prp2: u64) {
    let mut d = [0u8; 16];
    d[..8].copy_from_slice(&prp1.to_le_bytes());
    d[8..].copy_from_slice(&prp2.to_le_bytes());
    sqe.set_dptr(d);
}
