//! Controller registers (NVMe Base 2.0, section 3.1.4) and what we read
//! out of them. Pure: the values come from `mmio`, the logic is tested here.

use std::time::Duration;

/// Controller Capabilities (64-bit).
pub const CAP: usize = 0x00;
/// Version.
pub const VS: usize = 0x08;
/// Controller Configuration.
pub const CC: usize = 0x14;
/// Controller Status.
pub const CSTS: usize = 0x1c;
/// Admin Queue Attributes.
pub const AQA: usize = 0x24;
/// Admin Submission Queue base address (64-bit).
pub const ASQ: usize = 0x28;
/// Admin Completion Queue base address (64-bit).
pub const ACQ: usize = 0x30;
/// First doorbell: the admin SQ tail.
pub const DOORBELL_BASE: usize = 0x1000;

/// CC.EN.
pub const CC_EN: u32 = 1;
/// CC.SHN = 01b, normal shutdown.
pub const CC_SHN_NORMAL: u32 = 1 << 14;
/// CC.IOSQES = 6 (64-byte SQEs) and CC.IOCQES = 4 (16-byte CQEs): the only
/// entry sizes of the NVM command set.
pub const CC_ENTRY_SIZES: u32 = (6 << 16) | (4 << 20);

/// CSTS.RDY.
pub const CSTS_RDY: u32 = 1;
/// CSTS.CFS: controller fatal status.
pub const CSTS_CFS: u32 = 1 << 1;
/// CSTS.SHST mask and the "shutdown complete" value.
pub const CSTS_SHST_MASK: u32 = 0b11 << 2;
/// CSTS.SHST = 10b.
pub const CSTS_SHST_DONE: u32 = 0b10 << 2;

/// What a read of a register returns once the device is gone: PCIe
/// completer aborts read as all ones.
pub const REMOVED: u32 = u32::MAX;

/// The host memory page size we run the controller at (CC.MPS = 0). Every
/// controller supports it (CAP.MPSMIN is 4 KiB or less in practice; we check).
pub const PAGE: usize = 4096;

/// The fields of CAP the driver uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cap {
    /// Maximum queue entries supported (MQES + 1, so at least 2).
    pub max_entries: u32,
    /// Doorbell stride in bytes (4 << DSTRD).
    pub doorbell_stride: usize,
    /// Worst-case time to become ready or not ready (CAP.TO, 500 ms units).
    pub timeout: Duration,
    /// Smallest supported memory page size in bytes.
    pub mps_min: usize,
    /// NVM command set supported (CAP.CSS bit 0).
    pub nvm_css: bool,
}

impl Cap {
    /// Decodes the register.
    pub fn parse(v: u64) -> Cap {
        let mqes = (v & 0xffff) as u32;
        let to = (v >> 24) & 0xff;
        let dstrd = ((v >> 32) & 0xf) as u32;
        let css = (v >> 37) & 0xff;
        let mpsmin = ((v >> 48) & 0xf) as u32;
        Cap {
            // MQES is 0's based and 0 is reserved: a controller reporting it
            // still gets the minimum of two entries.
            max_entries: (mqes + 1).max(2),
            doorbell_stride: 4usize << dstrd,
            // A timeout of 0 is reserved; wait at least one unit.
            timeout: Duration::from_millis(500 * to.max(1)),
            mps_min: 1usize << (12 + mpsmin),
            nvm_css: css & 1 != 0,
        }
    }

    /// Byte offset of the tail doorbell of SQ `qid`.
    pub fn sq_doorbell(&self, qid: u16) -> usize {
        DOORBELL_BASE + (2 * qid as usize) * self.doorbell_stride
    }

    /// Byte offset of the head doorbell of CQ `qid`.
    pub fn cq_doorbell(&self, qid: u16) -> usize {
        DOORBELL_BASE + (2 * qid as usize + 1) * self.doorbell_stride
    }
}

/// The CC value that enables the controller with our settings.
pub fn cc_enable() -> u32 {
    // CSS = 000b (NVM command set), MPS = 0 (4 KiB), AMS = round robin.
    CC_EN | CC_ENTRY_SIZES
}

/// AQA for admin queues of `entries` entries each.
pub fn aqa(entries: u16) -> u32 {
    let n = u32::from(entries - 1);
    (n << 16) | n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_fields() {
        // QEMU's nvme: MQES 2047, CQR, TO 15 (7.5 s), DSTRD 0, CSS NVM, MPSMIN 0.
        let v: u64 = 0x07ff | (1 << 16) | (0x0f << 24) | (1 << 37);
        let c = Cap::parse(v);
        assert_eq!(c.max_entries, 2048);
        assert_eq!(c.timeout, Duration::from_millis(7500));
        assert_eq!(c.doorbell_stride, 4);
        assert_eq!(c.mps_min, 4096);
        assert!(c.nvm_css);
        assert_eq!(c.sq_doorbell(0), 0x1000);
        assert_eq!(c.cq_doorbell(0), 0x1004);
        assert_eq!(c.sq_doorbell(3), 0x1018);
        assert_eq!(c.cq_doorbell(3), 0x101c);
    }

    #[test]
    fn cap_stride_and_reserved_values() {
        let c = Cap::parse(2u64 << 32);
        assert_eq!(c.doorbell_stride, 16);
        assert_eq!(c.cq_doorbell(1), 0x1000 + 3 * 16);
        // MQES 0 and TO 0 are reserved: the driver still gets sane values.
        assert_eq!(c.max_entries, 2);
        assert_eq!(c.timeout, Duration::from_millis(500));
        assert!(!c.nvm_css);
    }

    #[test]
    fn aqa_is_zero_based() {
        assert_eq!(aqa(32), (31 << 16) | 31);
    }
}
