//! The runner side: registration, polling, job assignment, completion, ephemeral removal.

mod common;

use std::time::Duration;

use common::*;
use github_sim::{JobSpec, JobStatus, SimConfig};
use reqwest::Method;
use serde_json::{json, Value};

async fn rest_runner(sim: &github_sim::SimHandle, scope: &github_sim::Scope, id: u64) -> Value {
    json(api_send(sim, Method::GET, &runner_path(scope, id)).await).await
}

#[tokio::test]
async fn register_poll_run_complete_and_ephemeral_is_gone() {
    let sim = start(SimConfig::default()).await;
    let (id, credential) = register(&sim, &repo(), "eph-1", &["jammy"], true).await;
    assert_eq!(rest_runner(&sim, &repo(), id).await["status"], "offline");

    // Polling makes it online; nothing to do yet.
    assert_eq!(poll(&sim, id, &credential, 0).await.status(), 204);
    let runner = rest_runner(&sim, &repo(), id).await;
    assert_eq!(runner["status"], "online");
    assert_eq!(runner["busy"], false);

    // A job it cannot take (label missing) stays queued.
    let other = sim
        .enqueue_job(JobSpec::new(&["self-hosted", "gpu"], "true"))
        .expect("enqueue");
    // A matching job is assigned at once: the runner is busy before it even polls.
    let response = send(admin(&sim, Method::POST, "/jobs").json(
        &json!({"labels": ["self-hosted", "JAMMY"], "script": "echo hi", "timeout_seconds": 30}),
    ))
    .await;
    assert_eq!(response.status(), 201);
    let job_id = json(response).await["job_id"].as_u64().expect("job_id");
    assert_eq!(rest_runner(&sim, &repo(), id).await["busy"], true);
    let busy_delete = api_send(&sim, Method::DELETE, &runner_path(&repo(), id)).await;
    assert_error(
        busy_delete,
        422,
        "Bad request - Runner \"eph-1\" is still running a job",
    )
    .await;

    let response = poll(&sim, id, &credential, 5).await;
    assert_eq!(response.status(), 200);
    let job = json(response).await;
    assert_eq!(job["job_id"], job_id);
    assert_eq!(job["script"], "echo hi");
    assert_eq!(job["timeout_seconds"], 30);
    assert_eq!(job["env"]["GITHUB_REPOSITORY"], "octo/app");
    assert_eq!(job["env"]["GITHUB_EVENT_NAME"], "push");
    assert_eq!(
        job["env"]["GITHUB_RUN_ID"],
        job["run_id"].as_u64().expect("run_id").to_string()
    );
    assert_eq!(job["event"]["ref"], "refs/heads/main");
    let view = sim.job(job_id).expect("job");
    assert_eq!(view.status, JobStatus::InProgress);
    assert_eq!(view.runner_name.as_deref(), Some("eph-1"));

    assert_eq!(
        complete(&sim, &credential, job_id, 3, "hi\n")
            .await
            .status(),
        204
    );
    let response = send(admin(&sim, Method::GET, &format!("/jobs/{job_id}"))).await;
    let view = json(response).await;
    assert_eq!(view["status"], "completed");
    assert_eq!(view["conclusion"], "failure");
    assert_eq!(view["exit_code"], 3);
    assert_eq!(view["output"], "hi\n");
    assert_eq!(view["runner_id"], id);

    // Ephemeral: deregistered right after its job; its next poll is refused.
    assert_eq!(
        api_status(&sim, Method::GET, &runner_path(&repo(), id)).await,
        404
    );
    assert_eq!(poll(&sim, id, &credential, 0).await.status(), 401);
    assert_eq!(sim.job(other).expect("other").status, JobStatus::Queued);
}

