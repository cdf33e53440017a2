//! I/O requests and their completion.

use std::rc::Rc;

use pollux_poller::Reactor;

use crate::buf::IoBuf;

/// The block operations every node understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IoOp {
    /// Read `len` bytes at `offset` into the buffer.
    Read,
    /// Write the buffer's `len` bytes at `offset`.
    Write,
    /// Make every completed write durable.
    Flush,
    /// Make the range read back as zeroes.
    WriteZeroes,
    /// Deallocate the range (reads back zeroes on the nodes we ship).
    Discard,
}

impl IoOp {
    /// Every op, in a fixed order (index = `as_index`).
    pub const ALL: [IoOp; 5] = [
        IoOp::Read,
        IoOp::Write,
        IoOp::Flush,
        IoOp::WriteZeroes,
        IoOp::Discard,
    ];

    /// Position in `ALL`, for per-op counter arrays.
    #[inline]
    pub fn as_index(self) -> usize {
        self as usize
    }

    /// The name used in metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            IoOp::Read => "read",
            IoOp::Write => "write",
            IoOp::Flush => "flush",
            IoOp::WriteZeroes => "write_zeroes",
            IoOp::Discard => "discard",
        }
    }

    /// True if the op moves data through the buffer.
    pub fn has_data(self) -> bool {
        matches!(self, IoOp::Read | IoOp::Write)
    }
}

/// Why an I/O failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IoError {
    /// The range ends past the end of the device.
    #[error("I/O range {offset}+{len} is beyond the device size {size}")]
    OutOfRange {
        /// Start in bytes.
        offset: u64,
        /// Length in bytes.
        len: u64,
        /// Device size in bytes.
        size: u64,
    },
    /// Offset or length is not a multiple of the block size.
    #[error("I/O range {offset}+{len} is not aligned to the block size {block_size}")]
    Misaligned {
        /// Start in bytes.
        offset: u64,
        /// Length in bytes.
        len: u64,
        /// Block size in bytes.
        block_size: u32,
    },
    /// The buffer length does not match the request length.
    #[error("buffer of {buf} bytes for an I/O of {len} bytes")]
    BufferMismatch {
        /// Buffer length.
        buf: u64,
        /// Request length.
        len: u64,
    },
    /// The node does not support this operation.
    #[error("operation {0} not supported by this node")]
    Unsupported(&'static str),
    /// The root or node named by the request is not in the graph.
    #[error("no such device")]
    NoDevice,
    /// The backend failed; carries the errno.
    #[error("backend error: {}", std::io::Error::from_raw_os_error(*.0))]
    Backend(i32),
    /// The daemon could not take the request (queue full, out of buffers).
    #[error("resources exhausted")]
    Busy,
    /// An NVMe completion status to answer with as it is (error
    /// injection's `nvme_failure`): NVMe/TCP hosts get it, other
    /// front-ends see a failed I/O.
    #[error("NVMe status sct {sct:#x} sc {sc:#04x}")]
    Nvme {
        /// Status code type (3 bits).
        sct: u8,
        /// Status code.
        sc: u8,
    },
}

/// Result of an I/O.
pub type IoResult = Result<(), IoError>;

/// Receives completions, on the reactor that submitted the I/O.
///
/// Front-ends implement this once per queue pair (or job) and tell requests
/// apart by `Io::tag`, so completing an I/O allocates nothing.
pub trait IoSink {
    /// The I/O finished; `io` is handed back with its buffer.
    fn io_done(&self, r: &Reactor, io: Io, result: IoResult);
}

/// Deepest filter stack an I/O may traverse (root to leaf, inclusive). The
/// graph refuses edges that would make a path longer, so every I/O's
/// traversal record fits inline, with no allocation per I/O.
pub const MAX_DEPTH: usize = 8;

