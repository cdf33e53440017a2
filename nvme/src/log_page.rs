//! Get Log Page (admin opcode 02h): command field decoding and builders for
//! the log pages a fabrics target serves.

use crate::bytes::{arr, put_padded, r128, r16, r32, r64, trimmed, w128, w16, w32, w64};
use crate::error::{need, ParseError};
use crate::fabrics::Nqn;
use crate::opcode::AdminOpcode;
use crate::sqe::Sqe;
use crate::status::Status;

u8_enum! {
    /// Log page identifiers.
    pub enum LogPageId {
        /// Supported Log Pages.
        SupportedLogPages = 0x00,
        /// Error Information.
        ErrorInformation = 0x01,
        /// SMART / Health Information.
        SmartHealth = 0x02,
        /// Firmware Slot Information.
        FirmwareSlot = 0x03,
        /// Changed Namespace List.
        ChangedNamespaceList = 0x04,
        /// Commands Supported and Effects.
        CommandsSupportedEffects = 0x05,
        /// Device Self-test.
        DeviceSelfTest = 0x06,
        /// Telemetry Host-Initiated.
        TelemetryHost = 0x07,
        /// Telemetry Controller-Initiated.
        TelemetryController = 0x08,
        /// Asymmetric Namespace Access.
        Ana = 0x0C,
        /// Discovery (discovery controllers only).
        Discovery = 0x70,
        /// Reservation Notification.
        ReservationNotification = 0x80,
        /// Sanitize Status.
        SanitizeStatus = 0x81,
    }
}

/// Get Log Page command fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct GetLogPageCmd {
    /// Namespace identifier.
    pub nsid: u32,
    /// Log page identifier, raw (unknown ones get Invalid Log Page).
    pub lid: u8,
    /// Log specific parameter (CDW10 bits 14:8).
    pub lsp: u8,
    /// Retain Asynchronous Event (CDW10 bit 15): when clear, reading the
    /// page re-arms the AEN that pointed at it.
    pub rae: bool,
    /// Number of dwords, 0-based (NUMDU:NUMDL).
    pub numd: u32,
    /// Log specific identifier (CDW11 bits 31:16).
    pub lsi: u16,
    /// Byte offset into the page (LPOU:LPOL), or entry index when `ot`.
    pub lpo: u64,
    /// UUID index (CDW14 bits 6:0).
    pub uuid_index: u8,
    /// Offset Type: `lpo` is an index rather than a byte offset.
    pub ot: bool,
    /// Command set identifier (CDW14 bits 31:24).
    pub csi: u8,
}

impl GetLogPageCmd {
    /// Decodes a Get Log Page SQE.
    pub fn parse(sqe: &Sqe) -> Result<Self, ParseError> {
        if sqe.opcode() != AdminOpcode::GetLogPage.as_u8() {
            return Err(ParseError::Opcode(sqe.opcode()));
        }
        let (c10, c11, c14) = (sqe.cdw10(), sqe.cdw11(), sqe.cdw14());
        Ok(GetLogPageCmd {
            nsid: sqe.nsid(),
            lid: c10 as u8,
            lsp: ((c10 >> 8) & 0x7f) as u8,
            rae: c10 & (1 << 15) != 0,
            numd: (c10 >> 16) | ((c11 & 0xffff) << 16),
            lsi: (c11 >> 16) as u16,
            lpo: u64::from(sqe.cdw12()) | (u64::from(sqe.cdw13()) << 32),
            uuid_index: (c14 & 0x7f) as u8,
            ot: c14 & (1 << 23) != 0,
            csi: (c14 >> 24) as u8,
        })
    }

    /// Builds the SQE for reading `len` bytes (rounded up to dwords, at
    /// least one) at byte offset `offset`.
    pub fn new(lid: u8, nsid: u32, offset: u64, len: u32) -> Self {
        GetLogPageCmd {
            nsid,
            lid,
            numd: len.div_ceil(4).max(1) - 1,
            lpo: offset,
            ..Default::default()
        }
    }

