//! The scale-set client over HTTP: against a scripted server (headers, bootstrap, retries,
//! refreshes, concurrency) and against github-sim's Actions-service side (the protocol end to
//! end: CRUD, sessions, the queue, the GHES and github.com flows, JIT runners, token expiry).

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use common::{expect, Expect, Server};
use github::scaleset::{
    JobInfo, JobMessage, JobResult, Message, NewScaleSet, RemoveRunner, ScaleSet, ScaleSetClient,
    ScaleSetConfig, ScaleSetError, ScaleSetPatch, ScaleSetRetry, Session,
};
use github::{Auth, Secret};
use github_sim::{
    AcquireMode, AppConfig, GroupConfig, JobSpec, OwnerConfig, Sim, SimConfig, SimHandle,
};
use serde_json::json;
use url::Url;

/// Asserts that the error matches the pattern, showing it when it does not.
macro_rules! assert_err {
    ($err:expr, $($pattern:tt)+) => {{
        let err = &$err;
        assert!(matches!(err, $($pattern)+), "{err:?}");
    }};
}

// ---- helpers ---------------------------------------------------------------------------------

fn fast_retry() -> ScaleSetRetry {
    ScaleSetRetry {
        max_retries: 4,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        max_retry_after: Duration::from_millis(50),
    }
}

fn config(config_url: &str, auth: Auth) -> ScaleSetConfig {
    let mut config = ScaleSetConfig::new(Url::parse(config_url).expect("url"), auth);
    config.force_ghes = false;
    config.retry = fast_retry();
    config.timeout = Duration::from_secs(10);
    config.poll_timeout = Duration::from_secs(15);
    config
}

fn pat(token: &str) -> Auth {
    Auth::Token(Secret::new(token))
}

fn epoch() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// An unsigned-looking HS256 JWT with this `exp` (the client does not verify it).
fn jwt(exp: u64, jti: &str) -> String {
    let enc = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    format!(
        "{}.{}.c2lnbmF0dXJl",
        enc(json!({"alg": "HS256", "typ": "JWT"})),
        enc(json!({"exp": exp, "iss": "sim", "jti": jti}))
    )
}

const REG: &str = "/api/v3/orgs/octo-org/actions/runners/registration-token";
const REGISTRATION: &str = "/api/v3/actions/runner-registration";
const SETS: &str = "/tenant/1/_apis/runtime/runnerscalesets";
/// Set 7.
const SET_7: &str = "/tenant/1/_apis/runtime/runnerscalesets/7?api-version=6.0-preview";
/// Set 7's sessions.
const SESSIONS: &str = "/tenant/1/_apis/runtime/runnerscalesets/7/sessions?api-version=6.0-preview";
/// Set 7's session of [`session_json`].
const SESSION: &str =
    "/tenant/1/_apis/runtime/runnerscalesets/7/sessions/5b7d4b0e-2f7a-4a56-9c33-0d2f8f7e4a11?api-version=6.0-preview";
/// Set 7's JIT configs.
const JIT_CONFIG: &str =
    "/tenant/1/_apis/runtime/runnerscalesets/7/generatejitconfig?api-version=6.0-preview";

/// The two bootstrap calls, handing out an admin token valid for `ttl`.
fn bootstrap(server: &Server, ttl: u64, reg_token: &str, jti: &str) -> Vec<Expect> {
    vec![
        expect("POST", REG)
            .status(201)
            .json(json!({"token": reg_token, "expires_at": "2099-01-01T00:00:00Z"})),
        expect("POST", REGISTRATION).json(json!({
            "url": format!("{}tenant/1/", server.url),
            "token": jwt(epoch() + ttl, jti),
        })),
    ]
}

fn set_json(id: u64, name: &str) -> serde_json::Value {
    json!({
        "id": id, "name": name, "runnerGroupId": 1, "runnerGroupName": "Default",
        "labels": [{"type": "System", "name": name}],
        "RunnerSetting": {"disableUpdate": true, "ephemeral": true},
        "createdOn": "2026-05-01T10:00:00Z", "runnerJitConfigUrl": "x", "newField": [1, 2],
    })
}

fn stats(assigned: u32) -> serde_json::Value {
    json!({"totalAvailableJobs": 0, "totalAcquiredJobs": 0, "totalAssignedJobs": assigned,
           "totalRunningJobs": 0, "totalRegisteredRunners": 0, "totalBusyRunners": 0,
           "totalIdleRunners": 0})
}

fn session_json(server: &Server, token: &str) -> serde_json::Value {
    json!({
        "sessionId": "5b7d4b0e-2f7a-4a56-9c33-0d2f8f7e4a11", "ownerName": "host-1",
        "runnerScaleSet": set_json(7, "lxd"),
        "messageQueueUrl": format!("{}queue/7?tenant=1", server.url),
        "messageQueueAccessToken": token,
        "statistics": stats(0),
    })
}

/// `POST` [`SESSIONS`] answered with a session whose queue token is `token`.
fn session_created(server: &Server, token: &str) -> Expect {
    expect("POST", SESSIONS).json(session_json(server, token))
}

/// `PATCH` [`SESSION`] (a refresh) answered with the session, its queue token now `token`.
fn session_refreshed(server: &Server, token: &str) -> Expect {
    expect("PATCH", SESSION).json(session_json(server, token))
}

fn scripted_client(server: &Server) -> ScaleSetClient {
    let url = format!("{}octo-org", server.url);
    ScaleSetClient::new(config(&url, pat("ghp_pat_SECRET"))).expect("client")
}

// ---- scripted server -------------------------------------------------------------------------

