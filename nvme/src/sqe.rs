//! Submission queue entries (64 bytes) and SGL descriptors (16 bytes).

use crate::bytes::{arr, r32, r64, w32, w64};

u8_enum! {
    /// Fused operation (CDW0 bits 9:8).
    pub enum Fuse {
        /// Normal operation.
        Normal = 0,
        /// First command of a fused pair (compare of compare-and-write).
        First = 1,
        /// Second command of a fused pair.
        Second = 2,
        /// Reserved encoding; kept so every SQE parses.
        Reserved = 3,
    }
}

u8_enum! {
    /// PRP or SGL for Data Transfer (CDW0 bits 15:14).
    pub enum Psdt {
        /// PRPs (PCIe only; fabrics require SGLs).
        Prp = 0,
        /// SGLs; MPTR holds a metadata address. The only value NVMe over
        /// Fabrics allows.
        SglMptrAddress = 1,
        /// SGLs; MPTR holds the address of an SGL segment.
        SglMptrSegment = 2,
        /// Reserved encoding.
        Reserved = 3,
    }
}

/// One submission queue entry, stored in wire form so that fields this crate
/// does not model survive a parse/forward round trip unchanged.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sqe {
    raw: [u8; Sqe::SIZE],
}

impl Default for Sqe {
    fn default() -> Self {
        Self {
            raw: [0; Self::SIZE],
        }
    }
}

impl core::fmt::Debug for Sqe {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Sqe")
            .field("opcode", &format_args!("{:#04x}", self.opcode()))
            .field("fuse", &self.fuse())
            .field("psdt", &self.psdt())
            .field("cid", &self.cid())
            .field("nsid", &self.nsid())
            .field("dptr", &self.sgl())
            .field("cdw10", &format_args!("{:#x}", self.cdw10()))
            .field("cdw11", &format_args!("{:#x}", self.cdw11()))
            .field("cdw12", &format_args!("{:#x}", self.cdw12()))
            .finish()
    }
}

wire_entry!(Sqe, "an SQE", 64);

impl Sqe {
    /// Byte offset of NSID.
    pub const NSID_OFFSET: usize = 4;
    /// Byte offset of MPTR.
    pub const MPTR_OFFSET: usize = 16;
    /// Byte offset of DPTR (PRP1/PRP2 or the SGL descriptor).
    pub const DPTR_OFFSET: usize = 24;
    /// Byte offset of CDW10; CDWn lives at `4 * n`.
    pub const CDW10_OFFSET: usize = 40;

    /// A zeroed SQE with the given opcode and command identifier.
    pub fn new(opcode: u8, cid: u16) -> Self {
        let mut s = Self::default();
        s.set_opcode(opcode);
        s.set_cid(cid);
        s
    }

    /// Mutable wire bytes, for fields without an accessor.
    pub fn as_bytes_mut(&mut self) -> &mut [u8; Self::SIZE] {
        &mut self.raw
    }

