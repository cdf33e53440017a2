//! `file`: a regular file or a block device, through the reactor's io_uring.
//!
//! Data I/O is readv/writev at the request's offset; flush is fdatasync;
//! write zeroes is fallocate(ZERO_RANGE); discard is fallocate(PUNCH_HOLE).
//! Both zeroing ops keep the promise that the range reads back as zeroes:
//! if the file system refuses a mode (EOPNOTSUPP), the request falls back
//! to the next (punch hole -> zero range -> writing zeroes), and the refusal
//! is remembered for the node's later requests.
//!
//! With O_DIRECT, buffers whose segments are not aligned (address and
//! length) to the device's logical block size are bounced through an
//! aligned buffer rather than refused.

use std::cell::Cell;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use pollux_poller::Reactor;

use crate::buf::{IoBuf, BUF_ALIGN};
use crate::io::{Io, IoOp};
use crate::node::{BlockNode, Geometry};
use crate::uring::{FallocSupport, Kind, Request, Ring, MAX_IOVECS};

/// `BLKGETSIZE64` = `_IOR(0x12, 114, u64)` in the asm-generic ioctl encoding
/// (x86, arm, riscv); libc does not export it.
const BLKGETSIZE64: libc::Ioctl = 0x8008_1272;

/// Alignment O_DIRECT needs when the kernel does not report one (statx
/// STATX_DIOALIGN, Linux 6.1+): the smallest logical block size there is.
const DEFAULT_DIO_ALIGN: u32 = 512;

/// I/O size at which files and block devices perform best: the page size,
/// which is also the physical block size of most current devices.
const OPTIMAL_ALIGN: u32 = 4096;

/// Why a file node could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The operating system refused an operation on the path.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The path is neither a regular file nor a block device.
    #[error("{}: not a regular file or block device", .path.display())]
    NotFileOrDevice {
        /// The path.
        path: PathBuf,
    },
    /// The configured block size is unusable.
    #[error("{}: block size {block_size} is not a power of two between 512 and {BUF_ALIGN}", .path.display())]
    BadBlockSize {
        /// The path.
        path: PathBuf,
        /// The configured block size.
        block_size: u32,
    },
    /// The configured block size is smaller than what the device can address.
    #[error(
        "{}: block size {block_size} is smaller than the device's logical block size {logical}",
        .path.display()
    )]
    BlockSizeTooSmall {
        /// The path.
        path: PathBuf,
        /// The configured block size.
        block_size: u32,
        /// The device's logical block size.
        logical: u32,
    },
    /// The file holds less than one block.
    #[error("{}: size {size} is less than one block of {block_size} bytes", .path.display())]
    TooSmall {
        /// The path.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
        /// The configured block size.
        block_size: u32,
    },
}

/// A file or block device served through io_uring.
pub struct FileNode {
    path: PathBuf,
    file: File,
    direct: bool,
    geometry: Geometry,
    /// Blocks served now: `geometry.block_count` until a rescan or resize
    /// changes it (`BlockNode::resize`). Read by every I/O's own range
    /// check, written only by the control thread at a resize, so the line
    /// stays shared-clean.
    block_count: AtomicU64,
    is_bdev: bool,
    support: Arc<FallocSupport>,
}

/// A reactor's view of a file node: only counters, since the ring and the
/// bounce buffers are per reactor and shared by all file nodes on it.
#[derive(Debug, Default)]
pub struct FileChannel {
    bounced: Cell<u64>,
}

impl FileChannel {
    /// Reads and writes this reactor sent through a bounce buffer.
    pub fn bounced(&self) -> u64 {
        self.bounced.get()
    }
}

