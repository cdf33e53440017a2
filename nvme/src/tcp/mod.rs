//! NVMe/TCP transport (NVMe/TCP Transport Specification 1.0): PDU headers,
//! their encoders, the incremental decoder and CRC32C digests.
//!
//! Receive path, for either role:
//! 1. read [`COMMON_HEADER_LEN`] bytes, call [`decode_common_header`]: it
//!    validates type/flags/HLEN/PDO/PLEN against [`Limits`] and returns a
//!    [`PduFrame`] that says how many header bytes, padding bytes, data
//!    bytes and digest bytes follow;
//! 2. read the rest of the header (`frame.header_len()` bytes in all, header
//!    digest included), call [`decode_header`]: it checks the header digest
//!    and parses the PDU specific fields into a [`Pdu`];
//! 3. skip `frame.pad_len()` bytes, read `frame.data_len` bytes of data
//!    and, if `frame.ddgst`, the 4-byte data digest; check it with
//!    [`DataDigest`] / [`PduFrame::check_data_digest`].
//!
//! Any [`PduError`] except a data digest mismatch is fatal: send the
//! [`TermReq`] from [`PduError::term_req`] (with [`term_req_data`] of the
//! offending header) and close the connection.
//!
//! Transmit path: [`Pdu::encode`] writes the header, header digest and
//! padding and returns the [`PduFrame`]; the caller then sends the data and,
//! when `frame.ddgst`, [`data_digest`] of it.

mod decode;
mod digest;
mod pdu;

pub use decode::{decode_common_header, decode_header, fei, Limits, PduError, Role};
pub use digest::{crc32c, crc32c_iov, data_digest, header_digest, DataDigest, DIGEST_LEN};
pub use pdu::{
    flags, term_req_data, CommonHeader, DataHdr, EncodeError, Fes, IcReq, IcResp, Pdu, PduFrame,
    PduType, R2t, TermReq, TxParams, COMMON_HEADER_LEN, DGST_DATA, DGST_HEADER, MAXH2CDATA_MIN,
    MAX_PDA, PFV_1_0, TERM_REQ_MAX_DATA_RX, TERM_REQ_MAX_DATA_TX,
};

/// IANA port for NVMe/TCP I/O controllers.
pub const NVME_TCP_PORT: u16 = 4420;
/// IANA port for NVMe/TCP discovery controllers.
pub const NVME_TCP_DISCOVERY_PORT: u16 = 8009;

#[cfg(test)]
mod tests;
