//! PDU types, headers and the encoder.

use thiserror::Error;

use super::decode::Role;
use super::digest::{header_digest, DIGEST_LEN};
use crate::bytes::{r16, r32, w16, w32};
use crate::cqe::Cqe;
use crate::sqe::Sqe;

/// Length of the common header every PDU starts with.
pub const COMMON_HEADER_LEN: usize = 8;
/// PDU format version 1.0, the only one defined.
pub const PFV_1_0: u16 = 0;
/// Largest HPDA/CPDA: alignment is `(pda + 1) * 4`, so at most 128 bytes.
pub const MAX_PDA: u8 = 31;
/// ICReq/ICResp DGST bit: header digest enabled.
pub const DGST_HEADER: u8 = 1 << 0;
/// ICReq/ICResp DGST bit: data digest enabled.
pub const DGST_DATA: u8 = 1 << 1;
/// MAXH2CDATA floor: the spec requires at least 4 KiB, and a value below
/// would make the host split every write into tiny PDUs.
pub const MAXH2CDATA_MIN: u32 = 4096;
/// Most error data a received TermReq may carry (SPDK/FreeBSD
/// `TERM_REQ_ERROR_DATA_MAX_SIZE`).
pub const TERM_REQ_MAX_DATA_RX: usize = 152;
/// Most error data this crate sends in a TermReq: Linux rejects a TermReq
/// whose PLEN exceeds 152 (`NVME_TCP_MAX_C2HTERM_PLEN`), i.e. 128 bytes of
/// data after the 24-byte header, which still covers the largest header
/// (ICReq, 128 bytes).
pub const TERM_REQ_MAX_DATA_TX: usize = 128;

/// Common header flag bits.
pub mod flags {
    /// Header digest present.
    pub const HDGSTF: u8 = 1 << 0;
    /// Data digest present.
    pub const DDGSTF: u8 = 1 << 1;
    /// Last data PDU of the transfer (H2CData, C2HData).
    pub const LAST_PDU: u8 = 1 << 2;
    /// C2HData: the command completed successfully and no CapsuleResp
    /// follows (only valid together with LAST_PDU).
    pub const SUCCESS: u8 = 1 << 3;
}

u8_enum! {
    /// PDU type (common header byte 0).
    pub enum PduType {
        /// Initialize Connection Request (host to controller).
        IcReq = 0x00,
        /// Initialize Connection Response.
        IcResp = 0x01,
        /// Host to Controller Terminate Connection Request.
        H2CTermReq = 0x02,
        /// Controller to Host Terminate Connection Request.
        C2HTermReq = 0x03,
        /// Command capsule.
        CapsuleCmd = 0x04,
        /// Response capsule.
        CapsuleResp = 0x05,
        /// Host to controller data.
        H2CData = 0x06,
        /// Controller to host data.
        C2HData = 0x07,
        /// Ready to Transfer.
        R2T = 0x09,
    }
}

impl PduType {
    /// The fixed HLEN of this type.
    pub const fn header_len(self) -> u8 {
        match self {
            PduType::IcReq | PduType::IcResp => 128,
            PduType::CapsuleCmd => 72,
            _ => 24,
        }
    }

    /// Which side sends this type.
    pub const fn sender(self) -> Role {
        match self {
            PduType::IcReq | PduType::H2CTermReq | PduType::CapsuleCmd | PduType::H2CData => {
                Role::Host
            }
            _ => Role::Controller,
        }
    }

    /// Whether the type can carry PDU data.
    pub const fn carries_data(self) -> bool {
        matches!(
            self,
            PduType::CapsuleCmd
                | PduType::H2CData
                | PduType::C2HData
                | PduType::H2CTermReq
                | PduType::C2HTermReq
        )
    }

    /// Whether negotiated digests apply. ICReq/ICResp precede negotiation
    /// and TermReqs must stay readable when digests are the problem, so
    /// neither ever carries digests.
    pub const fn uses_digests(self) -> bool {
        !matches!(
            self,
            PduType::IcReq | PduType::IcResp | PduType::H2CTermReq | PduType::C2HTermReq
        )
    }

    /// Whether the type is a TermReq.
    pub const fn is_term(self) -> bool {
        matches!(self, PduType::H2CTermReq | PduType::C2HTermReq)
    }
}

/// The 8-byte common header, raw.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct CommonHeader {
    /// PDU type, raw.
    pub pdu_type: u8,
    /// Flags.
    pub flags: u8,
    /// Header length (excluding header digest).
    pub hlen: u8,
    /// PDU data offset (0 when there is no data).
    pub pdo: u8,
    /// Total PDU length including header, digests, padding and data.
    pub plen: u32,
}

