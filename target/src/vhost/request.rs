//! Descriptor chain → virtio-blk request: the pure parsing step.
//!
//! Everything the guest controls passes through [`parse`]: the descriptor
//! walk (direct and indirect tables), the request header, the data segments
//! and the discard/write-zeroes ranges. It reads guest memory only through
//! the [`GuestMem`] trait, so the fuzz target (`target/fuzz`) and the
//! random-input unit test drive exactly the code the queues run, over a fake
//! memory. A bad chain yields a [`Failure`] (the status to write, if a status
//! byte could be found at all), never a panic or an access outside guest
//! memory.

use pollux_graph::RawSegment;

/// virtio-blk sectors are 512 bytes whatever the device's block size.
pub const SECTOR_SHIFT: u32 = 9;
/// Bytes per virtio-blk sector.
pub const SECTOR_SIZE: u64 = 1 << SECTOR_SHIFT;

/// Request types (virtio 1.2, 5.2.6).
pub const T_IN: u32 = 0;
/// Write.
pub const T_OUT: u32 = 1;
/// Flush.
pub const T_FLUSH: u32 = 4;
/// Device ID string.
pub const T_GET_ID: u32 = 8;
/// Discard.
pub const T_DISCARD: u32 = 11;
/// Write zeroes.
pub const T_WRITE_ZEROES: u32 = 13;

/// Request status values.
pub const S_OK: u8 = 0;
/// The request failed.
pub const S_IOERR: u8 = 1;
/// The request type (or a flag in it) is not supported.
pub const S_UNSUPP: u8 = 2;

/// Split-ring descriptor flags (virtio 1.2, 2.7.5).
const DESC_F_NEXT: u16 = 1;
const DESC_F_WRITE: u16 = 2;
const DESC_F_INDIRECT: u16 = 4;
/// Size of one split-ring descriptor in guest memory.
const DESC_SIZE: u64 = 16;
/// `struct virtio_blk_req` header: type, reserved/ioprio, sector.
const HEADER_LEN: u64 = 16;
/// `struct virtio_blk_discard_write_zeroes`: sector, num_sectors, flags.
const DWZ_SEG_LEN: u64 = 16;
/// The `unmap` flag of a discard/write-zeroes segment.
const DWZ_F_UNMAP: u32 = 1;
/// Length of the GET_ID answer (VIRTIO_BLK_ID_BYTES).
pub const ID_BYTES: usize = 20;
/// Chains longer than data segments + header + status can only be garbage;
/// the walk stops there instead of at the (larger) ring size.
const EXTRA_DESCS: usize = 2;

/// Guest memory as the parser sees it.
pub trait GuestMem {
    /// Copies the guest bytes at `addr` into `buf`; false (and nothing
    /// promised about `buf`) if any of them is outside guest memory.
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool;
    /// The host address of `[addr, addr + len)` if that range lies in one
    /// mapped region (so it is one contiguous host range), else `None`.
    fn host(&self, addr: u64, len: u64) -> Option<*mut u8>;
}

/// What the device offers, fixed for a session.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Capacity in 512-byte sectors.
    pub capacity_sectors: u64,
    /// Logical block size in bytes (512 or 4096); I/O must be aligned to it.
    pub block_size: u32,
    /// SEG_MAX: most data descriptors in one request.
    pub seg_max: u32,
    /// SIZE_MAX: largest data descriptor in bytes.
    pub size_max: u32,
    /// Largest discard / write-zeroes range, in sectors.
    pub max_dwz_sectors: u32,
    /// Most ranges in one discard / write-zeroes request.
    pub max_dwz_seg: u32,
    /// The device is read-only (RO offered).
    pub readonly: bool,
    /// INDIRECT_DESC was negotiated.
    pub indirect: bool,
}

/// Where the ring's descriptor table is.
#[derive(Clone, Copy, Debug)]
pub struct Ring {
    /// Guest address of the descriptor table.
    pub desc_table: u64,
    /// Number of entries (the queue size).
    pub size: u16,
}

