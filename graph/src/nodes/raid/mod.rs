//! `raid`: arrays of member nodes, SPDK's raid0, raid1 and concat.
//!
//! Rooms: `layout` (where the array's bytes live on the members),
//! `rebuild` (the copy onto a new RAID1 member and the fence that orders it
//! against array writes).

pub mod layout;
pub mod rebuild;

pub use layout::{Extent, Layout, LayoutError, Level};