impl CommonHeader {
    /// Parses 8 bytes.
    pub fn parse(b: &[u8; COMMON_HEADER_LEN]) -> Self {
        CommonHeader {
            pdu_type: b[0],
            flags: b[1],
            hlen: b[2],
            pdo: b[3],
            plen: r32(b, 4),
        }
    }
    /// Wire form.
    pub fn to_bytes(&self) -> [u8; COMMON_HEADER_LEN] {
        let mut b = [0u8; COMMON_HEADER_LEN];
        b[0] = self.pdu_type;
        b[1] = self.flags;
        b[2] = self.hlen;
        b[3] = self.pdo;
        w32(&mut b, 4, self.plen);
        b
    }
}

/// ICReq fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct IcReq {
    /// PDU format version ([`PFV_1_0`]).
    pub pfv: u16,
    /// Host PDU data alignment the host wants for C2H PDUs, 0-based dwords.
    pub hpda: u8,
    /// Digests the host requests ([`DGST_HEADER`], [`DGST_DATA`]).
    pub dgst: u8,
    /// Maximum outstanding R2Ts per command, 0-based.
    pub maxr2t: u32,
}

/// ICResp fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct IcResp {
    /// PDU format version ([`PFV_1_0`]).
    pub pfv: u16,
    /// Controller PDU data alignment for H2C PDUs, 0-based dwords.
    pub cpda: u8,
    /// Digests enabled for the connection.
    pub dgst: u8,
    /// Maximum data bytes per H2CData PDU.
    pub maxh2cdata: u32,
}

/// Fatal Error Status of a TermReq (NVMe/TCP 1.0 figures 17/18, Linux
/// `enum nvme_tcp_fatal_error_status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Fes(pub u16);

impl Fes {
    /// Invalid PDU Header Field; FEI is the byte offset of the field.
    pub const INVALID_HEADER_FIELD: Fes = Fes(0x01);
    /// PDU Sequence Error.
    pub const PDU_SEQUENCE_ERROR: Fes = Fes(0x02);
    /// Header Digest Error.
    pub const HEADER_DIGEST_ERROR: Fes = Fes(0x03);
    /// Data Transfer Out of Range (H2CData/C2HData outside the command's
    /// buffer).
    pub const DATA_OUT_OF_RANGE: Fes = Fes(0x04);
    /// In an H2CTermReq: R2T Limit Exceeded (the controller sent more
    /// R2Ts than MAXR2T).
    pub const R2T_LIMIT_EXCEEDED: Fes = Fes(0x05);
    /// In a C2HTermReq: Data Transfer Limit Exceeded (H2CData larger than
    /// MAXH2CDATA, or too much in-capsule data). Same value as
    /// [`Fes::R2T_LIMIT_EXCEEDED`]; the direction disambiguates.
    pub const DATA_LIMIT_EXCEEDED: Fes = Fes(0x05);
    /// Unsupported Parameter; FEI is the byte offset of the field.
    pub const UNSUPPORTED_PARAMETER: Fes = Fes(0x06);
}

/// H2CTermReq / C2HTermReq fields. The PDU data (the header of the PDU in
/// error) travels separately.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct TermReq {
    /// Fatal error status.
    pub fes: Fes,
    /// Fatal error information (byte offset of the bad field for
    /// [`Fes::INVALID_HEADER_FIELD`] and [`Fes::UNSUPPORTED_PARAMETER`],
    /// else 0).
    pub fei: u32,
}

/// The part of an offending PDU to echo as TermReq data.
pub fn term_req_data(offending: &[u8]) -> &[u8] {
    &offending[..offending.len().min(TERM_REQ_MAX_DATA_TX)]
}

/// H2CData / C2HData header fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct DataHdr {
    /// Command capsule CID the data belongs to.
    pub cccid: u16,
    /// Transfer tag from the R2T (H2CData; reserved in C2HData).
    pub ttag: u16,
    /// Offset of this PDU's data within the command's data.
    pub datao: u32,
    /// Length of this PDU's data.
    pub datal: u32,
}

/// R2T fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct R2t {
    /// Command capsule CID.
    pub cccid: u16,
    /// Transfer tag the host echoes in H2CData.
    pub ttag: u16,
    /// Offset of the requested data within the command's data.
    pub r2to: u32,
    /// Length of the requested data.
    pub r2tl: u32,
}

