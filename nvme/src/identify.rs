//! Identify (admin opcode 06h): the command's fields and the 4096-byte data
//! structures, built into and parsed from `[u8; 4096]`.
//!
//! Offsets follow NVMe Base 2.0 (figures 275, 280, 281) and match Linux
//! `struct nvme_id_ctrl` / `struct nvme_id_ns`. Note the Fabrics-only tail
//! of Identify Controller: IOCCSZ 1792, IORCSZ 1796, ICDOFF 1800 (2 bytes),
//! FCATT 1802, MSDBD 1803, OFCS 1804.

use crate::bytes::{arr, put_padded, r128, r16, r32, r64, w128, w16, w32, w64};
use crate::error::{need, ParseError};
use crate::fabrics::Nqn;
use crate::opcode::AdminOpcode;
use crate::sqe::Sqe;

/// Every Identify data structure is 4096 bytes.
pub const IDENTIFY_LEN: usize = 4096;

u8_enum! {
    /// Controller or Namespace Structure (CDW10 bits 7:0).
    pub enum Cns {
        /// Identify Namespace (NVM command set).
        Namespace = 0x00,
        /// Identify Controller.
        Controller = 0x01,
        /// Active Namespace ID list.
        ActiveNamespaceList = 0x02,
        /// Namespace Identification Descriptor list.
        NamespaceDescriptorList = 0x03,
        /// NVM Set list.
        NvmSetList = 0x04,
        /// I/O Command Set specific Identify Namespace.
        CsNamespace = 0x05,
        /// I/O Command Set specific Identify Controller.
        CsController = 0x06,
        /// I/O Command Set specific Active Namespace ID list.
        CsActiveNamespaceList = 0x07,
        /// I/O Command Set Independent Identify Namespace.
        CsIndependentNamespace = 0x08,
        /// Allocated Namespace ID list.
        AllocatedNamespaceList = 0x10,
        /// Identify Namespace for an allocated NSID.
        AllocatedNamespace = 0x11,
        /// Controller list attached to an NSID.
        AttachedControllerList = 0x12,
        /// Controller list in the subsystem.
        ControllerList = 0x13,
        /// Primary Controller Capabilities.
        PrimaryControllerCaps = 0x14,
        /// Secondary Controller list.
        SecondaryControllerList = 0x15,
        /// Namespace Granularity list.
        NamespaceGranularityList = 0x16,
        /// UUID list.
        UuidList = 0x17,
        /// Domain list.
        DomainList = 0x18,
        /// Endurance Group list.
        EnduranceGroupList = 0x19,
        /// I/O Command Set specific Allocated Namespace ID list.
        CsAllocatedNamespaceList = 0x1A,
        /// I/O Command Set specific Identify Namespace (allocated).
        CsAllocatedNamespace = 0x1B,
        /// I/O Command Set data structure (command set combinations).
        IoCommandSet = 0x1C,
    }
}

u8_enum! {
    /// Command Set Identifier (CDW11 bits 31:24).
    pub enum Csi {
        /// NVM command set.
        Nvm = 0x00,
        /// Key Value command set.
        KeyValue = 0x01,
        /// Zoned Namespace command set.
        Zoned = 0x02,
    }
}

/// Identify command fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct IdentifyCmd {
    /// Namespace identifier.
    pub nsid: u32,
    /// CNS, raw so unknown values reach the caller (which answers Invalid
    /// Field).
    pub cns: u8,
    /// Controller identifier (CDW10 bits 31:16).
    pub cntid: u16,
    /// CNS specific identifier (CDW11 bits 15:0).
    pub cnssid: u16,
    /// Command set identifier (CDW11 bits 31:24).
    pub csi: u8,
    /// UUID index (CDW14 bits 6:0).
    pub uuid_index: u8,
}

impl IdentifyCmd {
    /// Decodes an Identify SQE.
    pub fn parse(sqe: &Sqe) -> Result<Self, ParseError> {
        if sqe.opcode() != AdminOpcode::Identify.as_u8() {
            return Err(ParseError::Opcode(sqe.opcode()));
        }
        Ok(IdentifyCmd {
            nsid: sqe.nsid(),
            cns: sqe.cdw10() as u8,
            cntid: (sqe.cdw10() >> 16) as u16,
            cnssid: sqe.cdw11() as u16,
            csi: (sqe.cdw11() >> 24) as u8,
            uuid_index: (sqe.cdw14() & 0x7f) as u8,
        })
    }
    /// Typed CNS, if known.
    pub fn cns(&self) -> Option<Cns> {
        Cns::from_u8(self.cns)
    }
    /// Builds the SQE (DPTR left for the transport to fill).
    pub fn to_sqe(&self, cid: u16) -> Sqe {
        let mut s = Sqe::new(AdminOpcode::Identify.as_u8(), cid);
        s.set_nsid(self.nsid);
        s.set_cdw10(u32::from(self.cns) | (u32::from(self.cntid) << 16));
        s.set_cdw11(u32::from(self.cnssid) | (u32::from(self.csi) << 24));
        s.set_cdw14(u32::from(self.uuid_index & 0x7f));
        s
    }
}

/// Space-padded ASCII field (SN, MN, FR), truncated to `N` bytes.
pub fn ascii_field<const N: usize>(s: &str) -> [u8; N] {
    let mut a = [b' '; N];
    put_padded(&mut a, s.as_bytes(), b' ');
    a
}

/// Identify Controller byte offsets (NVMe Base 2.0 figure 275).
pub mod ctrl_offset {
    #![allow(missing_docs)]
    pub const VID: usize = 0;
    pub const SSVID: usize = 2;
    pub const SN: usize = 4;
    pub const MN: usize = 24;
    pub const FR: usize = 64;
    pub const RAB: usize = 72;
    pub const IEEE: usize = 73;
    pub const CMIC: usize = 76;
    pub const MDTS: usize = 77;
    pub const CNTLID: usize = 78;
    pub const VER: usize = 80;
    pub const RTD3R: usize = 84;
    pub const RTD3E: usize = 88;
    pub const OAES: usize = 92;
    pub const CTRATT: usize = 96;
    pub const CNTRLTYPE: usize = 111;
    pub const FGUID: usize = 112;
    pub const CRDT1: usize = 128;
    pub const OACS: usize = 256;
    pub const ACL: usize = 258;
    pub const AERL: usize = 259;
    pub const FRMW: usize = 260;
    pub const LPA: usize = 261;
    pub const ELPE: usize = 262;
    pub const NPSS: usize = 263;
    pub const AVSCC: usize = 264;
    pub const APSTA: usize = 265;
    pub const WCTEMP: usize = 266;
    pub const CCTEMP: usize = 268;
    pub const KAS: usize = 320;
    pub const ANATT: usize = 342;
    pub const ANACAP: usize = 343;
    pub const ANAGRPMAX: usize = 344;
    pub const NANAGRPID: usize = 348;
    pub const SQES: usize = 512;
    pub const CQES: usize = 513;
    pub const MAXCMD: usize = 514;
    pub const NN: usize = 516;
    pub const ONCS: usize = 520;
    pub const FUSES: usize = 522;
    pub const FNA: usize = 524;
    pub const VWC: usize = 525;
    pub const AWUN: usize = 526;
    pub const AWUPF: usize = 528;
    pub const ICSVSCC: usize = 530;
    pub const NWPC: usize = 531;
    pub const ACWU: usize = 532;
    pub const OCFS: usize = 534;
    pub const SGLS: usize = 536;
    pub const MNAN: usize = 540;
    pub const SUBNQN: usize = 768;
    pub const IOCCSZ: usize = 1792;
    pub const IORCSZ: usize = 1796;
    pub const ICDOFF: usize = 1800;
    pub const FCATT: usize = 1802;
    pub const MSDBD: usize = 1803;
    pub const OFCS: usize = 1804;
    pub const DCTYPE: usize = 1806;
    pub const PSD0: usize = 2048;
}

