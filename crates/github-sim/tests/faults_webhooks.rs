//! Fault injection, webhook deliveries and concurrency.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures::stream::{self, StreamExt};
use github_sim::{serve_webhook_receiver, sign_webhook, FaultSpec, JobSpec, Received, SimConfig};
use reqwest::Method;
use serde_json::{json, Value};

const LIST: &str = "GET /repos/{owner}/{repo}/actions/runners";

#[tokio::test]
async fn status_faults_for_the_next_k_calls() {
    let sim = start(SimConfig::default()).await;
    let response = send(
        admin(&sim, Method::POST, "/faults")
            .json(&json!({"endpoint": LIST, "status": 503, "count": 2, "retry_after": 7})),
    )
    .await;
    assert_eq!(response.status(), 201);
    for _ in 0..2 {
        let response = api_send(&sim, Method::GET, &repo().runners_path()).await;
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["retry-after"], "7");
        assert_eq!(json(response).await["message"], "Service Unavailable");
    }
    assert_eq!(get_status(&sim, &repo().runners_path()).await, 200);
    // Other endpoints were never affected; a template without method matches any method.
    sim.inject_fault(
        FaultSpec::status(
            "/repos/{owner}/{repo}/actions/runners/registration-token",
            500,
        )
        .times(1),
    );
    let path = format!("{}/registration-token", repo().runners_path());
    assert_eq!(api_status(&sim, Method::POST, &path).await, 500);
    assert_eq!(api_status(&sim, Method::POST, &path).await, 201);
    let counts = sim.request_counts();
    assert_eq!(counts[LIST].count, 3);
    assert_eq!(
        counts[LIST].rate_limit_cost, 1,
        "faulty answers cost nothing"
    );
}

#[tokio::test]
async fn latency_drop_and_rate_faults() {
    let sim = start(SimConfig::default()).await;
    sim.inject_fault(FaultSpec {
        endpoint: LIST.into(),
        latency_ms: Some(400),
        count: Some(1),
        ..FaultSpec::default()
    });
    let started = Instant::now();
    assert_eq!(get_status(&sim, &repo().runners_path()).await, 200);
    assert!(started.elapsed() >= Duration::from_millis(400));

    sim.inject_fault(FaultSpec {
        endpoint: LIST.into(),
        drop: true,
        count: Some(1),
        ..FaultSpec::default()
    });
    let error = api(&sim, Method::GET, &repo().runners_path())
        .send()
        .await
        .expect_err("connection dropped");
    assert!(!error.is_status(), "{error}");
    assert_eq!(get_status(&sim, &repo().runners_path()).await, 200);

    // rate 0 never fires, rate 1 always does, until cleared.
    let bad_gateway_at = |rate: f64| FaultSpec {
        endpoint: "*".into(),
        status: Some(502),
        rate: Some(rate),
        ..FaultSpec::default()
    };
    sim.inject_fault(bad_gateway_at(0.0));
    assert_eq!(get_status(&sim, &repo().runners_path()).await, 200);
    sim.inject_fault(bad_gateway_at(1.0));
    for _ in 0..3 {
        assert_eq!(get_status(&sim, &repo().runners_path()).await, 502);
    }
    let response = send(admin(&sim, Method::DELETE, "/faults")).await;
    assert_eq!(
        response.status(),
        204,
        "the admin API itself is never faulted"
    );
    assert_eq!(get_status(&sim, &repo().runners_path()).await, 200);
}

#[tokio::test]
async fn request_counters_over_http() {
    let sim = start(SimConfig::default()).await;
    api_send(&sim, Method::GET, &org().runners_path()).await;
    let counts = admin_json(&sim, "/requests").await;
    assert_eq!(
        counts["GET /orgs/{org}/actions/runners"],
        json!({"count": 1, "rate_limit_cost": 1, "not_modified": 0})
    );
    send(admin(&sim, Method::DELETE, "/requests")).await;
    assert!(sim.request_counts().is_empty());
}

