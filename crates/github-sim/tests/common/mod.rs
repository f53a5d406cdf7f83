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

/// The status of `GET <path>` with the sim's PAT.
pub async fn get_status(sim: &SimHandle, path: &str) -> reqwest::StatusCode {
    api(sim, Method::GET, path)
        .send()
        .await
        .expect("send")
        .status()
}

/// The JSON body of `GET <path>` with the sim's PAT.
pub async fn get_json(sim: &SimHandle, path: &str) -> Value {
    json(api(sim, Method::GET, path).send().await.expect("send")).await
}

pub async fn json(response: Response) -> Value {
    response.json().await.expect("json body")
}

pub async fn registration_token(sim: &SimHandle, scope: &Scope) -> String {
    let path = format!("{}/registration-token", scope.runners_path());
    let response = api(sim, Method::POST, &path).send().await.expect("request");
    assert_eq!(response.status(), 201);
    json(response).await["token"]
        .as_str()
        .expect("token")
        .to_owned()
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

pub fn repo() -> Scope {
    Scope::repo("octo", "app")
}

pub fn org() -> Scope {
    Scope::org("octo-org")
}

pub fn enterprise() -> Scope {
    Scope::enterprise("acme")
}
