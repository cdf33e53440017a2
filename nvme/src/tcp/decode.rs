//! Incremental, allocation-free PDU decoding with typed errors that map to
//! the TermReq a receiver must send.

use thiserror::Error;

use super::digest::{crc32c, DIGEST_LEN};
use super::pdu::{
    flags, DataPlacement, Fes, Pdu, PduFrame, PduType, TermReq, COMMON_HEADER_LEN, MAXH2CDATA_MIN,
    MAX_PDA, PFV_1_0, TERM_REQ_MAX_DATA_RX,
};
use crate::bytes::r32;
use crate::status::Status;

/// Which end of the connection is decoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The controller (target): receives ICReq, H2CTermReq, CapsuleCmd,
    /// H2CData.
    Controller,
    /// The host (initiator): receives ICResp, C2HTermReq, CapsuleResp,
    /// C2HData, R2T.
    Host,
}

/// What the receiver accepts. Every length the peer sends is checked
/// against these before the caller sizes a buffer from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Limits {
    /// Receiving side.
    pub role: Role,
    /// ICReq/ICResp exchange done: before it only the IC PDU (and a
    /// TermReq) is valid, after it the IC PDU is a sequence error.
    pub ic_done: bool,
    /// Header digests negotiated.
    pub hdgst: bool,
    /// Data digests negotiated.
    pub ddgst: bool,
    /// Alignment this side asked for (controller: its CPDA; host: its
    /// HPDA); PDO of received data PDUs must be a multiple of
    /// `(rx_pda + 1) * 4`.
    pub rx_pda: u8,
    /// Largest CapsuleCmd data (controller: in-capsule size, IOCCSZ * 16 -
    /// 64 on I/O queues and at least 1024 for Connect on the admin queue).
    pub max_in_capsule: u32,
    /// Largest H2CData (controller: the MAXH2CDATA it advertised) or
    /// C2HData (host: what it is prepared to receive in one PDU).
    pub max_data: u32,
}

impl Limits {
    /// Limits before the IC exchange: no digests, no data.
    pub const fn new(role: Role) -> Self {
        Limits {
            role,
            ic_done: false,
            hdgst: false,
            ddgst: false,
            rx_pda: 0,
            max_in_capsule: 0,
            max_data: 0,
        }
    }

    /// Limits after a successful IC exchange.
    pub const fn established(
        role: Role,
        hdgst: bool,
        ddgst: bool,
        rx_pda: u8,
        max_in_capsule: u32,
        max_data: u32,
    ) -> Self {
        Limits {
            role,
            ic_done: true,
            hdgst,
            ddgst,
            rx_pda,
            max_in_capsule,
            max_data,
        }
    }

    /// Largest whole PDU these limits accept, for sizing a receive buffer
    /// once up front (header 72 + digest 4 + padding < 128 + data + 4).
    pub const fn max_pdu_len(&self) -> u64 {
        let data = if self.max_in_capsule > self.max_data {
            self.max_in_capsule
        } else {
            self.max_data
        };
        256 + data as u64 + DIGEST_LEN as u64
    }
}

/// Byte offsets of PDU header fields, reported as the FEI of a TermReq
/// with [`super::Fes::INVALID_HEADER_FIELD`] or
/// [`super::Fes::UNSUPPORTED_PARAMETER`]
/// (the FEI of those two statuses is the offset of the offending field
/// from the PDU's first byte). Both ends' receive paths name fields by
/// these, so no TermReq carries a bare number.
pub mod fei {
    /// Common header: PDU-Type.
    pub const TYPE: u32 = 0;
    /// Common header: FLAGS.
    pub const FLAGS: u32 = 1;
    /// Common header: HLEN.
    pub const HLEN: u32 = 2;
    /// Common header: PDO.
    pub const PDO: u32 = 3;
    /// Common header: PLEN.
    pub const PLEN: u32 = 4;
    /// ICReq / ICResp: PFV.
    pub const PFV: u32 = 8;
    /// ICReq: HPDA; ICResp: CPDA.
    pub const PDA: u32 = 10;
    /// ICResp: MAXH2CDATA.
    pub const MAXH2CDATA: u32 = 12;
    /// H2CData / C2HData / R2T: CCCID, the command the PDU belongs to.
    pub const CCCID: u32 = 8;
    /// H2CData / R2T: TTAG, the transfer tag the controller handed out.
    pub const TTAG: u32 = 10;
    /// H2CData / C2HData: DATAO.
    pub const DATAO: u32 = 12;
    /// H2CData / C2HData: DATAL.
    pub const DATAL: u32 = 16;
}

