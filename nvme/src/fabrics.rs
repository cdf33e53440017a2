//! NVMe over Fabrics: the Fabrics command (opcode 7Fh), Connect and its
//! 1024-byte data, Property Get/Set, and the controller properties that
//! replace PCIe registers (CAP, VS, CC, CSTS).

use crate::bytes::{arr, r16, r32, r64, w16, w32, w64};
use crate::error::{need, ParseError};
use crate::opcode::DataDirection;
use crate::sqe::{Psdt, Sgl, Sqe};

/// Opcode shared by all Fabrics commands.
pub const FABRICS_OPCODE: u8 = 0x7F;
/// SQE byte holding the Fabrics command type (FCTYPE).
pub const FCTYPE_OFFSET: usize = 4;

u8_enum! {
    /// Fabrics command types (NVMe-oF 1.1, figure 18).
    pub enum FabricsType {
        /// Property Set.
        PropertySet = 0x00,
        /// Connect.
        Connect = 0x01,
        /// Property Get.
        PropertyGet = 0x04,
        /// Authentication Send.
        AuthenticationSend = 0x05,
        /// Authentication Receive.
        AuthenticationReceive = 0x06,
        /// Disconnect.
        Disconnect = 0x08,
    }
}

impl FabricsType {
    /// Data direction, from FCTYPE bits 1:0 (same rule as opcodes).
    pub const fn direction(self) -> DataDirection {
        DataDirection::of_opcode(self as u8)
    }
}

/// The raw FCTYPE byte of a Fabrics SQE.
pub fn fctype(sqe: &Sqe) -> u8 {
    sqe.as_bytes()[FCTYPE_OFFSET]
}

fn fabrics_sqe(fctype: FabricsType, cid: u16) -> Sqe {
    fabrics_sqe_raw(fctype.as_u8(), cid)
}

/// Fabrics commands always describe data with SGLs (Linux sets
/// `NVME_CMD_SGL_METABUF`), so PSDT is 01b even without data.
fn fabrics_sqe_raw(fctype: u8, cid: u16) -> Sqe {
    let mut s = Sqe::new(FABRICS_OPCODE, cid);
    s.as_bytes_mut()[FCTYPE_OFFSET] = fctype;
    s.set_psdt(Psdt::SglMptrAddress);
    s
}

fn check_fabrics(sqe: &Sqe, want: FabricsType) -> Result<(), ParseError> {
    if sqe.opcode() != FABRICS_OPCODE {
        return Err(ParseError::Opcode(sqe.opcode()));
    }
    if fctype(sqe) != want.as_u8() {
        return Err(ParseError::FabricsType(fctype(sqe)));
    }
    Ok(())
}

/// Maximum NQN length in bytes, excluding the terminating NUL (NVMe Base
/// 2.0 section 4.5: 223 bytes, so it fits the 256-byte fields with room).
pub const NQN_MAX_LEN: usize = 223;
/// NQN of the well-known discovery subsystem.
pub const DISCOVERY_NQN: &str = "nqn.2014-08.org.nvmexpress.discovery";

/// An NVMe Qualified Name in its 256-byte, NUL-padded wire field. Fixed
/// size so that parsing a peer's Connect data never allocates.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Nqn([u8; 256]);

impl Default for Nqn {
    fn default() -> Self {
        Nqn([0; 256])
    }
}

impl core::fmt::Debug for Nqn {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.as_str() {
            Ok(s) => write!(f, "Nqn({s:?})"),
            Err(_) => write!(f, "Nqn(<invalid>)"),
        }
    }
}

impl Nqn {
    /// Builds from a string: 1..=223 bytes, no NUL.
    pub fn new(s: &str) -> Result<Self, ParseError> {
        let b = s.as_bytes();
        if b.is_empty() || b.len() > NQN_MAX_LEN || b.contains(&0) {
            return Err(ParseError::Nqn);
        }
        let mut a = [0u8; 256];
        a[..b.len()].copy_from_slice(b);
        Ok(Nqn(a))
    }
    /// The empty field (all zeroes): what a host without a host NQN sends
    /// (SPDK's initiator when its transport ID names no `hostnqn`).
    pub const EMPTY: Nqn = Nqn([0; 256]);

