//! Fused compare-and-write on an I/O queue, after SPDK: the pairing in
//! submission order (`lib/nvmf/tcp.c` `nvmf_tcp_check_fused_ordering`),
//! the statuses of broken pairs (`lib/nvmf/ctrlr.c`
//! `nvmf_ctrlr_process_io_fused_cmd`), and the operation itself as
//! `bdev_comparev_and_writev_blocks` runs it: lock the LBA range against
//! every other write (the graph's range lock, across reactors), read and
//! compare, write on a match, unlock.
//!
//! The states the two requests pass are in `request/state.rs`; the first
//! posts its completion before the second.

use pollux_graph::{AlignedBuf, Io, IoBuf, IoError, IoOp, RangeLock};
use pollux_nvme::identify::fuses;
use pollux_nvme::opcode::IoOpcode;
use pollux_nvme::sqe::Fuse;
use pollux_nvme::Status;
use pollux_poller::Reactor;

use super::conn::Conn;
use super::io_cmd::{self, CwPlan, IoCtx};
use super::phase::QueuePhase;
use super::request::ReqState;
use super::status;

/// A request's place in a fused pair.
#[derive(Debug, Default)]
pub struct FusedLink {
    /// The other half, once the submission order paired them.
    pub partner: Option<u16>,
    /// The pair is broken (no second after a first, a second without a
    /// first, or the other half failed before it was ready): the request
    /// fails with Command Aborted due to Missing Fused Command.
    pub failed: bool,
    /// Both halves were ready and the pair started.
    pub started: bool,
    /// The first's I/O, from the start.
    plan: Option<CwPlan>,
    /// The first's range lock, while its compare runs.
    lock: Option<RangeLock>,
}

impl Conn {
    /// A command arrived (submission order): pairs a second with the first
    /// just before it, and marks what cannot be paired.
    pub(super) fn fused_order(&mut self, r: &Reactor, slot: u16) {
        if !self.phase.is_io() {
            return;
        }
        let next = self.reqs[slot as usize].sqe.fuse();
        if let Some(first) = self.fused_first.take() {
            if next == Fuse::Second {
                self.reqs[first as usize].fused.partner = Some(slot);
                self.reqs[slot as usize].fused.partner = Some(first);
                return;
            }
            self.reqs[first as usize].fused.failed = true;
            if self.reqs[first as usize].state() == ReqState::FusedAwaitingPartner {
                self.process(r, first);
            }
        }
        match next {
            Fuse::First => self.fused_first = Some(slot),
            Fuse::Second => self.reqs[slot as usize].fused.failed = true,
            Fuse::Normal | Fuse::Reserved => {}
        }
    }

    /// FUSED_AWAITING_PARTNER: fails a broken half, or starts the pair once
    /// both halves are here. True if `slot`'s state may have changed.
    pub(super) fn fused_ready(&mut self, r: &Reactor, slot: u16) -> bool {
        let req = &mut self.reqs[slot as usize];
        if req.fused.failed {
            req.fail(Status::ABORTED_MISSING_FUSED);
            req.set_state(&self.states, ReqState::Executed);
            return true;
        }
        if req.fused.started {
            // The second, waiting for the compare.
            return false;
        }
        let Some(partner) = req.fused.partner else {
            return false;
        };
        if self.reqs[partner as usize].state() != ReqState::FusedAwaitingPartner {
            return false;
        }
        let (first, second) = if self.reqs[slot as usize].sqe.fuse() == Fuse::First {
            (slot, partner)
        } else {
            (partner, slot)
        };
        self.fused_start(r, first, second);
        true
    }

    /// Both halves are ready: checks the pair and asks for the lock.
    fn fused_start(&mut self, r: &Reactor, first: u16, second: u16) {
        let (f, s) = (first as usize, second as usize);
        let QueuePhase::Io { ctrl, .. } = &self.phase else {
            return;
        };
        let ctrl = ctrl.clone();
        let checked = if self.reqs[f].sqe.opcode() != IoOpcode::Compare.as_u8() {
            // As SPDK: the first is refused, so the second has none.
            Err((
                Status::INVALID_OPCODE.with_dnr(),
                Status::ABORTED_MISSING_FUSED,
            ))
        } else if self.reqs[s].sqe.opcode() != IoOpcode::Write.as_u8() {
            Err((
                Status::ABORTED_MISSING_FUSED,
                Status::INVALID_OPCODE.with_dnr(),
            ))
        } else if ctrl.opts.masked_fuses & fuses::COMPARE_AND_WRITE != 0 {
            Err((
                Status::INVALID_FIELD.with_dnr(),
                Status::ABORTED_FAILED_FUSED,
            ))
        } else {
            let mut cx = IoCtx {
                reactor: r,
                graph: &self.shared.graph,
                ns_cache: &mut self.ns_cache,
                sink: &self.sink,
                tag: u64::from(first),
            };
            io_cmd::fused_plan(&self.reqs[f], &self.reqs[s], &ctrl, &mut cx)
                .map_err(|st| (st, Status::ABORTED_FAILED_FUSED))
        };
        self.reqs[f].fused.started = true;
        self.reqs[s].fused.started = true;
        let plan = match checked {
            Ok(plan) => plan,
            Err((fst, sst)) => {
                self.reqs[f].fail(fst);
                self.reqs[s].fail(sst);
                self.fused_finish(r, first, second);
                return;
            }
        };
        self.reqs[f].fused.plan = Some(plan);
        self.reqs[f].set_state(&self.states, ReqState::AwaitingRangeLock);
        let me = self.me.clone();
        let cid = self.reqs[f].cid();
        self.shared.graph.lock_range(
            r,
            plan.root,
            plan.offset,
            plan.len,
            Box::new(move |r, lock| {
                // A queue pair gone meanwhile drops the lock, which
                // unlocks it.
                let Some(conn) = me.upgrade() else { return };
                let Ok(mut c) = conn.try_borrow_mut() else {
                    debug_assert!(false, "lock granted inside the connection");
                    return;
                };
                c.fused_locked(r, first, cid, lock);
                c.wake_group();
            }),
        );
    }

