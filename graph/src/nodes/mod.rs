//! The node kinds Pollux ships.

pub mod file;
pub mod null;
pub mod passthru;
pub mod mirror;
pub mod ram;
