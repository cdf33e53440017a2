//! Data buffers carried by I/O requests.

use std::alloc::{self, Layout};
use std::any::Any;
use std::ptr::NonNull;
use std::rc::Rc;

/// Alignment of owned buffers: the largest logical block size we support, and
/// the page size, so owned buffers are always valid for O_DIRECT.
pub const BUF_ALIGN: usize = 4096;

/// A heap buffer aligned to `BUF_ALIGN`, zero-initialised.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    /// True while every byte is known to be zero: set at allocation and by
    /// `IoBuf::fill_zero`, cleared by every way to write (`as_mut_slice`,
    /// `IoBuf::segments`). A null read into such a buffer (the perf tool's,
    /// an NVMe/TCP read buffer reused from its cache) skips its 4 KiB
    /// memset, which also evicted the reactor's working set from L1.
    zero: bool,
}

// SAFETY: AlignedBuf uniquely owns its allocation, like a Vec<u8>.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    /// A zeroed buffer of `len` bytes (`len` may be 0).
    pub fn zeroed(len: usize) -> Self {
        if len == 0 {
            return AlignedBuf {
                ptr: NonNull::dangling(),
                len: 0,
                zero: true,
            };
        }
        let layout = Layout::from_size_align(len, BUF_ALIGN).expect("buffer size overflows");
        // SAFETY: `layout` has a non-zero size.
        let p = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(p).unwrap_or_else(|| alloc::handle_alloc_error(layout));
        AlignedBuf {
            ptr,
            len,
            zero: true,
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a zero-length buffer.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` is valid for `len` initialised bytes (zeroed at
        // allocation) or dangling with len 0, which is allowed.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// True if every byte is known to be zero (see the field).
    pub fn is_known_zero(&self) -> bool {
        self.zero
    }

    /// The bytes, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        self.zero = false;
        // SAFETY: as in `as_slice`, and `&mut self` gives exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.len != 0 {
            // SAFETY: allocated in `zeroed` with exactly this layout.
            unsafe {
                alloc::dealloc(
                    self.ptr.as_ptr(),
                    Layout::from_size_align_unchecked(self.len, BUF_ALIGN),
                )
            }
        }
    }
}

/// One segment of memory the caller keeps valid for the whole I/O.
#[derive(Clone, Copy, Debug)]
pub struct RawSegment {
    /// Start address.
    pub ptr: *mut u8,
    /// Length in bytes.
    pub len: usize,
}

/// Where an I/O's data lives.
pub enum IoBuf {
    /// No data (flush, discard, write zeroes).
    None,
    /// A buffer owned by the request (NVMe/TCP, the perf tool, tests).
    Owned(AlignedBuf),
    /// Scatter-gather memory owned by someone else, such as guest RAM mapped
    /// by a vhost-user front-end. `keep` holds that memory mapped until the
    /// I/O completes.
    Raw {
        /// The segments, in order.
        segments: Vec<RawSegment>,
        /// Keeps the memory behind `segments` alive.
        keep: Rc<dyn Any>,
    },
}

impl IoBuf {
    /// Memory owned elsewhere.
    ///
    /// # Safety
    /// Every segment must be valid for reads and writes of its length until
    /// the I/O completes, must not overlap another segment, and must not be
    /// accessed through Rust references while the I/O runs. `keep` must keep
    /// the memory mapped at least that long.
    pub unsafe fn raw(segments: Vec<RawSegment>, keep: Rc<dyn Any>) -> Self {
        IoBuf::Raw { segments, keep }
    }

    /// Total length in bytes.
    pub fn len(&self) -> usize {
        match self {
            IoBuf::None => 0,
            IoBuf::Owned(b) => b.len(),
            IoBuf::Raw { segments, .. } => segments.iter().map(|s| s.len).sum(),
        }
    }

    /// True if there is no data.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The segments as raw pointers (for copies and iovecs). The caller
    /// may write through them, so an owned buffer stops being known zero.
    pub fn segments(&mut self) -> SegmentsIter<'_> {
        match self {
            IoBuf::None => SegmentsIter::One(None),
            IoBuf::Owned(b) => SegmentsIter::One(Some(RawSegment {
                ptr: b.as_mut_slice().as_mut_ptr(),
                len: b.len(),
            })),
            IoBuf::Raw { segments, .. } => SegmentsIter::Many(segments.iter()),
        }
    }

    /// Copies `src` into the buffer from its start. `src` may be shorter.
    pub fn copy_from_slice(&mut self, src: &[u8]) {
        // SAFETY: a shared slice is readable for its length, and cannot
        // alias this buffer: we hold it mutably, and `IoBuf::raw` forbids
        // references into raw segments while the I/O runs.
        unsafe { self.copy_from_ptr(src.as_ptr(), src.len()) }
    }

    /// Copies the buffer's first `dst.len()` bytes into `dst`.
    pub fn copy_to_slice(&mut self, dst: &mut [u8]) {
        // SAFETY: as in `copy_from_slice`, for a writable slice.
        unsafe { self.copy_to_ptr(dst.as_mut_ptr(), dst.len()) }
    }

    /// Copies `len` bytes from `src` into the buffer from its start.
    ///
    /// # Safety
    /// `src` must be readable for `len` bytes and must not overlap this
    /// buffer's memory.
    pub unsafe fn copy_from_ptr(&mut self, src: *const u8, len: usize) {
        self.for_each_prefix_segment(len, |seg, at, n| {
            // SAFETY: `seg` is valid for writes of `n` bytes (IoBuf
            // invariant, `n` is at most the segment's length), the caller
            // guarantees `src` is readable for `len >= at + n` bytes and
            // does not overlap the buffer.
            unsafe { std::ptr::copy_nonoverlapping(src.add(at), seg, n) };
        });
    }

    /// Copies the buffer's first `len` bytes to `dst`.
    ///
    /// # Safety
    /// `dst` must be writable for `len` bytes and must not overlap this
    /// buffer's memory.
    pub unsafe fn copy_to_ptr(&mut self, dst: *mut u8, len: usize) {
        self.for_each_prefix_segment(len, |seg, at, n| {
            // SAFETY: `seg` is readable for `n` bytes (IoBuf invariant, `n`
            // is at most the segment's length); the caller guarantees `dst`
            // is writable for `len >= at + n` bytes and does not overlap the
            // buffer.
            unsafe { std::ptr::copy_nonoverlapping(seg, dst.add(at), n) };
        });
    }

    /// Walks the segments that hold the buffer's first `len` bytes (all of
    /// them if the buffer is shorter), handing `f` each one's start, the
    /// offset of that start from the buffer's, and how many of its bytes
    /// fall within `len`: the one walk both copy directions share.
    #[inline]
    fn for_each_prefix_segment(&mut self, len: usize, mut f: impl FnMut(*mut u8, usize, usize)) {
        let mut done = 0;
        for seg in self.segments() {
            if done == len {
                break;
            }
            let n = seg.len.min(len - done);
            f(seg.ptr, done, n);
            done += n;
        }
    }

    /// Zeroes the whole buffer; an owned buffer already known to be zero
    /// is not touched.
    pub fn fill_zero(&mut self) {
        if let IoBuf::Owned(b) = self {
            if b.zero {
                return;
            }
        }
        for seg in self.segments() {
            // SAFETY: `seg` is valid for writes of `seg.len` bytes.
            unsafe { std::ptr::write_bytes(seg.ptr, 0, seg.len) };
        }
        if let IoBuf::Owned(b) = self {
            b.zero = true;
        }
    }
}

/// Iterator over an `IoBuf`'s segments.
pub enum SegmentsIter<'a> {
    /// Zero or one segment.
    One(Option<RawSegment>),
    /// A scatter-gather list.
    Many(std::slice::Iter<'a, RawSegment>),
}

impl Iterator for SegmentsIter<'_> {
    type Item = RawSegment;
    fn next(&mut self) -> Option<RawSegment> {
        match self {
            SegmentsIter::One(s) => s.take(),
            SegmentsIter::Many(it) => it.next().copied(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `fill_zero` may skip a buffer only while nothing could have written
    /// it: every mutable way in must clear the mark.
    #[test]
    fn known_zero_is_cleared_by_every_write_path() {
        let mut b = IoBuf::Owned(AlignedBuf::zeroed(4096));
        b.fill_zero();
        b.copy_from_slice(&[7; 16]);
        b.fill_zero();
        let IoBuf::Owned(a) = &mut b else { unreachable!() };
        assert!(a.is_known_zero());
        assert!(a.as_slice().iter().all(|x| *x == 0), "copy_from_slice");

        a.as_mut_slice()[100] = 1;
        assert!(!a.is_known_zero());
        b.fill_zero();
        let IoBuf::Owned(a) = &mut b else { unreachable!() };
        assert!(a.as_slice().iter().all(|x| *x == 0), "as_mut_slice");

        for seg in b.segments() {
            // SAFETY: the segment is the buffer's own 4096 bytes.
            unsafe { *seg.ptr.add(4095) = 3 };
        }
        b.fill_zero();
        let IoBuf::Owned(a) = &b else { unreachable!() };
        assert!(a.as_slice().iter().all(|x| *x == 0), "segments");
    }
}
