//! DH-HMAC-CHAP's hash functions and the two computations on a challenge
//! (NVMe Base 2.0 section 8.13.5.5): the augmented challenge (the
//! challenge bound to the DH shared secret) and the response
//! `HMAC(Kx, Ca || seq || tid || SCC || role || nqn1 || 00h || nqn2)`.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha384, Sha512};

/// The largest hash output (SHA-512): challenges and responses fit in it.
pub const MAX_HASH_LEN: usize = 64;

/// Role string of the host's response (the controller checks it).
pub const ROLE_HOST: &[u8] = b"HostHost";
/// Role string of the controller's response (bidirectional mode).
pub const ROLE_CONTROLLER: &[u8] = b"Controller";

u8_enum! {
    /// DH-HMAC-CHAP hash function identifiers (NVMe Base 2.0 figure 380).
    pub enum HashId {
        /// SHA-256.
        Sha256 = 0x01,
        /// SHA-384.
        Sha384 = 0x02,
        /// SHA-512.
        Sha512 = 0x03,
    }
}

/// A hash output or HMAC, at most [`MAX_HASH_LEN`] bytes, kept inline so
/// the computations never allocate.
#[derive(Clone, PartialEq, Eq)]
pub struct Mac64 {
    buf: [u8; MAX_HASH_LEN],
    len: usize,
}

impl core::fmt::Debug for Mac64 {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Responses are secrets' images: show only the length.
        write!(f, "Mac64({} bytes)", self.len)
    }
}

impl Mac64 {
    fn from_slice(s: &[u8]) -> Mac64 {
        let mut buf = [0u8; MAX_HASH_LEN];
        buf[..s.len()].copy_from_slice(s);
        Mac64 { buf, len: s.len() }
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Constant-time comparison with a peer's value, so a guessing host
    /// learns nothing from how fast a wrong response is refused.
    pub fn ct_eq(&self, other: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        self.len == other.len() && bool::from(self.as_slice().ct_eq(other))
    }
}

impl Drop for Mac64 {
    fn drop(&mut self) {
        self.buf.fill(0);
    }
}

impl HashId {
    /// Output length in bytes (the messages' HL).
    pub const fn hash_len(self) -> usize {
        match self {
            HashId::Sha256 => 32,
            HashId::Sha384 => 48,
            HashId::Sha512 => 64,
        }
    }

    /// The name SPDK's RPCs and nvme-cli use (`sha256`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            HashId::Sha256 => "sha256",
            HashId::Sha384 => "sha384",
            HashId::Sha512 => "sha512",
        }
    }

    /// The hash for `name` (as [`HashId::name`] spells it).
    pub fn from_name(name: &str) -> Option<HashId> {
        HashId::ALL.iter().copied().find(|h| h.name() == name)
    }

    /// H(data).
    pub fn digest(self, data: &[u8]) -> Mac64 {
        match self {
            HashId::Sha256 => Mac64::from_slice(&Sha256::digest(data)),
            HashId::Sha384 => Mac64::from_slice(&Sha384::digest(data)),
            HashId::Sha512 => Mac64::from_slice(&Sha512::digest(data)),
        }
    }

    /// HMAC(key, parts[0] || parts[1] || ...).
    pub fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Mac64 {
        fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> Mac64 {
            // HMAC takes keys of any length (longer ones are hashed).
            let mut m = <M as hmac::digest::KeyInit>::new_from_slice(key)
                .expect("HMAC accepts every key length");
            for p in parts {
                m.update(p);
            }
            Mac64::from_slice(&m.finalize().into_bytes())
        }
        match self {
            HashId::Sha256 => run::<Hmac<Sha256>>(key, parts),
            HashId::Sha384 => run::<Hmac<Sha384>>(key, parts),
            HashId::Sha512 => run::<Hmac<Sha512>>(key, parts),
        }
    }
}

/// The challenge the response is computed over: `C` itself with the null
/// DH group, else `HMAC(H(g^xy mod p), C)` (section 8.13.5.5.1).
pub fn augmented_challenge(hash: HashId, challenge: &[u8], dh_secret: Option<&[u8]>) -> Mac64 {
    match dh_secret {
        None => Mac64::from_slice(challenge),
        Some(s) => hash.hmac(hash.digest(s).as_slice(), &[challenge]),
    }
}

/// What one response covers, besides the key and the challenge.
#[derive(Clone, Copy, Debug)]
pub struct ResponseParams<'a> {
    /// Negotiated hash.
    pub hash: HashId,
    /// Sequence number the challenger sent (S1, or S2 for the controller's
    /// response).
    pub seqnum: u32,
    /// Transaction ID.
    pub tid: u16,
    /// Secure channel concatenation (0: none).
    pub scc: u8,
    /// [`ROLE_HOST`] or [`ROLE_CONTROLLER`].
    pub role: &'a [u8],
    /// The responder's NQN (the host's for the host's response).
    pub nqn1: &'a str,
    /// The other side's NQN.
    pub nqn2: &'a str,
}

/// The response to `challenge` with the transformed key `key`, as Linux
/// `nvme_auth_dhchap_setup_host_response` and SPDK
/// `spdk_nvme_dhchap_calculate` compute it (integers little endian).
pub fn response(
    key: &[u8],
    p: &ResponseParams<'_>,
    challenge: &[u8],
    dh_secret: Option<&[u8]>,
) -> Mac64 {
    let ca = augmented_challenge(p.hash, challenge, dh_secret);
    p.hash.hmac(
        key,
        &[
            ca.as_slice(),
            &p.seqnum.to_le_bytes(),
            &p.tid.to_le_bytes(),
            &[p.scc],
            p.role,
            p.nqn1.as_bytes(),
            &[0],
            p.nqn2.as_bytes(),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        // RFC 4231 test case 2: key "Jefe".
        let data: &[u8] = b"what do ya want for nothing?";
        let (a, b) = data.split_at(7);
        assert_eq!(
            HashId::Sha256.hmac(b"Jefe", &[a, b]).as_slice(),
            hex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        );
        assert_eq!(HashId::Sha512.hmac(b"Jefe", &[data]).as_slice().len(), 64);
        assert_eq!(
            HashId::Sha384.hmac(b"Jefe", &[data]).as_slice(),
            hex(
                "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e\
                 8e2240ca5e69e2c78b3239ecfab21649"
            )
        );
    }

    #[test]
    fn names_round_trip() {
        for &h in HashId::ALL {
            assert_eq!(HashId::from_name(h.name()), Some(h));
            assert_eq!(h.digest(b"").as_slice().len(), h.hash_len());
        }
        assert_eq!(HashId::from_name("md5"), None);
    }

    #[test]
    fn without_dh_the_challenge_is_used_as_is() {
        let c = [7u8; 32];
        assert_eq!(augmented_challenge(HashId::Sha256, &c, None).as_slice(), &c);
        assert_ne!(
            augmented_challenge(HashId::Sha256, &c, Some(&[1, 2, 3])).as_slice(),
            &c
        );
    }

    #[test]
    fn constant_time_compare_checks_length_and_bytes() {
        let m = HashId::Sha256.digest(b"x");
        assert!(m.ct_eq(m.as_slice()));
        assert!(!m.ct_eq(&m.as_slice()[..31]));
        let mut other = m.as_slice().to_vec();
        other[5] ^= 1;
        assert!(!m.ct_eq(&other));
    }
}
