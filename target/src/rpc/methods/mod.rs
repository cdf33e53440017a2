//! The built-in methods, one module per SPDK method family.

pub mod bdev;
mod framework;
mod graph;

use super::Dispatcher;

pub(super) fn register_all(d: &mut Dispatcher) {
    framework::register(d);
    bdev::register(d);
    graph::register(d);
}
