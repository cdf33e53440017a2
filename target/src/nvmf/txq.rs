//! A connection's transmit queue: PDU headers and small payloads copied
//! into one byte buffer, read data referenced in its own buffer, all sent
//! with one `writev` per flush.
//!
//! A 4 KiB read used to be copied into the byte buffer behind its C2HData
//! header; SPDK's target hands the kernel an iovec of the data buffer
//! instead, and so does this queue: the data buffer stays queued until the
//! socket took all of it, then goes back to its owner.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};

use pollux_graph::AlignedBuf;

/// Most iovecs one `writev` gets: Linux's UIO_MAXIOV is 1024; 64 covers a
/// pass of QD 32 reads (header, data) and keeps the array on the stack.
const MAX_IOV: usize = 64;

enum Seg {
    /// `bytes[start..start + len]`.
    Bytes { start: usize, len: usize },
    /// The first `len` bytes of a data buffer.
    Buf { buf: AlignedBuf, len: usize },
}

/// Queued output, in order.
#[derive(Default)]
pub(super) struct TxQueue {
    bytes: Vec<u8>,
    segs: VecDeque<Seg>,
    /// Bytes of the front segment already written.
    front_off: usize,
    /// Bytes queued and not yet written.
    pending: usize,
}

impl TxQueue {
    /// Bytes queued and not yet written.
    pub(super) fn pending(&self) -> usize {
        self.pending
    }

    /// True if nothing waits to be written.
    pub(super) fn is_empty(&self) -> bool {
        self.pending == 0
    }

    /// Queues a copy of `data`.
    pub(super) fn push_bytes(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let start = self.bytes.len();
        self.bytes.extend_from_slice(data);
        self.pending += data.len();
        if let Some(Seg::Bytes { start: s, len }) = self.segs.back_mut() {
            if *s + *len == start {
                *len += data.len();
                return;
            }
        }
        self.segs.push_back(Seg::Bytes {
            start,
            len: data.len(),
        });
    }

    /// Moves everything queued here, none of it written yet, to the end of
    /// `dst`, in order.
    pub(super) fn move_to(&mut self, dst: &mut TxQueue) {
        debug_assert_eq!(self.front_off, 0, "a queue being moved was partly written");
        for seg in self.segs.drain(..) {
            match seg {
                Seg::Bytes { start, len } => dst.push_bytes(&self.bytes[start..start + len]),
                Seg::Buf { buf, len } => dst.push_buf(buf, len),
            }
        }
        self.bytes.clear();
        self.front_off = 0;
        self.pending = 0;
    }

    /// Queues the first `len` bytes of `buf` without copying them.
    pub(super) fn push_buf(&mut self, buf: AlignedBuf, len: usize) {
        let len = len.min(buf.len());
        self.pending += len;
        self.segs.push_back(Seg::Buf { buf, len });
    }

