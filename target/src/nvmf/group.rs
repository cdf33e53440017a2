//! The per-reactor poll group (SPDK's `spdk_nvmf_tcp_poll_group` /
//! sock group): the queue pairs a reactor owns, one epoll set over their
//! sockets so an iteration only touches connections with work, one
//! poller, and one timer for timeouts and teardown. Lives on its reactor
//! only; nothing is shared with other reactors.
//!
//! A pass visits two kinds of connection and no other: those epoll reports
//! ready (level-triggered, so a connection that stopped reading at
//! READS_PER_POLL or under TX back-pressure is reported again while data
//! waits in the socket), and those on the pending list, which have work no
//! socket event announces: a completion queued a response, requests wait
//! for buffer budget, parsing paused with bytes in the receive buffer. A
//! connection goes on the pending list when a pass, a tick or a completion
//! leaves it with `needs_poll()` true. Pending connections are polled
//! before the epoll_wait, ready ones after it.

use std::cell::{Cell, RefCell};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pollux_poller::{Epoll, EventBuf, Events, PollStatus, PollerId, Reactor, TimerId};

use super::conn::{Budget, CloseReason, Conn};
use super::listener::ConnPermit;
use super::Shared;

/// Timer period for handshake timeouts, controller teardown and AENs.
const TICK: Duration = Duration::from_millis(100);
/// epoll events taken per iteration.
const EVENTS: usize = 64;

type ConnRef = Rc<RefCell<Conn>>;

/// One connection's place in its group.
struct Slot {
    conn: ConnRef,
    /// Passes that polled it (what the tests look at to see that idle
    /// connections are left alone).
    visits: Cell<u64>,
}

/// Slots with work that no epoll event reports, each queued once.
#[derive(Default)]
struct Pending {
    slots: Vec<usize>,
    /// Indexed by slot: whether it is in `slots`.
    queued: Vec<bool>,
}

/// The shared end of the pending list: what a connection holds to queue
/// itself from a completion.
type PendingRef = Rc<RefCell<Pending>>;

fn push_pending(pending: &PendingRef, slot: usize) {
    let mut p = pending.borrow_mut();
    if p.queued.len() <= slot {
        p.queued.resize(slot + 1, false);
    }
    if !p.queued[slot] {
        p.queued[slot] = true;
        p.slots.push(slot);
    }
}

/// A connection's registration in its poll group: its epoll interest and
/// its way onto the pending list.
pub struct Registration {
    epoll: Rc<Epoll>,
    slot: usize,
    pending: PendingRef,
}

impl Registration {
    /// Replaces the connection's epoll interest.
    pub fn modify(&self, fd: RawFd, events: Events) -> std::io::Result<()> {
        self.epoll.modify(fd, events, self.slot as u64)
    }

    /// Has the next pass poll the connection (it has internal work).
    pub fn mark_pending(&self) {
        push_pending(&self.pending, self.slot);
    }
}

/// The poll group of one target on one reactor.
pub struct PollGroup {
    /// The target this group serves.
    target_id: u64,
    budget: Budget,
    /// The budget's size: `budget` plus what is charged now.
    budget_total: std::cell::Cell<i64>,
    epoll: Rc<Epoll>,
    /// Reused by every pass's epoll_wait.
    events: RefCell<EventBuf>,
    pending: PendingRef,
    /// This pass's work list (ready and pending slots), kept for its
    /// capacity so a pass does not allocate.
    work: RefCell<Vec<(usize, bool)>>,
    conns: RefCell<Vec<Option<Slot>>>,
    poller: RefCell<Option<PollerId>>,
    timer: RefCell<Option<TimerId>>,
}

/// The groups on one reactor, by target id (a reactor may serve several
/// targets in tests).
#[derive(Default)]
struct Registry {
    groups: RefCell<Vec<(u64, Rc<PollGroup>)>>,
}

