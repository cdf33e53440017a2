//! Fuzzes the vhost-user-blk descriptor chain → request parsing
//! (`pollux_target::vhost::request`, the daemon's own code) over a fake guest
//! memory built from the input: it must never panic, and whatever it
//! accepts must lie inside guest memory.
//!
//! Run: `cd target/fuzz && cargo +nightly fuzz run request_parse`.

#![no_main]

use libfuzzer_sys::fuzz_target;

use pollux_target::vhost::request::{self, GuestMem, Limits, Ring};

/// Guest address of the fake memory: not 0, so address arithmetic that
/// forgets the base is caught.
const BASE: u64 = 0x1000;

struct Mem<'a>(&'a [u8]);

impl Mem<'_> {
    fn range(&self, addr: u64, len: u64) -> Option<std::ops::Range<usize>> {
        let start = addr.checked_sub(BASE)?;
        let end = start.checked_add(len)?;
        (end <= self.0.len() as u64).then(|| start as usize..end as usize)
    }
}

impl GuestMem for Mem<'_> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        match self.range(addr, buf.len() as u64) {
            Some(r) => {
                buf.copy_from_slice(&self.0[r]);
                true
            }
            None => false,
        }
    }
    fn host(&self, addr: u64, len: u64) -> Option<*mut u8> {
        let r = self.range(addr, len)?;
        Some(self.0.as_ptr().wrapping_add(r.start) as *mut u8)
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let (ctl, mem) = data.split_at(8);
    let limits = Limits {
        capacity_sectors: u64::from(u16::from_le_bytes([ctl[0], ctl[1]])) << 4,
        block_size: if ctl[2] & 1 == 0 { 512 } else { 4096 },
        seg_max: u32::from(ctl[3] % 8) + 1,
        size_max: 1 << (ctl[4] % 20),
        max_dwz_sectors: 1 << (ctl[5] % 20),
        max_dwz_seg: 1,
        readonly: ctl[2] & 2 != 0,
        indirect: ctl[2] & 4 != 0,
    };
    let ring = Ring {
        desc_table: BASE,
        size: 1 << (ctl[6] % 8),
    };
    let head = u16::from(ctl[7]);
    let m = Mem(mem);
    if let Ok(r) = request::parse(&m, ring, head, &limits, &mut Vec::new(), Vec::new()) {
        let base = mem.as_ptr() as usize;
        for s in &r.data {
            let start = s.ptr as usize - base;
            assert!(start + s.len <= mem.len());
        }
        assert!(m.host(r.status, 1).is_some());
        assert!(r.offset.checked_add(r.len).is_some());
    }
});
