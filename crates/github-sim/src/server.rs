//! The HTTP server: router, the request-counting/fault and GitHub gate middlewares, and
//! [`Sim`]/[`SimHandle`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State as AxState};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::auth::{self, Credentials, Identity};
use crate::config::{SimConfig, WebhookTarget};
use crate::http::{gh_error, gh_error_doc};
use crate::secret::Secret;
use crate::state::{
    BusyLieSpec, BusyLieStatus, Clock, DeliveryRecord, FaultSpec, IssuedSecrets, JobSpec,
    JobStatus, JobView, RateInfo, RequestCount, RunnerView, State, TokenKind, WebhookFaultSpec,
};
use crate::{admin, rest, runner_api, scaleset, webhook, Scope};

/// Errors starting the simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The listen address could not be bound.
    #[error("binding {addr}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The App public key is not an RSA public key in PEM.
    #[error("parsing the App public key")]
    AppKey(#[source] jsonwebtoken::errors::Error),
    /// An admin request was invalid.
    #[error("invalid request: {0}")]
    Invalid(String),
}

/// State shared by all handlers.
pub(crate) struct Shared {
    pub state: Mutex<State>,
    pub clock: Clock,
    pub shutdown: watch::Receiver<bool>,
    pub jwt_key: Option<jsonwebtoken::DecodingKey>,
    pub public_url: Option<String>,
    pub tarball: Option<Tarball>,
}

/// The runner tarball served by the downloads endpoint.
pub(crate) struct Tarball {
    pub bytes: axum::body::Bytes,
    pub sha256: String,
}

pub(crate) type AppState = Arc<Shared>;

/// Rate-limit points a response cost (set by the gate, read by the counter).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RateCost(pub u64);

/// Unwind payload that makes hyper drop the connection (a "connection drop" fault).
struct DropConnection;

/// `"METHOD /template"`, with the `/api/v3` prefix removed.
fn endpoint_key(method: &Method, matched: Option<&MatchedPath>) -> String {
    let template = matched.map(MatchedPath::as_str).unwrap_or("(unmatched)");
    let template = template
        .strip_prefix("/api/v3")
        .filter(|t| !t.is_empty())
        .unwrap_or(template);
    format!("{method} {template}")
}

/// Counts requests per endpoint and applies injected faults. Not applied to `/_sim/`.
async fn count_and_fault(AxState(shared): AxState<AppState>, req: Request, next: Next) -> Response {
    let key = endpoint_key(req.method(), req.extensions().get::<MatchedPath>());
    if key
        .split(' ')
        .nth(1)
        .is_some_and(|t| t.starts_with("/_sim/"))
    {
        return next.run(req).await;
    }
    let fault = {
        let mut state = shared.state.lock();
        state.count_request(&key);
        state.take_fault(&key)
    };
    if let Some(fault) = fault {
        if let Some(latency) = fault.latency {
            tokio::time::sleep(latency).await;
        }
        if fault.drop {
            std::panic::resume_unwind(Box::new(DropConnection));
        }
        if let Some(status) = fault.status {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let message = fault
                .message
                .unwrap_or_else(|| status.canonical_reason().unwrap_or("Error").to_owned());
            let mut response = gh_error(status, &message);
            if let Some(retry) = fault.retry_after {
                response
                    .headers_mut()
                    .insert("retry-after", HeaderValue::from(retry));
            }
            return response;
        }
    }
    let response = next.run(req).await;
    let cost = response.extensions().get::<RateCost>().map_or(0, |c| c.0);
    let not_modified = response.status() == StatusCode::NOT_MODIFIED;
    shared.state.lock().count_result(&key, cost, not_modified);
    response
}

/// Endpoints authenticated with an App JWT.
fn is_app_endpoint(template: &str) -> bool {
    template.starts_with("/app") || template.ends_with("/installation")
}