fn group_for(r: &Reactor, shared: &Arc<Shared>) -> std::io::Result<Rc<PollGroup>> {
    let reg = r.local(|_| Registry::default());
    if let Some((_, g)) = reg.groups.borrow().iter().find(|(id, _)| *id == shared.id) {
        return Ok(g.clone());
    }
    let epoll = Rc::new(Epoll::new()?);
    r.register_wake_fd(epoll.as_raw_fd(), Events::READABLE)?;
    let g = Rc::new(PollGroup {
        target_id: shared.id,
        budget: Rc::new(std::cell::Cell::new(0)),
        budget_total: std::cell::Cell::new(0),
        epoll,
        events: RefCell::new(EventBuf::new(EVENTS)),
        pending: PendingRef::default(),
        work: RefCell::new(Vec::with_capacity(EVENTS)),
        conns: RefCell::new(Vec::new()),
        poller: RefCell::new(None),
        timer: RefCell::new(None),
    });
    let gp = g.clone();
    *g.poller.borrow_mut() = Some(r.register_poller(move |r: &Reactor| gp.poll(r)));
    let gt = Rc::downgrade(&g);
    *g.timer.borrow_mut() = Some(r.add_periodic(TICK, move |r| match gt.upgrade() {
        Some(g) => {
            g.tick(r);
            true
        }
        None => false,
    }));
    reg.groups.borrow_mut().push((shared.id, g.clone()));
    Ok(g)
}

/// Takes ownership of an accepted socket on this reactor.
pub fn attach(
    r: &Reactor,
    shared: Arc<Shared>,
    sock: TcpStream,
    port: SocketAddr,
    permit: ConnPermit,
) {
    if shared.stopping.load(std::sync::atomic::Ordering::Acquire) {
        return;
    }
    let g = match group_for(r, &shared) {
        Ok(g) => g,
        Err(e) => {
            tracing::error!(error = %e, "nvmf: cannot create poll group");
            return;
        }
    };
    g.resize_budget(shared.opts().buffer_budget());
    let conn = match Conn::new(shared, sock, port, permit, g.budget.clone()) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "nvmf: cannot set up connection");
            return;
        }
    };
    g.add(conn);
}

/// Stops this target's group on this reactor (after its connections
/// closed): removes the poller, the timer and the wake fd.
pub fn detach(r: &Reactor, target_id: u64) {
    let reg = r.local(|_| Registry::default());
    let g = {
        let mut groups = reg.groups.borrow_mut();
        let Some(i) = groups.iter().position(|(id, _)| *id == target_id) else {
            return;
        };
        groups.remove(i).1
    };
    let conns: Vec<Slot> = g.conns.borrow_mut().drain(..).flatten().collect();
    for s in conns {
        s.conn.borrow_mut().teardown(r, &CloseReason::Stopping);
    }
    if let Some(p) = g.poller.borrow_mut().take() {
        r.unregister_poller(p);
    }
    if let Some(t) = g.timer.borrow_mut().take() {
        r.cancel_timer(t);
    }
    let _ = r.unregister_wake_fd(g.epoll.as_raw_fd());
}

/// `detach` if this target's group on this reactor still has no queue
/// pair (one may have been attached since the detach was scheduled).
fn detach_if_idle(r: &Reactor, target_id: u64) {
    let reg = r.local(|_| Registry::default());
    let idle = reg
        .groups
        .borrow()
        .iter()
        .any(|(id, g)| *id == target_id && g.len() == 0);
    if idle {
        detach(r, target_id);
    }
}

impl PollGroup {
    /// Makes the budget `total` bytes (the options of the connection being
    /// attached), keeping what is charged now charged.
    fn resize_budget(&self, total: u64) {
        let total = i64::try_from(total).unwrap_or(i64::MAX);
        let delta = total - self.budget_total.get();
        if delta != 0 {
            self.budget.set(self.budget.get() + delta);
            self.budget_total.set(total);
        }
    }

