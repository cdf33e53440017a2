//! The built-in methods, one module per SPDK method family.

pub mod bdev;
mod filters;
mod framework;
mod graph;
mod jobs;
mod log;
mod nvmf;
mod nvmf_query;
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
    // Before graph: filters are replayed last, above the bdevs the
    // controllers attached to.
    vhost::register(d);
    // After bdev, before graph (SPDK's order; filters replayed last).
    nvmf::register(d);
    nvmf_query::register(d);
    graph::register(d);
    jobs::register(d);
}
