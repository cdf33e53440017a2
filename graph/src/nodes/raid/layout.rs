//! Where a RAID's bytes live on its members: the address math of raid0
//! (striping), concat (members end to end) and raid1 (every member holds
//! everything), as SPDK's raid module lays them out, so an array moved
//! between SPDK and Pollux reads the same.

/// The RAID levels Pollux builds (SPDK's names; raid5f is not built).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Level {
    /// Striping, no redundancy.
    Raid0,
    /// Mirroring: every member holds the whole array.
    Raid1,
    /// Members one after the other, no redundancy.
    Concat,
}

impl Level {
    /// SPDK's name (`raid_bdev_level_to_str`): what `bdev_raid_get_bdevs`
    /// and `save_config` write.
    pub fn name(self) -> &'static str {
        match self {
            Level::Raid0 => "raid0",
            Level::Raid1 => "raid1",
            Level::Concat => "concat",
        }
    }

    /// Parses the names SPDK's `raid_bdev_str_to_level` takes (`raid0`,
    /// `0`, `raid1`, `1`, `concat`, any case). `None` also for raid5f,
    /// which Pollux does not build.
    pub fn parse(s: &str) -> Option<Level> {
        match s.to_ascii_lowercase().as_str() {
            "raid0" | "0" => Some(Level::Raid0),
            "raid1" | "1" => Some(Level::Raid1),
            "concat" => Some(Level::Concat),
            _ => None,
        }
    }

    /// Fewest members the level takes (SPDK's `base_bdevs_min`).
    pub fn min_members(self) -> usize {
        match self {
            Level::Raid0 | Level::Concat => 1,
            Level::Raid1 => 2,
        }
    }

    /// True if the level stripes, i.e. takes a strip size.
    pub fn has_strip(self) -> bool {
        !matches!(self, Level::Raid1)
    }
}

/// Why a layout cannot be made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// Fewer members than the level takes.
    #[error("{level} needs at least {min} base bdevs, got {got}")]
    TooFewMembers {
        /// The level's name.
        level: &'static str,
        /// Its minimum.
        min: usize,
        /// How many were given.
        got: usize,
    },
    /// raid0 and concat need a power-of-two strip size, raid1 none.
    #[error("invalid strip size {0} KiB for {1}")]
    StripSize(u32, &'static str),
    /// The strip is smaller than a block.
    #[error("strip size {strip_kb} KiB is smaller than the block size {block_size}")]
    StripBelowBlock {
        /// Strip size in KiB.
        strip_kb: u32,
        /// Members' block size.
        block_size: u32,
    },
    /// Members must share a block size.
    #[error("base bdevs have different block sizes ({0} and {1})")]
    BlockSizes(u32, u32),
    /// A member too small to hold one strip (raid0, concat) or one block.
    #[error("base bdev {0} is too small for the array")]
    MemberTooSmall(usize),
}

/// One piece of an array I/O on one member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    /// Member slot.
    pub member: usize,
    /// Byte offset on the member.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// Where the piece starts in the array I/O's buffer.
    pub at: u64,
}

/// The array's shape: level, strip, and how much of each member it uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    level: Level,
    block_size: u32,
    /// Strip in bytes (0 for raid1).
    strip: u64,
    /// Bytes of each member the array uses (its data size).
    member_size: Vec<u64>,
    /// concat: where each member starts in the array.
    starts: Vec<u64>,
    size: u64,
}

