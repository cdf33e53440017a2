//! Controller state shared by a controller's admin queue and I/O queues
//! (each possibly on a different reactor). Everything here is control
//! path: Connect, property and feature access, keep alive. The I/O path
//! only ever reads `dead` once per poll-group pass.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use pollux_nvme::fabrics::{Cc, Csts, Shn, Shst};
use pollux_nvme::features::{aec, AsyncEvent};

use super::subsystem::Subsystem;
use super::transport::TransportOpts;

/// Dynamic controller IDs are 1..=0xFFEF (FFF0h and up are reserved).
const CNTLID_MAX: u16 = 0xFFEF;
/// Entries in the Changed Namespace List log page.
const CHANGED_NS_MAX: usize = 1024;
/// Reservation Notification log pages kept per controller: the log's
/// "available" count saturates at 255, and a host that never reads them
/// cannot grow the queue.
const RESV_LOG_MAX: usize = 255;

/// What a controller exports.
#[derive(Debug, Clone)]
pub enum CtrlKind {
    /// An I/O controller of a subsystem.
    Io(Arc<Subsystem>),
    /// A discovery controller.
    Discovery,
}

/// Mutable controller state.
#[derive(Debug)]
pub struct CtrlState {
    /// Controller Configuration as last set by the host.
    pub cc: Cc,
    /// Controller Status.
    pub csts: Csts,
    /// Keep alive timeout in ms (0 = disabled).
    pub kato_ms: u32,
    /// Last keep alive (or admin command).
    pub last_keep_alive: Instant,
    /// Async Event Configuration (Set Features 0Bh).
    pub aec: u32,
    /// Arbitration feature value.
    pub arbitration: u32,
    /// Power management feature value.
    pub power_mgmt: u32,
    /// Temperature threshold feature value.
    pub temp_threshold: u32,
    /// Volatile write cache enabled.
    pub vwc: bool,
    /// I/O queues granted by Set Features Number of Queues, 0-based.
    pub nq_granted: Option<u16>,
    /// I/O queue IDs currently connected.
    pub io_qids: Vec<u16>,
    /// Events waiting for an Asynchronous Event Request.
    pub events: VecDeque<AsyncEvent>,
    /// Changed namespace list not yet read.
    pub changed_ns: Vec<u32>,
    /// A Namespace Attribute Changed notice was sent and the host has not
    /// read the Changed Namespace List since: further notices are masked.
    pub ns_notice_masked: bool,
    /// An ANA Change notice was sent and the host has not read the ANA
    /// log since: further notices are masked.
    pub ana_notice_masked: bool,
    /// Reservation Notification log pages not yet read: (log page count,
    /// type, NSID), oldest first.
    pub resv_log: VecDeque<(u64, u8, u32)>,
    /// Log page count of the last notification (0 = none yet).
    pub resv_count: u64,
    /// A Reservation Log Page Available event was sent and the log has
    /// not been read empty since: further events are masked.
    pub resv_notice_masked: bool,
}

/// One controller.
#[derive(Debug)]
pub struct Controller {
    /// Controller ID returned by Connect.
    pub cntlid: u16,
    /// I/O or discovery.
    pub kind: CtrlKind,
    /// Host NQN from the admin Connect (empty if the host sent none).
    pub hostnqn: String,
    /// Host identifier from the admin Connect.
    pub hostid: [u8; 16],
    /// Transport options of the admin queue's connection: Identify, CAP
    /// and every I/O queue of the controller follow them.
    pub opts: Arc<TransportOpts>,
    /// The listener the admin queue connected through: the path whose ANA
    /// state the controller reports (set once, at Connect).
    pub listener: OnceLock<SocketAddr>,
    /// Set when the controller is torn down (host gone, keep alive
    /// expired, target stopping): its queue pairs close.
    dead: AtomicBool,
    /// Set when `events` is non-empty, so the admin queue's poll sees it
    /// without taking the lock.
    event_pending: AtomicBool,
    state: Mutex<CtrlState>,
}

