//! The avail and used rings of a split virtqueue (virtio 1.2, 2.7), read
//! and written through host pointers found once per memory map.
//!
//! virtio-queue's `Queue` looked each ring access up in the guest memory
//! map (a region search and a bounds-checked volatile slice, five to eight
//! times per request) and published the used index once per request. Here
//! the rings are checked to lie inside one mapped region when the queue
//! starts and at each new memory map, so an access is one load or store;
//! completions are added to the used ring as they come and the used index
//! is published, and the notification decided, once per poll of the queue.
//!
//! The driver (another process) writes the avail ring and reads the used
//! ring at any time: the shared words are only touched through raw
//! pointers (atomics for the indexes, volatile for the rest), never through
//! Rust references. Every index the driver controls is reduced modulo the
//! ring size before use, so a hostile driver can make us read garbage heads
//! (which the request parser bounds-checks) but never access outside the
//! rings.

use std::sync::atomic::{fence, AtomicU16, Ordering};

use super::request::GuestMem;

/// VIRTQ_USED_F_NO_NOTIFY: the device does not need kicks.
const USED_F_NO_NOTIFY: u16 = 1;
/// VIRTQ_AVAIL_F_NO_INTERRUPT: the driver does not want interrupts (used
/// without EVENT_IDX; SPDK's virtio-user driver sets it, as it polls).
const AVAIL_F_NO_INTERRUPT: u16 = 1;
/// `flags` and `idx`, before both rings' entries.
const RING_HEADER: u64 = 4;
/// One avail ring entry (a descriptor head).
const AVAIL_ENTRY: u64 = 2;
/// One used ring entry: `id: u32, len: u32`.
const USED_ENTRY: u64 = 8;
/// The trailing `used_event` / `avail_event` word (EVENT_IDX).
const EVENT_WORD: u64 = 2;
/// Alignments the spec requires of the rings (2.7, table "Virtqueue Part
/// Alignment"); they also make the index words naturally aligned atomics.
const AVAIL_ALIGN: u64 = 2;
const USED_ALIGN: u64 = 4;
/// The descriptor table's alignment (16-byte descriptors).
const DESC_ALIGN: u64 = 16;

