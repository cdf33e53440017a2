//! Block job methods (QEMU's blockdev-mirror, query-jobs, job-complete and
//! job-cancel, under Pollux names: SPDK has no jobs): `pollux_mirror_start`,
//! `pollux_job_list`, `pollux_job_complete`, `pollux_job_cancel`.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::jobs::{JobError, JobState, MirrorJob};
use crate::rpc::jsonrpc::{code, params, NoParams, RpcError};
use crate::rpc::Dispatcher;

pub(super) fn register(d: &mut Dispatcher) {
    d.register("pollux_mirror_start", pollux_mirror_start);
    d.register("pollux_job_list", pollux_job_list);
    d.register("pollux_job_complete", pollux_job_complete);
    d.register("pollux_job_cancel", pollux_job_cancel);
    // Last: a job stands on bdevs, exports and filters.
    d.register_subsystem(crate::rpc::Subsystem {
        name: "pollux_jobs",
        depends_on: &["bdev", "pollux_graph"],
        writer: save_jobs,
    });
}

/// Mirrors still copying or ready, as the `pollux_mirror_start` calls that
/// start them again (a replayed job copies from scratch, as QEMU's does
/// after a restart); finished and failed jobs have nothing to restart.
fn save_jobs(d: &Dispatcher) -> Vec<Value> {
    d.ctx
        .jobs
        .list()
        .iter()
        .filter(|j| matches!(j.state(), JobState::Running | JobState::Ready))
        .map(|j| {
            json!({"method": "pollux_mirror_start", "params": {
                "job": j.name(), "source": j.source(), "target": j.target(),
                "granularity": j.granularity(),
            }})
        })
        .collect()
}

/// Starts the config's `[[mirror]]` jobs, as `pollux_mirror_start` would.
pub fn start_config_mirrors(
    d: &Dispatcher,
    mirrors: &[crate::config::MirrorConfig],
) -> Result<(), String> {
    for m in mirrors {
        let mut p = json!({"job": m.job, "source": m.source, "target": m.target});
        if let Some(g) = m.granularity {
            p["granularity"] = json!(g);
        }
        pollux_mirror_start(d, Some(p))
            .map_err(|e| format!("[[mirror]] {}: {}", m.job, e.message))?;
    }
    Ok(())
}

/// A job refused, as the job methods answer it: the caller's mistakes are
/// -32602, a pivot the target could not make -32603, graph refusals as the
/// bdev methods answer them.
impl From<JobError> for RpcError {
    fn from(e: JobError) -> Self {
        match e {
            JobError::Graph(g) => g.into(),
            JobError::Mirror(_) => RpcError {
                code: code::INTERNAL_ERROR,
                message: e.to_string(),
            },
            JobError::NoSuchJob(_)
            | JobError::JobExists(_)
            | JobError::BadState { .. }
            | JobError::Invalid(_) => RpcError::invalid_params(e.to_string()),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MirrorStart {
    job: String,
    source: String,
    target: String,
    /// Bytes per dirty bit.
    granularity: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JobName {
    job: String,
}

fn pollux_mirror_start(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let p: MirrorStart = params(p)?;
    let jobs = &d.ctx.jobs;
    jobs.check_free(&p.job)?;
    for n in [&p.source, &p.target] {
        if jobs.uses(n) {
            return Err(JobError::Invalid(format!("{n:?} is used by another job")).into());
        }
    }
    // Spread copiers over the reactors, one job after another.
    let reactor = jobs.list().len() % d.ctx.handle.num_reactors().max(1);
    let job = MirrorJob::start(
        &d.ctx.graph,
        &p.job,
        &p.source,
        &p.target,
        p.granularity
            .unwrap_or(crate::jobs::mirror_default_granularity()),
        reactor,
    )?;
    if let Err(e) = jobs.insert(job.clone()) {
        // Lost a race for the name: undo.
        let _ = job.cancel();
        return Err(e.into());
    }
    Ok(json!(true))
}

fn describe(j: &MirrorJob) -> Value {
    let state = j.state();
    let (done, total) = j.progress();
    let mut v = json!({
        "job": j.name(),
        "type": "mirror",
        "state": state.name(),
        "source": j.source(),
        "target": j.target(),
        "granularity": j.granularity(),
        "bytes_done": done,
        "bytes_total": total,
    });
    if let Some(e) = j.error() {
        if matches!(state, JobState::Failed | JobState::Ready) {
            v["error"] = json!(e);
        }
    }
    v
}

fn pollux_job_list(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let NoParams {} = params(p)?;
    Ok(Value::Array(
        d.ctx.jobs.list().iter().map(|j| describe(j)).collect(),
    ))
}

fn pollux_job_complete(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let p: JobName = params(p)?;
    d.ctx.jobs.get(&p.job)?.complete(|source, target| {
        if let Some(n) = &d.ctx.nvmf {
            n.rename_bdev(source, target);
        }
        if let Some(v) = &d.ctx.vhost {
            v.rename_bdev(source, target);
        }
    })?;
    Ok(json!(true))
}

fn pollux_job_cancel(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    let p: JobName = params(p)?;
    d.ctx.jobs.get(&p.job)?.cancel()?;
    Ok(json!(true))
}
