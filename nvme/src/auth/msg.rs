//! The authentication messages (NVMe Base 2.0 section 8.13.5 and figures
//! 376 to 389) as they travel in Authentication Send/Receive data. Every
//! message starts with the same six bytes: AUTH_TYPE, AUTH_ID, two
//! reserved bytes, and the transaction ID T_ID (little endian).
//!
//! Parsers take the whole transfer and refuse anything whose length does
//! not match the lengths the message declares, with the AUTH_Failure
//! explanation the spec names for it.

use crate::bytes::{r16, r32, w16, w32};

use super::chap::{HashId, MAX_HASH_LEN};
use super::dh::{DhGroupId, MAX_DH_LEN};

/// The common header's size.
pub const HEADER_LEN: usize = 6;
/// AUTH_Negotiate before its descriptors.
pub const NEGOTIATE_LEN: usize = 8;
/// One protocol descriptor in AUTH_Negotiate.
pub const DESCRIPTOR_LEN: usize = 64;
/// Identifier lists in a descriptor hold up to 30 entries each.
pub const ID_LIST_LEN: usize = 30;
/// The fixed part of Challenge, Reply, Success1 and Success2.
pub const DHCHAP_FIXED_LEN: usize = 16;
/// AUTH_Failure1/2.
pub const FAILURE_LEN: usize = 8;
/// AUTH_Failure reason code: "authentication failure" (the only one).
pub const RC_FAILURE: u8 = 0x01;
/// Protocol descriptors a Negotiate may carry (NAPD): only one protocol
/// exists, so a host listing more than a few is malformed.
const NAPD_MAX: u8 = 4;

u8_enum! {
    /// AUTH_TYPE.
    pub enum AuthType {
        /// Common messages (Negotiate, Failure1/2).
        Common = 0x00,
        /// DH-HMAC-CHAP messages.
        Dhchap = 0x01,
    }
}

u8_enum! {
    /// AUTH_ID.
    pub enum AuthId {
        /// AUTH_Negotiate (common).
        Negotiate = 0x00,
        /// DH-HMAC-CHAP_Challenge.
        Challenge = 0x01,
        /// DH-HMAC-CHAP_Reply.
        Reply = 0x02,
        /// DH-HMAC-CHAP_Success1.
        Success1 = 0x03,
        /// DH-HMAC-CHAP_Success2.
        Success2 = 0x04,
        /// AUTH_Failure2 (host to controller, common).
        Failure2 = 0xF0,
        /// AUTH_Failure1 (controller to host, common).
        Failure1 = 0xF1,
    }
}

u8_enum! {
    /// AUTH_Failure reason code explanations (RCE, figure 389).
    pub enum FailureReason {
        /// Authentication failed (wrong response, missing key).
        Failed = 0x01,
        /// No usable authentication protocol.
        ProtocolUnusable = 0x02,
        /// Secure channel concatenation mismatch.
        SccMismatch = 0x03,
        /// No usable hash function.
        HashUnusable = 0x04,
        /// No usable DH group.
        DhGroupUnusable = 0x05,
        /// Incorrect payload (lengths, fields).
        IncorrectPayload = 0x06,
        /// Incorrect protocol message (out of sequence).
        IncorrectProtocolMessage = 0x07,
    }
}

/// Authentication protocol identifier of DH-HMAC-CHAP in a descriptor.
pub const PROTOCOL_DHCHAP: u8 = 0x01;

/// The six-byte header every message starts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// AUTH_TYPE (raw: unknown types are refused by the caller).
    pub auth_type: u8,
    /// AUTH_ID.
    pub auth_id: u8,
    /// T_ID.
    pub tid: u16,
}

impl Header {
    /// Reads the header; `None` if the data is shorter.
    pub fn parse(b: &[u8]) -> Option<Header> {
        if b.len() < HEADER_LEN {
            return None;
        }
        Some(Header {
            auth_type: b[0],
            auth_id: b[1],
            tid: r16(b, 4),
        })
    }

