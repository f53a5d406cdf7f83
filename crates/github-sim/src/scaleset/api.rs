//! The Actions service's admin API under `/tenant/{tenant}/_apis/...` (admin JWT) and the
//! message queue (queue token): reference §2–§7.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State as AxState};
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
use crate::http::{base_url, json_response, plain_error};
use crate::rest::{encode_jit_config, JitRunner};
use crate::server::AppState;
use crate::state::{
    rfc3339, DeleteSetError, QueueAuthError, RegisterError, Runner, SessionError, State,
};
use crate::Scope;

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

/// What a handler answers: `Err` is a refusal from a check (auth, a path parameter, the body)
/// that ends the handler early, answered as it is.
type Handled = Result<Response, Reject>;

/// A refusal as the answer; `?` turns the checks' `Box<Response>` into one.
struct Reject(Box<Response>);

impl From<Box<Response>> for Reject {
    fn from(response: Box<Response>) -> Self {
        Self(response)
    }
}

impl IntoResponse for Reject {
    fn into_response(self) -> Response {
        *self.0
    }
}

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

/// `{base}/tenant/{tenant}/`, the tenant of the path.
fn tenant_base(shared: &AppState, headers: &HeaderMap, path: &Params) -> String {
    format!("{}/tenant/{}/", server(shared, headers), path["tenant"])
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

// ------------------------------------------------------------------------ scale sets

#[derive(Default, Deserialize)]
#[serde(default)]
struct LabelBody {
    name: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct RunnerSettingBody {
    #[serde(rename = "disableUpdate")]
    disable_update: Option<bool>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct SetBody {
    name: Option<String>,
    #[serde(rename = "runnerGroupId")]
    runner_group_id: Option<u64>,
    #[serde(rename = "runnerGroupName")]
    runner_group_name: Option<String>,
    labels: Option<Vec<LabelBody>>,
    #[serde(rename = "RunnerSetting")]
    runner_setting: Option<RunnerSettingBody>,
}

impl SetBody {
    fn name(&self) -> Option<String> {
        self.name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
    }

    /// The labels' names, without duplicates (ignoring case); `None` when none are given.
    fn labels(&self) -> Option<Vec<String>> {
        let mut names: Vec<String> = Vec::new();
        for label in self.labels.iter().flatten() {
            let Some(name) = label.name.as_deref().map(str::trim) else {
                continue;
            };
            if !name.is_empty() && !names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
                names.push(name.to_owned());
            }
        }
        (!names.is_empty()).then_some(names)
    }

    /// The group it names (by id, then by name), the scope's default one when neither.
    fn group(&self, state: &State, scope: &Scope) -> Result<Option<GroupConfig>, Box<Response>> {
        let by_name = self.runner_group_name.as_deref().filter(|n| !n.is_empty());
        let group = match (self.runner_group_id.filter(|id| *id != 0), by_name) {
            (Some(id), _) => state.group(scope, id),
            (None, Some(name)) => state
                .groups(scope)
                .into_iter()
                .find(|g| g.name.eq_ignore_ascii_case(name)),
            (None, None) => return Ok(None),
        };
        group.map(Some).ok_or_else(|| {
            Box::new(service_error(
                StatusCode::NOT_FOUND,
                DISTRIBUTED_TASK,
                "RunnerGroupNotFoundException",
                "The runner group does not exist.",
            ))
        })
    }
}

fn set_json(state: &State, id: u64, tenant_base: &str) -> Value {
    let Some(set) = state.ss().sets.get(&id) else {
        return Value::Null;
    };
    let labels: Vec<Value> = set
        .labels
        .iter()
        .map(|name| json!({ "type": "System", "name": name }))
        .collect();
    json!({
        "id": set.id,
        "name": set.name,
        "runnerGroupId": set.group_id,
        "runnerGroupName": set.group_name,
        "labels": labels,
        "RunnerSetting": { "disableUpdate": set.disable_update, "ephemeral": true, "isElastic": true },
        "createdOn": rfc3339(set.created_on),
        "runnerJitConfigUrl": format!("{tenant_base}_apis/runtime/runnerscalesets/{id}/generatejitconfig"),
        "statistics": state.ss_statistics(set.id),
    })
}

async fn list_sets(
    AxState(shared): AxState<AppState>,
    headers: HeaderMap,
    Path(path): Path<Params>,
    Query(query): Query<Params>,
) -> Handled {
    let base = tenant_base(&shared, &headers, &path);
    let (state, scope) = admin(&shared, &headers)?;
    let group: Option<u64> = query
        .get("runnerGroupId")
        .and_then(|g| g.parse().ok())
        .filter(|g| *g != 0);
    let name = query.get("name").filter(|n| !n.is_empty());
    let sets: Vec<Value> = state
        .ss()
        .sets
        .values()
        .filter(|s| s.scope == scope)
        .filter(|s| group.is_none_or(|g| s.group_id == g))
        .filter(|s| name.is_none_or(|n| s.name.eq_ignore_ascii_case(n)))
        .map(|s| set_json(&state, s.id, &base))
        .collect();
    Ok(json_response(StatusCode::OK, &list(sets)))
}

async fn create_set(
    AxState(shared): AxState<AppState>,
    headers: HeaderMap,
    Path(path): Path<Params>,
    bytes: Bytes,
) -> Handled {
    let base = tenant_base(&shared, &headers, &path);
    let (mut state, scope) = admin(&shared, &headers)?;
    let body: SetBody = body(&bytes)?;
    let Some(name) = body.name() else {
        return Ok(bad_request("The scale set name is required."));
    };
    let group = match body.group(&state, &scope)? {
        Some(group) => group,
        None => match state.group_by_name(&scope, None) {
            Some(group) => group,
            None => return Ok(bad_request("The scope has no default runner group.")),
        },
    };
    let labels = body.labels().unwrap_or_else(|| vec![name.clone()]);
    let disable_update = body
        .runner_setting
        .as_ref()
        .and_then(|s| s.disable_update)
        .unwrap_or(false);
    Ok(
        match state.ss_create_set(&scope, name.clone(), &group, labels, disable_update) {
            Ok(id) => json_response(StatusCode::OK, &set_json(&state, id, &base)),
            Err(_) => service_error(
                StatusCode::CONFLICT,
                RUNTIME,
                "RunnerScaleSetExistsException",
                &format!(
                    "A runner scale set named {name} already exists in the runner group {}.",
                    group.name
                ),
            ),
        },
    )
}

async fn get_set(
    AxState(shared): AxState<AppState>,
    headers: HeaderMap,
    Path(path): Path<Params>,
) -> Handled {
    let base = tenant_base(&shared, &headers, &path);
    let id: u64 = number(&path, "id")?;
    let (state, scope) = admin(&shared, &headers)?;
    set_exists(&state, &scope, id)?;
    Ok(json_response(StatusCode::OK, &set_json(&state, id, &base)))
}

async fn update_set(
    AxState(shared): AxState<AppState>,
    headers: HeaderMap,
    Path(path): Path<Params>,
    bytes: Bytes,
) -> Handled {
    let base = tenant_base(&shared, &headers, &path);
    let id: u64 = number(&path, "id")?;
    let (mut state, scope) = admin(&shared, &headers)?;
    let body: SetBody = body(&bytes)?;
    let Some(current) = state.ss_set(&scope, id) else {
        return Ok(set_not_found(id));
    };
    let group = body.group(&state, &scope)?;
    let name = body.name().unwrap_or_else(|| current.name.clone());
    let group_id = group.as_ref().map_or(current.group_id, |g| g.id);
    let clash = state.ss().sets.values().any(|s| {
        s.id != id
            && s.scope == scope
            && s.group_id == group_id
            && s.name.eq_ignore_ascii_case(&name)
    });
    if clash {
        return Ok(service_error(
            StatusCode::CONFLICT,
            RUNTIME,
            "RunnerScaleSetExistsException",
            &format!("A runner scale set named {name} already exists in that runner group."),
        ));
    }
    let labels = body.labels();
    let disable_update = body.runner_setting.as_ref().and_then(|s| s.disable_update);
    if let Some(set) = state.ss_mut().sets.get_mut(&id) {
        set.name = name;
        if let Some(group) = group {
            set.group_id = group.id;
            set.group_name = group.name;
        }
        if let Some(labels) = labels {
            set.labels = labels;
        }
        if let Some(disable_update) = disable_update {
            set.disable_update = disable_update;
        }
    }
    state.ss_pump();
    Ok(json_response(StatusCode::OK, &set_json(&state, id, &base)))
}

async fn delete_set(
    AxState(shared): AxState<AppState>,
    headers: HeaderMap,
    Path(path): Path<Params>,
) -> Handled {
    let id: u64 = number(&path, "id")?;
    let (mut state, scope) = admin(&shared, &headers)?;
    Ok(match state.ss_delete_set(&scope, id) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(DeleteSetError::NoSet) => set_not_found(id),
        Err(DeleteSetError::Busy(runner)) => service_error(
            StatusCode::BAD_REQUEST,
            DISTRIBUTED_TASK,
            "JobStillRunningException",
            &format!("The runner scale set {id} has a runner running a job ({runner})."),
        ),
    })
}

// ------------------------------------------------------------------------ sessions

#[derive(Default, Deserialize)]
#[serde(default)]
struct SessionBody {
    #[serde(rename = "ownerName")]
    owner_name: Option<String>,
}

/// The session answer: the whole client session (create and refresh alike).
fn session_json(
    state: &mut State,
    set_id: u64,
    session_id: &str,
    token: &str,
    base: &str,
) -> Value {
    let owner = state
        .ss()
        .sessions
        .get(session_id)
        .map(|s| s.owner.clone())
        .unwrap_or_default();
    let queue_url = if state.ss().faults.empty_queue_url > 0 {
        state.ss_mut().faults.empty_queue_url -= 1;
        String::new()
    } else {
        format!("{base}_apis/runtime/runnerscalesets/{set_id}/messages?sessionId={session_id}")
    };
    json!({
        "sessionId": session_id,
        "ownerName": owner,
        "runnerScaleSet": set_json(state, set_id, base),
        "messageQueueUrl": queue_url,
        "messageQueueAccessToken": token,
        "statistics": state.ss_statistics(set_id),
    })
}

async fn create_session(
    AxState(shared): AxState<AppState>,
    headers: HeaderMap,
    Path(path): Path<Params>,
    bytes: Bytes,
) -> Handled {
    let base = tenant_base(&shared, &headers, &path);
    let id: u64 = number(&path, "id")?;
    let (mut state, scope) = admin(&shared, &headers)?;
    let body: SessionBody = body(&bytes)?;
    let owner = body
        .owner_name
        .filter(|o| !o.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    Ok(match state.ss_create_session(&scope, id, owner) {
        Ok((session_id, token)) => {
            let answer = session_json(&mut state, id, &session_id, &token, &base);
            json_response(StatusCode::OK, &answer)
        }
        Err(SessionError::NoSet) => set_not_found(id),
        Err(SessionError::Conflict(name)) => service_error(
            StatusCode::CONFLICT,
            RUNTIME,
            "RunnerScaleSetSessionConflictException",
            &format!("The actions runner scaleset {name} already has an active session."),
        ),
    })
}

async fn refresh_session(
    AxState(shared): AxState<AppState>,
    headers: HeaderMap,
    Path(path): Path<Params>,
) -> Handled {
    let base = tenant_base(&shared, &headers, &path);
    let id: u64 = number(&path, "id")?;
    let session_id = path["session_id"].clone();
    let (mut state, scope) = admin(&shared, &headers)?;
    set_exists(&state, &scope, id)?;
    Ok(match state.ss_refresh_session(id, &session_id) {
        Some(token) => {
            let answer = session_json(&mut state, id, &session_id, &token, &base);
            json_response(StatusCode::OK, &answer)
        }
        None => service_error(
            StatusCode::NOT_FOUND,
            RUNTIME,
            "RunnerAdminException",
            &format!("Failed to refresh the session: session ID {session_id} that doesn't exist in redis."),
        ),
    })
}

async fn delete_session(
    AxState(shared): AxState<AppState>,
    headers: HeaderMap,
    Path(path): Path<Params>,
) -> Handled {
    let id: u64 = number(&path, "id")?;
    let session_id = path["session_id"].clone();
    let (mut state, scope) = admin(&shared, &headers)?;
    set_exists(&state, &scope, id)?;
    let known = state
        .ss()
        .sessions
        .get(&session_id)
        .is_some_and(|s| s.set_id == id);
    if known && state.ss_drop_session(&session_id) {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    Ok(service_error(
        StatusCode::BAD_REQUEST,
        RUNTIME,
        "RunnerScaleSetSessionExpiredException",
        &format!("The session identifier {session_id} is not valid."),
    ))
}

// ------------------------------------------------------------------------ runners

#[derive(Default, Deserialize)]
#[serde(default)]
struct JitBody {
    name: Option<String>,
    #[serde(rename = "workFolder")]
    work_folder: Option<String>,
}

async fn generate_jitconfig(
    AxState(shared): AxState<AppState>,
    headers: HeaderMap,
    Path(path): Path<Params>,
    bytes: Bytes,
) -> Handled {
    let server_url = server(&shared, &headers);
    let id: u64 = number(&path, "id")?;
    let (mut state, scope) = admin(&shared, &headers)?;
    let body: JitBody = body(&bytes)?;
    let Some(name) = body
        .name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
    else {
        return Ok(bad_request("The runner name is required."));
    };
    let Some(set) = state.ss_set(&scope, id) else {
        return Ok(set_not_found(id));
    };
    let (group_id, group_name) = (set.group_id, set.group_name.clone());
    let (runner_id, credential) = match state.ss_register_runner(id, name.clone()) {
        Ok(registered) => registered,
        Err(RegisterError::NameExists(_)) => {
            return Ok(service_error(
                StatusCode::CONFLICT,
                DISTRIBUTED_TASK,
                "AgentExistsException",
                &format!("A runner with the name {name} already exists in the pool."),
            ))
        }
        Err(_) => return Ok(set_not_found(id)),
    };
    let work_folder = body
        .work_folder
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "_work".to_owned());
    let encoded = encode_jit_config(&JitRunner {
        server_url: &server_url,
        scope: &scope,
        id: runner_id,
        name: &name,
        pool_id: group_id,
        pool_name: &group_name,
        work_folder: &work_folder,
        credential: &credential,
    });
    state.record_jit_config(&encoded);
    let runner = state
        .runner(runner_id)
        .map(|r| agent_json(&state, r))
        .unwrap_or(Value::Null);
    Ok(json_response(
        StatusCode::OK,
        &json!({ "runner": runner, "encodedJITConfig": encoded }),
    ))
}

fn agent_json(state: &State, runner: &Runner) -> Value {
    let now = state.clock.now();
    let labels: Vec<Value> = runner
        .labels
        .iter()
        .map(|l| json!({ "id": l.id, "name": l.name, "type": "system" }))
        .collect();
    json!({
        "id": runner.id,
        "name": runner.name,
        "version": runner.version.clone().unwrap_or_default(),
        "enabled": true,
        "status": if state.runner_online(runner, now) { "online" } else { "offline" },
        "busy": runner.job.is_some(),
        "ephemeral": runner.ephemeral,
        "runnerScaleSetId": runner.scale_set.unwrap_or(0),
        "labels": labels,
    })
}

fn agent_not_found(id: &str) -> Response {
    service_error(
        StatusCode::NOT_FOUND,
        DISTRIBUTED_TASK,
        "AgentNotFoundException",
        &format!("No agent found in pool with id {id}."),
    )
}

async fn get_agent(
    AxState(shared): AxState<AppState>,
    headers: HeaderMap,
    Path(path): Path<Params>,
) -> Handled {
    let (state, scope) = admin(&shared, &headers)?;
    let runner = path
        .get("runner_id")
        .and_then(|id| id.parse().ok())
        .and_then(|id| state.runner(id))
        .filter(|r| r.scope == scope);
    Ok(match runner {
        Some(runner) => json_response(StatusCode::OK, &agent_json(&state, runner)),
        None => agent_not_found(&path["runner_id"]),
    })
}

async fn agents_by_name(
    AxState(shared): AxState<AppState>,
    headers: HeaderMap,
    Query(query): Query<Params>,
) -> Handled {
    let (state, scope) = admin(&shared, &headers)?;
    let name = query.get("agentName");
    let runners: Vec<Value> = state
        .scope_runners(&scope)
        .filter(|r| name.is_none_or(|n| r.name == *n))
        .map(|r| agent_json(&state, r))
        .collect();
    Ok(json_response(StatusCode::OK, &list(runners)))
}

/// RemoveRunner: 204 when removed or already absent; 400 `JobStillRunningException` while it
/// holds a job.
async fn remove_agent(
    AxState(shared): AxState<AppState>,
    headers: HeaderMap,
    Path(path): Path<Params>,
) -> Handled {
    let (mut state, scope) = admin(&shared, &headers)?;
    let Some(runner) = path
        .get("runner_id")
        .and_then(|id| id.parse().ok())
        .and_then(|id| state.runner(id))
        .filter(|r| r.scope == scope)
    else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    if runner.job.is_some() {
        let message = format!("Runner {} is still running a job.", runner.name);
        return Ok(service_error(
            StatusCode::BAD_REQUEST,
            DISTRIBUTED_TASK,
            "JobStillRunningException",
            &message,
        ));
    }
    let id = runner.id;
    state.remove_runner(id);
    state.ss_pump();
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ------------------------------------------------------------------------ queue

/// The queue token of `Authorization: Bearer`.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("Bearer").then(|| token.trim())
}

/// The `(session, set)` of the queue token, for the set of the path; `Err` is the 401.
fn queue_session(
    state: &mut State,
    headers: &HeaderMap,
    set_id: u64,
) -> Result<String, Box<Response>> {
    let Some(token) = bearer(headers) else {
        return Err(Box::new(invalid_token(
            "The message queue token is missing.",
        )));
    };
    match state.ss_check_queue_token(token) {
        Ok((session, set)) if set == set_id => Ok(session),
        Ok(_) | Err(QueueAuthError::Unknown) => Err(Box::new(invalid_token(
            "The message queue token is not valid.",
        ))),
        Err(QueueAuthError::Expired) => Err(Box::new(invalid_token(
            "The message queue token has expired.",
        ))),
    }
}

/// Ends a session's long poll when dropped (finished or abandoned by the client).
struct PollGuard {
    shared: AppState,
    session: String,
}

impl Drop for PollGuard {
    fn drop(&mut self) {
        self.shared.state.lock().ss_poll_ended(&self.session);
    }
}

/// The queue long poll: the oldest un-acked message above `lastMessageId` at once, else wait
/// up to the configured time for one, else 202 with no body.
async fn get_message(
    AxState(shared): AxState<AppState>,
    headers: HeaderMap,
    Path(path): Path<Params>,
    Query(query): Query<Params>,
) -> Handled {
    let set_id: u64 = number(&path, "id")?;
    let last: i64 = match query.get("lastMessageId") {
        None => 0,
        Some(v) => match v.parse() {
            Ok(v) => v,
            Err(_) => return Ok(bad_request("lastMessageId is not valid.")),
        },
    };
    let capacity: i64 = match headers.get("x-scalesetmaxcapacity") {
        None => i64::from(i32::MAX),
        Some(v) => match v.to_str().ok().and_then(|v| v.trim().parse().ok()) {
            Some(c) if c >= 0 => c,
            _ => return Ok(bad_request("X-ScaleSetMaxCapacity is not valid.")),
        },
    };
    let (session, wait) = {
        let mut state = shared.state.lock();
        let session = queue_session(&mut state, &headers, set_id)?;
        if state.ss().faults.empty_body > 0 {
            state.ss_mut().faults.empty_body -= 1;
            return Ok(StatusCode::OK.into_response());
        }
        state.ss_poll_started(&session, set_id, capacity);
        (session, state.ss().cfg.poll_wait)
    };
    let _guard = PollGuard {
        shared: shared.clone(),
        session: session.clone(),
    };
    let deadline = tokio::time::Instant::now() + wait;
    let mut stop = shared.shutdown.clone();
    loop {
        let Some(notify) = shared.state.lock().ss_notify(set_id) else {
            return Ok(set_not_found(set_id));
        };
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        {
            let mut state = shared.state.lock();
            queue_session(&mut state, &headers, set_id)?;
            if let Some(envelope) = state.ss_next_message(set_id, last) {
                return Ok(json_response(StatusCode::OK, &envelope));
            }
        }
        let timed_out = tokio::select! {
            _ = notified => false,
            _ = tokio::time::sleep_until(deadline) => true,
            _ = stop.wait_for(|stopped| *stopped) => true,
        };
        if timed_out {
            return Ok(StatusCode::ACCEPTED.into_response());
        }
    }
}

async fn ack_message(
    AxState(shared): AxState<AppState>,
    headers: HeaderMap,
    Path(path): Path<Params>,
) -> Handled {
    let set_id: u64 = number(&path, "id")?;
    let message_id: i64 = number(&path, "message_id")?;
    let mut state = shared.state.lock();
    queue_session(&mut state, &headers, set_id)?;
    state.ss_ack(set_id, message_id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `acquirejobs` (GHES flow, queue token): the offered jobs won, as `{count, value}`; 404 in
/// hosted mode, as on github.com.
async fn acquire_jobs(
    AxState(shared): AxState<AppState>,
    headers: HeaderMap,
    Path(path): Path<Params>,
    bytes: Bytes,
) -> Handled {
    let set_id: u64 = number(&path, "id")?;
    let mut state = shared.state.lock();
    if state.ss().cfg.mode == super::AcquireMode::Hosted {
        return Ok(plain_error(StatusCode::NOT_FOUND, "Not Found"));
    }
    queue_session(&mut state, &headers, set_id)?;
    let ids: Vec<i64> = match serde_json::from_slice(&bytes) {
        Ok(ids) => ids,
        Err(e) => return Ok(bad_request(&format!("invalid body: {e}"))),
    };
    let won = state.ss_acquire(set_id, &ids);
    Ok(json_response(
        StatusCode::OK,
        &json!({ "count": won.len(), "value": won }),
    ))
}

/// The legacy `acquirablejobs`: the offered jobs (GHES), 204 when none.
async fn acquirable_jobs(
    AxState(shared): AxState<AppState>,
    headers: HeaderMap,
    Path(path): Path<Params>,
) -> Handled {
    let set_id: u64 = number(&path, "id")?;
    let (state, scope) = admin(&shared, &headers)?;
    set_exists(&state, &scope, set_id)?;
    let offered = state.ss_offered_messages(set_id);
    if offered.is_empty() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    Ok(json_response(StatusCode::OK, &list(offered)))
}
