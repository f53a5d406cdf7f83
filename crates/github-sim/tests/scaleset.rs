//! The runner scale-set protocol over HTTP (reference `scaleset-protocol.md`): bootstrap,
//! scale-set CRUD, sessions, the message queue (long poll, redelivery, capacity), the GHES
//! acquire flow and the hosted flow, statistics, re-assignment, JIT runners, faults and token
//! expiry. Runners are simulated through the runner protocol (`/_runner/...`), as the other sim
//! tests do; `crates/fake-runner/tests/scaleset.rs` runs the real agent.

mod common;

use std::time::{Duration, Instant};

use base64::Engine;
use common::*;
use github_sim::{AcquireMode, ScaleSetConfig, SimConfig, SimHandle};
use reqwest::{Method, RequestBuilder, Response};
use serde_json::{json, Value};

const EXAMPLE_SET: &str = r#"{"name":"lxd-amd64","runnerGroupId":1,"labels":[{"type":"System","name":"lxd-amd64"}],"RunnerSetting":{"disableUpdate":true},"createdOn":"0001-01-01T00:00:00Z"}"#;

const CONFLICT: &str = "GitHub.Actions.Runtime.WebApi.RunnerScaleSetSessionConflictException, GitHub.Actions.Runtime.WebApi";

async fn sim_with(cfg: ScaleSetConfig) -> SimHandle {
    start(SimConfig::default().with_scaleset(cfg)).await
}

async fn sim() -> SimHandle {
    sim_with(ScaleSetConfig::for_tests()).await
}

async fn hosted_sim() -> SimHandle {
    sim_with(ScaleSetConfig {
        mode: AcquireMode::Hosted,
        ..ScaleSetConfig::for_tests()
    })
    .await
}

/// `runner-registration` for a config URL with a registration token.
async fn register_raw(sim: &SimHandle, token: &str, config_url: &str) -> Response {
    send(
        client()
            .post(format!("{}/actions/runner-registration", sim.api_url()))
            .header("authorization", format!("RemoteAuth {token}"))
            .header("content-type", "application/json")
            .body(format!(
                "{}\n",
                json!({"url": config_url, "runner_event": "register"})
            )),
    )
    .await
}

/// The admin connection of a scope: the tenant base URL and the admin JWT.
struct Admin {
    base: String,
    token: String,
}

async fn connect(sim: &SimHandle, scope: &github_sim::Scope) -> Admin {
    let token = registration_token(sim, scope).await;
    let response = register_raw(sim, &token, &sim.scope_url(scope)).await;
    assert_eq!(response.status(), 200);
    let body = json(response).await;
    Admin {
        base: text(&body, "url"),
        token: text(&body, "token"),
    }
}

impl Admin {
    /// An admin request: `api-version` first in the query, as some clients order it.
    fn req(&self, method: Method, path: &str) -> RequestBuilder {
        let sep = if path.contains('?') { '&' } else { '?' };
        client()
            .request(
                method,
                format!("{}{path}{sep}api-version=6.0-preview", self.base),
            )
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/json")
    }

    /// Sends an admin request without a body.
    async fn call(&self, method: Method, path: &str) -> Response {
        send(self.req(method, path)).await
    }

    /// Asserts that the call is refused with `status` and `exception` (see [`assert_refused`]).
    async fn refused(&self, method: Method, path: &str, status: u16, exception: &str) {
        assert_refused(self.call(method, path).await, status, exception).await;
    }

    /// `POST`s the reference's example scale set ([`EXAMPLE_SET`]).
    async fn create_example_set(&self) -> Response {
        send(
            self.req(Method::POST, "_apis/runtime/runnerscalesets")
                .body(EXAMPLE_SET),
        )
        .await
    }

    /// `GET`, the JSON body.
    async fn get(&self, path: &str) -> Value {
        json(self.call(Method::GET, path).await).await
    }

    async fn create_set(&self, name: &str, labels: &[&str]) -> Value {
        let labels: Vec<Value> = labels
            .iter()
            .map(|l| json!({"type": "System", "name": l}))
            .collect();
        let body = json!({"name": name, "runnerGroupId": 1, "labels": labels,
            "RunnerSetting": {}, "createdOn": "0001-01-01T00:00:00Z"});
        let response = send(
            self.req(Method::POST, "_apis/runtime/runnerscalesets")
                .json(&body),
        )
        .await;
        assert_eq!(response.status(), 200);
        json(response).await
    }

    /// Creates a set, its id.
    async fn set_id(&self, name: &str, labels: &[&str]) -> u64 {
        self.create_set(name, labels).await["id"]
            .as_u64()
            .expect("id")
    }

    async fn session(&self, set_id: u64) -> Session {
        let response = self.create_session(set_id).await;
        assert_eq!(response.status(), 200);
        let body = json(response).await;
        Session {
            id: text(&body, "sessionId"),
            url: text(&body, "messageQueueUrl"),
            token: text(&body, "messageQueueAccessToken"),
            body,
        }
    }

    async fn create_session(&self, set_id: u64) -> Response {
        send(
            self.req(
                Method::POST,
                &format!("_apis/runtime/runnerscalesets/{set_id}/sessions"),
            )
            .json(&json!({"sessionId": "00000000-0000-0000-0000-000000000000", "ownerName": "test-host"})),
        )
        .await
    }

    async fn jit(&self, set_id: u64, name: &str) -> Response {
        send(
            self.req(
                Method::POST,
                &format!("_apis/runtime/runnerscalesets/{set_id}/generatejitconfig"),
            )
            .json(&json!({"name": name, "workFolder": ""})),
        )
        .await
    }

    /// A JIT runner of the set, connected through the runner protocol: `(id, credential)`.
    async fn runner(&self, set_id: u64, name: &str) -> (u64, String) {
        let response = self.jit(set_id, name).await;
        assert_eq!(response.status(), 200);
        let body = json(response).await;
        assert_eq!(body["runner"]["name"], name);
        assert_eq!(body["runner"]["runnerScaleSetId"], set_id);
        let (id, credential) = decode_jit(&text(&body, "encodedJITConfig"));
        assert_eq!(Some(id), body["runner"]["id"].as_u64());
        (id, credential)
    }
}

/// A listener's start: the organisation's admin connection, a new set and a session on it.
async fn listening(sim: &SimHandle, name: &str, labels: &[&str]) -> (Admin, u64, Session) {
    listening_in(sim, &org(), name, labels).await
}