/// A block I/O request. It stays on its reactor (it is not `Send`).
pub struct Io {
    /// What to do.
    pub op: IoOp,
    /// Start, in bytes.
    pub offset: u64,
    /// Length, in bytes (0 for flush).
    pub len: u64,
    /// Data for reads and writes.
    pub buf: IoBuf,
    /// The submitter's request identifier.
    pub tag: u64,
    sink: Rc<dyn IoSink>,
    pub(crate) path: crate::pin::Path,
    /// In flight: the raw clock reading taken where the first timed node
    /// met the I/O, for the latency histograms. Once completed: the
    /// latency in nanoseconds (`latency_ns`). One word for both keeps
    /// `Io` at 128 bytes (see `pin::INLINE`).
    pub(crate) time: u64,
    /// The range lock this I/O runs under (`Io::under_range_lock`), 0 for
    /// none: the lock's own writes pass it. 32 bits: it sits in the
    /// padding beside `op`.
    pub(crate) range_lock: crate::range_lock::Token,
}

impl Io {
    /// A request that completes into `sink` with `tag`.
    pub fn new(op: IoOp, offset: u64, len: u64, buf: IoBuf, sink: Rc<dyn IoSink>, tag: u64) -> Io {
        Io {
            op,
            offset,
            len,
            buf,
            tag,
            sink,
            path: crate::pin::Path::default(),
            time: 0,
            range_lock: 0,
        }
    }

    /// Marks the I/O as the locked operation of `lock`: a write under it
    /// passes the lock it holds (any other overlapping write waits). Set
    /// before submitting.
    pub fn under_range_lock(mut self, lock: &crate::range_lock::RangeLock) -> Io {
        self.range_lock = lock.token();
        self
    }

    /// The same, for the locked operation's last I/O: the lock ends when
    /// it completes, before its sink hears of it, whatever became of the
    /// submitter meanwhile.
    pub fn finishing_range_lock(mut self, lock: crate::range_lock::RangeLock) -> Io {
        self.range_lock = lock.into_token() | crate::range_lock::FINISHING;
        self
    }

    /// For a completed, successful I/O: nanoseconds from its submission to
    /// the graph until its completion (what the latency histograms record),
    /// so callers need not read the clock again. 0 otherwise.
    pub fn latency_ns(&self) -> u64 {
        if self.path.in_flight() {
            return 0;
        }
        self.time
    }

    /// Finishes the request now: accounts it on every node it went through
    /// and hands it back to its sink. For completions that are already
    /// asynchronous (a ring's completion queue); synchronous backends use
    /// `complete_later` so a sink that resubmits cannot recurse.
    #[inline]
    pub fn complete(mut self, r: &Reactor, result: IoResult) {
        self.time = self
            .path
            .finish(r, self.op, self.len, result.is_ok(), self.time);
        // Per-I/O tracing: the macro's level check (a static max level, then
        // one relaxed load of the global max level) skips everything else
        // when TRACE is off; built with tracing's `max_level_*` features it
        // compiles to nothing.
        tracing::trace!(
            target: "pollux::io",
            reactor = r.index(),
            op = self.op.name(),
            offset = self.offset,
            len = self.len,
            tag = self.tag,
            result = ?result,
            "I/O completed"
        );
        if self.range_lock & crate::range_lock::FINISHING != 0 {
            crate::range_lock::release(r, self.range_lock & !crate::range_lock::FINISHING);
            self.range_lock = 0;
        }
        let sink = self.sink.clone();
        sink.io_done(r, self, result);
    }

    /// Finishes the request on this reactor's next iteration.
    #[inline]
    pub fn complete_later(self, r: &Reactor, result: IoResult) {
        crate::completion::defer_completion(r, self, result);
    }
}

// `Io` moves by value through every layer (into the node, the deferred
// queue, the sink): at 128 bytes or less the compiler moves it with a few
// vector stores, above that with a `memcpy` call each time.
const _: () = assert!(std::mem::size_of::<Io>() <= 128, "Io grew past 128 bytes");
