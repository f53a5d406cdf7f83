//! The response envelope, decoded in one place: sync, async (an operation to wait on) or error,
//! and an operation's result as a typed error.

use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::types::Operation;

/// Where an operation lives: its path and the query to repeat (a cluster member may add `?project=`).
#[derive(Debug, Clone)]
pub(crate) struct OperationRef {
    pub(super) path: String,
    pub(super) query: Vec<(String, String)>,
    /// The operation as the creating call described it (exec websockets: `metadata.fds`).
    pub(crate) metadata: Value,
}

impl OperationRef {
    pub(crate) fn parse(s: &str) -> OperationRef {
        let (path, query) = s.split_once('?').unwrap_or((s, ""));
        let query = url::form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        OperationRef {
            path: path.trim_end_matches('/').to_owned(),
            query,
            metadata: Value::Null,
        }
    }

    /// An operation found in a listing, by id, scoped like the client that listed it.
    pub(crate) fn listed(id: &str, project: Option<&str>) -> OperationRef {
        OperationRef {
            path: format!("/1.0/operations/{id}"),
            query: project
                .map(|p| ("project".to_owned(), p.to_owned()))
                .into_iter()
                .collect(),
            metadata: Value::Null,
        }
    }

    pub(crate) fn path(&self) -> &str {
        &self.path
    }
}

/// A decoded response envelope.
pub(crate) enum Reply {
    Sync(Value),
    Async(OperationRef),
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    operation: Option<String>,
    #[serde(default)]
    error_code: Option<u16>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    metadata: Value,
}

/// Success, or the operation's failure as a typed error.
pub(crate) fn op_result(what: &str, op: Operation) -> Result<Operation> {
    if op.status_code == 200 {
        return Ok(op);
    }
    let message = if op.err.is_empty() {
        op.status.clone()
    } else {
        op.err.clone()
    };
    match Error::from_server(what, 400, &message) {
        e @ (Error::Conflict { .. } | Error::MemberUnavailable { .. }) => Err(e),
        _ => Err(Error::OperationFailed {
            what: what.to_owned(),
            message,
        }),
    }
}

pub(crate) fn decode<T: DeserializeOwned>(what: &str, v: Value) -> Result<T> {
    serde_json::from_value(v).map_err(|e| Error::Protocol {
        what: what.to_owned(),
        message: format!("decoding the response: {e}"),
    })
}

/// The one place that reads the sync / async / error envelope.
pub(crate) fn decode_envelope(
    what: &str,
    status: StatusCode,
    location: Option<&str>,
    body: &[u8],
) -> Result<Reply> {
    let env: Envelope = match serde_json::from_slice(body) {
        Ok(env) => env,
        Err(e) if status.is_success() => {
            return Err(Error::Protocol {
                what: what.to_owned(),
                message: format!("HTTP {status} with a body that is not an envelope: {e}"),
            })
        }
        Err(_) => {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)])
                .trim()
                .to_owned();
            return Err(Error::from_server(what, status.as_u16(), &text));
        }
    };
    match env.kind.as_str() {
        "error" => {
            let code = env
                .error_code
                .filter(|c| *c != 0)
                .unwrap_or_else(|| status.as_u16());
            Err(Error::from_server(
                what,
                code,
                env.error.as_deref().unwrap_or(""),
            ))
        }
        "sync" if status.is_success() => Ok(Reply::Sync(env.metadata)),
        "async" if status.is_success() => {
            let op = env
                .operation
                .filter(|o| !o.is_empty())
                .or_else(|| location.map(str::to_owned))
                .ok_or_else(|| Error::Protocol {
                    what: what.to_owned(),
                    message: "async answer without an operation".into(),
                })?;
            let mut op = OperationRef::parse(&op);
            op.metadata = env.metadata;
            Ok(Reply::Async(op))
        }
        other => Err(Error::Protocol {
            what: what.to_owned(),
            message: format!("HTTP {status} with envelope type {other:?}"),
        }),
    }
}
