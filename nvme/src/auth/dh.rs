//! DH-HMAC-CHAP's Diffie-Hellman groups (NVMe Base 2.0 figure 381): the
//! null group (no exchange) and the RFC 7919 finite-field groups, all with
//! generator 2. Public values and shared secrets travel big endian, padded
//! to the prime's size (as Linux's `dh` KPP and OpenSSL produce them).

use std::sync::OnceLock;

use num_bigint::BigUint;

/// Bytes of private exponent drawn per key: 512 bits, above RFC 7919
/// section 5.2's smallest recommended exponent for every group (400 bits
/// for ffdhe8192), and far cheaper than a full-size one.
pub const PRIVATE_KEY_LEN: usize = 64;
/// Largest public value or shared secret (ffdhe8192).
pub const MAX_DH_LEN: usize = 1024;

u8_enum! {
    /// DH group identifiers.
    pub enum DhGroupId {
        /// No Diffie-Hellman exchange.
        Null = 0x00,
        /// ffdhe2048.
        Ffdhe2048 = 0x01,
        /// ffdhe3072.
        Ffdhe3072 = 0x02,
        /// ffdhe4096.
        Ffdhe4096 = 0x03,
        /// ffdhe6144.
        Ffdhe6144 = 0x04,
        /// ffdhe8192.
        Ffdhe8192 = 0x05,
    }
}

/// Why a peer's public value was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DhError {
    /// Wrong length for the group.
    #[error("DH public value of {got} bytes, the group's is {want}")]
    Length {
        /// Received.
        got: usize,
        /// The prime's size.
        want: usize,
    },
    /// Not in [2, p-2] (the degenerate values 0, 1 and p-1 leak the
    /// secret).
    #[error("DH public value out of range")]
    Range,
    /// The null group has no exchange.
    #[error("the null DH group has no public value")]
    Null,
}

struct Group {
    p: BigUint,
    len: usize,
}

fn prime_hex(g: DhGroupId) -> Option<&'static str> {
    // From OpenSSL's built-in groups (`openssl genpkey -genparam
    // -algorithm DH -pkeyopt group:ffdheNNNN`), RFC 7919 appendix A.
    Some(match g {
        DhGroupId::Null => return None,
        DhGroupId::Ffdhe2048 => include_str!("ffdhe/ffdhe2048.hex"),
        DhGroupId::Ffdhe3072 => include_str!("ffdhe/ffdhe3072.hex"),
        DhGroupId::Ffdhe4096 => include_str!("ffdhe/ffdhe4096.hex"),
        DhGroupId::Ffdhe6144 => include_str!("ffdhe/ffdhe6144.hex"),
        DhGroupId::Ffdhe8192 => include_str!("ffdhe/ffdhe8192.hex"),
    })
}

fn group(g: DhGroupId) -> Option<&'static Group> {
    static GROUPS: [OnceLock<Group>; 6] = [const { OnceLock::new() }; 6];
    let hex = prime_hex(g)?;
    Some(GROUPS[g.as_u8() as usize].get_or_init(|| {
        let p = BigUint::parse_bytes(hex.trim().as_bytes(), 16).expect("embedded prime is hex");
        let len = (p.bits() as usize).div_ceil(8);
        Group { p, len }
    }))
}

fn pad(n: &BigUint, len: usize) -> Vec<u8> {
    let b = n.to_bytes_be();
    let mut out = vec![0u8; len - b.len()];
    out.extend_from_slice(&b);
    out
}

impl DhGroupId {
    /// The name SPDK's RPCs and nvme-cli use (`null`, `ffdhe2048`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            DhGroupId::Null => "null",
            DhGroupId::Ffdhe2048 => "ffdhe2048",
            DhGroupId::Ffdhe3072 => "ffdhe3072",
            DhGroupId::Ffdhe4096 => "ffdhe4096",
            DhGroupId::Ffdhe6144 => "ffdhe6144",
            DhGroupId::Ffdhe8192 => "ffdhe8192",
        }
    }

    /// The group for `name`.
    pub fn from_name(name: &str) -> Option<DhGroupId> {
        DhGroupId::ALL.iter().copied().find(|g| g.name() == name)
    }

    /// Bytes of a public value (0 for the null group).
    pub fn value_len(self) -> usize {
        group(self).map_or(0, |g| g.len)
    }
}

