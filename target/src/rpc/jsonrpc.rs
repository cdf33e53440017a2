//! JSON-RPC 2.0 framing as SPDK speaks it: requests are JSON objects sent
//! back to back on a stream socket (rpc.py separates them with newlines but
//! nothing requires it), each answered by one JSON object.

use serde::de::DeserializeOwned;
use serde_json::{json, Value};

/// Standard JSON-RPC error codes.
pub mod code {
    /// The bytes are not JSON.
    pub const PARSE_ERROR: i32 = -32700;
    /// JSON, but not a request object.
    pub const INVALID_REQUEST: i32 = -32600;
    /// No such method.
    pub const METHOD_NOT_FOUND: i32 = -32601;
    /// Bad or missing params.
    pub const INVALID_PARAMS: i32 = -32602;
    /// The method failed.
    pub const INTERNAL_ERROR: i32 = -32603;
    /// SPDK's `SPDK_JSONRPC_ERROR_INVALID_STATE`: the method exists but
    /// not in the application's current state (a startup-only method
    /// called once the target runs).
    pub const INVALID_STATE: i32 = -1;
}

/// Most requests one batch may hold. The request bytes are bounded by the
/// server, but one small request can have a large answer (`bdev_get_bdevs`)
/// and a batch's answers are sent as one array, so their number is bounded
/// too (SPDK bounds a request to 8192 JSON values).
pub const MAX_BATCH: usize = 1024;

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    /// JSON-RPC code.
    pub code: i32,
    /// Human-readable message.
    pub message: String,
}

impl RpcError {
    /// -32602 naming what is wrong with the params.
    pub fn invalid_params(message: impl Into<String>) -> Self {
        RpcError {
            code: code::INVALID_PARAMS,
            message: message.into(),
        }
    }

    /// The method could not do what was asked (SPDK answers these with
    /// -32602 or a negated errno; rpc.py only prints the message).
    pub fn failed(message: impl std::fmt::Display) -> Self {
        RpcError {
            code: code::INTERNAL_ERROR,
            message: message.to_string(),
        }
    }
}

/// Decodes `params` into `T`, naming the offending param on failure (e.g.
/// "num_blocks: invalid type: string \"x\", expected u64").
pub fn params<T: DeserializeOwned>(params: Option<Value>) -> Result<T, RpcError> {
    let v = params.unwrap_or_else(|| json!({}));
    if !v.is_object() {
        return Err(RpcError::invalid_params("params must be an object"));
    }
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        if path == "." {
            RpcError::invalid_params(inner)
        } else {
            RpcError::invalid_params(format!("{path}: {inner}"))
        }
    })
}

/// The params of a method that takes none: `{}` or absent, anything else
/// is -32602 naming the unexpected field.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

/// A parsed request.
#[derive(Debug)]
pub struct Request {
    /// Absent for notifications (no answer is sent).
    pub id: Option<Value>,
    /// Method name.
    pub method: String,
    /// Params, if any.
    pub params: Option<Value>,
}

/// Checks that `v` is a JSON-RPC 2.0 request object. As SPDK's server
/// (`parse_single_request`), a missing `"jsonrpc"` member is tolerated,
/// but one that is present must say "2.0", and an id must be a string, a
/// number or null.
pub fn parse_request(v: Value) -> Result<Request, (Option<Value>, RpcError)> {
    let Value::Object(mut m) = v else {
        return Err((None, invalid_request("a request must be an object")));
    };
    let id = m.remove("id");
    if let Some(bad) = id
        .as_ref()
        .filter(|i| i.is_array() || i.is_object() || i.is_boolean())
    {
        let msg = format!("\"id\" must be a string, a number or null, not {bad}");
        return Err((None, invalid_request(&msg)));
    }
    if m.get("jsonrpc").is_some_and(|v| v.as_str() != Some("2.0")) {
        return Err((id, invalid_request("\"jsonrpc\" must be \"2.0\"")));
    }
    let Some(Value::String(method)) = m.remove("method") else {
        return Err((id, invalid_request("\"method\" must be a string")));
    };
    // A null params member is as if there were none (SPDK does the same).
    let params = m.remove("params").filter(|p| !p.is_null());
    if let Some(p) = &params {
        if !p.is_object() && !p.is_array() {
            return Err((id, invalid_request("\"params\" must be an object or array")));
        }
    }
    Ok(Request { id, method, params })
}