/// One PDU header, typed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pdu {
    /// ICReq.
    IcReq(IcReq),
    /// ICResp.
    IcResp(IcResp),
    /// H2CTermReq.
    H2CTermReq(TermReq),
    /// C2HTermReq.
    C2HTermReq(TermReq),
    /// CapsuleCmd; in-capsule data follows as PDU data.
    CapsuleCmd(Sqe),
    /// CapsuleResp.
    CapsuleResp(Cqe),
    /// H2CData.
    H2CData {
        /// Header fields.
        hdr: DataHdr,
        /// LAST_PDU flag.
        last: bool,
    },
    /// C2HData.
    C2HData {
        /// Header fields.
        hdr: DataHdr,
        /// LAST_PDU flag.
        last: bool,
        /// SUCCESS flag (no CapsuleResp will follow).
        success: bool,
    },
    /// R2T.
    R2T(R2t),
}

/// Transmit-side negotiated parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct TxParams {
    /// Header digests enabled.
    pub hdgst: bool,
    /// Data digests enabled.
    pub ddgst: bool,
    /// The alignment the *receiver* asked for: the host's HPDA when the
    /// controller sends, the controller's CPDA when the host sends.
    pub pda: u8,
}

/// Why a PDU could not be encoded (caller errors, never peer input).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum EncodeError {
    /// The output buffer cannot hold header, digest and padding.
    #[error("buffer too small: need {need} bytes, have {have}")]
    BufferTooSmall {
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// PDA above [`MAX_PDA`].
    #[error("PDA {0} above 31")]
    InvalidPda(u8),
    /// Data given for a type that carries none.
    #[error("{0:?} cannot carry data")]
    DataNotAllowed(PduType),
    /// PLEN would overflow, or TermReq data is too long.
    #[error("data length {0} too large")]
    DataTooLong(u32),
    /// H2CData/C2HData DATAL disagrees with the data length.
    #[error("DATAL {datal} differs from data length {data_len}")]
    DataLenMismatch {
        /// DATAL in the header.
        datal: u32,
        /// Data length passed to the encoder.
        data_len: u32,
    },
    /// C2HData SUCCESS without LAST_PDU.
    #[error("C2HData SUCCESS requires LAST_PDU")]
    SuccessWithoutLast,
}

/// Where everything sits in one PDU: produced by the encoder and by
/// [`super::decode_common_header`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PduFrame {
    /// PDU type.
    pub pdu_type: PduType,
    /// Flags as on the wire.
    pub flags: u8,
    /// HLEN.
    pub hlen: u8,
    /// PDO as on the wire.
    pub pdo: u8,
    /// PLEN.
    pub plen: u32,
    /// A header digest follows the header.
    pub hdgst: bool,
    /// A data digest follows the data.
    pub ddgst: bool,
    /// Byte offset of the data from the PDU start (PDO, or HLEN for a
    /// TermReq, or the header end when there is no data).
    pub data_offset: u32,
    /// Data bytes.
    pub data_len: u32,
}

/// Where a PDU's data sits: the part of a [`PduFrame`] that the encoder
/// (from the negotiated parameters) and the decoder (from the peer's header,
/// once checked) each work out their own way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct DataPlacement {
    pub(super) hdgst: bool,
    pub(super) ddgst: bool,
    pub(super) data_offset: u32,
    pub(super) data_len: u32,
}

impl PduFrame {
    /// The frame of a PDU with these common header fields and its data
    /// placed at `at`.
    pub(super) const fn new(
        pdu_type: PduType,
        flags: u8,
        hlen: u8,
        pdo: u8,
        plen: u32,
        at: DataPlacement,
    ) -> Self {
        PduFrame {
            pdu_type,
            flags,
            hlen,
            pdo,
            plen,
            hdgst: at.hdgst,
            ddgst: at.ddgst,
            data_offset: at.data_offset,
            data_len: at.data_len,
        }
    }

    /// Header bytes including the header digest.
    pub const fn header_len(&self) -> usize {
        self.hlen as usize + if self.hdgst { DIGEST_LEN } else { 0 }
    }
    /// Header bytes still to read after the common header.
    pub const fn remaining_header(&self) -> usize {
        self.header_len() - COMMON_HEADER_LEN
    }
    /// Padding bytes between the header (digest) and the data.
    pub const fn pad_len(&self) -> usize {
        self.data_offset as usize - self.header_len()
    }
    /// Data digest bytes after the data.
    pub const fn ddgst_len(&self) -> usize {
        if self.ddgst {
            DIGEST_LEN
        } else {
            0
        }
    }
    /// Bytes after the header: padding, data and data digest.
    pub const fn remaining_after_header(&self) -> usize {
        self.plen as usize - self.header_len()
    }
    /// Checks a received data digest against one computed over the data.
    pub fn check_data_digest(
        &self,
        computed: u32,
        wire: [u8; DIGEST_LEN],
    ) -> Result<(), super::PduError> {
        let got = u32::from_le_bytes(wire);
        if got == computed {
            Ok(())
        } else {
            Err(super::PduError::DataDigest {
                expected: computed,
                got,
            })
        }
    }