/// One side's ephemeral key pair, used for one transaction. (num-bigint
/// cannot wipe its limbs, so the exponent is not zeroed on drop.)
pub struct KeyPair {
    group: DhGroupId,
    x: BigUint,
    public: Vec<u8>,
}

impl core::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "KeyPair({})", self.group.name())
    }
}

impl KeyPair {
    /// A key pair of `group` from `random` (at least
    /// [`PRIVATE_KEY_LEN`] bytes from a CSPRNG); `Err` for the null group.
    pub fn generate(
        group_id: DhGroupId,
        random: &[u8; PRIVATE_KEY_LEN],
    ) -> Result<KeyPair, DhError> {
        let g = group(group_id).ok_or(DhError::Null)?;
        let mut bytes = *random;
        // Top bit set: the exponent always has its full 512 bits.
        bytes[0] |= 0x80;
        let x = BigUint::from_bytes_be(&bytes);
        bytes.fill(0);
        let y = BigUint::from(2u8).modpow(&x, &g.p);
        Ok(KeyPair {
            group: group_id,
            public: pad(&y, g.len),
            x,
        })
    }

    /// g^x mod p, padded to the prime's size.
    pub fn public(&self) -> &[u8] {
        &self.public
    }

    /// The shared secret with the peer's public value, padded to the
    /// prime's size. The peer's value must be the group's size (both
    /// Linux and SPDK pad it) and a valid element.
    pub fn shared_secret(&self, peer: &[u8]) -> Result<Vec<u8>, DhError> {
        let g = group(self.group).ok_or(DhError::Null)?;
        if peer.len() != g.len {
            return Err(DhError::Length {
                got: peer.len(),
                want: g.len,
            });
        }
        let y = BigUint::from_bytes_be(peer);
        let two = BigUint::from(2u8);
        if y < two || y > &g.p - &two {
            return Err(DhError::Range);
        }
        Ok(pad(&y.modpow(&self.x, &g.p), g.len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_have_their_sizes_and_rfc7919_shape() {
        for (g, bits) in [
            (DhGroupId::Ffdhe2048, 2048),
            (DhGroupId::Ffdhe3072, 3072),
            (DhGroupId::Ffdhe4096, 4096),
            (DhGroupId::Ffdhe6144, 6144),
            (DhGroupId::Ffdhe8192, 8192),
        ] {
            let p = &group(g).unwrap().p;
            assert_eq!(p.bits(), bits);
            assert_eq!(g.value_len(), bits as usize / 8);
            // RFC 7919: the top and bottom 64 bits are all ones, and
            // the primes start with the digits of e (ADF85458A2BB4A9A...).
            let b = p.to_bytes_be();
            assert!(b[..8].iter().all(|&x| x == 0xFF), "{}", g.name());
            assert!(b[b.len() - 8..].iter().all(|&x| x == 0xFF));
            assert_eq!(&b[8..12], &[0xAD, 0xF8, 0x54, 0x58]);
            assert_eq!(DhGroupId::from_name(g.name()), Some(g));
        }
        assert_eq!(DhGroupId::Null.value_len(), 0);
        assert_eq!(DhGroupId::from_name("null"), Some(DhGroupId::Null));
    }

    #[test]
    fn both_sides_agree_and_degenerate_values_are_refused() {
        let a = KeyPair::generate(DhGroupId::Ffdhe2048, &[3; PRIVATE_KEY_LEN]).unwrap();
        let b = KeyPair::generate(DhGroupId::Ffdhe2048, &[9; PRIVATE_KEY_LEN]).unwrap();
        let s1 = a.shared_secret(b.public()).unwrap();
        let s2 = b.shared_secret(a.public()).unwrap();
        assert_eq!(s1, s2);
        assert_eq!(s1.len(), 256);
        let mut one = vec![0u8; 256];
        one[255] = 1;
        assert_eq!(a.shared_secret(&one), Err(DhError::Range));
        let pm1 = pad(&(&group(DhGroupId::Ffdhe2048).unwrap().p - 1u8), 256);
        assert_eq!(a.shared_secret(&pm1), Err(DhError::Range));
        assert!(matches!(
            a.shared_secret(&[5; 255]),
            Err(DhError::Length { .. })
        ));
        assert!(KeyPair::generate(DhGroupId::Null, &[1; PRIVATE_KEY_LEN]).is_err());
    }
}