    /// The wire field for `s`: an NQN as [`Nqn::new`] checks it, or the
    /// empty field for `""`.
    pub fn field(s: &str) -> Result<Self, ParseError> {
        if s.is_empty() {
            Ok(Nqn::EMPTY)
        } else {
            Nqn::new(s)
        }
    }
    /// Wraps a wire field as received (validated lazily by [`Nqn::as_str`]).
    pub const fn from_raw(raw: [u8; 256]) -> Self {
        Nqn(raw)
    }
    /// The wire field.
    pub const fn raw(&self) -> &[u8; 256] {
        &self.0
    }
    /// The name up to the first NUL, which may be empty (an all-zero
    /// field is a well-formed "no NQN": the Linux and SPDK targets accept
    /// it, and it can only ever match "any host"). Errors if the field is
    /// unterminated, if the NUL comes after the 223-byte limit, or if the
    /// name is not UTF-8.
    pub fn as_str(&self) -> Result<&str, ParseError> {
        let end = self.0.iter().position(|&b| b == 0).ok_or(ParseError::Nqn)?;
        if end > NQN_MAX_LEN {
            return Err(ParseError::Nqn);
        }
        core::str::from_utf8(&self.0[..end]).map_err(|_| ParseError::Nqn)
    }
    /// Whether the field holds exactly `s`.
    pub fn eq_str(&self, s: &str) -> bool {
        self.as_str() == Ok(s)
    }
}

/// Connect command (FCTYPE 01h) fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnectCmd {
    /// Command identifier.
    pub cid: u16,
    /// Record format; only 0 is defined.
    pub recfmt: u16,
    /// Queue to create: 0 = admin queue.
    pub qid: u16,
    /// Submission queue size, 0-based.
    pub sqsize: u16,
    /// Connect attributes (bit 2: SQ flow control disable, see
    /// [`ConnectCmd::CATTR_SQ_FLOW_DISABLE`]; bits 1:0 priority class).
    pub cattr: u8,
    /// Keep alive timeout in milliseconds (admin queue only).
    pub kato: u32,
    /// Data pointer for the 1024-byte Connect data.
    pub dptr: Sgl,
}

impl ConnectCmd {
    /// Byte offset of RECFMT within the SQE (for IPO in Connect errors).
    pub const RECFMT_OFFSET: u16 = 40;
    /// Byte offset of QID.
    pub const QID_OFFSET: u16 = 42;
    /// Byte offset of SQSIZE.
    pub const SQSIZE_OFFSET: u16 = 44;
    /// Byte offset of CATTR.
    pub const CATTR_OFFSET: u16 = 46;
    /// Byte offset of KATO.
    pub const KATO_OFFSET: u16 = 48;
    /// CATTR bit 2 (NVMe-oF 1.1, Linux NVME_CONNECT_DISABLE_SQFLOW): the
    /// host disables SQ flow control on this queue, so completions need
    /// not carry SQHD (and NVMe/TCP may then complete reads by C2HData
    /// SUCCESS alone).
    pub const CATTR_SQ_FLOW_DISABLE: u8 = 1 << 2;

    /// Decodes a Connect SQE.
    pub fn parse(sqe: &Sqe) -> Result<Self, ParseError> {
        check_fabrics(sqe, FabricsType::Connect)?;
        let b = sqe.as_bytes();
        Ok(ConnectCmd {
            cid: sqe.cid(),
            recfmt: r16(b, 40),
            qid: r16(b, 42),
            sqsize: r16(b, 44),
            cattr: b[46],
            kato: r32(b, 48),
            dptr: sqe.sgl(),
        })
    }

    /// Builds the SQE.
    pub fn to_sqe(&self) -> Sqe {
        let mut s = fabrics_sqe(FabricsType::Connect, self.cid);
        s.set_sgl(&self.dptr);
        let b = s.as_bytes_mut();
        w16(b, 40, self.recfmt);
        w16(b, 42, self.qid);
        w16(b, 44, self.sqsize);
        b[46] = self.cattr;
        w32(b, 48, self.kato);
        s
    }
}

/// Connect data (1024 bytes, carried in-capsule by NVMe/TCP).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnectData {
    /// 128-bit host identifier.
    pub hostid: [u8; 16],
    /// Requested controller ID: FFFFh = any (dynamic model), FFFEh =
    /// static model; for I/O queues the ID the admin Connect returned.
    pub cntlid: u16,
    /// Target subsystem NQN.
    pub subnqn: Nqn,
    /// Host NQN.
    pub hostnqn: Nqn,
}