    /// Opcode (CDW0 bits 7:0).
    pub const fn opcode(&self) -> u8 {
        self.raw[0]
    }
    /// Sets the opcode.
    pub fn set_opcode(&mut self, op: u8) {
        self.raw[0] = op;
    }
    /// Fused operation (CDW0 bits 9:8).
    pub fn fuse(&self) -> Fuse {
        // Two bits always map to one of the four variants.
        Fuse::from_u8(self.raw[1] & 0x3).unwrap_or(Fuse::Reserved)
    }
    /// Sets FUSE.
    pub fn set_fuse(&mut self, f: Fuse) {
        self.raw[1] = (self.raw[1] & !0x3) | f.as_u8();
    }
    /// PRP or SGL selector (CDW0 bits 15:14).
    pub fn psdt(&self) -> Psdt {
        Psdt::from_u8(self.raw[1] >> 6).unwrap_or(Psdt::Reserved)
    }
    /// Sets PSDT.
    pub fn set_psdt(&mut self, p: Psdt) {
        self.raw[1] = (self.raw[1] & 0x3f) | (p.as_u8() << 6);
    }
    /// Command identifier (CDW0 bits 31:16).
    pub const fn cid(&self) -> u16 {
        u16::from_le_bytes([self.raw[2], self.raw[3]])
    }
    /// Sets CID.
    pub fn set_cid(&mut self, cid: u16) {
        self.raw[2..4].copy_from_slice(&cid.to_le_bytes());
    }
    /// Namespace identifier.
    pub fn nsid(&self) -> u32 {
        r32(&self.raw, Self::NSID_OFFSET)
    }
    /// Sets NSID.
    pub fn set_nsid(&mut self, nsid: u32) {
        w32(&mut self.raw, Self::NSID_OFFSET, nsid);
    }
    /// Metadata pointer.
    pub fn mptr(&self) -> u64 {
        r64(&self.raw, Self::MPTR_OFFSET)
    }
    /// Sets MPTR.
    pub fn set_mptr(&mut self, v: u64) {
        w64(&mut self.raw, Self::MPTR_OFFSET, v);
    }
    /// The 16 raw bytes of DPTR.
    pub fn dptr(&self) -> [u8; 16] {
        arr(&self.raw, Self::DPTR_OFFSET)
    }
    /// Sets the 16 raw bytes of DPTR.
    pub fn set_dptr(&mut self, d: [u8; 16]) {
        self.raw[Self::DPTR_OFFSET..Self::DPTR_OFFSET + 16].copy_from_slice(&d);
    }
    /// DPTR interpreted as an SGL descriptor (meaningful when PSDT is an SGL
    /// mode, which fabrics require).
    pub fn sgl(&self) -> Sgl {
        Sgl::parse(&self.dptr())
    }
    /// Stores an SGL descriptor in DPTR and marks PSDT accordingly.
    pub fn set_sgl(&mut self, sgl: &Sgl) {
        self.set_dptr(sgl.to_bytes());
        self.set_psdt(Psdt::SglMptrAddress);
    }
    /// PRP entry 1 (PCIe style DPTR).
    pub fn prp1(&self) -> u64 {
        r64(&self.raw, Self::DPTR_OFFSET)
    }
    /// PRP entry 2.
    pub fn prp2(&self) -> u64 {
        r64(&self.raw, Self::DPTR_OFFSET + 8)
    }
    /// Command dword `n` (0..=15); dwords outside the SQE read as 0.
    pub fn cdw(&self, n: usize) -> u32 {
        if n < 16 {
            r32(&self.raw, n * 4)
        } else {
            0
        }
    }
    /// Sets command dword `n` (0..=15); other `n` are ignored.
    pub fn set_cdw(&mut self, n: usize, v: u32) {
        if n < 16 {
            w32(&mut self.raw, n * 4, v);
        }
    }
    /// CDW2 (command specific).
    pub fn cdw2(&self) -> u32 {
        self.cdw(2)
    }
    /// CDW3 (command specific).
    pub fn cdw3(&self) -> u32 {
        self.cdw(3)
    }
    /// CDW10.
    pub fn cdw10(&self) -> u32 {
        self.cdw(10)
    }
    /// CDW11.
    pub fn cdw11(&self) -> u32 {
        self.cdw(11)
    }
    /// CDW12.
    pub fn cdw12(&self) -> u32 {
        self.cdw(12)
    }
    /// CDW13.
    pub fn cdw13(&self) -> u32 {
        self.cdw(13)
    }
    /// CDW14.
    pub fn cdw14(&self) -> u32 {
        self.cdw(14)
    }
    /// CDW15.
    pub fn cdw15(&self) -> u32 {
        self.cdw(15)
    }
    /// Sets CDW10.
    pub fn set_cdw10(&mut self, v: u32) {
        self.set_cdw(10, v)
    }
    /// Sets CDW11.
    pub fn set_cdw11(&mut self, v: u32) {
        self.set_cdw(11, v)
    }
    /// Sets CDW12.
    pub fn set_cdw12(&mut self, v: u32) {
        self.set_cdw(12, v)
    }
    /// Sets CDW13.
    pub fn set_cdw13(&mut self, v: u32) {
        self.set_cdw(13, v)
    }
    /// Sets CDW14.
    pub fn set_cdw14(&mut self, v: u32) {
        self.set_cdw(14, v)
    }
    /// Sets CDW15.
    pub fn set_cdw15(&mut self, v: u32) {
        self.set_cdw(15, v)
    }
}

/// SGL descriptor type (identifier bits 7:4).
pub mod sgl_type {
    /// SGL Data Block.
    pub const DATA_BLOCK: u8 = 0x0;
    /// SGL Bit Bucket.
    pub const BIT_BUCKET: u8 = 0x1;
    /// SGL Segment.
    pub const SEGMENT: u8 = 0x2;
    /// SGL Last Segment.
    pub const LAST_SEGMENT: u8 = 0x3;
    /// Keyed SGL Data Block (RDMA).
    pub const KEYED_DATA_BLOCK: u8 = 0x4;
    /// Transport SGL Data Block: the data moves by transport-specific means
    /// (for NVMe/TCP: R2T/H2CData or C2HData PDUs).
    pub const TRANSPORT_DATA_BLOCK: u8 = 0x5;
}

