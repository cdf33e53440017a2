//! Memory the controller reads and writes by DMA: page-aligned anonymous
//! mappings, placed on the device's NUMA node and registered with the IOMMU
//! at IOVA = virtual address. The crate's other unsafe room (with `mmio`).
//!
//! The device may write this memory at any time while it is mapped, so it
//! is never seen through a Rust reference: entries are read and written
//! with volatile copies, data with raw copies while no command owns it.

use std::io;
use std::ptr::NonNull;
use std::sync::Arc;

use crate::regs::PAGE;

/// Where DMA mappings are registered: the VFIO container, or nothing in
/// the unit tests that run the queue logic without a device.
pub trait Iommu: Send + Sync {
    /// Maps `[va, va + len)` for device reads and writes at IOVA `va`.
    ///
    /// # Safety
    /// The range must stay mapped in this process until `unmap`, and be
    /// accessed only through raw pointers meanwhile.
    unsafe fn map(&self, va: u64, len: usize) -> io::Result<()>;

    /// Removes the mapping made by `map` with the same arguments.
    fn unmap(&self, va: u64, len: usize) -> io::Result<()>;
}

/// The VFIO container as the DMA code sees it.
pub struct VfioIommu(pub Arc<vfio_ioctls::VfioContainer>);

impl Iommu for VfioIommu {
    unsafe fn map(&self, va: u64, len: usize) -> io::Result<()> {
        // SAFETY: forwarded from our caller's contract: the range stays
        // mapped until `unmap` and is accessed only through raw pointers.
        unsafe { self.0.vfio_dma_map(va, len, va as *mut u8) }.map_err(io::Error::other)
    }

    fn unmap(&self, va: u64, len: usize) -> io::Result<()> {
        self.0.vfio_dma_unmap(va, len).map_err(io::Error::other)
    }
}

/// No IOMMU at all: for tests that play the device themselves.
pub struct NoIommu;

impl Iommu for NoIommu {
    unsafe fn map(&self, _va: u64, _len: usize) -> io::Result<()> {
        Ok(())
    }
    fn unmap(&self, _va: u64, _len: usize) -> io::Result<()> {
        Ok(())
    }
}

/// `mbind(2)` policy: prefer the node, fall back to others rather than fail
/// (a full node should slow the device down, not stop it).
const MPOL_PREFERRED: libc::c_int = 1;

/// A DMA-able buffer, a whole number of pages.
pub struct DmaMem {
    ptr: NonNull<u8>,
    len: usize,
    iommu: Arc<dyn Iommu>,
}

// SAFETY: DmaMem uniquely owns its mapping (like a Vec<u8>); the IOMMU
// handle is Send + Sync.
unsafe impl Send for DmaMem {}

