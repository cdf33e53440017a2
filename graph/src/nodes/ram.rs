//! `ram`: a memory-backed device, with no lock on the data path.

use std::io;
use std::ptr::NonNull;

use pollux_poller::Reactor;

use crate::io::{Io, IoOp};
use crate::node::{BlockNode, Geometry};

/// Ranges at least this large are zeroed by returning their whole pages to
/// the kernel (they read back as zeroes), instead of writing zeroes.
const MADVISE_MIN: u64 = 1 << 20;

const PAGE: u64 = 4096;

/// Anonymous memory holding the device's bytes.
pub struct RamNode {
    base: NonNull<u8>,
    len: usize,
    geometry: Geometry,
}

// SAFETY: the region is plain memory owned by the node. It is only accessed
// through raw-pointer copies (never Rust references), at ranges checked
// against the geometry, so any reactor may use it concurrently. Overlapping
// in-flight requests from different reactors leave unspecified bytes in the
// overlap, exactly what a block device promises for them (the same stance
// vm-memory takes for guest RAM shared with a VM).
unsafe impl Send for RamNode {}
// SAFETY: see above.
unsafe impl Sync for RamNode {}

impl RamNode {
    /// `size` bytes (rounded down to whole blocks) of zeroes. Memory is
    /// reserved lazily: untouched blocks cost nothing.
    pub fn new(size: u64, block_size: u32) -> io::Result<Self> {
        let block_count = size / block_size as u64;
        let len = usize::try_from(block_count * block_size as u64)
            .map_err(|_| io::Error::other("ram size does not fit in memory"))?;
        if len == 0 {
            return Err(io::Error::other("ram size is smaller than one block"));
        }
        // SAFETY: an anonymous private mapping with no address hint has no
        // preconditions; the result is checked for MAP_FAILED.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // Random 4 KiB I/O over a large region is TLB-miss bound with 4 KiB
        // pages; huge pages cut those misses. Advisory: failure is harmless.
        // SAFETY: advises on exactly the mapping just created.
        unsafe { libc::madvise(p, len, libc::MADV_HUGEPAGE) };
        Ok(RamNode {
            base: NonNull::new(p.cast()).expect("mmap returned null"),
            len,
            geometry: Geometry {
                block_size,
                block_count,
                required_align: 1,
                optimal_align: block_size,
            },
        })
    }

    fn at(&self, offset: u64) -> *mut u8 {
        // SAFETY: callers pass offsets checked against the geometry (the
        // graph checks every I/O), so `offset <= len` and the result stays
        // inside (or one past) the mapping.
        unsafe { self.base.as_ptr().add(offset as usize) }
    }

    fn zero(&self, offset: u64, len: u64) {
        let (mut start, end) = (offset, offset + len);
        if len >= MADVISE_MIN {
            let first_page = offset.div_ceil(PAGE) * PAGE;
            let last_page = end / PAGE * PAGE;
            // SAFETY: the range is whole pages inside the mapping; dropping
            // private anonymous pages makes them read back as zeroes.
            let rc = unsafe {
                libc::madvise(
                    self.at(first_page).cast(),
                    (last_page - first_page) as usize,
                    libc::MADV_DONTNEED,
                )
            };
            if rc == 0 {
                // SAFETY: [offset, first_page) is inside the checked range.
                unsafe {
                    std::ptr::write_bytes(self.at(offset), 0, (first_page - offset) as usize)
                };
                start = last_page;
            }
        }
        // SAFETY: [start, end) is inside the checked range.
        unsafe { std::ptr::write_bytes(self.at(start), 0, (end - start) as usize) };
    }
}

impl Drop for RamNode {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping created in `new`; the node is
        // dropped only after its in-flight I/O drained.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

impl BlockNode for RamNode {
    type Channel = ();

    fn kind(&self) -> &'static str {
        "ram"
    }

    fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn create_channel(&self, _r: &Reactor) {}

    #[inline]
    fn execute(&self, r: &Reactor, _ch: &(), mut io: Io) {
        let (off, len) = (io.offset, io.len as usize);
        match io.op {
            // SAFETY: [off, off+len) is inside the region (checked against
            // the geometry by the graph), and the request's buffer is its
            // own memory, never the region.
            IoOp::Read => unsafe { io.buf.copy_from_ptr(self.at(off), len) },
            // SAFETY: as for reads.
            IoOp::Write => unsafe { io.buf.copy_to_ptr(self.at(off), len) },
            IoOp::WriteZeroes | IoOp::Discard => self.zero(off, io.len),
            IoOp::Flush => {}
        }
        io.complete_later(r, Ok(()));
    }
}