#[tokio::test]
async fn long_poll_wakes_up_on_assignment_and_persistent_runner_takes_more_jobs() {
    let sim = start(SimConfig::default()).await;
    let (id, credential) = register(&sim, &org(), "persistent", &[], false).await;
    poll(&sim, id, &credential, 0).await;
    let waiter = {
        let base = sim.base_url();
        let credential = credential.clone();
        tokio::spawn(async move {
            client()
                .get(format!("{base}/_runner/poll?agent_id={id}&wait=20"))
                .header("authorization", format!("Bearer {credential}"))
                .send()
                .await
                .expect("poll")
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    let first = sim
        .enqueue_job(JobSpec {
            scope: Some("octo-org".into()),
            ..JobSpec::new(&["linux", "x64"], "true")
        })
        .expect("enqueue");
    let response = waiter.await.expect("join");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "long poll returned promptly"
    );
    assert_eq!(response.status(), 200);
    assert_eq!(json(response).await["job_id"], first);
    assert_eq!(
        complete(&sim, &credential, first, 0, "").await.status(),
        204
    );
    assert_eq!(
        sim.job(first).expect("job").conclusion.as_deref(),
        Some("success")
    );
    // Completing a job twice, or someone else's, is refused.
    assert_eq!(
        complete(&sim, &credential, first, 0, "").await.status(),
        404
    );

    let second = sim.enqueue_job(JobSpec::new(&[], "true")).expect("enqueue");
    let response = poll(&sim, id, &credential, 5).await;
    assert_eq!(json(response).await["job_id"], second);
    assert_eq!(rest_runner(&sim, &org(), id).await["busy"], true);
    complete(&sim, &credential, second, 0, "").await;
    let runner = rest_runner(&sim, &org(), id).await;
    assert_eq!(runner["busy"], false);
    assert_eq!(runner["id"], id);
}

#[tokio::test]
async fn jobs_go_to_the_right_scope_and_group() {
    let config = SimConfig::default()
        .with_repo("octo-org/web")
        .with_org(github_sim::OwnerConfig {
            name: "octo-org".into(),
            id: 100,
            groups: vec![
                github_sim::GroupConfig::default_group(),
                github_sim::GroupConfig::new(2, "restricted").selected(&["octo-org/other"]),
            ],
        });
    let sim = start(config).await;
    let token = registration_token(&sim, &org()).await;
    let response = register_raw(
        &sim,
        &token,
        json!({"url": sim.scope_url(&org()), "name": "restricted", "runner_group": "restricted"}),
    )
    .await;
    let body = json(response).await;
    let (rid, rcred) = (
        body["agent_id"].as_u64().expect("id"),
        body["credential"].as_str().expect("cred").to_owned(),
    );
    poll(&sim, rid, &rcred, 0).await;
    let (repo_id, repo_cred) = register(&sim, &repo(), "repo-runner", &[], false).await;
    poll(&sim, repo_id, &repo_cred, 0).await;

    // octo-org/web may not use the restricted group, and the octo/app runner is another repo's.
    let job = sim
        .enqueue_job(JobSpec {
            scope: Some("octo-org/web".into()),
            ..JobSpec::new(&["self-hosted"], "true")
        })
        .expect("enqueue");
    assert_eq!(sim.job(job).expect("job").runner_id, None);
    // A default-group org runner may.
    let (oid, ocred) = register(&sim, &org(), "org-default", &[], false).await;
    poll(&sim, oid, &ocred, 0).await;
    assert_eq!(sim.job(job).expect("job").runner_id, Some(oid));
    // A job for octo/app goes to its repo runner.
    let job = sim
        .enqueue_job(JobSpec {
            scope: Some("octo/app".into()),
            ..JobSpec::new(&[], "true")
        })
        .expect("enqueue");
    assert_eq!(sim.job(job).expect("job").runner_id, Some(repo_id));
    assert!(sim
        .enqueue_job(JobSpec {
            scope: Some("nobody/x".into()),
            ..JobSpec::default()
        })
        .is_err());
}

#[tokio::test]
async fn silence_makes_a_runner_offline_and_offline_is_immediate() {
    let sim = start(SimConfig::default().with_silence_timeout(Duration::from_millis(300))).await;
    let (id, credential) = register(&sim, &repo(), "quiet", &[], false).await;
    poll(&sim, id, &credential, 0).await;
    assert_eq!(rest_runner(&sim, &repo(), id).await["status"], "online");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rest_runner(&sim, &repo(), id).await["status"], "offline");
    // An offline runner gets no job.
    let job = sim.enqueue_job(JobSpec::new(&[], "true")).expect("enqueue");
    assert_eq!(sim.job(job).expect("job").runner_id, None);
    // Polling again: online, and the queued job is handed over.
    let response = poll(&sim, id, &credential, 1).await;
    assert_eq!(json(response).await["job_id"], job);
    complete(&sim, &credential, job, 0, "").await;
    poll(&sim, id, &credential, 0).await;
    let response = send(
        client()
            .post(format!("{}/_runner/offline", sim.base_url()))
            .header("authorization", format!("Bearer {credential}"))
            .json(&json!({"agent_id": id})),
    )
    .await;
    assert_eq!(response.status(), 204);
    assert_eq!(rest_runner(&sim, &repo(), id).await["status"], "offline");
    assert_eq!(poll(&sim, id, "wrong", 0).await.status(), 401);
}

#[tokio::test]
async fn a_job_assigned_to_a_runner_that_vanished_is_requeued() {
    let sim = start(SimConfig::default().with_silence_timeout(Duration::from_millis(200))).await;
    let (dead, dead_cred) = register(&sim, &repo(), "dead", &[], false).await;
    poll(&sim, dead, &dead_cred, 0).await;
    let job = sim.enqueue_job(JobSpec::new(&[], "true")).expect("enqueue");
    assert_eq!(sim.job(job).expect("job").runner_id, Some(dead));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        sim.job(job).expect("job").runner_id,
        None,
        "requeued after the runner went silent"
    );
    let (live, live_cred) = register(&sim, &repo(), "live", &[], false).await;
    let response = poll(&sim, live, &live_cred, 2).await;
    assert_eq!(json(response).await["job_id"], job);
}