impl DmaMem {
    /// A zeroed buffer of at least `len` bytes (rounded up to pages),
    /// preferably on NUMA node `node`, mapped for the device.
    pub fn new(iommu: &Arc<dyn Iommu>, len: usize, node: Option<u32>) -> io::Result<DmaMem> {
        let len = len
            .max(1)
            .checked_next_multiple_of(PAGE)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: a fresh private anonymous mapping chosen by the kernel.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(io::Error::last_os_error)?;
        // Until it is complete, `mem` unmaps on error (iommu unmap of a
        // range never mapped is a harmless error that Drop ignores).
        let mem = DmaMem {
            ptr,
            len,
            iommu: iommu.clone(),
        };
        if let Some(node) = node.filter(|&n| n < 64) {
            let mask: libc::c_ulong = 1 << node;
            // SAFETY: mbind on our own fresh mapping with a one-word mask;
            // the kernel only reads `mask`.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_mbind,
                    p,
                    len,
                    MPOL_PREFERRED,
                    &mask as *const libc::c_ulong,
                    64usize,
                    0u32,
                )
            };
            if rc != 0 {
                // Placement is an optimisation: a kernel without NUMA
                // support refuses, and the memory is still usable.
                tracing::debug!(node, error = %io::Error::last_os_error(), "mbind failed");
            }
        }
        // SAFETY: the range is our mapping, kept until Drop unmaps it from
        // the IOMMU first; it is accessed only through raw pointers.
        unsafe { iommu.map(mem.iova(), len)? };
        Ok(mem)
    }

    /// The bus address the device uses (IOVA = virtual address).
    #[inline]
    pub fn iova(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    /// Length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for an empty buffer (never: at least one page).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    fn at(&self, off: usize, n: usize) -> *mut u8 {
        assert!(
            off.checked_add(n).is_some_and(|end| end <= self.len),
            "DMA access {off}+{n} outside a buffer of {}",
            self.len
        );
        // SAFETY: `off + n <= len` (checked), so inside the mapping.
        unsafe { self.ptr.as_ptr().add(off) }
    }

    /// Volatile read of `N` bytes at `off` (a completion entry the device
    /// may be writing).
    #[inline]
    pub fn read<const N: usize>(&self, off: usize) -> [u8; N] {
        let p = self.at(off, N).cast::<[u8; N]>();
        // SAFETY: in bounds (checked by `at`); [u8; N] has alignment 1.
        unsafe { p.read_volatile() }
    }

    /// Volatile read of the little-endian u32 at `off` (4-aligned).
    #[inline]
    pub fn read_u32(&self, off: usize) -> u32 {
        assert!(off % 4 == 0);
        let p = self.at(off, 4).cast::<u32>();
        // SAFETY: in bounds and 4-aligned (the mapping is page-aligned).
        u32::from_le(unsafe { p.read_volatile() })
    }

    /// Volatile write of `N` bytes at `off` (a submission entry).
    #[inline]
    pub fn write<const N: usize>(&self, off: usize, v: &[u8; N]) {
        let p = self.at(off, N).cast::<[u8; N]>();
        // SAFETY: in bounds (checked by `at`); alignment 1.
        unsafe { p.write_volatile(*v) }
    }

    /// Copies `len` bytes from `src` to `off`.
    ///
    /// # Safety
    /// `src` must be readable for `len` bytes and not overlap this buffer;
    /// no command may be using the range.
    pub unsafe fn copy_in(&self, off: usize, src: *const u8, len: usize) {
        let dst = self.at(off, len);
        // SAFETY: `dst` is in bounds; the caller vouches for `src`.
        unsafe { std::ptr::copy_nonoverlapping(src, dst, len) }
    }

    /// Copies `len` bytes at `off` to `dst`.
    ///
    /// # Safety
    /// `dst` must be writable for `len` bytes and not overlap this buffer;
    /// no command may be using the range.
    pub unsafe fn copy_out(&self, off: usize, dst: *mut u8, len: usize) {
        let src = self.at(off, len);
        // SAFETY: `src` is in bounds; the caller vouches for `dst`.
        unsafe { std::ptr::copy_nonoverlapping(src, dst, len) }
    }

    /// Zeroes the whole buffer (no command may be using it).
    pub fn zero(&self) {
        // SAFETY: the whole mapping, which we own; no reference into it.
        unsafe { std::ptr::write_bytes(self.ptr.as_ptr(), 0, self.len) }
    }
}

impl Drop for DmaMem {
    fn drop(&mut self) {
        // Unmapped from the IOMMU before the pages can go back to the
        // kernel, so the device can never reach memory reused elsewhere.
        if let Err(e) = self.iommu.unmap(self.iova(), self.len) {
            tracing::debug!(error = %e, "DMA unmap failed (container already closed?)");
        }
        // SAFETY: our mapping of this length, no reference into it remains.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_to_pages_and_reads_back() {
        let iommu: Arc<dyn Iommu> = Arc::new(NoIommu);
        let m = DmaMem::new(&iommu, 100, Some(0)).unwrap();
        assert_eq!(m.len(), PAGE);
        assert_eq!(m.iova() % PAGE as u64, 0);
        m.write(64, &[7u8; 16]);
        assert_eq!(m.read::<16>(64), [7u8; 16]);
        assert_eq!(m.read_u32(64), 0x0707_0707);
        m.zero();
        assert_eq!(m.read::<4>(64), [0; 4]);
    }