/// One descriptor as read from guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Desc {
    /// Guest address.
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
    /// Device-writable (VIRTQ_DESC_F_WRITE).
    pub write: bool,
}

/// A parsed request's operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Read into the data segments.
    Read,
    /// Write from the data segments.
    Write,
    /// Flush the write cache.
    Flush,
    /// Return the device ID string.
    GetId,
    /// Deallocate the range.
    Discard,
    /// Zero the range.
    WriteZeroes,
}

/// A well-formed request, ready to execute.
#[derive(Debug)]
pub struct Request {
    /// What to do.
    pub op: Op,
    /// Byte offset on the device; for GET_ID the guest address of the
    /// buffer to fill; 0 for flush.
    pub offset: u64,
    /// Byte length (data length for read/write, range for discard and write
    /// zeroes, the ID buffer length for GET_ID, 0 for flush).
    pub len: u64,
    /// Host addresses of the data (read and write only).
    pub data: Vec<RawSegment>,
    /// Guest address of the status byte.
    pub status: u64,
    /// What to report in the used ring: bytes the device wrote, status
    /// included.
    pub used_len: u32,
}

/// A request that fails without reaching the block device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Guest address of the status byte, when the chain has a usable one.
    pub status: Option<u64>,
    /// `S_IOERR` or `S_UNSUPP`.
    pub code: u8,
    /// Why, for the debug log.
    pub reason: &'static str,
}

impl Failure {
    fn no_status(reason: &'static str) -> Failure {
        Failure {
            status: None,
            code: S_IOERR,
            reason,
        }
    }
}

/// Reads the descriptor chain starting at `head` into `out` (cleared first),
/// following one indirect table. Fails on indexes outside the table, tables
/// outside guest memory, nested or misused indirect descriptors, loops and
/// chains longer than `max_descs`.
pub fn walk_chain(
    mem: &impl GuestMem,
    ring: Ring,
    head: u16,
    indirect_ok: bool,
    max_descs: usize,
    out: &mut Vec<Desc>,
) -> Result<(), Failure> {
    out.clear();
    let mut table = ring.desc_table;
    let mut table_len = u64::from(ring.size);
    let mut index = u64::from(head);
    let mut in_indirect = false;
    // A chain visits each table entry at most once; more steps mean a loop.
    let mut budget = table_len;
    loop {
        if index >= table_len {
            return Err(Failure::no_status("descriptor index outside the table"));
        }
        if budget == 0 {
            return Err(Failure::no_status("descriptor chain loops"));
        }
        budget -= 1;
        let at = index
            .checked_mul(DESC_SIZE)
            .and_then(|off| table.checked_add(off))
            .ok_or(Failure::no_status("descriptor address overflows"))?;
        let mut raw = [0u8; DESC_SIZE as usize];
        if !mem.read(at, &mut raw) {
            return Err(Failure::no_status("descriptor outside guest memory"));
        }
        let addr = u64::from_le_bytes(raw[0..8].try_into().expect("8 bytes"));
        let len = u32::from_le_bytes(raw[8..12].try_into().expect("4 bytes"));
        let flags = u16::from_le_bytes(raw[12..14].try_into().expect("2 bytes"));
        let next = u16::from_le_bytes(raw[14..16].try_into().expect("2 bytes"));
        if flags & DESC_F_INDIRECT != 0 {
            // virtio 1.2, 2.7.5.3: only with the feature, never inside an
            // indirect table, never together with NEXT, and a whole number of
            // descriptors.
            if !indirect_ok || in_indirect || flags & DESC_F_NEXT != 0 {
                return Err(Failure::no_status("misused indirect descriptor"));
            }
            if len == 0 || u64::from(len) % DESC_SIZE != 0 {
                return Err(Failure::no_status("bad indirect table length"));
            }
            // The indirect table replaces the rest of the chain: the head
            // (if it is the indirect descriptor) was not a data descriptor.
            if !out.is_empty() {
                return Err(Failure::no_status("indirect descriptor inside a chain"));
            }
            table = addr;
            table_len = u64::from(len) / DESC_SIZE;
            budget = table_len;
            index = 0;
            in_indirect = true;
            continue;
        }
        if out.len() == max_descs {
            return Err(Failure::no_status("too many descriptors"));
        }
        out.push(Desc {
            addr,
            len,
            write: flags & DESC_F_WRITE != 0,
        });
        if flags & DESC_F_NEXT == 0 {
            return Ok(());
        }
        index = u64::from(next);
    }
}

