//! The NVMe/TCP request states and the one way to change them.
//!
//! Modelled on SPDK `lib/nvmf/tcp.c` (`enum spdk_nvmf_tcp_req_state`,
//! `nvmf_tcp_req_set_state`):
//!
//! ```text
//! Free → New → NeedBuffer → [TransferringHostToController (R2T/H2CData)]
//!      → ReadyToExecute → [Executing] → Executed → ReadyToComplete
//!      → [TransferringControllerToHost (C2HData)] → Completed → Free
//! ```
//!
//! A fused pair (Compare, FUSE first; Write, FUSE second; SPDK
//! `nvmf_tcp_check_fused_ordering` and `lib/nvmf/ctrlr.c`) leaves
//! ReadyToExecute for FusedAwaitingPartner: each half waits there until
//! the other is ready too (and the first until the next command says it
//! has a second at all). Then the first asks for the range lock
//! (AwaitingRangeLock) and, with it, reads and compares (Executing),
//! while the second waits on in FusedAwaitingPartner for the compare's
//! answer before its write (Executing):
//!
//! ```text
//! first:  ReadyToExecute → FusedAwaitingPartner → AwaitingRangeLock
//!         → Executing (compare, then until the write is done) → Executed
//! second: ReadyToExecute → FusedAwaitingPartner → Executing (write)
//!         → Executed;  or FusedAwaitingPartner → Executed (aborted)
//! ```
//!
//! A request fails forward: from New (bad SGL) or while its data arrives
//! (digest error) it jumps to ReadyToComplete with an error status; a
//! command that fails in its handler goes through Executed like any other.
//! [`Request::set_state`] checks each change against [`legal`] in debug
//! builds, keeps the queue pair's per-state counts (the
//! `pollux_nvmf_requests{state}` gauge) and traces it.

use pollux_poller::sync::{single_writer_add, AtomicU64, Ordering};

use super::Request;

/// Where a request is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReqState {
    /// Slot unused.
    Free,
    /// Capsule (and any in-capsule data) received; not yet parsed.
    New,
    /// Parsed; its data buffer must be set up.
    NeedBuffer,
    /// Waiting for H2CData answering our R2T.
    TransferringHostToController,
    /// Has everything it needs.
    ReadyToExecute,
    /// Half of a fused pair, ready; waiting for the other half.
    FusedAwaitingPartner,
    /// The first of a fused pair: waiting for its LBA range lock.
    AwaitingRangeLock,
    /// Submitted to the graph (or held, for an AER); waiting.
    Executing,
    /// Execution finished; status known.
    Executed,
    /// The response can be built.
    ReadyToComplete,
    /// C2HData queued for the socket.
    TransferringControllerToHost,
    /// Response queued; the slot is released next.
    Completed,
}

impl ReqState {
    /// Number of states.
    pub const COUNT: usize = 12;

    /// Every state, in life order.
    pub const ALL: [ReqState; ReqState::COUNT] = [
        ReqState::Free,
        ReqState::New,
        ReqState::NeedBuffer,
        ReqState::TransferringHostToController,
        ReqState::ReadyToExecute,
        ReqState::FusedAwaitingPartner,
        ReqState::AwaitingRangeLock,
        ReqState::Executing,
        ReqState::Executed,
        ReqState::ReadyToComplete,
        ReqState::TransferringControllerToHost,
        ReqState::Completed,
    ];

    /// The `state` label of `pollux_nvmf_requests`: SPDK's state name
    /// without its `TCP_REQUEST_STATE_` prefix, in lower case.
    pub const fn name(self) -> &'static str {
        match self {
            ReqState::Free => "free",
            ReqState::New => "new",
            ReqState::NeedBuffer => "need_buffer",
            ReqState::TransferringHostToController => "transferring_host_to_controller",
            ReqState::ReadyToExecute => "ready_to_execute",
            ReqState::FusedAwaitingPartner => "fused_awaiting_partner",
            ReqState::AwaitingRangeLock => "awaiting_range_lock",
            ReqState::Executing => "executing",
            ReqState::Executed => "executed",
            ReqState::ReadyToComplete => "ready_to_complete",
            ReqState::TransferringControllerToHost => "transferring_controller_to_host",
            ReqState::Completed => "completed",
        }
    }

    #[inline]
    const fn index(self) -> usize {
        self as usize
    }
}

