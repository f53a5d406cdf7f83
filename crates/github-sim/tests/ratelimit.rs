//! Primary budget, secondary limit on content creation, and the `x-ratelimit-*` headers.

mod common;

use common::*;
use github_sim::SimConfig;
use reqwest::Method;

fn header(response: &reqwest::Response, name: &str) -> String {
    response.headers()[name].to_str().expect("ascii").to_owned()
}

#[tokio::test]
async fn primary_budget_is_enforced_and_reported() {
    let sim = start(SimConfig::default().with_rate_limit(5)).await;
    let path = repo().runners_path();
    for used in 1..=5 {
        let response = api_send(&sim, Method::GET, &path).await;
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "x-ratelimit-limit"), "5");
        assert_eq!(header(&response, "x-ratelimit-used"), used.to_string());
        assert_eq!(
            header(&response, "x-ratelimit-remaining"),
            (5 - used).to_string()
        );
        assert_eq!(header(&response, "x-ratelimit-resource"), "core");
        let reset: i64 = header(&response, "x-ratelimit-reset")
            .parse()
            .expect("epoch");
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        assert!(
            reset > now && reset <= now + 3601,
            "reset {reset} now {now}"
        );
    }
    let response = api_send(&sim, Method::POST, &format!("{path}/registration-token")).await;
    assert_eq!(response.status(), 403);
    assert_eq!(header(&response, "x-ratelimit-remaining"), "0");
    assert!(text(&json(response).await, "message").starts_with("API rate limit exceeded"));
    // /rate_limit still answers, for free.
    let response = api_send(&sim, Method::GET, "/rate_limit").await;
    assert_eq!(response.status(), 200);
    assert_eq!(json(response).await["resources"]["core"]["remaining"], 0);
    // The admin API can refill the budget.
    sim.set_rate_limit(Some(10), Some(0), None);
    assert_eq!(get_status(&sim, &path).await, 200);
}

#[tokio::test]
async fn secondary_limit_on_content_creation() {
    let sim = start(SimConfig::default().with_secondary_limit_per_minute(3)).await;
    let path = format!("{}/registration-token", org().runners_path());
    for _ in 0..3 {
        assert_eq!(api_status(&sim, Method::POST, &path).await, 201);
    }
    let response = api_send(&sim, Method::POST, &path).await;
    assert_eq!(response.status(), 403);
    let retry: u64 = header(&response, "retry-after").parse().expect("seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    assert_ne!(header(&response, "x-ratelimit-remaining"), "0");
    assert!(text(&json(response).await, "message").contains("secondary rate limit"));
    // JIT shares the content-creation limit; reads do not.
    let jit = send(
        api(
            &sim,
            Method::POST,
            &format!("{}/generate-jitconfig", org().runners_path()),
        )
        .json(&serde_json::json!({"name": "x", "runner_group_id": 1, "labels": ["a"]})),
    )
    .await;
    assert_eq!(jit.status(), 403);
    assert_eq!(get_status(&sim, &org().runners_path()).await, 200);
    // The limit is per minute: a higher limit lets the next request through.
    sim.set_rate_limit(None, None, Some(80));
    assert_eq!(api_status(&sim, Method::POST, &path).await, 201);
}