/// CMIC bits.
pub mod cmic {
    /// The subsystem may have more than one port.
    pub const MULTI_PORT: u8 = 1 << 0;
    /// The subsystem may have more than one controller (Linux multipath
    /// needs this to share a namespace head across controllers).
    pub const MULTI_CTRL: u8 = 1 << 1;
    /// ANA reporting supported.
    pub const ANA: u8 = 1 << 3;
}

/// OAES bits (Optional Asynchronous Events Supported).
pub mod oaes {
    /// Namespace Attribute Notices (AEN for the Changed Namespace list).
    pub const NS_ATTR: u32 = 1 << 8;
    /// Firmware Activation Notices.
    pub const FW_ACTIVATION: u32 = 1 << 9;
    /// ANA Change Notices.
    pub const ANA_CHANGE: u32 = 1 << 11;
    /// Discovery Log Page Change Notices (discovery controllers).
    pub const DISCOVERY_CHANGE: u32 = 1 << 31;
}

/// CTRATT bits.
pub mod ctratt {
    /// 128-bit Host Identifier: required for NVMe over Fabrics, whose
    /// Connect always carries a 128-bit HOSTID.
    pub const HOST_ID_128: u32 = 1 << 0;
    /// Non-Operational Power State Permissive Mode.
    pub const NOPSPM: u32 = 1 << 1;
    /// Traffic Based Keep Alive: command traffic counts as keep alive.
    pub const TBKAS: u32 = 1 << 6;
    /// UUID list supported.
    pub const UUID_LIST: u32 = 1 << 9;
}

/// CNTRLTYPE values.
pub mod cntrltype {
    /// I/O controller.
    pub const IO: u8 = 1;
    /// Discovery controller.
    pub const DISCOVERY: u8 = 2;
    /// Administrative controller.
    pub const ADMIN: u8 = 3;
}

/// LPA bits (Log Page Attributes).
pub mod lpa {
    /// SMART / Health log per namespace.
    pub const SMART_PER_NS: u8 = 1 << 0;
    /// Commands Supported and Effects log supported.
    pub const CMD_EFFECTS: u8 = 1 << 1;
    /// Extended Data for Get Log Page (NUMDU, LPOL/LPOU): Linux needs it to
    /// read discovery logs longer than 4 KiB.
    pub const EXTENDED_DATA: u8 = 1 << 2;
    /// Telemetry host-initiated log.
    pub const TELEMETRY: u8 = 1 << 3;
}

/// Identify Controller ANACAP bits: the ANA states a controller reports
/// and how its group IDs behave.
pub mod anacap {
    /// Reports ANA Optimized.
    pub const OPTIMIZED: u8 = 1 << 0;
    /// Reports ANA Non-Optimized.
    pub const NON_OPTIMIZED: u8 = 1 << 1;
    /// Reports ANA Inaccessible.
    pub const INACCESSIBLE: u8 = 1 << 2;
    /// Reports ANA Persistent Loss.
    pub const PERSISTENT_LOSS: u8 = 1 << 3;
    /// Reports ANA Change.
    pub const CHANGE: u8 = 1 << 4;
    /// A namespace's ANAGRPID does not change while it is attached.
    pub const NO_CHANGE_ANAGRPID: u8 = 1 << 6;
    /// A non-zero ANAGRPID may be given when a namespace is created.
    pub const NONZERO_ANAGRPID: u8 = 1 << 7;
}

/// Identify Namespace RESCAP bits: the reservation types a namespace
/// supports.
pub mod rescap {
    /// Persist Through Power Loss.
    pub const PTPL: u8 = 1 << 0;
    /// Write Exclusive.
    pub const WRITE_EXCLUSIVE: u8 = 1 << 1;
    /// Exclusive Access.
    pub const EXCLUSIVE_ACCESS: u8 = 1 << 2;
    /// Write Exclusive, Registrants Only.
    pub const WRITE_EXCLUSIVE_REG_ONLY: u8 = 1 << 3;
    /// Exclusive Access, Registrants Only.
    pub const EXCLUSIVE_ACCESS_REG_ONLY: u8 = 1 << 4;
    /// Write Exclusive, All Registrants.
    pub const WRITE_EXCLUSIVE_ALL_REGS: u8 = 1 << 5;
    /// Exclusive Access, All Registrants.
    pub const EXCLUSIVE_ACCESS_ALL_REGS: u8 = 1 << 6;
    /// Ignore Existing Key behaves as NVMe 1.3 and later define it.
    pub const IGNORE_EXISTING_KEY: u8 = 1 << 7;
}

/// ONCS bits (Optional NVM Command Support).
pub mod oncs {
    /// Compare.
    pub const COMPARE: u16 = 1 << 0;
    /// Write Uncorrectable.
    pub const WRITE_UNCORRECTABLE: u16 = 1 << 1;
    /// Dataset Management.
    pub const DSM: u16 = 1 << 2;
    /// Write Zeroes.
    pub const WRITE_ZEROES: u16 = 1 << 3;
    /// Save field in Set Features / Select in Get Features.
    pub const SAVE_SELECT: u16 = 1 << 4;
    /// Reservations.
    pub const RESERVATIONS: u16 = 1 << 5;
    /// Timestamp feature.
    pub const TIMESTAMP: u16 = 1 << 6;
    /// Verify.
    pub const VERIFY: u16 = 1 << 7;
    /// Copy.
    pub const COPY: u16 = 1 << 8;
}

/// FUSES bits.
pub mod fuses {
    /// Compare and Write fused operation.
    pub const COMPARE_AND_WRITE: u16 = 1 << 0;
}

/// VWC bits.
pub mod vwc {
    /// A volatile write cache is present (hosts then send Flush).
    pub const PRESENT: u8 = 1 << 0;
    /// Flush with NSID FFFFFFFFh supported (bits 2:1 = 11b).
    pub const FLUSH_BROADCAST: u8 = 0b11 << 1;
    /// Flush with NSID FFFFFFFFh not supported (bits 2:1 = 10b).
    pub const NO_FLUSH_BROADCAST: u8 = 0b10 << 1;
}

/// SGLS bits.
pub mod sgls {
    /// SGLs supported, no alignment requirement (bits 1:0 = 01b).
    pub const SUPPORTED: u32 = 0b01;
    /// Keyed SGL Data Block (RDMA).
    pub const KEYED: u32 = 1 << 2;
    /// SGL Bit Bucket.
    pub const BIT_BUCKET: u32 = 1 << 16;
    /// Address field may be an offset (needed for in-capsule data; Linux
    /// nvmet sets it when inline data is configured).
    pub const OFFSET: u32 = 1 << 20;
    /// Transport SGL Data Block.
    pub const TRANSPORT_DATA_BLOCK: u32 = 1 << 21;
}