/// SGL descriptor sub type (identifier bits 3:0).
pub mod sgl_subtype {
    /// Address field is a memory address.
    pub const ADDRESS: u8 = 0x0;
    /// Address field is an offset into the in-capsule data.
    pub const OFFSET: u8 = 0x1;
    /// Transport specific; NVMe/TCP uses 0xA with the Transport SGL Data
    /// Block (Linux `NVME_SGL_FMT_TRANSPORT_A`).
    pub const TRANSPORT_A: u8 = 0xA;
    /// Keyed: invalidate the remote key after the transfer.
    pub const INVALIDATE_KEY: u8 = 0xF;
}

/// A parsed SGL descriptor.
///
/// NVMe/TCP uses exactly two forms: [`Sgl::InCapsule`] (data follows the SQE
/// in the CapsuleCmd PDU) and [`Sgl::Transport`] (data moves through
/// R2T/H2CData or C2HData). Other forms are parsed so a target can reject
/// them with the right status rather than misread them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Sgl {
    /// Data Block, sub type Offset: in-capsule data at `offset` bytes from
    /// the start of the in-capsule data area.
    InCapsule {
        /// Offset into the in-capsule data (ICDOFF units are applied by the
        /// caller; Linux sends the controller's ICDOFF here, normally 0).
        offset: u64,
        /// Length in bytes.
        length: u32,
    },
    /// Data Block, sub type Address.
    DataBlock {
        /// Memory address.
        address: u64,
        /// Length in bytes.
        length: u32,
    },
    /// Transport SGL Data Block (sub type kept for round trips; NVMe/TCP
    /// uses [`sgl_subtype::TRANSPORT_A`]).
    Transport {
        /// Address field, unused by NVMe/TCP (0).
        address: u64,
        /// Length in bytes of the whole transfer.
        length: u32,
        /// Descriptor sub type.
        subtype: u8,
    },
    /// Keyed SGL Data Block (RDMA): 24-bit length and a 32-bit key.
    Keyed {
        /// Remote address.
        address: u64,
        /// Length in bytes (24 bits).
        length: u32,
        /// Remote key.
        key: u32,
        /// Descriptor sub type.
        subtype: u8,
    },
    /// Segment or Last Segment descriptor.
    Segment {
        /// Address (or offset) of the next segment.
        address: u64,
        /// Segment length in bytes.
        length: u32,
        /// Last Segment rather than Segment.
        last: bool,
        /// Descriptor sub type.
        subtype: u8,
    },
    /// Bit Bucket.
    BitBucket {
        /// Bytes to discard.
        length: u32,
    },
    /// Anything else, kept verbatim.
    Other([u8; 16]),
}

impl Sgl {
    /// Descriptor length on the wire.
    pub const SIZE: usize = 16;

    /// NVMe/TCP in-capsule data descriptor (what Linux's
    /// `nvme_tcp_set_sg_inline` builds).
    pub const fn in_capsule(offset: u64, length: u32) -> Self {
        Sgl::InCapsule { offset, length }
    }

    /// NVMe/TCP transport data block (what Linux's
    /// `nvme_tcp_set_sg_host_data` builds; length 0 is `set_sg_null`).
    pub const fn transport(length: u32) -> Self {
        Sgl::Transport {
            address: 0,
            length,
            subtype: sgl_subtype::TRANSPORT_A,
        }
    }

    /// Data length the descriptor describes (0 for `Other`).
    pub const fn length(&self) -> u32 {
        match *self {
            Sgl::InCapsule { length, .. }
            | Sgl::DataBlock { length, .. }
            | Sgl::Transport { length, .. }
            | Sgl::Keyed { length, .. }
            | Sgl::Segment { length, .. }
            | Sgl::BitBucket { length } => length,
            Sgl::Other(_) => 0,
        }
    }

    /// Parses a 16-byte descriptor. Never fails: unknown forms become
    /// [`Sgl::Other`].
    pub fn parse(b: &[u8; 16]) -> Self {
        let id = b[15];
        let (ty, sub) = (id >> 4, id & 0xf);
        let address = r64(b, 0);
        let length = r32(b, 8);
        match ty {
            sgl_type::DATA_BLOCK if sub == sgl_subtype::OFFSET => Sgl::InCapsule {
                offset: address,
                length,
            },
            sgl_type::DATA_BLOCK if sub == sgl_subtype::ADDRESS => {
                Sgl::DataBlock { address, length }
            }
            sgl_type::TRANSPORT_DATA_BLOCK => Sgl::Transport {
                address,
                length,
                subtype: sub,
            },
            sgl_type::KEYED_DATA_BLOCK => Sgl::Keyed {
                address,
                length: u32::from_le_bytes([b[8], b[9], b[10], 0]),
                key: r32(b, 11),
                subtype: sub,
            },
            sgl_type::SEGMENT | sgl_type::LAST_SEGMENT => Sgl::Segment {
                address,
                length,
                last: ty == sgl_type::LAST_SEGMENT,
                subtype: sub,
            },
            sgl_type::BIT_BUCKET => Sgl::BitBucket { length },
            _ => Sgl::Other(*b),
        }
    }

