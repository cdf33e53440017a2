//! Front-end memory: the vhost-user memory table, mapped into Pollux.
//!
//! A front-end describes its memory as regions (a guest physical range, the
//! front-end's own virtual address for it, and an fd to mmap). `MemTable`
//! keeps those regions on the control thread and builds immutable
//! `GuestMemoryMmap` snapshots that are handed to the reactors by message.
//! Regions are `Arc`-shared between snapshots, so a mapping stays alive as
//! long as any snapshot (and so any in-flight I/O) still uses it.

use std::cell::Cell;
use std::fs::File;
use std::sync::Arc;

use vhost::vhost_user::message::VhostUserMemoryRegion;
use vm_memory::{
    Address, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    GuestRegionMmap, MemoryRegionAddress, MmapRegion,
};

use super::request::GuestMem;

/// Why a memory table change was refused.
#[derive(Debug, thiserror::Error)]
pub enum MemError {
    /// The region could not be mapped.
    #[error("cannot map region at guest address {gpa:#x} ({size} bytes): {reason}")]
    Map {
        /// Guest physical address.
        gpa: u64,
        /// Length.
        size: u64,
        /// Why.
        reason: String,
    },
    /// Regions overlap or the table is otherwise inconsistent.
    #[error("invalid memory table: {0}")]
    Table(String),
    /// More fds than regions or the other way round.
    #[error("memory table has {regions} regions but {fds} fds")]
    FdCount {
        /// Regions in the message.
        regions: usize,
        /// Fds attached.
        fds: usize,
    },
}

/// Most regions a front-end may add (GET_MAX_MEM_SLOTS). QEMU's own limit
/// for vhost-user is 509 (KVM's memslot count minus a few); libblkio maps
/// one region per buffer pool.
pub const MAX_MEM_SLOTS: u64 = 509;

#[derive(Clone)]
struct Region {
    gpa: u64,
    size: u64,
    user_addr: u64,
    mapping: Arc<MmapRegion>,
}

/// The regions a front-end has given us.
#[derive(Default)]
pub struct MemTable {
    regions: Vec<Region>,
}

impl MemTable {
    fn map(r: &VhostUserMemoryRegion, file: File) -> Result<Region, MemError> {
        let (gpa, size) = (r.guest_phys_addr, r.memory_size);
        let err = |reason: String| MemError::Map { gpa, size, reason };
        if size == 0 || gpa.checked_add(size).is_none() || r.user_addr.checked_add(size).is_none() {
            return Err(err("empty or wrapping range".into()));
        }
        let len = usize::try_from(size).map_err(|_| err("too large".into()))?;
        let mapping = MmapRegion::from_file(FileOffset::new(file, r.mmap_offset), len)
            .map_err(|e| err(e.to_string()))?;
        Ok(Region {
            gpa,
            size,
            user_addr: r.user_addr,
            mapping: Arc::new(mapping),
        })
    }

    fn overlaps(&self, gpa: u64, size: u64) -> bool {
        self.regions
            .iter()
            .any(|r| gpa < r.gpa + r.size && r.gpa < gpa + size)
    }

    /// SET_MEM_TABLE: replaces every region.
    pub fn set(
        &mut self,
        regions: &[VhostUserMemoryRegion],
        files: Vec<File>,
    ) -> Result<(), MemError> {
        if regions.len() != files.len() {
            return Err(MemError::FdCount {
                regions: regions.len(),
                fds: files.len(),
            });
        }
        let mut next = MemTable::default();
        for (r, f) in regions.iter().zip(files) {
            let region = Self::map(r, f)?;
            if next.overlaps(region.gpa, region.size) {
                return Err(MemError::Table("overlapping regions".into()));
            }
            next.regions.push(region);
        }
        *self = next;
        Ok(())
    }

    /// ADD_MEM_REG.
    pub fn add(&mut self, r: &VhostUserMemoryRegion, file: File) -> Result<(), MemError> {
        if self.regions.len() as u64 >= MAX_MEM_SLOTS {
            return Err(MemError::Table("no free memory slot".into()));
        }
        let region = Self::map(r, file)?;
        if self.overlaps(region.gpa, region.size) {
            return Err(MemError::Table("region overlaps an existing one".into()));
        }
        self.regions.push(region);
        Ok(())
    }

    /// REM_MEM_REG: the region with this guest address and size.
    pub fn remove(&mut self, r: &VhostUserMemoryRegion) -> Result<(), MemError> {
        let before = self.regions.len();
        self.regions
            .retain(|x| !(x.gpa == r.guest_phys_addr && x.size == r.memory_size));
        if self.regions.len() == before {
            let (gpa, size) = (r.guest_phys_addr, r.memory_size);
            return Err(MemError::Table(format!(
                "no region at {gpa:#x} of {size} bytes to remove"
            )));
        }
        Ok(())
    }

    /// Front-end virtual address (as in SET_VRING_ADDR) → guest address.
    pub fn va_to_gpa(&self, va: u64) -> Option<u64> {
        self.regions
            .iter()
            .find(|r| va >= r.user_addr && va - r.user_addr < r.size)
            .map(|r| va - r.user_addr + r.gpa)
    }

