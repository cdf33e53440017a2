//! VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD: the shared record of requests the
//! back-end has taken from a split ring but not yet returned, so that they
//! can be resubmitted after the front-end reconnects.
//!
//! Layout (vhost-user spec, "Inflight I/O tracking"), one region per queue:
//! `features u64, version u16, desc_num u16, last_batch_head u16,
//! used_idx u16`, then `desc_num` entries of `inflight u8, padding [u8; 5],
//! next u16, counter u64`.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::FromRawFd;
use std::sync::Arc;

use vm_memory::{Bytes, FileOffset, MmapRegion, VolatileMemory, VolatileSlice};

const HEADER: usize = 16;
const ENTRY: usize = 16;
/// Queue regions start on cache lines, as libvhost-user lays them out.
const ALIGN: usize = 64;
const OFF_VERSION: usize = 8;
const OFF_DESC_NUM: usize = 10;
const OFF_LAST_BATCH_HEAD: usize = 12;
const OFF_USED_IDX: usize = 14;
const ENTRY_OFF_COUNTER: usize = 8;
/// Version written into fresh regions.
const VERSION: u16 = 1;

/// Bytes of one queue's region.
pub fn queue_region_size(queue_size: u16) -> usize {
    (HEADER + ENTRY * usize::from(queue_size)).next_multiple_of(ALIGN)
}

/// The whole shared area, for every queue of a device.
pub struct InflightArea {
    map: MmapRegion,
    num_queues: u16,
    queue_size: u16,
}

impl InflightArea {
    /// GET_INFLIGHT_FD: a fresh zeroed area in a memfd; returns it and the
    /// fd to hand to the front-end.
    pub fn create(num_queues: u16, queue_size: u16) -> io::Result<(InflightArea, File, u64)> {
        let size = queue_region_size(queue_size) * usize::from(num_queues);
        let name = CString::new("pollux-inflight").expect("no NUL");
        // SAFETY: `name` is a valid NUL-terminated string; the result is
        // checked before use.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nobody else.
        let file = unsafe { File::from_raw_fd(fd) };
        file.set_len(size as u64)?;
        let area = Self::open(file.try_clone()?, size as u64, 0, num_queues, queue_size)?;
        for q in 0..num_queues {
            let s = area.queue_slice(q);
            let _ = s.write_obj(VERSION, OFF_VERSION);
            let _ = s.write_obj(queue_size, OFF_DESC_NUM);
        }
        Ok((area, file, size as u64))
    }

    /// SET_INFLIGHT_FD: maps an area the front-end kept.
    pub fn open(
        file: File,
        mmap_size: u64,
        mmap_offset: u64,
        num_queues: u16,
        queue_size: u16,
    ) -> io::Result<InflightArea> {
        let need = queue_region_size(queue_size) * usize::from(num_queues);
        let len = usize::try_from(mmap_size).map_err(|_| io::Error::other("size too large"))?;
        if len < need || num_queues == 0 || queue_size == 0 {
            return Err(io::Error::other(format!(
                "inflight area of {len} bytes is too small for {num_queues} queues of {queue_size}"
            )));
        }
        let map = MmapRegion::from_file(FileOffset::new(file, mmap_offset), len)
            .map_err(io::Error::other)?;
        Ok(InflightArea {
            map,
            num_queues,
            queue_size,
        })
    }

    fn queue_slice(&self, q: u16) -> VolatileSlice<'_> {
        let size = queue_region_size(self.queue_size);
        self.map
            .get_slice(usize::from(q) * size, size)
            .expect("checked in open")
    }

    /// The tracker of queue `q`, if the area has one for a ring of `size`.
    pub fn queue(self: &Arc<Self>, q: u16, size: u16) -> Option<InflightQueue> {
        (q < self.num_queues && size == self.queue_size).then(|| InflightQueue {
            area: self.clone(),
            q,
        })
    }
}

/// One queue's part of the area; lives on the queue's reactor.
pub struct InflightQueue {
    area: Arc<InflightArea>,
    q: u16,
}

impl InflightQueue {
    fn slice(&self) -> VolatileSlice<'_> {
        self.area.queue_slice(self.q)
    }

    fn entry(head: u16) -> usize {
        HEADER + ENTRY * usize::from(head)
    }

    /// The back-end took `head` from the avail ring.
    pub fn fetched(&self, head: u16, counter: u64) {
        if head >= self.area.queue_size {
            return;
        }
        let s = self.slice();
        let e = Self::entry(head);
        let _ = s.write_obj(counter, e + ENTRY_OFF_COUNTER);
        let _ = s.write_obj(1u8, e);
    }

    /// `head` is about to go into the used ring.
    pub fn completing(&self, head: u16) {
        let _ = self.slice().write_obj(head, OFF_LAST_BATCH_HEAD);
    }

    /// `head` is in the used ring, whose index is now `used_idx`.
    pub fn completed(&self, head: u16, used_idx: u16) {
        if head >= self.area.queue_size {
            return;
        }
        let s = self.slice();
        let _ = s.write_obj(0u8, Self::entry(head));
        let _ = s.write_obj(used_idx, OFF_USED_IDX);
    }

    /// At ring start: repairs a batch interrupted between the used-ring
    /// update and `used_idx`, and returns the heads still in flight, oldest
    /// first, with the largest counter seen (to continue counting from).
    pub fn recover(&self, ring_used_idx: u16) -> (Vec<u16>, u64) {
        let s = self.slice();
        let used_idx: u16 = s.read_obj(OFF_USED_IDX).unwrap_or(ring_used_idx);
        if used_idx != ring_used_idx {
            // The last batch (one descriptor: we complete one at a time)
            // reached the used ring but not `used_idx`.
            let last: u16 = s.read_obj(OFF_LAST_BATCH_HEAD).unwrap_or(0);
            if last < self.area.queue_size {
                let _ = s.write_obj(0u8, Self::entry(last));
            }
            let _ = s.write_obj(ring_used_idx, OFF_USED_IDX);
        }
        let mut heads: Vec<(u64, u16)> = Vec::new();
        let mut max_counter = 0;
        for head in 0..self.area.queue_size {
            let e = Self::entry(head);
            let counter: u64 = s.read_obj(e + ENTRY_OFF_COUNTER).unwrap_or(0);
            max_counter = max_counter.max(counter);
            if s.read_obj::<u8>(e).unwrap_or(0) == 1 {
                heads.push((counter, head));
            }
        }
        heads.sort_unstable();
        (heads.into_iter().map(|(_, h)| h).collect(), max_counter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_and_recovers_in_counter_order() {
        let (area, _file, size) = InflightArea::create(2, 8).unwrap();
        assert_eq!(size as usize, 2 * queue_region_size(8));
        let area = Arc::new(area);
        let q = area.queue(1, 8).unwrap();
        assert!(area.queue(2, 8).is_none() && area.queue(0, 16).is_none());
        q.fetched(5, 1);
        q.fetched(2, 2);
        q.fetched(7, 3);
        q.completing(2);
        q.completed(2, 1);
        // Head 7 reached the used ring (index 2) but used_idx was not updated.
        q.completing(7);
        let (heads, max) = q.recover(2);
        assert_eq!((heads, max), (vec![5], 3));
    }
}
