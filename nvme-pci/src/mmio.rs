//! BAR0, mapped from the VFIO device file: the controller's registers and
//! doorbells. One of the crate's two unsafe rooms (with `dma`).

use std::io;
use std::os::fd::RawFd;
use std::ptr::NonNull;

/// A mapping of the controller's register BAR.
///
/// Every access is a volatile 32-bit load or store at an offset checked
/// against the mapping, so a bad offset (say a doorbell stride from a
/// hostile CAP) is an error at bring-up, never an access outside the BAR.
pub(crate) struct Bar {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is device memory accessed only with volatile 32-bit
// loads and stores; the controller defines the effect of concurrent accesses
// to distinct registers (each reactor rings only its own doorbells), so the
// handle may move to and be shared by other threads.
unsafe impl Send for Bar {}
// SAFETY: as above.
unsafe impl Sync for Bar {}

impl Bar {
    /// Maps `len` bytes of the device file `fd` at `offset` (the region
    /// offset VFIO reports for BAR0).
    pub fn map(fd: RawFd, offset: u64, len: usize) -> io::Result<Bar> {
        if len < crate::regs::DOORBELL_BASE + 8 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("BAR0 is {len} bytes, too small for an NVMe controller"),
            ));
        }
        let off = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "BAR0 offset overflows"))?;
        // SAFETY: a fresh shared mapping chosen by the kernel (no fixed
        // address), so it cannot alias any existing Rust object.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                off,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(io::Error::last_os_error)?;
        Ok(Bar { ptr, len })
    }

    /// Plain memory standing in for a BAR (the software device of `sim`).
    pub fn anonymous(len: usize) -> io::Result<Bar> {
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
        Ok(Bar { ptr, len })
    }

    /// Size of the mapping in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if a 32-bit register at `off` lies inside the BAR.
    pub fn contains(&self, off: usize) -> bool {
        off % 4 == 0 && off.checked_add(4).is_some_and(|end| end <= self.len)
    }

    fn reg(&self, off: usize) -> *mut u32 {
        assert!(self.contains(off), "register offset {off:#x} outside BAR0");
        // SAFETY: `off + 4 <= len` and 4-aligned (checked), so the result
        // stays inside the mapping.
        unsafe { self.ptr.as_ptr().add(off).cast::<u32>() }
    }

    /// Reads the 32-bit register at `off`.
    pub fn read32(&self, off: usize) -> u32 {
        // SAFETY: `reg` checked the offset; device memory is always mapped
        // readable for the life of `self`.
        unsafe { self.reg(off).read_volatile() }
    }

    /// Writes the 32-bit register at `off`.
    pub fn write32(&self, off: usize, v: u32) {
        // SAFETY: as in `read32`, mapped writable.
        unsafe { self.reg(off).write_volatile(v) }
    }

    /// Reads a 64-bit register as two 32-bit halves, low first: the access
    /// width every controller accepts (64-bit MMIO is optional).
    pub fn read64(&self, off: usize) -> u64 {
        let lo = self.read32(off) as u64;
        let hi = self.read32(off + 4) as u64;
        (hi << 32) | lo
    }

    /// Writes a 64-bit register, low half first.
    pub fn write64(&self, off: usize, v: u64) {
        self.write32(off, v as u32);
        self.write32(off + 4, (v >> 32) as u32);
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        // SAFETY: we own the mapping made in `map` with this length; no
        // reference into it outlives `self`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}