/// Why a received PDU was rejected.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum PduError {
    /// Fewer bytes than needed were passed in; read more and call again.
    /// Not a protocol error.
    #[error("need {need} bytes, have {have}")]
    Truncated {
        /// Bytes needed.
        need: usize,
        /// Bytes given.
        have: usize,
    },
    /// Unknown PDU type, or one the other side never sends to us.
    #[error("invalid PDU type {0:#04x} for this direction")]
    InvalidType(u8),
    /// A valid type at the wrong time (IC PDU twice, data before IC).
    #[error("{0:?} out of sequence")]
    Sequence(PduType),
    /// Digest flags disagree with the negotiation, or SUCCESS without
    /// LAST_PDU.
    #[error("invalid flags {flags:#04x} for {pdu_type:?}")]
    InvalidFlags {
        /// PDU type.
        pdu_type: PduType,
        /// Flags received.
        flags: u8,
    },
    /// HLEN is not the fixed length of the type.
    #[error("HLEN {got} for {pdu_type:?}, expected {expected}")]
    InvalidHlen {
        /// PDU type.
        pdu_type: PduType,
        /// Expected HLEN.
        expected: u8,
        /// Received HLEN.
        got: u8,
    },
    /// PDO inside the header, misaligned, or past PLEN.
    #[error("invalid PDO {0}")]
    InvalidPdo(u8),
    /// PLEN shorter than the header, data on a type without data, or
    /// a data length inconsistent with PDO and the digests.
    #[error("invalid PLEN {0}")]
    InvalidPlen(u32),
    /// Data length beyond [`Limits`].
    #[error("{pdu_type:?} data length {len} exceeds limit {max}")]
    DataLimitExceeded {
        /// PDU type.
        pdu_type: PduType,
        /// Data length implied by PLEN.
        len: u32,
        /// Limit.
        max: u32,
    },
    /// Header digest mismatch.
    #[error("header digest mismatch: computed {expected:#010x}, received {got:#010x}")]
    HeaderDigest {
        /// CRC computed over the header.
        expected: u32,
        /// CRC received.
        got: u32,
    },
    /// A type specific field is invalid; `offset` is its byte offset in the
    /// PDU header.
    #[error("invalid header field at byte {offset}")]
    InvalidField {
        /// Byte offset from the PDU start.
        offset: u32,
    },
    /// A type specific field has a defined but unsupported value (PFV).
    #[error("unsupported parameter at byte {offset}")]
    Unsupported {
        /// Byte offset from the PDU start.
        offset: u32,
    },
    /// Data digest mismatch. Not fatal: complete the command with
    /// [`Status::TRANSIENT_TRANSPORT_ERROR`] (controller) or fail and retry
    /// it (host).
    #[error("data digest mismatch: computed {expected:#010x}, received {got:#010x}")]
    DataDigest {
        /// CRC computed over the data.
        expected: u32,
        /// CRC received.
        got: u32,
    },
}

impl PduError {
    /// Whether the connection must be terminated.
    pub const fn is_fatal(&self) -> bool {
        !matches!(
            self,
            PduError::Truncated { .. } | PduError::DataDigest { .. }
        )
    }

