//! Reservations (NVM command set): the fields of Reservation Register
//! (0Dh), Report (0Eh), Acquire (11h) and Release (15h), their key data,
//! and the Reservation Status data structure Report returns (the 64-byte
//! header and 64-byte registrant entries of the extended form, which
//! carries 128-bit host identifiers, and the 24-byte form).

use crate::bytes::{arr, r16, r32, r64, w16, w32, w64};
use crate::error::{need, ParseError};
use crate::sqe::Sqe;

u8_enum! {
    /// Reservation type (RTYPE).
    pub enum ResvType {
        /// Write Exclusive.
        WriteExclusive = 1,
        /// Exclusive Access.
        ExclusiveAccess = 2,
        /// Write Exclusive, Registrants Only.
        WriteExclusiveRegOnly = 3,
        /// Exclusive Access, Registrants Only.
        ExclusiveAccessRegOnly = 4,
        /// Write Exclusive, All Registrants.
        WriteExclusiveAllRegs = 5,
        /// Exclusive Access, All Registrants.
        ExclusiveAccessAllRegs = 6,
    }
}

impl ResvType {
    /// Every registrant is a holder (types 5 and 6).
    pub const fn all_registrants(self) -> bool {
        matches!(
            self,
            ResvType::WriteExclusiveAllRegs | ResvType::ExclusiveAccessAllRegs
        )
    }

    /// Registrants may access as the holder does (types 3 to 6).
    pub const fn registrants_access(self) -> bool {
        !matches!(self, ResvType::WriteExclusive | ResvType::ExclusiveAccess)
    }

    /// Reads by non-holders are restricted too (the Exclusive Access
    /// types).
    pub const fn exclusive_access(self) -> bool {
        matches!(
            self,
            ResvType::ExclusiveAccess
                | ResvType::ExclusiveAccessRegOnly
                | ResvType::ExclusiveAccessAllRegs
        )
    }
}

/// Reservation Register CDW10 CPTPL values (bits 31:30).
pub mod cptpl {
    /// No change to the Persist Through Power Loss state.
    pub const NO_CHANGE: u8 = 0;
    /// Clear PTPL: reservations are released at power loss.
    pub const CLEAR: u8 = 2;
    /// Set PTPL: reservations persist through power loss.
    pub const PERSIST: u8 = 3;
}

/// Reservation Register RREGA values.
pub mod rrega {
    /// Register a key.
    pub const REGISTER: u8 = 0;
    /// Unregister.
    pub const UNREGISTER: u8 = 1;
    /// Replace the key.
    pub const REPLACE: u8 = 2;
}

/// Reservation Acquire RACQA values.
pub mod racqa {
    /// Acquire.
    pub const ACQUIRE: u8 = 0;
    /// Preempt.
    pub const PREEMPT: u8 = 1;
    /// Preempt and Abort.
    pub const PREEMPT_AND_ABORT: u8 = 2;
}

/// Reservation Release RRELA values.
pub mod rrela {
    /// Release.
    pub const RELEASE: u8 = 0;
    /// Clear.
    pub const CLEAR: u8 = 1;
}

/// Register, Acquire and Release CDW10, decoded. The action is bits 2:0,
/// IEKEY bit 3; Acquire and Release carry RTYPE in bits 15:8 and Register
/// CPTPL in bits 31:30.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ResvCdw10 {
    /// RREGA, RACQA or RRELA.
    pub action: u8,
    /// Ignore Existing Key.
    pub iekey: bool,
    /// RTYPE, raw (Acquire and Release).
    pub rtype: u8,
    /// CPTPL (Register).
    pub cptpl: u8,
}

impl ResvCdw10 {
    /// Decodes CDW10 of `sqe`.
    pub fn parse(sqe: &Sqe) -> ResvCdw10 {
        let c = sqe.cdw10();
        ResvCdw10 {
            action: (c & 0x7) as u8,
            iekey: c & (1 << 3) != 0,
            rtype: (c >> 8) as u8,
            cptpl: (c >> 30) as u8,
        }
    }

