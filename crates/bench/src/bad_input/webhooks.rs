//! R5 check 2: webhook requests against the real axum router, with controls that must trigger.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use futures::FutureExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
// The manager's operations for the daemon behind the router: they count and succeed.
use runner_manager::counting_ops::CountingOps;
use runner_manager::daemon::DaemonSettings;
use runner_manager::secret::{Secret, SecretExt};
use runner_manager::server::{router, Access, ServerState, MAX_BODY_BYTES};
use runner_manager::webhook::{sign, LabelMatcher};
use tower::ServiceExt;

use super::{random_string, Options, Outcome, Row, ALNUM};
use crate::table::Table;

const WEBHOOK_SECRET: &str = "r5-webhook-secret-0123456789";
const OUR_LABELS: [&str; 4] = ["self-hosted", "github-runner", "jammy", "gpu"];
const RUNNER_PREFIX: &str = "github-runner-0-";

/// One request and the status server.rs promises for it.
struct Case {
    kind: &'static str,
    event: Option<String>,
    body: Vec<u8>,
    signature: Option<String>,
    /// Send `content-length` (a streamed body has none).
    content_length: bool,
    method_get: bool,
    expected: StatusCode,
    /// Reaches the webhook handler (counted in its metric).
    handled: bool,
}

impl Case {
    /// A POST with a content-length that reaches the handler.
    fn plain(
        kind: &'static str,
        event: Option<&str>,
        body: Vec<u8>,
        signature: Option<String>,
        expected: StatusCode,
    ) -> Self {
        Self {
            kind,
            event: event.map(str::to_owned),
            body,
            signature,
            content_length: true,
            method_get: false,
            expected,
            handled: true,
        }
    }
}

fn job_body(rng: &mut StdRng, action: &str, labels: &[String], runner: Option<&str>) -> Vec<u8> {
    serde_json::json!({
        "action": action,
        "workflow_job": {
            "id": rng.random_range(1u64..u64::MAX / 2),
            "run_id": rng.random_range(1u64..1_000_000_000),
            "labels": labels,
            "runner_name": runner,
            "status": action,
            "conclusion": null,
        },
        "repository": {"full_name": "octo-org/app"},
    })
    .to_string()
    .into_bytes()
}

fn our_labels(rng: &mut StdRng) -> Vec<String> {
    let n = rng.random_range(1..=OUR_LABELS.len());
    (0..n)
        .map(|_| {
            let label = OUR_LABELS[rng.random_range(0..OUR_LABELS.len())];
            if rng.random_bool(0.3) {
                label.to_ascii_uppercase()
            } else {
                label.to_owned()
            }
        })
        .collect()
}

/// A job body with some of our labels (drawn before the body itself).
fn our_job_body(rng: &mut StdRng, action: &str, runner: Option<&str>) -> Vec<u8> {
    let labels = our_labels(rng);
    job_body(rng, action, &labels, runner)
}

/// `body` (a JSON object) grown to exactly `len` bytes with a `padding` field.
fn padded(mut body: Vec<u8>, len: usize) -> Vec<u8> {
    body.truncate(body.len() - 1);
    body.extend_from_slice(b",\"padding\":\"");
    body.resize(len - 2, b'x');
    body.extend_from_slice(b"\"}");
    body
}

/// The cases being collected, and the secret the server checks signatures with.
struct Cases {
    list: Vec<Case>,
    secret: Option<Secret>,
}

impl Cases {
    /// The `x-hub-signature-256` of `body` with the server's secret.
    fn sign(&self, body: &[u8]) -> Option<String> {
        self.secret.as_ref().map(|s| sign(s, body))
    }

    fn add(
        &mut self,
        kind: &'static str,
        event: Option<&str>,
        body: Vec<u8>,
        signature: Option<String>,
        expected: StatusCode,
    ) {
        self.list
            .push(Case::plain(kind, event, body, signature, expected));
    }