    /// Encodes into an SQE.
    pub fn to_sqe(&self, cid: u16) -> Sqe {
        let mut s = Sqe::new(AdminOpcode::GetLogPage.as_u8(), cid);
        s.set_nsid(self.nsid);
        s.set_cdw10(
            u32::from(self.lid)
                | (u32::from(self.lsp & 0x7f) << 8)
                | (u32::from(self.rae) << 15)
                | (self.numd << 16),
        );
        s.set_cdw11((self.numd >> 16) | (u32::from(self.lsi) << 16));
        s.set_cdw12(self.lpo as u32);
        s.set_cdw13((self.lpo >> 32) as u32);
        s.set_cdw14(
            u32::from(self.uuid_index & 0x7f)
                | (u32::from(self.ot) << 23)
                | (u32::from(self.csi) << 24),
        );
        s
    }

    /// Typed LID, if known.
    pub fn log_page_id(&self) -> Option<LogPageId> {
        LogPageId::from_u8(self.lid)
    }

    /// Bytes requested: (NUMD + 1) * 4, at most 16 GiB (cannot overflow).
    pub fn byte_len(&self) -> u64 {
        (u64::from(self.numd) + 1) * 4
    }

    /// The part of a `page_len`-byte page this command reads, clamped to
    /// the page end, plus how many bytes to transfer (the full request:
    /// the spec says bytes past the end of the page read as zero).
    ///
    /// Errors with Invalid Field (DNR) when the offset is not dword aligned
    /// or lies past the end of the page, or when offset type "index" is
    /// used (this crate serves no index-addressed logs).
    pub fn range(&self, page_len: usize) -> Result<LogRange, Status> {
        let invalid = Err(Status::INVALID_FIELD.with_dnr());
        if self.ot || self.lpo % 4 != 0 {
            return invalid;
        }
        let Ok(start) = usize::try_from(self.lpo) else {
            return invalid;
        };
        if start > page_len {
            return invalid;
        }
        let want = usize::try_from(self.byte_len()).unwrap_or(usize::MAX);
        let end = start.saturating_add(want).min(page_len);
        Ok(LogRange {
            start,
            end,
            transfer_len: want,
        })
    }
}

/// Result of [`GetLogPageCmd::range`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LogRange {
    /// First byte of the page to copy.
    pub start: usize,
    /// One past the last byte of the page to copy.
    pub end: usize,
    /// Bytes the host asked for; pad with zeroes after `end - start`.
    pub transfer_len: usize,
}

/// Error Information log entry (64 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ErrorInfoEntry {
    /// Error count, unique and increasing (0 = empty entry).
    pub error_count: u64,
    /// Submission queue of the failed command.
    pub sqid: u16,
    /// Command identifier of the failed command.
    pub cid: u16,
    /// Status field of the completion (phase bit included, as in the CQE).
    pub status_field: u16,
    /// Parameter error location: byte (bits 7:0) and bit (10:8).
    pub param_error_location: u16,
    /// First LBA that had the error.
    pub lba: u64,
    /// Namespace.
    pub nsid: u32,
    /// Vendor specific information available (log page id).
    pub vs_info: u8,
    /// Transport type (3 = TCP).
    pub trtype: u8,
    /// Command specific information.
    pub cmd_specific: u64,
    /// Transport type specific information.
    pub trtype_specific: u16,
}

impl ErrorInfoEntry {
    /// Entry size.
    pub const SIZE: usize = 64;