impl FileNode {
    /// Opens `path` (a regular file or a block device) read-write, with
    /// O_DIRECT if `direct` and the file system supports it. The device is
    /// `block_size` blocks, the size rounded down to whole blocks.
    pub fn open(path: &Path, direct: bool, block_size: u32) -> Result<FileNode, FileError> {
        let err = |source: io::Error| FileError::Io {
            path: path.to_owned(),
            source,
        };
        if !block_size.is_power_of_two() || !(512..=BUF_ALIGN as u32).contains(&block_size) {
            return Err(FileError::BadBlockSize {
                path: path.to_owned(),
                block_size,
            });
        }
        // Checked before opening: opening a tty or a FIFO has side effects.
        let ft = std::fs::metadata(path).map_err(err)?.file_type();
        let is_bdev = ft.is_block_device();
        if !is_bdev && !ft.is_file() {
            return Err(FileError::NotFileOrDevice {
                path: path.to_owned(),
            });
        }
        let (file, mut direct) = open_file(path, direct).map_err(err)?;
        let (size, logical) = if is_bdev {
            let size = ioctl_u64(&file, BLKGETSIZE64).map_err(err)?;
            let logical = ioctl_int(&file, libc::BLKSSZGET).map_err(err)?;
            (size, logical as u32)
        } else {
            let size = file.metadata().map_err(err)?.len();
            let mut logical = DEFAULT_DIO_ALIGN;
            if direct {
                match dio_align(&file) {
                    Some(0) => {
                        // O_DIRECT opened, but the kernel says this file
                        // cannot do direct I/O (e.g. inline data).
                        tracing::warn!(
                            path = %path.display(),
                            "direct I/O is not supported for this file; using buffered I/O"
                        );
                        direct = false;
                        clear_direct(&file).map_err(err)?;
                    }
                    Some(a) => logical = a.max(DEFAULT_DIO_ALIGN),
                    None => {}
                }
            }
            (size, logical)
        };
        // A buffered file accepts any block size; a block device (even
        // buffered) and direct I/O cannot address less than a logical block.
        if (is_bdev || direct) && block_size < logical {
            return Err(FileError::BlockSizeTooSmall {
                path: path.to_owned(),
                block_size,
                logical,
            });
        }
        let block_count = size / block_size as u64;
        if block_count == 0 {
            return Err(FileError::TooSmall {
                path: path.to_owned(),
                size,
                block_size,
            });
        }
        Ok(FileNode {
            path: path.to_owned(),
            file,
            direct,
            geometry: Geometry {
                block_size,
                block_count,
                required_align: if direct { logical } else { 1 },
                optimal_align: OPTIMAL_ALIGN,
            },
            block_count: AtomicU64::new(block_count),
            is_bdev,
            support: Arc::default(),
        })
    }

    /// True if the file was opened with O_DIRECT (false after a fallback).
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// The path it was opened with.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True if the kernel cannot take `buf` as it is: misaligned for
    /// O_DIRECT, or more segments than one readv/writev accepts.
    fn needs_bounce(&self, buf: &mut IoBuf) -> bool {
        let align = self.geometry.required_align as usize;
        let mut n = 0;
        for seg in buf.segments() {
            n += 1;
            if n > MAX_IOVECS
                || (align > 1 && ((seg.ptr as usize) % align != 0 || seg.len % align != 0))
            {
                return true;
            }
        }
        false
    }
}

/// Opens read-write, with O_DIRECT if asked and allowed; returns whether
/// O_DIRECT is in effect.
fn open_file(path: &Path, direct: bool) -> io::Result<(File, bool)> {
    let mut opts = OpenOptions::new();
    opts.read(true).write(true);
    if direct {
        match opts.clone().custom_flags(libc::O_DIRECT).open(path) {
            Ok(f) => return Ok((f, true)),
            // tmpfs and some overlayfs setups refuse O_DIRECT with EINVAL.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::warn!(
                    path = %path.display(),
                    "the file system does not support O_DIRECT; using buffered I/O"
                );
            }
            Err(e) => return Err(e),
        }
    }
    Ok((opts.open(path)?, false))
}

/// The file's O_DIRECT alignment (offset and memory, whichever is larger):
/// `Some(0)` if it cannot do direct I/O, `None` if the kernel does not say.
fn dio_align(file: &File) -> Option<u32> {
    // SAFETY: statx is plain integers (and padding), for which all-zero
    // bytes are a valid value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: the path is a valid NUL-terminated string, AT_EMPTY_PATH makes
    // the call stat the descriptor itself, and `stx` is writable.
    let rc = unsafe {
        libc::statx(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &mut stx,
        )
    };
    if rc != 0 || stx.stx_mask & libc::STATX_DIOALIGN == 0 {
        return None;
    }
    if stx.stx_dio_offset_align == 0 {
        return Some(0);
    }
    Some(stx.stx_dio_offset_align.max(stx.stx_dio_mem_align))
}