/// Identify Controller (CNS 01h).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IdentifyController {
    /// PCI vendor ID.
    pub vid: u16,
    /// PCI subsystem vendor ID.
    pub ssvid: u16,
    /// Serial number, space padded ASCII.
    pub sn: [u8; 20],
    /// Model number, space padded ASCII.
    pub mn: [u8; 40],
    /// Firmware revision, space padded ASCII.
    pub fr: [u8; 8],
    /// Recommended arbitration burst.
    pub rab: u8,
    /// IEEE OUI, least significant byte first.
    pub ieee: [u8; 3],
    /// Multi-path I/O and namespace sharing capabilities ([`cmic`]).
    pub cmic: u8,
    /// Maximum data transfer size, 2^n minimum pages (0 = no limit).
    pub mdts: u8,
    /// Controller ID.
    pub cntlid: u16,
    /// Version, as in VS.
    pub ver: u32,
    /// RTD3 resume latency (µs).
    pub rtd3r: u32,
    /// RTD3 entry latency (µs).
    pub rtd3e: u32,
    /// Optional asynchronous events supported ([`oaes`]).
    pub oaes: u32,
    /// Controller attributes ([`ctratt`]).
    pub ctratt: u32,
    /// Controller type ([`cntrltype`]); must be non-zero from NVMe 1.4.
    pub cntrltype: u8,
    /// FRU globally unique identifier.
    pub fguid: [u8; 16],
    /// Command retry delay times (100 ms units).
    pub crdt: [u16; 3],
    /// Optional admin command support.
    pub oacs: u16,
    /// Abort command limit, 0-based.
    pub acl: u8,
    /// Asynchronous event request limit, 0-based.
    pub aerl: u8,
    /// Firmware updates.
    pub frmw: u8,
    /// Log page attributes ([`lpa`]).
    pub lpa: u8,
    /// Error log page entries, 0-based.
    pub elpe: u8,
    /// Number of power states supported, 0-based.
    pub npss: u8,
    /// Admin vendor specific command configuration.
    pub avscc: u8,
    /// Autonomous power state transition attributes.
    pub apsta: u8,
    /// Warning composite temperature threshold (K).
    pub wctemp: u16,
    /// Critical composite temperature threshold (K).
    pub cctemp: u16,
    /// Keep alive support granularity (100 ms units; 0 = unsupported,
    /// which makes fabrics hosts refuse a non-zero KATO).
    pub kas: u16,
    /// ANA transition time in seconds.
    pub anatt: u8,
    /// ANA capabilities ([`anacap`]).
    pub anacap: u8,
    /// Highest ANA group ID.
    pub anagrpmax: u32,
    /// Number of ANA group IDs supported.
    pub nanagrpid: u32,
    /// SQ entry size: max log2 in bits 7:4, required log2 in 3:0 (66h).
    pub sqes: u8,
    /// CQ entry size: max log2 in bits 7:4, required log2 in 3:0 (44h).
    pub cqes: u8,
    /// Maximum outstanding commands per queue (fabrics).
    pub maxcmd: u16,
    /// Number of namespaces (highest valid NSID).
    pub nn: u32,
    /// Optional NVM command support ([`oncs`]).
    pub oncs: u16,
    /// Fused operation support ([`fuses`]).
    pub fuses: u16,
    /// Format NVM attributes.
    pub fna: u8,
    /// Volatile write cache ([`vwc`]).
    pub vwc: u8,
    /// Atomic write unit normal, 0-based blocks.
    pub awun: u16,
    /// Atomic write unit power fail, 0-based blocks.
    pub awupf: u16,
    /// I/O command set vendor specific command configuration.
    pub icsvscc: u8,
    /// Namespace write protection capabilities.
    pub nwpc: u8,
    /// Atomic compare and write unit, 0-based blocks.
    pub acwu: u16,
    /// Optional copy formats supported.
    pub ocfs: u16,
    /// SGL support ([`sgls`]).
    pub sgls: u32,
    /// Maximum number of allowed namespaces.
    pub mnan: u32,
    /// Subsystem NQN.
    pub subnqn: Nqn,
    /// I/O queue command capsule size in 16-byte units: (64 + in-capsule
    /// data bytes) / 16.
    pub ioccsz: u32,
    /// I/O queue response capsule size in 16-byte units (1 = bare CQE).
    pub iorcsz: u32,
    /// In-capsule data offset in 16-byte units (0: data right after SQE).
    pub icdoff: u16,
    /// Fabrics controller attributes (bit 0: dynamic model = 0).
    pub fcatt: u8,
    /// Maximum SGL data block descriptors (NVMe/TCP: 1).
    pub msdbd: u8,
    /// Optional fabric commands supported (bit 0: Disconnect).
    pub ofcs: u16,
    /// Power state descriptor 0, raw (32 bytes).
    pub psd0: [u8; 32],
}

impl Default for IdentifyController {
    fn default() -> Self {
        IdentifyController {
            vid: 0,
            ssvid: 0,
            sn: [b' '; 20],
            mn: [b' '; 40],
            fr: [b' '; 8],
            rab: 0,
            ieee: [0; 3],
            cmic: 0,
            mdts: 0,
            cntlid: 0,
            ver: 0,
            rtd3r: 0,
            rtd3e: 0,
            oaes: 0,
            ctratt: 0,
            cntrltype: 0,
            fguid: [0; 16],
            crdt: [0; 3],
            oacs: 0,
            acl: 0,
            aerl: 0,
            frmw: 0,
            lpa: 0,
            elpe: 0,
            npss: 0,
            avscc: 0,
            apsta: 0,
            wctemp: 0,
            cctemp: 0,
            kas: 0,
            anatt: 0,
            anacap: 0,
            anagrpmax: 0,
            nanagrpid: 0,
            sqes: 0,
            cqes: 0,
            maxcmd: 0,
            nn: 0,
            oncs: 0,
            fuses: 0,
            fna: 0,
            vwc: 0,
            awun: 0,
            awupf: 0,
            icsvscc: 0,
            nwpc: 0,
            acwu: 0,
            ocfs: 0,
            sgls: 0,
            mnan: 0,
            subnqn: Nqn::default(),
            ioccsz: 0,
            iorcsz: 0,
            icdoff: 0,
            fcatt: 0,
            msdbd: 0,
            ofcs: 0,
            psd0: [0; 32],
        }
    }
}

impl IdentifyController {
    /// Writes the structure, zeroing every reserved byte.
    pub fn write(&self, out: &mut [u8; IDENTIFY_LEN]) {
        use ctrl_offset as o;
        out.fill(0);
        w16(out, o::VID, self.vid);
        w16(out, o::SSVID, self.ssvid);
        out[o::SN..o::SN + 20].copy_from_slice(&self.sn);
        out[o::MN..o::MN + 40].copy_from_slice(&self.mn);
        out[o::FR..o::FR + 8].copy_from_slice(&self.fr);
        out[o::RAB] = self.rab;
        out[o::IEEE..o::IEEE + 3].copy_from_slice(&self.ieee);
        out[o::CMIC] = self.cmic;
        out[o::MDTS] = self.mdts;
        w16(out, o::CNTLID, self.cntlid);
        w32(out, o::VER, self.ver);
        w32(out, o::RTD3R, self.rtd3r);
        w32(out, o::RTD3E, self.rtd3e);
        w32(out, o::OAES, self.oaes);
        w32(out, o::CTRATT, self.ctratt);
        out[o::CNTRLTYPE] = self.cntrltype;
        out[o::FGUID..o::FGUID + 16].copy_from_slice(&self.fguid);
        for (i, c) in self.crdt.iter().enumerate() {
            w16(out, o::CRDT1 + 2 * i, *c);
        }
        w16(out, o::OACS, self.oacs);
        out[o::ACL] = self.acl;
        out[o::AERL] = self.aerl;
        out[o::FRMW] = self.frmw;
        out[o::LPA] = self.lpa;
        out[o::ELPE] = self.elpe;
        out[o::NPSS] = self.npss;
        out[o::AVSCC] = self.avscc;
        out[o::APSTA] = self.apsta;
        w16(out, o::WCTEMP, self.wctemp);
        w16(out, o::CCTEMP, self.cctemp);
        w16(out, o::KAS, self.kas);
        out[o::ANATT] = self.anatt;
        out[o::ANACAP] = self.anacap;
        w32(out, o::ANAGRPMAX, self.anagrpmax);
        w32(out, o::NANAGRPID, self.nanagrpid);
        out[o::SQES] = self.sqes;
        out[o::CQES] = self.cqes;
        w16(out, o::MAXCMD, self.maxcmd);
        w32(out, o::NN, self.nn);
        w16(out, o::ONCS, self.oncs);
        w16(out, o::FUSES, self.fuses);
        out[o::FNA] = self.fna;
        out[o::VWC] = self.vwc;
        w16(out, o::AWUN, self.awun);
        w16(out, o::AWUPF, self.awupf);
        out[o::ICSVSCC] = self.icsvscc;
        out[o::NWPC] = self.nwpc;
        w16(out, o::ACWU, self.acwu);
        w16(out, o::OCFS, self.ocfs);
        w32(out, o::SGLS, self.sgls);
        w32(out, o::MNAN, self.mnan);
        out[o::SUBNQN..o::SUBNQN + 256].copy_from_slice(self.subnqn.raw());
        w32(out, o::IOCCSZ, self.ioccsz);
        w32(out, o::IORCSZ, self.iorcsz);
        w16(out, o::ICDOFF, self.icdoff);
        out[o::FCATT] = self.fcatt;
        out[o::MSDBD] = self.msdbd;
        w16(out, o::OFCS, self.ofcs);
        out[o::PSD0..o::PSD0 + 32].copy_from_slice(&self.psd0);
    }

