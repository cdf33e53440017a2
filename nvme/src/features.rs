//! Get/Set Features (admin opcodes 0Ah/09h) and Asynchronous Event Request
//! completions.

use crate::error::ParseError;
use crate::opcode::AdminOpcode;
use crate::sqe::Sqe;

u8_enum! {
    /// Feature identifiers (NVMe Base 2.0 figure 317).
    pub enum FeatureId {
        /// Arbitration.
        Arbitration = 0x01,
        /// Power Management.
        PowerManagement = 0x02,
        /// LBA Range Type.
        LbaRangeType = 0x03,
        /// Temperature Threshold.
        TemperatureThreshold = 0x04,
        /// Error Recovery.
        ErrorRecovery = 0x05,
        /// Volatile Write Cache.
        VolatileWriteCache = 0x06,
        /// Number of Queues.
        NumberOfQueues = 0x07,
        /// Interrupt Coalescing (PCIe only).
        InterruptCoalescing = 0x08,
        /// Interrupt Vector Configuration (PCIe only).
        InterruptVectorConfig = 0x09,
        /// Write Atomicity Normal.
        WriteAtomicity = 0x0A,
        /// Asynchronous Event Configuration.
        AsyncEventConfig = 0x0B,
        /// Autonomous Power State Transition.
        AutonomousPowerState = 0x0C,
        /// Host Memory Buffer (PCIe only).
        HostMemoryBuffer = 0x0D,
        /// Timestamp.
        Timestamp = 0x0E,
        /// Keep Alive Timer.
        KeepAliveTimer = 0x0F,
        /// Host Controlled Thermal Management.
        HostThermalManagement = 0x10,
        /// Non-Operational Power State Config.
        NonOpPowerState = 0x11,
        /// Host Behavior Support.
        HostBehaviorSupport = 0x16,
        /// I/O Command Set Profile.
        IoCommandSetProfile = 0x19,
        /// Software Progress Marker.
        SoftwareProgressMarker = 0x80,
        /// Host Identifier.
        HostIdentifier = 0x81,
        /// Reservation Notification Mask.
        ReservationNotificationMask = 0x82,
        /// Reservation Persistence.
        ReservationPersistence = 0x83,
        /// Namespace Write Protection Config.
        NamespaceWriteProtection = 0x84,
    }
}

/// Get Features SEL (CDW10 bits 10:8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Select {
    /// Current value.
    Current,
    /// Default value.
    Default,
    /// Saved value.
    Saved,
    /// Supported capabilities (saveable / per-namespace / changeable).
    Capabilities,
    /// Reserved encodings 4..7; answer Invalid Field.
    Reserved(u8),
}

/// Get or Set Features command fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FeaturesCmd {
    /// Whether this is Set Features (else Get Features).
    pub set: bool,
    /// Namespace identifier.
    pub nsid: u32,
    /// Feature identifier, raw.
    pub fid: u8,
    /// Get: select (bits 10:8).
    pub sel: Select,
    /// Set: Save (CDW10 bit 31).
    pub save: bool,
    /// Feature specific CDW11.
    pub cdw11: u32,
    /// Feature specific CDW12.
    pub cdw12: u32,
}

impl FeaturesCmd {
    /// Decodes a Get Features or Set Features SQE.
    pub fn parse(sqe: &Sqe) -> Result<Self, ParseError> {
        let set = match AdminOpcode::from_u8(sqe.opcode()) {
            Some(AdminOpcode::SetFeatures) => true,
            Some(AdminOpcode::GetFeatures) => false,
            _ => return Err(ParseError::Opcode(sqe.opcode())),
        };
        let c10 = sqe.cdw10();
        let sel = match ((c10 >> 8) & 0x7) as u8 {
            0 => Select::Current,
            1 => Select::Default,
            2 => Select::Saved,
            3 => Select::Capabilities,
            r => Select::Reserved(r),
        };
        Ok(FeaturesCmd {
            set,
            nsid: sqe.nsid(),
            fid: c10 as u8,
            sel: if set { Select::Current } else { sel },
            save: set && c10 & (1 << 31) != 0,
            cdw11: sqe.cdw11(),
            cdw12: sqe.cdw12(),
        })
    }