#[tokio::test]
async fn registration_errors_replace_and_remove() {
    let sim = start(SimConfig::default()).await;
    let token = registration_token(&sim, &repo()).await;
    let body = |name: &str, replace: bool| json!({"url": sim.scope_url(&repo()), "name": name, "replace": replace, "labels": ["a,b"]});
    assert_eq!(
        register_raw(&sim, "WRONG", body("x", false)).await.status(),
        401
    );
    let org_token = registration_token(&sim, &org()).await;
    assert_eq!(
        register_raw(&sim, &org_token, body("x", false))
            .await
            .status(),
        401
    );
    let unknown = json!({"url": format!("{}/octo/missing", sim.base_url()), "name": "x"});
    assert_eq!(register_raw(&sim, &token, unknown).await.status(), 404);
    let first = json(register_raw(&sim, &token, body("dup", false)).await).await;
    let labels: Vec<Value> = first["agent_id"]
        .as_u64()
        .map(|_| vec![])
        .unwrap_or_default();
    assert!(labels.is_empty());
    assert_eq!(
        register_raw(&sim, &token, body("dup", false))
            .await
            .status(),
        409
    );
    // The same token is reusable, and --replace swaps the registration.
    let second = register_raw(&sim, &token, body("dup", true)).await;
    assert_eq!(second.status(), 201);
    let second = json(second).await;
    assert_ne!(first["agent_id"], second["agent_id"]);
    let runners = sim.runners();
    assert_eq!(runners.len(), 1);
    let names: Vec<&str> = runners[0].labels.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["self-hosted", "Linux", "X64", "a", "b"]);

    // config.sh remove --token <remove token>
    let response = api_send(
        &sim,
        Method::POST,
        &format!("{}/remove-token", repo().runners_path()),
    )
    .await;
    let remove_token = json(response).await["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let remove = |token: String, agent_id: Value| {
        let url = sim.scope_url(&repo());
        client()
            .post(format!("{}/_runner/remove", sim.base_url()))
            .header("authorization", format!("RemoteAuth {token}"))
            .json(&json!({"url": url, "agent_id": agent_id}))
            .send()
    };
    assert_eq!(
        remove(token.clone(), second["agent_id"].clone())
            .await
            .expect("send")
            .status(),
        401,
        "a registration token cannot remove"
    );
    assert_eq!(
        remove(remove_token.clone(), json!(999))
            .await
            .expect("send")
            .status(),
        404
    );
    assert_eq!(
        remove(remove_token, second["agent_id"].clone())
            .await
            .expect("send")
            .status(),
        204
    );
    assert!(sim.runners().is_empty());
}

#[tokio::test]
async fn no_default_labels_and_expired_registration_tokens() {
    let sim = start(SimConfig::default().with_token_lifetime(Duration::from_millis(300))).await;
    let token = registration_token(&sim, &repo()).await;
    let body = json!({"url": sim.scope_url(&repo()), "name": "bare", "labels": ["only"], "no_default_labels": true});
    assert_eq!(register_raw(&sim, &token, body).await.status(), 201);
    let runner = sim.runners().into_iter().next().expect("runner");
    assert_eq!(runner.labels.len(), 1);
    assert_eq!(runner.labels[0].name, "only");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let body = json!({"url": sim.scope_url(&repo()), "name": "late"});
    assert_eq!(register_raw(&sim, &token, body).await.status(), 401);
}