    #[test]
    #[should_panic(expected = "outside")]
    fn out_of_bounds_is_refused() {
        let iommu: Arc<dyn Iommu> = Arc::new(NoIommu);
        let m = DmaMem::new(&iommu, PAGE, None).unwrap();
        let _ = m.read::<16>(PAGE - 8);
    }
}

/// Copies between a DMA buffer and the I/O buffers of requests.
impl DmaMem {
    /// Copies `len` bytes of `buf` starting at byte `at` into this buffer
    /// from its start (a write's data, before the command is submitted).
    pub fn fill_from(&self, buf: &mut pollux_graph::IoBuf, at: usize, len: usize) {
        walk(buf, at, len, |seg, done, n| {
            // SAFETY: IoBuf segments are valid for reads of their length
            // while the I/O runs and are not our DMA mapping; no command
            // uses this bounce buffer yet; `done + n <= len` is checked by
            // `copy_in`'s bounds check.
            unsafe { self.copy_in(done, seg, n) }
        });
    }

    /// Copies this buffer's first `len` bytes into `buf` at byte `at` (a
    /// read's data, after its command completed).
    pub fn drain_to(&self, buf: &mut pollux_graph::IoBuf, at: usize, len: usize) {
        walk(buf, at, len, |seg, done, n| {
            // SAFETY: as in `fill_from`, for writes; the command that
            // filled this buffer has completed.
            unsafe { self.copy_out(done, seg, n) }
        });
    }
}

/// Walks the part `[at, at + len)` of `buf`, handing `f` each piece's
/// address, its offset from `at`, and its length.
fn walk(
    buf: &mut pollux_graph::IoBuf,
    at: usize,
    len: usize,
    mut f: impl FnMut(*mut u8, usize, usize),
) {
    let mut skip = at;
    let mut done = 0;
    for seg in buf.segments() {
        if done == len {
            break;
        }
        if skip >= seg.len {
            skip -= seg.len;
            continue;
        }
        let n = (seg.len - skip).min(len - done);
        // SAFETY: `skip < seg.len`, so the pointer stays in the segment.
        f(unsafe { seg.ptr.add(skip) }, done, n);
        skip = 0;
        done += n;
    }
}

#[cfg(test)]
mod copy_tests {
    use std::rc::Rc;

    use pollux_graph::{AlignedBuf, IoBuf, RawSegment};

    use super::*;

    #[test]
    fn copies_at_offsets_across_segments() {
        let iommu: Arc<dyn Iommu> = Arc::new(NoIommu);
        let m = DmaMem::new(&iommu, PAGE, None).unwrap();
        let mut a = vec![1u8; 10];
        let mut b = vec![2u8; 10];
        let segs = vec![
            RawSegment {
                ptr: a.as_mut_ptr(),
                len: 10,
            },
            RawSegment {
                ptr: b.as_mut_ptr(),
                len: 10,
            },
        ];
        // SAFETY: a and b outlive the buffer and are not otherwise used
        // until it is dropped.
        let mut buf = unsafe { IoBuf::raw(segs, Rc::new(())) };
        m.fill_from(&mut buf, 8, 4);
        assert_eq!(m.read::<4>(0), [1, 1, 2, 2]);
        m.write(0, &[9u8; 4]);
        m.drain_to(&mut buf, 9, 3);
        drop(buf);
        assert_eq!(&a[8..], &[1, 9]);
        assert_eq!(&b[..3], &[9, 9, 2]);

        let mut owned = IoBuf::Owned(AlignedBuf::zeroed(8));
        m.drain_to(&mut owned, 4, 4);
        let mut out = [0u8; 8];
        owned.copy_to_slice(&mut out);
        assert_eq!(out, [0, 0, 0, 0, 9, 9, 9, 9]);
    }
}
