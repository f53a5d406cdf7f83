//! A pre-job policy service double: the two calls a runner's pre-job hook and the manager make.
//!
//! - `GET /one-time-token` with `Authorization: Bearer <service token>` issues an `ott-…` token
//!   (401 for any other service token);
//! - `POST /{event}/check-run` with `Authorization: Bearer <one-time token>` answers 204 when the
//!   token was issued and not used yet and jobs are allowed, 403 otherwise; a token is good for
//!   one check.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use parking_lot::Mutex;
use rand::Rng;

/// What the double has seen and how it answers; shared with its handlers.
#[derive(Default)]
struct State {
    allow: AtomicBool,
    checks: AtomicU64,
    /// How long a check takes before it answers, in milliseconds.
    check_delay_ms: AtomicU64,
    /// Every token issued.
    issued: Mutex<Vec<String>>,
    /// The issued tokens no check has used yet.
    unused: Mutex<Vec<String>>,
}

/// A running policy service double; it stops with the test's runtime.
pub struct PolicyService {
    url: String,
    state: Arc<State>,
}

impl PolicyService {
    /// Starts the double on `ip` (an ephemeral port), allowing jobs, for `service_token`.
    pub async fn start(ip: IpAddr, service_token: &str) -> Self {
        let state = Arc::new(State {
            allow: AtomicBool::new(true),
            ..State::default()
        });
        let expected = format!("Bearer {service_token}");
        let issue = {
            let state = state.clone();
            move |headers: HeaderMap| async move {
                if bearer(&headers).map(|t| format!("Bearer {t}")) != Some(expected) {
                    return (StatusCode::UNAUTHORIZED, String::new());
                }
                let token = format!("ott-{:032x}", rand::rng().random::<u128>());
                state.issued.lock().push(token.clone());
                state.unused.lock().push(token.clone());
                (StatusCode::OK, token)
            }
        };
        let check = {
            let state = state.clone();
            move |headers: HeaderMap| async move {
                state.checks.fetch_add(1, Ordering::SeqCst);
                let delay = state.check_delay_ms.load(Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(delay)).await;
                let token = bearer(&headers).unwrap_or_default();
                let known = {
                    let mut unused = state.unused.lock();
                    let found = unused.iter().position(|t| *t == token);
                    found.map(|i| unused.remove(i)).is_some()
                };
                if known && state.allow.load(Ordering::SeqCst) {
                    StatusCode::NO_CONTENT
                } else {
                    StatusCode::FORBIDDEN
                }
            }
        };
        let app = axum::Router::new()
            .route("/one-time-token", axum::routing::get(issue))
            .route("/{event}/check-run", axum::routing::post(check));
        Self {
            url: crate::http::serve(ip, app).await,
            state,
        }
    }

    /// `http://<ip>:<port>`, the service's base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether the next checks allow their jobs (they do at first).
    pub fn allow(&self, allow: bool) {
        self.state.allow.store(allow, Ordering::SeqCst);
    }

    /// How long each check waits before it answers (none at first).
    pub fn delay_checks(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.state.check_delay_ms.store(ms, Ordering::SeqCst);
    }

    /// How many checks were made.
    pub fn checks(&self) -> u64 {
        self.state.checks.load(Ordering::SeqCst)
    }

    /// Every one-time token issued so far.
    pub fn issued(&self) -> Vec<String> {
        self.state.issued.lock().clone()
    }
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned)
}