/// POSTs that create content (tokens, JIT configs): subject to the secondary limit.
fn is_content_creating(method: &Method, template: &str) -> bool {
    *method == Method::POST
        && [
            "/registration-token",
            "/remove-token",
            "/generate-jitconfig",
            "/access_tokens",
        ]
        .iter()
        .any(|suffix| template.ends_with(suffix))
}

const RATE_DOCS: &str =
    "https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api";

/// Authenticates a REST request. `Err` is the 401/403 answer.
fn authenticate(shared: &Shared, req: &Request, template: &str) -> Result<Identity, Box<Response>> {
    let header = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    let app_endpoint = is_app_endpoint(template);
    let Some(header) = header else {
        if template == "/rate_limit" {
            return Ok(Identity::Anonymous);
        }
        return Err(Box::new(gh_error(
            StatusCode::UNAUTHORIZED,
            "Requires authentication",
        )));
    };
    let bad = || Box::new(gh_error(StatusCode::UNAUTHORIZED, "Bad credentials"));
    let (token, bearer) = match auth::parse_authorization(header) {
        Credentials::Bearer(t) => (t, true),
        Credentials::Token(t) => (t, false),
        Credentials::Other => return Err(bad()),
    };
    if auth::looks_like_jwt(token) {
        let (Some(key), Some(app)) = (
            shared.jwt_key.as_ref(),
            shared.state.lock().config.app.clone(),
        ) else {
            return Err(bad());
        };
        if !bearer {
            return Err(bad());
        }
        let now = shared.clock.epoch_secs(shared.clock.now());
        auth::verify_jwt(key, &app, token, now)
            .map_err(|m| Box::new(gh_error(StatusCode::UNAUTHORIZED, m)))?;
        if !app_endpoint && template != "/rate_limit" {
            return Err(Box::new(gh_error(
                StatusCode::FORBIDDEN,
                "Resource not accessible by integration",
            )));
        }
        return Ok(Identity::App);
    }
    let identity = {
        let state = shared.state.lock();
        let pat_matches: bool =
            subtle::ConstantTimeEq::ct_eq(state.token.expose().as_bytes(), token.as_bytes()).into();
        if pat_matches {
            Some(Identity::Pat)
        } else {
            state
                .check_installation_token(token)
                .map(Identity::Installation)
        }
    };
    let identity = identity.ok_or_else(bad)?;
    if app_endpoint {
        return Err(Box::new(gh_error(
            StatusCode::UNAUTHORIZED,
            "A JSON web token could not be decoded",
        )));
    }
    Ok(identity)
}

fn set_rate_headers(response: &mut Response, limit: u32, remaining: u32, used: u32, reset: i64) {
    let headers = response.headers_mut();
    headers.insert("x-ratelimit-limit", HeaderValue::from(limit));
    headers.insert("x-ratelimit-remaining", HeaderValue::from(remaining));
    headers.insert("x-ratelimit-used", HeaderValue::from(used));
    headers.insert("x-ratelimit-reset", HeaderValue::from(reset));
    headers.insert("x-ratelimit-resource", HeaderValue::from_static("core"));
}

/// The `x-ratelimit-*` headers of `info` and GitHub's other headers, on an authenticated answer.
fn budget_headers(response: &mut Response, info: RateInfo) {
    set_rate_headers(response, info.limit, info.remaining, info.used, info.reset);
    github_headers(response);
}

/// The budget of `bucket`, after giving this request's charge back if `refund`.
fn budget_after(shared: &Shared, bucket: &str, refund: bool) -> RateInfo {
    let mut state = shared.state.lock();
    if refund {
        state.rate_refund(bucket);
    }
    state.rate_info(bucket)
}

fn github_headers(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(
        "x-github-media-type",
        HeaderValue::from_static("github.v3; format=json"),
    );
    headers.insert(
        "x-github-api-version-selected",
        HeaderValue::from_static("2022-11-28"),
    );
    let request_id = format!("{:X}", rand::random::<u64>());
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        headers.insert("x-github-request-id", value);
    }
}

