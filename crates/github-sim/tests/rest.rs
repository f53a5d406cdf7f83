//! REST endpoints: status codes, shapes and error bodies at every scope.

mod common;

use base64::Engine;
use common::*;
use github_sim::{Scope, SimConfig, SimHandle};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// `config.sh --runnergroup group` for runner `name` of the organisation: the status and body.
async fn join_group(sim: &SimHandle, token: &str, name: &str, group: &str) -> (u16, Value) {
    let url = sim.scope_url(&org());
    let body = json!({"url": url, "name": name, "runner_group": group});
    let response = register_raw(sim, token, body).await;
    (response.status().as_u16(), json(response).await)
}

#[tokio::test]
async fn every_scope_issues_tokens_and_lists_runners_at_both_prefixes() {
    let sim = start(SimConfig::default()).await;
    for scope in [repo(), org(), enterprise()] {
        for suffix in ["registration-token", "remove-token"] {
            let response = api_send(
                &sim,
                Method::POST,
                &format!("{}/{suffix}", scope.runners_path()),
            )
            .await;
            assert_eq!(response.status(), 201, "{scope} {suffix}");
            let body = json(response).await;
            assert_eq!(body["token"].as_str().map(str::len), Some(29));
            let expires = body["expires_at"].as_str().expect("expires_at");
            let expires = time::OffsetDateTime::parse(
                expires,
                &time::format_description::well_known::Rfc3339,
            )
            .expect("rfc3339");
            let lifetime = expires - time::OffsetDateTime::now_utc();
            assert!(
                lifetime > time::Duration::minutes(59) && lifetime <= time::Duration::minutes(60),
                "{lifetime}"
            );
        }
        register(
            &sim,
            &scope,
            &format!("r-{}", scope.path().replace('/', "-")),
            &[],
            false,
        )
        .await;
        // Root prefix (github.com style) and /api/v3 (GHES style) serve the same data.
        let root = send(
            client()
                .get(format!("{}{}", sim.base_url(), scope.runners_path()))
                .header("authorization", format!("token {}", sim.token().expose())),
        )
        .await;
        assert_eq!(root.status(), 200);
        let root = json(root).await;
        let v3 = get_json(&sim, &scope.runners_path()).await;
        assert_eq!(root["total_count"], 1);
        assert_eq!(root["runners"][0]["name"], v3["runners"][0]["name"]);
        let runner = &v3["runners"][0];
        assert_eq!(runner["status"], "offline");
        assert_eq!(runner["busy"], false);
        assert_eq!(runner["os"], "linux");
        assert_eq!(runner["runner_group_id"], 1);
        assert!(
            runner["version"].is_null(),
            "version is null until the runner connects"
        );
        let labels: Vec<&str> = runner["labels"]
            .as_array()
            .expect("labels")
            .iter()
            .map(|l| l["name"].as_str().expect("name"))
            .collect();
        assert_eq!(labels, ["self-hosted", "Linux", "X64"]);
        assert_eq!(runner["labels"][0]["type"], "read-only");
    }
}

#[tokio::test]
async fn authentication_errors() {
    let sim = start(SimConfig::default()).await;
    let path = repo().runners_path();
    let bad = send(
        client()
            .get(format!("{}{}", sim.api_url(), path))
            .header("authorization", "Bearer ghp_wrong"),
    )
    .await;
    assert!(bad.headers().contains_key("x-ratelimit-limit"));
    assert_error(bad, 401, "Bad credentials").await;
    let none = send(client().get(format!("{}{}", sim.api_url(), path))).await;
    assert_error(none, 401, "Requires authentication").await;
    let no_ua = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let response = no_ua
        .get(format!("{}{}", sim.api_url(), path))
        .header("authorization", format!("Bearer {}", sim.token().expose()))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 403);
    assert!(text(&json(response).await, "message").contains("User-Agent"));
    let version = send(
        client()
            .get(format!("{}{}", sim.api_url(), path))
            .header("authorization", format!("Bearer {}", sim.token().expose()))
            .header("x-github-api-version", "2001-01-01"),
    )
    .await;
    assert_eq!(version.status(), 400);
}