    /// Writes what the socket takes, handing every data buffer it finished
    /// to `done`. `Ok(true)` if anything was written; `Ok(0)` from the
    /// socket is `WriteZero`.
    pub(super) fn flush(
        &mut self,
        sock: &mut impl Write,
        mut done: impl FnMut(AlignedBuf),
    ) -> io::Result<bool> {
        let mut work = false;
        while self.pending > 0 {
            let n = {
                let mut iov: [IoSlice<'_>; MAX_IOV] = [IoSlice::new(&[]); MAX_IOV];
                let mut k = 0;
                for (i, seg) in self.segs.iter().enumerate().take(MAX_IOV) {
                    let skip = if i == 0 { self.front_off } else { 0 };
                    let s = match seg {
                        Seg::Bytes { start, len } => &self.bytes[*start + skip..*start + *len],
                        Seg::Buf { buf, len } => &buf.as_slice()[skip..*len],
                    };
                    iov[k] = IoSlice::new(s);
                    k += 1;
                }
                match sock.write_vectored(&iov[..k]) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            };
            work = true;
            self.advance(n, &mut done);
        }
        if self.segs.is_empty() {
            self.bytes.clear();
        } else if let Some(dead) = self.dead_prefix() {
            // Long partial-write stretches: drop the bytes already sent so
            // the buffer stays bounded by what is queued.
            if dead > super::conn::TX_HIGH_WATER {
                self.bytes.drain(..dead);
                for seg in &mut self.segs {
                    if let Seg::Bytes { start, .. } = seg {
                        *start -= dead;
                    }
                }
            }
        }
        Ok(work)
    }

    /// Bytes at the start of `bytes` that no queued segment refers to.
    fn dead_prefix(&self) -> Option<usize> {
        self.segs.iter().find_map(|s| match s {
            Seg::Bytes { start, .. } => Some(*start),
            Seg::Buf { .. } => None,
        })
    }

    fn advance(&mut self, mut n: usize, done: &mut impl FnMut(AlignedBuf)) {
        self.pending -= n;
        while n > 0 {
            let Some(front) = self.segs.front() else {
                debug_assert!(false, "wrote more than queued");
                return;
            };
            let len = match front {
                Seg::Bytes { len, .. } | Seg::Buf { len, .. } => *len,
            };
            let left = len - self.front_off;
            if n < left {
                self.front_off += n;
                return;
            }
            n -= left;
            self.front_off = 0;
            if let Some(Seg::Buf { buf, .. }) = self.segs.pop_front() {
                done(buf);
            }
        }
        // Zero-length segments are never queued, so nothing is left
        // half-consumed here.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket that takes at most `chunk` bytes per call and then says
    /// WouldBlock once every `block_every` calls.
    struct Trickle {
        out: Vec<u8>,
        chunk: usize,
        calls: usize,
        block_every: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.calls += 1;
            if self.calls % self.block_every == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut left = self.chunk;
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(left);
                self.out.extend_from_slice(&b[..take]);
                left -= take;
                n += take;
                if left == 0 {
                    break;
                }
            }
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn buf(fill: u8, len: usize) -> AlignedBuf {
        let mut b = AlignedBuf::zeroed(len);
        b.as_mut_slice().fill(fill);
        b
    }

    /// Whatever the socket's chunking, the bytes come out in queue order,
    /// each data buffer exactly once and only once fully written.
    #[test]
    fn partial_writes_keep_order_and_return_buffers() {
        for (chunk, block_every) in [(1, 3), (7, 2), (100, 5), (5000, 1000), (1 << 20, 1000)] {
            let mut q = TxQueue::default();
            let mut want = Vec::new();
            for i in 0..20u8 {
                q.push_bytes(&[i; 24]);
                want.extend_from_slice(&[i; 24]);
                if i % 3 == 0 {
                    q.push_buf(buf(i, 4096), 1000 + usize::from(i));
                    want.extend(std::iter::repeat_n(i, 1000 + usize::from(i)));
                    q.push_bytes(&[0xEE; 4]);
                    want.extend_from_slice(&[0xEE; 4]);
                }
            }
            assert_eq!(q.pending(), want.len());
            let mut sock = Trickle {
                out: Vec::new(),
                chunk,
                calls: 0,
                block_every,
            };
            let mut returned = 0;
            while !q.is_empty() {
                q.flush(&mut sock, |b| {
                    assert_eq!(b.len(), 4096);
                    returned += 1;
                })
                .unwrap();
            }
            assert_eq!(sock.out, want, "chunk {chunk}");
            assert_eq!(returned, 7);
            assert!(q.bytes.is_empty() && q.segs.is_empty());
        }
    }

    /// Held responses moved behind a partly written queue come out after
    /// everything queued before them, and the held queue is empty after.
    #[test]
    fn a_moved_queue_goes_out_behind_what_was_queued() {
        let mut q = TxQueue::default();
        let mut held = TxQueue::default();
        q.push_bytes(&[1; 24]);
        q.push_buf(buf(2, 4096), 4096);
        held.push_bytes(&[3; 24]);
        held.push_buf(buf(4, 4096), 100);
        let mut sock = Trickle {
            out: Vec::new(),
            chunk: 1000,
            calls: 0,
            block_every: 2,
        };
        let _ = q.flush(&mut sock, |_| {}).unwrap();
        assert!(!sock.out.is_empty() && !q.is_empty(), "one partial write");
        held.move_to(&mut q);
        assert!(held.is_empty() && held.bytes.is_empty() && held.segs.is_empty());
        assert_eq!(q.pending(), 24 + 4096 + 24 + 100 - sock.out.len());
        let mut returned = 0;
        while !q.is_empty() {
            q.flush(&mut sock, |_| returned += 1).unwrap();
        }
        let mut want = vec![1; 24];
        want.extend([2; 4096]);
        want.extend([3; 24]);
        want.extend([4; 100]);
        assert_eq!(sock.out, want);
        assert_eq!(returned, 2);
    }

    #[test]
    fn a_closed_socket_is_an_error() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Ok(0)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut q = TxQueue::default();
        q.push_bytes(b"x");
        let e = q.flush(&mut Closed, |_| {}).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WriteZero);
    }
}