/// Parses the request whose chain starts at `head`. `scratch` is reused
/// between calls, and `segments` (cleared first) receives a read's or
/// write's data: a queue hands in the vector of a completed request, so the
/// data path does not allocate per request.
pub fn parse(
    mem: &impl GuestMem,
    ring: Ring,
    head: u16,
    limits: &Limits,
    scratch: &mut Vec<Desc>,
    segments: Vec<RawSegment>,
) -> Result<Request, Failure> {
    let max_descs = (limits.seg_max as usize).saturating_add(EXTRA_DESCS);
    walk_chain(mem, ring, head, limits.indirect, max_descs, scratch)?;
    parse_descs(mem, scratch, limits, segments)
}

/// The header, status and data checks over an already walked chain.
pub fn parse_descs(
    mem: &impl GuestMem,
    descs: &[Desc],
    limits: &Limits,
    mut segments: Vec<RawSegment>,
) -> Result<Request, Failure> {
    segments.clear();
    // The status byte first: without one, nothing can be reported.
    let (first, last) = match descs {
        [] => return Err(Failure::no_status("empty chain")),
        [d] => (*d, *d),
        [f, .., l] => (*f, *l),
    };
    if !last.write || last.len == 0 {
        return Err(Failure::no_status("no device-writable status byte"));
    }
    let status = last
        .addr
        .checked_add(u64::from(last.len) - 1)
        .filter(|&a| mem.host(a, 1).is_some())
        .ok_or(Failure::no_status("status byte outside guest memory"))?;
    let fail = |code, reason| Failure {
        status: Some(status),
        code,
        reason,
    };
    if descs.len() == 1 {
        return Err(fail(S_IOERR, "header and status in one descriptor"));
    }
    if first.write || u64::from(first.len) < HEADER_LEN {
        return Err(fail(S_IOERR, "short or device-writable header"));
    }
    let mut header = [0u8; HEADER_LEN as usize];
    if !mem.read(first.addr, &mut header) {
        return Err(fail(S_IOERR, "header outside guest memory"));
    }
    let kind = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
    let sector = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));

    // The data: whatever lies between the 16 header bytes and the status
    // byte (virtio 1.x lets a driver frame them in any descriptors).
    let head_rest = Desc {
        addr: first.addr.wrapping_add(HEADER_LEN),
        len: first.len - HEADER_LEN as u32,
        write: first.write,
    };
    let tail_rest = Desc {
        addr: last.addr,
        len: last.len - 1,
        write: last.write,
    };
    let middle = &descs[1..descs.len() - 1];
    // A function, not one iterator: GET_ID and discard walk the data again
    // after the checks, so the checks need not keep a copy.
    let data = || {
        std::iter::once(head_rest)
            .chain(middle.iter().copied())
            .chain(std::iter::once(tail_rest))
            .filter(|d| d.len != 0)
    };

    let op = match kind {
        T_IN => Op::Read,
        T_OUT => Op::Write,
        T_FLUSH => Op::Flush,
        T_GET_ID => Op::GetId,
        T_DISCARD => Op::Discard,
        T_WRITE_ZEROES => Op::WriteZeroes,
        _ => return Err(fail(S_UNSUPP, "unsupported request type")),
    };
    if limits.readonly && matches!(op, Op::Write | Op::Discard | Op::WriteZeroes) {
        return Err(fail(S_IOERR, "write to a read-only device"));
    }
    // Device-writable data for reads and GET_ID, device-readable otherwise.
    let want_write = matches!(op, Op::Read | Op::GetId);
    let mut total: u64 = 0;
    let mut count: u32 = 0;
    for d in data() {
        if d.write != want_write {
            return Err(fail(S_IOERR, "data descriptor with the wrong direction"));
        }
        count += 1;
        if count > limits.seg_max {
            return Err(fail(S_IOERR, "too many data segments"));
        }
        if d.len > limits.size_max {
            return Err(fail(S_IOERR, "data segment larger than size_max"));
        }
        let ptr = mem
            .host(d.addr, u64::from(d.len))
            .ok_or(fail(S_IOERR, "data segment outside guest memory"))?;
        total += u64::from(d.len);
        segments.push(RawSegment {
            ptr,
            len: d.len as usize,
        });
    }

    match op {
        Op::Read | Op::Write => {
            let offset = check_range(sector, total, limits).map_err(|r| fail(S_IOERR, r))?;
            if total == 0 {
                return Err(fail(S_IOERR, "read or write without data"));
            }
            let used_len = if op == Op::Read {
                u32::try_from(total + 1).map_err(|_| fail(S_IOERR, "request too large"))?
            } else {
                1
            };
            Ok(Request {
                op,
                offset,
                len: total,
                data: segments,
                status,
                used_len,
            })
        }
        Op::Flush => Ok(Request {
            op,
            offset: 0,
            len: 0,
            data: Vec::new(),
            status,
            used_len: 1,
        }),
        Op::GetId => {
            // The ID goes into the first writable bytes, at most 20 of them.
            let Some(d) = data().next() else {
                return Err(fail(S_IOERR, "GET_ID without a buffer"));
            };
            let n = (d.len as usize).min(ID_BYTES);
            Ok(Request {
                op,
                offset: d.addr,
                len: n as u64,
                data: Vec::new(),
                status,
                used_len: n as u32 + 1,
            })
        }
        Op::Discard | Op::WriteZeroes => {
            if total == 0 || total % DWZ_SEG_LEN != 0 {
                return Err(fail(S_IOERR, "bad discard/write-zeroes payload length"));
            }
            if total / DWZ_SEG_LEN > u64::from(limits.max_dwz_seg) {
                return Err(fail(S_IOERR, "too many discard/write-zeroes ranges"));
            }
            // One range (max_dwz_seg = 1): it may still be split over
            // descriptors, so gather its 16 bytes.
            let mut raw = [0u8; DWZ_SEG_LEN as usize];
            let mut got = 0usize;
            for d in data() {
                let n = (d.len as usize).min(raw.len() - got);
                if !mem.read(d.addr, &mut raw[got..got + n]) {
                    return Err(fail(S_IOERR, "range outside guest memory"));
                }
                got += n;
                if got == raw.len() {
                    break;
                }
            }
            let r_sector = u64::from_le_bytes(raw[0..8].try_into().expect("8 bytes"));
            let r_num = u32::from_le_bytes(raw[8..12].try_into().expect("4 bytes"));
            let r_flags = u32::from_le_bytes(raw[12..16].try_into().expect("4 bytes"));
            // virtio 1.2, 5.2.6.2: unmap on discard, or any unknown flag, is
            // UNSUPP; write zeroes may ask to unmap (we zero either way).
            let allowed = if op == Op::WriteZeroes {
                DWZ_F_UNMAP
            } else {
                0
            };
            if r_flags & !allowed != 0 {
                return Err(fail(S_UNSUPP, "unsupported discard/write-zeroes flags"));
            }
            if r_num == 0 || r_num > limits.max_dwz_sectors {
                return Err(fail(S_IOERR, "bad discard/write-zeroes sector count"));
            }
            let len = u64::from(r_num) << SECTOR_SHIFT;
            let offset = check_range(r_sector, len, limits).map_err(|r| fail(S_IOERR, r))?;
            Ok(Request {
                op,
                offset,
                len,
                data: Vec::new(),
                status,
                used_len: 1,
            })
        }
    }
}

