//! Block jobs (QEMU's job model): long-running graph operations the control
//! plane starts, watches and ends. Today the one kind is the mirror
//! (`mirror`), QEMU's blockdev-mirror.
//!
//! A job's states, as `pollux_job_list` reports them:
//!
//! ```text
//! running ──in sync──▶ ready ──complete──▶ (pivoting) ──▶ completed
//!    │                  │  ▲                    │
//!    │                  │  └──pivot refused─────┘
//!    ├──copy error──▶ failed
//!    └──cancel (from running, ready or failed)──▶ cancelled
//! ```
//!
//! Finished jobs (completed, cancelled) stay listed, as QEMU's concluded
//! jobs do, until a new job takes the name.

mod mirror;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

pub use mirror::MirrorJob;

/// The granularities a mirror can take: a power of two from the smallest
/// block size to QEMU's limit (the source's block size is checked when the
/// job starts).
pub const MIRROR_MIN_GRANULARITY: u64 = 512;
pub const MIRROR_MAX_GRANULARITY: u64 = mirror::MAX_GRANULARITY;

/// Bytes per dirty bit when `pollux_mirror_start` names none.
pub fn mirror_default_granularity() -> u64 {
    mirror::DEFAULT_GRANULARITY
}

/// A job's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobState {
    /// Copying; not yet in sync.
    Running,
    /// In sync at least once: `complete` may pivot.
    Ready,
    /// `complete` is pivoting.
    Pivoting,
    /// Pivoted: the target took the source's place.
    Completed,
    /// Stopped by `cancel`: the source kept its place.
    Cancelled,
    /// Stopped by an error; `cancel` removes what is left.
    Failed,
}

impl JobState {
    /// The name `pollux_job_list` shows.
    pub fn name(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Ready => "ready",
            JobState::Pivoting => "pivoting",
            JobState::Completed => "completed",
            JobState::Cancelled => "cancelled",
            JobState::Failed => "failed",
        }
    }

    /// Completed or cancelled: nothing of the job is left in the graph.
    pub fn is_finished(self) -> bool {
        matches!(self, JobState::Completed | JobState::Cancelled)
    }
}

/// Why a job request was refused.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// No job by that name.
    #[error("no job named {0:?}")]
    NoSuchJob(String),
    /// A job with this name is still active.
    #[error("a job named {0:?} is active")]
    JobExists(String),
    /// The request does not fit the job's state.
    #[error("job {job:?} is {state}: {wanted}")]
    BadState {
        /// The job.
        job: String,
        /// Its state.
        state: &'static str,
        /// What the request needed.
        wanted: &'static str,
    },
    /// The parameters cannot make a job.
    #[error("{0}")]
    Invalid(String),
    /// The graph refused a change.
    #[error(transparent)]
    Graph(#[from] pollux_graph::GraphError),
    /// The mirror could not pivot.
    #[error(transparent)]
    Mirror(#[from] pollux_graph::nodes::mirror::MirrorError),
}

/// The jobs of a daemon, by name.
#[derive(Default)]
pub struct Jobs {
    jobs: Mutex<BTreeMap<String, Arc<MirrorJob>>>,
}

impl Jobs {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Arc<MirrorJob>>> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers `job` under its name, unless an active job has it.
    pub fn insert(&self, job: Arc<MirrorJob>) -> Result<(), JobError> {
        let mut jobs = self.lock();
        if let Some(j) = jobs.get(job.name()) {
            if !j.state().is_finished() {
                return Err(JobError::JobExists(job.name().into()));
            }
        }
        jobs.insert(job.name().into(), job);
        Ok(())
    }

    /// Reserves `name` for a job about to start (checked again at insert).
    pub fn check_free(&self, name: &str) -> Result<(), JobError> {
        match self.lock().get(name) {
            Some(j) if !j.state().is_finished() => Err(JobError::JobExists(name.into())),
            _ => Ok(()),
        }
    }

    /// The job called `name`.
    pub fn get(&self, name: &str) -> Result<Arc<MirrorJob>, JobError> {
        self.lock()
            .get(name)
            .cloned()
            .ok_or_else(|| JobError::NoSuchJob(name.into()))
    }

    /// Every job, by name.
    pub fn list(&self) -> Vec<Arc<MirrorJob>> {
        self.lock().values().cloned().collect()
    }

    /// Whether an active job uses node `name` (as source or target).
    pub fn uses(&self, name: &str) -> bool {
        self.user(name).is_some()
    }

    /// The active job that uses node `name`, and as what (`"source"` or
    /// `"target"`).
    pub fn user(&self, name: &str) -> Option<(String, &'static str)> {
        self.lock().values().find_map(|j| {
            let role = if j.source() == name {
                "source"
            } else if j.target() == name {
                "target"
            } else {
                return None;
            };
            (!j.state().is_finished()).then(|| (j.name().to_owned(), role))
        })
    }
}
