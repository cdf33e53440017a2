//! Fuzzes the vhost split ring (`pollux_target::vhost::ring`, which reads
//! and writes the rings through host pointers) against a hostile driver:
//! the input picks the ring's size and layout (possibly misaligned or
//! outside guest memory), then interleaves the device's operations with
//! the driver scribbling on guest memory. It must never panic or touch
//! memory outside the fake guest memory (the address sanitizer checks
//! that), and its indexes move as the protocol says: one per head taken,
//! the used index the driver sees is what was pushed once published.
//!
//! Run: `cd target/fuzz && cargo +nightly fuzz run split_ring`.

#![no_main]

use libfuzzer_sys::fuzz_target;

use pollux_target::vhost::request::GuestMem;
use pollux_target::vhost::ring::{RingAddrs, SplitRing};

/// Guest address of the fake memory: not 0, so address arithmetic that
/// forgets the base is caught.
const BASE: u64 = 0x1000;
/// Enough for a 256-entry queue's three parts.
const MEM_BYTES: usize = 8192;

/// Guest memory as a raw host range: the ring and the "driver" both
/// access it through raw pointers, as with a real shared mapping.
struct Mem(*mut u8);

impl GuestMem for Mem {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        match self.host(addr, buf.len() as u64) {
            Some(p) => {
                // SAFETY: `host` checked that the range lies inside the
                // MEM_BYTES allocation behind `self.0`.
                unsafe { std::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), buf.len()) };
                true
            }
            None => false,
        }
    }
    fn host(&self, addr: u64, len: u64) -> Option<*mut u8> {
        let start = addr.checked_sub(BASE)?;
        let end = start.checked_add(len)?;
        (end <= MEM_BYTES as u64).then(|| self.0.wrapping_add(start as usize))
    }
}

fn u16_at(data: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([*data.get(i).unwrap_or(&0), *data.get(i + 1).unwrap_or(&0)])
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 10 {
        return;
    }
    // 8-byte aligned backing, as a real mapping is page aligned.
    let mut backing = vec![0u64; MEM_BYTES / 8];
    let mem = Mem(backing.as_mut_ptr().cast());
    let size = 1u16 << (data[0] % 9); // 1..=256
    let event_idx = data[1] & 1 != 0;
    let addrs = RingAddrs {
        desc: BASE + u64::from(u16_at(data, 2)),
        avail: BASE + u64::from(u16_at(data, 4)),
        used: BASE + u64::from(u16_at(data, 6)),
    };
    let next_avail = u16_at(data, 8);
    let Ok(mut ring) = SplitRing::new(&mem, addrs, size, event_idx, next_avail) else {
        return;
    };
    let mut ops = data[10..].iter().copied();
    while let Some(op) = ops.next() {
        match op % 8 {
            0 => {
                let before = ring.next_avail();
                if let Ok(Some(_head)) = ring.pop() {
                    assert_eq!(ring.next_avail(), before.wrapping_add(1));
                }
            }
            1 => {
                let head = u16::from(ops.next().unwrap_or(0));
                ring.push_used(head, u32::from(ops.next().unwrap_or(0)) * 512);
            }
            2 => {
                ring.publish();
                assert_eq!(ring.used_idx(), ring.next_used());
            }
            3 => {
                let _ = ring.needs_notification();
            }
            4 => {
                let _ = ring.enable_notification();
            }
            5 => ring.disable_notification(),
            6 => {
                // The driver writes a byte anywhere in guest memory.
                let off = usize::from(ops.next().unwrap_or(0)) << 5
                    | usize::from(ops.next().unwrap_or(0) & 31);
                let v = ops.next().unwrap_or(0);
                if off < MEM_BYTES {
                    // SAFETY: `off` is inside the MEM_BYTES allocation.
                    unsafe { std::ptr::write_volatile(mem.0.add(off), v) };
                }
            }
            _ => {
                let _ = ring.remap(&mem);
            }
        }
    }
    drop(ring);
    drop(backing);
});