    fn add(&self, conn: ConnRef) {
        let fd = conn.borrow().fd();
        let mut conns = self.conns.borrow_mut();
        let slot = match conns.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                conns.push(None);
                conns.len() - 1
            }
        };
        // Level-triggered; the connection adjusts its interest itself
        // (write interest only while output is blocked).
        let events = conn.borrow().wanted_events();
        if let Err(e) = self.epoll.add(fd, events, slot as u64) {
            tracing::warn!(error = %e, "nvmf: epoll_ctl failed");
            return;
        }
        let reg = Registration {
            epoll: self.epoll.clone(),
            slot,
            pending: self.pending.clone(),
        };
        conn.borrow_mut().registered(reg, events);
        conns[slot] = Some(Slot {
            conn,
            visits: Cell::new(0),
        });
    }

    fn close(&self, r: &Reactor, slot: usize, reason: CloseReason) {
        let Some(Slot { conn, .. }) = self.conns.borrow_mut().get_mut(slot).and_then(Option::take)
        else {
            return;
        };
        let mut c = conn.borrow_mut();
        // Removed while the socket is still open (the Conn owns it); a
        // failure would only mean it was never added.
        let _ = self.epoll.delete(c.fd());
        c.teardown(r, &reason);
        drop(c);
        drop(conn);
        if self.len() == 0 {
            // The last queue pair left: give the epoll fd, poller and
            // timer back, so a target whose hosts all went away holds
            // nothing per reactor. Deferred to a timer because we are
            // inside this group's own poller; `attach` recreates it.
            let id = self.target_id;
            r.add_timer(Duration::ZERO, move |r| detach_if_idle(r, id));
        }
    }

    fn conn_at(&self, slot: usize) -> Option<ConnRef> {
        match self.conns.borrow().get(slot) {
            Some(Some(s)) => Some(s.conn.clone()),
            _ => None,
        }
    }

    fn poll(&self, r: &Reactor) -> PollStatus {
        // Taken out of its cell for the pass: polling a connection may
        // reach back into the group (a completion marking another one
        // pending), which must find no cell borrowed.
        let mut work = self.work.take();
        // Pending connections first, before epoll_wait: their responses
        // (queued by the completions of the previous iteration) go out one
        // syscall earlier, which is the QD 1 round trip's share of this
        // pass. A connection both pending and ready is polled twice; the
        // second poll finds its transmit queue empty and only receives.
        work.clear();
        {
            let mut p = self.pending.borrow_mut();
            let Pending { slots, queued } = &mut *p;
            for slot in slots.drain(..) {
                queued[slot] = false;
                work.push((slot, false));
            }
        }
        let mut busy = self.poll_slots(r, &work);
        work.clear();
        {
            let mut evs = self.events.borrow_mut();
            match self.epoll.wait(&mut evs, Some(Duration::ZERO)) {
                Ok(ready) => work.extend(
                    ready
                        .iter()
                        .map(|e| (e.token() as usize, e.events().is_readable())),
                ),
                // Not expected of a valid epoll fd; the pending list and
                // the next pass still make progress.
                Err(e) => tracing::warn!(error = %e, "nvmf: epoll_wait failed"),
            }
        }
        busy |= self.poll_slots(r, &work);
        *self.work.borrow_mut() = work;
        if busy {
            PollStatus::Busy
        } else {
            PollStatus::Idle
        }
    }

    /// Polls the connections in `work` (slot, readable); true if any did
    /// work. Each appears at most once in `work`.
    fn poll_slots(&self, r: &Reactor, work: &[(usize, bool)]) -> bool {
        let mut busy = false;
        for &(slot, readable) in work {
            let conn = {
                let conns = self.conns.borrow();
                let Some(Some(s)) = conns.get(slot) else {
                    continue;
                };
                s.visits.set(s.visits.get() + 1);
                s.conn.clone()
            };
            let result = {
                let mut c = conn.borrow_mut();
                c.poll(r, readable).map(|work| (work, c.needs_poll()))
            };
            match result {
                Ok((work, again)) => {
                    busy |= work;
                    if again {
                        push_pending(&self.pending, slot);
                    }
                }
                Err(reason) => {
                    self.close(r, slot, reason);
                    busy = true;
                }
            }
        }
        busy
    }

    fn tick(&self, r: &Reactor) {
        let now = Instant::now();
        let len = self.conns.borrow().len();
        for slot in 0..len {
            let Some(conn) = self.conn_at(slot) else {
                continue;
            };
            let result = {
                let mut c = conn.borrow_mut();
                c.tick(r, now).map(|()| c.needs_poll())
            };
            match result {
                // An AER completed, or the target is stopping: let the
                // next pass finish the work.
                Ok(true) => push_pending(&self.pending, slot),
                Ok(false) => {}
                Err(reason) => self.close(r, slot, reason),
            }
        }
    }

    /// Live connections in this group.
    pub fn len(&self) -> usize {
        self.conns.borrow().iter().flatten().count()
    }
}