/// Whether a request may go from `from` to `to`: the transition table.
pub const fn legal(from: ReqState, to: ReqState) -> bool {
    use ReqState::*;
    matches!(
        (from, to),
        (Free, New)
            | (New, NeedBuffer)
            | (New, ReadyToComplete)
            | (NeedBuffer, TransferringHostToController)
            | (NeedBuffer, ReadyToExecute)
            | (TransferringHostToController, ReadyToExecute)
            | (TransferringHostToController, ReadyToComplete)
            | (ReadyToExecute, Executing)
            | (ReadyToExecute, Executed)
            | (ReadyToExecute, FusedAwaitingPartner)
            | (FusedAwaitingPartner, AwaitingRangeLock)
            | (FusedAwaitingPartner, Executing)
            | (FusedAwaitingPartner, Executed)
            | (AwaitingRangeLock, Executing)
            | (AwaitingRangeLock, Executed)
            | (Executing, Executed)
            | (Executed, ReadyToComplete)
            | (ReadyToComplete, TransferringControllerToHost)
            | (ReadyToComplete, Completed)
            | (TransferringControllerToHost, Completed)
            | (Completed, Free)
    )
}

/// Requests per state of one queue pair. Only the queue pair's reactor
/// writes them (`single_writer_add`: no read-modify-write, there is no
/// other writer); the metrics scrape reads them from any thread.
/// Values are wrapping: `Free` goes "negative" as slots fill and is not
/// reported; every other state counts requests that entered it and have
/// not left, so it is never below zero.
#[derive(Debug, Default)]
pub struct StateCounts {
    n: [AtomicU64; ReqState::COUNT],
}

impl StateCounts {
    #[inline]
    fn add(&self, s: ReqState, by: u64) {
        single_writer_add(&self.n[s.index()], by);
    }

    /// Requests now in `s` (not meaningful for `Free`).
    pub fn get(&self, s: ReqState) -> u64 {
        self.n[s.index()].load(Ordering::Relaxed)
    }
}

impl Request {
    /// Where the request is.
    #[inline]
    pub fn state(&self) -> ReqState {
        self.state
    }

    /// Moves the request to `to`: the only way its state changes. Debug
    /// builds check the transition against [`legal`].
    #[inline]
    pub fn set_state(&mut self, counts: &StateCounts, to: ReqState) {
        let from = self.state;
        debug_assert!(
            legal(from, to),
            "nvmf: illegal request transition {} -> {} (cid {})",
            from.name(),
            to.name(),
            self.sqe.cid()
        );
        counts.add(from, u64::MAX);
        counts.add(to, 1);
        tracing::trace!(
            cid = self.sqe.cid(),
            from = from.name(),
            to = to.name(),
            "nvmf: request state"
        );
        self.state = to;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pollux_nvme::Sqe;

    #[test]
    fn names_follow_the_state_order() {
        for (i, s) in ReqState::ALL.iter().enumerate() {
            assert_eq!(s.index(), i, "{s:?}");
        }
        let mut names: Vec<_> = ReqState::ALL.iter().map(|s| s.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ReqState::COUNT, "labels are distinct");
    }

    /// Every state is reachable from Free and leads back to it, so no slot
    /// can be stuck by the table itself.
    #[test]
    fn every_state_lies_on_a_path_from_free_back_to_free() {
        let reach = |from: ReqState| {
            let mut seen = vec![from];
            let mut i = 0;
            while i < seen.len() {
                for to in ReqState::ALL {
                    if legal(seen[i], to) && !seen.contains(&to) {
                        seen.push(to);
                    }
                }
                i += 1;
            }
            seen
        };
        assert_eq!(reach(ReqState::Free).len(), ReqState::COUNT);
        for s in ReqState::ALL {
            assert!(reach(s).contains(&ReqState::Free), "{s:?} never frees");
        }
        assert!(!legal(ReqState::Free, ReqState::Executing));
        assert!(!legal(ReqState::Executing, ReqState::Free));
    }

    #[test]
    fn set_state_counts_requests_per_state() {
        let counts = StateCounts::default();
        let mut a = Request::free();
        let mut b = Request::free();
        a.start(&counts, Sqe::new(0x02, 1), None);
        b.start(&counts, Sqe::new(0x02, 2), None);
        assert_eq!(counts.get(ReqState::New), 2);
        a.set_state(&counts, ReqState::NeedBuffer);
        assert_eq!(counts.get(ReqState::New), 1);
        assert_eq!(counts.get(ReqState::NeedBuffer), 1);
        for s in [
            ReqState::ReadyToExecute,
            ReqState::Executed,
            ReqState::ReadyToComplete,
            ReqState::Completed,
            ReqState::Free,
        ] {
            a.set_state(&counts, s);
        }
        assert_eq!(a.state(), ReqState::Free);
        assert_eq!(counts.get(ReqState::NeedBuffer), 0);
        assert_eq!(counts.get(ReqState::Completed), 0);
        assert_eq!(counts.get(ReqState::New), 1);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "illegal request transition free -> executing")]
    fn an_illegal_transition_is_caught_in_debug_builds() {
        let counts = StateCounts::default();
        Request::free().set_state(&counts, ReqState::Executing);
    }
}