    /// Writes into the first 64 bytes of `out`.
    pub fn write(&self, out: &mut [u8]) -> Result<(), ParseError> {
        need(Self::SIZE, out.len())?;
        let out = &mut out[..Self::SIZE];
        out.fill(0);
        w64(out, 0, self.error_count);
        w16(out, 8, self.sqid);
        w16(out, 10, self.cid);
        w16(out, 12, self.status_field);
        w16(out, 14, self.param_error_location);
        w64(out, 16, self.lba);
        w32(out, 24, self.nsid);
        out[28] = self.vs_info;
        out[29] = self.trtype;
        w64(out, 32, self.cmd_specific);
        w16(out, 40, self.trtype_specific);
        Ok(())
    }
    /// Parses the first 64 bytes of `b`.
    pub fn parse(b: &[u8]) -> Result<Self, ParseError> {
        need(Self::SIZE, b.len())?;
        Ok(ErrorInfoEntry {
            error_count: r64(b, 0),
            sqid: r16(b, 8),
            cid: r16(b, 10),
            status_field: r16(b, 12),
            param_error_location: r16(b, 14),
            lba: r64(b, 16),
            nsid: r32(b, 24),
            vs_info: b[28],
            trtype: b[29],
            cmd_specific: r64(b, 32),
            trtype_specific: r16(b, 40),
        })
    }
}

/// SMART / Health Information log (512 bytes). 128-bit counters are kept
/// as `u128` so no field is truncated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct SmartLog {
    /// Critical warning bits.
    pub critical_warning: u8,
    /// Composite temperature in kelvin.
    pub composite_temp: u16,
    /// Available spare, percent.
    pub avail_spare: u8,
    /// Available spare threshold, percent.
    pub spare_thresh: u8,
    /// Percentage used.
    pub percent_used: u8,
    /// Endurance group critical warning summary.
    pub endgrp_crit_warning: u8,
    /// Data units read (1000 × 512 bytes each).
    pub data_units_read: u128,
    /// Data units written (1000 × 512 bytes each).
    pub data_units_written: u128,
    /// Host read commands.
    pub host_reads: u128,
    /// Host write commands.
    pub host_writes: u128,
    /// Controller busy time, minutes.
    pub ctrl_busy_time: u128,
    /// Power cycles.
    pub power_cycles: u128,
    /// Power on hours.
    pub power_on_hours: u128,
    /// Unsafe shutdowns.
    pub unsafe_shutdowns: u128,
    /// Media and data integrity errors.
    pub media_errors: u128,
    /// Number of error information log entries.
    pub num_err_log_entries: u128,
    /// Warning composite temperature time, minutes.
    pub warning_temp_time: u32,
    /// Critical composite temperature time, minutes.
    pub critical_temp_time: u32,
    /// Temperature sensors 1..8 in kelvin (0 = not implemented).
    pub temp_sensor: [u16; 8],
}

impl SmartLog {
    /// Page size.
    pub const SIZE: usize = 512;

    /// Writes the page into the first 512 bytes of `out`.
    pub fn write(&self, out: &mut [u8]) -> Result<(), ParseError> {
        need(Self::SIZE, out.len())?;
        let out = &mut out[..Self::SIZE];
        out.fill(0);
        out[0] = self.critical_warning;
        w16(out, 1, self.composite_temp);
        out[3] = self.avail_spare;
        out[4] = self.spare_thresh;
        out[5] = self.percent_used;
        out[6] = self.endgrp_crit_warning;
        for (i, v) in self.counters().iter().enumerate() {
            w128(out, 32 + 16 * i, *v);
        }
        w32(out, 192, self.warning_temp_time);
        w32(out, 196, self.critical_temp_time);
        for (i, t) in self.temp_sensor.iter().enumerate() {
            w16(out, 200 + 2 * i, *t);
        }
        Ok(())
    }

    fn counters(&self) -> [u128; 10] {
        [
            self.data_units_read,
            self.data_units_written,
            self.host_reads,
            self.host_writes,
            self.ctrl_busy_time,
            self.power_cycles,
            self.power_on_hours,
            self.unsafe_shutdowns,
            self.media_errors,
            self.num_err_log_entries,
        ]
    }