    /// Encodes it (host side).
    pub fn to_cdw10(self) -> u32 {
        u32::from(self.action & 0x7)
            | (u32::from(self.iekey) << 3)
            | (u32::from(self.rtype) << 8)
            | (u32::from(self.cptpl & 0x3) << 30)
    }
}

/// Bytes of Register and Acquire data (CRKEY, then NRKEY or PRKEY).
pub const KEYS_LEN: usize = 16;
/// Bytes of Release data (CRKEY).
pub const RELEASE_KEY_LEN: usize = 8;

/// The two keys of Register (CRKEY, NRKEY) or Acquire (CRKEY, PRKEY), or
/// the one of Release (the second is 0).
pub fn parse_keys(data: &[u8], len: usize) -> Result<(u64, u64), ParseError> {
    need(len, data.len())?;
    let second = if len >= KEYS_LEN { r64(data, 8) } else { 0 };
    Ok((r64(data, 0), second))
}

/// Reservation Report CDW11 bit 0: Extended Data Structure.
pub const REPORT_EDS: u32 = 1 << 0;
/// Reservation Status header bytes, extended form.
pub const STATUS_EXT_HEADER_LEN: usize = 64;
/// Registrant entry bytes, extended form.
pub const REG_EXT_LEN: usize = 64;
/// Reservation Status header bytes, 24-byte form.
pub const STATUS_HEADER_LEN: usize = 24;
/// Registrant entry bytes, 24-byte form.
pub const REG_LEN: usize = 24;
/// CNTLID reported for a registrant without a live controller (dynamic
/// controller model).
pub const CNTLID_NONE: u16 = 0xFFFF;

/// One registrant of a Reservation Status data structure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RegisteredCtrl {
    /// Controller ID, [`CNTLID_NONE`] when not known.
    pub cntlid: u16,
    /// Holds the reservation (RCSTS bit 0).
    pub holds: bool,
    /// Host identifier (the 24-byte form carries its first 8 bytes).
    pub hostid: [u8; 16],
    /// Reservation key.
    pub rkey: u64,
}

/// The Reservation Status data structure.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ReservationStatus {
    /// Generation: bumped by every Register, preempt and clear.
    pub gen: u32,
    /// Reservation type held, 0 for none.
    pub rtype: u8,
    /// Persist Through Power Loss state.
    pub ptpls: bool,
    /// Registrants.
    pub regs: Vec<RegisteredCtrl>,
}

impl ReservationStatus {
    /// The structure, extended (`eds`) or not. REGCTL counts every
    /// registrant even when the host reads fewer bytes, as the spec asks.
    pub fn write(&self, eds: bool) -> Vec<u8> {
        let (hdr, entry) = if eds {
            (STATUS_EXT_HEADER_LEN, REG_EXT_LEN)
        } else {
            (STATUS_HEADER_LEN, REG_LEN)
        };
        let mut out = vec![0u8; hdr + entry * self.regs.len()];
        w32(&mut out, 0, self.gen);
        out[4] = self.rtype;
        w16(
            &mut out,
            5,
            u16::try_from(self.regs.len()).unwrap_or(u16::MAX),
        );
        out[9] = u8::from(self.ptpls);
        for (i, r) in self.regs.iter().enumerate() {
            let at = hdr + i * entry;
            w16(&mut out, at, r.cntlid);
            out[at + 2] = u8::from(r.holds);
            if eds {
                w64(&mut out, at + 8, r.rkey);
                out[at + 16..at + 32].copy_from_slice(&r.hostid);
            } else {
                out[at + 8..at + 16].copy_from_slice(&r.hostid[..8]);
                w64(&mut out, at + 16, r.rkey);
            }
        }
        out
    }