impl Layout {
    /// The layout of a `level` array over members of `sizes` bytes with
    /// blocks of `block_size`, and `strip_kb` KiB strips (0 for raid1),
    /// checked as SPDK's `raid_bdev_create` and the modules' `start` do.
    pub fn new(
        level: Level,
        strip_kb: u32,
        block_size: u32,
        sizes: &[u64],
    ) -> Result<Layout, LayoutError> {
        if sizes.len() < level.min_members() {
            return Err(LayoutError::TooFewMembers {
                level: level.name(),
                min: level.min_members(),
                got: sizes.len(),
            });
        }
        let strip = u64::from(strip_kb) * 1024;
        Layout::check_strip(level, strip_kb)?;
        if level.has_strip() && strip < u64::from(block_size) {
            return Err(LayoutError::StripBelowBlock {
                strip_kb,
                block_size,
            });
        }
        // What a member contributes: whole strips (raid0, concat) or whole
        // blocks (raid1); raid0 and raid1 use the same amount of each.
        let unit = if level.has_strip() {
            strip
        } else {
            u64::from(block_size)
        };
        let usable: Vec<u64> = sizes.iter().map(|s| s / unit * unit).collect();
        if let Some(i) = usable.iter().position(|&u| u == 0) {
            return Err(LayoutError::MemberTooSmall(i));
        }
        let min = *usable.iter().min().expect("at least one member");
        let member_size: Vec<u64> = match level {
            Level::Concat => usable,
            Level::Raid0 | Level::Raid1 => vec![min; sizes.len()],
        };
        let mut starts = Vec::new();
        let size = match level {
            Level::Raid0 => min * sizes.len() as u64,
            Level::Raid1 => min,
            Level::Concat => {
                let mut at = 0;
                for s in &member_size {
                    starts.push(at);
                    at += s;
                }
                at
            }
        };
        Ok(Layout {
            level,
            block_size,
            strip,
            member_size,
            starts,
            size,
        })
    }

    /// What a member contributes in: whole strips (raid0, concat) or whole
    /// blocks (raid1).
    pub fn strip_unit(&self) -> u64 {
        if self.level.has_strip() {
            self.strip
        } else {
            u64::from(self.block_size)
        }
    }

    /// This layout at array size `size` bytes (the size the graph
    /// published, which a resize of members may have grown past the one
    /// the layout was made with): every byte stays where it is, the space
    /// added is raid0's further stripes, raid1's tail, or concat's last
    /// member's tail (`grown`).
    pub fn with_size(&self, size: u64) -> Layout {
        let mut l = self.clone();
        let n = self.member_size.len();
        match self.level {
            Level::Raid0 => l.member_size = vec![size / n as u64; n],
            Level::Raid1 => l.member_size = vec![size; n],
            Level::Concat => l.member_size[n - 1] = size - self.starts[n - 1],
        }
        l.size = size;
        l
    }

    /// The array size (bytes) once its members have `sizes` bytes (`None`:
    /// an empty slot), with no byte of data moving: raid1 takes its
    /// smallest member's whole blocks, raid0 its smallest member's whole
    /// strips times the members, concat its last member's whole strips (a
    /// member before it cannot grow: the next one's data starts where it
    /// ends). Never smaller than now: a member shrinking under the data is
    /// refused before (`RaidNode::child_resized`).
    pub fn grown_size(&self, sizes: &[Option<u64>]) -> u64 {
        let unit = self.strip_unit();
        let usable = |s: u64| s / unit * unit;
        let grown = match self.level {
            Level::Raid0 | Level::Raid1 => {
                let min = sizes.iter().flatten().map(|&s| usable(s)).min();
                let per = min.unwrap_or(0);
                if self.level == Level::Raid0 {
                    per * sizes.len() as u64
                } else {
                    per
                }
            }
            Level::Concat => match sizes.last() {
                Some(Some(s)) => self.starts[sizes.len() - 1] + usable(*s),
                _ => 0,
            },
        };
        grown.max(self.size)
    }

    /// raid0 and concat need a power-of-two strip, raid1 none (SPDK's
    /// first check in `raid_bdev_create`, before it looks at members).
    pub fn check_strip(level: Level, strip_kb: u32) -> Result<(), LayoutError> {
        if level.has_strip() != (strip_kb != 0) || (strip_kb != 0 && !strip_kb.is_power_of_two()) {
            return Err(LayoutError::StripSize(strip_kb, level.name()));
        }
        Ok(())
    }

    /// The level.
    pub fn level(&self) -> Level {
        self.level
    }

    /// The array's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Block size (every member's).
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// Strip size in KiB (0 for raid1), as SPDK reports it.
    pub fn strip_kb(&self) -> u32 {
        (self.strip / 1024) as u32
    }

    /// Number of member slots.
    pub fn members(&self) -> usize {
        self.member_size.len()
    }

    /// Bytes of member `i` the array uses (SPDK's `data_size`).
    pub fn member_size(&self, i: usize) -> u64 {
        self.member_size[i]
    }

