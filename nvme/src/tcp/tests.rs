//! Codec tests: round trips for every PDU type in both roles, wire layout
//! against Linux `nvme-tcp.h`, and rejection of malformed headers with the
//! FES/FEI a peer must receive.

use super::*;
use crate::cqe::Cqe;
use crate::sqe::{Sgl, Sqe};
use crate::status::Status;

fn ctrl_limits(hdgst: bool, ddgst: bool) -> Limits {
    Limits::established(Role::Controller, hdgst, ddgst, 0, 8192, 131072)
}

fn host_limits(hdgst: bool, ddgst: bool) -> Limits {
    Limits::established(Role::Host, hdgst, ddgst, 0, 0, 1 << 20)
}

fn tx(hdgst: bool, ddgst: bool) -> TxParams {
    TxParams {
        hdgst,
        ddgst,
        pda: 0,
    }
}

/// Encodes `pdu` with `data`, assembles the whole wire PDU, then decodes it
/// the way a receiver would, in pieces.
fn wire_round_trip(
    pdu: Pdu,
    data: &[u8],
    p: TxParams,
    limits: &Limits,
) -> (PduFrame, Pdu, Vec<u8>) {
    let mut hdr = [0u8; 256];
    let frame = pdu.encode(&p, data.len() as u32, &mut hdr).unwrap();
    let mut wire = hdr[..frame.data_offset as usize].to_vec();
    wire.extend_from_slice(data);
    if frame.ddgst {
        wire.extend_from_slice(&data_digest(&[data]));
    }
    assert_eq!(wire.len(), frame.plen as usize, "{pdu:?}");

    let f1 = decode_common_header(&wire[..8], limits).unwrap();
    assert_eq!(f1, frame);
    assert_eq!(f1.remaining_header() + 8, f1.header_len());
    assert_eq!(
        f1.header_len() + f1.remaining_after_header(),
        f1.plen as usize
    );
    let (f2, back) = decode_header(&wire[..f1.header_len()], limits).unwrap();
    assert_eq!(f2, frame);
    let start = f2.data_offset as usize;
    let got = &wire[start..start + f2.data_len as usize];
    assert_eq!(got, data);
    if f2.ddgst {
        let mut d = DataDigest::new();
        d.update(got);
        let wd: [u8; 4] = wire[wire.len() - 4..].try_into().unwrap();
        f2.check_data_digest(d.value(), wd).unwrap();
    }
    (frame, back, wire)
}

fn all_digest_modes() -> [(bool, bool); 4] {
    [(false, false), (true, false), (false, true), (true, true)]
}

#[test]
fn ic_pdus_round_trip_and_layout() {
    let req = IcReq {
        pfv: 0,
        hpda: 0,
        dgst: DGST_HEADER | DGST_DATA,
        maxr2t: 0,
    };
    let (f, back, wire) = wire_round_trip(
        Pdu::IcReq(req),
        &[],
        tx(true, true),
        &Limits::new(Role::Controller),
    );
    assert_eq!(back, Pdu::IcReq(req));
    // IC PDUs never carry digests, whatever was requested.
    assert!(!f.hdgst && !f.ddgst);
    assert_eq!(&wire[..8], &[0x00, 0x00, 128, 0, 128, 0, 0, 0]);
    assert_eq!(wire[11], 3);

    let resp = IcResp {
        pfv: 0,
        cpda: 0,
        dgst: DGST_HEADER,
        maxh2cdata: 131072,
    };
    let (_, back, wire) = wire_round_trip(
        Pdu::IcResp(resp),
        &[],
        TxParams::default(),
        &Limits::new(Role::Host),
    );
    assert_eq!(back, Pdu::IcResp(resp));
    assert_eq!(&wire[..4], &[0x01, 0, 128, 0]);
    assert_eq!(&wire[12..16], &131072u32.to_le_bytes());
}

#[test]
fn capsule_cmd_round_trip_all_modes() {
    let mut sqe = Sqe::new(0x01, 0x42);
    sqe.set_nsid(1);
    sqe.set_sgl(&Sgl::in_capsule(0, 4096));
    let data: Vec<u8> = (0..4096u32).map(|i| i as u8).collect();
    for (h, d) in all_digest_modes() {
        for payload in [&data[..], &[][..]] {
            let (f, back, wire) =
                wire_round_trip(Pdu::CapsuleCmd(sqe), payload, tx(h, d), &ctrl_limits(h, d));
            assert_eq!(back, Pdu::CapsuleCmd(sqe));
            assert_eq!(wire[2], 72);
            let hl = 72 + if h { 4 } else { 0 };
            if payload.is_empty() {
                assert_eq!(f.pdo, 0);
                assert_eq!(f.plen, hl);
                assert!(!f.ddgst);
            } else {
                // Linux: PDO = HLEN + header digest length when CPDA is 0.
                assert_eq!(u32::from(f.pdo), hl);
                assert_eq!(f.plen, hl + 4096 + if d { 4 } else { 0 });
            }
            assert_eq!(wire[1] & flags::HDGSTF != 0, h);
        }
    }
}

