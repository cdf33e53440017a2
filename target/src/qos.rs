//! Rate limits on bdevs (SPDK's `bdev_set_qos_limit`) and throttle groups
//! that several bdevs share (QEMU's `throttle-group`).
//!
//! A limited bdev gets a `qos` filter inserted above it, bound to it so
//! that exports attached later go through it too, and removed again when
//! every limit is back to 0. The filter draws from the bdev's own
//! [`Budget`] and, if the bdev is in a group, the group's: an I/O goes
//! down only when both admit it. Changing a limit writes the budget's
//! atomics (reactors see it within a timeslice); changing membership
//! replaces the filter.
//!
//! Limits are kept in SPDK's units: I/Os per second, rounded up to a
//! multiple of 1,000, and MiB per second.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use pollux_graph::nodes::qos::QosNode;
use pollux_graph::throttle::{Budget, RateLimits, KINDS};
use pollux_graph::{Graph, GraphError};

/// SPDK's `SPDK_BDEV_QOS_MIN_IOS_PER_SEC`: I/O limits are multiples of it.
const MIN_IOS_PER_SEC: u64 = 1000;
/// Bandwidth limits are given in MiB per second.
const MIB: u64 = 1 << 20;
/// SPDK's `SPDK_BDEV_QOS_MAX_MBYTES_PER_SEC`: beyond it the byte limit
/// would overflow a u64.
const MAX_MBYTES_PER_SEC: u64 = u64::MAX / MIB;

/// The param names of the four limits, in [`pollux_graph::throttle::LimitKind`]
/// order (SPDK's `qos_rpc_type`).
pub const LIMIT_NAMES: [&str; KINDS] = [
    "rw_ios_per_sec",
    "rw_mbytes_per_sec",
    "r_mbytes_per_sec",
    "w_mbytes_per_sec",
];

/// Limits as the RPCs and the config give them (I/Os per second, MiB per
/// second); `None` leaves a limit as it is, `Some(0)` removes it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LimitUpdate(pub [Option<u64>; KINDS]);

impl LimitUpdate {
    /// True if no limit is given.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(Option::is_none)
    }

    /// `current` (user units) with the given limits replaced, SPDK's
    /// rounding applied.
    fn apply(&self, current: [u64; KINDS]) -> [u64; KINDS] {
        std::array::from_fn(|i| match self.0[i] {
            None => current[i],
            Some(0) => 0,
            Some(v) if i == 0 => v.div_ceil(MIN_IOS_PER_SEC) * MIN_IOS_PER_SEC,
            Some(v) => v.min(MAX_MBYTES_PER_SEC),
        })
    }
}

/// Limits in user units into the budget's units (bytes per second).
fn to_rate(user: [u64; KINDS]) -> RateLimits {
    RateLimits(std::array::from_fn(|i| {
        if i == 0 {
            user[0]
        } else {
            user[i] * MIB
        }
    }))
}

/// Why a QoS change was refused.
#[derive(Debug, thiserror::Error)]
pub enum QosError {
    /// The bdev does not exist.
    #[error("no bdev named {0:?}")]
    NoSuchBdev(String),
    /// The call set nothing.
    #[error("No rate limits specified")]
    NoLimits,
    /// The group does not exist.
    #[error("no throttle group named {0:?}")]
    NoSuchGroup(String),
    /// The group name is taken.
    #[error("throttle group {0:?} already exists")]
    GroupExists(String),
    /// The group still has members.
    #[error("throttle group {0:?} still has members: {1}")]
    GroupInUse(String, String),
    /// A group needs a name.
    #[error("a throttle group needs a non-empty name")]
    EmptyName,
    /// Inserting or removing the filter failed.
    #[error(transparent)]
    Graph(#[from] GraphError),
}

struct Group {
    limits: [u64; KINDS],
    budget: Arc<Budget>,
}

struct BdevQos {
    limits: [u64; KINDS],
    budget: Arc<Budget>,
    group: Option<String>,
}

#[derive(Default)]
struct State {
    groups: BTreeMap<String, Group>,
    bdevs: BTreeMap<String, BdevQos>,
}

/// What `bdev_get_bdevs` and `save_config` report for one bdev.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BdevLimits {
    /// In user units, `LIMIT_NAMES` order.
    pub limits: [u64; KINDS],
    /// The throttle group, if any.
    pub group: Option<String>,
}