    /// Frame for transmitting `ty` with `data_len` bytes of data.
    pub fn for_tx(
        ty: PduType,
        type_flags: u8,
        p: &TxParams,
        data_len: u32,
    ) -> Result<Self, EncodeError> {
        if p.pda > MAX_PDA {
            return Err(EncodeError::InvalidPda(p.pda));
        }
        if data_len > 0 && !ty.carries_data() {
            return Err(EncodeError::DataNotAllowed(ty));
        }
        let hlen = ty.header_len();
        let digests = ty.uses_digests();
        let hdgst = digests && p.hdgst;
        let has_data = data_len > 0;
        let ddgst = digests && p.ddgst && has_data;
        let header_len = u32::from(hlen) + if hdgst { DIGEST_LEN as u32 } else { 0 };
        let (pdo, data_offset) = if ty.is_term() {
            if data_len as usize > TERM_REQ_MAX_DATA_RX {
                return Err(EncodeError::DataTooLong(data_len));
            }
            // TermReq data follows HLEN directly; PDO stays 0 as in SPDK,
            // Linux and FreeBSD.
            (0u8, u32::from(hlen))
        } else if has_data {
            let align = (u32::from(p.pda) + 1) * 4;
            let off = header_len.div_ceil(align) * align;
            // Only CapsuleCmd/H2CData/C2HData get here (ICReqs carry no
            // data, TermReqs took the branch above): header_len <= 76 and
            // align <= 128, so off <= 128 fits PDO's byte.
            (off as u8, off)
        } else {
            (0, header_len)
        };
        let plen = data_offset
            .checked_add(data_len)
            .and_then(|v| v.checked_add(if ddgst { DIGEST_LEN as u32 } else { 0 }))
            .ok_or(EncodeError::DataTooLong(data_len))?;
        let mut fl = type_flags;
        if hdgst {
            fl |= flags::HDGSTF;
        }
        if ddgst {
            fl |= flags::DDGSTF;
        }
        let at = DataPlacement {
            hdgst,
            ddgst,
            data_offset,
            data_len,
        };
        Ok(PduFrame::new(ty, fl, hlen, pdo, plen, at))
    }

    /// The common header this frame describes.
    pub fn common_header(&self) -> CommonHeader {
        CommonHeader {
            pdu_type: self.pdu_type.as_u8(),
            flags: self.flags,
            hlen: self.hlen,
            pdo: self.pdo,
            plen: self.plen,
        }
    }
}

impl Pdu {
    /// The PDU type.
    pub const fn pdu_type(&self) -> PduType {
        match self {
            Pdu::IcReq(_) => PduType::IcReq,
            Pdu::IcResp(_) => PduType::IcResp,
            Pdu::H2CTermReq(_) => PduType::H2CTermReq,
            Pdu::C2HTermReq(_) => PduType::C2HTermReq,
            Pdu::CapsuleCmd(_) => PduType::CapsuleCmd,
            Pdu::CapsuleResp(_) => PduType::CapsuleResp,
            Pdu::H2CData { .. } => PduType::H2CData,
            Pdu::C2HData { .. } => PduType::C2HData,
            Pdu::R2T(_) => PduType::R2T,
        }
    }

    /// Type specific flags (LAST_PDU, SUCCESS); digest flags come from the
    /// frame.
    const fn type_flags(&self) -> u8 {
        let (last, success) = match *self {
            Pdu::H2CData { last, .. } => (last, false),
            Pdu::C2HData { last, success, .. } => (last, success),
            _ => (false, false),
        };
        (if last { flags::LAST_PDU } else { 0 }) | (if success { flags::SUCCESS } else { 0 })
    }

