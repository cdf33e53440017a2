//! CRC32C header and data digests. NVMe/TCP uses the standard CRC32C
//! (Castagnoli, reflected, init and final XOR all-ones), stored
//! little-endian; the `crc32c` crate computes exactly that, using SSE4.2 or
//! ARMv8 CRC instructions when available.

/// Digest length on the wire.
pub const DIGEST_LEN: usize = 4;

/// CRC32C of `data`.
#[inline]
pub fn crc32c(data: &[u8]) -> u32 {
    ::crc32c::crc32c(data)
}

/// CRC32C over the concatenation of `parts` (an iovec), without copying.
#[inline]
pub fn crc32c_iov(parts: &[&[u8]]) -> u32 {
    parts
        .iter()
        .fold(0, |crc, p| ::crc32c::crc32c_append(crc, p))
}

/// Header digest bytes for `header` (the HLEN bytes of a PDU header).
#[inline]
pub fn header_digest(header: &[u8]) -> [u8; DIGEST_LEN] {
    crc32c(header).to_le_bytes()
}

/// Data digest bytes for data split across `parts`.
#[inline]
pub fn data_digest(parts: &[&[u8]]) -> [u8; DIGEST_LEN] {
    crc32c_iov(parts).to_le_bytes()
}

/// Incremental CRC32C, for data that arrives in several reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DataDigest(u32);

impl DataDigest {
    /// Starts an empty digest.
    pub const fn new() -> Self {
        DataDigest(0)
    }
    /// Feeds more bytes.
    #[inline]
    pub fn update(&mut self, data: &[u8]) {
        self.0 = ::crc32c::crc32c_append(self.0, data);
    }
    /// The CRC of everything fed so far.
    pub const fn value(&self) -> u32 {
        self.0
    }
    /// The wire form of the digest.
    pub const fn to_bytes(&self) -> [u8; DIGEST_LEN] {
        self.0.to_le_bytes()
    }
    /// Whether the received wire digest matches.
    pub fn matches(&self, wire: [u8; DIGEST_LEN]) -> bool {
        u32::from_le_bytes(wire) == self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answers() {
        // The CRC-32C check value (RFC 3720 appendix B.4 family).
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
        // RFC 3720 B.4: 32 bytes of zeroes, 32 bytes of 0xFF.
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
        let inc: Vec<u8> = (0u8..32).collect();
        assert_eq!(crc32c(&inc), 0x46DD_794E);
        assert_eq!(header_digest(b"123456789"), [0x83, 0x92, 0x06, 0xE3]);
    }

    #[test]
    fn iov_and_incremental_agree() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        let whole = crc32c(&data);
        assert_eq!(
            crc32c_iov(&[&data[..1], &data[1..500], &[], &data[500..]]),
            whole
        );
        let mut d = DataDigest::new();
        for c in data.chunks(37) {
            d.update(c);
        }
        assert_eq!(d.value(), whole);
        assert!(d.matches(whole.to_le_bytes()));
        assert_eq!(data_digest(&[&data]), whole.to_le_bytes());
    }
}
