//! Shared helpers for the simulator's HTTP tests.
#![allow(dead_code)]

use std::time::Duration;

use github_sim::{Scope, Sim, SimConfig, SimHandle};
use reqwest::{Client, Method, RequestBuilder, Response};
use serde_json::{json, Value};

pub const UA: &str = "github-sim-tests";

pub async fn start(config: SimConfig) -> SimHandle {
    Sim::start(config).await.expect("sim starts")
}

thread_local! {
    // Building a client is costly (TLS setup); each test runs on its own thread and runtime.
    static CLIENT: Client = Client::builder()
        .user_agent(UA)
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client builds");
}

pub fn client() -> Client {
    CLIENT.with(Client::clone)
}

/// A REST request with the sim's PAT.
pub fn api(sim: &SimHandle, method: Method, path: &str) -> RequestBuilder {
    client()
        .request(method, format!("{}{}", sim.api_url(), path))
        .header("authorization", format!("Bearer {}", sim.token().expose()))
        .header("accept", "application/vnd.github+json")
        .header("x-github-api-version", "2022-11-28")
}

/// Sends a request; panics if it cannot be sent (any answer, error statuses too, is returned).
pub async fn send(request: RequestBuilder) -> Response {
    request.send().await.expect("send")
}

/// Sends `<method> <path>` with the sim's PAT.
pub async fn api_send(sim: &SimHandle, method: Method, path: &str) -> Response {
    send(api(sim, method, path)).await
}

/// The status of `<method> <path>` with the sim's PAT.
pub async fn api_status(sim: &SimHandle, method: Method, path: &str) -> reqwest::StatusCode {
    api_send(sim, method, path).await.status()
}

/// The status of `GET <path>` with the sim's PAT.
pub async fn get_status(sim: &SimHandle, path: &str) -> reqwest::StatusCode {
    api_status(sim, Method::GET, path).await
}

/// A request to the admin API, `<method> /_sim<path>` (no authentication).
pub fn admin(sim: &SimHandle, method: Method, path: &str) -> RequestBuilder {
    client().request(method, format!("{}/_sim{path}", sim.base_url()))
}

/// The JSON body of the admin API's `GET /_sim<path>`.
pub async fn admin_json(sim: &SimHandle, path: &str) -> Value {
    json(send(admin(sim, Method::GET, path)).await).await
}

/// The string `body[key]`, owned; panics if it is not a string.
pub fn text(body: &Value, key: &str) -> String {
    body[key].as_str().expect(key).to_owned()
}

/// The JSON body of `GET <path>` with the sim's PAT.
pub async fn get_json(sim: &SimHandle, path: &str) -> Value {
    json(api(sim, Method::GET, path).send().await.expect("send")).await
}

pub async fn json(response: Response) -> Value {
    response.json().await.expect("json body")
}

/// The token of `POST <scope's runners path>/<kind>` (`registration-token` or `remove-token`),
/// which must answer 201.
pub async fn scope_token(sim: &SimHandle, scope: &Scope, kind: &str) -> String {
    let path = format!("{}/{kind}", scope.runners_path());
    let response = api_send(sim, Method::POST, &path).await;
    assert_eq!(response.status(), 201, "{kind}");
    text(&json(response).await, "token")
}

/// A registration token of `scope`.
pub async fn registration_token(sim: &SimHandle, scope: &Scope) -> String {
    scope_token(sim, scope, "registration-token").await
}

/// A runner registered through the runner protocol: `(agent_id, credential)`.
pub async fn register(
    sim: &SimHandle,
    scope: &Scope,
    name: &str,
    labels: &[&str],
    ephemeral: bool,
) -> (u64, String) {
    let token = registration_token(sim, scope).await;
    register_with(sim, &token, scope, name, labels, ephemeral).await
}

pub async fn register_with(
    sim: &SimHandle,
    token: &str,
    scope: &Scope,
    name: &str,
    labels: &[&str],
    ephemeral: bool,
) -> (u64, String) {
    let response = register_raw(
        sim,
        token,
        json!({
            "url": sim.scope_url(scope),
            "name": name,
            "labels": labels,
            "ephemeral": ephemeral,
            "replace": false,
            "no_default_labels": false,
            "work": "_work",
        }),
    )
    .await;
    assert_eq!(response.status(), 201, "register {name}");
    let body = json(response).await;
    (
        body["agent_id"].as_u64().expect("agent_id"),
        body["credential"].as_str().expect("credential").to_owned(),
    )
}

pub async fn register_raw(sim: &SimHandle, token: &str, body: Value) -> Response {
    client()
        .post(format!("{}/_runner/register", sim.base_url()))
        .header("authorization", format!("RemoteAuth {token}"))
        .json(&body)
        .send()
        .await
        .expect("register request")
}

pub async fn poll(sim: &SimHandle, agent_id: u64, credential: &str, wait: u64) -> Response {
    client()
        .get(format!(
            "{}/_runner/poll?agent_id={agent_id}&wait={wait}",
            sim.base_url()
        ))
        .header("authorization", format!("Bearer {credential}"))
        .send()
        .await
        .expect("poll request")
}

pub async fn complete(
    sim: &SimHandle,
    credential: &str,
    job_id: u64,
    exit_code: i32,
    output: &str,
) -> Response {
    client()
        .post(format!("{}/_runner/jobs/{job_id}/complete", sim.base_url()))
        .header("authorization", format!("Bearer {credential}"))
        .json(&json!({
            "exit_code": exit_code,
            "output": output,
            "conclusion": if exit_code == 0 { "success" } else { "failure" },
        }))
        .send()
        .await
        .expect("complete request")
}

/// The `linux`/`x64` asset of a runner downloads list.
pub fn linux_x64(list: &Value) -> Value {
    list.as_array()
        .expect("array")
        .iter()
        .find(|a| a["os"] == "linux" && a["architecture"] == "x64")
        .expect("linux x64")
        .clone()
}

/// The body of `GET <url>` (no authentication).
pub async fn download(url: &str) -> bytes::Bytes {
    send(client().get(url)).await.bytes().await.expect("bytes")
}

/// Asserts a GitHub error body.
pub async fn assert_error(response: Response, status: u16, message: &str) {
    assert_eq!(response.status(), status);
    let body = json(response).await;
    assert_eq!(body["message"], message, "body: {body}");
    assert_eq!(body["status"], status.to_string());
    assert!(body["documentation_url"]
        .as_str()
        .is_some_and(|u| u.starts_with("https://docs.github.com")));
}

/// The REST path of runner `id` of `scope`.
pub fn runner_path(scope: &Scope, id: u64) -> String {
    format!("{}/{id}", scope.runners_path())
}

pub fn repo() -> Scope {
    Scope::repo("octo", "app")
}

pub fn org() -> Scope {
    Scope::org("octo-org")
}

pub fn enterprise() -> Scope {
    Scope::enterprise("acme")
}