impl ConnectData {
    /// Size on the wire.
    pub const SIZE: usize = 1024;
    /// Byte offset of HOSTID (for IPO with IATTR data bit set).
    pub const HOSTID_OFFSET: u16 = 0;
    /// Byte offset of CNTLID.
    pub const CNTLID_OFFSET: u16 = 16;
    /// Byte offset of SUBNQN.
    pub const SUBNQN_OFFSET: u16 = 256;
    /// Byte offset of HOSTNQN.
    pub const HOSTNQN_OFFSET: u16 = 512;
    /// CNTLID value asking for any controller (dynamic controller model).
    pub const CNTLID_DYNAMIC: u16 = 0xFFFF;

    /// Parses the first 1024 bytes of `b`. NQNs are not validated here
    /// (use [`Nqn::as_str`]) so the caller can report which one is bad.
    pub fn parse(b: &[u8]) -> Result<Self, ParseError> {
        need(Self::SIZE, b.len())?;
        Ok(ConnectData {
            hostid: arr(b, 0),
            cntlid: r16(b, 16),
            subnqn: Nqn(arr(b, 256)),
            hostnqn: Nqn(arr(b, 512)),
        })
    }

    /// Writes into the first 1024 bytes of `out` (reserved bytes zeroed).
    pub fn write(&self, out: &mut [u8]) -> Result<(), ParseError> {
        need(Self::SIZE, out.len())?;
        let out = &mut out[..Self::SIZE];
        out.fill(0);
        out[..16].copy_from_slice(&self.hostid);
        w16(out, 16, self.cntlid);
        out[256..512].copy_from_slice(&self.subnqn.0);
        out[512..768].copy_from_slice(&self.hostnqn.0);
        Ok(())
    }

    /// Wire form.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        // Cannot fail: the buffer is exactly SIZE.
        let _ = self.write(&mut b);
        b
    }
}

/// CQE dword 0 of a successful Connect: the controller ID in bits 15:0
/// (bits 31:16 are AUTHREQ, zero without in-band authentication).
pub const fn connect_success_dw0(cntlid: u16) -> u32 {
    cntlid as u32
}

/// CQE dword 0 for Connect Invalid Parameters: IPO (byte offset of the bad
/// field) in bits 15:0, IATTR in bits 23:16 with bit 0 set when the offset
/// is into the Connect data rather than the SQE. Matches Linux's
/// `IPO_IATTR_CONNECT_DATA` / `IPO_IATTR_CONNECT_SQE`.
pub const fn connect_invalid_param_dw0(ipo: u16, in_data: bool) -> u32 {
    ((in_data as u32) << 16) | ipo as u32
}

/// Property size selector (ATTRIB bits 2:0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PropertySize {
    /// 4-byte property.
    Four,
    /// 8-byte property.
    Eight,
}

impl PropertySize {
    fn from_attrib(a: u8) -> Result<Self, ParseError> {
        match a & 0x7 {
            0 => Ok(PropertySize::Four),
            1 => Ok(PropertySize::Eight),
            _ => Err(ParseError::Field { offset: 40 }),
        }
    }
    const fn attrib(self) -> u8 {
        match self {
            PropertySize::Four => 0,
            PropertySize::Eight => 1,
        }
    }
    /// Size in bytes.
    pub const fn bytes(self) -> usize {
        match self {
            PropertySize::Four => 4,
            PropertySize::Eight => 8,
        }
    }
}

/// Property Get (FCTYPE 04h).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PropertyGet {
    /// Command identifier.
    pub cid: u16,
    /// Access size.
    pub size: PropertySize,
    /// Property offset (see [`property`]).
    pub offset: u32,
}

impl PropertyGet {
    /// Decodes the SQE.
    pub fn parse(sqe: &Sqe) -> Result<Self, ParseError> {
        check_fabrics(sqe, FabricsType::PropertyGet)?;
        let b = sqe.as_bytes();
        Ok(PropertyGet {
            cid: sqe.cid(),
            size: PropertySize::from_attrib(b[40])?,
            offset: r32(b, 44),
        })
    }
    /// Builds the SQE.
    pub fn to_sqe(&self) -> Sqe {
        let mut s = fabrics_sqe(FabricsType::PropertyGet, self.cid);
        let b = s.as_bytes_mut();
        b[40] = self.size.attrib();
        w32(b, 44, self.offset);
        s
    }
}