    /// A `workflow_job` delivery of `body` with its signature.
    fn add_job(&mut self, kind: &'static str, body: Vec<u8>, expected: StatusCode) {
        self.add_signed(kind, Some("workflow_job"), body, expected);
    }

    /// [`Cases::add`] with the signature of `body`.
    fn add_signed(
        &mut self,
        kind: &'static str,
        event: Option<&str>,
        body: Vec<u8>,
        expected: StatusCode,
    ) {
        let signature = self.sign(&body);
        self.add(kind, event, body, signature, expected);
    }
}

fn webhook_cases(rng: &mut StdRng, scale: usize) -> Vec<Case> {
    let other = Secret::non_empty("another-secret");
    let mut cases = Cases {
        list: Vec::new(),
        secret: Secret::non_empty(WEBHOOK_SECRET),
    };
    let wj = Some("workflow_job");
    for _ in 0..40 * scale {
        let body = our_job_body(rng, "queued", None);
        cases.add_job(
            "signed queued, our labels → 202",
            body,
            StatusCode::ACCEPTED,
        );
    }
    for _ in 0..20 * scale {
        let mut labels = our_labels(rng);
        labels.push(if rng.random_bool(0.5) {
            "windows".into()
        } else {
            random_string(rng, ALNUM, 8)
        });
        let labels = if rng.random_bool(0.2) {
            Vec::new()
        } else {
            labels
        };
        let body = job_body(rng, "queued", &labels, None);
        cases.add_job("signed queued, other labels → 200", body, StatusCode::OK);
    }
    for _ in 0..30 * scale {
        let runner = format!(
            "{RUNNER_PREFIX}{}",
            random_string(rng, b"abcdef0123456789", 8)
        );
        let body = our_job_body(rng, "completed", Some(&runner));
        cases.add_job("signed completed on ours → 202", body, StatusCode::ACCEPTED);
    }
    for _ in 0..10 * scale {
        let runner = if rng.random_bool(0.5) {
            Some("github-runner-1-abcd1234".to_owned())
        } else {
            None
        };
        let body = our_job_body(rng, "completed", runner.as_deref());
        cases.add_job("signed completed elsewhere → 200", body, StatusCode::OK);
    }
    for _ in 0..30 * scale {
        let action = ["in_progress", "waiting", "requested", "", "QUEUED"][rng.random_range(0..5)];
        let runner = format!("{RUNNER_PREFIX}abcd1234");
        let body = our_job_body(rng, action, Some(&runner));
        cases.add_job(
            "signed in_progress/other action → 200",
            body,
            StatusCode::OK,
        );
    }
    for _ in 0..30 * scale {
        let body = our_job_body(rng, "queued", None);
        let signature = match rng.random_range(0..3) {
            0 => format!("sha256={}", random_string(rng, b"0123456789abcdef", 64)),
            1 => other.as_ref().map(|s| sign(s, &body)).unwrap_or_default(),
            _ => {
                let mut flipped = body.clone();
                let at = rng.random_range(0..flipped.len());
                flipped[at] ^= 1 << rng.random_range(0..8);
                cases.sign(&flipped).unwrap_or_default()
            }
        };
        cases.add(
            "bad signature → 401",
            wj,
            body,
            Some(signature),
            StatusCode::UNAUTHORIZED,
        );
    }
    for _ in 0..20 * scale {
        let body = our_job_body(rng, "queued", None);
        let event = [wj, Some("ping"), Some("push"), None][rng.random_range(0..4)];
        cases.add(
            "missing signature → 401",
            event,
            body,
            None,
            StatusCode::UNAUTHORIZED,
        );
    }
    for _ in 0..20 * scale {
        let body = our_job_body(rng, "queued", None);
        let good = cases.sign(&body).unwrap_or_default();
        let digest = good.trim_start_matches("sha256=").to_owned();
        let signature = match rng.random_range(0..8) {
            0 => format!("sha1={digest}"),
            1 => format!("SHA256={digest}"),
            2 => format!("sha512={digest}"),
            3 => digest.clone(),
            4 => format!("sha256 {digest}"),
            5 => "sha256=".to_owned(),
            6 => format!("sha256={}", &digest[..62]),
            _ => format!("sha256=zz{}", &digest[2..]),
        };
        cases.add(
            "wrong algorithm / malformed header → 401",
            wj,
            body,
            Some(signature),
            StatusCode::UNAUTHORIZED,
        );
    }
    for _ in 0..30 * scale {
        let body = our_job_body(rng, "queued", None);
        let cut = rng.random_range(0..body.len());
        let truncated = body[..cut].to_vec();
        let signature = cases.sign(&truncated);
        cases.add(
            "truncated, signed → 400",
            wj,
            truncated,
            signature,
            StatusCode::BAD_REQUEST,
        );
    }
    for _ in 0..30 * scale {
        let body = our_job_body(rng, "queued", None);
        let signature = cases.sign(&body);
        let cut = rng.random_range(0..body.len());
        cases.add(
            "truncated, signature of the whole → 401",
            wj,
            body[..cut].to_vec(),
            signature,
            StatusCode::UNAUTHORIZED,
        );
    }
    for _ in 0..10 * scale {
        let body = our_job_body(rng, "queued", None);
        let signed_empty = cases.sign(b"");
        cases.add(
            "empty body, signed, workflow_job → 400",
            wj,
            Vec::new(),
            signed_empty.clone(),
            StatusCode::BAD_REQUEST,
        );
        cases.add(
            "empty body, signed, ping → 200",
            Some("ping"),
            Vec::new(),
            signed_empty.clone(),
            StatusCode::OK,
        );
        cases.add(
            "empty body, signed, push → 202",
            Some("push"),
            Vec::new(),
            signed_empty,
            StatusCode::ACCEPTED,
        );
        cases.add(
            "empty body, signature of another → 401",
            wj,
            Vec::new(),
            cases.sign(&body),
            StatusCode::UNAUTHORIZED,
        );
    }
    for _ in 0..30 * scale {
        let id = rng.random_range(1u64..1000);
        let body: Vec<u8> = match rng.random_range(0..9) {
            0 => b"hello, world".to_vec(),
            1 => b"<xml><action>queued</action></xml>".to_vec(),
            2 => b"action=queued&workflow_job=1".to_vec(),
            3 => b"[1, 2, 3]".to_vec(),
            4 => format!("{{\"action\":\"queued\",\"workflow_job\":{{\"id\":\"{id}\",\"labels\":[\"jammy\"],\"runner_name\":null}}}}").into_bytes(),
            5 => format!("{{\"action\":\"queued\",\"workflow_job\":{{\"id\":{id},\"labels\":\"jammy\",\"runner_name\":null}}}}").into_bytes(),
            6 => b"{\"action\":\"queued\"}".to_vec(),
            7 => format!("{{\"action\":7,\"workflow_job\":{{\"id\":{id},\"labels\":[],\"runner_name\":null}}}}").into_bytes(),
            _ => b"null".to_vec(),
        };
        cases.add_job(
            "non-JSON / wrong shape, signed → 400",
            body,
            StatusCode::BAD_REQUEST,
        );
    }
    for _ in 0..30 * scale {
        let body = our_job_body(rng, "queued", None);
        let (event, expected, kind) = match rng.random_range(0..6) {
            0 => (
                Some("ping".to_owned()),
                StatusCode::OK,
                "ping, signed → 200",
            ),
            5 => (
                None,
                StatusCode::ACCEPTED,
                "no X-GitHub-Event, signed → 202",
            ),
            k => {
                let event = match k {
                    1 => "push".to_owned(),
                    2 => random_string(rng, ALNUM, 10),
                    3 => "WORKFLOW_JOB".to_owned(),
                    _ => String::new(),
                };
                let kind = "push / unknown event, signed → 202";
                (Some(event), StatusCode::ACCEPTED, kind)
            }
        };
        let signature = cases.sign(&body);
        cases.add(kind, event.as_deref(), body, signature, expected);
    }
    for _ in 0..30 * scale {
        let len = rng.random_range(0..4096);
        let body: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        cases.add_job(
            "random bytes, signed, workflow_job → 400",
            body.clone(),
            StatusCode::BAD_REQUEST,
        );
        cases.add_signed(
            "random bytes, signed, push → 202",
            Some("push"),
            body.clone(),
            StatusCode::ACCEPTED,
        );
        cases.add(
            "random bytes, unsigned → 401",
            wj,
            body,
            None,
            StatusCode::UNAUTHORIZED,
        );
    }
    // Bodies at and over the 1 MiB limit.
    for i in 0..4 * scale {
        let padding_len = MAX_BODY_BYTES + 1 + rng.random_range(0..MAX_BODY_BYTES);
        let body = padded(our_job_body(rng, "queued", None), padding_len);
        let signature = if i % 2 == 0 { cases.sign(&body) } else { None };
        for content_length in [true, false] {
            cases.list.push(Case {
                content_length,
                handled: false,
                ..Case::plain(
                    "> 1 MiB (signed or not, with or without content-length) → 413",
                    wj,
                    body.clone(),
                    signature.clone(),
                    StatusCode::PAYLOAD_TOO_LARGE,
                )
            });
        }
    }
    {
        // Exactly the limit: processed normally.
        let body = padded(our_job_body(rng, "queued", None), MAX_BODY_BYTES);
        for content_length in [true, false] {
            cases.list.push(Case {
                content_length,
                ..Case::plain(
                    "exactly 1 MiB, signed → 202",
                    wj,
                    body.clone(),
                    cases.sign(&body),
                    StatusCode::ACCEPTED,
                )
            });
        }
    }
    for _ in 0..4 * scale {
        let body = our_job_body(rng, "queued", None);
        cases.list.push(Case {
            method_get: true,
            handled: false,
            ..Case::plain(
                "GET /webhook → 405",
                wj,
                body.clone(),
                cases.sign(&body),
                StatusCode::METHOD_NOT_ALLOWED,
            )
        });
    }
    cases.list
}

