//! Completion queue entries (16 bytes).

use crate::bytes::{r16, r32, w16, w32};
use crate::status::Status;

/// One completion queue entry in wire form.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Cqe {
    raw: [u8; Cqe::SIZE],
}

impl core::fmt::Debug for Cqe {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Cqe")
            .field("dw0", &format_args!("{:#x}", self.dw0()))
            .field("dw1", &format_args!("{:#x}", self.dw1()))
            .field("sqhd", &self.sqhd())
            .field("sqid", &self.sqid())
            .field("cid", &self.cid())
            .field("status", &self.status())
            .field("phase", &self.phase())
            .finish()
    }
}

wire_entry!(Cqe, "a CQE", 16);

impl Cqe {
    /// A completion for `cid` with the given status; other fields zero.
    pub fn new(cid: u16, status: Status) -> Self {
        let mut c = Self::default();
        c.set_cid(cid);
        c.set_status(status);
        c
    }

    /// Dword 0 (command specific result).
    pub fn dw0(&self) -> u32 {
        r32(&self.raw, 0)
    }
    /// Sets dword 0.
    pub fn set_dw0(&mut self, v: u32) {
        w32(&mut self.raw, 0, v)
    }
    /// Dword 1 (command specific result; Property Get of an 8-byte
    /// property returns the high half here).
    pub fn dw1(&self) -> u32 {
        r32(&self.raw, 4)
    }
    /// Sets dword 1.
    pub fn set_dw1(&mut self, v: u32) {
        w32(&mut self.raw, 4, v)
    }
    /// Dwords 0 and 1 as one 64-bit value (Property Get result).
    pub fn result64(&self) -> u64 {
        u64::from(self.dw0()) | (u64::from(self.dw1()) << 32)
    }
    /// Sets dwords 0 and 1 from a 64-bit value.
    pub fn set_result64(&mut self, v: u64) {
        self.set_dw0(v as u32);
        self.set_dw1((v >> 32) as u32);
    }
    /// SQ head pointer.
    pub fn sqhd(&self) -> u16 {
        r16(&self.raw, 8)
    }
    /// Sets SQHD.
    pub fn set_sqhd(&mut self, v: u16) {
        w16(&mut self.raw, 8, v)
    }
    /// SQ identifier.
    pub fn sqid(&self) -> u16 {
        r16(&self.raw, 10)
    }
    /// Sets SQID.
    pub fn set_sqid(&mut self, v: u16) {
        w16(&mut self.raw, 10, v)
    }
    /// Command identifier.
    pub fn cid(&self) -> u16 {
        r16(&self.raw, 12)
    }
    /// Sets CID.
    pub fn set_cid(&mut self, v: u16) {
        w16(&mut self.raw, 12, v)
    }
    /// Raw 16-bit status field, phase tag included.
    pub fn status_field(&self) -> u16 {
        r16(&self.raw, 14)
    }
    /// Status without the phase tag.
    pub fn status(&self) -> Status {
        Status::from_field(self.status_field()).0
    }
    /// Phase tag.
    pub fn phase(&self) -> bool {
        self.status_field() & Status::PHASE != 0
    }
    /// Sets the status, keeping the current phase tag.
    pub fn set_status(&mut self, s: Status) {
        let p = self.phase();
        w16(&mut self.raw, 14, s.to_field(p));
    }
    /// Sets the phase tag, keeping the status.
    pub fn set_phase(&mut self, p: bool) {
        let s = self.status();
        w16(&mut self.raw, 14, s.to_field(p));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cqe_round_trip_and_layout() {
        let mut c = Cqe::new(0x1234, Status::INVALID_FIELD.with_dnr());
        c.set_dw0(0xAABB_CCDD);
        c.set_dw1(0x1122_3344);
        c.set_sqhd(5);
        c.set_sqid(1);
        c.set_phase(true);
        let mut b = [0u8; 16];
        c.write_to(&mut b).unwrap();
        assert_eq!(
            b,
            [0xDD, 0xCC, 0xBB, 0xAA, 0x44, 0x33, 0x22, 0x11, 5, 0, 1, 0, 0x34, 0x12, 0x05, 0x80]
        );
        let p = Cqe::from_bytes(&b).unwrap();
        assert_eq!(p, c);
        assert_eq!(p.status(), Status::INVALID_FIELD.with_dnr());
        assert!(p.phase());
        assert_eq!(p.result64(), 0x1122_3344_AABB_CCDD);
        assert!(Cqe::from_bytes(&b[..15]).is_err());
    }
}