    /// Parses the structure (host side).
    pub fn parse(b: &[u8]) -> Result<Self, ParseError> {
        use ctrl_offset as o;
        need(IDENTIFY_LEN, b.len())?;
        Ok(IdentifyController {
            vid: r16(b, o::VID),
            ssvid: r16(b, o::SSVID),
            sn: arr(b, o::SN),
            mn: arr(b, o::MN),
            fr: arr(b, o::FR),
            rab: b[o::RAB],
            ieee: arr(b, o::IEEE),
            cmic: b[o::CMIC],
            mdts: b[o::MDTS],
            cntlid: r16(b, o::CNTLID),
            ver: r32(b, o::VER),
            rtd3r: r32(b, o::RTD3R),
            rtd3e: r32(b, o::RTD3E),
            oaes: r32(b, o::OAES),
            ctratt: r32(b, o::CTRATT),
            cntrltype: b[o::CNTRLTYPE],
            fguid: arr(b, o::FGUID),
            crdt: [r16(b, o::CRDT1), r16(b, o::CRDT1 + 2), r16(b, o::CRDT1 + 4)],
            oacs: r16(b, o::OACS),
            acl: b[o::ACL],
            aerl: b[o::AERL],
            frmw: b[o::FRMW],
            lpa: b[o::LPA],
            elpe: b[o::ELPE],
            npss: b[o::NPSS],
            avscc: b[o::AVSCC],
            apsta: b[o::APSTA],
            wctemp: r16(b, o::WCTEMP),
            cctemp: r16(b, o::CCTEMP),
            kas: r16(b, o::KAS),
            anatt: b[o::ANATT],
            anacap: b[o::ANACAP],
            anagrpmax: r32(b, o::ANAGRPMAX),
            nanagrpid: r32(b, o::NANAGRPID),
            sqes: b[o::SQES],
            cqes: b[o::CQES],
            maxcmd: r16(b, o::MAXCMD),
            nn: r32(b, o::NN),
            oncs: r16(b, o::ONCS),
            fuses: r16(b, o::FUSES),
            fna: b[o::FNA],
            vwc: b[o::VWC],
            awun: r16(b, o::AWUN),
            awupf: r16(b, o::AWUPF),
            icsvscc: b[o::ICSVSCC],
            nwpc: b[o::NWPC],
            acwu: r16(b, o::ACWU),
            ocfs: r16(b, o::OCFS),
            sgls: r32(b, o::SGLS),
            mnan: r32(b, o::MNAN),
            subnqn: Nqn::from_raw(arr(b, o::SUBNQN)),
            ioccsz: r32(b, o::IOCCSZ),
            iorcsz: r32(b, o::IORCSZ),
            icdoff: r16(b, o::ICDOFF),
            fcatt: b[o::FCATT],
            msdbd: b[o::MSDBD],
            ofcs: r16(b, o::OFCS),
            psd0: arr(b, o::PSD0),
        })
    }

    /// In-capsule data bytes the controller accepts on I/O queues, derived
    /// from IOCCSZ (saturating: a hostile value cannot overflow).
    pub fn in_capsule_data_len(&self) -> u32 {
        self.ioccsz.saturating_mul(16).saturating_sub(64)
    }
}

/// One LBA Format entry (4 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct LbaFormat {
    /// Metadata bytes per block.
    pub ms: u16,
    /// LBA data size as log2 (9 = 512 B, 12 = 4 KiB).
    pub lbads: u8,
    /// Relative performance (bits 1:0).
    pub rp: u8,
}

impl LbaFormat {
    /// A format with `1 << lbads` byte blocks and no metadata.
    pub const fn new(lbads: u8) -> Self {
        LbaFormat {
            ms: 0,
            lbads,
            rp: 0,
        }
    }
    fn to_u32(self) -> u32 {
        u32::from(self.ms) | (u32::from(self.lbads) << 16) | (u32::from(self.rp & 0x3) << 24)
    }
    fn from_u32(v: u32) -> Self {
        LbaFormat {
            ms: v as u16,
            lbads: (v >> 16) as u8,
            rp: ((v >> 24) & 0x3) as u8,
        }
    }
}

/// NSFEAT bits.
pub mod nsfeat {
    /// Thin provisioning.
    pub const THIN: u8 = 1 << 0;
    /// NAWUN/NAWUPF/NACWU are namespace specific.
    pub const NSABP: u8 = 1 << 1;
    /// Deallocated or Unwritten Logical Block error supported.
    pub const DAE: u8 = 1 << 2;
    /// NGUID/EUI64 are never reused.
    pub const UIDREUSE: u8 = 1 << 3;
    /// NPWG, NPWA, NPDG, NPDA and NOWS are valid (Linux then uses them for
    /// the io_opt/io_min queue limits).
    pub const OPTPERF: u8 = 1 << 4;
}

/// DLFEAT values.
pub mod dlfeat {
    /// Deallocated blocks read as zeroes.
    pub const READ_ZEROES: u8 = 0b001;
    /// Write Zeroes with DEAC deallocates.
    pub const WRITE_ZEROES_DEALLOCATE: u8 = 1 << 3;
}

/// Identify Namespace byte offsets (NVM Command Set 1.0 figure 97).
pub mod ns_offset {
    #![allow(missing_docs)]
    pub const NSZE: usize = 0;
    pub const NCAP: usize = 8;
    pub const NUSE: usize = 16;
    pub const NSFEAT: usize = 24;
    pub const NLBAF: usize = 25;
    pub const FLBAS: usize = 26;
    pub const MC: usize = 27;
    pub const DPC: usize = 28;
    pub const DPS: usize = 29;
    pub const NMIC: usize = 30;
    pub const RESCAP: usize = 31;
    pub const FPI: usize = 32;
    pub const DLFEAT: usize = 33;
    pub const NAWUN: usize = 34;
    pub const NAWUPF: usize = 36;
    pub const NACWU: usize = 38;
    pub const NABSN: usize = 40;
    pub const NABO: usize = 42;
    pub const NABSPF: usize = 44;
    pub const NOIOB: usize = 46;
    pub const NVMCAP: usize = 48;
    pub const NPWG: usize = 64;
    pub const NPWA: usize = 66;
    pub const NPDG: usize = 68;
    pub const NPDA: usize = 70;
    pub const NOWS: usize = 72;
    pub const MSSRL: usize = 74;
    pub const MCL: usize = 76;
    pub const MSRC: usize = 80;
    pub const ANAGRPID: usize = 92;
    pub const NSATTR: usize = 99;
    pub const NVMSETID: usize = 100;
    pub const ENDGID: usize = 102;
    pub const NGUID: usize = 104;
    pub const EUI64: usize = 120;
    pub const LBAF: usize = 128;
}