#[test]
fn capsule_resp_r2t_round_trip() {
    let mut cqe = Cqe::new(7, Status::SUCCESS);
    cqe.set_sqhd(3);
    for (h, d) in all_digest_modes() {
        let (f, back, wire) =
            wire_round_trip(Pdu::CapsuleResp(cqe), &[], tx(h, d), &host_limits(h, d));
        assert_eq!(back, Pdu::CapsuleResp(cqe));
        assert_eq!(f.plen, 24 + if h { 4 } else { 0 });
        assert_eq!(&wire[..3], &[0x05, if h { 1 } else { 0 }, 24]);

        let r2t = R2t {
            cccid: 7,
            ttag: 1,
            r2to: 0,
            r2tl: 65536,
        };
        let (_, back, wire) = wire_round_trip(Pdu::R2T(r2t), &[], tx(h, d), &host_limits(h, d));
        assert_eq!(back, Pdu::R2T(r2t));
        assert_eq!(wire[0], 0x09);
        assert_eq!(&wire[8..12], &[7, 0, 1, 0]);
        assert_eq!(&wire[16..20], &65536u32.to_le_bytes());
    }
}

#[test]
fn data_pdus_round_trip() {
    let data = vec![0xA5u8; 8192];
    for (h, d) in all_digest_modes() {
        let hdr = DataHdr {
            cccid: 9,
            ttag: 2,
            datao: 4096,
            datal: 8192,
        };
        let h2c = Pdu::H2CData { hdr, last: true };
        let (f, back, wire) = wire_round_trip(h2c, &data, tx(h, d), &ctrl_limits(h, d));
        assert_eq!(back, h2c);
        assert_eq!(wire[1] & flags::LAST_PDU, flags::LAST_PDU);
        assert_eq!(u32::from(f.pdo), 24 + if h { 4 } else { 0 });

        let c2h = Pdu::C2HData {
            hdr: DataHdr { ttag: 0, ..hdr },
            last: true,
            success: true,
        };
        let (_, back, wire) = wire_round_trip(c2h, &data, tx(h, d), &host_limits(h, d));
        assert_eq!(back, c2h);
        assert_eq!(
            wire[1] & (flags::LAST_PDU | flags::SUCCESS),
            flags::LAST_PDU | flags::SUCCESS
        );
    }
}

#[test]
fn pda_alignment_padding() {
    let data = [1u8; 100];
    let hdr = DataHdr {
        cccid: 1,
        ttag: 0,
        datao: 0,
        datal: 100,
    };
    let pdu = Pdu::C2HData {
        hdr,
        last: false,
        success: false,
    };
    for pda in [0u8, 1, 7, 31] {
        let p = TxParams {
            hdgst: true,
            ddgst: true,
            pda,
        };
        let limits = Limits {
            rx_pda: pda,
            ..host_limits(true, true)
        };
        let (f, back, wire) = wire_round_trip(pdu, &data, p, &limits);
        assert_eq!(back, pdu);
        let align = (usize::from(pda) + 1) * 4;
        assert_eq!(usize::from(f.pdo) % align, 0);
        assert!(usize::from(f.pdo) >= 28);
        assert_eq!(f.pad_len(), usize::from(f.pdo) - 28);
        assert!(wire[28..usize::from(f.pdo)].iter().all(|&b| b == 0));
    }
    // A receiver that asked for 8-byte alignment rejects PDO 28.
    let mut buf = [0u8; 64];
    pdu.encode(&tx(true, false), 100, &mut buf).unwrap();
    let limits = Limits {
        rx_pda: 1,
        ..host_limits(true, false)
    };
    assert_eq!(
        decode_common_header(&buf, &limits),
        Err(PduError::InvalidPdo(28))
    );
    assert_eq!(
        pdu.encode(
            &TxParams {
                pda: 32,
                ..tx(false, false)
            },
            100,
            &mut buf
        ),
        Err(EncodeError::InvalidPda(32))
    );
}

