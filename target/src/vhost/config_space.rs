//! The virtio-blk device configuration space and feature bits.

use super::request::{Limits, SECTOR_SIZE};

/// virtio-blk feature bits (virtio 1.2, 5.2.3).
pub mod features {
    /// `size_max` is valid.
    pub const SIZE_MAX: u64 = 1 << 1;
    /// `seg_max` is valid.
    pub const SEG_MAX: u64 = 1 << 2;
    /// Read-only device.
    pub const RO: u64 = 1 << 5;
    /// `blk_size` is valid.
    pub const BLK_SIZE: u64 = 1 << 6;
    /// Flush command.
    pub const FLUSH: u64 = 1 << 9;
    /// `topology` is valid.
    pub const TOPOLOGY: u64 = 1 << 10;
    /// Writeback mode can be toggled through `writeback`.
    pub const CONFIG_WCE: u64 = 1 << 11;
    /// Several virtqueues (`num_queues`).
    pub const MQ: u64 = 1 << 12;
    /// Discard command.
    pub const DISCARD: u64 = 1 << 13;
    /// Write zeroes command.
    pub const WRITE_ZEROES: u64 = 1 << 14;
    /// Indirect descriptors (virtio 1.2, 6).
    pub const INDIRECT_DESC: u64 = 1 << 28;
    /// used_event / avail_event notification suppression.
    pub const EVENT_IDX: u64 = 1 << 29;
    /// vhost-user: the protocol-features handshake exists.
    pub const PROTOCOL_FEATURES: u64 = 1 << 30;
    /// Modern (virtio 1.x) device.
    pub const VERSION_1: u64 = 1 << 32;
}

/// Bytes of `struct virtio_blk_config` up to and including
/// `write_zeroes_may_unmap` and its padding (virtio 1.2, 5.2.4); fields
/// after that (secure erase, zoned) are not offered and read as zero.
pub const CONFIG_LEN: usize = 60;

/// The device's configuration space for `limits`, `num_queues` queues and
/// the current write-cache mode.
pub fn config_space(
    limits: &Limits,
    num_queues: u16,
    writeback: bool,
    opt_io_bytes: u32,
) -> [u8; CONFIG_LEN] {
    let mut c = [0u8; CONFIG_LEN];
    let mut put = |off: usize, bytes: &[u8]| c[off..off + bytes.len()].copy_from_slice(bytes);
    let bs = limits.block_size.max(SECTOR_SIZE as u32);
    put(0, &limits.capacity_sectors.to_le_bytes());
    put(8, &limits.size_max.to_le_bytes());
    put(12, &limits.seg_max.to_le_bytes());
    // geometry (16..20) stays zero: GEOMETRY is not offered.
    put(20, &bs.to_le_bytes());
    // topology: physical_block_exp, alignment_offset, min_io_size (in
    // logical blocks), opt_io_size (in logical blocks).
    put(24, &[0, 0]);
    put(26, &1u16.to_le_bytes());
    put(28, &(opt_io_bytes / bs).to_le_bytes());
    put(32, &[u8::from(writeback)]);
    put(34, &num_queues.to_le_bytes());
    let sectors_per_block = bs / SECTOR_SIZE as u32;
    put(36, &limits.max_dwz_sectors.to_le_bytes());
    put(40, &limits.max_dwz_seg.to_le_bytes());
    put(44, &sectors_per_block.to_le_bytes());
    put(48, &limits.max_dwz_sectors.to_le_bytes());
    put(52, &limits.max_dwz_seg.to_le_bytes());
    // write_zeroes_may_unmap: we zero; unmapping is not promised.
    put(56, &[0]);
    c
}

/// Offset of `writeback` in the config space (the only writable field).
pub const WRITEBACK_OFFSET: usize = 32;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_land_where_the_spec_says() {
        let l = crate::vhost::request::tests::limits();
        let c = config_space(&l, 2, true, 4096);
        assert_eq!(u64::from_le_bytes(c[0..8].try_into().unwrap()), 1 << 20);
        assert_eq!(u32::from_le_bytes(c[20..24].try_into().unwrap()), 512);
        assert_eq!(u16::from_le_bytes(c[34..36].try_into().unwrap()), 2);
        assert_eq!(c[WRITEBACK_OFFSET], 1);
        assert_eq!(u32::from_le_bytes(c[28..32].try_into().unwrap()), 8);
    }
}