/// Maximum LBA formats in Identify Namespace (NVMe 2.0 grew it to 64).
pub const MAX_LBAF: usize = 64;

/// Identify Namespace (CNS 00h, NVM command set).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IdentifyNamespace {
    /// Namespace size in blocks.
    pub nsze: u64,
    /// Namespace capacity in blocks.
    pub ncap: u64,
    /// Namespace utilization in blocks.
    pub nuse: u64,
    /// Namespace features ([`nsfeat`]).
    pub nsfeat: u8,
    /// Number of LBA formats, 0-based.
    pub nlbaf: u8,
    /// Formatted LBA size: index bits 3:0 (+ 6:5 high bits), metadata bit 4.
    pub flbas: u8,
    /// Metadata capabilities.
    pub mc: u8,
    /// End-to-end protection capabilities.
    pub dpc: u8,
    /// End-to-end protection settings.
    pub dps: u8,
    /// Namespace multi-path I/O capabilities (bit 0: shared).
    pub nmic: u8,
    /// Reservation capabilities.
    pub rescap: u8,
    /// Format progress indicator.
    pub fpi: u8,
    /// Deallocate logical block features ([`dlfeat`]).
    pub dlfeat: u8,
    /// Atomic write unit normal.
    pub nawun: u16,
    /// Atomic write unit power fail.
    pub nawupf: u16,
    /// Atomic compare and write unit.
    pub nacwu: u16,
    /// Atomic boundary size normal.
    pub nabsn: u16,
    /// Atomic boundary offset.
    pub nabo: u16,
    /// Atomic boundary size power fail.
    pub nabspf: u16,
    /// Optimal I/O boundary.
    pub noiob: u16,
    /// NVM capacity in bytes.
    pub nvmcap: u128,
    /// Preferred write granularity, 0-based blocks.
    pub npwg: u16,
    /// Preferred write alignment, 0-based blocks.
    pub npwa: u16,
    /// Preferred deallocate granularity, 0-based blocks.
    pub npdg: u16,
    /// Preferred deallocate alignment, 0-based blocks.
    pub npda: u16,
    /// Optimal write size, 0-based blocks.
    pub nows: u16,
    /// Maximum single source range length (Copy).
    pub mssrl: u16,
    /// Maximum copy length.
    pub mcl: u32,
    /// Maximum source range count, 0-based.
    pub msrc: u8,
    /// ANA group identifier.
    pub anagrpid: u32,
    /// Namespace attributes (bit 0: write protected).
    pub nsattr: u8,
    /// NVM set identifier.
    pub nvmsetid: u16,
    /// Endurance group identifier.
    pub endgid: u16,
    /// Namespace globally unique identifier.
    pub nguid: [u8; 16],
    /// IEEE extended unique identifier.
    pub eui64: [u8; 8],
    /// LBA formats; entries past `nlbaf` are written as zero.
    pub lbaf: [LbaFormat; MAX_LBAF],
}

impl Default for IdentifyNamespace {
    fn default() -> Self {
        IdentifyNamespace {
            nsze: 0,
            ncap: 0,
            nuse: 0,
            nsfeat: 0,
            nlbaf: 0,
            flbas: 0,
            mc: 0,
            dpc: 0,
            dps: 0,
            nmic: 0,
            rescap: 0,
            fpi: 0,
            dlfeat: 0,
            nawun: 0,
            nawupf: 0,
            nacwu: 0,
            nabsn: 0,
            nabo: 0,
            nabspf: 0,
            noiob: 0,
            nvmcap: 0,
            npwg: 0,
            npwa: 0,
            npdg: 0,
            npda: 0,
            nows: 0,
            mssrl: 0,
            mcl: 0,
            msrc: 0,
            anagrpid: 0,
            nsattr: 0,
            nvmsetid: 0,
            endgid: 0,
            nguid: [0; 16],
            eui64: [0; 8],
            lbaf: [LbaFormat::default(); MAX_LBAF],
        }
    }
}

impl IdentifyNamespace {
    /// A fully provisioned namespace of `nsze` blocks of `1 << lbads`
    /// bytes, one LBA format, no metadata.
    pub fn simple(nsze: u64, lbads: u8) -> Self {
        let mut ns = IdentifyNamespace {
            nsze,
            ncap: nsze,
            nuse: nsze,
            ..Default::default()
        };
        ns.lbaf[0] = LbaFormat::new(lbads);
        ns
    }

    /// Index of the formatted LBA format (FLBAS bits 3:0 and 6:5).
    pub const fn lbaf_index(&self) -> usize {
        ((self.flbas & 0xf) | ((self.flbas >> 1) & 0x30)) as usize
    }

    /// The active LBA format, if its index is within the table.
    pub fn active_lbaf(&self) -> Option<LbaFormat> {
        self.lbaf.get(self.lbaf_index()).copied()
    }

    /// Writes the structure, zeroing reserved bytes and unused formats.
    pub fn write(&self, out: &mut [u8; IDENTIFY_LEN]) {
        use ns_offset as o;
        out.fill(0);
        w64(out, o::NSZE, self.nsze);
        w64(out, o::NCAP, self.ncap);
        w64(out, o::NUSE, self.nuse);
        out[o::NSFEAT] = self.nsfeat;
        out[o::NLBAF] = self.nlbaf;
        out[o::FLBAS] = self.flbas;
        out[o::MC] = self.mc;
        out[o::DPC] = self.dpc;
        out[o::DPS] = self.dps;
        out[o::NMIC] = self.nmic;
        out[o::RESCAP] = self.rescap;
        out[o::FPI] = self.fpi;
        out[o::DLFEAT] = self.dlfeat;
        w16(out, o::NAWUN, self.nawun);
        w16(out, o::NAWUPF, self.nawupf);
        w16(out, o::NACWU, self.nacwu);
        w16(out, o::NABSN, self.nabsn);
        w16(out, o::NABO, self.nabo);
        w16(out, o::NABSPF, self.nabspf);
        w16(out, o::NOIOB, self.noiob);
        w128(out, o::NVMCAP, self.nvmcap);
        w16(out, o::NPWG, self.npwg);
        w16(out, o::NPWA, self.npwa);
        w16(out, o::NPDG, self.npdg);
        w16(out, o::NPDA, self.npda);
        w16(out, o::NOWS, self.nows);
        w16(out, o::MSSRL, self.mssrl);
        w32(out, o::MCL, self.mcl);
        out[o::MSRC] = self.msrc;
        w32(out, o::ANAGRPID, self.anagrpid);
        out[o::NSATTR] = self.nsattr;
        w16(out, o::NVMSETID, self.nvmsetid);
        w16(out, o::ENDGID, self.endgid);
        out[o::NGUID..o::NGUID + 16].copy_from_slice(&self.nguid);
        out[o::EUI64..o::EUI64 + 8].copy_from_slice(&self.eui64);
        let n = usize::from(self.nlbaf) + 1;
        for (i, f) in self.lbaf.iter().take(n).enumerate() {
            w32(out, o::LBAF + 4 * i, f.to_u32());
        }
    }