/// A listener's start in `scope`: its admin connection, a new set and a session on it.
async fn listening_in(
    sim: &SimHandle,
    scope: &github_sim::Scope,
    name: &str,
    labels: &[&str],
) -> (Admin, u64, Session) {
    let admin = connect(sim, scope).await;
    let id = admin.set_id(name, labels).await;
    let session = admin.session(id).await;
    (admin, id, session)
}

fn b64_json(s: &str) -> Value {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s)
        .expect("base64");
    serde_json::from_slice(&bytes).expect("json")
}

/// `(agentId, credential)` of an `encodedJITConfig`.
fn decode_jit(encoded: &str) -> (u64, String) {
    let outer = b64_json(encoded);
    let runner = b64_json(outer[".runner"].as_str().expect(".runner"));
    let credentials = b64_json(outer[".credentials"].as_str().expect(".credentials"));
    assert!(outer[".credentials_rsaparams"].is_string());
    (
        runner["agentId"].as_u64().expect("agentId"),
        credentials["data"]["clientId"]
            .as_str()
            .expect("clientId")
            .to_owned(),
    )
}

struct Session {
    id: String,
    url: String,
    token: String,
    body: Value,
}

impl Session {
    async fn poll(&self, last: i64, capacity: i64) -> Response {
        let url = if last > 0 {
            format!("{}&lastMessageId={last}", self.url)
        } else {
            self.url.clone()
        };
        send(
            client()
                .get(url)
                .header("accept", "application/json; api-version=6.0-preview")
                .header("authorization", format!("Bearer {}", self.token))
                .header("x-scalesetmaxcapacity", capacity.to_string()),
        )
        .await
    }

    /// A poll that must return a message: `(messageId, statistics, job messages)`.
    async fn message(&self, last: i64, capacity: i64) -> (i64, Value, Vec<Value>) {
        let response = self.poll(last, capacity).await;
        assert_eq!(response.status(), 200, "a message");
        let envelope = json(response).await;
        assert_eq!(envelope["messageType"], "RunnerScaleSetJobMessages");
        let body = envelope["body"].as_str().expect("body is a JSON string");
        let jobs: Vec<Value> = serde_json::from_str(body).expect("body holds an array");
        (
            envelope["messageId"].as_i64().expect("messageId"),
            envelope["statistics"].clone(),
            jobs,
        )
    }

    async fn ack(&self, message_id: i64) {
        let (path, query) = self.url.split_once('?').unwrap_or((&self.url, ""));
        let response = send(
            client()
                .delete(format!("{path}/{message_id}?{query}"))
                .header("content-type", "application/json")
                .header("authorization", format!("Bearer {}", self.token)),
        )
        .await;
        assert_eq!(response.status(), 204);
    }

    /// Polls and acks until `want` job messages came (or the deadline), returning them.
    async fn collect(&self, capacity: i64, want: usize, within: Duration) -> Vec<Value> {
        let deadline = Instant::now() + within;
        let mut all = Vec::new();
        let mut last = 0;
        while all.len() < want && Instant::now() < deadline {
            let response = self.poll(last, capacity).await;
            if response.status() == 202 {
                continue;
            }
            assert_eq!(response.status(), 200);
            let envelope = json(response).await;
            let jobs: Vec<Value> =
                serde_json::from_str(envelope["body"].as_str().expect("body")).expect("array");
            last = envelope["messageId"].as_i64().expect("id");
            self.ack(last).await;
            all.extend(jobs);
        }
        all
    }

    async fn acquire(&self, admin: &Admin, set_id: u64, ids: &[i64]) -> Response {
        send(
            client()
                .post(format!(
                    "{}_apis/runtime/runnerscalesets/{set_id}/acquirejobs?api-version=6.0-preview",
                    admin.base
                ))
                .header("content-type", "application/json")
                .header("authorization", format!("Bearer {}", self.token))
                .json(&ids),
        )
        .await
    }
}

async fn type_name(response: Response) -> String {
    let body = json(response).await;
    body["typeName"].as_str().expect("typeName").to_owned()
}

/// Asserts a refusal: its status, and a `typeName` that names `exception`.
async fn assert_refused(response: Response, status: u16, exception: &str) {
    assert_eq!(response.status(), status);
    let name = type_name(response).await;
    assert!(name.contains(exception), "{name}");
}

async fn enqueue(sim: &SimHandle, labels: &[&str], script: &str) -> u64 {
    let response =
        send(admin(sim, Method::POST, "/jobs").json(&json!({"labels": labels, "script": script})))
            .await;
    assert_eq!(response.status(), 201);
    json(response).await["job_id"].as_u64().expect("job_id")
}

async fn dump(sim: &SimHandle) -> Value {
    admin_json(sim, "/scalesets").await
}

/// The dump's record of a job.
async fn ss_job(sim: &SimHandle, job_id: u64) -> Value {
    let dump = dump(sim).await;
    dump["scale_sets"]
        .as_array()
        .expect("sets")
        .iter()
        .flat_map(|s| s["jobs"].as_array().cloned().unwrap_or_default())
        .find(|j| j["job_id"] == job_id)
        .unwrap_or(Value::Null)
}

async fn hook(sim: &SimHandle, path: &str, body: Value) -> Response {
    send(admin(sim, Method::POST, path).json(&body)).await
}

