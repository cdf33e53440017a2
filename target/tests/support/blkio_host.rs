//! The libblkio host of the vhost-user-blk tests: one connection through
//! libblkio's `virtio-blk-vhost-user` driver, its queues, and one
//! shared-memory buffer region that requests read from and write into.
//! Each request runs to completion before the next, so a test can verify
//! what it wrote; a load generator wants `examples/blkio_perf.rs` instead.

use std::mem::MaybeUninit;
use std::path::Path;
use std::time::Duration;

use blkio::{Blkio, Blkioq, Completion, MemoryRegion, ReqFlags};

/// How long one request may take before the host gives up on it: far
/// above any latency of a loaded test machine, short enough that a lost
/// completion fails the test instead of hanging it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A connected libblkio host.
pub struct BlkioHost {
    queues: Vec<Blkioq>,
    region: MemoryRegion,
    region_len: usize,
    // Last: dropping it disconnects.
    blkio: Blkio,
}

impl BlkioHost {
    /// Connects to the vhost-user socket `sock` with `num_queues` queues
    /// and a buffer region of `region_len` bytes, mapped after start as
    /// libblkio users do.
    pub fn connect(sock: &Path, num_queues: i32, region_len: usize) -> BlkioHost {
        Self::open(sock, num_queues, region_len, false)
    }

    /// As [`BlkioHost::connect`], asking libblkio for a read-only device.
    pub fn connect_read_only(sock: &Path, num_queues: i32, region_len: usize) -> BlkioHost {
        Self::open(sock, num_queues, region_len, true)
    }

    fn open(sock: &Path, num_queues: i32, region_len: usize, read_only: bool) -> BlkioHost {
        let mut b = Blkio::new("virtio-blk-vhost-user").expect("blkio driver");
        b.set_str("path", sock.to_str().unwrap()).unwrap();
        if read_only {
            b.set_bool("read-only", true).unwrap();
        }
        b.connect()
            .unwrap_or_else(|e| panic!("libblkio cannot connect to pollux: {e:?}"));
        b.set_i32("num-queues", num_queues).unwrap();
        let out = b
            .start()
            .unwrap_or_else(|e| panic!("libblkio cannot start: {e:?}"));
        let region = b.alloc_mem_region(region_len).unwrap();
        b.map_mem_region(&region).unwrap();
        BlkioHost {
            queues: out.queues,
            region,
            region_len,
            blkio: b,
        }
    }

    /// The driver instance, to read its properties (`capacity`, ...).
    pub fn blkio(&self) -> &Blkio {
        &self.blkio
    }

    /// `len` bytes of the buffer region from `off`.
    pub fn buf(&mut self, off: usize, len: usize) -> &mut [u8] {
        assert!(off + len <= self.region_len);
        // SAFETY: the region is `region_len` bytes of memory mapped by
        // libblkio for us; no request is in flight while the slice is used
        // (every request completes before the next access, and `&mut self`
        // keeps a request from being submitted while it is borrowed).
        unsafe { std::slice::from_raw_parts_mut((self.region.addr + off) as *mut u8, len) }
    }

    /// Runs the one request `submit` queues on queue `q` (given the
    /// region's base address): its result (0 or -errno), or `None` when
    /// libblkio failed or it did not complete within [`REQUEST_TIMEOUT`].
    pub fn try_request(
        &mut self,
        q: usize,
        submit: impl FnOnce(&mut Blkioq, *mut u8),
    ) -> Option<i32> {
        let base = self.region.addr as *mut u8;
        let queue = &mut self.queues[q];
        submit(queue, base);
        let mut c: [MaybeUninit<Completion>; 1] = [MaybeUninit::uninit()];
        let mut timeout = REQUEST_TIMEOUT;
        let n = queue.do_io(&mut c, 1, Some(&mut timeout), None).ok()?;
        // SAFETY: do_io initialised the first `n` completions.
        (n == 1).then(|| unsafe { c[0].assume_init_read() }.ret)
    }

    /// As [`BlkioHost::try_request`], for a test that cannot go on
    /// without the answer.
    pub fn request(&mut self, q: usize, submit: impl FnOnce(&mut Blkioq, *mut u8)) -> i32 {
        self.try_request(q, submit)
            .unwrap_or_else(|| panic!("no completion on queue {q} within {REQUEST_TIMEOUT:?}"))
    }

    /// A write (`write`) or read of `len` bytes at `start` from or into the
    /// region at `off`, as [`BlkioHost::try_request`].
    pub fn try_io(
        &mut self,
        q: usize,
        write: bool,
        start: u64,
        off: usize,
        len: usize,
    ) -> Option<i32> {
        self.try_request(q, |queue, base| {
            let buf = base.wrapping_add(off);
            if write {
                queue.write(start, buf, len, 0, ReqFlags::empty());
            } else {
                queue.read(start, buf, len, 0, ReqFlags::empty());
            }
        })
    }

    /// Writes `len` bytes of the region at `off` to `start`.
    pub fn write(&mut self, q: usize, start: u64, off: usize, len: usize) -> i32 {
        self.request(q, |queue, base| {
            queue.write(start, base.wrapping_add(off), len, 0, ReqFlags::empty())
        })
    }

    /// Reads `len` bytes at `start` into the region at `off`.
    pub fn read(&mut self, q: usize, start: u64, off: usize, len: usize) -> i32 {
        self.request(q, |queue, base| {
            queue.read(start, base.wrapping_add(off), len, 0, ReqFlags::empty())
        })
    }

    /// Flushes the device through queue `q`.
    pub fn flush(&mut self, q: usize) -> i32 {
        self.request(q, |queue, _| queue.flush(0, ReqFlags::empty()))
    }
}
