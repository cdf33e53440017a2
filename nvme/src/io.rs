//! NVM command set I/O command fields: Read/Write/Compare/Write Zeroes/
//! Verify (SLBA + NLB), Dataset Management ranges.

use crate::bytes::{r32, r64, w32, w64};
use crate::error::{need, ParseError};
use crate::sqe::Sqe;

/// CDW12 bit 30: Force Unit Access.
pub const CDW12_FUA: u32 = 1 << 30;
/// CDW12 bit 31: Limited Retry.
pub const CDW12_LR: u32 = 1 << 31;
/// CDW12 bit 25 (Write Zeroes): Deallocate.
pub const CDW12_DEAC: u32 = 1 << 25;

/// Fields shared by LBA-range I/O commands (Read, Write, Compare, Write
/// Zeroes, Verify, Write Uncorrectable).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct LbaRangeCmd {
    /// Namespace.
    pub nsid: u32,
    /// Starting LBA (CDW11:CDW10).
    pub slba: u64,
    /// Number of logical blocks, 1-based (the wire value is 0-based, so a
    /// decoded value is always 1..=65536 and never zero).
    pub nlb: u32,
    /// Force Unit Access.
    pub fua: bool,
    /// Deallocate (Write Zeroes only).
    pub deac: bool,
}

impl LbaRangeCmd {
    /// Decodes the LBA range fields of `sqe` (any opcode).
    pub fn parse(sqe: &Sqe) -> Self {
        let cdw12 = sqe.cdw12();
        LbaRangeCmd {
            nsid: sqe.nsid(),
            slba: u64::from(sqe.cdw10()) | (u64::from(sqe.cdw11()) << 32),
            nlb: (cdw12 & 0xffff) + 1,
            fua: cdw12 & CDW12_FUA != 0,
            deac: cdw12 & CDW12_DEAC != 0,
        }
    }

    /// Writes the fields into `sqe` (NLB is clamped to 1..=65536).
    pub fn write(&self, sqe: &mut Sqe) {
        sqe.set_nsid(self.nsid);
        sqe.set_cdw10(self.slba as u32);
        sqe.set_cdw11((self.slba >> 32) as u32);
        let mut cdw12 = self.nlb.clamp(1, 0x1_0000) - 1;
        if self.fua {
            cdw12 |= CDW12_FUA;
        }
        if self.deac {
            cdw12 |= CDW12_DEAC;
        }
        sqe.set_cdw12(cdw12);
    }

    /// Transfer length in bytes for a namespace with `1 << lba_shift` byte
    /// blocks. Cannot overflow: nlb <= 2^16 and lba_shift is clamped to 32.
    pub fn byte_len(&self, lba_shift: u32) -> u64 {
        u64::from(self.nlb) << lba_shift.min(32)
    }

    /// Whether `[slba, slba + nlb)` fits in a namespace of `nsze` blocks
    /// (false on overflow, which a hostile SLBA near `u64::MAX` triggers).
    pub fn in_range(&self, nsze: u64) -> bool {
        self.slba
            .checked_add(u64::from(self.nlb))
            .is_some_and(|end| end <= nsze)
    }
}

/// Dataset Management CDW11 attribute: Deallocate.
pub const DSM_ATTR_DEALLOCATE: u32 = 1 << 2;
/// Dataset Management CDW11 attribute: Integral Dataset for Write.
pub const DSM_ATTR_IDW: u32 = 1 << 1;
/// Dataset Management CDW11 attribute: Integral Dataset for Read.
pub const DSM_ATTR_IDR: u32 = 1 << 0;

/// Dataset Management command fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct DsmCmd {
    /// Namespace.
    pub nsid: u32,
    /// Number of ranges, 1-based (1..=256).
    pub nr: u16,
    /// Attribute bits (CDW11).
    pub attributes: u32,
}

impl DsmCmd {
    /// Decodes CDW10/CDW11.
    pub fn parse(sqe: &Sqe) -> Self {
        DsmCmd {
            nsid: sqe.nsid(),
            nr: (sqe.cdw10() & 0xff) as u16 + 1,
            attributes: sqe.cdw11(),
        }
    }
    /// Encodes into `sqe` (NR clamped to 1..=256).
    pub fn write(&self, sqe: &mut Sqe) {
        sqe.set_nsid(self.nsid);
        sqe.set_cdw10(u32::from(self.nr.clamp(1, 256) - 1));
        sqe.set_cdw11(self.attributes);
    }
    /// Bytes of range data the command carries.
    pub fn data_len(&self) -> usize {
        usize::from(self.nr) * DsmRange::SIZE
    }
}

/// One Dataset Management range (16 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct DsmRange {
    /// Context attributes.
    pub cattr: u32,
    /// Length in logical blocks (1-based on the wire, unlike I/O NLB).
    pub nlb: u32,
    /// Starting LBA.
    pub slba: u64,
}

impl DsmRange {
    /// Size on the wire.
    pub const SIZE: usize = 16;

    /// Parses one range from the first 16 bytes of `b`.
    pub fn parse(b: &[u8]) -> Result<Self, ParseError> {
        need(Self::SIZE, b.len())?;
        Ok(DsmRange {
            cattr: r32(b, 0),
            nlb: r32(b, 4),
            slba: r64(b, 8),
        })
    }
    /// Writes into the first 16 bytes of `b`.
    pub fn write(&self, b: &mut [u8]) -> Result<(), ParseError> {
        need(Self::SIZE, b.len())?;
        w32(b, 0, self.cattr);
        w32(b, 4, self.nlb);
        w64(b, 8, self.slba);
        Ok(())
    }
    /// Iterates over the whole ranges in `data` (a trailing partial range is
    /// ignored).
    pub fn iter(data: &[u8]) -> impl Iterator<Item = DsmRange> + '_ {
        data.chunks_exact(Self::SIZE)
            .filter_map(|c| DsmRange::parse(c).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lba_range_round_trip() {
        let c = LbaRangeCmd {
            nsid: 1,
            slba: 0x1_0000_0002,
            nlb: 8,
            fua: true,
            deac: false,
        };
        let mut s = Sqe::new(0x01, 3);
        c.write(&mut s);
        assert_eq!(s.cdw10(), 2);
        assert_eq!(s.cdw11(), 1);
        assert_eq!(s.cdw12(), 7 | CDW12_FUA);
        assert_eq!(LbaRangeCmd::parse(&s), c);
        assert_eq!(c.byte_len(9), 4096);
        assert!(c.in_range(0x1_0000_000A));
        assert!(!c.in_range(0x1_0000_0009));
        let huge = LbaRangeCmd {
            slba: u64::MAX,
            ..c
        };
        assert!(!huge.in_range(u64::MAX));
    }

    #[test]
    fn dsm_round_trip() {
        let d = DsmCmd {
            nsid: 2,
            nr: 256,
            attributes: DSM_ATTR_DEALLOCATE,
        };
        let mut s = Sqe::new(0x09, 1);
        d.write(&mut s);
        assert_eq!(s.cdw10(), 255);
        assert_eq!(DsmCmd::parse(&s), d);
        assert_eq!(d.data_len(), 4096);
        let r = DsmRange {
            cattr: 1,
            nlb: 2,
            slba: 3,
        };
        let mut b = [0u8; 40];
        r.write(&mut b).unwrap();
        r.write(&mut b[16..]).unwrap();
        let v: Vec<_> = DsmRange::iter(&b).collect();
        assert_eq!(v, vec![r, r]);
    }
}