    /// The TermReq fields to send for this error, `None` when no TermReq is
    /// due (truncated input, data digest errors). The caller picks
    /// H2CTermReq or C2HTermReq by its role and appends
    /// [`super::term_req_data`] of the offending header.
    pub fn term_req(&self) -> Option<TermReq> {
        let (fes, fei) = match *self {
            PduError::Truncated { .. } | PduError::DataDigest { .. } => return None,
            PduError::InvalidType(_) => (Fes::INVALID_HEADER_FIELD, fei::TYPE),
            PduError::Sequence(_) => (Fes::PDU_SEQUENCE_ERROR, 0),
            PduError::InvalidFlags { .. } => (Fes::INVALID_HEADER_FIELD, fei::FLAGS),
            PduError::InvalidHlen { .. } => (Fes::INVALID_HEADER_FIELD, fei::HLEN),
            PduError::InvalidPdo(_) => (Fes::INVALID_HEADER_FIELD, fei::PDO),
            PduError::InvalidPlen(_) => (Fes::INVALID_HEADER_FIELD, fei::PLEN),
            // FES 05h means "data transfer limit exceeded" only in a
            // C2HTermReq; a host that got too much C2HData reports the PLEN
            // field instead (05h from a host means R2T limit exceeded).
            PduError::DataLimitExceeded { pdu_type, .. } => {
                if pdu_type == PduType::C2HData {
                    (Fes::INVALID_HEADER_FIELD, fei::PLEN)
                } else {
                    (Fes::DATA_LIMIT_EXCEEDED, 0)
                }
            }
            PduError::HeaderDigest { .. } => (Fes::HEADER_DIGEST_ERROR, 0),
            PduError::InvalidField { offset } => (Fes::INVALID_HEADER_FIELD, offset),
            PduError::Unsupported { offset } => (Fes::UNSUPPORTED_PARAMETER, offset),
        };
        Some(TermReq { fes, fei })
    }

    /// For non-fatal errors, the completion status to report.
    pub const fn status(&self) -> Option<Status> {
        match self {
            PduError::DataDigest { .. } => Some(Status::TRANSIENT_TRANSPORT_ERROR),
            _ => None,
        }
    }
}

/// Validates the 8-byte common header at the start of `ch` against
/// `limits` and returns the frame: how many more header bytes to read
/// ([`PduFrame::remaining_header`]) and how many padding/data/digest bytes
/// follow. Never panics and never trusts a length it has not bounded.
pub fn decode_common_header(ch: &[u8], limits: &Limits) -> Result<PduFrame, PduError> {
    let Some(b) = ch.get(..COMMON_HEADER_LEN) else {
        return Err(PduError::Truncated {
            need: COMMON_HEADER_LEN,
            have: ch.len(),
        });
    };
    let (raw_type, fl, hlen, pdo, plen) = (b[0], b[1], b[2], b[3], r32(b, 4));

    let ty = PduType::from_u8(raw_type).ok_or(PduError::InvalidType(raw_type))?;
    let peer = match limits.role {
        Role::Controller => Role::Host,
        Role::Host => Role::Controller,
    };
    if ty.sender() != peer {
        return Err(PduError::InvalidType(raw_type));
    }
    let is_ic = matches!(ty, PduType::IcReq | PduType::IcResp);
    if !ty.is_term() && is_ic == limits.ic_done {
        return Err(PduError::Sequence(ty));
    }
    if hlen != ty.header_len() {
        return Err(PduError::InvalidHlen {
            pdu_type: ty,
            expected: ty.header_len(),
            got: hlen,
        });
    }

    let at = if ty.is_term() {
        // Digest and PDO rules do not apply: a TermReq must be readable
        // even when digests are what failed, and it is never answered.
        let data_len = plen
            .checked_sub(u32::from(hlen))
            .ok_or(PduError::InvalidPlen(plen))?;
        if data_len as usize > TERM_REQ_MAX_DATA_RX {
            return Err(PduError::InvalidPlen(plen));
        }
        DataPlacement {
            hdgst: false,
            ddgst: false,
            data_offset: u32::from(hlen),
            data_len,
        }
    } else {
        place_data(ty, fl, hlen, pdo, plen, limits)?
    };
    Ok(PduFrame::new(ty, fl, hlen, pdo, plen, at))
}

