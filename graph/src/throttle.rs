//! Rate budgets that QoS filters draw from: the shared half of the QoS
//! token buckets, on its own so that loom can run it.
//!
//! A limit is enforced across every reactor without a lock or a shared
//! write per I/O. Each [`Budget`] (one per rate-limited bdev, or one per
//! throttle group that several bdevs share) holds a pool of tokens per
//! limit kind, refilled with each timeslice's quota (and up to
//! `BURST_SLICES` slices of unspent quota kept).
//! Reactors keep their own [`LocalBuckets`] and take a chunk from the pool
//! only when their local tokens run out, so the shared line is written
//! about once per chunk (an eighth of a timeslice's quota), not per I/O.
//!
//! Why this keeps the rate: a token is spent exactly once, by the reactor
//! that took it, and each timeslice adds one quota to a pool that holds at
//! most `BURST_SLICES` quotas (a token bucket of that depth), so over any
//! run the admitted work is at most the quota per elapsed timeslice, plus
//! the bucket's depth and the tokens still in local buckets. Under
//! saturating load the pool is drained every slice, so the admitted rate
//! is the limit; the depth lets a reactor that was not scheduled for a few
//! milliseconds catch up instead of losing those slices. An I/O is admitted while every bucket
//! it draws from is positive and may drive it negative (SPDK's rule), so a
//! large I/O under a small byte limit waits for the debt to be repaid
//! instead of never fitting.

use pollux_poller::sync::{AtomicU64, Ordering};

/// Length of one refill period. SPDK's `SPDK_BDEV_QOS_TIMESLICE_IN_USEC`:
/// short enough that a queued I/O waits at most about a millisecond past
/// its turn, long enough that a reactor takes a chunk from the shared pool
/// only a few times per millisecond.
pub const TIMESLICE_NS: u64 = 1_000_000;

/// Smallest quota of a timeslice (SPDK's `SPDK_BDEV_QOS_MIN_IO_PER_TIMESLICE`
/// and `..._MIN_BYTE_PER_TIMESLICE`): below it a limit would round to zero
/// and admit nothing.
const MIN_SLICE_QUOTA: [u64; KINDS] = [1, 512, 512, 512];

/// A reactor takes this share of a timeslice's quota at a time: small
/// enough that two reactors share a slice fairly, large enough that the
/// pool's line is written a handful of times per slice.
const CHUNK_DIVISOR: u64 = 8;

/// How many limit kinds there are.
pub const KINDS: usize = 4;

/// What a limit counts. The order is SPDK's `qos_rpc_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitKind {
    /// Read and write I/Os per second.
    RwIos = 0,
    /// Read and write bytes per second.
    RwBytes = 1,
    /// Read bytes per second.
    ReadBytes = 2,
    /// Write bytes per second.
    WriteBytes = 3,
}

impl LimitKind {
    /// Every kind, in index order.
    pub const ALL: [LimitKind; KINDS] = [
        LimitKind::RwIos,
        LimitKind::RwBytes,
        LimitKind::ReadBytes,
        LimitKind::WriteBytes,
    ];
}

/// Limits per second, one per [`LimitKind`]; 0 means unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateLimits(pub [u64; KINDS]);

impl RateLimits {
    /// True if no kind is limited.
    pub fn is_unlimited(&self) -> bool {
        self.0.iter().all(|&l| l == 0)
    }

    /// The limit of `kind` per second (0 = unlimited).
    pub fn get(&self, kind: LimitKind) -> u64 {
        self.0[kind as usize]
    }
}

/// What one I/O costs in each kind. Only reads and writes are limited
/// (as in SPDK's `bdev_qos_io_to_limit`); other ops cost nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cost(pub [u64; KINDS]);

impl Cost {
    /// The cost of a read (`write == false`) or write of `bytes`.
    #[inline]
    pub fn rw(write: bool, bytes: u64) -> Cost {
        if write {
            Cost([1, bytes, 0, bytes])
        } else {
            Cost([1, bytes, bytes, 0])
        }
    }
}

