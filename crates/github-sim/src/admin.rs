//! The admin API under `/_sim/` (see `docs/sim-protocol.md`): jobs, runners, counters, faults,
//! token rotation, webhooks, rate limits and the assign-on-delete hook.

use axum::extract::{Path, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::WebhookTarget;
use crate::http::{json_response, plain_error, JsonBody};
use crate::secret::Secret;
use crate::server::AppState;
use crate::state::{
    random_string, BusyLieSpec, FaultSpec, JobSpec, State, WebhookFaultSpec, ALNUM,
};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/_sim/jobs", post(enqueue_job).get(list_jobs))
        .route("/_sim/jobs/{id}", get(get_job))
        .route("/_sim/runners", get(list_runners))
        .route("/_sim/runners/freeze", post(freeze_runner))
        .route("/_sim/requests", get(requests).delete(reset_requests))
        .route(
            "/_sim/faults",
            post(add_fault).get(list_faults).delete(clear_faults),
        )
        .route(
            "/_sim/faults/busy-lie",
            post(set_busy_lie).get(busy_lie).delete(clear_busy_lie),
        )
        .route(
            "/_sim/faults/webhooks",
            post(set_webhook_fault)
                .get(webhook_fault)
                .delete(clear_webhook_fault),
        )
        .route("/_sim/tokens/rotate", post(rotate_token))
        .route("/_sim/webhooks", post(set_webhook).delete(clear_webhook))
        .route("/_sim/webhooks/deliveries", get(deliveries))
        .route("/_sim/hooks/assign-on-delete", post(assign_on_delete))
        .route("/_sim/rate-limit", post(set_rate_limit))
        .route("/_sim/secrets", get(issued_secrets))
}

/// Every registration token, remove token, JIT config and runner credential handed out so far,
/// for secret scans.
async fn issued_secrets(AxState(shared): AxState<AppState>) -> Response {
    to_json(StatusCode::OK, &shared.state.lock().issued_secrets())
}

/// 422 with the message of the first check that fails (`(passes, message)`), if any.
fn refused(checks: &[(bool, &str)]) -> Option<Response> {
    checks
        .iter()
        .find(|(passes, _)| !passes)
        .map(|(_, message)| plain_error(StatusCode::UNPROCESSABLE_ENTITY, message))
}

/// The check that a fault's `rate` is a fraction.
fn rate_check(rate: Option<f64>) -> (bool, &'static str) {
    (
        rate.is_none_or(|r| (0.0..=1.0).contains(&r)),
        "rate must be within 0..=1",
    )
}

/// The message of a zero `count`.
const COUNT_AT_LEAST_1: &str = "count must be at least 1";

fn to_json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_value(value) {
        Ok(value) => json_response(status, &value),
        Err(error) => plain_error(StatusCode::INTERNAL_SERVER_ERROR, &error.to_string()),
    }
}

/// Arms a fault once `checks` pass (see [`refused`]): 201 with what `arm` answers.
fn arm<T: serde::Serialize>(
    shared: &AppState,
    checks: &[(bool, &str)],
    arm: impl FnOnce(&mut State) -> T,
) -> Response {
    if let Some(response) = refused(checks) {
        return response;
    }
    let armed = arm(&mut shared.state.lock());
    to_json(StatusCode::CREATED, &armed)
}

/// Applies `change` to the state: 204.
fn changed(shared: &AppState, change: impl FnOnce(&mut State)) -> Response {
    change(&mut shared.state.lock());
    StatusCode::NO_CONTENT.into_response()
}

async fn enqueue_job(
    AxState(shared): AxState<AppState>,
    JsonBody(spec): JsonBody<JobSpec>,
) -> Response {
    match shared.state.lock().enqueue(spec) {
        Ok((job_id, run_id)) => json_response(
            StatusCode::CREATED,
            &json!({ "job_id": job_id, "run_id": run_id }),
        ),
        Err(message) => plain_error(StatusCode::UNPROCESSABLE_ENTITY, &message),
    }
}

async fn list_jobs(AxState(shared): AxState<AppState>) -> Response {
    to_json(StatusCode::OK, &shared.state.lock().job_views())
}

async fn get_job(AxState(shared): AxState<AppState>, Path(id): Path<u64>) -> Response {
    match shared.state.lock().job_view(id) {
        Some(job) => to_json(StatusCode::OK, &job),
        None => plain_error(StatusCode::NOT_FOUND, "no such job"),
    }
}

async fn list_runners(AxState(shared): AxState<AppState>) -> Response {
    to_json(StatusCode::OK, &shared.state.lock().runner_views())
}

async fn requests(AxState(shared): AxState<AppState>) -> Response {
    to_json(StatusCode::OK, &shared.state.lock().counters())
}

async fn reset_requests(AxState(shared): AxState<AppState>) -> Response {
    changed(&shared, State::reset_counters)
}

async fn add_fault(
    AxState(shared): AxState<AppState>,
    JsonBody(spec): JsonBody<FaultSpec>,
) -> Response {
    arm(
        &shared,
        &[rate_check(spec.rate)],
        |state| json!({ "fault_id": state.add_fault(spec) }),
    )
}

