//! A scripted GitHub stand-in: every expected call is listed in order, every call is recorded,
//! and `finish` fails the test if a call was missing, unexpected or out of order.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use github::{Auth, Client, ClientConfig, RetryPolicy, Scope, Secret};
use parking_lot::Mutex;
use url::Url;

/// One expected request and the scripted answer.
#[derive(Debug, Clone)]
pub struct Expect {
    method: String,
    path: String,
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
    delay: Option<Duration>,
}

pub fn expect(method: &str, path: &str) -> Expect {
    Expect {
        method: method.to_owned(),
        path: path.to_owned(),
        status: 200,
        headers: Vec::new(),
        body: String::new(),
        delay: None,
    }
}

impl Expect {
    pub fn status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }
    pub fn json(mut self, body: serde_json::Value) -> Self {
        self.body = body.to_string();
        self.headers
            .push(("content-type".into(), "application/json".into()));
        self
    }
    /// A body sent as is (e.g. with a BOM in front).
    pub fn raw(mut self, body: &str) -> Self {
        self.body = body.to_owned();
        self
    }
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }
    /// A GitHub error body.
    pub fn error(self, status: u16, message: &str) -> Self {
        self.status(status).json(serde_json::json!({
            "message": message,
            "documentation_url": "https://docs.github.com/rest",
            "status": status.to_string(),
        }))
    }
}

/// A request the server saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// As sent: origin-form (`/path?q`) or absolute-form through a proxy.
    pub uri: String,
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("request body is json")
    }
}

#[derive(Default)]
struct Shared {
    script: Mutex<VecDeque<Expect>>,
    seen: Mutex<Vec<Seen>>,
    problems: Mutex<Vec<String>>,
}

pub struct Server {
    pub url: Url,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Starts on 127.0.0.1 with the given script.
    pub async fn start(script: Vec<Expect>) -> Server {
        let shared = Arc::new(Shared::default());
        shared.script.lock().extend(script);
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        Server {
            url: Url::parse(&format!("http://{addr}")).expect("url"),
            shared,
            task,
        }
    }

    /// Appends more expected calls.
    pub fn push(&self, more: Vec<Expect>) {
        self.shared.script.lock().extend(more);
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().clone()
    }

    /// Asserts every scripted call happened, in order, and nothing else; returns what was seen.
    pub fn finish(&self) -> Vec<Seen> {
        let problems = self.shared.problems.lock().clone();
        assert!(problems.is_empty(), "unexpected calls: {problems:#?}");
        let left: Vec<_> = self
            .shared
            .script
            .lock()
            .iter()
            .map(|e| format!("{} {}", e.method, e.path))
            .collect();
        assert!(left.is_empty(), "expected calls never made: {left:#?}");
        self.seen()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = to_bytes(body, 1 << 20)
        .await
        .map(|b| b.to_vec())
        .unwrap_or_default();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let seen = Seen {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        path_and_query: path_and_query.clone(),
        headers: parts.headers.clone(),
        body,
    };
    shared.seen.lock().push(seen);
    let next = shared.script.lock().pop_front();
    let Some(next) = next else {
        shared.problems.lock().push(format!(
            "{} {path_and_query}: script exhausted",
            parts.method
        ));
        return plain(StatusCode::IM_A_TEAPOT, "script exhausted");
    };
    if next.method != parts.method.as_str() || next.path != path_and_query {
        shared.problems.lock().push(format!(
            "got {} {path_and_query}, expected {} {}",
            parts.method, next.method, next.path
        ));
        return plain(StatusCode::IM_A_TEAPOT, "unexpected call");
    }
    if let Some(delay) = next.delay {
        tokio::time::sleep(delay).await;
    }
    let mut response = Response::new(Body::from(next.body));
    *response.status_mut() = StatusCode::from_u16(next.status).expect("valid status");
    for (k, v) in next.headers {
        let name = axum::http::HeaderName::from_bytes(k.as_bytes()).expect("header name");
        response
            .headers_mut()
            .append(name, HeaderValue::from_str(&v).expect("header value"));
    }
    response
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = status;
    response
}

pub const TOKEN: &str = "ghp_test_token_123";

/// A client config for tests: tiny retry delays, short timeout.
pub fn config(server: &Url, scope: &str, auth: Auth) -> ClientConfig {
    let mut config = ClientConfig::new(
        server.clone(),
        Url::parse("https://github.example").expect("url"),
        Scope::parse(scope).expect("scope"),
        auth,
    );
    config.user_agent = "runner-manager-tests/1".into();
    config.timeout = Duration::from_secs(10);
    config.retry = RetryPolicy {
        max_retries: 3,
        min_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
    };
    config
}

/// [`config`] with the personal access token [`TOKEN`].
pub fn pat_config(server: &Url, scope: &str) -> ClientConfig {
    config(server, scope, Auth::Token(Secret::from(TOKEN)))
}

pub fn pat_client(server: &Server, scope: &str) -> Client {
    Client::new(pat_config(&server.url, scope)).expect("client")
}

pub fn runner_json(id: u64, name: &str) -> serde_json::Value {
    serde_json::json!({
        "id": id, "runner_group_id": 1, "name": name, "os": "linux", "status": "online",
        "busy": false, "ephemeral": true, "version": "2.329.0", "unknown_field": {"nested": true},
        "labels": [ {"id": 5, "name": "self-hosted", "type": "read-only"},
                    {"id": 11, "name": "jammy", "type": "custom"} ]
    })
}

pub fn runner_page(ids: std::ops::Range<u64>, total: u64) -> serde_json::Value {
    let runners: Vec<_> = ids
        .map(|i| runner_json(i, &format!("runner-{i}")))
        .collect();
    serde_json::json!({ "total_count": total, "runners": runners })
}

/// `x-ratelimit-*` headers.
pub fn budget(e: Expect, limit: u64, remaining: u64, reset: i64) -> Expect {
    e.header("x-ratelimit-limit", &limit.to_string())
        .header("x-ratelimit-remaining", &remaining.to_string())
        .header("x-ratelimit-used", &(limit - remaining).to_string())
        .header("x-ratelimit-reset", &reset.to_string())
        .header("x-ratelimit-resource", "core")
}

pub fn now_epoch() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}