    /// The (type, id) pair, when both are known.
    pub fn kind(&self) -> Option<(AuthType, AuthId)> {
        Some((
            AuthType::from_u8(self.auth_type)?,
            AuthId::from_u8(self.auth_id)?,
        ))
    }

    fn write(t: AuthType, id: AuthId, tid: u16, out: &mut [u8]) {
        out[0] = t.as_u8();
        out[1] = id.as_u8();
        out[2] = 0;
        out[3] = 0;
        w16(out, 4, tid);
    }
}

fn ensure(out: &[u8], need: usize) -> Result<(), FailureReason> {
    if out.len() < need {
        Err(FailureReason::IncorrectPayload)
    } else {
        Ok(())
    }
}

/// The DH-HMAC-CHAP protocol descriptor of an AUTH_Negotiate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DhchapProtocol {
    /// HALEN entries of the hash list (raw identifiers).
    pub hashes: [u8; ID_LIST_LEN],
    /// Entries used.
    pub halen: u8,
    /// DHLEN entries of the DH group list.
    pub dhgroups: [u8; ID_LIST_LEN],
    /// Entries used.
    pub dhlen: u8,
}

impl DhchapProtocol {
    /// A descriptor listing `hashes` and `groups`.
    pub fn new(hashes: &[HashId], groups: &[DhGroupId]) -> DhchapProtocol {
        let mut d = DhchapProtocol {
            hashes: [0; ID_LIST_LEN],
            halen: hashes.len().min(ID_LIST_LEN) as u8,
            dhgroups: [0; ID_LIST_LEN],
            dhlen: groups.len().min(ID_LIST_LEN) as u8,
        };
        for (o, h) in d.hashes.iter_mut().zip(hashes) {
            *o = h.as_u8();
        }
        for (o, g) in d.dhgroups.iter_mut().zip(groups) {
            *o = g.as_u8();
        }
        d
    }

    /// Whether the host lists hash `h`.
    pub fn offers_hash(&self, h: HashId) -> bool {
        self.hashes[..self.halen as usize].contains(&h.as_u8())
    }

    /// Whether the host lists DH group `g`.
    pub fn offers_dhgroup(&self, g: DhGroupId) -> bool {
        self.dhgroups[..self.dhlen as usize].contains(&g.as_u8())
    }
}

/// AUTH_Negotiate (host to controller, figure 376).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Negotiate {
    /// T_ID: every later message of the transaction carries it.
    pub tid: u16,
    /// Secure channel concatenation (SC_C): 0 = none.
    pub sc_c: u8,
    /// The DH-HMAC-CHAP descriptor, if the host offered that protocol.
    pub dhchap: Option<DhchapProtocol>,
}

impl Negotiate {
    /// Parses the whole transfer.
    pub fn parse(b: &[u8]) -> Result<Negotiate, FailureReason> {
        let h = Header::parse(b).ok_or(FailureReason::IncorrectPayload)?;
        if b.len() < NEGOTIATE_LEN {
            return Err(FailureReason::IncorrectPayload);
        }
        let napd = b[7];
        if napd == 0 || napd > NAPD_MAX || b.len() != NEGOTIATE_LEN + DESCRIPTOR_LEN * napd as usize
        {
            return Err(FailureReason::IncorrectPayload);
        }
        let mut dhchap = None;
        for d in b[NEGOTIATE_LEN..].chunks_exact(DESCRIPTOR_LEN) {
            if d[0] != PROTOCOL_DHCHAP || dhchap.is_some() {
                continue;
            }
            let (halen, dhlen) = (d[2], d[3]);
            if halen as usize > ID_LIST_LEN || dhlen as usize > ID_LIST_LEN {
                return Err(FailureReason::IncorrectPayload);
            }
            let mut p = DhchapProtocol {
                hashes: [0; ID_LIST_LEN],
                halen,
                dhgroups: [0; ID_LIST_LEN],
                dhlen,
            };
            p.hashes.copy_from_slice(&d[4..4 + ID_LIST_LEN]);
            p.dhgroups.copy_from_slice(&d[4 + ID_LIST_LEN..]);
            dhchap = Some(p);
        }
        Ok(Negotiate {
            tid: h.tid,
            sc_c: b[6],
            dhchap,
        })
    }