/// One timeslice's quota for a limit per second, rounded up so a limit
/// above zero never rounds to an empty slice.
fn slice_quota(per_sec: u64, kind: usize) -> u64 {
    if per_sec == 0 {
        return 0;
    }
    let q = (per_sec as u128 * TIMESLICE_NS as u128).div_ceil(1_000_000_000) as u64;
    q.max(MIN_SLICE_QUOTA[kind])
}

/// The shared budget of one rate-limited bdev or throttle group.
pub struct Budget {
    /// Limits per second (0 = unlimited); written by the control plane,
    /// read when a timeslice's pool is filled, so a change takes effect
    /// within one slice.
    limits: [AtomicU64; KINDS],
    /// Per kind, one word: the timeslice the pool belongs to (high 32
    /// bits) and the tokens left in it (low 32 bits). One word, so that
    /// filling a new slice and taking from it are one compare-and-swap:
    /// a slice is filled at most once, and no taker can spend a token
    /// twice or see a fill land late over what it took.
    pool: [AtomicU64; KINDS],
}

/// How many timeslices of unspent quota a pool may carry into a new slice:
/// the bucket's depth. A reactor that was not scheduled for a few
/// milliseconds (a loaded host) then still gets its share, instead of the
/// slices it missed being lost; and over any window W the admitted work
/// exceeds the limit by at most this many slices' worth (50 ms over a
/// 10 s window: 0.5%).
const BURST_SLICES: u64 = 50;

/// A pool word no slice has filled yet.
const NEVER: u64 = u64::MAX;
/// Most tokens one slice holds (so a full pool is never `NEVER`): 4 GiB
/// per millisecond, far above any byte limit.
const MAX_SLICE_TOKENS: u64 = u32::MAX as u64 - 1;

