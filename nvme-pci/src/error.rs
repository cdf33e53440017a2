//! Why a controller could not be attached. Each message is one line that
//! names the device and says what to do about it.

use std::io;

/// Attach failures.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// The address is not a PCI device on this host.
    #[error("nvme {bdf}: no such PCI device; check the address with `lspci -D`")]
    NoDevice {
        /// PCI address.
        bdf: String,
    },
    /// The PCI address is malformed.
    #[error(
        "nvme {bdf}: not a PCI address; write it as DOMAIN:BUS:DEVICE.FUNCTION, e.g. 0000:00:02.0"
    )]
    BadAddress {
        /// What was given.
        bdf: String,
    },
    /// Another driver (or none) owns the device.
    #[error(
        "nvme {bdf}: bound to {}, not vfio-pci; bind it to vfio-pci first \
         (echo vfio-pci > /sys/bus/pci/devices/{bdf}/driver_override; \
         echo {bdf} > /sys/bus/pci/drivers_probe)",
        .driver.as_deref().unwrap_or("no driver")
    )]
    NotVfio {
        /// PCI address.
        bdf: String,
        /// The driver it is bound to, if any.
        driver: Option<String>,
    },
    /// The device sits behind no IOMMU (or only VFIO's no-IOMMU mode).
    #[error(
        "nvme {bdf}: no IOMMU for this device; enable it (intel_iommu=on or amd_iommu=on \
         on the kernel command line, VT-d/AMD-Vi in the firmware)"
    )]
    NoIommu {
        /// PCI address.
        bdf: String,
    },
    /// Other devices of the IOMMU group are still bound to host drivers.
    #[error(
        "nvme {bdf}: IOMMU group {group} is not viable; bind every device in it to vfio-pci \
         or unbind it ({})",
        .members.join(" ")
    )]
    GroupNotViable {
        /// PCI address.
        bdf: String,
        /// The group.
        group: u32,
        /// The devices in the group.
        members: Vec<String>,
    },
    /// The controller did not report ready (or not-ready) in CAP.TO.
    #[error(
        "nvme {bdf}: controller did not become {state} within {ms} ms (CSTS {csts:#x}); \
         reset the device (echo 1 > /sys/bus/pci/devices/{bdf}/reset) and check it is healthy"
    )]
    NotReady {
        /// PCI address.
        bdf: String,
        /// "ready" or "disabled".
        state: &'static str,
        /// The timeout waited.
        ms: u128,
        /// The last CSTS read.
        csts: u32,
    },
    /// A VFIO or system call failed.
    #[error("nvme {bdf}: {what}: {source}")]
    Os {
        /// PCI address.
        bdf: String,
        /// What was being done.
        what: &'static str,
        /// Why it failed.
        source: io::Error,
    },
    /// The controller misbehaved or refused an admin command.
    #[error("nvme {bdf}: {what}; the device is not usable as an NVMe SSD")]
    Controller {
        /// PCI address.
        bdf: String,
        /// What went wrong.
        what: String,
    },
}
