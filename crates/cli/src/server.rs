//! The HTTP server of `run`.
//!
//! | Route | Auth | Does |
//! |---|---|---|
//! | `GET /health` | – | 200 with the daemon state (503 once shutting down) |
//! | `GET /metrics` | – | OpenMetrics text of the registry |
//! | `GET /runners` | – | the `status --json` document |
//! | `POST /reconcile` | Bearer `server.api_token` | one pass (coalesced with the daemon's), its result |
//! | `POST /flush[?idle_only=true]` | Bearer | flush, after any running pass |
//! | `POST /webhook` | `X-Hub-Signature-256` | `workflow_job` deliveries → prompt reconcile |
//!
//! Bodies above 1 MiB get 413. Without `server.api_token` or `server.webhook_secret` the routes
//! that need them answer 401 to everyone.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use serde_json::json;
use tower_http::limit::RequestBodyLimitLayer;
use tracing::{info, warn};

use crate::daemon::{
    Daemon, DaemonHandle, DaemonMetrics, DaemonSettings, PassError, TriggerSource,
};
use crate::ops::{FlushMode, Operations};
use crate::secret::{Secret, SecretExt};
use crate::webhook::{
    job_action, job_event, signature_is_valid, JobAction, LabelMatcher, WorkflowJobEvent,
};

/// The largest request body accepted (GitHub caps payloads at 25 MB, but `workflow_job`
/// deliveries are a few KiB).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Bound of `GET /runners` (GitHub and LXD are asked).
const STATUS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The content type of `GET /metrics`.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum EventLabel {
    WorkflowJob,
    Ping,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum OutcomeLabel {
    ReconcileTriggered,
    CleanupTriggered,
    NotMatched,
    Ignored,
    Pong,
    Unauthorized,
    Malformed,
    Unavailable,
}

impl EventLabel {
    fn as_str(self) -> &'static str {
        match self {
            Self::WorkflowJob => "workflow_job",
            Self::Ping => "ping",
            Self::Other => "other",
        }
    }
}

impl OutcomeLabel {
    fn as_str(self) -> &'static str {
        match self {
            Self::ReconcileTriggered => "reconcile_triggered",
            Self::CleanupTriggered => "cleanup_triggered",
            Self::NotMatched => "not_matched",
            Self::Ignored => "ignored",
            Self::Pong => "pong",
            Self::Unauthorized => "unauthorized",
            Self::Malformed => "malformed",
            Self::Unavailable => "unavailable",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DeliveryLabels {
    event: &'static str,
    outcome: &'static str,
}

/// Webhook metrics, registered next to the manager's.
#[derive(Clone, Default)]
pub struct ServerMetrics {
    deliveries: Family<DeliveryLabels, Counter>,
}

impl ServerMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "runner_manager_webhook_deliveries",
            "Webhook deliveries received, by event and outcome",
            metrics.deliveries.clone(),
        );
        metrics
    }
}

/// Who may call the API and which deliveries concern this manager.
#[derive(Clone)]
pub struct Access {
    pub api_token: Option<Secret>,
    pub webhook_secret: Option<Secret>,
    pub labels: LabelMatcher,
    /// `<app_name>-<unit>-`: a finished job on a runner with this prefix ran on ours.
    pub runner_prefix: String,
}

/// Everything the handlers need.
#[derive(Clone)]
pub struct ServerState {
    pub daemon: DaemonHandle,
    pub registry: Arc<Registry>,
    pub access: Access,
    pub metrics: ServerMetrics,
}

impl ServerState {
    /// A daemon over `ops` and the handlers' state around its handle: the daemon's metrics and
    /// the webhook metrics are registered in `registry`, which `GET /metrics` then serves.
    pub fn with_daemon(
        ops: Arc<dyn Operations>,
        settings: DaemonSettings,
        mut registry: Registry,
        access: Access,
    ) -> (Daemon, Self) {
        let daemon_metrics = DaemonMetrics::register(&mut registry);
        let metrics = ServerMetrics::register(&mut registry);
        let daemon = Daemon::new(ops, settings, daemon_metrics);
        let state = Self {
            daemon: daemon.handle(),
            registry: Arc::new(registry),
            access,
            metrics,
        };
        (daemon, state)
    }
}

