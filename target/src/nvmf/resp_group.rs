//! How many read responses go out behind their data as one group.
//!
//! A successful read is a C2HData PDU and, unless the host disabled SQ
//! flow control, a CapsuleResp (24 bytes) after it. SPDK's initiator
//! reads a connection through a pipe sized for exactly eight C2HData PDUs
//! of 4 KiB (`SPDK_NVMF_TCP_RECV_BUF_SIZE_FACTOR` in its `nvme_tcp.c`),
//! and its poll of the connection ends when a pipe fill ends inside a PDU,
//! even with more bytes in the socket. Sent in pairs (data, response,
//! data, response: 4,144 bytes a read), every full fill ended inside a PDU,
//! so that initiator polled two and a half times as often as against SPDK's
//! target, each poll a send and an epoll_wait of its own: at QD 128 it was
//! the side at its limit, at 0.9x of SPDK. With the responses of `n` reads
//! queued behind their `n` data PDUs, `n / 8` fills in a row end on a PDU
//! boundary. The transport's order holds: a command's data still comes
//! before its response. SPDK's target gives every host a stream of this
//! shape, as it queues a read's CapsuleResp only once the C2HData's write
//! completed.
//!
//! A group must stay below the host's queue depth: a host that gets all
//! its completions at the end of one group sits idle until then, sends all
//! its commands at once, and both sides fall into lock-step (SPDK's
//! initiator at QD 32 with groups of 32: 610 k against 810 k in pairs). The
//! queue depth is not on the wire; the command identifiers in use show it.
//! SPDK's initiator takes them from a LIFO free list, so the number of
//! distinct identifiers in a window of commands is its queue depth, and the
//! group is half of it. A host whose identifiers rotate through its whole
//! tag space (Linux's blk-mq) counts as deep; its groups are then bounded by
//! what one flush holds, which is what was in flight anyway.
//!
//! Measured with spdk_nvme_perf, 4 KiB randread, in BENCHMARKS.md
//! ("NVMe/TCP, session 5").

/// The most responses held behind their data: 64 reads of 4 KiB are 256 KiB
/// queued, and larger groups gained nothing measurable at QD 128.
const MAX_GROUP: u32 = 64;

/// Commands per estimate of the queue depth: twice the deepest I/O queue
/// (256 entries), so that every identifier in use is seen in a window.
const WINDOW: u32 = 512;

/// Identifiers are counted by their low bits; 1,024 buckets keep the count
/// exact up to the deepest queue we accept and cost 128 bytes.
const BUCKETS: usize = 1024;

#[derive(Debug, Default)]
pub(super) struct RespGroup {
    /// Identifiers (low bits) seen in the current window.
    seen: [u64; BUCKETS / 64],
    commands: u32,
    /// Distinct identifiers in the last full window: the queue depth.
    depth: u32,
    /// Responses held since the group was last released.
    held: u32,
}

impl RespGroup {
    /// Notes a command capsule's identifier.
    pub(super) fn command(&mut self, cid: u16) {
        let b = usize::from(cid) % BUCKETS;
        self.seen[b / 64] |= 1 << (b % 64);
        self.commands += 1;
        if self.commands == WINDOW {
            self.depth = self.seen.iter().map(|w| w.count_ones()).sum();
            self.seen = [0; BUCKETS / 64];
            self.commands = 0;
        }
    }

    /// The group size now; 1 (before the first window, and for a host with
    /// one command at a time) means each response right behind its data.
    pub(super) fn size(&self) -> u32 {
        (self.depth / 2).clamp(1, MAX_GROUP)
    }

    /// Counts a response held; true when the group is full and must be
    /// released (`released`) behind the data queued so far.
    pub(super) fn hold_one(&mut self) -> bool {
        self.held += 1;
        self.held >= self.size()
    }

    /// The held responses went out (a flush, or the group was full).
    pub(super) fn released(&mut self) {
        self.held = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Commands from a host at queue depth `qd` reusing identifiers LIFO,
    /// as SPDK's initiator does: always the same `qd` identifiers.
    fn lifo_host(g: &mut RespGroup, qd: u16, commands: u32) {
        for i in 0..commands {
            g.command((i % u32::from(qd)) as u16);
        }
    }

    #[test]
    fn pairs_until_the_first_window_and_for_one_command_at_a_time() {
        let mut g = RespGroup::default();
        lifo_host(&mut g, 32, WINDOW - 1);
        assert_eq!(g.size(), 1);
        let mut g = RespGroup::default();
        lifo_host(&mut g, 1, 4 * WINDOW);
        assert_eq!(g.size(), 1);
        assert!(g.hold_one(), "a group of one is released at once");
        g.released();
        assert!(g.hold_one());
    }

    #[test]
    fn the_group_is_half_the_queue_depth_capped() {
        for (qd, want) in [
            (2, 1),
            (8, 4),
            (16, 8),
            (32, 16),
            (128, 64),
            (1024, MAX_GROUP),
        ] {
            let mut g = RespGroup::default();
            lifo_host(&mut g, qd, WINDOW);
            assert_eq!(g.size(), want, "QD {qd}");
        }
    }

    #[test]
    fn the_estimate_follows_the_host_down() {
        let mut g = RespGroup::default();
        lifo_host(&mut g, 128, WINDOW);
        assert_eq!(g.size(), 64);
        lifo_host(&mut g, 4, WINDOW);
        assert_eq!(g.size(), 2);
    }

    #[test]
    fn rotating_identifiers_count_as_deep() {
        // Linux's blk-mq tags with a generation counter in the top bits.
        let mut g = RespGroup::default();
        for i in 0..WINDOW {
            g.command(((i / 128) as u16) << 12 | (i % 128) as u16);
        }
        assert_eq!(g.size(), 64);
    }

    #[test]
    fn a_full_group_is_released_and_counting_restarts() {
        let mut g = RespGroup::default();
        lifo_host(&mut g, 8, WINDOW);
        assert_eq!(g.size(), 4);
        assert!(!g.hold_one());
        assert!(!g.hold_one());
        assert!(!g.hold_one());
        assert!(g.hold_one());
        g.released();
        assert!(!g.hold_one());
        g.released();
        assert!(!g.hold_one());
    }
}