    /// Writes it (one DH-HMAC-CHAP descriptor); returns its length.
    pub fn write(&self, out: &mut [u8]) -> Result<usize, FailureReason> {
        let len = NEGOTIATE_LEN + DESCRIPTOR_LEN * usize::from(self.dhchap.is_some());
        ensure(out, len)?;
        out[..len].fill(0);
        Header::write(AuthType::Common, AuthId::Negotiate, self.tid, out);
        out[6] = self.sc_c;
        if let Some(p) = &self.dhchap {
            out[7] = 1;
            let d = &mut out[NEGOTIATE_LEN..len];
            d[0] = PROTOCOL_DHCHAP;
            d[2] = p.halen;
            d[3] = p.dhlen;
            d[4..4 + ID_LIST_LEN].copy_from_slice(&p.hashes);
            d[4 + ID_LIST_LEN..].copy_from_slice(&p.dhgroups);
        }
        Ok(len)
    }
}

/// DH-HMAC-CHAP_Challenge (controller to host, figure 382).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Challenge<'a> {
    /// T_ID.
    pub tid: u16,
    /// Selected hash (HL is its length).
    pub hash: HashId,
    /// Selected DH group.
    pub dhgroup: DhGroupId,
    /// S1.
    pub seqnum: u32,
    /// C1, HL bytes.
    pub cval: &'a [u8],
    /// The controller's DH public value (empty for the null group).
    pub dhv: &'a [u8],
}

impl<'a> Challenge<'a> {
    /// Writes it; returns its length.
    pub fn write(&self, out: &mut [u8]) -> Result<usize, FailureReason> {
        let hl = self.hash.hash_len();
        if self.cval.len() != hl || self.dhv.len() > MAX_DH_LEN {
            return Err(FailureReason::IncorrectPayload);
        }
        let len = DHCHAP_FIXED_LEN + hl + self.dhv.len();
        ensure(out, len)?;
        out[..len].fill(0);
        Header::write(AuthType::Dhchap, AuthId::Challenge, self.tid, out);
        out[6] = hl as u8;
        out[8] = self.hash.as_u8();
        out[9] = self.dhgroup.as_u8();
        w16(out, 10, self.dhv.len() as u16);
        w32(out, 12, self.seqnum);
        out[16..16 + hl].copy_from_slice(self.cval);
        out[16 + hl..len].copy_from_slice(self.dhv);
        Ok(len)
    }

    /// Parses a challenge (the host's side); `b` may be longer than the
    /// message (a Receive buffer).
    pub fn parse(b: &'a [u8]) -> Result<Challenge<'a>, FailureReason> {
        let h = Header::parse(b).ok_or(FailureReason::IncorrectPayload)?;
        if h.kind() != Some((AuthType::Dhchap, AuthId::Challenge)) || b.len() < DHCHAP_FIXED_LEN {
            return Err(FailureReason::IncorrectProtocolMessage);
        }
        let hash = HashId::from_u8(b[8]).ok_or(FailureReason::HashUnusable)?;
        let dhgroup = DhGroupId::from_u8(b[9]).ok_or(FailureReason::DhGroupUnusable)?;
        let hl = b[6] as usize;
        let dhvlen = r16(b, 10) as usize;
        if hl != hash.hash_len() || b.len() < DHCHAP_FIXED_LEN + hl + dhvlen {
            return Err(FailureReason::IncorrectPayload);
        }
        Ok(Challenge {
            tid: h.tid,
            hash,
            dhgroup,
            seqnum: r32(b, 12),
            cval: &b[16..16 + hl],
            dhv: &b[16 + hl..16 + hl + dhvlen],
        })
    }
}

/// DH-HMAC-CHAP_Reply (host to controller, figure 383).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply<'a> {
    /// T_ID.
    pub tid: u16,
    /// R1, the host's response (HL bytes).
    pub rval: &'a [u8],
    /// CVALID: the host asks the controller to authenticate itself with
    /// C2 and S2.
    pub cvalid: bool,
    /// S2 (0 unless CVALID).
    pub seqnum: u32,
    /// C2, HL bytes (zeroes unless CVALID).
    pub cval: &'a [u8],
    /// The host's DH public value.
    pub dhv: &'a [u8],
}

