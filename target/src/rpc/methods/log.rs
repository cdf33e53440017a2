//! `log_set_level`, `log_get_level`, `log_set_print_level`,
//! `log_get_print_level`, `log_set_flag`, `log_clear_flag`,
//! `log_get_flags`: SPDK's lib/event/log_rpc.c over `crate::logging`.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::logging::{self, Level};
use crate::rpc::jsonrpc::{code, params, RpcError};
use crate::rpc::Dispatcher;

pub(super) fn register(d: &mut Dispatcher) {
    d.register("log_set_level", |_, p| {
        logging::set_level(level(p)?);
        Ok(json!(true))
    });
    d.register("log_set_print_level", |_, p| {
        logging::set_print_level(level(p)?);
        Ok(json!(true))
    });
    d.register("log_get_level", |_, p| {
        no_params("log_get_level", p)?;
        Ok(json!(logging::state().level.name()))
    });
    d.register("log_get_print_level", |_, p| {
        no_params("log_get_print_level", p)?;
        Ok(json!(logging::state().print_level.name()))
    });
    d.register("log_set_flag", |_, p| flag(p, true));
    d.register("log_clear_flag", |_, p| flag(p, false));
    d.register("log_get_flags", log_get_flags);
}

/// SPDK answers a params object it cannot decode with -32603 (the
/// decoder's failure, not the value's): the same code, our message.
fn decode<T: serde::de::DeserializeOwned>(p: Option<Value>) -> Result<T, RpcError> {
    params(p).map_err(|e| RpcError {
        code: code::INTERNAL_ERROR,
        message: e.message,
    })
}

/// The getters take no params at all (SPDK refuses even `{}`; rpc.py
/// sends none).
fn no_params(method: &str, p: Option<Value>) -> Result<(), RpcError> {
    match p {
        None => Ok(()),
        Some(_) => Err(RpcError::invalid_params(format!(
            "{method} requires no parameters"
        ))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LevelParams {
    level: String,
}

fn level(p: Option<Value>) -> Result<Level, RpcError> {
    let p: LevelParams = decode(p)?;
    Level::parse(&p.level).ok_or_else(|| RpcError::invalid_params("invalid log level"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FlagParams {
    flag: String,
}

fn flag(p: Option<Value>, on: bool) -> Result<Value, RpcError> {
    let p: FlagParams = decode(p)?;
    logging::set_flag(&p.flag, on).map_err(|_| RpcError::invalid_params("invalid log flag"))?;
    Ok(json!(true))
}

fn log_get_flags(_d: &Dispatcher, p: Option<Value>) -> Result<Value, RpcError> {
    no_params("log_get_flags", p)?;
    let st = logging::state();
    let flags: Map<String, Value> = logging::FLAGS
        .iter()
        .map(|(n, _)| ((*n).to_owned(), json!(st.flags.contains(n))))
        .collect();
    Ok(Value::Object(flags))
}
