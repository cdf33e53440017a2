//! An array's control plane: creating it, its members coming and going,
//! rebuilds, and what `bdev_raid_get_bdevs` reports. Every membership
//! change publishes a new `RaidNode` in place of the old one (same name,
//! same parents and exports) in one graph publication, so an I/O sees the
//! old membership or the new one, never a mix, and the old one drains
//! while the new one already serves I/O.

use std::sync::{Arc, Mutex, MutexGuard};

use super::copy::Copy;
use super::layout::{Layout, LayoutError, Level};
use super::node::{Member, RaidNode, RebuildSlot, Shape};
use super::rebuild::{Fence, Outcome, DEFAULT_WINDOW};
use crate::{Graph, GraphError};

/// Why an array operation was refused. Nothing changed then.
#[derive(Debug, thiserror::Error)]
pub enum RaidError {
    /// The graph refused the change.
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// The members cannot make this array.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// A member does not exist.
    #[error("no bdev named {0:?}")]
    NoSuchBdev(String),
    /// The bdev is not a member of any array.
    #[error("{0:?} is not a member of a RAID array")]
    NotAMember(String),
    /// SPDK's "raid bdev is in process" (-EPERM): one rebuild at a time,
    /// and no other member change while it runs.
    #[error("RAID array {0:?} is rebuilding")]
    InProcess(String),
    /// No empty slot for a new member (-EINVAL in SPDK).
    #[error("no empty slot in RAID array {array:?} for {member:?}")]
    NoEmptySlot {
        /// The array.
        array: String,
        /// The would-be member.
        member: String,
    },
    /// The change would leave the array unable to serve its data.
    #[error("removing {member:?} would leave RAID array {array:?} without its data ({level} has no redundancy left)")]
    LastMember {
        /// The array.
        array: String,
        /// The member.
        member: String,
        /// The level.
        level: &'static str,
    },
    /// A member too small or of another block size.
    #[error("{member:?} cannot be a member of {array:?}: {reason}")]
    Unfit {
        /// The array.
        array: String,
        /// The would-be member.
        member: String,
        /// Why.
        reason: String,
    },
    /// The bdev is already a member of this or another array.
    #[error("{member:?} is already a member of RAID array {array:?}")]
    Claimed {
        /// The array holding it.
        array: String,
        /// The member.
        member: String,
    },
}

/// Rebuild settings (`bdev_raid_set_options`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RaidOptions {
    /// Window size in bytes (SPDK's `process_window_size_kb`).
    pub window: u64,
    /// Copy rate limit in bytes per second, 0 for none
    /// (`process_max_bandwidth_mb_sec`).
    pub max_rate: u64,
}

impl Default for RaidOptions {
    fn default() -> Self {
        RaidOptions {
            window: DEFAULT_WINDOW,
            max_rate: 0,
        }
    }
}

/// One slot as reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotInfo {
    /// The member's name; `None` for an empty slot.
    pub name: Option<String>,
    /// Present, not failed, and fully copied if it was being rebuilt.
    pub configured: bool,
    /// Its I/O failed: the array no longer uses it.
    pub failed: bool,
    /// Bytes of the member the array uses.
    pub data_size: u64,
}

/// A rebuild as reported (SPDK's `process`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    /// The member being copied onto.
    pub target: String,
    /// Bytes copied.
    pub done: u64,
}

/// SPDK's array states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArrayState {
    /// Serving I/O (possibly degraded).
    Online,
    /// Not all members are there yet (never in Pollux: arrays are built
    /// from existing members).
    Configuring,
    /// Every copy of some data is gone.
    Offline,
}

impl ArrayState {
    /// SPDK's name.
    pub fn name(self) -> &'static str {
        match self {
            ArrayState::Online => "online",
            ArrayState::Configuring => "configuring",
            ArrayState::Offline => "offline",
        }
    }
}

/// An array as reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArrayInfo {
    /// Its name.
    pub name: String,
    /// Its level.
    pub level: Level,
    /// Strip in KiB (0 for raid1).
    pub strip_kb: u32,
    /// State.
    pub state: ArrayState,
    /// Block size.
    pub block_size: u32,
    /// Size in blocks.
    pub block_count: u64,
    /// Slots in order.
    pub slots: Vec<SlotInfo>,
    /// The rebuild under way.
    pub process: Option<ProcessInfo>,
}

/// An array: found from its node (`Array::find`).
pub struct Array {
    name: String,
    ctl: Mutex<Ctl>,
}