    /// An immutable snapshot of the current regions for the reactors.
    pub fn snapshot(&self) -> Result<Arc<GuestMemoryMmap>, MemError> {
        // GuestMemoryMmap wants its regions in address order.
        let mut sorted: Vec<&Region> = self.regions.iter().collect();
        sorted.sort_by_key(|r| r.gpa);
        let regions = sorted
            .into_iter()
            .map(|r| {
                GuestRegionMmap::with_arc(r.mapping.clone(), GuestAddress(r.gpa))
                    .ok_or_else(|| MemError::Table("region end overflows".into()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if regions.is_empty() {
            return Ok(Arc::new(GuestMemoryMmap::new()));
        }
        GuestMemoryMmap::from_regions(regions)
            .map(Arc::new)
            .map_err(|e| MemError::Table(e.to_string()))
    }
}

/// The parser's view of a guest memory snapshot, for one request.
///
/// A request's descriptors, header, data and status almost always lie in
/// one region, so the region of the last access is kept and checked
/// first: vm-memory's lookup (a binary search, then a bounds-checked
/// volatile slice) on each of a request's five or six accesses was about a
/// tenth of the reactor's instructions per 4 KiB request.
pub struct Guest<'a> {
    mem: &'a GuestMemoryMmap,
    /// The last region found.
    last: Cell<Option<RegionHint>>,
}

/// Guest start, length and host start of a region of one memory map: a
/// queue keeps the one its last request used for the next request, and
/// drops it with that map.
#[derive(Clone, Copy)]
pub struct RegionHint(u64, u64, *mut u8);

impl<'a> Guest<'a> {
    /// A view of `mem` with an empty region cache.
    pub fn new(mem: &'a GuestMemoryMmap) -> Self {
        Self::with_hint(mem, None)
    }

    /// A view of `mem` that first tries `hint`, which must come from
    /// [`Guest::hint`] of a view of this same `mem` (a region of another
    /// map could be unmapped).
    pub fn with_hint(mem: &'a GuestMemoryMmap, hint: Option<RegionHint>) -> Self {
        Guest {
            mem,
            last: Cell::new(hint),
        }
    }

    /// The region of the last access, for the next view of the same map.
    pub fn hint(&self) -> Option<RegionHint> {
        self.last.get()
    }

    /// The host address of `[addr, addr + len)` if it lies in one region.
    fn lookup(&self, addr: u64, len: u64) -> Option<*mut u8> {
        let inside = |RegionHint(start, size, host)| {
            let off = addr.checked_sub(start)?;
            // `off + len <= size`, without overflow.
            (off <= size && len <= size - off).then(|| host.wrapping_add(off as usize))
        };
        if let Some(hit) = self.last.get().and_then(inside) {
            return Some(hit);
        }
        let region = self.mem.find_region(GuestAddress(addr))?;
        let host = region.get_host_address(MemoryRegionAddress(0)).ok()?;
        let entry = RegionHint(region.start_addr().raw_value(), region.len(), host);
        self.last.set(Some(entry));
        inside(entry)
    }
}

impl GuestMem for Guest<'_> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        let Some(src) = self.lookup(addr, buf.len() as u64) else {
            return false;
        };
        if let Ok(chunk) = <&mut [u8; 16]>::try_from(&mut *buf) {
            // SAFETY: as below; one volatile read of the 16 bytes (a
            // descriptor or a request header, the common reads) instead of
            // sixteen. `[u8; 16]` has alignment 1.
            *chunk = unsafe { std::ptr::read_volatile(src.cast::<[u8; 16]>()) };
            return true;
        }
        for (i, b) in buf.iter_mut().enumerate() {
            // SAFETY: `lookup` found `[addr, addr + buf.len())` inside one
            // mapped region of the snapshot, which the caller's borrow of
            // `mem` keeps mapped. The front-end may write that memory at
            // any time, so it is read with volatile byte loads (as
            // vm-memory does) and never through a Rust reference.
            *b = unsafe { std::ptr::read_volatile(src.add(i)) };
        }
        true
    }

    fn host(&self, addr: u64, len: u64) -> Option<*mut u8> {
        // One region, so the host range is contiguous and mapped.
        self.lookup(addr, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    #[test]
    fn guest_reads_and_host_ranges_stay_inside_one_region() {
        let mem: GuestMemoryMmap = GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0x1000), 0x1000),
            (GuestAddress(0x3000), 0x1000),
        ])
        .unwrap();
        mem.write_slice(&[1, 2, 3, 4], GuestAddress(0x1ffc))
            .unwrap();
        mem.write_slice(&[9, 8], GuestAddress(0x3000)).unwrap();
        let g = Guest::new(&mem);
        let mut b = [0u8; 4];
        assert!(g.read(0x1ffc, &mut b));
        assert_eq!(b, [1, 2, 3, 4]);
        // Cached region, then past its end, then the other region.
        assert!(
            !g.read(0x1ffd, &mut b),
            "crosses the end of the first region"
        );
        assert!(!g.read(0x2000, &mut b), "a hole");
        let mut c = [0u8; 2];
        assert!(g.read(0x3000, &mut c));
        assert_eq!(c, [9, 8]);
        assert!(g.host(0x3000, 0x1000).is_some());
        assert!(g.host(0x3000, 0x1001).is_none());
        assert!(g.host(0x3001, u64::MAX).is_none(), "no overflow");
        assert!(g.host(0x1000, 0x1000).is_some(), "back to the first region");
        assert!(g.host(0x0fff, 1).is_none());
        assert_eq!(
            g.host(0x1ffc, 4),
            mem.get_host_address(GuestAddress(0x1ffc)).ok()
        );
    }
}