impl<'a> Reply<'a> {
    /// Parses the whole transfer, for the hash the controller selected.
    pub fn parse(b: &'a [u8], hash: HashId) -> Result<Reply<'a>, FailureReason> {
        let h = Header::parse(b).ok_or(FailureReason::IncorrectPayload)?;
        if b.len() < DHCHAP_FIXED_LEN {
            return Err(FailureReason::IncorrectPayload);
        }
        let hl = hash.hash_len();
        let dhvlen = r16(b, 10) as usize;
        if b[6] as usize != hl
            || dhvlen % 4 != 0
            || dhvlen > MAX_DH_LEN
            || b.len() != DHCHAP_FIXED_LEN + 2 * hl + dhvlen
        {
            return Err(FailureReason::IncorrectPayload);
        }
        let cvalid = match b[8] {
            0 => false,
            1 => true,
            _ => return Err(FailureReason::IncorrectPayload),
        };
        let seqnum = r32(b, 12);
        // A controller challenge needs a non-zero S2 (section 8.13.5.5.2).
        if cvalid && seqnum == 0 {
            return Err(FailureReason::IncorrectPayload);
        }
        Ok(Reply {
            tid: h.tid,
            rval: &b[16..16 + hl],
            cvalid,
            seqnum,
            cval: &b[16 + hl..16 + 2 * hl],
            dhv: &b[16 + 2 * hl..],
        })
    }

    /// Writes it; returns its length.
    pub fn write(&self, out: &mut [u8]) -> Result<usize, FailureReason> {
        let hl = self.rval.len();
        if hl > MAX_HASH_LEN || self.cval.len() != hl {
            return Err(FailureReason::IncorrectPayload);
        }
        let len = DHCHAP_FIXED_LEN + 2 * hl + self.dhv.len();
        ensure(out, len)?;
        out[..len].fill(0);
        Header::write(AuthType::Dhchap, AuthId::Reply, self.tid, out);
        out[6] = hl as u8;
        out[8] = u8::from(self.cvalid);
        w16(out, 10, self.dhv.len() as u16);
        w32(out, 12, self.seqnum);
        out[16..16 + hl].copy_from_slice(self.rval);
        out[16 + hl..16 + 2 * hl].copy_from_slice(self.cval);
        out[16 + 2 * hl..len].copy_from_slice(self.dhv);
        Ok(len)
    }
}

/// DH-HMAC-CHAP_Success1 (controller to host, figure 384).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Success1<'a> {
    /// T_ID.
    pub tid: u16,
    /// HL: the hash length, always set (Linux checks it even without
    /// RVALID).
    pub hl: u8,
    /// R2, the controller's response, when the host asked for one.
    pub rval: Option<&'a [u8]>,
}

impl<'a> Success1<'a> {
    /// Writes it; returns its length.
    pub fn write(&self, out: &mut [u8]) -> Result<usize, FailureReason> {
        let rlen = self.rval.map_or(0, <[u8]>::len);
        let len = DHCHAP_FIXED_LEN + rlen;
        ensure(out, len)?;
        out[..len].fill(0);
        Header::write(AuthType::Dhchap, AuthId::Success1, self.tid, out);
        out[6] = self.hl;
        if let Some(r) = self.rval {
            out[8] = 1;
            out[16..len].copy_from_slice(r);
        }
        Ok(len)
    }