/// Property Set (FCTYPE 00h).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PropertySet {
    /// Command identifier.
    pub cid: u16,
    /// Access size.
    pub size: PropertySize,
    /// Property offset (see [`property`]).
    pub offset: u32,
    /// Value (only the low 4 bytes for [`PropertySize::Four`]).
    pub value: u64,
}

impl PropertySet {
    /// Decodes the SQE.
    pub fn parse(sqe: &Sqe) -> Result<Self, ParseError> {
        check_fabrics(sqe, FabricsType::PropertySet)?;
        let b = sqe.as_bytes();
        let size = PropertySize::from_attrib(b[40])?;
        let raw = r64(b, 48);
        Ok(PropertySet {
            cid: sqe.cid(),
            size,
            offset: r32(b, 44),
            value: match size {
                PropertySize::Four => raw & 0xffff_ffff,
                PropertySize::Eight => raw,
            },
        })
    }
    /// Builds the SQE.
    pub fn to_sqe(&self) -> Sqe {
        let mut s = fabrics_sqe(FabricsType::PropertySet, self.cid);
        let b = s.as_bytes_mut();
        b[40] = self.size.attrib();
        w32(b, 44, self.offset);
        w64(b, 48, self.value);
        s
    }
}

/// Any Fabrics command, decoded by FCTYPE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FabricsCmd {
    /// Connect.
    Connect(ConnectCmd),
    /// Property Get.
    PropertyGet(PropertyGet),
    /// Property Set.
    PropertySet(PropertySet),
    /// Disconnect (tears down the I/O queue it is sent on).
    Disconnect {
        /// Command identifier.
        cid: u16,
    },
    /// A known or unknown FCTYPE this crate does not decode further
    /// (authentication); answer with Invalid Opcode / Invalid Field.
    Other {
        /// Command identifier.
        cid: u16,
        /// Raw FCTYPE.
        fctype: u8,
    },
}

impl FabricsCmd {
    /// Decodes a Fabrics SQE. Errors only if the opcode is not 7Fh or a
    /// field is malformed (e.g. a reserved property size).
    pub fn parse(sqe: &Sqe) -> Result<Self, ParseError> {
        if sqe.opcode() != FABRICS_OPCODE {
            return Err(ParseError::Opcode(sqe.opcode()));
        }
        Ok(match FabricsType::from_u8(fctype(sqe)) {
            Some(FabricsType::Connect) => FabricsCmd::Connect(ConnectCmd::parse(sqe)?),
            Some(FabricsType::PropertyGet) => FabricsCmd::PropertyGet(PropertyGet::parse(sqe)?),
            Some(FabricsType::PropertySet) => FabricsCmd::PropertySet(PropertySet::parse(sqe)?),
            Some(FabricsType::Disconnect) => FabricsCmd::Disconnect { cid: sqe.cid() },
            _ => FabricsCmd::Other {
                cid: sqe.cid(),
                fctype: fctype(sqe),
            },
        })
    }

    /// Builds the SQE (the inverse of [`FabricsCmd::parse`]).
    pub fn to_sqe(&self) -> Sqe {
        match self {
            FabricsCmd::Connect(c) => c.to_sqe(),
            FabricsCmd::PropertyGet(c) => c.to_sqe(),
            FabricsCmd::PropertySet(c) => c.to_sqe(),
            FabricsCmd::Disconnect { cid } => fabrics_sqe(FabricsType::Disconnect, *cid),
            FabricsCmd::Other { cid, fctype } => fabrics_sqe_raw(*fctype, *cid),
        }
    }
}

/// Property offsets (NVMe Base 2.0 figure 33) reachable over fabrics.
pub mod property {
    /// Controller Capabilities (8 bytes).
    pub const CAP: u32 = 0x00;
    /// Version (4 bytes).
    pub const VS: u32 = 0x08;
    /// Controller Configuration (4 bytes).
    pub const CC: u32 = 0x14;
    /// Controller Status (4 bytes).
    pub const CSTS: u32 = 0x1C;
    /// NVM Subsystem Reset (4 bytes).
    pub const NSSR: u32 = 0x20;

    /// Size of a defined fabrics property, `None` for offsets that are
    /// reserved or PCIe-only (answer Invalid Field).
    pub const fn size(offset: u32) -> Option<usize> {
        match offset {
            CAP => Some(8),
            VS | CC | CSTS | NSSR => Some(4),
            _ => None,
        }
    }
}