    /// Parses the structure (host side), as many entries as `b` holds of
    /// the REGCTL it announces.
    pub fn parse(b: &[u8], eds: bool) -> Result<ReservationStatus, ParseError> {
        let (hdr, entry) = if eds {
            (STATUS_EXT_HEADER_LEN, REG_EXT_LEN)
        } else {
            (STATUS_HEADER_LEN, REG_LEN)
        };
        need(hdr, b.len())?;
        let regctl = usize::from(r16(b, 5));
        let n = regctl.min((b.len() - hdr) / entry);
        let regs = (0..n)
            .map(|i| {
                let at = hdr + i * entry;
                let (hostid, rkey) = if eds {
                    (arr::<16>(b, at + 16), r64(b, at + 8))
                } else {
                    let mut h = [0u8; 16];
                    h[..8].copy_from_slice(&b[at + 8..at + 16]);
                    (h, r64(b, at + 16))
                };
                RegisteredCtrl {
                    cntlid: r16(b, at),
                    holds: b[at + 2] & 1 != 0,
                    hostid,
                    rkey,
                }
            })
            .collect();
        Ok(ReservationStatus {
            gen: r32(b, 0),
            rtype: b[4],
            ptpls: b[9] & 1 != 0,
            regs,
        })
    }
}

/// Reservation Notification log page (LID 80h) types.
pub mod notice {
    /// Empty log page: nothing to report.
    pub const EMPTY: u8 = 0;
    /// The host's registration was preempted (removed by another host).
    pub const REGISTRATION_PREEMPTED: u8 = 1;
    /// The reservation was released.
    pub const RESERVATION_RELEASED: u8 = 2;
    /// The reservation was preempted (cleared).
    pub const RESERVATION_PREEMPTED: u8 = 3;
}

/// Bytes of one Reservation Notification log page.
pub const NOTIFICATION_LOG_LEN: usize = 64;

/// One Reservation Notification log page: its count (non-zero, wrapping),
/// type ([`notice`]), how many more are waiting (at most 255) and the
/// namespace.
pub fn write_notification_log(count: u64, kind: u8, available: usize, nsid: u32) -> Vec<u8> {
    let mut out = vec![0u8; NOTIFICATION_LOG_LEN];
    w64(&mut out, 0, count);
    out[8] = kind;
    out[9] = available.min(255) as u8;
    w32(&mut out, 12, nsid);
    out
}

/// The Reservation Log Page Available event (I/O command specific status,
/// log 80h).
pub const RESERVATION_LOG_AVAILABLE: crate::features::AsyncEvent = crate::features::AsyncEvent {
    event_type: crate::features::AsyncEventType::IoCommandSpecific as u8,
    info: 0,
    log_page: 0x80,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdw10_round_trips() {
        let c = ResvCdw10 {
            action: racqa::PREEMPT,
            iekey: true,
            rtype: 4,
            cptpl: cptpl::PERSIST,
        };
        let mut s = Sqe::new(0x11, 1);
        s.set_cdw10(c.to_cdw10());
        assert_eq!(ResvCdw10::parse(&s), c);
    }

    #[test]
    fn status_round_trips_in_both_forms() {
        let st = ReservationStatus {
            gen: 3,
            rtype: ResvType::WriteExclusiveRegOnly.as_u8(),
            ptpls: true,
            regs: vec![
                RegisteredCtrl {
                    cntlid: 1,
                    holds: true,
                    hostid: [7; 16],
                    rkey: 0xAB,
                },
                RegisteredCtrl {
                    cntlid: CNTLID_NONE,
                    holds: false,
                    hostid: [9; 16],
                    rkey: 0xCD,
                },
            ],
        };
        let b = st.write(true);
        assert_eq!(b.len(), 64 + 2 * 64);
        assert_eq!(ReservationStatus::parse(&b, true).unwrap(), st);
        let b = st.write(false);
        assert_eq!(b.len(), 24 + 2 * 24);
        let back = ReservationStatus::parse(&b, false).unwrap();
        assert_eq!(back.regs[1].rkey, 0xCD);
        assert_eq!(back.regs[1].hostid[..8], [9; 8]);
        // A short read still parses the entries it holds.
        let part = ReservationStatus::parse(&st.write(true)[..64 + 64], true).unwrap();
        assert_eq!(part.regs.len(), 1);
        assert!(parse_keys(&[0; 8], KEYS_LEN).is_err());
    }
}