    /// Parses the page.
    pub fn parse(b: &[u8]) -> Result<Self, ParseError> {
        need(Self::SIZE, b.len())?;
        let c = |i: usize| r128(b, 32 + 16 * i);
        let mut temp_sensor = [0u16; 8];
        for (i, t) in temp_sensor.iter_mut().enumerate() {
            *t = r16(b, 200 + 2 * i);
        }
        Ok(SmartLog {
            critical_warning: b[0],
            composite_temp: r16(b, 1),
            avail_spare: b[3],
            spare_thresh: b[4],
            percent_used: b[5],
            endgrp_crit_warning: b[6],
            data_units_read: c(0),
            data_units_written: c(1),
            host_reads: c(2),
            host_writes: c(3),
            ctrl_busy_time: c(4),
            power_cycles: c(5),
            power_on_hours: c(6),
            unsafe_shutdowns: c(7),
            media_errors: c(8),
            num_err_log_entries: c(9),
            warning_temp_time: r32(b, 192),
            critical_temp_time: r32(b, 196),
            temp_sensor,
        })
    }
}

/// Firmware Slot Information log (512 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FirmwareSlotLog {
    /// Active firmware info: active slot in bits 2:0, next-reset slot 6:4.
    pub afi: u8,
    /// Firmware revisions for slots 1..7 (space padded ASCII, or zero).
    pub frs: [[u8; 8]; 7],
}

impl FirmwareSlotLog {
    /// Page size.
    pub const SIZE: usize = 512;

    /// Writes the page.
    pub fn write(&self, out: &mut [u8]) -> Result<(), ParseError> {
        need(Self::SIZE, out.len())?;
        let out = &mut out[..Self::SIZE];
        out.fill(0);
        out[0] = self.afi;
        for (i, f) in self.frs.iter().enumerate() {
            out[8 + 8 * i..16 + 8 * i].copy_from_slice(f);
        }
        Ok(())
    }
    /// Parses the page.
    pub fn parse(b: &[u8]) -> Result<Self, ParseError> {
        need(Self::SIZE, b.len())?;
        let mut frs = [[0u8; 8]; 7];
        for (i, f) in frs.iter_mut().enumerate() {
            *f = arr(b, 8 + 8 * i);
        }
        Ok(FirmwareSlotLog { afi: b[0], frs })
    }
}

/// Changed Namespace List log size.
pub const CHANGED_NS_LIST_LEN: usize = 4096;

/// Writes the Changed Namespace List (4096 bytes): up to 1024 NSIDs; when
/// more changed, the spec says to report FFFFFFFFh in entry 0 and zero the
/// rest.
pub fn write_changed_ns_list(nsids: &[u32], out: &mut [u8]) -> Result<(), ParseError> {
    need(CHANGED_NS_LIST_LEN, out.len())?;
    let out = &mut out[..CHANGED_NS_LIST_LEN];
    out.fill(0);
    if nsids.len() > CHANGED_NS_LIST_LEN / 4 {
        w32(out, 0, 0xFFFF_FFFF);
        return Ok(());
    }
    for (i, id) in nsids.iter().enumerate() {
        w32(out, 4 * i, *id);
    }
    Ok(())
}

/// Commands Supported and Effects bits (per-opcode dword).
pub mod effects {
    /// Command supported.
    pub const CSUPP: u32 = 1 << 0;
    /// Logical block content change.
    pub const LBCC: u32 = 1 << 1;
    /// Namespace capability change.
    pub const NCC: u32 = 1 << 2;
    /// Namespace inventory change.
    pub const NIC: u32 = 1 << 3;
    /// Controller capability change.
    pub const CCC: u32 = 1 << 4;
    /// Command submission and execution: no other command for the same
    /// namespace may be outstanding (bits 18:16 = 001b).
    pub const CSE_SINGLE_NS: u32 = 1 << 16;
    /// Command submission and execution: no other command may be
    /// outstanding anywhere (bits 18:16 = 010b).
    pub const CSE_SINGLE: u32 = 2 << 16;
    /// UUID selection supported.
    pub const UUID_SEL: u32 = 1 << 19;
}

/// Commands Supported and Effects log (4096 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CommandEffectsLog {
    /// Admin commands, indexed by opcode.
    pub acs: [u32; 256],
    /// I/O commands, indexed by opcode.
    pub iocs: [u32; 256],
}