/// Encodes a version as VS/VER does: major 31:16, minor 15:8, tertiary 7:0.
pub const fn version(major: u16, minor: u8, tertiary: u8) -> u32 {
    ((major as u32) << 16) | ((minor as u32) << 8) | tertiary as u32
}

/// NVMe 2.0.0, the version this crate's structures follow.
pub const NVME_VERSION_2_0: u32 = version(2, 0, 0);
/// NVMe 1.3.0, the first version whose fabrics rules Linux requires.
pub const NVME_VERSION_1_3: u32 = version(1, 3, 0);

macro_rules! bitfield {
    ($st:ty, $get:ident, $set:ident, $ty:ty, $shift:expr, $bits:expr, $doc:expr) => {
        #[doc = $doc]
        pub const fn $get(&self) -> $ty {
            ((self.0 >> $shift) & (((1 as $st) << $bits) - 1)) as $ty
        }
        #[doc = concat!("Sets: ", $doc)]
        #[must_use]
        pub const fn $set(mut self, v: $ty) -> Self {
            let mask: $st = (((1 as $st) << $bits) - 1) << $shift;
            self.0 = (self.0 & !mask) | (((v as $st) << $shift) & mask);
            self
        }
    };
}

/// Controller Capabilities (CAP, 8 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Cap(pub u64);

impl Cap {
    bitfield!(
        u64,
        mqes,
        with_mqes,
        u16,
        0,
        16,
        "Maximum Queue Entries Supported, 0-based."
    );
    bitfield!(
        u64,
        cqr,
        with_cqr,
        u8,
        16,
        1,
        "Contiguous Queues Required (fabrics: 1)."
    );
    bitfield!(
        u64,
        ams,
        with_ams,
        u8,
        17,
        2,
        "Arbitration Mechanism Supported."
    );
    bitfield!(
        u64,
        to,
        with_to,
        u8,
        24,
        8,
        "Timeout in 500 ms units for CSTS.RDY transitions."
    );
    bitfield!(u64, dstrd, with_dstrd, u8, 32, 4, "Doorbell Stride.");
    bitfield!(
        u64,
        nssrs,
        with_nssrs,
        u8,
        36,
        1,
        "NVM Subsystem Reset Supported."
    );
    bitfield!(
        u64,
        css,
        with_css,
        u8,
        37,
        8,
        "Command Sets Supported (bit 0 NVM, bit 6 I/O sets, bit 7 admin only)."
    );
    bitfield!(
        u64,
        mpsmin,
        with_mpsmin,
        u8,
        48,
        4,
        "Memory Page Size Minimum (2^(12+n))."
    );
    bitfield!(
        u64,
        mpsmax,
        with_mpsmax,
        u8,
        52,
        4,
        "Memory Page Size Maximum (2^(12+n))."
    );
}

/// CAP.CSS bit: NVM command set.
pub const CAP_CSS_NVM: u8 = 1 << 0;
/// CAP.CSS bit: one or more I/O command sets (enables CC.CSS = 110b).
pub const CAP_CSS_IO_SETS: u8 = 1 << 6;

/// Shutdown notification (CC.SHN).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shn {
    /// No notification.
    None,
    /// Normal shutdown.
    Normal,
    /// Abrupt shutdown.
    Abrupt,
    /// Reserved encoding 11b.
    Reserved,
}

/// Controller Configuration (CC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Cc(pub u32);

impl Cc {
    bitfield!(u32, en, with_en, u8, 0, 1, "Enable.");
    bitfield!(u32, css, with_css, u8, 4, 3, "I/O Command Set Selected.");
    bitfield!(u32, mps, with_mps, u8, 7, 4, "Memory Page Size (2^(12+n)).");
    bitfield!(
        u32,
        ams,
        with_ams,
        u8,
        11,
        3,
        "Arbitration Mechanism Selected."
    );
    bitfield!(
        u32,
        shn_raw,
        with_shn_raw,
        u8,
        14,
        2,
        "Shutdown Notification, raw."
    );
    bitfield!(
        u32,
        iosqes,
        with_iosqes,
        u8,
        16,
        4,
        "I/O SQ Entry Size, log2 (6 = 64 bytes)."
    );
    bitfield!(
        u32,
        iocqes,
        with_iocqes,
        u8,
        20,
        4,
        "I/O CQ Entry Size, log2 (4 = 16 bytes)."
    );

