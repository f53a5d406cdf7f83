//! GitHub App auth: JWT claims, installation discovery, token caching, refresh and revocation.

mod common;

use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use github::{Auth, Client, EndpointKind, Error, RunnerId, Secret};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::json;

const P: &str = "/repos/octo-org/app/actions/runners";
const APP_ID: u64 = 12345;

/// A throwaway RSA key pair made with `openssl` once per test binary: (private PEM, public PEM).
fn keys() -> &'static (String, String) {
    static KEYS: OnceLock<(String, String)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let private = Command::new("openssl")
            .args(["genrsa", "2048"])
            .output()
            .expect("run openssl genrsa");
        assert!(private.status.success(), "openssl genrsa failed");
        let dir = tempfile::tempdir().expect("tempdir");
        let key_path = dir.path().join("key.pem");
        std::fs::write(&key_path, &private.stdout).expect("write key");
        let public = Command::new("openssl")
            .args(["rsa", "-pubout", "-in"])
            .arg(&key_path)
            .output()
            .expect("run openssl rsa");
        assert!(public.status.success(), "openssl rsa -pubout failed");
        (
            String::from_utf8(private.stdout).expect("pem"),
            String::from_utf8(public.stdout).expect("pem"),
        )
    })
}

#[derive(serde::Deserialize)]
struct Claims {
    iat: i64,
    exp: i64,
    iss: String,
}

fn assert_app_jwt(authorization: Option<&str>) {
    let jwt = authorization
        .and_then(|a| a.strip_prefix("Bearer "))
        .expect("bearer jwt");
    let key = DecodingKey::from_rsa_pem(keys().1.as_bytes()).expect("public key");
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_required_spec_claims(&["exp", "iat", "iss"]);
    let claims = jsonwebtoken::decode::<Claims>(jwt, &key, &validation)
        .expect("valid RS256 jwt")
        .claims;
    let now = now_epoch();
    assert_eq!(claims.iss, APP_ID.to_string());
    assert!(
        (now - 62..=now - 58).contains(&claims.iat),
        "iat 60 s in the past"
    );
    assert!(
        claims.exp - now < 600 && claims.exp - now > 500,
        "exp under 10 minutes ahead"
    );
}

fn app_client(server: &Server, installation_id: Option<u64>) -> Client {
    let auth = Auth::App {
        app_id: APP_ID,
        installation_id,
        private_key_pem: Secret::from(keys().0.as_str()),
    };
    Client::new(config(&server.url, "octo-org/app", auth)).expect("client")
}

fn access_token(token: &str, lifetime: Duration) -> Expect {
    let expires = time::OffsetDateTime::now_utc() + lifetime;
    let expires = expires
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format");
    expect("POST", "/app/installations/42/access_tokens")
        .status(201)
        .json(json!({
        "token": token, "expires_at": expires,
        "permissions": {"administration": "write"}, "repository_selection": "selected"}))
}

#[tokio::test(start_paused = true)]
async fn installation_token_is_found_cached_and_refreshed_early() {
    let server = Server::start(vec![
        expect("GET", "/repos/octo-org/app/installation")
            .json(json!({"id": 42, "app_id": APP_ID, "account": {"login": "octo-org"}})),
        access_token("ghs_one", Duration::from_secs(3600)),
        expect("GET", &format!("{P}/1")).json(runner_json(1, "a")),
        expect("GET", &format!("{P}/2")).json(runner_json(2, "b")),
        // 56 minutes later the token is inside the 5-minute margin: a new one, same installation.
        access_token("ghs_two", Duration::from_secs(3600)),
        expect("GET", &format!("{P}/3")).json(runner_json(3, "c")),
    ])
    .await;
    let client = app_client(&server, None);
    client.get_runner(RunnerId(1)).await.expect("first");
    client.get_runner(RunnerId(2)).await.expect("cached token");
    tokio::time::advance(Duration::from_secs(56 * 60)).await;
    client
        .get_runner(RunnerId(3))
        .await
        .expect("refreshed token");
    let seen = server.finish();
    assert_app_jwt(seen[0].header("authorization"));
    assert_app_jwt(seen[1].header("authorization"));
    assert_eq!(seen[2].header("authorization"), Some("Bearer ghs_one"));
    assert_eq!(seen[3].header("authorization"), Some("Bearer ghs_one"));
    assert_app_jwt(seen[4].header("authorization"));
    assert_eq!(seen[5].header("authorization"), Some("Bearer ghs_two"));
    for s in &seen {
        assert_eq!(s.header("x-github-api-version"), Some("2022-11-28"));
        assert_eq!(s.header("accept"), Some("application/vnd.github+json"));
    }
    let stats = client.stats();
    assert_eq!(stats.get(EndpointKind::AppInstallation).requests, 1);
    assert_eq!(stats.get(EndpointKind::AppAccessToken).requests, 2);
}