/// One throttle group, as `pollux_throttle_group_get` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupInfo {
    /// Its name.
    pub name: String,
    /// In user units, `LIMIT_NAMES` order.
    pub limits: [u64; KINDS],
    /// The bdevs in it.
    pub members: Vec<String>,
}

/// Every rate limit and throttle group of a daemon (control path only: a
/// mutex is fine, the data path reads the budgets' atomics).
#[derive(Default)]
pub struct Qos {
    state: Mutex<State>,
}

/// The filter above `bdev`. Not a bdev name SPDK would make, so it cannot
/// collide with one created through SPDK's methods.
pub fn filter_name(bdev: &str) -> String {
    format!("{bdev}@qos")
}

impl Qos {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `bdev_set_qos_limit`: changes `bdev`'s limits and, if `group` is
    /// given, its group (`Some("")` leaves its group).
    pub fn set_limits(
        &self,
        graph: &Graph,
        bdev: &str,
        update: LimitUpdate,
        group: Option<&str>,
    ) -> Result<(), QosError> {
        if update.is_empty() && group.is_none() {
            return Err(QosError::NoLimits);
        }
        let geometry = graph
            .node_geometry(bdev)
            .ok_or_else(|| QosError::NoSuchBdev(bdev.into()))?;
        let mut st = self.state();
        let group = match group {
            None => st.bdevs.get(bdev).and_then(|b| b.group.clone()),
            Some("") => None,
            Some(g) if st.groups.contains_key(g) => Some(g.to_owned()),
            Some(g) => return Err(QosError::NoSuchGroup(g.into())),
        };
        let old = st.bdevs.get(bdev);
        let limits = update.apply(old.map_or([0; KINDS], |b| b.limits));
        let unlimited = limits.iter().all(|&l| l == 0) && group.is_none();
        let name = filter_name(bdev);
        match old {
            Some(b) if unlimited => {
                // Release whatever the filter holds before it leaves.
                b.budget.set_limits(RateLimits::default());
                graph.remove_filter(&name)?;
                st.bdevs.remove(bdev);
            }
            Some(b) if b.group == group => {
                b.budget.set_limits(to_rate(limits));
                st.bdevs.get_mut(bdev).expect("present").limits = limits;
            }
            None if unlimited => {}
            // A first limit, or a new group: a new filter. For a new group
            // the old filter drains what it holds while the new one takes
            // the next I/O.
            old => {
                let budget = Arc::new(Budget::new(to_rate(limits)));
                let node = QosNode::new(geometry, self.budgets(&st, &budget, group.as_deref()));
                if old.is_some() {
                    graph.remove_filter(&name)?;
                }
                graph.insert_bound_filter(bdev, &name, node)?;
                st.bdevs.insert(
                    bdev.into(),
                    BdevQos {
                        limits,
                        budget,
                        group,
                    },
                );
            }
        }
        Ok(())
    }

    fn budgets(&self, st: &State, own: &Arc<Budget>, group: Option<&str>) -> Vec<Arc<Budget>> {
        let mut v = vec![own.clone()];
        if let Some(g) = group.and_then(|g| st.groups.get(g)) {
            v.push(g.budget.clone());
        }
        v
    }

    /// Drops `bdev`'s limits and filter, before the bdev itself goes.
    /// Refused, changing nothing, while anything stands on the filter: the
    /// bdev is in use then.
    pub fn forget(&self, graph: &Graph, bdev: &str) -> Result<(), QosError> {
        let mut st = self.state();
        if let Some(b) = st.bdevs.get(bdev) {
            let name = filter_name(bdev);
            let info = graph.describe();
            let users: Vec<String> = info
                .nodes
                .iter()
                .filter(|n| n.children.contains(&name))
                .map(|n| format!("node {:?}", n.name))
                .chain(
                    info.roots
                        .iter()
                        .filter(|r| r.node == name)
                        .map(|r| format!("root {:?}", r.name)),
                )
                .collect();
            if !users.is_empty() {
                return Err(GraphError::InUse {
                    name: bdev.into(),
                    users: users.join(", "),
                }
                .into());
            }
            b.budget.set_limits(RateLimits::default());
            graph.remove_filter(&filter_name(bdev))?;
            st.bdevs.remove(bdev);
        }
        Ok(())
    }

