//! The mirror job: inserts a `mirror` filter above the source, runs its
//! copier, and on `complete` pivots every export of the source to the
//! target in one graph publication.

use std::sync::{Arc, Mutex};

use pollux_graph::nodes::mirror::Mirror;
use pollux_graph::Graph;

use super::{JobError, JobState};

/// Largest granularity: QEMU's limit for blockdev-mirror (64 MiB); a bit
/// per region of that size is coarse enough for any device.
pub const MAX_GRANULARITY: u64 = 64 << 20;
/// QEMU's default granularity when the target has no cluster size.
pub const DEFAULT_GRANULARITY: u64 = 64 << 10;

/// One mirror job.
pub struct MirrorJob {
    name: String,
    source: String,
    target: String,
    filter: String,
    granularity: u64,
    graph: Arc<Graph>,
    mirror: Arc<Mirror>,
    state: Mutex<JobState>,
    /// Why the job failed, or why the last pivot was refused.
    error: Mutex<Option<String>>,
}

impl MirrorJob {
    /// Starts mirroring `source` onto `target` (same size and block size,
    /// unused by anything else), `granularity` bytes per dirty bit.
    pub fn start(
        graph: &Arc<Graph>,
        name: &str,
        source: &str,
        target: &str,
        granularity: u64,
        copier_reactor: usize,
    ) -> Result<Arc<MirrorJob>, JobError> {
        if name.is_empty() {
            return Err(JobError::Invalid("job: must not be empty".into()));
        }
        if source == target {
            return Err(JobError::Invalid(
                "source and target must be different bdevs".into(),
            ));
        }
        let (src_geo, dst_geo) = match (graph.node_geometry(source), graph.node_geometry(target)) {
            (Some(s), Some(t)) => (s, t),
            (None, _) => return Err(pollux_graph::GraphError::NoSuchNode(source.into()).into()),
            (_, None) => return Err(pollux_graph::GraphError::NoSuchNode(target.into()).into()),
        };
        if (src_geo.block_size, src_geo.block_count) != (dst_geo.block_size, dst_geo.block_count) {
            return Err(JobError::Invalid(format!(
                "target {target:?} ({} blocks of {}) must have the size and block size of source {source:?} ({} blocks of {})",
                dst_geo.block_count, dst_geo.block_size, src_geo.block_count, src_geo.block_size
            )));
        }
        if !granularity.is_power_of_two()
            || granularity < u64::from(src_geo.block_size)
            || granularity > MAX_GRANULARITY
        {
            return Err(JobError::Invalid(format!(
                "granularity: {granularity} is not a power of two between the block size {} and {MAX_GRANULARITY}",
                src_geo.block_size
            )));
        }
        // The target is written by the copier only: anything else using it
        // would see a half-copied device, and write under the copy.
        let info = graph.describe();
        let target_users: Vec<String> = info
            .nodes
            .iter()
            .filter(|n| n.children.iter().any(|c| c == target))
            .map(|n| format!("node {:?}", n.name))
            .chain(
                info.roots
                    .iter()
                    .filter(|r| r.node == target)
                    .map(|r| format!("root {:?}", r.name)),
            )
            .collect();
        if !target_users.is_empty() {
            return Err(pollux_graph::GraphError::InUse {
                name: target.into(),
                users: target_users.join(", "),
            }
            .into());
        }
        let (src_id, dst_id) = graph.read(|s| (s.node_id(source), s.node_id(target)));
        let (Some(src_id), Some(dst_id)) = (src_id, dst_id) else {
            return Err(pollux_graph::GraphError::NoSuchNode(source.into()).into());
        };
        let mirror = Mirror::new(graph, src_geo, granularity, copier_reactor);
        let filter = format!("mirror:{name}");
        graph.insert_filter_with(source, &filter, mirror.node(), &[target])?;
        // The ids were read before the insertion: had a node of either name
        // been replaced meanwhile, the filter would copy between the wrong
        // nodes.
        let (s2, t2) = graph.read(|s| (s.node_id(source), s.node_id(target)));
        if (s2, t2) != (Some(src_id), Some(dst_id)) {
            let _ = graph.redirect_node(&filter, source, || Ok(()));
            return Err(JobError::Invalid(
                "source or target was replaced while the job started".into(),
            ));
        }
        let Some(link) = graph.link(&filter) else {
            return Err(JobError::Invalid(
                "the mirror filter left the graph while the job started".into(),
            ));
        };
        mirror.start_copier(link);
        tracing::info!(
            job = name,
            source,
            target,
            granularity,
            "mirror job started"
        );
        Ok(Arc::new(MirrorJob {
            name: name.into(),
            source: source.into(),
            target: target.into(),
            filter,
            granularity,
            graph: graph.clone(),
            mirror,
            state: Mutex::new(JobState::Running),
            error: Mutex::new(None),
        }))
    }

