//! Completion status: status code type, status code, CRD, More, DNR, and the
//! CQE status field encoding (with the phase tag in bit 0).

/// Status Code Type (status field bits 11:9).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sct(pub u8);

impl Sct {
    /// Generic command status.
    pub const GENERIC: Sct = Sct(0);
    /// Command specific status (meaning depends on the opcode).
    pub const COMMAND_SPECIFIC: Sct = Sct(1);
    /// Media and data integrity errors.
    pub const MEDIA: Sct = Sct(2);
    /// Path related status.
    pub const PATH: Sct = Sct(3);
    /// Vendor specific.
    pub const VENDOR: Sct = Sct(7);
}

/// A completion status without the phase tag.
///
/// Status codes are constants rather than an enum because command specific
/// codes overlap (e.g. 01h/80h is "Connect Incompatible Format" for Connect
/// but "Conflicting Attributes" for Dataset Management): only the opcode
/// disambiguates them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Status {
    /// Status code type.
    pub sct: Sct,
    /// Status code.
    pub sc: u8,
    /// Command Retry Delay selector (0 = none, 1..=3 pick CRDT1..3).
    pub crd: u8,
    /// More: extra information in the Error Information log.
    pub more: bool,
    /// Do Not Retry.
    pub dnr: bool,
}