    /// Whether EN is set.
    pub const fn enabled(&self) -> bool {
        self.en() != 0
    }
    /// Shutdown notification.
    pub const fn shn(&self) -> Shn {
        match self.shn_raw() {
            0 => Shn::None,
            1 => Shn::Normal,
            2 => Shn::Abrupt,
            _ => Shn::Reserved,
        }
    }
    /// Sets the shutdown notification.
    #[must_use]
    pub const fn with_shn(self, s: Shn) -> Self {
        self.with_shn_raw(match s {
            Shn::None => 0,
            Shn::Normal => 1,
            Shn::Abrupt => 2,
            Shn::Reserved => 3,
        })
    }
}

/// Shutdown status (CSTS.SHST).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shst {
    /// Normal operation.
    Normal,
    /// Shutdown processing occurring.
    Occurring,
    /// Shutdown processing complete.
    Complete,
    /// Reserved encoding 11b.
    Reserved,
}

/// Controller Status (CSTS).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Csts(pub u32);

impl Csts {
    bitfield!(u32, rdy, with_rdy, u8, 0, 1, "Ready.");
    bitfield!(u32, cfs, with_cfs, u8, 1, 1, "Controller Fatal Status.");
    bitfield!(
        u32,
        shst_raw,
        with_shst_raw,
        u8,
        2,
        2,
        "Shutdown Status, raw."
    );
    bitfield!(
        u32,
        nssro,
        with_nssro,
        u8,
        4,
        1,
        "NVM Subsystem Reset Occurred."
    );
    bitfield!(u32, pp, with_pp, u8, 5, 1, "Processing Paused.");

