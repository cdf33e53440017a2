//! NVMe in-band authentication (NVMe Base 2.0 section 8.13, TP 8006):
//! the Authentication Send/Receive commands (FCTYPE 05h/06h), the
//! AUTH_Negotiate, DH-HMAC-CHAP and AUTH_Failure messages they carry, and
//! the DH-HMAC-CHAP computations both ends make.
//!
//! - [`msg`]: the message layouts (built and parsed, either side).
//! - [`secret`]: the `DHHC-1:xx:base64:` secret representation and the
//!   key transformation with an NQN.
//! - [`dh`]: the RFC 7919 FFDHE groups and the null group.
//! - [`chap`]: the hash functions, the augmented challenge and the
//!   challenge response.
//!
//! Checked against Linux `drivers/nvme/common/auth.c`,
//! `drivers/nvme/target/fabrics-cmd-auth.c`, `include/linux/nvme.h` and
//! SPDK `lib/nvme/nvme_auth.c`, `lib/nvmf/auth.c`.

pub mod chap;
pub mod dh;
pub mod msg;
pub mod secret;

use crate::bytes::r32;
use crate::error::ParseError;
use crate::fabrics::{fctype, FabricsType, FABRICS_OPCODE};
use crate::sqe::Sqe;

pub use chap::HashId;
pub use dh::DhGroupId;
pub use msg::FailureReason;

/// SECP of the Authentication commands: the security protocol assigned to
/// NVMe (SPC-4), which is the only one these commands carry.
pub const SECP_NVME: u8 = 0xE9;
/// SPSP0 and SPSP1 for DH-HMAC-CHAP transactions (NVMe Base 2.0 figure
/// 373: SPSP 0101h, "authentication protocol messages").
pub const SPSP: u8 = 0x01;
/// Connect response dword 0 bit 17 (AUTHREQ.ATR): an authentication
/// transaction is required before the queue may be used (bit 16 is
/// reserved; Linux `NVME_CONNECT_AUTHREQ_ATR`, SPDK `authreq.atr`).
pub const CONNECT_AUTHREQ_ATR: u32 = 1 << 17;

/// The SQE fields of Authentication Send (TL) and Receive (AL).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthCmd {
    /// Send (host to controller) or Receive.
    pub send: bool,
    /// Security protocol (byte 43).
    pub secp: u8,
    /// SP specific 0 (byte 41).
    pub spsp0: u8,
    /// SP specific 1 (byte 42).
    pub spsp1: u8,
    /// Transfer length (Send) or allocation length (Receive), bytes 47:44.
    pub len: u32,
}

impl AuthCmd {
    const SPSP0: usize = 41;
    const SPSP1: usize = 42;
    const SECP: usize = 43;
    const LEN: usize = 44;

    /// Decodes an Authentication Send or Receive SQE.
    pub fn parse(sqe: &Sqe) -> Result<AuthCmd, ParseError> {
        if sqe.opcode() != FABRICS_OPCODE {
            return Err(ParseError::Opcode(sqe.opcode()));
        }
        let send = match FabricsType::from_u8(fctype(sqe)) {
            Some(FabricsType::AuthenticationSend) => true,
            Some(FabricsType::AuthenticationReceive) => false,
            _ => return Err(ParseError::FabricsType(fctype(sqe))),
        };
        let b = sqe.as_bytes();
        Ok(AuthCmd {
            send,
            secp: b[Self::SECP],
            spsp0: b[Self::SPSP0],
            spsp1: b[Self::SPSP1],
            len: r32(b, Self::LEN),
        })
    }

    /// Whether the command names the NVMe DH-HMAC-CHAP protocol.
    pub fn is_dhchap(&self) -> bool {
        self.secp == SECP_NVME && self.spsp0 == SPSP && self.spsp1 == SPSP
    }