#[tokio::test]
async fn bootstrap_and_admin_calls_carry_the_protocol_headers() {
    let server = Server::start(vec![]).await;
    server.push(bootstrap(&server, 3600, "REG_SECRET", ""));
    server.push(vec![expect(
        "GET",
        &format!("{SETS}?api-version=6.0-preview&name=lxd&runnerGroupId=1"),
    )
    .json(json!({"count": 1, "value": [set_json(7, "lxd")]}))]);
    let client = scripted_client(&server);
    assert!(server.seen().is_empty(), "building makes no request");
    assert_eq!(client.runner_group_id("Default").await.expect("group"), 1);
    assert!(server.seen().is_empty(), "the default group needs no call");
    client.set_scale_set_id(7);
    let set = client
        .scale_set_by_name(1, "lxd")
        .await
        .expect("lookup")
        .expect("found");
    assert_eq!(
        (set.id, set.name.as_str(), set.disable_update),
        (7, "lxd", true)
    );
    assert_eq!(set.labels, vec!["lxd"]);
    let seen = server.finish();

    let reg = &seen[0];
    assert_eq!(reg.header("authorization"), Some("Bearer ghp_pat_SECRET"));
    let registration = &seen[1];
    assert_eq!(
        registration.header("authorization"),
        Some("RemoteAuth REG_SECRET")
    );
    assert_eq!(
        registration.header("content-type"),
        Some("application/json")
    );
    let body = String::from_utf8(registration.body.clone()).expect("utf8");
    assert!(body.ends_with('\n'), "{body:?}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).expect("json"),
        json!({"url": format!("{}octo-org", server.url), "runner_event": "register"})
    );
    let admin = &seen[2];
    let token = admin
        .header("authorization")
        .and_then(|h| h.strip_prefix("Bearer "))
        .expect("bearer");
    assert_eq!(token.split('.').count(), 3, "the admin jwt");
    assert_eq!(
        admin.header("content-type"),
        Some("application/json"),
        "even on GET"
    );
    // Go sends no Accept; reqwest always adds `*/*`, which means the same.
    assert!(
        matches!(admin.header("accept"), None | Some("*/*")),
        "{:?}",
        admin.header("accept")
    );
    let ua: serde_json::Value =
        serde_json::from_str(admin.header("user-agent").expect("ua")).expect("json ua");
    assert_eq!(ua["kind"], "scaleset");
    assert_eq!(ua["scale_set_id"], 7);
    assert_eq!(ua["system"], "runner-manager");
}

#[tokio::test]
async fn registration_401_and_403_are_retried_then_the_token_is_refreshed_by_exp() {
    let server = Server::start(vec![]).await;
    server.push(vec![
        expect("POST", REG)
            .status(201)
            .json(json!({"token": "r1", "expires_at": "2099-01-01T00:00:00Z"})),
        expect("POST", REGISTRATION)
            .status(401)
            .json(json!({"message": "not yet"})),
        expect("POST", REGISTRATION)
            .status(403)
            .json(json!({"message": "not yet"})),
        expect("POST", REGISTRATION).json(json!({
            "url": format!("{}tenant/1", server.url),
            // Less than the 60 s margin left: the next call bootstraps again.
            "token": jwt(epoch() + 30, "short"),
        })),
        expect("GET", SET_7).json(set_json(7, "lxd")),
    ]);
    server.push(bootstrap(&server, 3600, "r2", ""));
    server.push(vec![
        expect("GET", SET_7).json(set_json(7, "lxd")),
        // Fresh for an hour: no bootstrap before this one.
        expect("GET", SET_7).json(set_json(7, "lxd")),
    ]);
    let client = scripted_client(&server);
    for _ in 0..3 {
        assert_eq!(client.scale_set(7).await.expect("get").id, 7);
    }
    server.finish();
}

#[tokio::test]
async fn bootstrap_gives_up_after_the_retries_with_unauthorized() {
    let server = Server::start(vec![]).await;
    server.push(vec![expect("POST", REG)
        .status(201)
        .json(json!({"token": "r1", "expires_at": "2099-01-01T00:00:00Z"}))]);
    for _ in 0..5 {
        server.push(vec![expect("POST", REGISTRATION).status(401).json(json!({
            "typeName": "GitHub.Services.WebApi.InvalidTokenException, GitHub.Services.WebApi",
            "message": "bad token"
        }))]);
    }
    let client = scripted_client(&server);
    let err = client.scale_set(7).await.expect_err("refused");
    assert_err!(err, ScaleSetError::Unauthorized { .. });
    assert!(err.is_permanent());
    server.finish();
}

#[tokio::test]
async fn registration_token_failure_is_a_bootstrap_error_with_github_s_cause() {
    let server = Server::start(vec![
        expect("POST", REG).error(403, "Resource not accessible")
    ])
    .await;
    let client = scripted_client(&server);
    let err = client.scale_set(7).await.expect_err("refused");
    let ScaleSetError::Bootstrap { source } = &err else {
        panic!("{err:?}")
    };
    assert!(
        matches!(source, github::Error::Forbidden { .. }),
        "{source:?}"
    );
    assert!(err.is_permanent());
    assert!(!format!("{err:?} {err}").contains("ghp_pat_SECRET"));
    server.finish();
}

#[tokio::test]
async fn server_errors_and_429_are_retried_with_retry_after_4xx_never() {
    let server = Server::start(vec![]).await;
    server.push(bootstrap(&server, 3600, "r", ""));
    server.push(vec![
        expect("GET", SET_7).status(503).header("retry-after", "0"),
        expect("GET", SET_7).status(429).header("retry-after", "30"),
        expect("GET", SET_7).status(500),
        expect("GET", SET_7).status(200).json(set_json(7, "lxd")),
        // 4xx: one attempt.
        expect("GET", SET_7)
            .status(400)
            .json(json!({"typeName": "X.ArgumentException, X", "message": "no"})),
        // 501: one attempt.
        expect("GET", SET_7).status(501),
        // Retries run out: 1 + 4 attempts, then the last answer's error.
        expect("GET", SET_7).status(502),
        expect("GET", SET_7).status(502),
        expect("GET", SET_7).status(502),
        expect("GET", SET_7).status(502),
        expect("GET", SET_7)
            .status(502)
            .header("activityid", "act-9"),
    ]);
    let client = scripted_client(&server);
    let started = Instant::now();
    assert_eq!(client.scale_set(7).await.expect("retried").id, 7);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "Retry-After is capped by max_retry_after (50 ms here): {:?}",
        started.elapsed()
    );
    let err = client.scale_set(7).await.expect_err("400");
    assert_err!(err, ScaleSetError::Status { status: 400, .. });
    assert!(err.is_permanent());
    let err = client.scale_set(7).await.expect_err("501");
    assert_err!(err, ScaleSetError::Status { status: 501, .. });
    let err = client.scale_set(7).await.expect_err("502");
    let ScaleSetError::Status {
        status: 502,
        activity_id,
        ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(activity_id.as_deref(), Some("act-9"));
    assert!(!err.is_permanent());
    server.finish();
}