    /// Wire form. Reserved bytes are zero (except for `Other`).
    pub fn to_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        let (address, length, id) = match *self {
            Sgl::InCapsule { offset, length } => (offset, length, sgl_subtype::OFFSET),
            Sgl::DataBlock { address, length } => (address, length, sgl_subtype::ADDRESS),
            Sgl::Transport {
                address,
                length,
                subtype,
            } => (
                address,
                length,
                (sgl_type::TRANSPORT_DATA_BLOCK << 4) | (subtype & 0xf),
            ),
            Sgl::Keyed {
                address,
                length,
                key,
                subtype,
            } => {
                w64(&mut b, 0, address);
                b[8..11].copy_from_slice(&length.to_le_bytes()[..3]);
                w32(&mut b, 11, key);
                b[15] = (sgl_type::KEYED_DATA_BLOCK << 4) | (subtype & 0xf);
                return b;
            }
            Sgl::Segment {
                address,
                length,
                last,
                subtype,
            } => {
                let ty = if last {
                    sgl_type::LAST_SEGMENT
                } else {
                    sgl_type::SEGMENT
                };
                (address, length, (ty << 4) | (subtype & 0xf))
            }
            Sgl::BitBucket { length } => (0, length, sgl_type::BIT_BUCKET << 4),
            Sgl::Other(raw) => return raw,
        };
        w64(&mut b, 0, address);
        w32(&mut b, 8, length);
        b[15] = id;
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqe_fields_round_trip() {
        let mut s = Sqe::new(0x02, 0xBEEF);
        s.set_fuse(Fuse::First);
        s.set_psdt(Psdt::SglMptrAddress);
        s.set_nsid(7);
        s.set_mptr(0x1122_3344_5566_7788);
        for n in 10..16 {
            s.set_cdw(n, 0x1000 + n as u32);
        }
        s.set_sgl(&Sgl::in_capsule(0, 4096));
        let mut buf = [0u8; 80];
        s.write_to(&mut buf).unwrap();
        let p = Sqe::from_bytes(&buf).unwrap();
        assert_eq!(p, s);
        assert_eq!(p.opcode(), 0x02);
        assert_eq!(p.cid(), 0xBEEF);
        assert_eq!(p.fuse(), Fuse::First);
        assert_eq!(p.psdt(), Psdt::SglMptrAddress);
        assert_eq!(p.nsid(), 7);
        assert_eq!(p.mptr(), 0x1122_3344_5566_7788);
        assert_eq!(p.cdw10(), 0x100a);
        assert_eq!(p.cdw15(), 0x100f);
        assert_eq!(p.cdw(16), 0);
        assert_eq!(p.sgl(), Sgl::in_capsule(0, 4096));
        // Byte layout: CID little-endian at 2, flags byte 1 = PSDT<<6 | FUSE.
        assert_eq!(&buf[..4], &[0x02, 0x41, 0xEF, 0xBE]);
        assert_eq!(buf[24 + 15], 0x01);
        assert!(Sqe::from_bytes(&buf[..63]).is_err());
    }

    #[test]
    fn sgl_forms_round_trip() {
        let forms = [
            Sgl::in_capsule(0, 8192),
            Sgl::transport(131072),
            Sgl::transport(0),
            Sgl::DataBlock {
                address: 0xdead_beef,
                length: 512,
            },
            Sgl::Keyed {
                address: 0x1234_5678_9abc,
                length: 0x00ff_ffff,
                key: 0xcafe_f00d,
                subtype: sgl_subtype::INVALIDATE_KEY,
            },
            Sgl::Segment {
                address: 0x1000,
                length: 64,
                last: true,
                subtype: 0,
            },
            Sgl::BitBucket { length: 9 },
            Sgl::Other([0x77; 16]),
        ];
        for f in forms {
            assert_eq!(Sgl::parse(&f.to_bytes()), f, "{f:?}");
        }
        // Linux's transport descriptor identifier is 0x5A.
        assert_eq!(Sgl::transport(1).to_bytes()[15], 0x5A);
        assert_eq!(Sgl::in_capsule(0, 1).to_bytes()[15], 0x01);
    }
}