    /// Parses the structure (host side). Formats past NLBAF are read as
    /// zero so a parse/write round trip is exact.
    pub fn parse(b: &[u8]) -> Result<Self, ParseError> {
        use ns_offset as o;
        need(IDENTIFY_LEN, b.len())?;
        let nlbaf = b[o::NLBAF];
        let mut lbaf = [LbaFormat::default(); MAX_LBAF];
        for (i, f) in lbaf.iter_mut().take(usize::from(nlbaf) + 1).enumerate() {
            *f = LbaFormat::from_u32(r32(b, o::LBAF + 4 * i));
        }
        Ok(IdentifyNamespace {
            nsze: r64(b, o::NSZE),
            ncap: r64(b, o::NCAP),
            nuse: r64(b, o::NUSE),
            nsfeat: b[o::NSFEAT],
            nlbaf,
            flbas: b[o::FLBAS],
            mc: b[o::MC],
            dpc: b[o::DPC],
            dps: b[o::DPS],
            nmic: b[o::NMIC],
            rescap: b[o::RESCAP],
            fpi: b[o::FPI],
            dlfeat: b[o::DLFEAT],
            nawun: r16(b, o::NAWUN),
            nawupf: r16(b, o::NAWUPF),
            nacwu: r16(b, o::NACWU),
            nabsn: r16(b, o::NABSN),
            nabo: r16(b, o::NABO),
            nabspf: r16(b, o::NABSPF),
            noiob: r16(b, o::NOIOB),
            nvmcap: r128(b, o::NVMCAP),
            npwg: r16(b, o::NPWG),
            npwa: r16(b, o::NPWA),
            npdg: r16(b, o::NPDG),
            npda: r16(b, o::NPDA),
            nows: r16(b, o::NOWS),
            mssrl: r16(b, o::MSSRL),
            mcl: r32(b, o::MCL),
            msrc: b[o::MSRC],
            anagrpid: r32(b, o::ANAGRPID),
            nsattr: b[o::NSATTR],
            nvmsetid: r16(b, o::NVMSETID),
            endgid: r16(b, o::ENDGID),
            nguid: arr(b, o::NGUID),
            eui64: arr(b, o::EUI64),
            lbaf,
        })
    }
}

/// Maximum NSIDs in an Active Namespace ID list (4096 / 4).
pub const NS_LIST_MAX: usize = 1024;

/// Writes an Active Namespace ID list (CNS 02h): the NSIDs in `nsids`
/// greater than `after` (the command's NSID), ascending, at most 1024, rest
/// zero. `nsids` need not be sorted. Returns how many were written.
pub fn write_active_ns_list(nsids: &[u32], after: u32, out: &mut [u8; IDENTIFY_LEN]) -> usize {
    out.fill(0);
    // Selection by repeated minimum keeps this allocation-free for any
    // input order; lists are small (NN is at most a few thousand).
    let mut last = after;
    let mut n = 0;
    while n < NS_LIST_MAX {
        let next = nsids.iter().copied().filter(|&id| id > last).min();
        match next {
            Some(id) => {
                w32(out, 4 * n, id);
                last = id;
                n += 1;
            }
            None => break,
        }
    }
    n
}

/// Iterates over a namespace list (CNS 02h, or the Changed Namespace List
/// log), stopping at the first zero entry.
pub fn parse_ns_list(b: &[u8]) -> impl Iterator<Item = u32> + '_ {
    b.chunks_exact(4)
        .take(NS_LIST_MAX)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .take_while(|&id| id != 0)
}

/// Namespace Identification Descriptor (CNS 03h list entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NsIdDescriptor {
    /// NIDT 1: IEEE EUI-64.
    Eui64([u8; 8]),
    /// NIDT 2: NGUID.
    Nguid([u8; 16]),
    /// NIDT 3: UUID.
    Uuid([u8; 16]),
    /// NIDT 4: Command Set Identifier.
    Csi(u8),
}

impl NsIdDescriptor {
    /// NIDT value.
    pub const fn nidt(&self) -> u8 {
        match self {
            NsIdDescriptor::Eui64(_) => 1,
            NsIdDescriptor::Nguid(_) => 2,
            NsIdDescriptor::Uuid(_) => 3,
            NsIdDescriptor::Csi(_) => 4,
        }
    }
    /// NIDL value (identifier length).
    pub const fn nidl(&self) -> usize {
        match self {
            NsIdDescriptor::Eui64(_) => 8,
            NsIdDescriptor::Nguid(_) | NsIdDescriptor::Uuid(_) => 16,
            NsIdDescriptor::Csi(_) => 1,
        }
    }
}

/// Writes a Namespace Identification Descriptor list (CNS 03h).
/// Returns bytes used; errors if the descriptors do not fit.
pub fn write_ns_desc_list(
    descs: &[NsIdDescriptor],
    out: &mut [u8; IDENTIFY_LEN],
) -> Result<usize, ParseError> {
    out.fill(0);
    let mut off = 0;
    for d in descs {
        let len = 4 + d.nidl();
        if off + len > IDENTIFY_LEN {
            return Err(ParseError::TooMany {
                count: descs.len(),
                max: IDENTIFY_LEN,
            });
        }
        out[off] = d.nidt();
        out[off + 1] = d.nidl() as u8;
        let id = &mut out[off + 4..off + len];
        match d {
            NsIdDescriptor::Eui64(v) => id.copy_from_slice(v),
            NsIdDescriptor::Nguid(v) | NsIdDescriptor::Uuid(v) => id.copy_from_slice(v),
            NsIdDescriptor::Csi(v) => id[0] = *v,
        }
        off += len;
    }
    Ok(off)
}

/// Iterator over a Namespace Identification Descriptor list; stops at the
/// first NIDT 0 or at the end, yields an error (once) for an unknown type
/// or a length that does not match its type.
pub struct NsDescIter<'a> {
    b: &'a [u8],
    off: usize,
    done: bool,
}

/// Parses a Namespace Identification Descriptor list (host side).
pub fn parse_ns_desc_list(b: &[u8]) -> NsDescIter<'_> {
    NsDescIter {
        b,
        off: 0,
        done: false,
    }
}

impl Iterator for NsDescIter<'_> {
    type Item = Result<NsIdDescriptor, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let hdr = self.b.get(self.off..self.off + 4)?;
        let (nidt, nidl) = (hdr[0], usize::from(hdr[1]));
        if nidt == 0 {
            self.done = true;
            return None;
        }
        let start = self.off + 4;
        let bad = ParseError::Field { offset: self.off };
        let Some(id) = self.b.get(start..start + nidl) else {
            self.done = true;
            return Some(Err(bad));
        };
        let d = match (nidt, nidl) {
            (1, 8) => NsIdDescriptor::Eui64(arr(id, 0)),
            (2, 16) => NsIdDescriptor::Nguid(arr(id, 0)),
            (3, 16) => NsIdDescriptor::Uuid(arr(id, 0)),
            (4, 1) => NsIdDescriptor::Csi(id[0]),
            _ => {
                self.done = true;
                return Some(Err(bad));
            }
        };
        self.off = start + nidl;
        Some(Ok(d))
    }
}

