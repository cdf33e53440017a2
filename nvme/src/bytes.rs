//! Little-endian field access on fixed-size buffers.
//!
//! Offsets passed here are compile-time constants of this crate, never values
//! read off the wire, so an out-of-range offset is a bug in this crate (and is
//! caught by the unit tests), not something a peer can trigger.

#[inline]
pub(crate) fn r16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

#[inline]
pub(crate) fn r32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

#[inline]
pub(crate) fn r64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

#[inline]
pub(crate) fn r128(b: &[u8], off: usize) -> u128 {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[off..off + 16]);
    u128::from_le_bytes(a)
}

#[inline]
pub(crate) fn w16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}

#[inline]
pub(crate) fn w32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

#[inline]
pub(crate) fn w64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

#[inline]
pub(crate) fn w128(b: &mut [u8], off: usize, v: u128) {
    b[off..off + 16].copy_from_slice(&v.to_le_bytes());
}

#[inline]
pub(crate) fn arr<const N: usize>(b: &[u8], off: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[off..off + N]);
    a
}

/// Writes `s` into `dst`, padded with `pad`; truncates silently because the
/// callers are fixed-width identity strings (SN/MN/FR, TRADDR) whose length
/// is validated where it matters.
pub(crate) fn put_padded(dst: &mut [u8], s: &[u8], pad: u8) {
    let n = s.len().min(dst.len());
    dst[..n].copy_from_slice(&s[..n]);
    for b in &mut dst[n..] {
        *b = pad;
    }
}

/// The string in a fixed-width field, with trailing NULs and spaces removed
/// (the specs use space padding for ASCII fields and NUL termination for
/// NQNs; peers mix them up, so the reader accepts both).
pub(crate) fn trimmed(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    let mut s = &field[..end];
    while let [rest @ .., b' '] = s {
        s = rest;
    }
    s
}