/// The GitHub gate for REST requests: User-Agent, API version, authentication, primary and
/// secondary rate limits, ETag/304, and the `x-ratelimit-*` headers.
async fn github_gate(AxState(shared): AxState<AppState>, mut req: Request, next: Next) -> Response {
    let template = endpoint_key(req.method(), req.extensions().get::<MatchedPath>());
    let template = template
        .split_once(' ')
        .map(|(_, t)| t.to_owned())
        .unwrap_or_default();
    let anonymous = |mut response: Response, shared: &Shared| {
        let reset = shared
            .clock
            .epoch_secs(shared.clock.now() + Duration::from_secs(3600));
        set_rate_headers(&mut response, 60, 60, 0, reset);
        github_headers(&mut response);
        response
    };
    if req
        .headers()
        .get("user-agent")
        .is_none_or(|v| v.as_bytes().is_empty())
    {
        let response = gh_error_doc(
            StatusCode::FORBIDDEN,
            "Request forbidden by administrative rules. Please make sure your request has a User-Agent header (https://docs.github.com/en/rest/overview/resources-in-the-rest-api#user-agent-required). Check https://developer.github.com for other possible causes.",
            "https://docs.github.com/en/rest/overview/resources-in-the-rest-api#user-agent-required",
        );
        return anonymous(response, &shared);
    }
    if let Some(version) = req.headers().get("x-github-api-version") {
        if version.as_bytes() != b"2022-11-28" && version.as_bytes() != b"2026-03-10" {
            let message = format!(
                "API version {} is not supported.",
                String::from_utf8_lossy(version.as_bytes())
            );
            return anonymous(gh_error(StatusCode::BAD_REQUEST, &message), &shared);
        }
    }
    let identity = match authenticate(&shared, &req, &template) {
        Ok(identity) => identity,
        Err(response) => return anonymous(*response, &shared),
    };
    let bucket = identity.bucket();
    let free = template == "/rate_limit" || identity == Identity::Anonymous;
    if !free {
        let charged = shared.state.lock().rate_charge(&bucket);
        if let Err(info) = charged {
            let who = match &identity {
                Identity::Installation(id) => format!("installation ID {id}"),
                _ => "user ID 1".to_owned(),
            };
            let message = format!("API rate limit exceeded for {who}. If you reach out to GitHub Support for help, please include the request ID.");
            let mut response = gh_error_doc(StatusCode::FORBIDDEN, &message, RATE_DOCS);
            budget_headers(
                &mut response,
                RateInfo {
                    remaining: 0,
                    ..info
                },
            );
            return response;
        }
    }
    if is_content_creating(req.method(), &template) {
        let secondary = shared.state.lock().secondary_charge(&bucket);
        if let Err(retry_after) = secondary {
            let info = budget_after(&shared, &bucket, !free);
            let mut response = gh_error_doc(
                StatusCode::FORBIDDEN,
                "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. If you reach out to GitHub Support for help, please include the request ID.",
                RATE_DOCS,
            );
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from(retry_after));
            budget_headers(&mut response, info);
            return response;
        }
    }
    let is_get = req.method() == Method::GET;
    let if_none_match = req.headers().get("if-none-match").cloned();
    req.extensions_mut().insert(identity.clone());
    let response = next.run(req).await;
    let mut response = if is_get && response.status() == StatusCode::OK {
        apply_etag(response, if_none_match).await
    } else {
        response
    };
    let not_modified = response.status() == StatusCode::NOT_MODIFIED;
    let info = budget_after(&shared, &bucket, !free && not_modified);
    if identity == Identity::Anonymous {
        response = anonymous(response, &shared);
    } else {
        budget_headers(&mut response, info);
    }
    let cost = u64::from(!free && !not_modified);
    response.extensions_mut().insert(RateCost(cost));
    response
}

