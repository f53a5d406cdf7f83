//! The runner side of GitHub (`/_runner/...`, see `docs/sim-protocol.md`) and the tarball
//! download URL the downloads endpoint points at.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State as AxState};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use parking_lot::MutexGuard;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

use crate::http::{base_url, json_response, plain_error, Handled};
use crate::rest::asset_names;
use crate::server::AppState;
use crate::state::{NewRunner, RegisterError, State, TokenKind};
use crate::Scope;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/_runner/register", post(register))
        .route("/_runner/remove", post(remove))
        .route("/_runner/poll", get(poll))
        .route("/_runner/jobs/{job_id}/complete", post(complete))
        .route("/_runner/offline", post(offline))
        .route(
            "/actions/runner/releases/download/{tag}/{file}",
            get(download),
        )
}

fn unauthorized() -> Response {
    plain_error(StatusCode::UNAUTHORIZED, "Bad credentials")
}

fn bad_request(message: &str) -> Response {
    plain_error(StatusCode::BAD_REQUEST, message)
}

/// The token of `Authorization: <scheme> <token>` (scheme compared case-insensitively).
fn auth_token<'a>(headers: &'a HeaderMap, scheme: &str) -> Option<&'a str> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let (given, token) = value.trim().split_once(' ')?;
    given
        .eq_ignore_ascii_case(scheme)
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// A `RemoteAuth <token>` call with a JSON body: the locked state, the scope of the token (of
/// `kind`) and the body. 401 without a token or with a wrong one, 400 for a body that is not
/// JSON of the shape, in that order.
fn remote_auth<'a, T: DeserializeOwned>(
    shared: &'a AppState,
    headers: &HeaderMap,
    body: &Bytes,
    kind: TokenKind,
) -> Result<(MutexGuard<'a, State>, Scope, T), Box<Response>> {
    let token = auth_token(headers, "RemoteAuth").ok_or_else(|| Box::new(unauthorized()))?;
    let body: T = serde_json::from_slice(body)
        .map_err(|error| Box::new(bad_request(&format!("invalid body: {error}"))))?;
    let state = shared.state.lock();
    let token_scope = state
        .check_token(kind, token)
        .ok_or_else(|| Box::new(unauthorized()))?;
    Ok((state, token_scope, body))
}