/// Calls `f` with each live connection of target `target_id` on this
/// reactor (control-plane queries; a connection busy in its own callback
/// cannot be, as this runs between callbacks).
pub(super) fn for_each_conn(r: &Reactor, target_id: u64, mut f: impl FnMut(&Conn)) {
    let reg = r.local(|_| Registry::default());
    let groups = reg.groups.borrow();
    let Some((_, g)) = groups.iter().find(|(id, _)| *id == target_id) else {
        return;
    };
    for s in g.conns.borrow().iter().flatten() {
        if let Ok(c) = s.conn.try_borrow() {
            f(&c);
        }
    }
}

/// Each live connection of target `target_id` on this reactor, by peer
/// address, with the number of passes that polled it.
#[cfg(test)]
pub(super) fn visits(r: &Reactor, target_id: u64) -> Vec<(SocketAddr, u64)> {
    let reg = r.local(|_| Registry::default());
    let groups = reg.groups.borrow();
    let Some((_, g)) = groups.iter().find(|(id, _)| *id == target_id) else {
        return Vec::new();
    };
    let conns = g.conns.borrow();
    conns
        .iter()
        .flatten()
        .map(|s| (s.conn.borrow().peer, s.visits.get()))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::net::TcpStream;
    use std::time::{Duration, Instant};

    use pollux_nvme::host::{self, HostConfig};
    use pollux_nvme::Status;
    use pollux_poller::{IdlePolicy, Runtime};

    use super::super::NvmfTarget;
    use crate::config::NvmfConfig;
    use crate::testing::{loopback_subsystem, Reactors};

    const NQN: &str = "nqn.2024-11.dev.pollux:group";
    const TIMEOUT: Duration = Duration::from_secs(10);
    /// I/Os the busy queue does; each needs at least one pass over it.
    const IOS: u64 = 200;

    /// A target on one spinning reactor (hundreds of thousands of passes
    /// a second, each of which used to visit every connection) over a RAM
    /// namespace of `bytes`.
    fn start(bytes: u64) -> (Reactors, NvmfTarget) {
        let reactors = Reactors::start(vec![0], IdlePolicy::Poll);
        reactors.add_ram("ram0", bytes);
        let cfg = NvmfConfig {
            subsystems: vec![loopback_subsystem(NQN, "ram0")],
        };
        let tgt = NvmfTarget::start(&cfg, &reactors.graph).unwrap();
        (reactors, tgt)
    }

    /// Stops the target, then (dropping them) the graph and reactors.
    fn stop(reactors: Reactors, tgt: NvmfTarget) {
        tgt.stop();
        drop(reactors);
    }

    #[test]
    fn a_pass_polls_busy_connections_and_leaves_idle_ones_alone() {
        let (reactors, tgt) = start(1 << 20);
        let rt = reactors.runtime();
        let addr = tgt.local_addrs()[0];
        let id = tgt.shared.id;
        let visits = move |rt: &Runtime| rt.handle().call(0, move |r| super::visits(r, id));

        // Connected, never sends a byte (its ICReq timeout is 10 s away).
        let idle = TcpStream::connect(addr).unwrap();
        let idle_peer = idle.local_addr().unwrap();
        let mut c = host::Controller::connect(HostConfig::new(addr, NQN)).unwrap();
        c.set_num_queues(1).unwrap();
        let mut q = c.io_queue(1, 32).unwrap();
        let deadline = Instant::now() + TIMEOUT;
        let before = loop {
            let v = visits(rt);
            if v.len() == 3 {
                break v;
            }
            assert!(Instant::now() < deadline, "connections not attached: {v:?}");
            std::thread::sleep(Duration::from_millis(5));
        };
        let idle_before = before.iter().find(|(p, _)| *p == idle_peer).unwrap().1;

        let data = vec![0x5au8; 4096];
        for i in 0..IOS {
            let w = q
                .execute(
                    host::rw_sqe(i % 2 == 0, 1, i % 64, 8),
                    data.clone(),
                    i % 2 == 0,
                    TIMEOUT,
                )
                .unwrap();
            assert!(w.cqe.status().same_code(&Status::SUCCESS));
        }
        let after = visits(rt);
        let idle_after = after.iter().find(|(p, _)| *p == idle_peer).unwrap().1;
        assert_eq!(
            idle_after, idle_before,
            "the idle connection was polled: {before:?} -> {after:?}"
        );
        // The I/O queue: the connection polled most over the commands.
        let (busy_peer, busy_after) = *after.iter().max_by_key(|e| e.1).unwrap();
        let busy_before = before.iter().find(|(p, _)| *p == busy_peer).unwrap().1;
        assert!(
            busy_after >= busy_before + IOS,
            "the busy queue was not polled once per command: {before:?} -> {after:?}"
        );
        drop(q);
        c.shutdown().unwrap();
        drop(idle);
        stop(reactors, tgt);
    }

    #[test]
    fn back_pressured_connections_resume_when_the_host_reads_again() {
        // Reads whose responses (12.5 MiB a batch) far exceed TX_HIGH_WATER
        // plus what loopback socket buffers hold: the connection drops its
        // read interest while the host is not reading, and the second
        // batch waits unread in its socket. Only write readiness, then the
        // pending list and level-triggered read readiness, bring it back
        // once the host reads again.
        const BATCH: u64 = 100;
        const BLOCKS: u32 = 256;
        let (reactors, tgt) = start(2 * BATCH * u64::from(BLOCKS) * 512);
        let addr = tgt.local_addrs()[0];
        let mut cfg = HostConfig::new(addr, NQN);
        cfg.timeout = TIMEOUT;
        let mut c = host::Controller::connect(cfg).unwrap();
        c.set_num_queues(1).unwrap();
        let mut q = c.io_queue(1, 2 * BATCH as u16 + 1).unwrap();
        let len = BLOCKS as usize * 512;
        for batch in 0..2 {
            for i in 0..BATCH {
                let lba = (batch * BATCH + i) * u64::from(BLOCKS);
                let sqe = host::rw_sqe(false, 1, lba, BLOCKS);
                assert!(q.submit(sqe, vec![0; len], false).is_some());
            }
            // Sends without reading anything back.
            q.send_raw(&[]).unwrap();
            std::thread::sleep(Duration::from_millis(200));
        }
        let deadline = Instant::now() + TIMEOUT;
        let mut done = 0;
        while done < 2 * BATCH {
            q.poll().unwrap();
            for cpl in q.take_completed() {
                assert!(cpl.cqe.status().same_code(&Status::SUCCESS));
                assert_eq!(cpl.data.len(), len);
                done += 1;
            }
            assert!(
                Instant::now() < deadline,
                "{done} of {} reads completed: a paused connection was not revisited",
                2 * BATCH
            );
        }
        drop(q);
        c.shutdown().unwrap();
        stop(reactors, tgt);
    }
}