impl Controller {
    /// Locks the state. A poisoned lock still holds consistent plain data.
    pub fn state(&self) -> MutexGuard<'_, CtrlState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True once torn down.
    #[inline]
    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    /// Whether an async event is waiting.
    #[inline]
    pub fn has_event(&self) -> bool {
        self.event_pending.load(Ordering::Acquire)
    }

    /// Takes the oldest pending async event.
    pub fn take_event(&self) -> Option<AsyncEvent> {
        let mut st = self.state();
        let e = st.events.pop_front();
        self.event_pending
            .store(!st.events.is_empty(), Ordering::Release);
        e
    }

    /// Queues an async event for the next AER.
    #[cfg(test)]
    pub fn push_event(&self, e: AsyncEvent) {
        let mut st = self.state();
        st.events.push_back(e);
        self.event_pending.store(true, Ordering::Release);
    }

    /// Namespace `nsid` was added, removed or resized: adds it to the
    /// Changed Namespace List and, when the host enabled the notice (AEC
    /// bit 8) and has read the list since the last one, queues a Namespace
    /// Attribute Changed event.
    pub fn namespace_changed(&self, nsid: u32) {
        let mut st = self.state();
        if !st.changed_ns.contains(&nsid) && st.changed_ns.first() != Some(&u32::MAX) {
            if st.changed_ns.len() < CHANGED_NS_MAX {
                st.changed_ns.push(nsid);
            } else {
                // Too many to list: the spec's "more than 1024 changed".
                st.changed_ns = vec![u32::MAX];
            }
        }
        if st.aec & aec::NS_ATTR != 0 && !st.ns_notice_masked {
            st.ns_notice_masked = true;
            st.events.push_back(AsyncEvent::NS_ATTR_CHANGED);
            self.event_pending.store(true, Ordering::Release);
        }
    }

    /// An ANA state or group changed: when the host enabled the notice
    /// (AEC bit 11) and has read the ANA log since the last one, queues an
    /// ANA Change event.
    pub fn ana_changed(&self) {
        let mut st = self.state();
        if st.aec & aec::ANA_CHANGE != 0 && !st.ana_notice_masked {
            st.ana_notice_masked = true;
            st.events.push_back(pollux_nvme::ana::ANA_CHANGED);
            self.event_pending.store(true, Ordering::Release);
        }
    }

    /// A reservation change concerns this controller's host: queues a
    /// Reservation Notification log page (the oldest goes when
    /// `RESV_LOG_MAX` wait) and, unless one is outstanding, the Reservation
    /// Log Page Available event.
    pub fn reservation_notice(&self, nsid: u32, kind: u8) {
        let mut st = self.state();
        // The count wraps past u64::MAX to 1: 0 means "no page".
        st.resv_count = st.resv_count.checked_add(1).unwrap_or(1);
        let count = st.resv_count;
        if st.resv_log.len() >= RESV_LOG_MAX {
            st.resv_log.pop_front();
        }
        st.resv_log.push_back((count, kind, nsid));
        if !st.resv_notice_masked {
            st.resv_notice_masked = true;
            st.events
                .push_back(pollux_nvme::reservation::RESERVATION_LOG_AVAILABLE);
            self.event_pending.store(true, Ordering::Release);
        }
    }

    /// The subsystem, for I/O controllers.
    pub fn subsystem(&self) -> Option<&Arc<Subsystem>> {
        match &self.kind {
            CtrlKind::Io(s) => Some(s),
            CtrlKind::Discovery => None,
        }
    }

    /// Whether CC.EN = 1 and CSTS.RDY = 1.
    pub fn is_ready(&self) -> bool {
        let st = self.state();
        st.cc.enabled() && st.csts.rdy() == 1
    }

