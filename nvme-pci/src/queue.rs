//! Submission and completion rings, and the command-identifier table: the
//! queue logic, with no device. The rings live in DMA memory; doorbell
//! values are handed back to the caller to write, once per poll.
//!
//! A completion entry comes from the device, which is hostile like any
//! input: its CID and SQ head are checked before either is used.

use std::sync::atomic::{fence, Ordering};

use pollux_nvme::cqe::Cqe;
use pollux_nvme::sqe::Sqe;

use crate::dma::DmaMem;

/// Why a completion entry was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HostileCqe {
    /// The CID names no outstanding command.
    #[error("completion for CID {0}, which is not outstanding")]
    BadCid(u16),
    /// The SQ head is outside the ring or past what we submitted.
    #[error("completion with SQ head {sqhd} outside the submitted range {head}..={tail}")]
    BadSqHead {
        /// What the device said.
        sqhd: u16,
        /// Our last known head.
        head: u16,
        /// Our tail.
        tail: u16,
    },
}

/// A submission queue of `size` 64-byte entries.
pub struct SubQueue {
    mem: DmaMem,
    size: u16,
    tail: u16,
    head: u16,
    /// The tail moved since the doorbell was last written.
    dirty: bool,
}

impl SubQueue {
    /// A ring over `mem`, which must hold `size` entries.
    pub fn new(mem: DmaMem, size: u16) -> SubQueue {
        assert!(size >= 2 && mem.len() >= size as usize * Sqe::SIZE);
        SubQueue {
            mem,
            size,
            tail: 0,
            head: 0,
            dirty: false,
        }
    }

    /// The ring's bus address.
    pub fn iova(&self) -> u64 {
        self.mem.iova()
    }

    /// The ring memory.
    pub fn mem(&self) -> &DmaMem {
        &self.mem
    }

    /// Number of entries.
    pub fn size(&self) -> u16 {
        self.size
    }

    /// Entries submitted and not yet consumed by the device.
    pub fn in_flight(&self) -> u16 {
        (self.tail + self.size - self.head) % self.size
    }

    /// True if one more entry would make the tail meet the head.
    pub fn is_full(&self) -> bool {
        (self.tail + 1) % self.size == self.head
    }

    /// Writes `sqe` at the tail; false if the ring is full. The device
    /// sees it at the next `take_doorbell`.
    pub fn push(&mut self, sqe: &Sqe) -> bool {
        if self.is_full() {
            return false;
        }
        self.mem
            .write(self.tail as usize * Sqe::SIZE, sqe.as_bytes());
        self.tail = (self.tail + 1) % self.size;
        self.dirty = true;
        true
    }

    /// The new tail to write to the doorbell, if it moved since the last
    /// call. Orders the entries' stores before the doorbell store.
    pub fn take_doorbell(&mut self) -> Option<u32> {
        if !std::mem::take(&mut self.dirty) {
            return None;
        }
        fence(Ordering::SeqCst);
        Some(self.tail as u32)
    }

    /// Takes the device's SQ head from a completion: it must lie in the
    /// range from our last known head to the tail (the device cannot have
    /// consumed entries we never submitted).
    pub fn set_head(&mut self, sqhd: u16) -> Result<(), HostileCqe> {
        let bad = HostileCqe::BadSqHead {
            sqhd,
            head: self.head,
            tail: self.tail,
        };
        if sqhd >= self.size {
            return Err(bad);
        }
        let advanced = (sqhd + self.size - self.head) % self.size;
        if advanced > self.in_flight() {
            return Err(bad);
        }
        self.head = sqhd;
        Ok(())
    }
}

/// A completion queue of `size` 16-byte entries and its phase.
pub struct CompQueue {
    mem: DmaMem,
    size: u16,
    head: u16,
    phase: bool,
    dirty: bool,
}

impl CompQueue {
    /// A ring over `mem` (zeroed, so every entry's phase starts at 0 and
    /// the first pass expects 1).
    pub fn new(mem: DmaMem, size: u16) -> CompQueue {
        assert!(size >= 2 && mem.len() >= size as usize * Cqe::SIZE);
        mem.zero();
        CompQueue {
            mem,
            size,
            head: 0,
            phase: true,
            dirty: false,
        }
    }

    /// The ring's bus address.
    pub fn iova(&self) -> u64 {
        self.mem.iova()
    }

    /// The ring memory.
    pub fn mem(&self) -> &DmaMem {
        &self.mem
    }

    /// The entry at the head, if the device has posted it (its phase tag
    /// matches the current pass), and moves past it.
    pub fn pop(&mut self) -> Option<Cqe> {
        let off = self.head as usize * Cqe::SIZE;
        // The status dword carries the phase tag; read it alone first, and
        // the rest only after it says the entry is new.
        let dw3 = self.mem.read_u32(off + 12);
        if ((dw3 >> 16) & 1 == 1) != self.phase {
            return None;
        }
        fence(Ordering::Acquire);
        let cqe = Cqe::from_array(self.mem.read::<16>(off));
        self.head += 1;
        if self.head == self.size {
            self.head = 0;
            self.phase = !self.phase;
        }
        self.dirty = true;
        Some(cqe)
    }

    /// The new head to write to the doorbell, if entries were consumed.
    pub fn take_doorbell(&mut self) -> Option<u32> {
        std::mem::take(&mut self.dirty).then_some(self.head as u32)
    }
}

/// Outstanding commands by CID: `T` is what the driver keeps per command.
pub struct CidTable<T> {
    slots: Vec<Option<T>>,
    free: Vec<u16>,
}