async fn list_faults(AxState(shared): AxState<AppState>) -> Response {
    let faults: Vec<Value> = shared
        .state
        .lock()
        .faults()
        .into_iter()
        .map(|(id, spec)| json!({ "fault_id": id, "fault": spec }))
        .collect();
    json_response(StatusCode::OK, &Value::Array(faults))
}

async fn clear_faults(AxState(shared): AxState<AppState>) -> Response {
    changed(&shared, State::clear_faults)
}

/// Arms the busy-lie fault (`{rate?, count?, seed?}`; `{}` = every busy runner, until cleared)
/// and answers its status.
async fn set_busy_lie(
    AxState(shared): AxState<AppState>,
    JsonBody(spec): JsonBody<BusyLieSpec>,
) -> Response {
    let checks = [
        rate_check(spec.rate),
        (spec.count != Some(0), COUNT_AT_LEAST_1),
    ];
    arm(&shared, &checks, |state| {
        state.set_busy_lie(Some(spec));
        state.busy_lie_status()
    })
}

/// The busy-lie fault (`fault`: null when off) and its counters, among them
/// `jobs_killed_by_deletion`.
async fn busy_lie(AxState(shared): AxState<AppState>) -> Response {
    to_json(StatusCode::OK, &shared.state.lock().busy_lie_status())
}

async fn clear_busy_lie(AxState(shared): AxState<AppState>) -> Response {
    changed(&shared, |state| state.set_busy_lie(None))
}

/// Makes the next `count` webhook deliveries fail (`{count, status?}`: a connection failure, or
/// the receiver "answering" `status`); answers the armed fault.
async fn set_webhook_fault(
    AxState(shared): AxState<AppState>,
    JsonBody(spec): JsonBody<WebhookFaultSpec>,
) -> Response {
    let checks = [
        (spec.count != 0, COUNT_AT_LEAST_1),
        (
            spec.status.is_none_or(|s| (100..=599).contains(&s)),
            "status must be within 100..=599",
        ),
    ];
    arm(&shared, &checks, |state| {
        state.set_webhook_fault(Some(spec));
        state.webhook_fault()
    })
}

/// The armed webhook fault (`count`: deliveries left), `null` when off.
async fn webhook_fault(AxState(shared): AxState<AppState>) -> Response {
    to_json(StatusCode::OK, &shared.state.lock().webhook_fault())
}

async fn clear_webhook_fault(AxState(shared): AxState<AppState>) -> Response {
    changed(&shared, |state| state.set_webhook_fault(None))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    token: Option<String>,
}

/// Replaces the accepted PAT with `token` (or a new random one) and returns it.
async fn rotate_token(
    AxState(shared): AxState<AppState>,
    JsonBody(body): JsonBody<RotateBody>,
) -> Response {
    let token = body
        .token
        .unwrap_or_else(|| format!("ghp_{}", random_string(ALNUM, 36)));
    shared.state.lock().token = Secret::new(token.clone());
    json_response(StatusCode::OK, &json!({ "token": token }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookBody {
    url: String,
    secret: String,
}

async fn set_webhook(
    AxState(shared): AxState<AppState>,
    JsonBody(body): JsonBody<WebhookBody>,
) -> Response {
    if url::Url::parse(&body.url).is_err() {
        return plain_error(StatusCode::UNPROCESSABLE_ENTITY, "url is not a valid URL");
    }
    let target = WebhookTarget {
        url: body.url,
        secret: Secret::new(body.secret),
    };
    changed(&shared, |state| state.webhook = Some(target))
}

async fn clear_webhook(AxState(shared): AxState<AppState>) -> Response {
    changed(&shared, |state| state.webhook = None)
}

async fn deliveries(AxState(shared): AxState<AppState>) -> Response {
    to_json(StatusCode::OK, &shared.state.lock().deliveries())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AssignOnDeleteBody {
    runner_name: Option<String>,
    enabled: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FreezeBody {
    name: String,
    frozen: bool,
}

/// `{name, frozen}`: freezes (or thaws) a runner's process as SIGSTOP would; 404 if unknown.
async fn freeze_runner(
    AxState(shared): AxState<AppState>,
    JsonBody(body): JsonBody<FreezeBody>,
) -> Response {
    if shared.state.lock().set_frozen(&body.name, body.frozen) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        StatusCode::NOT_FOUND.into_response()
    }
}

async fn assign_on_delete(
    AxState(shared): AxState<AppState>,
    JsonBody(body): JsonBody<AssignOnDeleteBody>,
) -> Response {
    let hook = body.enabled.then_some(body.runner_name);
    changed(&shared, |state| state.assign_on_delete = hook)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitBody {
    limit: Option<u32>,
    used: Option<u32>,
    secondary_per_minute: Option<u32>,
}

async fn set_rate_limit(
    AxState(shared): AxState<AppState>,
    JsonBody(body): JsonBody<RateLimitBody>,
) -> Response {
    changed(&shared, |state| {
        state.set_rate_limit(body.limit, body.used, body.secondary_per_minute)
    })
}
