//! The Actions-service side of GitHub's runner scale-set protocol (as actions-runner-controller
//! and actions/scaleset speak it; `/work/shared/reference/scaleset-protocol.md`, and
//! `docs/sim-protocol.md` "Runner scale sets").
//!
//! - `bootstrap.rs`: `POST [/api/v3]/actions/runner-registration` (`RemoteAuth <registration
//!   token>`) → `{url, token}`: the tenant base URL and an HS256 admin JWT.
//! - `api/`: the admin API under `/tenant/{tenant}/_apis/...` (`mod.rs`: routes, the shared
//!   `Req` extractor and the runner groups; `sets.rs`, `sessions.rs`, `runners.rs`: JIT configs
//!   and agents) and the message queue (`queue.rs`: long poll, ack, `acquirejobs`).
//! - `hooks.rs`: the test hooks under `/_sim/scalesets/...`.
//! - `state/`: the state and its rules (a submodule of `state`, so it shares the job queue and
//!   the runner table): scale sets, sessions, tokens, the per-set message log, the per-set job
//!   life cycle (offered, assigned, running, re-assigned, done) and the statistics (`mod.rs`,
//!   `messages.rs`, `pump.rs`, `sessions.rs`, `views.rs`).

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use axum::Router;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::http::json_response;
use crate::server::AppState;

mod api;
mod bootstrap;
mod hooks;

/// How jobs reach a scale set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AcquireMode {
    /// GHES: `JobAvailable` first; the job is assigned (`JobAssigned`) once the listener wins it
    /// with `acquirejobs`.
    #[default]
    Ghes,
    /// github.com: `JobAssigned` at once with `runnerRequestId: 0`; `acquirejobs` answers 404.
    Hosted,
}

/// Scale-set settings (part of [`crate::SimConfig`]; most can be changed at run time through
/// `POST /_sim/scalesets/config`).
#[derive(Clone, Debug)]
pub struct ScaleSetConfig {
    /// GHES (acquire flow, the default) or github.com (direct assignment).
    pub mode: AcquireMode,
    /// Lifetime of the admin JWTs handed out by `runner-registration`.
    pub admin_token_ttl: Duration,
    /// Lifetime of a session's message-queue token (GitHub: about 50 minutes).
    pub queue_token_ttl: Duration,
    /// How long an empty queue GET is held before its 202 (GitHub: about 50 s).
    pub poll_wait: Duration,
    /// A session neither polled nor refreshed for this long expires, which frees the scale set
    /// for a new session (a crashed listener's session frees itself).
    pub session_timeout: Duration,
    /// A job assigned to a set that no runner of the set takes within this time is cancelled
    /// (`JobCompleted{result:"canceled"}`) and re-queued.
    pub assign_timeout: Duration,
    /// The delay before the k-th re-assignment is `k × reassign_delay` (growing delays).
    pub reassign_delay: Duration,
    /// How many times a job is re-assigned before it stays cancelled (GitHub: 3).
    pub max_reassignments: u32,
    /// A busy runner that is lost (killed, or silent past its job's deadline) has its job end
    /// `failed` after this long (GitHub: about 9.5 minutes).
    pub lock_timeout: Duration,
}

impl Default for ScaleSetConfig {
    fn default() -> Self {
        Self {
            mode: AcquireMode::Ghes,
            admin_token_ttl: Duration::from_secs(3600),
            queue_token_ttl: Duration::from_secs(50 * 60),
            poll_wait: Duration::from_secs(50),
            session_timeout: Duration::from_secs(120),
            assign_timeout: Duration::from_secs(120),
            reassign_delay: Duration::from_secs(5),
            max_reassignments: 3,
            lock_timeout: Duration::from_secs(570),
        }
    }
}

impl ScaleSetConfig {
    /// Settings for tests: 1 s polls, short timeouts (assignment 2 s, lock 2 s, session 5 s,
    /// re-assignment delays of 200 ms × k).
    pub fn for_tests() -> Self {
        Self {
            poll_wait: Duration::from_secs(1),
            session_timeout: Duration::from_secs(5),
            assign_timeout: Duration::from_secs(2),
            reassign_delay: Duration::from_millis(200),
            lock_timeout: Duration::from_secs(2),
            ..Self::default()
        }
    }
}

/// The routes of the protocol (bootstrap, tenant admin API, queue) and its test hooks.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .merge(bootstrap::routes())
        .merge(api::routes())
        .merge(hooks::routes())
}

/// The prefix of the tenant the sim hands out (`url` of `runner-registration`).
pub(crate) const TENANT_PATH: &str = "/tenant/1/";

/// The namespaces of the service's exception types.
pub(crate) const RUNTIME: &str = "GitHub.Actions.Runtime.WebApi";
pub(crate) const DISTRIBUTED_TASK: &str = "GitHub.DistributedTask.WebApi";
pub(crate) const SERVICES: &str = "GitHub.Services.WebApi";

/// An Actions-service error: `{"typeName": "<ns>.<name>, <ns>", "message"}` with an
/// `ActivityId` header, as the service answers.
pub(crate) fn service_error(
    status: StatusCode,
    namespace: &str,
    name: &str,
    message: &str,
) -> Response {
    let body = json!({
        "$id": "1",
        "innerException": null,
        "message": message,
        "typeName": format!("{namespace}.{name}, {namespace}"),
        "typeKey": name,
        "errorCode": 0,
        "eventId": 3000,
    });
    let mut response = json_response(status, &body);
    if let Ok(value) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        response.headers_mut().insert("activityid", value);
    }
    response
}

/// 401 for a missing, expired or unknown token.
pub(crate) fn invalid_token(message: &str) -> Response {
    service_error(
        StatusCode::UNAUTHORIZED,
        SERVICES,
        "InvalidTokenException",
        message,
    )
}