struct Ctl {
    /// The published membership.
    shape: Arc<Shape>,
}

impl Array {
    /// Builds array `name` of `level` over `members` (in slot order) and adds
    /// it to the graph.
    pub fn create(
        graph: &Arc<Graph>,
        name: &str,
        level: Level,
        strip_kb: u32,
        members: &[&str],
    ) -> Result<Arc<Array>, RaidError> {
        Layout::check_strip(level, strip_kb)?;
        if members.len() < level.min_members() {
            return Err(LayoutError::TooFewMembers {
                level: level.name(),
                min: level.min_members(),
                got: members.len(),
            }
            .into());
        }
        let mut block_size = None;
        let mut sizes = Vec::with_capacity(members.len());
        for (i, m) in members.iter().enumerate() {
            if members[..i].contains(m) {
                return Err(RaidError::Claimed {
                    array: name.into(),
                    member: (*m).into(),
                });
            }
            let g = graph
                .node_geometry(m)
                .ok_or_else(|| RaidError::NoSuchBdev((*m).into()))?;
            match block_size {
                None => block_size = Some(g.block_size),
                Some(bs) if bs != g.block_size => {
                    return Err(LayoutError::BlockSizes(bs, g.block_size).into())
                }
                Some(_) => {}
            }
            if let Some(owner) = member_of(graph, m) {
                return Err(RaidError::Claimed {
                    array: owner,
                    member: (*m).into(),
                });
            }
            sizes.push(g.size());
        }
        let layout = Layout::new(level, strip_kb, block_size.unwrap_or(512), &sizes)?;
        let slots: Vec<Option<Arc<Member>>> = members
            .iter()
            .map(|m| Some(Arc::new(Member::new((*m).into()))))
            .collect();
        let shape = Arc::new(membership(name, layout, slots, None));
        let array = Arc::new(Array {
            name: name.into(),
            ctl: Mutex::new(Ctl {
                shape: shape.clone(),
            }),
        });
        let children = children_of(&shape);
        let children: Vec<&str> = children.iter().map(String::as_str).collect();
        graph.add_node(name, RaidNode::new(shape, array.clone()), &children)?;
        Ok(array)
    }

    /// Puts a RAID1 array `name` above the live node `node`, in one
    /// publication: `node` is its only member, with an empty slot beside
    /// it, and every parent and export of `node` now goes through the
    /// array (`Graph::insert_filter`). `add_member` then mirrors `node`
    /// onto another while I/O goes on; once the array stands on one member
    /// again it can leave the graph as any filter does.
    pub fn insert_above(graph: &Arc<Graph>, node: &str, name: &str) -> Result<Arc<Array>, RaidError> {
        let g = graph
            .node_geometry(node)
            .ok_or_else(|| RaidError::NoSuchBdev(node.into()))?;
        if let Some(owner) = member_of(graph, node) {
            return Err(RaidError::Claimed {
                array: owner,
                member: node.into(),
            });
        }
        // The empty slot takes a member of at least this size.
        let layout = Layout::new(Level::Raid1, 0, g.block_size, &[g.size(), g.size()])?;
        let slots = vec![Some(Arc::new(Member::new(node.into()))), None];
        let shape = Arc::new(membership(name, layout, slots, None));
        let array = Arc::new(Array {
            name: name.into(),
            ctl: Mutex::new(Ctl {
                shape: shape.clone(),
            }),
        });
        graph.insert_filter(node, name, RaidNode::new(shape, array.clone()))?;
        Ok(array)
    }

    /// The array called `name`, if that node is one.
    pub fn find(graph: &Graph, name: &str) -> Option<Arc<Array>> {
        graph.with_node(name, |n: &RaidNode| n.array.clone())
    }

