//! The bookkeeping of a RAID1 rebuild: which part of the new member is
//! already a copy, and the fence that keeps array writes and the copy from
//! overtaking each other.
//!
//! The copy walks the array in windows (SPDK's process window). Below the
//! window the target already holds the data, so array writes there go to
//! every member, target included; above it the copy has not been, so writes
//! skip the target (the copy will bring their data); writes that touch the
//! window wait until it has moved on, as SPDK quiesces the window's range.
//!
//! The hazard is a write that looked at the window before it moved: it
//! could skip the target for a range the copy is about to read, or write
//! the source while the copy reads it. So before copying a window the copy
//! waits for every write that may have seen an older window, the way SRCU
//! waits for old readers: each write counts itself in the current epoch's
//! counter (per reactor, written only by that reactor), the copy bumps the
//! epoch after moving the window and waits for the previous epoch's
//! counters to read zero. Writes only ever wait for a window, never for a
//! lock, and nothing here runs when no rebuild is under way.
//!
//! A protocol room: built under loom too (see the crate root), where the
//! model below runs it with loom's atomics.

use pollux_poller::sync::{fence, AtomicU64, Ordering};

use crossbeam_utils::CachePadded;

/// SPDK's default process window (`process_window_size_kb`, 1024 KiB):
/// large enough that the copy's I/O is efficient, small enough that a
/// write waiting on it waits for one 1 MiB read and write only.
pub const DEFAULT_WINDOW: u64 = 1 << 20;

/// Where an array write goes while a rebuild runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteRoute {
    /// Entirely below the window: to every member, target included.
    All,
    /// Entirely above the window: to every member but the target.
    SkipTarget,
    /// Touches the window: hold it until the window moves.
    Wait,
}

/// What a write holds while it runs under a rebuild: the epoch it counted
/// itself in, handed back to `exit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket {
    parity: usize,
}

impl Ticket {
    /// The ticket of a write counted in the epoch of `parity`, rebuilt from
    /// `parity()` (filters keep it in a parent's user value).
    pub fn from_parity(parity: usize) -> Ticket {
        Ticket { parity: parity & 1 }
    }

    /// 0 or 1.
    pub fn parity(self) -> usize {
        self.parity
    }
}

/// How the rebuild ended, or that it has not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Outcome {
    /// Copying.
    Running = 0,
    /// The target holds everything: it is an ordinary member now.
    Done = 1,
    /// A read of every source or a write of the target failed.
    Failed = 2,
    /// The array or the target left (delete, remove_base_bdev).
    Stopped = 3,
}

/// One rebuild's shared state: read by every reactor's writes, written by
/// the copy (one reactor at a time) and by writes' own counters.
pub struct Fence {
    size: u64,
    window: u64,
    /// Start of the window being copied; `size` when the copy is past the
    /// end. Everything below it is on the target.
    cursor: AtomicU64,
    /// Bumped by the copy after each window move.
    epoch: AtomicU64,
    /// Per reactor, writes in flight counted in an even and an odd epoch.
    /// Only that reactor writes its pair.
    inflight: Box<[CachePadded<[AtomicU64; 2]>]>,
    outcome: AtomicU64,
}

impl Fence {
    /// A rebuild of an array of `size` bytes in windows of `window` bytes,
    /// whose writes come from `reactors` reactors. Starts before the first
    /// window: every write skips the target until `advance` is called.
    pub fn new(size: u64, window: u64, reactors: usize) -> Fence {
        Fence {
            size,
            window: window.max(1),
            cursor: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            inflight: (0..reactors)
                .map(|_| CachePadded::new([AtomicU64::new(0), AtomicU64::new(0)]))
                .collect(),
            outcome: AtomicU64::new(Outcome::Running as u64),
        }
    }

    /// The array size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The window size.
    pub fn window(&self) -> u64 {
        self.window
    }

    /// Bytes already on the target (SPDK's `progress.blocks`, in bytes).
    pub fn done(&self) -> u64 {
        self.cursor.load(Ordering::Relaxed).min(self.size)
    }

    /// How it ended, or `Running`.
    pub fn outcome(&self) -> Outcome {
        match self.outcome.load(Ordering::Acquire) {
            0 => Outcome::Running,
            1 => Outcome::Done,
            2 => Outcome::Failed,
            _ => Outcome::Stopped,
        }
    }