fn types(jobs: &[Value]) -> Vec<String> {
    jobs.iter()
        .map(|j| j["messageType"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn jwt_part(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).expect("JWT part");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("json")
}

// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn bootstrap_gives_the_tenant_and_an_expiring_admin_jwt_per_scope() {
    let sim = sim().await;
    for scope in [repo(), org(), enterprise()] {
        let admin = connect(&sim, &scope).await;
        assert_eq!(admin.base, format!("{}/tenant/1/", sim.base_url()));
        assert_eq!(jwt_part(&admin.token, 0)["alg"], "HS256");
        let claims = jwt_part(&admin.token, 1);
        let exp = claims["exp"].as_i64().expect("numeric exp");
        let now = time_now();
        assert!(exp > now + 3000 && exp <= now + 3700, "exp {exp} now {now}");
        assert_eq!(claims["sub"], scope.path());
    }
    // The enterprise path is matched ignoring case, and the REST base at the root works too.
    let token = registration_token(&sim, &enterprise()).await;
    let response = send(
        client()
            .post(format!("{}/actions/runner-registration", sim.base_url()))
            .header("authorization", format!("RemoteAuth {token}"))
            .json(&json!({"url": format!("{}/Enterprises/acme/", sim.base_url()), "runner_event": "register"})),
    )
    .await;
    assert_eq!(response.status(), 200);

    // A bad registration token, a token of another scope, an unknown scope.
    let response = register_raw(&sim, "NOTATOKEN", &sim.scope_url(&org())).await;
    assert_eq!(response.status(), 401);
    let org_token = registration_token(&sim, &org()).await;
    let response = register_raw(&sim, &org_token, &sim.scope_url(&repo())).await;
    assert_eq!(response.status(), 403);
    let response = register_raw(&sim, &org_token, &format!("{}/nobody", sim.base_url())).await;
    assert_eq!(response.status(), 404);
    let response = register_raw(&sim, &org_token, &format!("{}/a/b/c", sim.base_url())).await;
    assert_eq!(response.status(), 404);

    // An expired admin token gets 401, whether by its exp or by the expire hook.
    let ttl = hook(
        &sim,
        "/scalesets/config",
        json!({"admin_token_ttl_ms": 3000}),
    )
    .await;
    assert_eq!(ttl.status(), 200);
    let short = connect(&sim, &org()).await;
    let groups = "_apis/runtime/runnergroups/?groupName=Default";
    assert_eq!(short.call(Method::GET, groups).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(3200)).await;
    short
        .refused(Method::GET, groups, 401, "InvalidTokenException")
        .await;
    hook(
        &sim,
        "/scalesets/config",
        json!({"admin_token_ttl_ms": 3_600_000}),
    )
    .await;
    let fresh = connect(&sim, &org()).await;
    assert_eq!(fresh.call(Method::GET, groups).await.status(), 200);
    let expired = hook(&sim, "/scalesets/tokens/expire", json!({"admin": true})).await;
    assert_eq!(expired.status(), 200);
    assert_eq!(fresh.call(Method::GET, groups).await.status(), 401);
    // Every admin JWT handed out is listed for secret scans.
    let secrets = admin_json(&sim, "/secrets").await;
    let admins = secrets["scaleset_admin_tokens"].as_array().expect("list");
    assert!(admins.iter().any(|t| t == fresh.token.as_str()));
    // No token at all.
    let response = send(client().get(format!("{}{groups}", fresh.base))).await;
    assert_eq!(response.status(), 401);
}

fn time_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

#[tokio::test]
async fn runner_groups_and_scale_set_crud() {
    let sim = sim().await;
    let admin = connect(&sim, &org()).await;
    // Query keys in any order, the trailing slash of the groups path.
    let url = format!(
        "{}_apis/runtime/runnergroups/?groupName=default&api-version=6.0-preview",
        admin.base
    );
    let groups = json(send(client().get(url).bearer_auth(&admin.token)).await).await;
    assert_eq!(groups["count"], 1);
    assert_eq!(groups["value"][0]["id"], 1);
    assert_eq!(groups["value"][0]["isDefaultGroup"], true);
    let none = admin.get("_apis/runtime/runnergroups/?groupName=gpu").await;
    assert_eq!(none["count"], 0);

    // Create with the reference's example body: 200 (not 201) and the object.
    let response = admin.create_example_set().await;
    assert_eq!(response.status(), 200);
    let set = json(response).await;
    let id = set["id"].as_u64().expect("id");
    assert_eq!(set["name"], "lxd-amd64");
    assert_eq!(set["runnerGroupId"], 1);
    assert_eq!(set["runnerGroupName"], "Default");
    assert_eq!(
        set["labels"],
        json!([{"type": "System", "name": "lxd-amd64"}])
    );
    assert_eq!(set["RunnerSetting"]["disableUpdate"], true);
    assert!(set["createdOn"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(set["statistics"]["totalAssignedJobs"], 0);
    // The same name again in the same group: 409.
    let again = admin.create_example_set().await;
    assert_eq!(again.status(), 409);
    // Without labels the name is the label.
    let bare = admin.create_set("bare", &[]).await;
    assert_eq!(bare["labels"], json!([{"type": "System", "name": "bare"}]));

    // Get by name (0 is not an error), by id.
    let found = admin
        .get("_apis/runtime/runnerscalesets?runnerGroupId=1&name=lxd-amd64")
        .await;
    assert_eq!(found["count"], 1);
    assert_eq!(found["value"][0]["id"], id);
    let missing = admin
        .get("_apis/runtime/runnerscalesets?name=nope&runnerGroupId=1")
        .await;
    assert_eq!(missing["count"], 0);
    let by_id = admin
        .get(&format!("_apis/runtime/runnerscalesets/{id}"))
        .await;
    assert_eq!(by_id["name"], "lxd-amd64");
    // Another scope does not see it.
    let other = connect(&sim, &repo()).await;
    let response = other
        .call(Method::GET, &format!("_apis/runtime/runnerscalesets/{id}"))
        .await;
    assert_eq!(response.status(), 404);

    // PATCH merges only what is given (ARC sends the name alone plus the always-present keys).
    let response = send(
        admin
            .req(
                Method::PATCH,
                &format!("_apis/runtime/runnerscalesets/{id}"),
            )
            .body(r#"{"name":"renamed","RunnerSetting":{},"createdOn":"0001-01-01T00:00:00Z"}"#),
    )
    .await;
    assert_eq!(response.status(), 200);
    let patched = json(response).await;
    assert_eq!(patched["name"], "renamed");
    assert_eq!(patched["runnerGroupId"], 1);
    assert_eq!(patched["RunnerSetting"]["disableUpdate"], true);
    assert_eq!(patched["labels"][0]["name"], "lxd-amd64");

    // DELETE: 204, then 404 RunnerScaleSetNotFoundException.
    let path = format!("_apis/runtime/runnerscalesets/{id}");
    assert_eq!(admin.call(Method::DELETE, &path).await.status(), 204);
    let response = admin.call(Method::GET, &path).await;
    assert_eq!(response.status(), 404);
    assert!(type_name(response)
        .await
        .starts_with("GitHub.Actions.Runtime.WebApi.RunnerScaleSetNotFoundException, "));
    let response = admin.create_session(id).await;
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn one_session_per_scale_set_refresh_delete_and_expiry() {
    let sim = sim().await;
    let admin = connect(&sim, &org()).await;
    let set = admin.create_set("sessions", &["sessions"]).await;
    let id = set["id"].as_u64().expect("id");
    let session = admin.session(id).await;
    assert_ne!(session.id, "00000000-0000-0000-0000-000000000000");
    assert_eq!(session.body["ownerName"], "test-host");
    assert_eq!(session.body["runnerScaleSet"]["id"], id);
    assert!(session.body["statistics"].is_object());
    assert!(session.url.starts_with(&format!(
        "{}_apis/runtime/runnerscalesets/{id}/messages",
        admin.base
    )));

    // A second session: 409 with the assembly-qualified type name.
    let response = admin.create_session(id).await;
    assert_eq!(response.status(), 409);
    assert!(response.headers().contains_key("activityid"));
    let body = json(response).await;
    assert_eq!(body["typeName"], CONFLICT);
    assert_eq!(
        body["message"],
        "The actions runner scaleset sessions already has an active session."
    );

    let secrets = admin_json(&sim, "/secrets").await;
    assert_eq!(
        secrets["scaleset_queue_tokens"],
        json!([session.token.as_str()])
    );
    // Refresh: same session id, a new queue token that works.
    let path = format!("_apis/runtime/runnerscalesets/{id}/sessions/{}", session.id);
    let response = admin.call(Method::PATCH, &path).await;
    assert_eq!(response.status(), 200);
    let refreshed = json(response).await;
    assert_eq!(refreshed["sessionId"], session.id.as_str());
    assert_ne!(refreshed["messageQueueAccessToken"], session.token.as_str());
    assert!(refreshed["messageQueueUrl"].is_string());
    let renewed = Session {
        id: session.id.clone(),
        url: text(&refreshed, "messageQueueUrl"),
        token: text(&refreshed, "messageQueueAccessToken"),
        body: refreshed,
    };
    assert_eq!(renewed.poll(0, 1).await.status(), 202);

    // Delete: 204, again 400 RunnerScaleSetSessionExpiredException, then a new one is allowed.
    assert_eq!(admin.call(Method::DELETE, &path).await.status(), 204);
    admin
        .refused(
            Method::DELETE,
            &path,
            400,
            "RunnerScaleSetSessionExpiredException",
        )
        .await;
    assert_eq!(renewed.poll(0, 1).await.status(), 401, "its token is gone");
    let response = admin.call(Method::PATCH, &path).await;
    assert_eq!(response.status(), 404, "refresh of an evicted session");
    let second = admin.session(id).await;

    // The expire hook frees the set at once.
    let listed = admin_json(&sim, "/scalesets/sessions").await;
    assert_eq!(listed[0]["sessionId"], second.id.as_str());
    let expired = send(common::admin(
        &sim,
        Method::POST,
        &format!("/scalesets/sessions/{}/expire", second.id),
    ))
    .await;
    assert_eq!(expired.status(), 204);
    let third = admin.session(id).await;

    // A session neither polled nor refreshed expires by itself (a crashed listener's).
    hook(
        &sim,
        "/scalesets/config",
        json!({"session_timeout_ms": 1500}),
    )
    .await;
    assert_eq!(admin.create_session(id).await.status(), 409);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let fourth = admin.session(id).await;
    assert_eq!(third.poll(0, 1).await.status(), 401);
    // A long poll keeps its session alive past the timeout.
    hook(&sim, "/scalesets/config", json!({"poll_wait_ms": 2000})).await;
    assert_eq!(fourth.poll(0, 1).await.status(), 202);
    assert_eq!(admin.create_session(id).await.status(), 409);
}

#[tokio::test]
async fn an_empty_long_poll_answers_202_without_a_body_after_its_wait() {
    let sim = sim().await;
    let (_, _, session) = listening_in(&sim, &repo(), "idle", &["idle"]).await;
    let started = Instant::now();
    let response = session.poll(0, 10).await;
    let waited = started.elapsed();
    assert_eq!(response.status(), 202);
    assert!(response.bytes().await.expect("body").is_empty());
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    // A message arriving mid-poll ends the wait at once.
    hook(
        &sim,
        "/scalesets/config",
        json!({"poll_wait_ms": 10_000, "mode": "hosted"}),
    )
    .await;
    let poll = tokio::spawn(async move {
        let started = Instant::now();
        let message = session.message(0, 10).await;
        (message, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let job = enqueue(&sim, &["IDLE"], "true").await;
    let ((_, stats, jobs), waited) = poll.await.expect("poll task");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    assert_eq!(types(&jobs), ["JobAssigned"]);
    assert_eq!(stats["totalAssignedJobs"], 1);
    assert_eq!(ss_job(&sim, job).await["state"], "assigned");
}

#[tokio::test]
async fn ghes_acquire_flow_then_hosted_flow() {
    let sim = sim().await;
    let (admin, id, session) = listening(&sim, "ghes", &["ghes", "linux"]).await;
    let job = enqueue(&sim, &["ghes", "Linux"], "true").await;
    // A job with a label the set lacks is not offered to it.
    let other = enqueue(&sim, &["ghes", "gpu"], "true").await;

    let (first, stats, jobs) = session.message(0, 10).await;
    assert_eq!(first, 100_000_001);
    assert_eq!(types(&jobs), ["JobAvailable"]);
    let request_id = jobs[0]["runnerRequestId"]
        .as_i64()
        .expect("runnerRequestId");
    assert!(request_id > 0);
    let job_uuid = text(&jobs[0], "jobId");
    assert_eq!(jobs[0]["requestLabels"], json!(["ghes", "Linux"]));
    assert_eq!(jobs[0]["ownerName"], "octo");
    assert_eq!(jobs[0]["repositoryName"], "app");
    assert!(jobs[0]["workflowRunId"].as_i64().is_some());
    assert!(jobs[0]["acquireJobUrl"].is_string());
    assert_eq!(stats["totalAvailableJobs"], 1);
    assert_eq!(stats["totalAssignedJobs"], 0);
    session.ack(first).await;

    // acquirejobs with the queue token: the ids won.
    let response = session.acquire(&admin, id, &[request_id, 999_999]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        json(response).await,
        json!({"count": 1, "value": [request_id]})
    );
    let (second, stats, jobs) = session.message(first, 10).await;
    assert!(second > first);
    assert_eq!(types(&jobs), ["JobAssigned"]);
    assert_eq!(jobs[0]["jobId"], job_uuid.as_str());
    assert_eq!(jobs[0]["runnerRequestId"], request_id);
    assert!(jobs[0]["scaleSetAssignTime"].is_string());
    assert_eq!(stats["totalAvailableJobs"], 0);
    assert_eq!(stats["totalAssignedJobs"], 1);
    session.ack(second).await;
    // The admin token is not a queue token.
    let response = send(
        admin
            .req(
                Method::POST,
                &format!("_apis/runtime/runnerscalesets/{id}/acquirejobs"),
            )
            .json(&[request_id]),
    )
    .await;
    assert_eq!(response.status(), 401);
    assert_eq!(ss_job(&sim, other).await, Value::Null);
    assert_eq!(
        sim.job(other).map(|j| j.status),
        Some(github_sim::JobStatus::Queued)
    );

    // Hosted mode: JobAssigned at once with runnerRequestId 0; acquirejobs is 404.
    let switched = hook(&sim, "/scalesets/mode", json!({"mode": "hosted"})).await;
    assert_eq!(json(switched).await["mode"], "hosted");
    let hosted = enqueue(&sim, &["ghes"], "true").await;
    let (_, stats, jobs) = session.message(second, 10).await;
    assert_eq!(types(&jobs), ["JobAssigned"]);
    assert_eq!(jobs[0]["runnerRequestId"], 0);
    assert!(uuid::Uuid::parse_str(jobs[0]["jobId"].as_str().expect("jobId")).is_ok());
    assert_eq!(stats["totalAssignedJobs"], 2);
    assert_eq!(session.acquire(&admin, id, &[0]).await.status(), 404);
    assert_eq!(ss_job(&sim, hosted).await["state"], "assigned");
    assert_eq!(
        ss_job(&sim, job).await["messages"],
        json!(["JobAvailable", "JobAssigned"])
    );
}

#[tokio::test]
async fn unacked_messages_are_redelivered_also_to_a_new_session() {
    let sim = hosted_sim().await;
    let (admin, id, session) = listening_in(&sim, &repo(), "redeliver", &["redeliver"]).await;
    enqueue(&sim, &["redeliver"], "true").await;
    let (message, _, jobs) = session.message(0, 5).await;
    // Not acked: the same message again on a lastMessageId=0 poll.
    let (again, _, jobs_again) = session.message(0, 5).await;
    assert_eq!(again, message);
    assert_eq!(jobs_again, jobs);
    // Above it: nothing new.
    assert_eq!(session.poll(message, 5).await.status(), 202);
    // The queue belongs to the set: a new session gets it too.
    let path = format!("_apis/runtime/runnerscalesets/{id}/sessions/{}", session.id);
    assert_eq!(admin.call(Method::DELETE, &path).await.status(), 204);
    let fresh = admin.session(id).await;
    let (redelivered, stats, jobs_new) = fresh.message(0, 5).await;
    assert_eq!(redelivered, message);
    assert_eq!(jobs_new, jobs);
    assert_eq!(stats["totalAssignedJobs"], 1, "statistics are fresh");
    fresh.ack(message).await;
    assert_eq!(fresh.poll(0, 5).await.status(), 202);
    let messages = admin_json(&sim, &format!("/scalesets/{id}/messages")).await;
    assert_eq!(messages, json!([]));
}

#[tokio::test]
async fn capacity_gates_assignment_and_is_read_on_every_poll() {
    let sim = hosted_sim().await;
    let (_, _, session) = listening(&sim, "cap", &["cap"]).await;
    let a = enqueue(&sim, &["cap"], "true").await;
    let b = enqueue(&sim, &["cap"], "true").await;
    assert_eq!(session.poll(0, 0).await.status(), 202, "capacity 0");
    let (m1, stats, jobs) = session.message(0, 1).await;
    assert_eq!(types(&jobs), ["JobAssigned"]);
    assert_eq!(stats["totalAssignedJobs"], 1);
    session.ack(m1).await;
    assert_eq!(session.poll(m1, 1).await.status(), 202, "still capacity 1");
    let (m2, stats, jobs) = session.message(m1, 2).await;
    assert_eq!(types(&jobs), ["JobAssigned"]);
    assert_eq!(stats["totalAssignedJobs"], 2);
    session.ack(m2).await;
    assert_eq!(ss_job(&sim, a).await["state"], "assigned");
    assert_eq!(ss_job(&sim, b).await["state"], "assigned");
    // At most 50 job messages per envelope.
    for _ in 0..60 {
        enqueue(&sim, &["cap"], "true").await;
    }
    let (m3, stats, jobs) = session.message(m2, 1000).await;
    assert_eq!(jobs.len(), 50);
    assert_eq!(stats["totalAssignedJobs"], 62);
    session.ack(m3).await;
    let (_, _, rest) = session.message(m3, 1000).await;
    assert_eq!(rest.len(), 10);
}

#[tokio::test]
async fn jit_runner_lifecycle_statistics_and_rest_views() {
    let sim = hosted_sim().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hook_url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let received = github_sim::serve_webhook_receiver(listener);
    sim.set_webhook(Some(github_sim::WebhookTarget {
        url: hook_url,
        secret: github_sim::Secret::new("s3cret"),
    }));
    let (admin, id, session) = listening(&sim, "jit-set", &["jit-set", "extra"]).await;
    let (runner_id, credential) = admin.runner(id, "jit-runner-1").await;

    // Registered at once, offline, visible by id and name and in the REST list with its labels.
    let by_name = admin
        .get("_apis/distributedtask/pools/0/agents?agentName=jit-runner-1")
        .await;
    assert_eq!(by_name["count"], 1);
    assert_eq!(by_name["value"][0]["id"], runner_id);
    assert_eq!(by_name["value"][0]["status"], "offline");
    let agent_path = format!("_apis/distributedtask/pools/0/agents/{runner_id}");
    let by_id = admin.get(&agent_path).await;
    assert_eq!(by_id["runnerScaleSetId"], id);
    let rest = get_json(&sim, "/orgs/octo-org/actions/runners").await;
    assert_eq!(rest["total_count"], 1);
    let labels: Vec<&str> = rest["runners"][0]["labels"]
        .as_array()
        .expect("labels")
        .iter()
        .filter_map(|l| l["name"].as_str())
        .collect();
    assert_eq!(labels, ["jit-set", "extra"]);
    assert_eq!(rest["runners"][0]["status"], "offline");
    // A name in use: AgentExistsException.
    assert_refused(
        admin.jit(id, "jit-runner-1").await,
        409,
        "AgentExistsException",
    )
    .await;

    // Online and idle once it polls.
    assert_eq!(poll(&sim, runner_id, &credential, 0).await.status(), 204);
    let (m, stats, _) = {
        let job = enqueue(&sim, &["jit-set"], "echo hi").await;
        let message = session.message(0, 5).await;
        assert_eq!(ss_job(&sim, job).await["state"], "assigned");
        message
    };
    assert_eq!(stats["totalRegisteredRunners"], 1);
    assert_eq!(stats["totalIdleRunners"], 1);
    session.ack(m).await;
    // The runner takes the job on its next poll: JobStarted with the runner.
    let response = poll(&sim, runner_id, &credential, 5).await;
    assert_eq!(response.status(), 200);
    let job = json(response).await;
    let job_id = job["job_id"].as_u64().expect("job_id");
    let (m2, stats, jobs) = session.message(m, 5).await;
    assert_eq!(types(&jobs), ["JobStarted"]);
    assert_eq!(jobs[0]["runnerId"], runner_id);
    assert_eq!(jobs[0]["runnerName"], "jit-runner-1");
    assert!(jobs[0]["runnerAssignTime"].is_string());
    assert_eq!(stats["totalRunningJobs"], 1);
    assert_eq!(stats["totalBusyRunners"], 1);
    assert_eq!(stats["totalIdleRunners"], 0);
    session.ack(m2).await;
    let rest = get_json(&sim, "/orgs/octo-org/actions/runners").await;
    assert_eq!(rest["runners"][0]["busy"], true);
    assert_eq!(rest["runners"][0]["status"], "online");

    // RemoveRunner refuses a busy runner.
    admin
        .refused(Method::DELETE, &agent_path, 400, "JobStillRunningException")
        .await;

    // Completion: JobCompleted{succeeded} with the runner, and the runner is gone.
    assert_eq!(
        complete(&sim, &credential, job_id, 0, "hi\n")
            .await
            .status(),
        204
    );
    let (m3, stats, jobs) = session.message(m2, 5).await;
    assert_eq!(types(&jobs), ["JobCompleted"]);
    assert_eq!(jobs[0]["result"], "succeeded");
    assert_eq!(jobs[0]["runnerId"], runner_id);
    assert_eq!(jobs[0]["runnerName"], "jit-runner-1");
    assert!(jobs[0]["finishTime"].is_string());
    assert_eq!(stats["totalAssignedJobs"], 0);
    assert_eq!(stats["totalRegisteredRunners"], 0);
    session.ack(m3).await;
    admin
        .refused(Method::GET, &agent_path, 404, "AgentNotFoundException")
        .await;
    assert_eq!(admin.call(Method::DELETE, &agent_path).await.status(), 204);
    let rest = get_json(&sim, "/orgs/octo-org/actions/runners").await;
    assert_eq!(rest["total_count"], 0);
    let record = ss_job(&sim, job_id).await;
    assert_eq!(record["runs"], 1, "ran exactly once");
    assert_eq!(record["state"], "completed");
    assert_eq!(record["result"], "succeeded");
    assert_eq!(
        record["messages"],
        json!(["JobAssigned", "JobStarted", "JobCompleted"])
    );
    assert_eq!(
        sim.job(job_id).expect("job").conclusion.as_deref(),
        Some("success")
    );
    // The workflow_job webhooks are sent as for any other job.
    let deadline = Instant::now() + Duration::from_secs(10);
    let actions = loop {
        let actions: Vec<String> = sim
            .webhook_deliveries()
            .into_iter()
            .filter(|d| d.job_id == job_id && d.status == Some(200))
            .map(|d| d.action)
            .collect();
        if actions.len() >= 3 || Instant::now() > deadline {
            break actions;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(actions, ["queued", "in_progress", "completed"]);
    assert!(received.lock().len() >= 3);

    // An idle runner is removed by RemoveRunner: 204.
    let (idle, _) = admin.runner(id, "jit-runner-2").await;
    let path = format!("_apis/distributedtask/pools/0/agents/{idle}");
    assert_eq!(admin.call(Method::DELETE, &path).await.status(), 204);
    assert!(sim.runners().is_empty());
}

#[tokio::test]
async fn an_assigned_job_no_runner_takes_is_canceled_and_reassigned_three_times() {
    let sim = hosted_sim().await;
    hook(
        &sim,
        "/scalesets/config",
        json!({"assign_timeout_ms": 300, "reassign_delay_ms": 100}),
    )
    .await;
    let (_, _, session) = listening(&sim, "orphan", &["orphan"]).await;
    let job = enqueue(&sim, &["orphan"], "true").await;
    let jobs = session.collect(5, 8, Duration::from_secs(20)).await;
    assert_eq!(
        types(&jobs),
        [
            "JobAssigned",
            "JobCompleted",
            "JobAssigned",
            "JobCompleted",
            "JobAssigned",
            "JobCompleted",
            "JobAssigned",
            "JobCompleted"
        ]
    );
    let uuid = jobs[0]["jobId"].clone();
    for message in &jobs {
        assert_eq!(message["jobId"], uuid, "same jobId throughout");
        if message["messageType"] == "JobCompleted" {
            assert_eq!(message["result"], "canceled");
            assert!(message.get("runnerId").is_none(), "{message}");
            assert!(message.get("runnerName").is_none(), "{message}");
        }
    }
    let record = ss_job(&sim, job).await;
    assert_eq!(record["reassignments"], 3);
    assert_eq!(record["state"], "completed");
    assert_eq!(record["runs"], 0);
    let view = sim.job(job).expect("job");
    assert_eq!(view.status, github_sim::JobStatus::Completed);
    assert_eq!(view.conclusion.as_deref(), Some("cancelled"));
    // Nothing more comes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(session.poll(0, 5).await.status(), 202);
}

#[tokio::test]
async fn a_killed_busy_runner_fails_its_job_after_the_lock_timeout() {
    let sim = hosted_sim().await;
    hook(&sim, "/scalesets/config", json!({"lock_timeout_ms": 700})).await;
    let (admin, id, session) = listening(&sim, "doomed", &["doomed"]).await;
    let (runner_id, credential) = admin.runner(id, "doomed-1").await;
    assert_eq!(poll(&sim, runner_id, &credential, 0).await.status(), 204);
    let job = enqueue(&sim, &["doomed"], "sleep 100").await;
    session.collect(5, 1, Duration::from_secs(5)).await;
    let response = poll(&sim, runner_id, &credential, 5).await;
    assert_eq!(response.status(), 200);
    let killed = send(common::admin(
        &sim,
        Method::POST,
        &format!("/scalesets/runners/{runner_id}/kill"),
    ))
    .await;
    assert_eq!(killed.status(), 204);
    let started = Instant::now();
    let jobs = session.collect(5, 2, Duration::from_secs(10)).await;
    assert_eq!(types(&jobs), ["JobStarted", "JobCompleted"]);
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "lock timeout"
    );
    assert_eq!(jobs[1]["result"], "failed");
    assert_eq!(jobs[1]["runnerId"], runner_id);
    assert_eq!(jobs[1]["runnerName"], "doomed-1");
    let view = sim.job(job).expect("job");
    assert_eq!(view.conclusion.as_deref(), Some("failure"));
    assert!(
        view.output.contains("lost communication"),
        "{}",
        view.output
    );
    assert!(sim.runners().is_empty(), "the runner is gone");
}

/// The test hooks' bodies (scale-set hooks and admin API alike): an empty one reads as `{}`, one
/// that is not JSON of the hook's shape is refused with 400 `invalid body: …`.
#[tokio::test]
async fn hook_bodies_read_empty_as_defaults_and_refuse_a_wrong_shape() {
    let sim = sim().await;
    let armed = hook(&sim, "/scalesets/faults", json!({"empty_body": 1})).await;
    assert_eq!(armed.status(), 201);
    let cleared = send(common::admin(&sim, Method::POST, "/scalesets/faults")).await;
    assert_eq!(cleared.status(), 201, "an empty body is {{}}: no faults");
    assert_eq!(
        json(cleared).await,
        admin_json(&sim, "/scalesets/faults").await
    );
    assert_eq!(admin_json(&sim, "/scalesets/faults").await["empty_body"], 0);
    for (path, body) in [
        ("/scalesets/faults", "{\"empty_body\": "),
        ("/scalesets/faults", "{\"no_such_fault\": 1}"),
        ("/scalesets/mode", ""),
        ("/scalesets/config", "not json"),
        ("/scalesets/tokens/expire", "{\"admin\": \"yes\"}"),
        ("/runners/freeze", "{\"name\": \"x\"}"),
    ] {
        let response = send(common::admin(&sim, Method::POST, path).body(body)).await;
        assert_eq!(response.status(), 400, "{path} {body}");
        let message = text(&json(response).await, "message");
        assert!(message.starts_with("invalid body: "), "{path}: {message}");
    }
}

#[tokio::test]
async fn faults_on_the_queue_and_the_admin_api() {
    let sim = hosted_sim().await;
    let admin = connect(&sim, &org()).await;
    let id = admin.set_id("faulty", &["faulty"]).await;

    // An empty messageQueueUrl on the next session creation.
    let armed = hook(&sim, "/scalesets/faults", json!({"empty_queue_url": 1})).await;
    assert_eq!(armed.status(), 201);
    let response = admin.create_session(id).await;
    assert_eq!(json(response).await["messageQueueUrl"], "");
    let listed = admin_json(&sim, "/scalesets/sessions").await;
    let stale = text(&listed[0], "sessionId");
    send(common::admin(
        &sim,
        Method::POST,
        &format!("/scalesets/sessions/{stale}/expire"),
    ))
    .await;
    let session = admin.session(id).await;

    // A 200 with an empty body.
    hook(&sim, "/scalesets/faults", json!({"empty_body": 1})).await;
    let response = session.poll(0, 5).await;
    assert_eq!(response.status(), 200);
    assert!(response.bytes().await.expect("body").is_empty());
    assert_eq!(session.poll(0, 5).await.status(), 202, "one only");

    // 5xx bursts and 429 with Retry-After, through the sim's request faults.
    let queue = "GET /tenant/{tenant}/_apis/runtime/runnerscalesets/{id}/messages";
    let fault = send(
        common::admin(&sim, Method::POST, "/faults")
            .json(&json!({"endpoint": queue, "status": 503, "count": 2})),
    )
    .await;
    assert_eq!(fault.status(), 201);
    assert_eq!(session.poll(0, 5).await.status(), 503);
    assert_eq!(session.poll(0, 5).await.status(), 503);
    send(
        common::admin(&sim, Method::POST, "/faults")
            .json(&json!({"endpoint": queue, "status": 429, "retry_after": 3, "count": 1})),
    )
    .await;
    let limited = session.poll(0, 5).await;
    assert_eq!(limited.status(), 429);
    assert_eq!(limited.headers()["retry-after"], "3");
    assert_eq!(session.poll(0, 5).await.status(), 202);
    let sets = "POST /tenant/{tenant}/_apis/runtime/runnerscalesets";
    send(
        common::admin(&sim, Method::POST, "/faults")
            .json(&json!({"endpoint": sets, "status": 500, "count": 1})),
    )
    .await;
    let response = admin.create_example_set().await;
    assert_eq!(response.status(), 500);
    let counts = admin_json(&sim, "/requests").await;
    assert!(
        counts[queue]["count"].as_u64().is_some_and(|c| c >= 5),
        "{counts}"
    );

    // Statistics read 0 while a job is assigned (the ARC bug), until cleared.
    hook(&sim, "/scalesets/faults", json!({"statistics_zero": true})).await;
    enqueue(&sim, &["faulty"], "true").await;
    let (m, stats, jobs) = session.message(0, 5).await;
    assert_eq!(types(&jobs), ["JobAssigned"]);
    assert_eq!(stats["totalAssignedJobs"], 0);
    let cleared = send(common::admin(&sim, Method::DELETE, "/scalesets/faults")).await;
    assert_eq!(cleared.status(), 204);
    let (_, stats, _) = session.message(0, 5).await;
    assert_eq!(stats["totalAssignedJobs"], 1);
    session.ack(m).await;
}

#[tokio::test]
async fn queue_token_expiry_and_refresh() {
    let sim = hosted_sim().await;
    hook(
        &sim,
        "/scalesets/config",
        json!({"queue_token_ttl_ms": 400}),
    )
    .await;
    let (admin, id, session) = listening(&sim, "tokens", &["tokens"]).await;
    assert_eq!(session.poll(0, 1).await.status(), 202);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_refused(session.poll(0, 1).await, 401, "InvalidTokenException").await;
    assert_eq!(
        session.acquire(&admin, id, &[1]).await.status(),
        404,
        "hosted"
    );
    let path = format!("_apis/runtime/runnerscalesets/{id}/sessions/{}", session.id);
    let refreshed = json(admin.call(Method::PATCH, &path).await).await;
    let renewed = Session {
        id: session.id.clone(),
        url: text(&refreshed, "messageQueueUrl"),
        token: text(&refreshed, "messageQueueAccessToken"),
        body: refreshed,
    };
    hook(
        &sim,
        "/scalesets/config",
        json!({"queue_token_ttl_ms": 3_600_000, "poll_wait_ms": 200}),
    )
    .await;
    assert_eq!(renewed.poll(0, 1).await.status(), 202);
    let expired = json(hook(&sim, "/scalesets/tokens/expire", json!({"queue": true})).await).await;
    assert!(expired["queue_tokens"].as_u64().is_some_and(|n| n >= 1));
    assert_eq!(expired["admin_tokens"], 0);
    assert_eq!(renewed.poll(0, 1).await.status(), 401);
    // The admin token still works.
    assert_eq!(admin.call(Method::PATCH, &path).await.status(), 200);
}

#[tokio::test]
async fn deleting_a_scale_set_is_refused_while_busy_and_returns_its_jobs() {
    let sim = hosted_sim().await;
    let (admin, id, session) = listening(&sim, "doomed-set", &["doomed-set"]).await;
    let (runner_id, credential) = admin.runner(id, "busy-1").await;
    let (_offline, _) = admin.runner(id, "never-connects").await;
    assert_eq!(poll(&sim, runner_id, &credential, 0).await.status(), 204);
    let first = enqueue(&sim, &["doomed-set"], "true").await;
    let second = enqueue(&sim, &["doomed-set"], "true").await;
    session.collect(5, 2, Duration::from_secs(5)).await;
    let picked = json(poll(&sim, runner_id, &credential, 5).await).await;
    let running = picked["job_id"].as_u64().expect("job_id");
    let waiting = if running == first { second } else { first };
    let path = format!("_apis/runtime/runnerscalesets/{id}");
    admin
        .refused(Method::DELETE, &path, 400, "JobStillRunningException")
        .await;
    assert_eq!(
        complete(&sim, &credential, running, 0, "").await.status(),
        204
    );
    assert_eq!(admin.call(Method::DELETE, &path).await.status(), 204);
    // The job no runner took is back in the queue; the set's runners are gone.
    let view = sim.job(waiting).expect("job");
    assert_eq!(view.status, github_sim::JobStatus::Queued);
    assert!(sim.runners().is_empty(), "{:?}", sim.runners());
    assert_eq!(dump(&sim).await["scale_sets"], json!([]));
    // A new set with the labels takes it.
    let again = admin.set_id("reborn", &["doomed-set"]).await;
    assert_eq!(ss_job(&sim, waiting).await["scale_set_id"], again);
    // Webhooks keep their shape: the queue is still the sim's.
    let jobs = admin_json(&sim, "/jobs").await;
    assert_eq!(jobs.as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn an_offer_nobody_acquires_is_offered_again_to_the_next_listener() {
    let sim = sim().await;
    hook(&sim, "/scalesets/config", json!({"assign_timeout_ms": 300})).await;
    let (admin, id, session) = listening(&sim, "reoffer", &["reoffer"]).await;
    let job = enqueue(&sim, &["reoffer"], "true").await;
    let (m, _, jobs) = session.message(0, 3).await;
    assert_eq!(types(&jobs), ["JobAvailable"]);
    // The listener acks, then dies before acquirejobs; its session goes.
    session.ack(m).await;
    assert!(sim.expire_scaleset_session(&session.id));
    let next = admin.session(id).await;
    let again = next.collect(3, 1, Duration::from_secs(10)).await;
    assert_eq!(types(&again), ["JobAvailable"]);
    assert_eq!(again[0]["jobId"], jobs[0]["jobId"]);
    assert_eq!(again[0]["runnerRequestId"], jobs[0]["runnerRequestId"]);
    let rid = again[0]["runnerRequestId"].as_i64().expect("id");
    let won = json(next.acquire(&admin, id, &[rid]).await).await;
    assert_eq!(won["value"], json!([rid]));
    assert_eq!(ss_job(&sim, job).await["state"], "assigned");
    assert_eq!(
        sim.scalesets()["scale_sets"][0]["statistics"]["totalAssignedJobs"],
        1
    );
}

/// A runner task as the example scaler starts one per `JobAssigned`: a JIT config, polls until
/// it gets a job, completes it. Returns the job id it ran.
async fn one_shot_runner(
    base: String,
    token: String,
    sim_base: String,
    set_id: u64,
    name: String,
) -> u64 {
    let admin = Admin { base, token };
    let (id, credential) = admin.runner(set_id, &name).await;
    loop {
        let response = send(
            client()
                .get(format!("{sim_base}/_runner/poll?agent_id={id}&wait=5"))
                .header("authorization", format!("Bearer {credential}")),
        )
        .await;
        if response.status() == 204 {
            continue;
        }
        assert_eq!(response.status(), 200);
        let job = json(response).await;
        let job_id = job["job_id"].as_u64().expect("job_id");
        let done = send(
            client()
                .post(format!("{sim_base}/_runner/jobs/{job_id}/complete"))
                .header("authorization", format!("Bearer {credential}"))
                .json(&json!({"exit_code": 0, "output": "ok", "conclusion": "success"})),
        )
        .await;
        assert_eq!(done.status(), 204);
        return job_id;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_200_jobs_runs_each_exactly_once_under_capacity_20() {
    const JOBS: usize = 200;
    const CAPACITY: i64 = 20;
    let sim = hosted_sim().await;
    let (admin, id, session) = listening(&sim, "burst", &["burst"]).await;
    let mut job_ids = Vec::new();
    for _ in 0..JOBS {
        job_ids.push(enqueue(&sim, &["burst"], "true").await);
    }
    let started = Instant::now();
    let mut runners = tokio::task::JoinSet::new();
    let (mut assigned, mut started_n, mut completed) = (0usize, 0usize, 0usize);
    let mut max_assigned = 0i64;
    let mut last = 0;
    while completed < JOBS {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "stuck at {completed}"
        );
        let response = session.poll(last, CAPACITY).await;
        if response.status() == 202 {
            continue;
        }
        let envelope = json(response).await;
        last = envelope["messageId"].as_i64().expect("id");
        session.ack(last).await;
        max_assigned = max_assigned.max(
            envelope["statistics"]["totalAssignedJobs"]
                .as_i64()
                .expect("stat"),
        );
        let jobs: Vec<Value> =
            serde_json::from_str(envelope["body"].as_str().expect("body")).expect("array");
        for message in jobs {
            match message["messageType"].as_str() {
                Some("JobAssigned") => {
                    assigned += 1;
                    runners.spawn(one_shot_runner(
                        admin.base.clone(),
                        admin.token.clone(),
                        sim.base_url(),
                        id,
                        format!("burst-{assigned}"),
                    ));
                }
                Some("JobStarted") => started_n += 1,
                Some("JobCompleted") => {
                    assert_eq!(message["result"], "succeeded");
                    completed += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    let elapsed = started.elapsed();
    let mut ran = Vec::new();
    while let Some(job) = runners.join_next().await {
        ran.push(job.expect("runner task"));
    }
    ran.sort_unstable();
    job_ids.sort_unstable();
    assert_eq!(ran, job_ids, "every job ran once, by one runner");
    assert_eq!((assigned, started_n, completed), (JOBS, JOBS, JOBS));
    assert!(max_assigned <= CAPACITY, "capacity gate: {max_assigned}");
    let dump = sim.scalesets();
    let set = &dump["scale_sets"][0];
    assert!(set["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .all(|j| j["runs"] == 1 && j["result"] == "succeeded"));
    assert_eq!(set["statistics"]["totalAssignedJobs"], 0);
    assert_eq!(set["statistics"]["totalRegisteredRunners"], 0);
    eprintln!("{JOBS} jobs through one scale set at capacity {CAPACITY}: {elapsed:?}");
}