impl Default for CommandEffectsLog {
    fn default() -> Self {
        CommandEffectsLog {
            acs: [0; 256],
            iocs: [0; 256],
        }
    }
}

impl CommandEffectsLog {
    /// Page size.
    pub const SIZE: usize = 4096;

    /// Writes the page.
    pub fn write(&self, out: &mut [u8]) -> Result<(), ParseError> {
        need(Self::SIZE, out.len())?;
        let out = &mut out[..Self::SIZE];
        out.fill(0);
        for (i, v) in self.acs.iter().chain(self.iocs.iter()).enumerate() {
            w32(out, 4 * i, *v);
        }
        Ok(())
    }
    /// Parses the page.
    pub fn parse(b: &[u8]) -> Result<Self, ParseError> {
        need(Self::SIZE, b.len())?;
        let mut l = CommandEffectsLog::default();
        for i in 0..256 {
            l.acs[i] = r32(b, 4 * i);
            l.iocs[i] = r32(b, 1024 + 4 * i);
        }
        Ok(l)
    }
}

/// Discovery log page header size (entries start here).
pub const DISCOVERY_HEADER_LEN: usize = 1024;
/// Discovery log page entry size.
pub const DISCOVERY_ENTRY_LEN: usize = 1024;

/// Discovery log page header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct DiscoveryLogHeader {
    /// Generation counter: bumped whenever the entries change so hosts can
    /// detect a torn multi-command read.
    pub genctr: u64,
    /// Number of records.
    pub numrec: u64,
    /// Record format (0).
    pub recfmt: u16,
}

impl DiscoveryLogHeader {
    /// Writes the 1024-byte header.
    pub fn write(&self, out: &mut [u8]) -> Result<(), ParseError> {
        need(DISCOVERY_HEADER_LEN, out.len())?;
        let out = &mut out[..DISCOVERY_HEADER_LEN];
        out.fill(0);
        w64(out, 0, self.genctr);
        w64(out, 8, self.numrec);
        w16(out, 16, self.recfmt);
        Ok(())
    }
    /// Parses the header (the first 18 bytes suffice, so a host can read
    /// just the header first).
    pub fn parse(b: &[u8]) -> Result<Self, ParseError> {
        need(18, b.len())?;
        Ok(DiscoveryLogHeader {
            genctr: r64(b, 0),
            numrec: r64(b, 8),
            recfmt: r16(b, 16),
        })
    }
}

/// Transport types (TRTYPE).
pub mod trtype {
    /// RDMA.
    pub const RDMA: u8 = 1;
    /// Fibre Channel.
    pub const FC: u8 = 2;
    /// TCP.
    pub const TCP: u8 = 3;
    /// Intra-host (loop).
    pub const LOOP: u8 = 254;
}

/// Address families (ADRFAM).
pub mod adrfam {
    /// IPv4.
    pub const IPV4: u8 = 1;
    /// IPv6.
    pub const IPV6: u8 = 2;
    /// InfiniBand.
    pub const IB: u8 = 3;
    /// Fibre Channel.
    pub const FC: u8 = 4;
    /// Intra-host.
    pub const LOOP: u8 = 254;
}

/// Subsystem types (SUBTYPE).
pub mod subtype {
    /// Referral to another discovery service.
    pub const REFERRAL: u8 = 1;
    /// NVM subsystem.
    pub const NVME: u8 = 2;
    /// The discovery subsystem being queried (TP8013 current discovery).
    pub const CURRENT_DISCOVERY: u8 = 3;
}

/// Transport requirements (TREQ).
pub mod treq {
    /// Secure channel: not specified.
    pub const SECURE_NOT_SPECIFIED: u8 = 0;
    /// Secure channel: required.
    pub const SECURE_REQUIRED: u8 = 1;
    /// Secure channel: not required.
    pub const SECURE_NOT_REQUIRED: u8 = 2;
    /// SQ flow control disable supported.
    pub const DISABLE_SQFLOW: u8 = 1 << 2;
}

/// TCP TSAS security type: none.
pub const TSAS_TCP_SECTYPE_NONE: u8 = 0;