    /// AWAITING_RANGE_LOCK: with the lock, reads the blocks to compare.
    fn fused_locked(
        &mut self,
        r: &Reactor,
        first: u16,
        cid: u16,
        lock: Result<RangeLock, IoError>,
    ) {
        let req = &mut self.reqs[first as usize];
        if req.state() != ReqState::AwaitingRangeLock || req.cid() != cid {
            return;
        }
        let Some(second) = req.fused.partner else {
            return;
        };
        let (lock, plan) = match (lock, req.fused.plan) {
            (Ok(lock), Some(plan)) => (lock, plan),
            (Err(e), _) => {
                req.fail(status::io_error_status(IoOp::Read, &e));
                self.reqs[second as usize].fail(Status::ABORTED_FAILED_FUSED);
                self.fused_finish(r, first, second);
                return;
            }
            (Ok(_), None) => return,
        };
        let read = Io::new(
            IoOp::Read,
            plan.offset,
            plan.len,
            IoBuf::Owned(AlignedBuf::zeroed(plan.len as usize)),
            self.sink.clone(),
            u64::from(first),
        )
        .under_range_lock(&lock);
        req.fused.lock = Some(lock);
        req.outstanding = 1;
        req.set_state(&self.states, ReqState::Executing);
        self.shared.graph.snapshot(r).submit(r, plan.root, read);
    }

    /// The first's compare is done (its status says how): the write on a
    /// match, else the second is aborted. The first stays Executing until
    /// the write is done, so the two complete in order.
    pub(super) fn fused_compared(&mut self, r: &Reactor, first: u16) {
        let req = &mut self.reqs[first as usize];
        let lock = req.fused.lock.take();
        let (Some(second), Some(plan)) = (req.fused.partner, req.fused.plan) else {
            return;
        };
        let matched = req.status.is_success();
        let buf = self.reqs[second as usize].buf.take();
        match (matched, lock, buf) {
            (true, Some(lock), Some(buf)) => {
                // The lock ends when the write completes, whatever became
                // of this queue pair by then.
                let write = Io::new(
                    IoOp::Write,
                    plan.offset,
                    plan.len,
                    IoBuf::Owned(buf),
                    self.sink.clone(),
                    u64::from(second),
                )
                .finishing_range_lock(lock);
                let s = &mut self.reqs[second as usize];
                s.outstanding = 1;
                s.set_state(&self.states, ReqState::Executing);
                self.shared.graph.snapshot(r).submit(r, plan.root, write);
            }
            (_, lock, buf) => {
                if let Some(lock) = lock {
                    lock.unlock(r);
                }
                self.reqs[second as usize].buf = buf;
                self.reqs[second as usize].fail(Status::ABORTED_FAILED_FUSED);
                self.fused_finish(r, first, second);
            }
        }
    }

    /// The second's write is done: both halves complete.
    pub(super) fn fused_written(&mut self, r: &Reactor, second: u16) {
        if let Some(first) = self.reqs[second as usize].fused.partner {
            self.fused_finish(r, first, second);
        }
    }

    /// Both halves to Executed and on, the first's completion first.
    fn fused_finish(&mut self, r: &Reactor, first: u16, second: u16) {
        for slot in [first, second] {
            let req = &mut self.reqs[slot as usize];
            if matches!(
                req.state(),
                ReqState::FusedAwaitingPartner | ReqState::AwaitingRangeLock | ReqState::Executing
            ) {
                req.set_state(&self.states, ReqState::Executed);
            }
        }
        self.process(r, first);
        self.process(r, second);
    }

    /// COMPLETED: a half that ends before its pair started breaks it (the
    /// other half fails, SPDK's rule), and a first still waiting for its
    /// second is forgotten, so the slot's next command is not paired.
    /// Returns the partner to drive once this slot is free.
    pub(super) fn fused_completed(&mut self, slot: u16) -> Option<u16> {
        if self.fused_first == Some(slot) {
            self.fused_first = None;
        }
        let link = &self.reqs[slot as usize].fused;
        let partner = link.partner.filter(|_| !link.started)?;
        let p = &mut self.reqs[partner as usize];
        if p.fused.partner != Some(slot) {
            return None;
        }
        p.fused.partner = None;
        p.fused.failed = true;
        (p.state() == ReqState::FusedAwaitingPartner).then_some(partner)
    }
}
