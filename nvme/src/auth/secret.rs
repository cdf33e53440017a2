//! The DH-HMAC-CHAP secret representation (NVMe Base 2.0 section
//! 8.13.5.8, what `nvme gen-dhchap-key` prints and `nvme connect
//! --dhchap-secret` takes):
//!
//! ```text
//! DHHC-1:<hh>:<base64 of key || CRC-32 of key, little endian>:
//! ```
//!
//! `hh` names the hash of the key transformation (00: none), and the key
//! is 32, 48 or 64 bytes. The transformed key that keys the response HMAC
//! is `HMAC(key, NQN || "NVMe-over-Fabrics")` with that hash.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::chap::{HashId, Mac64};

/// The representation's prefix and version.
const PREFIX: &str = "DHHC-1:";
/// Key lengths the representation allows (one per hash output size).
const KEY_LENS: [usize; 3] = [32, 48, 64];
/// Bytes of the CRC-32 after the key.
const CRC_LEN: usize = 4;
/// Appended to the NQN in the key transformation.
const TRANSFORM_SUFFIX: &[u8] = b"NVMe-over-Fabrics";

/// Why a secret's text was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// Not `DHHC-1:hh:...:`.
    #[error("not a DHHC-1 secret (want DHHC-1:<hh>:<base64>:)")]
    Format,
    /// The transformation hash is not 00 to 03.
    #[error("unknown key transformation hash {0:?}")]
    Hash(String),
    /// The base64 part does not decode.
    #[error("the key is not base64")]
    Base64,
    /// The key is not 32, 48 or 64 bytes.
    #[error("key length {0} is not 32, 48 or 64 bytes")]
    Length(usize),
    /// The CRC-32 after the key does not match.
    #[error("key checksum mismatch")]
    Crc,
}

/// A parsed secret. Its bytes are wiped when it is dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    /// The key transformation's hash; `None` uses the key as it is.
    pub transform: Option<HashId>,
    key: Vec<u8>,
}

impl core::fmt::Debug for Secret {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "Secret({:?}, {} bytes)",
            self.transform.map(HashId::name),
            self.key.len()
        )
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.key.fill(0);
    }
}

impl Secret {
    /// A secret of `key` (32, 48 or 64 bytes).
    pub fn new(transform: Option<HashId>, key: &[u8]) -> Result<Secret, SecretError> {
        if !KEY_LENS.contains(&key.len()) {
            return Err(SecretError::Length(key.len()));
        }
        Ok(Secret {
            transform,
            key: key.to_vec(),
        })
    }

    /// Parses the representation; surrounding white space (a key file's
    /// newline) is ignored.
    pub fn parse(text: &str) -> Result<Secret, SecretError> {
        let rest = text
            .trim()
            .strip_prefix(PREFIX)
            .ok_or(SecretError::Format)?;
        let (hh, rest) = rest.split_once(':').ok_or(SecretError::Format)?;
        let b64 = rest.strip_suffix(':').ok_or(SecretError::Format)?;
        let transform = match hh {
            "00" => None,
            "01" => Some(HashId::Sha256),
            "02" => Some(HashId::Sha384),
            "03" => Some(HashId::Sha512),
            _ => return Err(SecretError::Hash(hh.chars().take(8).collect())),
        };
        // The longest valid value decodes to 68 bytes: refuse anything
        // larger before decoding it.
        if b64.len() > 4 * (KEY_LENS[2] + CRC_LEN).div_ceil(3) {
            return Err(SecretError::Length(b64.len() / 4 * 3));
        }
        let mut raw = STANDARD.decode(b64).map_err(|_| SecretError::Base64)?;
        let res = Self::from_raw(transform, &raw);
        raw.fill(0);
        res
    }