/// -32600 with `msg`.
pub fn invalid_request(msg: &str) -> RpcError {
    RpcError {
        code: code::INVALID_REQUEST,
        message: msg.into(),
    }
}

/// The answer object for `id`.
pub fn response(id: Option<Value>, result: Result<Value, RpcError>) -> Value {
    let id = id.unwrap_or(Value::Null);
    match result {
        Ok(v) => json!({"jsonrpc": "2.0", "id": id, "result": v}),
        Err(e) => {
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": e.code, "message": e.message}})
        }
    }
}

/// Outcome of looking for one JSON value at the start of a buffer.
pub enum Next {
    /// A value and the bytes it used (including leading whitespace).
    Value(Value, usize),
    /// Not enough bytes yet.
    Incomplete,
    /// The bytes can never become JSON.
    Invalid(String),
}

/// Takes the first JSON value from `buf`.
pub fn next_value(buf: &[u8]) -> Next {
    let mut it = serde_json::Deserializer::from_slice(buf).into_iter::<Value>();
    match it.next() {
        None => Next::Incomplete,
        Some(Ok(v)) => Next::Value(v, it.byte_offset()),
        Some(Err(e)) if e.is_eof() => Next::Incomplete,
        Some(Err(e)) => Next::Invalid(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_to_back_objects_are_split() {
        let buf = br#"{"a":1}
{"b":2} {"c""#;
        let Next::Value(v, n) = next_value(buf) else {
            panic!()
        };
        assert_eq!(v, json!({"a": 1}));
        let Next::Value(v, m) = next_value(&buf[n..]) else {
            panic!()
        };
        assert_eq!(v, json!({"b": 2}));
        assert!(matches!(next_value(&buf[n + m..]), Next::Incomplete));
        assert!(matches!(next_value(b"}{"), Next::Invalid(_)));
    }

    #[test]
    fn params_errors_name_the_param() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct P {
            name: String,
            num_blocks: u64,
        }
        let e = params::<P>(Some(json!({"name": "x", "num_blocks": "many"}))).unwrap_err();
        assert_eq!(e.code, code::INVALID_PARAMS);
        assert!(e.message.starts_with("num_blocks:"), "{}", e.message);
        let e = params::<P>(Some(json!({"name": "x"}))).unwrap_err();
        assert!(e.message.contains("num_blocks"), "{}", e.message);
        let e = params::<P>(Some(json!({"name": "x", "num_blocks": 1, "bogus": 1}))).unwrap_err();
        assert!(e.message.contains("bogus"), "{}", e.message);
    }

    #[test]
    fn requests_are_validated() {
        assert!(parse_request(json!([1])).is_err());
        let (id, e) = parse_request(json!({"jsonrpc": "1.0", "id": 3, "method": "x"})).unwrap_err();
        assert_eq!(id, Some(json!(3)));
        assert_eq!(e.code, code::INVALID_REQUEST);
        let r =
            parse_request(json!({"jsonrpc": "2.0", "id": 1, "method": "m", "params": {}})).unwrap();
        assert_eq!(r.method, "m");
        // SPDK's server takes requests without "jsonrpc" and null params.
        let r = parse_request(json!({"id": "a", "method": "m", "params": null})).unwrap();
        assert_eq!((r.id, r.params), (Some(json!("a")), None));
        let (_, e) = parse_request(json!({"id": [1], "method": "m"})).unwrap_err();
        assert_eq!(e.code, code::INVALID_REQUEST);
        let (_, e) = parse_request(json!({"id": 1, "method": "m", "params": 3})).unwrap_err();
        assert_eq!(e.code, code::INVALID_REQUEST);
    }
}