/// One Discovery log page entry (1024 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DiscoveryLogEntry {
    /// Transport type ([`trtype`]).
    pub trtype: u8,
    /// Address family ([`adrfam`]).
    pub adrfam: u8,
    /// Subsystem type ([`subtype`]).
    pub subtype: u8,
    /// Transport requirements ([`treq`]).
    pub treq: u8,
    /// Port identifier.
    pub portid: u16,
    /// Controller ID: FFFFh for the dynamic controller model.
    pub cntlid: u16,
    /// Admin max SQ size (must be at least 32 for NVMe/TCP hosts).
    pub asqsz: u16,
    /// Entry flags (bit 0 duplicate returned info, bit 1 explicit
    /// persistent connection, bit 2 no CDC connectivity).
    pub eflags: u16,
    /// Transport service identifier (TCP port) as ASCII, space padded.
    pub trsvcid: [u8; 32],
    /// Subsystem NQN.
    pub subnqn: Nqn,
    /// Transport address as ASCII, space padded.
    pub traddr: [u8; 256],
    /// Transport specific address subtype (TCP: SECTYPE in byte 0).
    pub tsas: [u8; 256],
}

impl DiscoveryLogEntry {
    /// An NVMe/TCP entry for `subnqn` at `traddr:trsvcid`, dynamic
    /// controller model, no secure channel.
    pub fn tcp(
        subtype: u8,
        adrfam: u8,
        portid: u16,
        traddr: &str,
        trsvcid: &str,
        subnqn: Nqn,
    ) -> Self {
        let mut t = [b' '; 256];
        put_padded(&mut t, traddr.as_bytes(), b' ');
        let mut s = [b' '; 32];
        put_padded(&mut s, trsvcid.as_bytes(), b' ');
        DiscoveryLogEntry {
            trtype: trtype::TCP,
            adrfam,
            subtype,
            treq: treq::SECURE_NOT_REQUIRED,
            portid,
            cntlid: 0xFFFF,
            asqsz: 32,
            eflags: 0,
            trsvcid: s,
            subnqn,
            traddr: t,
            tsas: [0; 256],
        }
    }

    /// TRADDR without padding.
    pub fn traddr_str(&self) -> &[u8] {
        trimmed(&self.traddr)
    }

    /// TRSVCID without padding.
    pub fn trsvcid_str(&self) -> &[u8] {
        trimmed(&self.trsvcid)
    }

    /// Writes the entry into the first 1024 bytes of `out`.
    pub fn write(&self, out: &mut [u8]) -> Result<(), ParseError> {
        need(DISCOVERY_ENTRY_LEN, out.len())?;
        let out = &mut out[..DISCOVERY_ENTRY_LEN];
        out.fill(0);
        out[0] = self.trtype;
        out[1] = self.adrfam;
        out[2] = self.subtype;
        out[3] = self.treq;
        w16(out, 4, self.portid);
        w16(out, 6, self.cntlid);
        w16(out, 8, self.asqsz);
        w16(out, 10, self.eflags);
        out[32..64].copy_from_slice(&self.trsvcid);
        out[256..512].copy_from_slice(self.subnqn.raw());
        out[512..768].copy_from_slice(&self.traddr);
        out[768..1024].copy_from_slice(&self.tsas);
        Ok(())
    }

    /// Parses an entry.
    pub fn parse(b: &[u8]) -> Result<Self, ParseError> {
        need(DISCOVERY_ENTRY_LEN, b.len())?;
        Ok(DiscoveryLogEntry {
            trtype: b[0],
            adrfam: b[1],
            subtype: b[2],
            treq: b[3],
            portid: r16(b, 4),
            cntlid: r16(b, 6),
            asqsz: r16(b, 8),
            eflags: r16(b, 10),
            trsvcid: arr(b, 32),
            subnqn: Nqn::from_raw(arr(b, 256)),
            traddr: arr(b, 512),
            tsas: arr(b, 768),
        })
    }
}