/// Where the data of a PDU other than a TermReq sits, checked against the
/// digests negotiated in `limits`, PDA alignment and the data limits.
fn place_data(
    ty: PduType,
    fl: u8,
    hlen: u8,
    pdo: u8,
    plen: u32,
    limits: &Limits,
) -> Result<DataPlacement, PduError> {
    let bad_flags = Err(PduError::InvalidFlags {
        pdu_type: ty,
        flags: fl,
    });
    let hdgstf = fl & flags::HDGSTF != 0;
    let ddgstf = fl & flags::DDGSTF != 0;

    let hd = limits.hdgst && ty.uses_digests();
    if hdgstf != hd {
        return bad_flags;
    }
    if ty == PduType::C2HData && fl & flags::SUCCESS != 0 && fl & flags::LAST_PDU == 0 {
        return bad_flags;
    }
    let header_len = u32::from(hlen) + if hd { DIGEST_LEN as u32 } else { 0 };
    if plen < header_len {
        return Err(PduError::InvalidPlen(plen));
    }

    if plen == header_len {
        // No data: PDO is meaningless and ignored; a data digest without
        // data is malformed.
        if ddgstf {
            return bad_flags;
        }
        return Ok(DataPlacement {
            hdgst: hd,
            ddgst: false,
            data_offset: header_len,
            data_len: 0,
        });
    }

    if !ty.carries_data() {
        return Err(PduError::InvalidPlen(plen));
    }
    let dd = limits.ddgst && ty.uses_digests();
    if ddgstf != dd {
        return bad_flags;
    }
    let align = (u32::from(limits.rx_pda.min(MAX_PDA)) + 1) * 4;
    let pdo32 = u32::from(pdo);
    if pdo32 < header_len || pdo32 % align != 0 || pdo32 > plen {
        return Err(PduError::InvalidPdo(pdo));
    }
    let data_len = plen
        .checked_sub(pdo32 + if dd { DIGEST_LEN as u32 } else { 0 })
        .filter(|&n| n > 0)
        .ok_or(PduError::InvalidPlen(plen))?;
    let max = match ty {
        PduType::CapsuleCmd => limits.max_in_capsule,
        _ => limits.max_data,
    };
    if data_len > max {
        return Err(PduError::DataLimitExceeded {
            pdu_type: ty,
            len: data_len,
            max,
        });
    }
    Ok(DataPlacement {
        hdgst: hd,
        ddgst: dd,
        data_offset: pdo32,
        data_len,
    })
}

/// Parses a full PDU header: `header` starts at the PDU's first byte and
/// holds at least `frame.header_len()` bytes (the common header is
/// re-validated, so the frame cannot disagree with the bytes). Checks the
/// header digest and the type specific fields.
pub fn decode_header(header: &[u8], limits: &Limits) -> Result<(PduFrame, Pdu), PduError> {
    let frame = decode_common_header(header, limits)?;
    let need = frame.header_len();
    let Some(h) = header.get(..need) else {
        return Err(PduError::Truncated {
            need,
            have: header.len(),
        });
    };
    let hlen = usize::from(frame.hlen);
    if frame.hdgst {
        let expected = crc32c(&h[..hlen]);
        let got = r32(h, hlen);
        if expected != got {
            return Err(PduError::HeaderDigest { expected, got });
        }
    }
    let pdu = Pdu::parse_fields(frame.pdu_type, frame.flags, h);
    match pdu {
        Pdu::IcReq(r) => {
            if r.pfv != PFV_1_0 {
                return Err(PduError::Unsupported { offset: fei::PFV });
            }
            if r.hpda > MAX_PDA {
                return Err(PduError::InvalidField { offset: fei::PDA });
            }
        }
        Pdu::IcResp(r) => {
            if r.pfv != PFV_1_0 {
                return Err(PduError::Unsupported { offset: fei::PFV });
            }
            if r.cpda > MAX_PDA {
                return Err(PduError::InvalidField { offset: fei::PDA });
            }
            if r.maxh2cdata < MAXH2CDATA_MIN || r.maxh2cdata % 4 != 0 {
                return Err(PduError::InvalidField {
                    offset: fei::MAXH2CDATA,
                });
            }
        }
        Pdu::H2CData { hdr, .. } | Pdu::C2HData { hdr, .. } if hdr.datal != frame.data_len => {
            return Err(PduError::InvalidField { offset: fei::DATAL });
        }
        _ => {}
    }
    Ok((frame, pdu))
}