/// The router, with the body limit applied.
pub fn router(state: ServerState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/runners", get(runners))
        .route("/reconcile", post(reconcile))
        .route("/flush", post(flush))
        .route("/webhook", post(webhook))
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .with_state(state)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn unauthorized(message: &str) -> Response {
    let mut response = error(StatusCode::UNAUTHORIZED, message);
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// Checks `Authorization: Bearer <server.api_token>` in constant time; the 401 response when
/// it does not match.
fn rejection(state: &ServerState, headers: &HeaderMap) -> Option<Response> {
    let Some(token) = &state.access.api_token else {
        return Some(unauthorized("server.api_token is not configured"));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, credentials) = value.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| credentials.trim())
        });
    match given {
        Some(given) if token.matches(given.as_bytes()) => None,
        _ => Some(unauthorized("missing or wrong bearer token")),
    }
}

async fn health(State(state): State<ServerState>) -> Response {
    let daemon = state.daemon.state();
    let status = if daemon.shutting_down {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let text = if daemon.shutting_down {
        "shutting_down"
    } else {
        "ok"
    };
    (status, Json(json!({ "status": text, "daemon": daemon }))).into_response()
}

async fn metrics(State(state): State<ServerState>) -> Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &state.registry) {
        Ok(()) => ([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], text).into_response(),
        Err(err) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics: {err}"),
        ),
    }
}

async fn runners(State(state): State<ServerState>) -> Response {
    match tokio::time::timeout(STATUS_TIMEOUT, state.daemon.ops().status()).await {
        Ok(Ok(status)) => Json(status).into_response(),
        Ok(Err(err)) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("{err:#}")),
        Err(_) => error(
            StatusCode::GATEWAY_TIMEOUT,
            format!("reading runner status timed out after {STATUS_TIMEOUT:?}"),
        ),
    }
}