    /// Typed FID, if known.
    pub fn feature_id(&self) -> Option<FeatureId> {
        FeatureId::from_u8(self.fid)
    }

    /// Encodes into an SQE.
    pub fn to_sqe(&self, cid: u16) -> Sqe {
        let op = if self.set {
            AdminOpcode::SetFeatures
        } else {
            AdminOpcode::GetFeatures
        };
        let mut s = Sqe::new(op.as_u8(), cid);
        s.set_nsid(self.nsid);
        let sel = match self.sel {
            Select::Current => 0,
            Select::Default => 1,
            Select::Saved => 2,
            Select::Capabilities => 3,
            Select::Reserved(r) => u32::from(r & 0x7),
        };
        let mut c10 = u32::from(self.fid);
        if self.set {
            c10 |= u32::from(self.save) << 31;
        } else {
            c10 |= sel << 8;
        }
        s.set_cdw10(c10);
        s.set_cdw11(self.cdw11);
        s.set_cdw12(self.cdw12);
        s
    }
}

/// Number of Queues: requested (CDW11) or allocated (CQE dword 0) counts,
/// both 0-based on the wire; this struct holds them 0-based too, as the
/// spec forbids 65535 (FFFFh) in a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct NumQueues {
    /// Submission queues, 0-based.
    pub nsq: u16,
    /// Completion queues, 0-based.
    pub ncq: u16,
}

impl NumQueues {
    /// From CDW11 (request) or dword 0 (completion): NSQ in 15:0, NCQ 31:16.
    pub const fn from_dword(v: u32) -> Self {
        NumQueues {
            nsq: v as u16,
            ncq: (v >> 16) as u16,
        }
    }
    /// To CDW11 / dword 0.
    pub const fn to_dword(self) -> u32 {
        self.nsq as u32 | ((self.ncq as u32) << 16)
    }
    /// Whether a request is valid (FFFFh is reserved for either count).
    pub const fn is_valid_request(self) -> bool {
        self.nsq != 0xFFFF && self.ncq != 0xFFFF
    }
}

/// Asynchronous Event Configuration (FID 0Bh) CDW11 bits.
pub mod aec {
    /// SMART / Health critical warning mask (bits 7:0).
    pub const SMART_MASK: u32 = 0xFF;
    /// Namespace Attribute Notices.
    pub const NS_ATTR: u32 = 1 << 8;
    /// Firmware Activation Notices.
    pub const FW_ACTIVATION: u32 = 1 << 9;
    /// Telemetry Log Notices.
    pub const TELEMETRY: u32 = 1 << 10;
    /// ANA Change Notices.
    pub const ANA_CHANGE: u32 = 1 << 11;
    /// Discovery Log Page Change Notification.
    pub const DISCOVERY_CHANGE: u32 = 1 << 31;
}

/// Volatile Write Cache (FID 06h) CDW11 bit 0: Write Cache Enable.
pub const VWC_WCE: u32 = 1 << 0;

u8_enum! {
    /// Asynchronous event type (CQE dword 0 bits 2:0).
    pub enum AsyncEventType {
        /// Error status.
        Error = 0,
        /// SMART / Health status.
        SmartHealth = 1,
        /// Notice.
        Notice = 2,
        /// Immediate.
        Immediate = 3,
        /// One-shot.
        OneShot = 4,
        /// I/O command specific status.
        IoCommandSpecific = 6,
        /// Vendor specific.
        VendorSpecific = 7,
    }
}

/// Notice event information values (type [`AsyncEventType::Notice`]).
pub mod notice {
    /// Namespace Attribute Changed: read the Changed Namespace List (04h).
    pub const NS_ATTR_CHANGED: u8 = 0x00;
    /// Firmware Activation Starting.
    pub const FW_ACTIVATION_STARTING: u8 = 0x01;
    /// Telemetry Log Changed.
    pub const TELEMETRY_CHANGED: u8 = 0x02;
    /// Asymmetric Namespace Access Change.
    pub const ANA_CHANGE: u8 = 0x03;
    /// Discovery Log Page Change (Linux `NVME_AER_NOTICE_DISC_CHANGED`).
    pub const DISCOVERY_CHANGE: u8 = 0xF0;
}

