//! The per-reactor poll group (SPDK's `spdk_nvmf_tcp_poll_group` /
//! sock group): the queue pairs a reactor owns, one epoll set over their
//! sockets so an iteration only touches connections with work, one
//! poller, and one timer for timeouts and teardown. Lives on its reactor
//! only; nothing is shared with other reactors.

use std::cell::RefCell;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pollux_poller::{Events, PollStatus, PollerId, Reactor, TimerId};

use super::conn::{Budget, CloseReason, Conn};
use super::listener::ConnPermit;
use super::Shared;

/// Timer period for handshake timeouts, controller teardown and AENs.
const TICK: Duration = Duration::from_millis(100);
/// epoll events taken per iteration.
const EVENTS: usize = 64;

type ConnRef = Rc<RefCell<Conn>>;

/// The poll group of one target on one reactor.
pub struct PollGroup {
    /// The target this group serves.
    target_id: u64,
    budget: Budget,
    /// The budget's size: `budget` plus what is charged now.
    budget_total: std::cell::Cell<i64>,
    epoll: OwnedFd,
    conns: RefCell<Vec<Option<ConnRef>>>,
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
    // SAFETY: epoll_create1 has no memory-safety preconditions; the result
    // is checked before use.
    let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor owned by nobody else.
    let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
    r.register_wake_fd(epoll.as_raw_fd(), Events::READABLE)?;
    let g = Rc::new(PollGroup {
        target_id: shared.id,
        budget: Rc::new(std::cell::Cell::new(0)),
        budget_total: std::cell::Cell::new(0),
        epoll,
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
    let conns: Vec<ConnRef> = g.conns.borrow_mut().drain(..).flatten().collect();
    for c in conns {
        c.borrow_mut().teardown(r, &CloseReason::Stopping);
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
        let mut ev = libc::epoll_event {
            events,
            u64: slot as u64,
        };
        // SAFETY: `ev` is a valid epoll_event for the call; both fds are
        // open (the socket is owned by `conn`, the epoll fd by `self`).
        let rc =
            unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if rc < 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), "nvmf: epoll_ctl failed");
            return;
        }
        conn.borrow_mut()
            .registered(self.epoll.as_raw_fd(), slot as u64, events);
        conns[slot] = Some(conn);
    }

    fn close(&self, r: &Reactor, slot: usize, reason: CloseReason) {
        let Some(conn) = self.conns.borrow_mut().get_mut(slot).and_then(Option::take) else {
            return;
        };
        let mut c = conn.borrow_mut();
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: as in `add`; removing an fd that is still open.
        unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_DEL, c.fd(), &mut ev) };
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

    fn poll(&self, r: &Reactor) -> PollStatus {
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; EVENTS];
        // SAFETY: `evs` is writable for EVENTS entries, the count we pass;
        // timeout 0 never blocks.
        let n =
            unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), evs.as_mut_ptr(), EVENTS as i32, 0) };
        let mut busy = false;
        let mut ready: [usize; EVENTS] = [usize::MAX; EVENTS];
        for (i, ev) in evs.iter().take(n.max(0) as usize).enumerate() {
            ready[i] = ev.u64 as usize;
        }
        let ready = &ready[..n.max(0) as usize];
        let len = self.conns.borrow().len();
        for slot in 0..len {
            let conn = match self.conns.borrow().get(slot) {
                Some(Some(c)) => c.clone(),
                _ => continue,
            };
            let readable = ready.contains(&slot);
            let result = {
                let mut c = conn.borrow_mut();
                if !readable && !c.needs_poll() {
                    continue;
                }
                c.poll(r, readable)
            };
            match result {
                Ok(work) => busy |= work,
                Err(reason) => {
                    self.close(r, slot, reason);
                    busy = true;
                }
            }
        }
        if busy {
            PollStatus::Busy
        } else {
            PollStatus::Idle
        }
    }

    fn tick(&self, r: &Reactor) {
        let now = Instant::now();
        let len = self.conns.borrow().len();
        for slot in 0..len {
            let conn = match self.conns.borrow().get(slot) {
                Some(Some(c)) => c.clone(),
                _ => continue,
            };
            let result = conn.borrow_mut().tick(r, now);
            if let Err(reason) = result {
                self.close(r, slot, reason);
            }
        }
    }

    /// Live connections in this group.
    pub fn len(&self) -> usize {
        self.conns.borrow().iter().flatten().count()
    }
}