    /// Shutdown status.
    pub const fn shst(&self) -> Shst {
        match self.shst_raw() {
            0 => Shst::Normal,
            1 => Shst::Occurring,
            2 => Shst::Complete,
            _ => Shst::Reserved,
        }
    }
    /// Sets the shutdown status.
    #[must_use]
    pub const fn with_shst(self, s: Shst) -> Self {
        self.with_shst_raw(match s {
            Shst::Normal => 0,
            Shst::Occurring => 1,
            Shst::Complete => 2,
            Shst::Reserved => 3,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_data() -> ConnectData {
        ConnectData {
            hostid: [0x11; 16],
            cntlid: ConnectData::CNTLID_DYNAMIC,
            subnqn: Nqn::new("nqn.2024-01.io.pollux:sub1").unwrap(),
            hostnqn: Nqn::new("nqn.2014-08.org.nvmexpress:uuid:1234").unwrap(),
        }
    }

    #[test]
    fn connect_round_trip_and_offsets() {
        let c = ConnectCmd {
            cid: 9,
            recfmt: 0,
            qid: 3,
            sqsize: 127,
            cattr: 0,
            kato: 0,
            dptr: Sgl::in_capsule(0, 1024),
        };
        let s = c.to_sqe();
        let b = s.as_bytes();
        assert_eq!(b[0], 0x7F);
        assert_eq!(b[4], 0x01);
        assert_eq!(b[1] >> 6, 1, "fabrics commands use SGLs");
        assert_eq!(r16(b, 42), 3);
        assert_eq!(r16(b, 44), 127);
        assert_eq!(ConnectCmd::parse(&s), Ok(c));
        assert_eq!(FabricsCmd::parse(&s), Ok(FabricsCmd::Connect(c)));

        let d = sample_data();
        let raw = d.to_bytes();
        assert_eq!(&raw[256..282], b"nqn.2024-01.io.pollux:sub1");
        assert_eq!(r16(&raw, 16), 0xFFFF);
        let p = ConnectData::parse(&raw).unwrap();
        assert_eq!(p, d);
        assert_eq!(p.subnqn.as_str(), Ok("nqn.2024-01.io.pollux:sub1"));
        assert!(ConnectData::parse(&raw[..1023]).is_err());
    }

    #[test]
    fn connect_error_dword() {
        // Linux: IPO_IATTR_CONNECT_DATA(cntlid) == (1 << 16) | 16.
        assert_eq!(
            connect_invalid_param_dw0(ConnectData::CNTLID_OFFSET, true),
            0x1_0010
        );
        assert_eq!(connect_invalid_param_dw0(ConnectCmd::QID_OFFSET, false), 42);
        assert_eq!(connect_success_dw0(7), 7);
    }

    #[test]
    fn nqn_validation() {
        assert!(Nqn::new("").is_err());
        assert!(Nqn::new(&"a".repeat(224)).is_err());
        assert!(Nqn::new(&"a".repeat(223)).is_ok());
        assert!(Nqn::new("a\0b").is_err());
        assert!(Nqn::from_raw([b'a'; 256]).as_str().is_err());
        // Empty is well-formed on the wire, never as a name to build.
        assert_eq!(Nqn::from_raw([0; 256]).as_str(), Ok(""));
        assert_eq!(Nqn::field(""), Ok(Nqn::EMPTY));
        assert!(Nqn::field("nqn.a").unwrap().eq_str("nqn.a"));
        // Terminated at the last allowed byte, and one past it.
        let mut raw = [b'a'; 256];
        raw[NQN_MAX_LEN] = 0;
        assert_eq!(Nqn::from_raw(raw).as_str().map(str::len), Ok(NQN_MAX_LEN));
        raw[NQN_MAX_LEN] = b'a';
        raw[NQN_MAX_LEN + 1] = 0;
        assert!(Nqn::from_raw(raw).as_str().is_err());
        assert!(Nqn::new(DISCOVERY_NQN).unwrap().eq_str(DISCOVERY_NQN));
    }

    #[test]
    fn property_round_trip() {
        let g = PropertyGet {
            cid: 1,
            size: PropertySize::Eight,
            offset: property::CAP,
        };
        assert_eq!(PropertyGet::parse(&g.to_sqe()), Ok(g));
        let s = PropertySet {
            cid: 2,
            size: PropertySize::Four,
            offset: property::CC,
            value: 0x46_0001,
        };
        assert_eq!(
            FabricsCmd::parse(&s.to_sqe()),
            Ok(FabricsCmd::PropertySet(s))
        );
        assert_eq!(property::size(property::CAP), Some(8));
        assert_eq!(property::size(property::CSTS), Some(4));
        assert_eq!(property::size(0x24), None);
        let mut bad = g.to_sqe();
        bad.as_bytes_mut()[40] = 2;
        assert!(PropertyGet::parse(&bad).is_err());
        assert_eq!(
            PropertyGet::parse(&s.to_sqe()),
            Err(ParseError::FabricsType(0))
        );
        assert_eq!(
            PropertyGet::parse(&Sqe::new(6, 0)),
            Err(ParseError::Opcode(6))
        );
        for cmd in [
            FabricsCmd::Disconnect { cid: 4 },
            FabricsCmd::Other { cid: 5, fctype: 5 },
        ] {
            assert_eq!(FabricsCmd::parse(&cmd.to_sqe()), Ok(cmd));
        }
    }

    #[test]
    fn register_fields() {
        // Linux enables with EN | CSS NVM | MPS 0 | AMS RR | SHN none |
        // IOSQES 6 | IOCQES 4 == 0x00460001.
        let cc = Cc::default().with_en(1).with_iosqes(6).with_iocqes(4);
        assert_eq!(cc.0, 0x0046_0001);
        assert!(cc.enabled());
        assert_eq!(cc.with_shn(Shn::Normal).0, 0x0046_4001);
        assert_eq!(Cc(0x0046_4001).shn(), Shn::Normal);
        assert_eq!(Cc(0xC000).shn(), Shn::Reserved);
        let csts = Csts::default().with_rdy(1).with_shst(Shst::Complete);
        assert_eq!(csts.0, 0x9);
        assert_eq!(csts.shst(), Shst::Complete);
        assert_eq!(Csts(2).cfs(), 1);
        let cap = Cap::default()
            .with_mqes(127)
            .with_cqr(1)
            .with_to(15)
            .with_css(CAP_CSS_NVM);
        assert_eq!(cap.0, 0x0000_0020_0F01_007F);
        assert_eq!(cap.mqes(), 127);
        assert_eq!(cap.css(), 1);
        assert_eq!(version(1, 3, 0), 0x0001_0300);
        assert_eq!(
            FabricsType::Connect.direction(),
            DataDirection::HostToController
        );
        assert_eq!(FabricsType::PropertyGet.direction(), DataDirection::None);
    }
}
