//! Latency histograms with fixed log-scale buckets, and the cheap clock
//! that feeds them.
//!
//! Bucket `i` counts durations in `(2^(i-1+SHIFT), 2^(i+SHIFT)]` ns (bucket
//! 0 everything up to `2^SHIFT` ns, the last bucket everything above the
//! last finite bound). Powers of two make the bucket index one
//! leading-zero count, so recording costs a few instructions, and the
//! bounds are fixed so per-reactor shards can be summed bucket by bucket.

use std::cell::Cell;
use std::sync::OnceLock;

use pollux_poller::sync::{single_writer_add, AtomicU64, Ordering};

/// log2 of the first bucket's upper bound in ns: 256 ns is below the
/// fastest I/O any node completes (a null read takes a loop iteration).
const SHIFT: u32 = 8;

/// Finite buckets: 256 ns .. 2^33 ns (~8.6 s), doubling. Slower I/O is not
/// worth telling apart; it lands in the overflow bucket.
pub const FINITE_BUCKETS: usize = 26;

/// All buckets: the finite ones plus the overflow (+Inf) bucket.
pub const BUCKETS: usize = FINITE_BUCKETS + 1;

/// Upper bound of finite bucket `i`, in nanoseconds.
pub fn bucket_bound_ns(i: usize) -> u64 {
    assert!(i < FINITE_BUCKETS, "bucket {i} has no finite bound");
    1 << (i as u32 + SHIFT)
}

/// The bucket a duration of `ns` falls in (upper bounds are inclusive, as
/// Prometheus' `le` is).
#[inline]
pub fn bucket_of(ns: u64) -> usize {
    if ns <= 1 << SHIFT {
        return 0;
    }
    // `ns - 1` has bit length b, so 2^(b-1) < ns <= 2^b: bucket b - SHIFT.
    let bits = u64::BITS - (ns - 1).leading_zeros();
    ((bits - SHIFT) as usize).min(BUCKETS - 1)
}

/// The ops whose latency a node's histogram records: bit `i` is the op
/// whose `IoOp::as_index` is `i`. What SPDK's `bdev_enable_histogram`
/// switches (all ops, or one with its `opc`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct OpMask(u8);

impl OpMask {
    /// No op: the histogram is off, and the I/O path reads no clock for it.
    pub const NONE: OpMask = OpMask(0);
    /// Every op.
    pub const ALL: OpMask = OpMask((1 << 5) - 1);
    /// What a new node records: every op. Off is faster (BENCHMARKS.md,
    /// "Latency histogram switch": about 10% more IOPS on null), but
    /// /metrics' latency series and `pollux perf local`'s latency report
    /// read these histograms, so they stay on unless switched off per bdev.
    pub const DEFAULT: OpMask = OpMask::ALL;

    /// Only `op`.
    #[cfg(not(loom))]
    #[inline]
    pub fn of(op: crate::IoOp) -> OpMask {
        OpMask(1 << op.as_index())
    }

    /// True if any op of `other` is in `self`.
    #[inline]
    pub fn has(self, other: OpMask) -> bool {
        self.0 & other.0 != 0
    }

    /// True if the op with index `i` (`IoOp::as_index`) is in `self`.
    #[inline]
    pub fn has_index(self, i: usize) -> bool {
        i < 8 && self.0 & (1 << i) != 0
    }

    /// True if no op is recorded.
    pub fn is_none(self) -> bool {
        self.0 == 0
    }
}

/// A histogram's contents: per-bucket (not cumulative) counts and the sum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// Count per bucket, by `bucket_of`; the last one is the overflow.
    pub buckets: [u64; BUCKETS],
    /// Sum of all recorded durations, in nanoseconds.
    pub sum_ns: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            buckets: [0; BUCKETS],
            sum_ns: 0,
        }
    }
}

impl LatencyHistogram {
    /// Number of recorded durations.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Records one duration (control path: plain fields, no atomics).
    pub fn record(&mut self, ns: u64) {
        self.buckets[bucket_of(ns)] += 1;
        self.sum_ns = self.sum_ns.wrapping_add(ns);
    }

    /// Adds `other` bucket by bucket (summing per-reactor shards).
    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.sum_ns = self.sum_ns.wrapping_add(other.sum_ns);
    }
}

/// One reactor's histogram shard: written only by that reactor, with
/// `single_writer_add` (one writer, so no read-modify-write), read by the
/// control thread at scrape time.
pub(crate) struct LatencyShard {
    buckets: [AtomicU64; BUCKETS],
    sum_ns: AtomicU64,
}

impl Default for LatencyShard {
    fn default() -> Self {
        LatencyShard {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_ns: AtomicU64::new(0),
        }
    }
}

