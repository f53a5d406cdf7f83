//! The client against a scripted server: headers, paging, ETags, error mapping, retries,
//! timeouts, JIT conflict recovery, labels, groups and proxy.

mod common;

use std::time::Duration;

use common::*;
use github::{
    Auth, Client, EndpointKind, Error, JitRequest, ProxyConfig, RunnerId, RunnerStatus, Secret,
};
use serde_json::json;

const P: &str = "/repos/octo-org/app/actions/runners";

#[tokio::test]
async fn every_request_carries_the_mandatory_headers() {
    let server = Server::start(vec![
        expect("GET", &format!("{P}?per_page=100")).json(runner_page(1..3, 2)),
        expect("POST", &format!("{P}/registration-token"))
            .status(201)
            .json(json!({"token": "LLBF3JGZDX3P5PMEXLND6TS6FCWO6", "expires_at": "2026-01-22T12:13:35.123-08:00"})),
    ])
    .await;
    let client = pat_client(&server, "octo-org/app");
    let runners = client.list_runners(None).await.expect("list");
    assert_eq!(runners.len(), 2);
    assert_eq!(runners[0].labels, vec!["self-hosted", "jammy"]);
    assert_eq!(runners[0].status, RunnerStatus::Online);
    let token = client.create_registration_token().await.expect("token");
    assert_eq!(token.token.expose(), "LLBF3JGZDX3P5PMEXLND6TS6FCWO6");
    assert!(
        !format!("{token:?}").contains("LLBF3"),
        "token redacted in Debug"
    );
    for seen in server.finish() {
        assert_eq!(seen.header("user-agent"), Some("runner-manager-tests/1"));
        assert_eq!(seen.header("accept"), Some("application/vnd.github+json"));
        assert_eq!(seen.header("x-github-api-version"), Some("2022-11-28"));
        assert_eq!(
            seen.header("authorization"),
            Some(format!("Bearer {TOKEN}").as_str())
        );
    }
}