/// An asynchronous event, as reported in the AER completion's dword 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AsyncEvent {
    /// Event type (bits 2:0), raw.
    pub event_type: u8,
    /// Event information (bits 15:8).
    pub info: u8,
    /// Log page to read to clear the event (bits 23:16).
    pub log_page: u8,
}

impl AsyncEvent {
    /// Namespace attribute changed: read log 04h. Dword 0 = 0x00040002.
    pub const NS_ATTR_CHANGED: AsyncEvent = AsyncEvent {
        event_type: AsyncEventType::Notice as u8,
        info: notice::NS_ATTR_CHANGED,
        log_page: 0x04,
    };
    /// Discovery log changed: read log 70h. Dword 0 = 0x0070F002.
    pub const DISCOVERY_CHANGED: AsyncEvent = AsyncEvent {
        event_type: AsyncEventType::Notice as u8,
        info: notice::DISCOVERY_CHANGE,
        log_page: 0x70,
    };

    /// CQE dword 0.
    pub const fn to_dw0(self) -> u32 {
        (self.event_type as u32 & 0x7) | ((self.info as u32) << 8) | ((self.log_page as u32) << 16)
    }
    /// From CQE dword 0.
    pub const fn from_dw0(v: u32) -> Self {
        AsyncEvent {
            event_type: (v & 0x7) as u8,
            info: (v >> 8) as u8,
            log_page: (v >> 16) as u8,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_round_trip() {
        let g = FeaturesCmd {
            set: false,
            nsid: 0,
            fid: FeatureId::NumberOfQueues.as_u8(),
            sel: Select::Capabilities,
            save: false,
            cdw11: 0,
            cdw12: 0,
        };
        let s = g.to_sqe(1);
        assert_eq!(s.opcode(), 0x0A);
        assert_eq!(s.cdw10(), 0x307);
        assert_eq!(FeaturesCmd::parse(&s), Ok(g));
        let st = FeaturesCmd {
            set: true,
            nsid: 0,
            fid: FeatureId::KeepAliveTimer.as_u8(),
            sel: Select::Current,
            save: true,
            cdw11: 120_000,
            cdw12: 0,
        };
        assert_eq!(st.to_sqe(2).cdw10(), 0x8000_000F);
        assert_eq!(FeaturesCmd::parse(&st.to_sqe(2)), Ok(st));
        assert_eq!(st.feature_id(), Some(FeatureId::KeepAliveTimer));
        assert!(FeaturesCmd::parse(&Sqe::new(6, 0)).is_err());
        let mut r = Sqe::new(0x0A, 0);
        r.set_cdw10(0x506);
        assert_eq!(FeaturesCmd::parse(&r).unwrap().sel, Select::Reserved(5));
    }

    #[test]
    fn num_queues_and_aer() {
        let n = NumQueues::from_dword(0x0003_0007);
        assert_eq!(n, NumQueues { nsq: 7, ncq: 3 });
        assert_eq!(n.to_dword(), 0x0003_0007);
        assert!(!NumQueues::from_dword(0xFFFF).is_valid_request());
        assert_eq!(AsyncEvent::NS_ATTR_CHANGED.to_dw0(), 0x0004_0002);
        assert_eq!(AsyncEvent::DISCOVERY_CHANGED.to_dw0(), 0x0070_F002);
        assert_eq!(
            AsyncEvent::from_dw0(0x0004_0002),
            AsyncEvent::NS_ATTR_CHANGED
        );
        assert_eq!(FeatureId::VolatileWriteCache.as_u8(), 0x06);
        assert_eq!(FeatureId::AsyncEventConfig.as_u8(), 0x0B);
    }
}
