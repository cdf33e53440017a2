//! `thread_get_stats`: SPDK's lightweight threads are Pollux's reactors
//! (one per core), so each reactor is reported as the one thread it runs,
//! named and numbered as `framework_get_reactors` lists it.

use serde_json::{json, Value};

use crate::rpc::jsonrpc::RpcError;
use crate::rpc::Dispatcher;

pub(super) fn register(d: &mut Dispatcher) {
    d.register("thread_get_stats", thread_get_stats);
}

fn thread_get_stats(d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    if p.is_some() {
        // SPDK refuses any params, even `{}`.
        return Err(RpcError::invalid_params(
            "'thread_get_stats' requires no arguments",
        ));
    }
    let h = &d.ctx.handle;
    let threads: Vec<Value> = h
        .reactors()
        .iter()
        .map(|r| {
            // Counted on the reactor itself, between its callbacks.
            let (pollers, timers) = h.call(r.index, |r| (r.num_pollers(), r.num_timers()));
            let s = h.stats(r.index);
            json!({
                "name": format!("reactor_{}", r.core),
                "id": r.index + 1,
                "cpumask": format!("{:x}", 1u128 << (r.core % 128)),
                "busy": s.busy_ns,
                "idle": s.idle_ns,
                "active_pollers_count": pollers,
                "timed_pollers_count": timers,
                // Pollux has no paused pollers: a poller runs or is removed.
                "paused_pollers_count": 0,
            })
        })
        .collect();
    Ok(json!({
        // Busy and idle are in nanoseconds, as framework_get_reactors.
        "tick_rate": 1_000_000_000u64,
        "threads": threads,
    }))
}
