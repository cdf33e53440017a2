//! The built-in methods, one module per SPDK method family.

pub mod bdev;
mod bdev_nvme;
mod filters;
mod framework;
mod graph;
pub mod jobs;
mod keyring;
mod log;
mod nvmf;
mod nvmf_auth;
mod nvmf_paths;
mod nvmf_query;
pub mod qos;
mod raid;
mod resize;
mod thread;
mod vhost;

use super::Dispatcher;

pub(super) fn register_all(d: &mut Dispatcher) {
    framework::register(d);
    log::register(d);
    thread::register(d);
    bdev::register(d);
    resize::register(d);
    filters::register(d);
    qos::register(d);
    bdev_nvme::register(d);
    raid::register(d);
    // Before graph: filters are replayed last, above the bdevs the
    // controllers attached to.
    vhost::register(d);
    // Before nvmf: hosts name their DH-HMAC-CHAP keys.
    keyring::register(d);
    // After bdev, before graph (SPDK's order; filters replayed last).
    nvmf::register(d);
    nvmf_query::register(d);
    nvmf_paths::register(d);
    nvmf_auth::register(d);
    graph::register(d);
    jobs::register(d);
}