/// Adds a weak ETag to a 200 GET answer, or answers 304 when `If-None-Match` matches it.
async fn apply_etag(response: Response, if_none_match: Option<HeaderValue>) -> Response {
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 << 20).await else {
        return gh_error(StatusCode::INTERNAL_SERVER_ERROR, "Server Error");
    };
    let digest = hex::encode(Sha256::digest(&bytes));
    let etag = format!("W/\"{}\"", &digest[..32]);
    let matches = if_none_match
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .map(|t| t.trim().trim_start_matches("W/"))
                .any(|t| t == "*" || t == etag.trim_start_matches("W/"))
        });
    let etag_value = HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"0\""));
    parts.headers.insert("etag", etag_value);
    parts.headers.insert(
        "cache-control",
        HeaderValue::from_static("private, max-age=60, s-maxage=60"),
    );
    parts.headers.insert(
        "vary",
        HeaderValue::from_static("Accept, Authorization, Cookie, X-GitHub-OTP"),
    );
    if matches {
        parts.status = StatusCode::NOT_MODIFIED;
        parts.headers.remove("content-type");
        parts.headers.remove("content-length");
        return Response::from_parts(parts, Body::empty());
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// Unknown paths (and known paths with another method) are 404, as on GitHub.
async fn fallback(AxState(shared): AxState<AppState>) -> Response {
    let mut response = crate::http::not_found();
    let reset = shared
        .clock
        .epoch_secs(shared.clock.now() + Duration::from_secs(3600));
    set_rate_headers(&mut response, 60, 60, 0, reset);
    response
}

fn router(shared: AppState) -> Router {
    let rest = rest::routes().layer(middleware::from_fn_with_state(shared.clone(), github_gate));
    Router::new()
        .merge(rest.clone())
        .nest("/api/v3", rest)
        .merge(runner_api::routes())
        .merge(scaleset::routes())
        .merge(admin::routes())
        .fallback(fallback)
        .method_not_allowed_fallback(fallback)
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            count_and_fault,
        ))
        .with_state(shared)
}

/// Starts simulators.
#[derive(Debug)]
pub struct Sim;

impl Sim {
    /// Binds `config.listen` and serves until the handle is dropped or shut down.
    pub async fn start(config: SimConfig) -> Result<SimHandle, SimError> {
        let jwt_key = match &config.app {
            Some(app) => Some(
                jsonwebtoken::DecodingKey::from_rsa_pem(app.public_key_pem.as_bytes())
                    .map_err(SimError::AppKey)?,
            ),
            None => None,
        };
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| SimError::Bind {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| SimError::Bind {
            addr: config.listen,
            source,
        })?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (webhook_tx, webhook_rx) = mpsc::unbounded_channel();
        let clock = Clock::new();
        let silence = config.silence_timeout;
        let public_url = config.public_url.clone();
        let mut config = config;
        let published = config.runner_tarball_sha256.take();
        let tarball = config.runner_tarball.take().map(|bytes| Tarball {
            sha256: published.unwrap_or_else(|| hex::encode(Sha256::digest(&bytes))),
            bytes: bytes.into(),
        });
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(config, clock, webhook_tx)),
            clock,
            shutdown: shutdown_rx.clone(),
            jwt_key,
            public_url,
            tarball,
        });
        let app = router(shared.clone());
        let mut stop = shutdown_rx.clone();
        let server = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stop.wait_for(|stopped| *stopped).await;
            });
            if let Err(error) = serve.await {
                tracing::warn!(message = "github-sim server stopped", %error);
            }
        });
        tokio::spawn(reaper(shared.clone(), silence));
        tokio::spawn(webhook::deliver(shared.clone(), webhook_rx));
        Ok(SimHandle {
            addr,
            shared,
            shutdown_tx,
            server: Some(server),
        })
    }
}

/// Periodic housekeeping (see [`State::reap`]).
async fn reaper(shared: AppState, silence: Duration) {
    let tick = (silence / 4).clamp(Duration::from_millis(20), Duration::from_secs(1));
    let mut stop = shared.shutdown.clone();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => shared.state.lock().reap(),
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
    }
}

