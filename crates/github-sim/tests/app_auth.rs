//! GitHub App authentication: JWT verification, installations, expiring `ghs_` tokens.

mod common;

use std::time::Duration;

use common::*;
use github_sim::{SimConfig, TEST_APP_PRIVATE_KEY_PEM};
use reqwest::Method;
use serde_json::{json, Value};

/// The organisation's runners, which an installation token of `octo-org` may list.
const ORG_RUNNERS: &str = "/orgs/octo-org/actions/runners";

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn jwt(claims: &Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(TEST_APP_PRIVATE_KEY_PEM.as_bytes())
        .expect("test key");
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        claims,
        &key,
    )
    .expect("sign")
}

fn good_jwt() -> String {
    jwt(&json!({"iat": now() - 60, "exp": now() + 540, "iss": "Iv1.simclientid00001"}))
}

/// Sends `<method> <path>` with `Authorization: Bearer <token>`.
async fn with_bearer(
    sim: &github_sim::SimHandle,
    method: Method,
    path: &str,
    token: &str,
) -> reqwest::Response {
    send(
        client()
            .request(method, format!("{}{}", sim.api_url(), path))
            .header("authorization", format!("Bearer {token}")),
    )
    .await
}

/// The status of `GET <path>` with `Authorization: Bearer <token>`.
async fn bearer_status(sim: &github_sim::SimHandle, path: &str, token: &str) -> u16 {
    with_bearer(sim, Method::GET, path, token)
        .await
        .status()
        .as_u16()
}

/// A fresh token of installation 42, exchanged with a good JWT.
async fn installation_token(sim: &github_sim::SimHandle) -> String {
    let path = "/app/installations/42/access_tokens";
    let response = with_bearer(sim, Method::POST, path, &good_jwt()).await;
    text(&json(response).await, "token")
}

#[tokio::test]
async fn installation_lookup_and_token_exchange() {
    let sim = start(SimConfig::default()).await;
    let jwt = good_jwt();
    let response = with_bearer(&sim, Method::GET, "/orgs/octo-org/installation", &jwt).await;
    assert_eq!(response.status(), 200);
    let installation = json(response).await;
    assert_eq!(installation["id"], 42);
    assert_eq!(installation["account"]["login"], "octo-org");
    let tokens_url = installation["access_tokens_url"]
        .as_str()
        .expect("url")
        .to_owned();
    assert_eq!(
        tokens_url,
        format!("{}/app/installations/42/access_tokens", sim.api_url())
    );
    let repo_installation =
        json(with_bearer(&sim, Method::GET, "/repos/octo/app/installation", &jwt).await).await;
    assert_eq!(repo_installation["id"], 43);
    assert_eq!(
        bearer_status(&sim, "/repos/octo/missing/installation", &jwt).await,
        404
    );
    let listed = json(with_bearer(&sim, Method::GET, "/app/installations", &jwt).await).await;
    assert_eq!(listed.as_array().map(Vec::len), Some(2));

    let response = send(
        client()
            .post(&tokens_url)
            .header("authorization", format!("Bearer {jwt}")),
    )
    .await;
    assert_eq!(response.status(), 201);
    let body = json(response).await;
    let token = text(&body, "token");
    assert!(token.starts_with("ghs_"));
    assert!(body["expires_at"].as_str().expect("expires").ends_with('Z'));
    assert_eq!(body["repository_selection"], "all");
    assert_eq!(
        with_bearer(
            &sim,
            Method::POST,
            "/app/installations/999/access_tokens",
            &jwt
        )
        .await
        .status(),
        404
    );

    // The installation token manages its own org's runners, not others', and never the enterprise's.
    let org_runners = with_bearer(
        &sim,
        Method::POST,
        "/orgs/octo-org/actions/runners/registration-token",
        &token,
    )
    .await;
    assert_eq!(org_runners.status(), 201);
    assert_eq!(
        bearer_status(&sim, "/repos/octo/app/actions/runners", &token).await,
        404
    );
    let enterprise = with_bearer(
        &sim,
        Method::GET,
        "/enterprises/acme/actions/runners",
        &token,
    )
    .await;
    assert_error(enterprise, 403, "Resource not accessible by integration").await;
    // Installation tokens have their own budget (4 requests so far: errors after authentication count).
    let response = with_bearer(&sim, Method::GET, ORG_RUNNERS, &token).await;
    assert_eq!(response.headers()["x-ratelimit-used"], "4");
    // The JWT itself is only for App endpoints; a PAT is not accepted there.
    assert_eq!(bearer_status(&sim, ORG_RUNNERS, &jwt).await, 403);
    let pat = with_bearer(
        &sim,
        Method::GET,
        "/orgs/octo-org/installation",
        sim.token().expose(),
    )
    .await;
    assert_error(pat, 401, "A JSON web token could not be decoded").await;
}

#[tokio::test]
async fn jwt_claims_and_signature_are_verified() {
    let sim = start(SimConfig::default()).await;
    let cases = [
        (
            json!({"iat": now() - 60, "exp": now() + 540, "iss": 12345}),
            200,
        ),
        (
            json!({"iat": now() - 60, "exp": now() + 540, "iss": "12345"}),
            200,
        ),
        (
            json!({"iat": now() - 60, "exp": now() + 540, "iss": 999}),
            401,
        ),
        (json!({"iat": now() - 60, "exp": now() + 540}), 401),
        (
            json!({"iat": now() - 700, "exp": now() - 10, "iss": 12345}),
            401,
        ),
        (
            json!({"iat": now() - 60, "exp": now() + 3600, "iss": 12345}),
            401,
        ),
        (
            json!({"iat": now() + 600, "exp": now() + 660, "iss": 12345}),
            401,
        ),
        (json!({"exp": now() + 540, "iss": 12345}), 401),
    ];
    for (claims, status) in cases {
        let response = with_bearer(&sim, Method::GET, "/app", &jwt(&claims)).await;
        assert_eq!(response.status(), status, "claims {claims}");
    }
    let mut tampered = good_jwt();
    let last = tampered.pop().expect("non-empty");
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let response = with_bearer(&sim, Method::GET, "/app", &tampered).await;
    assert_error(response, 401, "A JSON web token could not be decoded").await;
    // A JWT must use the Bearer scheme.
    let response = send(
        client()
            .get(format!("{}/app", sim.api_url()))
            .header("authorization", format!("token {}", good_jwt())),
    )
    .await;
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn installation_tokens_expire() {
    let sim =
        start(SimConfig::default().with_installation_token_lifetime(Duration::from_millis(600)))
            .await;
    let token = installation_token(&sim).await;
    assert_eq!(bearer_status(&sim, ORG_RUNNERS, &token).await, 200);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let expired = with_bearer(&sim, Method::GET, ORG_RUNNERS, &token).await;
    assert_error(expired, 401, "Bad credentials").await;
    // A refresh gives a working token again.
    let fresh = installation_token(&sim).await;
    assert_ne!(fresh, token);
    assert_eq!(bearer_status(&sim, ORG_RUNNERS, &fresh).await, 200);
}