/// Byte offset of `sector`, checking that `len` bytes from there are whole
/// blocks inside the device, with no overflow on the way.
fn check_range(sector: u64, len: u64, limits: &Limits) -> Result<u64, &'static str> {
    let offset = sector
        .checked_mul(SECTOR_SIZE)
        .ok_or("sector number overflows")?;
    let end = offset.checked_add(len).ok_or("request end overflows")?;
    let size = limits
        .capacity_sectors
        .checked_mul(SECTOR_SIZE)
        .ok_or("capacity overflows")?;
    if end > size {
        return Err("request beyond the end of the device");
    }
    let bs = u64::from(limits.block_size.max(1));
    // Block sizes are powers of two (512 or 4096): a mask instead of two
    // 64-bit divisions per request.
    let misaligned = if bs.is_power_of_two() {
        (offset | len) & (bs - 1) != 0
    } else {
        offset % bs != 0 || len % bs != 0
    };
    if misaligned {
        return Err("request not aligned to the block size");
    }
    Ok(offset)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Guest memory for tests and the fuzz target: one region at `base`.
    pub(crate) struct FakeMem {
        pub base: u64,
        pub bytes: Vec<u8>,
    }

    impl GuestMem for FakeMem {
        fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
            match self.range(addr, buf.len() as u64) {
                Some(r) => {
                    buf.copy_from_slice(&self.bytes[r]);
                    true
                }
                None => false,
            }
        }
        fn host(&self, addr: u64, len: u64) -> Option<*mut u8> {
            let r = self.range(addr, len)?;
            // Never dereferenced by the parser; just a distinct address.
            Some(self.bytes.as_ptr().wrapping_add(r.start) as *mut u8)
        }
    }

    impl FakeMem {
        fn range(&self, addr: u64, len: u64) -> Option<std::ops::Range<usize>> {
            let start = addr.checked_sub(self.base)?;
            let end = start.checked_add(len)?;
            if end > self.bytes.len() as u64 {
                return None;
            }
            Some(start as usize..end as usize)
        }
        fn put(&mut self, addr: u64, data: &[u8]) {
            let r = self.range(addr, data.len() as u64).expect("in range");
            self.bytes[r].copy_from_slice(data);
        }
        fn desc(&mut self, table: u64, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
            let mut d = [0u8; 16];
            d[0..8].copy_from_slice(&addr.to_le_bytes());
            d[8..12].copy_from_slice(&len.to_le_bytes());
            d[12..14].copy_from_slice(&flags.to_le_bytes());
            d[14..16].copy_from_slice(&next.to_le_bytes());
            self.put(table + u64::from(i) * 16, &d);
        }
        fn header(&mut self, at: u64, kind: u32, sector: u64) {
            let mut h = [0u8; 16];
            h[0..4].copy_from_slice(&kind.to_le_bytes());
            h[8..16].copy_from_slice(&sector.to_le_bytes());
            self.put(at, &h);
        }
    }

    const BASE: u64 = 0x10000;
    const TABLE: u64 = BASE;
    const HDR: u64 = BASE + 0x1000;
    const DATA: u64 = BASE + 0x2000;
    const STATUS: u64 = BASE + 0x8000;
    const RING: Ring = Ring {
        desc_table: TABLE,
        size: 16,
    };

    pub(crate) fn limits() -> Limits {
        Limits {
            capacity_sectors: 1 << 20,
            block_size: 512,
            seg_max: 4,
            size_max: 1 << 16,
            max_dwz_sectors: 1 << 16,
            max_dwz_seg: 1,
            readonly: false,
            indirect: true,
        }
    }

    fn mem() -> FakeMem {
        FakeMem {
            base: BASE,
            bytes: vec![0; 0x10000],
        }
    }

    /// header → data (len, write) → status, as descriptors 0..
    fn simple(m: &mut FakeMem, kind: u32, sector: u64, data_len: u32, data_write: bool) {
        m.header(HDR, kind, sector);
        m.desc(TABLE, 0, HDR, 16, DESC_F_NEXT, 1);
        let w = if data_write { DESC_F_WRITE } else { 0 };
        m.desc(TABLE, 1, DATA, data_len, DESC_F_NEXT | w, 2);
        m.desc(TABLE, 2, STATUS, 1, DESC_F_WRITE, 0);
    }

    fn run(m: &FakeMem, l: &Limits) -> Result<Request, Failure> {
        parse(m, RING, 0, l, &mut Vec::new(), Vec::new())
    }

    #[test]
    fn read_and_write_parse() {
        let mut m = mem();
        simple(&mut m, T_IN, 8, 4096, true);
        let r = run(&m, &limits()).unwrap();
        assert_eq!(
            (r.op, r.offset, r.len, r.used_len),
            (Op::Read, 4096, 4096, 4097)
        );
        assert_eq!(r.status, STATUS);
        simple(&mut m, T_OUT, 8, 4096, false);
        let r = run(&m, &limits()).unwrap();
        assert_eq!((r.op, r.used_len, r.data.len()), (Op::Write, 1, 1));
    }

    #[test]
    fn wrong_direction_fails_with_status() {
        let mut m = mem();
        simple(&mut m, T_IN, 0, 512, false);
        let f = run(&m, &limits()).unwrap_err();
        assert_eq!((f.status, f.code), (Some(STATUS), S_IOERR));
    }

    #[test]
    fn read_only_device_refuses_writes() {
        let mut m = mem();
        simple(&mut m, T_OUT, 0, 512, false);
        let l = Limits {
            readonly: true,
            ..limits()
        };
        assert_eq!(run(&m, &l).unwrap_err().code, S_IOERR);
    }

    #[test]
    fn sector_overflow_and_out_of_range() {
        let mut m = mem();
        simple(&mut m, T_IN, u64::MAX / 256, 512, true);
        assert_eq!(run(&m, &limits()).unwrap_err().code, S_IOERR);
        simple(&mut m, T_IN, (1 << 20) - 1, 1024, true);
        assert_eq!(run(&m, &limits()).unwrap_err().code, S_IOERR);
        simple(&mut m, T_IN, (1 << 20) - 1, 512, true);
        assert!(run(&m, &limits()).is_ok());
    }

    #[test]
    fn short_header_and_bad_status() {
        let mut m = mem();
        simple(&mut m, T_IN, 0, 512, true);
        m.desc(TABLE, 0, HDR, 8, DESC_F_NEXT, 1);
        assert_eq!(run(&m, &limits()).unwrap_err().status, Some(STATUS));
        simple(&mut m, T_IN, 0, 512, true);
        m.desc(TABLE, 2, STATUS, 1, 0, 0);
        assert_eq!(run(&m, &limits()).unwrap_err().status, None);
        m.desc(TABLE, 2, STATUS, 0, DESC_F_WRITE, 0);
        assert_eq!(run(&m, &limits()).unwrap_err().status, None);
        // Status outside guest memory.
        m.desc(TABLE, 2, 0xdead_0000, 1, DESC_F_WRITE, 0);
        assert_eq!(run(&m, &limits()).unwrap_err().status, None);
    }

    #[test]
    fn data_outside_memory_and_too_many_segments() {
        let mut m = mem();
        simple(&mut m, T_IN, 0, 512, true);
        m.desc(TABLE, 1, u64::MAX - 100, 512, DESC_F_NEXT | DESC_F_WRITE, 2);
        assert_eq!(run(&m, &limits()).unwrap_err().code, S_IOERR);
        // Six 512-byte data descriptors with seg_max = 4.
        m.desc(TABLE, 0, HDR, 16, DESC_F_NEXT, 1);
        for i in 1..7u16 {
            m.desc(
                TABLE,
                i,
                DATA + u64::from(i) * 512,
                512,
                DESC_F_NEXT | DESC_F_WRITE,
                i + 1,
            );
        }
        m.desc(TABLE, 7, STATUS, 1, DESC_F_WRITE, 0);
        assert!(run(&m, &limits()).is_err());
    }

    #[test]
    fn loops_and_bad_indexes_end_the_walk() {
        let mut m = mem();
        m.desc(TABLE, 0, HDR, 16, DESC_F_NEXT, 1);
        m.desc(TABLE, 1, DATA, 512, DESC_F_NEXT | DESC_F_WRITE, 0);
        let big = Limits {
            seg_max: 1000,
            ..limits()
        };
        assert_eq!(run(&m, &big).unwrap_err().status, None);
        m.desc(TABLE, 1, DATA, 512, DESC_F_NEXT | DESC_F_WRITE, 999);
        assert_eq!(run(&m, &big).unwrap_err().status, None);
    }

    #[test]
    fn indirect_table() {
        let mut m = mem();
        let ind = BASE + 0x4000;
        m.header(HDR, T_IN, 0);
        m.desc(ind, 0, HDR, 16, DESC_F_NEXT, 1);
        m.desc(ind, 1, DATA, 512, DESC_F_NEXT | DESC_F_WRITE, 2);
        m.desc(ind, 2, STATUS, 1, DESC_F_WRITE, 0);
        m.desc(TABLE, 0, ind, 48, DESC_F_INDIRECT, 0);
        assert_eq!(run(&m, &limits()).unwrap().op, Op::Read);
        let no_ind = Limits {
            indirect: false,
            ..limits()
        };
        assert!(run(&m, &no_ind).is_err());
        // Nested indirect.
        m.desc(ind, 1, ind, 48, DESC_F_INDIRECT, 0);
        assert!(run(&m, &limits()).is_err());
    }

    #[test]
    fn discard_and_write_zeroes() {
        let mut m = mem();
        simple(&mut m, T_DISCARD, 0, 16, false);
        let mut seg = [0u8; 16];
        seg[0..8].copy_from_slice(&8u64.to_le_bytes());
        seg[8..12].copy_from_slice(&16u32.to_le_bytes());
        m.put(DATA, &seg);
        let r = run(&m, &limits()).unwrap();
        assert_eq!((r.op, r.offset, r.len), (Op::Discard, 4096, 8192));
        seg[12..16].copy_from_slice(&DWZ_F_UNMAP.to_le_bytes());
        m.put(DATA, &seg);
        assert_eq!(run(&m, &limits()).unwrap_err().code, S_UNSUPP);
        simple(&mut m, T_WRITE_ZEROES, 0, 16, false);
        assert_eq!(run(&m, &limits()).unwrap().op, Op::WriteZeroes);
        simple(&mut m, T_WRITE_ZEROES, 0, 32, false);
        assert_eq!(run(&m, &limits()).unwrap_err().code, S_IOERR);
    }

    #[test]
    fn unknown_type_is_unsupp() {
        let mut m = mem();
        simple(&mut m, 77, 0, 512, true);
        assert_eq!(run(&m, &limits()).unwrap_err().code, S_UNSUPP);
    }

    /// Random chains over random memory: parsing never panics, and whatever
    /// it accepts lies inside guest memory.
    #[test]
    fn random_chains_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
        for _ in 0..10_000 {
            let mut m = FakeMem {
                base: BASE,
                bytes: vec![0; 4096],
            };
            rng.fill(&mut m.bytes[..]);
            // Bias addresses toward the region so chains get deep.
            for i in 0..64u16 {
                if rng.random_bool(0.7) {
                    let addr = BASE + rng.random_range(0..4200u64);
                    let len = rng.random_range(0..700u32);
                    let flags = rng.random_range(0..8u16);
                    let next = rng.random_range(0..20u16);
                    m.desc(TABLE, i, addr, len, flags, next);
                }
            }
            let ring = Ring {
                desc_table: TABLE,
                size: rng.random_range(1..=64),
            };
            let head = rng.random_range(0..70u16);
            if let Ok(r) = parse(&m, ring, head, &limits(), &mut Vec::new(), Vec::new()) {
                for s in &r.data {
                    let start = s.ptr as usize - m.bytes.as_ptr() as usize;
                    assert!(start + s.len <= m.bytes.len());
                }
                assert!(m.host(r.status, 1).is_some());
            }
        }
    }
}