fn request(case: &Case) -> anyhow::Result<Request<Body>> {
    let mut builder = if case.method_get {
        Request::get("/webhook")
    } else {
        Request::post("/webhook")
    };
    builder = builder
        .header("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958")
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(event) = &case.event {
        builder = builder.header("x-github-event", event);
    }
    if let Some(signature) = &case.signature {
        builder = builder.header("x-hub-signature-256", signature);
    }
    let body = if case.content_length {
        builder = builder.header(header::CONTENT_LENGTH, case.body.len());
        Body::from(case.body.clone())
    } else {
        // A streamed body: no length known up front.
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> = case
            .body
            .chunks(64 * 1024)
            .map(|c| Ok(c.to_vec()))
            .collect();
        Body::from_stream(futures::stream::iter(chunks))
    };
    Ok(builder.body(body)?)
}

pub(super) async fn webhooks(options: &Options, outcome: &mut Outcome) -> anyhow::Result<()> {
    let ops = Arc::new(CountingOps::default());
    let settings = DaemonSettings {
        update_runner_bin_at_start: false,
        ..DaemonSettings::new(1, Duration::from_secs(3_600))
    };
    let access = Access {
        api_token: Secret::non_empty("r5-api-token"),
        webhook_secret: Secret::non_empty(WEBHOOK_SECRET),
        labels: LabelMatcher::new(OUR_LABELS),
        runner_prefix: RUNNER_PREFIX.into(),
    };
    let registry = prometheus_client::registry::Registry::default();
    let (daemon, state) = ServerState::with_daemon(ops.clone(), settings, registry, access);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let daemon_task = tokio::spawn(daemon.run(async move {
        let _ = stopped.await;
    }));
    let app = router(state);

    let mut rng = StdRng::seed_from_u64(options.seed ^ 0x5745_4248_4f4f_4b53);
    let cases = webhook_cases(&mut rng, options.webhook_scale());
    let (mut mismatches, mut panics, mut handled) = (0u64, 0u64, 0u64);
    let mut by_status: BTreeMap<u16, u64> = BTreeMap::new();
    let mut by_kind: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut triggering = 0u64;
    for case in &cases {
        let request = request(case)?;
        let response = AssertUnwindSafe(app.clone().oneshot(request))
            .catch_unwind()
            .await;
        *by_kind.entry(case.kind).or_default() += 1;
        if case.handled {
            handled += 1;
        }
        if case.expected == StatusCode::ACCEPTED && case.event.as_deref() == Some("workflow_job") {
            triggering += 1;
        }
        let status = match response {
            Err(_) => {
                panics += 1;
                outcome.problem(format!("webhook handler panicked on {}", case.kind));
                continue;
            }
            Ok(Err(never)) => match never {},
            Ok(Ok(response)) => {
                let status = response.status();
                // Drain the body (a panic while producing it counts too).
                let body = AssertUnwindSafe(axum::body::to_bytes(response.into_body(), 1 << 20))
                    .catch_unwind()
                    .await;
                if body.is_err() {
                    panics += 1;
                }
                status
            }
        };
        *by_status.entry(status.as_u16()).or_default() += 1;
        if status != case.expected {
            mismatches += 1;
            outcome.problem(format!(
                "webhook {}: expected {}, got {status} (event {:?}, {} bytes, signature {:?})",
                case.kind,
                case.expected,
                case.event,
                case.body.len(),
                case.signature
                    .as_deref()
                    .map(|s| s.chars().take(20).collect::<String>())
            ));
        }
    }

    // The delivery metric counts every request that reached the handler.
    let metrics_text = {
        let response = app
            .clone()
            .oneshot(Request::get("/metrics").body(Body::empty())?)
            .await
            .context("GET /metrics")?;
        let bytes = axum::body::to_bytes(response.into_body(), 16 << 20).await?;
        String::from_utf8_lossy(&bytes).into_owned()
    };
    let counted: u64 = metrics_text
        .lines()
        .filter(|l| l.starts_with("runner_manager_webhook_deliveries_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum();
    let metric_mismatch = u64::from(counted != handled);
    if metric_mismatch > 0 {
        outcome.problem(format!(
            "webhook delivery metric counts {counted}, {handled} requests reached the handler"
        ));
    }
    // The deliveries' pass starts once the daemon has gathered the burst
    // (`DaemonSettings::coalesce`): give it a few seconds before stopping.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while triggering > 0 && ops.passes() < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), daemon_task).await;
    let passes = ops.passes();
    let no_pass = u64::from(passes < 2);
    if no_pass > 0 {
        outcome.problem(format!(
            "{triggering} triggering deliveries led to {passes} passes"
        ));
    }

    let statuses: Vec<String> = by_status.iter().map(|(s, n)| format!("{s}×{n}")).collect();
    outcome.rows.push(Row {
        check: "webhook bodies (server::router, oneshot)".into(),
        cases: cases.len() as u64,
        failures: mismatches + panics + metric_mismatch + no_pass,
        evidence: format!(
            "status mismatches {mismatches}, panics {panics}; got {}; {} kinds; delivery metric {counted} = {handled} handled; {triggering} triggering deliveries → {passes} daemon passes (coalesced)",
            statuses.join(" "),
            by_kind.len()
        ),
    });
    let mut kinds = Table::new(&["webhook case", "requests"]);
    for (kind, n) in &by_kind {
        kinds.row(vec![(*kind).to_owned(), n.to_string()]);
    }
    eprintln!("{}", kinds.render());
    Ok(())
}