/// Labels may come as a list, and each entry may itself be comma-separated.
fn split_labels(labels: Vec<String>) -> Vec<String> {
    labels
        .iter()
        .flat_map(|l| l.split(','))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

#[derive(Deserialize)]
struct RegisterBody {
    url: String,
    name: String,
    #[serde(default)]
    labels: Vec<String>,
    runner_group: Option<String>,
    #[serde(default)]
    ephemeral: bool,
    #[serde(default)]
    replace: bool,
    #[serde(default)]
    no_default_labels: bool,
}

async fn register(AxState(shared): AxState<AppState>, headers: HeaderMap, body: Bytes) -> Handled {
    let (mut state, token_scope, body): (_, _, RegisterBody) =
        remote_auth(&shared, &headers, &body, TokenKind::Registration)?;
    let Some(scope) = Scope::from_url(&body.url).and_then(|s| state.resolve_scope(&s)) else {
        return Ok(plain_error(StatusCode::NOT_FOUND, "Not Found"));
    };
    if scope != token_scope {
        return Ok(unauthorized());
    }
    let Some(group) = state.group_by_name(&scope, body.runner_group.as_deref()) else {
        let name = body.runner_group.unwrap_or_default();
        return Ok(plain_error(
            StatusCode::NOT_FOUND,
            &RegisterError::UnknownGroup(name).to_string(),
        ));
    };
    let labels = state.make_labels(&split_labels(body.labels), body.no_default_labels);
    let name = body.name.trim().to_owned();
    if name.is_empty() {
        return Ok(bad_request("name is required"));
    }
    let new = NewRunner {
        scope: scope.clone(),
        name: name.clone(),
        group_id: group.id,
        labels,
        ephemeral: body.ephemeral,
        jit: false,
    };
    Ok(match state.register(new, body.replace) {
        Ok((id, credential)) => {
            let server_url = base_url(shared.public_url.as_deref(), &headers);
            let server_url = url::Url::parse(&body.url)
                .ok()
                .filter(|_| shared.public_url.is_none())
                .map(|u| u.origin().ascii_serialization())
                .unwrap_or(server_url);
            let response = json!({
                "agent_id": id,
                "agent_name": name,
                "pool_id": group.id,
                "pool_name": group.name,
                "server_url": server_url,
                "credential": credential.expose(),
            });
            json_response(StatusCode::CREATED, &response)
        }
        Err(error @ RegisterError::NameExists(_)) => {
            plain_error(StatusCode::CONFLICT, &error.to_string())
        }
        Err(error) => plain_error(StatusCode::NOT_FOUND, &error.to_string()),
    })
}

#[derive(Deserialize)]
struct RemoveBody {
    url: String,
    agent_id: u64,
}

async fn remove(AxState(shared): AxState<AppState>, headers: HeaderMap, body: Bytes) -> Handled {
    let (mut state, token_scope, body): (_, _, RemoveBody) =
        remote_auth(&shared, &headers, &body, TokenKind::Remove)?;
    let scope = Scope::from_url(&body.url).and_then(|s| state.resolve_scope(&s));
    if scope.as_ref() != Some(&token_scope) {
        return Ok(unauthorized());
    }
    let Some(runner) = state
        .runner(body.agent_id)
        .filter(|r| r.scope == token_scope)
    else {
        return Ok(plain_error(StatusCode::NOT_FOUND, "Not Found"));
    };
    if runner.job.is_some() {
        let message = format!(
            "Bad request - Runner \"{}\" is still running a job",
            runner.name
        );
        return Ok(plain_error(StatusCode::UNPROCESSABLE_ENTITY, &message));
    }
    state.remove_runner(body.agent_id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The runner a `Bearer <credential>` belongs to; `agent_id`, when given, must match.
fn credential_runner(shared: &AppState, headers: &HeaderMap, agent_id: Option<u64>) -> Option<u64> {
    let token = auth_token(headers, "Bearer")?;
    let state = shared.state.lock();
    let runner = state.runner_by_credential(token)?;
    agent_id
        .is_none_or(|id| id == runner.id)
        .then_some(runner.id)
}

#[derive(Deserialize)]
struct PollQuery {
    agent_id: Option<u64>,
    wait: Option<u64>,
}

/// Ends a long poll when dropped, whether it finished or the connection went away.
struct PollGuard {
    shared: AppState,
    id: u64,
}

impl Drop for PollGuard {
    fn drop(&mut self) {
        self.shared.state.lock().poll_ended(self.id);
    }
}

async fn poll(
    AxState(shared): AxState<AppState>,
    headers: HeaderMap,
    Query(query): Query<PollQuery>,
) -> Response {
    let Some(id) = credential_runner(&shared, &headers, query.agent_id) else {
        return unauthorized();
    };
    let wait = Duration::from_secs(query.wait.unwrap_or(20).min(50));
    let deadline = tokio::time::Instant::now() + wait;
    let mut stop = shared.shutdown.clone();
    loop {
        let notify = {
            let mut state = shared.state.lock();
            if state.runner(id).is_none() {
                return unauthorized();
            }
            state.heartbeat(id);
            if let Some(job) = state.take_assigned_job(id) {
                return json_response(StatusCode::OK, &job);
            }
            let notify = state.poll_started(id);
            // Now online and polling: this runner may take a queued job.
            state.assign_to_runner(id);
            if let Some(job) = state.take_assigned_job(id) {
                state.poll_ended(id);
                return json_response(StatusCode::OK, &job);
            }
            notify
        };
        let Some(notify) = notify else {
            return unauthorized();
        };
        // The client may hang up mid-poll: axum then drops this future, and the guard still
        // ends the poll so that the runner does not stay online forever.
        let guard = PollGuard {
            shared: shared.clone(),
            id,
        };
        let timed_out = tokio::select! {
            _ = notify.notified() => false,
            _ = tokio::time::sleep_until(deadline) => true,
            _ = stop.wait_for(|stopped| *stopped) => true,
        };
        drop(guard);
        if timed_out || *shared.shutdown.borrow() {
            let state = shared.state.lock();
            if state.runner(id).is_none() {
                return unauthorized();
            }
            return StatusCode::NO_CONTENT.into_response();
        }
    }
}

#[derive(Deserialize)]
struct CompleteBody {
    #[serde(default)]
    exit_code: i32,
    #[serde(default)]
    output: String,
    conclusion: Option<String>,
}

async fn complete(
    AxState(shared): AxState<AppState>,
    headers: HeaderMap,
    Path(job_id): Path<u64>,
    body: Bytes,
) -> Response {
    let Some(id) = credential_runner(&shared, &headers, None) else {
        return unauthorized();
    };
    let body: CompleteBody = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(error) => return bad_request(&format!("invalid body: {error}")),
    };
    let result =
        shared
            .state
            .lock()
            .complete_job(id, job_id, body.exit_code, body.output, body.conclusion);
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(()) => plain_error(StatusCode::NOT_FOUND, "job is not assigned to this runner"),
    }
}

#[derive(Deserialize)]
struct OfflineBody {
    agent_id: Option<u64>,
}

async fn offline(AxState(shared): AxState<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let agent_id = serde_json::from_slice::<OfflineBody>(&body)
        .ok()
        .and_then(|b| b.agent_id);
    let Some(id) = credential_runner(&shared, &headers, agent_id) else {
        return unauthorized();
    };
    shared.state.lock().mark_offline(id);
    StatusCode::NO_CONTENT.into_response()
}

async fn download(
    AxState(shared): AxState<AppState>,
    Path((tag, file)): Path<(String, String)>,
) -> Response {
    let version = shared.state.lock().config.runner_version.clone();
    let known = tag == format!("v{version}")
        && asset_names(&version)
            .iter()
            .any(|(_, _, name)| *name == file);
    match (&shared.tarball, known) {
        (Some(tarball), true) => {
            let mut response = Body::from(tarball.bytes.clone()).into_response();
            let headers = response.headers_mut();
            headers.insert(
                "content-type",
                HeaderValue::from_static("application/octet-stream"),
            );
            headers.insert("content-length", HeaderValue::from(tarball.bytes.len()));
            response
        }
        _ => plain_error(StatusCode::NOT_FOUND, "Not Found"),
    }
}