    /// Writes the header, header digest and padding into `buf` for a PDU
    /// carrying `data_len` bytes of data. Returns the frame: send
    /// `buf[..frame.data_offset]`, then the data, then (if `frame.ddgst`)
    /// the data digest. For H2CData/C2HData `data_len` must equal DATAL.
    pub fn encode(
        &self,
        p: &TxParams,
        data_len: u32,
        buf: &mut [u8],
    ) -> Result<PduFrame, EncodeError> {
        match *self {
            Pdu::H2CData { hdr, .. } | Pdu::C2HData { hdr, .. } if hdr.datal != data_len => {
                return Err(EncodeError::DataLenMismatch {
                    datal: hdr.datal,
                    data_len,
                });
            }
            Pdu::C2HData {
                last: false,
                success: true,
                ..
            } => return Err(EncodeError::SuccessWithoutLast),
            _ => {}
        }
        let frame = PduFrame::for_tx(self.pdu_type(), self.type_flags(), p, data_len)?;
        let out_len = if frame.data_len > 0 {
            frame.data_offset as usize
        } else {
            frame.header_len()
        };
        if buf.len() < out_len {
            return Err(EncodeError::BufferTooSmall {
                need: out_len,
                have: buf.len(),
            });
        }
        let out = &mut buf[..out_len];
        out.fill(0);
        out[..COMMON_HEADER_LEN].copy_from_slice(&frame.common_header().to_bytes());
        match self {
            Pdu::IcReq(r) => {
                w16(out, 8, r.pfv);
                out[10] = r.hpda;
                out[11] = r.dgst;
                w32(out, 12, r.maxr2t);
            }
            Pdu::IcResp(r) => {
                w16(out, 8, r.pfv);
                out[10] = r.cpda;
                out[11] = r.dgst;
                w32(out, 12, r.maxh2cdata);
            }
            Pdu::H2CTermReq(t) | Pdu::C2HTermReq(t) => {
                w16(out, 8, t.fes.0);
                w32(out, 10, t.fei);
            }
            Pdu::CapsuleCmd(sqe) => out[8..72].copy_from_slice(sqe.as_bytes()),
            Pdu::CapsuleResp(cqe) => out[8..24].copy_from_slice(cqe.as_bytes()),
            Pdu::H2CData { hdr, .. } | Pdu::C2HData { hdr, .. } => {
                w16(out, 8, hdr.cccid);
                w16(out, 10, hdr.ttag);
                w32(out, 12, hdr.datao);
                w32(out, 16, hdr.datal);
            }
            Pdu::R2T(r) => {
                w16(out, 8, r.cccid);
                w16(out, 10, r.ttag);
                w32(out, 12, r.r2to);
                w32(out, 16, r.r2tl);
            }
        }
        if frame.hdgst {
            let h = usize::from(frame.hlen);
            let d = header_digest(&out[..h]);
            out[h..h + DIGEST_LEN].copy_from_slice(&d);
        }
        Ok(frame)
    }

    /// Parses the type specific fields of a header whose common header is
    /// already validated (`hdr` holds at least HLEN bytes).
    pub(super) fn parse_fields(ty: PduType, fl: u8, hdr: &[u8]) -> Pdu {
        let data = || DataHdr {
            cccid: r16(hdr, 8),
            ttag: r16(hdr, 10),
            datao: r32(hdr, 12),
            datal: r32(hdr, 16),
        };
        let term = || TermReq {
            fes: Fes(r16(hdr, 8)),
            fei: r32(hdr, 10),
        };
        match ty {
            PduType::IcReq => Pdu::IcReq(IcReq {
                pfv: r16(hdr, 8),
                hpda: hdr[10],
                dgst: hdr[11],
                maxr2t: r32(hdr, 12),
            }),
            PduType::IcResp => Pdu::IcResp(IcResp {
                pfv: r16(hdr, 8),
                cpda: hdr[10],
                dgst: hdr[11],
                maxh2cdata: r32(hdr, 12),
            }),
            PduType::H2CTermReq => Pdu::H2CTermReq(term()),
            PduType::C2HTermReq => Pdu::C2HTermReq(term()),
            PduType::CapsuleCmd => {
                let mut raw = [0u8; Sqe::SIZE];
                raw.copy_from_slice(&hdr[8..72]);
                Pdu::CapsuleCmd(Sqe::from_array(raw))
            }
            PduType::CapsuleResp => {
                let mut raw = [0u8; Cqe::SIZE];
                raw.copy_from_slice(&hdr[8..24]);
                Pdu::CapsuleResp(Cqe::from_array(raw))
            }
            PduType::H2CData => Pdu::H2CData {
                hdr: data(),
                last: fl & flags::LAST_PDU != 0,
            },
            PduType::C2HData => Pdu::C2HData {
                hdr: data(),
                last: fl & flags::LAST_PDU != 0,
                success: fl & flags::SUCCESS != 0,
            },
            PduType::R2T => Pdu::R2T(R2t {
                cccid: r16(hdr, 8),
                ttag: r16(hdr, 10),
                r2to: r32(hdr, 12),
                r2tl: r32(hdr, 16),
            }),
        }
    }
}