/// A running simulator. Dropping it shuts the server down.
pub struct SimHandle {
    addr: SocketAddr,
    shared: AppState,
    shutdown_tx: watch::Sender<bool>,
    server: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl SimHandle {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://HOST:PORT` (the bound address; `0.0.0.0` is reported as `127.0.0.1`).
    pub fn base_url(&self) -> String {
        let mut addr = self.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        format!("http://{addr}")
    }

    /// The web URL (`config.sh --url` is built from it): same as [`SimHandle::base_url`].
    pub fn web_url(&self) -> String {
        self.base_url()
    }

    /// The REST API URL, GHES style: `http://HOST:PORT/api/v3`.
    pub fn api_url(&self) -> String {
        format!("{}/api/v3", self.base_url())
    }

    /// The `config.sh --url` of a scope, e.g. `http://HOST:PORT/octo/app`.
    pub fn scope_url(&self, scope: &Scope) -> String {
        format!("{}/{}", self.base_url(), scope.path())
    }

    /// The personal access token accepted now.
    pub fn token(&self) -> Secret {
        self.shared.state.lock().token.clone()
    }

    /// Replaces the accepted personal access token.
    pub fn rotate_token(&self, token: impl Into<String>) {
        self.shared.state.lock().token = Secret::new(token.into());
    }

    /// Issues a registration token for a scope directly (no HTTP, no rate cost).
    pub fn registration_token(&self, scope: &Scope) -> Result<Secret, SimError> {
        let mut state = self.shared.state.lock();
        let scope = state
            .resolve_scope(scope)
            .ok_or_else(|| SimError::Invalid(format!("unknown scope {scope}")))?;
        Ok(Secret::new(
            state.issue_token(TokenKind::Registration, scope).0,
        ))
    }

    /// Every registration token, remove token, JIT config and runner credential handed out so
    /// far (also `GET /_sim/secrets`).
    pub fn issued_secrets(&self) -> IssuedSecrets {
        self.shared.state.lock().issued_secrets()
    }

    /// Enqueues a job; returns its id.
    pub fn enqueue_job(&self, spec: JobSpec) -> Result<u64, SimError> {
        self.shared
            .state
            .lock()
            .enqueue(spec)
            .map(|(id, _)| id)
            .map_err(SimError::Invalid)
    }

    /// A job's status.
    pub fn job(&self, id: u64) -> Option<JobView> {
        self.shared.state.lock().job_view(id)
    }

    /// All jobs.
    pub fn jobs(&self) -> Vec<JobView> {
        self.shared.state.lock().job_views()
    }

    /// Waits until a job completes (polling), or `timeout` passes.
    pub async fn wait_for_job(&self, id: u64, timeout: Duration) -> Option<JobView> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let job = self.job(id);
            if job
                .as_ref()
                .is_some_and(|j| j.status == JobStatus::Completed)
            {
                return job;
            }
            if tokio::time::Instant::now() >= deadline {
                return job;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every runner of every scope.
    pub fn runners(&self) -> Vec<RunnerView> {
        self.shared.state.lock().runner_views()
    }

    /// Per-endpoint request counters (`"METHOD /template"`).
    pub fn request_counts(&self) -> BTreeMap<String, RequestCount> {
        self.shared.state.lock().counters()
    }

    /// Clears the request counters.
    pub fn reset_request_counts(&self) {
        self.shared.state.lock().reset_counters();
    }

    /// Injects a fault; returns its id.
    pub fn inject_fault(&self, fault: FaultSpec) -> u64 {
        self.shared.state.lock().add_fault(fault)
    }

    /// Removes every fault, the busy-lie fault included.
    pub fn clear_faults(&self) {
        self.shared.state.lock().clear_faults();
    }

    /// Arms (`Some`) or disarms (`None`) the busy-lie fault: runners holding a job are reported
    /// `busy: false` by the REST list and get, and their `DELETE` succeeds, killing the job (see
    /// [`BusyLieSpec`]; also `POST /_sim/faults/busy-lie`).
    pub fn set_busy_lie(&self, spec: Option<BusyLieSpec>) {
        self.shared.state.lock().set_busy_lie(spec);
    }

    /// The busy-lie fault and its counters, e.g. the jobs killed by deletion.
    pub fn busy_lie(&self) -> BusyLieStatus {
        self.shared.state.lock().busy_lie_status()
    }

    /// Sets (or clears) the webhook target.
    pub fn set_webhook(&self, target: Option<WebhookTarget>) {
        self.shared.state.lock().webhook = target;
    }

    /// Webhook deliveries made so far.
    pub fn webhook_deliveries(&self) -> Vec<DeliveryRecord> {
        self.shared.state.lock().deliveries()
    }

    /// Makes the next deliveries fail without reaching the receiver (`None` disarms; also
    /// `POST /_sim/faults/webhooks`).
    pub fn set_webhook_fault(&self, spec: Option<WebhookFaultSpec>) {
        self.shared.state.lock().set_webhook_fault(spec);
    }

    /// Freezes or thaws a runner's process (SIGSTOP/SIGCONT): a frozen runner is not handed the
    /// job assigned to it. `false` if there is no such runner.
    pub fn set_frozen(&self, name: &str, frozen: bool) -> bool {
        self.shared.state.lock().set_frozen(name, frozen)
    }

    /// Arms (or disarms) the assign-on-delete hook: on the next REST `DELETE` of that runner (any
    /// runner when `runner_name` is `None`), a matching job is assigned to it first, so the
    /// `DELETE` answers 422.
    pub fn set_assign_on_delete(&self, runner_name: Option<&str>, enabled: bool) {
        self.shared.state.lock().assign_on_delete = enabled.then(|| runner_name.map(str::to_owned));
    }

    /// Changes the primary budget (`limit`), the current usage (`used`) and the secondary limit.
    pub fn set_rate_limit(
        &self,
        limit: Option<u32>,
        used: Option<u32>,
        secondary_per_minute: Option<u32>,
    ) {
        self.shared
            .state
            .lock()
            .set_rate_limit(limit, used, secondary_per_minute);
    }

    /// The runner scale sets, their jobs (with `runs`, the times each was handed to a runner),
    /// runners, messages and sessions (also `GET /_sim/scalesets`).
    pub fn scalesets(&self) -> serde_json::Value {
        self.shared.state.lock().ss_dump()
    }

    /// Switches the scale sets' acquire mode (also `POST /_sim/scalesets/mode`).
    pub fn set_scaleset_mode(&self, mode: crate::AcquireMode) {
        let mut state = self.shared.state.lock();
        state.ss_mut().cfg.mode = mode;
        state.ss_pump();
    }

    /// Replaces the scale-set protocol's faults (also `POST /_sim/scalesets/faults`).
    pub fn set_scaleset_faults(&self, faults: crate::ScaleSetFaults) {
        self.shared.state.lock().ss_mut().faults = faults;
    }

    /// Drops a scale-set session as its expiry would; `false` if there is no such session.
    pub fn expire_scaleset_session(&self, session_id: &str) -> bool {
        self.shared.state.lock().ss_drop_session(session_id)
    }

    /// Kills a scale-set runner: its job ends `failed` after the lock timeout (also
    /// `POST /_sim/scalesets/runners/{id}/kill`); `false` if it is no scale-set runner.
    pub fn kill_scaleset_runner(&self, runner_id: u64) -> bool {
        self.shared.state.lock().ss_kill_runner(runner_id)
    }

    /// Stops the server and waits (at most 5 s) for it to finish.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown_tx.send(true);
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        let _ = self.shutdown_tx.send(true);
    }
}