#[tokio::test]
async fn token_rotation_through_the_admin_api() {
    let sim = start(SimConfig::default()).await;
    let old = sim.token();
    let response =
        send(admin(&sim, Method::POST, "/tokens/rotate").json(&json!({"token": "ghp_rotated"})))
            .await;
    assert_eq!(response.status(), 200);
    assert_eq!(sim.token().expose(), "ghp_rotated");
    let stale = send(
        client()
            .get(format!("{}{}", sim.api_url(), repo().runners_path()))
            .header("authorization", format!("Bearer {}", old.expose())),
    )
    .await;
    assert_eq!(stale.status(), 401);
    assert_eq!(get_status(&sim, &repo().runners_path()).await, 200);
}

#[tokio::test]
async fn unknown_scopes_and_runners_are_404() {
    let sim = start(SimConfig::default()).await;
    for path in [
        "/repos/octo/missing/actions/runners",
        "/orgs/nobody/actions/runners",
        "/enterprises/nobody/actions/runners",
        "/repos/octo/app/actions/runners/999",
        "/repos/octo/app/actions/runners/abc",
        "/orgs/octo-org/actions/runners/999/labels",
        "/no/such/endpoint",
    ] {
        let response = api_send(&sim, Method::GET, path).await;
        assert_error(response, 404, "Not Found").await;
    }
    assert_error(
        api_send(&sim, Method::DELETE, "/repos/octo/app/actions/runners/999").await,
        404,
        "Not Found",
    )
    .await;
    // A known path with another method is 404 too (GitHub has no 405 here), at both prefixes.
    let path = format!("{}/registration-token", repo().runners_path());
    let response = api_send(&sim, Method::GET, &path).await;
    assert!(response.headers().contains_key("x-ratelimit-limit"));
    assert_error(response, 404, "Not Found").await;
    let root = send(client().get(format!("{}{path}", sim.base_url()))).await;
    assert_eq!(root.status(), 404);
    // A runner of one scope is not visible from another.
    let (id, _) = register(&sim, &org(), "org-runner", &[], false).await;
    assert_eq!(
        api_status(&sim, Method::GET, &runner_path(&repo(), id),).await,
        404
    );
    // The enterprise is addressable by id too.
    assert_eq!(
        get_status(&sim, "/enterprises/7/actions/runners").await,
        200
    );
}

#[tokio::test]
async fn get_and_delete_runner() {
    let sim = start(SimConfig::default()).await;
    let (id, _) = register(&sim, &repo(), "gone-soon", &["jammy"], false).await;
    let path = runner_path(&repo(), id);
    let response = api_send(&sim, Method::GET, &path).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["x-accepted-github-permissions"],
        "administration=write"
    );
    let body = json(response).await;
    assert_eq!(body["id"], id);
    assert_eq!(body["labels"][3]["name"], "jammy");
    assert_eq!(body["labels"][3]["type"], "custom");
    let response = api_send(&sim, Method::DELETE, &path).await;
    assert_eq!(response.status(), 204);
    assert_eq!(response.bytes().await.expect("body").len(), 0);
    assert_eq!(get_status(&sim, &path).await, 404);
    assert!(sim.runners().is_empty());
}

