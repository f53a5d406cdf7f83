//! Rate-limit handling on a paused tokio clock: waits follow GitHub's rules and are observable
//! as virtual time, long waits fail fast with `RateLimited`, and the budget is exposed.

mod common;

use std::time::Duration;

use common::*;
use github::{EndpointKind, Error, JitRequest, RunnerId};
use serde_json::json;
use tokio::time::Instant;

const P: &str = "/repos/o/r/actions/runners";

/// A scripted server answering `script` and a PAT client of the repository `o/r` on it.
async fn serve(script: Vec<Expect>) -> (Server, github::Client) {
    let server = Server::start(script).await;
    let client = pat_client(&server, "o/r");
    (server, client)
}

/// `GET {P}/{id}`, answered with runner `id` called `name`.
fn runner_answer(id: u64, name: &str) -> Expect {
    expect("GET", &format!("{P}/{id}")).json(runner_json(id, name))
}

/// `POST {P}{path}` refused with a 429 saying `message`, to be retried after `retry_after` s.
fn limited_post(path: &str, message: &str, retry_after: &str) -> Expect {
    expect("POST", &format!("{P}{path}"))
        .error(429, message)
        .header("retry-after", retry_after)
}

/// `POST {P}{path}` answered 201 with `body`.
fn created(path: &str, body: serde_json::Value) -> Expect {
    expect("POST", &format!("{P}{path}")).status(201).json(body)
}

/// Awaits `call`, which must succeed (`what`) after waiting, on the paused clock, at least
/// `low` and less than `high` seconds; its output.
async fn after_waiting<T, E: std::fmt::Debug>(
    low: u64,
    high: u64,
    call: impl std::future::Future<Output = Result<T, E>>,
    what: &str,
) -> T {
    let start = Instant::now();
    let output = call.await.expect(what);
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_secs(low) && elapsed < Duration::from_secs(high),
        "waited {elapsed:?}, expected [{low}s, {high}s)"
    );
    output
}

#[tokio::test(start_paused = true)]
async fn primary_limit_waits_until_reset() {
    let reset = now_epoch() + 30;
    let (server, client) = serve(vec![
        budget(
            expect("GET", &format!("{P}/1")).error(403, "API rate limit exceeded for user ID 1."),
            5000,
            0,
            reset,
        ),
        budget(runner_answer(1, "a"), 5000, 4999, reset + 3600),
    ])
    .await;
    after_waiting(29, 33, client.get_runner(RunnerId(1)), "after the wait").await;
    server.finish();
    assert_eq!(
        client.stats().get(EndpointKind::GetRunner).rate_limit_waits,
        1
    );
    let budget = client.rate_limit().expect("budget known");
    assert_eq!(
        (budget.limit, budget.remaining, budget.used),
        (5000, 4999, 1)
    );
    assert_eq!(budget.resource, "core");
    assert_eq!(budget.reset.unix_timestamp(), reset + 3600);
}

#[tokio::test(start_paused = true)]
async fn retry_after_wins() {
    let (server, client) = serve(vec![
        limited_post(
            "/registration-token",
            "You have exceeded a secondary rate limit",
            "5",
        ),
        created(
            "/registration-token",
            json!({"token": "T", "expires_at": "2026-01-22T12:13:35Z"}),
        ),
    ])
    .await;
    after_waiting(5, 6, client.create_registration_token(), "after the wait").await;
    server.finish();
}

#[tokio::test(start_paused = true)]
async fn secondary_limit_without_hints_waits_60s_then_backs_off() {
    let limited = || {
        budget(
            expect("GET", &format!("{P}/1"))
                .error(403, "You have exceeded a secondary rate limit."),
            5000,
            4000,
            now_epoch() + 3000,
        )
    };
    let (server, client) = serve(vec![limited(), limited(), runner_answer(1, "a")]).await;
    after_waiting(180, 181, client.get_runner(RunnerId(1)), "after two waits").await; // 60 s, then 120 s
    server.finish();
}

#[tokio::test(start_paused = true)]
async fn jit_post_is_resent_after_a_rate_limit_answer() {
    let (server, client) = serve(vec![
        limited_post("/generate-jitconfig", "slow down", "2"),
        created(
            "/generate-jitconfig",
            json!({
            "runner": {"id": 3, "name": "j", "status": "offline", "busy": false, "labels": []},
            "encoded_jit_config": "cfg"}),
        ),
    ])
    .await;
    let request = JitRequest {
        name: "j".into(),
        labels: vec!["self-hosted".into()],
        runner_group_id: 1,
        work_folder: None,
    };
    assert_eq!(
        client
            .generate_jitconfig(&request)
            .await
            .expect("created")
            .runner
            .id,
        RunnerId(3)
    );
    server.finish();
}

#[tokio::test(start_paused = true)]
async fn a_wait_beyond_the_maximum_fails_fast() {
    let reset = now_epoch() + 7200;
    let (server, client) = serve(vec![budget(
        expect("GET", &format!("{P}/1")).error(403, "API rate limit exceeded"),
        5000,
        0,
        reset,
    )])
    .await;
    let start = Instant::now();
    let err = client.get_runner(RunnerId(1)).await.expect_err("too long");
    match err {
        Error::RateLimited { until, wait } => {
            assert!(
                (until.unix_timestamp() - reset).abs() <= 2,
                "until {until} vs reset {reset}"
            );
            assert!(wait > Duration::from_secs(7000));
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
    assert!(start.elapsed() < Duration::from_secs(1), "did not sleep");
    server.finish();
    // The spent budget is remembered: the next call fails without a request.
    assert!(matches!(
        client.get_runner(RunnerId(1)).await,
        Err(Error::RateLimited { .. })
    ));
    assert_eq!(server.seen().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_spent_budget_delays_the_next_request() {
    let reset = now_epoch() + 20;
    let (server, client) = serve(vec![
        budget(runner_answer(1, "a"), 60, 0, reset),
        budget(runner_answer(2, "b"), 60, 59, reset + 3600),
    ])
    .await;
    client.get_runner(RunnerId(1)).await.expect("first");
    assert_eq!(client.rate_limit().expect("known").remaining, 0);
    after_waiting(
        19,
        23,
        client.get_runner(RunnerId(2)),
        "second, after the reset",
    )
    .await;
    server.finish();
}

#[tokio::test(start_paused = true)]
async fn not_modified_lists_keep_working_and_count_as_free() {
    let (server, client) = serve(vec![
        budget(
            expect("GET", &format!("{P}?per_page=100"))
                .json(runner_page(0..3, 3))
                .header("etag", "\"e\""),
            5000,
            4999,
            now_epoch() + 3600,
        ),
        budget(
            expect("GET", &format!("{P}?per_page=100")).status(304),
            5000,
            4999,
            now_epoch() + 3600,
        ),
    ])
    .await;
    assert_eq!(client.list_runners(None).await.expect("first").len(), 3);
    assert_eq!(client.list_runners(None).await.expect("304").len(), 3);
    assert_eq!(client.rate_limit().expect("known").remaining, 4999);
    assert_eq!(
        client.stats().get(EndpointKind::ListRunners).not_modified,
        1
    );
    server.finish();
}
