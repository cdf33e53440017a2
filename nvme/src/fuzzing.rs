//! Fuzz target bodies, shared by `nvme/fuzz` (cargo-fuzz) and the unit
//! tests below so they run on every `cargo test`. Each function must not
//! panic on any input; the `assert!`s inside check codec invariants
//! (decode/encode/decode agreement, bounded lengths).

use crate::ana::{parse_ana_log, write_ana_log};
use crate::fabrics::{ConnectData, FabricsCmd, FABRICS_OPCODE};
use crate::features::FeaturesCmd;
use crate::identify::{
    parse_ns_desc_list, parse_ns_list, write_active_ns_list, IdentifyCmd, IdentifyController,
    IdentifyNamespace, IDENTIFY_LEN,
};
use crate::io::{DsmRange, LbaRangeCmd};
use crate::log_page::{DiscoveryLogEntry, GetLogPageCmd, SmartLog};
use crate::opcode::AdminOpcode;
use crate::reservation::{parse_keys, ReservationStatus, ResvCdw10, KEYS_LEN, RELEASE_KEY_LEN};
use crate::sqe::{Sgl, Sqe};
use crate::tcp::{
    decode_common_header, decode_header, DataDigest, Limits, Pdu, PduError, PduType, Role,
    TxParams, DIGEST_LEN,
};

/// Limit sets the PDU fuzzer cycles through: both roles, before and after
/// the IC exchange, small and large data limits, every digest combination,
/// default and maximal alignment.
fn limit_sets() -> impl Iterator<Item = Limits> {
    let roles = [Role::Controller, Role::Host];
    roles.into_iter().flat_map(|role| {
        let pre = Limits::new(role);
        let post = (0..8u8).map(move |i| {
            let (hdgst, ddgst, large) = (i & 1 != 0, i & 2 != 0, i & 4 != 0);
            let (icd, data) = if large {
                (1 << 20, 1 << 24)
            } else {
                (1024, 4096)
            };
            let rx_pda = if large { 31 } else { 0 };
            Limits::established(role, hdgst, ddgst, rx_pda, icd, data)
        });
        core::iter::once(pre).chain(post)
    })
}

/// Feeds `data` as a byte stream through the incremental decoder under
/// each limit set, re-encoding every accepted header and checking that it
/// decodes to the same PDU.
pub fn pdu_decode(data: &[u8]) {
    for limits in limit_sets() {
        decode_stream(data, &limits);
    }
}

fn decode_stream(mut rest: &[u8], limits: &Limits) {
    while rest.len() >= 8 {
        let frame = match decode_common_header(rest, limits) {
            Ok(f) => f,
            Err(e) => {
                check_error(&e);
                return;
            }
        };
        let plen = frame.plen as usize;
        assert!(frame.header_len() >= 8 && frame.header_len() <= plen);
        assert!(frame.data_offset as usize >= frame.header_len());
        assert_eq!(
            frame.data_offset as usize + frame.data_len as usize + frame.ddgst_len(),
            plen
        );
        let cap = if frame.pdu_type.is_term() {
            crate::tcp::TERM_REQ_MAX_DATA_RX as u32
        } else if frame.pdu_type == PduType::CapsuleCmd {
            limits.max_in_capsule
        } else {
            limits.max_data
        };
        assert!(frame.data_len <= cap);

        let (frame2, pdu) = match decode_header(rest, limits) {
            Ok(v) => v,
            Err(e) => {
                check_error(&e);
                return;
            }
        };
        assert_eq!(frame, frame2);
        reencode(&pdu, frame.data_len, limits);

        let Some(whole) = rest.get(..plen) else {
            return;
        };
        if frame.ddgst {
            let start = frame.data_offset as usize;
            let payload = &whole[start..start + frame.data_len as usize];
            let mut d = DataDigest::new();
            d.update(payload);
            let mut wire = [0u8; DIGEST_LEN];
            wire.copy_from_slice(&whole[plen - DIGEST_LEN..]);
            if let Err(e) = frame.check_data_digest(d.value(), wire) {
                check_error(&e);
            }
        }
        rest = &rest[plen..];
    }
}

