//! Test hooks under `/_sim/scalesets` (documented in `docs/sim-protocol.md`, "Runner scale
//! sets"): the state dump, sessions and messages, expiring sessions and tokens, the protocol's
//! faults, the run-time settings (the acquire mode among them) and killing a runner.

use std::time::Duration;

use axum::extract::{Path, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::json;

use super::{AcquireMode, ScaleSetConfig};
use crate::http::{json_response, plain_error, JsonBody};
use crate::server::AppState;
use crate::state::ScaleSetFaults;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/_sim/scalesets", get(dump))
        .route("/_sim/scalesets/sessions", get(sessions))
        .route(
            "/_sim/scalesets/sessions/{session_id}/expire",
            post(expire_session),
        )
        .route("/_sim/scalesets/{id}/messages", get(messages))
        .route("/_sim/scalesets/tokens/expire", post(expire_tokens))
        .route(
            "/_sim/scalesets/faults",
            get(faults).post(set_faults).delete(clear_faults),
        )
        .route("/_sim/scalesets/config", get(config).post(set_config))
        .route("/_sim/scalesets/mode", post(set_mode))
        .route("/_sim/scalesets/runners/{id}/kill", post(kill_runner))
}

async fn dump(AxState(shared): AxState<AppState>) -> Response {
    json_response(StatusCode::OK, &shared.state.lock().ss_dump())
}

async fn sessions(AxState(shared): AxState<AppState>) -> Response {
    json_response(StatusCode::OK, &shared.state.lock().ss_sessions_json())
}

async fn messages(AxState(shared): AxState<AppState>, Path(id): Path<u64>) -> Response {
    let state = shared.state.lock();
    if !state.ss().sets.contains_key(&id) {
        return plain_error(StatusCode::NOT_FOUND, "no such scale set");
    }
    json_response(StatusCode::OK, &state.ss_messages_json(id))
}

/// Drops a session as its expiry would: the set is free for a new session, its queue tokens
/// get 401.
async fn expire_session(
    AxState(shared): AxState<AppState>,
    Path(session_id): Path<String>,
) -> Response {
    if shared.state.lock().ss_drop_session(&session_id) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        plain_error(StatusCode::NOT_FOUND, "no such session")
    }
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ExpireTokensBody {
    admin: bool,
    queue: bool,
}

/// `{admin?, queue?}` (`{}`: both): every admin JWT and/or queue token handed out so far
/// expires (401 from now on); answers how many.
async fn expire_tokens(
    AxState(shared): AxState<AppState>,
    JsonBody(body): JsonBody<ExpireTokensBody>,
) -> Response {
    let both = !body.admin && !body.queue;
    let mut state = shared.state.lock();
    let mut admin = 0;
    if body.admin || both {
        let ss = state.ss_mut();
        let issued = ss.admin_issued.clone();
        admin = issued.len();
        ss.admin_revoked.extend(issued);
    }
    let queue = if body.queue || both {
        state.ss_expire_queue_tokens()
    } else {
        0
    };
    json_response(
        StatusCode::OK,
        &json!({ "admin_tokens": admin, "queue_tokens": queue }),
    )
}

async fn faults(AxState(shared): AxState<AppState>) -> Response {
    let faults = shared.state.lock().ss().faults.clone();
    json_response(StatusCode::OK, &json!(faults))
}

/// Replaces the protocol's faults (`{empty_body?, statistics_zero?, empty_queue_url?}`).
async fn set_faults(
    AxState(shared): AxState<AppState>,
    JsonBody(faults): JsonBody<ScaleSetFaults>,
) -> Response {
    shared.state.lock().ss_mut().faults = faults.clone();
    json_response(StatusCode::CREATED, &json!(faults))
}

async fn clear_faults(AxState(shared): AxState<AppState>) -> Response {
    shared.state.lock().ss_mut().faults = ScaleSetFaults::default();
    StatusCode::NO_CONTENT.into_response()
}

/// The settings as the hooks show them (durations in milliseconds).
fn config_json(cfg: &ScaleSetConfig) -> serde_json::Value {
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    json!({
        "mode": cfg.mode,
        "admin_token_ttl_ms": ms(cfg.admin_token_ttl),
        "queue_token_ttl_ms": ms(cfg.queue_token_ttl),
        "poll_wait_ms": ms(cfg.poll_wait),
        "session_timeout_ms": ms(cfg.session_timeout),
        "assign_timeout_ms": ms(cfg.assign_timeout),
        "reassign_delay_ms": ms(cfg.reassign_delay),
        "max_reassignments": cfg.max_reassignments,
        "lock_timeout_ms": ms(cfg.lock_timeout),
    })
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ConfigBody {
    mode: Option<AcquireMode>,
    admin_token_ttl_ms: Option<u64>,
    queue_token_ttl_ms: Option<u64>,
    poll_wait_ms: Option<u64>,
    session_timeout_ms: Option<u64>,
    assign_timeout_ms: Option<u64>,
    reassign_delay_ms: Option<u64>,
    max_reassignments: Option<u32>,
    lock_timeout_ms: Option<u64>,
}

async fn config(AxState(shared): AxState<AppState>) -> Response {
    json_response(StatusCode::OK, &config_json(&shared.state.lock().ss().cfg))
}

/// Changes the given settings; answers them all. Tokens already handed out keep their expiry.
async fn set_config(
    AxState(shared): AxState<AppState>,
    JsonBody(body): JsonBody<ConfigBody>,
) -> Response {
    let mut state = shared.state.lock();
    let cfg = &mut state.ss_mut().cfg;
    let set = |target: &mut Duration, ms: Option<u64>| {
        if let Some(ms) = ms {
            *target = Duration::from_millis(ms);
        }
    };
    if let Some(mode) = body.mode {
        cfg.mode = mode;
    }
    set(&mut cfg.admin_token_ttl, body.admin_token_ttl_ms);
    set(&mut cfg.queue_token_ttl, body.queue_token_ttl_ms);
    set(&mut cfg.poll_wait, body.poll_wait_ms);
    set(&mut cfg.session_timeout, body.session_timeout_ms);
    set(&mut cfg.assign_timeout, body.assign_timeout_ms);
    set(&mut cfg.reassign_delay, body.reassign_delay_ms);
    set(&mut cfg.lock_timeout, body.lock_timeout_ms);
    if let Some(max) = body.max_reassignments {
        cfg.max_reassignments = max;
    }
    let answer = config_json(cfg);
    state.ss_pump();
    json_response(StatusCode::OK, &answer)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModeBody {
    mode: AcquireMode,
}

/// `{mode: "ghes"|"hosted"}`: switches the acquire mode (jobs already offered or assigned keep
/// their state).
async fn set_mode(
    AxState(shared): AxState<AppState>,
    JsonBody(body): JsonBody<ModeBody>,
) -> Response {
    let mut state = shared.state.lock();
    state.ss_mut().cfg.mode = body.mode;
    state.ss_pump();
    json_response(StatusCode::OK, &config_json(&state.ss().cfg))
}

/// Kills a scale-set runner (its process and container gone): offline at once, takes no job,
/// and a job it holds ends `failed` after the lock timeout. 404 for an unknown or non-scale-set
/// runner.
async fn kill_runner(AxState(shared): AxState<AppState>, Path(id): Path<u64>) -> Response {
    if shared.state.lock().ss_kill_runner(id) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        plain_error(StatusCode::NOT_FOUND, "no such scale-set runner")
    }
}
