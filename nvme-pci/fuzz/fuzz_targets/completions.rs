//! A hostile NVMe device: completion entries with any CID, SQ head and
//! status against the driver's queue pair; the body lives in
//! `pollux_nvme_pci::sim::fuzz_completions`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pollux_nvme_pci::sim::fuzz_completions(data);
});
