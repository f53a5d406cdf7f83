//! The client against the in-process `github-sim`: the same calls the manager makes, end to end.

use std::time::Duration;

use github::{
    Auth, Client, ClientConfig, EndpointKind, Error, JitRequest, RetryPolicy, RunnerStatus, Scope,
    Secret,
};
use github_sim::{FaultSpec, JobSpec, Sim, SimConfig, SimHandle};
use url::Url;

async fn sim(config: SimConfig) -> SimHandle {
    Sim::start(config).await.expect("sim starts")
}

fn client_for(sim: &SimHandle, scope: &str, auth: Auth) -> Client {
    let mut config = ClientConfig::new(
        Url::parse(&sim.api_url()).expect("api url"),
        Url::parse(&sim.web_url()).expect("web url"),
        Scope::parse(scope).expect("scope"),
        auth,
    );
    config.timeout = Duration::from_secs(10);
    config.retry = RetryPolicy {
        max_retries: 3,
        min_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(10),
    };
    config.max_rate_limit_wait = Duration::from_secs(2);
    Client::new(config).expect("client")
}

fn pat(sim: &SimHandle) -> Auth {
    Auth::Token(sim.token())
}

fn jit(name: &str) -> JitRequest {
    JitRequest {
        name: name.into(),
        labels: vec!["self-hosted".into(), "jammy".into()],
        runner_group_id: 1,
        work_folder: None,
    }
}

#[tokio::test]
async fn repo_runner_lifecycle() {
    let sim = sim(SimConfig::default()).await;
    let client = client_for(&sim, "octo/app", pat(&sim));
    assert_eq!(
        client.registration_url().as_str(),
        format!("{}/octo/app", sim.web_url())
    );

    let created = client
        .generate_jitconfig(&jit("gh-runner-a"))
        .await
        .expect("jit");
    assert!(!created.encoded_jit_config.expose().is_empty());
    assert_eq!(created.runner.name, "gh-runner-a");
    assert_eq!(created.runner.status, RunnerStatus::Offline);

    let listed = client.list_runners(None).await.expect("list");
    assert_eq!(
        listed.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        vec!["gh-runner-a"]
    );
    assert!(listed[0].labels.contains(&"jammy".to_owned()));
    let got = client.get_runner(created.runner.id).await.expect("get");
    assert_eq!(got.id, created.runner.id);
    assert!(client
        .find_runner("gh-runner-a")
        .await
        .expect("find")
        .is_some());
    assert!(client.find_runner("nope").await.expect("find").is_none());

    let labels = client
        .set_labels(created.runner.id, &["gpu".into()])
        .await
        .expect("set labels");
    assert!(labels.contains(&"gpu".to_owned()), "{labels:?}");

    let token = client
        .create_registration_token()
        .await
        .expect("registration token");
    assert!(!token.token.expose().is_empty());
    client.create_remove_token().await.expect("remove token");

    client
        .delete_runner(created.runner.id)
        .await
        .expect("delete");
    assert!(client
        .get_runner(created.runner.id)
        .await
        .expect_err("gone")
        .is_not_found());
    assert!(client.list_runners(None).await.expect("list").is_empty());
    assert!(
        client.rate_limit().is_some(),
        "the sim reports x-ratelimit-* headers"
    );
}

#[tokio::test]
async fn paging_and_conditional_lists() {
    let sim = sim(SimConfig::default().with_secondary_limit_per_minute(10_000)).await;
    let client = client_for(&sim, "octo/app", pat(&sim));
    for i in 0..250 {
        client
            .generate_jitconfig(&jit(&format!("r-{i:03}")))
            .await
            .expect("jit");
    }
    sim.reset_request_counts();
    let first = client.list_runners(None).await.expect("list");
    assert_eq!(first.len(), 250);
    let second = client.list_runners(None).await.expect("list again");
    assert_eq!(second, first);
    let counts = sim.request_counts();
    let list = counts
        .get("GET /repos/{owner}/{repo}/actions/runners")
        .expect("counted");
    assert_eq!(list.count, 6, "three pages, twice");
    assert_eq!(list.not_modified, 3, "the second listing was all 304s");
    assert_eq!(
        client.stats().get(EndpointKind::ListRunners).not_modified,
        3
    );
}

#[tokio::test]
async fn jit_name_conflict_returns_the_existing_runner() {
    let sim = sim(SimConfig::default()).await;
    let client = client_for(&sim, "octo/app", pat(&sim));
    let first = client.generate_jitconfig(&jit("dup")).await.expect("first");
    match client.generate_jitconfig(&jit("dup")).await {
        Err(Error::Conflict {
            existing: Some(runner),
            ..
        }) => assert_eq!(runner.id, first.runner.id),
        other => panic!("expected a conflict, got {other:?}"),
    }
}