/// Writes a whole discovery log page (header + entries) into `out`, which
/// must hold `1024 * (1 + entries.len())` bytes. Returns the page length.
pub fn write_discovery_log(
    genctr: u64,
    entries: &[DiscoveryLogEntry],
    out: &mut [u8],
) -> Result<usize, ParseError> {
    let len = entries
        .len()
        .checked_add(1)
        .and_then(|n| n.checked_mul(DISCOVERY_ENTRY_LEN))
        .ok_or(ParseError::TooMany {
            count: entries.len(),
            max: usize::MAX / DISCOVERY_ENTRY_LEN - 1,
        })?;
    need(len, out.len())?;
    DiscoveryLogHeader {
        genctr,
        numrec: entries.len() as u64,
        recfmt: 0,
    }
    .write(out)?;
    for (i, e) in entries.iter().enumerate() {
        e.write(&mut out[DISCOVERY_HEADER_LEN + i * DISCOVERY_ENTRY_LEN..])?;
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_log_page_fields() {
        let mut s = Sqe::new(0x02, 1);
        // LID 70h, LSP 1, RAE, NUMDL 0x3FF; NUMDU 1; LPOL 0x1000, LPOU 1.
        s.set_cdw10(0x03FF_8170);
        s.set_cdw11(0x0000_0001);
        s.set_cdw12(0x1000);
        s.set_cdw13(1);
        let c = GetLogPageCmd::parse(&s).unwrap();
        assert_eq!(c.lid, 0x70);
        assert_eq!(c.log_page_id(), Some(LogPageId::Discovery));
        assert_eq!(c.lsp, 1);
        assert!(c.rae);
        assert_eq!(c.numd, 0x1_03FF);
        assert_eq!(c.byte_len(), 0x1_0400 * 4);
        assert_eq!(c.lpo, 0x1_0000_1000);
        assert_eq!(GetLogPageCmd::parse(&c.to_sqe(1)), Ok(c));
        assert_eq!(c.to_sqe(1), s);
        // Max NUMD does not overflow.
        s.set_cdw10(0xFFFF_0002);
        s.set_cdw11(0xFFFF);
        assert_eq!(GetLogPageCmd::parse(&s).unwrap().byte_len(), 1 << 34);
    }

    #[test]
    fn log_range_rules() {
        let c = GetLogPageCmd::new(2, 0xFFFF_FFFF, 0, 512);
        assert_eq!(c.numd, 127);
        assert_eq!(
            c.range(512),
            Ok(LogRange {
                start: 0,
                end: 512,
                transfer_len: 512
            })
        );
        let past = GetLogPageCmd::new(2, 0, 508, 16);
        assert_eq!(past.range(512).unwrap().end, 512);
        assert_eq!(past.range(512).unwrap().transfer_len, 16);
        assert!(GetLogPageCmd::new(2, 0, 516, 4).range(512).is_err());
        assert!(GetLogPageCmd::new(2, 0, 2, 4).range(512).is_err());
        assert!(GetLogPageCmd::new(2, 0, u64::MAX - 3, 4)
            .range(512)
            .is_err());
        assert_eq!(
            GetLogPageCmd::new(2, 0, 512, 4).range(512).unwrap().end,
            512
        );
    }

    #[test]
    fn error_smart_fw_round_trip() {
        let e = ErrorInfoEntry {
            error_count: 1,
            sqid: 2,
            cid: 3,
            status_field: Status::INVALID_FIELD.with_dnr().to_field(false),
            param_error_location: 44,
            lba: 5,
            nsid: 6,
            vs_info: 0,
            trtype: trtype::TCP,
            cmd_specific: 7,
            trtype_specific: 8,
        };
        let mut b = [0u8; 4096];
        e.write(&mut b).unwrap();
        assert_eq!(r16(&b, 12), 0x8004);
        assert_eq!(b[29], 3);
        assert_eq!(ErrorInfoEntry::parse(&b), Ok(e));

        let s = SmartLog {
            critical_warning: 1,
            composite_temp: 300,
            avail_spare: 100,
            spare_thresh: 10,
            percent_used: 3,
            data_units_read: u128::MAX,
            host_writes: 42,
            num_err_log_entries: 9,
            warning_temp_time: 1,
            critical_temp_time: 2,
            temp_sensor: [1, 2, 3, 4, 5, 6, 7, 8],
            ..Default::default()
        };
        s.write(&mut b).unwrap();
        assert_eq!(r16(&b, 1), 300);
        assert_eq!(r128(&b, 32), u128::MAX);
        assert_eq!(r128(&b, 80), 42);
        assert_eq!(r128(&b, 176), 9);
        assert_eq!(r32(&b, 196), 2);
        assert_eq!(r16(&b, 214), 8);
        assert_eq!(SmartLog::parse(&b), Ok(s));

        let f = FirmwareSlotLog {
            afi: 1,
            frs: [
                crate::identify::ascii_field("0.1"),
                [0; 8],
                [0; 8],
                [0; 8],
                [0; 8],
                [0; 8],
                [0; 8],
            ],
        };
        f.write(&mut b).unwrap();
        assert_eq!(&b[8..11], b"0.1");
        assert_eq!(FirmwareSlotLog::parse(&b), Ok(f));
        assert!(SmartLog::parse(&b[..511]).is_err());
    }

    #[test]
    fn changed_ns_and_effects() {
        let mut b = [0u8; 4096];
        write_changed_ns_list(&[1, 7], &mut b).unwrap();
        assert_eq!(
            crate::identify::parse_ns_list(&b).collect::<Vec<_>>(),
            vec![1, 7]
        );
        let many: Vec<u32> = (1..=1025).collect();
        write_changed_ns_list(&many, &mut b).unwrap();
        assert_eq!(r32(&b, 0), 0xFFFF_FFFF);
        assert_eq!(r32(&b, 4), 0);

        let mut l = CommandEffectsLog::default();
        l.acs[AdminOpcode::Identify.as_u8() as usize] = effects::CSUPP;
        l.iocs[0x01] = effects::CSUPP | effects::LBCC;
        l.write(&mut b).unwrap();
        assert_eq!(r32(&b, 6 * 4), 1);
        assert_eq!(r32(&b, 1024 + 4), 3);
        assert_eq!(CommandEffectsLog::parse(&b), Ok(l));
    }

    #[test]
    fn discovery_log_layout() {
        let nqn = Nqn::new("nqn.2024-01.io.pollux:sub1").unwrap();
        let e = DiscoveryLogEntry::tcp(subtype::NVME, adrfam::IPV4, 1, "10.0.0.1", "4420", nqn);
        let mut page = vec![0u8; 3 * 1024];
        let n = write_discovery_log(7, &[e, e], &mut page).unwrap();
        assert_eq!(n, 3072);
        assert_eq!(r64(&page, 0), 7);
        assert_eq!(r64(&page, 8), 2);
        let ent = &page[1024..2048];
        assert_eq!(&ent[..4], &[3, 1, 2, 2]);
        assert_eq!(r16(ent, 4), 1);
        assert_eq!(r16(ent, 6), 0xFFFF);
        assert_eq!(r16(ent, 8), 32);
        assert_eq!(&ent[32..36], b"4420");
        assert_eq!(ent[36], b' ');
        assert_eq!(&ent[256..282], b"nqn.2024-01.io.pollux:sub1");
        assert_eq!(&ent[512..520], b"10.0.0.1");
        assert_eq!(ent[768], TSAS_TCP_SECTYPE_NONE);
        let p = DiscoveryLogEntry::parse(ent).unwrap();
        assert_eq!(p, e);
        assert_eq!(p.traddr_str(), b"10.0.0.1");
        assert_eq!(p.trsvcid_str(), b"4420");
        assert_eq!(
            DiscoveryLogHeader::parse(&page[..18]),
            Ok(DiscoveryLogHeader {
                genctr: 7,
                numrec: 2,
                recfmt: 0
            })
        );
        assert!(write_discovery_log(7, &[e, e], &mut page[..3071]).is_err());
    }
}