    /// Ends the rebuild (first caller wins). Returns false if it had ended.
    pub fn finish(&self, how: Outcome) -> bool {
        self.outcome
            .compare_exchange(
                Outcome::Running as u64,
                how as u64,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    /// Reactor `reactor`: a write of `offset..offset+len` begins. Counts it
    /// in the current epoch and says where it goes; with `Wait` nothing was
    /// counted and no ticket is returned.
    pub fn enter(&self, reactor: usize, offset: u64, len: u64) -> (WriteRoute, Option<Ticket>) {
        let parity = (self.epoch.load(Ordering::SeqCst) & 1) as usize;
        let c = &self.inflight[reactor][parity];
        c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        // The count must be visible before the cursor is read: the copy
        // moves the cursor, then bumps the epoch, then reads the counts (all
        // SeqCst), so either it sees this count and waits, or this write
        // reads the moved cursor.
        fence(Ordering::SeqCst);
        let route = self.classify(offset, len, self.cursor.load(Ordering::SeqCst));
        if route == WriteRoute::Wait {
            self.exit(reactor, Ticket { parity });
            return (route, None);
        }
        (route, Some(Ticket { parity }))
    }

    /// Reactor `reactor`: the write that got `t` completed on every member
    /// it went to.
    pub fn exit(&self, reactor: usize, t: Ticket) {
        let c = &self.inflight[reactor][t.parity];
        // Release: the copy's drain reads zero only after the write's member
        // I/O completed.
        c.store(c.load(Ordering::Relaxed) - 1, Ordering::Release);
    }

    fn classify(&self, offset: u64, len: u64, cursor: u64) -> WriteRoute {
        if offset + len <= cursor {
            WriteRoute::All
        } else if offset >= cursor.saturating_add(self.window) {
            WriteRoute::SkipTarget
        } else {
            WriteRoute::Wait
        }
    }

    /// True once reads may be served by the target: only when done and
    /// fenced (`Done` is set after the last drain); before, a write that
    /// skipped the target may still be in flight.
    pub fn target_readable(&self) -> bool {
        self.outcome() == Outcome::Done
    }

    /// The copy: moves the window to start at `cursor` (`size` once past the
    /// end) and bumps the epoch. Returns the parity whose writes must drain
    /// (`drained`) before the window is copied.
    pub fn advance(&self, cursor: u64) -> usize {
        self.cursor.store(cursor.min(self.size), Ordering::SeqCst);
        let old = self.epoch.fetch_add(1, Ordering::SeqCst);
        (old & 1) as usize
    }

    /// The copy: true once no write counted in `parity` is in flight.
    pub fn drained(&self, parity: usize) -> bool {
        fence(Ordering::SeqCst);
        self.inflight
            .iter()
            .all(|c| c[parity].load(Ordering::Acquire) == 0)
    }

    /// The window at the cursor, clipped to the array: what the copy reads
    /// next, or `None` past the end.
    pub fn current_window(&self) -> Option<(u64, u64)> {
        let c = self.cursor.load(Ordering::Relaxed);
        (c < self.size).then(|| (c, self.window.min(self.size - c)))
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn writes_route_by_the_window() {
        let f = Fence::new(10 << 20, 1 << 20, 1);
        // Before the first window: the copy is at 0, its window [0, 1M).
        assert_eq!(f.enter(0, 0, 4096).0, WriteRoute::Wait);
        let (r, t) = f.enter(0, 1 << 20, 4096);
        assert_eq!(r, WriteRoute::SkipTarget);
        f.exit(0, t.unwrap());
        f.advance(3 << 20);
        let (r, t) = f.enter(0, 0, 3 << 20);
        assert_eq!(r, WriteRoute::All);
        f.exit(0, t.unwrap());
        // Straddling the cursor or inside the window: wait.
        assert_eq!(f.enter(0, (3 << 20) - 4096, 8192).0, WriteRoute::Wait);
        assert_eq!(f.enter(0, (4 << 20) - 4096, 4096).0, WriteRoute::Wait);
        assert_eq!(f.enter(0, 4 << 20, 4096).0, WriteRoute::SkipTarget);
    }

    #[test]
    fn the_copy_waits_only_for_writes_of_older_epochs() {
        let f = Fence::new(10 << 20, 1 << 20, 2);
        let (_, old) = f.enter(1, 5 << 20, 4096);
        let p = f.advance(1 << 20);
        assert!(
            !f.drained(p),
            "a write that saw the old window is in flight"
        );
        // A write after the move is in the new epoch: it does not hold the copy.
        let (r, new) = f.enter(0, 0, 4096);
        assert_eq!(r, WriteRoute::All);
        f.exit(1, old.unwrap());
        assert!(f.drained(p));
        // It holds the next move's drain instead.
        let p2 = f.advance(2 << 20);
        assert!(!f.drained(p2));
        f.exit(0, new.unwrap());
        assert!(f.drained(p2));
    }

    #[test]
    fn windows_walk_to_the_end_and_the_target_is_read_only_when_done() {
        let f = Fence::new(2560 << 10, 1 << 20, 1);
        let mut seen = Vec::new();
        let mut at = 0;
        while let Some((off, len)) = {
            f.advance(at);
            f.current_window()
        } {
            seen.push((off, len));
            at = off + len;
        }
        assert_eq!(
            seen,
            [(0, 1 << 20), (1 << 20, 1 << 20), (2 << 20, 512 << 10)]
        );
        assert_eq!(f.done(), f.size());
        assert!(!f.target_readable());
        assert!(f.finish(Outcome::Done));
        assert!(!f.finish(Outcome::Failed), "the first end wins");
        assert!(f.target_readable());
    }

    /// Threads hammer `enter`/`exit` while the copy advances: whenever the
    /// copy sees its drain done, no write that could have seen the old
    /// window is still counted, so a write it races cannot be `SkipTarget`
    /// inside or below the new window.
    #[test]
    fn racing_writes_never_skip_a_copied_range() {
        use std::sync::atomic::AtomicBool;
        use std::sync::Arc;
        let f = Arc::new(Fence::new(64 << 20, 1 << 20, 2));
        // Per reactor: a write in flight with SkipTarget at this offset.
        let skipping: Arc<[AtomicU64; 2]> =
            Arc::new([AtomicU64::new(u64::MAX), AtomicU64::new(u64::MAX)]);
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..2)
            .map(|r| {
                let (f, skipping, stop) = (f.clone(), skipping.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut x = r as u64 * 7919;
                    while !stop.load(Ordering::Relaxed) {
                        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                        let off = (x >> 20) % (64 << 20) / 4096 * 4096;
                        match f.enter(r, off, 4096) {
                            (WriteRoute::SkipTarget, Some(t)) => {
                                skipping[r].store(off, Ordering::SeqCst);
                                std::hint::spin_loop();
                                skipping[r].store(u64::MAX, Ordering::SeqCst);
                                f.exit(r, t);
                            }
                            (_, Some(t)) => f.exit(r, t),
                            (_, None) => {}
                        }
                    }
                })
            })
            .collect();
        let mut at = 0;
        while at < f.size() {
            let p = f.advance(at);
            while !f.drained(p) {
                std::hint::spin_loop();
            }
            let window_end = at + f.window();
            for s in skipping.iter() {
                let off = s.load(Ordering::SeqCst);
                assert!(
                    off == u64::MAX || off >= window_end,
                    "a write skipping the target at {off} is in flight below {window_end}"
                );
            }
            at += f.window();
        }
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.join().unwrap();
        }
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! Run with: RUSTFLAGS="--cfg loom" cargo test -p pollux-graph --release --lib loom
    //!
    //! The fence's rule: once the copy has moved the window past a range
    //! and seen the previous epoch drain, no write that skipped the target
    //! in that range is still in flight (else the copy would read the
    //! source before that write reached it, and the target would miss it).
    use super::*;
    use loom::sync::atomic::AtomicBool;
    use loom::sync::Arc;
    use loom::thread;

    const W: u64 = 4096;

    /// A write of window 1 races the copy moving its window there.
    fn model(drain: bool) {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(3);
        b.check(move || {
            let f = Arc::new(Fence::new(4 * W, W, 1));
            let skipping = Arc::new(AtomicBool::new(false));
            let (f2, s2) = (f.clone(), skipping.clone());
            let writer = thread::spawn(move || {
                let (route, ticket) = f2.enter(0, W, W);
                if route == WriteRoute::SkipTarget {
                    // The write's member I/O is under way.
                    s2.store(true, Ordering::SeqCst);
                    s2.store(false, Ordering::SeqCst);
                }
                if let Some(t) = ticket {
                    f2.exit(0, t);
                }
            });
            let parity = f.advance(W);
            while drain && !f.drained(parity) {
                thread::yield_now();
            }
            // Copying [W, 2W) now.
            assert!(
                !skipping.load(Ordering::SeqCst),
                "the copy overtook a write that skipped the target"
            );
            writer.join().unwrap();
        });
    }

    #[test]
    fn loom_copy_waits_for_writes_that_saw_the_old_window() {
        model(true);
    }

    /// Without the drain the model must find the race.
    #[test]
    #[should_panic(expected = "overtook")]
    fn loom_finds_a_copy_that_does_not_drain() {
        model(false);
    }
}