/// I/O Command Set specific Identify Controller for the NVM command set
/// (CNS 06h, CSI 00h).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct NvmIdentifyController {
    /// Verify size limit (2^n minimum pages, 0 = none).
    pub vsl: u8,
    /// Write Zeroes size limit (2^n minimum pages, 0 = none).
    pub wzsl: u8,
    /// Write Uncorrectable size limit.
    pub wusl: u8,
    /// Dataset Management ranges limit (0 = none beyond 256).
    pub dmrl: u8,
    /// Dataset Management range size limit in blocks.
    pub dmrsl: u32,
    /// Dataset Management size limit in blocks.
    pub dmsl: u64,
}

impl NvmIdentifyController {
    /// Writes the structure.
    pub fn write(&self, out: &mut [u8; IDENTIFY_LEN]) {
        out.fill(0);
        out[0] = self.vsl;
        out[1] = self.wzsl;
        out[2] = self.wusl;
        out[3] = self.dmrl;
        w32(out, 4, self.dmrsl);
        w64(out, 8, self.dmsl);
    }
    /// Parses the structure.
    pub fn parse(b: &[u8]) -> Result<Self, ParseError> {
        need(IDENTIFY_LEN, b.len())?;
        Ok(NvmIdentifyController {
            vsl: b[0],
            wzsl: b[1],
            wusl: b[2],
            dmrl: b[3],
            dmrsl: r32(b, 4),
            dmsl: r64(b, 8),
        })
    }
}

/// I/O Command Set specific Identify Namespace for the NVM command set
/// (CNS 05h, CSI 00h). Extended LBA formats are written as zero: 16-bit
/// guard protection, no storage tag, which is what a namespace without
/// end-to-end protection reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct NvmIdentifyNamespace {
    /// Logical block storage tag mask.
    pub lbstm: u64,
    /// Protection information capabilities.
    pub pic: u8,
}

impl NvmIdentifyNamespace {
    /// Writes the structure.
    pub fn write(&self, out: &mut [u8; IDENTIFY_LEN]) {
        out.fill(0);
        w64(out, 0, self.lbstm);
        out[8] = self.pic;
    }
    /// Parses the structure.
    pub fn parse(b: &[u8]) -> Result<Self, ParseError> {
        need(IDENTIFY_LEN, b.len())?;
        Ok(NvmIdentifyNamespace {
            lbstm: r64(b, 0),
            pic: b[8],
        })
    }
}

/// Command set vector bit: NVM.
pub const IOCS_VECTOR_NVM: u64 = 1 << 0;
/// Command set vector bit: Key Value.
pub const IOCS_VECTOR_KV: u64 = 1 << 1;
/// Command set vector bit: Zoned Namespace.
pub const IOCS_VECTOR_ZNS: u64 = 1 << 2;
/// Command set combinations in the CNS 1Ch structure.
pub const IOCS_COMBINATIONS_MAX: usize = 512;

/// Writes the I/O Command Set data structure (CNS 1Ch): one 64-bit vector
/// per supported combination.
pub fn write_iocs_combinations(
    vectors: &[u64],
    out: &mut [u8; IDENTIFY_LEN],
) -> Result<(), ParseError> {
    if vectors.len() > IOCS_COMBINATIONS_MAX {
        return Err(ParseError::TooMany {
            count: vectors.len(),
            max: IOCS_COMBINATIONS_MAX,
        });
    }
    out.fill(0);
    for (i, v) in vectors.iter().enumerate() {
        w64(out, 8 * i, *v);
    }
    Ok(())
}