#[tokio::test]
async fn list_follows_link_next_across_three_pages() {
    let server = Server::start(vec![]).await;
    let base = server.url.as_str().trim_end_matches('/').to_owned();
    let link = |page: u32| {
        format!(
            r#"<{base}{P}?per_page=100&page={page}>; rel="next", <{base}{P}?per_page=100&page=3>; rel="last""#
        )
    };
    server.push(vec![
        expect("GET", &format!("{P}?per_page=100"))
            .json(runner_page(0..100, 250))
            .header("link", &link(2)),
        expect("GET", &format!("{P}?per_page=100&page=2"))
            .json(runner_page(100..200, 250))
            .header("link", &link(3)),
        expect("GET", &format!("{P}?per_page=100&page=3"))
            .json(runner_page(200..250, 250))
            .header(
                "link",
                &format!(r#"<{base}{P}?per_page=100&page=1>; rel="first""#),
            ),
    ]);
    let client = pat_client(&server, "octo-org/app");
    let runners = client.list_runners(None).await.expect("list");
    let ids: Vec<u64> = runners.iter().map(|r| r.id.0).collect();
    assert_eq!(ids, (0..250).collect::<Vec<_>>());
    server.finish();
    assert_eq!(client.stats().get(EndpointKind::ListRunners).requests, 3);
}

#[tokio::test]
async fn etag_304_reuses_cached_pages() {
    let server = Server::start(vec![]).await;
    let base = server.url.as_str().trim_end_matches('/').to_owned();
    let next = format!(r#"<{base}{P}?per_page=100&page=2>; rel="next""#);
    server.push(vec![
        expect("GET", &format!("{P}?per_page=100"))
            .json(runner_page(0..100, 150))
            .header("etag", "\"p1\"")
            .header("link", &next),
        expect("GET", &format!("{P}?per_page=100&page=2"))
            .json(runner_page(100..150, 150))
            .header("etag", "W/\"p2\""),
        // Second listing: page 1 unchanged (304, Link reused from the cache), page 2 changed.
        expect("GET", &format!("{P}?per_page=100"))
            .status(304)
            .header("etag", "\"p1\""),
        expect("GET", &format!("{P}?per_page=100&page=2"))
            .json(runner_page(100..151, 151))
            .header("etag", "\"p2b\""),
    ]);
    let client = pat_client(&server, "octo-org/app");
    let first = client.list_runners(None).await.expect("first");
    let second = client.list_runners(None).await.expect("second");
    assert_eq!(first.len(), 150);
    assert_eq!(second.len(), 151);
    assert_eq!(second[..100], first[..100]);
    let seen = server.finish();
    assert_eq!(seen[0].header("if-none-match"), None);
    assert_eq!(seen[1].header("if-none-match"), None);
    assert_eq!(seen[2].header("if-none-match"), Some("\"p1\""));
    assert_eq!(seen[3].header("if-none-match"), Some("W/\"p2\""));
    let stats = client.stats().get(EndpointKind::ListRunners);
    assert_eq!(
        (stats.requests, stats.not_modified, stats.errors),
        (4, 1, 0)
    );
}

#[tokio::test]
async fn name_filter_is_sent_and_enforced() {
    let server = Server::start(vec![expect("GET", &format!("{P}?name=runner-7&per_page=100"))
        .json(json!({"total_count": 2, "runners": [runner_json(7, "runner-7"), runner_json(8, "runner-77")]}))])
    .await;
    let client = pat_client(&server, "octo-org/app");
    let found = client.list_runners(Some("runner-7")).await.expect("list");
    assert_eq!(
        found.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![RunnerId(7)]
    );
    server.finish();
}

#[tokio::test]
async fn statuses_map_to_typed_errors() {
    let server = Server::start(vec![
        expect("GET", &format!("{P}/1")).error(401, "Bad credentials"),
        expect("GET", &format!("{P}/2"))
            .error(403, "Resource not accessible by personal access token"),
        expect("GET", &format!("{P}/3")).error(404, "Not Found"),
        expect("DELETE", &format!("{P}/4")).error(
            422,
            "Bad request - Runner \"gh-runner-4\" is still running a job",
        ),
        expect("DELETE", &format!("{P}/5")).status(204),
        expect("POST", &format!("{P}/generate-jitconfig")).error(
            422,
            "Invalid input: object is missing required key: runner_group_id",
        ),
        expect("GET", &format!("{P}/6"))
            .status(410)
            .json(json!({"message": "Gone"})),
        expect("GET", &format!("{P}/7")).json(json!({"id": "not a number"})),
    ])
    .await;
    let client = pat_client(&server, "octo-org/app");
    let get = |id| client.get_runner(RunnerId(id));
    assert!(
        matches!(get(1).await, Err(Error::Unauthorized { message }) if message == "Bad credentials")
    );
    assert!(matches!(get(2).await, Err(Error::Forbidden { .. })));
    let not_found = get(3).await.expect_err("404");
    assert!(not_found.is_not_found(), "{not_found:?}");
    let busy = client.delete_runner(RunnerId(4)).await.expect_err("busy");
    assert!(
        matches!(&busy, Error::RunnerBusy { message } if message.contains("still running a job")),
        "{busy:?}"
    );
    client.delete_runner(RunnerId(5)).await.expect("deleted");
    let jit = JitRequest {
        name: "r".into(),
        labels: vec!["x".into()],
        runner_group_id: 0,
        work_folder: None,
    };
    let invalid = client.generate_jitconfig(&jit).await.expect_err("422");
    assert!(
        matches!(&invalid, Error::Validation { message, .. } if message.contains("runner_group_id")),
        "{invalid:?}"
    );
    assert!(matches!(
        get(6).await,
        Err(Error::Unexpected { status: 410, .. })
    ));
    assert!(matches!(
        get(7).await,
        Err(Error::Decode {
            endpoint: EndpointKind::GetRunner,
            ..
        })
    ));
    server.finish();
    let stats = client.stats();
    assert_eq!(stats.total().errors, 7);
    assert_eq!(stats.total().retries, 0, "4xx are never retried");
}

#[tokio::test]
async fn server_errors_are_retried_a_bounded_number_of_times() {
    let server = Server::start(vec![
        // 1 attempt + 3 retries, then give up.
        expect("GET", &format!("{P}/9")).error(502, "Bad Gateway"),
        expect("GET", &format!("{P}/9")).error(503, "Unavailable"),
        expect("GET", &format!("{P}/9")).error(500, "oops"),
        expect("GET", &format!("{P}/9")).error(502, "Bad Gateway"),
        // Recovers on the second attempt.
        expect("DELETE", &format!("{P}/9")).error(500, "oops"),
        expect("DELETE", &format!("{P}/9")).status(204),
        // Token POSTs are safe to retry.
        expect("POST", &format!("{P}/remove-token")).error(500, "oops"),
        expect("POST", &format!("{P}/remove-token"))
            .status(201)
            .json(json!({"token": "REMOVE", "expires_at": "2026-01-22T12:13:35Z"})),
    ])
    .await;
    let client = pat_client(&server, "octo-org/app");
    let err = client.get_runner(RunnerId(9)).await.expect_err("gives up");
    assert!(matches!(err, Error::Server { status: 502, .. }), "{err:?}");
    client
        .delete_runner(RunnerId(9))
        .await
        .expect("second attempt");
    assert_eq!(
        client
            .create_remove_token()
            .await
            .expect("token")
            .token
            .expose(),
        "REMOVE"
    );
    server.finish();
    assert_eq!(client.stats().get(EndpointKind::GetRunner).retries, 3);
    assert_eq!(client.stats().get(EndpointKind::GetRunner).requests, 4);
}

#[tokio::test]
async fn each_attempt_has_a_timeout() {
    let server = Server::start(vec![
        expect("GET", &format!("{P}/1"))
            .delay(Duration::from_secs(3))
            .json(runner_json(1, "a")),
        expect("GET", &format!("{P}/1"))
            .delay(Duration::from_secs(3))
            .json(runner_json(1, "a")),
    ])
    .await;
    let mut config = pat_config(&server.url, "octo-org/app");
    config.timeout = Duration::from_millis(200);
    config.retry.max_retries = 1;
    let client = Client::new(config).expect("client");
    let started = std::time::Instant::now();
    let err = client.get_runner(RunnerId(1)).await.expect_err("times out");
    assert!(
        matches!(err, Error::Timeout { after } if after == Duration::from_millis(200)),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "did not wait for the slow server"
    );
    assert_eq!(server.seen().len(), 2, "one attempt and one retry");
}

#[tokio::test]
async fn jit_409_reports_the_existing_runner() {
    let server = Server::start(vec![
        expect("POST", &format!("{P}/generate-jitconfig")).error(
            409,
            "Already exists - A runner with the name gh-runner-1 already exists.",
        ),
        expect("GET", &format!("{P}?name=gh-runner-1&per_page=100"))
            .json(json!({"total_count": 1, "runners": [runner_json(77, "gh-runner-1")]})),
    ])
    .await;
    let client = pat_client(&server, "octo-org/app");
    let request = JitRequest {
        name: "gh-runner-1".into(),
        labels: vec!["self-hosted".into(), "jammy".into()],
        runner_group_id: 1,
        work_folder: Some("_work".into()),
    };
    let err = client
        .generate_jitconfig(&request)
        .await
        .expect_err("conflict");
    match err {
        Error::Conflict {
            message,
            existing: Some(runner),
        } => {
            assert!(message.contains("already exists"));
            assert_eq!(runner.id, RunnerId(77));
        }
        other => panic!("expected a conflict with the existing runner, got {other:?}"),
    }
    let seen = server.finish();
    assert_eq!(
        seen[0].json(),
        json!({"name": "gh-runner-1", "runner_group_id": 1, "labels": ["self-hosted", "jammy"], "work_folder": "_work"})
    );
    assert_eq!(seen[0].header("content-type"), Some("application/json"));
}

#[tokio::test]
async fn jit_is_never_blindly_retried() {
    let server = Server::start(vec![
        // 5xx and nothing registered: the error is returned; one POST only.
        expect("POST", &format!("{P}/generate-jitconfig")).error(500, "oops"),
        expect("GET", &format!("{P}?name=r1&per_page=100")).json(json!({"total_count": 0, "runners": []})),
        // 5xx but the first attempt won: reported as a conflict with the runner.
        expect("POST", &format!("{P}/generate-jitconfig")).error(502, "Bad Gateway"),
        expect("GET", &format!("{P}?name=r2&per_page=100"))
            .json(json!({"total_count": 1, "runners": [runner_json(5, "r2")]})),
        // Success.
        expect("POST", &format!("{P}/generate-jitconfig")).status(201).json(json!({
            "runner": { "id": 23, "name": "r3", "status": "offline", "busy": false, "labels": [] },
            "encoded_jit_config": "eyIucnVubmVyIjoi..."
        })),
    ])
    .await;
    let client = pat_client(&server, "octo-org/app");
    let req = |name: &str| JitRequest {
        name: name.into(),
        labels: vec!["self-hosted".into()],
        runner_group_id: 1,
        work_folder: None,
    };
    assert!(matches!(
        client.generate_jitconfig(&req("r1")).await,
        Err(Error::Server { status: 500, .. })
    ));
    let err = client
        .generate_jitconfig(&req("r2"))
        .await
        .expect_err("conflict");
    assert!(
        matches!(&err, Error::Conflict { existing: Some(r), .. } if r.id == RunnerId(5)),
        "{err:?}"
    );
    let jit = client
        .generate_jitconfig(&req("r3"))
        .await
        .expect("created");
    assert_eq!(jit.runner.id, RunnerId(23));
    assert_eq!(jit.encoded_jit_config.expose(), "eyIucnVubmVyIjoi...");
    assert!(
        !format!("{jit:?}").contains("eyIuc"),
        "jit config redacted in Debug"
    );
    server.finish();
    assert_eq!(client.stats().get(EndpointKind::JitConfig).retries, 0);
    // Local validation needs no request.
    let mut bad = req("r4");
    bad.labels.clear();
    assert!(matches!(
        client.generate_jitconfig(&bad).await,
        Err(Error::Validation { .. })
    ));
}

#[tokio::test]
async fn downloads_are_parsed_and_conditional() {
    let body = json!([
        {"os": "linux", "architecture": "x64", "download_url": "https://example/r.tar.gz",
         "filename": "actions-runner-linux-x64-2.329.0.tar.gz", "sha256_checksum": "ab12",
         "temp_download_token": "tdt-secret", "new_field": 1},
        {"os": "linux", "architecture": "arm64", "download_url": "https://example/a.tar.gz",
         "filename": "actions-runner-linux-arm64-2.329.0.tar.gz"}
    ]);
    let server = Server::start(vec![
        expect("GET", &format!("{P}/downloads"))
            .json(body)
            .header("etag", "\"d1\""),
        expect("GET", &format!("{P}/downloads")).status(304),
    ])
    .await;
    let client = pat_client(&server, "octo-org/app");
    let first = client.list_downloads().await.expect("downloads");
    let again = client.list_downloads().await.expect("cached");
    assert_eq!(first.len(), 2);
    assert_eq!(again.len(), 2);
    assert_eq!(first[0].sha256_checksum.as_deref(), Some("ab12"));
    assert_eq!(
        again[0].temp_download_token.as_ref().map(Secret::expose),
        Some("tdt-secret")
    );
    assert!(first[1].temp_download_token.is_none());
    let seen = server.finish();
    assert_eq!(seen[1].header("if-none-match"), Some("\"d1\""));
}

#[tokio::test]
async fn labels_list_set_add_remove() {
    let labels = |names: &[&str]| {
        let labels: Vec<_> = names
            .iter()
            .map(|n| json!({"id": 1, "name": n, "type": "custom"}))
            .collect();
        json!({"total_count": names.len(), "labels": labels})
    };
    let server = Server::start(vec![
        expect("GET", &format!("{P}/5/labels")).json(labels(&["self-hosted", "a"])),
        expect("PUT", &format!("{P}/5/labels")).json(labels(&["self-hosted", "b", "c"])),
        expect("POST", &format!("{P}/5/labels")).json(labels(&["self-hosted", "b", "c", "d"])),
        expect("DELETE", &format!("{P}/5/labels/gpu%20x")).json(labels(&["self-hosted"])),
    ])
    .await;
    let client = pat_client(&server, "octo-org/app");
    let id = RunnerId(5);
    assert_eq!(
        client.list_labels(id).await.expect("list"),
        vec!["self-hosted", "a"]
    );
    let set = client
        .set_labels(id, &["b".into(), "c".into()])
        .await
        .expect("set");
    assert_eq!(set, vec!["self-hosted", "b", "c"]);
    client.add_labels(id, &["d".into()]).await.expect("add");
    assert_eq!(
        client.remove_label(id, "gpu x").await.expect("remove"),
        vec!["self-hosted"]
    );
    let seen = server.finish();
    assert_eq!(seen[1].json(), json!({"labels": ["b", "c"]}));
    assert_eq!(seen[2].json(), json!({"labels": ["d"]}));
}

#[tokio::test]
async fn runner_groups_by_scope() {
    let groups = json!({"total_count": 2, "runner_groups": [
        {"id": 1, "name": "Default", "visibility": "all", "default": true, "inherited": false},
        {"id": 4, "name": "lxd", "visibility": "selected", "default": false, "inherited": false}]});
    let server = Server::start(vec![
        expect("GET", "/orgs/octo-org/actions/runner-groups?per_page=100").json(groups.clone()),
        expect("GET", "/orgs/octo-org/actions/runner-groups?per_page=100").json(groups),
        expect(
            "GET",
            "/enterprises/acme/actions/runner-groups?per_page=100",
        )
        .json(json!({"total_count": 1, "runner_groups": [{"id": 9, "name": "ent"}]})),
    ])
    .await;
    let org = pat_client(&server, "octo-org");
    assert_eq!(org.runner_group_id("lxd").await.expect("found"), 4);
    assert!(org
        .runner_group_id("nope")
        .await
        .expect_err("missing")
        .is_not_found());
    let ent = pat_client(&server, "enterprises/acme");
    assert_eq!(ent.runner_group_id("ent").await.expect("found"), 9);
    // A repository has no groups: 1, without a request.
    assert_eq!(
        pat_client(&server, "octo-org/app")
            .runner_group_id("anything")
            .await
            .expect("repo"),
        1
    );
    server.finish();
}

/// GitHub names an organisation's default group `Default`; `config.sh --runnergroup` matches
/// names ignoring case, so must the lookup. The list is paged (`per_page` up to 100, `Link`).
#[tokio::test]
async fn runner_group_lookup_ignores_case_and_reads_every_page() {
    const G: &str = "/orgs/octo-org/actions/runner-groups";
    let group = |id: u64, name: &str| json!({"id": id, "name": name, "visibility": "all", "default": id == 1});
    let first = json!({"total_count": 101, "runner_groups": (1..=100)
        .map(|i| group(i, &if i == 1 { "Default".to_owned() } else { format!("g{i}") }))
        .collect::<Vec<_>>()});
    let second = json!({"total_count": 101, "runner_groups": [group(101, "GPU")]});
    let next = |s: &Server| {
        format!(
            "<{}{G}?per_page=100&page=2>; rel=\"next\", <{}{G}?per_page=100&page=2>; rel=\"last\"",
            s.url.as_str().trim_end_matches('/'),
            s.url.as_str().trim_end_matches('/')
        )
    };
    // The Link header needs the server's address: start it, then script it.
    let server = Server::start(vec![]).await;
    let link = next(&server);
    server.push(vec![
        expect("GET", &format!("{G}?per_page=100"))
            .json(first.clone())
            .header("link", &link),
        expect("GET", &format!("{G}?per_page=100&page=2")).json(second.clone()),
        expect("GET", &format!("{G}?per_page=100"))
            .json(first.clone())
            .header("link", &link),
        expect("GET", &format!("{G}?per_page=100&page=2")).json(second.clone()),
        expect("GET", &format!("{G}?per_page=100"))
            .json(first)
            .header("link", &link),
        expect("GET", &format!("{G}?per_page=100&page=2")).json(second),
    ]);
    let org = pat_client(&server, "octo-org");
    assert_eq!(org.runner_group_id("default").await.expect("default"), 1);
    assert_eq!(
        org.runner_group_id("gpu")
            .await
            .expect("on the second page"),
        101
    );
    let err = org.runner_group_id("nope").await.expect_err("missing");
    assert!(err.is_not_found(), "{err:?}");
    let message = err.to_string();
    for part in [
        "runner group \"nope\" not found in organisation octo-org",
        "\"Default\" (id 1, default)",
        "\"GPU\" (id 101)",
        "GET /orgs/octo-org/actions/runner-groups",
    ] {
        assert!(message.contains(part), "{part:?} missing from: {message}");
    }
    server.finish();
}

#[tokio::test]
async fn org_and_enterprise_prefixes() {
    let server = Server::start(vec![
        expect("GET", "/orgs/octo-org/actions/runners/3").json(runner_json(3, "x")),
        expect("DELETE", "/enterprises/acme/actions/runners/4").status(204),
    ])
    .await;
    pat_client(&server, "octo-org")
        .get_runner(RunnerId(3))
        .await
        .expect("org");
    pat_client(&server, "enterprises/acme")
        .delete_runner(RunnerId(4))
        .await
        .expect("ent");
    server.finish();
}

#[tokio::test]
async fn link_to_another_origin_is_refused() {
    let server = Server::start(vec![expect("GET", &format!("{P}?per_page=100"))
        .json(runner_page(0..1, 2))
        .header("link", r#"<https://evil.example/steal?page=2>; rel="next""#)])
    .await;
    let err = pat_client(&server, "octo-org/app")
        .list_runners(None)
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("unexpected"), "{err}");
    server.finish();
}

#[tokio::test]
async fn api_url_with_path_prefix_for_ghes() {
    let server = Server::start(vec![
        expect("GET", &format!("/api/v3{P}/1")).json(runner_json(1, "a"))
    ])
    .await;
    let api = server.url.join("/api/v3/").expect("url");
    let client = Client::new(pat_config(&api, "octo-org/app")).expect("client");
    client.get_runner(RunnerId(1)).await.expect("get");
    assert_eq!(
        client.registration_url().as_str(),
        "https://github.example/octo-org/app"
    );
    server.finish();
}

#[tokio::test]
async fn traffic_goes_through_the_configured_proxy() {
    let proxy = Server::start(vec![
        expect("GET", &format!("{P}/1")).json(runner_json(1, "a"))
    ])
    .await;
    let api = url::Url::parse("http://github.test.invalid").expect("url");
    let mut cfg = pat_config(&api, "octo-org/app");
    cfg.proxy = Some(ProxyConfig {
        http: Some(proxy.url.to_string()),
        https: None,
        no_proxy: None,
    });
    Client::new(cfg.clone())
        .expect("client")
        .get_runner(RunnerId(1))
        .await
        .expect("via proxy");
    let seen = proxy.finish();
    assert_eq!(
        seen[0].uri,
        format!("http://github.test.invalid{P}/1"),
        "absolute-form request to the proxy"
    );

    // The same host in no_proxy bypasses the proxy (and then cannot resolve).
    cfg.proxy = Some(ProxyConfig {
        http: Some(proxy.url.to_string()),
        https: None,
        no_proxy: Some("localhost,.test.invalid".into()),
    });
    cfg.retry.max_retries = 0;
    cfg.timeout = Duration::from_secs(3);
    let err = Client::new(cfg)
        .expect("client")
        .get_runner(RunnerId(1))
        .await
        .expect_err("direct");
    assert!(
        matches!(err, Error::Transport(_) | Error::Timeout { .. }),
        "{err:?}"
    );
    assert_eq!(proxy.seen().len(), 1, "the proxy saw nothing more");
}

#[tokio::test]
async fn app_auth_on_enterprise_is_rejected() {
    let cfg = config(
        &url::Url::parse("http://127.0.0.1:1").expect("url"),
        "enterprises/acme",
        Auth::App {
            app_id: 1,
            installation_id: Some(2),
            private_key_pem: Secret::from("x"),
        },
    );
    assert!(matches!(Client::new(cfg), Err(Error::Config { .. })));
}

#[test]
fn client_and_futures_are_send_and_sync() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: T) {}
    let cfg = pat_config(&url::Url::parse("http://127.0.0.1:1").expect("url"), "o/r");
    let client = Client::new(cfg).expect("client");
    send_sync(&client);
    send(client.list_runners(None));
    send(client.generate_jitconfig(&JitRequest {
        name: "n".into(),
        labels: vec![],
        runner_group_id: 1,
        work_folder: None,
    }));
    send(client.create_registration_token());
    send(client.runner_group_id("g"));
}