    /// Applies a CC write: EN 0→1 makes the controller ready, 1→0 resets
    /// it, a shutdown notification completes at once (the target keeps no
    /// volatile state of its own: bdevs are flushed by the host's Flush and
    /// at daemon shutdown).
    pub fn write_cc(&self, new: Cc) {
        let mut st = self.state();
        let old = st.cc;
        st.cc = new;
        if new.enabled() && !old.enabled() {
            st.csts = st.csts.with_rdy(1).with_shst(Shst::Normal);
        } else if !new.enabled() && old.enabled() {
            st.csts = st.csts.with_rdy(0);
        }
        match new.shn() {
            Shn::Normal | Shn::Abrupt => st.csts = st.csts.with_shst(Shst::Complete),
            Shn::None | Shn::Reserved => {}
        }
    }

    /// Marks the controller dead: its queue pairs close on their next
    /// poll-group pass.
    pub fn kill(&self) {
        self.dead.store(true, Ordering::Release);
    }
}

/// All live controllers of a target, by cntlid.
#[derive(Default)]
pub struct ControllerTable {
    by_id: HashMap<u16, Arc<Controller>>,
    next: u16,
}

impl ControllerTable {
    /// Creates a controller with a fresh cntlid (dynamic model), or `None`
    /// if every ID is in use.
    pub fn create(
        &mut self,
        kind: CtrlKind,
        hostnqn: String,
        hostid: [u8; 16],
        kato_ms: u32,
        opts: Arc<TransportOpts>,
    ) -> Option<Arc<Controller>> {
        for _ in 0..CNTLID_MAX {
            self.next = if self.next >= CNTLID_MAX {
                1
            } else {
                self.next + 1
            };
            if self.by_id.contains_key(&self.next) {
                continue;
            }
            let c = Arc::new(Controller {
                cntlid: self.next,
                kind,
                hostnqn,
                hostid,
                opts: opts.clone(),
                listener: OnceLock::new(),
                dead: AtomicBool::new(false),
                event_pending: AtomicBool::new(false),
                state: Mutex::new(CtrlState {
                    cc: Cc(0),
                    csts: Csts(0),
                    kato_ms,
                    last_keep_alive: Instant::now(),
                    aec: 0,
                    arbitration: 0,
                    power_mgmt: 0,
                    // 0x157 K = 70 C, a typical default threshold.
                    temp_threshold: 0x157,
                    vwc: true,
                    nq_granted: None,
                    io_qids: Vec::new(),
                    events: VecDeque::new(),
                    changed_ns: Vec::new(),
                    ns_notice_masked: false,
                    ana_notice_masked: false,
                    resv_log: VecDeque::new(),
                    resv_count: 0,
                    resv_notice_masked: false,
                }),
            });
            self.by_id.insert(c.cntlid, c.clone());
            return Some(c);
        }
        None
    }

    /// The controller with this ID.
    pub fn get(&self, cntlid: u16) -> Option<Arc<Controller>> {
        self.by_id.get(&cntlid).cloned()
    }

    /// Removes (and kills) a controller.
    pub fn remove(&mut self, cntlid: u16) {
        if let Some(c) = self.by_id.remove(&cntlid) {
            c.kill();
        }
    }

    /// The live I/O controllers of subsystem `nqn`.
    pub fn of_subsystem(&self, nqn: &str) -> Vec<Arc<Controller>> {
        self.by_id
            .values()
            .filter(|c| c.subsystem().is_some_and(|s| s.nqn == nqn))
            .cloned()
            .collect()
    }

    /// The live discovery controllers (for `nvmf_subsystem_get_controllers`
    /// on the discovery NQN).
    pub(crate) fn discovery(&self) -> Vec<Arc<Controller>> {
        self.by_id
            .values()
            .filter(|c| matches!(c.kind, CtrlKind::Discovery))
            .cloned()
            .collect()
    }

    /// Kills every controller (target stop).
    pub fn kill_all(&mut self) {
        for (_, c) in self.by_id.drain() {
            c.kill();
        }
    }

    /// Number of live controllers.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_id.len()
    }
}