#[tokio::test]
async fn creating_calls_are_not_retried_after_an_ambiguous_failure() {
    let server = Server::start(vec![]).await;
    server.push(bootstrap(&server, 3600, "r", ""));
    server.push(vec![
        // 429: not processed, retried.
        expect("POST", JIT_CONFIG).status(429).header("retry-after", "0"),
        expect("POST", JIT_CONFIG).json(json!({
            "runner": {"id": 11, "name": "rm-0-aa", "runnerScaleSetId": 7},
            "encodedJITConfig": "eyJqaXQiOiJTRUNSRVQifQ=="
        })),
        // 500: maybe processed, not retried.
        expect("POST", JIT_CONFIG).status(500),
        // Name taken: RunnerExists, with the runner looked up.
        expect("POST", JIT_CONFIG).status(409).json(json!({
            "typeName": "GitHub.DistributedTask.WebApi.AgentExistsException, GitHub.DistributedTask.WebApi",
            "message": "A runner named rm-0-aa already exists."
        })),
        expect(
            "GET",
            "/tenant/1/_apis/distributedtask/pools/0/agents?agentName=rm-0-aa&api-version=6.0-preview",
        )
        .json(json!({"count": 1, "value": [{"id": 11, "name": "rm-0-aa", "runnerScaleSetId": 7}]})),
    ]);
    let client = scripted_client(&server);
    let got = client.generate_jit_config(7, "rm-0-aa").await.expect("jit");
    assert_eq!((got.runner.id, got.runner.scale_set_id), (11, 7));
    assert_eq!(got.encoded.expose(), "eyJqaXQiOiJTRUNSRVQifQ==");
    assert!(
        !format!("{got:?}").contains("eyJqaXQ"),
        "the jit config is redacted"
    );
    let err = client
        .generate_jit_config(7, "rm-0-aa")
        .await
        .expect_err("500");
    assert_err!(err, ScaleSetError::Status { status: 500, .. });
    let err = client
        .generate_jit_config(7, "rm-0-aa")
        .await
        .expect_err("taken");
    let ScaleSetError::RunnerExists { existing, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(existing.as_ref().map(|r| r.id), Some(11));
    let seen = server.finish();
    assert_eq!(
        seen[2].json(),
        json!({"name": "rm-0-aa", "workFolder": ""}),
        "both keys always sent"
    );
}

#[tokio::test]
async fn queue_calls_refresh_the_session_once_after_a_401() {
    let server = Server::start(vec![]).await;
    server.push(bootstrap(&server, 3600, "r", ""));
    let queue = "/queue/7?tenant=1";
    let envelope = json!({
        "messageId": 5, "messageType": "RunnerScaleSetJobMessages", "statistics": stats(1),
        "body": json!([{"messageType": "JobAssigned", "jobId": "j1", "runnerRequestId": 0}]).to_string(),
    });
    server.push(vec![
        session_created(&server, "q1"),
        expect("GET", queue).status(401),
        session_refreshed(&server, "q2"),
        // The BOM some services prefix is stripped.
        expect("GET", queue)
            .header("content-type", "application/json")
            .raw(&format!("\u{feff}{envelope}")),
        expect("DELETE", "/queue/7/5?tenant=1").status(401),
        session_refreshed(&server, "q3"),
        expect("DELETE", "/queue/7/5?tenant=1").status(204),
        expect("GET", "/queue/7?tenant=1&lastMessageId=5").status(202),
        // A second 401 after the refresh is an error.
        expect("GET", "/queue/7?tenant=1&lastMessageId=5").status(401),
        session_refreshed(&server, "q4"),
        expect("GET", "/queue/7?tenant=1&lastMessageId=5").status(401),
    ]);
    let client = scripted_client(&server);
    let mut session = client.create_session(7, "host-1").await.expect("session");
    assert_eq!(session.scale_set.id, 7);
    let message = client
        .get_message(&mut session, 0, 10)
        .await
        .expect("poll")
        .expect("a message");
    assert_eq!((message.id, message.statistics.total_assigned_jobs), (5, 1));
    assert!(matches!(&message.jobs[..], [JobMessage::Assigned(j)] if j.job_id == "j1"));
    client.delete_message(&mut session, 5).await.expect("ack");
    assert!(client
        .get_message(&mut session, 5, 10)
        .await
        .expect("poll")
        .is_none());
    let err = client
        .get_message(&mut session, 5, 10)
        .await
        .expect_err("second 401");
    assert_err!(err, ScaleSetError::Unauthorized { .. });
    assert!(
        !format!("{session:?}").contains("q4"),
        "queue token redacted"
    );

    let seen = server.finish();
    let admin = seen[2].header("authorization").expect("admin bearer");
    for (i, want) in [
        (3, "Bearer q1"),
        (4, admin),
        (5, "Bearer q2"),
        (6, "Bearer q2"),
        (7, admin),
        (8, "Bearer q3"),
        (9, "Bearer q3"),
        (10, "Bearer q3"),
        (11, admin),
        (12, "Bearer q4"),
    ] {
        assert_eq!(
            seen[i].header("authorization"),
            Some(want),
            "call {i}: {}",
            seen[i].uri
        );
    }
    let poll = &seen[3];
    assert_eq!(
        poll.header("accept"),
        Some("application/json; api-version=6.0-preview")
    );
    assert_eq!(poll.header("x-scalesetmaxcapacity"), Some("10"));
    assert_eq!(poll.header("content-type"), None);
    let ack = &seen[8];
    assert_eq!(ack.header("content-type"), Some("application/json"));
    assert_eq!(seen[4].body, b"", "the refresh has no body");
    let create = &seen[2];
    assert_eq!(
        create.json(),
        json!({"sessionId": "00000000-0000-0000-0000-000000000000", "ownerName": "host-1"})
    );
}

#[tokio::test]
async fn the_long_poll_does_not_block_other_calls() {
    let server = Server::start(vec![]).await;
    server.push(bootstrap(&server, 3600, "r", ""));
    server.push(vec![
        session_created(&server, "q1"),
        expect("GET", "/queue/7?tenant=1")
            .status(202)
            .delay(Duration::from_secs(2)),
        expect("GET", SET_7).json(set_json(7, "lxd")),
    ]);
    let client = scripted_client(&server);
    let mut session = client.create_session(7, "host-1").await.expect("session");
    let poller = client.clone();
    let started = Instant::now();
    let poll = tokio::spawn(async move {
        let got = poller.get_message(&mut session, 0, 1).await;
        (got.map(|m| m.is_none()), started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    client
        .scale_set(7)
        .await
        .expect("admin call during the poll");
    let admin_done = started.elapsed();
    let (empty, poll_done) = poll.await.expect("join");
    assert!(empty.expect("202"), "202 is no message");
    assert!(
        admin_done < Duration::from_millis(1500) && poll_done >= Duration::from_secs(2),
        "admin {admin_done:?}, poll {poll_done:?}"
    );
    server.finish();
}

#[tokio::test]
async fn session_conflict_and_broken_envelopes_are_typed() {
    let server = Server::start(vec![]).await;
    server.push(bootstrap(&server, 3600, "r", ""));
    let conflict = json!({
        "typeName": "GitHub.Actions.Runtime.WebApi.RunnerScaleSetSessionConflictException, GitHub.Actions.Runtime.WebApi",
        "message": "The actions runner scaleset lxd already has an active session."
    });
    server.push(vec![
        expect("POST", SESSIONS)
            .status(409)
            .header("activityid", "act-1")
            .json(conflict),
        session_created(&server, "q1"),
        expect("GET", "/queue/7?tenant=1").status(200),
        expect("GET", "/queue/7?tenant=1").json(json!({
            "messageId": 1, "messageType": "RunnerScaleSetSomethingElse", "statistics": stats(0), "body": ""
        })),
        expect("GET", "/queue/7?tenant=1").json(json!({
            "messageId": 2, "messageType": "RunnerScaleSetJobMessages", "statistics": stats(3), "body": ""
        })),
    ]);
    let client = scripted_client(&server);
    let err = client
        .create_session(7, "host-1")
        .await
        .expect_err("conflict");
    let ScaleSetError::SessionConflict { source } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(source.activity_id.as_deref(), Some("act-1"));
    assert!(!err.is_permanent());
    let mut session = client.create_session(7, "host-1").await.expect("session");
    let err = client
        .get_message(&mut session, 0, 1)
        .await
        .expect_err("empty 200");
    assert_err!(err, ScaleSetError::Decode { .. });
    let err = client
        .get_message(&mut session, 0, 1)
        .await
        .expect_err("other type");
    assert_err!(err, ScaleSetError::InvalidResponse { .. });
    let message = client
        .get_message(&mut session, 0, 1)
        .await
        .expect("ok")
        .expect("message");
    assert!(message.jobs.is_empty(), "\"\" is no job message");
    assert_eq!(message.statistics.total_assigned_jobs, 3);
    server.finish();
}

#[tokio::test]
async fn an_admin_token_refused_before_its_exp_bootstraps_again_once() {
    let server = Server::start(vec![]).await;
    server.push(bootstrap(&server, 3600, "r1", "first"));
    server.push(vec![expect("GET", SET_7).status(401).json(json!({
        "typeName": "GitHub.Services.WebApi.InvalidTokenException, GitHub.Services.WebApi",
        "message": "expired"
    }))]);
    server.push(bootstrap(&server, 3600, "r2", "second"));
    server.push(vec![expect("GET", SET_7).json(set_json(7, "lxd"))]);
    let client = scripted_client(&server);
    assert_eq!(client.scale_set(7).await.expect("get").id, 7);
    let seen = server.finish();
    assert_ne!(
        seen[2].header("authorization"),
        seen[5].header("authorization")
    );
}

// ---- github-sim ------------------------------------------------------------------------------

fn sim_config() -> SimConfig {
    let mut org = OwnerConfig::new("octo-org", 100);
    org.groups.push(GroupConfig::new(2, "gpu"));
    let mut config = SimConfig::default().with_scaleset(github_sim::ScaleSetConfig::for_tests());
    config.orgs = vec![org];
    config
}

async fn sim() -> SimHandle {
    Sim::start(sim_config()).await.expect("sim")
}

fn sim_client(sim: &SimHandle, path: &str) -> ScaleSetClient {
    let url = format!("{}/{path}", sim.base_url());
    ScaleSetClient::new(config(&url, Auth::Token(sim.token()))).expect("client")
}

async fn hook(sim: &SimHandle, path: &str, body: serde_json::Value) -> serde_json::Value {
    let response = reqwest::Client::new()
        .post(format!("{}/_sim/scalesets/{path}", sim.base_url()))
        .json(&body)
        .send()
        .await
        .expect("hook");
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    response.json().await.unwrap_or(serde_json::Value::Null)
}

/// A client on `octo-org`, a new scale set `name` and its session, owned by `host-a`.
async fn listener(sim: &SimHandle, name: &str) -> (ScaleSetClient, ScaleSet, Session) {
    let client = sim_client(sim, "octo-org");
    let set = client
        .create_scale_set(&NewScaleSet::new(name))
        .await
        .expect("create");
    let session = client
        .create_session(set.id, "host-a")
        .await
        .expect("session");
    (client, set, session)
}

/// The jobs of a message's `JobAssigned` entries.
fn assigned_jobs(message: &Message) -> Vec<&JobInfo> {
    message
        .jobs
        .iter()
        .filter_map(|j| match j {
            JobMessage::Assigned(info) => Some(info),
            _ => None,
        })
        .collect()
}

/// Polls until a message comes (each poll holds ~1 s in the sim's test settings).
async fn next_message(
    client: &ScaleSetClient,
    session: &mut Session,
    last: i64,
    capacity: u32,
) -> github::scaleset::Message {
    for _ in 0..10 {
        if let Some(message) = client
            .get_message(session, last, capacity)
            .await
            .expect("poll")
        {
            return message;
        }
    }
    panic!("no message after 10 polls")
}

#[tokio::test]
async fn sim_scale_set_crud_runners_and_sessions() {
    let sim = sim().await;
    let client = sim_client(&sim, "octo-org");
    assert_eq!(client.runner_group_id("default").await.expect("default"), 1);
    assert_eq!(client.runner_group_id("GPU").await.expect("gpu"), 2);
    let err = client.runner_group_id("nope").await.expect_err("missing");
    assert_err!(err, ScaleSetError::RunnerGroupNotFound { .. });
    assert!(client
        .scale_set_by_name(1, "h2-crud")
        .await
        .expect("lookup")
        .is_none());

    let set = client
        .create_scale_set(&NewScaleSet::new("h2-crud"))
        .await
        .expect("create");
    assert_eq!((set.name.as_str(), set.runner_group_id), ("h2-crud", 1));
    assert_eq!(set.labels, vec!["h2-crud"]);
    assert!(set.disable_update);
    client.set_scale_set_id(set.id);
    let found = client
        .scale_set_by_name(1, "h2-crud")
        .await
        .expect("lookup")
        .expect("found");
    assert_eq!(found.id, set.id);
    assert_eq!(client.scale_set(set.id).await.expect("get").name, "h2-crud");
    let moved = client
        .update_scale_set(
            set.id,
            &ScaleSetPatch {
                runner_group_id: Some(2),
                ..Default::default()
            },
        )
        .await
        .expect("patch");
    assert_eq!((moved.runner_group_id, moved.name.as_str()), (2, "h2-crud"));
    assert_eq!(moved.runner_group_name.to_ascii_lowercase(), "gpu");

    // Sessions: one at a time.
    let session = client
        .create_session(set.id, "host-a")
        .await
        .expect("session");
    assert_eq!(session.scale_set.id, set.id);
    let err = client
        .create_session(set.id, "host-b")
        .await
        .expect_err("second");
    assert_err!(err, ScaleSetError::SessionConflict { .. });

    // JIT runners: registered at once, offline; names unique.
    let jit = client
        .generate_jit_config(set.id, "h2-crud-r1")
        .await
        .expect("jit");
    assert_eq!(
        (jit.runner.name.as_str(), jit.runner.scale_set_id),
        ("h2-crud-r1", set.id)
    );
    assert!(!jit.encoded.is_empty());
    let by_id = client.runner_by_id(jit.runner.id).await.expect("by id");
    assert_eq!(by_id.as_ref().map(|r| r.name.as_str()), Some("h2-crud-r1"));
    let by_name = client.runner_by_name("h2-crud-r1").await.expect("by name");
    assert_eq!(by_name.map(|r| r.id), Some(jit.runner.id));
    let err = client
        .generate_jit_config(set.id, "h2-crud-r1")
        .await
        .expect_err("taken");
    let ScaleSetError::RunnerExists { existing, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(existing.as_ref().map(|r| r.id), Some(jit.runner.id));
    assert_eq!(
        client.remove_runner(jit.runner.id).await.expect("remove"),
        RemoveRunner::Removed
    );
    assert_eq!(
        client.runner_by_id(jit.runner.id).await.expect("gone"),
        None
    );
    assert_eq!(
        client.runner_by_name("h2-crud-r1").await.expect("gone"),
        None
    );
    assert_eq!(
        client.remove_runner(jit.runner.id).await.expect("again"),
        RemoveRunner::Removed,
        "removing an absent runner is fine"
    );

    client.delete_session(&session).await.expect("close");
    client
        .delete_session(&session)
        .await
        .expect("closing twice is fine");
    let again = client
        .create_session(set.id, "host-b")
        .await
        .expect("free again");
    client.delete_session(&again).await.expect("close");
    client.delete_scale_set(set.id).await.expect("delete");
    let err = client.scale_set(set.id).await.expect_err("deleted");
    assert_err!(err, ScaleSetError::ScaleSetNotFound { .. });
    let err = client
        .create_session(set.id, "host-c")
        .await
        .expect_err("deleted");
    assert_err!(err, ScaleSetError::ScaleSetNotFound { .. });
    assert!(err.is_permanent());
}

#[tokio::test]
async fn sim_ghes_flow_available_acquire_assigned_redelivery_and_ack() {
    let sim = sim().await;
    let (client, set, mut session) = listener(&sim, "h2-ghes").await;
    // Nothing queued: 202 after the sim's hold (~1 s in tests).
    let started = Instant::now();
    assert!(client
        .get_message(&mut session, 0, 5)
        .await
        .expect("poll")
        .is_none());
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );

    let job = sim
        .enqueue_job(JobSpec::new(&["h2-ghes"], "true"))
        .expect("job");
    let available = next_message(&client, &mut session, 0, 5).await;
    let ids: Vec<i64> = available
        .jobs
        .iter()
        .filter_map(|j| match j {
            JobMessage::Available(info) => Some(info.runner_request_id),
            _ => None,
        })
        .collect();
    assert_eq!(ids.len(), 1, "{available:?}");
    assert_eq!(
        available.statistics.total_available_jobs, 1,
        "{available:?}"
    );
    // Not acked: the same message comes again on a poll from 0.
    let again = next_message(&client, &mut session, 0, 5).await;
    assert_eq!(again.id, available.id, "redelivered until deleted");
    client
        .delete_message(&mut session, available.id)
        .await
        .expect("ack");
    let won = client
        .acquire_jobs(&mut session, &ids)
        .await
        .expect("acquire");
    assert_eq!(won, ids);
    assert!(client
        .acquire_jobs(&mut session, &[])
        .await
        .expect("none")
        .is_empty());

    let assigned = next_message(&client, &mut session, available.id, 5).await;
    assert!(assigned.id > available.id);
    let info = assigned_jobs(&assigned)
        .first()
        .map(|info| (*info).clone())
        .unwrap_or_else(|| panic!("no JobAssigned: {assigned:?}"));
    assert!(
        info.request_labels.iter().any(|l| l == "h2-ghes"),
        "{info:?}"
    );
    assert_eq!(assigned.statistics.total_assigned_jobs, 1);

    // Redelivered to a new session too: the queue belongs to the set.
    client.delete_session(&session).await.expect("close");
    let mut second = client
        .create_session(set.id, "host-b")
        .await
        .expect("session");
    let redelivered = next_message(&client, &mut second, 0, 5).await;
    assert_eq!(redelivered.id, assigned.id);
    client
        .delete_message(&mut second, redelivered.id)
        .await
        .expect("ack");

    // No runner takes it: cancelled (no runner fields), then assigned again, same job id.
    let mut last = redelivered.id;
    let mut canceled = false;
    let mut reassigned = false;
    for _ in 0..10 {
        let Some(message) = client
            .get_message(&mut second, last, 5)
            .await
            .expect("poll")
        else {
            continue;
        };
        last = message.id;
        client
            .delete_message(&mut second, message.id)
            .await
            .expect("ack");
        for job in &message.jobs {
            match job {
                JobMessage::Completed(done) if done.job.job_id == info.job_id => {
                    assert_eq!(done.result, JobResult::Canceled);
                    assert_eq!((done.runner_id, done.runner_name.as_deref()), (None, None));
                    canceled = true;
                }
                // GHES: the re-queued job is offered again, then assigned once acquired.
                JobMessage::Available(again) if again.job_id == info.job_id && canceled => {
                    let won = client
                        .acquire_jobs(&mut second, &[again.runner_request_id])
                        .await
                        .expect("acquire again");
                    assert_eq!(won, vec![again.runner_request_id]);
                }
                JobMessage::Assigned(again) if again.job_id == info.job_id && canceled => {
                    reassigned = true;
                }
                _ => {}
            }
        }
        if reassigned {
            break;
        }
    }
    assert!(
        canceled && reassigned,
        "canceled {canceled}, re-assigned {reassigned}"
    );
    let _ = job;
    client.delete_session(&second).await.expect("close");
}

#[tokio::test]
async fn sim_hosted_flow_assigns_at_once_and_acquire_is_404() {
    let sim = sim().await;
    hook(&sim, "mode", json!({"mode": AcquireMode::Hosted})).await;
    let (client, _set, mut session) = listener(&sim, "h2-hosted").await;
    sim.enqueue_job(JobSpec::new(&["h2-hosted"], "true"))
        .expect("job");
    // Capacity 0: nothing is assigned.
    assert!(client
        .get_message(&mut session, 0, 0)
        .await
        .expect("poll")
        .is_none());
    let message = next_message(&client, &mut session, 0, 1).await;
    let assigned = assigned_jobs(&message);
    assert_eq!(assigned.len(), 1, "{message:?}");
    assert_eq!(assigned[0].runner_request_id, 0, "github.com sends 0");
    assert_eq!(message.statistics.total_assigned_jobs, 1);
    let err = client
        .acquire_jobs(&mut session, &[1])
        .await
        .expect_err("404 on github.com");
    assert_err!(err, ScaleSetError::Status { status: 404, .. });
    client
        .delete_message(&mut session, message.id)
        .await
        .expect("ack");
    client.delete_session(&session).await.expect("close");
}

#[tokio::test]
async fn sim_expired_tokens_are_refreshed() {
    let sim = sim().await;
    let (client, set, mut session) = listener(&sim, "h2-tokens").await;
    let counts = hook(&sim, "tokens/expire", json!({"queue": true})).await;
    assert!(counts["queue_tokens"].as_u64() >= Some(1), "{counts}");
    // The poll gets 401, refreshes the session (same id) and polls again.
    let id = session.id.clone();
    assert!(client
        .get_message(&mut session, 0, 1)
        .await
        .expect("poll")
        .is_none());
    assert_eq!(session.id, id);
    hook(&sim, "tokens/expire", json!({"admin": true})).await;
    assert_eq!(
        client.scale_set(set.id).await.expect("re-bootstrapped").id,
        set.id
    );
    client.delete_session(&session).await.expect("close");
}

#[tokio::test]
async fn sim_repo_enterprise_and_app_targets() {
    let sim = sim().await;
    for path in ["octo/app", "enterprises/acme"] {
        let client = sim_client(&sim, path);
        let name = format!("h2-{}", path.replace('/', "-"));
        let set = client
            .create_scale_set(&NewScaleSet::new(&name))
            .await
            .unwrap_or_else(|e| panic!("{path}: {e:?}"));
        assert_eq!(set.name, name);
        client.delete_scale_set(set.id).await.expect("delete");
    }
    let app = AppConfig::test_app();
    let url = format!("{}/octo-org", sim.base_url());
    let client = ScaleSetClient::new(config(
        &url,
        Auth::App {
            app_id: app.app_id,
            installation_id: None,
            private_key_pem: Secret::new(github_sim::TEST_APP_PRIVATE_KEY_PEM),
        },
    ))
    .expect("client");
    let set = client
        .create_scale_set(&NewScaleSet::new("h2-app"))
        .await
        .expect("create with an app");
    client.delete_scale_set(set.id).await.expect("delete");
}

/// A scale-set runner speaking the sim's runner protocol with the credential inside its JIT
/// config (what `run.sh --jitconfig` does).
struct JitRunner {
    base: String,
    agent_id: u64,
    credential: String,
}

impl JitRunner {
    fn from_jit(sim: &SimHandle, encoded: &Secret) -> Self {
        let b64 = |s: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .expect("base64")
        };
        let outer: serde_json::Value =
            serde_json::from_slice(&b64(encoded.expose())).expect("jit json");
        let runner: serde_json::Value =
            serde_json::from_slice(&b64(outer[".runner"].as_str().expect(".runner")))
                .expect(".runner json");
        let credentials: serde_json::Value =
            serde_json::from_slice(&b64(outer[".credentials"].as_str().expect(".credentials")))
                .expect(".credentials json");
        assert!(outer[".credentials_rsaparams"].is_string(), "{outer}");
        Self {
            base: sim.base_url(),
            agent_id: runner["agentId"].as_u64().expect("agentId"),
            credential: credentials["data"]["clientId"]
                .as_str()
                .expect("clientId")
                .to_owned(),
        }
    }

    /// One runner poll (a heartbeat): the job's id when one was handed over.
    async fn poll(&self) -> Option<u64> {
        let response = reqwest::Client::new()
            .get(format!(
                "{}/_runner/poll?agent_id={}&wait=1",
                self.base, self.agent_id
            ))
            .bearer_auth(&self.credential)
            .send()
            .await
            .expect("runner poll");
        match response.status().as_u16() {
            204 => None,
            200 => {
                let job: serde_json::Value = response.json().await.expect("job");
                Some(job["job_id"].as_u64().expect("job_id"))
            }
            other => panic!("runner poll answered {other}"),
        }
    }

    async fn complete(&self, job_id: u64) {
        let response = reqwest::Client::new()
            .post(format!("{}/_runner/jobs/{job_id}/complete", self.base))
            .bearer_auth(&self.credential)
            .json(&json!({"exit_code": 0, "output": "ok", "conclusion": "success"}))
            .send()
            .await
            .expect("complete");
        assert_eq!(response.status().as_u16(), 204);
    }
}

#[tokio::test]
async fn sim_a_job_runs_on_a_jit_runner_started_completed_and_busy_runners_are_kept() {
    let sim = sim().await;
    hook(&sim, "mode", json!({"mode": AcquireMode::Hosted})).await;
    let (client, set, mut session) = listener(&sim, "h2-run").await;
    let jit = client
        .generate_jit_config(set.id, "h2-run-r1")
        .await
        .expect("jit");
    let runner = JitRunner::from_jit(&sim, &jit.encoded);
    assert_eq!(runner.agent_id, jit.runner.id);
    assert_eq!(runner.poll().await, None, "online, idle, no job yet");

    sim.enqueue_job(JobSpec::new(&["h2-run"], "echo hi"))
        .expect("job");
    let assigned = next_message(&client, &mut session, 0, 2).await;
    client
        .delete_message(&mut session, assigned.id)
        .await
        .expect("ack");
    let job_id = assigned_jobs(&assigned)
        .first()
        .map(|info| info.job_id.clone())
        .unwrap_or_else(|| panic!("{assigned:?}"));
    let mut handed = None;
    for _ in 0..5 {
        handed = runner.poll().await;
        if handed.is_some() {
            break;
        }
    }
    let sim_job = handed.expect("the runner got the job");

    let started = next_message(&client, &mut session, assigned.id, 2).await;
    client
        .delete_message(&mut session, started.id)
        .await
        .expect("ack");
    let JobMessage::Started(start) = started
        .jobs
        .iter()
        .find(|j| matches!(j, JobMessage::Started(_)))
        .unwrap_or_else(|| panic!("{started:?}"))
    else {
        unreachable!()
    };
    assert_eq!(start.job.job_id, job_id);
    assert_eq!(
        (start.runner_id, start.runner_name.as_str()),
        (jit.runner.id, "h2-run-r1")
    );
    assert!(start.job.runner_assign_time.is_some());
    assert_eq!(started.statistics.total_running_jobs, 1, "{started:?}");
    assert_eq!(started.statistics.total_busy_runners, 1, "{started:?}");

    // A busy runner is never removed, nor its set deleted.
    assert_eq!(
        client.remove_runner(jit.runner.id).await.expect("remove"),
        RemoveRunner::JobStillRunning
    );
    let err = client.delete_scale_set(set.id).await.expect_err("busy set");
    assert_err!(err, ScaleSetError::JobStillRunning { .. });

    runner.complete(sim_job).await;
    let completed = next_message(&client, &mut session, started.id, 2).await;
    client
        .delete_message(&mut session, completed.id)
        .await
        .expect("ack");
    let done = completed
        .jobs
        .iter()
        .find_map(|j| match j {
            JobMessage::Completed(done) => Some(done.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{completed:?}"));
    assert_eq!(done.job.job_id, job_id);
    assert_eq!(done.result, JobResult::Succeeded);
    assert_eq!(done.runner_id, Some(jit.runner.id));
    assert_eq!(done.runner_name.as_deref(), Some("h2-run-r1"));
    assert!(done.job.finish_time.is_some());
    assert_eq!(completed.statistics.total_assigned_jobs, 0, "{completed:?}");
    assert_eq!(
        client.runner_by_id(jit.runner.id).await.expect("lookup"),
        None,
        "an ephemeral runner is gone after its job"
    );
    client.delete_session(&session).await.expect("close");
    client.delete_scale_set(set.id).await.expect("delete");
}

#[tokio::test]
async fn sim_faults_registration_401s_queue_5xx_empty_bodies_and_evicted_sessions() {
    let sim = sim().await;
    sim.inject_fault(
        github_sim::FaultSpec::status("POST /actions/runner-registration", 401).times(2),
    );
    let (client, set, mut session) = listener(&sim, "h2-faults").await;
    let poll = "GET /tenant/{tenant}/_apis/runtime/runnerscalesets/{id}/messages";
    let mut burst = github_sim::FaultSpec::status(poll, 503).times(2);
    burst.retry_after = Some(0);
    sim.inject_fault(burst);
    sim.inject_fault(github_sim::FaultSpec::status(poll, 500).times(1));
    assert!(client
        .get_message(&mut session, 0, 1)
        .await
        .expect("retried past 3 server errors")
        .is_none());

    hook(&sim, "faults", json!({"empty_body": 1})).await;
    let err = client
        .get_message(&mut session, 0, 1)
        .await
        .expect_err("EOF");
    assert!(
        matches!(err, ScaleSetError::Decode { .. }) && !err.is_permanent(),
        "{err:?}"
    );
    assert!(client
        .get_message(&mut session, 0, 1)
        .await
        .expect("fine again")
        .is_none());

    hook(&sim, "faults", json!({"empty_queue_url": 1})).await;
    let err = client
        .refresh_session(&mut session)
        .await
        .expect_err("no queue url");
    assert_err!(err, ScaleSetError::InvalidResponse { .. });

    // Evicted on the service side: the poll's 401 leads to a refresh that finds no session.
    let response = reqwest::Client::new()
        .post(format!(
            "{}/_sim/scalesets/sessions/{}/expire",
            sim.base_url(),
            session.id
        ))
        .send()
        .await
        .expect("expire");
    assert_eq!(response.status().as_u16(), 204);
    let err = client
        .get_message(&mut session, 0, 1)
        .await
        .expect_err("gone");
    assert_err!(err, ScaleSetError::SessionExpired { .. });
    let fresh = client
        .create_session(set.id, "host-a")
        .await
        .expect("new session");
    client.delete_session(&fresh).await.expect("close");
}

#[tokio::test]
async fn a_hosted_config_url_through_a_proxy() {
    // `github.localhost` is a hosted name: REST at `api.HOST` without `/api/v3`. Every request
    // reaches the scripted server as a proxy (absolute-form request targets).
    let server = Server::start(vec![
        expect("POST", "/orgs/octo-org/actions/runners/registration-token")
            .status(201)
            .json(json!({"token": "reg", "expires_at": "2099-01-01T00:00:00Z"})),
        expect("POST", "/actions/runner-registration").json(json!({
            "url": "http://pipelines.github.localhost/tenant/9/",
            "token": jwt(epoch() + 3600, "proxy"),
        })),
        expect(
            "GET",
            "/tenant/9/_apis/runtime/runnergroups/?api-version=6.0-preview&groupName=gpu",
        )
        .json(json!({"count": 1, "value": [{"id": 3, "name": "gpu", "size": 0, "isDefaultGroup": false}]})),
    ])
    .await;
    let mut config = config("http://github.localhost/octo-org", pat("ghp_pat_SECRET"));
    config.proxy = Some(github::ProxyConfig {
        http: Some(server.url.to_string()),
        https: None,
        no_proxy: None,
    });
    let client = ScaleSetClient::new(config).expect("client");
    assert!(client.config_url().hosted);
    assert_eq!(client.runner_group_id("gpu").await.expect("group"), 3);
    let uris: Vec<String> = server.finish().into_iter().map(|s| s.uri).collect();
    assert_eq!(
        uris,
        vec![
            "http://api.github.localhost/orgs/octo-org/actions/runners/registration-token",
            "http://api.github.localhost/actions/runner-registration",
            "http://pipelines.github.localhost/tenant/9/_apis/runtime/runnergroups/?api-version=6.0-preview&groupName=gpu",
        ]
    );
}

/// Collects what the client logs (targets `github::…` only, every level).
#[derive(Clone, Default)]
struct LogBuffer(std::sync::Arc<parking_lot::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_secret_reaches_the_logs_or_the_errors() {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::Layer as _;
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_filter(tracing_subscriber::filter::filter_fn(|m| {
            m.target().starts_with("github::") || m.target() == "github"
        }));
    let _guard = tracing::subscriber::set_default(
        tracing_subscriber::registry()
            .with(layer)
            .with(tracing_subscriber::filter::LevelFilter::TRACE),
    );

    let admin = jwt(epoch() + 3600, "ADMINJTI");
    let server = Server::start(vec![]).await;
    server.push(vec![
        expect("POST", REG)
            .status(201)
            .json(json!({"token": "REG_SECRET", "expires_at": "2099-01-01T00:00:00Z"})),
        expect("POST", REGISTRATION).status(401),
        expect("POST", REGISTRATION).json(json!({
            "url": format!("{}tenant/1/", server.url), "token": admin,
        })),
        session_created(&server, "QUEUE_SECRET_1"),
        expect("GET", "/queue/7?tenant=1").status(503),
        expect("GET", "/queue/7?tenant=1").status(401),
        session_refreshed(&server, "QUEUE_SECRET_2"),
        expect("GET", "/queue/7?tenant=1").status(401),
        expect("POST", JIT_CONFIG).json(json!({
            "runner": {"id": 1, "name": "r", "runnerScaleSetId": 7},
            "encodedJITConfig": "JIT_SECRET_BLOB"
        })),
    ]);
    let client = scripted_client(&server);
    let mut session = client.create_session(7, "host-1").await.expect("session");
    let err = client
        .get_message(&mut session, 0, 1)
        .await
        .expect_err("401 twice");
    let jit = client.generate_jit_config(7, "r").await.expect("jit");
    server.finish();
    drop(_guard);

    let shown = format!(
        "{} {client:?} {session:?} {jit:?} {err:?} {err}",
        String::from_utf8_lossy(&logs.0.lock())
    );
    assert!(
        shown.contains("retrying"),
        "the logs were captured: {shown}"
    );
    for secret in [
        "ghp_pat_SECRET",
        "REG_SECRET",
        admin.as_str(),
        admin.split('.').nth(1).expect("payload"),
        "QUEUE_SECRET",
        "JIT_SECRET_BLOB",
    ] {
        assert!(!shown.contains(secret), "{secret} leaked: {shown}");
    }
}

#[tokio::test]
async fn concurrent_calls_share_one_bootstrap_and_one_re_bootstrap() {
    let server = Server::start(vec![]).await;
    server.push(bootstrap(&server, 3600, "r1", "first"));
    let refused = || {
        expect("GET", SET_7)
            .status(401)
            .delay(Duration::from_millis(300))
            .json(json!({"typeName": "GitHub.Services.WebApi.InvalidTokenException, GitHub.Services.WebApi", "message": "revoked"}))
    };
    server.push(vec![refused(), refused()]);
    server.push(bootstrap(&server, 3600, "r2", "second"));
    server.push(vec![
        expect("GET", SET_7).json(set_json(7, "lxd")),
        expect("GET", SET_7).json(set_json(7, "lxd")),
    ]);
    let client = scripted_client(&server);
    let (a, b) = tokio::join!(client.scale_set(7), client.scale_set(7));
    assert_eq!((a.expect("a").id, b.expect("b").id), (7, 7));
    let seen = server.finish();
    let bootstraps = seen
        .iter()
        .filter(|s| s.uri.ends_with("runner-registration"))
        .count();
    assert_eq!(bootstraps, 2, "one at start, one after the shared 401");
}

#[tokio::test]
async fn retry_after_overrides_the_backoff_on_429_and_503() {
    let server = Server::start(vec![]).await;
    server.push(bootstrap(&server, 3600, "r", "ra"));
    server.push(vec![
        expect("GET", SET_7).status(429).header("retry-after", "1"),
        expect("GET", SET_7).status(503).header("retry-after", "1"),
        expect("GET", SET_7).json(set_json(7, "lxd")),
    ]);
    let url = format!("{}octo-org", server.url);
    let mut config = config(&url, pat("ghp_pat_SECRET"));
    config.retry.max_retry_after = Duration::from_secs(5);
    let client = ScaleSetClient::new(config).expect("client");
    let started = Instant::now();
    assert_eq!(client.scale_set(7).await.expect("retried").id, 7);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(2),
        "two Retry-After waits of 1 s: {waited:?}"
    );
    server.finish();
}

#[tokio::test]
async fn sim_an_idle_listener_costs_one_request_per_long_poll() {
    let sim = sim().await;
    let (client, _set, mut session) = listener(&sim, "h2-idle").await;
    sim.reset_request_counts();
    for _ in 0..3 {
        assert!(client
            .get_message(&mut session, 0, 4)
            .await
            .expect("poll")
            .is_none());
    }
    let counts: Vec<(String, u64)> = sim
        .request_counts()
        .into_iter()
        .filter(|(key, _)| !key.starts_with("GET /_sim") && !key.starts_with("POST /_sim"))
        .map(|(key, c)| (key, c.count))
        .collect();
    assert_eq!(
        counts,
        vec![(
            "GET /tenant/{tenant}/_apis/runtime/runnerscalesets/{id}/messages".to_owned(),
            3
        )],
        "no bootstrap, no admin call, no REST call while the admin token is fresh"
    );
    client.delete_session(&session).await.expect("close");
}