impl LatencyShard {
    /// Records one duration. Only the owning reactor may call this.
    #[inline]
    pub(crate) fn record(&self, ns: u64) {
        single_writer_add(&self.buckets[bucket_of(ns)], 1);
        single_writer_add(&self.sum_ns, ns);
    }

    /// Adds this shard's counts to `into`.
    pub(crate) fn add_to(&self, into: &mut LatencyHistogram) {
        for (a, b) in into.buckets.iter_mut().zip(&self.buckets) {
            *a += b.load(Ordering::Relaxed);
        }
        into.sum_ns = into
            .sum_ns
            .wrapping_add(self.sum_ns.load(Ordering::Relaxed));
    }
}

/// The process-wide TSC clock. `quanta` calibrates it once (a few ms) on
/// first use; `Graph::new` takes that hit so no I/O does.
fn clock() -> &'static quanta::Clock {
    static CLOCK: OnceLock<quanta::Clock> = OnceLock::new();
    CLOCK.get_or_init(quanta::Clock::new)
}

/// Calibrates the clock now (control path).
pub(crate) fn init_clock() {
    clock();
}

thread_local! {
    /// While this thread completes a batch of deferred I/O (`batch`): the
    /// clock read once at the batch's start, else 0. Those I/O were done
    /// before the batch began, and the ones their sinks submit start
    /// during it: one reading stands for all of them, which bdevperf-like
    /// loads showed as two TSC reads per I/O (a TSC read is tens of cycles
    /// in a VM). An I/O stamped so at submission and at completion measures
    /// from one batch's start to a later one's, which is its latency to
    /// within one batch's run (a few microseconds at queue depth 128).
    static BATCH_NOW: Cell<u64> = const { Cell::new(0) };
}

/// A raw timestamp: a TSC read (~7 ns) where `Instant::now` would be a
/// clock_gettime call (~20 ns), or the current batch's (see `BATCH_NOW`).
/// Only meaningful to `elapsed_ns`.
#[inline]
pub(crate) fn now_raw() -> u64 {
    match BATCH_NOW.get() {
        0 => clock().raw(),
        t => t,
    }
}

/// Nanoseconds from raw timestamp `start` to now; 0 if the clock went
/// backwards (TSCs of different sockets may disagree slightly).
#[inline]
pub(crate) fn elapsed_ns(start: u64) -> u64 {
    clock().delta_as_nanos(start, now_raw())
}

/// Runs `f`, a batch of completions of I/O that finished before it, with
/// the clock read once (`BATCH_NOW`).
#[inline]
pub(crate) fn batch<T>(f: impl FnOnce() -> T) -> T {
    /// Ends the batch even if `f` unwinds.
    struct End;
    impl Drop for End {
        fn drop(&mut self) {
            BATCH_NOW.set(0);
        }
    }
    BATCH_NOW.set(clock().raw().max(1));
    let _end = End;
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_inclusive_powers_of_two() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(1), 0);
        assert_eq!(bucket_of(256), 0);
        assert_eq!(bucket_of(257), 1);
        assert_eq!(bucket_of(512), 1);
        assert_eq!(bucket_of(513), 2);
        for i in 0..FINITE_BUCKETS {
            let b = bucket_bound_ns(i);
            assert_eq!(bucket_of(b), i, "bound of bucket {i}");
            assert_eq!(bucket_of(b + 1), i + 1, "just above bucket {i}");
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
        assert_eq!(bucket_bound_ns(FINITE_BUCKETS - 1), 1 << 33);
    }

    #[test]
    fn shard_sums_into_histogram() {
        let s = LatencyShard::default();
        s.record(100);
        s.record(1_000);
        s.record(10_000_000_000_000);
        let mut h = LatencyHistogram::default();
        s.add_to(&mut h);
        s.add_to(&mut h);
        assert_eq!(h.count(), 6);
        assert_eq!(h.buckets[0], 2);
        assert_eq!(h.buckets[bucket_of(1_000)], 2);
        assert_eq!(h.buckets[BUCKETS - 1], 2);
        assert_eq!(h.sum_ns, 2 * (100 + 1_000 + 10_000_000_000_000));

        let mut m = LatencyHistogram::default();
        m.record(300);
        m.merge(&h);
        assert_eq!(m.count(), 7);
        assert_eq!(m.buckets[1], 1);
    }

    #[test]
    fn clock_measures_elapsed_time() {
        init_clock();
        let t = now_raw();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let ns = elapsed_ns(t);
        assert!(
            (1_500_000..2_000_000_000).contains(&ns),
            "2 ms measured as {ns} ns"
        );
    }
}