macro_rules! codes {
    ($( $(#[$m:meta])* $name:ident = ($sct:expr, $sc:expr) ),+ $(,)?) => {
        impl Status {
            $( $(#[$m])* pub const $name: Status = Status::new($sct, $sc); )+

            /// Every named status, for lookups and tests.
            pub const NAMED: &'static [(&'static str, Status)] = &[
                $( (stringify!($name), Status::$name) ),+
            ];
        }
    };
}

codes! {
    /// 00h/00h Successful Completion.
    SUCCESS = (Sct::GENERIC, 0x00),
    /// 00h/01h Invalid Command Opcode.
    INVALID_OPCODE = (Sct::GENERIC, 0x01),
    /// 00h/02h Invalid Field in Command.
    INVALID_FIELD = (Sct::GENERIC, 0x02),
    /// 00h/03h Command ID Conflict.
    COMMAND_ID_CONFLICT = (Sct::GENERIC, 0x03),
    /// 00h/04h Data Transfer Error.
    DATA_TRANSFER_ERROR = (Sct::GENERIC, 0x04),
    /// 00h/05h Commands Aborted due to Power Loss Notification.
    ABORTED_POWER_LOSS = (Sct::GENERIC, 0x05),
    /// 00h/06h Internal Error.
    INTERNAL_ERROR = (Sct::GENERIC, 0x06),
    /// 00h/07h Command Abort Requested.
    ABORT_REQUESTED = (Sct::GENERIC, 0x07),
    /// 00h/08h Command Aborted due to SQ Deletion.
    ABORTED_SQ_DELETION = (Sct::GENERIC, 0x08),
    /// 00h/09h Command Aborted due to Failed Fused Command.
    ABORTED_FAILED_FUSED = (Sct::GENERIC, 0x09),
    /// 00h/0Ah Command Aborted due to Missing Fused Command.
    ABORTED_MISSING_FUSED = (Sct::GENERIC, 0x0A),
    /// 00h/0Bh Invalid Namespace or Format.
    INVALID_NAMESPACE_OR_FORMAT = (Sct::GENERIC, 0x0B),
    /// 00h/0Ch Command Sequence Error.
    COMMAND_SEQUENCE_ERROR = (Sct::GENERIC, 0x0C),
    /// 00h/0Dh Invalid SGL Segment Descriptor.
    INVALID_SGL_SEGMENT_DESCRIPTOR = (Sct::GENERIC, 0x0D),
    /// 00h/0Eh Invalid Number of SGL Descriptors.
    INVALID_SGL_DESCRIPTOR_COUNT = (Sct::GENERIC, 0x0E),
    /// 00h/0Fh Data SGL Length Invalid.
    DATA_SGL_LENGTH_INVALID = (Sct::GENERIC, 0x0F),
    /// 00h/10h Metadata SGL Length Invalid.
    METADATA_SGL_LENGTH_INVALID = (Sct::GENERIC, 0x10),
    /// 00h/11h SGL Descriptor Type Invalid.
    SGL_DESCRIPTOR_TYPE_INVALID = (Sct::GENERIC, 0x11),
    /// 00h/12h Invalid Use of Controller Memory Buffer.
    INVALID_CMB_USE = (Sct::GENERIC, 0x12),
    /// 00h/13h PRP Offset Invalid.
    PRP_OFFSET_INVALID = (Sct::GENERIC, 0x13),
    /// 00h/14h Atomic Write Unit Exceeded.
    ATOMIC_WRITE_UNIT_EXCEEDED = (Sct::GENERIC, 0x14),
    /// 00h/15h Operation Denied.
    OPERATION_DENIED = (Sct::GENERIC, 0x15),
    /// 00h/16h SGL Offset Invalid.
    SGL_OFFSET_INVALID = (Sct::GENERIC, 0x16),
    /// 00h/18h Host Identifier Inconsistent Format.
    HOST_ID_INCONSISTENT_FORMAT = (Sct::GENERIC, 0x18),
    /// 00h/19h Keep Alive Timer Expired.
    KEEP_ALIVE_EXPIRED = (Sct::GENERIC, 0x19),
    /// 00h/1Ah Keep Alive Timeout Invalid.
    KEEP_ALIVE_INVALID = (Sct::GENERIC, 0x1A),
    /// 00h/1Bh Command Aborted due to Preempt and Abort.
    ABORTED_PREEMPT = (Sct::GENERIC, 0x1B),
    /// 00h/1Ch Sanitize Failed.
    SANITIZE_FAILED = (Sct::GENERIC, 0x1C),
    /// 00h/1Dh Sanitize In Progress.
    SANITIZE_IN_PROGRESS = (Sct::GENERIC, 0x1D),
    /// 00h/1Eh SGL Data Block Granularity Invalid.
    SGL_DATA_BLOCK_GRANULARITY_INVALID = (Sct::GENERIC, 0x1E),
    /// 00h/20h Namespace is Write Protected.
    NAMESPACE_WRITE_PROTECTED = (Sct::GENERIC, 0x20),
    /// 00h/21h Command Interrupted.
    COMMAND_INTERRUPTED = (Sct::GENERIC, 0x21),
    /// 00h/22h Transient Transport Error (e.g. an NVMe/TCP data digest
    /// mismatch on a command's data).
    TRANSIENT_TRANSPORT_ERROR = (Sct::GENERIC, 0x22),
    /// 00h/80h LBA Out of Range.
    LBA_OUT_OF_RANGE = (Sct::GENERIC, 0x80),
    /// 00h/81h Capacity Exceeded.
    CAPACITY_EXCEEDED = (Sct::GENERIC, 0x81),
    /// 00h/82h Namespace Not Ready.
    NAMESPACE_NOT_READY = (Sct::GENERIC, 0x82),
    /// 00h/83h Reservation Conflict.
    RESERVATION_CONFLICT = (Sct::GENERIC, 0x83),
    /// 00h/84h Format In Progress.
    FORMAT_IN_PROGRESS = (Sct::GENERIC, 0x84),

    /// 01h/00h Completion Queue Invalid.
    CQ_INVALID = (Sct::COMMAND_SPECIFIC, 0x00),
    /// 01h/01h Invalid Queue Identifier.
    INVALID_QUEUE_ID = (Sct::COMMAND_SPECIFIC, 0x01),
    /// 01h/02h Invalid Queue Size.
    INVALID_QUEUE_SIZE = (Sct::COMMAND_SPECIFIC, 0x02),
    /// 01h/03h Abort Command Limit Exceeded.
    ABORT_LIMIT_EXCEEDED = (Sct::COMMAND_SPECIFIC, 0x03),
    /// 01h/05h Asynchronous Event Request Limit Exceeded.
    AER_LIMIT_EXCEEDED = (Sct::COMMAND_SPECIFIC, 0x05),
    /// 01h/06h Invalid Firmware Slot.
    INVALID_FIRMWARE_SLOT = (Sct::COMMAND_SPECIFIC, 0x06),
    /// 01h/07h Invalid Firmware Image.
    INVALID_FIRMWARE_IMAGE = (Sct::COMMAND_SPECIFIC, 0x07),
    /// 01h/08h Invalid Interrupt Vector.
    INVALID_INTERRUPT_VECTOR = (Sct::COMMAND_SPECIFIC, 0x08),
    /// 01h/09h Invalid Log Page.
    INVALID_LOG_PAGE = (Sct::COMMAND_SPECIFIC, 0x09),
    /// 01h/0Ah Invalid Format.
    INVALID_FORMAT = (Sct::COMMAND_SPECIFIC, 0x0A),
    /// 01h/0Ch Invalid Queue Deletion.
    INVALID_QUEUE_DELETION = (Sct::COMMAND_SPECIFIC, 0x0C),
    /// 01h/0Dh Feature Identifier Not Saveable.
    FEATURE_NOT_SAVEABLE = (Sct::COMMAND_SPECIFIC, 0x0D),
    /// 01h/0Eh Feature Not Changeable.
    FEATURE_NOT_CHANGEABLE = (Sct::COMMAND_SPECIFIC, 0x0E),
    /// 01h/0Fh Feature Not Namespace Specific.
    FEATURE_NOT_NAMESPACE_SPECIFIC = (Sct::COMMAND_SPECIFIC, 0x0F),
    /// 01h/15h Namespace Insufficient Capacity.
    NAMESPACE_INSUFFICIENT_CAPACITY = (Sct::COMMAND_SPECIFIC, 0x15),
    /// 01h/16h Namespace Identifier Unavailable.
    NAMESPACE_ID_UNAVAILABLE = (Sct::COMMAND_SPECIFIC, 0x16),
    /// 01h/18h Namespace Already Attached.
    NAMESPACE_ALREADY_ATTACHED = (Sct::COMMAND_SPECIFIC, 0x18),
    /// 01h/1Ah Namespace Not Attached.
    NAMESPACE_NOT_ATTACHED = (Sct::COMMAND_SPECIFIC, 0x1A),
    /// 01h/1Ch Controller List Invalid.
    CONTROLLER_LIST_INVALID = (Sct::COMMAND_SPECIFIC, 0x1C),
    /// 01h/80h Conflicting Attributes (Dataset Management, Read, Write).
    CONFLICTING_ATTRIBUTES = (Sct::COMMAND_SPECIFIC, 0x80),
    /// 01h/81h Invalid Protection Information (Read, Write, Compare).
    INVALID_PROTECTION_INFO = (Sct::COMMAND_SPECIFIC, 0x81),
    /// 01h/82h Attempted Write to Read Only Range.
    WRITE_TO_READ_ONLY = (Sct::COMMAND_SPECIFIC, 0x82),
    /// 01h/80h Connect Incompatible Format (Fabrics Connect only).
    CONNECT_INCOMPATIBLE_FORMAT = (Sct::COMMAND_SPECIFIC, 0x80),
    /// 01h/81h Connect Controller Busy (Fabrics Connect only).
    CONNECT_CONTROLLER_BUSY = (Sct::COMMAND_SPECIFIC, 0x81),
    /// 01h/82h Connect Invalid Parameters (Fabrics Connect only); CQE
    /// dword 0 carries IATTR/IPO, see [`crate::fabrics::connect_invalid_param_dw0`].
    CONNECT_INVALID_PARAMETERS = (Sct::COMMAND_SPECIFIC, 0x82),
    /// 01h/83h Connect Restart Discovery (Fabrics Connect only).
    CONNECT_RESTART_DISCOVERY = (Sct::COMMAND_SPECIFIC, 0x83),
    /// 01h/84h Connect Invalid Host (Fabrics Connect only).
    CONNECT_INVALID_HOST = (Sct::COMMAND_SPECIFIC, 0x84),
    /// 01h/85h Invalid Queue Type (Fabrics Connect only).
    CONNECT_INVALID_QUEUE_TYPE = (Sct::COMMAND_SPECIFIC, 0x85),
    /// 01h/90h Discover Restart.
    DISCOVER_RESTART = (Sct::COMMAND_SPECIFIC, 0x90),
    /// 01h/91h Authentication Required.
    AUTH_REQUIRED = (Sct::COMMAND_SPECIFIC, 0x91),

    /// 02h/80h Write Fault.
    WRITE_FAULT = (Sct::MEDIA, 0x80),
    /// 02h/81h Unrecovered Read Error.
    UNRECOVERED_READ_ERROR = (Sct::MEDIA, 0x81),
    /// 02h/82h End-to-end Guard Check Error.
    GUARD_CHECK_ERROR = (Sct::MEDIA, 0x82),
    /// 02h/83h End-to-end Application Tag Check Error.
    APP_TAG_CHECK_ERROR = (Sct::MEDIA, 0x83),
    /// 02h/84h End-to-end Reference Tag Check Error.
    REF_TAG_CHECK_ERROR = (Sct::MEDIA, 0x84),
    /// 02h/85h Compare Failure.
    COMPARE_FAILURE = (Sct::MEDIA, 0x85),
    /// 02h/86h Access Denied.
    ACCESS_DENIED = (Sct::MEDIA, 0x86),
    /// 02h/87h Deallocated or Unwritten Logical Block.
    DEALLOCATED_OR_UNWRITTEN = (Sct::MEDIA, 0x87),

    /// 03h/00h Internal Path Error.
    INTERNAL_PATH_ERROR = (Sct::PATH, 0x00),
    /// 03h/01h Asymmetric Access Persistent Loss.
    ANA_PERSISTENT_LOSS = (Sct::PATH, 0x01),
    /// 03h/02h Asymmetric Access Inaccessible.
    ANA_INACCESSIBLE = (Sct::PATH, 0x02),
    /// 03h/03h Asymmetric Access Transition.
    ANA_TRANSITION = (Sct::PATH, 0x03),
    /// 03h/60h Controller Pathing Error.
    CONTROLLER_PATHING_ERROR = (Sct::PATH, 0x60),
    /// 03h/70h Host Pathing Error.
    HOST_PATHING_ERROR = (Sct::PATH, 0x70),
    /// 03h/71h Command Aborted By Host.
    ABORTED_BY_HOST = (Sct::PATH, 0x71),
}

impl Default for Status {
    fn default() -> Self {
        Status::SUCCESS
    }
}

impl Status {
    /// Phase tag bit of the CQE status field.
    pub const PHASE: u16 = 1 << 0;
    /// More bit of the CQE status field.
    pub const MORE: u16 = 1 << 14;
    /// Do Not Retry bit of the CQE status field.
    pub const DNR: u16 = 1 << 15;

    /// A status with CRD, More and DNR clear.
    pub const fn new(sct: Sct, sc: u8) -> Self {
        Status {
            sct,
            sc,
            crd: 0,
            more: false,
            dnr: false,
        }
    }

    /// The same status with Do Not Retry set: for errors a retry cannot fix
    /// (bad fields, unknown opcodes), so hosts fail fast instead of looping.
    #[must_use]
    pub const fn with_dnr(mut self) -> Self {
        self.dnr = true;
        self
    }

    /// The same status with More set.
    #[must_use]
    pub const fn with_more(mut self) -> Self {
        self.more = true;
        self
    }

    /// The same status with a Command Retry Delay selector (masked to 2 bits).
    #[must_use]
    pub const fn with_crd(mut self, crd: u8) -> Self {
        self.crd = crd & 0x3;
        self
    }

    /// Successful Completion (SCT 0, SC 0), whatever CRD/More/DNR say.
    pub const fn is_success(&self) -> bool {
        self.sct.0 == 0 && self.sc == 0
    }

    /// Whether `self` and `other` name the same status code, ignoring
    /// CRD/More/DNR.
    pub const fn same_code(&self, other: &Status) -> bool {
        self.sct.0 == other.sct.0 && self.sc == other.sc
    }

    /// `SCT << 8 | SC`, the 11-bit form Linux uses (`NVME_SC_*`).
    pub const fn code(&self) -> u16 {
        ((self.sct.0 as u16 & 0x7) << 8) | self.sc as u16
    }

    /// The 16-bit CQE status field (CQE dword 3 bits 31:16) including the
    /// phase tag. Fabrics queues have no phase semantics; pass `false`.
    pub const fn to_field(&self, phase: bool) -> u16 {
        (phase as u16)
            | ((self.sc as u16) << 1)
            | ((self.sct.0 as u16 & 0x7) << 9)
            | ((self.crd as u16 & 0x3) << 12)
            | if self.more { Self::MORE } else { 0 }
            | if self.dnr { Self::DNR } else { 0 }
    }

    /// Splits a CQE status field into the status and the phase tag.
    pub const fn from_field(f: u16) -> (Status, bool) {
        (
            Status {
                sc: (f >> 1) as u8,
                sct: Sct(((f >> 9) & 0x7) as u8),
                crd: ((f >> 12) & 0x3) as u8,
                more: f & Self::MORE != 0,
                dnr: f & Self::DNR != 0,
            },
            f & Self::PHASE != 0,
        )
    }

    /// A name for the code (first match; command specific codes are
    /// ambiguous without the opcode).
    pub fn name(&self) -> Option<&'static str> {
        Self::NAMED
            .iter()
            .find(|(_, s)| s.same_code(self))
            .map(|(n, _)| *n)
    }
}

impl core::fmt::Display for Status {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n}")?,
            None => write!(f, "sct {:#x} sc {:#04x}", self.sct.0, self.sc)?,
        }
        if self.dnr {
            write!(f, " (dnr)")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_round_trip_all_named() {
        for &(name, s) in Status::NAMED {
            for phase in [false, true] {
                for st in [s, s.with_dnr(), s.with_more().with_crd(2)] {
                    let f = st.to_field(phase);
                    assert_eq!(Status::from_field(f), (st, phase), "{name}");
                }
            }
        }
    }

    #[test]
    fn matches_linux_codes() {
        // Linux NVME_SC_* values (SCT << 8 | SC).
        assert_eq!(Status::INVALID_FIELD.code(), 0x2);
        assert_eq!(Status::LBA_OUT_OF_RANGE.code(), 0x80);
        assert_eq!(Status::INVALID_LOG_PAGE.code(), 0x109);
        assert_eq!(Status::FEATURE_NOT_CHANGEABLE.code(), 0x10e);
        assert_eq!(Status::CONNECT_INVALID_PARAMETERS.code(), 0x182);
        assert_eq!(Status::CONNECT_INVALID_HOST.code(), 0x184);
        assert_eq!(Status::CONNECT_CONTROLLER_BUSY.code(), 0x181);
        assert_eq!(Status::WRITE_FAULT.code(), 0x280);
        // Status field: SC in bits 8:1, SCT in 11:9, DNR bit 15.
        assert_eq!(Status::INVALID_FIELD.with_dnr().to_field(false), 0x8004);
        assert_eq!(Status::CONNECT_INVALID_PARAMETERS.to_field(true), 0x0305);
        assert_eq!(Status::SUCCESS.to_field(true), 1);
        assert!(Status::SUCCESS.with_dnr().is_success());
        assert_eq!(Status::INVALID_OPCODE.to_string(), "INVALID_OPCODE");
    }
}