#[tokio::test]
async fn assign_on_delete_hook_makes_the_delete_lose_the_race() {
    let sim = start(SimConfig::default()).await;
    let (id, credential) = register(&sim, &repo(), "racy", &["jammy"], false).await;
    poll(&sim, id, &credential, 0).await;
    let response = send(
        admin(&sim, Method::POST, "/hooks/assign-on-delete")
            .json(&json!({"runner_name": "racy", "enabled": true})),
    )
    .await;
    assert_eq!(response.status(), 204);
    let path = runner_path(&repo(), id);
    assert_eq!(api_status(&sim, Method::DELETE, &path).await, 422);
    let job = json(poll(&sim, id, &credential, 1).await).await;
    let job_id = job["job_id"].as_u64().expect("job");
    assert_eq!(
        sim.job(job_id).expect("job").runner_name.as_deref(),
        Some("racy")
    );
    complete(&sim, &credential, job_id, 0, "").await;
    // The hook fired once; the next DELETE succeeds.
    assert_eq!(api_status(&sim, Method::DELETE, &path).await, 204);

    // A queued matching job is preferred over a made-up one.
    let (id2, cred2) = register(&sim, &repo(), "racy2", &["jammy"], false).await;
    let queued = sim
        .enqueue_job(JobSpec::new(&["jammy"], "echo queued"))
        .expect("enqueue");
    sim.set_assign_on_delete(None, true);
    assert_eq!(
        api_status(&sim, Method::DELETE, &runner_path(&repo(), id2),).await,
        422
    );
    assert_eq!(
        json(poll(&sim, id2, &cred2, 1).await).await["job_id"],
        queued
    );
}

#[tokio::test]
async fn admin_job_and_runner_views() {
    let sim = start(SimConfig::default()).await;
    let post = |body: Value| admin(&sim, Method::POST, "/jobs").json(&body).send();
    assert_eq!(
        post(json!({"labels": [], "script": "true", "typo": 1}))
            .await
            .expect("send")
            .status(),
        400
    );
    assert_eq!(
        post(json!({"script": "true", "scope": "nobody/x"}))
            .await
            .expect("send")
            .status(),
        422
    );
    let created = post(json!({"labels": ["self-hosted"], "script": "true", "timeout": 5}))
        .await
        .expect("send");
    assert_eq!(created.status(), 201);
    let job_id = json(created).await["job_id"].as_u64().expect("job_id");
    let jobs = admin_json(&sim, "/jobs").await;
    assert_eq!(jobs.as_array().map(Vec::len), Some(1));
    assert_eq!(jobs[0]["status"], "queued");
    assert!(jobs[0]["runner_name"].is_null());
    let missing = send(admin(&sim, Method::GET, "/jobs/999")).await;
    assert_eq!(missing.status(), 404);

    let (id, credential) = register(&sim, &enterprise(), "ent-1", &[], false).await;
    let job = json(poll(&sim, id, &credential, 1).await).await;
    assert_eq!(job["job_id"], job_id);
    assert_eq!(job["timeout_seconds"], 5);
    let runners = admin_json(&sim, "/runners").await;
    let runner = &runners[0];
    assert_eq!(runner["name"], "ent-1");
    assert_eq!(runner["scope"], "enterprises/acme");
    assert_eq!(runner["status"], "online");
    assert_eq!(runner["busy"], true);
    assert_eq!(runner["job_id"], job_id);
    assert!(runner["last_seen"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
}

#[tokio::test]
async fn list_cache_lags_and_long_offline_runners_are_forgotten() {
    let config = SimConfig::default()
        .with_list_cache(Duration::from_millis(300))
        .with_silence_timeout(Duration::from_millis(100))
        .with_offline_removal(Duration::from_millis(1500), Duration::from_millis(500));
    let sim = start(config).await;
    let names = |body: Value| -> Vec<String> {
        let mut names: Vec<String> = body["runners"]
            .as_array()
            .expect("runners")
            .iter()
            .map(|r| r["name"].as_str().expect("name").to_owned())
            .collect();
        names.sort();
        names
    };
    let list = || async { get_json(&sim, &repo().runners_path()).await };
    register(&sim, &repo(), "persistent", &[], false).await;
    register(&sim, &repo(), "ephemeral", &[], true).await;
    assert_eq!(names(list().await), ["ephemeral", "persistent"]);
    let (late, _) = register(&sim, &repo(), "late", &[], false).await;
    assert_eq!(
        names(list().await),
        ["ephemeral", "persistent"],
        "served from the cache"
    );
    assert_eq!(
        rest_runner(&sim, &repo(), late).await["name"],
        "late",
        "single gets are fresh"
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        names(list().await),
        ["late", "persistent"],
        "the idle ephemeral runner was dropped"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(sim.runners().is_empty());
}