fn clear_direct(file: &File) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL on a descriptor we own have no memory effects.
    let rc = unsafe {
        let fl = libc::fcntl(file.as_raw_fd(), libc::F_GETFL);
        if fl < 0 {
            fl
        } else {
            libc::fcntl(file.as_raw_fd(), libc::F_SETFL, fl & !libc::O_DIRECT)
        }
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn ioctl_u64(file: &File, req: libc::Ioctl) -> io::Result<u64> {
    let mut v: u64 = 0;
    // SAFETY: `req` writes one u64 through the pointer, which is valid.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), req, &mut v) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v)
}

fn ioctl_int(file: &File, req: libc::Ioctl) -> io::Result<libc::c_int> {
    let mut v: libc::c_int = 0;
    // SAFETY: `req` writes one int through the pointer, which is valid.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), req, &mut v) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v)
}

impl BlockNode for FileNode {
    type Channel = FileChannel;

    fn kind(&self) -> &'static str {
        "file"
    }

    fn geometry(&self) -> Geometry {
        Geometry {
            block_count: self.block_count.load(Ordering::Relaxed),
            ..self.geometry
        }
    }

    fn resize(&self, block_count: u64) -> bool {
        // Relaxed: the graph publishes the new size after this store (a
        // Release swap of the snapshot pointer, which reactors load with
        // Acquire), so an I/O routed by the new snapshot sees it.
        self.block_count.store(block_count, Ordering::Relaxed);
        true
    }

    fn backend_size(&self) -> Option<io::Result<u64>> {
        Some(if self.is_bdev {
            ioctl_u64(&self.file, BLKGETSIZE64)
        } else {
            self.file.metadata().map(|m| m.len())
        })
    }

    fn create_channel(&self, _r: &Reactor) -> FileChannel {
        FileChannel::default()
    }

    fn execute(&self, r: &Reactor, ch: &FileChannel, mut io: Io) {
        // The graph checked the range already, but a request past the end
        // would silently extend the file, so this node checks for itself.
        if let Err(e) = self.geometry().check(&io) {
            io.complete_later(r, Err(e));
            return;
        }
        let ring = Ring::get(r);
        let kind = match io.op {
            IoOp::Read | IoOp::Write => {
                let bounce = if self.needs_bounce(&mut io.buf) {
                    ch.bounced.set(ch.bounced.get() + 1);
                    let mut b = ring.take_bounce(io.len as usize);
                    if io.op == IoOp::Write {
                        io.buf
                            .copy_to_slice(&mut b.as_mut_slice()[..io.len as usize]);
                    }
                    Some(b)
                } else {
                    None
                };
                Kind::Rw { bounce }
            }
            IoOp::Flush => Kind::Fsync,
            IoOp::WriteZeroes => Kind::zeroing(false, self.support.clone()),
            IoOp::Discard => Kind::zeroing(true, self.support.clone()),
        };
        ring.submit(r, Request::new(io, self.file.as_raw_fd(), kind));
    }

    fn close(&self) {
        // Writes acknowledged before a flush are already durable; this makes
        // the rest durable too before the descriptor goes away.
        if let Err(e) = self.file.sync_data() {
            tracing::error!(path = %self.path.display(), "fdatasync at close failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::rc::Rc;
    use std::sync::mpsc;
    use std::time::Duration;

    use pollux_poller::{Handle, IdlePolicy, Runtime, RuntimeConfig};

    use crate::buf::{AlignedBuf, RawSegment};
    use crate::io::{IoError, IoResult, IoSink};

    const MIB: u64 = 1 << 20;

    fn runtime() -> Runtime {
        Runtime::start(RuntimeConfig::new(
            vec![0],
            IdlePolicy::Adaptive {
                idle_after: Duration::from_micros(100),
            },
        ))
        .unwrap()
    }

    /// A real (non-tmpfs) file system, where O_DIRECT works.
    fn disk_dir() -> tempfile::TempDir {
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../build");
        std::fs::create_dir_all(&base).unwrap();
        tempfile::tempdir_in(base).unwrap()
    }

    /// tmpfs when the machine has one, where O_DIRECT may fall back and
    /// fallocate(ZERO_RANGE) is refused.
    fn shm_dir() -> tempfile::TempDir {
        match tempfile::tempdir_in("/dev/shm") {
            Ok(d) => d,
            Err(_) => tempfile::tempdir().unwrap(),
        }
    }

    fn make_file(dir: &Path, size: u64) -> PathBuf {
        let p = dir.join("disk.img");
        File::create(&p).unwrap().set_len(size).unwrap();
        p
    }

    type Done = (u64, IoResult, Vec<u8>);

    struct Tx(mpsc::Sender<Done>);

    impl IoSink for Tx {
        fn io_done(&self, _r: &Reactor, mut io: Io, result: IoResult) {
            let mut data = vec![0u8; io.buf.len()];
            io.buf.copy_to_slice(&mut data);
            let _ = self.0.send((io.tag, result, data));
        }
    }

    /// Where a test request's data lives.
    enum Data {
        None,
        /// An owned buffer with this content.
        Owned(Vec<u8>),
        /// Raw segments (address, length) into memory the test keeps alive.
        Raw(Vec<(usize, usize)>),
    }

    struct Harness {
        rt: Runtime,
        node: Arc<FileNode>,
        tx: mpsc::Sender<Done>,
        rx: mpsc::Receiver<Done>,
    }

    impl Harness {
        fn new(node: FileNode) -> Harness {
            let (tx, rx) = mpsc::channel();
            Harness {
                rt: runtime(),
                node: Arc::new(node),
                tx,
                rx,
            }
        }

        fn handle(&self) -> &Handle {
            self.rt.handle()
        }

        /// Executes a batch of requests from one reactor message (so they
        /// are in flight together); returns how many were bounced.
        fn submit(&self, reqs: Vec<(IoOp, u64, u64, Data)>) -> u64 {
            let node = self.node.clone();
            let tx = self.tx.clone();
            self.handle().call(0, move |r| {
                let sink: Rc<dyn IoSink> = Rc::new(Tx(tx));
                let ch = node.create_channel(r);
                for (tag, (op, offset, len, data)) in reqs.into_iter().enumerate() {
                    let buf = match data {
                        Data::None => IoBuf::None,
                        Data::Owned(v) => {
                            let mut b = AlignedBuf::zeroed(v.len());
                            b.as_mut_slice().copy_from_slice(&v);
                            IoBuf::Owned(b)
                        }
                        Data::Raw(segs) => {
                            let segments = segs
                                .iter()
                                .map(|&(ptr, len)| RawSegment {
                                    ptr: ptr as *mut u8,
                                    len,
                                })
                                .collect();
                            // SAFETY: the test keeps the backing memory
                            // alive and untouched until the completion, and
                            // the segments do not overlap.
                            unsafe { IoBuf::raw(segments, Rc::new(())) }
                        }
                    };
                    let io = Io::new(op, offset, len, buf, sink.clone(), tag as u64);
                    node.execute(r, &ch, io);
                }
                ch.bounced()
            })
        }

        fn wait(&self, n: usize) -> Vec<Done> {
            let mut v: Vec<Done> = (0..n)
                .map(|_| {
                    self.rx
                        .recv_timeout(Duration::from_secs(20))
                        .expect("I/O did not complete")
                })
                .collect();
            v.sort_by_key(|d| d.0);
            v
        }

        fn one(&self, op: IoOp, offset: u64, len: u64, data: Data) -> (IoResult, Vec<u8>) {
            self.submit(vec![(op, offset, len, data)]);
            let (_, res, data) = self.wait(1).pop().unwrap();
            (res, data)
        }

        fn write(&self, offset: u64, data: Vec<u8>) {
            let len = data.len() as u64;
            assert_eq!(
                self.one(IoOp::Write, offset, len, Data::Owned(data)).0,
                Ok(())
            );
        }

        fn read(&self, offset: u64, len: u64) -> Vec<u8> {
            let (res, data) = self.one(IoOp::Read, offset, len, Data::Owned(vec![0; len as usize]));
            assert_eq!(res, Ok(()));
            data
        }
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn o_direct_is_used_on_a_real_file_system() {
        let dir = disk_dir();
        let node = FileNode::open(&make_file(dir.path(), MIB), true, 512).unwrap();
        assert!(
            node.is_direct(),
            "O_DIRECT fell back under {:?}",
            dir.path()
        );
        assert!(node.geometry().required_align >= 512);
        let node = FileNode::open(&make_file(dir.path(), MIB), false, 512).unwrap();
        assert!(!node.is_direct());
        assert_eq!(node.geometry().required_align, 1);
    }

    #[test]
    fn geometry_and_open_errors() {
        let dir = shm_dir();
        let node = FileNode::open(&make_file(dir.path(), MIB + 1000), false, 4096).unwrap();
        let g = node.geometry();
        assert_eq!((g.block_size, g.block_count), (4096, 256));
        assert_eq!(node.kind(), "file");

        let p = make_file(dir.path(), 100);
        let e = FileNode::open(&p, false, 512).err().unwrap();
        assert!(matches!(e, FileError::TooSmall { .. }), "{e}");
        assert!(e.to_string().contains("disk.img"), "{e}");
        let e = FileNode::open(&p, false, 1000).err().unwrap();
        assert!(matches!(e, FileError::BadBlockSize { .. }), "{e}");
        let e = FileNode::open(dir.path(), false, 512).err().unwrap();
        assert!(matches!(e, FileError::NotFileOrDevice { .. }), "{e}");
        let e = FileNode::open(&dir.path().join("missing"), false, 512)
            .err()
            .unwrap();
        assert!(matches!(e, FileError::Io { .. }), "{e}");
    }

    fn owned_roundtrip(dir: &Path, direct: bool) {
        let h = Harness::new(FileNode::open(&make_file(dir, 4 * MIB), direct, 512).unwrap());
        let a = pattern(64 << 10, 1);
        let b = pattern(512, 2);
        h.write(0, a.clone());
        h.write(3 * MIB, b.clone());
        assert_eq!(h.read(0, a.len() as u64), a);
        assert_eq!(h.read(3 * MIB, 512), b);
        // Never written: a hole.
        assert_eq!(h.read(MIB, 4096), vec![0; 4096]);
        assert_eq!(h.one(IoOp::Flush, 0, 0, Data::None).0, Ok(()));
        h.node.close();
    }

    #[test]
    fn owned_buffers_round_trip_direct() {
        owned_roundtrip(disk_dir().path(), true);
    }

    #[test]
    fn owned_buffers_round_trip_buffered() {
        owned_roundtrip(shm_dir().path(), false);
    }

    /// Unaligned scatter lists: with O_DIRECT they go through a bounce
    /// buffer both ways, and the data must land where it belongs.
    fn scatter_roundtrip(dir: &Path, direct: bool) {
        let h = Harness::new(FileNode::open(&make_file(dir, MIB), direct, 512).unwrap());
        let direct = h.node.is_direct();
        let mut mem = vec![0u8; 16 << 10];
        let base = mem.as_mut_ptr() as usize;
        // 8 KiB in three segments at odd addresses and odd lengths.
        let layout = [(1usize, 1000usize), (2001, 3096), (7003, 4096)];
        let segs = |base: usize| layout.iter().map(|&(o, l)| (base + o, l)).collect();
        let data = pattern(8192, 7);
        let mut at = 0;
        for &(o, l) in &layout {
            mem[o..o + l].copy_from_slice(&data[at..at + l]);
            at += l;
        }
        let bounced = h.submit(vec![(IoOp::Write, 4096, 8192, Data::Raw(segs(base)))]);
        assert_eq!(h.wait(1)[0].1, Ok(()));
        assert_eq!(bounced, u64::from(direct), "bounce only with O_DIRECT");
        assert_eq!(h.read(4096, 8192), data);

        let mut back = vec![0u8; 16 << 10];
        let bbase = back.as_mut_ptr() as usize;
        let bounced = h.submit(vec![(IoOp::Read, 4096, 8192, Data::Raw(segs(bbase)))]);
        assert_eq!(h.wait(1)[0].1, Ok(()));
        assert_eq!(bounced, u64::from(direct));
        let mut got = Vec::new();
        for &(o, l) in &layout {
            got.extend_from_slice(&back[o..o + l]);
        }
        assert_eq!(got, data);
        // Memory around the segments is untouched.
        assert!(back[..1].iter().all(|&b| b == 0));
        assert!(back[1000 + 1..2001].iter().all(|&b| b == 0));
        drop(mem);
    }

    #[test]
    fn unaligned_scatter_list_direct_bounces() {
        let dir = disk_dir();
        scatter_roundtrip(dir.path(), true);
    }

    #[test]
    fn unaligned_scatter_list_buffered() {
        scatter_roundtrip(shm_dir().path(), false);
    }

    /// Asking for O_DIRECT on tmpfs: either it works (Linux 6.6+) and the
    /// bounce path runs, or the node fell back to buffered I/O.
    #[test]
    fn unaligned_scatter_list_direct_on_tmpfs() {
        scatter_roundtrip(shm_dir().path(), true);
    }

    /// More segments than one writev takes are bounced too.
    #[test]
    fn huge_scatter_list_bounces() {
        let dir = shm_dir();
        let h = Harness::new(FileNode::open(&make_file(dir.path(), MIB), false, 512).unwrap());
        let n = MAX_IOVECS + 100;
        let mut mem = pattern(n * 512, 3);
        let base = mem.as_mut_ptr() as usize;
        let segs = (0..n).map(|i| (base + i * 512, 512)).collect();
        let bounced = h.submit(vec![(IoOp::Write, 0, (n * 512) as u64, Data::Raw(segs))]);
        assert_eq!(h.wait(1)[0].1, Ok(()));
        assert_eq!(bounced, 1);
        assert_eq!(h.read(0, (n * 512) as u64), mem);
        mem.clear();
    }

    fn zeroing(dir: &Path, direct: bool) {
        let h = Harness::new(FileNode::open(&make_file(dir, 8 * MIB), direct, 4096).unwrap());
        let data = pattern(6 * MIB as usize, 9);
        h.write(0, data.clone());
        // Write zeroes spanning more than one zero-fill chunk (the fallback).
        let (res, _) = h.one(IoOp::WriteZeroes, 4096, 3 * MIB, Data::None);
        assert_eq!(res, Ok(()));
        let (res, _) = h.one(IoOp::Discard, 4 * MIB, 8192, Data::None);
        assert_eq!(res, Ok(()));
        let got = h.read(0, 6 * MIB);
        let mut want = data;
        want[4096..4096 + 3 * MIB as usize].fill(0);
        want[4 * MIB as usize..4 * MIB as usize + 8192].fill(0);
        assert!(got == want, "zeroed ranges do not read back as expected");
        // Again, now that the refused modes are remembered.
        h.write(0, pattern(8192, 4));
        assert_eq!(h.one(IoOp::WriteZeroes, 0, 8192, Data::None).0, Ok(()));
        assert_eq!(h.read(0, 8192), vec![0; 8192]);
        assert_eq!(h.one(IoOp::Flush, 0, 0, Data::None).0, Ok(()));
        eprintln!(
            "{}: direct={} refused (punch hole, zero range) = {:?}",
            dir.display(),
            h.node.is_direct(),
            h.node.support.refused()
        );
    }

    #[test]
    fn write_zeroes_and_discard_read_back_zeroes_direct() {
        zeroing(disk_dir().path(), true);
    }

    /// tmpfs refuses FALLOC_FL_ZERO_RANGE: write zeroes falls back to writing.
    #[test]
    fn write_zeroes_and_discard_read_back_zeroes_tmpfs() {
        zeroing(shm_dir().path(), false);
    }

    #[test]
    fn out_of_range_and_misaligned_fail() {
        let dir = shm_dir();
        let h = Harness::new(FileNode::open(&make_file(dir.path(), MIB), false, 512).unwrap());
        let (res, _) = h.one(IoOp::Read, MIB, 512, Data::Owned(vec![0; 512]));
        assert!(matches!(res, Err(IoError::OutOfRange { .. })), "{res:?}");
        let (res, _) = h.one(IoOp::Write, MIB - 512, 1024, Data::Owned(vec![0; 1024]));
        assert!(matches!(res, Err(IoError::OutOfRange { .. })), "{res:?}");
        let (res, _) = h.one(IoOp::WriteZeroes, u64::MAX - 511, 512, Data::None);
        assert!(matches!(res, Err(IoError::OutOfRange { .. })), "{res:?}");
        let (res, _) = h.one(IoOp::Read, 100, 512, Data::Owned(vec![0; 512]));
        assert!(matches!(res, Err(IoError::Misaligned { .. })), "{res:?}");
        // The file did not grow.
        assert_eq!(std::fs::metadata(h.node.path()).unwrap().len(), MIB);
    }

    /// Far more requests than the ring holds, all in flight at once: the
    /// backlog must take the excess and lose nothing.
    #[test]
    fn more_requests_than_ring_slots() {
        let dir = disk_dir();
        let h = Harness::new(FileNode::open(&make_file(dir.path(), 8 * MIB), true, 4096).unwrap());
        let n = 2000u64;
        let reqs = (0..n)
            .map(|i| {
                let mut d = vec![0u8; 4096];
                d[..8].copy_from_slice(&i.to_le_bytes());
                (IoOp::Write, i * 4096, 4096, Data::Owned(d))
            })
            .collect();
        h.submit(reqs);
        let done = h.wait(n as usize);
        assert!(done.iter().all(|d| d.1.is_ok()));
        let reqs = (0..n)
            .map(|i| (IoOp::Read, i * 4096, 4096, Data::Owned(vec![0; 4096])))
            .collect();
        h.submit(reqs);
        for (tag, res, data) in h.wait(n as usize) {
            assert_eq!(res, Ok(()));
            assert_eq!(data[..8], tag.to_le_bytes());
        }
    }

    /// If the file shrinks under the node, reads past the new end return
    /// zeroes for the missing part instead of failing or hanging.
    #[test]
    fn short_read_at_eof_is_zero_filled() {
        for (dir, direct) in [(disk_dir(), true), (shm_dir(), false)] {
            let p = make_file(dir.path(), MIB);
            let h = Harness::new(FileNode::open(&p, direct, 4096).unwrap());
            h.write(0, pattern(16384, 5));
            OpenOptions::new()
                .write(true)
                .open(&p)
                .unwrap()
                .set_len(4096)
                .unwrap();
            let got = h.read(0, 16384);
            assert_eq!(got[..4096], pattern(16384, 5)[..4096]);
            assert!(got[4096..].iter().all(|&b| b == 0));
        }
    }

    /// `cachestat(2)` (Linux 6.5): the page-cache state of a file range.
    /// The syscall number is the same on every architecture (the unified
    /// syscall table), and libc exports neither it nor the structs.
    const SYS_CACHESTAT: libc::c_long = 451;

    #[repr(C)]
    struct CachestatRange {
        off: u64,
        len: u64,
    }

    #[repr(C)]
    #[derive(Debug, Default)]
    struct Cachestat {
        nr_cache: u64,
        nr_dirty: u64,
        nr_writeback: u64,
        nr_evicted: u64,
        nr_recently_evicted: u64,
    }

    /// Page-cache state of the whole file behind `file`.
    fn cachestat(file: &File) -> io::Result<Cachestat> {
        // len 0: from `off` to the end of the file.
        let range = CachestatRange { off: 0, len: 0 };
        let mut st = Cachestat::default();
        // SAFETY: both pointers are to live, properly laid out repr(C)
        // structs for the duration of the call; the kernel only reads
        // `range` and writes `st`.
        let rc = unsafe {
            libc::syscall(
                SYS_CACHESTAT,
                file.as_raw_fd(),
                &range as *const CachestatRange,
                &mut st as *mut Cachestat,
                0u32,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(st)
    }

    /// What flush promises: once it completes, every write completed before
    /// it is on the device, i.e. none of the file's pages is dirty or under
    /// writeback any more. Checked on the page cache itself (cachestat, on a
    /// separate descriptor), not by timing the fdatasync. The buffered
    /// writes must have left dirty pages for the check to mean anything; if
    /// the kernel wrote them all back first, the data is written again.
    /// (That a completion wakes a sleeping reactor, which this test's timing
    /// stood for, is `uring`'s `completion_wakes_a_sleeping_reactor`, on a
    /// pipe whose readiness the test controls rather than a disk.)
    #[test]
    fn flush_completes_only_once_prior_writes_are_written_back() {
        /// Rewrites before giving up on catching the pages dirty: the
        /// kernel's background writeback starts after 30 s or when dirty
        /// memory passes a tenth of RAM, neither of which 32 MiB just
        /// written normally reaches.
        const ATTEMPTS: u8 = 5;
        let dir = disk_dir();
        let p = make_file(dir.path(), 64 * MIB);
        let h = Harness::new(FileNode::open(&p, false, 4096).unwrap());
        let probe = File::open(&p).unwrap();
        let mut dirty_before = 0;
        let mut seed = 0;
        for attempt in 0..ATTEMPTS {
            seed = attempt * 4;
            for i in 0..4 {
                h.write(i * 8 * MIB, pattern(8 * MIB as usize, seed + i as u8));
            }
            dirty_before = cachestat(&probe).expect("cachestat(2)").nr_dirty;
            if dirty_before > 0 {
                break;
            }
        }
        assert!(
            dirty_before > 0,
            "the kernel wrote back 32 MiB before the flush {ATTEMPTS} times in a row"
        );
        assert_eq!(h.one(IoOp::Flush, 0, 0, Data::None).0, Ok(()));
        let after = cachestat(&probe).unwrap();
        eprintln!("dirty pages before the flush: {dirty_before}, after: {after:?}");
        assert_eq!(
            (after.nr_dirty, after.nr_writeback),
            (0, 0),
            "flush completed with pages still dirty or under writeback"
        );
        // And what the file holds is the last data written, through another
        // descriptor.
        let mut got = vec![0u8; 8 * MIB as usize];
        for i in 0..4u64 {
            std::os::unix::fs::FileExt::read_exact_at(&probe, &mut got, i * 8 * MIB).unwrap();
            assert!(
                got == pattern(8 * MIB as usize, seed + i as u8),
                "the file does not hold the data written before the flush at {i} * 8 MiB"
            );
        }
    }

    /// Through the graph: a root on a file node, I/O submitted to the
    /// published snapshot, then removal (which drains and closes the node).
    #[test]
    fn end_to_end_through_the_graph() {
        let dir = disk_dir();
        let p = make_file(dir.path(), 4 * MIB);
        let rt = runtime();
        let graph = crate::Graph::new(rt.handle());
        graph
            .add_node("f0", FileNode::open(&p, true, 4096).unwrap(), &[])
            .unwrap();
        let root = graph.add_root("disk", "f0").unwrap();
        let (tx, rx) = mpsc::channel::<Done>();
        let submit = |op: IoOp, offset: u64, data: Option<Vec<u8>>, len: u64| {
            let (g, tx) = (graph.clone(), tx.clone());
            rt.handle().call(0, move |r| {
                let buf = match data {
                    Some(v) => {
                        let mut b = AlignedBuf::zeroed(v.len());
                        b.as_mut_slice().copy_from_slice(&v);
                        IoBuf::Owned(b)
                    }
                    None if op == IoOp::Read => IoBuf::Owned(AlignedBuf::zeroed(len as usize)),
                    None => IoBuf::None,
                };
                let io = Io::new(op, offset, len, buf, Rc::new(Tx(tx)), 1);
                g.snapshot(r).submit(r, root, io);
            });
            rx.recv_timeout(Duration::from_secs(20)).unwrap()
        };
        let data = pattern(3 * 4096, 8);
        assert_eq!(
            submit(IoOp::Write, 8192, Some(data.clone()), 3 * 4096).1,
            Ok(())
        );
        let (_, res, got) = submit(IoOp::Read, 8192, None, 3 * 4096);
        assert_eq!((res, got), (Ok(()), data.clone()));
        assert_eq!(submit(IoOp::Flush, 0, None, 0).1, Ok(()));
        let (_, res, _) = submit(IoOp::Read, 4 * MIB, None, 4096);
        assert!(matches!(res, Err(IoError::OutOfRange { .. })), "{res:?}");
        graph.remove_root("disk").unwrap();
        graph.remove_node("f0").unwrap();
        assert_eq!(
            std::fs::read(&p).unwrap()[8192..8192 + data.len()],
            data[..]
        );
    }

    #[test]
    fn data_survives_reopen_after_close() {
        let dir = disk_dir();
        let p = make_file(dir.path(), MIB);
        let h = Harness::new(FileNode::open(&p, true, 512).unwrap());
        h.write(8192, pattern(4096, 6));
        h.node.close();
        drop(h);
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(bytes[8192..12288], pattern(4096, 6)[..]);
    }
}