#[test]
fn term_req_round_trip() {
    let t = TermReq {
        fes: Fes::INVALID_HEADER_FIELD,
        fei: 2,
    };
    let offending = [0x04u8, 0, 99, 0, 72, 0, 0, 0];
    for (h, d) in all_digest_modes() {
        let (f, back, wire) = wire_round_trip(
            Pdu::C2HTermReq(t),
            term_req_data(&offending),
            tx(h, d),
            &host_limits(h, d),
        );
        assert_eq!(back, Pdu::C2HTermReq(t));
        assert_eq!(f.plen, 32);
        assert_eq!(f.pdo, 0);
        assert!(!f.hdgst && !f.ddgst);
        assert_eq!(&wire[..12], &[0x03, 0, 24, 0, 32, 0, 0, 0, 1, 0, 2, 0]);
        assert_eq!(&wire[24..], &offending);
        let (_, back, _) = wire_round_trip(Pdu::H2CTermReq(t), &[], tx(h, d), &ctrl_limits(h, d));
        assert_eq!(back, Pdu::H2CTermReq(t));
    }
    // A TermReq is valid even before the IC exchange.
    let mut buf = [0u8; 24];
    Pdu::C2HTermReq(t)
        .encode(&TxParams::default(), 0, &mut buf)
        .unwrap();
    assert!(decode_header(&buf, &Limits::new(Role::Host)).is_ok());
    assert_eq!(term_req_data(&[0u8; 200]).len(), TERM_REQ_MAX_DATA_TX);
    assert_eq!(
        Pdu::C2HTermReq(t).encode(&TxParams::default(), 153, &mut [0u8; 64]),
        Err(EncodeError::DataTooLong(153))
    );
}

fn term(e: &PduError) -> (u16, u32) {
    let t = e.term_req().unwrap();
    (t.fes.0, t.fei)
}

#[test]
fn rejects_truncated_and_garbage() {
    let l = ctrl_limits(false, false);
    for n in 0..8 {
        assert_eq!(
            decode_common_header(&[0u8; 8][..n], &l),
            Err(PduError::Truncated { need: 8, have: n })
        );
    }
    // Unknown type 0x08 and 0xFF.
    for t in [0x08u8, 0x0A, 0xFF] {
        let e = decode_common_header(&[t, 0, 24, 0, 24, 0, 0, 0], &l).unwrap_err();
        assert_eq!(e, PduError::InvalidType(t));
        assert_eq!(term(&e), (1, 0));
    }
    // Wrong direction: a controller never receives C2HData or R2T.
    for t in [0x01u8, 0x03, 0x05, 0x07, 0x09] {
        assert_eq!(
            decode_common_header(&[t, 0, 24, 0, 24, 0, 0, 0], &l),
            Err(PduError::InvalidType(t))
        );
    }
    // ICReq after the IC exchange is a sequence error (FES 02h).
    let e = decode_common_header(&[0, 0, 128, 0, 128, 0, 0, 0], &l).unwrap_err();
    assert_eq!(e, PduError::Sequence(PduType::IcReq));
    assert_eq!(term(&e), (2, 0));
    // And a CapsuleCmd before it.
    assert_eq!(
        decode_common_header(&[4, 0, 72, 0, 72, 0, 0, 0], &Limits::new(Role::Controller)),
        Err(PduError::Sequence(PduType::CapsuleCmd))
    );
    // Bad HLEN -> FEI 2.
    let e = decode_common_header(&[4, 0, 71, 0, 72, 0, 0, 0], &l).unwrap_err();
    assert_eq!(term(&e), (1, 2));
    // PLEN below HLEN -> FEI 4.
    let e = decode_common_header(&[4, 0, 72, 0, 71, 0, 0, 0], &l).unwrap_err();
    assert_eq!(term(&e), (1, 4));
    // Data but PDO inside the header -> FEI 3.
    let e = decode_common_header(&[4, 0, 72, 64, 200, 0, 0, 0], &l).unwrap_err();
    assert_eq!(e, PduError::InvalidPdo(64));
    assert_eq!(term(&e), (1, 3));
    // PDO past PLEN.
    assert_eq!(
        decode_common_header(&[4, 0, 72, 200, 100, 0, 0, 0], &l),
        Err(PduError::InvalidPdo(200))
    );
    // HDGSTF without negotiated header digests -> FEI 1.
    let e = decode_common_header(&[4, 1, 72, 0, 76, 0, 0, 0], &l).unwrap_err();
    assert_eq!(term(&e), (1, 1));
    // Missing HDGSTF when negotiated.
    assert!(matches!(
        decode_common_header(&[4, 0, 72, 0, 76, 0, 0, 0], &ctrl_limits(true, false)),
        Err(PduError::InvalidFlags { .. })
    ));
    // DDGSTF on a PDU without data.
    assert!(matches!(
        decode_common_header(&[4, 2, 72, 0, 72, 0, 0, 0], &ctrl_limits(false, true)),
        Err(PduError::InvalidFlags { .. })
    ));
    // Data PDU with data but no DDGSTF although negotiated.
    assert!(matches!(
        decode_common_header(&[6, 0, 24, 24, 32, 0, 0, 0], &ctrl_limits(false, true)),
        Err(PduError::InvalidFlags { .. })
    ));
    // Data on a type that has none (CapsuleResp to the host).
    assert_eq!(
        decode_common_header(&[5, 0, 24, 24, 40, 0, 0, 0], &host_limits(false, false)),
        Err(PduError::InvalidPlen(40))
    );
    // C2HData SUCCESS without LAST_PDU.
    assert!(matches!(
        decode_common_header(&[7, 8, 24, 24, 40, 0, 0, 0], &host_limits(false, false)),
        Err(PduError::InvalidFlags { .. })
    ));
    // Digest but no data bytes: PDO + DDGST == PLEN.
    assert_eq!(
        decode_common_header(&[6, 2, 24, 24, 28, 0, 0, 0], &ctrl_limits(false, true)),
        Err(PduError::InvalidPlen(28))
    );
    // Oversized TermReq.
    assert_eq!(
        decode_common_header(&[2, 0, 24, 0, 177, 0, 0, 0], &l),
        Err(PduError::InvalidPlen(177))
    );
    assert!(decode_common_header(&[2, 0, 24, 0, 176, 0, 0, 0], &l).is_ok());
}