/// Why a ring layout is refused.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    /// The queue size is not a power of two in 1..=32768.
    #[error("queue size {0} is not a power of two up to 32768")]
    Size(u16),
    /// A ring is not aligned as the spec requires.
    #[error("{0} ring is misaligned")]
    Align(&'static str),
    /// A ring is not inside one region of guest memory.
    #[error("{0} ring is not inside guest memory")]
    Outside(&'static str),
}

/// Guest addresses of a queue's three parts.
#[derive(Clone, Copy, Debug)]
pub struct RingAddrs {
    /// Descriptor table.
    pub desc: u64,
    /// Avail ring.
    pub avail: u64,
    /// Used ring.
    pub used: u64,
}

/// Host addresses of the avail and used rings in the current memory map.
#[derive(Clone, Copy)]
struct Ptrs {
    avail: *mut u8,
    used: *mut u8,
}

/// A split virtqueue's avail/used state, owned by the queue's reactor.
pub struct SplitRing {
    addrs: RingAddrs,
    size: u16,
    event_idx: bool,
    /// `None` while the current memory map does not hold the rings (a
    /// front-end that removed their region): nothing is taken or completed.
    ptrs: Option<Ptrs>,
    next_avail: u16,
    /// The avail index as last read from the driver; entries up to it are
    /// available without reading the shared index again.
    avail_idx: u16,
    next_used: u16,
    /// The used index the driver can see.
    published: u16,
    /// `published` at the last notification decision (EVENT_IDX).
    signalled: u16,
}

impl SplitRing {
    /// A ring of `size` entries at `addrs`, found in `mem`. The used index
    /// starts from what the used ring holds (as after SET_VRING_BASE: the
    /// front-end keeps the used ring, we only get the next avail index).
    pub fn new(
        mem: &impl GuestMem,
        addrs: RingAddrs,
        size: u16,
        event_idx: bool,
        next_avail: u16,
    ) -> Result<SplitRing, RingError> {
        if size == 0 || !size.is_power_of_two() || size > 32768 {
            return Err(RingError::Size(size));
        }
        let mut ring = SplitRing {
            addrs,
            size,
            event_idx,
            ptrs: None,
            next_avail,
            avail_idx: next_avail,
            next_used: 0,
            published: 0,
            signalled: 0,
        };
        ring.remap(mem)?;
        let used = ring.load_used_idx();
        ring.next_used = used;
        ring.published = used;
        ring.signalled = used;
        Ok(ring)
    }

    /// Finds the rings again in a new memory map. On error the ring stops
    /// (takes nothing, completes nothing) until a map holds it again.
    pub fn remap(&mut self, mem: &impl GuestMem) -> Result<(), RingError> {
        self.ptrs = None;
        let n = u64::from(self.size);
        let a = self.addrs;
        if a.desc % DESC_ALIGN != 0 {
            return Err(RingError::Align("descriptor"));
        }
        if a.avail % AVAIL_ALIGN != 0 {
            return Err(RingError::Align("avail"));
        }
        if a.used % USED_ALIGN != 0 {
            return Err(RingError::Align("used"));
        }
        mem.host(a.desc, 16 * n)
            .ok_or(RingError::Outside("descriptor"))?;
        let avail = mem
            .host(a.avail, RING_HEADER + AVAIL_ENTRY * n + EVENT_WORD)
            .ok_or(RingError::Outside("avail"))?;
        let used = mem
            .host(a.used, RING_HEADER + USED_ENTRY * n + EVENT_WORD)
            .ok_or(RingError::Outside("used"))?;
        // The guest addresses are aligned, but a front-end may place a
        // region at any guest address: atomics need host alignment.
        if avail as usize % AVAIL_ALIGN as usize != 0 || used as usize % USED_ALIGN as usize != 0 {
            return Err(RingError::Align("host"));
        }
        self.ptrs = Some(Ptrs { avail, used });
        Ok(())
    }

    /// The next avail index to take (GET_VRING_BASE).
    pub fn next_avail(&self) -> u16 {
        self.next_avail
    }

    /// Sets where taking resumes (after resubmitted in-flight requests).
    pub fn set_next_avail(&mut self, next: u16) {
        self.next_avail = next;
        self.avail_idx = next;
    }

    /// The used index including entries not yet published.
    pub fn next_used(&self) -> u16 {
        self.next_used
    }

    /// The used index the used ring holds.
    pub fn used_idx(&self) -> u16 {
        self.published
    }

    /// Ring slot of a free-running index: the size is a power of two
    /// (checked in `new`), so a mask, not a division on each access.
    fn mask(&self) -> u16 {
        self.size - 1
    }

    /// The shared 16-bit word at `p`, a ring address from `ptrs`.
    fn word(&self, p: *mut u8) -> &AtomicU16 {
        // SAFETY: every caller passes an even offset into a ring that
        // `remap` found inside one mapped region of the queue's memory map
        // and checked to be 2-aligned in host memory; the queue keeps that
        // map (its `mem`) alive as long as this ring holds `ptrs`, and the
        // reference lives no longer than `&self`. The word is shared with
        // the driver process, which is what an atomic is for.
        unsafe { AtomicU16::from_ptr(p.cast()) }
    }

    fn load_used_idx(&self) -> u16 {
        match self.ptrs {
            Some(p) => u16::from_le(self.word(p.used.wrapping_add(2)).load(Ordering::Acquire)),
            None => 0,
        }
    }

    /// The avail index the driver published (acquire: the ring entries
    /// and descriptors before it are visible).
    fn load_avail_idx(&self, p: Ptrs) -> u16 {
        u16::from_le(self.word(p.avail.wrapping_add(2)).load(Ordering::Acquire))
    }

    /// Takes the next available descriptor head, if any. `Err` when the
    /// driver claims more entries than the ring has (a corrupt ring).
    pub fn pop(&mut self) -> Result<Option<u16>, ()> {
        let Some(p) = self.ptrs else { return Ok(None) };
        if self.avail_idx == self.next_avail {
            self.avail_idx = self.load_avail_idx(p);
            if self.avail_idx.wrapping_sub(self.next_avail) > self.size {
                self.avail_idx = self.next_avail;
                return Err(());
            }
            if self.avail_idx == self.next_avail {
                return Ok(None);
            }
        }
        let slot = u64::from(self.next_avail & self.mask());
        let at = p
            .avail
            .wrapping_add((RING_HEADER + AVAIL_ENTRY * slot) as usize);
        let head = u16::from_le(self.word(at).load(Ordering::Relaxed));
        self.next_avail = self.next_avail.wrapping_add(1);
        Ok(Some(head))
    }

    /// Adds `head` to the used ring; the driver sees it at the next
    /// [`publish`](Self::publish).
    pub fn push_used(&mut self, head: u16, len: u32) {
        let Some(p) = self.ptrs else { return };
        let slot = u64::from(self.next_used & self.mask());
        let at = p
            .used
            .wrapping_add((RING_HEADER + USED_ENTRY * slot) as usize);
        // SAFETY: `at` is entry `slot` < size of the used ring, inside the
        // region `remap` found (see `word`), 4-aligned (the ring is, the
        // entries are 8 bytes). Volatile because the driver process reads
        // the memory; never through a reference.
        unsafe {
            std::ptr::write_volatile(at.cast::<u32>(), u32::from(head).to_le());
            std::ptr::write_volatile(at.add(4).cast::<u32>(), len.to_le());
        }
        self.next_used = self.next_used.wrapping_add(1);
    }

    /// Makes every pushed entry visible to the driver (one release store of
    /// the used index). False if there was nothing new.
    pub fn publish(&mut self) -> bool {
        if self.next_used == self.published {
            return false;
        }
        let Some(p) = self.ptrs else { return false };
        self.word(p.used.wrapping_add(2))
            .store(self.next_used.to_le(), Ordering::Release);
        self.published = self.next_used;
        true
    }

    /// Whether the driver wants an interrupt for what was published since
    /// the last call: `used_event` with EVENT_IDX (virtio 1.2, 2.7.10, with
    /// the kernel's range test so a batch crossing it counts), else the
    /// avail ring's NO_INTERRUPT flag.
    pub fn needs_notification(&mut self) -> bool {
        let Some(p) = self.ptrs else { return false };
        // The used index store must be visible before the driver's word is
        // read, or a driver re-enabling interrupts meanwhile is missed.
        fence(Ordering::SeqCst);
        if self.event_idx {
            let at = p
                .avail
                .wrapping_add((RING_HEADER + AVAIL_ENTRY * u64::from(self.size)) as usize);
            let used_event = u16::from_le(self.word(at).load(Ordering::Relaxed));
            let (new, old) = (self.published, self.signalled);
            self.signalled = new;
            new.wrapping_sub(used_event).wrapping_sub(1) < new.wrapping_sub(old)
        } else {
            let flags = u16::from_le(self.word(p.avail).load(Ordering::Relaxed));
            flags & AVAIL_F_NO_INTERRUPT == 0
        }
    }

    /// Asks the driver for a kick when it adds a request (before the
    /// reactor may sleep); true if requests arrived meanwhile, so the
    /// caller looks again instead of waiting for a kick that may not come.
    pub fn enable_notification(&mut self) -> bool {
        let Some(p) = self.ptrs else { return false };
        if self.event_idx {
            let at = p
                .used
                .wrapping_add((RING_HEADER + USED_ENTRY * u64::from(self.size)) as usize);
            self.word(at)
                .store(self.next_avail.to_le(), Ordering::Relaxed);
        } else {
            self.word(p.used).store(0, Ordering::Relaxed);
        }
        // The driver must see the request for kicks before we look at the
        // avail index one last time (its mirror is in the driver's kick
        // test), else both sides wait.
        fence(Ordering::SeqCst);
        self.load_avail_idx(p) != self.next_avail
    }

    /// Tells the driver not to kick (a polling reactor never needs it).
    /// With EVENT_IDX that is simply never moving `avail_event`.
    pub fn disable_notification(&mut self) {
        let Some(p) = self.ptrs else { return };
        if !self.event_idx {
            self.word(p.used)
                .store(USED_F_NO_NOTIFY.to_le(), Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vhost::memory::Guest;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    const DESC: u64 = 0x1000;
    const AVAIL: u64 = 0x2000;
    const USED: u64 = 0x3000;
    const SIZE: u16 = 8;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x4000)]).unwrap()
    }

    fn addrs() -> RingAddrs {
        RingAddrs {
            desc: DESC,
            avail: AVAIL,
            used: USED,
        }
    }

    fn offer(m: &GuestMemoryMmap, idx: u16, heads: &[u16]) {
        for (i, h) in heads.iter().enumerate() {
            let slot = (idx as usize + i) % SIZE as usize;
            m.write_obj(*h, GuestAddress(AVAIL + 4 + 2 * slot as u64))
                .unwrap();
        }
        m.write_obj(
            idx.wrapping_add(heads.len() as u16),
            GuestAddress(AVAIL + 2),
        )
        .unwrap();
    }

    #[test]
    fn pops_publishes_once_and_wraps() {
        let m = mem();
        m.write_obj(65534u16, GuestAddress(USED + 2)).unwrap();
        let mut r = SplitRing::new(&Guest::new(&m), addrs(), SIZE, false, 65534).unwrap();
        assert_eq!(r.used_idx(), 65534);
        offer(&m, 65534, &[3, 5, 7]);
        assert_eq!(r.pop(), Ok(Some(3)));
        assert_eq!(r.pop(), Ok(Some(5)));
        assert_eq!(r.pop(), Ok(Some(7)));
        assert_eq!(r.pop(), Ok(None));
        assert_eq!(r.next_avail(), 1);
        r.push_used(5, 4097);
        r.push_used(3, 1);
        let seen: u16 = m.read_obj(GuestAddress(USED + 2)).unwrap();
        assert_eq!(seen, 65534, "not published before publish()");
        assert!(r.publish());
        assert!(!r.publish(), "nothing new");
        let seen: u16 = m.read_obj(GuestAddress(USED + 2)).unwrap();
        assert_eq!(seen, 0);
        // Slots 6 and 7 (65534 % 8, 65535 % 8).
        let id: u32 = m.read_obj(GuestAddress(USED + 4 + 8 * 6)).unwrap();
        let len: u32 = m.read_obj(GuestAddress(USED + 4 + 8 * 6 + 4)).unwrap();
        assert_eq!((id, len), (5, 4097));
        let id: u32 = m.read_obj(GuestAddress(USED + 4 + 8 * 7)).unwrap();
        assert_eq!(id, 3);
    }

    #[test]
    fn a_driver_claiming_more_than_the_ring_is_refused() {
        let m = mem();
        let mut r = SplitRing::new(&Guest::new(&m), addrs(), SIZE, false, 0).unwrap();
        m.write_obj(SIZE + 1, GuestAddress(AVAIL + 2)).unwrap();
        assert_eq!(r.pop(), Err(()));
        assert_eq!(r.next_avail(), 0);
    }

    #[test]
    fn layouts_outside_memory_or_misaligned_are_refused() {
        let m = mem();
        let g = Guest::new(&m);
        let bad = |a: RingAddrs, size| SplitRing::new(&g, a, size, false, 0).is_err();
        assert!(bad(addrs(), 3), "not a power of two");
        assert!(bad(addrs(), 0));
        assert!(
            bad(
                RingAddrs {
                    used: 0x3ffc,
                    ..addrs()
                },
                SIZE
            ),
            "used past the end"
        );
        assert!(
            bad(
                RingAddrs {
                    avail: 0x2001,
                    ..addrs()
                },
                SIZE
            ),
            "odd avail"
        );
        assert!(
            bad(
                RingAddrs {
                    used: 0x3002,
                    ..addrs()
                },
                SIZE
            ),
            "used not 4-aligned"
        );
        assert!(
            bad(
                RingAddrs {
                    desc: 0x1008,
                    ..addrs()
                },
                SIZE
            ),
            "desc not 16-aligned"
        );
        assert!(
            bad(
                RingAddrs {
                    desc: 0x3f90,
                    ..addrs()
                },
                SIZE
            ),
            "table past the end"
        );
    }

    #[test]
    fn notifications_follow_used_event_or_no_interrupt() {
        let m = mem();
        let mut r = SplitRing::new(&Guest::new(&m), addrs(), SIZE, true, 0).unwrap();
        let used_event = GuestAddress(AVAIL + 4 + 2 * u64::from(SIZE));
        // The driver wants to hear when entry 1 is used (used_event = 1).
        m.write_obj(1u16, used_event).unwrap();
        r.push_used(0, 1);
        r.publish();
        assert!(!r.needs_notification(), "used idx 1 has not passed entry 1");
        r.push_used(1, 1);
        r.push_used(2, 1);
        r.publish();
        assert!(r.needs_notification(), "the batch crossed used_event");
        r.push_used(3, 1);
        r.publish();
        assert!(!r.needs_notification());
        // As SPDK's driver: used_event far behind, never reached.
        m.write_obj(0u16.wrapping_sub(SIZE + 1), used_event)
            .unwrap();
        r.push_used(4, 1);
        r.publish();
        assert!(!r.needs_notification());

        let mut r = SplitRing::new(&Guest::new(&m), addrs(), SIZE, false, 0).unwrap();
        assert!(r.needs_notification());
        m.write_obj(AVAIL_F_NO_INTERRUPT, GuestAddress(AVAIL))
            .unwrap();
        assert!(!r.needs_notification());
    }

    #[test]
    fn enabling_kicks_reports_requests_that_raced_in() {
        let m = mem();
        let mut r = SplitRing::new(&Guest::new(&m), addrs(), SIZE, true, 0).unwrap();
        assert!(!r.enable_notification());
        let avail_event: u16 = m
            .read_obj(GuestAddress(USED + 4 + 8 * u64::from(SIZE)))
            .unwrap();
        assert_eq!(avail_event, 0);
        offer(&m, 0, &[2]);
        assert!(r.enable_notification());
        let mut r = SplitRing::new(&Guest::new(&m), addrs(), SIZE, false, 1).unwrap();
        r.disable_notification();
        let flags: u16 = m.read_obj(GuestAddress(USED)).unwrap();
        assert_eq!(flags, USED_F_NO_NOTIFY);
        assert!(!r.enable_notification());
        let flags: u16 = m.read_obj(GuestAddress(USED)).unwrap();
        assert_eq!(flags, 0);
    }
}
