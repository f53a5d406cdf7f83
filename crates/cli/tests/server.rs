//! The HTTP API: health, metrics, runners, bearer-protected POSTs and signed webhooks.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use common::FakeOps;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use runner_manager::daemon::DaemonSettings;
use runner_manager::ops::FlushMode;
use runner_manager::secret::{Secret, SecretExt};
use runner_manager::server::{
    router, Access, ServerState, MAX_BODY_BYTES, OPENMETRICS_CONTENT_TYPE,
};
use runner_manager::webhook::{sign, LabelMatcher};
use tower::ServiceExt;

const API_TOKEN: &str = "api-token-for-tests";
const WEBHOOK_SECRET: &str = "It's a Secret to Everybody";

struct Harness {
    app: Router,
    ops: Arc<FakeOps>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn harness_with(api_token: Option<&str>, webhook_secret: Option<&str>) -> Harness {
    let ops = FakeOps::new();
    let mut registry = Registry::default();
    // Stands in for the manager's metrics.
    let runners = Gauge::<i64>::default();
    runners.set(3);
    registry.register("runner_manager_runners", "Runners by state", runners);
    let settings = DaemonSettings {
        update_runner_bin_at_start: false,
        ..DaemonSettings::new(3, Duration::from_secs(3_600))
    };
    let access = Access {
        api_token: api_token.and_then(Secret::non_empty),
        webhook_secret: webhook_secret.and_then(Secret::non_empty),
        labels: LabelMatcher::new(["self-hosted", "github-runner", "jammy", "gpu"]),
        runner_prefix: "github-runner-0-".into(),
    };
    let (daemon, state) = ServerState::with_daemon(ops.clone(), settings, registry, access);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(daemon.run(async move {
        let _ = stopped.await;
    }));
    Harness {
        app: router(state),
        ops,
        stop: Some(stop),
    }
}

fn harness() -> Harness {
    harness_with(Some(API_TOKEN), Some(WEBHOOK_SECRET))
}

async fn send(app: &Router, request: Request<Body>) -> (StatusCode, String, Option<String>) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned());
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        String::from_utf8_lossy(&body).into_owned(),
        content_type,
    )
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

fn post(path: &str, token: Option<&str>) -> Request<Body> {
    let mut builder = Request::post(path);
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    builder.body(Body::empty()).unwrap()
}

fn webhook(event: &str, body: &[u8], signature: Option<&str>) -> Request<Body> {
    let mut builder = Request::post("/webhook")
        .header("x-github-event", event)
        .header("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958")
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(signature) = signature {
        builder = builder.header("x-hub-signature-256", signature);
    }
    builder.body(Body::from(body.to_vec())).unwrap()
}

fn signed_webhook(event: &str, body: &str) -> Request<Body> {
    let signature = sign(&Secret::new(WEBHOOK_SECRET), body.as_bytes());
    webhook(event, body.as_bytes(), Some(&signature))
}

fn job(action: &str, labels: &[&str], runner: Option<&str>) -> String {
    serde_json::json!({
        "action": action,
        "workflow_job": {"id": 2832853555u64, "run_id": 940463255, "labels": labels, "runner_name": runner,
                         "status": action, "conclusion": null},
        "repository": {"full_name": "octo-org/app"},
    })
    .to_string()
}

/// Sends `body` as a signed `workflow_job` delivery and asserts the answer.
async fn assert_job_answer(app: &Router, body: String, status: StatusCode, answer: &str) {
    let (got_status, got, _) = send(app, signed_webhook("workflow_job", &body)).await;
    assert_eq!(
        (got_status, got.as_str()),
        (status, answer),
        "delivery of {body}"
    );
}

/// A runner of ours (the harness's prefix is `github-runner-0-`).
const OURS: &str = "github-runner-0-a1b2";

/// A `workflow_job` delivery and its answer: `(action, labels, runner, status, outcome,
/// passes)`: with `Some(passes)`, the fake has seen `passes` reconciles within a second.
type Delivery<'a> = (
    &'a str,
    &'a [&'a str],
    Option<&'a str>,
    u16,
    &'a str,
    Option<usize>,
);