impl Budget {
    /// A budget with these limits.
    pub fn new(limits: RateLimits) -> Budget {
        Budget {
            limits: limits.0.map(AtomicU64::new),
            pool: [NEVER; KINDS].map(AtomicU64::new),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> RateLimits {
        RateLimits(std::array::from_fn(|i| {
            self.limits[i].load(Ordering::Relaxed)
        }))
    }

    /// Changes the limits; reactors see them from the next timeslice.
    pub fn set_limits(&self, limits: RateLimits) {
        for (slot, l) in self.limits.iter().zip(limits.0) {
            slot.store(l, Ordering::Relaxed);
        }
    }

    /// True if `kind` is limited now.
    #[inline]
    pub fn limited(&self, kind: usize) -> bool {
        self.limits[kind].load(Ordering::Relaxed) != 0
    }

    /// Takes up to a chunk of `kind` tokens in timeslice `slice` (the
    /// caller's clock, in units of `TIMESLICE_NS`); 0 if the slice's quota
    /// is spent.
    ///
    /// The first taker of a slice later than the pool's adds the quota of
    /// every slice since, up to `BURST_SLICES` slices' worth in all, which
    /// is what bounds the rate. A taker whose clock lags the pool's slice
    /// takes from the newer slice (reactors read their clocks at slightly
    /// different times), so every slice hands out at most its quota.
    pub fn take(&self, kind: usize, slice: u64) -> u64 {
        let quota =
            slice_quota(self.limits[kind].load(Ordering::Relaxed), kind).min(MAX_SLICE_TOKENS);
        let chunk = (quota / CHUNK_DIVISOR).max(MIN_SLICE_QUOTA[kind]);
        // Slices wrap after 2^32 ms (49 days): compared by distance.
        let now = slice as u32;
        let pool = &self.pool[kind];
        let mut word = pool.load(Ordering::Relaxed);
        loop {
            let (owner, left) = ((word >> 32) as u32, word & u32::MAX as u64);
            let (owner, left) = if word == NEVER {
                (now, quota)
            } else {
                match now.wrapping_sub(owner) as i32 {
                    // Unspent quota of the slices since carries over, up
                    // to `BURST_SLICES` of it.
                    gap @ 1.. => {
                        let banked = left + quota.saturating_mul(gap as u64);
                        (
                            now,
                            banked
                                .min(quota.saturating_mul(BURST_SLICES))
                                .min(MAX_SLICE_TOKENS),
                        )
                    }
                    _ => (owner, left),
                }
            };
            if left == 0 {
                return 0;
            }
            let got = left.min(chunk);
            let next = (owner as u64) << 32 | (left - got);
            match pool.compare_exchange_weak(word, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return got,
                Err(seen) => word = seen,
            }
        }
    }
}

/// A reactor's tokens from one [`Budget`]. Only that reactor touches it.
#[derive(Debug, Default)]
pub struct LocalBuckets {
    /// Tokens in hand per kind; negative after an I/O larger than what was
    /// left (the debt is repaid before the next I/O is admitted).
    tokens: [i64; KINDS],
}

impl LocalBuckets {
    /// Admits an I/O of `cost` if every limited kind has tokens (taking
    /// chunks from `budget` as needed, in the timeslice `slice` returns:
    /// asked only then, so the clock is not read per I/O) and spends them;
    /// false if it must wait for a later slice.
    pub fn admit(&mut self, budget: &Budget, cost: &Cost, slice: &mut impl FnMut() -> u64) -> bool {
        for kind in 0..KINDS {
            if cost.0[kind] == 0 || !budget.limited(kind) {
                continue;
            }
            while self.tokens[kind] <= 0 {
                let got = budget.take(kind, slice());
                if got == 0 {
                    return false;
                }
                self.tokens[kind] = self.tokens[kind].saturating_add(got as i64);
            }
        }
        for kind in 0..KINDS {
            if budget.limited(kind) {
                self.tokens[kind] = self.tokens[kind].saturating_sub(cost.0[kind] as i64);
            }
        }
        true
    }

    /// Forgets tokens and debt, e.g. when limits change.
    pub fn clear(&mut self) {
        self.tokens = [0; KINDS];
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn ios(n: u64) -> RateLimits {
        RateLimits([n, 0, 0, 0])
    }

    /// Saturating demand from `reactors` reactors over `slices` slices:
    /// how many I/Os of `bytes` (reads) were admitted.
    fn saturate(budget: &Budget, reactors: usize, slices: u64, bytes: u64) -> u64 {
        let mut locals: Vec<LocalBuckets> = (0..reactors).map(|_| Default::default()).collect();
        let cost = Cost::rw(false, bytes);
        let mut admitted = 0;
        for slice in 0..slices {
            // Reactors interleave: each admits until refused, round robin.
            let mut blocked = vec![false; reactors];
            while blocked.iter().any(|b| !b) {
                for (i, l) in locals.iter_mut().enumerate() {
                    if !blocked[i] {
                        if l.admit(budget, &cost, &mut || slice) {
                            admitted += 1;
                        } else {
                            blocked[i] = true;
                        }
                    }
                }
            }
        }
        admitted
    }

    #[test]
    fn iops_limit_holds_across_reactors() {
        // 10,000 IOPS over 10 s of slices, two and four reactors.
        for reactors in [1, 2, 4] {
            let b = Budget::new(ios(10_000));
            let n = saturate(&b, reactors, 10_000, 4096);
            assert!(
                (99_000..=101_000).contains(&n),
                "{reactors} reactors admitted {n} for a 100,000 budget"
            );
        }
    }

    #[test]
    fn byte_limit_with_ios_larger_than_a_slice() {
        // 10 MiB/s with 1 MiB reads: each read is ~100 slices of quota, so
        // it is admitted on credit and the debt repaid before the next.
        let b = Budget::new(RateLimits([0, 10 << 20, 0, 0]));
        let n = saturate(&b, 2, 10_000, 1 << 20);
        // 100 MiB in 10 s; two reactors may each run one read ahead.
        assert!(
            (98..=102).contains(&n),
            "admitted {n} MiB reads for 100 MiB"
        );
    }

    #[test]
    fn read_limit_leaves_writes_alone() {
        let b = Budget::new(RateLimits([0, 0, 1 << 20, 0]));
        let mut l = LocalBuckets::default();
        let write = Cost::rw(true, 1 << 20);
        for _ in 0..1000 {
            assert!(l.admit(&b, &write, &mut || 0));
        }
        let read = Cost::rw(false, 1 << 20);
        assert!(
            l.admit(&b, &read, &mut || 0),
            "the first read goes on credit"
        );
        assert!(
            !l.admit(&b, &read, &mut || 0),
            "the second waits for the debt"
        );
    }

    #[test]
    fn unspent_quota_is_banked_up_to_the_burst() {
        let b = Budget::new(ios(100_000));
        let mut l = LocalBuckets::default();
        let cost = Cost::rw(false, 512);
        let drain = |l: &mut LocalBuckets, s: u64| {
            let mut n = 0;
            while l.admit(&b, &cost, &mut || s) {
                n += 1;
            }
            n
        };
        assert_eq!(drain(&mut l, 0), 100, "one 1 ms slice of 100,000 IOPS");
        // Three slices missed (the reactor was not scheduled): their quota
        // is still there.
        assert_eq!(drain(&mut l, 4), 400);
        // Idle for 1,000 slices: at most the burst.
        assert_eq!(drain(&mut l, 1004), 100 * BURST_SLICES);
    }

    #[test]
    fn a_limit_change_applies_from_the_next_slice() {
        let b = Budget::new(ios(1_000_000));
        let mut l = LocalBuckets::default();
        let cost = Cost::rw(false, 512);
        let per_slice = |l: &mut LocalBuckets, s| {
            let mut n = 0;
            while l.admit(&b, &cost, &mut || s) {
                n += 1;
            }
            n
        };
        assert_eq!(per_slice(&mut l, 0), 1000);
        b.set_limits(ios(2000));
        l.clear();
        assert_eq!(per_slice(&mut l, 1), 2);
        b.set_limits(ios(0));
        assert!(b.limits().is_unlimited());
        for _ in 0..10_000 {
            assert!(l.admit(&b, &cost, &mut || 2), "unlimited admits everything");
        }
    }

    #[test]
    fn tiny_limits_still_admit() {
        assert_eq!(slice_quota(1000, 0), 1);
        assert_eq!(slice_quota(1, 0), 1);
        assert_eq!(slice_quota(1 << 20, 1), 1049);
        assert_eq!(slice_quota(1, 1), 512);
    }

    #[test]
    fn an_old_slice_never_refills() {
        let b = Budget::new(ios(1000));
        assert_eq!(b.take(0, 5), 1);
        assert_eq!(b.take(0, 5), 0);
        // A reactor whose clock read is older than the last reset.
        assert_eq!(b.take(0, 4), 0);
        assert_eq!(b.take(0, 6), 1);
        // The slice counter wraps after 2^32 slices; the next one is newer.
        let b = Budget::new(ios(1000));
        assert_eq!(b.take(0, u32::MAX as u64), 1);
        assert_eq!(b.take(0, 1 << 32), 1);
        assert_eq!(b.take(0, 1 << 32), 0);
    }
}

#[cfg(all(test, loom))]
mod loom_models {
    use super::*;
    use pollux_poller::sync::Arc;

    /// Two reactors take from one budget across a slice boundary, in every
    /// interleaving: together they never get more than one quota per
    /// slice. (A fill stored apart from the takes it races, as a first
    /// version did, let a late fill of slice 0 land over slice 1's pool and
    /// hand out five tokens here.)
    #[test]
    fn loom_takes_across_a_reset_stay_within_quota() {
        loom::model(|| {
            // 2,000 IOPS: 2 tokens per slice, taken one at a time.
            let b = Arc::new(Budget::new(RateLimits([2_000, 0, 0, 0])));
            let threads: Vec<_> = (0..2)
                .map(|_| {
                    let b = b.clone();
                    loom::thread::spawn(move || [b.take(0, 0), b.take(0, 1), b.take(0, 1)])
                })
                .collect();
            let got: Vec<[u64; 3]> = threads.into_iter().map(|t| t.join().unwrap()).collect();
            let total: u64 = got.iter().flatten().sum();
            assert!(total <= 4, "two slices of 2 handed out {total}: {got:?}");
        });
    }
}