async fn reconcile(State(state): State<ServerState>, headers: HeaderMap) -> Response {
    if let Some(response) = rejection(&state, &headers) {
        return response;
    }
    match state
        .daemon
        .reconcile_now(TriggerSource::Api, "POST /reconcile")
        .await
    {
        Ok(output) => Json(output).into_response(),
        Err(err @ (PassError::ShuttingDown | PassError::Standby(_))) => {
            error(StatusCode::SERVICE_UNAVAILABLE, err.to_string())
        }
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FlushQuery {
    #[serde(default)]
    idle_only: bool,
}

async fn flush(
    State(state): State<ServerState>,
    headers: HeaderMap,
    query: Result<Query<FlushQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Some(response) = rejection(&state, &headers) {
        return response;
    }
    let Query(query) = match query {
        Ok(query) => query,
        Err(rejection) => return error(StatusCode::BAD_REQUEST, rejection.body_text()),
    };
    let mode = if query.idle_only {
        FlushMode::IdleOnly
    } else {
        FlushMode::IncludingBusy
    };
    info!(message = "Flush requested over HTTP.", mode = ?mode);
    match state.daemon.flush(mode).await {
        Ok(output) => Json(output).into_response(),
        // `[ha]`: a standby does not act.
        Err(err) if err.is::<crate::ha::NotActive>() => {
            error(StatusCode::SERVICE_UNAVAILABLE, format!("{err:#}"))
        }
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("{err:#}")),
    }
}

async fn webhook(State(state): State<ServerState>, headers: HeaderMap, body: Bytes) -> Response {
    let event_name = headers
        .get("x-github-event")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let event = match event_name.as_str() {
        "workflow_job" => EventLabel::WorkflowJob,
        "ping" => EventLabel::Ping,
        _ => EventLabel::Other,
    };
    let (outcome, response) = webhook_outcome(&state, &headers, &event_name, event, &body).await;
    state
        .metrics
        .deliveries
        .get_or_create(&DeliveryLabels {
            event: event.as_str(),
            outcome: outcome.as_str(),
        })
        .inc();
    response
}

async fn webhook_outcome(
    state: &ServerState,
    headers: &HeaderMap,
    event_name: &str,
    event: EventLabel,
    body: &[u8],
) -> (OutcomeLabel, Response) {
    let Some(secret) = &state.access.webhook_secret else {
        return (
            OutcomeLabel::Unauthorized,
            error(
                StatusCode::UNAUTHORIZED,
                "server.webhook_secret is not configured",
            ),
        );
    };
    let signature = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok());
    if !signature_is_valid(secret, body, signature) {
        warn!(
            message = "Webhook delivery with a missing or wrong signature.",
            event = event_name
        );
        return (
            OutcomeLabel::Unauthorized,
            error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong X-Hub-Signature-256",
            ),
        );
    }
    let outcome = |status: StatusCode, label: OutcomeLabel, text: &str| {
        (
            label,
            (status, Json(json!({ "outcome": text }))).into_response(),
        )
    };
    match event {
        EventLabel::Ping => return outcome(StatusCode::OK, OutcomeLabel::Pong, "pong"),
        EventLabel::Other => {
            return outcome(StatusCode::ACCEPTED, OutcomeLabel::Ignored, "ignored")
        }
        EventLabel::WorkflowJob => {}
    }
    let payload: WorkflowJobEvent = match serde_json::from_slice(body) {
        Ok(payload) => payload,
        Err(err) => {
            return (
                OutcomeLabel::Malformed,
                error(
                    StatusCode::BAD_REQUEST,
                    format!("malformed workflow_job payload: {err}"),
                ),
            )
        }
    };
    // The job table first: demand survives a restart, and a delivery GitHub sees failing
    // (a 500) is one the recovery from GitHub's delivery log picks up later.
    let delivery = headers
        .get("x-github-delivery")
        .and_then(|v| v.to_str().ok());
    if let Some(job) = job_event(&payload, delivery, time::OffsetDateTime::now_utc()) {
        if let Err(err) = state.daemon.ops().record_job(&job).await {
            warn!(message = "Recording a workflow_job delivery failed.", job_id = job.job_id, error = %format!("{err:#}"));
            return (
                OutcomeLabel::Unavailable,
                error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("recording the job: {err:#}"),
                ),
            );
        }
    }
    let (source_detail, label, text) =
        match job_action(&payload, &state.access.labels, &state.access.runner_prefix) {
            JobAction::Reconcile { job_id } => (
                format!("workflow_job {job_id} queued"),
                OutcomeLabel::ReconcileTriggered,
                "reconcile_triggered",
            ),
            JobAction::Cleanup { job_id, runner } => (
                format!("workflow_job {job_id} completed on {runner}"),
                OutcomeLabel::CleanupTriggered,
                "cleanup_triggered",
            ),
            JobAction::NotOurLabels => {
                return outcome(
                    StatusCode::OK,
                    OutcomeLabel::NotMatched,
                    "labels_not_matched",
                )
            }
            JobAction::NotOurRunner => {
                return outcome(StatusCode::OK, OutcomeLabel::NotMatched, "not_our_runner")
            }
            JobAction::Ignored => return outcome(StatusCode::OK, OutcomeLabel::Ignored, "ignored"),
        };
    info!(message = "Webhook asks for a reconcile.", detail = %source_detail);
    if state.daemon.trigger(TriggerSource::Webhook, source_detail) {
        outcome(StatusCode::ACCEPTED, label, text)
    } else {
        (
            OutcomeLabel::Unavailable,
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "runner-manager is shutting down",
            ),
        )
    }
}