/// Parses the CNS 1Ch structure: the vector at `index`.
pub fn iocs_combination(b: &[u8], index: usize) -> Option<u64> {
    let off = index.checked_mul(8)?;
    let s = b.get(off..off + 8)?;
    Some(r64(s, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_ctrl() -> IdentifyController {
        IdentifyController {
            vid: 0x1b36,
            ssvid: 0x1af4,
            sn: ascii_field("SN0123"),
            mn: ascii_field("Pollux Controller"),
            fr: ascii_field("0.1"),
            rab: 6,
            ieee: [0x11, 0x22, 0x33],
            cmic: cmic::MULTI_CTRL,
            mdts: 5,
            cntlid: 0x0102,
            ver: crate::fabrics::NVME_VERSION_2_0,
            rtd3r: 0xA1A2_A3A4,
            rtd3e: 0xB1B2_B3B4,
            oaes: oaes::NS_ATTR,
            ctratt: ctratt::HOST_ID_128,
            cntrltype: cntrltype::IO,
            fguid: [0xF0; 16],
            crdt: [1, 2, 3],
            oacs: 0x0204,
            acl: 3,
            aerl: 4,
            frmw: 0x3,
            lpa: lpa::CMD_EFFECTS | lpa::EXTENDED_DATA,
            elpe: 63,
            npss: 0,
            avscc: 1,
            apsta: 0,
            wctemp: 343,
            cctemp: 373,
            kas: 100,
            anatt: 10,
            anacap: anacap::OPTIMIZED | anacap::INACCESSIBLE,
            anagrpmax: 1000,
            nanagrpid: 1000,
            sqes: 0x66,
            cqes: 0x44,
            maxcmd: 128,
            nn: 32,
            oncs: oncs::WRITE_ZEROES | oncs::DSM,
            fuses: 0,
            fna: 0,
            vwc: vwc::PRESENT | vwc::FLUSH_BROADCAST,
            awun: 7,
            awupf: 8,
            icsvscc: 0,
            nwpc: 0,
            acwu: 9,
            ocfs: 0,
            sgls: sgls::SUPPORTED | sgls::OFFSET,
            mnan: 0,
            subnqn: Nqn::new("nqn.2024-01.io.pollux:sub").unwrap(),
            ioccsz: (64 + 8192) / 16,
            iorcsz: 1,
            icdoff: 0x0A0B,
            fcatt: 0,
            msdbd: 1,
            ofcs: 1,
            psd0: [0x5A; 32],
        }
    }

    #[test]
    fn ctrl_offsets_match_spec() {
        let c = sample_ctrl();
        let mut b = [0u8; IDENTIFY_LEN];
        c.write(&mut b);
        // Literal offsets from NVMe Base 2.0 figure 275 / Linux nvme_id_ctrl,
        // independent of the ctrl_offset constants.
        assert_eq!(&b[0..2], &[0x36, 0x1b]);
        assert_eq!(&b[4..10], b"SN0123");
        assert_eq!(b[23], b' ');
        assert_eq!(&b[24..41], b"Pollux Controller");
        assert_eq!(&b[64..67], b"0.1");
        assert_eq!(b[72], 6);
        assert_eq!(&b[73..76], &[0x11, 0x22, 0x33]);
        assert_eq!(b[76], 2);
        assert_eq!(b[77], 5);
        assert_eq!(&b[78..80], &[0x02, 0x01]);
        assert_eq!(&b[80..84], &[0, 0, 2, 0]);
        assert_eq!(r32(&b, 92), 1 << 8);
        assert_eq!(r32(&b, 96), 1);
        assert_eq!(b[111], 1);
        assert_eq!(r16(&b, 128), 1);
        assert_eq!(r16(&b, 132), 3);
        assert_eq!(r16(&b, 256), 0x0204);
        assert_eq!(b[258], 3);
        assert_eq!(b[259], 4);
        assert_eq!(b[260], 3);
        assert_eq!(b[261], 0b110);
        assert_eq!(b[262], 63);
        assert_eq!(b[263], 0);
        assert_eq!(r16(&b, 266), 343);
        assert_eq!(r16(&b, 268), 373);
        assert_eq!(r16(&b, 320), 100);
        assert_eq!(b[512], 0x66);
        assert_eq!(b[513], 0x44);
        assert_eq!(r16(&b, 514), 128);
        assert_eq!(r32(&b, 516), 32);
        assert_eq!(r16(&b, 520), 0b1100);
        assert_eq!(b[525], 0b111);
        assert_eq!(r16(&b, 526), 7);
        assert_eq!(r16(&b, 528), 8);
        assert_eq!(r16(&b, 532), 9);
        assert_eq!(r32(&b, 536), (1 << 20) | 1);
        assert_eq!(&b[768..793], b"nqn.2024-01.io.pollux:sub");
        assert_eq!(b[793], 0);
        assert_eq!(r32(&b, 1792), 516);
        assert_eq!(r32(&b, 1796), 1);
        assert_eq!(r16(&b, 1800), 0x0A0B);
        assert_eq!(b[1802], 0);
        assert_eq!(b[1803], 1);
        assert_eq!(r16(&b, 1804), 1);
        assert_eq!(b[2048], 0x5A);
        assert_eq!(b[2079], 0x5A);
        assert_eq!(b[2080], 0);
        assert!(b[3072..].iter().all(|&x| x == 0));
        assert_eq!(IdentifyController::parse(&b), Ok(c));
        assert_eq!(c.in_capsule_data_len(), 8192);
        assert!(IdentifyController::parse(&b[..4095]).is_err());
    }

    #[test]
    fn ns_offsets_match_spec() {
        let mut ns = IdentifyNamespace::simple(1 << 21, 12);
        ns.nsfeat = nsfeat::OPTPERF | nsfeat::THIN;
        ns.nlbaf = 1;
        ns.flbas = 1;
        ns.lbaf[1] = LbaFormat {
            ms: 8,
            lbads: 9,
            rp: 2,
        };
        ns.dlfeat = dlfeat::READ_ZEROES | dlfeat::WRITE_ZEROES_DEALLOCATE;
        ns.nvmcap = 1 << 33;
        ns.npwg = 7;
        ns.npwa = 6;
        ns.npdg = 5;
        ns.npda = 4;
        ns.nows = 3;
        ns.anagrpid = 1;
        ns.nguid = [0xAB; 16];
        ns.eui64 = [0xCD; 8];
        let mut b = [0u8; IDENTIFY_LEN];
        ns.write(&mut b);
        assert_eq!(r64(&b, 0), 1 << 21);
        assert_eq!(r64(&b, 8), 1 << 21);
        assert_eq!(r64(&b, 16), 1 << 21);
        assert_eq!(b[24], 0x11);
        assert_eq!(b[25], 1);
        assert_eq!(b[26], 1);
        assert_eq!(b[33], 0b1001);
        assert_eq!(r128(&b, 48), 1 << 33);
        assert_eq!(
            [
                r16(&b, 64),
                r16(&b, 66),
                r16(&b, 68),
                r16(&b, 70),
                r16(&b, 72)
            ],
            [7, 6, 5, 4, 3]
        );
        assert_eq!(r32(&b, 92), 1);
        assert_eq!(&b[104..120], &[0xAB; 16]);
        assert_eq!(&b[120..128], &[0xCD; 8]);
        assert_eq!(&b[128..132], &[0, 0, 12, 0]);
        assert_eq!(&b[132..136], &[8, 0, 9, 2]);
        assert_eq!(IdentifyNamespace::parse(&b), Ok(ns));
        assert_eq!(ns.active_lbaf().map(|f| f.lbads), Some(9));
        // FLBAS high bits 6:5 extend the index past 15.
        let wide = IdentifyNamespace {
            flbas: 0x60 | 0x3,
            ..ns
        };
        assert_eq!(wide.lbaf_index(), 0x33);
    }

    #[test]
    fn active_ns_list() {
        let mut b = [0u8; IDENTIFY_LEN];
        assert_eq!(write_active_ns_list(&[5, 1, 3, 9], 1, &mut b), 3);
        assert_eq!(parse_ns_list(&b).collect::<Vec<_>>(), vec![3, 5, 9]);
        let many: Vec<u32> = (1..=2000).collect();
        assert_eq!(write_active_ns_list(&many, 0, &mut b), 1024);
        assert_eq!(r32(&b, 4092), 1024);
        assert_eq!(write_active_ns_list(&[1, 2], 0xFFFF_FFFE, &mut b), 0);
        assert_eq!(parse_ns_list(&b).count(), 0);
    }

    #[test]
    fn ns_desc_list_round_trip() {
        let descs = [
            NsIdDescriptor::Eui64([1; 8]),
            NsIdDescriptor::Nguid([2; 16]),
            NsIdDescriptor::Uuid([3; 16]),
            NsIdDescriptor::Csi(0),
        ];
        let mut b = [0u8; IDENTIFY_LEN];
        let used = write_ns_desc_list(&descs, &mut b).unwrap();
        assert_eq!(used, 12 + 20 + 20 + 5);
        assert_eq!(&b[..4], &[1, 8, 0, 0]);
        assert_eq!(&b[12..14], &[2, 16]);
        let back: Vec<_> = parse_ns_desc_list(&b).collect::<Result<_, _>>().unwrap();
        assert_eq!(back, descs);
        // Wrong length for its type is an error, then the iterator stops.
        let mut bad = b;
        bad[1] = 9;
        let mut it = parse_ns_desc_list(&bad);
        assert!(matches!(it.next(), Some(Err(_))));
        assert!(it.next().is_none());
        // Truncated identifier.
        assert!(matches!(parse_ns_desc_list(&b[..10]).next(), Some(Err(_))));
        let too_many = [NsIdDescriptor::Uuid([0; 16]); 205];
        assert!(write_ns_desc_list(&too_many, &mut b).is_err());
    }

    #[test]
    fn cs_specific_round_trip() {
        let mut b = [0u8; IDENTIFY_LEN];
        let c = NvmIdentifyController {
            vsl: 1,
            wzsl: 2,
            wusl: 3,
            dmrl: 4,
            dmrsl: 5,
            dmsl: 6,
        };
        c.write(&mut b);
        assert_eq!(&b[..8], &[1, 2, 3, 4, 5, 0, 0, 0]);
        assert_eq!(NvmIdentifyController::parse(&b), Ok(c));
        let n = NvmIdentifyNamespace { lbstm: 9, pic: 1 };
        n.write(&mut b);
        assert_eq!(NvmIdentifyNamespace::parse(&b), Ok(n));
        write_iocs_combinations(
            &[IOCS_VECTOR_NVM, IOCS_VECTOR_NVM | IOCS_VECTOR_ZNS],
            &mut b,
        )
        .unwrap();
        assert_eq!(iocs_combination(&b, 0), Some(1));
        assert_eq!(iocs_combination(&b, 1), Some(5));
        assert_eq!(iocs_combination(&b, 2), Some(0));
        assert_eq!(iocs_combination(&b, 512), None);
        assert_eq!(iocs_combination(&b, usize::MAX), None);
        assert!(write_iocs_combinations(&[0; 513], &mut b).is_err());
    }

    #[test]
    fn identify_cmd_round_trip() {
        let c = IdentifyCmd {
            nsid: 1,
            cns: Cns::NamespaceDescriptorList.as_u8(),
            cntid: 0x1234,
            cnssid: 0x55,
            csi: Csi::Nvm.as_u8(),
            uuid_index: 3,
        };
        let s = c.to_sqe(7);
        assert_eq!(s.cdw10(), 0x1234_0003);
        assert_eq!(IdentifyCmd::parse(&s), Ok(c));
        assert_eq!(c.cns(), Some(Cns::NamespaceDescriptorList));
        assert!(IdentifyCmd::parse(&Sqe::new(2, 0)).is_err());
    }
}
