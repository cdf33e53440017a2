//! The node kinds Pollux ships.

pub mod file;
pub mod null;
pub mod passthru;
pub mod qos;
pub mod ram;
