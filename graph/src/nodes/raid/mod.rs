//! `raid`: arrays of member nodes, SPDK's raid0, raid1 and concat.
//!
//! Rooms: `layout` (where the array's bytes live on the members), `node`
//! (the data path of one membership: splitting, mirroring, read retry,
//! failure marks), `rebuild` (the fence that orders a RAID1 rebuild's copy
//! against array writes), `copy` (the copy itself, on a reactor), `array`
//! (the control plane: create, add and remove members, what is reported).

mod array;
mod copy;
pub mod layout;
mod node;
pub mod rebuild;

pub use array::{
    member_of, Array, ArrayInfo, ArrayState, ProcessInfo, RaidError, RaidOptions, SlotInfo,
};
pub use layout::{Extent, Layout, LayoutError, Level};
pub use node::{RaidChannel, RaidNode};
