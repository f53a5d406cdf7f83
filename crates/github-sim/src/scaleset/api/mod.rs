//! The Actions service's admin API under `/tenant/{tenant}/_apis/...` (admin JWT) and the
//! message queue (queue token): reference §2–§7.
//!
//! Here: the routes, the pieces every handler shares (the [`Req`] extractor, refusals, bodies)
//! and the runner groups; `sets.rs`, `sessions.rs`, `runners.rs` (JIT configs, agents),
//! `queue.rs` (the message queue).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Query, State as AxState};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post};
use axum::Router;
use parking_lot::MutexGuard;
use serde::Deserialize;
use serde_json::{json, Value};

use super::bootstrap::admin_scope;
use super::{invalid_token, service_error, DISTRIBUTED_TASK, RUNTIME};
use crate::config::GroupConfig;
use crate::http::{base_url, json_response, plain_error, Handled, Reject};
use crate::rest::{encode_jit_config, JitRunner};
use crate::server::AppState;
use crate::state::{
    rfc3339, DeleteSetError, QueueAuthError, RegisterError, Runner, SessionError, State,
};
use crate::Scope;

mod queue;
mod runners;
mod sessions;
mod sets;

use queue::{ack_message, acquirable_jobs, acquire_jobs, get_message};
use runners::{agents_by_name, generate_jitconfig, get_agent, remove_agent};
use sessions::{create_session, delete_session, refresh_session};
use sets::{create_set, delete_set, get_set, list_sets, update_set};

const T: &str = "/tenant/{tenant}/_apis";

pub(super) fn routes() -> Router<AppState> {
    let sets = format!("{T}/runtime/runnerscalesets");
    Router::new()
        .route(&format!("{T}/runtime/runnergroups/"), get(runner_groups))
        .route(&format!("{T}/runtime/runnergroups"), get(runner_groups))
        .route(&sets, get(list_sets).post(create_set))
        .route(
            &format!("{sets}/{{id}}"),
            get(get_set).patch(update_set).delete(delete_set),
        )
        .route(&format!("{sets}/{{id}}/sessions"), post(create_session))
        .route(
            &format!("{sets}/{{id}}/sessions/{{session_id}}"),
            patch(refresh_session).delete(delete_session),
        )
        .route(
            &format!("{sets}/{{id}}/generatejitconfig"),
            post(generate_jitconfig),
        )
        .route(&format!("{sets}/{{id}}/acquirejobs"), post(acquire_jobs))
        .route(
            &format!("{sets}/{{id}}/acquirablejobs"),
            get(acquirable_jobs),
        )
        .route(&format!("{sets}/{{id}}/messages"), get(get_message))
        .route(
            &format!("{sets}/{{id}}/messages/{{message_id}}"),
            delete(ack_message),
        )
        .route(
            &format!("{T}/distributedtask/pools/{{pool}}/agents"),
            get(agents_by_name),
        )
        .route(
            &format!("{T}/distributedtask/pools/{{pool}}/agents/{{runner_id}}"),
            get(get_agent).delete(remove_agent),
        )
}

type Params = HashMap<String, String>;

fn bad_request(message: &str) -> Response {
    service_error(
        StatusCode::BAD_REQUEST,
        DISTRIBUTED_TASK,
        "ArgumentException",
        message,
    )
}

fn set_not_found(id: u64) -> Response {
    service_error(
        StatusCode::NOT_FOUND,
        RUNTIME,
        "RunnerScaleSetNotFoundException",
        &format!("The runner scale set {id} does not exist."),
    )
}

/// 404 `RunnerScaleSetNotFoundException` unless the scope has the set.
fn set_exists(state: &State, scope: &Scope, id: u64) -> Result<(), Reject> {
    match state.ss_set(scope, id) {
        Some(_) => Ok(()),
        None => Err(Reject(Box::new(set_not_found(id)))),
    }
}

fn list(values: Vec<Value>) -> Value {
    json!({ "count": values.len(), "value": values })
}

/// A name without its surrounding blanks; `None` when it is missing or blank.
fn non_blank(name: Option<&str>) -> Option<String> {
    name.map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
}

/// A path parameter as a number, or 400.
fn number<N: std::str::FromStr>(params: &Params, key: &str) -> Result<N, Box<Response>> {
    params
        .get(key)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Box::new(bad_request(&format!("{key} is not valid."))))
}

/// A lenient JSON body (`{}` when empty); 400 when it is not JSON of the expected shape.
fn body<T: serde::de::DeserializeOwned>(bytes: &Bytes) -> Result<T, Box<Response>> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    serde_json::from_slice(bytes).map_err(|e| Box::new(bad_request(&format!("invalid body: {e}"))))
}

/// The locked state and the scope of the request's admin token (401 without one).
fn admin<'a>(
    shared: &'a AppState,
    headers: &HeaderMap,
) -> Result<(MutexGuard<'a, State>, Scope), Reject> {
    let state = shared.state.lock();
    let scope = admin_scope(&state, headers)?;
    Ok((state, scope))
}

fn server(shared: &AppState, headers: &HeaderMap) -> String {
    base_url(shared.public_url.as_deref(), headers)
}

/// What a handler of a path with parameters reads from its request: the app, the headers and
/// the path parameters. Each handler makes its checks in its own order.
struct Req {
    shared: AppState,
    headers: HeaderMap,
    path: Params,
}

impl FromRequestParts<AppState> for Req {
    type Rejection = <Path<Params> as FromRequestParts<AppState>>::Rejection;

    async fn from_request_parts(
        parts: &mut Parts,
        shared: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Path(path) = Path::<Params>::from_request_parts(parts, shared).await?;
        Ok(Self {
            shared: shared.clone(),
            headers: parts.headers.clone(),
            path,
        })
    }
}

impl Req {
    /// See [`admin`].
    fn admin(&self) -> Result<(MutexGuard<'_, State>, Scope), Reject> {
        admin(&self.shared, &self.headers)
    }

    /// The path's `id` (the scale set's), or 400.
    fn id(&self) -> Result<u64, Box<Response>> {
        number(&self.path, "id")
    }

    /// The server's base URL, as the client reached it.
    fn server(&self) -> String {
        server(&self.shared, &self.headers)
    }

    /// `{base}/tenant/{tenant}/`, the tenant of the path.
    fn tenant_base(&self) -> String {
        format!("{}/tenant/{}/", self.server(), self.path["tenant"])
    }
}

// ------------------------------------------------------------------------ runner groups

fn group_json(group: &GroupConfig) -> Value {
    json!({
        "id": group.id,
        "name": group.name,
        "size": 0,
        "isDefaultGroup": group.default,
    })
}

async fn runner_groups(
    AxState(shared): AxState<AppState>,
    headers: HeaderMap,
    Query(query): Query<Params>,
) -> Handled {
    let (state, scope) = admin(&shared, &headers)?;
    let groups: Vec<Value> = state
        .groups(&scope)
        .iter()
        .filter(|g| {
            query
                .get("groupName")
                .is_none_or(|name| g.name.eq_ignore_ascii_case(name))
        })
        .map(group_json)
        .collect();
    Ok(json_response(StatusCode::OK, &list(groups)))
}