#[tokio::test]
async fn server_faults_are_retried() {
    let sim = sim(SimConfig::default()).await;
    let client = client_for(&sim, "octo/app", pat(&sim));
    sim.inject_fault(FaultSpec::status("GET /repos/{owner}/{repo}/actions/runners", 502).times(2));
    assert!(client
        .list_runners(None)
        .await
        .expect("after retries")
        .is_empty());
    assert_eq!(client.stats().get(EndpointKind::ListRunners).retries, 2);
    sim.inject_fault(
        FaultSpec::status(
            "POST /repos/{owner}/{repo}/actions/runners/generate-jitconfig",
            500,
        )
        .times(1),
    );
    assert!(matches!(
        client.generate_jitconfig(&jit("x")).await,
        Err(Error::Server { status: 500, .. })
    ));
    assert_eq!(
        client.stats().get(EndpointKind::JitConfig).requests,
        1,
        "jit not retried"
    );
}

#[tokio::test]
async fn busy_runner_cannot_be_deleted() {
    let sim = sim(SimConfig::default()).await;
    let client = client_for(&sim, "octo/app", pat(&sim));
    let runner = client
        .generate_jitconfig(&jit("busy-one"))
        .await
        .expect("jit")
        .runner;
    sim.enqueue_job(JobSpec {
        labels: vec!["self-hosted".into()],
        scope: Some("octo/app".into()),
        ..JobSpec::default()
    })
    .expect("job");
    sim.set_assign_on_delete(Some("busy-one"), true);
    let err = client.delete_runner(runner.id).await.expect_err("busy");
    assert!(matches!(err, Error::RunnerBusy { .. }), "{err:?}");
}

#[tokio::test]
async fn github_app_on_an_org() {
    let sim = sim(SimConfig::default()).await;
    let auth = Auth::App {
        app_id: 12345,
        installation_id: None,
        private_key_pem: Secret::from(github_sim::TEST_APP_PRIVATE_KEY_PEM),
    };
    let client = client_for(&sim, "octo-org", auth);
    assert_eq!(client.runner_group_id("default").await.expect("group"), 1);
    let created = client
        .generate_jitconfig(&jit("app-runner"))
        .await
        .expect("jit");
    assert_eq!(
        client.list_runners(Some("app-runner")).await.expect("list")[0].id,
        created.runner.id
    );
    let stats = client.stats();
    assert_eq!(stats.get(EndpointKind::AppInstallation).requests, 1);
    assert_eq!(
        stats.get(EndpointKind::AppAccessToken).requests,
        1,
        "token cached across calls"
    );
}

#[tokio::test]
async fn exhausted_budget_is_reported() {
    let sim = sim(SimConfig::default()).await;
    let client = client_for(&sim, "octo/app", pat(&sim));
    sim.set_rate_limit(Some(10), Some(10), None);
    let err = client.list_runners(None).await.expect_err("rate limited");
    assert!(matches!(err, Error::RateLimited { .. }), "{err:?}");
    let budget = client.rate_limit().expect("known");
    assert_eq!((budget.limit, budget.remaining), (10, 0));
}

#[tokio::test]
async fn wrong_token_is_unauthorized() {
    let sim = sim(SimConfig::default()).await;
    let client = client_for(&sim, "octo/app", Auth::Token(Secret::from("ghp_wrong")));
    assert!(matches!(
        client.list_runners(None).await,
        Err(Error::Unauthorized { .. })
    ));
}

/// Issue 12: `runner_group = "default"` (the manager's default) on an organisation or enterprise.
/// GitHub, and so the sim, names the default group `Default` (id 1); actions/runner matches
/// group names ignoring case, and so must the lookup. Then JIT registration works.
#[tokio::test]
async fn default_group_by_lowercase_name_on_org_and_enterprise() {
    let sim = sim(SimConfig::default()).await;
    for scope in ["octo-org", "enterprises/acme"] {
        let client = client_for(&sim, scope, pat(&sim));
        let groups = client.list_runner_groups().await.expect("groups");
        assert_eq!(
            groups
                .iter()
                .map(|g| (g.id, g.name.as_str(), g.default))
                .collect::<Vec<_>>(),
            [(1, "Default", true)],
            "{scope}: GitHub's default group"
        );
        for name in ["default", "Default", "DEFAULT"] {
            assert_eq!(
                client.runner_group_id(name).await.expect("found"),
                1,
                "{scope}: {name}"
            );
        }
        let id = client.runner_group_id("default").await.expect("group");
        let request = JitRequest {
            runner_group_id: id,
            ..jit(&format!("jit-{}", scope.replace('/', "-")))
        };
        let created = client.generate_jitconfig(&request).await.expect("jit");
        assert_eq!(created.runner.runner_group_id, Some(1), "{scope}");
        let err = client
            .runner_group_id("gpu")
            .await
            .expect_err("no such group");
        let message = err.to_string();
        assert!(err.is_not_found(), "{err:?}");
        assert!(
            message.contains("\"Default\" (id 1, default)")
                && message.contains("actions/runner-groups"),
            "{message}"
        );
    }
}