impl<T> CidTable<T> {
    /// A table of `n` CIDs, 0..n.
    pub fn new(n: u16) -> CidTable<T> {
        CidTable {
            slots: (0..n).map(|_| None).collect(),
            // Popped from the end: CID 0 first.
            free: (0..n).rev().collect(),
        }
    }

    /// Number of CIDs in use.
    pub fn in_use(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// True if every CID is in use.
    pub fn is_full(&self) -> bool {
        self.free.is_empty()
    }

    /// Stores `v` under a free CID.
    pub fn insert(&mut self, v: T) -> Result<u16, T> {
        match self.free.pop() {
            Some(cid) => {
                self.slots[cid as usize] = Some(v);
                Ok(cid)
            }
            None => Err(v),
        }
    }

    /// The command with `cid`, checked: a device may name any CID.
    pub fn take(&mut self, cid: u16) -> Result<T, HostileCqe> {
        let v = self
            .slots
            .get_mut(cid as usize)
            .and_then(Option::take)
            .ok_or(HostileCqe::BadCid(cid))?;
        self.free.push(cid);
        Ok(v)
    }

    /// Removes every outstanding command (the controller failed).
    pub fn drain(&mut self) -> Vec<T> {
        let mut out = Vec::new();
        for (cid, s) in self.slots.iter_mut().enumerate() {
            if let Some(v) = s.take() {
                out.push(v);
                self.free.push(cid as u16);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use pollux_nvme::status::Status;

    use super::*;
    use crate::dma::{Iommu, NoIommu};

    fn mem(len: usize) -> DmaMem {
        let iommu: Arc<dyn Iommu> = Arc::new(NoIommu);
        DmaMem::new(&iommu, len, None).unwrap()
    }

    /// Plays the device: posts a completion at `slot` with `phase`.
    fn post(cq: &CompQueue, slot: u16, cid: u16, sqhd: u16, phase: bool) {
        let mut c = Cqe::new(cid, Status::SUCCESS);
        c.set_sqhd(sqhd);
        c.set_phase(phase);
        cq.mem.write(slot as usize * Cqe::SIZE, c.as_bytes());
    }

    #[test]
    fn phase_bit_flips_on_wrap() {
        let mut cq = CompQueue::new(mem(4096), 4);
        assert!(cq.pop().is_none(), "a zeroed ring has nothing new");
        for i in 0..4 {
            post(&cq, i, i, 0, true);
        }
        for i in 0..4 {
            assert_eq!(cq.pop().unwrap().cid(), i);
        }
        // Back at slot 0, the old entries (phase 1) are stale now.
        assert!(cq.pop().is_none());
        assert_eq!(cq.take_doorbell(), Some(0));
        assert_eq!(cq.take_doorbell(), None, "one doorbell per batch");
        post(&cq, 0, 9, 0, false);
        assert_eq!(cq.pop().unwrap().cid(), 9);
        assert_eq!(cq.take_doorbell(), Some(1));
    }

    #[test]
    fn submission_wraps_and_doorbell_is_batched() {
        let mut sq = SubQueue::new(mem(4096), 4);
        assert_eq!(sq.take_doorbell(), None);
        for cid in 0..3 {
            assert!(sq.push(&Sqe::new(2, cid)));
        }
        assert!(sq.is_full(), "size - 1 entries fill the ring");
        assert!(!sq.push(&Sqe::new(2, 3)));
        // Three submissions, one doorbell write.
        assert_eq!(sq.take_doorbell(), Some(3));
        assert_eq!(sq.take_doorbell(), None);
        sq.set_head(2).unwrap();
        assert_eq!(sq.in_flight(), 1);
        assert!(sq.push(&Sqe::new(2, 4)));
        assert!(sq.push(&Sqe::new(2, 5)));
        // The tail wrapped past the end of the ring.
        assert_eq!(sq.take_doorbell(), Some(1));
        let raw = sq.mem.read::<64>(0);
        assert_eq!(Sqe::from_array(raw).cid(), 5);
    }

    #[test]
    fn hostile_sq_head_is_refused() {
        let mut sq = SubQueue::new(mem(4096), 8);
        for cid in 0..3 {
            sq.push(&Sqe::new(2, cid));
        }
        assert!(sq.set_head(8).is_err(), "outside the ring");
        assert!(sq.set_head(5).is_err(), "past the tail");
        sq.set_head(3).unwrap();
        assert!(
            sq.set_head(1).is_err(),
            "backwards, past entries never submitted"
        );
        sq.set_head(3).unwrap();
    }

    #[test]
    fn cids_complete_out_of_order_and_are_checked() {
        let mut t: CidTable<&str> = CidTable::new(3);
        let a = t.insert("a").unwrap();
        let b = t.insert("b").unwrap();
        let c = t.insert("c").unwrap();
        assert!(t.is_full());
        assert_eq!(t.insert("d"), Err("d"));
        assert_eq!(t.take(b), Ok("b"));
        assert_eq!(t.take(b), Err(HostileCqe::BadCid(b)), "twice");
        assert_eq!(t.take(7), Err(HostileCqe::BadCid(7)), "out of range");
        assert_eq!(t.take(u16::MAX), Err(HostileCqe::BadCid(u16::MAX)));
        assert_eq!(t.take(c), Ok("c"));
        let d = t.insert("d").unwrap();
        assert_eq!(t.in_use(), 2);
        let mut rest = t.drain();
        rest.sort();
        assert_eq!(rest, vec!["a", "d"]);
        assert_eq!(t.in_use(), 0);
        let _ = (a, d);
    }
}