    /// concat: how far member `m`'s part of the array reaches for routing.
    /// The last member's has no end here: the array's published size
    /// (the graph's range check) bounds it, and a grown last member serves
    /// the new tail with the layout it had (`with_size`).
    #[inline]
    fn member_len(&self, m: usize) -> u64 {
        if m + 1 == self.member_size.len() {
            u64::MAX - self.starts[m]
        } else {
            self.member_size[m]
        }
    }

    /// Calls `f` for each piece of the array range `offset..offset+len`
    /// with data (read or write), in buffer order: one piece per strip for
    /// raid0, one per member crossed for concat. raid1 has no pieces: every
    /// member takes the whole range.
    pub fn for_each_extent(&self, offset: u64, len: u64, mut f: impl FnMut(Extent)) {
        let end = offset + len;
        let mut pos = offset;
        while pos < end {
            let e = match self.level {
                Level::Raid1 => return,
                Level::Raid0 => {
                    let n = self.members() as u64;
                    let strip = pos / self.strip;
                    let in_strip = pos % self.strip;
                    Extent {
                        member: (strip % n) as usize,
                        offset: (strip / n) * self.strip + in_strip,
                        len: (self.strip - in_strip).min(end - pos),
                        at: pos - offset,
                    }
                }
                Level::Concat => {
                    // The last member starting at or before `pos`.
                    let m = self.starts.partition_point(|&s| s <= pos) - 1;
                    let in_member = pos - self.starts[m];
                    Extent {
                        member: m,
                        offset: in_member,
                        len: (self.member_len(m) - in_member).min(end - pos),
                        at: pos - offset,
                    }
                }
            };
            pos += e.len;
            f(e);
        }
    }

    /// The one piece of a range that stays inside one strip (raid0) or
    /// one member (concat), or `None` if it does not (or for raid1): what
    /// the node routes without splitting.
    #[inline]
    pub fn single_extent(&self, offset: u64, len: u64) -> Option<Extent> {
        let last = offset + len.max(1) - 1;
        let one = match self.level {
            Level::Raid1 => false,
            Level::Raid0 => offset / self.strip == last / self.strip,
            Level::Concat => {
                let m = self.starts.partition_point(|&s| s <= offset) - 1;
                last - self.starts[m] < self.member_len(m)
            }
        };
        let mut e = None;
        if one {
            self.for_each_extent(offset, len, |x| e = Some(x));
        }
        e
    }

    /// Number of pieces `for_each_extent` makes for the range.
    pub fn extent_count(&self, offset: u64, len: u64) -> usize {
        let mut n = 0;
        self.for_each_extent(offset, len, |_| n += 1);
        n
    }