    /// `bdev`'s limits (all 0 and no group if it has none).
    pub fn limits_of(&self, bdev: &str) -> BdevLimits {
        let st = self.state();
        match st.bdevs.get(bdev) {
            Some(b) => BdevLimits {
                limits: b.limits,
                group: b.group.clone(),
            },
            None => BdevLimits {
                limits: [0; KINDS],
                group: None,
            },
        }
    }

    /// Every limited bdev, by name.
    pub fn limited_bdevs(&self) -> Vec<(String, BdevLimits)> {
        self.state()
            .bdevs
            .iter()
            .map(|(n, b)| {
                let l = BdevLimits {
                    limits: b.limits,
                    group: b.group.clone(),
                };
                (n.clone(), l)
            })
            .collect()
    }

    /// `pollux_throttle_group_create`.
    pub fn create_group(&self, name: &str, limits: LimitUpdate) -> Result<(), QosError> {
        if name.is_empty() {
            return Err(QosError::EmptyName);
        }
        let mut st = self.state();
        if st.groups.contains_key(name) {
            return Err(QosError::GroupExists(name.into()));
        }
        let limits = limits.apply([0; KINDS]);
        let budget = Arc::new(Budget::new(to_rate(limits)));
        st.groups.insert(name.into(), Group { limits, budget });
        Ok(())
    }

    /// `pollux_throttle_group_set`: the members see it within a timeslice.
    pub fn set_group(&self, name: &str, update: LimitUpdate) -> Result<(), QosError> {
        if update.is_empty() {
            return Err(QosError::NoLimits);
        }
        let mut st = self.state();
        let g = st
            .groups
            .get_mut(name)
            .ok_or_else(|| QosError::NoSuchGroup(name.into()))?;
        g.limits = update.apply(g.limits);
        g.budget.set_limits(to_rate(g.limits));
        Ok(())
    }

    /// `pollux_throttle_group_delete`: only once no bdev is in it.
    pub fn delete_group(&self, name: &str) -> Result<(), QosError> {
        let mut st = self.state();
        if !st.groups.contains_key(name) {
            return Err(QosError::NoSuchGroup(name.into()));
        }
        let members = members(&st, name);
        if !members.is_empty() {
            return Err(QosError::GroupInUse(name.into(), members.join(", ")));
        }
        st.groups.remove(name);
        Ok(())
    }

    /// Every group, by name.
    pub fn groups(&self) -> Vec<GroupInfo> {
        let st = self.state();
        st.groups
            .iter()
            .map(|(name, g)| GroupInfo {
                name: name.clone(),
                limits: g.limits,
                members: members(&st, name),
            })
            .collect()
    }
}

fn members(st: &State, group: &str) -> Vec<String> {
    st.bdevs
        .iter()
        .filter(|(_, b)| b.group.as_deref() == Some(group))
        .map(|(n, _)| n.clone())
        .collect()
}

/// Applies the config's `[[throttle_group]]` and `[[qos]]` entries, after
/// its bdevs are built.
pub fn apply_config(
    qos: &Qos,
    graph: &Graph,
    cfg: &crate::config::QosConfig,
) -> anyhow::Result<()> {
    use anyhow::Context;
    for (name, limits) in &cfg.groups {
        qos.create_group(name, *limits)
            .with_context(|| format!("throttle group {name:?}"))?;
    }
    for l in &cfg.limits {
        qos.set_limits(graph, &l.bdev, l.limits, l.group.as_deref())
            .with_context(|| format!("qos of bdev {:?}", l.bdev))?;
    }
    Ok(())
}