    /// The job's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The mirrored node.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The node it is copied to.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Bytes per dirty bit.
    pub fn granularity(&self) -> u64 {
        self.granularity
    }

    /// The error that failed the job, or that refused its last pivot.
    pub fn error(&self) -> Option<String> {
        self.error.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn state_lock(&self) -> std::sync::MutexGuard<'_, JobState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state now: a running job whose copy caught up is ready, one
    /// whose copier failed is failed.
    pub fn state(&self) -> JobState {
        let mut st = self.state_lock();
        if matches!(*st, JobState::Running | JobState::Ready) {
            if let Some(e) = self.mirror.error() {
                *self.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                *st = JobState::Failed;
            } else if *st == JobState::Running && self.mirror.ready() {
                tracing::info!(job = %self.name, "mirror job ready");
                *st = JobState::Ready;
            }
        }
        *st
    }

    /// Bytes copied, and bytes copied plus what is dirty now (QEMU's
    /// current and total progress). A completed job is done: both equal.
    pub fn progress(&self) -> (u64, u64) {
        let (copied, dirty) = self.mirror.progress();
        (copied, copied + dirty)
    }

    /// Pivots: holds new writes, lets the copy finish what is in flight,
    /// flushes the target, then points every parent and root of the source
    /// (through the filter) at the target in one publication, and sends the
    /// held writes there. The source stays in the graph, unused.
    /// `pivoted(source, target)` then tells the front-ends which bdev their
    /// exports now stand on.
    pub fn complete(&self, pivoted: impl FnOnce(&str, &str)) -> Result<(), JobError> {
        self.state();
        {
            let mut st = self.state_lock();
            if *st != JobState::Ready {
                return Err(JobError::BadState {
                    job: self.name.clone(),
                    state: st.name(),
                    wanted: "only a ready job can complete",
                });
            }
            *st = JobState::Pivoting;
        }
        let result = self.mirror.freeze().map_err(JobError::from).and_then(|()| {
            self.graph
                .redirect_node(&self.filter, &self.target, || {
                    self.mirror.release_to_target();
                    Ok(())
                })
                .map_err(|e| {
                    // The old graph is back: writes flow through the filter.
                    self.mirror.thaw();
                    JobError::from(e)
                })
        });
        let mut st = self.state_lock();
        match result {
            Ok(()) => {
                *st = JobState::Completed;
                drop(st);
                self.mirror.forget();
                pivoted(&self.source, &self.target);
                tracing::info!(job = %self.name, target = %self.target, "mirror job completed: pivoted");
                Ok(())
            }
            Err(e) => {
                *st = JobState::Ready;
                *self.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                tracing::warn!(job = %self.name, error = %e, "mirror pivot refused");
                Err(e)
            }
        }
    }

    /// Stops the copier and removes the filter: the source keeps its place,
    /// the target keeps what was copied.
    pub fn cancel(&self) -> Result<(), JobError> {
        let mut st = self.state_lock();
        match *st {
            JobState::Running | JobState::Ready | JobState::Failed => {}
            other => {
                return Err(JobError::BadState {
                    job: self.name.clone(),
                    state: other.name(),
                    wanted: "only a running, ready or failed job can be cancelled",
                })
            }
        }
        self.mirror.stop_copier();
        self.graph
            .redirect_node(&self.filter, &self.source, || Ok(()))?;
        self.mirror.forget();
        *st = JobState::Cancelled;
        tracing::info!(job = %self.name, "mirror job cancelled");
        Ok(())
    }
}