fn check_error(e: &PduError) {
    // Every fatal error must map to a TermReq with a defined FES.
    if e.is_fatal() {
        let t = e.term_req().expect("fatal errors map to a TermReq");
        assert!((1..=6).contains(&t.fes.0));
    }
    let _ = e.to_string();
}

fn reencode(pdu: &Pdu, data_len: u32, limits: &Limits) {
    let p = TxParams {
        hdgst: limits.hdgst,
        ddgst: limits.ddgst,
        pda: limits.rx_pda,
    };
    let mut buf = [0u8; 256];
    let frame = pdu
        .encode(&p, data_len, &mut buf)
        .expect("an accepted header re-encodes");
    let (f2, back) = decode_header(&buf, limits).expect("a re-encoded header decodes");
    assert_eq!(&back, pdu);
    assert_eq!(f2, frame);
}

/// Parses `data` as an SQE (plus trailing Connect data or payload) and as
/// raw admin data structures, checking that every parser round trips
/// through its builder.
pub fn command_parse(data: &[u8]) {
    let mut page = [0u8; IDENTIFY_LEN];
    let n = data.len().min(IDENTIFY_LEN);
    page[..n].copy_from_slice(&data[..n]);
    structures(&page);

    let Ok(sqe) = Sqe::from_bytes(data) else {
        return;
    };
    let payload = &data[Sqe::SIZE..];
    let _ = format!("{sqe:?}");
    let sgl = sqe.sgl();
    assert_eq!(Sgl::parse(&sgl.to_bytes()), sgl);

    if sqe.opcode() == FABRICS_OPCODE {
        if let Ok(cmd) = FabricsCmd::parse(&sqe) {
            assert_eq!(FabricsCmd::parse(&cmd.to_sqe()), Ok(cmd));
        }
        if let Ok(cd) = ConnectData::parse(payload) {
            let _ = cd.subnqn.as_str();
            let _ = cd.hostnqn.as_str();
            assert_eq!(ConnectData::parse(&cd.to_bytes()), Ok(cd));
        }
    }

    // Admin interpretations, whatever the opcode says: parsers reject a
    // wrong opcode, so patch it in to reach the field decoding.
    let as_op = |op: AdminOpcode| {
        let mut s = sqe;
        s.set_opcode(op.as_u8());
        s
    };
    let id = IdentifyCmd::parse(&as_op(AdminOpcode::Identify)).expect("opcode matches");
    assert_eq!(IdentifyCmd::parse(&id.to_sqe(sqe.cid())), Ok(id));
    let mut out = [0u8; IDENTIFY_LEN];
    let written = write_active_ns_list(&[1, 2, 3, 0xFFFF_FFFE, id.nsid], id.nsid, &mut out);
    let listed: Vec<u32> = parse_ns_list(&out).collect();
    assert_eq!(listed.len(), written);
    assert!(listed.windows(2).all(|w| w[0] < w[1]));
    assert!(listed.iter().all(|&x| x > id.nsid));

    let glp = GetLogPageCmd::parse(&as_op(AdminOpcode::GetLogPage)).expect("opcode matches");
    assert_eq!(GetLogPageCmd::parse(&glp.to_sqe(sqe.cid())), Ok(glp));
    for page_len in [0usize, 512, 4096, 1 << 20] {
        if let Ok(r) = glp.range(page_len) {
            assert!(r.start <= r.end && r.end <= page_len);
            assert!(r.end - r.start <= r.transfer_len);
        }
    }

    for op in [AdminOpcode::GetFeatures, AdminOpcode::SetFeatures] {
        let f = FeaturesCmd::parse(&as_op(op)).expect("opcode matches");
        assert_eq!(FeaturesCmd::parse(&f.to_sqe(sqe.cid())), Ok(f));
    }

    let rw = LbaRangeCmd::parse(&sqe);
    assert!((1..=65536).contains(&rw.nlb));
    let _ = rw.in_range(u64::MAX);
    let _ = rw.byte_len(u32::from(data[0]));
    let mut s2 = Sqe::new(sqe.opcode(), sqe.cid());
    rw.write(&mut s2);
    assert_eq!(LbaRangeCmd::parse(&s2), rw);
    // Reservation fields and data, and the structures hosts parse.
    let rc = ResvCdw10::parse(&sqe);
    let mut s3 = Sqe::new(sqe.opcode(), sqe.cid());
    s3.set_cdw10(rc.to_cdw10());
    assert_eq!(ResvCdw10::parse(&s3), rc);
    for len in [RELEASE_KEY_LEN, KEYS_LEN] {
        assert_eq!(parse_keys(payload, len).is_ok(), payload.len() >= len);
    }
    for eds in [false, true] {
        if let Ok(st) = ReservationStatus::parse(payload, eds) {
            let again = ReservationStatus::parse(&st.write(eds), eds).expect("own output");
            assert_eq!(again.regs.len(), st.regs.len());
            assert_eq!((again.gen, again.rtype), (st.gen, st.rtype));
        }
    }
    if let Ok((cc, groups)) = parse_ana_log(payload) {
        let page = write_ana_log(cc, &groups, false);
        assert_eq!(parse_ana_log(&page), Ok((cc, groups)));
    }
    for r in DsmRange::iter(payload) {
        let mut b = [0u8; DsmRange::SIZE];
        r.write(&mut b).expect("exact size");
        assert_eq!(DsmRange::parse(&b), Ok(r));
    }
}

