//! A userspace NVMe PCIe driver over VFIO, polled by the reactors.
//!
//! Rooms: `vfio` (opening the PCI function: the checks behind each attach
//! error, the container and device from `vfio-ioctls`, BAR0), `mmio` and
//! `dma` (the only unsafe code: register access, and DMA memory mapped at
//! IOVA = VA), `regs` (register layout), `queue` (rings, phase tags,
//! doorbells, CIDs; the device is checked, never trusted), `prp` (PRP
//! lists and SGLs), `ctrl` (bring-up, the admin queue, health, shutdown),
//! `qpair` (one reactor's I/O queue pair), `node` (the namespace as a
//! graph leaf), `error`.

mod ctrl;
pub mod dma;
mod error;
mod mmio;
mod node;
pub mod prp;
mod qpair;
pub mod queue;
mod regs;
pub mod sim;
mod vfio;

use std::sync::Arc;

pub use ctrl::{Controller, CtrlInfo, CtrlOpts, Namespace, QpStats, DEFAULT_IO_QUEUE_DEPTH};
pub use error::AttachError;
pub use node::{NvmeChannel, NvmeNamespace};
pub use vfio::valid_bdf as is_pci_address;

/// An attached controller and its namespace nodes with their bdev names.
pub type Attached = (Arc<Controller>, Vec<(String, NvmeNamespace)>);

/// Attaches the controller at `bdf` as `name` with one I/O queue pair for
/// each of `reactors`, and returns it with its namespaces as graph nodes
/// named `{name}n{nsid}` (SPDK's bdev names).
pub fn attach(
    name: &str,
    bdf: &str,
    opts: CtrlOpts,
    reactors: usize,
) -> Result<Attached, AttachError> {
    let queues = u16::try_from(reactors).unwrap_or(u16::MAX).max(1);
    let ctrl = Controller::attach(name, bdf, opts, queues)?;
    let nodes = ctrl
        .namespaces()
        .iter()
        .map(|ns| {
            (
                format!("{name}n{}", ns.nsid),
                NvmeNamespace::new(ctrl.clone(), *ns),
            )
        })
        .collect();
    Ok((ctrl, nodes))
}