#[tokio::test]
async fn downloads_point_at_the_served_tarball() {
    let tarball = b"not really a tarball, but bytes with a checksum".to_vec();
    let sim = start(SimConfig::default().with_runner_tarball(tarball.clone(), "2.330.0")).await;
    let response = api_send(
        &sim,
        Method::GET,
        &format!("{}/downloads", org().runners_path()),
    )
    .await;
    assert_eq!(response.status(), 200);
    let list = json(response).await;
    let linux = list
        .as_array()
        .expect("array")
        .iter()
        .find(|a| a["os"] == "linux" && a["architecture"] == "x64")
        .expect("linux x64")
        .clone();
    assert_eq!(linux["filename"], "actions-runner-linux-x64-2.330.0.tar.gz");
    assert!(linux["temp_download_token"]
        .as_str()
        .is_some_and(|t| !t.is_empty()));
    let url = linux["download_url"].as_str().expect("url");
    assert!(url.starts_with(&sim.base_url()), "{url}");
    let bytes = send(client().get(url)).await.bytes().await.expect("bytes");
    assert_eq!(bytes.as_ref(), tarball.as_slice());
    assert_eq!(
        linux["sha256_checksum"],
        hex::encode(Sha256::digest(&bytes))
    );
    let missing = send(client().get(url.replace("2.330.0", "9.9.9"))).await;
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn generate_jitconfig_errors_and_config_contents() {
    let sim = start(SimConfig::default()).await;
    let path = format!("{}/generate-jitconfig", org().runners_path());
    let post = |body: Value| api(&sim, Method::POST, &path).json(&body).send();
    let missing_group = post(json!({"name": "jit-1", "labels": ["self-hosted", "jammy"]}))
        .await
        .expect("send");
    assert_error(
        missing_group,
        422,
        "Invalid input: object is missing required key: runner_group_id.",
    )
    .await;
    let no_labels = post(json!({"name": "jit-1", "runner_group_id": 1, "labels": []}))
        .await
        .expect("send");
    assert_eq!(no_labels.status(), 422);
    let unknown_group = post(json!({"name": "jit-1", "runner_group_id": 99, "labels": ["x"]}))
        .await
        .expect("send");
    assert_eq!(unknown_group.status(), 404);
    let bad_json = send(api(&sim, Method::POST, &path).body("{nope")).await;
    assert_error(bad_json, 400, "Problems parsing JSON").await;

    let created =
        post(json!({"name": "jit-1", "runner_group_id": 1, "labels": ["self-hosted", "jammy"]}))
            .await
            .expect("send");
    assert_eq!(created.status(), 201);
    let body = json(created).await;
    assert_eq!(body["runner"]["name"], "jit-1");
    assert_eq!(body["runner"]["status"], "offline");
    assert_eq!(body["runner"]["ephemeral"], true);
    let id = body["runner"]["id"].as_u64().expect("id");
    let b64 = base64::engine::general_purpose::STANDARD;
    let outer: Value = serde_json::from_slice(
        &b64.decode(body["encoded_jit_config"].as_str().expect("config"))
            .expect("b64"),
    )
    .expect("json");
    let file = |name: &str| -> Value {
        serde_json::from_slice(
            &b64.decode(outer[name].as_str().expect("file"))
                .expect("b64"),
        )
        .expect("json")
    };
    let runner = file(".runner");
    assert_eq!(runner["agentId"], id);
    assert_eq!(runner["agentName"], "jit-1");
    assert_eq!(runner["poolId"], 1);
    assert_eq!(runner["workFolder"], "_work");
    assert_eq!(runner["ephemeral"], true);
    assert_eq!(runner["serverUrl"], sim.base_url());
    assert_eq!(runner["gitHubUrl"], format!("{}/octo-org", sim.base_url()));
    let credentials = file(".credentials");
    assert_eq!(credentials["scheme"], "OAuth");
    let credential = credentials["data"]["clientId"]
        .as_str()
        .expect("clientId")
        .to_owned();
    assert!(file(".credentials_rsaparams")["modulus"].is_string());

    // The record exists at once; the same name again is a conflict.
    let listed = get_json(&sim, &format!("{}?name=jit-1", org().runners_path())).await;
    assert_eq!(listed["total_count"], 1);
    let again = post(json!({"name": "jit-1", "runner_group_id": 1, "labels": ["x"]}))
        .await
        .expect("send");
    assert_error(
        again,
        409,
        "Already exists - A runner with the name jit-1 already exists.",
    )
    .await;

    // The JIT credential works on the runner protocol.
    let response = poll(&sim, id, &credential, 0).await;
    assert_eq!(response.status(), 204);
    let listed = get_json(&sim, &runner_path(&org(), id)).await;
    assert_eq!(listed["status"], "online");
    assert_eq!(listed["version"], "2.329.0");
}

#[tokio::test]
async fn labels_endpoints() {
    let sim = start(SimConfig::default()).await;
    let (id, _) = register(&sim, &enterprise(), "labelled", &["one"], false).await;
    let path = format!("{}/{id}/labels", enterprise().runners_path());
    let names = |body: &Value| -> Vec<String> {
        body["labels"]
            .as_array()
            .expect("labels")
            .iter()
            .map(|l| l["name"].as_str().expect("name").to_owned())
            .collect()
    };
    let listed = get_json(&sim, &path).await;
    assert_eq!(listed["total_count"], 4);
    let added = send(api(&sim, Method::POST, &path).json(&json!({"labels": ["two", "ONE"]}))).await;
    assert_eq!(added.status(), 200);
    assert_eq!(
        names(&json(added).await),
        ["self-hosted", "Linux", "X64", "one", "two"]
    );
    let empty_post = send(api(&sim, Method::POST, &path).json(&json!({"labels": []}))).await;
    assert_eq!(empty_post.status(), 422);
    let set =
        json(send(api(&sim, Method::PUT, &path).json(&json!({"labels": ["three"]}))).await).await;
    assert_eq!(names(&set), ["self-hosted", "Linux", "X64", "three"]);
    let removed = api_send(&sim, Method::DELETE, &format!("{path}/three")).await;
    assert_eq!(removed.status(), 200);
    assert_eq!(names(&json(removed).await), ["self-hosted", "Linux", "X64"]);
    assert_eq!(
        api_status(&sim, Method::DELETE, &format!("{path}/three")).await,
        404
    );
    assert_eq!(
        api_status(&sim, Method::DELETE, &format!("{path}/self-hosted")).await,
        422
    );
    send(api(&sim, Method::PUT, &path).json(&json!({"labels": ["a", "b"]}))).await;
    let cleared = json(api_send(&sim, Method::DELETE, &path).await).await;
    assert_eq!(names(&cleared), ["self-hosted", "Linux", "X64"]);
}

#[tokio::test]
async fn runner_groups_of_org_and_enterprise() {
    let config = SimConfig::default().with_org(github_sim::OwnerConfig {
        name: "octo-org".into(),
        id: 100,
        groups: vec![
            github_sim::GroupConfig::default_group(),
            github_sim::GroupConfig::new(2, "private").selected(&["octo-org/secret"]),
        ],
    });
    let sim = start(config).await;
    let body = get_json(&sim, "/orgs/octo-org/actions/runner-groups").await;
    assert_eq!(body["total_count"], 2);
    assert_eq!(body["runner_groups"][0]["name"], "Default");
    assert_eq!(body["runner_groups"][0]["id"], 1);
    assert_eq!(body["runner_groups"][0]["default"], true);
    assert_eq!(body["runner_groups"][0]["visibility"], "all");
    assert_eq!(body["runner_groups"][1]["visibility"], "selected");
    assert_eq!(body["runner_groups"][1]["id"], 2);
    let body = get_json(&sim, "/enterprises/acme/actions/runner-groups").await;
    assert_eq!(body["total_count"], 1);
    assert_eq!(
        body["runner_groups"][0]["name"], "Default",
        "as GitHub names it"
    );
    assert_eq!(body["runner_groups"][0]["id"], 1);
    assert_eq!(
        get_status(&sim, "/orgs/nobody/actions/runner-groups").await,
        404
    );

    // config.sh --runnergroup picks the group by name, ignoring case as actions/runner does; an
    // unknown group is refused with actions/runner's message.
    let token = registration_token(&sim, &org()).await;
    assert_eq!(join_group(&sim, &token, "g2", "private").await.0, 201);
    let (status, body) = join_group(&sim, &token, "g3", "nope").await;
    assert_eq!(status, 404);
    assert_eq!(
        body["message"],
        "Could not find any self-hosted runner group named \"nope\"."
    );
    let (status, body) = join_group(&sim, &token, "g4", "PRIVATE").await;
    assert_eq!(status, 201);
    assert_eq!(body["pool_name"], "private");
    for (name, group) in [("g5", "default"), ("g6", "DEFAULT")] {
        let (status, body) = join_group(&sim, &token, name, group).await;
        assert_eq!(status, 201, "{group}");
        assert_eq!(
            (body["pool_id"].as_u64(), body["pool_name"].as_str()),
            (Some(1), Some("Default"))
        );
    }
    let group_of = |name: &str| {
        sim.runners()
            .into_iter()
            .find(|r| r.name == name)
            .map(|r| r.runner_group_id)
    };
    assert_eq!(group_of("g2"), Some(2));
    assert_eq!(group_of("g4"), Some(2));
    assert_eq!(group_of("g5"), Some(1));
}

#[tokio::test]
async fn rate_limit_endpoint_is_free() {
    let sim = start(SimConfig::default().with_rate_limit(100)).await;
    api_send(&sim, Method::GET, &repo().runners_path()).await;
    for _ in 0..3 {
        let response = api_send(&sim, Method::GET, "/rate_limit").await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-ratelimit-remaining"], "99");
        let body = json(response).await;
        assert_eq!(body["resources"]["core"]["limit"], 100);
        assert_eq!(body["resources"]["core"]["used"], 1);
        assert_eq!(
            body["resources"]["actions_runner_registration"]["limit"],
            10000
        );
        assert_eq!(body["rate"], body["resources"]["core"]);
    }
    let counts = sim.request_counts();
    let entry = counts["GET /rate_limit"];
    assert_eq!((entry.count, entry.rate_limit_cost), (3, 0));
    assert_eq!(
        counts["GET /repos/{owner}/{repo}/actions/runners"].rate_limit_cost,
        1
    );
    let _ = Scope::parse("octo/app");
}