    fn from_raw(transform: Option<HashId>, raw: &[u8]) -> Result<Secret, SecretError> {
        let Some(klen) = raw.len().checked_sub(CRC_LEN) else {
            return Err(SecretError::Length(raw.len()));
        };
        if !KEY_LENS.contains(&klen) {
            return Err(SecretError::Length(klen));
        }
        let (key, crc) = raw.split_at(klen);
        if crc32fast::hash(key).to_le_bytes() != crc {
            return Err(SecretError::Crc);
        }
        Secret::new(transform, key)
    }

    /// The representation (`DHHC-1:hh:...:`).
    pub fn to_text(&self) -> String {
        let hh = self.transform.map_or(0, HashId::as_u8);
        let mut raw = self.key.clone();
        raw.extend_from_slice(&crc32fast::hash(&self.key).to_le_bytes());
        let s = format!("{PREFIX}{hh:02x}:{}:", STANDARD.encode(&raw));
        raw.fill(0);
        s
    }

    /// The key bytes (before transformation).
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The transformed key for `nqn` (the responder's NQN): the key that
    /// keys the response HMAC.
    pub fn transformed(&self, nqn: &str) -> Mac64OrKey<'_> {
        match self.transform {
            None => Mac64OrKey::Key(&self.key),
            Some(h) => Mac64OrKey::Mac(h.hmac(&self.key, &[nqn.as_bytes(), TRANSFORM_SUFFIX])),
        }
    }
}

/// A transformed key: the key itself (transformation 00) or its HMAC.
#[derive(Debug)]
pub enum Mac64OrKey<'a> {
    /// Untransformed.
    Key(&'a [u8]),
    /// Transformed.
    Mac(Mac64),
}

impl Mac64OrKey<'_> {
    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Mac64OrKey::Key(k) => k,
            Mac64OrKey::Mac(m) => m.as_slice(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_it_prints_and_checks_the_crc() {
        for (h, len) in [
            (None, 32),
            (Some(HashId::Sha256), 32),
            (Some(HashId::Sha384), 48),
            (Some(HashId::Sha512), 64),
        ] {
            let key: Vec<u8> = (0..len as u8).collect();
            let s = Secret::new(h, &key).unwrap();
            let text = s.to_text();
            assert!(text.starts_with(&format!("DHHC-1:0{}:", h.map_or(0, HashId::as_u8))));
            assert_eq!(Secret::parse(&format!("{text}\n")).unwrap(), s);
        }
        let good = Secret::new(None, &[1; 32]).unwrap().to_text();
        // Flip one key character: the CRC no longer matches.
        let mut bad = good.clone().into_bytes();
        bad[12] = if bad[12] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            Secret::parse(core::str::from_utf8(&bad).unwrap()),
            Err(SecretError::Crc)
        );
    }

    #[test]
    fn refuses_malformed_text() {
        assert_eq!(Secret::parse("DHHC-2:00:AAAA:"), Err(SecretError::Format));
        assert_eq!(Secret::parse("DHHC-1:00:AAAA"), Err(SecretError::Format));
        assert!(matches!(
            Secret::parse("DHHC-1:07:AAAA:"),
            Err(SecretError::Hash(_))
        ));
        assert_eq!(Secret::parse("DHHC-1:00:!!!!:"), Err(SecretError::Base64));
        assert_eq!(
            Secret::parse("DHHC-1:00:AAAA:"),
            Err(SecretError::Length(3))
        );
        let long = format!("DHHC-1:00:{}:", "A".repeat(10_000));
        assert!(matches!(Secret::parse(&long), Err(SecretError::Length(_))));
        assert!(Secret::new(None, &[0; 31]).is_err());
    }

    #[test]
    fn transformation_is_hmac_of_nqn_and_suffix() {
        let key = [0x11u8; 32];
        let s = Secret::new(None, &key).unwrap();
        assert_eq!(s.transformed("nqn.x").as_slice(), &key);
        let s = Secret::new(Some(HashId::Sha256), &key).unwrap();
        let want = HashId::Sha256.hmac(&key, &[b"nqn.xNVMe-over-Fabrics"]);
        assert_eq!(s.transformed("nqn.x").as_slice(), want.as_slice());
    }
}
