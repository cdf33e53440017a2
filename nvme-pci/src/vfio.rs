//! Opening a PCI function through VFIO: the checks that give each failure
//! its own message, the container and device from `vfio-ioctls`, bus
//! mastering and the BAR0 mapping.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use vfio_ioctls::{VfioContainer, VfioDevice, VfioError, VfioOps};

use crate::dma::{Iommu, VfioIommu};
use crate::error::AttachError;
use crate::mmio::Bar;

/// Where the kernel lists PCI devices.
const SYSFS_PCI: &str = "/sys/bus/pci/devices";

/// VFIO region index of PCI config space (`VFIO_PCI_CONFIG_REGION_INDEX`).
const CONFIG_REGION: u32 = 7;
/// VFIO region index of BAR0.
const BAR0_REGION: u32 = 0;
/// `VFIO_REGION_INFO_FLAG_MMAP`: the region can be mmapped.
const REGION_MMAP: u32 = 1 << 2;
/// PCI command register offset in config space.
const PCI_COMMAND: u64 = 0x04;
/// Memory space enable, bus master enable, INTx disable: the controller
/// decodes BAR0 and may DMA; the driver polls, so no legacy interrupt.
const PCI_COMMAND_BITS: u16 = (1 << 1) | (1 << 2) | (1 << 10);

/// An opened controller function.
pub struct PciFunction {
    /// The PCI address.
    pub bdf: String,
    /// BAR0, mapped.
    pub bar: Bar,
    /// The IOMMU domain DMA memory is registered in.
    pub iommu: Arc<dyn Iommu>,
    /// The device's NUMA node, if the platform reports one.
    pub numa_node: Option<u32>,
    /// Kept open for the life of the controller (and dropped after `bar`);
    /// none for the software device of `sim`.
    _device: Option<VfioDevice>,
}

impl PciFunction {
    /// A function with no hardware behind it: BAR0 is plain memory and DMA
    /// needs no IOMMU. For `sim`, which plays the device.
    pub(crate) fn simulated(bar_len: usize) -> io::Result<PciFunction> {
        Ok(PciFunction {
            bdf: "0000:00:00.0".into(),
            bar: Bar::anonymous(bar_len)?,
            iommu: Arc::new(crate::dma::NoIommu),
            numa_node: None,
            _device: None,
        })
    }
}

/// Checks a PCI address's shape: DDDD:BB:DD.F in hex.
pub fn valid_bdf(bdf: &str) -> bool {
    let b = bdf.as_bytes();
    b.len() == 12
        && b[4] == b':'
        && b[7] == b':'
        && b[10] == b'.'
        && b.iter()
            .enumerate()
            .all(|(i, c)| matches!(i, 4 | 7 | 10) || c.is_ascii_hexdigit())
}

fn link_name(p: &Path) -> Option<String> {
    let t = std::fs::read_link(p).ok()?;
    Some(t.file_name()?.to_string_lossy().into_owned())
}

/// The device's NUMA node from sysfs (-1, absent or unreadable: none).
pub fn numa_node(dev: &Path) -> Option<u32> {
    let s = std::fs::read_to_string(dev.join("numa_node")).ok()?;
    s.trim()
        .parse::<i64>()
        .ok()
        .and_then(|n| u32::try_from(n).ok())
}

/// Opens `bdf`: it must be bound to vfio-pci, behind an IOMMU, in a viable
/// group.
pub fn open(bdf: &str) -> Result<PciFunction, AttachError> {
    let bdf = bdf.to_ascii_lowercase();
    if !valid_bdf(&bdf) {
        return Err(AttachError::BadAddress { bdf });
    }
    let dev: PathBuf = Path::new(SYSFS_PCI).join(&bdf);
    if !dev.exists() {
        return Err(AttachError::NoDevice { bdf });
    }
    let driver = link_name(&dev.join("driver"));
    if driver.as_deref() != Some("vfio-pci") {
        return Err(AttachError::NotVfio { bdf, driver });
    }
    let Some(group) = link_name(&dev.join("iommu_group")).and_then(|g| g.parse::<u32>().ok())
    else {
        return Err(AttachError::NoIommu { bdf });
    };
    // VFIO's no-IOMMU mode names the group file noiommu-N: no translation,
    // so IOVA = VA DMA would hit random physical memory. Refuse it.
    if !Path::new("/dev/vfio").join(group.to_string()).exists() {
        return Err(AttachError::NoIommu { bdf });
    }
    let os = |what: &'static str, bdf: &str| {
        let bdf = bdf.to_owned();
        move |e: VfioError| AttachError::Os {
            bdf,
            what,
            source: io::Error::other(e),
        }
    };
    let container =
        Arc::new(VfioContainer::new(None).map_err(os("cannot open the VFIO container", &bdf))?);
    let ops: Arc<dyn VfioOps> = container.clone();
    let device = VfioDevice::new(&dev, ops, false).map_err(|e| match e {
        VfioError::GroupViable => AttachError::GroupNotViable {
            bdf: bdf.clone(),
            group,
            members: group_members(group),
        },
        e => os("cannot open the VFIO device", &bdf)(e),
    })?;

    let mut cmd = [0u8; 2];
    device.region_read(CONFIG_REGION, &mut cmd, PCI_COMMAND);
    let cmd = u16::from_le_bytes(cmd) | PCI_COMMAND_BITS;
    device.region_write(CONFIG_REGION, &cmd.to_le_bytes(), PCI_COMMAND);

    if device.get_region_flags(BAR0_REGION) & REGION_MMAP == 0 {
        return Err(AttachError::Controller {
            bdf,
            what: "BAR0 cannot be memory-mapped".into(),
        });
    }
    let size = usize::try_from(device.get_region_size(BAR0_REGION)).unwrap_or(0);
    let offset = device.get_region_offset(BAR0_REGION);
    let bar = {
        use std::os::fd::AsRawFd;
        Bar::map(device.as_raw_fd(), offset, size).map_err(|source| AttachError::Os {
            bdf: bdf.clone(),
            what: "cannot map BAR0",
            source,
        })?
    };
    Ok(PciFunction {
        numa_node: numa_node(&dev),
        bdf,
        bar,
        iommu: Arc::new(VfioIommu(container)),
        _device: Some(device),
    })
}

fn group_members(group: u32) -> Vec<String> {
    let dir = format!("/sys/kernel/iommu_groups/{group}/devices");
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let drv = link_name(&e.path().join("driver")).unwrap_or_else(|| "none".into());
            format!("{name}={drv}")
        })
        .collect();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_addresses() {
        assert!(valid_bdf("0000:00:02.0"));
        assert!(valid_bdf("0000:af:1f.7"));
        assert!(!valid_bdf("00:02.0"));
        assert!(!valid_bdf("0000:00:02:0"));
        assert!(!valid_bdf("0000:0g:02.0"));
    }

    #[test]
    fn a_missing_device_says_so() {
        let e = open("ffff:ff:1f.7").err().unwrap();
        assert!(matches!(e, AttachError::NoDevice { .. }), "{e}");
        assert!(e
            .to_string()
            .starts_with("nvme ffff:ff:1f.7: no such PCI device"));
    }
}