    /// Every array in the graph, by name.
    pub fn all(graph: &Graph) -> Vec<Arc<Array>> {
        graph
            .describe()
            .nodes
            .iter()
            .filter(|n| n.kind == "raid")
            .filter_map(|n| Array::find(graph, &n.name))
            .collect()
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn lock(&self) -> MutexGuard<'_, Ctl> {
        self.ctl.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The published membership, and its layout at the size the graph
    /// publishes for the array (members may have grown it).
    fn current(&self, graph: &Graph, ctl: &Ctl) -> (Arc<Shape>, Layout) {
        let shape = ctl.shape.clone();
        let size = graph
            .node_geometry(&self.name)
            .map_or(shape.layout.size(), |g| g.size());
        let layout = shape.layout.with_size(size.max(shape.layout.size()));
        (shape, layout)
    }

    /// What `bdev_raid_get_bdevs` reports.
    pub fn info(&self, graph: &Graph) -> ArrayInfo {
        let (shape, l) = self.current(graph, &self.lock());
        let l = &l;
        let rebuilding = shape
            .rebuild
            .as_ref()
            .filter(|rb| rb.fence.outcome() == Outcome::Running);
        let slots: Vec<SlotInfo> = shape
            .members
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let failed = m.as_ref().is_some_and(|m| m.is_failed());
                let copying = shape.rebuild.as_ref().is_some_and(|rb| {
                    rb.slot == i && rb.fence.outcome() != Outcome::Done
                });
                SlotInfo {
                    name: m.as_ref().map(|m| m.name.clone()),
                    configured: m.is_some() && !failed && !copying,
                    failed,
                    data_size: l.member_size(i),
                }
            })
            .collect();
        let process = rebuilding.and_then(|rb| {
            Some(ProcessInfo {
                target: shape.members[rb.slot].as_ref()?.name.clone(),
                done: rb.fence.done(),
            })
        });
        let online = match l.level() {
            Level::Raid1 => slots.iter().any(|s| s.configured),
            Level::Raid0 | Level::Concat => slots.iter().all(|s| s.configured),
        };
        ArrayInfo {
            name: self.name.clone(),
            level: l.level(),
            strip_kb: l.strip_kb(),
            state: if online {
                ArrayState::Online
            } else {
                ArrayState::Offline
            },
            block_size: l.block_size(),
            block_count: l.size() / u64::from(l.block_size()),
            slots,
            process,
        }
    }

    /// The members (present slots), in slot order.
    pub fn members(&self) -> Vec<String> {
        self.lock()
            .shape
            .members
            .iter()
            .flatten()
            .map(|m| m.name.clone())
            .collect()
    }

    /// `bdev_raid_remove_base_bdev`: empties `member`'s slot. Only raid1
    /// arrays keep their data without a member, and only while another
    /// member holds all of it. Removing the member a rebuild copies onto
    /// stops the rebuild.
    pub fn remove_member(self: &Arc<Self>, graph: &Arc<Graph>, member: &str) -> Result<(), RaidError> {
        let mut ctl = self.lock();
        let (shape, layout) = self.current(graph, &ctl);
        let slot = shape
            .members
            .iter()
            .position(|m| m.as_ref().is_some_and(|m| m.name == member))
            .ok_or_else(|| RaidError::NotAMember(member.into()))?;
        let level = shape.layout.level();
        let running = shape
            .rebuild
            .as_ref()
            .filter(|rb| rb.fence.outcome() == Outcome::Running);
        let is_target = running.is_some_and(|rb| rb.slot == slot);
        if running.is_some() && !is_target {
            return Err(RaidError::InProcess(self.name.clone()));
        }
        let keeps_data = level == Level::Raid1
            && shape.members.iter().enumerate().any(|(i, m)| {
                i != slot
                    && m.as_ref().is_some_and(|m| !m.is_failed())
                    && !shape.rebuild.as_ref().is_some_and(|rb| {
                        rb.slot == i && rb.fence.outcome() != Outcome::Done
                    })
            });
        if !keeps_data {
            return Err(RaidError::LastMember {
                array: self.name.clone(),
                member: member.into(),
                level: level.name(),
            });
        }
        let mut slots: Vec<Option<Arc<Member>>> = shape.members.to_vec();
        slots[slot] = None;
        // A finished rebuild's target is an ordinary member from now on;
        // a running one's is the member removed.
        let new_shape = Arc::new(membership(&self.name, layout, slots, None));
        let node = RaidNode::new(new_shape.clone(), self.clone());
        let children = children_of(&new_shape);
        let children: Vec<&str> = children.iter().map(String::as_str).collect();
        graph.replace_node(&self.name, node, &children)?;
        if let Some(rb) = running {
            // The old membership drained: its copy can only fail now.
            rb.fence.finish(Outcome::Stopped);
        }
        ctl.shape = new_shape;
        tracing::info!(array = %self.name, member, "RAID member removed");
        Ok(())
    }

    /// `bdev_raid_add_base_bdev`: puts `member` in the first empty (or
    /// failed) slot. A raid1 array then copies its data onto it in the
    /// background while I/O goes on.
    pub fn add_member(
        self: &Arc<Self>,
        graph: &Arc<Graph>,
        member: &str,
        opts: RaidOptions,
    ) -> Result<(), RaidError> {
        let g = graph
            .node_geometry(member)
            .ok_or_else(|| RaidError::NoSuchBdev(member.into()))?;
        // Before taking this array's lock: the look-up visits every array.
        if let Some(owner) = member_of(graph, member) {
            return Err(RaidError::Claimed {
                array: owner,
                member: member.into(),
            });
        }
        let mut ctl = self.lock();
        let (shape, layout) = self.current(graph, &ctl);
        if shape
            .rebuild
            .as_ref()
            .is_some_and(|rb| rb.fence.outcome() == Outcome::Running)
        {
            return Err(RaidError::InProcess(self.name.clone()));
        }
        let slot = shape
            .members
            .iter()
            .position(|m| m.as_ref().is_none_or(|m| m.is_failed()))
            .ok_or_else(|| RaidError::NoEmptySlot {
                array: self.name.clone(),
                member: member.into(),
            })?;
        let l = &layout;
        let unfit = |reason: String| RaidError::Unfit {
            array: self.name.clone(),
            member: member.into(),
            reason,
        };
        if g.block_size != l.block_size() {
            return Err(unfit(format!(
                "{}-byte blocks, the array has {}",
                g.block_size,
                l.block_size()
            )));
        }
        if g.size() < l.member_size(slot) {
            return Err(unfit(format!(
                "{} bytes, the array needs {}",
                g.size(),
                l.member_size(slot)
            )));
        }
        // Only raid1 has a slot to refill: raid0 and concat members can
        // neither be removed nor marked failed (their errors go to the
        // array's I/O, as in SPDK), so they never get here.
        let rebuild = (l.level() == Level::Raid1).then(|| RebuildSlot {
            slot,
            fence: Arc::new(Fence::new(
                l.size(),
                opts.window,
                graph.handle().num_reactors(),
            )),
        });
        let mut slots: Vec<Option<Arc<Member>>> = shape.members.to_vec();
        slots[slot] = Some(Arc::new(Member::new(member.into())));
        let new_shape = Arc::new(membership(&self.name, l.clone(), slots, rebuild.clone()));
        let node = RaidNode::new(new_shape.clone(), self.clone());
        let children = children_of(&new_shape);
        let children: Vec<&str> = children.iter().map(String::as_str).collect();
        graph.replace_node(&self.name, node, &children)?;
        ctl.shape = new_shape.clone();
        tracing::info!(array = %self.name, member, slot, "RAID member added");
        if rebuild.is_some() {
            let link = graph
                .link(&self.name)
                .ok_or_else(|| GraphError::NoSuchNode(self.name.clone()))?;
            let max_rate = opts.max_rate;
            // The copy runs on the first reactor; it moves there with what
            // it needs and lives on its own completions and timers.
            let target = slot;
            graph.handle().send_blocking(0, move |r| {
                Copy::start(r, link, new_shape, target, max_rate);
            });
        }
        Ok(())
    }

    /// `bdev_raid_delete`: stops a rebuild and removes the array.
    pub fn delete(&self, graph: &Graph) -> Result<(), RaidError> {
        let ctl = self.lock();
        graph.remove_node(&self.name)?;
        if let Some(rb) = &ctl.shape.rebuild {
            rb.fence.finish(Outcome::Stopped);
        }
        Ok(())
    }
}

/// The array `bdev` is a member of.
pub fn member_of(graph: &Graph, bdev: &str) -> Option<String> {
    Array::all(graph)
        .into_iter()
        .find(|a| a.members().iter().any(|m| m == bdev))
        .map(|a| a.name.clone())
}

/// The membership of `slots` (children in slot order, empty slots left out).
fn membership(
    name: &str,
    layout: Layout,
    slots: Vec<Option<Arc<Member>>>,
    rebuild: Option<RebuildSlot>,
) -> Shape {
    let mut edge = Vec::with_capacity(slots.len());
    let mut slot_of_edge = Vec::new();
    for (i, m) in slots.iter().enumerate() {
        if m.is_some() {
            edge.push(Some(slot_of_edge.len()));
            slot_of_edge.push(i);
        } else {
            edge.push(None);
        }
    }
    Shape {
        name: name.into(),
        layout,
        members: slots.into(),
        edge: edge.into(),
        slot_of_edge: slot_of_edge.into(),
        rebuild,
    }
}

fn children_of(shape: &Shape) -> Vec<String> {
    shape
        .slot_of_edge
        .iter()
        .filter_map(|&s| shape.members[s].as_ref().map(|m| m.name.clone()))
        .collect()
}