    /// Parses it (host side); `b` may be a longer Receive buffer.
    pub fn parse(b: &'a [u8]) -> Result<Success1<'a>, FailureReason> {
        let h = Header::parse(b).ok_or(FailureReason::IncorrectPayload)?;
        if h.kind() != Some((AuthType::Dhchap, AuthId::Success1)) || b.len() < DHCHAP_FIXED_LEN {
            return Err(FailureReason::IncorrectProtocolMessage);
        }
        let hl = b[6];
        let rval = if b[8] == 1 {
            let end = DHCHAP_FIXED_LEN + hl as usize;
            if b.len() < end {
                return Err(FailureReason::IncorrectPayload);
            }
            Some(&b[DHCHAP_FIXED_LEN..end])
        } else {
            None
        };
        Ok(Success1 {
            tid: h.tid,
            hl,
            rval,
        })
    }
}

/// DH-HMAC-CHAP_Success2 (host to controller, figure 385): the host
/// accepted the controller's response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Success2 {
    /// T_ID.
    pub tid: u16,
}

impl Success2 {
    /// Parses the whole transfer.
    pub fn parse(b: &[u8]) -> Result<Success2, FailureReason> {
        let h = Header::parse(b).ok_or(FailureReason::IncorrectPayload)?;
        if b.len() != DHCHAP_FIXED_LEN {
            return Err(FailureReason::IncorrectPayload);
        }
        Ok(Success2 { tid: h.tid })
    }

    /// Writes it; returns its length.
    pub fn write(&self, out: &mut [u8]) -> Result<usize, FailureReason> {
        ensure(out, DHCHAP_FIXED_LEN)?;
        out[..DHCHAP_FIXED_LEN].fill(0);
        Header::write(AuthType::Dhchap, AuthId::Success2, self.tid, out);
        Ok(DHCHAP_FIXED_LEN)
    }
}

/// AUTH_Failure1 (controller to host) or AUTH_Failure2 (host to
/// controller), figure 388.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Failure1 (from the controller) or Failure2.
    pub id: AuthId,
    /// T_ID.
    pub tid: u16,
    /// Reason code (RC): [`RC_FAILURE`].
    pub rc: u8,
    /// Explanation (RCE), raw: a host may send values this crate does not
    /// name.
    pub rce: u8,
}

impl Failure {
    /// An AUTH_Failure1 for `reason`.
    pub fn failure1(tid: u16, reason: FailureReason) -> Failure {
        Failure {
            id: AuthId::Failure1,
            tid,
            rc: RC_FAILURE,
            rce: reason.as_u8(),
        }
    }

    /// Writes it; returns its length.
    pub fn write(&self, out: &mut [u8]) -> Result<usize, FailureReason> {
        ensure(out, FAILURE_LEN)?;
        Header::write(AuthType::Common, self.id, self.tid, out);
        out[6] = self.rc;
        out[7] = self.rce;
        Ok(FAILURE_LEN)
    }