    /// Writes the fields into a Fabrics SQE of the right FCTYPE (the
    /// caller sets the SGL).
    pub fn write(&self, sqe: &mut Sqe) {
        let b = sqe.as_bytes_mut();
        b[0] = FABRICS_OPCODE;
        b[crate::fabrics::FCTYPE_OFFSET] = if self.send {
            FabricsType::AuthenticationSend.as_u8()
        } else {
            FabricsType::AuthenticationReceive.as_u8()
        };
        b[Self::SECP] = self.secp;
        b[Self::SPSP0] = self.spsp0;
        b[Self::SPSP1] = self.spsp1;
        b[Self::LEN..Self::LEN + 4].copy_from_slice(&self.len.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_command_round_trips_and_names_its_direction() {
        for send in [true, false] {
            let c = AuthCmd {
                send,
                secp: SECP_NVME,
                spsp0: SPSP,
                spsp1: SPSP,
                len: 72,
            };
            let mut sqe = Sqe::new(FABRICS_OPCODE, 3);
            c.write(&mut sqe);
            assert_eq!(AuthCmd::parse(&sqe), Ok(c));
            assert!(c.is_dhchap());
            assert_eq!(sqe.as_bytes()[4], if send { 5 } else { 6 });
        }
        let sqe = Sqe::new(FABRICS_OPCODE, 3);
        assert_eq!(AuthCmd::parse(&sqe), Err(ParseError::FabricsType(0)));
    }

    /// Known answers from `testdata/vectors.py` (Python hashlib/hmac,
    /// Linux's algorithm): secrets parse, DH agrees, and both responses
    /// match for each transformation hash and a DH group each.
    #[test]
    fn responses_match_the_python_vectors() {
        use chap::{response, ResponseParams, ROLE_CONTROLLER, ROLE_HOST};
        use secret::Secret;
        const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-000000000001";
        const SUB: &str = "nqn.2024-11.dev.pollux:auth";
        let text = include_str!("testdata/vectors.txt");
        let mut seen = 0;
        for block in text.split("vector ").skip(1) {
            let mut lines = block.lines();
            let head: Vec<u32> = lines
                .next()
                .unwrap()
                .split(' ')
                .map(|v| v.parse().unwrap())
                .collect();
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
            };
            let hex = |s: String| -> Vec<u8> {
                (0..s.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                    .collect()
            };
            let hash = HashId::from_u8(head[1] as u8).unwrap();
            let key = Secret::parse(&field("secret ").unwrap()).unwrap();
            let ckey = Secret::parse(&field("ctrl_secret ").unwrap()).unwrap();
            assert_eq!(key.transform.map_or(0, HashId::as_u8) as u32, head[0]);
            let hl = hash.hash_len();
            let c1: Vec<u8> = (0..hl).map(|i| (i as u8).wrapping_add(0x40)).collect();
            let c2: Vec<u8> = (0..hl).map(|i| 0xFF - i as u8).collect();
            let dh = match head[2] {
                0 => None,
                bits => {
                    let g = DhGroupId::ALL
                        .iter()
                        .copied()
                        .find(|g| g.value_len() * 8 == bits as usize)
                        .unwrap();
                    let mut rx = [0x11u8; dh::PRIVATE_KEY_LEN];
                    rx[0] = 0x91;
                    let x = dh::KeyPair::generate(g, &rx).unwrap();
                    let y = dh::KeyPair::generate(g, &[0x22; dh::PRIVATE_KEY_LEN]).unwrap();
                    let s = x.shared_secret(y.public()).unwrap();
                    assert_eq!(s, y.shared_secret(x.public()).unwrap());
                    assert_eq!(
                        HashId::Sha256.digest(&s).as_slice(),
                        hex(field("dh_secret_sha256 ").unwrap())
                    );
                    Some(s)
                }
            };
            let p = ResponseParams {
                hash,
                seqnum: 0x0102_0304,
                tid: 0x0506,
                scc: 0,
                role: ROLE_HOST,
                nqn1: HOST,
                nqn2: SUB,
            };
            let r1 = response(key.transformed(HOST).as_slice(), &p, &c1, dh.as_deref());
            assert_eq!(r1.as_slice(), hex(field("host_response ").unwrap()));
            let p = ResponseParams {
                seqnum: 0x0a0b_0c0d,
                role: ROLE_CONTROLLER,
                nqn1: SUB,
                nqn2: HOST,
                ..p
            };
            let r2 = response(ckey.transformed(SUB).as_slice(), &p, &c2, dh.as_deref());
            assert_eq!(r2.as_slice(), hex(field("ctrl_response ").unwrap()));
            seen += 1;
        }
        assert_eq!(seen, 4);
    }
}