/// A webhook receiver on a free port: its `/hook` URL and what it receives.
async fn receiver() -> (String, Received) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    (url, serve_webhook_receiver(listener))
}

#[tokio::test]
async fn workflow_job_webhooks_are_signed_and_ordered() {
    assert_eq!(
        sign_webhook(b"It's a Secret to Everybody", b"Hello, World!"),
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    );
    let (url, received) = receiver().await;
    let sim = start(SimConfig::default()).await;
    let response =
        send(admin(&sim, Method::POST, "/webhooks").json(&json!({"url": url, "secret": "s3cret"})))
            .await;
    assert_eq!(response.status(), 204);
    let (id, credential) = register(&sim, &repo(), "hooked", &[], true).await;
    let job_id = sim
        .enqueue_job(JobSpec::new(&["self-hosted"], "true"))
        .expect("enqueue");
    let job = json(poll(&sim, id, &credential, 2).await).await;
    assert_eq!(job["job_id"], job_id);
    complete(&sim, &credential, job_id, 0, "").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while received.lock().len() < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let received = received.lock().clone();
    assert_eq!(received.len(), 3);
    let mut actions = Vec::new();
    for (headers, body) in &received {
        assert_eq!(headers["x-github-event"], "workflow_job");
        assert!(!headers["x-github-delivery"].is_empty());
        assert_eq!(
            headers["x-hub-signature-256"].to_str().expect("ascii"),
            sign_webhook(b"s3cret", body)
        );
        let payload: Value = serde_json::from_slice(body).expect("json");
        assert_eq!(payload["workflow_job"]["id"], job_id);
        assert_eq!(payload["repository"]["full_name"], "octo/app");
        assert_eq!(payload["installation"]["id"], 43);
        actions.push(payload["action"].as_str().expect("action").to_owned());
        let wj = &payload["workflow_job"];
        if payload["action"] == "queued" {
            assert!(
                wj["runner_id"].is_null()
                    && wj["runner_name"].is_null()
                    && wj["runner_group_id"].is_null()
            );
            assert_eq!(wj["status"], "queued");
        } else {
            assert_eq!(wj["runner_name"], "hooked");
            assert_eq!(wj["runner_group_name"], "Default");
        }
        if payload["action"] == "completed" {
            assert_eq!(wj["conclusion"], "success");
        }
    }
    assert_eq!(actions, ["queued", "in_progress", "completed"]);
    // The sim records a delivery once the receiver has answered.
    while sim.webhook_deliveries().len() < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deliveries = sim.webhook_deliveries();
    assert_eq!(deliveries.len(), 3);
    assert!(deliveries.iter().all(|d| d.status == Some(200)));
}

#[tokio::test]
async fn concurrent_requests_keep_state_consistent() {
    let sim = start(SimConfig::default().with_secondary_limit_per_minute(10_000)).await;
    let results: Vec<u16> = stream::iter(0..200)
        .map(|i| {
            let sim = &sim;
            async move {
                let path = format!("{}/generate-jitconfig", org().runners_path());
                // Every name twice: exactly one of each pair wins.
                let body =
                    json!({"name": format!("c-{}", i / 2), "runner_group_id": 1, "labels": ["x"]});
                let status = send(api(sim, Method::POST, &path).json(&body))
                    .await
                    .status()
                    .as_u16();
                assert_eq!(
                    api_status(sim, Method::GET, &org().runners_path()).await,
                    200
                );
                status
            }
        })
        .buffer_unordered(50)
        .collect()
        .await;
    assert_eq!(results.iter().filter(|s| **s == 201).count(), 100);
    assert_eq!(results.iter().filter(|s| **s == 409).count(), 100);
    assert_eq!(sim.runners().len(), 100);
    let counts = sim.request_counts();
    assert_eq!(
        counts["POST /orgs/{org}/actions/runners/generate-jitconfig"].count,
        200
    );
    assert_eq!(counts["GET /orgs/{org}/actions/runners"].count, 200);
}