#[tokio::test]
async fn org_installation_lookup_and_revoked_token_is_replaced_once() {
    let server = Server::start(vec![
        expect("GET", "/orgs/octo-org/installation").json(json!({"id": 42})),
        access_token("ghs_revoked", Duration::from_secs(3600)),
        expect("GET", "/orgs/octo-org/actions/runners/1").error(401, "Bad credentials"),
        access_token("ghs_new", Duration::from_secs(3600)),
        expect("GET", "/orgs/octo-org/actions/runners/1").json(runner_json(1, "a")),
        // A second 401 on one call is reported, not looped on.
        expect("GET", "/orgs/octo-org/actions/runners/2").error(401, "Bad credentials"),
        access_token("ghs_newer", Duration::from_secs(3600)),
        expect("GET", "/orgs/octo-org/actions/runners/2").error(401, "Bad credentials"),
    ])
    .await;
    let auth = Auth::App {
        app_id: APP_ID,
        installation_id: None,
        private_key_pem: Secret::from(keys().0.as_str()),
    };
    let client = Client::new(config(&server.url, "octo-org", auth)).expect("client");
    client.get_runner(RunnerId(1)).await.expect("after refresh");
    assert!(matches!(
        client.get_runner(RunnerId(2)).await,
        Err(Error::Unauthorized { .. })
    ));
    let seen = server.finish();
    assert_eq!(seen[4].header("authorization"), Some("Bearer ghs_new"));
}

#[tokio::test]
async fn given_installation_id_skips_the_lookup_and_short_tokens_are_not_reused() {
    let server = Server::start(vec![
        // Expires within the refresh margin: used once, then replaced.
        access_token("ghs_short", Duration::from_secs(120)),
        expect("GET", &format!("{P}/1")).json(runner_json(1, "a")),
        access_token("ghs_next", Duration::from_secs(3600)),
        expect("GET", &format!("{P}/1")).json(runner_json(1, "a")),
    ])
    .await;
    let client = app_client(&server, Some(42));
    client.get_runner(RunnerId(1)).await.expect("first");
    client.get_runner(RunnerId(1)).await.expect("second");
    let seen = server.finish();
    assert_eq!(seen[3].header("authorization"), Some("Bearer ghs_next"));
}

#[tokio::test]
async fn access_token_failures_surface_as_typed_errors() {
    let server = Server::start(vec![
        expect("GET", "/repos/octo-org/app/installation").error(404, "Not Found")
    ])
    .await;
    let err = app_client(&server, None)
        .get_runner(RunnerId(1))
        .await
        .expect_err("no installation");
    assert!(err.is_not_found(), "{err:?}");
    server.finish();
}

#[test]
fn app_key_must_be_rsa_pem() {
    let auth = Auth::App {
        app_id: 1,
        installation_id: None,
        private_key_pem: Secret::from("-----BEGIN NONSENSE-----"),
    };
    let cfg = config(
        &url::Url::parse("http://127.0.0.1:1").expect("url"),
        "o/r",
        auth,
    );
    let err = Client::new(cfg).expect_err("bad key");
    assert!(matches!(err, Error::Config { .. }), "{err:?}");
    assert!(
        !format!("{err:?}").contains("NONSENSE"),
        "key material not echoed"
    );
}