fn structures(page: &[u8; IDENTIFY_LEN]) {
    let mut out = [0u8; IDENTIFY_LEN];
    let c = IdentifyController::parse(page).expect("full page");
    c.write(&mut out);
    assert_eq!(IdentifyController::parse(&out), Ok(c));
    let _ = c.subnqn.as_str();
    let _ = c.in_capsule_data_len();

    let ns = IdentifyNamespace::parse(page).expect("full page");
    ns.write(&mut out);
    assert_eq!(IdentifyNamespace::parse(&out), Ok(ns));
    let _ = ns.active_lbaf();

    for d in parse_ns_desc_list(page).take(IDENTIFY_LEN) {
        let _ = d;
    }
    let e = DiscoveryLogEntry::parse(page).expect("full entry");
    e.write(&mut out).expect("fits");
    assert_eq!(DiscoveryLogEntry::parse(&out), Ok(e));
    let s = SmartLog::parse(page).expect("full page");
    s.write(&mut out).expect("fits");
    assert_eq!(SmartLog::parse(&out), Ok(s));
}

/// The in-band authentication messages, a DHHC-1 secret and a DH public
/// value, all from `data`: parsers never panic, and what they accept
/// re-encodes to the same message.
pub fn auth_messages(data: &[u8]) {
    use crate::auth::dh::{DhGroupId, KeyPair, PRIVATE_KEY_LEN};
    use crate::auth::msg::{Challenge, Failure, Negotiate, Reply, Success1, Success2};
    use crate::auth::secret::Secret;
    use crate::auth::HashId;

    let mut out = vec![0u8; 4096];
    // Without a DH-HMAC-CHAP descriptor there is nothing to re-encode
    // (only that protocol exists).
    if let Ok(
        n @ Negotiate {
            dhchap: Some(_), ..
        },
    ) = Negotiate::parse(data)
    {
        let len = n.write(&mut out).expect("fits");
        let again = Negotiate::parse(&out[..len]).expect("re-encoded Negotiate parses");
        assert_eq!((again.tid, again.sc_c), (n.tid, n.sc_c));
        assert_eq!(again.dhchap, n.dhchap);
    }
    for &h in HashId::ALL {
        if let Ok(r) = Reply::parse(data, h) {
            let mut o2 = vec![0u8; 4096];
            let len = r.write(&mut o2).expect("fits");
            assert_eq!(len, data.len());
            assert_eq!(Reply::parse(&o2[..len], h), Ok(r));
        }
    }
    if let Ok(c) = Challenge::parse(data) {
        let mut o2 = vec![0u8; 4096];
        let len = c.write(&mut o2).expect("fits");
        assert_eq!(Challenge::parse(&o2[..len]), Ok(c));
    }
    if let Ok(s) = Success1::parse(data) {
        let len = s.write(&mut out).expect("fits");
        assert_eq!(Success1::parse(&out[..len]), Ok(s));
    }
    if let Ok(s) = Success2::parse(data) {
        assert_eq!(s.write(&mut out), Ok(data.len()));
    }
    if let Ok(f) = Failure::parse(data) {
        let len = f.write(&mut out).expect("fits");
        assert_eq!(Failure::parse(&out[..len]), Ok(f));
    }
    if let Ok(text) = core::str::from_utf8(data) {
        if let Ok(s) = Secret::parse(text) {
            assert_eq!(Secret::parse(&s.to_text()), Ok(s));
        }
    }
    // A peer's public value of the smallest group's size.
    if data.len() == DhGroupId::Ffdhe2048.value_len() {
        let kp = KeyPair::generate(DhGroupId::Ffdhe2048, &[0x5C; PRIVATE_KEY_LEN])
            .expect("not the null group");
        if let Ok(s) = kp.shared_secret(data) {
            assert_eq!(s.len(), data.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cqe::Cqe;
    use crate::status::Status;
    use crate::tcp::{DataHdr, IcReq, IcResp, R2t, TermReq};
    use rand::rngs::SmallRng;
    use rand::{Rng, RngCore, SeedableRng};

    /// `n` random bytes.
    fn bytes(rng: &mut SmallRng, n: usize) -> Vec<u8> {
        let mut out = vec![0; n];
        rng.fill_bytes(&mut out);
        out
    }

    /// Valid PDU streams to mutate, so the fuzz bodies get past the first
    /// check instead of bouncing off the type byte.
    fn seeds(rng: &mut SmallRng) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut sqe = Sqe::new(0x01, 3);
        sqe.set_sgl(&Sgl::in_capsule(0, 16));
        let data = bytes(rng, 16);
        let hdr = DataHdr {
            cccid: 3,
            ttag: 1,
            datao: 0,
            datal: 16,
        };
        let pdus: [(Pdu, usize); 10] = [
            (Pdu::IcReq(IcReq::default()), 0),
            (
                Pdu::IcResp(IcResp {
                    maxh2cdata: 8192,
                    ..Default::default()
                }),
                0,
            ),
            (Pdu::CapsuleCmd(sqe), 16),
            (Pdu::CapsuleCmd(sqe), 0),
            (Pdu::CapsuleResp(Cqe::new(3, Status::SUCCESS)), 0),
            (Pdu::H2CData { hdr, last: true }, 16),
            (
                Pdu::C2HData {
                    hdr,
                    last: true,
                    success: true,
                },
                16,
            ),
            (Pdu::R2T(R2t::default()), 0),
            (Pdu::H2CTermReq(TermReq::default()), 8),
            (Pdu::C2HTermReq(TermReq::default()), 0),
        ];
        for (h, d) in [(false, false), (true, true), (true, false)] {
            let p = TxParams {
                hdgst: h,
                ddgst: d,
                pda: 0,
            };
            let mut stream = Vec::new();
            for (pdu, len) in &pdus {
                let mut buf = [0u8; 256];
                let f = pdu.encode(&p, *len as u32, &mut buf).unwrap();
                stream.extend_from_slice(&buf[..f.data_offset as usize]);
                stream.extend_from_slice(&data[..*len]);
                if f.ddgst {
                    stream.extend_from_slice(&crate::tcp::data_digest(&[&data[..*len]]));
                }
                out.push(stream[stream.len() - f.plen as usize..].to_vec());
            }
            out.push(stream);
        }
        out
    }

    #[test]
    fn pdu_decode_random_and_mutated() {
        let mut rng = SmallRng::seed_from_u64(1);
        let seeds = seeds(&mut rng);
        for s in &seeds {
            pdu_decode(s);
            // Each seed must be accepted under some limit set, or the
            // mutations below would only ever exercise the first check.
            assert!(
                limit_sets().any(|l| decode_header(s, &l).is_ok()),
                "seed rejected everywhere: {s:?}"
            );
        }
        for i in 0..400 {
            let input = if i % 2 == 0 {
                let n = rng.random_range(0..300);
                bytes(&mut rng, n)
            } else {
                let mut s = seeds[rng.random_range(0..seeds.len())].clone();
                for _ in 0..=rng.random_range(0..4) {
                    let at = rng.random_range(0..s.len().max(1));
                    if let Some(b) = s.get_mut(at) {
                        *b ^= 1 << rng.random_range(0..8);
                    }
                }
                if rng.random_range(0..4) == 0 {
                    let cut = rng.random_range(0..s.len() + 1);
                    s.truncate(cut);
                }
                s
            };
            pdu_decode(&input);
        }
    }

    #[test]
    fn command_parse_random() {
        let mut rng = SmallRng::seed_from_u64(2);
        command_parse(&[]);
        command_parse(&[0xFF; 64]);
        for i in 0..300 {
            let n = match i % 3 {
                0 => rng.random_range(0..200),
                1 => 64 + 1024,
                _ => 64 + rng.random_range(0..64),
            };
            let mut input = bytes(&mut rng, n);
            if i % 5 == 0 && !input.is_empty() {
                input[0] = FABRICS_OPCODE;
                if let Some(b) = input.get_mut(4) {
                    *b = [0u8, 1, 4, 8][rng.random_range(0..4)];
                }
            }
            command_parse(&input);
        }
    }

    #[test]
    fn auth_messages_random_and_mutated() {
        use crate::auth::dh::DhGroupId;
        use crate::auth::msg::{Challenge, DhchapProtocol, Negotiate, Reply};
        use crate::auth::secret::Secret;
        use crate::auth::HashId;
        let mut rng = SmallRng::seed_from_u64(3);
        let mut seeds = Vec::new();
        let mut b = vec![0u8; 4096];
        let n = Negotiate {
            tid: 1,
            sc_c: 0,
            dhchap: Some(DhchapProtocol::new(HashId::ALL, DhGroupId::ALL)),
        }
        .write(&mut b)
        .unwrap();
        seeds.push(b[..n].to_vec());
        let dhv = bytes(&mut rng, 256);
        let n = Challenge {
            tid: 1,
            hash: HashId::Sha256,
            dhgroup: DhGroupId::Ffdhe2048,
            seqnum: 9,
            cval: &[3; 32],
            dhv: &dhv,
        }
        .write(&mut b)
        .unwrap();
        seeds.push(b[..n].to_vec());
        let n = Reply {
            tid: 1,
            rval: &[1; 48],
            cvalid: true,
            seqnum: 4,
            cval: &[2; 48],
            dhv: &dhv,
        }
        .write(&mut b)
        .unwrap();
        seeds.push(b[..n].to_vec());
        seeds.push(Secret::new(None, &[7; 32]).unwrap().to_text().into_bytes());
        for s in &seeds {
            auth_messages(s);
        }
        // DH values once each (a modexp costs ~100 ms unoptimised): a
        // valid one and the degenerate p-1 region.
        auth_messages(&dhv);
        auth_messages(&[0xFF; 256]);
        for i in 0..300 {
            let mut s = seeds[i % seeds.len()].clone();
            for _ in 0..=rng.random_range(0..4) {
                let at = rng.random_range(0..s.len());
                s[at] ^= 1 << rng.random_range(0..8);
            }
            if i % 3 == 0 {
                let cut = rng.random_range(0..s.len() + 1);
                s.truncate(cut);
            }
            auth_messages(&s);
        }
    }
}