#[test]
fn rejects_oversized_data() {
    let l = ctrl_limits(false, false);
    // H2CData of 4 GiB - 1: rejected before anyone sizes a buffer.
    let mut ch = [6u8, 0, 24, 24, 0, 0, 0, 0];
    ch[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    let e = decode_common_header(&ch, &l).unwrap_err();
    assert_eq!(
        e,
        PduError::DataLimitExceeded {
            pdu_type: PduType::H2CData,
            len: u32::MAX - 24,
            max: 131072
        }
    );
    assert_eq!(term(&e), (5, 0));
    // In-capsule data over the limit.
    ch[0] = 4;
    ch[2] = 72;
    ch[3] = 72;
    ch[4..8].copy_from_slice(&(72 + 8193u32).to_le_bytes());
    assert!(matches!(
        decode_common_header(&ch, &l),
        Err(PduError::DataLimitExceeded { len: 8193, .. })
    ));
    ch[4..8].copy_from_slice(&(72 + 8192u32).to_le_bytes());
    assert_eq!(decode_common_header(&ch, &l).unwrap().data_len, 8192);
    // Host side: too much C2HData maps to an invalid PLEN, not FES 05h,
    // which from a host means "R2T limit exceeded".
    let e = decode_common_header(
        &[7, 0, 24, 24, 0xFF, 0xFF, 0xFF, 0x7F],
        &host_limits(false, false),
    )
    .unwrap_err();
    assert_eq!(term(&e), (1, 4));
    assert!(l.max_pdu_len() >= 131072 + 24);
}

#[test]
fn header_digest_checked() {
    let sqe = Sqe::new(0x02, 5);
    let mut buf = [0u8; 76];
    let f = Pdu::CapsuleCmd(sqe)
        .encode(&tx(true, false), 0, &mut buf)
        .unwrap();
    assert_eq!(f.header_len(), 76);
    assert_eq!(&buf[72..76], &crc32c(&buf[..72]).to_le_bytes());
    let l = ctrl_limits(true, false);
    assert!(decode_header(&buf, &l).is_ok());
    // Not enough bytes for the digest yet.
    assert_eq!(
        decode_header(&buf[..75], &l),
        Err(PduError::Truncated { need: 76, have: 75 })
    );
    buf[20] ^= 1;
    let e = decode_header(&buf, &l).unwrap_err();
    assert!(matches!(e, PduError::HeaderDigest { .. }));
    assert_eq!(term(&e), (3, 0));
    assert!(e.is_fatal());
}

#[test]
fn data_digest_error_is_not_fatal() {
    let f = PduFrame::for_tx(PduType::H2CData, 0, &tx(false, true), 4).unwrap();
    let e = f
        .check_data_digest(crc32c(b"abcd"), crc32c(b"abce").to_le_bytes())
        .unwrap_err();
    assert!(!e.is_fatal());
    assert_eq!(e.term_req(), None);
    assert_eq!(e.status(), Some(Status::TRANSIENT_TRANSPORT_ERROR));
}

#[test]
fn ic_field_checks() {
    let lc = Limits::new(Role::Controller);
    let mut buf = [0u8; 128];
    let req = IcReq {
        pfv: 1,
        ..Default::default()
    };
    Pdu::IcReq(req)
        .encode(&TxParams::default(), 0, &mut buf)
        .unwrap();
    let e = decode_header(&buf, &lc).unwrap_err();
    assert_eq!(term(&e), (6, 8));
    Pdu::IcReq(IcReq {
        hpda: 32,
        ..Default::default()
    })
    .encode(&TxParams::default(), 0, &mut buf)
    .unwrap();
    assert_eq!(term(&decode_header(&buf, &lc).unwrap_err()), (1, 10));

    let lh = Limits::new(Role::Host);
    for bad in [0u32, 4095, 4098] {
        Pdu::IcResp(IcResp {
            maxh2cdata: bad,
            ..Default::default()
        })
        .encode(&TxParams::default(), 0, &mut buf)
        .unwrap();
        assert_eq!(term(&decode_header(&buf, &lh).unwrap_err()), (1, 12));
    }
    // Truncated IC PDU.
    assert_eq!(
        decode_header(&buf[..100], &lh),
        Err(PduError::Truncated {
            need: 128,
            have: 100
        })
    );
}

#[test]
fn datal_must_match_plen() {
    let hdr = DataHdr {
        cccid: 1,
        ttag: 1,
        datao: 0,
        datal: 16,
    };
    let mut buf = [0u8; 24];
    Pdu::H2CData { hdr, last: true }
        .encode(&tx(false, false), 16, &mut buf)
        .unwrap();
    buf[16] = 15;
    let e = decode_header(&buf, &ctrl_limits(false, false)).unwrap_err();
    assert_eq!(term(&e), (1, 16));
    assert_eq!(
        Pdu::H2CData { hdr, last: true }.encode(&tx(false, false), 15, &mut buf),
        Err(EncodeError::DataLenMismatch {
            datal: 16,
            data_len: 15
        })
    );
}

#[test]
fn encode_errors() {
    let mut small = [0u8; 20];
    assert_eq!(
        Pdu::CapsuleResp(Cqe::default()).encode(&TxParams::default(), 0, &mut small),
        Err(EncodeError::BufferTooSmall { need: 24, have: 20 })
    );
    assert_eq!(
        Pdu::R2T(R2t::default()).encode(&TxParams::default(), 1, &mut [0u8; 64]),
        Err(EncodeError::DataNotAllowed(PduType::R2T))
    );
    assert_eq!(
        Pdu::C2HData {
            hdr: DataHdr::default(),
            last: false,
            success: true
        }
        .encode(&TxParams::default(), 0, &mut [0u8; 64]),
        Err(EncodeError::SuccessWithoutLast)
    );
    let big = Pdu::C2HData {
        hdr: DataHdr {
            datal: u32::MAX,
            ..Default::default()
        },
        last: true,
        success: false,
    };
    assert_eq!(
        big.encode(&tx(true, true), u32::MAX, &mut [0u8; 64]),
        Err(EncodeError::DataTooLong(u32::MAX))
    );
}

#[test]
fn matches_linux_header_sizes() {
    // sizeof() of the Linux nvme-tcp.h structs.
    assert_eq!(PduType::IcReq.header_len(), 128);
    assert_eq!(PduType::IcResp.header_len(), 128);
    assert_eq!(PduType::H2CTermReq.header_len(), 24);
    assert_eq!(PduType::CapsuleCmd.header_len(), 72);
    assert_eq!(PduType::CapsuleResp.header_len(), 24);
    assert_eq!(PduType::H2CData.header_len(), 24);
    assert_eq!(PduType::R2T.header_len(), 24);
    let ch = CommonHeader {
        pdu_type: 4,
        flags: 3,
        hlen: 72,
        pdo: 76,
        plen: 0x1234,
    };
    assert_eq!(CommonHeader::parse(&ch.to_bytes()), ch);
    assert_eq!(ch.to_bytes(), [4, 3, 72, 76, 0x34, 0x12, 0, 0]);
}