    /// For ops without data (discard, write zeroes): the one contiguous
    /// member range each member takes for the array range, as SPDK's
    /// `raid0_split_io_range` computes it, so a large unmap costs one
    /// request per member, not one per strip. `at` is 0 (no buffer).
    pub fn for_each_member_range(&self, offset: u64, len: u64, mut f: impl FnMut(Extent)) {
        match self.level {
            Level::Raid1 => {}
            Level::Concat => self.for_each_extent(offset, len, |e| f(Extent { at: 0, ..e })),
            Level::Raid0 => {
                let n = self.members() as u64;
                let (first, last) = (offset / self.strip, (offset + len - 1) / self.strip);
                for m in 0..n {
                    // The first and last strip of this member in the range.
                    let s = first + (m + n - first % n) % n;
                    if s > last {
                        continue;
                    }
                    let e = last - (last % n + n - m) % n;
                    let start = (s / n) * self.strip
                        + if s == first { offset % self.strip } else { 0 };
                    let stop = (e / n) * self.strip
                        + if e == last {
                            (offset + len - 1) % self.strip + 1
                        } else {
                            self.strip
                        };
                    f(Extent {
                        member: m as usize,
                        offset: start,
                        len: stop - start,
                        at: 0,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extents(l: &Layout, off: u64, len: u64) -> Vec<Extent> {
        let mut v = Vec::new();
        l.for_each_extent(off, len, |e| v.push(e));
        v
    }

    fn ranges(l: &Layout, off: u64, len: u64) -> Vec<(usize, u64, u64)> {
        let mut v = Vec::new();
        l.for_each_member_range(off, len, |e| v.push((e.member, e.offset, e.len)));
        v
    }

    #[test]
    fn levels_parse_as_spdk_names_them() {
        for (s, l) in [
            ("raid0", Level::Raid0),
            ("0", Level::Raid0),
            ("RAID1", Level::Raid1),
            ("1", Level::Raid1),
            ("concat", Level::Concat),
        ] {
            assert_eq!(Level::parse(s), Some(l), "{s}");
        }
        assert_eq!(Level::parse("raid5f"), None);
        assert_eq!(Level::parse("5f"), None);
        assert_eq!(Level::parse("raid10"), None);
    }

    #[test]
    fn sizes_follow_spdk() {
        const K: u64 = 1024;
        // raid0: the smallest member rounded down to whole strips, times n.
        let l = Layout::new(Level::Raid0, 64, 512, &[1000 * K, 700 * K]).unwrap();
        assert_eq!(l.size(), 2 * 640 * K);
        assert_eq!(l.member_size(0), 640 * K);
        assert_eq!(l.strip_kb(), 64);
        // concat: each member rounded down to whole strips, end to end.
        let l = Layout::new(Level::Concat, 64, 512, &[1000 * K, 700 * K]).unwrap();
        assert_eq!(l.size(), 960 * K + 640 * K);
        // raid1: the smallest member, in whole blocks.
        let l = Layout::new(Level::Raid1, 0, 4096, &[1000 * K, 701 * K]).unwrap();
        assert_eq!(l.size(), 700 * K);
        assert_eq!(l.strip_kb(), 0);
    }

    #[test]
    fn bad_shapes_are_refused() {
        use LayoutError::*;
        let e = |l, z, bs, s: &[u64]| Layout::new(l, z, bs, s).unwrap_err();
        assert!(matches!(
            e(Level::Raid1, 0, 512, &[1 << 20]),
            TooFewMembers { min: 2, .. }
        ));
        assert!(matches!(e(Level::Raid0, 0, 512, &[1 << 20]), StripSize(0, _)));
        assert!(matches!(
            e(Level::Raid0, 48, 512, &[1 << 20]),
            StripSize(48, _)
        ));
        assert!(matches!(
            e(Level::Raid1, 64, 512, &[1 << 20, 1 << 20]),
            StripSize(64, _)
        ));
        assert!(matches!(
            e(Level::Concat, 1, 4096, &[1 << 20]),
            StripBelowBlock { .. }
        ));
        assert!(matches!(
            e(Level::Raid0, 64, 512, &[1 << 20, 32 << 10]),
            MemberTooSmall(1)
        ));
    }

    #[test]
    fn raid0_splits_at_strip_boundaries_round_robin() {
        // 3 members, 4 KiB strips.
        let l = Layout::new(Level::Raid0, 4, 512, &[64 << 10; 3]).unwrap();
        // Inside one strip: one piece.
        assert_eq!(
            extents(&l, 512, 1024),
            [Extent {
                member: 0,
                offset: 512,
                len: 1024,
                at: 0
            }]
        );
        // Strip 4 is member 1's second strip; crossing into strip 5
        // (member 2's second) splits there.
        assert_eq!(
            extents(&l, 4 * 4096 + 3584, 1024),
            [
                Extent {
                    member: 1,
                    offset: 4096 + 3584,
                    len: 512,
                    at: 0
                },
                Extent {
                    member: 2,
                    offset: 4096,
                    len: 512,
                    at: 512
                },
            ]
        );
        // Every byte maps to exactly one (member, offset), and back.
        let mut seen = std::collections::HashSet::new();
        for e in extents(&l, 0, l.size()) {
            for b in (0..e.len).step_by(512) {
                assert!(seen.insert((e.member, e.offset + b)));
            }
        }
        assert_eq!(seen.len() as u64, l.size() / 512);
    }

    #[test]
    fn concat_maps_members_end_to_end() {
        let l = Layout::new(Level::Concat, 4, 512, &[8192, 12288, 4096]).unwrap();
        assert_eq!(l.size(), 24576);
        assert_eq!(
            extents(&l, 4096, 12288),
            [
                Extent {
                    member: 0,
                    offset: 4096,
                    len: 4096,
                    at: 0
                },
                Extent {
                    member: 1,
                    offset: 0,
                    len: 8192,
                    at: 4096
                },
            ]
        );
        assert_eq!(
            extents(&l, 20480, 4096),
            [Extent {
                member: 2,
                offset: 0,
                len: 4096,
                at: 0
            }]
        );
        assert_eq!(ranges(&l, 4096, 12288), [(0, 4096, 4096), (1, 0, 8192)]);
    }

    #[test]
    fn raid0_member_ranges_cover_exactly_the_strips_pieces() {
        // The per-member ranges must be the union of the per-strip pieces
        // on that member, for every alignment and length.
        for n in 1..=4usize {
            let l = Layout::new(Level::Raid0, 4, 512, &vec![64 << 10; n]).unwrap();
            for off in (0..l.size()).step_by(1536) {
                for len in [512, 4096, 5120, 12288, 40960] {
                    if off + len > l.size() {
                        continue;
                    }
                    let mut want: Vec<(usize, u64, u64)> = Vec::new();
                    for e in extents(&l, off, len) {
                        match want.iter_mut().find(|w| w.0 == e.member) {
                            Some(w) => {
                                assert_eq!(w.1 + w.2, e.offset, "member range has a hole");
                                w.2 += e.len;
                            }
                            None => want.push((e.member, e.offset, e.len)),
                        }
                    }
                    want.sort();
                    let mut got = ranges(&l, off, len);
                    got.sort();
                    assert_eq!(got, want, "n={n} off={off} len={len}");
                }
            }
        }
    }

    #[test]
    fn single_extents_are_the_ranges_that_do_not_split() {
        let r0 = Layout::new(Level::Raid0, 4, 512, &[64 << 10; 3]).unwrap();
        let cc = Layout::new(Level::Concat, 4, 512, &[8192, 12288, 4096]).unwrap();
        for l in [&r0, &cc] {
            for off in (0..l.size()).step_by(512) {
                for len in [512, 1024, 4096, 8192] {
                    if off + len > l.size() {
                        continue;
                    }
                    let all = extents(l, off, len);
                    let want = (all.len() == 1).then(|| all[0]);
                    assert_eq!(l.single_extent(off, len), want, "off={off} len={len}");
                }
            }
        }
    }

    #[test]
    fn raid1_has_no_pieces() {
        let l = Layout::new(Level::Raid1, 0, 512, &[1 << 20; 2]).unwrap();
        assert_eq!(l.extent_count(0, 4096), 0);
        assert!(ranges(&l, 0, 4096).is_empty());
    }

    #[test]
    fn growth_keeps_every_byte_in_place() {
        const K: u64 = 1024;
        // raid0: the smallest member's whole strips, times the members.
        let r0 = Layout::new(Level::Raid0, 4, 512, &[16 * K, 20 * K]).unwrap();
        assert_eq!(r0.grown_size(&[Some(64 * K), Some(30 * K)]), 56 * K);
        assert_eq!(r0.grown_size(&[Some(64 * K), Some(16 * K)]), 32 * K);
        let big = r0.with_size(56 * K);
        assert_eq!(big.member_size(1), 28 * K);
        // The old stripes map where they did.
        for off in (0..32 * K).step_by(512) {
            assert_eq!(extents(&big, off, 512), extents(&r0, off, 512));
        }
        // raid1: the smallest member, in whole blocks.
        let r1 = Layout::new(Level::Raid1, 0, 512, &[8 * K, 8 * K]).unwrap();
        assert_eq!(r1.grown_size(&[Some(9 * K + 100), Some(12 * K)]), 9 * K);
        assert_eq!(r1.grown_size(&[Some(12 * K), None]), 12 * K);
        // concat: only the last member, in whole strips.
        let cc = Layout::new(Level::Concat, 4, 512, &[8 * K, 8 * K]).unwrap();
        assert_eq!(cc.grown_size(&[Some(64 * K), Some(8 * K)]), 16 * K);
        assert_eq!(cc.grown_size(&[Some(8 * K), Some(14 * K)]), 20 * K);
        let big = cc.with_size(20 * K);
        assert_eq!(big.member_size(1), 12 * K);
        // The grown tail routes to the last member, unsplit, even with the
        // layout made at the old size (the node's, until a membership
        // change rebuilds it).
        for l in [&cc, &big] {
            let e = l.single_extent(18 * K, 2 * K).unwrap();
            assert_eq!((e.member, e.offset, e.len), (1, 10 * K, 2 * K));
            assert_eq!(extents(l, 6 * K, 12 * K).len(), 2);
        }
    }
}