/// Sends each delivery as a signed `workflow_job`, asserts the answer (`{"outcome": outcome}`
/// with `status`) and waits for the passes it names.
async fn assert_deliveries(h: &Harness, deliveries: &[Delivery<'_>]) {
    for &(action, labels, runner, status, outcome, passes) in deliveries {
        let status = StatusCode::from_u16(status).unwrap();
        let answer = format!(r#"{{"outcome":"{outcome}"}}"#);
        assert_job_answer(&h.app, job(action, labels, runner), status, &answer).await;
        if let Some(passes) = passes {
            assert!(
                wait_for_passes(&h.ops, passes, Duration::from_secs(1)).await,
                "pass {passes} within a second of {outcome}"
            );
        }
    }
}

/// Waits (real time) until the fake has seen `passes` reconciles; false after `within`.
async fn wait_for_passes(ops: &FakeOps, passes: usize, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if ops.passes() >= passes {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test]
async fn health_and_runners() {
    let h = harness();
    let (status, body, _) = send(&h.app, get("/health")).await;
    assert_eq!(status, StatusCode::OK);
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ok");

    let (status, body, _) = send(&h.app, get("/runners")).await;
    assert_eq!(status, StatusCode::OK);
    let runners: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(runners["runners"][1]["busy"], true);
    assert_eq!(runners["dangling"][0], "github-runner-0-dead");

    *h.ops.fail_everything.lock().unwrap() = true;
    let (status, body, _) = send(&h.app, get("/runners")).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body.contains("503"), "{body}");
}

#[tokio::test]
async fn metrics_are_openmetrics() {
    let h = harness();
    // One delivery, so the webhook family has a sample.
    let (status, _, _) = send(&h.app, signed_webhook("ping", "{}")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body, content_type) = send(&h.app, get("/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type.as_deref(), Some(OPENMETRICS_CONTENT_TYPE));
    assert!(body.ends_with("# EOF\n"), "{body}");
    for line in [
        "# TYPE runner_manager_runners gauge",
        "runner_manager_runners 3",
        "# TYPE runner_manager_reconcile_triggers counter",
        "# TYPE runner_manager_reconcile_consecutive_failures gauge",
        "# TYPE runner_manager_webhook_deliveries counter",
        "runner_manager_webhook_deliveries_total{event=\"ping\",outcome=\"pong\"} 1",
        "runner_manager_reconcile_triggers_total{source=\"webhook\"} 0",
    ] {
        assert!(
            body.lines().any(|l| l == line),
            "missing {line:?} in\n{body}"
        );
    }
    // Every sample line belongs to a declared family.
    let families: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    for sample in body.lines().filter(|l| !l.starts_with('#')) {
        assert!(
            families.iter().any(|f| sample.starts_with(f)),
            "stray sample {sample}"
        );
    }
}

#[tokio::test]
async fn post_endpoints_need_the_bearer_token() {
    let h = harness();
    for path in ["/reconcile", "/flush", "/flush?idle_only=true"] {
        for token in [
            None,
            Some("wrong"),
            Some("api-token-for-tests-and-more"),
            Some(""),
        ] {
            let (status, _, _) = send(&h.app, post(path, token)).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} with {token:?}");
        }
        let basic = Request::post(path)
            .header(header::AUTHORIZATION, format!("Basic {API_TOKEN}"))
            .body(Body::empty())
            .unwrap();
        assert_eq!(send(&h.app, basic).await.0, StatusCode::UNAUTHORIZED);
    }
    assert!(h.ops.flushes.lock().unwrap().is_empty());

    let (status, body, _) = send(&h.app, post("/flush?idle_only=true", Some(API_TOKEN))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["removed"],
        2
    );
    let (status, _, _) = send(&h.app, post("/flush", Some(API_TOKEN))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        *h.ops.flushes.lock().unwrap(),
        [FlushMode::IdleOnly, FlushMode::IncludingBusy]
    );
    let (status, _, _) = send(&h.app, post("/flush?idle_only=maybe", Some(API_TOKEN))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, body, _) = send(&h.app, post("/reconcile", Some(API_TOKEN))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let output: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(output["quantity"], 3);
    assert!(output["delta"].is_i64());
}

#[tokio::test]
async fn without_configured_secrets_everything_is_refused() {
    let h = harness_with(None, None);
    assert_eq!(
        send(&h.app, post("/reconcile", Some(API_TOKEN))).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, body, _) = send(&h.app, signed_webhook("ping", "{}")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("webhook_secret is not configured"), "{body}");
}

#[tokio::test]
async fn webhook_signature_uses_the_github_test_vector() {
    let h = harness();
    let vector = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    // Valid signature: a ping is answered, a workflow_job body that is not JSON is a 400.
    let (status, body, _) = send(&h.app, webhook("ping", b"Hello, World!", Some(vector))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body, _) = send(
        &h.app,
        webhook("workflow_job", b"Hello, World!", Some(vector)),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // One flipped bit, another body, no header, wrong algorithm: 401.
    let flipped = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e16";
    for (body, signature) in [
        (&b"Hello, World!"[..], Some(flipped)),
        (&b"Hello, World?"[..], Some(vector)),
        (&b"Hello, World!"[..], None),
        (
            &b"Hello, World!"[..],
            Some("sha1=7d38cdd689735b008b3c702edd92eea23791c5f6"),
        ),
    ] {
        let (status, _, _) = send(&h.app, webhook("ping", body, signature)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{signature:?}");
    }
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let h = harness();
    let huge = vec![b'x'; MAX_BODY_BYTES + 1];
    let signature = sign(&Secret::new(WEBHOOK_SECRET), &huge);
    let (status, _, _) = send(&h.app, webhook("workflow_job", &huge, Some(&signature))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    // Also without a Content-Length (a streamed body).
    let stream = futures_like_stream(huge);
    let request = Request::post("/webhook")
        .header("x-github-event", "workflow_job")
        .header("x-hub-signature-256", signature)
        .body(stream)
        .unwrap();
    assert_eq!(send(&h.app, request).await.0, StatusCode::PAYLOAD_TOO_LARGE);
}

fn futures_like_stream(bytes: Vec<u8>) -> Body {
    let chunks: Vec<Result<axum::body::Bytes, std::io::Error>> = bytes
        .chunks(64 * 1024)
        .map(|c| Ok(axum::body::Bytes::copy_from_slice(c)))
        .collect();
    Body::from_stream(futures::stream::iter(chunks))
}

#[tokio::test]
async fn queued_job_with_our_labels_triggers_a_prompt_reconcile() {
    let h = harness();
    assert!(
        wait_for_passes(&h.ops, 1, Duration::from_secs(5)).await,
        "startup pass"
    );

    #[rustfmt::skip]
    let ignored: [Delivery; 2] = [
        ("queued", &["self-hosted", "linux-not-ours"], None, 200, "labels_not_matched", None),
        ("in_progress", &["self-hosted"], Some(OURS), 200, "ignored", None),
    ];
    assert_deliveries(&h, &ignored).await;
    let (status, body, _) = send(&h.app, signed_webhook("push", "{}")).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::ACCEPTED, r#"{"outcome":"ignored"}"#)
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.ops.passes(), 1, "ignored deliveries trigger nothing");

    #[rustfmt::skip]
    let acted_on: [Delivery; 3] = [
        ("queued", &["Self-Hosted", "GPU"], None, 202, "reconcile_triggered", Some(2)),
        ("completed", &["self-hosted"], Some(OURS), 202, "cleanup_triggered", Some(3)),
        ("completed", &["self-hosted"], Some("other-0-a1b2"), 200, "not_our_runner", None),
    ];
    assert_deliveries(&h, &acted_on).await;
    assert_eq!(h.ops.max_in_flight.load(Ordering::SeqCst), 1);

    let (status, _, _) = send(
        &h.app,
        signed_webhook("workflow_job", r#"{"action": "queued"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
