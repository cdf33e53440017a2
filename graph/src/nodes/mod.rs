//! The node kinds Pollux ships.

pub mod delay;
pub mod error;
pub mod file;
pub mod null;
pub mod passthru;
pub mod mirror;
pub mod qos;
pub mod raid;
pub mod ram;
pub mod split;