    /// Parses a Failure1 or Failure2; `b` may be longer (a Receive
    /// buffer).
    pub fn parse(b: &[u8]) -> Result<Failure, FailureReason> {
        let h = Header::parse(b).ok_or(FailureReason::IncorrectPayload)?;
        let id = match h.kind() {
            Some((AuthType::Common, id @ (AuthId::Failure1 | AuthId::Failure2))) => id,
            _ => return Err(FailureReason::IncorrectProtocolMessage),
        };
        if b.len() < FAILURE_LEN {
            return Err(FailureReason::IncorrectPayload);
        }
        Ok(Failure {
            id,
            tid: h.tid,
            rc: b[6],
            rce: b[7],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiate_round_trips_and_lengths_are_checked() {
        let n = Negotiate {
            tid: 0x1234,
            sc_c: 0,
            dhchap: Some(DhchapProtocol::new(HashId::ALL, DhGroupId::ALL)),
        };
        let mut b = [0u8; 128];
        let len = n.write(&mut b).unwrap();
        // Linux's nvme_auth_set_dhchap_negotiate_data: 8 + one 64-byte
        // descriptor, hashes at byte 4, groups at byte 34 of it.
        assert_eq!(len, 72);
        assert_eq!(&b[..8], &[0, 0, 0, 0, 0x34, 0x12, 0, 1]);
        assert_eq!(&b[8..15], &[1, 0, 3, 6, 1, 2, 3]);
        assert_eq!(&b[8 + 34..8 + 40], &[0, 1, 2, 3, 4, 5]);
        let p = Negotiate::parse(&b[..len]).unwrap();
        assert_eq!(p, n);
        let d = p.dhchap.unwrap();
        assert!(d.offers_hash(HashId::Sha384) && d.offers_dhgroup(DhGroupId::Ffdhe8192));
        assert_eq!(
            Negotiate::parse(&b[..71]),
            Err(FailureReason::IncorrectPayload)
        );
        assert_eq!(
            Negotiate::parse(&b[..8]),
            Err(FailureReason::IncorrectPayload)
        );
        b[8 + 2] = 31;
        assert_eq!(
            Negotiate::parse(&b[..len]),
            Err(FailureReason::IncorrectPayload)
        );
    }

    #[test]
    fn challenge_and_reply_round_trip() {
        let cval = [5u8; 48];
        let dhv = [9u8; 384];
        let c = Challenge {
            tid: 7,
            hash: HashId::Sha384,
            dhgroup: DhGroupId::Ffdhe3072,
            seqnum: 0xAABBCCDD,
            cval: &cval,
            dhv: &dhv,
        };
        let mut b = vec![0u8; 4096];
        let len = c.write(&mut b).unwrap();
        assert_eq!(len, 16 + 48 + 384);
        assert_eq!(
            &b[..16],
            &[1, 1, 0, 0, 7, 0, 48, 0, 2, 2, 0x80, 1, 0xDD, 0xCC, 0xBB, 0xAA]
        );
        assert_eq!(Challenge::parse(&b).unwrap(), c);

        let r = Reply {
            tid: 7,
            rval: &[1; 48],
            cvalid: true,
            seqnum: 3,
            cval: &[2; 48],
            dhv: &dhv,
        };
        let len = r.write(&mut b).unwrap();
        assert_eq!(Reply::parse(&b[..len], HashId::Sha384).unwrap(), r);
        assert_eq!(
            Reply::parse(&b[..len - 1], HashId::Sha384),
            Err(FailureReason::IncorrectPayload)
        );
        assert_eq!(
            Reply::parse(&b[..len], HashId::Sha256),
            Err(FailureReason::IncorrectPayload)
        );
        b[12..16].fill(0);
        assert_eq!(
            Reply::parse(&b[..len], HashId::Sha384),
            Err(FailureReason::IncorrectPayload),
            "CVALID with S2 = 0"
        );
    }

    #[test]
    fn success_and_failure_messages() {
        let mut b = [0u8; 128];
        let len = Success1 {
            tid: 2,
            hl: 32,
            rval: None,
        }
        .write(&mut b)
        .unwrap();
        assert_eq!(len, 16);
        assert_eq!(&b[..9], &[1, 3, 0, 0, 2, 0, 32, 0, 0]);
        let r = [4u8; 32];
        let s = Success1 {
            tid: 2,
            hl: 32,
            rval: Some(&r),
        };
        assert_eq!(s.write(&mut b).unwrap(), 48);
        assert_eq!(Success1::parse(&b).unwrap(), s);

        let len = Success2 { tid: 9 }.write(&mut b).unwrap();
        assert_eq!(Success2::parse(&b[..len]), Ok(Success2 { tid: 9 }));
        assert!(Success2::parse(&b[..15]).is_err());

        let f = Failure::failure1(9, FailureReason::Failed);
        assert_eq!(f.write(&mut b).unwrap(), 8);
        assert_eq!(&b[..8], &[0, 0xF1, 0, 0, 9, 0, 1, 1]);
        assert_eq!(Failure::parse(&b[..8]), Ok(f));
    }
}
