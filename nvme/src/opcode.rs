//! Admin and NVM I/O command opcodes.

u8_enum! {
    /// Admin command opcodes (NVMe Base 2.0, figure 28).
    pub enum AdminOpcode {
        /// Delete I/O Submission Queue.
        DeleteIoSq = 0x00,
        /// Create I/O Submission Queue.
        CreateIoSq = 0x01,
        /// Get Log Page.
        GetLogPage = 0x02,
        /// Delete I/O Completion Queue.
        DeleteIoCq = 0x04,
        /// Create I/O Completion Queue.
        CreateIoCq = 0x05,
        /// Identify.
        Identify = 0x06,
        /// Abort.
        Abort = 0x08,
        /// Set Features.
        SetFeatures = 0x09,
        /// Get Features.
        GetFeatures = 0x0A,
        /// Asynchronous Event Request.
        AsyncEventRequest = 0x0C,
        /// Namespace Management.
        NamespaceManagement = 0x0D,
        /// Firmware Commit.
        FirmwareCommit = 0x10,
        /// Firmware Image Download.
        FirmwareImageDownload = 0x11,
        /// Device Self-test.
        DeviceSelfTest = 0x14,
        /// Namespace Attachment.
        NamespaceAttachment = 0x15,
        /// Keep Alive.
        KeepAlive = 0x18,
        /// Directive Send.
        DirectiveSend = 0x19,
        /// Directive Receive.
        DirectiveReceive = 0x1A,
        /// Virtualization Management.
        VirtualizationManagement = 0x1C,
        /// NVMe-MI Send.
        NvmeMiSend = 0x1D,
        /// NVMe-MI Receive.
        NvmeMiReceive = 0x1E,
        /// Capacity Management.
        CapacityManagement = 0x20,
        /// Lockdown.
        Lockdown = 0x24,
        /// Doorbell Buffer Config.
        DoorbellBufferConfig = 0x7C,
        /// Fabrics command; the command type is in SQE byte 4
        /// (see [`crate::fabrics`]).
        Fabrics = 0x7F,
        /// Format NVM.
        FormatNvm = 0x80,
        /// Security Send.
        SecuritySend = 0x81,
        /// Security Receive.
        SecurityReceive = 0x82,
        /// Sanitize.
        Sanitize = 0x84,
        /// Get LBA Status.
        GetLbaStatus = 0x86,
    }
}

u8_enum! {
    /// NVM command set I/O opcodes (NVM Command Set 1.0, figure 17).
    pub enum IoOpcode {
        /// Flush.
        Flush = 0x00,
        /// Write.
        Write = 0x01,
        /// Read.
        Read = 0x02,
        /// Write Uncorrectable.
        WriteUncorrectable = 0x04,
        /// Compare.
        Compare = 0x05,
        /// Write Zeroes.
        WriteZeroes = 0x08,
        /// Dataset Management (deallocate / TRIM).
        DatasetManagement = 0x09,
        /// Verify.
        Verify = 0x0C,
        /// Reservation Register.
        ReservationRegister = 0x0D,
        /// Reservation Report.
        ReservationReport = 0x0E,
        /// Reservation Acquire.
        ReservationAcquire = 0x11,
        /// Reservation Release.
        ReservationRelease = 0x15,
        /// Copy.
        Copy = 0x19,
        /// Fabrics command on an I/O queue (Connect of an I/O queue is sent
        /// on that queue).
        Fabrics = 0x7F,
    }
}

/// Data transfer direction encoded in opcode bits 1:0 (NVMe Base 2.0
/// figure 27): lets a transport decide R2T vs C2HData before it knows the
/// command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataDirection {
    /// No data.
    None,
    /// Host to controller (write-like).
    HostToController,
    /// Controller to host (read-like).
    ControllerToHost,
    /// Bidirectional.
    Bidirectional,
}

impl DataDirection {
    /// Direction for `opcode` from its low two bits. Fabrics commands
    /// (0x7F) encode direction in the fctype instead; use
    /// [`crate::fabrics::FabricsType::direction`].
    pub const fn of_opcode(opcode: u8) -> Self {
        match opcode & 0x3 {
            0 => DataDirection::None,
            1 => DataDirection::HostToController,
            2 => DataDirection::ControllerToHost,
            _ => DataDirection::Bidirectional,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opcode_values() {
        assert_eq!(AdminOpcode::GetLogPage.as_u8(), 0x02);
        assert_eq!(AdminOpcode::Identify.as_u8(), 0x06);
        assert_eq!(AdminOpcode::KeepAlive.as_u8(), 0x18);
        assert_eq!(AdminOpcode::try_from(0x7F), Ok(AdminOpcode::Fabrics));
        assert_eq!(AdminOpcode::try_from(0x03), Err(0x03));
        assert_eq!(IoOpcode::from_u8(0x08), Some(IoOpcode::WriteZeroes));
        for &op in AdminOpcode::ALL {
            assert_eq!(AdminOpcode::from_u8(op.as_u8()), Some(op));
        }
        for &op in IoOpcode::ALL {
            assert_eq!(IoOpcode::from_u8(op.as_u8()), Some(op));
        }
        assert_eq!(
            DataDirection::of_opcode(IoOpcode::Write.as_u8()),
            DataDirection::HostToController
        );
        assert_eq!(
            DataDirection::of_opcode(IoOpcode::Read.as_u8()),
            DataDirection::ControllerToHost
        );
        assert_eq!(
            DataDirection::of_opcode(AdminOpcode::Identify.as_u8()),
            DataDirection::ControllerToHost
        );
    }
}
