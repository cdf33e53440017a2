//! The mirror's dirty bitmap: one bit per `granularity` bytes of the
//! source, set when a write to that region completes, cleared by the copier
//! just before it reads the region.
//!
//! Each reactor sets bits in its own shard, so writes on different reactors
//! never share a cache line; only the copier touches every shard. A region
//! is dirty when its bit is set in any shard.

use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_utils::CachePadded;

/// A sharded bitmap over a device of `size` bytes.
pub struct DirtyBitmap {
    granularity: u64,
    size: u64,
    bits: u64,
    shards: Box<[CachePadded<Box<[AtomicU64]>>]>,
}

impl DirtyBitmap {
    /// A clean bitmap over `size` bytes, `granularity` (a power of two) bytes
    /// per bit, with one shard per reactor.
    pub fn new(size: u64, granularity: u64, reactors: usize) -> DirtyBitmap {
        debug_assert!(granularity.is_power_of_two());
        let bits = size.div_ceil(granularity);
        let words = bits.div_ceil(64) as usize;
        let shards = (0..reactors.max(1))
            .map(|_| CachePadded::new((0..words).map(|_| AtomicU64::new(0)).collect()))
            .collect();
        DirtyBitmap {
            granularity,
            size,
            bits,
            shards,
        }
    }

    /// Bytes per bit.
    pub fn granularity(&self) -> u64 {
        self.granularity
    }

    /// Number of bits (regions).
    pub fn bits(&self) -> u64 {
        self.bits
    }

    /// Marks every region dirty (a mirror starts by copying everything).
    pub fn mark_all(&self) {
        for (w, word) in self.shards[0].iter().enumerate() {
            let first = w as u64 * 64;
            let n = (self.bits - first).min(64);
            let mask = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
            word.fetch_or(mask, Ordering::Release);
        }
    }

    /// Reactor `shard` finished a write of `[offset, offset + len)`: every
    /// region it touched is dirty. Release: the copier that clears the bit
    /// (Acquire) reads the source after the write.
    pub fn mark(&self, shard: usize, offset: u64, len: u64) {
        if len == 0 || offset >= self.size {
            return;
        }
        let end = offset.saturating_add(len).min(self.size);
        let (first, last) = (offset / self.granularity, (end - 1) / self.granularity);
        let words = &self.shards[shard % self.shards.len()];
        let mut bit = first;
        while bit <= last {
            let w = (bit / 64) as usize;
            let lo = bit % 64;
            let hi = (last - (bit - lo)).min(63);
            let n = hi - lo + 1;
            let mask = if n == 64 { u64::MAX } else { ((1u64 << n) - 1) << lo };
            words[w].fetch_or(mask, Ordering::Release);
            bit += n;
        }
    }

    /// Clears and returns the first dirty region at or after bit `from`,
    /// wrapping around; `None` if every region is clean.
    pub fn take_next(&self, from: u64) -> Option<u64> {
        let words = self.shards[0].len();
        if words == 0 {
            return None;
        }
        let from = from % self.bits.max(1);
        let start = (from / 64) as usize;
        for k in 0..=words {
            let w = (start + k) % words;
            let mut union = 0;
            for s in self.shards.iter() {
                union |= s[w].load(Ordering::Relaxed);
            }
            if k == 0 {
                // The first word is searched from `from` on; its lower bits
                // come last, in the wrap-around pass (k == words).
                union &= u64::MAX << (from % 64);
            } else if k == words {
                union &= !(u64::MAX << (from % 64));
            }
            if union == 0 {
                continue;
            }
            let bit = union.trailing_zeros() as u64;
            let mask = !(1u64 << bit);
            for s in self.shards.iter() {
                // Acquire: pairs with `mark`'s Release, so the source read
                // that follows sees the write that set the bit.
                s[w].fetch_and(mask, Ordering::Acquire);
            }
            return Some(w as u64 * 64 + bit);
        }
        None
    }

    /// The byte range of region `bit`.
    pub fn region(&self, bit: u64) -> (u64, u64) {
        let offset = bit * self.granularity;
        (offset, self.granularity.min(self.size - offset))
    }

    /// Dirty regions now (a snapshot: it may change at once).
    pub fn count(&self) -> u64 {
        let words = self.shards[0].len();
        (0..words)
            .map(|w| {
                let mut union = 0;
                for s in self.shards.iter() {
                    union |= s[w].load(Ordering::Relaxed);
                }
                u64::from(union.count_ones())
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_cover_every_touched_region() {
        let b = DirtyBitmap::new(1 << 20, 4096, 2);
        assert_eq!(b.bits(), 256);
        assert_eq!(b.count(), 0);
        // 4096..12288 touches regions 1 and 2; a one-byte-past-end write
        // at 12288 would touch region 3 too.
        b.mark(0, 4096, 8192);
        assert_eq!(b.count(), 2);
        b.mark(1, 8192, 4096);
        assert_eq!(b.count(), 2, "the union is counted once");
        b.mark(1, 4095, 2);
        assert_eq!(b.count(), 3);
        assert_eq!(b.take_next(0), Some(0));
        assert_eq!(b.take_next(0), Some(1));
        assert_eq!(b.take_next(0), Some(2));
        assert_eq!(b.take_next(0), None);
    }

    #[test]
    fn ranges_across_words_and_the_end() {
        let size = 200 * 512 + 100; // a short last region
        let b = DirtyBitmap::new(size, 512, 1);
        assert_eq!(b.bits(), 201);
        b.mark(0, 60 * 512, 10 * 512);
        assert_eq!(b.count(), 10);
        // Past the end is clipped, not wrapped.
        b.mark(0, size - 10, 1 << 30);
        assert_eq!(b.count(), 11);
        assert_eq!(b.region(200), (200 * 512, 100));
        b.mark_all();
        assert_eq!(b.count(), 201);
        let mut seen = 0;
        while b.take_next(0).is_some() {
            seen += 1;
        }
        assert_eq!(seen, 201);
    }

    #[test]
    fn take_next_wraps_from_the_cursor() {
        let b = DirtyBitmap::new(128 * 4096, 4096, 1);
        b.mark(0, 3 * 4096, 4096);
        b.mark(0, 100 * 4096, 4096);
        assert_eq!(b.take_next(70), Some(100));
        assert_eq!(b.take_next(101), Some(3));
        assert_eq!(b.take_next(0), None);
        b.mark(0, 65 * 4096, 4096);
        assert_eq!(b.take_next(66), Some(65), "found in the wrap-around pass");
    }
}
